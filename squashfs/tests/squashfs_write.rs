//! The squashfs writer: images of a tree with every inode kind, written with every
//! compressor and option set, read back with the crate's reader, `unsquashfs -lln`,
//! `unsquashfs -d` and (as root, where loop mounts work) the kernel, and compared exactly.
//! Plus reproducibility, owner mapping, duplicates, errors, and bounded memory.

mod common;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use common::*;
use sifr_squashfs::{
    Compressor, FileType, Options, SquashFs, WriteError, WriteOptions, WriteStats, Writer,
    XattrMode, XattrPolicy,
};

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

struct Source {
    _dir: tempfile::TempDir,
    src: PathBuf,
    want: Snapshot,
    mtimes: BTreeMap<PathBuf, u32>,
}

fn mknod(p: &Path, kind: u32, major: u32, minor: u32) {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: valid C string; mknod has no memory preconditions.
    let r = unsafe { libc::mknod(c.as_ptr(), kind | 0o640, libc::makedev(major, minor)) };
    assert_eq!(r, 0, "mknod {}", p.display());
}

fn lchown(p: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid)).expect("lchown");
}

/// `common::build_tree` plus what only a real tree can hold: fifo, socket, devices and
/// owners (the last two as root), duplicates, an empty directory, block-size edge cases.
fn source() -> &'static Source {
    static S: OnceLock<Source> = OnceLock::new();
    S.get_or_init(|| {
        let dir = tempdir();
        let src = dir.path().join("src");
        build_tree(&src);
        let w = |p: &str, d: &[u8]| fs::write(src.join(p), d).expect("write");
        w("exact", &bytes(20, BS, true));
        w("bs-1", &bytes(21, BS - 1, true));
        w("dup-a", &bytes(22, 2 * BS + 5, true));
        w("sub/dup-b", &bytes(22, 2 * BS + 5, true));
        w("dup-s1", &bytes(23, 777, false));
        w("dup-s2", &bytes(23, 777, false));
        w("same-size", &bytes(24, 777, false));
        w("zeros", &vec![0u8; 3 * BS]);
        fs::create_dir(src.join("emptydir")).expect("mkdir");
        let fifo =
            std::ffi::CString::new(src.join("fifo").as_os_str().as_encoded_bytes()).expect("path");
        // SAFETY: valid C string.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o620) }, 0);
        drop(std::os::unix::net::UnixListener::bind(src.join("sock")).expect("socket"));
        if is_root() {
            fs::create_dir(src.join("dev")).expect("mkdir");
            mknod(&src.join("dev/null"), libc::S_IFCHR, 1, 3);
            mknod(&src.join("dev/sda"), libc::S_IFBLK, 8, 0);
            mknod(&src.join("dev/bigdev"), libc::S_IFCHR, 300, 70000);
            lchown(&src.join("odd"), 1234, 5678);
            lchown(&src.join("sub"), 42, 43);
            lchown(&src.join("link"), 7, 8);
            lchown(&src.join("dev/sda"), 0, 6);
            fs::set_permissions(src.join("odd"), fs::Permissions::from_mode(0o4751))
                .expect("chmod");
        }
        let want = snapshot_dir(&src);
        let mut mtimes = BTreeMap::new();
        for p in want.keys() {
            let md = fs::symlink_metadata(src.join(p)).expect("lstat");
            mtimes.insert(p.clone(), md.mtime() as u32);
        }
        Source {
            _dir: dir,
            src,
            want,
            mtimes,
        }
    })
}

fn write_with(src: &Path, out: &Path, opts: WriteOptions) -> WriteStats {
    let w = Writer::new(opts).expect("options");
    let mut f = File::create(out).expect("create image");
    w.write_dir(src, &mut f).expect("write image")
}

/// Walks the image through the reader: (path -> mtime), to compare with the source.
fn image_mtimes(fs: &SquashFs) -> BTreeMap<PathBuf, u32> {
    let mut out = BTreeMap::new();
    let mut stack = vec![(fs.root(), PathBuf::new())];
    while let Some((ino, path)) = stack.pop() {
        let a = fs.stat(ino).expect("stat");
        out.insert(path.clone(), a.mtime);
        if a.kind == FileType::Directory {
            fs.readdir(ino, 0, &mut |e| {
                stack.push((e.ino, path.join(String::from_utf8_lossy(e.name).as_ref())));
                true
            })
            .expect("readdir");
        }
    }
    out
}

