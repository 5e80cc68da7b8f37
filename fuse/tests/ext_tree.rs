//! The ext2/3/4 reader (`ExtFs`) against images that `mke2fs -d` makes from a known tree,
//! walked through the `ImageBackend` API and through a real FUSE mount in a user namespace
//! (no root, no fusermount); the two-groups SIF fixture's ext partition; journal replay;
//! corrupt and truncated copies. Needs e2fsprogs (mke2fs, e2fsck, debugfs).

#[path = "../../squashfs/tests/common/mod.rs"]
mod common;
mod userns;

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};

use common::*;
use sifr_fuse::ext::{ExtError, Options};
use sifr_fuse::{ExtFs, FileType, ImageBackend, MountOptions, mount_image};
use userns::*;

/// Entries of the big directory: several blocks of entries, so `e2fsck -D` indexes it.
const MANY: usize = 400;

/// Builds the source tree under `root` (which must not exist).
fn build_ext_tree(root: &Path) {
    std::fs::create_dir_all(root.join("sub/deeper")).expect("mkdir");
    let w = |p: &str, d: &[u8]| std::fs::write(root.join(p), d).expect("write");
    w("empty", b"");
    w("tiny", b"hello\n");
    w("small", &bytes(1, 5000, true));
    w("multi", &bytes(2, 3 * 4096 + 100, false));
    // 1 MiB + a bit: with 1 KiB blocks this needs the double-indirect block map.
    w("big", &bytes(3, (1 << 20) + 12345, true));
    w("sub/deeper/nested", b"nested file\n");
    // Sparse: a hole at the start, data in the middle, a hole at the end.
    let sparse = File::create(root.join("sparse")).expect("create sparse");
    std::os::unix::fs::FileExt::write_all_at(&sparse, &bytes(4, 1000, false), 40_000)
        .expect("write");
    sparse.set_len(100_000).expect("truncate");
    drop(sparse);
    // Sparse with holes that span whole indirect blocks of a block map (1 KiB blocks: the
    // single-indirect range; 4 KiB blocks: direct blocks and a second-level block).
    let sparse2 = File::create(root.join("sparse2")).expect("create sparse2");
    std::os::unix::fs::FileExt::write_all_at(&sparse2, &bytes(6, 100, false), 0).expect("write");
    std::os::unix::fs::FileExt::write_all_at(&sparse2, &bytes(7, 5000, false), 5 << 20)
        .expect("write");
    sparse2.set_len(6 << 20).expect("truncate");
    drop(sparse2);
    // Hard links: three names for one inode, one in another directory.
    w("hard1", &bytes(5, 9000, true));
    std::fs::hard_link(root.join("hard1"), root.join("hard2")).expect("link");
    std::fs::hard_link(root.join("hard1"), root.join("sub/hard3")).expect("link");
    // Symlinks: fast (in the inode, up to 59 bytes) and slow (in a block).
    symlink("tiny", root.join("link")).expect("symlink");
    symlink("sub/deeper/../deeper/nested", root.join("sub/rel")).expect("symlink");
    symlink("y".repeat(59), root.join("link59")).expect("symlink");
    symlink("z".repeat(60), root.join("link60")).expect("symlink");
    // Each component at most 255 bytes: ext4-view refuses longer ones.
    let long = format!("/{0}/{0}/{0}", "x".repeat(100));
    symlink(long, root.join("longlink")).expect("symlink");
    symlink("missing-target", root.join("dangling")).expect("symlink");
    std::fs::create_dir(root.join("many")).expect("mkdir");
    for i in 0..MANY {
        let name = format!("entry-with-a-longish-name-{i:04}");
        std::fs::write(root.join("many").join(name), format!("{i}\n")).expect("write");
    }
    // A name that is not UTF-8.
    std::fs::write(
        root.join(std::ffi::OsStr::from_bytes(b"caf\xe9")),
        b"latin-1 name\n",
    )
    .expect("write");
    std::fs::create_dir(root.join("emptydir")).expect("mkdir");
    let fifo = std::ffi::CString::new(root.join("fifo").as_os_str().as_bytes()).expect("path");
    // SAFETY: fifo is a valid C string.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o640) }, 0, "mkfifo");
    drop(std::os::unix::net::UnixListener::bind(root.join("sock")).expect("bind socket"));
    // Odd permissions (each still readable by its owner, as mke2fs must read it).
    let chmod = |p: &str, m: u32| {
        std::fs::set_permissions(root.join(p), std::fs::Permissions::from_mode(m)).expect("chmod")
    };
    chmod("tiny", 0o600);
    chmod("small", 0o4755);
    chmod("multi", 0o2711);
    chmod("empty", 0o444);
    chmod("sub", 0o1777);
    chmod("emptydir", 0o700);
}

