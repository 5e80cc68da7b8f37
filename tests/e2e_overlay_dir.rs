//! End-to-end tests of directory overlays (`--overlay DIR`, `--overlay DIR:ro`) on the busybox
//! SIF, run as the unprivileged user (CI runs this binary as the test user).

mod common;

use std::os::unix::fs::MetadataExt;

use common::*;

fn busybox() -> String {
    sif_fixture("busybox_amd64.sif").display().to_string()
}

fn exec(args: &[&str]) -> std::process::Output {
    let mut v: Vec<String> = vec!["exec".into()];
    v.extend(args.iter().map(|s| s.to_string()));
    sifr(v)
}

#[test]
fn test_writable_dir_persists_between_runs() {
    require_unprivileged();
    let t = tempdir();
    let ovl = t.path().join("ovl");
    std::fs::create_dir(&ovl).expect("mkdir");
    let spec = ovl.display().to_string();
    let img = busybox();
    ok(&exec(&[
        "--overlay",
        &spec,
        &img,
        "sh",
        "-c",
        "echo hello > /newfile && mkdir -p /opt/x && echo y > /opt/x/y",
    ]));
    // Laid out as Apptainer lays out a directory overlay.
    assert!(ovl.join("upper").is_dir() && ovl.join("work").is_dir());
    let f = ovl.join("upper/newfile");
    assert_eq!(std::fs::read_to_string(&f).expect("read upper"), "hello\n");
    // Owned by the user on the host.
    let me = std::fs::metadata(t.path()).expect("stat").uid();
    assert_eq!(std::fs::metadata(&f).expect("stat").uid(), me);
    // The next run sees it.
    let out = ok(&exec(&[
        "--overlay",
        &spec,
        &img,
        "cat",
        "/newfile",
        "/opt/x/y",
    ]));
    assert_eq!(out, "hello\ny\n");
    // Without the overlay the image is unchanged.
    let o = exec(&[&img, "test", "-e", "/newfile"]);
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn test_fakeroot_files_are_root_inside_and_the_user_outside() {
    require_unprivileged();
    let t = tempdir();
    let ovl = t.path().join("ovl");
    std::fs::create_dir(&ovl).expect("mkdir");
    let spec = ovl.display().to_string();
    let out = ok(&exec(&[
        "--fakeroot",
        "--overlay",
        &spec,
        &busybox(),
        "sh",
        "-c",
        "echo r > /rootfile && stat -c %u:%g /rootfile",
    ]));
    assert_eq!(out, "0:0\n");
    // Root inside is the user on the host in both fakeroot modes (subid: 0 maps to the
    // user; root-mapped: only the user is mapped).
    let me = std::fs::metadata(t.path()).expect("stat").uid();
    let md = std::fs::metadata(ovl.join("upper/rootfile")).expect("stat");
    assert_eq!(md.uid(), me);
    assert_eq!(md.gid(), std::fs::metadata(t.path()).expect("stat").gid());

    // A file given to uid 1000 inside: with subordinate ids it is the range's 1000th id
    // on the host (inside 1 is the range's first); root-mapped, 1000 is not mapped, the
    // chown is emulated and the file stays the user's.
    let out = ok(&exec(&[
        "--fakeroot",
        "--overlay",
        &spec,
        &busybox(),
        "sh",
        "-c",
        "echo u > /userfile && chown 1000:1000 /userfile && stat -c %u /userfile /rootfile",
    ]));
    let md = std::fs::metadata(ovl.join("upper/userfile")).expect("stat");
    match first_subuid() {
        Some(base) => {
            assert_eq!(out, "1000\n0\n");
            assert_eq!(md.uid(), base + 1000 - 1);
        }
        None => assert_eq!(md.uid(), me),
    }
    // Still root's inside in the next run.
    let out = ok(&exec(&[
        "--fakeroot",
        "--overlay",
        &spec,
        &busybox(),
        "stat",
        "-c",
        "%u",
        "/rootfile",
    ]));
    assert_eq!(out, "0\n");
}

/// The first subordinate uid of the calling user, when /etc/subuid gives it a full range
/// (then sifr's fakeroot maps with it); `None` in root-mapped mode.
fn first_subuid() -> Option<u32> {
    let user = user_name();
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() }.to_string();
    std::fs::read_to_string("/etc/subuid")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() == 3 && (f[0] == user || f[0] == uid) && f[2].parse::<u32>().ok()? >= 65536)
                .then(|| f[1].parse().ok())?
        })
        .next()
}

