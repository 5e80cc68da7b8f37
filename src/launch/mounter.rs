//! Mounting the container's root filesystem in the supervisor: a sandbox directory is a bind
//! mount; squashfs and ext images are served by sifr's FUSE driver (`sifr-fuse`).

use std::path::Path;

use nix::mount::MsFlags;

use super::plan::RootSource;
use super::process::{MountedRoot, RootMounter};
use super::sys::Sys;

/// Mounts roots: directories by bind, images through FUSE.
pub struct Mounter {
    /// The root is writable (`--writable` sandbox).
    pub writable: bool,
}

struct Bound;

impl MountedRoot for Bound {
    fn stop(self: Box<Self>) {}
}

impl RootMounter for Mounter {
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
            RootSource::Squashfs { path, .. } | RootSource::Ext { path, .. } => Err(format!(
                "{}: mounting images needs the FUSE driver, which this build lacks",
                path.display()
            )),
        }
    }
}
