//! The OCI image-spec documents sifr reads (descriptors, image indexes, manifests, image
//! configs), with Docker's schema-2 media types accepted as equivalents, and the choice of
//! one platform's manifest from an index.
//!
//! The types are written here rather than taken from the `oci-spec` crate because parsing
//! must be lenient in the ways real registries need (Docker media types, `null` lists, unknown
//! fields kept for `oci-config.json`) and only five small structures are needed.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

use super::digest::Digest;

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1";

/// The `Accept` header for manifest requests: every manifest and index type we can read.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.docker.distribution.manifest.v2+json";

/// Why a manifest, index or config could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("{what} is not valid JSON of the expected shape: {err}")]
    Json {
        what: String,
        err: serde_json::Error,
    },
    #[error(
        "{what} is a Docker schema 1 manifest, which is not supported (re-push the image with a \
         current Docker, skopeo or crane)"
    )]
    Schema1 { what: String },
    #[error("{what} has media type {media_type:?}, which is neither an image index nor a manifest")]
    UnknownDocument { what: String, media_type: String },
    #[error("{what} has no manifest for {wanted}; it has: {available}")]
    NoPlatform {
        what: String,
        wanted: String,
        available: String,
    },
    #[error("{what} has no manifests")]
    EmptyIndex { what: String },
    #[error("unsupported architecture {0:?} (expected one of: {known})", known = KNOWN_ARCHES.join(", "))]
    Arch(String),
}

/// Deserializes `null` as the type's default (Docker writes `"Entrypoint": null`).
fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A content descriptor: what a manifest or index says about a blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default, deserialize_with = "nullable")]
    pub media_type: String,
    pub digest: Digest,
    /// Negative sizes fail to parse, as they should.
    pub size: u64,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub urls: Vec<String>,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

/// The platform a manifest of an index is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Platform {
    #[serde(default, deserialize_with = "nullable")]
    pub architecture: String,
    #[serde(default, deserialize_with = "nullable")]
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        match self.variant.as_deref() {
            Some(v) if !v.is_empty() => write!(f, "/{v}"),
            _ => Ok(()),
        }
    }
}

/// An image manifest: one config blob and the layers, bottom first.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    #[serde(default)]
    pub media_type: Option<String>,
    pub config: Descriptor,
    #[serde(default, deserialize_with = "nullable")]
    pub layers: Vec<Descriptor>,
}

/// An image index (or Docker manifest list): manifests for several platforms.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    #[serde(default)]
    pub media_type: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub manifests: Vec<Descriptor>,
}

/// A manifest document of either kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManifestDoc {
    Index(Index),
    Image(Manifest),
}

/// True for the media types of an index or manifest list.
pub fn is_index_type(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_LIST
}

/// True for the media types of an image manifest.
pub fn is_manifest_type(media_type: &str) -> bool {
    media_type == OCI_MANIFEST || media_type == DOCKER_MANIFEST
}

/// Parses a manifest or index. The kind comes from the document's `mediaType`, else from
/// the HTTP `Content-Type`, else from its shape (`manifests` vs `config` + `layers`).
pub fn parse_manifest(
    bytes: &[u8],
    content_type: Option<&str>,
    what: &str,
) -> Result<ManifestDoc, SpecError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        #[serde(default)]
        media_type: Option<String>,
        #[serde(default)]
        manifests: Option<serde_json::Value>,
        #[serde(default)]
        config: Option<serde_json::Value>,
        #[serde(default)]
        fs_layers: Option<serde_json::Value>,
        #[serde(default)]
        schema_version: Option<serde_json::Value>,
    }
    let json_err = |err| SpecError::Json {
        what: what.to_string(),
        err,
    };
    let probe: Probe = serde_json::from_slice(bytes).map_err(json_err)?;
    // Content types may carry parameters (`; charset=utf-8`).
    let header = content_type.map(|c| c.split(';').next().unwrap_or("").trim());
    let media_type = probe
        .media_type
        .as_deref()
        .filter(|m| !m.is_empty())
        .or(header.filter(|h| !h.is_empty() && *h != "application/json"));
    let schema1 = probe.fs_layers.is_some()
        || probe.schema_version == Some(serde_json::Value::from(1))
        || media_type.is_some_and(|m| m.starts_with(DOCKER_SCHEMA1));
    if schema1 {
        return Err(SpecError::Schema1 {
            what: what.to_string(),
        });
    }
    let index = match media_type {
        Some(m) if is_index_type(m) => true,
        Some(m) if is_manifest_type(m) => false,
        Some(m) => {
            return Err(SpecError::UnknownDocument {
                what: what.to_string(),
                media_type: m.to_string(),
            });
        }
        None => probe.manifests.is_some() && probe.config.is_none(),
    };
    if index {
        Ok(ManifestDoc::Index(
            serde_json::from_slice(bytes).map_err(json_err)?,
        ))
    } else {
        Ok(ManifestDoc::Image(
            serde_json::from_slice(bytes).map_err(json_err)?,
        ))
    }
}

