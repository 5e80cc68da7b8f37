//! Starting pasta for the container's network namespace (`--network pasta`), and stopping it.
//!
//! sifr (P) starts it once the supervisor's user and network namespaces exist and their id
//! maps are written, before the supervisor goes on: pasta joins them by the supervisor's
//! PID, configures the interface, and writes its pid file when it is ready; only then does
//! the container start. pasta does not end when the namespace's processes do, and it resets
//! the parent-death signal, so a small watcher process (W, forked from P) owns it: W waits on
//! a pipe only P holds open; when P closes it (the container ended) or dies (even by
//! SIGKILL), W stops pasta, reaps it and exits. pasta runs in a process group of its own,
//! so the terminal's ^C for the payload does not cut the container's network.
//!
//! ```text
//! sifr (P) ── watcher (W) ── pasta --foreground ... --pid FILE <supervisor PID>
//! ```

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, Pid, fork};

use super::plan::PastaPlan;

/// How long pasta may take to set the namespace up.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// A running pasta, through its watcher; [`Pasta::stop`] (or dropping it) ends both.
pub struct Pasta {
    watcher: Pid,
    /// The write end of the pipe W waits on; closing it tells W to stop pasta.
    life: Option<OwnedFd>,
}

impl Pasta {
    /// Stops pasta and waits until it has ended.
    pub fn stop(mut self) {
        self.end();
    }

    fn end(&mut self) {
        if let Some(fd) = self.life.take() {
            drop(fd);
            // The caller's reaper may have collected W already (ECHILD then).
            let _ = waitpid(self.watcher, None);
        }
    }
}

impl Drop for Pasta {
    fn drop(&mut self) {
        self.end();
    }
}

/// Starts pasta for the namespaces of process `target` and returns once it is ready, or
/// with its error as one line. Must be called while the caller is single-threaded (it
/// forks).
pub fn start(plan: &PastaPlan, target: Pid) -> Result<Pasta, String> {
    let pipe = || {
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| format!("cannot start pasta: cannot create a pipe: {e}"))
    };
    let (life_r, life_w) = pipe()?;
    let (report_r, report_w) = pipe()?;
    // SAFETY: the caller is single-threaded (sifr's P before the container runs), so the
    // child may run arbitrary code; it never returns into the caller's code (_exit).
    match unsafe { fork() }.map_err(|e| format!("cannot start pasta: fork: {e}"))? {
        ForkResult::Child => {
            drop((life_w, report_r));
            let code = watcher(plan, target, life_r, report_w);
            // SAFETY: _exit ends this forked copy without running the parent's exit code.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            drop((life_r, report_w));
            let mut pasta = Pasta {
                watcher: child,
                life: Some(life_w),
            };
            let mut line = String::new();
            let _ = std::fs::File::from(report_r).read_to_string(&mut line);
            match line.trim_end() {
                "ready" => Ok(pasta),
                failure => {
                    pasta.end();
                    Err(if failure.is_empty() {
                        "cannot start pasta: its watcher ended without a word".to_string()
                    } else {
                        failure.to_string()
                    })
                }
            }
        }
    }
}

/// W: keeps only its two pipes, starts pasta, reports readiness (or the failure) on
/// `report`, then waits for `life` to hang up and stops pasta. Returns the exit code.
fn watcher(plan: &PastaPlan, target: Pid, life: OwnedFd, report: OwnedFd) -> i32 {
    // Keep no descriptor of sifr's (pipes to the supervisor, the image) in W or pasta.
    let (a, b) = {
        let (x, y) = (life.as_raw_fd() as u32, report.as_raw_fd() as u32);
        (x.min(y), x.max(y))
    };
    for (first, last) in [(3, a.wrapping_sub(1)), (a + 1, b - 1), (b + 1, u32::MAX)] {
        let first = first.max(3);
        if first <= last {
            // SAFETY: closes descriptors of this forked process that nothing in it uses.
            unsafe { libc::close_range(first, last, 0) };
        }
    }
    let mut report = std::fs::File::from(report);
    let (mut child, dir) = match spawn_ready(plan, target, &life) {
        Ok(started) => started,
        Err(msg) => {
            let _ = writeln!(report, "{msg}");
            return 1;
        }
    };
    if writeln!(report, "ready").is_err() {
        end(&mut child);
        return 1;
    }
    drop(report);
    // Wait for P: it closes the pipe when the container has ended, or dies.
    while !hung_up(&life, -1) {}
    end(&mut child);
    drop(dir);
    0
}

/// Starts pasta with a pid file in a private directory and waits until it has written it.
fn spawn_ready(
    plan: &PastaPlan,
    target: Pid,
    life: &OwnedFd,
) -> Result<(Child, tempfile::TempDir), String> {
    let fail = |what: &str, e: &dyn std::fmt::Display| format!("cannot start pasta: {what}: {e}");
    let dir = tempfile::Builder::new()
        .prefix("sifr-pasta-")
        .tempdir()
        .map_err(|e| fail("cannot create its directory", &e))?;
    let pid_file = dir.path().join("pid");
    let log = dir.path().join("log");
    let stderr = std::fs::File::create(&log).map_err(|e| fail("cannot create its log", &e))?;
    let mut child = Command::new(&plan.binary)
        .args(&plan.args)
        .arg("--pid")
        .arg(&pid_file)
        .arg(target.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .process_group(0)
        .spawn()
        .map_err(|e| fail(&plan.binary.display().to_string(), &e))?;
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if std::fs::metadata(&pid_file).is_ok_and(|m| m.len() > 0) {
            return Ok((child, dir));
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "pasta could not connect the container's network ({}): {}",
                status,
                last_error(&log)
            ));
        }
        if Instant::now() > deadline {
            end(&mut child);
            return Err(format!(
                "pasta did not get ready within {} s: {}",
                READY_TIMEOUT.as_secs(),
                last_error(&log)
            ));
        }
        // Wait a little, or less when sifr is gone.
        if hung_up(life, 10) {
            end(&mut child);
            return Err("sifr ended while pasta was starting".into());
        }
    }
}

/// Waits up to `timeout_ms` (-1: without limit) for `life` to hang up or become readable
/// (P never writes to it: either means P closed it or died), or poll to fail. False on a
/// timeout or EINTR.
fn hung_up(life: &OwnedFd, timeout_ms: i32) -> bool {
    let mut fd = libc::pollfd {
        fd: life.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, for a descriptor this process owns.
    let n = unsafe { libc::poll(&mut fd, 1, timeout_ms) };
    n > 0 || (n < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR))
}

/// pasta's last message in `log`, on one line (its complaints about a missing syslog left
/// out).
fn last_error(log: &std::path::Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty() && !l.contains("to syslog"))
        .unwrap_or("no message")
        .to_string()
}

/// Stops pasta: SIGTERM, then SIGKILL after a second; reaps it.
fn end(child: &mut Child) {
    let pid = Pid::from_raw(child.id() as i32);
    let _ = kill(pid, Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_last_error_skips_syslog_noise() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("log");
        std::fs::write(
            &log,
            "Failed to send 51 bytes to syslog\nFailed to open tun socket in namespace\n\
             Failed to send 40 bytes to syslog\n",
        )
        .expect("write");
        assert_eq!(last_error(&log), "Failed to open tun socket in namespace");
        assert_eq!(last_error(&dir.path().join("none")), "no message");
    }
}
