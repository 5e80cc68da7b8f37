//! `ImageBackend`: the small, inode-keyed, read-only interface the FUSE server needs from an
//! image reader, and its implementations for `SquashFs` and `ExtFs`.

use crate::ext::{ExtError, ExtFs};
use crate::squashfs::{Attr, DirEntry, SqfsError, SquashFs};

/// An error from a backend: the errno to answer and a message for the log.
#[derive(Debug, thiserror::Error)]
#[error("{msg}")]
pub struct BackendError {
    /// errno for the FUSE reply (EIO for corruption and I/O failures).
    pub errno: i32,
    /// What went wrong, naming the inode or image offset.
    pub msg: String,
}

impl From<SqfsError> for BackendError {
    fn from(e: SqfsError) -> Self {
        BackendError {
            errno: e.errno(),
            msg: e.to_string(),
        }
    }
}

impl From<ExtError> for BackendError {
    fn from(e: ExtError) -> Self {
        BackendError {
            errno: e.errno(),
            msg: e.to_string(),
        }
    }
}

/// Result of a backend call.
pub type BackendResult<T> = Result<T, BackendError>;

fn no_inode(ino: u64) -> BackendError {
    BackendError {
        errno: libc::ENOENT,
        msg: format!("inode {ino} does not exist"),
    }
}

/// Filesystem-wide numbers for statfs.
#[derive(Debug, Clone, Copy)]
pub struct FsStats {
    /// Block size.
    pub block_size: u32,
    /// Image size in `block_size` units.
    pub blocks: u64,
    /// Number of inodes.
    pub files: u64,
}

/// A read-only image addressed by inode number. Inode numbers are the image's own (never 0);
/// `Attr::ino` is what `stat` reports. Implementations must be thread-safe and never panic.
pub trait ImageBackend: Send + Sync + 'static {
    /// The root directory's inode number.
    fn root(&self) -> u64;
    /// Attributes of `ino`.
    fn stat(&self, ino: u64) -> BackendResult<Attr>;
    /// Attributes of `name` in directory `dir`, or None when it does not exist.
    fn lookup(&self, dir: u64, name: &[u8]) -> BackendResult<Option<Attr>>;
    /// The parent of directory `dir` (the root is its own parent).
    fn parent(&self, dir: u64) -> BackendResult<u64>;
    /// Lists `dir` from `cookie` (0 = start). `f` gets each entry and, when `with_attr`, its
    /// attributes; it returns false to stop before consuming that entry.
    fn readdir(
        &self,
        dir: u64,
        cookie: u64,
        with_attr: bool,
        f: &mut dyn FnMut(DirEntry<'_>, Option<Attr>) -> bool,
    ) -> BackendResult<()>;
    /// Reads file data; returns the bytes read (0 at the end).
    fn read(&self, ino: u64, offset: u64, buf: &mut [u8]) -> BackendResult<usize>;
    /// A symlink's target.
    fn readlink(&self, ino: u64) -> BackendResult<Vec<u8>>;
    /// Names of the visible xattrs.
    fn listxattr(&self, ino: u64) -> BackendResult<Vec<Vec<u8>>>;
    /// An xattr's value, None when absent.
    fn getxattr(&self, ino: u64, name: &[u8]) -> BackendResult<Option<Vec<u8>>>;
    /// Numbers for statfs.
    fn stats(&self) -> FsStats;
    /// False when the image holds no extended attributes at all: the server then answers
    /// getxattr with ENOSYS once and the kernel stops asking (every exec asks for
    /// security.capability, overlayfs for its own attributes); readers see EOPNOTSUPP, as
    /// on a filesystem without xattrs. listxattr still answers (an empty list).
    fn has_xattrs(&self) -> bool {
        true
    }
}

fn ino32(ino: u64) -> BackendResult<u32> {
    u32::try_from(ino).map_err(|_| no_inode(ino))
}

impl ImageBackend for SquashFs {
    fn root(&self) -> u64 {
        u64::from(SquashFs::root(self))
    }

    fn stat(&self, ino: u64) -> BackendResult<Attr> {
        Ok(SquashFs::stat(self, ino32(ino)?)?)
    }

    fn lookup(&self, dir: u64, name: &[u8]) -> BackendResult<Option<Attr>> {
        Ok(self.lookup_attr(ino32(dir)?, name)?)
    }

    fn parent(&self, dir: u64) -> BackendResult<u64> {
        Ok(u64::from(SquashFs::parent(self, ino32(dir)?)?))
    }

