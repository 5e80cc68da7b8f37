//! Container images: SIF files, bare squashfs and ext3 images, sandbox directories.
