//! Overlay image files on the host: what an `--overlay FILE` holds (decided by content: an
//! ext2/3/4 or squashfs filesystem, or a SIF whose overlay partitions are used), whether it
//! is whole, and the lock that keeps two sifr from writing one image at once.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::plan::{ImageFs, ImageLayer};
use crate::image::sif::{FsType, PartType, SifImage};

/// Offset of the ext2/3/4 superblock in its filesystem.
const EXT_SUPERBLOCK: u64 = 1024;

/// An overlay file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum OverlayFileError {
    #[error("--overlay {}: cannot read it: {err}", path.display())]
    Read { path: PathBuf, err: std::io::Error },
    #[error(
        "--overlay {}: not an overlay image (neither a directory, an ext3 or squashfs image, \
         nor a SIF with an overlay partition)",
        .0.display()
    )]
    NotAnImage(PathBuf),
    #[error(
        "--overlay {}: the {fs} image is truncated: its filesystem needs {need} bytes, the \
         file holds {have} (restore the image from a copy)",
        path.display()
    )]
    Truncated {
        path: PathBuf,
        fs: &'static str,
        need: u64,
        have: u64,
    },
    #[error(
        "--overlay {}: the SIF has no ext3 overlay partition (add one with 'sifr overlay \
         create', or use an overlay directory or image)",
        .0.display()
    )]
    NoOverlayPartition(PathBuf),
    #[error("--overlay {}: {err}", path.display())]
    Sif {
        path: PathBuf,
        err: crate::image::sif::SifError,
    },
}

/// The filesystems an overlay file provides, bottom first (one for a bare image; a SIF's
/// ext3 overlay partitions in partition order), all read-only here: the planner decides
/// which one is written.
pub fn probe(path: &Path) -> Result<Vec<ImageLayer>, OverlayFileError> {
    let read = |err| OverlayFileError::Read {
        path: path.to_path_buf(),
        err,
    };
    let file = File::open(path).map_err(read)?;
    let len = file.metadata().map_err(read)?.len();
    let mut head = [0u8; 4];
    let n = file.read_at(&mut head, 0).map_err(read)?;
    if is_sif(&file) {
        return sif_partitions(file, path);
    }
    let layer = |fs| ImageLayer {
        fs,
        path: path.to_path_buf(),
        offset: 0,
        size: len,
        writable: false,
    };
    if n == 4 && &head == b"hsqs" {
        let l = layer(ImageFs::Squashfs);
        check_whole(&file, &l)?;
        return Ok(vec![l]);
    }
    if has_ext_magic(&file, 0) {
        let l = layer(ImageFs::Ext3);
        check_whole(&file, &l)?;
        return Ok(vec![l]);
    }
    Err(OverlayFileError::NotAnImage(path.to_path_buf()))
}

/// True when the file starts with a SIF header (after an optional launch line).
fn is_sif(file: &File) -> bool {
    let mut head = [0u8; 64];
    let Ok(n) = file.read_at(&mut head, 0) else {
        return false;
    };
    head[..n].windows(9).any(|w| w == b"SIF_MAGIC")
}

fn has_ext_magic(file: &File, offset: u64) -> bool {
    let mut m = [0u8; 2];
    file.read_exact_at(&mut m, offset + EXT_SUPERBLOCK + 56)
        .is_ok()
        && m == [0x53, 0xEF]
}

/// The SIF's ext3 overlay partitions (in the root partition's group, as Apptainer takes
/// them), each checked whole.
fn sif_partitions(file: File, path: &Path) -> Result<Vec<ImageLayer>, OverlayFileError> {
    let sif_err = |err| OverlayFileError::Sif {
        path: path.to_path_buf(),
        err,
    };
    let check = file.try_clone().map_err(|err| OverlayFileError::Read {
        path: path.to_path_buf(),
        err,
    })?;
    let img = SifImage::from_file(file, path).map_err(sif_err)?;
    let layers = overlay_partitions(&img, path).map_err(sif_err)?;
    if layers.is_empty() {
        return Err(OverlayFileError::NoOverlayPartition(path.to_path_buf()));
    }
    for l in &layers {
        if !has_ext_magic(&check, l.offset) {
            return Err(OverlayFileError::NotAnImage(path.to_path_buf()));
        }
        check_whole(&check, l)?;
    }
    Ok(layers)
}

/// The ext3 overlay partitions of a loaded SIF, as read-only layers (empty when it has
/// none).
pub fn overlay_partitions(
    img: &SifImage,
    path: &Path,
) -> Result<Vec<ImageLayer>, crate::image::sif::SifError> {
    Ok(img
        .overlay_partitions()?
        .into_iter()
        .filter(|p| p.part_type == PartType::Overlay && p.fs_type == FsType::Ext3)
        .map(|p| ImageLayer {
            fs: ImageFs::Ext3,
            path: path.to_path_buf(),
            offset: p.offset,
            size: p.size,
            writable: false,
        })
        .collect())
}

