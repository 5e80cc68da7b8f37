//! `oras://` push and pull, `pull --arch` and `http(s)://` pulls, as the unprivileged user,
//! against real servers on 127.0.0.1:
//!
//! - Debian's `docker-registry` for `oras://` and `docker://`: SIFs pushed by sifr, and
//!   artifacts uploaded here byte for byte as Apptainer's `oras` client writes them (config
//!   `{}` with media type `application/vnd.sylabs.sif.config.v1+json`, one layer
//!   `application/vnd.sylabs.sif.layer.v1.sif` titled with the file name), a multi-platform
//!   index of them, and a two-platform OCI image built here from real layer bytes;
//! - Python's `http.server` (with `ssl` and a throwaway certificate made by openssl for
//!   https) for `http(s)://`, with a path that breaks off mid-file and one that wants
//!   authentication.
//!
//! Needs docker-registry, htpasswd, python3 and openssl: skipped with a visible reason
//! without them, except in CI (SIFR_CI=1), where that fails.

mod common;

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::oci::{Registry, cutting_relay, have_tools, partials, stalling_relay};
use common::*;
use sha2::Digest as _;

/// Runs sifr in `cwd` with its own cache directory and no credentials from the environment.
fn sifr_at(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(sifr_bin());
    c.args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .env("SIFR_CACHEDIR", cwd.join("sifr-cache"))
        .env("HOME", cwd)
        .env_remove("SIFR_DOCKER_USERNAME")
        .env_remove("SIFR_DOCKER_PASSWORD")
        .env_remove("SSL_CERT_FILE");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run sifr")
}

/// The busybox SIF fixture for this machine, and the one for the other architecture.
fn busybox_pair() -> (PathBuf, PathBuf, &'static str, &'static str) {
    if std::env::consts::ARCH == "aarch64" {
        (
            sif_fixture("busybox_arm64.sif"),
            sif_fixture("busybox_amd64.sif"),
            "arm64",
            "amd64",
        )
    } else {
        (
            sif_fixture("busybox_amd64.sif"),
            sif_fixture("busybox_arm64.sif"),
            "amd64",
            "arm64",
        )
    }
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

/// Raw distribution-API calls to the test registry (what Apptainer's Go client sends).
struct Api {
    base: String,
    agent: ureq::Agent,
}

impl Api {
    fn new(reg: &Registry) -> Api {
        Api {
            base: format!("http://127.0.0.1:{}", reg.port),
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .into(),
        }
    }

    /// Uploads a blob (monolithic), returns its digest.
    fn blob(&self, repo: &str, bytes: &[u8]) -> String {
        let digest = sha256(bytes);
        let resp = self
            .agent
            .post(format!("{}/v2/{repo}/blobs/uploads/", self.base))
            .send_empty()
            .expect("start upload");
        assert_eq!(resp.status().as_u16(), 202, "{resp:?}");
        let loc = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .expect("location")
            .to_string();
        let loc = if loc.starts_with('/') {
            format!("{}{loc}", self.base)
        } else {
            loc
        };
        let sep = if loc.contains('?') { '&' } else { '?' };
        let resp = self
            .agent
            .put(format!("{loc}{sep}digest={digest}"))
            .header("Content-Type", "application/octet-stream")
            .send(bytes)
            .expect("upload");
        assert_eq!(resp.status().as_u16(), 201, "{resp:?}");
        digest
    }

    /// Puts a manifest or index under `reference`, returns its digest.
    fn manifest(&self, repo: &str, reference: &str, media_type: &str, bytes: &[u8]) -> String {
        let resp = self
            .agent
            .put(format!("{}/v2/{repo}/manifests/{reference}", self.base))
            .header("Content-Type", media_type)
            .send(bytes)
            .expect("put manifest");
        assert_eq!(resp.status().as_u16(), 201, "{resp:?}");
        sha256(bytes)
    }

    /// The manifest stored under `reference`, raw.
    fn get_manifest(&self, repo: &str, reference: &str, creds: Option<(&str, &str)>) -> Vec<u8> {
        let mut req = self
            .agent
            .get(format!("{}/v2/{repo}/manifests/{reference}", self.base))
            .header("Accept", "application/vnd.oci.image.manifest.v1+json");
        if let Some((u, p)) = creds {
            use base64::Engine as _;
            let b = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
            req = req.header("Authorization", format!("Basic {b}"));
        }
        let mut resp = req.call().expect("get manifest");
        assert_eq!(resp.status().as_u16(), 200, "{resp:?}");
        resp.body_mut().read_to_vec().expect("body")
    }
}

/// The manifest Apptainer's `oras.NewImageFromSIF` writes for a SIF (go-containerregistry's
/// JSON field order), written out by hand here.
fn apptainer_manifest(title: &str, sif: &[u8]) -> String {
    format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.sylabs.sif.config.v1+json","size":2,"digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","data":"e30="}},"layers":[{{"mediaType":"application/vnd.sylabs.sif.layer.v1.sif","size":{},"digest":"{}","annotations":{{"org.opencontainers.image.title":"{title}"}}}}],"annotations":{{"org.opencontainers.image.created":"2023-12-19T16:02:14Z"}}}}"#,
        sif.len(),
        sha256(sif)
    )
}

/// Uploads `sif` as Apptainer pushes it, under `repo:tag`; returns the manifest digest.
fn push_like_apptainer(api: &Api, repo: &str, tag: &str, title: &str, sif: &[u8]) -> String {
    assert_eq!(api.blob(repo, b"{}"), sha256(b"{}"));
    api.blob(repo, sif);
    let m = apptainer_manifest(title, sif);
    api.manifest(
        repo,
        tag,
        "application/vnd.oci.image.manifest.v1+json",
        m.as_bytes(),
    )
}

