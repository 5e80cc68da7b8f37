//! Unpacking a container root filesystem into a directory: from a filesystem image (through
//! sifr-fuse's readers, no mount) or from another directory. `build` uses it for
//! `Bootstrap: localimage`, `%files`, and `--sandbox` output.
//!
//! Meant to run as root of a fakeroot user namespace (`launch::userns`): ownership is then
//! restored with `lchown` where the namespace maps the id (silently kept as the caller's
//! otherwise), and directories that are read-only in the image are still filled (their mode
//! is applied after their contents). Device nodes cannot be created in a user namespace and
//! are skipped (a container's /dev is mounted over anyway); they are counted.
//!
//! Images are untrusted. Every entry is created relative to a directory descriptor with one
//! validated name (no `/`, NUL, `.` or `..`), exclusively and without following symlinks,
//! so nothing lands outside the destination whatever the image holds. Directories are
//! reopened through [`super::inroot`], never by a host path. Unpacking refuses a directory
//! met twice (a loop, which would recurse forever, or a directory with two names), nesting
//! deeper than [`MAX_DEPTH`], and file data beyond the free space of the destination (less
//! [`FREE_SPACE_RESERVE`]): an image cannot fill the disk. A file inode met twice is a hard
//! link, so its data is written once.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat, readlinkat};
use nix::sys::stat::{
    FchmodatFlags, FileStat, Mode, SFlag, UtimensatFlags, fchmod, fchmodat, fstatat, futimens,
    mkdirat, mknodat, utimensat,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchown, fchownat, linkat, symlinkat, unlinkat};
use sifr_fuse::{FileType, ImageBackend};

use super::inroot::{Resolved, Resolver, open_dir_in_root, resolve_in_root};

/// Deepest directory nesting unpacked or copied. 2048 one-letter directories already make a
/// 4096-byte path (PATH_MAX): nothing deeper can be named by a program in the container.
pub const MAX_DEPTH: usize = 2048;

/// Free space of the destination's filesystem that unpacking leaves untouched, so that the
/// build (and everything else on that filesystem) can still write when an image is refused.
pub const FREE_SPACE_RESERVE: u64 = 64 << 20;

/// What was unpacked.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ExtractStats {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub hardlinks: u64,
    pub bytes: u64,
    /// Device nodes and sockets that could not be created.
    pub skipped_special: u64,
}

/// An unpacking or copying failure: what was being done (naming the image entry, or the
/// source and destination) and why.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {msg}")]
pub struct ExtractError {
    pub what: String,
    pub msg: String,
}

/// Bounds on what an image may make `extract_image` write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Deepest directory nesting.
    pub max_depth: usize,
    /// Most bytes of file data written in all.
    pub max_bytes: u64,
}

impl Limits {
    /// [`MAX_DEPTH`], and the space free on `dest`'s filesystem less [`FREE_SPACE_RESERVE`]
    /// (no limit on bytes when that cannot be known). Data that would not fit cannot be
    /// unpacked anyway; refusing first keeps the disk from filling up.
    pub fn for_dest(dest: &Path) -> Limits {
        let free = nix::sys::statvfs::statvfs(dest)
            .map(|s| s.blocks_available().saturating_mul(s.fragment_size()))
            .unwrap_or(u64::MAX);
        Limits {
            max_depth: MAX_DEPTH,
            max_bytes: free.saturating_sub(FREE_SPACE_RESERVE),
        }
    }
}

/// Metadata applied after an entry's contents are in place.
#[derive(Debug, Clone, Copy)]
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
}

impl Meta {
    fn of(st: &FileStat) -> Meta {
        Meta {
            mode: st.st_mode,
            uid: st.st_uid,
            gid: st.st_gid,
            mtime: st.st_mtime,
        }
    }
}

/// True when `name` is one path component: joined to a directory it stays in it.
pub fn is_file_name(name: &[u8]) -> bool {
    !name.is_empty() && name != b"." && name != b".." && !name.contains(&b'/') && !name.contains(&0)
}

