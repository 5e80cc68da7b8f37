//! `exec`, `run`, `shell`, `test`: the flags become typed launch options; the image is
//! opened, checked against the policy and the execution control list, and started.

use std::path::PathBuf;

use anyhow::Context as _;

use super::{Context, registry_access};
use crate::build::convert::Conversion;
use crate::cli::action::ActionArgs;
use crate::config::{CapabilityConfig, Config, SystemPaths};
use crate::launch::binds::{BindError, BindSpec};
use crate::launch::capabilities::CapOptions;
use crate::launch::cgroups::{self, ResourceFlags};
use crate::launch::gpu::{self, GpuOptions};
use crate::launch::identity::HostUser;
use crate::launch::idplan;
use crate::launch::mounter::Mounter;
use crate::launch::options::{HomeSpec, NoMount, Options, OverlaySpec, Unavailable};
use crate::launch::ovlfile::overlay_partitions;
use crate::launch::plan::{Action, IdMapPlan};
use crate::launch::planner::{LaunchPolicy, Request};
use crate::launch::seccomp::Emulation;
use crate::launch::start::start;
use crate::sign::ecl;
use crate::source;

/// Loads the system configuration (sifr.conf next to the install, or `-c FILE`).
pub fn load_config(ctx: &Context) -> anyhow::Result<Config> {
    let paths = SystemPaths::detect()?;
    let cfg = Config::load(&paths, ctx.global.config.as_deref())?;
    cfg.log_debug();
    Ok(cfg)
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
    if let Some(name) = image_arg.strip_prefix("instance://") {
        return super::instance::join(ctx, action, name, args, flags, shell);
    }
    let p = prepare(ctx, action, image_arg, args, &flags, shell, None)?;
    let outcome = start(&p.req, &p.policy, p.user, p.mounter)?;
    drop(p.remove_after);
    Ok(outcome.exit_status())
}

/// A start, ready to launch: the request, the policy, the caller, the opened image.
pub struct Prepared {
    pub req: Request,
    pub policy: LaunchPolicy,
    pub user: HostUser,
    pub mounter: Mounter,
    /// A converted OCI image removed after the run (`--disable-cache`).
    pub remove_after: Option<tempfile::TempPath>,
}

/// Opens and checks the image and translates the flags: everything a start needs.
/// `instance` names the instance being started (`instance start|run`).
pub fn prepare(
    ctx: &Context,
    action: Action,
    image_arg: &str,
    args: Vec<String>,
    flags: &ActionArgs,
    shell: Option<String>,
    instance: Option<&str>,
) -> anyhow::Result<Prepared> {
    let cfg = load_config(ctx)?;
    // The image is opened here, on the host, once: the same file is checked (policy, ECL)
    // and served. An OCI source (docker://...) runs from the SIF it converts to, kept in the
    // cache (or, with --disable-cache, removed when `_remove_after` drops after the run).
    let mut conv = Conversion {
        access: registry_access(&flags.registry),
        tmpdir: flags.tmpdir.clone(),
        ignore_subuid: flags.ignore_subuid,
        helper_dirs: Some(cfg.setuid_helper_dirs()),
    };
    // Asked only for a registry image (a build's %post runs `exec` with the builder's
    // environment, on a local image).
    if image_arg.starts_with("docker://") {
        super::docker_login(&flags.registry, &mut conv.access)?;
    }
    let source::Opened {
        image: opened,
        remove_after,
    } = source::open(image_arg, &conv, !flags.disable_cache)?;
    source::check_policy(&cfg, &opened)?;
    let opened = ecl::enforce(&SystemPaths::detect()?, opened)?;
    let user = HostUser::current()?;
    let (ids, emulation) = if flags.fakeroot {
        let (ids, em) = idplan::fakeroot(&user, flags.ignore_subuid, cfg.setuid_helper_dirs());
        (ids, Some(em))
    } else {
        (IdMapPlan::single(user.uid, user.gid), None)
    };
    // As Apptainer's prepareUserCaps (every start but its root-mapped one, which runs as
    // uid 0): capability.json is read, and a broken one stops the start; without setuid it
    // grants and limits nothing (launch::capabilities).
    if emulation != Some(Emulation::RootMapped) {
        CapabilityConfig::load(&SystemPaths::detect()?)?;
    }
    let mut opts = launch_options(flags)?;
    // A converted image removed after the run (--disable-cache) is never run again: no
    // kept mount for it.
    opts.fresh_mount |= remove_after.is_some();
    if let Some(name) = instance {
        // Instances always have a PID namespace (Apptainer's), and an init payload.
        opts.pid = true;
        opts.instance = Some(name.to_string());
    }
    let policy = LaunchPolicy::from(&cfg);
    // What the host has for the GPU set-ups asked for (the planner decides what to bind).
    let gpu = gpu::discover(
        &gpu::wanted(&opts.gpu, &policy.gpu),
        &cfg,
        &SystemPaths::detect()?,
        std::env::var_os("PATH").as_deref(),
    );
    // The first `seccomp:` of --security, read now (an empty one is refused by the planner).
    let seccomp = match crate::launch::planner::seccomp_param(&opts.unavailable.security) {
        Some(name) if !name.is_empty() => Some(
            crate::config::SeccompProfile::resolve(name, &SystemPaths::detect()?)
                .with_context(|| format!("--security seccomp:{name}"))?,
        ),
        _ => None,
    };
    let req = Request {
        seccomp,
        action,
        args,
        opts,
        shell,
        image_display: opened.path.clone(),
        root: opened.root.clone(),
        env_files: read_env_files(&flags.env_file)?,
        ids,
        emulation,
        sif_overlays: opened
            .sif
            .as_ref()
            .map(|img| overlay_partitions(img, &opened.path))
            .transpose()?,
        gpu,
    };
    let pinned = opened.pinned.is_some();
    let mounter = Mounter {
        pinned,
        // --writable on a SIF writes into its overlay partition, not the image.
        writable: flags.writable && opened.sif.is_none(),
        image: opened.into_served(),
        overlay_files: Vec::new(),
        kept_tree: None,
    };
    Ok(Prepared {
        req,
        policy,
        user,
        mounter,
        remove_after,
    })
}

