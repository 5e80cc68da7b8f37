//! `build`: from a definition file, an image or a sandbox, to a SIF or a sandbox.
//!
//! An unprivileged build is a fakeroot build (as Apptainer's): the work that creates files
//! runs as root of a fakeroot user namespace, so the image's files are root-owned where the
//! build made them as root.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

use super::Context;
use crate::build::assemble::{self, SifContents, SquashSettings};
use crate::build::baseenv;
use crate::build::oci;
use crate::build::output::TempOutput;
use crate::build::supervise::{self, Role};
use crate::build::workdir::{self, BuildDir};
use crate::cli::build::BuildArgs;
use crate::cli::registry::RegistryArgs;
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
    Oci(oci::Source),
}

fn classify(spec: &str) -> anyhow::Result<Source> {
    if oci::Source::is_oci_source(spec) {
        return Ok(Source::Oci(oci::Source::parse(spec)?));
    }
    if let Some((scheme, _)) = spec.split_once("://") {
        bail!(
            "{spec}: {scheme}:// sources are not supported by sifr (supported: docker://, oci:, \
             oci-archive:, docker-archive:, a local image or a definition file)"
        );
    }
    let path = PathBuf::from(spec);
    match image::detect(&path) {
        Ok(kind) => Ok(Source::Image(path, kind)),
        Err(image::ImageError::Unknown(_)) => Ok(Source::Definition(path)),
        Err(e) => Err(e.into()),
    }
}

/// The fetch options for `source`: `--no-https`, and credentials for its registry from
/// `--docker-username/-password`, `--authfile`, the environment or docker config files
/// (see `oci::auth`).
pub fn fetch_options(
    access: &RegistryArgs,
    source: &oci::Source,
) -> anyhow::Result<oci::FetchOptions> {
    let explicit = match (&access.docker_username, &access.docker_password) {
        (Some(u), Some(p)) => Some(oci::Credentials {
            username: u.clone(),
            password: p.clone(),
        }),
        (Some(u), None) => bail!(
            "--docker-username {u} was given without a password: add --docker-password \
                 or set SIFR_DOCKER_PASSWORD"
        ),
        (None, Some(_)) => bail!("--docker-password was given without --docker-username"),
        (None, None) => None,
    };
    let credentials = match source {
        oci::Source::Registry(r) => {
            let home = oci::home_dir();
            oci::CredentialQuery {
                explicit: explicit.as_ref(),
                authfile: access.authfile.as_deref(),
                home: home.as_deref(),
                env: &|k| std::env::var(k).ok(),
            }
            .find(r.registry(), r.repository())?
        }
        _ => None,
    };
    Ok(oci::FetchOptions {
        plain_http: access.no_https,
        credentials,
        platform: oci::PlatformSpec::host(),
    })
}

/// Gets an OCI image as the calling user: a registry image is downloaded into the blob
/// cache (blobs already there are reused); local layouts and archives are read in place.
pub fn fetch_oci(source: &oci::Source, access: &RegistryArgs) -> anyhow::Result<oci::OciImage> {
    let options = fetch_options(access, source)?;
    let cache = oci::BlobCache::from_env()?;
    log::debug!("fetching OCI image {source}");
    Ok(oci::fetch(source, &cache, &options)?)
}

/// Applies an OCI image's layers to `rootfs` as root of the fakeroot namespace (owners
/// from the layers), then writes the `/.singularity.d` skeleton and the runscript,
/// environment file and labels made from the image config.
pub fn unpack_oci(
    b: &Build,
    image: &oci::OciImage,
    rootfs: &Path,
) -> anyhow::Result<oci::ContainerMetadata> {
    let meta = image.metadata();
    for n in &meta.notes {
        log::warn!("{n}");
    }
    let (dest, m) = (rootfs.to_path_buf(), meta.clone());
    b.as_root(move || {
        std::fs::create_dir_all(&dest)
            .map_err(|e| format!("cannot create {}: {e}", dest.display()))?;
        let report = image
            .unpack(&dest, &oci::ApplyOptions::default())
            .map_err(|e| e.to_string())?;
        for n in &report.notes {
            log::info!("{n}");
        }
        log::debug!(
            "{} entries, {} whiteouts, {} opaque directories applied",
            report.entries,
            report.whiteouts,
            report.opaque_dirs
        );
        baseenv::write(&dest).map_err(|e| format!("cannot write /.singularity.d: {e}"))?;
        m.write_into(&dest)
            .map_err(|e| format!("cannot write the image metadata: {e}"))
    })?;
    Ok(meta)
}

/// Settings shared by the build steps.
pub struct Build {
    pub ids: IdMapPlan,
    /// Registry access for OCI sources.
    pub access: RegistryArgs,
    pub squash: SquashSettings,
    /// `SOURCE_DATE_EPOCH` or `--reproducible`.
    pub epoch: Option<i64>,
}

