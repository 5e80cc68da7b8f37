//! The build's processes: a worker that does the build under the `sifr build` the user
//! started, the children it runs (`%post` containers, host commands) tied to it, and
//! stopping every process the build started when it is interrupted or killed.
//!
//! `sifr build` (the process the user sees) forks a worker and waits for it, passing
//! SIGINT/SIGTERM/SIGHUP on. The worker has PR_SET_PDEATHSIG(SIGTERM): when `sifr build`
//! is killed (even with SIGKILL, which no process can catch) the worker is interrupted and
//! cleans up as on Ctrl-C: it stops what runs, removes its temporary output and build
//! directory, and exits. The worker is a child subreaper, so every process the build
//! started stays its descendant (orphans are reparented to it, not to init), and the
//! worker can find and kill them all; its own children get PR_SET_PDEATHSIG(SIGKILL).

use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use super::workdir;

/// The worker's pid, for the signal forwarder of `sifr build` (0 before the fork).
static WORKER: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward(sig: libc::c_int) {
    workdir::note_interrupt(sig);
    let pid = WORKER.load(Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: kill(2) is async-signal-safe; pid is our unreaped child.
        unsafe { libc::kill(pid, sig) };
    }
}

/// Where the caller of `start_worker` is.
pub enum Role {
    /// The worker: do the build, then return from `sifr build` as usual.
    Worker,
    /// `sifr build` itself, after the worker ended: exit with this code.
    Done(i32),
}

/// Forks the build worker and, in the parent, waits for it. Must be called while the
/// process is single-threaded.
pub fn start_worker() -> std::io::Result<Role> {
    let parent = std::process::id() as i32;
    for sig in workdir::INTERRUPT_SIGNALS {
        // SAFETY: the handler only touches atomics and calls write(2)/kill(2).
        unsafe { libc::signal(sig, forward as *const () as libc::sighandler_t) };
    }
    // SAFETY: fork in a single-threaded process (the caller's contract); the child only
    // continues the build.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if pid == 0 {
        workdir::catch_interrupts();
        // SAFETY: prctl calls with integer arguments; they change only this process.
        let tied = unsafe {
            libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGTERM as libc::c_ulong,
                0,
                0,
                0,
            ) == 0
                && libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong, 0, 0, 0) == 0
        };
        // SAFETY: getppid cannot fail.
        if !tied || unsafe { libc::getppid() } != parent {
            // `sifr build` is already gone (or cannot be watched): stop at once.
            workdir::note_interrupt(libc::SIGTERM);
        }
        return Ok(Role::Worker);
    }
    WORKER.store(pid, Ordering::SeqCst);
    // A signal that came before the worker existed.
    if let Some(sig) = workdir::interrupt_signal() {
        // SAFETY: kill(2) on our child.
        unsafe { libc::kill(pid, sig) };
    }
    let mut status = 0;
    loop {
        // SAFETY: waitpid on our child with a valid status pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            break;
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    WORKER.store(0, Ordering::SeqCst);
    if libc::WIFEXITED(status) {
        return Ok(Role::Done(libc::WEXITSTATUS(status)));
    }
    let sig = libc::WTERMSIG(status);
    log::error!("the build worker was killed by signal {sig}");
    Ok(Role::Done(128 + sig))
}

/// Ties a child to be spawned from `cmd` to this process: it gets SIGKILL when this
/// process ends (and is not started at all when it already has).
pub fn tie_to_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id() as i32;
    // SAFETY: prctl and getppid are async-signal-safe and touch no memory of the parent.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                return Err(std::io::Error::other("sifr build ended"));
            }
            Ok(())
        });
    }
}

/// Waits for `child`; when the build is interrupted first, kills it and everything it
/// started and returns None. Processes the child left running (daemons started by a
/// `%post`) are stopped either way: nothing of a build outlives it.
pub fn wait_child(mut child: Child) -> std::io::Result<Option<ExitStatus>> {
    loop {
        if let Some(st) = child.try_wait()? {
            stop_descendants();
            return Ok(Some(st));
        }
        if workdir::wait_interrupt(50) {
            stop_descendants();
            let _ = child.wait();
            return Ok(None);
        }
    }
}

/// The pids of the live descendants of `root`, from /proc.
fn descendants(root: i32) -> Vec<i32> {
    let mut parent_of: Vec<(i32, i32)> = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    for e in rd.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // Fields after the parenthesised command: state ppid ...
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let mut f = rest.split_whitespace();
        let state = f.next().unwrap_or("");
        let Some(ppid) = f.next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        if state != "Z" && state != "X" {
            parent_of.push((pid, ppid));
        }
    }
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let p = found[i];
        found.extend(parent_of.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    found.remove(0);
    found
}

/// Kills every descendant of this process (it is a subreaper: they cannot escape to init)
/// and reaps them. They are stopped first, until no new one appears, so none can fork
/// past the kill. Call only when no child is being waited for elsewhere.
pub fn stop_descendants() {
    // SAFETY: getpid cannot fail.
    let me = unsafe { libc::getpid() };
    let mut stopped: Vec<i32> = Vec::new();
    for _ in 0..100 {
        let new: Vec<i32> = descendants(me)
            .into_iter()
            .filter(|p| !stopped.contains(p))
            .collect();
        if new.is_empty() {
            break;
        }
        for p in new {
            // SAFETY: kill(2) on a descendant of this process.
            unsafe { libc::kill(p, libc::SIGSTOP) };
            stopped.push(p);
        }
    }
    for &p in &stopped {
        // SAFETY: kill(2) on a (stopped) descendant of this process.
        unsafe { libc::kill(p, libc::SIGKILL) };
    }
    if !stopped.is_empty() {
        log::debug!("stopped {} processes left by the build", stopped.len());
    }
    reap(Duration::from_secs(5));
}

/// Reaps ended children (orphans reparented to this subreaper), waiting up to `limit` for
/// the killed ones.
fn reap(limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let mut status = 0;
        // SAFETY: waitpid for any child, without blocking, into a valid status pointer.
        let r = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG | libc::__WALL) };
        if r > 0 {
            continue;
        }
        if r < 0 || Instant::now() >= deadline {
            // ECHILD: none left.
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
