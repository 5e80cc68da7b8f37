//! `build`: from a definition file, an image or a sandbox, to a SIF or a sandbox.
//!
//! An unprivileged build is a fakeroot build (as Apptainer's): the work that creates files
//! runs as root of a fakeroot user namespace, so the image's files are root-owned where the
//! build made them as root.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

use super::Context;
use crate::build::assemble::{self, SifContents, SquashSettings};
use crate::build::workdir::{self, BuildDir};
use crate::cli::build::BuildArgs;
use crate::image::extract;
use crate::image::files::SandboxFiles;
use crate::image::inspect::{self, Selection};
use crate::image::{self, ImageKind};
use crate::launch::identity::HostUser;
use crate::launch::idplan;
use crate::launch::plan::{IdMapPlan, RootSource};
use crate::launch::userns::run_as_fakeroot;

/// What the build reads from.
enum Source {
    Image(PathBuf, ImageKind),
    Definition(PathBuf),
}

fn classify(spec: &str) -> anyhow::Result<Source> {
    if let Some((scheme, _)) = spec.split_once("://").or_else(|| {
        ["oci:", "oci-archive:", "docker-archive:"]
            .iter()
            .find(|p| spec.starts_with(**p))
            .map(|p| (&p[..p.len() - 1], ""))
    }) {
        bail!(
            "{spec}: {scheme} sources are not supported yet; build from a local image or a definition file"
        );
    }
    let path = PathBuf::from(spec);
    match image::detect(&path) {
        Ok(kind) => Ok(Source::Image(path, kind)),
        Err(image::ImageError::Unknown(_)) => Ok(Source::Definition(path)),
        Err(e) => Err(e.into()),
    }
}

/// Settings shared by the build steps.
pub struct Build {
    pub ids: IdMapPlan,
    pub squash: SquashSettings,
    /// `SOURCE_DATE_EPOCH` or `--reproducible`.
    pub epoch: Option<i64>,
}

impl Build {
    /// Runs `work` as root of the build's fakeroot namespace.
    pub fn as_root(&self, work: impl FnOnce() -> Result<(), String>) -> anyhow::Result<()> {
        if workdir::interrupted() {
            bail!("build interrupted");
        }
        run_as_fakeroot(&self.ids, &idplan::write_maps, work).map_err(|e| anyhow::anyhow!(e.0))
    }
}

/// The fixed build time: `SOURCE_DATE_EPOCH`, else 0 with `--reproducible`.
fn epoch(reproducible: bool) -> anyhow::Result<Option<i64>> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.is_empty() => {
            Ok(Some(v.trim().parse().with_context(|| {
                format!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds")
            })?))
        }
        _ => Ok(reproducible.then_some(0)),
    }
}

pub fn build(_ctx: &Context, a: BuildArgs) -> anyhow::Result<i32> {
    workdir::catch_interrupts();
    let source = classify(&a.spec)?;
    let dest = a.dest.clone();
    if std::fs::symlink_metadata(&dest).is_ok() && !a.force && !a.update {
        bail!(
            "{} already exists: use --force to overwrite it{}",
            dest.display(),
            if a.sandbox {
                " (or --update to build over a sandbox)"
            } else {
                ""
            }
        );
    }
    let user = HostUser::current()?;
    let (ids, _emulation) = idplan::fakeroot(&user, a.ignore_subuid);
    if let Some(n) = &ids.notice {
        log::info!("{n}");
    }
    let mut squash = SquashSettings::default();
    if let Some(args) = &a.mksquashfs_args {
        squash.parse_args(args)?;
    }
    let epoch = epoch(a.reproducible)?;
    squash.fixed_time = epoch.map(|e| e.clamp(0, u32::MAX as i64) as u32);
    let b = Build { ids, squash, epoch };
    let mut bd = BuildDir::create(a.tmpdir.as_deref(), b.ids.clone())
        .context("cannot create the build directory")?;
    bd.keep = a.no_cleanup;
    let rootfs = bd.path().join("rootfs");

    let (deffile, metadata) = match source {
        Source::Image(path, kind) => {
            unpack_image(&b, &path, kind, &rootfs)?;
            sif_metadata_of(&path, kind)
        }
        Source::Definition(path) => {
            let def = build_definition(&a, &b, &bd, &path, &rootfs)?;
            (Some(def), None)
        }
    };
    if a.update && a.sandbox {
        // Built in place.
        return Ok(0);
    }
    finish(&a, &b, &bd, &rootfs, deffile, metadata)?;
    Ok(0)
}

/// Builds every stage of a definition file; the last one ends in `rootfs`. Returns the
/// definition text (for the SIF's definition object).
fn build_definition(
    a: &BuildArgs,
    b: &Build,
    bd: &BuildDir,
    path: &Path,
    rootfs: &Path,
) -> anyhow::Result<String> {
    use crate::build::deffile::{self, BuildArgs as DefArgs, ParseOptions, SectionFilter};
    use crate::build::stage::{StageEnv, build_stage};
    let opts = ParseOptions {
        build_args: DefArgs::from_cli(&a.build_arg, a.build_arg_file.as_deref())?,
        update: a.update,
    };
    let def = deffile::parse_file(path, &opts)?;
    if let Err(e) = def.check_unused_build_args() {
        if a.warn_unused_build_args {
            log::warn!("{e}");
        } else {
            return Err(e.into());
        }
    }
    let filter = SectionFilter::parse(&a.section)?;
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let mut built: std::collections::BTreeMap<String, PathBuf> = Default::default();
    let n = def.stages.len();
    for (i, stage) in def.stages.iter().enumerate() {
        let last = i + 1 == n;
        // --update builds the last stage over the existing sandbox.
        let dir = if last && a.update {
            a.dest.clone()
        } else if last {
            rootfs.to_path_buf()
        } else {
            bd.path().join(format!("stage-{i}"))
        };
        let env = StageEnv {
            build: b,
            filter: &filter,
            notest: a.notest,
            binds: &a.bind,
            cwd: &cwd,
            stages: &built,
            ignore_subuid: a.ignore_subuid,
            update: last && a.update,
        };
        if let Some(name) = &stage.name {
            log::info!("Building stage {name}");
        }
        build_stage(&def, stage, &dir, &env)?;
        if let Some(name) = &stage.name {
            built.insert(name.clone(), dir.clone());
        }
    }
    Ok(def.text.clone())
}