fn index_json(entries: &[(&str, &str, usize)]) -> String {
    let m: Vec<String> = entries
        .iter()
        .map(|(arch, digest, size)| {
            format!(
                r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{digest}","size":{size},"platform":{{"architecture":"{arch}","os":"linux"}}}}"#
            )
        })
        .collect();
    format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{}]}}"#,
        m.join(",")
    )
}

fn assert_no_partials(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        assert!(
            !name.starts_with(".sifr-")
                && !name.starts_with(".partial-")
                && !name.contains("sifr-pull"),
            "partial file left: {}",
            e.path().display()
        );
        if e.path().is_dir() {
            assert_no_partials(&e.path());
        }
    }
}

/// sifr push, then pull by tag and by digest: the same bytes; the manifest is Apptainer's
/// shape; the SIF is cached by digest; `exec oras://` runs it.
#[test]
fn test_push_then_pull_by_tag_and_digest() {
    require_unprivileged();
    if !have_tools(&["docker-registry"]) {
        return;
    }
    let t = tempdir();
    let d = t.path();
    let reg = Registry::start(d, None);
    let api = Api::new(&reg);
    let (bb, _, _, _) = busybox_pair();
    std::fs::copy(&bb, d.join("bb.sif")).expect("copy");
    let uri = format!("oras://127.0.0.1:{}/test/bb:1", reg.port);

    let out = sifr_at(d, &["push", "--no-https", "bb.sif", &uri], &[]);
    ok(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Upload complete"), "{err}");

    let sif = read(&bb);
    let manifest = api.get_manifest("test/bb", "1", None);
    let v: serde_json::Value = serde_json::from_slice(&manifest).expect("json");
    assert_eq!(v["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(
        v["config"]["mediaType"],
        "application/vnd.sylabs.sif.config.v1+json"
    );
    assert_eq!(v["config"]["digest"], sha256(b"{}"));
    assert_eq!(v["config"]["data"], "e30=");
    let layers = v["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), 1);
    assert_eq!(
        layers[0]["mediaType"],
        "application/vnd.sylabs.sif.layer.v1.sif"
    );
    assert_eq!(layers[0]["digest"], sha256(&sif));
    assert_eq!(layers[0]["size"], sif.len());
    assert_eq!(
        layers[0]["annotations"]["org.opencontainers.image.title"],
        "bb.sif"
    );
    assert!(
        v["annotations"]["org.opencontainers.image.created"].is_string(),
        "{v}"
    );
    // The bytes sifr sent are those Apptainer sends for the same file and time.
    let created = v["annotations"]["org.opencontainers.image.created"]
        .as_str()
        .expect("created");
    assert_eq!(
        String::from_utf8_lossy(&manifest),
        apptainer_manifest("bb.sif", &sif).replace("2023-12-19T16:02:14Z", created)
    );

    ok(&sifr_at(
        d,
        &["pull", "--no-https", "--name", "by-tag.sif", &uri],
        &[],
    ));
    assert_eq!(read(&d.join("by-tag.sif")), sif, "pulled by tag");
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode(&d.join("by-tag.sif")), 0o755, "a SIF runs directly");
    let hex = &sha256(&sif)[7..];
    assert!(d.join("sifr-cache/cache/oras").join(hex).is_file());
    // --disable-cache: the same bytes, and nothing in the cache (nor left next to the file).
    std::fs::remove_file(d.join("sifr-cache/cache/oras").join(hex)).expect("rm");
    for args in [
        vec![
            "pull",
            "--no-https",
            "--disable-cache",
            "--name",
            "nocache.sif",
            &uri,
        ],
        vec!["exec", "--no-https", "--disable-cache", &uri, "true"],
    ] {
        ok(&sifr_at(d, &args, &[]));
        assert!(
            !d.join("sifr-cache/cache/oras").join(hex).exists(),
            "{args:?} cached the SIF"
        );
    }
    assert_eq!(
        read(&d.join("nocache.sif")),
        sif,
        "pulled without the cache"
    );
    let left: Vec<_> = std::fs::read_dir(d)
        .expect("ls")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".sifr-oras-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");

    let by_digest = format!(
        "oras://127.0.0.1:{}/test/bb@{}",
        reg.port,
        sha256(&manifest)
    );
    ok(&sifr_at(
        d,
        &["pull", "--no-https", "--name", "by-digest.sif", &by_digest],
        &[],
    ));
    assert_eq!(read(&d.join("by-digest.sif")), sif, "pulled by digest");

    // The default name is NAME_TAG.sif.
    std::fs::create_dir(d.join("sub")).expect("mkdir");
    ok(&sifr_at(
        d,
        &["pull", "--no-https", "--dir", "sub", &uri],
        &[],
    ));
    assert_eq!(read(&d.join("sub/bb_1.sif")), sif);

    let out = sifr_at(d, &["exec", "--no-https", &uri, "echo", "from-oras"], &[]);
    assert_eq!(ok(&out), "from-oras\n");
    // build takes it as a local image (from the cache).
    ok(&sifr_at(
        d,
        &["build", "--no-https", "built.sif", &uri],
        &[],
    ));
    let out = sifr_at(d, &["exec", "built.sif", "echo", "built-from-oras"], &[]);
    assert_eq!(ok(&out), "built-from-oras\n");
    // Bootstrap: oras, as Apptainer's definition files name it (no scheme in From:).
    std::fs::write(
        d.join("o.def"),
        format!(
            "Bootstrap: oras\nFrom: 127.0.0.1:{}/test/bb:1\n\n%post\n    echo from-post > /marker\n",
            reg.port
        ),
    )
    .expect("write def");
    ok(&sifr_at(
        d,
        &["build", "--no-https", "def.sif", "o.def"],
        &[],
    ));
    let out = sifr_at(d, &["exec", "def.sif", "cat", "/marker"], &[]);
    assert_eq!(ok(&out), "from-post\n");
    assert_no_partials(d);
}

/// A SIF uploaded exactly as Apptainer uploads it pulls with sifr; a multi-platform index of
/// such artifacts gives the host's by default and another with --arch; a platform the index
/// lacks is one line listing those it has.
#[test]
fn test_pull_artifacts_pushed_as_apptainer_pushes_them() {
    require_unprivileged();
    if !have_tools(&["docker-registry"]) {
        return;
    }
    let t = tempdir();
    let d = t.path();
    let reg = Registry::start(d, None);
    let api = Api::new(&reg);
    let (host_bb, other_bb, host_arch, other_arch) = busybox_pair();
    let (host_sif, other_sif) = (read(&host_bb), read(&other_bb));
    let host_m = push_like_apptainer(&api, "test/app", "host", "busybox.sif", &host_sif);
    let other_m = push_like_apptainer(&api, "test/app", "other", "busybox.sif", &other_sif);

    let port = reg.port;
    ok(&sifr_at(
        d,
        &[
            "pull",
            "--no-https",
            "--name",
            "a.sif",
            &format!("oras://127.0.0.1:{port}/test/app:host"),
        ],
        &[],
    ));
    assert_eq!(read(&d.join("a.sif")), host_sif);

    let index = index_json(&[
        (
            host_arch,
            &host_m,
            apptainer_manifest("busybox.sif", &host_sif).len(),
        ),
        (
            other_arch,
            &other_m,
            apptainer_manifest("busybox.sif", &other_sif).len(),
        ),
    ]);
    api.manifest(
        "test/app",
        "multi",
        "application/vnd.oci.image.index.v1+json",
        index.as_bytes(),
    );
    let multi = format!("oras://127.0.0.1:{port}/test/app:multi");
    ok(&sifr_at(
        d,
        &["pull", "--no-https", "--name", "m-host.sif", &multi],
        &[],
    ));
    assert_eq!(read(&d.join("m-host.sif")), host_sif);
    ok(&sifr_at(
        d,
        &[
            "pull",
            "--no-https",
            "--arch",
            other_arch,
            "--name",
            "m-other.sif",
            &multi,
        ],
        &[],
    ));
    assert_eq!(read(&d.join("m-other.sif")), other_sif);

    let out = sifr_at(
        d,
        &[
            "pull",
            "--no-https",
            "--arch",
            "s390x",
            "--name",
            "none.sif",
            &multi,
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(255));
    assert_one_line_error(&out, "has no manifest for linux/s390x");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("linux/{host_arch}")) && err.contains(&format!("linux/{other_arch}")),
        "{err}"
    );
    assert!(!d.join("none.sif").exists());
    assert_no_partials(d);
}

