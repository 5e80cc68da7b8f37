//! Kept image mounts: the FUSE mount of an image stays alive after a run, held by a
//! per-user holder process, and the later runs of the same image by the same user attach
//! a copy of it instead of mounting the image again (its page cache and decoded metadata
//! stay warm). Each run's mounts are otherwise a copy of its caller's, as without it.
//!
//! ```text
//! sifr (P) ── "attach KEY" ──▶ ~/.sifr/mounts/HOST/KEY.sock ──▶ holder ("sifr-keep")
//!          ◀── its user namespace + open_tree copy (SCM_RIGHTS)   own session, own user
//!  └─ supervisor (C): setns(user), unshare(mnt, …) from the       and mount namespace, the
//!     caller's mounts, move_mount(copy) as the container's root    FUSE server at KEY.root
//! ```
//!
//! - Identity. KEY hashes the image file's device, inode, size, modification time and its
//!   first 64 KiB (the SIF header and descriptors, or the squashfs superblock), the
//!   partition, the id maps of the run (the holder's user namespace has them) and whether
//!   the execution control list pins the bytes. A replaced or modified file is another
//!   KEY; the holder also checks its own descriptor against the identity at every attach
//!   and refuses (and goes away) when the file changed under it.
//! - Access. The directory is the user's, mode 0700, checked before use; the holder
//!   accepts only peers with its own uid (SO_PEERCRED); the mount exists only in the
//!   holder's mount namespace and as the copies attached in the runs' namespaces. The
//!   execution control list and every other check run in every run, before it attaches.
//! - Lifetime. Each run keeps its connection open while its container runs (the
//!   supervisor and its children inherit it; the payload's exec closes it). The holder
//!   ends after `kept mount idle timeout` seconds with no connection, on SIGTERM, when its
//!   image changed, or when its last run ends after the image file was deleted; it unmounts and removes its socket first. Attaching and ending
//!   are serialised by a lock on the directory, so a run never attaches to a holder that
//!   is going away. A holder that crashed leaves a dead socket: the next run removes it
//!   and starts a new holder (mounts live only in namespaces: nothing stale is left on the
//!   host).
//! - Anything that keeps a run from using a kept mount (no home, a directory that is not
//!   private, a holder that cannot start) is logged at debug level and the run mounts the
//!   image itself, as with `--fresh-mount`.

use std::fs::File;
use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, sigprocmask};
use nix::sys::signalfd::SignalFd;
use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, Pid, fork};
use sha2::{Digest, Sha256};

use super::identity::HostUser;
use super::plan::{IdMapPlan, Plan, RootSource};

/// Bytes at the start of the image file hashed into its identity.
const HEADER_BYTES: usize = 64 * 1024;
/// How long a run waits for the directory lock, and for a new holder to be ready.
const WAIT: Duration = Duration::from_secs(30);
/// How long a run waits for a running holder's answer.
const ANSWER_WAIT: Duration = Duration::from_secs(5);
/// The longest socket path the kernel takes (sun_path, less the terminating NUL).
const SUN_PATH_MAX: usize = 107;

/// Why a run does not use a kept mount (it mounts the image itself).
#[derive(Debug, thiserror::Error)]
pub enum KeepError {
    #[error("no home directory to keep mounts under")]
    NoHome,
    #[error("{path}: cannot {what}: {err}")]
    Io {
        path: PathBuf,
        what: &'static str,
        err: std::io::Error,
    },
    #[error("{0}: not the user's own private directory (owner or mode)")]
    NotPrivate(PathBuf),
    #[error("{0}: the socket path is too long")]
    PathTooLong(PathBuf),
    #[error("{0}: sifr holds no descriptor of this file (replaced since it was opened)")]
    Replaced(PathBuf),
    #[error("{0}: another run held the lock for too long")]
    Busy(PathBuf),
    #[error("the holder did not start: {0}")]
    Holder(String),
    #[error("the holder answered {0:?}")]
    Refused(String),
}

fn io_err(path: &Path, what: &'static str) -> impl FnOnce(std::io::Error) -> KeepError {
    let path = path.to_path_buf();
    move |err| KeepError::Io { path, what, err }
}

/// What identifies an image file's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime: i64,
    pub mtime_nsec: i64,
    /// SHA-256 of the first [`HEADER_BYTES`] bytes.
    pub header: [u8; 32],
}

