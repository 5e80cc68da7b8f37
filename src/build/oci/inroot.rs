//! Opening directories inside a root directory as if it were `/`: symlinks (absolute or
//! relative) and `..` are resolved without ever leaving the root, so a layer that plants
//! `lib -> /etc` cannot make a later entry `lib/passwd` land on the host's `/etc`.
//!
//! `openat2(RESOLVE_IN_ROOT)` does this in the kernel (Linux 5.6+). Where it is missing
//! (ENOSYS, or EPERM from a seccomp filter) the same walk is done in user space, one
//! component at a time with `O_NOFOLLOW`, expanding symlinks by hand and clamping `..` at the
//! root. Nothing else writes into the tree while a layer is applied, so the user-space walk
//! needs no protection against concurrent renames.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicU8, Ordering};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat, openat2, readlinkat};
use nix::sys::stat::{Mode, SFlag, fstat};

/// Symlinks followed in one resolution before giving up with ELOOP (the kernel's limit).
const MAX_SYMLINKS: usize = 40;

/// 0: not tried yet, 1: openat2 works, 2: use the user-space walk.
static OPENAT2: AtomicU8 = AtomicU8::new(0);

/// Which resolver to use; tests force the fallback to check both give the same answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolver {
    /// openat2 when the kernel has it, else the user-space walk.
    Auto,
    UserSpace,
}

/// Opens directory `rel` (a `/`-separated path, leading `/` allowed) under `root` with
/// `O_PATH`, resolving it as if `root` were `/`.
pub fn open_dir_in_root(
    root: BorrowedFd<'_>,
    rel: &[u8],
    resolver: Resolver,
) -> Result<OwnedFd, Errno> {
    if resolver == Resolver::Auto && OPENAT2.load(Ordering::Relaxed) != 2 {
        match kernel_resolve(root, rel) {
            Err(Errno::ENOSYS) | Err(Errno::EPERM) if OPENAT2.load(Ordering::Relaxed) == 0 => {
                log::debug!("openat2 unavailable; resolving layer paths in user space");
                OPENAT2.store(2, Ordering::Relaxed);
            }
            other => {
                OPENAT2.store(1, Ordering::Relaxed);
                return other;
            }
        }
    }
    user_space_resolve(root, rel)
}

fn kernel_resolve(root: BorrowedFd<'_>, rel: &[u8]) -> Result<OwnedFd, Errno> {
    let path = if rel.iter().all(|&b| b == b'/') {
        OsStr::new(".")
    } else {
        OsStr::from_bytes(rel)
    };
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    // EAGAIN means a concurrent rename raced with `..`; retrying is the documented answer.
    let mut tries = 0;
    loop {
        match openat2(root, path, how) {
            Err(Errno::EAGAIN) if tries < 8 => tries += 1,
            other => return other,
        }
    }
}

fn user_space_resolve(root: BorrowedFd<'_>, rel: &[u8]) -> Result<OwnedFd, Errno> {
    walk(root, rel, None)
}

/// Opens directory `rel` under `root` like [`open_dir_in_root`], creating missing
/// directories on the way with `mkdir(parent, name)`. A dangling symlink on the way gets its
/// target created, inside the root, as `mkdir -p` through it would.
pub fn mkdir_all_in_root(
    root: BorrowedFd<'_>,
    rel: &[u8],
    mkdir: &mut dyn FnMut(BorrowedFd<'_>, &OsStr) -> Result<(), Errno>,
) -> Result<OwnedFd, Errno> {
    walk(root, rel, Some(mkdir))
}

type Mkdir<'a> = &'a mut dyn FnMut(BorrowedFd<'_>, &OsStr) -> Result<(), Errno>;

/// The user-space resolution: one component at a time, never following a symlink in the
/// kernel, clamping `..` at the root.
fn walk(root: BorrowedFd<'_>, rel: &[u8], mut mkdir: Option<Mkdir<'_>>) -> Result<OwnedFd, Errno> {
    let dup = |fd: BorrowedFd<'_>| {
        fd.try_clone_to_owned()
            .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(0)))
    };
    let mut pending: std::collections::VecDeque<OsString> = split(rel).collect();
    let mut cur = dup(root)?;
    let mut depth: usize = 0;
    let mut links = 0;
    while let Some(comp) = pending.pop_front() {
        if comp == ".." {
            // The walk never passed through a symlink lexically, so the real parent is the
            // lexical one; at the root, `..` stays at the root.
            if depth > 0 {
                cur = openat(
                    &cur,
                    "..",
                    OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )?;
                depth -= 1;
            }
            continue;
        }
        let open = |cur: &OwnedFd| {
            openat(
                cur,
                comp.as_os_str(),
                OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
        };
        let next = match (open(&cur), mkdir.as_mut()) {
            (Err(Errno::ENOENT), Some(mkdir)) => {
                match mkdir(cur.as_fd(), comp.as_os_str()) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(e),
                }
                open(&cur)?
            }
            (r, _) => r?,
        };
        let st = fstat(&next)?;
        let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
        if kind == SFlag::S_IFLNK {
            links += 1;
            if links > MAX_SYMLINKS {
                return Err(Errno::ELOOP);
            }
            let target = readlinkat(&cur, comp.as_os_str())?;
            let target = target.as_bytes();
            if target.first() == Some(&b'/') {
                cur = dup(root)?;
                depth = 0;
            }
            for (i, c) in split(target).enumerate() {
                pending.insert(i, c);
            }
            continue;
        }
        if kind != SFlag::S_IFDIR {
            return Err(Errno::ENOTDIR);
        }
        cur = next;
        depth += 1;
    }
    Ok(cur)
}

