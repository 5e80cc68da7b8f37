//! Reading files inside an image without starting a container (for `inspect`, `run-help`
//! and the SIF metadata): a common interface over sandbox directories and filesystem
//! images.

use std::io::Read;
use std::path::{Path, PathBuf};

/// Read access to the files of a container root filesystem. Paths are absolute paths inside
/// the container; symbolic links resolve inside the container, never outside it.
pub trait ImageFiles {
    /// The contents of a regular file, `Ok(None)` when it does not exist.
    fn read(&self, path: &str) -> std::io::Result<Option<Vec<u8>>>;
    /// The names in a directory (empty when it does not exist).
    fn list(&self, dir: &str) -> std::io::Result<Vec<String>>;
}

/// Files of a sandbox directory.
pub struct SandboxFiles {
    root: PathBuf,
}

/// Largest file read this way: metadata files are small; anything bigger is not one.
const MAX_READ: u64 = 64 << 20;

impl SandboxFiles {
    pub fn new(root: &Path) -> SandboxFiles {
        SandboxFiles {
            root: root.to_path_buf(),
        }
    }

    fn open(&self, path: &str, dir: bool) -> std::io::Result<Option<std::fs::File>> {
        use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
        let root = std::fs::File::open(&self.root)?;
        let rel = path.trim_start_matches('/');
        let rel = if rel.is_empty() { "." } else { rel };
        let mut flags = OFlag::O_RDONLY | OFlag::O_CLOEXEC;
        if dir {
            flags |= OFlag::O_DIRECTORY;
        }
        match nix::fcntl::openat2(
            &root,
            rel,
            OpenHow::new()
                .flags(flags)
                .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS),
        ) {
            Ok(fd) => Ok(Some(std::fs::File::from(fd))),
            Err(nix::Error::ENOENT) | Err(nix::Error::ENOTDIR) => Ok(None),
            Err(e) => Err(std::io::Error::from_raw_os_error(e as i32)),
        }
    }
}

impl ImageFiles for SandboxFiles {
    fn read(&self, path: &str) -> std::io::Result<Option<Vec<u8>>> {
        let Some(f) = self.open(path, false)? else {
            return Ok(None);
        };
        if !f.metadata()?.is_file() {
            return Ok(None);
        }
        let mut buf = Vec::new();
        f.take(MAX_READ).read_to_end(&mut buf)?;
        Ok(Some(buf))
    }

    fn list(&self, dir: &str) -> std::io::Result<Vec<String>> {
        let Some(f) = self.open(dir, true)? else {
            return Ok(vec![]);
        };
        let fd = std::os::fd::OwnedFd::from(f);
        let mut d =
            nix::dir::Dir::from_fd(fd).map_err(|e| std::io::Error::from_raw_os_error(e as i32))?;
        let mut out = Vec::new();
        for e in d.iter().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name != "." && name != ".." {
                out.push(name);
            }
        }
        out.sort();
        Ok(out)
    }
}
