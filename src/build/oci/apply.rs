//! Applying one image layer (a tar stream, gzip- or zstd-compressed or plain) to a root
//! filesystem directory, with the OCI layer semantics:
//!
//! - `DIR/.wh.NAME` deletes `DIR/NAME` as the lower layers left it; `DIR/.wh..wh..opq` makes
//!   `DIR` opaque: everything the lower layers put under it goes, while what this layer adds
//!   stays, whichever order the tar lists them in. A whiteout never deletes an entry of its
//!   own layer.
//! - An entry replaces what is at its path, except that a directory over a directory merges.
//! - Files, directories, symlinks, hard links and FIFOs are created with the tar's mode,
//!   mtime and `SCHILY.xattr.*` extended attributes; ownership is set with `chown` (the
//!   caller runs this in a fakeroot user namespace, where chown to mapped ids works; EPERM
//!   and EINVAL for unmapped ids are ignored and counted). Device nodes are created when
//!   `mknod` is allowed and otherwise skipped with a note, as in a rootless umoci unpack.
//! - No entry can touch anything outside the destination: names with `..` are refused, a
//!   leading `/` is taken as the destination's root, and every parent directory is opened
//!   with [`crate::image::inroot`], so symlinks planted by earlier entries or layers resolve inside
//!   the destination. The final component is never followed.
//!
//! Directory modes and mtimes are applied after the whole layer (deepest first), so a
//! read-only directory can still be filled and its mtime is not disturbed by its entries.
//! When running without privilege, a directory left without owner write permission by an
//! earlier layer is opened up for the write and restored at the end of the layer.
//!
//! Known limit: the `tar` crate reads a GNU long-name or PAX header entry into memory whole,
//! so a hostile layer can make this use memory in proportion to such an entry (as it can
//! make it use disk in proportion to file data).

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::rc::Rc;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{
    FchmodatFlags, Mode, SFlag, UtimensatFlags, fchmod, fchmodat, fstat, fstatat, futimens,
    makedev, mkdirat, mknodat, utimensat,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchown, fchownat, linkat, symlinkat, unlinkat};

use crate::image::inroot::{Resolver, list_dir, mkdir_all_in_root, open_dir_in_root};

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
/// Notes kept in a report; further ones are only counted.
const MAX_NOTES: usize = 20;

/// How to apply a layer.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// chown entries to the tar's owner (failures for unmapped ids are ignored).
    pub preserve_ownership: bool,
    /// Set `SCHILY.xattr.*` extended attributes (failures are ignored and counted).
    pub xattrs: bool,
    /// How parent directories are resolved (tests force the user-space walk).
    pub resolver: Resolver,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            preserve_ownership: true,
            xattrs: true,
            resolver: Resolver::Auto,
        }
    }
}

/// What applying a layer did, beyond the entries it created.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ApplyReport {
    /// Entries created or updated (whiteouts not included).
    pub entries: u64,
    pub whiteouts: u64,
    pub opaque_dirs: u64,
    /// Device nodes not created because `mknod` is not allowed.
    pub devices_skipped: u64,
    /// Entries whose owner could not be set (ids not mapped in this namespace).
    pub chown_failed: u64,
    /// Extended attributes that could not be set.
    pub xattrs_failed: u64,
    /// Other entries skipped (unknown types, aufs metadata).
    pub skipped: u64,
    /// The first few notable events, one line each.
    pub notes: Vec<String>,
}

impl ApplyReport {
    /// Adds another layer's report to this one.
    pub fn merge(&mut self, other: ApplyReport) {
        self.entries += other.entries;
        self.whiteouts += other.whiteouts;
        self.opaque_dirs += other.opaque_dirs;
        self.devices_skipped += other.devices_skipped;
        self.chown_failed += other.chown_failed;
        self.xattrs_failed += other.xattrs_failed;
        self.skipped += other.skipped;
        for n in other.notes {
            if self.notes.len() < MAX_NOTES {
                self.notes.push(n);
            }
        }
    }

    fn note(&mut self, msg: String) {
        log::debug!("{msg}");
        if self.notes.len() < MAX_NOTES {
            self.notes.push(msg);
        }
    }
}

/// Why a layer could not be applied. Entry paths are shown as in the tar.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("cannot open the destination directory {path}: {err}")]
    Dest { path: String, err: io::Error },
    #[error(
        "layer is compressed with {0}, which is not supported for layers (use gzip, zstd or none)"
    )]
    Compression(&'static str),
    #[error("reading the layer: {0}")]
    Read(io::Error),
    #[error("layer entry {path:?} climbs out of the root with \"..\" (refused)")]
    Escape { path: String },
    #[error("layer entry {path:?} has an invalid name")]
    BadName { path: String },
    #[error("layer entry {path:?}: {op}: {err}")]
    Entry {
        path: String,
        op: &'static str,
        err: io::Error,
    },
    #[error("layer entry {path:?} is a hard link to {target:?}, which does not exist")]
    LinkTarget { path: String, target: String },
}

/// Applies one layer read from `reader` (compression detected from its first bytes) to
/// `dest`, which must exist.
pub fn apply_layer(reader: impl Read, dest: &Path) -> Result<ApplyReport, ApplyError> {
    apply_layer_with(reader, dest, &ApplyOptions::default())
}

/// [`apply_layer`] with options.
pub fn apply_layer_with(
    reader: impl Read,
    dest: &Path,
    options: &ApplyOptions,
) -> Result<ApplyReport, ApplyError> {
    let root = openat(
        nix::fcntl::AT_FDCWD,
        dest,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| ApplyError::Dest {
        path: dest.display().to_string(),
        err: e.into(),
    })?;
    let stream = decompress(reader)?;
    let mut applier = Applier {
        root,
        options: options.clone(),
        report: ApplyReport::default(),
        touched: HashSet::new(),
        dirs: Vec::new(),
        restore: Vec::new(),
        parent_cache: None,
        buf: vec![0u8; 128 * 1024],
        euid: nix::unistd::geteuid(),
    };
    let mut archive = tar::Archive::new(stream);
    let entries = archive.entries().map_err(ApplyError::Read)?;
    for entry in entries {
        let entry = entry.map_err(ApplyError::Read)?;
        applier.entry(entry)?;
    }
    applier.finish()?;
    Ok(applier.report)
}

