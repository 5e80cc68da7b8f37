//! `overlay create`, end to end as the unprivileged user, against Apptainer's behaviour
//! (e2e/overlay/overlay.go, internal/app/apptainer/overlay_create.go): the ext3 image (size,
//! dense or sparse, a clean file system, Apptainer's layout with the right owners and
//! modes), the overlay partition added to a SIF (read back by the reference SIF tool, the
//! other objects untouched), and every refusal: one line, exit 255, nothing left behind.
//!
//! e2fsck and debugfs (e2fsprogs) read the images; `sif-oracle` is the reference SIF tool.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{
    assert_one_line_error, in_ci, oracle, require_unprivileged, run, sif_fixture, tempdir,
};

const MIB: u64 = 1 << 20;

/// An e2fsprogs program (in /usr/sbin, often not on a user's PATH); `None` with a visible
/// reason outside CI, a failure in CI.
fn e2fs(name: &str) -> Option<PathBuf> {
    let found = common::which(name).or_else(|| {
        ["/usr/sbin", "/sbin"]
            .iter()
            .map(|d| Path::new(d).join(name))
            .find(|p| p.is_file())
    });
    match found {
        Some(p) => Some(p),
        None if in_ci() => panic!("{name} not found; CI requires e2fsprogs"),
        None => {
            eprintln!("SKIP: {name} not found (install e2fsprogs)");
            None
        }
    }
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// `sifr overlay create ARGS` with a private `--tmpdir` (checked empty afterwards by the
/// callers that care).
fn create(tmp: &Path, args: &[&str]) -> Output {
    create_env(tmp, args, &[])
}

fn create_env(tmp: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(common::sifr_bin());
    c.args(["overlay", "create", "--tmpdir", s(tmp)])
        .args(args)
        .stdin(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run sifr")
}

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The names in a directory, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// `e2fsck -fn IMAGE` finds nothing to fix.
fn assert_fsck_clean(img: &Path) {
    let Some(fsck) = e2fs("e2fsck") else { return };
    let out = run(&fsck, ["-fn", s(img)]);
    assert!(
        out.status.success(),
        "e2fsck -fn {}: exit {:?}\n{}{}",
        img.display(),
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Owner uid, gid and permission bits of `path` inside the ext3 image, from `debugfs stat`;
/// `None` when debugfs is missing outside CI.
fn stat_in(img: &Path, path: &str) -> Option<(u32, u32, u32)> {
    let debugfs = e2fs("debugfs")?;
    let out = run(&debugfs, ["-R", &format!("stat {path}"), s(img)]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let field = |name: &str| -> String {
        let at = text.find(name).unwrap_or_else(|| {
            panic!(
                "no {name} for {path} in {}:\n{text}{}",
                img.display(),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        text[at + name.len()..]
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        text.contains("Type: directory"),
        "{path} is not a directory:\n{text}"
    );
    let uid = field("User:").parse().expect("uid");
    let gid = field("Group:").parse().expect("gid");
    let mode = u32::from_str_radix(&field("Mode:"), 8).expect("mode");
    Some((uid, gid, mode))
}

fn ids() -> (u32, u32) {
    // SAFETY: getuid/getgid cannot fail.
    unsafe { (libc::getuid(), libc::getgid()) }
}

/// Apptainer's directory mode: 0755, 0777 for ids beyond 16 bits.
fn layout_mode() -> u32 {
    let (uid, gid) = ids();
    if uid > 65535 || gid > 65535 {
        0o777
    } else {
        0o755
    }
}

/// A new image, default options: 64 MiB written in full (its blocks allocated), mode 0600, a
/// clean ext3 file system whose upper/ and work/ belong to the caller with Apptainer's mode;
/// the temporary directory and the image's directory keep nothing else.
#[test]
fn test_new_image_is_dense_ext3_with_the_layout() {
    require_unprivileged();
    let d = tempdir();
    let tmp = d.path().join("tmp");
    std::fs::create_dir(&tmp).expect("tmp");
    let img = d.path().join("overlay.img");
    ok(&create(&tmp, &[s(&img)]));
    let m = std::fs::metadata(&img).expect("image created");
    assert_eq!(m.len(), 64 * MIB);
    assert!(m.blocks() * 512 >= 64 * MIB, "dense: {} blocks", m.blocks());
    assert_eq!(m.permissions().mode() & 0o7777, 0o600);
    assert_eq!(m.uid(), ids().0);
    assert_fsck_clean(&img);
    let (uid, gid) = ids();
    for dir in ["/upper", "/work"] {
        if let Some(got) = stat_in(&img, dir) {
            assert_eq!(got, (uid, gid, layout_mode()), "{dir}");
        }
    }
    assert_eq!(
        names(&tmp),
        Vec::<String>::new(),
        "temporary layout left behind"
    );
    assert_eq!(names(d.path()), ["overlay.img", "tmp"]);
}

/// `--sparse` (and APPTAINER_SPARSE, as Apptainer binds it) only sizes the file; `--size`
/// takes MiB.
#[test]
fn test_sparse_image_of_the_asked_size() {
    require_unprivileged();
    let d = tempdir();
    let a = d.path().join("a.img");
    ok(&create(d.path(), &["--size", "128", "--sparse", s(&a)]));
    let b = d.path().join("b.img");
    ok(&create_env(
        d.path(),
        &["-s", "100", s(&b)],
        &[("APPTAINER_SPARSE", "1")],
    ));
    for (img, size) in [(&a, 128), (&b, 100)] {
        let m = std::fs::metadata(img).expect("created");
        assert_eq!(m.len(), size * MIB, "{}", img.display());
        assert!(
            m.blocks() * 512 < size * MIB / 4,
            "{} is not sparse: {} blocks",
            img.display(),
            m.blocks()
        );
        assert_fsck_clean(img);
    }
    assert_eq!(names(d.path()), ["a.img", "b.img"]);
}

/// `--create-dir` directories (and their parents) are made under upper/, the caller's,
/// with Apptainer's mode; a relative one counts from the container's root, as Apptainer's
/// `filepath.Join` makes it.
#[test]
fn test_create_dirs_under_upper() {
    require_unprivileged();
    let d = tempdir();
    let img = d.path().join("dirs.img");
    ok(&create(
        d.path(),
        &[
            "--create-dir",
            "/usr/local/testing",
            "--create-dir",
            "opt/conda/../tools",
            s(&img),
        ],
    ));
    assert_fsck_clean(&img);
    let (uid, gid) = ids();
    for dir in [
        "/upper/usr",
        "/upper/usr/local",
        "/upper/usr/local/testing",
        "/upper/opt/tools",
        "/work",
    ] {
        if let Some(got) = stat_in(&img, dir) {
            assert_eq!(got, (uid, gid, layout_mode()), "{dir}");
        }
    }
}

/// `--fakeroot`: the layout belongs to root inside (mkfs.ext3 ran as root of a root-mapped
/// user namespace, as Apptainer re-executes itself); the file itself is the caller's.
#[test]
fn test_fakeroot_layout_belongs_to_root() {
    require_unprivileged();
    let d = tempdir();
    let img = d.path().join("fr.img");
    ok(&create(
        d.path(),
        &["--fakeroot", "--sparse", "--create-dir", "/opt/x", s(&img)],
    ));
    assert_eq!(std::fs::metadata(&img).expect("made").uid(), ids().0);
    assert_fsck_clean(&img);
    for dir in ["/upper", "/work", "/upper/opt", "/upper/opt/x"] {
        if let Some(got) = stat_in(&img, dir) {
            assert_eq!(got, (0, 0, layout_mode()), "{dir}");
        }
    }
    // APPTAINER_FAKEROOT binds --fakeroot, as in Apptainer.
    let img2 = d.path().join("fr2.img");
    ok(&create_env(
        d.path(),
        &["-S", s(&img2)],
        &[("APPTAINER_FAKEROOT", "1")],
    ));
    if let Some(got) = stat_in(&img2, "/upper") {
        assert_eq!(got, (0, 0, layout_mode()));
    }
}

/// busybox_amd64.sif without its signature: an unsigned SIF built by Apptainer.
fn unsigned_sif(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::copy(sif_fixture("busybox_amd64.sif"), &p).expect("copy fixture");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    ok(&common::sifr(["sif", "del", "5", s(&p)]));
    p
}

fn oracle_out(oracle: &Path, args: &[&str]) -> Vec<u8> {
    let out = run(oracle, args);
    assert!(
        out.status.success(),
        "sif-oracle {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The overlay partition is appended to an unsigned SIF: the reference tool lists it as an
/// Ext3 overlay partition of the image's architecture in the rootfs group, sifr lists it
/// the same, both dump the same bytes (a clean ext3 file system of the asked size), and the
/// objects that were there dump as before. A second `overlay create` is refused, naming the
/// partition, and changes nothing.
#[test]
fn test_overlay_partition_added_to_sif() {
    require_unprivileged();
    let Some(oracle) = oracle() else { return };
    let d = tempdir();
    let sif = unsigned_sif(d.path(), "unsigned.sif");
    let before: Vec<Vec<u8>> = (1..=4)
        .map(|id| oracle_out(&oracle, &["dump", &id.to_string(), s(&sif)]))
        .collect();
    ok(&create(d.path(), &[s(&sif)]));
    assert_eq!(
        names(d.path()),
        ["unsigned.sif"],
        "temporary files left behind"
    );

    let list = String::from_utf8(oracle_out(&oracle, &["list", s(&sif)])).expect("utf-8");
    let row = list
        .lines()
        .find(|l| l.starts_with("5 "))
        .unwrap_or_else(|| panic!("no object 5:\n{list}"));
    assert!(row.contains("|1 "), "not in group 1: {row}");
    assert!(row.contains("FS (Ext3/Overlay/amd64)"), "{row}");
    let ours = common::sifr(["sif", "list", s(&sif)]);
    assert_eq!(String::from_utf8_lossy(&ours.stdout), list);
    let info = oracle_out(&oracle, &["info", "5", s(&sif)]);
    assert_eq!(
        common::sifr(["sif", "info", "5", s(&sif)]).stdout,
        info,
        "sif info differs"
    );

    let dumped = oracle_out(&oracle, &["dump", "5", s(&sif)]);
    assert_eq!(dumped.len() as u64, 64 * MIB);
    assert_eq!(common::sifr(["sif", "dump", "5", s(&sif)]).stdout, dumped);
    let ext3 = d.path().join("dumped.ext3");
    std::fs::write(&ext3, &dumped).expect("write dump");
    assert_fsck_clean(&ext3);
    if let Some(got) = stat_in(&ext3, "/upper") {
        assert_eq!(got, (ids().0, ids().1, layout_mode()));
    }
    std::fs::remove_file(&ext3).expect("rm");
    for (i, old) in before.iter().enumerate() {
        let id = (i + 1).to_string();
        assert!(
            &oracle_out(&oracle, &["dump", &id, s(&sif)]) == old,
            "object {id} changed"
        );
    }
    // The image still runs from its primary partition.
    let out = common::sifr(["inspect", s(&sif)]);
    ok(&out);

    let bytes = std::fs::read(&sif).expect("read");
    let out = create(d.path(), &[s(&sif)]);
    assert_eq!(out.status.code(), Some(255));
    assert_one_line_error(
        &out,
        &format!(
            "a writable overlay partition already exists in {} (ID: 5), delete it first with \"sifr sif del 5 {}\"",
            sif.display(),
            sif.display()
        ),
    );
    assert!(
        std::fs::read(&sif).expect("read") == bytes,
        "refused, yet changed"
    );
    assert_eq!(names(d.path()), ["unsigned.sif"]);
}

/// A SIF to which the reference tool added an ext3 overlay partition: sifr lists it as the
/// reference does and refuses to add a second one.
#[test]
fn test_overlay_partition_added_by_the_reference_is_recognised() {
    require_unprivileged();
    let Some(oracle) = oracle() else { return };
    let d = tempdir();
    let img = d.path().join("o.img");
    ok(&create(d.path(), &["--sparse", s(&img)]));
    let sif = unsigned_sif(d.path(), "ref.sif");
    oracle_out(
        &oracle,
        &[
            "add",
            "--datatype",
            "4",
            "--parttype",
            "4",
            "--partfs",
            "2",
            "--partarch",
            "2",
            "--groupid",
            "1",
            s(&sif),
            s(&img),
        ],
    );
    let list = oracle_out(&oracle, &["list", s(&sif)]);
    assert!(String::from_utf8_lossy(&list).contains("FS (Ext3/Overlay/amd64)"));
    assert_eq!(common::sifr(["sif", "list", s(&sif)]).stdout, list);
    let bytes = std::fs::read(&sif).expect("read");
    let out = create(d.path(), &[s(&sif)]);
    assert_eq!(out.status.code(), Some(255));
    assert_one_line_error(&out, "a writable overlay partition already exists in");
    assert!(std::fs::read(&sif).expect("read") == bytes);
}

/// A signed SIF is refused as Apptainer refuses it (the new partition would join the
/// signed group, and the signature would no longer verify: shown here with the reference
/// tool on a copy), and stays byte for byte as it was, still verifying.
#[test]
fn test_signed_sif_refused_and_still_verifies() {
    require_unprivileged();
    let Some(oracle) = oracle() else { return };
    let d = tempdir();
    let sif = unsigned_sif(d.path(), "signed.sif");
    let key = common::testdata().join("sif/keys/private.asc");
    oracle_out(&oracle, &["sign", "--key", s(&key), s(&sif)]);
    oracle_out(&oracle, &["verify", "--key", s(&key), s(&sif)]);
    // sifr's own verify, with the key in a private keyring.
    let keys = d.path().join("keys");
    let sifr_keys = |args: &[&str]| {
        Command::new(common::sifr_bin())
            .args(args)
            .env("SIFR_KEYSDIR", &keys)
            .stdin(Stdio::null())
            .output()
            .expect("run sifr")
    };
    ok(&sifr_keys(&["key", "import", s(&key)]));
    ok(&sifr_keys(&["verify", s(&sif)]));
    let entries = names(d.path());
    let bytes = std::fs::read(&sif).expect("read");

    let out = create(d.path(), &[s(&sif)]);
    assert_eq!(out.status.code(), Some(255));
    assert_one_line_error(
        &out,
        &format!(
            "SIF image {} is signed: could not add writable overlay",
            sif.display()
        ),
    );
    assert!(
        std::fs::read(&sif).expect("read") == bytes,
        "refused, yet changed"
    );
    assert_eq!(names(d.path()), entries);
    oracle_out(&oracle, &["verify", "--key", s(&key), s(&sif)]);
    ok(&sifr_keys(&["verify", s(&sif)]));

    // Why: an overlay partition added anyway breaks the signature.
    let img = d.path().join("o.img");
    ok(&create(d.path(), &["--sparse", s(&img)]));
    oracle_out(
        &oracle,
        &[
            "add",
            "--datatype",
            "4",
            "--parttype",
            "4",
            "--partfs",
            "2",
            "--partarch",
            "2",
            "--groupid",
            "1",
            s(&sif),
            s(&img),
        ],
    );
    let out = run(&oracle, ["verify", "--key", s(&key), s(&sif)]);
    assert!(
        !out.status.success(),
        "a signed group with a new object verified"
    );
    assert!(!sifr_keys(&["verify", s(&sif)]).status.success());
}

/// Every refusal: one line naming the cause, exit 255 (Apptainer's fatal status), and
/// nothing left behind: no image file, no temporary file next to it or layout directory,
/// an existing file unchanged byte for byte.
#[test]
fn test_refusals_leave_nothing_behind() {
    require_unprivileged();
    let d = tempdir();
    let tmp = d.path().join("tmp");
    std::fs::create_dir(&tmp).expect("tmp");
    let ext3 = d.path().join("exists.img");
    ok(&create(&tmp, &["--sparse", s(&ext3)]));
    let text = d.path().join("notes.txt");
    std::fs::write(&text, "not an image\n").expect("write");
    let sandbox = d.path().join("sandbox");
    std::fs::create_dir(&sandbox).expect("dir");
    let readonly = d.path().join("ro.sif");
    std::fs::copy(sif_fixture("busybox_amd64.sif"), &readonly).expect("copy");
    std::fs::set_permissions(&readonly, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    ok(&common::sifr(["sif", "del", "5", s(&readonly)]));
    std::fs::set_permissions(&readonly, std::fs::Permissions::from_mode(0o444)).expect("chmod");
    let new = d.path().join("new.img");
    let conf = d.path().join("no-mkfs.conf");
    std::fs::write(&conf, "binary path = /nonexistent\n").expect("conf");

    let snapshot = |p: &Path| std::fs::read(p).ok();
    let existing = [&ext3, &text, &readonly];
    let before: Vec<_> = existing.iter().map(|p| snapshot(p)).collect();
    let listing = names(d.path());

    let exists = format!("EXT3 overlay image {} already exists", ext3.display());
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--size", "1", s(&new)],
            "image size must be equal or greater than 64 MiB",
        ),
        (
            vec!["--size", "63", s(&new)],
            "image size must be equal or greater than 64 MiB",
        ),
        (
            vec!["--create-dir", "/../etc", s(&new)],
            "created outside of overlay layout",
        ),
        (vec![s(&ext3)], &exists),
        (vec![s(&text)], "destination image must be SIF image"),
        (vec![s(&sandbox)], "destination image must be SIF image"),
        (vec![s(&readonly)], "is not writable"),
    ];
    let missing_dir = d.path().join("missing/new.img");
    let mut cases = cases;
    cases.push((vec![s(&missing_dir)], "No such file or directory"));
    for (args, needle) in &cases {
        let out = create(&tmp, args);
        assert_eq!(out.status.code(), Some(255), "{args:?}: {out:?}");
        assert_one_line_error(&out, needle);
    }
    let out = create(&d.path().join("no-tmp"), &[s(&new)]);
    assert_eq!(out.status.code(), Some(255));
    assert_one_line_error(&out, "while creating temporary overlay directory in");
    // mkfs.ext3 missing: one line saying what to install.
    let out = Command::new(common::sifr_bin())
        .args([
            "-c",
            s(&conf),
            "overlay",
            "create",
            "--tmpdir",
            s(&tmp),
            s(&new),
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run sifr");
    assert_eq!(out.status.code(), Some(255));
    assert_one_line_error(&out, "mkfs.ext3 not found");
    assert_one_line_error(&out, "e2fsprogs");

    assert_eq!(
        names(&tmp),
        Vec::<String>::new(),
        "temporary layout left behind"
    );
    assert_eq!(names(d.path()), listing, "a file was left behind");
    let after: Vec<_> = existing.iter().map(|p| snapshot(p)).collect();
    assert!(before == after, "a refused image changed");
    assert!(names(&sandbox).is_empty());
}

/// `overlay` and `overlay create` have Apptainer's help: summary, usage line, options and
/// examples.
#[test]
fn test_overlay_help() {
    let out = common::sifr(["overlay", "--help"]);
    ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("Manage an EXT3 writable overlay image"),
        "{text}"
    );
    assert!(text.contains("sifr overlay create --help"), "{text}");
    assert!(text.contains("create"), "{text}");
    let out = common::sifr(["overlay", "create", "--help"]);
    ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("Create EXT3 writable overlay image"),
        "{text}"
    );
    assert!(
        text.contains("Usage:\n  sifr overlay create <options> image"),
        "{text}"
    );
    for flag in [
        "-s, --size",
        "-S, --sparse",
        "--create-dir",
        "-f, --fakeroot",
    ] {
        assert!(text.contains(flag), "{flag}: {text}");
    }
    assert!(
        text.contains("$ sifr overlay create --fakeroot --size 1024 /tmp/my_overlay.img"),
        "{text}"
    );
}

/// The owner of a file in an ext3 image, as debugfs reads it.
fn file_uid(img: &Path, path: &str) -> Option<u32> {
    let debugfs = e2fs("debugfs")?;
    let out = run(&debugfs, ["-R", &format!("stat {path}"), s(img)]);
    let text = String::from_utf8_lossy(&out.stdout);
    let at = text.find("User:")?;
    text[at + 5..].split_whitespace().next()?.parse().ok()
}

/// `sifr exec ARGS` with stdin closed.
fn exec(args: &[&str]) -> Output {
    let mut v = vec!["exec"];
    v.extend_from_slice(args);
    common::sifr(v)
}

fn stdout_of(out: &Output) -> String {
    ok(out);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What `overlay create` makes is what `--overlay` and `--writable` use: a conda-like
/// directory made with --create-dir is written in one run and read back in the next; an
/// overlay partition added to a SIF takes `--writable` writes that a later plain run reads
/// (the partition is a read-only layer without --writable, as Apptainer's); with
/// `--fakeroot` (both fakeroot modes) the image made with `--fakeroot` takes root's files.
#[test]
fn test_created_images_are_written_and_read_back() {
    require_unprivileged();
    let Some(_) = e2fs("debugfs") else { return };
    let d = tempdir();
    let busybox = sif_fixture("busybox_amd64.sif");
    let bb = s(&busybox);

    let img = d.path().join("conda.img");
    ok(&create(
        d.path(),
        &["--sparse", "--create-dir", "/opt/conda", s(&img)],
    ));
    let ov = s(&img);
    ok(&exec(&[
        "--overlay",
        ov,
        bb,
        "sh",
        "-c",
        "echo pkg > /opt/conda/x && mkdir /newdir",
    ]));
    assert_eq!(
        stdout_of(&exec(&["--overlay", ov, bb, "cat", "/opt/conda/x"])),
        "pkg\n"
    );
    assert_fsck_clean(&img);
    assert_eq!(file_uid(&img, "/upper/opt/conda/x"), Some(ids().0));

    let sif = unsigned_sif(d.path(), "with-overlay.sif");
    ok(&create(d.path(), &["--size", "64", s(&sif)]));
    ok(&exec(&[
        "--writable",
        s(&sif),
        "sh",
        "-c",
        "echo w > /written",
    ]));
    assert_eq!(stdout_of(&exec(&[s(&sif), "cat", "/written"])), "w\n");
    let o = exec(&[s(&sif), "sh", "-c", "echo x > /second"]);
    assert!(
        !o.status.success(),
        "a plain run wrote into the SIF's overlay"
    );

    let fr = d.path().join("fr.img");
    ok(&create(d.path(), &["--fakeroot", "--sparse", s(&fr)]));
    assert_eq!(
        stdout_of(&exec(&[
            "--fakeroot",
            "--overlay",
            s(&fr),
            bb,
            "sh",
            "-c",
            "echo r > /rootfile && id -u",
        ])),
        "0\n"
    );
    assert_eq!(file_uid(&fr, "/upper/rootfile"), Some(0));
    assert_fsck_clean(&fr);
}
