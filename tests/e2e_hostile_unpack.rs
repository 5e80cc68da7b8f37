//! Hostile images and definition files must write nothing outside their root (issue 10,
//! holes 1, 3, 4 and 7), as the unprivileged user: squashfs entries named with `/` or `..`, a
//! directory that is its own descendant, a file that claims more bytes than any disk holds,
//! `%files` destinations that climb out through `..` or through a symlink planted by the base
//! image, and `%files from STAGE` with an absolute source.
//!
//! The hostile squashfs images are made at run time: mksquashfs with uncompressed metadata and
//! placeholder names, then the name, inode reference or size bytes patched in place.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A scratch area: `tmp` is the TMPDIR sifr builds in, `outside` a directory no build may
/// write to, `work` where the images, definitions and outputs are.
struct Scratch {
    _dir: tempfile::TempDir,
    tmp: PathBuf,
    outside: PathBuf,
    work: PathBuf,
}

fn scratch() -> Scratch {
    let dir = tempdir();
    let base = std::fs::canonicalize(dir.path()).expect("canonicalize");
    let (tmp, outside, work) = (base.join("tmp"), base.join("outside"), base.join("work"));
    for d in [&tmp, &outside, &work] {
        std::fs::create_dir(d).expect("mkdir");
    }
    Scratch {
        _dir: dir,
        tmp,
        outside,
        work,
    }
}

impl Scratch {
    /// Runs sifr in `work` with TMPDIR set to `tmp`.
    fn sifr(&self, args: &[&str]) -> Output {
        Command::new(sifr_bin())
            .args(args)
            .current_dir(&self.work)
            .env("TMPDIR", &self.tmp)
            .env_remove("SIFR_TMPDIR")
            .env_remove("APPTAINER_TMPDIR")
            .stdin(Stdio::null())
            .output()
            .expect("run sifr")
    }

    /// Asserts nothing was written in `outside` nor next to the build directories in `tmp`.
    fn assert_nothing_outside(&self, what: &str) {
        let list = |d: &Path| -> Vec<String> {
            let mut v: Vec<String> = std::fs::read_dir(d)
                .expect("read_dir")
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        assert!(
            list(&self.outside).is_empty(),
            "{what}: written outside the image: {:?}",
            list(&self.outside)
        );
        let stray: Vec<String> = list(&self.tmp)
            .into_iter()
            .filter(|n| !n.starts_with("sifr-build-"))
            .collect();
        assert!(
            stray.is_empty(),
            "{what}: written next to the build directory: {stray:?}"
        );
    }
}

/// Asserts a failed build: non-zero exit and a last line `FATAL: ...` naming `needle`, with
/// no other error line.
fn assert_fatal(o: &Output, needles: &[&str], what: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{what}: the build succeeded: {err}");
    let last = err.lines().last().unwrap_or("");
    assert!(
        last.starts_with("FATAL:") && needles.iter().all(|n| last.contains(n)),
        "{what}: the last line does not name {needles:?}: {err}"
    );
    let fatal = err.lines().filter(|l| l.starts_with("FATAL")).count();
    assert_eq!(fatal, 1, "{what}: one error line expected: {err}");
}

/// mksquashfs with uncompressed metadata, so that names and references can be patched.
fn mksquashfs(tree: &Path, out: &Path) {
    let o = Command::new("mksquashfs")
        .arg(tree)
        .arg(out)
        .args(["-noI", "-noD", "-noF", "-noX", "-no-xattrs", "-noappend"])
        .args(["-quiet", "-no-progress", "-all-root"])
        .output()
        .expect("run mksquashfs");
    ok(&o);
}

/// The only position of `needle` in `hay`.
fn find_unique(hay: &[u8], needle: &[u8]) -> usize {
    let at: Vec<usize> = hay
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(
        at.len(),
        1,
        "{:?} found {} times",
        String::from_utf8_lossy(needle),
        at.len()
    );
    at[0]
}

/// Replaces the only occurrence of `from` with `to` (same length) in the file at `path`.
fn patch_bytes(path: &Path, from: &[u8], to: &[u8]) {
    assert_eq!(from.len(), to.len());
    let mut img = std::fs::read(path).expect("read image");
    let at = find_unique(&img, from);
    img[at..at + to.len()].copy_from_slice(to);
    std::fs::write(path, img).expect("write image");
}

/// A squashfs image whose root holds `payload` (a file) under the hostile name `name`.
fn image_with_name(work: &Path, file: &str, name: &str) -> PathBuf {
    let tree = work.join(format!("{file}.tree"));
    std::fs::create_dir_all(tree.join("etc")).expect("mkdir");
    std::fs::write(tree.join("etc/hostname"), "hostile\n").expect("write");
    let placeholder = "Q".repeat(name.len());
    std::fs::write(
        tree.join(&placeholder),
        "payload written by a hostile image\n",
    )
    .expect("write");
    let img = work.join(file);
    mksquashfs(&tree, &img);
    patch_bytes(&img, placeholder.as_bytes(), name.as_bytes());
    img
}

/// The SIF code of this machine's architecture (Apptainer's numbering).
fn sif_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "2",
        "aarch64" => "4",
        a => panic!("no SIF architecture code known for {a}"),
    }
}

