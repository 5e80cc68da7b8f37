//! File data: a streaming pipeline that reads files in tree order (this thread), compresses
//! blocks on N worker threads and writes them in order (one writer thread). Tails go into
//! shared fragment blocks, all-zero blocks become sparse, and duplicate files (same size and
//! SHA-256) are stored once. Memory is bounded by a fixed pool of block buffers: every block in
//! flight holds one.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use super::compress::{Encoder, output_bound};
use super::error::{WriteError, WriteResult};
use super::tree::{InodeIdx, Kind, Tree};
use crate::Compressor;
use crate::data::UNCOMPRESSED;

/// What the data phase needs to know.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Params {
    pub comp: Compressor,
    pub level: u32,
    pub block_size: u32,
    pub threads: usize,
    pub fragments: bool,
    pub tail_ends: bool,
    pub duplicates: bool,
    pub sparse: bool,
}

/// Where one regular file's data went.
#[derive(Debug, Clone, Default)]
pub(crate) struct FileData {
    /// Image offset of the first data block (0 when there is none).
    pub start: u64,
    /// Block-size words (0: sparse block; bit 24: stored uncompressed).
    pub words: Vec<u32>,
    /// (fragment index, offset in the fragment block) of the tail.
    pub frag: Option<(u32, u32)>,
}

/// Counters of the data phase.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct DataStats {
    pub data_bytes: u64,
    pub blocks: u64,
    pub sparse_blocks: u64,
    pub duplicates: u32,
}

/// Result of the data phase.
#[derive(Debug)]
pub(crate) struct DataOut {
    /// Indexed by the tree's file index.
    pub files: Vec<FileData>,
    /// (image offset, size word) of every fragment block, by index.
    pub fragments: Vec<(u64, u32)>,
    /// Image offset just past the data.
    pub end: u64,
    pub stats: DataStats,
}

/// A unit of work, in output order (`seq`). Every message holds one pool buffer, which
/// bounds how many can be in flight.
struct Msg {
    seq: u64,
    buf: Vec<u8>,
    what: What,
}

enum What {
    /// Producer to worker: `len` bytes of file data; worker to writer: `word` describes `buf`.
    Block { file: u32, len: usize, word: u32 },
    /// Same for a fragment block.
    Frag { index: u32, len: usize, word: u32 },
    /// End of a file's blocks; with `dup_of`, they repeat an earlier file and are dropped.
    End { file: u32, dup_of: Option<u32> },
    /// A worker failed.
    Failed(WriteError),
}

/// Writes the data of every regular file of `tree` (rooted at `src`) into `out`, starting
/// at image offset `start`; the image itself starts at byte `base` of `out`.
pub(crate) fn write(
    tree: &Tree,
    src: &Path,
    out: &File,
    base: u64,
    start: u64,
    p: &Params,
) -> WriteResult<DataOut> {
    let bound = output_bound(p.comp, p.block_size as usize).max(p.block_size as usize);
    let pool_size = 4 * p.threads + 8;
    std::thread::scope(|s| {
        let (job_tx, job_rx) = channel::<Msg>();
        let job_rx = Arc::new(Mutex::new(job_rx));
        let (done_tx, done_rx) = channel::<Msg>();
        let (pool_tx, pool_rx) = channel::<Vec<u8>>();
        for _ in 0..pool_size {
            // The receiver is alive here, so this cannot fail.
            let _ = pool_tx.send(Vec::with_capacity(bound));
        }
        let nfiles = tree.files as usize;
        let writer = s.spawn(move || write_ordered(done_rx, pool_tx, out, base, start, nfiles));
        let mut workers = Vec::with_capacity(p.threads);
        for _ in 0..p.threads {
            let rx = Arc::clone(&job_rx);
            let tx = done_tx.clone();
            let p = *p;
            workers.push(s.spawn(move || compress_blocks(&rx, &tx, &p, bound)));
        }
        drop(job_rx);
        let produced = Producer {
            tree,
            p,
            jobs: job_tx,
            direct: done_tx,
            pool: pool_rx,
            seq: 0,
            frag: None,
            frag_len: 0,
            frag_count: 0,
            frag_of: vec![None; nfiles],
            seen: vec![false; nfiles],
            dedup: HashMap::new(),
            tail: Vec::new(),
            stats: DataStats::default(),
        }
        .run(src);
        let written = writer
            .join()
            .map_err(|_| WriteError::Thread("the data writer panicked".into()))?;
        for w in workers {
            w.join()
                .map_err(|_| WriteError::Thread("a compression thread panicked".into()))?;
        }
        // A writer error explains a producer that saw the pipeline stop; otherwise the
        // producer's error is the cause of an incomplete write.
        let mut w = written?;
        let (frag_of, stats) = produced?;
        if !w.complete {
            return Err(stopped());
        }
        if w.files.len() != frag_of.len() {
            return Err(WriteError::Thread("file table size mismatch".into()));
        }
        for (fd, frag) in w.files.iter_mut().zip(frag_of) {
            fd.frag = frag;
        }
        let mut stats = stats;
        stats.blocks = w.blocks;
        stats.sparse_blocks = w.sparse_blocks;
        Ok(DataOut {
            files: w.files,
            fragments: w.fragments,
            end: w.end,
            stats,
        })
    })
}

