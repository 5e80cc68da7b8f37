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

/// The user's fuse2fs and fuse-overlayfs processes (`pgrep -a`).
fn fuse2fs_processes() -> String {
    let me = user_name();
    let mut out = String::new();
    for name in ["fuse2fs", "fuse-overlayfs"] {
        let o = run("pgrep", ["-u", me.as_str(), "-a", name]);
        out.push_str(&String::from_utf8_lossy(&o.stdout));
    }
    out
}

/// Waits (bounded) until no helper of the user is left, then asserts it. Bounded waiting, not
/// an immediate check: a helper that has exited may still be listed for a moment as a zombie
/// until its new parent (init) reaps it (seen in CI: `[fuse2fs] <defunct>`); a helper still
/// running, or a zombie of a live leftover sifr process, stays and fails the check.
fn wait_no_helpers_left() {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !fuse2fs_processes().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_no_fuse2fs_left();
}

/// True when the user has a subordinate-id range (fakeroot maps the image's ids 1..65536
/// there); without one fakeroot maps only root.
fn has_subids() -> bool {
    let me = user_name();
    std::fs::read_to_string("/etc/subuid")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(':').next() == Some(me.as_str()))
}

/// The owner (uid) of `path` inside the ext3 image, as debugfs reads it.
fn owner_in_image(img: &Path, path: &str) -> u32 {
    let o = ok(&run(
        "debugfs",
        [
            "-R".as_ref(),
            format!("stat {path}").as_ref(),
            img.as_os_str(),
        ],
    ));
    let line = o
        .lines()
        .find(|l| l.trim_start().starts_with("User:"))
        .unwrap_or_else(|| panic!("no owner for {path}: {o}"));
    line.split_whitespace()
        .nth(1)
        .and_then(|u| u.parse().ok())
        .unwrap_or_else(|| panic!("owner of {path}: {line}"))
}

fn my_uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").expect("stat").uid()
}

/// No fuse2fs or fuse-overlayfs of this user is left (checked at once).
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
    wait_no_helpers_left();
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
    wait_no_helpers_left();
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
    wait_no_helpers_left();
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
    wait_no_helpers_left();
    // The image is clean and usable again.
    ok(&run("e2fsck", ["-fn".as_ref(), ext.as_os_str()]));
    let out = ok(&exec(&["--overlay", &spec, &busybox(), "cat", "/f"]));
    assert_eq!(out, "x\n");
}

/// A writable ext3 image: written in one run (fuse2fs under fuse-overlayfs), read back in
/// the next; the files are the user's in the image; the filesystem stays clean; it stays the
/// top layer with a read-only layer given before it.
#[test]
fn test_ext3_image_written_then_read_back() {
    require_unprivileged();
    let _one = serial();
    let t = tempdir();
    let ext = ext3_image(t.path(), "rw.img", &[("shared", "ext\n")]);
    let sq = squashfs_image(t.path(), "top.sqfs", &[("shared", "top\n")]);
    let e = ext.display().to_string();
    let img = busybox();
    ok(&exec(&[
        "--overlay",
        &e,
        &img,
        "sh",
        "-c",
        "echo hello > /newfile && mkdir -p /opt/x && echo y > /opt/x/y",
    ]));
    wait_no_helpers_left();
    let out = ok(&exec(&[
        "--overlay",
        &e,
        &img,
        "cat",
        "/newfile",
        "/opt/x/y",
        "/shared",
    ]));
    assert_eq!(out, "hello\ny\next\n");
    assert_eq!(owner_in_image(&ext, "/upper/newfile"), my_uid());
    ok(&run("e2fsck", ["-fn".as_ref(), ext.as_os_str()]));
    // The writable layer is the upper one, above every read-only layer (as Apptainer's).
    let s = format!("{}:ro", sq.display());
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
    // Without the overlay the image is unchanged.
    let o = exec(&[&img, "test", "-e", "/newfile"]);
    assert_eq!(o.status.code(), Some(1));
    wait_no_helpers_left();
}

