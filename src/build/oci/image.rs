//! A resolved OCI image, ready to unpack: its config, its layers bottom first, and where
//! their bytes are (an OCI layout directory such as the blob cache, or members of an
//! uncompressed tar archive). Every layer is verified while it is applied: against its blob
//! digest, or for `docker save` archives, which have none, against the config's `diff_id`.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::apply::{ApplyError, ApplyOptions, ApplyReport, apply_layer_with, decompress};
use super::cache::BlobCache;
use super::digest::{Digest, Mismatch, VerifyingReader, mismatch_of};
use super::metadata::ContainerMetadata;
use super::spec::{DOCKER_CONFIG, ImageConfig, OCI_CONFIG};

/// Why an image could not be unpacked.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("cannot read {what} of {image}: {err}")]
    Read {
        what: String,
        image: String,
        err: io::Error,
    },
    #[error("layer {index} ({layer}) of {image}: {source}")]
    Layer {
        index: usize,
        layer: String,
        image: String,
        source: ApplyError,
    },
    #[error("layer {index} of {image}: {mismatch}{removed}")]
    Corrupt {
        index: usize,
        image: String,
        mismatch: Box<Mismatch>,
        removed: &'static str,
    },
}

/// Where the bytes of an image's blobs are.
#[derive(Debug)]
pub(crate) enum Store {
    /// An OCI layout directory (`blobs/<alg>/<hex>` under it).
    Dir(PathBuf),
    /// An uncompressed tar: member name → (data offset, size).
    Tar {
        file: PathBuf,
        members: HashMap<String, (u64, u64)>,
    },
}

/// The name of a blob inside a layout.
pub(crate) fn blob_name(d: &Digest) -> String {
    format!("blobs/{}/{}", d.algorithm().name(), d.hex())
}

impl Store {
    /// Opens a member (a path relative to the layout or archive root) for reading.
    pub(crate) fn open(&self, name: &str) -> io::Result<(Box<dyn Read + Send>, u64)> {
        match self {
            Store::Dir(dir) => {
                let f = File::open(dir.join(name))?;
                let len = f.metadata()?.len();
                Ok((Box::new(f), len))
            }
            Store::Tar { file, members } => {
                let &(offset, size) = members.get(name).ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("no member {name:?} in the archive"),
                    )
                })?;
                let mut f = File::open(file)?;
                f.seek(SeekFrom::Start(offset))?;
                Ok((Box::new(f.take(size)), size))
            }
        }
    }

    /// Reads a whole member, refusing more than `limit` bytes.
    pub(crate) fn read(&self, name: &str, limit: u64) -> io::Result<Vec<u8>> {
        let (r, len) = self.open(name)?;
        if len > limit {
            return Err(io::Error::new(
                io::ErrorKind::FileTooLarge,
                format!("{name} is {len} bytes, more than the {limit} allowed"),
            ));
        }
        let mut v = Vec::new();
        r.take(limit).read_to_end(&mut v)?;
        Ok(v)
    }

    /// Where this store is, for messages.
    pub(crate) fn location(&self) -> &Path {
        match self {
            Store::Dir(d) => d,
            Store::Tar { file, .. } => file,
        }
    }
}

/// One layer of an image.
#[derive(Debug, Clone)]
pub struct Layer {
    /// The blob digest (absent for `docker save` archives).
    pub digest: Option<Digest>,
    /// The blob size, when a manifest gives it.
    pub size: Option<u64>,
    /// The uncompressed digest the config lists for this layer.
    pub diff_id: Option<Digest>,
    /// The manifest's media type (empty for `docker save` archives).
    pub media_type: String,
    /// The member holding the layer in the image's store.
    pub(crate) member: String,
}

/// An image whose manifest and config have been read and whose layers are at hand.
#[derive(Debug)]
pub struct OciImage {
    /// The source, as the user would write it (for messages).
    pub source: String,
    /// The manifest digest (absent for `docker save` archives).
    pub manifest_digest: Option<Digest>,
    /// The config blob's digest (the image ID).
    pub config_digest: Digest,
    /// The config blob, byte for byte.
    pub config_bytes: Vec<u8>,
    pub config: ImageConfig,
    pub layers: Vec<Layer>,
    pub(crate) store: Store,
    /// The cache the layers came from, to drop a damaged blob from it.
    pub(crate) cache: Option<BlobCache>,
}

/// Checks a config descriptor's media type names an image config (not an artifact).
pub(crate) fn is_image_config_type(media_type: &str) -> bool {
    media_type.is_empty() || media_type == OCI_CONFIG || media_type == DOCKER_CONFIG
}

