//! Reader threads of the ext reader. ext4-view's `Ext4` is single-threaded (`Rc`/`RefCell`
//! inside), so each thread owns one `Ext4`, loaded from the same image by positioned reads,
//! and runs requests sent to it over a channel. Requests are routed by inode number, so one
//! file's reads land on the thread that keeps it open (sequential reads then never seek).
//! A panic inside ext4-view fails only that request: the thread reloads its `Ext4` and goes on.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;

use ext4_view::{Ext4, Ext4Read, Metadata};

use super::error::{ExtError, Result};
use crate::source::ImageSource;
use crate::squashfs::{Attr, FileType};

/// Open files each thread keeps (most recently used first out last).
const OPEN_FILES: usize = 8;

/// The image as ext4-view reads it: `pread` at `base + start`, never past `len`.
#[derive(Clone)]
struct Source {
    file: Arc<dyn ImageSource>,
    base: u64,
    len: u64,
}

impl Ext4Read for Source {
    fn read(
        &mut self,
        start: u64,
        dst: &mut [u8],
    ) -> std::result::Result<(), Box<dyn std::error::Error + Send + Sync + 'static>> {
        let end = start.checked_add(dst.len() as u64);
        if end.is_none_or(|e| e > self.len) {
            return Err(format!(
                "read of {} bytes at offset {start} goes past the end of the filesystem ({} bytes)",
                dst.len(),
                self.len
            )
            .into());
        }
        let pos = self
            .base
            .checked_add(start)
            .ok_or_else(|| format!("image offset {} + {start} overflows", self.base))?;
        self.file.read_exact_at(dst, pos).map_err(|e| {
            format!(
                "cannot read {} bytes at filesystem offset {start}: {e}",
                dst.len()
            )
            .into()
        })
    }
}

/// The state of one reader thread.
pub(crate) struct Reader {
    fs: Ext4,
    block_size: u32,
    /// (inode number, open file), most recently used last.
    files: Vec<(u32, ext4_view::File)>,
}

/// Attributes from ext4-view metadata. `ino` is left 0 (the table assigns it); nlink and
/// rdev are not available from ext4-view (1 and 0).
pub(crate) fn attr_of(m: &Metadata, block_size: u32) -> Attr {
    use ext4_view::FileType as T;
    let kind = match m.file_type() {
        T::BlockDevice => FileType::BlockDevice,
        T::CharacterDevice => FileType::CharDevice,
        T::Directory => FileType::Directory,
        T::Fifo => FileType::Fifo,
        T::Regular => FileType::Regular,
        T::Socket => FileType::Socket,
        T::Symlink => FileType::Symlink,
    };
    let size = m.len();
    let bs = u64::from(block_size);
    Attr {
        ino: 0,
        kind,
        mode: kind.mode_bits() | u32::from(m.mode()),
        nlink: 1,
        uid: m.uid(),
        gid: m.gid(),
        size,
        mtime: m.modified().seconds().clamp(0, i64::from(u32::MAX)) as u32,
        rdev: 0,
        // Allocated blocks are not exposed; count the size rounded up to whole blocks.
        blocks: size.div_ceil(bs).saturating_mul(bs / 512),
        blksize: block_size,
    }
}

fn is_dot(name: &[u8]) -> bool {
    name == b"." || name == b".."
}

impl Reader {
    /// Attributes of `path` (a symlink itself, not its target).
    pub(crate) fn meta(&self, path: &[u8]) -> Result<Attr> {
        let m = self
            .fs
            .symlink_metadata(path)
            .map_err(|e| ExtError::at(path, &e))?;
        Ok(attr_of(&m, self.block_size))
    }

    /// Every entry of directory `path` but `.` and `..`, in on-disk order, with attributes.
    pub(crate) fn list(&self, path: &[u8]) -> Result<Vec<(Vec<u8>, Attr)>> {
        let err = |e: ext4_view::Ext4Error| ExtError::at(path, &e);
        let mut out = Vec::new();
        for e in self.fs.read_dir(path).map_err(err)? {
            let e = e.map_err(err)?;
            let name = e.file_name();
            if is_dot(name.as_ref()) {
                continue;
            }
            let m = e.metadata().map_err(|x| {
                let mut p = path.to_vec();
                if p.last() != Some(&b'/') {
                    p.push(b'/');
                }
                p.extend_from_slice(name.as_ref());
                ExtError::at(&p, &x)
            })?;
            out.push((name.as_ref().to_vec(), attr_of(&m, self.block_size)));
        }
        Ok(out)
    }

    /// Reads regular file `path` (inode number `ino`) at `off` into `buf`, until `buf` is
    /// full or the file ends.
    pub(crate) fn read(
        &mut self,
        ino: u32,
        path: &[u8],
        off: u64,
        buf: &mut [u8],
    ) -> Result<usize> {
        let err = |e: ext4_view::Ext4Error| ExtError::at(path, &e);
        let mut file = match self.files.iter().position(|(n, _)| *n == ino) {
            Some(i) => self.files.remove(i).1,
            None => self.fs.open(path).map_err(err)?,
        };
        // A file that failed is dropped, never reused: its block iterator may be exhausted.
        if file.position() != off {
            file.seek_to(off).map_err(err)?;
        }
        let mut done = 0;
        while done < buf.len() {
            let n = file.read_bytes(&mut buf[done..]).map_err(err)?;
            if n == 0 {
                break;
            }
            done += n;
        }
        if self.files.len() >= OPEN_FILES {
            self.files.remove(0);
        }
        self.files.push((ino, file));
        Ok(done)
    }

    /// The target of symlink `path`.
    pub(crate) fn readlink(&self, path: &[u8]) -> Result<Vec<u8>> {
        let t = self
            .fs
            .read_link(path)
            .map_err(|e| ExtError::at(path, &e))?;
        Ok(t.as_ref().to_vec())
    }
}

