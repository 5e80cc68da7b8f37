//! Real user namespaces: a forked child unshares CLONE_NEWUSER and waits on a pipe, the
//! parent applies a plan with `write_maps`, and the child reports the ids the kernel gives
//! it. Covers the single map, the root-mapped map (both written directly to /proc) and the
//! subordinate-id map (written by newuidmap/newgidmap), plus a helper refusal.
//!
//! Must run as an unprivileged user with a 65536-id range in /etc/subuid and /etc/subgid.
//! Run as root, the test re-runs itself as `$SIFR_TEST_USER` (default `sifrtest`, the user
//! ci/setup-host creates). When that is not possible it prints `SKIP:` with the reason,
//! except with `SIFR_CI=1`, where it fails.

use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::Command;

use sifr_idmap::{
    FakerootMode, FakerootRequest, IdMaps, MapError, Pid, diagnose_userns, plan_fakeroot,
    write_maps,
};

const TEST_NAME: &str = "test_write_maps_in_real_user_namespace";

fn in_ci() -> bool {
    std::env::var_os("SIFR_CI").is_some_and(|v| v == "1")
}

/// Skips (outside CI) or fails (in CI) with `reason`.
fn skip(reason: &str) {
    if in_ci() {
        panic!("cannot run the user-namespace test in CI: {reason}");
    }
    // Straight to fd 2: libtest captures eprintln! of passing tests, and a skip must show.
    let _ = std::io::Write::write_all(
        &mut std::io::stderr(),
        format!("SKIP: {TEST_NAME}: {reason}\n").as_bytes(),
    );
}

/// What the child saw after the maps were written.
#[derive(Debug, PartialEq, Eq)]
struct Report {
    uid: u32,
    gid: u32,
    /// 0 when setresgid(1,1,1) then setresuid(1,1,1) worked, else the errno.
    switch_to_id_1: i32,
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid array of two ints for pipe2 to fill.
    let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(r, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: pipe2 succeeded, so both fds are open and owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// The child: only async-signal-safe calls, since the test harness has other threads.
/// `parent_ends` are the parent's pipe ends, closed here so that the parent closing its
/// end of `go` gives this child EOF.
fn child_main(ready_w: i32, go_r: i32, result_w: i32, parent_ends: [i32; 3]) -> ! {
    // SAFETY: raw syscalls on fds this process owns, then _exit; no allocation or locks.
    unsafe {
        for fd in parent_ends {
            libc::close(fd);
        }
        // Never outlive a stuck test: SIGALRM's default action ends the child.
        libc::alarm(60);
        if libc::unshare(libc::CLONE_NEWUSER) != 0 {
            libc::_exit(2);
        }
        let one = 1u8;
        libc::write(ready_w, (&one as *const u8).cast(), 1);
        let mut b = 0u8;
        if libc::read(go_r, (&mut b as *mut u8).cast(), 1) != 1 {
            libc::_exit(3);
        }
        let uid = libc::getuid();
        let gid = libc::getgid();
        let mut switch = 0i32;
        if libc::setresgid(1, 1, 1) != 0 || libc::setresuid(1, 1, 1) != 0 {
            switch = *libc::__errno_location();
        }
        let out: [u32; 3] = [uid, gid, switch as u32];
        libc::write(result_w, out.as_ptr().cast(), std::mem::size_of_val(&out));
        libc::_exit(0);
    }
}

/// Forks a child into a new user namespace, applies `maps` to it and returns its report.
fn run_case(maps: &impl AsRef<IdMaps>) -> Result<Report, MapError> {
    let (ready_r, ready_w) = pipe();
    let (go_r, go_w) = pipe();
    let (result_r, result_w) = pipe();
    // SAFETY: the child runs only async-signal-safe code (child_main) and never returns.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        child_main(
            ready_w.as_raw_fd(),
            go_r.as_raw_fd(),
            result_w.as_raw_fd(),
            [ready_r.as_raw_fd(), go_w.as_raw_fd(), result_r.as_raw_fd()],
        );
    }
    drop((ready_w, go_r, result_w));
    let wait = || {
        let mut status = 0;
        // SAFETY: pid is our child; status is a valid out-pointer.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        status
    };
    let mut ready = std::fs::File::from(ready_r);
    let mut b = [0u8; 1];
    if ready.read_exact(&mut b).is_err() {
        let status = wait();
        panic!(
            "child could not unshare its user namespace (wait status {status:#x}); {}",
            diagnose_userns()
        );
    }
    let written = write_maps(Pid::from_raw(pid), maps);
    if let Err(e) = written {
        drop(go_w); // the child reads EOF and exits
        wait();
        return Err(e);
    }
    let mut go = std::fs::File::from(go_w);
    std::io::Write::write_all(&mut go, &[1]).expect("signal child");
    let mut buf = [0u8; 12];
    std::fs::File::from(result_r)
        .read_exact(&mut buf)
        .expect("child report");
    let status = wait();
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child status {status:#x}"
    );
    let word = |i: usize| u32::from_ne_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]);
    Ok(Report {
        uid: word(0),
        gid: word(4),
        switch_to_id_1: word(8) as i32,
    })
}

