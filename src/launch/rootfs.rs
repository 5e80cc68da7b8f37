//! Builds the container's root filesystem inside the payload's mount namespace, following
//! the plan's mount list, then pivots into it.
//!
//! Layout of the session tmpfs, which is the supervisor's root after it pivoted into it
//! (everything lives in the container's private mount namespace; nothing is visible on the
//! host):
//!
//! ```text
//! /oldroot   the host's root (bind sources are taken from here)
//! /rootfs    the image (FUSE mount) or the sandbox directory (bind)
//! /upper     overlay upper layer (session layer, --writable-tmpfs; a writable --overlay
//!            directory's upper/ under /oldroot instead)
//! /work      overlay work directory (or the --overlay directory's work/)
//! /points    with a writable --overlay directory: the mount points the image lacks, a
//!            read-only layer right above the image (as Apptainer's overlay-lowerdir), so
//!            they are not left behind in the overlay
//! /final     the container root: overlay of upper over rootfs, or rootfs itself
//! /files     generated files (passwd, group, resolv.conf, hostname)
//! /dirs      empty directories (--contain home and tmp, --scratch)
//! /supervisor the supervisor's own root once the container has copied the mounts: an
//!            empty read-only tmpfs; the supervisor then detaches the session, /oldroot with
//!            it, from its namespace ([`leave_session`])
//! ```
//!
//! Every step goes through the [`Sys`] seam and is unit-tested with `RecordingSys`.

use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};

use super::identity::{self, HostUser};
use super::plan::{GeneratedFile, LowerRef, MountOp, MountSource, Plan, RootLayer, TargetKind};
use super::planner::{WHY_HOME, WHY_SCRATCH, WHY_TEMPORARY, WHY_USER_BIND};
use super::sys::{CreateOn, Sys};

/// Where the supervisor first mounts the session tmpfs, before pivoting into it (the host's
/// directory is uncovered again by the pivot).
pub const SESSION_MOUNTPOINT: &str = "/tmp";

/// Paths inside the session.
#[derive(Debug, Clone)]
pub struct Layout {
    pub session: PathBuf,
}

impl Default for Layout {
    fn default() -> Self {
        Layout {
            session: PathBuf::from("/"),
        }
    }
}

impl Layout {
    pub fn rootfs(&self) -> PathBuf {
        self.session.join("rootfs")
    }
    pub fn upper(&self) -> PathBuf {
        self.session.join("upper")
    }
    pub fn work(&self) -> PathBuf {
        self.session.join("work")
    }
    pub fn mountpoints(&self) -> PathBuf {
        self.session.join("points")
    }
    pub fn final_root(&self) -> PathBuf {
        self.session.join("final")
    }
    pub fn files(&self) -> PathBuf {
        self.session.join("files")
    }
    pub fn dirs(&self) -> PathBuf {
        self.session.join("dirs")
    }
}

/// A failed setup step. Each variant names the step, as the jailer's errors do.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("cannot mount the session layer (overlay) on the image: {0}")]
    Overlay(std::io::Error),
    #[error(
        "cannot use {} as an overlay: {err} (overlayfs needs layers that do not overlap, \
         on a local filesystem with user extended attributes such as ext4, xfs or tmpfs)",
        path.display()
    )]
    OverlayDir { path: PathBuf, err: std::io::Error },
    #[error("cannot create {what} {path}: {err}")]
    Create {
        what: &'static str,
        path: PathBuf,
        err: std::io::Error,
    },
    #[error("cannot mount {why} on {dest}: {err}")]
    Mount {
        why: &'static str,
        dest: PathBuf,
        err: std::io::Error,
    },
    #[error(
        "cannot mount {why} on {dest}: the destination does not exist in the image and \
         the image has no writable layer to create it in (remove the bind, or use a \
         destination that exists)"
    )]
    MissingTarget { why: &'static str, dest: PathBuf },
    #[error(
        "cannot mount {why} on {dest}: the destination does not exist in the sandbox, and \
         with --writable sifr does not create it (create it in the sandbox first, or drop \
         --writable)"
    )]
    MissingWritableTarget { why: &'static str, dest: PathBuf },
    #[error("cannot read {path} in the image: {err}")]
    Read { path: PathBuf, err: std::io::Error },
    #[error("cannot enter the container root ({step}): {err}")]
    Pivot {
        step: &'static str,
        err: std::io::Error,
    },
}

const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;

/// Flags every mount gets.
fn base_flags(allow_dev: bool) -> MsFlags {
    if allow_dev {
        MsFlags::MS_NOSUID
    } else {
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV
    }
}

/// Builds the container root in `layout.final_root()` and returns the warnings produced.
/// The image is already mounted at `layout.rootfs()`.
pub fn build_root(
    sys: &dyn Sys,
    plan: &Plan,
    layout: &Layout,
    user: &HostUser,
) -> Result<Vec<String>, RootfsError> {
    let mut warnings = Vec::new();
    let final_root = layout.final_root();
    let mk = |p: PathBuf, what: &'static str| {
        sys.mkdir_all(&p, 0o755)
            .map_err(|err| RootfsError::Create { what, path: p, err })
    };
    mk(layout.files(), "session directory")?;
    mk(layout.dirs(), "session directory")?;

    // 1. The root: an overlay session layer over the image, or the image itself.
    let layer = mount_overlay(sys, plan, layout, &mut warnings)?;
    let root = match layer {
        RootLayer::Direct => layout.rootfs(),
        // The supervisor's fuse-overlayfs stack (see `layers`).
        RootLayer::Fuse => super::layers::merged(layout),
        _ => final_root,
    };

    // 2. The mounts, in plan order.
    for (i, op) in plan.mounts.iter().enumerate() {
        // With --writable a user bind's destination must exist (Apptainer creates none
        // without a layer). Otherwise a destination inside an earlier mount can be created
        // only if that mount is one of sifr's own directories or a host directory the user
        // asked for (a bind, /tmp, scratch, home: Apptainer creates it there too), never
        // inside /proc, /sys, /dev or a configured bind; and only on that mount (or the
        // root's own), wherever symlinks lead.
        let user_bind_writable = plan.writable && op.why == WHY_USER_BIND;
        let create = match enclosing(&plan.mounts[..i], &op.dest) {
            _ if user_bind_writable => None,
            Some(outer) => may_create_in(outer).then_some(outer.dest.as_path()),
            None => ((layer == RootLayer::Direct && plan.writable) || layer == RootLayer::Fuse)
                .then_some(Path::new("/")),
        };
        if is_var_tmp_on_tmp(sys, &root, op) {
            log::debug!("/var/tmp resolves to /tmp in the container: not mounted again");
            continue;
        }
        log::trace!(
            "{:.1} ms: mount {}",
            crate::log::since_start_ms(),
            op.dest.display()
        );
        match mount_one(sys, layout, &root, create, op, user) {
            Ok(()) => {}
            Err(e) if op.optional => warnings.push(format!("skipping {}: {e}", op.why)),
            Err(RootfsError::MissingTarget { why, dest }) if user_bind_writable => {
                return Err(RootfsError::MissingWritableTarget { why, dest });
            }
            Err(e) => return Err(e),
        }
    }

    // 3. The session layer goes back to read-only once the mount points exist.
    if layer == RootLayer::Session {
        let flags = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY | base_flags(false);
        sys.mount(None, &root, None, flags, None)
            .map_err(|err| RootfsError::Mount {
                why: "the read-only root",
                dest: PathBuf::from("/"),
                err,
            })?;
    }

    // 4. Enter it.
    enter_root(sys, &root)?;
    Ok(warnings)
}

