//! End-to-end tests of `registry login/logout/list` and `remote login`, run as the
//! unprivileged user against Debian's `docker-registry` on 127.0.0.1 with htpasswd (Basic)
//! authentication:
//! - a wrong password, a missing user name, an unknown host, a closed port: one line, exit
//!   255, nothing stored;
//! - a good login is stored in `~/.sifr/docker-config.json` (mode 0600, docker config
//!   format), listed by `registry list`, and used by `pull` with no credential flag;
//!   `logout` removes it (the pull is then refused);
//! - `--authfile` stores in that file only; `remote login` logs in as `registry login`.
//!
//! Needs umoci, skopeo, docker-registry and htpasswd (apache2-utils): skipped with a
//! visible reason without them, except in CI (SIFR_CI=1), where that fails.

mod common;

use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use base64::Engine as _;
use common::oci::{Registry, have_tools, push_small_image};
use common::*;

/// Runs sifr with HOME and the cache in `home`, feeding `stdin`.
fn sifr_h(home: &Path, args: &[&str], stdin: &str) -> Output {
    sifr_he(home, args, stdin, &[])
}

/// The same with more environment variables.
fn sifr_he(home: &Path, args: &[&str], stdin: &str, env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(sifr_bin());
    c.args(args)
        .current_dir(home)
        .env("HOME", home)
        .env("SIFR_CACHEDIR", home.join("c"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for v in [
        "SIFR_DOCKER_USERNAME",
        "SIFR_DOCKER_PASSWORD",
        "APPTAINER_DOCKER_USERNAME",
        "APPTAINER_DOCKER_PASSWORD",
        "SIFR_AUTHFILE",
        "DOCKER_CONFIG",
        "REGISTRY_AUTH_FILE",
        "XDG_RUNTIME_DIR",
        "SIFR_LOGIN_USERNAME",
        "SIFR_LOGIN_PASSWORD",
    ] {
        c.env_remove(v);
    }
    for (k, v) in env {
        c.env(k, v);
    }
    let mut child = c.spawn().expect("run sifr");
    let mut input = child.stdin.take().expect("stdin");
    let _ = input.write_all(stdin.as_bytes());
    drop(input);
    child.wait_with_output().expect("wait sifr")
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[test]
fn test_login_list_pull_logout() {
    require_unprivileged();
    if !have_tools(&["umoci", "skopeo", "docker-registry", "htpasswd"]) {
        return;
    }
    let t = tempdir();
    let d = t.path();
    let reg = Registry::start_with_basic_auth(d, "alice", "s3cret-pw");
    push_small_image(d, &reg, Some("alice:s3cret-pw"));
    let host = format!("127.0.0.1:{}", reg.port);
    let registry_uri = format!("docker://{host}");
    let image = format!("docker://{}", reg.image());
    let home = d.join("home");
    std::fs::create_dir(&home).expect("mkdir");
    let config = home.join(".sifr/docker-config.json");
    let login = |extra: &[&str], stdin: &str| {
        let mut args = vec!["registry", "login"];
        args.extend(extra);
        sifr_h(&home, &args, stdin)
    };

    // Refusals: nothing stored.
    let out = login(
        &["--username", "alice", "--password-stdin", &registry_uri],
        "wrong\n",
    );
    assert_eq!(out.status.code(), Some(255));
    assert_one_line_error(&out, "rejected the credentials of user \"alice\"");
    assert!(!config.exists());
    let out = login(&["--password", "s3cret-pw", &registry_uri], "");
    assert_eq!(out.status.code(), Some(255));
    assert_one_line_error(&out, "requires a username");
    let out = login(&["-u", "alice", &registry_uri], "");
    assert_eq!(out.status.code(), Some(255));
    assert_one_line_error(&out, "password");
    let closed = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let out = login(
        &[
            "-u",
            "alice",
            "-p",
            "x",
            &format!("docker://127.0.0.1:{closed}"),
        ],
        "",
    );
    assert_eq!(out.status.code(), Some(255));
    assert_one_line_error(&out, "cannot reach registry");
    let out = login(
        &["-u", "alice", "-p", "x", "docker://no-such-host.invalid"],
        "",
    );
    assert_eq!(out.status.code(), Some(255));
    assert_one_line_error(&out, "no-such-host.invalid");
    let out = login(&["-u", "alice", "-p", "x", "library://x"], "");
    assert_eq!(out.status.code(), Some(255));
    assert_one_line_error(&out, "transport is not supported");
    assert!(!config.exists());
    assert!(!home.join(".sifr/registries.json").exists());
    // Without credentials the pull is refused.
    let out = sifr_h(
        &home,
        &["pull", "--no-https", "--name", "a.sif", &image],
        "",
    );
    assert_one_line_error(&out, "requires authentication");

    // A good login.
    let out = login(
        &["--username", "alice", "--password-stdin", &registry_uri],
        "s3cret-pw\n",
    );
    ok(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Token stored in"), "{stderr}");
    let meta = std::fs::metadata(&config).expect("stored");
    assert_eq!(meta.mode() & 0o777, 0o600);
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config).expect("read")).expect("json");
    assert_eq!(v["auths"][&host]["auth"], b64("alice:s3cret-pw"));
    let list = ok(&sifr_h(&home, &["registry", "list"], ""));
    assert_eq!(
        list,
        format!(
            "\nURI{}SECURE?\n{registry_uri}  ✓\n",
            " ".repeat(registry_uri.len() - 1)
        )
    );
    // The pull uses the stored credentials.
    ok(&sifr_h(
        &home,
        &["pull", "--no-https", "--name", "a.sif", &image],
        "",
    ));
    ok(&sifr_h(&home, &["exec", "a.sif", "true"], ""));

    // Logout: the entry goes, the pull is refused again (the registry is asked for the
    // manifest even when the converted image is cached).
    let out = sifr_h(&home, &["registry", "logout", &registry_uri], "");
    ok(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Logout succeeded"), "{stderr}");
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config).expect("read")).expect("json");
    assert!(v["auths"].get(&host).is_none(), "{v}");
    let list = ok(&sifr_h(&home, &["registry", "list"], ""));
    assert_eq!(list, "\nURI  SECURE?\n");
    let out = sifr_h(
        &home,
        &["pull", "--no-https", "--force", "--name", "a.sif", &image],
        "",
    );
    assert_one_line_error(&out, "requires authentication");
    // A second logout warns and succeeds.
    let out = sifr_h(&home, &["registry", "logout", &registry_uri], "");
    ok(&out);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("There is no existing login"),
        "{out:?}"
    );

    // --authfile: that file only.
    let authfile = d.join("auth.json");
    let authfile_s = authfile.to_str().expect("utf8");
    ok(&login(
        &[
            "-u",
            "alice",
            "-p",
            "s3cret-pw",
            "--authfile",
            authfile_s,
            &registry_uri,
        ],
        "",
    ));
    assert_eq!(
        std::fs::metadata(&authfile).expect("stored").mode() & 0o777,
        0o600
    );
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config).expect("read")).expect("json");
    assert!(v["auths"].get(&host).is_none(), "{v}");
    ok(&sifr_h(
        &home,
        &[
            "pull",
            "--no-https",
            "--authfile",
            authfile_s,
            "--name",
            "b.sif",
            &image,
        ],
        "",
    ));
    ok(&sifr_h(
        &home,
        &[
            "registry",
            "logout",
            "--authfile",
            authfile_s,
            &registry_uri,
        ],
        "",
    ));

    // oras:// names the same registry (the same entry), listed under its own URI.
    let oras_uri = format!("oras://{host}");
    ok(&login(&["-u", "alice", "-p", "s3cret-pw", &oras_uri], ""));
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config).expect("read")).expect("json");
    assert_eq!(v["auths"][&host]["auth"], b64("alice:s3cret-pw"));
    let list = ok(&sifr_h(&home, &["registry", "list"], ""));
    assert!(list.contains(&format!("\n{oras_uri}  ✓\n")), "{list}");
    ok(&sifr_h(&home, &["registry", "logout", &oras_uri], ""));
    assert_eq!(
        ok(&sifr_h(&home, &["registry", "list"], "")),
        "\nURI  SECURE?\n"
    );

    // Apptainer's LOGIN_ names set the flags; LOGIN_INSECURE is remote login's --insecure
    // (listed as not secure).
    ok(&sifr_he(
        &home,
        &["remote", "login", &registry_uri],
        "",
        &[
            ("APPTAINER_LOGIN_USERNAME", "alice"),
            ("APPTAINER_LOGIN_PASSWORD", "s3cret-pw"),
            ("APPTAINER_LOGIN_INSECURE", "1"),
        ],
    ));
    let list = ok(&sifr_h(&home, &["registry", "list"], ""));
    assert!(list.contains(&format!("{registry_uri}  ✗!")), "{list}");
    ok(&sifr_h(&home, &["registry", "logout", &registry_uri], ""));
    let out = sifr_he(
        &home,
        &["registry", "login", &registry_uri],
        "",
        &[
            ("SINGULARITY_LOGIN_USERNAME", "alice"),
            ("SINGULARITY_LOGIN_PASSWORD", "wrong"),
        ],
    );
    assert_one_line_error(&out, "rejected the credentials of user \"alice\"");

    // remote login: as registry login, with Apptainer's deprecation warning.
    let out = sifr_h(
        &home,
        &[
            "remote",
            "login",
            "--username",
            "alice",
            "--password",
            "s3cret-pw",
            &registry_uri,
        ],
        "",
    );
    ok(&out);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("deprecated"),
        "{out:?}"
    );
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config).expect("read")).expect("json");
    assert_eq!(v["auths"][&host]["auth"], b64("alice:s3cret-pw"));
    let out = sifr_h(
        &home,
        &["remote", "login", "-u", "alice", "-p", "bad", &registry_uri],
        "",
    );
    assert_eq!(out.status.code(), Some(255));
    // The good login stays.
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config).expect("read")).expect("json");
    assert_eq!(v["auths"][&host]["auth"], b64("alice:s3cret-pw"));
}

