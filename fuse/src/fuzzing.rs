//! The fuzzing entry points of the image readers, shared by the `fuzz/` targets
//! (`squashfs_read`, `ext_read`) and the regression tests: open arbitrary bytes as a squashfs
//! or ext image and walk the whole tree through [`ImageBackend`] (stat, lookup, parent,
//! readdir with and without attributes and from a cookie, read of every file, readlink,
//! xattrs), within a work budget so that a directory cycle or a huge claimed size cannot make
//! one input run for long. Panics only when the reader breaks an invariant.
//!
//! The readers have no cycle detection of their own (the FUSE server relies on the kernel,
//! which refuses a second dentry for a directory): the walk keeps the set of directories it
//! has listed and counts a directory reached again instead of descending into it.

use std::collections::HashSet;
use std::fs::File;
use std::io::Write;
use std::os::fd::FromRawFd;

use crate::backend::ImageBackend;
use crate::ext::{self, ExtFs};
use crate::squashfs::{self, FileType, SquashFs};

/// How much work one walk may do.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Directory entries visited, in all.
    pub entries: usize,
    /// Entries taken from one directory.
    pub per_dir: usize,
    /// Directory depth descended.
    pub depth: usize,
    /// File bytes read, in all.
    pub read_bytes: u64,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            entries: 4096,
            per_dir: 1024,
            depth: 64,
            read_bytes: 8 << 20,
        }
    }
}

/// What a walk saw.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Walk {
    /// Directories listed.
    pub dirs: usize,
    /// Entries seen in listings.
    pub entries: usize,
    /// Regular files read (to their end or to the budget).
    pub files: usize,
    /// Symlinks read.
    pub symlinks: usize,
    /// File bytes read.
    pub read_bytes: u64,
    /// Calls that returned an error (corruption found by the reader).
    pub errors: usize,
    /// Directories reached a second time (hard-linked directories or a cycle).
    pub revisits: usize,
    /// Entries named ``, `.`, `..`, or holding `/` or NUL.
    pub odd_names: usize,
    /// True when the budget ran out before the walk ended.
    pub cut_short: bool,
}

/// A squashfs reader with small caches (each input opens a new one).
fn squashfs_options() -> squashfs::Options {
    squashfs::Options {
        data_cache_bytes: 4 << 20,
        meta_cache_bytes: 1 << 20,
        index_cache_bytes: 1 << 20,
        ..squashfs::Options::default()
    }
}

/// Opens `data` as a squashfs image and walks it; `Err` is the open error.
pub fn squashfs_open_and_walk(data: &[u8]) -> Result<Walk, String> {
    let file = memfile(data).map_err(|e| format!("memfd: {e}"))?;
    let fs = SquashFs::open_with(file, 0, squashfs_options()).map_err(|e| e.to_string())?;
    Ok(walk(&fs, Budget::default()))
}

/// Opens `data` as an ext2/3/4 image (through sifr's backend over ext4-view) and walks it;
/// `Err` is the open error.
pub fn ext_open_and_walk(data: &[u8]) -> Result<Walk, String> {
    let file = memfile(data).map_err(|e| format!("memfd: {e}"))?;
    let opts = ext::Options {
        threads: 1,
        size: None,
    };
    let fs = ExtFs::open_with(file, 0, opts).map_err(|e| e.to_string())?;
    Ok(walk(&fs, Budget::default()))
}

/// `data` in an anonymous memory file (no disk, nothing left behind).
fn memfile(data: &[u8]) -> std::io::Result<File> {
    // SAFETY: memfd_create reads a NUL-terminated name and returns a new descriptor or -1.
    let fd = unsafe { libc::memfd_create(c"sifr-fuzz".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd was just created and is owned by nothing else.
    let mut file = unsafe { File::from_raw_fd(fd) };
    file.write_all(data)?;
    Ok(file)
}

/// Counts an error result; gives the value of an Ok one.
fn ok<T, E>(w: &mut Walk, r: Result<T, E>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(_) => {
            w.errors += 1;
            None
        }
    }
}

fn odd(name: &[u8]) -> bool {
    name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0)
}

