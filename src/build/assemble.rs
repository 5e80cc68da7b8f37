//! Writing a built root filesystem out: as a SIF (sifr's own squashfs writer, then the
//! objects Apptainer's build writes, in its order: the definition file, JSON metadata, the
//! primary system partition) or as a sandbox directory.

use std::fs::File;
use std::path::{Path, PathBuf};

use sifr_squashfs::{Compressor, WriteOptions, Writer};

use super::workdir::Interruptible;

use crate::image::sif::{
    Arch, CreateOptions, DataType, Extra, FsType, ImageId, ObjectInput, PartType, PartitionMeta,
    SifImage, When,
};

/// Squashfs settings from `--mksquashfs-args` and `--reproducible`.
#[derive(Debug, Clone)]
pub struct SquashSettings {
    pub compressor: Compressor,
    pub level: Option<u32>,
    pub block_size: u32,
    /// Fixed time for the image (SOURCE_DATE_EPOCH, or --reproducible's default).
    pub fixed_time: Option<u32>,
    pub threads: usize,
    /// Every file root's in the image (mksquashfs `-all-root`): what Apptainer's build
    /// does when the user is not root, so an unprivileged build stores no subordinate ids.
    pub all_root: bool,
}

impl Default for SquashSettings {
    fn default() -> Self {
        SquashSettings {
            compressor: Compressor::Gzip,
            level: None,
            block_size: 128 << 10,
            fixed_time: None,
            threads: 0,
            all_root: false,
        }
    }
}

/// A bad `--mksquashfs-args` value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("--mksquashfs-args: {0}")]
pub struct SquashArgsError(pub String);

impl SquashSettings {
    /// Parses the mksquashfs options sifr's writer honours: `-comp NAME`, `-b SIZE` (bytes,
    /// or with K/M), `-Xcompression-level N`, `-processors N`, `-all-root`,
    /// `-noappend`/`-quiet` (ignored).
    pub fn parse_args(&mut self, args: &str) -> Result<(), SquashArgsError> {
        let words: Vec<&str> = args.split_whitespace().collect();
        let mut i = 0;
        let value = |i: usize, flag: &str| -> Result<&str, SquashArgsError> {
            words
                .get(i + 1)
                .copied()
                .ok_or_else(|| SquashArgsError(format!("{flag} needs a value")))
        };
        while i < words.len() {
            match words[i] {
                "-comp" => {
                    self.compressor = match value(i, "-comp")? {
                        "gzip" => Compressor::Gzip,
                        "xz" => Compressor::Xz,
                        "zstd" => Compressor::Zstd,
                        "lz4" => Compressor::Lz4,
                        "lzo" => Compressor::Lzo,
                        other => {
                            return Err(SquashArgsError(format!(
                                "unknown compressor {other:?} (gzip, xz, zstd, lz4, lzo)"
                            )));
                        }
                    };
                    i += 2;
                }
                "-b" => {
                    let v = value(i, "-b")?;
                    let (num, mult) = match v.chars().last() {
                        Some('K' | 'k') => (&v[..v.len() - 1], 1024),
                        Some('M' | 'm') => (&v[..v.len() - 1], 1 << 20),
                        _ => (v, 1),
                    };
                    let n: u32 = num
                        .parse()
                        .map_err(|_| SquashArgsError(format!("-b {v}: not a size")))?;
                    let bs = n.saturating_mul(mult);
                    if !(4096..=(1 << 20)).contains(&bs) || !bs.is_power_of_two() {
                        return Err(SquashArgsError(format!(
                            "-b {v}: the block size must be a power of two from 4K to 1M"
                        )));
                    }
                    self.block_size = bs;
                    i += 2;
                }
                "-Xcompression-level" => {
                    let v = value(i, "-Xcompression-level")?;
                    self.level = Some(v.parse().map_err(|_| {
                        SquashArgsError(format!("-Xcompression-level {v}: not a number"))
                    })?);
                    i += 2;
                }
                "-processors" => {
                    let v = value(i, "-processors")?;
                    self.threads = v
                        .parse()
                        .map_err(|_| SquashArgsError(format!("-processors {v}: not a number")))?;
                    i += 2;
                }
                "-all-root" => {
                    self.all_root = true;
                    i += 1;
                }
                "-noappend" | "-quiet" | "-no-progress" => i += 1,
                other => {
                    return Err(SquashArgsError(format!(
                        "option {other:?} is not supported by sifr's squashfs writer (supported: \
                         -comp, -b, -Xcompression-level, -processors, -all-root)"
                    )));
                }
            }
        }
        Ok(())
    }