impl Identity {
    /// The identity of the open file `f`.
    pub fn of(f: &File) -> std::io::Result<Identity> {
        let md = f.metadata()?;
        let mut buf = vec![0u8; HEADER_BYTES.min(md.size() as usize)];
        f.read_exact_at(&mut buf, 0)?;
        let mut header = [0u8; 32];
        header.copy_from_slice(&Sha256::digest(&buf));
        Ok(Identity {
            dev: md.dev(),
            ino: md.ino(),
            size: md.size(),
            mtime: md.mtime(),
            mtime_nsec: md.mtime_nsec(),
            header,
        })
    }
}

/// The name of the holder for `id` served as `root`, for runs with the id maps `ids`.
pub fn key(id: &Identity, root: &RootSource, ids: &IdMapPlan, pinned: bool) -> String {
    let mut h = Sha256::new();
    h.update(
        format!(
            "sifr-kept-1 {} {} {} {} {}\n",
            id.dev, id.ino, id.size, id.mtime, id.mtime_nsec
        )
        .as_bytes(),
    );
    h.update(id.header);
    h.update(format!("{root:?}\n{ids:?}\n{pinned}\n").as_bytes());
    hex::encode(&h.finalize()[..12])
}

/// Where a user's kept mounts live on one host: `~/.sifr/mounts/HOST` (a home shared by
/// several hosts has one directory per host; a socket serves only its own host).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dirs {
    pub dir: PathBuf,
}

impl Dirs {
    pub fn new(sifr_dir: &Path, host: &str) -> Dirs {
        Dirs {
            dir: sifr_dir.join("mounts").join(host),
        }
    }

    /// The calling user's.
    pub fn current(user: &HostUser) -> Result<Dirs, KeepError> {
        let (sifr_dir, host) = user.sifr_dir_and_host().ok_or(KeepError::NoHome)?;
        Ok(Dirs::new(&sifr_dir, &host))
    }

    pub fn socket(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.sock"))
    }

    /// The mount point of the kept mount (a plain empty directory on the host; the image
    /// is mounted on it only in the holder's mount namespace).
    pub fn root(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.root"))
    }

    fn lock_path(&self) -> PathBuf {
        self.dir.join(".lock")
    }

    /// Creates the directories (0700) and checks that the last two belong to `uid` and
    /// that no one else may enter them.
    fn ensure(&self, uid: u32) -> Result<(), KeepError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(io_err(&self.dir, "create the directory"))?;
        let mut dirs = vec![self.dir.as_path()];
        dirs.extend(self.dir.parent());
        for d in dirs {
            let md = std::fs::symlink_metadata(d).map_err(io_err(d, "inspect the directory"))?;
            if !md.is_dir() || md.uid() != uid || md.permissions().mode() & 0o077 != 0 {
                return Err(KeepError::NotPrivate(d.to_path_buf()));
            }
        }
        Ok(())
    }

    /// Takes the directory's lock (waiting at most `wait`); released when dropped.
    fn lock(&self, wait: Duration) -> Result<DirLock, KeepError> {
        let path = self.lock_path();
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io_err(&path, "open the lock"))?;
        let start = Instant::now();
        loop {
            match crate::flock::try_exclusive(&f) {
                Ok(true) => return Ok(DirLock(f)),
                Ok(false) if start.elapsed() < wait => std::thread::sleep(Duration::from_millis(5)),
                Ok(false) => return Err(KeepError::Busy(path)),
                Err(err) => {
                    return Err(KeepError::Io {
                        path,
                        what: "lock",
                        err,
                    });
                }
            }
        }
    }
}

