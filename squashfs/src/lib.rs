//! sifr-squashfs: the squashfs 4.0 on-disk format (superblock, tables, inodes, directories,
//! metadata blocks, data blocks, xattrs, compressors), a lazy reader over it, and, behind the
//! cargo feature `write` (on by default), the writer (`write`).
//!
//! The reader is lazy, inode-keyed and thread-safe. Opening reads the superblock, the id
//! table and the fragment/export/xattr table indexes only; everything else is decoded on
//! demand through bounded caches shared by all threads. All I/O is `pread` on one
//! [`ImageSource`].
//!
//! Why the writer is a feature of this crate and not a crate of its own: it encodes exactly
//! the structures the reader decodes, with the reader's constants and limits (superblock
//! layout and flags, metadata block size, directory header limits, inode sentinels, the
//! out-of-line xattr marker, the uncompressed-block bit) and the same compressor selection
//! (`Compressor`, `compress.rs`). As a separate crate all those private format items would
//! have to become public API; as a feature they stay `pub(crate)`, and a build that only
//! reads (sifr-fuse turns the default features off) compiles no writer code. Neither part
//! depends on fuse-backend-rs: the FUSE server is sifr-fuse.

mod cache;
mod compress;
mod data;
mod dir;
mod error;
mod inode;
mod meta;
pub mod source;
mod superblock;
mod tables;
#[cfg(feature = "write")]
pub mod write;
mod xattr;

use std::collections::HashMap;
use std::fs::File;
use std::sync::{Arc, RwLock};

pub use compress::Compressor;
pub use error::{Result, SqfsError};
pub use source::ImageSource;
#[cfg(feature = "write")]
pub use write::{WriteError, WriteOptions, WriteStats, Writer, XattrMode};
pub use xattr::XattrPolicy;

use cache::ByteCache;
use data::BlockIndex;
use error::corrupt;
use inode::{Body, DirInode, FileInode, Inode};
use meta::MetaBlock;
use superblock::{FLAG_NO_XATTRS, NO_TABLE, SUPERBLOCK_SIZE, Superblock};
use xattr::XattrTables;

/// Tuning of a `SquashFs`.
#[derive(Debug, Clone)]
pub struct Options {
    /// Byte budget of decompressed data and fragment blocks.
    pub data_cache_bytes: u64,
    /// Byte budget of decompressed metadata blocks.
    pub meta_cache_bytes: u64,
    /// Byte budget of the block indexes of big files.
    pub index_cache_bytes: u64,
    /// Which xattr namespaces are visible.
    pub xattrs: XattrPolicy,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            data_cache_bytes: 64 << 20,
            meta_cache_bytes: 8 << 20,
            index_cache_bytes: 4 << 20,
            xattrs: XattrPolicy::default(),
        }
    }
}

/// The type of an inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileType {
    /// Directory.
    Directory,
    /// Regular file.
    Regular,
    /// Symbolic link.
    Symlink,
    /// Block device.
    BlockDevice,
    /// Character device.
    CharDevice,
    /// Named pipe.
    Fifo,
    /// Unix socket.
    Socket,
}

impl FileType {
    /// The `S_IF*` bits of this type.
    pub fn mode_bits(self) -> u32 {
        match self {
            FileType::Directory => libc::S_IFDIR,
            FileType::Regular => libc::S_IFREG,
            FileType::Symlink => libc::S_IFLNK,
            FileType::BlockDevice => libc::S_IFBLK,
            FileType::CharDevice => libc::S_IFCHR,
            FileType::Fifo => libc::S_IFIFO,
            FileType::Socket => libc::S_IFSOCK,
        }
    }

    /// The `DT_*` value for directory listings.
    pub fn dtype(self) -> u32 {
        u32::from(match self {
            FileType::Directory => libc::DT_DIR,
            FileType::Regular => libc::DT_REG,
            FileType::Symlink => libc::DT_LNK,
            FileType::BlockDevice => libc::DT_BLK,
            FileType::CharDevice => libc::DT_CHR,
            FileType::Fifo => libc::DT_FIFO,
            FileType::Socket => libc::DT_SOCK,
        })
    }
}

/// Attributes of an inode, as `stat` reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    /// The squashfs inode number (hard links share it).
    pub ino: u32,
    /// The type.
    pub kind: FileType,
    /// Type and permission bits (`st_mode`).
    pub mode: u32,
    /// Link count.
    pub nlink: u32,
    /// Owner (from the id table).
    pub uid: u32,
    /// Group (from the id table).
    pub gid: u32,
    /// Bytes (for directories, squashfs' listing size, as the kernel reports it).
    pub size: u64,
    /// Modification time, seconds since the epoch (squashfs has one time per inode).
    pub mtime: u32,
    /// Device number for block/char devices, in the kernel's `new_encode_dev` form (the form
    /// squashfs stores and FUSE's `fuse_attr.rdev` expects).
    pub rdev: u32,
    /// 512-byte blocks.
    pub blocks: u64,
    /// Preferred I/O size (the squashfs block size).
    pub blksize: u32,
}

