//! `exec`, `run`, `shell`, `test`: resolve the image, gather host facts, plan, launch.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

use super::Context;
use crate::cli::action::ActionArgs;
use crate::config::{Config, ContainerKind, SystemPaths};
use crate::image::{self, ImageKind};
use crate::launch::identity::HostUser;
use crate::launch::mounter::Mounter;
use crate::launch::plan::{Action, IdMapPlan, MountSource, Plan, RootSource};
use crate::launch::planner::{self, HostFacts, LaunchPolicy, Request};
use crate::launch::process::{self, Launch, Outcome};
use crate::launch::sys::LinuxSys;

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
    let (image_display, kind, root) = resolve_image(image_arg)?;
    enforce_image_policy(&cfg, kind, &image_display)?;
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
        existing: vec![],
        files: vec![],
        probe_filesystem: true,
    };
    let mut env_files = Vec::new();
    for f in &flags.env_file {
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("cannot read --env-file {}", f.display()))?;
        env_files.push((f.display().to_string(), text));
    }
    let writable = flags.writable;
    let req = Request {
        action,
        args,
        flags,
        shell,
        image_display,
        root,
        env_files,
        ids: IdMapPlan::single(user.uid, user.gid),
    };
    let mut plan = planner::plan(&req, &LaunchPolicy::from(&cfg), &host)?;
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
        mounter: Box::new(Mounter { writable }),
        write_maps: Box::new(process::write_single_maps),
        explain_userns: Box::new(|e| {
            format!(
                "cannot create a user namespace: {e} (unprivileged user namespaces may be \
                 disabled: check the sysctls user.max_user_namespaces, \
                 kernel.unprivileged_userns_clone and kernel.apparmor_restrict_unprivileged_userns)"
            )
        }),
    })?;
    Ok(exit_status(outcome))
}

/// The image path as the container sees it, and its root filesystem.
fn resolve_image(arg: &str) -> anyhow::Result<(PathBuf, ImageKind, RootSource)> {
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
    let kind = image::detect(&abs)?;
    let root = match kind {
        ImageKind::Sandbox => RootSource::Directory { path: abs.clone() },
        ImageKind::Squashfs => RootSource::Squashfs {
            path: abs.clone(),
            offset: 0,
            size: std::fs::metadata(&abs)?.len(),
        },
        ImageKind::Ext => RootSource::Ext {
            path: abs.clone(),
            offset: 0,
            size: std::fs::metadata(&abs)?.len(),
        },
        ImageKind::Sif => bail!("{}: SIF images are not supported yet", abs.display()),
    };
    Ok((abs, kind, root))
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
