//! Shared helpers of the sifr-squashfs integration tests (sifr-fuse's include this file by
//! `#[path]`): a source tree covering every squashfs feature, `mksquashfs` wrappers, and a
//! snapshot format both the reader walk and the kernel walk (FUSE tests) are compared with.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

/// What a test knows about one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// `S_IFMT | perm` bits.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    /// File content, symlink target; empty otherwise.
    pub data: Vec<u8>,
    /// (major, minor) of devices.
    pub dev: Option<(u32, u32)>,
    /// user.* xattrs, sorted.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Inode number in the walked filesystem (only compared as hard-link groups).
    pub ino: u64,
    pub nlink: u32,
}

/// Relative path -> node. The root is "".
pub type Snapshot = BTreeMap<PathBuf, Node>;

/// Deterministic pseudo-random bytes (xorshift), half-compressible when `text` is true.
pub fn bytes(seed: u64, len: usize, text: bool) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if text && i % 3 != 0 {
                b"squashfs "[i % 9]
            } else {
                x as u8
            }
        })
        .collect()
}

fn setfattr(path: &Path, name: &str, value: &[u8]) {
    let v = format!(
        "0x{}",
        value.iter().map(|b| format!("{b:02x}")).collect::<String>()
    );
    let st = Command::new("setfattr")
        .args(["-n", name, "-v", &v])
        .arg(path)
        .status();
    assert!(
        st.is_ok_and(|s| s.success()),
        "setfattr {name} on {}",
        path.display()
    );
}

/// Block size used by `build_tree`'s size choices.
pub const BS: usize = 131072;

/// Builds the source tree under `root` (which must not exist).
pub fn build_tree(root: &Path) {
    fs::create_dir_all(root.join("sub/deeper")).expect("mkdir");
    let w = |p: &str, d: &[u8]| fs::write(root.join(p), d).expect("write");
    w("empty", b"");
    w("tiny", b"hello\n");
    w("frag", &bytes(1, 5000, true));
    w("frag2", &bytes(2, 7777, false));
    w("multi", &bytes(3, 3 * BS, true));
    w("tail", &bytes(4, 2 * BS + 1000, false));
    w("big", &bytes(5, 9 * BS + 12345, true));
    w("sub/deeper/nested", b"nested file\n");
    w("odd", b"mode and owner changed by a pseudo definition\n");
    // Sparse: holes of whole blocks at the start, middle and end.
    let sparse = fs::File::create(root.join("sparse")).expect("create sparse");
    std::os::unix::fs::FileExt::write_all_at(&sparse, &bytes(6, 1000, false), 3 * BS as u64 + 7)
        .expect("write");
    sparse.set_len(7 * BS as u64 + 99).expect("truncate");
    drop(sparse);
    // Hard links: three names for one inode, one in another directory.
    w("hard1", &bytes(7, BS + 17, true));
    fs::hard_link(root.join("hard1"), root.join("hard2")).expect("link");
    fs::hard_link(root.join("hard1"), root.join("sub/hard3")).expect("link");
    symlink("tiny", root.join("link")).expect("symlink");
    symlink("sub/deeper/../deeper/nested", root.join("sub/rel")).expect("symlink");
    symlink("/".to_string() + &"x".repeat(300), root.join("longlink")).expect("symlink");
    symlink("missing-target", root.join("dangling")).expect("symlink");
    // A directory big enough to need a directory index (> 1 metadata block of entries).
    fs::create_dir(root.join("many")).expect("mkdir");
    for i in 0..400 {
        let name = format!("entry-with-a-longish-name-{i:04}");
        fs::write(root.join("many").join(name), format!("{i}\n")).expect("write");
    }
    // Odd permissions.
    fs::set_permissions(root.join("tiny"), fs::Permissions::from_mode(0o600)).expect("chmod");
    fs::set_permissions(root.join("frag2"), fs::Permissions::from_mode(0o2711)).expect("chmod");
    fs::set_permissions(root.join("sub"), fs::Permissions::from_mode(0o1777)).expect("chmod");
    // xattrs: inline, shared (stored out of line), on a directory, and a hidden namespace.
    setfattr(&root.join("tiny"), "user.greeting", b"hi");
    setfattr(&root.join("frag"), "user.shared", &bytes(8, 3000, false));
    setfattr(&root.join("multi"), "user.shared", &bytes(8, 3000, false));
    setfattr(&root.join("multi"), "user.empty", b"");
    setfattr(&root.join("sub"), "user.dir", b"directory attr");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        setfattr(&root.join("frag"), "trusted.hidden", b"root-only");
    }
}

/// Pseudo definitions: devices, fifo, socket, and an owner/mode change.
pub const PSEUDO: &str = "\
dev d 755 0 0
dev/null c 666 0 0 1 3
dev/sda b 640 0 6 8 0
dev/bigdev c 600 0 0 300 70000
fifo i 644 1000 1000 f
sock i 755 0 0 s
odd m 4751 1234 5678
";

