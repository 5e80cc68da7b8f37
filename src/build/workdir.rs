//! The build's scratch directory: created under `--tmpdir` (or `SIFR_TMPDIR`, `TMPDIR`,
//! /tmp), private to the user, and removed on success, on failure and on Ctrl-C.
//!
//! Files in it may belong to subordinate ids (what `%post` created as another user of the
//! container), which the user cannot delete directly: removal runs as root of the build's
//! fakeroot namespace.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::launch::idplan;
use crate::launch::plan::IdMapPlan;
use crate::launch::userns::run_as_fakeroot;

/// Set by SIGINT/SIGTERM/SIGHUP while a build runs.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Makes Ctrl-C (and SIGTERM/SIGHUP) stop the build at the next step, with cleanup.
pub fn catch_interrupts() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
}

/// True once the user interrupted the build.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
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

/// The scratch directory; removed when dropped (unless kept for debugging).
pub struct BuildDir {
    path: PathBuf,
    ids: IdMapPlan,
    pub keep: bool,
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
        let dir = tempfile::Builder::new()
            .prefix("sifr-build-")
            .tempdir_in(&base)
            .map_err(|e| std::io::Error::new(e.kind(), format!("in {}: {e}", base.display())))?;
        Ok(BuildDir {
            path: dir.keep(),
            ids,
            keep: false,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes a tree that may hold files of subordinate ids.
    pub fn remove_tree(ids: &IdMapPlan, path: &Path) -> Result<(), String> {
        let p = path.to_path_buf();
        match std::fs::remove_dir_all(&p) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(_) => {}
        }
        run_as_fakeroot(ids, &idplan::write_maps, move || {
            make_writable(&p);
            std::fs::remove_dir_all(&p).map_err(|e| format!("cannot remove {}: {e}", p.display()))
        })
        .map_err(|e| e.0)
    }
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

impl Drop for BuildDir {
    fn drop(&mut self) {
        if self.keep {
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
}
