//! End-to-end: sifr.conf files written for Apptainer, SingularityCE and Singularity load and
//! act as they do there (issue 12, part "config"): unknown directives warn, a repeated
//! single-valued directive keeps its first value, disallowed namespaces are dropped, a
//! disabled overlay falls back to the underlay behaviour, a home of '/' is skipped, and
//! `--no-mount` removes `bind path` entries and keeps the container running without /dev.
//!
//! Runs the real sifr binary as the unprivileged test user on the busybox SIF fixture, with
//! a configuration passed by `-c`.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::*;

/// SingularityCE 4.5's singularity.conf as `make install` writes it (its template rendered
/// with its defaults), and Singularity 3.3's (its test fixture of the default file).
const SINGULARITYCE_45: &str = include_str!("data/conf/singularityce-4.5.conf");
const SINGULARITY_33: &str = include_str!("data/conf/singularity-3.3.conf");

fn busybox() -> String {
    sif_fixture("busybox_amd64.sif").display().to_string()
}

/// Writes `text` as a configuration file in `dir`.
fn conf(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write the configuration");
    p.display().to_string()
}

/// Runs `sifr -c CONF ARGS` from `/` (so the working directory is not bound) and returns
/// (status code, stdout, stderr).
fn sifr_conf(conf: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(sifr_bin())
        .arg("-c")
        .arg(conf)
        .args(args)
        .current_dir("/")
        .stdin(Stdio::null())
        .output()
        .expect("run sifr");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The mount points (field 5 of /proc/self/mountinfo) the container sees.
fn mountpoints(conf: &str, flags: &[&str]) -> Vec<String> {
    let img = busybox();
    let mut args = vec!["exec"];
    args.extend_from_slice(flags);
    args.extend_from_slice(&[&img, "cat", "/proc/self/mountinfo"]);
    let (code, out, err) = sifr_conf(conf, &args);
    assert_eq!(code, Some(0), "{flags:?}: {err}");
    out.lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .collect()
}

#[test]
fn test_unknown_and_repeated_directives_warn_and_load() {
    require_unprivileged();
    let dir = tempdir();
    let c = conf(
        dir.path(),
        "site.conf",
        "mount proc = yes\nautofs bug path = /nfs\nmount home = no\nmount home = yes\n",
    );
    let (code, out, err) = sifr_conf(&c, &["exec", &busybox(), "cat", "/proc/self/mountinfo"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains(&format!("{c}:2: unknown directive \"autofs bug path\"")),
        "{err}"
    );
    assert!(
        err.contains(&format!("{c}:4: \"mount home\" is set again")),
        "{err}"
    );
    // The first value (no) applies: the caller's home is not mounted.
    let home = std::env::var("HOME").expect("HOME");
    assert!(
        !out.lines().any(|l| l.contains(&format!(" {home} "))),
        "home mounted: {out}"
    );
    // A bad value for a known directive is still refused, naming the file and line.
    let bad = conf(dir.path(), "bad.conf", "mount proc = maybe\n");
    let out = sifr(["-c", &bad, "exec", &busybox(), "true"]);
    assert_eq!(out.status.code(), Some(255));
    assert_one_line_error(&out, "bad.conf:1");
}

#[test]
fn test_singularity_33_and_singularityce_45_files_load() {
    require_unprivileged();
    let dir = tempdir();
    for (name, text) in [
        ("singularity-3.3.conf", SINGULARITY_33),
        ("singularityce-4.5.conf", SINGULARITYCE_45),
    ] {
        let c = conf(dir.path(), name, text);
        let (code, out, err) = sifr_conf(&c, &["exec", &busybox(), "echo", "ran"]);
        assert_eq!(code, Some(0), "{name}: {err}");
        assert_eq!(out, "ran\n", "{name}");
    }
}

#[test]
fn test_disallowed_namespaces_are_dropped_with_apptainers_warning() {
    require_unprivileged();
    let dir = tempdir();
    let c = conf(
        dir.path(),
        "ns.conf",
        "allow pid ns = no\nallow ipc ns = no\nallow uts ns = no\n",
    );
    let (code, out, err) = sifr_conf(
        &c,
        &[
            "exec",
            "--pid",
            "--ipc",
            "--hostname",
            "sifr-box",
            &busybox(),
            "sh",
            "-c",
            "readlink /proc/self/ns/pid; readlink /proc/self/ns/ipc; hostname",
        ],
    );
    assert_eq!(code, Some(0), "{err}");
    for ns in ["pid", "ipc", "uts"] {
        assert!(
            err.contains(&format!("Not virtualizing {ns} namespace by configuration")),
            "{ns}: {err}"
        );
    }
    assert!(err.contains("Container hostname cannot be set."), "{err}");
    let host_ns = |ns: &str| {
        std::fs::read_link(format!("/proc/self/ns/{ns}"))
            .expect("readlink")
            .display()
            .to_string()
    };
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert_eq!(lines[0], host_ns("pid"), "no PID namespace");
    assert_eq!(lines[1], host_ns("ipc"), "no IPC namespace");
    assert_ne!(lines[2], "sifr-box", "no hostname");
}

#[test]
fn test_overlay_disabled_falls_back_to_underlay() {
    require_unprivileged();
    let dir = tempdir();
    let src = dir.path().join("data");
    std::fs::create_dir(&src).expect("mkdir");
    std::fs::write(src.join("f"), "x").expect("write");
    let bind = format!("{}:/sifr-missing-dir", src.display());
    let img = busybox();
    let run = |c: &str| {
        sifr_conf(
            c,
            &["exec", "-B", &bind, &img, "cat", "/sifr-missing-dir/f"],
        )
    };

    // Overlay off, underlay on (the default): the destination is created as with an
    // underlay in Apptainer.
    let c = conf(dir.path(), "no-overlay.conf", "enable overlay = no\n");
    let (code, out, err) = run(&c);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, "x");
    // Both off: as in Apptainer, nothing can create it.
    let c2 = conf(
        dir.path(),
        "neither.conf",
        "enable overlay = no\nenable underlay = no\n",
    );
    let (code, _, err) = run(&c2);
    assert_eq!(code, Some(255), "{err}");
    assert!(
        err.contains("the destination does not exist in the image"),
        "{err}"
    );
    // --writable-tmpfs needs the overlay: refused in one line, as Apptainer refuses it.
    let out = sifr(["-c", &c, "exec", "--writable-tmpfs", &img, "true"]);
    assert_eq!(out.status.code(), Some(255));
    assert_one_line_error(&out, "--writable-tmpfs requires 'enable overlay'");
}

#[test]
fn test_home_mount_onto_root_is_skipped() {
    require_unprivileged();
    let dir = tempdir();
    let c = conf(dir.path(), "default.conf", "");
    let home = dir.path().display().to_string();
    let (code, out, err) = sifr_conf(
        &c,
        &[
            "exec",
            "--home",
            &format!("{home}:/"),
            &busybox(),
            "sh",
            "-c",
            "echo $HOME; test -x /bin/busybox && echo image-root",
        ],
    );
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, "/\nimage-root\n");
    assert!(
        err.contains("Skipping impossible home directory mount to '/'"),
        "{err}"
    );
}