/// Step 1 of [`build_root`]: with a session layer, mounts the overlay of the upper layer
/// over the image at `layout.final_root()`, after creating the mount points the image lacks
/// in the upper layer (see `Sys::create_in_upper` on why not through the overlay). Returns
/// the layer in effect: `Direct` when there is none, or the overlay is unavailable and
/// optional.
fn mount_overlay(
    sys: &dyn Sys,
    plan: &Plan,
    layout: &Layout,
    warnings: &mut Vec<String>,
) -> Result<RootLayer, RootfsError> {
    let final_root = layout.final_root();
    let mk = |p: PathBuf, what: &'static str| {
        sys.mkdir_all(&p, 0o755)
            .map_err(|err| RootfsError::Create { what, path: p, err })
    };
    let mut layer = plan.layer;
    if layer != RootLayer::Direct && layer != RootLayer::Fuse {
        // The upper layer: the writable --overlay directory's upper/ (with its work/), or
        // the session's tmpfs.
        // Missing mount points go into the session's upper layer, or with a writable
        // --overlay directory into a session layer of their own below it: Apptainer creates
        // them in the session (overlay-lowerdir), never in the user's overlay.
        let (upper, work, points) = match &plan.overlay.upper {
            Some(dir) => {
                let dir = sys.host_source(dir);
                mk(layout.mountpoints(), "session directory")?;
                (
                    dir.join("upper"),
                    dir.join("work"),
                    Some(layout.mountpoints()),
                )
            }
            None => {
                mk(layout.upper(), "session directory")?;
                mk(layout.work(), "session directory")?;
                (layout.upper(), layout.work(), None)
            }
        };
        let created_in = points.as_deref().unwrap_or(&upper);
        mk(final_root.clone(), "session directory")?;
        mount_points_in_upper(sys, plan, &layout.rootfs(), created_in, warnings)?;
        log::trace!(
            "{:.1} ms: mounting the overlay",
            crate::log::since_start_ms()
        );
        // lowerdir lists the topmost layer first: the read-only --overlay directories and
        // images (mounted by the supervisor, see `layers`), the mount points, then the image.
        let mut lowers: Vec<PathBuf> = plan
            .overlay
            .lower_stack()
            .into_iter()
            .map(|r| match r {
                LowerRef::Dir(i) => sys.host_source(&plan.overlay.lowers[i]),
                LowerRef::Image(i) => super::layers::lower_of(sys, plan, layout, i),
            })
            .collect();
        lowers.extend(points);
        lowers.push(layout.rootfs());
        let lowerdir = lowers
            .iter()
            .map(|l| l.display().to_string())
            .collect::<Vec<_>>()
            .join(":");
        let data = format!(
            "lowerdir={lowerdir},upperdir={},workdir={},userxattr",
            upper.display(),
            work.display()
        );
        if let Err(err) = sys.mount(
            Some(Path::new("overlay")),
            &final_root,
            Some("overlay"),
            base_flags(false),
            Some(&data),
        ) {
            if let Some(dir) = &plan.overlay.upper {
                return Err(RootfsError::OverlayDir {
                    path: dir.clone(),
                    err,
                });
            }
            if let Some(dir) = plan.overlay.lowers.first().or(plan
                .overlay
                .images
                .first()
                .map(|l| &l.path))
            {
                return Err(RootfsError::OverlayDir {
                    path: dir.clone(),
                    err,
                });
            }
            if layer == RootLayer::WritableTmpfs {
                return Err(RootfsError::Overlay(err));
            }
            warnings.push(format!(
                "overlay session layer unavailable ({err}); bind destinations must exist in \
                 the image"
            ));
            layer = RootLayer::Direct;
        }
    }
    Ok(layer)
}

/// Creates the mount points the image `lower` lacks in the overlay's `upper` layer, before
/// the overlay is mounted (see `Sys::create_in_upper` on why not through the overlay); an
/// optional mount's failure is a warning. The kernel's overlay (here) and the supervisor's
/// fuse-overlayfs stack (`layers`) both use it.
pub(crate) fn mount_points_in_upper(
    sys: &dyn Sys,
    plan: &Plan,
    lower: &Path,
    upper: &Path,
    warnings: &mut Vec<String>,
) -> Result<(), RootfsError> {
    for (i, op) in plan.mounts.iter().enumerate() {
        if enclosing(&plan.mounts[..i], &op.dest).is_some()
            || !parent_required_and_present(sys, lower, op)?
        {
            continue;
        }
        let exists = sys
            .path_in_root(lower, &op.dest, None)
            .map_err(|err| RootfsError::Create {
                what: "mount point",
                path: op.dest.clone(),
                err,
            })?
            .is_some();
        if !exists && let Err(err) = sys.create_in_upper(lower, upper, &op.dest, op.target) {
            let e = RootfsError::Create {
                what: "mount point",
                path: op.dest.clone(),
                err,
            };
            if !op.optional {
                return Err(e);
            }
            warnings.push(format!("skipping {}: {e}", op.why));
        }
    }
    Ok(())
}

