//! The execution control list end to end: a relocated install (`<tmp>/install/bin/sifr` with
//! `<tmp>/install/etc/sifr/ecl.toml` and `global-pgp-public`) runs or refuses the busybox
//! SIF depending on where it is, who signed it and whether it was changed after signing.
//! Runs containers, so it must run as an unprivileged user (CI does).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::*;
use sifr::image::sif::SifImage;

/// A site: the relocated install, the user's keyring, and directories for images.
struct Site {
    _dir: tempfile::TempDir,
    root: PathBuf,
    exe: PathBuf,
}

impl Site {
    fn new() -> Site {
        let dir = tempdir();
        // The ECL compares resolved directories: work under the canonical path.
        let root = std::fs::canonicalize(dir.path()).expect("canonical tempdir");
        let bin = root.join("install/bin");
        std::fs::create_dir_all(&bin).expect("mkdir bin");
        std::fs::create_dir_all(root.join("install/etc/sifr")).expect("mkdir etc");
        let exe = bin.join("sifr");
        std::fs::copy(sifr_bin(), &exe).expect("copy sifr");
        wait_executable(&exe);
        Site {
            _dir: dir,
            root,
            exe,
        }
    }

    fn dir(&self, name: &str) -> PathBuf {
        let d = self.root.join(name);
        std::fs::create_dir_all(&d).expect("mkdir");
        d
    }

