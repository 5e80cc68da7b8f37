//! `ImageFs`: fuse-backend-rs's `FileSystem` over any `ImageBackend`, read-only, tuned for an
//! immutable image (long entry/attr timeouts, KEEP_CACHE, CACHE_DIR, readdirplus). FUSE's root
//! node id 1 and the image's root inode number are swapped; `st_ino` is always the image's.

use std::cell::RefCell;
use std::ffi::CStr;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use fuse_backend_rs::abi::fuse_abi::{FsOptions, OpenOptions, stat64, statvfs64};
use fuse_backend_rs::api::filesystem::{
    Context, DirEntry as FuseDirEntry, Entry, FileSystem, GetxattrReply, ListxattrReply,
    ZeroCopyWriter,
};

use crate::backend::{BackendError, ImageBackend};
use crate::squashfs::{Attr, FileType};

/// How long the kernel may cache entries and attributes: the image never changes.
const TTL: Duration = Duration::from_secs(365 * 24 * 3600);
/// FUSE's fixed root node id.
const FUSE_ROOT: u64 = 1;
/// Largest read we serve in one request (fuse-backend-rs' 1 MiB request buffer).
const MAX_READ: usize = 1 << 20;

/// The read-only FUSE filesystem over an image backend.
pub struct ImageFs<B: ImageBackend> {
    backend: Arc<B>,
    root: u64,
    /// The kernel accepted FUSE_NO_OPEN_SUPPORT: open/opendir are answered ENOSYS once and
    /// never sent again (the kernel then keeps the page and directory caches itself).
    no_open: std::sync::atomic::AtomicBool,
    no_opendir: std::sync::atomic::AtomicBool,
}

