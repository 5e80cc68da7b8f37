//! Local image sources: OCI image layout directories (`oci:`), tars of them
//! (`oci-archive:`) and `docker save` archives (`docker-archive:`), opened into an
//! [`OciImage`] without copying: archive members are read in place, by offset.
//!
//! In a layout, `index.json` lists manifests; a `:ref` picks the one whose
//! `org.opencontainers.image.ref.name` annotation matches, an index is followed to the
//! wanted platform, and a layout holding a single image needs no reference. A `docker save`
//! archive has `manifest.json` listing each image's config file, `RepoTags` and layer tars.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::digest::{Digest, Mismatch};
use super::image::{Layer, OciImage, Store, blob_name, image_problem};
use super::reference::{ArchiveRef, ImageRef};
use super::spec::{self, Descriptor, ImageConfig, Index, ManifestDoc, PlatformSpec, SpecError};

const MAX_INDEX_BYTES: u64 = 4 << 20;
const MAX_CONFIG_BYTES: u64 = 32 << 20;
const MAX_INDEX_DEPTH: usize = 4;
/// Symlinks between archive members followed before giving up.
const MAX_MEMBER_LINKS: usize = 8;
const REF_ANNOTATION: &str = "org.opencontainers.image.ref.name";

/// Why a local image could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("{path} is not an OCI image layout: {detail}")]
    NotLayout { path: PathBuf, detail: String },
    #[error("{path} is not a docker-archive (docker save output): {detail}")]
    NotDockerArchive { path: PathBuf, detail: String },
    #[error("cannot read {what} in {path}: {err}")]
    Read {
        path: PathBuf,
        what: String,
        err: io::Error,
    },
    #[error("{path} is compressed with {kind}; decompress it first (archives must be plain tar)")]
    Compressed { path: PathBuf, kind: &'static str },
    #[error("{what} in {path} is not valid JSON of the expected shape: {err}")]
    Json {
        path: PathBuf,
        what: String,
        err: serde_json::Error,
    },
    #[error("{path} has no image named {reference:?}; it has: {available}")]
    NoSuchRef {
        path: PathBuf,
        reference: String,
        available: String,
    },
    #[error("{path} holds several images ({available}); name one, as in {scheme}:{path}:NAME")]
    Ambiguous {
        path: PathBuf,
        available: String,
        scheme: &'static str,
    },
    #[error("{path}: {what} is not a container image ({detail})")]
    NotAnImage {
        path: PathBuf,
        what: String,
        detail: String,
    },
    #[error("{path}: image indexes nest more than {MAX_INDEX_DEPTH} levels deep")]
    TooDeep { path: PathBuf },
    #[error("{path}: {0}", path = .1.display())]
    Spec(SpecError, PathBuf),
    #[error("{path}: {0}", path = .1.display())]
    Mismatch(Mismatch, PathBuf),
}

/// Opens an OCI image layout directory (`oci:DIR[:ref]`).
pub fn open_oci_layout(
    dir: &Path,
    reference: Option<&str>,
    platform: &PlatformSpec,
) -> Result<OciImage, LocalError> {
    if !dir.is_dir() {
        return Err(LocalError::NotLayout {
            path: dir.to_path_buf(),
            detail: "no such directory".into(),
        });
    }
    let source = match reference {
        Some(r) => format!("oci:{}:{r}", dir.display()),
        None => format!("oci:{}", dir.display()),
    };
    from_layout(
        Store::Dir(dir.to_path_buf()),
        reference,
        platform,
        source,
        "oci",
    )
}

/// Opens a tar of an OCI image layout (`oci-archive:FILE[:ref]`).
pub fn open_oci_archive(
    file: &Path,
    reference: Option<&str>,
    platform: &PlatformSpec,
) -> Result<OciImage, LocalError> {
    let store = index_tar(file)?;
    let source = match reference {
        Some(r) => format!("oci-archive:{}:{r}", file.display()),
        None => format!("oci-archive:{}", file.display()),
    };
    from_layout(store, reference, platform, source, "oci-archive")
}

