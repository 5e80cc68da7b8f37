//! Why an image's signatures do not verify.
//!
//! The texts follow the reference Go library (sylabs/sif `pkg/integrity`), which Apptainer
//! prints after `integrity: `, so that scripts matching Apptainer's messages keep working;
//! where the reference does not say which object or key is at fault, sifr adds it.

/// A verification failure. Each message names the object, group or signature concerned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntegrityError {
    #[error(
        "non-signature object not associated with object group: object {id} ({kind}) is in no group"
    )]
    NonGroupedObject { id: u32, kind: &'static str },

    #[error("signature not found for object group {0}")]
    SignatureNotFoundForGroup(u32),

    #[error("signature not found for object {0}")]
    SignatureNotFoundForObject(u32),

    #[error("group not found: {0}")]
    GroupNotFound(u32),

    #[error("object not found: {0}")]
    ObjectNotFound(u32),

    #[error("no groups found: the image has no objects to verify")]
    NoGroups,

    #[error("signature object {id} not valid: {cause}")]
    SignatureNotValid { id: u32, cause: String },

    #[error(
        "fingerprint in descriptor does not correspond to signing entity (signature object {id}: descriptor says {descriptor}, signed by {signer})"
    )]
    FingerprintMismatch {
        id: u32,
        descriptor: String,
        signer: String,
    },

    #[error("object {0}: object not signed")]
    ObjectNotSigned(u32),

    #[error("object {0}: signed object not found")]
    SignedObjectNotFound(u32),

    #[error("header integrity compromised")]
    HeaderIntegrity,

    #[error("data object descriptor integrity compromised: {0}")]
    DescriptorIntegrity(u32),

    #[error("data object integrity compromised: {0}")]
    ObjectIntegrity(u32),

    #[error("data object integrity compromised: objects {0}")]
    GroupDataIntegrity(String),

    #[error("digest malformed: \"{text}\": {why}")]
    DigestMalformed { text: String, why: String },

    #[error("key material not provided")]
    NoKeyMaterial,

    #[error(
        "the image has no primary system partition, so there is no legacy signature to check by default; select objects with --sif-id or --group-id"
    )]
    NoPrimaryPartition,

    #[error("signature object {id} is {size} bytes, more than the {limit} a signature may have")]
    SignatureTooLarge { id: u32, size: u64, limit: u64 },

    #[error("reading the image: {0}")]
    Read(String),
}