impl<B: ImageBackend> ImageFs<B> {
    /// Wraps `backend`.
    pub fn new(backend: Arc<B>) -> Self {
        let root = backend.root();
        ImageFs {
            backend,
            root,
            no_open: std::sync::atomic::AtomicBool::new(false),
            no_opendir: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// FUSE node id -> image inode number (1 and the image root are swapped).
    fn to_image(&self, node: u64) -> u64 {
        swap(node, self.root)
    }

    /// Image inode number -> FUSE node id.
    fn to_node(&self, ino: u64) -> u64 {
        swap(ino, self.root)
    }

    fn entry(&self, a: &Attr) -> Entry {
        Entry {
            inode: self.to_node(u64::from(a.ino)),
            generation: 0,
            attr: to_stat(a),
            attr_flags: 0,
            attr_timeout: TTL,
            entry_timeout: TTL,
        }
    }

    fn dots(&self, dir: u64, offset: u64) -> Vec<(&'static [u8], u64, u64)> {
        // (name, image inode, next offset) for "." and ".." still to send.
        if offset >= 2 {
            return Vec::new();
        }
        let parent = self.backend.parent(dir).unwrap_or(dir);
        [(&b"."[..], dir, 1), (&b".."[..], parent, 2)]
            .into_iter()
            .filter(|d| d.2 > offset)
            .collect()
    }

    fn list(
        &self,
        node: u64,
        offset: u64,
        plus: bool,
        add: &mut dyn FnMut(FuseDirEntry<'_>, Option<Entry>) -> io::Result<usize>,
    ) -> io::Result<()> {
        let dir = self.to_image(node);
        for (name, ino, next) in self.dots(dir, offset) {
            let e = if plus {
                Some(self.entry(&self.backend.stat(ino).map_err(errno)?))
            } else {
                None
            };
            let d = FuseDirEntry {
                ino,
                offset: next,
                type_: u32::from(libc::DT_DIR),
                name,
            };
            if add(d, e)? == 0 {
                return Ok(());
            }
        }
        let cookie = offset.saturating_sub(2);
        let mut failed = None;
        let r = self.backend.readdir(dir, cookie, plus, &mut |e, a| {
            let d = FuseDirEntry {
                ino: u64::from(e.ino),
                offset: e.next_cookie + 2,
                type_: e.kind.dtype(),
                name: e.name,
            };
            match add(d, a.map(|a| self.entry(&a))) {
                Ok(0) => false,
                Ok(_) => true,
                Err(x) => {
                    failed = Some(x);
                    false
                }
            }
        });
        r.map_err(errno)?;
        failed.map_or(Ok(()), Err)
    }
}

fn swap(n: u64, root: u64) -> u64 {
    if n == FUSE_ROOT {
        root
    } else if n == root {
        FUSE_ROOT
    } else {
        n
    }
}

/// Maps a backend error to the reply errno; I/O and corruption errors get one log line.
fn errno(e: BackendError) -> io::Error {
    if e.errno == libc::EIO {
        log::error!("image read error: {}", e.msg);
    }
    io::Error::from_raw_os_error(e.errno)
}

fn to_stat(a: &Attr) -> stat64 {
    // SAFETY: stat64 is a plain C struct; all-zero bytes are a valid value.
    let mut st: stat64 = unsafe { std::mem::zeroed() };
    st.st_ino = u64::from(a.ino);
    st.st_mode = a.mode;
    st.st_nlink = u64::from(a.nlink);
    st.st_uid = a.uid;
    st.st_gid = a.gid;
    st.st_rdev = u64::from(a.rdev);
    st.st_size = a.size as i64;
    st.st_blksize = i64::from(a.blksize);
    st.st_blocks = a.blocks as i64;
    for t in [&mut st.st_atime, &mut st.st_mtime, &mut st.st_ctime] {
        *t = i64::from(a.mtime);
    }
    st
}

fn cstr_bytes(name: &CStr) -> &[u8] {
    name.to_bytes()
}

thread_local! {
    /// Per-worker read buffer, so reads do not allocate.
    static READ_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

impl<B: ImageBackend> FileSystem for ImageFs<B> {
    type Inode = u64;
    type Handle = u64;

    fn init(&self, capable: FsOptions) -> io::Result<FsOptions> {
        let want = FsOptions::ASYNC_READ
            | FsOptions::PARALLEL_DIROPS
            | FsOptions::CACHE_SYMLINKS
            | FsOptions::DO_READDIRPLUS
            | FsOptions::MAX_PAGES
            | FsOptions::ZERO_MESSAGE_OPEN
            | FsOptions::ZERO_MESSAGE_OPENDIR;
        let got = capable & want;
        // Every open costs a round trip to this server for nothing: the image is read-only
        // (the mount is MS_RDONLY, so the kernel refuses writes itself) and has no handles.
        self.no_open.store(
            got.contains(FsOptions::ZERO_MESSAGE_OPEN),
            std::sync::atomic::Ordering::Relaxed,
        );
        self.no_opendir.store(
            got.contains(FsOptions::ZERO_MESSAGE_OPENDIR),
            std::sync::atomic::Ordering::Relaxed,
        );
        Ok(got)
    }

    fn lookup(&self, _ctx: &Context, parent: u64, name: &CStr) -> io::Result<Entry> {
        match self
            .backend
            .lookup(self.to_image(parent), cstr_bytes(name))
            .map_err(errno)?
        {
            Some(a) => Ok(self.entry(&a)),
            // inode 0: a negative entry the kernel may cache for entry_timeout.
            None => Ok(Entry {
                inode: 0,
                entry_timeout: TTL,
                ..self.entry(&zero_attr())
            }),
        }
    }

    fn getattr(
        &self,
        _ctx: &Context,
        inode: u64,
        _h: Option<u64>,
    ) -> io::Result<(stat64, Duration)> {
        let a = self.backend.stat(self.to_image(inode)).map_err(errno)?;
        Ok((to_stat(&a), TTL))
    }

    fn readlink(&self, _ctx: &Context, inode: u64) -> io::Result<Vec<u8>> {
        self.backend.readlink(self.to_image(inode)).map_err(errno)
    }

    fn open(
        &self,
        _ctx: &Context,
        _inode: u64,
        flags: u32,
        _fuse_flags: u32,
    ) -> io::Result<(Option<u64>, OpenOptions, Option<u32>)> {
        if flags & libc::O_ACCMODE as u32 != libc::O_RDONLY as u32 {
            return Err(io::Error::from_raw_os_error(libc::EROFS));
        }
        if self.no_open.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(io::Error::from_raw_os_error(libc::ENOSYS));
        }
        Ok((None, OpenOptions::KEEP_CACHE, None))
    }

    #[allow(clippy::too_many_arguments)]
    fn read(
        &self,
        _ctx: &Context,
        inode: u64,
        _handle: u64,
        w: &mut dyn ZeroCopyWriter,
        size: u32,
        offset: u64,
        _lock_owner: Option<u64>,
        _flags: u32,
    ) -> io::Result<usize> {
        let want = (size as usize).min(MAX_READ);
        READ_BUF.with(|b| {
            let mut buf = b.borrow_mut();
            if buf.len() < want {
                buf.resize(want, 0);
            }
            let n = self
                .backend
                .read(self.to_image(inode), offset, &mut buf[..want])
                .map_err(errno)?;
            w.write_all(&buf[..n])?;
            Ok(n)
        })
    }

    fn release(
        &self,
        _ctx: &Context,
        _inode: u64,
        _flags: u32,
        _handle: u64,
        _flush: bool,
        _flock_release: bool,
        _lock_owner: Option<u64>,
    ) -> io::Result<()> {
        Ok(())
    }

    fn statfs(&self, _ctx: &Context, _inode: u64) -> io::Result<statvfs64> {
        let s = self.backend.stats();
        // SAFETY: statvfs64 is a plain C struct; all-zero bytes are a valid value.
        let mut st: statvfs64 = unsafe { std::mem::zeroed() };
        st.f_bsize = u64::from(s.block_size);
        st.f_frsize = u64::from(s.block_size);
        st.f_blocks = s.blocks;
        st.f_files = s.files;
        st.f_namemax = 256;
        Ok(st)
    }

    fn getxattr(
        &self,
        _ctx: &Context,
        inode: u64,
        name: &CStr,
        size: u32,
    ) -> io::Result<GetxattrReply> {
        if !self.backend.has_xattrs() {
            return Err(io::Error::from_raw_os_error(libc::ENOSYS));
        }
        let v = self
            .backend
            .getxattr(self.to_image(inode), cstr_bytes(name))
            .map_err(errno)?;
        let v = v.ok_or_else(|| io::Error::from_raw_os_error(libc::ENODATA))?;
        if size == 0 {
            return Ok(GetxattrReply::Count(v.len() as u32));
        }
        if v.len() > size as usize {
            return Err(io::Error::from_raw_os_error(libc::ERANGE));
        }
        Ok(GetxattrReply::Value(v))
    }

    fn listxattr(&self, _ctx: &Context, inode: u64, size: u32) -> io::Result<ListxattrReply> {
        let names = self
            .backend
            .listxattr(self.to_image(inode))
            .map_err(errno)?;
        let mut buf = Vec::new();
        for n in names {
            buf.extend_from_slice(&n);
            buf.push(0);
        }
        if size == 0 {
            return Ok(ListxattrReply::Count(buf.len() as u32));
        }
        if buf.len() > size as usize {
            return Err(io::Error::from_raw_os_error(libc::ERANGE));
        }
        Ok(ListxattrReply::Names(buf))
    }

    fn opendir(
        &self,
        _ctx: &Context,
        inode: u64,
        _flags: u32,
    ) -> io::Result<(Option<u64>, OpenOptions)> {
        let a = self.backend.stat(self.to_image(inode)).map_err(errno)?;
        if a.kind != FileType::Directory {
            return Err(io::Error::from_raw_os_error(libc::ENOTDIR));
        }
        if self.no_opendir.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(io::Error::from_raw_os_error(libc::ENOSYS));
        }
        Ok((None, OpenOptions::KEEP_CACHE | OpenOptions::CACHE_DIR))
    }

    fn readdir(
        &self,
        _ctx: &Context,
        inode: u64,
        _handle: u64,
        _size: u32,
        offset: u64,
        add_entry: &mut dyn FnMut(FuseDirEntry<'_>) -> io::Result<usize>,
    ) -> io::Result<()> {
        self.list(inode, offset, false, &mut |d, _| add_entry(d))
    }

    fn readdirplus(
        &self,
        _ctx: &Context,
        inode: u64,
        _handle: u64,
        _size: u32,
        offset: u64,
        add_entry: &mut dyn FnMut(FuseDirEntry<'_>, Entry) -> io::Result<usize>,
    ) -> io::Result<()> {
        self.list(inode, offset, true, &mut |d, e| match e {
            Some(e) => add_entry(d, e),
            None => Err(io::Error::from_raw_os_error(libc::EIO)),
        })
    }

    fn releasedir(&self, _ctx: &Context, _inode: u64, _flags: u32, _handle: u64) -> io::Result<()> {
        Ok(())
    }

    fn access(&self, _ctx: &Context, _inode: u64, mask: u32) -> io::Result<()> {
        // default_permissions makes the kernel check modes; only refuse writes here.
        if mask & libc::W_OK as u32 != 0 {
            return Err(io::Error::from_raw_os_error(libc::EROFS));
        }
        Ok(())
    }
}

fn zero_attr() -> Attr {
    Attr {
        ino: 0,
        kind: FileType::Regular,
        mode: 0,
        nlink: 0,
        uid: 0,
        gid: 0,
        size: 0,
        mtime: 0,
        rdev: 0,
        blocks: 0,
        blksize: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_root_swap_is_an_involution() {
        for root in [1u64, 2, 55, 1000] {
            for n in [1u64, 2, 3, 55, 1000, 99999] {
                assert_eq!(swap(swap(n, root), root), n);
            }
            assert_eq!(swap(FUSE_ROOT, root), root);
            assert_eq!(swap(root, root), FUSE_ROOT);
        }
    }

    #[test]
    fn test_to_stat() {
        let a = Attr {
            ino: 7,
            mode: libc::S_IFREG | 0o644,
            nlink: 2,
            size: 1000,
            mtime: 5,
            blocks: 2,
            blksize: 4096,
            ..zero_attr()
        };
        let st = to_stat(&a);
        assert_eq!(
            (st.st_ino, st.st_mode, st.st_nlink, st.st_size, st.st_mtime),
            (7, a.mode, 2, 1000, 5)
        );
    }
}