struct Source {
    _dir: tempfile::TempDir,
    src: PathBuf,
    want: Snapshot,
}

/// What the image must show: the source, with every nlink 1 and one inode number per path
/// (ext4-view exposes neither link counts nor inode numbers).
fn as_ext_shows(mut s: Snapshot) -> Snapshot {
    for (i, n) in s.values_mut().enumerate() {
        n.nlink = 1;
        n.ino = i as u64 + 1;
        n.xattrs.clear();
    }
    s
}

fn source() -> &'static Source {
    static S: OnceLock<Source> = OnceLock::new();
    S.get_or_init(|| {
        let dir = tempdir();
        let src = dir.path().join("src");
        build_ext_tree(&src);
        let want = as_ext_shows(snapshot_dir(&src));
        Source {
            _dir: dir,
            src,
            want,
        }
    })
}

fn run(cmd: &mut Command, what: &str, ok_codes: &[i32]) -> String {
    let o = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what} runs (install e2fsprogs): {e}"));
    let code = o.status.code().unwrap_or(-1);
    assert!(
        ok_codes.contains(&code),
        "{what} failed ({code}): {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `mke2fs -t fstype -b block_size -d src` into a new `size_mib` MiB image at `out`, without
/// lost+found, with big directories indexed (`e2fsck -fD`). The root directory gets the
/// source's owner (mke2fs makes it 0:0 otherwise; -d keeps the owners of everything else).
fn mke2fs(src: &Path, out: &Path, fstype: &str, block_size: u32, size_mib: u32) {
    let md = std::fs::metadata(src).expect("stat source");
    let bs = block_size.to_string();
    run(
        Command::new("mke2fs")
            .args(["-q", "-F", "-t", fstype, "-b", &bs, "-E"])
            .arg(format!("root_owner={}:{}", md.uid(), md.gid()))
            .arg("-d")
            .arg(src)
            .arg(out)
            .arg(format!("{size_mib}M")),
        "mke2fs",
        &[0],
    );
    // 0: nothing to do, 1: directories optimized.
    run(
        Command::new("e2fsck").args(["-f", "-y", "-D"]).arg(out),
        "e2fsck -fyD",
        &[0, 1],
    );
    debugfs_w(out, "rmdir /lost+found");
}

fn debugfs_w(img: &Path, req: &str) {
    run(
        Command::new("debugfs").args(["-w", "-R", req]).arg(img),
        "debugfs -w",
        &[0],
    );
}

fn debugfs(img: &Path, req: &str) -> String {
    run(
        Command::new("debugfs").args(["-R", req]).arg(img),
        "debugfs",
        &[0],
    )
}

/// Whether `path` in `img` is a hash-indexed (htree) directory.
fn is_htree(img: &Path, path: &str) -> bool {
    let out = debugfs(img, &format!("stat {path}"));
    let flags = out
        .split("Flags: 0x")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|h| u32::from_str_radix(h, 16).ok())
        .expect("debugfs stat prints Flags");
    flags & 0x1000 != 0
}

fn open(img: &Path) -> ExtFs {
    ExtFs::open(File::open(img).expect("open image"), 0).expect("open ext")
}

