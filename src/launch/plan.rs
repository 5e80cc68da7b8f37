//! The launch plan: a plain value that says everything a container start will do.
//!
//! The planner (`planner.rs`) builds it from the command line, the configuration, the image
//! and the host, without touching the system; the launch sequence (`run.rs`) carries it
//! out. Unit tests assert on plans.

use std::path::PathBuf;

use super::capabilities::CapMask;

/// What the container's root filesystem is made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootSource {
    /// A squashfs filesystem at `offset` in `path` (a SIF partition or a bare image),
    /// served by sifr's FUSE driver.
    Squashfs {
        path: PathBuf,
        offset: u64,
        size: u64,
    },
    /// An ext2/3/4 filesystem at `offset` in `path`, served read-only by the FUSE driver.
    Ext {
        path: PathBuf,
        offset: u64,
        size: u64,
    },
    /// A sandbox directory, bind-mounted.
    Directory { path: PathBuf },
}

/// How the root filesystem is presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootLayer {
    /// A read-only overlay over the image with a tmpfs upper layer, so that bind targets
    /// missing from the image can be created (Apptainer's session layer). Made read-only
    /// again once the mounts are in place.
    Session,
    /// Like `Session`, but left writable (`--writable-tmpfs`); changes are discarded.
    WritableTmpfs,
    /// An overlay whose upper layer is a host directory (`--overlay DIR`): `DIR/upper` and
    /// `DIR/work`, as Apptainer lays them out; changes persist there.
    Persistent,
    /// The image itself, without a layer (`--writable` sandboxes, or overlay disabled):
    /// every bind target must exist in the image.
    Direct,
    /// The supervisor stacks the layers with fuse-overlayfs (a writable ext3 overlay image,
    /// which the kernel's overlayfs refuses as its upper layer, or `enable overlay =
    /// driver`); the payload takes that mount as its root and creates missing mount points
    /// in it (in the writable layer).
    Fuse,
}

/// The filesystem of an overlay image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFs {
    /// ext2/3/4, mounted with fuse2fs (read-write, or read-only with `:ro`).
    Ext3,
    /// squashfs, always read-only, served by sifr's own FUSE driver.
    Squashfs,
}

/// One overlay image layer: an image file (`--overlay FILE`) or the overlay partition of a
/// SIF (`--overlay IMAGE.sif`, the container's own SIF, `--writable IMAGE.sif`). A writable
/// ext3 layer holds `upper/` and `work/` at its root, as Apptainer lays it out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageLayer {
    pub fs: ImageFs,
    /// The file, as the user named it (canonical after `host::prepare`).
    pub path: PathBuf,
    /// Where the filesystem starts in the file, and its length.
    pub offset: u64,
    pub size: u64,
    pub writable: bool,
}

/// A read-only layer of the overlay stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LowerRef {
    /// `OverlayPlan::lowers[i]`.
    Dir(usize),
    /// `OverlayPlan::images[i]`.
    Image(usize),
}

/// Host directories layered over the image (`--overlay`), in overlayfs order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OverlayPlan {
    /// Read-only layers above the image, the topmost first (the last `--overlay DIR:ro`
    /// given is on top, as in Apptainer); `DIR/upper` when it exists, else `DIR`.
    pub lowers: Vec<PathBuf>,
    /// The writable overlay directory (`--overlay DIR`): the upper layer is `DIR/upper`,
    /// overlayfs's work directory `DIR/work` (with [`RootLayer::Persistent`]).
    pub upper: Option<PathBuf>,
    /// Overlay images and SIF overlay partitions, in command-line order; at most one is
    /// writable, and then there is no writable directory (`upper` is `None`).
    pub images: Vec<ImageLayer>,
    /// The read-only layers, topmost first, directories and images mixed as given (the
    /// last given on top). Empty when there are only directories: then `lowers` in order.
    pub order: Vec<LowerRef>,
    /// fuse2fs, when an ext3 image is mounted.
    pub fuse2fs: Option<PathBuf>,
    /// fuse-overlayfs, when the supervisor stacks the layers ([`RootLayer::Fuse`]).
    pub fuse_overlayfs: Option<PathBuf>,
}

impl OverlayPlan {
    /// The read-only layers, topmost first.
    pub fn lower_stack(&self) -> Vec<LowerRef> {
        if self.order.is_empty() {
            (0..self.lowers.len()).map(LowerRef::Dir).collect()
        } else {
            self.order.clone()
        }
    }

    /// The writable image layer, if any.
    pub fn writable_image(&self) -> Option<(usize, &ImageLayer)> {
        self.images.iter().enumerate().find(|(_, l)| l.writable)
    }
}

