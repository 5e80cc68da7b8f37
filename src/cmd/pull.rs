//! `pull`: where to write the image (the typed flags, `SIFR_PULLFOLDER`), then the SIF the
//! library converts the source into through the cache (see `build::convert`), copied next
//! to the destination and renamed over it; an `oras://` SIF or an `http(s)://` image file
//! is downloaded into the cache instead (see `source::Remote`) and copied the same way.

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use tempfile::TempPath;

use super::{Context, registry_access};
use crate::build::convert::{Conversion, converted_sif};
use crate::build::oci::PlatformSpec;
use crate::build::oci::Source;
use crate::cli::pull::PullArgs;
use crate::source::{Remote, parse_uri};

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

/// The platform `--arch`/`--arch-variant` ask for (`None`: the host's).
fn platform(a: &PullArgs) -> anyhow::Result<Option<PlatformSpec>> {
    match (&a.arch, &a.arch_variant) {
        (None, None) => Ok(None),
        (None, Some(v)) => bail!("pull --arch-variant {v} needs --arch"),
        (Some(arch), variant) => {
            let mut p = PlatformSpec::from_arch(arch)?;
            if let Some(v) = variant {
                p.variant = Some(v.clone());
            }
            Ok(Some(p))
        }
    }
}

pub fn pull(ctx: &Context, a: PullArgs) -> anyhow::Result<i32> {
    crate::build::workdir::catch_interrupts();
    let (output, uri) = match a.args.as_slice() {
        [uri] => (None, uri),
        [output, uri] => (Some(PathBuf::from(output)), uri),
        _ => bail!("pull takes [OUTPUT] URI"),
    };
    let remote = Remote::parse(uri).transpose()?;
    let source = match remote {
        Some(_) => None,
        None => Some(parse_uri(uri)?),
    };
    let platform = platform(&a)?;
    let name = a.name.clone().or(output).unwrap_or_else(|| match &source {
        Some(s) => default_name(s),
        None => PathBuf::from(
            remote
                .as_ref()
                .map(Remote::default_file_name)
                .unwrap_or_default(),
        ),
    });
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
    // The configuration says where the conversion's fakeroot finds newuidmap/newgidmap.
    let cfg = super::action::load_config(ctx)?;
    let mut access = registry_access(&a.registry);
    access.platform = platform;
    if matches!(source, Some(Source::Registry(_))) || matches!(remote, Some(Remote::Oras(_))) {
        super::docker_login(&a.registry, &mut access)?;
    }
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let (sif, _tmp) = match (&remote, &source) {
        (Some(r), _) => {
            if matches!(r, Remote::Http(_)) && access.platform.is_some() {
                bail!("pull --arch applies to docker:// and oras:// images, not {uri}");
            }
            // Without the cache an http(s) download goes next to the destination.
            r.fetch(&access, !a.disable_cache, &parent)?
        }
        (None, Some(source)) => {
            if let (Some(p), Source::Registry(_)) = (&access.platform, source)
                && crate::image::sif::Arch::from_go_name(&p.architecture).is_none()
            {
                bail!(
                    "pull --arch {}: sifr cannot label a SIF with this architecture",
                    p
                );
            }
            if access.platform.is_some() && !matches!(source, Source::Registry(_)) {
                bail!("pull --arch applies to docker:// and oras:// images, not {uri}");
            }
            let conv = Conversion {
                access,
                tmpdir: a.tmpdir.clone(),
                ignore_subuid: a.ignore_subuid,
                helper_dirs: Some(cfg.setuid_helper_dirs()),
            };
            converted_sif(source, &conv, !a.disable_cache)?
        }
        (None, None) => bail!("pull takes [OUTPUT] URI"),
    };
    // Copy next to the destination, then rename: an interrupted pull leaves no partial image.
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