/// Opens a `docker save` archive (`docker-archive:FILE[:name:tag|:@N]`).
pub fn open_docker_archive(
    file: &Path,
    reference: Option<&ArchiveRef>,
) -> Result<OciImage, LocalError> {
    #[derive(Deserialize)]
    struct Entry {
        #[serde(rename = "Config")]
        config: String,
        #[serde(rename = "RepoTags", default)]
        repo_tags: Option<Vec<String>>,
        #[serde(rename = "Layers", default)]
        layers: Vec<String>,
    }
    let store = index_tar(file)?;
    let path = file.to_path_buf();
    let not_archive = |detail: String| LocalError::NotDockerArchive {
        path: path.clone(),
        detail,
    };
    let bytes = store
        .read("manifest.json", MAX_INDEX_BYTES)
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => not_archive("it has no manifest.json".into()),
            _ => LocalError::Read {
                path: path.clone(),
                what: "manifest.json".into(),
                err: e,
            },
        })?;
    let entries: Vec<Entry> = serde_json::from_slice(&bytes).map_err(|err| LocalError::Json {
        path: path.clone(),
        what: "manifest.json".into(),
        err,
    })?;
    let names = |e: &Entry| e.repo_tags.clone().unwrap_or_default();
    let available = || {
        let all: Vec<String> = entries
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let n = names(e);
                if n.is_empty() {
                    format!("@{i}")
                } else {
                    n.join(", ")
                }
            })
            .collect();
        if all.is_empty() {
            "no images".into()
        } else {
            all.join("; ")
        }
    };
    let chosen = match reference {
        Some(ArchiveRef::Index(i)) => entries.get(*i).ok_or_else(|| LocalError::NoSuchRef {
            path: path.clone(),
            reference: format!("@{i}"),
            available: available(),
        })?,
        Some(ArchiveRef::Name(n)) => {
            // `busybox` matches `busybox:latest` and `docker.io/library/busybox:latest`.
            let canonical = |s: &str| ImageRef::parse(s).ok().map(|r| r.to_string());
            let wanted = canonical(n);
            entries
                .iter()
                .find(|e| {
                    names(e)
                        .iter()
                        .any(|t| t == n || (wanted.is_some() && canonical(t) == wanted))
                })
                .ok_or_else(|| LocalError::NoSuchRef {
                    path: path.clone(),
                    reference: n.clone(),
                    available: available(),
                })?
        }
        None => match entries.as_slice() {
            [one] => one,
            [] => return Err(not_archive("manifest.json lists no images".into())),
            _ => {
                return Err(LocalError::Ambiguous {
                    path: path.clone(),
                    available: available(),
                    scheme: "docker-archive",
                });
            }
        },
    };
    let config_name = normalize_member(&chosen.config);
    let config_bytes =
        store
            .read(&config_name, MAX_CONFIG_BYTES)
            .map_err(|err| LocalError::Read {
                path: path.clone(),
                what: format!("image config {config_name}"),
                err,
            })?;
    let config = ImageConfig::parse(&config_bytes, &format!("image config {config_name}"))
        .map_err(|e| LocalError::Spec(e, path.clone()))?;
    let diff_ids = &config.rootfs.diff_ids;
    if diff_ids.len() != chosen.layers.len() {
        return Err(not_archive(format!(
            "manifest.json lists {} layers but the image config has {} diff_ids",
            chosen.layers.len(),
            diff_ids.len()
        )));
    }
    let mut layers = Vec::new();
    for (name, diff) in chosen.layers.iter().zip(diff_ids) {
        let member = normalize_member(name);
        if let Store::Tar { members, .. } = &store
            && !members.contains_key(&member)
        {
            return Err(not_archive(format!(
                "layer {member} listed in manifest.json is missing"
            )));
        }
        layers.push(Layer {
            digest: None,
            size: None,
            diff_id: Some(diff.clone()),
            media_type: String::new(),
            member,
        });
    }
    let source = match reference {
        Some(ArchiveRef::Name(n)) => format!("docker-archive:{}:{n}", file.display()),
        Some(ArchiveRef::Index(i)) => format!("docker-archive:{}:@{i}", file.display()),
        None => format!("docker-archive:{}", file.display()),
    };
    Ok(OciImage {
        source,
        manifest_digest: None,
        config_digest: Digest::sha256_of(&config_bytes),
        config_bytes,
        config,
        layers,
        store,
        cache: None,
    })
}

