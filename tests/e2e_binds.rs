//! End-to-end: user binds as Apptainer makes them, as the unprivileged user. User binds
//! win over the system mounts (/tmp, /var/tmp, --contain, --workdir, --scratch); the bind
//! variables are appended to `-B`; `\,` escapes a comma; `--mount` without `type=` is a
//! bind; a missing destination inside a bound host directory is created there; with
//! `--writable` a missing destination is an error; `user bind control = no` warns and
//! ignores the bind.

mod common;

use std::os::unix::fs::symlink;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use common::*;

/// Runs sifr from `/` (no working-directory bind) with `env` added to the environment.
fn sifr_env(env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = Command::new(sifr_bin());
    cmd.args(args).current_dir("/").stdin(Stdio::null());
    for k in ["SIFR_", "APPTAINER_", "SINGULARITY_"]
        .iter()
        .flat_map(|p| ["BIND", "BINDPATH", "MOUNT"].map(|s| format!("{p}{s}")))
    {
        cmd.env_remove(k);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run sifr")
}

fn run_sifr(args: &[&str]) -> Output {
    sifr_env(&[], args)
}

/// The busybox SIF built by Apptainer.
fn sif() -> String {
    sif_fixture("busybox_amd64.sif").display().to_string()
}

/// A host directory holding `in.txt` with `text`.
fn hostdir(text: &str) -> tempfile::TempDir {
    let d = tempdir();
    std::fs::write(d.path().join("in.txt"), text).expect("write");
    d
}

fn path(d: &tempfile::TempDir) -> String {
    d.path().display().to_string()
}

/// A fresh busybox sandbox directory (the caller may change it).
fn sandbox() -> (tempfile::TempDir, PathBuf) {
    let t = tempdir();
    let root = t.path().join("img");
    extract_busybox(&root);
    (t, root)
}

/// `-B DIR:/tmp` and `-B DIR:/var/tmp`: the job sees the bound directory, not the host's
/// temporary directory mounted over it.
#[test]
fn test_user_bind_on_tmp_and_var_tmp_wins() {
    require_unprivileged();
    let d = hostdir("mine\n");
    for dest in ["/tmp", "/var/tmp"] {
        let spec = format!("{}:{dest}", path(&d));
        let o = run_sifr(&[
            "exec",
            "-B",
            &spec,
            &sif(),
            "cat",
            &format!("{dest}/in.txt"),
        ]);
        assert_eq!(ok(&o), "mine\n", "{dest}");
    }
}

/// User binds win over `--contain`'s empty /tmp, over `--workdir`'s /tmp and over a
/// `--scratch` directory at the same place.
#[test]
fn test_user_bind_wins_over_contain_workdir_and_scratch() {
    require_unprivileged();
    let d = hostdir("mine\n");
    let w = tempdir();
    let spec = format!("{}:/tmp", path(&d));
    let o = run_sifr(&[
        "exec",
        "--contain",
        "-B",
        &spec,
        &sif(),
        "cat",
        "/tmp/in.txt",
    ]);
    assert_eq!(ok(&o), "mine\n", "--contain");
    let o = run_sifr(&[
        "exec",
        "--contain",
        "--workdir",
        &path(&w),
        "-B",
        &spec,
        &sif(),
        "cat",
        "/tmp/in.txt",
    ]);
    assert_eq!(ok(&o), "mine\n", "--contain --workdir");
    let spec = format!("{}:/scratch", path(&d));
    let o = run_sifr(&[
        "exec",
        "--scratch",
        "/scratch",
        "-B",
        &spec,
        &sif(),
        "cat",
        "/scratch/in.txt",
    ]);
    assert_eq!(ok(&o), "mine\n", "--scratch");
}

/// An image whose /var/tmp is a link to /tmp: the host's /var/tmp is not bound onto the
/// container's /tmp (which stays the host's /tmp).
#[test]
fn test_var_tmp_linked_to_tmp_is_not_bound_over_tmp() {
    require_unprivileged();
    let (_t, img) = sandbox();
    std::fs::remove_dir_all(img.join("var/tmp")).expect("rm var/tmp");
    symlink("../tmp", img.join("var/tmp")).expect("symlink");
    let in_tmp = tempfile::Builder::new()
        .prefix("sifr-binds-tmp-")
        .tempfile_in("/tmp")
        .expect("marker in /tmp");
    let in_var_tmp = tempfile::Builder::new()
        .prefix("sifr-binds-vartmp-")
        .tempfile_in("/var/tmp")
        .expect("marker in /var/tmp");
    let name = |f: &tempfile::NamedTempFile| {
        f.path()
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned()
    };
    let script = format!(
        "test -e /tmp/{a} && echo host-tmp; test -e /tmp/{b} && echo host-var-tmp; true",
        a = name(&in_tmp),
        b = name(&in_var_tmp)
    );
    let o = run_sifr(&["exec", &img.display().to_string(), "sh", "-c", &script]);
    assert_eq!(ok(&o), "host-tmp\n");
}

/// `APPTAINER_BIND`, `SINGULARITY_BIND`, `APPTAINER_BINDPATH` and `SINGULARITY_BINDPATH`
/// are appended to `-B`, never replaced by it; inside the container `APPTAINER_BIND` (and
/// `SINGULARITY_BIND`) lists the destinations, `-B` first, as Apptainer sets it.
#[test]
fn test_bind_variables_are_appended_and_listed_inside() {
    require_unprivileged();
    let d = hostdir("data\n");
    let mnt = format!("{}:/mnt", path(&d));
    let srv = format!("{}:/srv", path(&d));
    let script = "cat /mnt/in.txt /srv/in.txt; echo \"$APPTAINER_BIND|$SINGULARITY_BIND\"";
    for var in [
        "APPTAINER_BIND",
        "SINGULARITY_BIND",
        "APPTAINER_BINDPATH",
        "SINGULARITY_BINDPATH",
    ] {
        let o = sifr_env(
            &[(var, &srv)],
            &["exec", "-B", &mnt, &sif(), "sh", "-c", script],
        );
        assert_eq!(ok(&o), "data\ndata\n/mnt,/srv|/mnt,/srv\n", "{var}");
    }
    // Both names at once, without -B.
    let o = sifr_env(
        &[("APPTAINER_BIND", &mnt), ("APPTAINER_BINDPATH", &srv)],
        &["exec", &sif(), "sh", "-c", script],
    );
    assert_eq!(ok(&o), "data\ndata\n/mnt,/srv|/mnt,/srv\n");
    // No bind at all: set, and empty.
    let o = run_sifr(&[
        "exec",
        &sif(),
        "sh",
        "-c",
        "echo \"${APPTAINER_BIND-unset}|${SINGULARITY_BIND-unset}\"",
    ]);
    assert_eq!(ok(&o), "|\n");
}

/// `\,` escapes a comma in a bind specification; options after the destination are
/// comma-separated (`ro,rw`); a comma otherwise separates binds.
#[test]
fn test_escaped_comma_and_bind_lists() {
    require_unprivileged();
    let d = tempdir();
    let odd = d.path().join("a,b");
    std::fs::create_dir(&odd).expect("mkdir");
    std::fs::write(odd.join("in.txt"), "comma\n").expect("write");
    let escaped = format!("{}/a\\,b:/mnt/c", path(&d));
    let o = run_sifr(&["exec", "-B", &escaped, &sif(), "cat", "/mnt/c/in.txt"]);
    assert_eq!(ok(&o), "comma\n");
    let list = format!(
        "{}/a\\,b:/mnt/one:rw,ro,{}/a\\,b:/mnt/two",
        path(&d),
        path(&d)
    );
    let o = run_sifr(&[
        "exec",
        "-B",
        &list,
        &sif(),
        "sh",
        "-c",
        "cat /mnt/one/in.txt /mnt/two/in.txt; touch /mnt/one/x || echo read-only",
    ]);
    assert_eq!(ok(&o), "comma\ncomma\nread-only\n");
}

/// `--mount` without `type=` means a bind, and `APPTAINER_MOUNT` is appended to it.
#[test]
fn test_mount_without_type_is_a_bind() {
    require_unprivileged();
    let d = hostdir("mounted\n");
    let spec = format!("src={},dst=/mnt/m,ro", path(&d));
    let env = format!("source={},destination=/srv/e", path(&d));
    let o = sifr_env(
        &[("APPTAINER_MOUNT", &env)],
        &[
            "exec",
            "--mount",
            &spec,
            &sif(),
            "sh",
            "-c",
            "cat /mnt/m/in.txt /srv/e/in.txt; echo $APPTAINER_BIND",
        ],
    );
    assert_eq!(ok(&o), "mounted\nmounted\n/mnt/m,/srv/e\n");
}

/// A bind destination missing inside an earlier user-bound host directory is created
/// there, on the host, as Apptainer does; a symlink in that directory leading out of it is
/// not followed to create anything.
#[test]
fn test_missing_destination_created_in_bound_host_dir() {
    require_unprivileged();
    let outer = tempdir();
    let inner = hostdir("inner\n");
    let o1 = format!("{}:/mnt/outer", path(&outer));
    let o2 = format!("{}:/mnt/outer/sub/dir", path(&inner));
    let o = run_sifr(&[
        "exec",
        "-B",
        &o1,
        "-B",
        &o2,
        &sif(),
        "cat",
        "/mnt/outer/sub/dir/in.txt",
    ]);
    assert_eq!(ok(&o), "inner\n");
    assert!(
        outer.path().join("sub/dir").is_dir(),
        "mount point not created in the bound host directory"
    );
    // Symlinks in the bound directory that lead out of it: refused, nothing created.
    let away = tempdir();
    symlink(away.path(), outer.path().join("abs")).expect("symlink");
    symlink("../../etc", outer.path().join("rel")).expect("symlink");
    for link in ["abs", "rel"] {
        let o2 = format!("{}:/mnt/outer/{link}/x", path(&inner));
        let o = run_sifr(&["exec", "-B", &o1, "-B", &o2, &sif(), "true"]);
        assert!(
            !o.status.success(),
            "{link}: bind through a link out of the mount made"
        );
        assert_one_line_error(&o, &format!("/mnt/outer/{link}/x"));
    }
    let left: Vec<_> = std::fs::read_dir(away.path()).expect("ls").collect();
    assert!(left.is_empty(), "created through the link: {left:?}");
}

/// With `--writable` a missing bind destination is an error naming it; the sandbox is not
/// changed.
#[test]
fn test_writable_missing_destination_is_an_error() {
    require_unprivileged();
    let (_t, img) = sandbox();
    let d = hostdir("x\n");
    let spec = format!("{}:/nonexistent/dir", path(&d));
    let o = run_sifr(&[
        "exec",
        "--writable",
        "-B",
        &spec,
        &img.display().to_string(),
        "true",
    ]);
    assert_one_line_error(&o, "/nonexistent/dir");
    assert!(!img.join("nonexistent").exists(), "created in the sandbox");
    // An existing destination is fine.
    std::fs::create_dir(img.join("srv")).expect("mkdir");
    let spec = format!("{}:/srv", path(&d));
    let o = run_sifr(&[
        "exec",
        "--writable",
        "-B",
        &spec,
        &img.display().to_string(),
        "cat",
        "/srv/in.txt",
    ]);
    assert_eq!(ok(&o), "x\n");
}

/// `user bind control = no`: the bind is ignored with a warning, and the job runs.
#[test]
fn test_user_bind_control_no_warns_and_ignores() {
    require_unprivileged();
    let d = hostdir("x\n");
    let conf = tempdir();
    let file = conf.path().join("sifr.conf");
    std::fs::write(&file, "user bind control = no\n").expect("write");
    let spec = format!("{}:/mnt/ignored", path(&d));
    let o = run_sifr(&[
        "-c",
        &file.display().to_string(),
        "exec",
        "-B",
        &spec,
        "--scratch",
        "/scratch",
        &sif(),
        "sh",
        "-c",
        "test -e /mnt/ignored/in.txt && echo bound; test -d /scratch && echo scratch; true",
    ]);
    assert_eq!(ok(&o), "");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("user bind control") && err.contains("/mnt/ignored"),
        "no warning naming the bind: {err}"
    );
}

