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
//! Every message between these processes is a typed [`ChildMsg`], one line on a
//! close-on-exec pipe (see `msg`). Failures before the payload's `execve` are sent to P as
//! `ChildMsg::Failed`; P prints the message once and exits 255.
//!
//! Each step that talks to the kernel goes through the [`Sys`] seam; the steps of each
//! process are functions generic over it (C: `create_userns`, `supervisor_namespaces`,
//! `enter_session`; D: `pid_namespace`; E: `container_mount_ns`, `container_root`,
//! `exec_steps`), unit tested with the recorder.
//! fork, the pipes and the parent-death checks stay outside.
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

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;
use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, sigprocmask};
use nix::sys::signalfd::SignalFd;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork, getpid};

use super::action::{self, Exec, RootFiles};
use super::identity::HostUser;
use super::msg::ChildMsg;
use super::pasta;
use super::plan::{IdMapPlan, MemoryFs, Plan, RootSource};
use super::rootfs::{self, Layout};
use super::seccomp::Emulation;
use super::security;
use super::sys::{HOST_ROOT, Sys};

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

/// The error number of a failed step, worded as nix words it (the messages of the steps
/// that called nix directly before the seam existed stay the same).
fn errno_of(e: &std::io::Error) -> nix::Error {
    nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
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
    /// The overlay image files, opened and locked on the host, one per
    /// `OverlayPlan::images` entry (see `layers`).
    fn overlay_files(&mut self) -> Vec<std::fs::File> {
        Vec::new()
    }
}

/// A mounted root (e.g. the FUSE server); `stop` unmounts it and ends its threads.
pub trait MountedRoot {
    fn stop(self: Box<Self>);
}

/// Writes the id maps of a child that has unshared its user namespace.
pub type MapWriter = Box<dyn Fn(Pid, &IdMapPlan) -> Result<(), String>>;

/// What the launch needs besides the plan.
pub struct Launch<S: Sys> {
    pub plan: Plan,
    /// The seam to the kernel (`LinuxSys`).
    pub sys: S,
    pub user: HostUser,
    pub mounter: Box<dyn RootMounter>,
    /// Writes the id maps of a child that has unshared its user namespace.
    pub write_maps: MapWriter,
    /// Makes the user-namespace failure message precise (sysctl diagnosis).
    pub explain_userns: Box<dyn Fn(nix::Error) -> String>,
    /// Moves the supervisor into the container's cgroup (resource limits), before it forks
    /// anything; `None` without limits.
    pub enter_cgroup: Option<CgroupEnter>,
    /// Called by P once the payload runs (every container process has exec'd or handed
    /// on its end of the failure pipe), with the supervisor's pid; an error stops the
    /// container. Instances record their state here (see `instance`).
    pub on_up: Option<OnUp>,
    /// A kept image mount to join instead of creating a user namespace and mounting the
    /// image (see `kept`): the holder's namespaces, open for as long as `run` runs.
    pub kept: Option<KeptJoin>,
}

/// The holder's user namespace (a descriptor owned by the caller of `run`).
#[derive(Debug, Clone, Copy)]
pub struct KeptJoin {
    pub userns: std::os::fd::RawFd,
}

/// What P does once the container is up.
pub type OnUp = Box<dyn FnOnce(Pid) -> Result<(), String>>;

/// Moves a process into the container's cgroup.
pub type CgroupEnter = Box<dyn Fn(Pid) -> Result<(), String>>;

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

/// True when the next message on `fd` is `want` (not a hang-up, another message or
/// garbage).
fn recv_is(fd: &OwnedFd, want: ChildMsg) -> bool {
    ChildMsg::recv(fd) == Ok(Some(want))
}

/// Ends a child after a failure: the message goes to P, the status is 255.
fn child_fail(err: &OwnedFd, msg: &str) -> ! {
    ChildMsg::Failed(msg.to_string()).send(err);
    // SAFETY: _exit ends the forked child without running the parent's exit handlers.
    unsafe { libc::_exit(255) }
}

/// Ends a forked child without a message (the one that reports has done so, or is gone).
fn child_exit(code: i32) -> ! {
    // SAFETY: _exit ends the forked child without running the parent's exit handlers.
    unsafe { libc::_exit(code) }
}

/// P: reads the error pipe until every holder has closed it; the first failure with a
/// message is the launch's error.
fn read_failure(fd: &OwnedFd) -> Option<String> {
    let mut first = None;
    loop {
        match ChildMsg::recv(fd) {
            Ok(None) => return first,
            Ok(Some(ChildMsg::Failed(m))) if !m.trim().is_empty() => {
                first.get_or_insert(m);
            }
            Ok(Some(_)) => {}
            Err(e) => {
                return first.or(Some(format!(
                    "the container setup sent a malformed message: {e}"
                )));
            }
        }
    }
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

impl Outcome {
    /// sifr's exit status for the payload's outcome. A payload killed by signal N makes sifr
    /// exit with 128+N after re-raising N on itself, so a calling shell sees the same death.
    pub fn exit_status(self) -> i32 {
        match self {
            Outcome::Exited(code) => code,
            Outcome::Signaled(sig) => {
                if let Ok(s) = nix::sys::signal::Signal::try_from(sig) {
                    use nix::sys::signal::{SigHandler, SigSet, SigmaskHow, sigprocmask};
                    // Core dumps would be sifr's, not the payload's: only re-raise signals whose
                    // default action does not dump core.
                    let dumps = matches!(
                        s,
                        nix::sys::signal::Signal::SIGQUIT
                            | nix::sys::signal::Signal::SIGILL
                            | nix::sys::signal::Signal::SIGABRT
                            | nix::sys::signal::Signal::SIGFPE
                            | nix::sys::signal::Signal::SIGSEGV
                            | nix::sys::signal::Signal::SIGBUS
                            | nix::sys::signal::Signal::SIGSYS
                            | nix::sys::signal::Signal::SIGTRAP
                            | nix::sys::signal::Signal::SIGXCPU
                            | nix::sys::signal::Signal::SIGXFSZ
                    );
                    if !dumps {
                        // SAFETY: restoring the default action installs no handler code.
                        let _ = unsafe { nix::sys::signal::signal(s, SigHandler::SigDfl) };
                        let mut set = SigSet::empty();
                        set.add(s);
                        let _ = sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&set), None);
                        let _ = nix::sys::signal::raise(s);
                    }
                }
                128 + sig
            }
        }
    }
}

