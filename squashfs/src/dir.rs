//! Directory listings: name lookup (jumping through the directory index of big directories)
//! and resumable listing with stable cookies.

use std::cmp::Ordering;

use super::error::{Result, SqfsError, corrupt};
use super::inode::DirInode;
use super::meta::{META_SIZE, MetaReader};
use super::{DirEntry, FileType, SquashFs};

/// Entries per listing header, at most (SQUASHFS_DIR_COUNT).
pub(crate) const MAX_HEADER_ENTRIES: u32 = 256;
/// Longest name (SQUASHFS_NAME_LEN).
pub(crate) const MAX_NAME: usize = 256;
const HEADER_SIZE: u64 = 12;
const ENTRY_SIZE: u64 = 8;

/// A cookie names the next entry to return: the listing offset of its header and how many of
/// that header's entries were already returned. 0 means "from the start".
fn make_cookie(header_pos: u64, done: u32) -> u64 {
    ((header_pos << 9) | u64::from(done)) + 1
}

fn split_cookie(cookie: u64) -> (u64, u32) {
    let c = cookie - 1;
    (c >> 9, (c & 0x1ff) as u32)
}

/// One header of a listing.
struct Header {
    count: u32,
    start: u32,
    base: u32,
}

/// Streaming parser of one directory's listing.
struct Listing<'a> {
    r: MetaReader<'a>,
    /// Bytes of the listing consumed so far.
    pos: u64,
    /// Real listing length (stored size minus 3).
    len: u64,
    fs: &'a SquashFs,
    dir_ino: u32,
}

impl<'a> Listing<'a> {
    /// Opens the listing at listing offset `pos`, using the directory index (when the inode has
    /// one) to skip straight to the right metadata block.
    fn open(fs: &'a SquashFs, dir_ino: u32, d: &DirInode, pos: u64) -> Result<Self> {
        let len = u64::from(d.size).saturating_sub(3);
        let (mut block, mut base) = (u64::from(d.start_block), 0u64);
        if pos > 0 && d.index_count > 0 {
            let mut ir = MetaReader::bounded(fs, d.index_pos.0, d.index_pos.1, fs.sb.dir_table)?;
            for _ in 0..d.index_count {
                let (index, start, _name) = read_index_entry(&mut ir, dir_ino)?;
                if u64::from(index) > pos {
                    break;
                }
                (block, base) = (u64::from(start), u64::from(index));
            }
        }
        let in_block = (u64::from(d.offset) + base) % META_SIZE as u64;
        let abs = fs
            .sb
            .dir_table
            .checked_add(block)
            .filter(|&a| a < fs.dir_table_end);
        let Some(abs) = abs else {
            return Err(corrupt(format!(
                "directory {dir_ino} listing block {block} is outside the image"
            )));
        };
        let mut r = MetaReader::bounded(fs, abs, in_block as usize, fs.dir_table_end)?;
        r.skip(pos - base)?;
        Ok(Listing {
            r,
            pos,
            len,
            fs,
            dir_ino,
        })
    }

    fn at_end(&self) -> bool {
        self.pos >= self.len
    }

    fn header(&mut self) -> Result<Header> {
        let count = self.r.u32()?.wrapping_add(1);
        let start = self.r.u32()?;
        let base = self.r.u32()?;
        self.pos += HEADER_SIZE;
        if count > MAX_HEADER_ENTRIES || self.pos > self.len {
            return Err(corrupt(format!(
                "directory {} has a bad listing header ({count} entries at listing offset {})",
                self.dir_ino,
                self.pos - HEADER_SIZE
            )));
        }
        Ok(Header { count, start, base })
    }

    /// Reads one entry into `name`; returns (inode number, inode reference, type).
    fn entry(&mut self, h: &Header, name: &mut Vec<u8>) -> Result<(u32, u64, FileType)> {
        let offset = self.r.u16()?;
        let delta = self.r.u16()? as i16;
        let ty = self.r.u16()?;
        let nlen = usize::from(self.r.u16()?) + 1;
        self.pos += ENTRY_SIZE + nlen as u64;
        if nlen > MAX_NAME || self.pos > self.len || usize::from(offset) >= META_SIZE {
            return Err(corrupt(format!(
                "directory {} has a bad entry (name length {nlen}, inode offset {offset})",
                self.dir_ino
            )));
        }
        name.resize(nlen, 0);
        self.r.read(name)?;
        if !is_file_name(name) {
            return Err(SqfsError::BadName {
                dir: self.dir_ino,
                name: String::from_utf8_lossy(name).into_owned(),
            });
        }
        let ino = i64::from(h.base) + i64::from(delta);
        let kind = match ty {
            1 => FileType::Directory,
            2 => FileType::Regular,
            3 => FileType::Symlink,
            4 => FileType::BlockDevice,
            5 => FileType::CharDevice,
            6 => FileType::Fifo,
            7 => FileType::Socket,
            _ => {
                return Err(corrupt(format!(
                    "directory {} entry has type {ty}",
                    self.dir_ino
                )));
            }
        };
        if ino < 1 || ino > i64::from(self.fs.sb.inode_count) {
            return Err(corrupt(format!(
                "directory {} entry names inode {ino}",
                self.dir_ino
            )));
        }
        let iref = (u64::from(h.start) << 16) | u64::from(offset);
        Ok((ino as u32, iref, kind))
    }
}