/// What is not a SIF artifact, a missing tag, a non-SIF to push, another destination, an
/// unknown host, and a registry that wants a password: one line each, nothing written.
#[test]
fn test_oras_refusals_are_one_line_and_leave_nothing() {
    require_unprivileged();
    if !have_tools(&["docker-registry", "htpasswd"]) {
        return;
    }
    let t = tempdir();
    let d = t.path();
    let reg = Registry::start(d, None);
    let api = Api::new(&reg);
    let port = reg.port;

    // A container image's manifest (OCI config, a tar+gzip layer) through oras://.
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let layer = b"not really a layer";
    let (cd, ld) = (api.blob("test/img", config), api.blob("test/img", layer));
    let m = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","size":{},"digest":"{cd}"}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","size":{},"digest":"{ld}"}}]}}"#,
        config.len(),
        layer.len()
    );
    api.manifest(
        "test/img",
        "1",
        "application/vnd.oci.image.manifest.v1+json",
        m.as_bytes(),
    );
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![format!("oras://127.0.0.1:{port}/test/img:1")],
            "is not a SIF image: its layer has media type",
        ),
        (
            vec![format!("oras://127.0.0.1:{port}/test/img:missing")],
            "not found in registry",
        ),
        (
            vec!["oras://no-such-host.invalid/x/y:1".to_string()],
            "cannot reach registry",
        ),
    ];
    for (args, needle) in cases {
        let mut a = vec!["pull", "--no-https", "--name", "out.sif"];
        a.extend(args.iter().map(String::as_str));
        let out = sifr_at(d, &a, &[]);
        assert_eq!(out.status.code(), Some(255), "{args:?}: {out:?}");
        assert_one_line_error(&out, needle);
        assert!(!d.join("out.sif").exists(), "{args:?}");
    }

    std::fs::write(d.join("notsif.img"), "text, not a SIF").expect("write");
    let out = sifr_at(
        d,
        &[
            "push",
            "--no-https",
            "notsif.img",
            &format!("oras://127.0.0.1:{port}/test/x:1"),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(255));
    assert_one_line_error(&out, "not a SIF file");
    let (bb, _, _, _) = busybox_pair();
    let bb = bb.to_str().expect("utf8");
    let out = sifr_at(d, &["push", bb, "library://user/col/img:1"], &[]);
    assert_eq!(out.status.code(), Some(255));
    assert_one_line_error(&out, "sifr pushes to no container library");

    // Basic authentication: refused without credentials, push and pull with them.
    let auth = Registry::start_with_basic_auth(d, "alice", "s3cret");
    let uri = format!("oras://127.0.0.1:{}/test/private:1", auth.port);
    let out = sifr_at(d, &["push", "--no-https", bb, &uri], &[]);
    assert_eq!(out.status.code(), Some(255));
    assert_one_line_error(&out, "requires authentication");
    let creds = ["--docker-username", "alice", "--docker-password", "s3cret"];
    let mut push = vec!["push", "--no-https"];
    push.extend(creds);
    push.extend([bb, &uri]);
    ok(&sifr_at(d, &push, &[]));
    let out = sifr_at(d, &["pull", "--no-https", "--name", "p.sif", &uri], &[]);
    assert_eq!(out.status.code(), Some(255));
    assert_one_line_error(&out, "requires authentication");
    let mut pull = vec!["pull", "--no-https", "--name", "p.sif"];
    pull.extend(creds);
    pull.push(&uri);
    ok(&sifr_at(d, &pull, &[]));
    assert_eq!(read(&d.join("p.sif")), read(Path::new(bb)));
    let wrong = [
        "pull",
        "--no-https",
        "--docker-username",
        "alice",
        "--docker-password",
        "wrong",
        "--name",
        "w.sif",
        &uri,
    ];
    let out = sifr_at(d, &wrong, &[]);
    assert_one_line_error(&out, "rejected the credentials");
    assert!(!d.join("w.sif").exists());
    assert_no_partials(d);
}

