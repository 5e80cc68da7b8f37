//! End-to-end: the payload's capabilities (`--add-caps`, `--drop-caps`, `--no-privs`,
//! `--keep-privs`), as Apptainer computes them in its user-namespace mode, seen in
//! /proc/self/status (CapPrm, CapEff, CapBnd, CapAmb) and in behaviour (chown, reading a
//! file without permission).
//!
//! Runs the real sifr binary as the unprivileged test user on the busybox SIF fixture. CI
//! runs it as each fakeroot user, with `SIFR_TEST_FAKEROOT_MODE` set to `subid` (an
//! /etc/subuid range) or `rootmapped` (none).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Subid,
    RootMapped,
}

/// The fakeroot mode of the test user: as CI says, or else as /etc/subuid says.
fn mode() -> Mode {
    match std::env::var("SIFR_TEST_FAKEROOT_MODE").as_deref() {
        Ok("rootmapped") => Mode::RootMapped,
        Ok("subid") => Mode::Subid,
        other if in_ci() => {
            panic!("SIFR_TEST_FAKEROOT_MODE must be subid or rootmapped in CI, not {other:?}")
        }
        _ => {
            let user = user_name();
            let listed = std::fs::read_to_string("/etc/subuid")
                .unwrap_or_default()
                .lines()
                .any(|l| l.split(':').next() == Some(user.as_str()));
            if listed {
                Mode::Subid
            } else {
                Mode::RootMapped
            }
        }
    }
}

fn busybox() -> String {
    sif_fixture("busybox_amd64.sif").display().to_string()
}

fn run_with(exe: &Path, args: &[&str]) -> Output {
    Command::new(exe)
        .args(args)
        .current_dir("/")
        .stdin(Stdio::null())
        .output()
        .expect("run sifr")
}

/// Every capability the running kernel knows, as a mask.
fn full() -> u64 {
    let last: u32 = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .expect("cap_last_cap")
        .trim()
        .parse()
        .expect("a number");
    (1u64 << (last + 1)) - 1
}

const CHOWN: u64 = 1 << 0;
const DAC_OVERRIDE: u64 = 1 << 1;
const DAC_READ_SEARCH: u64 = 1 << 2;
const NET_RAW: u64 = 1 << 13;
const SYS_ADMIN: u64 = 1 << 21;

/// The payload's capability sets, [CapInh, CapPrm, CapEff, CapBnd, CapAmb], with `flags`,
/// run by the sifr at `exe`.
fn sets_with(exe: &Path, flags: &[&str]) -> [u64; 5] {
    let img = busybox();
    let mut args = vec!["exec"];
    args.extend_from_slice(flags);
    args.extend_from_slice(&[&img, "cat", "/proc/self/status"]);
    let out = run_with(exe, &args);
    let status = ok(&out);
    let field = |name: &str| {
        let line = status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:\t")))
            .unwrap_or_else(|| panic!("no {name} in {status}"));
        u64::from_str_radix(line.trim(), 16).expect("hex mask")
    };
    ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"].map(field)
}

fn sets(flags: &[&str]) -> [u64; 5] {
    sets_with(&sifr_bin(), flags)
}

#[test]
fn test_plain_run_holds_no_capabilities() {
    require_unprivileged();
    assert_eq!(sets(&[]), [0; 5]);
    // --no-privs drops nothing more for an ordinary user.
    assert_eq!(sets(&["--no-privs"]), [0; 5]);
}

/// Without --fakeroot, Apptainer's user-namespace mode gives the ordinary user what
/// --add-caps names (less --drop-caps), in every set including ambient, so it survives
/// execve; not checked against capability.json (that needs setuid).
#[test]
fn test_add_caps_without_fakeroot_are_ambient() {
    require_unprivileged();
    let m = NET_RAW | DAC_OVERRIDE;
    assert_eq!(
        sets(&[
            "--add-caps",
            "net_raw,CAP_DAC_OVERRIDE,Cap_Chown",
            "--drop-caps",
            "chown"
        ]),
        [m; 5]
    );
    // And it works: a file the user may not read is read with CAP_DAC_OVERRIDE.
    let dir = tempdir();
    let f = dir.path().join("secret");
    std::fs::write(&f, "hidden\n").expect("write");
    std::fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o000))
        .expect("chmod");
    let bind = format!("{}:/data", dir.path().display());
    let cat = |flags: &[&str]| {
        let img = busybox();
        let mut args = vec!["exec", "-B", &bind];
        args.extend_from_slice(flags);
        args.extend_from_slice(&[&img, "cat", "/data/secret"]);
        run_with(&sifr_bin(), &args)
    };
    assert!(!cat(&[]).status.success());
    assert_eq!(ok(&cat(&["--add-caps", "dac_override"])), "hidden\n");
}

