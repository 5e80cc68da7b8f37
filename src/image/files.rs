//! Reading files inside an image without starting a container (for `inspect`, `run-help`
//! and the SIF metadata): a common interface over sandbox directories and filesystem
//! images.

use std::io::Read;
use std::path::{Path, PathBuf};

use sifr_fuse::ImageBackend;

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

    /// Opens `path` inside the sandbox with [`super::inroot`] (symlinks and `..` resolved
    /// inside it): a directory when `dir`, else anything but one. `None` when absent.
    fn open(&self, path: &str, dir: bool) -> std::io::Result<Option<std::fs::File>> {
        use super::inroot::{Resolved, resolve_in_root};
        use nix::fcntl::{OFlag, openat};
        use nix::sys::stat::Mode;
        use std::os::fd::AsFd;
        let root = std::fs::File::open(&self.root)?;
        let io = |e: nix::Error| std::io::Error::from_raw_os_error(e as i32);
        let opened = match resolve_in_root(root.as_fd(), path.as_bytes(), None) {
            Ok(Resolved::Dir { fd, .. }) if dir => openat(
                &fd,
                ".",
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                Mode::empty(),
            ),
            Ok(Resolved::Entry {
                parent,
                name,
                exists: true,
                ..
            }) if !dir => openat(
                &parent,
                name.as_os_str(),
                OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
                Mode::empty(),
            ),
            Ok(_) | Err(nix::Error::ENOENT) | Err(nix::Error::ENOTDIR) => return Ok(None),
            Err(e) => return Err(io(e)),
        };
        match opened {
            Ok(fd) => Ok(Some(std::fs::File::from(fd))),
            Err(nix::Error::ENOENT) | Err(nix::Error::ENOTDIR) => Ok(None),
            Err(e) => Err(io(e)),
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

/// Files of a filesystem image (squashfs, or ext2/3/4), read in-process with sifr-fuse's
/// readers: no mount, no container.
pub struct BackendFiles<B: ImageBackend> {
    fs: B,
}

/// Squashfs files (a bare image or a SIF partition).
pub type SquashFiles = BackendFiles<sifr_fuse::SquashFs>;

/// Symbolic links followed while resolving one path, as the kernel's limit.
const MAX_LINKS: usize = 40;

fn be_err(e: sifr_fuse::BackendError) -> std::io::Error {
    std::io::Error::other(e.msg)
}

impl SquashFiles {
    /// Opens the squashfs filesystem at `offset` in `file`.
    pub fn open(
        file: std::fs::File,
        offset: u64,
    ) -> Result<SquashFiles, sifr_fuse::squashfs::SqfsError> {
        Ok(BackendFiles {
            fs: sifr_fuse::SquashFs::open(file, offset)?,
        })
    }
}

impl BackendFiles<sifr_fuse::ExtFs> {
    /// Opens the ext2/3/4 filesystem of `size` bytes at `offset` in `file`.
    pub fn open_ext(
        file: std::fs::File,
        offset: u64,
        size: u64,
    ) -> Result<Self, sifr_fuse::ext::ExtError> {
        let opts = sifr_fuse::ext::Options {
            size: Some(size),
            threads: 1,
        };
        Ok(BackendFiles {
            fs: sifr_fuse::ExtFs::open_with(file, offset, opts)?,
        })
    }
}

impl<B: ImageBackend> BackendFiles<B> {
    /// Resolves an absolute path inside the image to an inode, following symbolic links
    /// (confined to the image: `..` at the root stays at the root).
    fn resolve(&self, path: &str) -> std::io::Result<Option<u64>> {
        use sifr_fuse::FileType;
        let root = self.fs.root();
        let mut pending: Vec<String> = path
            .split('/')
            .filter(|c| !c.is_empty())
            .rev()
            .map(str::to_string)
            .collect();
        let mut stack: Vec<u64> = vec![root];
        let mut links = 0;
        while let Some(comp) = pending.pop() {
            let dir = *stack.last().unwrap_or(&root);
            match comp.as_str() {
                "." => continue,
                ".." => {
                    if stack.len() > 1 {
                        stack.pop();
                    }
                    continue;
                }
                _ => {}
            }
            let Some(attr) = self.fs.lookup(dir, comp.as_bytes()).map_err(be_err)? else {
                return Ok(None);
            };
            let ino = u64::from(attr.ino);
            if attr.kind == FileType::Symlink {
                links += 1;
                if links > MAX_LINKS {
                    return Err(std::io::Error::from_raw_os_error(libc::ELOOP));
                }
                let target =
                    String::from_utf8_lossy(&self.fs.readlink(ino).map_err(be_err)?).into_owned();
                if target.starts_with('/') {
                    stack.truncate(1);
                }
                pending.extend(
                    target
                        .split('/')
                        .filter(|c| !c.is_empty())
                        .rev()
                        .map(str::to_string),
                );
                continue;
            }
            stack.push(ino);
        }
        Ok(stack.last().copied())
    }
}

impl<B: ImageBackend> ImageFiles for BackendFiles<B> {
    fn read(&self, path: &str) -> std::io::Result<Option<Vec<u8>>> {
        use sifr_fuse::FileType;
        let Some(ino) = self.resolve(path)? else {
            return Ok(None);
        };
        let attr = self.fs.stat(ino).map_err(be_err)?;
        if attr.kind != FileType::Regular {
            return Ok(None);
        }
        let len = attr.size.min(MAX_READ) as usize;
        let mut buf = vec![0u8; len];
        let mut done = 0;
        while done < len {
            let n = self
                .fs
                .read(ino, done as u64, &mut buf[done..])
                .map_err(be_err)?;
            if n == 0 {
                break;
            }
            done += n;
        }
        buf.truncate(done);
        Ok(Some(buf))
    }

    fn list(&self, dir: &str) -> std::io::Result<Vec<String>> {
        use sifr_fuse::FileType;
        let Some(ino) = self.resolve(dir)? else {
            return Ok(vec![]);
        };
        if self.fs.stat(ino).map_err(be_err)?.kind != FileType::Directory {
            return Ok(vec![]);
        }
        let mut names = Vec::new();
        self.fs
            .readdir(ino, 0, false, &mut |e: sifr_fuse::DirEntry<'_>, _| {
                names.push(String::from_utf8_lossy(e.name).into_owned());
                true
            })
            .map_err(be_err)?;
        names.sort();
        Ok(names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn busybox() -> Option<SquashFiles> {
        let p = crate::testutil::sif_fixture("busybox_amd64.sif");
        let f = std::fs::File::open(p).ok()?;
        SquashFiles::open(f, 45056).ok()
    }

    #[test]
    fn test_sandbox_files_stay_inside_and_skip_fifos() {
        let t = tempfile::tempdir().expect("tmp");
        let base = std::fs::canonicalize(t.path()).expect("canon");
        let (root, outside) = (base.join("root"), base.join("outside"));
        std::fs::create_dir_all(root.join("etc/d")).expect("mkdir");
        std::fs::create_dir_all(&outside).expect("mkdir");
        std::fs::write(outside.join("secret"), b"host").expect("write");
        std::fs::write(root.join("etc/file"), b"inside").expect("write");
        let link = |target: &Path, name: &str| {
            std::os::unix::fs::symlink(target, root.join(name)).expect("symlink")
        };
        // Absolute and climbing links name paths inside the sandbox, not the host's.
        link(&outside.join("secret"), "abs");
        link(Path::new("../../../../../../../etc/file"), "up");
        link(Path::new("etc"), "etc-link");
        nix::unistd::mkfifo(
            &root.join("fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .expect("mkfifo");
        let f = SandboxFiles::new(&root);
        assert_eq!(f.read("/abs").expect("read"), None);
        assert_eq!(f.read("/up").expect("read"), Some(b"inside".to_vec()));
        assert_eq!(
            f.read("/etc-link/../etc/file").expect("read"),
            Some(b"inside".to_vec())
        );
        assert_eq!(
            f.read("/fifo").expect("read"),
            None,
            "a fifo is not read (nor waited on)"
        );
        assert_eq!(f.read("/etc").expect("read"), None);
        assert_eq!(f.list("/etc-link").expect("list"), ["d", "file"]);
        assert!(f.list("/etc/file").expect("list").is_empty());
        std::fs::create_dir_all(root.join(outside.strip_prefix("/").expect("abs"))).expect("mkdir");
        std::fs::write(
            root.join(outside.strip_prefix("/").expect("abs"))
                .join("secret"),
            b"in",
        )
        .expect("write");
        assert_eq!(f.read("/abs").expect("read"), Some(b"in".to_vec()));
    }

    #[test]
    fn test_squash_files_read_list_and_symlinks() {
        let Some(fs) = busybox() else {
            crate::testutil::skip("busybox fixture not found");
            return;
        };
        let labels = fs
            .read("/.singularity.d/labels.json")
            .expect("read")
            .expect("exists");
        assert!(String::from_utf8_lossy(&labels).contains("org.label-schema"));
        // /singularity is a symlink to .singularity.d/runscript.
        let run = fs.read("/singularity").expect("read").expect("exists");
        assert!(run.starts_with(b"#!/bin/sh"));
        assert_eq!(
            fs.read("/../../.singularity.d/runscript").expect("read"),
            Some(run)
        );
        assert!(fs.read("/no/such").expect("read").is_none());
        assert!(
            fs.read("/bin").expect("read").is_none(),
            "a directory is not a file"
        );
        let env = fs.list("/.singularity.d/env").expect("list");
        assert!(env.contains(&"90-environment.sh".to_string()));
    }
}
