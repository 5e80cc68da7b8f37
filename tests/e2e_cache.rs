//! End-to-end tests of `cache list` and `cache clean`, and of concurrent pulls sharing the
//! cache, run as the unprivileged user against Debian's `docker-registry` on 127.0.0.1
//! (an image pushed by skopeo, pulled with `sifr pull --no-https`):
//! - `cache list` counts and sizes match the files on disk, per type (`-T`), and `-v`
//!   lists every entry;
//! - `cache clean --dry-run` removes nothing, `-T` removes one type only, `--days`
//!   leaves younger entries, the confirmation prompt cancels on anything but `y`, and
//!   `cache clean -f` leaves no entry;
//! - two `sifr pull` of one image at once both succeed and leave one converted SIF in
//!   the cache and no temporary file;
//! - a `docker://` pull whose layer download breaks off midway (a relay to the registry
//!   that closes the connection) keeps the bytes, and the next pull resumes from there.
//!
//! Needs umoci, skopeo and docker-registry: skipped with a visible reason without them,
//! except in CI (SIFR_CI=1), where that fails.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::oci::{Registry, cutting_relay, have_tools, partials, push_small_image};
use common::*;

/// Runs sifr in `cwd` with the cache `cwd/c` (so `cwd/c/cache`), feeding `stdin`.
fn sifr_c(cwd: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(sifr_bin())
        .args(args)
        .current_dir(cwd)
        .env("SIFR_CACHEDIR", cwd.join("c"))
        .env("HOME", cwd)
        .env_remove("APPTAINER_CACHEDIR")
        .env_remove("SINGULARITY_CACHEDIR")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run sifr");
    let mut input = child.stdin.take().expect("stdin");
    let _ = input.write_all(stdin.as_bytes());
    drop(input);
    child.wait_with_output().expect("wait sifr")
}

/// The files of one cache directory (temporary ones apart), with their sizes.
fn files(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut out: Vec<(PathBuf, u64)> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .flatten()
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .map(|e| (e.path(), e.metadata().expect("stat").len()))
            .collect(),
        Err(_) => Vec::new(),
    };
    out.sort();
    out
}

fn temp_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default()
}

/// Apptainer's size format.
fn human(size: u64) -> String {
    let s = size as f64;
    let k = 1024.0;
    if s < k * k {
        format!("{:.2} KiB", s / k)
    } else if s < k * k * k {
        format!("{:.2} MiB", s / (k * k))
    } else {
        format!("{:.2} GiB", s / (k * k * k))
    }
}

fn total(v: &[(PathBuf, u64)]) -> u64 {
    v.iter().map(|(_, s)| s).sum()
}

