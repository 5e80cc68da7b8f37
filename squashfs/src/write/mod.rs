//! sifr's squashfs 4.0 writer: builds an image from a directory tree, as mksquashfs does.
//! Phases: scan the tree (`tree`), stream file data through parallel compressors (`data`),
//! write the inode and directory tables (`inode`), then the lookup tables (`meta`, `xattr`)
//! and finally the superblock. Output is deterministic for a given tree and options.

mod compress;
mod data;
mod error;
mod inode;
mod meta;
mod tree;
mod xattr;

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

pub use error::{WriteError, WriteResult};
pub use xattr::XattrMode;

use super::Compressor;
use super::meta::META_SIZE;
use super::superblock::{
    FLAG_ALWAYS_FRAGMENTS, FLAG_COMPRESSOR_OPTIONS, FLAG_DUPLICATES, FLAG_EXPORTABLE,
    FLAG_NO_FRAGMENTS, FLAG_NO_XATTRS, MAGIC, NO_TABLE, SUPERBLOCK_SIZE,
};
use compress::{Encoder, check_enabled, options_block, resolve_level};
use meta::lookup_table;

/// Maps a source owner (host uid, gid) to the owner stored in the image.
pub type IdMap = Box<dyn Fn(u32, u32) -> (u32, u32) + Send + Sync>;

/// How to build an image. `Default` gives mksquashfs' defaults: gzip level 9, 128 KiB
/// blocks, fragments, no tail packing, duplicate detection, export table, xattrs, sparse
/// detection, 4 KiB padding, all CPUs.
pub struct WriteOptions {
    /// The compressor (`-comp`); the legacy lzma one cannot be written.
    pub compressor: Compressor,
    /// Compression level; None: the compressor's mksquashfs default (gzip 9, zstd 15, xz
    /// preset 6). gzip takes 1..=9, zstd 1..=22, xz (a preset) 0..=9; lz4 and lzo take none.
    pub level: Option<u32>,
    /// Data block size (`-b`): a power of two from 4 KiB to 1 MiB.
    pub block_size: u32,
    /// Reproducible output: when `mkfs_time` is None the superblock time is the newest inode
    /// time stored instead of the current time. (Everything else is deterministic anyway.)
    pub reproducible: bool,
    /// Superblock creation time (`-mkfs-time`, or `SOURCE_DATE_EPOCH` in the caller).
    pub mkfs_time: Option<u32>,
    /// Every inode's mtime (`-all-time`); None keeps the source mtimes.
    pub all_time: Option<u32>,
    /// Write the export table (`-no-exports` when false).
    pub exports: bool,
    /// Which xattrs to store.
    pub xattrs: XattrMode,
    /// Pack small files into fragment blocks (`-no-fragments` when false).
    pub fragments: bool,
    /// Pack the tail ends of bigger files into fragments too (`-tailends`).
    pub tail_ends: bool,
    /// Store identical files once (`-no-duplicates` when false).
    pub duplicates: bool,
    /// Store all-zero blocks as holes (`-no-sparse` when false).
    pub sparse: bool,
    /// Pad the image to a multiple of 4 KiB (`-nopad` when false).
    pub pad: bool,
    /// Compression threads; 0: one per CPU.
    pub threads: usize,
    /// Source owner -> image owner (e.g. the fakeroot mapping of a rootless build). None
    /// keeps the source owners.
    pub id_map: Option<IdMap>,
    /// Every inode owned by 0:0 (`-all-root`); overrides `id_map`.
    pub all_root: bool,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            compressor: Compressor::Gzip,
            level: None,
            block_size: 128 << 10,
            reproducible: false,
            mkfs_time: None,
            all_time: None,
            exports: true,
            xattrs: XattrMode::All,
            fragments: true,
            tail_ends: false,
            duplicates: true,
            sparse: true,
            pad: true,
            threads: 0,
            id_map: None,
            all_root: false,
        }
    }
}

