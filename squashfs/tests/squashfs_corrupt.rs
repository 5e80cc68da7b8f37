//! Phase A robustness: flipped and truncated bytes in copies of real images must give typed
//! errors (or harmless wrong data), never a panic, a hang or a huge allocation.

mod common;

use std::collections::HashSet;
use std::fs::File;
use std::path::Path;

use common::*;
use sifr_squashfs::{FileType, Options, SqfsError, SquashFs};

/// Small source tree: fragments, multi-block file, xattrs, symlink, a 300-entry directory.
fn small_tree(root: &Path) {
    std::fs::create_dir_all(root.join("d/many")).expect("mkdir");
    std::fs::write(root.join("a"), bytes(1, 3000, true)).expect("write");
    std::fs::write(root.join("b"), bytes(2, 3 * 4096 + 100, true)).expect("write");
    std::fs::write(root.join("d/c"), b"c\n").expect("write");
    for i in 0..300 {
        std::fs::write(root.join(format!("d/many/n{i:03}")), b"").expect("write");
    }
    std::os::unix::fs::symlink("a", root.join("l")).expect("symlink");
    std::fs::hard_link(root.join("a"), root.join("d/a2")).expect("link");
    let st = std::process::Command::new("setfattr")
        .args(["-n", "user.x", "-v", "value"])
        .arg(root.join("a"))
        .status();
    assert!(st.is_ok_and(|s| s.success()));
}

/// Visits everything reachable, ignoring errors; returns how many operations failed.
fn walk_all(fs: &SquashFs) -> usize {
    let mut errors = 0;
    let mut seen = HashSet::new();
    let mut stack = vec![fs.root()];
    let mut buf = vec![0u8; 5000];
    while let Some(ino) = stack.pop() {
        if !seen.insert(ino) || seen.len() > 10_000 {
            continue;
        }
        let Ok(a) = fs.stat(ino) else {
            errors += 1;
            continue;
        };
        errors += usize::from(fs.listxattr(ino).is_err());
        errors += usize::from(fs.getxattr(ino, b"user.x").is_err());
        match a.kind {
            FileType::Regular => {
                let mut off = 0u64;
                // Bounded: a corrupt size may be huge; read at most 64 chunks.
                for _ in 0..64 {
                    match fs.read(ino, off, &mut buf) {
                        Ok(0) => break,
                        Ok(n) => off += n as u64,
                        Err(_) => {
                            errors += 1;
                            break;
                        }
                    }
                }
                errors += usize::from(fs.read(ino, a.size / 2, &mut buf).is_err());
            }
            FileType::Symlink => errors += usize::from(fs.readlink(ino).is_err()),
            FileType::Directory => {
                let mut names = Vec::new();
                let r = fs.readdir(ino, 0, &mut |e| {
                    names.push((e.name.to_vec(), e.ino, e.next_cookie));
                    names.len() < 1000
                });
                errors += usize::from(r.is_err());
                for (name, child, cookie) in names.iter().take(20) {
                    errors += usize::from(fs.lookup(ino, name).is_err());
                    errors += usize::from(fs.readdir(ino, *cookie, &mut |_| false).is_err());
                    stack.push(*child);
                }
                stack.extend(names.iter().skip(20).map(|n| n.1));
            }
            _ => {}
        }
    }
    errors
}