/// Three read-only directories and a writable one: a file in several shows the topmost
/// (the last given); deleting a file of a lower layer leaves a whiteout in upper/ that
/// hides it in later runs, the lower directory untouched.
#[test]
fn test_layer_order_and_whiteouts() {
    require_unprivileged();
    let t = tempdir();
    let mut specs = vec![];
    for (i, name) in ["ro1", "ro2", "ro3"].iter().enumerate() {
        let d = t.path().join(name);
        std::fs::create_dir(&d).expect("mkdir");
        // ro1 has f1; ro2 has f1, f2; ro3 has f1, f2, f3: each says which layer it is in.
        for f in 1..=i + 1 {
            std::fs::write(d.join(format!("f{f}")), format!("{name}\n")).expect("write");
        }
        std::fs::write(d.join(format!("only-{name}")), "x\n").expect("write");
        specs.push(format!("{}:ro", d.display()));
    }
    let rw = t.path().join("rw");
    std::fs::create_dir(&rw).expect("mkdir");
    let rws = rw.display().to_string();
    let img = busybox();
    let run_with = |specs: &[String], cmd: &str| {
        let mut a: Vec<&str> = vec![];
        for s in specs {
            a.extend(["--overlay", s.as_str()]);
        }
        a.extend(["--overlay", &rws, &img, "sh", "-c", cmd]);
        exec(&a)
    };
    // The last given is on top: f1 from ro3 (in all three), f2 from ro3, f3 from ro3; the
    // same with the order reversed shows ro1's f1.
    let out = ok(&run_with(&specs, "cat /f1 /f2 /f3"));
    assert_eq!(out, "ro3\nro3\nro3\n");
    specs.reverse();
    let run = |cmd: &str| run_with(&specs, cmd);
    let out = ok(&run("cat /f1 /f2 /f3"));
    assert_eq!(out, "ro1\nro2\nro3\n");
    // The writable layer is above them all.
    ok(&run("echo rw > /f1 && rm /only-ro2 /f3"));
    assert_eq!(ok(&run("cat /f1")), "rw\n");
    let o = run("test -e /only-ro2 || test -e /f3");
    assert_eq!(
        o.status.code(),
        Some(1),
        "deleted files are hidden in the next run"
    );
    assert_eq!(ok(&run("cat /only-ro1 /only-ro3")), "x\nx\n");
    // The whiteouts: character devices 0:0 in upper/ (overlayfs's format), the lower
    // directories untouched.
    use std::os::unix::fs::FileTypeExt;
    for w in ["only-ro2", "f3"] {
        let md = std::fs::symlink_metadata(rw.join("upper").join(w)).expect("whiteout");
        assert!(md.file_type().is_char_device(), "{w}: {md:?}");
        assert_eq!(md.rdev(), 0, "{w}");
    }
    assert!(t.path().join("ro2/only-ro2").exists() && t.path().join("ro3/f3").exists());
}

