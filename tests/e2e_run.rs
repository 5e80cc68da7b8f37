//! End-to-end container tests: the real sifr binary runs real images as an unprivileged
//! user (CI runs this binary as the test user; it refuses to run as root).
//!
//! Images: the busybox SIF built by Apptainer (`busybox_amd64.sif`) and a sandbox directory
//! extracted from it with `unsquashfs`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use common::*;

/// The busybox rootfs as a sandbox directory, extracted once per test run.
fn busybox_sandbox() -> PathBuf {
    static DIR: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    DIR.get_or_init(|| {
        let t = tempdir();
        let root = t.path().join("busybox");
        let out = Command::new("unsquashfs")
            .args(["-q", "-n", "-o", "45056", "-d"])
            .arg(&root)
            .arg(sif_fixture("busybox_amd64.sif"))
            .output()
            .expect("run unsquashfs (squashfs-tools)");
        assert!(
            root.join("bin/busybox").exists(),
            "unsquashfs failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        (t, root)
    })
    .1
    .clone()
}

/// Runs `sifr ARGS` in `cwd` and returns (status code, stdout, stderr).
fn sifr_in(cwd: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(sifr_bin())
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .output()
        .expect("run sifr");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The busybox rootfs as a bare squashfs image (no SIF around it), made once per run.
fn busybox_squashfs() -> PathBuf {
    static IMG: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    IMG.get_or_init(|| {
        let t = tempdir();
        let img = t.path().join("busybox.img");
        let out = Command::new("mksquashfs")
            .arg(busybox_sandbox())
            .arg(&img)
            .args(["-noappend", "-quiet", "-comp", "gzip"])
            .output()
            .expect("run mksquashfs (squashfs-tools)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        (t, img)
    })
    .1
    .clone()
}

/// Every image kind the tests run: sandbox directory and bare squashfs (named `.img`, as
/// workflow tools name images: the kind is detected by content).
fn images() -> Vec<String> {
    vec![
        busybox_sandbox().display().to_string(),
        busybox_squashfs().display().to_string(),
    ]
}

#[test]
fn test_exec_echo_quiet_success() {
    require_unprivileged();
    for img in images() {
        let (code, out, err) = sifr_in(Path::new("/"), &["exec", &img, "echo", "hello"]);
        assert_eq!(code, Some(0), "{img}: {err}");
        assert_eq!(out, "hello\n");
        assert_eq!(err, "", "a successful exec prints nothing on stderr");
    }
}

#[test]
fn test_same_identity_no_caps_no_new_privs() {
    require_unprivileged();
    // SAFETY: getuid/getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    for img in images() {
        let (code, out, err) = sifr_in(
            Path::new("/"),
            &[
                "exec",
                &img,
                "sh",
                "-c",
                "id -u; id -g; grep -E '^(CapEff|CapPrm|CapBnd|CapAmb|NoNewPrivs)' /proc/self/status",
            ],
        );
        assert_eq!(code, Some(0), "{err}");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], uid.to_string());
        assert_eq!(lines[1], gid.to_string());
        for l in &lines[2..] {
            if l.starts_with("NoNewPrivs") {
                assert!(l.ends_with('1'), "{l}");
            } else {
                assert!(l.ends_with("0000000000000000"), "capability left: {l}");
            }
        }
    }
}

#[test]
fn test_no_descriptor_leaks_into_payload() {
    require_unprivileged();
    for img in images() {
        let (code, out, err) = sifr_in(Path::new("/"), &["exec", &img, "ls", "/proc/self/fd"]);
        assert_eq!(code, Some(0), "{err}");
        // 0, 1, 2 and the descriptor ls opened to read the directory.
        let fds: Vec<&str> = out.split_whitespace().collect();
        assert_eq!(fds.len(), 4, "descriptors in the payload: {fds:?}");
    }
}

#[test]
fn test_every_mount_is_nosuid_and_nodev_except_dev() {
    require_unprivileged();
    for img in images() {
        let (code, out, err) = sifr_in(
            Path::new("/"),
            &["exec", &img, "cat", "/proc/self/mountinfo"],
        );
        assert_eq!(code, Some(0), "{err}");
        for line in out.lines() {
            let f: Vec<&str> = line.split(' ').collect();
            let (mp, opts) = (f[4], f[5]);
            assert!(opts.contains("nosuid"), "{mp} is not nosuid: {line}");
            if mp != "/dev" && !mp.starts_with("/dev/") {
                assert!(opts.contains("nodev"), "{mp} is not nodev: {line}");
            }
        }
    }
}

#[test]
fn test_exit_codes_and_signal_death() {
    require_unprivileged();
    for img in images() {
        let (code, _, _) = sifr_in(Path::new("/"), &["exec", &img, "true"]);
        assert_eq!(code, Some(0));
        let (code, _, _) = sifr_in(Path::new("/"), &["exec", &img, "sh", "-c", "exit 3"]);
        assert_eq!(code, Some(3));
        // A payload killed by SIGKILL: sifr dies the same way, so a shell sees 128+9.
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "'{}' exec '{img}' sh -c 'kill -9 $$'; echo status=$?",
                sifr_bin().display()
            ))
            .output()
            .expect("sh");
        let s = String::from_utf8_lossy(&out.stdout);
        assert!(s.contains("status=137"), "{s}");
    }
}

#[test]
fn test_run_uses_runscript_with_args() {
    require_unprivileged();
    for img in images() {
        let (code, out, err) = sifr_in(Path::new("/"), &["run", &img, "echo", "via runscript"]);
        assert_eq!(code, Some(0), "{err}");
        assert_eq!(out, "via runscript\n");
    }
}

