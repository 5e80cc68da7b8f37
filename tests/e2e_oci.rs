//! End-to-end tests of OCI sources through the CLI, run as the unprivileged user: an image
//! made with umoci from the busybox SIF's files, with a whiteout and an opaque directory in
//! its layers and an ENTRYPOINT/CMD/ENV/label config, is
//! - pushed by skopeo to Debian's `docker-registry` on 127.0.0.1 and pulled with
//!   `sifr pull --no-https` (the reference implementation lists the SIF), run with
//!   `sifr exec/run docker://...` through the cache (converted once, then reused), and
//!   used as `Bootstrap: docker` in a definition file with %post;
//! - pulled from a registry with htpasswd (Basic) authentication: refused without or with
//!   wrong credentials (one line, no file left), accepted with them;
//! - built from `oci-archive:` and `docker-archive:` files.
//!
//! Needs umoci, skopeo, docker-registry and htpasswd (apache2-utils): skipped with a
//! visible reason without them, except in CI (SIFR_CI=1), where that fails.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::oci::{Registry, add_whiteout_opaque_and_config, have_tools, tool};
use common::*;

/// Runs sifr in `cwd` with its own cache directory.
fn sifr_at(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(sifr_bin());
    c.args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .env("SIFR_CACHEDIR", cwd.join("sifr-cache"))
        .env_remove("SIFR_DOCKER_USERNAME")
        .env_remove("SIFR_DOCKER_PASSWORD");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run sifr")
}

/// The test image in `dir/L:v3`: busybox files (layer 1), /etc/remove-me deleted by a
/// whiteout (layer 2), /opt/dir replaced by an opaque directory (layer 3).
fn make_image(dir: &Path) {
    let bb = dir.join("bb");
    ok(&sifr_at(
        dir,
        &[
            "build",
            "--sandbox",
            bb.to_str().expect("utf8"),
            sif_fixture("busybox_amd64.sif").to_str().expect("utf8"),
        ],
        &[],
    ));
    let umoci = |args: &[&str]| tool(dir, "umoci", args);
    umoci(&["init", "--layout", "L"]);
    umoci(&["new", "--image", "L:v0"]);
    umoci(&["unpack", "--rootless", "--image", "L:v0", "B1"]);
    let r = dir.join("B1/rootfs");
    for sub in ["bin", "etc"] {
        let out = Command::new("cp")
            .arg("-a")
            .arg(bb.join(sub))
            .arg(&r)
            .output()
            .expect("cp");
        assert!(out.status.success(), "{out:?}");
    }
    std::fs::create_dir_all(r.join("opt/dir")).expect("mkdir");
    std::fs::write(r.join("etc/remove-me"), "x").expect("write");
    std::fs::write(r.join("opt/dir/a"), "a").expect("write");
    std::fs::write(r.join("etc/hostname"), "from-oci\n").expect("write");
    umoci(&["repack", "--image", "L:v1", "B1"]);

    add_whiteout_opaque_and_config(dir, "/bin", &[]);
}

fn push(dir: &Path, reg: &Registry, creds: Option<&str>) {
    let dest = format!("docker://{}", reg.image());
    let mut args = vec!["--insecure-policy", "copy", "--dest-tls-verify=false"];
    if let Some(c) = creds {
        args.extend(["--dest-creds", c]);
    }
    args.extend(["oci:L:v3", &dest]);
    tool(dir, "skopeo", &args);
}

/// Checks what the layers and the config made of `sif`.
fn check_sif(dir: &Path, sif: &str) {
    let out = ok(&sifr_at(
        dir,
        &[
            "exec",
            sif,
            "sh",
            "-c",
            "cat /etc/hostname; test -e /etc/remove-me && echo whiteout-missed; ls /opt/dir; \
             echo \"FOO=$FOO\"",
        ],
        &[],
    ));
    assert_eq!(out, "from-oci\nc\nFOO=bar baz\n", "{sif}");
    let out = ok(&sifr_at(dir, &["run", sif], &[]));
    assert_eq!(out, "from-entrypoint from-cmd\n", "{sif}");
    let out = ok(&sifr_at(dir, &["run", sif, "x", "y"], &[]));
    assert_eq!(out, "from-entrypoint x y\n", "{sif}");
    let out = ok(&sifr_at(dir, &["inspect", "--json", sif], &[]));
    assert!(out.contains("org.sifr.test"), "{out}");
}

