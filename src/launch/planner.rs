//! Turns the typed options, the configuration, the image and the host into a [`Plan`].
//!
//! Pure: no system calls. What it needs to know of the host comes in as values
//! ([`HostFacts`]) and through a small question trait ([`HostProbe`]: does this path exist,
//! is it a directory), so every rule below is unit tested against a described host.
//!
//! [`plan`] reads top to bottom like the start it describes (bubblewrap's `setup_newroot`):
//! refusals, namespaces, the root layer, then the mounts in Apptainer's order
//! (apptainer-contract.md §4.4): kernel filesystems, /dev, host filesystems, configured
//! binds, home, tmp, scratch, generated files, user binds, the working directory; then the
//! payload and its environment. Each step is a function of its own. User binds come after
//! every system mount, as in Apptainer (its `userbinds` mount tag), so that a user's bind on
//! /tmp, /var/tmp, a scratch directory or /etc/passwd is what the job sees.

use std::path::{Path, PathBuf};

use super::binds::{BindError, BindSpec};
use super::capabilities::{self, CapError, CapMask};
use super::environ::{self, EnvError, EnvInputs};
use super::gpu::{self, GpuError, GpuHost, GpuPolicy};
pub use super::host::{HostFacts, HostProbe, LiveHost};
use super::network::{self, NetworkError, NetworkType};
use super::options::{NoMount, Options, Unavailable};
use super::plan::*;
use super::profile::{self, ProfileError, ProfileFilter};
use super::seccomp::Emulation;
use crate::config::directives::{EnableOverlay, EnableUnderlay, MemoryFsType, MountDev};
use crate::config::seccomp::SeccompProfile;
use crate::config::{Config, Loaded};

/// The part of the configuration the planner needs (see `config`), with Apptainer's
/// defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchPolicy {
    pub mount_proc: bool,
    pub mount_sys: bool,
    pub mount_dev: MountDev,
    pub mount_devpts: bool,
    pub mount_home: bool,
    pub mount_tmp: bool,
    pub mount_hostfs: bool,
    /// `bind path` entries.
    pub bind_paths: Vec<BindSpec>,
    pub user_bind_control: bool,
    pub config_passwd: bool,
    pub config_group: bool,
    pub config_resolv_conf: bool,
    pub enable_overlay: EnableOverlay,
    /// `enable underlay`: with overlays disabled, whether missing mount points may still be
    /// created (Apptainer's underlay; sifr's read-only session layer).
    pub enable_underlay: EnableUnderlay,
    /// `mount slave`: host mounts made later propagate into the container.
    pub mount_slave: bool,
    pub sessiondir_max_size_mb: u64,
    /// `kept mount idle timeout`: seconds (0: no kept image mounts).
    pub kept_mount_idle_secs: u64,
    pub memory_fs_type: MemoryFs,
    pub allow_pid_ns: bool,
    pub allow_ipc_ns: bool,
    pub allow_uts_ns: bool,
    pub allow_net_ns: bool,
    /// pasta, for `--network pasta`: its path, or where it was looked for.
    pub pasta: Result<PathBuf, String>,
    /// `allow user ns`: sifr cannot run a container without one.
    pub allow_user_ns: bool,
    /// The overlay helpers, found in `binary path` (`None`: not installed).
    pub fuse2fs: Option<PathBuf>,
    pub fuse_overlayfs: Option<PathBuf>,
    /// `always use nv`, `always use rocm`, `use nvidia-container-cli`.
    pub gpu: GpuPolicy,
}

impl Default for LaunchPolicy {
    /// Apptainer's defaults, as sifr's built-in configuration has them.
    fn default() -> Self {
        LaunchPolicy::from(&Config::default())
    }
}

impl From<&Config> for LaunchPolicy {
    fn from(c: &Config) -> LaunchPolicy {
        LaunchPolicy {
            mount_proc: c.mount_proc,
            mount_sys: c.mount_sys,
            mount_dev: c.mount_dev,
            mount_devpts: c.mount_devpts,
            mount_home: c.mount_home,
            mount_tmp: c.mount_tmp,
            mount_hostfs: c.mount_hostfs,
            bind_paths: c
                .bind_path
                .iter()
                .map(|b| BindSpec {
                    source: b.source.clone(),
                    destination: b.dest.clone(),
                    readonly: b.read_only,
                    nonested: false,
                })
                .collect(),
            user_bind_control: c.user_bind_control,
            config_passwd: c.config_passwd,
            config_group: c.config_group,
            config_resolv_conf: c.config_resolv_conf,
            enable_overlay: c.enable_overlay,
            enable_underlay: c.enable_underlay,
            mount_slave: c.mount_slave,
            sessiondir_max_size_mb: c.sessiondir_max_size,
            kept_mount_idle_secs: c.kept_mount_idle_timeout,
            memory_fs_type: match c.memory_fs_type {
                MemoryFsType::Ramfs => MemoryFs::Ramfs,
                _ => MemoryFs::Tmpfs,
            },
            allow_pid_ns: c.allow_pid_ns,
            allow_ipc_ns: c.allow_ipc_ns,
            allow_uts_ns: c.allow_uts_ns,
            allow_net_ns: true,
            pasta: c.find_binary("pasta").map_err(|e| match e {
                crate::config::BinaryError::NotFound { searched, .. } => searched,
                other => other.to_string(),
            }),
            allow_user_ns: c.allow_user_ns,
            fuse2fs: c.find_binary("fuse2fs").ok(),
            fuse_overlayfs: c.find_binary("fuse-overlayfs").ok(),
            gpu: GpuPolicy::from(c),
        }
    }
}

/// What the user asked for, with what the caller resolved: the opened image's root, the
/// `--env-file` contents and the identity.
#[derive(Debug, Clone)]
pub struct Request {
    pub action: Action,
    pub args: Vec<String>,
    pub opts: Options,
    pub shell: Option<String>,
    /// The image as named on the command line.
    pub image_display: PathBuf,
    pub root: RootSource,
    /// `--env-file` contents, read by the caller: (path, contents).
    pub env_files: Vec<(String, String)>,
    pub ids: IdMapPlan,
    /// Root emulation for fakeroot (`None` without `--fakeroot`).
    pub emulation: Option<Emulation>,
    /// The image's own ext3 overlay partitions when it is a SIF (`None`: not a SIF).
    pub sif_overlays: Option<Vec<ImageLayer>>,
    /// What the host has for the GPU set-ups asked for (`gpu::discover`).
    pub gpu: GpuHost,
    /// The `--security seccomp:` profile, read by the caller (the first `seccomp:` option,
    /// as Apptainer takes it).
    pub seccomp: Option<Loaded<SeccompProfile>>,
}

/// A request that cannot be planned. Each message says what to change.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error(transparent)]
    Env(#[from] EnvError),
    #[error(transparent)]
    Gpu(#[from] GpuError),
    #[error(transparent)]
    Cgroup(#[from] super::cgroups::CgroupError),
    #[error(transparent)]
    Caps(#[from] CapError),
    #[error("bind source {0} does not exist on the host (check the path given to -B/--bind)")]
    MissingBindSource(PathBuf),
    #[error("{flag} is not supported by sifr: {why}")]
    Unsupported {
        flag: &'static str,
        why: &'static str,
    },
    #[error(transparent)]
    Seccomp(#[from] ProfileError),
    #[error("--security {spec} is not supported by sifr: {why}")]
    Security { spec: String, why: &'static str },
    #[error("{flag} requires root privileges (sifr never runs with them)")]
    RootOnly { flag: &'static str },
    #[error(
        "--writable needs a sandbox directory; {0} is an image file (use --writable-tmpfs for a throw-away writable layer)"
    )]
    WritableImage(PathBuf),
    #[error(
        "{0} requires 'enable overlay', but the administrator set it to 'no' (sifr.conf: enable overlay = no); drop {0}"
    )]
    OverlayDisabled(&'static str),
    #[error("cannot use --overlay with --writable (drop one of them)")]
    OverlayWithWritable,
    #[error(transparent)]
    OverlayFile(#[from] super::ovlfile::OverlayFileError),
    #[error(
        "{} needs {name}, which was not found (install it: Debian package {name}; or name \
         its directory in 'binary path' in sifr.conf)",
        path.display()
    )]
    OverlayHelper { path: PathBuf, name: &'static str },
    #[error("no SIF writable overlay partition found in {}", .0.display())]
    NoSifOverlay(PathBuf),
    #[error(
        "--overlay {}: no such directory (create it, or check the path)",
        .0.display()
    )]
    OverlayMissing(PathBuf),
    #[error(
        "you can't specify more than one writable overlay: {} is already the writable one; use '--overlay {}:ro'",
        .0.display(), .1.display()
    )]
    OverlayTwoWritable(PathBuf, PathBuf),
    #[error(
        "you can't specify --writable-tmpfs with a writable overlay ({}); drop one, or use '--overlay {}:ro'",
        .0.display(), .0.display()
    )]
    OverlayWithWritableTmpfs(PathBuf),
    #[error(
        "sifr needs user namespaces, which the administrator disabled (sifr.conf: allow user ns = no)"
    )]
    UserNsDisabled,
    #[error("the {ns} namespace is disabled by the administrator (sifr.conf: allow {ns} ns = no)")]
    NamespaceDisabled { ns: &'static str },
    #[error(transparent)]
    Network(#[from] NetworkError),
}

/// Builds the plan.
pub fn plan(
    req: &Request,
    policy: &LaunchPolicy,
    host: &HostFacts,
    probe: &dyn HostProbe,
) -> Result<Plan, PlanError> {
    let o = &req.opts;
    let fakeroot_uid0 = req.ids.uid == 0;

    // 1. What cannot be honoured rootless, and the payload's capabilities.
    let mut warnings = refuse_unavailable(&o.unavailable)?;
    let run_as = run_as(req, &o.unavailable.security)?;
    // As Apptainer: a payload given other ids starts with no capability ("no" instead of
    // "full"); --add-caps still adds.
    let caps = capabilities::compute(
        &o.caps,
        fakeroot_uid0 && run_as.is_none(),
        req.emulation == Some(Emulation::RootMapped),
    )?;
    warnings.extend(o.no_mount.iter().filter_map(|n| match n {
        NoMount::Unknown(word) => Some(format!("Ignoring unknown mount type '{word}'")),
        _ => None,
    }));
    // 2. Namespaces, and the root with its layer.
    let namespaces = namespaces(o, policy, fakeroot_uid0 || !caps.is_empty(), &mut warnings)?;
    let pasta = pasta(o, policy, namespaces.net)?;
    let overlay = overlays(o, policy, req, probe, &mut warnings)?;
    let mut layer = root_layer(o, policy, req)?;
    // A writable image, or `enable overlay = driver` with a writable directory: the
    // supervisor stacks the layers with fuse-overlayfs (Apptainer's image driver). Driver
    // mode with read-only layers only keeps the kernel's read-only session layer.
    if overlay.writable_image().is_some()
        || (policy.enable_overlay == EnableOverlay::Driver && overlay.upper.is_some())
    {
        layer = RootLayer::Fuse;
    } else if overlay.upper.is_some() {
        layer = RootLayer::Persistent;
    }
    // 3. Mounts, in Apptainer's order.
    let mut mounts = Vec::new();
    mounts.extend(kernel_filesystems(o, policy, namespaces.pid));
    let binds = device_binds(o, policy, host, probe, &mut warnings);
    mounts.extend(dev(o, policy, binds.host_dev));
    mounts.extend(gpu::devices(
        &req.gpu,
        minimal_dev(o, policy) && !binds.host_dev,
        probe,
    ));
    mounts.extend(binds.devices.iter().map(|b| MountOp {
        allow_dev: true,
        why: WHY_DEVICE,
        ..user_bind_mount(b, probe)
    }));
    mounts.extend(host_filesystems(o, policy, host));
    mounts.extend(configured_binds(o, policy, probe));
    let home = home(o, policy, host, probe, fakeroot_uid0, &mut warnings)?;
    mounts.extend(home.mount.clone());
    mounts.extend(temporary_dirs(o, policy, probe, &mut warnings));
    mounts.extend(scratch_dirs(o, policy, &mut warnings)?);
    mounts.extend(generated_files(
        o,
        policy,
        req,
        &home.dest,
        &namespaces,
        pasta.is_some(),
        probe,
    ));
    let binds = user_binds(binds.rest, policy, probe, &mut warnings)?;
    mounts.extend(binds.iter().map(|b| user_bind_mount(b, probe)));
    let mut mounts = gpu_files(o, policy, req, host, probe, mounts, &mut warnings)?;
    mounts.extend(working_dir(o, policy, host, probe, &mounts, &mut warnings));
    // 4. The payload and its environment.
    let process = payload(req, host, &o.binds, &home.dest, &mut warnings)?;
    if let Some(n) = &req.ids.notice {
        warnings.insert(0, n.clone());
    }
    let host_dirs = workdir_dirs(o, &mounts);
    // 5. Resource limits: the cgroup v2 files to write (carried out in `start`).
    let cgroup = o.resources.as_ref().map(super::cgroups::plan).transpose()?;
    if let Some(cg) = &cgroup {
        warnings.extend(cg.warnings.iter().cloned());
    }
    let kept = kept_mount(req, policy, pasta.is_some());
    Ok(Plan {
        image_display: req.image_display.clone(),
        root: req.root.clone(),
        layer,
        overlay,
        writable: o.writable,
        ids: req.ids.clone(),
        namespaces,
        pasta,
        session: SessionPlan {
            size_mb: policy.sessiondir_max_size_mb,
            fstype: policy.memory_fs_type,
        },
        mounts,
        process,
        security: SecurityPlan {
            no_new_privs: true,
            caps,
            emulate_root: req.emulation == Some(Emulation::RootMapped),
            mknod_noop: req.emulation == Some(Emulation::MknodOnly),
            profile: seccomp_profile(req, host, caps == CapMask::all())?,
            run_as,
        },
        host_dirs,
        cgroup,
        kept,
        warnings,
    })
}

/// Whether the image's FUSE mount is kept for later runs (and this run uses a kept one):
/// images served by FUSE, read-only, with kept mounts on in sifr.conf and not turned off
/// for this run. A sandbox directory needs no mount; `--network pasta` connects the user
/// namespace the run creates, which a kept mount's runs share.
fn kept_mount(req: &Request, policy: &LaunchPolicy, pasta_used: bool) -> Option<KeptPlan> {
    let image = matches!(
        req.root,
        RootSource::Squashfs { .. } | RootSource::Ext { .. }
    );
    let on = policy.kept_mount_idle_secs > 0 && !req.opts.fresh_mount;
    (image && on && !req.opts.writable && !pasta_used).then_some(KeptPlan {
        idle_secs: policy.kept_mount_idle_secs,
    })
}

/// Refuses what needs privileges or a feature sifr lacks; returns warnings for what is
/// ignored with a warning. Nothing the user asked for is dropped silently: a flag sifr does
/// not implement yet is refused with one line until the work that implements it lands.
fn refuse_unavailable(u: &Unavailable) -> Result<Vec<String>, PlanError> {
    let unsupported = |flag, why| Err(PlanError::Unsupported { flag, why });
    if u.allow_setuid {
        return Err(PlanError::RootOnly {
            flag: "--allow-setuid",
        });
    }
    if u.oci {
        return unsupported(
            "--oci",
            "sifr runs SIF images natively; drop --oci (or pass --no-oci)",
        );
    }
    for spec in &u.security {
        refuse_security(spec)?;
    }
    if u.ignore_userns {
        return unsupported(
            "--ignore-userns",
            "sifr always runs containers in a user namespace; drop the flag",
        );
    }
    if u.unsquash {
        return unsupported(
            "--unsquash",
            "sifr reads squashfs images with its own reader and does not extract them to a \
             sandbox; drop --unsquash (or build a sandbox with 'build --sandbox')",
        );
    }
    if let Some(flag) = u.other.first() {
        return match *flag {
            "--boot" | "--netns-path" => Err(PlanError::RootOnly { flag }),
            _ => unsupported(flag, other_reason(flag)),
        };
    }
    let mut warnings = Vec::new();
    if u.sharens {
        warnings.push("--sharens is not supported yet; running with separate namespaces".into());
    }
    Ok(warnings)
}

/// Why one of the other Apptainer action flags is refused, and what to do instead.
fn other_reason(flag: &str) -> &'static str {
    match flag {
        "--compat32" | "--intel-hpu" | "--device" | "--cdi-dirs" => {
            "sifr does not set up GPUs or other devices yet; bind the devices and libraries \
             with -B, or run this job with Apptainer"
        }
        "--fusemount" => {
            "FUSE mounts inside the container are not supported yet; mount on the host and \
             bind the mount point with -B"
        }
        "--dmtcp-launch" | "--dmtcp-restart" => "sifr does not checkpoint containers (DMTCP)",
        "--underlay" => {
            "sifr chooses its root layer itself (sifr.conf: enable overlay); drop --underlay"
        }
        "--runscript-timeout" => "the runscript runs without a time limit; drop the flag",
        _ => "not implemented",
    }
}

