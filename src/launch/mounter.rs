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
    /// The overlay image files, opened and locked on the host (`ovlfile::open_locked`),
    /// one per `OverlayPlan::images` entry.
    pub overlay_files: Vec<std::fs::File>,
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
            RootSource::Squashfs { path, offset, .. } => {
                let file = self
                    .image
                    .take()
                    .ok_or_else(|| format!("{}: image not opened", path.display()))?;
                let fs = SquashFs::open_source(file, *offset, Default::default()).map_err(|e| {
                    format!("cannot read the squashfs image {}: {e}", path.display())
                })?;
                let opts = MountOptions {
                    fsname: path.display().to_string(),
                    // Other ids of the namespace (fakeroot's mapped users) may read it too;
                    // that never reaches beyond the container's own user namespace.
                    allow_other: true,
                    dev_fuse: sys.host_source(Path::new("/dev/fuse")),
                    ..MountOptions::default()
                };
                let handle = sifr_fuse::mount_image(Arc::new(fs), target, &opts)
                    .map_err(|e| format!("cannot mount {}: {e}", path.display()))?;
                Ok(Box::new(Served(handle)))
            }
            RootSource::Ext { path, offset, size } => {
                let file = self
                    .image
                    .take()
                    .ok_or_else(|| format!("{}: image not opened", path.display()))?;
                // Opened here, in the process that serves the mount: its reader threads
                // would not survive a fork.
                let fs = ExtFs::open_source(
                    file,
                    *offset,
                    ExtOptions {
                        size: Some(*size),
                        ..ExtOptions::default()
                    },
                )
                .map_err(|e| format!("cannot read the ext image {}: {e}", path.display()))?;
                let opts = MountOptions {
                    fsname: path.display().to_string(),
                    allow_other: true,
                    dev_fuse: sys.host_source(Path::new("/dev/fuse")),
                    ..MountOptions::default()
                };
                let handle = sifr_fuse::mount_image(Arc::new(fs), target, &opts)
                    .map_err(|e| format!("cannot mount {}: {e}", path.display()))?;
                Ok(Box::new(Served(handle)))
            }
        }
    }
}
