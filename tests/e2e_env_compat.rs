//! End-to-end tests of Apptainer's environment contract, run as the unprivileged user:
//! injected variables (`APPTAINERENV_`/`SINGULARITYENV_`, `--env`, `--env-file`) quoted and
//! parsed as Apptainer does, `LD_LIBRARY_PATH` handled as its action script does, and the
//! `APPTAINER_*`/`SINGULARITY_*` names its CLI binds to flags (alternative names and
//! boolean spellings included; names bound to flags sifr lacks are refused).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use common::*;

fn busybox() -> String {
    sif_fixture("busybox_amd64.sif").display().to_string()
}

/// The busybox rootfs as a sandbox directory with a stand-in `/sbin/ldconfig` that lists two
/// library directories the way glibc's `ldconfig -Nv` does, and an environment script that
/// defaults one variable and empties another; extracted once per run.
fn busybox_with_ldconfig() -> PathBuf {
    static DIR: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    DIR.get_or_init(|| {
        let t = tempdir();
        let root = t.path().join("busybox");
        extract_busybox(&root);
        std::fs::create_dir_all(root.join("sbin")).expect("mkdir sbin");
        let ldconfig = root.join("sbin/ldconfig");
        let _ = std::fs::remove_file(&ldconfig);
        std::fs::write(
            &ldconfig,
            "#!/bin/sh\n[ \"$1\" = -Nv ] || exit 1\n\
             printf '/opt/lib1: (from /etc/ld.so.conf.d/x.conf:1)\\n\\tlibx.so -> libx.so.1\\n/usr/lib/extra:\\n'\n",
        )
        .expect("write ldconfig");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&ldconfig, std::fs::Permissions::from_mode(0o755))
            .expect("chmod ldconfig");
        std::fs::write(
            root.join(".singularity.d/env/95-sifrtest.sh"),
            "export FROMHOST=\"${FROMHOST:-image-default}\"\nexport EMPTIED=\n",
        )
        .expect("write env script");
        (t, root)
    })
    .1
    .clone()
}

/// Runs sifr with `args` and extra environment variables, stdin closed, in `/`.
fn sifr_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(sifr_bin());
    c.args(args).current_dir("/").stdin(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run sifr")
}

/// `sh -c SCRIPT` in the busybox image; returns stdout.
fn exec_sh(script: &str, flags: &[&str], env: &[(&str, &str)]) -> String {
    let img = busybox();
    let mut args = vec!["exec"];
    args.extend_from_slice(flags);
    args.extend_from_slice(&[&img, "sh", "-c", script]);
    ok(&sifr_env(&args, env))
}

#[test]
fn test_escaped_dollar_stays_literal_in_injected_values() {
    require_unprivileged();
    let d = tempdir();
    let file = d.path().join("env");
    // The file is evaluated on the host first: '\$HOME' in single quotes is the value \$HOME,
    // which the injection then turns into a literal $HOME, as in Apptainer.
    std::fs::write(&file, "FROMFILE='\\$HOME'\n").expect("write env file");
    let out = exec_sh(
        "echo \"$A|$B|$C|$FROMFILE|$D\"",
        &[
            "--env",
            "C=\\$HOME",
            "--env-file",
            file.to_str().expect("utf-8"),
        ],
        &[
            ("APPTAINERENV_A", "\\$HOME"),
            ("SINGULARITYENV_B", "x\\$HOME"),
            // Unescaped, the variable is expanded inside the container.
            ("APPTAINERENV_D", "$APPTAINER_NAME"),
        ],
    );
    assert_eq!(
        out, "$HOME|x$HOME|$HOME|$HOME|busybox_amd64.sif\n",
        "a backslash-escaped $ must stay a literal $"
    );
}

#[test]
fn test_env_flag_values_with_commas_and_equals_parse_as_apptainer() {
    require_unprivileged();
    // One '=': the whole value is one variable, commas included.
    let out = exec_sh("echo \"$A\"", &["--env", "A=x,y"], &[]);
    assert_eq!(out, "x,y\n");
    // Several '=': a CSV record of K=V pairs; a value may itself hold '='.
    let out = exec_sh(
        "echo \"$B|$C|$D|$E\"",
        &["--env", "B=1,C=a=b", "--env", "\"D=q,r\",E=s"],
        &[],
    );
    assert_eq!(out, "1|a=b|q,r|s\n");
    // A pair without '=' among several is refused with one line naming it.
    let img = busybox();
    let bad = sifr_env(&["exec", "--env", "F=1,G,H=2", &img, "true"], &[]);
    assert_one_line_error(&bad, "G");
    // With one '=', "1,G" is the value.
    let out = exec_sh("echo \"$F\"", &["--env", "F=1,G"], &[]);
    assert_eq!(out, "1,G\n");
}

