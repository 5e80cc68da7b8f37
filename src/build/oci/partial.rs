//! Downloads that survive an interruption: the in-progress file of one cache entry, and the
//! HTTP range decisions for continuing it.
//!
//! A download into the cache entry `DIR/NAME` writes `DIR/.partial-NAME` (named by the
//! entry, so the next pull of the same blob finds it), locked with `flock` while a pull
//! writes it. A pull interrupted (Ctrl-C, a broken connection, a kill) leaves the bytes it
//! had; the next one asks for the rest with `Range: bytes=N-` and continues when the
//! server answers `206 Partial Content` from byte N ([`answer`]); on `200` (ranges not
//! supported), `416`, or a `Content-Range` that does not start at N, it starts over. A
//! second pull that finds the file locked (a concurrent pull of the same blob) downloads
//! into its own temporary file instead (locked as well), removed when it is done with.
//! `cache clean` removes the partial files no pull holds ([`remove_if_unused`]).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::digest::Hasher;

/// How a response to a request for bytes `offset..` of a file can be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// `206` from `offset`: append the body to the bytes already there.
    Continue,
    /// `200`: the body is the whole file; start over with it.
    FromStart,
    /// `416`, or a `206` that is not the range asked for: drop what is there and ask again
    /// without a range.
    Refetch,
}

/// What a response with `status` and `content_range` means for a download that has
/// `offset` bytes and expects `total` bytes in all (if known); `None` for statuses that are
/// not an answer to a range request (errors for the caller).
pub fn answer(
    status: u16,
    content_range: Option<&str>,
    offset: u64,
    total: Option<u64>,
) -> Option<Answer> {
    match status {
        200 => Some(Answer::FromStart),
        416 => Some(Answer::Refetch),
        206 => {
            let ok = content_range
                .and_then(parse_content_range)
                .is_some_and(|r| {
                    r.start == offset && r.total.zip(total).is_none_or(|(a, b)| a == b)
                });
            Some(if ok {
                Answer::Continue
            } else {
                Answer::Refetch
            })
        }
        _ => None,
    }
}

/// A `Content-Range: bytes START-END/TOTAL` header (TOTAL may be `*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentRange {
    pub start: u64,
    pub end: u64,
    pub total: Option<u64>,
}

/// Parses a `Content-Range` header value; `None` if it is not a byte range.
pub fn parse_content_range(value: &str) -> Option<ContentRange> {
    let rest = value.trim().strip_prefix("bytes")?.trim_start();
    let (range, total) = rest.split_once('/')?;
    let (start, end) = range.trim().split_once('-')?;
    let start = start.trim().parse::<u64>().ok()?;
    let end = end.trim().parse::<u64>().ok()?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse::<u64>().ok()?),
    };
    if end < start || total.is_some_and(|t| end >= t) {
        return None;
    }
    Some(ContentRange { start, end, total })
}

/// The in-progress file of one download.
pub struct Partial {
    file: File,
    path: PathBuf,
    target: PathBuf,
    offset: u64,
    /// True for this entry's own `.partial-NAME` (kept when the download is interrupted);
    /// false for a private temporary file (another pull holds the entry's).
    shared: bool,
    done: bool,
}