/// Mount points the image lacks (here a bind destination and the home directory) are
/// created in the session, not in the writable overlay: nothing is left in upper/ by a run
/// that writes nothing, as with Apptainer (its overlay-lowerdir); the bind still works.
#[test]
fn test_missing_mount_points_are_not_left_in_the_overlay() {
    require_unprivileged();
    let t = tempdir();
    let ovl = t.path().join("ovl");
    let data = t.path().join("data");
    std::fs::create_dir(&ovl).expect("mkdir");
    std::fs::create_dir(&data).expect("mkdir");
    std::fs::write(data.join("in-data"), "d\n").expect("write");
    let spec = ovl.display().to_string();
    let bind = format!("{}:/newdir/sub", data.display());
    let out = ok(&exec(&[
        "--overlay",
        &spec,
        "-B",
        &bind,
        &busybox(),
        "sh",
        "-c",
        "cat /newdir/sub/in-data && test -d \"$HOME\" && echo w > /newdir/sub/out",
    ]));
    assert_eq!(out, "d\n");
    assert_eq!(
        std::fs::read_to_string(data.join("out")).expect("written through the bind"),
        "w\n"
    );
    let left: Vec<_> = std::fs::read_dir(ovl.join("upper"))
        .expect("upper")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert!(left.is_empty(), "left in the overlay: {left:?}");
    // Without the bind the directory is not there; a directory made by the user persists.
    let o = exec(&["--overlay", &spec, &busybox(), "test", "-e", "/newdir"]);
    assert_eq!(o.status.code(), Some(1));
    ok(&exec(&["--overlay", &spec, &busybox(), "mkdir", "/mine"]));
    ok(&exec(&[
        "--overlay",
        &spec,
        "-B",
        &bind,
        &busybox(),
        "test",
        "-d",
        "/mine",
    ]));
    assert!(ovl.join("upper/mine").is_dir());
}

/// A FUSE mount the test makes with fuse2fs (an ext3 image owned by the user).
struct FuseMount(std::path::PathBuf);

impl FuseMount {
    fn new(dir: &std::path::Path) -> FuseMount {
        let img = dir.join("fs.img");
        let mnt = dir.join("fuse");
        std::fs::create_dir(&mnt).expect("mkdir");
        std::fs::File::create(&img)
            .and_then(|f| f.set_len(16 << 20))
            .expect("image");
        // SAFETY: getuid and getgid cannot fail.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        let owner = format!("root_owner={uid}:{gid}");
        let mkfs = which("mkfs.ext3").expect("mkfs.ext3 (e2fsprogs; ci/setup-host installs it)");
        ok(&run(
            mkfs,
            ["-q", "-F", "-E", &owner, img.to_str().expect("utf-8")],
        ));
        let fuse2fs = which("fuse2fs").expect("fuse2fs (ci/setup-host installs it)");
        ok(&run(fuse2fs, [img.as_os_str(), mnt.as_os_str()]));
        FuseMount(mnt)
    }
}

impl Drop for FuseMount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("fusermount3")
            .arg("-u")
            .arg(&self.0)
            .status();
    }
}

/// A writable overlay directory on a FUSE filesystem: one line naming the directory, its
/// filesystem and the fix, exit 255, nothing created in it. As a read-only layer it is
/// used (the kernel takes FUSE lower layers).
#[test]
fn test_writable_overlay_on_fuse_refused() {
    require_unprivileged();
    let t = tempdir();
    let fuse = FuseMount::new(t.path());
    let ovl = fuse.0.join("ovl");
    std::fs::create_dir(&ovl).expect("mkdir on the FUSE mount");
    std::fs::write(ovl.join("on-fuse"), "f\n").expect("write");
    let spec = ovl.display().to_string();
    let o = exec(&["--overlay", &spec, &busybox(), "true"]);
    assert_one_line_error(
        &o,
        &format!("cannot use {spec} as a writable overlay: its filesystem is FUSE"),
    );
    assert_one_line_error(&o, "use a directory on a local filesystem");
    assert_one_line_error(&o, "ext3 overlay image");
    assert_eq!(o.status.code(), Some(255));
    let mut left: Vec<_> = std::fs::read_dir(&ovl)
        .expect("read")
        .map(|e| e.expect("entry").file_name())
        .collect();
    left.sort();
    assert_eq!(left, vec![std::ffi::OsString::from("on-fuse")]);
    // Read-only: a lower layer.
    let ro = format!("{spec}:ro");
    assert_eq!(
        ok(&exec(&["--overlay", &ro, &busybox(), "cat", "/on-fuse"])),
        "f\n"
    );
}