#[test]
fn test_no_mount_removes_bind_path_entries() {
    require_unprivileged();
    let dir = tempdir();
    let site = dir.path().join("site");
    std::fs::create_dir(&site).expect("mkdir");
    let c = conf(
        dir.path(),
        "binds.conf",
        &format!(
            "bind path = /etc/localtime\nbind path = /etc/hosts\nbind path = {}:/opt/site\n",
            site.display()
        ),
    );
    let has = |mps: &[String], p: &str| mps.iter().any(|m| m == p);
    let all = mountpoints(&c, &[]);
    for p in ["/etc/localtime", "/etc/hosts", "/opt/site"] {
        assert!(has(&all, p), "{p} not bound by default: {all:?}");
    }
    // By destination, one at a time.
    for p in ["/etc/localtime", "/etc/hosts", "/opt/site"] {
        let m = mountpoints(&c, &["--no-mount", p]);
        assert!(!has(&m, p), "--no-mount {p}: {m:?}");
        assert_eq!(m.len(), all.len() - 1, "--no-mount {p} removed only {p}");
    }
    // With --contain, /etc/hosts and /etc/localtime are still removable.
    let m = mountpoints(&c, &["--contain", "--no-mount", "/etc/hosts"]);
    assert!(!has(&m, "/etc/hosts") && has(&m, "/etc/localtime"), "{m:?}");
    // bind-paths: all of them.
    let m = mountpoints(&c, &["--no-mount", "bind-paths"]);
    for p in ["/etc/localtime", "/etc/hosts", "/opt/site"] {
        assert!(!has(&m, p), "--no-mount bind-paths kept {p}: {m:?}");
    }
}