#[test]
fn test_test_action_without_test_script_succeeds() {
    require_unprivileged();
    for img in images() {
        let (code, _, err) = sifr_in(Path::new("/"), &["test", &img]);
        assert_eq!(code, Some(0), "{err}");
    }
}

#[test]
fn test_bind_read_write_and_readonly() {
    require_unprivileged();
    let dir = tempdir();
    std::fs::write(dir.path().join("in.txt"), "from host\n").expect("write");
    let src = dir.path().display().to_string();
    for img in images() {
        let spec = format!("{src}:/mnt/data");
        let (code, out, err) = sifr_in(
            Path::new("/"),
            &[
                "exec",
                "-B",
                &spec,
                &img,
                "sh",
                "-c",
                "cat /mnt/data/in.txt && echo written > /mnt/data/out.txt",
            ],
        );
        assert_eq!(code, Some(0), "{err}");
        assert_eq!(out, "from host\n");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("out.txt")).expect("read"),
            "written\n"
        );
        let spec = format!("{src}:/mnt/ro:ro");
        let (code, _, _) = sifr_in(
            Path::new("/"),
            &[
                "exec",
                "--bind",
                &spec,
                &img,
                "sh",
                "-c",
                "echo x > /mnt/ro/new",
            ],
        );
        assert_ne!(code, Some(0), "a read-only bind accepted a write");
        assert!(!dir.path().join("new").exists());
    }
}

#[test]
fn test_env_injection_precedence() {
    require_unprivileged();
    for img in images() {
        let out = Command::new(sifr_bin())
            .args(["exec", "--env", "FROMFLAG=1", &img, "sh", "-c"])
            .arg("echo $FOO $BAR $FROMFLAG $HOSTVAR; echo $PATH")
            .env("SINGULARITYENV_FOO", "sing")
            .env("APPTAINERENV_BAR", "app")
            .env("HOSTVAR", "host")
            .env("APPTAINERENV_PREPEND_PATH", "/pre")
            .output()
            .expect("sifr");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let s = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines[0], "sing app 1 host");
        assert!(lines[1].starts_with("/pre:"), "{}", lines[1]);
        // --cleanenv drops host variables but keeps injected ones.
        let out = Command::new(sifr_bin())
            .args([
                "exec",
                "--cleanenv",
                &img,
                "sh",
                "-c",
                "echo \"$HOSTVAR|$FOO|$LANG\"",
            ])
            .env("HOSTVAR", "host")
            .env("SINGULARITYENV_FOO", "sing")
            .output()
            .expect("sifr");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "|sing|C\n");
    }
}

#[test]
fn test_contain_isolates_home_tmp_and_dev() {
    require_unprivileged();
    let home = std::env::var("HOME").unwrap_or_default();
    for img in images() {
        let (code, out, err) = sifr_in(
            Path::new("/"),
            &[
                "exec",
                "--contain",
                &img,
                "sh",
                "-c",
                "ls -A \"$HOME\" | wc -l; ls -A /tmp | wc -l; ls /dev | tr '\\n' ' '",
            ],
        );
        assert_eq!(code, Some(0), "{err}");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[0].trim(),
            "0",
            "home {home} not empty in the container"
        );
        assert_eq!(lines[1].trim(), "0", "/tmp not empty");
        assert!(
            lines[2].contains("null") && lines[2].contains("pts"),
            "{}",
            lines[2]
        );
        assert!(!lines[2].contains("fuse"), "host /dev leaked: {}", lines[2]);
    }
}

#[test]
fn test_pid_namespace() {
    require_unprivileged();
    for img in images() {
        let (code, out, err) = sifr_in(
            Path::new("/"),
            &["exec", "--pid", &img, "sh", "-c", "echo $$"],
        );
        assert_eq!(code, Some(0), "{err}");
        assert_eq!(out.trim(), "2", "init is PID 1, the payload PID 2");
    }
}

#[test]
fn test_sigterm_is_relayed() {
    require_unprivileged();
    for img in images() {
        let mut child = Command::new(sifr_bin())
            .args([
                "exec",
                &img,
                "sh",
                "-c",
                "trap 'echo got-term; exit 7' TERM; echo ready; while :; do sleep 1; done",
            ])
            .stdout(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn");
        let mut stdout = child.stdout.take().expect("stdout");
        let mut buf = [0u8; 6];
        std::io::Read::read_exact(&mut stdout, &mut buf).expect("ready");
        // SAFETY: kill on our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let status = child.wait().expect("wait");
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut rest).expect("read");
        assert!(rest.contains("got-term"), "{rest}");
        assert_eq!(status.code(), Some(7));
    }
}

#[test]
fn test_bad_inputs_one_line_and_nothing_left() {
    require_unprivileged();
    let img = busybox_sandbox().display().to_string();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "exec".into(),
                "/nonexistent/image.sif".into(),
                "true".into(),
            ],
            "/nonexistent/image.sif",
        ),
        (
            vec![
                "exec".into(),
                "-B".into(),
                "/nonexistent-src:/x".into(),
                img.clone(),
                "true".into(),
            ],
            "/nonexistent-src",
        ),
        (
            vec!["exec".into(), img.clone(), "no-such-command".into()],
            "no-such-command",
        ),
        (
            vec![
                "exec".into(),
                "--pwd".into(),
                "/no/such/dir".into(),
                img.clone(),
                "true".into(),
            ],
            "/no/such/dir",
        ),
    ];
    for (args, needle) in cases {
        let (out, sid) = sifr_in_new_session(&args);
        assert_eq!(out.status.code(), Some(255), "{args:?}");
        assert_one_line_error(&out, needle);
        assert_session_empty(sid);
    }
}