/// Reads `index.json` and everything it leads to for one image.
fn from_layout(
    store: Store,
    reference: Option<&str>,
    platform: &PlatformSpec,
    source: String,
    scheme: &'static str,
) -> Result<OciImage, LocalError> {
    let path = store.location().to_path_buf();
    let index_bytes = store
        .read("index.json", MAX_INDEX_BYTES)
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => LocalError::NotLayout {
                path: path.clone(),
                detail: "it has no index.json".into(),
            },
            _ => LocalError::Read {
                path: path.clone(),
                what: "index.json".into(),
                err: e,
            },
        })?;
    let index: Index = serde_json::from_slice(&index_bytes).map_err(|err| LocalError::Json {
        path: path.clone(),
        what: "index.json".into(),
        err,
    })?;
    let mut desc = choose(&index, reference, platform, &path, scheme)?;
    for _ in 0..=MAX_INDEX_DEPTH {
        let what = format!("manifest {}", desc.digest);
        let bytes = read_blob(&store, &desc, MAX_INDEX_BYTES, &what)?;
        let media = Some(desc.media_type.as_str()).filter(|m| !m.is_empty());
        match spec::parse_manifest(&bytes, media, &what)
            .map_err(|e| LocalError::Spec(e, path.clone()))?
        {
            ManifestDoc::Index(i) => {
                desc = platform
                    .select(&i, &what)
                    .map_err(|e| LocalError::Spec(e, path.clone()))?
                    .clone();
            }
            ManifestDoc::Image(m) => {
                check_image(&m.config, &m.layers, &path, &what)?;
                let config_bytes = read_blob(&store, &m.config, MAX_CONFIG_BYTES, "image config")?;
                let config = ImageConfig::parse(&config_bytes, "image config")
                    .map_err(|e| LocalError::Spec(e, path.clone()))?;
                let layers = m
                    .layers
                    .iter()
                    .enumerate()
                    .map(|(i, l)| Layer {
                        digest: Some(l.digest.clone()),
                        size: Some(l.size),
                        diff_id: config.rootfs.diff_ids.get(i).cloned(),
                        media_type: l.media_type.clone(),
                        member: blob_name(&l.digest),
                    })
                    .collect();
                return Ok(OciImage {
                    source,
                    manifest_digest: Some(desc.digest.clone()),
                    config_digest: m.config.digest.clone(),
                    config_bytes,
                    config,
                    layers,
                    store,
                    cache: None,
                });
            }
        }
    }
    Err(LocalError::TooDeep { path })
}

/// Refuses manifests that are not filesystem images (artifacts, encrypted layers).
fn check_image(
    config: &Descriptor,
    layers: &[Descriptor],
    path: &Path,
    what: &str,
) -> Result<(), LocalError> {
    match image_problem(config, layers) {
        Some(detail) => Err(LocalError::NotAnImage {
            path: path.to_path_buf(),
            what: what.to_string(),
            detail,
        }),
        None => Ok(()),
    }
}

