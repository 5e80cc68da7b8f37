//! The content-addressed blob cache shared by every pull.
//!
//! Location: `$SIFR_CACHEDIR/cache` when set (sifr maps `APPTAINER_CACHEDIR` and
//! `SINGULARITY_CACHEDIR` onto it at start-up; the lookup here checks all three), else
//! `~/.sifr/cache`. Inside, as in Apptainer's cache, `blob/` is an OCI layout holding every
//! manifest, config and layer by digest (`blob/blobs/sha256/<hex>`), and `oci-tmp/` is
//! where the caller keeps SIF files converted from OCI images, named by manifest digest;
//! `oras/<hex>` holds SIF files pulled with `oras://` (by the SIF's digest) and `net/<hex>`
//! images downloaded over http(s) (by the digest of their URL and date), Apptainer's `oras`
//! and `net` cache types.
//! Directories are created with mode 0700 (the cache may hold private images).
//!
//! A blob enters the cache only after its bytes have been hashed and matched against its
//! digest, through a temporary file renamed into place, so readers never see a partial
//! blob and concurrent pulls of the same blob cannot corrupt it. Reads verify again (see
//! [`super::image`]), so a cache damaged on disk is detected, not trusted. Downloads write
//! through [`super::partial`], whose `.partial-NAME` file an interrupted pull leaves for the
//! next one to continue.

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::compat::ENV_PREFIXES;

use super::digest::{Digest, Hasher, Mismatch};
use super::partial::Partial;

/// Why the cache could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error(
        "no cache directory: neither SIFR_CACHEDIR (or APPTAINER_CACHEDIR) nor HOME is set; \
         set one of them"
    )]
    NoLocation,
    #[error(
        "cannot create cache directory {path}: {err} (set SIFR_CACHEDIR to a writable directory)"
    )]
    Create { path: PathBuf, err: io::Error },
    #[error("cannot write {path} into the cache: {err}")]
    Write { path: PathBuf, err: io::Error },
    #[error("reading {what}: {err}")]
    Read { what: String, err: io::Error },
    #[error(transparent)]
    Mismatch(#[from] Mismatch),
}

/// The blob cache.
#[derive(Debug, Clone)]
pub struct BlobCache {
    root: PathBuf,
}

impl BlobCache {
    /// Opens (creating if needed) the cache rooted at `root` (the `.../cache` directory).
    pub fn open(root: impl Into<PathBuf>) -> Result<BlobCache, CacheError> {
        let cache = BlobCache { root: root.into() };
        for dir in [
            cache.root.clone(),
            cache.root.join("blob"),
            cache.root.join("blob/blobs"),
            cache.root.join("blob/blobs/sha256"),
            cache.root.join("blob/blobs/sha512"),
            cache.root.join("oci-tmp"),
            cache.root.join("oras"),
            cache.root.join("net"),
        ] {
            create_private_dir(&dir)?;
        }
        Ok(cache)
    }

    /// The cache root chosen from the environment: `$SIFR_CACHEDIR/cache` (or the
    /// `APPTAINER_`/`SINGULARITY_` spelling), else `<home>/.sifr/cache`.
    pub fn default_root(
        env: &dyn Fn(&str) -> Option<String>,
        home: Option<&Path>,
    ) -> Result<PathBuf, CacheError> {
        for prefix in ENV_PREFIXES {
            if let Some(dir) = env(&format!("{prefix}CACHEDIR")).filter(|d| !d.is_empty()) {
                return Ok(Path::new(&dir).join("cache"));
            }
        }
        home.map(|h| h.join(".sifr/cache"))
            .ok_or(CacheError::NoLocation)
    }

    /// Opens the cache at its default location for this process.
    pub fn from_env() -> Result<BlobCache, CacheError> {
        let home = super::home_dir();
        let root = BlobCache::default_root(&|k| std::env::var(k).ok(), home.as_deref())?;
        BlobCache::open(root)
    }

    /// The cache root (`.../cache`).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The OCI layout directory holding the blobs (`.../cache/blob`).
    pub fn layout_dir(&self) -> PathBuf {
        self.root.join("blob")
    }

