//! Typed errors of the ext2/3/4 reader: each says what was wrong and which path, inode or
//! image offset it concerns, and maps to the errno the FUSE layer answers with.

use std::io;

use ext4_view::Ext4Error;

/// Result alias used by the ext reader.
pub type Result<T> = std::result::Result<T, ExtError>;

/// An error while reading an ext2/3/4 filesystem.
#[derive(Debug, thiserror::Error)]
pub enum ExtError {
    /// Reading the image file (its size or the superblock) failed.
    #[error("cannot read the ext image at offset {pos}: {source}")]
    Io {
        /// Offset from the start of the filesystem.
        pos: u64,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The filesystem is larger than the bytes available for it.
    #[error("image is truncated: the {what} needs {need} bytes but only {have} are available")]
    Truncated {
        /// What did not fit.
        what: &'static str,
        /// Bytes it needs from the start of the filesystem.
        need: u64,
        /// Bytes available from the start of the filesystem.
        have: u64,
    },
    /// No ext superblock magic.
    #[error("not an ext2/3/4 filesystem (superblock magic {0:#06x}, want 0xef53)")]
    BadMagic(u16),
    /// A feature the reader does not support (ext4-view refuses it).
    #[error("unsupported ext filesystem: {0}")]
    Unsupported(String),
    /// A structure of the filesystem is inconsistent.
    #[error("corrupt ext filesystem: {0}")]
    Corrupt(String),
    /// ext4-view failed on a path of the image.
    #[error("{path}: {reason}")]
    Path {
        /// The path inside the image.
        path: String,
        /// errno for the FUSE reply.
        errno: i32,
        /// What ext4-view said.
        reason: String,
    },
    /// No such inode number (never looked up, or not a number this reader handed out).
    #[error("unknown inode number {0}")]
    NoInode(u64),
    /// A directory operation on something that is not a directory.
    #[error("inode {0} is not a directory")]
    NotDir(u32),
    /// A file operation on an inode of the wrong type (read on a directory, readlink on a file).
    #[error("inode {ino} is not a {want}")]
    WrongType {
        /// The inode.
        ino: u32,
        /// What the operation needs.
        want: &'static str,
    },
    /// A reader thread is gone or gave up on the request (a panic inside ext4-view).
    #[error("ext reader thread: {0}")]
    Worker(String),
}

impl ExtError {
    /// The errno the FUSE layer should answer with.
    pub fn errno(&self) -> i32 {
        match self {
            ExtError::Path { errno, .. } => *errno,
            ExtError::NoInode(_) => libc::ENOENT,
            ExtError::NotDir(_) => libc::ENOTDIR,
            ExtError::WrongType { want, .. } if *want == "regular file" => libc::EISDIR,
            ExtError::WrongType { .. } => libc::EINVAL,
            _ => libc::EIO,
        }
    }

    /// Wraps an ext4-view error about `path` (bytes of an image path).
    pub(crate) fn at(path: &[u8], e: &Ext4Error) -> ExtError {
        ExtError::Path {
            path: String::from_utf8_lossy(path).into_owned(),
            errno: errno_of(e),
            reason: e.to_string(),
        }
    }

    /// Wraps an ext4-view error while loading the filesystem.
    pub(crate) fn load(e: &Ext4Error) -> ExtError {
        match e {
            Ext4Error::Incompatible(i) => ExtError::Unsupported(i.to_string()),
            Ext4Error::Corrupt(c) => ExtError::Corrupt(c.to_string()),
            other => ExtError::Corrupt(format!("cannot load the filesystem: {other}")),
        }
    }
}

/// errno for an ext4-view error: lookups that miss and type mismatches keep their meaning;
/// corruption, I/O and unsupported features are EIO.
fn errno_of(e: &Ext4Error) -> i32 {
    match e {
        Ext4Error::NotFound => libc::ENOENT,
        Ext4Error::NotADirectory => libc::ENOTDIR,
        Ext4Error::IsADirectory => libc::EISDIR,
        Ext4Error::PathTooLong => libc::ENAMETOOLONG,
        _ => libc::EIO,
    }
}

/// Shorthand for a `Corrupt` error.
pub(crate) fn corrupt(msg: impl Into<String>) -> ExtError {
    ExtError::Corrupt(msg.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_errno_mapping() {
        assert_eq!(ExtError::NoInode(3).errno(), libc::ENOENT);
        assert_eq!(ExtError::NotDir(3).errno(), libc::ENOTDIR);
        assert_eq!(corrupt("x").errno(), libc::EIO);
        let file = ExtError::WrongType {
            ino: 1,
            want: "regular file",
        };
        assert_eq!(file.errno(), libc::EISDIR);
        let link = ExtError::WrongType {
            ino: 1,
            want: "symlink",
        };
        assert_eq!(link.errno(), libc::EINVAL);
        assert_eq!(
            ExtError::at(b"/a/b", &Ext4Error::NotFound).errno(),
            libc::ENOENT
        );
        assert_eq!(
            ExtError::at(b"/a", &Ext4Error::NotADirectory).errno(),
            libc::ENOTDIR
        );
        assert_eq!(
            ExtError::at(b"/a", &Ext4Error::Encrypted).errno(),
            libc::EIO
        );
    }

    #[test]
    fn test_messages_name_the_path() {
        let s = ExtError::at(b"/etc/\xffpasswd", &Ext4Error::NotFound).to_string();
        assert!(s.starts_with("/etc/") && s.contains("not found"), "{s}");
        let s = ExtError::Truncated {
            what: "filesystem",
            need: 10,
            have: 5,
        }
        .to_string();
        assert!(s.contains("10 bytes") && s.contains("only 5"), "{s}");
    }
}