/// With --fakeroot, files created in an ext3 overlay are root's inside and stored as uid 0
/// in the image. Root-mapped fakeroot maps only root, so its image has root's upper/ and
/// work/ (what Apptainer's `overlay create --fakeroot` makes).
#[test]
fn test_fakeroot_files_in_an_ext3_image_are_root() {
    require_unprivileged();
    let _one = serial();
    let t = tempdir();
    let ext = ext3_image(t.path(), "fr.img", &[]);
    if !has_subids() {
        for (dir, field) in [
            ("/upper", "uid"),
            ("/upper", "gid"),
            ("/work", "uid"),
            ("/work", "gid"),
        ] {
            ok(&run(
                "debugfs",
                [
                    "-w".as_ref(),
                    "-R".as_ref(),
                    format!("set_inode_field {dir} {field} 0").as_ref(),
                    ext.as_os_str(),
                ],
            ));
        }
    }
    let e = ext.display().to_string();
    let out = ok(&exec(&[
        "--fakeroot",
        "--overlay",
        &e,
        &busybox(),
        "sh",
        "-c",
        "echo r > /rootfile && stat -c %u:%g /rootfile",
    ]));
    assert_eq!(out, "0:0\n");
    wait_no_helpers_left();
    assert_eq!(owner_in_image(&ext, "/upper/rootfile"), 0);
    ok(&run("e2fsck", ["-fn".as_ref(), ext.as_os_str()]));
}

/// `--writable IMAGE.sif` writes into the SIF's overlay partition; the next run (without
/// --writable) reads it from the partition, read-only.
#[test]
fn test_writable_sif_writes_into_its_overlay_partition() {
    require_unprivileged();
    let _one = serial();
    let t = tempdir();
    let ext = ext3_image(t.path(), "part.img", &[]);
    let sif = sif_with_overlay(t.path(), &ext);
    let s = sif.display().to_string();
    ok(&exec(&[
        "--writable",
        &s,
        "sh",
        "-c",
        "echo in-sif > /persisted",
    ]));
    wait_no_helpers_left();
    let out = ok(&exec(&[&s, "cat", "/persisted"]));
    assert_eq!(out, "in-sif\n");
    let o = exec(&[&s, "sh", "-c", "echo x > /persisted"]);
    assert!(!o.status.success(), "{o:?}");
    // The reference SIF tool still reads the image.
    let oracle = oracle().expect("sif-oracle");
    ok(&run(oracle, ["list".as_ref(), sif.as_os_str()]));
    wait_no_helpers_left();
}

