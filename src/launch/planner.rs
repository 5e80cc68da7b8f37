//! Turns the command line, the configuration, the image and the host into a [`Plan`].
//!
//! Pure: no system calls (the host facts come in as values), so every rule below is unit
//! tested. The mount order follows Apptainer's (apptainer-contract.md §4.4): kernel
//! filesystems, /dev, host filesystems, configured binds, home, user binds, tmp, scratch,
//! generated files, the working directory.

use std::path::{Path, PathBuf};

use super::binds::{BindError, BindSpec};
use super::environ::{self, EnvError, EnvInputs};
use super::identity::HostUser;
use super::plan::*;
use super::seccomp::Emulation;
use crate::cli::action::ActionArgs;
use crate::config::Config;
use crate::config::directives::{EnableOverlay, MemoryFsType, MountDev};

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
    /// `bind path` entries (src[:dst]).
    pub bind_paths: Vec<String>,
    pub user_bind_control: bool,
    pub config_passwd: bool,
    pub config_group: bool,
    pub config_resolv_conf: bool,
    pub enable_overlay: EnableOverlay,
    pub sessiondir_max_size_mb: u64,
    pub memory_fs_type: String,
    pub allow_pid_ns: bool,
    pub allow_ipc_ns: bool,
    pub allow_uts_ns: bool,
    pub allow_net_ns: bool,
}

impl Default for LaunchPolicy {
    /// Apptainer's defaults, as sifr's built-in configuration has them.
    fn default() -> Self {
        LaunchPolicy::from(&Config::default())
    }
}

/// Facts about the host, gathered by the caller.
#[derive(Debug, Clone)]
pub struct HostFacts {
    pub user: HostUser,
    pub cwd: PathBuf,
    pub env: Vec<(String, String)>,
    pub umask: u32,
    /// Host mount points (for `mount hostfs`).
    pub mountpoints: Vec<PathBuf>,
    /// Paths that exist on the host (bind sources are checked by the caller, which fills
    /// this with the ones found, so the planner stays pure).
    pub existing: Vec<PathBuf>,
    /// Those of `existing` that are not directories.
    pub files: Vec<PathBuf>,
    /// Ask the real filesystem instead of the two lists above (the CLI sets this; tests
    /// describe the host with the lists).
    pub probe_filesystem: bool,
}

impl HostFacts {
    fn exists(&self, p: &Path) -> bool {
        if self.probe_filesystem {
            return p.exists();
        }
        self.existing.iter().any(|e| e == p)
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
                .map(|b| {
                    let mut s = format!("{}:{}", b.source.display(), b.dest.display());
                    if b.read_only {
                        s.push_str(":ro");
                    }
                    s
                })
                .collect(),
            user_bind_control: c.user_bind_control,
            config_passwd: c.config_passwd,
            config_group: c.config_group,
            config_resolv_conf: c.config_resolv_conf,
            enable_overlay: c.enable_overlay,
            sessiondir_max_size_mb: c.sessiondir_max_size,
            memory_fs_type: match c.memory_fs_type {
                MemoryFsType::Ramfs => "ramfs".into(),
                _ => "tmpfs".into(),
            },
            allow_pid_ns: c.allow_pid_ns,
            allow_ipc_ns: c.allow_ipc_ns,
            allow_uts_ns: c.allow_uts_ns,
            allow_net_ns: true,
        }
    }
}

/// What the user asked for.
#[derive(Debug, Clone)]
pub struct Request {
    pub action: Action,
    pub args: Vec<String>,
    pub flags: ActionArgs,
    pub shell: Option<String>,
    /// The image as named on the command line.
    pub image_display: PathBuf,
    pub root: RootSource,
    /// `--env-file` contents, read by the caller: (path, contents).
    pub env_files: Vec<(String, String)>,
    pub ids: IdMapPlan,
    /// Root emulation for fakeroot (`None` without `--fakeroot`).
    pub emulation: Option<Emulation>,
}