/// An exclusive lock on the directory's lock file.
struct DirLock(#[allow(dead_code)] File);

/// A run attached to a kept mount.
#[derive(Debug)]
pub struct Attached {
    /// Open for as long as the container runs: the holder counts it.
    pub conn: UnixStream,
    /// The holder's user namespace, for the supervisor to join.
    pub userns: OwnedFd,
    /// A detached copy of the kept mount (open_tree), for the supervisor to attach as the
    /// container's root.
    pub tree: OwnedFd,
    /// The holder's name (KEY).
    pub key: String,
    pub holder: i32,
    /// This run started the holder.
    pub started: bool,
}

/// Writes the id maps of a process that has unshared its user namespace (newuidmap).
pub type MapWriter<'a> = &'a dyn Fn(Pid, &IdMapPlan) -> Result<(), String>;

/// What a holder serves.
pub struct Served {
    /// The image, as sifr opened (and, under the execution control list, verified) it.
    pub image: Arc<dyn sifr_fuse::ImageSource>,
    /// The execution control list pins `image` to the digests it verified.
    pub pinned: bool,
}

/// Attaches this run to the kept mount of its image, starting its holder when there is
/// none. `idle_secs` is the holder's idle timeout.
pub fn attach(
    plan: &Plan,
    idle_secs: u64,
    served: &Served,
    user: &HostUser,
    write_maps: MapWriter<'_>,
) -> Result<Attached, KeepError> {
    let (RootSource::Squashfs { path, .. } | RootSource::Ext { path, .. }) = &plan.root else {
        return Err(KeepError::Holder("a directory has no kept mount".into()));
    };
    let file = File::open(path).map_err(io_err(path, "open the image"))?;
    let id = Identity::of(&file).map_err(io_err(path, "read the image"))?;
    // The file at the path must be the one sifr opened and checked.
    let Some(_) = open_fd_of(id.dev, id.ino, file.as_raw_fd()) else {
        return Err(KeepError::Replaced(path.clone()));
    };
    let key = key(&id, &plan.root, &plan.ids, served.pinned);
    let dirs = Dirs::current(user)?;
    dirs.ensure(user.uid)?;
    let sock = dirs.socket(&key);
    if sock.as_os_str().len() > SUN_PATH_MAX {
        return Err(KeepError::PathTooLong(sock));
    }
    let _lock = dirs.lock(WAIT)?;
    match request_attach(&sock, &key) {
        Ok(a) => return Ok(a),
        Err(e) => log::debug!("kept mount {key}: no holder to join ({e}); starting one"),
    }
    // A dead holder's socket, or none.
    let _ = std::fs::remove_file(&sock);
    drop(file);
    let args = HolderArgs {
        key: key.clone(),
        sock: sock.clone(),
        root_dir: dirs.root(&key),
        lock: dirs.lock_path(),
        root: plan.root.clone(),
        identity: id,
        idle: Duration::from_secs(idle_secs),
    };
    spawn_holder(args, plan, served, write_maps)?;
    let mut a = request_attach(&sock, &key)?;
    a.started = true;
    Ok(a)
}

/// A descriptor of this process (other than `except`) open on the file `dev`/`ino`.
fn open_fd_of(dev: u64, ino: u64, except: RawFd) -> Option<RawFd> {
    open_fds()
        .into_iter()
        .filter(|&fd| fd != except)
        .find(|&fd| fd_is(fd, dev, ino))
}

/// The descriptors open in this process (listed first, so the listing's own is gone).
fn open_fds() -> Vec<RawFd> {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    let fds: Vec<RawFd> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
        .collect();
    fds
}

fn fd_is(fd: RawFd, dev: u64, ino: u64) -> bool {
    // SAFETY: fstat writes into the stat buffer we own; a descriptor closed meanwhile
    // only makes it fail.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let r = unsafe { libc::fstat(fd, &mut st) };
    r == 0 && st.st_dev == dev && st.st_ino == ino
}

/// Connects to the holder at `sock` and asks for its user namespace and a copy of its
/// mount.
fn request_attach(sock: &Path, key: &str) -> Result<Attached, KeepError> {
    let conn = UnixStream::connect(sock).map_err(io_err(sock, "connect"))?;
    // A holder answers in microseconds; one that does not (stopped, hung) is replaced.
    conn.set_read_timeout(Some(ANSWER_WAIT))
        .and_then(|()| conn.set_write_timeout(Some(ANSWER_WAIT)))
        .map_err(io_err(sock, "set a timeout"))?;
    (&conn)
        .write_all(format!("attach {key}\n").as_bytes())
        .map_err(io_err(sock, "send to the holder"))?;
    let mut buf = [0u8; 256];
    let mut cmsg = nix::cmsg_space!([RawFd; 2]);
    let (n, fds) = {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<()>(
            conn.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(|e| KeepError::Io {
            path: sock.to_path_buf(),
            what: "read the holder's answer",
            err: std::io::Error::from_raw_os_error(e as i32),
        })?;
        let mut fds = Vec::new();
        if let Ok(cmsgs) = msg.cmsgs() {
            for c in cmsgs {
                if let ControlMessageOwned::ScmRights(r) = c {
                    // SAFETY: the kernel installed these descriptors in this process for
                    // us (SCM_RIGHTS); each is owned once, here.
                    fds.extend(r.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
                }
            }
        }
        (msg.bytes, fds)
    };
    let answer = String::from_utf8_lossy(&buf[..n]).trim().to_string();
    let holder = answer
        .strip_prefix("ok ")
        .and_then(|p| p.parse::<i32>().ok());
    match (holder, <[OwnedFd; 2]>::try_from(fds)) {
        (Some(holder), Ok([userns, tree])) => Ok(Attached {
            conn,
            userns,
            tree,
            key: key.to_string(),
            holder,
            started: false,
        }),
        _ => Err(KeepError::Refused(answer)),
    }
}

/// What the holder process needs.
struct HolderArgs {
    key: String,
    sock: PathBuf,
    root_dir: PathBuf,
    lock: PathBuf,
    root: RootSource,
    identity: Identity,
    idle: Duration,
}

/// Forks the holder and gives it its id maps; returns once it serves (or failed).
fn spawn_holder(
    args: HolderArgs,
    plan: &Plan,
    served: &Served,
    write_maps: MapWriter<'_>,
) -> Result<Pid, KeepError> {
    let pipe = || {
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| KeepError::Holder(format!("cannot create a pipe: {e}")))
    };
    let (ready_r, ready_w) = pipe()?;
    let (go_r, go_w) = pipe()?;
    // SAFETY: sifr is single-threaded before it launches a container. The child forks the
    // holder and exits at once, so the holder is nobody's child in sifr's tree (init, or
    // the nearest subreaper, reaps it); neither returns.
    match unsafe { fork() }.map_err(|e| KeepError::Holder(format!("cannot fork: {e}")))? {
        ForkResult::Child => {
            drop((ready_r, go_w));
            let _ = nix::unistd::setsid();
            // SAFETY: as above (this child is single-threaded too).
            match unsafe { fork() } {
                Ok(ForkResult::Child) => holder_main(args, served.image.clone(), ready_w, go_r),
                Ok(ForkResult::Parent { .. }) => {}
                Err(e) => {
                    let _ = nix::unistd::write(&ready_w, format!("cannot fork: {e}").as_bytes());
                }
            }
            // SAFETY: _exit ends the forked child without running the parent's exit handlers.
            unsafe { libc::_exit(0) }
        }
        ForkResult::Parent { child } => {
            drop((ready_w, go_r));
            let _ = waitpid(child, None);
            let mut holder = None;
            let started = (|| {
                let msg = read_msg(&ready_r)?;
                let pid = msg
                    .strip_prefix("u ")
                    .and_then(|p| p.trim().parse::<i32>().ok())
                    .ok_or(KeepError::Holder(msg))?;
                let pid = Pid::from_raw(pid);
                holder = Some(pid);
                write_maps(pid, &plan.ids).map_err(KeepError::Holder)?;
                nix::unistd::write(&go_w, b"m")
                    .map_err(|e| KeepError::Holder(format!("cannot signal the holder: {e}")))?;
                drop(go_w);
                match read_msg(&ready_r)? {
                    m if m == "r" => Ok(pid),
                    m => Err(KeepError::Holder(m)),
                }
            })();
            match started {
                Ok(pid) => {
                    log::debug!(
                        "{:.1} ms: kept mount {}: holder {pid} started",
                        crate::log::since_start_ms(),
                        args.key
                    );
                    Ok(pid)
                }
                Err(e) => {
                    if let Some(pid) = holder {
                        let _ = kill(pid, Signal::SIGKILL);
                    }
                    Err(e)
                }
            }
        }
    }
}

/// Reads one message of the holder's start (`u`, `r`, or an error line) within [`WAIT`].
fn read_msg(fd: &OwnedFd) -> Result<String, KeepError> {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll reads and writes the one pollfd we pass.
    let r = unsafe { libc::poll(&mut pfd, 1, WAIT.as_millis() as i32) };
    if r <= 0 {
        return Err(KeepError::Holder("it did not answer in time".into()));
    }
    let mut buf = [0u8; 1024];
    match nix::unistd::read(fd, &mut buf) {
        Ok(0) => Err(KeepError::Holder("it exited".into())),
        Ok(n) => Ok(String::from_utf8_lossy(&buf[..n]).into_owned()),
        Err(e) => Err(KeepError::Holder(format!("cannot read from it: {e}"))),
    }
}

/// The holder process. Never returns.
fn holder_main(
    args: HolderArgs,
    image: Arc<dyn sifr_fuse::ImageSource>,
    ready: OwnedFd,
    go: OwnedFd,
) -> ! {
    let fail = |msg: String| -> ! {
        let _ = nix::unistd::write(&ready, msg.as_bytes());
        // SAFETY: _exit ends the forked child without running the parent's exit handlers.
        unsafe { libc::_exit(1) }
    };
    // 1. Detached (its parent made a session and left): no terminal, stdio on /dev/null,
    //    no descriptor of sifr's but the image's (a caller reading sifr's output must see
    //    its end).
    // SAFETY: PR_SET_NAME copies at most 16 bytes from the NUL-terminated string.
    unsafe { libc::prctl(libc::PR_SET_NAME, c"sifr-keep".as_ptr()) };
    if let Err(e) = stdio_to_null() {
        fail(format!("cannot open /dev/null: {e}"));
    }
    let image_fd = close_other_fds(
        &[ready.as_raw_fd(), go.as_raw_fd()],
        args.identity.dev,
        args.identity.ino,
    );
    let Some(image_fd) = image_fd else {
        fail("the image's descriptor is gone".into())
    };
    // Not in the caller's working directory: it would keep that filesystem busy.
    let _ = nix::unistd::chdir("/");
    // SAFETY: umask only changes this process's file creation mask.
    unsafe { libc::umask(0o077) };
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
    // 2. The socket, the directory and its lock, and /dev/fuse, opened while this process
    //    still shares the host's mounts: its descriptors pin those, never the copies its
    //    own mount namespace starts with (which it drops in step 4).
    let Some(dir) = args.sock.parent() else {
        fail("the socket has no directory".into())
    };
    let opened = nix::fcntl::open(
        dir,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    );
    let (dirfd, lock) = match (
        opened,
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&args.lock),
    ) {
        (Ok(d), Ok(l)) => (d, l),
        (Err(e), _) => fail(format!("cannot open {}: {e}", dir.display())),
        (_, Err(e)) => fail(format!("cannot open {}: {e}", args.lock.display())),
    };
    let sock_name = args
        .sock
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    let unlink = || {
        let _ = nix::unistd::unlinkat(
            &dirfd,
            sock_name.as_os_str(),
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        );
    };
    // A dead holder's socket (P removed it already, under the lock).
    unlink();
    let listener = match UnixListener::bind(&args.sock) {
        Ok(l) => l,
        Err(e) => fail(format!("cannot listen on {}: {e}", args.sock.display())),
    };
    // The socket file this holder made: a holder that was stopped (SIGSTOP) long enough for
    // runs to replace it must not remove its successor's socket when it goes on.
    let stat_sock = || {
        nix::sys::stat::fstatat(
            &dirfd,
            sock_name.as_os_str(),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .ok()
        .map(|st| (st.st_dev, st.st_ino))
    };
    let mine = stat_sock();
    let unlink_sock = || {
        if mine.is_some() && stat_sock() == mine {
            unlink();
        }
    };
    let dev_fuse = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
    {
        Ok(f) => f,
        Err(e) => {
            unlink_sock();
            fail(format!("cannot open /dev/fuse: {e}"))
        }
    };
    // 3. Its user namespace (P writes the maps the runs use) and mount namespace.
    use nix::sched::CloneFlags;
    if let Err(e) = nix::sched::unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS) {
        fail(format!("cannot create its namespaces: {e}"));
    }
    let _ = nix::unistd::write(&ready, format!("u {}", std::process::id()).as_bytes());
    let mut m = [0u8; 1];
    if nix::unistd::read(&go, &mut m) != Ok(1) {
        // SAFETY: as above; P has reported the mapping failure.
        unsafe { libc::_exit(1) }
    }
    drop(go);
    if let Err(e) = super::security::set_dumpable(false) {
        fail(format!("cannot make itself non-dumpable: {e}"));
    }
    // Signals that end the holder, read from a signalfd (blocked before the server
    // threads start, so they inherit the mask).
    let mut stop_set = SigSet::empty();
    stop_set.add(Signal::SIGTERM);
    stop_set.add(Signal::SIGINT);
    stop_set.add(Signal::SIGHUP);
    let _ = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&stop_set), None);
    let sfd = match SignalFd::new(&stop_set) {
        Ok(s) => s,
        Err(e) => fail(format!("cannot create a signalfd: {e}")),
    };
    let userns = match File::open("/proc/self/ns/user") {
        Ok(u) => OwnedFd::from(u),
        Err(e) => {
            unlink_sock();
            fail(format!("cannot open its user namespace: {e}"))
        }
    };
    // 4. The image's FUSE mount, in a tiny tmpfs that becomes the holder's root: the
    //    copies of the host's mounts its namespace started with are dropped, so a holder
    //    never keeps a host filesystem (a USB disk, an automounted directory) in use.
    let handle = match mount_alone(&args, image, &dev_fuse) {
        Ok(h) => h,
        Err(msg) => {
            unlink_sock();
            fail(msg)
        }
    };
    let _ = nix::unistd::write(&ready, b"r");
    drop(ready);
    // 5. Serve attaches until idle, stopped, or the image changed.
    let holder = Holder {
        args: &args,
        // SAFETY: close_other_fds kept this descriptor open and nothing else owns it in
        // this process any more (sifr's objects are never dropped here: it ends by _exit).
        image: std::mem::ManuallyDrop::new(unsafe { File::from_raw_fd(image_fd) }),
        userns,
        lock,
        unlink_sock: &unlink_sock,
    };
    holder.serve(listener, &sfd);
    let _ = nix::mount::umount2(TREE, nix::mount::MntFlags::MNT_DETACH);
    let _ = handle.unmount_and_join();
    let root_name = args
        .root_dir
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    let _ = nix::unistd::unlinkat(
        &dirfd,
        root_name.as_os_str(),
        nix::unistd::UnlinkatFlags::RemoveDir,
    );
    // SAFETY: as above.
    unsafe { libc::_exit(0) }
}

