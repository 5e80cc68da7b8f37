//! Phase B: mount images through the kernel with our FUSE server inside a fresh user+mount
//! namespace (no root, no fusermount) and compare what std::fs sees with the source tree.
//! Run as root by `cargo test`, and as an unprivileged user by `fuse/tests/unprivileged.sh`.
//! Without /dev/fuse or user namespaces the tests print SKIP, unless SIFR_CI=1 (then fail).

#[path = "../../squashfs/tests/common/mod.rs"]
mod common;
mod userns;

use std::ffi::CString;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use sifr_fuse::{MountOptions, SquashFs, mount_image};
use userns::*;

/// The image inode a path resolves to through the reader.
fn reader_ino(fs: &SquashFs, p: &Path) -> u32 {
    p.components().fold(fs.root(), |dir, c| {
        fs.lookup(dir, c.as_os_str().as_bytes())
            .expect("lookup")
            .expect("path exists")
    })
}

fn llistxattr(p: &Path) -> Vec<u8> {
    let c = CString::new(p.as_os_str().as_bytes()).expect("no NUL");
    let mut buf = vec![0u8; 4096];
    // SAFETY: valid C string and a writable buffer of buf.len() bytes.
    let n = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    assert!(n >= 0, "llistxattr: {}", std::io::Error::last_os_error());
    buf.truncate(n as usize);
    buf
}

#[test]
fn test_mount_tree_through_kernel() {
    let dir = tempdir();
    let src = dir.path().join("src");
    build_tree(&src);
    // "odd" stays readable by others here: its owner is unmapped in the namespace.
    let pseudo = dir.path().join("pseudo");
    std::fs::write(&pseudo, PSEUDO.replace("odd m 4751", "odd m 4755")).expect("write pseudo");
    let img = dir.path().join("tree.sqfs");
    mksquashfs(
        &src,
        &img,
        "zstd",
        &["-pf", pseudo.to_str().expect("utf-8"), "-tailends"],
    );
    let mut want = snapshot_dir(&src);
    apply_pseudo(&mut want);
    if let Some(n) = want.get_mut(Path::new("odd")) {
        n.mode = libc::S_IFREG | 0o4755;
    }
    // Identity map: files owned by the user who built the image stay theirs.
    let want = as_seen_in_userns(want, None);
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).expect("mkdir mnt");

    in_userns(None, || {
        let fs = Arc::new(
            SquashFs::open(File::open(&img).map_err(|e| e.to_string())?, 0)
                .map_err(|e| e.to_string())?,
        );
        let opts = MountOptions {
            threads: Some(4),
            ..MountOptions::default()
        };
        let h = mount_image(Arc::clone(&fs), &mnt, &opts).map_err(|e| e.to_string())?;
        let got = snapshot_dir(&mnt);
        assert_same(&want, &got, "through FUSE");
        for (p, n) in &got {
            // st_ino is the squashfs inode number, for the root too (not FUSE's node id 1).
            assert_eq!(
                n.ino,
                u64::from(reader_ino(&fs, p)),
                "st_ino of {}",
                p.display()
            );
            assert_eq!(n.nlink, want[p].nlink, "nlink of {}", p.display());
        }
        // Hidden namespaces are not even listed.
        assert_eq!(llistxattr(&mnt.join("frag")), b"user.shared\0");
        // Concurrent random reads of a multi-block file through the kernel.
        let big = Arc::new(std::fs::read(src.join("big")).map_err(|e| e.to_string())?);
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
        // Writes are refused.
        let w = std::fs::OpenOptions::new()
            .write(true)
            .open(mnt.join("tiny"));
        ensure(w.is_err(), || "opening for write succeeded".into())?;
        ensure(h.is_serving(), || "workers stopped early".into())?;
        h.unmount_and_join().map_err(|e| e.to_string())?;
        let left = std::fs::read_dir(&mnt).map_err(|e| e.to_string())?.count();
        ensure(left == 0, || {
            format!("{left} entries still visible after unmount")
        })?;

        // The server stops by itself when the mount goes away behind its back.
        let h = mount_image(Arc::clone(&fs), &mnt, &opts).map_err(|e| e.to_string())?;
        ensure(mnt.join("tiny").exists(), || {
            "second mount not visible".into()
        })?;
        nix::mount::umount2(&mnt, nix::mount::MntFlags::MNT_DETACH).map_err(|e| e.to_string())?;
        let t0 = Instant::now();
        while h.is_serving() && t0.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(10));
        }
        ensure(!h.is_serving(), || {
            "workers still running 10 s after the mount went away".into()
        })?;
        h.unmount_and_join().map_err(|e| e.to_string())
    });
}

#[test]
fn test_mount_busybox_sif_at_offset() {
    let Some((sif, off)) = busybox_sif() else {
        skip_or_fail("busybox fixture not found");
        return;
    };
    let dir = tempdir();
    let mnt: PathBuf = dir.path().join("mnt");
    std::fs::create_dir(&mnt).expect("mkdir mnt");
    // The image is root-owned: map our id to 0 inside, as the runtime does.
    in_userns(Some(0), || {
        let fs = Arc::new(
            SquashFs::open(File::open(&sif).map_err(|e| e.to_string())?, off)
                .map_err(|e| e.to_string())?,
        );
        let want = as_seen_in_userns(reader_snapshot(&fs), Some(0));
        let h = mount_image(Arc::clone(&fs), &mnt, &MountOptions::default())
            .map_err(|e| e.to_string())?;
        let got = snapshot_dir(&mnt);
        assert_same(&want, &got, "busybox through FUSE");
        for (p, n) in &got {
            assert_eq!(n.ino, want[p].ino, "st_ino of {}", p.display());
        }
        let st = nix::sys::statvfs::statvfs(&mnt).map_err(|e| e.to_string())?;
        ensure(
            st.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY),
            || "mount is not read-only".into(),
        )?;
        let info = std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| e.to_string())?;
        let line = info
            .lines()
            .find(|l| l.contains(mnt.to_str().unwrap_or("?")))
            .unwrap_or("")
            .to_string();
        ensure(
            line.contains("fuse.sifr") && line.contains("nosuid") && line.contains("nodev"),
            || format!("unexpected mountinfo line: {line}"),
        )?;
        h.unmount_and_join().map_err(|e| e.to_string())
    });
}
