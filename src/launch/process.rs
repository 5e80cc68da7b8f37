//! The process tree of a container start, and the linear sequence each process runs.
//!
//! ```text
//! sifr (host user)                 P: plans, opens every host path, writes the id maps,
//!  │                                  relays signals, reports the exit status
//!  └─ supervisor (new user+mount ns) C: mounts the session tmpfs and the image (FUSE
//!      │                               server threads live here), relays signals
//!      └─ payload (nested mount ns)  D: builds the root, pivot_root, drops privileges,
//!          │                            execs the action; with a PID namespace it only
//!          │                            relays signals and the exit status
//!          └─ (PID ns) PID 1         E: builds the root; stays as init (reaps, relays)
//!              └─ payload            F: execs the action (E execs it itself with --no-init)
//! ```
//!
//! Why three processes: newuidmap must run in the parent user namespace (P) on a child that
//! has already unshared (C); the FUSE server must not live in the process that pivots, since
//! pivot_root re-roots every process of its mount namespace (D makes its own first); and the
//! payload is forked before any server thread exists, so it never inherits a lock held by a
//! thread that fork did not copy.
//!
//! Separation from sifr's own processes. P, C, D and E never exec, so their memory belongs
//! to the host's user namespace. C makes itself non-dumpable as soon as P has written its id
//! maps (before, its /proc/PID/uid_map must stay writable by the user), and D and E inherit
//! that; P is non-dumpable for as long as the container runs. So the kernel's ptrace check
//! refuses the container PTRACE_ATTACH, /proc/PID/{mem,root,cwd,fd,environ,ns}, and
//! pidfd_getfd on all of them even where it shares their uid or holds capabilities in their
//! user namespace. Signals are another matter: the kernel allows them between equal uids,
//! and container root (fakeroot) has the caller's uid and CAP_KILL in C's user namespace. A
//! fakeroot payload therefore always runs in a PID namespace of its own (as with `--pid`),
//! where sifr's processes have no pid. Without fakeroot and without `--pid` the payload is
//! the calling user in the host's PID namespace: it can signal sifr, as any process of the
//! user can, but not trace it.
//!
//! Failures before the payload's `execve` are sent to P over a close-on-exec pipe as one
//! line; P prints it once and exits 255.
//!
//! Teardown. Every forked process arms PR_SET_PDEATHSIG(SIGKILL) and then checks that its
//! parent is still the one that forked it (it may have died before the signal was armed);
//! E, whose parent is outside its PID namespace (getppid() reads 0), checks instead that a
//! pipe only D writes to has not hung up. So a SIGKILL of P kills C, of C kills D, of D kills
//! E, and the end of E (PID 1) kills every process of the PID namespace; the FUSE server
//! dies with C. All mounts live in private mount namespaces and vanish with their last
//! process; nothing is mounted or created on the host (the session is a tmpfs). Without a
//! PID namespace (no `--pid`, no fakeroot) the payload dies with C, but processes it started
//! in the background and left behind are not sifr's to find after a SIGKILL: they keep
//! running, on an image whose server is gone. Use `--pid` (or `--containall`) when a
//! container must end as a whole.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;
use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, sigprocmask};
use nix::sys::signalfd::SignalFd;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork, getpid};

use super::action::{self, RootFiles};
use super::identity::HostUser;
use super::plan::{IdMapPlan, MemoryFs, Plan, RootSource};
use super::rootfs::{self, Layout};
use super::seccomp::{self, Emulation};
use super::security;
use super::sys::{HOST_ROOT, LinuxSys, Sys};

/// A launch failure, reported by sifr itself (exit 255).
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("{0}")]
    Child(String),
    #[error("cannot {what}: {err}")]
    Sys {
        what: &'static str,
        err: std::io::Error,
    },
}

fn sys_err(what: &'static str) -> impl FnOnce(nix::Error) -> LaunchError {
    move |e| LaunchError::Sys {
        what,
        err: std::io::Error::from_raw_os_error(e as i32),
    }
}

