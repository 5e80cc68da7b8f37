//! The squashfs 4.0 superblock: parsing and sanity checks of the fixed 96-byte header.

use super::error::{Result, SqfsError, corrupt};

/// Size of the on-disk superblock.
pub(crate) const SUPERBLOCK_SIZE: usize = 96;
/// "hsqs" little-endian.
pub(crate) const MAGIC: u32 = 0x7371_7368;
/// Table pointer meaning "this table is absent".
pub(crate) const NO_TABLE: u64 = u64::MAX;

/// Superblock flag: no fragments are used.
#[cfg_attr(not(feature = "write"), allow(dead_code))] // set by the writer only
pub(crate) const FLAG_NO_FRAGMENTS: u16 = 0x0010;
/// Superblock flag: tail ends of files larger than a block are packed into fragments too.
#[cfg_attr(not(feature = "write"), allow(dead_code))] // set by the writer only
pub(crate) const FLAG_ALWAYS_FRAGMENTS: u16 = 0x0020;
/// Superblock flag: duplicate files were stored once.
#[cfg_attr(not(feature = "write"), allow(dead_code))] // set by the writer only
pub(crate) const FLAG_DUPLICATES: u16 = 0x0040;
/// Superblock flag: the image has an export (inode lookup) table.
#[cfg_attr(not(feature = "write"), allow(dead_code))] // set by the writer only
pub(crate) const FLAG_EXPORTABLE: u16 = 0x0080;
/// Superblock flag: xattrs were not stored.
pub(crate) const FLAG_NO_XATTRS: u16 = 0x0200;
/// Superblock flag: a compressor-options metadata block follows the superblock.
#[cfg_attr(not(feature = "write"), allow(dead_code))] // set by the writer only
pub(crate) const FLAG_COMPRESSOR_OPTIONS: u16 = 0x0400;

/// The fields of the superblock that the reader uses.
#[derive(Debug, Clone)]
pub(crate) struct Superblock {
    pub inode_count: u32,
    pub block_size: u32,
    pub fragment_count: u32,
    pub compression: u16,
    pub flags: u16,
    pub id_count: u16,
    pub root_inode_ref: u64,
    pub bytes_used: u64,
    pub id_table: u64,
    pub xattr_table: u64,
    pub inode_table: u64,
    pub dir_table: u64,
    pub fragment_table: u64,
    pub export_table: u64,
}

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(a)
}

impl Superblock {
    /// Parses and checks a superblock. `avail` is how many bytes the file holds from the
    /// filesystem start; the image must fit in it.
    pub(crate) fn parse(b: &[u8; SUPERBLOCK_SIZE], avail: u64) -> Result<Self> {
        let magic = u32_at(b, 0);
        if magic != MAGIC {
            return Err(SqfsError::BadMagic(magic));
        }
        let (major, minor) = (u16_at(b, 28), u16_at(b, 30));
        if (major, minor) != (4, 0) {
            return Err(SqfsError::Version(major, minor));
        }
        let sb = Superblock {
            inode_count: u32_at(b, 4),
            block_size: u32_at(b, 12),
            fragment_count: u32_at(b, 16),
            compression: u16_at(b, 20),
            flags: u16_at(b, 24),
            id_count: u16_at(b, 26),
            root_inode_ref: u64_at(b, 32),
            bytes_used: u64_at(b, 40),
            id_table: u64_at(b, 48),
            xattr_table: u64_at(b, 56),
            inode_table: u64_at(b, 64),
            dir_table: u64_at(b, 72),
            fragment_table: u64_at(b, 80),
            export_table: u64_at(b, 88),
        };
        let block_log = u16_at(b, 22);
        let bs = sb.block_size;
        if !(4096..=1 << 20).contains(&bs)
            || !bs.is_power_of_two()
            || 1u32 << block_log.min(31) != bs
        {
            return Err(corrupt(format!(
                "block size {bs} (log {block_log}) is not a power of two between 4 KiB and 1 MiB"
            )));
        }
        if sb.bytes_used > avail {
            return Err(SqfsError::Truncated {
                what: "filesystem (superblock bytes_used)",
                pos: 0,
                len: sb.bytes_used,
                end: avail,
            });
        }
        if sb.inode_count == 0 {
            return Err(corrupt("superblock says the image has no inodes"));
        }
        if sb.id_count == 0 {
            return Err(corrupt("superblock says the id table is empty"));
        }
        let end = sb.bytes_used;
        let in_image = |name: &str, pos: u64| -> Result<()> {
            if pos < SUPERBLOCK_SIZE as u64 || pos >= end {
                return Err(corrupt(format!(
                    "{name} starts at {pos}, outside the image ({SUPERBLOCK_SIZE}..{end})"
                )));
            }
            Ok(())
        };
        in_image("inode table", sb.inode_table)?;
        in_image("directory table", sb.dir_table)?;
        in_image("id table", sb.id_table)?;
        if sb.inode_table >= sb.dir_table {
            return Err(corrupt(format!(
                "inode table ({}) does not come before the directory table ({})",
                sb.inode_table, sb.dir_table
            )));
        }
        for (name, pos) in [
            ("fragment table", sb.fragment_table),
            ("export table", sb.export_table),
            ("xattr table", sb.xattr_table),
        ] {
            if pos != NO_TABLE {
                in_image(name, pos)?;
            }
        }
        Ok(sb)
    }