/// Reads a whole file through the backend, in odd-sized sequential chunks.
fn read_all<B: ImageBackend>(fs: &B, ino: u64, size: u64) -> Vec<u8> {
    let mut data = Vec::new();
    let mut buf = vec![0u8; 70001];
    loop {
        let n = fs.read(ino, data.len() as u64, &mut buf).expect("read");
        if n == 0 {
            break;
        }
        data.extend_from_slice(&buf[..n]);
        assert!(data.len() as u64 <= size, "read past the size");
    }
    data
}

/// Lists a directory from `cookie` through the backend: (name, ino, kind, next cookie).
fn list<B: ImageBackend>(fs: &B, dir: u64, cookie: u64) -> Vec<(Vec<u8>, u64, FileType, u64)> {
    let mut out = Vec::new();
    fs.readdir(dir, cookie, true, &mut |e, a| {
        let a = a.expect("readdirplus gives attributes");
        assert_eq!((u64::from(a.ino), a.kind), (u64::from(e.ino), e.kind));
        out.push((e.name.to_vec(), u64::from(e.ino), e.kind, e.next_cookie));
        true
    })
    .expect("readdir");
    out
}

/// Walks the whole image through the backend API into a snapshot, checking that lookup,
/// stat and readdir agree and that listings resume at every cookie of small directories.
fn walk<B: ImageBackend>(fs: &B, ino: u64, path: PathBuf, out: &mut Snapshot) {
    let a = fs.stat(ino).expect("stat");
    assert_eq!(u64::from(a.ino), ino);
    let data = match a.kind {
        FileType::Regular => read_all(fs, ino, a.size),
        FileType::Symlink => fs.readlink(ino).expect("readlink"),
        _ => vec![],
    };
    assert!(fs.listxattr(ino).expect("listxattr").is_empty());
    out.insert(
        path.clone(),
        Node {
            mode: a.mode,
            uid: a.uid,
            gid: a.gid,
            size: if a.kind == FileType::Directory {
                0
            } else {
                a.size
            },
            data,
            dev: None,
            xattrs: vec![],
            ino,
            nlink: a.nlink,
        },
    );
    if a.kind != FileType::Directory {
        return;
    }
    let all = list(fs, ino, 0);
    let mut prev = 0;
    for (i, (name, child, kind, cookie)) in all.iter().enumerate() {
        assert!(*cookie > prev, "cookies increase");
        prev = *cookie;
        let l = fs
            .lookup(ino, name)
            .expect("lookup")
            .expect("listed name exists");
        assert_eq!((u64::from(l.ino), l.kind), (*child, *kind));
        if all.len() < 50 || i % 97 == 0 {
            assert_eq!(list(fs, ino, *cookie), all[i + 1..], "resume after {i}");
        }
    }
    assert_eq!(fs.lookup(ino, b"no-such-name").expect("lookup"), None);
    for (name, child, _, _) in all {
        walk(
            fs,
            child,
            path.join(std::ffi::OsStr::from_bytes(&name)),
            out,
        );
    }
}

fn backend_snapshot(fs: &ExtFs) -> Snapshot {
    let mut out = Snapshot::new();
    walk(fs, u64::from(fs.root()), PathBuf::new(), &mut out);
    out
}

/// Reads at awkward offsets and compares with the source bytes.
fn random_reads(fs: &ExtFs, ino: u32, want: &[u8]) {
    let len = want.len() as u64;
    let bs = u64::from(fs.block_size());
    let mut offs = vec![len.saturating_sub(1), 0, bs - 1, bs, bs + 1, len, len + 10];
    offs.extend((1..20).map(|i| (i * 7919 * 13) % (len + 1)));
    for off in offs {
        for n in [1usize, 100, 4096, bs as usize + 3] {
            let mut buf = vec![0xAAu8; n];
            let got = fs.read(ino, off, &mut buf).expect("read");
            let start = off.min(len) as usize;
            let end = (start + n).min(want.len());
            assert_eq!(&buf[..got], &want[start..end], "read {n} at {off} of {ino}");
        }
    }
}

