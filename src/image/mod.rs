//! Container images: SIF files, bare squashfs and ext images, sandbox directories.
//!
//! Formats are detected by content, never by file name (workflow tools store SIFs as
//! `.simg` and `.img`). A Singularity 2.x image is a bare squashfs (or ext3) behind a
//! `#!/usr/bin/env run-singularity` line: detected the way Apptainer detects it.

pub mod extract;
pub mod files;
pub mod inroot;
pub mod inspect;
pub mod overlay_create;
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

/// The launch line of a Singularity 2.x image (`#!/usr/bin/env run-singularity`), as
/// Apptainer looks for it in an image's first 2 KiB.
const LAUNCH_STRING: &[u8] = b" run-singularity";
/// How much of a file the format detection reads (Apptainer's buffer size).
const HEAD_SIZE: usize = 2048;

/// Where the filesystem of a bare image starts: after a Singularity 2.x launch line (a
/// `.simg` squashfs or an ext3 `.img` behind `#!/usr/bin/env run-singularity`) when `head`
/// has one, else at 0. Apptainer's rule: the first " run-singularity" not at offset 0,
/// skipped with the newline after it.
pub fn launch_offset(head: &[u8]) -> u64 {
    match head
        .windows(LAUNCH_STRING.len())
        .position(|w| w == LAUNCH_STRING)
    {
        Some(at) if at > 0 => (at + LAUNCH_STRING.len() + 1) as u64,
        _ => 0,
    }
}

/// The first bytes of `file` (up to 2 KiB).
fn read_head(file: &File) -> Vec<u8> {
    let mut head = vec![0u8; HEAD_SIZE];
    let n = file.take(HEAD_SIZE as u64).read(&mut head).unwrap_or(0);
    head.truncate(n);
    head
}

/// Where the root filesystem of a bare (not SIF) image file starts: see [`launch_offset`].
pub fn fs_offset(file: &File) -> u64 {
    let mut head = vec![0u8; HEAD_SIZE];
    let n = file.read_at(&mut head, 0).unwrap_or(0);
    head.truncate(n);
    match launch_offset(&head) {
        0 => 0,
        at if probe_fs(file, at).is_some() => at,
        _ => 0,
    }
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
    let head = read_head(&file);
    if head.windows(9).any(|w| w == b"SIF_MAGIC") {
        return Ok((ImageKind::Sif, Some(file)));
    }
    // A bare squashfs or ext image, possibly behind a Singularity 2.x launch line.
    match probe_fs(&file, launch_offset(&head)).or_else(|| probe_fs(&file, 0)) {
        Some(kind) => Ok((kind, Some(file))),
        None => Err(ImageError::Unknown(path.to_path_buf())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_launch_offset_skips_the_run_singularity_line() {
        let line = b"#!/usr/bin/env run-singularity\n";
        let mut head = line.to_vec();
        head.extend_from_slice(b"hsqs....");
        assert_eq!(launch_offset(&head), line.len() as u64);
        // Not a launch line: at offset 0, or absent.
        assert_eq!(launch_offset(b" run-singularity\nhsqs"), 0);
        assert_eq!(launch_offset(b"hsqs and nothing else"), 0);
    }

    #[test]
    fn test_simg_is_a_squashfs_at_the_launch_offset() {
        let dir = tempfile::tempdir().expect("tempdir");
        let line = b"#!/usr/bin/env run-singularity\n";
        let p = dir.path().join("old.simg");
        let mut bytes = line.to_vec();
        bytes.extend_from_slice(SQUASHFS_MAGIC);
        bytes.resize(4096, 0);
        std::fs::write(&p, &bytes).expect("write");
        let (kind, file) = open(&p).expect("detected");
        assert_eq!(kind, ImageKind::Squashfs);
        assert_eq!(fs_offset(&file.expect("file")), line.len() as u64);
        // A launch line with no filesystem behind it is not an image.
        let q = dir.path().join("script");
        std::fs::write(&q, b"#!/usr/bin/env run-singularity\necho hi\n").expect("write");
        assert!(matches!(open(&q), Err(ImageError::Unknown(_))));
    }
}
