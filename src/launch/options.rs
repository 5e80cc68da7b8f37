//! What the user asked a container start to do, as typed values: `cmd` builds [`Options`]
//! from the command line (composite flags such as `--containall` already expanded, binds and
//! `--no-mount` already parsed) and the planner reads it. No command-line parser in here.

use std::path::{Path, PathBuf};

use super::binds::BindSpec;
use super::capabilities::CapOptions;
use super::gpu::GpuOptions;

/// The typed request for one container start. `Options::default()` is a start with no
/// flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    // --- isolation -------------------------------------------------------------------------
    /// `--contain`: minimal /dev, empty home and temporary directories.
    pub contain: bool,
    /// A PID namespace (`--pid`, `--containall`; not with `--no-pid`).
    pub pid: bool,
    /// Run a small init as PID 1 in the PID namespace (not with `--no-init`).
    pub init: bool,
    /// An IPC namespace (`--ipc`, `--containall`).
    pub ipc: bool,
    /// A UTS namespace (`--uts`), with this hostname when not empty (`--hostname`).
    pub uts: Option<String>,
    /// A network namespace (`--net`, `--network`).
    pub net: bool,
    /// The `--network` type asked for (`none` or `pasta`).
    pub network: Option<String>,
    /// `--network-args`, as given (Apptainer's `[NETWORK:]KEY=VALUE[;...]`).
    pub network_args: Vec<String>,

    // --- the root filesystem ---------------------------------------------------------------
    /// `--writable`: the sandbox itself, read-write.
    pub writable: bool,
    /// `--writable-tmpfs`: a throw-away writable layer.
    pub writable_tmpfs: bool,
    /// `--fresh-mount` (`SIFR_FRESH_MOUNT`): no kept image mount for this run.
    pub fresh_mount: bool,

    // --- mounts ----------------------------------------------------------------------------
    /// User binds, `-B` then `--mount`, in order (sources may be relative to the cwd).
    pub binds: Vec<BindSpec>,
    /// `-H/--home SRC[:DST]`.
    pub home: Option<HomeSpec>,
    /// `--no-home`.
    pub no_home: bool,
    /// `-W/--workdir`: where /tmp, /var/tmp, home (with `--contain`) and scratch live.
    pub workdir: Option<PathBuf>,
    /// `-S/--scratch` destinations.
    pub scratch: Vec<String>,
    /// `--no-mount`.
    pub no_mount: Vec<NoMount>,
    /// `--dns` servers, for a generated resolv.conf (`None`: the host's).
    pub dns: Option<Vec<String>>,

    // --- the payload -----------------------------------------------------------------------
    /// `--pwd`: the working directory inside the container (must exist).
    pub pwd: Option<PathBuf>,
    /// `--app`.
    pub app: Option<String>,
    /// `--cleanenv`.
    pub cleanenv: bool,
    /// `--env` specifications, as given (`NAME=VALUE`).
    pub env: Vec<String>,
    /// `--no-env` names.
    pub no_env: Vec<String>,
    /// Shell-evaluate injected values (not with `--no-eval`).
    pub evaluate: bool,
    /// Set umask 022 instead of keeping the caller's (`--no-umask`).
    pub reset_umask: bool,

    /// `--overlay` directories, in command-line order.
    pub overlays: Vec<OverlaySpec>,

    /// `--nv`, `--nvccli`, `--rocm`, `--no-nv`, `--no-rocm`, `--contain-libs`.
    pub gpu: GpuOptions,

    /// Resource limits from the cgroup flags or `--apply-cgroups` (`launch::cgroups`).
    pub resources: Option<crate::config::CgroupsConfig>,
    /// `--add-caps`, `--drop-caps`, `--no-privs`, `--keep-privs`.
    pub caps: CapOptions,

    // --- asked for, but not available rootless (the planner refuses or warns) -------------
    pub unavailable: Unavailable,

    // --- instances -------------------------------------------------------------------------
    /// The instance being started (`instance start|run`): `APPTAINER_INSTANCE`, a PID
    /// namespace always, and an init payload (see `launch::instance`).
    pub instance: Option<String>,
    /// The command joins the running instance `instance` (`instance://NAME`): its
    /// `APPTAINER_INSTANCE`, no init.
    pub joining: bool,
}

/// One `--overlay PATH[:ro]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlaySpec {
    pub path: PathBuf,
    pub readonly: bool,
}

impl OverlaySpec {
    /// Parses `PATH[:ro]` as Apptainer does: the path is what precedes the first `:`, and
    /// the layer is read-only when what follows is `ro`.
    pub fn parse(spec: &str) -> OverlaySpec {
        let (path, mode) = spec.split_once(':').unwrap_or((spec, ""));
        OverlaySpec {
            path: PathBuf::from(path),
            readonly: mode == "ro",
        }
    }
}

/// Requests the planner turns into a refusal or a warning.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Unavailable {
    pub allow_setuid: bool,
    pub oci: bool,
    /// `--security` options.
    pub security: Vec<String>,
    pub sharens: bool,
    /// `--unsquash`.
    pub unsquash: bool,
    /// hidden `--ignore-userns`.
    pub ignore_userns: bool,
    /// Other Apptainer action flags given that sifr does not implement (`--boot`,
    /// `--fusemount`, `--device`, ...), by name.
    pub other: Vec<&'static str>,
}