fn ino_of(fs: &ExtFs, p: impl AsRef<Path>) -> u32 {
    let p = p.as_ref();
    p.components().fold(fs.root(), |dir, c| {
        fs.lookup(dir, c.as_os_str().as_bytes())
            .expect("lookup")
            .unwrap_or_else(|| panic!("{} exists", p.display()))
    })
}

fn check_image(img: &Path, ctx: &str) {
    let s = source();
    let fs = open(img);
    assert_eq!(fs.known_inodes(), 1, "{ctx}: open must not walk the tree");
    assert!(is_htree(img, "/many"), "{ctx}: /many is not hash-indexed");
    let got = backend_snapshot(&fs);
    assert_same(&s.want, &got, ctx);
    for (p, n) in &got {
        assert_eq!(n.nlink, 1, "{ctx}: nlink of {}", p.display());
    }
    assert_eq!(fs.known_inodes(), got.len(), "{ctx}: one number per path");
    // Stable numbers: asking again gives the same ones.
    let again = backend_snapshot(&fs);
    for (p, n) in &got {
        assert_eq!(
            again[p].ino,
            n.ino,
            "{ctx}: number of {} changed",
            p.display()
        );
    }
    // Hard links read the same data under distinct numbers (documented limitation).
    let links: Vec<u32> = ["hard1", "hard2", "sub/hard3"]
        .iter()
        .map(|p| ino_of(&fs, p))
        .collect();
    assert!(links[0] != links[1] && links[1] != links[2] && links[0] != links[2]);
    for (p, n) in &got {
        if n.mode & libc::S_IFMT == libc::S_IFREG && n.size > 0 {
            random_reads(&fs, n.ino as u32, &s.want[p].data);
        }
    }
    // Times: mke2fs -d keeps the source's mtime.
    for p in ["big", "sub/deeper/nested", "sparse"] {
        let want = std::fs::metadata(s.src.join(p)).expect("stat").mtime();
        let a = fs.stat(ino_of(&fs, p)).expect("stat");
        assert_eq!(i64::from(a.mtime), want, "{ctx}: mtime of {p}");
    }
    // Wrong types give the errno the kernel expects.
    let root = fs.root();
    let tiny = ino_of(&fs, "tiny");
    let err = |r: Result<(), ExtError>| r.err().map(|e| e.errno());
    assert_eq!(err(fs.lookup(tiny, b"x").map(drop)), Some(libc::ENOTDIR));
    assert_eq!(
        err(fs.read(root, 0, &mut [0u8; 4]).map(drop)),
        Some(libc::EISDIR)
    );
    assert_eq!(err(fs.readlink(tiny).map(drop)), Some(libc::EINVAL));
    assert_eq!(err(fs.stat(9_999_999).map(drop)), Some(libc::ENOENT));
    assert_eq!(
        err(fs.readdir(tiny, 0, &mut |_, _| true)),
        Some(libc::ENOTDIR)
    );
    // Odd names never reach the image.
    for name in [&b""[..], b"a/b", b"a\0b", &[b'n'; 256]] {
        assert_eq!(fs.lookup(root, name).expect("lookup"), None);
    }
    assert_eq!(fs.lookup(root, b".").expect("lookup"), Some(root));
    assert_eq!(
        fs.lookup(ino_of(&fs, "sub"), b"..").expect("lookup"),
        Some(root)
    );
    // A bogus cookie ends the listing.
    let mut n = 0;
    fs.readdir(root, u64::MAX, &mut |_, _| {
        n += 1;
        true
    })
    .expect("readdir");
    assert_eq!(n, 0);
    let st = ImageBackend::stats(&fs);
    assert_eq!(st.block_size, fs.block_size());
    assert!(st.blocks > 0 && st.files > 0);
}

