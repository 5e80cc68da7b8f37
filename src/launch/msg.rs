//! The messages that cross fork: between sifr, the supervisor and the container process
//! (`process`), and between sifr and its fakeroot worker (`userns`).
//!
//! One message a line on a close-on-exec pipe: a keyword, then for some an argument
//! (`exited 3`, `failed cannot mount ...`). Decoding is strict: an unknown keyword, a
//! missing or extra argument, a line cut short by a hang-up or one longer than
//! [`MAX_LINE`] is an error, never a panic. Each pipe carries one direction, and a reader
//! takes one byte at a time, so it never consumes a message meant for a later read.

use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};

/// The longest line accepted (an error message with paths in it fits many times over).
pub const MAX_LINE: usize = 64 * 1024;

/// A message between the processes of a launch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChildMsg {
    /// Child → parent: the new user namespace exists; write its id maps.
    UsernsReady,
    /// Parent → child: the id maps are written.
    MapsWritten,
    /// Supervisor → container process: the image is mounted; build the root.
    Go,
    /// Container process → supervisor: its mount namespace is a copy of the supervisor's.
    Copied,
    /// The payload exited with this status.
    Exited(i32),
    /// The payload was killed by this signal.
    Signaled(i32),
    /// The fakeroot work succeeded.
    Done,
    /// A step failed; the message is for the user, on one line.
    Failed(String),
}

/// A message that could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MsgError {
    #[error("unknown message {0:?}")]
    Unknown(String),
    #[error("malformed message {0:?}")]
    Malformed(String),
    #[error("message cut short by a hang-up after {0} bytes")]
    Truncated(usize),
    #[error("message longer than {MAX_LINE} bytes")]
    TooLong,
    #[error("cannot read a message: {0}")]
    Read(String),
}

impl ChildMsg {
    /// The wire form: one line, ending in `\n`. A newline inside a failure message becomes
    /// a space.
    pub fn encode(&self) -> Vec<u8> {
        let line = match self {
            ChildMsg::UsernsReady => "userns".to_string(),
            ChildMsg::MapsWritten => "maps".to_string(),
            ChildMsg::Go => "go".to_string(),
            ChildMsg::Copied => "copied".to_string(),
            ChildMsg::Exited(c) => format!("exited {c}"),
            ChildMsg::Signaled(s) => format!("signaled {s}"),
            ChildMsg::Done => "done".to_string(),
            ChildMsg::Failed(m) => format!("failed {}", m.replace(['\n', '\r'], " ")),
        };
        let mut out = line.into_bytes();
        out.push(b'\n');
        out
    }

    /// Decodes one line (without its `\n`).
    pub fn decode(line: &[u8]) -> Result<ChildMsg, MsgError> {
        let text = std::str::from_utf8(line)
            .map_err(|_| MsgError::Malformed(String::from_utf8_lossy(line).into_owned()))?;
        let (word, arg) = match text.split_once(' ') {
            Some((w, a)) => (w, Some(a)),
            None => (text, None),
        };
        let malformed = || MsgError::Malformed(text.to_string());
        let number = |a: Option<&str>| -> Result<i32, MsgError> {
            a.and_then(|a| a.parse().ok()).ok_or_else(malformed)
        };
        let bare = |m: ChildMsg| {
            if arg.is_none() {
                Ok(m)
            } else {
                Err(malformed())
            }
        };
        match word {
            "userns" => bare(ChildMsg::UsernsReady),
            "maps" => bare(ChildMsg::MapsWritten),
            "go" => bare(ChildMsg::Go),
            "copied" => bare(ChildMsg::Copied),
            "done" => bare(ChildMsg::Done),
            "exited" => Ok(ChildMsg::Exited(number(arg)?)),
            "signaled" => Ok(ChildMsg::Signaled(number(arg)?)),
            "failed" => Ok(ChildMsg::Failed(arg.ok_or_else(malformed)?.to_string())),
            _ => Err(MsgError::Unknown(text.to_string())),
        }
    }

    /// Reads the next message; `Ok(None)` when the writer hung up before sending one.
    pub fn read_from(r: &mut impl Read) -> Result<Option<ChildMsg>, MsgError> {
        let mut line = Vec::new();
        let mut b = [0u8; 1];
        loop {
            match r.read(&mut b) {
                Ok(0) if line.is_empty() => return Ok(None),
                Ok(0) => return Err(MsgError::Truncated(line.len())),
                Ok(_) if b[0] == b'\n' => return ChildMsg::decode(&line).map(Some),
                Ok(_) if line.len() >= MAX_LINE => return Err(MsgError::TooLong),
                Ok(_) => line.push(b[0]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(MsgError::Read(e.to_string())),
            }
        }
    }

    /// Reads the next message from a pipe.
    pub fn recv(fd: &OwnedFd) -> Result<Option<ChildMsg>, MsgError> {
        ChildMsg::read_from(&mut FdReader(fd))
    }

    /// Writes the message to a pipe. A reader that is gone is not an error here: the
    /// sender's own status tells the rest.
    pub fn send(&self, fd: &OwnedFd) {
        let bytes = self.encode();
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            match nix::unistd::write(fd.as_fd(), rest) {
                Ok(0) => return,
                Ok(n) => rest = &rest[n..],
                Err(nix::Error::EINTR) => continue,
                Err(_) => return,
            }
        }
    }
}