/// Where the image is mounted in the holder's own root (after `mount_alone`).
const TREE: &str = "/image";

/// Mounts a tmpfs on the holder's directory, the image under it, and makes the tmpfs the
/// holder's root, detaching everything else of its mount namespace.
fn mount_alone(
    args: &HolderArgs,
    image: Arc<dyn sifr_fuse::ImageSource>,
    dev_fuse: &File,
) -> Result<sifr_fuse::MountHandle, String> {
    use nix::mount::{MntFlags, MsFlags, mount, umount2};
    let root = &args.root_dir;
    let err = |what: &str| {
        let what = what.to_string();
        move |e: nix::Error| format!("cannot {what}: {e}")
    };
    // Nothing propagates into the holder: its mounts are its own.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(err("make its mounts private"))?;
    match std::fs::DirBuilder::new().mode(0o700).create(root) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("cannot create {}: {e}", root.display())),
    }
    mount(
        Some("tmpfs"),
        root,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("size=64k,mode=0700"),
    )
    .map_err(err("mount its tmpfs"))?;
    for d in ["image", "old"] {
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(root.join(d))
            .map_err(|e| format!("cannot create {}: {e}", root.join(d).display()))?;
    }
    // /dev/fuse reopened through the descriptor opened on the host (the open file names
    // the host's /dev, not this namespace's copy of it).
    let dev = PathBuf::from(format!("/proc/self/fd/{}", dev_fuse.as_raw_fd()));
    let handle = super::mounter::serve_image(&args.root, image, &root.join("image"), &dev)?;
    let pivoted = nix::unistd::pivot_root(root.as_path(), &root.join("old"))
        .and_then(|()| nix::unistd::chdir("/"))
        .and_then(|()| umount2("/old", MntFlags::MNT_DETACH))
        .map_err(err("leave the host's mounts"));
    if let Err(msg) = pivoted {
        let _ = handle.unmount_and_join();
        return Err(msg);
    }
    let _ = std::fs::remove_dir("/old");
    Ok(handle)
}

