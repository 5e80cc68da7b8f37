//! The 585-byte object descriptor: explicit little-endian encode/decode, group and link
//! flag handling, the typed views of the "extra" field, and the 557-byte input the
//! signature scheme hashes (§9.1).

use super::header::{FieldReader, trim_trailing_nul};
use super::types::{
    Arch, DataType, FormatType, FsType, HashType, MessageType, PartType, SbomFormat,
};

/// Size of an encoded descriptor.
pub const DESCRIPTOR_LEN: usize = 585;
/// Length of the name field.
pub const NAME_LEN: usize = 128;
/// Length of the type-specific "extra" field.
pub const EXTRA_LEN: usize = 384;
/// Length of the descriptor digest input.
pub const DESCRIPTOR_DIGEST_INPUT_LEN: usize = 557;
/// Flag bits of the raw group and link fields.
pub const GROUP_MASK: u32 = 0xF000_0000;
/// Length of a signing-key fingerprint stored in a signature's entity field.
pub const FINGERPRINT_LEN: usize = 20;

/// An in-use descriptor. Free slots are not represented by this type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    /// Object type.
    pub data_type: DataType,
    /// Object ID (slot index + 1 for objects the Go library wrote).
    pub id: u32,
    /// Raw group field: group number | 0xF0000000 (0xF0000000 alone = no group).
    pub group_raw: u32,
    /// Raw link field: 0 = none; top four bits all set = link to a group.
    pub link_raw: u32,
    /// Absolute file offset of the data.
    pub offset: i64,
    /// Data length.
    pub size: i64,
    /// Size plus the alignment gap before the object (informational).
    pub size_with_padding: i64,
    /// Creation time, Unix seconds.
    pub created_at: i64,
    /// Modification time, Unix seconds.
    pub modified_at: i64,
    /// Deprecated owner uid (part of the signed digest).
    pub uid: i64,
    /// Deprecated owner gid (part of the signed digest).
    pub gid: i64,
    /// Name, NUL-padded.
    pub name: [u8; NAME_LEN],
    /// Type-specific metadata, zero-padded.
    pub extra: [u8; EXTRA_LEN],
}

/// What a raw descriptor slot holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Slot {
    /// `used` = 0: the slot is free, whatever else it holds.
    Free,
    /// An object.
    Used(Box<Descriptor>),
    /// `used` ≠ 0 with a data type this version does not know.
    UnknownType { id: u32, raw: i32 },
}

/// Where a link points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// No link.
    None,
    /// A link to an object ID.
    Object(u32),
    /// A link to a group.
    Group(u32),
}

impl Link {
    /// The raw field value.
    pub fn raw(self) -> u32 {
        match self {
            Link::None => 0,
            Link::Object(id) => id,
            Link::Group(g) => g | GROUP_MASK,
        }
    }

    /// Decodes a raw link field the way the Go library does: the ID is the value without
    /// the flag bits; it is a group link when all four flag bits are set.
    pub fn from_raw(raw: u32) -> Link {
        let id = raw & !GROUP_MASK;
        match (id, raw & GROUP_MASK == GROUP_MASK) {
            (0, _) => Link::None,
            (g, true) => Link::Group(g),
            (o, false) => Link::Object(o),
        }
    }
}

/// Partition metadata (extra of a partition descriptor).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionMeta {
    pub fs_type: FsType,
    pub part_type: PartType,
    /// The architecture code as stored.
    pub arch_code: [u8; 3],
}

impl PartitionMeta {
    /// The partition's architecture.
    pub fn arch(&self) -> Arch {
        Arch::from_code(&self.arch_code)
    }

    /// The 11 encoded bytes.
    pub fn encode(&self) -> [u8; 11] {
        let mut b = [0u8; 11];
        b[..4].copy_from_slice(&self.fs_type.raw().to_le_bytes());
        b[4..8].copy_from_slice(&self.part_type.raw().to_le_bytes());
        b[8..].copy_from_slice(&self.arch_code);
        b
    }
}

/// Signature metadata (extra of a signature descriptor).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignatureMeta {
    pub hash_type: HashType,
    /// The first 20 bytes of the entity field: the signing key's primary fingerprint, or
    /// `None` when they are all zero (DSSE signatures).
    pub fingerprint: Option<[u8; FINGERPRINT_LEN]>,
}

/// Crypto-message metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CryptoMessageMeta {
    pub format: FormatType,
    pub message: MessageType,
}