/// A gzip'd tar of one file, `/arch` holding `arch`.
fn layer_with(arch: &str) -> Vec<u8> {
    let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::default(),
    ));
    let mut h = tar::Header::new_ustar();
    h.set_size(arch.len() as u64 + 1);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, "arch", format!("{arch}\n").as_bytes())
        .expect("tar");
    b.into_inner().expect("tar").finish().expect("gzip")
}

/// `pull --arch` (and `build --arch`) from a two-platform OCI index of real images: the
/// platform asked for is converted and its SIF labelled with that architecture (so `exec`
/// refuses it on this machine, in one line); a platform missing is one line listing those
/// there; a definition file is built only for the host.
#[test]
fn test_pull_arch_chooses_from_an_oci_index() {
    require_unprivileged();
    if !have_tools(&["docker-registry"]) {
        return;
    }
    let t = tempdir();
    let d = t.path();
    let reg = Registry::start(d, None);
    let api = Api::new(&reg);
    let (_, _, host_arch, other_arch) = busybox_pair();
    let mut entries = Vec::new();
    for arch in [host_arch, other_arch] {
        let layer = layer_with(arch);
        let diff_id = {
            use std::io::Read as _;
            let mut raw = Vec::new();
            flate2::read::GzDecoder::new(&layer[..])
                .read_to_end(&mut raw)
                .expect("gunzip");
            sha256(&raw)
        };
        let config = format!(
            r#"{{"architecture":"{arch}","os":"linux","config":{{"Env":["PATH=/bin"]}},"rootfs":{{"type":"layers","diff_ids":["{diff_id}"]}}}}"#
        );
        let cd = api.blob("test/multi", config.as_bytes());
        let ld = api.blob("test/multi", &layer);
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","size":{},"digest":"{cd}"}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","size":{},"digest":"{ld}"}}]}}"#,
            config.len(),
            layer.len()
        );
        let md = api.manifest(
            "test/multi",
            arch,
            "application/vnd.oci.image.manifest.v1+json",
            m.as_bytes(),
        );
        entries.push((arch, md, m.len()));
    }
    let idx: Vec<(&str, &str, usize)> = entries
        .iter()
        .map(|(a, m, s)| (*a, m.as_str(), *s))
        .collect();
    api.manifest(
        "test/multi",
        "1",
        "application/vnd.oci.image.index.v1+json",
        index_json(&idx).as_bytes(),
    );
    let uri = format!("docker://127.0.0.1:{}/test/multi:1", reg.port);

    for (arch, name) in [(host_arch, "host.sif"), (other_arch, "other.sif")] {
        ok(&sifr_at(
            d,
            &["pull", "--no-https", "--arch", arch, "--name", name, &uri],
            &[],
        ));
        let list = ok(&sifr_at(d, &["sif", "list", name], &[]));
        assert!(
            list.contains(&format!("FS (Squashfs/*System/{arch})")),
            "{name}: {list}"
        );
    }
    // The host's: runs (the file says which image it came from).
    let out = sifr_at(d, &["inspect", "--json", "host.sif"], &[]);
    ok(&out);
    let out = sifr_at(d, &["exec", "other.sif", "/bin/true"], &[]);
    assert_eq!(out.status.code(), Some(255));
    assert_one_line_error(&out, &format!("the image is built for {other_arch}"));

    // build --arch takes the platform from the index too; a definition file builds only
    // for the host.
    ok(&sifr_at(
        d,
        &[
            "build",
            "--no-https",
            "--arch",
            other_arch,
            "built.sif",
            &uri,
        ],
        &[],
    ));
    let list = ok(&sifr_at(d, &["sif", "list", "built.sif"], &[]));
    assert!(
        list.contains(&format!("FS (Squashfs/*System/{other_arch})")),
        "{list}"
    );
    std::fs::write(d.join("s.def"), "Bootstrap: scratch\n").expect("write");
    let out = sifr_at(d, &["build", "--arch", other_arch, "d.sif", "s.def"], &[]);
    assert_eq!(out.status.code(), Some(255));
    assert_one_line_error(&out, "only a docker:// or oras:// source");
    assert!(!d.join("d.sif").exists());
    let out = sifr_at(
        d,
        &[
            "pull",
            "--no-https",
            "--arch",
            "ppc64le",
            "--name",
            "x.sif",
            &uri,
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(255));
    assert_one_line_error(&out, "has no manifest for linux/ppc64le");
    assert!(!d.join("x.sif").exists());
    let out = sifr_at(
        d,
        &[
            "pull",
            "--no-https",
            "--arch",
            "sparc",
            "--name",
            "x.sif",
            &uri,
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(255));
    assert_one_line_error(&out, "sparc");
    assert_no_partials(d);
}

/// A Python HTTP(S) server on 127.0.0.1 serving `root`, with `/truncated.sif` (announces
/// more bytes than it sends), `/secret.sif` (401), and `/cut.sif` and `/cut-range.sif`
/// (`bb.sif`, broken off halfway the first time; whole, or for `cut-range.sif` from the
/// range asked for, later). Stopped when dropped.
struct WebServer {
    child: Child,
    port: u16,
}

const SERVER: &str = r#"
import http.server, os, ssl, sys
root, port, cert = sys.argv[1], int(sys.argv[2]), sys.argv[3]
GETS = {}
class H(http.server.SimpleHTTPRequestHandler):
    def __init__(self, *a, **k):
        super().__init__(*a, directory=root, **k)
    def log_message(self, *a):
        pass
    def send_head(self):
        if self.path == "/truncated.sif":
            data = open(os.path.join(root, "bb.sif"), "rb").read()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command == "GET":
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
            self.close_connection = True
            return None
        if self.path in ("/cut.sif", "/cut-range.sif"):
            # The first GET breaks off halfway (announcing the whole file); later ones send
            # it all, from the start (as http.server does) or, for cut-range.sif, from the
            # byte a Range header asks for (206).
            data = open(os.path.join(root, "bb.sif"), "rb").read()
            n = GETS.get(self.path, 0)
            start = 0
            rng = self.headers.get("Range") or ""
            if self.path == "/cut-range.sif" and rng.startswith("bytes=") and rng.endswith("-"):
                start = int(rng[6:-1])
            if start:
                self.send_response(206)
                self.send_header("Content-Range", "bytes %d-%d/%d" % (start, len(data) - 1, len(data)))
            else:
                self.send_response(200)
            self.send_header("Content-Length", str(len(data) - start))
            self.send_header("Last-Modified", "Sun, 06 Dec 2026 10:00:00 GMT")
            self.end_headers()
            if self.command == "GET":
                GETS[self.path] = n + 1
                body = data[start:]
                if n == 0:
                    body = body[: len(data) // 2]
                self.wfile.write(body)
                self.wfile.flush()
            self.close_connection = True
            return None
        if self.path == "/secret.sif":
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="x"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        return super().send_head()
srv = http.server.ThreadingHTTPServer(("127.0.0.1", port), H)
if cert:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, cert.replace("cert", "key"))
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
srv.serve_forever()
"#;

impl WebServer {
    fn start(dir: &Path, root: &Path, cert: Option<&Path>) -> WebServer {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let script = dir.join("server.py");
        std::fs::write(&script, SERVER).expect("write server");
        let child = Command::new("python3")
            .arg(&script)
            .arg(root)
            .arg(port.to_string())
            .arg(cert.map(|c| c.as_os_str()).unwrap_or_default())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("start python3");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the web server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        WebServer { child, port }
    }
}

impl Drop for WebServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// http:// pulls: the file as served, cached under `net/`, runnable with `exec`; a 404, a
/// 401, a truncated transfer and a file that is no image: one line each, nothing left in
/// the destination directory or the cache.
#[test]
fn test_http_pull() {
    require_unprivileged();
    if !have_tools(&["python3"]) {
        return;
    }
    let t = tempdir();
    let d = t.path();
    let root = d.join("www");
    std::fs::create_dir(&root).expect("mkdir");
    let (bb, _, _, _) = busybox_pair();
    std::fs::copy(&bb, root.join("bb.sif")).expect("copy");
    std::fs::write(root.join("page.html"), "<html>not an image</html>").expect("write");
    let web = WebServer::start(d, &root, None);
    let base = format!("http://127.0.0.1:{}", web.port);
    let sif = read(&bb);

    ok(&sifr_at(d, &["pull", &format!("{base}/bb.sif")], &[]));
    assert_eq!(read(&d.join("bb.sif")), sif, "default name from the URL");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(d.join("bb.sif"))
        .expect("stat")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);
    let net = d.join("sifr-cache/cache/net");
    let cached: Vec<_> = std::fs::read_dir(&net).expect("net cache").collect();
    assert_eq!(cached.len(), 1, "one cached download");
    let out = sifr_at(
        d,
        &["pull", "--name", "again.sif", &format!("{base}/bb.sif")],
        &[],
    );
    ok(&out);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Using cached image"),
        "{out:?}"
    );
    assert_eq!(read(&d.join("again.sif")), sif);
    ok(&sifr_at(
        d,
        &[
            "pull",
            "--disable-cache",
            "--name",
            "nocache.sif",
            &format!("{base}/bb.sif"),
        ],
        &[],
    ));
    assert_eq!(read(&d.join("nocache.sif")), sif);
    let out = sifr_at(
        d,
        &["exec", &format!("{base}/bb.sif"), "echo", "from-http"],
        &[],
    );
    assert_eq!(ok(&out), "from-http\n");
    ok(&sifr_at(
        d,
        &["build", "--sandbox", "tree", &format!("{base}/bb.sif")],
        &[],
    ));
    assert!(d.join("tree/bin/busybox").exists() || d.join("tree/bin/sh").exists());

    for (path, needle) in [
        (
            "missing.sif",
            "HTTP 404 (the requested image was not found)",
        ),
        ("secret.sif", "HTTP 401 (authentication required"),
        ("truncated.sif", "cannot download"),
        ("page.html", "is not a container image"),
    ] {
        let out = sifr_at(
            d,
            &["pull", "--name", "bad.sif", &format!("{base}/{path}")],
            &[],
        );
        assert_eq!(out.status.code(), Some(255), "{path}: {out:?}");
        assert_one_line_error(&out, needle);
        assert!(!d.join("bad.sif").exists(), "{path}");
    }
    let out = sifr_at(
        d,
        &[
            "pull",
            "--name",
            "bad.sif",
            "http://no-such-host.invalid/x.sif",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(255));
    assert_one_line_error(&out, "cannot download http://no-such-host.invalid/x.sif");
    assert_eq!(
        std::fs::read_dir(&net).expect("net cache").count(),
        1,
        "failed downloads are not cached"
    );
    assert_no_partials(d);
}

