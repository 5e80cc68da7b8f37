//! The whole build, from a request to the written image: what the source is (definition
//! file, local image, OCI source), the build directory, the stages or the unpacking, then the
//! sandbox or SIF output, renamed into place only when complete. `sifr build` and the OCI
//! conversion behind `pull` and `exec docker://` (see `build::convert`) both run it.
//!
//! The build runs in a worker process (see `build::supervise`), so that a killed build still
//! stops everything it started and leaves nothing behind.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use tempfile::TempPath;

use super::assemble::{self, SifContents, SquashSettings};
use super::baseenv;
use super::context::Build;
use super::oci;
use super::output::{self, TempOutput};
use super::supervise::{self, Role};
use super::unpack::{unpack_image, unpack_oci};
use super::workdir::{self, BuildDir};
use crate::image::extract;
use crate::image::files::SandboxFiles;
use crate::image::inspect::{self, Selection};
use crate::image::{self, ImageKind};
use crate::launch::identity::HostUser;
use crate::launch::idplan;

/// What to build, and how: the library's form of `sifr build`'s flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// What to build from: a definition file, a local image, or an OCI source.
    pub spec: String,
    /// The image to write: a SIF file, or a directory with `sandbox`.
    pub dest: PathBuf,
    pub sandbox: bool,
    /// Overwrite `dest` if it exists.
    pub force: bool,
    /// Run the definition over the existing sandbox `dest` (no bootstrap).
    pub update: bool,
    /// Skip the `%test` section.
    pub notest: bool,
    /// The definition sections to run (`all`, `none`, or section names).
    pub sections: Vec<String>,
    /// Give the owner rwX on everything in a sandbox output.
    pub fix_perms: bool,
    /// Where the build directory goes.
    pub tmpdir: Option<PathBuf>,
    /// `VAR=VALUE` definition-file variables, and a file of them.
    pub build_args: Vec<String>,
    pub build_arg_file: Option<PathBuf>,
    /// Warn instead of failing when a build argument is not used.
    pub warn_unused_build_args: bool,
    /// Squashfs writer options, as mksquashfs takes them.
    pub mksquashfs_args: Option<String>,
    /// Compression threads (sifr.conf `mksquashfs procs`; 0: one per CPU). A `-processors`
    /// in `mksquashfs_args` takes precedence.
    pub squash_threads: usize,
    /// Fixed times and ids (time 0 unless `SOURCE_DATE_EPOCH` is set).
    pub reproducible: bool,
    /// Bind specifications for `%post` and `%test`.
    pub binds: Vec<String>,
    /// GPU set-up for `%post` and `%test` (`--nv`, `--rocm`), as the containers that run
    /// them take it.
    pub gpu_flags: Vec<String>,
    /// Registry access for OCI sources.
    pub access: oci::RegistryAccess,
    /// `--disable-cache`: registry blobs go to the build directory (removed with it), not
    /// to the user's cache.
    pub disable_cache: bool,
    /// Keep the build directory after a failure.
    pub no_cleanup: bool,
    /// Do not use the subuid/subgid mapping for fakeroot.
    pub ignore_subuid: bool,
    /// Where newuidmap/newgidmap are looked for (sifr.conf `binary path`).
    pub helper_dirs: Vec<PathBuf>,
}

impl Request {
    /// A build of `spec` into the SIF `dest` with every default (what `sifr build DEST SPEC`
    /// does without flags).
    pub fn new(dest: PathBuf, spec: String) -> Request {
        Request {
            spec,
            dest,
            sandbox: false,
            force: false,
            update: false,
            notest: false,
            sections: vec!["all".to_string()],
            fix_perms: false,
            tmpdir: None,
            build_args: Vec::new(),
            build_arg_file: None,
            warn_unused_build_args: false,
            mksquashfs_args: None,
            squash_threads: 0,
            reproducible: false,
            binds: Vec::new(),
            gpu_flags: Vec::new(),
            access: oci::RegistryAccess::default(),
            disable_cache: false,
            no_cleanup: false,
            ignore_subuid: false,
            helper_dirs: sifr_idmap::write::default_helper_dirs(),
        }
    }
}

/// The squashfs writer settings of a request: `mksquashfs procs` threads, then the user's
/// `--mksquashfs-args`.
fn squash_settings(
    a: &Request,
    all_root: bool,
) -> Result<SquashSettings, assemble::SquashArgsError> {
    let mut squash = SquashSettings {
        threads: a.squash_threads,
        all_root,
        ..SquashSettings::default()
    };
    if let Some(args) = &a.mksquashfs_args {
        squash.parse_args(args)?;
    }
    Ok(squash)
}

/// Why a build could not start (once started, the worker reports a failure itself).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot start the build: {0}")]
    Worker(std::io::Error),
}