/// How the image's root filesystem gets mounted by the supervisor.
pub trait RootMounter {
    /// Mounts the root at `target` inside the supervisor's namespaces; the returned guard
    /// keeps it served until dropped or stopped.
    fn mount(
        &mut self,
        root: &RootSource,
        target: &Path,
        sys: &dyn Sys,
    ) -> Result<Box<dyn MountedRoot>, String>;
}

/// A mounted root (e.g. the FUSE server); `stop` unmounts it and ends its threads.
pub trait MountedRoot {
    fn stop(self: Box<Self>);
}

/// Writes the id maps of a child that has unshared its user namespace.
pub type MapWriter = Box<dyn Fn(Pid, &IdMapPlan) -> Result<(), String>>;

/// What the launch needs besides the plan.
pub struct Launch {
    pub plan: Plan,
    /// Host paths opened before entering the namespaces.
    pub sys: LinuxSys,
    pub user: HostUser,
    pub mounter: Box<dyn RootMounter>,
    /// Writes the id maps of a child that has unshared its user namespace.
    pub write_maps: MapWriter,
    /// Makes the user-namespace failure message precise (sysctl diagnosis).
    pub explain_userns: Box<dyn Fn(nix::Error) -> String>,
}

/// Signals relayed to the container. SIGINT, SIGQUIT and SIGTSTP come from the terminal;
/// when the payload shares the terminal's foreground process group the kernel already
/// delivered them, and they are not relayed again.
const RELAYED: [Signal; 13] = [
    Signal::SIGHUP,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGTERM,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGALRM,
    Signal::SIGWINCH,
    Signal::SIGTSTP,
    Signal::SIGCONT,
    Signal::SIGURG,
    Signal::SIGVTALRM,
    Signal::SIGPROF,
];

fn relay_mask() -> SigSet {
    let mut set = SigSet::empty();
    for s in RELAYED {
        set.add(s);
    }
    set.add(Signal::SIGCHLD);
    set
}

/// True when signals must be relayed: no controlling terminal on stdin, or sifr is not in
/// its foreground process group (Apptainer's `checkSignalPropagation`).
fn must_relay_terminal_signals() -> bool {
    match nix::unistd::tcgetpgrp(std::io::stdin()) {
        Ok(fg) => fg != nix::unistd::getpgrp(),
        Err(_) => true,
    }
}

/// A one-shot message pipe.
struct Pipe {
    r: OwnedFd,
    w: OwnedFd,
}

impl Pipe {
    fn new() -> Result<Pipe, LaunchError> {
        let (r, w) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(sys_err("create a pipe"))?;
        Ok(Pipe { r, w })
    }
}

fn send(fd: &OwnedFd, msg: &[u8]) {
    let mut f = File::from(fd.try_clone().unwrap_or_else(|_| std::process::abort()));
    let _ = f.write_all(msg);
}

fn recv_byte(fd: &OwnedFd) -> Option<u8> {
    let mut b = [0u8; 1];
    loop {
        match nix::unistd::read(fd, &mut b) {
            Ok(1) => return Some(b[0]),
            Ok(_) => return None,
            Err(nix::Error::EINTR) => continue,
            Err(_) => return None,
        }
    }
}

fn read_all(fd: OwnedFd) -> String {
    let mut s = String::new();
    let _ = File::from(fd).read_to_string(&mut s);
    s
}

/// Ends a child after a failure: the message goes to P, the status is 255.
fn child_fail(err: &OwnedFd, msg: &str) -> ! {
    let line = msg.replace('\n', " ");
    send(err, format!("{line}\n").as_bytes());
    // SAFETY: _exit ends the forked child without running the parent's exit handlers.
    unsafe { libc::_exit(255) }
}

/// True when the write end of `alive` has no holder left (the parent that held it ended).
fn parent_gone(alive: &OwnedFd) -> bool {
    let mut pfd = libc::pollfd {
        fd: alive.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll reads and writes the one pollfd we pass; a zero timeout never blocks.
    let r = unsafe { libc::poll(&mut pfd, 1, 0) };
    r != 0
}

/// The container's end, as P reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Exited(i32),
    Signaled(i32),
}