fn stopped() -> WriteError {
    WriteError::Thread("the data pipeline stopped".into())
}

/// True if every byte is zero.
fn is_zero(b: &[u8]) -> bool {
    let (chunks, rest) = b.as_chunks::<16>();
    chunks.iter().all(|c| u128::from_ne_bytes(*c) == 0) && rest.iter().all(|&x| x == 0)
}

/// Worker: compresses blocks until the job channel closes.
fn compress_blocks(jobs: &Mutex<Receiver<Msg>>, done: &Sender<Msg>, p: &Params, bound: usize) {
    let mut enc = match Encoder::new(p.comp, p.level, p.block_size) {
        Ok(e) => e,
        Err(e) => {
            let _ = done.send(Msg {
                seq: u64::MAX,
                buf: Vec::new(),
                what: What::Failed(e),
            });
            return;
        }
    };
    let mut spare = Vec::with_capacity(bound);
    loop {
        let job = {
            let rx = match jobs.lock() {
                Ok(g) => g,
                Err(poisoned) => poisoned.into_inner(),
            };
            rx.recv()
        };
        let Ok(Msg { seq, mut buf, what }) = job else {
            return;
        };
        let (len, sparse_ok) = match what {
            What::Block { len, .. } => (len, p.sparse),
            What::Frag { len, .. } => (len, false),
            _ => (0, false),
        };
        let word = if sparse_ok && is_zero(&buf[..len]) {
            buf.clear();
            0
        } else {
            match enc.compress(&buf[..len], &mut spare) {
                Ok(Some(n)) => {
                    std::mem::swap(&mut buf, &mut spare);
                    buf.truncate(n);
                    n as u32
                }
                Ok(None) => {
                    buf.truncate(len);
                    len as u32 | UNCOMPRESSED
                }
                Err(e) => {
                    let _ = done.send(Msg {
                        seq,
                        buf,
                        what: What::Failed(e),
                    });
                    return;
                }
            }
        };
        let what = match what {
            What::Block { file, len, .. } => What::Block { file, len, word },
            What::Frag { index, len, .. } => What::Frag { index, len, word },
            other => other,
        };
        if done.send(Msg { seq, buf, what }).is_err() {
            return; // the writer stopped
        }
    }
}

/// Reads files in tree order and feeds the pipeline.
struct Producer<'a> {
    tree: &'a Tree,
    p: &'a Params,
    jobs: Sender<Msg>,
    direct: Sender<Msg>,
    pool: Receiver<Vec<u8>>,
    seq: u64,
    /// The fragment block being filled.
    frag: Option<Vec<u8>>,
    frag_len: usize,
    frag_count: u32,
    frag_of: Vec<Option<(u32, u32)>>,
    seen: Vec<bool>,
    /// (size, SHA-256) -> first file with that content.
    dedup: HashMap<(u64, [u8; 32]), u32>,
    tail: Vec<u8>,
    stats: DataStats,
}

type Produced = (Vec<Option<(u32, u32)>>, DataStats);