/// Applies `PSEUDO` to a snapshot of the source tree: what the image must contain.
pub fn apply_pseudo(s: &mut Snapshot) {
    // Pseudo entries get made-up inode numbers, distinct from any real one.
    let mut fake_ino = u64::MAX;
    let mut add = |p: &str, mode: u32, uid: u32, gid: u32, dev: Option<(u32, u32)>| {
        fake_ino -= 1;
        s.insert(
            PathBuf::from(p),
            Node {
                mode,
                uid,
                gid,
                size: 0,
                data: vec![],
                dev,
                xattrs: vec![],
                ino: fake_ino,
                nlink: 1,
            },
        );
    };
    add("dev/null", libc::S_IFCHR | 0o666, 0, 0, Some((1, 3)));
    add("dev/sda", libc::S_IFBLK | 0o640, 0, 6, Some((8, 0)));
    add(
        "dev/bigdev",
        libc::S_IFCHR | 0o600,
        0,
        0,
        Some((300, 70000)),
    );
    add("fifo", libc::S_IFIFO | 0o644, 1000, 1000, None);
    add("sock", libc::S_IFSOCK | 0o755, 0, 0, None);
    add("dev", libc::S_IFDIR | 0o755, 0, 0, None);
    if let Some(n) = s.get_mut(Path::new("odd")) {
        n.mode = libc::S_IFREG | 0o4751;
        n.uid = 1234;
        n.gid = 5678;
    }
    let subdirs = |s: &Snapshot, d: &Path| {
        s.iter()
            .filter(|(p, n)| {
                p.parent() == Some(d)
                    && p.as_os_str() != ""
                    && n.mode & libc::S_IFMT == libc::S_IFDIR
            })
            .count() as u32
    };
    // Directory link counts as squashfs computes them.
    let dirs: Vec<PathBuf> = s
        .iter()
        .filter(|(_, n)| n.mode & libc::S_IFMT == libc::S_IFDIR)
        .map(|(p, _)| p.clone())
        .collect();
    for d in dirs {
        let n = 2 + subdirs(s, &d);
        if let Some(node) = s.get_mut(&d) {
            node.nlink = n;
        }
    }
}

/// Runs mksquashfs on `src` into `out` with `-comp comp` and extra args.
pub fn mksquashfs(src: &Path, out: &Path, comp: &str, extra: &[&str]) {
    let o = Command::new("mksquashfs")
        .arg(src)
        .arg(out)
        .args(["-noappend", "-no-progress", "-quiet", "-comp", comp])
        .args(extra)
        .output()
        .expect("mksquashfs runs (install squashfs-tools)");
    assert!(
        o.status.success(),
        "mksquashfs failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Snapshot of a real directory tree through std::fs (used for the source and for a FUSE
/// mount). Only `user.*` xattrs are recorded.
pub fn snapshot_dir(root: &Path) -> Snapshot {
    let mut out = Snapshot::new();
    walk_dir(root, root, &mut out);
    out
}

fn walk_dir(root: &Path, p: &Path, out: &mut Snapshot) {
    let md = fs::symlink_metadata(p).expect("lstat");
    let ft = md.file_type();
    let data = if ft.is_file() {
        fs::read(p).expect("read file")
    } else if ft.is_symlink() {
        use std::os::unix::ffi::OsStrExt;
        fs::read_link(p)
            .expect("readlink")
            .as_os_str()
            .as_bytes()
            .to_vec()
    } else {
        vec![]
    };
    let dev = if ft.is_block_device() || ft.is_char_device() {
        Some((libc::major(md.rdev()), libc::minor(md.rdev())))
    } else {
        None
    };
    use std::os::unix::fs::FileTypeExt;
    let rel = p.strip_prefix(root).expect("under root").to_path_buf();
    out.insert(
        rel,
        Node {
            mode: md.mode(),
            uid: md.uid(),
            gid: md.gid(),
            size: if ft.is_file() || ft.is_symlink() {
                md.size()
            } else {
                0
            },
            data,
            dev,
            xattrs: if ft.is_symlink() {
                vec![]
            } else {
                user_xattrs(p)
            },
            ino: md.ino(),
            nlink: md.nlink() as u32,
        },
    );
    if ft.is_dir() {
        let mut names: Vec<_> = fs::read_dir(p)
            .expect("readdir")
            .map(|e| e.expect("entry").path())
            .collect();
        names.sort();
        for c in names {
            walk_dir(root, &c, out);
        }
    }
}

/// user.* xattrs of a path via the xattr syscalls, sorted by name.
pub fn user_xattrs(p: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c = CString::new(p.as_os_str().as_bytes()).expect("path without NUL");
    let mut buf = vec![0u8; 65536];
    // SAFETY: c is a valid C string and buf is writable for buf.len() bytes.
    let n = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    assert!(
        n >= 0,
        "listxattr {}: {}",
        p.display(),
        std::io::Error::last_os_error()
    );
    let mut out = vec![];
    for name in buf[..n as usize]
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty())
    {
        if !name.starts_with(b"user.") {
            continue;
        }
        let cn = CString::new(name).expect("name without NUL");
        let mut v = vec![0u8; 65536];
        // SAFETY: valid C strings and a writable buffer of v.len() bytes.
        let m = unsafe { libc::lgetxattr(c.as_ptr(), cn.as_ptr(), v.as_mut_ptr().cast(), v.len()) };
        assert!(
            m >= 0,
            "getxattr {}: {}",
            p.display(),
            std::io::Error::last_os_error()
        );
        v.truncate(m as usize);
        out.push((name.to_vec(), v));
    }
    out.sort();
    out
}

/// Compares two snapshots: same paths, same attributes and contents; hard-link groups (paths
/// sharing an inode number) identical. `ino` values themselves are not compared.
pub fn assert_same(want: &Snapshot, got: &Snapshot, ctx: &str) {
    let wk: Vec<_> = want.keys().collect();
    let gk: Vec<_> = got.keys().collect();
    assert_eq!(wk, gk, "{ctx}: path sets differ");
    for (p, w) in want {
        let g = &got[p];
        let strip = |n: &Node| Node {
            ino: 0,
            ..n.clone()
        };
        let (sw, sg) = (strip(w), strip(g));
        if sw != sg {
            let short = |n: &Node| Node {
                data: n.data.iter().take(40).copied().collect(),
                ..strip(n)
            };
            panic!(
                "{ctx}: {} differs\nwant {:?}\n got {:?}",
                p.display(),
                short(w),
                short(g)
            );
        }
    }
    let groups = |s: &Snapshot| {
        let mut m: BTreeMap<u64, Vec<PathBuf>> = BTreeMap::new();
        for (p, n) in s {
            if n.mode & libc::S_IFMT != libc::S_IFDIR {
                m.entry(n.ino).or_default().push(p.clone());
            }
        }
        let mut v: Vec<Vec<PathBuf>> = m.into_values().collect();
        v.sort();
        v
    };
    assert_eq!(groups(want), groups(got), "{ctx}: hard-link groups differ");
}

/// A fresh temp dir.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("sifr-sqfs-test")
        .tempdir()
        .expect("tempdir")
}