#[test]
fn test_pull_exec_and_build_from_a_loopback_registry() {
    require_unprivileged();
    if !have_tools(&["umoci", "skopeo", "docker-registry"]) {
        return;
    }
    let t = tempdir();
    let d = t.path();
    make_image(d);
    let reg = Registry::start(d, None);
    push(d, &reg, None);
    let uri = format!("docker://{}", reg.image());

    // pull → a SIF the reference implementation lists, with the image's content.
    let out = sifr_at(d, &["pull", "--no-https", "--name", "img.sif", &uri], &[]);
    ok(&out);
    check_sif(d, "img.sif");
    if let Some(oracle) = oracle() {
        let out = ok(&run(
            &oracle,
            ["list", d.join("img.sif").to_str().expect("utf8")],
        ));
        assert!(out.contains("FS") && out.contains("Squashfs"), "{out}");
    }
    // A second pull to another name reuses the converted image.
    let out = sifr_at(d, &["pull", "--no-https", "--name", "again.sif", &uri], &[]);
    ok(&out);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Using cached SIF image"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read(d.join("img.sif")).expect("img"),
        std::fs::read(d.join("again.sif")).expect("again")
    );
    // --dir (SINGULARITY_PULLFOLDER) and the default name; an empty folder means the
    // current directory, as spython sets it.
    std::fs::create_dir(d.join("sub")).expect("mkdir");
    ok(&sifr_at(
        d,
        &["pull", "--no-https", "--dir", "sub", &uri],
        &[],
    ));
    assert!(d.join("sub/img_v3.sif").is_file());
    ok(&sifr_at(
        d,
        &["pull", "--no-https", &uri],
        &[("SINGULARITY_PULLFOLDER", "")],
    ));
    assert!(
        d.join("img_v3.sif").is_file(),
        "an empty pull folder means the cwd"
    );
    // An existing file is kept without --force.
    let out = sifr_at(d, &["pull", "--no-https", "--name", "img.sif", &uri], &[]);
    assert_one_line_error(&out, "already exists");

    // exec/run docker:// run the cached conversion.
    let out = ok(&sifr_at(
        d,
        &["exec", "--no-https", &uri, "cat", "/etc/hostname"],
        &[],
    ));
    assert_eq!(out, "from-oci\n");
    let out = ok(&sifr_at(d, &["run", "--no-https", &uri, "a"], &[]));
    assert_eq!(out, "from-entrypoint a\n");
    let converted: Vec<_> = std::fs::read_dir(d.join("sifr-cache/cache/oci-tmp"))
        .expect("oci-tmp")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(converted.len(), 1, "one converted image: {converted:?}");

    // HTTPS against the plain-HTTP registry: one line that suggests --no-https.
    let out = sifr_at(d, &["exec", &uri, "true"], &[]);
    assert_one_line_error(&out, "--no-https");

    // Bootstrap: docker with %post.
    let def = d.join("oci.def");
    std::fs::write(
        &def,
        format!(
            "Bootstrap: docker\nFrom: {}\n\n%post\n    echo built > /post.txt\n    \
             test ! -e /etc/remove-me\n",
            reg.image()
        ),
    )
    .expect("write def");
    ok(&sifr_at(
        d,
        &["build", "--no-https", "built.sif", "oci.def"],
        &[],
    ));
    let out = ok(&sifr_at(
        d,
        &["exec", "built.sif", "cat", "/post.txt", "/etc/hostname"],
        &[],
    ));
    assert_eq!(out, "built\nfrom-oci\n");
    let out = ok(&sifr_at(d, &["run", "built.sif"], &[]));
    assert_eq!(out, "from-entrypoint from-cmd\n");

    // A missing image: one line naming it, no file left.
    let missing = format!("docker://127.0.0.1:{}/test/nothing:v1", reg.port);
    let out = sifr_at(
        d,
        &["pull", "--no-https", "--name", "none.sif", &missing],
        &[],
    );
    assert_one_line_error(&out, "test/nothing");
    assert!(!d.join("none.sif").exists());
}