impl std::fmt::Debug for WriteOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteOptions")
            .field("compressor", &self.compressor)
            .field("level", &self.level)
            .field("block_size", &self.block_size)
            .field("reproducible", &self.reproducible)
            .field("mkfs_time", &self.mkfs_time)
            .field("all_time", &self.all_time)
            .field("exports", &self.exports)
            .field("xattrs", &self.xattrs)
            .field("fragments", &self.fragments)
            .field("tail_ends", &self.tail_ends)
            .field("duplicates", &self.duplicates)
            .field("sparse", &self.sparse)
            .field("pad", &self.pad)
            .field("threads", &self.threads)
            .field("id_map", &self.id_map.as_ref().map(|_| "fn"))
            .field("all_root", &self.all_root)
            .finish()
    }
}

/// What a write produced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteStats {
    /// Bytes of the filesystem (the superblock's `bytes_used`).
    pub bytes_used: u64,
    /// Bytes written including the 4 KiB padding.
    pub bytes_written: u64,
    /// Inodes (hard links count once).
    pub inodes: u32,
    /// Directories, including the root.
    pub dirs: u32,
    /// Regular files.
    pub files: u32,
    /// Symbolic links.
    pub symlinks: u32,
    /// Block and character devices, fifos and sockets.
    pub specials: u32,
    /// Extra names of hard-linked inodes.
    pub hard_links: u32,
    /// Bytes of regular-file data read.
    pub data_bytes: u64,
    /// Data blocks (sparse ones included).
    pub blocks: u64,
    /// All-zero blocks stored as holes.
    pub sparse_blocks: u64,
    /// Fragment blocks.
    pub fragments: u32,
    /// Files stored as a reference to an identical earlier file.
    pub duplicates: u32,
    /// Entries of the id table.
    pub ids: u32,
    /// Distinct xattr sets.
    pub xattr_ids: u32,
}

/// Builds squashfs images. Cheap to create; `write_dir` can be called many times.
#[derive(Debug)]
pub struct Writer {
    opts: WriteOptions,
    level: u32,
    threads: usize,
}

impl Writer {
    /// Checks the options (block size, level, compressor available in this build).
    pub fn new(opts: WriteOptions) -> WriteResult<Writer> {
        let bs = opts.block_size;
        if !(4096..=1 << 20).contains(&bs) || !bs.is_power_of_two() {
            return Err(WriteError::Options(format!(
                "block size {bs} is not a power of two from 4096 to 1048576"
            )));
        }
        let level = resolve_level(opts.compressor, opts.level)?;
        check_enabled(opts.compressor)?;
        let threads = match opts.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
        .min(256);
        Ok(Writer {
            opts,
            level,
            threads,
        })
    }

    /// Writes an image of the directory `src` to `out`, from its first byte, and truncates
    /// `out` to the image's end.
    pub fn write_dir(&self, src: &Path, out: &mut File) -> WriteResult<WriteStats> {
        let stats = self.write_dir_at(src, out, 0)?;
        out.set_len(stats.bytes_written)
            .map_err(|e| WriteError::output("truncate", e))?;
        Ok(stats)
    }