/// Wraps `reader` in the decompressor its magic bytes call for.
pub fn decompress<'a>(reader: impl Read + 'a) -> Result<Box<dyn Read + 'a>, ApplyError> {
    let mut br = BufReader::with_capacity(128 * 1024, reader);
    let head = br.fill_buf().map_err(ApplyError::Read)?;
    if head.starts_with(&[0x1f, 0x8b]) {
        return Ok(Box::new(flate2::bufread::MultiGzDecoder::new(br)));
    }
    if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        let d = zstd::stream::read::Decoder::with_buffer(br).map_err(ApplyError::Read)?;
        return Ok(Box::new(d));
    }
    if head.starts_with(b"BZh") {
        return Err(ApplyError::Compression("bzip2"));
    }
    if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        return Err(ApplyError::Compression("xz"));
    }
    Ok(Box::new(br))
}

/// Ownership, permissions, time and extended attributes from a tar header.
#[derive(Debug, Clone)]
struct Meta {
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: i64,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// A directory whose metadata is set at the end of the layer.
struct DeferredDir {
    key: Vec<u8>,
    meta: Meta,
}

struct Applier {
    root: OwnedFd,
    options: ApplyOptions,
    report: ApplyReport,
    /// Paths created or updated by this layer, with all their ancestors.
    touched: HashSet<Vec<u8>>,
    dirs: Vec<DeferredDir>,
    /// Directories opened up for writing, with the mode to put back.
    restore: Vec<(OwnedFd, u32)>,
    /// The last parent directory opened, by key.
    parent_cache: Option<(Vec<u8>, Rc<OwnedFd>)>,
    buf: Vec<u8>,
    euid: Uid,
}

fn errno(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn join(comps: &[&[u8]]) -> Vec<u8> {
    comps.join(&b'/')
}

/// The path `/proc/self/fd/N[/name]`, for calls that have no `*at` form.
fn proc_path(fd: BorrowedFd<'_>, name: Option<&[u8]>) -> std::path::PathBuf {
    let mut p = format!("/proc/self/fd/{}", fd.as_raw_fd()).into_bytes();
    if let Some(n) = name {
        p.push(b'/');
        p.extend_from_slice(n);
    }
    std::path::PathBuf::from(OsStr::from_bytes(&p))
}

/// Splits a tar path into components: empty and `.` parts dropped, a leading `/` ignored,
/// `..` refused.
fn clean(raw: &[u8]) -> Result<Vec<&[u8]>, ApplyError> {
    let mut out = Vec::new();
    for c in raw.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err(ApplyError::Escape { path: show(raw) }),
            c if c.contains(&0) => return Err(ApplyError::BadName { path: show(raw) }),
            c => out.push(c),
        }
    }
    Ok(out)
}

impl Applier {
    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<(), ApplyError> {
        let raw_path = entry.path_bytes().into_owned();
        let path = show(&raw_path);
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions()
            || kind.is_gnu_longname()
            || kind.is_gnu_longlink()
            || kind.is_pax_local_extensions()
        {
            return Ok(());
        }
        let comps = clean(&raw_path)?;
        let Some((&name, parent)) = comps.split_last() else {
            // The root itself (`./`): only its metadata can change.
            if kind.is_dir() {
                let meta = self.meta(&mut entry, &path)?;
                self.dirs.push(DeferredDir {
                    key: Vec::new(),
                    meta,
                });
            }
            return Ok(());
        };
        if name == OPAQUE_MARKER {
            return self.opaque(parent, &path);
        }
        if name.starts_with(b".wh..wh.") {
            // Other aufs bookkeeping (`.wh..wh.plnk`, `.wh..wh.aufs`): not content.
            self.report.skipped += 1;
            return Ok(());
        }
        if let Some(target) = name.strip_prefix(WHITEOUT_PREFIX) {
            return self.whiteout(parent, target, &path);
        }
        let meta = self.meta(&mut entry, &path)?;
        let key = join(&comps);
        if kind.is_dir() {
            self.directory(&comps, key.clone(), meta, &path)?;
        } else if kind.is_file() || kind.is_contiguous() || kind.is_gnu_sparse() {
            self.file(&comps, &mut entry, &meta, &path)?;
        } else if kind.is_symlink() {
            let target = entry
                .link_name_bytes()
                .map(|t| t.into_owned())
                .ok_or_else(|| ApplyError::BadName { path: path.clone() })?;
            self.symlink(&comps, &target, &meta, &path)?;
        } else if kind.is_hard_link() {
            let target = entry
                .link_name_bytes()
                .map(|t| t.into_owned())
                .ok_or_else(|| ApplyError::BadName { path: path.clone() })?;
            if !self.hard_link(&comps, &target, &path)? {
                return Ok(());
            }
        } else if kind.is_character_special() || kind.is_block_special() || kind.is_fifo() {
            if !self.special(&comps, &mut entry, &meta, &path)? {
                return Ok(());
            }
        } else {
            self.report.skipped += 1;
            self.report.note(format!(
                "skipped {path:?}: unsupported tar entry type {:?}",
                kind.as_byte() as char
            ));
            return Ok(());
        }
        self.mark_touched(&key);
        self.report.entries += 1;
        Ok(())
    }

