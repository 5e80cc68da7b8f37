//! A read-only, inode-keyed, thread-safe ext2/3/4 reader over the `ext4-view` crate, for SIF
//! ext3 partitions and ext image files. Opening checks the superblock, starts the reader
//! threads (each loads the filesystem: superblock, block group descriptors, and the journal,
//! which ext4-view replays in memory: the image is never written) and reads the root's
//! attributes. Nothing else is read until asked; there is no tree walk.
//!
//! ext4-view is path-based and hides inode numbers, link counts, device numbers and xattrs.
//! So numbers come from a table filled by `lookup` and `readdir` (see `table`): stable while
//! the filesystem is open, but hard links get one number per name, every `nlink` is 1, device
//! nodes report device 0 and there are no xattrs.

mod error;
mod superblock;
mod table;
mod worker;

use std::cell::RefCell;
use std::fs::File;
use std::sync::Arc;
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

pub use error::{ExtError, Result};

use crate::source::ImageSource;
use crate::squashfs::{Attr, DirEntry, FileType};
use error::corrupt;
use superblock::{SUPERBLOCK_OFFSET, SUPERBLOCK_SIZE, Superblock};
use table::{Child, ROOT, Table, is_dir};
use worker::Pool;

/// Longest symlink target read (Linux's PATH_MAX).
const MAX_SYMLINK: u64 = 4096;
/// Largest directory listed: ext4 directories stop at 2 GiB without `largedir`, which
/// ext4-view does not support.
const MAX_DIR_BYTES: u64 = 2 << 30;
/// Directory entries handed to a `readdir` callback per table lock.
const BATCH: usize = 256;

/// Tuning of an `ExtFs`.
#[derive(Debug, Clone)]
pub struct Options {
    /// Reader threads, each with its own ext4-view instance and block cache (at least 1).
    pub threads: usize,
    /// Bytes the filesystem may occupy from its offset (a SIF partition's size); None: up to
    /// the end of the file. A filesystem that claims more blocks is refused as truncated.
    pub size: Option<u64>,
}

impl Default for Options {
    fn default() -> Self {
        let cpus = std::thread::available_parallelism().map_or(2, usize::from);
        Options {
            threads: cpus.clamp(1, 4),
            size: None,
        }
    }
}

/// An open ext2/3/4 filesystem. `Send + Sync`: share it (e.g. in an `Arc`) between threads.
///
/// Its reader threads start in `open`, so open it in the process that uses it (threads do
/// not survive `fork`). Dropping it stops and joins them.
pub struct ExtFs {
    sb: Superblock,
    table: RwLock<Table>,
    pool: Pool,
    /// Directories bigger than this are refused as corrupt.
    max_dir: u64,
}

impl std::fmt::Debug for ExtFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExtFs")
            .field("block_size", &self.sb.block_size)
            .field("blocks", &self.sb.blocks)
            .field("inodes", &self.sb.inodes)
            .finish_non_exhaustive()
    }
}

