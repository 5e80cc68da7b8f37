//! Atomic build outputs: the new SIF or sandbox is made under a hidden temporary name next
//! to its destination (`.NAME.sifr-tmp-XXXXXX`, same directory, so same filesystem), synced,
//! and only then put in place with one rename(2) (or RENAME_EXCHANGE over a directory),
//! after which the previous output is removed. Until then the previous output is
//! untouched; a temporary output not committed is removed when dropped.

use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::workdir::BuildDir;
use crate::launch::plan::IdMapPlan;

/// A failure making or putting in place a build output.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("cannot create a temporary output next to {dest}: {err}")]
    Create { dest: PathBuf, err: std::io::Error },
    #[error("cannot sync the new {dest}: {err}")]
    Sync { dest: PathBuf, err: std::io::Error },
    #[error("cannot replace {dest} with the new image: {err}")]
    Replace { dest: PathBuf, err: std::io::Error },
    #[error(
        "cannot write {dest}: the directory {dir} {why} (choose a destination in a directory \
         you can write to)"
    )]
    Destination {
        dest: PathBuf,
        dir: PathBuf,
        why: String,
    },
}

/// Checks, before a build starts, that the directory `dest` goes into exists and that the
/// user can create files in it, so that a long build does not fail only at its end.
pub fn check_destination_dir(dest: &Path) -> Result<(), OutputError> {
    let (parent, _) = split(dest);
    let shown = std::path::absolute(&parent).unwrap_or_else(|_| parent.clone());
    let fail = |why: String| OutputError::Destination {
        dest: dest.to_path_buf(),
        dir: shown.clone(),
        why,
    };
    match std::fs::metadata(&parent) {
        Ok(md) if md.is_dir() => {}
        Ok(_) => return Err(fail("is not a directory".into())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(fail("does not exist".into()));
        }
        Err(e) => return Err(fail(format!("cannot be read: {e}"))),
    }
    let c = CString::new(parent.as_os_str().as_bytes())
        .map_err(|_| fail("has a NUL byte in its name".into()))?;
    // SAFETY: access(2) with a NUL-terminated path; it only reads.
    if unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(fail(format!("is not writable by you ({e})")));
    }
    Ok(())
}

/// A temporary output next to its destination; removed on drop unless committed.
pub struct TempOutput {
    path: PathBuf,
    dir: bool,
    ids: IdMapPlan,
    committed: bool,
}

/// The directory `dest` is in ("." for a bare name) and its file name.
fn split(dest: &Path) -> (PathBuf, String) {
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "output".into());
    (parent, name)
}

impl TempOutput {
    /// An empty file for a new SIF at `dest`.
    pub fn file_for(dest: &Path, ids: &IdMapPlan) -> Result<TempOutput, OutputError> {
        let (parent, name) = split(dest);
        let prefix = format!(".{name}.sifr-tmp-");
        let (_, path) = tempfile::Builder::new()
            .prefix(&prefix)
            .tempfile_in(&parent)
            .and_then(|f| f.keep().map_err(|e| e.error))
            .map_err(|err| OutputError::Create {
                dest: dest.to_path_buf(),
                err,
            })?;
        Ok(TempOutput {
            path,
            dir: false,
            ids: ids.clone(),
            committed: false,
        })
    }

    /// An empty directory for a new sandbox at `dest`.
    pub fn dir_for(dest: &Path, ids: &IdMapPlan) -> Result<TempOutput, OutputError> {
        let (parent, name) = split(dest);
        let prefix = format!(".{name}.sifr-tmp-");
        let path = tempfile::Builder::new()
            .prefix(&prefix)
            .tempdir_in(&parent)
            .map(|d| d.keep())
            .map_err(|err| OutputError::Create {
                dest: dest.to_path_buf(),
                err,
            })?;
        Ok(TempOutput {
            path,
            dir: true,
            ids: ids.clone(),
            committed: false,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Syncs the new output and puts it at `dest`, replacing what was there; then removes
    /// the previous output (a failure there is only a warning: the new one is in place).
    pub fn commit(mut self, dest: &Path) -> Result<(), OutputError> {
        let sync_err = |err| OutputError::Sync {
            dest: dest.to_path_buf(),
            err,
        };
        let replace_err = |err| OutputError::Replace {
            dest: dest.to_path_buf(),
            err,
        };
        let f = std::fs::File::open(&self.path).map_err(sync_err)?;
        if self.dir {
            // A whole tree: sync the filesystem it is on.
            // SAFETY: syncfs on an open descriptor.
            if unsafe { libc::syncfs(f.as_raw_fd()) } < 0 {
                return Err(sync_err(std::io::Error::last_os_error()));
            }
        } else {
            f.sync_all().map_err(sync_err)?;
        }
        drop(f);
        let old = match std::fs::symlink_metadata(dest) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(replace_err(e)),
            Ok(md) => Some(md.is_dir()),
        };
        // Where the previous output is once the new one is in place.
        let previous = if old.is_none() || (old == Some(false) && !self.dir) {
            // Nothing there, or a file replaced by a file: one rename.
            std::fs::rename(&self.path, dest).map_err(replace_err)?;
            None
        } else {
            // A directory on either side: swap the two, then remove the old one.
            exchange(&self.path, dest).map_err(replace_err)?;
            Some(self.path.clone())
        };
        self.committed = true;
        let (parent, _) = split(dest);
        if let Ok(d) = std::fs::File::open(&parent) {
            let _ = d.sync_all();
        }
        if let Some(p) = previous
            && let Err(e) = BuildDir::remove_tree(&self.ids, &p)
        {
            log::warn!(
                "the previous {} is left at {}: {e}",
                dest.display(),
                p.display()
            );
        }
        Ok(())
    }
}

/// Swaps `a` and `b` atomically (RENAME_EXCHANGE); where the filesystem cannot, in three
/// renames (`b` aside, `a` to `b`, `b`'s old one to `a`), putting `b` back if `a` cannot go.
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    let ca = CString::new(a.as_os_str().as_bytes())?;
    let cb = CString::new(b.as_os_str().as_bytes())?;
    // SAFETY: renameat2 with AT_FDCWD and NUL-terminated paths.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    if !matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOSYS)) {
        return Err(e);
    }
    // No RENAME_EXCHANGE here: the old output aside, the new one in, the old one where
    // the new one was (so the caller removes it from there).
    let aside = a.with_file_name(format!(
        "{}-old",
        a.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    ));
    std::fs::rename(b, &aside)?;
    if let Err(e) = std::fs::rename(a, b) {
        let _ = std::fs::rename(&aside, b);
        return Err(e);
    }
    std::fs::rename(&aside, a)
}

