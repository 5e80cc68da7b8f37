//! Phase A: walk images made by mksquashfs (every compressor, several layouts) through the
//! reader and compare everything with the source tree; plus the busybox SIF fixture.

mod common;

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::*;
use sifr_squashfs::{FileType, Options, SquashFs, XattrPolicy};

struct Source {
    _dir: tempfile::TempDir,
    src: PathBuf,
    pseudo: PathBuf,
    want: Snapshot,
}

fn source() -> &'static Source {
    static S: OnceLock<Source> = OnceLock::new();
    S.get_or_init(|| {
        let dir = tempdir();
        let src = dir.path().join("src");
        build_tree(&src);
        let pseudo = dir.path().join("pseudo");
        std::fs::write(&pseudo, PSEUDO).expect("write pseudo file");
        let mut want = snapshot_dir(&src);
        apply_pseudo(&mut want);
        Source {
            _dir: dir,
            src,
            pseudo,
            want,
        }
    })
}

fn decode_dev(rdev: u32) -> (u32, u32) {
    (
        (rdev >> 8) & 0xfff,
        (rdev & 0xff) | ((rdev >> 12) & 0xfff00),
    )
}

/// Walks the whole image through the reader into a snapshot, checking lookup and readdir
/// resumption on the way.
fn snapshot_image(fs: &SquashFs) -> Snapshot {
    let mut out = Snapshot::new();
    walk(fs, fs.root(), PathBuf::new(), &mut out);
    out
}

fn read_all(fs: &SquashFs, ino: u32, size: u64) -> Vec<u8> {
    let mut data = Vec::new();
    let mut buf = vec![0u8; 70001]; // odd size: reads straddle block boundaries
    loop {
        let n = fs.read(ino, data.len() as u64, &mut buf).expect("read");
        if n == 0 {
            break;
        }
        data.extend_from_slice(&buf[..n]);
    }
    assert_eq!(data.len() as u64, size, "inode {ino}: bytes read vs size");
    data
}

fn list(fs: &SquashFs, ino: u32, cookie: u64, max: usize) -> Vec<(Vec<u8>, u32, FileType, u64)> {
    let mut v = Vec::new();
    fs.readdir(ino, cookie, &mut |e| {
        if v.len() == max {
            return false;
        }
        v.push((e.name.to_vec(), e.ino, e.kind, e.next_cookie));
        true
    })
    .expect("readdir");
    v
}

