//! The build's scratch directory: created under `--tmpdir` (or `SIFR_TMPDIR`, `TMPDIR`,
//! /tmp), private to the user, and removed on success, on failure and on Ctrl-C; and the
//! build's interrupt flag.
//!
//! Files in it may belong to subordinate ids (what `%post` created as another user of the
//! container), which the user cannot delete directly: removal runs as root of the build's
//! fakeroot namespace. Removal walks the tree through directory descriptors, so a tree of
//! any depth (deeper than PATH_MAX) goes too.

use std::ffi::{CStr, CString, OsString};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use crate::launch::idplan;
use crate::launch::plan::IdMapPlan;
use crate::launch::sys::LinuxSys;
use crate::launch::userns::run_as_fakeroot;

/// Set by SIGINT/SIGTERM/SIGHUP while a build runs.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);
/// The signal that interrupted the build.
static SIGNAL: AtomicI32 = AtomicI32::new(0);
/// A pipe the signal handler writes a byte into, so that processes forked from the build
/// (the fakeroot workers) and waits on children learn of the interrupt at once; -1 until
/// `catch_interrupts` made it.
static PIPE_READ: AtomicI32 = AtomicI32::new(-1);
static PIPE_WRITE: AtomicI32 = AtomicI32::new(-1);

/// Records an interrupt: the flag, the signal, and a byte in the interrupt pipe. Only
/// async-signal-safe work (atomics and write(2)).
pub(crate) fn note_interrupt(sig: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
    SIGNAL.store(sig, Ordering::SeqCst);
    let fd = PIPE_WRITE.load(Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: write(2) of one byte from a static buffer; the pipe is non-blocking.
        unsafe { libc::write(fd, b"!".as_ptr().cast(), 1) };
    }
}

extern "C" fn on_signal(sig: libc::c_int) {
    note_interrupt(sig);
}

/// The signals that interrupt a build.
pub const INTERRUPT_SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

/// Makes Ctrl-C (and SIGTERM/SIGHUP) stop the build at the next step, with cleanup.
pub fn catch_interrupts() {
    if PIPE_READ.load(Ordering::SeqCst) < 0 {
        let mut fds = [-1; 2];
        // SAFETY: pipe2 writes two descriptors into the array.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } == 0 {
            PIPE_READ.store(fds[0], Ordering::SeqCst);
            PIPE_WRITE.store(fds[1], Ordering::SeqCst);
        }
    }
    for sig in INTERRUPT_SIGNALS {
        // SAFETY: the handler only stores to atomics and calls write(2), which are
        // async-signal-safe.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
}

/// True once the user interrupted the build.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// The signal that interrupted the build, if one did.
pub fn interrupt_signal() -> Option<i32> {
    match SIGNAL.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// Waits up to `ms` milliseconds (-1: for ever) for an interrupt; true when there was one.
/// Works in processes forked from the build too (they share the interrupt pipe).
pub fn wait_interrupt(ms: i32) -> bool {
    let fd = PIPE_READ.load(Ordering::SeqCst);
    if fd < 0 {
        let wait = if ms < 0 { 100 } else { ms as u64 };
        std::thread::sleep(std::time::Duration::from_millis(wait));
        return interrupted();
    }
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll on one valid pollfd; the byte is left in the pipe for other readers.
    let n = unsafe { libc::poll(&mut p, 1, ms) };
    interrupted() || (n > 0 && p.revents & libc::POLLIN != 0)
}

/// In a process forked from the build for fakeroot work: ends it (exit 130) as soon as the
/// build is interrupted, whatever it is doing (unpacking, copying, writing the squashfs),
/// so the build can clean up at once. Its files are in the build's directories, which
/// the build removes.
pub fn exit_on_interrupt() {
    let spawned = std::thread::Builder::new()
        .name("interrupt".into())
        .spawn(|| {
            while !wait_interrupt(-1) {}
            // SAFETY: ends this forked worker process at once; it owns nothing that needs
            // unwinding (its output is removed by the build).
            unsafe { libc::_exit(130) }
        });
    if spawned.is_err() {
        log::debug!("cannot start the interrupt watcher of a fakeroot worker");
    }
}

/// A reader that fails once the user interrupted the build, so that downloads and layer
/// unpacking stop at the next read instead of running to the end (the signal handler is
/// installed with SA_RESTART, so blocking reads are not cut short by the signal itself).
pub struct Interruptible<R> {
    inner: R,
    flag: &'static AtomicBool,
}

impl<R> Interruptible<R> {
    /// Wraps `inner`, watching the build's interrupt flag.
    pub fn new(inner: R) -> Interruptible<R> {
        Interruptible {
            inner,
            flag: &INTERRUPTED,
        }
    }
}

impl<R: std::io::Read> std::io::Read for Interruptible<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.flag.load(Ordering::SeqCst) {
            // Not ErrorKind::Interrupted: io::copy and read_to_end retry those.
            return Err(std::io::Error::other("build interrupted"));
        }
        self.inner.read(buf)
    }
}