    /// Runs the staged sifr without a terminal.
    fn run(&self, args: &[&str]) -> Output {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new(&self.exe);
        cmd.args(args)
            .env("SIFR_KEYSDIR", self.root.join("keys"))
            .current_dir("/")
            .stdin(Stdio::null());
        // SAFETY: setsid is async-signal-safe; no terminal means nothing is asked.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        cmd.output().expect("run staged sifr")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "sifr {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn write_ecl(&self, text: &str) {
        std::fs::write(self.root.join("install/etc/sifr/ecl.toml"), text).expect("write ecl");
    }
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A new Ed25519 key pair in the user's keyring; returns its fingerprint.
fn new_key(site: &Site, name: &str) -> String {
    site.ok(&[
        "key",
        "newpair",
        "-N",
        name,
        "-E",
        "k@example.com",
        "-C",
        "",
        "-P",
        "",
        "--algorithm",
        "ed25519",
    ]);
    let list = site.ok(&["key", "list"]);
    let fps: Vec<&str> = list
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Fingerprint:"))
        .map(str::trim)
        .collect();
    fps.last().expect("a fingerprint").to_string()
}

/// The busybox SIF without its original signature (by a key nobody has), in `dir`.
fn unsigned_busybox(site: &Site, dir: &Path, name: &str) -> PathBuf {
    let to = dir.join(name);
    std::fs::copy(sif_fixture("busybox_amd64.sif"), &to).expect("copy busybox");
    let mut perm = std::fs::metadata(&to).expect("stat").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
    std::fs::set_permissions(&to, perm).expect("chmod");
    let img = SifImage::open(&to).expect("load busybox");
    assert_eq!(
        img.object(5).expect("object 5").data_type,
        sifr::image::sif::DataType::Signature
    );
    drop(img);
    site.ok(&["sif", "del", "5", s(&to)]);
    to
}

/// Signs `img` with the keys at these indexes of the user's secret keyring.
fn signed(site: &Site, img: &Path, idx: &[&str]) {
    for i in idx {
        site.ok(&["sign", "--keyidx", i, s(img)]);
    }
}

fn refused(site: &Site, img: &Path, needle: &str) {
    let out = site.run(&["exec", s(img), "true"]);
    assert_eq!(
        out.status.code(),
        Some(255),
        "{}: {}",
        img.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_one_line_error(&out, "refused by the execution control list");
    assert_one_line_error(&out, needle);
}

fn runs(site: &Site, img: &Path) {
    let out = site.run(&["exec", s(img), "echo", "allowed"]);
    assert!(
        out.status.success(),
        "{}: {}",
        img.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "allowed\n");
}

#[test]
fn test_ecl_whitelist_whitestrict_and_refusals() {
    require_unprivileged();
    if !sif_fixture("busybox_amd64.sif").exists() {
        eprintln!("SKIP: fixtures not found");
        return;
    }
    let site = Site::new();
    let (fa, fb, fc) = (
        new_key(&site, "Key A"),
        new_key(&site, "Key B"),
        new_key(&site, "Key C"),
    );
    // A and B are trusted by the site; C is only in the user's keyring.
    for idx in ["0", "1"] {
        let exported = site.root.join(format!("pub{idx}.asc"));
        site.ok(&["key", "export", "--armor", "--keyidx", idx, s(&exported)]);
        site.ok(&["key", "import", "--global", s(&exported)]);
    }
    let approved = site.dir("approved");
    let strict = site.dir("strict");
    let elsewhere = site.dir("elsewhere");
    site.write_ecl(&format!(
        "activated = true\n\n\
         [[execgroup]]\ntagname = \"approved\"\nmode = \"whitelist\"\ndirpath = \"{}\"\nkeyfp = [\"{fa}\"]\n\n\
         [[execgroup]]\ntagname = \"strict\"\nmode = \"whitestrict\"\ndirpath = \"{}\"\nkeyfp = [\"{fa}\", \"{fb}\"]\n",
        approved.display(),
        strict.display()
    ));

    // Whitelisted directory, signed by the listed key: runs.
    let good = unsigned_busybox(&site, &approved, "good.sif");
    signed(&site, &good, &["0"]);
    runs(&site, &good);

    // The same image elsewhere: no execgroup.
    let moved = elsewhere.join("good.sif");
    std::fs::copy(&good, &moved).expect("copy");
    refused(&site, &moved, "not part of any execgroup");
    // A symbolic link in the approved directory to that copy: judged by the real file.
    let link = approved.join("link.sif");
    std::os::unix::fs::symlink(&moved, &link).expect("symlink");
    refused(&site, &link, "not part of any execgroup");

    // Unsigned.
    let unsigned = unsigned_busybox(&site, &approved, "unsigned.sif");
    refused(&site, &unsigned, "signature not found for object group 1");

    // Signed by another key the site trusts, but that the group does not list.
    let by_b = unsigned_busybox(&site, &approved, "by-b.sif");
    signed(&site, &by_b, &["1"]);
    refused(
        &site,
        &by_b,
        &format!("requires a signature by one of {fa}"),
    );

    // Signed by a key only the user has: it cannot widen what the site allows.
    let by_c = unsigned_busybox(&site, &approved, "by-c.sif");
    signed(&site, &by_c, &["2"]);
    refused(&site, &by_c, "signature made by unknown entity");
    assert!(fc.len() == 40);

    // Tampered after signing: the definition file (object 1) changed by one byte.
    let tampered = unsigned_busybox(&site, &approved, "tampered.sif");
    signed(&site, &tampered, &["0"]);
    let off = SifImage::open(&tampered)
        .expect("load")
        .object(1)
        .expect("object 1")
        .range()
        .start;
    let mut bytes = std::fs::read(&tampered).expect("read");
    bytes[usize::try_from(off).expect("offset")] ^= 0x20;
    std::fs::write(&tampered, bytes).expect("write");
    refused(&site, &tampered, "data object integrity compromised: 1");

    // Whitestrict: both keys sign, it runs; one missing, it is refused naming the key.
    let both = unsigned_busybox(&site, &strict, "both.sif");
    signed(&site, &both, &["0", "1"]);
    runs(&site, &both);
    let one = unsigned_busybox(&site, &strict, "one.sif");
    signed(&site, &one, &["0"]);
    refused(&site, &one, &format!("missing: {fb}"));

    // With the list activated, a sandbox directory (no signatures) is refused.
    let sandbox = site.dir("sandbox");
    refused(&site, &sandbox, "only SIF images");

    // Deactivated: everything runs again.
    site.write_ecl("activated = false\n");
    runs(&site, &moved);
}

/// Where `needle` starts in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A SIF whose squashfs holds a static busybox and `/msg` = `SIGNED-CONTENT-0123456789`
/// stored uncompressed, signed by key 0 of the user's keyring; returns its bytes and the
/// bytes of the same image with `/msg` rewritten (same length, same layout: what an attacker
/// writes over the file once the list has checked it).
fn signed_and_rewritten(site: &Site, dir: &Path) -> (PathBuf, Vec<u8>, Vec<u8>) {
    let busybox = which("busybox").expect("busybox-static on PATH (ci/setup-host installs it)");
    let tree = dir.join("tree");
    std::fs::create_dir_all(tree.join("bin")).expect("mkdir");
    std::fs::create_dir_all(tree.join("work")).expect("mkdir");
    std::fs::copy(&busybox, tree.join("bin/busybox")).expect("copy busybox");
    for a in ["sh", "cat", "echo", "test", "usleep", "true"] {
        std::os::unix::fs::symlink("busybox", tree.join("bin").join(a)).expect("symlink");
    }
    std::fs::write(tree.join("msg"), b"SIGNED-CONTENT-0123456789\n").expect("msg");
    let sqfs = dir.join("root.sqfs");
    let out = run(
        "mksquashfs",
        [
            s(&tree),
            s(&sqfs),
            "-noappend",
            "-noD",
            "-no-fragments",
            "-no-xattrs",
            "-all-root",
            "-quiet",
            "-no-progress",
        ],
    );
    ok(&out);
    let img = dir.join("pinned.sif");
    site.ok(&["sif", "new", s(&img)]);
    site.ok(&[
        "sif",
        "add",
        "--datatype",
        "4",
        "--parttype",
        "2",
        "--partfs",
        "1",
        "--partarch",
        "2",
        "--groupid",
        "1",
        s(&img),
        s(&sqfs),
    ]);
    signed(site, &img, &["0"]);
    let good = std::fs::read(&img).expect("read image");
    let at = find(&good, b"SIGNED-CONTENT-0123456789").expect("the marker is stored as is");
    let mut bad = good.clone();
    bad[at..at + 25].copy_from_slice(b"UNSIGNED-CONTENT-12345678");
    (img, good, bad)
}

/// Writes `bytes` over `path` in place (the same inode, as an attacker who can write the file
/// but not swap it would).
fn overwrite(path: &Path, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open image for writing");
    f.write_all_at(bytes, 0).expect("rewrite image");
}

/// The list checks the bytes it verified, not the file: an image rewritten in place after the
/// check (by a user who can write it) never runs the rewritten content. First a deterministic
/// rewrite (the container waits for it before reading), then 200 timed races.
#[test]
fn test_ecl_rewrite_after_verification_never_runs_unsigned_bytes() {
    require_unprivileged();
    let site = Site::new();
    let fa = new_key(&site, "Key A");
    let exported = site.root.join("pub0.asc");
    site.ok(&["key", "export", "--armor", "--keyidx", "0", s(&exported)]);
    site.ok(&["key", "import", "--global", s(&exported)]);
    let approved = site.dir("approved");
    site.write_ecl(&format!(
        "activated = true\n\n[[execgroup]]\ntagname = \"approved\"\nmode = \"whitelist\"\n\
         dirpath = \"{}\"\nkeyfp = [\"{fa}\"]\n",
        approved.display()
    ));
    let (img, good, bad) = signed_and_rewritten(&site, &approved);
    // Untouched, it runs; the rewritten bytes alone are refused.
    let out = site.run(&["exec", s(&img), "cat", "/msg"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "SIGNED-CONTENT-0123456789\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    overwrite(&img, &bad);
    refused(&site, &img, "integrity");

    // Deterministic: the container signals once it runs (the list has checked the image),
    // the test rewrites the file, then the container reads /msg.
    let shared = site.dir("shared");
    let bind = format!("{}:/work", shared.display());
    overwrite(&img, &good);
    let script = "echo up > /work/ready; while ! test -e /work/rewritten; do usleep 10000; done; \
                  cat /msg";
    let child = Command::new(&site.exe)
        .args([
            "exec",
            "--contain",
            "-B",
            &bind,
            s(&img),
            "sh",
            "-c",
            script,
        ])
        .env("SIFR_KEYSDIR", site.root.join("keys"))
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sifr");
    let started = std::time::Instant::now();
    while !shared.join("ready").exists() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "the container never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    overwrite(&img, &bad);
    std::fs::write(shared.join("rewritten"), b"").expect("signal");
    let out = child.wait_with_output().expect("wait");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !stdout.contains("UNSIGNED"),
        "rewritten bytes ran after the list checked the image: {stdout}"
    );
    assert!(!out.status.success(), "reading rewritten bytes must fail");

    // Timed races: rewrite at a varying moment after the start.
    let (mut ran_signed, mut refused_at_check) = (0, 0);
    for i in 0..200u64 {
        overwrite(&img, &good);
        let child = Command::new(&site.exe)
            .args(["exec", s(&img), "cat", "/msg"])
            .env("SIFR_KEYSDIR", site.root.join("keys"))
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sifr");
        std::thread::sleep(std::time::Duration::from_micros((i * 797) % 150_000));
        overwrite(&img, &bad);
        let out = child.wait_with_output().expect("wait");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            !stdout.contains("UNSIGNED"),
            "try {i}: rewritten bytes ran: {stdout}"
        );
        if stdout.contains("SIGNED-CONTENT") {
            ran_signed += 1;
        } else if String::from_utf8_lossy(&out.stderr).contains("execution control list") {
            refused_at_check += 1;
        }
    }
    eprintln!(
        "200 races: {ran_signed} ran the signed content, {refused_at_check} were refused by the \
         check, {} failed to read rewritten bytes",
        200 - ran_signed - refused_at_check
    );
}