impl Producer<'_> {
    fn run(mut self, src: &Path) -> WriteResult<Produced> {
        // Depth-first, entries in name order: the order data lands in the image.
        let mut path = src.to_path_buf();
        let mut stack: Vec<(InodeIdx, usize)> = vec![(0, 0)];
        while let Some(top) = stack.last_mut() {
            let entries = self.tree.entries(top.0);
            let Some(e) = entries.get(top.1) else {
                stack.pop();
                if !stack.is_empty() {
                    path.pop();
                }
                continue;
            };
            top.1 += 1;
            match self.tree.inodes[e.inode as usize].kind {
                Kind::Dir { .. } => {
                    path.push(OsStr::from_bytes(&e.name));
                    stack.push((e.inode, 0));
                }
                Kind::File { size, file } if !self.seen[file as usize] => {
                    self.seen[file as usize] = true;
                    path.push(OsStr::from_bytes(&e.name));
                    let r = self.file(&path, file, size);
                    path.pop();
                    r?;
                }
                _ => {}
            }
        }
        if self.frag_len > 0 {
            self.flush_fragment()?;
        }
        Ok((self.frag_of, self.stats))
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq - 1
    }

    fn buffer(&mut self) -> WriteResult<Vec<u8>> {
        self.pool.recv().map_err(|_| stopped())
    }

    fn file(&mut self, path: &Path, file: u32, size: u64) -> WriteResult<()> {
        self.stats.data_bytes += size;
        if size == 0 {
            return Ok(());
        }
        // O_NOFOLLOW and O_NONBLOCK: something swapped in since the scan (a symlink, a
        // fifo) must neither be followed nor block the build; it fails the checks below.
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)
            .map_err(|e| WriteError::source(path, "open", e))?;
        let md = f
            .metadata()
            .map_err(|e| WriteError::source(path, "stat", e))?;
        if !md.is_file() {
            return Err(WriteError::Unsupported {
                path: path.to_path_buf(),
                what: "is no longer a regular file (the tree changed during the build)".into(),
            });
        }
        let now = md.size();
        if now != size {
            return Err(WriteError::Changed {
                path: path.to_path_buf(),
                was: size,
                now,
            });
        }
        let bs = u64::from(self.p.block_size);
        let to_frag = self.p.fragments && (size < bs || self.p.tail_ends);
        let (nblocks, tail) = if to_frag {
            (size / bs, (size % bs) as usize)
        } else {
            (size.div_ceil(bs), 0)
        };
        let candidate =
            self.p.duplicates && self.tree.size_count.get(&size).copied().unwrap_or(0) > 1;
        let mut hash = candidate.then(Sha256::new);
        let changed = |read: u64, e: io::Error| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                WriteError::Changed {
                    path: path.to_path_buf(),
                    was: size,
                    now: read,
                }
            } else {
                WriteError::source(path, "read", e)
            }
        };
        for k in 0..nblocks {
            let len = (size - k * bs).min(bs) as usize;
            let mut buf = self.buffer()?;
            buf.resize(len, 0);
            f.read_exact(&mut buf).map_err(|e| changed(k * bs, e))?;
            if let Some(h) = hash.as_mut() {
                h.update(&buf);
            }
            let seq = self.next_seq();
            self.jobs
                .send(Msg {
                    seq,
                    buf,
                    what: What::Block { file, len, word: 0 },
                })
                .map_err(|_| stopped())?;
        }
        let mut tail_buf = std::mem::take(&mut self.tail);
        tail_buf.resize(tail, 0);
        if tail > 0 {
            f.read_exact(&mut tail_buf)
                .map_err(|e| changed(nblocks * bs, e))?;
            if let Some(h) = hash.as_mut() {
                h.update(&tail_buf);
            }
        }
        let dup_of = match hash {
            Some(h) => {
                let key = (size, h.finalize().into());
                match self.dedup.get(&key) {
                    Some(&orig) => Some(orig),
                    None => {
                        self.dedup.insert(key, file);
                        None
                    }
                }
            }
            None => None,
        };
        if nblocks > 0 {
            let buf = self.buffer()?;
            let seq = self.next_seq();
            self.direct
                .send(Msg {
                    seq,
                    buf,
                    what: What::End { file, dup_of },
                })
                .map_err(|_| stopped())?;
        }
        if let Some(orig) = dup_of {
            self.stats.duplicates += 1;
            self.frag_of[file as usize] = self.frag_of[orig as usize];
        } else if tail > 0 {
            self.pack(file, &tail_buf)?;
        }
        self.tail = tail_buf;
        Ok(())
    }

    /// Appends a tail to the fragment block, sending the block off first if it is full.
    fn pack(&mut self, file: u32, tail: &[u8]) -> WriteResult<()> {
        let bs = self.p.block_size as usize;
        if self.frag_len + tail.len() > bs {
            self.flush_fragment()?;
        }
        let mut frag = match self.frag.take() {
            Some(f) => f,
            None => self.buffer()?,
        };
        frag.resize(self.frag_len + tail.len(), 0);
        frag[self.frag_len..].copy_from_slice(tail);
        self.frag_of[file as usize] = Some((self.frag_count, self.frag_len as u32));
        self.frag_len += tail.len();
        self.frag = Some(frag);
        Ok(())
    }

    fn flush_fragment(&mut self) -> WriteResult<()> {
        let Some(buf) = self.frag.take() else {
            return Ok(());
        };
        let (index, len) = (self.frag_count, self.frag_len);
        self.frag_count = self
            .frag_count
            .checked_add(1)
            .filter(|&n| n < u32::MAX)
            .ok_or_else(|| WriteError::Limit("more than 2^32-1 fragments".into()))?;
        self.frag_len = 0;
        let seq = self.next_seq();
        self.jobs
            .send(Msg {
                seq,
                buf,
                what: What::Frag {
                    index,
                    len,
                    word: 0,
                },
            })
            .map_err(|_| stopped())
    }
}

