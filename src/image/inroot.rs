//! Resolving paths inside a root directory as if it were `/`: symlinks (absolute or
//! relative) and `..` are resolved without ever leaving the root, so a layer or base image
//! that plants `lib -> /etc` cannot make a later entry `lib/passwd`, or a `%files`
//! destination, land on the host's `/etc`. The one resolver of sifr: OCI layers, image
//! unpacking, `%files` and the container's mount points (launch) all use it.
//!
//! `openat2(RESOLVE_IN_ROOT)` does this in the kernel (Linux 5.6+). Where it is missing
//! (ENOSYS, or EPERM from a seccomp filter) the same walk is done in user space, one
//! component at a time with `O_NOFOLLOW`, expanding symlinks by hand and clamping `..` at the
//! root. The walk never asks the kernel to follow a symlink and never opens `..` (it walks
//! down from the root again instead), so a concurrent rename or symlink swap in the tree can
//! change which path inside the root is reached, never make it leave the root. What is
//! created (missing directories, a mount point) is made with `mkdirat`/`O_CREAT|O_EXCL` in a
//! directory reached that way, so it cannot land outside either.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicU8, Ordering};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat, openat2, readlinkat};
use nix::sys::stat::{Mode, SFlag, fstat, mkdirat};

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
            // Longer than PATH_MAX: the walk below opens one component at a time.
            Err(Errno::ENAMETOOLONG) => {}
            other => {
                OPENAT2.store(1, Ordering::Relaxed);
                return other;
            }
        }
    }
    user_space_resolve(root, rel)
}

fn kernel_resolve(root: BorrowedFd<'_>, rel: &[u8]) -> Result<OwnedFd, Errno> {
    kernel_open(root, rel, OFlag::O_PATH | OFlag::O_DIRECTORY)
}

/// `openat2(root, rel, flags, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`.
fn kernel_open(root: BorrowedFd<'_>, rel: &[u8], flags: OFlag) -> Result<OwnedFd, Errno> {
    let path = if rel.iter().all(|&b| b == b'/') {
        OsStr::new(".")
    } else {
        OsStr::from_bytes(rel)
    };
    let how = OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
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
    walk(root, rel, None).map(|(fd, _)| fd)
}

/// Opens directory `rel` under `root` like [`open_dir_in_root`], creating missing
/// directories on the way with `mkdir(parent, name)`. A dangling symlink on the way gets its
/// target created, inside the root, as `mkdir -p` through it would.
pub fn mkdir_all_in_root(
    root: BorrowedFd<'_>,
    rel: &[u8],
    mkdir: &mut dyn FnMut(BorrowedFd<'_>, &OsStr) -> Result<(), Errno>,
) -> Result<OwnedFd, Errno> {
    walk(root, rel, Some(mkdir)).map(|(fd, _)| fd)
}

/// What [`open_in_root`] creates at the end of a missing path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Create {
    /// A directory (mode 0755).
    Dir,
    /// An empty file (mode 0644).
    File,
}

/// How often [`open_in_root`] resolves again when what it created or found was replaced
/// meanwhile (a concurrent rename or symlink swap) before giving up with EAGAIN.
const RETRIES: usize = 8;

