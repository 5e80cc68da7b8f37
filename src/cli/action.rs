//! Flags shared by the container actions: `exec`, `run`, `shell`, `test` (and instances).
//!
//! Names, short forms and environment variables follow Apptainer's action flags, so that
//! workflow tools and batch scripts can call sifr unchanged. Flags that sifr accepts but
//! cannot honour rootless are still parsed here; the planner reports them clearly.

use std::path::PathBuf;

use clap::Args;

/// The image and the action flags.
#[derive(Debug, Args, Clone, Default)]
pub struct ActionArgs {
    // --- filesystem ------------------------------------------------------------------------
    /// a user-bind path specification: src[:dest[:opts]] (opts: ro, rw); repeatable and
    /// comma-separated ('\,' is a comma in a path). APPTAINER_BIND and APPTAINER_BINDPATH
    /// (or SINGULARITY_*) are appended
    // No `env =` here: clap would let -B replace the variables; `cmd::action` appends them,
    // and splits the lists itself (Apptainer's escapes and option lists).
    #[arg(short = 'B', long = "bind", value_name = "SPEC", action = clap::ArgAction::Append)]
    pub bind: Vec<String>,

    /// a mount specification: [type=bind,]source=/opt,destination=/hostopt[,ro]; repeatable.
    /// APPTAINER_MOUNT is appended
    #[arg(long = "mount", value_name = "SPEC", action = clap::ArgAction::Append)]
    pub mount: Vec<String>,

    /// a home directory specification: src[:dest]
    #[arg(short = 'H', long, value_name = "SPEC", env = "SIFR_HOME")]
    pub home: Option<String>,

    /// do not mount the user's home directory
    #[arg(long, env = "SIFR_NO_HOME", value_parser = clap::builder::BoolishValueParser::new())]
    pub no_home: bool,

    /// use minimal /dev and empty other directories (e.g. /tmp and $HOME) instead of
    /// sharing filesystems from the host
    #[arg(short = 'c', long, env = "SIFR_CONTAIN", value_parser = clap::builder::BoolishValueParser::new())]
    pub contain: bool,

    /// contain not only file systems, but also PID, IPC, and environment
    #[arg(short = 'C', long, env = "SIFR_CONTAINALL", value_parser = clap::builder::BoolishValueParser::new())]
    pub containall: bool,

    /// working directory to be used for /tmp, /var/tmp and $HOME (with --contain)
    #[arg(short = 'W', long, value_name = "DIR", env = "SIFR_WORKDIR")]
    pub workdir: Option<PathBuf>,

