//! Mounting an image with our own mount(2) (never fusermount) and serving it from worker
//! threads. Order matters: fuse-backend-rs' `FuseSession::new` stats the mountpoint, so it
//! must be built BEFORE mount(2), or that stat waits forever for an INIT nobody serves.

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use fuse_backend_rs::api::server::Server;
use fuse_backend_rs::transport::{FuseChannel, FuseSession};
use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::mount::{MntFlags, MsFlags, mount, umount2};

use crate::backend::ImageBackend;
use crate::server::ImageFs;

/// Largest FUSE read (matches fuse-backend-rs' request buffer and MAX_PAGES = 256).
const MAX_READ: usize = 1 << 20;

/// How to mount.
#[derive(Debug, Clone)]
pub struct MountOptions {
    /// Shown as the mount source in /proc/self/mountinfo.
    pub fsname: String,
    /// Filesystem subtype (`fuse.<subtype>`).
    pub subtype: String,
    /// Let users other than the mounter (in this user namespace) access the mount.
    pub allow_other: bool,
    /// Worker threads; None = number of CPUs, at least 2.
    pub threads: Option<usize>,
    /// The FUSE device (a launcher that pivoted away from the host's root reaches it
    /// elsewhere).
    pub dev_fuse: PathBuf,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            fsname: "sifr".into(),
            subtype: "sifr".into(),
            allow_other: false,
            threads: None,
            dev_fuse: PathBuf::from("/dev/fuse"),
        }
    }
}

/// Why mounting or unmounting failed.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// /dev/fuse could not be opened.
    #[error("cannot open /dev/fuse: {0} (is the fuse module loaded and /dev/fuse mode 0666?)")]
    OpenDevFuse(#[source] std::io::Error),
    /// fuse-backend-rs refused to set up the session.
    #[error("cannot set up a FUSE session on {path}: {msg}")]
    Session {
        /// Mountpoint.
        path: PathBuf,
        /// What fuse-backend-rs said.
        msg: String,
    },
    /// fcntl on the /dev/fuse fd failed.
    #[error("cannot make the /dev/fuse fd non-blocking: {0}")]
    Nonblock(#[source] Errno),
    /// mount(2) failed.
    #[error(
        "mount(2) of a FUSE filesystem on {path} failed: {errno} (needs CAP_SYS_ADMIN in a user+mount namespace)"
    )]
    Mount {
        /// Mountpoint.
        path: PathBuf,
        /// The error.
        #[source]
        errno: Errno,
    },
    /// A worker thread could not be started.
    #[error("cannot start FUSE worker thread: {0}")]
    Spawn(#[source] std::io::Error),
    /// umount2 failed.
    #[error("cannot unmount {path}: {errno}")]
    Unmount {
        /// Mountpoint.
        path: PathBuf,
        /// The error.
        #[source]
        errno: Errno,
    },
}

/// A mounted image being served. Dropping it unmounts and stops the workers.
pub struct MountHandle {
    mountpoint: PathBuf,
    session: Option<FuseSession>,
    threads: Vec<JoinHandle<()>>,
}

/// Mounts `backend` read-only on `mountpoint` and serves it from worker threads. The caller
/// must already be in a user+mount namespace where it holds CAP_SYS_ADMIN.
pub fn mount_image<B: ImageBackend>(
    backend: Arc<B>,
    mountpoint: &Path,
    opts: &MountOptions,
) -> Result<MountHandle, MountError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(&opts.dev_fuse)
        .map_err(MountError::OpenDevFuse)?;
    fcntl(&file, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).map_err(MountError::Nonblock)?;
    let session_err = |msg: String| MountError::Session {
        path: mountpoint.to_path_buf(),
        msg,
    };
    // Built before mount(2): FuseSession::new stats the mountpoint (see the module header).
    let mut session = FuseSession::new(mountpoint, &opts.fsname, &opts.subtype, true)
        .map_err(|e| session_err(e.to_string()))?;
    // We never mount through the session, but its Drop may try to unmount: make sure a
    // fallback can never run a fusermount helper.
    session.set_fusermount("/nonexistent/sifr-never-runs-fusermount");
    let fd = file.as_raw_fd();
    session.set_fuse_file(file);
    let data = mount_data(
        fd,
        nix::unistd::getuid().as_raw(),
        nix::unistd::getgid().as_raw(),
        opts.allow_other,
    );
    let fstype = format!("fuse.{}", opts.subtype);
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_RDONLY;
    mount(
        Some(opts.fsname.as_str()),
        mountpoint,
        Some(fstype.as_str()),
        flags,
        Some(data.as_str()),
    )
    .map_err(|errno| MountError::Mount {
        path: mountpoint.to_path_buf(),
        errno,
    })?;
    let mut handle = MountHandle {
        mountpoint: mountpoint.to_path_buf(),
        session: None,
        threads: Vec::new(),
    };
    let server = Arc::new(Server::new(ImageFs::new(backend)));
    let n = opts
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
        .max(2);
    for i in 0..n {
        let ch = match session.new_channel() {
            Ok(ch) => ch,
            Err(e) => {
                handle.session = Some(session);
                let _ = handle.stop();
                return Err(session_err(e.to_string()));
            }
        };
        let server = Arc::clone(&server);
        let t = std::thread::Builder::new()
            .name(format!("sifr-fuse-{i}"))
            .spawn(move || serve(ch, &server));
        match t {
            Ok(t) => handle.threads.push(t),
            Err(e) => {
                handle.session = Some(session);
                let _ = handle.stop();
                return Err(MountError::Spawn(e));
            }
        }
    }
    handle.session = Some(session);
    Ok(handle)
}

