//! The narrow seam between the launch sequence and the kernel (youki's `Syscall` idea).
//!
//! Every filesystem-namespace operation of the container setup goes through [`Sys`]:
//! `LinuxSys` performs it, `RecordingSys` (tests) records it, so the mount sequence is unit
//! tested without privileges. Paths inside the container root are resolved by sifr's one
//! in-root resolver ([`crate::image::inroot`]), so a symlink in an image can never redirect
//! a mount or a `mkdir` outside the container tree; the resulting `O_PATH` descriptors are
//! mounted through their `/proc/self/fd/N` names. `RecordingSys` resolves with the same
//! resolver over a real directory standing for the image.
//!
//! Host paths are reached under [`HOST_ROOT`]: the supervisor pivots into the session tmpfs
//! and keeps the host's root there (bubblewrap's approach). Descriptors opened on the host
//! cannot be used instead: the kernel refuses to bind a mount that belongs to another mount
//! namespace (EINVAL). Bind sources are canonicalized by sifr on the host first.
//!
//! The process steps go through it as well (namespaces, hostname, loopback, the last
//! steps before `execve`), so the sequence each process of a launch runs is unit tested
//! against the recorder too, as typed [`Call`] values. Only fork, the pipes and the
//! parent-death checks stay outside.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::stat::Mode;

use super::action::Exec;
use super::capabilities::CapMask;
use super::plan::{RunAs, TargetKind};
use super::profile::{self, ProfileFilter};
use super::seccomp::{self, Emulation};
use super::security;
use crate::image::inroot;

/// A mount operation, as recorded by [`RecordingSys`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountCall {
    pub source: Option<String>,
    pub target: String,
    pub fstype: Option<String>,
    pub flags: MsFlags,
    pub data: Option<String>,
}

/// An operation, as recorded by [`RecordingSys`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Mount(MountCall),
    Umount(PathBuf),
    /// A detached mount tree attached here (a kept image mount).
    MoveMount(PathBuf),
    RestrictRecursive(PathBuf, u64),
    PivotRoot(PathBuf, PathBuf),
    Chdir(PathBuf),
    MkdirAll(PathBuf, u32),
    /// The path and the length of the contents.
    WriteFile(PathBuf, usize),
    /// The link's target, then the link.
    Symlink(PathBuf, PathBuf),
    CreateInUpper {
        kind: TargetKind,
        rel: PathBuf,
        upper: PathBuf,
    },
    /// A missing target created by the resolution: its kind and container path.
    CreateInRoot(TargetKind, PathBuf),
    Release,
    Unshare(CloneFlags),
    /// setns(2) into a namespace of this type (joining an instance).
    Setns(CloneFlags),
    /// The root and working directory moved to a directory held open (joining an instance).
    EnterRoot,
    SetHostname(String),
    LoopbackUp,
    Umask(u32),
    ResetSignals,
    CloexecFrom(u32),
    NoNewPrivs,
    Seccomp(Emulation),
    SetIds(RunAs),
    ApplyCaps(CapMask),
    /// The `--security seccomp:` profile, by origin.
    SeccompProfile(String),
    Execve(Exec),
}