/// The components of a path, without empty and `.` parts (`..` is kept).
fn split(p: &[u8]) -> impl Iterator<Item = OsString> + '_ {
    p.split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .map(|c| OsStr::from_bytes(c).to_os_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;
    use std::path::Path;

    /// The path of the directory an fd refers to.
    fn path_of(fd: &OwnedFd) -> std::path::PathBuf {
        use std::os::fd::AsRawFd;
        std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).expect("readlink")
    }

    fn tree() -> tempfile::TempDir {
        let t = tempfile::tempdir().expect("tempdir");
        let r = t.path();
        std::fs::create_dir_all(r.join("usr/lib")).expect("mkdir");
        std::fs::create_dir_all(r.join("etc")).expect("mkdir");
        std::fs::write(r.join("etc/file"), b"x").expect("write");
        symlink("/etc", r.join("abs")).expect("symlink");
        symlink("../../../../../..", r.join("usr/up")).expect("symlink");
        symlink("usr/lib", r.join("lib")).expect("symlink");
        symlink("loop2", r.join("loop1")).expect("symlink");
        symlink("loop1", r.join("loop2")).expect("symlink");
        symlink("/proc/self/root", r.join("magic")).expect("symlink");
        t
    }

    fn check(resolver: Resolver) {
        let t = tree();
        let root_path = std::fs::canonicalize(t.path()).expect("canon");
        let root = std::fs::File::open(&root_path).expect("open root");
        let open = |p: &str| open_dir_in_root(root.as_fd(), p.as_bytes(), resolver);
        let at = |p: &str| path_of(&open(p).unwrap_or_else(|e| panic!("{p}: {e}")));
        assert_eq!(at(""), root_path);
        assert_eq!(at("/"), root_path);
        assert_eq!(at("usr/lib"), root_path.join("usr/lib"));
        // An absolute symlink is taken relative to the root.
        assert_eq!(at("abs"), root_path.join("etc"));
        assert_eq!(at("/abs/"), root_path.join("etc"));
        // `..` never climbs above the root, through symlinks or directly.
        assert_eq!(at("usr/up"), root_path);
        assert_eq!(at("../../.."), root_path);
        assert_eq!(at("usr/up/etc"), root_path.join("etc"));
        // `..` after a symlink is physical: lib -> usr/lib, so lib/.. is usr.
        assert_eq!(at("lib/.."), root_path.join("usr"));
        assert_eq!(at("lib/../.."), root_path);
        assert_eq!(at("lib"), root_path.join("usr/lib"));
        assert_eq!(open("loop1").expect_err("loop"), Errno::ELOOP);
        assert_eq!(open("etc/file").expect_err("file"), Errno::ENOTDIR);
        assert_eq!(open("missing/x").expect_err("missing"), Errno::ENOENT);
        // A magic link is not followed out of the root: the kernel refuses it, the user-space
        // walk reads it as an ordinary absolute symlink to a path inside the root.
        match open("magic") {
            Err(_) => {}
            Ok(fd) => assert!(path_of(&fd).starts_with(&root_path), "{:?}", path_of(&fd)),
        }
        assert!(!Path::new(&at("abs")).starts_with("/etc"));
    }

    #[test]
    fn test_mkdir_all_in_root() {
        let t = tree();
        let root_path = std::fs::canonicalize(t.path()).expect("canon");
        symlink("/opt/new/place", root_path.join("dangling")).expect("symlink");
        let root = std::fs::File::open(&root_path).expect("open root");
        let made = std::cell::RefCell::new(Vec::new());
        let mut mkdir = |d: BorrowedFd<'_>, n: &OsStr| {
            made.borrow_mut().push(n.to_os_string());
            nix::sys::stat::mkdirat(d, n, Mode::from_bits_truncate(0o755))
        };
        let fd = mkdir_all_in_root(root.as_fd(), b"dangling/sub", &mut mkdir).expect("mkdir -p");
        assert_eq!(path_of(&fd), root_path.join("opt/new/place/sub"));
        assert_eq!(*made.borrow(), ["opt", "new", "place", "sub"]);
        let fd = mkdir_all_in_root(root.as_fd(), b"usr/up/x", &mut mkdir).expect("clamped");
        assert_eq!(path_of(&fd), root_path.join("x"));
        let err = mkdir_all_in_root(root.as_fd(), b"etc/file/x", &mut mkdir)
            .expect_err("file in the way");
        assert_eq!(err, Errno::ENOTDIR);
    }

    #[test]
    fn test_resolve_in_root_kernel() {
        check(Resolver::Auto);
    }

    #[test]
    fn test_resolve_in_root_user_space() {
        check(Resolver::UserSpace);
    }
}