/// Opens `rel` inside `root` with `flags` (`O_PATH` for a mount point, `O_RDONLY` to read a
/// file), every symlink on the way, the last component's included, followed inside the root.
/// `Ok(None)` when it does not exist. With `create`, missing directories on the way are made
/// (mode 0755) and the last component as `create`; a dangling symlink gets its target made,
/// inside the root. `allow` is asked about each directory before anything is made in it (an
/// error refuses the creation: launch keeps mount points off mounts that are not its own).
/// Nothing is ever opened or created outside the root.
pub fn open_in_root(
    root: BorrowedFd<'_>,
    rel: &[u8],
    flags: OFlag,
    create: Option<Create>,
    allow: &dyn Fn(BorrowedFd<'_>) -> Result<(), Errno>,
    resolver: Resolver,
) -> Result<Option<OwnedFd>, Errno> {
    let flags = flags - OFlag::O_CREAT - OFlag::O_EXCL - OFlag::O_NOFOLLOW;
    for _ in 0..RETRIES {
        if resolver == Resolver::Auto && OPENAT2.load(Ordering::Relaxed) != 2 {
            match kernel_open(root, rel, flags) {
                Ok(fd) => {
                    OPENAT2.store(1, Ordering::Relaxed);
                    return Ok(Some(fd));
                }
                Err(Errno::ENOSYS) | Err(Errno::EPERM) if OPENAT2.load(Ordering::Relaxed) == 0 => {
                    log::debug!("openat2 unavailable; resolving paths in user space");
                    OPENAT2.store(2, Ordering::Relaxed);
                }
                // Longer than PATH_MAX: the walk opens one component at a time.
                Err(Errno::ENAMETOOLONG) => {}
                Err(Errno::ENOENT) if create.is_none() => return Ok(None),
                // Missing: created below, by the walk.
                Err(Errno::ENOENT) => {}
                Err(e) => return Err(e),
            }
        }
        let mut mkdir = |d: BorrowedFd<'_>, n: &OsStr| {
            allow(d)?;
            mkdirat(d, n, Mode::from_bits_truncate(0o755))
        };
        let resolved = match create {
            Some(_) => resolve_in_root(root, rel, Some(&mut mkdir)),
            None => resolve_in_root(root, rel, None),
        };
        let (parent, name) = match resolved {
            Err(Errno::ENOENT) if create.is_none() => return Ok(None),
            Err(e) => return Err(e),
            Ok(Resolved::Dir { fd, .. }) if flags.contains(OFlag::O_PATH) => return Ok(Some(fd)),
            Ok(Resolved::Dir { fd, .. }) => {
                return openat(&fd, ".", flags | OFlag::O_CLOEXEC, Mode::empty()).map(Some);
            }
            Ok(Resolved::Entry { exists: false, .. }) if create.is_none() => return Ok(None),
            Ok(Resolved::Entry {
                parent,
                name,
                exists,
                ..
            }) => {
                if !exists {
                    allow(parent.as_fd())?;
                    // Neither follows a symlink put there meanwhile (O_EXCL: EEXIST).
                    let made = match create {
                        Some(Create::Dir) => {
                            mkdirat(&parent, name.as_os_str(), Mode::from_bits_truncate(0o755))
                        }
                        _ => openat(
                            &parent,
                            name.as_os_str(),
                            OFlag::O_CREAT
                                | OFlag::O_EXCL
                                | OFlag::O_WRONLY
                                | OFlag::O_NOFOLLOW
                                | OFlag::O_CLOEXEC,
                            Mode::from_bits_truncate(0o644),
                        )
                        .map(drop),
                    };
                    match made {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(e) => return Err(e),
                    }
                }
                (parent, name)
            }
        };
        // The entry itself, never through a symlink: one that appeared meanwhile (ELOOP, or
        // an O_PATH descriptor of the link) sends the resolution round again.
        match openat(
            &parent,
            name.as_os_str(),
            flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) if kind_of(&fd)? == SFlag::S_IFLNK => {}
            Ok(fd) => return Ok(Some(fd)),
            Err(Errno::ELOOP) | Err(Errno::ENOENT) => {}
            Err(e) => return Err(e),
        }
    }
    Err(Errno::EAGAIN)
}

