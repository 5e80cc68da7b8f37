//! Filling a build's root filesystem from an existing image, as root of the fakeroot
//! namespace: a local image (SIF, squashfs, ext, a Singularity 2.x `.simg`, sandbox) is
//! extracted or copied; an OCI image has its layers applied and its config turned into the
//! `/.singularity.d` files.

use std::path::Path;

use anyhow::Context as _;

use super::baseenv;
use super::context::Build;
use super::oci;
use crate::image::ImageKind;
use crate::image::extract;
use crate::launch::plan::RootSource;

/// Applies an OCI image's layers to `rootfs` as root of the fakeroot namespace (owners
/// from the layers), then writes the `/.singularity.d` skeleton and the runscript,
/// environment file and labels made from the image config.
pub fn unpack_oci(
    b: &Build,
    image: &oci::OciImage,
    rootfs: &Path,
) -> anyhow::Result<oci::ContainerMetadata> {
    let meta = image.metadata();
    for n in &meta.notes {
        log::warn!("{n}");
    }
    let (dest, m) = (rootfs.to_path_buf(), meta.clone());
    b.as_root(move || {
        std::fs::create_dir_all(&dest)
            .map_err(|e| format!("cannot create {}: {e}", dest.display()))?;
        let report = image
            .unpack(&dest, &oci::ApplyOptions::default())
            .map_err(|e| e.to_string())?;
        for n in &report.notes {
            log::info!("{n}");
        }
        log::debug!(
            "{} entries, {} whiteouts, {} opaque directories applied",
            report.entries,
            report.whiteouts,
            report.opaque_dirs
        );
        baseenv::write(&dest, true).map_err(|e| format!("cannot write /.singularity.d: {e}"))?;
        m.write_into(&dest)
            .map_err(|e| format!("cannot write the image metadata: {e}"))
    })?;
    Ok(meta)
}

/// Where the filesystem of a bare squashfs or ext image starts in its file (after a
/// Singularity 2.x `#!/usr/bin/env run-singularity` line, see `image::fs_offset`, as
/// exec finds it) and how long it is from there.
fn bare_extent(path: &Path) -> anyhow::Result<(u64, u64)> {
    let f = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let len = f
        .metadata()
        .with_context(|| format!("cannot read {}", path.display()))?
        .len();
    let offset = crate::image::fs_offset(&f);
    Ok((offset, len.saturating_sub(offset)))
}

/// Unpacks (or copies) an image's root filesystem into `rootfs` as fakeroot.
pub fn unpack_image(b: &Build, path: &Path, kind: ImageKind, rootfs: &Path) -> anyhow::Result<()> {
    let root = match kind {
        ImageKind::Sandbox => RootSource::Directory {
            path: path.to_path_buf(),
        },
        ImageKind::Squashfs => {
            let (offset, size) = bare_extent(path)?;
            RootSource::Squashfs {
                path: path.to_path_buf(),
                offset,
                size,
            }
        }
        ImageKind::Ext => {
            let (offset, size) = bare_extent(path)?;
            RootSource::Ext {
                path: path.to_path_buf(),
                offset,
                size,
            }
        }
        ImageKind::Sif => crate::image::source::sif_root(path)?,
    };
    let dest = rootfs.to_path_buf();
    match root {
        RootSource::Directory { path } => b.as_root(move || {
            extract::copy_tree(&path, &dest)
                .map(|_| ())
                .map_err(|e| e.to_string())
        }),
        RootSource::Squashfs { path, offset, .. } => {
            let f = std::fs::File::open(&path)
                .with_context(|| format!("cannot open {}", path.display()))?;
            b.as_root(move || {
                let shown = path.display();
                let fs =
                    sifr_fuse::SquashFs::open(f, offset).map_err(|e| format!("{shown}: {e}"))?;
                extract::extract_image(&fs, &dest)
                    .map(|_| ())
                    .map_err(|e| format!("{shown}: {e}"))
            })
        }
        RootSource::Ext { path, offset, size } => {
            let f = std::fs::File::open(&path)
                .with_context(|| format!("cannot open {}", path.display()))?;
            b.as_root(move || {
                let fs = sifr_fuse::ExtFs::open_with(
                    f,
                    offset,
                    sifr_fuse::ext::Options {
                        size: Some(size),
                        threads: 1,
                    },
                )
                .map_err(|e| format!("{}: {e}", path.display()))?;
                extract::extract_image(&fs, &dest)
                    .map(|_| ())
                    .map_err(|e| format!("{}: {e}", path.display()))
            })
        }
    }
}