/// Typed content for a descriptor's extra field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Extra {
    /// Nothing (all zeros).
    None,
    Partition(PartitionMeta),
    Signature {
        hash_type: HashType,
        fingerprint: [u8; FINGERPRINT_LEN],
    },
    CryptoMessage(CryptoMessageMeta),
    Sbom(SbomFormat),
    /// OCI digest text (`sha256:<hex>`), for OCI root index and blob objects.
    OciDigest(String),
}

impl Extra {
    /// The encoded bytes (zero-padded to 384); `None` when the content does not fit.
    pub fn encode(&self) -> Option<[u8; EXTRA_LEN]> {
        let mut out = [0u8; EXTRA_LEN];
        let bytes: Vec<u8> = match self {
            Extra::None => Vec::new(),
            Extra::Partition(p) => p.encode().to_vec(),
            Extra::Signature {
                hash_type,
                fingerprint,
            } => {
                let mut v = hash_type.raw().to_le_bytes().to_vec();
                v.extend_from_slice(fingerprint);
                v
            }
            Extra::CryptoMessage(m) => {
                let mut v = m.format.raw().to_le_bytes().to_vec();
                v.extend_from_slice(&m.message.raw().to_le_bytes());
                v
            }
            Extra::Sbom(f) => f.raw().to_le_bytes().to_vec(),
            Extra::OciDigest(d) => d.as_bytes().to_vec(),
        };
        out.get_mut(..bytes.len())?.copy_from_slice(&bytes);
        Some(out)
    }

    /// The data type this metadata belongs to, if it is type-specific.
    pub fn data_types(&self) -> &'static [DataType] {
        match self {
            Extra::None => &[],
            Extra::Partition(_) => &[DataType::Partition],
            Extra::Signature { .. } => &[DataType::Signature],
            Extra::CryptoMessage(_) => &[DataType::CryptoMessage],
            Extra::Sbom(_) => &[DataType::Sbom],
            Extra::OciDigest(_) => &[DataType::OciRootIndex, DataType::OciBlob],
        }
    }
}

fn i32_at(b: &[u8], at: usize) -> i32 {
    let mut r = FieldReader::new(b.get(at..).unwrap_or(&[]));
    r.i32()
}

impl Slot {
    /// Decodes one descriptor slot. Never fails.
    pub fn decode(buf: &[u8; DESCRIPTOR_LEN]) -> Slot {
        let mut r = FieldReader::new(buf);
        let raw_type = r.i32();
        let used = r.u8() != 0;
        if !used {
            return Slot::Free;
        }
        let id = r.u32();
        let Some(data_type) = DataType::from_raw(raw_type) else {
            return Slot::UnknownType { id, raw: raw_type };
        };
        Slot::Used(Box::new(Descriptor {
            data_type,
            id,
            group_raw: r.u32(),
            link_raw: r.u32(),
            offset: r.i64(),
            size: r.i64(),
            size_with_padding: r.i64(),
            created_at: r.i64(),
            modified_at: r.i64(),
            uid: r.i64(),
            gid: r.i64(),
            name: r.bytes(),
            extra: r.bytes(),
        }))
    }
}

impl Descriptor {
    /// Encodes the descriptor (with `used` = 1).
    pub fn encode(&self) -> [u8; DESCRIPTOR_LEN] {
        let mut out = Vec::with_capacity(DESCRIPTOR_LEN);
        out.extend_from_slice(&self.data_type.raw().to_le_bytes());
        out.push(1);
        out.extend_from_slice(&self.id.to_le_bytes());
        out.extend_from_slice(&self.group_raw.to_le_bytes());
        out.extend_from_slice(&self.link_raw.to_le_bytes());
        for v in [
            self.offset,
            self.size,
            self.size_with_padding,
            self.created_at,
            self.modified_at,
            self.uid,
            self.gid,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&self.name);
        out.extend_from_slice(&self.extra);
        let mut buf = [0u8; DESCRIPTOR_LEN];
        buf.copy_from_slice(&out);
        buf
    }

    /// The group number, or `None` for an object in no group.
    pub fn group(&self) -> Option<u32> {
        match self.group_raw & !GROUP_MASK {
            0 => None,
            g => Some(g),
        }
    }

    /// Where the object links to.
    pub fn link(&self) -> Link {
        Link::from_raw(self.link_raw)
    }

    /// The name without its NUL padding (raw bytes).
    pub fn name(&self) -> &[u8] {
        trim_trailing_nul(&self.name)
    }

    /// The name as text (lossy for names that are not UTF-8).
    pub fn name_lossy(&self) -> String {
        String::from_utf8_lossy(self.name()).into_owned()
    }

