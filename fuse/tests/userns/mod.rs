//! Running a test body in a forked child inside new user+mount namespaces (no root, no
//! fusermount), as the FUSE mount tests need, and what ownership looks like from inside.
//! Without /dev/fuse or user namespaces the tests print SKIP, unless SIFR_CI=1 (then fail).

use std::io::Write;
use std::time::{Duration, Instant};

use crate::common::Snapshot;

/// Exit code of the child meaning "user namespaces are not available here".
pub const SKIP_CODE: i32 = 77;

pub fn skip_or_fail(why: &str) {
    if std::env::var("SIFR_CI").as_deref() == Ok("1") {
        panic!("SIFR_CI=1 but {why}");
    }
    eprintln!("SKIP: {why}");
}

pub fn write_file(path: &str, data: &str) -> Result<(), String> {
    std::fs::write(path, data).map_err(|e| format!("write {path}: {e}"))
}

/// Runs `body` in a forked child inside new user+mount namespaces, `/` made rprivate, with our
/// uid/gid mapped to `ns_id` (0: "fakeroot", as for root-owned images; or our own id).
/// Returns false when the test was skipped.
pub fn in_userns(ns_id: Option<u32>, body: impl FnOnce() -> Result<(), String>) -> bool {
    if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
    {
        skip_or_fail(&format!("cannot open /dev/fuse: {e}"));
        return false;
    }
    let (uid, gid) = (
        nix::unistd::getuid().as_raw(),
        nix::unistd::getgid().as_raw(),
    );
    // SAFETY: fork has no preconditions; the child only runs the test body and _exits.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        // Messages go straight to fd 2: libtest's output capture does not reach this process.
        std::panic::set_hook(Box::new(|info| {
            let _ = writeln!(std::io::stderr(), "child panicked: {info}");
        }));
        use nix::sched::{CloneFlags, unshare};
        if let Err(e) = unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS) {
            let _ = writeln!(std::io::stderr(), "unshare(CLONE_NEWUSER|CLONE_NEWNS): {e}");
            // SAFETY: _exit is always safe to call.
            unsafe { libc::_exit(SKIP_CODE) };
        }
        let setup = || -> Result<(), String> {
            // setgroups must be denied before an unprivileged process may write gid_map.
            write_file("/proc/self/setgroups", "deny")?;
            let (iu, ig) = ns_id.map_or((uid, gid), |i| (i, i));
            write_file("/proc/self/uid_map", &format!("{iu} {uid} 1"))?;
            write_file("/proc/self/gid_map", &format!("{ig} {gid} 1"))?;
            use nix::mount::{MsFlags, mount};
            mount(
                None::<&str>,
                "/",
                None::<&str>,
                MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                None::<&str>,
            )
            .map_err(|e| format!("make / rprivate: {e}"))
        };
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            setup().and_then(|()| body())
        }));
        let code = match r {
            Ok(Ok(())) => 0,
            Ok(Err(msg)) => {
                let _ = writeln!(std::io::stderr(), "child failed: {msg}");
                1
            }
            Err(_) => 2,
        };
        // SAFETY: _exit is always safe to call; skips the parent's atexit handlers.
        unsafe { libc::_exit(code) };
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut status = 0;
    loop {
        // SAFETY: status is a valid out-pointer; pid is our child.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            break;
        }
        assert!(r == 0, "waitpid: {}", std::io::Error::last_os_error());
        if Instant::now() > deadline {
            // SAFETY: pid is our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("the namespace child hung for 300 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        libc::WIFEXITED(status),
        "child died by signal {}",
        libc::WTERMSIG(status)
    );
    match libc::WEXITSTATUS(status) {
        0 => true,
        SKIP_CODE => {
            skip_or_fail("cannot create a user namespace (unshare failed)");
            false
        }
        c => panic!("namespace child failed with exit code {c} (its stderr is above)"),
    }
}

pub fn ensure(cond: bool, msg: impl FnOnce() -> String) -> Result<(), String> {
    if cond { Ok(()) } else { Err(msg()) }
}

/// In the namespace only one uid/gid (`ns_id`, or our own) is mapped; others show as the
/// overflow ids.
pub fn as_seen_in_userns(mut s: Snapshot, ns_id: Option<u32>) -> Snapshot {
    let (uid, gid) = ns_id.map_or(
        (
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        ),
        |i| (i, i),
    );
    let overflow = |p: &str| {
        std::fs::read_to_string(p)
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(65534)
    };
    let (ou, og) = (
        overflow("/proc/sys/kernel/overflowuid"),
        overflow("/proc/sys/kernel/overflowgid"),
    );
    for n in s.values_mut() {
        if n.uid != uid {
            n.uid = ou;
        }
        if n.gid != gid {
            n.gid = og;
        }
    }
    s
}