/// Runs the container; returns the payload's outcome.
pub fn run(launch: Launch) -> Result<Outcome, LaunchError> {
    let Launch {
        plan,
        sys,
        user,
        mut mounter,
        write_maps,
        explain_userns,
    } = launch;
    let relay_terminal = must_relay_terminal_signals();
    // A child that died must surface as its error message, not as SIGPIPE on a write to it.
    // SAFETY: SIG_IGN installs no handler code.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };

    // Block relayed signals so they are read from a signalfd, never acted on by default.
    let mask = relay_mask();
    let mut old_mask = SigSet::empty();
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), Some(&mut old_mask))
        .map_err(sys_err("block signals"))?;

    let to_p = Pipe::new()?; // C → P: 'U' once the user namespace exists
    let to_c = Pipe::new()?; // P → C: 'M' once the maps are written
    let errp = Pipe::new()?; // C, D → P: one error line
    let status = Pipe::new()?; // C → P: the payload's wait status
    let parent = getpid();

    // SAFETY: P is single-threaded here (sifr starts no thread before launching), so the
    // child may run arbitrary code.
    match unsafe { fork() }.map_err(sys_err("fork the supervisor"))? {
        ForkResult::Child => {
            drop((to_p.r, to_c.w, errp.r, status.r));
            supervisor(
                &plan,
                &sys,
                &user,
                &mut *mounter,
                parent,
                to_p.w,
                to_c.r,
                errp.w,
                status.w,
                relay_terminal,
                &explain_userns,
            )
        }
        ForkResult::Parent { child } => {
            drop((to_p.w, to_c.r, errp.w, status.w));
            // Without a PID namespace, a container process with the caller's uid could trace
            // sifr and act on the host through it: sifr is not dumpable while the container
            // runs (the supervisor, forked before, keeps its own setting until its maps exist).
            if let Err(e) = security::set_dumpable(false) {
                let _ = kill(child, Signal::SIGKILL);
                let _ = waitpid(child, None);
                return Err(LaunchError::Sys {
                    what: "make sifr non-dumpable",
                    err: e,
                });
            }
            let outcome = parent_side(&plan, child, to_p.r, to_c.w, &write_maps, relay_terminal);
            let _ = security::set_dumpable(true);
            let msg = read_all(errp.r);
            let st = read_all(status.r);
            let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old_mask), None);
            if let Some(line) = msg.lines().find(|l| !l.trim().is_empty()) {
                return Err(LaunchError::Child(line.to_string()));
            }
            let outcome = outcome?;
            Ok(match st.trim() {
                s if s.starts_with('E') => Outcome::Exited(s[1..].parse().unwrap_or(255)),
                s if s.starts_with('S') => Outcome::Signaled(s[1..].parse().unwrap_or(9)),
                _ => outcome,
            })
        }
    }
}

/// P: writes the maps, relays signals, waits for the supervisor.
fn parent_side(
    plan: &Plan,
    child: Pid,
    from_c: OwnedFd,
    to_c: OwnedFd,
    write_maps: &dyn Fn(Pid, &IdMapPlan) -> Result<(), String>,
    relay_terminal: bool,
) -> Result<Outcome, LaunchError> {
    log::debug!("{:.1} ms: supervisor started", crate::log::since_start_ms());
    // 1. Wait for the supervisor's user namespace, then give it its identity.
    if recv_byte(&from_c) == Some(b'U') {
        match write_maps(child, &plan.ids) {
            Ok(()) => send(&to_c, b"M"),
            Err(msg) => {
                let _ = kill(child, Signal::SIGKILL);
                let _ = waitpid(child, None);
                return Err(LaunchError::Child(msg));
            }
        }
    }
    drop(to_c);
    // 2. Relay signals until it ends.
    wait_relaying(child, relay_terminal)
}