/// A writable overlay directory on another overlayfs (made here in a user namespace, with
/// sifr started inside it): refused by name before anything is created.
#[test]
fn test_writable_overlay_on_overlayfs_refused() {
    require_unprivileged();
    let t = tempdir();
    let d = t.path();
    for sub in ["l", "u", "w", "m"] {
        std::fs::create_dir(d.join(sub)).expect("mkdir");
    }
    let script = format!(
        "set -e; cd {d}; mount -t overlay overlay -o lowerdir=l,upperdir=u,workdir=w,userxattr m; \
         mkdir m/ovl; stat -f -c %T m/ovl; \
         \"$0\" exec --overlay {d}/m/ovl {img} true || echo \"rc=$?\"; ls -A m/ovl",
        d = d.display(),
        img = busybox(),
    );
    let unshare = which("unshare").expect("unshare (util-linux)");
    let args: Vec<std::ffi::OsString> = vec![
        "-rm".into(),
        "sh".into(),
        "-c".into(),
        script.into(),
        sifr_bin().into(),
    ];
    let o = run(unshare, args);
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stdout}{stderr}");
    // The directory was on an overlayfs; sifr exited 255 and left it empty.
    assert_eq!(stdout, "overlayfs\nrc=255\n", "{stderr}");
    assert!(
        stderr.contains(&format!(
            "cannot use {}/m/ovl as a writable overlay: its filesystem is overlayfs",
            d.display()
        )),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}