/// One directory entry from `readdir`.
#[derive(Debug, Clone, Copy)]
pub struct DirEntry<'a> {
    /// The name (no `.`/`..`: squashfs does not store them).
    pub name: &'a [u8],
    /// Inode number.
    pub ino: u32,
    /// Entry type.
    pub kind: FileType,
    /// Pass this back to `readdir` to continue after this entry.
    pub next_cookie: u64,
}

/// Byte counts of the shared caches.
#[derive(Debug, Clone, Copy)]
pub struct CacheStats {
    /// Decompressed data/fragment bytes held.
    pub data_bytes: u64,
    /// Data budget.
    pub data_capacity: u64,
    /// Decompressed metadata bytes held.
    pub meta_bytes: u64,
    /// Metadata budget.
    pub meta_capacity: u64,
}

/// Images up to this size are read ahead whole when opened (a small image is read almost
/// entirely by the first program it runs); bigger ones only get their metadata read ahead.
const PREFETCH_WHOLE: u64 = 32 << 20;

/// Asks the kernel to start reading, in the background, what opening and walking the
/// image will need: on a cold page cache this turns scattered small reads (each a disk
/// round trip) into one sequential read. Advisory: errors are ignored.
fn prefetch(file: &dyn ImageSource, base: u64, sb: &Superblock) {
    let (start, len) = if sb.bytes_used <= PREFETCH_WHOLE {
        (base, sb.bytes_used)
    } else {
        // The metadata tables follow the data: inode table to the end.
        let from = sb.inode_table.min(sb.bytes_used);
        (base + from, sb.bytes_used - from)
    };
    file.will_need(start, len);
}

/// Shards of the inode-number map used when the image has no export table.
const INO_SHARDS: usize = 16;

/// An open squashfs filesystem. `Send + Sync`: share it (e.g. in an `Arc`) between threads.
pub struct SquashFs {
    file: Arc<dyn ImageSource>,
    base: u64,
    sb: Superblock,
    comp: Compressor,
    opts: Options,
    ids: Vec<u32>,
    frag_index: Vec<u64>,
    export_index: Option<Vec<u64>>,
    xattrs: Option<XattrTables>,
    root_ino: u32,
    /// End of the directory table: the first table that follows it.
    dir_table_end: u64,
    /// inode number -> inode reference, filled by lookup/readdir when there is no export table.
    ino_map: [RwLock<HashMap<u32, u64>>; INO_SHARDS],
    meta_cache: ByteCache<u64, Arc<MetaBlock>>,
    data_cache: ByteCache<u64, Arc<[u8]>>,
    index_cache: ByteCache<u32, Arc<BlockIndex>>,
}

impl std::fmt::Debug for SquashFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SquashFs")
            .field("base", &self.base)
            .field("compressor", &self.comp)
            .field("inodes", &self.sb.inode_count)
            .finish_non_exhaustive()
    }
}

/// The directory table ends where the next table (fragment, export, id or xattr) starts.
fn dir_table_end(sb: &Superblock) -> u64 {
    [
        sb.fragment_table,
        sb.export_table,
        sb.id_table,
        sb.xattr_table,
        sb.bytes_used,
    ]
    .into_iter()
    .filter(|&p| p != NO_TABLE && p > sb.dir_table)
    .min()
    .unwrap_or(sb.bytes_used)
}

impl SquashFs {
    /// Opens the filesystem that starts `offset` bytes into `file`, with default options.
    pub fn open(file: File, offset: u64) -> Result<SquashFs> {
        Self::open_with(file, offset, Options::default())
    }

    /// Opens the filesystem that starts `offset` bytes into `file`.
    pub fn open_with(file: File, offset: u64, opts: Options) -> Result<SquashFs> {
        Self::open_source(Arc::new(file), offset, opts)
    }