/// The `--security seccomp:` profile compiled for this payload: its capabilities are
/// those of its user namespace under fakeroot, none otherwise.
fn seccomp_profile(
    req: &Request,
    host: &HostFacts,
    all_caps: bool,
) -> Result<Option<ProfileFilter>, PlanError> {
    let Some(loaded) = &req.seccomp else {
        return Ok(None);
    };
    let ctx = profile::Context {
        all_caps,
        kernel: host.kernel,
    };
    Ok(Some(profile::compile(
        &loaded.value,
        &loaded.source.to_string(),
        &ctx,
    )?))
}

/// `--security uid:N` and `gid:N[:M...]`: the first of each counts (Apptainer's GetParam).
/// Apptainer applies them where its engine runs as root, which for an unprivileged user is
/// its fakeroot mode; without fakeroot it ignores them, and sifr refuses instead of
/// ignoring. Each id must be mapped in the container's user namespace.
fn run_as(req: &Request, security: &[String]) -> Result<Option<RunAs>, PlanError> {
    let param = |key: &str| {
        security
            .iter()
            .find_map(|s| s.split_once(':').filter(|(k, _)| k.trim() == key))
            .map(|(_, v)| v.trim())
    };
    let (uid, gid) = (param("uid"), param("gid"));
    if uid.is_none() && gid.is_none() {
        return Ok(None);
    }
    let spec = match (uid, gid) {
        (Some(u), Some(g)) => format!("uid:{u},gid:{g}"),
        (Some(u), None) => format!("uid:{u}"),
        (None, g) => format!("gid:{}", g.unwrap_or_default()),
    };
    let refuse = |why: &'static str| PlanError::Security {
        spec: spec.clone(),
        why,
    };
    if req.ids.uid != 0 {
        return Err(refuse(
            "other ids need --fakeroot (without it the container runs as you, and \
             Apptainer's user-namespace mode ignores the option); add --fakeroot or drop it",
        ));
    }
    let parse = |v: &str| v.parse::<u32>().ok();
    let uid = match uid {
        Some(u) => Some(parse(u).ok_or_else(|| refuse("expected uid:N with N a number"))?),
        None => None,
    };
    let gids = match gid {
        Some(g) => g
            .split(':')
            .map(parse)
            .collect::<Option<Vec<u32>>>()
            .ok_or_else(|| refuse("expected gid:N or gid:N:M... with numbers"))?,
        None => Vec::new(),
    };
    if req.emulation == Some(Emulation::RootMapped) {
        // Only root is mapped there, and the groups cannot be set (setgroups is denied in a
        // namespace whose maps sifr wrote itself).
        return Err(refuse(
            "the root-mapped fakeroot mode maps only root; other ids need a subordinate id \
             range in /etc/subuid and /etc/subgid",
        ));
    }
    let mapped = |map: &[(u32, u32, u32)], id: u32| {
        map.iter()
            .any(|&(inside, _, count)| id >= inside && id - inside < count)
    };
    if !uid.is_none_or(|u| mapped(&req.ids.uid_map, u))
        || !gids.iter().all(|g| mapped(&req.ids.gid_map, *g))
    {
        return Err(refuse(
            "the id is not mapped in the container's user namespace (fakeroot maps the \
             range of /etc/subuid and /etc/subgid; without one only root is mapped)",
        ));
    }
    Ok(Some(RunAs { uid, gids }))
}

/// The `seccomp:` parameter of the `--security` options: the first one, as Apptainer's
/// `security.GetParam` takes it (`None` when there is none).
pub fn seccomp_param(security: &[String]) -> Option<&str> {
    security
        .iter()
        .find_map(|s| s.split_once(':').filter(|(k, _)| *k == "seccomp"))
        .map(|(_, v)| v)
}

/// One `--security` option: `uid:`/`gid:` are checked by `run_as`; `seccomp:` profiles are applied (the
/// caller reads the first one; an empty one is refused); AppArmor and SELinux profiles are
/// not applied by sifr, and anything else is not an option.
fn refuse_security(spec: &str) -> Result<(), PlanError> {
    let kind = spec.split_once(':').map_or(spec, |(k, _)| k).trim();
    let why = match kind {
        // Applied under fakeroot, refused otherwise (`run_as`).
        "uid" | "gid" => return Ok(()),
        "seccomp" if spec.split_once(':').is_some_and(|(_, v)| !v.is_empty()) => return Ok(()),
        "seccomp" => {
            "expected seccomp:PROFILE (a profile file, or a name in the install's \
             seccomp-profiles directory)"
        }
        "apparmor" => "AppArmor profiles are not applied yet; drop the option",
        "selinux" => "SELinux labels are not applied yet; drop the option",
        _ => "expected seccomp:PROFILE, apparmor:PROFILE, selinux:LABEL, uid:N or gid:N",
    };
    Err(PlanError::Security {
        spec: spec.to_string(),
        why,
    })
}

/// The namespaces besides user and mount, as the administrator allows them.
///
/// As in Apptainer (prepareContainerConfig), a PID, IPC or UTS namespace the administrator
/// does not allow (`allow pid ns = no`, ...) is dropped with Apptainer's warning, and the
/// container runs without it; with a UTS namespace dropped the hostname cannot be set.
///
/// A payload that holds capabilities in its user namespace (fakeroot: container root has the
/// caller's uid and CAP_KILL there; or an ordinary user given some with `--add-caps`) could
/// signal every process of its PID namespace, sifr's own included: it always gets a PID
/// namespace of its own with sifr's init as PID 1 (and so
/// a procfs of that namespace), as with `--pid`, whatever `allow pid ns` says. A nested user
/// namespace would not do: signals and the same-uid ptrace rule compare host uids.
fn namespaces(
    o: &Options,
    policy: &LaunchPolicy,
    payload_privileged: bool,
    warnings: &mut Vec<String>,
) -> Result<NamespacePlan, PlanError> {
    if !policy.allow_user_ns {
        return Err(PlanError::UserNsDisabled);
    }
    let mut dropped = |requested: bool, allowed: bool, ns: &str| {
        if requested && !allowed {
            warnings.push(format!("Not virtualizing {ns} namespace by configuration"));
        }
        requested && allowed
    };
    let pid =
        dropped(o.pid && !payload_privileged, policy.allow_pid_ns, "pid") || payload_privileged;
    let ipc = dropped(o.ipc, policy.allow_ipc_ns, "ipc");
    let uts = if dropped(o.uts.is_some(), policy.allow_uts_ns, "uts") {
        o.uts.clone()
    } else {
        if o.uts.as_ref().is_some_and(|h| !h.is_empty()) {
            warnings.push("Container hostname cannot be set.".to_string());
        }
        None
    };
    let net = o.net || o.network.is_some();
    if net && !policy.allow_net_ns {
        return Err(PlanError::NamespaceDisabled { ns: "net" });
    }
    Ok(NamespacePlan {
        pid,
        ipc,
        uts,
        net,
        init: (pid && o.pid && o.init) || payload_privileged,
        private_mounts: !policy.mount_slave,
    })
}

/// How the image's root is presented: directly, or under a session layer.
///
/// Apptainer's choice (setSessionLayer): `--writable` uses no layer; `--writable-tmpfs`
/// needs `enable overlay` (refused with `no`, as Apptainer refuses it); otherwise an overlay
/// when overlays are enabled, else an underlay unless `enable underlay = no`, else nothing.
/// sifr's read-only session layer does what Apptainer's underlay is for (bind destinations
/// the image lacks are created; nothing of the image becomes writable), so it stands in for
/// the underlay too; with both disabled the root is the image itself and every bind
/// destination must exist in it.
fn root_layer(o: &Options, policy: &LaunchPolicy, req: &Request) -> Result<RootLayer, PlanError> {
    // A SIF's writable overlay partition (checked in `overlays`) stands in for the root.
    if o.writable && req.sif_overlays.is_some() {
        return Ok(RootLayer::Fuse);
    }
    if o.writable && !matches!(req.root, RootSource::Directory { .. }) {
        return Err(PlanError::WritableImage(req.image_display.clone()));
    }
    let overlay = policy.enable_overlay != EnableOverlay::No;
    let underlay = policy.enable_underlay != EnableUnderlay::No;
    Ok(if o.writable {
        RootLayer::Direct
    } else if o.writable_tmpfs {
        if !overlay {
            return Err(PlanError::OverlayDisabled("--writable-tmpfs"));
        }
        RootLayer::WritableTmpfs
    } else if overlay || underlay {
        RootLayer::Session
    } else {
        RootLayer::Direct
    })
}

/// The `--overlay` layers, checked as Apptainer checks them: not with `--writable` (except
/// a SIF's own overlay partition), not with `enable overlay = no`, at most one writable
/// layer and then no `--writable-tmpfs`. A directory is a directory overlay: a read-only
/// one contributes its `upper/` when it has one (a former writable overlay), else itself.
/// A file is an image, its kind read by content: ext3 (writable unless `:ro`), squashfs
/// (always read-only; a warning when given without `:ro`, as Apptainer's), or a SIF whose
/// ext3 overlay partitions are used. The last given is the topmost. A SIF image's own
/// overlay partitions lie right above the image, read-only, or written with `--writable`.
/// Image layers need fuse2fs (ext3) and, when one is written, fuse-overlayfs.
fn overlays(
    o: &Options,
    policy: &LaunchPolicy,
    req: &Request,
    probe: &dyn HostProbe,
    warnings: &mut Vec<String>,
) -> Result<OverlayPlan, PlanError> {
    let mut plan = OverlayPlan::default();
    let own = match (&req.sif_overlays, policy.enable_overlay) {
        (_, EnableOverlay::No) => Vec::new(),
        (Some(parts), _) => parts.clone(),
        (None, _) => Vec::new(),
    };
    if o.writable && req.sif_overlays.is_some() && own.is_empty() {
        return Err(PlanError::NoSifOverlay(req.image_display.clone()));
    }
    if o.overlays.is_empty() && own.is_empty() {
        return Ok(plan);
    }
    if o.writable && !o.overlays.is_empty() {
        return Err(PlanError::OverlayWithWritable);
    }
    if policy.enable_overlay == EnableOverlay::No {
        return Err(PlanError::OverlayDisabled("--overlay"));
    }
    // The image's own partitions: the bottom layers, the last one written with --writable.
    let n = own.len();
    for (i, mut l) in own.into_iter().enumerate() {
        l.writable = o.writable && i + 1 == n;
        if !l.writable {
            plan.order.insert(0, LowerRef::Image(plan.images.len()));
        }
        plan.images.push(l);
    }
    let mut writable_path: Option<PathBuf> = plan.writable_image().map(|(_, l)| l.path.clone());
    for spec in &o.overlays {
        let path = &spec.path;
        if !probe.exists(path) {
            return Err(PlanError::OverlayMissing(path.clone()));
        }
        if probe.is_dir(path) {
            if spec.readonly {
                let upper = path.join("upper");
                let lower = if probe.is_dir(&upper) {
                    upper
                } else {
                    path.clone()
                };
                plan.order.insert(0, LowerRef::Dir(plan.lowers.len()));
                plan.lowers.push(lower);
                continue;
            }
            if let Some(first) = &writable_path {
                return Err(PlanError::OverlayTwoWritable(first.clone(), path.clone()));
            }
            writable_path = Some(path.clone());
            plan.upper = Some(path.clone());
            continue;
        }
        let found = probe.overlay_file(path)?;
        let n = found.len();
        for (i, mut l) in found.into_iter().enumerate() {
            let wanted = !spec.readonly && i + 1 == n;
            // Squashfs cannot be written, nor a file the caller may not write: read-only,
            // with Apptainer's warning.
            if wanted && (l.fs == ImageFs::Squashfs || !probe.writable(path)) {
                warnings.push(format!(
                    "Overlay image {} is not writable, proceeding with read-only",
                    path.display()
                ));
            }
            l.writable = wanted && l.fs == ImageFs::Ext3 && probe.writable(path);
            if l.writable {
                if let Some(first) = &writable_path {
                    return Err(PlanError::OverlayTwoWritable(first.clone(), path.clone()));
                }
                writable_path = Some(path.clone());
            } else {
                plan.order.insert(0, LowerRef::Image(plan.images.len()));
            }
            plan.images.push(l);
        }
    }
    if let Some(upper) = &writable_path
        && o.writable_tmpfs
    {
        return Err(PlanError::OverlayWithWritableTmpfs(upper.clone()));
    }
    // The helpers the image layers need.
    let fuse = plan.writable_image().is_some()
        || (policy.enable_overlay == EnableOverlay::Driver && plan.upper.is_some());
    if let Some(l) = plan.images.iter().find(|l| l.fs == ImageFs::Ext3) {
        plan.fuse2fs = Some(policy.fuse2fs.clone().ok_or(PlanError::OverlayHelper {
            path: l.path.clone(),
            name: "fuse2fs",
        })?);
    }
    if fuse {
        let path = writable_path
            .clone()
            .or_else(|| plan.images.first().map(|l| l.path.clone()))
            .or_else(|| plan.lowers.first().cloned())
            .unwrap_or_default();
        plan.fuse_overlayfs = Some(policy.fuse_overlayfs.clone().ok_or(
            PlanError::OverlayHelper {
                path,
                name: "fuse-overlayfs",
            },
        )?);
    }
    // `lowers` topmost first too (the directory checks read it in that order).
    let dirs: Vec<usize> = plan
        .order
        .iter()
        .filter_map(|r| match r {
            LowerRef::Dir(i) => Some(*i),
            LowerRef::Image(_) => None,
        })
        .collect();
    let old = std::mem::take(&mut plan.lowers);
    plan.lowers = dirs.iter().map(|&i| old[i].clone()).collect();
    let mut next = 0;
    for r in &mut plan.order {
        if let LowerRef::Dir(i) = r {
            *i = next;
            next += 1;
        }
    }
    if plan.order.iter().all(|r| matches!(r, LowerRef::Dir(_))) {
        // Directories only: `lowers` says it all.
        plan.order.clear();
    }
    Ok(plan)
}