    fn meta<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        path: &str,
    ) -> Result<Meta, ApplyError> {
        let bad = |err: io::Error| ApplyError::Entry {
            path: path.to_string(),
            op: "read header",
            err,
        };
        let h = entry.header();
        let old = h.as_old();
        let mode = numeric(h.mode().map(u64::from), &old.mode).map_err(bad)? as u32 & 0o7777;
        let uid = numeric(h.uid(), &old.uid).map_err(bad)?;
        let gid = numeric(h.gid(), &old.gid).map_err(bad)?;
        let mtime = i64::try_from(numeric(h.mtime(), &old.mtime).map_err(bad)?).unwrap_or(i64::MAX);
        let mut xattrs = Vec::new();
        if self.options.xattrs
            && let Some(exts) = entry.pax_extensions().map_err(bad)?
        {
            for ext in exts {
                let ext = ext.map_err(bad)?;
                if let Some(name) = ext.key_bytes().strip_prefix(b"SCHILY.xattr.") {
                    xattrs.push((name.to_vec(), ext.value_bytes().to_vec()));
                }
            }
        }
        Ok(Meta {
            mode,
            uid,
            gid,
            mtime,
            xattrs,
        })
    }

    fn mark_touched(&mut self, key: &[u8]) {
        let mut k = key.to_vec();
        loop {
            if !self.touched.insert(k.clone()) {
                return;
            }
            match k.iter().rposition(|&b| b == b'/') {
                Some(i) => k.truncate(i),
                None => return,
            }
        }
    }

    /// Opens the parent directory of an entry (its components without the last),
    /// creating missing directories when `create`.
    fn parent_dir(
        &mut self,
        parent: &[&[u8]],
        create: bool,
        path: &str,
    ) -> Result<Option<Rc<OwnedFd>>, ApplyError> {
        let key = join(parent);
        if let Some((k, fd)) = &self.parent_cache
            && *k == key
        {
            return Ok(Some(fd.clone()));
        }
        let fd = match open_dir_in_root(self.root.as_fd(), &key, self.options.resolver) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) if create => self.mkdir_all(parent, path)?,
            Err(Errno::ENOENT) | Err(Errno::ENOTDIR) if !create => return Ok(None),
            Err(e) => {
                return Err(ApplyError::Entry {
                    path: path.to_string(),
                    op: "open parent directory",
                    err: errno(e),
                });
            }
        };
        let fd = Rc::new(fd);
        self.parent_cache = Some((key, fd.clone()));
        Ok(Some(fd))
    }

    fn mkdir_all(&mut self, comps: &[&[u8]], path: &str) -> Result<OwnedFd, ApplyError> {
        let root = self.root.try_clone().map_err(|err| ApplyError::Entry {
            path: path.to_string(),
            op: "open root",
            err,
        })?;
        let mut mkdir = |d: BorrowedFd<'_>, name: &OsStr| {
            self.writable(d, |d| mkdirat(d, name, Mode::from_bits_truncate(0o755)))
        };
        mkdir_all_in_root(root.as_fd(), &join(comps), &mut mkdir).map_err(|e| ApplyError::Entry {
            path: path.to_string(),
            op: "create parent directory",
            err: errno(e),
        })
    }

    /// Runs `op` in directory `dir`; if it fails with EACCES because the directory (owned by
    /// us) lacks owner write or search permission, opens it up, retries, and remembers to
    /// restore the mode at the end of the layer.
    fn writable<T>(
        &mut self,
        dir: BorrowedFd<'_>,
        op: impl Fn(BorrowedFd<'_>) -> nix::Result<T>,
    ) -> nix::Result<T> {
        match op(dir) {
            Err(Errno::EACCES) => {
                let st = fstat(dir)?;
                let mode = st.st_mode & 0o7777;
                if st.st_uid != self.euid.as_raw() || mode & 0o300 == 0o300 {
                    return Err(Errno::EACCES);
                }
                chmod_fd(dir, mode | 0o700)?;
                let keep = dir
                    .try_clone_to_owned()
                    .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(0)))?;
                self.restore.push((keep, mode));
                op(dir)
            }
            other => other,
        }
    }

    /// Removes whatever is at `name` in `dir` (recursively for a directory).
    fn remove_existing(&mut self, dir: &OwnedFd, name: &[u8]) -> nix::Result<bool> {
        let n = OsStr::from_bytes(name);
        let st = match fstatat(dir, n, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::ENOENT) => return Ok(false),
            Err(e) => return Err(e),
        };
        self.parent_cache = None;
        if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR {
            self.writable(dir.as_fd(), |d| {
                remove_tree(d, name, 0)?;
                Ok(())
            })?;
        } else {
            self.writable(dir.as_fd(), |d| unlinkat(d, n, UnlinkatFlags::NoRemoveDir))?;
        }
        Ok(true)
    }

    fn whiteout(&mut self, parent: &[&[u8]], target: &[u8], path: &str) -> Result<(), ApplyError> {
        if target.is_empty() || target == b"." || target == b".." {
            return Err(ApplyError::BadName {
                path: path.to_string(),
            });
        }
        let mut comps = parent.to_vec();
        comps.push(target);
        let key = join(&comps);
        self.report.whiteouts += 1;
        if self.touched.contains(&key) {
            // A whiteout hides lower layers only, never its own layer's entries.
            return Ok(());
        }
        let Some(dir) = self.parent_dir(parent, false, path)? else {
            return Ok(());
        };
        self.remove_existing(&dir, target)
            .map_err(|e| ApplyError::Entry {
                path: path.to_string(),
                op: "delete whited-out entry",
                err: errno(e),
            })?;
        Ok(())
    }

    fn opaque(&mut self, dir: &[&[u8]], path: &str) -> Result<(), ApplyError> {
        let key = join(dir);
        let fail = |op, e: Errno| ApplyError::Entry {
            path: path.to_string(),
            op,
            err: errno(e),
        };
        // The opaque directory itself: created if missing, kept if this layer made it.
        let (parent, name) = match dir.split_last() {
            Some((&name, parent)) => (parent, Some(name)),
            None => (dir, None),
        };
        let fd = match name {
            Some(name) => {
                let pfd = self
                    .parent_dir(parent, true, path)?
                    .ok_or_else(|| fail("open parent directory", Errno::ENOENT))?;
                let n = OsStr::from_bytes(name);
                match fstatat(&*pfd, n, AtFlags::AT_SYMLINK_NOFOLLOW) {
                    Ok(st)
                        if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT
                            == SFlag::S_IFDIR => {}
                    Ok(_) => {
                        self.remove_existing(&pfd, name)
                            .map_err(|e| fail("replace with directory", e))?;
                        self.writable(pfd.as_fd(), |d| {
                            mkdirat(d, n, Mode::from_bits_truncate(0o755))
                        })
                        .map_err(|e| fail("create opaque directory", e))?;
                    }
                    Err(Errno::ENOENT) => {
                        self.writable(pfd.as_fd(), |d| {
                            mkdirat(d, n, Mode::from_bits_truncate(0o755))
                        })
                        .map_err(|e| fail("create opaque directory", e))?;
                    }
                    Err(e) => return Err(fail("inspect opaque directory", e)),
                }
                openat(
                    &*pfd,
                    n,
                    OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| fail("open opaque directory", e))?
            }
            None => open_dir_in_root(self.root.as_fd(), b"", self.options.resolver)
                .map_err(|e| fail("open root", e))?,
        };
        self.mark_touched(&key);
        self.report.opaque_dirs += 1;
        self.prune(&fd, &key)
            .map_err(|e| fail("clear opaque directory", e))
    }

    /// Deletes everything under `dir` that this layer did not create.
    fn prune(&mut self, dir: &OwnedFd, key: &[u8]) -> nix::Result<()> {
        let names = self.writable(dir.as_fd(), list_dir)?;
        for name in names {
            let mut child = key.to_vec();
            if !child.is_empty() {
                child.push(b'/');
            }
            child.extend_from_slice(&name);
            if !self.touched.contains(&child) {
                self.remove_existing(dir, &name)?;
                continue;
            }
            let n = OsStr::from_bytes(&name);
            let st = fstatat(dir, n, AtFlags::AT_SYMLINK_NOFOLLOW)?;
            if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR {
                let sub = openat(
                    dir,
                    n,
                    OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )?;
                self.prune(&sub, &child)?;
            }
        }
        Ok(())
    }

    /// Opens an entry's parent (creating it) and clears its name. Returns the parent.
    fn prepare(
        &mut self,
        comps: &[&[u8]],
        path: &str,
        keep_dir: bool,
    ) -> Result<Rc<OwnedFd>, ApplyError> {
        let (name, parent) = match comps.split_last() {
            Some((&n, p)) => (n, p),
            None => {
                return Err(ApplyError::BadName {
                    path: path.to_string(),
                });
            }
        };
        let pfd = self
            .parent_dir(parent, true, path)?
            .ok_or_else(|| ApplyError::BadName {
                path: path.to_string(),
            })?;
        let is_dir = match fstatat(&*pfd, OsStr::from_bytes(name), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => Some(SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR),
            Err(Errno::ENOENT) => None,
            Err(e) => {
                return Err(ApplyError::Entry {
                    path: path.to_string(),
                    op: "inspect existing entry",
                    err: errno(e),
                });
            }
        };
        match is_dir {
            Some(true) if keep_dir => {}
            Some(_) => {
                self.remove_existing(&pfd, name)
                    .map_err(|e| ApplyError::Entry {
                        path: path.to_string(),
                        op: "replace existing entry",
                        err: errno(e),
                    })?;
            }
            None => {}
        }
        Ok(pfd)
    }

    fn directory(
        &mut self,
        comps: &[&[u8]],
        key: Vec<u8>,
        meta: Meta,
        path: &str,
    ) -> Result<(), ApplyError> {
        let pfd = self.prepare(comps, path, true)?;
        let name = OsStr::from_bytes(comps[comps.len() - 1]);
        match self.writable(pfd.as_fd(), |d| {
            mkdirat(d, name, Mode::from_bits_truncate(0o700))
        }) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => {
                return Err(ApplyError::Entry {
                    path: path.to_string(),
                    op: "create directory",
                    err: errno(e),
                });
            }
        }
        self.dirs.push(DeferredDir { key, meta });
        Ok(())
    }

    fn file<R: Read>(
        &mut self,
        comps: &[&[u8]],
        entry: &mut tar::Entry<'_, R>,
        meta: &Meta,
        path: &str,
    ) -> Result<(), ApplyError> {
        let pfd = self.prepare(comps, path, false)?;
        let name = OsStr::from_bytes(comps[comps.len() - 1]);
        let fail = |op, err: io::Error| ApplyError::Entry {
            path: path.to_string(),
            op,
            err,
        };
        let fd = self
            .writable(pfd.as_fd(), |d| {
                openat(
                    d,
                    name,
                    OFlag::O_WRONLY
                        | OFlag::O_CREAT
                        | OFlag::O_EXCL
                        | OFlag::O_NOFOLLOW
                        | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o600),
                )
            })
            .map_err(|e| fail("create file", errno(e)))?;
        let mut file = File::from(fd);
        loop {
            let n = match entry.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(ApplyError::Read(e)),
            };
            file.write_all(&self.buf[..n])
                .map_err(|e| fail("write file", e))?;
        }
        self.set_xattrs(&pfd, comps[comps.len() - 1], meta, path);
        if self.options.preserve_ownership {
            let r = fchown(&file, id_uid(meta.uid), id_gid(meta.gid));
            self.chown_result(r, path)?;
        }
        fchmod(&file, Mode::from_bits_truncate(meta.mode))
            .map_err(|e| fail("set mode", errno(e)))?;
        let t = TimeSpec::new(meta.mtime, 0);
        futimens(&file, &t, &t).map_err(|e| fail("set mtime", errno(e)))?;
        Ok(())
    }

    fn symlink(
        &mut self,
        comps: &[&[u8]],
        target: &[u8],
        meta: &Meta,
        path: &str,
    ) -> Result<(), ApplyError> {
        let pfd = self.prepare(comps, path, false)?;
        let name = OsStr::from_bytes(comps[comps.len() - 1]);
        let target = OsStr::from_bytes(target);
        let fail = |op, e: Errno| ApplyError::Entry {
            path: path.to_string(),
            op,
            err: errno(e),
        };
        self.writable(pfd.as_fd(), |d| symlinkat(target, d, name))
            .map_err(|e| fail("create symlink", e))?;
        if self.options.preserve_ownership {
            let r = fchownat(
                &*pfd,
                name,
                id_uid(meta.uid),
                id_gid(meta.gid),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            );
            self.chown_result(r, path)?;
        }
        let t = TimeSpec::new(meta.mtime, 0);
        utimensat(&*pfd, name, &t, &t, UtimensatFlags::NoFollowSymlink)
            .map_err(|e| fail("set mtime", e))?;
        Ok(())
    }

    /// Returns false if the link was skipped (a link to itself).
    fn hard_link(
        &mut self,
        comps: &[&[u8]],
        target: &[u8],
        path: &str,
    ) -> Result<bool, ApplyError> {
        let tcomps = clean(target)?;
        let missing = || ApplyError::LinkTarget {
            path: path.to_string(),
            target: show(target),
        };
        let Some((&tname, tparent)) = tcomps.split_last() else {
            return Err(missing());
        };
        if tcomps == comps {
            return Ok(false);
        }
        let tdir = match open_dir_in_root(self.root.as_fd(), &join(tparent), self.options.resolver)
        {
            Ok(fd) => fd,
            Err(Errno::ENOENT) | Err(Errno::ENOTDIR) => return Err(missing()),
            Err(e) => {
                return Err(ApplyError::Entry {
                    path: path.to_string(),
                    op: "open hard link target directory",
                    err: errno(e),
                });
            }
        };
        let tn = OsStr::from_bytes(tname);
        if fstatat(&tdir, tn, AtFlags::AT_SYMLINK_NOFOLLOW).is_err() {
            return Err(missing());
        }
        let pfd = self.prepare(comps, path, false)?;
        let name = OsStr::from_bytes(comps[comps.len() - 1]);
        self.writable(pfd.as_fd(), |d| {
            linkat(&tdir, tn, d, name, AtFlags::empty())
        })
        .map_err(|e| match e {
            Errno::ENOENT => missing(),
            e => ApplyError::Entry {
                path: path.to_string(),
                op: "create hard link",
                err: errno(e),
            },
        })?;
        Ok(true)
    }

    /// Device nodes and FIFOs. Returns false if a device was skipped.
    fn special<R: Read>(
        &mut self,
        comps: &[&[u8]],
        entry: &mut tar::Entry<'_, R>,
        meta: &Meta,
        path: &str,
    ) -> Result<bool, ApplyError> {
        let kind = entry.header().entry_type();
        let bad = |err: io::Error| ApplyError::Entry {
            path: path.to_string(),
            op: "read header",
            err,
        };
        let (sflag, dev) = if kind.is_fifo() {
            (SFlag::S_IFIFO, 0)
        } else {
            let major = entry.header().device_major().map_err(bad)?.unwrap_or(0);
            let minor = entry.header().device_minor().map_err(bad)?.unwrap_or(0);
            let f = if kind.is_block_special() {
                SFlag::S_IFBLK
            } else {
                SFlag::S_IFCHR
            };
            (f, makedev(u64::from(major), u64::from(minor)))
        };
        let pfd = self.prepare(comps, path, false)?;
        let name = OsStr::from_bytes(comps[comps.len() - 1]);
        let perm = Mode::from_bits_truncate(meta.mode & 0o777);
        match self.writable(pfd.as_fd(), |d| mknodat(d, name, sflag, perm, dev)) {
            Ok(()) => {}
            Err(Errno::EPERM) if sflag != SFlag::S_IFIFO => {
                self.report.devices_skipped += 1;
                self.report.note(format!(
                    "skipped device node {path:?}: creating devices needs privilege"
                ));
                return Ok(false);
            }
            Err(e) => {
                return Err(ApplyError::Entry {
                    path: path.to_string(),
                    op: "create device node or FIFO",
                    err: errno(e),
                });
            }
        }
        if self.options.preserve_ownership {
            let r = fchownat(
                &*pfd,
                name,
                id_uid(meta.uid),
                id_gid(meta.gid),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            );
            self.chown_result(r, path)?;
        }
        let fail = |op, e: Errno| ApplyError::Entry {
            path: path.to_string(),
            op,
            err: errno(e),
        };
        fchmodat(
            &*pfd,
            name,
            Mode::from_bits_truncate(meta.mode),
            FchmodatFlags::FollowSymlink,
        )
        .map_err(|e| fail("set mode", e))?;
        let t = TimeSpec::new(meta.mtime, 0);
        utimensat(&*pfd, name, &t, &t, UtimensatFlags::NoFollowSymlink)
            .map_err(|e| fail("set mtime", e))?;
        Ok(true)
    }

    fn chown_result(&mut self, r: nix::Result<()>, path: &str) -> Result<(), ApplyError> {
        match r {
            Ok(()) => Ok(()),
            Err(Errno::EPERM) | Err(Errno::EINVAL) => {
                if self.report.chown_failed == 0 {
                    self.report.note(format!(
                        "ownership of {path:?} (and possibly others) left to the current user: its owner is not mapped here"
                    ));
                }
                self.report.chown_failed += 1;
                Ok(())
            }
            Err(e) => Err(ApplyError::Entry {
                path: path.to_string(),
                op: "set owner",
                err: errno(e),
            }),
        }
    }

    /// Sets extended attributes on `name` in `dir` without following a final symlink.
    fn set_xattrs(&mut self, dir: &OwnedFd, name: &[u8], meta: &Meta, path: &str) {
        for (key, value) in &meta.xattrs {
            // The host's SELinux labels mean nothing in the image.
            if key.as_slice() == b"security.selinux" {
                continue;
            }
            let target = proc_path(dir.as_fd(), Some(name));
            if let Err(e) = xattr::set(&target, OsStr::from_bytes(key), value) {
                if self.report.xattrs_failed == 0 {
                    self.report.note(format!(
                        "extended attribute {} of {path:?} not set: {e}",
                        show(key)
                    ));
                }
                self.report.xattrs_failed += 1;
            }
        }
    }

    /// Restores opened-up directories, then sets directory metadata deepest first.
    fn finish(&mut self) -> Result<(), ApplyError> {
        let restore = std::mem::take(&mut self.restore);
        for (fd, mode) in restore.into_iter().rev() {
            let _ = chmod_fd(fd.as_fd(), mode);
        }
        let mut dirs = std::mem::take(&mut self.dirs);
        dirs.sort_by_key(|d| {
            std::cmp::Reverse(
                d.key.iter().filter(|&&b| b == b'/').count() + usize::from(!d.key.is_empty()),
            )
        });
        for d in dirs {
            let path = show(&d.key);
            let fail = |op, e: Errno| ApplyError::Entry {
                path: path.clone(),
                op,
                err: errno(e),
            };
            if d.key.is_empty() {
                let root = open_dir_in_root(self.root.as_fd(), b"", self.options.resolver)
                    .map_err(|e| fail("open root", e))?;
                if self.options.preserve_ownership {
                    let r = fchownat(
                        &root,
                        "",
                        id_uid(d.meta.uid),
                        id_gid(d.meta.gid),
                        AtFlags::AT_EMPTY_PATH,
                    );
                    self.chown_result(r, "./")?;
                }
                chmod_fd(root.as_fd(), d.meta.mode).map_err(|e| fail("set mode", e))?;
                let t = TimeSpec::new(d.meta.mtime, 0);
                utimensat(
                    nix::fcntl::AT_FDCWD,
                    &proc_path(root.as_fd(), None),
                    &t,
                    &t,
                    UtimensatFlags::FollowSymlink,
                )
                .map_err(|e| fail("set mtime", e))?;
                continue;
            }
            let comps: Vec<&[u8]> = d.key.split(|&b| b == b'/').collect();
            let (&name, parent) = match comps.split_last() {
                Some(x) => x,
                None => continue,
            };
            self.parent_cache = None;
            let Some(pfd) = self.parent_dir(parent, false, &path)? else {
                continue;
            };
            let n = OsStr::from_bytes(name);
            // Skip it if a later entry of this layer replaced it with something else.
            match fstatat(&*pfd, n, AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(st)
                    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR => {}
                _ => continue,
            }
            let meta = d.meta;
            self.set_xattrs(&pfd, name, &meta, &path);
            if self.options.preserve_ownership {
                let r = fchownat(
                    &*pfd,
                    n,
                    id_uid(meta.uid),
                    id_gid(meta.gid),
                    AtFlags::AT_SYMLINK_NOFOLLOW,
                );
                self.chown_result(r, &path)?;
            }
            fchmodat(
                &*pfd,
                n,
                Mode::from_bits_truncate(meta.mode),
                FchmodatFlags::FollowSymlink,
            )
            .map_err(|e| fail("set mode", e))?;
            let t = TimeSpec::new(meta.mtime, 0);
            utimensat(&*pfd, n, &t, &t, UtimensatFlags::NoFollowSymlink)
                .map_err(|e| fail("set mtime", e))?;
        }
        self.parent_cache = None;
        Ok(())
    }
}