fn stdio_to_null() -> std::io::Result<()> {
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    for fd in 0..3 {
        // SAFETY: dup2 onto the standard descriptors of this process.
        if unsafe { libc::dup2(null.as_raw_fd(), fd) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Closes every descriptor but stdio, `keep` and those open on the image (`dev`/`ino`);
/// returns one of the latter.
fn close_other_fds(keep: &[RawFd], dev: u64, ino: u64) -> Option<RawFd> {
    let mut image = None;
    for fd in open_fds() {
        if fd <= 2 || keep.contains(&fd) {
            continue;
        }
        if fd_is(fd, dev, ino) {
            image.get_or_insert(fd);
            continue;
        }
        // SAFETY: closes a descriptor inherited from sifr that the holder never uses; the
        // objects that owned it in sifr are never dropped in this process.
        unsafe { libc::close(fd) };
    }
    image
}

struct Holder<'a> {
    args: &'a HolderArgs,
    image: std::mem::ManuallyDrop<File>,
    userns: OwnedFd,
    /// The directory's lock file, held open (its path is gone after the pivot).
    lock: File,
    /// Removes the socket.
    unlink_sock: &'a dyn Fn(),
}

impl Holder<'_> {
    /// The accept loop: returns when the holder must end (its socket is gone by then).
    fn serve(&self, listener: UnixListener, sfd: &SignalFd) {
        let mut clients: Vec<UnixStream> = Vec::new();
        let mut idle_since = Some(Instant::now());
        let mut stopping = false;
        loop {
            let timeout = match idle_since {
                _ if stopping && clients.is_empty() => 0,
                Some(t) if clients.is_empty() => {
                    self.args.idle.saturating_sub(t.elapsed()).as_millis() as i32 + 1
                }
                _ => -1,
            };
            let mut pfds = vec![
                libc::pollfd {
                    fd: listener.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: sfd.as_fd().as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            pfds.extend(clients.iter().map(|c| libc::pollfd {
                fd: c.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            }));
            // SAFETY: poll reads and writes the pollfd array we own, of the length given.
            let r = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, timeout) };
            if r < 0 {
                continue;
            }
            if pfds[1].revents != 0 {
                // SIGTERM, SIGINT, SIGHUP: end now (runs still using the mount lose it).
                let _ = sfd.read_signal();
                (self.unlink_sock)();
                return;
            }
            // Runs that ended (a run never writes after attaching: any event is its end).
            let mut i = 0;
            clients.retain(|_| {
                i += 1;
                pfds[1 + i].revents == 0
            });
            if pfds[0].revents != 0
                && let Ok((conn, _)) = listener.accept()
            {
                match self.answer(conn) {
                    Answer::Attached(c) => clients.push(c),
                    Answer::Done => {}
                    Answer::Stop => stopping = true,
                }
            }
            if !clients.is_empty() {
                idle_since = None;
                continue;
            }
            if idle_since.is_none() && self.unlinked() {
                // The last run of an image file that has been deleted: no later run can
                // name it.
                stopping = true;
            }
            let since = *idle_since.get_or_insert_with(Instant::now);
            if (stopping || since.elapsed() >= self.args.idle) && self.leave(&listener) {
                return;
            }
        }
    }

    /// Ends the service if no run is attaching: under the directory lock, with no
    /// connection waiting, the socket goes. False when a run is attaching.
    fn leave(&self, listener: &UnixListener) -> bool {
        if !matches!(crate::flock::try_exclusive(&self.lock), Ok(true)) {
            return false;
        }
        let mut pfd = libc::pollfd {
            fd: listener.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll reads and writes the one pollfd we pass; zero timeout.
        let waiting = unsafe { libc::poll(&mut pfd, 1, 0) } > 0;
        if !waiting {
            (self.unlink_sock)();
        }
        crate::flock::unlock(&self.lock);
        !waiting
    }

    /// Answers one connection.
    fn answer(&self, conn: UnixStream) -> Answer {
        let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = conn.set_write_timeout(Some(Duration::from_secs(2)));
        // Only the user: the peer's uid, as this user namespace sees it, is the holder's.
        let peer = nix::sys::socket::getsockopt(&conn, nix::sys::socket::sockopt::PeerCredentials);
        if peer.map(|c| c.uid()) != Ok(nix::unistd::getuid().as_raw()) {
            return Answer::Done;
        }
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while line.len() < 256 {
            match (&conn).read(&mut byte) {
                Ok(1) if byte[0] == b'\n' => break,
                Ok(1) => line.push(byte[0]),
                _ => return Answer::Done,
            }
        }
        let line = String::from_utf8_lossy(&line).into_owned();
        let mut words = line.split_whitespace();
        let reply = |s: &str| {
            let _ = (&conn).write_all(s.as_bytes());
        };
        match (words.next(), words.next()) {
            (Some("attach"), Some(k)) if k == self.args.key => {
                if !self.unchanged() {
                    // Never serve a changed file: go away (the next run starts afresh).
                    (self.unlink_sock)();
                    reply("err the image file changed\n");
                    return Answer::Stop;
                }
                // Each run gets its own detached copy of the mount: the run's mount
                // namespace is a copy of its caller's (current host mounts), into which the
                // supervisor attaches it.
                let tree = match open_tree_clone(Path::new(TREE)) {
                    Ok(t) => t,
                    Err(e) => {
                        reply(&format!("err cannot copy the mount: {e}\n"));
                        return Answer::Done;
                    }
                };
                let text = format!("ok {}\n", std::process::id());
                let fds = [self.userns.as_raw_fd(), tree.as_raw_fd()];
                let sent = sendmsg::<()>(
                    conn.as_raw_fd(),
                    &[IoSlice::new(text.as_bytes())],
                    &[ControlMessage::ScmRights(&fds)],
                    MsgFlags::MSG_NOSIGNAL,
                    None,
                );
                match sent {
                    Ok(_) => Answer::Attached(conn),
                    Err(_) => Answer::Done,
                }
            }
            (Some("attach"), _) => {
                reply("err another image\n");
                Answer::Done
            }
            (Some("stop"), _) => {
                reply("ok\n");
                Answer::Stop
            }
            _ => {
                reply("err unknown request\n");
                Answer::Done
            }
        }
    }

    /// The image file has no name left.
    fn unlinked(&self) -> bool {
        self.image.metadata().is_ok_and(|m| m.nlink() == 0)
    }

    /// The image file is still what it was when the holder started.
    fn unchanged(&self) -> bool {
        Identity::of(&self.image).is_ok_and(|id| id == self.args.identity)
    }
}

enum Answer {
    Attached(UnixStream),
    Done,
    Stop,
}

/// A detached copy of the mount at `path` (open_tree with OPEN_TREE_CLONE, Linux 5.2+).
fn open_tree_clone(path: &Path) -> std::io::Result<OwnedFd> {
    /// OPEN_TREE_CLONE of <linux/mount.h>.
    const OPEN_TREE_CLONE: libc::c_uint = 1;
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: the path is NUL-terminated and outlives the call; the kernel returns a new
    // descriptor, owned once below.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            c.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a descriptor the kernel just returned to us, owned nowhere else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> Identity {
        Identity {
            dev: 1,
            ino: 2,
            size: 3,
            mtime: 4,
            mtime_nsec: 5,
            header: [7; 32],
        }
    }

    fn root() -> RootSource {
        RootSource::Squashfs {
            path: "/i.sif".into(),
            offset: 4096,
            size: 100,
        }
    }

    #[test]
    fn test_key_changes_with_every_part_of_the_identity() {
        let ids = IdMapPlan::single(1000, 1000);
        let k = key(&id(), &root(), &ids, false);
        assert_eq!(k.len(), 24);
        assert_eq!(k, key(&id(), &root(), &ids, false), "stable");
        let changed: Vec<Identity> = vec![
            Identity { dev: 9, ..id() },
            Identity { ino: 9, ..id() },
            Identity { size: 9, ..id() },
            Identity { mtime: 9, ..id() },
            Identity {
                mtime_nsec: 9,
                ..id()
            },
            Identity {
                header: [8; 32],
                ..id()
            },
        ];
        for other in changed {
            assert_ne!(k, key(&other, &root(), &ids, false), "{other:?}");
        }
        assert_ne!(k, key(&id(), &root(), &ids, true), "pinned");
        assert_ne!(
            k,
            key(&id(), &root(), &IdMapPlan::single(1000, 1001), false),
            "id maps"
        );
        let other_part = RootSource::Squashfs {
            path: "/i.sif".into(),
            offset: 8192,
            size: 100,
        };
        assert_ne!(k, key(&id(), &other_part, &ids, false), "partition");
    }

    #[test]
    fn test_identity_reads_the_header() {
        let t = tempfile::tempdir().expect("tempdir");
        let p = t.path().join("img");
        std::fs::write(&p, b"hsqs and more").expect("write");
        let a = Identity::of(&File::open(&p).expect("open")).expect("identity");
        assert_eq!(a.size, 13);
        std::fs::write(&p, b"hsqs and mor!").expect("write");
        let b = Identity::of(&File::open(&p).expect("open")).expect("identity");
        assert_eq!(a.ino, b.ino);
        assert_ne!(a.header, b.header);
    }

    #[test]
    fn test_dirs_are_private_and_per_host() {
        let t = tempfile::tempdir().expect("tempdir");
        let d = Dirs::new(&t.path().join(".sifr"), "node1");
        assert_eq!(d.dir, t.path().join(".sifr/mounts/node1"));
        assert_eq!(d.socket("k"), t.path().join(".sifr/mounts/node1/k.sock"));
        let uid = nix::unistd::getuid().as_raw();
        d.ensure(uid).expect("ensure");
        let mode = std::fs::metadata(&d.dir).expect("md").permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        std::fs::set_permissions(&d.dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        assert!(matches!(d.ensure(uid), Err(KeepError::NotPrivate(_))));
        std::fs::set_permissions(&d.dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        assert!(matches!(d.ensure(uid + 1), Err(KeepError::NotPrivate(_))));
        let lock = d.lock(Duration::from_millis(10)).expect("lock");
        // flock locks belong to the open file: a second open is refused while held.
        assert!(matches!(
            d.lock(Duration::from_millis(20)),
            Err(KeepError::Busy(_))
        ));
        drop(lock);
        d.lock(Duration::from_millis(10)).expect("lock again");
    }
}