/// What a mount's source is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountSource {
    /// A host path, opened before any namespace is entered.
    Host(PathBuf),
    /// A directory created empty in the session tmpfs (`--contain` home and tmp,
    /// `--scratch`).
    SessionDir(String),
    /// A file generated into the session tmpfs.
    Generated(GeneratedFile),
    /// A fresh procfs (needs the PID namespace); falls back to binding the host's /proc.
    Proc,
    /// A new tmpfs.
    Tmpfs { size_mb: u64, mode: u32 },
    /// A minimal /dev: tmpfs with bound device nodes, devpts, shm, standard links.
    MinimalDev { devpts: bool, mqueue: bool },
    /// A directory `name` of the session holding host files, each bound read-only, nosuid,
    /// nodev onto an empty file: (host path, name in the directory). Apptainer's
    /// /.singularity.d/libs.
    FileSet {
        name: String,
        files: Vec<(PathBuf, String)>,
    },
}

/// Files the runtime generates in the session directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GeneratedFile {
    /// The container's /etc/passwd plus the caller, whose home in the container is `home`.
    Passwd { uid: u32, home: PathBuf },
    /// The container's /etc/group plus the caller's groups.
    Group,
    /// APT configuration for root-mapped fakeroot: APT cannot switch to its `_apt` sandbox
    /// user in a namespace that maps only root, so it is told to stay root.
    AptSandboxRoot,
    /// Literal contents (resolv.conf with `--dns`, /etc/hostname).
    Literal { name: String, contents: String },
}

/// What must exist at a mount's destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    Dir,
    File,
    /// A file, mounted only when its directory exists in the image (skipped quietly
    /// otherwise): configuration for a tool the image may not have.
    FileIfDirExists,
}

/// One mount inside the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOp {
    pub source: MountSource,
    /// Absolute path inside the container.
    pub dest: PathBuf,
    pub target: TargetKind,
    pub readonly: bool,
    /// Recursive bind (host /dev, /sys, /proc binds keep their submounts).
    pub recursive: bool,
    /// Keep device nodes usable (only /dev mounts); every other mount is `nodev`.
    pub allow_dev: bool,
    /// A failure is a warning, not an error (default system mounts such as /etc/localtime).
    pub optional: bool,
    /// Why this mount exists, for `--debug` and error messages ("user bind", "home", ...).
    pub why: &'static str,
}

/// User-namespace id mapping: (inside, outside, count) ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdMapPlan {
    pub uid_map: Vec<(u32, u32, u32)>,
    pub gid_map: Vec<(u32, u32, u32)>,
    /// Ranges beyond the caller's own id need newuidmap/newgidmap.
    pub needs_helpers: bool,
    /// The uid and gid the payload runs as inside the namespace.
    pub uid: u32,
    pub gid: u32,
    /// A one-line notice for the user (e.g. why fakeroot is root-mapped only).
    pub notice: Option<String>,
    /// Where newuidmap/newgidmap are looked for (sifr.conf `binary path`, see
    /// `Config::setuid_helper_dirs`).
    pub helper_dirs: Vec<PathBuf>,
}

impl IdMapPlan {
    /// The default rootless mapping: the caller only, uid→uid and gid→gid.
    pub fn single(uid: u32, gid: u32) -> IdMapPlan {
        IdMapPlan {
            uid_map: vec![(uid, uid, 1)],
            gid_map: vec![(gid, gid, 1)],
            needs_helpers: false,
            uid,
            gid,
            notice: None,
            helper_dirs: sifr_idmap::write::default_helper_dirs(),
        }
    }
}

/// Namespaces besides user and mount (always created).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NamespacePlan {
    pub pid: bool,
    pub ipc: bool,
    /// `Some(hostname)` creates a UTS namespace and sets the name.
    pub uts: Option<String>,
    /// A network namespace (loopback only, unless `Plan::pasta` connects it).
    pub net: bool,
    /// Run a small init as PID 1 in the PID namespace (not with `--no-init`).
    pub init: bool,
    /// Mount propagation from the host stops (`mount slave = no`: private); by default the
    /// container's mounts are slaves of the host's, so later host mounts show up inside.
    pub private_mounts: bool,
}

/// pasta, started by sifr for the container's network namespace (`--network pasta`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PastaPlan {
    /// The pasta program (found in sifr.conf's `binary path`).
    pub binary: PathBuf,
    /// Its options; the launch adds `--pid FILE` and the supervisor's PID.
    pub args: Vec<String>,
}

/// The container's working tmpfs (Apptainer's session directory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionPlan {
    pub size_mb: u64,
    /// `memory fs type`.
    pub fstype: MemoryFs,
}

/// The in-memory filesystem of the session directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryFs {
    Tmpfs,
    /// No size limit (ramfs takes no `size=`).
    Ramfs,
}

impl MemoryFs {
    /// The filesystem type as mount(2) takes it.
    pub fn as_str(self) -> &'static str {
        match self {
            MemoryFs::Tmpfs => "tmpfs",
            MemoryFs::Ramfs => "ramfs",
        }
    }
}

/// Which action runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Exec,
    Run,
    Shell,
    Test,
    Start,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Exec => "exec",
            Action::Run => "run",
            Action::Shell => "shell",
            Action::Test => "test",
            Action::Start => "start",
        }
    }
}

