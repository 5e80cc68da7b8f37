//! The fuzzing entry point of layer unpacking, shared by the `fuzz/` target `layer_apply`
//! and the regression test: apply arbitrary bytes as a layer (as given, and wrapped in gzip)
//! to a fresh `root/` inside a scratch directory that also holds a few decoys (a file, a
//! directory with a file, a symlink to `/`), then check that nothing beside `root/` changed:
//! a layer never touches anything outside its destination. Panics only when it did.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::apply::{ApplyError, ApplyOptions, ApplyReport, apply_layer_with, decompress};
use super::inroot::Resolver;

/// Decompressed layers bigger than this are not applied (a few bytes of zstd can claim
/// gigabytes; disk use in proportion to file data is a known limit, not a finding).
const MAX_UNPACKED: u64 = 16 << 20;

/// What applying one input did: the result as given and gzip-wrapped, or None when the input
/// was not applied (it unpacks to more than [`MAX_UNPACKED`]).
#[derive(Debug)]
pub struct Outcome {
    pub plain: Option<Result<ApplyReport, ApplyError>>,
    pub gzip: Option<Result<ApplyReport, ApplyError>>,
}

/// Applies `data` as given and gzip-wrapped, each into a fresh root, checking each time that
/// nothing outside the root changed.
pub fn apply_and_check(data: &[u8]) -> Outcome {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let wrapped = gz
        .write_all(data)
        .and_then(|()| gz.finish())
        .expect("gzip into memory");
    Outcome {
        plain: apply_confined(data),
        gzip: apply_confined(&wrapped),
    }
}

/// Applies `layer` into `root/` of a new scratch directory and checks the rest of it.
pub fn apply_confined(layer: &[u8]) -> Option<Result<ApplyReport, ApplyError>> {
    if unpacked_size(layer) > MAX_UNPACKED {
        return None;
    }
    let scratch = tempfile::Builder::new()
        .prefix("sifr-fuzz-layer.")
        .tempdir()
        .expect("scratch directory");
    let top = scratch.path();
    let root = top.join("root");
    std::fs::create_dir(&root).expect("mkdir root");
    std::fs::write(top.join("canary"), b"outside").expect("decoy file");
    std::fs::create_dir(top.join("dir")).expect("decoy directory");
    std::fs::write(top.join("dir/x"), b"outside").expect("decoy file");
    std::os::unix::fs::symlink("/", top.join("slash")).expect("decoy symlink");
    let before = snapshot(top);
    let options = ApplyOptions {
        // The fuzzer may run as root (CI): owners are not what is under test.
        preserve_ownership: false,
        xattrs: true,
        resolver: Resolver::Auto,
    };
    let result = apply_layer_with(layer, &root, &options);
    let after = snapshot(top);
    assert_eq!(
        before, after,
        "applying the layer changed something outside its root ({result:?})"
    );
    assert!(
        std::fs::symlink_metadata(&root).is_ok_and(|m| m.is_dir()),
        "the root is no longer a directory"
    );
    make_removable(&root);
    Some(result)
}

/// Bytes the layer unpacks to (counting stops past the cap); 0 when it does not decompress.
fn unpacked_size(layer: &[u8]) -> u64 {
    match decompress(layer) {
        Ok(r) => std::io::copy(&mut r.take(MAX_UNPACKED + 1), &mut std::io::sink()).unwrap_or(0),
        Err(_) => 0,
    }
}

/// Type, mode, size, mtime and content (or link target) of everything under `top` except
/// `top/root`, by path.
fn snapshot(top: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut todo = vec![top.to_path_buf()];
    while let Some(p) = todo.pop() {
        let Ok(m) = std::fs::symlink_metadata(&p) else {
            out.insert(p, "gone".to_string());
            continue;
        };
        let mut what = format!("{:o} {} {}", m.mode(), m.size(), m.mtime());
        if m.file_type().is_symlink() {
            what.push_str(&format!(" -> {:?}", std::fs::read_link(&p).ok()));
        } else if m.is_file() {
            what.push_str(&format!(" {:?}", std::fs::read(&p).ok()));
        } else if m.is_dir()
            && let Ok(entries) = std::fs::read_dir(&p)
        {
            for e in entries.flatten() {
                let child = e.path();
                if child != top.join("root") {
                    todo.push(child);
                }
            }
        }
        out.insert(p, what);
    }
    out
}

/// Gives the owner write and search permission on every directory under `root` (a layer may
/// leave read-only ones), so the scratch directory can be deleted.
fn make_removable(root: &Path) {
    let mut todo = vec![root.to_path_buf()];
    while let Some(p) = todo.pop() {
        let Ok(m) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if !m.is_dir() {
            continue;
        }
        let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700));
        if let Ok(entries) = std::fs::read_dir(&p) {
            todo.extend(entries.flatten().map(|e| e.path()));
        }
    }
}