/// The id of the mount that holds an open file (`statx` STATX_MNT_ID, Linux 5.8+; where
/// the kernel lacks it, the device number, which tells fewer mounts apart).
pub fn mount_id(fd: BorrowedFd<'_>) -> Result<u64, Errno> {
    use std::os::fd::AsRawFd;
    let mut stx = std::mem::MaybeUninit::<libc::statx>::zeroed();
    // SAFETY: statx writes at most one `struct statx` into `stx`; the path is a NUL-terminated
    // empty string and `fd` is open for the whole call.
    let r = unsafe {
        libc::statx(
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_MNT_ID,
            stx.as_mut_ptr(),
        )
    };
    if r != 0 {
        return Err(Errno::last());
    }
    // SAFETY: statx succeeded, so it filled the structure (which was zeroed before).
    let stx = unsafe { stx.assume_init() };
    if stx.stx_mask & libc::STATX_MNT_ID != 0 {
        Ok(stx.stx_mnt_id)
    } else {
        Ok((u64::from(stx.stx_dev_major) << 32) | u64::from(stx.stx_dev_minor))
    }
}

/// The file type of an open descriptor.
fn kind_of(fd: &OwnedFd) -> Result<SFlag, Errno> {
    Ok(SFlag::from_bits_truncate(fstat(fd)?.st_mode) & SFlag::S_IFMT)
}

/// What a path names inside a root, its last component resolved too (see [`resolve_in_root`]).
#[derive(Debug)]
pub enum Resolved {
    /// An existing directory (named directly or through symlinks), opened with `O_PATH`.
    Dir {
        fd: OwnedFd,
        /// Its path from the root with every symlink resolved (`/` for the root).
        path: Vec<u8>,
    },
    /// Entry `name` of directory `parent`: absent, or there and neither a directory nor a
    /// symlink (symlinks are followed, so a dangling one leads to where its target would be).
    Entry {
        parent: OwnedFd,
        /// The parent's path from the root, symlinks resolved (`/` for the root).
        parent_path: Vec<u8>,
        name: OsString,
        exists: bool,
    },
}

/// Resolves `rel` inside `root` as the container would see it: every symlink on the way,
/// the last component's included, is followed inside the root, and `..` stops at the root.
/// With `mkdir`, missing directories before the last component are created (`mkdir -p` of
/// the parent), as for a `%files` destination. Always the user-space walk: it knows the
/// resolved path, which a relative symlink in the last component needs.
pub fn resolve_in_root(
    root: BorrowedFd<'_>,
    rel: &[u8],
    mut mkdir: Option<Mkdir<'_>>,
) -> Result<Resolved, Errno> {
    let mut rel = rel.to_vec();
    let mut links = 0;
    loop {
        let mut comps: Vec<OsString> = split(&rel).collect();
        let last = match comps.pop() {
            Some(l) if l != ".." => l,
            // The root itself, or a path ending in `..`: a directory.
            other => {
                comps.extend(other);
                let (fd, names) = walk(root, &join_names(&comps), mkdir.as_deref_mut())?;
                return Ok(Resolved::Dir {
                    fd,
                    path: join_names(&names),
                });
            }
        };
        let (parent, names) = walk(root, &join_names(&comps), mkdir.as_deref_mut())?;
        let parent_path = join_names(&names);
        // One descriptor for the type and the link's target: a swap in between cannot
        // pair one entry's type with another's contents.
        let entry = match openat(
            &parent,
            last.as_os_str(),
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Err(Errno::ENOENT) => {
                return Ok(Resolved::Entry {
                    parent,
                    parent_path,
                    name: last,
                    exists: false,
                });
            }
            other => other?,
        };
        match kind_of(&entry)? {
            SFlag::S_IFLNK => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(Errno::ELOOP);
                }
                let target = readlinkat(&entry, "")?;
                let target = target.as_bytes();
                rel = if target.first() == Some(&b'/') {
                    target.to_vec()
                } else {
                    let mut r = parent_path;
                    r.push(b'/');
                    r.extend_from_slice(target);
                    r
                };
            }
            SFlag::S_IFDIR => {
                let fd = entry;
                let mut path = parent_path;
                if path != b"/" {
                    path.push(b'/');
                }
                path.extend_from_slice(last.as_bytes());
                return Ok(Resolved::Dir { fd, path });
            }
            _ => {
                return Ok(Resolved::Entry {
                    parent,
                    parent_path,
                    name: last,
                    exists: true,
                });
            }
        }
    }
}

