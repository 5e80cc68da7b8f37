//! End-to-end: a sandbox image whose bind destinations go through planted symlinks
//! (absolute ones to host paths, `..` chains, loops) as the unprivileged user. Every bind
//! must land inside the container root, or be refused with one clear line, and nothing may
//! be created on the host outside the image.

mod common;

use std::os::unix::fs::symlink;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use common::*;

/// A fresh copy of the busybox rootfs as a sandbox directory, in its own temporary
/// directory (the test plants symlinks in it), with an `outside` host directory beside it.
struct Setup {
    tmp: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        let tmp = tempdir();
        let root = tmp.path().join("img");
        extract_busybox(&root);
        for d in ["outside", "hostdata"] {
            std::fs::create_dir(tmp.path().join(d)).expect("mkdir");
        }
        std::fs::write(tmp.path().join("hostdata/in.txt"), "from host\n").expect("write");
        Setup { tmp }
    }
    fn img(&self) -> PathBuf {
        std::fs::canonicalize(self.tmp.path().join("img")).expect("canon")
    }
    /// The host directory that the planted symlinks aim at; it must stay empty.
    fn outside(&self) -> PathBuf {
        std::fs::canonicalize(self.tmp.path().join("outside")).expect("canon")
    }
    fn hostdata(&self) -> String {
        self.tmp.path().join("hostdata").display().to_string()
    }
    /// Replaces `rel` in the image by a symlink to `target`.
    fn plant(&self, rel: &str, target: &str) {
        let p = self.img().join(rel);
        if p.is_dir() && !p.is_symlink() {
            std::fs::remove_dir_all(&p).expect("remove");
        } else if p.symlink_metadata().is_ok() {
            std::fs::remove_file(&p).expect("remove");
        }
        symlink(target, &p).expect("symlink");
    }
    fn assert_outside_untouched(&self) {
        let left: Vec<_> = std::fs::read_dir(self.outside())
            .expect("read outside")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert!(
            left.is_empty(),
            "created on the host outside the image: {left:?}"
        );
    }
}

fn sifr(args: &[&str]) -> Output {
    Command::new(sifr_bin())
        .args(args)
        .current_dir("/")
        .stdin(Stdio::null())
        .output()
        .expect("run sifr")
}

/// `/mnt -> /../../../<outside>` (dangling inside the image): the bind lands inside the
/// container root (the session layer gets the mount point), never on the host's directory
/// of that name, and the image is unchanged.
#[test]
fn test_bind_through_absolute_dotdot_symlink_stays_inside() {
    require_unprivileged();
    let s = Setup::new();
    let outside = s.outside();
    s.plant("mnt", &format!("/../../..{}", outside.display()));
    let spec = format!("{}:/mnt/x", s.hostdata());
    let o = sifr(&[
        "exec",
        "-B",
        &spec,
        &s.img().display().to_string(),
        "cat",
        "/mnt/x/in.txt",
    ]);
    assert_eq!(ok(&o), "from host\n");
    s.assert_outside_untouched();
    // The session layer is discarded: the image is unchanged.
    assert!(s.img().join("mnt").is_symlink());
    assert!(
        !s.img()
            .join(outside.strip_prefix("/").expect("abs"))
            .exists()
    );
}

/// `/etc -> <absolute host path>` and `--bind` on `/etc/evil`: resolved inside the root.
#[test]
fn test_bind_under_absolute_symlink_to_host_dir_stays_inside() {
    require_unprivileged();
    let s = Setup::new();
    let outside = s.outside();
    s.plant("etc", &outside.display().to_string());
    let spec = format!("{}:/etc/evil", s.hostdata());
    let o = sifr(&[
        "exec",
        "--bind",
        &spec,
        &s.img().display().to_string(),
        "cat",
        "/etc/evil/in.txt",
    ]);
    assert_eq!(ok(&o), "from host\n");
    s.assert_outside_untouched();
}

