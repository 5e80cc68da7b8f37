//! End-to-end tests of `sifr build`, run as the unprivileged user (an unprivileged build is
//! a fakeroot build): a definition file with every kind of section from the busybox SIF,
//! the reference implementation and unsquashfs reading the result, reproducible output, a
//! Debian build that installs a package in %post, and bad definitions.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::*;

fn sifr_at(cwd: &Path, args: &[&str]) -> Output {
    Command::new(sifr_bin())
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .output()
        .expect("run sifr")
}

const DEF: &str = r#"Bootstrap: localimage
From: {{ base }}

%arguments
    base=busybox.sif

%setup
    mkdir -p "$APPTAINER_ROOTFS/opt/t"

%files
    data.txt /opt/t/data.txt

%environment
    export FROM_ENV=env-section

%post
    echo "made as $(id -u)" > /opt/t/post.txt
    echo 'export FROM_POST=post-section' >> "$APPTAINER_ENVIRONMENT"

%runscript
    echo "run: $FROM_ENV $FROM_POST $*"

%startscript
    echo started

%test
    test -f /opt/t/data.txt

%labels
    Maintainer tester
    Purpose e2e

%help
    Help for the test image.

%apprun tool
    echo "tool app $*"

%apphelp tool
    Help for the tool app.
"#;

/// A build directory with the definition, its %files source and the base image.
fn project() -> tempfile::TempDir {
    let dir = tempdir();
    std::fs::write(dir.path().join("img.def"), DEF).expect("def");
    std::fs::write(dir.path().join("data.txt"), "payload\n").expect("data");
    std::fs::copy(
        sif_fixture("busybox_amd64.sif"),
        dir.path().join("busybox.sif"),
    )
    .expect("base");
    dir
}

#[test]
fn test_build_definition_to_sif_and_use_it() {
    require_unprivileged();
    let p = project();
    let d = p.path();
    ok(&sifr_at(d, &["build", "out.sif", "img.def"]));
    let img = d.join("out.sif");
    let i = img.to_str().expect("utf8");
    assert_eq!(
        ok(&sifr_at(d, &["run", i, "a", "b"])),
        "run: env-section post-section a b\n"
    );
    assert_eq!(
        ok(&sifr_at(d, &["run", "--app", "tool", i, "x"])),
        "tool app x\n"
    );
    assert_eq!(
        ok(&sifr_at(
            d,
            &["exec", i, "cat", "/opt/t/data.txt", "/opt/t/post.txt"]
        )),
        "payload\nmade as 0\n"
    );
    // Files made as root in %post are root's in the image (the user sees the overflow id).
    let owner = ok(&sifr_at(
        d,
        &[
            "exec",
            "--fakeroot",
            i,
            "stat",
            "-c",
            "%u",
            "/opt/t/post.txt",
        ],
    ));
    assert_eq!(owner.trim(), "0");
    assert_eq!(
        ok(&sifr_at(d, &["run-help", i])).trim(),
        "Help for the test image."
    );
    let v: serde_json::Value =
        serde_json::from_str(&ok(&sifr_at(d, &["inspect", "--json", "--all", i]))).expect("json");
    let a = &v["data"]["attributes"];
    assert_eq!(a["labels"]["Maintainer"], "tester");
    assert_eq!(
        a["labels"]["org.label-schema.usage.singularity.deffile.bootstrap"],
        "localimage"
    );
    assert!(
        a["deffile"]
            .as_str()
            .expect("deffile")
            .contains("Bootstrap: localimage")
    );
    assert!(a["apps"]["tool"].is_object(), "{a}");
    ok(&sifr_at(d, &["test", i]));
    // The reference implementation reads the SIF; unsquashfs reads its partition.
    if let Some(oracle) = oracle() {
        let l = ok(&run(&oracle, ["list", i]));
        assert!(
            l.contains("Def.FILE") && l.contains("FS (Squashfs/*System/amd64)"),
            "{l}"
        );
        let info = ok(&run(&oracle, ["info", "3", i]));
        let offset = info
            .lines()
            .find_map(|l| l.trim().strip_prefix("Offset:"))
            .map(|s| s.trim().to_string())
            .expect("offset");
        let ls = ok(&run("unsquashfs", ["-o", &offset, "-l", i]));
        assert!(ls.contains("squashfs-root/opt/t/post.txt"), "{ls}");
    }
}