/// Runs the container; returns the payload's outcome.
pub fn run<S: Sys>(launch: Launch<S>) -> Result<Outcome, LaunchError> {
    let Launch {
        plan,
        sys,
        user,
        mut mounter,
        write_maps,
        explain_userns,
        enter_cgroup,
        on_up,
        kept,
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

    let to_p = Pipe::new()?; // C → P: UsernsReady once the user namespace exists
    let to_c = Pipe::new()?; // P → C: MapsWritten once the maps are written
    let errp = Pipe::new()?; // C, D → P: Failed
    let status = Pipe::new()?; // C → P: the payload's end, Exited or Signaled
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
                kept,
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
            let outcome = parent_side(
                &plan,
                child,
                to_p.r,
                to_c.w,
                &write_maps,
                enter_cgroup.as_deref(),
                relay_terminal,
                on_up.map(|f| (f, &errp.r)),
            );
            let _ = security::set_dumpable(true);
            let failure = read_failure(&errp.r);
            let st = ChildMsg::recv(&status.r);
            let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old_mask), None);
            if let Some(line) = failure {
                return Err(LaunchError::Child(line));
            }
            let outcome = outcome?;
            Ok(match st {
                Ok(Some(ChildMsg::Exited(c))) => Outcome::Exited(c),
                Ok(Some(ChildMsg::Signaled(s))) => Outcome::Signaled(s),
                // The supervisor ended before it could report: its own end tells.
                Ok(None) => outcome,
                Ok(Some(_)) | Err(_) => Outcome::Exited(255),
            })
        }
    }
}

