//! Metadata output: `MetaWriter` packs bytes into 8 KiB metadata blocks (compressed when that
//! helps) and knows where every block lands; `lookup_table` lays out the fragment, export, id
//! and xattr-id tables as metadata blocks followed by their index of block positions.

use super::compress::Encoder;
use super::error::{WriteError, WriteResult};
use crate::meta::META_SIZE;

/// Header bit of a metadata block stored uncompressed.
const META_UNCOMPRESSED: u16 = 0x8000;

/// A metadata table being built in memory: compressed blocks plus the open block.
pub(crate) struct MetaWriter {
    /// Finished blocks, each a 2-byte header and its payload.
    out: Vec<u8>,
    /// Bytes of the open (not yet full) block.
    raw: Vec<u8>,
    /// Offset in `out` of every finished block, by block number.
    starts: Vec<u64>,
    scratch: Vec<u8>,
}

impl MetaWriter {
    pub(crate) fn new() -> Self {
        MetaWriter {
            out: Vec::new(),
            raw: Vec::with_capacity(META_SIZE),
            starts: Vec::new(),
            scratch: Vec::new(),
        }
    }

    /// Where the next byte goes, as a squashfs reference: (block offset in the table << 16) |
    /// offset inside the uncompressed block.
    pub(crate) fn reference(&self) -> u64 {
        ((self.out.len() as u64) << 16) | self.raw.len() as u64
    }

    /// Uncompressed position of the next byte, counted from the start of the table.
    pub(crate) fn uncompressed_pos(&self) -> u64 {
        self.starts.len() as u64 * META_SIZE as u64 + self.raw.len() as u64
    }

    /// Table offset of the block holding uncompressed position `u` (written or open).
    pub(crate) fn block_of(&self, u: u64) -> u64 {
        let k = (u / META_SIZE as u64) as usize;
        self.starts.get(k).copied().unwrap_or(self.out.len() as u64)
    }

    /// Appends bytes, finishing blocks as they fill.
    pub(crate) fn write(&mut self, enc: &mut Encoder, mut b: &[u8]) -> WriteResult<()> {
        while !b.is_empty() {
            let n = (META_SIZE - self.raw.len()).min(b.len());
            self.raw.extend_from_slice(&b[..n]);
            b = &b[n..];
            if self.raw.len() == META_SIZE {
                self.flush(enc)?;
            }
        }
        Ok(())
    }

    fn flush(&mut self, enc: &mut Encoder) -> WriteResult<()> {
        if self.raw.is_empty() {
            return Ok(());
        }
        self.starts.push(self.out.len() as u64);
        match enc.compress(&self.raw, &mut self.scratch)? {
            Some(n) => {
                self.out.extend_from_slice(&(n as u16).to_le_bytes());
                self.out.extend_from_slice(&self.scratch[..n]);
            }
            None => {
                let h = self.raw.len() as u16 | META_UNCOMPRESSED;
                self.out.extend_from_slice(&h.to_le_bytes());
                self.out.extend_from_slice(&self.raw);
            }
        }
        self.raw.clear();
        Ok(())
    }

    /// Finishes the open block; returns the table bytes and the table offset of every block.
    pub(crate) fn finish(mut self, enc: &mut Encoder) -> WriteResult<(Vec<u8>, Vec<u64>)> {
        self.flush(enc)?;
        Ok((self.out, self.starts))
    }
}

/// A lookup table as it goes into the image: metadata blocks, then the index of their
/// positions. `index_at` is the image offset of the index (what the superblock points to).
pub(crate) struct LookupTable {
    pub bytes: Vec<u8>,
    pub index_at: u64,
}

/// Lays out `entries` (already encoded, little-endian) as a lookup table that will be written
/// at image offset `at`, with `header` (the xattr table's) between the blocks and the index.
pub(crate) fn lookup_table(
    enc: &mut Encoder,
    entries: &[u8],
    header: &[u8],
    at: u64,
) -> WriteResult<LookupTable> {
    let mut w = MetaWriter::new();
    w.write(enc, entries)?;
    let (mut bytes, starts) = w.finish(enc)?;
    bytes.extend_from_slice(header);
    let index_at = at + bytes.len() as u64;
    for s in starts {
        bytes.extend_from_slice(&(at + s).to_le_bytes());
    }
    if bytes.len() as u64 > u64::from(u32::MAX) {
        return Err(WriteError::Limit("a lookup table is over 4 GiB".into()));
    }
    Ok(LookupTable { bytes, index_at })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Compressor;

    fn enc() -> Encoder {
        Encoder::new(Compressor::Gzip, 9, 131072).expect("gzip encoder")
    }

    /// Decodes a chain of metadata blocks back into bytes.
    fn decode(mut b: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        while b.len() >= 2 {
            let h = u16::from_le_bytes([b[0], b[1]]);
            let n = usize::from(h & 0x7fff);
            let payload = &b[2..2 + n];
            if h & META_UNCOMPRESSED != 0 {
                out.extend_from_slice(payload);
            } else {
                let mut d = vec![0u8; META_SIZE];
                let got = Compressor::Gzip
                    .decompress(payload, &mut d, 0)
                    .expect("inflate");
                out.extend_from_slice(&d[..got]);
            }
            b = &b[2 + n..];
        }
        out
    }

    #[test]
    fn test_blocks_and_references() {
        let mut e = enc();
        let mut w = MetaWriter::new();
        assert_eq!(w.reference(), 0);
        let data: Vec<u8> = (0..20000u32).map(|i| (i % 251) as u8).collect();
        w.write(&mut e, &data[..8192]).expect("write");
        // Exactly one full block: it is finished, the next byte starts block 2 at offset 0.
        let r = w.reference();
        assert_eq!(r & 0xffff, 0);
        assert!(r >> 16 > 0);
        assert_eq!(w.uncompressed_pos(), 8192);
        assert_eq!(w.block_of(8192), r >> 16);
        assert_eq!(w.block_of(100), 0);
        w.write(&mut e, &data[8192..]).expect("write");
        assert_eq!(w.reference() & 0xffff, (20000 - 16384) as u64);
        let (bytes, starts) = w.finish(&mut e).expect("finish");
        assert_eq!(starts.len(), 3);
        assert_eq!(decode(&bytes), data);
    }

    #[test]
    fn test_incompressible_block_is_stored() {
        let mut e = enc();
        let mut w = MetaWriter::new();
        let mut x = 7u32;
        let noise: Vec<u8> = (0..100)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (x >> 16) as u8
            })
            .collect();
        w.write(&mut e, &noise).expect("write");
        let (bytes, _) = w.finish(&mut e).expect("finish");
        assert_eq!(u16::from_le_bytes([bytes[0], bytes[1]]), 100 | 0x8000);
        assert_eq!(&bytes[2..], &noise[..]);
    }

    #[test]
    fn test_lookup_table_index() {
        let mut e = enc();
        let entries = vec![7u8; 8192 * 2 + 8];
        let t = lookup_table(&mut e, &entries, b"HDR", 1000).expect("table");
        // three blocks, then the header, then three u64 pointers
        let idx = (t.index_at - 1000) as usize;
        assert_eq!(&t.bytes[idx - 3..idx], b"HDR");
        assert_eq!(t.bytes.len(), idx + 24);
        let first = u64::from_le_bytes(t.bytes[idx..idx + 8].try_into().expect("8 bytes"));
        assert_eq!(first, 1000);
        assert_eq!(decode(&t.bytes[..idx - 3]), entries);
    }
}
