//! Resource limits (`--memory`, `--cpus`, ..., `--apply-cgroups`), with and without
//! `--fakeroot`, as the unprivileged user.
//!
//! Two branches, both tested, chosen by what the host has (this is not a skip): where the
//! caller runs in a cgroup v2 tree whose parent it may write (a delegation, e.g. under the
//! systemd user manager), each limit must be found in the container's cgroup file while the
//! payload runs, and the cgroup must be gone afterwards; on a cgroup v1 host (CI) or without
//! a delegation, each flag must be refused in one line, exit 255, before anything starts,
//! leaving no process and no cgroup. Bad values are refused the same on every host.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;

/// The tests create and look for `sifr-PID` cgroups next to their own: one at a time, so
/// that one test's live cgroup is not taken for another's leftover.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn busybox() -> String {
    sif_fixture("busybox_amd64.sif").display().to_string()
}

fn writable(p: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: access reads a NUL-terminated path and touches no other memory.
    unsafe { libc::access(c.as_ptr(), libc::W_OK) == 0 }
}

/// The delegated parent sifr would create its cgroup in, when this host has one (the same
/// test as sifr's: cgroup v2 at /sys/fs/cgroup, the parent of the caller's cgroup writable by
/// the user). Which controllers it has decides, case by case, between a limit applied and
/// a one-line refusal naming the controller. Under ci/cgroup2-delegation (CI's cgroup v1
/// hosts, where the v2 hierarchy has only hugetlb) there must be one.
fn delegation() -> Option<PathBuf> {
    let found = find_delegation();
    if let Ok(want) = std::env::var("SIFR_TEST_CGROUP2_DELEGATION") {
        assert_eq!(
            found.as_deref(),
            Some(Path::new(&want)),
            "ci/cgroup2-delegation set up {want}, the test does not find it"
        );
    }
    found
}

fn find_delegation() -> Option<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    if !root.join("cgroup.controllers").exists() {
        return None;
    }
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let rel = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    let own = root.join(rel.trim_start_matches('/'));
    let base = own.parent()?.to_path_buf();
    if own == root
        || ![
            base.clone(),
            base.join("cgroup.procs"),
            base.join("cgroup.subtree_control"),
        ]
        .iter()
        .all(|p| writable(p))
    {
        return None;
    }
    base.join("cgroup.controllers").exists().then_some(base)
}

/// The directories where a `sifr-PID` cgroup of this test's runs could appear, on any
/// host: next to the caller's cgroup in every hierarchy of /proc/self/cgroup.
fn cgroup_parents() -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let unified_root = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        PathBuf::from("/sys/fs/cgroup")
    } else {
        PathBuf::from("/sys/fs/cgroup/unified")
    };
    text.lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, ctl, path) = (f.next()?, f.next()?, f.next()?);
            let mount = match ctl {
                "" => unified_root.clone(),
                c => Path::new("/sys/fs/cgroup").join(c.trim_start_matches("name=")),
            };
            let own = mount.join(path.trim_start_matches('/'));
            own.parent().map(Path::to_path_buf)
        })
        .collect()
}

fn sifr_cgroups() -> Vec<String> {
    let mut found = Vec::new();
    for dir in cgroup_parents() {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("sifr-") {
                found.push(dir.join(name).display().to_string());
            }
        }
    }
    found
}

/// A cgroups.toml for `--apply-cgroups`.
fn toml_file(dir: &Path) -> String {
    let p = dir.join("limits.toml");
    std::fs::write(&p, "[pids]\nlimit = 7\n").expect("write");
    p.display().to_string()
}

/// A cgroups.toml with a huge page limit (hugetlb: the controller a cgroup v1 host leaves
/// to the v2 hierarchy).
fn hugetlb_toml(dir: &Path) -> String {
    let p = dir.join("hugetlb.toml");
    std::fs::write(
        &p,
        "[[hugepageLimits]]\npageSize = \"2MB\"\nlimit = 4194304\n",
    )
    .expect("write");
    p.display().to_string()
}

