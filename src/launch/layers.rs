//! The supervisor's overlay image layers (`--overlay FILE`, SIF overlay partitions).
//!
//! Squashfs layers are served by sifr's own FUSE driver, like the image. ext3 layers are
//! mounted by `fuse2fs`, and a writable one is stacked with the image by `fuse-overlayfs`
//! (the kernel's overlayfs refuses a FUSE upper layer), as Apptainer's unprivileged image
//! driver does. Both helpers are host programs, while the supervisor has pivoted into the
//! session tmpfs (the host's root at /oldroot): they run chrooted in a small helper root in
//! the session, `/helper`, which binds the host's /usr, /etc and top-level library
//! directories, /proc and /dev/fuse, and mount at `/helper/mnt/...`, plain directories of
//! the session tmpfs, so the supervisor and the container see the mounts there.
//!
//! ```text
//! /helper/mnt/l<i>    image layer i (OverlayPlan::images[i])
//! /helper/mnt/image   the image root (a bind of /rootfs), fuse-overlayfs's bottom layer
//! /helper/mnt/points  mount points the image lacks, the layer right above the image
//! /helper/mnt/d<i>    read-only overlay directory i (a bind), for fuse-overlayfs
//! /helper/mnt/upper   a writable overlay directory's upper/ and work/ (enable overlay =
//! /helper/mnt/work      driver)
//! /helper/mnt/merged  fuse-overlayfs's mount: the container's root with RootLayer::Fuse
//! ```
//!
//! Lifetime. Each helper is a child of the supervisor's main thread with
//! PR_SET_PDEATHSIG(SIGTERM), in its own session (terminal signals do not reach it). When
//! the container ends the supervisor stops them, the top one first: SIGTERM, then waits
//! (fuse2fs flushes and closes the filesystem on SIGTERM). A SIGKILLed sifr kills the
//! supervisor, whose death sends each helper SIGTERM: the same clean end. The image file is
//! handed to fuse2fs as the descriptor sifr opened and locked (`ovlfile::open_locked`), so
//! the lock lives exactly as long as the filesystem is open.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::mount::MsFlags;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::plan::{ImageFs, ImageLayer, LowerRef, Plan, RootLayer};
use super::rootfs::Layout;
use super::sys::Sys;

/// The helper root, inside the session.
pub fn helper_root(layout: &Layout) -> PathBuf {
    layout.session.join("helper")
}

/// Where image layer `i` is mounted, in the helper root (`inner`: as the helper sees it).
pub fn layer_dir(i: usize) -> PathBuf {
    PathBuf::from(format!("/mnt/l{i}"))
}

/// A path of the helper root as the supervisor sees it.
pub fn outer(layout: &Layout, inner: &Path) -> PathBuf {
    helper_root(layout).join(inner.strip_prefix("/").unwrap_or(inner))
}

/// The directory image layer `i` contributes as a read-only layer (as the supervisor
/// sees it): an ext3 layer's `upper/` when it has one (Apptainer's layout of an overlay
/// image), else its root; a squashfs layer's root.
pub fn lower_of(sys: &dyn Sys, plan: &Plan, layout: &Layout, i: usize) -> PathBuf {
    let dir = outer(layout, &layer_dir(i));
    let upper = dir.join("upper");
    if plan.overlay.images[i].fs == ImageFs::Ext3 && sys.exists(&upper) {
        upper
    } else {
        dir
    }
}

/// The container's root with [`RootLayer::Fuse`].
pub fn merged(layout: &Layout) -> PathBuf {
    outer(layout, Path::new("/mnt/merged"))
}

/// The container's side of the propagation (see [`build_helper_root`]): its copy of the
/// layers' mounts receives, and sends nothing back to the helpers.
pub fn container_receives_only(sys: &dyn Sys, layout: &Layout) -> std::io::Result<()> {
    sys.mount(
        None,
        &helper_root(layout).join("mnt"),
        None,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None,
    )
}

/// The supervisor, before it detaches the session: its layer mounts leave the peer group,
/// so that the detach does not propagate to the helpers' and the container's copies.
pub fn supervisor_lets_go(sys: &dyn Sys, layout: &Layout) -> std::io::Result<()> {
    sys.mount(
        None,
        &helper_root(layout).join("mnt"),
        None,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None,
    )
}

/// True when the plan has anything for this module to mount.
pub fn needed(plan: &Plan) -> bool {
    !plan.overlay.images.is_empty() || plan.layer == RootLayer::Fuse
}