/// `-H/--home SRC[:DST]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HomeSpec {
    /// The host directory (relative to the cwd when relative).
    pub source: PathBuf,
    /// Where it appears in the container (absolute).
    pub dest: PathBuf,
    /// The specification as given, for messages.
    pub spec: String,
}

/// A `--home` specification that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("home specification {spec:?}: {why}")]
pub struct HomeError {
    pub spec: String,
    pub why: &'static str,
}

impl HomeSpec {
    /// Parses `SRC[:DST]`.
    pub fn parse(spec: &str) -> Result<HomeSpec, HomeError> {
        let fail = |why| HomeError {
            spec: spec.to_string(),
            why,
        };
        let (src, dst) = spec.split_once(':').unwrap_or((spec, spec));
        if src.is_empty() || dst.is_empty() {
            return Err(fail("empty path"));
        }
        if !dst.starts_with('/') {
            return Err(fail("the destination must be an absolute path"));
        }
        Ok(HomeSpec {
            source: PathBuf::from(src),
            dest: PathBuf::from(dst),
            spec: spec.to_string(),
        })
    }
}

/// One `--no-mount` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoMount {
    Proc,
    Sys,
    Dev,
    Devpts,
    Home,
    Tmp,
    Hostfs,
    Cwd,
    BindPaths,
    /// A mount by its destination inside the container.
    Dest(PathBuf),
    /// A word Apptainer does not know: ignored with its warning ("Ignoring unknown mount
    /// type"), the container runs.
    Unknown(String),
}

impl NoMount {
    /// Parses one entry (surrounding blanks ignored).
    pub fn parse(s: &str) -> NoMount {
        let s = s.trim();
        match s {
            "proc" => NoMount::Proc,
            "sys" => NoMount::Sys,
            "dev" => NoMount::Dev,
            "devpts" => NoMount::Devpts,
            "home" => NoMount::Home,
            "tmp" => NoMount::Tmp,
            "hostfs" => NoMount::Hostfs,
            "cwd" => NoMount::Cwd,
            "bind-paths" => NoMount::BindPaths,
            _ if s.starts_with('/') => NoMount::Dest(PathBuf::from(s)),
            _ => NoMount::Unknown(s.to_string()),
        }
    }
}

impl Default for Options {
    fn default() -> Options {
        Options {
            contain: false,
            pid: false,
            init: true,
            ipc: false,
            uts: None,
            net: false,
            network: None,
            network_args: Vec::new(),
            writable: false,
            writable_tmpfs: false,
            fresh_mount: false,
            binds: Vec::new(),
            home: None,
            no_home: false,
            workdir: None,
            scratch: Vec::new(),
            no_mount: Vec::new(),
            dns: None,
            pwd: None,
            app: None,
            cleanenv: false,
            env: Vec::new(),
            no_env: Vec::new(),
            evaluate: true,
            reset_umask: false,
            overlays: Vec::new(),
            gpu: GpuOptions::default(),
            resources: None,
            caps: CapOptions::default(),
            unavailable: Unavailable::default(),
            instance: None,
            joining: false,
        }
    }
}

impl Options {
    /// Whether `--no-mount` names this family of mounts.
    pub fn skips(&self, what: &NoMount) -> bool {
        self.no_mount.contains(what)
    }

    /// Whether `--no-mount` names this destination.
    pub fn skips_dest(&self, dest: &Path) -> bool {
        self.no_mount
            .iter()
            .any(|n| matches!(n, NoMount::Dest(d) if d == dest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_home_spec() {
        let h = HomeSpec::parse("/data:/home/alt").expect("ok");
        assert_eq!(
            (h.source, h.dest),
            (PathBuf::from("/data"), PathBuf::from("/home/alt"))
        );
        let h = HomeSpec::parse("/data").expect("ok");
        assert_eq!(h.dest, PathBuf::from("/data"));
        assert_eq!(
            HomeSpec::parse("rel").expect_err("relative dest").why,
            "the destination must be an absolute path"
        );
        assert_eq!(HomeSpec::parse(":/x").expect_err("empty").why, "empty path");
    }

    #[test]
    fn test_no_mount() {
        assert_eq!(NoMount::parse(" tmp "), NoMount::Tmp);
        assert_eq!(
            NoMount::parse("/etc/hosts"),
            NoMount::Dest("/etc/hosts".into())
        );
        // As Apptainer: an unknown word is kept, to be ignored with a warning.
        assert_eq!(NoMount::parse("bogus"), NoMount::Unknown("bogus".into()));
        let o = Options {
            no_mount: vec![NoMount::Tmp, NoMount::Dest("/etc/hosts".into())],
            ..Options::default()
        };
        assert!(o.skips(&NoMount::Tmp) && !o.skips(&NoMount::Proc));
        assert!(o.skips_dest(Path::new("/etc/hosts")));
    }
}
