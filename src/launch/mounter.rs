//! Mounting the container's root filesystem in the supervisor: a sandbox directory is a bind
//! mount; squashfs and ext images are served by sifr's FUSE driver (`sifr-fuse`).

use std::path::Path;
use std::sync::Arc;

use sifr_fuse::ext::Options as ExtOptions;
use sifr_fuse::{ExtFs, ImageSource, MountHandle, MountOptions, SquashFs};

use nix::mount::MsFlags;

use super::plan::RootSource;
use super::process::{MountedRoot, RootMounter};
use super::sys::Sys;

/// Mounts roots: directories by bind, images through FUSE.
pub struct Mounter {
    /// The root is writable (`--writable` sandbox).
    pub writable: bool,
    /// The image file, opened by sifr on the host before any namespace was entered (read
    /// through the verified digests when the execution control list governs it).
    pub image: Option<Arc<dyn ImageSource>>,
    /// `image` reads through the execution control list's verified digests.
    pub pinned: bool,
    /// The overlay image files, opened and locked on the host (`ovlfile::open_locked`),
    /// one per `OverlayPlan::images` entry.
    pub overlay_files: Vec<std::fs::File>,
    /// A detached copy of the image's kept mount (see `kept`), attached instead of
    /// mounting the image; the descriptor is owned by the caller of the launch.
    pub kept_tree: Option<std::os::fd::RawFd>,
}

struct Bound;

impl MountedRoot for Bound {
    fn stop(self: Box<Self>) {}
}

/// A FUSE-served image; stopping unmounts it and joins the server threads.
struct Served(MountHandle);

impl MountedRoot for Served {
    fn stop(self: Box<Self>) {
        if let Err(e) = self.0.unmount_and_join() {
            log::debug!("stopping the image server: {e}");
        }
    }
}

impl RootMounter for Mounter {
    fn overlay_files(&mut self) -> Vec<std::fs::File> {
        std::mem::take(&mut self.overlay_files)
    }

    fn mount(
        &mut self,
        root: &RootSource,
        target: &Path,
        sys: &dyn Sys,
    ) -> Result<Box<dyn MountedRoot>, String> {
        match root {
            RootSource::Directory { path } => {
                let src = sys.host_source(path);
                sys.mount(
                    Some(&src),
                    target,
                    None,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None,
                )
                .map_err(|e| format!("cannot bind the sandbox {}: {e}", path.display()))?;
                let locked = sys.locked_flags(target).unwrap_or(MsFlags::empty());
                let mut flags = MsFlags::MS_BIND
                    | MsFlags::MS_REMOUNT
                    | MsFlags::MS_NOSUID
                    | MsFlags::MS_NODEV
                    | locked;
                if self.writable {
                    flags.remove(MsFlags::MS_RDONLY);
                } else {
                    flags |= MsFlags::MS_RDONLY;
                }
                sys.mount(None, target, None, flags, None).map_err(|e| {
                    format!("cannot make the sandbox {} read-only: {e}", path.display())
                })?;
                Ok(Box::new(Bound))
            }
            RootSource::Squashfs { path, .. } | RootSource::Ext { path, .. } => {
                if let Some(tree) = self.kept_tree {
                    return attach_kept(sys, tree, target, path);
                }
                let file = self
                    .image
                    .take()
                    .ok_or_else(|| format!("{}: image not opened", path.display()))?;
                let handle =
                    serve_image(root, file, target, &sys.host_source(Path::new("/dev/fuse")))?;
                Ok(Box::new(Served(handle)))
            }
        }
    }
}

/// Serves the image `root` names from `file` at `target` with sifr's FUSE driver (the
/// server threads start here); `dev_fuse` names /dev/fuse in the caller's root.
pub fn serve_image(
    root: &RootSource,
    file: Arc<dyn ImageSource>,
    target: &Path,
    dev_fuse: &Path,
) -> Result<MountHandle, String> {
    let opts = |path: &Path| MountOptions {
        fsname: path.display().to_string(),
        // Other ids of the namespace (fakeroot's mapped users) may read it too; that never
        // reaches beyond the container's own user namespace.
        allow_other: true,
        dev_fuse: dev_fuse.to_path_buf(),
        ..MountOptions::default()
    };
    match root {
        RootSource::Squashfs { path, offset, .. } => {
            let fs = SquashFs::open_source(file, *offset, Default::default())
                .map_err(|e| format!("cannot read the squashfs image {}: {e}", path.display()))?;
            sifr_fuse::mount_image(Arc::new(fs), target, &opts(path))
                .map_err(|e| format!("cannot mount {}: {e}", path.display()))
        }
        RootSource::Ext { path, offset, size } => {
            // Opened here, in the process that serves the mount: its reader threads would
            // not survive a fork.
            let fs = ExtFs::open_source(
                file,
                *offset,
                ExtOptions {
                    size: Some(*size),
                    ..ExtOptions::default()
                },
            )
            .map_err(|e| format!("cannot read the ext image {}: {e}", path.display()))?;
            sifr_fuse::mount_image(Arc::new(fs), target, &opts(path))
                .map_err(|e| format!("cannot mount {}: {e}", path.display()))
        }
        RootSource::Directory { path } => Err(format!(
            "{}: a directory is not served by FUSE",
            path.display()
        )),
    }
}

/// Attaches the detached copy of the image's kept mount at `target`, read-only (it is
/// nosuid and nodev as the holder mounted it).
fn attach_kept(
    sys: &dyn Sys,
    tree: std::os::fd::RawFd,
    target: &Path,
    image: &Path,
) -> Result<Box<dyn MountedRoot>, String> {
    // SAFETY: the descriptor stays open in sifr's `Attached` (and this forked copy of it)
    // for the whole launch.
    let tree = unsafe { std::os::fd::BorrowedFd::borrow_raw(tree) };
    sys.move_mount(tree, target)
        .map_err(|e| format!("cannot attach the kept mount of {}: {e}", image.display()))?;
    let flags = MsFlags::MS_BIND
        | MsFlags::MS_REMOUNT
        | MsFlags::MS_RDONLY
        | MsFlags::MS_NOSUID
        | MsFlags::MS_NODEV;
    sys.mount(None, target, None, flags, None).map_err(|e| {
        format!(
            "cannot make the kept mount of {} read-only: {e}",
            image.display()
        )
    })?;
    Ok(Box::new(Bound))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::launch::sys::{Call, RecordingSys};

    #[test]
    fn test_kept_tree_is_attached_read_only() {
        let t = tempfile::tempdir().expect("tempdir");
        let sys = RecordingSys::new(t.path());
        let f = std::fs::File::open("/dev/null").expect("open");
        let mut m = Mounter {
            writable: false,
            image: None,
            pinned: false,
            overlay_files: Vec::new(),
            kept_tree: Some(std::os::fd::AsRawFd::as_raw_fd(&f)),
        };
        let root = RootSource::Squashfs {
            path: "/i.sif".into(),
            offset: 0,
            size: 1,
        };
        m.mount(&root, Path::new("/rootfs"), &sys).expect("mounted");
        let calls = sys.calls.borrow();
        assert_eq!(calls.len(), 2, "{calls:#?}");
        assert_eq!(calls[0], Call::MoveMount("/rootfs".into()));
        assert!(matches!(&calls[1], Call::Mount(c)
            if c.target == "/rootfs" && c.flags.contains(MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY
                | MsFlags::MS_NOSUID | MsFlags::MS_NODEV)));
    }
}