/// `/a/b` from `[a, b]`; `/` from none.
fn join_names(names: &[OsString]) -> Vec<u8> {
    if names.is_empty() {
        return b"/".to_vec();
    }
    let mut p = Vec::new();
    for n in names {
        p.push(b'/');
        p.extend_from_slice(n.as_bytes());
    }
    p
}

/// Creates directory `name` in the directory given (for the resolvers that make missing ones).
pub type MkdirFn<'m> = dyn FnMut(BorrowedFd<'_>, &OsStr) -> Result<(), Errno> + 'm;
/// A borrowed [`MkdirFn`].
pub type Mkdir<'a> = &'a mut MkdirFn<'a>;

/// The user-space resolution: one component at a time, never following a symlink in the
/// kernel, clamping `..` at the root. Returns the directory and the names of its path from
/// the root, symlinks resolved.
fn walk<'m>(
    root: BorrowedFd<'_>,
    rel: &[u8],
    mut mkdir: Option<&mut MkdirFn<'m>>,
) -> Result<(OwnedFd, Vec<OsString>), Errno> {
    let dup = |fd: BorrowedFd<'_>| {
        fd.try_clone_to_owned()
            .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(0)))
    };
    let mut pending: std::collections::VecDeque<OsString> = split(rel).collect();
    let mut cur = dup(root)?;
    // The names from the root to `cur`.
    let mut names: Vec<OsString> = Vec::new();
    let mut links = 0;
    while let Some(comp) = pending.pop_front() {
        if comp == ".." {
            // The walk never passed through a symlink lexically, so the parent is the
            // lexical one; at the root, `..` stays at the root. It is reached by walking down
            // from the root again, not by opening `..`: a directory moved out of the root
            // meanwhile must not lead out of it.
            if names.pop().is_some() {
                cur = dup(root)?;
                for n in &names {
                    cur = openat(
                        &cur,
                        n.as_os_str(),
                        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                        Mode::empty(),
                    )?;
                }
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
        let kind = kind_of(&next)?;
        if kind == SFlag::S_IFLNK {
            links += 1;
            if links > MAX_SYMLINKS {
                return Err(Errno::ELOOP);
            }
            // Through the descriptor: the link that was opened, whatever is there now.
            let target = readlinkat(&next, "")?;
            let target = target.as_bytes();
            if target.first() == Some(&b'/') {
                cur = dup(root)?;
                names.clear();
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
        names.push(comp);
    }
    Ok((cur, names))
}

/// The components of a path, without empty and `.` parts (`..` is kept).
fn split(p: &[u8]) -> impl Iterator<Item = OsString> + '_ {
    p.split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .map(|c| OsStr::from_bytes(c).to_os_string())
}

/// The names in a directory (any descriptor of it, `O_PATH` too), sorted, without `.` and
/// `..`: the one directory listing of the unpacking code (image extraction, OCI layers).
pub fn list_dir(dir: BorrowedFd<'_>) -> nix::Result<Vec<Vec<u8>>> {
    let fd = openat(
        dir,
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let mut d = nix::dir::Dir::from_fd(fd)?;
    let mut names = Vec::new();
    for e in d.iter() {
        let n = e?.file_name().to_bytes().to_vec();
        if n != b"." && n != b".." {
            names.push(n);
        }
    }
    names.sort();
    Ok(names)
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
    fn test_resolve_in_root_follows_the_last_component_inside() {
        let t = tree();
        let root_path = std::fs::canonicalize(t.path()).expect("canon");
        symlink("/opt/new/place", root_path.join("dangling")).expect("symlink");
        symlink("../../etc/file", root_path.join("usr/lib/rel")).expect("symlink");
        let root = std::fs::File::open(&root_path).expect("open root");
        let r = |p: &str| resolve_in_root(root.as_fd(), p.as_bytes(), None);
        let entry = |p: &str| match r(p).unwrap_or_else(|e| panic!("{p}: {e}")) {
            Resolved::Entry {
                parent,
                parent_path,
                name,
                exists,
            } => {
                assert_eq!(
                    path_of(&parent),
                    root_path.join(String::from_utf8_lossy(&parent_path[1..]).as_ref())
                );
                (
                    String::from_utf8_lossy(&parent_path).into_owned(),
                    name.to_string_lossy().into_owned(),
                    exists,
                )
            }
            Resolved::Dir { path, .. } => panic!("{p}: a directory {path:?}"),
        };
        let dir = |p: &str| match r(p).unwrap_or_else(|e| panic!("{p}: {e}")) {
            Resolved::Dir { fd, path } => {
                let s = String::from_utf8_lossy(&path).into_owned();
                assert_eq!(path_of(&fd), root_path.join(&s[1..]), "{p}");
                s
            }
            Resolved::Entry { name, .. } => panic!("{p}: an entry {name:?}"),
        };
        assert_eq!(dir(""), "/");
        assert_eq!(dir("/../.."), "/");
        assert_eq!(dir("abs"), "/etc");
        assert_eq!(dir("../../abs/"), "/etc");
        assert_eq!(dir("lib"), "/usr/lib");
        assert_eq!(dir("usr/up"), "/");
        assert_eq!(entry("etc/file"), ("/etc".into(), "file".into(), true));
        assert_eq!(entry("abs/file"), ("/etc".into(), "file".into(), true));
        // A relative symlink as the last component is taken from its own directory.
        assert_eq!(entry("lib/rel"), ("/etc".into(), "file".into(), true));
        assert_eq!(entry("usr/up/new"), ("/".into(), "new".into(), false));
        assert_eq!(entry("../../new"), ("/".into(), "new".into(), false));
        assert_eq!(r("loop1").expect_err("loop"), Errno::ELOOP);
        assert_eq!(r("etc/file/x").expect_err("file"), Errno::ENOTDIR);
        // A dangling link leads to where its target would be, inside the root: missing
        // directories on the way are an error, or made with `mkdir`.
        assert_eq!(r("dangling").expect_err("missing"), Errno::ENOENT);
        let mut mkdir = |d: BorrowedFd<'_>, n: &OsStr| {
            nix::sys::stat::mkdirat(d, n, Mode::from_bits_truncate(0o755))
        };
        match resolve_in_root(root.as_fd(), b"dangling", Some(&mut mkdir)).expect("mkdir -p") {
            Resolved::Entry {
                parent_path,
                name,
                exists,
                ..
            } => assert_eq!(
                (&parent_path[..], name.as_bytes(), exists),
                (&b"/opt/new"[..], &b"place"[..], false)
            ),
            d => panic!("{d:?}"),
        }
        assert!(root_path.join("opt/new").is_dir());
    }

    #[test]
    fn test_resolve_in_root_kernel() {
        check(Resolver::Auto);
    }

    #[test]
    fn test_resolve_in_root_user_space() {
        check(Resolver::UserSpace);
    }

    /// A root inside a parent directory that also holds `outside`, the host directory the
    /// planted symlinks aim at: (parent, canonical root, canonical outside).
    fn hostile_tree() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
        let t = tempfile::tempdir().expect("tempdir");
        let base = std::fs::canonicalize(t.path()).expect("canon");
        let (root, outside) = (base.join("root"), base.join("outside"));
        std::fs::create_dir(&root).expect("mkdir");
        std::fs::create_dir(&outside).expect("mkdir");
        (t, root, outside)
    }

    /// The entries of a directory, sorted.
    fn ls(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    fn no_guard(_: BorrowedFd<'_>) -> Result<(), Errno> {
        Ok(())
    }

    /// Hostile symlinks at the place to open or create: an absolute link to a host path, a
    /// `/..` chain and a relative `..` chain to it, a loop. What is opened or created is
    /// inside the root; the host directory stays empty.
    fn hostile(resolver: Resolver) {
        let (_t, root_path, outside) = hostile_tree();
        let rel_out = outside.strip_prefix("/").expect("abs");
        let up = "../".repeat(root_path.components().count() + 2);
        symlink(&outside, root_path.join("abs")).expect("ln");
        symlink(
            format!("/../../..{}", outside.display()),
            root_path.join("dots"),
        )
        .expect("ln");
        symlink(format!("{up}{}", rel_out.display()), root_path.join("rel")).expect("ln");
        symlink("b", root_path.join("a")).expect("ln");
        symlink("/a", root_path.join("b")).expect("ln");
        std::fs::write(outside.join("secret"), b"host").expect("write");
        let root = std::fs::File::open(&root_path).expect("open root");
        let open = |p: &str, flags: OFlag, create: Option<Create>| {
            open_in_root(
                root.as_fd(),
                p.as_bytes(),
                flags,
                create,
                &no_guard,
                resolver,
            )
        };
        // Reading through them finds nothing: the host file is not in the root.
        for link in ["abs", "dots", "rel"] {
            let p = format!("{link}/secret");
            assert!(open(&p, OFlag::O_RDONLY, None).expect(&p).is_none(), "{p}");
        }
        // Creating through them creates inside the root, at the link's target there.
        let mut n = 0;
        for link in ["abs", "dots", "rel"] {
            for create in [Create::Dir, Create::File] {
                n += 1;
                let p = format!("{link}/new{n}/x");
                let fd = open(&p, OFlag::O_PATH, Some(create))
                    .unwrap_or_else(|e| panic!("{p}: {e}"))
                    .expect("created");
                let made = root_path.join(rel_out).join(format!("new{n}/x"));
                assert_eq!(path_of(&fd), made, "{p}");
                assert_eq!(made.is_dir(), create == Create::Dir, "{p}");
            }
        }
        // A loop: ELOOP, with or without creation, and nothing made.
        for create in [None, Some(Create::Dir), Some(Create::File)] {
            assert_eq!(
                open("a/x", OFlag::O_PATH, create).expect_err("loop"),
                Errno::ELOOP
            );
        }
        assert_eq!(ls(&outside), ["secret"]);
        let top = rel_out
            .iter()
            .next()
            .expect("a component")
            .to_string_lossy();
        let mut want = vec!["a", "abs", "b", "dots", "rel", &top];
        want.sort();
        assert_eq!(ls(&root_path), want);
    }

    #[test]
    fn test_open_in_root_hostile_symlinks_kernel() {
        hostile(Resolver::Auto);
    }

    #[test]
    fn test_open_in_root_hostile_symlinks_user_space() {
        hostile(Resolver::UserSpace);
    }

    /// `allow` refuses creation in a directory: nothing is made, and the refusal is returned.
    #[test]
    fn test_open_in_root_guard_refuses() {
        let (_t, root_path, _) = hostile_tree();
        let root = std::fs::File::open(&root_path).expect("open root");
        let deny = |_: BorrowedFd<'_>| Err(Errno::EXDEV);
        for resolver in [Resolver::Auto, Resolver::UserSpace] {
            for p in ["new", "d/new"] {
                let r = open_in_root(
                    root.as_fd(),
                    p.as_bytes(),
                    OFlag::O_PATH,
                    Some(Create::Dir),
                    &deny,
                    resolver,
                );
                assert_eq!(r.expect_err("refused"), Errno::EXDEV);
            }
        }
        assert!(ls(&root_path).is_empty());
    }

    /// Runs `work(i)` over and over for at most `limit` while `flip` runs in a thread.
    fn race(limit: std::time::Duration, flip: impl Fn() + Sync, mut work: impl FnMut(usize)) {
        use std::sync::atomic::AtomicBool;
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    flip();
                }
            });
            // Stops the flipper even when `work` panics (a failed assertion), so the scope
            // can join it and the test fails instead of hanging.
            struct Stop<'a>(&'a AtomicBool);
            impl Drop for Stop<'_> {
                fn drop(&mut self) {
                    self.0.store(true, Ordering::Relaxed);
                }
            }
            let _stop = Stop(&stop);
            let start = std::time::Instant::now();
            let mut i = 0;
            while start.elapsed() < limit && i < 20_000 {
                work(i);
                i += 1;
            }
        });
    }

    /// A directory swapped with a symlink to the host directory while paths through it are
    /// opened and created: whatever the interleaving, nothing is created outside the root
    /// and every descriptor returned is inside it.
    fn swap_race(resolver: Resolver) {
        use nix::fcntl::{RenameFlags, renameat2};
        let (_t, root_path, outside) = hostile_tree();
        std::fs::create_dir(root_path.join("d")).expect("mkdir");
        symlink(&outside, root_path.join("swap")).expect("ln");
        let root = std::fs::File::open(&root_path).expect("open root");
        let flip = || {
            let _ = renameat2(
                root.as_fd(),
                "d",
                root.as_fd(),
                "swap",
                RenameFlags::RENAME_EXCHANGE,
            );
        };
        let mut mkdir =
            |d: BorrowedFd<'_>, n: &OsStr| mkdirat(d, n, Mode::from_bits_truncate(0o755));
        race(std::time::Duration::from_millis(1500), flip, |i| {
            let p = format!("d/x{}/y", i % 50);
            let create = [Create::Dir, Create::File][i % 2];
            if let Ok(Some(fd)) = open_in_root(
                root.as_fd(),
                p.as_bytes(),
                OFlag::O_PATH,
                Some(create),
                &no_guard,
                resolver,
            ) {
                assert!(
                    path_of(&fd).starts_with(&root_path),
                    "{p}: {:?}",
                    path_of(&fd)
                );
            }
            let q = format!("d/m{}/n", i % 50);
            if let Ok(fd) = mkdir_all_in_root(root.as_fd(), q.as_bytes(), &mut mkdir) {
                assert!(
                    path_of(&fd).starts_with(&root_path),
                    "{q}: {:?}",
                    path_of(&fd)
                );
            }
        });
        assert!(
            ls(&outside).is_empty(),
            "created outside: {:?}",
            ls(&outside)
        );
    }

    #[test]
    fn test_swap_race_kernel() {
        swap_race(Resolver::Auto);
    }

    #[test]
    fn test_swap_race_user_space() {
        swap_race(Resolver::UserSpace);
    }

    /// A directory on the path moved out of the root (exchanged with one outside) while
    /// `..` climbs out of it: `..` must not follow it out, so nothing is created beside the
    /// root.
    fn dotdot_race(resolver: Resolver) {
        use nix::fcntl::{RenameFlags, renameat2};
        let (t, root_path, outside) = hostile_tree();
        std::fs::create_dir_all(root_path.join("a/b/c")).expect("mkdir");
        std::fs::create_dir_all(outside.join("b/c")).expect("mkdir");
        let base = std::fs::File::open(t.path()).expect("open base");
        let root = std::fs::File::open(&root_path).expect("open root");
        let flip = || {
            let _ = renameat2(
                base.as_fd(),
                "root/a/b",
                base.as_fd(),
                "outside/b",
                RenameFlags::RENAME_EXCHANGE,
            );
        };
        race(std::time::Duration::from_millis(1500), flip, |i| {
            let p = format!("a/b/c/../../../z{i}");
            if let Ok(Some(fd)) = open_in_root(
                root.as_fd(),
                p.as_bytes(),
                OFlag::O_PATH,
                Some(Create::Dir),
                &no_guard,
                resolver,
            ) {
                assert!(
                    path_of(&fd).starts_with(&root_path),
                    "{p}: {:?}",
                    path_of(&fd)
                );
            }
        });
        assert_eq!(ls(t.path()), ["outside", "root"]);
        assert_eq!(ls(&outside), ["b"]);
    }

    #[test]
    fn test_dotdot_race_kernel() {
        dotdot_race(Resolver::Auto);
    }

    #[test]
    fn test_dotdot_race_user_space() {
        dotdot_race(Resolver::UserSpace);
    }
}