#[test]
fn test_ext2_1k_blocks_block_maps() {
    let dir = tempdir();
    let img = dir.path().join("tree.ext2");
    mke2fs(&source().src, &img, "ext2", 1024, 16);
    check_image(&img, "ext2 1k");
}

#[test]
fn test_ext3_with_journal() {
    let dir = tempdir();
    let img = dir.path().join("tree.ext3");
    mke2fs(&source().src, &img, "ext3", 4096, 16);
    let features = run(
        Command::new("dumpe2fs").arg("-h").arg(&img),
        "dumpe2fs",
        &[0],
    );
    assert!(features.contains("has_journal"), "{features}");
    check_image(&img, "ext3");
}

#[test]
fn test_ext4_extents_and_checksums() {
    let dir = tempdir();
    let img = dir.path().join("tree.ext4");
    mke2fs(&source().src, &img, "ext4", 4096, 16);
    let features = run(
        Command::new("dumpe2fs").arg("-h").arg(&img),
        "dumpe2fs",
        &[0],
    );
    assert!(
        features.contains("extent") && features.contains("metadata_csum"),
        "{features}"
    );
    check_image(&img, "ext4");
}

/// Many threads walk one `ExtFs` at once: every walk sees the same tree with the same
/// numbers (the table hands out one number per path, whoever asks first).
#[test]
fn test_concurrent_walks_agree() {
    let s = source();
    let dir = tempdir();
    let img = dir.path().join("tree.ext4");
    mke2fs(&s.src, &img, "ext4", 4096, 16);
    let opts = Options {
        threads: 3,
        ..Options::default()
    };
    let fs = Arc::new(ExtFs::open_with(File::open(&img).expect("open"), 0, opts).expect("open"));
    let walks: Vec<_> = (0..6)
        .map(|_| {
            let fs = Arc::clone(&fs);
            std::thread::spawn(move || backend_snapshot(&fs))
        })
        .collect();
    let snaps: Vec<Snapshot> = walks
        .into_iter()
        .map(|h| h.join().expect("walker thread"))
        .collect();
    for got in &snaps {
        assert_same(&s.want, got, "concurrent walk");
        for (p, n) in got {
            assert_eq!(n.ino, snaps[0][p].ino, "number of {}", p.display());
        }
    }
    assert_eq!(fs.known_inodes(), s.want.len());
}

/// The SIF fixture's ext partition (labelled ext3, really ext2), read at its offset with the
/// partition's size as the bound.
#[test]
fn test_two_groups_sif_partition() {
    let Some(sif) = two_groups_sif() else {
        eprintln!("SKIP: two-groups.sif fixture not found");
        return;
    };
    let opts = Options {
        size: Some(262_144),
        ..Options::default()
    };
    let fs = ExtFs::open_with(File::open(&sif).expect("open"), 40960, opts.clone())
        .expect("open partition");
    let names: Vec<_> = list(&fs, u64::from(fs.root()), 0)
        .into_iter()
        .map(|e| e.0)
        .collect();
    assert_eq!(names, vec![b"hello.txt".to_vec()]);
    let hello = ino_of(&fs, "hello.txt");
    let a = fs.stat(hello).expect("stat");
    assert_eq!((a.mode, a.uid, a.size), (libc::S_IFREG | 0o664, 0, 19));
    assert_eq!(read_all(&fs, u64::from(hello), 19), b"Hello from Sylabs!\n");
    // A smaller bound than the filesystem claims is refused as truncated.
    let small = Options {
        size: Some(100_000),
        ..opts
    };
    let e = ExtFs::open_with(File::open(&sif).expect("open"), 40960, small).expect_err("short");
    assert!(matches!(e, ExtError::Truncated { .. }), "{e}");
    // The wrong offset is no ext filesystem.
    let e = ExtFs::open(File::open(&sif).expect("open"), 0).expect_err("not ext");
    assert!(matches!(e, ExtError::BadMagic(_)), "{e}");
}

