//! OCI test tools: Debian's umoci, skopeo and docker-registry, driven from tests.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// True if every tool is on PATH; otherwise prints why the test is skipped (or fails in CI).
pub fn have_tools(tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| super::which(t).is_none())
        .collect();
    if missing.is_empty() {
        return true;
    }
    let msg = format!(
        "{} not found (install the Debian packages umoci skopeo docker-registry apache2-utils)",
        missing.join(", ")
    );
    assert!(!super::in_ci(), "{msg}; CI requires them");
    eprintln!("SKIP: {msg}");
    false
}

/// Adds layers 2 and 3 of the test image on top of `L:v1` in `dir` and tags the result
/// `L:v3`: layer 2, made by umoci, deletes /etc/remove-me (a whiteout); layer 3, made by
/// hand, replaces /opt/dir by an opaque directory holding only `c`. Then sets the config:
/// ENTRYPOINT `/bin/echo from-entrypoint`, CMD `from-cmd`, ENV `PATH=<path>` and
/// `FOO=bar baz`, the label `org.sifr.test=yes`, and `extra` umoci config flags.
pub fn add_whiteout_opaque_and_config(dir: &Path, path: &str, extra: &[&str]) {
    let umoci = |args: &[&str]| tool(dir, "umoci", args);
    umoci(&["unpack", "--rootless", "--image", "L:v1", "B2"]);
    std::fs::remove_file(dir.join("B2/rootfs/etc/remove-me")).expect("rm");
    umoci(&["repack", "--image", "L:v2", "B2"]);

    let mut b = tar::Builder::new(Vec::new());
    let mut dirh = tar::Header::new_ustar();
    dirh.set_entry_type(tar::EntryType::Directory);
    dirh.set_mode(0o755);
    dirh.set_size(0);
    b.append_data(&mut dirh, "opt/dir/", std::io::empty())
        .expect("append");
    for (name, data) in [("opt/dir/.wh..wh..opq", &b""[..]), ("opt/dir/c", &b"c"[..])] {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, name, data).expect("append");
    }
    std::fs::write(dir.join("layer3.tar"), b.into_inner().expect("tar")).expect("write");
    umoci(&[
        "raw",
        "add-layer",
        "--image",
        "L:v2",
        "--tag",
        "v3",
        "layer3.tar",
    ]);
    let env_path = format!("PATH={path}");
    let mut config = vec![
        "config",
        "--image",
        "L:v3",
        "--config.entrypoint",
        "/bin/echo",
        "--config.entrypoint",
        "from-entrypoint",
        "--config.cmd",
        "from-cmd",
        "--config.env",
        &env_path,
        "--config.env",
        "FOO=bar baz",
        "--config.label",
        "org.sifr.test=yes",
    ];
    config.extend_from_slice(extra);
    umoci(&config);
}

