//! The inode-number table of the ext reader. ext4-view is path-based and does not expose
//! inode numbers, so numbers are handed out here, one per (parent, name) seen by `lookup` or
//! `readdir`, in the order they are seen; the root is `ROOT`. A number never changes or goes
//! away while the filesystem is open. Each node keeps its attributes (the image is
//! immutable), so `stat` never goes back to the image. Memory grows with each entry seen (a
//! few hundred bytes with the name and map slots: 5,639 entries took 1.6 MB of RSS), bounded
//! by the number of entries in the image.

use std::collections::HashMap;
use std::sync::Arc;

use crate::squashfs::{Attr, FileType};

/// The root directory's number (ext's own root inode number).
pub(crate) const ROOT: u32 = 2;

/// One path of the image.
#[derive(Debug)]
struct Node {
    /// The parent directory's number (the root is its own parent).
    parent: u32,
    /// The name in the parent (empty for the root).
    name: Arc<[u8]>,
    /// Attributes; `attr.ino` is this node's number.
    attr: Attr,
}

/// What is known of a directory's entries.
#[derive(Debug, Default)]
struct DirKids {
    /// Entries seen so far, by name.
    by_name: HashMap<Arc<[u8]>, u32>,
    /// The whole listing in on-disk order, once `readdir` has read it.
    listing: Option<Arc<[u32]>>,
}

/// Number <-> path table.
#[derive(Debug)]
pub(crate) struct Table {
    /// `nodes[n - ROOT]` is number `n`.
    nodes: Vec<Node>,
    dirs: HashMap<u32, DirKids>,
}

/// What `Table::child` knows about a name in a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Child {
    /// The entry exists and has this number.
    Known(u32),
    /// The directory's full listing is known and has no such entry.
    Absent,
    /// Not seen yet: ask the image.
    Unknown,
}

impl Table {
    /// A table holding only the root, with attributes `root` (its `ino` is replaced).
    pub(crate) fn new(root: Attr) -> Table {
        Table {
            nodes: vec![Node {
                parent: ROOT,
                name: Arc::from(&b""[..]),
                attr: Attr { ino: ROOT, ..root },
            }],
            dirs: HashMap::new(),
        }
    }

    fn node(&self, n: u32) -> Option<&Node> {
        self.nodes.get(n.checked_sub(ROOT)? as usize)
    }

    /// Attributes of number `n`.
    pub(crate) fn attr(&self, n: u32) -> Option<Attr> {
        self.node(n).map(|x| x.attr)
    }

    /// The parent of `n`.
    pub(crate) fn parent(&self, n: u32) -> Option<u32> {
        self.node(n).map(|x| x.parent)
    }

    /// How many numbers have been handed out (the root included).
    pub(crate) fn len(&self) -> usize {
        self.nodes.len()
    }

    /// The absolute image path of `n` ("/" for the root).
    pub(crate) fn path(&self, n: u32) -> Option<Vec<u8>> {
        let mut names = Vec::new();
        let mut cur = n;
        // Parents always have smaller numbers than their children, so this ends.
        while cur != ROOT {
            let node = self.node(cur)?;
            names.push(&node.name);
            cur = node.parent;
        }
        if names.is_empty() {
            return Some(b"/".to_vec());
        }
        let mut p = Vec::with_capacity(names.iter().map(|s| s.len() + 1).sum());
        for s in names.iter().rev() {
            p.push(b'/');
            p.extend_from_slice(s);
        }
        Some(p)
    }

    /// What is known of `name` in directory `dir`.
    pub(crate) fn child(&self, dir: u32, name: &[u8]) -> Child {
        let Some(kids) = self.dirs.get(&dir) else {
            return Child::Unknown;
        };
        match (kids.by_name.get(name), &kids.listing) {
            (Some(&n), _) => Child::Known(n),
            (None, Some(_)) => Child::Absent,
            (None, None) => Child::Unknown,
        }
    }

    /// Registers `name` in directory `dir` with attributes `attr` and returns its number (the
    /// existing one when it is already known). None when the 32-bit numbers are used up or
    /// `dir` is unknown.
    pub(crate) fn insert(&mut self, dir: u32, name: &[u8], attr: Attr) -> Option<u32> {
        self.node(dir)?;
        if let Child::Known(n) = self.child(dir, name) {
            return Some(n);
        }
        let n = u32::try_from(self.nodes.len())
            .ok()?
            .checked_add(ROOT)
            .filter(|&n| n != u32::MAX)?;
        let name: Arc<[u8]> = Arc::from(name);
        self.nodes.push(Node {
            parent: dir,
            name: Arc::clone(&name),
            attr: Attr { ino: n, ..attr },
        });
        self.dirs.entry(dir).or_default().by_name.insert(name, n);
        Some(n)
    }

