//! `exec`, `run`, `shell`, `test`: resolve the image, gather host facts, plan, launch.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, bail};

use super::{Context, registry_access};
use crate::build::convert::Conversion;
use crate::cli::action::ActionArgs;
use crate::config::{Config, ContainerKind, SystemPaths};
use crate::image::ImageKind;
use crate::image::sif::SifImage;
use crate::image::source::OpenedImage;
use crate::launch::binds::BindSpec;
use crate::launch::identity::HostUser;
use crate::launch::idplan;
use crate::launch::mounter::Mounter;
use crate::launch::options::{HomeSpec, NoMount, Options, Unavailable};
use crate::launch::plan::{Action, IdMapPlan, MountSource, Plan, RootSource};
use crate::launch::planner::{self, HostFacts, LaunchPolicy, LiveHost, Request};
use crate::launch::process::{self, Launch, Outcome};
use crate::launch::sys::LinuxSys;
use crate::sign::ecl;
use crate::source;
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
    // The image is opened here, on the host, once: the same file is checked (policy, ECL)
    // and served. An OCI source (docker://...) runs from the SIF it converts to, kept in the
    // cache (or, with --disable-cache, removed when `_remove_after` drops after the run).
    let conv = Conversion {
        access: registry_access(&flags.registry),
        tmpdir: flags.tmpdir.clone(),
        ignore_subuid: flags.ignore_subuid,
    };
    let source::Opened {
        image: opened,
        remove_after: _remove_after,
    } = source::open(image_arg, &conv, !flags.disable_cache)?;
    enforce_image_policy(&cfg, opened.kind, &opened.path)?;
    let opened = ecl::enforce(&SystemPaths::detect()?, opened)?;
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