fn walk(fs: &SquashFs, ino: u32, path: PathBuf, out: &mut Snapshot) {
    let a = fs.stat(ino).expect("stat");
    assert_eq!(a.ino, ino);
    let data = match a.kind {
        FileType::Regular => read_all(fs, ino, a.size),
        FileType::Symlink => fs.readlink(ino).expect("readlink"),
        _ => vec![],
    };
    let dev =
        matches!(a.kind, FileType::BlockDevice | FileType::CharDevice).then(|| decode_dev(a.rdev));
    let mut xattrs: Vec<(Vec<u8>, Vec<u8>)> = fs
        .listxattr(ino)
        .expect("listxattr")
        .into_iter()
        .map(|n| {
            let v = fs
                .getxattr(ino, &n)
                .expect("getxattr")
                .expect("listed name has a value");
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
    if a.kind != FileType::Directory {
        return;
    }
    let all = list(fs, ino, 0, usize::MAX);
    // A cookie past the end (seekdir can send anything) lists nothing.
    assert!(list(fs, ino, 1 << 50, 10).is_empty());
    // Resuming from every cookie gives the rest of the listing.
    for (i, e) in all.iter().enumerate().step_by(37) {
        let rest = list(fs, ino, e.3, usize::MAX);
        assert_eq!(
            rest,
            all[i + 1..].to_vec(),
            "{}: resume after entry {i}",
            path.display()
        );
    }
    // Paged listing, 7 entries per call.
    let mut paged = Vec::new();
    let mut cookie = 0;
    loop {
        let page = list(fs, ino, cookie, 7);
        let Some(last) = page.last() else { break };
        cookie = last.3;
        paged.extend(page);
    }
    assert_eq!(paged, all, "{}: paged listing", path.display());
    for (name, child, kind, _) in &all {
        assert_eq!(
            fs.lookup(ino, name).expect("lookup"),
            Some(*child),
            "lookup {name:?}"
        );
        let mut missing = name.clone();
        missing.push(b'~');
        assert_eq!(fs.lookup(ino, &missing).expect("lookup"), None);
        let p = path.join(std::str::from_utf8(name).expect("utf-8 names"));
        walk(fs, *child, p, out);
        assert_eq!(fs.stat(*child).expect("stat").kind, *kind);
    }
}

/// Reads at awkward offsets and compares with the source bytes.
fn random_reads(fs: &SquashFs, ino: u32, want: &[u8]) {
    let len = want.len() as u64;
    let bs = u64::from(fs.block_size());
    let mut offs = vec![
        0,
        1,
        bs - 1,
        bs,
        bs + 1,
        len.saturating_sub(1),
        len,
        len + 10,
    ];
    offs.extend((1..20).map(|i| (i * 7919 * 13) % (len + 1)));
    for off in offs {
        for n in [1usize, 100, 4096, bs as usize + 3] {
            let mut buf = vec![0xAAu8; n];
            let got = fs.read(ino, off, &mut buf).expect("read");
            let end = (off.min(len) as usize + n).min(want.len());
            let exp = &want[off.min(len) as usize..end];
            assert_eq!(&buf[..got], exp, "read {n} at {off} of inode {ino}");
        }
    }
}

fn check_image(img: &Path, ctx: &str, tailends_or_frags: bool) {
    let s = source();
    let fs = SquashFs::open(File::open(img).expect("open image"), 0).expect("open squashfs");
    let got = snapshot_image(&fs);
    assert_same(&s.want, &got, ctx);
    // nlink: squashfs stores it, the source agrees (files) or apply_pseudo computed it (dirs).
    for (p, w) in &s.want {
        assert_eq!(w.nlink, got[p].nlink, "{ctx}: nlink of {}", p.display());
    }
    for (p, n) in &got {
        if n.mode & libc::S_IFMT == libc::S_IFREG && n.size > 0 {
            random_reads(&fs, n.ino as u32, &s.want[p].data);
        }
    }
    // Hidden namespace: trusted.* is stored but not shown by default; `All` shows it.
    let frag = fs
        .lookup(fs.root(), b"frag")
        .expect("lookup")
        .expect("frag exists");
    assert_eq!(
        fs.getxattr(frag, b"trusted.hidden").expect("getxattr"),
        None
    );
    if unsafe_is_root() {
        let all = SquashFs::open_with(
            File::open(img).expect("open"),
            0,
            Options {
                xattrs: XattrPolicy::All,
                ..Options::default()
            },
        )
        .expect("open");
        let frag = all
            .lookup(all.root(), b"frag")
            .expect("lookup")
            .expect("frag");
        assert_eq!(
            all.getxattr(frag, b"trusted.hidden").expect("getxattr"),
            Some(b"root-only".to_vec())
        );
        assert!(
            all.listxattr(frag)
                .expect("listxattr")
                .contains(&b"trusted.hidden".to_vec())
        );
    }
    let _ = tailends_or_frags;
}

fn unsafe_is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn run_compressor(comp: &str) {
    let s = source();
    let dir = tempdir();
    let pf = s.pseudo.to_str().expect("utf-8 path");
    let a = dir.path().join("a.sqfs");
    mksquashfs(&s.src, &a, comp, &["-pf", pf, "-tailends"]);
    check_image(&a, &format!("{comp} default+tailends"), true);
    let b = dir.path().join("b.sqfs");
    mksquashfs(
        &s.src,
        &b,
        comp,
        &["-pf", pf, "-no-fragments", "-no-exports"],
    );
    check_image(&b, &format!("{comp} no-fragments no-exports"), false);
}

#[test]
fn test_tree_gzip() {
    run_compressor("gzip");
}
#[test]
fn test_tree_xz() {
    run_compressor("xz");
}
#[test]
fn test_tree_lzma() {
    run_compressor("lzma");
}
#[test]
fn test_tree_lzo() {
    run_compressor("lzo");
}
#[test]
fn test_tree_lz4() {
    run_compressor("lz4");
}
#[test]
fn test_tree_zstd() {
    run_compressor("zstd");
}

/// Uncompressed everything and 4 KiB blocks: pread paths and the block checkpoint index
/// (the big files have > 1024 blocks here only when scaled, see squashfs_stream.rs).
#[test]
fn test_tree_uncompressed_small_blocks() {
    let s = source();
    let dir = tempdir();
    let img = dir.path().join("u.sqfs");
    let pf = s.pseudo.to_str().expect("utf-8 path");
    mksquashfs(
        &s.src,
        &img,
        "gzip",
        &["-pf", pf, "-noI", "-noD", "-noF", "-noX", "-b", "4096"],
    );
    check_image(&img, "uncompressed 4K blocks", true);
}

/// Opening reads only a handful of metadata blocks, however many inodes the image has.
#[test]
fn test_open_is_lazy() {
    let dir = tempdir();
    let src = dir.path().join("many");
    std::fs::create_dir(&src).expect("mkdir");
    for d in 0..20 {
        let sub = src.join(format!("d{d}"));
        std::fs::create_dir(&sub).expect("mkdir");
        for f in 0..250 {
            std::fs::write(sub.join(format!("f{f}")), format!("{d}/{f}")).expect("write");
        }
    }
    let img = dir.path().join("many.sqfs");
    mksquashfs(&src, &img, "gzip", &[]);
    let fs = SquashFs::open(File::open(&img).expect("open"), 0).expect("open squashfs");
    assert!(fs.inode_count() > 5000);
    let st = fs.cache_stats();
    // id table + root inode block (+ the export/fragment indexes are read raw, not cached).
    assert!(
        st.meta_bytes <= 3 * 8300,
        "open decoded {} bytes of metadata",
        st.meta_bytes
    );
    let d7 = fs.lookup(fs.root(), b"d7").expect("lookup").expect("d7");
    let f = fs.lookup(d7, b"f249").expect("lookup").expect("f249");
    let mut buf = [0u8; 16];
    let n = fs.read(f, 0, &mut buf).expect("read");
    assert_eq!(&buf[..n], b"7/249");
}

/// The busybox SIF's squashfs partition (gzip, 55 inodes, hard links, security.selinux).
#[test]
fn test_busybox_fixture() {
    let Some((sif, off)) = busybox_sif() else {
        assert!(
            std::env::var_os("SIFR_CI").is_none(),
            "busybox fixture missing in CI"
        );
        eprintln!("SKIP: busybox fixture not found");
        return;
    };
    let fs = SquashFs::open(File::open(&sif).expect("open sif"), off).expect("open squashfs");
    let got = snapshot_image(&fs);
    // unsquashfs -lln: mode string, uid/gid, size and symlink target of every path.
    let o = Command::new("unsquashfs")
        .args(["-o", &off.to_string(), "-lln"])
        .arg(&sif)
        .output()
        .expect("unsquashfs runs");
    assert!(o.status.success());
    let listing = String::from_utf8_lossy(&o.stdout);
    let mut seen = 0;
    for line in listing.lines().filter(|l| l.contains("squashfs-root")) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let path = f[5]
            .trim_start_matches("squashfs-root")
            .trim_start_matches('/');
        let n = &got[Path::new(path)];
        let (uid, gid) = f[1].split_once('/').expect("uid/gid");
        assert_eq!(
            (n.uid.to_string(), n.gid.to_string()),
            (uid.to_string(), gid.to_string()),
            "{path}"
        );
        assert_eq!(mode_string(n.mode), f[0], "{path}");
        if f[0].starts_with('-') || f[0].starts_with('l') {
            assert_eq!(n.size.to_string(), f[2], "{path}");
        }
        if f[0].starts_with('l') {
            assert_eq!(String::from_utf8_lossy(&n.data), f[7], "{path}");
        }
        seen += 1;
    }
    assert_eq!(
        seen,
        got.len(),
        "every path listed by unsquashfs was compared"
    );
    // Contents and hard links against an extraction.
    let dir = tempdir();
    let out = dir.path().join("x");
    let st = Command::new("unsquashfs")
        .args(["-o", &off.to_string(), "-no-xattrs", "-q", "-n", "-d"])
        .arg(&out)
        .arg(&sif)
        .output()
        .expect("unsquashfs runs");
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let mut want = snapshot_dir(&out);
    for (p, n) in want.iter_mut() {
        let g = &got[p];
        // Extraction ran as whoever we are (an unprivileged unsquashfs applies the umask to
        // modes) and without xattrs; compare what it preserves. Modes, owners and sizes were
        // checked against `unsquashfs -lln` above.
        (n.uid, n.gid, n.xattrs) = (g.uid, g.gid, g.xattrs.clone());
        n.mode = g.mode;
        if n.mode & libc::S_IFMT == libc::S_IFDIR {
            n.nlink = g.nlink;
        }
    }
    assert_same(&want, &got, "busybox");
    // 55 inodes in the image, far more names (busybox applets are hard links).
    let distinct: std::collections::BTreeSet<u64> = got.values().map(|n| n.ino).collect();
    assert_eq!(distinct.len() as u32, fs.inode_count());
    let groups: BTreeMap<u64, usize> = got.values().fold(BTreeMap::new(), |mut m, n| {
        *m.entry(n.ino).or_default() += 1;
        m
    });
    for n in got
        .values()
        .filter(|n| n.mode & libc::S_IFMT == libc::S_IFREG)
    {
        assert_eq!(n.nlink as usize, groups[&n.ino], "nlink of inode {}", n.ino);
    }
    // security.selinux is stored but hidden by default, visible with XattrPolicy::All.
    let dirs: Vec<u32> = got
        .values()
        .filter(|n| n.mode & libc::S_IFMT == libc::S_IFDIR)
        .map(|n| n.ino as u32)
        .collect();
    assert!(
        dirs.iter()
            .all(|&d| fs.listxattr(d).expect("listxattr").is_empty())
    );
    let all = SquashFs::open_with(
        File::open(&sif).expect("open"),
        off,
        Options {
            xattrs: XattrPolicy::All,
            ..Options::default()
        },
    )
    .expect("open");
    let root = all.root();
    let names = all.listxattr(root).expect("listxattr");
    assert_eq!(names, vec![b"security.selinux".to_vec()]);
    let v = all
        .getxattr(root, b"security.selinux")
        .expect("getxattr")
        .expect("value");
    assert_eq!(v, b"unconfined_u:object_r:user_home_t:s0\0");
}

fn mode_string(mode: u32) -> String {
    let t = match mode & libc::S_IFMT {
        libc::S_IFDIR => 'd',
        libc::S_IFLNK => 'l',
        libc::S_IFCHR => 'c',
        libc::S_IFBLK => 'b',
        libc::S_IFIFO => 'p',
        libc::S_IFSOCK => 's',
        _ => '-',
    };
    let mut s = String::from(t);
    let bits = [
        (0o400, 'r'),
        (0o200, 'w'),
        (0o100, 'x'),
        (0o40, 'r'),
        (0o20, 'w'),
        (0o10, 'x'),
        (0o4, 'r'),
        (0o2, 'w'),
        (0o1, 'x'),
    ];
    for (i, (b, c)) in bits.iter().enumerate() {
        let set = mode & b != 0;
        let special = match i {
            2 => mode & 0o4000 != 0,
            5 => mode & 0o2000 != 0,
            8 => mode & 0o1000 != 0,
            _ => false,
        };
        s.push(match (set, special) {
            (_, false) if set => *c,
            (_, false) => '-',
            (true, true) => {
                if i == 8 {
                    't'
                } else {
                    's'
                }
            }
            (false, true) => {
                if i == 8 {
                    'T'
                } else {
                    'S'
                }
            }
        });
    }
    s
}