    /// The full listing of `dir`, when `readdir` has read it.
    pub(crate) fn listing(&self, dir: u32) -> Option<Arc<[u32]>> {
        self.dirs.get(&dir)?.listing.clone()
    }

    /// Records the full listing of `dir` (numbers from `insert`), unless one is already there;
    /// returns the listing in effect.
    pub(crate) fn set_listing(&mut self, dir: u32, kids: Vec<u32>) -> Arc<[u32]> {
        let d = self.dirs.entry(dir).or_default();
        Arc::clone(d.listing.get_or_insert_with(|| Arc::from(kids)))
    }

    /// Name and attributes of entries `from..` of a listing, at most `max` of them.
    pub(crate) fn batch(&self, listing: &[u32], from: usize, max: usize) -> Vec<(Arc<[u8]>, Attr)> {
        listing
            .iter()
            .skip(from)
            .take(max)
            .filter_map(|&n| self.node(n).map(|x| (Arc::clone(&x.name), x.attr)))
            .collect()
    }
}

/// Whether attributes describe a directory.
pub(crate) fn is_dir(a: &Attr) -> bool {
    a.kind == FileType::Directory
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(kind: FileType) -> Attr {
        Attr {
            ino: 0,
            kind,
            mode: kind.mode_bits() | 0o755,
            nlink: 1,
            uid: 0,
            gid: 0,
            size: 0,
            mtime: 0,
            rdev: 0,
            blocks: 0,
            blksize: 4096,
        }
    }

    #[test]
    fn test_numbers_paths_and_dedup() {
        let mut t = Table::new(attr(FileType::Directory));
        assert_eq!(t.path(ROOT), Some(b"/".to_vec()));
        assert_eq!(t.attr(ROOT).map(|a| a.ino), Some(ROOT));
        let etc = t
            .insert(ROOT, b"etc", attr(FileType::Directory))
            .expect("insert");
        let pw = t
            .insert(etc, b"passwd", attr(FileType::Regular))
            .expect("insert");
        assert_eq!((etc, pw), (3, 4));
        assert_eq!(t.insert(etc, b"passwd", attr(FileType::Regular)), Some(pw));
        assert_eq!(t.path(pw), Some(b"/etc/passwd".to_vec()));
        assert_eq!(t.parent(pw), Some(etc));
        assert_eq!(t.parent(ROOT), Some(ROOT));
        assert_eq!(t.attr(pw).map(|a| a.ino), Some(pw));
        assert_eq!(t.child(etc, b"passwd"), Child::Known(pw));
        assert_eq!(t.child(etc, b"shadow"), Child::Unknown);
        assert_eq!(t.len(), 3);
        // Unknown numbers.
        for n in [0, 1, 5, u32::MAX] {
            assert_eq!(t.attr(n), None);
            assert_eq!(t.path(n), None);
        }
        assert_eq!(t.insert(99, b"x", attr(FileType::Regular)), None);
    }

    #[test]
    fn test_listing_marks_absent_names() {
        let mut t = Table::new(attr(FileType::Directory));
        let a = t
            .insert(ROOT, b"a", attr(FileType::Regular))
            .expect("insert");
        let b = t
            .insert(ROOT, b"b", attr(FileType::Regular))
            .expect("insert");
        assert_eq!(t.child(ROOT, b"zz"), Child::Unknown);
        let l = t.set_listing(ROOT, vec![b, a]);
        assert_eq!(&*l, &[b, a]);
        // A second listing (a racing reader) does not replace the first.
        assert_eq!(&*t.set_listing(ROOT, vec![a]), &[b, a]);
        assert_eq!(t.child(ROOT, b"zz"), Child::Absent);
        let names: Vec<_> = t
            .batch(&l, 1, 10)
            .into_iter()
            .map(|(n, _)| n.to_vec())
            .collect();
        assert_eq!(names, vec![b"a".to_vec()]);
        assert!(t.batch(&l, 5, 10).is_empty());
    }
}