impl Build {
    /// Runs `work` as root of the build's fakeroot namespace, in a process that ends at
    /// once when the build is interrupted.
    pub fn as_root(&self, work: impl FnOnce() -> Result<(), String>) -> anyhow::Result<()> {
        if workdir::interrupted() {
            bail!("build interrupted");
        }
        let r = run_as_fakeroot(&self.ids, &idplan::write_maps, move || {
            workdir::exit_on_interrupt();
            work()
        });
        if workdir::interrupted() {
            bail!("build interrupted");
        }
        r.map_err(|e| anyhow::anyhow!(e.0))
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

/// `sifr build` (also what `pull` converts with): the build runs in a worker process (see
/// `build::supervise`), so that a killed `sifr build` still stops everything it started
/// and leaves nothing behind. The worker reports a failure itself (one line) and ends;
/// this process then ends with its exit status, or returns Ok(0) when the build succeeded.
pub fn build(ctx: &Context, a: BuildArgs) -> anyhow::Result<i32> {
    use std::io::Write as _;
    match supervise::start_worker().context("cannot start the build")? {
        Role::Done(0) => return Ok(0),
        Role::Done(code) => {
            // The worker said why and cleaned up.
            let _ = std::io::stdout().flush();
            std::process::exit(code);
        }
        Role::Worker => {}
    }
    let r = build_in_worker(ctx, a);
    // Nothing the build started outlives it.
    supervise::stop_descendants();
    let code = match (r, workdir::interrupt_signal()) {
        (Ok(code), _) => code,
        (Err(e), Some(sig)) => {
            log::debug!("after the interrupt: {e:#}");
            crate::log::fatal(&format!(
                "build interrupted by {}: nothing was written (an existing image is unchanged)",
                signal_name(sig)
            ));
            128 + sig
        }
        (Err(e), None) => {
            crate::log::fatal(&format!("{e:#}"));
            super::EXIT_FATAL
        }
    };
    // The worker never returns to the caller: the caller's state is the other process's.
    let _ = std::io::stdout().flush();
    std::process::exit(code)
}

fn signal_name(sig: i32) -> String {
    match sig {
        libc::SIGINT => "SIGINT".into(),
        libc::SIGTERM => "SIGTERM".into(),
        libc::SIGHUP => "SIGHUP".into(),
        s => format!("signal {s}"),
    }
}

fn build_in_worker(_ctx: &Context, a: BuildArgs) -> anyhow::Result<i32> {
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
    let access = a.registry.clone();
    let b = Build {
        ids,
        access,
        squash,
        epoch,
    };
    let mut bd = BuildDir::create(a.tmpdir.as_deref(), b.ids.clone())
        .context("cannot create the build directory")?;
    bd.keep = a.no_cleanup;
    let rootfs = bd.path().join("rootfs");

    let mut extra_json = vec![];
    let (deffile, metadata) = match source {
        Source::Image(path, kind) => {
            unpack_image(&b, &path, kind, &rootfs)?;
            sif_metadata_of(&path, kind)
        }
        Source::Definition(path) => {
            let def = build_definition(&a, &b, &bd, &path, &rootfs)?;
            (Some(def), None)
        }
        Source::Oci(src) => {
            let image = fetch_oci(&src, &b.access)?;
            let meta = unpack_oci(&b, &image, &rootfs)?;
            extra_json.push((
                oci::metadata::OCI_CONFIG_DESCRIPTOR.to_string(),
                meta.oci_config_json,
            ));
            (Some(bootstrap_deffile(&src)), None)
        }
    };
    if a.update && a.sandbox {
        // Built in place.
        return Ok(0);
    }
    finish(&a, &b, &bd, &rootfs, deffile, metadata, extra_json)?;
    Ok(0)
}

/// The definition Apptainer stores for an image built straight from an OCI source.
fn bootstrap_deffile(src: &oci::Source) -> String {
    let text = src.to_string();
    let (agent, from) = match text.split_once("://") {
        Some((a, f)) => (a.to_string(), f.to_string()),
        None => match text.split_once(':') {
            Some((a, f)) => (a.to_string(), f.to_string()),
            None => ("oci".to_string(), text.clone()),
        },
    };
    format!("bootstrap: {agent}\nfrom: {from}\n")
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
        ImageKind::Sif => crate::image::source::sif_root(path)?,
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
                let shown = path.display();
                let fs =
                    sifr_fuse::SquashFs::open(f, offset).map_err(|e| format!("{shown}: {e}"))?;
                extract::extract_image(&fs, &dest)
                    .map(|_| ())
                    .map_err(|e| format!("{shown}: {e}"))
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
                .map_err(|e| format!("{}: {e}", path.display()))?;
                extract::extract_image(&fs, &dest)
                    .map(|_| ())
                    .map_err(|e| format!("{}: {e}", path.display()))
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
    extra_json: Vec<(String, String)>,
) -> anyhow::Result<()> {
    // The new output is made under a temporary name next to the destination and renamed
    // over it only when complete and synced (--force was checked before the build
    // started): an interrupted or failed build leaves the previous output as it was.
    let dest = &a.dest;
    if a.sandbox {
        if a.fix_perms {
            let r = rootfs.to_path_buf();
            b.as_root(move || {
                workdir::make_writable(&r);
                Ok(())
            })?;
        }
        let tmp = TempOutput::dir_for(dest, &b.ids)?;
        if std::fs::rename(rootfs, tmp.path()).is_err() {
            // Another filesystem: copy as root of the namespace, keeping owners.
            let (src, d) = (rootfs.to_path_buf(), tmp.path().to_path_buf());
            b.as_root(move || {
                extract::copy_tree(&src, &d)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            })?;
        }
        if workdir::interrupted() {
            bail!("build interrupted");
        }
        tmp.commit(dest)?;
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
    let tmp = TempOutput::file_for(dest, &b.ids)?;
    assemble::write_sif_to(
        &sq,
        tmp.path(),
        &SifContents {
            deffile,
            metadata_json: metadata,
            extra_json,
            reproducible: b.epoch,
        },
    )?;
    if workdir::interrupted() {
        bail!("build interrupted");
    }
    tmp.commit(dest)?;
    Ok(())
}
