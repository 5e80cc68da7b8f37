//! OCI image sources for `build`, `pull` and `exec docker://`: parse a source, fetch or open
//! the image, apply its layers into a root filesystem, and turn its config into Apptainer's
//! container metadata.
//!
//! Typical use by the build code (inside the fakeroot user namespace for `unpack`):
//!
//! ```text
//! let source = Source::parse("docker://alpine:3.19")?;
//! let credentials = match &source {
//!     Source::Registry(r) => CredentialQuery { .. }.find(r.registry(), r.repository())?,
//!     _ => None,
//! };
//! let options = FetchOptions { plain_http, credentials, platform: PlatformSpec::host() };
//! let image = fetch(&source, &BlobCache::from_env()?, &options)?;   // network, cache
//! let report = image.unpack(&rootfs, &ApplyOptions::default())?;    // layers → rootfs
//! image.metadata().write_into(&rootfs)?;                            // runscript, env, labels
//! // image.metadata().oci_config_json → the SIF's "oci-config.json" descriptor
//! ```
//!
//! Modules: `reference` (source strings), `digest` (content digests, verifying reads),
//! `spec` (manifests, indexes, configs, platform choice), `auth` (credentials, challenges),
//! `access` (the registry flags as values: fetch options, fetching through the cache),
//! `registry` (the distribution-API client), `cache` (the content-addressed blob cache),
//! `layout` (OCI layouts, oci-archive, docker-archive), `image` (a resolved image and its
//! unpacking), `inroot` (path resolution confined to a root), `apply` (one layer tarball onto
//! a directory), `metadata` (runscript, environment file, labels, oci-config.json), `partial`
//! (downloads kept across interruptions and resumed), `oras` (SIF files stored in registries
//! as OCI artifacts, `oras://`).

pub mod access;
pub mod apply;
pub mod auth;
pub mod cache;
pub mod cache_admin;
pub mod digest;
pub mod fuzzing;
pub mod image;
pub mod inroot;
pub mod layout;
pub mod login;
pub mod metadata;
pub mod oras;
pub mod partial;
pub mod reference;
pub mod registry;
pub mod spec;

use std::io::{self, Read};
use std::path::{Path, PathBuf};

pub use access::RegistryAccess;
pub use apply::{ApplyError, ApplyOptions, ApplyReport, apply_layer, apply_layer_with};
pub use auth::{AuthError, CredentialOrigin, CredentialQuery, Credentials};
pub use cache::BlobCache;
pub use image::{ImageError, OciImage};
pub use metadata::ContainerMetadata;
pub use reference::{ImageRef, Source};
pub use registry::FetchOptions;
pub use spec::PlatformSpec;

/// Any failure while getting an image.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error(transparent)]
    Reference(#[from] reference::ReferenceError),
    #[error(transparent)]
    Auth(#[from] auth::AuthError),
    #[error(transparent)]
    Registry(#[from] registry::RegistryError),
    #[error(transparent)]
    Local(#[from] layout::LocalError),
    #[error(transparent)]
    Cache(#[from] cache::CacheError),
    #[error(transparent)]
    Image(#[from] image::ImageError),
    #[error("{image} is not a container image: {detail}")]
    NotAnImage { image: String, detail: String },
}

/// Gets an image from any source. Registry images are downloaded into `cache` (blobs
/// already there are reused); local layouts and archives are read in place.
pub fn fetch(
    source: &Source,
    cache: &BlobCache,
    options: &FetchOptions,
) -> Result<OciImage, OciError> {
    Ok(match source {
        Source::Registry(r) => pull(r, cache, options)?,
        Source::OciLayout { dir, reference } => {
            layout::open_oci_layout(dir, reference.as_deref(), &options.platform)?
        }
        Source::OciArchive { file, reference } => {
            layout::open_oci_archive(file, reference.as_deref(), &options.platform)?
        }
        Source::DockerArchive { file, reference } => {
            layout::open_docker_archive(file, reference.as_ref())?
        }
    })
}

/// The digest of the manifest a registry serves for `image` (for a multi-platform image,
/// the manifest of the chosen platform): one or two small requests, no layers.
pub fn manifest_digest(
    image: &ImageRef,
    options: &FetchOptions,
) -> Result<digest::Digest, OciError> {
    let mut client = registry::RegistryClient::new(image, options.clone());
    Ok(client.resolve()?.digest)
}

/// Pulls an image from a registry into the cache: manifest, config, then every layer not
/// cached yet, each verified by digest.
pub fn pull(
    image: &ImageRef,
    cache: &BlobCache,
    options: &FetchOptions,
) -> Result<OciImage, OciError> {
    let mut client = registry::RegistryClient::new(image, options.clone());
    let resolved = client.resolve()?;
    let source = format!("docker://{image}");
    if let Some(detail) = image::image_problem(&resolved.manifest.config, &resolved.manifest.layers)
    {
        return Err(OciError::NotAnImage {
            image: source,
            detail,
        });
    }
    cache.store_bytes(
        &resolved.digest,
        &resolved.bytes,
        &format!("manifest of {source}"),
    )?;
    let config_bytes = client.fetch_config(&resolved)?;
    let config_digest = resolved.manifest.config.digest.clone();
    cache.store_bytes(
        &config_digest,
        &config_bytes,
        &format!("config of {source}"),
    )?;
    let config = spec::ImageConfig::parse(&config_bytes, &format!("image config of {source}"))
        .map_err(registry::RegistryError::from)?;
    let mut layers = Vec::new();
    for (i, l) in resolved.manifest.layers.iter().enumerate() {
        client.download_blob(l, cache)?;
        layers.push(image::Layer {
            digest: Some(l.digest.clone()),
            size: Some(l.size),
            diff_id: config.rootfs.diff_ids.get(i).cloned(),
            media_type: l.media_type.clone(),
            member: image::blob_name(&l.digest),
        });
    }
    Ok(OciImage {
        source,
        manifest_digest: Some(resolved.digest),
        config_digest,
        config_bytes,
        config,
        layers,
        store: image::Store::Dir(cache.layout_dir()),
        cache: Some(cache.clone()),
    })
}

/// Reads a whole file, refusing files larger than `limit` with `ErrorKind::FileTooLarge`.
pub(crate) fn read_capped(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    let file = std::fs::File::open(path)?;
    let mut bytes = Vec::new();
    file.take(limit.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(io::Error::new(
            io::ErrorKind::FileTooLarge,
            format!("larger than {limit} bytes"),
        ));
    }
    Ok(bytes)
}

/// The invoking user's home directory: `$HOME`, else the password database.
pub fn home_dir() -> Option<PathBuf> {
    match std::env::var_os("HOME") {
        Some(h) if !h.is_empty() => Some(PathBuf::from(h)),
        _ => nix::unistd::User::from_uid(nix::unistd::getuid())
            .ok()
            .flatten()
            .map(|u| u.dir),
    }
}
