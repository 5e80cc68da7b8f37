//! End-to-end tests of the container's network (`--net`, `--network none|pasta`,
//! `--network-args portmap=...`, DNS through pasta) on the busybox SIF, run as the
//! unprivileged user. pasta (package passt) is required in CI (`SIFR_CI=1`); elsewhere its
//! absence skips the pasta tests with a visible reason.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// The tests run one at a time: each counts the user's pasta processes.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn busybox() -> String {
    sif_fixture("busybox_amd64.sif").display().to_string()
}

/// Whether pasta can be used: installed, and /dev/net/tun usable by the user. In CI both are
/// required.
fn have_pasta() -> bool {
    let found = which("pasta").is_some();
    let tun = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .is_ok();
    if found && tun {
        return true;
    }
    let why = if found {
        "/dev/net/tun is not usable by this user (ci/setup-host makes it 0666)"
    } else {
        "pasta not found (apt-get install passt)"
    };
    assert!(!in_ci(), "{why}; CI requires it");
    eprintln!("SKIP: {why}");
    false
}

/// The host's IPv4 default gateway (from /proc/net/route): pasta gives the container the
/// same one, and maps connections to it to the host's loopback.
fn host_gateway() -> Ipv4Addr {
    let routes = std::fs::read_to_string("/proc/net/route").expect("read /proc/net/route");
    routes
        .lines()
        .skip(1)
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(1) == Some(&"00000000"))
                .then(|| u32::from_str_radix(f[2], 16).ok())
                .flatten()
        })
        .map(|g| Ipv4Addr::from(g.to_le_bytes()))
        .expect("the host has an IPv4 default route (pasta needs one)")
}

/// The interfaces in /proc/net/dev's output.
fn interfaces(dev: &str) -> Vec<String> {
    dev.lines()
        .skip(2)
        .filter_map(|l| l.split(':').next().map(|s| s.trim().to_string()))
        .collect()
}

/// The pids of the user's pasta processes (zombies left to a non-reaping init excluded).
fn pasta_processes() -> Vec<i32> {
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() };
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        let status = std::fs::read_to_string(e.path().join("status")).unwrap_or_default();
        let mine = status
            .lines()
            .find(|l| l.starts_with("Uid:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .is_some_and(|u| u == uid.to_string());
        let zombie = status
            .lines()
            .any(|l| l.starts_with("State:") && l.contains('Z'));
        // pasta re-executes itself as passt (or passt.avx2).
        let comm = comm.trim();
        if (comm.starts_with("pasta") || comm.starts_with("passt")) && mine && !zombie {
            found.push(pid);
        }
    }
    found
}

/// No pasta of the user is left (after a short grace period).
fn assert_no_pasta_left() {
    let deadline = Instant::now() + Duration::from_secs(3);
    while !pasta_processes().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(pasta_processes(), Vec::<i32>::new(), "pasta left behind");
}

/// Spawns sifr with `args` in a session of its own (its pid is the session id).
fn spawn_sifr(args: &[&str]) -> Child {
    let mut cmd = Command::new(sifr_bin());
    cmd.args(args)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: setsid is async-signal-safe and touches no memory.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn().expect("spawn sifr")
}

/// `sifr ARGS` in its own session; its output, after checking that nothing of it is left.
fn sifr_session(args: &[&str]) -> std::process::Output {
    let child = spawn_sifr(args);
    let sid = child.id() as i32;
    let out = child.wait_with_output().expect("wait sifr");
    assert_session_empty(sid);
    out
}