/// Walks the whole tree of `fs` from its root, depth first, within `budget`.
pub fn walk(fs: &dyn ImageBackend, budget: Budget) -> Walk {
    let mut w = Walk::default();
    let mut left = budget;
    let root = fs.root();
    let stats = fs.stats();
    assert!(stats.block_size > 0 || stats.blocks == 0, "{stats:?}");
    let mut seen: HashSet<u64> = HashSet::new();
    let mut stack = vec![(root, 0usize)];
    seen.insert(root);
    while let Some((dir, depth)) = stack.pop() {
        w.dirs += 1;
        if let Some(a) = ok(&mut w, fs.stat(dir)) {
            assert_ne!(a.ino, 0, "directory {dir}: inode number 0");
        }
        let parent = ok(&mut w, fs.parent(dir));
        if dir == root {
            assert_eq!(parent, Some(root), "the root is its own parent");
        }
        xattrs(fs, dir, &mut w);
        // The listing, without attributes.
        let mut names: Vec<(Vec<u8>, u64, FileType, u64)> = Vec::new();
        let cap = left.per_dir.min(left.entries);
        let r = fs.readdir(dir, 0, false, &mut |e, a| {
            assert!(a.is_none(), "attributes given unasked");
            if names.len() >= cap {
                return false;
            }
            names.push((e.name.to_vec(), u64::from(e.ino), e.kind, e.next_cookie));
            true
        });
        ok(&mut w, r);
        if names.len() >= cap {
            w.cut_short = true;
        }
        left.entries -= names.len();
        // With attributes: the same entries, with their attributes.
        let mut n = 0usize;
        let r = fs.readdir(dir, 0, true, &mut |e, a| {
            if n >= names.len() {
                return false;
            }
            assert_eq!(
                e.name,
                names[n].0.as_slice(),
                "directory {dir}: listing {n} differs"
            );
            assert!(a.is_some(), "directory {dir}: no attributes for {n}");
            n += 1;
            true
        });
        ok(&mut w, r);
        // Resuming after the first entry gives the second.
        if names.len() >= 2 {
            let mut next = None;
            let r = fs.readdir(dir, names[0].3, false, &mut |e, _| {
                next = Some(e.name.to_vec());
                false
            });
            if ok(&mut w, r).is_some() {
                assert_eq!(
                    next.as_deref(),
                    Some(names[1].0.as_slice()),
                    "directory {dir}: resuming from cookie {}",
                    names[0].3
                );
            }
        }
        for (name, ino, kind, _) in &names {
            w.entries += 1;
            if odd(name) {
                w.odd_names += 1;
            }
            let _ = ok(&mut w, fs.lookup(dir, name));
            let Some(attr) = ok(&mut w, fs.stat(*ino)) else {
                continue;
            };
            xattrs(fs, *ino, &mut w);
            match kind {
                FileType::Directory => {
                    if !seen.insert(*ino) {
                        w.revisits += 1;
                    } else if depth + 1 >= left.depth {
                        w.cut_short = true;
                    } else {
                        stack.push((*ino, depth + 1));
                    }
                }
                FileType::Regular => read_file(fs, *ino, attr.size, &mut left, &mut w),
                FileType::Symlink => {
                    w.symlinks += usize::from(ok(&mut w, fs.readlink(*ino)).is_some())
                }
                _ => {}
            }
        }
        // Names that are not there are not found.
        if let Some(found) = ok(&mut w, fs.lookup(dir, b"\xffsifr-fuzz-absent\xff")) {
            assert!(found.is_none(), "directory {dir}: an absent name was found");
        }
        if left.entries == 0 {
            w.cut_short = true;
            break;
        }
    }
    // Numbers that are no inode are errors, not panics.
    for ino in [0, u64::from(u32::MAX), u64::MAX] {
        let _ = fs.stat(ino);
        let _ = fs.readlink(ino);
        let _ = fs.read(ino, 0, &mut [0u8; 16]);
    }
    w
}

/// Reads file `ino` of claimed `size` to its end (or to the budget), checking the counts.
fn read_file(fs: &dyn ImageBackend, ino: u64, size: u64, left: &mut Budget, w: &mut Walk) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut off = 0u64;
    loop {
        if left.read_bytes == 0 {
            w.cut_short = true;
            return;
        }
        let want = buf
            .len()
            .min(usize::try_from(left.read_bytes).unwrap_or(usize::MAX));
        let Some(n) = ok(w, fs.read(ino, off, &mut buf[..want])) else {
            return;
        };
        assert!(n <= want, "file {ino}: read {n} bytes into {want}");
        if n == 0 {
            break;
        }
        off += n as u64;
        assert!(
            off <= size,
            "file {ino}: read {off} bytes of a {size}-byte file"
        );
        left.read_bytes -= n as u64;
        w.read_bytes += n as u64;
    }
    w.files += 1;
    // Past the end there is nothing.
    if let Some(n) = ok(w, fs.read(ino, size.saturating_add(1), &mut buf[..16])) {
        assert_eq!(n, 0, "file {ino}: read past the end");
    }
    let _ = fs.read(ino, u64::MAX - 1, &mut buf[..16]);
}

/// Lists the xattrs of `ino` and reads each, and one that is not there.
fn xattrs(fs: &dyn ImageBackend, ino: u64, w: &mut Walk) {
    if let Some(names) = ok(w, fs.listxattr(ino)) {
        for name in names.iter().take(64) {
            let _ = ok(w, fs.getxattr(ino, name));
        }
    }
    let _ = ok(w, fs.getxattr(ino, b"user.sifr-fuzz-absent"));
}