/// Picks the top-level descriptor of a layout's index.
fn choose(
    index: &Index,
    reference: Option<&str>,
    platform: &PlatformSpec,
    path: &Path,
    scheme: &'static str,
) -> Result<Descriptor, LocalError> {
    let name_of = |d: &Descriptor| d.annotations.get(REF_ANNOTATION).cloned();
    let available = || {
        let names: Vec<String> = index.manifests.iter().filter_map(name_of).collect();
        if names.is_empty() {
            "no named images".into()
        } else {
            names.join(", ")
        }
    };
    let candidates: Vec<Descriptor> = match reference {
        Some(r) => index
            .manifests
            .iter()
            .filter(|d| name_of(d).as_deref() == Some(r))
            .cloned()
            .collect(),
        None => index.manifests.clone(),
    };
    match candidates.as_slice() {
        [] => match reference {
            Some(r) => Err(LocalError::NoSuchRef {
                path: path.to_path_buf(),
                reference: r.to_string(),
                available: available(),
            }),
            None => Err(LocalError::NotLayout {
                path: path.to_path_buf(),
                detail: "index.json lists no images".into(),
            }),
        },
        [one] => Ok(one.clone()),
        many if many.iter().all(|d| d.platform.is_some()) => {
            let sub = Index {
                media_type: None,
                manifests: many.to_vec(),
            };
            platform
                .select(&sub, "index.json")
                .cloned()
                .map_err(|e| LocalError::Spec(e, path.to_path_buf()))
        }
        _ => Err(LocalError::Ambiguous {
            path: path.to_path_buf(),
            available: available(),
            scheme,
        }),
    }
}

/// Reads a small blob and checks its size and digest.
fn read_blob(store: &Store, d: &Descriptor, limit: u64, what: &str) -> Result<Vec<u8>, LocalError> {
    let path = store.location().to_path_buf();
    if d.size > limit {
        return Err(LocalError::Read {
            path,
            what: what.to_string(),
            err: io::Error::new(
                io::ErrorKind::FileTooLarge,
                format!("{} bytes, more than {limit}", d.size),
            ),
        });
    }
    let name = blob_name(&d.digest);
    let bytes = store.read(&name, limit).map_err(|err| LocalError::Read {
        path: path.clone(),
        what: format!("{what} ({name})"),
        err,
    })?;
    let actual = d.digest.same_algorithm_of(&bytes);
    if bytes.len() as u64 != d.size {
        return Err(LocalError::Mismatch(
            Mismatch::Size {
                what: format!("{what} ({name})"),
                expected: d.size,
                actual: bytes.len() as u64,
            },
            path,
        ));
    }
    if actual != d.digest {
        return Err(LocalError::Mismatch(
            Mismatch::Digest {
                what: format!("{what} ({name})"),
                expected: d.digest.clone(),
                actual,
            },
            path,
        ));
    }
    Ok(bytes)
}

