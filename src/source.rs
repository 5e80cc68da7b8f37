//! What the user typed for an image, to an opened image. This is the one road every verb
//! takes from an image argument to a file it can serve:
//!
//! - a local path (SIF, squashfs, ext, sandbox directory) is opened by `image::source`;
//! - an OCI source (`docker://`, `oci:`, `oci-archive:`, `docker-archive:`) is first
//!   converted into a SIF through the cache by `build::convert`, then opened the same way;
//! - an `oras://` SIF or an `http(s)://` image file is downloaded into the cache (see
//!   `build::oci::oras` and `build::net`), then opened the same way;
//! - other URIs are refused with one line that says what is supported.
//!
//! It sits above `image` and `build` (which builds on `image`), so that neither of them has
//! to know about the other's sources.

use std::path::PathBuf;

use tempfile::TempPath;

use crate::build::convert::{self, Conversion, ConvertError};
use crate::build::net::{self, NetError};
use crate::build::oci::oras::{self, OrasError};
use crate::build::oci::reference::ReferenceError;
use crate::build::oci::{AuthError, BlobCache, ImageRef, cache::CacheError};
use crate::config::{Config, ContainerKind, PolicyError};
use crate::image::ImageKind;
use crate::image::source::{self as local, OpenedImage};

pub use crate::build::oci::Source as OciSource;