    /// Where a blob lives (whether or not it is there yet).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root
            .join("blob/blobs")
            .join(digest.algorithm().name())
            .join(digest.hex())
    }

    /// Where the caller keeps the SIF converted from the image with this manifest digest.
    pub fn converted_sif_path(&self, manifest: &Digest) -> PathBuf {
        self.root
            .join("oci-tmp")
            .join(format!("{}.sif", manifest.hex()))
    }

    /// Where a SIF pulled with `oras://` is kept: named by its digest.
    pub fn oras_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("oras").join(digest.hex())
    }

    /// Where an image downloaded over http(s) is kept: named by `key` (a hex digest of its
    /// URL and date).
    pub fn net_path(&self, key: &str) -> PathBuf {
        self.root.join("net").join(key)
    }

    /// True if the blob is cached with the expected size. (Its content is verified when read.)
    pub fn contains(&self, digest: &Digest, size: Option<u64>) -> bool {
        match fs::metadata(self.blob_path(digest)) {
            Ok(m) => m.is_file() && size.is_none_or(|s| s == m.len()),
            Err(_) => false,
        }
    }

    /// Streams `data` into the cache as blob `digest`, failing (and leaving nothing behind)
    /// if the bytes do not hash to it or are not `size` long.
    pub fn store(
        &self,
        digest: &Digest,
        size: Option<u64>,
        data: &mut dyn Read,
        what: &str,
    ) -> Result<PathBuf, CacheError> {
        self.store_at(self.blob_path(digest), digest, size, data, what)
    }

    /// As [`BlobCache::store`], to the file `path` of the cache (see
    /// [`BlobCache::oras_path`]).
    pub fn store_at(
        &self,
        path: PathBuf,
        digest: &Digest,
        size: Option<u64>,
        data: &mut dyn Read,
        what: &str,
    ) -> Result<PathBuf, CacheError> {
        let partial = Partial::private(&path).map_err(|err| CacheError::Write {
            path: path.clone(),
            err,
        })?;
        self.store_partial(partial, digest, size, data, what)
    }

    /// As [`BlobCache::store_at`], through `partial` (see [`super::partial`]): the bytes
    /// already there are hashed first and `data` continues them. A broken transfer leaves
    /// the partial file for the next pull; content that does not match removes it.
    pub fn store_partial(
        &self,
        mut partial: Partial,
        digest: &Digest,
        size: Option<u64>,
        data: &mut dyn Read,
        what: &str,
    ) -> Result<PathBuf, CacheError> {
        let path = partial.path().to_path_buf();
        let write_err = |err| CacheError::Write {
            path: path.clone(),
            err,
        };
        let mut hasher = Hasher::new(digest.algorithm());
        partial.rehash(Some(&mut hasher)).map_err(write_err)?;
        let mut seen = partial.offset();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = match data.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => {
                    return Err(CacheError::Read {
                        what: what.to_string(),
                        err,
                    });
                }
            };
            seen += n as u64;
            if let Some(size) = size
                && seen > size
            {
                partial.discard();
                return Err(Mismatch::Size {
                    what: what.to_string(),
                    expected: size,
                    actual: seen,
                }
                .into());
            }
            hasher.update(&buf[..n]);
            if let Err(err) = partial.write_all(&buf[..n]) {
                partial.discard();
                return Err(write_err(err));
            }
        }
        if let Some(size) = size
            && seen != size
        {
            // Short: the transfer ended early; what arrived is kept for the next pull.
            return Err(Mismatch::Size {
                what: what.to_string(),
                expected: size,
                actual: seen,
            }
            .into());
        }
        let actual = hasher.finish();
        if &actual != digest {
            partial.discard();
            return Err(Mismatch::Digest {
                what: what.to_string(),
                expected: digest.clone(),
                actual,
            }
            .into());
        }
        partial.persist().map_err(write_err)
    }

    /// Stores bytes already in memory (manifests, configs).
    pub fn store_bytes(
        &self,
        digest: &Digest,
        bytes: &[u8],
        what: &str,
    ) -> Result<PathBuf, CacheError> {
        if self.contains(digest, Some(bytes.len() as u64)) {
            return Ok(self.blob_path(digest));
        }
        self.store(digest, Some(bytes.len() as u64), &mut &bytes[..], what)
    }

    /// Drops a blob found to be damaged, so the next pull fetches it again.
    pub fn remove(&self, digest: &Digest) {
        let _ = fs::remove_file(self.blob_path(digest));
    }
}

