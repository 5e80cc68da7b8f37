//! sifr-fuse: the in-process FUSE image driver: a lazy squashfs reader (`squashfs`), a
//! read-only ext2/3/4 reader over ext4-view (`ext`), the `ImageBackend` interface (`backend`),
//! the read-only FUSE filesystem over it (`server`), mounting without fusermount (`mount`)
//! and the fuzzing entry points of the readers (`fuzzing`).

pub mod backend;
pub mod ext;
pub mod fuzzing;
pub mod mount;
pub mod server;
pub mod source;
pub mod squashfs;

pub use backend::{BackendError, BackendResult, FsStats, ImageBackend};
pub use ext::ExtFs;
pub use mount::{MountError, MountHandle, MountOptions, mount_image};
pub use server::ImageFs;
pub use source::ImageSource;
pub use squashfs::{Attr, DirEntry, FileType, SquashFs};