/// A recursive directory mount of a system path.
fn sys_op(source: MountSource, dest: &str, why: &'static str) -> MountOp {
    MountOp {
        source,
        dest: PathBuf::from(dest),
        target: TargetKind::Dir,
        readonly: false,
        recursive: true,
        allow_dev: false,
        optional: false,
        why,
    }
}

/// A file mounted over a file.
fn file_op(source: MountSource, dest: &str, why: &'static str) -> MountOp {
    MountOp {
        source,
        dest: PathBuf::from(dest),
        target: TargetKind::File,
        readonly: false,
        recursive: false,
        allow_dev: false,
        optional: false,
        why,
    }
}

/// /proc (a new one with a PID namespace) and /sys.
fn kernel_filesystems(o: &Options, policy: &LaunchPolicy, pid: bool) -> Vec<MountOp> {
    let mut mounts = Vec::new();
    if policy.mount_proc && !o.skips(&NoMount::Proc) {
        let source = if pid {
            MountSource::Proc
        } else {
            MountSource::Host("/proc".into())
        };
        mounts.push(sys_op(source, "/proc", "/proc"));
    }
    if policy.mount_sys && !o.skips(&NoMount::Sys) {
        mounts.push(sys_op(MountSource::Host("/sys".into()), "/sys", "/sys"));
    }
    mounts
}

/// Whether /dev is the minimal one: `mount dev = minimal`, or --contain (not with `mount
/// dev = no` or `--no-mount dev`).
fn minimal_dev(o: &Options, policy: &LaunchPolicy) -> bool {
    !o.skips(&NoMount::Dev)
        && (policy.mount_dev == MountDev::Minimal
            || (o.contain && policy.mount_dev == MountDev::Yes))
}

/// /dev: the host's whole /dev, or a minimal one with --contain (the host's again when the
/// user binds `/dev` itself, `host_dev`).
fn dev(o: &Options, policy: &LaunchPolicy, host_dev: bool) -> Option<MountOp> {
    if o.skips(&NoMount::Dev) {
        return None;
    }
    let mode = match (minimal_dev(o, policy), host_dev) {
        (true, false) => MountDev::Minimal,
        (true, true) => MountDev::Yes,
        (false, _) => policy.mount_dev,
    };
    match mode {
        MountDev::Yes => Some(MountOp {
            allow_dev: true,
            ..sys_op(MountSource::Host("/dev".into()), "/dev", "/dev")
        }),
        MountDev::Minimal => Some(MountOp {
            allow_dev: true,
            ..sys_op(
                MountSource::MinimalDev {
                    devpts: policy.mount_devpts && !o.skips(&NoMount::Devpts),
                    mqueue: o.ipc,
                },
                "/dev",
                "minimal /dev",
            )
        }),
        MountDev::No => None,
    }
}

/// Host filesystems (`mount hostfs = yes`), other than the system ones.
fn host_filesystems(o: &Options, policy: &LaunchPolicy, host: &HostFacts) -> Vec<MountOp> {
    if !policy.mount_hostfs || o.skips(&NoMount::Hostfs) {
        return Vec::new();
    }
    host.mountpoints
        .iter()
        .filter(|mp| {
            let system = ["/proc", "/sys", "/dev", "/run", "/boot"]
                .iter()
                .any(|p| mp.starts_with(p));
            mp.as_path() != Path::new("/") && !system
        })
        .map(|mp| MountOp {
            optional: true,
            recursive: false,
            ..sys_op(
                MountSource::Host(mp.clone()),
                &mp.to_string_lossy(),
                "host filesystem",
            )
        })
        .collect()
}

/// Configured binds (`bind path`) whose source exists; with --contain only /etc/localtime
/// and /etc/hosts. `--no-mount bind-paths` drops them all and `--no-mount DEST` the one
/// bound at DEST (Apptainer matches the destination, /etc/hosts and /etc/localtime too).
fn configured_binds(o: &Options, policy: &LaunchPolicy, probe: &dyn HostProbe) -> Vec<MountOp> {
    if o.skips(&NoMount::BindPaths) {
        return Vec::new();
    }
    policy
        .bind_paths
        .iter()
        .filter(|b| {
            !o.contain
                || b.source == Path::new("/etc/localtime")
                || b.source == Path::new("/etc/hosts")
        })
        .filter(|b| !o.skips_dest(&b.destination))
        .filter(|b| probe.exists(&b.source))
        .map(|b| MountOp {
            optional: true,
            why: "configured bind path",
            ..user_bind_mount(b, probe)
        })
        .collect()
}

/// The home directory: where it appears in the container, and its mount.
struct Home {
    dest: PathBuf,
    mount: Option<MountOp>,
}

fn home(
    o: &Options,
    policy: &LaunchPolicy,
    host: &HostFacts,
    probe: &dyn HostProbe,
    fakeroot_uid0: bool,
    warnings: &mut Vec<String>,
) -> Result<Home, PlanError> {
    let user_home = PathBuf::from(&host.user.home);
    let (source, dest) = match &o.home {
        Some(h) => {
            let src = host.cwd.join(&h.source);
            if !o.contain && !probe.exists(&src) {
                return Err(PlanError::MissingBindSource(src));
            }
            (src, h.dest.clone())
        }
        None if fakeroot_uid0 => (user_home, PathBuf::from("/root")),
        None => (user_home.clone(), user_home),
    };
    if !policy.mount_home || o.no_home || o.skips(&NoMount::Home) {
        return Ok(Home { dest, mount: None });
    }
    // As Apptainer (issue 5228): a home of '/' (an account such as nobody) is not mounted.
    if dest == Path::new("/") {
        warnings.push("Skipping impossible home directory mount to '/'".to_string());
        return Ok(Home { dest, mount: None });
    }
    let source = if o.contain && o.home.is_none() {
        match &o.workdir {
            Some(w) => MountSource::Host(w.join("home")),
            None => MountSource::SessionDir("home".into()),
        }
    } else if o.home.is_some() || probe.exists(&source) {
        MountSource::Host(source)
    } else {
        MountSource::SessionDir("home".into())
    };
    let mount = Some(MountOp {
        source,
        dest: dest.clone(),
        target: TargetKind::Dir,
        readonly: false,
        recursive: true,
        allow_dev: false,
        optional: false,
        why: WHY_HOME,
    });
    Ok(Home { dest, mount })
}

/// Why-labels of the mounts that other steps (the root's construction) tell apart.
pub const WHY_USER_BIND: &str = "user bind";
pub const WHY_TEMPORARY: &str = "temporary directory";
pub const WHY_SCRATCH: &str = "scratch directory";
pub const WHY_HOME: &str = "home directory";
pub const WHY_DEVICE: &str = "host device";

/// The user binds of host devices (`-B /dev/X`), split from the others as Apptainer does.
struct DeviceBinds {
    /// `-B /dev` with a minimal /dev: the host's whole /dev is mounted instead.
    host_dev: bool,
    /// Host devices added to the minimal /dev.
    devices: Vec<BindSpec>,
    /// Every other user bind, absolute, for [`user_binds`].
    rest: Vec<BindSpec>,
}

/// The device nodes and directories a minimal /dev already has (see `rootfs::minimal_dev`).
fn in_minimal_dev(o: &Options, policy: &LaunchPolicy, dev: &Path) -> bool {
    let mut names = vec![
        "null", "zero", "full", "random", "urandom", "tty", "fd", "stdin", "stdout", "stderr",
        "core", "shm",
    ];
    if policy.mount_devpts && !o.skips(&NoMount::Devpts) {
        names.extend(["pts", "ptmx"]);
    }
    if o.ipc {
        names.push("mqueue");
    }
    names.iter().any(|n| dev == Path::new("/dev").join(n))
}

/// `-B /dev/X` (source and destination under /dev) as Apptainer treats it: the source and
/// destination must be the same path; with `mount dev = no` or `--no-mount dev` it is
/// skipped; with a minimal /dev (--contain, `mount dev = minimal`) the host's device is
/// added to it, whatever `user bind control` says, and `-B /dev` brings the host's whole
/// /dev back. Each skip is a warning in Apptainer's words. With the host's /dev it is an
/// ordinary user bind, and so is a path with `..` (Apptainer cleans it first: `/dev/..`
/// is no device, and `user bind control` applies to it).
fn device_binds(
    o: &Options,
    policy: &LaunchPolicy,
    host: &HostFacts,
    probe: &dyn HostProbe,
    warnings: &mut Vec<String>,
) -> DeviceBinds {
    let dev = Path::new("/dev");
    let mut out = DeviceBinds {
        host_dev: false,
        devices: Vec::new(),
        rest: Vec::new(),
    };
    let minimal = minimal_dev(o, policy);
    let under_dev = |p: &Path| {
        p.starts_with(dev) && !p.components().any(|c| c == std::path::Component::ParentDir)
    };
    for b in o.binds.iter().map(|b| b.clone().absolutize(&host.cwd)) {
        if !(under_dev(&b.source) && under_dev(&b.destination)) {
            out.rest.push(b);
            continue;
        }
        let src = b.source.display().to_string();
        if b.source != b.destination {
            warnings.push(format!(
                "Skipping {src} bind mount: source and destination must be identical when \
                 binding to /dev"
            ));
        } else if policy.mount_dev == MountDev::No || o.skips(&NoMount::Dev) {
            warnings.push(format!(
                "Skipping {src} bind mount: disallowed by configuration"
            ));
        } else if !minimal {
            out.rest.push(b);
        } else if b.source == dev {
            out.host_dev = true;
        } else if in_minimal_dev(o, policy, &b.source)
            || out.devices.iter().any(|d| d.source == b.source)
        {
            warnings.push(format!("Skipping {src} bind mount: already mounted"));
        } else if !probe.exists(&b.source) {
            warnings.push(format!(
                "Skipping {src} bind mount: no such file or directory"
            ));
        } else {
            out.devices.push(b);
        }
    }
    if out.host_dev {
        // The host's /dev has them all.
        out.devices.clear();
    }
    out
}

/// The GPU libraries, programs and sockets, and `--contain-libs` (see `gpu::host_files`),
/// appended to `mounts` after the user binds, as Apptainer's files mounts come after its
/// user binds; a user bind of a file into /.singularity.d/libs joins the libraries there
/// (`gpu::absorb_library_binds`), as in Apptainer, instead of being hidden by them.
fn gpu_files(
    o: &Options,
    policy: &LaunchPolicy,
    req: &Request,
    host: &HostFacts,
    probe: &dyn HostProbe,
    mut mounts: Vec<MountOp>,
    warnings: &mut Vec<String>,
) -> Result<Vec<MountOp>, PlanError> {
    let libs: Vec<PathBuf> = o
        .gpu
        .contain_libs
        .iter()
        .map(|l| host.cwd.join(l))
        .collect();
    let mut files = gpu::host_files(
        &req.gpu,
        &libs,
        policy.user_bind_control,
        o.writable,
        probe,
        warnings,
    )?;
    gpu::absorb_library_binds(&mut mounts, &mut files, probe);
    mounts.extend(files);
    Ok(mounts)
}

/// The user binds (absolute), present on the host. With `user bind control = no` each is
/// ignored with a warning, as Apptainer does.
fn user_binds(
    binds: Vec<BindSpec>,
    policy: &LaunchPolicy,
    probe: &dyn HostProbe,
    warnings: &mut Vec<String>,
) -> Result<Vec<BindSpec>, PlanError> {
    if !policy.user_bind_control {
        warnings.extend(binds.iter().map(|b| {
            format!(
                "ignoring bind {}: user bind control is disabled by the administrator \
                 (sifr.conf: user bind control = no)",
                b.display()
            )
        }));
        return Ok(Vec::new());
    }
    if let Some(b) = binds.iter().find(|b| !probe.exists(&b.source)) {
        return Err(PlanError::MissingBindSource(b.source.clone()));
    }
    Ok(binds)
}

/// The mount of one bind: a directory or a file, as the source is.
fn user_bind_mount(b: &BindSpec, probe: &dyn HostProbe) -> MountOp {
    MountOp {
        source: MountSource::Host(b.source.clone()),
        dest: b.destination.clone(),
        target: if probe.is_dir(&b.source) {
            TargetKind::Dir
        } else {
            TargetKind::File
        },
        readonly: b.readonly,
        recursive: true,
        allow_dev: false,
        optional: false,
        why: WHY_USER_BIND,
    }
}

/// /tmp and /var/tmp: the host's, or empty ones with --contain (under --workdir if given).
/// A --workdir is the user's directory: with `user bind control = no` neither is mounted,
/// with Apptainer's warning.
fn temporary_dirs(
    o: &Options,
    policy: &LaunchPolicy,
    probe: &dyn HostProbe,
    warnings: &mut Vec<String>,
) -> Vec<MountOp> {
    if !policy.mount_tmp || o.skips(&NoMount::Tmp) {
        return Vec::new();
    }
    if o.contain && o.workdir.is_some() && !policy.user_bind_control {
        warnings.push("User bind control is disabled by system administrator".into());
        return Vec::new();
    }
    let mut mounts = Vec::new();
    for (dest, name) in [("/tmp", "tmp"), ("/var/tmp", "var_tmp")] {
        if o.skips_dest(Path::new(dest)) {
            continue;
        }
        let source = if o.contain {
            match &o.workdir {
                Some(w) => MountSource::Host(w.join(name)),
                None => MountSource::SessionDir(name.into()),
            }
        } else {
            MountSource::Host(PathBuf::from(dest))
        };
        if let MountSource::Host(p) = &source
            && !probe.exists(p)
            && o.workdir.is_none()
        {
            continue;
        }
        mounts.push(MountOp {
            optional: !o.contain,
            ..sys_op(source, dest, WHY_TEMPORARY)
        });
    }
    mounts
}

/// Scratch directories (`--scratch`), empty, under --workdir if given. With `user bind
/// control = no` they are not mounted, with a warning (Apptainer skips them too).
fn scratch_dirs(
    o: &Options,
    policy: &LaunchPolicy,
    warnings: &mut Vec<String>,
) -> Result<Vec<MountOp>, PlanError> {
    if !policy.user_bind_control {
        if o.scratch.iter().any(|s| !s.is_empty()) {
            warnings.push(format!(
                "not mounting --scratch {}: user bind control is disabled by the \
                 administrator (sifr.conf: user bind control = no)",
                o.scratch.join(",")
            ));
        }
        return Ok(Vec::new());
    }
    let mut mounts = Vec::new();
    for (i, s) in o.scratch.iter().filter(|s| !s.is_empty()).enumerate() {
        if !s.starts_with('/') {
            return Err(PlanError::Bind(BindError::RelativeDestination {
                spec: s.clone(),
                dest: s.clone(),
            }));
        }
        let source = match &o.workdir {
            Some(w) => MountSource::Host(w.join("scratch").join(format!("{i}"))),
            None => MountSource::SessionDir(format!("scratch{i}")),
        };
        mounts.push(MountOp {
            source,
            dest: PathBuf::from(s),
            target: TargetKind::Dir,
            readonly: false,
            recursive: false,
            allow_dev: false,
            optional: false,
            why: WHY_SCRATCH,
        });
    }
    Ok(mounts)
}

