//! sifr-fuse: the in-process FUSE image driver: a read-only ext2/3/4 reader over ext4-view
//! (`ext`), the `ImageBackend` interface over it and over the squashfs reader of the
//! sifr-squashfs crate (`backend`), the read-only FUSE filesystem over any backend
//! (`server`), mounting without fusermount (`mount`) and the fuzzing entry points of both
//! readers (`fuzzing`). `squashfs` and `source` re-export sifr-squashfs (reader only: its
//! `write` feature is off here) so users of the driver name one crate.

pub mod backend;
pub mod ext;
pub mod fuzzing;
pub mod mount;
pub mod server;

pub use sifr_squashfs as squashfs;
pub use sifr_squashfs::source;

pub use backend::{BackendError, BackendResult, FsStats, ImageBackend};
pub use ext::ExtFs;
pub use mount::{MountError, MountHandle, MountOptions, mount_image};
pub use server::ImageFs;
pub use source::ImageSource;
pub use squashfs::{Attr, DirEntry, FileType, SquashFs};