/// The reader sees exactly the source: paths, types, modes, owners, sizes, contents, link
/// targets, devices, user xattrs, hard-link groups, link counts and mtimes.
fn check_reader(
    img: &Path,
    offset: u64,
    want: &Snapshot,
    mtimes: &BTreeMap<PathBuf, u32>,
    ctx: &str,
) {
    let fs = SquashFs::open(File::open(img).expect("open image"), offset).expect("open squashfs");
    let got = reader_snapshot(&fs);
    assert_same(want, &got, ctx);
    for (p, w) in want {
        assert_eq!(w.nlink, got[p].nlink, "{ctx}: nlink of {}", p.display());
    }
    assert_eq!(&image_mtimes(&fs), mtimes, "{ctx}: mtimes");
    assert_eq!(fs.inode_count() as usize, {
        let mut inos: Vec<u64> = got.values().map(|n| n.ino).collect();
        inos.sort();
        inos.dedup();
        inos.len()
    });
}

fn mode_string(mode: u32) -> String {
    let mut s = String::from(match mode & libc::S_IFMT {
        libc::S_IFDIR => 'd',
        libc::S_IFLNK => 'l',
        libc::S_IFCHR => 'c',
        libc::S_IFBLK => 'b',
        libc::S_IFIFO => 'p',
        libc::S_IFSOCK => 's',
        _ => '-',
    });
    for (i, c) in "rwxrwxrwx".chars().enumerate() {
        let bit = 0o400 >> i;
        let on = mode & bit != 0;
        let special = match i {
            2 => mode & 0o4000 != 0,
            5 => mode & 0o2000 != 0,
            8 => mode & 0o1000 != 0,
            _ => false,
        };
        s.push(match (special, on, i) {
            (true, true, 8) => 't',
            (true, false, 8) => 'T',
            (true, true, _) => 's',
            (true, false, _) => 'S',
            (false, true, _) => c,
            (false, false, _) => '-',
        });
    }
    s
}