/// https:// pulls: a server whose certificate the system does not trust is refused in one
/// line; trusted through SSL_CERT_FILE, the image arrives intact.
#[test]
fn test_https_pull_with_a_trusted_throwaway_certificate() {
    require_unprivileged();
    if !have_tools(&["python3", "openssl"]) {
        return;
    }
    let t = tempdir();
    let d = t.path();
    let root = d.join("www");
    std::fs::create_dir(&root).expect("mkdir");
    let (bb, _, _, _) = busybox_pair();
    std::fs::copy(&bb, root.join("bb.sif")).expect("copy");
    let cert = d.join("cert.pem");
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
            "-keyout",
        ])
        .arg(d.join("key.pem"))
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(out.status.success(), "{out:?}");
    let web = WebServer::start(d, &root, Some(&cert));
    let url = format!("https://127.0.0.1:{}/bb.sif", web.port);

    let out = sifr_at(d, &["pull", "--name", "u.sif", &url], &[]);
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    assert_one_line_error(&out, "cannot download https://127.0.0.1");
    assert!(!d.join("u.sif").exists());

    let cert_s = cert.to_str().expect("utf8");
    ok(&sifr_at(
        d,
        &["pull", "--name", "t.sif", &url],
        &[("SSL_CERT_FILE", cert_s)],
    ));
    assert_eq!(read(&d.join("t.sif")), read(&bb));
    assert_no_partials(d);
}