#[test]
fn test_injected_ld_library_path_gets_the_libs_directory_appended() {
    require_unprivileged();
    let out = exec_sh(
        "echo \"$LD_LIBRARY_PATH\"",
        &[],
        &[("APPTAINERENV_LD_LIBRARY_PATH", "/opt/lib")],
    );
    assert_eq!(out, "/opt/lib:/.singularity.d/libs\n");
    let out = exec_sh(
        "echo \"$LD_LIBRARY_PATH\"",
        &["--env", "LD_LIBRARY_PATH=/x"],
        &[("LD_LIBRARY_PATH", "/host/lib")],
    );
    assert_eq!(
        out, "/x:/.singularity.d/libs\n",
        "the host's value never passes"
    );
}

#[test]
fn test_prepend_append_ld_library_path_and_ldconfig_directories() {
    require_unprivileged();
    let root = busybox_with_ldconfig();
    let img = root.to_str().expect("utf-8");
    let show = ["exec", img, "sh", "-c", "echo \"$LD_LIBRARY_PATH\""];
    // Nothing asked, /.singularity.d/libs empty: 99-base.sh's value, ldconfig not asked.
    assert_eq!(ok(&sifr_env(&show, &[])), "/.singularity.d/libs\n");
    // PREPEND/APPEND: the default system directories (ldconfig -Nv) come first, then the
    // prepended and appended parts, as Apptainer's action script does.
    let out = ok(&sifr_env(
        &show,
        &[
            ("APPTAINERENV_PREPEND_LD_LIBRARY_PATH", "/pre"),
            ("SINGULARITYENV_APPEND_LD_LIBRARY_PATH", "/post"),
        ],
    ));
    assert_eq!(
        out,
        "/pre:/opt/lib1:/usr/lib/extra:/.singularity.d/libs:/post\n"
    );
    let out = ok(&sifr_env(
        &show,
        &[("APPTAINERENV_APPEND_LD_LIBRARY_PATH", "/post")],
    ));
    assert_eq!(out, "/opt/lib1:/usr/lib/extra:/.singularity.d/libs:/post\n");
}

#[test]
fn test_image_scripts_run_without_the_host_environment_as_in_apptainer() {
    require_unprivileged();
    // Apptainer hides the starting environment from the image's scripts (clear_env) and
    // gives back afterwards what they left unset; what they left empty is unset.
    let root = busybox_with_ldconfig();
    let img = root.to_str().expect("utf-8");
    let out = ok(&sifr_env(
        &[
            "exec",
            img,
            "sh",
            "-c",
            "echo \"$FROMHOST|${EMPTIED-unset}|$KEPT|$HOME|$PATH\"",
        ],
        &[("FROMHOST", "host"), ("EMPTIED", "x"), ("KEPT", "k")],
    ));
    let home = std::env::var("HOME").expect("HOME");
    assert_eq!(
        out,
        format!(
            "image-default|unset|k|{home}|/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"
        )
    );
}

#[test]
fn test_noenv_blocks_host_variables_under_both_prefixes() {
    require_unprivileged();
    for prefix in ["APPTAINER_", "SINGULARITY_"] {
        let key = format!("{prefix}NOENV");
        let out = exec_sh(
            "echo \"${SECRET:-none}|${OTHER:-none}|$KEPT\"",
            &[],
            &[
                (&key, "SECRET, OTHER"),
                ("SECRET", "s"),
                ("OTHER", "o"),
                ("KEPT", "k"),
            ],
        );
        assert_eq!(out, "none|none|k\n", "{key}");
    }
}