/// Top-level host entries the helper root reproduces: links as links (merged /usr), and
/// directories as binds.
const HOST_ENTRIES: [&str; 9] = [
    "usr", "etc", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "proc",
];

/// Builds the helper root: the host's programs and libraries, /proc, /dev/fuse, and the
/// mount points. `link_of` reads a host entry's symbolic link (`None`: not a link).
pub fn build_helper_root(
    sys: &dyn Sys,
    plan: &Plan,
    layout: &Layout,
    link_of: &dyn Fn(&Path) -> Option<PathBuf>,
) -> Result<(), String> {
    let root = helper_root(layout);
    let fail =
        |what: &str, e: std::io::Error| format!("cannot prepare the overlay helpers ({what}): {e}");
    // The mount points' directory is a shared mount: each helper runs in a mount namespace
    // of its own (a copy: the supervisor later detaches the session, helper root included,
    // from its own namespace, which would take /proc and the layers from under the helpers),
    // and what it mounts there propagates back to the supervisor, and from it to the
    // container.
    let mnt = root.join("mnt");
    sys.mkdir_all(&mnt, 0o755).map_err(|e| fail("mnt", e))?;
    sys.mount(Some(&mnt), &mnt, None, MsFlags::MS_BIND, None)
        .and_then(|()| sys.mount(None, &mnt, None, MsFlags::MS_SHARED, None))
        .map_err(|e| fail("mnt", e))?;
    for name in HOST_ENTRIES {
        let host = sys.host_source(&Path::new("/").join(name));
        let here = root.join(name);
        if let Some(target) = link_of(&host) {
            sys.symlink(&target, &here).map_err(|e| fail(name, e))?;
            continue;
        }
        if !sys.exists(&host) {
            continue;
        }
        sys.mkdir_all(&here, 0o755).map_err(|e| fail(name, e))?;
        sys.mount(
            Some(&host),
            &here,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
        )
        .map_err(|e| fail(name, e))?;
    }
    sys.mkdir_all(&root.join("dev"), 0o755)
        .map_err(|e| fail("dev", e))?;
    for dev in ["fuse", "null"] {
        let here = root.join("dev").join(dev);
        sys.write_file(&here, b"", 0o600)
            .map_err(|e| fail(dev, e))?;
        sys.mount(
            Some(&sys.host_source(&Path::new("/dev").join(dev))),
            &here,
            None,
            MsFlags::MS_BIND,
            None,
        )
        .map_err(|e| fail(dev, e))?;
    }
    for i in 0..plan.overlay.images.len() {
        sys.mkdir_all(&outer(layout, &layer_dir(i)), 0o755)
            .map_err(|e| fail("layer", e))?;
    }
    Ok(())
}

/// fuse2fs's arguments for image layer `l`, opened by sifr as descriptor `fd`, mounted at
/// `mountpoint` (in the helper root). `root_in_ns`: the helper runs as root of the user
/// namespace (fakeroot); otherwise fuse2fs is told to bypass its permission checks, as
/// Apptainer does, so that every id reads the layer (the kernel still checks modes).
pub fn fuse2fs_args(l: &ImageLayer, fd: i32, mountpoint: &Path, root_in_ns: bool) -> Vec<String> {
    let mut o = String::from("allow_other");
    if !l.writable {
        o.push_str(",ro");
    }
    if !root_in_ns {
        o.push_str(",fakeroot");
    }
    if l.offset > 0 {
        o.push_str(&format!(",offset={}", l.offset));
    }
    vec![
        "-f".into(),
        "-o".into(),
        o,
        format!("/proc/self/fd/{fd}"),
        mountpoint.display().to_string(),
    ]
}