/// Reads signals from a signalfd: relays them to `child`, reaps children, returns when
/// `child` has ended.
fn wait_relaying(child: Pid, relay_terminal: bool) -> Result<Outcome, LaunchError> {
    let sfd = SignalFd::new(&relay_mask()).map_err(sys_err("create a signalfd"))?;
    loop {
        // Reap first: the child may have ended before the signalfd existed.
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) if pid == child => {
                    return Ok(Outcome::Exited(code));
                }
                Ok(WaitStatus::Signaled(pid, sig, _)) if pid == child => {
                    return Ok(Outcome::Signaled(sig as i32));
                }
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => continue,
            }
        }
        let info = match sfd.read_signal() {
            Ok(Some(i)) => i,
            Ok(None) | Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(sys_err("read signals")(e)),
        };
        let Ok(sig) = Signal::try_from(info.ssi_signo as i32) else {
            continue;
        };
        match sig {
            Signal::SIGCHLD => continue,
            Signal::SIGINT | Signal::SIGQUIT | Signal::SIGWINCH if !relay_terminal => {}
            Signal::SIGTSTP if !relay_terminal => {
                // The terminal stopped the payload; stop with it, as a shell job should.
                let _ = kill(getpid(), Signal::SIGSTOP);
            }
            _ => {
                let _ = kill(child, sig);
            }
        }
    }
}

