//! Extended attributes: the xattr id table and the key/value metadata (inline and out-of-line
//! values), with the policy of which namespaces are shown.

use super::SquashFs;
use super::error::{Result, corrupt};
use super::inode::NONE32;
use super::meta::{META_SIZE, MetaReader};
use super::tables::read_index;

/// Largest value accepted (the kernel's XATTR_SIZE_MAX).
const MAX_VALUE: u32 = 65536;
/// Largest name accepted (XATTR_NAME_MAX).
const MAX_NAME: u16 = 255;
/// Type flag: the value is a reference to a value stored elsewhere.
pub(crate) const OUT_OF_LINE: u16 = 0x100;

/// Which xattr namespaces the reader exposes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum XattrPolicy {
    /// Only `user.*`. `security.*` (SELinux labels, file capabilities) and `trusted.*` come
    /// from the build host and mean nothing (or harm: overlayfs copy-up) in a rootless
    /// container, so they are hidden by default.
    #[default]
    UserOnly,
    /// Every stored attribute.
    All,
}

/// Callback of `xattr_walk`: (full name, value if fetched) -> keep going.
type XattrVisit<'a> = dyn FnMut(&[u8], Option<Vec<u8>>) -> bool + 'a;

/// Where the xattr tables are.
pub(crate) struct XattrTables {
    /// Start of the key/value metadata blocks.
    kv_start: u64,
    /// Where they end (the id table follows them).
    kv_end: u64,
    ids: u32,
    index: Vec<u64>,
}

impl XattrTables {
    pub(crate) fn load(fs: &SquashFs, start: u64) -> Result<Self> {
        let mut hdr = [0u8; 16];
        fs.read_exact_at("xattr id table header", start, &mut hdr)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(&hdr[0..8]);
        let kv_start = u64::from_le_bytes(a);
        let ids = u32::from_le_bytes([hdr[8], hdr[9], hdr[10], hdr[11]]);
        if kv_start >= start {
            return Err(corrupt(format!(
                "xattr data ({kv_start}) does not start before its id table ({start})"
            )));
        }
        let index = read_index(fs, "xattr id table", start + 16, u64::from(ids), 16)?;
        Ok(XattrTables {
            kv_start,
            kv_end: start,
            ids,
            index,
        })
    }
}

fn prefix(ty: u16) -> Option<&'static [u8]> {
    match ty & 0xff {
        0 => Some(b"user."),
        1 => Some(b"trusted."),
        2 => Some(b"security."),
        _ => None,
    }
}

impl SquashFs {
    /// Visits the (full name, value) pairs of xattr id `xid`. Values are only fetched when
    /// `want_value(name)` says so. Stops when `f` returns false.
    fn xattr_walk(
        &self,
        xid: u32,
        want_value: &dyn Fn(&[u8]) -> bool,
        f: &mut XattrVisit<'_>,
    ) -> Result<()> {
        let Some(t) = self.xattrs.as_ref() else {
            return Ok(());
        };
        if xid == NONE32 {
            return Ok(());
        }
        if xid >= t.ids {
            return Err(corrupt(format!(
                "xattr id {xid} >= xattr id count {}",
                t.ids
            )));
        }
        let Some(&block) = t.index.get(xid as usize / 512) else {
            return Err(corrupt(format!("xattr id {xid} has no id-table block")));
        };
        let mut r = MetaReader::new(self, block, (xid as usize % 512) * 16)?;
        let xref = r.u64()?;
        let count = r.u32()?;
        let mut kv = self.kv_reader(t, xref)?;
        let mut name = Vec::new();
        for _ in 0..count {
            let ty = kv.u16()?;
            let nlen = kv.u16()?;
            if nlen > MAX_NAME {
                return Err(corrupt(format!("xattr id {xid} has a {nlen}-byte name")));
            }
            let Some(p) = prefix(ty) else {
                return Err(corrupt(format!("xattr id {xid} has unknown type {ty:#x}")));
            };
            name.clear();
            name.extend_from_slice(p);
            name.extend(kv.bytes(usize::from(nlen))?);
            let vlen = kv.u32()?;
            let value = if ty & OUT_OF_LINE != 0 {
                if vlen != 8 {
                    return Err(corrupt(format!(
                        "xattr id {xid}: out-of-line reference of {vlen} bytes"
                    )));
                }
                let vref = kv.u64()?;
                if want_value(&name) {
                    let mut vr = self.kv_reader(t, vref)?;
                    let len = vr.u32()?;
                    Some(self.value(&mut vr, len, xid)?)
                } else {
                    None
                }
            } else if want_value(&name) {
                Some(self.value(&mut kv, vlen, xid)?)
            } else {
                kv.skip(u64::from(vlen))?;
                None
            };
            if !f(&name, value) {
                break;
            }
        }
        Ok(())
    }

    fn kv_reader(&self, t: &XattrTables, xref: u64) -> Result<MetaReader<'_>> {
        let (block, off) = (xref >> 16, (xref & 0xffff) as usize);
        let pos = t.kv_start.checked_add(block).filter(|&p| p < t.kv_end);
        match pos {
            Some(p) if off < META_SIZE => MetaReader::bounded(self, p, off, t.kv_end),
            _ => Err(corrupt(format!(
                "xattr reference {xref:#x} points outside the image"
            ))),
        }
    }

    fn value(&self, r: &mut MetaReader<'_>, len: u32, xid: u32) -> Result<Vec<u8>> {
        if len > MAX_VALUE {
            return Err(corrupt(format!("xattr id {xid} has a {len}-byte value")));
        }
        r.bytes(len as usize)
    }

    fn shown(&self, name: &[u8]) -> bool {
        self.opts.xattrs == XattrPolicy::All || name.starts_with(b"user.")
    }

    /// Names of the shown xattrs of xattr id `xid`.
    pub(crate) fn xattr_names(&self, xid: u32) -> Result<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        self.xattr_walk(xid, &|_| false, &mut |n, _| {
            if self.shown(n) {
                out.push(n.to_vec());
            }
            true
        })?;
        Ok(out)
    }

    /// Value of the shown xattr `name` of xattr id `xid`.
    pub(crate) fn xattr_value(&self, xid: u32, name: &[u8]) -> Result<Option<Vec<u8>>> {
        if !self.shown(name) {
            return Ok(None);
        }
        let mut found = None;
        self.xattr_walk(xid, &|n| n == name, &mut |n, v| {
            if n == name {
                found = v;
                return false;
            }
            true
        })?;
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_prefixes() {
        assert_eq!(prefix(0), Some(&b"user."[..]));
        assert_eq!(prefix(OUT_OF_LINE | 2), Some(&b"security."[..]));
        assert_eq!(prefix(3), None);
    }
}
