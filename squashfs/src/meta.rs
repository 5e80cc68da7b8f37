//! Positioned reads of the image and the metadata-block layer: 8 KiB blocks with a 2-byte
//! header, cached decompressed, and a cursor (`MetaReader`) that reads across block boundaries.

use std::sync::Arc;

use super::SquashFs;
use super::cache::Weighted;
use super::error::{Result, SqfsError, corrupt};

/// Decompressed size of a full metadata block.
pub(crate) const META_SIZE: usize = 8192;

/// One decompressed metadata block and where the next one starts.
pub(crate) struct MetaBlock {
    pub data: Box<[u8]>,
    /// Image offset of the following metadata block.
    pub next: u64,
}

impl Weighted for Arc<MetaBlock> {
    fn weight(&self) -> u64 {
        self.data.len() as u64 + 32
    }
}

impl SquashFs {
    /// Reads exactly `buf.len()` bytes at filesystem offset `pos`, refusing to go past the
    /// image's end.
    pub(crate) fn read_exact_at(&self, what: &'static str, pos: u64, buf: &mut [u8]) -> Result<()> {
        let len = buf.len() as u64;
        match pos.checked_add(len) {
            Some(end) if end <= self.sb.bytes_used => {}
            _ => {
                return Err(SqfsError::Truncated {
                    what,
                    pos,
                    len,
                    end: self.sb.bytes_used,
                });
            }
        }
        self.file
            .read_exact_at(buf, self.base + pos)
            .map_err(|source| SqfsError::Io {
                pos,
                len: buf.len(),
                source,
            })
    }

    /// The decompressed metadata block at image offset `pos` (from the cache when possible).
    pub(crate) fn meta_block(&self, pos: u64) -> Result<Arc<MetaBlock>> {
        self.meta_cache
            .get_or_load(pos, || self.load_meta_block(pos))
    }

    fn load_meta_block(&self, pos: u64) -> Result<Arc<MetaBlock>> {
        let mut hdr = [0u8; 2];
        self.read_exact_at("metadata block header", pos, &mut hdr)?;
        let h = u16::from_le_bytes(hdr);
        let size = usize::from(h & 0x7fff);
        if size == 0 || size > META_SIZE {
            return Err(corrupt(format!(
                "metadata block at {pos} claims {size} bytes (1..=8192)"
            )));
        }
        let mut raw = vec![0u8; size];
        self.read_exact_at("metadata block", pos + 2, &mut raw)?;
        let data: Box<[u8]> = if h & 0x8000 != 0 {
            raw.into_boxed_slice()
        } else {
            let mut out = vec![0u8; META_SIZE];
            let n = self.comp.decompress(&raw, &mut out, pos)?;
            if n == 0 {
                return Err(corrupt(format!(
                    "metadata block at {pos} decompresses to nothing"
                )));
            }
            out.truncate(n);
            out.into_boxed_slice()
        };
        Ok(Arc::new(MetaBlock {
            data,
            next: pos + 2 + size as u64,
        }))
    }
}

/// A read cursor in a chain of metadata blocks.
pub(crate) struct MetaReader<'a> {
    fs: &'a SquashFs,
    block: Arc<MetaBlock>,
    pos: u64,
    off: usize,
    /// Blocks at or past this offset belong to another table: reading on is corruption.
    end: u64,
}

impl<'a> MetaReader<'a> {
    /// Starts reading at byte `off` of the metadata block at image offset `pos`.
    pub(crate) fn new(fs: &'a SquashFs, pos: u64, off: usize) -> Result<Self> {
        Self::bounded(fs, pos, off, fs.sb.bytes_used)
    }

    /// Like `new`, for a table that ends at image offset `end`.
    pub(crate) fn bounded(fs: &'a SquashFs, pos: u64, off: usize, end: u64) -> Result<Self> {
        if pos >= end {
            return Err(corrupt(format!(
                "metadata block {pos} lies past the end ({end}) of its table"
            )));
        }
        let block = fs.meta_block(pos)?;
        if off > block.data.len() {
            return Err(corrupt(format!(
                "offset {off} is past the end of the {}-byte metadata block at {pos}",
                block.data.len()
            )));
        }
        Ok(MetaReader {
            fs,
            block,
            pos,
            off,
            end,
        })
    }

    /// The current position as (block offset, offset inside the block), normalised so that
    /// the offset is inside the block when more data follows.
    pub(crate) fn position(&self) -> (u64, usize) {
        (self.pos, self.off)
    }

    fn advance_block(&mut self) -> Result<()> {
        let next = self.block.next;
        if next >= self.end {
            return Err(corrupt(format!(
                "metadata runs past the end ({}) of its table",
                self.end
            )));
        }
        self.block = self.fs.meta_block(next)?;
        self.pos = next;
        self.off = 0;
        Ok(())
    }

    /// Fills `buf`, crossing into following blocks as needed.
    pub(crate) fn read(&mut self, mut buf: &mut [u8]) -> Result<()> {
        while !buf.is_empty() {
            if self.off >= self.block.data.len() {
                self.advance_block()?;
            }
            let avail = &self.block.data[self.off..];
            let n = avail.len().min(buf.len());
            let (head, rest) = buf.split_at_mut(n);
            head.copy_from_slice(&avail[..n]);
            self.off += n;
            buf = rest;
        }
        Ok(())
    }

    /// Skips `n` bytes.
    pub(crate) fn skip(&mut self, mut n: u64) -> Result<()> {
        while n > 0 {
            if self.off >= self.block.data.len() {
                self.advance_block()?;
            }
            let step = ((self.block.data.len() - self.off) as u64).min(n);
            self.off += step as usize;
            n -= step;
        }
        Ok(())
    }

    pub(crate) fn u16(&mut self) -> Result<u16> {
        let mut b = [0u8; 2];
        self.read(&mut b)?;
        Ok(u16::from_le_bytes(b))
    }

    pub(crate) fn u32(&mut self) -> Result<u32> {
        // Fast path: the whole word is in the current block.
        if let Some(b) = self.block.data.get(self.off..self.off + 4) {
            self.off += 4;
            return Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        }
        let mut b = [0u8; 4];
        self.read(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    pub(crate) fn u64(&mut self) -> Result<u64> {
        let mut b = [0u8; 8];
        self.read(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Reads `len` bytes into a new vector; `len` must already be bounded by the caller.
    pub(crate) fn bytes(&mut self, len: usize) -> Result<Vec<u8>> {
        let mut v = vec![0u8; len];
        self.read(&mut v)?;
        Ok(v)
    }
}