/// The scratch directory; removed when dropped (unless kept for debugging). While a build
/// runs, its directory is locked (flock on an open descriptor of it, held by the build and
/// the processes it forks): a directory left unlocked is one whose build was killed outright
/// (SIGKILL of every process, an out-of-memory kill), and the next build removes it as root
/// of its fakeroot namespace, files of subordinate ids and all, which the user could not.
pub struct BuildDir {
    path: PathBuf,
    ids: IdMapPlan,
    pub keep: bool,
    /// The open directory holding the lock.
    _lock: Option<std::fs::File>,
}

/// The name prefix of build directories.
const PREFIX: &str = "sifr-build-";
/// The file that marks a build directory kept with `--no-cleanup`.
const KEPT_MARK: &str = ".sifr-kept";
/// A build directory younger than this is never taken for a stale one (it may not be
/// locked yet).
const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(30);

/// Locks the open directory `f` for the build; false when another process holds the lock.
fn try_lock(f: &std::fs::File) -> bool {
    crate::flock::try_exclusive(f).unwrap_or(false)
}

/// Removes the build directories under `base` that killed builds of this user left:
/// unlocked, not kept with `--no-cleanup`, older than `STALE_AFTER`.
fn remove_stale(base: &Path, ids: &IdMapPlan) {
    use std::os::unix::fs::MetadataExt;
    let Ok(rd) = std::fs::read_dir(base) else {
        return;
    };
    // SAFETY: getuid cannot fail.
    let me = unsafe { libc::getuid() };
    for e in rd.flatten() {
        if !e.file_name().to_string_lossy().starts_with(PREFIX) {
            continue;
        }
        let path = e.path();
        let Ok(md) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let old = md
            .modified()
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > STALE_AFTER);
        if !md.is_dir() || md.uid() != me || !old || path.join(KEPT_MARK).exists() {
            continue;
        }
        let Ok(f) = std::fs::File::open(&path) else {
            continue;
        };
        if !try_lock(&f) {
            continue;
        }
        match BuildDir::remove_tree(ids, &path) {
            Ok(()) => log::info!(
                "removed {}: the build directory of an earlier build that was killed before \
                 it could clean up",
                path.display()
            ),
            Err(e) => log::debug!("cannot remove the stale {}: {e}", path.display()),
        }
    }
}