/// A registry (Python, on 127.0.0.1) that serves a SIF artifact whose layer bytes do not
/// match the digest in its manifest: the pull is refused in one line, and neither the
/// destination nor the cache keeps anything.
#[test]
fn test_oras_blob_with_a_wrong_digest_is_refused() {
    require_unprivileged();
    if !have_tools(&["python3"]) {
        return;
    }
    let t = tempdir();
    let d = t.path();
    let (bb, _, _, _) = busybox_pair();
    let sif = read(&bb);
    let mut tampered = sif.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 0xff;
    std::fs::write(d.join("served.bin"), &tampered).expect("write");
    let manifest = apptainer_manifest("bb.sif", &sif);
    std::fs::write(d.join("manifest.json"), &manifest).expect("write");
    let script = d.join("liar.py");
    std::fs::write(
        &script,
        r#"
import http.server, sys
d, port = sys.argv[1], int(sys.argv[2])
class H(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass
    def do_GET(self):
        if "/manifests/" in self.path:
            body, ct = open(d + "/manifest.json", "rb").read(), "application/vnd.oci.image.manifest.v1+json"
        elif "/blobs/" in self.path:
            body, ct = open(d + "/served.bin", "rb").read(), "application/octet-stream"
        else:
            body, ct = b"{}", "application/json"
        self.send_response(200)
        self.send_header("Content-Type", ct)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
http.server.ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
"#,
    )
    .expect("write");
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let child = Command::new("python3")
        .arg(&script)
        .arg(d)
        .arg(port.to_string())
        .stdin(Stdio::null())
        .spawn()
        .expect("python3");
    let server = WebServer { child, port };
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", server.port)).is_err() {
        assert!(Instant::now() < deadline, "the fake registry did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let uri = format!("oras://127.0.0.1:{port}/test/bb:1");
    for args in [
        vec!["pull", "--no-https", "--name", "bad.sif", &uri],
        vec!["exec", "--no-https", &uri, "true"],
    ] {
        let out = sifr_at(d, &args, &[]);
        assert_eq!(out.status.code(), Some(255), "{args:?}: {out:?}");
        assert_one_line_error(&out, "(corrupt or tampered)");
    }
    assert!(!d.join("bad.sif").exists());
    let oras = d.join("sifr-cache/cache/oras");
    assert_eq!(
        std::fs::read_dir(&oras).expect("oras cache").count(),
        0,
        "nothing cached"
    );
    assert_no_partials(d);
}

/// library://, shub:// and docker-daemon: stay refused, one line each saying why.
#[test]
fn test_other_sources_are_refused_in_one_line() {
    require_unprivileged();
    let t = tempdir();
    let d = t.path();
    for (uri, needle) in [
        (
            "library://alpine:latest",
            "sifr talks to no container library",
        ),
        ("shub://user/image", "Singularity Hub is retired"),
        ("docker-daemon:alpine:latest", "talks to no Docker daemon"),
    ] {
        for verb in [&["pull", "--name", "x.sif"][..], &["exec"][..]] {
            let mut args = verb.to_vec();
            args.push(uri);
            if verb[0] == "exec" {
                args.push("true");
            }
            let out = sifr_at(d, &args, &[]);
            assert_eq!(out.status.code(), Some(255), "{args:?}");
            assert_one_line_error(&out, needle);
        }
    }
    assert!(!d.join("x.sif").exists());
}

/// Pulls `test/bb:1` from the registry on `port` to `d/resumed.sif` and checks that the
/// pull resumed the kept download of `sha256:HEX` at byte `have`.
fn pull_resumed(d: &Path, port: u16, hex: &str, have: u64) {
    let out = sifr_at(
        d,
        &[
            "--debug",
            "pull",
            "--no-https",
            "--name",
            "resumed.sif",
            &format!("oras://127.0.0.1:{port}/test/bb:1"),
        ],
        &[],
    );
    ok(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("resuming sha256:{hex} at byte {have}")),
        "{err}"
    );
}

/// A loopback registry in `d` with the busybox SIF pushed as `test/bb:1` (also left at
/// `d/bb.sif`); returns the registry and the SIF's bytes.
fn registry_with_busybox(d: &Path) -> (Registry, Vec<u8>) {
    let reg = Registry::start(d, None);
    let (bb, _, _, _) = busybox_pair();
    std::fs::copy(&bb, d.join("bb.sif")).expect("copy");
    ok(&sifr_at(
        d,
        &[
            "push",
            "--no-https",
            "bb.sif",
            &format!("oras://127.0.0.1:{}/test/bb:1", reg.port),
        ],
        &[],
    ));
    (reg, read(&bb))
}

/// An oras:// pull that breaks off midway keeps what arrived in the cache's partial file
/// (and nothing at the destination); the next pull asks docker-registry for the rest
/// (`--debug` says from which byte), and the SIF is byte for byte the one pushed.
#[test]
fn test_interrupted_oras_pull_resumes() {
    require_unprivileged();
    if !have_tools(&["docker-registry"]) {
        return;
    }
    let t = tempdir();
    let d = t.path();
    let (reg, sif) = registry_with_busybox(d);
    let hex = &sha256(&sif)[7..];

    let relay = cutting_relay(reg.port, sif.len() / 2);
    let cut_pull = || {
        let out = sifr_at(
            d,
            &[
                "pull",
                "--no-https",
                "--name",
                "cut.sif",
                &format!("oras://127.0.0.1:{relay}/test/bb:1"),
            ],
            &[],
        );
        assert_eq!(out.status.code(), Some(255), "{out:?}");
        assert_one_line_error(&out, "SIF layer");
        assert!(!d.join("cut.sif").exists());
    };
    let oras = d.join("sifr-cache/cache/oras");
    let direct = format!("oras://127.0.0.1:{}/test/bb:1", reg.port);
    // Kept bytes that are not the blob's (damaged on disk): the resumed download fails the
    // digest check in one line and the partial file goes, so the next pull starts afresh.
    cut_pull();
    let kept = partials(&oras);
    assert_eq!(kept.len(), 1, "{kept:?}");
    let mut damaged = read(&kept[0].0);
    damaged[0] ^= 0xff;
    std::fs::write(&kept[0].0, &damaged).expect("damage");
    let out = sifr_at(
        d,
        &["pull", "--no-https", "--name", "bad.sif", &direct],
        &[],
    );
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    assert_one_line_error(&out, "corrupt or tampered");
    assert!(!d.join("bad.sif").exists());
    assert!(!oras.join(hex).exists());
    assert_eq!(partials(&oras), vec![], "a damaged partial file was kept");
    // `cache clean` removes what an interrupted pull left.
    cut_pull();
    assert_eq!(partials(&oras).len(), 1);
    ok(&sifr_at(d, &["cache", "clean", "-f", "-T", "oras"], &[]));
    assert_eq!(
        partials(&oras),
        vec![],
        "cache clean left a partial download"
    );
    cut_pull();
    assert!(!oras.join(hex).exists(), "an incomplete SIF was cached");
    let kept = partials(&oras);
    let [(path, have)] = kept.as_slice() else {
        panic!("one partial file expected: {kept:?}");
    };
    assert_eq!(path.file_name().expect("name"), &*format!(".partial-{hex}"));
    assert!(*have > 0 && *have < sif.len() as u64, "{have} bytes kept");
    assert_eq!(
        read(path),
        sif[..*have as usize],
        "the bytes kept are the SIF's"
    );

    pull_resumed(d, reg.port, hex, *have);
    assert_eq!(
        read(&d.join("resumed.sif")),
        sif,
        "the resumed SIF is intact"
    );
    assert_eq!(read(&oras.join(hex)), sif);
    assert_no_partials(d);
}

/// An http:// pull into the cache that breaks off keeps a partial file; the next pull of the
/// same URL continues it with a range request where the server supports one (206), and
/// starts over cleanly where it sends the whole file (200, as python's http.server does).
#[test]
fn test_interrupted_http_pull_resumes_or_restarts() {
    require_unprivileged();
    if !have_tools(&["python3"]) {
        return;
    }
    let t = tempdir();
    let d = t.path();
    let root = d.join("www");
    std::fs::create_dir(&root).expect("mkdir");
    let (bb, _, _, _) = busybox_pair();
    std::fs::copy(&bb, root.join("bb.sif")).expect("copy");
    let web = WebServer::start(d, &root, None);
    let sif = read(&bb);
    let net = d.join("sifr-cache/cache/net");
    for (path, says) in [
        ("cut-range.sif", format!("at byte {}", sif.len() / 2)),
        ("cut.sif", "downloading from the start".to_string()),
    ] {
        let url = format!("http://127.0.0.1:{}/{path}", web.port);
        let out = sifr_at(d, &["pull", "--name", "x.sif", &url], &[]);
        assert_eq!(out.status.code(), Some(255), "{path}: {out:?}");
        assert_one_line_error(&out, "the transfer broke off after");
        assert!(!d.join("x.sif").exists(), "{path}");
        let kept = partials(&net);
        assert_eq!(kept.len(), 1, "{path}: {kept:?}");
        assert_eq!(kept[0].1, sif.len() as u64 / 2, "{path}");

        let out = sifr_at(d, &["--debug", "pull", "--name", path, &url], &[]);
        ok(&out);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&says), "{path}: {err}");
        assert_eq!(read(&d.join(path)), sif, "{path}");
        assert!(partials(&net).is_empty(), "{path}");
    }
    assert_no_partials(d);
}

