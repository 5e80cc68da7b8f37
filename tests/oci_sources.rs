//! OCI image sources end to end, with real tools making the images: `umoci` builds a
//! three-layer image (files, a hard link, a symlink; then a umoci-made whiteout; then a layer
//! with an opaque directory), `skopeo` turns it into an oci-archive, a docker-archive, a
//! zstd-compressed layout and pushes it to Debian's `docker-registry` on 127.0.0.1, once
//! without authentication and once with htpasswd (Basic) authentication. sifr then fetches
//! each source, unpacks it and generates the Apptainer metadata, and the result is checked
//! file by file; the generated runscript is run with the host's /bin/sh.
//!
//! Needs the Debian packages umoci, skopeo, docker-registry and apache2-utils (htpasswd).
//! Without them each test prints `SKIP:` and passes, except with SIFR_CI=1, where a missing
//! tool fails the test. Runs as root or as an unprivileged user (ownership from the layers
//! is then left to the user, which the checks allow). Network: loopback only.
//!
//! Run: `cargo test --test oci_sources` (add `-- --nocapture` to see skips).

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::oci::{Registry, add_whiteout_opaque_and_config, have_tools, tool};

use sifr::build::oci::{
    ApplyOptions, BlobCache, CredentialQuery, Credentials, FetchOptions, OciError, PlatformSpec,
    Source, fetch,
};