/// The runtime part of an image config (`config` in the JSON), in Docker's field names.
/// Fields sifr does not interpret are kept in `other` so `oci-config.json` loses nothing.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ContainerConfig {
    #[serde(
        rename = "User",
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub user: String,
    #[serde(
        rename = "Env",
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub env: Vec<String>,
    #[serde(
        rename = "Entrypoint",
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub entrypoint: Vec<String>,
    #[serde(
        rename = "Cmd",
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub cmd: Vec<String>,
    #[serde(
        rename = "WorkingDir",
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub working_dir: String,
    #[serde(
        rename = "Labels",
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub labels: BTreeMap<String, String>,
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

/// The layer list of an image config: uncompressed layer digests, bottom first.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type", default, deserialize_with = "nullable")]
    pub kind: String,
    #[serde(default, deserialize_with = "nullable")]
    pub diff_ids: Vec<Digest>,
}

/// An image config blob.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct ImageConfig {
    #[serde(default, deserialize_with = "nullable")]
    pub architecture: String,
    #[serde(default, deserialize_with = "nullable")]
    pub os: String,
    #[serde(default, deserialize_with = "nullable")]
    pub variant: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub config: ContainerConfig,
    #[serde(default, deserialize_with = "nullable")]
    pub rootfs: RootFs,
}

impl ImageConfig {
    pub fn parse(bytes: &[u8], what: &str) -> Result<ImageConfig, SpecError> {
        serde_json::from_slice(bytes).map_err(|err| SpecError::Json {
            what: what.to_string(),
            err,
        })
    }
}

/// Architectures accepted by [`PlatformSpec::from_arch`] (Apptainer's `--arch` names).
const KNOWN_ARCHES: &[&str] = &[
    "amd64", "386", "arm64", "arm64v8", "arm", "arm32v5", "arm32v6", "arm32v7", "ppc64le", "s390x",
    "riscv64", "mips64le", "loong64",
];

/// The platform to pick from an image index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformSpec {
    pub os: String,
    pub architecture: String,
    /// `None`: any variant, preferring the architecture's usual one.
    pub variant: Option<String>,
}

impl PlatformSpec {
    /// linux/<the architecture this binary was built for>, in Go's naming.
    pub fn host() -> PlatformSpec {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "x86" => "386",
            "aarch64" => "arm64",
            "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
            "mips64" if cfg!(target_endian = "little") => "mips64le",
            "loongarch64" => "loong64",
            other => other,
        };
        PlatformSpec {
            os: "linux".into(),
            architecture: arch.into(),
            variant: None,
        }
    }

    /// From an `--arch` value: Go names (`arm64`) or Docker's variant names (`arm32v7`).
    pub fn from_arch(arch: &str) -> Result<PlatformSpec, SpecError> {
        let (architecture, variant) = match arch {
            "amd64" | "386" | "arm64" | "arm" | "ppc64le" | "s390x" | "riscv64" | "mips64le"
            | "loong64" => (arch, None),
            "arm64v8" => ("arm64", Some("v8")),
            "arm32v5" => ("arm", Some("v5")),
            "arm32v6" => ("arm", Some("v6")),
            "arm32v7" => ("arm", Some("v7")),
            _ => return Err(SpecError::Arch(arch.to_string())),
        };
        Ok(PlatformSpec {
            os: "linux".into(),
            architecture: architecture.into(),
            variant: variant.map(str::to_string),
        })
    }

    /// The variant an image built without one is taken to have.
    fn default_variant(&self) -> &'static str {
        match self.architecture.as_str() {
            "arm64" => "v8",
            "arm" => "v7",
            _ => "",
        }
    }

    fn normalize_variant<'a>(&self, v: Option<&'a str>) -> &'a str
    where
        'static: 'a,
    {
        match v {
            None | Some("") => self.default_variant(),
            Some("v1") if self.architecture == "amd64" => "",
            Some(v) => v,
        }
    }

    /// The descriptor to follow in `index` for this platform. An exact variant wins over
    /// another variant of the same architecture when no variant was asked for.
    pub fn select<'a>(&self, index: &'a Index, what: &str) -> Result<&'a Descriptor, SpecError> {
        if index.manifests.is_empty() {
            return Err(SpecError::EmptyIndex {
                what: what.to_string(),
            });
        }
        let wanted_variant = self
            .variant
            .as_deref()
            .map(|v| self.normalize_variant(Some(v)));
        let mut fallback = None;
        for d in &index.manifests {
            let Some(p) = &d.platform else { continue };
            if !p.os.eq_ignore_ascii_case(&self.os) || p.architecture != self.architecture {
                continue;
            }
            let variant = self.normalize_variant(p.variant.as_deref());
            match wanted_variant {
                Some(w) if w == variant => return Ok(d),
                Some(_) => {}
                None if variant == self.default_variant() => return Ok(d),
                None => {
                    fallback.get_or_insert(d);
                }
            }
        }
        // An index with a single manifest and no platform information is a plain layout
        // index (`skopeo copy` to `oci:` writes one); take its manifest.
        if fallback.is_none() && index.manifests.len() == 1 && index.manifests[0].platform.is_none()
        {
            return Ok(&index.manifests[0]);
        }
        fallback.ok_or_else(|| SpecError::NoPlatform {
            what: what.to_string(),
            wanted: self.to_string(),
            available: available_platforms(index),
        })
    }
}