/// Step 4 of [`build_root`]: pivot_root(".", ".") stacks the old root on top of the new
/// one; a lazy unmount then drops it (and the session mounts with it) from this namespace.
fn enter_root(sys: &dyn Sys, root: &Path) -> Result<(), RootfsError> {
    sys.chdir(root)
        .map_err(|err| RootfsError::Pivot { step: "chdir", err })?;
    sys.pivot_root(Path::new("."), Path::new("."))
        .map_err(|err| RootfsError::Pivot {
            step: "pivot_root",
            err,
        })?;
    sys.umount(Path::new("."), MntFlags::MNT_DETACH)
        .map_err(|err| RootfsError::Pivot {
            step: "detach the old root",
            err,
        })?;
    sys.chdir(Path::new("/"))
        .map_err(|err| RootfsError::Pivot {
            step: "chdir /",
            err,
        })?;
    Ok(())
}

/// Where the supervisor goes once the container has its own copy of the mounts: an empty,
/// read-only tmpfs in the session.
const SUPERVISOR_ROOT: &str = "supervisor";

/// The supervisor leaves the session: its root becomes an empty read-only tmpfs, and the
/// session (with the host's root at /oldroot, the image and every bind source) is detached
/// from its mount namespace. /oldroot alone cannot be unmounted: it came from the host's
/// namespace into a less privileged one, so the kernel locks it to the mount above it; it
/// goes with that mount. The FUSE server keeps serving through its descriptor.
pub fn leave_session(sys: &dyn Sys, layout: &Layout) -> Result<(), RootfsError> {
    let dir = layout.session.join(SUPERVISOR_ROOT);
    let step = |step: &'static str| move |err| RootfsError::Pivot { step, err };
    sys.mkdir_all(&dir, 0o555)
        .map_err(|err| RootfsError::Create {
            what: "session directory",
            path: dir.clone(),
            err,
        })?;
    sys.mount(
        Some(Path::new("tmpfs")),
        &dir,
        Some("tmpfs"),
        MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("size=4k,mode=555"),
    )
    .map_err(step("mount the supervisor's empty root"))?;
    sys.chdir(&dir).map_err(step("chdir"))?;
    sys.pivot_root(Path::new("."), Path::new("."))
        .map_err(step("pivot_root"))?;
    sys.umount(Path::new("."), MntFlags::MNT_DETACH)
        .map_err(step("detach the session"))?;
    sys.chdir(Path::new("/")).map_err(step("chdir /"))?;
    Ok(())
}