impl std::fmt::Display for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Call::Mount(m) => write!(
                f,
                "mount {} {} {:?} {:?}",
                m.source.as_deref().unwrap_or("-"),
                m.target,
                m.fstype,
                m.data
            ),
            Call::Umount(t) => write!(f, "umount {}", t.display()),
            Call::MoveMount(t) => write!(f, "move_mount {}", t.display()),
            Call::RestrictRecursive(t, a) => write!(f, "restrict -R {} {a:#x}", t.display()),
            Call::PivotRoot(n, o) => write!(f, "pivot_root {} {}", n.display(), o.display()),
            Call::Chdir(p) => write!(f, "chdir {}", p.display()),
            Call::MkdirAll(p, mode) => write!(f, "mkdir {} {mode:o}", p.display()),
            Call::WriteFile(p, n) => write!(f, "write {} {n}", p.display()),
            Call::Symlink(t, l) => write!(f, "symlink {} {}", t.display(), l.display()),
            Call::CreateInUpper { kind, rel, upper } => {
                write!(f, "upper {kind:?} {} in {}", rel.display(), upper.display())
            }
            Call::CreateInRoot(kind, p) => write!(f, "create {kind:?} {}", p.display()),
            Call::Release => f.write_str("release"),
            Call::Unshare(flags) => write!(f, "unshare {flags:?}"),
            Call::Setns(kind) => write!(f, "setns {kind:?}"),
            Call::EnterRoot => f.write_str("enter root"),
            Call::SetHostname(h) => write!(f, "sethostname {h:?}"),
            Call::LoopbackUp => f.write_str("loopback up"),
            Call::Umask(m) => write!(f, "umask {m:o}"),
            Call::ResetSignals => f.write_str("reset signals"),
            Call::CloexecFrom(n) => write!(f, "cloexec from {n}"),
            Call::NoNewPrivs => f.write_str("no_new_privs"),
            Call::Seccomp(em) => write!(f, "seccomp {em:?}"),
            Call::SetIds(r) => write!(f, "set ids {r:?}"),
            Call::ApplyCaps(c) => write!(f, "capabilities {c:?}"),
            Call::SeccompProfile(origin) => write!(f, "seccomp profile {origin}"),
            Call::Execve(e) => write!(f, "execve {}", e.path.display()),
        }
    }
}

/// Where [`Sys::path_in_root`] may create a missing target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CreateOn<'a> {
    pub kind: TargetKind,
    /// The container path of the only mount that may be written: `/` for the root's own, a
    /// mount of sifr's (a session directory, a tmpfs), or a host directory the user asked for
    /// (a bind, /tmp, scratch, home; `rootfs::may_create_in`) that encloses the target. A
    /// symlink leading into any other mount (a host directory bound earlier, such as /tmp)
    /// makes the creation fail with EXDEV instead of creating on the host.
    pub mount: &'a Path,
}