    /// The object's byte range in the file (validated on load: non-negative, inside the file).
    pub fn range(&self) -> std::ops::Range<u64> {
        let start = u64::try_from(self.offset).unwrap_or(0);
        let len = u64::try_from(self.size).unwrap_or(0);
        start..start.saturating_add(len)
    }

    /// Partition metadata, for partition objects.
    pub fn partition(&self) -> Option<PartitionMeta> {
        if self.data_type != DataType::Partition {
            return None;
        }
        let mut arch_code = [0u8; 3];
        arch_code.copy_from_slice(&self.extra[8..11]);
        Some(PartitionMeta {
            fs_type: FsType::from_raw(i32_at(&self.extra, 0)),
            part_type: PartType::from_raw(i32_at(&self.extra, 4)),
            arch_code,
        })
    }

    /// True for a partition of type `pt`.
    pub fn is_partition_of_type(&self, pt: PartType) -> bool {
        self.partition().is_some_and(|p| p.part_type == pt)
    }

    /// Signature metadata, for signature objects.
    pub fn signature(&self) -> Option<SignatureMeta> {
        if self.data_type != DataType::Signature {
            return None;
        }
        let mut fp = [0u8; FINGERPRINT_LEN];
        fp.copy_from_slice(&self.extra[4..4 + FINGERPRINT_LEN]);
        Some(SignatureMeta {
            hash_type: HashType::from_raw(i32_at(&self.extra, 0)),
            fingerprint: (fp != [0; FINGERPRINT_LEN]).then_some(fp),
        })
    }

    /// Crypto-message metadata, for crypto-message objects.
    pub fn crypto_message(&self) -> Option<CryptoMessageMeta> {
        (self.data_type == DataType::CryptoMessage).then(|| CryptoMessageMeta {
            format: FormatType::from_raw(i32_at(&self.extra, 0)),
            message: MessageType::from_raw(i32_at(&self.extra, 4)),
        })
    }

    /// SBOM format, for SBOM objects.
    pub fn sbom_format(&self) -> Option<SbomFormat> {
        (self.data_type == DataType::Sbom).then(|| SbomFormat::from_raw(i32_at(&self.extra, 0)))
    }

    /// The stored OCI digest text (trailing NULs removed), for OCI root index and blob objects.
    pub fn oci_digest(&self) -> Option<&[u8]> {
        matches!(self.data_type, DataType::OciRootIndex | DataType::OciBlob)
            .then(|| trim_trailing_nul(&self.extra))
    }

    /// The 557 bytes the descriptor digest covers (§9.1), given the object's ID relative to
    /// the smallest ID in its group: data type ‖ used (1) ‖ relative ID ‖ raw link ‖ size ‖
    /// created-at ‖ UID ‖ GID ‖ name ‖ extra.
    pub fn digest_input(&self, relative_id: u32) -> [u8; DESCRIPTOR_DIGEST_INPUT_LEN] {
        let mut out = Vec::with_capacity(DESCRIPTOR_DIGEST_INPUT_LEN);
        out.extend_from_slice(&self.data_type.raw().to_le_bytes());
        out.push(1);
        out.extend_from_slice(&relative_id.to_le_bytes());
        out.extend_from_slice(&self.link_raw.to_le_bytes());
        for v in [self.size, self.created_at, self.uid, self.gid] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&self.name);
        out.extend_from_slice(&self.extra);
        let mut buf = [0u8; DESCRIPTOR_DIGEST_INPUT_LEN];
        buf.copy_from_slice(&out);
        buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Descriptor {
        let mut name = [0u8; NAME_LEN];
        name[..9].copy_from_slice(b"data.json");
        let extra = Extra::Partition(PartitionMeta {
            fs_type: FsType::Squashfs,
            part_type: PartType::PrimSys,
            arch_code: Arch::I386.code(),
        })
        .encode()
        .expect("fits");
        Descriptor {
            data_type: DataType::Partition,
            id: 2,
            group_raw: GROUP_MASK | 1,
            link_raw: 0,
            offset: 36864,
            size: 4096,
            size_with_padding: 8188,
            created_at: 1,
            modified_at: 2,
            uid: 1000,
            gid: 1001,
            name,
            extra,
        }
    }

