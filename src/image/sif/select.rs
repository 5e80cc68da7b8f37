//! How the runtime picks partitions, following Apptainer (`pkg/image/sif.go`, spec §8): the
//! single primary system partition is the rootfs; Data partitions are data sections;
//! Overlay partitions count only in the rootfs group; plain System partitions are ignored.

use super::descriptor::Descriptor;
use super::error::{ErrorKind, SifError};
use super::image::SifImage;
use super::types::{Arch, FsType, PartType};

/// Squashfs superblock magic.
const SQUASHFS_MAGIC: &[u8; 4] = b"hsqs";
/// Offset of the ext2/3/4 superblock magic (0xEF53, little-endian).
const EXT_MAGIC_OFFSET: u64 = 1024 + 56;

/// A partition object, with what the runtime needs to mount it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionInfo {
    /// Object ID.
    pub id: u32,
    /// Absolute offset of the file system in the image file.
    pub offset: u64,
    /// Size of the file system.
    pub size: u64,
    pub fs_type: FsType,
    pub part_type: PartType,
    pub arch: Arch,
    /// Raw group field (compare these to test "same group", as Apptainer does).
    pub group_raw: u32,
}

impl PartitionInfo {
    fn from_descriptor(d: &Descriptor) -> Option<PartitionInfo> {
        let p = d.partition()?;
        let range = d.range();
        Some(PartitionInfo {
            id: d.id,
            offset: range.start,
            size: range.end - range.start,
            fs_type: p.fs_type,
            part_type: p.part_type,
            arch: p.arch(),
            group_raw: d.group_raw,
        })
    }

    /// The group number (`None` when in no group).
    pub fn group(&self) -> Option<u32> {
        match self.group_raw & !super::descriptor::GROUP_MASK {
            0 => None,
            g => Some(g),
        }
    }
}

/// What the first bytes of a partition look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsMagic {
    Squashfs,
    Ext,
    Unrecognised,
}

impl SifImage {
    /// Every partition object, in slot order.
    pub fn partitions(&self) -> impl Iterator<Item = PartitionInfo> + '_ {
        self.objects().filter_map(PartitionInfo::from_descriptor)
    }

    /// The primary system partition (the rootfs): `None` when the image has none, an error
    /// when it has more than one.
    pub fn primary_partition(&self) -> Result<Option<PartitionInfo>, SifError> {
        let mut found: Option<PartitionInfo> = None;
        for p in self
            .partitions()
            .filter(|p| p.part_type == PartType::PrimSys)
        {
            if let Some(first) = found {
                return Err(self.err(ErrorKind::MultiplePrimary {
                    a: first.id,
                    b: p.id,
                }));
            }
            found = Some(p);
        }
        Ok(found)
    }

    /// The Data partitions.
    pub fn data_partitions(&self) -> Vec<PartitionInfo> {
        self.partitions()
            .filter(|p| p.part_type == PartType::Data)
            .collect()
    }

    /// The Overlay partitions in the rootfs group (none when there is no rootfs).
    pub fn overlay_partitions(&self) -> Result<Vec<PartitionInfo>, SifError> {
        let Some(root) = self.primary_partition()? else {
            return Ok(Vec::new());
        };
        Ok(self
            .partitions()
            .filter(|p| p.part_type == PartType::Overlay && p.group_raw == root.group_raw)
            .collect())
    }

    /// What file-system header the partition's data starts with.
    pub fn fs_magic(&self, p: &PartitionInfo) -> FsMagic {
        let mut magic = [0u8; 4];
        if p.size >= 4
            && self.backing.read_exact_at(&mut magic, p.offset).is_ok()
            && &magic == SQUASHFS_MAGIC
        {
            return FsMagic::Squashfs;
        }
        let mut ext = [0u8; 2];
        if p.size >= EXT_MAGIC_OFFSET + 2
            && self
                .backing
                .read_exact_at(&mut ext, p.offset + EXT_MAGIC_OFFSET)
                .is_ok()
            && ext == [0x53, 0xEF]
        {
            return FsMagic::Ext;
        }
        FsMagic::Unrecognised
    }

    /// Checks that a squashfs or ext3 partition starts with that file system's header.
    /// Encrypted, gocryptfs, raw and archive partitions are accepted without a check, as
    /// Apptainer does.
    pub fn check_partition_header(&self, p: &PartitionInfo) -> Result<(), SifError> {
        let expected = match p.fs_type {
            FsType::Squashfs => (FsMagic::Squashfs, "squashfs"),
            FsType::Ext3 => (FsMagic::Ext, "ext3"),
            _ => return Ok(()),
        };
        if self.fs_magic(p) == expected.0 {
            Ok(())
        } else {
            Err(self.err(ErrorKind::PartitionHeader {
                id: p.id,
                expected: expected.1,
            }))
        }
    }
}
