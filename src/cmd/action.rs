//! `exec`, `run`, `shell`, `test`: resolve the image, gather host facts, plan, launch.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, bail};

use super::Context;
use crate::cli::action::ActionArgs;
use crate::config::{Config, ContainerKind, EclConfig, SystemPaths};
use crate::image::sif::SifImage;
use crate::image::{self, ImageKind};
use crate::launch::binds::BindSpec;
use crate::launch::identity::HostUser;
use crate::launch::idplan;
use crate::launch::mounter::Mounter;
use crate::launch::options::{HomeSpec, NoMount, Options, Unavailable};
use crate::launch::plan::{Action, IdMapPlan, MountSource, Plan, RootSource};
use crate::launch::planner::{self, HostFacts, LaunchPolicy, LiveHost, Request};
use crate::launch::process::{self, Launch, Outcome};
use crate::launch::sys::LinuxSys;
use crate::sign::ecl::{self as sifr_ecl, Enforcer};
use crate::sign::keyring::GlobalKeyring;
use crate::sign::pgp::{KeySource, Keyring};
use crate::sign::pinned::PinnedFile;
use sifr_fuse::ImageSource;

/// Loads the system configuration (sifr.conf next to the install, or `-c FILE`).
pub fn load_config(ctx: &Context) -> anyhow::Result<Config> {
    let paths = SystemPaths::detect()?;
    let cfg = Config::load(&paths, ctx.global.config.as_deref())?;
    cfg.log_debug();
    Ok(cfg)
}

/// Refuses what the administrator forbids before anything is mounted.
fn enforce_image_policy(cfg: &Config, kind: ImageKind, path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    if !cfg.allow_user_ns {
        bail!(
            "sifr needs user namespaces, which the administrator disabled (sifr.conf: allow \
             user ns = no)"
        );
    }
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read image {}", path.display()))?;
    let canonical = std::fs::canonicalize(path)
        .with_context(|| format!("cannot resolve image path {}", path.display()))?;
    let ckind = match kind {
        ImageKind::Sif => ContainerKind::Sif,
        ImageKind::Squashfs => ContainerKind::Squashfs,
        ImageKind::Ext => ContainerKind::Extfs,
        ImageKind::Sandbox => ContainerKind::Sandbox,
    };
    cfg.allows_container_path(&canonical, ckind, meta.uid(), meta.gid())?;
    Ok(())
}

/// Runs an action and returns sifr's exit status.
pub fn run_action(
    ctx: &Context,
    action: Action,
    image_arg: &str,
    args: Vec<String>,
    flags: ActionArgs,
    shell: Option<String>,
) -> anyhow::Result<i32> {
    let cfg = load_config(ctx)?;
    // An OCI source (docker://...) runs from the SIF it converts to, kept in the cache (or
    // removed after the run with --disable-cache).
    let (converted, _remove_after) = if crate::build::oci::Source::is_oci_source(image_arg) {
        let source = super::pull::parse_uri(image_arg)?;
        let conv = super::pull::Conversion {
            access: flags.registry.clone(),
            tmpdir: flags.tmpdir.clone(),
            ignore_subuid: flags.ignore_subuid,
        };
        let (sif, tmp) = super::pull::converted_sif(ctx, &source, &conv, !flags.disable_cache)?;
        (Some(sif), tmp)
    } else {
        (None, None)
    };
    let image_arg = match &converted {
        Some(p) => p.to_str().context("the image cache path is not UTF-8")?,
        None => image_arg,
    };
    // The image is opened here, on the host, once: the same file is checked (policy, ECL)
    // and served.
    let opened = resolve_image(image_arg)?;
    enforce_image_policy(&cfg, opened.kind, &opened.path)?;
    let opened = enforce_ecl(&SystemPaths::detect()?, opened)?;
    let OpenedImage {
        path: image_display,
        root,
        sif,
        file,
        pinned,
        ..
    } = opened;
    // What the FUSE driver serves: the verified bytes when the list governs the image.
    let image: Option<Arc<dyn ImageSource>> = match pinned {
        Some(p) => Some(p),
        None => sif
            .and_then(SifImage::into_file)
            .or(file)
            .map(|f| Arc::new(f) as Arc<dyn ImageSource>),
    };
    let user = HostUser::current()?;
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    let host = HostFacts {
        user: user.clone(),
        cwd,
        env: std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect(),
        umask: current_umask(),
        mountpoints: host_mountpoints(),
    };
    let mut env_files = Vec::new();
    for f in &flags.env_file {
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("cannot read --env-file {}", f.display()))?;
        env_files.push((f.display().to_string(), text));
    }
    let writable = flags.writable;
    let (ids, emulation) = if flags.fakeroot {
        let (ids, em) = idplan::fakeroot(&user, flags.ignore_subuid);
        (ids, Some(em))
    } else {
        (IdMapPlan::single(user.uid, user.gid), None)
    };
    let opts = launch_options(&flags)?;
    let req = Request {
        action,
        args,
        opts,
        shell,
        image_display,
        root,
        env_files,
        ids,
        emulation,
    };
    let mut plan = planner::plan(&req, &LaunchPolicy::from(&cfg), &host, &LiveHost)?;
    for d in &plan.host_dirs {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(d)
            .with_context(|| format!("cannot create {} in the --workdir", d.display()))?;
    }
    canonicalize_sources(&mut plan);
    for w in &plan.warnings {
        log::warn!("{w}");
    }
    log::debug!("launch plan: {plan:#?}");
    let sys = LinuxSys::new();
    let outcome = process::run(Launch {
        plan,
        sys,
        user,
        mounter: Box::new(Mounter { writable, image }),
        write_maps: Box::new(idplan::write_maps),
        explain_userns: Box::new(idplan::explain_userns),
    })?;
    Ok(exit_status(outcome))
}