/// A request that cannot be planned. Each message says what to change.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error(transparent)]
    Env(#[from] EnvError),
    #[error("bind source {0} does not exist on the host (check the path given to -B/--bind)")]
    MissingBindSource(PathBuf),
    #[error(
        "user bind control is disabled by the administrator (sifr.conf: user bind control = no); remove {0}"
    )]
    UserBindDisabled(&'static str),
    #[error("{flag} is not supported by sifr: {why}")]
    Unsupported {
        flag: &'static str,
        why: &'static str,
    },
    #[error("{flag} requires root privileges (sifr never runs with them)")]
    RootOnly { flag: &'static str },
    #[error(
        "--writable needs a sandbox directory; {0} is an image file (use --writable-tmpfs for a throw-away writable layer)"
    )]
    WritableImage(PathBuf),
    #[error("{0} is disabled by the administrator (sifr.conf: enable overlay = no)")]
    OverlayDisabled(&'static str),
    #[error("the {ns} namespace is disabled by the administrator (sifr.conf: allow {ns} ns = no)")]
    NamespaceDisabled { ns: &'static str },
    #[error(
        "--network {0}: only 'none' (a loopback-only network namespace) is available without privileges"
    )]
    Network(String),
    #[error("home specification {0:?}: {1}")]
    Home(String, &'static str),
    #[error(
        "--no-mount {0:?}: expected proc, sys, dev, devpts, home, tmp, hostfs, cwd, bind-paths or an absolute path"
    )]
    NoMount(String),
}

