//! `overlay create`: a new ext3 overlay image in Apptainer's layout (`upper/` and `work/`,
//! and the `--create-dir` directories under `upper/`, put in by `mkfs.ext3 -d`), written as
//! a new file or appended to an existing SIF as its overlay partition.
//!
//! Apptainer's rules (internal/app/apptainer/overlay_create.go): at least 64 MiB; an
//! existing file must be a SIF (unsigned, not encrypted, without an ext3 overlay
//! partition); the directories belong to the caller, or to root inside with `--fakeroot`
//! (mkfs.ext3 then runs as root of a root-mapped user namespace, where the caller's files
//! show as root's); a dense image is written with zeros (kept: mkfs is told not to discard
//! them), a sparse one only sized. The image is built in a temporary file next to IMAGE: a
//! new image appears by a rename that never replaces a file, and every refusal or failure
//! leaves nothing behind.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};

use super::sif::{
    Arch, DataType, ErrorKind, Extra, FsType, ObjectInput, PartType, PartitionMeta, SifError,
    SifImage, When,
};
use super::{ImageError, ImageKind};

/// Apptainer's smallest overlay size (and its default), in MiB.
pub const MIN_SIZE_MIB: i64 = 64;

/// What to create.
#[derive(Debug, Clone)]
pub struct Request {
    /// The new image file, or an existing SIF to add the overlay partition to.
    pub image: PathBuf,
    /// Size of the ext3 file system in MiB.
    pub size_mib: i64,
    /// Directories to create under `upper/` (container paths, e.g. `/usr/local/lib`).
    pub create_dirs: Vec<String>,
    /// Only size the file (holes) instead of writing it with zeros.
    pub sparse: bool,
    /// Make the layout root's: mkfs.ext3 runs as root of a root-mapped user namespace.
    pub fakeroot: bool,
    /// Where the temporary layout directory is made.
    pub tmpdir: PathBuf,
    /// The mkfs.ext3 program.
    pub mkfs: PathBuf,
    /// The command name for the hint of a refusal (`sifr`, `apptainer`, `singularity`).
    pub command_name: String,
}

/// What was created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    /// A new ext3 image file.
    Image,
    /// An overlay partition in an existing SIF, with its object ID.
    SifPartition { id: u32 },
}

/// Why no overlay was created. Nothing is left behind in any case.
#[derive(Debug, thiserror::Error)]
pub enum OverlayCreateError {
    #[error("image size must be equal or greater than 64 MiB (got --size {0})")]
    TooSmall(i64),
    #[error("image size of {0} MiB is too large")]
    TooLarge(i64),
    #[error(
        "overlay directory {dir:?} created outside of overlay layout (it climbs out with '..'): give a directory inside the container"
    )]
    DirOutside { dir: String },
    #[error(
        "{} seems too old as it doesn't support -d, this is required to create the overlay layout: install e2fsprogs 1.43 or newer",
        .0.display()
    )]
    MkfsTooOld(PathBuf),
    #[error("cannot run {}: {err}", path.display())]
    MkfsRun { path: PathBuf, err: std::io::Error },
    #[error("EXT3 overlay image {} already exists: remove it first or give another path", .0.display())]
    Ext3Exists(PathBuf),
    #[error(
        "destination image must be SIF image: {} is {kind}; give a SIF image or a path that does not exist",
        path.display()
    )]
    NotSif { path: PathBuf, kind: &'static str },
    #[error("while opening image file {}: {err}", path.display())]
    Open { path: PathBuf, err: std::io::Error },
    #[error(
        "SIF image {} is not writable ({err}): an overlay partition is added in place; copy the image or use a separate overlay file",
        path.display()
    )]
    NotWritable { path: PathBuf, err: std::io::Error },
    #[error("while opening image file {}: {}", .0.path.display(), .0.kind)]
    Sif(SifError),
    #[error(
        "encrypted root FS partition in {}: could not add writable overlay",
        .0.display()
    )]
    Encrypted(PathBuf),
    #[error(
        "while getting root FS partition: {} has no primary system partition: could not add writable overlay",
        .0.display()
    )]
    NoRootFs(PathBuf),
    #[error(
        "SIF image {} is signed: could not add writable overlay (it would not verify any more); use a separate overlay image file",
        .0.display()
    )]
    Signed(PathBuf),
    #[error(
        "a writable overlay partition already exists in {} (ID: {id}), delete it first with \"{command} sif del {id} {}\"",
        path.display(),
        path.display()
    )]
    OverlayExists {
        path: PathBuf,
        id: u32,
        command: String,
    },
    #[error("while creating {what} {}: {err}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        err: std::io::Error,
    },
    #[error("while creating ext3 partition in {}: {detail}", path.display())]
    Mkfs { path: PathBuf, detail: String },
    #[error("while adding ext3 overlay partition to {}: {}", .0.path.display(), .0.kind)]
    Append(SifError),
    #[error("while renaming {} to {}: {err}", from.display(), to.display())]
    Rename {
        from: PathBuf,
        to: PathBuf,
        err: std::io::Error,
    },
    #[error("--fakeroot: {0}")]
    Fakeroot(String),
}