#[test]
fn test_alternative_names_bind_their_flags() {
    require_unprivileged();
    for (k, v) in [
        ("APPTAINER_CWD", "/etc"),
        ("SINGULARITY_CWD", "/etc"),
        ("APPTAINER_TARGET_CWD", "/etc"),
        ("SINGULARITY_TARGET_PWD", "/etc"),
    ] {
        assert_eq!(exec_sh("pwd", &[], &[(k, v)]), "/etc\n", "{k}");
    }
    for k in ["APPTAINER_UNSHARE_PID", "SINGULARITY_UNSHARE_PID"] {
        assert_eq!(exec_sh("echo $$", &[], &[(k, "1")]), "2\n", "{k}");
    }
    for k in ["APPTAINER_SCRATCHDIR", "SINGULARITY_SCRATCHDIR"] {
        let out = exec_sh("test -d /scr && echo yes", &[], &[(k, "/scr")]);
        assert_eq!(out, "yes\n", "{k}");
    }
    // Names bound to a flag give what the flag gives, word for word.
    let img = busybox();
    let same = |flag: &[&str], env: (&str, &str)| {
        let mut args: Vec<&str> = flag.to_vec();
        args.extend_from_slice(&[img.as_str(), "true"]);
        let by_flag = sifr_env(&args, &[]);
        let by_env = sifr_env(&["exec", &img, "true"], &[env]);
        assert_eq!(
            (
                by_flag.status.code(),
                String::from_utf8_lossy(&by_flag.stderr)
            ),
            (
                by_env.status.code(),
                String::from_utf8_lossy(&by_env.stderr)
            ),
            "{env:?} must behave as {flag:?}"
        );
        by_env
    };
    let o = same(
        &["exec", "--app", "nosuchapp"],
        ("SINGULARITY_APPNAME", "nosuchapp"),
    );
    assert!(!o.status.success());
    let o = same(
        &["-c", "/nonexistent/sifr.conf", "exec"],
        ("APPTAINER_CONFIG_FILE", "/nonexistent/sifr.conf"),
    );
    assert!(!o.status.success());
    same(
        &["exec", "--overlay", "/nonexistent.img"],
        ("APPTAINER_OVERLAYIMAGE", "/nonexistent.img"),
    );
}

#[test]
fn test_booleans_accept_what_apptainer_accepts() {
    require_unprivileged();
    for v in ["1", "true", "TRUE", "True", "t", "T", " true "] {
        let out = exec_sh(
            "echo \"${HOSTVAR:-none}\"",
            &[],
            &[("APPTAINER_CLEANENV", v), ("HOSTVAR", "h")],
        );
        assert_eq!(out, "none\n", "APPTAINER_CLEANENV={v:?} is true");
    }
    for v in ["0", "false", "FALSE", "f", "F"] {
        let out = exec_sh(
            "echo \"${HOSTVAR:-none}\"",
            &[],
            &[("SINGULARITY_CLEANENV", v), ("HOSTVAR", "h")],
        );
        assert_eq!(out, "h\n", "SINGULARITY_CLEANENV={v:?} is false");
    }
    let img = busybox();
    let bad = sifr_env(&["exec", &img, "true"], &[("APPTAINER_CLEANENV", "maybe")]);
    assert_one_line_error(&bad, "maybe");
}

#[test]
fn test_names_bound_to_flags_sifr_lacks_are_refused() {
    require_unprivileged();
    let img = busybox();
    for (k, v, flag) in [
        ("APPTAINER_COMPAT32", "1", "--compat32"),
        ("SINGULARITY_FUSESPEC", "x", "--fusemount"),
        ("APPTAINER_UNDERLAY", "true", "--underlay"),
    ] {
        let out = sifr_env(&["exec", &img, "true"], &[(k, v)]);
        assert_one_line_error(&out, k);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(flag), "{err}");
    }
    // Set to false, such a boolean asks for nothing: the container runs.
    let out = sifr_env(&["exec", &img, "true"], &[("APPTAINER_UNDERLAY", "false")]);
    ok(&out);
    // Bound for run only (as in Apptainer): exec ignores it, run refuses it.
    let t = [("APPTAINER_RUNSCRIPT_TIMEOUT", "10")];
    ok(&sifr_env(&["exec", &img, "true"], &t));
    assert_one_line_error(&sifr_env(&["run", &img], &t), "--runscript-timeout");
    // Turning GPU set-up off (what `always use nv/rocm` turns on): the container runs.
    for k in [
        "APPTAINER_NO_NV",
        "SINGULARITY_NV_OFF",
        "APPTAINER_NO_ROCM",
        "APPTAINER_ROCM_OFF",
    ] {
        ok(&sifr_env(&["exec", &img, "true"], &[(k, "1")]));
    }
}

