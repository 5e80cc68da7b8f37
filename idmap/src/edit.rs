//! Editing /etc/subuid and /etc/subgid for `sifr config fakeroot --add|--remove|--enable|
//! --disable USER`, safely.
//!
//! Safety, step by step:
//! 1. **Lock** each file with shadow's own convention (`lib/commonio.c`): a file
//!    `FILE.lock` holding the locker's pid, created atomically with link(2). useradd,
//!    usermod and newusers take this same lock, so sifr and shadow's tools exclude each
//!    other. A lock whose pid no longer runs is stale and is removed, as shadow does.
//!    (A persistent flock(2) file named `FILE.lock` is not an option: shadow would find
//!    it, fail to read a pid from it and refuse to edit.) The files are locked in the
//!    order subuid, subgid, as useradd does. shadow's global `/etc/.pwd.lock` (lckpwdf)
//!    is not taken: it guards passwd/shadow, and the per-file lock is what every writer of
//!    these two files takes.
//! 2. **Re-read** the files under the lock.
//! 3. **Write** the new contents to a temporary file in the same directory, give it the old
//!    file's mode and owner, fsync it, rename it over the old file, then fsync the
//!    directory. Readers see either the old or the new file, never a mix.
//! 4. Every line the edit does not touch is kept byte for byte (comments, blank lines,
//!    malformed lines, other users, line endings, a missing final newline).
//!
//! New entries are written as `UID:START:65536`, as Apptainer does. `--add` allocates the
//! same block in both files by scanning downward from 2^32−131072 to 65536 in steps of
//! 65536 and taking the first block that overlaps no entry (enabled or disabled) of either
//! file and no uid/gid of a host account.

use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::hostids::{HostIds, HostIdsError};
use crate::select::FAKEROOT_IDS;
use crate::subid::{LineKind, SubidEntry, SubidError, SubidFile};
use crate::user::UserRef;

/// Highest block start the allocator tries (2^32 − 131072), as Apptainer.
pub const ALLOC_TOP: u64 = (1u64 << 32) - 2 * FAKEROOT_IDS as u64;
/// Lowest block start the allocator tries.
pub const ALLOC_BOTTOM: u64 = FAKEROOT_IDS as u64;

/// How long to wait for another editor's lock (shadow waits up to 15 s too).
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(15);

/// The edit to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FakerootEdit {
    /// Give the user a 65536-id block in both files (no-op when a valid entry exists).
    Add,
    /// Delete every entry of the user, enabled or disabled.
    Remove,
    /// Remove the `!` from the user's disabled entries.
    Enable,
    /// Prefix the user's entries with `!`.
    Disable,
}

/// The files an edit touches. [`EditPaths::system`] is the real set; tests use their own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EditPaths {
    /// The subordinate uid file (usually /etc/subuid).
    pub subuid: PathBuf,
    /// The subordinate gid file (usually /etc/subgid).
    pub subgid: PathBuf,
    /// Read only: uids the allocator avoids.
    pub passwd: PathBuf,
    /// Read only: gids the allocator avoids.
    pub group: PathBuf,
}

impl EditPaths {
    /// /etc/subuid, /etc/subgid, /etc/passwd, /etc/group.
    pub fn system() -> EditPaths {
        EditPaths {
            subuid: PathBuf::from("/etc/subuid"),
            subgid: PathBuf::from("/etc/subgid"),
            passwd: PathBuf::from("/etc/passwd"),
            group: PathBuf::from("/etc/group"),
        }
    }
}

/// What the edit did to one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A new line was appended.
    Added {
        /// The new line, without its newline.
        line: String,
    },
    /// A valid enabled entry already exists at this line: nothing done.
    AlreadyPresent {
        /// 1-based line number of the existing entry.
        line: usize,
    },
    /// These lines were deleted.
    Removed {
        /// 1-based line numbers in the old file.
        lines: Vec<usize>,
    },
    /// These lines were prefixed with `!`.
    Disabled {
        /// 1-based line numbers.
        lines: Vec<usize>,
    },
    /// The `!` was removed from these lines.
    Enabled {
        /// 1-based line numbers.
        lines: Vec<usize>,
    },
    /// The file has no entry for the user: nothing done.
    NoEntry,
    /// Every entry was already in the requested state: nothing done.
    Unchanged,
}

