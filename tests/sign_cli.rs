//! `sifr key`, `sign` and `verify` through the real binary: every signed fixture verifies
//! with its key and fails with another, tampering is named, images signed by sifr verify
//! with the reference (`sif-oracle`) and the reference's with sifr, gpg-exported keys work,
//! password-protected keys take their password from a file, the environment or nowhere.
//!
//! None of these start a container, so they may run as root.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::*;

const PGP_S: &str = "12045C8C0B1004D058DE4BEDA20C27EE7FF7BA84";
const PGP_A: &str = "F34371D0ACD5D09EB9BD853A80600A5FA11BBD29";

/// A keyring directory of its own for each test.
struct Env {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl Env {
    fn new() -> Env {
        let dir = tempdir();
        let root = dir.path().to_path_buf();
        Env { _dir: dir, root }
    }

    fn keys(&self) -> PathBuf {
        self.root.join("keys")
    }

    /// Runs sifr with this keyring, no terminal (new session), and `extra` environment.
    fn run_env(&self, args: &[&str], extra: &[(&str, &str)]) -> Output {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new(sifr_bin());
        cmd.args(args)
            .env("SIFR_KEYSDIR", self.keys())
            // The keyserver list (~/.sifr/keyservers.toml) is this test's own.
            .env("HOME", &self.root)
            .env_remove("SIFR_KEY_PASSWORD")
            .env_remove("APPTAINER_KEY_PASSWORD")
            .stdin(Stdio::null());
        for (k, v) in extra {
            cmd.env(k, v);
        }
        // SAFETY: setsid is async-signal-safe; it drops the controlling terminal so that
        // nothing can be asked interactively.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        cmd.output().expect("run sifr")
    }