/// A numeric header field; an empty one (all NULs or spaces) reads as 0, as Go's
/// archive/tar (which wrote most layers) reads it.
fn numeric(parsed: io::Result<u64>, raw: &[u8]) -> io::Result<u64> {
    match parsed {
        Ok(v) => Ok(v),
        Err(_) if raw.iter().all(|&b| b == 0 || b == b' ') => Ok(0),
        Err(e) => Err(e),
    }
}

fn id_uid(id: u64) -> Option<Uid> {
    u32::try_from(id).ok().map(Uid::from_raw)
}

fn id_gid(id: u64) -> Option<Gid> {
    u32::try_from(id).ok().map(Gid::from_raw)
}

/// chmod through `/proc/self/fd/N`, which works on `O_PATH` descriptors.
fn chmod_fd(fd: BorrowedFd<'_>, mode: u32) -> nix::Result<()> {
    fchmodat(
        nix::fcntl::AT_FDCWD,
        &proc_path(fd, None),
        Mode::from_bits_truncate(mode),
        FchmodatFlags::FollowSymlink,
    )
}

/// Removes `name` in `parent` and everything below it, never following symlinks. Directories
/// we own that lack owner permissions are opened up first (they are going away anyway).
fn remove_tree(parent: BorrowedFd<'_>, name: &[u8], depth: usize) -> nix::Result<()> {
    // Deeper than any real tree (PATH_MAX allows ~2048 levels): refuse instead of recursing on.
    if depth > 4096 {
        return Err(Errno::ELOOP);
    }
    let n = OsStr::from_bytes(name);
    let st = fstatat(parent, n, AtFlags::AT_SYMLINK_NOFOLLOW)?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFDIR {
        return unlinkat(parent, n, UnlinkatFlags::NoRemoveDir);
    }
    if st.st_mode & 0o700 != 0o700 && st.st_uid == nix::unistd::geteuid().as_raw() {
        fchmodat(
            parent,
            n,
            Mode::from_bits_truncate((st.st_mode & 0o7777) | 0o700),
            FchmodatFlags::FollowSymlink,
        )?;
    }
    let dir = openat(
        parent,
        n,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    for child in list_dir(dir.as_fd())? {
        remove_tree(dir.as_fd(), &child, depth + 1)?;
    }
    unlinkat(parent, n, UnlinkatFlags::RemoveDir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    /// One tar entry to write; the name is written raw, so tests can build hostile names.
    struct E {
        name: &'static [u8],
        kind: tar::EntryType,
        data: &'static [u8],
        mode: u32,
        link: &'static [u8],
        uid: u64,
    }

    fn file(name: &'static [u8], data: &'static [u8]) -> E {
        E {
            name,
            kind: tar::EntryType::Regular,
            data,
            mode: 0o644,
            link: b"",
            uid: 0,
        }
    }
    fn dir(name: &'static [u8], mode: u32) -> E {
        E {
            name,
            kind: tar::EntryType::Directory,
            data: b"",
            mode,
            link: b"",
            uid: 0,
        }
    }
    fn link(name: &'static [u8], kind: tar::EntryType, target: &'static [u8]) -> E {
        E {
            name,
            kind,
            data: b"",
            mode: 0o777,
            link: target,
            uid: 0,
        }
    }

    fn tar_of(entries: &[E]) -> Vec<u8> {
        let mut out = Vec::new();
        for e in entries {
            let mut h = tar::Header::new_gnu();
            let gnu = h.as_gnu_mut().expect("gnu");
            gnu.name[..e.name.len()].copy_from_slice(e.name);
            gnu.linkname[..e.link.len()].copy_from_slice(e.link);
            h.set_entry_type(e.kind);
            h.set_size(e.data.len() as u64);
            h.set_mode(e.mode);
            h.set_uid(e.uid);
            h.set_gid(e.uid);
            h.set_mtime(1_000_000_000);
            if e.kind == tar::EntryType::Char {
                h.set_device_major(1).expect("major");
                h.set_device_minor(3).expect("minor");
            }
            h.set_cksum();
            out.extend_from_slice(h.as_bytes());
            out.extend_from_slice(e.data);
            out.resize(out.len().div_ceil(512) * 512, 0);
        }
        out.resize(out.len() + 1024, 0);
        out
    }

    fn apply(entries: &[E], dest: &Path) -> Result<ApplyReport, ApplyError> {
        apply_layer(&tar_of(entries)[..], dest)
    }

    fn names(p: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(p)
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    fn euid() -> u32 {
        nix::unistd::geteuid().as_raw()
    }

    #[test]
    fn test_entries_of_every_kind() {
        let t = tempfile::tempdir().expect("tempdir");
        let d = t.path();
        let report = apply(
            &[
                dir(b"etc/", 0o755),
                E {
                    mode: 0o600,
                    ..file(b"etc/secret", b"s3")
                },
                file(b"./usr/bin/tool", b"#!/bin/sh\n"),
                link(b"bin", tar::EntryType::Symlink, b"usr/bin"),
                link(b"usr/bin/tool2", tar::EntryType::Link, b"usr/bin/tool"),
                E {
                    kind: tar::EntryType::Fifo,
                    ..file(b"run/fifo", b"")
                },
                dir(b"ro/", 0o555),
                file(b"ro/inside", b"x"),
            ],
            d,
        )
        .expect("apply");
        assert_eq!(report.entries, 8);
        assert_eq!(std::fs::read(d.join("etc/secret")).expect("read"), b"s3");
        let m = std::fs::metadata(d.join("etc/secret")).expect("stat");
        assert_eq!(m.permissions().mode() & 0o7777, 0o600);
        assert_eq!(m.mtime(), 1_000_000_000);
        assert_eq!(
            std::fs::read_link(d.join("bin")).expect("link"),
            Path::new("usr/bin")
        );
        let a = std::fs::metadata(d.join("usr/bin/tool")).expect("stat");
        let b = std::fs::metadata(d.join("usr/bin/tool2")).expect("stat");
        assert_eq!(
            (a.ino(), a.nlink()),
            (b.ino(), 2),
            "hard link shares the inode"
        );
        use std::os::unix::fs::FileTypeExt;
        assert!(
            std::fs::symlink_metadata(d.join("run/fifo"))
                .expect("stat")
                .file_type()
                .is_fifo()
        );
        // A read-only directory was filled, then got its mode; implicit parents are 0755.
        assert_eq!(
            std::fs::metadata(d.join("ro"))
                .expect("stat")
                .permissions()
                .mode()
                & 0o777,
            0o555
        );
        assert_eq!(std::fs::read(d.join("ro/inside")).expect("read"), b"x");
        assert_eq!(
            std::fs::metadata(d.join("usr"))
                .expect("stat")
                .permissions()
                .mode()
                & 0o777,
            0o755
        );
        assert_eq!(
            std::fs::metadata(d.join("etc")).expect("stat").mtime(),
            1_000_000_000
        );
        let _ = std::fs::set_permissions(d.join("ro"), std::fs::Permissions::from_mode(0o755));
    }

    #[test]
    fn test_whiteouts_and_opaque_directories() {
        let t = tempfile::tempdir().expect("tempdir");
        let d = t.path();
        apply(
            &[
                file(b"a/x", b"1"),
                file(b"a/y", b"2"),
                file(b"d/old", b"3"),
                file(b"d/sub/old2", b"4"),
                file(b"d/sub/keep-not", b"5"),
                file(b"e/old", b"6"),
                file(b"keep", b"7"),
            ],
            d,
        )
        .expect("layer 1");
        let r = apply(
            &[
                file(b"a/.wh.x", b""),
                // Listed before the opaque marker: must survive it.
                file(b"e/new-before", b"n"),
                dir(b"d/", 0o755),
                file(b"d/.wh..wh..opq", b""),
                file(b"d/new", b"8"),
                file(b"d/sub/new2", b"9"),
                file(b"e/.wh..wh..opq", b""),
                file(b"e/new-after", b"m"),
                // Whiteout of something that never existed: harmless.
                file(b".wh.nothing", b""),
            ],
            d,
        )
        .expect("layer 2");
        assert_eq!(r.whiteouts, 2);
        assert_eq!(r.opaque_dirs, 2);
        assert_eq!(names(&d.join("a")), vec!["y"]);
        assert_eq!(names(&d.join("d")), vec!["new", "sub"]);
        assert_eq!(
            names(&d.join("d/sub")),
            vec!["new2"],
            "opaque reaches lower content in subdirectories"
        );
        assert_eq!(names(&d.join("e")), vec!["new-after", "new-before"]);
        assert_eq!(names(d), vec!["a", "d", "e", "keep"]);
    }

    #[test]
    fn test_whiteout_never_deletes_its_own_layer() {
        let t = tempfile::tempdir().expect("tempdir");
        let d = t.path();
        apply(&[file(b"f", b"old")], d).expect("layer 1");
        apply(&[file(b"f", b"new"), file(b".wh.f", b"")], d).expect("layer 2");
        assert_eq!(std::fs::read(d.join("f")).expect("read"), b"new");
        // The usual order (whiteout first) deletes the lower file, then recreates it.
        apply(&[file(b".wh.f", b""), file(b"f", b"newer")], d).expect("layer 3");
        assert_eq!(std::fs::read(d.join("f")).expect("read"), b"newer");
    }

    #[test]
    fn test_replacing_kinds() {
        let t = tempfile::tempdir().expect("tempdir");
        let d = t.path();
        apply(
            &[
                file(b"x/deep/f", b"1"),
                file(b"y", b"2"),
                link(b"z", tar::EntryType::Symlink, b"/etc"),
            ],
            d,
        )
        .expect("layer 1");
        // A file in the way of an implicit parent is an error, not silently replaced.
        let err = apply(&[file(b"y/now-a-dir", b"3")], d).expect_err("file in the way");
        assert!(err.to_string().contains("y/now-a-dir"), "{err}");
        apply(
            &[
                file(b"x", b"now a file"),
                dir(b"y/", 0o755),
                file(b"y/now-a-dir", b"3"),
                dir(b"z/", 0o755),
            ],
            d,
        )
        .expect("layer 2");
        assert_eq!(std::fs::read(d.join("x")).expect("read"), b"now a file");
        assert_eq!(std::fs::read(d.join("y/now-a-dir")).expect("read"), b"3");
        assert!(
            std::fs::symlink_metadata(d.join("z"))
                .expect("stat")
                .is_dir(),
            "symlink replaced, not followed"
        );
    }

    fn escapes(resolver: Resolver) {
        let outer = tempfile::tempdir().expect("tempdir");
        let d = outer.path().join("root");
        std::fs::create_dir(&d).expect("mkdir");
        let opts = ApplyOptions {
            resolver,
            ..ApplyOptions::default()
        };
        let run = |entries: &[E]| apply_layer_with(&tar_of(entries)[..], &d, &opts);
        let err = run(&[file(b"../evil", b"x")]).expect_err("dot-dot");
        assert!(matches!(err, ApplyError::Escape { .. }), "{err}");
        let err = run(&[file(b"a/../../evil", b"x")]).expect_err("dot-dot");
        assert!(matches!(err, ApplyError::Escape { .. }), "{err}");
        // Absolute names land inside the root.
        run(&[file(b"/abs/file", b"x")]).expect("absolute");
        assert!(d.join("abs/file").is_file());
        // Symlinks planted earlier resolve inside the root, in this layer or a later one.
        run(&[
            link(b"up", tar::EntryType::Symlink, b"../../../../.."),
            link(b"slash", tar::EntryType::Symlink, b"/"),
            file(b"up/evil1", b"x"),
        ])
        .expect("symlinked parent");
        run(&[file(b"slash/evil2", b"x"), file(b"up/tmp/evil3", b"x")])
            .expect("symlinked parent, next layer");
        assert!(
            d.join("evil1").is_file() && d.join("evil2").is_file() && d.join("tmp/evil3").is_file()
        );
        assert_eq!(
            names(outer.path()),
            vec!["root"],
            "nothing was written outside the root"
        );
        // Hard links cannot reach outside either.
        let err =
            run(&[link(b"pw", tar::EntryType::Link, b"../../etc/passwd")]).expect_err("link out");
        assert!(matches!(err, ApplyError::Escape { .. }), "{err}");
        let err = run(&[link(b"pw", tar::EntryType::Link, b"/etc/passwd")])
            .expect_err("no such file in root");
        assert!(matches!(err, ApplyError::LinkTarget { .. }), "{err}");
        let err = run(&[link(b"pw2", tar::EntryType::Link, b"slash/etc/passwd")])
            .expect_err("through symlink");
        assert!(matches!(err, ApplyError::LinkTarget { .. }), "{err}");
        // A whiteout cannot delete outside the root through a symlink either.
        std::fs::write(outer.path().join("victim"), b"v").expect("write");
        run(&[file(b"up/.wh.victim", b"")]).expect("whiteout through symlink");
        assert!(outer.path().join("victim").exists());
        // The final component is never followed: a file over a symlink replaces the link.
        run(&[link(b"trap", tar::EntryType::Symlink, b"../victim")]).expect("link");
        run(&[file(b"trap", b"replaced")]).expect("replace link");
        assert_eq!(
            std::fs::read(outer.path().join("victim")).expect("read"),
            b"v"
        );
    }

    #[test]
    fn test_path_escapes_refused_kernel_resolver() {
        escapes(Resolver::Auto);
    }

    #[test]
    fn test_path_escapes_refused_user_space_resolver() {
        escapes(Resolver::UserSpace);
    }

    #[test]
    fn test_compressed_layers() {
        let layer = tar_of(&[file(b"hello", b"world")]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&layer).expect("gzip");
        let gz = gz.finish().expect("gzip");
        let zst = zstd::stream::encode_all(&layer[..], 3).expect("zstd");
        for (what, bytes) in [("plain", layer.clone()), ("gzip", gz), ("zstd", zst)] {
            let t = tempfile::tempdir().expect("tempdir");
            apply_layer(&bytes[..], t.path()).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(
                std::fs::read(t.path().join("hello")).expect("read"),
                b"world",
                "{what}"
            );
        }
        let t = tempfile::tempdir().expect("tempdir");
        let xz = [0xfd, b'7', b'z', b'X', b'Z', 0, 1, 2];
        assert!(matches!(
            apply_layer(&xz[..], t.path()),
            Err(ApplyError::Compression("xz"))
        ));
        let err = apply_layer(&[0x1f, 0x8b, 0, 0, 0][..], t.path()).expect_err("truncated gzip");
        assert!(matches!(err, ApplyError::Read(_)), "{err}");
        // Not a tar: a checksum error, not a panic.
        let err = apply_layer(&[7u8; 2048][..], t.path()).expect_err("garbage");
        assert!(matches!(err, ApplyError::Read(_)), "{err}");
    }

    #[test]
    fn test_ownership_and_devices() {
        let t = tempfile::tempdir().expect("tempdir");
        let d = t.path();
        let r = apply(
            &[
                E {
                    uid: 4321,
                    ..file(b"owned", b"x")
                },
                E {
                    kind: tar::EntryType::Char,
                    mode: 0o666,
                    ..file(b"dev/null", b"")
                },
            ],
            d,
        )
        .expect("apply");
        let m = std::fs::metadata(d.join("owned")).expect("stat");
        if r.chown_failed == 0 {
            assert_eq!((m.uid(), m.gid()), (4321, 4321));
        } else {
            assert_eq!(m.uid(), euid(), "unmapped owner: the file stays ours");
            assert!(
                r.notes.iter().any(|n| n.contains("ownership")),
                "{:?}",
                r.notes
            );
        }
        if r.devices_skipped == 1 {
            assert!(!d.join("dev/null").exists());
            assert!(
                r.notes.iter().any(|n| n.contains("device")),
                "{:?}",
                r.notes
            );
        } else {
            use std::os::unix::fs::FileTypeExt;
            let m = std::fs::symlink_metadata(d.join("dev/null")).expect("stat");
            assert!(m.file_type().is_char_device());
            assert_eq!(m.rdev(), makedev(1, 3));
        }
    }

    #[test]
    fn test_xattrs_when_the_filesystem_has_them() {
        let t = tempfile::tempdir().expect("tempdir");
        let probe = t.path().join("probe");
        std::fs::write(&probe, b"").expect("write");
        if xattr::set(&probe, "user.probe", b"1").is_err() {
            // CI's TMPDIR is on the root filesystem (ext4 there; tmpfs too from Linux 6.6),
            // which has them: there this is a failure.
            crate::testutil::skip(&format!(
                "{} has no user xattrs (tmpfs before Linux 6.6?): set TMPDIR to a directory \
                 on a filesystem with user xattrs",
                t.path().display()
            ));
            return;
        }
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_size(1);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        // Numeric fields left empty, as some writers do: read as 0.
        b.append_pax_extensions([("SCHILY.xattr.user.color", &b"blue"[..])])
            .expect("pax");
        b.append_data(&mut h, "painted", &b"x"[..]).expect("append");
        let bytes = b.into_inner().expect("tar");
        let d = t.path().join("root");
        std::fs::create_dir(&d).expect("mkdir");
        let r = apply_layer(&bytes[..], &d).expect("apply");
        assert_eq!(r.xattrs_failed, 0, "{:?}", r.notes);
        assert_eq!(
            xattr::get(d.join("painted"), "user.color").expect("get"),
            Some(b"blue".to_vec())
        );
    }

    #[test]
    fn test_writing_into_read_only_lower_directory() {
        let t = tempfile::tempdir().expect("tempdir");
        let d = t.path();
        apply(&[dir(b"ro/", 0o555), file(b"ro/a", b"1")], d).expect("layer 1");
        apply(&[file(b"ro/b", b"2"), file(b"ro/.wh.a", b"")], d).expect("layer 2");
        assert_eq!(names(&d.join("ro")), vec!["b"]);
        assert_eq!(
            std::fs::metadata(d.join("ro"))
                .expect("stat")
                .permissions()
                .mode()
                & 0o777,
            0o555,
            "mode restored"
        );
        // Deleting a read-only tree works too.
        apply(&[dir(b"ro/sub/", 0o500), file(b"ro/sub/f", b"x")], d).expect("layer 3");
        apply(&[file(b".wh.ro", b"")], d).expect("layer 4");
        assert!(!d.join("ro").exists());
    }

    #[test]
    fn test_root_entry_sets_root_metadata() {
        let t = tempfile::tempdir().expect("tempdir");
        apply(&[dir(b"./", 0o750), file(b"f", b"x")], t.path()).expect("apply");
        let m = std::fs::metadata(t.path()).expect("stat");
        assert_eq!(m.permissions().mode() & 0o777, 0o750);
        assert_eq!(m.mtime(), 1_000_000_000);
    }

    #[test]
    fn test_missing_destination() {
        let err =
            apply_layer(&tar_of(&[])[..], Path::new("/nonexistent/dest")).expect_err("no dest");
        assert!(err.to_string().contains("/nonexistent/dest"), "{err}");
    }
}
