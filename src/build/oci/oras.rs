//! `oras://` images: a SIF file stored in an OCI registry as a one-layer artifact, exactly as
//! Apptainer stores it (`internal/pkg/client/oras`), so that either tool pulls what the other
//! pushed.
//!
//! The manifest is an OCI image manifest whose config is the empty JSON object `{}` with the
//! media type `application/vnd.sylabs.sif.config.v1+json` (its bytes inline as `data`), and
//! whose single layer is the SIF file, media type `application/vnd.sylabs.sif.layer.v1.sif`,
//! annotated with `org.opencontainers.image.title` (the file's name). Pulls accept the layer
//! media type of Singularity's prototype too, and do not look at the config media type
//! (Apptainer's versions have not been consistent there). Pulled SIFs are kept in the
//! cache's `oras/` directory by digest, verified on the way in.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Serialize;
use ureq::http::{Method, StatusCode};

use super::cache::{BlobCache, CacheError};
use super::digest::{Digest, Hasher};
use super::reference::ImageRef;
use super::registry::{FetchOptions, RegistryClient, RegistryError, SendData};
use super::spec::OCI_MANIFEST;

/// The config media type of a SIF artifact.
pub const SIF_CONFIG_MEDIA_TYPE: &str = "application/vnd.sylabs.sif.config.v1+json";
/// The layer media type of a SIF artifact.
pub const SIF_LAYER_MEDIA_TYPE: &str = "application/vnd.sylabs.sif.layer.v1.sif";
/// The layer media type Singularity's prototype used (misspelt as it was).
pub const SIF_LAYER_MEDIA_TYPE_PROTO: &str = "appliciation/vnd.sylabs.sif.layer.tar";
/// The title annotation of the layer: the SIF's file name.
pub const TITLE_ANNOTATION: &str = "org.opencontainers.image.title";
const CREATED_ANNOTATION: &str = "org.opencontainers.image.created";
/// The config blob: the empty JSON object.
const EMPTY_CONFIG: &[u8] = b"{}";

/// What went wrong with an `oras://` image.
#[derive(Debug, thiserror::Error)]
pub enum OrasError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error(
        "oras://{image} is not a SIF image: its manifest has {count} layers, a SIF artifact \
         has one (pull container images with docker://)"
    )]
    LayerCount { image: String, count: usize },
    #[error(
        "oras://{image} is not a SIF image: its layer has media type {media_type:?}, not \
         {SIF_LAYER_MEDIA_TYPE} (pull container images with docker://)"
    )]
    MediaType { image: String, media_type: String },
    #[error("oras://{image}: the downloaded layer is not a SIF file")]
    NotSif { image: String },
    #[error("{}: not a SIF file (only SIF images can be pushed to oras://)", .0.display())]
    PushNotSif(PathBuf),
    #[error("cannot read {}: {err}", path.display())]
    Read { path: PathBuf, err: std::io::Error },
    #[error(
        "registry {registry} gave no upload location for {image} (HTTP {status}); is it an OCI \
         registry?"
    )]
    NoUploadLocation {
        registry: String,
        image: String,
        status: u16,
    },
    #[error("cannot write the manifest of {image}: {err}")]
    Json {
        image: String,
        err: serde_json::Error,
    },
}

/// Pulls the SIF of `oras://image` into the cache (unless its digest is already there) and
/// returns its path there.
pub fn pull_sif(
    image: &ImageRef,
    options: &FetchOptions,
    cache: &BlobCache,
) -> Result<PathBuf, OrasError> {
    let mut client = RegistryClient::new(image, options.clone());
    let resolved = client.resolve()?;
    let layers = &resolved.manifest.layers;
    let [layer] = layers.as_slice() else {
        return Err(OrasError::LayerCount {
            image: image.to_string(),
            count: layers.len(),
        });
    };
    if layer.media_type != SIF_LAYER_MEDIA_TYPE && layer.media_type != SIF_LAYER_MEDIA_TYPE_PROTO {
        return Err(OrasError::MediaType {
            image: image.to_string(),
            media_type: layer.media_type.clone(),
        });
    }
    log::debug!("oras://{image}: manifest {}", resolved.digest);
    let path = cache.oras_path(&layer.digest);
    if std::fs::metadata(&path).is_ok_and(|m| m.is_file() && m.len() == layer.size) {
        log::info!("Using cached SIF image");
        return Ok(path);
    }
    let what = format!("SIF layer {} of oras://{image}", layer.digest);
    log::debug!("downloading the SIF of oras://{image}");
    let stored = client.download_resumable(
        &layer.digest,
        layer.size,
        path,
        cache,
        &what,
        &format!("Copying SIF {}", layer.digest.short()),
    )?;
    if !is_sif(&stored) {
        let _ = std::fs::remove_file(&stored);
        return Err(OrasError::NotSif {
            image: image.to_string(),
        });
    }
    // A SIF runs directly (its launch script): pulled copies are 0755, as Apptainer's.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&stored, std::fs::Permissions::from_mode(0o755)).map_err(|err| {
        CacheError::Write {
            path: stored.clone(),
            err,
        }
    })?;
    Ok(stored)
}

