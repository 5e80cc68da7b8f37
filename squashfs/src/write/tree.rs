//! The source scan: walks the tree once (no file data) into an in-memory index of inodes and
//! sorted directory entries, with hard links folded into one inode, owners mapped into the id
//! table, xattr sets interned, and inode numbers assigned. Everything is deterministic for a
//! given tree and options.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs::Metadata;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::WriteOptions;
use super::error::{WriteError, WriteResult};
use super::xattr::{self, XattrSets};
use crate::dir::MAX_NAME;

/// Index of an inode in `Tree::inodes`.
pub(crate) type InodeIdx = u32;

/// One name in a directory.
pub(crate) struct Entry {
    pub name: Box<[u8]>,
    pub inode: InodeIdx,
}

/// The type-specific part of a scanned inode.
pub(crate) enum Kind {
    Dir {
        /// Sorted by name (squashfs requires byte order).
        entries: Vec<Entry>,
        parent: InodeIdx,
    },
    File {
        size: u64,
        /// Index of the file in the data phase's arrays.
        file: u32,
    },
    Symlink(Box<[u8]>),
    BlockDev(u32),
    CharDev(u32),
    Fifo,
    Socket,
}

/// A scanned inode.
pub(crate) struct Inode {
    pub kind: Kind,
    /// Permission bits (07777).
    pub perm: u16,
    pub uid_idx: u16,
    pub gid_idx: u16,
    pub mtime: u32,
    /// Links inside the image (directories: 2 + subdirectories).
    pub nlink: u32,
    /// xattr id, or None.
    pub xattr: Option<u32>,
    /// squashfs inode number (1-based).
    pub number: u32,
}

/// The scanned source tree.
pub(crate) struct Tree {
    /// Index 0 is the root directory.
    pub inodes: Vec<Inode>,
    /// The id table: image uids and gids in order of first use.
    pub ids: Vec<u32>,
    pub xattrs: XattrSets,
    /// Number of regular files (the data phase's array length).
    pub files: u32,
    /// How many regular files have each size (the data phase only hashes files whose size
    /// is shared, as only they can be duplicates).
    pub size_count: HashMap<u64, u32>,
    /// Newest mtime stored.
    pub newest: u32,
    /// Extra names of hard-linked inodes.
    pub hard_links: u32,
}

impl Tree {
    /// The entries of directory `idx` (empty for other kinds).
    pub(crate) fn entries(&self, idx: InodeIdx) -> &[Entry] {
        match self.inodes.get(idx as usize).map(|i| &i.kind) {
            Some(Kind::Dir { entries, .. }) => entries,
            _ => &[],
        }
    }
}

/// The squashfs device number encoding (the kernel's `new_encode_dev`).
pub(crate) fn encode_dev(path: &Path, rdev: u64) -> WriteResult<u32> {
    let (major, minor) = (libc::major(rdev), libc::minor(rdev));
    if major > 0xfff || minor > 0xf_ffff {
        return Err(WriteError::Unsupported {
            path: path.to_path_buf(),
            what: format!(
                "device {major}:{minor} does not fit squashfs' 12-bit major / 20-bit minor"
            ),
        });
    }
    Ok((major << 8) | (minor & 0xff) | ((minor & !0xff) << 12))
}

struct Scanner<'a> {
    opts: &'a WriteOptions,
    tree: Tree,
    id_index: HashMap<u32, u16>,
    /// (dev, ino) of hard-linked non-directories seen so far.
    links: HashMap<(u64, u64), InodeIdx>,
    /// (dev, ino) of the image being written, if it lies inside the source.
    skip: Option<(u64, u64)>,
}

/// Scans `src` (a directory; a symlink to one is followed). `skip` is the (dev, ino) of the
/// output file, left out if it lies inside the tree.
pub(crate) fn scan(src: &Path, opts: &WriteOptions, skip: Option<(u64, u64)>) -> WriteResult<Tree> {
    let md = std::fs::metadata(src).map_err(|e| WriteError::source(src, "stat", e))?;
    if !md.is_dir() {
        return Err(WriteError::Unsupported {
            path: src.to_path_buf(),
            what: "the source is not a directory".into(),
        });
    }
    let mut s = Scanner {
        opts,
        tree: Tree {
            inodes: Vec::new(),
            ids: Vec::new(),
            xattrs: XattrSets::default(),
            files: 0,
            size_count: HashMap::new(),
            newest: 0,
            hard_links: 0,
        },
        id_index: HashMap::new(),
        links: HashMap::new(),
        skip,
    };
    let root = s.inode(
        src,
        &md,
        Kind::Dir {
            entries: Vec::new(),
            parent: 0,
        },
    )?;
    s.tree.inodes.push(root);
    let mut stack: Vec<(InodeIdx, PathBuf)> = vec![(0, src.to_path_buf())];
    while let Some((dir, path)) = stack.pop() {
        let entries = s.read_dir(dir, &path, &mut stack)?;
        let subdirs = entries
            .iter()
            .filter(|e| matches!(s.tree.inodes[e.inode as usize].kind, Kind::Dir { .. }))
            .count() as u32;
        let d = &mut s.tree.inodes[dir as usize];
        d.nlink = subdirs.saturating_add(2);
        if let Kind::Dir { entries: e, .. } = &mut d.kind {
            *e = entries;
        }
    }
    number(&mut s.tree)?;
    Ok(s.tree)
}

