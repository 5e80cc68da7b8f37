//! Keyservers end to end, against a real HKP keyserver (Debian's `sks`) started on loopback
//! by the test as the unprivileged user and killed at the end: `key push/search/pull`,
//! `verify --url` and through `keyserver add`, `keyserver list/remove/login/logout`, and
//! the failures (unknown host, no such key, server down), each one line (exit 2 for
//! `key search/pull/push`, as Apptainer's; 255 otherwise) with the keyring unchanged; and
//! the same keyserver over HTTPS (`https://` and `hkps://`), behind a Python TLS proxy
//! with a throwaway certificate made by openssl.

mod common;

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{assert_one_line_error, in_ci, sif_fixture, sifr_bin, tempdir, which};

/// `sks db` serving HKP on 127.0.0.1 from an empty database in `dir`; killed when dropped.
struct Sks {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Sks {
    fn start(dir: &Path, sks: &Path) -> Sks {
        for d in ["var/lib/sks", "var/log/sks", "var/run/sks"] {
            std::fs::create_dir_all(dir.join(d)).expect("sks dirs");
        }
        std::fs::write(dir.join("membership"), "").expect("membership");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        // Recon stays off (no `sks recon` process); mail sync off.
        std::fs::write(
            dir.join("sksconf"),
            format!(
                "hkp_address: 127.0.0.1\nhkp_port: {port}\nrecon_address: 127.0.0.1\n\
                 disable_mailsync:\ndontgossip:\n"
            ),
        )
        .expect("sksconf");
        let base = dir.to_str().expect("utf-8 dir");
        let out = Command::new(sks)
            .args(["build", "-basedir", base, "-stdoutlog"])
            .stdin(Stdio::null())
            .output()
            .expect("run sks build");
        assert!(out.status.success(), "sks build: {out:?}");
        let log = dir.join("db.log");
        let logf = std::fs::File::create(&log).expect("log");
        let child = Command::new(sks)
            .args([
                "db",
                "-basedir",
                base,
                "-stdoutlog",
                "-hkp_address",
                "127.0.0.1",
            ])
            .args(["-hkp_port", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(logf.try_clone().expect("log"))
            .stderr(logf)
            .spawn()
            .expect("start sks db");
        let s = Sks { child, port, log };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "sks did not start: {}",
                std::fs::read_to_string(&s.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        s
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Stops the server and checks that its process is gone.
    fn stop(&mut self) {
        let pid = self.child.id();
        let _ = self.child.kill();
        let _ = self.child.wait();
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "sks (pid {pid}) is still there"
        );
    }
}

impl Drop for Sks {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `sks` binary; missing is a failure in CI and a visible skip elsewhere.
fn sks() -> Option<PathBuf> {
    let found = which("sks").or_else(|| {
        let p = PathBuf::from("/usr/sbin/sks");
        p.exists().then_some(p)
    });
    match found {
        Some(p) => Some(p),
        None if in_ci() => panic!("sks not found; ci/setup-host installs it"),
        None => {
            eprintln!("SKIP: sks not found (apt-get install sks)");
            None
        }
    }
}

/// sifr with its own home (keyring under ~/.local/share/sifr/keys, keyserver list under
/// ~/.sifr), no terminal.
struct User {
    home: PathBuf,
}

impl User {
    fn run_env(&self, args: &[&str], extra: &[(&str, &str)]) -> Output {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new(sifr_bin());
        cmd.args(args)
            .env("HOME", &self.home)
            .env_remove("XDG_DATA_HOME")
            .env_remove("SIFR_KEYSDIR")
            .env_remove("APPTAINER_KEYSDIR")
            .env_remove("SIFR_URL")
            .env_remove("APPTAINER_URL")
            .env_remove("SIFR_KEY_PASSWORD")
            .stdin(Stdio::null());
        for (k, v) in extra {
            cmd.env(k, v);
        }
        // SAFETY: setsid is async-signal-safe; it drops the controlling terminal.
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

    fn public_ring(&self) -> PathBuf {
        self.home.join(".local/share/sifr/keys/pgp-public")
    }

    /// A failure: one line naming `needle`, exit 255, public keyring unchanged.
    fn fails(&self, args: &[&str], needle: &str) {
        self.fails_with(args, needle, 255);
    }

    /// A failure: one line naming `needle`, exit `code`, public keyring unchanged.
    fn fails_with(&self, args: &[&str], needle: &str, code: i32) {
        let before = std::fs::read(self.public_ring()).ok();
        let mut with_s = vec!["-s"];
        with_s.extend_from_slice(args);
        let out = self.run(&with_s);
        assert_one_line_error(&out, needle);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {out:?}");
        assert_eq!(
            std::fs::read(self.public_ring()).ok(),
            before,
            "{args:?} changed the keyring"
        );
    }
}

#[test]
fn test_push_search_pull_verify_with_a_real_keyserver() {
    let Some(sks_bin) = sks() else {
        return;
    };
    if !sif_fixture("one-group.sif").exists() {
        assert!(!in_ci(), "fixtures missing");
        eprintln!("SKIP: fixtures not found");
        return;
    }
    let dir = tempdir();
    let sks_dir = dir.path().join("sks");
    std::fs::create_dir(&sks_dir).expect("mkdir");
    let mut server = Sks::start(&sks_dir, &sks_bin);
    let url = server.url();
    let home = dir.path().join("home");
    std::fs::create_dir(&home).expect("mkdir");
    let u = User { home };

    // A key pair, pushed.
    u.ok(&[
        "key",
        "newpair",
        "-N",
        "Keyserver Tester",
        "-E",
        "ks@example.org",
        "-C",
        "e2e",
        "-P",
        "",
        "-b",
        "2048",
    ]);
    let listing = u.ok(&["key", "list"]);
    let fp = listing
        .lines()
        .find_map(|l| l.trim().strip_prefix("Fingerprint:"))
        .map(|f| f.trim().to_string())
        .expect("fingerprint in key list");
    assert_eq!(fp.len(), 40);
    let out = u.ok(&["key", "push", "--url", &url, &fp]);
    assert_eq!(
        out,
        format!("public key `{fp}' pushed to server successfully\n")
    );
    // newpair --push sends the new key to the first configured keyserver.
    u.ok(&["keyserver", "add", &url]);
    let out = u.ok(&[
        "key",
        "newpair",
        "-N",
        "Second Key",
        "-E",
        "two@example.org",
        "-C",
        "",
        "-P",
        "",
        "-b",
        "2048",
        "--push",
    ]);
    assert_eq!(
        out,
        "Generating Entity and OpenPGP Key Pair... done\nKey successfully pushed to keystore\n"
    );
    u.ok(&["keyserver", "remove", &url]);

    // Search, short and long formats (Apptainer's tables).
    let deadline = Instant::now() + Duration::from_secs(20);
    let short = loop {
        let out = u.run(&["key", "search", "--url", &url, "ks@example.org"]);
        if out.status.success() || Instant::now() > deadline {
            break String::from_utf8_lossy(&out.stdout).into_owned();
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        short,
        format!(
            "Showing 1 results\n\nKEY ID    BITS  NAME/EMAIL\n{}  2048  Keyserver Tester (e2e) <ks@example.org>\n",
            &fp[32..]
        )
    );
    let long = u.ok(&["key", "search", "-l", "--url", &url, &fp]);
    let lines: Vec<&str> = long.lines().collect();
    assert_eq!(lines[0], "Showing 1 results", "{long}");
    assert!(
        lines[2].starts_with("FINGERPRINT  ") && lines[2].ends_with("STATUS     NAME/EMAIL"),
        "{long}"
    );
    assert!(
        lines[3].starts_with(&format!("{fp}  RSA        2048  "))
            && lines[3].ends_with("[enabled]  Keyserver Tester (e2e) <ks@example.org>"),
        "{long}"
    );

    // A signed image; the public key leaves the local keyring.
    let img = dir.path().join("img.sif");
    std::fs::copy(sif_fixture("one-group.sif"), &img).expect("copy");
    std::fs::set_permissions(&img, std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .expect("chmod");
    let img_s = img.to_str().expect("utf-8");
    let out = u.run_env(
        &["sign", "--keyidx", "0", img_s],
        &[("SIFR_KEY_PASSWORD", "")],
    );
    assert!(out.status.success(), "sign: {out:?}");
    u.ok(&["key", "remove", &fp]);
    assert!(!u.ok(&["key", "list"]).contains(&fp));

    // No keyserver configured: one line saying the key is unknown and how to fetch it.
    u.fails(&["verify", img_s], "fetch it with 'key pull --url URL");

    // verify --url fetches the signer for this check only.
    let out = u.ok(&["verify", "--url", &url, img_s]);
    assert!(out.contains("[REMOTE]") && out.contains(&fp), "{out}");
    assert!(!u.ok(&["key", "list"]).contains(&fp));

    // The keyserver list: add, list (file 0600), used by verify, removed.
    u.ok(&["keyserver", "add", &url]);
    u.ok(&[
        "keyserver",
        "add",
        "--order",
        "1",
        "--insecure",
        "https://other.invalid",
    ]);
    let list = u.ok(&["keyserver", "list"]);
    assert!(
        list.contains("#1  https://other.invalid") && list.contains(&format!("#2  {url}")),
        "{list}"
    );
    let conf = u.home.join(".sifr/keyservers.toml");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&conf)
            .expect("keyserver file")
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    u.fails(&["keyserver", "add", &url], "is already configured");
    u.fails(
        &["keyserver", "add", "--order", "0", "http://x.invalid"],
        "order must be > 0",
    );
    u.ok(&["keyserver", "remove", "https://other.invalid"]);
    let out = u.ok(&["verify", img_s]);
    assert!(out.contains("[REMOTE]"), "{out}");
    // login/logout: stored with the keyserver, then forgotten (sks ignores the header).
    let mut login = Command::new(sifr_bin());
    login
        .args([
            "keyserver",
            "login",
            "--username",
            "me",
            "--password-stdin",
            &url,
        ])
        .env("HOME", &u.home)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = login.spawn().expect("login");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(b"s3cret\n").expect("password");
    }
    let out = child.wait_with_output().expect("login");
    assert!(out.status.success(), "login: {out:?}");
    let text = std::fs::read_to_string(&conf).expect("conf");
    assert!(
        text.contains("username = \"me\"") && text.contains("s3cret"),
        "{text}"
    );
    u.ok(&["key", "search", &fp]);
    u.ok(&["keyserver", "logout", &url]);
    assert!(
        !std::fs::read_to_string(&conf)
            .expect("conf")
            .contains("s3cret")
    );
    u.ok(&["keyserver", "remove", &url]);
    u.fails(&["keyserver", "remove", &url], "is not configured");

    // Pull it back: into the public keyring, once.
    let out = u.ok(&["key", "pull", "--url", &url, &fp]);
    assert_eq!(
        out,
        format!(
            "1 key(s) added to keyring of trust {}\n",
            u.public_ring().display()
        )
    );
    // Apptainer's name of --url binds it too.
    let out = u.run_env(&["key", "pull", &fp], &[("APPTAINER_URL", &url)]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("0 key(s) added"),
        "{out:?}"
    );
    let out = u.ok(&["verify", "--local", img_s]);
    assert!(out.contains("[LOCAL]") && out.contains(&fp), "{out}");

    // Failures: one line each, keyring unchanged; as Apptainer's, `key search/pull/push`
    // print `ERROR:   ... failed: ...` and exit 2 once the keyserver client is made, and
    // only a keyserver that cannot be set up is FATAL (255).
    let absent = "0123456789ABCDEF0123456789ABCDEF01234567";
    let err2 = |args: &[&str], needle: &str| {
        u.fails_with(args, needle, 2);
        let out = u.run(&[&["-s"], args].concat());
        assert!(
            String::from_utf8_lossy(&out.stderr).starts_with("ERROR:   "),
            "{args:?}: {out:?}"
        );
    };
    err2(
        &["key", "pull", "--url", &url, absent],
        "pull failed: unable to pull key from server",
    );
    err2(
        &["key", "search", "--url", &url, "nobody-has-this-name"],
        "no matching keys found",
    );
    err2(
        &["key", "pull", "--url", "http://nosuchhost.invalid", absent],
        "nosuchhost.invalid",
    );
    u.fails(&["key", "pull", absent], "no keyserver configured");
    err2(
        &["key", "pull", "--url", &url, "12345"],
        "not a valid key length",
    );
    server.stop();
    err2(&["key", "pull", "--url", &url, &fp], "Connection refused");
    err2(&["key", "push", "--url", &url, &fp], "Connection refused");
    err2(&["key", "search", "--url", &url, "x"], "Connection refused");
    u.ok(&["key", "remove", &fp]);
    u.fails(
        &["verify", "--url", &url, img_s],
        "is not in the local keyring and could not be fetched",
    );
}

/// An HTTPS front for the keyserver at `target` (Python's http.server with `ssl`, the
/// certificate `cert` and its key beside it as `key.pem`), forwarding GET and POST as they
/// come. Stopped when dropped.
struct TlsFront {
    child: Child,
    port: u16,
}

const TLS_FRONT: &str = r#"
import http.server, ssl, sys, urllib.request, urllib.error
port, target, cert, key = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
class H(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass
    def forward(self, body):
        req = urllib.request.Request("http://127.0.0.1:%d%s" % (target, self.path), data=body)
        if body is not None:
            req.add_header("Content-Type", self.headers.get("Content-Type", ""))
        try:
            with urllib.request.urlopen(req) as r:
                status, ctype, data = r.status, r.headers.get("Content-Type", ""), r.read()
        except urllib.error.HTTPError as e:
            status, ctype, data = e.code, e.headers.get("Content-Type", ""), e.read()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def do_GET(self):
        self.forward(None)
    def do_POST(self):
        self.forward(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
srv = http.server.ThreadingHTTPServer(("127.0.0.1", port), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
srv.serve_forever()
"#;

impl TlsFront {
    fn start(dir: &Path, target: u16) -> (TlsFront, PathBuf) {
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
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
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("openssl");
        assert!(out.status.success(), "{out:?}");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let script = dir.join("tls_front.py");
        std::fs::write(&script, TLS_FRONT).expect("write proxy");
        let child = Command::new("python3")
            .arg(&script)
            .arg(port.to_string())
            .arg(target.to_string())
            .arg(&cert)
            .arg(&key)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("start python3");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the TLS front did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        (TlsFront { child, port }, cert)
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `key push/search/pull` over HTTPS: refused in one line (exit 2) while the certificate is
/// not trusted; with it in SSL_CERT_FILE, the key goes up, is found, and comes back, with
/// `https://` and `hkps://` alike.
#[test]
fn test_https_keyserver() {
    let Some(sks_bin) = sks() else {
        return;
    };
    for tool in ["python3", "openssl"] {
        if which(tool).is_none() {
            assert!(!in_ci(), "{tool} not found; ci/setup-host installs it");
            eprintln!("SKIP: {tool} not found");
            return;
        }
    }
    let dir = tempdir();
    let sks_dir = dir.path().join("sks");
    std::fs::create_dir(&sks_dir).expect("mkdir");
    let _server = Sks::start(&sks_dir, &sks_bin);
    let (front, cert) = TlsFront::start(dir.path(), _server.port);
    let https = format!("https://127.0.0.1:{}", front.port);
    let hkps = format!("hkps://127.0.0.1:{}", front.port);
    let home = dir.path().join("home");
    std::fs::create_dir(&home).expect("mkdir");
    let u = User { home };
    u.ok(&[
        "key",
        "newpair",
        "-N",
        "Tls Tester",
        "-E",
        "tls@example.org",
        "-C",
        "",
        "-P",
        "",
        "-b",
        "2048",
    ]);
    let fp = u
        .ok(&["key", "list"])
        .lines()
        .find_map(|l| l.trim().strip_prefix("Fingerprint:"))
        .map(|f| f.trim().to_string())
        .expect("fingerprint in key list");

    // Not trusted: one line, exit 2, nothing sent.
    u.fails_with(&["key", "push", "--url", &https, &fp], &https, 2);

    let cert_s = cert.to_str().expect("utf-8");
    let trusted = [("SSL_CERT_FILE", cert_s)];
    let ok = |args: &[&str]| {
        let out = u.run_env(args, &trusted);
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(
        ok(&["key", "push", "--url", &https, &fp]),
        format!("public key `{fp}' pushed to server successfully\n")
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let found = loop {
        let out = u.run_env(
            &["key", "search", "--url", &hkps, "tls@example.org"],
            &trusted,
        );
        if out.status.success() || Instant::now() > deadline {
            break String::from_utf8_lossy(&out.stdout).into_owned();
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        found.starts_with("Showing 1 results") && found.contains("tls@example.org"),
        "{found}"
    );
    ok(&["key", "remove", &fp]);
    assert_eq!(
        ok(&["key", "pull", "--url", &hkps, &fp]),
        format!(
            "1 key(s) added to keyring of trust {}\n",
            u.public_ring().display()
        )
    );
    assert!(ok(&["key", "list"]).contains(&fp));
}