/// The outcome for one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileChange {
    /// The file.
    pub path: PathBuf,
    /// What happened to it.
    pub change: Change,
}

impl FileChange {
    /// One line for the user, e.g. "added `1000:4294836224:65536` to /etc/subuid".
    pub fn message(&self, user: &UserRef) -> String {
        let p = self.path.display();
        let lines = |v: &[usize]| {
            v.iter()
                .map(|l| l.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        match &self.change {
            Change::Added { line } => format!("added `{line}` for user {user} to {p}"),
            Change::AlreadyPresent { line } => {
                format!("user {user} already has a valid entry in {p} (line {line}): nothing to do")
            }
            Change::Removed { lines: l } => {
                format!("removed user {user} from {p} (line {})", lines(l))
            }
            Change::Disabled { lines: l } => {
                format!("disabled user {user} in {p} (line {})", lines(l))
            }
            Change::Enabled { lines: l } => {
                format!("enabled user {user} in {p} (line {})", lines(l))
            }
            Change::NoEntry => format!("user {user} has no entry in {p}: nothing to do"),
            Change::Unchanged => format!("user {user} is already in that state in {p}"),
        }
    }

    /// True when the file was rewritten.
    pub fn changed(&self) -> bool {
        matches!(
            self.change,
            Change::Added { .. }
                | Change::Removed { .. }
                | Change::Disabled { .. }
                | Change::Enabled { .. }
        )
    }
}

/// Editing failed. Errors found before writing leave both files untouched; a `Write`
/// error for the subgid file means the subuid file was already updated.
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    /// Another program holds the lock.
    #[error(
        "{} is locked by process {pid} ({}): another program is editing it; try again later",
        path.display(),
        lock.display()
    )]
    Locked {
        path: PathBuf,
        lock: PathBuf,
        pid: i32,
    },
    /// A lock file without a valid pid (left by a crashed editor, or not shadow's).
    #[error(
        "lock file {} holds no valid process id; if no other program is editing {}, remove the lock file and retry",
        lock.display(),
        path.display()
    )]
    BadLock { path: PathBuf, lock: PathBuf },
    /// Taking the lock failed.
    #[error("cannot lock {} (via {}): {source}", path.display(), lock.display())]
    Lock {
        path: PathBuf,
        lock: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file could not be read.
    #[error(transparent)]
    Read(#[from] SubidError),
    /// passwd/group could not be read.
    #[error(transparent)]
    HostIds(#[from] HostIdsError),
    /// A subid file is a symbolic link (rename would replace the link, not its target).
    #[error("{} is a symbolic link; edit the file it points to ({}) instead", path.display(), target.display())]
    Symlink { path: PathBuf, target: PathBuf },
    /// Writing the new file failed at `step`.
    #[error("cannot update {} ({step}): {source}", path.display())]
    Write {
        path: PathBuf,
        step: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The user has a disabled entry big enough for fakeroot: `--add` will not add another.
    #[error(
        "user {user} has a disabled fakeroot entry in {} (line {line}): run `sifr config fakeroot --enable {name}` instead of --add",
        path.display()
    )]
    AddDisabled {
        path: PathBuf,
        line: usize,
        user: UserRef,
        name: String,
    },
    /// Every 65536-id block is taken.
    #[error(
        "no free block of {FAKEROOT_IDS} ids between {ALLOC_BOTTOM} and {} in {} and {}: remove unused entries first",
        ALLOC_TOP + FAKEROOT_IDS as u64,
        subuid.display(),
        subgid.display()
    )]
    NoFreeBlock { subuid: PathBuf, subgid: PathBuf },
}