fn flip_all(comp: &str, step: usize) {
    let dir = tempdir();
    let src = dir.path().join("src");
    small_tree(&src);
    let img = dir.path().join("img.sqfs");
    mksquashfs(&src, &img, comp, &["-b", "4096"]);
    let orig = std::fs::read(&img).expect("read image");
    let clean = SquashFs::open(File::open(&img).expect("open"), 0).expect("clean image opens");
    assert_eq!(
        walk_all(&clean),
        0,
        "{comp}: the clean image walks without errors"
    );
    let bad = dir.path().join("bad.sqfs");
    let (mut open_err, mut walk_err, mut runs) = (0, 0, 0);
    // Every byte of the superblock, then every `step`-th byte of the rest.
    let positions = (0..96).chain((96..orig.len()).step_by(step));
    for pos in positions {
        let masks: &[u8] = if pos < 96 {
            &[0xff, 0x01, 0x80]
        } else {
            &[0xff]
        };
        for &mask in masks {
            let mut img2 = orig.clone();
            img2[pos] ^= mask;
            std::fs::write(&bad, &img2).expect("write copy");
            let opts = Options {
                data_cache_bytes: 1 << 20,
                meta_cache_bytes: 1 << 18,
                ..Options::default()
            };
            runs += 1;
            match SquashFs::open_with(File::open(&bad).expect("open copy"), 0, opts) {
                Err(_) => open_err += 1,
                Ok(fs) => walk_err += usize::from(walk_all(&fs) > 0),
            }
        }
    }
    eprintln!(
        "{comp}: {runs} corrupt copies: {open_err} refused at open, {walk_err} with errors while walking"
    );
    assert!(
        open_err > 0 && walk_err > 0,
        "{comp}: corruption was never detected"
    );
}

#[test]
fn test_flipped_bytes_gzip() {
    flip_all("gzip", 13);
}
#[test]
fn test_flipped_bytes_zstd() {
    flip_all("zstd", 41);
}
#[test]
fn test_flipped_bytes_xz() {
    flip_all("xz", 41);
}
#[test]
fn test_flipped_bytes_lz4() {
    flip_all("lz4", 41);
}
#[test]
fn test_flipped_bytes_lzo() {
    flip_all("lzo", 41);
}

/// Uncompressed metadata exposes the structures themselves (no checksum to hide behind).
#[test]
fn test_flipped_bytes_uncompressed() {
    let dir = tempdir();
    let src = dir.path().join("src");
    small_tree(&src);
    let img = dir.path().join("img.sqfs");
    mksquashfs(
        &src,
        &img,
        "gzip",
        &["-b", "4096", "-noI", "-noD", "-noF", "-noX"],
    );
    let orig = std::fs::read(&img).expect("read image");
    let bad = dir.path().join("bad.sqfs");
    let mut detected = 0;
    for pos in (0..orig.len()).step_by(17) {
        for mask in [0xffu8, 0x10] {
            let mut img2 = orig.clone();
            img2[pos] ^= mask;
            std::fs::write(&bad, &img2).expect("write copy");
            match SquashFs::open(File::open(&bad).expect("open copy"), 0) {
                Err(_) => detected += 1,
                Ok(fs) => detected += usize::from(walk_all(&fs) > 0),
            }
        }
    }
    assert!(detected > 100, "only {detected} corruptions detected");
}

/// Every truncation is refused at open with a `Truncated` error naming the sizes.
#[test]
fn test_truncated_images() {
    let dir = tempdir();
    let src = dir.path().join("src");
    small_tree(&src);
    let img = dir.path().join("img.sqfs");
    mksquashfs(&src, &img, "gzip", &[]);
    let orig = std::fs::read(&img).expect("read image");
    let clean = SquashFs::open(File::open(&img).expect("open"), 0).expect("opens");
    drop(clean);
    let bad = dir.path().join("short.sqfs");
    // mksquashfs pads to 4 KiB; bytes_used is the real end.
    let used = u64::from_le_bytes(orig[40..48].try_into().expect("8 bytes")) as usize;
    for len in (0..used).step_by(97).chain([used - 1]) {
        std::fs::write(&bad, &orig[..len]).expect("write copy");
        match SquashFs::open(File::open(&bad).expect("open copy"), 0) {
            Err(SqfsError::Truncated { .. }) => {}
            other => panic!("truncated to {len}: want Truncated, got {other:?}"),
        }
    }
    // At an offset inside a bigger file (as in a SIF), the same rule holds.
    let mut padded = vec![0u8; 4096];
    padded.extend_from_slice(&orig[..used - 10]);
    std::fs::write(&bad, &padded).expect("write copy");
    assert!(matches!(
        SquashFs::open(File::open(&bad).expect("open"), 4096),
        Err(SqfsError::Truncated { .. })
    ));
}