#[test]
fn test_no_mount_dev_still_runs() {
    require_unprivileged();
    let dir = tempdir();
    let c = conf(dir.path(), "default.conf", "");
    let m = mountpoints(&c, &["--no-mount", "dev"]);
    assert!(!m.iter().any(|p| p == "/dev"), "{m:?}");
    let (code, out, err) = sifr_conf(&c, &["exec", "--no-mount", "dev", &busybox(), "echo", "ok"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, "ok\n");
    // The same with the administrator's 'mount dev = no'.
    let c = conf(dir.path(), "nodev.conf", "mount dev = no\n");
    let (code, out, err) = sifr_conf(&c, &["exec", &busybox(), "echo", "ok"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, "ok\n");
}

#[test]
fn test_binary_path_is_where_newuidmap_is_looked_for() {
    require_unprivileged();
    let dir = tempdir();
    let empty = dir.path().join("no-helpers");
    std::fs::create_dir(&empty).expect("mkdir");
    let c = conf(
        dir.path(),
        "bin.conf",
        &format!("binary path = {}\n", empty.display()),
    );
    // No newuidmap there: fakeroot falls back to the root-mapped mode and says why.
    let (code, out, err) = sifr_conf(&c, &["exec", "--fakeroot", &busybox(), "id", "-u"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, "0\n");
    assert!(
        err.contains(&format!(
            "newuidmap is not installed in {}",
            empty.display()
        )),
        "{err}"
    );
}

/// `--no-mount` with a word Apptainer does not know warns with its wording and runs.
#[test]
fn test_no_mount_unknown_word_warns_and_runs() {
    require_unprivileged();
    let dir = tempdir();
    let c = conf(dir.path(), "default.conf", "");
    let (code, out, err) = sifr_conf(
        &c,
        &["exec", "--no-mount", "tmp,bogus", &busybox(), "echo", "ok"],
    );
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, "ok\n");
    assert!(err.contains("Ignoring unknown mount type 'bogus'"), "{err}");
}

/// `pull` and the conversion behind `exec oci:...` look for newuidmap where `binary path`
/// says, as exec and build do: with none there, the conversion's fakeroot falls back to
/// the root-mapped mode and says why.
#[test]
fn test_binary_path_is_used_by_pull_and_oci_conversion() {
    require_unprivileged();
    if !common::oci::have_tools(&["umoci"]) {
        return;
    }
    let t = tempdir();
    let d = t.path();
    // A one-layer OCI layout holding busybox.
    let bb = d.join("bb");
    extract_busybox(&bb);
    let umoci = |args: &[&str]| common::oci::tool(d, "umoci", args);
    umoci(&["init", "--layout", "L"]);
    umoci(&["new", "--image", "L:v0"]);
    umoci(&["unpack", "--rootless", "--image", "L:v0", "B"]);
    let out = Command::new("cp")
        .arg("-a")
        .arg(bb.join("bin"))
        .arg(d.join("B/rootfs"))
        .output()
        .expect("cp");
    assert!(out.status.success(), "{out:?}");
    umoci(&["repack", "--image", "L:v1", "B"]);
    let empty = d.join("no-helpers");
    std::fs::create_dir(&empty).expect("mkdir");
    let c = conf(
        d,
        "bin.conf",
        &format!("binary path = {}\n", empty.display()),
    );
    let notice = format!("newuidmap is not installed in {}", empty.display());
    let layout = format!("oci:{}:v1", d.join("L").display());
    let sifr_in = |args: &[&str]| {
        Command::new(sifr_bin())
            .arg("-c")
            .arg(&c)
            .args(args)
            .current_dir(d)
            .env("SIFR_CACHEDIR", d.join("cache"))
            .stdin(Stdio::null())
            .output()
            .expect("run sifr")
    };
    let pulled = d.join("p.sif").display().to_string();
    let o = sifr_in(&["pull", &pulled, &layout]);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{err}");
    assert!(err.contains(&notice), "pull: {err}");
    let o = sifr_in(&["exec", "--disable-cache", &layout, "echo", "ran"]);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(String::from_utf8_lossy(&o.stdout), "ran\n", "{err}");
    assert!(err.contains(&notice), "exec oci: {err}");
}