/// P: writes the maps, relays signals, waits for the supervisor.
#[allow(clippy::too_many_arguments)]
fn parent_side(
    plan: &Plan,
    child: Pid,
    from_c: OwnedFd,
    to_c: OwnedFd,
    write_maps: &dyn Fn(Pid, &IdMapPlan) -> Result<(), String>,
    enter_cgroup: Option<&dyn Fn(Pid) -> Result<(), String>>,
    relay_terminal: bool,
    on_up: Option<(OnUp, &OwnedFd)>,
) -> Result<Outcome, LaunchError> {
    log::debug!("{:.1} ms: supervisor started", crate::log::since_start_ms());
    // 0. Resource limits: the supervisor enters the container's cgroup now, while it waits
    // for its maps and has forked nothing, so every container process is limited.
    if let Some(enter) = enter_cgroup
        && let Err(msg) = enter(child)
    {
        let _ = kill(child, Signal::SIGKILL);
        let _ = waitpid(child, None);
        return Err(LaunchError::Child(msg));
    }
    // 1. Wait for the supervisor's user namespace, then give it its identity, and its
    //    network (pasta) before it goes on.
    let mut net = None;
    if recv_is(&from_c, ChildMsg::UsernsReady) {
        let ready = write_maps(child, &plan.ids).and_then(|()| match &plan.pasta {
            Some(p) => pasta::start(p, child).map(|p| net = Some(p)),
            None => Ok(()),
        });
        match ready {
            Ok(()) => ChildMsg::MapsWritten.send(&to_c),
            Err(msg) => {
                let _ = kill(child, Signal::SIGKILL);
                let _ = waitpid(child, None);
                return Err(LaunchError::Child(msg));
            }
        }
    }
    drop(to_c);
    // 2. With `on_up`: wait until the container is up (the failure pipe hangs up with no
    //    message: every holder has exec'd or let go of it), then report it.
    if let Some((up, errp)) = on_up {
        let failed = match read_failure(errp) {
            Some(line) => Err(line),
            None => up(child),
        };
        if let Err(msg) = failed {
            let _ = kill(child, Signal::SIGKILL);
            let _ = waitpid(child, None);
            if let Some(p) = net {
                p.stop();
            }
            return Err(LaunchError::Child(msg));
        }
    }
    // 3. Relay signals until it ends; then pasta stops (before sifr exits).
    let outcome = wait_relaying(child, relay_terminal);
    if let Some(p) = net {
        p.stop();
    }
    outcome
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
fn supervisor<S: Sys>(
    plan: &Plan,
    sys: &S,
    user: &HostUser,
    mounter: &mut dyn RootMounter,
    parent: Pid,
    to_p: OwnedFd,
    from_p: OwnedFd,
    err: OwnedFd,
    status: OwnedFd,
    relay_terminal: bool,
    explain_userns: &dyn Fn(nix::Error) -> String,
    kept: Option<KeptJoin>,
) -> ! {
    // Die with sifr: a killed sifr must not leave a supervisor and its mounts behind.
    if !security::die_with_parent(parent) {
        child_fail(&err, "sifr exited while the container was starting");
    }

    // 1. A new user namespace (with its network namespace when pasta connects it); P
    //    writes the id maps from outside. With a kept mount, the holder's user namespace
    //    (mapped as this run's) instead, which owns the namespaces step 2 creates and may
    //    reach the holder's FUSE mount; P has no maps to write then, but this process
    //    still waits for it: P moves it into the container's cgroup before it forks.
    let entered = match kept {
        Some(k) => join_kept(sys, k),
        None => create_userns(sys, plan, explain_userns),
    };
    if let Err(msg) = entered {
        child_fail(&err, &msg);
    }
    ChildMsg::UsernsReady.send(&to_p);
    log::debug!(
        "{:.1} ms: supervisor: user namespace {}",
        crate::log::since_start_ms(),
        if kept.is_some() { "joined" } else { "created" }
    );
    if !recv_is(&from_p, ChildMsg::MapsWritten) {
        // P reported the mapping error itself.
        child_exit(255)
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
    if let Err(msg) = supervisor_namespaces(sys, plan) {
        child_fail(&err, &msg);
    }
    // 3. The session tmpfs, and the image under it.
    let layout = match enter_session(sys, plan) {
        Ok(l) => l,
        Err(msg) => child_fail(&err, &msg),
    };
    serve(
        plan,
        sys,
        user,
        mounter,
        &layout,
        err,
        status,
        relay_terminal,
    )
}

/// C, step 1: the user namespace, before any other (so that it owns them). With pasta the
/// network namespace comes with it (the kernel creates the user namespace first, which owns
/// it): P starts pasta on both while this process still waits for its maps and is still
/// dumpable, the only time P may open its namespaces.
fn create_userns<S: Sys>(
    sys: &S,
    plan: &Plan,
    explain_userns: &dyn Fn(nix::Error) -> String,
) -> Result<(), String> {
    let mut flags = CloneFlags::CLONE_NEWUSER;
    if plan.pasta.is_some() {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    sys.unshare(flags).map_err(|e| explain_userns(errno_of(&e)))
}

/// C, step 1 with a kept mount: joins the holder's user namespace, which grants this
/// process (its owner's) every capability there.
fn join_kept<S: Sys>(sys: &S, k: KeptJoin) -> Result<(), String> {
    use std::os::fd::BorrowedFd;
    // SAFETY: the descriptor stays open in P's `Attached` (and in this forked copy of it)
    // for the whole launch.
    let user = unsafe { BorrowedFd::borrow_raw(k.userns) };
    sys.setns(user, CloneFlags::CLONE_NEWUSER)
        .map_err(|e| format!("cannot join the kept mount's user namespace: {e}"))
}

/// C, step 2: the namespaces other than the user namespace (created first, so that it
/// owns them), the hostname, the loopback interface, and no mount propagation back.
fn supervisor_namespaces<S: Sys>(sys: &S, plan: &Plan) -> Result<(), String> {
    let ns = &plan.namespaces;
    let mut flags = CloneFlags::CLONE_NEWNS;
    if ns.ipc {
        flags |= CloneFlags::CLONE_NEWIPC;
    }
    if ns.uts.is_some() {
        flags |= CloneFlags::CLONE_NEWUTS;
    }
    if ns.net && plan.pasta.is_none() {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    sys.unshare(flags)
        .map_err(|e| format!("cannot create the container namespaces: {}", errno_of(&e)))?;
    if let Some(h) = ns.uts.as_ref().filter(|h| !h.is_empty()) {
        sys.sethostname(h)
            .map_err(|e| format!("cannot set the hostname {h:?}: {}", errno_of(&e)))?;
    }
    if ns.net {
        sys.loopback_up()
            .map_err(|e| format!("cannot bring up the loopback interface: {e}"))?;
    }
    // Mount events must not travel back to the host (they could not anyway from a user
    // namespace). `mount slave = yes` (the default) keeps host mounts made later (autofs,
    // for example) showing up inside, as Apptainer's MS_SLAVE; `no` makes the tree private.
    use nix::mount::MsFlags;
    let propagation = if ns.private_mounts {
        MsFlags::MS_PRIVATE
    } else {
        MsFlags::MS_SLAVE
    };
    sys.mount(
        None,
        Path::new("/"),
        None,
        MsFlags::MS_REC | propagation,
        None,
    )
    .map_err(|e| format!("cannot make the mount namespace private: {e}"))
}

/// C, step 3: mounts the session tmpfs and pivots into it, keeping the host's root at
/// /oldroot (bubblewrap's approach): bind sources stay reachable by path, and nothing of
/// the host is covered.
fn enter_session<S: Sys>(sys: &S, plan: &Plan) -> Result<Layout, String> {
    use nix::mount::MsFlags;
    let layout = Layout::default();
    let fstype = plan.session.fstype.as_str();
    let session_data = if plan.session.fstype == MemoryFs::Ramfs {
        "mode=0755".to_string()
    } else {
        format!("size={}m,mode=0755", plan.session.size_mb)
    };
    let mountpoint = Path::new(rootfs::SESSION_MOUNTPOINT);
    sys.mount(
        Some(Path::new(fstype)),
        mountpoint,
        Some(fstype),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(&session_data),
    )
    .map_err(|e| format!("cannot mount the session {fstype}: {e}"))?;
    let old = mountpoint.join(HOST_ROOT.trim_start_matches('/'));
    sys.mkdir_all(&old, 0o755)
        .and_then(|()| sys.pivot_root(mountpoint, &old))
        .and_then(|()| sys.chdir(Path::new("/")))
        .map_err(|e| format!("cannot enter the session directory: {e}"))?;
    sys.mkdir_all(&layout.rootfs(), 0o755)
        .map_err(|e| format!("cannot create the session root: {e}"))?;
    Ok(layout)
}

/// C, steps 4 to 7: forks the container process, mounts the image (the server threads
/// start here), lets the container build its root, leaves the session, relays signals
/// until the payload ends and reports its end to P. Never returns.
#[allow(clippy::too_many_arguments)]
fn serve<S: Sys>(
    plan: &Plan,
    sys: &S,
    user: &HostUser,
    mounter: &mut dyn RootMounter,
    layout: &Layout,
    err: OwnedFd,
    status: OwnedFd,
    relay_terminal: bool,
) -> ! {
    // 4. Fork the payload now, while this process is still single-threaded; it waits
    //    until the image is mounted.
    let go = match Pipe::new() {
        Ok(p) => p,
        Err(e) => child_fail(&err, &e.to_string()),
    };
    // The container process says Copied once its mount namespace is a copy of this one;
    // after that the supervisor needs neither the host's root nor the session any more.
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
            payload(plan, sys, user, layout, me, go.r, copied.w, err)
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
    // The overlay image layers: ext3 ones by fuse2fs while this process is still
    // single-threaded, then the image, then squashfs layers and the fuse-overlayfs stack.
    let files = mounter.overlay_files();
    let mut layers = super::layers::Layers::default();
    let layered = super::layers::needed(plan);
    let stop_all = |layers: super::layers::Layers, msg: &str| -> ! {
        let _ = kill(payload, Signal::SIGKILL);
        let _ = waitpid(payload, None);
        layers.stop();
        child_fail(&err, msg)
    };
    if layered
        && let Err(msg) = super::layers::mount_ext_layers(sys, plan, layout, &files, &mut layers)
    {
        stop_all(layers, &msg);
    }
    let mounted = match mounter.mount(&plan.root, &layout.rootfs(), sys) {
        Ok(m) => m,
        Err(msg) => stop_all(layers, &msg),
    };
    if layered && let Err(msg) = super::layers::mount_top(sys, plan, layout, &files, &mut layers) {
        layers.stop();
        mounted.stop();
        let _ = kill(payload, Signal::SIGKILL);
        let _ = waitpid(payload, None);
        child_fail(&err, &msg);
    }
    drop(files);
    // Mount points for sifr's own files must not stay behind in a writable sandbox: create
    // them here, and remove them when the container ends.
    let ephemeral = create_ephemeral_mountpoints(plan, sys, layout);
    ChildMsg::Go.send(&go.w);
    log::debug!(
        "{:.1} ms: supervisor: image mounted",
        crate::log::since_start_ms()
    );
    drop(go.w);

    // 6. Once the container has its own copy of the mounts (or has failed: the pipe hangs
    //    up), leave the session: this process's root becomes an empty read-only tmpfs, and
    //    the host's root at /oldroot is detached from its namespace with the session.
    let _ = ChildMsg::recv(&copied.r);
    drop(copied.r);
    if layered && let Err(e) = super::layers::supervisor_lets_go(sys, layout) {
        let _ = kill(payload, Signal::SIGKILL);
        let _ = waitpid(payload, None);
        layers.stop();
        child_fail(&err, &format!("cannot detach the overlay layers: {e}"));
    }
    if let Err(e) = rootfs::leave_session(sys, layout) {
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
    // The top layer first: fuse-overlayfs reads the layers below it.
    layers.stop();
    mounted.stop();
    let st = match outcome {
        Ok(Outcome::Exited(c)) => ChildMsg::Exited(c),
        Ok(Outcome::Signaled(s)) => ChildMsg::Signaled(s),
        Err(_) => ChildMsg::Exited(255),
    };
    st.send(&status);
    child_exit(0)
}

/// In a writable sandbox without a session layer, creates the (empty) mount points of
/// sifr's own generated files that the image lacks, and returns them for removal (the
/// directory, held open: the supervisor leaves the session before the end, and a name).
fn create_ephemeral_mountpoints<S: Sys>(
    plan: &Plan,
    sys: &S,
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
        let Ok(Some(dir)) = sys.path_in_root(&layout.rootfs(), parent, None) else {
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
fn payload<S: Sys>(
    plan: &Plan,
    sys: &S,
    user: &HostUser,
    layout: &Layout,
    supervisor: Pid,
    go: OwnedFd,
    copied: OwnedFd,
    err: OwnedFd,
) -> ! {
    if !security::die_with_parent(supervisor) {
        // The supervisor is gone; it cannot be told.
        child_exit(255)
    }
    if !recv_is(&go, ChildMsg::Go) {
        // The supervisor reported the failure.
        child_exit(255)
    }
    drop(go);

    // With --pid, the container starts as PID 1 of a new PID namespace. The supervisor
    // cannot create it for us: a process whose children go to another PID namespace may
    // not start threads, and the supervisor runs the FUSE server's. So this process
    // creates it, forks its PID 1, and relays signals and the exit status.
    let (err, copied) = if plan.namespaces.pid {
        if let Err(msg) = pid_namespace(sys) {
            child_fail(&err, &msg);
        }
        fork_pid1(err, copied, "the container's PID 1")
    } else {
        (err, copied)
    };
    container_process(plan, sys, user, layout, copied, err)
}

/// Forks the PID 1 of the PID namespace this process has just created or entered. This
/// process closes `err` and `held`, relays signals to PID 1 and ends as it ended; the child
/// (PID 1) gets them back and goes on. PID 1 cannot check its parent with getppid() (the
/// parent is outside its PID namespace, so it reads 0): it holds the read end of a pipe
/// whose only writer is this process, and sees it hang up if this process is gone.
fn fork_pid1<T>(err: OwnedFd, held: T, what: &str) -> (OwnedFd, T) {
    let alive = match Pipe::new() {
        Ok(p) => p,
        Err(e) => child_fail(&err, &e.to_string()),
    };
    // SAFETY: this process is single-threaded (forked from a single-threaded one).
    match unsafe { fork() } {
        Ok(ForkResult::Parent { child }) => {
            drop((err, held, alive.r));
            // `alive.w` stays open until this process ends.
            let _keep = alive.w;
            relay_end(child)
        }
        Ok(ForkResult::Child) => {
            drop(alive.w);
            let armed = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).is_ok();
            if !armed || parent_gone(&alive.r) {
                child_exit(255)
            }
            (err, held)
        }
        Err(e) => child_fail(&err, &format!("cannot fork {what}: {e}")),
    }
}

/// D with --pid: a PID namespace, which its next child enters as PID 1.
fn pid_namespace<S: Sys>(sys: &S) -> Result<(), String> {
    sys.unshare(CloneFlags::CLONE_NEWPID)
        .map_err(|e| format!("cannot create the PID namespace: {}", errno_of(&e)))
}

/// D with a PID namespace: relays signals to the namespace's PID 1 and ends as it ended
/// (killed by the same signal, so that the supervisor reports it).
fn relay_end(child: Pid) -> ! {
    match wait_relaying(child, true) {
        Ok(Outcome::Signaled(sig)) => {
            if let Ok(s) = Signal::try_from(sig) {
                let _ = security::reset_signals();
                let _ = kill(getpid(), s);
            }
            child_exit(128 + sig)
        }
        Ok(Outcome::Exited(c)) => child_exit(c),
        Err(_) => child_exit(255),
    }
}

/// The container's first process (PID 1 with --pid): builds the root, then becomes the
/// payload or its init. Never returns.
fn container_process<S: Sys>(
    plan: &Plan,
    sys: &S,
    user: &HostUser,
    layout: &Layout,
    copied: OwnedFd,
    err: OwnedFd,
) -> ! {
    // 1. A mount namespace of its own: pivot_root must not move the supervisor's root.
    if let Err(msg) = container_mount_ns(sys) {
        child_fail(&err, &msg);
    }
    if super::layers::needed(plan)
        && let Err(e) = super::layers::container_receives_only(sys, layout)
    {
        child_fail(&err, &format!("cannot take the overlay layers: {e}"));
    }
    ChildMsg::Copied.send(&copied);
    drop(copied);
    // 2. The container root, then pivot_root into it; 3. the working directory.
    log::debug!(
        "{:.1} ms: container: building the root",
        crate::log::since_start_ms()
    );
    if let Err(msg) = container_root(sys, plan, layout, user) {
        child_fail(&err, &msg);
    }

    // 4. With a PID namespace, stay as PID 1 (reaping, relaying) and fork the payload.
    if plan.namespaces.pid && plan.namespaces.init {
        let init = getpid();
        // SAFETY: this process is single-threaded (forked from a single-threaded one).
        match unsafe { fork() } {
            Ok(ForkResult::Parent { child }) => {
                drop(err);
                let outcome = wait_relaying(child, true);
                // _exit ends PID 1, which kills what is left in the namespace.
                child_exit(match outcome {
                    Ok(Outcome::Exited(c)) => c,
                    Ok(Outcome::Signaled(s)) => 128 + s,
                    Err(_) => 255,
                })
            }
            Ok(ForkResult::Child) => {
                if !security::die_with_parent(init) {
                    child_exit(255)
                }
            }
            Err(e) => child_fail(&err, &format!("cannot fork the container payload: {e}")),
        }
    }
    // 5. The last steps, then execve (which returns only on failure).
    match exec_steps(sys, plan) {
        Err(msg) => child_fail(&err, &msg),
        Ok(()) => child_exit(255),
    }
}

/// The container process, step 1: a mount namespace of its own.
fn container_mount_ns<S: Sys>(sys: &S) -> Result<(), String> {
    sys.unshare(CloneFlags::CLONE_NEWNS).map_err(|e| {
        format!(
            "cannot create the container mount namespace: {}",
            errno_of(&e)
        )
    })
}

/// The container process, steps 2 and 3: builds the root and pivots into it, then
/// changes to the working directory: --pwd must exist; otherwise the caller's, then home,
/// then /.
fn container_root<S: Sys>(
    sys: &S,
    plan: &Plan,
    layout: &Layout,
    user: &HostUser,
) -> Result<(), String> {
    let warnings = rootfs::build_root(sys, plan, layout, user).map_err(|e| e.to_string())?;
    for w in warnings {
        log::warn!("{w}");
    }
    sys.release();
    enter_workdir(sys, plan)
}

/// Changes to the payload's working directory: --pwd must exist; otherwise the caller's,
/// then home, then /.
fn enter_workdir<S: Sys>(sys: &S, plan: &Plan) -> Result<(), String> {
    let p = &plan.process;
    if sys.chdir(&p.cwd).is_err() {
        if p.cwd_required {
            return Err(format!(
                "cannot change to the working directory {} in the container",
                p.cwd.display()
            ));
        }
        if sys.chdir(&p.home).is_err() {
            let _ = sys.chdir(Path::new("/"));
        }
    }
    Ok(())
}

/// The last steps in the payload process, then execve. Returns the failure; `Ok` only
/// where execve returns without failing (the recorder).
fn exec_steps<S: Sys>(sys: &S, plan: &Plan) -> Result<(), String> {
    let p = &plan.process;
    if let Some(mask) = p.umask {
        sys.umask(mask);
    }
    log::debug!(
        "{:.1} ms: container: root ready",
        crate::log::since_start_ms()
    );
    let exec = payload_exec(sys, plan)?;
    sys.reset_signals()
        .map_err(|e| format!("cannot reset signals: {e}"))?;
    sys.cloexec_from(3)
        .map_err(|e| format!("cannot close inherited descriptors: {e}"))?;
    if plan.security.no_new_privs {
        sys.no_new_privs()
            .map_err(|e| format!("cannot set no_new_privs: {e}"))?;
    }
    // `--security uid:/gid:` (fakeroot): leave container root for the requested ids; the
    // permitted capabilities survive for the next step, which sets them all.
    if let Some(ids) = &plan.security.run_as {
        sys.set_ids(ids)
            .map_err(|e| format!("cannot switch to {ids:?} (--security uid:/gid:): {e}"))?;
    }
    // The payload's capabilities, in all five sets (all others dropped, bounding included),
    // before any filter: a filter is installed last.
    sys.apply_caps(plan.security.caps)
        .map_err(|e| format!("cannot set capabilities: {e}"))?;
    // Root emulation for fakeroot (after no_new_privs, which unprivileged seccomp needs).
    let emulation = if plan.security.emulate_root {
        Some(Emulation::RootMapped)
    } else if plan.security.mknod_noop {
        Some(Emulation::MknodOnly)
    } else {
        None
    };
    if let Some(em) = emulation {
        sys.install_seccomp(em).map_err(|e| e.to_string())?;
    }
    // The profile last: after no_new_privs, the capability changes and the emulation
    // filter (so the profile's answer wins for equal actions), right before execve.
    if let Some(filter) = &plan.security.profile {
        sys.install_profile(filter)
            .map_err(|e| format!("cannot install the seccomp profile {}: {e}", filter.origin))?;
    }
    if exec.path.as_os_str().as_encoded_bytes().contains(&0) {
        return Err("command path contains a NUL byte".into());
    }
    log::debug!(
        "{:.1} ms: container: exec {}",
        crate::log::since_start_ms(),
        exec.path.display()
    );
    sys.execve(&exec).map_err(|e| {
        format!(
            "cannot execute {}: {}",
            PathBuf::from(&exec.path).display(),
            errno_of(&e)
        )
    })
}

/// What the payload executes: the action script when the container has a shell, the
/// command itself otherwise.
fn payload_exec<S: Sys>(sys: &S, plan: &Plan) -> Result<Exec, String> {
    let p = &plan.process;
    if sys.exists(Path::new("/bin/sh")) {
        return Ok(action::with_shell(p));
    }
    let mut notes = Vec::new();
    let exec = action::without_shell(p, &RootFiles, &mut notes).map_err(|e| e.to_string())?;
    for n in notes {
        log::debug!("environment: {n}");
    }
    Ok(exec)
}

// --- joining an instance (`instance://NAME`) ---------------------------------------------

/// A live instance's namespaces and root, opened on the host before anything changes.
pub struct JoinTarget {
    /// The namespaces that differ from sifr's own, in the order they are joined: the user
    /// namespace first (it owns the others), the mount namespace last.
    pub namespaces: Vec<(CloneFlags, OwnedFd)>,
    /// The instance's root directory.
    pub root: OwnedFd,
}

/// The namespace kinds an instance may have, in joining order.
const JOINED: [(&str, CloneFlags); 6] = [
    ("user", CloneFlags::CLONE_NEWUSER),
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("uts", CloneFlags::CLONE_NEWUTS),
    ("net", CloneFlags::CLONE_NEWNET),
    ("pid", CloneFlags::CLONE_NEWPID),
    ("mnt", CloneFlags::CLONE_NEWNS),
];

impl JoinTarget {
    /// Opens the namespaces of process `pid` that sifr is not in, and its root. The kernel
    /// allows this only for a process the caller may trace: the instance's init (a
    /// container process), never sifr's own.
    pub fn open(pid: i32) -> Result<JoinTarget, LaunchError> {
        use nix::fcntl::OFlag;
        use nix::sys::stat::Mode;
        use std::os::unix::fs::MetadataExt;
        let open = |path: &str, flags: OFlag| {
            nix::fcntl::open(path, flags | OFlag::O_CLOEXEC, Mode::empty())
                .map_err(|e| LaunchError::Child(format!("cannot open {path} of the instance: {e}")))
        };
        let mut namespaces = Vec::new();
        for (name, kind) in JOINED {
            let theirs = format!("/proc/{pid}/ns/{name}");
            let same = match (
                std::fs::metadata(format!("/proc/self/ns/{name}")),
                std::fs::metadata(&theirs),
            ) {
                (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
                (_, Err(e)) => {
                    return Err(LaunchError::Child(format!(
                        "cannot read {theirs} of the instance: {e}"
                    )));
                }
                (Err(_), Ok(_)) => false,
            };
            if !same {
                namespaces.push((kind, open(&theirs, OFlag::O_RDONLY)?));
            }
        }
        let root = open(
            &format!("/proc/{pid}/root"),
            OFlag::O_PATH | OFlag::O_DIRECTORY,
        )?;
        Ok(JoinTarget { namespaces, root })
    }
}

/// The joining process: enters the instance's namespaces (the user namespace first) and
/// its root. Returns whether it joined a PID namespace (which only its children enter).
fn join_namespaces<S: Sys>(sys: &S, target: &JoinTarget) -> Result<bool, String> {
    use std::os::fd::AsFd;
    let mut pid = false;
    for (kind, fd) in &target.namespaces {
        sys.setns(fd.as_fd(), *kind)
            .map_err(|e| format!("cannot join the instance's namespace {kind:?}: {e}"))?;
        pid |= *kind == CloneFlags::CLONE_NEWPID;
    }
    sys.enter_root(target.root.as_fd())
        .map_err(|e| format!("cannot enter the instance's root: {e}"))?;
    Ok(pid)
}

/// Runs the plan's payload inside a live instance: a child (not dumpable, so nothing in the
/// container can trace it or read its memory before it execs) joins the namespaces and the
/// root, forks into the PID namespace where the instance has one, and runs the same last
/// steps as a container start (working directory, no_new_privs, capabilities, seccomp,
/// execve). sifr relays signals and reports how the command ended.
pub fn join<S: Sys>(plan: &Plan, sys: &S, target: JoinTarget) -> Result<Outcome, LaunchError> {
    let relay_terminal = must_relay_terminal_signals();
    // SAFETY: SIG_IGN installs no handler code.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    let mask = relay_mask();
    let mut old_mask = SigSet::empty();
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), Some(&mut old_mask))
        .map_err(sys_err("block signals"))?;
    let errp = Pipe::new()?;
    let parent = getpid();
    // SAFETY: sifr is single-threaded here (it starts no thread before launching).
    match unsafe { fork() }.map_err(sys_err("fork the joining process"))? {
        ForkResult::Child => {
            drop(errp.r);
            if !security::die_with_parent(parent) {
                child_exit(255)
            }
            if let Err(e) = security::set_dumpable(false) {
                child_fail(&errp.w, &format!("cannot make sifr non-dumpable: {e}"));
            }
            let pid_ns = match join_namespaces(sys, &target) {
                Ok(p) => p,
                Err(msg) => child_fail(&errp.w, &msg),
            };
            drop(target);
            if let Err(msg) = enter_workdir(sys, plan) {
                child_fail(&errp.w, &msg);
            }
            let err = if pid_ns {
                fork_pid1(errp.w, (), "into the instance").0
            } else {
                errp.w
            };
            match exec_steps(sys, plan) {
                Err(msg) => child_fail(&err, &msg),
                Ok(()) => child_exit(255),
            }
        }
        ForkResult::Parent { child } => {
            drop(errp.w);
            drop(target);
            if let Err(e) = security::set_dumpable(false) {
                let _ = kill(child, Signal::SIGKILL);
                let _ = waitpid(child, None);
                return Err(LaunchError::Sys {
                    what: "make sifr non-dumpable",
                    err: e,
                });
            }
            let outcome = wait_relaying(child, relay_terminal);
            let _ = security::set_dumpable(true);
            let failure = read_failure(&errp.r);
            let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old_mask), None);
            if let Some(line) = failure {
                return Err(LaunchError::Child(line));
            }
            outcome
        }
    }
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

#[cfg(test)]
mod tests {
    //! The sequence each process runs, driven against the recorder (fork and the pipes
    //! stay out: the step functions run directly).
    use super::*;
    use crate::launch::capabilities::CapMask;
    use crate::launch::plan::*;
    use crate::launch::rootfs::tests::{recorder, user};
    use crate::launch::sys::{Call, RecordingSys};
    use nix::mount::MsFlags;

    fn plan(namespaces: NamespacePlan, security: SecurityPlan) -> Plan {
        Plan {
            namespaces,
            security,
            mounts: vec![MountOp {
                source: MountSource::Host("/proc".into()),
                dest: "/proc".into(),
                target: TargetKind::Dir,
                readonly: false,
                recursive: true,
                allow_dev: false,
                optional: false,
                why: "/proc",
            }],
            ..crate::launch::plan::tests::minimal()
        }
    }

    fn normal() -> SecurityPlan {
        SecurityPlan {
            no_new_privs: true,
            caps: CapMask::default(),
            emulate_root: false,
            mknod_noop: false,
            profile: None,
            run_as: None,
        }
    }

    fn fakeroot() -> SecurityPlan {
        SecurityPlan {
            no_new_privs: true,
            caps: CapMask::all(),
            emulate_root: true,
            mknod_noop: false,
            profile: None,
            run_as: None,
        }
    }

    /// A recorder over an image directory holding /proc and /bin/sh (alive with the TempDir).
    fn image() -> (tempfile::TempDir, RecordingSys) {
        let (t, sys) = recorder(&["proc", "bin"]);
        std::fs::write(t.path().join("bin/sh"), b"").expect("write");
        (t, sys)
    }

    /// The index of the first call that matches.
    fn pos(calls: &[Call], what: &str, f: impl Fn(&Call) -> bool) -> usize {
        calls
            .iter()
            .position(f)
            .unwrap_or_else(|| panic!("no {what} in {calls:#?}"))
    }

    /// Runs the container process's steps (1 to 5) and returns the calls.
    fn container_calls(sys: &RecordingSys, plan: &Plan) -> Result<Vec<Call>, String> {
        container_mount_ns(sys)?;
        container_root(sys, plan, &Layout::default(), &user())?;
        exec_steps(sys, plan)?;
        Ok(sys.calls.borrow().clone())
    }

    #[test]
    fn test_mount_slave_no_makes_the_tree_private() {
        for (private, want) in [(false, MsFlags::MS_SLAVE), (true, MsFlags::MS_PRIVATE)] {
            let (_t, sys) = image();
            let ns = NamespacePlan {
                private_mounts: private,
                ..Default::default()
            };
            supervisor_namespaces(&sys, &plan(ns, normal())).expect("namespaces");
            let calls = sys.calls.borrow();
            let Call::Mount(m) = &calls[1] else {
                panic!("{:?}", calls[1])
            };
            assert_eq!(m.target, "/");
            assert_eq!(m.flags, MsFlags::MS_REC | want, "private_mounts {private}");
        }
    }

    #[test]
    fn test_supervisor_namespaces_then_session_in_order() {
        let (_t, sys) = image();
        let ns = NamespacePlan {
            ipc: true,
            uts: Some("box".into()),
            net: true,
            ..Default::default()
        };
        let p = plan(ns, normal());
        supervisor_namespaces(&sys, &p).expect("namespaces");
        let layout = enter_session(&sys, &p).expect("session");
        assert_eq!(layout.rootfs(), PathBuf::from("/rootfs"));
        let calls = sys.calls.borrow();
        let flags = CloneFlags::CLONE_NEWNS
            | CloneFlags::CLONE_NEWIPC
            | CloneFlags::CLONE_NEWUTS
            | CloneFlags::CLONE_NEWNET;
        assert_eq!(calls[0], Call::Unshare(flags));
        assert_eq!(calls[1], Call::SetHostname("box".into()));
        assert_eq!(calls[2], Call::LoopbackUp);
        let Call::Mount(slave) = &calls[3] else {
            panic!("{:?}", calls[3])
        };
        assert_eq!(slave.target, "/");
        assert_eq!(slave.flags, MsFlags::MS_REC | MsFlags::MS_SLAVE);
        let Call::Mount(session) = &calls[4] else {
            panic!("{:?}", calls[4])
        };
        assert_eq!(
            (session.target.as_str(), session.fstype.as_deref()),
            ("/tmp", Some("tmpfs"))
        );
        assert!(
            session
                .flags
                .contains(MsFlags::MS_NOSUID | MsFlags::MS_NODEV)
        );
        assert_eq!(session.data.as_deref(), Some("size=64m,mode=0755"));
        assert_eq!(
            calls[5..],
            [
                Call::MkdirAll("/tmp/oldroot".into(), 0o755),
                Call::PivotRoot("/tmp".into(), "/tmp/oldroot".into()),
                Call::Chdir("/".into()),
                Call::MkdirAll("/rootfs".into(), 0o755),
            ]
        );
    }

    /// With pasta the network namespace is created with the user namespace (so that sifr
    /// can start pasta on it before the supervisor goes on), not with the others.
    #[test]
    fn test_pasta_network_namespace_comes_with_the_user_namespace() {
        let (_t, sys) = image();
        let ns = NamespacePlan {
            net: true,
            ..Default::default()
        };
        let mut p = plan(ns, normal());
        p.pasta = Some(PastaPlan {
            binary: "/usr/bin/pasta".into(),
            args: vec![],
        });
        create_userns(&sys, &p, &|e| e.to_string()).expect("userns");
        supervisor_namespaces(&sys, &p).expect("namespaces");
        let calls = sys.calls.borrow();
        assert_eq!(
            calls[0],
            Call::Unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNET)
        );
        assert_eq!(calls[1], Call::Unshare(CloneFlags::CLONE_NEWNS));
        assert_eq!(calls[2], Call::LoopbackUp);
        drop(calls);
        // Without pasta: the user namespace alone first.
        let (_t, sys) = image();
        p.pasta = None;
        create_userns(&sys, &p, &|e| e.to_string()).expect("userns");
        assert_eq!(
            sys.calls.borrow()[0],
            Call::Unshare(CloneFlags::CLONE_NEWUSER)
        );
    }

    #[test]
    fn test_whole_launch_sequence_with_pid_namespace() {
        // Every step of C, D and E in the order the processes run them (forks aside).
        let (_t, sys) = image();
        let ns = NamespacePlan {
            pid: true,
            init: true,
            uts: Some("box".into()),
            ..Default::default()
        };
        let p = plan(ns, fakeroot());
        create_userns(&sys, &p, &|e| format!("no user namespace: {e}")).expect("userns");
        supervisor_namespaces(&sys, &p).expect("namespaces");
        let layout = enter_session(&sys, &p).expect("session");
        pid_namespace(&sys).expect("pid");
        container_mount_ns(&sys).expect("mount ns");
        container_root(&sys, &p, &layout, &user()).expect("root");
        exec_steps(&sys, &p).expect("exec");
        let calls = sys.calls.borrow();
        let unshares: Vec<_> = calls
            .iter()
            .enumerate()
            .filter_map(|(i, c)| match c {
                Call::Unshare(f) => Some((i, *f)),
                _ => None,
            })
            .collect();
        let flags: Vec<_> = unshares.iter().map(|(_, f)| *f).collect();
        assert_eq!(
            flags,
            [
                CloneFlags::CLONE_NEWUSER,
                CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS,
                CloneFlags::CLONE_NEWPID,
                CloneFlags::CLONE_NEWNS,
            ]
        );
        assert_eq!(unshares[0].0, 0, "the user namespace comes first");
        let sethostname = pos(&calls, "sethostname", |c| matches!(c, Call::SetHostname(_)));
        assert!(unshares[1].0 < sethostname && sethostname < unshares[2].0);
        // The session pivot happens in C, the container's in E after its own mount
        // namespace; execve is last, after no_new_privs and the filter.
        let pivots: Vec<_> = calls
            .iter()
            .enumerate()
            .filter(|(_, c)| matches!(c, Call::PivotRoot(..)))
            .map(|(i, _)| i)
            .collect();
        assert_eq!(pivots.len(), 2, "{calls:#?}");
        assert!(pivots[0] < unshares[2].0 && unshares[3].0 < pivots[1]);
        let nnp = pos(&calls, "no_new_privs", |c| *c == Call::NoNewPrivs);
        let filter = pos(&calls, "seccomp", |c| matches!(c, Call::Seccomp(_)));
        assert!(pivots[1] < nnp && nnp < filter && filter == calls.len() - 2);
        assert!(matches!(calls.last(), Some(Call::Execve(_))));
        // A refused user namespace is worded by the diagnosis.
        let (_t, mut sys) = image();
        sys.fail_steps = vec![Call::Unshare(CloneFlags::CLONE_NEWUSER)];
        let p = plan(NamespacePlan::default(), normal());
        let err =
            create_userns(&sys, &p, &|e| format!("no user namespace: {e}")).expect_err("fails");
        assert_eq!(err, "no user namespace: EPERM: Operation not permitted");
    }

    #[test]
    fn test_hostname_and_loopback_only_when_asked() {
        for (uts, net, flags) in [
            (None, false, CloneFlags::CLONE_NEWNS),
            // --uts without --hostname: a namespace, the host's name kept.
            (
                Some(String::new()),
                false,
                CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS,
            ),
            (
                None,
                true,
                CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWNET,
            ),
        ] {
            let (_t, sys) = image();
            let ns = NamespacePlan {
                uts,
                net,
                ..Default::default()
            };
            supervisor_namespaces(&sys, &plan(ns, normal())).expect("ok");
            let calls = sys.calls.borrow();
            assert_eq!(calls[0], Call::Unshare(flags));
            assert!(!calls.iter().any(|c| matches!(c, Call::SetHostname(_))));
            assert_eq!(calls.contains(&Call::LoopbackUp), net, "{calls:?}");
        }
    }

    #[test]
    fn test_container_process_sequence() {
        let (_t, sys) = image();
        let calls = container_calls(&sys, &plan(NamespacePlan::default(), normal())).expect("ok");
        // Its own mount namespace before any mount.
        assert_eq!(calls[0], Call::Unshare(CloneFlags::CLONE_NEWNS));
        let first_mount = pos(&calls, "mount", |c| matches!(c, Call::Mount(_)));
        let pivot = pos(&calls, "pivot_root", |c| matches!(c, Call::PivotRoot(..)));
        let detach = pos(&calls, "detach", |c| *c == Call::Umount(".".into()));
        let cwd = pos(&calls, "chdir /work", |c| *c == Call::Chdir("/work".into()));
        let umask = pos(&calls, "umask", |c| *c == Call::Umask(0o022));
        let signals = pos(&calls, "reset signals", |c| *c == Call::ResetSignals);
        let cloexec = pos(&calls, "cloexec", |c| *c == Call::CloexecFrom(3));
        let nnp = pos(&calls, "no_new_privs", |c| *c == Call::NoNewPrivs);
        let caps = pos(&calls, "caps", |c| {
            *c == Call::ApplyCaps(CapMask::default())
        });
        let exec = pos(&calls, "execve", |c| matches!(c, Call::Execve(_)));
        assert!(0 < first_mount && first_mount < pivot && pivot < detach && detach < cwd);
        assert!(cwd < umask && umask < signals && signals < cloexec && cloexec < nnp);
        assert!(nnp < caps && caps < exec);
        // execve is the last call, with the action script under /bin/sh.
        assert_eq!(exec, calls.len() - 1);
        let Call::Execve(e) = &calls[exec] else {
            unreachable!()
        };
        assert_eq!(e.path, PathBuf::from("/bin/sh"));
        assert_eq!(e.argv.last().map(String::as_str), Some("true"));
        // No root emulation for a normal run.
        assert!(!calls.iter().any(|c| matches!(c, Call::Seccomp(_))));
    }

    #[test]
    fn test_profile_installed_last_after_emulation_and_caps() {
        let filter = crate::launch::profile::ProfileFilter {
            origin: "/p.json".into(),
            program: vec![],
            flags: 0,
        };
        for security in [normal(), fakeroot()] {
            let security = SecurityPlan {
                profile: Some(filter.clone()),
                ..security
            };
            let fake = security.emulate_root;
            let (_t, sys) = image();
            let calls =
                container_calls(&sys, &plan(NamespacePlan::default(), security)).expect("ok");
            let nnp = pos(&calls, "no_new_privs", |c| *c == Call::NoNewPrivs);
            let profile = pos(&calls, "profile", |c| {
                *c == Call::SeccompProfile("/p.json".into())
            });
            // Right before execve, after every privilege change.
            assert_eq!(profile, calls.len() - 2, "{calls:#?}");
            assert!(nnp < profile);
            if fake {
                let em = pos(&calls, "emulation", |c| matches!(c, Call::Seccomp(_)));
                assert!(em < profile);
            }
            let caps = pos(&calls, "caps", |c| matches!(c, Call::ApplyCaps(_)));
            assert!(caps < profile);
        }
    }

    #[test]
    fn test_fakeroot_sets_caps_then_filters_after_no_new_privs() {
        let (_t, sys) = image();
        let calls = container_calls(&sys, &plan(NamespacePlan::default(), fakeroot())).expect("ok");
        let nnp = pos(&calls, "no_new_privs", |c| *c == Call::NoNewPrivs);
        let filter = pos(&calls, "seccomp", |c| {
            *c == Call::Seccomp(Emulation::RootMapped)
        });
        let exec = pos(&calls, "execve", |c| matches!(c, Call::Execve(_)));
        let caps = pos(&calls, "caps", |c| *c == Call::ApplyCaps(CapMask::all()));
        assert!(nnp < caps && caps < filter && filter < exec);
        let sub = SecurityPlan {
            emulate_root: false,
            mknod_noop: true,
            profile: None,
            ..fakeroot()
        };
        let (_t, sys) = image();
        let calls = container_calls(&sys, &plan(NamespacePlan::default(), sub)).expect("ok");
        assert!(calls.contains(&Call::Seccomp(Emulation::MknodOnly)));
    }

    /// `--security uid:/gid:`: the ids change after no_new_privs and before the capability
    /// step (which needs the permitted set kept across the change).
    #[test]
    fn test_run_as_switches_ids_before_capabilities() {
        let ids = crate::launch::plan::RunAs {
            uid: Some(99),
            gids: vec![98],
        };
        let security = SecurityPlan {
            run_as: Some(ids.clone()),
            caps: CapMask::default(),
            ..fakeroot()
        };
        let (_t, sys) = image();
        let calls = container_calls(&sys, &plan(NamespacePlan::default(), security)).expect("ok");
        let nnp = pos(&calls, "no_new_privs", |c| *c == Call::NoNewPrivs);
        let set = pos(&calls, "set ids", |c| *c == Call::SetIds(ids.clone()));
        let caps = pos(&calls, "caps", |c| {
            *c == Call::ApplyCaps(CapMask::default())
        });
        assert!(nnp < set && set < caps, "{calls:#?}");
        let (_t, sys) = image();
        let calls = container_calls(&sys, &plan(NamespacePlan::default(), fakeroot())).expect("ok");
        assert!(!calls.iter().any(|c| matches!(c, Call::SetIds(_))));
    }

    #[test]
    fn test_a_failed_step_stops_before_execve() {
        for (step, want) in [
            (Call::NoNewPrivs, "cannot set no_new_privs: "),
            (
                Call::ApplyCaps(CapMask::default()),
                "cannot set capabilities: ",
            ),
            (Call::ResetSignals, "cannot reset signals: "),
            (
                Call::Unshare(CloneFlags::CLONE_NEWNS),
                "cannot create the container mount namespace: EPERM: Operation not permitted",
            ),
            (
                Call::PivotRoot(".".into(), ".".into()),
                "cannot enter the container root (pivot_root)",
            ),
        ] {
            let (_t, mut sys) = image();
            sys.fail_steps = vec![step.clone()];
            let err = container_calls(&sys, &plan(NamespacePlan::default(), normal()))
                .expect_err("fails");
            assert!(err.starts_with(want), "{step:?}: {err}");
            assert!(
                !sys.calls
                    .borrow()
                    .iter()
                    .any(|c| matches!(c, Call::Execve(_))),
                "{step:?}"
            );
        }
        // The failure of execve itself names the command, in nix's words.
        let (_t, mut sys) = image();
        sys.fail_steps = vec![Call::Execve(action::with_shell(
            &plan(NamespacePlan::default(), normal()).process,
        ))];
        let err =
            container_calls(&sys, &plan(NamespacePlan::default(), normal())).expect_err("fails");
        assert_eq!(
            err,
            "cannot execute /bin/sh: EPERM: Operation not permitted"
        );
    }

    #[test]
    fn test_working_directory_fallbacks() {
        // The caller's directory is missing: home, then /.
        let (_t, mut sys) = image();
        sys.fail_steps = vec![Call::Chdir("/work".into()), Call::Chdir("/home/u".into())];
        let p = plan(NamespacePlan::default(), normal());
        container_root(&sys, &p, &Layout::default(), &user()).expect("ok");
        let calls = sys.calls.borrow();
        let n = calls.len();
        assert_eq!(
            calls[n - 3..],
            [
                Call::Chdir("/work".into()),
                Call::Chdir("/home/u".into()),
                Call::Chdir("/".into()),
            ]
        );
        // --pwd must exist.
        let (_t, mut sys) = image();
        sys.fail_steps = vec![Call::Chdir("/work".into())];
        let mut p = plan(NamespacePlan::default(), normal());
        p.process.cwd_required = true;
        let err = container_root(&sys, &p, &Layout::default(), &user()).expect_err("fails");
        assert_eq!(
            err,
            "cannot change to the working directory /work in the container"
        );
    }

    #[test]
    fn test_kept_mount_joins_only_the_holders_user_namespace() {
        let (_dir, sys) = recorder(&[]);
        let f = std::fs::File::open("/dev/null").expect("open /dev/null");
        let k = KeptJoin {
            userns: f.as_raw_fd(),
        };
        assert_eq!(join_kept(&sys, k), Ok(()));
        // Only the user namespace: the run's mounts are a copy of its caller's.
        assert_eq!(
            *sys.calls.borrow(),
            vec![Call::Setns(CloneFlags::CLONE_NEWUSER)]
        );
        let (_dir, mut sys) = recorder(&[]);
        sys.fail_steps = vec![Call::Setns(CloneFlags::CLONE_NEWUSER)];
        let err = join_kept(&sys, k).expect_err("fails");
        assert!(
            err.starts_with("cannot join the kept mount's user namespace"),
            "{err}"
        );
    }

    #[test]
    fn test_join_enters_the_user_namespace_first_and_the_root_last() {
        let (_dir, sys) = recorder(&[]);
        let fd = |_: ()| {
            std::fs::File::open("/dev/null")
                .map(OwnedFd::from)
                .expect("open /dev/null")
        };
        let target = JoinTarget {
            namespaces: vec![
                (CloneFlags::CLONE_NEWUSER, fd(())),
                (CloneFlags::CLONE_NEWPID, fd(())),
                (CloneFlags::CLONE_NEWNS, fd(())),
            ],
            root: fd(()),
        };
        assert_eq!(join_namespaces(&sys, &target), Ok(true));
        assert_eq!(
            *sys.calls.borrow(),
            vec![
                Call::Setns(CloneFlags::CLONE_NEWUSER),
                Call::Setns(CloneFlags::CLONE_NEWPID),
                Call::Setns(CloneFlags::CLONE_NEWNS),
                Call::EnterRoot,
            ]
        );
        // Without a PID namespace to join, the joining process execs itself.
        let (_dir, sys) = recorder(&[]);
        let target = JoinTarget {
            namespaces: vec![(CloneFlags::CLONE_NEWNS, fd(()))],
            root: fd(()),
        };
        assert_eq!(join_namespaces(&sys, &target), Ok(false));
    }
}