    /// Opens the filesystem that starts `offset` bytes into `file`, any [`ImageSource`].
    pub fn open_source(file: Arc<dyn ImageSource>, offset: u64, opts: Options) -> Result<SquashFs> {
        let flen = file.size().map_err(|source| SqfsError::Io {
            pos: 0,
            len: 0,
            source,
        })?;
        let avail = flen.saturating_sub(offset);
        let mut raw = [0u8; SUPERBLOCK_SIZE];
        if avail < SUPERBLOCK_SIZE as u64 {
            return Err(SqfsError::Truncated {
                what: "superblock",
                pos: 0,
                len: SUPERBLOCK_SIZE as u64,
                end: avail,
            });
        }
        file.read_exact_at(&mut raw, offset)
            .map_err(|source| SqfsError::Io {
                pos: 0,
                len: SUPERBLOCK_SIZE,
                source,
            })?;
        let sb = Superblock::parse(&raw, avail)?;
        let comp = Compressor::from_id(sb.compression)?;
        prefetch(&*file, offset, &sb);
        let bs = u64::from(sb.block_size);
        let mut fs = SquashFs {
            file,
            base: offset,
            comp,
            ids: Vec::new(),
            frag_index: Vec::new(),
            export_index: None,
            xattrs: None,
            root_ino: 0,
            dir_table_end: dir_table_end(&sb),
            ino_map: std::array::from_fn(|_| RwLock::new(HashMap::new())),
            meta_cache: ByteCache::new(opts.meta_cache_bytes, 8192 + 32),
            data_cache: ByteCache::new(opts.data_cache_bytes, bs),
            index_cache: ByteCache::new(opts.index_cache_bytes, 4096),
            opts,
            sb,
        };
        fs.ids = fs.load_ids()?;
        if fs.sb.fragment_count > 0 {
            if fs.sb.fragment_table == NO_TABLE {
                return Err(corrupt(
                    "fragments are counted but there is no fragment table",
                ));
            }
            let n = u64::from(fs.sb.fragment_count);
            fs.frag_index = tables::read_index(&fs, "fragment table", fs.sb.fragment_table, n, 16)?;
        }
        if fs.sb.export_table != NO_TABLE {
            let n = u64::from(fs.sb.inode_count);
            fs.export_index = Some(tables::read_index(
                &fs,
                "export table",
                fs.sb.export_table,
                n,
                8,
            )?);
        }
        if fs.sb.xattr_table != NO_TABLE && fs.sb.flags & FLAG_NO_XATTRS == 0 {
            fs.xattrs = Some(XattrTables::load(&fs, fs.sb.xattr_table)?);
        }
        let root = fs.read_inode(fs.sb.root_inode_ref)?;
        if root.kind != FileType::Directory {
            return Err(corrupt("the root inode is not a directory"));
        }
        fs.root_ino = root.number;
        Ok(fs)
    }

    /// The compressor of this image.
    pub fn compressor(&self) -> Compressor {
        self.comp
    }

    /// The data block size.
    pub fn block_size(&self) -> u32 {
        self.sb.block_size
    }

    /// Bytes the filesystem occupies.
    pub fn bytes_used(&self) -> u64 {
        self.sb.bytes_used
    }

    /// Number of inodes in the image.
    pub fn inode_count(&self) -> u32 {
        self.sb.inode_count
    }

    /// The root directory's inode number.
    pub fn root(&self) -> u32 {
        self.root_ino
    }

    /// Current cache occupancy.
    pub fn cache_stats(&self) -> CacheStats {
        CacheStats {
            data_bytes: self.data_cache.weight(),
            data_capacity: self.data_cache.capacity(),
            meta_bytes: self.meta_cache.weight(),
            meta_capacity: self.meta_cache.capacity(),
        }
    }

    fn shard(&self, ino: u32) -> &RwLock<HashMap<u32, u64>> {
        &self.ino_map[ino as usize % INO_SHARDS]
    }

    /// Records where inode `ino` lives (needed only without an export table).
    fn remember(&self, ino: u32, iref: u64) {
        if self.export_index.is_some() {
            return;
        }
        let shard = self.shard(ino);
        let known = shard
            .read()
            .map(|m| m.contains_key(&ino))
            .unwrap_or_else(|p| p.into_inner().contains_key(&ino));
        if !known {
            let mut m = shard.write().unwrap_or_else(|p| p.into_inner());
            m.insert(ino, iref);
        }
    }

    /// The decoded inode with number `ino`.
    fn inode(&self, ino: u32) -> Result<Inode> {
        if ino == 0 || ino > self.sb.inode_count {
            return Err(SqfsError::NoInode(ino));
        }
        let iref = if ino == self.root_ino {
            self.sb.root_inode_ref
        } else if let Some(index) = &self.export_index {
            self.export_lookup(index, ino)?
        } else {
            let shard = self.shard(ino);
            let got = match shard.read() {
                Ok(m) => m.get(&ino).copied(),
                Err(p) => p.into_inner().get(&ino).copied(),
            };
            got.ok_or(SqfsError::NoInode(ino))?
        };
        let i = self.read_inode(iref)?;
        if i.number != ino {
            return Err(corrupt(format!(
                "inode reference for {ino} leads to inode {}",
                i.number
            )));
        }
        Ok(i)
    }

