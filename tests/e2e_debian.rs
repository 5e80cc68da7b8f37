//! End-to-end tests on a real Debian bookworm image made by `ci/make-test-images`
//! (debootstrap minbase → mksquashfs in every compressor → SIF by the reference
//! implementation): package tools inside, an interactive shell through a pty, and the whole
//! tree read through sifr's FUSE driver compared with the source, byte for byte.
//! Run as an unprivileged user (CI does; the harness refuses root).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};

use common::*;

fn run_in(img: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(sifr_bin())
        .arg("exec")
        .arg(img)
        .args(args)
        .current_dir("/")
        .stdin(Stdio::null())
        .output()
        .expect("run sifr");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn test_debian_sif_package_tools() {
    require_unprivileged();
    let Some(dir) = test_images() else { return };
    let sif = dir.join("debian.sif");
    let (code, out, err) = run_in(&sif, &["dpkg", "-l"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.lines().any(|l| l.starts_with("ii  coreutils")), "{out}");
    assert!(out.lines().any(|l| l.starts_with("ii  apt ")), "{out}");
    assert_eq!(err, "");
    let (code, out, err) = run_in(&sif, &["apt-cache", "policy"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("Package files:"), "{out}");
    let (code, out, _) = run_in(&sif, &["cat", "/etc/debian_version"]);
    assert_eq!(code, Some(0));
    assert!(out.starts_with("12."), "{out}");
}

#[test]
fn test_bare_squashfs_without_singularity_d() {
    require_unprivileged();
    let Some(dir) = test_images() else { return };
    let img = dir.join("debian-zstd.sqfs");
    let (code, out, err) = run_in(
        &img,
        &["sh", "-c", "test -e /.singularity.d; echo $?; echo $PATH"],
    );
    assert_eq!(code, Some(0), "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "1", "the image has no /.singularity.d");
    assert_eq!(
        lines[1],
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    );
    // run without a runscript starts /bin/sh with the arguments.
    let out = Command::new(sifr_bin())
        .args(["run"])
        .arg(&img)
        .args(["-c", "echo ran"])
        .output()
        .expect("sifr run");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ran\n");
}

/// Paths that are mount points in the container (or below one), so not the image's.
fn masked(path: &str, user: &str) -> bool {
    let home = format!("home/{user}");
    let prefixes = ["proc", "sys", "dev", "tmp", "var/tmp", home.as_str()];
    let files = [
        "etc/passwd",
        "etc/group",
        "etc/resolv.conf",
        "etc/hosts",
        "etc/localtime",
    ];
    files.contains(&path)
        || prefixes
            .iter()
            .any(|p| path == *p || path.starts_with(&format!("{p}/")))
}

fn overflow_id(kind: &str) -> String {
    std::fs::read_to_string(format!("/proc/sys/kernel/overflow{kind}"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "65534".into())
}

/// Listing inside the container: the same fields as the manifest, and sha256 sums of every
/// file the user can read.
const LIST_SCRIPT: &str = "find / -xdev -printf '%P\\t%y\\t%#m\\t%U\\t%G\\t%s\\t%l\\t%i\\n'; \
     echo '--sha256--'; \
     find / -xdev -type f -readable -print0 | xargs -0 -r sha256sum";

#[test]
fn test_whole_tree_equals_source_every_compressor() {
    require_unprivileged();
    let Some(dir) = test_images() else { return };
    let user = user_name();
    // SAFETY: getuid/getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid().to_string(), libc::getgid().to_string()) };
    let (ouid, ogid) = (overflow_id("uid"), overflow_id("gid"));
    let manifest = std::fs::read_to_string(dir.join("debian.manifest")).expect("manifest");
    let sums: BTreeMap<String, String> = std::fs::read_to_string(dir.join("debian.sha256"))
        .expect("sha256")
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(p, s)| (p.to_string(), s.to_string()))
        .collect();
    let all: BTreeMap<String, Vec<String>> = manifest
        .lines()
        .map(|l| l.split('\t').map(str::to_string).collect::<Vec<_>>())
        .filter(|f| f.len() == 8 && !f[0].is_empty())
        .map(|f| (f[0].clone(), f))
        .collect();
    // A path the user can see: every directory above it is readable and searchable by
    // others (the image's owners are not mapped to the user).
    let visible = |path: &str| {
        let mut p = Path::new(path);
        while let Some(parent) = p.parent().filter(|q| !q.as_os_str().is_empty()) {
            let mode = all
                .get(parent.to_str().unwrap_or(""))
                .and_then(|f| u32::from_str_radix(&f[2], 8).ok())
                .unwrap_or(0);
            if mode & 0o005 != 0o005 {
                return false;
            }
            p = parent;
        }
        true
    };
    let source: BTreeMap<String, Vec<String>> = all
        .iter()
        .filter(|(p, _)| !masked(p, &user) && visible(p))
        .map(|(p, f)| (p.clone(), f.clone()))
        .collect();

    for comp in ["gzip", "xz", "lzo", "lz4", "zstd"] {
        let img = dir.join(format!("debian-{comp}.sqfs"));
        let (code, out, err) = run_in(&img, &["sh", "-c", LIST_SCRIPT]);
        assert_eq!(code, Some(0), "{comp}: {err}");
        let (listing, hashes) = out.split_once("--sha256--\n").expect("two parts");
        let seen: BTreeMap<String, Vec<String>> = listing
            .lines()
            .map(|l| l.split('\t').map(str::to_string).collect::<Vec<_>>())
            .filter(|f| f.len() == 8 && !f[0].is_empty() && !masked(&f[0], &user))
            .map(|f| (f[0].clone(), f))
            .collect();
        let missing: Vec<&String> = source.keys().filter(|p| !seen.contains_key(*p)).collect();
        let extra: Vec<&String> = seen.keys().filter(|p| !source.contains_key(*p)).collect();
        assert!(
            missing.is_empty(),
            "{comp}: missing in the container: {missing:?}"
        );
        assert!(extra.is_empty(), "{comp}: not in the source: {extra:?}");

        let mut src_links: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        let mut ctr_links: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for (path, s) in &source {
            let c = &seen[path];
            // type, mode
            assert_eq!((&c[1], &c[2]), (&s[1], &s[2]), "{comp}: {path} type/mode");
            // owners, as the single-id mapping shows them
            let map = |id: &str, mine: &str, over: &str| {
                if id == mine {
                    id.to_string()
                } else {
                    over.to_string()
                }
            };
            // Directories above a mount point the image lacks are created in the session
            // layer, owned by the user (docs/environment.md): their owner is not the image's.
            let holds_mountpoint = s[1] == "d"
                && [
                    "etc/localtime",
                    "etc/hosts",
                    "etc/resolv.conf",
                    &format!("home/{user}"),
                ]
                .iter()
                .any(|m| m.starts_with(&format!("{path}/")));
            if !holds_mountpoint {
                assert_eq!(c[3], map(&s[3], &uid, &ouid), "{comp}: {path} owner");
                assert_eq!(c[4], map(&s[4], &gid, &ogid), "{comp}: {path} group");
            }
            if s[1] != "d" {
                assert_eq!(c[5], s[5], "{comp}: {path} size");
                src_links
                    .entry(s[7].as_str())
                    .or_default()
                    .insert(path.as_str());
                ctr_links
                    .entry(c[7].as_str())
                    .or_default()
                    .insert(path.as_str());
            }
            assert_eq!(c[6], s[6], "{comp}: {path} link target");
        }
        // Hard links: the same groups of paths share an inode on both sides.
        let sg: BTreeSet<BTreeSet<&str>> =
            src_links.into_values().filter(|g| g.len() > 1).collect();
        let cg: BTreeSet<BTreeSet<&str>> =
            ctr_links.into_values().filter(|g| g.len() > 1).collect();
        assert!(!sg.is_empty(), "the Debian tree has hard links");
        assert_eq!(cg, sg, "{comp}: hard-link groups differ");

        // Contents: every file readable inside hashes as in the source.
        let mut checked = 0;
        for line in hashes.lines() {
            let Some((sum, path)) = line.split_once("  /") else {
                continue;
            };
            if masked(path, &user) {
                continue;
            }
            let expected = sums
                .get(path)
                .unwrap_or_else(|| panic!("{comp}: {path} unknown"));
            assert_eq!(sum, expected, "{comp}: content of /{path}");
            checked += 1;
        }
        // World-readable regular files must all have been read.
        let readable = source
            .values()
            .filter(|s| s[1] == "f" && u32::from_str_radix(&s[2], 8).unwrap_or(0) & 0o004 != 0)
            .count();
        assert!(
            checked >= readable * 99 / 100,
            "{comp}: only {checked} of {readable} world-readable files read"
        );
    }
}

#[test]
fn test_interactive_shell_through_a_pty() {
    require_unprivileged();
    let Some(dir) = test_images() else { return };
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let pty = nix::pty::openpty(None, None).expect("openpty");
    let slave = pty.slave;
    let mut cmd = Command::new(sifr_bin());
    cmd.arg("shell")
        .arg(dir.join("debian.sif"))
        .current_dir("/")
        .env("TERM", "dumb")
        .stdin(Stdio::from(slave.try_clone().expect("dup")))
        .stdout(Stdio::from(slave.try_clone().expect("dup")))
        .stderr(Stdio::from(slave.try_clone().expect("dup")));
    let slave_fd = slave.as_raw_fd();
    // SAFETY: setsid and TIOCSCTTY are async-signal-safe; the child gets the pty as its
    // controlling terminal, as a terminal emulator does.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 || libc::ioctl(slave_fd, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("spawn sifr shell");
    // The Command holds copies of the slave: drop them all, or the master never sees EOF.
    drop(cmd);
    drop(slave);
    let mut master = std::fs::File::from(pty.master);
    master
        .write_all(b"echo marker-$((6*7)); tty; exit 5\n")
        .expect("write");
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        // Wait at most a second at a time, so a stuck shell fails the test instead of
        // hanging it.
        let mut pfd = libc::pollfd {
            fd: master.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll on one valid pollfd.
        let ready = unsafe { libc::poll(&mut pfd, 1, 1000) };
        assert!(
            std::time::Instant::now() < deadline,
            "shell timed out: {}",
            String::from_utf8_lossy(&out)
        );
        if ready == 0 {
            continue;
        }
        match master.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    let status = child.wait().expect("wait");
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains("marker-42"), "{text}");
    assert!(
        text.contains("/dev/pts/"),
        "the shell has a terminal: {text}"
    );
    assert_eq!(status.code(), Some(5), "{text}");
}
