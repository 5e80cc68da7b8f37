//! The action flags sifr implements, each with a visible effect inside the container, so
//! that docs/compatibility.md can name a test for every "same" row; and the flags that need
//! root refused with one line.
//!
//! Runs as the unprivileged test user (container tests refuse root).

mod common;

use std::process::{Command, Stdio};

use common::*;

fn busybox() -> String {
    sif_fixture("busybox_amd64.sif").display().to_string()
}

/// `sifr exec FLAGS... busybox sh -c SCRIPT`: its stdout (must succeed) and stderr.
fn exec_sh(flags: &[&str], script: &str) -> (String, String) {
    let img = busybox();
    let mut args: Vec<&str> = vec!["exec"];
    args.extend(flags);
    args.extend([img.as_str(), "/bin/sh", "-c", script]);
    let out = sifr(&args);
    let stdout = ok(&out);
    (stdout, String::from_utf8_lossy(&out.stderr).into_owned())
}

fn host_ns(ns: &str) -> String {
    std::fs::read_link(format!("/proc/self/ns/{ns}"))
        .expect("host namespace")
        .display()
        .to_string()
}

#[test]
fn test_namespace_flags() {
    require_unprivileged();
    let (out, _) = exec_sh(&["--ipc"], "readlink /proc/self/ns/ipc");
    assert_ne!(out.trim(), host_ns("ipc"), "--ipc");
    let (out, _) = exec_sh(&["-i"], "readlink /proc/self/ns/ipc");
    assert_ne!(out.trim(), host_ns("ipc"), "-i");
    let (out, _) = exec_sh(&["--uts"], "readlink /proc/self/ns/uts");
    assert_ne!(out.trim(), host_ns("uts"), "--uts");
    let (out, _) = exec_sh(&["--hostname", "box1"], "cat /proc/sys/kernel/hostname");
    assert_eq!(out, "box1\n", "--hostname");
    let (out, _) = exec_sh(
        &["--net", "--network", "none"],
        "readlink /proc/self/ns/net",
    );
    assert_ne!(out.trim(), host_ns("net"), "--net --network none");
    // --userns: sifr always runs in a user namespace.
    let (out, _) = exec_sh(&["-u"], "readlink /proc/self/ns/user");
    assert_ne!(out.trim(), host_ns("user"), "-u");
    // --pid with sifr's init as PID 1, or the payload itself with --no-init.
    let (out, _) = exec_sh(&["--pid"], "echo $$");
    assert_ne!(out.trim(), "1", "--pid keeps an init as PID 1");
    let (out, _) = exec_sh(&["--pid", "--no-init"], "echo $$");
    assert_eq!(out.trim(), "1", "--no-init");
    // --no-pid wins over --containall's PID namespace.
    let (out, _) = exec_sh(&["--containall", "--no-pid"], "readlink /proc/self/ns/pid");
    assert_eq!(out.trim(), host_ns("pid"), "--no-pid");
}

#[test]
fn test_filesystem_and_environment_flags() {
    require_unprivileged();
    let (out, _) = exec_sh(&["--dns", "192.0.2.1,192.0.2.2"], "cat /etc/resolv.conf");
    assert!(
        out.contains("nameserver 192.0.2.1\nnameserver 192.0.2.2"),
        "--dns: {out}"
    );
    let (out, _) = exec_sh(&["--writable-tmpfs"], "echo w > /written && cat /written");
    assert_eq!(out, "w\n", "--writable-tmpfs");
    let (out, _) = exec_sh(&["--cwd", "/etc"], "pwd");
    assert_eq!(out, "/etc\n", "--cwd");
    let (out, _) = exec_sh(
        &["--no-home", "--contain"],
        "ls -A \"$HOME\" 2>/dev/null | wc -l",
    );
    assert_eq!(out.trim(), "0", "--no-home --contain");
    // --no-umask: 0022 whatever the caller's umask.
    let img = busybox();
    let out = Command::new("sh")
        .args([
            "-c",
            "umask 077; exec \"$0\" exec --no-umask \"$1\" /bin/sh -c umask",
        ])
        .arg(sifr_bin())
        .arg(&img)
        .output()
        .expect("run");
    assert_eq!(ok(&out), "0022\n", "--no-umask");
    let out = Command::new("sh")
        .args(["-c", "umask 077; exec \"$0\" exec \"$1\" /bin/sh -c umask"])
        .arg(sifr_bin())
        .arg(&img)
        .output()
        .expect("run");
    assert_eq!(ok(&out), "0077\n", "the caller's umask by default");
    // --env-file, --no-env, --cleanenv, --no-eval.
    let dir = tempdir();
    let f = dir.path().join("vars");
    std::fs::write(&f, "FROM_FILE=file-value\n").expect("write");
    let (out, _) = exec_sh(
        &["--env-file", f.to_str().expect("utf8")],
        "echo $FROM_FILE",
    );
    assert_eq!(out, "file-value\n", "--env-file");
    let out = Command::new(sifr_bin())
        .args([
            "exec",
            "--no-env",
            "HOSTVAR",
            &img,
            "/bin/sh",
            "-c",
            "echo \"[$HOSTVAR][$OTHER]\"",
        ])
        .env("HOSTVAR", "h")
        .env("OTHER", "o")
        .output()
        .expect("run");
    assert_eq!(ok(&out), "[][o]\n", "--no-env");
    let out = Command::new(sifr_bin())
        .args([
            "exec",
            "--cleanenv",
            &img,
            "/bin/sh",
            "-c",
            "echo \"[$OTHER]\"",
        ])
        .env("OTHER", "o")
        .output()
        .expect("run");
    assert_eq!(ok(&out), "[]\n", "--cleanenv");
    let (out, _) = exec_sh(
        &["--no-eval", "--env", "V=$(echo evaluated)"],
        "echo \"$V\"",
    );
    assert_eq!(out, "$(echo evaluated)\n", "--no-eval");
    // --compat: --containall (clean environment, PID namespace) and a writable tmpfs.
    let out = Command::new(sifr_bin())
        .args([
            "exec",
            "--compat",
            &img,
            "/bin/sh",
            "-c",
            "echo \"[$OTHER]\"; touch /compat-file && echo writable; readlink /proc/self/ns/pid",
        ])
        .env("OTHER", "o")
        .output()
        .expect("run");
    let text = ok(&out);
    assert!(text.starts_with("[]\nwritable\n"), "--compat: {text}");
    assert!(!text.contains(&host_ns("pid")), "--compat: {text}");
}