/// As root: re-runs this test as the unprivileged test user from a copy of this binary
/// that user can read.
fn rerun_as_test_user() {
    let name = std::env::var("SIFR_TEST_USER").unwrap_or_else(|_| "sifrtest".to_owned());
    let user = match nix::unistd::User::from_name(&name) {
        Ok(Some(u)) => u,
        _ => {
            return skip(&format!(
                "running as root and test user {name:?} does not exist; create it with a 65536-id range in /etc/subuid and /etc/subgid (ci/setup-host does), or run the test as such a user"
            ));
        }
    };
    let dir = tempfile::Builder::new()
        .prefix("sifr-idmap-test-")
        .tempdir()
        .expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let exe = dir.path().join("userns_maps");
    std::fs::copy(std::env::current_exe().expect("current exe"), &exe).expect("copy test binary");
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let out = Command::new(&exe)
        .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
        .uid(user.uid.as_raw())
        .gid(user.gid.as_raw())
        .current_dir(dir.path())
        .output()
        .expect("run the test as the test user");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("--- as {name}:\n{stdout}{stderr}");
    assert!(out.status.success(), "the test failed as {name}");
    assert!(
        stdout.contains("1 passed"),
        "the test did not run as {name}"
    );
}

#[test]
fn test_write_maps_in_real_user_namespace() {
    if nix::unistd::geteuid().is_root() {
        return rerun_as_test_user();
    }
    let diag = diagnose_userns();
    if diag.is_blocked() {
        return skip(&format!(
            "unprivileged user namespaces are disabled: {diag}"
        ));
    }
    let req = FakerootRequest::for_current_process();
    let (uid, gid) = (req.caller_uid, req.caller_gid);
    let plan = plan_fakeroot(&req);
    if let FakerootMode::RootMapped { reason } = &plan.mode {
        return skip(&format!(
            "this user ({}) cannot use the subid mode: {reason}",
            req.user
        ));
    }

    // Single map, written directly: the child is itself.
    let r = run_case(&IdMaps::single(uid, gid)).expect("single map");
    assert_eq!((r.uid, r.gid), (uid, gid));
    assert_eq!(r.switch_to_id_1, libc::EINVAL, "id 1 is not mapped");

    // Root-mapped, written directly: the child is 0 and nothing else exists.
    let r = run_case(&IdMaps::root_mapped(uid, gid)).expect("root-mapped map");
    assert_eq!((r.uid, r.gid), (0, 0));
    assert_eq!(r.switch_to_id_1, libc::EINVAL, "id 1 is not mapped");

    // Subordinate ids through newuidmap/newgidmap: the child is 0 and can become 1.
    let r = run_case(&plan).expect("subid map");
    assert_eq!((r.uid, r.gid), (0, 0));
    assert_eq!(
        r.switch_to_id_1, 0,
        "id 1 is mapped to the subordinate range"
    );

    // A range that is not ours: newuidmap refuses, and its message is in the error.
    let FakerootMode::Subid { subuid, subgid } = &plan.mode else {
        unreachable!("checked above");
    };
    let not_ours = if subuid.start > 1_000_000_000 {
        100_000
    } else {
        3_000_000_000
    };
    let bad = IdMaps::subid(uid, gid, not_ours, subgid.start);
    let err = run_case(&bad).expect_err("helper must refuse");
    let msg = err.to_string();
    assert!(matches!(err, MapError::HelperFailed { .. }), "{msg}");
    assert!(msg.contains("newuidmap"), "{msg}");
    assert!(msg.contains("not allowed"), "{msg}");
    assert!(msg.contains("/etc/subuid"), "{msg}");
    eprintln!("helper refusal as reported: {msg}");
}