/// The network helper: pasta with `--network pasta` (its command line, with the
/// `--network-args` port maps), nothing with `--network none` or without a network
/// namespace. Network arguments without pasta are refused rather than ignored.
///
/// `allow net users`, `allow net groups` and `allow net networks` are not consulted: they
/// select which CNI configurations Apptainer sets up *with privileges* for unprivileged
/// users; pasta runs with the caller's own rights (as the caller could run it), and sifr
/// sets up nothing with privileges.
fn pasta(o: &Options, policy: &LaunchPolicy, net: bool) -> Result<Option<PastaPlan>, PlanError> {
    let kind = match &o.network {
        Some(n) if net => network::parse_type(n)?,
        _ => NetworkType::None,
    };
    if kind == NetworkType::None {
        if let Some(arg) = o.network_args.first() {
            return Err(NetworkError::ArgsWithoutPasta(arg.clone()).into());
        }
        return Ok(None);
    }
    let ports = network::parse_args(&o.network_args)?;
    let binary = policy.pasta.clone().map_err(NetworkError::PastaMissing)?;
    // DNS goes through pasta unless the user named servers (--dns) or sifr leaves the
    // image's resolv.conf alone.
    let dns_forward = o.dns.is_none()
        && policy.config_resolv_conf
        && !o.skips_dest(Path::new("/etc/resolv.conf"));
    Ok(Some(network::pasta_plan(binary, &ports, dns_forward)))
}

/// Files sifr writes for the container: passwd, group, resolv.conf, hostname, and APT's
/// configuration under root-mapped fakeroot.
fn generated_files(
    o: &Options,
    policy: &LaunchPolicy,
    req: &Request,
    home_dest: &Path,
    ns: &NamespacePlan,
    pasta: bool,
    probe: &dyn HostProbe,
) -> Vec<MountOp> {
    let fakeroot_uid0 = req.ids.uid == 0;
    let mut mounts = Vec::new();
    // As (fake)root on a writable root the image's own files are used.
    let own_files = fakeroot_uid0 && o.writable;
    if policy.config_passwd && !own_files && !o.skips_dest(Path::new("/etc/passwd")) {
        mounts.push(file_op(
            MountSource::Generated(GeneratedFile::Passwd {
                uid: req.ids.uid,
                home: home_dest.to_path_buf(),
            }),
            "/etc/passwd",
            "/etc/passwd",
        ));
    }
    // Under fakeroot the caller's host groups are not mapped: the image's group file stays.
    if policy.config_group && !fakeroot_uid0 && !o.skips_dest(Path::new("/etc/group")) {
        mounts.push(file_op(
            MountSource::Generated(GeneratedFile::Group),
            "/etc/group",
            "/etc/group",
        ));
    }
    if policy.config_resolv_conf && !o.skips_dest(Path::new("/etc/resolv.conf")) {
        let source = match &o.dns {
            Some(servers) => MountSource::Generated(GeneratedFile::Literal {
                name: "resolv.conf".into(),
                contents: servers
                    .iter()
                    .map(|s| format!("nameserver {s}\n"))
                    .collect(),
            }),
            // pasta answers DNS at this address for the host's resolver.
            None if pasta => MountSource::Generated(GeneratedFile::Literal {
                name: "resolv.conf".into(),
                contents: format!("nameserver {}\n", network::DNS_FORWARD),
            }),
            None => MountSource::Host("/etc/resolv.conf".into()),
        };
        let present = match &source {
            MountSource::Host(p) => probe.exists(p),
            _ => true,
        };
        if present {
            mounts.push(MountOp {
                optional: true,
                ..file_op(source, "/etc/resolv.conf", "/etc/resolv.conf")
            });
        }
    }
    if let Some(h) = ns.uts.as_ref().filter(|h| !h.is_empty()) {
        mounts.push(MountOp {
            optional: true,
            ..file_op(
                MountSource::Generated(GeneratedFile::Literal {
                    name: "hostname".into(),
                    contents: format!("{h}\n"),
                }),
                "/etc/hostname",
                "/etc/hostname",
            )
        });
    }
    // Root-mapped fakeroot: APT must not try to switch to its `_apt` user.
    if req.emulation == Some(Emulation::RootMapped) {
        mounts.push(MountOp {
            optional: true,
            target: TargetKind::FileIfDirExists,
            ..file_op(
                MountSource::Generated(GeneratedFile::AptSandboxRoot),
                "/etc/apt/apt.conf.d/00sifr-fakeroot",
                "fakeroot APT configuration",
            )
        });
    }
    mounts
}

/// The caller's working directory, unless contained, a system path, or already mounted.
/// With `user bind control = no` it is not bound, with Apptainer's warning.
fn working_dir(
    o: &Options,
    policy: &LaunchPolicy,
    host: &HostFacts,
    probe: &dyn HostProbe,
    mounts: &[MountOp],
    warnings: &mut Vec<String>,
) -> Option<MountOp> {
    if !o.contain && !policy.user_bind_control {
        warnings.push(
            "Not mounting current directory: user bind control is disabled by system \
             administrator"
                .into(),
        );
        return None;
    }
    let covered = mounts.iter().any(|m| host.cwd.starts_with(&m.dest));
    let system = ["/proc", "/sys", "/dev"]
        .iter()
        .any(|s| host.cwd.starts_with(s));
    let wanted = !o.contain
        && !o.skips(&NoMount::Cwd)
        && !system
        && host.cwd != Path::new("/")
        && !covered
        && probe.exists(&host.cwd);
    wanted.then(|| MountOp {
        source: MountSource::Host(host.cwd.clone()),
        dest: host.cwd.clone(),
        target: TargetKind::Dir,
        readonly: false,
        recursive: true,
        allow_dev: false,
        optional: true,
        why: "current working directory",
    })
}

/// The payload: its arguments, working directory, and environment (with the runtime's
/// `APPTAINER_*` variables).
fn payload(
    req: &Request,
    host: &HostFacts,
    binds: &[BindSpec],
    home_dest: &Path,
    warnings: &mut Vec<String>,
) -> Result<ProcessPlan, PlanError> {
    let o = &req.opts;
    let (cwd, cwd_required) = match &o.pwd {
        Some(p) => (p.clone(), true),
        None => (host.cwd.clone(), false),
    };
    let mut runtime = vec![
        (
            "CONTAINER".to_string(),
            req.image_display.display().to_string(),
        ),
        (
            "NAME".to_string(),
            req.image_display
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        ),
        (
            "ENVIRONMENT".to_string(),
            "/.singularity.d/env/91-environment.sh".to_string(),
        ),
        ("COMMAND".to_string(), req.action.as_str().to_string()),
    ];
    // As Apptainer: the destinations, for a nested container to bind again; always set.
    runtime.push((
        "BIND".into(),
        binds
            .iter()
            .filter(|b| !b.nonested)
            .map(|b| b.destination.display().to_string())
            .collect::<Vec<_>>()
            .join(","),
    ));
    if let Some(app) = &o.app {
        runtime.push(("APPNAME".into(), app.clone()));
    }
    if let Some(sh) = &req.shell {
        runtime.push(("SHELL".into(), sh.clone()));
    }
    if !o.evaluate {
        runtime.push(("NO_EVAL".into(), "1".into()));
    }
    if let Some(name) = &o.instance {
        runtime.push(("INSTANCE".into(), name.clone()));
    }
    let env = environ::compute(&EnvInputs {
        host: host.env.clone(),
        cleanenv: o.cleanenv,
        env_flags: o.env.clone(),
        env_files: req.env_files.clone(),
        no_env: o.no_env.clone(),
        runtime,
        fixed: vec![("HOME".into(), home_dest.display().to_string())],
    })?;
    warnings.extend(env.warnings);
    Ok(ProcessPlan {
        action: req.action,
        args: req.args.clone(),
        env: env.base,
        inject: env.inject,
        evaluate: o.evaluate,
        cwd,
        cwd_required,
        home: home_dest.to_path_buf(),
        umask: if o.reset_umask { Some(0o022) } else { None },
        app: o.app.clone(),
        shell: req.shell.clone(),
        instance_init: o.instance.is_some()
            && !o.joining
            && matches!(req.action, Action::Start | Action::Run),
    })
}