/// The user binds, as Apptainer collects them: `-B` values, then the `BIND` and `BINDPATH`
/// variables appended (`SIFR_`, `APPTAINER_` or `SINGULARITY_`, normalised by
/// `compat`), then `--mount` values and the `MOUNT` variable. `env` reads a control
/// variable by its suffix.
fn user_binds(
    f: &ActionArgs,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<BindSpec>, BindError> {
    let mut binds = Vec::new();
    let bind_values = f
        .bind
        .iter()
        .cloned()
        .chain(env("BIND"))
        .chain(env("BINDPATH"));
    for value in bind_values {
        binds.extend(BindSpec::parse_list(&value)?);
    }
    let mount_values = f.mount.iter().cloned().chain(env("MOUNT"));
    for value in mount_values.filter(|v| !v.trim().is_empty()) {
        binds.extend(BindSpec::parse_mount(&value)?);
    }
    Ok(binds)
}

/// The `--env-file` files, read: (name, contents).
fn read_env_files(files: &[PathBuf]) -> anyhow::Result<Vec<(String, String)>> {
    files
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(f)
                .with_context(|| format!("cannot read --env-file {}", f.display()))?;
            Ok((f.display().to_string(), text))
        })
        .collect()
}

/// Translates the action flags into the launch's typed options: composite flags expanded
/// as Apptainer expands them (`--compat` implies `--containall`, which implies `--contain
/// --pid --ipc --cleanenv`), binds, `--home` and `--no-mount` parsed.
/// The resource limits of the cgroup flags or `--apply-cgroups` (Apptainer's parsing).
fn resource_limits(f: &ActionArgs) -> anyhow::Result<Option<crate::config::CgroupsConfig>> {
    let flags = ResourceFlags {
        memory: f.memory.clone(),
        memory_reservation: f.memory_reservation.clone(),
        memory_swap: f.memory_swap.clone(),
        oom_kill_disable: f.oom_kill_disable,
        cpus: f.cpus.clone(),
        cpu_shares: f.cpu_shares.clone(),
        cpuset_cpus: f.cpuset_cpus.clone(),
        cpuset_mems: f.cpuset_mems.clone(),
        pids_limit: f.pids_limit.clone(),
        blkio_weight: f.blkio_weight.clone(),
        blkio_weight_device: f.blkio_weight_device.clone(),
        apply_cgroups: f.apply_cgroups.clone(),
    };
    // Go's runtime.NumCPU: the CPUs this process may run on.
    let ncpus = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0))
        .map(|set| {
            (0..nix::sched::CpuSet::count())
                .filter(|i| set.is_set(*i).unwrap_or(false))
                .count() as u64
        })
        .unwrap_or(1);
    Ok(cgroups::limits(&flags, ncpus, &cgroups::device_numbers)?)
}

