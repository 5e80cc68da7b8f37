//! The lookup tables addressed by the superblock: id table (read whole at open), and the
//! block indexes of the fragment and export tables (only the index is read at open).

use super::SquashFs;
use super::error::{Result, corrupt};
use super::meta::{META_SIZE, MetaReader};

/// Reads the index of a table of `entries` entries of `entry_size` bytes: the list of
/// metadata-block offsets stored at `start`. Its size is checked against the image first.
pub(crate) fn read_index(
    fs: &SquashFs,
    what: &'static str,
    start: u64,
    entries: u64,
    entry_size: u64,
) -> Result<Vec<u64>> {
    let blocks = (entries * entry_size).div_ceil(META_SIZE as u64);
    let bytes = blocks * 8;
    if start
        .checked_add(bytes)
        .is_none_or(|e| e > fs.sb.bytes_used)
    {
        return Err(corrupt(format!(
            "{what} index ({blocks} blocks at {start}) does not fit in the image ({} bytes)",
            fs.sb.bytes_used
        )));
    }
    let mut raw = vec![0u8; bytes as usize];
    fs.read_exact_at(what, start, &mut raw)?;
    let mut out = Vec::with_capacity(blocks as usize);
    for c in raw.chunks_exact(8) {
        let mut a = [0u8; 8];
        a.copy_from_slice(c);
        let p = u64::from_le_bytes(a);
        if p >= fs.sb.bytes_used {
            return Err(corrupt(format!(
                "{what} block pointer {p} is past the image end"
            )));
        }
        out.push(p);
    }
    Ok(out)
}

impl SquashFs {
    /// Reads the whole id table (at most 65535 ids, 256 KiB).
    pub(crate) fn load_ids(&self) -> Result<Vec<u32>> {
        let n = u64::from(self.sb.id_count);
        let index = read_index(self, "id table", self.sb.id_table, n, 4)?;
        let mut ids = Vec::with_capacity(n as usize);
        for (i, &block) in index.iter().enumerate() {
            let mut r = MetaReader::new(self, block, 0)?;
            let here = (n - i as u64 * 2048).min(2048);
            for _ in 0..here {
                ids.push(r.u32()?);
            }
        }
        Ok(ids)
    }

    /// uid/gid for an id-table index.
    pub(crate) fn id(&self, idx: u16) -> Result<u32> {
        self.ids
            .get(usize::from(idx))
            .copied()
            .ok_or_else(|| corrupt(format!("id index {idx} >= id count {}", self.ids.len())))
    }

    /// The inode reference of inode `ino` from the export table.
    pub(crate) fn export_lookup(&self, index: &[u64], ino: u32) -> Result<u64> {
        let i = (ino - 1) as usize;
        let Some(&block) = index.get(i / 1024) else {
            return Err(corrupt(format!("inode {ino} has no export-table block")));
        };
        MetaReader::new(self, block, (i % 1024) * 8)?.u64()
    }
}
