//! Unpacking a container root filesystem into a directory: from a filesystem image (through
//! sifr-fuse's readers, no mount) or from another directory. `build` uses it for
//! `Bootstrap: localimage`, `%files`, and `--sandbox` output.
//!
//! Meant to run as root of a fakeroot user namespace (`launch::userns`): ownership is then
//! restored with `lchown` where the namespace maps the id (silently kept as the caller's
//! otherwise), and directories that are read-only in the image are still filled (their mode
//! is applied after their contents). Device nodes cannot be created in a user namespace and
//! are skipped (a container's /dev is mounted over anyway); they are counted.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sifr_fuse::{FileType, ImageBackend};

/// What was unpacked.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ExtractStats {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub hardlinks: u64,
    pub bytes: u64,
    /// Device nodes and sockets that could not be created.
    pub skipped_special: u64,
}

/// An unpacking failure, naming the path.
#[derive(Debug, thiserror::Error)]
#[error("cannot unpack {path}: {msg}")]
pub struct ExtractError {
    pub path: PathBuf,
    pub msg: String,
}

fn err(path: &Path, e: impl std::fmt::Display) -> ExtractError {
    ExtractError {
        path: path.to_path_buf(),
        msg: e.to_string(),
    }
}

/// Metadata applied after an entry's contents are in place.
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
}

fn apply_meta(path: &Path, m: &Meta, is_link: bool) -> Result<(), ExtractError> {
    // Ownership first (it clears setuid bits), then mode, then times.
    let _ = std::os::unix::fs::lchown(path, Some(m.uid), Some(m.gid));
    if !is_link {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(m.mode & 0o7777))
            .map_err(|e| err(path, e))?;
    }
    let ts = nix::sys::time::TimeSpec::new(m.mtime, 0);
    let _ = nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &ts,
        &ts,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    );
    Ok(())
}

/// Unpacks the whole tree of `fs` into `dest` (which must exist and be empty or new).
pub fn extract_image<B: ImageBackend>(fs: &B, dest: &Path) -> Result<ExtractStats, ExtractError> {
    std::fs::create_dir_all(dest).map_err(|e| err(dest, e))?;
    let mut stats = ExtractStats::default();
    let mut links: HashMap<u32, PathBuf> = HashMap::new();
    // Directories get their mode and times last (deepest first).
    let mut dirs: Vec<(PathBuf, Meta)> = Vec::new();
    let root = fs.root();
    let rattr = fs.stat(root).map_err(|e| err(dest, e.msg))?;
    dirs.push((
        dest.to_path_buf(),
        Meta {
            mode: rattr.mode,
            uid: rattr.uid,
            gid: rattr.gid,
            mtime: i64::from(rattr.mtime),
        },
    ));
    let mut stack: Vec<(u64, PathBuf)> = vec![(root, dest.to_path_buf())];
    let mut buf = vec![0u8; 1 << 20];
    while let Some((dir, path)) = stack.pop() {
        let mut entries: Vec<(OsString, sifr_fuse::Attr)> = Vec::new();
        let mut failure = None;
        fs.readdir(dir, 0, true, &mut |e, a| {
            match a {
                Some(a) => entries.push((OsStr::from_bytes(e.name).to_os_string(), a)),
                None => failure = Some("no attributes from readdir"),
            }
            true
        })
        .map_err(|e| err(&path, e.msg))?;
        if let Some(f) = failure {
            return Err(err(&path, f));
        }
        for (name, a) in entries {
            let p = path.join(&name);
            let meta = Meta {
                mode: a.mode,
                uid: a.uid,
                gid: a.gid,
                mtime: i64::from(a.mtime),
            };
            let ino = u64::from(a.ino);
            if a.kind != FileType::Directory && a.nlink > 1 {
                if let Some(first) = links.get(&a.ino) {
                    std::fs::hard_link(first, &p).map_err(|e| err(&p, e))?;
                    stats.hardlinks += 1;
                    continue;
                }
                links.insert(a.ino, p.clone());
            }
            match a.kind {
                FileType::Directory => {
                    std::fs::create_dir(&p).map_err(|e| err(&p, e))?;
                    // Owner-writable while we fill it.
                    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700))
                        .map_err(|e| err(&p, e))?;
                    stats.dirs += 1;
                    dirs.push((p.clone(), meta));
                    stack.push((ino, p));
                }
                FileType::Regular => {
                    let mut out = std::fs::File::create(&p).map_err(|e| err(&p, e))?;
                    let mut off = 0u64;
                    loop {
                        let n = fs.read(ino, off, &mut buf).map_err(|e| err(&p, e.msg))?;
                        if n == 0 {
                            break;
                        }
                        out.write_all(&buf[..n]).map_err(|e| err(&p, e))?;
                        off += n as u64;
                    }
                    stats.bytes += off;
                    stats.files += 1;
                    drop(out);
                    apply_meta(&p, &meta, false)?;
                }
                FileType::Symlink => {
                    let target = fs.readlink(ino).map_err(|e| err(&p, e.msg))?;
                    std::os::unix::fs::symlink(OsStr::from_bytes(&target), &p)
                        .map_err(|e| err(&p, e))?;
                    stats.symlinks += 1;
                    apply_meta(&p, &meta, true)?;
                }
                FileType::Fifo => {
                    nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600))
                        .map_err(|e| err(&p, e))?;
                    apply_meta(&p, &meta, false)?;
                }
                FileType::CharDevice | FileType::BlockDevice | FileType::Socket => {
                    stats.skipped_special += 1;
                }
            }
        }
    }
    for (p, m) in dirs.iter().rev() {
        apply_meta(p, m, false)?;
    }
    Ok(stats)
}