    /// include a scratch directory within the container that is linked to a temporary
    /// dir (use -W to force location); repeatable and comma-separated
    #[arg(short = 'S', long, value_name = "DIR", value_delimiter = ',', env = "SIFR_SCRATCH",
          action = clap::ArgAction::Append)]
    pub scratch: Vec<String>,

    /// initial working directory for the payload process inside the container
    #[arg(long, alias = "cwd", value_name = "DIR", env = "SIFR_PWD")]
    pub pwd: Option<String>,

    /// disable one or more mount points: proc, sys, dev, devpts, home, tmp, hostfs, cwd,
    /// bind-paths, or an absolute destination path; comma-separated
    #[arg(long, value_name = "MOUNTS", value_delimiter = ',', env = "SIFR_NO_MOUNT",
          action = clap::ArgAction::Append)]
    pub no_mount: Vec<String>,

    /// by default all images are read-only; this makes a sandbox writable
    #[arg(short = 'w', long, env = "SIFR_WRITABLE", value_parser = clap::builder::BoolishValueParser::new())]
    pub writable: bool,

    /// makes the file system accessible as read-write with non-persistent data (with
    /// overlay support only)
    #[arg(long, env = "SIFR_WRITABLE_TMPFS", value_parser = clap::builder::BoolishValueParser::new())]
    pub writable_tmpfs: bool,

    /// mount the image afresh for this run: do not use or keep a kept image mount (sifr
    /// only; see `kept mount idle timeout` in sifr.conf)
    #[arg(long, env = "SIFR_FRESH_MOUNT", value_parser = clap::builder::BoolishValueParser::new())]
    pub fresh_mount: bool,

    /// use an overlayFS image or directory for persistent data changes
    #[arg(short = 'o', long, value_name = "PATH", value_delimiter = ',', env = "SIFR_OVERLAY",
          action = clap::ArgAction::Append)]
    pub overlay: Vec<String>,

    /// extract the squashfs image to a temporary sandbox instead of mounting it
    #[arg(long, env = "SIFR_UNSQUASH", value_parser = clap::builder::BoolishValueParser::new())]
    pub unsquash: bool,

    // --- environment -----------------------------------------------------------------------
    /// clean environment before running container
    #[arg(short = 'e', long, env = "SIFR_CLEANENV", value_parser = clap::builder::BoolishValueParser::new())]
    pub cleanenv: bool,

    /// pass environment variable to contained process: K=V (one '=': commas are part of the
    /// value), or several pairs as K=V,K2=V2 (a CSV record: "K=a,b",K2=c); repeatable
    #[arg(long = "env", value_name = "K=V", action = clap::ArgAction::Append)]
    pub env: Vec<String>,

    /// pass environment variables from file to contained process; repeatable
    #[arg(long, value_name = "FILE", env = "SIFR_ENV_FILE", action = clap::ArgAction::Append)]
    pub env_file: Vec<PathBuf>,

    /// do not pass these host environment variables (comma-separated)
    #[arg(long, value_name = "VARS", value_delimiter = ',', env = "SIFR_NOENV",
          action = clap::ArgAction::Append)]
    pub no_env: Vec<String>,

    /// do not shell-evaluate environment variables or OCI container CMD/ENTRYPOINT
    #[arg(long, env = "SIFR_NO_EVAL", value_parser = clap::builder::BoolishValueParser::new())]
    pub no_eval: bool,

    /// do not propagate the umask to the container; set the default 0022 umask
    #[arg(long, env = "SIFR_NO_UMASK", value_parser = clap::builder::BoolishValueParser::new())]
    pub no_umask: bool,

    /// apply settings for increased OCI/Docker compatibility (--containall --no-init
    /// --no-umask --no-eval --writable-tmpfs)
    #[arg(long, env = "SIFR_COMPAT", value_parser = clap::builder::BoolishValueParser::new())]
    pub compat: bool,

    /// set an application to run inside a container
    #[arg(long, value_name = "NAME", env = "SIFR_APP")]
    pub app: Option<String>,

    // --- namespaces --------------------------------------------------------------------------
    /// run container in a new PID namespace
    #[arg(short = 'p', long, env = "SIFR_PID", value_parser = clap::builder::BoolishValueParser::new())]
    pub pid: bool,

    /// do not run container in a new PID namespace
    #[arg(long, env = "SIFR_NO_PID", value_parser = clap::builder::BoolishValueParser::new())]
    pub no_pid: bool,

    /// run container in a new IPC namespace
    #[arg(short = 'i', long, env = "SIFR_IPC", value_parser = clap::builder::BoolishValueParser::new())]
    pub ipc: bool,

    /// run container in a new UTS namespace
    #[arg(long, env = "SIFR_UTS", value_parser = clap::builder::BoolishValueParser::new())]
    pub uts: bool,

    /// set container hostname (implies --uts)
    #[arg(long, value_name = "NAME", env = "SIFR_HOSTNAME")]
    pub hostname: Option<String>,

    /// run container in a new user namespace (always the case with sifr)
    #[arg(short = 'u', long, env = "SIFR_USERNS", value_parser = clap::builder::BoolishValueParser::new())]
    pub userns: bool,

    /// run container in a new network namespace (loopback only, or the host's network with --network pasta)
    #[arg(short = 'n', long, env = "SIFR_NET", value_parser = clap::builder::BoolishValueParser::new())]
    pub net: bool,

    /// specify desired network type: none (loopback only) or pasta (the host's network through pasta)
    #[arg(long, value_name = "TYPES", env = "SIFR_NETWORK")]
    pub network: Option<String>,

    /// specify network arguments: portmap=HOST:CONTAINER/tcp|udp (with --network pasta)
    #[arg(long, value_name = "ARGS", env = "SIFR_NETWORK_ARGS", action = clap::ArgAction::Append)]
    pub network_args: Vec<String>,

    /// list of DNS server separated by commas to add in resolv.conf
    #[arg(long, value_name = "IPS", env = "SIFR_DNS")]
    pub dns: Option<String>,

    /// do not run the small init process as PID 1 with a PID namespace
    #[arg(long, env = "SIFR_NO_INIT", value_parser = clap::builder::BoolishValueParser::new())]
    pub no_init: bool,

    // --- identity and security -----------------------------------------------------------------
    /// run container with the appearance of running as root
    #[arg(short = 'f', long, env = "SIFR_FAKEROOT", value_parser = clap::builder::BoolishValueParser::new())]
    pub fakeroot: bool,

    /// drop all privileges from root user in container
    #[arg(long, env = "SIFR_NO_PRIVS", value_parser = clap::builder::BoolishValueParser::new())]
    pub no_privs: bool,

    /// let root user keep privileges in container (root only)
    #[arg(long, env = "SIFR_KEEP_PRIVS", value_parser = clap::builder::BoolishValueParser::new())]
    pub keep_privs: bool,

    /// a comma-separated capability list to add
    #[arg(long, value_name = "CAPS", env = "SIFR_ADD_CAPS")]
    pub add_caps: Option<String>,

    /// a comma-separated capability list to drop
    #[arg(long, value_name = "CAPS", env = "SIFR_DROP_CAPS")]
    pub drop_caps: Option<String>,

    /// enable security features (seccomp:PROFILE, apparmor:PROFILE, selinux:LABEL,
    /// uid:N, gid:N); repeatable and comma-separated
    #[arg(long, value_name = "SPEC", value_delimiter = ',', env = "SIFR_SECURITY",
          action = clap::ArgAction::Append)]
    pub security: Vec<String>,

    /// allow setuid binaries in container (root only)
    #[arg(long, env = "SIFR_ALLOW_SETUID", value_parser = clap::builder::BoolishValueParser::new())]
    pub allow_setuid: bool,

    // --- GPUs ----------------------------------------------------------------------------------
    /// enable Nvidia support
    #[arg(long, env = "SIFR_NV", value_parser = clap::builder::BoolishValueParser::new())]
    pub nv: bool,

    /// use nvidia-container-cli for GPU setup (experimental)
    #[arg(long, env = "SIFR_NVCCLI", value_parser = clap::builder::BoolishValueParser::new())]
    pub nvccli: bool,

    /// enable experimental Rocm support
    #[arg(long, env = "SIFR_ROCM", value_parser = clap::builder::BoolishValueParser::new())]
    pub rocm: bool,

    /// host libraries to bind into /.singularity.d/libs (comma-separated paths)
    #[arg(long, hide = true, alias = "containlibs", value_name = "LIBS", value_delimiter = ',',
          env = "SIFR_CONTAINLIBS", action = clap::ArgAction::Append)]
    pub contain_libs: Vec<PathBuf>,

    /// additionally bind the 32-bit GPU libraries (requires --nv or --rocm; not supported)
    #[arg(long)]
    pub compat32: bool,

    /// enable Intel(R) Gaudi accelerator support (not supported by sifr)
    #[arg(long)]
    pub intel_hpu: bool,

    /// fully-qualified CDI device name(s) (not supported by sifr)
    #[arg(long, value_name = "NAME", action = clap::ArgAction::Append)]
    pub device: Vec<String>,

    /// directories to search for CDI specifications (not supported by sifr)
    #[arg(long, value_name = "DIRS", action = clap::ArgAction::Append)]
    pub cdi_dirs: Vec<String>,

    /// hidden: do not set up Nvidia GPUs ('always use nv = yes' in sifr.conf)
    #[arg(long, hide = true, env = "SIFR_NO_NV", value_parser = clap::builder::BoolishValueParser::new())]
    pub no_nv: bool,

    /// hidden: do not set up ROCm GPUs ('always use rocm = yes' in sifr.conf)
    #[arg(long, hide = true, env = "SIFR_NO_ROCM", value_parser = clap::builder::BoolishValueParser::new())]
    pub no_rocm: bool,

    // --- other Apptainer action flags that sifr refuses -------------------------------------
    /// execute /sbin/init to boot the container (root only)
    #[arg(long)]
    pub boot: bool,

    /// a FUSE filesystem mount specification (not supported by sifr yet)
    #[arg(long, value_name = "SPEC", action = clap::ArgAction::Append)]
    pub fusemount: Vec<String>,

    /// run a container with DMTCP checkpointing (not supported by sifr)
    #[arg(long, value_name = "NAME")]
    pub dmtcp_launch: Option<String>,

    /// restart a container from a DMTCP checkpoint (not supported by sifr)
    #[arg(long, value_name = "NAME")]
    pub dmtcp_restart: Option<String>,

    /// use underlay instead of overlay for bind mounts (sifr chooses its root layer itself)
    #[arg(long)]
    pub underlay: bool,

    /// set the timeout duration for the runscript (not supported by sifr)
    #[arg(long, value_name = "DURATION")]
    pub runscript_timeout: Option<String>,

    /// join a network namespace by path (root only)
    #[arg(long, value_name = "PATH")]
    pub netns_path: Option<String>,

    // --- resources (cgroups) -------------------------------------------------------------------
    /// apply cgroups from file for container processes
    #[arg(long, value_name = "FILE", env = "SIFR_APPLY_CGROUPS")]
    pub apply_cgroups: Option<PathBuf>,

    /// number of CPUs available to container
    #[arg(
        long,
        allow_hyphen_values = true,
        value_name = "N",
        env = "SIFR_CPU_SHARES"
    )]
    pub cpus: Option<String>,

    /// maximum memory a container can use, in bytes (optional suffix k, m, g)
    #[arg(
        long,
        allow_hyphen_values = true,
        value_name = "BYTES",
        env = "SIFR_MEMORY"
    )]
    pub memory: Option<String>,

    /// limit the number of processes in the container
    #[arg(
        long,
        allow_hyphen_values = true,
        value_name = "N",
        env = "SIFR_PIDS_LIMIT"
    )]
    pub pids_limit: Option<String>,

    /// block IO relative weight
    #[arg(
        long,
        allow_hyphen_values = true,
        value_name = "N",
        env = "SIFR_BLKIO_WEIGHT"
    )]
    pub blkio_weight: Option<String>,

    /// device specific block IO relative weight
    #[arg(long, value_name = "SPEC", action = clap::ArgAction::Append, env = "SIFR_BLKIO_WEIGHT_DEVICE")]
    pub blkio_weight_device: Vec<String>,

    /// CPU shares
    #[arg(
        long,
        allow_hyphen_values = true,
        value_name = "N",
        env = "SIFR_CPU_SHARES"
    )]
    pub cpu_shares: Option<String>,

    /// CPUs in which to allow execution
    #[arg(long, value_name = "LIST", env = "SIFR_CPUSET_CPUS")]
    pub cpuset_cpus: Option<String>,

    /// memory nodes in which to allow execution
    #[arg(long, value_name = "LIST", env = "SIFR_CPUSET_MEMS")]
    pub cpuset_mems: Option<String>,

    /// memory soft limit
    #[arg(
        long,
        allow_hyphen_values = true,
        value_name = "BYTES",
        env = "SIFR_MEMORY_RESERVATION"
    )]
    pub memory_reservation: Option<String>,

    /// swap limit
    #[arg(
        long,
        allow_hyphen_values = true,
        value_name = "BYTES",
        env = "SIFR_MEMORY_SWAP"
    )]
    pub memory_swap: Option<String>,

    /// disable the OOM killer
    #[arg(long, env = "SIFR_OOM_KILL_DISABLE", value_parser = clap::builder::BoolishValueParser::new())]
    pub oom_kill_disable: bool,

    // --- OCI mode (SingularityCE flags passed by Nextflow) ------------------------------------
    /// launch container with OCI runtime (not supported by sifr)
    #[arg(long, env = "SIFR_OCI", value_parser = clap::builder::BoolishValueParser::new())]
    pub oci: bool,

    /// launch container with the native runtime (the default)
    #[arg(long)]
    pub no_oci: bool,

    // --- images from registries (docker://, oci:, ...) -------------------------------------
    #[command(flatten)]
    pub registry: super::registry::RegistryArgs,

    /// do not use the cache: a docker:// image is converted into a temporary file, its
    /// layers downloaded into the build directory, both removed after the run
    #[arg(long, env = "SIFR_DISABLE_CACHE", value_parser = clap::builder::BoolishValueParser::new())]
    pub disable_cache: bool,

    // --- behaviour -----------------------------------------------------------------------------
    /// path to a directory for temporary files
    #[arg(long, value_name = "DIR", env = "SIFR_TMPDIR")]
    pub tmpdir: Option<PathBuf>,

    /// share namespaces and image mounts between processes started from the same parent
    #[arg(long, env = "SIFR_SHARENS", value_parser = clap::builder::BoolishValueParser::new())]
    pub sharens: bool,

    /// hidden: do not use the subuid/subgid mapping for --fakeroot
    #[arg(long, hide = true, env = "SIFR_IGNORE_SUBUID", value_parser = clap::builder::BoolishValueParser::new())]
    pub ignore_subuid: bool,

    /// hidden: ignore the fakeroot command (sifr never uses it)
    #[arg(long, hide = true, env = "SIFR_IGNORE_FAKEROOT_COMMAND", value_parser = clap::builder::BoolishValueParser::new())]
    pub ignore_fakeroot_command: bool,

    /// hidden: do not use user namespaces (not possible with sifr)
    #[arg(long, hide = true, env = "SIFR_IGNORE_USERNS", value_parser = clap::builder::BoolishValueParser::new())]
    pub ignore_userns: bool,
}

