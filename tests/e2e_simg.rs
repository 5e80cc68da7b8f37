//! Singularity 2.x `.simg` images (a squashfs behind a `#!/usr/bin/env run-singularity`
//! line, as workflow tools such as cwltool still ship them) run with exec/run and are
//! inspected, as Apptainer's image detection allows. The fixture is made here: the busybox
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