pub fn launch_options(f: &ActionArgs) -> anyhow::Result<Options> {
    let compat = f.compat;
    let containall = f.containall || compat;
    let binds = user_binds(f, &crate::compat::control_var)?;
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
        network_args: f.network_args.clone(),
        writable: f.writable,
        writable_tmpfs: f.writable_tmpfs || compat,
        fresh_mount: f.fresh_mount,
        binds,
        home: f.home.as_deref().map(HomeSpec::parse).transpose()?,
        no_home: f.no_home,
        workdir: f.workdir.clone(),
        scratch: f.scratch.clone(),
        no_mount: f
            .no_mount
            .iter()
            .filter(|n| !n.trim().is_empty())
            .map(|n| NoMount::parse(n))
            .collect(),
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
        overlays: f
            .overlay
            .iter()
            .filter(|s| !s.trim().is_empty())
            .map(|s| OverlaySpec::parse(s))
            .collect(),
        gpu: GpuOptions {
            nv: f.nv,
            nvccli: f.nvccli,
            rocm: f.rocm,
            no_nv: f.no_nv,
            no_rocm: f.no_rocm,
            contain_libs: f
                .contain_libs
                .iter()
                .filter(|p| !p.as_os_str().is_empty())
                .cloned()
                .collect(),
        },
        resources: resource_limits(f)?,
        caps: CapOptions {
            add: f.add_caps.clone(),
            drop: f.drop_caps.clone(),
            no_privs: f.no_privs,
            keep_privs: f.keep_privs,
        },
        unavailable: Unavailable {
            allow_setuid: f.allow_setuid,
            oci: f.oci,
            security: f.security.clone(),
            sharens: f.sharens,
            unsquash: f.unsquash,
            ignore_userns: f.ignore_userns,
            other: [
                (f.compat32, "--compat32"),
                (f.intel_hpu, "--intel-hpu"),
                (!f.device.is_empty(), "--device"),
                (!f.cdi_dirs.is_empty(), "--cdi-dirs"),
                (f.boot, "--boot"),
                (!f.fusemount.is_empty(), "--fusemount"),
                (f.dmtcp_launch.is_some(), "--dmtcp-launch"),
                (f.dmtcp_restart.is_some(), "--dmtcp-restart"),
                (f.underlay, "--underlay"),
                (f.runscript_timeout.is_some(), "--runscript-timeout"),
                (f.netns_path.is_some(), "--netns-path"),
            ]
            .into_iter()
            .filter_map(|(given, flag)| given.then_some(flag))
            .collect(),
        },
        instance: None,
        joining: false,
    })
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
            no_mount: vec![
                "tmp".into(),
                "/etc/hosts".into(),
                "bogus".into(),
                " ".into(),
            ],
            home: Some("/h:/home/x".into()),
            dns: Some("1.1.1.1, ,8.8.8.8".into()),
            hostname: Some("box".into()),
            cpus: Some("1".into()),
            ..Default::default()
        })
        .expect("ok");
        let dests: Vec<_> = o.binds.iter().map(|b| b.destination.clone()).collect();
        assert_eq!(dests, [PathBuf::from("/b"), PathBuf::from("/d")]);
        assert!(o.binds[0].readonly);
        assert_eq!(
            o.no_mount,
            [
                NoMount::Tmp,
                NoMount::Dest("/etc/hosts".into()),
                NoMount::Unknown("bogus".into())
            ]
        );
        assert_eq!(o.home.expect("home").dest, PathBuf::from("/home/x"));
        assert_eq!(o.dns, Some(vec!["1.1.1.1".into(), "8.8.8.8".into()]));
        assert_eq!(o.uts.as_deref(), Some("box"));
        // --cpus 1: a quota of 100 ms per 100 ms period.
        let cpu = o.resources.and_then(|r| r.cpu).expect("--cpus");
        assert_eq!((cpu.quota, cpu.period), (Some(100_000), Some(100_000)));
        for bad in [
            ActionArgs {
                bind: vec!["/a:rel".into()],
                ..Default::default()
            },
            ActionArgs {
                mount: vec!["type=tmpfs,dst=/x".into()],
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

    /// The bind variables are appended to -B (never replaced by it), in Apptainer's order;
    /// `--mount` values follow, then the MOUNT variable; lists and escapes as Apptainer's.
    #[test]
    fn test_bind_variables_append_to_flags() {
        let f = ActionArgs {
            bind: vec!["/a:/b:ro,/c\\,d".into()],
            mount: vec!["src=/m,dst=/n".into()],
            ..Default::default()
        };
        let env = |k: &str| match k {
            "BIND" => Some("/e:/f".to_string()),
            "BINDPATH" => Some(" /g ".to_string()),
            "MOUNT" => Some("src=/h,dst=/i\nsrc=/j,dst=/k".to_string()),
            _ => None,
        };
        let b = user_binds(&f, &env).expect("ok");
        let pairs: Vec<_> = b
            .iter()
            .map(|b| {
                (
                    b.source.display().to_string(),
                    b.destination.display().to_string(),
                )
            })
            .collect();
        let want = [
            ("/a", "/b"),
            ("/c,d", "/c,d"),
            ("/e", "/f"),
            ("/g", "/g"),
            ("/m", "/n"),
            ("/h", "/i"),
            ("/j", "/k"),
        ];
        assert_eq!(pairs, want.map(|(s, d)| (s.to_string(), d.to_string())));
        assert!(b[0].readonly && !b[1].readonly);
        // Nothing set: the flags alone; a bad variable is an error like a bad flag.
        assert_eq!(user_binds(&f, &|_| None).expect("ok").len(), 3);
        assert!(user_binds(&f, &|k| (k == "BIND").then(|| "/x:rel".to_string())).is_err());
    }
}