/// The path `path/name` (paths from a root, `/` for the root itself).
fn child(path: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = path.to_vec();
    if p.last() != Some(&b'/') {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

fn show(p: &[u8]) -> String {
    String::from_utf8_lossy(p).into_owned()
}

fn kind_of(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT
}

fn ids(m: &Meta) -> (Option<Uid>, Option<Gid>) {
    (Some(Uid::from_raw(m.uid)), Some(Gid::from_raw(m.gid)))
}

/// Ownership (first: it clears setuid bits), mode and time of entry `name` of `dir`, never
/// following a symlink. Ownership is kept as is where the namespace does not map the id.
fn set_meta_at(dir: BorrowedFd<'_>, name: &OsStr, m: &Meta, is_link: bool) -> nix::Result<()> {
    let (u, g) = ids(m);
    let _ = fchownat(dir, name, u, g, AtFlags::AT_SYMLINK_NOFOLLOW);
    if !is_link {
        // `name` was made by us as a non-symlink in a directory only we write to.
        fchmodat(
            dir,
            name,
            Mode::from_bits_truncate(m.mode & 0o7777),
            FchmodatFlags::FollowSymlink,
        )?;
    }
    let ts = TimeSpec::new(m.mtime, 0);
    let _ = utimensat(dir, name, &ts, &ts, UtimensatFlags::NoFollowSymlink);
    Ok(())
}

/// The same on an open file.
fn set_meta_fd(f: &File, m: &Meta) -> nix::Result<()> {
    let (u, g) = ids(m);
    let _ = fchown(f, u, g);
    fchmod(f, Mode::from_bits_truncate(m.mode & 0o7777))?;
    let ts = TimeSpec::new(m.mtime, 0);
    let _ = futimens(f, &ts, &ts);
    Ok(())
}

/// Creates file `name` in `dir`: exclusively, never through a symlink.
fn create_file(dir: BorrowedFd<'_>, name: &OsStr) -> nix::Result<File> {
    openat(
        dir,
        name,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )
    .map(File::from)
}

/// Opens directory `name` of `dir` (`O_PATH`), refusing a symlink.
fn open_subdir(dir: BorrowedFd<'_>, name: &OsStr) -> nix::Result<OwnedFd> {
    openat(
        dir,
        name,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

fn mkfifo_at(dir: BorrowedFd<'_>, name: &OsStr) -> nix::Result<()> {
    mknodat(
        dir,
        name,
        SFlag::S_IFIFO,
        Mode::from_bits_truncate(0o600),
        0,
    )
}

/// Opens `dest` (an existing directory, given by the caller) as the root of what is written.
fn open_root(dest: &Path) -> Result<File, ExtractError> {
    File::open(dest)
        .and_then(|f| {
            if f.metadata()?.is_dir() {
                Ok(f)
            } else {
                Err(std::io::Error::from_raw_os_error(libc::ENOTDIR))
            }
        })
        .map_err(|e| ExtractError {
            what: format!("cannot open {}", dest.display()),
            msg: e.to_string(),
        })
}

/// Directories whose mode and time are applied last, deepest first, by (parent path, name).
type PendingDirs = Vec<(Vec<u8>, OsString, Meta)>;

/// Applies the metadata of `dirs` (in reverse order), reopening each parent inside `root`.
fn finish_dirs(
    root: BorrowedFd<'_>,
    dirs: &PendingDirs,
    what: &dyn Fn(&[u8]) -> String,
) -> Result<(), ExtractError> {
    for (parent, name, m) in dirs.iter().rev() {
        let fail = |e: Errno| ExtractError {
            what: what(&child(parent, name.as_bytes())),
            msg: e.desc().to_string(),
        };
        let pfd = open_dir_in_root(root, parent, Resolver::Auto).map_err(fail)?;
        set_meta_at(pfd.as_fd(), name, m, false).map_err(fail)?;
    }
    Ok(())
}

/// Unpacks the whole tree of `fs` into `dest` (which must be empty or new), within the
/// [`Limits`] of `dest`'s filesystem.
pub fn extract_image<B: ImageBackend>(fs: &B, dest: &Path) -> Result<ExtractStats, ExtractError> {
    std::fs::create_dir_all(dest).map_err(|e| ExtractError {
        what: format!("cannot create {}", dest.display()),
        msg: e.to_string(),
    })?;
    extract_image_with(fs, dest, &Limits::for_dest(dest))
}

/// [`extract_image`] with explicit limits.
pub fn extract_image_with<B: ImageBackend>(
    fs: &B,
    dest: &Path,
    limits: &Limits,
) -> Result<ExtractStats, ExtractError> {
    std::fs::create_dir_all(dest).map_err(|e| ExtractError {
        what: format!("cannot create {}", dest.display()),
        msg: e.to_string(),
    })?;
    let root_file = open_root(dest)?;
    let root = root_file.as_fd();
    let entry = |p: &[u8]| format!("cannot unpack image entry {}", show(p));
    let fail = |p: &[u8], msg: String| ExtractError {
        what: entry(p),
        msg,
    };
    let mut stats = ExtractStats::default();
    // The first place of every non-directory inode (parent path, name): later ones are links.
    let mut placed: HashMap<u64, (Vec<u8>, OsString)> = HashMap::new();
    // Every directory inode unpacked, with its path: a directory met again is refused.
    let mut dirs_seen: HashMap<u64, Vec<u8>> = HashMap::new();
    let mut dirs: PendingDirs = Vec::new();
    let root_ino = fs.root();
    let rattr = fs.stat(root_ino).map_err(|e| fail(b"/", e.msg))?;
    dirs_seen.insert(root_ino, b"/".to_vec());
    let mut stack: Vec<(u64, Vec<u8>, usize)> = vec![(root_ino, b"/".to_vec(), 0)];
    let mut buf = vec![0u8; 1 << 20];
    let mut link_parent: Option<(Vec<u8>, OwnedFd)> = None;
    while let Some((dir, path, depth)) = stack.pop() {
        let dfd = open_dir_in_root(root, &path, Resolver::Auto)
            .map_err(|e| fail(&path, e.desc().to_string()))?;
        let mut entries: Vec<(Vec<u8>, sifr_fuse::Attr)> = Vec::new();
        let mut failure = None;
        fs.readdir(dir, 0, true, &mut |e, a| {
            match a {
                Some(a) => entries.push((e.name.to_vec(), a)),
                None => failure = Some("no attributes from readdir"),
            }
            true
        })
        .map_err(|e| ExtractError {
            what: format!("cannot list image directory {}", show(&path)),
            msg: e.msg,
        })?;
        if let Some(f) = failure {
            return Err(fail(&path, f.to_string()));
        }
        for (name, a) in entries {
            let p = child(&path, &name);
            if !is_file_name(&name) {
                return Err(ExtractError {
                    what: format!("cannot unpack image directory {}", show(&path)),
                    msg: format!(
                        "it holds an entry named {:?}, which is not a file name (a corrupt or \
                         hostile image)",
                        show(&name)
                    ),
                });
            }
            let n = OsStr::from_bytes(&name);
            let sys = |e: Errno| fail(&p, e.desc().to_string());
            let meta = Meta {
                mode: a.mode,
                uid: a.uid,
                gid: a.gid,
                mtime: i64::from(a.mtime),
            };
            let ino = u64::from(a.ino);
            if a.kind == FileType::Directory {
                if let Some(first) = dirs_seen.get(&ino) {
                    let inside = first == b"/" || p.starts_with(&child(first, b""));
                    let msg = if inside {
                        format!(
                            "directory loop: it is directory {} again, which contains it (a \
                             corrupt or hostile image)",
                            show(first)
                        )
                    } else {
                        format!(
                            "it is directory {} again (a directory has one name; a corrupt or \
                             hostile image)",
                            show(first)
                        )
                    };
                    return Err(fail(&p, msg));
                }
                if depth + 1 > limits.max_depth {
                    return Err(fail(
                        &p,
                        format!(
                            "directories nest deeper than {} levels (a corrupt or hostile image)",
                            limits.max_depth
                        ),
                    ));
                }
                mkdirat(dfd.as_fd(), n, Mode::from_bits_truncate(0o700)).map_err(sys)?;
                stats.dirs += 1;
                dirs_seen.insert(ino, p.clone());
                dirs.push((path.clone(), n.to_os_string(), meta));
                stack.push((ino, p, depth + 1));
                continue;
            }
            if let Some((lp, ln)) = placed.get(&ino) {
                // Met before: a hard link to the first one (its data is not written again).
                if link_parent.as_ref().is_none_or(|(p, _)| p != lp) {
                    let fd = open_dir_in_root(root, lp, Resolver::Auto).map_err(sys)?;
                    link_parent = Some((lp.clone(), fd));
                }
                if let Some((_, lfd)) = &link_parent {
                    linkat(lfd, ln.as_os_str(), dfd.as_fd(), n, AtFlags::empty()).map_err(sys)?;
                }
                stats.hardlinks += 1;
                continue;
            }
            match a.kind {
                FileType::Regular => {
                    if a.size > limits.max_bytes.saturating_sub(stats.bytes) {
                        return Err(fail(&p, too_big(a.size, stats.bytes, limits, dest)));
                    }
                    let mut out = create_file(dfd.as_fd(), n).map_err(sys)?;
                    let mut off = 0u64;
                    loop {
                        let got = fs.read(ino, off, &mut buf).map_err(|e| fail(&p, e.msg))?;
                        if got == 0 {
                            break;
                        }
                        off += got as u64;
                        if stats.bytes + off > limits.max_bytes {
                            return Err(fail(&p, too_big(off, stats.bytes, limits, dest)));
                        }
                        out.write_all(&buf[..got])
                            .map_err(|e| fail(&p, e.to_string()))?;
                    }
                    stats.bytes += off;
                    stats.files += 1;
                    set_meta_fd(&out, &meta).map_err(sys)?;
                }
                FileType::Symlink => {
                    let target = fs.readlink(ino).map_err(|e| fail(&p, e.msg))?;
                    symlinkat(OsStr::from_bytes(&target), dfd.as_fd(), n).map_err(sys)?;
                    stats.symlinks += 1;
                    set_meta_at(dfd.as_fd(), n, &meta, true).map_err(sys)?;
                }
                FileType::Fifo => {
                    mkfifo_at(dfd.as_fd(), n).map_err(sys)?;
                    set_meta_at(dfd.as_fd(), n, &meta, false).map_err(sys)?;
                }
                FileType::CharDevice | FileType::BlockDevice | FileType::Socket => {
                    stats.skipped_special += 1;
                    continue;
                }
                // Handled above.
                FileType::Directory => continue,
            }
            placed.insert(ino, (path.clone(), n.to_os_string()));
        }
    }
    finish_dirs(root, &dirs, &entry)?;
    let rmeta = Meta {
        mode: rattr.mode,
        uid: rattr.uid,
        gid: rattr.gid,
        mtime: i64::from(rattr.mtime),
    };
    set_meta_fd(&root_file, &rmeta).map_err(|e| fail(b"/", e.desc().to_string()))?;
    Ok(stats)
}

fn too_big(size: u64, done: u64, limits: &Limits, dest: &Path) -> String {
    format!(
        "it is {size} bytes, after {done} bytes of other files, more than the {} bytes free \
         for them on the filesystem of {} (a corrupt or hostile image, or too little space)",
        limits.max_bytes,
        dest.display()
    )
}

/// Copies `src` (a file, symlink or directory tree) to `dest`, preserving modes, owners
/// (where the namespace allows), times, symbolic links and hard links within the tree.
/// `dest`'s parent must exist; a directory is merged into an existing `dest` directory.
pub fn copy_tree(src: &Path, dest: &Path) -> Result<ExtractStats, ExtractError> {
    let what = || format!("cannot copy {} to {}", src.display(), dest.display());
    let io = |e: std::io::Error| ExtractError {
        what: what(),
        msg: e.to_string(),
    };
    let md = std::fs::symlink_metadata(src).map_err(io)?;
    if md.is_dir() {
        match std::fs::create_dir(dest) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(io(e)),
            _ => {}
        }
        let root = open_root(dest)?;
        let sdir = File::open(src).map_err(io)?;
        return copy_at(
            root.as_fd(),
            sdir.as_fd(),
            OsStr::new("."),
            src,
            root.as_fd(),
            b"/",
            OsStr::new("."),
        );
    }
    let (Some(sname), Some(dname)) = (src.file_name(), dest.file_name()) else {
        return Err(io(std::io::Error::from_raw_os_error(libc::EINVAL)));
    };
    let parent = |p: &Path| match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let root = open_root(&parent(dest))?;
    let sdir = File::open(parent(src)).map_err(io)?;
    copy_at(
        root.as_fd(),
        sdir.as_fd(),
        sname,
        src,
        root.as_fd(),
        b"/",
        dname,
    )
}

/// Copies entry `src_name` of directory `src_dir` (`.`: that directory itself; `src_label`
/// names it in messages) to entry `dst_name` of directory `dst_dir`, which is at `dst_path`
/// inside `root` with its symlinks resolved (`dst_name` `.`: onto `dst_dir` itself). Nothing
/// is written outside `root`: entries are made relative to directory descriptors, never
/// through a symlink; an existing symlink where a directory is copied is followed inside
/// `root`. Existing non-directories are replaced, existing directories merged into.
pub fn copy_at(
    root: BorrowedFd<'_>,
    src_dir: BorrowedFd<'_>,
    src_name: &OsStr,
    src_label: &Path,
    dst_dir: BorrowedFd<'_>,
    dst_path: &[u8],
    dst_name: &OsStr,
) -> Result<ExtractStats, ExtractError> {
    let mut c = Copier {
        root,
        stats: ExtractStats::default(),
        links: HashMap::new(),
        dirs: Vec::new(),
        top: None,
        buf: vec![0u8; 256 << 10],
    };
    let top = Place {
        dir: dst_dir,
        path: dst_path,
        name: dst_name,
    };
    c.copy(src_dir, src_name, src_label, &top, 0)?;
    let what = |p: &[u8]| format!("cannot copy {} to {}", src_label.display(), show(p));
    finish_dirs(root, &c.dirs, &what)?;
    if let Some(m) = c.top {
        let fail = |e: Errno| ExtractError {
            what: what(dst_path),
            msg: e.desc().to_string(),
        };
        let f = openat(
            dst_dir,
            ".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map(File::from)
        .map_err(fail)?;
        set_meta_fd(&f, &m).map_err(fail)?;
    }
    Ok(c.stats)
}

/// Where one entry is copied to: `name` in `dir`, which is at `path` inside the root.
struct Place<'a> {
    dir: BorrowedFd<'a>,
    path: &'a [u8],
    name: &'a OsStr,
}

struct Copier<'r> {
    root: BorrowedFd<'r>,
    stats: ExtractStats,
    /// Hard-linked sources already copied: (dev, ino) -> (parent path, name) of the copy.
    links: HashMap<(u64, u64), (Vec<u8>, OsString)>,
    dirs: PendingDirs,
    /// The metadata of the destination directory itself, when a directory is copied onto it.
    top: Option<Meta>,
    buf: Vec<u8>,
}

impl Copier<'_> {
    fn copy(
        &mut self,
        sdir: BorrowedFd<'_>,
        sname: &OsStr,
        label: &Path,
        to: &Place<'_>,
        depth: usize,
    ) -> Result<(), ExtractError> {
        let dshow = if to.name == "." {
            show(to.path)
        } else {
            show(&child(to.path, to.name.as_bytes()))
        };
        let fail = |msg: String| ExtractError {
            what: format!("cannot copy {} to {dshow}", label.display()),
            msg,
        };
        let sys = |e: Errno| fail(e.desc().to_string());
        let st = fstatat(sdir, sname, AtFlags::AT_SYMLINK_NOFOLLOW).map_err(sys)?;
        let meta = Meta::of(&st);
        let kind = kind_of(&st);
        let existing = fstatat(to.dir, to.name, AtFlags::AT_SYMLINK_NOFOLLOW)
            .ok()
            .map(|s| kind_of(&s));
        let replace = |kind: Option<SFlag>| -> Result<(), ExtractError> {
            match kind {
                None => Ok(()),
                Some(SFlag::S_IFDIR) => Err(fail("a directory is in the way".into())),
                Some(_) => unlinkat(to.dir, to.name, UnlinkatFlags::NoRemoveDir).map_err(sys),
            }
        };
        if kind != SFlag::S_IFDIR && st.st_nlink > 1 {
            let key = (st.st_dev, st.st_ino);
            if let Some((lp, ln)) = self.links.get(&key) {
                replace(existing)?;
                let lfd = open_dir_in_root(self.root, lp, Resolver::Auto).map_err(sys)?;
                linkat(&lfd, ln.as_os_str(), to.dir, to.name, AtFlags::empty()).map_err(sys)?;
                self.stats.hardlinks += 1;
                return Ok(());
            }
            self.links
                .insert(key, (to.path.to_vec(), to.name.to_os_string()));
        }
        match kind {
            SFlag::S_IFDIR => {
                if depth > MAX_DEPTH {
                    return Err(fail(format!(
                        "directories nest deeper than {MAX_DEPTH} levels"
                    )));
                }
                // The directory written into: `to` itself, made or merged into.
                let (dfd, dpath): (OwnedFd, Vec<u8>) = if to.name == "." {
                    let fd = open_subdir(to.dir, to.name).map_err(sys)?;
                    (fd, to.path.to_vec())
                } else {
                    let here = child(to.path, to.name.as_bytes());
                    match existing {
                        None => {
                            mkdirat(to.dir, to.name, Mode::from_bits_truncate(0o700))
                                .map_err(sys)?;
                            self.dirs
                                .push((to.path.to_vec(), to.name.to_os_string(), meta));
                            (open_subdir(to.dir, to.name).map_err(sys)?, here)
                        }
                        Some(SFlag::S_IFDIR) => {
                            // Owner-writable while it is filled; its mode is set after.
                            fchmodat(
                                to.dir,
                                to.name,
                                Mode::from_bits_truncate(0o700),
                                FchmodatFlags::FollowSymlink,
                            )
                            .map_err(sys)?;
                            self.dirs
                                .push((to.path.to_vec(), to.name.to_os_string(), meta));
                            (open_subdir(to.dir, to.name).map_err(sys)?, here)
                        }
                        Some(SFlag::S_IFLNK) => {
                            // Where the symlink leads, inside the root (as in the container),
                            // made there when missing.
                            let mut mkdir = |d: BorrowedFd<'_>, n: &OsStr| {
                                mkdirat(d, n, Mode::from_bits_truncate(0o755))
                            };
                            match resolve_in_root(self.root, &here, Some(&mut mkdir))
                                .map_err(sys)?
                            {
                                Resolved::Dir { fd, path } => (fd, path),
                                Resolved::Entry {
                                    parent,
                                    parent_path,
                                    name,
                                    exists: false,
                                } => {
                                    mkdirat(
                                        &parent,
                                        name.as_os_str(),
                                        Mode::from_bits_truncate(0o700),
                                    )
                                    .map_err(sys)?;
                                    let fd = open_subdir(parent.as_fd(), &name).map_err(sys)?;
                                    let path = child(&parent_path, name.as_bytes());
                                    self.dirs.push((parent_path, name, meta));
                                    (fd, path)
                                }
                                Resolved::Entry { .. } => {
                                    return Err(fail(
                                        "a symlink to something else than a directory is in \
                                         the way"
                                            .into(),
                                    ));
                                }
                            }
                        }
                        Some(_) => return Err(fail("a file is in the way".into())),
                    }
                };
                self.stats.dirs += 1;
                let src = openat(
                    sdir,
                    sname,
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .map_err(sys)?;
                let names = list_dir(&src).map_err(sys)?;
                for n in names {
                    let n = OsStr::from_bytes(&n);
                    let place = Place {
                        dir: dfd.as_fd(),
                        path: &dpath,
                        name: n,
                    };
                    self.copy(src.as_fd(), n, &label.join(n), &place, depth + 1)?;
                }
                if to.name == "." {
                    // The top directory itself: its metadata goes last.
                    self.top = Some(meta);
                }
            }
            SFlag::S_IFREG => {
                replace(existing)?;
                let mut i = File::from(
                    openat(
                        sdir,
                        sname,
                        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(sys)?,
                );
                let mut o = create_file(to.dir, to.name).map_err(sys)?;
                loop {
                    let n = match i.read(&mut self.buf) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(fail(e.to_string())),
                    };
                    o.write_all(&self.buf[..n])
                        .map_err(|e| fail(e.to_string()))?;
                    self.stats.bytes += n as u64;
                }
                self.stats.files += 1;
                set_meta_fd(&o, &meta).map_err(sys)?;
            }
            SFlag::S_IFLNK => {
                replace(existing)?;
                let target = readlinkat(sdir, sname).map_err(sys)?;
                symlinkat(target.as_os_str(), to.dir, to.name).map_err(sys)?;
                self.stats.symlinks += 1;
                set_meta_at(to.dir, to.name, &meta, true).map_err(sys)?;
            }
            SFlag::S_IFIFO => {
                replace(existing)?;
                mkfifo_at(to.dir, to.name).map_err(sys)?;
                set_meta_at(to.dir, to.name, &meta, false).map_err(sys)?;
            }
            _ => self.stats.skipped_special += 1,
        }
        Ok(())
    }
}

/// The names in directory `dir`, sorted, without `.` and `..`.
pub fn list_dir(dir: &OwnedFd) -> nix::Result<Vec<Vec<u8>>> {
    super::inroot::list_dir(dir.as_fd())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sifr_fuse::{Attr, BackendError, BackendResult, DirEntry, FsStats};
    use std::os::unix::fs::MetadataExt;

    /// One inode of a [`Fake`]: attributes, children (name, inode), data or link target.
    type Node = (Attr, Vec<(Vec<u8>, u64)>, Vec<u8>);

    /// An image made up in memory.
    #[derive(Default)]
    struct Fake {
        nodes: HashMap<u64, Node>,
    }

    fn attr(ino: u64, kind: FileType, size: u64) -> Attr {
        let mode = kind.mode_bits()
            | if kind == FileType::Directory {
                0o755
            } else {
                0o644
            };
        Attr {
            ino: ino as u32,
            kind,
            mode,
            nlink: 1,
            uid: 0,
            gid: 0,
            size,
            mtime: 0,
            rdev: 0,
            blocks: 0,
            blksize: 4096,
        }
    }

    impl Fake {
        fn dir(mut self, ino: u64, kids: &[(&[u8], u64)]) -> Fake {
            let kids = kids.iter().map(|(n, i)| (n.to_vec(), *i)).collect();
            self.nodes
                .insert(ino, (attr(ino, FileType::Directory, 0), kids, vec![]));
            self
        }
        /// A file claiming `size` bytes and holding `data`.
        fn file(mut self, ino: u64, size: u64, data: &[u8]) -> Fake {
            self.nodes.insert(
                ino,
                (attr(ino, FileType::Regular, size), vec![], data.to_vec()),
            );
            self
        }
        fn get(&self, ino: u64) -> BackendResult<&Node> {
            self.nodes.get(&ino).ok_or(BackendError {
                errno: libc::ENOENT,
                msg: format!("no inode {ino}"),
            })
        }
    }

    impl ImageBackend for Fake {
        fn root(&self) -> u64 {
            1
        }
        fn stat(&self, ino: u64) -> BackendResult<Attr> {
            Ok(self.get(ino)?.0)
        }
        fn lookup(&self, _: u64, _: &[u8]) -> BackendResult<Option<Attr>> {
            Ok(None)
        }
        fn parent(&self, dir: u64) -> BackendResult<u64> {
            Ok(dir)
        }
        fn readdir(
            &self,
            dir: u64,
            _: u64,
            _: bool,
            f: &mut dyn FnMut(DirEntry<'_>, Option<Attr>) -> bool,
        ) -> BackendResult<()> {
            for (i, (name, ino)) in self.get(dir)?.1.iter().enumerate() {
                let a = self.stat(*ino)?;
                let e = DirEntry {
                    name,
                    ino: *ino as u32,
                    kind: a.kind,
                    next_cookie: i as u64 + 1,
                };
                if !f(e, Some(a)) {
                    break;
                }
            }
            Ok(())
        }
        fn read(&self, ino: u64, offset: u64, buf: &mut [u8]) -> BackendResult<usize> {
            let data = &self.get(ino)?.2;
            let from = (offset as usize).min(data.len());
            let n = buf.len().min(data.len() - from);
            buf[..n].copy_from_slice(&data[from..from + n]);
            Ok(n)
        }
        fn readlink(&self, ino: u64) -> BackendResult<Vec<u8>> {
            Ok(self.get(ino)?.2.clone())
        }
        fn listxattr(&self, _: u64) -> BackendResult<Vec<Vec<u8>>> {
            Ok(vec![])
        }
        fn getxattr(&self, _: u64, _: &[u8]) -> BackendResult<Option<Vec<u8>>> {
            Ok(None)
        }
        fn stats(&self) -> FsStats {
            FsStats {
                block_size: 4096,
                blocks: 0,
                files: 0,
            }
        }
    }

    const ROOMY: Limits = Limits {
        max_depth: MAX_DEPTH,
        max_bytes: 1 << 30,
    };

    /// Unpacks `fs` into `<tmp>/out/root`; returns the error and what `<tmp>/out` then holds.
    fn refused(fs: &Fake, limits: &Limits) -> (String, Vec<String>) {
        let t = tempfile::tempdir().expect("tmp");
        let out = t.path().join("out");
        let e = extract_image_with(fs, &out.join("root"), limits).expect_err("refused");
        let mut left: Vec<String> = std::fs::read_dir(&out)
            .expect("out")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        (e.to_string(), left)
    }

    #[test]
    fn test_names_that_are_not_file_names_are_refused() {
        for bad in [
            &b"../x"[..],
            b"..",
            b".",
            b"",
            b"/abs",
            b"a/../../x",
            b"x\0y",
        ] {
            let fs = Fake::default()
                .dir(1, &[(b"fine", 2), (bad, 3)])
                .file(2, 1, b"f")
                .file(3, 1, b"x");
            let (e, left) = refused(&fs, &ROOMY);
            assert!(e.contains(&format!("{:?}", show(bad))), "{e}");
            assert_eq!(left, ["root"], "{bad:?}: written outside");
        }
    }

    #[test]
    fn test_directory_loops_and_shared_directories_are_refused() {
        // /a/b is /a again.
        let fs = Fake::default()
            .dir(1, &[(b"a", 2)])
            .dir(2, &[(b"b", 2), (b"f", 3)])
            .file(3, 1, b"f");
        let (e, _) = refused(&fs, &ROOMY);
        assert!(
            e.contains("/a/b") && e.contains("loop") && e.contains("directory /a "),
            "{e}"
        );
        // /a/up is the root.
        let fs = Fake::default().dir(1, &[(b"a", 2)]).dir(2, &[(b"up", 1)]);
        let (e, _) = refused(&fs, &ROOMY);
        assert!(e.contains("/a/up") && e.contains("loop"), "{e}");
        // /a and /b are one directory: unpacked twice it would double (and so on, per level).
        let fs = Fake::default().dir(1, &[(b"a", 2), (b"b", 2)]).dir(2, &[]);
        let (e, _) = refused(&fs, &ROOMY);
        assert!(e.contains("/b") && e.contains("directory /a again"), "{e}");
    }

    #[test]
    fn test_depth_and_size_limits() {
        let chain = Fake::default()
            .dir(1, &[(b"d", 2)])
            .dir(2, &[(b"d", 3)])
            .dir(3, &[(b"d", 4)])
            .dir(4, &[]);
        let t = tempfile::tempdir().expect("tmp");
        let three = Limits {
            max_depth: 3,
            ..ROOMY
        };
        extract_image_with(&chain, &t.path().join("ok"), &three).expect("3 levels");
        let two = Limits {
            max_depth: 2,
            ..ROOMY
        };
        let (e, _) = refused(&chain, &two);
        assert!(e.contains("/d/d/d") && e.contains("deeper than 2"), "{e}");
        // A file claiming more than the limit is refused before anything of it is written.
        let big = Fake::default()
            .dir(1, &[(b"a", 2), (b"huge", 3)])
            .file(2, 60, &[1; 60])
            .file(3, 1 << 50, b"");
        let small = Limits {
            max_bytes: 100,
            ..ROOMY
        };
        let (e, _) = refused(&big, &small);
        assert!(e.contains("/huge") && e.contains("100 bytes free"), "{e}");
        // A reader handing out more than the file claims is stopped at the limit too.
        let liar = Fake::default().dir(1, &[(b"l", 2)]).file(2, 10, &[7; 500]);
        let (e, _) = refused(&liar, &small);
        assert!(e.contains("/l"), "{e}");
    }

    #[test]
    fn test_a_file_met_twice_is_written_once() {
        let data = vec![5u8; 4000];
        let fs = Fake::default()
            .dir(1, &[(b"a", 2), (b"d", 3)])
            .file(2, 4000, &data)
            .dir(3, &[(b"b", 2), (b"c", 2)]);
        let t = tempfile::tempdir().expect("tmp");
        let out = t.path().join("root");
        let st = extract_image_with(&fs, &out, &ROOMY).expect("extract");
        assert_eq!((st.files, st.hardlinks, st.bytes), (1, 2, 4000));
        let ino = std::fs::metadata(out.join("a")).expect("a").ino();
        assert_eq!(std::fs::metadata(out.join("d/c")).expect("c").ino(), ino);
        assert_eq!(std::fs::read(out.join("d/b")).expect("b"), data);
    }

    #[test]
    fn test_copy_at_stays_inside_the_root() {
        let t = tempfile::tempdir().expect("tmp");
        let base = std::fs::canonicalize(t.path()).expect("canon");
        let (src, root, outside) = (base.join("src"), base.join("root"), base.join("outside"));
        std::fs::create_dir_all(src.join("opt/sub")).expect("mkdir");
        std::fs::write(src.join("opt/sub/f"), b"data").expect("write");
        std::fs::create_dir_all(&root).expect("mkdir");
        std::fs::create_dir_all(&outside).expect("mkdir");
        // The destination's `opt` is a symlink to the host directory `outside`.
        std::os::unix::fs::symlink(&outside, root.join("opt")).expect("symlink");
        let rfd = File::open(&root).expect("root");
        let sfd = File::open(&src).expect("src");
        copy_at(
            rfd.as_fd(),
            sfd.as_fd(),
            OsStr::new("opt"),
            &src.join("opt"),
            rfd.as_fd(),
            b"/",
            OsStr::new("opt"),
        )
        .expect("copy");
        assert_eq!(std::fs::read_dir(&outside).expect("outside").count(), 0);
        let inside = root.join(outside.strip_prefix("/").expect("abs"));
        assert_eq!(
            std::fs::read(inside.join("sub/f")).expect("inside"),
            b"data"
        );
    }

    #[test]
    fn test_extract_busybox_and_copy_back() {
        let sif = crate::testutil::sif_fixture("busybox_amd64.sif");
        let Ok(f) = std::fs::File::open(&sif) else {
            crate::testutil::skip("busybox fixture not found");
            return;
        };
        let fs = sifr_fuse::SquashFs::open(f, 45056).expect("open");
        let t = tempfile::tempdir().expect("tmp");
        let out = t.path().join("root");
        let st = extract_image(&fs, &out).expect("extract");
        assert!(st.files > 0 && st.hardlinks > 300, "{st:?}");
        assert!(out.join("bin/busybox").is_file());
        let a = std::fs::metadata(out.join("bin/sh")).expect("sh");
        let b = std::fs::metadata(out.join("bin/busybox")).expect("busybox");
        assert_eq!(a.ino(), b.ino(), "hard links kept");
        assert_eq!(
            std::fs::read_link(out.join("singularity")).expect("link"),
            PathBuf::from(".singularity.d/runscript")
        );
        let copy = t.path().join("copy");
        let st2 = copy_tree(&out, &copy).expect("copy");
        assert_eq!((st2.files, st2.hardlinks), (st.files, st.hardlinks));
        assert_eq!(
            std::fs::read(copy.join("bin/busybox")).expect("read"),
            std::fs::read(out.join("bin/busybox")).expect("read")
        );
        assert_eq!(
            std::fs::metadata(copy.join("bin")).expect("bin").mode() & 0o7777,
            std::fs::metadata(out.join("bin")).expect("bin").mode() & 0o7777
        );
    }
}