/// Runs sifr in `cwd` with the configuration `conf` (text) written next to it.
fn sifr_conf_in(cwd: &std::path::Path, conf: &str, args: &[&str]) -> Output {
    let t = tempdir();
    let file = t.path().join("sifr.conf");
    std::fs::write(&file, conf).expect("write");
    let mut cmd = Command::new(sifr_bin());
    cmd.arg("-c")
        .arg(&file)
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null());
    for k in ["SIFR_", "APPTAINER_", "SINGULARITY_"]
        .iter()
        .flat_map(|p| ["BIND", "BINDPATH", "MOUNT"].map(|s| format!("{p}{s}")))
    {
        cmd.env_remove(k);
    }
    cmd.output().expect("run sifr")
}

/// `user bind control = no` with `--contain --workdir`: the workdir's /tmp and /var/tmp
/// are not used (Apptainer: "User bind control is disabled by system administrator"), and
/// the working directory is not bound, with Apptainer's warning.
#[test]
fn test_user_bind_control_no_skips_workdir_tmp_and_cwd_with_warnings() {
    require_unprivileged();
    let w = tempdir();
    let wd = path(&w);
    let o = sifr_conf_in(
        std::path::Path::new("/"),
        "user bind control = no\n",
        &[
            "exec",
            "--contain",
            "--workdir",
            &wd,
            &sif(),
            "sh",
            "-c",
            "grep -c ' /tmp ' /proc/self/mountinfo; true",
        ],
    );
    assert_eq!(ok(&o), "0\n", "/tmp mounted from the workdir");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("User bind control is disabled by system administrator"),
        "{err}"
    );
    assert!(!w.path().join("tmp").exists(), "workdir /tmp made");
    // The working directory (outside home) is not bound, with Apptainer's warning (the
    // host's /tmp, which holds it, is left out too).
    let cwd = hostdir("here\n");
    let probe = format!("test -e {}/in.txt && echo bound; true", path(&cwd));
    let o = sifr_conf_in(
        cwd.path(),
        "user bind control = no\n",
        &["exec", "--no-mount", "tmp", &sif(), "sh", "-c", &probe],
    );
    assert_eq!(ok(&o), "");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(
            "Not mounting current directory: user bind control is disabled by system \
             administrator"
        ),
        "{err}"
    );
}