/// A request that passed every check, with the SIF to add to (opened for writing).
pub struct Prepared {
    req: Request,
    bytes: u64,
    dirs: Vec<Vec<String>>,
    sif: Option<SifImage>,
}

/// Every refusal, before anything is written: the size, the `--create-dir` paths,
/// mkfs.ext3's `-d`, and what IMAGE is when it exists.
pub fn prepare(req: &Request) -> Result<Prepared, OverlayCreateError> {
    if req.size_mib < MIN_SIZE_MIB {
        return Err(OverlayCreateError::TooSmall(req.size_mib));
    }
    let bytes = u64::try_from(req.size_mib)
        .ok()
        .and_then(|m| m.checked_mul(1 << 20))
        .filter(|b| i64::try_from(*b).is_ok())
        .ok_or(OverlayCreateError::TooLarge(req.size_mib))?;
    let dirs = req
        .create_dirs
        .iter()
        .map(|d| inside_upper(d))
        .collect::<Result<Vec<_>, _>>()?;
    check_mkfs(&req.mkfs)?;
    let sif = existing_sif(req)?;
    // The directories the temporary file (next to a new image) and layout go in.
    let mut places = vec![("temporary overlay directory in", req.tmpdir.clone())];
    if sif.is_none() {
        places.push(("overlay image file in", parent_dir(&req.image)));
    }
    for (what, path) in places {
        let err = match std::fs::metadata(&path) {
            Ok(m) if m.is_dir() => continue,
            Ok(_) => std::io::Error::from_raw_os_error(libc::ENOTDIR),
            Err(err) => err,
        };
        return Err(OverlayCreateError::Io { what, path, err });
    }
    Ok(Prepared {
        req: req.clone(),
        bytes,
        dirs,
        sif,
    })
}

impl Prepared {
    /// Builds the file system in a temporary file next to IMAGE and appends it to the SIF
    /// or renames it to IMAGE. On an error the temporary file and directory are removed
    /// and the SIF is left as it was.
    pub fn build(self) -> Result<Created, OverlayCreateError> {
        let Prepared {
            req,
            bytes,
            dirs,
            sif,
        } = self;
        let parent = parent_dir(&req.image);
        let name = req
            .image
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "overlay".into());
        // Mode 0600, as Apptainer leaves it; removed on drop unless persisted.
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".ext3")
            .tempfile_in(&parent)
            .map_err(|err| OverlayCreateError::Io {
                what: "overlay image file in",
                path: parent.clone(),
                err: bare(err),
            })?;
        size_file(tmp.as_file(), bytes, req.sparse).map_err(|err| OverlayCreateError::Io {
            what: "overlay image",
            path: tmp.path().to_path_buf(),
            err,
        })?;

        let layout = tempfile::Builder::new()
            .prefix("overlay-")
            .tempdir_in(&req.tmpdir)
            .map_err(|err| OverlayCreateError::Io {
                what: "temporary overlay directory in",
                path: req.tmpdir.clone(),
                err: bare(err),
            })?;
        make_layout(layout.path(), &dirs)?;
        run_mkfs(&req, layout.path(), tmp.path())?;
        drop(layout);

        match sif {
            Some(mut img) => {
                let mut data = tmp.reopen().map_err(|err| OverlayCreateError::Io {
                    what: "overlay image",
                    path: tmp.path().to_path_buf(),
                    err,
                })?;
                let arch = match img.header().arch() {
                    Arch::Unknown => Arch::host(),
                    a => a,
                };
                let mut input = ObjectInput::new(DataType::Partition, &mut data);
                input.extra = Extra::Partition(PartitionMeta {
                    fs_type: FsType::Ext3,
                    part_type: PartType::Overlay,
                    arch_code: arch.code(),
                });
                let id = img
                    .append_object(input, When::Auto)
                    .map_err(OverlayCreateError::Append)?;
                Ok(Created::SifPartition { id })
            }
            None => {
                let from = tmp.path().to_path_buf();
                tmp.as_file()
                    .sync_all()
                    .map_err(|err| OverlayCreateError::Io {
                        what: "overlay image",
                        path: from.clone(),
                        err,
                    })?;
                tmp.persist_noclobber(&req.image)
                    .map_err(|e| OverlayCreateError::Rename {
                        from,
                        to: req.image.clone(),
                        err: e.error,
                    })?;
                Ok(Created::Image)
            }
        }
    }
}