/// The operations the container setup needs from the kernel.
pub trait Sys {
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> io::Result<()>;
    fn umount(&self, target: &Path, flags: MntFlags) -> io::Result<()>;
    /// Attaches the detached mount tree `tree` (from open_tree(OPEN_TREE_CLONE), e.g. a
    /// kept image mount) at `target` (move_mount, Linux 5.2+).
    fn move_mount(&self, tree: BorrowedFd<'_>, target: &Path) -> io::Result<()>;
    /// Adds restrictions (`MOUNT_ATTR_*` bits) to a mount and every mount below it
    /// (mount_setattr with AT_RECURSIVE, Linux 5.12+).
    fn restrict_recursive(&self, target: &Path, attrs: u64) -> io::Result<()>;
    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> io::Result<()>;
    fn chdir(&self, path: &Path) -> io::Result<()>;
    /// Creates a directory (and parents) at an absolute path outside the container.
    fn mkdir_all(&self, path: &Path, mode: u32) -> io::Result<()>;
    /// Writes a file at an absolute path outside the container (session files).
    fn write_file(&self, path: &Path, contents: &[u8], mode: u32) -> io::Result<()>;
    /// Creates a symlink at an absolute path outside the container (minimal /dev).
    fn symlink(&self, target: &Path, link: &Path) -> io::Result<()>;
    /// Resolves `rel` inside `root` as if `root` were `/` (through `image::inroot`, the one
    /// resolver), and returns a path that names the result for mount(2). With `create`, missing components are created (directories, and
    /// the last one as the given kind), only on the mount `create` names; without it a
    /// missing target gives `Ok(None)`.
    fn path_in_root(
        &self,
        root: &Path,
        rel: &Path,
        create: Option<CreateOn<'_>>,
    ) -> io::Result<Option<PathBuf>>;
    /// Creates a mount point that the image lacks in the overlay's upper layer, before the
    /// overlay is mounted: the path is resolved in `lower` (the image, following its symlinks
    /// confined to it) and the missing part is created under `upper` with the same layout.
    /// Creating it through the merged overlay is not possible: the image's directories
    /// belong to ids that are not mapped in the user namespace, so even a process with every
    /// capability there may not write into them.
    fn create_in_upper(
        &self,
        lower: &Path,
        upper: &Path,
        rel: &Path,
        kind: TargetKind,
    ) -> io::Result<()>;
    /// Reads a file inside `root` (resolved as above); `Ok(None)` when it does not exist.
    fn read_in_root(&self, root: &Path, rel: &Path) -> io::Result<Option<Vec<u8>>>;
    /// The path that names a host path in the supervisor's namespace (see [`HOST_ROOT`]).
    fn host_source(&self, path: &Path) -> PathBuf;
    /// Mount flags that the kernel has locked on the mount holding `path` (a bind remount
    /// in a user namespace must keep them).
    fn locked_flags(&self, path: &Path) -> io::Result<MsFlags>;

    // Process and namespace steps (see the module header).

    /// Drops what the resolution calls hold (descriptors named by resolved paths).
    fn release(&self);
    /// unshare(2).
    fn unshare(&self, flags: CloneFlags) -> io::Result<()>;
    /// setns(2): joins the namespace `fd` names, of type `kind`.
    fn setns(&self, fd: BorrowedFd<'_>, kind: CloneFlags) -> io::Result<()>;
    /// Makes the directory `fd` names the root and the working directory (fchdir, chroot).
    fn enter_root(&self, fd: BorrowedFd<'_>) -> io::Result<()>;
    /// sethostname(2), in the process's UTS namespace.
    fn sethostname(&self, name: &str) -> io::Result<()>;
    /// Brings up `lo` in the process's (new) network namespace.
    fn loopback_up(&self) -> io::Result<()>;
    /// True when `path` exists (the container's, once the process has pivoted).
    fn exists(&self, path: &Path) -> bool;
    /// umask(2).
    fn umask(&self, mask: u32);
    /// Unblocks every signal and restores default dispositions.
    fn reset_signals(&self) -> io::Result<()>;
    /// Marks every descriptor from `first` on close-on-exec.
    fn cloexec_from(&self, first: u32) -> io::Result<()>;
    /// PR_SET_NO_NEW_PRIVS.
    fn no_new_privs(&self) -> io::Result<()>;
    /// Installs the seccomp filter of a root emulation.
    fn install_seccomp(&self, emulation: Emulation) -> io::Result<()>;
    /// Switches to other ids of the user namespace, keeping the permitted capabilities
    /// for the step that sets them.
    fn set_ids(&self, ids: &RunAs) -> io::Result<()>;
    /// Leaves the calling thread exactly `keep` in all five capability sets.
    fn apply_caps(&self, keep: CapMask) -> io::Result<()>;
    /// Installs a compiled `--security seccomp:` profile.
    fn install_profile(&self, filter: &ProfileFilter) -> io::Result<()>;
    /// execve(2): returns only on failure (the recorder returns `Ok`).
    fn execve(&self, exec: &Exec) -> io::Result<()>;
}

/// Where the host's root filesystem is visible once the supervisor has pivoted into the
/// session tmpfs.
pub const HOST_ROOT: &str = "/oldroot";

/// The real thing.
#[derive(Debug, Default)]
pub struct LinuxSys {
    /// Descriptors of resolved targets; they must outlive the mount calls that name them.
    held: RefCell<Vec<OwnedFd>>,
}

fn errno(e: nix::Error) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// The name of a descriptor for mount(2): the host's procfs, since the session root where
/// the container is assembled has no /proc of its own.
fn fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("{HOST_ROOT}/proc/self/fd/{}", fd.as_raw_fd()))
}

impl LinuxSys {
    pub fn new() -> LinuxSys {
        LinuxSys::default()
    }
}

/// Opens a root directory (`O_PATH`) for the resolver.
fn open_root(root: &Path) -> io::Result<OwnedFd> {
    nix::fcntl::open(
        root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(errno)
}

/// [`inroot::open_in_root`] on host paths: `rel` resolved inside `root` as if it were `/`,
/// with `create`, the missing part created there as the given kind, on the mount named.
fn open_in_root(
    root: &Path,
    rel: &Path,
    flags: OFlag,
    create: Option<CreateOn<'_>>,
) -> io::Result<Option<OwnedFd>> {
    let root_fd = open_root(root)?;
    let kind = create.map(|c| match c.kind {
        TargetKind::Dir => inroot::Create::Dir,
        TargetKind::File | TargetKind::FileIfDirExists => inroot::Create::File,
    });
    // The mount that may be written, by id; any other is refused.
    let on = match create {
        Some(c) if c.mount != Path::new("/") => {
            let fd = inroot::open_in_root(
                root_fd.as_fd(),
                c.mount.as_os_str().as_bytes(),
                OFlag::O_PATH,
                None,
                &|_| Ok(()),
                inroot::Resolver::Auto,
            )
            .map_err(errno)?
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))?;
            Some(inroot::mount_id(fd.as_fd()).map_err(errno)?)
        }
        Some(_) => Some(inroot::mount_id(root_fd.as_fd()).map_err(errno)?),
        None => None,
    };
    let allow = |dir: std::os::fd::BorrowedFd<'_>| match on {
        Some(id) if inroot::mount_id(dir)? != id => Err(nix::Error::EXDEV),
        _ => Ok(()),
    };
    match inroot::open_in_root(
        root_fd.as_fd(),
        rel.as_os_str().as_bytes(),
        flags,
        kind,
        &allow,
        inroot::Resolver::Auto,
    ) {
        Err(nix::Error::EXDEV) => Err(io::Error::other(
            "a symlink in the image leads it into another mount (a host directory); sifr \
             creates mount points only in the container's own tree",
        )),
        r => r.map_err(errno),
    }
}

