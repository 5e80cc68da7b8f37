//! Flags that sifr parses but does not implement yet are refused with one line that names
//! the flag, before anything starts (never accepted and silently ignored), under every
//! spelling (flag, `SIFR_`/`APPTAINER_`/`SINGULARITY_` variable). A URI scheme sifr cannot
//! run says what is supported, not to `pull` what `pull` cannot fetch either.
//!
//! Runs as the unprivileged test user (container tests refuse root).

mod common;

use common::*;

fn busybox() -> String {
    sif_fixture("busybox_amd64.sif").display().to_string()
}

/// `sifr ARGS` fails with exit 255, one line naming `needle`, and leaves no process.
fn refused(args: &[String], envs: &[(&str, &str)], needle: &str) {
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new(sifr_bin());
    cmd.args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (k, v) in envs {
        cmd.env(k, v);
    }
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
    assert_eq!(out.status.code(), Some(255), "{args:?} {envs:?}: {out:?}");
    assert_one_line_error(&out, needle);
    assert!(out.stdout.is_empty(), "{args:?}: the payload ran: {out:?}");
    assert_session_empty(sid);
}

#[test]
fn test_unimplemented_action_flags_are_refused_by_name() {
    require_unprivileged();
    let img = busybox();
    let cases: &[(&[&str], &str)] = &[
        // Overlay directories and images work (e2e_overlay_dir, e2e_overlay_image); a file
        // that is no image is refused by name.
        (
            &["--overlay", "/etc/passwd"],
            "--overlay /etc/passwd: not an overlay image",
        ),
        (
            &["-o", "/etc/passwd:ro"],
            "--overlay /etc/passwd: not an overlay image",
        ),
        // Without nvidia-container-cli installed (sifr does not drive it in any case).
        (&["--nvccli"], "--nvccli"),
        // Profiles are applied (e2e_seccomp); a missing one is refused with its path.
        (
            &["--security", "seccomp:/nonexistent/profile.json"],
            "/nonexistent/profile.json",
        ),
        (&["--security", "apparmor:unconfined"], "apparmor"),
        (&["--security", "selinux:label"], "selinux"),
        // Capabilities are applied (e2e_caps); a name that is none is refused.
        (
            &["--add-caps", "CAP_FLY"],
            "--add-caps: unknown capability \"CAP_FLY\"",
        ),
        (
            &["--drop-caps", "chown,fly"],
            "--drop-caps: unknown capability \"fly\"",
        ),
        (&["--unsquash"], "--unsquash"),
        (&["--network-args", "portmap=80:80/tcp"], "--network-args"),
        (&["--ignore-userns"], "--ignore-userns"),
    ];
    for (flags, needle) in cases {
        for verb in ["exec", "run"] {
            let mut args: Vec<String> = vec![verb.into()];
            args.extend(flags.iter().map(|s| s.to_string()));
            args.push(img.clone());
            args.extend(["echo".to_string(), "payload-ran".to_string()]);
            refused(&args, &[], needle);
        }
    }
}

#[test]
fn test_unimplemented_flags_from_the_environment_are_refused() {
    require_unprivileged();
    let img = busybox();
    let args: Vec<String> = vec!["exec".into(), img, "echo".into(), "payload-ran".into()];
    for (k, v, needle) in [
        (
            "APPTAINER_OVERLAY",
            "/etc/passwd",
            "--overlay /etc/passwd: not an overlay image",
        ),
        ("SIFR_UNSQUASH", "yes", "--unsquash"),
        (
            "APPTAINER_SECURITY",
            "seccomp:/nonexistent.json",
            "/nonexistent.json",
        ),
        (
            "SINGULARITY_ADD_CAPS",
            "CAP_FLY",
            "--add-caps: unknown capability",
        ),
    ] {
        refused(&args, &[(k, v)], needle);
    }
}

/// `--no-privs` without `--fakeroot` drops nothing the caller could hold: it runs.
#[test]
fn test_no_privs_without_fakeroot_runs() {
    require_unprivileged();
    let out = sifr(["exec", "--no-privs", &busybox(), "echo", "ok"]);
    assert_eq!(ok(&out), "ok\n");
}

/// `exec library://...` says which sources sifr runs, and does not send the user to `pull`
/// (which cannot fetch library:// images either).
#[test]
fn test_unsupported_scheme_message_is_not_misleading() {
    require_unprivileged();
    for uri in ["library://alpine:latest", "shub://user/image"] {
        let out = sifr(["exec", uri, "true"]);
        assert_eq!(out.status.code(), Some(255), "{uri}");
        assert_one_line_error(&out, "images are not supported by sifr");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("docker://"), "{err}");
        assert!(!err.contains("pull the image"), "{err}");
    }
}

/// Apptainer's other action flags that sifr does not implement are refused by name too
/// (the cgroup flags are applied: e2e_cgroups); the hidden `--no-nv`/`--no-rocm` run (they only turn off `always use nv/rocm`).
#[test]
fn test_other_apptainer_action_flags() {
    require_unprivileged();
    let img = busybox();
    let cases: &[(&[&str], &str)] = &[
        (&["--boot"], "--boot"),
        (&["--fusemount", "host:sshfs#u@h: /mnt"], "--fusemount"),
        (&["--device", "nvidia.com/gpu=all"], "--device"),
        (&["--cdi-dirs", "/etc/cdi"], "--cdi-dirs"),
        (&["--compat32"], "--compat32"),
        (&["--intel-hpu"], "--intel-hpu"),
        (&["--dmtcp-launch", "ck"], "--dmtcp-launch"),
        (&["--dmtcp-restart", "ck"], "--dmtcp-restart"),
        (&["--underlay"], "--underlay"),
        (&["--runscript-timeout", "5s"], "--runscript-timeout"),
        (&["--netns-path", "/run/netns/x"], "--netns-path"),
    ];
    for (flags, needle) in cases {
        let mut args: Vec<String> = vec!["exec".into()];
        args.extend(flags.iter().map(|s| s.to_string()));
        args.push(img.clone());
        args.extend(["echo".to_string(), "payload-ran".to_string()]);
        refused(&args, &[], needle);
    }
    for flag in ["--no-nv", "--no-rocm"] {
        assert_eq!(ok(&sifr(["exec", flag, &img, "echo", "ran"])), "ran\n");
    }
}
