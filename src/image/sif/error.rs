//! Errors of the SIF library: every error names the image file and says what is wrong and,
//! where there is one, how to fix it.

use std::path::PathBuf;

use super::types::DataType;

/// An error about one SIF image. Displays as `<what> (<path>): <cause>`.
#[derive(Debug, thiserror::Error)]
#[error("{} ({}): {kind}", kind.what(), path.display())]
pub struct SifError {
    /// The image file.
    pub path: PathBuf,
    /// What went wrong.
    pub kind: ErrorKind,
}

impl SifError {
    pub(crate) fn new(path: impl Into<PathBuf>, kind: ErrorKind) -> SifError {
        SifError {
            path: path.into(),
            kind,
        }
    }
}

/// The cause of a [`SifError`].
#[derive(Debug, thiserror::Error)]
pub enum ErrorKind {
    // --- the file itself
    #[error("{err}")]
    Open { err: std::io::Error },
    #[error("reading the {what}: {err}")]
    Read {
        what: &'static str,
        err: std::io::Error,
    },
    #[error("writing the {what}: {err}")]
    Write {
        what: &'static str,
        err: std::io::Error,
    },
    #[error("the image was opened read-only")]
    ReadOnly,

    // --- validation on load
    #[error(
        "truncated file: {len} bytes, but a SIF header needs 128; the file is not a SIF image or was cut short"
    )]
    Truncated { len: u64 },
    #[error("wrong magic \"{found}\" at byte 32 (expected \"SIF_MAGIC\\0\"): not a SIF image")]
    BadMagic { found: String },
    #[error("unsupported SIF version \"{found}\" (only \"01\" is supported)")]
    UnsupportedVersion { found: String },
    #[error("absurd descriptor count {total} (at most {max} are supported): the header is corrupt")]
    AbsurdDescriptorCount { total: i64, max: i64 },
    #[error("descriptor table size {size} is not {total} × 585: the header is corrupt")]
    DescriptorTableSize { total: i64, size: i64 },
    #[error(
        "descriptor table at offset {offset} overlaps the 128-byte header: the header is corrupt"
    )]
    DescriptorTableOverlapsHeader { offset: i64 },
    #[error(
        "descriptor table ({offset}+{size}) lies outside the file ({len} bytes): the file is truncated or corrupt"
    )]
    DescriptorTableOutside { offset: i64, size: i64, len: u64 },
    #[error(
        "free descriptor count {free} is not between 0 and the total {total}: the header is corrupt"
    )]
    FreeCount { free: i64, total: i64 },
    #[error(
        "object {id} (descriptor slot {slot}) has unknown data type {raw:#x}: the image is corrupt or from a newer SIF version"
    )]
    UnknownDataType { slot: usize, id: u32, raw: i32 },
    #[error("descriptor slot {slot} is in use but has object ID 0: the image is corrupt")]
    ZeroObjectId { slot: usize },
    #[error("object ID {id} is used twice: the image is corrupt")]
    DuplicateObjectId { id: u32 },
    #[error(
        "object {id} ({offset}+{size}) lies outside the file ({len} bytes): the file is truncated or corrupt"
    )]
    ObjectOutOfRange {
        id: u32,
        offset: i64,
        size: i64,
        len: u64,
    },
    #[error(
        "object {id} ({offset}+{size}) overlaps the header or the descriptor table: the image is corrupt"
    )]
    ObjectOverlapsTable { id: u32, offset: i64, size: i64 },
    #[error("objects {a} and {b} overlap: the image is corrupt")]
    ObjectsOverlap { a: u32, b: u32 },

    // --- lookups
    #[error("no objects in image")]
    NoObjects,
    #[error("invalid object ID 0 (IDs start at 1)")]
    InvalidObjectId,
    #[error("no object with ID {id} (see 'sif list' for the IDs)")]
    ObjectNotFound { id: u32 },
    #[error("more than one primary system partition (objects {a} and {b})")]
    MultiplePrimary { a: u32, b: u32 },
    #[error("object {id} is {size} bytes, more than the {limit} bytes allowed here")]
    ObjectTooLarge { id: u32, size: i64, limit: u64 },
    #[error(
        "partition {id} should hold {expected} but its data does not start with a {expected} header"
    )]
    PartitionHeader { id: u32, expected: &'static str },
    #[error("signature object {id} has unsupported hash type {raw}")]
    UnsupportedHash { id: u32, raw: i32 },

    // --- modifications
    #[error("launch script is {len} bytes; it must be shorter than 32")]
    LaunchScriptTooLong { len: usize },
    #[error("descriptor capacity {capacity} is not supported (1 to {max})")]
    BadCapacity { capacity: i64, max: i64 },
    #[error("insufficient descriptor capacity to add data object(s) to image")]
    NoCapacity,
    #[error("image already contains a primary partition")]
    PrimaryExists,
    #[error("object name is {len} bytes; at most 128 fit")]
    NameTooLong { len: usize },
    #[error("metadata for {0} objects does not fit this data type")]
    MetadataMismatch(&'static str),
    #[error("metadata does not fit in the 384-byte descriptor field")]
    ExtraTooLarge,
    #[error("invalid group ID 0 (use no group instead)")]
    InvalidGroupId,
    #[error("invalid link to object 0")]
    InvalidLink,
    #[error("partition metadata has unknown architecture")]
    UnknownArch,
    #[error("invalid alignment {0}")]
    BadAlignment(i64),
    #[error("data object not a partition")]
    NotPartition { id: u32 },
    #[error("data object not a system partition")]
    NotSystemPartition { id: u32 },
    #[error(
        "the data section (offset {data_offset}) is not usable for new objects: the header is corrupt"
    )]
    BadDataOffset { data_offset: i64 },
    #[error("the image would grow past the largest supported size")]
    TooLarge,
    #[error("{data_type:?} object data is not valid: {why}")]
    BadObjectData { data_type: DataType, why: String },
    #[error(
        "{cause}; putting the image back as it was failed too: {err} (the image may be damaged: restore it from a copy)"
    )]
    NotRestored { cause: String, err: std::io::Error },
}