/// True if the file at `path` starts as a SIF does.
fn is_sif(path: &Path) -> bool {
    matches!(crate::image::detect(path), Ok(crate::image::ImageKind::Sif))
}

/// One descriptor of the manifest, with Go's field order (go-containerregistry's
/// `v1.Descriptor`), so the manifest sifr pushes is byte-for-byte what Apptainer pushes.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Desc {
    media_type: &'static str,
    size: u64,
    digest: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ManifestOut {
    schema_version: u32,
    media_type: &'static str,
    config: Desc,
    layers: Vec<Desc>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
}

/// The manifest of the SIF artifact for a file named `title` with `digest` and `size`, with
/// `annotations` on the manifest (Apptainer's `NewImageFromSIF`).
pub fn sif_manifest(
    title: &str,
    digest: &Digest,
    size: u64,
    annotations: BTreeMap<String, String>,
) -> Result<Vec<u8>, serde_json::Error> {
    use base64::Engine as _;
    let m = ManifestOut {
        schema_version: 2,
        media_type: OCI_MANIFEST,
        config: Desc {
            media_type: SIF_CONFIG_MEDIA_TYPE,
            size: EMPTY_CONFIG.len() as u64,
            digest: Digest::sha256_of(EMPTY_CONFIG).to_string(),
            data: Some(base64::engine::general_purpose::STANDARD.encode(EMPTY_CONFIG)),
            annotations: BTreeMap::new(),
        },
        layers: vec![Desc {
            media_type: SIF_LAYER_MEDIA_TYPE,
            size,
            digest: digest.to_string(),
            data: None,
            annotations: BTreeMap::from([(TITLE_ANNOTATION.to_string(), title.to_string())]),
        }],
        annotations,
    };
    serde_json::to_vec(&m)
}

/// Pushes the SIF file `path` to `oras://image` with `annotations` on the manifest (the
/// creation time is added as Apptainer adds it). Returns the manifest's digest.
pub fn push_sif(
    path: &Path,
    image: &ImageRef,
    options: &FetchOptions,
    mut annotations: BTreeMap<String, String>,
) -> Result<Digest, OrasError> {
    if !is_sif(path) {
        return Err(OrasError::PushNotSif(path.to_path_buf()));
    }
    let read_err = |err| OrasError::Read {
        path: path.to_path_buf(),
        err,
    };
    let (digest, size) = file_digest(path).map_err(read_err)?;
    let title = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    annotations
        .entry(CREATED_ANNOTATION.to_string())
        .or_insert_with(|| chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string());
    let manifest =
        sif_manifest(&title, &digest, size, annotations).map_err(|err| OrasError::Json {
            image: image.to_string(),
            err,
        })?;
    let mut client = RegistryClient::for_push(image, options.clone());
    upload_blob(
        &mut client,
        &Digest::sha256_of(EMPTY_CONFIG),
        &SendData::Bytes(EMPTY_CONFIG),
    )?;
    let label = format!("Uploading SIF {}", digest.short());
    upload_blob(&mut client, &digest, &SendData::File(path, &label))?;
    let reference = image
        .tag()
        .map(str::to_string)
        .or_else(|| image.digest().map(|d| d.to_string()))
        .unwrap_or_else(|| "latest".to_string());
    let url = format!(
        "{}/v2/{}/manifests/{reference}",
        client.base(),
        image.repository()
    );
    let resp = client.exchange(
        Method::PUT,
        &url,
        None,
        Some(OCI_MANIFEST),
        &SendData::Bytes(&manifest),
    )?;
    client.success(resp, &url, &format!("manifest of oras://{image}"))?;
    Ok(Digest::sha256_of(&manifest))
}