/// On a terminal (a pseudo terminal made by `script`), `push` shows an upload bar and
/// `pull` a download bar, with the SIF's size; without one (the other tests), nothing.
#[test]
fn test_push_and_pull_show_progress_on_a_terminal() {
    require_unprivileged();
    if !have_tools(&["docker-registry", "script"]) {
        return;
    }
    let t = tempdir();
    let d = t.path();
    let reg = Registry::start(d, None);
    let (bb, _, _, _) = busybox_pair();
    std::fs::copy(&bb, d.join("bb.sif")).expect("copy");
    let sif = read(&bb);
    let short = &sha256(&sif)[7..19];
    let uri = format!("oras://127.0.0.1:{}/test/bb:1", reg.port);
    let sifr = sifr_bin();
    let sifr = sifr.to_str().expect("utf8");
    let on_terminal = |args: &str| {
        let out = Command::new("script")
            .args(["-qec", &format!("{sifr} {args}; echo rc=$?"), "/dev/null"])
            .current_dir(d)
            .env("HOME", d)
            .env("SIFR_CACHEDIR", d.join("sifr-cache"))
            .env_remove("SIFR_NO_PROGRESS")
            .stdin(Stdio::null())
            .output()
            .expect("script");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let out = on_terminal(&format!("push --no-https bb.sif {uri}"));
    assert!(out.contains("rc=0"), "{out}");
    assert!(out.contains(&format!("Uploading SIF {short}")), "{out}");
    assert!(out.contains("Upload complete"), "{out}");
    let out = on_terminal(&format!("pull --no-https --name p.sif {uri}"));
    assert!(out.contains("rc=0"), "{out}");
    assert!(out.contains(&format!("Copying SIF {short}")), "{out}");
    assert_eq!(read(&d.join("p.sif")), sif);

    // Not on a terminal: no bar (another repository, so that the SIF is uploaded again).
    std::fs::remove_dir_all(d.join("sifr-cache")).expect("rm cache");
    let uri = format!("oras://127.0.0.1:{}/test/bb2:1", reg.port);
    let out = sifr_at(d, &["--debug", "push", "--no-https", "bb.sif", &uri], &[]);
    ok(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains(&format!("blob {short} already in the registry")),
        "{err}"
    );
    assert!(!err.contains("Uploading SIF"), "{err}");
    let out = sifr_at(d, &["pull", "--no-https", "--name", "q.sif", &uri], &[]);
    ok(&out);
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("Copying SIF"),
        "{out:?}"
    );
}