#[test]
fn test_build_names_under_both_prefixes() {
    require_unprivileged();
    let d = tempdir();
    for (i, k) in ["APPTAINER_SANDBOX", "SINGULARITY_SANDBOX"]
        .iter()
        .enumerate()
    {
        let dest = d.path().join(format!("sb{i}"));
        let out = Command::new(sifr_bin())
            .arg("build")
            .arg(&dest)
            .arg(sif_fixture("busybox_amd64.sif"))
            .current_dir(d.path())
            .env(k, "1")
            .stdin(Stdio::null())
            .output()
            .expect("run sifr");
        ok(&out);
        assert!(
            Path::new(&dest).join("bin/busybox").exists(),
            "{k}=1 builds a sandbox"
        );
    }
    // MKSQUASHFS_ARGS reaches the squashfs writer (an unknown compressor is refused).
    let out = Command::new(sifr_bin())
        .arg("build")
        .arg(d.path().join("x.sif"))
        .arg(sif_fixture("busybox_amd64.sif"))
        .current_dir(d.path())
        .env("SINGULARITY_MKSQUASHFS_ARGS", "-comp nosuchcomp")
        .stdin(Stdio::null())
        .output()
        .expect("run sifr");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nosuchcomp"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn test_build_post_is_not_refused_for_names_only_actions_bind() {
    require_unprivileged();
    // Apptainer's build ignores APPTAINER_UNDERLAY; %post runs through `sifr exec`, which
    // must not refuse it there.
    let d = tempdir();
    let def = d.path().join("img.def");
    std::fs::write(
        &def,
        format!(
            "Bootstrap: localimage\nFrom: {}\n\n%post\n    echo ran > /post-ran\n",
            sif_fixture("busybox_amd64.sif").display()
        ),
    )
    .expect("write def");
    let dest = d.path().join("sb");
    let out = Command::new(sifr_bin())
        .args(["build", "--sandbox"])
        .arg(&dest)
        .arg(&def)
        .current_dir(d.path())
        .env("APPTAINER_UNDERLAY", "1")
        .stdin(Stdio::null())
        .output()
        .expect("run sifr");
    ok(&out);
    assert_eq!(
        std::fs::read_to_string(dest.join("post-ran")).expect("%post ran"),
        "ran\n"
    );
}

#[test]
fn test_names_bound_to_flags_behave_as_the_flags() {
    require_unprivileged();
    // Whatever sifr does with the flag (runs, warns or refuses), the name does the same,
    // word for word, under both prefixes.
    let img = busybox();
    let cases: &[(&str, &str, &[&str])] = &[
        ("NV", "1", &["--nv"]),
        ("ROCM", "true", &["--rocm"]),
        ("ADD_CAPS", "CAP_NET_RAW", &["--add-caps", "CAP_NET_RAW"]),
        ("DROP_CAPS", "CAP_CHOWN", &["--drop-caps", "CAP_CHOWN"]),
        (
            "SECURITY",
            "seccomp:x.json",
            &["--security", "seccomp:x.json"],
        ),
        (
            "NETWORK_ARGS",
            "portmap=80:80",
            &["--network-args", "portmap=80:80"],
        ),
        (
            "APPLY_CGROUPS",
            "/nonexistent.toml",
            &["--apply-cgroups", "/nonexistent.toml"],
        ),
        ("MEMORY", "1G", &["--memory", "1G"]),
        ("CPU_SHARES", "2", &["--cpus", "2"]),
        ("PIDS_LIMIT", "10", &["--pids-limit", "10"]),
        // The other cgroup flags (Apptainer's names).
        ("MEMORY_SWAP", "1G", &["--memory-swap", "1G"]),
        ("MEMORY_RESERVATION", "1G", &["--memory-reservation", "1G"]),
        ("BLKIO_WEIGHT", "100", &["--blkio-weight", "100"]),
        (
            "BLKIO_WEIGHT_DEVICE",
            "/dev/sda:100",
            &["--blkio-weight-device", "/dev/sda:100"],
        ),
        ("CPUSET_CPUS", "0", &["--cpuset-cpus", "0"]),
        ("CPUSET_MEMS", "0", &["--cpuset-mems", "0"]),
        ("OOM_KILL_DISABLE", "1", &["--oom-kill-disable"]),
        ("KEEP_PRIVS", "1", &["--keep-privs"]),
        ("ALLOW_SETUID", "1", &["--allow-setuid"]),
        ("NETWORK", "bridge", &["--network", "bridge"]),
        ("HOSTNAME", "box", &["--hostname", "box"]),
    ];
    for (key, value, flag) in cases {
        let mut args = vec!["exec"];
        args.extend_from_slice(flag);
        args.extend_from_slice(&[img.as_str(), "sh", "-c", "hostname"]);
        let by_flag = sifr_env(&args, &[]);
        for prefix in ["APPTAINER_", "SINGULARITY_"] {
            let name = format!("{prefix}{key}");
            let by_env = sifr_env(
                &["exec", &img, "sh", "-c", "hostname"],
                &[(name.as_str(), value)],
            );
            assert_eq!(
                (
                    by_env.status.code(),
                    String::from_utf8_lossy(&by_env.stdout),
                    String::from_utf8_lossy(&by_env.stderr)
                ),
                (
                    by_flag.status.code(),
                    String::from_utf8_lossy(&by_flag.stdout),
                    String::from_utf8_lossy(&by_flag.stderr)
                ),
                "{name}={value} must behave as {flag:?}"
            );
        }
    }
}