/// C: the supervisor. Never returns.
#[allow(clippy::too_many_arguments)]
fn supervisor(
    plan: &Plan,
    sys: &LinuxSys,
    user: &HostUser,
    mounter: &mut dyn RootMounter,
    parent: Pid,
    to_p: OwnedFd,
    from_p: OwnedFd,
    err: OwnedFd,
    status: OwnedFd,
    relay_terminal: bool,
    explain_userns: &dyn Fn(nix::Error) -> String,
) -> ! {
    // Die with sifr: a killed sifr must not leave a supervisor and its mounts behind.
    if !security::die_with_parent(parent) {
        child_fail(&err, "sifr exited while the container was starting");
    }

    // 1. A new user namespace; P writes the id maps from outside.
    if let Err(e) = nix::sched::unshare(CloneFlags::CLONE_NEWUSER) {
        child_fail(&err, &explain_userns(e));
    }
    send(&to_p, b"U");
    log::debug!(
        "{:.1} ms: supervisor: user namespace created",
        crate::log::since_start_ms()
    );
    if recv_byte(&from_p) != Some(b'M') {
        // P reported the mapping error itself.
        // SAFETY: _exit in a forked child.
        unsafe { libc::_exit(255) }
    }
    drop((to_p, from_p));
    // Nothing in the container may trace this process, read its memory or descriptors (the
    // FUSE connection) or follow /proc/PID/root to the host's root: not dumpable, so that
    // needs CAP_SYS_PTRACE in the host's user namespace. Only now: a non-dumpable process's
    // /proc/PID/uid_map is root-owned, and P wrote the maps from outside.
    if let Err(e) = security::set_dumpable(false) {
        child_fail(
            &err,
            &format!("cannot make the supervisor non-dumpable: {e}"),
        );
    }

    // 2. The other namespaces, owned by the new user namespace.
    let ns = &plan.namespaces;
    let mut flags = CloneFlags::CLONE_NEWNS;
    if ns.ipc {
        flags |= CloneFlags::CLONE_NEWIPC;
    }
    if ns.uts.is_some() {
        flags |= CloneFlags::CLONE_NEWUTS;
    }
    if ns.net {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    if let Err(e) = nix::sched::unshare(flags) {
        child_fail(
            &err,
            &format!("cannot create the container namespaces: {e}"),
        );
    }
    if let Some(h) = ns.uts.as_ref().filter(|h| !h.is_empty())
        && let Err(e) = nix::unistd::sethostname(h)
    {
        child_fail(&err, &format!("cannot set the hostname {h:?}: {e}"));
    }
    if ns.net
        && let Err(e) = loopback_up()
    {
        child_fail(
            &err,
            &format!("cannot bring up the loopback interface: {e}"),
        );
    }
    // Mount events must not travel back to the host (they could not anyway from a user
    // namespace, but this also stops host mounts from appearing later).
    use nix::mount::MsFlags;
    if let Err(e) = sys.mount(
        None,
        Path::new("/"),
        None,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None,
    ) {
        child_fail(
            &err,
            &format!("cannot make the mount namespace private: {e}"),
        );
    }

    // 3. The session tmpfs, and the image under it.
    let layout = Layout::default();
    let fstype = plan.session.fstype.as_str();
    let session_data = if plan.session.fstype == MemoryFs::Ramfs {
        "mode=0755".to_string()
    } else {
        format!("size={}m,mode=0755", plan.session.size_mb)
    };
    let mountpoint = Path::new(rootfs::SESSION_MOUNTPOINT);
    if let Err(e) = sys.mount(
        Some(Path::new(fstype)),
        mountpoint,
        Some(fstype),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(&session_data),
    ) {
        child_fail(&err, &format!("cannot mount the session {fstype}: {e}"));
    }
    // Pivot into it, keeping the host's root at /oldroot (bubblewrap's approach): bind
    // sources stay reachable by path, and nothing of the host is covered.
    let old = mountpoint.join(HOST_ROOT.trim_start_matches('/'));
    if let Err(e) = sys
        .mkdir_all(&old, 0o755)
        .and_then(|()| sys.pivot_root(mountpoint, &old))
        .and_then(|()| sys.chdir(Path::new("/")))
    {
        child_fail(&err, &format!("cannot enter the session directory: {e}"));
    }
    if let Err(e) = sys.mkdir_all(&layout.rootfs(), 0o755) {
        child_fail(&err, &format!("cannot create the session root: {e}"));
    }
    // 4. Fork the payload now, while this process is still single-threaded; it waits
    //    until the image is mounted.
    let go = match Pipe::new() {
        Ok(p) => p,
        Err(e) => child_fail(&err, &e.to_string()),
    };
    // The container process says 'N' once its mount namespace is a copy of this one; after
    // that the supervisor needs neither the host's root nor the session any more.
    let copied = match Pipe::new() {
        Ok(p) => p,
        Err(e) => child_fail(&err, &e.to_string()),
    };
    let me = getpid();
    // SAFETY: still single-threaded (no FUSE thread yet).
    let payload = match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            drop(go.w);
            drop(status);
            drop(copied.r);
            payload(plan, sys, user, &layout, me, go.r, copied.w, err)
        }
        Ok(ForkResult::Parent { child }) => child,
        Err(e) => child_fail(&err, &format!("cannot fork the container process: {e}")),
    };
    drop(go.r);
    drop(copied.w);

    // 5. Mount the image; the server threads start here.
    log::debug!(
        "{:.1} ms: supervisor: session ready, mounting the image",
        crate::log::since_start_ms()
    );
    let mounted = match mounter.mount(&plan.root, &layout.rootfs(), sys) {
        Ok(m) => m,
        Err(msg) => {
            let _ = kill(payload, Signal::SIGKILL);
            let _ = waitpid(payload, None);
            child_fail(&err, &msg);
        }
    };
    // Mount points for sifr's own files must not stay behind in a writable sandbox: create
    // them here, and remove them when the container ends.
    let ephemeral = create_ephemeral_mountpoints(plan, sys, &layout);
    send(&go.w, b"G");
    log::debug!(
        "{:.1} ms: supervisor: image mounted",
        crate::log::since_start_ms()
    );
    drop(go.w);

    // 6. Once the container has its own copy of the mounts (or has failed: the pipe hangs
    //    up), leave the session: this process's root becomes an empty read-only tmpfs, and
    //    the host's root at /oldroot is detached from its namespace with the session.
    let _ = recv_byte(&copied.r);
    drop(copied.r);
    if let Err(e) = rootfs::leave_session(sys, &layout) {
        let _ = kill(payload, Signal::SIGKILL);
        let _ = waitpid(payload, None);
        child_fail(&err, &e.to_string());
    }
    drop(err);

    // 7. Relay signals until the payload ends, then stop the server.
    let outcome = wait_relaying(payload, relay_terminal);
    for (dir, name) in ephemeral {
        let _ = nix::unistd::unlinkat(
            &dir,
            name.as_os_str(),
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        );
    }
    mounted.stop();
    let st = match outcome {
        Ok(Outcome::Exited(c)) => format!("E{c}"),
        Ok(Outcome::Signaled(s)) => format!("S{s}"),
        Err(_) => "E255".to_string(),
    };
    send(&status, st.as_bytes());
    // SAFETY: _exit in a forked child.
    unsafe { libc::_exit(0) }
}