    fn readdir(
        &self,
        dir: u64,
        cookie: u64,
        with_attr: bool,
        f: &mut dyn FnMut(DirEntry<'_>, Option<Attr>) -> bool,
    ) -> BackendResult<()> {
        let dir = ino32(dir)?;
        if with_attr {
            let mut err = None;
            self.readdir_attr(dir, cookie, &mut |e, a| match a {
                Ok(a) => f(e, Some(a)),
                Err(x) => {
                    err = Some(x);
                    false
                }
            })?;
            return match err {
                Some(e) => Err(e.into()),
                None => Ok(()),
            };
        }
        Ok(SquashFs::readdir(self, dir, cookie, &mut |e| f(e, None))?)
    }

    fn read(&self, ino: u64, offset: u64, buf: &mut [u8]) -> BackendResult<usize> {
        Ok(SquashFs::read(self, ino32(ino)?, offset, buf)?)
    }

    fn readlink(&self, ino: u64) -> BackendResult<Vec<u8>> {
        Ok(SquashFs::readlink(self, ino32(ino)?)?)
    }

    fn listxattr(&self, ino: u64) -> BackendResult<Vec<Vec<u8>>> {
        Ok(SquashFs::listxattr(self, ino32(ino)?)?)
    }

    fn getxattr(&self, ino: u64, name: &[u8]) -> BackendResult<Option<Vec<u8>>> {
        Ok(SquashFs::getxattr(self, ino32(ino)?, name)?)
    }

    fn has_xattrs(&self) -> bool {
        SquashFs::has_xattrs(self)
    }

    fn stats(&self) -> FsStats {
        let bs = self.block_size();
        FsStats {
            block_size: bs,
            blocks: self.bytes_used().div_ceil(u64::from(bs)),
            files: u64::from(self.inode_count()),
        }
    }
}

impl ImageBackend for ExtFs {
    fn root(&self) -> u64 {
        u64::from(ExtFs::root(self))
    }

    fn stat(&self, ino: u64) -> BackendResult<Attr> {
        Ok(ExtFs::stat(self, ino32(ino)?)?)
    }

    fn lookup(&self, dir: u64, name: &[u8]) -> BackendResult<Option<Attr>> {
        Ok(self.lookup_attr(ino32(dir)?, name)?)
    }

    fn parent(&self, dir: u64) -> BackendResult<u64> {
        Ok(u64::from(ExtFs::parent(self, ino32(dir)?)?))
    }

    fn readdir(
        &self,
        dir: u64,
        cookie: u64,
        with_attr: bool,
        f: &mut dyn FnMut(DirEntry<'_>, Option<Attr>) -> bool,
    ) -> BackendResult<()> {
        // Attributes come from the table the listing fills, so they cost nothing extra.
        Ok(ExtFs::readdir(self, ino32(dir)?, cookie, &mut |e, a| {
            f(e, with_attr.then_some(*a))
        })?)
    }

    fn read(&self, ino: u64, offset: u64, buf: &mut [u8]) -> BackendResult<usize> {
        Ok(ExtFs::read(self, ino32(ino)?, offset, buf)?)
    }

    fn readlink(&self, ino: u64) -> BackendResult<Vec<u8>> {
        Ok(ExtFs::readlink(self, ino32(ino)?)?)
    }

    /// ext4-view does not read xattrs: there are none.
    fn listxattr(&self, ino: u64) -> BackendResult<Vec<Vec<u8>>> {
        ExtFs::stat(self, ino32(ino)?)?;
        Ok(Vec::new())
    }

    fn getxattr(&self, ino: u64, _name: &[u8]) -> BackendResult<Option<Vec<u8>>> {
        ExtFs::stat(self, ino32(ino)?)?;
        Ok(None)
    }

    fn has_xattrs(&self) -> bool {
        false
    }

    fn stats(&self) -> FsStats {
        FsStats {
            block_size: self.block_size(),
            blocks: self.blocks(),
            files: u64::from(self.inode_count()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_error_conversion_keeps_errno() {
        let e: BackendError = SqfsError::NotDir(5).into();
        assert_eq!(e.errno, libc::ENOTDIR);
        assert!(e.msg.contains('5'));
        assert_eq!(
            ino32(u64::from(u32::MAX) + 1).map_err(|e| e.errno).err(),
            Some(libc::ENOENT)
        );
    }
}
