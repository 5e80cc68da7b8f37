//! sifr-fuse: the in-process FUSE image driver (squashfs and ext3 readers, FUSE server).

pub mod squashfs;