/// In a writable sandbox without a session layer, creates the (empty) mount points of
/// sifr's own generated files that the image lacks, and returns them for removal (the
/// directory, held open: the supervisor leaves the session before the end, and a name).
fn create_ephemeral_mountpoints(
    plan: &Plan,
    sys: &LinuxSys,
    layout: &Layout,
) -> Vec<(OwnedFd, std::ffi::OsString)> {
    use super::plan::{GeneratedFile, MountSource, RootLayer};
    let mut created = Vec::new();
    if !(plan.writable && plan.layer == RootLayer::Direct) {
        return created;
    }
    for op in &plan.mounts {
        if op.source != MountSource::Generated(GeneratedFile::AptSandboxRoot) {
            continue;
        }
        let parent = op.dest.parent().unwrap_or(Path::new("/"));
        let Ok(Some(dir)) = sys.resolve_in_root(&layout.rootfs(), parent, None) else {
            continue;
        };
        let Some(name) = op.dest.file_name() else {
            continue;
        };
        // `dir` names the resolved directory; create the file there only if it is new.
        use nix::fcntl::OFlag;
        use nix::sys::stat::Mode;
        let Ok(dirfd) = nix::fcntl::open(
            &dir,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) else {
            continue;
        };
        if nix::fcntl::openat(
            &dirfd,
            name,
            OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o644),
        )
        .is_ok()
        {
            created.push((dirfd, name.to_os_string()));
        }
    }
    sys.release();
    created
}

/// D: builds the root and becomes the payload (or its init). Never returns.
#[allow(clippy::too_many_arguments)]
fn payload(
    plan: &Plan,
    sys: &LinuxSys,
    user: &HostUser,
    layout: &Layout,
    supervisor: Pid,
    go: OwnedFd,
    copied: OwnedFd,
    err: OwnedFd,
) -> ! {
    if !security::die_with_parent(supervisor) {
        // The supervisor is gone; it cannot be told.
        // SAFETY: _exit in a forked child.
        unsafe { libc::_exit(255) }
    }
    if recv_byte(&go) != Some(b'G') {
        // The supervisor reported the failure.
        // SAFETY: _exit in a forked child.
        unsafe { libc::_exit(255) }
    }
    drop(go);

    // With --pid, the container starts as PID 1 of a new PID namespace. The supervisor
    // cannot create it for us: a process whose children go to another PID namespace may
    // not start threads, and the supervisor runs the FUSE server's. So this process
    // creates it, forks its PID 1, and relays signals and the exit status.
    if plan.namespaces.pid {
        if let Err(e) = nix::sched::unshare(CloneFlags::CLONE_NEWPID) {
            child_fail(&err, &format!("cannot create the PID namespace: {e}"));
        }
        // PID 1 cannot check its parent with getppid() (the parent is outside its PID
        // namespace, so it reads 0): it holds the read end of a pipe whose only writer is
        // this process, and sees it hang up if this process is gone.
        let alive = match Pipe::new() {
            Ok(p) => p,
            Err(e) => child_fail(&err, &e.to_string()),
        };
        // SAFETY: this process is single-threaded (forked from a single-threaded one).
        match unsafe { fork() } {
            Ok(ForkResult::Parent { child }) => {
                drop(err);
                drop(copied);
                drop(alive.r);
                // `alive.w` stays open until this process ends.
                let _keep = alive.w;
                let outcome = wait_relaying(child, true);
                match outcome {
                    Ok(Outcome::Signaled(sig)) => {
                        // Die the same way, so the supervisor reports the signal.
                        if let Ok(s) = Signal::try_from(sig) {
                            let _ = security::reset_signals();
                            let _ = kill(getpid(), s);
                        }
                        // SAFETY: _exit in a forked child.
                        unsafe { libc::_exit(128 + sig) }
                    }
                    // SAFETY: _exit in a forked child.
                    Ok(Outcome::Exited(c)) => unsafe { libc::_exit(c) },
                    // SAFETY: _exit in a forked child.
                    Err(_) => unsafe { libc::_exit(255) },
                }
            }
            Ok(ForkResult::Child) => {
                drop(alive.w);
                let armed = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).is_ok();
                if !armed || parent_gone(&alive.r) {
                    // SAFETY: _exit in a forked child.
                    unsafe { libc::_exit(255) }
                }
            }
            Err(e) => child_fail(&err, &format!("cannot fork the container's PID 1: {e}")),
        }
    }
    container_process(plan, sys, user, layout, copied, err)
}