/// Each case: the flags, then the cgroup v2 file and the value it must hold.
fn cases(toml: &str, huge: &str) -> Vec<(Vec<String>, &'static str, &'static str)> {
    let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    vec![
        (v(&["--memory", "64M"]), "memory.max", "67108864"),
        (
            v(&["--memory-reservation", "32m"]),
            "memory.low",
            "33554432",
        ),
        (
            v(&["--memory", "64M", "--memory-swap", "96M"]),
            "memory.swap.max",
            "33554432",
        ),
        (v(&["--cpus", "0.5"]), "cpu.max", "50000 100000"),
        (v(&["--cpu-shares", "1024"]), "cpu.weight", "100"),
        (v(&["--cpuset-cpus", "0"]), "cpuset.cpus", "0"),
        (v(&["--cpuset-mems", "0"]), "cpuset.mems", "0"),
        (v(&["--pids-limit", "20"]), "pids.max", "20"),
        (v(&["--apply-cgroups", toml]), "pids.max", "7"),
        (v(&["--apply-cgroups", huge]), "hugetlb.2MB.max", "4194304"),
    ]
}

/// Runs `sifr exec FLAGS busybox sh -c SCRIPT` in a session of its own; returns its
/// output and the session id.
fn exec_in_session(pre: &[&str], flags: &[String], script: &str) -> (std::process::Output, i32) {
    let img = busybox();
    let mut args: Vec<String> = vec!["exec".into()];
    args.extend(pre.iter().map(|s| s.to_string()));
    args.extend(flags.iter().cloned());
    args.extend([img, "sh".into(), "-c".into(), script.into()]);
    sifr_in_new_session(&args)
}

#[test]
fn test_limits_applied_with_a_delegation_else_refused() {
    require_unprivileged();
    let _serial = serial();
    let dir = tempdir();
    let toml = toml_file(dir.path());
    let huge = hugetlb_toml(dir.path());
    let before = sifr_cgroups();
    let base = delegation();
    let mut applied = 0;
    eprintln!(
        "cgroup v2 delegation: {}",
        base.as_ref()
            .map_or("none (checking the refusal)".into(), |b| b
                .display()
                .to_string())
    );
    for fakeroot in [false, true] {
        let pre: &[&str] = if fakeroot { &["--fakeroot"] } else { &[] };
        for (flags, file, value) in cases(&toml, &huge) {
            match &base {
                None => {
                    let (out, sid) = exec_in_session(pre, &flags, "echo payload-ran");
                    assert_eq!(out.status.code(), Some(255), "{pre:?} {flags:?}: {out:?}");
                    assert_one_line_error(&out, "resource limits need a cgroup v2 delegation");
                    let err = String::from_utf8_lossy(&out.stderr);
                    assert!(
                        err.contains("systemd-run --user --scope -p Delegate=yes"),
                        "{err}"
                    );
                    assert!(out.stdout.is_empty(), "{flags:?}: the payload ran");
                    assert_session_empty(sid);
                }
                Some(b) => {
                    // A controller the delegation lacks (cpuset is not delegated by every
                    // systemd): refused in one line, naming it.
                    let ctl =
                        std::fs::read_to_string(b.join("cgroup.controllers")).unwrap_or_default();
                    let wanted = file.split('.').next().unwrap_or(file);
                    if ctl.split_whitespace().any(|c| c == wanted) {
                        check_live_limit(pre, &flags, file, value);
                        applied += 1;
                    } else {
                        let (out, sid) = exec_in_session(pre, &flags, "echo payload-ran");
                        assert_eq!(out.status.code(), Some(255), "{flags:?}: {out:?}");
                        assert_one_line_error(&out, &format!("controller {wanted} not delegated"));
                        assert_session_empty(sid);
                    }
                }
            }
            assert_eq!(
                sifr_cgroups(),
                before,
                "{flags:?}: a cgroup was left behind"
            );
        }
    }
    // A delegation with none of the controllers the cases use would test refusals only.
    if base.is_some() {
        assert!(applied > 0, "no limit was applied through the delegation");
    }
}