/// An image opened for a launch: its path as the container sees it, its kind, its root
/// filesystem, and the open file (as a loaded SIF for SIF images).
pub struct OpenedImage {
    pub path: PathBuf,
    pub kind: ImageKind,
    pub root: RootSource,
    pub sif: Option<SifImage>,
    pub file: Option<File>,
    /// Set once the execution control list verified the image: the file, read only through
    /// the digests taken while it was verified (see `sign::pinned`).
    pub pinned: Option<Arc<PinnedFile>>,
}

/// Translates the action flags into the launch's typed options: composite flags expanded
/// as Apptainer expands them (`--compat` implies `--containall`, which implies `--contain
/// --pid --ipc --cleanenv`), binds, `--home` and `--no-mount` parsed.
pub fn launch_options(f: &ActionArgs) -> anyhow::Result<Options> {
    let compat = f.compat;
    let containall = f.containall || compat;
    let mut binds = Vec::new();
    for spec in f.bind.iter().filter(|s| !s.trim().is_empty()) {
        binds.push(BindSpec::parse(spec)?);
    }
    for spec in &f.mount {
        binds.push(BindSpec::parse_mount(spec)?);
    }
    let uts = match (&f.hostname, f.uts) {
        (Some(h), _) => Some(h.clone()),
        (None, true) => Some(String::new()),
        (None, false) => None,
    };
    Ok(Options {
        contain: f.contain || containall,
        pid: (f.pid || containall) && !f.no_pid,
        init: !(f.no_init || compat),
        ipc: f.ipc || containall,
        uts,
        net: f.net,
        network: f.network.clone(),
        writable: f.writable,
        writable_tmpfs: f.writable_tmpfs || compat,
        binds,
        home: f.home.as_deref().map(HomeSpec::parse).transpose()?,
        no_home: f.no_home,
        workdir: f.workdir.clone(),
        scratch: f.scratch.clone(),
        no_mount: f
            .no_mount
            .iter()
            .map(|n| NoMount::parse(n))
            .collect::<Result<_, _>>()?,
        dns: f.dns.as_ref().map(|d| {
            d.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        }),
        pwd: f.pwd.as_ref().map(PathBuf::from),
        app: f.app.clone(),
        cleanenv: f.cleanenv || containall,
        env: f.env.clone(),
        no_env: f.no_env.clone(),
        evaluate: !(f.no_eval || compat),
        reset_umask: f.no_umask || compat,
        unavailable: Unavailable {
            keep_privs: f.keep_privs,
            allow_setuid: f.allow_setuid,
            oci: f.oci,
            apply_cgroups: f.apply_cgroups.is_some(),
            security: f.security.clone(),
            resource_limits: f.cpus.is_some() || f.memory.is_some() || f.pids_limit.is_some(),
            sharens: f.sharens,
        },
    })
}