/// The container's first process (PID 1 with --pid): builds the root, then becomes the
/// payload or its init. Never returns.
fn container_process(
    plan: &Plan,
    sys: &LinuxSys,
    user: &HostUser,
    layout: &Layout,
    copied: OwnedFd,
    err: OwnedFd,
) -> ! {
    // 1. A mount namespace of its own: pivot_root must not move the supervisor's root.
    if let Err(e) = nix::sched::unshare(CloneFlags::CLONE_NEWNS) {
        child_fail(
            &err,
            &format!("cannot create the container mount namespace: {e}"),
        );
    }
    send(&copied, b"N");
    drop(copied);
    // 2. The container root, then pivot_root into it.
    log::debug!(
        "{:.1} ms: container: building the root",
        crate::log::since_start_ms()
    );
    match rootfs::build_root(sys, plan, layout, user) {
        Ok(warnings) => {
            for w in warnings {
                log::warn!("{w}");
            }
        }
        Err(e) => child_fail(&err, &e.to_string()),
    }
    sys.release();

    // 3. The working directory: --pwd must exist; otherwise the caller's, then home, then /.
    let p = &plan.process;
    if nix::unistd::chdir(&p.cwd).is_err() {
        if p.cwd_required {
            child_fail(
                &err,
                &format!(
                    "cannot change to the working directory {} in the container",
                    p.cwd.display()
                ),
            );
        }
        if nix::unistd::chdir(&p.home).is_err() {
            let _ = nix::unistd::chdir("/");
        }
    }

    // 4. With a PID namespace, stay as PID 1 (reaping, relaying) and fork the payload.
    if plan.namespaces.pid && plan.namespaces.init {
        let init = getpid();
        // SAFETY: this process is single-threaded (forked from a single-threaded one).
        match unsafe { fork() } {
            Ok(ForkResult::Parent { child }) => {
                drop(err);
                let outcome = wait_relaying(child, true);
                // SAFETY: _exit ends PID 1, which kills what is left in the namespace.
                unsafe {
                    libc::_exit(match outcome {
                        Ok(Outcome::Exited(c)) => c,
                        Ok(Outcome::Signaled(s)) => 128 + s,
                        Err(_) => 255,
                    })
                }
            }
            Ok(ForkResult::Child) => {
                if !security::die_with_parent(init) {
                    // SAFETY: _exit in a forked child.
                    unsafe { libc::_exit(255) }
                }
            }
            Err(e) => child_fail(&err, &format!("cannot fork the container payload: {e}")),
        }
    }
    exec_payload(plan, err)
}