/// The directory `image` is in (`.` for a bare name).
fn parent_dir(image: &Path) -> PathBuf {
    match image.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// The system's error alone, without the path tempfile appends (the message names it).
fn bare(err: std::io::Error) -> std::io::Error {
    match err.raw_os_error() {
        Some(code) => std::io::Error::from_raw_os_error(code),
        None => err,
    }
}

/// The components of a `--create-dir` under `upper/`: `..` resolved by name, as Go's
/// `filepath.Join` cleans it; climbing above `upper/` is refused (Apptainer's check).
pub fn inside_upper(dir: &str) -> Result<Vec<String>, OverlayCreateError> {
    let mut parts: Vec<String> = Vec::new();
    for c in Path::new(dir).components() {
        match c {
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                if parts.pop().is_none() {
                    return Err(OverlayCreateError::DirOutside {
                        dir: dir.to_string(),
                    });
                }
            }
            Component::Normal(n) => parts.push(n.to_string_lossy().into_owned()),
        }
    }
    Ok(parts)
}

/// mkfs.ext3 must take `-d` (e2fsprogs 1.43 and later): its usage text lists `[-d `.
fn check_mkfs(mkfs: &Path) -> Result<(), OverlayCreateError> {
    let out = Command::new(mkfs)
        .arg("--help")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|err| OverlayCreateError::MkfsRun {
            path: mkfs.to_path_buf(),
            err,
        })?;
    // The usage exits 1; only its text matters.
    if String::from_utf8_lossy(&out.stderr).contains("[-d ") {
        Ok(())
    } else {
        Err(OverlayCreateError::MkfsTooOld(mkfs.to_path_buf()))
    }
}

/// The existing SIF to add the partition to, opened for writing and checked; `None` when
/// IMAGE does not exist (a new image is made). Any other existing file is refused.
fn existing_sif(req: &Request) -> Result<Option<SifImage>, OverlayCreateError> {
    let path = &req.image;
    let kind = match super::open(path) {
        Ok((kind, _)) => kind,
        Err(ImageError::NotFound(_)) => return Ok(None),
        Err(ImageError::Unknown(_)) => {
            return Err(OverlayCreateError::NotSif {
                path: path.clone(),
                kind: "not a container image",
            });
        }
        Err(ImageError::Open { err, .. }) => {
            return Err(OverlayCreateError::Open {
                path: path.clone(),
                err,
            });
        }
    };
    match kind {
        ImageKind::Sif => {}
        ImageKind::Ext => return Err(OverlayCreateError::Ext3Exists(path.clone())),
        ImageKind::Squashfs => {
            return Err(OverlayCreateError::NotSif {
                path: path.clone(),
                kind: "a squashfs image",
            });
        }
        ImageKind::Sandbox => {
            return Err(OverlayCreateError::NotSif {
                path: path.clone(),
                kind: "a directory",
            });
        }
    }
    let img = SifImage::open_rw(path).map_err(|e| match e.kind {
        ErrorKind::Open { err }
            if matches!(
                err.kind(),
                std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem
            ) =>
        {
            OverlayCreateError::NotWritable {
                path: path.clone(),
                err,
            }
        }
        _ => OverlayCreateError::Sif(e),
    })?;
    let root = img
        .primary_partition()
        .map_err(OverlayCreateError::Sif)?
        .ok_or_else(|| OverlayCreateError::NoRootFs(path.clone()))?;
    if root.fs_type == FsType::EncryptedSquashfs {
        return Err(OverlayCreateError::Encrypted(path.clone()));
    }
    if img.objects_of_type(DataType::Signature).next().is_some() {
        return Err(OverlayCreateError::Signed(path.clone()));
    }
    let overlays = img.overlay_partitions().map_err(OverlayCreateError::Sif)?;
    if let Some(o) = overlays.iter().find(|o| o.fs_type == FsType::Ext3) {
        return Err(OverlayCreateError::OverlayExists {
            path: path.clone(),
            id: o.id,
            command: req.command_name.clone(),
        });
    }
    Ok(Some(img))
}

