//! Key passwords and other answers: from a file (`--password-file`), from the environment
//! (`SIFR_KEY_PASSWORD`, for CI), or asked on the controlling terminal (`/dev/tty`, with echo
//! off for passwords). Without a terminal nothing is asked: the caller reports which flag
//! to use instead.
//!
//! The terminal is driven with nix's termios (already a dependency) rather than an extra
//! crate: turning echo off and back on is all that is needed.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use nix::sys::termios::{self, LocalFlags, SetArg};

/// The environment variable holding a key password for non-interactive use.
pub const PASSWORD_ENV: &str = "SIFR_KEY_PASSWORD";

/// Largest password file read.
const MAX_PASSWORD_FILE: u64 = 4096;

/// A password that could not be obtained.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("cannot read the password file {}: {cause}", path.display())]
    File { path: PathBuf, cause: String },
    #[error("cannot ask on the terminal: {0}")]
    Terminal(String),
    #[error("the two passwords differ")]
    Mismatch,
}

/// The first line of `path` (without its line end).
pub fn read_password_file(path: &Path) -> Result<String, PasswordError> {
    use std::io::Read;
    let fail = |cause: String| PasswordError::File {
        path: path.to_path_buf(),
        cause,
    };
    let f = File::open(path).map_err(|e| fail(e.to_string()))?;
    let mut bytes = Vec::new();
    f.take(MAX_PASSWORD_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| fail(e.to_string()))?;
    if bytes.len() as u64 > MAX_PASSWORD_FILE {
        return Err(fail("longer than 4096 bytes; is it the right file?".into()));
    }
    let text = String::from_utf8(bytes).map_err(|_| fail("not UTF-8 text".into()))?;
    Ok(text.lines().next().unwrap_or("").to_string())
}

/// The controlling terminal, if there is one.
fn tty() -> Option<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .ok()
}

/// True when the process has a controlling terminal to ask on.
pub fn has_terminal() -> bool {
    tty().is_some()
}

/// Asks `prompt` on the terminal; `echo` false hides the answer. `Ok(None)` when there is
/// no terminal.
pub fn ask(prompt: &str, echo: bool) -> Result<Option<String>, PasswordError> {
    let Some(mut t) = tty() else {
        return Ok(None);
    };
    let term = |e: std::io::Error| PasswordError::Terminal(e.to_string());
    let saved = if echo {
        None
    } else {
        let saved = termios::tcgetattr(&t).map_err(|e| PasswordError::Terminal(e.to_string()))?;
        let mut quiet = saved.clone();
        quiet.local_flags.remove(LocalFlags::ECHO);
        termios::tcsetattr(&t, SetArg::TCSANOW, &quiet)
            .map_err(|e| PasswordError::Terminal(e.to_string()))?;
        Some(saved)
    };
    let result = (|| {
        t.write_all(prompt.as_bytes()).map_err(term)?;
        t.flush().map_err(term)?;
        let mut line = String::new();
        BufReader::new(&t).read_line(&mut line).map_err(term)?;
        Ok(line.trim_end_matches(['\n', '\r']).to_string())
    })();
    if let Some(saved) = saved {
        let _ = termios::tcsetattr(&t, SetArg::TCSANOW, &saved);
        let _ = t.write_all(b"\n");
    }
    result.map(Some)
}

/// Where a password may come from, in order: a file, the environment, the terminal.
#[derive(Debug, Clone, Default)]
pub struct PasswordSources {
    pub file: Option<PathBuf>,
    pub env: Option<String>,
}

impl PasswordSources {
    /// The sources of this process: `file` and `SIFR_KEY_PASSWORD`.
    pub fn from_process(file: Option<PathBuf>) -> PasswordSources {
        PasswordSources {
            file,
            env: std::env::var(PASSWORD_ENV).ok(),
        }
    }

    /// The password from the file or the environment, else asked on the terminal (twice
    /// when `confirm`). `Ok(None)`: no source and no terminal.
    pub fn obtain(&self, prompt: &str, confirm: bool) -> Result<Option<String>, PasswordError> {
        if let Some(f) = &self.file {
            return read_password_file(f).map(Some);
        }
        if let Some(p) = &self.env {
            return Ok(Some(p.clone()));
        }
        let Some(first) = ask(prompt, false)? else {
            return Ok(None);
        };
        if confirm && !first.is_empty() {
            let again = ask("Retype your passphrase : ", false)?.unwrap_or_default();
            if again != first {
                return Err(PasswordError::Mismatch);
            }
        }
        Ok(Some(first))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_password_file_first_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("pw");
        std::fs::write(&p, "s3cret\r\nignored\n").expect("write");
        assert_eq!(read_password_file(&p).expect("read"), "s3cret");
        std::fs::write(&p, "").expect("write");
        assert_eq!(read_password_file(&p).expect("read"), "");
        std::fs::write(&p, vec![b'x'; 5000]).expect("write");
        assert!(read_password_file(&p).is_err());
        let err = read_password_file(&dir.path().join("none")).expect_err("missing");
        assert!(err.to_string().contains("none"), "{err}");
    }

    #[test]
    fn test_sources_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("pw");
        std::fs::write(&p, "from-file\n").expect("write");
        let both = PasswordSources {
            file: Some(p),
            env: Some("from-env".into()),
        };
        assert_eq!(
            both.obtain("x", false).expect("ok").as_deref(),
            Some("from-file")
        );
        let env = PasswordSources {
            file: None,
            env: Some("from-env".into()),
        };
        assert_eq!(
            env.obtain("x", true).expect("ok").as_deref(),
            Some("from-env")
        );
    }
}