/// Builds the test image in `dir/L` with umoci and returns the layout path. Tag `v3` is the
/// full image.
fn make_image(dir: &Path) -> PathBuf {
    let umoci = |args: &[&str]| tool(dir, "umoci", args);
    umoci(&["init", "--layout", "L"]);
    umoci(&["new", "--image", "L:v0"]);
    umoci(&["unpack", "--rootless", "--image", "L:v0", "B1"]);
    let r = dir.join("B1/rootfs");
    for d in ["etc", "opt/dir/sub", "bin", "usr/lib"] {
        std::fs::create_dir_all(r.join(d)).expect("mkdir");
    }
    std::fs::write(r.join("etc/hostname"), "sifr-test\n").expect("write");
    std::fs::write(r.join("etc/remove-me"), "x").expect("write");
    std::fs::write(r.join("opt/dir/a"), "a").expect("write");
    std::fs::write(r.join("opt/dir/b"), "b").expect("write");
    std::fs::write(r.join("opt/dir/sub/deep"), "deep").expect("write");
    std::fs::write(r.join("bin/hello"), "#!/bin/sh\necho hello\n").expect("write");
    std::fs::set_permissions(r.join("bin/hello"), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
    std::fs::write(r.join("usr/lib/data"), "secret").expect("write");
    std::fs::set_permissions(
        r.join("usr/lib/data"),
        std::fs::Permissions::from_mode(0o600),
    )
    .expect("chmod");
    std::fs::hard_link(r.join("usr/lib/data"), r.join("usr/lib/data-link")).expect("link");
    std::os::unix::fs::symlink("usr/lib", r.join("lib")).expect("symlink");
    umoci(&["repack", "--image", "L:v1", "B1"]);

    add_whiteout_opaque_and_config(
        dir,
        "/usr/bin:/bin",
        &["--config.workingdir", "/opt", "--config.env", TRICKY_ENV],
    );
    dir.join("L")
}

/// An ENV value with every character Apptainer's shell.Escape escapes (`\\`, `"`, `` ` ``,
/// `$`), and a `}`.
const TRICKY_ENV: &str = "TRICKY=a \"b\" $c `d` \\e }";

fn options() -> FetchOptions {
    FetchOptions {
        plain_http: true,
        credentials: None,
        platform: PlatformSpec::host(),
    }
}

fn names(p: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(p)
        .unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Fetches `source`, unpacks it into `dir/<label>` with its metadata, and checks the result.
fn fetch_and_check(source: &str, dir: &Path, label: &str, cache: &BlobCache, opts: &FetchOptions) {
    let src = Source::parse(source).expect("source");
    let image = fetch(&src, cache, opts).unwrap_or_else(|e| panic!("{source}: {e}"));
    assert_eq!(image.layers.len(), 3, "{source}");
    let root = dir.join(label);
    std::fs::create_dir(&root).expect("mkdir");
    let report = image
        .unpack(&root, &ApplyOptions::default())
        .unwrap_or_else(|e| panic!("{source}: {e}"));
    assert!(
        report.whiteouts >= 1 && report.opaque_dirs == 1,
        "{source}: {report:?}"
    );

    assert_eq!(
        std::fs::read_to_string(root.join("etc/hostname")).expect("hostname"),
        "sifr-test\n"
    );
    assert!(
        !root.join("etc/remove-me").exists(),
        "{source}: whiteout not applied"
    );
    assert_eq!(
        names(&root.join("opt/dir")),
        vec!["c"],
        "{source}: opaque dir not applied"
    );
    let hello = std::fs::metadata(root.join("bin/hello")).expect("hello");
    assert_eq!(hello.permissions().mode() & 0o777, 0o755);
    let data = std::fs::metadata(root.join("usr/lib/data")).expect("data");
    let link = std::fs::metadata(root.join("usr/lib/data-link")).expect("data-link");
    assert_eq!(data.permissions().mode() & 0o777, 0o600);
    assert_eq!(data.ino(), link.ino(), "{source}: hard link lost");
    assert_eq!(
        std::fs::read_link(root.join("lib")).expect("lib"),
        Path::new("usr/lib")
    );
    if report.chown_failed == 0 {
        assert_eq!(data.uid(), 0, "umoci records root ownership");
    }

    let meta = image.metadata();
    meta.write_into(&root).expect("write metadata");
    let runscript = root.join(".singularity.d/runscript");
    let run = |args: &[&str]| {
        let out = Command::new("/bin/sh")
            .arg(&runscript)
            .args(args)
            .output()
            .expect("run runscript");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf8")
    };
    assert_eq!(run(&[]), "from-entrypoint from-cmd\n", "{source}");
    assert_eq!(
        run(&["other", "args"]),
        "from-entrypoint other args\n",
        "{source}"
    );
    let env = std::fs::read_to_string(root.join(".singularity.d/env/10-docker2singularity.sh"))
        .expect("env file");
    // Apptainer's conveyorPacker_oci insertEnv bytes: PATH set as is, the others only
    // when unset, each value through shell.Escape inside double quotes.
    assert!(env.starts_with("#!/bin/sh\n"), "{env}");
    assert!(env.contains("\nexport PATH=\"/usr/bin:/bin\"\n"), "{env}");
    assert!(
        env.contains("\nexport FOO=\"${FOO:-\"bar baz\"}\"\n"),
        "{env}"
    );
    assert!(
        env.contains("\nexport TRICKY=\"${TRICKY:-\"a \\\"b\\\" \\$c \\`d\\` \\\\e }\"}\"\n"),
        "{env}"
    );
    assert_eq!(env.lines().count(), 4, "{env}");
    // The host's /bin/sh reads the values back exactly; a set variable wins except PATH.
    let out = Command::new("/bin/sh")
        .arg("-c")
        .arg(format!(
            "{env}\nprintf '%s|' \"$PATH\" \"$FOO\" \"$TRICKY\""
        ))
        .env_clear()
        .env("FOO", "mine")
        .output()
        .expect("sh");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "/usr/bin:/bin|mine|a \"b\" $c `d` \\e }|"
    );
    let labels = std::fs::read_to_string(root.join(".singularity.d/labels.json")).expect("labels");
    assert!(labels.contains("\"org.sifr.test\": \"yes\""), "{labels}");
    let cfg: serde_json::Value = serde_json::from_str(&meta.oci_config_json).expect("json");
    assert_eq!(cfg["WorkingDir"], "/opt");
}

#[test]
fn test_oci_layout_archives_and_zstd() {
    if !have_tools(&["umoci", "skopeo"]) {
        return;
    }
    let t = common::tempdir();
    let d = t.path();
    let layout = make_image(d);
    let cache = BlobCache::open(d.join("cache")).expect("cache");
    fetch_and_check(
        &format!("oci:{}:v3", layout.display()),
        d,
        "from-layout",
        &cache,
        &options(),
    );

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
    fetch_and_check(
        &format!("oci-archive:{}", d.join("img.tar").display()),
        d,
        "from-oci-archive",
        &cache,
        &options(),
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
    fetch_and_check(
        &format!("docker-archive:{}", d.join("save.tar").display()),
        d,
        "from-docker-archive",
        &cache,
        &options(),
    );
    fetch_and_check(
        &format!(
            "docker-archive:{}:test/img:v3",
            d.join("save.tar").display()
        ),
        d,
        "from-docker-archive-named",
        &cache,
        &options(),
    );

    tool(
        d,
        "skopeo",
        &[
            "--insecure-policy",
            "copy",
            "--dest-compress-format",
            "zstd",
            "oci:L:v3",
            "oci:Z:v3",
        ],
    );
    let zl = std::fs::read_to_string(d.join("Z/index.json")).expect("index");
    let zimg = fetch(
        &Source::parse(&format!("oci:{}:v3", d.join("Z").display())).expect("src"),
        &cache,
        &options(),
    )
    .expect("zstd layout");
    assert!(
        zimg.layers.iter().all(|l| l.media_type.ends_with("+zstd")),
        "skopeo wrote zstd layers: {:?} ({zl})",
        zimg.layers
            .iter()
            .map(|l| &l.media_type)
            .collect::<Vec<_>>()
    );
    fetch_and_check(
        &format!("oci:{}:v3", d.join("Z").display()),
        d,
        "from-zstd",
        &cache,
        &options(),
    );
}

#[test]
fn test_bad_local_sources_give_one_line_errors() {
    let t = common::tempdir();
    let d = t.path();
    let cache = BlobCache::open(d.join("cache")).expect("cache");
    for src in [
        format!("oci:{}", d.join("missing").display()),
        format!("oci-archive:{}", d.join("missing.tar").display()),
        format!("docker-archive:{}", d.join("missing.tar").display()),
    ] {
        let err =
            fetch(&Source::parse(&src).expect("parse"), &cache, &options()).expect_err("missing");
        let msg = err.to_string();
        assert!(msg.contains("missing"), "{msg}");
        assert!(!msg.contains('\n'), "one line: {msg}");
    }
}

/// Blob files in the cache with their inode and mtime, to see whether a pull rewrote them.
fn cache_blobs(cache: &BlobCache) -> Vec<(String, u64, i64)> {
    let dir = cache.layout_dir().join("blobs/sha256");
    let mut v: Vec<(String, u64, i64)> = std::fs::read_dir(&dir)
        .expect("list cache")
        .map(|e| {
            let e = e.expect("entry");
            let m = e.metadata().expect("stat");
            (
                e.file_name().to_string_lossy().into_owned(),
                m.ino(),
                m.mtime_nsec() + m.mtime() * 1_000_000_000,
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn test_registry_pull_over_plain_http_and_cache_reuse() {
    if !have_tools(&["umoci", "skopeo", "docker-registry"]) {
        return;
    }
    let t = common::tempdir();
    let d = t.path();
    make_image(d);
    let reg = Registry::start(d, None);
    tool(
        d,
        "skopeo",
        &[
            "--insecure-policy",
            "copy",
            "--dest-tls-verify=false",
            "oci:L:v3",
            &format!("docker://{}", reg.image()),
        ],
    );
    let cache = BlobCache::open(d.join("cache")).expect("cache");
    fetch_and_check(
        &format!("docker://{}", reg.image()),
        d,
        "pulled",
        &cache,
        &options(),
    );
    let first = cache_blobs(&cache);
    // manifest + config + 3 layers
    assert_eq!(first.len(), 5, "{first:?}");
    fetch_and_check(
        &format!("docker://{}", reg.image()),
        d,
        "pulled-again",
        &cache,
        &options(),
    );
    assert_eq!(
        cache_blobs(&cache),
        first,
        "the second pull reused the cached blobs"
    );

    // HTTPS against a plain-HTTP registry: one line, suggesting --no-https.
    let https = FetchOptions {
        plain_http: false,
        ..options()
    };
    let err = fetch(
        &Source::parse(&format!("docker://{}", reg.image())).expect("src"),
        &cache,
        &https,
    )
    .expect_err("https to an http registry");
    let msg = err.to_string();
    assert!(msg.contains("--no-https") && !msg.contains('\n'), "{msg}");

    let missing = format!("docker://127.0.0.1:{}/test/nothing:v1", reg.port);
    let err = fetch(&Source::parse(&missing).expect("src"), &cache, &options()).expect_err("404");
    let msg = err.to_string();
    assert!(
        msg.contains("not found") && msg.contains("test/nothing"),
        "{msg}"
    );
}

#[test]
fn test_registry_basic_auth() {
    if !have_tools(&["umoci", "skopeo", "docker-registry", "htpasswd"]) {
        return;
    }
    let t = common::tempdir();
    let d = t.path();
    make_image(d);
    let reg = Registry::start_with_basic_auth(d, "alice", "s3cret-pw");
    tool(
        d,
        "skopeo",
        &[
            "--insecure-policy",
            "copy",
            "--dest-tls-verify=false",
            "--dest-creds",
            "alice:s3cret-pw",
            "oci:L:v3",
            &format!("docker://{}", reg.image()),
        ],
    );
    let src = Source::parse(&format!("docker://{}", reg.image())).expect("src");
    let cache = BlobCache::open(d.join("cache")).expect("cache");

    let err = fetch(&src, &cache, &options()).expect_err("anonymous");
    let msg = err.to_string();
    assert!(matches!(err, OciError::Registry(_)), "{msg}");
    assert!(
        msg.contains("requires authentication") && msg.contains("--docker-username"),
        "{msg}"
    );
    assert!(!msg.contains('\n'), "{msg}");

    let wrong = Credentials {
        username: "alice".into(),
        password: "wrong-pw".into(),
    };
    let q = CredentialQuery {
        explicit: Some(&wrong),
        authfile: None,
        home: None,
        env: &|_| None,
    };
    let opts = FetchOptions {
        credentials: q
            .find(&format!("127.0.0.1:{}", reg.port), "test/img")
            .expect("creds"),
        ..options()
    };
    let err = fetch(&src, &cache, &opts).expect_err("wrong password");
    let msg = err.to_string();
    assert!(
        msg.contains("rejected") && msg.contains("alice") && msg.contains("127.0.0.1"),
        "{msg}"
    );
    assert!(!msg.contains("wrong-pw") && !msg.contains('\n'), "{msg}");

    // The right password, from a docker-style auth file.
    let authfile = d.join("auth.json");
    std::fs::write(
        &authfile,
        format!(
            r#"{{"auths":{{"127.0.0.1:{}":{{"auth":"YWxpY2U6czNjcmV0LXB3"}}}}}}"#,
            reg.port
        ),
    )
    .expect("write auth.json");
    let q = CredentialQuery {
        explicit: None,
        authfile: Some(&authfile),
        home: None,
        env: &|_| None,
    };
    let opts = FetchOptions {
        credentials: q
            .find(&format!("127.0.0.1:{}", reg.port), "test/img")
            .expect("creds"),
        ..options()
    };
    assert!(opts.credentials.is_some());
    fetch_and_check(
        &format!("docker://{}", reg.image()),
        d,
        "authenticated",
        &cache,
        &opts,
    );
}