impl Scanner<'_> {
    /// Reads directory `dir` at `path`: creates the inodes of its entries (pushing
    /// subdirectories on `stack`) and returns the sorted entries.
    fn read_dir(
        &mut self,
        dir: InodeIdx,
        path: &Path,
        stack: &mut Vec<(InodeIdx, PathBuf)>,
    ) -> WriteResult<Vec<Entry>> {
        let rd = std::fs::read_dir(path).map_err(|e| WriteError::source(path, "list", e))?;
        let mut found = Vec::new();
        for ent in rd {
            let ent = ent.map_err(|e| WriteError::source(path, "list", e))?;
            found.push(ent);
        }
        found.sort_by(|a, b| a.file_name().as_bytes().cmp(b.file_name().as_bytes()));
        let mut entries = Vec::with_capacity(found.len());
        for ent in found {
            let name = ent.file_name();
            let p = ent.path();
            if name.len() > MAX_NAME {
                return Err(WriteError::Unsupported {
                    path: p,
                    what: format!("name longer than {MAX_NAME} bytes"),
                });
            }
            let md = ent
                .metadata()
                .map_err(|e| WriteError::source(&p, "stat", e))?;
            if self.skip == Some((md.dev(), md.ino())) {
                continue;
            }
            let idx = self.child(dir, &p, &md)?;
            if matches!(self.tree.inodes[idx as usize].kind, Kind::Dir { .. }) {
                stack.push((idx, p));
            }
            entries.push(Entry {
                name: name.as_bytes().into(),
                inode: idx,
            });
        }
        Ok(entries)
    }

    /// The inode for the entry at `p`: a new one, or the existing one of a hard link.
    fn child(&mut self, parent: InodeIdx, p: &Path, md: &Metadata) -> WriteResult<InodeIdx> {
        let ft = md.file_type();
        if !ft.is_dir()
            && md.nlink() > 1
            && let Some(&idx) = self.links.get(&(md.dev(), md.ino()))
        {
            let i = &mut self.tree.inodes[idx as usize];
            i.nlink = i.nlink.saturating_add(1);
            self.tree.hard_links += 1;
            return Ok(idx);
        }
        let kind = if ft.is_dir() {
            Kind::Dir {
                entries: Vec::new(),
                parent,
            }
        } else if ft.is_file() {
            let file = self.tree.files;
            self.tree.files = file
                .checked_add(1)
                .ok_or_else(|| WriteError::Limit("more than 2^32 files".into()))?;
            *self.tree.size_count.entry(md.size()).or_default() += 1;
            Kind::File {
                size: md.size(),
                file,
            }
        } else if ft.is_symlink() {
            let t = std::fs::read_link(p).map_err(|e| WriteError::source(p, "read link", e))?;
            Kind::Symlink(t.as_os_str().as_bytes().into())
        } else if ft.is_block_device() {
            Kind::BlockDev(encode_dev(p, md.rdev())?)
        } else if ft.is_char_device() {
            Kind::CharDev(encode_dev(p, md.rdev())?)
        } else if ft.is_fifo() {
            Kind::Fifo
        } else if ft.is_socket() {
            Kind::Socket
        } else {
            return Err(WriteError::Unsupported {
                path: p.to_path_buf(),
                what: "unknown file type".into(),
            });
        };
        let inode = self.inode(p, md, kind)?;
        let idx = InodeIdx::try_from(self.tree.inodes.len())
            .ok()
            .filter(|&n| n < u32::MAX - 1)
            .ok_or_else(|| WriteError::Limit("more than 2^32-2 inodes".into()))?;
        self.tree.inodes.push(inode);
        if !ft.is_dir() && md.nlink() > 1 {
            self.links.insert((md.dev(), md.ino()), idx);
        }
        Ok(idx)
    }

    /// Owner, mode, time and xattrs of a new inode.
    fn inode(&mut self, p: &Path, md: &Metadata, kind: Kind) -> WriteResult<Inode> {
        let (uid, gid) = if self.opts.all_root {
            (0, 0)
        } else if let Some(map) = &self.opts.id_map {
            map(md.uid(), md.gid())
        } else {
            (md.uid(), md.gid())
        };
        let uid_idx = self.id(uid)?;
        let gid_idx = self.id(gid)?;
        let mtime = match self.opts.all_time {
            Some(t) => t,
            None => md.mtime().clamp(0, i64::from(u32::MAX)) as u32,
        };
        self.tree.newest = self.tree.newest.max(mtime);
        let set = if self.opts.xattrs == super::XattrMode::None {
            Vec::new()
        } else {
            let c =
                CString::new(p.as_os_str().as_bytes()).map_err(|_| WriteError::Unsupported {
                    path: p.to_path_buf(),
                    what: "path contains a NUL byte".into(),
                })?;
            xattr::read(p, &c, self.opts.xattrs)?
        };
        let xattr = self.tree.xattrs.intern(set)?;
        Ok(Inode {
            kind,
            perm: (md.mode() & 0o7777) as u16,
            uid_idx,
            gid_idx,
            mtime,
            nlink: 1,
            xattr,
            number: 0,
        })
    }

    fn id(&mut self, id: u32) -> WriteResult<u16> {
        if let Some(&i) = self.id_index.get(&id) {
            return Ok(i);
        }
        // The superblock counts ids in 16 bits.
        let i = u16::try_from(self.tree.ids.len())
            .ok()
            .filter(|&n| n < u16::MAX)
            .ok_or_else(|| WriteError::Limit("more than 65535 distinct uids/gids".into()))?;
        self.tree.ids.push(id);
        self.id_index.insert(id, i);
        Ok(i)
    }
}