/// Refuses a filesystem that claims more bytes than the file (or partition) holds.
fn check_whole(file: &File, l: &ImageLayer) -> Result<(), OverlayFileError> {
    let read = |err| OverlayFileError::Read {
        path: l.path.clone(),
        err,
    };
    let (fs, need) = match l.fs {
        ImageFs::Ext3 => {
            let mut sb = [0u8; 0x160];
            file.read_exact_at(&mut sb, l.offset + EXT_SUPERBLOCK)
                .map_err(read)?;
            let u32_at = |o: usize| u32::from_le_bytes([sb[o], sb[o + 1], sb[o + 2], sb[o + 3]]);
            let lo = u64::from(u32_at(4));
            let incompat = u32_at(0x60);
            let hi = if incompat & 0x80 != 0 {
                u64::from(u32_at(0x150))
            } else {
                0
            };
            let log = u32_at(24).min(16);
            ("ext3", ((hi << 32) | lo).saturating_mul(1024u64 << log))
        }
        ImageFs::Squashfs => {
            let mut used = [0u8; 8];
            file.read_exact_at(&mut used, l.offset + 40).map_err(read)?;
            ("squashfs", u64::from_le_bytes(used))
        }
    };
    if need > l.size {
        return Err(OverlayFileError::Truncated {
            path: l.path.clone(),
            fs,
            need,
            have: l.size,
        });
    }
    Ok(())
}

/// Why an overlay image could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("cannot open the overlay image {}: {err}", path.display())]
    Open { path: PathBuf, err: std::io::Error },
    #[error(
        "the overlay image {} is in use: another sifr has it open (a writer needs it alone; \
         wait for the other to end)",
        path.display()
    )]
    Busy { path: PathBuf },
    #[error(
        "the overlay image {} is in use: another sifr has it open for writing (wait for it \
         to end)",
        path.display()
    )]
    BeingWritten { path: PathBuf },
    #[error("cannot lock the overlay image {}: {err}", path.display())]
    Lock { path: PathBuf, err: std::io::Error },
}

/// Opens an image layer's file (read-write when the layer is writable) and locks the
/// filesystem's byte range with an open-file-description lock: exclusive for a writer,
/// shared for a reader. The lock lives as long as the open file description, which sifr
/// hands to fuse2fs: a writer is refused while any other sifr uses the image, a reader
/// while another writes it.
pub fn open_locked(l: &ImageLayer) -> Result<File, LockError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(l.writable)
        .open(&l.path)
        .map_err(|err| LockError::Open {
            path: l.path.clone(),
            err,
        })?;
    let lock = libc::flock {
        l_type: if l.writable {
            libc::F_WRLCK
        } else {
            libc::F_RDLCK
        } as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: l.offset as libc::off_t,
        l_len: l.size as libc::off_t,
        l_pid: 0,
    };
    // SAFETY: F_OFD_SETLK reads the flock structure we pass; the descriptor is ours.
    let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &lock) };
    if r != 0 {
        let err = std::io::Error::last_os_error();
        return Err(match err.raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EACCES) if l.writable => LockError::Busy {
                path: l.path.clone(),
            },
            Some(libc::EAGAIN) | Some(libc::EACCES) => LockError::BeingWritten {
                path: l.path.clone(),
            },
            _ => LockError::Lock {
                path: l.path.clone(),
                err,
            },
        });
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ext superblock: `blocks` blocks of 1 KiB, in a file of `len` bytes.
    fn ext_file(dir: &Path, blocks: u32, len: u64) -> PathBuf {
        let p = dir.join("e.img");
        let f = File::create(&p).expect("create");
        f.set_len(len).expect("len");
        f.write_all_at(&blocks.to_le_bytes(), 1024 + 4).expect("w");
        f.write_all_at(&[0x53, 0xEF], 1024 + 56).expect("w");
        p
    }

    #[test]
    fn test_probe_by_content_and_truncation() {
        let t = tempfile::tempdir().expect("tmp");
        let p = ext_file(t.path(), 64, 64 * 1024);
        let l = probe(&p).expect("ext");
        assert_eq!(l.len(), 1);
        assert_eq!((l[0].fs, l[0].offset, l[0].size), (ImageFs::Ext3, 0, 65536));
        let p = ext_file(t.path(), 64, 32 * 1024);
        let e = probe(&p).expect_err("truncated").to_string();
        assert!(
            e.contains("truncated") && e.contains("65536") && e.contains("32768"),
            "{e}"
        );
        let q = t.path().join("q.sqfs");
        let mut b = vec![0u8; 4096];
        b[..4].copy_from_slice(b"hsqs");
        b[40..48].copy_from_slice(&4096u64.to_le_bytes());
        std::fs::write(&q, &b).expect("w");
        assert_eq!(probe(&q).expect("sqfs")[0].fs, ImageFs::Squashfs);
        let junk = t.path().join("junk");
        std::fs::write(&junk, b"hello world").expect("w");
        let e = probe(&junk).expect_err("junk");
        assert!(matches!(e, OverlayFileError::NotAnImage(_)), "{e}");
    }

    #[test]
    fn test_second_writer_is_refused_readers_share() {
        let t = tempfile::tempdir().expect("tmp");
        let p = ext_file(t.path(), 8, 8192);
        let mut l = probe(&p).expect("ext").remove(0);
        let r1 = { open_locked(&l).expect("reader") };
        let _r2 = open_locked(&l).expect("second reader");
        l.writable = true;
        let e = open_locked(&l).expect_err("busy").to_string();
        assert!(e.contains("another sifr has it open"), "{e}");
        drop((r1, _r2));
        let _w = open_locked(&l).expect("writer");
        let e = open_locked(&l).expect_err("busy");
        assert!(matches!(e, LockError::Busy { .. }));
        l.writable = false;
        let e = open_locked(&l).expect_err("a reader waits for the writer");
        assert!(e.to_string().contains("open for writing"), "{e}");
    }
}