impl Drop for TempOutput {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        let r = if self.dir {
            BuildDir::remove_tree(&self.ids, &self.path)
        } else {
            match std::fs::remove_file(&self.path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.to_string()),
                _ => Ok(()),
            }
        };
        if let Err(e) = r {
            log::warn!("could not remove the temporary output: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> IdMapPlan {
        // SAFETY: getuid/getgid cannot fail.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        IdMapPlan {
            uid_map: vec![(0, uid, 1)],
            gid_map: vec![(0, gid, 1)],
            needs_helpers: false,
            uid: 0,
            gid: 0,
            notice: None,
            helper_dirs: vec![],
        }
    }

    #[test]
    fn test_destination_directory_is_checked_before_the_build() {
        let t = tempfile::tempdir().expect("tmp");
        check_destination_dir(&t.path().join("out.sif")).expect("writable");
        let e = check_destination_dir(&t.path().join("nope/out.sif")).expect_err("missing");
        assert!(e.to_string().contains("nope") && e.to_string().contains("does not exist"));
        let f = t.path().join("file");
        std::fs::write(&f, b"").expect("file");
        let e = check_destination_dir(&f.join("out.sif")).expect_err("not a dir");
        assert!(e.to_string().contains("is not a directory"), "{e}");
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .expect("dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn test_uncommitted_outputs_are_removed_and_the_old_one_kept() {
        let t = tempfile::tempdir().expect("tmp");
        let dest = t.path().join("out.sif");
        std::fs::write(&dest, "old").expect("old");
        let f = TempOutput::file_for(&dest, &ids()).expect("tmp file");
        assert!(
            f.path()
                .file_name()
                .expect("name")
                .to_string_lossy()
                .starts_with(".out.sif.sifr-tmp-")
        );
        std::fs::write(f.path(), "new").expect("new");
        drop(f);
        let d = TempOutput::dir_for(&dest, &ids()).expect("tmp dir");
        std::fs::create_dir_all(d.path().join("a/b")).expect("tree");
        drop(d);
        assert_eq!(names(t.path()), vec!["out.sif"]);
        assert_eq!(std::fs::read_to_string(&dest).expect("old"), "old");
    }

    #[test]
    fn test_commit_replaces_files_and_directories() {
        let t = tempfile::tempdir().expect("tmp");
        let dest = t.path().join("out");
        // A file over nothing, then over a file.
        for content in ["one", "two"] {
            let f = TempOutput::file_for(&dest, &ids()).expect("tmp");
            std::fs::write(f.path(), content).expect("write");
            f.commit(&dest).expect("commit");
            assert_eq!(std::fs::read_to_string(&dest).expect("read"), content);
        }
        // A sandbox over the file, then over that sandbox.
        for marker in ["first", "second"] {
            let d = TempOutput::dir_for(&dest, &ids()).expect("tmp");
            std::fs::create_dir(d.path().join("etc")).expect("mkdir");
            std::fs::write(d.path().join("etc").join(marker), "").expect("marker");
            d.commit(&dest).expect("commit");
            assert_eq!(names(&dest.join("etc")), vec![marker]);
        }
        // A file over the sandbox.
        let f = TempOutput::file_for(&dest, &ids()).expect("tmp");
        std::fs::write(f.path(), "sif").expect("write");
        f.commit(&dest).expect("commit");
        assert_eq!(std::fs::read_to_string(&dest).expect("read"), "sif");
        assert_eq!(names(t.path()), vec!["out"]);
    }
}
