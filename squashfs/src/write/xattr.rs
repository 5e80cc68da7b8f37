//! Extended attributes for the writer: reading them from the source (which namespaces, per
//! `XattrMode`), de-duplicating whole sets, and laying out the key/value and xattr-id tables
//! (values over 128 bytes and repeated values stored out of line, as mksquashfs does).

use std::collections::HashMap;
use std::ffi::CStr;
use std::io;
use std::path::Path;

use super::compress::Encoder;
use super::error::{WriteError, WriteResult};
use super::meta::{LookupTable, MetaWriter, lookup_table};
use crate::xattr::OUT_OF_LINE;

/// Which extended attributes go into the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum XattrMode {
    /// None (the superblock says so: mksquashfs `-no-xattrs`).
    None,
    /// Only `user.*`.
    User,
    /// Every namespace squashfs can hold (`user.*`, `trusted.*`, `security.*`) that the
    /// process can read; others (`system.*`, e.g. POSIX ACLs) are skipped, as mksquashfs does.
    #[default]
    All,
}

/// Largest attribute list or value the kernel hands out (XATTR_LIST_MAX, XATTR_SIZE_MAX).
const XATTR_MAX: usize = 65536;
/// Values longer than this are stored out of line.
const INLINE_MAX: usize = 128;
/// Target size of one inode's stored list; above it more values go out of line.
const LIST_TARGET: usize = 65536;
/// Size of an out-of-line reference.
const OOL_REF: usize = 8;

/// One stored attribute: namespace type (0 user, 1 trusted, 2 security), the name without
/// its prefix, and the value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Xattr {
    pub ty: u16,
    pub name: Box<[u8]>,
    pub value: Box<[u8]>,
}

impl Xattr {
    fn full_len(&self) -> usize {
        prefix(self.ty).len() + self.name.len()
    }
}

fn prefix(ty: u16) -> &'static [u8] {
    match ty {
        0 => b"user.",
        1 => b"trusted.",
        _ => b"security.",
    }
}

fn classify(full: &[u8]) -> Option<(u16, &[u8])> {
    for ty in 0..3u16 {
        if let Some(rest) = full.strip_prefix(prefix(ty)) {
            return (!rest.is_empty()).then_some((ty, rest));
        }
    }
    None
}

/// Reads the attributes of `path` (not following symlinks) that `mode` selects, sorted.
pub(crate) fn read(path: &Path, c: &CStr, mode: XattrMode) -> WriteResult<Vec<Xattr>> {
    if mode == XattrMode::None {
        return Ok(Vec::new());
    }
    let err = |e: io::Error| WriteError::source(path, "read the xattrs of", e);
    let mut names = vec![0u8; 1024];
    let len = loop {
        // SAFETY: `c` is a valid C string and `names` is writable for its length.
        let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
        if n >= 0 {
            break n as usize;
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ENOTSUP) => return Ok(Vec::new()),
            Some(libc::ERANGE) if names.len() < XATTR_MAX => names.resize(XATTR_MAX, 0),
            _ => return Err(err(e)),
        }
    };
    let mut out = Vec::new();
    let mut value = Vec::new();
    for full in names[..len].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let Some((ty, name)) = classify(full) else {
            continue; // system.* and unknown namespaces: squashfs cannot store them
        };
        if mode == XattrMode::User && ty != 0 {
            continue;
        }
        let mut cname = full.to_vec();
        cname.push(0);
        let Ok(cn) = CStr::from_bytes_with_nul(&cname) else {
            continue;
        };
        match get(c, cn, &mut value) {
            Ok(()) => out.push(Xattr {
                ty,
                name: name.into(),
                value: value.as_slice().into(),
            }),
            // Removed since the listing: nothing to store.
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => {}
            // trusted.* and some security.* need privileges to read: skip what we cannot read.
            Err(e) if ty != 0 && matches!(e.raw_os_error(), Some(libc::EPERM | libc::EACCES)) => {}
            Err(e) => return Err(err(e)),
        }
    }
    out.sort();
    Ok(out)
}

