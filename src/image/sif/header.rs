//! The 128-byte SIF global header: explicit little-endian encode/decode, typed accessors,
//! and the 61-byte input the signature scheme hashes (§9.1).

use super::types::Arch;

/// Size of the encoded header.
pub const HEADER_LEN: usize = 128;
/// The magic bytes at offset 32.
pub const MAGIC: [u8; 10] = *b"SIF_MAGIC\0";
/// The only supported spec version (`01` + NUL).
pub const VERSION: [u8; 3] = *b"01\0";
/// Length of the launch script field.
pub const LAUNCH_SCRIPT_LEN: usize = 32;
/// Length of the header digest input: launch script, magic, version and UUID.
pub const HEADER_DIGEST_INPUT_LEN: usize = 61;
/// Go's zero `time.Time` as Unix seconds (0001-01-01 UTC): what "deterministic" images store.
pub const GO_ZERO_TIME: i64 = -62_135_596_800;

/// The global header, field for field as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// `#!` line, NUL-padded.
    pub launch_script: [u8; 32],
    /// `SIF_MAGIC\0` in a valid image.
    pub magic: [u8; 10],
    /// `01\0` in a valid image.
    pub version: [u8; 3],
    /// Architecture code of the primary system partition (`00\0` when none).
    pub arch: [u8; 3],
    /// Image UUID, raw bytes in printed order (all zero for deterministic images).
    pub id: [u8; 16],
    /// Creation time, Unix seconds.
    pub created_at: i64,
    /// Modification time, Unix seconds.
    pub modified_at: i64,
    /// Count of unused descriptor slots.
    pub descriptors_free: i64,
    /// Count of descriptor slots.
    pub descriptors_total: i64,
    /// Offset of the descriptor table.
    pub descriptors_offset: i64,
    /// Size of the descriptor table (total × 585).
    pub descriptors_size: i64,
    /// Start of the data section.
    pub data_offset: i64,
    /// (End of the last object) − data offset, as last written.
    pub data_size: i64,
}

/// Reads little-endian fields from a fixed-size buffer, front to back.
pub(crate) struct FieldReader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> FieldReader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        FieldReader { buf, pos: 0 }
    }

    /// The next `N` bytes; zeros past the end (callers pass buffers of the right size).
    pub(crate) fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        let end = self.pos.saturating_add(N).min(self.buf.len());
        if let Some(src) = self.buf.get(self.pos..end) {
            out[..src.len()].copy_from_slice(src);
        }
        self.pos = self.pos.saturating_add(N);
        out
    }

    pub(crate) fn u8(&mut self) -> u8 {
        self.bytes::<1>()[0]
    }

    pub(crate) fn i32(&mut self) -> i32 {
        i32::from_le_bytes(self.bytes())
    }

    pub(crate) fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.bytes())
    }

    pub(crate) fn i64(&mut self) -> i64 {
        i64::from_le_bytes(self.bytes())
    }
}

impl Header {
    /// Decodes a header. Never fails: validation is the loader's job.
    pub fn decode(buf: &[u8; HEADER_LEN]) -> Header {
        let mut r = FieldReader::new(buf);
        Header {
            launch_script: r.bytes(),
            magic: r.bytes(),
            version: r.bytes(),
            arch: r.bytes(),
            id: r.bytes(),
            created_at: r.i64(),
            modified_at: r.i64(),
            descriptors_free: r.i64(),
            descriptors_total: r.i64(),
            descriptors_offset: r.i64(),
            descriptors_size: r.i64(),
            data_offset: r.i64(),
            data_size: r.i64(),
        }
    }

    /// Encodes the header.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = Vec::with_capacity(HEADER_LEN);
        out.extend_from_slice(&self.launch_script);
        out.extend_from_slice(&self.magic);
        out.extend_from_slice(&self.version);
        out.extend_from_slice(&self.arch);
        out.extend_from_slice(&self.id);
        for v in [
            self.created_at,
            self.modified_at,
            self.descriptors_free,
            self.descriptors_total,
            self.descriptors_offset,
            self.descriptors_size,
            self.data_offset,
            self.data_size,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        let mut buf = [0u8; HEADER_LEN];
        buf.copy_from_slice(&out);
        buf
    }