    /// Writes an image of the directory `src` into `out` starting at byte `offset` (for an
    /// image inside another file, like a SIF partition). Bytes before `offset` are left
    /// alone; `out` is not shortened below its old length.
    pub fn write_dir_at(&self, src: &Path, out: &mut File, offset: u64) -> WriteResult<WriteStats> {
        let o = &self.opts;
        let out_md = out
            .metadata()
            .map_err(|e| WriteError::output("stat the output", e))?;
        let old_len = out_md.len();
        let tree = tree::scan(src, o, Some((out_md.dev(), out_md.ino())))?;

        let opts_block = options_block(o.compressor, self.level);
        let data_start =
            SUPERBLOCK_SIZE as u64 + opts_block.as_ref().map_or(0, |b| 2 + b.len() as u64);
        let params = data::Params {
            comp: o.compressor,
            level: self.level,
            block_size: o.block_size,
            threads: self.threads,
            fragments: o.fragments,
            tail_ends: o.tail_ends,
            duplicates: o.duplicates,
            sparse: o.sparse,
        };
        let data = data::write(&tree, src, out, offset, data_start, &params)?;

        // Metadata blocks are 8 KiB: a dictionary of that size (xz) is all they can use.
        let mut enc = Encoder::new(o.compressor, self.level, META_SIZE as u32)?;
        let tables = inode::build(&tree, &data.files, o.block_size, &mut enc)?;
        let put = |pos: u64, bytes: &[u8]| -> WriteResult<u64> {
            out.write_all_at(bytes, offset + pos)
                .map_err(|e| WriteError::output("write tables", e))?;
            Ok(pos + bytes.len() as u64)
        };
        let inode_table = data.end;
        let dir_table = put(inode_table, &tables.inode_table)?;
        let mut pos = put(dir_table, &tables.dir_table)?;

        let mut frags = Vec::with_capacity(data.fragments.len() * 16);
        for (start, word) in &data.fragments {
            frags.extend_from_slice(&start.to_le_bytes());
            frags.extend_from_slice(&word.to_le_bytes());
            frags.extend_from_slice(&0u32.to_le_bytes());
        }
        let t = lookup_table(&mut enc, &frags, &[], pos)?;
        let fragment_table = t.index_at;
        pos = put(pos, &t.bytes)?;

        let export_table = if o.exports {
            let refs: Vec<u8> = tables
                .refs_by_number
                .iter()
                .flat_map(|r| r.to_le_bytes())
                .collect();
            let t = lookup_table(&mut enc, &refs, &[], pos)?;
            pos = put(pos, &t.bytes)?;
            t.index_at
        } else {
            NO_TABLE
        };

        let ids: Vec<u8> = tree.ids.iter().flat_map(|i| i.to_le_bytes()).collect();
        let t = lookup_table(&mut enc, &ids, &[], pos)?;
        let id_table = t.index_at;
        pos = put(pos, &t.bytes)?;

        let xattr_table = if tree.xattrs.len() > 0 {
            let t = tree.xattrs.tables(&mut enc, pos)?;
            pos = put(pos, &t.bytes)?;
            t.index_at
        } else {
            NO_TABLE
        };
        let bytes_used = pos;
        let bytes_written = if o.pad {
            let padded = bytes_used.next_multiple_of(4096);
            put(bytes_used, &vec![0u8; (padded - bytes_used) as usize])?
        } else {
            bytes_used
        };

        let mut flags = 0u16;
        if !o.fragments {
            flags |= FLAG_NO_FRAGMENTS;
        }
        if o.fragments && o.tail_ends {
            flags |= FLAG_ALWAYS_FRAGMENTS;
        }
        if o.duplicates {
            flags |= FLAG_DUPLICATES;
        }
        if o.exports {
            flags |= FLAG_EXPORTABLE;
        }
        if o.xattrs == XattrMode::None {
            flags |= FLAG_NO_XATTRS;
        }
        if let Some(b) = &opts_block {
            flags |= FLAG_COMPRESSOR_OPTIONS;
            let mut blk = (b.len() as u16 | 0x8000).to_le_bytes().to_vec();
            blk.extend_from_slice(b);
            put(SUPERBLOCK_SIZE as u64, &blk)?;
        }
        let mkfs_time = match (o.mkfs_time, o.reproducible) {
            (Some(t), _) => t,
            (None, true) => tree.newest,
            (None, false) => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs().min(u64::from(u32::MAX)) as u32),
        };
        let sb = Superblock {
            inodes: tree.inodes.len() as u32,
            mkfs_time,
            block_size: o.block_size,
            fragments: data.fragments.len() as u32,
            compression: compressor_id(o.compressor),
            flags,
            ids: tree.ids.len() as u16,
            root: tables.root,
            bytes_used,
            id_table,
            xattr_table,
            inode_table,
            dir_table,
            fragment_table,
            export_table,
        };
        put(0, &sb.encode())?;
        // Dropped duplicate data at the very end can leave bytes past the image: cut them,
        // but never shorten what the file held before.
        let keep = (offset + bytes_written).max(old_len);
        let cur = out
            .metadata()
            .map_err(|e| WriteError::output("stat the output", e))?
            .len();
        if cur > keep {
            out.set_len(keep)
                .map_err(|e| WriteError::output("truncate", e))?;
        }