#[test]
fn test_fakeroot_capability_sets() {
    require_unprivileged();
    let mode = mode();
    let all = full();
    assert_eq!(sets(&["--fakeroot"]), [all; 5]);
    let less = all & !(CHOWN | SYS_ADMIN);
    assert_eq!(
        sets(&["--fakeroot", "--drop-caps", "CAP_CHOWN,sys_admin"]),
        [less; 5]
    );
    assert_eq!(sets(&["--fakeroot", "--drop-caps", "ALL"]), [0; 5]);
    assert_eq!(sets(&["--fakeroot", "--no-privs"]), [0; 5]);
    // As Apptainer's prepareRootCaps: --add-caps adds after --no-privs.
    assert_eq!(
        sets(&["--fakeroot", "--no-privs", "--add-caps", "chown"]),
        [CHOWN; 5]
    );
    // --keep-privs: Apptainer accepts it where it runs as uid 0 (its root-mapped
    // re-execution), and refuses it as root-only for a user with subordinate ids.
    match mode {
        Mode::RootMapped => assert_eq!(sets(&["--fakeroot", "--keep-privs"]), [all; 5]),
        Mode::Subid => {
            let img = busybox();
            let out = run_with(
                &sifr_bin(),
                &["exec", "--fakeroot", "--keep-privs", &img, "true"],
            );
            assert_eq!(out.status.code(), Some(255), "{out:?}");
            assert_one_line_error(&out, "--keep-privs requires root privileges");
        }
    }
}

/// Container root reads a file it may not read through CAP_DAC_OVERRIDE, and no longer
/// once that is dropped; with subordinate ids it chowns a file to another id, and no longer
/// after --drop-caps CAP_CHOWN. (Root-mapped, chown to an unmapped id is emulated as a
/// successful no-op by sifr's seccomp filter, whatever the capabilities.)
#[test]
fn test_fakeroot_behaviour_follows_the_sets() {
    require_unprivileged();
    let mode = mode();
    let img = busybox();
    let sh = |flags: &[&str], script: &str| {
        let mut args = vec!["exec", "--fakeroot", "--contain"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&[&img, "sh", "-c", script]);
        run_with(&sifr_bin(), &args)
    };
    let read = "echo x > /tmp/f && chmod 000 /tmp/f && cat /tmp/f";
    assert_eq!(ok(&sh(&[], read)), "x\n");
    let out = sh(&["--drop-caps", "dac_override,dac_read_search"], read);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
        "{out:?}"
    );
    assert_eq!(DAC_OVERRIDE | DAC_READ_SEARCH, 6);
    if mode == Mode::Subid {
        let chown = "touch /tmp/f && chown 1:1 /tmp/f && stat -c %u:%g /tmp/f";
        assert_eq!(ok(&sh(&[], chown)), "1:1\n");
        let out = sh(&["--drop-caps", "CAP_CHOWN"], chown);
        assert!(!out.status.success(), "{out:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("Operation not permitted"),
            "{out:?}"
        );
        let out = sh(&["--no-privs"], chown);
        assert!(!out.status.success(), "{out:?}");
    }
}

#[test]
fn test_unknown_capability_names_are_refused_in_one_line() {
    require_unprivileged();
    let img = busybox();
    for (flags, needle) in [
        (
            vec!["--add-caps", "CAP_FLY"],
            "--add-caps: unknown capability \"CAP_FLY\"",
        ),
        (
            vec!["--fakeroot", "--drop-caps", "chown,sys_fly"],
            "--drop-caps: unknown capability \"sys_fly\"",
        ),
    ] {
        let mut args = vec!["exec"];
        args.extend_from_slice(&flags);
        args.extend_from_slice(&[&img, "echo", "payload-ran"]);
        let out = run_with(&sifr_bin(), &args);
        assert_eq!(out.status.code(), Some(255), "{flags:?}: {out:?}");
        assert_one_line_error(&out, needle);
        assert!(out.stdout.is_empty());
    }
}

/// A copy of sifr installed in a prefix of its own, with `capability.json` as given.
fn install(capability_json: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempdir();
    let bin = dir.path().join("install/bin");
    let etc = dir.path().join("install/etc/sifr");
    std::fs::create_dir_all(&bin).expect("mkdir bin");
    std::fs::create_dir_all(&etc).expect("mkdir etc");
    std::fs::write(etc.join("capability.json"), capability_json).expect("write json");
    let exe = bin.join("sifr");
    std::fs::copy(sifr_bin(), &exe).expect("copy sifr");
    wait_executable(&exe);
    (dir, exe)
}