/// Applies `edit` for `user` to both subordinate-id files, under their locks.
/// Returns what happened to /etc/subuid then /etc/subgid.
pub fn edit_fakeroot(
    paths: &EditPaths,
    edit: FakerootEdit,
    user: &UserRef,
) -> Result<[FileChange; 2], EditError> {
    refuse_symlink(&paths.subuid)?;
    refuse_symlink(&paths.subgid)?;
    let _uid_lock = ShadowLock::acquire(&paths.subuid, LOCK_TIMEOUT)?;
    let _gid_lock = ShadowLock::acquire(&paths.subgid, LOCK_TIMEOUT)?;

    let mut uid_file = read_or_empty(&paths.subuid)?;
    let mut gid_file = read_or_empty(&paths.subgid)?;

    let (uid_change, gid_change) = match edit {
        FakerootEdit::Add => {
            let uid_valid = valid_entry(&uid_file, user, &paths.subuid)?;
            let gid_valid = valid_entry(&gid_file, user, &paths.subgid)?;
            let block = if uid_valid.is_none() || gid_valid.is_none() {
                let taken: Vec<(u64, u64)> = uid_file
                    .entries()
                    .chain(gid_file.entries())
                    .map(|e| (u64::from(e.start), e.end()))
                    .collect();
                let uids = HostIds::from_passwd(&paths.passwd)?;
                let gids = HostIds::from_group(&paths.group)?;
                Some(allocate_block(&taken, &[&uids, &gids]).ok_or_else(|| {
                    EditError::NoFreeBlock {
                        subuid: paths.subuid.clone(),
                        subgid: paths.subgid.clone(),
                    }
                })?)
            } else {
                None
            };
            let add = |file: &mut SubidFile, valid: Option<usize>| match (valid, block) {
                (Some(line), _) => Change::AlreadyPresent { line },
                (None, Some(start)) => {
                    let line = format!("{}:{start}:{FAKEROOT_IDS}", user.uid);
                    append_line(file, &line);
                    Change::Added { line }
                }
                (None, None) => Change::Unchanged,
            };
            (add(&mut uid_file, uid_valid), add(&mut gid_file, gid_valid))
        }
        FakerootEdit::Remove => (remove(&mut uid_file, user), remove(&mut gid_file, user)),
        FakerootEdit::Enable => (
            set_disabled(&mut uid_file, user, false),
            set_disabled(&mut gid_file, user, false),
        ),
        FakerootEdit::Disable => (
            set_disabled(&mut uid_file, user, true),
            set_disabled(&mut gid_file, user, true),
        ),
    };

    let uid_change = FileChange {
        path: paths.subuid.clone(),
        change: uid_change,
    };
    let gid_change = FileChange {
        path: paths.subgid.clone(),
        change: gid_change,
    };
    if uid_change.changed() {
        replace_file(&paths.subuid, &uid_file.to_bytes())?;
    }
    if gid_change.changed() {
        replace_file(&paths.subgid, &gid_file.to_bytes())?;
    }
    Ok([uid_change, gid_change])
}

/// The first free block start, scanning down from [`ALLOC_TOP`] to [`ALLOC_BOTTOM`]:
/// `[start, start+65536)` must overlap no `taken` range `[start, end)` and no host id.
pub fn allocate_block(taken: &[(u64, u64)], host: &[&HostIds]) -> Option<u32> {
    let size = u64::from(FAKEROOT_IDS);
    let mut start = ALLOC_TOP;
    while start >= ALLOC_BOTTOM {
        let end = start + size;
        let free = taken.iter().all(|&(s, e)| e <= start || end <= s)
            && host.iter().all(|h| h.first_in(start, end).is_none());
        if free {
            return u32::try_from(start).ok();
        }
        start -= size;
    }
    None
}

fn refuse_symlink(path: &Path) -> Result<(), EditError> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => Err(EditError::Symlink {
            path: path.to_owned(),
            target: std::fs::read_link(path).unwrap_or_default(),
        }),
        _ => Ok(()),
    }
}

/// Reads `path`; a missing file is empty (`--add` creates it, other edits leave it absent).
fn read_or_empty(path: &Path) -> Result<SubidFile, EditError> {
    match SubidFile::read(path) {
        Ok(f) => Ok(f),
        Err(SubidError::NotFound { .. }) => Ok(SubidFile::empty(path)),
        Err(e) => Err(e.into()),
    }
}