#[test]
fn test_cache_list_and_clean_after_a_pull() {
    require_unprivileged();
    if !have_tools(&["umoci", "skopeo", "docker-registry"]) {
        return;
    }
    let t = tempdir();
    let d = t.path();
    let reg = Registry::start(d, None);
    push_small_image(d, &reg, None);
    let uri = format!("docker://{}", reg.image());
    let blobs_dir = d.join("c/cache/blob/blobs/sha256");
    let sifs_dir = d.join("c/cache/oci-tmp");

    // An empty cache.
    let out = ok(&sifr_c(d, &["cache", "list"], ""));
    assert_eq!(
        out,
        "There are 0 container file(s) using 0.00 KiB and 0 oci blob file(s) using 0.00 KiB of space\nTotal space used: 0.00 KiB\n"
    );

    ok(&sifr_c(
        d,
        &["pull", "--no-https", "--name", "a.sif", &uri],
        "",
    ));
    let blobs = files(&blobs_dir);
    let sifs = files(&sifs_dir);
    // Manifest, config and one layer; one converted SIF.
    assert_eq!(blobs.len(), 3, "{blobs:?}");
    assert_eq!(sifs.len(), 1, "{sifs:?}");
    let out = ok(&sifr_c(d, &["cache", "list"], ""));
    assert_eq!(
        out,
        format!(
            "There are 1 container file(s) using {} and 3 oci blob file(s) using {} of space\nTotal space used: {}\n",
            human(total(&sifs)),
            human(total(&blobs)),
            human(total(&sifs) + total(&blobs))
        )
    );
    let out = ok(&sifr_c(d, &["cache", "list", "-T", "blob"], ""));
    assert_eq!(
        out,
        format!(
            "There are 3 oci blob file(s) using {} of space\nTotal space used: {}\n",
            human(total(&blobs)),
            human(total(&blobs))
        )
    );
    // -v: a header, one line per entry (name cut at 22 characters), a blank line.
    let out = ok(&sifr_c(d, &["cache", "list", "-v"], ""));
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("NAME "), "{out}");
    assert_eq!(lines.len(), 1 + 4 + 1 + 2, "{out}");
    for (p, size) in blobs.iter().chain(&sifs) {
        let name: String = p
            .file_name()
            .expect("name")
            .to_string_lossy()
            .chars()
            .take(22)
            .collect();
        let kind = if p.starts_with(&blobs_dir) {
            "blob"
        } else {
            "oci-tmp"
        };
        assert!(
            lines.iter().any(|l| l.starts_with(&format!("{name}  "))
                && l.contains(&human(*size))
                && l.ends_with(kind)),
            "{name} {size}: {out}"
        );
    }

    // A dry run removes nothing, whatever the types.
    let out = sifr_c(d, &["cache", "clean", "--dry-run"], "");
    let stdout = ok(&out);
    assert!(stdout.contains("dry run"), "{stdout}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Removing blob cache entry") && stderr.contains("Removing oci-tmp"),
        "{stderr}"
    );
    assert_eq!(files(&blobs_dir), blobs);
    assert_eq!(files(&sifs_dir), sifs);
    // The prompt: anything but "y" cancels; no answer at all is an error.
    ok(&sifr_c(d, &["cache", "clean"], "n\n"));
    assert_eq!(files(&blobs_dir), blobs);
    let out = sifr_c(d, &["cache", "clean"], "");
    assert_eq!(out.status.code(), Some(255));
    assert_eq!(files(&blobs_dir), blobs);
    // Entries younger than a day stay with --days 1.
    ok(&sifr_c(d, &["cache", "clean", "-f", "--days", "1"], ""));
    assert_eq!(files(&blobs_dir), blobs);
    // -T: one type only.
    ok(&sifr_c(d, &["cache", "clean", "-T", "oci-tmp"], "y\n"));
    assert!(files(&sifs_dir).is_empty());
    assert_eq!(files(&blobs_dir), blobs);
    // A pull reuses the cached blobs and converts again.
    ok(&sifr_c(
        d,
        &["pull", "--no-https", "--name", "b.sif", &uri],
        "",
    ));
    assert_eq!(files(&sifs_dir).len(), 1);
    // An unknown type is refused before anything is removed.
    assert_one_line_error(
        &sifr_c(d, &["cache", "clean", "-f", "-T", "blob,nope"], ""),
        "nope",
    );
    assert_eq!(files(&blobs_dir), blobs);
    // Everything goes.
    ok(&sifr_c(d, &["cache", "clean", "-f"], ""));
    assert!(files(&blobs_dir).is_empty());
    assert!(files(&sifs_dir).is_empty());
    let out = ok(&sifr_c(d, &["cache", "list"], ""));
    assert!(
        out.contains(" 0 container file(s)") && out.contains(" 0 oci blob"),
        "{out}"
    );
    // The images pulled are not part of the cache.
    assert!(d.join("a.sif").is_file() && d.join("b.sif").is_file());
}