/// A one-request-at-a-time HTTP server on the host's 127.0.0.1 answering `body`.
fn host_http_server(body: &'static str) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let mut buf = [0u8; 2048];
            let _ = s.read(&mut buf);
            let _ = write!(
                s,
                "HTTP/1.0 200 OK\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

/// A port on the host's loopback that nothing listens on now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// GET / on 127.0.0.1:`port` of the host; the response, or the error.
fn http_get(port: u16) -> Result<String, std::io::Error> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET /index.html HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

#[test]
fn test_network_none_is_loopback_only() {
    require_unprivileged();
    let _g = serial();
    let img = busybox();
    for flags in [&["--net"][..], &["--net", "--network", "none"]] {
        let mut args = vec!["exec"];
        args.extend_from_slice(flags);
        args.extend([img.as_str(), "cat", "/proc/net/dev"]);
        let out = sifr_session(&args);
        assert_eq!(interfaces(&ok(&out)), ["lo"], "{flags:?}");
    }
    // Without a namespace --network-args has nothing to configure: refused, not ignored.
    let out = sifr_session(&[
        "exec",
        "--net",
        "--network-args",
        "portmap=8080:80/tcp",
        &img,
        "true",
    ]);
    assert_eq!(out.status.code(), Some(255));
    assert_one_line_error(
        &out,
        "--network-args portmap=8080:80/tcp: network arguments need",
    );
}

#[test]
fn test_pasta_reaches_the_host_and_dns_goes_through_it() {
    require_unprivileged();
    if !have_pasta() {
        return;
    }
    let _g = serial();
    let img = busybox();
    let port = host_http_server("hello-from-the-host");
    let url = format!("http://{}:{port}/", host_gateway());
    let out = sifr_session(&[
        "exec",
        "--net",
        "--network",
        "pasta",
        &img,
        "sh",
        "-c",
        &format!("cat /proc/net/dev; echo ===; cat /etc/resolv.conf; echo ===; wget -q -O - {url}"),
    ]);
    let text = ok(&out);
    let parts: Vec<&str> = text.split("===\n").collect();
    let [dev, resolv, page] = parts.as_slice() else {
        panic!("{text}")
    };
    assert_eq!(page.trim(), "hello-from-the-host", "{text}");
    assert_eq!(resolv.trim(), "nameserver 169.254.1.1", "{text}");
    // The loopback and pasta's interface.
    let ifs = interfaces(dev);
    assert_eq!(ifs.len(), 2, "{ifs:?}");
    assert!(ifs.contains(&"lo".to_string()), "{ifs:?}");
    assert_no_pasta_left();

    // Chosen the Apptainer way, by environment; --dns still writes the user's servers.
    let out = Command::new(sifr_bin())
        .args(["exec", "--net", "--dns", "192.0.2.53", &img, "sh", "-c"])
        .arg(format!("cat /etc/resolv.conf; wget -q -O - {url}"))
        .env("APPTAINER_NETWORK", "pasta")
        .current_dir("/")
        .stdin(Stdio::null())
        .output()
        .expect("run sifr");
    let text = ok(&out);
    assert!(text.contains("hello-from-the-host"), "{text}");
    assert!(text.contains("nameserver 192.0.2.53"), "{text}");
    assert!(!text.contains("169.254.1.1"), "{text}");
    assert_no_pasta_left();
}

#[test]
fn test_portmap_reaches_a_server_in_the_container() {
    require_unprivileged();
    if !have_pasta() {
        return;
    }
    let _g = serial();
    let img = busybox();
    let www = tempdir();
    std::fs::write(www.path().join("index.html"), "hello-from-the-container\n").expect("write");
    let www_bind = format!("{}:/www", www.path().display());
    let (tcp, udp) = (free_port(), free_port());
    // A non-root container user cannot bind port 80: a high container port, as Apptainer
    // users do; a UDP map beside it.
    let maps = format!("portmap={tcp}:8080/tcp;portmap={udp}:5353/udp");
    let mut child = spawn_sifr(&[
        "exec",
        "--net",
        "--network",
        "pasta",
        "--network-args",
        &maps,
        "-B",
        &www_bind,
        &img,
        "httpd",
        "-f",
        "-p",
        "8080",
        "-h",
        "/www",
    ]);
    let sid = child.id() as i32;
    let deadline = Instant::now() + Duration::from_secs(20);
    let page = loop {
        match http_get(tcp) {
            Ok(r) if r.contains("hello-from-the-container") => break r,
            r => {
                if let Ok(Some(st)) = child.try_wait() {
                    let out = child.wait_with_output().expect("output");
                    panic!("sifr ended ({st}): {out:?}");
                }
                assert!(
                    Instant::now() < deadline,
                    "no page through the portmap: {r:?}"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    };
    assert!(page.starts_with("HTTP/1."), "{page}");
    // pasta holds the UDP port on the host for the container.
    assert!(
        std::net::UdpSocket::bind(("127.0.0.1", udp)).is_err(),
        "udp {udp} not forwarded"
    );
    // SAFETY: kill on a pid this test spawned.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().expect("wait sifr");
    // The payload ended by the relayed SIGTERM, and sifr with it (as Apptainer, it ends by
    // the same signal).
    use std::os::unix::process::ExitStatusExt;
    assert!(
        out.status.signal() == Some(libc::SIGTERM) || out.status.code() == Some(143),
        "{out:?}"
    );
    assert_session_empty(sid);
    assert_no_pasta_left();
    assert!(http_get(tcp).is_err(), "the port is still forwarded");
}

#[test]
fn test_no_pasta_left_after_sigkill_of_sifr() {
    require_unprivileged();
    if !have_pasta() {
        return;
    }
    let _g = serial();
    let img = busybox();
    let mut child = spawn_sifr(&["exec", "--net", "--network", "pasta", &img, "sleep", "60"]);
    let sid = child.id() as i32;
    let deadline = Instant::now() + Duration::from_secs(10);
    while pasta_processes().is_empty() {
        if let Ok(Some(st)) = child.try_wait() {
            panic!("sifr ended ({st}) before pasta ran");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("pasta never started");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // Let the payload start, then kill sifr outright.
    std::thread::sleep(Duration::from_millis(500));
    child.kill().expect("SIGKILL sifr");
    let _ = child.wait();
    assert_session_empty(sid);
    assert_no_pasta_left();
}

#[test]
fn test_network_refusals_are_one_line() {
    require_unprivileged();
    let _g = serial();
    let img = busybox();
    let refused = |args: &[&str], envs: &[(&str, &str)], needle: &str| {
        let mut cmd = Command::new(sifr_bin());
        cmd.args(args).current_dir("/").stdin(Stdio::null());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("run sifr");
        assert_eq!(out.status.code(), Some(255), "{args:?}: {out:?}");
        assert_one_line_error(&out, needle);
        assert!(out.stdout.is_empty(), "{args:?}: the payload ran");
    };
    let exec = |flags: &[&str]| {
        let mut v = vec!["exec"];
        v.extend_from_slice(flags);
        v.extend([img.as_str(), "echo", "payload-ran"]);
        v.iter().map(|s| s.to_string()).collect::<Vec<String>>()
    };
    for (flags, needle) in [
        (
            vec!["--net", "--network", "bridge"],
            "--network bridge: unknown network type; available without privileges: none, pasta",
        ),
        (
            vec![
                "--net",
                "--network",
                "pasta",
                "--network-args",
                "portmap=8080:80",
            ],
            "badly formatted portmap argument '8080:80'",
        ),
        (
            vec![
                "--net",
                "--network",
                "pasta",
                "--network-args",
                "portmap=80/sctp",
            ],
            "only tcp and udp",
        ),
        (
            vec![
                "--net",
                "--network",
                "pasta",
                "--network-args",
                "IP=10.1.1.2",
            ],
            "--network-args IP=10.1.1.2",
        ),
    ] {
        let args = exec(&flags);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        refused(&args, &[], needle);
    }
    // pasta missing: sifr looks for it in the binary path, here the caller's PATH only.
    let dir = tempdir();
    let conf = dir.path().join("sifr.conf");
    std::fs::write(&conf, "binary path = $PATH\n").expect("write the configuration");
    let conf = conf.display().to_string();
    let empty = dir.path().display().to_string();
    let mut args = vec!["-c".to_string(), conf];
    args.extend(exec(&["--net", "--network", "pasta"]));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    refused(
        &args,
        &[("PATH", &empty)],
        "needs the pasta program (package passt)",
    );
}
