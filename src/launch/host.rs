//! The host side of a launch, kept out of the pure planner: the facts it reads about the
//! calling process ([`HostFacts`]), the questions it asks about host paths ([`HostProbe`]),
//! and [`prepare`], the one step that changes the host for a plan before the process tree
//! starts (directories under `--workdir`, bind sources in canonical form).

use std::io;
use std::path::{Path, PathBuf};

use super::identity::HostUser;
use super::plan::{MountSource, Plan, RootSource};

/// Facts about the calling process and its host, read once before planning.
#[derive(Debug, Clone)]
pub struct HostFacts {
    pub user: HostUser,
    pub cwd: PathBuf,
    pub env: Vec<(String, String)>,
    pub umask: u32,
    /// Host mount points (for `mount hostfs`).
    pub mountpoints: Vec<PathBuf>,
    /// The running kernel's `MAJOR.MINOR` (seccomp profiles' `minKernel`).
    pub kernel: Option<crate::config::seccomp::KernelVersion>,
}

impl HostFacts {
    /// The facts of this process: its working directory (`/` when it was deleted), its
    /// environment (variables that are not UTF-8 are left out), umask and the host's mount
    /// points.
    pub fn current(user: HostUser) -> HostFacts {
        HostFacts {
            user,
            cwd: std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/")),
            env: std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .collect(),
            umask: current_umask(),
            mountpoints: mountpoints(),
            kernel: super::profile::running_kernel(),
        }
    }
}

/// The questions the planner asks about host paths. [`LiveHost`] asks the filesystem; tests
/// describe a host.
pub trait HostProbe {
    fn exists(&self, p: &Path) -> bool;
    /// Whether `p` is a directory (following symbolic links, as a bind does).
    fn is_dir(&self, p: &Path) -> bool;
    /// Whether the caller may write the file `p` (access(2) with W_OK).
    fn writable(&self, p: &Path) -> bool {
        nix::unistd::access(p, nix::unistd::AccessFlags::W_OK).is_ok()
    }
    /// What the overlay file `p` holds, read by content (see `ovlfile::probe`).
    fn overlay_file(
        &self,
        p: &Path,
    ) -> Result<Vec<super::plan::ImageLayer>, super::ovlfile::OverlayFileError> {
        super::ovlfile::probe(p)
    }
}

/// The real host, through `stat`.
pub struct LiveHost;

impl HostProbe for LiveHost {
    fn exists(&self, p: &Path) -> bool {
        p.exists()
    }

    fn is_dir(&self, p: &Path) -> bool {
        p.is_dir()
    }
}

/// Why the host could not be prepared for a plan.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("cannot create {} in the --workdir: {cause}", path.display())]
    Workdir { path: PathBuf, cause: io::Error },
    #[error("cannot prepare the overlay directory {}: {cause}", path.display())]
    Overlay { path: PathBuf, cause: io::Error },
    #[error(
        "cannot use {} as an overlay: overlayfs cannot take a path with ',', ':' or '\\' \
         (rename the directory)",
        path.display()
    )]
    OverlayPathChars { path: PathBuf },
    #[error(
        "cannot use {} as an overlay: it is a symbolic link (the overlay's upper and work \
         must be directories in it; replace the link with a directory)",
        path.display()
    )]
    OverlayLink { path: PathBuf },
    #[error(
        "cannot use {} as {}: its filesystem is {fs}, which is not supported as {} \
         (use a directory on a local filesystem such as ext4, xfs or tmpfs{})",
        path.display(),
        if *upper { "a writable overlay" } else { "an overlay" },
        if *upper { "overlayfs's upper layer" } else { "an overlayfs layer" },
        if *upper { ", or an ext3 overlay image made by 'sifr overlay create'" } else { "" }
    )]
    OverlayFilesystem {
        path: PathBuf,
        fs: &'static str,
        upper: bool,
    },
}