fn create_private_dir(dir: &Path) -> Result<(), CacheError> {
    match fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => {}
        Err(err) => {
            return Err(CacheError::Create {
                path: dir.to_path_buf(),
                err,
            });
        }
    }
    // An existing directory keeps its mode unless it is open to others, as in Apptainer.
    if let Ok(m) = fs::metadata(dir)
        && m.permissions().mode() & 0o077 != 0
    {
        let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_default_root() {
        let env = |k: &str| (k == "APPTAINER_CACHEDIR").then(|| "/scratch/c".to_string());
        assert_eq!(
            BlobCache::default_root(&env, Some(Path::new("/home/u"))).expect("root"),
            Path::new("/scratch/c/cache")
        );
        let sifr_wins = |k: &str| match k {
            "SIFR_CACHEDIR" => Some("/s".to_string()),
            "APPTAINER_CACHEDIR" => Some("/a".to_string()),
            _ => None,
        };
        assert_eq!(
            BlobCache::default_root(&sifr_wins, None).expect("root"),
            Path::new("/s/cache")
        );
        let none = |_: &str| None;
        assert_eq!(
            BlobCache::default_root(&none, Some(Path::new("/home/u"))).expect("root"),
            Path::new("/home/u/.sifr/cache")
        );
        assert!(matches!(
            BlobCache::default_root(&none, None),
            Err(CacheError::NoLocation)
        ));
    }

    #[test]
    fn test_store_verifies_and_is_atomic() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = BlobCache::open(dir.path().join("cache")).expect("open");
        let mode = fs::metadata(cache.root())
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        let data = b"layer bytes";
        let d = Digest::sha256_of(data);
        assert!(!cache.contains(&d, None));
        let p = cache
            .store(&d, Some(11), &mut &data[..], "layer")
            .expect("store");
        assert_eq!(fs::read(&p).expect("read"), data);
        assert!(cache.contains(&d, Some(11)));
        assert!(!cache.contains(&d, Some(12)));

        // Wrong content or size: an error, and neither the blob nor a temp file is left.
        let other = Digest::sha256_of(b"other");
        let err = cache
            .store(&other, None, &mut &data[..], "bad layer")
            .expect_err("mismatch");
        assert!(
            matches!(err, CacheError::Mismatch(Mismatch::Digest { .. })),
            "{err}"
        );
        assert!(!cache.contains(&other, None));
        let err = cache
            .store(&d, Some(3), &mut &data[..], "short")
            .expect_err("size");
        assert!(matches!(err, CacheError::Mismatch(Mismatch::Size { .. })));
        let leftovers: Vec<_> = fs::read_dir(cache.blob_path(&d).parent().expect("dir"))
            .expect("list")
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(".partial"))
            .collect();
        assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");
        // The earlier good blob is untouched.
        assert_eq!(fs::read(&p).expect("read"), data);
        cache.remove(&d);
        assert!(!cache.contains(&d, None));
    }

    #[test]
    fn test_reader_errors_are_attributed() {
        struct Failing;
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::new(io::ErrorKind::ConnectionReset, "reset"))
            }
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = BlobCache::open(dir.path()).expect("open");
        let err = cache
            .store(&Digest::sha256_of(b""), None, &mut Failing, "blob x from r")
            .expect_err("read error");
        assert!(err.to_string().contains("blob x from r"), "{err}");
        assert!(
            cache
                .converted_sif_path(&Digest::sha256_of(b""))
                .starts_with(dir.path().join("oci-tmp"))
        );
    }
}