impl BuildDir {
    /// Creates `sifr-build-XXXXXX` under the chosen temporary directory.
    pub fn create(tmpdir: Option<&Path>, ids: IdMapPlan) -> std::io::Result<BuildDir> {
        let base = match tmpdir {
            Some(d) => d.to_path_buf(),
            None => std::env::var_os("SIFR_TMPDIR")
                .or_else(|| std::env::var_os("TMPDIR"))
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/tmp")),
        };
        remove_stale(&base, &ids);
        let dir = tempfile::Builder::new()
            .prefix(PREFIX)
            .tempdir_in(&base)
            .map_err(|e| std::io::Error::new(e.kind(), format!("in {}: {e}", base.display())))?;
        // Locked at once (a directory this young is never taken for a stale one); the
        // descriptor is close-on-exec, so no container the build runs holds it.
        let lock = std::fs::File::open(dir.path()).ok().filter(try_lock);
        if lock.is_none() {
            log::debug!("cannot lock the build directory {}", dir.path().display());
        }
        Ok(BuildDir {
            path: dir.keep(),
            ids,
            keep: false,
            _lock: lock,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes a tree that may hold files of subordinate ids: as the user first, then as
    /// root of the build's fakeroot namespace for what the user may not delete.
    pub fn remove_tree(ids: &IdMapPlan, path: &Path) -> Result<(), String> {
        let p = path.to_path_buf();
        match remove_all(&p) {
            Ok(()) => return Ok(()),
            Err(e) => log::debug!("removing {} as the user: {e}", p.display()),
        }
        run_as_fakeroot(&LinuxSys::new(), ids, &idplan::write_maps, move || {
            remove_all(&p).map_err(|e| format!("cannot remove {}: {e}", p.display()))
        })
        .map_err(|e| e.0)
    }
}

fn last_error() -> std::io::Error {
    std::io::Error::last_os_error()
}

fn c_name(name: &std::ffi::OsStr) -> std::io::Result<CString> {
    CString::new(name.as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))
}

/// Opens the directory `name` of `dir` without following a symbolic link.
fn open_dir_at(dir: libc::c_int, name: &CStr) -> std::io::Result<OwnedFd> {
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: openat with a descriptor (or AT_FDCWD) and a NUL-terminated name.
    let fd = unsafe { libc::openat(dir, name.as_ptr(), flags) };
    if fd < 0 {
        return Err(last_error());
    }
    // SAFETY: fd was just opened and is owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// (device, inode) of an open directory.
fn dir_id(fd: &OwnedFd) -> std::io::Result<(u64, u64)> {
    // SAFETY: a zeroed stat is a valid buffer for fstat to fill.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat on an open descriptor into a stat buffer.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } < 0 {
        return Err(last_error());
    }
    Ok((st.st_dev, st.st_ino))
}

/// Empties the open directory `dir` of everything but directories (files, links and
/// special files are unlinked) and returns the names of its subdirectories, made
/// readable, writable and searchable by their owner.
fn clear_files(dir: &OwnedFd) -> std::io::Result<Vec<OsString>> {
    use nix::fcntl::OFlag;
    let mut d = nix::dir::Dir::openat(
        dir,
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(std::io::Error::from)?;
    let mut names = Vec::new();
    for e in d.iter() {
        let e = e.map_err(std::io::Error::from)?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(e.file_name().to_owned());
        }
    }
    drop(d);
    let fd = dir.as_raw_fd();
    let mut subdirs = Vec::new();
    for name in names {
        // SAFETY: a zeroed stat is a valid buffer for fstatat to fill.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: fstatat on an open directory, a NUL-terminated name and a stat buffer.
        if unsafe { libc::fstatat(fd, name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) } < 0 {
            let e = last_error();
            if e.kind() == std::io::ErrorKind::NotFound {
                continue;
            }
            return Err(e);
        }
        if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
            if st.st_mode & 0o700 != 0o700 {
                // SAFETY: fchmodat on an open directory and a NUL-terminated name (a
                // directory, checked above; it is not followed as a link).
                unsafe { libc::fchmodat(fd, name.as_ptr(), (st.st_mode & 0o7777) | 0o700, 0) };
            }
            subdirs.push(OsString::from_vec(name.into_bytes()));
        } else {
            // SAFETY: unlinkat on an open directory and a NUL-terminated name.
            if unsafe { libc::unlinkat(fd, name.as_ptr(), 0) } < 0 {
                let e = last_error();
                if e.kind() != std::io::ErrorKind::NotFound {
                    return Err(e);
                }
            }
        }
    }
    Ok(subdirs)
}

/// Removes `path` (a file, a symbolic link or a directory tree). Directories are walked
/// through descriptors, one open at a time (back up through `..`, checked against the
/// directory it came from), so trees deeper than PATH_MAX and wider than the descriptor
/// limit go too; directories without owner rwx get it first.
pub fn remove_all(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let md = match std::fs::symlink_metadata(path) {
        Ok(md) => md,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !md.is_dir() {
        return std::fs::remove_file(path);
    }
    let mode = md.permissions().mode();
    if mode & 0o700 != 0o700 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode | 0o700))?;
    }
    /// A directory being emptied: its name in its parent (None: the top), its identity
    /// and the subdirectories still to remove.
    struct Level {
        name: Option<OsString>,
        id: (u64, u64),
        subdirs: Vec<OsString>,
    }
    let mut cur = open_dir_at(libc::AT_FDCWD, &c_name(path.as_os_str())?)?;
    let mut levels = vec![Level {
        name: None,
        id: dir_id(&cur)?,
        subdirs: clear_files(&cur)?,
    }];
    while let Some(level) = levels.last_mut() {
        if let Some(sub) = level.subdirs.pop() {
            let child = match open_dir_at(cur.as_raw_fd(), &c_name(&sub)?) {
                Ok(c) => c,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            cur = child;
            levels.push(Level {
                name: Some(sub),
                id: dir_id(&cur)?,
                subdirs: clear_files(&cur)?,
            });
            continue;
        }
        let done = levels.pop().expect("a level");
        let Some(name) = done.name else { break };
        let parent = open_dir_at(cur.as_raw_fd(), c"..")?;
        if levels.last().map(|l| l.id) != Some(dir_id(&parent)?) {
            return Err(std::io::Error::other(format!(
                "{} changed while it was being removed",
                path.display()
            )));
        }
        cur = parent;
        let n = c_name(&name)?;
        // SAFETY: unlinkat on an open directory and a NUL-terminated name.
        if unsafe { libc::unlinkat(cur.as_raw_fd(), n.as_ptr(), libc::AT_REMOVEDIR) } < 0 {
            let e = last_error();
            if e.kind() != std::io::ErrorKind::NotFound {
                return Err(e);
            }
        }
    }
    drop(cur);
    std::fs::remove_dir(path)
}