/// Unpacks (or copies) an image's root filesystem into `rootfs` as fakeroot.
pub fn unpack_image(b: &Build, path: &Path, kind: ImageKind, rootfs: &Path) -> anyhow::Result<()> {
    let root = match kind {
        ImageKind::Sandbox => RootSource::Directory {
            path: path.to_path_buf(),
        },
        ImageKind::Squashfs => RootSource::Squashfs {
            path: path.to_path_buf(),
            offset: 0,
            size: std::fs::metadata(path)?.len(),
        },
        ImageKind::Ext => RootSource::Ext {
            path: path.to_path_buf(),
            offset: 0,
            size: std::fs::metadata(path)?.len(),
        },
        ImageKind::Sif => super::action::sif_root(path)?,
    };
    let dest = rootfs.to_path_buf();
    match root {
        RootSource::Directory { path } => b.as_root(move || {
            extract::copy_tree(&path, &dest)
                .map(|_| ())
                .map_err(|e| e.to_string())
        }),
        RootSource::Squashfs { path, offset, .. } => {
            let f = std::fs::File::open(&path)
                .with_context(|| format!("cannot open {}", path.display()))?;
            b.as_root(move || {
                let fs = sifr_fuse::SquashFs::open(f, offset).map_err(|e| e.to_string())?;
                extract::extract_image(&fs, &dest)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            })
        }
        RootSource::Ext { path, offset, size } => {
            let f = std::fs::File::open(&path)
                .with_context(|| format!("cannot open {}", path.display()))?;
            b.as_root(move || {
                let fs = sifr_fuse::ExtFs::open_with(
                    f,
                    offset,
                    sifr_fuse::ext::Options {
                        size: Some(size),
                        threads: 1,
                    },
                )
                .map_err(|e| e.to_string())?;
                extract::extract_image(&fs, &dest)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            })
        }
    }
}

/// The definition file and inspect metadata a SIF source carries.
fn sif_metadata_of(path: &Path, kind: ImageKind) -> (Option<String>, Option<String>) {
    use crate::image::sif::{DataType, SifImage};
    if kind != ImageKind::Sif {
        return (None, None);
    }
    let Ok(img) = SifImage::open(path) else {
        return (None, None);
    };
    let read = |d| {
        img.read_object(d, 16 << 20)
            .ok()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    };
    let def = img.objects_of_type(DataType::Deffile).next().and_then(read);
    let meta = img
        .find_object(DataType::GenericJson, "inspect-metadata.json")
        .and_then(read);
    (def, meta)
}

/// Writes the result: the sandbox directory, or the SIF (squashfs of the root, metadata).
pub fn finish(
    a: &BuildArgs,
    b: &Build,
    _bd: &BuildDir,
    rootfs: &Path,
    deffile: Option<String>,
    metadata: Option<String>,
) -> anyhow::Result<()> {
    let dest = &a.dest;
    if std::fs::symlink_metadata(dest).is_ok() && !a.update {
        // --force (checked before the build started).
        if dest.is_dir() {
            BuildDir::remove_tree(&b.ids, dest).map_err(anyhow::Error::msg)?;
        } else {
            std::fs::remove_file(dest)
                .with_context(|| format!("cannot replace {}", dest.display()))?;
        }
    }
    if a.sandbox {
        if a.fix_perms {
            let r = rootfs.to_path_buf();
            b.as_root(move || {
                workdir::make_writable(&r);
                Ok(())
            })?;
        }
        if std::fs::rename(rootfs, dest).is_err() {
            // Another filesystem: copy as root of the namespace, keeping owners.
            let (src, d) = (rootfs.to_path_buf(), dest.clone());
            b.as_root(move || {
                extract::copy_tree(&src, &d)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            })?;
        }
        return Ok(());
    }
    // Metadata for `inspect`, as Apptainer stores it, when the source had none.
    let metadata = match metadata {
        Some(m) => Some(m),
        None => {
            let files = SandboxFiles::new(rootfs);
            let m = inspect::from_files(
                &files,
                &Selection {
                    all: true,
                    ..Default::default()
                },
            )
            .context("cannot read the image metadata")?;
            Some(serde_json::to_string(&m)?)
        }
    };
    let sq = rootfs.with_file_name("rootfs.sqfs");
    let (r, s, settings) = (rootfs.to_path_buf(), sq.clone(), b.squash.clone());
    b.as_root(move || assemble::write_squashfs(&r, &s, &settings).map_err(|e| e.to_string()))?;
    if workdir::interrupted() {
        bail!("build interrupted");
    }
    assemble::write_sif(
        &sq,
        dest,
        &SifContents {
            deffile,
            metadata_json: metadata,
            extra_json: vec![],
            reproducible: b.epoch,
        },
    )?;
    Ok(())
}