/// The mount(2) data string.
fn mount_data(fd: i32, uid: u32, gid: u32, allow_other: bool) -> String {
    let mut s = format!(
        "fd={fd},rootmode=40000,user_id={uid},group_id={gid},default_permissions,max_read={MAX_READ}"
    );
    if allow_other {
        s.push_str(",allow_other");
    }
    s
}

/// One worker: take requests until the session is woken or the mount goes away.
fn serve<B: ImageBackend>(mut ch: FuseChannel, server: &Server<ImageFs<B>>) {
    loop {
        match ch.get_request() {
            Ok(Some((r, w))) => {
                if let Err(e) = server.handle_message(r, w.into(), None, None) {
                    match &e {
                        // The connection is gone (unmounted or aborted): stop.
                        fuse_backend_rs::Error::EncodeMessage(io)
                            if matches!(
                                io.raw_os_error(),
                                Some(libc::EBADF) | Some(libc::ENODEV)
                            ) =>
                        {
                            break;
                        }
                        // ENOENT: the request was interrupted; nothing to answer.
                        fuse_backend_rs::Error::EncodeMessage(io)
                            if io.raw_os_error() == Some(libc::ENOENT) => {}
                        _ => log::warn!("FUSE request failed: {e}"),
                    }
                }
            }
            // Woken by unmount_and_join, or ENODEV: the filesystem was unmounted.
            Ok(None) => break,
            // epoll reports an error once the connection is aborted.
            Err(e) => {
                log::debug!("FUSE channel closed: {e}");
                break;
            }
        }
    }
}

impl MountHandle {
    /// The mountpoint.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// True while at least one worker is still serving.
    pub fn is_serving(&self) -> bool {
        self.threads.iter().any(|t| !t.is_finished())
    }

    /// Detaches the mount (umount2 MNT_DETACH), wakes the workers and waits for them.
    /// A mount that is already gone is not an error.
    pub fn unmount_and_join(mut self) -> Result<(), MountError> {
        self.stop()
    }

    fn stop(&mut self) -> Result<(), MountError> {
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        let r = match umount2(&self.mountpoint, MntFlags::MNT_DETACH) {
            Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => Ok(()),
            Err(errno) => Err(MountError::Unmount {
                path: self.mountpoint.clone(),
                errno,
            }),
        };
        if let Err(e) = session.wake() {
            log::warn!(
                "cannot wake FUSE workers of {}: {e}",
                self.mountpoint.display()
            );
        }
        for t in self.threads.drain(..) {
            if t.join().is_err() {
                log::error!("a FUSE worker of {} panicked", self.mountpoint.display());
            }
        }
        drop(session);
        r
    }
}

impl Drop for MountHandle {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            log::warn!("{e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_mount_data() {
        assert_eq!(
            mount_data(5, 0, 0, false),
            "fd=5,rootmode=40000,user_id=0,group_id=0,default_permissions,max_read=1048576"
        );
        assert!(mount_data(5, 1000, 100, true).ends_with(",allow_other"));
        assert!(mount_data(5, 1000, 100, true).contains("user_id=1000,group_id=100"));
    }

    #[test]
    fn test_mount_on_missing_dir_fails_cleanly() {
        // Fails either at /dev/fuse or at the session (the path does not exist); never panics.
        let fs = Arc::new(NoFs);
        let r = mount_image(
            fs,
            Path::new("/nonexistent/sifr-mnt"),
            &MountOptions::default(),
        );
        assert!(matches!(
            r,
            Err(MountError::OpenDevFuse(_)) | Err(MountError::Session { .. })
        ));
    }

    struct NoFs;
    impl ImageBackend for NoFs {
        fn root(&self) -> u64 {
            1
        }
        fn stat(&self, _: u64) -> crate::backend::BackendResult<crate::squashfs::Attr> {
            Err(crate::backend::BackendError {
                errno: libc::ENOENT,
                msg: String::new(),
            })
        }
        fn lookup(
            &self,
            _: u64,
            _: &[u8],
        ) -> crate::backend::BackendResult<Option<crate::squashfs::Attr>> {
            Ok(None)
        }
        fn parent(&self, d: u64) -> crate::backend::BackendResult<u64> {
            Ok(d)
        }
        fn readdir(
            &self,
            _: u64,
            _: u64,
            _: bool,
            _: &mut dyn FnMut(crate::squashfs::DirEntry<'_>, Option<crate::squashfs::Attr>) -> bool,
        ) -> crate::backend::BackendResult<()> {
            Ok(())
        }
        fn read(&self, _: u64, _: u64, _: &mut [u8]) -> crate::backend::BackendResult<usize> {
            Ok(0)
        }
        fn readlink(&self, _: u64) -> crate::backend::BackendResult<Vec<u8>> {
            Ok(vec![])
        }
        fn listxattr(&self, _: u64) -> crate::backend::BackendResult<Vec<Vec<u8>>> {
            Ok(vec![])
        }
        fn getxattr(&self, _: u64, _: &[u8]) -> crate::backend::BackendResult<Option<Vec<u8>>> {
            Ok(None)
        }
        fn stats(&self) -> crate::backend::FsStats {
            crate::backend::FsStats {
                block_size: 4096,
                blocks: 0,
                files: 0,
            }
        }
    }
}
