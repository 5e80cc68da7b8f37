//! The inode and directory tables: a post-order walk writes each inode once (children before
//! their directory, whose listing needs their references), directory listings with headers
//! and, for listings over 8 KiB, the directory index; basic or extended inode types chosen
//! as mksquashfs chooses them.

use super::compress::Encoder;
use super::data::FileData;
use super::error::{WriteError, WriteResult};
use super::meta::MetaWriter;
use super::tree::{Inode, InodeIdx, Kind, Tree};
use crate::dir::MAX_HEADER_ENTRIES;
use crate::inode::NONE32;
use crate::meta::META_SIZE;

/// The finished tables.
pub(crate) struct Tables {
    pub inode_table: Vec<u8>,
    pub dir_table: Vec<u8>,
    /// Reference of the root inode.
    pub root: u64,
    /// Inode reference by inode number - 1 (the export table).
    pub refs_by_number: Vec<u64>,
}

const NOT_WRITTEN: u64 = u64::MAX;

/// Basic inode type numbers (the extended type is 7 more).
fn basic_type(k: &Kind) -> u16 {
    match k {
        Kind::Dir { .. } => 1,
        Kind::File { .. } => 2,
        Kind::Symlink(_) => 3,
        Kind::BlockDev(_) => 4,
        Kind::CharDev(_) => 5,
        Kind::Fifo => 6,
        Kind::Socket => 7,
    }
}

struct Builder<'a> {
    tree: &'a Tree,
    files: &'a [FileData],
    block_size: u32,
    enc: &'a mut Encoder,
    inodes: MetaWriter,
    dirs: MetaWriter,
    refs: Vec<u64>,
    buf: Vec<u8>,
}

/// Builds both tables for `tree`, whose file data went where `files` says.
pub(crate) fn build(
    tree: &Tree,
    files: &[FileData],
    block_size: u32,
    enc: &mut Encoder,
) -> WriteResult<Tables> {
    let mut b = Builder {
        tree,
        files,
        block_size,
        enc,
        inodes: MetaWriter::new(),
        dirs: MetaWriter::new(),
        refs: vec![NOT_WRITTEN; tree.inodes.len()],
        buf: Vec::new(),
    };
    // Post-order: a directory is written after everything below it.
    let mut stack: Vec<(InodeIdx, usize)> = vec![(0, 0)];
    while let Some(top) = stack.last_mut() {
        let (dir, pos) = *top;
        match tree.entries(dir).get(pos) {
            Some(e) => {
                top.1 += 1;
                let child = e.inode;
                if matches!(tree.inodes[child as usize].kind, Kind::Dir { .. }) {
                    stack.push((child, 0));
                } else if b.refs[child as usize] == NOT_WRITTEN {
                    b.refs[child as usize] = b.leaf(child)?;
                }
            }
            None => {
                stack.pop();
                b.refs[dir as usize] = b.directory(dir)?;
            }
        }
    }
    let mut refs_by_number = vec![NOT_WRITTEN; tree.inodes.len()];
    for (i, r) in tree.inodes.iter().zip(&b.refs) {
        let slot = (i.number as usize)
            .checked_sub(1)
            .and_then(|n| refs_by_number.get_mut(n));
        match slot {
            Some(s) if *r != NOT_WRITTEN => *s = *r,
            _ => {
                return Err(WriteError::Thread(format!(
                    "inode number {} was not written",
                    i.number
                )));
            }
        }
    }
    let root = b.refs[0];
    let (inode_table, _) = b.inodes.finish(b.enc)?;
    let (dir_table, _) = b.dirs.finish(b.enc)?;
    if inode_table.len() as u64 > u64::from(u32::MAX)
        || dir_table.len() as u64 > u64::from(u32::MAX)
    {
        return Err(WriteError::Limit(
            "an inode or directory table over 4 GiB".into(),
        ));
    }
    Ok(Tables {
        inode_table,
        dir_table,
        root,
        refs_by_number,
    })
}

