//! Singularity 2.x `.simg` images (a squashfs behind a `#!/usr/bin/env run-singularity`
//! line, as workflow tools such as cwltool still ship them) run with exec/run and are
//! inspected, and are build sources (`build x.sif old.simg`, `Bootstrap: localimage`), as
//! Apptainer's image detection allows. The fixture is made here: the busybox
//! SIF's root partition, behind the launch line.
//!
//! Runs as the unprivileged test user (container tests refuse root).

mod common;

use std::path::{Path, PathBuf};

use common::*;

/// Writes `dir/NAME` = `header` + the busybox SIF's squashfs partition (object 4).
fn simg(dir: &Path, name: &str, header: &[u8]) -> PathBuf {
    let out = sifr([
        "sif".as_ref(),
        "dump".as_ref(),
        "4".as_ref(),
        sif_fixture("busybox_amd64.sif").as_os_str(),
    ]);
    assert!(out.status.success(), "sif dump: {out:?}");
    assert_eq!(
        &out.stdout[..4],
        b"hsqs",
        "object 4 is the squashfs partition"
    );
    let mut bytes = header.to_vec();
    bytes.extend_from_slice(&out.stdout);
    let p = dir.join(name);
    std::fs::write(&p, bytes).expect("write the .simg");
    p
}

const LAUNCH: &[u8] = b"#!/usr/bin/env run-singularity\n";

#[test]
fn test_simg_runs_with_exec_and_run() {
    require_unprivileged();
    let dir = tempdir();
    let img = simg(dir.path(), "busybox.simg", LAUNCH);
    let img = img.to_str().expect("utf8");
    let out = sifr([
        "exec",
        img,
        "/bin/sh",
        "-c",
        "echo simg-exec; cat /etc/hostname >/dev/null 2>&1; true",
    ]);
    assert_eq!(ok(&out), "simg-exec\n");
    let out = sifr(["run", img, "echo", "simg-run"]);
    assert_eq!(ok(&out), "simg-run\n");
    // The same partition without the launch line is a plain squashfs image, and runs too.
    let bare = simg(dir.path(), "busybox.sqfs", b"");
    let out = sifr(["exec", bare.to_str().expect("utf8"), "echo", "bare"]);
    assert_eq!(ok(&out), "bare\n");
}

#[test]
fn test_simg_is_inspected() {
    require_unprivileged();
    let dir = tempdir();
    let img = simg(dir.path(), "busybox.simg", LAUNCH);
    let img = img.to_str().expect("utf8");
    let out = sifr(["inspect", "--runscript", img]);
    let text = ok(&out);
    assert!(text.starts_with("#!/bin/sh"), "{text}");
    assert!(text.contains("OCI_CMD"), "{text}");
}

/// A launch line with no filesystem behind it is not an image: one line, nothing started.
#[test]
fn test_launch_line_without_image_is_refused() {
    require_unprivileged();
    let dir = tempdir();
    let p = dir.path().join("script.simg");
    std::fs::write(&p, b"#!/usr/bin/env run-singularity\necho not an image\n").expect("write");
    let out = sifr(["exec", p.to_str().expect("utf8"), "true"]);
    assert_eq!(out.status.code(), Some(255));
    assert_one_line_error(&out, "is not a container image");
}

/// An ext3 image behind the launch line (Singularity 2.x `.img`), as Apptainer's ext3
/// detection allows: made with mke2fs from a sandbox of the busybox image.
#[test]
fn test_ext3_img_with_launch_line_runs() {
    require_unprivileged();
    let mke2fs = which("mke2fs").or_else(|| {
        ["/usr/sbin/mke2fs", "/sbin/mke2fs"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
    });
    let Some(mke2fs) = mke2fs else {
        assert!(!in_ci(), "mke2fs (e2fsprogs) not found; CI requires it");
        eprintln!("SKIP: mke2fs not found");
        return;
    };
    let dir = tempdir();
    let sb = dir.path().join("sb");
    let sb_s = sb.to_str().expect("utf8");
    let fixture = sif_fixture("busybox_amd64.sif");
    ok(&sifr([
        "-q",
        "build",
        "--sandbox",
        sb_s,
        fixture.to_str().expect("utf8"),
    ]));
    let ext = dir.path().join("e.img");
    let ext_s = ext.to_str().expect("utf8");
    ok(&run(
        &mke2fs,
        ["-q", "-t", "ext3", "-d", sb_s, "-F", ext_s, "16M"],
    ));
    let mut bytes = LAUNCH.to_vec();
    bytes.extend_from_slice(&std::fs::read(&ext).expect("read"));
    let img = dir.path().join("old.img");
    std::fs::write(&img, bytes).expect("write");
    let img = img.to_str().expect("utf8");
    assert_eq!(ok(&sifr(["exec", img, "echo", "ext3-img"])), "ext3-img\n");
    let text = ok(&sifr(["inspect", "--runscript", img]));
    assert!(text.contains("OCI_CMD"), "{text}");
    // It is a build source too, read from behind the launch line.
    let sif = dir.path().join("from-img.sif");
    let sif_s = sif.to_str().expect("utf8");
    ok(&sifr(["-q", "build", sif_s, img]));
    assert_eq!(
        ok(&sifr(["exec", sif_s, "echo", "ext3-built"])),
        "ext3-built\n"
    );
}

/// `sifr build x.sif old.simg` and `Bootstrap: localimage` / `From: old.simg` read the
/// squashfs behind the launch line (Apptainer's image detection, as exec does).
#[test]
fn test_simg_is_a_build_source_and_a_localimage_base() {
    require_unprivileged();
    let dir = tempdir();
    let img = simg(dir.path(), "old.simg", LAUNCH);
    let img = img.to_str().expect("utf8");
    let sif = dir.path().join("new.sif");
    let sif_s = sif.to_str().expect("utf8");
    ok(&sifr(["-q", "build", sif_s, img]));
    assert_eq!(
        ok(&sifr(["exec", sif_s, "echo", "from-simg"])),
        "from-simg\n"
    );
    let text = ok(&sifr(["inspect", "--runscript", sif_s]));
    assert!(text.contains("OCI_CMD"), "{text}");
    let def = dir.path().join("post.def");
    std::fs::write(
        &def,
        format!("Bootstrap: localimage\nFrom: {img}\n\n%post\n    echo made > /made.txt\n"),
    )
    .expect("write def");
    let post = dir.path().join("post.sif");
    let post_s = post.to_str().expect("utf8");
    ok(&sifr(["-q", "build", post_s, def.to_str().expect("utf8")]));
    assert_eq!(ok(&sifr(["exec", post_s, "cat", "/made.txt"])), "made\n");
    // And into a sandbox.
    let sb = dir.path().join("sb");
    ok(&sifr([
        "-q",
        "build",
        "--sandbox",
        sb.to_str().expect("utf8"),
        img,
    ]));
    assert!(sb.join(".singularity.d/runscript").is_file());
}
