//! Inode decoding: the 16-byte common header plus the per-type body of the 14 squashfs inode
//! types, and their conversion to `Attr`.

use super::error::{Result, corrupt};
use super::meta::{META_SIZE, MetaReader};
use super::{Attr, FileType, SquashFs};

/// "No xattrs" / "no fragment" marker.
pub(crate) const NONE32: u32 = u32::MAX;
/// Longest symlink target accepted (the kernel's PATH_MAX is 4096 including the NUL).
const MAX_SYMLINK: u32 = 4096;

/// A decoded inode.
#[derive(Debug, Clone)]
pub(crate) struct Inode {
    pub kind: FileType,
    pub perm: u16,
    pub uid_idx: u16,
    pub gid_idx: u16,
    pub mtime: u32,
    pub number: u32,
    pub nlink: u32,
    pub xattr: u32,
    pub body: Body,
}

/// The type-specific part of an inode.
#[derive(Debug, Clone)]
pub(crate) enum Body {
    Dir(DirInode),
    File(FileInode),
    Symlink(Vec<u8>),
    Dev(u32),
    Ipc,
}

/// Where a directory's listing is and how to search it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DirInode {
    /// Metadata block of the listing, relative to the directory table.
    pub start_block: u32,
    /// Offset of the listing inside that block.
    pub offset: u16,
    /// Listing size as stored (3 more than the real byte count).
    pub size: u32,
    pub parent: u32,
    pub index_count: u16,
    /// Where the directory index starts (right after the inode).
    pub index_pos: (u64, usize),
}

/// Where a regular file's data is.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FileInode {
    pub blocks_start: u64,
    pub size: u64,
    pub frag: u32,
    pub frag_offset: u32,
    /// Position of the block-size list (right after the inode).
    pub list_pos: (u64, usize),
}

impl FileInode {
    /// Number of entries in the block list.
    pub(crate) fn block_count(&self, block_size: u32) -> u64 {
        let bs = u64::from(block_size);
        if self.frag == NONE32 {
            self.size.div_ceil(bs)
        } else {
            self.size / bs
        }
    }
}

impl SquashFs {
    /// Decodes the inode at inode reference `iref` (block << 16 | offset).
    pub(crate) fn read_inode(&self, iref: u64) -> Result<Inode> {
        let block = iref >> 16;
        let off = (iref & 0xffff) as usize;
        if block >= self.sb.inode_table_len() || off >= META_SIZE {
            return Err(corrupt(format!(
                "inode reference {iref:#x} points outside the inode table"
            )));
        }
        let mut r = MetaReader::bounded(self, self.sb.inode_table + block, off, self.sb.dir_table)?;
        let ty = r.u16()?;
        let perm = r.u16()?;
        let uid_idx = r.u16()?;
        let gid_idx = r.u16()?;
        let mtime = r.u32()?;
        let number = r.u32()?;
        if number == 0 || number > self.sb.inode_count {
            return Err(corrupt(format!(
                "inode at {iref:#x} has number {number}, outside 1..={}",
                self.sb.inode_count
            )));
        }
        let (kind, ext) = match ty {
            1 | 8 => (FileType::Directory, ty == 8),
            2 | 9 => (FileType::Regular, ty == 9),
            3 | 10 => (FileType::Symlink, ty == 10),
            4 | 11 => (FileType::BlockDevice, ty == 11),
            5 | 12 => (FileType::CharDevice, ty == 12),
            6 | 13 => (FileType::Fifo, ty == 13),
            7 | 14 => (FileType::Socket, ty == 14),
            _ => return Err(corrupt(format!("inode {number} has unknown type {ty}"))),
        };
        let mut nlink = 1;
        let mut xattr = NONE32;
        let body = match kind {
            FileType::Directory if !ext => {
                let start_block = r.u32()?;
                nlink = r.u32()?;
                let size = u32::from(r.u16()?);
                let offset = r.u16()?;
                let parent = r.u32()?;
                Body::Dir(DirInode {
                    start_block,
                    offset,
                    size,
                    parent,
                    index_count: 0,
                    index_pos: r.position(),
                })
            }
            FileType::Directory => {
                nlink = r.u32()?;
                let size = r.u32()?;
                let start_block = r.u32()?;
                let parent = r.u32()?;
                let index_count = r.u16()?;
                let offset = r.u16()?;
                xattr = r.u32()?;
                Body::Dir(DirInode {
                    start_block,
                    offset,
                    size,
                    parent,
                    index_count,
                    index_pos: r.position(),
                })
            }
            FileType::Regular => {
                let f = if ext {
                    let blocks_start = r.u64()?;
                    let size = r.u64()?;
                    let _sparse = r.u64()?;
                    nlink = r.u32()?;
                    let frag = r.u32()?;
                    let frag_offset = r.u32()?;
                    xattr = r.u32()?;
                    FileInode {
                        blocks_start,
                        size,
                        frag,
                        frag_offset,
                        list_pos: r.position(),
                    }
                } else {
                    let blocks_start = u64::from(r.u32()?);
                    let frag = r.u32()?;
                    let frag_offset = r.u32()?;
                    let size = u64::from(r.u32()?);
                    FileInode {
                        blocks_start,
                        size,
                        frag,
                        frag_offset,
                        list_pos: r.position(),
                    }
                };
                if f.offset_checks_fail(self.sb.block_size) {
                    return Err(corrupt(format!(
                        "file inode {number}: fragment offset {} with size {} does not fit a block",
                        f.frag_offset, f.size
                    )));
                }
                Body::File(f)
            }
            FileType::Symlink => {
                nlink = r.u32()?;
                let len = r.u32()?;
                if len > MAX_SYMLINK {
                    return Err(corrupt(format!(
                        "symlink inode {number} target is {len} bytes"
                    )));
                }
                let target = r.bytes(len as usize)?;
                if ext {
                    xattr = r.u32()?;
                }
                Body::Symlink(target)
            }
            FileType::BlockDevice | FileType::CharDevice => {
                nlink = r.u32()?;
                let rdev = r.u32()?;
                if ext {
                    xattr = r.u32()?;
                }
                Body::Dev(rdev)
            }
            FileType::Fifo | FileType::Socket => {
                nlink = r.u32()?;
                if ext {
                    xattr = r.u32()?;
                }
                Body::Ipc
            }
        };
        Ok(Inode {
            kind,
            perm,
            uid_idx,
            gid_idx,
            mtime,
            number,
            nlink,
            xattr,
            body,
        })
    }