/// APPTAINER_CACHEDIR and SINGULARITY_CACHEDIR name the cache as SIFR_CACHEDIR does.
#[test]
fn test_cache_location_from_apptainer_names() {
    require_unprivileged();
    let t = tempdir();
    let d = t.path();
    for var in [
        "APPTAINER_CACHEDIR",
        "SINGULARITY_CACHEDIR",
        "SIFR_CACHEDIR",
    ] {
        let dir = d.join(var);
        let blob = dir.join("cache/blob/blobs/sha256/0123");
        std::fs::create_dir_all(blob.parent().expect("parent")).expect("mkdir");
        std::fs::write(&blob, vec![0u8; 2048]).expect("write");
        let out = Command::new(sifr_bin())
            .args(["cache", "list", "-T", "blob"])
            .env_remove("SIFR_CACHEDIR")
            .env_remove("APPTAINER_CACHEDIR")
            .env_remove("SINGULARITY_CACHEDIR")
            .env(var, &dir)
            .env("HOME", d)
            .output()
            .expect("run sifr");
        assert_eq!(
            ok(&out),
            "There are 1 oci blob file(s) using 2.00 KiB of space\nTotal space used: 2.00 KiB\n",
            "{var}"
        );
        let out = Command::new(sifr_bin())
            .args(["cache", "clean", "-f"])
            .env_remove("SIFR_CACHEDIR")
            .env_remove("APPTAINER_CACHEDIR")
            .env_remove("SINGULARITY_CACHEDIR")
            .env(var, &dir)
            .env("HOME", d)
            .output()
            .expect("run sifr");
        ok(&out);
        assert!(!blob.exists(), "{var}");
    }
}

#[test]
fn test_concurrent_pulls_share_the_cache() {
    require_unprivileged();
    if !have_tools(&["umoci", "skopeo", "docker-registry"]) {
        return;
    }
    let t = tempdir();
    let d = t.path();
    let reg = Registry::start(d, None);
    push_small_image(d, &reg, None);
    let uri = format!("docker://{}", reg.image());
    let start = |name: &str| {
        Command::new(sifr_bin())
            .args(["pull", "--no-https", "--name", name, &uri])
            .current_dir(d)
            .env("SIFR_CACHEDIR", d.join("c"))
            .env("HOME", d)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sifr pull")
    };
    let (a, b) = (start("a.sif"), start("b.sif"));
    ok(&a.wait_with_output().expect("wait"));
    ok(&b.wait_with_output().expect("wait"));
    let sifs_dir = d.join("c/cache/oci-tmp");
    let blobs_dir = d.join("c/cache/blob/blobs/sha256");
    assert_eq!(files(&sifs_dir).len(), 1, "{:?}", files(&sifs_dir));
    assert_eq!(files(&blobs_dir).len(), 3, "{:?}", files(&blobs_dir));
    assert!(
        temp_files(&sifs_dir).is_empty(),
        "{:?}",
        temp_files(&sifs_dir)
    );
    assert!(
        temp_files(&blobs_dir).is_empty(),
        "{:?}",
        temp_files(&blobs_dir)
    );
    // Both images are complete: they run.
    for name in ["a.sif", "b.sif"] {
        ok(&sifr_c(d, &["exec", name, "true"], ""));
    }
}