/// Applies the execution control list (ecl.toml) to the opened image, before anything is
/// mounted: a SIF file is judged by the directory of the open file and by its signatures
/// checked with the global keyring; when the list is activated, other kinds of image are
/// refused (see `sign::ecl`). Every verb that starts a container from an image calls it
/// after [`resolve_image`] (an `instance start` verb must too).
///
/// When the list is activated, the SIF is reloaded through a [`PinnedFile`] before it is
/// checked, and the image returned serves only the bytes that verification read: its root
/// partition comes from the verified descriptors, and a file rewritten after the check fails
/// to read instead of running unsigned content.
pub fn enforce_ecl(paths: &SystemPaths, mut image: OpenedImage) -> anyhow::Result<OpenedImage> {
    let ecl = EclConfig::load(paths)?;
    if !ecl.value.activated {
        return Ok(image);
    }
    let global = GlobalKeyring::new(paths.clone());
    let mut keyring = Keyring::new();
    for k in global.public_keys()? {
        keyring.add(k, KeySource::Global);
    }
    let enforcer = Enforcer {
        ecl: &ecl.value,
        source: &ecl.source,
        global: &keyring,
        global_path: &global.path(),
    };
    match image.sif.take() {
        Some(img) => {
            let file = img
                .into_file()
                .ok_or_else(|| anyhow::anyhow!("{}: image not opened", image.path.display()))?;
            let dir = sifr_ecl::directory_of(&file).with_context(|| {
                format!(
                    "{}: cannot find the directory of the opened image for the execution control list",
                    image.path.display()
                )
            })?;
            let pinned = Arc::new(
                PinnedFile::new(file)
                    .with_context(|| format!("cannot read image {}", image.path.display()))?,
            );
            let verified = SifImage::from_shared(pinned.clone(), &image.path)?;
            enforcer.check_sif(&image.path, &verified, &dir)?;
            // The root as the verified descriptors place it, its header read while recording.
            image.root = sif_root_of(&verified, &image.path)?;
            pinned.freeze();
            image.pinned = Some(pinned);
        }
        None => {
            let kind = match image.kind {
                ImageKind::Sandbox => "sandbox directory",
                ImageKind::Squashfs => "squashfs",
                ImageKind::Ext => "ext2/3/4",
                ImageKind::Sif => "SIF",
            };
            enforcer.check_not_sif(&image.path, kind)?;
        }
    }
    Ok(image)
}

/// Opens the image once and finds its root filesystem.
pub fn resolve_image(arg: &str) -> anyhow::Result<OpenedImage> {
    if let Some((scheme, _)) = arg.split_once("://") {
        bail!(
            "{arg}: {scheme}:// images are not supported yet; pull the image to a local SIF \
             file first"
        );
    }
    let path = Path::new(arg);
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .context("cannot read the current directory")?
            .join(path)
    };
    let (kind, file) = image::open(&abs)?;
    let len = |f: &Option<File>| -> anyhow::Result<u64> {
        match f {
            Some(f) => Ok(f
                .metadata()
                .with_context(|| format!("cannot read image {}", abs.display()))?
                .len()),
            None => Ok(0),
        }
    };
    let (root, sif, file) = match kind {
        ImageKind::Sandbox => (RootSource::Directory { path: abs.clone() }, None, None),
        ImageKind::Squashfs => (
            RootSource::Squashfs {
                path: abs.clone(),
                offset: 0,
                size: len(&file)?,
            },
            None,
            file,
        ),
        ImageKind::Ext => (
            RootSource::Ext {
                path: abs.clone(),
                offset: 0,
                size: len(&file)?,
            },
            None,
            file,
        ),
        ImageKind::Sif => {
            let file =
                file.ok_or_else(|| anyhow::anyhow!("{}: image not opened", abs.display()))?;
            let img = SifImage::from_file(file, &abs)?;
            (sif_root_of(&img, &abs)?, Some(img), None)
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
pub fn sif_root(path: &Path) -> anyhow::Result<RootSource> {
    let img = SifImage::open(path)?;
    sif_root_of(&img, path)
}

/// The root filesystem of a loaded SIF: its primary system partition (Apptainer's rules).
pub fn sif_root_of(img: &SifImage, path: &Path) -> anyhow::Result<RootSource> {
    use crate::image::sif::{Arch, FsType};
    let p = img.primary_partition()?.ok_or_else(|| {
        anyhow::anyhow!(
            "{}: the SIF has no primary system partition, so there is nothing to run \
             (a data container?)",
            path.display()
        )
    })?;
    img.check_partition_header(&p)?;
    if p.arch != Arch::Unknown && p.arch != Arch::host() {
        bail!(
            "{}: the image is built for {}, this machine is {} (no emulation is set up)",
            path.display(),
            p.arch.go_name(),
            Arch::host().go_name()
        );
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
        FsType::EncryptedSquashfs => bail!(
            "{}: reading a root-encrypted SIF requires root or a setuid installation",
            path.display()
        ),
        other => bail!(
            "{}: the primary partition is {}, which sifr cannot run",
            path.display(),
            other.label()
        ),
    }
}

/// Replaces every host path the plan mounts by its canonical form: the supervisor reaches
/// host paths under its own root, where an absolute symlink would resolve wrongly.
fn canonicalize_sources(plan: &mut Plan) {
    for m in &mut plan.mounts {
        if let MountSource::Host(p) = &mut m.source
            && let Ok(c) = std::fs::canonicalize(&*p)
        {
            *p = c;
        }
    }
    if let RootSource::Directory { path } = &mut plan.root
        && let Ok(c) = std::fs::canonicalize(&*path)
    {
        *path = c;
    }
}

fn current_umask() -> u32 {
    use nix::sys::stat::{Mode, umask};
    let old = umask(Mode::from_bits_truncate(0o022));
    umask(old);
    old.bits()
}

fn host_mountpoints() -> Vec<PathBuf> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|s| {
            s.lines()
                .filter_map(|l| l.split(' ').nth(4))
                .map(PathBuf::from)
                .collect()
        })
        .unwrap_or_default()
}