fn available_platforms(index: &Index) -> String {
    let list: Vec<String> = index
        .manifests
        .iter()
        .filter_map(|d| d.platform.as_ref())
        .filter(|p| p.os != "unknown")
        .map(|p| p.to_string())
        .collect();
    if list.is_empty() {
        "no platform information".into()
    } else {
        list.join(", ")
    }
}

impl fmt::Display for PlatformSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        match &self.variant {
            Some(v) => write!(f, "/{v}"),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    fn index_json(entries: &[(&str, &str, Option<&str>, char)]) -> String {
        let m: Vec<String> = entries
            .iter()
            .map(|(os, arch, variant, c)| {
                let v = variant.map_or(String::new(), |v| format!(r#","variant":"{v}""#));
                format!(
                    r#"{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":10,
                       "platform":{{"os":"{os}","architecture":"{arch}"{v}}}}}"#,
                    digest(*c)
                )
            })
            .collect();
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{}]}}"#,
            m.join(",")
        )
    }

    fn index(entries: &[(&str, &str, Option<&str>, char)]) -> Index {
        match parse_manifest(index_json(entries).as_bytes(), None, "test").expect("parse") {
            ManifestDoc::Index(i) => i,
            other => panic!("not an index: {other:?}"),
        }
    }

    fn spec(arch: &str, variant: Option<&str>) -> PlatformSpec {
        PlatformSpec {
            os: "linux".into(),
            architecture: arch.into(),
            variant: variant.map(str::to_string),
        }
    }

    #[test]
    fn test_parse_kinds() {
        let manifest = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"{DOCKER_CONFIG}","digest":"{}","size":5}},
               "layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":"{}","size":7}}]}}"#,
            digest('a'),
            digest('b')
        );
        // No mediaType in the body: the header decides, and without one the shape does.
        for ct in [Some(DOCKER_MANIFEST), None, Some("application/json")] {
            match parse_manifest(manifest.as_bytes(), ct, "m").expect("manifest") {
                ManifestDoc::Image(m) => {
                    assert_eq!(m.layers.len(), 1);
                    assert_eq!(m.layers[0].size, 7);
                }
                other => panic!("{other:?}"),
            }
        }
        let list = r#"{"schemaVersion":2,"manifests":[]}"#;
        assert!(matches!(
            parse_manifest(list.as_bytes(), Some(DOCKER_LIST), "l"),
            Ok(ManifestDoc::Index(_))
        ));
    }

    #[test]
    fn test_parse_refuses_schema1_and_garbage() {
        let s1 = r#"{"schemaVersion":1,"name":"x","fsLayers":[]}"#;
        assert!(matches!(
            parse_manifest(s1.as_bytes(), None, "m"),
            Err(SpecError::Schema1 { .. })
        ));
        assert!(matches!(
            parse_manifest(b"{not json", None, "m"),
            Err(SpecError::Json { .. })
        ));
        let neg = format!(
            r#"{{"config":{{"digest":"{}","size":-1}},"layers":[]}}"#,
            digest('a')
        );
        assert!(parse_manifest(neg.as_bytes(), None, "m").is_err());
        let odd = r#"{"mediaType":"text/html","manifests":[]}"#;
        assert!(matches!(
            parse_manifest(odd.as_bytes(), None, "m"),
            Err(SpecError::UnknownDocument { .. })
        ));
        let bad_digest = r#"{"config":{"digest":"sha256:../x","size":1},"layers":[]}"#;
        assert!(parse_manifest(bad_digest.as_bytes(), None, "m").is_err());
    }

    #[test]
    fn test_select_host_arch_and_variants() {
        let i = index(&[
            ("linux", "arm", Some("v6"), '1'),
            ("linux", "arm", Some("v7"), '2'),
            ("linux", "amd64", None, '3'),
            ("linux", "arm64", Some("v8"), '4'),
            ("unknown", "unknown", None, '5'),
        ]);
        let pick = |s: PlatformSpec| s.select(&i, "idx").map(|d| d.digest.hex()[..1].to_string());
        assert_eq!(pick(spec("amd64", None)).expect("amd64"), "3");
        assert_eq!(pick(spec("arm64", None)).expect("arm64"), "4");
        assert_eq!(pick(spec("arm64", Some("v8"))).expect("arm64v8"), "4");
        assert_eq!(pick(spec("arm", None)).expect("arm default v7"), "2");
        assert_eq!(pick(spec("arm", Some("v6"))).expect("armv6"), "1");
        let err = pick(spec("s390x", None)).expect_err("missing");
        let msg = err.to_string();
        assert!(msg.contains("linux/s390x"), "{msg}");
        assert!(
            msg.contains("linux/arm/v7") && !msg.contains("unknown"),
            "{msg}"
        );
        assert!(pick(spec("arm", Some("v5"))).is_err());
    }

    #[test]
    fn test_select_fallback_variant_and_plain_layout_index() {
        // Only a non-default variant: still the best match when no variant was asked for.
        let i = index(&[("linux", "arm", Some("v6"), '1')]);
        assert!(spec("arm", None).select(&i, "i").is_ok());
        // A layout index with one manifest and no platform (skopeo's oci: output).
        let plain = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":3}}]}}"#,
            digest('c')
        );
        let ManifestDoc::Index(p) = parse_manifest(plain.as_bytes(), None, "p").expect("parse")
        else {
            panic!("not an index")
        };
        assert!(spec("s390x", None).select(&p, "p").is_ok());
        let empty = Index {
            media_type: None,
            manifests: vec![],
        };
        assert!(matches!(
            spec("amd64", None).select(&empty, "e"),
            Err(SpecError::EmptyIndex { .. })
        ));
    }

    #[test]
    fn test_from_arch() {
        assert_eq!(
            PlatformSpec::from_arch("arm32v7")
                .expect("arm")
                .variant
                .as_deref(),
            Some("v7")
        );
        assert_eq!(
            PlatformSpec::from_arch("amd64")
                .expect("amd64")
                .architecture,
            "amd64"
        );
        assert!(matches!(
            PlatformSpec::from_arch("vax"),
            Err(SpecError::Arch(_))
        ));
        let host = PlatformSpec::host();
        assert_eq!(host.os, "linux");
        assert!(!host.architecture.is_empty());
    }

    #[test]
    fn test_image_config_nulls_and_unknown_fields() {
        let json = r#"{"architecture":"amd64","os":"linux",
            "config":{"Env":["PATH=/bin"],"Entrypoint":null,"Cmd":["sh"],"Labels":null,
                      "WorkingDir":"/w","User":"1000","StopSignal":"SIGTERM"},
            "rootfs":{"type":"layers","diff_ids":[]},"history":[{"created_by":"x"}]}"#;
        let c = ImageConfig::parse(json.as_bytes(), "cfg").expect("config");
        assert!(c.config.entrypoint.is_empty());
        assert_eq!(c.config.cmd, vec!["sh"]);
        assert_eq!(c.config.working_dir, "/w");
        assert_eq!(c.config.other.get("StopSignal"), Some(&"SIGTERM".into()));
        let c2 = ImageConfig::parse(br#"{"config":null}"#, "cfg").expect("null config");
        assert_eq!(c2.config, ContainerConfig::default());
    }
}
