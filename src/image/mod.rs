//! Container images: SIF files, bare squashfs and ext images, sandbox directories.
//!
//! Formats are detected by content, never by file name (workflow tools store SIFs as
//! `.simg` and `.img`).

pub mod extract;
pub mod files;
pub mod inroot;
pub mod inspect;
pub mod pinned;
pub mod sif;
pub mod source;

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The kind of an image, from its content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageKind {
    Sif,
    Squashfs,
    Ext,
    Sandbox,
}

impl ImageKind {
    /// The name used in sifr.conf (`allow container ...`) and in messages.
    pub fn name(self) -> &'static str {
        match self {
            ImageKind::Sif => "sif",
            ImageKind::Squashfs => "squashfs",
            ImageKind::Ext => "extfs",
            ImageKind::Sandbox => "dir",
        }
    }
}

/// An image that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("image {0} does not exist (check the path)")]
    NotFound(PathBuf),
    #[error("cannot open image {path}: {err}")]
    Open { path: PathBuf, err: std::io::Error },
    #[error(
        "{0} is not a container image: no SIF, squashfs or ext2/3/4 header, and not a directory"
    )]
    Unknown(PathBuf),
}

/// Squashfs superblock magic ("hsqs").
pub const SQUASHFS_MAGIC: &[u8; 4] = b"hsqs";
/// ext2/3/4 superblock magic at byte 1080.
const EXT_MAGIC_OFFSET: u64 = 1024 + 56;

/// Detects what is at `offset` in `file`: squashfs or ext.
pub fn probe_fs(file: &File, offset: u64) -> Option<ImageKind> {
    let mut magic = [0u8; 4];
    if file.read_exact_at(&mut magic, offset).is_ok() && &magic == SQUASHFS_MAGIC {
        return Some(ImageKind::Squashfs);
    }
    let mut ext = [0u8; 2];
    if file
        .read_exact_at(&mut ext, offset + EXT_MAGIC_OFFSET)
        .is_ok()
        && ext == [0x53, 0xEF]
    {
        return Some(ImageKind::Ext);
    }
    None
}

/// Detects the kind of the image at `path`.
pub fn detect(path: &Path) -> Result<ImageKind, ImageError> {
    open(path).map(|(kind, _)| kind)
}

/// Opens the image at `path` once and detects its kind from that open file, which is
/// returned (`None` for a sandbox directory) so that what is checked is what is served.
pub fn open(path: &Path) -> Result<(ImageKind, Option<File>), ImageError> {
    let meta = std::fs::metadata(path).map_err(|err| match err.kind() {
        std::io::ErrorKind::NotFound => ImageError::NotFound(path.to_path_buf()),
        _ => ImageError::Open {
            path: path.to_path_buf(),
            err,
        },
    })?;
    if meta.is_dir() {
        return Ok((ImageKind::Sandbox, None));
    }
    let file = File::open(path).map_err(|err| ImageError::Open {
        path: path.to_path_buf(),
        err,
    })?;
    // SIF: "SIF_MAGIC" after the 32-byte launch script (Apptainer looks in the first 2 KiB).
    let mut head = vec![0u8; 2048];
    let n = (&file).take(2048).read(&mut head).unwrap_or(0);
    head.truncate(n);
    if head.windows(9).any(|w| w == b"SIF_MAGIC") {
        return Ok((ImageKind::Sif, Some(file)));
    }
    match probe_fs(&file, 0) {
        Some(kind) => Ok((kind, Some(file))),
        None => Err(ImageError::Unknown(path.to_path_buf())),
    }
}