    #[test]
    fn test_descriptor_round_trip_and_layout() {
        let d = sample();
        let buf = d.encode();
        assert_eq!(Slot::decode(&buf), Slot::Used(Box::new(d.clone())));
        assert_eq!(&buf[0..4], &0x4004i32.to_le_bytes());
        assert_eq!(buf[4], 1);
        assert_eq!(&buf[5..9], &2u32.to_le_bytes());
        assert_eq!(&buf[9..13], &0xF000_0001u32.to_le_bytes());
        assert_eq!(&buf[17..25], &36864i64.to_le_bytes());
        assert_eq!(&buf[57..65], &1000i64.to_le_bytes());
        assert_eq!(&buf[73..82], b"data.json");
        assert_eq!(&buf[201..205], &1i32.to_le_bytes());
        assert_eq!(&buf[205..209], &2i32.to_le_bytes());
        assert_eq!(&buf[209..212], b"01\0");
        assert_eq!(d.name(), b"data.json");
        assert_eq!(d.group(), Some(1));
        let p = d.partition().expect("partition");
        assert_eq!(p.fs_type, FsType::Squashfs);
        assert_eq!(p.part_type, PartType::PrimSys);
        assert_eq!(p.arch(), Arch::I386);
        assert!(d.signature().is_none());
    }

    #[test]
    fn test_free_and_unknown_slots() {
        assert_eq!(Slot::decode(&[0u8; DESCRIPTOR_LEN]), Slot::Free);
        let mut buf = [0xAAu8; DESCRIPTOR_LEN];
        buf[4] = 0;
        assert_eq!(Slot::decode(&buf), Slot::Free);
        let mut buf = sample().encode();
        buf[0..4].copy_from_slice(&0x4100i32.to_le_bytes());
        assert_eq!(Slot::decode(&buf), Slot::UnknownType { id: 2, raw: 0x4100 });
        // Any non-zero `used` byte counts, as Go's bool decoding does.
        let mut buf = sample().encode();
        buf[4] = 7;
        assert!(matches!(Slot::decode(&buf), Slot::Used(_)));
    }

    #[test]
    fn test_group_and_link_flags() {
        assert_eq!(Link::from_raw(0), Link::None);
        assert_eq!(Link::from_raw(GROUP_MASK), Link::None);
        assert_eq!(Link::from_raw(GROUP_MASK | 3), Link::Group(3));
        assert_eq!(Link::from_raw(5), Link::Object(5));
        // Only some flag bits set: an object link, flags dropped (as Go does).
        assert_eq!(Link::from_raw(0x1000_0005), Link::Object(5));
        assert_eq!(Link::Group(2).raw(), 0xF000_0002);
        assert_eq!(Link::Object(2).raw(), 2);
        let mut d = sample();
        d.group_raw = GROUP_MASK;
        assert_eq!(d.group(), None);
        d.group_raw = 0;
        assert_eq!(d.group(), None);
    }

    #[test]
    fn test_extra_views() {
        let mut d = sample();
        d.data_type = DataType::Signature;
        let mut fp = [0u8; 20];
        fp[0] = 0x12;
        fp[19] = 0x84;
        d.extra = Extra::Signature {
            hash_type: HashType::Sha384,
            fingerprint: fp,
        }
        .encode()
        .expect("fits");
        let s = d.signature().expect("signature");
        assert_eq!(s.hash_type, HashType::Sha384);
        assert_eq!(s.fingerprint, Some(fp));
        d.extra = [0; EXTRA_LEN];
        assert_eq!(d.signature().and_then(|s| s.fingerprint), None);

        d.data_type = DataType::CryptoMessage;
        d.extra = Extra::CryptoMessage(CryptoMessageMeta {
            format: FormatType::Pem,
            message: MessageType::RsaOaep,
        })
        .encode()
        .expect("fits");
        assert_eq!(
            d.crypto_message().map(|m| (m.format, m.message)),
            Some((FormatType::Pem, MessageType::RsaOaep))
        );

        d.data_type = DataType::OciBlob;
        d.extra = Extra::OciDigest("sha256:ab".into()).encode().expect("fits");
        assert_eq!(d.oci_digest(), Some(&b"sha256:ab"[..]));
        assert!(Extra::OciDigest("x".repeat(385)).encode().is_none());
    }

    #[test]
    fn test_digest_input_layout() {
        let d = sample();
        let b = d.digest_input(1);
        assert_eq!(b.len(), 557);
        assert_eq!(&b[0..4], &0x4004i32.to_le_bytes());
        assert_eq!(b[4], 1);
        assert_eq!(&b[5..9], &1u32.to_le_bytes());
        assert_eq!(&b[9..13], &0u32.to_le_bytes());
        assert_eq!(&b[13..21], &4096i64.to_le_bytes());
        assert_eq!(&b[21..29], &1i64.to_le_bytes());
        assert_eq!(&b[29..37], &1000i64.to_le_bytes());
        assert_eq!(&b[37..45], &1001i64.to_le_bytes());
        assert_eq!(&b[45..54], b"data.json");
        assert_eq!(&b[173..177], &1i32.to_le_bytes());
    }
}