type Job = Box<dyn FnOnce(&mut Reader) + Send>;

/// The reader threads.
pub(crate) struct Pool {
    senders: Vec<mpsc::Sender<Job>>,
    threads: Vec<JoinHandle<()>>,
}

fn load(src: &Source, block_size: u32) -> Result<Reader> {
    let fs = Ext4::load(Box::new(src.clone())).map_err(|e| ExtError::load(&e))?;
    Ok(Reader {
        fs,
        block_size,
        files: Vec::new(),
    })
}

fn serve(
    src: Source,
    block_size: u32,
    rx: mpsc::Receiver<Job>,
    ready: mpsc::SyncSender<Result<()>>,
) {
    let mut reader = match load(&src, block_size) {
        Ok(r) => {
            let _ = ready.send(Ok(()));
            r
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    drop(ready);
    while let Ok(job) = rx.recv() {
        // The job's reply channel is dropped by the unwind, so its caller gets an error.
        if catch_unwind(AssertUnwindSafe(|| job(&mut reader))).is_err() {
            log::error!("ext4-view panicked on a request; reloading the filesystem");
            reader = match load(&src, block_size) {
                Ok(r) => r,
                Err(e) => {
                    log::error!("cannot reload the ext filesystem: {e}");
                    return;
                }
            };
        }
    }
}

impl Pool {
    /// Starts `threads` (at least 1) reader threads on the filesystem at `base` in `file`,
    /// `len` bytes long, and waits until each has loaded it.
    pub(crate) fn start(
        file: Arc<dyn ImageSource>,
        base: u64,
        len: u64,
        block_size: u32,
        threads: usize,
    ) -> Result<Pool> {
        let src = Source { file, base, len };
        let mut pool = Pool {
            senders: Vec::new(),
            threads: Vec::new(),
        };
        let mut waits = Vec::new();
        for i in 0..threads.max(1) {
            let (tx, rx) = mpsc::channel::<Job>();
            let (ready_tx, ready_rx) = mpsc::sync_channel(1);
            let src = src.clone();
            let h = std::thread::Builder::new()
                .name(format!("sifr-ext-{i}"))
                .spawn(move || serve(src, block_size, rx, ready_tx))
                .map_err(|e| ExtError::Worker(format!("cannot start a reader thread: {e}")))?;
            pool.senders.push(tx);
            pool.threads.push(h);
            waits.push(ready_rx);
        }
        for w in waits {
            match w.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    return Err(ExtError::Worker(
                        "a reader thread died while loading the filesystem".into(),
                    ));
                }
            }
        }
        Ok(pool)
    }

    /// Runs `f` on the thread that serves `key` and returns its result.
    pub(crate) fn call<R, F>(&self, key: u32, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut Reader) -> R + Send + 'static,
    {
        let (tx, rx) = mpsc::sync_channel(1);
        let job: Job = Box::new(move |r| {
            let _ = tx.send(f(r));
        });
        let sender = &self.senders[key as usize % self.senders.len()];
        sender
            .send(job)
            .map_err(|_| ExtError::Worker("the reader thread has stopped".into()))?;
        rx.recv().map_err(|_| {
            ExtError::Worker(
                "the request failed inside ext4-view (it panicked; see the log)".into(),
            )
        })
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Closing the channels ends the threads' loops.
        self.senders.clear();
        for h in self.threads.drain(..) {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;

    #[test]
    fn test_source_refuses_reads_past_the_end() {
        let mut tmp = tempfile::tempfile().expect("tempfile");
        std::io::Write::write_all(&mut tmp, b"0123456789").expect("write");
        let mut s = Source {
            file: Arc::new(tmp) as Arc<dyn ImageSource>,
            base: 2,
            len: 6,
        };
        let mut b = [0u8; 4];
        s.read(2, &mut b).expect("in range");
        assert_eq!(&b, b"4567");
        let e = s.read(3, &mut b).expect_err("past len");
        assert!(e.to_string().contains("past the end"), "{e}");
        assert!(s.read(u64::MAX, &mut b).is_err());
    }

    /// A fresh empty ext2 image made by mke2fs.
    fn image() -> (tempfile::TempDir, File) {
        let dir = tempfile::tempdir().expect("tempdir");
        let img = dir.path().join("e.img");
        let st = std::process::Command::new("mke2fs")
            .args(["-q", "-F", "-t", "ext2"])
            .arg(&img)
            .arg("1M")
            .status()
            .expect("mke2fs runs (install e2fsprogs)");
        assert!(st.success());
        let f = File::open(&img).expect("open image");
        (dir, f)
    }

    #[test]
    fn test_a_panicking_request_fails_alone() {
        let (_dir, f) = image();
        let len = f.metadata().expect("stat").len();
        let pool = Pool::start(Arc::new(f), 0, len, 1024, 1).expect("load");
        let r: Result<()> = pool.call(7, |_| panic!("simulated ext4-view bug"));
        assert!(matches!(r, Err(ExtError::Worker(_))), "{r:?}");
        // The same thread serves the next request with a reloaded filesystem.
        let root = pool.call(7, |r| r.meta(b"/")).expect("call").expect("meta");
        assert_eq!(root.kind, FileType::Directory);
        assert!(pool.call(7, |r| r.list(b"/")).expect("call").is_ok());
    }

    #[test]
    fn test_load_failure_is_reported_by_start() {
        let tmp = tempfile::tempfile().expect("tempfile");
        tmp.set_len(1 << 16).expect("size");
        let e = Pool::start(Arc::new(tmp), 0, 1 << 16, 1024, 2)
            .err()
            .expect("zeros are no ext");
        assert_eq!(e.errno(), libc::EIO);
    }
}
