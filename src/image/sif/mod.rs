//! The SIF (Singularity Image Format) library: on-disk types, loading with validation,
//! creating and modifying images, the queries the runtime and the signer use, and the
//! `siftool` text formats.
//!
//! Layout and semantics follow the reference Go library (sylabs/sif v2, spec in
//! `shared/reference/sif-format.md`). Typical runtime use:
//!
//! ```no_run
//! use sifr::image::sif::{DataType, SifImage};
//! # fn main() -> Result<(), sifr::image::sif::SifError> {
//! let img = SifImage::open("busybox.sif")?;
//! if let Some(root) = img.primary_partition()? {
//!     img.check_partition_header(&root)?;
//!     println!("rootfs at {} ({} bytes, {:?})", root.offset, root.size, root.fs_type);
//! }
//! if let Some(d) = img.find_object(DataType::GenericJson, "inspect-metadata.json") {
//!     let json = img.read_object(d, 1 << 20)?;
//!     # let _ = json;
//! }
//! # Ok(()) }
//! ```

pub mod descriptor;
pub mod display;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod header;
pub mod image;
pub mod select;
pub mod tabwriter;
pub mod types;
pub mod writer;

pub use descriptor::{
    CryptoMessageMeta, DESCRIPTOR_LEN, Descriptor, Extra, GROUP_MASK, Link, PartitionMeta,
    SignatureMeta,
};
pub use error::{ErrorKind, SifError};
pub use header::{GO_ZERO_TIME, HEADER_LEN, Header};
pub use image::{MAX_DESCRIPTORS, ObjectReader, SharedReader, SifImage};
pub use select::{FsMagic, PartitionInfo};
pub use types::{Arch, DataType, FormatType, FsType, HashType, MessageType, PartType, SbomFormat};
pub use writer::{CreateOptions, DeleteOptions, ImageId, ObjectInput, When, next_aligned};
