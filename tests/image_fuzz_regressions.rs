//! Every input saved in `tests/fuzz-regressions/squashfs_read/` and `ext_read/` (crashes the
//! fuzzers once found, and hand-made seeds) goes through the same code as the fuzz targets
//! `squashfs_read` and `ext_read` (`sifr_fuse::fuzzing`) without a panic, and the hand-made
//! seeds do what their names say.

use sifr_fuse::fuzzing::{Walk, ext_open_and_walk, squashfs_open_and_walk};

/// (file name, bytes), embedded by build.rs.
const SQUASHFS: &[(&str, &[u8])] = include!(concat!(
    env!("OUT_DIR"),
    "/fuzz_regressions_squashfs_read.rs"
));
const EXT: &[(&str, &[u8])] = include!(concat!(env!("OUT_DIR"), "/fuzz_regressions_ext_read.rs"));

type Open = fn(&[u8]) -> Result<Walk, String>;

/// Runs every case through `open`; a panic fails the test naming the input.
fn replay(cases: &[(&str, &[u8])], open: Open, dir: &str) {
    assert!(
        cases.len() >= 4,
        "expected the seeds in tests/fuzz-regressions/{dir}, found {}",
        cases.len()
    );
    for (name, data) in cases {
        let r = std::panic::catch_unwind(|| open(data));
        assert!(r.is_ok(), "regression input {dir}/{name} panicked");
    }
}

fn case(cases: &'static [(&str, &[u8])], name: &str) -> &'static [u8] {
    cases
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, d)| *d)
        .unwrap_or_else(|| panic!("seed {name} missing"))
}

#[test]
fn test_squashfs_fuzz_regressions_do_not_panic() {
    replay(SQUASHFS, squashfs_open_and_walk, "squashfs_read");
}

#[test]
fn test_ext_fuzz_regressions_do_not_panic() {
    replay(EXT, ext_open_and_walk, "ext_read");
}

#[test]
fn test_squashfs_seeds_are_what_they_say() {
    let w = squashfs_open_and_walk(case(SQUASHFS, "valid-gzip.sqfs")).expect("valid seed opens");
    // /, aa, aa/sub, bb; file, link, fifo, aa/up, aa/sub/z, bb/big.
    assert_eq!((w.dirs, w.entries), (4, 9), "{w:?}");
    assert_eq!((w.files, w.symlinks), (3, 2), "{w:?}");
    assert_eq!(w.read_bytes, 6 + 2 + 5000, "{w:?}");
    assert_eq!((w.errors, w.odd_names, w.cut_short), (0, 0, false), "{w:?}");
    for bad in ["truncated.sqfs", "bad-magic.sqfs"] {
        assert!(
            squashfs_open_and_walk(case(SQUASHFS, bad)).is_err(),
            "{bad} opened"
        );
    }
    // A directory named `..` (made from `aa`): refused by the reader, or at most walked as a
    // plain directory; never a way up.
    let w = squashfs_open_and_walk(case(SQUASHFS, "dotdot-entry.sqfs")).expect("opens");
    assert!(w.errors > 0 || w.odd_names == 1, "{w:?}");
    assert_eq!(w.revisits, 0, "{w:?}");
    assert!(!w.cut_short, "{w:?}");
}

#[test]
fn test_ext_seeds_are_what_they_say() {
    let w = ext_open_and_walk(case(EXT, "valid.ext4")).expect("valid seed opens");
    // /, aa, aa/sub, bb, lost+found; file, link, aa/up, aa/sub/z, bb/big.
    assert_eq!((w.dirs, w.files, w.symlinks), (5, 3, 2), "{w:?}");
    assert_eq!(w.read_bytes, 6 + 2 + 5000, "{w:?}");
    assert_eq!((w.errors, w.odd_names, w.cut_short), (0, 0, false), "{w:?}");
    for bad in ["truncated.ext4", "bad-magic.ext4"] {
        assert!(ext_open_and_walk(case(EXT, bad)).is_err(), "{bad} opened");
    }
    // A directory entry renamed `..` (from `aa`): the listing drops `.` and `..` names, so
    // that directory and its subtree are not reached, and nothing loops.
    let w = ext_open_and_walk(case(EXT, "dotdot-entry.ext2")).expect("opens");
    assert_eq!((w.dirs, w.odd_names, w.revisits), (3, 0, 0), "{w:?}");
    assert!(!w.cut_short, "{w:?}");
}