impl Builder<'_> {
    fn header(&mut self, ty: u16, i: &Inode) {
        let b = &mut self.buf;
        b.clear();
        b.extend_from_slice(&ty.to_le_bytes());
        b.extend_from_slice(&i.perm.to_le_bytes());
        b.extend_from_slice(&i.uid_idx.to_le_bytes());
        b.extend_from_slice(&i.gid_idx.to_le_bytes());
        b.extend_from_slice(&i.mtime.to_le_bytes());
        b.extend_from_slice(&i.number.to_le_bytes());
    }

    fn put32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    fn put64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// Appends the inode in `buf` to the inode table; returns its reference.
    fn emit(&mut self) -> WriteResult<u64> {
        let r = self.inodes.reference();
        if r >> 16 > u64::from(u32::MAX) {
            return Err(WriteError::Limit("inode table over 4 GiB".into()));
        }
        self.inodes.write(self.enc, &self.buf)?;
        Ok(r)
    }

    /// Writes a non-directory inode.
    fn leaf(&mut self, idx: InodeIdx) -> WriteResult<u64> {
        let i = &self.tree.inodes[idx as usize];
        let ext = i.xattr.is_some();
        let xattr = i.xattr.unwrap_or(NONE32);
        let ty = basic_type(&i.kind);
        match &i.kind {
            Kind::File { size, file } => return self.file(i, *size, *file),
            Kind::Symlink(target) => {
                self.header(if ext { ty + 7 } else { ty }, i);
                self.put32(i.nlink);
                self.put32(target.len() as u32);
                self.buf.extend_from_slice(target);
            }
            Kind::BlockDev(rdev) | Kind::CharDev(rdev) => {
                self.header(if ext { ty + 7 } else { ty }, i);
                self.put32(i.nlink);
                self.put32(*rdev);
            }
            Kind::Fifo | Kind::Socket => {
                self.header(if ext { ty + 7 } else { ty }, i);
                self.put32(i.nlink);
            }
            Kind::Dir { .. } => return Err(WriteError::Thread("directory as a leaf".into())),
        }
        if ext {
            self.put32(xattr);
        }
        self.emit()
    }

    fn file(&mut self, i: &Inode, size: u64, file: u32) -> WriteResult<u64> {
        let fd = self
            .files
            .get(file as usize)
            .ok_or_else(|| WriteError::Thread(format!("no data for file {file}")))?;
        let bs = u64::from(self.block_size);
        let want = if fd.frag.is_some() {
            size / bs
        } else {
            size.div_ceil(bs)
        };
        if fd.words.len() as u64 != want {
            return Err(WriteError::Thread(format!(
                "file {file} has {} blocks, want {want}",
                fd.words.len()
            )));
        }
        // Bytes in sparse blocks (mksquashfs keeps the value below the file size).
        let mut sparse: u64 = fd
            .words
            .iter()
            .enumerate()
            .filter(|(_, w)| **w == 0)
            .map(|(k, _)| (size - k as u64 * bs).min(bs))
            .sum();
        if sparse > 0 && sparse >= size {
            sparse = size - 1;
        }
        let (frag, frag_off) = fd.frag.unwrap_or((NONE32, 0));
        let ext = i.nlink > 1
            || size > u64::from(u32::MAX)
            || fd.start > u64::from(u32::MAX)
            || sparse > 0
            || i.xattr.is_some();
        if ext {
            self.header(9, i);
            self.put64(fd.start);
            self.put64(size);
            self.put64(sparse);
            self.put32(i.nlink);
            self.put32(frag);
            self.put32(frag_off);
            self.put32(i.xattr.unwrap_or(NONE32));
        } else {
            self.header(2, i);
            self.put32(fd.start as u32);
            self.put32(frag);
            self.put32(frag_off);
            self.put32(size as u32);
        }
        for w in &fd.words {
            self.buf.extend_from_slice(&w.to_le_bytes());
        }
        self.emit()
    }

    /// Writes the listing of directory `idx` and then its inode.
    fn directory(&mut self, idx: InodeIdx) -> WriteResult<u64> {
        let tree = self.tree;
        let i = &tree.inodes[idx as usize];
        let Kind::Dir { entries, parent } = &i.kind else {
            return Err(WriteError::Thread("not a directory".into()));
        };
        let mut items = Vec::with_capacity(entries.len());
        for e in entries {
            let c = &tree.inodes[e.inode as usize];
            items.push(Item {
                name: &e.name,
                number: c.number,
                ty: basic_type(&c.kind),
                iref: self.refs[e.inode as usize],
            });
        }
        let (listing, index) = listing(&items);
        let start_ref = self.dirs.reference();
        let u0 = self.dirs.uncompressed_pos();
        self.dirs.write(self.enc, &listing)?;
        let start_block = u32::try_from(start_ref >> 16)
            .map_err(|_| WriteError::Limit("directory table over 4 GiB".into()))?;
        let offset = (start_ref & 0xffff) as u16;
        let size = listing.len() as u64 + 3;
        let parent_no = if idx == 0 {
            // The root's parent is one past the last inode, as mksquashfs writes it.
            tree.inodes.len() as u32 + 1
        } else {
            tree.inodes[*parent as usize].number
        };
        if index.is_empty() && i.xattr.is_none() && size <= 0xffff {
            self.header(1, i);
            self.put32(start_block);
            self.put32(i.nlink);
            self.buf.extend_from_slice(&(size as u16).to_le_bytes());
            self.buf.extend_from_slice(&offset.to_le_bytes());
            self.put32(parent_no);
        } else {
            let size = u32::try_from(size)
                .map_err(|_| WriteError::Limit("a directory listing over 4 GiB".into()))?;
            let count = u16::try_from(index.len())
                .map_err(|_| WriteError::Limit("a directory index over 65535 entries".into()))?;
            self.header(8, i);
            self.put32(i.nlink);
            self.put32(size);
            self.put32(start_block);
            self.put32(parent_no);
            self.buf.extend_from_slice(&count.to_le_bytes());
            self.buf.extend_from_slice(&offset.to_le_bytes());
            self.put32(i.xattr.unwrap_or(NONE32));
            for (at, name) in index {
                // The metadata block holding the header this index entry points at.
                let block = self.dirs.block_of(u0 + u64::from(at)) as u32;
                self.put32(at);
                self.put32(block);
                self.put32(name.len() as u32 - 1);
                self.buf.extend_from_slice(name);
            }
        }
        self.emit()
    }
}

