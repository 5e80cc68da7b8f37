//! `sifr config fakeroot` end to end: edits of fixture subuid/subgid files through the
//! test-only path overrides, and the one-line errors.

mod common;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

struct Files {
    _dir: tempfile::TempDir,
    subuid: PathBuf,
    subgid: PathBuf,
}

fn files(subuid: &str, subgid: &str) -> Files {
    let dir = tempdir();
    let (u, g) = (dir.path().join("subuid"), dir.path().join("subgid"));
    std::fs::write(&u, subuid).expect("write subuid");
    std::fs::write(&g, subgid).expect("write subgid");
    Files {
        _dir: dir,
        subuid: u,
        subgid: g,
    }
}

/// `sifr config fakeroot ARGS` against the fixture files (given through the environment).
fn fakeroot(f: &Files, args: &[&str]) -> Output {
    Command::new(sifr_bin())
        .args(["config", "fakeroot"])
        .args(args)
        .env("SIFR_SUBUID_PATH", &f.subuid)
        .env("SIFR_SUBGID_PATH", &f.subgid)
        .output()
        .expect("run sifr")
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).expect("read")
}

#[test]
fn test_add_twice_disable_enable_remove() {
    // root exists on every system, so USER resolves wherever the test runs.
    let f = files("# site ranges\nbob:100000:65536\n", "");
    let out = fakeroot(&f, &["--add", "root"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stderr.is_empty(), "a change prints nothing by default");
    assert_eq!(
        read(&f.subuid),
        "# site ranges\nbob:100000:65536\n0:4294836224:65536\n"
    );
    assert_eq!(read(&f.subgid), "0:4294836224:65536\n");

    let out = fakeroot(&f, &["--add", "root"]);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("already has a valid entry"), "{stderr}");
    assert_eq!(read(&f.subgid), "0:4294836224:65536\n");

    let out = fakeroot(&f, &["--disable", "root"]);
    assert!(out.status.success());
    assert_eq!(read(&f.subgid), "!0:4294836224:65536\n");
    let out = fakeroot(&f, &["-e", "root"]);
    assert!(out.status.success());
    assert_eq!(read(&f.subgid), "0:4294836224:65536\n");
    let out = fakeroot(&f, &["-r", "0"]);
    assert!(out.status.success());
    assert_eq!(read(&f.subuid), "# site ranges\nbob:100000:65536\n");
    assert_eq!(read(&f.subgid), "");
}

#[test]
fn test_add_over_disabled_entry_is_one_line_error() {
    let f = files("!0:100000:65536\n", "");
    let out = fakeroot(&f, &["--add", "root"]);
    assert_eq!(out.status.code(), Some(255));
    assert_one_line_error(&out, "--enable root");
    assert_eq!(read(&f.subuid), "!0:100000:65536\n");
}

#[test]
fn test_unknown_user_is_one_line_error() {
    let f = files("", "");
    let out = fakeroot(&f, &["--add", "no-such-user-sifr"]);
    assert_one_line_error(&out, "no such user \"no-such-user-sifr\"");
}

#[test]
fn test_missing_action_is_one_line_error() {
    let f = files("", "");
    let out = fakeroot(&f, &["root"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a usage error exits 1, as Apptainer's"
    );
    assert_one_line_error(&out, "--add");
}

#[test]
fn test_non_root_without_overrides_is_refused() {
    let mut cmd = Command::new(sifr_bin());
    cmd.args(["config", "fakeroot", "--add", "root"])
        .env_remove("SIFR_SUBUID_PATH")
        .env_remove("SIFR_SUBGID_PATH");
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        // As root, run it as nobody; the binary lives in a world-readable tree.
        cmd.uid(65534).gid(65534);
    }
    let out = cmd.output().expect("run sifr");
    assert_one_line_error(&out, "must be run as root");
}