    /// The launch script with trailing NULs removed (raw bytes; may be empty).
    pub fn launch_script(&self) -> &[u8] {
        trim_trailing_nul(&self.launch_script)
    }

    /// The spec version with trailing NULs removed (`01`).
    pub fn version_str(&self) -> &[u8] {
        trim_trailing_nul(&self.version)
    }

    /// The primary architecture.
    pub fn arch(&self) -> Arch {
        Arch::from_code(&self.arch)
    }

    /// The image UUID.
    pub fn uuid(&self) -> uuid::Uuid {
        uuid::Uuid::from_bytes(self.id)
    }

    /// True for images made "deterministic" (nil UUID, Go zero creation and modification
    /// times): modifications then keep the zero time instead of "now".
    pub fn is_deterministic(&self) -> bool {
        self.id == [0; 16] && self.created_at == GO_ZERO_TIME && self.modified_at == GO_ZERO_TIME
    }

    /// The 61 bytes the header digest covers (§9.1): launch script ‖ magic ‖ version ‖ UUID.
    pub fn digest_input(&self) -> [u8; HEADER_DIGEST_INPUT_LEN] {
        let mut out = [0u8; HEADER_DIGEST_INPUT_LEN];
        out[..32].copy_from_slice(&self.launch_script);
        out[32..42].copy_from_slice(&self.magic);
        out[42..45].copy_from_slice(&self.version);
        out[45..61].copy_from_slice(&self.id);
        out
    }
}

/// `s` without its trailing NUL bytes (Go's `bytes.TrimRight(s, "\x00")`).
pub fn trim_trailing_nul(s: &[u8]) -> &[u8] {
    let end = s.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Header {
        Header {
            launch_script: {
                let mut l = [0u8; 32];
                l[..5].copy_from_slice(b"#!abc");
                l
            },
            magic: MAGIC,
            version: VERSION,
            arch: *b"02\0",
            id: [7; 16],
            created_at: 1_593_475_316,
            modified_at: GO_ZERO_TIME,
            descriptors_free: 47,
            descriptors_total: 48,
            descriptors_offset: 4096,
            descriptors_size: 48 * 585,
            data_offset: 32176,
            data_size: -1,
        }
    }

    #[test]
    fn test_header_round_trip_and_layout() {
        let h = sample();
        let buf = h.encode();
        assert_eq!(Header::decode(&buf), h);
        assert_eq!(&buf[32..42], b"SIF_MAGIC\0");
        assert_eq!(&buf[42..45], b"01\0");
        assert_eq!(&buf[45..48], b"02\0");
        assert_eq!(&buf[48..64], &[7; 16]);
        assert_eq!(&buf[64..72], &1_593_475_316i64.to_le_bytes());
        assert_eq!(&buf[88..96], &48i64.to_le_bytes());
        assert_eq!(&buf[120..128], &(-1i64).to_le_bytes());
        assert_eq!(h.launch_script(), b"#!abc");
        assert_eq!(h.arch(), Arch::Amd64);
        assert!(!h.is_deterministic());
    }

    #[test]
    fn test_header_digest_input() {
        let h = sample();
        let d = h.digest_input();
        assert_eq!(&d[..5], b"#!abc");
        assert_eq!(&d[32..42], b"SIF_MAGIC\0");
        assert_eq!(&d[42..45], b"01\0");
        assert_eq!(&d[45..], &[7; 16]);
    }

    #[test]
    fn test_trim_trailing_nul() {
        assert_eq!(trim_trailing_nul(b"a\0b\0\0"), b"a\0b");
        assert_eq!(trim_trailing_nul(b"\0\0"), b"");
        assert_eq!(trim_trailing_nul(b""), b"");
    }
}
