//! Turning what the user typed into an opened image: the path made absolute, the file
//! opened once (the same descriptor is checked by policy and the execution control list, and
//! served), the kind detected by content, and the root filesystem found (a SIF's primary
//! system partition, Apptainer's rules).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::pinned::PinnedFile;
use super::sif::{Arch, FsType, SifError, SifImage};
use super::{ImageError, ImageKind};
use crate::launch::plan::RootSource;

/// An image opened for a launch: its path as the container sees it, its kind, its root
/// filesystem, and the open file (as a loaded SIF for SIF images).
pub struct OpenedImage {
    pub path: PathBuf,
    pub kind: ImageKind,
    pub root: RootSource,
    pub sif: Option<SifImage>,
    pub file: Option<File>,
    /// Set once the execution control list verified the image: the file, read only through
    /// the digests taken while it was verified (see `image::pinned`).
    pub pinned: Option<Arc<PinnedFile>>,
}

impl OpenedImage {
    /// What the FUSE driver serves for this image: the verified bytes when the execution
    /// control list governs it, else the SIF's or image's file; `None` for a sandbox
    /// directory.
    pub fn into_served(self) -> Option<Arc<dyn sifr_fuse::ImageSource>> {
        match self.pinned {
            Some(p) => Some(p),
            None => self
                .sif
                .and_then(SifImage::into_file)
                .or(self.file)
                .map(|f| Arc::new(f) as Arc<dyn sifr_fuse::ImageSource>),
        }
    }
}

/// An image that cannot be opened or run.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(
        "{arg}: {scheme}:// images are not supported by sifr (it runs local images and \
         docker://, oras://, http(s)://, oci:, oci-archive: and docker-archive: sources; \
         'pull' fetches no {scheme}:// image either): download the image with another tool \
         and give its path"
    )]
    Scheme { arg: String, scheme: String },
    #[error("cannot read the current directory: {0}")]
    Cwd(std::io::Error),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Sif(#[from] SifError),
    #[error("cannot read image {path}: {err}")]
    Read { path: PathBuf, err: std::io::Error },
    #[error(
        "{0}: the SIF has no primary system partition, so there is nothing to run (a data container?)"
    )]
    NoPrimary(PathBuf),
    #[error(
        "{path}: the image is built for {image}, this machine is {host} (no emulation is set up)"
    )]
    Arch {
        path: PathBuf,
        image: &'static str,
        host: &'static str,
    },
    #[error("{0}: reading a root-encrypted SIF requires root or a setuid installation")]
    Encrypted(PathBuf),
    #[error("{path}: the primary partition is {fs}, which sifr cannot run")]
    Unrunnable { path: PathBuf, fs: &'static str },
}

/// Opens the image named `arg` (relative to the current directory) once and finds its root
/// filesystem.
pub fn open(arg: &str) -> Result<OpenedImage, SourceError> {
    if let Some((scheme, _)) = arg.split_once("://") {
        return Err(SourceError::Scheme {
            arg: arg.to_string(),
            scheme: scheme.to_string(),
        });
    }
    let path = Path::new(arg);
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(SourceError::Cwd)?
            .join(path)
    };
    let (kind, file) = super::open(&abs)?;
    // A bare filesystem image: where it starts in the file (after a Singularity 2.x launch
    // line, see `image::fs_offset`) and how long it is from there.
    let extent = |f: &Option<File>| -> Result<(u64, u64), SourceError> {
        match f {
            Some(f) => {
                let len = f
                    .metadata()
                    .map_err(|err| SourceError::Read {
                        path: abs.clone(),
                        err,
                    })?
                    .len();
                let offset = super::fs_offset(f);
                Ok((offset, len.saturating_sub(offset)))
            }
            None => Ok((0, 0)),
        }
    };
    let (root, sif, file) = match (kind, file) {
        (ImageKind::Sandbox, _) => (RootSource::Directory { path: abs.clone() }, None, None),
        (ImageKind::Squashfs, file) => {
            let (offset, size) = extent(&file)?;
            (
                RootSource::Squashfs {
                    path: abs.clone(),
                    offset,
                    size,
                },
                None,
                file,
            )
        }
        (ImageKind::Ext, file) => {
            let (offset, size) = extent(&file)?;
            (
                RootSource::Ext {
                    path: abs.clone(),
                    offset,
                    size,
                },
                None,
                file,
            )
        }
        (ImageKind::Sif, Some(file)) => {
            let img = SifImage::from_file(file, &abs)?;
            (sif_root_of(&img, &abs)?, Some(img), None)
        }
        (ImageKind::Sif, None) => {
            return Err(SourceError::Read {
                path: abs,
                err: std::io::Error::other("image not opened"),
            });
        }
    };
    Ok(OpenedImage {
        path: abs,
        kind,
        root,
        sif,
        file,
        pinned: None,
    })
}

/// The root filesystem of the SIF at `path`: its primary system partition.
pub fn sif_root(path: &Path) -> Result<RootSource, SourceError> {
    let img = SifImage::open(path)?;
    sif_root_of(&img, path)
}

/// The root filesystem of a loaded SIF: its primary system partition (Apptainer's rules).
pub fn sif_root_of(img: &SifImage, path: &Path) -> Result<RootSource, SourceError> {
    let p = img
        .primary_partition()?
        .ok_or_else(|| SourceError::NoPrimary(path.to_path_buf()))?;
    img.check_partition_header(&p)?;
    if p.arch != Arch::Unknown && p.arch != Arch::host() {
        return Err(SourceError::Arch {
            path: path.to_path_buf(),
            image: p.arch.go_name(),
            host: Arch::host().go_name(),
        });
    }
    match p.fs_type {
        FsType::Squashfs => Ok(RootSource::Squashfs {
            path: path.to_path_buf(),
            offset: p.offset,
            size: p.size,
        }),
        FsType::Ext3 => Ok(RootSource::Ext {
            path: path.to_path_buf(),
            offset: p.offset,
            size: p.size,
        }),
        FsType::EncryptedSquashfs => Err(SourceError::Encrypted(path.to_path_buf())),
        other => Err(SourceError::Unrunnable {
            path: path.to_path_buf(),
            fs: other.label(),
        }),
    }
}
