//! Regular-file data: block-list walking (with a per-file checkpoint index for big files),
//! sparse blocks, fragments (tail ends), and the decompressed data-block cache.

use std::sync::Arc;

use super::SquashFs;
use super::cache::Weighted;
use super::error::{Result, corrupt};
use super::inode::{FileInode, NONE32};
use super::meta::MetaReader;

/// Bit of a block-size word that marks an uncompressed block.
pub(crate) const UNCOMPRESSED: u32 = 1 << 24;
/// Blocks between two checkpoints of a file's block index.
pub(crate) const CHECKPOINT: u64 = 1024;

/// Checkpoints of one big file: for block `k * CHECKPOINT`, where its size word is in the
/// metadata and where its data starts on disk.
pub(crate) struct BlockIndex(Vec<((u64, usize), u64)>);

impl Weighted for Arc<BlockIndex> {
    fn weight(&self) -> u64 {
        (self.0.len() * std::mem::size_of::<((u64, usize), u64)>()) as u64 + 32
    }
}

/// A decoded block-size word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BlockWord {
    /// Bytes on disk (0 for a sparse block).
    pub size: u32,
    pub compressed: bool,
}

pub(crate) fn decode_word(w: u32, block_size: u32) -> Option<BlockWord> {
    let size = w & !UNCOMPRESSED;
    if size > block_size {
        return None;
    }
    Some(BlockWord {
        size,
        compressed: w & UNCOMPRESSED == 0,
    })
}

impl SquashFs {
    fn block_word(&self, r: &mut MetaReader<'_>, ino: u32) -> Result<BlockWord> {
        let w = r.u32()?;
        decode_word(w, self.sb.block_size)
            .ok_or_else(|| corrupt(format!("file inode {ino} has a block of {w:#x} bytes")))
    }

    /// Positions a block-list reader at block `k`; returns the reader and that block's disk
    /// offset.
    fn seek_block(&self, ino: u32, f: &FileInode, k: u64) -> Result<(MetaReader<'_>, u64)> {
        let (mut pos, mut disk, mut at) = (f.list_pos, f.blocks_start, 0u64);
        if k >= CHECKPOINT {
            let idx = self.block_index(ino, f)?;
            let cp = (k / CHECKPOINT) as usize;
            let Some(&(p, d)) = idx.0.get(cp) else {
                return Err(corrupt(format!(
                    "file inode {ino}: block {k} is past its block list"
                )));
            };
            (pos, disk, at) = (p, d, cp as u64 * CHECKPOINT);
        }
        let mut r = MetaReader::bounded(self, pos.0, pos.1, self.sb.dir_table)?;
        while at < k {
            disk = disk.saturating_add(u64::from(self.block_word(&mut r, ino)?.size));
            at += 1;
        }
        Ok((r, disk))
    }

    /// The checkpoint index of a file with more than `CHECKPOINT` blocks (built once, cached).
    fn block_index(&self, ino: u32, f: &FileInode) -> Result<Arc<BlockIndex>> {
        self.index_cache.get_or_load(ino, || {
            let n = f.block_count(self.sb.block_size);
            let mut r = MetaReader::bounded(self, f.list_pos.0, f.list_pos.1, self.sb.dir_table)?;
            let mut disk = f.blocks_start;
            let mut cps = Vec::new();
            for k in 0..n {
                if k % CHECKPOINT == 0 {
                    cps.push((r.position(), disk));
                }
                disk = disk.saturating_add(u64::from(self.block_word(&mut r, ino)?.size));
            }
            Ok(Arc::new(BlockIndex(cps)))
        })
    }

    /// A decompressed data or fragment block (from the cache when possible).
    fn data_block(&self, pos: u64, w: BlockWord) -> Result<Arc<[u8]>> {
        self.data_cache.get_or_load(pos, || {
            let mut raw = vec![0u8; w.size as usize];
            self.read_exact_at("data block", pos, &mut raw)?;
            let mut out = vec![0u8; self.sb.block_size as usize];
            let n = self.comp.decompress(&raw, &mut out, pos)?;
            out.truncate(n);
            Ok(Arc::from(out))
        })
    }