/// See [`Sys::read_in_root`].
fn read_in_root(root: &Path, rel: &Path) -> io::Result<Option<Vec<u8>>> {
    use std::io::Read;
    let Some(fd) = open_in_root(root, rel, OFlag::O_RDONLY, None)? else {
        return Ok(None);
    };
    let mut buf = Vec::new();
    // Bounded: these are small text files (passwd, group).
    std::fs::File::from(fd)
        .take(16 << 20)
        .read_to_end(&mut buf)?;
    Ok(Some(buf))
}

/// See [`Sys::create_in_upper`]: the longest prefix of `rel` that exists in `lower` is
/// resolved there (symlinks followed inside it); its directories are made in `upper` at
/// their resolved place with the image's modes, then the rest of `rel` below them. Both
/// trees are reached only through the in-root resolver.
fn create_in_upper(lower: &Path, upper: &Path, rel: &Path, kind: TargetKind) -> io::Result<()> {
    use inroot::Resolved;
    use std::os::unix::ffi::OsStrExt;
    let lower_fd = open_root(lower)?;
    let upper_fd = open_root(upper)?;
    let comps: Vec<&std::ffi::OsStr> = rel
        .components()
        .filter_map(|c| match c {
            std::path::Component::Normal(n) => Some(n),
            _ => None,
        })
        .collect();
    let mut resolved = b"/".to_vec();
    let mut existing = 0;
    for i in 0..comps.len() {
        let prefix: PathBuf = comps[..=i].iter().collect();
        match inroot::resolve_in_root(lower_fd.as_fd(), prefix.as_os_str().as_bytes(), None) {
            Ok(Resolved::Dir { path, .. }) => resolved = path,
            Ok(Resolved::Entry { exists: true, .. }) if i + 1 == comps.len() => return Ok(()),
            Ok(Resolved::Entry { exists: true, .. }) => {
                return Err(io::Error::from_raw_os_error(libc::ENOTDIR));
            }
            Ok(Resolved::Entry { exists: false, .. }) | Err(nix::Error::ENOENT) => break,
            Err(e) => return Err(errno(e)),
        }
        existing = i + 1;
    }
    if existing == comps.len() {
        return Ok(());
    }
    // The image's directories, mirrored one level at a time with their modes.
    let names: Vec<&[u8]> = resolved
        .split(|&b| b == b'/')
        .filter(|n| !n.is_empty())
        .collect();
    for depth in 1..=names.len() {
        let here = names[..depth].join(&b'/');
        let st = inroot::open_dir_in_root(lower_fd.as_fd(), &here, inroot::Resolver::Auto)
            .and_then(|fd| nix::sys::stat::fstat(&fd))
            .map_err(errno)?;
        let mode = Mode::from_bits_truncate(st.st_mode & 0o7777);
        let mut mkdir = |d: std::os::fd::BorrowedFd<'_>, n: &std::ffi::OsStr| {
            nix::sys::stat::mkdirat(d, n, mode)
        };
        inroot::mkdir_all_in_root(upper_fd.as_fd(), &here, &mut mkdir).map_err(errno)?;
    }
    let mut rest = resolved;
    for c in &comps[existing..] {
        rest.push(b'/');
        rest.extend_from_slice(c.as_bytes());
    }
    open_in_root(
        upper,
        Path::new(std::ffi::OsStr::from_bytes(&rest)),
        OFlag::O_PATH,
        Some(CreateOn {
            kind,
            mount: Path::new("/"),
        }),
    )
    .map(drop)
}