/// Gives the owner write and search permission on every directory (a tree can hold
/// read-only directories, which would stop their removal).
pub fn make_writable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(md) = std::fs::symlink_metadata(path) else {
        return;
    };
    if !md.is_dir() {
        return;
    }
    let mode = md.permissions().mode();
    if mode & 0o700 != 0o700 {
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode | 0o700));
    }
    if let Ok(rd) = std::fs::read_dir(path) {
        for e in rd.flatten() {
            make_writable(&e.path());
        }
    }
}

/// Makes every entry of the tree `path` root's (0:0) and gives directories owner rwx: run
/// as root of the fakeroot namespace, that is the user on the host, so the user can delete
/// the tree (a sandbox output) with `rm -rf`. Links are not followed; set-id bits, which
/// chown clears, are put back.
pub fn own_tree(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let md = std::fs::symlink_metadata(path)?;
    if md.uid() != 0 || md.gid() != 0 {
        std::os::unix::fs::lchown(path, Some(0), Some(0))?;
        if !md.file_type().is_symlink() && md.mode() & 0o6000 != 0 && !md.is_dir() {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(md.mode() & 0o7777))?;
        }
    }
    if !md.is_dir() {
        return Ok(());
    }
    if md.mode() & 0o700 != 0o700 {
        std::fs::set_permissions(
            path,
            std::fs::Permissions::from_mode((md.mode() & 0o7777) | 0o700),
        )?;
    }
    for e in std::fs::read_dir(path)? {
        own_tree(&e?.path())?;
    }
    Ok(())
}