/// The last steps in the payload process, then execve.
fn exec_payload(plan: &Plan, err: OwnedFd) -> ! {
    let p = &plan.process;
    if let Some(mask) = p.umask {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(mask));
    }
    log::debug!(
        "{:.1} ms: container: root ready",
        crate::log::since_start_ms()
    );
    let exec = if Path::new("/bin/sh").exists() {
        action::with_shell(p)
    } else {
        let mut notes = Vec::new();
        match action::without_shell(p, &RootFiles, &mut notes) {
            Ok(e) => {
                for n in notes {
                    log::debug!("environment: {n}");
                }
                e
            }
            Err(e) => child_fail(&err, &e.to_string()),
        }
    };
    if let Err(e) = security::reset_signals() {
        child_fail(&err, &format!("cannot reset signals: {e}"));
    }
    if let Err(e) = security::cloexec_from(3) {
        child_fail(&err, &format!("cannot close inherited descriptors: {e}"));
    }
    if plan.security.no_new_privs
        && let Err(e) = security::no_new_privs()
    {
        child_fail(&err, &format!("cannot set no_new_privs: {e}"));
    }
    // Root emulation for fakeroot (after no_new_privs, which unprivileged seccomp needs).
    let emulation = if plan.security.emulate_root {
        Some(Emulation::RootMapped)
    } else if plan.security.mknod_noop {
        Some(Emulation::MknodOnly)
    } else {
        None
    };
    if let Some(em) = emulation
        && let Err(e) = seccomp::compile(em).and_then(|p| seccomp::install(&p))
    {
        child_fail(&err, &e.to_string());
    }
    if !plan.security.keep_userns_caps
        && let Err(e) = security::drop_all_caps()
    {
        child_fail(&err, &format!("cannot drop capabilities: {e}"));
    }
    let to_c = |s: &str| std::ffi::CString::new(s.as_bytes()).ok();
    let path = match to_c(&exec.path.to_string_lossy()) {
        Some(p) => p,
        None => child_fail(&err, "command path contains a NUL byte"),
    };
    let argv: Vec<_> = exec.argv.iter().filter_map(|a| to_c(a)).collect();
    let envp: Vec<_> = exec
        .env
        .iter()
        .filter_map(|(k, v)| to_c(&format!("{k}={v}")))
        .collect();
    log::debug!(
        "{:.1} ms: container: exec {}",
        crate::log::since_start_ms(),
        exec.path.display()
    );
    let e = nix::unistd::execve(&path, &argv, &envp).unwrap_err();
    child_fail(
        &err,
        &format!(
            "cannot execute {}: {e}",
            PathBuf::from(&exec.path).display()
        ),
    )
}

/// Brings up `lo` in a new network namespace.
fn loopback_up() -> std::io::Result<()> {
    // SAFETY: a plain socket() call; the descriptor is wrapped right away.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
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
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the union member for flags is the one SIOCGIFFLAGS filled.
    unsafe { ifr.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short };
    // SAFETY: SIOCSIFFLAGS reads the ifreq we pass.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Writes single-range id maps directly (the caller only; no helper needed).
pub fn write_single_maps(pid: Pid, ids: &IdMapPlan) -> Result<(), String> {
    let base = PathBuf::from(format!("/proc/{}", pid.as_raw()));
    let line = |m: &[(u32, u32, u32)]| {
        m.iter()
            .map(|(i, o, c)| format!("{i} {o} {c}\n"))
            .collect::<String>()
    };
    // setgroups must be denied before an unprivileged process may write gid_map
    // (CVE-2014-8989).
    let steps = [
        ("setgroups", "deny\n".to_string()),
        ("uid_map", line(&ids.uid_map)),
        ("gid_map", line(&ids.gid_map)),
    ];
    for (file, contents) in steps {
        std::fs::write(base.join(file), contents.as_bytes())
            .map_err(|e| format!("cannot write the user namespace {file}: {e}"))?;
    }
    Ok(())
}