/// Assigns inode numbers breadth-first: the root is 1 and the entries of each directory get
/// consecutive numbers, which keeps directory listings to few headers.
fn number(tree: &mut Tree) -> WriteResult<()> {
    let mut next: u32 = 1;
    tree.inodes[0].number = next;
    let mut queue = std::collections::VecDeque::from([0 as InodeIdx]);
    while let Some(dir) = queue.pop_front() {
        let kids: Vec<InodeIdx> = tree.entries(dir).iter().map(|e| e.inode).collect();
        for k in kids {
            let i = &mut tree.inodes[k as usize];
            if i.number != 0 {
                continue; // a hard link numbered already
            }
            next += 1;
            i.number = next;
            if matches!(i.kind, Kind::Dir { .. }) {
                queue.push_back(k);
            }
        }
    }
    if next as usize != tree.inodes.len() {
        return Err(WriteError::Limit(format!(
            "numbered {next} inodes of {}",
            tree.inodes.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_encode_dev() {
        let p = Path::new("/dev/x");
        assert_eq!(encode_dev(p, libc::makedev(1, 3)).ok(), Some(0x103));
        assert_eq!(encode_dev(p, libc::makedev(8, 0)).ok(), Some(0x800));
        // minor above 255 moves its high bits up, as the kernel's new_encode_dev does.
        assert_eq!(
            encode_dev(p, libc::makedev(300, 70000)).ok(),
            Some((300 << 8) | (70000 & 0xff) | ((70000 & !0xff) << 12))
        );
        assert!(encode_dev(p, libc::makedev(4096, 0)).is_err());
    }

    #[test]
    fn test_scan_links_and_numbers() {
        let d = tempfile::tempdir().expect("tempdir");
        let r = d.path();
        std::fs::create_dir_all(r.join("b/c")).expect("mkdir");
        std::fs::write(r.join("a"), b"x").expect("write");
        std::fs::hard_link(r.join("a"), r.join("b/c/a2")).expect("link");
        std::os::unix::fs::symlink("a", r.join("l")).expect("symlink");
        let opts = WriteOptions {
            xattrs: super::super::XattrMode::None,
            ..WriteOptions::default()
        };
        let t = scan(r, &opts, None).expect("scan");
        // root, a, b, l, c (a2 is a link to a)
        assert_eq!(t.inodes.len(), 5);
        assert_eq!(t.hard_links, 1);
        let names: Vec<&[u8]> = t.entries(0).iter().map(|e| &e.name[..]).collect();
        assert_eq!(names, vec![&b"a"[..], b"b", b"l"]);
        let a = t.entries(0)[0].inode;
        assert_eq!(t.inodes[a as usize].nlink, 2);
        let mut nums: Vec<u32> = t.inodes.iter().map(|i| i.number).collect();
        nums.sort();
        assert_eq!(nums, vec![1, 2, 3, 4, 5]);
        // Root has one subdirectory.
        assert_eq!(t.inodes[0].nlink, 3);
    }
}
