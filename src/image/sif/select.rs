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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::sif::descriptor::{Extra, PartitionMeta};
    use crate::image::sif::types::DataType;
    use crate::image::sif::writer::{CreateOptions, ObjectInput, When};

    fn add(img: &mut SifImage, data: &[u8], fs: FsType, pt: PartType, group: Option<u32>) -> u32 {
        let mut r = data;
        let mut input = ObjectInput::new(DataType::Partition, &mut r);
        input.group = group;
        input.extra = Extra::Partition(PartitionMeta {
            fs_type: fs,
            part_type: pt,
            arch_code: Arch::Amd64.code(),
        });
        img.add_object(input, When::Auto).expect("add")
    }

    fn image() -> SifImage {
        SifImage::create_in_memory("s.sif", &CreateOptions::deterministic()).expect("create")
    }

    #[test]
    fn test_primary_data_and_overlay_partitions() {
        let mut img = image();
        assert_eq!(img.primary_partition().expect("ok"), None);
        assert!(img.overlay_partitions().expect("ok").is_empty());
        let mut ext = vec![0u8; 2048];
        ext[1080] = 0x53;
        ext[1081] = 0xEF;
        add(
            &mut img,
            b"hsqs-root",
            FsType::Squashfs,
            PartType::PrimSys,
            Some(1),
        );
        add(&mut img, &ext, FsType::Ext3, PartType::Overlay, Some(1));
        add(&mut img, &ext, FsType::Ext3, PartType::Overlay, Some(2));
        add(&mut img, b"data", FsType::Raw, PartType::Data, Some(2));
        add(&mut img, b"sys", FsType::Raw, PartType::System, Some(1));
        let root = img.primary_partition().expect("ok").expect("root");
        assert_eq!((root.id, root.offset, root.size), (1, 32768, 9));
        assert_eq!(root.group(), Some(1));
        assert_eq!(root.arch, Arch::Amd64);
        img.check_partition_header(&root).expect("squashfs magic");
        let overlays: Vec<u32> = img
            .overlay_partitions()
            .expect("ok")
            .iter()
            .map(|p| p.id)
            .collect();
        assert_eq!(overlays, [2]);
        let ov = img.overlay_partitions().expect("ok")[0];
        assert_eq!(img.fs_magic(&ov), FsMagic::Ext);
        img.check_partition_header(&ov).expect("ext magic");
        let data: Vec<u32> = img.data_partitions().iter().map(|p| p.id).collect();
        assert_eq!(data, [4]);
        // Raw partitions are accepted without a header check.
        img.check_partition_header(&img.data_partitions()[0])
            .expect("raw");
    }

    #[test]
    fn test_partition_header_mismatch() {
        let mut img = image();
        add(
            &mut img,
            b"notsquash",
            FsType::Squashfs,
            PartType::PrimSys,
            Some(1),
        );
        let root = img.primary_partition().expect("ok").expect("root");
        assert_eq!(img.fs_magic(&root), FsMagic::Unrecognised);
        let e = img.check_partition_header(&root).expect_err("mismatch");
        assert!(e.to_string().contains("squashfs header"), "{e}");
    }

    #[test]
    fn test_two_primary_partitions_are_an_error() {
        let mut img = image();
        add(
            &mut img,
            b"hsqs",
            FsType::Squashfs,
            PartType::PrimSys,
            Some(1),
        );
        add(
            &mut img,
            b"hsqs",
            FsType::Squashfs,
            PartType::System,
            Some(1),
        );
        // Make object 2 primary behind the library's back.
        let mut bytes = img.as_bytes().expect("mem").to_vec();
        let at = 4096 + 585 + 201 + 4;
        bytes[at..at + 4].copy_from_slice(&2i32.to_le_bytes());
        let img = SifImage::from_bytes(bytes, "s.sif").expect("loads");
        assert!(matches!(
            img.primary_partition().map_err(|e| e.kind),
            Err(ErrorKind::MultiplePrimary { a: 1, b: 2 })
        ));
    }
}
