//! End-to-end tests of overlay images (`--overlay FILE[:ro]`: ext3 images, squashfs images,
//! SIF overlay partitions) on the busybox SIF, run as the unprivileged user (CI runs this
//! binary as the test user, and e2e.sh as both users).

mod common;

use std::path::{Path, PathBuf};

use common::*;

/// The tests run one at a time: each checks that no fuse2fs of the user is left, which a
/// test running beside it would have.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn busybox() -> String {
    sif_fixture("busybox_amd64.sif").display().to_string()
}

fn exec(args: &[&str]) -> std::process::Output {
    let mut v: Vec<String> = vec!["exec".into()];
    v.extend(args.iter().map(|s| s.to_string()));
    sifr(v)
}

/// An ext3 overlay image laid out as Apptainer's (`upper/`, `work/` at its root), holding
/// `files` (path under upper/, contents).
fn ext3_image(dir: &Path, name: &str, files: &[(&str, &str)]) -> PathBuf {
    let tree = dir.join(format!("{name}.d"));
    std::fs::create_dir_all(tree.join("upper")).expect("mkdir");
    std::fs::create_dir_all(tree.join("work")).expect("mkdir");
    for (p, c) in files {
        std::fs::write(tree.join("upper").join(p), c).expect("write");
    }
    let img = dir.join(name);
    ok(&run(
        "mkfs.ext3",
        [
            "-q".as_ref(),
            "-d".as_ref(),
            tree.as_os_str(),
            img.as_os_str(),
            "8M".as_ref(),
        ],
    ));
    img
}

/// A squashfs image holding `files` at its root.
fn squashfs_image(dir: &Path, name: &str, files: &[(&str, &str)]) -> PathBuf {
    let tree = dir.join(format!("{name}.d"));
    std::fs::create_dir_all(&tree).expect("mkdir");
    for (p, c) in files {
        std::fs::write(tree.join(p), c).expect("write");
    }
    let img = dir.join(name);
    ok(&run(
        "mksquashfs",
        [
            tree.as_os_str(),
            img.as_os_str(),
            "-quiet".as_ref(),
            "-noappend".as_ref(),
        ],
    ));
    img
}

/// A copy of the busybox SIF with an ext3 overlay partition (in the root partition's group)
/// made from `ext3`, added by the reference SIF tool.
fn sif_with_overlay(dir: &Path, ext3: &Path) -> PathBuf {
    let sif = dir.join("with-overlay.sif");
    std::fs::copy(sif_fixture("busybox_amd64.sif"), &sif).expect("copy");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&sif, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let oracle = oracle().expect("the reference SIF tool (sif-oracle) is needed");
    ok(&run(
        oracle,
        [
            "add".as_ref(),
            sif.as_os_str(),
            ext3.as_os_str(),
            "--datatype".as_ref(),
            "4".as_ref(),
            "--parttype".as_ref(),
            "4".as_ref(),
            "--partfs".as_ref(),
            "2".as_ref(),
            "--partarch".as_ref(),
            "2".as_ref(),
            "--groupid".as_ref(),
            "1".as_ref(),
        ],
    ));
    sif
}

/// The user's fuse2fs processes (`pgrep -a`).
fn fuse2fs_processes() -> String {
    let me = user_name();
    let o = run("pgrep", ["-u", me.as_str(), "-a", "fuse2fs"]);
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// No fuse2fs of this user is left once sifr has returned.
fn assert_no_fuse2fs_left() {
    assert_eq!(fuse2fs_processes(), "", "a fuse2fs process was left behind");
}

/// Read-only layers: an ext3 image (its `upper/`, as Apptainer lays it out) and a squashfs
/// image, in command-line order with the last on top, read in one run and again in the
/// next; the layers stay read-only.
#[test]
fn test_readonly_image_layers_in_order() {
    require_unprivileged();
    let _one = serial();
    let t = tempdir();
    let ext = ext3_image(
        t.path(),
        "e.img",
        &[("shared", "ext\n"), ("only-ext", "e\n")],
    );
    let sq = squashfs_image(
        t.path(),
        "s.sqfs",
        &[("shared", "sqfs\n"), ("only-sqfs", "s\n")],
    );
    let (e, s) = (
        format!("{}:ro", ext.display()),
        format!("{}:ro", sq.display()),
    );
    let img = busybox();
    for _ in 0..2 {
        let out = ok(&exec(&[
            "--overlay",
            &e,
            "--overlay",
            &s,
            &img,
            "cat",
            "/shared",
            "/only-ext",
            "/only-sqfs",
        ]));
        assert_eq!(out, "sqfs\ne\ns\n");
    }
    // The other order: the ext3 layer on top.
    let out = ok(&exec(&[
        "--overlay",
        &s,
        "--overlay",
        &e,
        &img,
        "cat",
        "/shared",
    ]));
    assert_eq!(out, "ext\n");
    // Read-only: a write fails and nothing changes.
    let o = exec(&["--overlay", &e, &img, "sh", "-c", "echo x > /shared"]);
    assert!(!o.status.success(), "{o:?}");
    let o = exec(&["--overlay", &e, &img, "cat", "/shared"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "ext\n");
    assert_no_fuse2fs_left();
}

/// A squashfs image given without `:ro` is used read-only, with Apptainer's warning.
#[test]
fn test_squashfs_without_ro_is_read_only_with_a_warning() {
    require_unprivileged();
    let _one = serial();
    let t = tempdir();
    let sq = squashfs_image(t.path(), "s.sqfs", &[("f", "sq\n")]);
    let o = exec(&[
        "--overlay",
        &sq.display().to_string(),
        &busybox(),
        "cat",
        "/f",
    ]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "sq\n", "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!(
            "Overlay image {} is not writable, proceeding with read-only",
            sq.display()
        )),
        "{err}"
    );
}