    /// Byte length of the inode table (it ends where the directory table starts).
    pub(crate) fn inode_table_len(&self) -> u64 {
        self.dir_table - self.inode_table
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> [u8; SUPERBLOCK_SIZE] {
        let mut b = [0u8; SUPERBLOCK_SIZE];
        b[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        b[4..8].copy_from_slice(&5u32.to_le_bytes());
        b[12..16].copy_from_slice(&131072u32.to_le_bytes());
        b[20..22].copy_from_slice(&1u16.to_le_bytes());
        b[22..24].copy_from_slice(&17u16.to_le_bytes());
        b[26..28].copy_from_slice(&1u16.to_le_bytes());
        b[28..30].copy_from_slice(&4u16.to_le_bytes());
        b[40..48].copy_from_slice(&4096u64.to_le_bytes());
        b[48..56].copy_from_slice(&4000u64.to_le_bytes());
        b[56..64].copy_from_slice(&NO_TABLE.to_le_bytes());
        b[64..72].copy_from_slice(&1000u64.to_le_bytes());
        b[72..80].copy_from_slice(&2000u64.to_le_bytes());
        b[80..88].copy_from_slice(&NO_TABLE.to_le_bytes());
        b[88..96].copy_from_slice(&NO_TABLE.to_le_bytes());
        b
    }

    #[test]
    fn test_parse_good() {
        let sb = Superblock::parse(&good(), 4096).expect("valid superblock");
        assert_eq!(sb.block_size, 131072);
        assert_eq!(sb.inode_table_len(), 1000);
    }

    #[test]
    fn test_rejects_bad_fields() {
        let mut b = good();
        b[0] = 0;
        assert!(matches!(
            Superblock::parse(&b, 4096),
            Err(SqfsError::BadMagic(_))
        ));
        let mut b = good();
        b[28] = 3;
        assert!(matches!(
            Superblock::parse(&b, 4096),
            Err(SqfsError::Version(3, 0))
        ));
        let mut b = good();
        b[22] = 16; // block_log disagrees with block_size
        assert!(matches!(
            Superblock::parse(&b, 4096),
            Err(SqfsError::Corrupt(_))
        ));
        // image longer than the file
        assert!(matches!(
            Superblock::parse(&good(), 4095),
            Err(SqfsError::Truncated { .. })
        ));
        let mut b = good();
        b[72..80].copy_from_slice(&900u64.to_le_bytes()); // dir table before inode table
        assert!(matches!(
            Superblock::parse(&b, 4096),
            Err(SqfsError::Corrupt(_))
        ));
        let mut b = good();
        b[80..88].copy_from_slice(&5000u64.to_le_bytes()); // fragment table past the end
        assert!(matches!(
            Superblock::parse(&b, 4096),
            Err(SqfsError::Corrupt(_))
        ));
    }
}