/// `unsquashfs -lln` lists every path with the source's mode, owner, size and link target.
fn check_listing(img: &Path, offset: u64, want: &Snapshot, ctx: &str) {
    let o = Command::new("unsquashfs")
        .args(["-o", &offset.to_string(), "-lln"])
        .arg(img)
        .output()
        .expect("unsquashfs runs");
    assert!(
        o.status.success(),
        "{ctx}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let listing = String::from_utf8_lossy(&o.stdout);
    let mut seen = 0;
    for line in listing.lines().filter(|l| l.contains("squashfs-root")) {
        let f: Vec<&str> = line.split_whitespace().collect();
        // Devices print "major, minor" as two fields: find the path by its prefix.
        let Some(path) = f.iter().find(|t| t.starts_with("squashfs-root")) else {
            panic!("{ctx}: no path in {line:?}");
        };
        let path = path
            .trim_start_matches("squashfs-root")
            .trim_start_matches('/');
        let n = &want[Path::new(path)];
        assert_eq!(mode_string(n.mode), f[0], "{ctx}: mode of {path}");
        assert_eq!(
            f[1],
            format!("{}/{}", n.uid, n.gid),
            "{ctx}: owner of {path}"
        );
        match f[0].as_bytes()[0] {
            b'-' | b'l' => assert_eq!(n.size.to_string(), f[2], "{ctx}: size of {path}"),
            // unsquashfs 4.5 misprints minors over 255 (for mksquashfs images too); the
            // reader, the extraction and the kernel check those.
            b'c' | b'b' if n.dev.is_some_and(|(_, mi)| mi < 256) => {
                let (ma, mi) = n.dev.expect("device");
                assert_eq!(f[2], format!("{ma},"), "{ctx}: major of {path}");
                assert_eq!(f[3], mi.to_string(), "{ctx}: minor of {path}");
            }
            _ => {}
        }
        if f[0].starts_with('l') {
            let target = line.split(" -> ").nth(1).expect("link target");
            assert_eq!(target.as_bytes(), &n.data[..], "{ctx}: target of {path}");
        }
        seen += 1;
    }
    assert_eq!(seen, want.len(), "{ctx}: unsquashfs listed every path");
}

/// `unsquashfs -d` extracts the same tree (owners, devices and xattrs only as root; an
/// unprivileged extraction applies the umask, so modes were checked by `check_listing`).
fn check_extract(img: &Path, offset: u64, want: &Snapshot, ctx: &str) {
    let dir = tempdir();
    let out = dir.path().join("x");
    let o = Command::new("unsquashfs")
        .args(["-o", &offset.to_string(), "-q", "-n", "-d"])
        .arg(&out)
        .arg(img)
        .output()
        .expect("unsquashfs runs");
    assert!(
        o.status.success(),
        "{ctx}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let got = snapshot_dir(&out);
    let mut want = want.clone();
    if !is_root() {
        for (p, n) in want.iter_mut() {
            let g = &got[p];
            (n.uid, n.gid, n.mode) = (g.uid, g.gid, g.mode);
        }
    }
    assert_same(&want, &got, &format!("{ctx} (unsquashfs -d)"));
}

/// Loop-mounts the image (root only) and compares what the kernel shows; None when this
/// machine cannot loop-mount or the kernel lacks the compressor.
fn check_kernel(img: &Path, want: &Snapshot, ctx: &str) -> Option<()> {
    if !is_root() {
        return None;
    }
    // Loop devices are few; mount one image at a time.
    static LOCK: Mutex<()> = Mutex::new(());
    let _g = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempdir();
    let mnt = dir.path().join("m");
    fs::create_dir(&mnt).expect("mkdir");
    let o = Command::new("mount")
        .args(["-t", "squashfs", "-o", "loop,ro"])
        .arg(img)
        .arg(&mnt)
        .output()
        .ok()?;
    if !o.status.success() {
        eprintln!(
            "SKIP kernel mount ({ctx}): {}",
            String::from_utf8_lossy(&o.stderr)
        );
        return None;
    }
    let got = snapshot_dir(&mnt);
    let mtimes: BTreeMap<PathBuf, u32> = got
        .keys()
        .map(|p| {
            let md = fs::symlink_metadata(mnt.join(p)).expect("lstat");
            (p.clone(), md.mtime() as u32)
        })
        .collect();
    let st = Command::new("umount").arg(&mnt).status();
    assert!(st.is_ok_and(|s| s.success()), "{ctx}: umount");
    assert_same(want, &got, &format!("{ctx} (kernel)"));
    for (p, w) in want {
        assert_eq!(
            w.nlink,
            got[p].nlink,
            "{ctx} (kernel): nlink of {}",
            p.display()
        );
    }
    assert_eq!(&mtimes, &source().mtimes, "{ctx} (kernel): mtimes");
    Some(())
}

fn check_all(img: &Path, ctx: &str) {
    let s = source();
    check_reader(img, 0, &s.want, &s.mtimes, ctx);
    check_listing(img, 0, &s.want, ctx);
    check_extract(img, 0, &s.want, ctx);
    check_kernel(img, &s.want, ctx);
}

fn run(comp: Compressor, name: &str) {
    let s = source();
    let dir = tempdir();
    let variants: Vec<(&str, WriteOptions)> = vec![
        ("default", WriteOptions::default()),
        (
            "tailends",
            WriteOptions {
                tail_ends: true,
                ..WriteOptions::default()
            },
        ),
        (
            "no-fragments no-exports no-duplicates 4K",
            WriteOptions {
                fragments: false,
                exports: false,
                duplicates: false,
                block_size: 4096,
                threads: 3,
                ..WriteOptions::default()
            },
        ),
    ];
    for (label, o) in variants {
        let img = dir.path().join("img.sqfs");
        let st = write_with(
            &s.src,
            &img,
            WriteOptions {
                compressor: comp,
                ..o
            },
        );
        let ctx = format!("{name} {label}");
        assert_eq!(
            st.inodes as usize + st.hard_links as usize,
            s.want.len(),
            "{ctx}"
        );
        check_all(&img, &ctx);
    }
}

#[test]
fn test_write_gzip() {
    run(Compressor::Gzip, "gzip");
}
#[test]
fn test_write_xz() {
    run(Compressor::Xz, "xz");
}
#[test]
fn test_write_zstd() {
    run(Compressor::Zstd, "zstd");
}
#[test]
fn test_write_lz4() {
    run(Compressor::Lz4, "lz4");
}
#[test]
fn test_write_lzo() {
    run(Compressor::Lzo, "lzo");
}

/// Levels other than the default produce the options block mksquashfs writes, which
/// unsquashfs validates.
#[test]
fn test_write_levels() {
    let s = source();
    let dir = tempdir();
    for (comp, level) in [
        (Compressor::Gzip, 1),
        (Compressor::Zstd, 3),
        (Compressor::Xz, 0),
    ] {
        let img = dir.path().join("l.sqfs");
        write_with(
            &s.src,
            &img,
            WriteOptions {
                compressor: comp,
                level: Some(level),
                ..WriteOptions::default()
            },
        );
        let ctx = format!("{comp:?} level {level}");
        check_reader(&img, 0, &s.want, &s.mtimes, &ctx);
        check_listing(&img, 0, &s.want, &ctx);
    }
}

/// xattrs: trusted.* (root can read it) is stored and visible with XattrPolicy::All;
/// XattrMode::User leaves it out; XattrMode::None stores nothing and says so.
#[test]
fn test_write_xattr_modes() {
    let s = source();
    let dir = tempdir();
    let img = dir.path().join("x.sqfs");
    let open_all = |img: &Path| {
        SquashFs::open_with(
            File::open(img).expect("open"),
            0,
            Options {
                xattrs: XattrPolicy::All,
                ..Options::default()
            },
        )
        .expect("open")
    };
    for mode in [XattrMode::All, XattrMode::User, XattrMode::None] {
        write_with(
            &s.src,
            &img,
            WriteOptions {
                xattrs: mode,
                ..WriteOptions::default()
            },
        );
        let fs = open_all(&img);
        let frag = fs
            .lookup(fs.root(), b"frag")
            .expect("lookup")
            .expect("frag");
        let tiny = fs
            .lookup(fs.root(), b"tiny")
            .expect("lookup")
            .expect("tiny");
        let hidden = fs.getxattr(frag, b"trusted.hidden").expect("getxattr");
        let user = fs.getxattr(tiny, b"user.greeting").expect("getxattr");
        match mode {
            XattrMode::All => {
                assert_eq!(user.as_deref(), Some(&b"hi"[..]));
                if is_root() {
                    assert_eq!(hidden.as_deref(), Some(&b"root-only"[..]));
                }
            }
            XattrMode::User => {
                assert_eq!(user.as_deref(), Some(&b"hi"[..]));
                assert_eq!(hidden, None);
            }
            XattrMode::None => {
                assert_eq!(user, None);
                assert_eq!(hidden, None);
            }
        }
        let sb = fs::read(&img).expect("read");
        let flags = u16::from_le_bytes([sb[24], sb[25]]);
        assert_eq!(flags & 0x200 != 0, mode == XattrMode::None, "{mode:?}");
    }
}

/// Same tree and options, any thread count: identical bytes. Without `reproducible` only the
/// superblock time may differ.
#[test]
fn test_write_reproducible() {
    let s = source();
    let dir = tempdir();
    let a = dir.path().join("a.sqfs");
    let b = dir.path().join("b.sqfs");
    let opts = |threads, reproducible| WriteOptions {
        threads,
        reproducible,
        compressor: Compressor::Zstd,
        ..WriteOptions::default()
    };
    write_with(&s.src, &a, opts(1, true));
    write_with(&s.src, &b, opts(4, true));
    let (ab, bb) = (fs::read(&a).expect("read"), fs::read(&b).expect("read"));
    assert!(ab == bb, "reproducible images differ");
    let newest = s.mtimes.values().copied().max().expect("paths");
    assert_eq!(u32::from_le_bytes(ab[8..12].try_into().expect("4")), newest);
    write_with(&s.src, &b, opts(2, false));
    let mut bb = fs::read(&b).expect("read");
    bb[8..12].copy_from_slice(&ab[8..12]);
    assert!(ab == bb, "images differ beyond the superblock time");
    // An explicit mkfs time and all-time.
    write_with(
        &s.src,
        &b,
        WriteOptions {
            mkfs_time: Some(1_000_000),
            all_time: Some(2_000_000),
            ..opts(2, false)
        },
    );
    let bb = fs::read(&b).expect("read");
    assert_eq!(
        u32::from_le_bytes(bb[8..12].try_into().expect("4")),
        1_000_000
    );
    let fs = SquashFs::open(File::open(&b).expect("open"), 0).expect("open");
    assert!(image_mtimes(&fs).values().all(|&t| t == 2_000_000));
}

/// Owners go through `id_map`; `all_root` makes everything 0:0.
#[test]
fn test_write_owner_mapping() {
    let s = source();
    let dir = tempdir();
    let img = dir.path().join("o.sqfs");
    write_with(
        &s.src,
        &img,
        WriteOptions {
            id_map: Some(Box::new(|u, g| (u + 100_000, g + 200_000))),
            ..WriteOptions::default()
        },
    );
    let fs = SquashFs::open(File::open(&img).expect("open"), 0).expect("open");
    let got = reader_snapshot(&fs);
    for (p, w) in &s.want {
        let g = &got[p];
        assert_eq!(
            (g.uid, g.gid),
            (w.uid + 100_000, w.gid + 200_000),
            "{}",
            p.display()
        );
    }
    write_with(
        &s.src,
        &img,
        WriteOptions {
            all_root: true,
            id_map: Some(Box::new(|u, g| (u + 1, g + 1))),
            ..WriteOptions::default()
        },
    );
    let fs = SquashFs::open(File::open(&img).expect("open"), 0).expect("open");
    assert!(
        reader_snapshot(&fs)
            .values()
            .all(|n| (n.uid, n.gid) == (0, 0))
    );
}

/// Identical files are stored once (and read back right, see the compressor tests); turning
/// detection off stores them twice.
#[test]
fn test_write_duplicates() {
    let s = source();
    let dir = tempdir();
    let img = dir.path().join("d.sqfs");
    let on = write_with(&s.src, &img, WriteOptions::default());
    // dup-b (blocks) and dup-s2 (fragment only); same-size differs.
    assert_eq!(on.duplicates, 2);
    let off = write_with(
        &s.src,
        &img,
        WriteOptions {
            duplicates: false,
            ..WriteOptions::default()
        },
    );
    assert_eq!(off.duplicates, 0);
    assert!(
        off.bytes_used > on.bytes_used + BS as u64 / 2,
        "{off:?} vs {on:?}"
    );
    // zeros (3 blocks) and the holes of `sparse` are sparse blocks.
    assert!(on.sparse_blocks >= 3 + 5, "{on:?}");
}

/// An image at an offset inside another file leaves the bytes before it alone.
#[test]
fn test_write_at_offset() {
    let s = source();
    let dir = tempdir();
    let img = dir.path().join("sif");
    let mut f = File::create(&img).expect("create");
    std::io::Write::write_all(&mut f, &[0xA5; 65536]).expect("prefix");
    let w = Writer::new(WriteOptions::default()).expect("options");
    let st = w.write_dir_at(&s.src, &mut f, 65536).expect("write");
    drop(f);
    let bytes = fs::read(&img).expect("read");
    assert!(bytes[..65536].iter().all(|&b| b == 0xA5));
    assert_eq!(bytes.len() as u64, 65536 + st.bytes_written);
    assert_eq!(st.bytes_written % 4096, 0);
    check_reader(&img, 65536, &s.want, &s.mtimes, "offset");
    check_listing(&img, 65536, &s.want, "offset");
}

/// The image being written inside the source tree is left out of it.
#[test]
fn test_write_output_inside_source() {
    let dir = tempdir();
    let src = dir.path().join("t");
    fs::create_dir(&src).expect("mkdir");
    fs::write(src.join("a"), b"a").expect("write");
    let img = src.join("image.sqfs");
    write_with(&src, &img, WriteOptions::default());
    let fs = SquashFs::open(File::open(&img).expect("open"), 0).expect("open");
    assert!(fs.lookup(fs.root(), b"a").expect("lookup").is_some());
    assert_eq!(fs.lookup(fs.root(), b"image.sqfs").expect("lookup"), None);
    assert_eq!(fs.inode_count(), 2);
}

/// Thousands of files and ids with 4 KiB blocks: multi-block fragment, export and id tables,
/// and directories big enough for an index; listing resumes and lookups work everywhere.
#[test]
fn test_write_many_files() {
    let dir = tempdir();
    let src = dir.path().join("many");
    for d in 0..8 {
        let sub = src.join(format!("d{d}"));
        fs::create_dir_all(&sub).expect("mkdir");
        for f in 0..1000 {
            let p = sub.join(format!("file-with-a-long-name-{f:05}"));
            fs::write(&p, bytes((d * 1000 + f) as u64, 300 + f % 500, true)).expect("write");
            if is_root() {
                lchown(&p, 10_000 + (d * 1000 + f) as u32, 7);
            }
        }
    }
    // One xattr, so that the image has an xattr table: without one the kernel answers
    // listxattr with EOPNOTSUPP (as for mksquashfs images), which snapshot_dir rejects.
    let c = std::ffi::CString::new(src.as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: valid C strings and a value buffer of the given length.
    let r = unsafe {
        libc::setxattr(
            c.as_ptr(),
            c"user.big".as_ptr(),
            b"dir".as_ptr().cast(),
            3,
            0,
        )
    };
    assert_eq!(r, 0, "setxattr");
    let want = snapshot_dir(&src);
    let mtimes = want
        .keys()
        .map(|p| {
            let md = fs::symlink_metadata(src.join(p)).expect("lstat");
            (p.clone(), md.mtime() as u32)
        })
        .collect();
    let img = dir.path().join("many.sqfs");
    let st = write_with(
        &src,
        &img,
        WriteOptions {
            block_size: 4096,
            compressor: Compressor::Lz4,
            ..WriteOptions::default()
        },
    );
    assert!(st.fragments > 1024, "{st:?}");
    if is_root() {
        assert!(st.ids > 2048, "{st:?}");
    }
    check_reader(&img, 0, &want, &mtimes, "many");
    check_listing(&img, 0, &want, "many");
    check_kernel_many(&img, &want);
    // Lookups of every name in one big directory.
    let fs = SquashFs::open(File::open(&img).expect("open"), 0).expect("open");
    let d3 = fs.lookup(fs.root(), b"d3").expect("lookup").expect("d3");
    for f in (0..1000).step_by(7) {
        let name = format!("file-with-a-long-name-{f:05}");
        assert!(
            fs.lookup(d3, name.as_bytes()).expect("lookup").is_some(),
            "{name}"
        );
    }
    assert_eq!(
        fs.lookup(d3, b"file-with-a-long-name-00000~")
            .expect("lookup"),
        None
    );
}

fn check_kernel_many(img: &Path, want: &Snapshot) {
    if !is_root() {
        return;
    }
    let dir = tempdir();
    let mnt = dir.path().join("m");
    fs::create_dir(&mnt).expect("mkdir");
    let ok = Command::new("mount")
        .args(["-t", "squashfs", "-o", "loop,ro"])
        .arg(img)
        .arg(&mnt)
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("SKIP kernel mount (many)");
        return;
    }
    let got = snapshot_dir(&mnt);
    // Name lookups through the kernel (it uses the directory index).
    let probe = mnt.join("d5/file-with-a-long-name-00777");
    let found = probe.exists();
    let st = Command::new("umount").arg(&mnt).status();
    assert!(st.is_ok_and(|s| s.success()), "umount");
    assert!(found);
    assert_same(want, &got, "many (kernel)");
}

/// Errors name the path and the cause.
#[test]
fn test_write_errors() {
    let dir = tempdir();
    let img = dir.path().join("e.sqfs");
    let w = Writer::new(WriteOptions::default()).expect("options");
    let mut f = File::create(&img).expect("create");
    let missing = dir.path().join("missing");
    let e = w.write_dir(&missing, &mut f).expect_err("missing source");
    assert!(matches!(e, WriteError::Source { .. }), "{e:?}");
    assert!(e.to_string().contains("missing"), "{e}");
    let file = dir.path().join("plain");
    fs::write(&file, b"x").expect("write");
    let e = w.write_dir(&file, &mut f).expect_err("file source");
    assert!(e.to_string().contains("not a directory"), "{e}");
    assert!(matches!(
        Writer::new(WriteOptions {
            compressor: Compressor::Lzma,
            ..WriteOptions::default()
        }),
        Err(WriteError::Options(_))
    ));
}

/// A file the writer cannot read is an error naming it (checked as an unprivileged user:
/// root reads everything).
#[test]
fn test_write_unreadable_file() {
    let dir = tempdir();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
    let src = dir.path().join("t");
    fs::create_dir_all(src.join("d")).expect("mkdir");
    fs::write(src.join("d/ok"), b"fine").expect("write");
    fs::write(src.join("d/secret"), b"no").expect("write");
    fs::set_permissions(src.join("d/secret"), fs::Permissions::from_mode(0o000)).expect("chmod");
    let out = dir.path().join("out");
    fs::create_dir(&out).expect("mkdir");
    fs::set_permissions(&out, fs::Permissions::from_mode(0o777)).expect("chmod");
    let img = out.join("e.sqfs");
    if is_root() {
        // Run the check below as `nobody` in a child (this test binary, ignored test).
        use std::os::unix::process::CommandExt;
        let o = Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "--exact",
                "helper_unreadable_as_user",
                "--ignored",
                "--nocapture",
            ])
            .env("SQW_SRC", &src)
            .env("SQW_IMG", &img)
            .uid(65534)
            .gid(65534)
            .output()
            .expect("run helper");
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success() && out.contains("1 passed"),
            "helper failed: {out}\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
    } else {
        unreadable_check(&src, &img);
    }
}

