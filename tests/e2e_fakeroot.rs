//! End-to-end tests of `--fakeroot`, run as two unprivileged users: one with an
//! /etc/subuid range (subordinate-id mode) and one without (root-mapped mode with root
//! emulation). CI runs this binary once as each, with `SIFR_TEST_FAKEROOT_MODE` set to
//! `subid` or `rootmapped`; the writable Debian sandbox of each user comes from
//! `ci/make-test-images`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Subid,
    RootMapped,
}

fn mode() -> Option<Mode> {
    match std::env::var("SIFR_TEST_FAKEROOT_MODE").as_deref() {
        Ok("subid") => Some(Mode::Subid),
        Ok("rootmapped") => Some(Mode::RootMapped),
        _ if in_ci() => panic!("SIFR_TEST_FAKEROOT_MODE must be subid or rootmapped in CI"),
        _ => {
            eprintln!("SKIP: set SIFR_TEST_FAKEROOT_MODE=subid|rootmapped for the test user");
            None
        }
    }
}

fn sifr_out(args: &[&str]) -> Output {
    Command::new(sifr_bin())
        .args(args)
        .current_dir("/")
        .stdin(Stdio::null())
        .output()
        .expect("run sifr")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// This user's writable Debian sandbox.
fn sandbox() -> Option<PathBuf> {
    let dir = test_images()?.join(format!("debian-sandbox-{}", user_name()));
    assert!(
        dir.is_dir(),
        "{} missing (ci/make-test-images)",
        dir.display()
    );
    Some(dir)
}

#[test]
fn test_fakeroot_is_root_and_says_which_mode() {
    require_unprivileged();
    let Some(mode) = mode() else { return };
    let img = sif_fixture("busybox_amd64.sif");
    let o = sifr_out(&[
        "exec",
        "--fakeroot",
        img.to_str().expect("utf8"),
        "sh",
        "-c",
        "id -u; id -g; echo $HOME",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "0\n0\n/root\n");
    let err = stderr(&o);
    match mode {
        Mode::Subid => assert_eq!(err, "", "the subid mode is silent"),
        Mode::RootMapped => {
            assert_eq!(err.lines().count(), 1, "{err}");
            assert!(err.contains("root-mapped"), "{err}");
            assert!(err.contains("/etc/subuid"), "the notice says why: {err}");
        }
    }
    // The maps the kernel has.
    let o = sifr_out(&[
        "exec",
        "-f",
        img.to_str().expect("utf8"),
        "cat",
        "/proc/self/uid_map",
    ]);
    let map = stdout(&o);
    match mode {
        Mode::Subid => assert_eq!(map.lines().count(), 2, "{map}"),
        Mode::RootMapped => assert_eq!(map.lines().count(), 1, "{map}"),
    }
}

/// The first subordinate uid of the calling user.
fn first_subuid() -> u32 {
    let user = user_name();
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() }.to_string();
    std::fs::read_to_string("/etc/subuid")
        .expect("/etc/subuid")
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() == 3 && (f[0] == user || f[0] == uid) && f[2].parse::<u32>().ok()? >= 65536)
                .then(|| f[1].parse().ok())?
        })
        .next()
        .expect("a subuid range")
}

#[test]
fn test_writable_sandbox_ownership_follows_the_mapping() {
    require_unprivileged();
    let Some(mode) = mode() else { return };
    let Some(sb) = sandbox() else { return };
    let sbs = sb.to_str().expect("utf8");
    let o = sifr_out(&[
        "exec",
        "--fakeroot",
        "--writable",
        sbs,
        "sh",
        "-c",
        "rm -f /sifr-f0 /sifr-f1; touch /sifr-f0 /sifr-f1 && chown 1:1 /sifr-f1 && ls -ln /sifr-f0 /sifr-f1",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    use std::os::unix::fs::MetadataExt;
    // SAFETY: getuid cannot fail.
    let me = unsafe { libc::getuid() };
    let f0 = std::fs::metadata(sb.join("sifr-f0")).expect("f0");
    let f1 = std::fs::metadata(sb.join("sifr-f1")).expect("f1");
    assert_eq!(f0.uid(), me, "container root is the caller on the host");
    match mode {
        Mode::Subid => {
            assert_eq!(
                f1.uid(),
                first_subuid(),
                "container uid 1 is the first subordinate id"
            );
            assert!(stdout(&o).contains(" 1 "), "{}", stdout(&o));
        }
        // Root-mapped: chown to an unmapped id is emulated; the file stays the caller's.
        Mode::RootMapped => assert_eq!(f1.uid(), me),
    }
    let o = sifr_out(&["exec", "-f", "-w", sbs, "rm", "-f", "/sifr-f0", "/sifr-f1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!sb.join("sifr-f1").exists());
}

#[test]
fn test_apt_get_install_and_useradd_in_debian() {
    require_unprivileged();
    let Some(_mode) = mode() else { return };
    let Some(sb) = sandbox() else { return };
    let script = "set -e; export DEBIAN_FRONTEND=noninteractive; \
        apt-get update -q >/dev/null; \
        apt-get install -y -q --reinstall hello >/dev/null; \
        hello; \
        id sifrbob >/dev/null 2>&1 || useradd -m sifrbob; id -u sifrbob; \
        getent group sifrgrp >/dev/null || groupadd sifrgrp; getent group sifrgrp | cut -d: -f1; \
        dpkg -s hello | grep '^Status'";
    let o = sifr_out(&[
        "exec",
        "--fakeroot",
        "--writable",
        sb.to_str().expect("utf8"),
        "sh",
        "-c",
        script,
    ]);
    let out = stdout(&o);
    assert!(o.status.success(), "stdout: {out}\nstderr: {}", stderr(&o));
    assert!(out.contains("Hello, world!"), "{out}");
    assert!(out.contains("sifrgrp"), "{out}");
    assert!(out.contains("Status: install ok installed"), "{out}");
    // No leftovers of sifr's own files in the sandbox.
    assert!(
        !Path::new(&sb)
            .join("etc/apt/apt.conf.d/00sifr-fakeroot")
            .exists()
    );
}

#[test]
fn test_fakeroot_network_rule() {
    require_unprivileged();
    let Some(_mode) = mode() else { return };
    let img = sif_fixture("busybox_amd64.sif");
    let img = img.to_str().expect("utf8");
    let o = sifr_out(&[
        "exec",
        "--fakeroot",
        "--net",
        "--network",
        "bridge",
        img,
        "true",
    ]);
    assert_eq!(o.status.code(), Some(255));
    assert_one_line_error(&o, "none, pasta");
    let o = sifr_out(&["exec", "--fakeroot", "--net", img, "cat", "/proc/net/dev"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let devs: Vec<String> = stdout(&o)
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next().map(|s| s.trim().to_string()))
        .collect();
    assert_eq!(devs, ["lo"], "only loopback");
}
