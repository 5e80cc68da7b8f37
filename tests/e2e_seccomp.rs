//! End-to-end tests of `--security seccomp:PROFILE`: profiles written by the test and the
//! shipped default (Docker's) applied to busybox and Debian payloads, argument conditions,
//! errno values, the combination with `--fakeroot` (CI runs this binary as sifrtest, subid
//! mode, and as sifrnosub, root-mapped mode), the refusals of bad profiles, and that the
//! filter is in place in the payload (`Seccomp: 2`, `NoNewPrivs: 1`).
//! Run as an unprivileged user (CI does; the harness refuses root).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::*;

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

fn busybox() -> String {
    sif_fixture("busybox_amd64.sif")
        .to_str()
        .expect("utf8")
        .to_string()
}

/// Writes `text` as a profile file in `dir`; returns `seccomp:PATH`.
fn profile(dir: &Path, name: &str, text: &str) -> (PathBuf, String) {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write profile");
    let spec = format!("seccomp:{}", path.display());
    (path, spec)
}

const DENY_MKDIR: &str = r#"{
  "defaultAction": "SCMP_ACT_ALLOW",
  "syscalls": [
    {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}
  ]
}"#;

#[test]
fn test_profile_denies_mkdir_and_allows_the_rest() {
    require_unprivileged();
    let dir = tempdir();
    let (_, spec) = profile(dir.path(), "nomkdir.json", DENY_MKDIR);
    let img = busybox();
    let o = sifr_out(&[
        "exec",
        "--security",
        &spec,
        &img,
        "sh",
        "-c",
        "mkdir /tmp/sifr-seccomp-d; echo rc=$?; ls / >/dev/null && echo ls-ok; \
         cat /etc/passwd >/dev/null && echo cat-ok; echo echo-ok",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "rc=1\nls-ok\ncat-ok\necho-ok\n");
    assert!(
        stderr(&o).contains("Operation not permitted"),
        "{}",
        stderr(&o)
    );
    // Without the profile the same mkdir works.
    let o = sifr_out(&[
        "exec",
        "--contain",
        &img,
        "sh",
        "-c",
        "mkdir /tmp/sifr-seccomp-d && echo made",
    ]);
    assert_eq!(stdout(&o), "made\n", "{}", stderr(&o));
}

#[test]
fn test_filter_installed_with_no_new_privs() {
    require_unprivileged();
    let dir = tempdir();
    let (_, spec) = profile(dir.path(), "nomkdir.json", DENY_MKDIR);
    let img = busybox();
    let status = |extra: &[&str]| {
        let mut args = vec!["exec"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[
            img.as_str(),
            "grep",
            "-E",
            "^(Seccomp|NoNewPrivs):",
            "/proc/self/status",
        ]);
        let o = sifr_out(&args);
        ok(&o)
    };
    assert_eq!(
        status(&["--security", &spec]),
        "NoNewPrivs:\t1\nSeccomp:\t2\n"
    );
    assert_eq!(status(&[]), "NoNewPrivs:\t1\nSeccomp:\t0\n");
    // The environment variable, as Apptainer's APPTAINER_SECURITY.
    let o = Command::new(sifr_bin())
        .args(["exec", &img, "grep", "^Seccomp:", "/proc/self/status"])
        .env("APPTAINER_SECURITY", &spec)
        .current_dir("/")
        .stdin(Stdio::null())
        .output()
        .expect("run sifr");
    assert_eq!(ok(&o), "Seccomp:\t2\n");
}

#[test]
fn test_errno_ret_and_argument_conditions() {
    require_unprivileged();
    let Some(images) = test_images() else { return };
    let debian = images.join("debian.sif");
    let debian = debian.to_str().expect("utf8");
    let dir = tempdir();
    let (_, spec) = profile(
        dir.path(),
        "args.json",
        r#"{
  "defaultAction": "SCMP_ACT_ALLOW",
  "syscalls": [
    {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
    {"names": ["personality"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13,
     "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]},
    {"names": ["socket"], "action": "SCMP_ACT_ERRNO", "errnoRet": 97,
     "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}]}
  ]
}"#,
    );
    let o = sifr_out(&[
        "exec",
        "--security",
        &spec,
        debian,
        "sh",
        "-c",
        "mkdir /tmp/sifr-x 2>&1; setarch linux32 true 2>&1; \
         setarch x86_64 -R true && echo x86_64-ok; \
         perl -e 'socket(S, 1, 1, 0) or print \"unix: $!\\n\"; \
                  socket(T, 2, 2, 0) and print \"inet-ok\\n\"'",
    ]);
    let out = stdout(&o);
    assert!(out.contains("Function not implemented"), "ENOSYS: {out}");
    assert!(out.contains("Permission denied"), "personality(8): {out}");
    assert!(
        out.contains("x86_64-ok"),
        "personality(ADDR_NO_RANDOMIZE): {out}"
    );
    assert!(
        out.contains("unix: Address family not supported by protocol"),
        "{out}"
    );
    assert!(out.contains("inet-ok"), "{out}");
}

#[test]
fn test_default_profile_runs_busybox_and_debian() {
    require_unprivileged();
    let img = busybox();
    let o = sifr_out(&[
        "exec",
        "--security",
        "seccomp:default",
        &img,
        "sh",
        "-c",
        "ls -l / >/dev/null && id -u >/dev/null && echo busybox-ok; grep ^Seccomp: /proc/self/status",
    ]);
    assert_eq!(ok(&o), "busybox-ok\nSeccomp:\t2\n");
    assert_eq!(stderr(&o), "");
    let Some(images) = test_images() else { return };
    let debian = images.join("debian.sif");
    let o = sifr_out(&[
        "exec",
        "--security",
        "seccomp:default",
        debian.to_str().expect("utf8"),
        "sh",
        "-c",
        "ls -l / >/dev/null && echo ls-ok; dpkg -l | grep -c '^ii' >/dev/null && echo dpkg-ok; \
         apt-cache policy >/dev/null && echo apt-ok; perl -e 'print \"perl-ok\\n\"'; \
         mount -t tmpfs none /mnt 2>/dev/null || echo mount-denied",
    ]);
    assert_eq!(
        ok(&o),
        "ls-ok\ndpkg-ok\napt-ok\nperl-ok\nmount-denied\n",
        "{}",
        stderr(&o)
    );
}

/// Which fakeroot mode this user gets (set by CI); `None` outside CI.
fn fakeroot_mode() -> Option<String> {
    match std::env::var("SIFR_TEST_FAKEROOT_MODE") {
        Ok(m) if m == "subid" || m == "rootmapped" => Some(m),
        _ if in_ci() => panic!("SIFR_TEST_FAKEROOT_MODE must be subid or rootmapped in CI"),
        _ => {
            eprintln!("SKIP: set SIFR_TEST_FAKEROOT_MODE=subid|rootmapped for the test user");
            None
        }
    }
}

#[test]
fn test_profile_with_fakeroot() {
    require_unprivileged();
    // Both modes install the emulation filter (root-mapped: ids; subid: device nodes).
    let Some(_mode) = fakeroot_mode() else { return };
    let img = busybox();
    let dir = tempdir();
    let (_, spec) = profile(
        dir.path(),
        "nochown.json",
        r#"{
  "defaultAction": "SCMP_ACT_ALLOW",
  "syscalls": [
    {"names": ["chown", "lchown", "fchown", "fchownat"], "action": "SCMP_ACT_ERRNO"}
  ]
}"#,
    );
    let script = "cd /tmp && touch f && chown 1:1 f && echo chowned; \
                  grep ^Seccomp_filters: /proc/self/status; id -u";
    // A profile denying chown denies it under --fakeroot too, whatever the emulation says.
    let o = sifr_out(&[
        "exec",
        "--fakeroot",
        "--contain",
        "--security",
        &spec,
        &img,
        "sh",
        "-c",
        script,
    ]);
    let filters = 2;
    assert_eq!(
        stdout(&o),
        format!("Seccomp_filters:\t{filters}\n0\n"),
        "{}",
        stderr(&o)
    );
    assert!(
        stderr(&o).contains("Operation not permitted"),
        "{}",
        stderr(&o)
    );
    // With the default profile, chown to another user works (emulated when root-mapped),
    // and so do the namespace's own calls that need CAP_SYS_ADMIN there.
    let o = sifr_out(&[
        "exec",
        "--fakeroot",
        "--contain",
        "--security",
        "seccomp:default",
        &img,
        "sh",
        "-c",
        script,
    ]);
    assert_eq!(
        stdout(&o),
        format!("chowned\nSeccomp_filters:\t{filters}\n0\n"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn test_bad_profiles_are_refused_in_one_line() {
    require_unprivileged();
    let img = busybox();
    let dir = tempdir();
    let refused = |spec: &str, needles: &[&str]| {
        let o = sifr_out(&["exec", "--security", spec, &img, "true"]);
        assert_eq!(o.status.code(), Some(255), "{spec}: {}", stderr(&o));
        assert_one_line_error(&o, needles[0]);
        for n in needles {
            assert!(stderr(&o).contains(n), "{spec}: {n}: {}", stderr(&o));
        }
    };
    // Missing: the path is named.
    let missing = dir.path().join("missing.json");
    let missing = missing.display().to_string();
    refused(&format!("seccomp:{missing}"), &[&missing]);
    refused(
        "seccomp:nosuchprofile",
        &["seccomp-profiles/nosuchprofile.json"],
    );
    // Bad JSON: the file and the line.
    let (path, spec) = profile(
        dir.path(),
        "bad.json",
        "{\n  \"defaultAction\": \"SCMP_ACT_ALLOW\",\n  \"syscalls\": [,]\n}\n",
    );
    refused(&spec, &[&format!("{}:3", path.display())]);
    // Unknown system call name: the profile and the entry.
    let (path, spec) = profile(
        dir.path(),
        "unknown.json",
        r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
            {"names": ["read"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["nosuch_call"], "action": "SCMP_ACT_ERRNO"}]}"#,
    );
    let p = path.display().to_string();
    refused(&spec, &[&p, "syscalls[1]", "nosuch_call"]);
    // Unsupported action: the entry.
    let (path, spec) = profile(
        dir.path(),
        "notify.json",
        r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
            {"names": ["ptrace"], "action": "SCMP_ACT_NOTIFY"}]}"#,
    );
    let p = path.display().to_string();
    refused(&spec, &[&p, "syscalls[0] (ptrace)", "SCMP_ACT_NOTIFY"]);
    // A name that exists on another architecture only is skipped, as libseccomp does.
    let (_, spec) = profile(
        dir.path(),
        "riscv.json",
        r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
            {"names": ["riscv_hwprobe"], "action": "SCMP_ACT_ERRNO"}]}"#,
    );
    let o = sifr_out(&["exec", "--security", &spec, &img, "true"]);
    assert!(o.status.success(), "{}", stderr(&o));
}