/// What the build reads from.
enum Source {
    Image(PathBuf, ImageKind),
    Definition(PathBuf),
    Oci(oci::Source),
    /// An `oras://` SIF or an `http(s)://` image file, downloaded (into the cache) once the
    /// destination was checked, then built from as a local image.
    Remote(String),
}

fn classify(spec: &str) -> anyhow::Result<Source> {
    if oci::Source::is_oci_source(spec) {
        return Ok(Source::Oci(oci::Source::parse(spec)?));
    }
    if ["oras://", "http://", "https://"]
        .iter()
        .any(|p| spec.starts_with(p))
    {
        return Ok(Source::Remote(spec.to_string()));
    }
    if spec.starts_with("docker-daemon:") {
        bail!(
            "{spec}: docker-daemon: sources are not supported by sifr (it talks to no Docker \
             daemon): save the image with 'docker save -o image.tar NAME' and use \
             docker-archive:image.tar"
        );
    }
    if let Some((scheme, _)) = spec.split_once("://") {
        bail!(
            "{spec}: {scheme}:// sources are not supported by sifr build (supported: docker://, \
             oci:, oci-archive:, docker-archive:, oras://, http(s)://, a local image or a \
             definition file)"
        );
    }
    let path = PathBuf::from(spec);
    match image::detect(&path) {
        Ok(kind) => Ok(Source::Image(path, kind)),
        Err(image::ImageError::Unknown(_)) => Ok(Source::Definition(path)),
        Err(e) => Err(e.into()),
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

/// Runs the build `req` (`sifr build`, and the conversion behind `pull`) in a worker
/// process (see `build::supervise`), so that a killed `sifr build` still stops everything it
/// started and leaves nothing behind. The worker reports a failure itself (one line) and
/// ends; this process then ends with its exit status, or returns when the build succeeded.
pub fn run(req: &Request) -> Result<(), StartError> {
    use std::io::Write as _;
    match supervise::start_worker().map_err(StartError::Worker)? {
        Role::Done(0) => return Ok(()),
        Role::Done(code) => {
            // The worker said why and cleaned up.
            let _ = std::io::stdout().flush();
            std::process::exit(code);
        }
        Role::Worker => {}
    }
    let r = build_in_worker(req);
    // Nothing the build started outlives it.
    supervise::stop_descendants();
    let code = match (r, workdir::interrupt_signal()) {
        (Ok(()), _) => 0,
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
            crate::log::EXIT_FATAL
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

/// Downloads an `oras://` SIF or an `http(s)://` image into the cache (see `oci::oras` and
/// `net`); an http(s) file the cache cannot keep (no date from the server) goes to a
/// temporary file in the build's temporary directory, returned to be removed.
fn fetch_remote(a: &Request, uri: &str) -> anyhow::Result<(PathBuf, Option<TempPath>)> {
    let cache = oci::BlobCache::from_env()?;
    if let Some(name) = uri.strip_prefix("oras://") {
        let image = oci::ImageRef::parse(name)?;
        let options = a
            .access
            .fetch_options(&oci::Source::Registry(image.clone()))?;
        return Ok((oci::oras::pull_sif(&image, &options, &cache)?, None));
    }
    let tmpdir = a
        .tmpdir
        .clone()
        .or_else(|| std::env::var_os("TMPDIR").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    Ok(super::net::download(uri, Some(&cache), &tmpdir)?)
}

fn build_in_worker(a: &Request) -> anyhow::Result<()> {
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
    if !(a.update && a.sandbox) {
        output::check_destination_dir(&dest)?;
    }
    // Kept until the build ends: an http(s) download the cache does not keep.
    let (source, _downloaded) = match source {
        Source::Remote(uri) => {
            let (path, tmp) = fetch_remote(a, &uri)?;
            let kind = image::detect(&path)?;
            (Source::Image(path, kind), tmp)
        }
        other => (other, None),
    };
    // A definition is read and checked before anything is made.
    let def = match &source {
        Source::Definition(path) => Some(parse_definition(a, path)?),
        _ => None,
    };
    let user = HostUser::current()?;
    let (ids, _emulation) = idplan::fakeroot(&user, a.ignore_subuid, a.helper_dirs.clone());
    if let Some(n) = &ids.notice {
        log::info!("{n}");
    }
    // As Apptainer's mksquashfs -all-root when the user is not root: the image stores no
    // subordinate or host ids, so it works as a base for anyone's build.
    let mut squash = squash_settings(a, user.uid != 0)?;
    let epoch = epoch(a.reproducible)?;
    squash.fixed_time = epoch.map(|e| e.clamp(0, u32::MAX as i64) as u32);
    let access = a.access.clone();
    let mut b = Build {
        ids,
        access,
        squash,
        epoch,
    };
    let mut bd = BuildDir::create(a.tmpdir.as_deref(), b.ids.clone())
        .context("cannot create the build directory")?;
    bd.keep = a.no_cleanup;
    if a.disable_cache {
        b.access.cache_root = Some(bd.path().join("blob-cache"));
    }
    let rootfs = bd.path().join("rootfs");

    let mut extra_json = vec![];
    let (deffile, metadata) = match source {
        Source::Image(path, kind) => {
            unpack_image(&b, &path, kind, &rootfs)?;
            // The /.singularity.d base, the image's own files kept (Apptainer's local
            // conveyor packer): a directory of a root filesystem becomes a container.
            let r = rootfs.clone();
            b.as_root(move || {
                baseenv::write(&r, false).map_err(|e| format!("cannot write /.singularity.d: {e}"))
            })?;
            sif_metadata_of(&path, kind)
        }
        Source::Definition(_) => {
            let def = def.context("the definition was not read")?;
            let text = build_definition(a, &b, &bd, &def, &rootfs)?;
            (Some(text), None)
        }
        Source::Oci(src) => {
            let image = b.access.fetch(&src)?;
            let meta = unpack_oci(&b, &image, &rootfs)?;
            extra_json.push((
                oci::metadata::OCI_CONFIG_DESCRIPTOR.to_string(),
                meta.oci_config_json,
            ));
            (Some(bootstrap_deffile(&src)), None)
        }
        Source::Remote(uri) => bail!("{uri}: the image was not downloaded"),
    };
    if a.update && a.sandbox {
        // Built in place; left the user's to delete, as a new sandbox.
        if b.squash.all_root {
            let d = dest.clone();
            b.as_root(move || {
                workdir::own_tree(&d)
                    .map_err(|e| format!("cannot give {} to the user: {e}", d.display()))
            })?;
        }
        return Ok(());
    }
    finish(a, &b, &bd, &rootfs, deffile, metadata, extra_json)
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

/// Reads the definition file `path` with the request's build arguments, and checks it can
/// be built (unused build arguments, bootstrap agents) before anything is made.
fn parse_definition(a: &Request, path: &Path) -> anyhow::Result<super::deffile::Definition> {
    use super::deffile::{self, BuildArgs as DefArgs, ParseOptions};
    let opts = ParseOptions {
        build_args: DefArgs::from_cli(&a.build_args, a.build_arg_file.as_deref())?,
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
    let n = def.stages.len();
    for (i, stage) in def.stages.iter().enumerate() {
        // --update builds the last stage without bootstrapping it.
        if !(a.update && i + 1 == n) {
            super::stage::check_agent(stage)?;
        }
    }
    Ok(def)
}

/// Builds every stage of a definition file; the last one ends in `rootfs`. Returns the
/// definition text (for the SIF's definition object).
fn build_definition(
    a: &Request,
    b: &Build,
    bd: &BuildDir,
    def: &super::deffile::Definition,
    rootfs: &Path,
) -> anyhow::Result<String> {
    use super::deffile::SectionFilter;
    use super::stage::{StageEnv, build_stage};
    let filter = SectionFilter::parse(&a.sections)?;
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
            binds: &a.binds,
            gpu_flags: &a.gpu_flags,
            cwd: &cwd,
            stages: &built,
            ignore_subuid: a.ignore_subuid,
            update: last && a.update,
        };
        if let Some(name) = &stage.name {
            log::info!("Building stage {name}");
        }
        build_stage(def, stage, &dir, &env)?;
        if let Some(name) = &stage.name {
            built.insert(name.clone(), dir.clone());
        }
    }
    Ok(def.text.clone())
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
fn finish(
    a: &Request,
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
        if b.squash.all_root {
            // Everything the user's: a sandbox the user can delete (rm -rf), as an
            // unprivileged Apptainer build leaves it.
            let r = rootfs.to_path_buf();
            b.as_root(move || {
                workdir::own_tree(&r)
                    .map_err(|e| format!("cannot give {} to the user: {e}", r.display()))
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
            // An image pulled for another platform (`pull --arch`) is labelled as such.
            arch: a
                .access
                .platform
                .as_ref()
                .and_then(|p| crate::image::sif::Arch::from_go_name(&p.architecture)),
        },
    )?;
    if workdir::interrupted() {
        bail!("build interrupted");
    }
    tmp.commit(dest)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_squash_threads_from_config_then_flags() {
        let mut r = Request::new("o.sif".into(), "d.def".into());
        assert_eq!(squash_settings(&r, false).expect("ok").threads, 0);
        r.squash_threads = 2;
        assert_eq!(squash_settings(&r, false).expect("ok").threads, 2);
        r.mksquashfs_args = Some("-processors 5".into());
        assert_eq!(squash_settings(&r, false).expect("ok").threads, 5);
    }
}