/// `exec IMAGE COMMAND [ARGS...]`
#[derive(Debug, Args, Clone)]
pub struct ExecArgs {
    #[command(flatten)]
    pub action: ActionArgs,

    /// the image: a SIF file, a squashfs or ext3 image, a sandbox directory, or
    /// instance://NAME
    #[arg(value_name = "IMAGE")]
    pub image: String,

    /// the command and its arguments
    #[arg(
        value_name = "COMMAND",
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub command: Vec<String>,
}

/// `run IMAGE [ARGS...]`
#[derive(Debug, Args, Clone)]
pub struct RunArgs {
    #[command(flatten)]
    pub action: ActionArgs,

    #[arg(value_name = "IMAGE")]
    pub image: String,

    /// arguments passed to the runscript
    #[arg(
        value_name = "ARGS",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub args: Vec<String>,
}

/// `shell IMAGE`
#[derive(Debug, Args, Clone)]
pub struct ShellArgs {
    #[command(flatten)]
    pub action: ActionArgs,

    /// path to program to use for interactive shell
    #[arg(short = 's', long, value_name = "PATH", env = "SIFR_SHELL")]
    pub shell: Option<String>,

    #[arg(value_name = "IMAGE")]
    pub image: String,

    /// arguments passed to the shell
    #[arg(
        value_name = "ARGS",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub args: Vec<String>,
}

/// `test IMAGE [ARGS...]`
#[derive(Debug, Args, Clone)]
pub struct TestArgs {
    #[command(flatten)]
    pub action: ActionArgs,

    #[arg(value_name = "IMAGE")]
    pub image: String,

    #[arg(
        value_name = "ARGS",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub args: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::FromArgMatches as _;

    fn exec(args: &[&str]) -> ExecArgs {
        let cmd = ExecArgs::augment_args(clap::Command::new("exec").no_binary_name(true));
        let m = cmd.try_get_matches_from(args).expect("parse");
        ExecArgs::from_arg_matches(&m).expect("args")
    }

    #[test]
    fn test_env_values_reach_the_launch_whole() {
        // Apptainer's --env is a string-to-string map flag: the launch splits each value
        // (one '=': one pair, commas included); clap must not split on commas first.
        let a = exec(&["--env", "A=x,y", "--env", "B=1,C=2", "img", "true"]);
        assert_eq!(a.action.env, ["A=x,y", "B=1,C=2"]);
    }
}