/// The filesystem (by `statfs` `f_type`) that cannot be an overlay layer, named, or `None`
/// when it can. As upper layer: another overlayfs (the kernel refuses it: "not supported as
/// upperdir"), and what Apptainer refuses without its fuse-overlayfs driver (its
/// fsoverlay.CheckUpper): NFS, FUSE, eCryptfs, Lustre, GPFS, PanFS, remote or stacked
/// filesystems whose whiteouts, xattrs and consistency overlayfs cannot count on (the
/// kernel takes some FUSE servers as upper and not others). As a read-only lower layer the
/// kernel takes NFS, FUSE and overlayfs; eCryptfs, Lustre, GPFS and PanFS are refused there
/// too, as Apptainer's CheckLower refuses them.
pub fn overlay_unusable_fs(f_type: i64, upper: bool) -> Option<&'static str> {
    let (name, as_lower) = match f_type {
        0x794c_7630 => ("overlayfs", true),
        0x6969 => ("NFS", true),
        0x6573_5546 => ("FUSE", true),
        0xf15f => ("eCryptfs", false),
        0x0bd0_0bd0 => ("Lustre", false),
        0x4750_4653 => ("GPFS", false),
        0xaad7_aaea => ("PanFS", false),
        _ => return None,
    };
    (upper || !as_lower).then_some(name)
}

/// Refuses `path` as an overlay layer when its filesystem is one overlayfs cannot use
/// ([`overlay_unusable_fs`]); a path that cannot be examined is left to the mount.
fn check_overlay_fs(path: &Path, upper: bool) -> Result<(), HostError> {
    let Ok(st) = nix::sys::statfs::statfs(path) else {
        return Ok(());
    };
    // f_type is a C long (i64 here, i32 on 32-bit targets).
    #[allow(clippy::unnecessary_cast)]
    let f_type = st.filesystem_type().0 as i64;
    match overlay_unusable_fs(f_type, upper) {
        Some(fs) => Err(HostError::OverlayFilesystem {
            path: path.to_path_buf(),
            fs,
            upper,
        }),
        None => Ok(()),
    }
}

/// Prepares the host for `plan`: creates the directories it keeps under `--workdir` (mode
/// 0700, as Apptainer's), then replaces every host path it mounts, and a sandbox root, by
/// its canonical form, because the supervisor reaches host paths under its own root, where
/// an absolute symlink would resolve wrongly. Paths that cannot be resolved are left as they
/// are (the mount then fails, or is skipped when optional, with the path named).
pub fn prepare(plan: &mut Plan) -> Result<(), HostError> {
    use std::os::unix::fs::DirBuilderExt;
    for d in &plan.host_dirs {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(d)
            .map_err(|cause| HostError::Workdir {
                path: d.clone(),
                cause,
            })?;
    }
    for m in &mut plan.mounts {
        if let MountSource::Host(p) = &mut m.source
            && let Ok(c) = std::fs::canonicalize(&*p)
        {
            *p = c;
        }
        // The files of /.singularity.d/libs (`--contain-libs` may name a link).
        if let MountSource::FileSet { files, .. } = &mut m.source {
            for (p, _) in files {
                if let Ok(c) = std::fs::canonicalize(&*p) {
                    *p = c;
                }
            }
        }
    }
    // The overlay directories, canonical; the writable one gets `upper/` and `work/` (what
    // Apptainer creates in a new directory overlay), owned by the caller.
    let canonical = |p: &Path| {
        let c = std::fs::canonicalize(p).map_err(|cause| HostError::Overlay {
            path: p.to_path_buf(),
            cause,
        })?;
        // The layers are named in the mount's option string, where these separate.
        if c.to_string_lossy().contains([',', ':', '\\']) {
            return Err(HostError::OverlayPathChars { path: c });
        }
        Ok(c)
    };
    for l in &mut plan.overlay.lowers {
        *l = canonical(l)?;
        check_overlay_fs(l, false)?;
    }
    for l in &mut plan.overlay.images {
        l.path = std::fs::canonicalize(&l.path).map_err(|cause| HostError::Overlay {
            path: l.path.clone(),
            cause,
        })?;
    }
    if let Some(dir) = &mut plan.overlay.upper {
        *dir = canonical(dir)?;
        // Decided before anything is created in it; upper/ and work/ when they are there
        // already (either may be a mount point of its own).
        check_overlay_fs(dir, true)?;
        for sub in ["upper", "work"] {
            check_overlay_fs(&dir.join(sub), true)?;
        }
        for sub in ["upper", "work"] {
            let p = dir.join(sub);
            // Reached under the host's root at /oldroot, where a link would lead elsewhere.
            if p.symlink_metadata()
                .is_ok_and(|m| m.file_type().is_symlink())
            {
                return Err(HostError::OverlayLink { path: p });
            }
            match std::fs::DirBuilder::new().mode(0o755).create(&p) {
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && p.is_dir() => {}
                r => r.map_err(|cause| HostError::Overlay {
                    path: p.clone(),
                    cause,
                })?,
            }
        }
    }
    if let RootSource::Directory { path } = &mut plan.root
        && let Ok(c) = std::fs::canonicalize(&*path)
    {
        *path = c;
    }
    Ok(())
}