    /// Copies `out.len()` bytes starting at `skip` of a block (`want` bytes long once
    /// decompressed) into `out`.
    fn copy_block(
        &self,
        pos: u64,
        w: BlockWord,
        want: u64,
        skip: usize,
        out: &mut [u8],
    ) -> Result<()> {
        if w.size == 0 {
            out.fill(0); // sparse block
            return Ok(());
        }
        if !w.compressed {
            if u64::from(w.size) < want {
                return Err(corrupt(format!(
                    "uncompressed block at {pos} is {} bytes, want {want}",
                    w.size
                )));
            }
            return self.read_exact_at("data block", pos.saturating_add(skip as u64), out);
        }
        let data = self.data_block(pos, w)?;
        if (data.len() as u64) < want {
            return Err(corrupt(format!(
                "block at {pos} decompresses to {} bytes, want {want}",
                data.len()
            )));
        }
        match data.get(skip..skip + out.len()) {
            Some(src) => {
                out.copy_from_slice(src);
                Ok(())
            }
            None => Err(corrupt(format!(
                "block at {pos} is shorter than the file says"
            ))),
        }
    }

    /// Where fragment `idx` is on disk.
    fn fragment(&self, idx: u32) -> Result<(u64, BlockWord)> {
        if idx >= self.sb.fragment_count {
            return Err(corrupt(format!(
                "fragment {idx} >= fragment count {}",
                self.sb.fragment_count
            )));
        }
        let Some(&block) = self.frag_index.get(idx as usize / 512) else {
            return Err(corrupt(format!(
                "fragment {idx} has no fragment-table block"
            )));
        };
        let mut r = MetaReader::new(self, block, (idx as usize % 512) * 16)?;
        let start = r.u64()?;
        let w = r.u32()?;
        let w = decode_word(w, self.sb.block_size)
            .ok_or_else(|| corrupt(format!("fragment {idx} claims {w:#x} bytes")))?;
        Ok((start, w))
    }

    /// Reads file data at `offset` into `buf`; returns the byte count (0 at or past the end).
    pub(crate) fn file_read(
        &self,
        ino: u32,
        f: &FileInode,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<usize> {
        if offset >= f.size || buf.is_empty() {
            return Ok(0);
        }
        let n = (f.size - offset).min(buf.len() as u64) as usize;
        let bs = u64::from(self.sb.block_size);
        let nblocks = f.block_count(self.sb.block_size);
        let mut done = 0usize;
        let mut walker: Option<(MetaReader<'_>, u64)> = None;
        while done < n {
            let pos = offset + done as u64;
            let k = pos / bs;
            let skip = (pos % bs) as usize;
            let want = (f.size - k * bs).min(bs); // bytes this block holds
            let take = ((want as usize) - skip).min(n - done);
            let out = &mut buf[done..done + take];
            if k < nblocks {
                let (r, disk) = match walker.as_mut() {
                    Some(w) => (&mut w.0, &mut w.1),
                    None => {
                        let w = walker.insert(self.seek_block(ino, f, k)?);
                        (&mut w.0, &mut w.1)
                    }
                };
                let w = self.block_word(r, ino)?;
                let here = *disk;
                *disk = disk.saturating_add(u64::from(w.size));
                self.copy_block(here, w, want, skip, out)?;
            } else {
                if f.frag == NONE32 {
                    return Err(corrupt(format!(
                        "file inode {ino} has no fragment for its tail"
                    )));
                }
                let (fpos, w) = self.fragment(f.frag)?;
                let start = f.frag_offset as usize + skip;
                let tail_end = u64::from(f.frag_offset) + want;
                self.copy_block(fpos, w, tail_end, start, out)?;
            }
            done += take;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_decode_word() {
        assert_eq!(
            decode_word(0, 4096),
            Some(BlockWord {
                size: 0,
                compressed: true
            })
        );
        assert_eq!(
            decode_word(100, 4096),
            Some(BlockWord {
                size: 100,
                compressed: true
            })
        );
        assert_eq!(
            decode_word(UNCOMPRESSED | 4096, 4096),
            Some(BlockWord {
                size: 4096,
                compressed: false
            })
        );
        assert_eq!(decode_word(4097, 4096), None);
        assert_eq!(decode_word(0x8000_0000, 4096), None);
    }
}