fn two_groups_sif() -> Option<PathBuf> {
    let base = std::env::var_os("SIFR_TESTDATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/testdata"));
    let p = base.join("sif/two-groups.sif");
    p.exists().then_some(p)
}

/// Writes a journal transaction (with debugfs' journal commands, as a crash would leave it)
/// that replaces the first data block of `/a` with `new`; returns the image bytes. `jo` is
/// the journal_open command: `jo -c` gives the journal checksums (csum v3) as the kernel's
/// first mount of a metadata_csum ext4 would.
fn journal_write(img: &Path, dir: &Path, jo: &str, new: &[u8]) -> Vec<u8> {
    let block = debugfs(img, "bmap /a 0").trim().to_string();
    let bs = dumpe2fs(img)
        .lines()
        .find_map(|l| l.strip_prefix("Block size:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .expect("dumpe2fs prints the block size");
    let mut data = new.to_vec();
    data.resize(bs, 0);
    let blk = dir.join("block");
    std::fs::write(&blk, &data).expect("write");
    let cmds = dir.join("cmds");
    std::fs::write(
        &cmds,
        format!("{jo}\njw -b {block} {}\njc\n", blk.display()),
    )
    .expect("write");
    run(
        Command::new("debugfs")
            .arg("-w")
            .arg("-f")
            .arg(&cmds)
            .arg(img),
        "debugfs journal write",
        &[0],
    );
    assert!(dumpe2fs(img).contains("needs_recovery"));
    std::fs::read(img).expect("read image")
}

fn dumpe2fs(img: &Path) -> String {
    run(
        Command::new("dumpe2fs").arg("-h").arg(img),
        "dumpe2fs",
        &[0],
    )
}

/// An ext4 journal (64bit, csum v3) left needing recovery is replayed in memory: the new data
/// shows, and the image is not written. An ext3 journal cannot be: a clear error says so.
#[test]
fn test_journal_replay_in_memory() {
    let dir = tempdir();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).expect("mkdir");
    std::fs::write(src.join("a"), b"old contents\n").expect("write");
    let img = dir.path().join("j.ext4");
    mke2fs(&src, &img, "ext4", 1024, 4);
    let before = journal_write(&img, dir.path(), "jo -c", b"new contents\n");
    let fs = open(&img);
    let a = ino_of(&fs, "a");
    assert_eq!(read_all(&fs, u64::from(a), 13), b"new contents\n");
    drop(fs);
    assert!(
        std::fs::read(&img).expect("read image") == before,
        "the image was written"
    );

    let img3 = dir.path().join("j.ext3");
    mke2fs(&src, &img3, "ext3", 1024, 4);
    journal_write(&img3, dir.path(), "jo", b"new contents\n");
    let e = ExtFs::open(File::open(&img3).expect("open"), 0).expect_err("ext3 replay");
    assert!(
        matches!(&e, ExtError::Unsupported(m) if m.contains("e2fsck -fy")),
        "{e}"
    );
}

/// Flipped bytes in the metadata of small images give errors or wrong data, never a panic
/// or a hang; truncated copies are refused at open.
#[test]
fn test_corrupt_and_truncated_images() {
    let dir = tempdir();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("d/many")).expect("mkdir");
    std::fs::write(src.join("a"), bytes(1, 3000, true)).expect("write");
    std::fs::write(src.join("b"), bytes(2, 300_000, true)).expect("write");
    for i in 0..200 {
        std::fs::write(src.join(format!("d/many/n{i:03}")), b"x").expect("write");
    }
    symlink("a", src.join("l")).expect("symlink");
    symlink("q".repeat(100), src.join("long")).expect("symlink");
    let mut stats = BTreeMap::new();
    for (fstype, bs) in [
        ("ext2", 1024u32),
        ("ext3", 1024),
        ("ext4", 1024),
        ("ext4", 4096),
    ] {
        let img = dir.path().join(format!("{fstype}-{bs}.img"));
        mke2fs(&src, &img, fstype, bs, 2);
        let good = std::fs::read(&img).expect("read image");
        assert_eq!(
            walk_all(&open(&img)).1,
            0,
            "{fstype}: clean image has errors"
        );
        // Metadata sits in the first blocks of each group; flip bytes there.
        let span = good.len().min(160 * 1024);
        let bad = dir.path().join("bad.img");
        let (mut opened, mut failed_ops, mut worker) = (0, 0, 0);
        for round in 0..150u64 {
            let mut data = good.clone();
            let r = bytes(round + 100, 24, false);
            for k in 0..4 {
                let pos = (u32::from_le_bytes([r[k * 4], r[k * 4 + 1], r[k * 4 + 2], r[k * 4 + 3]])
                    as usize)
                    % span;
                data[pos] ^= r[16 + k] | 1;
            }
            std::fs::write(&bad, &data).expect("write");
            match ExtFs::open(File::open(&bad).expect("open"), 0) {
                Ok(fs) => {
                    opened += 1;
                    let (_, e, w) = walk_all(&fs);
                    failed_ops += e;
                    worker += w;
                }
                Err(e) => assert_ne!(e.to_string(), "", "errors say something"),
            }
        }
        for len in [0, 1000, 2047, 2048, 4096, good.len() / 2, good.len() - 1] {
            std::fs::write(&bad, &good[..len]).expect("write");
            let e = ExtFs::open(File::open(&bad).expect("open"), 0).expect_err("truncated");
            assert!(
                matches!(e, ExtError::Truncated { .. }),
                "{fstype} cut at {len}: {e}"
            );
        }
        stats.insert(format!("{fstype}-{bs}"), (opened, failed_ops, worker));
    }
    eprintln!("(opened, failed operations, panics caught) per image: {stats:?}");
    for (k, (_, _, worker)) in &stats {
        assert_eq!(*worker, 0, "{k}: ext4-view panicked on a corrupt image");
    }
}