/// The busybox SIF fixture and its squashfs partition offset.
pub fn busybox_sif() -> Option<(PathBuf, u64)> {
    let base = std::env::var_os("SIFR_TESTDATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/testdata"));
    let p = base.join("sif/busybox_amd64.sif");
    p.exists().then_some((p, 45056))
}

/// Snapshot of an image through the reader (plain walk; the squashfs_tree tests add
/// lookup/readdir-resume checks on top).
pub fn reader_snapshot(fs: &sifr_squashfs::SquashFs) -> Snapshot {
    let mut out = Snapshot::new();
    reader_walk(fs, fs.root(), PathBuf::new(), &mut out);
    out
}

fn reader_walk(fs: &sifr_squashfs::SquashFs, ino: u32, path: PathBuf, out: &mut Snapshot) {
    use sifr_squashfs::FileType;
    let a = fs.stat(ino).expect("stat");
    let data = match a.kind {
        FileType::Regular => {
            let mut d = vec![0u8; a.size as usize];
            let n = fs.read(ino, 0, &mut d).expect("read");
            assert_eq!(n as u64, a.size);
            d
        }
        FileType::Symlink => fs.readlink(ino).expect("readlink"),
        _ => vec![],
    };
    let dev = matches!(a.kind, FileType::BlockDevice | FileType::CharDevice).then(|| {
        (
            (a.rdev >> 8) & 0xfff,
            (a.rdev & 0xff) | ((a.rdev >> 12) & 0xfff00),
        )
    });
    let mut xattrs: Vec<(Vec<u8>, Vec<u8>)> = fs
        .listxattr(ino)
        .expect("listxattr")
        .into_iter()
        .map(|n| {
            let v = fs.getxattr(ino, &n).expect("getxattr").expect("value");
            (n, v)
        })
        .collect();
    xattrs.sort();
    let size = if matches!(a.kind, FileType::Regular | FileType::Symlink) {
        a.size
    } else {
        0
    };
    out.insert(
        path.clone(),
        Node {
            mode: a.mode,
            uid: a.uid,
            gid: a.gid,
            size,
            data,
            dev,
            xattrs,
            ino: u64::from(ino),
            nlink: a.nlink,
        },
    );
    if a.kind == FileType::Directory {
        let mut kids = Vec::new();
        fs.readdir(ino, 0, &mut |e| {
            kids.push((String::from_utf8_lossy(e.name).into_owned(), e.ino));
            true
        })
        .expect("readdir");
        for (name, child) in kids {
            reader_walk(fs, child, path.join(name), out);
        }
    }
}
