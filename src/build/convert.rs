//! OCI sources to SIF images, through the cache: an OCI source (`docker://`, `oci:`,
//! `oci-archive:`, `docker-archive:`) is converted once into a SIF kept in the cache
//! (`<cache>/oci-tmp/<manifest digest>.sif`), as Apptainer does; later pulls and runs of the
//! same image reuse it, and layers already downloaded are reused by the conversion of a new
//! tag that shares them. `pull` and `exec docker://...` both get their SIF here.

use std::path::{Path, PathBuf};

use tempfile::TempPath;

use super::oci::{self, AuthError, OciError, RegistryAccess, Source};
use super::pipeline::{self, Request, StartError};

/// How a conversion is done.
#[derive(Debug, Clone, Default)]
pub struct Conversion {
    pub access: RegistryAccess,
    /// Where the build directory (and, without the cache, the SIF) goes.
    pub tmpdir: Option<PathBuf>,
    /// Do not use the subuid/subgid mapping for fakeroot.
    pub ignore_subuid: bool,
    /// Where newuidmap/newgidmap are looked for (sifr.conf `binary path`, see
    /// `Config::setuid_helper_dirs`); `None`: the system directories.
    pub helper_dirs: Option<Vec<PathBuf>>,
}

/// Why an OCI source could not be converted.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error(transparent)]
    Cache(#[from] oci::cache::CacheError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Oci(#[from] OciError),
    #[error("cannot read the current directory: {0}")]
    TempName(std::io::Error),
    #[error("cannot move the converted image into the cache at {}: {cause}", path.display())]
    Persist {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error(transparent)]
    Start(#[from] StartError),
}

/// The SIF converted from `source`, from the cache when it is there, else built into it.
/// With `keep == false` (`--disable-cache`) the SIF is built into a temporary file that the
/// caller removes (returned as the second value), and the blobs downloaded for it are not
/// kept either.
pub fn converted_sif(
    source: &Source,
    conv: &Conversion,
    keep: bool,
) -> Result<(PathBuf, Option<TempPath>), ConvertError> {
    let cache = oci::BlobCache::from_env()?;
    // The image's identity first: for a registry only its manifest is asked for.
    let (key, spec) = match source {
        Source::Registry(r) => {
            let options = conv.access.fetch_options(source)?;
            let digest = oci::manifest_digest(r, &options)?;
            // Build from the digest just resolved, so a tag moved meanwhile cannot mix
            // images; the tag stays in the name for the metadata.
            let pinned = match r.tag() {
                Some(t) => format!("docker://{}/{}:{t}@{digest}", r.registry(), r.repository()),
                None => format!("docker://{}/{}@{digest}", r.registry(), r.repository()),
            };
            (digest, pinned)
        }
        _ => (
            conv.access.fetch(source)?.cache_key().clone(),
            source.to_string(),
        ),
    };
    let cached = cache.converted_sif_path(&key);
    if keep && cached.is_file() {
        log::info!("Using cached SIF image");
        return Ok((cached, None));
    }
    let dir = if keep {
        cached
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| cache.root().to_path_buf())
    } else {
        conv.tmpdir
            .clone()
            .or_else(|| std::env::var_os("TMPDIR").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("/tmp"))
    };
    // Removed when dropped: on any failure, and after the run without the cache.
    let tmp = TempPath::try_from_path(dir.join(format!(
        ".sifr-convert-{}-{}.sif",
        key.short(),
        std::process::id()
    )))
    .map_err(ConvertError::TempName)?;
    log::info!("Converting OCI blobs to SIF format");
    let mut request = conversion_request(&spec, &tmp, conv);
    // Without the cache (`--disable-cache`), no blob is kept either, as Apptainer.
    request.disable_cache = !keep;
    pipeline::run(&request)?;
    if !keep {
        return Ok((tmp.to_path_buf(), Some(tmp)));
    }
    tmp.persist(&cached).map_err(|e| ConvertError::Persist {
        path: cached.clone(),
        cause: e.error,
    })?;
    Ok((cached, None))
}

/// The build that converts `spec` into the SIF `dest`: the build's defaults, with the
/// conversion's registry access, temporary directory and fakeroot mapping.
fn conversion_request(spec: &str, dest: &Path, conv: &Conversion) -> Request {
    let mut r = Request::new(dest.to_path_buf(), spec.to_string());
    r.access = conv.access.clone();
    r.tmpdir = conv.tmpdir.clone();
    r.ignore_subuid = conv.ignore_subuid;
    if let Some(dirs) = &conv.helper_dirs {
        r.helper_dirs = dirs.clone();
    }
    r
}