/// Visits everything reachable (bounded), ignoring errors: (nodes, failed operations, failures
/// that were panics caught in a reader thread).
fn walk_all(fs: &ExtFs) -> (usize, usize, usize) {
    let (mut seen, mut errors, mut worker) = (0, 0, 0);
    let mut count = |r: Result<(), ExtError>| {
        if let Err(e) = r {
            errors += 1;
            worker += usize::from(matches!(e, ExtError::Worker(_)));
        }
    };
    let mut stack = vec![fs.root()];
    let mut buf = vec![0u8; 70000];
    while let Some(ino) = stack.pop() {
        seen += 1;
        if seen > 5000 {
            break;
        }
        let a = match fs.stat(ino) {
            Ok(a) => a,
            Err(e) => {
                count(Err(e));
                continue;
            }
        };
        match a.kind {
            FileType::Regular => {
                let mut off = 0u64;
                for _ in 0..16 {
                    match fs.read(ino, off, &mut buf) {
                        Ok(0) => break,
                        Ok(n) => off += n as u64,
                        Err(e) => {
                            count(Err(e));
                            break;
                        }
                    }
                }
                count(fs.read(ino, a.size / 2, &mut buf).map(drop));
                count(fs.read(ino, a.size.saturating_sub(1), &mut buf).map(drop));
            }
            FileType::Symlink => count(fs.readlink(ino).map(drop)),
            FileType::Directory => {
                let mut kids = Vec::new();
                let r = fs.readdir(ino, 0, &mut |e, _| {
                    kids.push((e.name.to_vec(), e.ino));
                    kids.len() < 1000
                });
                count(r);
                for (name, child) in kids.iter().take(10) {
                    count(fs.lookup(ino, name).map(drop));
                    count(fs.lookup(ino, &[name.as_slice(), b"-x"].concat()).map(drop));
                    let _ = child;
                }
                stack.extend(kids.iter().map(|k| k.1));
            }
            _ => {}
        }
    }
    (seen, errors, worker)
}