/// The line of the user's first enabled entry with at least 65536 ids, if any. A disabled
/// entry of that size (and no enabled one) is an error: --add must not bypass --disable.
fn valid_entry(file: &SubidFile, user: &UserRef, path: &Path) -> Result<Option<usize>, EditError> {
    let big = |e: &&SubidEntry| e.count >= FAKEROOT_IDS;
    if let Some(e) = file.entries_for(user).filter(big).find(|e| !e.disabled) {
        return Ok(Some(e.line));
    }
    if let Some(e) = file.entries_for(user).filter(big).find(|e| e.disabled) {
        return Err(EditError::AddDisabled {
            path: path.to_owned(),
            line: e.line,
            user: user.clone(),
            name: user.display_name(),
        });
    }
    Ok(None)
}

/// Appends `text` as a new line, first ending an unterminated last line.
fn append_line(file: &mut SubidFile, text: &str) {
    if let Some(last) = file.lines.last_mut()
        && !last.raw.ends_with(b"\n")
    {
        last.raw.push(b'\n');
    }
    let raw = format!("{text}\n").into_bytes();
    let kind = SubidFile::parse(Path::new(""), &raw)
        .lines
        .pop()
        .map(|l| l.kind)
        .unwrap_or(LineKind::Blank);
    file.lines.push(crate::subid::Line { raw, kind });
}

/// Deletes every entry of `user`.
fn remove(file: &mut SubidFile, user: &UserRef) -> Change {
    let mut removed = Vec::new();
    let mut n = 0;
    file.lines.retain(|l| {
        n += 1;
        let mine = matches!(&l.kind, LineKind::Entry(e) if user.is_owner(&e.owner));
        if mine {
            removed.push(n);
        }
        !mine
    });
    if removed.is_empty() {
        Change::NoEntry
    } else {
        Change::Removed { lines: removed }
    }
}

/// Adds (`disable`) or strips the `!` of every entry of `user`; other bytes of the line
/// stay as they were.
fn set_disabled(file: &mut SubidFile, user: &UserRef, disable: bool) -> Change {
    let mut any = false;
    let mut changed = Vec::new();
    for (i, line) in file.lines.iter_mut().enumerate() {
        let LineKind::Entry(e) = &mut line.kind else {
            continue;
        };
        if !user.is_owner(&e.owner) {
            continue;
        }
        any = true;
        if e.disabled == disable {
            continue;
        }
        if disable {
            line.raw.insert(0, b'!');
        } else if line.raw.first() == Some(&b'!') {
            line.raw.remove(0);
        } else {
            continue;
        }
        e.disabled = disable;
        changed.push(i + 1);
    }
    match (any, changed.is_empty(), disable) {
        (false, _, _) => Change::NoEntry,
        (true, true, _) => Change::Unchanged,
        (true, false, true) => Change::Disabled { lines: changed },
        (true, false, false) => Change::Enabled { lines: changed },
    }
}

/// Atomically replaces `path` with `contents`, keeping its mode and owner (0644 and the
/// caller's ids for a new file).
fn replace_file(path: &Path, contents: &[u8]) -> Result<(), EditError> {
    let werr = |step: &'static str| {
        move |source: std::io::Error| EditError::Write {
            path: path.to_owned(),
            step,
            source,
        }
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let old = match std::fs::metadata(path) {
        Ok(m) => Some(m),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(werr("stat")(e)),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}.sifr-"))
        .tempfile_in(&dir)
        .map_err(werr("create a temporary file"))?;
    tmp.write_all(contents)
        .map_err(werr("write the temporary file"))?;
    let mode = old.as_ref().map_or(0o644, |m| m.mode() & 0o7777);
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(werr("set the mode"))?;
    }
    if let Some(m) = &old {
        let cur = tmp
            .as_file()
            .metadata()
            .map_err(werr("stat the temporary file"))?;
        if cur.uid() != m.uid() || cur.gid() != m.gid() {
            std::os::unix::fs::fchown(tmp.as_file(), Some(m.uid()), Some(m.gid()))
                .map_err(werr("set the owner"))?;
        }
    }
    tmp.as_file().sync_all().map_err(werr("fsync"))?;
    tmp.persist(path)
        .map_err(|e| werr("rename over the old file")(e.error))?;
    std::fs::File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(werr("fsync the directory"))?;
    Ok(())
}

