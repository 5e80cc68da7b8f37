//! `pull`, and the cache behind `exec docker://...`: an OCI source is converted once into a
//! SIF kept in the cache (`<cache>/oci-tmp/<manifest digest>.sif`), as Apptainer does; later
//! pulls and runs of the same image reuse it, and layers already downloaded are reused by
//! the conversion of a new tag that shares them.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::{Args as _, FromArgMatches as _};
use tempfile::TempPath;

use super::Context;
use super::build::{fetch_oci, fetch_options};
use crate::build::oci::{self, Source};
use crate::cli::build::BuildArgs;
use crate::cli::pull::PullArgs;
use crate::cli::registry::RegistryArgs;

/// How a conversion is done.
#[derive(Debug, Clone, Default)]
pub struct Conversion {
    pub access: RegistryArgs,
    pub tmpdir: Option<PathBuf>,
    pub ignore_subuid: bool,
}

/// Parses an image URI that is not a local path, with one clear line for schemes sifr does
/// not handle.
pub fn parse_uri(uri: &str) -> anyhow::Result<Source> {
    if Source::is_oci_source(uri) {
        return Ok(Source::parse(uri)?);
    }
    match uri.split_once("://").map(|(s, _)| s) {
        Some(s @ ("library" | "shub" | "oras" | "http" | "https")) => bail!(
            "{uri}: {s}:// images are not supported by sifr; use docker://, oci:, oci-archive: \
             or docker-archive:, or download the SIF file yourself"
        ),
        _ => bail!(
            "{uri}: not an image URI (expected docker://NAME[:TAG], oci:DIR[:REF], \
             oci-archive:FILE[:REF] or docker-archive:FILE)"
        ),
    }
}

/// The SIF converted from `source`, from the cache when it is there, else built into it.
/// With `keep == false` the SIF is built into a temporary file that the caller removes
/// (returned as the second value).
pub fn converted_sif(
    ctx: &Context,
    source: &Source,
    conv: &Conversion,
    keep: bool,
) -> anyhow::Result<(PathBuf, Option<TempPath>)> {
    let cache = oci::BlobCache::from_env()?;
    // The image's identity first: for a registry only its manifest is asked for.
    let (key, spec) = match source {
        Source::Registry(r) => {
            let options = fetch_options(&conv.access, source)?;
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
            fetch_oci(source, &conv.access)?.cache_key().clone(),
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
    .context("cannot read the current directory")?;
    log::info!("Converting OCI blobs to SIF format");
    build_sif(ctx, &spec, &tmp, conv)?;
    if !keep {
        return Ok((tmp.to_path_buf(), Some(tmp)));
    }
    tmp.persist(&cached).map_err(|e| e.error).with_context(|| {
        format!(
            "cannot move the converted image into the cache at {}",
            cached.display()
        )
    })?;
    Ok((cached, None))
}

/// Builds `spec` into the SIF `dest` with the build command's defaults.
fn build_sif(ctx: &Context, spec: &str, dest: &Path, conv: &Conversion) -> anyhow::Result<()> {
    let cmd = BuildArgs::augment_args(clap::Command::new("build").no_binary_name(true));
    let matches = cmd
        .try_get_matches_from([dest.as_os_str(), std::ffi::OsStr::new(spec)])
        .context("internal error: build arguments for the conversion")?;
    let mut a = BuildArgs::from_arg_matches(&matches)
        .context("internal error: build arguments for the conversion")?;
    a.force = false;
    a.registry = conv.access.clone();
    a.tmpdir = conv.tmpdir.clone().or(a.tmpdir);
    a.ignore_subuid |= conv.ignore_subuid;
    super::build::build(ctx, a).map(|_| ())
}

/// The file name `pull` writes by default: `NAME_TAG.sif` for a registry image, the
/// archive's or layout's name otherwise.
fn default_name(source: &Source) -> PathBuf {
    let stem = match source {
        Source::Registry(r) => r.default_file_stem(),
        Source::OciLayout { dir: p, .. }
        | Source::OciArchive { file: p, .. }
        | Source::DockerArchive { file: p, .. } => {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "image".into());
            name.split('.').next().unwrap_or("image").to_string()
        }
    };
    PathBuf::from(format!("{stem}.sif"))
}

pub fn pull(ctx: &Context, a: PullArgs) -> anyhow::Result<i32> {
    crate::build::workdir::catch_interrupts();
    let (output, uri) = match a.args.as_slice() {
        [uri] => (None, uri),
        [output, uri] => (Some(PathBuf::from(output)), uri),
        _ => bail!("pull takes [OUTPUT] URI"),
    };
    let source = parse_uri(uri)?;
    let name = a
        .name
        .clone()
        .or(output)
        .unwrap_or_else(|| default_name(&source));
    // SIFR_PULLFOLDER (or APPTAINER_/SINGULARITY_PULLFOLDER) is read here rather than by
    // clap: spython sets it to the empty string to mean "not set".
    let folder = a.dir.clone().or_else(|| {
        std::env::var_os("SIFR_PULLFOLDER")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
    });
    let dest = match folder.as_ref().filter(|d| !d.as_os_str().is_empty()) {
        Some(d) if name.is_relative() => d.join(&name),
        _ => name,
    };
    if std::fs::symlink_metadata(&dest).is_ok() && !a.force {
        bail!(
            "{} already exists: use --force to overwrite it",
            dest.display()
        );
    }
    if dest.is_dir() {
        bail!(
            "{} is a directory: give the file to write with --name",
            dest.display()
        );
    }
    let conv = Conversion {
        access: a.registry.clone(),
        tmpdir: a.tmpdir.clone(),
        ignore_subuid: a.ignore_subuid,
    };
    let (sif, _tmp) = converted_sif(ctx, &source, &conv, !a.disable_cache)?;
    // Copy next to the destination, then rename: an interrupted pull leaves no partial image.
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let part = TempPath::try_from_path(parent.join(format!(
        ".{}.sifr-pull-{}",
        dest.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id()
    )))
    .context("cannot read the current directory")?;
    std::fs::copy(&sif, &part).with_context(|| format!("cannot write {}", part.display()))?;
    part.persist(&dest)
        .map_err(|e| e.error)
        .with_context(|| format!("cannot write {}", dest.display()))?;
    Ok(0)
}