thread_local! {
    /// Per-thread buffer that carries read data back from a reader thread.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

impl ExtFs {
    /// Opens the ext2/3/4 filesystem that starts `offset` bytes into `file` (0 for an image
    /// file, the partition offset for a SIF), with default options.
    pub fn open(file: File, offset: u64) -> Result<ExtFs> {
        Self::open_with(file, offset, Options::default())
    }

    /// Opens the filesystem that starts `offset` bytes into `file`.
    pub fn open_with(file: File, offset: u64, opts: Options) -> Result<ExtFs> {
        Self::open_source(Arc::new(file), offset, opts)
    }

    /// Opens the filesystem that starts `offset` bytes into `file`, any [`ImageSource`].
    pub fn open_source(file: Arc<dyn ImageSource>, offset: u64, opts: Options) -> Result<ExtFs> {
        let flen = file
            .size()
            .map_err(|source| ExtError::Io { pos: 0, source })?;
        let mut avail = flen.saturating_sub(offset);
        if let Some(s) = opts.size {
            avail = avail.min(s);
        }
        let need = SUPERBLOCK_OFFSET + SUPERBLOCK_SIZE as u64;
        if avail < need {
            return Err(ExtError::Truncated {
                what: "superblock",
                need,
                have: avail,
            });
        }
        let mut raw = [0u8; SUPERBLOCK_SIZE];
        let pos = offset
            .checked_add(SUPERBLOCK_OFFSET)
            .ok_or_else(|| corrupt(format!("offset {offset} is out of range")))?;
        file.read_exact_at(&mut raw, pos)
            .map_err(|source| ExtError::Io {
                pos: SUPERBLOCK_OFFSET,
                source,
            })?;
        let sb = Superblock::parse(&raw, avail)?;
        let pool = Pool::start(file, offset, sb.bytes, sb.block_size, opts.threads).map_err(
            |e| match e {
                ExtError::Unsupported(why) if sb.needs_recovery => ExtError::Unsupported(format!(
                    "the journal needs recovery, and only journals with the 64bit and csum v3 \
                     features (ext4's) can be replayed in memory ({why}); replay it with \
                     `e2fsck -fy` on the image first"
                )),
                e => e,
            },
        )?;
        let root = pool.call(ROOT, |r| r.meta(b"/"))??;
        if !is_dir(&root) {
            return Err(corrupt("the root inode is not a directory"));
        }
        Ok(ExtFs {
            sb,
            table: RwLock::new(Table::new(root)),
            pool,
            max_dir: MAX_DIR_BYTES.min(sb.bytes),
        })
    }

    fn r(&self) -> RwLockReadGuard<'_, Table> {
        self.table.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn w(&self) -> RwLockWriteGuard<'_, Table> {
        self.table.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// The root directory's inode number.
    pub fn root(&self) -> u32 {
        ROOT
    }

    /// The block size.
    pub fn block_size(&self) -> u32 {
        self.sb.block_size
    }

    /// Blocks in the filesystem.
    pub fn blocks(&self) -> u64 {
        self.sb.blocks
    }

    /// Inodes in the filesystem (from the superblock).
    pub fn inode_count(&self) -> u32 {
        self.sb.inodes
    }

    /// How many inode numbers have been handed out so far (the table's size).
    pub fn known_inodes(&self) -> usize {
        self.r().len()
    }

    /// Attributes of `ino`.
    pub fn stat(&self, ino: u32) -> Result<Attr> {
        self.r().attr(ino).ok_or(ExtError::NoInode(u64::from(ino)))
    }

    /// The parent of directory `dir` (the root is its own parent).
    pub fn parent(&self, dir: u32) -> Result<u32> {
        self.r()
            .parent(dir)
            .ok_or(ExtError::NoInode(u64::from(dir)))
    }

    /// The attributes and image path of directory `dir`.
    fn dir_path(&self, dir: u32) -> Result<(Attr, Vec<u8>)> {
        let t = self.r();
        let a = t.attr(dir).ok_or(ExtError::NoInode(u64::from(dir)))?;
        if !is_dir(&a) {
            return Err(ExtError::NotDir(dir));
        }
        let p = t.path(dir).ok_or(ExtError::NoInode(u64::from(dir)))?;
        Ok((a, p))
    }

    /// Looks `name` up in directory `dir`: its attributes, or None when absent.
    pub fn lookup_attr(&self, dir: u32, name: &[u8]) -> Result<Option<Attr>> {
        let (attr, mut path) = self.dir_path(dir)?;
        match name {
            b"." => return Ok(Some(attr)),
            b".." => return self.stat(self.parent(dir)?).map(Some),
            _ => {}
        }
        if name.is_empty() || name.len() > 255 || name.contains(&b'/') || name.contains(&0) {
            return Ok(None);
        }
        // Bound first: the read guard must be gone before `stat` takes another.
        let known = self.r().child(dir, name);
        match known {
            Child::Known(n) => return self.stat(n).map(Some),
            Child::Absent => return Ok(None),
            Child::Unknown => {}
        }
        if path != b"/" {
            path.push(b'/');
        }
        path.extend_from_slice(name);
        let found = self.pool.call(dir, move |r| match r.meta(&path) {
            Ok(a) => Ok(Some(a)),
            Err(e) if e.errno() == libc::ENOENT => Ok(None),
            Err(e) => Err(e),
        })??;
        let Some(a) = found else {
            return Ok(None);
        };
        let n = self
            .w()
            .insert(dir, name, a)
            .ok_or_else(|| corrupt("out of inode numbers"))?;
        self.stat(n).map(Some)
    }

    /// Looks `name` up in directory `dir`: its inode number, or None when absent.
    pub fn lookup(&self, dir: u32, name: &[u8]) -> Result<Option<u32>> {
        Ok(self.lookup_attr(dir, name)?.map(|a| a.ino))
    }

    /// The full listing of directory `dir`, read from the image the first time.
    fn listing(&self, dir: u32) -> Result<std::sync::Arc<[u32]>> {
        let (a, path) = self.dir_path(dir)?;
        let known = self.r().listing(dir);
        if let Some(l) = known {
            return Ok(l);
        }
        if a.size > self.max_dir {
            return Err(corrupt(format!(
                "directory {} is {} bytes, more than the {} bytes allowed",
                String::from_utf8_lossy(&path),
                a.size,
                self.max_dir
            )));
        }
        let entries = self.pool.call(dir, move |r| r.list(&path))??;
        let mut t = self.w();
        let mut kids = Vec::with_capacity(entries.len());
        for (name, attr) in entries {
            kids.push(
                t.insert(dir, &name, attr)
                    .ok_or_else(|| corrupt("out of inode numbers"))?,
            );
        }
        Ok(t.set_listing(dir, kids))
    }

    /// Lists `dir` from `cookie` (0 = start; `.` and `..` are not included). `f` gets each
    /// entry and its attributes and returns false to stop before consuming that entry.
    pub fn readdir(
        &self,
        dir: u32,
        cookie: u64,
        f: &mut dyn FnMut(DirEntry<'_>, &Attr) -> bool,
    ) -> Result<()> {
        let listing = self.listing(dir)?;
        let mut at = usize::try_from(cookie).unwrap_or(usize::MAX);
        while at < listing.len() {
            // Copy a batch out so that `f` runs without the table lock.
            let batch = self.r().batch(&listing, at, BATCH);
            if batch.is_empty() {
                break;
            }
            for (name, attr) in &batch {
                at += 1;
                let e = DirEntry {
                    name,
                    ino: attr.ino,
                    kind: attr.kind,
                    next_cookie: at as u64,
                };
                if !f(e, attr) {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Reads file data at `offset`; returns the bytes read (0 at the end).
    pub fn read(&self, ino: u32, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let a = self.stat(ino)?;
        if a.kind != FileType::Regular {
            return Err(ExtError::WrongType {
                ino,
                want: "regular file",
            });
        }
        if offset >= a.size || buf.is_empty() {
            return Ok(0);
        }
        if !self.sb.extents && a.size > self.sb.block_map_max_bytes() {
            return Err(corrupt(format!(
                "inode {ino} claims {} bytes, more than a block map can address",
                a.size
            )));
        }
        let want = (a.size - offset).min(buf.len() as u64) as usize;
        let path = self
            .r()
            .path(ino)
            .ok_or(ExtError::NoInode(u64::from(ino)))?;
        let mut scratch = SCRATCH.with(|s| std::mem::take(&mut *s.borrow_mut()));
        scratch.resize(want, 0);
        let (scratch, r) = self.pool.call(ino, move |rd| {
            let mut s = scratch;
            let r = rd.read(ino, &path, offset, &mut s);
            (s, r)
        })?;
        let n = r?.min(want);
        buf[..n].copy_from_slice(&scratch[..n]);
        SCRATCH.with(|s| *s.borrow_mut() = scratch);
        Ok(n)
    }

    /// A symlink's target.
    pub fn readlink(&self, ino: u32) -> Result<Vec<u8>> {
        let a = self.stat(ino)?;
        if a.kind != FileType::Symlink {
            return Err(ExtError::WrongType {
                ino,
                want: "symlink",
            });
        }
        let path = self
            .r()
            .path(ino)
            .ok_or(ExtError::NoInode(u64::from(ino)))?;
        if a.size == 0 || a.size > MAX_SYMLINK {
            return Err(corrupt(format!(
                "symlink {} has a target of {} bytes (1 to {MAX_SYMLINK} allowed)",
                String::from_utf8_lossy(&path),
                a.size
            )));
        }
        self.pool.call(ino, move |r| r.readlink(&path))?
    }
}