/// Makes `file` `bytes` long: only sized (sparse), or written with zeros as `dd
/// if=/dev/zero` does, so that the blocks are allocated now.
fn size_file(file: &File, bytes: u64, sparse: bool) -> std::io::Result<()> {
    if sparse {
        return file.set_len(bytes);
    }
    let zeros = vec![0u8; 1 << 20];
    let mut w = file;
    let mut left = bytes;
    while left > 0 {
        let n = usize::try_from(left).unwrap_or(usize::MAX).min(zeros.len());
        w.write_all(&zeros[..n])?;
        left -= n as u64;
    }
    w.flush()
}

/// The directories' mode: 0755, or 0777 when the caller's uid or gid does not fit in 16
/// bits (Apptainer's rule: a container may not map such an id, and the layout must stay
/// usable).
fn layout_mode() -> u32 {
    // SAFETY: getuid/getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    if uid > 65535 || gid > 65535 {
        0o777
    } else {
        0o755
    }
}

/// `upper/`, `work/` and the `--create-dir` directories (with their parents) in `root`,
/// each with [`layout_mode`] whatever the umask.
fn make_layout(root: &Path, dirs: &[Vec<String>]) -> Result<(), OverlayCreateError> {
    let mode = layout_mode();
    let mkdir = |p: &Path| -> Result<(), OverlayCreateError> {
        let io = |err| OverlayCreateError::Io {
            what: "directory",
            path: p.to_path_buf(),
            err,
        };
        match std::fs::create_dir(p) {
            Ok(()) => {
                std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).map_err(io)
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && p.is_dir() => Ok(()),
            Err(e) => Err(io(e)),
        }
    };
    let upper = root.join("upper");
    mkdir(&upper)?;
    mkdir(&root.join("work"))?;
    for parts in dirs {
        let mut p = upper.clone();
        for part in parts {
            p.push(part);
            mkdir(&p)?;
        }
    }
    Ok(())
}