/// A SIF's own overlay partition is a read-only layer when the SIF runs, and the same SIF
/// given to `--overlay :ro` lends its partition to another image.
#[test]
fn test_sif_overlay_partition_layers() {
    require_unprivileged();
    let _one = serial();
    let t = tempdir();
    let ext = ext3_image(t.path(), "part.img", &[("in-partition", "part\n")]);
    let sif = sif_with_overlay(t.path(), &ext);
    let s = sif.display().to_string();
    let out = ok(&exec(&[&s, "cat", "/in-partition"]));
    assert_eq!(out, "part\n");
    let o = exec(&[&s, "sh", "-c", "echo x > /in-partition"]);
    assert!(!o.status.success(), "{o:?}");
    let spec = format!("{s}:ro");
    let out = ok(&exec(&[
        "--overlay",
        &spec,
        &busybox(),
        "cat",
        "/in-partition",
    ]));
    assert_eq!(out, "part\n");
    assert_no_fuse2fs_left();
}

/// Bad inputs: one line naming the path and the cause, exit 255, nothing left behind.
#[test]
fn test_bad_overlay_files_are_one_line() {
    require_unprivileged();
    let _one = serial();
    let t = tempdir();
    let junk = t.path().join("junk.img");
    std::fs::write(&junk, vec![7u8; 8192]).expect("write");
    let ext = ext3_image(t.path(), "whole.img", &[("f", "x")]);
    let truncated = t.path().join("truncated.img");
    let bytes = std::fs::read(&ext).expect("read");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).expect("write");
    let missing = t.path().join("missing.img");
    let img = busybox();
    let cases: Vec<(String, String)> = vec![
        (
            format!("{}:ro", junk.display()),
            format!("--overlay {}: not an overlay image", junk.display()),
        ),
        (
            format!("{}:ro", truncated.display()),
            format!(
                "--overlay {}: the ext3 image is truncated",
                truncated.display()
            ),
        ),
        (
            format!("{img}:ro"),
            format!("--overlay {img}: the SIF has no ext3 overlay partition"),
        ),
        (
            missing.display().to_string(),
            format!("--overlay {}: no such", missing.display()),
        ),
        (
            ext.display().to_string(),
            format!(
                "{}: writing into an ext3 overlay image is not supported yet",
                ext.display()
            ),
        ),
    ];
    for (spec, needle) in cases {
        let o = exec(&["--overlay", &spec, &img, "echo", "payload-ran"]);
        assert_one_line_error(&o, &needle);
        assert_eq!(o.status.code(), Some(255), "{spec}: {o:?}");
        assert!(o.stdout.is_empty(), "{spec}: the payload ran");
    }
    // --writable on a SIF without an overlay partition: Apptainer's words.
    let o = exec(&["--writable", &img, "true"]);
    assert_one_line_error(
        &o,
        &format!("no SIF writable overlay partition found in {img}"),
    );
    assert_eq!(o.status.code(), Some(255));
    assert_no_fuse2fs_left();
}

/// A SIGKILLed sifr leaves no fuse2fs behind: the supervisor dies with it, and each helper
/// gets SIGTERM from its parent-death signal and ends (waited for a bounded time).
#[test]
fn test_sigkill_of_sifr_leaves_no_fuse2fs() {
    require_unprivileged();
    let _one = serial();
    use std::io::BufRead;
    let t = tempdir();
    let ext = ext3_image(t.path(), "e.img", &[("f", "x\n")]);
    let spec = format!("{}:ro", ext.display());
    let mut child = std::process::Command::new(sifr_bin())
        .args([
            "exec",
            "--overlay",
            &spec,
            &busybox(),
            "sh",
            "-c",
            "cat /f; echo ready; sleep 60",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start sifr");
    let mut out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut lines = Vec::new();
    for _ in 0..2 {
        let mut l = String::new();
        out.read_line(&mut l).expect("read");
        lines.push(l);
    }
    assert_eq!(lines, ["x\n", "ready\n"]);
    assert_ne!(
        fuse2fs_processes(),
        "",
        "fuse2fs serves the layer while it runs"
    );
    child.kill().expect("SIGKILL sifr");
    child.wait().expect("wait");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !fuse2fs_processes().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_no_fuse2fs_left();
    // The image is clean and usable again.
    ok(&run("e2fsck", ["-fn".as_ref(), ext.as_os_str()]));
    let out = ok(&exec(&["--overlay", &spec, &busybox(), "cat", "/f"]));
    assert_eq!(out, "x\n");
}