/// A writable sandbox has no session layer: missing mount points are created in the image
/// itself, through its symlinks, and must land inside it. (`--no-mount tmp`: the image's
/// `<outside>` is under /tmp, which would otherwise be the host's; see the next test.) The
/// mount is the home directory (`-H`): a missing *user bind* destination is an error with
/// `--writable`, as in Apptainer (tests/e2e_binds.rs).
#[test]
fn test_writable_sandbox_creates_mount_points_inside_the_image() {
    require_unprivileged();
    let s = Setup::new();
    let outside = s.outside();
    let img = s.img();
    let rel_outside = outside.strip_prefix("/").expect("abs").to_path_buf();
    // Absolute, `/..`-chain and relative `..`-chain symlinks to the host's directory.
    s.plant("mnt", &format!("/../../..{}", outside.display()));
    s.plant("opt", &outside.display().to_string());
    let up = "../".repeat(img.components().count() + 3);
    s.plant("srv", &format!("{up}{}", rel_outside.display()));
    // The targets lie in the image under <outside>; make that directory there.
    std::fs::create_dir_all(img.join(&rel_outside)).expect("mkdir in image");
    for (dest, made) in [("/mnt/a", "a"), ("/opt/b/c", "b/c"), ("/srv/d", "d")] {
        let spec = format!("{}:{dest}", s.hostdata());
        let o = sifr(&[
            "exec",
            "--writable",
            "--no-mount",
            "tmp",
            "-H",
            &spec,
            &img.display().to_string(),
            "sh",
            "-c",
            &format!("cat {dest}/in.txt {}/{made}/in.txt", outside.display()),
        ]);
        assert_eq!(ok(&o), "from host\nfrom host\n", "{dest}");
        assert!(
            img.join(&rel_outside).join(made).is_dir(),
            "{dest}: mount point not created inside the image"
        );
        s.assert_outside_untouched();
    }
}

/// A writable sandbox whose `/etc` is a symlink to a host path under /tmp: inside the
/// container that path is in the host's /tmp (bound before the generated /etc/passwd), so
/// creating the missing mount points there would create files on the host. Refused with one
/// line; nothing is created on the host.
#[test]
fn test_writable_sandbox_refuses_mount_points_in_host_binds() {
    require_unprivileged();
    let s = Setup::new();
    let outside = s.outside();
    let img = s.img();
    s.plant("etc", &outside.display().to_string());
    std::fs::create_dir_all(img.join(outside.strip_prefix("/").expect("abs"))).expect("mkdir");
    let o = sifr(&["exec", "--writable", &img.display().to_string(), "true"]);
    s.assert_outside_untouched();
    assert_one_line_error(&o, "another mount");
}

/// A symlink loop at a bind destination: refused with one line naming the destination, and
/// nothing created anywhere.
#[test]
fn test_bind_through_symlink_loop_is_refused() {
    require_unprivileged();
    let s = Setup::new();
    s.plant("mnt", "/loop2");
    s.plant("loop2", "mnt");
    let spec = format!("{}:/mnt/x", s.hostdata());
    for writable in [false, true] {
        let img = s.img().display().to_string();
        let mut args = vec!["exec"];
        if writable {
            args.push("--writable");
        }
        args.extend(["-B", &spec, &img, "true"]);
        let o = sifr(&args);
        assert_one_line_error(&o, "/mnt/x");
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(
            stderr.to_lowercase().contains("symbolic links"),
            "not a loop error: {stderr}"
        );
        s.assert_outside_untouched();
        assert!(s.img().join("mnt").is_symlink() && s.img().join("loop2").is_symlink());
    }
}

/// The image's own `/etc/passwd` read for the generated one: a symlink to the host's
/// `/etc/shadow`-like file outside is read inside the root (absent there: an empty base).
#[test]
fn test_generated_passwd_does_not_read_through_to_the_host() {
    require_unprivileged();
    let s = Setup::new();
    let secret = s.tmp.path().join("secret");
    std::fs::write(&secret, "leaked:x:4242:4242::/:/bin/sh\n").expect("write");
    let img = s.img();
    std::fs::remove_file(img.join("etc/passwd")).expect("rm");
    symlink(&secret, img.join("etc/passwd")).expect("symlink");
    let o = sifr(&["exec", &img.display().to_string(), "cat", "/etc/passwd"]);
    let out = ok(&o);
    assert!(!out.contains("leaked"), "host file read through: {out}");
    s.assert_outside_untouched();
}
