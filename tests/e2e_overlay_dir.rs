//! End-to-end tests of directory overlays (`--overlay DIR`, `--overlay DIR:ro`) on the busybox
//! SIF, run as the unprivileged user (CI runs this binary as the test user).

mod common;

use std::os::unix::fs::MetadataExt;

use common::*;

fn busybox() -> String {
    sif_fixture("busybox_amd64.sif").display().to_string()
}

fn exec(args: &[&str]) -> std::process::Output {
    let mut v: Vec<String> = vec!["exec".into()];
    v.extend(args.iter().map(|s| s.to_string()));
    sifr(v)
}

#[test]
fn test_writable_dir_persists_between_runs() {
    require_unprivileged();
    let t = tempdir();
    let ovl = t.path().join("ovl");
    std::fs::create_dir(&ovl).expect("mkdir");
    let spec = ovl.display().to_string();
    let img = busybox();
    ok(&exec(&[
        "--overlay",
        &spec,
        &img,
        "sh",
        "-c",
        "echo hello > /newfile && mkdir -p /opt/x && echo y > /opt/x/y",
    ]));
    // Laid out as Apptainer lays out a directory overlay.
    assert!(ovl.join("upper").is_dir() && ovl.join("work").is_dir());
    let f = ovl.join("upper/newfile");
    assert_eq!(std::fs::read_to_string(&f).expect("read upper"), "hello\n");
    // Owned by the user on the host.
    let me = std::fs::metadata(t.path()).expect("stat").uid();
    assert_eq!(std::fs::metadata(&f).expect("stat").uid(), me);
    // The next run sees it.
    let out = ok(&exec(&[
        "--overlay",
        &spec,
        &img,
        "cat",
        "/newfile",
        "/opt/x/y",
    ]));
    assert_eq!(out, "hello\ny\n");
    // Without the overlay the image is unchanged.
    let o = exec(&[&img, "test", "-e", "/newfile"]);
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn test_fakeroot_files_are_root_inside_and_the_user_outside() {
    require_unprivileged();
    let t = tempdir();
    let ovl = t.path().join("ovl");
    std::fs::create_dir(&ovl).expect("mkdir");
    let spec = ovl.display().to_string();
    let out = ok(&exec(&[
        "--fakeroot",
        "--overlay",
        &spec,
        &busybox(),
        "sh",
        "-c",
        "echo r > /rootfile && stat -c %u:%g /rootfile",
    ]));
    assert_eq!(out, "0:0\n");
    // Root inside is the user on the host in both fakeroot modes (subid: 0 maps to the
    // user; root-mapped: only the user is mapped).
    let me = std::fs::metadata(t.path()).expect("stat").uid();
    let md = std::fs::metadata(ovl.join("upper/rootfile")).expect("stat");
    assert_eq!(md.uid(), me);
}

#[test]
fn test_readonly_lower_is_visible_and_upper_wins() {
    require_unprivileged();
    let t = tempdir();
    // A read-only layer as a plain directory.
    let lower = t.path().join("lower");
    std::fs::create_dir(&lower).expect("mkdir");
    std::fs::write(lower.join("shared"), "lower\n").expect("write");
    std::fs::write(lower.join("only-lower"), "ro\n").expect("write");
    // A writable layer whose upper already holds /shared.
    let rw = t.path().join("rw");
    std::fs::create_dir_all(rw.join("upper")).expect("mkdir");
    std::fs::write(rw.join("upper/shared"), "upper\n").expect("write");
    let ro = format!("{}:ro", lower.display());
    let rws = rw.display().to_string();
    let img = busybox();
    let out = ok(&exec(&[
        "--overlay",
        &ro,
        "--overlay",
        &rws,
        &img,
        "cat",
        "/only-lower",
        "/shared",
    ]));
    assert_eq!(out, "ro\nupper\n");
    // The read-only layer alone: visible, and not writable.
    let out = ok(&exec(&["--overlay", &ro, &img, "cat", "/shared"]));
    assert_eq!(out, "lower\n");
    let o = exec(&["--overlay", &ro, &img, "sh", "-c", "echo x > /shared"]);
    assert!(!o.status.success());
    assert_eq!(
        std::fs::read_to_string(lower.join("shared")).expect("read"),
        "lower\n"
    );
}

#[test]
fn test_file_overlay_refused() {
    require_unprivileged();
    let t = tempdir();
    let f = t.path().join("overlay.img");
    std::fs::write(&f, vec![0u8; 4096]).expect("write");
    let spec = f.display().to_string();
    let o = exec(&["--overlay", &spec, &busybox(), "true"]);
    assert_one_line_error(&o, "not an overlay image");
    assert_one_line_error(&o, &spec);
    assert_eq!(o.status.code(), Some(255));
}

#[test]
fn test_missing_overlay_refused() {
    require_unprivileged();
    let t = tempdir();
    let spec = t.path().join("nope").display().to_string();
    let o = exec(&["--overlay", &spec, &busybox(), "true"]);
    assert_one_line_error(&o, &spec);
    assert_eq!(o.status.code(), Some(255));
    assert!(!t.path().join("nope").exists());
}

/// A layout overlayfs refuses (here the writable directory's upper/ again as a read-only
/// layer): the kernel's error in one line naming the directory, exit 255.
#[test]
fn test_unusable_overlay_is_the_kernels_error_naming_the_dir() {
    require_unprivileged();
    let t = tempdir();
    let ovl = t.path().join("ovl");
    std::fs::create_dir(&ovl).expect("mkdir");
    let spec = ovl.display().to_string();
    ok(&exec(&["--overlay", &spec, &busybox(), "true"]));
    let ro = format!("{spec}:ro");
    let o = exec(&["--overlay", &spec, "--overlay", &ro, &busybox(), "true"]);
    let canonical = std::fs::canonicalize(&ovl).expect("canonical");
    assert_one_line_error(
        &o,
        &format!("cannot use {} as an overlay", canonical.display()),
    );
    assert_eq!(o.status.code(), Some(255));
}

#[test]
fn test_two_writable_overlays_refused() {
    require_unprivileged();
    let t = tempdir();
    let a = t.path().join("a");
    let b = t.path().join("b");
    std::fs::create_dir(&a).expect("mkdir");
    std::fs::create_dir(&b).expect("mkdir");
    let (a, b) = (a.display().to_string(), b.display().to_string());
    let o = exec(&["--overlay", &a, "--overlay", &b, &busybox(), "true"]);
    assert_one_line_error(&o, "more than one writable overlay");
    let o = exec(&["--overlay", &a, "--writable-tmpfs", &busybox(), "true"]);
    assert_one_line_error(&o, "--writable-tmpfs");
}