/// capability.json, as in Apptainer without setuid, grants and limits nothing: the sets are
/// the same whether it names the user or not. A file that is not valid is refused in one
/// line naming it, as Apptainer fails on it.
#[test]
fn test_capability_json_is_read_but_not_enforced_in_user_namespace_mode() {
    require_unprivileged();
    let user = user_name();
    let (_d, exe) = install(&format!(
        "{{\"users\": {{\"{user}\": [\"CAP_SYS_ADMIN\"]}}, \"groups\": {{}}}}"
    ));
    assert_eq!(
        sets_with(&exe, &[]),
        [0; 5],
        "a grant adds nothing by itself"
    );
    assert_eq!(
        sets_with(&exe, &["--add-caps", "net_raw"]),
        [NET_RAW; 5],
        "a capability not granted to the user is still given"
    );
    let (_d, exe) = install("{\"users\": {\"x\": [\"CAP_FLY\"]}}");
    let img = busybox();
    let out = run_with(&exe, &["exec", &img, "echo", "payload-ran"]);
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    assert_one_line_error(&out, "capability.json:1: unknown capability \"CAP_FLY\"");
}

/// The user namespace bounds every capability: fakeroot's root holds them all, yet a host
/// file owned by an id the namespace does not map (root's /etc/shadow, /usr) stays out of
/// reach, in both fakeroot modes: CAP_DAC_OVERRIDE and CAP_FOWNER apply only to objects
/// whose owner is mapped. (If this failed, the touch would leave a file in the host's
/// /usr/share; the test checks for it.)
#[test]
fn test_fakeroot_capabilities_stop_at_host_owned_files() {
    require_unprivileged();
    let img = busybox();
    let probe = Path::new("/usr/share/sifr-capability-probe");
    assert!(
        !probe.exists(),
        "{} exists before the test",
        probe.display()
    );
    let script = "grep CapEff /proc/self/status; \
                  cat /mnt/shadow >/dev/null 2>&1 && echo READ-SHADOW; \
                  touch /mnt/share/sifr-capability-probe 2>/dev/null && echo WROTE-USR; \
                  chmod 0777 /mnt/passwd 2>/dev/null && echo CHMOD-PASSWD; \
                  echo done";
    let out = run_with(
        &sifr_bin(),
        &[
            "exec",
            "--fakeroot",
            "-B",
            "/etc/shadow:/mnt/shadow",
            "-B",
            "/etc/passwd:/mnt/passwd",
            "-B",
            "/usr/share:/mnt/share",
            &img,
            "sh",
            "-c",
            script,
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    // Container root holds every capability of its namespace...
    assert!(
        stdout.contains(&format!("CapEff:\t{:016x}", full())),
        "{out:?}"
    );
    // ...and none of them reaches the host's files.
    assert!(stdout.ends_with("done\n"), "{out:?}");
    for word in ["READ-SHADOW", "WROTE-USR", "CHMOD-PASSWD"] {
        assert!(!stdout.contains(word), "{word}: {out:?}");
    }
    assert!(!probe.exists(), "{} was created", probe.display());
}

/// `--security uid:N,gid:N` under fakeroot with subordinate ids: the payload runs as those
/// ids of its user namespace, with no capability (as Apptainer's, which applies them where
/// its engine runs as root); what it creates is theirs. Refused in one line without
/// fakeroot and in the root-mapped mode, where only root is mapped.
#[test]
fn test_security_uid_gid_under_fakeroot() {
    require_unprivileged();
    let img = busybox();
    let script = "id -u; id -g; grep CapEff /proc/self/status; \
                  touch /w/f && stat -c %u:%g /w/f; \
                  chown 0 /w/f 2>/dev/null && echo CHOWNED; echo done";
    // A host directory anyone may write, for the payload's new ids.
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .expect("chmod");
    let bind = format!("{}:/w", dir.path().display());
    let args = |extra: &[&str]| {
        let mut a = vec!["exec", "--contain", "-B", bind.as_str()];
        a.extend_from_slice(extra);
        a.extend_from_slice(&["--security", "uid:99,gid:98", &img, "sh", "-c", script]);
        run_with(&sifr_bin(), &a)
    };
    let out = args(&["--fakeroot"]);
    if mode() == Mode::Subid {
        assert!(out.status.success(), "{out:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "99\n98\nCapEff:\t0000000000000000\n99:98\ndone\n",
            "{out:?}"
        );
    } else {
        assert_eq!(out.status.code(), Some(255), "{out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("maps only root") && err.trim().lines().count() == 1,
            "{err}"
        );
    }
    let out = args(&[]);
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--security uid:99,gid:98") && err.contains("need --fakeroot"),
        "{err}"
    );
    assert!(out.stdout.is_empty(), "{out:?}");
}