fn current_umask() -> u32 {
    use nix::sys::stat::{Mode, umask};
    let old = umask(Mode::from_bits_truncate(0o022));
    umask(old);
    old.bits()
}

/// The mount points of this process's mount namespace (field 5 of mountinfo).
fn mountpoints() -> Vec<PathBuf> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|s| {
            s.lines()
                .filter_map(|l| l.split(' ').nth(4))
                .map(PathBuf::from)
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::launch::plan::{MountOp, TargetKind};

    #[test]
    fn test_prepare_creates_workdir_dirs_and_canonicalizes() {
        let t = tempfile::tempdir().expect("tempdir");
        let real = t.path().join("real");
        std::fs::create_dir(&real).expect("mkdir");
        std::os::unix::fs::symlink(&real, t.path().join("link")).expect("ln");
        let mut plan = Plan {
            root: RootSource::Directory {
                path: t.path().join("link"),
            },
            mounts: vec![
                MountOp {
                    source: MountSource::Host(t.path().join("link")),
                    dest: "/data".into(),
                    target: TargetKind::Dir,
                    readonly: false,
                    recursive: true,
                    allow_dev: false,
                    optional: false,
                    why: "user bind",
                },
                MountOp {
                    source: MountSource::Host(t.path().join("absent")),
                    dest: "/absent".into(),
                    target: TargetKind::Dir,
                    readonly: false,
                    recursive: true,
                    allow_dev: false,
                    optional: true,
                    why: "user bind",
                },
                MountOp {
                    source: MountSource::FileSet {
                        name: "libs".into(),
                        files: vec![(t.path().join("link"), "libx.so".into())],
                    },
                    dest: "/.singularity.d/libs".into(),
                    target: TargetKind::Dir,
                    readonly: true,
                    recursive: true,
                    allow_dev: false,
                    optional: false,
                    why: "host libraries",
                },
            ],
            host_dirs: vec![t.path().join("work/tmp")],
            ..crate::launch::plan::tests::minimal()
        };
        prepare(&mut plan).expect("prepare");
        let real = std::fs::canonicalize(&real).expect("canon");
        assert_eq!(plan.mounts[0].source, MountSource::Host(real.clone()));
        assert_eq!(
            plan.mounts[1].source,
            MountSource::Host(t.path().join("absent"))
        );
        assert_eq!(
            plan.mounts[2].source,
            MountSource::FileSet {
                name: "libs".into(),
                files: vec![(real.clone(), "libx.so".into())]
            }
        );
        assert_eq!(plan.root, RootSource::Directory { path: real });
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(t.path().join("work/tmp"))
            .expect("made")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        // A workdir that cannot be created names the path.
        std::fs::write(t.path().join("file"), b"").expect("write");
        plan.host_dirs = vec![t.path().join("file/tmp")];
        let e = prepare(&mut plan).expect_err("not a directory");
        assert!(e.to_string().contains("file/tmp"), "{e}");
    }

    /// The writable overlay directory gets upper/ and work/ (kept when there), the layers
    /// are canonical, and a path overlayfs cannot name is refused by name.
    #[test]
    fn test_prepare_overlay_directories() {
        let t = tempfile::tempdir().expect("tempdir");
        let rw = t.path().join("rw");
        let ro = t.path().join("ro");
        std::fs::create_dir(&rw).expect("mkdir");
        std::fs::create_dir(&ro).expect("mkdir");
        std::os::unix::fs::symlink(&rw, t.path().join("link")).expect("ln");
        let mut plan = Plan {
            overlay: crate::launch::plan::OverlayPlan {
                lowers: vec![ro.clone()],
                upper: Some(t.path().join("link")),
                ..Default::default()
            },
            ..crate::launch::plan::tests::minimal()
        };
        prepare(&mut plan).expect("prepare");
        let rw = std::fs::canonicalize(&rw).expect("canon");
        assert_eq!(plan.overlay.upper, Some(rw.clone()));
        assert!(rw.join("upper").is_dir() && rw.join("work").is_dir());
        std::fs::write(rw.join("upper/kept"), b"").expect("write");
        prepare(&mut plan).expect("again");
        assert!(rw.join("upper/kept").exists());

        std::fs::remove_dir(rw.join("work")).expect("rmdir");
        std::os::unix::fs::symlink(&ro, rw.join("work")).expect("ln");
        let e = prepare(&mut plan).expect_err("refused");
        assert!(e.to_string().contains("rw/work as an overlay"), "{e}");

        let odd = t.path().join("a,b");
        std::fs::create_dir(&odd).expect("mkdir");
        plan.overlay.lowers = vec![odd];
        let e = prepare(&mut plan).expect_err("refused");
        assert!(e.to_string().contains("a,b as an overlay"), "{e}");
    }

    /// Which filesystems overlayfs cannot use, as upper and as lower layer; a local
    /// directory passes the live check, and the refusal names the path, the filesystem and
    /// the fix.
    #[test]
    fn test_overlay_unusable_filesystems() {
        const OVERLAYFS: i64 = 0x794c_7630;
        const FUSE: i64 = 0x6573_5546;
        const NFS: i64 = 0x6969;
        const LUSTRE: i64 = 0x0bd0_0bd0;
        const EXT4: i64 = 0xef53;
        const TMPFS: i64 = 0x0102_1994;
        assert_eq!(overlay_unusable_fs(OVERLAYFS, true), Some("overlayfs"));
        assert_eq!(overlay_unusable_fs(FUSE, true), Some("FUSE"));
        assert_eq!(overlay_unusable_fs(NFS, true), Some("NFS"));
        assert_eq!(overlay_unusable_fs(LUSTRE, true), Some("Lustre"));
        // Read-only layers: the kernel takes these.
        for t in [OVERLAYFS, FUSE, NFS] {
            assert_eq!(overlay_unusable_fs(t, false), None, "{t:x}");
        }
        assert_eq!(overlay_unusable_fs(LUSTRE, false), Some("Lustre"));
        for t in [EXT4, TMPFS] {
            assert_eq!(overlay_unusable_fs(t, true), None, "{t:x}");
        }
        let t = tempfile::tempdir().expect("tempdir");
        check_overlay_fs(t.path(), true).expect("a local directory");
        let e = HostError::OverlayFilesystem {
            path: "/n/ovl".into(),
            fs: "NFS",
            upper: true,
        };
        assert_eq!(
            e.to_string(),
            "cannot use /n/ovl as a writable overlay: its filesystem is NFS, which is not \
             supported as overlayfs's upper layer (use a directory on a local filesystem \
             such as ext4, xfs or tmpfs, or an ext3 overlay image made by 'sifr overlay create')"
        );
    }

    #[test]
    fn test_current_facts() {
        let f = HostFacts::current(HostUser {
            uid: 1,
            gid: 1,
            name: "u".into(),
            gecos: String::new(),
            home: "/h".into(),
            shell: "/bin/sh".into(),
            groups: vec![],
        });
        assert!(f.cwd.is_absolute());
        assert!(f.mountpoints.contains(&PathBuf::from("/")));
        assert!(f.umask <= 0o777);
    }
}