#[test]
fn test_pull_with_basic_auth() {
    require_unprivileged();
    if !have_tools(&["umoci", "skopeo", "docker-registry", "htpasswd"]) {
        return;
    }
    let t = tempdir();
    let d = t.path();
    make_image(d);
    let reg = Registry::start_with_basic_auth(d, "alice", "s3cret-pw");
    push(d, &reg, Some("alice:s3cret-pw"));
    let uri = format!("docker://{}", reg.image());

    let out = sifr_at(d, &["pull", "--no-https", "--name", "a.sif", &uri], &[]);
    assert_one_line_error(&out, "");
    assert!(!d.join("a.sif").exists());
    let out = sifr_at(
        d,
        &["pull", "--no-https", "--name", "a.sif", &uri],
        &[
            ("SIFR_DOCKER_USERNAME", "alice"),
            ("SIFR_DOCKER_PASSWORD", "wrong"),
        ],
    );
    assert_one_line_error(&out, "");
    assert!(!d.join("a.sif").exists());
    // Apptainer's variable names work too.
    ok(&sifr_at(
        d,
        &["pull", "--no-https", "--name", "a.sif", &uri],
        &[
            ("APPTAINER_DOCKER_USERNAME", "alice"),
            ("APPTAINER_DOCKER_PASSWORD", "s3cret-pw"),
        ],
    ));
    check_sif(d, "a.sif");
    ok(&sifr_at(
        d,
        &[
            "pull",
            "--no-https",
            "--disable-cache",
            "--docker-username",
            "alice",
            "--docker-password",
            "s3cret-pw",
            "--name",
            "b.sif",
            &uri,
        ],
        &[],
    ));
    check_sif(d, "b.sif");
}

#[test]
fn test_build_from_oci_and_docker_archives() {
    require_unprivileged();
    if !have_tools(&["umoci", "skopeo"]) {
        return;
    }
    let t = tempdir();
    let d = t.path();
    make_image(d);
    tool(
        d,
        "skopeo",
        &[
            "--insecure-policy",
            "copy",
            "oci:L:v3",
            "oci-archive:img.tar:v3",
        ],
    );
    tool(
        d,
        "skopeo",
        &[
            "--insecure-policy",
            "copy",
            "oci:L:v3",
            "docker-archive:save.tar:test/img:v3",
        ],
    );
    ok(&sifr_at(
        d,
        &["build", "from-oci.sif", "oci-archive:img.tar"],
        &[],
    ));
    check_sif(d, "from-oci.sif");
    ok(&sifr_at(
        d,
        &["build", "from-docker.sif", "docker-archive:save.tar"],
        &[],
    ));
    check_sif(d, "from-docker.sif");
    ok(&sifr_at(d, &["build", "--sandbox", "sb", "oci:L:v3"], &[]));
    let out = ok(&sifr_at(d, &["exec", "sb", "ls", "/opt/dir"], &[]));
    assert_eq!(out, "c\n");
    // A text file given as an archive: one line, even though the tar reader quotes it.
    std::fs::write(d.join("notes.tar"), "login: x\nsecond line\nthird\n").expect("write");
    let out = sifr_at(
        d,
        &["pull", "--name", "n.sif", "oci-archive:notes.tar"],
        &[],
    );
    assert_one_line_error(&out, "not a tar archive");
    assert!(!d.join("n.sif").exists());
    // A layout with no such tag: one line.
    let out = sifr_at(d, &["build", "x.sif", "oci:L:nope"], &[]);
    assert_one_line_error(&out, "nope");
    assert!(!d.join("x.sif").exists());
}