#[test]
fn test_build_sandbox_and_reproducible() {
    require_unprivileged();
    let p = project();
    let d = p.path();
    // A TMPDIR of this test's own: other tests build at the same time, and the check at
    // the end must see only this test's build directories.
    let tmp = d.join("tmp");
    std::fs::create_dir(&tmp).expect("mkdir tmp");
    let sifr_at = |cwd: &Path, args: &[&str]| {
        Command::new(sifr_bin())
            .args(args)
            .current_dir(cwd)
            .env("TMPDIR", &tmp)
            .env_remove("SIFR_TMPDIR")
            .stdin(Stdio::null())
            .output()
            .expect("run sifr")
    };
    ok(&sifr_at(d, &["build", "--sandbox", "sb", "img.def"]));
    assert!(d.join("sb/opt/t/post.txt").is_file());
    assert!(d.join("sb/.singularity.d/Singularity").is_file());
    // The same definition twice with --reproducible: identical bytes (no %post output
    // depends on the time, so this one is fully deterministic).
    let def = DEF.replace(
        "%post\n    echo \"made as $(id -u)\"",
        "%post\n    echo \"made as fixed\"",
    );
    std::fs::write(d.join("r.def"), def).expect("def");
    ok(&sifr_at(
        d,
        &["build", "--reproducible", "--notest", "r1.sif", "sb"],
    ));
    ok(&sifr_at(
        d,
        &["build", "--reproducible", "--notest", "r2.sif", "sb"],
    ));
    assert_eq!(
        std::fs::read(d.join("r1.sif")).expect("r1"),
        std::fs::read(d.join("r2.sif")).expect("r2"),
        "--reproducible builds differ"
    );
    // An existing destination needs --force.
    let o = sifr_at(d, &["build", "r1.sif", "sb"]);
    assert_eq!(o.status.code(), Some(255));
    assert_one_line_error(&o, "--force");
    // No build directory is left behind.
    let left: Vec<PathBuf> = std::fs::read_dir(&tmp)
        .expect("tmp")
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("sifr-build-"))
        })
        .collect();
    assert!(left.is_empty(), "build directories left: {left:?}");
}

#[test]
fn test_failing_sections_and_bad_definitions() {
    require_unprivileged();
    let p = project();
    let d = p.path();
    let cases = [
        (
            "Bootstrap: localimage\nFrom: busybox.sif\n%post\n    exit 7\n",
            "%post failed with exit status 7",
        ),
        (
            "Bootstrap: localimage\nFrom: busybox.sif\n%nosuchsection\n",
            "bad.def:3",
        ),
        ("From: busybox.sif\n%post\n    true\n", "Bootstrap"),
        ("Bootstrap: localimage\nFrom: {{ missing }}\n", "missing"),
        (
            "Bootstrap: localimage\nFrom: busybox.sif\n%files\n    no-such-file /x\n",
            "no-such-file",
        ),
    ];
    for (def, needle) in cases {
        std::fs::write(d.join("bad.def"), def).expect("def");
        let o = sifr_at(d, &["build", "-F", "bad.sif", "bad.def"]);
        assert_ne!(o.status.code(), Some(0), "{def}");
        let err = String::from_utf8_lossy(&o.stderr);
        let last = err.lines().last().unwrap_or("");
        assert!(
            last.starts_with("FATAL:") && last.contains(needle),
            "{def}: {err}"
        );
        assert!(!d.join("bad.sif").exists());
    }
}

#[test]
fn test_debian_build_installs_a_package() {
    require_unprivileged();
    let Some(images) = test_images() else { return };
    let dir = tempdir();
    let d = dir.path();
    let def = format!(
        "Bootstrap: localimage\nFrom: {}\n\n%post\n    export DEBIAN_FRONTEND=noninteractive\n    \
         apt-get update -q >/dev/null\n    apt-get install -y -q hello >/dev/null\n\n\
         %runscript\n    exec hello\n",
        images.join("debian.sif").display()
    );
    std::fs::write(d.join("deb.def"), def).expect("def");
    ok(&sifr_at(d, &["build", "deb.sif", "deb.def"]));
    let img = d.join("deb.sif");
    assert_eq!(
        ok(&sifr_at(d, &["run", img.to_str().expect("utf8")])),
        "Hello, world!\n"
    );
    // Installed files belong to root in the image.
    let owner = ok(&sifr_at(
        d,
        &[
            "exec",
            "--fakeroot",
            img.to_str().expect("utf8"),
            "stat",
            "-c",
            "%u:%g",
            "/usr/bin/hello",
        ],
    ));
    assert_eq!(owner.trim(), "0:0");
}