/// Copies `src` (a file, symlink or directory tree) to `dest`, preserving modes, owners
/// (where the namespace allows), times, symbolic links and hard links within the tree.
pub fn copy_tree(src: &Path, dest: &Path) -> Result<ExtractStats, ExtractError> {
    let mut stats = ExtractStats::default();
    let mut links: HashMap<(u64, u64), PathBuf> = HashMap::new();
    let mut dirs: Vec<(PathBuf, Meta)> = Vec::new();
    copy_one(src, dest, &mut stats, &mut links, &mut dirs)?;
    for (p, m) in dirs.iter().rev() {
        apply_meta(p, m, false)?;
    }
    Ok(stats)
}

fn copy_one(
    src: &Path,
    dest: &Path,
    stats: &mut ExtractStats,
    links: &mut HashMap<(u64, u64), PathBuf>,
    dirs: &mut Vec<(PathBuf, Meta)>,
) -> Result<(), ExtractError> {
    let md = std::fs::symlink_metadata(src).map_err(|e| err(src, e))?;
    let meta = Meta {
        mode: md.mode(),
        uid: md.uid(),
        gid: md.gid(),
        mtime: md.mtime(),
    };
    let ft = md.file_type();
    if !ft.is_dir() && md.nlink() > 1 {
        let key = (md.dev(), md.ino());
        if let Some(first) = links.get(&key) {
            std::fs::hard_link(first, dest).map_err(|e| err(dest, e))?;
            stats.hardlinks += 1;
            return Ok(());
        }
        links.insert(key, dest.to_path_buf());
    }
    if ft.is_dir() {
        match std::fs::create_dir(dest) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dest.is_dir() => {}
            Err(e) => return Err(err(dest, e)),
        }
        std::fs::set_permissions(dest, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| err(dest, e))?;
        stats.dirs += 1;
        dirs.push((dest.to_path_buf(), meta));
        let mut names: Vec<OsString> = std::fs::read_dir(src)
            .map_err(|e| err(src, e))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(|e| err(src, e))?;
        names.sort();
        for n in names {
            copy_one(&src.join(&n), &dest.join(&n), stats, links, dirs)?;
        }
    } else if ft.is_symlink() {
        let target = std::fs::read_link(src).map_err(|e| err(src, e))?;
        let _ = std::fs::remove_file(dest);
        std::os::unix::fs::symlink(&target, dest).map_err(|e| err(dest, e))?;
        stats.symlinks += 1;
        apply_meta(dest, &meta, true)?;
    } else if ft.is_file() {
        let mut i = std::fs::File::open(src).map_err(|e| err(src, e))?;
        let _ = std::fs::remove_file(dest);
        let mut o = std::fs::File::create(dest).map_err(|e| err(dest, e))?;
        let mut buf = vec![0u8; 256 << 10];
        loop {
            let n = i.read(&mut buf).map_err(|e| err(src, e))?;
            if n == 0 {
                break;
            }
            o.write_all(&buf[..n]).map_err(|e| err(dest, e))?;
            stats.bytes += n as u64;
        }
        stats.files += 1;
        drop(o);
        apply_meta(dest, &meta, false)?;
    } else {
        use std::os::unix::fs::FileTypeExt;
        if ft.is_fifo() {
            nix::unistd::mkfifo(dest, nix::sys::stat::Mode::from_bits_truncate(0o600))
                .map_err(|e| err(dest, e))?;
            apply_meta(dest, &meta, false)?;
        } else {
            stats.skipped_special += 1;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_extract_busybox_and_copy_back() {
        let sif = crate::testutil::sif_fixture("busybox_amd64.sif");
        let Ok(f) = std::fs::File::open(&sif) else {
            crate::testutil::skip("busybox fixture not found");
            return;
        };
        let fs = sifr_fuse::SquashFs::open(f, 45056).expect("open");
        let t = tempfile::tempdir().expect("tmp");
        let out = t.path().join("root");
        let st = extract_image(&fs, &out).expect("extract");
        assert!(st.files > 0 && st.hardlinks > 300, "{st:?}");
        assert!(out.join("bin/busybox").is_file());
        let a = std::fs::metadata(out.join("bin/sh")).expect("sh");
        let b = std::fs::metadata(out.join("bin/busybox")).expect("busybox");
        assert_eq!(a.ino(), b.ino(), "hard links kept");
        assert_eq!(
            std::fs::read_link(out.join("singularity")).expect("link"),
            PathBuf::from(".singularity.d/runscript")
        );
        let copy = t.path().join("copy");
        let st2 = copy_tree(&out, &copy).expect("copy");
        assert_eq!((st2.files, st2.hardlinks), (st.files, st.hardlinks));
        assert_eq!(
            std::fs::read(copy.join("bin/busybox")).expect("read"),
            std::fs::read(out.join("bin/busybox")).expect("read")
        );
        assert_eq!(
            std::fs::metadata(copy.join("bin")).expect("bin").mode() & 0o7777,
            std::fs::metadata(out.join("bin")).expect("bin").mode() & 0o7777
        );
    }
}