/// Reads a borrowed descriptor without taking it over.
struct FdReader<'a>(&'a OwnedFd);

impl Read for FdReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        nix::unistd::read(self.0, buf).map_err(|e| io::Error::from_raw_os_error(e as i32))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<ChildMsg> {
        vec![
            ChildMsg::UsernsReady,
            ChildMsg::MapsWritten,
            ChildMsg::Go,
            ChildMsg::Copied,
            ChildMsg::Exited(0),
            ChildMsg::Exited(255),
            ChildMsg::Exited(-1),
            ChildMsg::Signaled(9),
            ChildMsg::Done,
            ChildMsg::Failed("cannot mount /x on /y: Permission denied".into()),
            ChildMsg::Failed(String::new()),
        ]
    }

    #[test]
    fn test_every_message_round_trips_in_order() {
        let mut wire = Vec::new();
        for m in all() {
            let e = m.encode();
            assert_eq!(e.iter().filter(|b| **b == b'\n').count(), 1, "{m:?}");
            assert_eq!(e.last(), Some(&b'\n'));
            wire.extend(e);
        }
        let mut r = &wire[..];
        for m in all() {
            assert_eq!(ChildMsg::read_from(&mut r), Ok(Some(m)));
        }
        assert_eq!(ChildMsg::read_from(&mut r), Ok(None));
    }

    #[test]
    fn test_a_failure_stays_on_one_line() {
        let m = ChildMsg::Failed("first\nsecond\r\nthird".into());
        let mut wire = &m.encode()[..];
        assert_eq!(
            ChildMsg::read_from(&mut wire),
            Ok(Some(ChildMsg::Failed("first second  third".into())))
        );
        assert_eq!(ChildMsg::read_from(&mut wire), Ok(None));
    }

    #[test]
    fn test_malformed_and_truncated_input_is_an_error() {
        for (bad, want) in [
            (&b"exited\n"[..], "malformed"),
            (b"exited x\n", "malformed"),
            (b"exited 99999999999\n", "malformed"),
            (b"signaled \n", "malformed"),
            (b"go now\n", "malformed"),
            (b"maps \n", "malformed"),
            (b"failed\n", "malformed"),
            (b"\xff\xfe\n", "malformed"),
            (b"\n", "unknown"),
            (b"U\n", "unknown"),
            (b"E3\n", "unknown"),
            (b"exited 3", "cut short"),
            (b"fail", "cut short"),
        ] {
            let mut r = bad;
            let err = ChildMsg::read_from(&mut r).expect_err(&String::from_utf8_lossy(bad));
            assert!(err.to_string().contains(want), "{bad:?}: {err}");
        }
        let long = vec![b'x'; MAX_LINE + 10];
        assert_eq!(ChildMsg::read_from(&mut &long[..]), Err(MsgError::TooLong));
    }

    #[test]
    fn test_a_reader_takes_one_message_per_read() {
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe");
        ChildMsg::UsernsReady.send(&w);
        ChildMsg::Exited(3).send(&w);
        drop(w);
        assert_eq!(ChildMsg::recv(&r), Ok(Some(ChildMsg::UsernsReady)));
        assert_eq!(ChildMsg::recv(&r), Ok(Some(ChildMsg::Exited(3))));
        assert_eq!(ChildMsg::recv(&r), Ok(None));
    }

    #[test]
    fn test_every_cut_of_a_message_is_an_error_and_garbage_never_panics() {
        for m in all() {
            let wire = m.encode();
            assert_eq!(ChildMsg::read_from(&mut &wire[..0]), Ok(None));
            for cut in 1..wire.len() {
                assert_eq!(
                    ChildMsg::read_from(&mut &wire[..cut]),
                    Err(MsgError::Truncated(cut)),
                    "{m:?} cut at {cut}"
                );
            }
        }
        // Pseudo-random lines (a fixed xorshift sequence): decoding returns, whatever it
        // returns.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 24) as usize;
            let alphabet = b"abcdefgilmnoprstuwxyz 0123456789-+\n\xff";
            let line: Vec<u8> = (0..len)
                .map(|i| alphabet[((x >> (i % 8 * 8)) as usize + i) % alphabet.len()])
                .collect();
            let _ = ChildMsg::read_from(&mut &line[..]);
            let _ = ChildMsg::decode(&line);
        }
    }
}