/// True when `name` can be an entry of a directory: one path component, so that joining it to
/// a directory never leaves that directory (no `/`, no NUL, not empty, not `.` or `..`). The
/// kernel refuses other names in a FUSE listing; an unpacker would write them anywhere.
pub(crate) fn is_file_name(name: &[u8]) -> bool {
    !name.is_empty() && name != b"." && name != b".." && !name.contains(&b'/') && !name.contains(&0)
}

/// Reads one directory-index entry: (listing offset, block, first name).
fn read_index_entry(r: &mut MetaReader<'_>, dir_ino: u32) -> Result<(u32, u32, Vec<u8>)> {
    let index = r.u32()?;
    let start = r.u32()?;
    let nlen = r.u32()?.wrapping_add(1) as usize;
    if nlen > MAX_NAME || nlen == 0 {
        return Err(corrupt(format!(
            "directory {dir_ino} index entry has a {nlen}-byte name"
        )));
    }
    Ok((index, start, r.bytes(nlen)?))
}

impl SquashFs {
    /// Finds `name` in directory `d`; returns (inode number, inode reference).
    pub(crate) fn dir_lookup(
        &self,
        dir_ino: u32,
        d: &DirInode,
        name: &[u8],
    ) -> Result<Option<(u32, u64)>> {
        if name.is_empty() || name.len() > MAX_NAME {
            return Ok(None);
        }
        // Start at the last index entry whose first name is <= name (names are sorted).
        let mut start = 0u64;
        if d.index_count > 0 {
            let mut ir =
                MetaReader::bounded(self, d.index_pos.0, d.index_pos.1, self.sb.dir_table)?;
            for _ in 0..d.index_count {
                let (index, _, first) = read_index_entry(&mut ir, dir_ino)?;
                if first.as_slice() > name {
                    break;
                }
                start = u64::from(index);
            }
        }
        let mut l = Listing::open(self, dir_ino, d, start)?;
        let mut buf = Vec::with_capacity(MAX_NAME);
        while !l.at_end() {
            let h = l.header()?;
            for _ in 0..h.count {
                let (ino, iref, _) = l.entry(&h, &mut buf)?;
                match buf.as_slice().cmp(name) {
                    Ordering::Equal => return Ok(Some((ino, iref))),
                    Ordering::Greater => return Ok(None),
                    Ordering::Less => {}
                }
            }
        }
        Ok(None)
    }