/// `--docker-login` asks for the user name and password on the terminal (here a pseudo
/// terminal made by `script`); without a terminal it is one line, exit 255.
#[test]
fn test_docker_login_prompts_on_a_terminal() {
    require_unprivileged();
    if !have_tools(&[
        "umoci",
        "skopeo",
        "docker-registry",
        "htpasswd",
        "script",
        "setsid",
    ]) {
        return;
    }
    let t = tempdir();
    let d = t.path();
    let reg = Registry::start_with_basic_auth(d, "alice", "s3cret-pw");
    push_small_image(d, &reg, Some("alice:s3cret-pw"));
    let image = format!("docker://{}", reg.image());
    let sifr = sifr_bin();
    let sifr = sifr.to_str().expect("utf8");

    // No terminal: refused before anything is fetched.
    let out = sifr_h(
        d,
        &[
            "pull",
            "--docker-login",
            "--no-https",
            "--name",
            "n.sif",
            &image,
        ],
        "",
    );
    // sifr_h's child may still have the test's terminal: run it without one too.
    let out2 = Command::new("setsid")
        .args([
            "-w",
            sifr,
            "pull",
            "--docker-login",
            "--no-https",
            "--name",
            "n.sif",
            &image,
        ])
        .current_dir(d)
        .env("HOME", d)
        .env("SIFR_CACHEDIR", d.join("c"))
        .stdin(Stdio::null())
        .output()
        .expect("setsid");
    for o in [&out, &out2] {
        assert_eq!(o.status.code(), Some(255), "{o:?}");
        assert_one_line_error(o, "--docker-login");
    }
    assert!(!d.join("n.sif").exists());

    // On a terminal: the answers typed are used.
    let pull = |answers: &str, name: &str| {
        let cmd =
            format!("{sifr} pull --docker-login --no-https --name {name} {image}; echo rc=$?");
        let mut child = Command::new("script")
            .args(["-qec", &cmd, "/dev/null"])
            .current_dir(d)
            .env("HOME", d)
            .env("SIFR_CACHEDIR", d.join("c"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("script");
        let mut input = child.stdin.take().expect("stdin");
        input.write_all(answers.as_bytes()).expect("type");
        let out = child.wait_with_output().expect("wait");
        drop(input);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let out = pull("alice\ns3cret-pw\n", "t.sif");
    assert!(out.contains("Enter Docker Username:"), "{out}");
    assert!(out.contains("Enter Docker Password:"), "{out}");
    assert!(out.contains("rc=0"), "{out}");
    assert!(d.join("t.sif").is_file());
    let out = pull("alice\nwrong\n", "w.sif");
    assert!(out.contains("rejected the credentials"), "{out}");
    assert!(out.contains("rc=255"), "{out}");
    assert!(!d.join("w.sif").exists());
}
