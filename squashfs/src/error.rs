//! Typed errors of the squashfs reader: every variant says what was wrong and where in the image.

use std::io;

/// Result alias used by the squashfs reader.
pub type Result<T> = std::result::Result<T, SqfsError>;

/// An error while reading a squashfs image. Positions are byte offsets from the start of the
/// squashfs filesystem (not of the file that contains it).
#[derive(Debug, thiserror::Error)]
pub enum SqfsError {
    /// The underlying `pread` failed.
    #[error("cannot read {len} bytes at image offset {pos}: {source}")]
    Io {
        /// Offset from the start of the filesystem.
        pos: u64,
        /// Bytes wanted.
        len: usize,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A read would go past the end of the image (truncated or corrupt image).
    #[error(
        "image is truncated: {what} at offset {pos} (+{len} bytes) lies past its end ({end} bytes)"
    )]
    Truncated {
        /// What was being read.
        what: &'static str,
        /// Offset from the start of the filesystem.
        pos: u64,
        /// Bytes wanted.
        len: u64,
        /// Size of the image.
        end: u64,
    },
    /// Not a squashfs 4.0 superblock.
    #[error("not a squashfs image (magic {0:#010x}, want 0x73717368 \"hsqs\")")]
    BadMagic(u32),
    /// A squashfs version other than 4.0.
    #[error("unsupported squashfs version {0}.{1} (only 4.0 is supported)")]
    Version(u16, u16),
    /// The compressor id is unknown.
    #[error("unknown squashfs compressor id {0}")]
    UnknownCompressor(u16),
    /// The compressor is known but this build left it out.
    #[error(
        "squashfs compressor {0} is not compiled into this build (cargo feature of sifr-squashfs)"
    )]
    CompressorDisabled(&'static str),
    /// A block did not decompress.
    #[error("corrupt {comp} block at image offset {pos}: {reason}")]
    Decompress {
        /// Compressor name.
        comp: &'static str,
        /// Offset of the compressed block.
        pos: u64,
        /// What the decompressor said.
        reason: String,
    },
    /// A structure of the image is inconsistent.
    #[error("corrupt squashfs image: {0}")]
    Corrupt(String),
    /// A directory entry whose name is not one path component (holds `/` or NUL, is empty,
    /// `.` or `..`): a hostile image, since joining it to a directory would leave it.
    #[error(
        "corrupt squashfs image: directory inode {dir} has an entry named {name:?}, which is not \
         a file name (a name holds no '/' or NUL and is not \".\" or \"..\")"
    )]
    BadName {
        /// The directory's inode number.
        dir: u32,
        /// The name, lossily decoded.
        name: String,
    },
    /// No such inode number (or not looked up yet on an image without an export table).
    #[error("unknown inode number {0}")]
    NoInode(u32),
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
}

impl SqfsError {
    /// The errno the FUSE layer should answer with.
    pub fn errno(&self) -> i32 {
        match self {
            SqfsError::NoInode(_) => libc::ENOENT,
            SqfsError::NotDir(_) => libc::ENOTDIR,
            SqfsError::WrongType { want, .. } if *want == "regular file" => libc::EISDIR,
            SqfsError::WrongType { .. } => libc::EINVAL,
            _ => libc::EIO,
        }
    }
}

/// Shorthand for a `Corrupt` error.
pub(crate) fn corrupt(msg: impl Into<String>) -> SqfsError {
    SqfsError::Corrupt(msg.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_errno_mapping() {
        assert_eq!(SqfsError::NoInode(3).errno(), libc::ENOENT);
        assert_eq!(SqfsError::NotDir(3).errno(), libc::ENOTDIR);
        assert_eq!(corrupt("x").errno(), libc::EIO);
        let e = SqfsError::WrongType {
            ino: 1,
            want: "symlink",
        };
        assert_eq!(e.errno(), libc::EINVAL);
    }

    #[test]
    fn test_messages_name_position() {
        let e = SqfsError::Truncated {
            what: "metadata block",
            pos: 10,
            len: 2,
            end: 11,
        };
        let s = e.to_string();
        assert!(s.contains("offset 10") && s.contains("11 bytes"), "{s}");
    }
}