/// Wraps a squashfs image into a SIF as its primary system partition.
fn wrap_in_sif(s: &Scratch, sqfs: &Path) -> PathBuf {
    let sif = sqfs.with_extension("sif");
    let (sif_s, sq_s) = (sif.to_str().expect("utf8"), sqfs.to_str().expect("utf8"));
    ok(&s.sifr(&["sif", "new", sif_s]));
    ok(&s.sifr(&[
        "sif",
        "add",
        "--datatype",
        "4",
        "--partfs",
        "1",
        "--parttype",
        "2",
        "--partarch",
        sif_arch(),
        sif_s,
        sq_s,
    ]));
    sif
}

/// Every build path that unpacks `sqfs`: to a sandbox, to a SIF, and `Bootstrap: localimage`
/// from it and from a SIF wrapping it. Each must fail naming `needle`, write nothing outside,
/// and (with `quick`) end within a few seconds.
fn assert_every_build_refuses(s: &Scratch, sqfs: &Path, needles: &[&str], quick: bool) {
    let sif = wrap_in_sif(s, sqfs);
    let (sq, sf) = (sqfs.to_str().expect("utf8"), sif.to_str().expect("utf8"));
    let def_sq = s.work.join("from-sqfs.def");
    let def_sif = s.work.join("from-sif.def");
    std::fs::write(&def_sq, format!("Bootstrap: localimage\nFrom: {sq}\n")).expect("def");
    std::fs::write(&def_sif, format!("Bootstrap: localimage\nFrom: {sf}\n")).expect("def");
    let (dq, ds) = (
        def_sq.to_str().expect("utf8"),
        def_sif.to_str().expect("utf8"),
    );
    let cases: [(&str, Vec<&str>); 5] = [
        (
            "sqfs to sandbox",
            vec!["build", "-F", "--sandbox", "out", sq],
        ),
        ("sqfs to sif", vec!["build", "-F", "out.sif", sq]),
        (
            "sif to sandbox",
            vec!["build", "-F", "--sandbox", "out", sf],
        ),
        (
            "localimage sqfs",
            vec!["build", "-F", "--sandbox", "out", dq],
        ),
        ("localimage sif", vec!["build", "-F", "out.sif", ds]),
    ];
    for (what, args) in cases {
        let start = Instant::now();
        let o = s.sifr(&args);
        let took = start.elapsed();
        // The line names the image that was unpacked, and what in it was refused.
        let image = if what.contains("sif") && !what.starts_with("sqfs") {
            sf
        } else {
            sq
        };
        let mut wanted = needles.to_vec();
        wanted.push(image);
        assert_fatal(&o, &wanted, what);
        s.assert_nothing_outside(what);
        assert!(
            !s.work.join("out").exists() && !s.work.join("out.sif").exists(),
            "{what}: an output was left"
        );
        if quick {
            assert!(took < Duration::from_secs(20), "{what}: took {took:?}");
        }
    }
}