/// Uploads one blob unless the registry has it: a monolithic upload (POST for a location,
/// then PUT the bytes with their digest).
fn upload_blob(
    client: &mut RegistryClient,
    digest: &Digest,
    data: &SendData<'_>,
) -> Result<(), OrasError> {
    let image = client.image().clone();
    let what = format!("blob {digest} of oras://{image}");
    let url = client.blob_url(digest);
    let head = client.exchange(Method::HEAD, &url, None, None, &SendData::Empty)?;
    if head.status().is_success() {
        log::debug!("blob {} already in the registry", digest.short());
        return Ok(());
    }
    let start = format!("{}/v2/{}/blobs/uploads/", client.base(), image.repository());
    // An empty body with Content-Length: 0, as registries expect of this POST.
    let resp = client.exchange(Method::POST, &start, None, None, &SendData::Bytes(b""))?;
    let resp = client.success(resp, &start, &what)?;
    let status = resp.status();
    let location = resp
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let Some(location) = location.filter(|_| status == StatusCode::ACCEPTED) else {
        return Err(OrasError::NoUploadLocation {
            registry: image.registry().to_string(),
            image: image.to_string(),
            status: status.as_u16(),
        });
    };
    let absolute = if location.starts_with('/') {
        format!("{}{location}", client.base())
    } else {
        location
    };
    let sep = if absolute.contains('?') { '&' } else { '?' };
    let put = format!("{absolute}{sep}digest={digest}");
    let resp = client.exchange(
        Method::PUT,
        &put,
        None,
        Some("application/octet-stream"),
        data,
    )?;
    client.success(resp, &put, &what)?;
    Ok(())
}