/// Two writers on one image: the second is refused with one line naming the image, and so
/// is a reader while it is written; once the writer ends the image is free again.
#[test]
fn test_second_writer_is_refused() {
    require_unprivileged();
    let _one = serial();
    use std::io::BufRead;
    let t = tempdir();
    let ext = ext3_image(t.path(), "lock.img", &[]);
    let e = ext.display().to_string();
    let img = busybox();
    let mut first = std::process::Command::new(sifr_bin())
        .args([
            "exec",
            "--overlay",
            &e,
            &img,
            "sh",
            "-c",
            "echo ready; read x; true",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start the first writer");
    let mut line = String::new();
    std::io::BufReader::new(first.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read");
    assert_eq!(line, "ready\n");
    let o = exec(&["--overlay", &e, &img, "echo", "payload-ran"]);
    assert_one_line_error(
        &o,
        &format!("the overlay image {e} is in use: another sifr has it open"),
    );
    assert_eq!(o.status.code(), Some(255));
    assert!(o.stdout.is_empty());
    let ro = format!("{e}:ro");
    let o = exec(&["--overlay", &ro, &img, "echo", "payload-ran"]);
    assert_one_line_error(&o, "another sifr has it open for writing");
    drop(first.stdin.take());
    assert!(first.wait().expect("wait").success());
    wait_no_helpers_left();
    ok(&exec(&["--overlay", &e, &img, "true"]));
}

/// SIGKILL of sifr while a loop writes and syncs files into an ext3 overlay: no helper is
/// left (bounded wait), e2fsck calls the image clean, and every file synced before the kill
/// is there with its content in the next run.
#[test]
fn test_sigkill_during_writes_keeps_synced_files() {
    require_unprivileged();
    let _one = serial();
    use std::io::BufRead;
    let t = tempdir();
    let ext = ext3_image(t.path(), "kill.img", &[]);
    let e = ext.display().to_string();
    let img = busybox();
    let mut child = std::process::Command::new(sifr_bin())
        .args([
            "exec",
            "--overlay",
            &e,
            &img,
            "sh",
            "-c",
            "mkdir -p /d; i=0; while true; do echo content-$i | dd of=/d/$i conv=fsync \
             2>/dev/null && echo $i; i=$((i+1)); done",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start sifr");
    let mut out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut synced = Vec::new();
    while synced.len() < 40 {
        let mut l = String::new();
        if out.read_line(&mut l).expect("read") == 0 {
            break;
        }
        synced.push(l.trim().to_string());
    }
    assert_eq!(synced.len(), 40, "the writer stopped early: {synced:?}");
    child.kill().expect("SIGKILL sifr");
    child.wait().expect("wait");
    wait_no_helpers_left();
    ok(&run("e2fsck", ["-fn".as_ref(), ext.as_os_str()]));
    let last = synced.last().cloned().unwrap_or_default();
    let script = format!("i=0; while [ $i -le {last} ]; do cat /d/$i || exit 1; i=$((i+1)); done");
    let got = ok(&exec(&["--overlay", &e, &img, "sh", "-c", &script]));
    let want: String = (0..synced.len())
        .map(|i| format!("content-{i}\n"))
        .collect();
    assert_eq!(got, want);
    wait_no_helpers_left();
}

/// `enable overlay = driver` in sifr.conf: a directory overlay goes through fuse-overlayfs
/// (Apptainer's image driver), and works the same; with fuse-overlayfs not found, one line
/// naming it, exit 255.
#[test]
fn test_enable_overlay_driver_uses_fuse_overlayfs() {
    require_unprivileged();
    let _one = serial();
    let t = tempdir();
    let conf = t.path().join("driver.conf");
    std::fs::write(&conf, "enable overlay = driver\n").expect("write");
    let ovl = t.path().join("ovl");
    std::fs::create_dir(&ovl).expect("mkdir");
    let (c, o) = (conf.display().to_string(), ovl.display().to_string());
    let img = busybox();
    let out = ok(&sifr([
        "-c",
        &c,
        "exec",
        "--overlay",
        &o,
        &img,
        "sh",
        "-c",
        "echo d > /driven && grep -c fuse-overlayfs /proc/self/mountinfo",
    ]));
    assert_eq!(out, "1\n", "the root is fuse-overlayfs's");
    assert_eq!(
        std::fs::read_to_string(ovl.join("upper/driven")).expect("read"),
        "d\n"
    );
    wait_no_helpers_left();
    let none = t.path().join("none.conf");
    std::fs::write(
        &none,
        "enable overlay = driver\nbinary path = /nonexistent\n",
    )
    .expect("w");
    let n = none.display().to_string();
    let out = sifr([
        "-c",
        &n,
        "exec",
        "--overlay",
        &o,
        &img,
        "echo",
        "payload-ran",
    ]);
    assert_one_line_error(
        &out,
        &format!("{o} needs fuse-overlayfs, which was not found"),
    );
    assert_eq!(out.status.code(), Some(255));
}

/// An ext3 image the caller may not write, given without `:ro`, is used read-only with
/// Apptainer's warning ("Overlay image X is not writable, proceeding with read-only").
#[test]
fn test_unwritable_ext3_image_is_used_read_only() {
    require_unprivileged();
    let _one = serial();
    use std::os::unix::fs::PermissionsExt;
    let t = tempdir();
    let ext = ext3_image(t.path(), "ro.img", &[("f", "ro\n")]);
    std::fs::set_permissions(&ext, std::fs::Permissions::from_mode(0o444)).expect("chmod");
    let e = ext.display().to_string();
    let o = exec(&[
        "--overlay",
        &e,
        &busybox(),
        "sh",
        "-c",
        "cat /f; touch /new",
    ]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "ro\n", "{o:?}");
    assert!(!o.status.success(), "the layer is read-only: {o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!(
            "Overlay image {e} is not writable, proceeding with read-only"
        )),
        "{err}"
    );
    wait_no_helpers_left();
}

/// Mount points the image lacks (the caller's home, a bind destination) are made in a
/// session layer, as Apptainer's overlay-lowerdir: nothing of them is left in the ext3
/// image's `upper/`, while the container sees and writes through them.
#[test]
fn test_mount_points_are_not_left_in_an_ext3_image() {
    require_unprivileged();
    let _one = serial();
    let t = tempdir();
    let ext = ext3_image(t.path(), "rw.img", &[]);
    let data = t.path().join("data");
    std::fs::create_dir(&data).expect("mkdir");
    let e = ext.display().to_string();
    let bind = format!("{}:/newdir/sub", data.display());
    let img = busybox();
    ok(&exec(&[
        "--overlay",
        &e,
        "-B",
        &bind,
        &img,
        "sh",
        "-c",
        "echo in > /newdir/sub/f && echo kept > /kept",
    ]));
    wait_no_helpers_left();
    assert_eq!(
        std::fs::read_to_string(data.join("f")).expect("bound file"),
        "in\n"
    );
    let ls = ok(&run(
        "debugfs",
        ["-R".as_ref(), "ls -p /upper".as_ref(), ext.as_os_str()],
    ));
    let names: Vec<&str> = ls
        .lines()
        .filter_map(|l| l.split('/').nth(5))
        .filter(|n| !n.is_empty() && *n != "." && *n != "..")
        .collect();
    assert_eq!(names, ["kept"], "{ls}");
}
