//! What the user typed for an image, to an opened image. This is the one road every verb
//! takes from an image argument to a file it can serve:
//!
//! - a local path (SIF, squashfs, ext, sandbox directory) is opened by `image::source`;
//! - an OCI source (`docker://`, `oci:`, `oci-archive:`, `docker-archive:`) is first
//!   converted into a SIF through the cache by `build::convert`, then opened the same way;
//! - other URIs are refused with one line that says what is supported.
//!
//! It sits above `image` and `build` (which builds on `image`), so that neither of them has
//! to know about the other's sources.

use std::path::PathBuf;

use tempfile::TempPath;

use crate::build::convert::{self, Conversion, ConvertError};
use crate::build::oci::reference::ReferenceError;
use crate::config::{Config, ContainerKind, PolicyError};
use crate::image::ImageKind;
use crate::image::source::{self as local, OpenedImage};

pub use crate::build::oci::Source as OciSource;

/// Why an image argument could not be turned into an opened image.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(
        "{uri}: {scheme}:// images are not supported by sifr; use docker://, oci:, oci-archive: \
             or docker-archive:, or download the SIF file yourself"
    )]
    Unsupported { uri: String, scheme: String },
    #[error(
        "{0}: not an image URI (expected docker://NAME[:TAG], oci:DIR[:REF], \
             oci-archive:FILE[:REF] or docker-archive:FILE)"
    )]
    NotUri(String),
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error(transparent)]
    Convert(#[from] ConvertError),
    #[error("the image cache path is not UTF-8: {}", .0.display())]
    NotUtf8(PathBuf),
    #[error(transparent)]
    Local(#[from] local::SourceError),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("cannot read image {}: {cause}", path.display())]
    Stat {
        path: PathBuf,
        cause: std::io::Error,
    },
}

/// Whether `arg` names an OCI source rather than a local image.
pub fn is_oci(arg: &str) -> bool {
    OciSource::is_oci_source(arg)
}

/// Parses an image URI that is not a local path, with one clear line for schemes sifr does
/// not handle.
pub fn parse_uri(uri: &str) -> Result<OciSource, SourceError> {
    if OciSource::is_oci_source(uri) {
        return Ok(OciSource::parse(uri)?);
    }
    match uri.split_once("://").map(|(s, _)| s) {
        Some(s @ ("library" | "shub" | "oras" | "http" | "https")) => {
            Err(SourceError::Unsupported {
                uri: uri.to_string(),
                scheme: s.to_string(),
            })
        }
        _ => Err(SourceError::NotUri(uri.to_string())),
    }
}

/// An image opened for a launch, and the converted SIF it was opened from when that SIF is
/// not kept in the cache (removed when this is dropped: keep it until the run ends).
pub struct Opened {
    pub image: OpenedImage,
    pub remove_after: Option<TempPath>,
}

/// Opens the image named `arg`: an OCI source runs from the SIF it converts to, kept in the
/// cache when `cache` is set, else in a temporary file removed with the returned value; a
/// local image is opened in place (see `image::source::open`).
pub fn open(arg: &str, conv: &Conversion, cache: bool) -> Result<Opened, SourceError> {
    if !is_oci(arg) {
        return Ok(Opened {
            image: local::open(arg)?,
            remove_after: None,
        });
    }
    let source = parse_uri(arg)?;
    let (sif, remove_after) = convert::converted_sif(&source, conv, cache)?;
    let path = sif
        .to_str()
        .ok_or_else(|| SourceError::NotUtf8(sif.clone()))?;
    Ok(Opened {
        image: local::open(path)?,
        remove_after,
    })
}

/// Refuses an opened image that the administrator's `allow container *` and `limit
/// container *` directives forbid, checked on its canonical path and its owner, before
/// anything is mounted.
pub fn check_policy(cfg: &Config, opened: &OpenedImage) -> Result<(), SourceError> {
    use std::os::unix::fs::MetadataExt;
    let path = &opened.path;
    let stat = |cause| SourceError::Stat {
        path: path.clone(),
        cause,
    };
    let meta = std::fs::metadata(path).map_err(stat)?;
    let canonical = std::fs::canonicalize(path).map_err(stat)?;
    let kind = match opened.kind {
        ImageKind::Sif => ContainerKind::Sif,
        ImageKind::Squashfs => ContainerKind::Squashfs,
        ImageKind::Ext => ContainerKind::Extfs,
        ImageKind::Sandbox => ContainerKind::Sandbox,
    };
    cfg.allows_container_path(&canonical, kind, meta.uid(), meta.gid())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_parse_uri_refuses_with_one_line() {
        let e = parse_uri("library://alpine").expect_err("library");
        assert!(
            e.to_string()
                .starts_with("library://alpine: library:// images are not supported by sifr;"),
            "{e}"
        );
        let e = parse_uri("ftp://x/y").expect_err("ftp");
        assert!(e.to_string().contains("not an image URI"), "{e}");
        assert!(matches!(
            parse_uri("docker://alpine:3.19"),
            Ok(OciSource::Registry(_))
        ));
    }
}