        let mut st = WriteStats {
            bytes_used,
            bytes_written,
            inodes: tree.inodes.len() as u32,
            hard_links: tree.hard_links,
            data_bytes: data.stats.data_bytes,
            blocks: data.stats.blocks,
            sparse_blocks: data.stats.sparse_blocks,
            fragments: data.fragments.len() as u32,
            duplicates: data.stats.duplicates,
            ids: tree.ids.len() as u32,
            xattr_ids: tree.xattrs.len() as u32,
            ..WriteStats::default()
        };
        for i in &tree.inodes {
            match i.kind {
                tree::Kind::Dir { .. } => st.dirs += 1,
                tree::Kind::File { .. } => st.files += 1,
                tree::Kind::Symlink(_) => st.symlinks += 1,
                _ => st.specials += 1,
            }
        }
        Ok(st)
    }
}

/// The superblock id of a compressor.
fn compressor_id(c: Compressor) -> u16 {
    match c {
        Compressor::Gzip => 1,
        Compressor::Lzma => 2,
        Compressor::Lzo => 3,
        Compressor::Xz => 4,
        Compressor::Lz4 => 5,
        Compressor::Zstd => 6,
    }
}

/// The superblock fields the writer sets.
struct Superblock {
    inodes: u32,
    mkfs_time: u32,
    block_size: u32,
    fragments: u32,
    compression: u16,
    flags: u16,
    ids: u16,
    root: u64,
    bytes_used: u64,
    id_table: u64,
    xattr_table: u64,
    inode_table: u64,
    dir_table: u64,
    fragment_table: u64,
    export_table: u64,
}

impl Superblock {
    fn encode(&self) -> [u8; SUPERBLOCK_SIZE] {
        let mut b = [0u8; SUPERBLOCK_SIZE];
        let mut o = 0;
        let mut put = |v: &[u8]| {
            b[o..o + v.len()].copy_from_slice(v);
            o += v.len();
        };
        put(&MAGIC.to_le_bytes());
        put(&self.inodes.to_le_bytes());
        put(&self.mkfs_time.to_le_bytes());
        put(&self.block_size.to_le_bytes());
        put(&self.fragments.to_le_bytes());
        put(&self.compression.to_le_bytes());
        put(&(self.block_size.trailing_zeros() as u16).to_le_bytes());
        put(&self.flags.to_le_bytes());
        put(&self.ids.to_le_bytes());
        put(&4u16.to_le_bytes());
        put(&0u16.to_le_bytes());
        for v in [
            self.root,
            self.bytes_used,
            self.id_table,
            self.xattr_table,
            self.inode_table,
            self.dir_table,
            self.fragment_table,
            self.export_table,
        ] {
            put(&v.to_le_bytes());
        }
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::superblock::Superblock as Parsed;

    #[test]
    fn test_superblock_roundtrip() {
        let sb = Superblock {
            inodes: 5,
            mkfs_time: 7,
            block_size: 131072,
            fragments: 1,
            compression: 1,
            flags: FLAG_DUPLICATES | FLAG_EXPORTABLE,
            ids: 1,
            root: 0x20,
            bytes_used: 4096,
            id_table: 4000,
            xattr_table: NO_TABLE,
            inode_table: 1000,
            dir_table: 2000,
            fragment_table: 3000,
            export_table: 3500,
        };
        let p = Parsed::parse(&sb.encode(), 4096).expect("parses");
        assert_eq!(p.inode_count, 5);
        assert_eq!(p.block_size, 131072);
        assert_eq!(p.flags, 0xc0);
        assert_eq!(p.root_inode_ref, 0x20);
        assert_eq!(p.export_table, 3500);
    }

    #[test]
    fn test_bad_options() {
        for bs in [0, 2048, 3 << 12, 2 << 20] {
            let e = Writer::new(WriteOptions {
                block_size: bs,
                ..WriteOptions::default()
            });
            assert!(matches!(e, Err(WriteError::Options(_))), "{bs}");
        }
        let e = Writer::new(WriteOptions {
            level: Some(0),
            ..WriteOptions::default()
        });
        assert!(matches!(e, Err(WriteError::Options(_))));
        assert!(Writer::new(WriteOptions::default()).is_ok());
    }
}