/// The --workdir subdirectories the mounts use; created on the host before the start.
fn workdir_dirs(o: &Options, mounts: &[MountOp]) -> Vec<PathBuf> {
    let Some(w) = &o.workdir else {
        return Vec::new();
    };
    mounts
        .iter()
        .filter_map(|m| match &m.source {
            MountSource::Host(p) if p.starts_with(w) => Some(p.clone()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::launch::identity::HostUser;
    use crate::launch::options::HomeSpec;

    fn host() -> HostFacts {
        HostFacts {
            user: HostUser {
                uid: 1000,
                gid: 1000,
                name: "u".into(),
                gecos: String::new(),
                home: "/home/u".into(),
                shell: "/bin/bash".into(),
                groups: vec![(1000, "u".into())],
            },
            cwd: "/home/u/work".into(),
            env: vec![("FOO".into(), "bar".into())],
            umask: 0o022,
            mountpoints: vec![],
            kernel: None,
        }
    }

    /// A described host: these paths exist; the listed files are not directories.
    struct Listed {
        existing: Vec<PathBuf>,
        files: Vec<PathBuf>,
    }

    impl HostProbe for Listed {
        fn exists(&self, p: &Path) -> bool {
            self.existing.iter().any(|e| e == p)
        }
        fn is_dir(&self, p: &Path) -> bool {
            self.exists(p) && !self.files.iter().any(|f| f == p)
        }
    }

    fn listed() -> Listed {
        Listed {
            existing: [
                "/home/u",
                "/home/u/work",
                "/tmp",
                "/var/tmp",
                "/etc/localtime",
                "/etc/hosts",
                "/etc/resolv.conf",
                "/data",
            ]
            .iter()
            .map(PathBuf::from)
            .collect(),
            files: ["/etc/localtime", "/etc/hosts", "/etc/resolv.conf"]
                .iter()
                .map(PathBuf::from)
                .collect(),
        }
    }

    fn plan(r: &Request, policy: &LaunchPolicy, h: &HostFacts) -> Result<Plan, PlanError> {
        super::plan(r, policy, h, &listed())
    }

    fn req(opts: Options) -> Request {
        Request {
            action: Action::Exec,
            args: vec!["true".into()],
            opts,
            shell: None,
            image_display: "/img/busybox.sif".into(),
            root: RootSource::Squashfs {
                path: "/img/busybox.sif".into(),
                offset: 45056,
                size: 100,
            },
            env_files: vec![],
            ids: IdMapPlan::single(1000, 1000),
            emulation: None,
            sif_overlays: None,
            gpu: GpuHost::default(),
            seccomp: None,
        }
    }

    fn dests(p: &Plan) -> Vec<String> {
        p.mounts
            .iter()
            .map(|m| m.dest.display().to_string())
            .collect()
    }

    #[test]
    fn test_kept_mount_for_read_only_images_unless_turned_off() {
        let policy = LaunchPolicy::default();
        let kept = |r: &Request, p: &LaunchPolicy| plan(r, p, &host()).expect("ok").kept;
        assert_eq!(
            kept(&req(Options::default()), &policy),
            Some(KeptPlan { idle_secs: 300 })
        );
        let fresh = Options {
            fresh_mount: true,
            ..Options::default()
        };
        assert_eq!(kept(&req(fresh), &policy), None, "--fresh-mount");
        let off = LaunchPolicy {
            kept_mount_idle_secs: 0,
            ..LaunchPolicy::default()
        };
        assert_eq!(kept(&req(Options::default()), &off), None, "timeout 0");
        let mut sandbox = req(Options::default());
        sandbox.root = RootSource::Directory { path: "/sb".into() };
        assert_eq!(kept(&sandbox, &policy), None, "a directory");
        let mut ext = req(Options::default());
        ext.root = RootSource::Ext {
            path: "/img/e.img".into(),
            offset: 0,
            size: 100,
        };
        assert!(kept(&ext, &policy).is_some(), "ext images");
        let writable = Options {
            writable: true,
            ..Options::default()
        };
        assert_eq!(
            kept_mount(&req(writable), &policy, false),
            None,
            "--writable"
        );
        assert_eq!(
            kept_mount(&req(Options::default()), &policy, true),
            None,
            "pasta"
        );
    }

    #[test]
    fn test_policy_from_builtin_config_equals_default() {
        assert_eq!(
            LaunchPolicy::from(&Config::builtin().expect("builtin config")),
            LaunchPolicy::default()
        );
    }

    #[test]
    fn test_default_mounts_in_apptainer_order() {
        let p = plan(&req(Options::default()), &LaunchPolicy::default(), &host()).expect("ok");
        assert_eq!(
            dests(&p),
            [
                "/proc",
                "/sys",
                "/dev",
                "/etc/localtime",
                "/etc/hosts",
                "/home/u",
                "/tmp",
                "/var/tmp",
                "/etc/passwd",
                "/etc/group",
                "/etc/resolv.conf"
            ]
        );
        // cwd is inside the home bind: not bound again.
        assert_eq!(p.process.cwd, PathBuf::from("/home/u/work"));
        assert_eq!(p.layer, RootLayer::Session);
        assert!(p.security.no_new_privs);
        assert_eq!(p.mounts[0].source, MountSource::Host("/proc".into()));
        assert!(p.mounts[2].allow_dev, "/dev keeps device nodes");
        assert!(
            p.mounts
                .iter()
                .filter(|m| m.dest != Path::new("/dev"))
                .all(|m| !m.allow_dev)
        );
    }

    #[test]
    fn test_contain_gives_minimal_dev_and_session_dirs() {
        let flags = Options {
            contain: true,
            ..Default::default()
        };
        let p = plan(&req(flags), &LaunchPolicy::default(), &host()).expect("ok");
        let dev = p
            .mounts
            .iter()
            .find(|m| m.dest == Path::new("/dev"))
            .expect("dev");
        assert!(matches!(
            dev.source,
            MountSource::MinimalDev { devpts: true, .. }
        ));
        let home = p
            .mounts
            .iter()
            .find(|m| m.why == "home directory")
            .expect("home");
        assert_eq!(home.source, MountSource::SessionDir("home".into()));
        let tmp = p
            .mounts
            .iter()
            .find(|m| m.dest == Path::new("/tmp"))
            .expect("tmp");
        assert_eq!(tmp.source, MountSource::SessionDir("tmp".into()));
        // Config binds other than localtime/hosts and the cwd bind are dropped.
        assert!(!dests(&p).contains(&"/home/u/work".to_string()));
    }

    #[test]
    fn test_containall_adds_pid_ipc_cleanenv() {
        // What --containall expands to (cmd::action::launch_options).
        let flags = Options {
            contain: true,
            pid: true,
            ipc: true,
            cleanenv: true,
            ..Default::default()
        };
        let p = plan(&req(flags), &LaunchPolicy::default(), &host()).expect("ok");
        assert!(p.namespaces.pid && p.namespaces.ipc && p.namespaces.init);
        assert_eq!(p.mounts[0].source, MountSource::Proc);
        assert!(!p.process.env.iter().any(|(k, _)| k == "FOO"));
    }

    #[test]
    fn test_user_binds_and_errors() {
        let flags = Options {
            binds: vec![BindSpec::parse("/data:/mnt/data:ro").expect("spec")],
            ..Default::default()
        };
        let p = plan(&req(flags), &LaunchPolicy::default(), &host()).expect("ok");
        let b = p
            .mounts
            .iter()
            .find(|m| m.why == "user bind")
            .expect("bind");
        assert_eq!(b.dest, PathBuf::from("/mnt/data"));
        assert!(b.readonly);
        // Inside, APPTAINER_BIND lists the destinations, as Apptainer sets it.
        assert!(
            p.process
                .env
                .iter()
                .any(|(k, v)| k == "APPTAINER_BIND" && v == "/mnt/data")
        );

        let flags = Options {
            binds: vec![BindSpec::parse("/nonexistent:/x").expect("spec")],
            ..Default::default()
        };
        let e = plan(&req(flags), &LaunchPolicy::default(), &host()).expect_err("missing");
        assert!(e.to_string().contains("/nonexistent"), "{e}");

        let flags = Options {
            binds: vec![BindSpec::parse("/data").expect("spec")],
            ..Default::default()
        };
        let policy = LaunchPolicy {
            user_bind_control: false,
            ..Default::default()
        };
        // user bind control = no: ignored with a warning naming the bind, as Apptainer does.
        let p = plan(&req(flags), &policy, &host()).expect("ignored, not refused");
        assert!(!p.mounts.iter().any(|m| m.why == WHY_USER_BIND));
        assert!(
            p.warnings
                .iter()
                .any(|w| w.contains("/data:/data") && w.contains("user bind control = no")),
            "{:?}",
            p.warnings
        );
    }

    /// User binds come after /tmp, /var/tmp, scratch directories and the generated files,
    /// whatever --contain and --workdir say, so the user's bind is what the job sees; the
    /// working directory comes last.
    #[test]
    fn test_user_binds_win_over_system_mounts() {
        for (contain, workdir) in [(false, None), (true, None), (true, Some("/w"))] {
            let flags = Options {
                contain,
                workdir: workdir.map(PathBuf::from),
                scratch: vec!["/s".into()],
                binds: [
                    "/data:/tmp",
                    "/data:/var/tmp",
                    "/data:/s",
                    "/data:/etc/passwd",
                ]
                .iter()
                .map(|b| BindSpec::parse(b).expect("spec"))
                .collect(),
                ..Default::default()
            };
            let mut h = host();
            h.cwd = "/data".into();
            let p = plan(&req(flags), &LaunchPolicy::default(), &h).expect("ok");
            let last_system = p
                .mounts
                .iter()
                .rposition(|m| m.why != WHY_USER_BIND && m.why != "current working directory")
                .expect("system mounts");
            let first_user = p
                .mounts
                .iter()
                .position(|m| m.why == WHY_USER_BIND)
                .expect("user binds");
            assert!(
                last_system < first_user,
                "contain={contain} workdir={workdir:?}: {:?}",
                dests(&p)
            );
            for d in ["/tmp", "/var/tmp", "/s", "/etc/passwd"] {
                let last = p.mounts.iter().rfind(|m| m.dest == Path::new(d));
                assert_eq!(last.map(|m| m.why), Some(WHY_USER_BIND), "{d}");
            }
        }
        // --scratch under user bind control = no: not mounted, with a warning.
        let o = Options {
            scratch: vec!["/s".into()],
            ..Default::default()
        };
        let policy = LaunchPolicy {
            user_bind_control: false,
            ..Default::default()
        };
        let mut w = Vec::new();
        assert!(scratch_dirs(&o, &policy, &mut w).expect("ok").is_empty());
        assert!(w[0].contains("--scratch /s"), "{w:?}");
    }

    /// APPTAINER_BIND is always set: empty without binds, `nonested` mounts left out.
    #[test]
    fn test_apptainer_bind_lists_destinations() {
        let env_of = |binds: Vec<BindSpec>| {
            let p = plan(
                &req(Options {
                    binds,
                    ..Default::default()
                }),
                &LaunchPolicy::default(),
                &host(),
            )
            .expect("ok");
            p.process
                .env
                .iter()
                .find(|(k, _)| k == "SINGULARITY_BIND")
                .map(|(_, v)| v.clone())
        };
        assert_eq!(env_of(vec![]), Some(String::new()));
        let mut binds = BindSpec::parse_mount("src=/data,dst=/hidden,nonested").expect("m");
        binds.insert(0, BindSpec::parse("/data:/visible").expect("b"));
        binds.push(BindSpec::parse("/data:/also").expect("b"));
        assert_eq!(env_of(binds), Some("/visible,/also".into()));
    }

    #[test]
    fn test_cwd_bound_when_outside_home() {
        let mut h = host();
        h.cwd = "/data".into();
        let p = plan(&req(Options::default()), &LaunchPolicy::default(), &h).expect("ok");
        assert!(dests(&p).contains(&"/data".to_string()));
        let mut h = host();
        h.cwd = "/proc/self".into();
        let p = plan(&req(Options::default()), &LaunchPolicy::default(), &h).expect("ok");
        assert!(!dests(&p).iter().any(|d| d.starts_with("/proc/")));
    }

    #[test]
    fn test_home_flags() {
        let flags = Options {
            home: Some(HomeSpec::parse("/data:/home/alt").expect("spec")),
            ..Default::default()
        };
        let p = plan(&req(flags), &LaunchPolicy::default(), &host()).expect("ok");
        let home = p
            .mounts
            .iter()
            .find(|m| m.why == "home directory")
            .expect("home");
        assert_eq!(home.source, MountSource::Host("/data".into()));
        assert_eq!(p.process.home, PathBuf::from("/home/alt"));
        assert!(p.process.env.contains(&("HOME".into(), "/home/alt".into())));

        let flags = Options {
            no_home: true,
            ..Default::default()
        };
        let p = plan(&req(flags), &LaunchPolicy::default(), &host()).expect("ok");
        assert!(!p.mounts.iter().any(|m| m.why == "home directory"));
    }

    #[test]
    fn test_no_mount_and_policy() {
        let flags = Options {
            no_mount: vec![
                NoMount::Tmp,
                NoMount::Dest("/etc/hosts".into()),
                NoMount::Proc,
            ],
            ..Default::default()
        };
        let p = plan(&req(flags), &LaunchPolicy::default(), &host()).expect("ok");
        let d = dests(&p);
        assert!(!d.contains(&"/tmp".to_string()));
        assert!(!d.contains(&"/proc".to_string()));
        let policy = LaunchPolicy {
            mount_dev: MountDev::No,
            mount_home: false,
            config_passwd: false,
            ..Default::default()
        };
        let p = plan(&req(Options::default()), &policy, &host()).expect("ok");
        let d = dests(&p);
        assert!(!d.contains(&"/dev".to_string()));
        assert!(!d.contains(&"/home/u".to_string()));
        assert!(!d.contains(&"/etc/passwd".to_string()));
    }

    #[test]
    fn test_writable_and_network_rules() {
        let flags = Options {
            writable: true,
            ..Default::default()
        };
        assert!(matches!(
            plan(&req(flags), &LaunchPolicy::default(), &host()),
            Err(PlanError::WritableImage(_))
        ));
        let flags = Options {
            network: Some("bridge".into()),
            ..Default::default()
        };
        assert!(matches!(
            plan(&req(flags), &LaunchPolicy::default(), &host()),
            Err(PlanError::Network(_))
        ));
        let flags = Options {
            net: true,
            network: Some("none".into()),
            ..Default::default()
        };
        let p = plan(&req(flags), &LaunchPolicy::default(), &host()).expect("ok");
        assert!(p.namespaces.net);
        // enable overlay = no: see test_overlay_disabled_falls_back_to_underlay.
        // allow user ns = no: nothing can start.
        let policy = LaunchPolicy {
            allow_user_ns: false,
            ..Default::default()
        };
        let e = plan(&req(Options::default()), &policy, &host()).expect_err("refused");
        assert!(e.to_string().contains("allow user ns = no"), "{e}");
    }

    /// `--network pasta`: pasta's command line with the port maps in the plan, resolv.conf
    /// naming pasta's DNS forwarder (or the --dns servers); pasta missing, unknown types and
    /// network arguments without pasta are refused.
    #[test]
    fn test_pasta_network_plan() {
        let policy = LaunchPolicy {
            pasta: Ok("/usr/bin/pasta".into()),
            ..Default::default()
        };
        let resolv = |p: &Plan| {
            p.mounts
                .iter()
                .find(|m| m.dest == Path::new("/etc/resolv.conf"))
                .map(|m| m.source.clone())
        };
        let flags = Options {
            net: true,
            network: Some("pasta".into()),
            network_args: vec!["portmap=8080:80/tcp".into(), "portmap=5353/udp".into()],
            ..Default::default()
        };
        let p = plan(&req(flags.clone()), &policy, &host()).expect("ok");
        assert!(p.namespaces.net);
        let pasta = p.pasta.as_ref().expect("pasta planned");
        assert_eq!(pasta.binary, PathBuf::from("/usr/bin/pasta"));
        let line = pasta.args.join(" ");
        assert!(
            line.contains("--tcp-ports 8080:80 --udp-ports 5353:5353"),
            "{line}"
        );
        assert!(line.contains("--dns-forward 169.254.1.1"), "{line}");
        assert_eq!(
            resolv(&p),
            Some(MountSource::Generated(GeneratedFile::Literal {
                name: "resolv.conf".into(),
                contents: "nameserver 169.254.1.1\n".into()
            }))
        );
        // --dns: the user's servers, and no forwarder.
        let p = plan(
            &req(Options {
                dns: Some(vec!["192.0.2.53".into()]),
                ..flags.clone()
            }),
            &policy,
            &host(),
        )
        .expect("ok");
        assert!(
            !p.pasta
                .as_ref()
                .expect("pasta")
                .args
                .contains(&"--dns-forward".to_string())
        );
        assert!(
            matches!(resolv(&p), Some(MountSource::Generated(GeneratedFile::Literal { contents, .. })) if contents == "nameserver 192.0.2.53\n")
        );
        // --network none: no pasta, the host's resolv.conf.
        let p = plan(
            &req(Options {
                net: true,
                network: Some("none".into()),
                ..Default::default()
            }),
            &policy,
            &host(),
        )
        .expect("ok");
        assert_eq!(p.pasta, None);
        assert_eq!(
            resolv(&p),
            Some(MountSource::Host("/etc/resolv.conf".into()))
        );
        // Refusals, one line each.
        let missing = LaunchPolicy {
            pasta: Err("/nowhere".into()),
            ..Default::default()
        };
        let e = plan(&req(flags.clone()), &missing, &host()).expect_err("no pasta");
        assert!(
            e.to_string().contains("package passt") && e.to_string().contains("/nowhere"),
            "{e}"
        );
        for (o, needle) in [
            (
                Options {
                    network: Some("bridge".into()),
                    ..flags.clone()
                },
                "available without privileges: none, pasta",
            ),
            (
                Options {
                    network: Some("none".into()),
                    ..flags.clone()
                },
                "--network-args portmap=8080:80/tcp: network arguments need",
            ),
            (
                Options {
                    network_args: vec!["portmap=80/sctp".into()],
                    ..flags.clone()
                },
                "only tcp and udp",
            ),
        ] {
            let e = plan(&req(o), &policy, &host())
                .expect_err(needle)
                .to_string();
            assert!(e.contains(needle) && !e.contains('\n'), "{e}");
        }
    }

    /// The plan carries the payload's capability set: nothing for a plain run, what
    /// `--add-caps` names otherwise (with a PID namespace of its own, as container root has);
    /// every capability for fakeroot, less `--drop-caps`, none with `--no-privs`; bad names
    /// and `--keep-privs` refused in one line.
    #[test]
    fn test_capabilities_in_the_plan() {
        use crate::launch::capabilities::{CapMask, CapOptions};
        let with = |caps: CapOptions| Options {
            caps,
            ..Default::default()
        };
        let p = plan(&req(Options::default()), &LaunchPolicy::default(), &host()).expect("ok");
        assert!(p.security.caps.is_empty());
        assert!(!p.namespaces.pid);
        let add = with(CapOptions {
            add: Some("net_raw".into()),
            ..Default::default()
        });
        let p = plan(&req(add), &LaunchPolicy::default(), &host()).expect("ok");
        assert_eq!(
            p.security.caps,
            CapMask(caps::Capability::CAP_NET_RAW.bitmask())
        );
        assert!(p.namespaces.pid && p.namespaces.init);
        let fakeroot = |caps: CapOptions| {
            let mut r = req(with(caps));
            r.ids.uid = 0;
            r.ids.gid = 0;
            r.emulation = Some(Emulation::MknodOnly);
            plan(&r, &LaunchPolicy::default(), &host())
        };
        let p = fakeroot(CapOptions::default()).expect("ok");
        assert_eq!(p.security.caps, CapMask::all());
        let p = fakeroot(CapOptions {
            drop: Some("CAP_CHOWN".into()),
            ..Default::default()
        })
        .expect("ok");
        assert!(!p.security.caps.contains(caps::Capability::CAP_CHOWN));
        assert!(p.security.caps.contains(caps::Capability::CAP_FOWNER));
        let p = fakeroot(CapOptions {
            no_privs: true,
            ..Default::default()
        })
        .expect("ok");
        assert!(p.security.caps.is_empty());
        for (caps, needle) in [
            (
                CapOptions {
                    drop: Some("chown,fly".into()),
                    ..Default::default()
                },
                "--drop-caps: unknown capability \"fly\"",
            ),
            (
                CapOptions {
                    keep_privs: true,
                    ..Default::default()
                },
                "--keep-privs requires root",
            ),
        ] {
            let e = fakeroot(caps).expect_err(needle).to_string();
            assert!(e.starts_with(needle) && e.lines().count() == 1, "{e}");
        }
    }

    #[test]
    fn test_fakeroot_root_mapped() {
        let mut r = req(Options {
            writable: true,
            ..Default::default()
        });
        r.root = RootSource::Directory { path: "/sb".into() };
        r.ids = IdMapPlan {
            uid_map: vec![(0, 1000, 1)],
            gid_map: vec![(0, 1000, 1)],
            needs_helpers: false,
            uid: 0,
            gid: 0,
            notice: Some("fakeroot: root-mapped".into()),
            helper_dirs: vec![],
        };
        r.emulation = Some(Emulation::RootMapped);
        let p = plan(&r, &LaunchPolicy::default(), &host()).expect("ok");
        assert!(p.security.emulate_root && !p.security.mknod_noop);
        assert_eq!(p.security.caps, capabilities::CapMask::all());
        // Container root never shares a PID namespace with sifr's processes.
        assert!(p.namespaces.pid && p.namespaces.init);
        let proc_ = p.mounts.iter().find(|m| m.dest == Path::new("/proc"));
        assert_eq!(proc_.map(|m| &m.source), Some(&MountSource::Proc));
        assert_eq!(p.process.home, PathBuf::from("/root"));
        let home = p
            .mounts
            .iter()
            .find(|m| m.why == "home directory")
            .expect("home");
        assert_eq!(home.source, MountSource::Host("/home/u".into()));
        assert_eq!(home.dest, PathBuf::from("/root"));
        // Root on a writable sandbox uses the image's own passwd and group.
        let d = dests(&p);
        assert!(!d.contains(&"/etc/passwd".to_string()));
        assert!(!d.contains(&"/etc/group".to_string()));
        let apt = p
            .mounts
            .iter()
            .find(|m| m.source == MountSource::Generated(GeneratedFile::AptSandboxRoot))
            .expect("apt conf");
        assert_eq!(apt.target, TargetKind::FileIfDirExists);
        assert_eq!(p.warnings[0], "fakeroot: root-mapped");
    }

    #[test]
    fn test_runtime_env_and_dns() {
        let flags = Options {
            dns: Some(vec!["1.1.1.1".into(), "8.8.8.8".into()]),
            uts: Some("box".into()),
            ..Default::default()
        };
        let p = plan(&req(flags), &LaunchPolicy::default(), &host()).expect("ok");
        let env = &p.process.env;
        assert!(env.contains(&("APPTAINER_CONTAINER".into(), "/img/busybox.sif".into())));
        assert!(env.contains(&("SINGULARITY_NAME".into(), "busybox.sif".into())));
        assert!(env.contains(&("FOO".into(), "bar".into())));
        let resolv = p
            .mounts
            .iter()
            .find(|m| m.dest == Path::new("/etc/resolv.conf"))
            .expect("resolv");
        assert_eq!(
            resolv.source,
            MountSource::Generated(GeneratedFile::Literal {
                name: "resolv.conf".into(),
                contents: "nameserver 1.1.1.1\nnameserver 8.8.8.8\n".into()
            })
        );
        assert_eq!(p.namespaces.uts.as_deref(), Some("box"));
    }

    #[test]
    fn test_instance_payload_is_an_init_with_its_name() {
        let flags = Options {
            pid: true,
            instance: Some("web".into()),
            ..Default::default()
        };
        let mut r = req(flags);
        r.action = Action::Start;
        let p = plan(&r, &LaunchPolicy::default(), &host()).expect("ok");
        assert!(p.process.instance_init);
        assert!(p.namespaces.pid && p.namespaces.init);
        assert!(
            p.process
                .env
                .contains(&("APPTAINER_INSTANCE".into(), "web".into()))
        );
        // A command joined to an instance is no init, even `run instance://NAME`.
        let flags = Options {
            pid: true,
            instance: Some("web".into()),
            joining: true,
            ..Default::default()
        };
        let mut r = req(flags);
        r.action = Action::Run;
        let p = plan(&r, &LaunchPolicy::default(), &host()).expect("ok");
        assert!(!p.process.instance_init);
        assert!(
            p.process
                .env
                .contains(&("APPTAINER_INSTANCE".into(), "web".into()))
        );
    }

    #[test]
    fn test_steps_alone() {
        let policy = LaunchPolicy::default();
        // Home under fakeroot is /root, from the caller's home; none with --no-home.
        let h = home(
            &Options::default(),
            &policy,
            &host(),
            &listed(),
            true,
            &mut vec![],
        )
        .expect("ok");
        assert_eq!(h.dest, PathBuf::from("/root"));
        let m = h.mount.expect("mounted");
        assert_eq!(m.source, MountSource::Host("/home/u".into()));
        let o = Options {
            no_home: true,
            ..Default::default()
        };
        assert!(
            home(&o, &policy, &host(), &listed(), false, &mut vec![])
                .expect("ok")
                .mount
                .is_none()
        );
        // A missing --home source is refused unless contained.
        let o = Options {
            home: Some(HomeSpec::parse("/nope:/home/x").expect("spec")),
            ..Default::default()
        };
        assert!(matches!(
            home(&o, &policy, &host(), &listed(), false, &mut vec![]),
            Err(PlanError::MissingBindSource(_))
        ));
        // Temporary directories under --workdir with --contain.
        let o = Options {
            contain: true,
            workdir: Some("/w".into()),
            ..Default::default()
        };
        let t = temporary_dirs(&o, &policy, &listed(), &mut Vec::new());
        let sources: Vec<_> = t.iter().map(|m| m.source.clone()).collect();
        assert_eq!(
            sources,
            [
                MountSource::Host("/w/tmp".into()),
                MountSource::Host("/w/var_tmp".into())
            ]
        );
        assert_eq!(
            workdir_dirs(&o, &t),
            [PathBuf::from("/w/tmp"), PathBuf::from("/w/var_tmp")]
        );
        // Configured binds: contained, only localtime and hosts; files stay files.
        let b = configured_binds(&o, &policy, &listed());
        assert!(b.iter().all(|m| m.target == TargetKind::File && m.optional));
        assert_eq!(b.len(), 2);
        // Refusals name the flag.
        let e = refuse_unavailable(&Unavailable {
            oci: true,
            ..Default::default()
        })
        .expect_err("refused");
        assert!(e.to_string().contains("--oci"), "{e}");
        // Scratch destinations must be absolute.
        let o = Options {
            scratch: vec!["rel".into()],
            ..Default::default()
        };
        assert!(scratch_dirs(&o, &policy, &mut Vec::new()).is_err());
    }

    /// Resource limits become the plan's cgroup writes, with their warnings; what cgroup v2
    /// cannot limit is refused before anything starts.
    #[test]
    fn test_resource_limits_become_cgroup_writes() {
        use crate::config::cgroups::{CgroupsConfig, Memory, Pids};
        let p = plan(&req(Options::default()), &LaunchPolicy::default(), &host()).expect("ok");
        assert_eq!(p.cgroup, None);
        let limits = CgroupsConfig {
            memory: Some(Memory {
                limit: Some(1 << 20),
                disable_oom_killer: Some(true),
                ..Default::default()
            }),
            pids: Some(Pids { limit: 9 }),
            ..Default::default()
        };
        let opts = Options {
            resources: Some(limits.clone()),
            ..Default::default()
        };
        let p = plan(&req(opts), &LaunchPolicy::default(), &host()).expect("ok");
        let cg = p.cgroup.expect("a cgroup");
        let files: Vec<(&str, &str)> = cg
            .writes
            .iter()
            .map(|w| (w.file.as_str(), w.value.as_str()))
            .collect();
        assert_eq!(files, [("memory.max", "1048576"), ("pids.max", "9")]);
        assert!(p.warnings.iter().any(|w| w.contains("--oom-kill-disable")));
        let opts = Options {
            resources: Some(CgroupsConfig {
                memory: Some(Memory {
                    swappiness: Some(5),
                    ..Default::default()
                }),
                ..limits
            }),
            ..Default::default()
        };
        let e = plan(&req(opts), &LaunchPolicy::default(), &host()).expect_err("refused");
        assert!(
            e.to_string()
                .starts_with("memory.swappiness cannot be applied"),
            "{e}"
        );
    }

    #[test]
    fn test_disallowed_namespaces_are_dropped_with_a_warning() {
        let flags = Options {
            pid: true,
            ipc: true,
            init: true,
            uts: Some("box".into()),
            ..Default::default()
        };
        let policy = LaunchPolicy {
            allow_pid_ns: false,
            allow_ipc_ns: false,
            allow_uts_ns: false,
            ..Default::default()
        };
        let p = plan(&req(flags.clone()), &policy, &host()).expect("runs");
        assert!(!p.namespaces.pid && !p.namespaces.ipc && !p.namespaces.init);
        assert_eq!(p.namespaces.uts, None);
        for w in [
            "Not virtualizing pid namespace by configuration",
            "Not virtualizing ipc namespace by configuration",
            "Not virtualizing uts namespace by configuration",
            "Container hostname cannot be set.",
        ] {
            assert!(p.warnings.iter().any(|x| x == w), "{w}: {:?}", p.warnings);
        }
        // Allowed: kept, no warning.
        let p = plan(&req(flags.clone()), &LaunchPolicy::default(), &host()).expect("runs");
        assert!(p.namespaces.pid && p.namespaces.ipc && p.namespaces.init);
        assert_eq!(p.namespaces.uts.as_deref(), Some("box"));
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
        // Not requested: nothing to drop, nothing said.
        let p = plan(&req(Options::default()), &policy, &host()).expect("runs");
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
        // Fakeroot keeps its own PID namespace (sifr's safety rule) whatever the policy.
        let mut r = req(flags);
        r.ids.uid = 0;
        let p = plan(&r, &policy, &host()).expect("runs");
        assert!(p.namespaces.pid);
    }

    #[test]
    fn test_overlay_disabled_falls_back_to_underlay() {
        let no_overlay = LaunchPolicy {
            enable_overlay: EnableOverlay::No,
            ..Default::default()
        };
        // Underlay allowed (the default): a read-only layer that creates mount points.
        let p = plan(&req(Options::default()), &no_overlay, &host()).expect("ok");
        assert_eq!(p.layer, RootLayer::Session);
        // Both disabled: the image itself.
        let neither = LaunchPolicy {
            enable_underlay: EnableUnderlay::No,
            ..no_overlay.clone()
        };
        let p = plan(&req(Options::default()), &neither, &host()).expect("ok");
        assert_eq!(p.layer, RootLayer::Direct);
        // --writable-tmpfs needs the overlay, as in Apptainer.
        let flags = Options {
            writable_tmpfs: true,
            ..Default::default()
        };
        let e = plan(&req(flags.clone()), &no_overlay, &host()).expect_err("refused");
        assert_eq!(
            e.to_string(),
            "--writable-tmpfs requires 'enable overlay', but the administrator set it to 'no' (sifr.conf: enable overlay = no); drop --writable-tmpfs"
        );
        let p = plan(&req(flags), &LaunchPolicy::default(), &host()).expect("ok");
        assert_eq!(p.layer, RootLayer::WritableTmpfs);
    }

    #[test]
    fn test_mount_slave_sets_propagation() {
        let p = plan(&req(Options::default()), &LaunchPolicy::default(), &host()).expect("ok");
        assert!(!p.namespaces.private_mounts);
        let policy = LaunchPolicy {
            mount_slave: false,
            ..Default::default()
        };
        let p = plan(&req(Options::default()), &policy, &host()).expect("ok");
        assert!(p.namespaces.private_mounts);
    }

    #[test]
    fn test_home_onto_root_is_skipped() {
        let mut h = host();
        h.user.home = "/".into();
        h.cwd = "/".into();
        let p = plan(&req(Options::default()), &LaunchPolicy::default(), &h).expect("runs");
        assert!(!p.mounts.iter().any(|m| m.why == "home directory"));
        assert_eq!(p.process.home, PathBuf::from("/"));
        assert!(
            p.warnings
                .contains(&"Skipping impossible home directory mount to '/'".to_string()),
            "{:?}",
            p.warnings
        );
        let flags = Options {
            home: Some(HomeSpec::parse("/data:/").expect("spec")),
            ..Default::default()
        };
        let p = plan(&req(flags), &LaunchPolicy::default(), &host()).expect("runs");
        assert!(!p.mounts.iter().any(|m| m.dest == Path::new("/")));
    }

    #[test]
    fn test_no_mount_removes_bind_path_entries_by_destination() {
        let mut policy = LaunchPolicy::default();
        policy.bind_paths.push(BindSpec {
            source: "/data".into(),
            destination: "/opt/site".into(),
            readonly: false,
            nonested: false,
        });
        let binds = |no_mount: Vec<NoMount>, contain: bool| {
            let o = Options {
                no_mount,
                contain,
                ..Default::default()
            };
            configured_binds(&o, &policy, &listed())
                .iter()
                .map(|m| m.dest.display().to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            binds(vec![], false),
            ["/etc/localtime", "/etc/hosts", "/opt/site"]
        );
        assert_eq!(
            binds(vec![NoMount::Dest("/etc/hosts".into())], false),
            ["/etc/localtime", "/opt/site"]
        );
        assert_eq!(
            binds(vec![NoMount::Dest("/etc/localtime".into())], true),
            ["/etc/hosts"]
        );
        // By destination, not source.
        assert_eq!(binds(vec![NoMount::Dest("/data".into())], false).len(), 3);
        assert_eq!(
            binds(vec![NoMount::Dest("/opt/site".into())], false),
            ["/etc/localtime", "/etc/hosts"]
        );
        assert!(binds(vec![NoMount::BindPaths], false).is_empty());
    }

    /// Every sifr.conf directive the planner reads reaches the policy: a `From<&Config>`
    /// that dropped one would leave its default here.
    #[test]
    fn test_policy_takes_every_directive_from_the_config() {
        let c = Config::parse(
            "mount proc = no\nmount sys = no\nmount dev = minimal\nmount devpts = no\n\
             mount home = no\nmount tmp = no\nmount hostfs = yes\nmount slave = no\n\
             bind path = /data:/opt/data:ro\nuser bind control = no\nconfig passwd = no\n\
             config group = no\nconfig resolv_conf = no\nenable overlay = no\n\
             enable underlay = no\nsessiondir max size = 7\nmemory fs type = ramfs\n\
             allow pid ns = no\nallow ipc ns = no\nallow uts ns = no\nallow user ns = no\n\
             always use nv = yes\nalways use rocm = yes\nuse nvidia-container-cli = yes\n",
            crate::config::Source::BuiltIn("test"),
        )
        .expect("parses");
        let want = LaunchPolicy {
            mount_proc: false,
            mount_sys: false,
            mount_dev: MountDev::Minimal,
            mount_devpts: false,
            mount_home: false,
            mount_tmp: false,
            mount_hostfs: true,
            bind_paths: vec![BindSpec {
                source: "/data".into(),
                destination: "/opt/data".into(),
                readonly: true,
                nonested: false,
            }],
            user_bind_control: false,
            config_passwd: false,
            config_group: false,
            config_resolv_conf: false,
            enable_overlay: EnableOverlay::No,
            enable_underlay: EnableUnderlay::No,
            mount_slave: false,
            sessiondir_max_size_mb: 7,
            kept_mount_idle_secs: 300,
            memory_fs_type: MemoryFs::Ramfs,
            allow_pid_ns: false,
            allow_ipc_ns: false,
            allow_uts_ns: false,
            allow_net_ns: true,
            pasta: c.find_binary("pasta").map_err(|e| e.to_string()),
            allow_user_ns: false,
            fuse2fs: c.find_binary("fuse2fs").ok(),
            fuse_overlayfs: c.find_binary("fuse-overlayfs").ok(),
            gpu: GpuPolicy {
                always_use_nv: true,
                always_use_rocm: true,
                use_nvidia_container_cli: true,
            },
        };
        assert_eq!(LaunchPolicy::from(&c), want);
    }

    /// The mount directives change the plan (each one alone against the defaults).
    #[test]
    fn test_each_mount_directive_changes_the_plan() {
        let mut h = host();
        h.mountpoints = vec!["/scratch".into()];
        h.cwd = "/".into();
        let mounts = |policy: LaunchPolicy| {
            let p = plan(&req(Options::default()), &policy, &h).expect("ok");
            (dests(&p), p)
        };
        let (base, p) = mounts(LaunchPolicy::default());
        assert_eq!((p.session.size_mb, p.session.fstype), (64, MemoryFs::Tmpfs));
        let d = LaunchPolicy::default;
        for (policy, gone) in [
            (
                LaunchPolicy {
                    mount_proc: false,
                    ..d()
                },
                "/proc",
            ),
            (
                LaunchPolicy {
                    mount_sys: false,
                    ..d()
                },
                "/sys",
            ),
            (
                LaunchPolicy {
                    mount_dev: MountDev::No,
                    ..d()
                },
                "/dev",
            ),
            (
                LaunchPolicy {
                    mount_home: false,
                    ..d()
                },
                "/home/u",
            ),
            (
                LaunchPolicy {
                    mount_tmp: false,
                    ..d()
                },
                "/tmp",
            ),
            (
                LaunchPolicy {
                    config_passwd: false,
                    ..d()
                },
                "/etc/passwd",
            ),
            (
                LaunchPolicy {
                    config_group: false,
                    ..d()
                },
                "/etc/group",
            ),
            (
                LaunchPolicy {
                    config_resolv_conf: false,
                    ..d()
                },
                "/etc/resolv.conf",
            ),
            (
                LaunchPolicy {
                    bind_paths: vec![],
                    ..d()
                },
                "/etc/hosts",
            ),
        ] {
            assert!(base.iter().any(|m| m == gone), "{gone} in the default plan");
            assert!(!mounts(policy).0.iter().any(|m| m == gone), "{gone}");
        }
        assert!(!base.iter().any(|m| m == "/scratch"));
        let (m, _) = mounts(LaunchPolicy {
            mount_hostfs: true,
            ..d()
        });
        assert!(m.iter().any(|m| m == "/scratch"), "mount hostfs");
        let devpts = |on: bool| {
            let (_, p) = mounts(LaunchPolicy {
                mount_dev: MountDev::Minimal,
                mount_devpts: on,
                ..d()
            });
            p.mounts
                .iter()
                .any(|m| matches!(m.source, MountSource::MinimalDev { devpts: true, .. }))
        };
        assert!(devpts(true) && !devpts(false), "mount devpts");
        let (_, p) = mounts(LaunchPolicy {
            sessiondir_max_size_mb: 5,
            memory_fs_type: MemoryFs::Ramfs,
            ..d()
        });
        assert_eq!((p.session.size_mb, p.session.fstype), (5, MemoryFs::Ramfs));
        let flags = Options {
            binds: vec![BindSpec {
                source: "/data".into(),
                destination: "/data".into(),
                readonly: false,
                nonested: false,
            }],
            ..Default::default()
        };
        let policy = LaunchPolicy {
            user_bind_control: false,
            ..d()
        };
        // user bind control = no: the bind is ignored with a warning (binds' own tests).
        let p = plan(&req(flags), &policy, &h).expect("runs");
        assert!(!p.mounts.iter().any(|m| m.dest == Path::new("/data")));
        assert!(
            p.warnings.iter().any(|w| w.contains("user bind control")),
            "{:?}",
            p.warnings
        );
    }

    /// Every flag sifr parses but does not implement is refused with one line naming it;
    /// none is dropped silently.
    #[test]
    fn test_unimplemented_flags_are_refused_by_name() {
        let d = Unavailable::default;
        let cases: Vec<(Unavailable, &str)> = vec![
            (
                Unavailable {
                    unsquash: true,
                    ..d()
                },
                "--unsquash",
            ),
            (
                Unavailable {
                    ignore_userns: true,
                    ..d()
                },
                "--ignore-userns",
            ),
            (
                Unavailable {
                    other: vec!["--fusemount"],
                    ..d()
                },
                "--fusemount",
            ),
            (
                Unavailable {
                    other: vec!["--device"],
                    ..d()
                },
                "--device",
            ),
            (
                Unavailable {
                    other: vec!["--underlay"],
                    ..d()
                },
                "--underlay",
            ),
            (
                Unavailable {
                    other: vec!["--boot"],
                    ..d()
                },
                "--boot requires root",
            ),
            (
                Unavailable {
                    security: vec!["seccomp:".into()],
                    ..d()
                },
                "--security seccomp:",
            ),
            (
                Unavailable {
                    security: vec!["apparmor:p".into()],
                    ..d()
                },
                "--security apparmor:p",
            ),
            (
                Unavailable {
                    security: vec!["selinux:l".into()],
                    ..d()
                },
                "--security selinux:l",
            ),
            (
                Unavailable {
                    security: vec!["bogus".into()],
                    ..d()
                },
                "--security bogus",
            ),
        ];
        // uid:/gid: pass here; `run_as` decides (test_security_uid_gid_run_as).
        let u = Unavailable {
            security: vec!["uid:0".into(), "gid:0".into()],
            ..d()
        };
        assert!(refuse_unavailable(&u).is_ok());
        for (u, needle) in cases {
            let e = refuse_unavailable(&u).expect_err(needle);
            let msg = e.to_string();
            assert!(msg.starts_with(needle), "{msg}");
            assert_eq!(msg.lines().count(), 1, "{msg}");
        }
    }

    /// `--security uid:/gid:`: applied under fakeroot with subordinate ids (the payload
    /// starts with no capability, as Apptainer's), the first of each counts; refused in one
    /// line without fakeroot, in the root-mapped mode, for an unmapped id or a bad number.
    #[test]
    fn test_security_uid_gid_run_as() {
        let sec = |v: &[&str]| Options {
            unavailable: Unavailable {
                security: v.iter().map(|s| s.to_string()).collect(),
                ..Unavailable::default()
            },
            ..Options::default()
        };
        let fakeroot = |o: Options, emulation: Emulation| {
            let mut r = req(o);
            r.ids.uid = 0;
            r.ids.gid = 0;
            r.ids.uid_map = vec![(0, 1000, 1), (1, 200_000, 65_536)];
            r.ids.gid_map = vec![(0, 1000, 1), (1, 200_000, 65_536)];
            r.emulation = Some(emulation);
            plan(&r, &LaunchPolicy::default(), &host())
        };
        let p = fakeroot(sec(&["uid:99", "gid:98:97", "uid:5"]), Emulation::MknodOnly).expect("ok");
        assert_eq!(
            p.security.run_as,
            Some(RunAs {
                uid: Some(99),
                gids: vec![98, 97]
            })
        );
        assert!(p.security.caps.is_empty());
        // --add-caps still adds; the PID namespace of fakeroot stays.
        let mut o = sec(&["uid:99"]);
        o.caps.add = Some("chown".into());
        let p = fakeroot(o, Emulation::MknodOnly).expect("ok");
        assert_eq!(
            p.security.caps,
            CapMask(caps::Capability::CAP_CHOWN.bitmask())
        );
        assert!(p.namespaces.pid);
        let p = fakeroot(sec(&["gid:7"]), Emulation::MknodOnly).expect("ok");
        assert_eq!(
            p.security.run_as,
            Some(RunAs {
                uid: None,
                gids: vec![7]
            })
        );
        for (o, emulation, needle) in [
            (sec(&["uid:70000"]), Emulation::MknodOnly, "not mapped"),
            (sec(&["gid:1:70000"]), Emulation::MknodOnly, "not mapped"),
            (sec(&["uid:x"]), Emulation::MknodOnly, "expected uid:N"),
            (sec(&["gid:1:"]), Emulation::MknodOnly, "expected gid:N"),
            (sec(&["uid:99"]), Emulation::RootMapped, "maps only root"),
        ] {
            let e = fakeroot(o, emulation).expect_err(needle).to_string();
            assert!(e.contains(needle) && e.lines().count() == 1, "{e}");
        }
        let e = plan(&req(sec(&["uid:99"])), &LaunchPolicy::default(), &host())
            .expect_err("no fakeroot")
            .to_string();
        assert!(
            e.starts_with("--security uid:99 is not supported by sifr: other ids need --fakeroot"),
            "{e}"
        );
        let p = plan(&req(Options::default()), &LaunchPolicy::default(), &host()).expect("ok");
        assert_eq!(p.security.run_as, None);
    }

    /// `--security seccomp:`: the first one is the profile (Apptainer's GetParam); the
    /// profile is compiled into the plan, with every capability under fakeroot.
    #[test]
    fn test_seccomp_profile_in_the_plan() {
        let sec = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            seccomp_param(&sec(&["apparmor:x", "seccomp:a.json", "seccomp:b"])),
            Some("a.json")
        );
        assert_eq!(seccomp_param(&sec(&["selinux:l"])), None);
        let u = Unavailable {
            security: sec(&["seccomp:a.json", "seccomp:b"]),
            ..Unavailable::default()
        };
        assert!(refuse_unavailable(&u).is_ok());
        let text = r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
            {"names": ["mount"], "action": "SCMP_ACT_ERRNO",
             "excludes": {"caps": ["CAP_SYS_ADMIN"]}}]}"#;
        let source = crate::config::Source::File("/a.json".into());
        let profile = SeccompProfile::parse(text, &source).expect("parses");
        let mut r = req(Options::default());
        r.seccomp = Some(Loaded {
            value: profile,
            source,
        });
        let p = plan(&r, &LaunchPolicy::default(), &host()).expect("ok");
        let normal = p.security.profile.expect("profile");
        assert_eq!(normal.origin, "/a.json");
        r.ids.uid = 0;
        r.emulation = Some(Emulation::RootMapped);
        let p = plan(&r, &LaunchPolicy::default(), &host()).expect("ok");
        let fakeroot = p.security.profile.expect("profile");
        // The mount rule is excluded when the payload holds CAP_SYS_ADMIN.
        assert!(fakeroot.program.len() < normal.program.len());
        // A profile sifr cannot apply is refused at planning.
        let bad = r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
            {"names": ["bogus_call"], "action": "SCMP_ACT_ERRNO"}]}"#;
        let source = crate::config::Source::File("/bad.json".into());
        r.seccomp = Some(Loaded {
            value: SeccompProfile::parse(bad, &source).expect("parses"),
            source,
        });
        let e = plan(&r, &LaunchPolicy::default(), &host()).expect_err("refused");
        assert!(matches!(e, PlanError::Seccomp(_)), "{e}");
    }

    /// `user bind control = no`: --contain --workdir mounts no /tmp, /var/tmp from the
    /// workdir and the working directory is not bound, each with Apptainer's warning.
    #[test]
    fn test_user_bind_control_no_skips_workdir_tmp_and_cwd() {
        let policy = LaunchPolicy {
            user_bind_control: false,
            ..Default::default()
        };
        let o = Options {
            contain: true,
            workdir: Some("/w".into()),
            ..Default::default()
        };
        let p = plan(&req(o), &policy, &host()).expect("ok");
        assert!(
            !p.mounts.iter().any(|m| m.why == WHY_TEMPORARY),
            "{:?}",
            dests(&p)
        );
        assert!(!p.host_dirs.iter().any(|d| d.starts_with("/w/tmp")));
        assert!(
            p.warnings
                .iter()
                .any(|w| w == "User bind control is disabled by system administrator"),
            "{:?}",
            p.warnings
        );
        // Contained without --workdir: the session's own /tmp, no warning.
        let o = Options {
            contain: true,
            ..Default::default()
        };
        let p = plan(&req(o), &policy, &host()).expect("ok");
        assert_eq!(
            p.mounts.iter().filter(|m| m.why == WHY_TEMPORARY).count(),
            2
        );
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
        // Not contained: the working directory is not bound, with Apptainer's warning.
        let p = plan(&req(Options::default()), &policy, &host()).expect("ok");
        assert!(!p.mounts.iter().any(|m| m.dest == Path::new("/home/u/work")));
        assert!(
            p.warnings.iter().any(|w| w
                == "Not mounting current directory: user bind control is disabled by \
                    system administrator"),
            "{:?}",
            p.warnings
        );
    }

    /// `-B /dev/...` as Apptainer: added to a minimal /dev (even under `user bind control =
    /// no`), usable; `-B /dev` brings back the host's /dev; skips with its warnings.
    #[test]
    fn test_device_binds() {
        let probe = Listed {
            existing: ["/dev", "/dev/fuse", "/dev/null", "/home/u/work"]
                .iter()
                .map(PathBuf::from)
                .collect(),
            files: ["/dev/fuse", "/dev/null"]
                .iter()
                .map(PathBuf::from)
                .collect(),
        };
        let go = |binds: &[&str], contain: bool, policy: &LaunchPolicy, no_dev: bool| {
            let o = Options {
                contain,
                binds: binds
                    .iter()
                    .map(|b| BindSpec::parse(b).expect("spec"))
                    .collect(),
                no_mount: if no_dev { vec![NoMount::Dev] } else { vec![] },
                ..Default::default()
            };
            super::plan(&req(o), policy, &host(), &probe).expect("plan")
        };
        let d = LaunchPolicy::default();
        let no_ubc = LaunchPolicy {
            user_bind_control: false,
            ..Default::default()
        };
        let minimal = LaunchPolicy {
            mount_dev: MountDev::Minimal,
            ..Default::default()
        };
        for (policy, contain) in [(&d, true), (&no_ubc, true), (&minimal, false)] {
            let p = go(&["/dev/fuse"], contain, policy, false);
            let m = p
                .mounts
                .iter()
                .find(|m| m.dest == Path::new("/dev/fuse"))
                .expect("device bound");
            assert!(m.allow_dev && m.why == WHY_DEVICE, "{m:?}");
            assert_eq!(m.target, TargetKind::File);
            let dev = p.mounts.iter().position(|m| m.dest == Path::new("/dev"));
            let fuse = p
                .mounts
                .iter()
                .position(|m| m.dest == Path::new("/dev/fuse"));
            assert!(dev < fuse, "{:?}", dests(&p));
        }
        // A path leaving /dev by `..` is no device: user bind control applies to it.
        let p = go(&["/dev/shm/../../data"], true, &no_ubc, false);
        assert!(
            !p.mounts
                .iter()
                .any(|m| m.why == WHY_DEVICE || m.why == WHY_USER_BIND),
            "{:?}",
            dests(&p)
        );
        assert!(
            p.warnings.iter().any(|w| w.contains("user bind control")),
            "{:?}",
            p.warnings
        );
        // The host's /dev (no --contain): an ordinary user bind.
        let p = go(&["/dev/fuse"], false, &d, false);
        let m = p.mounts.iter().find(|m| m.dest == Path::new("/dev/fuse"));
        assert_eq!(m.map(|m| m.why), Some(WHY_USER_BIND));
        // -B /dev with --contain: the host's /dev, allowing devices.
        let p = go(&["/dev", "/dev/fuse"], true, &d, false);
        let devs: Vec<_> = p
            .mounts
            .iter()
            .filter(|m| m.dest.starts_with("/dev"))
            .collect();
        assert_eq!(devs.len(), 1, "{:?}", dests(&p));
        assert_eq!(devs[0].source, MountSource::Host("/dev".into()));
        assert!(devs[0].allow_dev);
        // The skips, in Apptainer's words.
        let nodev = LaunchPolicy {
            mount_dev: MountDev::No,
            ..Default::default()
        };
        for (binds, contain, policy, no_dev, warning) in [
            (
                "/dev/fuse:/dev/other",
                true,
                &d,
                false,
                "Skipping /dev/fuse bind mount: source and destination must be identical \
                 when binding to /dev",
            ),
            (
                "/dev/fuse",
                false,
                &d,
                true,
                "Skipping /dev/fuse bind mount: disallowed by configuration",
            ),
            (
                "/dev/fuse",
                true,
                &nodev,
                false,
                "Skipping /dev/fuse bind mount: disallowed by configuration",
            ),
            (
                "/dev/null",
                true,
                &d,
                false,
                "Skipping /dev/null bind mount: already mounted",
            ),
            (
                "/dev/nonexistent",
                true,
                &d,
                false,
                "Skipping /dev/nonexistent bind mount: no such file or directory",
            ),
        ] {
            let p = go(&[binds], contain, policy, no_dev);
            assert!(
                !p.mounts
                    .iter()
                    .any(|m| m.why == WHY_DEVICE || m.why == WHY_USER_BIND),
                "{binds}: {:?}",
                dests(&p)
            );
            assert!(p.warnings.iter().any(|w| w == warning), "{:?}", p.warnings);
        }
    }

    /// `--no-mount` with a word Apptainer does not know: its warning, and the plan is made.
    #[test]
    fn test_unknown_no_mount_word_warns() {
        let o = Options {
            no_mount: vec![NoMount::Unknown("bogus".into()), NoMount::Tmp],
            ..Default::default()
        };
        let p = plan(&req(o), &LaunchPolicy::default(), &host()).expect("ok");
        assert!(
            p.warnings
                .iter()
                .any(|w| w == "Ignoring unknown mount type 'bogus'"),
            "{:?}",
            p.warnings
        );
        assert!(!p.mounts.iter().any(|m| m.why == WHY_TEMPORARY));
    }

    /// `--overlay`: the writable directory becomes the upper layer, `:ro` ones lower layers
    /// with the last given on top (a former writable overlay contributes its upper/);
    /// Apptainer's refusals; image files and missing paths refused by name.
    #[test]
    fn test_overlay_directories() {
        use crate::launch::options::OverlaySpec;
        let probe = Listed {
            existing: ["/o/rw", "/o/ro1", "/o/ro2", "/o/ro2/upper", "/o/img"]
                .iter()
                .map(PathBuf::from)
                .collect(),
            files: vec![PathBuf::from("/o/img")],
        };
        let with = |specs: &[&str], f: fn(&mut Options)| {
            let mut o = Options {
                overlays: specs.iter().map(|s| OverlaySpec::parse(s)).collect(),
                ..Options::default()
            };
            f(&mut o);
            super::plan(&req(o), &LaunchPolicy::default(), &host(), &probe)
        };
        let p = with(&["/o/ro1:ro", "/o/rw", "/o/ro2:ro"], |_| {}).expect("ok");
        assert_eq!(p.layer, RootLayer::Persistent);
        assert_eq!(p.overlay.upper, Some(PathBuf::from("/o/rw")));
        assert_eq!(
            p.overlay.lowers,
            vec![PathBuf::from("/o/ro2/upper"), PathBuf::from("/o/ro1")]
        );
        // Read-only layers alone keep the read-only session layer.
        let p = with(&["/o/ro1:ro"], |_| {}).expect("ok");
        assert_eq!(p.layer, RootLayer::Session);
        assert_eq!(p.overlay.upper, None);

        let err =
            |specs: &[&str], f: fn(&mut Options)| with(specs, f).expect_err("refused").to_string();
        assert!(err(&["/o/rw", "/o/ro1"], |_| {}).contains("more than one writable overlay"));
        assert!(err(&["/o/rw"], |o| o.writable_tmpfs = true).contains("--writable-tmpfs"));
        assert!(err(&["/o/rw:ro"], |o| o.writable = true).contains("--writable"));
        assert!(err(&["/o/img"], |_| {}).starts_with("--overlay /o/img: cannot read it"));
        assert!(err(&["/o/none:ro"], |_| {}).contains("/o/none: no such directory"));
        let off = LaunchPolicy {
            enable_overlay: EnableOverlay::No,
            ..LaunchPolicy::default()
        };
        let o = Options {
            overlays: vec![OverlaySpec::parse("/o/rw")],
            ..Options::default()
        };
        let e = super::plan(&req(o), &off, &host(), &probe).expect_err("refused");
        assert!(
            e.to_string()
                .starts_with("--overlay requires 'enable overlay'")
        );
    }

    /// Overlay image files: kind by content (the probe's answer), read-only layers in
    /// command-line order with the last on top, mixed with directories; squashfs given
    /// writable is used read-only with Apptainer's warning; a writable ext3 layer is refused
    /// for now; a SIF image's own overlay partitions lie right above the image; bad files
    /// are refused by the probe's one line.
    #[test]
    fn test_overlay_images() {
        use crate::launch::options::OverlaySpec;
        use crate::launch::ovlfile::OverlayFileError;
        struct Files;
        impl HostProbe for Files {
            fn exists(&self, p: &Path) -> bool {
                p.starts_with("/o")
            }
            fn is_dir(&self, p: &Path) -> bool {
                p.starts_with("/o/dir")
            }
            fn writable(&self, _p: &Path) -> bool {
                true
            }
            fn overlay_file(&self, p: &Path) -> Result<Vec<ImageLayer>, OverlayFileError> {
                let fs = match p.to_str() {
                    Some("/o/e.img") => ImageFs::Ext3,
                    Some("/o/s.sqfs") => ImageFs::Squashfs,
                    _ => return Err(OverlayFileError::NotAnImage(p.into())),
                };
                Ok(vec![ImageLayer {
                    fs,
                    path: p.into(),
                    offset: 0,
                    size: 4096,
                    writable: false,
                }])
            }
        }
        let policy = LaunchPolicy {
            fuse2fs: Some("/usr/bin/fuse2fs".into()),
            fuse_overlayfs: None,
            ..LaunchPolicy::default()
        };
        let with = |specs: &[&str], r: Request| {
            let mut r = r;
            r.opts.overlays = specs.iter().map(|s| OverlaySpec::parse(s)).collect();
            super::plan(&r, &policy, &host(), &Files)
        };
        let p = with(
            &["/o/e.img:ro", "/o/dir:ro", "/o/s.sqfs"],
            req(Options::default()),
        )
        .expect("ok");
        assert_eq!(p.layer, RootLayer::Session);
        let fs: Vec<_> = p
            .overlay
            .images
            .iter()
            .map(|l| (l.fs, l.writable))
            .collect();
        assert_eq!(fs, [(ImageFs::Ext3, false), (ImageFs::Squashfs, false)]);
        assert_eq!(
            p.overlay.lower_stack(),
            [LowerRef::Image(1), LowerRef::Dir(0), LowerRef::Image(0)]
        );
        assert_eq!(p.overlay.fuse2fs, Some(PathBuf::from("/usr/bin/fuse2fs")));
        assert!(
            p.warnings.contains(
                &"Overlay image /o/s.sqfs is not writable, proceeding with read-only".to_string()
            ),
            "{:?}",
            p.warnings
        );
        // A SIF's own overlay partition: the bottom layer, read-only without --writable.
        let mut r = req(Options::default());
        r.sif_overlays = Some(vec![ImageLayer {
            fs: ImageFs::Ext3,
            path: "/img/busybox.sif".into(),
            offset: 8192,
            size: 4096,
            writable: false,
        }]);
        let p = with(&["/o/s.sqfs:ro"], r.clone()).expect("ok");
        assert_eq!(
            p.overlay.lower_stack(),
            [LowerRef::Image(1), LowerRef::Image(0)]
        );
        assert_eq!(p.overlay.images[0].offset, 8192);
        let err = |specs: &[&str], r: Request| with(specs, r).expect_err("refused").to_string();
        // --writable: the partition is the writable layer, stacked by fuse-overlayfs.
        r.opts.writable = true;
        let policy_fo = LaunchPolicy {
            fuse2fs: Some("/usr/bin/fuse2fs".into()),
            fuse_overlayfs: Some("/usr/bin/fuse-overlayfs".into()),
            ..LaunchPolicy::default()
        };
        let p = super::plan(&r, &policy_fo, &host(), &Files).expect("writable SIF");
        assert_eq!(p.layer, RootLayer::Fuse);
        assert_eq!(p.overlay.writable_image().map(|(i, _)| i), Some(0));
        assert!(p.overlay.lower_stack().is_empty());
        // Without fuse-overlayfs: one line naming it.
        let e = super::plan(&r, &policy, &host(), &Files)
            .expect_err("no fuse-overlayfs")
            .to_string();
        assert!(
            e.contains("needs fuse-overlayfs, which was not found"),
            "{e}"
        );
        // A writable ext3 image and a writable directory: two writable layers.
        let mut r2 = req(Options::default());
        r2.opts.overlays = vec![OverlaySpec::parse("/o/e.img"), OverlaySpec::parse("/o/dir")];
        let e = super::plan(&r2, &policy_fo, &host(), &Files)
            .expect_err("two writable")
            .to_string();
        assert!(e.contains("more than one writable overlay"), "{e}");
        r2.opts.overlays = vec![OverlaySpec::parse("/o/e.img")];
        let p = super::plan(&r2, &policy_fo, &host(), &Files).expect("writable image");
        assert_eq!(p.layer, RootLayer::Fuse);
        assert!(p.overlay.images[0].writable);
        // --writable on a SIF without an overlay partition: Apptainer's words.
        let mut r = req(Options {
            writable: true,
            ..Options::default()
        });
        r.sif_overlays = Some(vec![]);
        assert_eq!(
            err(&[], r),
            "no SIF writable overlay partition found in /img/busybox.sif"
        );
        assert_eq!(
            err(&["/o/junk"], req(Options::default())),
            "--overlay /o/junk: not an overlay image (neither a directory, an ext3 or squashfs \
             image, nor a SIF with an overlay partition)"
        );
        // fuse2fs missing: one line naming the image and the package.
        let none = LaunchPolicy {
            fuse2fs: None,
            ..LaunchPolicy::default()
        };
        let mut r = req(Options::default());
        r.opts.overlays = vec![OverlaySpec::parse("/o/e.img:ro")];
        let e = super::plan(&r, &none, &host(), &Files)
            .expect_err("no fuse2fs")
            .to_string();
        assert!(
            e.starts_with("/o/e.img needs fuse2fs, which was not found"),
            "{e}"
        );
        // enable overlay = driver: a writable directory goes through fuse-overlayfs.
        let driver = LaunchPolicy {
            enable_overlay: EnableOverlay::Driver,
            ..policy_fo.clone()
        };
        let mut r = req(Options::default());
        r.opts.overlays = vec![OverlaySpec::parse("/o/dir")];
        let p = super::plan(&r, &driver, &host(), &Files).expect("driver");
        assert_eq!(p.layer, RootLayer::Fuse);
        assert_eq!(
            p.overlay.fuse_overlayfs,
            Some(PathBuf::from("/usr/bin/fuse-overlayfs"))
        );
        let p = super::plan(&r, &policy_fo, &host(), &Files).expect("yes");
        assert_eq!(p.layer, RootLayer::Persistent);
    }

    /// `enable overlay = try` is Apptainer's old spelling of `yes` (its sifr.conf: "'try'
    /// is obsolete and treated the same as 'yes'"; its code tests only for "no" and
    /// "driver"): the same plan as `yes` for the implied session layer, --writable-tmpfs
    /// and --overlay directories.
    #[test]
    fn test_enable_overlay_try_is_yes() {
        use crate::launch::options::OverlaySpec;
        let probe = Listed {
            existing: ["/o/rw", "/o/ro"].iter().map(PathBuf::from).collect(),
            files: vec![],
        };
        let policy = |e| LaunchPolicy {
            enable_overlay: e,
            ..LaunchPolicy::default()
        };
        let cases = [
            Options::default(),
            Options {
                writable_tmpfs: true,
                ..Options::default()
            },
            Options {
                overlays: vec![OverlaySpec::parse("/o/ro:ro"), OverlaySpec::parse("/o/rw")],
                ..Options::default()
            },
        ];
        let mut layers = vec![];
        for o in cases {
            let yes = super::plan(
                &req(o.clone()),
                &policy(EnableOverlay::Yes),
                &host(),
                &probe,
            )
            .expect("yes");
            let tried =
                super::plan(&req(o), &policy(EnableOverlay::Try), &host(), &probe).expect("try");
            assert_eq!(yes, tried);
            layers.push(tried.layer);
        }
        assert_eq!(
            layers,
            [
                RootLayer::Session,
                RootLayer::WritableTmpfs,
                RootLayer::Persistent
            ]
        );
    }

    /// `--nv` on a described host: with `--contain` the device nodes go into the minimal
    /// /dev right after it; the libraries (/.singularity.d/libs, read-only) and programs
    /// come after the user binds; without `--contain` the host's /dev has the devices.
    #[test]
    fn test_gpu_steps_in_the_plan() {
        use crate::launch::gpu::{Found, HostLibrary, LIBS_DIR, WHY_GPU_DEVICE, WHY_LIBRARIES};
        let mut probe = listed();
        probe
            .existing
            .extend(["/dev/nvidia0", "/dev/nvidiactl"].map(PathBuf::from));
        probe
            .files
            .extend(["/dev/nvidia0", "/dev/nvidiactl"].map(PathBuf::from));
        let gpu = GpuHost {
            nv: Some(Found {
                libraries: vec![HostLibrary {
                    name: "libcuda.so.1".into(),
                    path: "/usr/lib64/libcuda.so.535".into(),
                }],
                binaries: vec!["/usr/bin/nvidia-smi".into()],
                devices: vec!["/dev/nvidia0".into(), "/dev/nvidiactl".into()],
                lists_libraries: true,
                lists_binaries: true,
                ..Found::default()
            }),
            ..GpuHost::default()
        };
        let go = |contain: bool| {
            let mut r = req(Options {
                contain,
                binds: vec![
                    BindSpec::parse("/data").expect("spec"),
                    BindSpec::parse("/etc/hosts:/.singularity.d/libs/libhosts.so").expect("spec"),
                ],
                ..Default::default()
            });
            r.gpu = gpu.clone();
            super::plan(&r, &LaunchPolicy::default(), &host(), &probe).expect("plan")
        };
        let p = go(true);
        let pos = |d: &str| p.mounts.iter().position(|m| m.dest == Path::new(d));
        let dev = pos("/dev").expect("dev");
        assert_eq!(pos("/dev/nvidia0"), Some(dev + 1), "{:?}", dests(&p));
        assert_eq!(pos("/dev/nvidiactl"), Some(dev + 2));
        assert!(p.mounts[dev + 1].allow_dev && p.mounts[dev + 1].why == WHY_GPU_DEVICE);
        let libs = pos(LIBS_DIR).expect("libs");
        assert!(pos("/data").expect("bind") < libs);
        assert!(p.mounts[libs].readonly && p.mounts[libs].why == WHY_LIBRARIES);
        // The user's bind into /.singularity.d/libs joins the libraries (not hidden by them).
        assert_eq!(
            p.mounts[libs].source,
            MountSource::FileSet {
                name: "libs".into(),
                files: vec![
                    ("/usr/lib64/libcuda.so.535".into(), "libcuda.so.1".into()),
                    ("/etc/hosts".into(), "libhosts.so".into()),
                ]
            }
        );
        assert_eq!(pos("/.singularity.d/libs/libhosts.so"), None);
        assert_eq!(pos("/usr/bin/nvidia-smi"), Some(libs + 1));
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
        let p = go(false);
        assert!(!p.mounts.iter().any(|m| m.why == WHY_GPU_DEVICE));
        assert!(p.mounts.iter().any(|m| m.dest == Path::new(LIBS_DIR)));
    }
}