/// `--disable-cache` (pull, build, exec): the image is made and runs, and the cache gets
/// neither a blob nor a converted SIF.
#[test]
fn test_disable_cache_keeps_nothing() {
    require_unprivileged();
    if !have_tools(&["umoci", "skopeo", "docker-registry"]) {
        return;
    }
    let t = tempdir();
    let d = t.path();
    let reg = Registry::start(d, None);
    push_small_image(d, &reg, None);
    let uri = format!("docker://{}", reg.image());
    let blobs_dir = d.join("c/cache/blob/blobs/sha256");
    let sifs_dir = d.join("c/cache/oci-tmp");
    let nothing_cached = |after: &str| {
        assert!(
            files(&blobs_dir).is_empty(),
            "{after}: {:?}",
            files(&blobs_dir)
        );
        assert!(
            files(&sifs_dir).is_empty(),
            "{after}: {:?}",
            files(&sifs_dir)
        );
        assert!(temp_files(&blobs_dir).is_empty(), "{after}");
        assert!(temp_files(&sifs_dir).is_empty(), "{after}");
    };
    ok(&sifr_c(
        d,
        &[
            "pull",
            "--no-https",
            "--disable-cache",
            "--name",
            "p.sif",
            &uri,
        ],
        "",
    ));
    nothing_cached("pull");
    ok(&sifr_c(
        d,
        &["build", "--no-https", "--disable-cache", "b.sif", &uri],
        "",
    ));
    nothing_cached("build");
    for sif in ["p.sif", "b.sif"] {
        ok(&sifr_c(d, &["exec", sif, "true"], ""));
    }
    ok(&sifr_c(
        d,
        &["exec", "--no-https", "--disable-cache", &uri, "true"],
        "",
    ));
    nothing_cached("exec");
    // Without the flag the same pull fills the cache: the checks above can fail.
    ok(&sifr_c(
        d,
        &["pull", "--no-https", "--name", "q.sif", &uri],
        "",
    ));
    assert_eq!(files(&blobs_dir).len(), 3);
    assert_eq!(files(&sifs_dir).len(), 1);
}

/// A docker:// pull whose layer download breaks off keeps the bytes that arrived in the
/// cache's `.partial-<digest>`; the next pull asks docker-registry for the rest (`--debug`
/// says from which byte), and the blob is the same as one downloaded in one go.
#[test]
fn test_interrupted_layer_download_resumes() {
    require_unprivileged();
    if !have_tools(&["umoci", "skopeo", "docker-registry"]) {
        return;
    }
    let t = tempdir();
    let d = t.path();
    let reg = Registry::start(d, None);
    push_small_image(d, &reg, None);
    let pull = |cache: &str, port: u16, name: &str, debug: bool| {
        let mut args = vec![];
        if debug {
            args.push("--debug");
        }
        let uri = format!("docker://127.0.0.1:{port}/test/img:v3");
        args.extend(["pull", "--no-https", "--name", name, &uri]);
        Command::new(sifr_bin())
            .args(&args)
            .current_dir(d)
            .env("SIFR_CACHEDIR", d.join(cache))
            .env("HOME", d)
            .stdin(Stdio::null())
            .output()
            .expect("run sifr")
    };
    // In one go, into another cache: the layer is the largest blob.
    ok(&pull("whole", reg.port, "whole.sif", false));
    let whole = d.join("whole/cache/blob/blobs/sha256");
    let (layer, size) = files(&whole)
        .into_iter()
        .max_by_key(|(_, len)| *len)
        .expect("blobs");
    let hex = layer
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();

    let relay = cutting_relay(reg.port, size as usize / 2);
    let out = pull("c", relay, "cut.sif", false);
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    let fatal: Vec<&str> = err.lines().filter(|l| l.starts_with("FATAL:")).collect();
    assert_eq!(fatal.len(), 1, "{err}");
    assert!(fatal[0].contains(&format!("blob sha256:{hex}")), "{err}");
    assert!(!d.join("cut.sif").exists());
    let blobs = d.join("c/cache/blob/blobs/sha256");
    assert!(!blobs.join(&hex).exists(), "an incomplete layer was cached");
    let kept = partials(&blobs);
    let [(path, have)] = kept.as_slice() else {
        panic!("one partial file expected: {kept:?}");
    };
    assert_eq!(path.file_name().expect("name"), &*format!(".partial-{hex}"));
    assert!(*have > 0 && *have < size, "{have} of {size} bytes kept");

    let out = pull("c", reg.port, "resumed.sif", true);
    ok(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("resuming sha256:{hex} at byte {have}")),
        "{err}"
    );
    assert_eq!(
        std::fs::read(blobs.join(&hex)).expect("resumed blob"),
        std::fs::read(&layer).expect("whole blob")
    );
    assert!(partials(&blobs).is_empty());
    ok(&sifr_c(d, &["exec", "resumed.sif", "true"], ""));
}