/// Checks a layer's media type names a filesystem tarball.
pub(crate) fn is_layer_type(media_type: &str) -> bool {
    if media_type.contains("encrypted") {
        return false;
    }
    media_type.is_empty()
        || media_type.starts_with("application/vnd.oci.image.layer.v1.tar")
        || media_type.starts_with("application/vnd.oci.image.layer.nondistributable.v1.tar")
        || media_type.starts_with("application/vnd.docker.image.rootfs.diff.tar")
        || media_type.starts_with("application/vnd.docker.image.rootfs.foreign.diff.tar")
}

/// Why a manifest does not describe a filesystem image, if it does not.
pub(crate) fn image_problem(
    config: &super::spec::Descriptor,
    layers: &[super::spec::Descriptor],
) -> Option<String> {
    if !is_image_config_type(&config.media_type) {
        let hint = if config.media_type.contains("sylabs") {
            " (an OCI-SIF or SIF artifact; pull it with oras:// or as a SIF)"
        } else {
            ""
        };
        return Some(format!(
            "its config has media type {:?}{hint}",
            config.media_type
        ));
    }
    layers
        .iter()
        .find(|l| !is_layer_type(&l.media_type))
        .map(|l| format!("it has a layer of media type {:?}", l.media_type))
}

impl OciImage {
    /// A key naming this exact image: the manifest digest, else the config digest.
    pub fn cache_key(&self) -> &Digest {
        self.manifest_digest.as_ref().unwrap_or(&self.config_digest)
    }

    /// Apptainer's metadata files for this image's config.
    pub fn metadata(&self) -> ContainerMetadata {
        ContainerMetadata::from_config(&self.config.config)
    }

    /// Applies every layer, bottom first, to `dest` (an existing directory, normally empty).
    pub fn unpack(&self, dest: &Path, options: &ApplyOptions) -> Result<ApplyReport, ImageError> {
        let mut total = ApplyReport::default();
        for (index, layer) in self.layers.iter().enumerate() {
            log::debug!(
                "applying layer {}/{} of {}",
                index + 1,
                self.layers.len(),
                self.source
            );
            let report = self.unpack_layer(index, layer, dest, options)?;
            total.merge(report);
        }
        Ok(total)
    }

    fn unpack_layer(
        &self,
        index: usize,
        layer: &Layer,
        dest: &Path,
        options: &ApplyOptions,
    ) -> Result<ApplyReport, ImageError> {
        let label = layer
            .digest
            .as_ref()
            .or(layer.diff_id.as_ref())
            .map_or_else(|| layer.member.clone(), |d| d.to_string());
        let (reader, size) = self
            .store
            .open(&layer.member)
            .map_err(|err| ImageError::Read {
                what: format!("layer {index} ({label})"),
                image: self.source.clone(),
                err,
            })?;
        let progress = crate::progress::Progress::bytes(
            &format!("Unpacking layer {}/{}", index + 1, self.layers.len()),
            Some(size),
        );
        let reader = progress.reader(crate::build::workdir::Interruptible::new(reader));
        let what = format!("layer {label}");
        let result = match (&layer.digest, &layer.diff_id) {
            (Some(d), _) => {
                let mut v = VerifyingReader::new(reader, d.clone(), layer.size, what);
                apply_layer_with(&mut v, dest, options)
                    .and_then(|r| v.finish().map(|()| r).map_err(ApplyError::Read))
            }
            (None, Some(diff)) => {
                // Only the uncompressed digest is known: check the decompressed stream.
                decompress(reader).and_then(|plain| {
                    let mut v = VerifyingReader::new(plain, diff.clone(), None, what);
                    apply_layer_with(&mut v, dest, options)
                        .and_then(|r| v.finish().map(|()| r).map_err(ApplyError::Read))
                })
            }
            (None, None) => apply_layer_with(reader, dest, options),
        };
        result.map_err(|source| self.layer_error(index, layer, label, source))
    }