impl Drop for BuildDir {
    fn drop(&mut self) {
        if self.keep {
            let _ = std::fs::write(self.path.join(KEPT_MARK), b"");
            log::info!("build directory kept: {}", self.path.display());
            return;
        }
        if let Err(e) = BuildDir::remove_tree(&self.ids, &self.path) {
            log::warn!("could not remove the build directory: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn test_interruptible_stops_reading_once_flagged() {
        static FLAG: AtomicBool = AtomicBool::new(false);
        let mut r = Interruptible {
            inner: &b"abcdef"[..],
            flag: &FLAG,
        };
        let mut buf = [0u8; 3];
        assert_eq!(r.read(&mut buf).expect("read"), 3);
        FLAG.store(true, Ordering::SeqCst);
        let err = r.read(&mut buf).expect_err("interrupted");
        assert_eq!(err.kind(), std::io::ErrorKind::Other);
        // io::copy gives up instead of retrying.
        assert!(std::io::copy(&mut r, &mut std::io::sink()).is_err());
    }

    #[test]
    fn test_only_unlocked_old_unkept_build_directories_are_stale() {
        // SAFETY: getuid/getgid cannot fail.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        let ids = IdMapPlan {
            uid_map: vec![(0, uid, 1)],
            gid_map: vec![(0, gid, 1)],
            needs_helpers: false,
            uid: 0,
            gid: 0,
            notice: None,
            helper_dirs: vec![],
        };
        let t = tempfile::tempdir().expect("tmp");
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        let make = |name: &str| {
            let d = t.path().join(name);
            std::fs::create_dir_all(d.join("rootfs/x")).expect("mkdir");
            d
        };
        let age = |d: &Path| {
            std::fs::File::open(d)
                .and_then(|f| f.set_modified(old))
                .expect("set mtime");
        };
        let stale = make("sifr-build-stale");
        let kept = make("sifr-build-kept");
        std::fs::write(kept.join(KEPT_MARK), b"").expect("mark");
        let young = make("sifr-build-young");
        let busy = make("sifr-build-busy");
        let other = make("other-dir");
        for d in [&stale, &kept, &busy, &other] {
            age(d);
        }
        let held = std::fs::File::open(&busy).expect("open");
        assert!(try_lock(&held));
        remove_stale(t.path(), &ids);
        assert!(!stale.exists(), "the stale directory is removed");
        for d in [&kept, &young, &busy, &other] {
            assert!(d.exists(), "{} is kept", d.display());
        }
        // A new build directory is locked while it lives.
        let bd = BuildDir::create(Some(t.path()), ids.clone()).expect("create");
        let f = std::fs::File::open(bd.path()).expect("open");
        assert!(!try_lock(&f), "a live build directory is locked");
        drop(f);
        let p = bd.path().to_path_buf();
        drop(bd);
        assert!(!p.exists());
    }

    #[test]
    fn test_remove_all_takes_trees_deeper_than_path_max() {
        let t = tempfile::tempdir().expect("tmp");
        let top = t.path().join("tree");
        std::fs::create_dir(&top).expect("mkdir");
        // 2,000 levels of "dd/" (6,000 bytes of path), made relative to each level.
        let mut cur =
            open_dir_at(libc::AT_FDCWD, &c_name(top.as_os_str()).expect("c")).expect("open");
        for _ in 0..2000 {
            // SAFETY: mkdirat on an open directory with a NUL-terminated name.
            let r = unsafe { libc::mkdirat(cur.as_raw_fd(), c"dd".as_ptr(), 0o755) };
            assert_eq!(r, 0);
            cur = open_dir_at(cur.as_raw_fd(), c"dd").expect("open level");
        }
        // SAFETY: openat creating a file in an open directory; the descriptor is closed.
        let f = unsafe {
            libc::openat(
                cur.as_raw_fd(),
                c"f".as_ptr(),
                libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                0o644,
            )
        };
        assert!(f >= 0);
        // SAFETY: closes the descriptor just opened.
        unsafe { libc::close(f) };
        // A read-only directory deep down.
        // SAFETY: fchmod on an open directory.
        assert_eq!(unsafe { libc::fchmod(cur.as_raw_fd(), 0o500) }, 0);
        drop(cur);
        remove_all(&top).expect("remove");
        assert!(!top.exists());
        // Gone already: not an error.
        remove_all(&top).expect("remove again");
    }
}