#[test]
fn test_names_of_verbs_sifr_lacks_are_refused_with_the_verb() {
    require_unprivileged();
    // Apptainer binds these names only for verbs sifr does not have: the verb itself is
    // refused, one line, whatever the environment says.
    let cases: &[(&[&str], (&str, &str))] = &[
        (
            &["capability", "add", "CAP_NET_RAW"],
            ("APPTAINER_CAP_USER", "u"),
        ),
        (&["delete", "library://x"], ("APPTAINER_ARCH", "amd64")),
        (
            &["remote", "add", "x", "https://x"],
            ("APPTAINER_ADD_INSECURE", "1"),
        ),
        (&["oci", "state", "x"], ("APPTAINER_LOG_FORMAT", "json")),
        (&["search", "x"], ("SINGULARITY_SEARCH_ARCH", "amd64")),
    ];
    for (verb, env) in cases {
        let out = sifr_env(verb, &[*env]);
        assert_one_line_error(&out, "is an Apptainer command that sifr does not implement");
    }
    let img = busybox();
    let out = sifr_env(
        &["instance", "start", &img, "x"],
        &[
            ("APPTAINER_PID_FILE", "/tmp/x.pid"),
            ("APPTAINER_BOOT", "1"),
        ],
    );
    // APPTAINER_PID_FILE is read (bound as --pid-file); APPTAINER_BOOT asks for --boot,
    // which no unprivileged start has: refused in one line.
    assert_one_line_error(&out, "--boot");
    assert_eq!(out.status.code(), Some(255), "{out:?}");
}

/// Build flags sifr accepts (it always builds in a user namespace, never runs the fakeroot
/// command or proot, builds the host's architecture): their Apptainer names are accepted
/// as the flags are, not refused; another architecture is refused as `--arch` refuses it.
#[test]
fn test_build_names_of_flags_sifr_accepts() {
    require_unprivileged();
    let d = tempdir();
    let build = |dest: &str, env: &[(&str, &str)]| {
        let mut c = Command::new(sifr_bin());
        c.args(["build", "--sandbox", dest])
            .arg(sif_fixture("busybox_amd64.sif"))
            .current_dir(d.path())
            .stdin(Stdio::null());
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().expect("run sifr")
    };
    let out = build(
        "sb",
        &[
            ("APPTAINER_USERNS", "1"),
            ("SINGULARITY_IGNORE_PROOT", "true"),
            ("APPTAINER_IGNORE_FAKEROOT_COMMAND", "yes"),
            ("APPTAINER_BUILD_ARCH", "amd64"),
        ],
    );
    ok(&out);
    assert!(d.path().join("sb/bin/busybox").exists());
    let out = build("sb2", &[("SINGULARITY_BUILD_ARCH", "arm64")]);
    assert_one_line_error(&out, "--arch arm64");
}
