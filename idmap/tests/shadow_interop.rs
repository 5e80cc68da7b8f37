//! shadow's usermod waits for sifr's lock on /etc/subuid, and each reads the other's output.
//!
//! usermod works on a throwaway root (`--prefix DIR`), so nothing on the host changes. It
//! needs root (ci/test runs it as root); as any other user it prints `SKIP:`, and fails
//! under CI (`SIFR_CI=1`).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use sifr_idmap::{EditPaths, FakerootEdit, ShadowLock, SubidFile, UserRef, edit_fakeroot};

fn skip(reason: &str) {
    // Straight to fd 2: libtest captures eprintln! of passing tests, and a skip must show.
    let _ = std::io::Write::write_all(
        &mut std::io::stderr(),
        format!("SKIP: test_usermod_honours_sifr_lock_and_vice_versa: {reason}\n").as_bytes(),
    );
}

fn usermod(prefix: &Path, range: &str) -> Command {
    let mut c = Command::new("/usr/sbin/usermod");
    c.arg("--prefix")
        .arg(prefix)
        .args(["--add-subuids", range, "alice"])
        .env("LC_ALL", "C")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

#[test]
fn test_usermod_honours_sifr_lock_and_vice_versa() {
    if !nix::unistd::geteuid().is_root() {
        // ci/test runs this test as root; under CI it must not pass by skipping.
        assert!(
            std::env::var_os("SIFR_CI").is_none_or(|v| v != "1"),
            "usermod needs root: ci/test runs this test as root"
        );
        return skip("usermod needs root");
    }
    if !Path::new("/usr/sbin/usermod").exists() {
        return skip("/usr/sbin/usermod is not installed (package passwd)");
    }
    let root = tempfile::tempdir().expect("tempdir");
    let etc = root.path().join("etc");
    std::fs::create_dir(&etc).expect("mkdir");
    let w = |n: &str, t: &str| std::fs::write(etc.join(n), t).expect("write");
    w(
        "passwd",
        "root:x:0:0::/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n",
    );
    w("group", "root:x:0:\nalice:x:1000:\n");
    w(
        "shadow",
        "root:*:19000:0:99999:7:::\nalice:*:19000:0:99999:7:::\n",
    );
    w("gshadow", "root:*::\nalice:!::\n");
    w("subuid", "# kept\n");
    w("subgid", "# kept\n");
    let subuid = etc.join("subuid");

    // While sifr holds the lock, usermod waits (it retries once a second for 15 s); once
    // the lock is released it goes ahead.
    let lock = ShadowLock::acquire(&subuid, Duration::from_secs(1)).expect("lock");
    let mut child = usermod(root.path(), "100000-165535")
        .spawn()
        .expect("run usermod");
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        child.try_wait().expect("poll usermod").is_none(),
        "usermod finished while sifr held the lock"
    );
    assert_eq!(std::fs::read_to_string(&subuid).expect("read"), "# kept\n");
    drop(lock);
    let out = child.wait_with_output().expect("wait usermod");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // sifr's parser reads usermod's line.
    let file = SubidFile::read(&subuid).expect("read");
    let e = file.entries().next().expect("usermod's entry");
    assert_eq!(
        (e.owner.as_str(), e.start, e.count),
        ("alice", 100000, 65536)
    );

    // sifr's --add sees usermod's valid entry in subuid and adds only to subgid.
    let paths = EditPaths {
        subuid: subuid.clone(),
        subgid: etc.join("subgid"),
        passwd: etc.join("passwd"),
        group: etc.join("group"),
    };
    let [u, g] =
        edit_fakeroot(&paths, FakerootEdit::Add, &UserRef::named("alice", 1000)).expect("add");
    assert!(!u.changed(), "{u:?}");
    assert!(g.changed(), "{g:?}");
    assert!(!etc.join("subuid.lock").exists());
}