/// fuse-overlayfs's arguments: `lowers` topmost first, `upper` with its work directory (a
/// read-only stack without), mounted at `mountpoint` (paths in the helper root). Options as
/// Apptainer's image driver passes them.
pub fn fuse_overlayfs_args(
    lowers: &[PathBuf],
    upper: Option<(&Path, &Path)>,
    mountpoint: &Path,
) -> Vec<String> {
    let lowerdir = lowers
        .iter()
        .map(|l| l.display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    let mut o = format!("allow_other,noacl,lowerdir={lowerdir}");
    if let Some((u, w)) = upper {
        o.push_str(&format!(
            ",upperdir={},workdir={}",
            u.display(),
            w.display()
        ));
    }
    vec![
        "-f".into(),
        "-o".into(),
        o,
        mountpoint.display().to_string(),
    ]
}

/// A helper process serving a mount.
struct Daemon {
    name: &'static str,
    pid: Pid,
    mountpoint: PathBuf,
}

/// The mounted layers; [`Layers::stop`] ends them, the top one first.
#[derive(Default)]
pub struct Layers {
    daemons: Vec<Daemon>,
    served: Vec<sifr_fuse::MountHandle>,
}

impl Layers {
    /// Stops every helper (SIGTERM, then a bounded wait; SIGKILL after it) and sifr's own
    /// servers.
    pub fn stop(mut self) {
        while let Some(d) = self.daemons.pop() {
            stop_daemon(&d);
        }
        for h in self.served.drain(..) {
            if let Err(e) = h.unmount_and_join() {
                log::debug!("stopping an overlay layer server: {e}");
            }
        }
    }
}

fn stop_daemon(d: &Daemon) {
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    if kill(d.pid, Signal::SIGTERM).is_err() {
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match waitpid(d.pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(WaitStatus::StillAlive) => {
                log::warn!(
                    "{} did not end on SIGTERM ({}); killing it",
                    d.name,
                    d.mountpoint.display()
                );
                let _ = kill(d.pid, Signal::SIGKILL);
                let _ = waitpid(d.pid, None);
                return;
            }
            _ => return,
        }
    }
}

/// Capabilities a helper running as a user other than root of the namespace keeps across
/// exec (ambient), as Apptainer's image driver gives them: mount, and read every layer.
const AMBIENT: [u32; 3] = [
    21, // CAP_SYS_ADMIN
    1,  // CAP_DAC_OVERRIDE
    19, // CAP_SYS_PTRACE
];

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// In the forked child: raises the ambient capabilities (only system calls, no allocation).
fn raise_ambient() -> std::io::Result<()> {
    let mut hdr = CapHeader {
        version: 0x2008_0522,
        pid: 0,
    };
    let mut data = [CapData {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: capget fills the two data structures we pass, as version 3 defines.
    if unsafe { libc::syscall(libc::SYS_capget, &mut hdr, data.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    for c in AMBIENT {
        data[(c / 32) as usize].inheritable |= 1 << (c % 32);
    }
    // SAFETY: capset reads the structures we pass.
    if unsafe { libc::syscall(libc::SYS_capset, &mut hdr, data.as_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    for c in AMBIENT {
        // SAFETY: prctl with integer arguments only.
        let r = unsafe {
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                c as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
            )
        };
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// What starting one helper needs.
struct Spawn<'a> {
    /// The program, as the helper root names it.
    program: PathBuf,
    args: Vec<String>,
    /// A descriptor the helper inherits (the locked image).
    keep: Option<i32>,
    chroot: &'a Path,
    /// Raise the ambient capabilities (the helper is not root of the namespace).
    ambient: bool,
    log: File,
}

/// Starts a helper chrooted in the helper root, dying with this thread (SIGTERM).
fn spawn(s: Spawn<'_>) -> std::io::Result<Pid> {
    let parent = nix::unistd::getpid();
    let chroot =
        CString::new(s.chroot.as_os_str().as_encoded_bytes()).map_err(std::io::Error::other)?;
    let keep = s.keep;
    let ambient = s.ambient;
    let mut cmd = std::process::Command::new(&s.program);
    cmd.args(&s.args)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        // Not Stdio::null(): this process's root is the session, without /dev/null.
        .stdin(File::open(s.chroot.join("dev/null"))?)
        .stdout(s.log.try_clone()?)
        .stderr(s.log);
    // SAFETY: the closure runs in the forked child before exec and only makes system calls
    // on values prepared before the fork (no allocation, no lock).
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong) != 0
                || libc::getppid() != parent.as_raw()
            {
                return Err(std::io::Error::other("the supervisor is gone"));
            }
            libc::setsid();
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
            if libc::chroot(chroot.as_ptr()) != 0 || libc::chdir(c"/".as_ptr()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if let Some(fd) = keep
                && libc::fcntl(fd, libc::F_SETFD, 0) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            if ambient {
                raise_ambient()?;
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    Ok(Pid::from_raw(child.id() as i32))
}

/// Waits until `mountpoint` is a mount of its own (its device differs from its parent's),
/// or the helper has ended (its log's last line is the reason).
fn wait_mounted(d: &Daemon, outer_mp: &Path, log: &Path) -> Result<(), String> {
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    use std::os::unix::fs::MetadataExt;
    let parent_dev = outer_mp
        .parent()
        .and_then(|p| std::fs::metadata(p).ok())
        .map(|m| m.dev());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(m) = std::fs::metadata(outer_mp)
            && Some(m.dev()) != parent_dev
        {
            return Ok(());
        }
        let ended = !matches!(
            waitpid(d.pid, Some(WaitPidFlag::WNOHANG)),
            Ok(WaitStatus::StillAlive)
        );
        if ended || Instant::now() > deadline {
            if !ended {
                let _ = kill(d.pid, Signal::SIGKILL);
                let _ = waitpid(d.pid, None);
            }
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let reason = text
                .lines()
                .map(str::trim)
                .rfind(|l| !l.is_empty() && !is_noise(l))
                .unwrap_or(if ended { "it exited" } else { "it timed out" })
                .to_string();
            return Err(reason);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// fuse2fs's and fuse-overlayfs's warnings that say nothing to the user (Apptainer filters
/// the same ones).
fn is_noise(line: &str) -> bool {
    line.contains("does not support using the journal")
        || line.contains("does not support writing the journal")
        || line.contains("There may be file system corruption")
        || line.contains("Mounting read-only")
        || line.contains("continue without -o clone_fd")
}

/// Step 1, before the image is mounted (the supervisor is still single-threaded): the
/// helper root and the ext3 layers (fuse2fs). `files[i]` is image layer i's opened,
/// locked file.
pub fn mount_ext_layers(
    sys: &dyn Sys,
    plan: &Plan,
    layout: &Layout,
    files: &[File],
    layers: &mut Layers,
) -> Result<(), String> {
    build_helper_root(sys, plan, layout, &|p| std::fs::read_link(p).ok())?;
    let root = helper_root(layout);
    let root_in_ns = plan.ids.uid == 0;
    for (i, l) in plan.overlay.images.iter().enumerate() {
        if l.fs != ImageFs::Ext3 {
            continue;
        }
        let file = files
            .get(i)
            .ok_or_else(|| format!("{}: overlay image not opened", l.path.display()))?;
        let program = plan
            .overlay
            .fuse2fs
            .clone()
            .ok_or_else(|| format!("{}: fuse2fs not found", l.path.display()))?;
        let fail = |e: String| {
            format!(
                "cannot mount the overlay image {} with fuse2fs: {e}",
                l.path.display()
            )
        };
        let log_path = root.join(format!("l{i}.log"));
        let log = File::create(&log_path)
            .map_err(|e| fail(format!("cannot create {}: {e}", log_path.display())))?;
        let mp = layer_dir(i);
        let pid = spawn(Spawn {
            program,
            args: fuse2fs_args(l, file.as_raw_fd(), &mp, root_in_ns),
            keep: Some(file.as_raw_fd()),
            chroot: &root,
            ambient: !root_in_ns,
            log,
        })
        .map_err(|e| fail(format!("cannot start it: {e}")))?;
        let d = Daemon {
            name: "fuse2fs",
            pid,
            mountpoint: mp.clone(),
        };
        let r = wait_mounted(&d, &outer(layout, &mp), &log_path);
        layers.daemons.push(d);
        r.map_err(fail)?;
    }
    Ok(())
}

/// Step 2, once the image is mounted at `layout.rootfs()`: squashfs layers (sifr's driver)
/// and, with [`RootLayer::Fuse`], fuse-overlayfs over everything at [`merged`].
pub fn mount_top(
    sys: &dyn Sys,
    plan: &Plan,
    layout: &Layout,
    files: &[File],
    layers: &mut Layers,
) -> Result<(), String> {
    use sifr_fuse::{ImageSource, MountOptions, SquashFs};
    for (i, l) in plan.overlay.images.iter().enumerate() {
        if l.fs != ImageFs::Squashfs {
            continue;
        }
        let fail = |e: String| format!("cannot mount the overlay image {}: {e}", l.path.display());
        let file = files
            .get(i)
            .ok_or_else(|| fail("not opened".into()))?
            .try_clone()
            .map_err(|e| fail(e.to_string()))?;
        let src: Arc<dyn ImageSource> = Arc::new(file);
        let fs = SquashFs::open_source(src, l.offset, Default::default())
            .map_err(|e| fail(e.to_string()))?;
        let opts = MountOptions {
            fsname: l.path.display().to_string(),
            allow_other: true,
            dev_fuse: sys.host_source(Path::new("/dev/fuse")),
            ..MountOptions::default()
        };
        let h = sifr_fuse::mount_image(Arc::new(fs), &outer(layout, &layer_dir(i)), &opts)
            .map_err(|e| fail(e.to_string()))?;
        layers.served.push(h);
    }
    if plan.layer != RootLayer::Fuse {
        return Ok(());
    }
    let root = helper_root(layout);
    let bind = |src: &Path, inner: &str| -> Result<PathBuf, String> {
        let here = outer(layout, Path::new(inner));
        sys.mkdir_all(&here, 0o755)
            .and_then(|()| {
                sys.mount(
                    Some(src),
                    &here,
                    None,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None,
                )
            })
            .map_err(|e| format!("cannot prepare the overlay layer {}: {e}", src.display()))?;
        Ok(PathBuf::from(inner))
    };
    let mut lowers = Vec::new();
    for r in plan.overlay.lower_stack() {
        lowers.push(match r {
            LowerRef::Dir(i) => bind(
                &sys.host_source(&plan.overlay.lowers[i]),
                &format!("/mnt/d{i}"),
            )?,
            LowerRef::Image(i) => {
                let inner = layer_dir(i);
                match lower_of(sys, plan, layout, i).ends_with("upper") {
                    true => inner.join("upper"),
                    false => inner,
                }
            }
        });
    }
    lowers.push(bind(&layout.rootfs(), "/mnt/image")?);
    let upper = if let Some((i, _)) = plan.overlay.writable_image() {
        let d = layer_dir(i);
        for sub in ["upper", "work"] {
            sys.mkdir_all(&outer(layout, &d.join(sub)), 0o755)
                .map_err(|e| format!("cannot create {sub}/ in the overlay image: {e}"))?;
        }
        Some((d.join("upper"), d.join("work")))
    } else if let Some(dir) = &plan.overlay.upper {
        let dir = sys.host_source(dir);
        Some((
            bind(&dir.join("upper"), "/mnt/upper")?,
            bind(&dir.join("work"), "/mnt/work")?,
        ))
    } else {
        None
    };
    // Mount points the image lacks, made in a session layer of their own right above the
    // image before the stack exists, as Apptainer's overlay-lowerdir: never in the user's
    // writable layer, where they would persist.
    if upper.is_some() {
        let points = PathBuf::from("/mnt/points");
        sys.mkdir_all(&outer(layout, &points), 0o755)
            .map_err(|e| format!("cannot create the mount-point layer: {e}"))?;
        let mut warnings = Vec::new();
        super::rootfs::mount_points_in_upper(
            sys,
            plan,
            &layout.rootfs(),
            &outer(layout, &points),
            &mut warnings,
        )
        .map_err(|e| e.to_string())?;
        for w in warnings {
            log::warn!("{w}");
        }
        lowers.insert(lowers.len() - 1, points);
    }
    let program = plan
        .overlay
        .fuse_overlayfs
        .clone()
        .ok_or_else(|| "fuse-overlayfs not found".to_string())?;
    let mp = PathBuf::from("/mnt/merged");
    sys.mkdir_all(&outer(layout, &mp), 0o755)
        .map_err(|e| format!("cannot create the overlay mount point: {e}"))?;
    let what = plan
        .overlay
        .writable_image()
        .map(|(_, l)| l.path.clone())
        .or_else(|| plan.overlay.upper.clone())
        .unwrap_or_else(|| plan.image_display.clone());
    let fail = |e: String| {
        format!(
            "cannot mount the overlay {} with fuse-overlayfs: {e}",
            what.display()
        )
    };
    let log_path = root.join("merged.log");
    let log = File::create(&log_path).map_err(|e| fail(e.to_string()))?;
    let root_in_ns = plan.ids.uid == 0;
    let args = fuse_overlayfs_args(
        &lowers,
        upper.as_ref().map(|(u, w)| (u.as_path(), w.as_path())),
        &mp,
    );
    let pid = spawn(Spawn {
        program,
        args,
        keep: None,
        chroot: &root,
        ambient: !root_in_ns,
        log,
    })
    .map_err(|e| fail(e.to_string()))?;
    let d = Daemon {
        name: "fuse-overlayfs",
        pid,
        mountpoint: mp.clone(),
    };
    let r = wait_mounted(&d, &outer(layout, &mp), &log_path);
    layers.daemons.push(d);
    r.map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::launch::plan::{OverlayPlan, tests::minimal};
    use crate::launch::rootfs::tests::recorder;
    use crate::launch::sys::Call;

    fn ext(writable: bool, offset: u64) -> ImageLayer {
        ImageLayer {
            fs: ImageFs::Ext3,
            path: "/o/e.img".into(),
            offset,
            size: 1 << 20,
            writable,
        }
    }

    #[test]
    fn test_fuse2fs_arguments() {
        let a = fuse2fs_args(&ext(true, 0), 7, Path::new("/mnt/l0"), false);
        assert_eq!(
            a,
            [
                "-f",
                "-o",
                "allow_other,fakeroot",
                "/proc/self/fd/7",
                "/mnt/l0"
            ]
        );
        // Read-only, as root of the namespace (fakeroot), a SIF partition at an offset.
        let a = fuse2fs_args(&ext(false, 4096), 9, Path::new("/mnt/l1"), true);
        assert_eq!(a[2], "allow_other,ro,offset=4096");
    }

    #[test]
    fn test_fuse_overlayfs_arguments() {
        let a = fuse_overlayfs_args(
            &["/mnt/d0".into(), "/mnt/image".into()],
            Some((Path::new("/mnt/l1/upper"), Path::new("/mnt/l1/work"))),
            Path::new("/mnt/merged"),
        );
        assert_eq!(
            a,
            [
                "-f",
                "-o",
                "allow_other,noacl,lowerdir=/mnt/d0:/mnt/image,upperdir=/mnt/l1/upper,workdir=/mnt/l1/work",
                "/mnt/merged"
            ]
        );
        let a = fuse_overlayfs_args(&["/mnt/image".into()], None, Path::new("/m"));
        assert_eq!(a[2], "allow_other,noacl,lowerdir=/mnt/image");
    }

    /// The helper root reproduces the host's top-level links and binds its directories and
    /// devices, and makes a mount point per image layer, all inside the session.
    #[test]
    fn test_helper_root() {
        let (_t, sys) = recorder(&[]);
        let mut p = minimal();
        p.overlay = OverlayPlan {
            images: vec![ext(true, 0), ext(false, 0)],
            ..OverlayPlan::default()
        };
        let layout = Layout::default();
        let links = |p: &Path| (p == Path::new("/oldroot/lib")).then(|| PathBuf::from("usr/lib"));
        build_helper_root(&sys, &p, &layout, &links).expect("ok");
        let calls = sys.calls.borrow();
        assert!(calls.contains(&Call::Symlink("usr/lib".into(), "/helper/lib".into())));
        let binds: Vec<(String, String)> = calls
            .iter()
            .filter_map(|c| match c {
                Call::Mount(m) => Some((m.source.clone().unwrap_or_default(), m.target.clone())),
                _ => None,
            })
            .collect();
        for (s, t) in [
            ("/oldroot/dev/fuse", "/helper/dev/fuse"),
            ("/oldroot/dev/null", "/helper/dev/null"),
        ] {
            assert!(binds.contains(&(s.into(), t.into())), "{binds:?}");
        }
        assert!(binds.iter().all(|(_, t)| t.starts_with("/helper/")));
        assert!(
            !binds.iter().any(|(_, t)| t == "/helper/lib"),
            "a link, not a bind"
        );
        for l in ["/helper/mnt/l0", "/helper/mnt/l1"] {
            assert!(calls.contains(&Call::MkdirAll(l.into(), 0o755)), "{l}");
        }
        // mnt/ is a mount of its own, shared: the helpers' mounts propagate back.
        let shared = calls.iter().any(|c| {
            matches!(c, Call::Mount(m) if m.target == "/helper/mnt"
                && m.flags == MsFlags::MS_SHARED)
        });
        assert!(shared, "{calls:#?}");
        drop(calls);
        // The container receives only; the supervisor leaves the group before its detach.
        container_receives_only(&sys, &layout).expect("slave");
        supervisor_lets_go(&sys, &layout).expect("private");
        let m = sys.mounts.borrow();
        let n = m.len();
        assert_eq!(
            (m[n - 2].target.as_str(), m[n - 2].flags),
            ("/helper/mnt", MsFlags::MS_REC | MsFlags::MS_SLAVE)
        );
        assert_eq!(m[n - 1].flags, MsFlags::MS_REC | MsFlags::MS_PRIVATE);
    }
}