/// Bind-mounts `source` on `target` (the destination `op.dest` inside `root`), then remounts
/// it with the wanted flags: a bind mount ignores every flag but MS_REC on the first call. The
/// flags the kernel locked on the source mount are kept, or the remount fails with EPERM in a
/// user namespace.
///
/// `target` is a `/proc/self/fd/N` name of the mount point; following it does not cross the
/// mount just made, so the destination is resolved again to reach the new mount.
fn bind(
    sys: &dyn Sys,
    root: &Path,
    source: &Path,
    target: &Path,
    op: &MountOp,
) -> std::io::Result<()> {
    let mut flags = MsFlags::MS_BIND;
    if op.recursive {
        flags |= MsFlags::MS_REC;
    }
    sys.mount(Some(source), target, None, flags, None)?;
    let mounted = sys
        .path_in_root(root, &op.dest, None)?
        .unwrap_or_else(|| target.to_path_buf());
    if op.recursive {
        // Restrict the whole tree, submounts included (a plain remount only reaches the top).
        let mut attrs = MOUNT_ATTR_NOSUID;
        if !op.allow_dev {
            attrs |= MOUNT_ATTR_NODEV;
        }
        if op.readonly {
            attrs |= MOUNT_ATTR_RDONLY;
        }
        match sys.restrict_recursive(&mounted, attrs) {
            Ok(()) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {}
            Err(e) if op.readonly => return Err(e),
            Err(e) => {
                log::debug!(
                    "recursive restriction of {} not applied: {e}",
                    op.dest.display()
                );
            }
        }
    }
    let locked = sys.locked_flags(&mounted)?;
    let mut re = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | base_flags(op.allow_dev) | locked;
    if op.readonly {
        re |= MsFlags::MS_RDONLY;
    }
    match sys.mount(None, &mounted, None, re, None) {
        Ok(()) => Ok(()),
        // Adding nosuid/nodev can be refused on some mounts; read-only must not be lost.
        Err(e) if !op.readonly => {
            log::debug!("remount of {} not applied: {e}", op.dest.display());
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// False when `op` wants its directory to exist already and it does not.
fn parent_required_and_present(
    sys: &dyn Sys,
    root: &Path,
    op: &MountOp,
) -> Result<bool, RootfsError> {
    if op.target != TargetKind::FileIfDirExists {
        return Ok(true);
    }
    let parent = op.dest.parent().unwrap_or(Path::new("/"));
    Ok(sys
        .path_in_root(root, parent, None)
        .map_err(|err| RootfsError::Create {
            what: "mount point",
            path: op.dest.clone(),
            err,
        })?
        .is_some())
}

/// True when a missing mount point may be created inside the mount `outer` (on that mount
/// only): sifr's own session directories and tmpfs, and the host directories the user
/// asked to see (user binds, /tmp and /var/tmp, scratch, home), as Apptainer creates a
/// nested bind destination in them.
fn may_create_in(outer: &MountOp) -> bool {
    match outer.source {
        MountSource::SessionDir(_) | MountSource::Tmpfs { .. } => true,
        // sifr's own tmpfs: a host device bound into it (`-B /dev/X` with --contain).
        MountSource::MinimalDev { .. } => true,
        MountSource::Host(_) => {
            [WHY_USER_BIND, WHY_TEMPORARY, WHY_SCRATCH, WHY_HOME].contains(&outer.why)
        }
        _ => false,
    }
}

/// True for the temporary /var/tmp mount when the container's /var/tmp resolves to its
/// /tmp (the image links one to the other): the host's /var/tmp is then not bound over
/// /tmp, as Apptainer skips it.
fn is_var_tmp_on_tmp(sys: &dyn Sys, root: &Path, op: &MountOp) -> bool {
    if op.why != WHY_TEMPORARY || op.dest != Path::new("/var/tmp") {
        return false;
    }
    let resolve = |p: &str| sys.path_in_root(root, Path::new(p), None).ok().flatten();
    let (Some(tmp), Some(var_tmp)) = (resolve("/tmp"), resolve("/var/tmp")) else {
        return false;
    };
    if tmp == var_tmp {
        return true;
    }
    // Resolved paths may be descriptor names: compare the directories themselves.
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(&tmp), std::fs::metadata(&var_tmp)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// The last earlier mount whose destination contains `dest` (a nested mount point).
fn enclosing<'a>(earlier: &'a [MountOp], dest: &Path) -> Option<&'a MountOp> {
    earlier
        .iter()
        .rev()
        .find(|m| dest != m.dest && dest.starts_with(&m.dest))
}

fn mount_one(
    sys: &dyn Sys,
    layout: &Layout,
    root: &Path,
    create: Option<&Path>,
    op: &MountOp,
    user: &HostUser,
) -> Result<(), RootfsError> {
    let mount_err = |err| RootfsError::Mount {
        why: op.why,
        dest: op.dest.clone(),
        err,
    };
    if !parent_required_and_present(sys, root, op)? {
        return Ok(());
    }
    let create = create.map(|mount| CreateOn {
        kind: op.target,
        mount,
    });
    let target = sys
        .path_in_root(root, &op.dest, create)
        .map_err(|err| RootfsError::Create {
            what: "mount point",
            path: op.dest.clone(),
            err,
        })?
        .ok_or_else(|| RootfsError::MissingTarget {
            why: op.why,
            dest: op.dest.clone(),
        })?;

    match &op.source {
        MountSource::Host(path) => {
            let src = sys.host_source(path);
            bind(sys, root, &src, &target, op).map_err(mount_err)?;
        }
        MountSource::SessionDir(name) => {
            let dir = layout.dirs().join(name);
            sys.mkdir_all(&dir, 0o755)
                .map_err(|err| RootfsError::Create {
                    what: "session directory",
                    path: dir.clone(),
                    err,
                })?;
            bind(sys, root, &dir, &target, op).map_err(mount_err)?;
        }
        MountSource::Generated(file) => {
            let (name, contents) = generate(sys, root, file, user)?;
            let path = layout.files().join(name);
            sys.write_file(&path, contents.as_bytes(), 0o644)
                .map_err(|err| RootfsError::Create {
                    what: "session file",
                    path: path.clone(),
                    err,
                })?;
            bind(sys, root, &path, &target, op).map_err(mount_err)?;
        }
        MountSource::Proc => {
            let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
            if let Err(e) = sys.mount(Some(Path::new("proc")), &target, Some("proc"), flags, None) {
                // A fresh procfs is refused when the host's /proc is partly masked (a
                // container host); bind the host's instead, as Apptainer does.
                log::debug!("new procfs refused ({e}); binding the host's /proc");
                let src = sys.host_source(Path::new("/proc"));
                let bind_op = MountOp {
                    recursive: true,
                    ..op.clone()
                };
                bind(sys, root, &src, &target, &bind_op).map_err(mount_err)?;
            }
        }
        MountSource::Tmpfs { size_mb, mode } => {
            let data = format!("size={size_mb}m,mode={mode:o}");
            sys.mount(
                Some(Path::new("tmpfs")),
                &target,
                Some("tmpfs"),
                base_flags(op.allow_dev),
                Some(&data),
            )
            .map_err(mount_err)?;
        }
        MountSource::MinimalDev { devpts, mqueue } => {
            minimal_dev(sys, root, &op.dest, &target, *devpts, *mqueue).map_err(mount_err)?;
        }
        MountSource::FileSet { name, files } => {
            let dir = layout.dirs().join(name);
            file_set(sys, &dir, files).map_err(mount_err)?;
            bind(sys, root, &dir, &target, op).map_err(mount_err)?;
        }
    }
    Ok(())
}

/// Fills the session directory `dir` of a [`MountSource::FileSet`]: each host file bound
/// read-only, nosuid, nodev onto an empty file of its name (Apptainer's `addLibsDirMount`).
fn file_set(sys: &dyn Sys, dir: &Path, files: &[(PathBuf, String)]) -> std::io::Result<()> {
    sys.mkdir_all(dir, 0o755)?;
    for (source, name) in files {
        let dest = dir.join(name);
        sys.write_file(&dest, b"", 0o644)?;
        let src = sys.host_source(source);
        sys.mount(Some(&src), &dest, None, MsFlags::MS_BIND, None)?;
        let locked = sys.locked_flags(&dest)?;
        let re = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | base_flags(false);
        sys.mount(None, &dest, None, re | locked, None)?;
    }
    Ok(())
}

/// Contents of a generated session file.
fn generate(
    sys: &dyn Sys,
    root: &Path,
    file: &GeneratedFile,
    user: &HostUser,
) -> Result<(String, String), RootfsError> {
    let read = |rel: &str| -> Result<String, RootfsError> {
        let bytes = sys
            .read_in_root(root, Path::new(rel))
            .map_err(|err| RootfsError::Read {
                path: PathBuf::from(rel),
                err,
            })?
            .unwrap_or_default();
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    Ok(match file {
        GeneratedFile::Passwd { uid, home } => (
            "passwd".into(),
            identity::passwd_with_user(&read("/etc/passwd")?, *uid, user, home),
        ),
        GeneratedFile::Group => (
            "group".into(),
            identity::group_with_user(&read("/etc/group")?, user),
        ),
        GeneratedFile::Literal { name, contents } => (name.clone(), contents.clone()),
        GeneratedFile::AptSandboxRoot => (
            "apt-fakeroot.conf".into(),
            "// sifr --fakeroot (root-mapped): only root is mapped, so APT cannot switch to\n\
             // its _apt sandbox user; it downloads as root instead.\n\
             APT::Sandbox::User \"root\";\n"
                .into(),
        ),
    })
}

/// A minimal /dev: a tmpfs with the host's harmless device nodes bound in, the standard
/// links, a private devpts and a /dev/shm.
fn minimal_dev(
    sys: &dyn Sys,
    root: &Path,
    dest: &Path,
    mountpoint: &Path,
    devpts: bool,
    mqueue: bool,
) -> std::io::Result<()> {
    sys.mount(
        Some(Path::new("tmpfs")),
        mountpoint,
        Some("tmpfs"),
        MsFlags::MS_NOSUID,
        Some("size=1m,mode=755"),
    )?;
    // Reach the new tmpfs (see `bind` on why the mount point's name does not).
    let target = sys
        .path_in_root(root, dest, None)?
        .unwrap_or_else(|| mountpoint.to_path_buf());
    let target = target.as_path();
    // Device nodes cannot be created in a user namespace: bind the host's.
    for node in ["null", "zero", "full", "random", "urandom", "tty"] {
        let dest = target.join(node);
        sys.write_file(&dest, b"", 0o666)?;
        let src = sys.host_source(&Path::new("/dev").join(node));
        sys.mount(Some(&src), &dest, None, MsFlags::MS_BIND, None)?;
    }
    for (link, to) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("core", "/proc/kcore"),
    ] {
        sys.symlink(Path::new(to), &target.join(link))?;
    }
    let shm = target.join("shm");
    sys.mkdir_all(&shm, 0o1777)?;
    sys.mount(
        Some(Path::new("tmpfs")),
        &shm,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=1777"),
    )?;
    if devpts {
        let pts = target.join("pts");
        sys.mkdir_all(&pts, 0o755)?;
        sys.mount(
            Some(Path::new("devpts")),
            &pts,
            Some("devpts"),
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            Some("newinstance,ptmxmode=0666,mode=0620"),
        )?;
        sys.symlink(Path::new("pts/ptmx"), &target.join("ptmx"))?;
    }
    if mqueue {
        let mq = target.join("mqueue");
        sys.mkdir_all(&mq, 0o755)?;
        if let Err(e) = sys.mount(
            Some(Path::new("mqueue")),
            &mq,
            Some("mqueue"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            None,
        ) {
            log::debug!("mqueue not mounted: {e}");
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::launch::plan::*;
    use crate::launch::sys::RecordingSys;
    use std::os::unix::fs::symlink;

    /// A recorder whose image is a real directory holding `dirs` (alive with the TempDir).
    pub(crate) fn recorder(dirs: &[&str]) -> (tempfile::TempDir, RecordingSys) {
        let t = tempfile::tempdir().expect("tempdir");
        for d in dirs {
            std::fs::create_dir_all(t.path().join(d)).expect("mkdir");
        }
        let sys = RecordingSys::new(t.path());
        (t, sys)
    }

    /// The caller in launch tests (process.rs's tests use it too).
    pub(crate) fn user() -> HostUser {
        HostUser {
            uid: 1000,
            gid: 1000,
            name: "u".into(),
            gecos: String::new(),
            home: "/home/u".into(),
            shell: "/bin/sh".into(),
            groups: vec![(1000, "u".into())],
        }
    }

    fn op(source: MountSource, dest: &str, why: &'static str) -> MountOp {
        MountOp {
            source,
            dest: dest.into(),
            target: TargetKind::Dir,
            readonly: false,
            recursive: true,
            allow_dev: false,
            optional: false,
            why,
        }
    }

    fn plan(layer: RootLayer, mounts: Vec<MountOp>) -> Plan {
        Plan {
            image_display: "/i.sif".into(),
            root: RootSource::Directory { path: "/sb".into() },
            layer,
            overlay: Default::default(),
            writable: false,
            ids: IdMapPlan::single(1000, 1000),
            namespaces: NamespacePlan::default(),
            pasta: None,
            session: SessionPlan {
                size_mb: 64,
                fstype: MemoryFs::Tmpfs,
            },
            mounts,
            process: ProcessPlan {
                action: Action::Exec,
                args: vec![],
                env: vec![],
                inject: vec![],
                evaluate: true,
                cwd: "/".into(),
                cwd_required: false,
                home: "/home/u".into(),
                umask: None,
                app: None,
                shell: None,
                instance_init: false,
            },
            security: SecurityPlan {
                no_new_privs: true,
                caps: crate::launch::capabilities::CapMask::default(),
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

    #[test]
    fn test_session_layer_sequence() {
        // /home/u and /data are missing from the image; /data/ro is in the host's /srv/data.
        let (_t, mut sys) = recorder(&["proc"]);
        sys.bind_contents
            .insert("/oldroot/srv/data".into(), vec!["ro".into()]);
        let p = plan(
            RootLayer::Session,
            vec![
                op(MountSource::Host("/proc".into()), "/proc", "/proc"),
                op(
                    MountSource::Host("/home/u".into()),
                    "/home/u",
                    "home directory",
                ),
                op(MountSource::Host("/srv/data".into()), "/data", "user bind"),
                MountOp {
                    readonly: true,
                    ..op(MountSource::Host("/srv/ro".into()), "/data/ro", "user bind")
                },
            ],
        );
        let warnings = build_root(&sys, &p, &Layout::default(), &user()).expect("ok");
        assert!(warnings.is_empty(), "{warnings:?}");
        let calls = sys.transcript();
        // Missing mount points are created in the upper layer before the overlay exists;
        // the nested /data/ro is not (it lives in the host's /srv/data).
        let upper_home = calls.find("upper Dir /home/u").expect("home created");
        let upper_data = calls.find("upper Dir /data").expect("data created");
        let overlay = calls.find("mount overlay /final").expect("overlay");
        assert!(upper_home < overlay && upper_data < overlay);
        assert!(!calls.contains("upper Dir /data/ro"));
        let mounts = sys.mounts.borrow();
        let ov = mounts
            .iter()
            .find(|m| m.fstype.as_deref() == Some("overlay"))
            .expect("ov");
        assert!(ov.data.as_deref().expect("data").contains("userxattr"));
        assert!(ov.flags.contains(MsFlags::MS_NOSUID | MsFlags::MS_NODEV));
        // Host paths come from the host's root under /oldroot.
        assert!(
            mounts
                .iter()
                .any(|m| m.source.as_deref() == Some("/oldroot/srv/data")
                    && m.target == "/final/data")
        );
        // The root goes back to read-only, then pivot_root and detach.
        let ro = calls.find("mount - /final").expect("ro remount");
        let pivot = calls.find("pivot_root . .").expect("pivot");
        assert!(ro < pivot);
        assert!(calls.ends_with("pivot_root . .\numount .\nchdir /"));
        // Recursive binds are restricted recursively, read-only ones included.
        assert!(calls.contains("restrict -R /final/data/ro 0x7"));
        assert!(calls.contains("restrict -R /final/proc 0x6"));
    }

    #[test]
    fn test_supervisor_leaves_the_session() {
        let sys = RecordingSys::default();
        leave_session(&sys, &Layout::default()).expect("ok");
        let calls = sys.transcript();
        assert_eq!(
            calls,
            "mkdir /supervisor 555\n\
             mount tmpfs /supervisor Some(\"tmpfs\") Some(\"size=4k,mode=555\")\n\
             chdir /supervisor\n\
             pivot_root . .\n\
             umount .\n\
             chdir /"
        );
        let m = &sys.mounts.borrow()[0];
        assert!(m.flags.contains(MsFlags::MS_RDONLY | MsFlags::MS_NOEXEC));
    }

    #[test]
    fn test_direct_layer_missing_target_is_an_error() {
        let (_t, sys) = recorder(&[]);
        let p = plan(
            RootLayer::Direct,
            vec![op(MountSource::Host("/srv".into()), "/data", "user bind")],
        );
        let e = build_root(&sys, &p, &Layout::default(), &user()).expect_err("missing");
        assert!(matches!(e, RootfsError::MissingTarget { .. }), "{e}");
        assert!(e.to_string().contains("/data"));
    }

    #[test]
    fn test_optional_failure_is_a_warning() {
        let (t, mut sys) = recorder(&["etc"]);
        std::fs::write(t.path().join("etc/localtime"), b"").expect("write");
        sys.fail_mounts = vec!["/etc/localtime".into()];
        let p = plan(
            RootLayer::Session,
            vec![MountOp {
                optional: true,
                target: TargetKind::File,
                recursive: false,
                ..op(
                    MountSource::Host("/etc/localtime".into()),
                    "/etc/localtime",
                    "configured bind path",
                )
            }],
        );
        let w = build_root(&sys, &p, &Layout::default(), &user()).expect("ok");
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("configured bind path"), "{w:?}");
    }

    /// `--overlay`: the writable directory's upper/ and work/ under the host's root, the
    /// read-only layers above the image in lowerdir; the root stays writable, and a failed
    /// overlay mount names the directory.
    #[test]
    fn test_overlay_directories_mount_data_and_order() {
        use crate::launch::plan::OverlayPlan;
        let (_t, mut sys) = recorder(&["proc"]);
        let mut p = plan(
            RootLayer::Persistent,
            vec![
                op(MountSource::Host("/proc".into()), "/proc", "/proc"),
                op(MountSource::Host("/srv".into()), "/data", "user bind"),
            ],
        );
        p.overlay = OverlayPlan {
            lowers: vec!["/o/ro2/upper".into(), "/o/ro1".into()],
            upper: Some("/o/rw".into()),
            ..Default::default()
        };
        build_root(&sys, &p, &Layout::default(), &user()).expect("ok");
        let calls = sys.transcript();
        // The missing mount point goes into the session's own layer, not into the user's
        // overlay (where it would persist), as Apptainer's overlay-lowerdir.
        assert!(calls.contains("upper Dir /data in /points"), "{calls}");
        assert!(!calls.contains("in /oldroot/o/rw"), "{calls}");
        let overlay = calls.find("mount overlay /final").expect("overlay");
        assert!(
            overlay < calls.find("/final/proc").expect("proc"),
            "{calls}"
        );
        let m = sys
            .mounts
            .borrow()
            .iter()
            .find(|m| m.fstype.as_deref() == Some("overlay"))
            .cloned()
            .expect("overlay mount");
        assert_eq!(
            m.data.as_deref(),
            Some(
                "lowerdir=/oldroot/o/ro2/upper:/oldroot/o/ro1:/points:/rootfs,\
                 upperdir=/oldroot/o/rw/upper,workdir=/oldroot/o/rw/work,userxattr"
            )
        );
        // Writable: no read-only remount of the root.
        assert!(
            !sys.mounts
                .borrow()
                .iter()
                .any(|m| m.target == "/final" && m.flags.contains(MsFlags::MS_RDONLY)),
            "{calls}"
        );

        sys.fail_mounts = vec!["/final".into()];
        let e = build_root(&sys, &p, &Layout::default(), &user()).expect_err("fails");
        assert!(
            e.to_string().starts_with("cannot use /o/rw as an overlay"),
            "{e}"
        );
    }

    /// Overlay image layers (mounted by the supervisor under /helper/mnt) join the
    /// lowerdir in stack order with the directories: an ext3 layer contributes its upper/
    /// (Apptainer's layout), a squashfs layer its root.
    #[test]
    fn test_overlay_image_layers_in_lowerdir() {
        use crate::launch::plan::{ImageFs, ImageLayer, LowerRef, OverlayPlan};
        let (_t, sys) = recorder(&["proc", "helper/mnt/l0/upper", "helper/mnt/l1"]);
        let mut p = plan(
            RootLayer::Session,
            vec![op(MountSource::Host("/proc".into()), "/proc", "/proc")],
        );
        let layer = |fs| ImageLayer {
            fs,
            path: "/o/i".into(),
            offset: 0,
            size: 1,
            writable: false,
        };
        p.overlay = OverlayPlan {
            lowers: vec!["/o/dir".into()],
            images: vec![layer(ImageFs::Ext3), layer(ImageFs::Squashfs)],
            order: vec![LowerRef::Image(1), LowerRef::Dir(0), LowerRef::Image(0)],
            ..Default::default()
        };
        build_root(&sys, &p, &Layout::default(), &user()).expect("ok");
        let mounts = sys.mounts.borrow();
        let m = mounts
            .iter()
            .find(|m| m.fstype.as_deref() == Some("overlay"))
            .expect("overlay mount");
        assert_eq!(
            m.data.as_deref(),
            Some(
                "lowerdir=/helper/mnt/l1:/oldroot/o/dir:/helper/mnt/l0/upper:/rootfs,\
                 upperdir=/upper,workdir=/work,userxattr"
            )
        );
    }

    #[test]
    fn test_overlay_failure_falls_back_to_direct() {
        let (_t, mut sys) = recorder(&["proc"]);
        sys.fail_mounts = vec!["/final".into()];
        let p = plan(
            RootLayer::Session,
            vec![op(MountSource::Host("/proc".into()), "/proc", "/proc")],
        );
        let w = build_root(&sys, &p, &Layout::default(), &user()).expect("ok");
        assert!(w[0].contains("overlay session layer unavailable"));
        let calls = sys.transcript();
        assert!(calls.contains("chdir /rootfs"), "{calls}");
    }

    #[test]
    fn test_generated_files_and_minimal_dev() {
        let (t, sys) = recorder(&["dev", "etc"]);
        std::fs::write(
            t.path().join("etc/passwd"),
            b"root:x:0:0:root:/root:/bin/sh\n",
        )
        .expect("write");
        let p = plan(
            RootLayer::Session,
            vec![
                MountOp {
                    allow_dev: true,
                    ..op(
                        MountSource::MinimalDev {
                            devpts: true,
                            mqueue: false,
                        },
                        "/dev",
                        "minimal /dev",
                    )
                },
                MountOp {
                    target: TargetKind::File,
                    recursive: false,
                    ..op(
                        MountSource::Generated(GeneratedFile::Passwd {
                            uid: 1000,
                            home: "/home/u".into(),
                        }),
                        "/etc/passwd",
                        "/etc/passwd",
                    )
                },
            ],
        );
        build_root(&sys, &p, &Layout::default(), &user()).expect("ok");
        let calls = sys.transcript();
        assert!(calls.contains("write /files/passwd"));
        assert!(calls.contains("mount devpts /final/dev/pts"));
        assert!(calls.contains("symlink pts/ptmx /final/dev/ptmx"));
        assert!(calls.contains("mount /oldroot/dev/null /final/dev/null"));
    }

    /// A file set (/.singularity.d/libs): each host library bound onto an empty file of its
    /// name in the session directory and made read-only there, then the directory bound,
    /// read-only, at its destination.
    #[test]
    fn test_file_set_binds_each_file_read_only_then_the_directory() {
        let (_t, sys) = recorder(&[".singularity.d"]);
        let p = plan(
            RootLayer::Session,
            vec![MountOp {
                readonly: true,
                ..op(
                    MountSource::FileSet {
                        name: "libs".into(),
                        files: vec![
                            ("/usr/lib64/libcuda.so.535".into(), "libcuda.so.1".into()),
                            ("/h/libfoo.so".into(), "libfoo.so".into()),
                        ],
                    },
                    "/.singularity.d/libs",
                    "host libraries",
                )
            }],
        );
        build_root(&sys, &p, &Layout::default(), &user()).expect("ok");
        let calls = sys.transcript();
        let at = |needle: &str| {
            calls
                .find(needle)
                .unwrap_or_else(|| panic!("{needle} not in {calls}"))
        };
        let placeholder = at("write /dirs/libs/libcuda.so.1");
        let bind = at("mount /oldroot/usr/lib64/libcuda.so.535 /dirs/libs/libcuda.so.1");
        let ro = at("mount - /dirs/libs/libcuda.so.1");
        let dir = at("mount /dirs/libs /final/.singularity.d/libs");
        assert!(placeholder < bind && bind < ro && ro < dir, "{calls}");
        at("mount /oldroot/h/libfoo.so /dirs/libs/libfoo.so");
        // Each library: read-only, nosuid, nodev; the directory's tree likewise.
        let want = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
        let remounts: Vec<MsFlags> = sys
            .mounts
            .borrow()
            .iter()
            .filter(|m| m.source.is_none() && m.target.starts_with("/dirs/libs/"))
            .map(|m| m.flags)
            .collect();
        assert_eq!(remounts.len(), 2);
        assert!(remounts.iter().all(|f| f.contains(want)), "{remounts:?}");
        at("restrict -R /final/.singularity.d/libs 0x7");
    }

    /// The host mounts of [`test_hostile_symlinks_at_mount_points`]: user binds, or (on a
    /// writable sandbox, where a missing user bind destination is an error) home-like
    /// mounts, whose missing destinations are created in the root.
    fn hostile_binds(why: &'static str) -> Vec<MountOp> {
        vec![
            op(MountSource::Host("/h1".into()), "/mnt/x", why),
            op(MountSource::Host("/h2".into()), "/etc/evil", why),
            op(MountSource::Host("/h3".into()), "/srv/y", why),
        ]
    }

    /// Symlinks planted at mount destinations (`/../..` to a host path, an absolute link to
    /// a host path, a `..` chain) resolve inside the image: the mount targets are where the
    /// container sees them, missing ones are created there, and nothing is created in the
    /// host directory the links name. With the session layer and on a writable sandbox.
    #[test]
    fn test_hostile_symlinks_at_mount_points() {
        let host = tempfile::tempdir().expect("tempdir");
        let outside = std::fs::canonicalize(host.path()).expect("canon");
        let rel_outside = outside.strip_prefix("/").expect("absolute");
        for (layer, root) in [
            (RootLayer::Session, "/final"),
            (RootLayer::Direct, "/rootfs"),
        ] {
            let (t, sys) = recorder(&[]);
            let img = t.path();
            symlink(format!("/../../..{}", outside.display()), img.join("mnt")).expect("ln");
            symlink(&outside, img.join("etc")).expect("ln");
            symlink("../../../../../../../srv-target", img.join("srv")).expect("ln");
            std::fs::create_dir_all(img.join(rel_outside)).expect("mkdir");
            let why = match layer {
                RootLayer::Direct => WHY_HOME,
                _ => WHY_USER_BIND,
            };
            let p = Plan {
                writable: layer == RootLayer::Direct,
                ..plan(layer, hostile_binds(why))
            };
            build_root(&sys, &p, &Layout::default(), &user()).expect("ok");
            let targets: Vec<(String, String)> = sys
                .mounts
                .borrow()
                .iter()
                .filter(|m| {
                    m.source
                        .as_deref()
                        .is_some_and(|s| s.starts_with("/oldroot/h"))
                })
                .map(|m| (m.source.clone().unwrap_or_default(), m.target.clone()))
                .collect();
            let inside = |rest: &str| format!("{root}{}/{rest}", outside.display());
            assert_eq!(
                targets,
                [
                    ("/oldroot/h1".to_string(), inside("x")),
                    ("/oldroot/h2".to_string(), inside("evil")),
                    ("/oldroot/h3".to_string(), format!("{root}/srv-target/y")),
                ],
                "{layer:?}"
            );
            for made in ["x", "evil"] {
                assert!(
                    img.join(rel_outside).join(made).is_dir(),
                    "{layer:?} {made}"
                );
            }
            assert!(img.join("srv-target/y").is_dir(), "{layer:?}");
            let left: Vec<_> = std::fs::read_dir(&outside).expect("ls").collect();
            assert!(left.is_empty(), "{layer:?}: created on the host: {left:?}");
        }
    }

    /// A symlink loop at a mount destination is an error that says so, for both layers.
    #[test]
    fn test_symlink_loop_at_mount_point_is_an_error() {
        for layer in [RootLayer::Session, RootLayer::Direct] {
            let (t, sys) = recorder(&[]);
            symlink("/loop2", t.path().join("loop1")).expect("ln");
            symlink("loop1", t.path().join("loop2")).expect("ln");
            let p = Plan {
                writable: layer == RootLayer::Direct,
                ..plan(
                    layer,
                    vec![op(MountSource::Host("/h".into()), "/loop1/x", "user bind")],
                )
            };
            let e = build_root(&sys, &p, &Layout::default(), &user()).expect_err("loop");
            let msg = e.to_string();
            assert!(
                msg.contains("/loop1/x") && msg.contains("symbolic links"),
                "{layer:?}: {msg}"
            );
            assert!(
                sys.mounts
                    .borrow()
                    .iter()
                    .all(|m| m.source.as_deref() != Some("/oldroot/h"))
            );
        }
    }

    /// A user bind's missing destination inside an earlier user bind (a host directory) is
    /// created on that mount; inside a configured bind it is not, and with --writable a
    /// missing user bind destination is an error that says so, with nothing created.
    #[test]
    fn test_nested_bind_destinations() {
        let nested = |outer_why: &'static str| {
            vec![
                op(MountSource::Host("/h1".into()), "/mnt/outer", outer_why),
                op(
                    MountSource::Host("/h2".into()),
                    "/mnt/outer/sub/dir",
                    WHY_USER_BIND,
                ),
            ]
        };
        let (_t, sys) = recorder(&["mnt/outer"]);
        let p = plan(RootLayer::Session, nested(WHY_USER_BIND));
        build_root(&sys, &p, &Layout::default(), &user()).expect("ok");
        assert!(sys.transcript().contains("create Dir /mnt/outer/sub/dir"));
        assert!(
            sys.mounts
                .borrow()
                .iter()
                .any(|m| m.source.as_deref() == Some("/oldroot/h2")
                    && m.target == "/final/mnt/outer/sub/dir")
        );

        let (_t, sys) = recorder(&["mnt/outer"]);
        let p = plan(RootLayer::Session, nested("configured bind path"));
        let e = build_root(&sys, &p, &Layout::default(), &user()).expect_err("no layer");
        assert!(matches!(e, RootfsError::MissingTarget { .. }), "{e}");

        for outer in [WHY_USER_BIND, WHY_HOME] {
            let (t, sys) = recorder(&["mnt/outer"]);
            let p = Plan {
                writable: true,
                ..plan(RootLayer::Direct, nested(outer))
            };
            let e = build_root(&sys, &p, &Layout::default(), &user()).expect_err("writable");
            assert!(
                matches!(e, RootfsError::MissingWritableTarget { .. })
                    && e.to_string().contains("/mnt/outer/sub/dir")
                    && e.to_string().contains("--writable"),
                "{e}"
            );
            assert!(!t.path().join("mnt/outer/sub").exists());
        }
    }

    /// An image whose /var/tmp links to /tmp: the host's /var/tmp is not bound over the
    /// container's /tmp; a real /var/tmp gets it.
    #[test]
    fn test_var_tmp_linked_to_tmp_is_skipped() {
        let tmp_ops = || {
            vec![
                op(MountSource::Host("/tmp".into()), "/tmp", WHY_TEMPORARY),
                op(
                    MountSource::Host("/var/tmp".into()),
                    "/var/tmp",
                    WHY_TEMPORARY,
                ),
            ]
        };
        let var_tmp_bound = |sys: &RecordingSys| {
            sys.mounts
                .borrow()
                .iter()
                .any(|m| m.source.as_deref() == Some("/oldroot/var/tmp"))
        };
        let (t, sys) = recorder(&["tmp", "var"]);
        symlink("../tmp", t.path().join("var/tmp")).expect("ln");
        build_root(
            &sys,
            &plan(RootLayer::Session, tmp_ops()),
            &Layout::default(),
            &user(),
        )
        .expect("ok");
        assert!(!var_tmp_bound(&sys), "{}", sys.transcript());
        let (_t, sys) = recorder(&["tmp", "var/tmp"]);
        build_root(
            &sys,
            &plan(RootLayer::Session, tmp_ops()),
            &Layout::default(),
            &user(),
        )
        .expect("ok");
        assert!(var_tmp_bound(&sys), "{}", sys.transcript());
    }
}