/// A pull killed outright (SIGKILL) while its download hangs midway leaves the bytes that
/// arrived; the next pull resumes from there and the SIF is the one pushed.
#[test]
fn test_killed_oras_pull_resumes() {
    require_unprivileged();
    if !have_tools(&["docker-registry"]) {
        return;
    }
    let t = tempdir();
    let d = t.path();
    let (reg, sif) = registry_with_busybox(d);
    let hex = &sha256(&sif)[7..];
    let relay = stalling_relay(reg.port, sif.len() / 2);
    let mut child = Command::new(sifr_bin())
        .args([
            "pull",
            "--no-https",
            "--name",
            "killed.sif",
            &format!("oras://127.0.0.1:{relay}/test/bb:1"),
        ])
        .current_dir(d)
        .env("SIFR_CACHEDIR", d.join("sifr-cache"))
        .env("HOME", d)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start sifr pull");
    // Wait until the partial file stops growing (the relay stalls), then kill.
    let oras = d.join("sifr-cache/cache/oras");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = None;
    loop {
        assert!(Instant::now() < deadline, "no partial download appeared");
        std::thread::sleep(Duration::from_millis(300));
        let now = partials(&oras);
        if now.len() == 1 && now[0].1 > 0 && last.as_ref() == Some(&now) {
            break;
        }
        last = Some(now);
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("wait");
    assert!(!d.join("killed.sif").exists());
    let kept = partials(&oras);
    let [(path, have)] = kept.as_slice() else {
        panic!("one partial file expected: {kept:?}");
    };
    assert!(*have < sif.len() as u64, "{have}");
    assert_eq!(read(path), sif[..*have as usize]);

    pull_resumed(d, reg.port, hex, *have);
    assert_eq!(read(&d.join("resumed.sif")), sif);
    assert_no_partials(d);
}