/// The payload process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessPlan {
    pub action: Action,
    /// Arguments of the action (the command for exec, runscript arguments for run, ...).
    pub args: Vec<String>,
    /// Environment the action starts with.
    pub env: Vec<(String, String)>,
    /// Variables applied after the image's environment scripts.
    pub inject: Vec<(String, String)>,
    /// Shell-evaluate injected values (not with `--no-eval`).
    pub evaluate: bool,
    /// Working directory inside the container, and whether failing to enter it is fatal
    /// (`--pwd`) or falls back to the home directory.
    pub cwd: PathBuf,
    pub cwd_required: bool,
    pub home: PathBuf,
    /// The umask to set (`None` keeps the caller's).
    pub umask: Option<u32>,
    /// SCIF app (`--app`).
    pub app: Option<String>,
    /// Shell for `shell` (`--shell` / `SIFR_SHELL`).
    pub shell: Option<String>,
    /// The payload is an instance's init (`instance start`/`instance run`): the action
    /// script runs the start- or runscript in the background and stays until signalled.
    pub instance_init: bool,
}

/// Security settings of the payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityPlan {
    /// Always true for sifr: PR_SET_NO_NEW_PRIVS before exec.
    pub no_new_privs: bool,
    /// The payload's capabilities in its user namespace, for all five sets (permitted,
    /// effective, inheritable, bounding, ambient); every other one is dropped.
    pub caps: CapMask,
    /// Install the root-emulation seccomp filter (root-mapped fakeroot).
    pub emulate_root: bool,
    /// Make mknod of devices a successful no-op (fakeroot with subordinate ids).
    pub mknod_noop: bool,
    /// The `--security seccomp:` profile, compiled; installed last, after capabilities.
    pub profile: Option<super::profile::ProfileFilter>,
    /// `--security uid:`/`gid:` under fakeroot: the ids the payload switches to.
    pub run_as: Option<RunAs>,
}

/// `--security uid:N` and `gid:N[:M...]` (Apptainer's target ids): the payload leaves
/// container root for these ids of its user namespace before its capabilities are set. The
/// first gid is the primary group, all of them the supplementary groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    pub uid: Option<u32>,
    pub gids: Vec<u32>,
}

/// Everything a container start does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The image as the user named it (messages, `APPTAINER_CONTAINER`).
    pub image_display: PathBuf,
    pub root: RootSource,
    pub layer: RootLayer,
    /// `--overlay` directories.
    pub overlay: OverlayPlan,
    /// The root is writable (`--writable` sandbox).
    pub writable: bool,
    pub ids: IdMapPlan,
    pub namespaces: NamespacePlan,
    /// The network helper, with `--network pasta`.
    pub pasta: Option<PastaPlan>,
    pub session: SessionPlan,
    pub mounts: Vec<MountOp>,
    pub process: ProcessPlan,
    pub security: SecurityPlan,
    /// Host directories to create before starting (`--workdir` subdirectories).
    pub host_dirs: Vec<PathBuf>,
    /// Resource limits: the container's cgroup (`--memory`, ..., `--apply-cgroups`).
    pub cgroup: Option<super::cgroups::CgroupPlan>,
    /// The image's FUSE mount is kept after the run and reused (see `kept`); `None`: this
    /// run mounts the image itself.
    pub kept: Option<KeptPlan>,
    /// Messages to show before starting (one line each).
    pub warnings: Vec<String>,
}

/// A kept image mount: what identifies the holder to use, besides the image itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptPlan {
    /// Seconds the mount stays after its last run (`kept mount idle timeout`).
    pub idle_secs: u64,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A plan for tests: `true` run in a read-only sandbox `/sb` with nothing mounted, as
    /// uid/gid 1000, in /work.
    pub(crate) fn minimal() -> Plan {
        Plan {
            image_display: "/i.sif".into(),
            root: RootSource::Directory { path: "/sb".into() },
            layer: RootLayer::Direct,
            overlay: OverlayPlan::default(),
            writable: false,
            ids: IdMapPlan::single(1000, 1000),
            namespaces: NamespacePlan::default(),
            pasta: None,
            session: SessionPlan {
                size_mb: 64,
                fstype: MemoryFs::Tmpfs,
            },
            mounts: vec![],
            process: ProcessPlan {
                action: Action::Exec,
                args: vec!["true".into()],
                env: vec![],
                inject: vec![],
                evaluate: true,
                cwd: "/work".into(),
                cwd_required: false,
                home: "/home/u".into(),
                umask: Some(0o022),
                app: None,
                shell: None,
                instance_init: false,
            },
            security: SecurityPlan {
                no_new_privs: true,
                caps: CapMask::default(),
                emulate_root: false,
                mknod_noop: false,
                profile: None,
                run_as: None,
            },
            host_dirs: vec![],
            cgroup: None,
            kept: None,
            warnings: vec![],
        }
    }
}