impl ErrorKind {
    /// The short "what failed" part of the message.
    pub fn what(&self) -> &'static str {
        use ErrorKind::*;
        match self {
            Open { .. } | Read { .. } => "cannot read SIF image",
            Write { .. } | ReadOnly | NotRestored { .. } => "cannot write SIF image",
            Truncated { .. }
            | BadMagic { .. }
            | UnsupportedVersion { .. }
            | AbsurdDescriptorCount { .. }
            | DescriptorTableSize { .. }
            | DescriptorTableOverlapsHeader { .. }
            | DescriptorTableOutside { .. }
            | FreeCount { .. }
            | UnknownDataType { .. }
            | ZeroObjectId { .. }
            | DuplicateObjectId { .. }
            | ObjectOutOfRange { .. }
            | ObjectOverlapsTable { .. }
            | ObjectsOverlap { .. }
            | MultiplePrimary { .. }
            | PartitionHeader { .. }
            | UnsupportedHash { .. } => "invalid SIF image",
            NoObjects | InvalidObjectId | ObjectNotFound { .. } | ObjectTooLarge { .. } => {
                "cannot get SIF object"
            }
            LaunchScriptTooLong { .. } | BadCapacity { .. } => "cannot create SIF image",
            NoCapacity
            | PrimaryExists
            | NameTooLong { .. }
            | MetadataMismatch(_)
            | ExtraTooLarge
            | InvalidGroupId
            | InvalidLink
            | UnknownArch
            | BadAlignment(_)
            | NotPartition { .. }
            | NotSystemPartition { .. }
            | BadDataOffset { .. }
            | TooLarge
            | BadObjectData { .. } => "cannot modify SIF image",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_error_names_path_and_cause_on_one_line() {
        let e = SifError::new("/x/img.sif", ErrorKind::Truncated { len: 3 });
        let s = e.to_string();
        assert!(s.starts_with("invalid SIF image (/x/img.sif): truncated file: 3 bytes"));
        assert!(!s.contains('\n'));
        let e = SifError::new("a.sif", ErrorKind::ObjectNotFound { id: 9 });
        assert_eq!(
            e.to_string(),
            "cannot get SIF object (a.sif): no object with ID 9 (see 'sif list' for the IDs)"
        );
    }
}