    fn write_options(&self) -> WriteOptions {
        WriteOptions {
            compressor: self.compressor,
            level: self.level,
            block_size: self.block_size,
            reproducible: self.fixed_time.is_some(),
            mkfs_time: self.fixed_time,
            // As mksquashfs with SOURCE_DATE_EPOCH: every inode gets the fixed time too, so
            // files made during the build do not change the bytes.
            all_time: self.fixed_time,
            threads: self.threads,
            // Build-host security labels do not belong in a portable image.
            xattrs: sifr_fuse::squashfs::XattrMode::User,
            all_root: self.all_root,
            ..WriteOptions::default()
        }
    }
}

/// A failure writing the image.
#[derive(Debug, thiserror::Error)]
pub enum AssembleError {
    #[error("cannot write the squashfs image of {src}: {msg}")]
    Squash { src: PathBuf, msg: String },
    #[error(transparent)]
    Sif(#[from] crate::image::sif::SifError),
    #[error("cannot write {path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
}

/// Writes the squashfs image of `root` into `out`. Run it where the file owners are the
/// container's (as root of the build's fakeroot namespace).
pub fn write_squashfs(
    root: &Path,
    out: &Path,
    settings: &SquashSettings,
) -> Result<(), AssembleError> {
    let writer = Writer::new(settings.write_options()).map_err(|e| AssembleError::Squash {
        src: root.to_path_buf(),
        msg: e.to_string(),
    })?;
    let mut f = File::create(out).map_err(|err| AssembleError::Io {
        path: out.to_path_buf(),
        err,
    })?;
    let _progress = crate::progress::Progress::watch_file("Writing squashfs", out.to_path_buf());
    writer
        .write_dir(root, &mut f)
        .map_err(|e| AssembleError::Squash {
            src: root.to_path_buf(),
            msg: e.to_string(),
        })?;
    f.sync_all().map_err(|err| AssembleError::Io {
        path: out.to_path_buf(),
        err,
    })?;
    Ok(())
}

/// What goes into the SIF besides the root filesystem.
#[derive(Debug, Clone, Default)]
pub struct SifContents {
    pub deffile: Option<String>,
    /// `inspect-metadata.json`.
    pub metadata_json: Option<String>,
    /// Other JSON metadata objects by name (e.g. `oci-config.json`), in name order.
    pub extra_json: Vec<(String, String)>,
    /// Nil UUID and fixed times (`--reproducible`).
    pub reproducible: Option<i64>,
    /// The architecture the partition is labelled with (`pull --arch`); `None`: the host's.
    pub arch: Option<Arch>,
}

/// Writes a SIF at `dest` from a squashfs image file, atomically (a temporary file next to
/// it, renamed when complete and synced; removed on failure).
pub fn write_sif(squashfs: &Path, dest: &Path, c: &SifContents) -> Result<(), AssembleError> {
    let io = |err| AssembleError::Io {
        path: dest.to_path_buf(),
        err,
    };
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}.sifr-tmp-"))
        .tempfile_in(parent)
        .map_err(io)?;
    write_sif_to(squashfs, tmp.path(), c)?;
    tmp.persist(dest).map_err(|e| io(e.error))?;
    Ok(())
}