/// Mounts an ext4 image through the kernel and compares what std::fs sees with the source.
#[test]
fn test_mount_ext4_through_kernel() {
    let s = source();
    let dir = tempdir();
    let img = dir.path().join("tree.ext4");
    mke2fs(&s.src, &img, "ext4", 4096, 16);
    // Identity map: files owned by the user who built the image stay theirs.
    let want = as_seen_in_userns(s.want.clone(), None);
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).expect("mkdir mnt");
    in_userns(None, || {
        let fs = Arc::new(
            ExtFs::open(File::open(&img).map_err(|e| e.to_string())?, 0)
                .map_err(|e| e.to_string())?,
        );
        let opts = MountOptions {
            threads: Some(4),
            ..MountOptions::default()
        };
        let h = mount_image(Arc::clone(&fs), &mnt, &opts).map_err(|e| e.to_string())?;
        let got = snapshot_dir(&mnt);
        assert_same(&want, &got, "ext4 through FUSE");
        for (p, n) in &got {
            // st_ino is the reader's number, the root's too (not FUSE's node id 1).
            let ino = ino_of(&fs, p);
            ensure(n.ino == u64::from(ino), || {
                format!("st_ino of {}: {} != {ino}", p.display(), n.ino)
            })?;
        }
        // Concurrent random reads of a multi-block file through the kernel.
        let big = Arc::new(std::fs::read(s.src.join("big")).map_err(|e| e.to_string())?);
        let readers: Vec<_> = (0..4u64)
            .map(|t| {
                let (big, path) = (Arc::clone(&big), mnt.join("big"));
                std::thread::spawn(move || {
                    use std::os::unix::fs::FileExt;
                    let f = File::open(&path).expect("open big");
                    let mut buf = vec![0u8; 5000];
                    for i in 0..200u64 {
                        let off = ((i * 7919 + t * 104_729) * 31) % big.len() as u64;
                        let n = f.read_at(&mut buf, off).expect("read");
                        assert_eq!(&buf[..n], &big[off as usize..off as usize + n]);
                    }
                })
            })
            .collect();
        for r in readers {
            ensure(r.join().is_ok(), || "a reader thread failed".into())?;
        }
        let w = std::fs::OpenOptions::new()
            .write(true)
            .open(mnt.join("tiny"));
        ensure(w.is_err(), || "opening for write succeeded".into())?;
        let st = nix::sys::statvfs::statvfs(&mnt).map_err(|e| e.to_string())?;
        ensure(st.block_size() == 4096, || {
            format!("statfs block size {}", st.block_size())
        })?;
        h.unmount_and_join().map_err(|e| e.to_string())
    });
}

/// The fixture's root-owned ext partition, mounted with our id mapped to 0 as the runtime does.
#[test]
fn test_mount_two_groups_sif_partition() {
    let Some(sif) = two_groups_sif() else {
        skip_or_fail("two-groups.sif fixture not found");
        return;
    };
    let dir = tempdir();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).expect("mkdir mnt");
    in_userns(Some(0), || {
        let opts = Options {
            size: Some(262_144),
            ..Options::default()
        };
        let fs = ExtFs::open_with(File::open(&sif).map_err(|e| e.to_string())?, 40960, opts)
            .map_err(|e| e.to_string())?;
        let h =
            mount_image(Arc::new(fs), &mnt, &MountOptions::default()).map_err(|e| e.to_string())?;
        let hello = std::fs::read(mnt.join("hello.txt")).map_err(|e| e.to_string())?;
        ensure(hello == b"Hello from Sylabs!\n", || {
            format!("hello.txt: {:?}", String::from_utf8_lossy(&hello))
        })?;
        let md = std::fs::metadata(mnt.join("hello.txt")).map_err(|e| e.to_string())?;
        ensure(md.uid() == 0 && md.mode() == libc::S_IFREG | 0o664, || {
            format!("hello.txt uid {} mode {:o}", md.uid(), md.mode())
        })?;
        h.unmount_and_join().map_err(|e| e.to_string())
    });
}