impl Sys for LinuxSys {
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> io::Result<()> {
        nix::mount::mount(source, target, fstype, flags, data).map_err(errno)
    }

    fn umount(&self, target: &Path, flags: MntFlags) -> io::Result<()> {
        nix::mount::umount2(target, flags).map_err(errno)
    }

    fn move_mount(&self, tree: BorrowedFd<'_>, target: &Path) -> io::Result<()> {
        /// MOVE_MOUNT_F_EMPTY_PATH of <linux/mount.h>: the source is the descriptor itself.
        const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
        let target = std::ffi::CString::new(target.as_os_str().as_bytes())
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: both strings are NUL-terminated and outlive the call; the descriptor is
        // borrowed for its duration.
        let r = unsafe {
            libc::syscall(
                libc::SYS_move_mount,
                tree.as_raw_fd(),
                c"".as_ptr(),
                libc::AT_FDCWD,
                target.as_ptr(),
                MOVE_MOUNT_F_EMPTY_PATH,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn restrict_recursive(&self, target: &Path, attrs: u64) -> io::Result<()> {
        /// `struct mount_attr` of <linux/mount.h>.
        #[repr(C)]
        struct MountAttr {
            attr_set: u64,
            attr_clr: u64,
            propagation: u64,
            userns_fd: u64,
        }
        let attr = MountAttr {
            attr_set: attrs,
            attr_clr: 0,
            propagation: 0,
            userns_fd: 0,
        };
        let c = std::ffi::CString::new(target.as_os_str().as_encoded_bytes())
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: mount_setattr reads `size` bytes of `attr`, a live repr(C) struct, and the
        // NUL-terminated path.
        let r = unsafe {
            libc::syscall(
                libc::SYS_mount_setattr,
                libc::AT_FDCWD,
                c.as_ptr(),
                libc::AT_RECURSIVE as libc::c_uint,
                &attr as *const MountAttr,
                std::mem::size_of::<MountAttr>(),
            )
        };
        if r == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> io::Result<()> {
        nix::unistd::pivot_root(new_root, put_old).map_err(errno)
    }

    fn chdir(&self, path: &Path) -> io::Result<()> {
        nix::unistd::chdir(path).map_err(errno)
    }

    fn mkdir_all(&self, path: &Path, mode: u32) -> io::Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(mode)
            .create(path)
    }

    fn write_file(&self, path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(path)?;
        f.write_all(contents)
    }

    fn symlink(&self, target: &Path, link: &Path) -> io::Result<()> {
        std::os::unix::fs::symlink(target, link)
    }

    fn path_in_root(
        &self,
        root: &Path,
        rel: &Path,
        create: Option<CreateOn<'_>>,
    ) -> io::Result<Option<PathBuf>> {
        let Some(fd) = open_in_root(root, rel, OFlag::O_PATH, create)? else {
            return Ok(None);
        };
        let p = fd_path(&fd);
        self.held.borrow_mut().push(fd);
        Ok(Some(p))
    }

    fn create_in_upper(
        &self,
        lower: &Path,
        upper: &Path,
        rel: &Path,
        kind: TargetKind,
    ) -> io::Result<()> {
        create_in_upper(lower, upper, rel, kind)
    }

    fn read_in_root(&self, root: &Path, rel: &Path) -> io::Result<Option<Vec<u8>>> {
        read_in_root(root, rel)
    }

    fn host_source(&self, path: &Path) -> PathBuf {
        Path::new(HOST_ROOT).join(path.strip_prefix("/").unwrap_or(path))
    }

    fn locked_flags(&self, path: &Path) -> io::Result<MsFlags> {
        use nix::sys::statvfs::FsFlags;
        let st = nix::sys::statvfs::statvfs(path).map_err(errno)?;
        let f = st.flags();
        let mut out = MsFlags::empty();
        for (fs, ms) in [
            (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
            (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
            (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
            (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
            (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
            (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
            (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
        ] {
            if f.contains(fs) {
                out |= ms;
            }
        }
        Ok(out)
    }

    fn release(&self) {
        self.held.borrow_mut().clear();
    }

    fn unshare(&self, flags: CloneFlags) -> io::Result<()> {
        nix::sched::unshare(flags).map_err(errno)
    }

    fn setns(&self, fd: BorrowedFd<'_>, kind: CloneFlags) -> io::Result<()> {
        nix::sched::setns(fd, kind).map_err(errno)
    }

    fn enter_root(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        nix::unistd::fchdir(fd).map_err(errno)?;
        nix::unistd::chroot(".").map_err(errno)?;
        nix::unistd::chdir("/").map_err(errno)
    }

    fn sethostname(&self, name: &str) -> io::Result<()> {
        nix::unistd::sethostname(name).map_err(errno)
    }

    fn loopback_up(&self) -> io::Result<()> {
        loopback_up()
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }

    fn umask(&self, mask: u32) {
        nix::sys::stat::umask(Mode::from_bits_truncate(mask));
    }

    fn reset_signals(&self) -> io::Result<()> {
        security::reset_signals()
    }

    fn cloexec_from(&self, first: u32) -> io::Result<()> {
        security::cloexec_from(first)
    }

    fn no_new_privs(&self) -> io::Result<()> {
        security::no_new_privs()
    }

    fn install_seccomp(&self, emulation: Emulation) -> io::Result<()> {
        seccomp::compile(emulation)
            .and_then(|p| seccomp::install(&p))
            .map_err(|e| io::Error::other(e.to_string()))
    }

    fn set_ids(&self, ids: &RunAs) -> io::Result<()> {
        security::set_ids(ids)
    }

    fn apply_caps(&self, keep: CapMask) -> io::Result<()> {
        security::apply_caps(keep)
    }

    fn install_profile(&self, filter: &ProfileFilter) -> io::Result<()> {
        profile::install(filter)
    }

    fn execve(&self, exec: &Exec) -> io::Result<()> {
        let to_c = |s: &str| std::ffi::CString::new(s.as_bytes()).ok();
        let path = to_c(&exec.path.to_string_lossy())
            .ok_or_else(|| io::Error::other("command path contains a NUL byte"))?;
        let argv: Vec<_> = exec.argv.iter().filter_map(|a| to_c(a)).collect();
        let envp: Vec<_> = exec
            .env
            .iter()
            .filter_map(|(k, v)| to_c(&format!("{k}={v}")))
            .collect();
        match nix::unistd::execve(&path, &argv, &envp) {
            Err(e) => Err(errno(e)),
        }
    }
}

/// Brings up `lo` in a new network namespace (SIOCGIFFLAGS, then SIOCSIFFLAGS with
/// IFF_UP|IFF_RUNNING).
fn loopback_up() -> io::Result<()> {
    // SAFETY: a plain socket() call; the descriptor is wrapped right away.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor we own.
    let sock = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // SAFETY: ifreq is plain old data; zeroed is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (i, b) in b"lo\0".iter().enumerate() {
        ifr.ifr_name[i] = *b as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads into the ifreq we pass.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the union member for flags is the one SIOCGIFFLAGS filled.
    unsafe { ifr.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short };
    // SAFETY: SIOCSIFFLAGS reads the ifreq we pass.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Records operations instead of performing them. Paths inside the container are resolved
/// by the real resolver in `image`, a real directory standing for the container's root (the
/// image and its session layer as one tree), so a symlink planted there acts as it would in
/// a container; the path reported is the root asked for joined with the resolved path.
#[derive(Debug, Default)]
pub struct RecordingSys {
    pub calls: RefCell<Vec<Call>>,
    pub mounts: RefCell<Vec<MountCall>>,
    /// The real directory standing for the container's root.
    pub image: PathBuf,
    /// What bind sources hold: a recorded bind of one of these makes the directories listed
    /// under its target in `image`, as the mount would show them.
    pub bind_contents: BTreeMap<PathBuf, Vec<PathBuf>>,
    /// Mount calls whose target ends with one of these fail with EPERM.
    pub fail_mounts: Vec<String>,
    /// Process steps that fail with EPERM.
    pub fail_steps: Vec<Call>,
    /// The real place in `image` of each path `path_in_root` reported.
    resolved: RefCell<BTreeMap<PathBuf, PathBuf>>,
}

impl RecordingSys {
    /// A recorder whose container root is the real directory `image`.
    pub fn new(image: &Path) -> RecordingSys {
        RecordingSys {
            image: image.to_path_buf(),
            ..Default::default()
        }
    }

    fn record(&self, c: Call) {
        self.calls.borrow_mut().push(c);
    }

    /// Records a process step; fails it if listed in `fail_steps`.
    fn step(&self, c: Call) -> io::Result<()> {
        let fail = self.fail_steps.contains(&c);
        self.record(c);
        if fail {
            return Err(io::Error::from_raw_os_error(libc::EPERM));
        }
        Ok(())
    }

    /// The calls, one a line, in the words of [`Call`]'s `Display`.
    pub fn transcript(&self) -> String {
        let calls = self.calls.borrow();
        calls
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Sys for RecordingSys {
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> io::Result<()> {
        let call = MountCall {
            source: source.map(|s| s.display().to_string()),
            target: target.display().to_string(),
            fstype: fstype.map(str::to_string),
            flags,
            data: data.map(str::to_string),
        };
        self.record(Call::Mount(call.clone()));
        let fail = self
            .fail_mounts
            .iter()
            .any(|f| call.target.ends_with(f.as_str()) && !flags.contains(MsFlags::MS_REMOUNT));
        self.mounts.borrow_mut().push(call);
        if fail {
            return Err(io::Error::from_raw_os_error(libc::EPERM));
        }
        let bind = flags.contains(MsFlags::MS_BIND) && !flags.contains(MsFlags::MS_REMOUNT);
        let shown = source.and_then(|s| self.bind_contents.get(s));
        if let (true, Some(dirs), Some(real)) = (bind, shown, self.resolved.borrow().get(target)) {
            for d in dirs {
                std::fs::create_dir_all(real.join(d))?;
            }
        }
        Ok(())
    }

    fn umount(&self, target: &Path, _flags: MntFlags) -> io::Result<()> {
        self.record(Call::Umount(target.to_path_buf()));
        Ok(())
    }

    fn move_mount(&self, _tree: BorrowedFd<'_>, target: &Path) -> io::Result<()> {
        self.step(Call::MoveMount(target.to_path_buf()))
    }

    fn restrict_recursive(&self, target: &Path, attrs: u64) -> io::Result<()> {
        self.record(Call::RestrictRecursive(target.to_path_buf(), attrs));
        Ok(())
    }

    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> io::Result<()> {
        self.step(Call::PivotRoot(
            new_root.to_path_buf(),
            put_old.to_path_buf(),
        ))
    }

    fn chdir(&self, path: &Path) -> io::Result<()> {
        self.step(Call::Chdir(path.to_path_buf()))
    }

    fn mkdir_all(&self, path: &Path, mode: u32) -> io::Result<()> {
        self.record(Call::MkdirAll(path.to_path_buf(), mode));
        Ok(())
    }

    fn write_file(&self, path: &Path, contents: &[u8], _mode: u32) -> io::Result<()> {
        self.record(Call::WriteFile(path.to_path_buf(), contents.len()));
        Ok(())
    }

    fn symlink(&self, target: &Path, link: &Path) -> io::Result<()> {
        self.record(Call::Symlink(target.to_path_buf(), link.to_path_buf()));
        Ok(())
    }

    fn path_in_root(
        &self,
        root: &Path,
        rel: &Path,
        create: Option<CreateOn<'_>>,
    ) -> io::Result<Option<PathBuf>> {
        let exists = open_in_root(&self.image, rel, OFlag::O_PATH, None)?.is_some();
        let create = create.filter(|_| !exists);
        let Some(fd) = open_in_root(&self.image, rel, OFlag::O_PATH, create)? else {
            return Ok(None);
        };
        if let Some(c) = create {
            self.record(Call::CreateInRoot(c.kind, rel.to_path_buf()));
        }
        let real = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))?;
        let image = std::fs::canonicalize(&self.image)?;
        let inside = real.strip_prefix(&image).map_err(|_| {
            io::Error::other(format!(
                "{} resolved outside the root, to {}",
                rel.display(),
                real.display()
            ))
        })?;
        let reported = root.join(inside);
        self.resolved
            .borrow_mut()
            .insert(reported.clone(), real.clone());
        Ok(Some(reported))
    }

    fn create_in_upper(
        &self,
        _lower: &Path,
        upper: &Path,
        rel: &Path,
        kind: TargetKind,
    ) -> io::Result<()> {
        self.record(Call::CreateInUpper {
            kind,
            rel: rel.to_path_buf(),
            upper: upper.to_path_buf(),
        });
        // The image stands for both layers: what the upper layer gets is made in it.
        create_in_upper(&self.image, &self.image, rel, kind)
    }

    fn read_in_root(&self, _root: &Path, rel: &Path) -> io::Result<Option<Vec<u8>>> {
        read_in_root(&self.image, rel)
    }

    fn host_source(&self, path: &Path) -> PathBuf {
        Path::new(HOST_ROOT).join(path.strip_prefix("/").unwrap_or(path))
    }

    fn locked_flags(&self, _path: &Path) -> io::Result<MsFlags> {
        Ok(MsFlags::MS_NOSUID | MsFlags::MS_NODEV)
    }

    fn release(&self) {
        self.record(Call::Release);
    }

    fn unshare(&self, flags: CloneFlags) -> io::Result<()> {
        self.step(Call::Unshare(flags))
    }

    fn setns(&self, _fd: BorrowedFd<'_>, kind: CloneFlags) -> io::Result<()> {
        self.step(Call::Setns(kind))
    }

    fn enter_root(&self, _fd: BorrowedFd<'_>) -> io::Result<()> {
        self.step(Call::EnterRoot)
    }

    fn sethostname(&self, name: &str) -> io::Result<()> {
        self.step(Call::SetHostname(name.to_string()))
    }

    fn loopback_up(&self) -> io::Result<()> {
        self.step(Call::LoopbackUp)
    }

    fn exists(&self, path: &Path) -> bool {
        matches!(
            open_in_root(&self.image, path, OFlag::O_PATH, None),
            Ok(Some(_))
        )
    }

    fn umask(&self, mask: u32) {
        self.record(Call::Umask(mask));
    }

    fn reset_signals(&self) -> io::Result<()> {
        self.step(Call::ResetSignals)
    }

    fn cloexec_from(&self, first: u32) -> io::Result<()> {
        self.step(Call::CloexecFrom(first))
    }

    fn no_new_privs(&self) -> io::Result<()> {
        self.step(Call::NoNewPrivs)
    }

    fn install_seccomp(&self, emulation: Emulation) -> io::Result<()> {
        self.step(Call::Seccomp(emulation))
    }

    fn set_ids(&self, ids: &RunAs) -> io::Result<()> {
        self.step(Call::SetIds(ids.clone()))
    }

    fn apply_caps(&self, keep: CapMask) -> io::Result<()> {
        self.step(Call::ApplyCaps(keep))
    }

    fn install_profile(&self, filter: &ProfileFilter) -> io::Result<()> {
        self.step(Call::SeccompProfile(filter.origin.clone()))
    }

    fn execve(&self, exec: &Exec) -> io::Result<()> {
        self.step(Call::Execve(exec.clone()))
    }
}
