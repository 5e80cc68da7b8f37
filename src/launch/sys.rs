//! The narrow seam between the launch sequence and the kernel (youki's `Syscall` idea).
//!
//! Every filesystem-namespace operation of the container setup goes through [`Sys`]:
//! `LinuxSys` performs it, `RecordingSys` (tests) records it, so the mount sequence is unit
//! tested without privileges. Paths inside the container root are resolved with
//! `openat2(RESOLVE_IN_ROOT)`, so a symlink in an image can never redirect a mount or a
//! `mkdir` outside the container tree; the resulting `O_PATH` descriptors are mounted through
//! their `/proc/self/fd/N` names.
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
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::stat::Mode;

use super::action::Exec;
use super::plan::TargetKind;
use super::seccomp::{self, Emulation};
use super::security;

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
    /// A step of the path resolution, in words.
    Note(String),
    Release,
    Unshare(CloneFlags),
    SetHostname(String),
    LoopbackUp,
    Umask(u32),
    ResetSignals,
    CloexecFrom(u32),
    NoNewPrivs,
    Seccomp(Emulation),
    DropAllCaps,
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
            Call::RestrictRecursive(t, a) => write!(f, "restrict -R {} {a:#x}", t.display()),
            Call::PivotRoot(n, o) => write!(f, "pivot_root {} {}", n.display(), o.display()),
            Call::Chdir(p) => write!(f, "chdir {}", p.display()),
            Call::MkdirAll(p, mode) => write!(f, "mkdir {} {mode:o}", p.display()),
            Call::WriteFile(p, n) => write!(f, "write {} {n}", p.display()),
            Call::Symlink(t, l) => write!(f, "symlink {} {}", t.display(), l.display()),
            Call::CreateInUpper { kind, rel, upper } => {
                write!(f, "upper {kind:?} {} in {}", rel.display(), upper.display())
            }
            Call::Note(s) => f.write_str(s),
            Call::Release => f.write_str("release"),
            Call::Unshare(flags) => write!(f, "unshare {flags:?}"),
            Call::SetHostname(h) => write!(f, "sethostname {h:?}"),
            Call::LoopbackUp => f.write_str("loopback up"),
            Call::Umask(m) => write!(f, "umask {m:o}"),
            Call::ResetSignals => f.write_str("reset signals"),
            Call::CloexecFrom(n) => write!(f, "cloexec from {n}"),
            Call::NoNewPrivs => f.write_str("no_new_privs"),
            Call::Seccomp(em) => write!(f, "seccomp {em:?}"),
            Call::DropAllCaps => f.write_str("drop capabilities"),
            Call::Execve(e) => write!(f, "execve {}", e.path.display()),
        }
    }
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
    /// Resolves `rel` inside `root` as if `root` were `/`, and returns a path that names the
    /// result for mount(2). With `create`, missing components are created (directories, and
    /// the last one as the given kind); without it a missing target gives `Ok(None)`.
    fn resolve_in_root(
        &self,
        root: &Path,
        rel: &Path,
        create: Option<TargetKind>,
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
    /// Drops every capability.
    fn drop_all_caps(&self) -> io::Result<()>;
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

    fn open_root(root: &Path) -> io::Result<OwnedFd> {
        nix::fcntl::open(
            root,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(errno)
    }

    fn open_in(dir: &OwnedFd, name: &Path, flags: OFlag) -> nix::Result<OwnedFd> {
        nix::fcntl::openat2(
            dir,
            name,
            OpenHow::new()
                .flags(flags | OFlag::O_CLOEXEC)
                .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS),
        )
    }
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

    fn resolve_in_root(
        &self,
        root: &Path,
        rel: &Path,
        create: Option<TargetKind>,
    ) -> io::Result<Option<PathBuf>> {
        let root_fd = Self::open_root(root)?;
        let rel = rel.strip_prefix("/").unwrap_or(rel);
        if rel.as_os_str().is_empty() {
            let p = fd_path(&root_fd);
            self.held.borrow_mut().push(root_fd);
            return Ok(Some(p));
        }
        match Self::open_in(&root_fd, rel, OFlag::O_PATH) {
            Ok(fd) => {
                let p = fd_path(&fd);
                self.held.borrow_mut().push(fd);
                return Ok(Some(p));
            }
            Err(nix::Error::ENOENT) if create.is_some() => {}
            Err(nix::Error::ENOENT) => return Ok(None),
            Err(e) => return Err(errno(e)),
        }
        let Some(kind) = create else { return Ok(None) };
        // Walk the components, creating what is missing. Every prefix is resolved from the
        // container root with RESOLVE_IN_ROOT, so `..` and symlinks in the image (absolute
        // ones included) stay confined to it and resolve as they will inside the container.
        let comps: Vec<_> = rel.components().collect();
        let mut prefix = PathBuf::new();
        let mut last_fd = None;
        for (i, comp) in comps.iter().enumerate() {
            let parent = prefix.clone();
            prefix.push(comp.as_os_str());
            match Self::open_in(&root_fd, &prefix, OFlag::O_PATH) {
                Ok(fd) => {
                    last_fd = Some(fd);
                    continue;
                }
                Err(nix::Error::ENOENT) => {}
                Err(e) => return Err(errno(e)),
            }
            let parent_fd = if parent.as_os_str().is_empty() {
                Self::open_root(root)?
            } else {
                Self::open_in(&root_fd, &parent, OFlag::O_PATH | OFlag::O_DIRECTORY)
                    .map_err(errno)?
            };
            let name = Path::new(comp.as_os_str());
            if i + 1 == comps.len() && kind != TargetKind::Dir {
                match nix::fcntl::openat(
                    &parent_fd,
                    name,
                    OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o644),
                ) {
                    Ok(_) | Err(nix::Error::EEXIST) => {}
                    Err(e) => return Err(errno(e)),
                }
            } else {
                match nix::sys::stat::mkdirat(&parent_fd, name, Mode::from_bits_truncate(0o755)) {
                    Ok(()) | Err(nix::Error::EEXIST) => {}
                    Err(e) => return Err(errno(e)),
                }
            }
            // A dangling symlink in the image makes this fail with ENOENT: reported.
            last_fd = Some(Self::open_in(&root_fd, &prefix, OFlag::O_PATH).map_err(errno)?);
        }
        let fd = match last_fd {
            Some(fd) => fd,
            None => Self::open_root(root)?,
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
        use std::os::unix::fs::{DirBuilderExt, MetadataExt};
        let lower_fd = Self::open_root(lower)?;
        let lower_name = std::fs::read_link(fd_path(&lower_fd))?;
        let rel = rel.strip_prefix("/").unwrap_or(rel);
        // The longest prefix that exists in the image, resolved (symlinks followed inside it).
        let comps: Vec<_> = rel.components().collect();
        let mut resolved = PathBuf::new();
        let mut existing = 0;
        for i in 0..comps.len() {
            let prefix: PathBuf = comps[..=i].iter().map(|c| c.as_os_str()).collect();
            match Self::open_in(&lower_fd, &prefix, OFlag::O_PATH) {
                Ok(fd) => {
                    let name = std::fs::read_link(fd_path(&fd))?;
                    resolved = name
                        .strip_prefix(&lower_name)
                        .map(Path::to_path_buf)
                        .unwrap_or_default();
                    existing = i + 1;
                }
                Err(nix::Error::ENOENT) => break,
                Err(e) => return Err(errno(e)),
            }
        }
        if existing == comps.len() {
            return Ok(());
        }
        // Mirror the existing directories in the upper layer (same modes), then create the
        // rest.
        let mut up = upper.to_path_buf();
        let mut low = lower.to_path_buf();
        for c in resolved.components() {
            up.push(c.as_os_str());
            low.push(c.as_os_str());
            let mode = std::fs::metadata(&low)
                .map(|m| m.mode() & 0o7777)
                .unwrap_or(0o755);
            match std::fs::DirBuilder::new().mode(mode).create(&up) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
        for (i, c) in comps[existing..].iter().enumerate() {
            up.push(c.as_os_str());
            let last = existing + i + 1 == comps.len();
            let r = if last && kind != TargetKind::Dir {
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&up)
                    .map(|_| ())
            } else {
                std::fs::DirBuilder::new().mode(0o755).create(&up)
            };
            match r {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn read_in_root(&self, root: &Path, rel: &Path) -> io::Result<Option<Vec<u8>>> {
        use std::io::Read;
        let root_fd = Self::open_root(root)?;
        let rel = rel.strip_prefix("/").unwrap_or(rel);
        match Self::open_in(&root_fd, rel, OFlag::O_RDONLY) {
            Ok(fd) => {
                let mut f = std::fs::File::from(fd);
                let mut buf = Vec::new();
                // Bounded: these are small text files (passwd, group).
                f.by_ref().take(16 << 20).read_to_end(&mut buf)?;
                Ok(Some(buf))
            }
            Err(nix::Error::ENOENT) => Ok(None),
            Err(e) => Err(errno(e)),
        }
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

    fn drop_all_caps(&self) -> io::Result<()> {
        security::drop_all_caps()
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

/// Records operations instead of performing them; resolution joins paths lexically and
/// reports targets as existing unless listed in `missing`.
#[derive(Debug, Default)]
pub struct RecordingSys {
    pub calls: RefCell<Vec<Call>>,
    pub mounts: RefCell<Vec<MountCall>>,
    /// Paths (inside the root) that do not exist in the image.
    pub missing: Vec<PathBuf>,
    /// Files inside the root, for `read_in_root`.
    pub files: BTreeMap<PathBuf, Vec<u8>>,
    /// Mount calls whose target ends with one of these fail with EPERM.
    pub fail_mounts: Vec<String>,
    /// Missing paths created by `create_in_upper` (they then exist).
    pub created: RefCell<Vec<PathBuf>>,
    /// Process steps that fail with EPERM.
    pub fail_steps: Vec<Call>,
}

impl RecordingSys {
    /// A step described in words (resolution creating a missing target).
    fn log(&self, s: String) {
        self.record(Call::Note(s));
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
        Ok(())
    }

    fn umount(&self, target: &Path, _flags: MntFlags) -> io::Result<()> {
        self.record(Call::Umount(target.to_path_buf()));
        Ok(())
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

    fn resolve_in_root(
        &self,
        root: &Path,
        rel: &Path,
        create: Option<TargetKind>,
    ) -> io::Result<Option<PathBuf>> {
        let rel_s = rel.strip_prefix("/").unwrap_or(rel);
        let missing = self.missing.iter().any(|m| m == rel)
            && !self.created.borrow().iter().any(|c| c == rel);
        if missing {
            match create {
                Some(k) => self.log(format!("create {:?} {}", k, rel.display())),
                None => return Ok(None),
            }
        }
        Ok(Some(root.join(rel_s)))
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
        self.created.borrow_mut().push(rel.to_path_buf());
        Ok(())
    }

    fn read_in_root(&self, _root: &Path, rel: &Path) -> io::Result<Option<Vec<u8>>> {
        Ok(self.files.get(rel).cloned())
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

    fn sethostname(&self, name: &str) -> io::Result<()> {
        self.step(Call::SetHostname(name.to_string()))
    }

    fn loopback_up(&self) -> io::Result<()> {
        self.step(Call::LoopbackUp)
    }

    fn exists(&self, path: &Path) -> bool {
        !self.missing.iter().any(|m| m == path)
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

    fn drop_all_caps(&self) -> io::Result<()> {
        self.step(Call::DropAllCaps)
    }

    fn execve(&self, exec: &Exec) -> io::Result<()> {
        self.step(Call::Execve(exec.clone()))
    }
}