/// What the writer thread produced.
struct Written {
    files: Vec<FileData>,
    fragments: Vec<(u64, u32)>,
    end: u64,
    blocks: u64,
    sparse_blocks: u64,
    /// False when the input ended with blocks missing (the producer failed).
    complete: bool,
}

/// Writer thread: puts blocks into the image in `seq` order and records where they went.
fn write_ordered(
    rx: Receiver<Msg>,
    pool: Sender<Vec<u8>>,
    out: &File,
    base: u64,
    start: u64,
    nfiles: usize,
) -> WriteResult<Written> {
    let mut w = BufWriter::with_capacity(1 << 20, out);
    w.seek(SeekFrom::Start(base + start))
        .map_err(|e| WriteError::output("seek", e))?;
    let mut st = Written {
        files: vec![FileData::default(); nfiles],
        fragments: Vec::new(),
        end: start,
        blocks: 0,
        sparse_blocks: 0,
        complete: false,
    };
    // (file, start, words) of the file whose blocks are arriving.
    let mut cur: Option<(u32, u64, Vec<u32>)> = None;
    let mut pending: BTreeMap<u64, Msg> = BTreeMap::new();
    let mut next = 0u64;
    for msg in rx {
        if let What::Failed(e) = msg.what {
            return Err(e);
        }
        pending.insert(msg.seq, msg);
        while let Some(m) = pending.remove(&next) {
            next += 1;
            let Msg { buf, what, .. } = m;
            match what {
                What::Block { file, word, .. } => {
                    let run = match &mut cur {
                        Some(c) if c.0 == file => c,
                        _ => cur.insert((file, st.end, Vec::new())),
                    };
                    run.2.push(word);
                    st.blocks += 1;
                    if word == 0 {
                        st.sparse_blocks += 1;
                    }
                    w.write_all(&buf)
                        .map_err(|e| WriteError::output("write data", e))?;
                    st.end += buf.len() as u64;
                }
                What::End { file, dup_of } => {
                    let Some((f, fstart, words)) = cur.take().filter(|c| c.0 == file) else {
                        return Err(WriteError::Thread(format!(
                            "file {file} ended without its blocks"
                        )));
                    };
                    let fd = match dup_of {
                        Some(orig) => {
                            // Same bytes as an earlier file: forget the copy just written.
                            st.end = fstart;
                            w.seek(SeekFrom::Start(base + fstart))
                                .map_err(|e| WriteError::output("seek", e))?;
                            st.files.get(orig as usize).cloned().unwrap_or_default()
                        }
                        None => FileData {
                            start: fstart,
                            words,
                            frag: None,
                        },
                    };
                    if let Some(slot) = st.files.get_mut(f as usize) {
                        *slot = fd;
                    }
                }
                What::Frag { index, word, .. } => {
                    if index as usize != st.fragments.len() {
                        return Err(WriteError::Thread(format!("fragment {index} out of order")));
                    }
                    st.fragments.push((st.end, word));
                    w.write_all(&buf)
                        .map_err(|e| WriteError::output("write fragment", e))?;
                    st.end += buf.len() as u64;
                }
                What::Failed(e) => return Err(e),
            }
            // The producer may be gone (it failed); then the buffer is just dropped.
            let _ = pool.send(buf);
        }
    }
    w.flush().map_err(|e| WriteError::output("write data", e))?;
    st.complete = pending.is_empty() && cur.is_none();
    Ok(st)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::write::{WriteOptions, XattrMode, tree};

    fn params() -> Params {
        Params {
            comp: Compressor::Gzip,
            level: 9,
            block_size: 4096,
            threads: 2,
            fragments: true,
            tail_ends: false,
            duplicates: true,
            sparse: true,
        }
    }

    /// Scans a tree, lets `change` modify it, then writes the data.
    fn write_after(change: impl FnOnce(&Path)) -> WriteResult<DataOut> {
        let d = tempfile::tempdir().expect("tempdir");
        let src = d.path().join("t");
        std::fs::create_dir(&src).expect("mkdir");
        std::fs::write(src.join("a"), vec![7u8; 10000]).expect("write");
        std::fs::write(src.join("b"), b"bee").expect("write");
        let opts = WriteOptions {
            xattrs: XattrMode::None,
            ..WriteOptions::default()
        };
        let t = tree::scan(&src, &opts, None).expect("scan");
        change(&src);
        let out = File::create(d.path().join("img")).expect("create");
        write(&t, &src, &out, 0, 96, &params())
    }

    #[test]
    fn test_data_layout() {
        let d = write_after(|_| {}).expect("write");
        // a: 3 blocks (10000 bytes, no tail packing), b: a 3-byte fragment.
        let blocks: Vec<usize> = d.files.iter().map(|f| f.words.len()).collect();
        assert!(blocks.contains(&3) && blocks.contains(&0), "{blocks:?}");
        assert_eq!(d.fragments.len(), 1);
        assert_eq!(d.files.iter().filter(|f| f.frag.is_some()).count(), 1);
        assert_eq!(d.stats.data_bytes, 10003);
        assert!(d.end > 96);
    }

    #[test]
    fn test_file_changed_during_build() {
        let e = write_after(|src| {
            std::fs::write(src.join("a"), b"shorter").expect("write");
        })
        .expect_err("changed file");
        assert!(
            matches!(
                e,
                WriteError::Changed {
                    was: 10000,
                    now: 7,
                    ..
                }
            ),
            "{e:?}"
        );
        // A fifo swapped in for a file neither blocks nor gets read.
        let e = write_after(|src| {
            std::fs::remove_file(src.join("b")).expect("rm");
            let c = std::ffi::CString::new(src.join("b").as_os_str().as_bytes()).expect("path");
            // SAFETY: valid C string.
            assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        })
        .expect_err("fifo");
        assert!(e.to_string().contains("no longer a regular file"), "{e}");
        let e = write_after(|src| {
            std::fs::remove_file(src.join("b")).expect("rm");
        })
        .expect_err("removed file");
        assert!(matches!(e, WriteError::Source { op: "open", .. }), "{e:?}");
    }

    #[test]
    fn test_is_zero() {
        assert!(is_zero(&[]));
        assert!(is_zero(&[0u8; 4096]));
        let mut b = vec![0u8; 4099];
        assert!(is_zero(&b));
        b[4098] = 1;
        assert!(!is_zero(&b));
        b[4098] = 0;
        b[17] = 9;
        assert!(!is_zero(&b));
    }
}