/// Why an image argument could not be turned into an opened image.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{uri}: {scheme}:// images are not supported by sifr: {why}")]
    Unsupported {
        uri: String,
        scheme: String,
        why: &'static str,
    },
    #[error(
        "{0}: not an image URI (expected docker://NAME[:TAG], oci:DIR[:REF], \
             oci-archive:FILE[:REF], docker-archive:FILE, oras://NAME[:TAG] or http(s)://URL)"
    )]
    NotUri(String),
    #[error(
        "{0}: docker-daemon: sources are not supported by sifr (it talks to no Docker daemon): \
         save the image with 'docker save -o image.tar NAME' and use docker-archive:image.tar"
    )]
    DockerDaemon(String),
    #[error(transparent)]
    Oras(#[from] OrasError),
    #[error(transparent)]
    Net(#[from] NetError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Cache(#[from] CacheError),
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

/// An image file fetched as it is, not converted: a SIF from a registry (`oras://`) or an
/// image file from a web server (`http://`, `https://`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Remote {
    Oras(ImageRef),
    Http(String),
}

impl Remote {
    /// The remote image `uri` names, if it is one (`None`: not `oras://` nor `http(s)://`).
    pub fn parse(uri: &str) -> Option<Result<Remote, SourceError>> {
        if let Some(name) = uri.strip_prefix("oras://") {
            return Some(
                ImageRef::parse(name)
                    .map(Remote::Oras)
                    .map_err(SourceError::from),
            );
        }
        (uri.starts_with("http://") || uri.starts_with("https://"))
            .then(|| Ok(Remote::Http(uri.to_string())))
    }

    /// The file name `pull` writes by default: `NAME_TAG.sif` for `oras://`, the URL's last
    /// path component for http(s).
    pub fn default_file_name(&self) -> String {
        match self {
            Remote::Oras(r) => format!("{}.sif", r.default_file_stem()),
            Remote::Http(url) => {
                let path = url
                    .split(['?', '#'])
                    .next()
                    .unwrap_or(url)
                    .split_once("://")
                    .map_or("", |(_, rest)| rest);
                match path.split_once('/').map(|(_, p)| p.rsplit('/').next()) {
                    Some(Some(name)) if !name.is_empty() => name.to_string(),
                    _ => "image.sif".to_string(),
                }
            }
        }
    }

    /// Downloads the image into the cache (or, for http(s) with `cache` off or no date from
    /// the server, a temporary file in `tmpdir`, returned to be removed by the caller).
    /// `oras://` SIFs are always kept in the cache, as OCI blobs are.
    pub fn fetch(
        &self,
        access: &crate::build::oci::RegistryAccess,
        cache: bool,
        tmpdir: &std::path::Path,
    ) -> Result<(PathBuf, Option<TempPath>), SourceError> {
        match self {
            Remote::Oras(r) => {
                let options = access.fetch_options(&OciSource::Registry(r.clone()))?;
                if cache {
                    let blobs = BlobCache::from_env()?;
                    return Ok((oras::pull_sif(r, &options, &blobs)?, None));
                }
                // --disable-cache: a cache of this pull only, in `tmpdir`; the SIF is moved
                // out of it into a temporary file removed with the returned value.
                let stat = |cause| SourceError::Stat {
                    path: tmpdir.to_path_buf(),
                    cause,
                };
                let scratch = tempfile::Builder::new()
                    .prefix(".sifr-oras-")
                    .tempdir_in(tmpdir)
                    .map_err(stat)?;
                let blobs = BlobCache::open(scratch.path())?;
                let sif = oras::pull_sif(r, &options, &blobs)?;
                let kept = tempfile::Builder::new()
                    .prefix(".sifr-oras-")
                    .suffix(".sif")
                    .tempfile_in(tmpdir)
                    .map_err(stat)?
                    .into_temp_path();
                std::fs::rename(&sif, &kept).map_err(stat)?;
                Ok((kept.to_path_buf(), Some(kept)))
            }
            Remote::Http(url) => {
                let blobs = if cache {
                    Some(BlobCache::from_env()?)
                } else {
                    None
                };
                Ok(net::download(url, blobs.as_ref(), tmpdir)?)
            }
        }
    }
}

/// Parses an image URI that is not a local path, with one clear line for schemes sifr does
/// not handle.
pub fn parse_uri(uri: &str) -> Result<OciSource, SourceError> {
    if OciSource::is_oci_source(uri) {
        return Ok(OciSource::parse(uri)?);
    }
    if uri.starts_with("docker-daemon:") {
        return Err(SourceError::DockerDaemon(uri.to_string()));
    }
    let why = match uri.split_once("://").map(|(s, _)| s) {
        Some("library") => {
            "sifr talks to no container library (Sylabs Cloud); use docker:// or oras://, or \
             download the SIF file yourself"
        }
        Some("shub") => "Singularity Hub is retired; use docker:// or oras:// images",
        Some("oras" | "http" | "https") => {
            "such an image is a file to download (see Remote), not an OCI image to convert"
        }
        _ => return Err(SourceError::NotUri(uri.to_string())),
    };
    Err(SourceError::Unsupported {
        uri: uri.to_string(),
        scheme: uri.split_once("://").map_or("", |(s, _)| s).to_string(),
        why,
    })
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
    if let Some(remote) = Remote::parse(arg) {
        let tmpdir = conv
            .tmpdir
            .clone()
            .or_else(|| std::env::var_os("TMPDIR").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("/tmp"));
        let (path, remove_after) = remote?.fetch(&conv.access, cache, &tmpdir)?;
        let path = path
            .to_str()
            .ok_or_else(|| SourceError::NotUtf8(path.clone()))?;
        return Ok(Opened {
            image: local::open(path)?,
            remove_after,
        });
    }
    if !is_oci(arg) {
        if arg.contains("://") || arg.starts_with("docker-daemon:") {
            // library://, shub://, ...: the one line that says why.
            parse_uri(arg)?;
        }
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
                .starts_with("library://alpine: library:// images are not supported by sifr:"),
            "{e}"
        );
        let e = parse_uri("docker-daemon:alpine:3").expect_err("daemon");
        assert!(e.to_string().contains("docker-archive:"), "{e}");
        let e = parse_uri("ftp://x/y").expect_err("ftp");
        assert!(e.to_string().contains("not an image URI"), "{e}");
        assert!(matches!(
            parse_uri("docker://alpine:3.19"),
            Ok(OciSource::Registry(_))
        ));
    }

    #[test]
    fn test_remote_names() {
        let r = |u: &str| Remote::parse(u).expect("remote").expect("parses");
        assert_eq!(r("oras://reg:5000/a/b:v1").default_file_name(), "b_v1.sif");
        assert_eq!(
            r("https://h.example/d/img.sif?x=1").default_file_name(),
            "img.sif"
        );
        assert_eq!(r("http://h.example/").default_file_name(), "image.sif");
        assert!(Remote::parse("docker://alpine").is_none());
        assert!(matches!(Remote::parse("oras://"), Some(Err(_))));
    }
}