/// One directory entry to list.
struct Item<'a> {
    name: &'a [u8],
    number: u32,
    ty: u16,
    iref: u64,
}

/// Encodes a listing: runs of entries under headers (at most 256 entries, one inode-table
/// block and inode numbers within ±32767 of the header's base), starting a new header, and
/// an index entry, whenever 8 KiB of listing passed since the last index point. Returns the
/// bytes and the index entries (listing offset of the header, its first name).
fn listing<'n>(items: &[Item<'n>]) -> (Vec<u8>, Vec<(u32, &'n [u8])>) {
    const ENTRY: usize = 8;
    let mut out = Vec::new();
    let mut index = Vec::new();
    // (offset of the open header, its entry count, inode block, base number)
    let mut open: Option<(usize, u32, u32, u32)> = None;
    let mut mark = 0usize;
    for it in items {
        let block = (it.iref >> 16) as u32;
        let off = (it.iref & 0xffff) as u16;
        let span = out.len() + ENTRY + it.name.len() - mark > META_SIZE;
        let fits = match open {
            Some((_, count, b, base)) => {
                let delta = i64::from(it.number) - i64::from(base);
                count < MAX_HEADER_ENTRIES
                    && b == block
                    && !span
                    && (-32768..=32767).contains(&delta)
            }
            None => false,
        };
        if !fits {
            if let Some((at, count, ..)) = open {
                out[at..at + 4].copy_from_slice(&(count - 1).to_le_bytes());
                if span {
                    index.push((out.len() as u32, it.name));
                    mark = out.len();
                }
            }
            open = Some((out.len(), 0, block, it.number));
            out.extend_from_slice(&[0; 4]);
            out.extend_from_slice(&block.to_le_bytes());
            out.extend_from_slice(&it.number.to_le_bytes());
        }
        let Some((_, count, _, base)) = open.as_mut() else {
            continue;
        };
        *count += 1;
        let delta = (i64::from(it.number) - i64::from(*base)) as i16;
        out.extend_from_slice(&off.to_le_bytes());
        out.extend_from_slice(&delta.to_le_bytes());
        out.extend_from_slice(&it.ty.to_le_bytes());
        out.extend_from_slice(&(it.name.len() as u16 - 1).to_le_bytes());
        out.extend_from_slice(it.name);
    }
    if let Some((at, count, ..)) = open {
        out[at..at + 4].copy_from_slice(&(count - 1).to_le_bytes());
    }
    (out, index)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(
        names: &[Vec<u8>],
        iref: impl Fn(usize) -> u64,
        num: impl Fn(usize) -> u32,
    ) -> Vec<Item<'_>> {
        names
            .iter()
            .enumerate()
            .map(|(k, n)| Item {
                name: n,
                number: num(k),
                ty: 2,
                iref: iref(k),
            })
            .collect()
    }

    /// (name, inode number, inode reference) of one parsed entry.
    type Parsed = (Vec<u8>, u32, u64);

    /// Parses a listing back into its entries and the header offsets.
    fn parse(l: &[u8]) -> (Vec<Parsed>, Vec<usize>) {
        let u32at = |o: usize| u32::from_le_bytes(l[o..o + 4].try_into().expect("4"));
        let u16at = |o: usize| u16::from_le_bytes(l[o..o + 2].try_into().expect("2"));
        let (mut o, mut out, mut hdrs) = (0, vec![], vec![]);
        while o < l.len() {
            hdrs.push(o);
            let (count, block, base) = (u32at(o) + 1, u32at(o + 4), u32at(o + 8));
            assert!(count <= 256);
            o += 12;
            for _ in 0..count {
                let off = u16at(o);
                let delta = u16at(o + 2) as i16;
                let nlen = usize::from(u16at(o + 6)) + 1;
                let name = l[o + 8..o + 8 + nlen].to_vec();
                out.push((
                    name,
                    (i64::from(base) + i64::from(delta)) as u32,
                    (u64::from(block) << 16) | u64::from(off),
                ));
                o += 8 + nlen;
            }
        }
        (out, hdrs)
    }

    #[test]
    fn test_listing_headers() {
        let names: Vec<Vec<u8>> = (0..600).map(|i| format!("f{i:04}").into_bytes()).collect();
        // Entries 0..299 in inode block 0, the rest in block 100; one far inode number.
        let it = items(
            &names,
            |k| {
                if k < 300 {
                    k as u64 * 40
                } else {
                    (100 << 16) | k as u64
                }
            },
            |k| if k == 450 { 100_000 } else { 10 + k as u32 },
        );
        let (l, index) = listing(&it);
        let (back, hdrs) = parse(&l);
        let want: Vec<_> = it
            .iter()
            .map(|i| (i.name.to_vec(), i.number, i.iref))
            .collect();
        assert_eq!(back, want);
        // 256 | 44 (block change) | 150 | 1 (far number) | 149 => 5 headers, no index.
        assert_eq!(hdrs.len(), 5, "{hdrs:?}");
        assert!(index.is_empty());
    }

    #[test]
    fn test_listing_index_every_8k() {
        let names: Vec<Vec<u8>> = (0..3000)
            .map(|i| format!("a-rather-long-file-name-{i:06}").into_bytes())
            .collect();
        let it = items(&names, |_| 0, |k| 2 + k as u32);
        let (l, index) = listing(&it);
        let (back, hdrs) = parse(&l);
        assert_eq!(back.len(), 3000);
        assert!(l.len() > 3 * META_SIZE);
        assert!(index.len() >= l.len() / META_SIZE - 1, "{}", index.len());
        let mut last = 0;
        for (at, name) in &index {
            let at = *at as usize;
            assert!(hdrs.contains(&at), "index points at a header");
            assert!(at - last <= META_SIZE + 12);
            last = at;
            // the name is the header's first entry
            let first = &l[at + 12 + 8..at + 12 + 8 + name.len()];
            assert_eq!(first, *name);
        }
    }
}