    /// The attributes of a decoded inode.
    pub(crate) fn attr_of(&self, i: &Inode) -> Result<Attr> {
        let uid = self.id(i.uid_idx)?;
        let gid = self.id(i.gid_idx)?;
        let (size, rdev) = match &i.body {
            Body::Dir(d) => (u64::from(d.size), 0),
            Body::File(f) => (f.size, 0),
            Body::Symlink(t) => (t.len() as u64, 0),
            Body::Dev(d) => (0, *d),
            Body::Ipc => (0, 0),
        };
        Ok(Attr {
            ino: i.number,
            kind: i.kind,
            mode: i.kind.mode_bits() | u32::from(i.perm & 0o7777),
            nlink: i.nlink,
            uid,
            gid,
            size,
            mtime: i.mtime,
            rdev,
            blocks: size.div_ceil(512),
            blksize: self.sb.block_size,
        })
    }
}

impl FileInode {
    fn offset_checks_fail(&self, block_size: u32) -> bool {
        if self.frag == NONE32 {
            return false;
        }
        let tail = self.size % u64::from(block_size);
        u64::from(self.frag_offset) + tail > u64::from(block_size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_block_count() {
        let f = |size, frag| FileInode {
            blocks_start: 0,
            size,
            frag,
            frag_offset: 0,
            list_pos: (0, 0),
        };
        assert_eq!(f(0, NONE32).block_count(4096), 0);
        assert_eq!(f(4097, NONE32).block_count(4096), 2);
        assert_eq!(f(4097, 0).block_count(4096), 1);
        assert_eq!(f(4096, 0).block_count(4096), 1);
        assert_eq!(f(100, 0).block_count(4096), 0);
    }

    #[test]
    fn test_fragment_offset_check() {
        let f = FileInode {
            blocks_start: 0,
            size: 100,
            frag: 0,
            frag_offset: 4000,
            list_pos: (0, 0),
        };
        assert!(f.offset_checks_fail(4096));
        let f = FileInode {
            frag_offset: 3996,
            ..f
        };
        assert!(!f.offset_checks_fail(4096));
    }
}