/// Builds the plan.
pub fn plan(req: &Request, policy: &LaunchPolicy, host: &HostFacts) -> Result<Plan, PlanError> {
    let mut f = req.flags.clone();
    let mut warnings = Vec::new();

    // Composite flags, as Apptainer expands them.
    if f.compat {
        f.containall = true;
        f.no_init = true;
        f.no_umask = true;
        f.no_eval = true;
        f.writable_tmpfs = true;
    }
    if f.containall {
        f.contain = true;
        f.pid = true;
        f.ipc = true;
        f.cleanenv = true;
    }
    let fakeroot_uid0 = req.ids.uid == 0;

    // Flags that cannot be honoured rootless.
    if f.keep_privs {
        return Err(PlanError::RootOnly {
            flag: "--keep-privs",
        });
    }
    if f.allow_setuid {
        return Err(PlanError::RootOnly {
            flag: "--allow-setuid",
        });
    }
    if f.oci {
        return Err(PlanError::Unsupported {
            flag: "--oci",
            why: "sifr runs SIF images natively; drop --oci (or pass --no-oci)",
        });
    }
    if f.apply_cgroups.is_some() {
        return Err(PlanError::RootOnly {
            flag: "--apply-cgroups",
        });
    }
    for s in &f.security {
        if s.starts_with("uid:") || s.starts_with("gid:") {
            return Err(PlanError::RootOnly {
                flag: "--security uid:/gid:",
            });
        }
    }
    if f.cpus.is_some() || f.memory.is_some() || f.pids_limit.is_some() {
        warnings.push(
            "resource limits (--cpus, --memory, --pids-limit) are not applied: sifr does not \
             manage cgroups yet"
                .to_string(),
        );
    }
    if f.sharens {
        warnings.push("--sharens is not supported yet; running with separate namespaces".into());
    }

    // Namespaces.
    let pid = f.pid && !f.no_pid;
    if pid && !policy.allow_pid_ns {
        return Err(PlanError::NamespaceDisabled { ns: "pid" });
    }
    if f.ipc && !policy.allow_ipc_ns {
        return Err(PlanError::NamespaceDisabled { ns: "ipc" });
    }
    let uts = match (&f.hostname, f.uts) {
        (Some(h), _) => Some(h.clone()),
        (None, true) => Some(String::new()),
        (None, false) => None,
    };
    if uts.is_some() && !policy.allow_uts_ns {
        return Err(PlanError::NamespaceDisabled { ns: "uts" });
    }
    if let Some(n) = &f.network
        && n != "none"
    {
        return Err(PlanError::Network(n.clone()));
    }
    let net = f.net || f.network.is_some();
    if net && !policy.allow_net_ns {
        return Err(PlanError::NamespaceDisabled { ns: "net" });
    }
    let namespaces = NamespacePlan {
        pid,
        ipc: f.ipc,
        uts: uts.clone(),
        net,
        init: pid && !f.no_init,
    };

    // The root and its layer.
    if f.writable && !matches!(req.root, RootSource::Directory { .. }) {
        return Err(PlanError::WritableImage(req.image_display.clone()));
    }
    let layer = if f.writable {
        RootLayer::Direct
    } else if f.writable_tmpfs {
        if policy.enable_overlay == EnableOverlay::No {
            return Err(PlanError::OverlayDisabled("--writable-tmpfs"));
        }
        RootLayer::WritableTmpfs
    } else if policy.enable_overlay == EnableOverlay::No {
        RootLayer::Direct
    } else {
        RootLayer::Session
    };

    // --no-mount.
    let mut no_mount = Vec::new();
    for n in &f.no_mount {
        let n = n.trim();
        match n {
            "proc" | "sys" | "dev" | "devpts" | "home" | "tmp" | "hostfs" | "cwd"
            | "bind-paths" => no_mount.push(n.to_string()),
            _ if n.starts_with('/') => no_mount.push(n.to_string()),
            _ => return Err(PlanError::NoMount(n.to_string())),
        }
    }
    let skip = |name: &str| no_mount.iter().any(|n| n == name);
    let skip_dest = |dest: &Path| no_mount.iter().any(|n| Path::new(n) == dest);

    let mut mounts: Vec<MountOp> = Vec::new();
    let sys_op = |source: MountSource, dest: &str, why: &'static str| MountOp {
        source,
        dest: PathBuf::from(dest),
        target: TargetKind::Dir,
        readonly: false,
        recursive: true,
        allow_dev: false,
        optional: false,
        why,
    };

    // Kernel filesystems.
    if policy.mount_proc && !skip("proc") {
        let source = if pid {
            MountSource::Proc
        } else {
            MountSource::Host("/proc".into())
        };
        mounts.push(sys_op(source, "/proc", "/proc"));
    }
    if policy.mount_sys && !skip("sys") {
        mounts.push(sys_op(MountSource::Host("/sys".into()), "/sys", "/sys"));
    }
    // /dev: the host's whole /dev, or a minimal one with --contain.
    let dev_mode = if f.contain && policy.mount_dev == MountDev::Yes {
        MountDev::Minimal
    } else {
        policy.mount_dev
    };
    if !skip("dev") {
        match dev_mode {
            MountDev::Yes => mounts.push(MountOp {
                allow_dev: true,
                ..sys_op(MountSource::Host("/dev".into()), "/dev", "/dev")
            }),
            MountDev::Minimal => mounts.push(MountOp {
                allow_dev: true,
                ..sys_op(
                    MountSource::MinimalDev {
                        devpts: policy.mount_devpts && !skip("devpts"),
                        mqueue: f.ipc,
                    },
                    "/dev",
                    "minimal /dev",
                )
            }),
            MountDev::No => {}
        }
    }
    // Host filesystems (`mount hostfs = yes`).
    if policy.mount_hostfs && !skip("hostfs") {
        for mp in &host.mountpoints {
            let s = mp.to_string_lossy();
            let system = ["/proc", "/sys", "/dev", "/run", "/boot"]
                .iter()
                .any(|p| s == *p || s.starts_with(&format!("{p}/")));
            if s != "/" && !system {
                mounts.push(MountOp {
                    optional: true,
                    recursive: false,
                    ..sys_op(MountSource::Host(mp.clone()), &s, "host filesystem")
                });
            }
        }
    }
    // Configured binds (`bind path`); with --contain only /etc/localtime and /etc/hosts.
    if !skip("bind-paths") {
        for spec in &policy.bind_paths {
            let b = BindSpec::parse(spec)?;
            let keep_when_contained =
                b.source == Path::new("/etc/localtime") || b.source == Path::new("/etc/hosts");
            if f.contain && !keep_when_contained {
                continue;
            }
            if !host.exists(&b.source) {
                continue;
            }
            mounts.push(MountOp {
                source: MountSource::Host(b.source.clone()),
                target: if host_is_dir(host, &b.source) {
                    TargetKind::Dir
                } else {
                    TargetKind::File
                },
                readonly: b.readonly,
                recursive: true,
                optional: true,
                why: "configured bind path",
                dest: b.destination,
                allow_dev: false,
            });
        }
    }

    // Home.
    let user_home = PathBuf::from(&host.user.home);
    let (home_source, home_dest) = match &f.home {
        Some(spec) => {
            let (src, dst) = match spec.split_once(':') {
                Some((s, d)) => (s, d),
                None => (spec.as_str(), spec.as_str()),
            };
            if src.is_empty() || dst.is_empty() {
                return Err(PlanError::Home(spec.clone(), "empty path"));
            }
            if !dst.starts_with('/') {
                return Err(PlanError::Home(
                    spec.clone(),
                    "the destination must be an absolute path",
                ));
            }
            let src = if Path::new(src).is_relative() {
                host.cwd.join(src)
            } else {
                PathBuf::from(src)
            };
            if !f.contain && !host.exists(&src) {
                return Err(PlanError::MissingBindSource(src));
            }
            (Some(src), PathBuf::from(dst))
        }
        None if fakeroot_uid0 => (Some(user_home.clone()), PathBuf::from("/root")),
        None => (Some(user_home.clone()), user_home.clone()),
    };
    let mount_home = policy.mount_home && !f.no_home && !skip("home");
    if mount_home {
        let source = if f.contain && f.home.is_none() {
            match &f.workdir {
                Some(w) => MountSource::Host(w.join("home")),
                None => MountSource::SessionDir("home".into()),
            }
        } else {
            match &home_source {
                Some(s) if host.exists(s) => MountSource::Host(s.clone()),
                Some(s) if f.home.is_some() => MountSource::Host(s.clone()),
                _ => MountSource::SessionDir("home".into()),
            }
        };
        mounts.push(MountOp {
            source,
            dest: home_dest.clone(),
            target: TargetKind::Dir,
            readonly: false,
            recursive: true,
            allow_dev: false,
            optional: false,
            why: "home directory",
        });
    }

    // User binds.
    let mut user_binds = Vec::new();
    for spec in f.bind.iter().filter(|s| !s.trim().is_empty()) {
        user_binds.push(BindSpec::parse(spec)?.absolutize(&host.cwd));
    }
    for spec in &f.mount {
        user_binds.push(BindSpec::parse_mount(spec)?.absolutize(&host.cwd));
    }
    if !user_binds.is_empty() && !policy.user_bind_control {
        return Err(PlanError::UserBindDisabled("-B/--bind and --mount"));
    }
    for b in &user_binds {
        if !host.exists(&b.source) {
            return Err(PlanError::MissingBindSource(b.source.clone()));
        }
        mounts.push(MountOp {
            source: MountSource::Host(b.source.clone()),
            dest: b.destination.clone(),
            target: if host_is_dir(host, &b.source) {
                TargetKind::Dir
            } else {
                TargetKind::File
            },
            readonly: b.readonly,
            recursive: true,
            allow_dev: false,
            optional: false,
            why: "user bind",
        });
    }

    // /tmp and /var/tmp.
    if policy.mount_tmp && !skip("tmp") {
        for (dest, name) in [("/tmp", "tmp"), ("/var/tmp", "var_tmp")] {
            if skip_dest(Path::new(dest)) {
                continue;
            }
            let source = if f.contain {
                match &f.workdir {
                    Some(w) => MountSource::Host(w.join(name)),
                    None => MountSource::SessionDir(name.into()),
                }
            } else {
                MountSource::Host(PathBuf::from(dest))
            };
            if let MountSource::Host(p) = &source
                && !host.exists(p)
                && f.workdir.is_none()
            {
                continue;
            }
            mounts.push(MountOp {
                optional: !f.contain,
                ..sys_op(source, dest, "temporary directory")
            });
        }
    }
    // Scratch directories.
    if !f.scratch.is_empty() && !policy.user_bind_control {
        return Err(PlanError::UserBindDisabled("--scratch"));
    }
    for (i, s) in f.scratch.iter().filter(|s| !s.is_empty()).enumerate() {
        let dest = if s.starts_with('/') {
            PathBuf::from(s)
        } else {
            return Err(PlanError::Bind(BindError::RelativeDestination {
                spec: s.clone(),
                dest: s.clone(),
            }));
        };
        let source = match &f.workdir {
            Some(w) => MountSource::Host(w.join("scratch").join(format!("{i}"))),
            None => MountSource::SessionDir(format!("scratch{i}")),
        };
        mounts.push(MountOp {
            source,
            dest,
            target: TargetKind::Dir,
            readonly: false,
            recursive: false,
            allow_dev: false,
            optional: false,
            why: "scratch directory",
        });
    }

    // Generated files. As (fake)root on a writable root the image's own files are used.
    let own_files = fakeroot_uid0 && f.writable;
    if policy.config_passwd && !own_files && !skip_dest(Path::new("/etc/passwd")) {
        mounts.push(file_op(
            MountSource::Generated(GeneratedFile::Passwd {
                uid: req.ids.uid,
                home: home_dest.clone(),
            }),
            "/etc/passwd",
            "/etc/passwd",
        ));
    }
    // Under fakeroot the caller's host groups are not mapped: the image's group file stays.
    if policy.config_group && !fakeroot_uid0 && !skip_dest(Path::new("/etc/group")) {
        mounts.push(file_op(
            MountSource::Generated(GeneratedFile::Group),
            "/etc/group",
            "/etc/group",
        ));
    }
    if policy.config_resolv_conf && !skip_dest(Path::new("/etc/resolv.conf")) {
        let source = match &f.dns {
            Some(dns) => MountSource::Generated(GeneratedFile::Literal {
                name: "resolv.conf".into(),
                contents: dns
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| format!("nameserver {s}\n"))
                    .collect(),
            }),
            None => MountSource::Host("/etc/resolv.conf".into()),
        };
        let present = match &source {
            MountSource::Host(p) => host.exists(p),
            _ => true,
        };
        if present {
            mounts.push(MountOp {
                optional: true,
                ..file_op(source, "/etc/resolv.conf", "/etc/resolv.conf")
            });
        }
    }
    if let Some(h) = uts.as_ref().filter(|h| !h.is_empty()) {
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

    // The working directory, unless a mount already provides it.
    let covered = |p: &Path| mounts.iter().any(|m| p.starts_with(&m.dest));
    let cwd_system = ["/proc", "/sys", "/dev"]
        .iter()
        .any(|s| host.cwd.starts_with(s));
    if !f.contain
        && policy.user_bind_control
        && !skip("cwd")
        && !cwd_system
        && host.cwd != Path::new("/")
        && !covered(&host.cwd)
        && host.exists(&host.cwd)
    {
        mounts.push(MountOp {
            source: MountSource::Host(host.cwd.clone()),
            dest: host.cwd.clone(),
            target: TargetKind::Dir,
            readonly: false,
            recursive: true,
            allow_dev: false,
            optional: true,
            why: "current working directory",
        });
    }

    // The payload.
    let (cwd, cwd_required) = match &f.pwd {
        Some(p) => (PathBuf::from(p), true),
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
    if !user_binds.is_empty() {
        runtime.push((
            "BIND".into(),
            user_binds
                .iter()
                .map(BindSpec::display)
                .collect::<Vec<_>>()
                .join(","),
        ));
    }
    if let Some(app) = &f.app {
        runtime.push(("APPNAME".into(), app.clone()));
    }
    if let Some(sh) = &req.shell {
        runtime.push(("SHELL".into(), sh.clone()));
    }
    if f.no_eval {
        runtime.push(("NO_EVAL".into(), "1".into()));
    }
    let env = environ::compute(&EnvInputs {
        host: host.env.clone(),
        cleanenv: f.cleanenv,
        env_flags: f.env.clone(),
        env_files: req.env_files.clone(),
        no_env: f.no_env.clone(),
        runtime,
        fixed: vec![("HOME".into(), home_dest.display().to_string())],
    })?;
    warnings.extend(env.warnings);
    if let Some(n) = &req.ids.notice {
        warnings.insert(0, n.clone());
    }

    // --workdir subdirectories are created on the host before the start.
    let host_dirs = mounts
        .iter()
        .filter_map(|m| match &m.source {
            MountSource::Host(p) => f
                .workdir
                .as_ref()
                .filter(|w| p.starts_with(w))
                .map(|_| p.clone()),
            _ => None,
        })
        .collect();
    Ok(Plan {
        image_display: req.image_display.clone(),
        root: req.root.clone(),
        layer,
        writable: f.writable,
        ids: req.ids.clone(),
        namespaces,
        session: SessionPlan {
            size_mb: policy.sessiondir_max_size_mb,
            fstype: policy.memory_fs_type.clone(),
        },
        mounts,
        process: ProcessPlan {
            action: req.action,
            args: req.args.clone(),
            env: env.base,
            inject: env.inject,
            evaluate: !f.no_eval,
            cwd,
            cwd_required,
            home: home_dest,
            umask: if f.no_umask { Some(0o022) } else { None },
            app: f.app.clone(),
            shell: req.shell.clone(),
        },
        security: SecurityPlan {
            no_new_privs: true,
            keep_userns_caps: fakeroot_uid0,
            emulate_root: req.emulation == Some(Emulation::RootMapped),
            mknod_noop: req.emulation == Some(Emulation::MknodOnly),
        },
        host_dirs,
        warnings,
    })
}

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

/// Whether a host path is a directory (a bind of a file needs a file as mount point).
fn host_is_dir(host: &HostFacts, p: &Path) -> bool {
    if host.probe_filesystem {
        return p.is_dir();
    }
    !host.files.iter().any(|f| f == p)
}

#[cfg(test)]
mod tests {
    use super::*;

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
            probe_filesystem: false,
        }
    }

    fn req(flags: ActionArgs) -> Request {
        Request {
            action: Action::Exec,
            args: vec!["true".into()],
            flags,
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
        }
    }

    fn dests(p: &Plan) -> Vec<String> {
        p.mounts
            .iter()
            .map(|m| m.dest.display().to_string())
            .collect()
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
        let p = plan(
            &req(ActionArgs::default()),
            &LaunchPolicy::default(),
            &host(),
        )
        .expect("ok");
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
        let flags = ActionArgs {
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
        let flags = ActionArgs {
            containall: true,
            ..Default::default()
        };
        let p = plan(&req(flags), &LaunchPolicy::default(), &host()).expect("ok");
        assert!(p.namespaces.pid && p.namespaces.ipc && p.namespaces.init);
        assert_eq!(p.mounts[0].source, MountSource::Proc);
        assert!(!p.process.env.iter().any(|(k, _)| k == "FOO"));
    }

    #[test]
    fn test_user_binds_and_errors() {
        let flags = ActionArgs {
            bind: vec!["/data:/mnt/data:ro".into()],
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
        assert!(
            p.process
                .env
                .iter()
                .any(|(k, v)| k == "APPTAINER_BIND" && v == "/data:/mnt/data:ro")
        );

        let flags = ActionArgs {
            bind: vec!["/nonexistent:/x".into()],
            ..Default::default()
        };
        let e = plan(&req(flags), &LaunchPolicy::default(), &host()).expect_err("missing");
        assert!(e.to_string().contains("/nonexistent"), "{e}");

        let flags = ActionArgs {
            bind: vec!["/data".into()],
            ..Default::default()
        };
        let policy = LaunchPolicy {
            user_bind_control: false,
            ..Default::default()
        };
        assert!(matches!(
            plan(&req(flags), &policy, &host()),
            Err(PlanError::UserBindDisabled(_))
        ));
    }

    #[test]
    fn test_cwd_bound_when_outside_home() {
        let mut h = host();
        h.cwd = "/data".into();
        let p = plan(&req(ActionArgs::default()), &LaunchPolicy::default(), &h).expect("ok");
        assert!(dests(&p).contains(&"/data".to_string()));
        let mut h = host();
        h.cwd = "/proc/self".into();
        let p = plan(&req(ActionArgs::default()), &LaunchPolicy::default(), &h).expect("ok");
        assert!(!dests(&p).iter().any(|d| d.starts_with("/proc/")));
    }

    #[test]
    fn test_home_flags() {
        let flags = ActionArgs {
            home: Some("/data:/home/alt".into()),
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

        let flags = ActionArgs {
            no_home: true,
            ..Default::default()
        };
        let p = plan(&req(flags), &LaunchPolicy::default(), &host()).expect("ok");
        assert!(!p.mounts.iter().any(|m| m.why == "home directory"));
    }

    #[test]
    fn test_no_mount_and_policy() {
        let flags = ActionArgs {
            no_mount: vec!["tmp".into(), "/etc/hosts".into(), "proc".into()],
            ..Default::default()
        };
        let p = plan(&req(flags), &LaunchPolicy::default(), &host()).expect("ok");
        let d = dests(&p);
        assert!(!d.contains(&"/tmp".to_string()));
        assert!(!d.contains(&"/proc".to_string()));
        let flags = ActionArgs {
            no_mount: vec!["bogus".into()],
            ..Default::default()
        };
        assert!(matches!(
            plan(&req(flags), &LaunchPolicy::default(), &host()),
            Err(PlanError::NoMount(_))
        ));
        let policy = LaunchPolicy {
            mount_dev: MountDev::No,
            mount_home: false,
            config_passwd: false,
            ..Default::default()
        };
        let p = plan(&req(ActionArgs::default()), &policy, &host()).expect("ok");
        let d = dests(&p);
        assert!(!d.contains(&"/dev".to_string()));
        assert!(!d.contains(&"/home/u".to_string()));
        assert!(!d.contains(&"/etc/passwd".to_string()));
    }

    #[test]
    fn test_writable_and_network_rules() {
        let flags = ActionArgs {
            writable: true,
            ..Default::default()
        };
        assert!(matches!(
            plan(&req(flags), &LaunchPolicy::default(), &host()),
            Err(PlanError::WritableImage(_))
        ));
        let flags = ActionArgs {
            network: Some("bridge".into()),
            ..Default::default()
        };
        assert!(matches!(
            plan(&req(flags), &LaunchPolicy::default(), &host()),
            Err(PlanError::Network(_))
        ));
        let flags = ActionArgs {
            net: true,
            network: Some("none".into()),
            ..Default::default()
        };
        let p = plan(&req(flags), &LaunchPolicy::default(), &host()).expect("ok");
        assert!(p.namespaces.net);
        let policy = LaunchPolicy {
            enable_overlay: EnableOverlay::No,
            ..Default::default()
        };
        let p = plan(&req(ActionArgs::default()), &policy, &host()).expect("ok");
        assert_eq!(p.layer, RootLayer::Direct);
    }

    #[test]
    fn test_fakeroot_root_mapped() {
        let mut r = req(ActionArgs {
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
        };
        r.emulation = Some(Emulation::RootMapped);
        let p = plan(&r, &LaunchPolicy::default(), &host()).expect("ok");
        assert!(p.security.emulate_root && !p.security.mknod_noop);
        assert!(p.security.keep_userns_caps);
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
        let flags = ActionArgs {
            dns: Some("1.1.1.1,8.8.8.8".into()),
            hostname: Some("box".into()),
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
}