#[test]
fn test_absolute_entry_name_is_refused() {
    require_unprivileged();
    let s = scratch();
    let target = s.outside.join("pwned");
    let name = target.to_str().expect("utf8");
    let img = image_with_name(&s.work, "abs.sqfs", name);
    assert_every_build_refuses(&s, &img, &[name], false);
    assert!(!target.exists());
}

#[test]
fn test_dotdot_entry_name_is_refused() {
    require_unprivileged();
    let s = scratch();
    // From the build directory's rootfs (TMPDIR/sifr-build-*/rootfs), `../../escaped` is
    // TMPDIR/escaped.
    let img = image_with_name(&s.work, "dotdot.sqfs", "../../escaped");
    assert_every_build_refuses(&s, &img, &["\"../../escaped\""], false);
    assert!(!s.tmp.join("escaped").exists());
    // And a name that is exactly `..`.
    let img = image_with_name(&s.work, "up.sqfs", "..");
    assert_every_build_refuses(&s, &img, &["\"..\""], false);
}

/// A squashfs image where directory /CYCLEPARENT holds a directory entry CYCLECHILD whose
/// inode reference is CYCLEPARENT itself, next to a 256 KiB file (unpacking the loop level
/// by level would write that file again at every level).
fn loop_image(work: &Path) -> PathBuf {
    let tree = work.join("loop.tree");
    std::fs::create_dir_all(tree.join("CYCLEPARENT/CYCLECHILD")).expect("mkdir");
    let data: Vec<u8> = (0..256 * 1024u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(tree.join("CYCLEPARENT/data"), data).expect("write");
    let img = work.join("loop.sqfs");
    mksquashfs(&tree, &img);
    let mut b = std::fs::read(&img).expect("read");
    let u16_at = |b: &[u8], p: usize| u16::from_le_bytes([b[p], b[p + 1]]);
    let u32_at = |b: &[u8], p: usize| u32::from_le_bytes([b[p], b[p + 1], b[p + 2], b[p + 3]]);
    // The root lists only CYCLEPARENT: its listing header (count, start block, base inode)
    // sits just before the entry (offset, inode delta, type, name size, name).
    let parent_entry = find_unique(&b, b"CYCLEPARENT") - 8;
    let parent_header = parent_entry - 12;
    let start = u32_at(&b, parent_header + 4);
    let parent_ino =
        u32_at(&b, parent_header + 8) as i64 + i64::from(u16_at(&b, parent_entry + 2) as i16);
    let offset = u16_at(&b, parent_entry);
    // CYCLEPARENT's listing: CYCLECHILD comes before `data` (sorted), first in its header.
    let child_entry = find_unique(&b, b"CYCLECHILD") - 8;
    let child_header = child_entry - 12;
    assert_eq!(u16_at(&b, child_entry + 4), 1, "CYCLECHILD is a directory");
    // Every inode of this small image is in the first metadata block; the header's base is
    // kept (the `data` entry shares it), only CYCLECHILD's offset and delta change.
    assert_eq!(u32_at(&b, child_header + 4), start, "one inode block");
    let delta = parent_ino - i64::from(u32_at(&b, child_header + 8));
    let delta = i16::try_from(delta).expect("small delta");
    b[child_entry..child_entry + 2].copy_from_slice(&offset.to_le_bytes());
    b[child_entry + 2..child_entry + 4].copy_from_slice(&delta.to_le_bytes());
    std::fs::write(&img, b).expect("write");
    img
}

#[test]
fn test_directory_loop_is_refused_quickly() {
    require_unprivileged();
    let s = scratch();
    let img = loop_image(&s.work);
    assert_every_build_refuses(&s, &img, &["/CYCLEPARENT/CYCLECHILD", "loop"], true);
}

#[test]
fn test_file_bigger_than_the_disk_is_refused() {
    require_unprivileged();
    let s = scratch();
    let tree = s.work.join("big.tree");
    std::fs::create_dir_all(&tree).expect("mkdir");
    // A sparse file: mksquashfs stores it as holes with a 64-bit size, patched to 1 PiB.
    let f = std::fs::File::create(tree.join("huge")).expect("create");
    f.set_len(1_060_921).expect("set_len");
    drop(f);
    let img = s.work.join("big.sqfs");
    mksquashfs(&tree, &img);
    patch_bytes(
        &img,
        &1_060_921u64.to_le_bytes(),
        &(1u64 << 50).to_le_bytes(),
    );
    assert_every_build_refuses(&s, &img, &["/huge", "free"], true);
}

/// A base sandbox with planted symlinks and a distinctive /etc/passwd.
fn base_sandbox(s: &Scratch) -> PathBuf {
    let base = s.work.join("base");
    std::fs::create_dir_all(base.join("opt")).expect("mkdir");
    std::fs::create_dir_all(base.join("etc")).expect("mkdir");
    std::fs::write(
        base.join("etc/passwd"),
        "root:x:0:0:stage-one-marker:/root:/bin/sh\n",
    )
    .expect("passwd");
    // An absolute link to the host directory no build may write to.
    std::os::unix::fs::symlink(&s.outside, base.join("opt/link")).expect("symlink");
    // A relative link climbing far above any root.
    std::os::unix::fs::symlink("../../../../../../../../../..", base.join("opt/up"))
        .expect("symlink");
    std::os::unix::fs::symlink("/etc/passwd", base.join("etc/pw-link")).expect("symlink");
    std::fs::write(s.work.join("data.txt"), "payload\n").expect("data");
    base
}

#[test]
fn test_files_destinations_stay_inside_the_image() {
    require_unprivileged();
    let s = scratch();
    base_sandbox(&s);
    let def = "Bootstrap: localimage\nFrom: base\n\n%files\n    data.txt ../../escape\n    \
               data.txt /opt/link/through-abs\n    data.txt /opt/up/through-rel\n    \
               data.txt /opt/link/new/dir/deep\n";
    std::fs::write(s.work.join("files.def"), def).expect("def");
    ok(&s.sifr(&["build", "--sandbox", "out", "files.def"]));
    s.assert_nothing_outside("%files");
    assert!(!s.tmp.join("escape").exists());
    let out = s.work.join("out");
    let inside = |p: &Path| std::fs::read_to_string(out.join(p)).unwrap_or_default();
    // `..` clamps at the root.
    assert_eq!(inside(Path::new("escape")), "payload\n");
    // The absolute link resolves inside the image, its missing directories made there.
    let rel = s.outside.strip_prefix("/").expect("absolute");
    assert_eq!(inside(&rel.join("through-abs")), "payload\n");
    assert_eq!(inside(&rel.join("new/dir/deep")), "payload\n");
    // The relative link climbs no higher than the root.
    assert_eq!(inside(Path::new("through-rel")), "payload\n");
    // The links themselves are left as they were.
    assert_eq!(
        std::fs::read_link(out.join("opt/link")).expect("link"),
        s.outside
    );
}

#[test]
fn test_files_from_stage_reads_the_stage_not_the_host() {
    require_unprivileged();
    let s = scratch();
    base_sandbox(&s);
    let def = "Bootstrap: localimage\nFrom: base\nStage: one\n\n\
               Bootstrap: scratch\nStage: two\n\n%files from one\n    \
               /etc/passwd /copied-passwd\n    /etc/pw-link /copied-link\n    \
               /etc/pass* /globbed/\n";
    std::fs::write(s.work.join("stages.def"), def).expect("def");
    ok(&s.sifr(&["build", "--sandbox", "out", "stages.def"]));
    let out = s.work.join("out");
    let read = |p: &str| std::fs::read_to_string(out.join(p)).unwrap_or_default();
    let stage = "root:x:0:0:stage-one-marker:/root:/bin/sh\n";
    assert_eq!(
        read("copied-passwd"),
        stage,
        "absolute source from the stage"
    );
    // A symlink named as the source is followed inside the stage (Apptainer dereferences
    // the source itself), to the stage's file.
    assert_eq!(
        read("copied-link"),
        stage,
        "symlinked source from the stage"
    );
    assert_eq!(
        read("globbed/passwd"),
        stage,
        "globbed source from the stage"
    );
    s.assert_nothing_outside("%files from");
}