/// `./a/b` and `/a/b` → `a/b`.
fn normalize_member(name: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for p in name.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

/// Lists the members of an uncompressed tar, reading headers only (data is skipped by
/// seeking). Symlinked and hard-linked members (docker save links repeated layers) are
/// entered under their own name too.
fn index_tar(file: &Path) -> Result<Store, LocalError> {
    let path = file.to_path_buf();
    let read_err = |what: &str, err| LocalError::Read {
        path: path.clone(),
        what: what.to_string(),
        err,
    };
    let mut f = File::open(file).map_err(|e| read_err("the archive", e))?;
    let mut magic = [0u8; 6];
    let n = f.read(&mut magic).map_err(|e| read_err("the archive", e))?;
    let magic = &magic[..n];
    let kind = if magic.starts_with(&[0x1f, 0x8b]) {
        Some("gzip")
    } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Some("zstd")
    } else if magic.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Some("xz")
    } else if magic.starts_with(b"BZh") {
        Some("bzip2")
    } else {
        None
    };
    if let Some(kind) = kind {
        return Err(LocalError::Compressed { path, kind });
    }
    let f = File::open(file).map_err(|e| read_err("the archive", e))?;
    let mut archive = tar::Archive::new(f);
    let mut members: HashMap<String, (u64, u64)> = HashMap::new();
    let mut links: Vec<(String, String)> = Vec::new();
    // The tar crate's messages may quote header bytes (newlines included): keep the first
    // line of it, short.
    let not_tar = |e: std::io::Error| {
        let text = e.to_string();
        let first: String = text
            .lines()
            .next()
            .unwrap_or("")
            .chars()
            .take(120)
            .collect();
        read_err(
            "the archive's entries (not a tar archive, or a damaged one)",
            std::io::Error::new(e.kind(), first),
        )
    };
    let entries = archive.entries_with_seek().map_err(not_tar)?;
    for entry in entries {
        let entry = entry.map_err(not_tar)?;
        let name = normalize_member(&String::from_utf8_lossy(&entry.path_bytes()));
        let kind = entry.header().entry_type();
        if kind.is_file() || kind.is_contiguous() {
            members.insert(name, (entry.raw_file_position(), entry.size()));
        } else if kind.is_symlink() || kind.is_hard_link() {
            let Some(target) = entry.link_name_bytes() else {
                continue;
            };
            let target = String::from_utf8_lossy(&target).into_owned();
            let resolved = if kind.is_symlink() && !target.starts_with('/') {
                let dir = name.rsplit_once('/').map_or("", |(d, _)| d);
                normalize_member(&format!("{dir}/{target}"))
            } else {
                normalize_member(&target)
            };
            links.push((name, resolved));
        }
    }
    for _ in 0..MAX_MEMBER_LINKS {
        let mut progress = false;
        for (name, target) in &links {
            if !members.contains_key(name)
                && let Some(&v) = members.get(target)
            {
                members.insert(name.clone(), v);
                progress = true;
            }
        }
        if !progress {
            break;
        }
    }
    Ok(Store::Tar {
        file: file.to_path_buf(),
        members,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::oci::apply::ApplyOptions;
    use crate::build::oci::spec::{OCI_CONFIG, OCI_INDEX, OCI_MANIFEST};

    fn layer_tar(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, name, *data).expect("append");
        }
        b.into_inner().expect("tar")
    }

    fn desc(media: &str, bytes: &[u8]) -> String {
        format!(
            r#"{{"mediaType":"{media}","digest":"{}","size":{}}}"#,
            Digest::sha256_of(bytes),
            bytes.len()
        )
    }

    fn put(dir: &Path, bytes: &[u8]) {
        std::fs::write(dir.join(blob_name(&Digest::sha256_of(bytes))), bytes).expect("write blob");
    }

    /// A layout with one image of two layers; `index_entries` decides what index.json says.
    fn layout(dir: &Path, annotate: Option<&str>) -> Vec<u8> {
        std::fs::create_dir_all(dir.join("blobs/sha256")).expect("mkdir");
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)
            .expect("write");
        let l1 = layer_tar(&[("a", b"1")]);
        let l2 = layer_tar(&[("b", b"2")]);
        let config = format!(
            r#"{{"architecture":"amd64","os":"linux","config":{{"Cmd":["/b"]}},"rootfs":{{"type":"layers","diff_ids":["{}","{}"]}}}}"#,
            Digest::sha256_of(&l1),
            Digest::sha256_of(&l2)
        )
        .into_bytes();
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{},"layers":[{},{}]}}"#,
            desc(OCI_CONFIG, &config),
            desc("application/vnd.oci.image.layer.v1.tar", &l1),
            desc("application/vnd.oci.image.layer.v1.tar", &l2)
        )
        .into_bytes();
        for b in [&l1, &l2, &config, &manifest] {
            put(dir, b);
        }
        let ann = annotate.map_or(String::new(), |r| {
            format!(r#","annotations":{{"{REF_ANNOTATION}":"{r}"}}"#)
        });
        let d = desc(OCI_MANIFEST, &manifest);
        let entry = format!("{}{ann}}}", &d[..d.len() - 1]);
        std::fs::write(
            dir.join("index.json"),
            format!(r#"{{"schemaVersion":2,"manifests":[{entry}]}}"#),
        )
        .expect("write");
        manifest
    }

    fn host() -> PlatformSpec {
        PlatformSpec::from_arch("amd64").expect("amd64")
    }

    fn tar_dir(dir: &Path, out: &Path) {
        let mut b = tar::Builder::new(File::create(out).expect("create"));
        b.follow_symlinks(false);
        b.append_dir_all(".", dir).expect("append");
        b.finish().expect("finish");
    }

    #[test]
    fn test_layout_and_archive_open_and_unpack() {
        let t = tempfile::tempdir().expect("tempdir");
        let dir = t.path().join("layout");
        let manifest = layout(&dir, Some("v1"));
        let img = open_oci_layout(&dir, None, &host()).expect("single image needs no ref");
        assert_eq!(img.manifest_digest, Some(Digest::sha256_of(&manifest)));
        assert_eq!(img.layers.len(), 2);
        assert_eq!(img.config.config.cmd, vec!["/b"]);
        open_oci_layout(&dir, Some("v1"), &host()).expect("by ref");
        let err = open_oci_layout(&dir, Some("v2"), &host()).expect_err("no such ref");
        assert!(err.to_string().contains("v1"), "lists what exists: {err}");
        let root = t.path().join("root");
        std::fs::create_dir(&root).expect("mkdir");
        img.unpack(&root, &ApplyOptions::default()).expect("unpack");
        assert_eq!(std::fs::read(root.join("b")).expect("read"), b"2");

        let archive = t.path().join("img.tar");
        tar_dir(&dir, &archive);
        let img = open_oci_archive(&archive, Some("v1"), &host()).expect("archive");
        let root2 = t.path().join("root2");
        std::fs::create_dir(&root2).expect("mkdir");
        img.unpack(&root2, &ApplyOptions::default())
            .expect("unpack from archive");
        assert_eq!(std::fs::read(root2.join("a")).expect("read"), b"1");
        assert!(img.source.starts_with("oci-archive:"));
    }

    #[test]
    fn test_layout_errors() {
        let t = tempfile::tempdir().expect("tempdir");
        let err = open_oci_layout(t.path(), None, &host()).expect_err("empty dir");
        assert!(err.to_string().contains("no index.json"), "{err}");
        let err = open_oci_layout(&t.path().join("nope"), None, &host()).expect_err("missing");
        assert!(matches!(err, LocalError::NotLayout { .. }));
        // A corrupted manifest blob is caught by its digest.
        let dir = t.path().join("l");
        let manifest = layout(&dir, None);
        std::fs::write(
            dir.join(blob_name(&Digest::sha256_of(&manifest))),
            manifest.to_ascii_uppercase(),
        )
        .expect("write");
        assert!(matches!(
            open_oci_layout(&dir, None, &host()),
            Err(LocalError::Mismatch(..))
        ));
        // Compressed archives are refused with advice.
        let gz = t.path().join("x.tar.gz");
        std::fs::write(&gz, [0x1f, 0x8b, 8, 0]).expect("write");
        let err = open_oci_archive(&gz, None, &host()).expect_err("gzip");
        assert!(err.to_string().contains("decompress"), "{err}");
        // Two unnamed, platform-less images: ambiguous.
        let two = t.path().join("two");
        layout(&two, None);
        let idx = std::fs::read_to_string(two.join("index.json")).expect("read");
        let m = &idx[idx.find('[').expect("[") + 1..idx.rfind(']').expect("]")];
        std::fs::write(
            two.join("index.json"),
            format!(r#"{{"manifests":[{m},{m}]}}"#),
        )
        .expect("write");
        let err = open_oci_layout(&two, None, &host()).expect_err("ambiguous");
        assert!(matches!(err, LocalError::Ambiguous { .. }), "{err}");
    }

    #[test]
    fn test_nested_index_and_artifacts() {
        let t = tempfile::tempdir().expect("tempdir");
        let dir = t.path().join("l");
        let manifest = layout(&dir, None);
        let nested = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{}]}}"#,
            desc(OCI_MANIFEST, &manifest)
                .replace('}', r#","platform":{"os":"linux","architecture":"amd64"}}"#)
        )
        .into_bytes();
        put(&dir, &nested);
        std::fs::write(
            dir.join("index.json"),
            format!(r#"{{"manifests":[{}]}}"#, desc(OCI_INDEX, &nested)),
        )
        .expect("write");
        let img = open_oci_layout(&dir, None, &host()).expect("nested index");
        assert_eq!(img.manifest_digest, Some(Digest::sha256_of(&manifest)));
        let err = open_oci_layout(
            &dir,
            None,
            &PlatformSpec::from_arch("arm64").expect("arm64"),
        )
        .expect_err("platform");
        assert!(err.to_string().contains("linux/amd64"), "{err}");

        let art = format!(
            r#"{{"schemaVersion":2,"config":{},"layers":[]}}"#,
            desc("application/vnd.oras.config.v1+json", b"{}")
        )
        .into_bytes();
        put(&dir, &art);
        put(&dir, b"{}");
        std::fs::write(
            dir.join("index.json"),
            format!(r#"{{"manifests":[{}]}}"#, desc(OCI_MANIFEST, &art)),
        )
        .expect("write");
        let err = open_oci_layout(&dir, None, &host()).expect_err("artifact");
        assert!(matches!(err, LocalError::NotAnImage { .. }), "{err}");
    }

    #[test]
    fn test_docker_archive() {
        let t = tempfile::tempdir().expect("tempdir");
        let d = t.path().join("save");
        std::fs::create_dir_all(d.join("aaa")).expect("mkdir");
        std::fs::create_dir_all(d.join("bbb")).expect("mkdir");
        let l1 = layer_tar(&[("etc/x", b"1")]);
        std::fs::write(d.join("aaa/layer.tar"), &l1).expect("write");
        // docker save links a repeated layer to its first copy.
        std::os::unix::fs::symlink("../aaa/layer.tar", d.join("bbb/layer.tar")).expect("symlink");
        let config = format!(
            r#"{{"config":{{"Entrypoint":["/x"]}},"rootfs":{{"type":"layers","diff_ids":["{0}","{0}"]}}}}"#,
            Digest::sha256_of(&l1)
        );
        std::fs::write(d.join("cfg.json"), &config).expect("write");
        std::fs::write(
            d.join("manifest.json"),
            r#"[{"Config":"cfg.json","RepoTags":["busybox:latest"],"Layers":["aaa/layer.tar","bbb/layer.tar"]}]"#,
        )
        .expect("write");
        let archive = t.path().join("save.tar");
        tar_dir(&d, &archive);
        for r in [
            None,
            Some(ArchiveRef::Name("busybox:latest".into())),
            Some(ArchiveRef::Name("docker.io/library/busybox".into())),
            Some(ArchiveRef::Index(0)),
        ] {
            let img =
                open_docker_archive(&archive, r.as_ref()).unwrap_or_else(|e| panic!("{r:?}: {e}"));
            assert_eq!(img.layers.len(), 2);
            assert_eq!(img.config.config.entrypoint, vec!["/x"]);
            assert_eq!(img.config_digest, Digest::sha256_of(config.as_bytes()));
        }
        let img = open_docker_archive(&archive, None).expect("open");
        let root = t.path().join("root");
        std::fs::create_dir(&root).expect("mkdir");
        img.unpack(&root, &ApplyOptions::default()).expect("unpack");
        assert_eq!(std::fs::read(root.join("etc/x")).expect("read"), b"1");
        let err = open_docker_archive(&archive, Some(&ArchiveRef::Name("alpine:3".into())))
            .expect_err("missing");
        assert!(err.to_string().contains("busybox:latest"), "{err}");
        assert!(open_docker_archive(&archive, Some(&ArchiveRef::Index(3))).is_err());
        let not = t.path().join("not.tar");
        tar_dir(&t.path().join("root"), &not);
        let err = open_docker_archive(&not, None).expect_err("not an archive");
        assert!(err.to_string().contains("manifest.json"), "{err}");
    }
}