/// `mkfs.ext3 [-E nodiscard] -d LAYOUT FILE`, as root of a root-mapped user namespace with `--fakeroot`
/// (unless already root). Its output is dropped; its error output is the error.
fn run_mkfs(req: &Request, layout: &Path, file: &Path) -> Result<(), OverlayCreateError> {
    let mkfs = req.mkfs.clone();
    let (layout, file) = (layout.to_path_buf(), file.to_path_buf());
    let sparse = req.sparse;
    let run = move || -> Result<(), String> {
        let mut cmd = Command::new(&mkfs);
        if !sparse {
            // mke2fs punches holes in a regular file it formats ("discarding device
            // blocks"), which would make the zeros written for a dense image sparse again.
            cmd.args(["-E", "nodiscard"]);
        }
        let out = cmd
            .arg("-d")
            .arg(&layout)
            .arg(&file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| format!("{}: cannot run: {e}", mkfs.display()))?;
        if out.status.success() {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        Err(if lines.is_empty() {
            format!("{} failed ({})", mkfs.display(), out.status)
        } else {
            format!("{} failed: {}", mkfs.display(), lines.join("; "))
        })
    };
    let mkfs_error = |detail: String| OverlayCreateError::Mkfs {
        path: req.image.clone(),
        detail,
    };
    // SAFETY: geteuid cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if !req.fakeroot || root {
        return run().map_err(mkfs_error);
    }
    // Root of a namespace that maps only the caller: the caller's files (the layout) show
    // as root's there, so mkfs.ext3 records them as 0:0, as Apptainer's root-mapped
    // re-execution does.
    // SAFETY: getuid/getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let ids = crate::launch::plan::IdMapPlan {
        uid_map: vec![(0, uid, 1)],
        gid_map: vec![(0, gid, 1)],
        needs_helpers: false,
        uid: 0,
        gid: 0,
        notice: None,
        helper_dirs: Vec::new(),
    };
    crate::launch::userns::run_as_fakeroot(
        &crate::launch::sys::LinuxSys::new(),
        &ids,
        &crate::launch::idplan::write_maps,
        run,
    )
    .map_err(|e| {
        // The work's own errors start with the program; the rest are the namespace's.
        if e.0.starts_with(&req.mkfs.display().to_string()) {
            mkfs_error(e.0)
        } else {
            OverlayCreateError::Fakeroot(e.0)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::sif::CreateOptions;

    /// A stand-in mkfs.ext3: `--help` prints a usage with (or without) `-d`; a build runs
    /// `body` with the arguments in "$@".
    fn fake_mkfs(dir: &Path, with_d: bool, body: &str) -> PathBuf {
        let n = std::fs::read_dir(dir).map(Iterator::count).unwrap_or(0);
        let p = dir.join(format!("mkfs-{n}"));
        let usage = if with_d {
            "[-d root-directory]"
        } else {
            "[-m reserved]"
        };
        let script = format!(
            "#!/bin/sh\nif [ \"$1\" = --help ]; then echo 'Usage: mkfs {usage}' >&2; exit 1; fi\n{body}\n"
        );
        std::fs::write(&p, script).expect("write script");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        // Another test thread may have forked while the script was open for writing: wait
        // until it can be executed (ETXTBSY ends when that child execs).
        for _ in 0..100 {
            match Command::new(&p).arg("--help").output() {
                Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                _ => break,
            }
        }
        p
    }

    fn request(dir: &Path, image: &Path, mkfs: PathBuf) -> Request {
        Request {
            image: image.to_path_buf(),
            size_mib: MIN_SIZE_MIB,
            create_dirs: vec!["/usr/local".into()],
            sparse: true,
            fakeroot: false,
            tmpdir: dir.join("tmp"),
            mkfs,
            command_name: "sifr".into(),
        }
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .expect("read dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// A SIF with a primary squashfs partition, as a file.
    fn sif_file(path: &Path) {
        let mut img = SifImage::create(path, &CreateOptions::deterministic()).expect("new");
        let mut data: &[u8] = b"hsqs and the rest";
        let mut input = ObjectInput::new(DataType::Partition, &mut data);
        input.extra = Extra::Partition(PartitionMeta {
            fs_type: FsType::Squashfs,
            part_type: PartType::PrimSys,
            arch_code: Arch::Amd64.code(),
        });
        img.add_object(input, When::Auto).expect("primary");
    }

    /// mkfs.ext3 failing: its error output on one line, and nothing left behind (no image,
    /// no temporary file or directory, the SIF byte for byte as it was).
    #[test]
    fn test_mkfs_failure_leaves_nothing_behind() {
        let d = tempfile::tempdir().expect("tempdir");
        let tools = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(d.path().join("tmp")).expect("tmp");
        let mkfs = fake_mkfs(
            tools.path(),
            true,
            "echo 'mkfs: it broke' >&2; echo 'really' >&2; exit 1",
        );
        let img = d.path().join("new.img");
        let err = prepare(&request(d.path(), &img, mkfs.clone()))
            .expect("checks pass")
            .build()
            .expect_err("mkfs fails");
        let msg = err.to_string();
        assert!(msg.contains("mkfs: it broke; really"), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");
        assert_eq!(names(d.path()), ["tmp"]);
        assert!(names(&d.path().join("tmp")).is_empty());

        let sif = d.path().join("a.sif");
        sif_file(&sif);
        let before = std::fs::read(&sif).expect("read");
        let err = prepare(&request(d.path(), &sif, mkfs))
            .expect("checks pass")
            .build()
            .expect_err("mkfs fails");
        assert!(matches!(err, OverlayCreateError::Mkfs { .. }), "{err}");
        assert!(std::fs::read(&sif).expect("read") == before);
        assert_eq!(names(d.path()), ["a.sif", "tmp"]);
    }

    /// What mkfs.ext3 made becomes an Ext3 Overlay partition in group 1 with the image's
    /// architecture; the layout it was given holds upper/, work/ and the --create-dir.
    #[test]
    fn test_sif_gets_the_overlay_partition() {
        let d = tempfile::tempdir().expect("tempdir");
        let tools = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(d.path().join("tmp")).expect("tmp");
        let seen = d.path().join("layout.txt");
        // Records the layout (-d DIR) and writes a marker at the start of FILE.
        let mkfs = fake_mkfs(
            tools.path(),
            true,
            &format!(
                "(cd \"$2\" && find . | sort) > {}; printf EXT3 | dd of=\"$3\" conv=notrunc 2>/dev/null",
                seen.display()
            ),
        );
        let sif = d.path().join("a.sif");
        sif_file(&sif);
        let created = prepare(&request(d.path(), &sif, mkfs))
            .expect("checks pass")
            .build()
            .expect("built");
        assert_eq!(created, Created::SifPartition { id: 2 });
        let layout = std::fs::read_to_string(&seen).expect("layout recorded");
        assert_eq!(
            layout.lines().collect::<Vec<_>>(),
            [".", "./upper", "./upper/usr", "./upper/usr/local", "./work"]
        );
        let img = SifImage::open(&sif).expect("reopen");
        let p = img
            .partitions()
            .find(|p| p.id == 2)
            .expect("the overlay partition");
        assert_eq!(
            (p.fs_type, p.part_type, p.arch, p.group()),
            (FsType::Ext3, PartType::Overlay, Arch::Amd64, Some(1))
        );
        assert_eq!(p.size, 64 << 20);
        assert_eq!(p.offset % 4096, 0);
        let d2 = img.object(2).expect("2");
        let mut head = [0u8; 4];
        assert_eq!(img.read_object_at(d2, 0, &mut head).expect("read"), 4);
        assert_eq!(&head, b"EXT3");
        assert_eq!(names(d.path()), ["a.sif", "layout.txt", "tmp"]);
        // And now it has one: refused, naming it.
        let mkfs = fake_mkfs(tools.path(), true, "exit 0");
        let err = prepare(&request(d.path(), &sif, mkfs)).err();
        assert!(
            matches!(err, Some(OverlayCreateError::OverlayExists { id: 2, .. })),
            "{err:?}"
        );
    }

    /// A mkfs.ext3 without -d is refused before anything is made.
    #[test]
    fn test_mkfs_without_d_refused() {
        let d = tempfile::tempdir().expect("tempdir");
        let tools = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(d.path().join("tmp")).expect("tmp");
        let mkfs = fake_mkfs(tools.path(), false, "exit 0");
        let img = d.path().join("new.img");
        let err = prepare(&request(d.path(), &img, mkfs)).err();
        assert!(
            matches!(err, Some(OverlayCreateError::MkfsTooOld(_))),
            "{err:?}"
        );
        assert_eq!(names(d.path()), ["tmp"]);
    }

    #[test]
    fn test_create_dir_stays_under_upper() {
        let ok = |d: &str| inside_upper(d).expect(d);
        assert_eq!(ok("/usr/local/testing"), ["usr", "local", "testing"]);
        assert_eq!(ok("usr/local"), ["usr", "local"]);
        assert_eq!(ok("/a/../b/./c/"), ["b", "c"]);
        assert!(ok("/").is_empty());
        for bad in ["/../etc", "..", "/a/../../x", "a/../../.."] {
            assert!(
                matches!(
                    inside_upper(bad),
                    Err(OverlayCreateError::DirOutside { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn test_dense_and_sparse_sizes() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let dense = File::create(dir.path().join("d")).expect("create");
        size_file(&dense, 3 << 20, false).expect("dense");
        let sparse = File::create(dir.path().join("s")).expect("create");
        size_file(&sparse, 3 << 20, true).expect("sparse");
        let (d, s) = (
            dense.metadata().expect("meta"),
            sparse.metadata().expect("meta"),
        );
        assert_eq!((d.len(), s.len()), (3 << 20, 3 << 20));
        assert!(d.blocks() * 512 >= 3 << 20, "{} blocks", d.blocks());
        assert!(s.blocks() * 512 < 1 << 20, "{} blocks", s.blocks());
    }
}