/// shadow's per-file lock: `FILE.lock`, a hard link to a file holding the owner's pid.
/// Released (unlinked) on drop. [`edit_fakeroot`] takes it; it is public for other code
/// that must exclude shadow's tools from a file while it works on it.
#[derive(Debug)]
pub struct ShadowLock {
    lock: PathBuf,
}

/// Distinguishes the link sources of threads of one process.
static LOCK_SEQ: AtomicU64 = AtomicU64::new(0);

impl ShadowLock {
    /// Takes the lock on `path`, waiting up to `timeout` for another holder. A lock whose
    /// pid no longer runs is removed and taken.
    pub fn acquire(path: &Path, timeout: Duration) -> Result<ShadowLock, EditError> {
        let lock = with_suffix(path, ".lock");
        let deadline = Instant::now() + timeout;
        loop {
            match try_lock(path, &lock)? {
                None => return Ok(ShadowLock { lock }),
                Some(pid) if Instant::now() >= deadline => {
                    return Err(EditError::Locked {
                        path: path.to_owned(),
                        lock,
                        pid,
                    });
                }
                Some(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}

impl Drop for ShadowLock {
    fn drop(&mut self) {
        // Nothing useful can be done if unlinking fails; a stale lock is detected by pid.
        let _ = std::fs::remove_file(&self.lock);
    }
}

/// The result of one attempt at the lock.
enum Attempt {
    Acquired,
    HeldBy(i32),
    NoPid,
}

/// One attempt: `None` when the lock is now ours, `Some(pid)` when `pid` holds it.
fn try_lock(path: &Path, lock: &Path) -> Result<Option<i32>, EditError> {
    let pid = std::process::id();
    let seq = LOCK_SEQ.fetch_add(1, Ordering::Relaxed);
    let src = with_suffix(path, &format!(".{pid}.{seq}"));
    let result = link_lock(&src, lock, pid);
    let _ = std::fs::remove_file(&src);
    match result {
        Ok(Attempt::Acquired) => Ok(None),
        Ok(Attempt::HeldBy(holder)) => Ok(Some(holder)),
        Ok(Attempt::NoPid) => Err(EditError::BadLock {
            path: path.to_owned(),
            lock: lock.to_owned(),
        }),
        Err(source) => Err(EditError::Lock {
            path: path.to_owned(),
            lock: lock.to_owned(),
            source,
        }),
    }
}

/// Writes our pid to `src` and hard-links it to `lock`; link(2) fails if `lock` exists,
/// which makes taking the lock atomic, even on NFS.
fn link_lock(src: &Path, lock: &Path, pid: u32) -> std::io::Result<Attempt> {
    use std::os::unix::fs::OpenOptionsExt;
    // Mode 0600, as shadow creates its lock files.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(src)?;
    f.write_all(pid.to_string().as_bytes())?;
    drop(f);
    // Two attempts: the second after removing a stale lock.
    for _ in 0..2 {
        match std::fs::hard_link(src, lock) {
            Ok(()) => return Ok(Attempt::Acquired),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        let holder = match read_lock_pid(lock) {
            Ok(Some(p)) => p,
            Ok(None) => return Ok(Attempt::NoPid),
            // Released between our link and our read: try again.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if process_exists(holder) {
            return Ok(Attempt::HeldBy(holder));
        }
        // Stale: its owner is gone.
        match std::fs::remove_file(lock) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    // Another editor took the lock we just freed: report it as held, and retry later.
    Ok(Attempt::HeldBy(
        read_lock_pid(lock).ok().flatten().unwrap_or(0),
    ))
}

/// The pid in a lock file, `None` when it holds none.
fn read_lock_pid(lock: &Path) -> std::io::Result<Option<i32>> {
    let mut text = String::new();
    std::fs::File::open(lock)?
        .take(64)
        .read_to_string(&mut text)
        .or_else(|e| {
            if e.kind() == std::io::ErrorKind::InvalidData {
                Ok(0)
            } else {
                Err(e)
            }
        })?;
    Ok(text.trim().parse::<i32>().ok().filter(|p| *p > 0))
}

/// True unless kill(pid, 0) says ESRCH (EPERM means it exists under another user).
fn process_exists(pid: i32) -> bool {
    !matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
        Err(nix::errno::Errno::ESRCH)
    )
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    struct Files {
        dir: tempfile::TempDir,
        paths: EditPaths,
    }

    fn files(subuid: Option<&str>, subgid: Option<&str>) -> Files {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = |n: &str| dir.path().join(n);
        if let Some(t) = subuid {
            std::fs::write(p("subuid"), t).expect("write");
        }
        if let Some(t) = subgid {
            std::fs::write(p("subgid"), t).expect("write");
        }
        std::fs::write(
            p("passwd"),
            "root:x:0:0::/:/bin/sh\nalice:x:1000:1000::/:/bin/sh\n",
        )
        .expect("write");
        std::fs::write(p("group"), "root:x:0:\n").expect("write");
        let paths = EditPaths {
            subuid: p("subuid"),
            subgid: p("subgid"),
            passwd: p("passwd"),
            group: p("group"),
        };
        Files { dir, paths }
    }

    fn read(p: &Path) -> String {
        std::fs::read_to_string(p).expect("read")
    }

    fn alice() -> UserRef {
        UserRef::named("alice", 1000)
    }

    const TOP: u64 = 4294836224;

    #[test]
    fn test_alloc_top_matches_apptainer() {
        assert_eq!(ALLOC_TOP, TOP);
        assert_eq!(allocate_block(&[], &[]), Some(4294836224));
    }

    #[test]
    fn test_allocation_skips_taken_blocks() {
        let taken = [(TOP, TOP + 65536), (TOP - 65536 + 5, TOP - 65536 + 6)];
        assert_eq!(
            allocate_block(&taken, &[]),
            Some(u32::try_from(TOP - 2 * 65536).expect("fits"))
        );
        // A host id in the top block pushes allocation down too.
        let mut h = HostIds::none();
        h.insert(u32::try_from(TOP + 100).expect("fits"), "odd");
        assert_eq!(
            allocate_block(&[], &[&h]),
            Some(u32::try_from(TOP - 65536).expect("fits"))
        );
    }

    #[test]
    fn test_allocation_exhausted() {
        assert_eq!(allocate_block(&[(0, 1u64 << 32)], &[]), None);
        // Only the bottom block [65536, 131072) is free.
        let taken = [(0, 65536), (131072, 1u64 << 32)];
        assert_eq!(allocate_block(&taken, &[]), Some(65536));
    }

    #[test]
    fn test_add_creates_files_and_second_add_is_noop() {
        let f = files(None, None);
        let [u, g] = edit_fakeroot(&f.paths, FakerootEdit::Add, &alice()).expect("add");
        assert_eq!(
            u.change,
            Change::Added {
                line: "1000:4294836224:65536".into()
            }
        );
        assert_eq!(g.change, u.change);
        assert_eq!(read(&f.paths.subuid), "1000:4294836224:65536\n");
        assert_eq!(read(&f.paths.subgid), "1000:4294836224:65536\n");
        let mode = std::fs::metadata(&f.paths.subuid)
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o644);

        let [u, g] = edit_fakeroot(&f.paths, FakerootEdit::Add, &alice()).expect("add again");
        assert_eq!(u.change, Change::AlreadyPresent { line: 1 });
        assert_eq!(g.change, Change::AlreadyPresent { line: 1 });
        assert!(u.message(&alice()).contains("already has a valid entry"));
        assert_eq!(read(&f.paths.subuid), "1000:4294836224:65536\n");
    }

    #[test]
    fn test_add_avoids_existing_blocks_in_either_file() {
        let f = files(
            Some("bob:4294836224:65536\n"),
            Some("carol:4294770688:65536\n"),
        );
        let [u, g] = edit_fakeroot(&f.paths, FakerootEdit::Add, &alice()).expect("add");
        let want = Change::Added {
            line: "1000:4294705152:65536".into(),
        };
        assert_eq!((u.change, g.change), (want.clone(), want));
    }

    #[test]
    fn test_add_only_where_missing_and_keeps_small_entries() {
        let f = files(Some("alice:100000:65536\n"), Some("alice:100000:10\n"));
        let [u, g] = edit_fakeroot(&f.paths, FakerootEdit::Add, &alice()).expect("add");
        assert_eq!(u.change, Change::AlreadyPresent { line: 1 });
        assert!(matches!(g.change, Change::Added { .. }));
        assert_eq!(
            read(&f.paths.subgid),
            "alice:100000:10\n1000:4294836224:65536\n"
        );
    }

    #[test]
    fn test_add_refuses_when_disabled() {
        let f = files(Some("!alice:100000:65536\n"), Some(""));
        let err = edit_fakeroot(&f.paths, FakerootEdit::Add, &alice()).expect_err("disabled");
        let msg = err.to_string();
        assert!(msg.contains("--enable alice"), "{msg}");
        assert_eq!(read(&f.paths.subuid), "!alice:100000:65536\n");
        assert_eq!(read(&f.paths.subgid), "");
    }

    #[test]
    fn test_other_lines_kept_byte_for_byte() {
        let before = "# managed by hand\r\n\nbob:100000:65536\n  odd line with spaces\n!eve:1:2\nbob:0100:5\nzed:300000:65536";
        let f = files(Some(before), Some(before));
        edit_fakeroot(&f.paths, FakerootEdit::Add, &alice()).expect("add");
        let after = read(&f.paths.subuid);
        assert_eq!(after, format!("{before}\n1000:4294836224:65536\n"));
        edit_fakeroot(&f.paths, FakerootEdit::Disable, &alice()).expect("disable");
        assert_eq!(
            read(&f.paths.subuid),
            format!("{before}\n!1000:4294836224:65536\n")
        );
        edit_fakeroot(&f.paths, FakerootEdit::Remove, &alice()).expect("remove");
        assert_eq!(read(&f.paths.subuid), format!("{before}\n"));
        assert_eq!(read(&f.paths.subgid), format!("{before}\n"));
    }

    #[test]
    fn test_remove_by_name_and_uid_including_disabled() {
        let f = files(
            Some("alice:1:65536\nbob:2:65536\n!1000:3:65536\n"),
            Some("bob:2:65536\n"),
        );
        let [u, g] = edit_fakeroot(&f.paths, FakerootEdit::Remove, &alice()).expect("remove");
        assert_eq!(u.change, Change::Removed { lines: vec![1, 3] });
        assert_eq!(g.change, Change::NoEntry);
        assert_eq!(read(&f.paths.subuid), "bob:2:65536\n");
        assert_eq!(read(&f.paths.subgid), "bob:2:65536\n");
    }

    #[test]
    fn test_disable_enable_round_trip() {
        let text = "x:1:1\nalice:100000:65536\n";
        let f = files(Some(text), Some(text));
        let [u, _] = edit_fakeroot(&f.paths, FakerootEdit::Disable, &alice()).expect("disable");
        assert_eq!(u.change, Change::Disabled { lines: vec![2] });
        assert_eq!(read(&f.paths.subuid), "x:1:1\n!alice:100000:65536\n");
        let [u, _] =
            edit_fakeroot(&f.paths, FakerootEdit::Disable, &alice()).expect("disable again");
        assert_eq!(u.change, Change::Unchanged);
        let [u, g] = edit_fakeroot(&f.paths, FakerootEdit::Enable, &alice()).expect("enable");
        assert_eq!(u.change, Change::Enabled { lines: vec![2] });
        assert_eq!(g.change, Change::Enabled { lines: vec![2] });
        assert_eq!(read(&f.paths.subuid), text);
        assert_eq!(read(&f.paths.subgid), text);
        let [u, _] = edit_fakeroot(&f.paths, FakerootEdit::Enable, &UserRef::named("nobody", 9))
            .expect("enable absent user");
        assert_eq!(u.change, Change::NoEntry);
    }

    #[test]
    fn test_mode_and_owner_preserved() {
        let f = files(Some("a:1:1\n"), Some("a:1:1\n"));
        std::fs::set_permissions(&f.paths.subuid, std::fs::Permissions::from_mode(0o600))
            .expect("chmod");
        let before = std::fs::metadata(&f.paths.subuid).expect("stat");
        edit_fakeroot(&f.paths, FakerootEdit::Add, &alice()).expect("add");
        let after = std::fs::metadata(&f.paths.subuid).expect("stat");
        assert_eq!(after.mode() & 0o7777, 0o600);
        assert_eq!((after.uid(), after.gid()), (before.uid(), before.gid()));
        assert_ne!(
            after.ino(),
            before.ino(),
            "replaced by rename, not rewritten"
        );
        // No temporary or lock files left behind.
        let names: Vec<String> = std::fs::read_dir(f.dir.path())
            .expect("readdir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        let mut names = names;
        names.sort();
        assert_eq!(names, ["group", "passwd", "subgid", "subuid"]);
    }

    #[test]
    fn test_symlink_refused() {
        let f = files(Some(""), Some(""));
        let real = f.dir.path().join("real");
        std::fs::rename(&f.paths.subuid, &real).expect("rename");
        std::os::unix::fs::symlink(&real, &f.paths.subuid).expect("symlink");
        let err = edit_fakeroot(&f.paths, FakerootEdit::Add, &alice()).expect_err("symlink");
        assert!(err.to_string().contains("is a symbolic link"), "{err}");
    }

    #[test]
    fn test_lock_held_by_live_process_times_out() {
        let f = files(Some(""), Some(""));
        let lock = with_suffix(&f.paths.subuid, ".lock");
        // pid 1 always exists.
        std::fs::write(&lock, "1").expect("write lock");
        let err =
            ShadowLock::acquire(&f.paths.subuid, Duration::from_millis(100)).expect_err("held");
        let msg = err.to_string();
        assert!(msg.contains("locked by process 1"), "{msg}");
        assert!(lock.exists(), "someone else's lock is left alone");
    }

    #[test]
    fn test_stale_lock_is_taken_over_and_released() {
        let f = files(Some(""), Some(""));
        let lock = with_suffix(&f.paths.subuid, ".lock");
        // A reaped child's pid: no process has it now.
        let mut child = std::process::Command::new("/bin/true")
            .spawn()
            .expect("spawn");
        let dead = child.id();
        child.wait().expect("wait");
        std::fs::write(&lock, dead.to_string()).expect("write lock");
        {
            let _l = ShadowLock::acquire(&f.paths.subuid, Duration::from_secs(1))
                .expect("stale lock replaced");
            assert_eq!(
                read_lock_pid(&lock).expect("read"),
                Some(i32::try_from(std::process::id()).expect("pid fits"))
            );
        }
        assert!(!lock.exists(), "released on drop");
    }

    #[test]
    fn test_lock_without_pid_is_reported() {
        let f = files(Some(""), Some(""));
        std::fs::write(with_suffix(&f.paths.subuid, ".lock"), "").expect("write lock");
        let err = edit_fakeroot(&f.paths, FakerootEdit::Add, &alice()).expect_err("bad lock");
        assert!(
            err.to_string().contains("holds no valid process id"),
            "{err}"
        );
    }

    #[test]
    fn test_concurrent_editors_are_serialized() {
        // Eight threads add eight different users at once. Without the lock, concurrent
        // read-modify-write cycles would lose entries or hand out the same block twice.
        let f = files(Some("# header\n"), Some("# header\n"));
        let paths = f.paths.clone();
        let handles: Vec<_> = (0..8u32)
            .map(|i| {
                let paths = paths.clone();
                std::thread::spawn(move || {
                    let user = UserRef::named(&format!("user{i}"), 2000 + i);
                    edit_fakeroot(&paths, FakerootEdit::Add, &user).map(|_| ())
                })
            })
            .collect();
        for h in handles {
            h.join().expect("thread").expect("add succeeds");
        }
        for p in [&paths.subuid, &paths.subgid] {
            let file = SubidFile::read(p).expect("read");
            let mut starts: Vec<u32> = file.entries().map(|e| e.start).collect();
            assert_eq!(starts.len(), 8, "{}", read(p));
            starts.sort_unstable();
            starts.dedup();
            assert_eq!(starts.len(), 8, "distinct blocks: {}", read(p));
            assert!(read(p).starts_with("# header\n"));
        }
    }
}
