//! The few ext superblock fields sifr checks itself before handing the image to ext4-view:
//! the magic, and sizes that bound what ext4-view allocates (its block group table is sized
//! by the superblock) by the bytes the image really has. Also the numbers statfs reports.

use super::error::{ExtError, Result};

/// Bytes before the superblock, and its size.
pub(crate) const SUPERBLOCK_OFFSET: u64 = 1024;
pub(crate) const SUPERBLOCK_SIZE: usize = 1024;

const MAGIC: u16 = 0xef53;
/// e2fsck's lower limit for blocks per group.
const MIN_BLOCKS_PER_GROUP: u32 = 8;
/// Largest block size: 64 KiB (`s_log_block_size` 6).
const MAX_LOG_BLOCK_SIZE: u32 = 6;
/// `s_feature_incompat` bits.
const INCOMPAT_RECOVER: u32 = 0x4;
const INCOMPAT_EXTENTS: u32 = 0x40;

/// Checked superblock numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Superblock {
    /// Block size in bytes.
    pub block_size: u32,
    /// Blocks in the filesystem.
    pub blocks: u64,
    /// Inodes in the filesystem.
    pub inodes: u32,
    /// Bytes the filesystem occupies (`blocks * block_size`).
    pub bytes: u64,
    /// Files may use extents (`extent` feature); without it every file has a block map.
    pub extents: bool,
    /// The journal holds transactions not yet written back (`needs_recovery`).
    pub needs_recovery: bool,
}

fn u16_at(b: &[u8], off: usize) -> u16 {
    b.get(off..off + 2)
        .map_or(0, |s| u16::from_le_bytes([s[0], s[1]]))
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    b.get(off..off + 4)
        .map_or(0, |s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

impl Superblock {
    /// Parses and checks the superblock bytes; `avail` is how many bytes of image the
    /// filesystem may use from its start.
    pub(crate) fn parse(raw: &[u8; SUPERBLOCK_SIZE], avail: u64) -> Result<Superblock> {
        let magic = u16_at(raw, 0x38);
        if magic != MAGIC {
            return Err(ExtError::BadMagic(magic));
        }
        let log = u32_at(raw, 0x18);
        if log > MAX_LOG_BLOCK_SIZE {
            return Err(ExtError::Corrupt(format!(
                "block size 2^{} is out of range (1 KiB to 64 KiB)",
                u64::from(log) + 10
            )));
        }
        let block_size = 1024u32 << log;
        // Like ext4-view, which reads the high half whatever the 64bit feature says.
        let blocks = u64::from(u32_at(raw, 0x150)) << 32 | u64::from(u32_at(raw, 0x4));
        let first_data_block = u64::from(u32_at(raw, 0x14));
        if blocks <= first_data_block {
            return Err(ExtError::Corrupt(format!(
                "block count {blocks} is not above the first data block {first_data_block}"
            )));
        }
        let bytes = blocks
            .checked_mul(u64::from(block_size))
            .ok_or_else(|| ExtError::Corrupt(format!("block count {blocks} overflows")))?;
        if bytes > avail {
            return Err(ExtError::Truncated {
                what: "filesystem",
                need: bytes,
                have: avail,
            });
        }
        // ext4-view keeps one descriptor per block group; a tiny blocks-per-group value would
        // make that table huge. With at least 8 blocks per group it stays under 0.2% of the
        // image size.
        let per_group = u32_at(raw, 0x20);
        if per_group < MIN_BLOCKS_PER_GROUP {
            return Err(ExtError::Corrupt(format!(
                "{per_group} blocks per group is below the minimum of {MIN_BLOCKS_PER_GROUP}"
            )));
        }
        let incompat = u32_at(raw, 0x60);
        Ok(Superblock {
            block_size,
            blocks,
            inodes: u32_at(raw, 0x0),
            bytes,
            extents: incompat & INCOMPAT_EXTENTS != 0,
            needs_recovery: incompat & INCOMPAT_RECOVER != 0,
        })
    }

    /// The largest file a block map can address: 12 direct blocks, then single, double
    /// and triple indirect blocks of `block_size / 4` pointers each.
    pub(crate) fn block_map_max_bytes(&self) -> u64 {
        let p = u64::from(self.block_size / 4);
        let blocks = 12 + p + p * p + p * p * p;
        blocks.saturating_mul(u64::from(self.block_size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(log: u32, blocks: u32, per_group: u32) -> [u8; SUPERBLOCK_SIZE] {
        let mut r = [0u8; SUPERBLOCK_SIZE];
        r[0x0..0x4].copy_from_slice(&64u32.to_le_bytes());
        r[0x4..0x8].copy_from_slice(&blocks.to_le_bytes());
        r[0x18..0x1c].copy_from_slice(&log.to_le_bytes());
        r[0x20..0x24].copy_from_slice(&per_group.to_le_bytes());
        r[0x38..0x3a].copy_from_slice(&MAGIC.to_le_bytes());
        r
    }

    #[test]
    fn test_parse_good() {
        let sb = Superblock::parse(&raw(2, 64, 32768), 1 << 20).expect("valid");
        assert_eq!(
            sb,
            Superblock {
                block_size: 4096,
                blocks: 64,
                inodes: 64,
                bytes: 64 * 4096,
                extents: false,
                needs_recovery: false,
            }
        );
        // 1 KiB blocks: 12 + 256 + 256^2 + 256^3 blocks.
        let mut one_k = raw(0, 64, 8192);
        one_k[0x60] = 0x44;
        let sb = Superblock::parse(&one_k, 1 << 20).expect("valid");
        assert!(sb.extents && sb.needs_recovery);
        assert_eq!(sb.block_map_max_bytes(), 16_843_020 * 1024);
    }

    #[test]
    fn test_parse_rejects() {
        let mut bad = raw(2, 64, 32768);
        bad[0x38] = 0;
        assert!(matches!(
            Superblock::parse(&bad, 1 << 20),
            Err(ExtError::BadMagic(_))
        ));
        assert!(matches!(
            Superblock::parse(&raw(2, 64, 32768), 64 * 4096 - 1),
            Err(ExtError::Truncated { .. })
        ));
        assert!(matches!(
            Superblock::parse(&raw(7, 64, 32768), u64::MAX),
            Err(ExtError::Corrupt(_))
        ));
        assert!(matches!(
            Superblock::parse(&raw(0, 64, 1), u64::MAX),
            Err(ExtError::Corrupt(_))
        ));
        assert!(matches!(
            Superblock::parse(&raw(0, 0, 256), u64::MAX),
            Err(ExtError::Corrupt(_))
        ));
        // A block count near 2^64 blocks overflows instead of wrapping.
        let mut huge = raw(6, u32::MAX, 256);
        huge[0x150..0x154].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            Superblock::parse(&huge, u64::MAX),
            Err(ExtError::Corrupt(_))
        ));
    }
}