    fn layer_error(
        &self,
        index: usize,
        layer: &Layer,
        label: String,
        source: ApplyError,
    ) -> ImageError {
        if let ApplyError::Read(e) = &source
            && let Some(m) = mismatch_of(e)
        {
            let mut removed = "";
            if let (Some(cache), Some(d)) = (&self.cache, &layer.digest) {
                cache.remove(d);
                removed = " (removed from the cache; run the command again to fetch it anew)";
            }
            return ImageError::Corrupt {
                index,
                image: self.source.clone(),
                mismatch: Box::new(m.clone()),
                removed,
            };
        }
        ImageError::Layer {
            index,
            layer: label,
            image: self.source.clone(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_with(name: &str, data: &[u8]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, name, data).expect("append");
        b.into_inner().expect("tar")
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(data).expect("gzip");
        gz.finish().expect("gzip")
    }

    /// An image of two gzip layers stored in a layout directory.
    fn image_in(dir: &Path, layers: &[Vec<u8>], cache: Option<BlobCache>) -> OciImage {
        std::fs::create_dir_all(dir.join("blobs/sha256")).expect("mkdir");
        let mut out = Vec::new();
        for l in layers {
            let d = Digest::sha256_of(l);
            std::fs::write(dir.join(blob_name(&d)), l).expect("write");
            out.push(Layer {
                digest: Some(d.clone()),
                size: Some(l.len() as u64),
                diff_id: None,
                media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
                member: blob_name(&d),
            });
        }
        OciImage {
            source: "test-image".into(),
            manifest_digest: None,
            config_digest: Digest::sha256_of(b"{}"),
            config_bytes: b"{}".to_vec(),
            config: ImageConfig::default(),
            layers: out,
            store: Store::Dir(dir.to_path_buf()),
            cache,
        }
    }

    #[test]
    fn test_unpack_verifies_each_layer() {
        let t = tempfile::tempdir().expect("tempdir");
        let l1 = gzip(&tar_with("a", b"1"));
        let l2 = gzip(&tar_with("b", b"2"));
        let img = image_in(&t.path().join("layout"), &[l1, l2.clone()], None);
        let root = t.path().join("root");
        std::fs::create_dir(&root).expect("mkdir");
        let r = img.unpack(&root, &ApplyOptions::default()).expect("unpack");
        assert_eq!(r.entries, 2);
        assert_eq!(std::fs::read(root.join("b")).expect("read"), b"2");

        // Replace the stored second layer with another valid layer: it would apply, but its
        // digest differs, so it is refused.
        let p = t
            .path()
            .join("layout")
            .join(blob_name(img.layers[1].digest.as_ref().expect("digest")));
        assert_eq!(std::fs::read(&p).expect("read"), l2);
        std::fs::write(&p, gzip(&tar_with("b", b"evil"))).expect("write");
        let root2 = t.path().join("root2");
        std::fs::create_dir(&root2).expect("mkdir");
        let err = img
            .unpack(&root2, &ApplyOptions::default())
            .expect_err("corrupt");
        assert!(matches!(err, ImageError::Corrupt { index: 1, .. }), "{err}");
        assert!(err.to_string().contains("layer sha256:"), "{err}");
    }

    #[test]
    fn test_corrupt_cached_layer_is_dropped_from_the_cache() {
        let t = tempfile::tempdir().expect("tempdir");
        let cache = BlobCache::open(t.path().join("cache")).expect("cache");
        let l1 = gzip(&tar_with("a", b"1"));
        let mut img = image_in(&cache.layout_dir(), &[l1], Some(cache.clone()));
        let d = img.layers[0].digest.clone().expect("digest");
        std::fs::write(cache.blob_path(&d), b"truncated").expect("write");
        img.layers[0].size = Some(9);
        let root = t.path().join("root");
        std::fs::create_dir(&root).expect("mkdir");
        let err = img
            .unpack(&root, &ApplyOptions::default())
            .expect_err("corrupt");
        assert!(err.to_string().contains("removed from the cache"), "{err}");
        assert!(!cache.contains(&d, None));
    }

    #[test]
    fn test_diff_id_verification_for_archives() {
        let t = tempfile::tempdir().expect("tempdir");
        let layer = tar_with("x", b"data");
        std::fs::write(t.path().join("layer.tar"), &layer).expect("write");
        let mut img = image_in(&t.path().join("unused"), &[], None);
        img.store = Store::Dir(t.path().to_path_buf());
        img.layers.push(Layer {
            digest: None,
            size: None,
            diff_id: Some(Digest::sha256_of(&layer)),
            media_type: String::new(),
            member: "layer.tar".into(),
        });
        let root = t.path().join("root");
        std::fs::create_dir(&root).expect("mkdir");
        img.unpack(&root, &ApplyOptions::default())
            .expect("matching diff_id");
        img.layers[0].diff_id = Some(Digest::sha256_of(b"other"));
        let root2 = t.path().join("root2");
        std::fs::create_dir(&root2).expect("mkdir");
        let err = img
            .unpack(&root2, &ApplyOptions::default())
            .expect_err("wrong diff_id");
        assert!(matches!(err, ImageError::Corrupt { .. }), "{err}");
    }

    #[test]
    fn test_media_type_checks() {
        assert!(is_layer_type("application/vnd.oci.image.layer.v1.tar+zstd"));
        assert!(is_layer_type(
            "application/vnd.docker.image.rootfs.diff.tar.gzip"
        ));
        assert!(!is_layer_type(
            "application/vnd.oci.image.layer.v1.tar+gzip+encrypted"
        ));
        assert!(!is_layer_type("application/vnd.sylabs.sif.layer.v1.sif"));
        assert!(is_image_config_type(OCI_CONFIG));
        assert!(!is_image_config_type("application/vnd.oras.config.v1+json"));
    }
}