/// Runs a tool; panics with its output if it fails.
pub fn tool(dir: &Path, program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        // skopeo keeps a blob-info cache and looks for auth files under HOME.
        .env("HOME", dir)
        .env_remove("XDG_RUNTIME_DIR")
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Debian's docker-registry on 127.0.0.1, stopped when dropped.
pub struct Registry {
    child: Child,
    pub port: u16,
    log: PathBuf,
}

impl Registry {
    pub fn start(dir: &Path, htpasswd: Option<&Path>) -> Registry {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let auth = htpasswd.map_or(String::new(), |p| {
            format!(
                "auth:\n  htpasswd:\n    realm: basic-realm\n    path: {}\n",
                p.display()
            )
        });
        let config = dir.join(format!("registry-{port}.yml"));
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n\
                 http:\n  addr: 127.0.0.1:{port}\n{auth}",
                dir.join(format!("registry-data-{port}")).display()
            ),
        )
        .expect("write config");
        let log = dir.join(format!("registry-{port}.log"));
        let logf = std::fs::File::create(&log).expect("log");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(logf.try_clone().expect("log"))
            .stderr(logf)
            .spawn()
            .expect("start docker-registry");
        let reg = Registry { child, port, log };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "docker-registry did not start: {}",
                std::fs::read_to_string(&reg.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        reg
    }

    /// A registry that wants `user`/`password` (htpasswd file made with Debian's htpasswd).
    pub fn start_with_basic_auth(dir: &Path, user: &str, password: &str) -> Registry {
        let out = Command::new("htpasswd")
            .args(["-Bbn", user, password])
            .output()
            .expect("htpasswd");
        assert!(out.status.success(), "htpasswd: {out:?}");
        let htpasswd = dir.join("htpasswd");
        std::fs::write(&htpasswd, &out.stdout).expect("write htpasswd");
        Registry::start(dir, Some(&htpasswd))
    }

    pub fn image(&self) -> String {
        format!("127.0.0.1:{}/test/img:v3", self.port)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A one-layer image of the busybox fixture's `bin` and `etc`, tagged `L:small` in the OCI
/// layout `dir/L`, pushed by skopeo as `docker://127.0.0.1:PORT/test/img:v3` (with
/// `user:password` for a registry with authentication). Needs `sifr` (to unpack the
/// fixture), umoci and skopeo.
pub fn push_small_image(dir: &Path, reg: &Registry, creds: Option<&str>) {
    let bb = dir.join("bb-small");
    let out = Command::new(super::sifr_bin())
        .args(["build", "--sandbox"])
        .arg(&bb)
        .arg(super::sif_fixture("busybox_amd64.sif"))
        .env("SIFR_CACHEDIR", dir.join("build-cache"))
        .stdin(Stdio::null())
        .output()
        .expect("run sifr build");
    assert!(out.status.success(), "sandbox build: {out:?}");
    let umoci = |args: &[&str]| tool(dir, "umoci", args);
    umoci(&["init", "--layout", "L"]);
    umoci(&["new", "--image", "L:v0"]);
    umoci(&["unpack", "--rootless", "--image", "L:v0", "S1"]);
    for sub in ["bin", "etc"] {
        let out = Command::new("cp")
            .arg("-a")
            .arg(bb.join(sub))
            .arg(dir.join("S1/rootfs"))
            .output()
            .expect("cp");
        assert!(out.status.success(), "{out:?}");
    }
    umoci(&["repack", "--image", "L:small", "S1"]);
    let dest = format!("docker://{}", reg.image());
    let mut args = vec!["--insecure-policy", "copy", "--dest-tls-verify=false"];
    if let Some(c) = creds {
        args.extend(["--dest-creds", c]);
    }
    args.extend(["oci:L:small", &dest]);
    tool(dir, "skopeo", &args);
}

/// Partial files of the cache directory `dir` (`.partial-*`), with their sizes.
pub fn partials(dir: &Path) -> Vec<(PathBuf, u64)> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(".partial-"))
                .map(|e| (e.path(), e.metadata().map(|m| m.len()).unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default()
}

/// A TCP relay on 127.0.0.1 to `target` that breaks off each connection once `cut` bytes
/// came back from the server: a registry whose transfer of a large blob fails midway.
pub fn cutting_relay(target: u16, cut: usize) -> u16 {
    relay(target, cut, false)
}

/// As [`cutting_relay`], but once `cut` bytes came back the connection stays open with
/// nothing more sent (for a minute): a transfer that hangs midway.
pub fn stalling_relay(target: u16, cut: usize) -> u16 {
    relay(target, cut, true)
}

fn relay(target: u16, cut: usize, stall: bool) -> u16 {
    use std::io::{Read, Write};
    let listener = TcpListener::bind("127.0.0.1:0").expect("relay port");
    let port = listener.local_addr().expect("relay addr").port();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(mut client) = client else { break };
            let Ok(mut server) = TcpStream::connect(("127.0.0.1", target)) else {
                continue;
            };
            let (Ok(mut c2), Ok(mut s2)) = (client.try_clone(), server.try_clone()) else {
                continue;
            };
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c2, &mut s2);
                let _ = s2.shutdown(std::net::Shutdown::Write);
            });
            std::thread::spawn(move || {
                let mut left = cut;
                let mut buf = vec![0u8; 16 * 1024];
                while left > 0 {
                    let want = buf.len().min(left);
                    match server.read(&mut buf[..want]) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if client.write_all(&buf[..n]).is_err() {
                                break;
                            }
                            left -= n;
                        }
                    }
                }
                if stall && left == 0 {
                    std::thread::sleep(Duration::from_secs(60));
                }
                let _ = client.shutdown(std::net::Shutdown::Both);
                let _ = server.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    port
}