impl Partial {
    /// The in-progress file for the entry `target`, locked; its bytes so far are
    /// [`Partial::offset`].
    pub fn open(target: &Path) -> io::Result<Partial> {
        let dir = target.parent().unwrap_or(Path::new("."));
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let path = dir.join(format!(".partial-{name}"));
        // The file may be renamed into place by the pull that held it between our open and
        // our lock: then what we locked is the entry, not the partial file; open again.
        for _ in 0..3 {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&path)?;
            if !crate::flock::try_exclusive(&file)? {
                log::debug!(
                    "{} is being downloaded by another pull; downloading to a temporary file",
                    target.display()
                );
                return Partial::private(target);
            }
            let meta = file.metadata()?;
            let same =
                fs::metadata(&path).is_ok_and(|m| m.dev() == meta.dev() && m.ino() == meta.ino());
            if same {
                return Ok(Partial {
                    offset: meta.len(),
                    file,
                    path,
                    target: target.to_path_buf(),
                    shared: true,
                    done: false,
                });
            }
        }
        Partial::private(target)
    }

    /// A private temporary file for the entry `target` (`.partial-` and a random name,
    /// locked too, so that `cache clean` leaves it alone), removed unless persisted.
    pub fn private(target: &Path) -> io::Result<Partial> {
        let dir = target.parent().unwrap_or(Path::new("."));
        let (file, path) = tempfile::Builder::new()
            .prefix(".partial-")
            .tempfile_in(dir)?
            .keep()
            .map_err(|e| e.error)?;
        // Nobody else knows the name yet: the lock is free.
        crate::flock::try_exclusive(&file)?;
        Ok(Partial {
            file,
            path,
            target: target.to_path_buf(),
            offset: 0,
            shared: false,
            done: false,
        })
    }

    /// How many bytes are already there (the start of the range to ask for).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The in-progress file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Drops the bytes there, to start over.
    pub fn restart(&mut self) -> io::Result<()> {
        self.file.set_len(0)?;
        self.file.seek(SeekFrom::Start(0))?;
        self.offset = 0;
        Ok(())
    }

    /// Feeds the bytes already there to `hasher` and positions at their end, to append.
    pub fn rehash(&mut self, hasher: Option<&mut Hasher>) -> io::Result<()> {
        self.file.seek(SeekFrom::Start(0))?;
        if let Some(hasher) = hasher {
            let mut left = self.offset;
            let mut buf = vec![0u8; 256 * 1024];
            while left > 0 {
                let want = buf.len().min(usize::try_from(left).unwrap_or(buf.len()));
                let n = self.file.read(&mut buf[..want])?;
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the partial download shrank while it was read",
                    ));
                }
                hasher.update(&buf[..n]);
                left -= n as u64;
            }
        }
        self.file.seek(SeekFrom::Start(self.offset))?;
        Ok(())
    }

    /// Appends `buf`.
    pub fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.file.write_all(buf)?;
        self.offset += buf.len() as u64;
        Ok(())
    }

    /// Removes the file (its content is wrong).
    pub fn discard(mut self) {
        let _ = fs::remove_file(&self.path);
        self.done = true;
    }

    /// Renames the complete file into place as the entry.
    pub fn persist(mut self) -> io::Result<PathBuf> {
        self.file.flush()?;
        fs::rename(&self.path, &self.target)?;
        self.done = true;
        Ok(self.target.clone())
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        // An interrupted download keeps its bytes for the next pull; an empty file or a
        // private one is of no use to anyone.
        if !self.done && (!self.shared || self.offset == 0) {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Removes the partial file `path` unless a pull is writing it (holds its lock); true if it
/// was removed (or was gone already).
pub fn remove_if_unused(path: &Path) -> io::Result<bool> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(true),
        Err(e) => return Err(e),
    };
    if !crate::flock::try_exclusive(&file)? {
        return Ok(false);
    }
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::super::digest::{Algorithm, Digest};
    use super::*;

    #[test]
    fn test_parse_content_range() {
        assert_eq!(
            parse_content_range("bytes 100-199/200"),
            Some(ContentRange {
                start: 100,
                end: 199,
                total: Some(200)
            })
        );
        assert_eq!(
            parse_content_range("bytes 5-9/*"),
            Some(ContentRange {
                start: 5,
                end: 9,
                total: None
            })
        );
        for bad in [
            "",
            "bytes */200",
            "items 0-1/2",
            "bytes 9-5/10",
            "bytes 0-10/10",
            "bytes a-b/c",
            "bytes 0-1",
        ] {
            assert_eq!(parse_content_range(bad), None, "{bad}");
        }
    }

    #[test]
    fn test_answers() {
        let cr = Some("bytes 100-199/200");
        assert_eq!(answer(206, cr, 100, Some(200)), Some(Answer::Continue));
        assert_eq!(answer(206, cr, 100, None), Some(Answer::Continue));
        // Another start, another total, or no header: not what was asked.
        assert_eq!(answer(206, cr, 50, Some(200)), Some(Answer::Refetch));
        assert_eq!(answer(206, cr, 100, Some(300)), Some(Answer::Refetch));
        assert_eq!(answer(206, None, 100, Some(200)), Some(Answer::Refetch));
        assert_eq!(
            answer(206, Some("garbage"), 100, None),
            Some(Answer::Refetch)
        );
        // The server ignored the range; or the range is past the end.
        assert_eq!(answer(200, None, 100, Some(200)), Some(Answer::FromStart));
        assert_eq!(answer(416, None, 100, Some(200)), Some(Answer::Refetch));
        assert_eq!(answer(404, None, 100, Some(200)), None);
        assert_eq!(answer(500, cr, 100, Some(200)), None);
    }

    #[test]
    fn test_partial_is_kept_resumed_and_locked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("abc");
        let data = b"0123456789";
        {
            let mut p = Partial::open(&target).expect("open");
            assert_eq!(p.offset(), 0);
            p.write_all(&data[..4]).expect("write");
            // Interrupted: dropped without persist.
        }
        let kept = dir.path().join(".partial-abc");
        assert_eq!(fs::read(&kept).expect("kept"), &data[..4]);

        let mut p = Partial::open(&target).expect("reopen");
        assert_eq!(p.offset(), 4);
        // A concurrent pull gets its own file, removed when dropped.
        {
            let q = Partial::open(&target).expect("concurrent");
            assert_eq!(q.offset(), 0);
            assert_ne!(q.path(), p.path());
            assert!(q.path().exists());
            let qpath = q.path().to_path_buf();
            drop(q);
            assert!(!qpath.exists());
        }
        let mut hasher = Hasher::new(Algorithm::Sha256);
        p.rehash(Some(&mut hasher)).expect("rehash");
        p.write_all(&data[4..]).expect("write");
        hasher.update(&data[4..]);
        assert_eq!(hasher.finish(), Digest::sha256_of(data));
        assert_eq!(p.persist().expect("persist"), target);
        assert_eq!(fs::read(&target).expect("target"), data);
        assert!(!kept.exists());

        // Restart drops the bytes; an empty or discarded partial leaves nothing.
        let mut p = Partial::open(&dir.path().join("def")).expect("open");
        p.write_all(b"xx").expect("write");
        p.restart().expect("restart");
        assert_eq!(p.offset(), 0);
        drop(p);
        assert!(!dir.path().join(".partial-def").exists());
        let mut p = Partial::open(&dir.path().join("ghi")).expect("open");
        p.write_all(b"xx").expect("write");
        p.discard();
        let left: Vec<_> = fs::read_dir(dir.path())
            .expect("list")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("abc")]);

        // cache clean: a partial file being written stays, an abandoned one goes.
        let mut p = Partial::open(&dir.path().join("jkl")).expect("open");
        p.write_all(b"xx").expect("write");
        let kept = dir.path().join(".partial-jkl");
        assert!(!remove_if_unused(&kept).expect("in use"));
        assert!(kept.exists());
        let private = Partial::private(&dir.path().join("jkl")).expect("private");
        assert!(!remove_if_unused(private.path()).expect("in use"));
        drop(p);
        assert!(remove_if_unused(&kept).expect("unused"));
        assert!(!kept.exists());
        assert!(remove_if_unused(&kept).expect("gone"));
    }
}