/// `--writable-tmpfs` is as large as `sessiondir max size` (Apptainer's default 64 MiB):
/// df shows it, and a write beyond it fails with "No space left on device".
#[test]
fn test_writable_tmpfs_size_is_sessiondir_max_size() {
    require_unprivileged();
    let img = busybox();
    let df = "df -k / | tail -1 | awk '{print $2}'";
    let out = ok(&exec(&["--writable-tmpfs", &img, "sh", "-c", df]));
    assert_eq!(out, "65536\n");
    let t = tempdir();
    let conf = t.path().join("sifr.conf");
    std::fs::write(&conf, "sessiondir max size = 16\n").expect("write");
    let conf = conf.display().to_string();
    let out = ok(&sifr([
        "-c",
        &conf,
        "exec",
        "--writable-tmpfs",
        &img,
        "sh",
        "-c",
        df,
    ]));
    assert_eq!(out, "16384\n");
    let o = sifr([
        "-c",
        &conf,
        "exec",
        "--writable-tmpfs",
        &img,
        "sh",
        "-c",
        "dd if=/dev/zero of=/big bs=1M count=32",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("No space left on device"), "{err}");
}

#[test]
fn test_readonly_lower_is_visible_and_upper_wins() {
    require_unprivileged();
    let t = tempdir();
    // A read-only layer as a plain directory.
    let lower = t.path().join("lower");
    std::fs::create_dir(&lower).expect("mkdir");
    std::fs::write(lower.join("shared"), "lower\n").expect("write");
    std::fs::write(lower.join("only-lower"), "ro\n").expect("write");
    // A writable layer whose upper already holds /shared.
    let rw = t.path().join("rw");
    std::fs::create_dir_all(rw.join("upper")).expect("mkdir");
    std::fs::write(rw.join("upper/shared"), "upper\n").expect("write");
    let ro = format!("{}:ro", lower.display());
    let rws = rw.display().to_string();
    let img = busybox();
    let out = ok(&exec(&[
        "--overlay",
        &ro,
        "--overlay",
        &rws,
        &img,
        "cat",
        "/only-lower",
        "/shared",
    ]));
    assert_eq!(out, "ro\nupper\n");
    // The read-only layer alone: visible, and not writable.
    let out = ok(&exec(&["--overlay", &ro, &img, "cat", "/shared"]));
    assert_eq!(out, "lower\n");
    let o = exec(&["--overlay", &ro, &img, "sh", "-c", "echo x > /shared"]);
    assert!(!o.status.success());
    assert_eq!(
        std::fs::read_to_string(lower.join("shared")).expect("read"),
        "lower\n"
    );
}

#[test]
fn test_file_overlay_refused() {
    require_unprivileged();
    let t = tempdir();
    let f = t.path().join("overlay.img");
    std::fs::write(&f, vec![0u8; 4096]).expect("write");
    let spec = f.display().to_string();
    let o = exec(&["--overlay", &spec, &busybox(), "true"]);
    assert_one_line_error(&o, "not an overlay image");
    assert_one_line_error(&o, &spec);
    assert_eq!(o.status.code(), Some(255));
}

#[test]
fn test_missing_overlay_refused() {
    require_unprivileged();
    let t = tempdir();
    let spec = t.path().join("nope").display().to_string();
    let o = exec(&["--overlay", &spec, &busybox(), "true"]);
    assert_one_line_error(&o, &spec);
    assert_eq!(o.status.code(), Some(255));
    assert!(!t.path().join("nope").exists());
}

/// A layout overlayfs refuses (here the writable directory's upper/ again as a read-only
/// layer): the kernel's error in one line naming the directory, exit 255.
#[test]
fn test_unusable_overlay_is_the_kernels_error_naming_the_dir() {
    require_unprivileged();
    let t = tempdir();
    let ovl = t.path().join("ovl");
    std::fs::create_dir(&ovl).expect("mkdir");
    let spec = ovl.display().to_string();
    ok(&exec(&["--overlay", &spec, &busybox(), "true"]));
    let ro = format!("{spec}:ro");
    let o = exec(&["--overlay", &spec, "--overlay", &ro, &busybox(), "true"]);
    let canonical = std::fs::canonicalize(&ovl).expect("canonical");
    assert_one_line_error(
        &o,
        &format!("cannot use {} as an overlay", canonical.display()),
    );
    assert_eq!(o.status.code(), Some(255));
}

#[test]
fn test_two_writable_overlays_refused() {
    require_unprivileged();
    let t = tempdir();
    let a = t.path().join("a");
    let b = t.path().join("b");
    std::fs::create_dir(&a).expect("mkdir");
    std::fs::create_dir(&b).expect("mkdir");
    let (a, b) = (a.display().to_string(), b.display().to_string());
    let o = exec(&["--overlay", &a, "--overlay", &b, &busybox(), "true"]);
    assert_one_line_error(&o, "more than one writable overlay");
    let o = exec(&["--overlay", &a, "--writable-tmpfs", &busybox(), "true"]);
    assert_one_line_error(&o, "--writable-tmpfs");
}

/// `enable overlay = try`, Apptainer's old spelling of `yes`: directory overlays,
/// --writable-tmpfs and the session layer (a bind destination the image lacks) all work.
#[test]
fn test_enable_overlay_try_works_as_yes() {
    require_unprivileged();
    let t = tempdir();
    let conf = t.path().join("sifr.conf");
    std::fs::write(&conf, "enable overlay = try\n").expect("write");
    let conf = conf.display().to_string();
    let ovl = t.path().join("ovl");
    std::fs::create_dir(&ovl).expect("mkdir");
    let spec = ovl.display().to_string();
    let img = busybox();
    let c = |args: &[&str]| {
        let mut v = vec!["-c", conf.as_str(), "exec"];
        v.extend(args);
        sifr(v)
    };
    ok(&c(&["--overlay", &spec, &img, "sh", "-c", "echo t > /t"]));
    assert_eq!(
        std::fs::read_to_string(ovl.join("upper/t")).expect("read"),
        "t\n"
    );
    ok(&c(&["--writable-tmpfs", &img, "touch", "/x"]));
    let bind = format!("{}:/not-in-image", t.path().display());
    ok(&c(&["-B", &bind, &img, "test", "-d", "/not-in-image/ovl"]));
}