    /// Lists directory `d` from `cookie`, calling `f` per entry until it returns false.
    pub(crate) fn dir_list(
        &self,
        dir_ino: u32,
        d: &DirInode,
        cookie: u64,
        f: &mut dyn FnMut(DirEntry<'_>, u64) -> bool,
    ) -> Result<()> {
        let (start, mut skip) = if cookie == 0 {
            (0, 0)
        } else {
            split_cookie(cookie)
        };
        if start >= u64::from(d.size).saturating_sub(3) {
            return Ok(()); // at or past the end (seekdir can send any offset)
        }
        let mut l = Listing::open(self, dir_ino, d, start)?;
        let mut buf = Vec::with_capacity(MAX_NAME);
        while !l.at_end() {
            let hpos = l.pos;
            let h = l.header()?;
            if skip > h.count {
                return Err(corrupt(format!(
                    "stale directory cookie {cookie} for inode {dir_ino}"
                )));
            }
            for i in 0..h.count {
                let (ino, iref, kind) = l.entry(&h, &mut buf)?;
                if i < skip {
                    continue;
                }
                let next = if i + 1 == h.count {
                    make_cookie(l.pos, 0)
                } else {
                    make_cookie(hpos, i + 1)
                };
                self.remember(ino, iref);
                if !f(
                    DirEntry {
                        name: &buf,
                        ino,
                        kind,
                        next_cookie: next,
                    },
                    iref,
                ) {
                    return Ok(());
                }
            }
            skip = 0;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_file_names() {
        for ok in [&b"a"[..], b"...", b".a", b"a..", b"\xff\xfe"] {
            assert!(is_file_name(ok), "{ok:?}");
        }
        for bad in [
            &b""[..],
            b".",
            b"..",
            b"/",
            b"a/b",
            b"/etc/passwd",
            b"../x",
            b"a\0b",
        ] {
            assert!(!is_file_name(bad), "{bad:?}");
        }
    }

    /// An image (uncompressed metadata) whose directory `d` holds one file under each
    /// placeholder name, with every `(entry bytes, patched bytes)` pair then patched in.
    fn patched_image(files: &[&str], patches: &[(&[u8], &[u8])]) -> (tempfile::TempDir, SquashFs) {
        let t = tempfile::tempdir().expect("tempdir");
        let tree = t.path().join("tree");
        std::fs::create_dir_all(tree.join("d")).expect("mkdir");
        for f in files {
            std::fs::write(tree.join("d").join(f), b"x").expect("write");
        }
        let img = t.path().join("img.sqfs");
        let st = std::process::Command::new("mksquashfs")
            .arg(&tree)
            .arg(&img)
            .args([
                "-noI",
                "-noD",
                "-noF",
                "-noX",
                "-no-xattrs",
                "-quiet",
                "-no-progress",
            ])
            .status()
            .expect("mksquashfs runs (install squashfs-tools)");
        assert!(st.success());
        let mut b = std::fs::read(&img).expect("read");
        for (from, to) in patches {
            let at: Vec<usize> = b
                .windows(from.len())
                .enumerate()
                .filter(|(_, w)| w == from)
                .map(|(i, _)| i)
                .collect();
            assert_eq!(at.len(), 1, "{from:?}");
            b[at[0]..at[0] + to.len()].copy_from_slice(to);
        }
        std::fs::write(&img, b).expect("write");
        let fs = SquashFs::open(std::fs::File::open(&img).expect("open"), 0).expect("squashfs");
        (t, fs)
    }

    #[test]
    fn test_listing_refuses_names_that_are_not_file_names() {
        // (placeholder, hostile name); the entry's type (2: file) and length-1 fields are part
        // of the patched bytes, so that short placeholders are found exactly.
        let cases: [(&str, &[u8]); 5] = [
            ("Y", b"."),
            ("ZZ", b".."),
            ("QQQQQQQQQQQ", b"/etc/passwd"),
            ("RRRRRRRRRR", b"../../../x"),
            ("SSSS", b"a\0bc"),
        ];
        for (placeholder, name) in cases {
            let mut from = vec![2, 0, (placeholder.len() - 1) as u8, 0];
            from.extend_from_slice(placeholder.as_bytes());
            let mut to = from[..4].to_vec();
            to.extend_from_slice(name);
            let (_t, fs) = patched_image(&["fine", placeholder], &[(&from, &to)]);
            let d = fs
                .lookup(fs.root(), b"d")
                .expect("lookup")
                .expect("d exists");
            let mut seen = Vec::new();
            let err = fs
                .readdir(d, 0, &mut |e| {
                    seen.push(e.name.to_vec());
                    true
                })
                .expect_err("a listing with a bad name");
            assert!(
                matches!(err, SqfsError::BadName { dir, .. } if dir == d),
                "{err}"
            );
            let msg = err.to_string();
            let shown = format!("{:?}", String::from_utf8_lossy(name));
            assert!(msg.contains(&shown), "{msg}");
            assert!(
                !seen.iter().any(|n| n.as_slice() == name),
                "the bad name was handed out"
            );
            // A lookup that reaches the entry fails the same way, never answers it.
            assert!(matches!(
                fs.lookup(d, name),
                Err(SqfsError::BadName { .. }) | Ok(None)
            ));
        }
    }

    #[test]
    fn test_cookie_roundtrip() {
        for (pos, done) in [(0u64, 0u32), (12, 1), (0xffff_fff0, 255), (1 << 31, 256)] {
            let c = make_cookie(pos, done);
            assert_ne!(c, 0);
            assert_eq!(split_cookie(c), (pos, done));
        }
        assert!(make_cookie(0, 1) < make_cookie(0, 2));
        assert!(make_cookie(0, 255) < make_cookie(12, 0));
    }
}