#[test]
fn test_shell_flag() {
    require_unprivileged();
    let mut child = Command::new(sifr_bin())
        .args(["shell", "--shell", "/bin/ash", &busybox()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(b"echo \"shell=$0\"\n").expect("write");
    }
    let out = child.wait_with_output().expect("wait");
    assert_eq!(ok(&out), "shell=/bin/ash\n", "--shell");
}

/// What needs root, and what sifr warns it does not apply (resource limits: e2e_cgroups).
#[test]
fn test_root_only_flags_refused_and_sharens_warned() {
    require_unprivileged();
    let img = busybox();
    for (flags, needle) in [
        (vec!["--keep-privs"], "--keep-privs requires root"),
        (vec!["--allow-setuid"], "--allow-setuid requires root"),
        (vec!["--security", "uid:0"], "other ids need --fakeroot"),
        (vec!["--oci"], "--oci is not supported"),
        (vec!["--network", "bridge"], "--network bridge"),
    ] {
        let mut args = vec!["exec"];
        args.extend(flags.iter().copied());
        args.extend([img.as_str(), "echo", "payload-ran"]);
        let out = sifr(&args);
        assert_eq!(out.status.code(), Some(255), "{flags:?}");
        assert_one_line_error(&out, needle);
        assert!(out.stdout.is_empty(), "{flags:?}");
    }
    let out = sifr(["exec", "--sharens", &img, "echo", "ran"]);
    assert_eq!(ok(&out), "ran\n", "--sharens");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--sharens"), "{err}");
    // --no-oci is the default.
    assert_eq!(
        ok(&sifr(["exec", "--no-oci", &img, "echo", "ran"])),
        "ran\n"
    );
}

#[test]
fn test_mount_home_and_ignore_subuid() {
    require_unprivileged();
    let dir = tempdir();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).expect("mkdir");
    std::fs::write(data.join("f"), "in-data\n").expect("write");
    let d = data.to_str().expect("utf8");
    // --mount type=bind: source and destination.
    let spec = format!("type=bind,source={d},destination=/mnt/m");
    let (out, _) = exec_sh(&["--mount", &spec], "cat /mnt/m/f");
    assert_eq!(out, "in-data\n", "--mount");
    // -H SRC:DST: the home directory is SRC, seen at DST.
    let home = format!("{d}:/home/alt");
    let (out, _) = exec_sh(&["-H", &home], "echo $HOME; cat /home/alt/f");
    assert_eq!(out, "/home/alt\nin-data\n", "-H");
    // --ignore-subuid: fakeroot maps only the caller's id (root-mapped), whatever
    // /etc/subuid grants.
    let (out, _) = exec_sh(
        &["--fakeroot", "--ignore-subuid"],
        "id -u; grep -c . /proc/self/uid_map",
    );
    assert_eq!(out, "0\n1\n", "--fakeroot --ignore-subuid");
}

/// `--tmpdir`: where an OCI source is converted (an empty OCI layout made with umoci).
#[test]
fn test_tmpdir_is_where_a_conversion_works() {
    require_unprivileged();
    if !common::oci::have_tools(&["umoci"]) {
        return;
    }
    let dir = tempdir();
    common::oci::tool(dir.path(), "umoci", &["init", "--layout", "L"]);
    common::oci::tool(dir.path(), "umoci", &["new", "--image", "L:v0"]);
    let layout = format!("oci:{}:v0", dir.path().join("L").display());
    let missing = dir.path().join("no-such-tmp");
    let m = missing.to_str().expect("utf8");
    let out = sifr([
        "-q",
        "exec",
        "--disable-cache",
        "--tmpdir",
        m,
        &layout,
        "true",
    ]);
    assert_eq!(out.status.code(), Some(255));
    assert_one_line_error(&out, m);
    // Without it the conversion works (the empty image then has no `true` to run).
    let out = sifr(["exec", "--disable-cache", &layout, "true"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains(m), "{err}");
    assert!(err.contains("executable file not found"), "{err}");
}