fn unreadable_check(src: &Path, img: &Path) {
    let w = Writer::new(WriteOptions::default()).expect("options");
    let mut f = File::create(img).expect("create");
    let e = w.write_dir(src, &mut f).expect_err("unreadable file");
    let msg = e.to_string();
    assert!(matches!(e, WriteError::Source { .. }), "{e:?}");
    assert!(
        msg.contains("d/secret") && msg.contains("ermission denied"),
        "{msg}"
    );
}

#[test]
#[ignore = "helper of test_write_unreadable_file, run as an unprivileged user"]
fn helper_unreadable_as_user() {
    let (Some(src), Some(img)) = (std::env::var_os("SQW_SRC"), std::env::var_os("SQW_IMG")) else {
        return;
    };
    unreadable_check(Path::new(&src), Path::new(&img));
}

/// Peak RSS of writing a 256 MiB file (and 5000 small ones) stays far below the data size:
/// data streams through a fixed buffer pool. Measured in a child process (this binary).
#[test]
fn test_write_memory_bounded() {
    let dir = tempdir();
    let src = dir.path().join("t");
    fs::create_dir_all(src.join("small")).expect("mkdir");
    {
        let mut f = File::create(src.join("big")).expect("create");
        let chunk = bytes(99, 1 << 20, true);
        for i in 0..256u32 {
            let mut c = chunk.clone();
            c[..4].copy_from_slice(&i.to_le_bytes());
            std::io::Write::write_all(&mut f, &c).expect("write");
        }
    }
    for i in 0..5000 {
        fs::write(src.join(format!("small/{i}")), format!("small file {i}\n")).expect("write");
    }
    let img = dir.path().join("m.sqfs");
    let o = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "helper_write_for_memory",
            "--ignored",
            "--nocapture",
        ])
        .env("SQW_SRC", &src)
        .env("SQW_IMG", &img)
        .output()
        .expect("run helper");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success() && out.contains("1 passed"), "{out}");
    // The child's own high-water mark (wait4's ru_maxrss would include this process's
    // memory: the child is spawned with a shared address space until exec).
    let hwm: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("helper prints VmHWM");
    eprintln!("peak RSS writing 256 MiB + 5000 files: {hwm} KiB");
    assert!(hwm < 48 * 1024, "peak RSS {hwm} KiB");
    // And the image is right.
    let fs = SquashFs::open(File::open(&img).expect("open"), 0).expect("open");
    let big = fs.lookup(fs.root(), b"big").expect("lookup").expect("big");
    let mut want = File::open(src.join("big")).expect("open");
    let (mut a, mut b) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    let mut off = 0u64;
    loop {
        let n = fs.read(big, off, &mut a).expect("read");
        if n == 0 {
            break;
        }
        std::io::Read::read_exact(&mut want, &mut b[..n]).expect("read source");
        assert!(a[..n] == b[..n], "big differs at {off}");
        off += n as u64;
    }
    assert_eq!(off, 256 << 20);
}

#[test]
#[ignore = "helper of test_write_memory_bounded"]
fn helper_write_for_memory() {
    let (Some(src), Some(img)) = (std::env::var_os("SQW_SRC"), std::env::var_os("SQW_IMG")) else {
        return;
    };
    write_with(
        Path::new(&src),
        Path::new(&img),
        WriteOptions {
            compressor: Compressor::Lz4,
            threads: 4,
            ..WriteOptions::default()
        },
    );
    let status = fs::read_to_string("/proc/self/status").expect("status");
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM");
    println!("{hwm}");
}