    fn dir(&self, ino: u32) -> Result<(Inode, DirInode)> {
        let i = self.inode(ino)?;
        match i.body {
            Body::Dir(d) => Ok((i, d)),
            _ => Err(SqfsError::NotDir(ino)),
        }
    }

    fn file(&self, ino: u32) -> Result<FileInode> {
        match self.inode(ino)?.body {
            Body::File(f) => Ok(f),
            _ => Err(SqfsError::WrongType {
                ino,
                want: "regular file",
            }),
        }
    }

    /// Attributes of inode `ino`.
    pub fn stat(&self, ino: u32) -> Result<Attr> {
        let i = self.inode(ino)?;
        self.attr_of(&i)
    }

    /// Looks `name` up in directory `dir_ino`.
    pub fn lookup(&self, dir_ino: u32, name: &[u8]) -> Result<Option<u32>> {
        let (_, d) = self.dir(dir_ino)?;
        Ok(self.dir_lookup(dir_ino, &d, name)?.map(|(ino, iref)| {
            self.remember(ino, iref);
            ino
        }))
    }

    /// Looks `name` up in `dir_ino` and returns its attributes in the same pass.
    pub fn lookup_attr(&self, dir_ino: u32, name: &[u8]) -> Result<Option<Attr>> {
        let (_, d) = self.dir(dir_ino)?;
        match self.dir_lookup(dir_ino, &d, name)? {
            Some((ino, iref)) => {
                self.remember(ino, iref);
                let i = self.read_inode(iref)?;
                if i.number != ino {
                    return Err(corrupt(format!(
                        "directory {dir_ino}: entry {ino} leads to inode {}",
                        i.number
                    )));
                }
                Ok(Some(self.attr_of(&i)?))
            }
            None => Ok(None),
        }
    }

    /// The parent directory of directory `dir_ino` (the root is its own parent).
    pub fn parent(&self, dir_ino: u32) -> Result<u32> {
        if dir_ino == self.root_ino {
            return Ok(dir_ino);
        }
        let (_, d) = self.dir(dir_ino)?;
        Ok(d.parent)
    }

    /// Lists directory `dir_ino` starting at `cookie` (0 = start). `f` gets each entry and
    /// returns false to stop (that entry then counts as not consumed: resume from the
    /// previous entry's `next_cookie`).
    pub fn readdir(
        &self,
        dir_ino: u32,
        cookie: u64,
        f: &mut dyn FnMut(DirEntry<'_>) -> bool,
    ) -> Result<()> {
        let (_, d) = self.dir(dir_ino)?;
        self.dir_list(dir_ino, &d, cookie, &mut |e, _| f(e))
    }

    /// Like `readdir`, but also passes each entry's attributes (for READDIRPLUS).
    pub fn readdir_attr(
        &self,
        dir_ino: u32,
        cookie: u64,
        f: &mut dyn FnMut(DirEntry<'_>, Result<Attr>) -> bool,
    ) -> Result<()> {
        let (_, d) = self.dir(dir_ino)?;
        self.dir_list(dir_ino, &d, cookie, &mut |e, iref| {
            let attr = self.read_inode(iref).and_then(|i| self.attr_of(&i));
            f(e, attr)
        })
    }

    /// Reads from regular file `ino` at `offset` into `buf`; returns the bytes read (short
    /// only at the end of the file).
    pub fn read(&self, ino: u32, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let f = self.file(ino)?;
        self.file_read(ino, &f, offset, buf)
    }

    /// The target of symlink `ino`.
    pub fn readlink(&self, ino: u32) -> Result<Vec<u8>> {
        match self.inode(ino)?.body {
            Body::Symlink(t) => Ok(t),
            _ => Err(SqfsError::WrongType {
                ino,
                want: "symlink",
            }),
        }
    }

    /// Names of the visible xattrs of `ino` (only names `getxattr` returns).
    /// True if the image has an xattr table (some inode may have attributes).
    pub fn has_xattrs(&self) -> bool {
        self.xattrs.is_some()
    }

    pub fn listxattr(&self, ino: u32) -> Result<Vec<Vec<u8>>> {
        let i = self.inode(ino)?;
        self.xattr_names(i.xattr)
    }

    /// Value of xattr `name` of `ino`, or None if absent or hidden by the policy.
    pub fn getxattr(&self, ino: u32, name: &[u8]) -> Result<Option<Vec<u8>>> {
        let i = self.inode(ino)?;
        self.xattr_value(i.xattr, name)
    }
}
