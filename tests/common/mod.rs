//! Shared helpers for the integration tests: where the sifr binary, the fixtures and the
//! reference tools are, and the rule that container tests never run as root.
//!
//! CI builds the test binaries as root, stages them with the sifr binary and the fixtures
//! in a directory the unprivileged test user can read, and runs them as that user. So
//! nothing here may rely on the source tree being readable: every location can be given
//! by an environment variable, with the in-tree location as the default for developers.
//!
//! - `SIFR_BIN`: the sifr binary (default: the one cargo built for this test).
//! - `SIFR_TESTDATA`: the shared fixtures directory (default: `../shared/testdata`).
//! - `SIF_ORACLE`: the reference SIF tool (default: `sif-oracle` on PATH).
//! - `SIFR_CI=1`: a missing tool is a failure, not a skip.

#![allow(dead_code)]

pub mod oci;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The sifr binary under test.
pub fn sifr_bin() -> PathBuf {
    match std::env::var_os("SIFR_BIN") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_BIN_EXE_sifr")),
    }
}

/// The shared fixtures directory (`testdata/` of the shared tree).
pub fn testdata() -> PathBuf {
    match std::env::var_os("SIFR_TESTDATA") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/testdata"),
    }
}

/// A file under `testdata/sif/`.
pub fn sif_fixture(name: &str) -> PathBuf {
    testdata().join("sif").join(name)
}

/// True when running in CI, where missing tools are failures.
pub fn in_ci() -> bool {
    std::env::var_os("SIFR_CI").is_some_and(|v| v == "1")
}

/// Finds an executable by name on PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The reference SIF implementation, or `None` (with a visible reason) outside CI.
/// In CI (`SIFR_CI=1`) a missing oracle fails the test.
pub fn oracle() -> Option<PathBuf> {
    let found = std::env::var_os("SIF_ORACLE")
        .map(PathBuf::from)
        .or_else(|| which("sif-oracle"));
    match found {
        Some(p) => Some(p),
        None if in_ci() => panic!("sif-oracle not found (set SIF_ORACLE); CI requires it"),
        None => {
            eprintln!("SKIP: sif-oracle not found (build it with ../shared/oracle/build.sh)");
            None
        }
    }
}

/// Container tests prove nothing as root: refuse to run as uid 0.
pub fn require_unprivileged() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_ne!(
        euid, 0,
        "container tests must run as an unprivileged user, not root (see ci/test)"
    );
}

/// A fresh temporary directory, removed on drop.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("sifr-test-")
        .tempdir()
        .expect("create a temporary directory")
}

/// Runs sifr with `args` and returns its output.
pub fn sifr<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    Command::new(sifr_bin())
        .args(args)
        .output()
        .expect("run sifr")
}

/// Runs an arbitrary command and returns its output.
pub fn run<I, S>(program: impl AsRef<std::ffi::OsStr>, args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let program = program.as_ref();
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", Path::new(program).display()))
}

/// Asserts that a command succeeded (showing its output if not) and returns its stdout.
pub fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Asserts that a command failed the way sifr's bad-input contract requires: non-zero exit
/// and exactly one line on stderr, which contains `needle`.
pub fn assert_one_line_error(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "expected failure, got success; stderr: {stderr}"
    );
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one error line, got: {stderr:?}");
    assert!(
        lines[0].contains(needle),
        "error line {:?} does not mention {needle:?}",
        lines[0]
    );
}

/// Runs sifr in a session of its own and returns its output and the session id, so a test
/// can check afterwards that no process of that session is left.
pub fn sifr_in_new_session<I, S>(args: I) -> (Output, i32)
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(sifr_bin());
    cmd.args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    // SAFETY: setsid is async-signal-safe and touches no memory.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().expect("spawn sifr");
    let sid = child.id() as i32;
    let out = child.wait_with_output().expect("wait sifr");
    (out, sid)
}

/// Asserts that no process of session `sid` is alive (after a short grace period).
pub fn assert_session_empty(sid: i32) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        let mut left = Vec::new();
        for e in std::fs::read_dir("/proc").expect("read /proc").flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
                continue;
            };
            // Fields after the parenthesised command: state ppid pgrp session ...
            let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
                continue;
            };
            let f: Vec<&str> = rest.split_whitespace().collect();
            if f.get(3).and_then(|s| s.parse::<i32>().ok()) == Some(sid) && f[0] != "Z" {
                left.push(pid);
            }
        }
        if left.is_empty() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "processes of session {sid} left behind: {left:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The directory of images made by `ci/make-test-images` (`SIFR_TEST_IMAGES`), or `None`
/// (with a visible reason) outside CI. In CI a missing directory fails the test.
pub fn test_images() -> Option<PathBuf> {
    let dir = std::env::var_os("SIFR_TEST_IMAGES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/sifr-ci-images"));
    if dir.join("debian.manifest").is_file() {
        return Some(dir);
    }
    if in_ci() {
        panic!(
            "test images not found in {} (ci/make-test-images makes them)",
            dir.display()
        );
    }
    eprintln!(
        "SKIP: test images not found in {} (run ci/make-test-images as root)",
        dir.display()
    );
    None
}

/// The calling user's name.
pub fn user_name() -> String {
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() };
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|p| {
            p.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() > 2 && f[2] == uid.to_string()).then(|| f[0].to_string())
            })
        })
        .unwrap_or_else(|| uid.to_string())
}

/// Waits until `exe`, just written, can be executed: a child that another test thread forked
/// while the copy was open for writing holds that descriptor until it execs, and until then
/// exec fails with ETXTBSY. No new holder can appear once the copy is closed.
pub fn wait_executable(exe: &Path) {
    for _ in 0..200 {
        match Command::new(exe).arg("--version").output() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => {
                std::thread::sleep(std::time::Duration::from_millis(25))
            }
            Err(e) => panic!("{}: {e}", exe.display()),
            Ok(_) => return,
        }
    }
    panic!("{}: still busy (ETXTBSY) after 5 s", exe.display());
}

/// Extracts the busybox fixture's root filesystem (the squashfs at offset 45056 of
/// busybox_amd64.sif) into `root`, a directory that must not exist yet.
pub fn extract_busybox(root: &Path) {
    let out = Command::new("unsquashfs")
        .args(["-q", "-n", "-o", "45056", "-d"])
        .arg(root)
        .arg(sif_fixture("busybox_amd64.sif"))
        .output()
        .expect("run unsquashfs (squashfs-tools)");
    assert!(
        root.join("bin/busybox").exists(),
        "unsquashfs failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