/// Writes a SIF at `path` (a new or empty file) from a squashfs image file, and syncs it.
/// Stops with an error as soon as the build is interrupted.
pub fn write_sif_to(squashfs: &Path, path: &Path, c: &SifContents) -> Result<(), AssembleError> {
    let when = match c.reproducible {
        Some(t) => When::At(t),
        None => When::Now,
    };
    let opts = CreateOptions {
        launch_script: b"#!/usr/bin/env run-singularity\n".to_vec(),
        id: if c.reproducible.is_some() {
            ImageId::Nil
        } else {
            ImageId::Random
        },
        time: when,
        ..CreateOptions::default()
    };
    let mut img = SifImage::create(path, &opts)?;
    if let Some(def) = &c.deffile {
        let mut r = def.as_bytes();
        img.add_object(ObjectInput::new(DataType::Deffile, &mut r), when)?;
    }
    let mut json: Vec<(String, &str)> = Vec::new();
    if let Some(m) = &c.metadata_json {
        json.push(("inspect-metadata.json".into(), m));
    }
    for (n, v) in &c.extra_json {
        json.push((n.clone(), v));
    }
    json.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, data) in json {
        let mut r = data.as_bytes();
        let mut input = ObjectInput::new(DataType::GenericJson, &mut r);
        input.name = name.into_bytes();
        img.add_object(input, when)?;
    }
    let mut f = Interruptible::new(File::open(squashfs).map_err(|err| AssembleError::Io {
        path: squashfs.to_path_buf(),
        err,
    })?);
    let mut input = ObjectInput::new(DataType::Partition, &mut f);
    input.extra = Extra::Partition(PartitionMeta {
        fs_type: FsType::Squashfs,
        part_type: PartType::PrimSys,
        arch_code: c.arch.unwrap_or_else(Arch::host).code(),
    });
    img.add_object(input, when)?;
    drop(img);
    // A SIF runs directly (its launch script), as Apptainer makes it.
    use std::os::unix::fs::PermissionsExt;
    let io = |err| AssembleError::Io {
        path: path.to_path_buf(),
        err,
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).map_err(io)?;
    File::open(path).and_then(|f| f.sync_all()).map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_parse_mksquashfs_args() {
        let mut s = SquashSettings::default();
        s.parse_args("-comp zstd -b 1M -Xcompression-level 19 -noappend")
            .expect("ok");
        assert_eq!(
            (s.compressor, s.block_size, s.level),
            (Compressor::Zstd, 1 << 20, Some(19))
        );
        assert!(s.parse_args("-comp brotli").is_err());
        assert!(s.parse_args("-b 3000").is_err());
        assert!(s.parse_args("-e /x").is_err());
        assert!(s.parse_args("-comp").is_err());
        assert!(!s.all_root);
        s.parse_args("-all-root -processors 2").expect("ok");
        assert!(s.all_root && s.write_options().all_root);
        assert_eq!(s.threads, 2);
    }

    #[test]
    fn test_sif_of_a_tree_reads_back() {
        let t = tempfile::tempdir().expect("tmp");
        let root = t.path().join("root");
        std::fs::create_dir_all(root.join("etc")).expect("mkdir");
        std::fs::write(root.join("etc/hello"), "hi\n").expect("write");
        let sq = t.path().join("r.sqfs");
        write_squashfs(&root, &sq, &SquashSettings::default()).expect("squash");
        let out = t.path().join("out.sif");
        let c = SifContents {
            deffile: Some("Bootstrap: scratch\n".into()),
            metadata_json: Some("{}".into()),
            reproducible: Some(0),
            ..Default::default()
        };
        write_sif(&sq, &out, &c).expect("sif");
        let img = SifImage::open(&out).expect("open");
        let p = img.primary_partition().expect("ok").expect("partition");
        assert_eq!(p.fs_type, FsType::Squashfs);
        let fs = sifr_fuse::SquashFs::open(File::open(&out).expect("f"), p.offset).expect("fs");
        let etc = fs.lookup(fs.root(), b"etc").expect("lookup").expect("etc");
        assert!(fs.lookup(etc, b"hello").expect("lookup").is_some());
        // Reproducible: the same bytes twice.
        let out2 = t.path().join("out2.sif");
        write_sif(&sq, &out2, &c).expect("sif");
        assert_eq!(
            std::fs::read(&out).expect("r"),
            std::fs::read(&out2).expect("r")
        );
    }
}