/// The sha256 digest and size of a file.
fn file_digest(path: &Path) -> std::io::Result<(Digest, u64)> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Hasher::new(super::digest::Algorithm::Sha256);
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        size += n as u64;
        h.update(&buf[..n]);
    }
    Ok((h.finish(), size))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::oci::auth::{CredentialOrigin, Credentials};
    use std::collections::HashMap;
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;
    use std::sync::{Arc, Mutex};

    /// What the fake registry stores and saw.
    #[derive(Default)]
    struct State {
        blobs: HashMap<String, Vec<u8>>,
        manifests: HashMap<String, Vec<u8>>,
        token_queries: Vec<String>,
    }

    /// A registry on 127.0.0.1 that wants a Bearer token for everything under /v2/ (from
    /// its /token endpoint, for user alice), one request per connection.
    fn token_registry() -> (String, Arc<Mutex<State>>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let host = format!("127.0.0.1:{}", listener.local_addr().expect("addr").port());
        let state = Arc::new(Mutex::new(State::default()));
        let (st, h) = (state.clone(), host.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut stream) = conn else { continue };
                let mut r = BufReader::new(stream.try_clone().expect("clone"));
                let mut line = String::new();
                if r.read_line(&mut line).is_err() {
                    continue;
                }
                let mut it = line.split_whitespace();
                let (method, path) = (
                    it.next().unwrap_or("").to_string(),
                    it.next().unwrap_or("").to_string(),
                );
                let mut headers = HashMap::new();
                loop {
                    let mut hl = String::new();
                    if r.read_line(&mut hl).is_err() || hl.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = hl.split_once(':') {
                        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
                    }
                }
                let len: usize = headers
                    .get("content-length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                let mut body = vec![0u8; len];
                if std::io::Read::read_exact(&mut r, &mut body).is_err() {
                    continue;
                }
                let mut s = st.lock().expect("lock");
                let (status, hdrs, out): (u16, Vec<(String, String)>, Vec<u8>) = if path
                    .starts_with("/token")
                {
                    s.token_queries.push(path.clone());
                    let ok = headers.get("authorization").map(String::as_str)
                        == Some(
                            &Credentials {
                                username: "alice".into(),
                                password: "pw".into(),
                            }
                            .basic_header(),
                        );
                    if ok {
                        (200, vec![], br#"{"token":"tok"}"#.to_vec())
                    } else {
                        (401, vec![], vec![])
                    }
                } else if headers.get("authorization").map(String::as_str) != Some("Bearer tok") {
                    let chal = format!(
                        r#"Bearer realm="http://{h}/token",service="fake",scope="repository:test/sif:pull""#
                    );
                    (401, vec![("WWW-Authenticate".into(), chal)], vec![])
                } else if method == "HEAD" {
                    (404, vec![], vec![])
                } else if method == "POST" {
                    let loc = "/v2/test/sif/blobs/uploads/u1?state=x".to_string();
                    (202, vec![("Location".into(), loc)], vec![])
                } else if method == "PUT" && path.contains("/blobs/uploads/") {
                    let digest = path.split("digest=").nth(1).unwrap_or("").to_string();
                    s.blobs.insert(digest.replace("%3A", ":"), body);
                    (201, vec![], vec![])
                } else if method == "PUT" && path.contains("/manifests/") {
                    let tag = path.rsplit('/').next().unwrap_or("").to_string();
                    s.manifests.insert(tag, body);
                    (201, vec![], vec![])
                } else if path.contains("/manifests/") {
                    let tag = path.rsplit('/').next().unwrap_or("").to_string();
                    match s.manifests.get(&tag) {
                        Some(m) => (
                            200,
                            vec![("Content-Type".into(), OCI_MANIFEST.to_string())],
                            m.clone(),
                        ),
                        None => (404, vec![], vec![]),
                    }
                } else if path.contains("/blobs/") {
                    let d = path.rsplit('/').next().unwrap_or("").to_string();
                    match s.blobs.get(&d) {
                        Some(b) => (200, vec![], b.clone()),
                        None => (404, vec![], vec![]),
                    }
                } else {
                    (404, vec![], vec![])
                };
                drop(s);
                let mut head = format!(
                    "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n",
                    out.len()
                );
                for (k, v) in hdrs {
                    head.push_str(&format!("{k}: {v}\r\n"));
                }
                head.push_str("\r\n");
                let _ = stream.write_all(head.as_bytes());
                if method != "HEAD" {
                    let _ = stream.write_all(&out);
                }
            }
        });
        (host, state)
    }

    #[test]
    fn test_push_asks_for_the_push_scope_and_pull_gets_the_same_bytes() {
        let (host, state) = token_registry();
        let dir = tempfile::tempdir().expect("tmp");
        let sif = dir.path().join("img.sif");
        let mut bytes = b"#!/usr/bin/env run-singularity\n".to_vec();
        bytes.extend_from_slice(b"SIF_MAGIC");
        bytes.resize(4096, 7);
        std::fs::write(&sif, &bytes).expect("write");
        let image = ImageRef::parse(&format!("{host}/test/sif:1")).expect("ref");
        let options = FetchOptions {
            plain_http: true,
            credentials: Some((
                Credentials {
                    username: "alice".into(),
                    password: "pw".into(),
                },
                CredentialOrigin::CommandLine,
            )),
            ..FetchOptions::default()
        };
        push_sif(&sif, &image, &options, BTreeMap::new()).expect("push");
        {
            let s = state.lock().expect("lock");
            assert!(
                s.token_queries
                    .iter()
                    .any(|q| q.contains("scope=repository%3Atest%2Fsif%3Apull%2Cpush")),
                "{:?}",
                s.token_queries
            );
            assert_eq!(
                s.blobs.get(&Digest::sha256_of(b"{}").to_string()),
                Some(&b"{}".to_vec())
            );
            assert_eq!(
                s.blobs.get(&Digest::sha256_of(&bytes).to_string()),
                Some(&bytes)
            );
        }
        let cache = BlobCache::open(dir.path().join("cache")).expect("cache");
        let pulled = pull_sif(&image, &options, &cache).expect("pull");
        assert_eq!(std::fs::read(&pulled).expect("read"), bytes);
        assert_eq!(pulled, cache.oras_path(&Digest::sha256_of(&bytes)));

        // Without credentials the token server says no: one clear error.
        let anon = FetchOptions {
            plain_http: true,
            ..FetchOptions::default()
        };
        let err = push_sif(&sif, &image, &anon, BTreeMap::new()).expect_err("anonymous");
        assert!(err.to_string().contains("requires authentication"), "{err}");
    }

    #[test]
    fn test_manifest_is_apptainers_shape() {
        let d = Digest::sha256_of(b"sif");
        let m = sif_manifest(
            "img.sif",
            &d,
            3,
            BTreeMap::from([(CREATED_ANNOTATION.into(), "2023-12-19T16:02:14Z".into())]),
        )
        .expect("manifest");
        let want = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.sylabs.sif.config.v1+json","size":2,"digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","data":"e30="}},"layers":[{{"mediaType":"application/vnd.sylabs.sif.layer.v1.sif","size":3,"digest":"{d}","annotations":{{"org.opencontainers.image.title":"img.sif"}}}}],"annotations":{{"org.opencontainers.image.created":"2023-12-19T16:02:14Z"}}}}"#
        );
        assert_eq!(String::from_utf8(m).expect("utf8"), want);
    }
}