/// With a delegation: the payload's cgroup (read from the host while it runs) holds the
/// limit, and it is removed when the container ends.
fn check_live_limit(pre: &[&str], flags: &[String], file: &str, value: &str) {
    let img = busybox();
    let mut cmd = Command::new(sifr_bin());
    cmd.arg("exec").args(pre).args(flags).args([
        img.as_str(),
        "sh",
        "-c",
        "sed -n 's/^0:://p' /proc/self/cgroup; read x",
    ]);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: setsid is async-signal-safe and touches no memory.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("spawn sifr");
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().expect("stdout"))
        .read_line(&mut line)
        .expect("read the payload's cgroup");
    let cg = Path::new("/sys/fs/cgroup").join(line.trim().trim_start_matches('/'));
    let got = std::fs::read_to_string(cg.join(file)).unwrap_or_else(|e| {
        panic!("{flags:?}: {}: {e}", cg.join(file).display());
    });
    // A line for the payload's `read` (at end of input it would exit 1), then end it.
    if let Some(mut stdin) = child.stdin.take() {
        std::io::Write::write_all(&mut stdin, b"done\n").expect("write to the payload");
    }
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success(), "{pre:?} {flags:?}: {out:?}");
    assert!(
        cg.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("sifr-")),
        "{flags:?}: the payload runs in {} ",
        cg.display()
    );
    assert!(
        got.trim() == value,
        "{flags:?}: {file} = {got:?}, want {value}"
    );
    assert!(!cg.exists(), "{flags:?}: {} left behind", cg.display());
}

#[test]
fn test_bad_values_refused_in_one_line_on_every_host() {
    require_unprivileged();
    let _serial = serial();
    let dir = tempdir();
    let toml = toml_file(dir.path());
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[memory]\nlimt = 1\n").expect("write");
    let bad = bad.display().to_string();
    let cases: &[(&[&str], &str)] = &[
        (
            &["--memory", "12x"],
            "invalid memory value: invalid size: '12x'",
        ),
        (&["--memory-swap", "lots"], "invalid memory-swap value"),
        (&["--cpus", "0"], "cpus value must be in range 0.01 - "),
        (&["--cpus", "many"], "invalid cpus value"),
        (&["--pids-limit", "-2"], "invalid pids-limit: -2"),
        (
            &["--blkio-weight", "5"],
            "blkio-weight must be in range 10-1000",
        ),
        (
            &["--blkio-weight-device", "/etc/passwd:100"],
            "/etc/passwd is not a device",
        ),
        (&["--cpuset-cpus", "0-a"], "--cpuset-cpus: expected a list"),
        (
            &["--memory", "1m", "--apply-cgroups", &toml],
            "cannot apply a cgroups TOML file while using limit flags",
        ),
        (&["--apply-cgroups", &bad], "unknown field `limt`"),
        (
            &["--memory", "2m", "--memory-swap", "1m"],
            "memory+swap limit should be >= memory limit",
        ),
    ];
    for (flags, needle) in cases {
        let flags: Vec<String> = flags.iter().map(|s| s.to_string()).collect();
        let (out, sid) = exec_in_session(&[], &flags, "echo payload-ran");
        assert_eq!(out.status.code(), Some(255), "{flags:?}: {out:?}");
        assert_one_line_error(&out, needle);
        assert!(out.stdout.is_empty(), "{flags:?}");
        assert_session_empty(sid);
    }
}

/// `--oom-kill-disable` and `--blkio-weight`: applied as Apptainer does on cgroup v2 (a
/// warning for the OOM switch cgroup v2 lacks), refused without a delegation.
#[test]
fn test_oom_and_blkio_flags() {
    require_unprivileged();
    let _serial = serial();
    let base = delegation();
    for flags in [
        vec!["--oom-kill-disable".to_string()],
        vec!["--blkio-weight".into(), "100".into()],
    ] {
        let (out, sid) = exec_in_session(&[], &flags, "echo payload-ran");
        match &base {
            None => {
                assert_eq!(out.status.code(), Some(255), "{flags:?}: {out:?}");
                assert_one_line_error(&out, "resource limits need a cgroup v2 delegation");
            }
            Some(b) if flags[0] == "--oom-kill-disable" => {
                assert_eq!(ok(&out), "payload-ran\n");
                let err = String::from_utf8_lossy(&out.stderr);
                assert!(err.contains("--oom-kill-disable is not applied"), "{err}");
                let _ = b;
            }
            // The io controller may not be delegated; either limited or refused in one line.
            Some(_) => {
                if out.status.success() {
                    assert_eq!(ok(&out), "payload-ran\n");
                } else {
                    assert_eq!(out.status.code(), Some(255), "{out:?}");
                    assert_one_line_error(&out, "io");
                }
            }
        }
        assert_session_empty(sid);
    }
}
