//! `sifr sif` on bad input: every malformed image, missing file or bad flag gives one
//! `FATAL:` line on stderr naming the file, and exit status 255. Also the write commands'
//! basic effects, without the oracle.

mod common;

use std::path::{Path, PathBuf};

use common::{assert_one_line_error, sif_fixture, sifr, tempdir};

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A copy of `one-group.sif` with `edit` applied, in `dir`.
fn corrupt(dir: &Path, name: &str, edit: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
    let mut b = std::fs::read(sif_fixture("one-group.sif")).expect("read fixture");
    edit(&mut b);
    let p = dir.join(name);
    std::fs::write(&p, b).expect("write");
    p
}

fn put_i64(b: &mut [u8], at: usize, v: i64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

fn assert_fatal(args: &[&str], path: &Path, needle: &str) {
    let out = sifr(args);
    assert_eq!(out.status.code(), Some(255), "{args:?}");
    assert_one_line_error(&out, needle);
    let line = String::from_utf8_lossy(&out.stderr);
    assert!(line.starts_with("FATAL:   "), "{line}");
    assert!(
        line.contains(&format!("({})", path.display())),
        "error does not name {}: {line}",
        path.display()
    );
    assert!(out.stdout.is_empty(), "{args:?} printed to stdout");
}

#[test]
fn test_malformed_images_fail_with_one_line() {
    let dir = tempdir();
    let d = dir.path();
    let first = 4096; // descriptor slot 0
    let cases: Vec<(PathBuf, &str)> = vec![
        (
            corrupt(d, "truncated.sif", |b| b.truncate(100)),
            "truncated file",
        ),
        (
            corrupt(d, "magic.sif", |b| b[32..41].copy_from_slice(b"NOT_MAGIC")),
            "wrong magic",
        ),
        (
            corrupt(d, "version.sif", |b| b[42] = b'9'),
            "unsupported SIF version",
        ),
        (
            corrupt(d, "table.sif", |b| put_i64(b, 96, 1 << 40)),
            "descriptor table",
        ),
        (
            corrupt(d, "short.sif", |b| b.truncate(20000)),
            "outside the file",
        ),
        (
            corrupt(d, "absurd.sif", |b| put_i64(b, 88, 1 << 50)),
            "absurd descriptor count",
        ),
        (
            corrupt(d, "range.sif", |b| put_i64(b, first + 17, 1 << 30)),
            "object 1",
        ),
        (
            corrupt(d, "overlap.sif", |b| put_i64(b, first + 585 + 17, 32768)),
            "overlap",
        ),
        (
            corrupt(d, "type.sif", |b| {
                b[first..first + 4].copy_from_slice(&0x5000i32.to_le_bytes())
            }),
            "unknown data type",
        ),
        (
            corrupt(d, "free.sif", |b| put_i64(b, 80, 49)),
            "free descriptor count",
        ),
        (d.join("missing.sif"), "No such file"),
    ];
    for (path, needle) in &cases {
        let p = s(path);
        assert_fatal(&["sif", "list", p], path, needle);
        assert_fatal(&["sif", "header", p], path, needle);
        assert_fatal(&["sif", "info", "1", p], path, needle);
        assert_fatal(&["sif", "dump", "1", p], path, needle);
        assert_fatal(&["sif", "del", "1", p], path, needle);
        assert_fatal(&["sif", "setprim", "2", p], path, needle);
    }
}

#[test]
fn test_bad_object_ids_and_commands() {
    let img = sif_fixture("one-group.sif");
    let p = s(&img);
    assert_fatal(&["sif", "info", "9", p], &img, "no object with ID 9");
    assert_fatal(&["sif", "dump", "0", p], &img, "invalid object ID 0");
    let empty = sif_fixture("empty.sif");
    assert_fatal(
        &["sif", "info", "1", s(&empty)],
        &empty,
        "no objects in image",
    );
    // Not an ID: clap's error, one line, exit 1 as a usage error of Apptainer's.
    let out = sifr(["sif", "info", "x", p]);
    assert_eq!(out.status.code(), Some(1));
    assert_one_line_error(&out, "invalid value");
}

#[test]
fn test_write_commands_and_their_errors() {
    let dir = tempdir();
    let img = dir.path().join("new.sif");
    let p = s(&img);
    let out = sifr(["sif", "new", p]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&img).expect("meta").permissions().mode();
    assert_eq!(mode & 0o111, 0o111, "a new SIF is executable");
    let obj = dir.path().join("obj.bin");
    std::fs::write(&obj, b"hello").expect("write");
    let o = s(&obj);

    assert_fatal(&["sif", "add", p, o], &img, "--datatype is required");
    assert_fatal(
        &["sif", "add", "--datatype", "4", p, o],
        &img,
        "--partfs, --parttype and --partarch must be passed",
    );
    assert_fatal(
        &[
            "sif",
            "add",
            "--datatype",
            "4",
            "--partfs",
            "1",
            "--parttype",
            "1",
            "--partarch",
            "99",
            p,
            o,
        ],
        &img,
        "unknown architecture",
    );
    assert_fatal(
        &[
            "sif",
            "add",
            "--datatype",
            "5",
            "--signhash",
            "1",
            "--signentity",
            "abc",
            p,
            o,
        ],
        &img,
        "odd length",
    );
    assert_fatal(
        &[
            "sif",
            "add",
            "--datatype",
            "5",
            "--signhash",
            "9",
            "--signentity",
            "ab",
            p,
            o,
        ],
        &img,
        "invalid hash type",
    );
    assert_fatal(
        &[
            "sif",
            "add",
            "--datatype",
            "5",
            "--signhash",
            "1",
            "--signentity",
            "abcd",
            p,
            o,
        ],
        &img,
        "got 2, want 20",
    );
    assert_fatal(
        &["sif", "add", "--datatype", "9", p, o],
        &img,
        "--sbomformat must be passed",
    );
    assert_fatal(
        &["sif", "add", "--datatype", "9", "--sbomformat", "x", p, o],
        &img,
        "invalid SBOM format",
    );
    assert_fatal(
        &["sif", "add", "--datatype", "7", "--link", "0", p, o],
        &img,
        "--link",
    );
    let missing = dir.path().join("nope.bin");
    assert_fatal(
        &["sif", "add", "--datatype", "7", p, s(&missing)],
        &missing,
        "No such file",
    );

    let ok = |args: &[&str]| {
        let out = sifr(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    ok(&[
        "sif",
        "add",
        "--datatype",
        "0x7",
        "--filename",
        "hello",
        p,
        o,
    ]);
    ok(&[
        "sif",
        "add",
        "--datatype",
        "4",
        "--partfs",
        "4",
        "--parttype",
        "2",
        "--partarch",
        "2",
        "--groupid",
        "1",
        p,
        o,
    ]);
    assert_fatal(
        &[
            "sif",
            "add",
            "--datatype",
            "4",
            "--partfs",
            "4",
            "--parttype",
            "2",
            "--partarch",
            "2",
            p,
            o,
        ],
        &img,
        "already contains a primary partition",
    );
    assert_eq!(ok(&["sif", "dump", "1", p]), b"hello");
    let list = String::from_utf8(ok(&["sif", "list", p])).expect("utf8");
    assert!(
        list.contains("1    |NONE    |NONE    |32176-32181               |Generic/Raw\n"),
        "{list}"
    );
    assert!(
        list.contains(
            "2    |1       |NONE    |32768-32773               |FS (Raw/*System/amd64)\n"
        ),
        "{list}"
    );
    let header = String::from_utf8(ok(&["sif", "header", p])).expect("utf8");
    assert!(header.contains("Primary Architecture: amd64\n"), "{header}");
    assert_fatal(&["sif", "setprim", "1", p], &img, "not a partition");
    ok(&["sif", "del", "2", p]);
    let header = String::from_utf8(ok(&["sif", "header", p])).expect("utf8");
    assert!(!header.contains("Primary Architecture"), "{header}");
    assert!(header.contains("Descriptors Free:   47\n"), "{header}");
    assert_fatal(&["sif", "del", "2", p], &img, "no object with ID 2");
}