/// sifr's exit status for the payload's outcome. A payload killed by signal N makes sifr
/// exit with 128+N after re-raising N on itself, so a calling shell sees the same death.
pub fn exit_status(outcome: Outcome) -> i32 {
    match outcome {
        Outcome::Exited(code) => code,
        Outcome::Signaled(sig) => {
            if let Ok(s) = nix::sys::signal::Signal::try_from(sig) {
                use nix::sys::signal::{SigHandler, SigSet, SigmaskHow, sigprocmask};
                // Core dumps would be sifr's, not the payload's: only re-raise signals whose
                // default action does not dump core.
                let dumps = matches!(
                    s,
                    nix::sys::signal::Signal::SIGQUIT
                        | nix::sys::signal::Signal::SIGILL
                        | nix::sys::signal::Signal::SIGABRT
                        | nix::sys::signal::Signal::SIGFPE
                        | nix::sys::signal::Signal::SIGSEGV
                        | nix::sys::signal::Signal::SIGBUS
                        | nix::sys::signal::Signal::SIGSYS
                        | nix::sys::signal::Signal::SIGTRAP
                        | nix::sys::signal::Signal::SIGXCPU
                        | nix::sys::signal::Signal::SIGXFSZ
                );
                if !dumps {
                    // SAFETY: restoring the default action installs no handler code.
                    let _ = unsafe { nix::sys::signal::signal(s, SigHandler::SigDfl) };
                    let mut set = SigSet::empty();
                    set.add(s);
                    let _ = sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&set), None);
                    let _ = nix::sys::signal::raise(s);
                }
            }
            128 + sig
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_composite_flags_expand_as_apptainer() {
        let o = launch_options(&ActionArgs {
            containall: true,
            ..Default::default()
        })
        .expect("ok");
        assert!(o.contain && o.pid && o.ipc && o.cleanenv && o.init && o.evaluate);
        assert!(!o.writable_tmpfs && !o.reset_umask);
        let o = launch_options(&ActionArgs {
            compat: true,
            no_pid: true,
            ..Default::default()
        })
        .expect("ok");
        assert!(o.contain && o.ipc && o.cleanenv && o.writable_tmpfs && o.reset_umask);
        assert!(
            !o.pid && !o.init && !o.evaluate,
            "--no-pid wins over --compat"
        );
        let o = launch_options(&ActionArgs::default()).expect("ok");
        assert_eq!(o, Options::default());
    }

    #[test]
    fn test_flags_are_parsed_into_typed_values() {
        let o = launch_options(&ActionArgs {
            bind: vec!["/a:/b:ro".into(), " ".into()],
            mount: vec!["type=bind,src=/c,dst=/d".into()],
            no_mount: vec!["tmp".into(), "/etc/hosts".into()],
            home: Some("/h:/home/x".into()),
            dns: Some("1.1.1.1, ,8.8.8.8".into()),
            hostname: Some("box".into()),
            cpus: Some("2".into()),
            ..Default::default()
        })
        .expect("ok");
        let dests: Vec<_> = o.binds.iter().map(|b| b.destination.clone()).collect();
        assert_eq!(dests, [PathBuf::from("/b"), PathBuf::from("/d")]);
        assert!(o.binds[0].readonly);
        assert_eq!(
            o.no_mount,
            [NoMount::Tmp, NoMount::Dest("/etc/hosts".into())]
        );
        assert_eq!(o.home.expect("home").dest, PathBuf::from("/home/x"));
        assert_eq!(o.dns, Some(vec!["1.1.1.1".into(), "8.8.8.8".into()]));
        assert_eq!(o.uts.as_deref(), Some("box"));
        assert!(o.unavailable.resource_limits);
        for bad in [
            ActionArgs {
                no_mount: vec!["bogus".into()],
                ..Default::default()
            },
            ActionArgs {
                bind: vec!["/a:rel".into()],
                ..Default::default()
            },
            ActionArgs {
                home: Some("/h:rel".into()),
                ..Default::default()
            },
        ] {
            assert!(launch_options(&bad).is_err(), "{bad:?}");
        }
    }
}