    fn run(&self, args: &[&str]) -> Output {
        self.run_env(args, &[])
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "sifr {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A writable copy of a fixture.
    fn copy(&self, fixture: &str) -> PathBuf {
        let to = self.root.join(fixture.replace('/', "_"));
        std::fs::copy(sif_fixture(fixture), &to).expect("copy fixture");
        let mut perm = std::fs::metadata(&to).expect("stat").permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o644);
        std::fs::set_permissions(&to, perm).expect("chmod");
        to
    }
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn key(rel: &str) -> String {
    sif_fixture(rel).display().to_string()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn have_fixtures() -> bool {
    let ok = sif_fixture("one-group-signed-pgp.sif").exists();
    if !ok {
        eprintln!("SKIP: fixtures not found");
    }
    ok
}

#[test]
fn test_every_signed_fixture_verifies_and_fails_with_the_wrong_key() {
    if !have_fixtures() {
        return;
    }
    let e = Env::new();
    e.ok(&["key", "import", &key("keys/private.asc")]);
    let a = Env::new();
    a.ok(&["key", "import", &key("apptainer/keys/pgp-public.asc")]);
    // (image, flags, right keyring, fingerprint printed)
    let pgp: &[(&str, &[&str], &Env, &str)] = &[
        ("one-group-signed-pgp.sif", &[], &e, PGP_S),
        ("two-groups-signed-pgp.sif", &[], &e, PGP_S),
        (
            "one-group-signed-legacy.sif",
            &["--legacy-insecure"],
            &e,
            PGP_S,
        ),
        (
            "one-group-signed-legacy-group.sif",
            &["--legacy-insecure", "-g", "1"],
            &e,
            PGP_S,
        ),
        (
            "one-group-signed-legacy-all.sif",
            &["--legacy-insecure", "--all"],
            &e,
            PGP_S,
        ),
        (
            "two-groups-signed-legacy.sif",
            &["--legacy-insecure"],
            &e,
            PGP_S,
        ),
        (
            "two-groups-signed-legacy-group.sif",
            &["--legacy-insecure", "--group-id", "1"],
            &e,
            PGP_S,
        ),
        ("apptainer/one-group-signed-pgp.sif", &[], &a, PGP_A),
        (
            "apptainer/one-group-signed-legacy.sif",
            &["--legacy-insecure"],
            &a,
            PGP_A,
        ),
        (
            "apptainer/one-group-signed-legacy-group.sif",
            &["--legacy-insecure", "-g", "1"],
            &a,
            PGP_A,
        ),
        (
            "apptainer/one-group-signed-legacy-all.sif",
            &["--legacy-insecure", "-a"],
            &a,
            PGP_A,
        ),
    ];
    for (image, flags, right, fp) in pgp {
        let img = key(image);
        let mut args = vec!["verify"];
        args.extend_from_slice(flags);
        args.push(&img);
        let out = right.run(&args);
        assert!(
            out.status.success(),
            "{image}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout(&out).contains(&format!("[LOCAL]            Fingerprint: {fp}")));
        assert!(
            String::from_utf8_lossy(&out.stderr)
                .contains("INFO:    Verified signature(s) from image"),
            "{image}"
        );
        let wrong = if std::ptr::eq(*right, &e) { &a } else { &e };
        let mut args = vec!["-s", "verify"];
        args.extend_from_slice(flags);
        args.push(&img);
        let out = wrong.run(&args);
        assert_eq!(out.status.code(), Some(255), "{image}");
        assert_one_line_error(
            &out,
            "Failed to verify container: integrity: signature object",
        );
        assert_one_line_error(&out, "signature made by unknown entity");
    }
    // DSSE: the ED and RSA keys, or the certificate chain whose leaf holds the RSA key.
    let certs = |n: &str| key(&format!("apptainer/certs/{n}.pem"));
    for image in [
        "one-group-signed-dsse.sif",
        "two-groups-signed-dsse.sif",
        "apptainer/one-group-signed-dsse.sif",
    ] {
        let img = key(image);
        for pubkey in ["keys/ed25519-public.pem", "keys/rsa-public.pem"] {
            e.ok(&["verify", "--key", &key(pubkey), &img]);
        }
        let (leaf, int, root) = (certs("leaf"), certs("intermediate"), certs("root"));
        e.ok(&[
            "verify",
            "--certificate",
            &leaf,
            "--certificate-intermediates",
            &int,
            "--certificate-roots",
            &root,
            &img,
        ]);
        let out = e.run(&["-s", "verify", "--key", &key("keys/ecdsa-public.pem"), &img]);
        assert_one_line_error(&out, "Accepted signatures do not match threshold");
        // Without the intermediate, the chain is broken.
        let out = e.run(&[
            "-s",
            "verify",
            "--certificate",
            &leaf,
            "--certificate-roots",
            &root,
            &img,
        ]);
        assert_one_line_error(&out, "x509: leaf");
        // The PGP keyrings cannot check a DSSE signature: the message says what to use.
        let out = e.run(&["-s", "verify", &img]);
        assert_one_line_error(&out, "--key PUBLIC.pem or --certificate");
    }
}

#[test]
fn test_verify_json_output() {
    if !have_fixtures() {
        return;
    }
    let e = Env::new();
    e.ok(&["key", "import", &key("keys/private.asc")]);
    let out = e.ok(&["verify", "--json", &key("one-group-signed-pgp.sif")]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["Signatures"], 1);
    let signer = &v["SignerKeys"][0]["Signer"];
    assert_eq!(signer["Partition"], "FS");
    assert_eq!(signer["Name"], "Unit Test <unit@test.com>");
    assert_eq!(signer["Fingerprint"], PGP_S.to_lowercase());
    assert_eq!(signer["KeyLocal"], true);
    assert_eq!(signer["DataCheck"], true);
    assert!(
        out.contains("\\u003cunit@test.com\\u003e"),
        "Go escapes <>: {out}"
    );
    // A failure still prints the JSON, then fails.
    let out = e.run(&["-s", "verify", "--json", &key("one-group.sif")]);
    assert_eq!(
        stdout(&out),
        "{\n  \"Signatures\": 0,\n  \"SignerKeys\": null\n}\n"
    );
    assert_one_line_error(&out, "signature not found for object group 1");
}

/// Flips byte `at` of a copy of `fixture`.
fn tampered(e: &Env, fixture: &str, name: &str, at: u64) -> PathBuf {
    let mut b = std::fs::read(sif_fixture(fixture)).expect("read");
    b[usize::try_from(at).expect("offset")] ^= 0x01;
    let p = e.root.join(name);
    std::fs::write(&p, b).expect("write");
    p
}

#[test]
fn test_tampering_and_added_objects_are_named() {
    if !have_fixtures() {
        return;
    }
    let e = Env::new();
    e.ok(&["key", "import", &key("keys/private.asc")]);
    let fx = "one-group-signed-pgp.sif";
    // Launch script (header), name of object 2 (descriptor), data of object 2 (at 36864).
    let cases = [
        (
            tampered(&e, fx, "header.sif", 5),
            "header integrity compromised",
        ),
        (
            tampered(&e, fx, "desc.sif", 4096 + 585 + 73),
            "data object descriptor integrity compromised: 2",
        ),
        (
            tampered(&e, fx, "data.sif", 36864 + 100),
            "data object integrity compromised: 2",
        ),
    ];
    for (img, needle) in &cases {
        let out = e.run(&["-s", "verify", s(img)]);
        assert_one_line_error(&out, needle);
        assert_one_line_error(
            &out,
            img.file_name().and_then(|n| n.to_str()).expect("name"),
        );
        assert!(stdout(&out).contains("Error encountered during signature verification"));
    }
    // An unsigned object added to the signed group.
    let added = e.copy(fx);
    let payload = e.root.join("payload");
    std::fs::write(&payload, b"extra").expect("write");
    e.ok(&[
        "sif",
        "add",
        "--datatype",
        "7",
        "--groupid",
        "1",
        s(&added),
        s(&payload),
    ]);
    let out = e.run(&["-s", "verify", s(&added)]);
    assert_one_line_error(&out, "object 4: object not signed");
    // Added outside any group.
    let outside = e.copy(fx);
    e.ok(&["sif", "add", "--datatype", "7", s(&outside), s(&payload)]);
    let out = e.run(&["-s", "verify", s(&outside)]);
    assert_one_line_error(&out, "object 4 (Generic/Raw) is in no group");
}

#[test]
fn test_sign_and_cross_verify_with_the_reference() {
    if !have_fixtures() {
        return;
    }
    let Some(oracle) = oracle() else { return };
    let e = Env::new();
    e.ok(&["key", "import", &key("keys/private.asc")]);
    // sifr signs (all groups, one group, one object); the reference verifies.
    let img = e.copy("two-groups.sif");
    e.ok(&["sign", s(&img)]);
    let out = run(
        &oracle,
        ["verify", "--key", &key("keys/private.asc"), s(&img)],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!("ok 4 {PGP_S} objects=1,2")),
        "{text}"
    );
    assert!(text.contains(&format!("ok 5 {PGP_S} objects=3")), "{text}");
    e.ok(&["verify", s(&img)]);

    let img = e.copy("two-groups.sif");
    e.ok(&["sign", "--group-id", "2", s(&img)]);
    let out = run(
        &oracle,
        [
            "verify",
            "--key",
            &key("keys/private.asc"),
            "--group",
            "2",
            s(&img),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let img = e.copy("two-groups.sif");
    e.ok(&["sign", "--sif-id", "1", s(&img)]);
    let out = run(
        &oracle,
        [
            "verify",
            "--key",
            &key("keys/private.asc"),
            "--object",
            "1",
            s(&img),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    e.ok(&["verify", "--sif-id", "1", s(&img)]);
    let out = e.run(&["-s", "verify", s(&img)]);
    assert_one_line_error(&out, "object 2: object not signed");

    // The reference signs with a fresh key; sifr verifies once the key is imported.
    let keys = e.root.join("oracle");
    std::fs::create_dir(&keys).expect("mkdir");
    let (private, public) = (keys.join("priv.asc"), keys.join("pub.asc"));
    let out = run(
        &oracle,
        [
            "keygen",
            "--name",
            "Oracle",
            "--email",
            "o@example.com",
            s(&private),
            s(&public),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fp = String::from_utf8_lossy(&out.stdout).trim().to_uppercase();
    let img = e.copy("one-group.sif");
    let out = run(&oracle, ["sign", "--key", s(&private), s(&img)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fresh = Env::new();
    let out = fresh.run(&["-s", "verify", s(&img)]);
    assert_one_line_error(&out, "unknown entity");
    fresh.ok(&["key", "import", s(&public)]);
    let text = fresh.ok(&["verify", s(&img)]);
    assert!(text.contains(&format!("Fingerprint: {fp}")), "{text}");
}

#[test]
fn test_new_key_pairs_sign_for_the_reference() {
    if !have_fixtures() {
        return;
    }
    let Some(oracle) = oracle() else { return };
    let e = Env::new();
    // Ed25519 (fast) and RSA (the default algorithm, 2048 bits to keep the test quick).
    e.ok(&[
        "key",
        "newpair",
        "-N",
        "Ed Key",
        "-E",
        "ed@example.com",
        "-C",
        "test",
        "-P",
        "",
        "--algorithm",
        "ed25519",
    ]);
    e.ok(&[
        "key",
        "newpair",
        "-N",
        "Rsa Key",
        "-E",
        "rsa@example.com",
        "-C",
        "",
        "-P",
        "",
        "-b",
        "2048",
    ]);
    let list = e.ok(&["key", "list", "--secret"]);
    assert!(
        list.contains("0)  User:              Ed Key (test) <ed@example.com>"),
        "{list}"
    );
    assert!(
        list.contains("1)  User:              Rsa Key () <rsa@example.com>"),
        "{list}"
    );
    assert!(list.contains("Length (in bits):  2048"), "{list}");
    for idx in ["0", "1"] {
        let img = e.copy("one-group.sif");
        let exported = e.root.join(format!("pub{idx}.asc"));
        let out = e.ok(&["key", "export", "--armor", "--keyidx", idx, s(&exported)]);
        assert!(out.starts_with("Public key with fingerprint "), "{out}");
        e.ok(&["sign", "--keyidx", idx, s(&img)]);
        let out = run(&oracle, ["verify", "--key", s(&exported), s(&img)]);
        assert!(
            out.status.success(),
            "key {idx}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        e.ok(&["verify", s(&img)]);
    }
    // Two secret keys and no --keyidx, no terminal: say how to choose.
    let img = e.copy("one-group.sif");
    let out = e.run(&["-s", "sign", s(&img)]);
    assert_one_line_error(&out, "choose one with --keyidx");
    let out = e.run(&["-s", "sign", "--keyidx", "7", s(&img)]);
    assert_one_line_error(&out, "index out of range");
}

#[test]
fn test_password_protected_keys() {
    if !have_fixtures() {
        return;
    }
    let e = Env::new();
    e.ok(&[
        "key",
        "newpair",
        "-N",
        "Locked",
        "-E",
        "l@example.com",
        "-C",
        "",
        "-P",
        "pa55word",
        "--algorithm",
        "ed25519",
    ]);
    let img = e.copy("one-group.sif");
    // No terminal, no password source: one line saying what to do; the image is unchanged.
    let before = std::fs::read(&img).expect("read");
    let out = e.run(&["-s", "sign", s(&img)]);
    assert_one_line_error(&out, "--password-file FILE or SIFR_KEY_PASSWORD");
    assert_eq!(std::fs::read(&img).expect("read"), before);
    // A wrong password.
    let pw = e.root.join("pw");
    std::fs::write(&pw, "wrong\n").expect("write");
    let out = e.run(&["-s", "sign", "--password-file", s(&pw), s(&img)]);
    assert_one_line_error(&out, "wrong password for key");
    // From a file, then from the environment (Apptainer's name maps onto sifr's).
    std::fs::write(&pw, "pa55word\n").expect("write");
    e.ok(&["sign", "--password-file", s(&pw), s(&img)]);
    e.ok(&["verify", s(&img)]);
    let img2 = e.copy("two-groups.sif");
    let out = e.run_env(
        &["sign", s(&img2)],
        &[("APPTAINER_KEY_PASSWORD", "pa55word")],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    e.ok(&["verify", s(&img2)]);
    // newpair without a password source and without a terminal refuses to guess.
    let out = e.run(&["-s", "key", "newpair", "-N", "x", "-E", "x@x", "-C", ""]);
    assert_one_line_error(&out, "--password ''");
}

#[test]
fn test_key_import_export_remove_and_errors() {
    if !have_fixtures() {
        return;
    }
    let e = Env::new();
    let out = e.ok(&["key", "import", &key("keys/private.asc")]);
    assert_eq!(
        out,
        format!(
            "Key with fingerprint {PGP_S} successfully added to the private keyring\n\
             Key with fingerprint {PGP_S} successfully added to the public keyring\n"
        )
    );
    let out = e.run(&["-s", "key", "import", &key("keys/private.asc")]);
    assert_one_line_error(&out, "already belongs to the keyring");
    // Secret export (binary) round-trips through another keyring.
    let exported = e.root.join("secret.gpg");
    e.ok(&["key", "export", "--secret", s(&exported)]);
    let mode = std::fs::metadata(&exported).expect("stat").permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );
    let other = Env::new();
    other.ok(&["key", "import", s(&exported)]);
    assert!(other.ok(&["key", "list", "-s"]).contains(PGP_S));
    // Remove: public only by default, then the private half, by fingerprint with 0x.
    e.ok(&["key", "remove", &format!("0x{}", PGP_S.to_lowercase())]);
    assert!(!e.ok(&["key", "list"]).contains(PGP_S));
    assert!(e.ok(&["key", "list", "--secret"]).contains(PGP_S));
    e.ok(&["key", "remove", "--private", PGP_S]);
    assert!(!e.ok(&["key", "list", "--secret"]).contains(PGP_S));
    let out = e.run(&["-s", "key", "remove", PGP_S]);
    assert_one_line_error(&out, "no key matching fingerprint");
    let out = e.run(&["-s", "key", "remove", "1234"]);
    assert_one_line_error(&out, "is not a key fingerprint");
    // Bad key files.
    let junk = e.root.join("junk.asc");
    std::fs::write(&junk, "not a key\n").expect("write");
    let out = e.run(&["-s", "key", "import", s(&junk)]);
    assert_one_line_error(&out, "junk.asc");
    let out = e.run(&["-s", "key", "import", s(&e.root.join("missing.asc"))]);
    assert_one_line_error(&out, "missing.asc");
    let out = e.run(&[
        "-s",
        "verify",
        "--key",
        s(&junk),
        &key("one-group-signed-dsse.sif"),
    ]);
    assert_one_line_error(&out, "junk.asc");
    // A signer not in the keyrings is fetched from --url: a keyserver that is down fails
    // in one line naming the key (tests/e2e_keyserver.rs runs a real one).
    let out = e.run(&[
        "-s",
        "verify",
        "--url",
        "http://127.0.0.1:1",
        &key("one-group-signed-pgp.sif"),
    ]);
    assert_one_line_error(&out, "is not in the local keyring and could not be fetched");
    // Without a keyserver, the message says how to fetch the key.
    let out = e.run(&["-s", "verify", &key("one-group-signed-pgp.sif")]);
    assert_one_line_error(&out, "fetch it with 'key pull --url URL");
}

#[test]
fn test_sign_refusals_name_the_image() {
    if !have_fixtures() {
        return;
    }
    let e = Env::new();
    e.ok(&["key", "import", &key("keys/private.asc")]);
    let img = e.copy("empty.sif");
    let out = e.run(&["-s", "sign", s(&img)]);
    assert_one_line_error(&out, "Failed to sign container: integrity: no groups found");
    let img = e.copy("two-groups.sif");
    let out = e.run(&["-s", "sign", "--group-id", "9", s(&img)]);
    assert_one_line_error(&out, "group not found: 9");
    let out = e.run(&["-s", "sign", "--sif-id", "9", s(&img)]);
    assert_one_line_error(&out, "object not found: 9");
    let fresh = Env::new();
    let out = fresh.run(&["-s", "sign", s(&img)]);
    assert_one_line_error(&out, "keyring is empty");
    let out = e.run(&["-s", "sign", "--key", &key("keys/rsa-public.pem"), s(&img)]);
    assert_one_line_error(&out, "this is a public key");
    // A read-only image.
    let ro = e.root.join("ro.sif");
    std::fs::copy(sif_fixture("one-group.sif"), &ro).expect("copy");
    let mut perm = std::fs::metadata(&ro).expect("stat").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o444);
    std::fs::set_permissions(&ro, perm).expect("chmod");
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        let out = e.run(&["-s", "sign", s(&ro)]);
        assert_one_line_error(&out, "ro.sif");
    }
    // DSSE with each key type, verified with its public key.
    for k in ["ed25519", "rsa", "ecdsa"] {
        let img = e.copy("one-group.sif");
        e.ok(&[
            "sign",
            "--key",
            &key(&format!("keys/{k}-private.pem")),
            s(&img),
        ]);
        e.ok(&[
            "verify",
            "--key",
            &key(&format!("keys/{k}-public.pem")),
            s(&img),
        ]);
    }
}

/// gpg, with a home of its own; `None` (with a reason) when it is not installed.
fn gpg(home: &Path) -> Option<impl Fn(&[&str]) -> Output + '_> {
    let bin = which("gpg")?;
    Some(move |args: &[&str]| {
        Command::new(&bin)
            .arg("--homedir")
            .arg(home)
            .args(["--batch", "--yes", "--pinentry-mode", "loopback"])
            .args(args)
            .output()
            .expect("run gpg")
    })
}

#[test]
fn test_gpg_exported_keys() {
    if !have_fixtures() {
        return;
    }
    let e = Env::new();
    let home = e.root.join("gnupg");
    std::fs::create_dir(&home).expect("mkdir");
    let mut perm = std::fs::metadata(&home).expect("stat").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o700);
    std::fs::set_permissions(&home, perm).expect("chmod");
    let Some(gpg) = gpg(&home) else {
        assert!(!in_ci(), "gpg is required in CI");
        eprintln!("SKIP: gpg not installed");
        return;
    };
    // Stops the gpg-agent this test starts, however the test ends.
    struct Agent<'a>(&'a Path);
    impl Drop for Agent<'_> {
        fn drop(&mut self) {
            let _ = Command::new("gpgconf")
                .arg("--homedir")
                .arg(self.0)
                .args(["--kill", "all"])
                .output();
        }
    }
    let _agent = Agent(&home);
    for (algo, uid) in [
        ("ed25519", "Gpg Ed <ged@example.com>"),
        ("rsa2048", "Gpg Rsa <grsa@example.com>"),
    ] {
        let out = gpg(&[
            "--passphrase",
            "gpgpass",
            "--quick-gen-key",
            uid,
            algo,
            "sign",
            "never",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let exp = |args: &[&str], file: &str| {
        let out = gpg(args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let p = e.root.join(file);
        std::fs::write(&p, &out.stdout).expect("write");
        p
    };
    let secret_armored = exp(
        &["--passphrase", "gpgpass", "--armor", "--export-secret-keys"],
        "secret.asc",
    );
    let public_binary = exp(&["--export"], "public.gpg");
    e.ok(&["key", "import", s(&secret_armored)]);
    let list = e.ok(&["key", "list", "--secret"]);
    assert!(
        list.contains("Gpg Ed () <ged@example.com>") && list.contains("Gpg Rsa"),
        "{list}"
    );
    // Both keys sign (password from the environment), and gpg's public export verifies.
    let verifier = Env::new();
    verifier.ok(&["key", "import", s(&public_binary)]);
    for idx in ["0", "1"] {
        let img = e.copy("one-group.sif");
        let out = e.run_env(
            &["sign", "--keyidx", idx, s(&img)],
            &[("SIFR_KEY_PASSWORD", "gpgpass")],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        verifier.ok(&["verify", s(&img)]);
        // gpg itself checks the clear-signed text sifr wrote.
        let sig = e.root.join(format!("sig{idx}.asc"));
        let dumped = e.run(&["sif", "dump", "3", s(&img)]);
        std::fs::write(&sig, &dumped.stdout).expect("write");
        let out = gpg(&["--verify", s(&sig)]);
        assert!(
            out.status.success(),
            "gpg --verify: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A relocatable install in a temporary directory: `<tmp>/bin/sifr` and `<tmp>/etc/sifr`.
fn staged_install(e: &Env) -> PathBuf {
    let bin = e.root.join("install/bin");
    std::fs::create_dir_all(&bin).expect("mkdir");
    std::fs::create_dir_all(e.root.join("install/etc/sifr")).expect("mkdir");
    let exe = bin.join("sifr");
    std::fs::copy(sifr_bin(), &exe).expect("copy sifr");
    wait_executable(&exe);
    exe
}

#[test]
fn test_global_keyring_is_used_by_verify() {
    if !have_fixtures() {
        return;
    }
    let e = Env::new();
    let exe = staged_install(&e);
    let run = |args: &[&str]| {
        Command::new(&exe)
            .args(args)
            .env("SIFR_KEYSDIR", e.keys())
            .stdin(Stdio::null())
            .output()
            .expect("run staged sifr")
    };
    // The caller owns the staged install (or is root), so --global is allowed.
    let out = run(&["key", "import", "--global", &key("keys/private.asc")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout(&out),
        format!("Key with fingerprint {PGP_S} successfully added to the global public keyring\n")
    );
    let ring = e.root.join("install/etc/sifr/global-pgp-public");
    assert!(ring.exists());
    let out = run(&["key", "list", "--global"]);
    assert!(stdout(&out).contains(PGP_S));
    let out = run(&["verify", &key("one-group-signed-pgp.sif")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout(&out).contains("[GLOBAL]           Fingerprint: "),
        "{}",
        stdout(&out)
    );
    let out = run(&["key", "remove", "--global", PGP_S]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&["-s", "verify", &key("one-group-signed-pgp.sif")]);
    assert_one_line_error(&out, "unknown entity");
}