/// `-B /dev/X` as Apptainer handles it: with a minimal /dev (--contain or `mount dev =
/// minimal`) the host's device is added to it and usable; `-B /dev` gives the host's whole
/// /dev; source and destination must be the same; `--no-mount dev` or `mount dev = no`
/// skip it with a warning; a device the minimal /dev has already is skipped.
#[test]
fn test_dev_binds_as_apptainer() {
    require_unprivileged();
    let root = std::path::Path::new("/");
    let open_fuse = "exec 3<>/dev/fuse && echo opened";
    let img = sif();
    // A device added to the minimal /dev, usable (not nodev), even under user bind control = no.
    for (conf, flags) in [
        ("", vec!["--contain"]),
        ("mount dev = minimal\n", vec![]),
        ("user bind control = no\n", vec!["--contain"]),
    ] {
        let mut args = vec!["exec"];
        args.extend(flags.iter().copied());
        args.extend(["-B", "/dev/fuse", &img, "sh", "-c", open_fuse]);
        let o = sifr_conf_in(root, conf, &args);
        assert_eq!(ok(&o), "opened\n", "{conf} {flags:?}");
    }
    // -B /dev: the host's /dev replaces the minimal one.
    let o = sifr_conf_in(
        root,
        "",
        &[
            "exec",
            "--contain",
            "-B",
            "/dev",
            &img,
            "sh",
            "-c",
            open_fuse,
        ],
    );
    assert_eq!(ok(&o), "opened\n");
    // Different source and destination: skipped with Apptainer's warning.
    let o = sifr_conf_in(
        root,
        "",
        &[
            "exec",
            "--contain",
            "-B",
            "/dev/fuse:/dev/other",
            &img,
            "sh",
            "-c",
            "test -e /dev/other && echo there; true",
        ],
    );
    assert_eq!(ok(&o), "");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(
            "Skipping /dev/fuse bind mount: source and destination must be identical when \
             binding to /dev"
        ),
        "{err}"
    );
    // --no-mount dev and mount dev = no: skipped, disallowed by configuration.
    for (conf, flags) in [
        ("", vec!["--no-mount", "dev"]),
        ("mount dev = no\n", vec![]),
    ] {
        let mut args = vec!["exec"];
        args.extend(flags.iter().copied());
        args.extend(["-B", "/dev/fuse", &img, "true"]);
        let o = sifr_conf_in(root, conf, &args);
        ok(&o);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("Skipping /dev/fuse bind mount: disallowed by configuration"),
            "{conf} {flags:?}: {err}"
        );
    }
    // A device the minimal /dev has already.
    let o = sifr_conf_in(
        root,
        "",
        &["exec", "--contain", "-B", "/dev/null", &img, "true"],
    );
    ok(&o);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("Skipping /dev/null bind mount: already mounted"),
        "{err}"
    );
}