/// Fetches one value into `buf`.
fn get(path: &CStr, name: &CStr, buf: &mut Vec<u8>) -> io::Result<()> {
    buf.resize(256, 0);
    loop {
        // SAFETY: valid C strings and a buffer writable for its length.
        let n = unsafe {
            libc::lgetxattr(
                path.as_ptr(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        if n >= 0 {
            buf.truncate(n as usize);
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ERANGE) && buf.len() < XATTR_MAX {
            buf.resize(XATTR_MAX, 0);
            continue;
        }
        return Err(e);
    }
}

/// De-duplicated attribute sets; the id of a set is its position.
#[derive(Default)]
pub(crate) struct XattrSets {
    sets: Vec<Vec<Xattr>>,
    ids: HashMap<Vec<Xattr>, u32>,
}

impl XattrSets {
    /// The xattr id of `set` (a new one when it was not seen before); None for an empty set.
    pub(crate) fn intern(&mut self, set: Vec<Xattr>) -> WriteResult<Option<u32>> {
        if set.is_empty() {
            return Ok(None);
        }
        if let Some(&id) = self.ids.get(&set) {
            return Ok(Some(id));
        }
        let id = u32::try_from(self.sets.len())
            .ok()
            .filter(|&i| i < u32::MAX)
            .ok_or_else(|| WriteError::Limit("more than 2^32-1 distinct xattr sets".into()))?;
        self.sets.push(set.clone());
        self.ids.insert(set, id);
        Ok(Some(id))
    }

    /// Number of distinct sets.
    pub(crate) fn len(&self) -> usize {
        self.sets.len()
    }

    /// The xattr tables for an image: the key/value blocks, the id blocks, the 16-byte
    /// header and the id index, to be written at image offset `at`. Returns the bytes and the
    /// offset of the header (what the superblock points to).
    pub(crate) fn tables(&self, enc: &mut Encoder, at: u64) -> WriteResult<LookupTable> {
        let mut kv = MetaWriter::new();
        // Where each value of 8+ bytes already is (to point repeats at it).
        let mut stored: HashMap<&[u8], u64> = HashMap::new();
        let mut ids = Vec::with_capacity(self.sets.len() * 16);
        for set in &self.sets {
            let ool = out_of_line(set);
            // Values that go out of line and are new are written first, on their own.
            let mut refs: Vec<Option<u64>> = vec![None; set.len()];
            for (i, x) in set.iter().enumerate() {
                if x.value.len() < OOL_REF {
                    continue;
                }
                if let Some(&r) = stored.get(&x.value[..]) {
                    refs[i] = Some(r);
                } else if ool[i] {
                    let r = kv.reference();
                    kv.write(enc, &(x.value.len() as u32).to_le_bytes())?;
                    kv.write(enc, &x.value)?;
                    stored.insert(&x.value, r);
                    refs[i] = Some(r);
                }
            }
            let start = kv.reference();
            let mut size = 0u64;
            for (x, r) in set.iter().zip(&refs) {
                let ty = x.ty | if r.is_some() { OUT_OF_LINE } else { 0 };
                kv.write(enc, &ty.to_le_bytes())?;
                kv.write(enc, &(x.name.len() as u16).to_le_bytes())?;
                kv.write(enc, &x.name)?;
                match r {
                    Some(r) => {
                        kv.write(enc, &(OOL_REF as u32).to_le_bytes())?;
                        kv.write(enc, &r.to_le_bytes())?;
                    }
                    None => {
                        let here = kv.reference();
                        kv.write(enc, &(x.value.len() as u32).to_le_bytes())?;
                        kv.write(enc, &x.value)?;
                        if x.value.len() >= OOL_REF {
                            stored.insert(&x.value, here);
                        }
                    }
                }
                size += (x.full_len() + 1 + x.value.len()) as u64;
            }
            ids.extend_from_slice(&start.to_le_bytes());
            ids.extend_from_slice(&(set.len() as u32).to_le_bytes());
            ids.extend_from_slice(&(size.min(u64::from(u32::MAX)) as u32).to_le_bytes());
        }
        let (mut bytes, _) = kv.finish(enc)?;
        let mut header = at.to_le_bytes().to_vec();
        header.extend_from_slice(&(self.sets.len() as u32).to_le_bytes());
        header.extend_from_slice(&0u32.to_le_bytes());
        let ids_at = at + bytes.len() as u64;
        let t = lookup_table(enc, &ids, &header, ids_at)?;
        bytes.extend_from_slice(&t.bytes);
        Ok(LookupTable {
            bytes,
            index_at: t.index_at - header.len() as u64,
        })
    }
}

/// Which values of a set are stored out of line: those over 128 bytes, and more (halving
/// the threshold down to 8 bytes) while the list would exceed 64 KiB.
fn out_of_line(set: &[Xattr]) -> Vec<bool> {
    let mut max = INLINE_MAX;
    loop {
        let ool: Vec<bool> = set.iter().map(|x| x.value.len() > max).collect();
        let total: usize = set
            .iter()
            .zip(&ool)
            .map(|(x, &o)| 8 + x.name.len() + if o { OOL_REF } else { x.value.len() })
            .sum();
        if total <= LIST_TARGET || max == OOL_REF {
            return ool;
        }
        max = (max / 2).max(OOL_REF);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn x(ty: u16, name: &str, value: &[u8]) -> Xattr {
        Xattr {
            ty,
            name: name.as_bytes().into(),
            value: value.into(),
        }
    }

    #[test]
    fn test_classify() {
        assert_eq!(classify(b"user.a"), Some((0, &b"a"[..])));
        assert_eq!(classify(b"security.selinux"), Some((2, &b"selinux"[..])));
        assert_eq!(classify(b"trusted.x"), Some((1, &b"x"[..])));
        assert_eq!(classify(b"system.posix_acl_access"), None);
        assert_eq!(classify(b"user."), None);
    }

    #[test]
    fn test_sets_are_deduplicated() {
        let mut s = XattrSets::default();
        assert_eq!(s.intern(vec![]).expect("intern"), None);
        let a = vec![x(0, "a", b"1")];
        let b = vec![x(0, "a", b"2")];
        assert_eq!(s.intern(a.clone()).expect("intern"), Some(0));
        assert_eq!(s.intern(b).expect("intern"), Some(1));
        assert_eq!(s.intern(a).expect("intern"), Some(0));
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn test_out_of_line_choice() {
        let small = x(0, "s", &[1; 100]);
        let big = x(0, "b", &[2; 129]);
        assert_eq!(out_of_line(&[small.clone(), big]), vec![false, true]);
        // 700 values of 100 bytes exceed 64 KiB inline: the threshold drops below 100.
        let many: Vec<Xattr> = (0..700)
            .map(|i| x(0, &format!("n{i}"), &[3; 100]))
            .collect();
        assert!(out_of_line(&many).iter().all(|&o| o));
        assert_eq!(out_of_line(&[small]), vec![false]);
    }
}
