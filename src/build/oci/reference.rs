//! Image source strings: `docker://[registry/]name[:tag|@digest]`, `oci:DIR[:ref]`,
//! `oci-archive:FILE[:ref]` and `docker-archive:FILE[:name:tag|:@N]`, parsed into a
//! [`Source`] with Docker's naming rules (Docker Hub defaults included).

use std::fmt;
use std::path::PathBuf;

use super::digest::Digest;

/// The canonical name of Docker Hub, used for display and credential lookup.
pub const DOCKER_HUB: &str = "docker.io";
/// The host that actually serves Docker Hub's registry API.
pub const DOCKER_HUB_API: &str = "registry-1.docker.io";

const DEFAULT_TAG: &str = "latest";
const MAX_NAME_LEN: usize = 255;

/// Why a source string was refused. Each message says what is wrong and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error(
        "{0:?} is not an OCI image source (expected docker://NAME, oci:DIR, oci-archive:FILE or \
         docker-archive:FILE)"
    )]
    Scheme(String),
    #[error("{0:?}: empty image name")]
    Empty(String),
    #[error("{input:?}: invalid registry host {host:?}")]
    Registry { input: String, host: String },
    #[error(
        "{input:?}: invalid repository name {name:?} (lowercase letters, digits and the \
         separators . _ __ - between them, in /-separated parts)"
    )]
    Repository { input: String, name: String },
    #[error("{input:?}: repository name is longer than 255 characters")]
    TooLong { input: String },
    #[error(
        "{input:?}: invalid tag {tag:?} (letters, digits, _ . -, at most 128, not starting with . or -)"
    )]
    Tag { input: String, tag: String },
    #[error("{input:?}: invalid digest: {source}")]
    Digest {
        input: String,
        source: super::digest::DigestError,
    },
    #[error("{input:?}: missing path after {scheme}:")]
    NoPath { input: String, scheme: &'static str },
    #[error("{input:?}: invalid archive index {index:?} (expected @N with N a number)")]
    ArchiveIndex { input: String, index: String },
    #[error(
        "bootstrap agent {0:?} is not an OCI source (docker, oci, oci-archive, docker-archive)"
    )]
    Agent(String),
}

/// A reference to an image in a registry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl ImageRef {
    /// Parses `[registry[:port]/]path[:tag][@digest]` with Docker's rules: the first part is
    /// a registry when it contains `.` or `:`, is `localhost`, or has uppercase letters;
    /// otherwise the registry is Docker Hub, where one-part names get `library/`.
    pub fn parse(input: &str) -> Result<ImageRef, ReferenceError> {
        if input.is_empty() {
            return Err(ReferenceError::Empty(input.to_string()));
        }
        let (rest, digest) = match input.split_once('@') {
            Some((r, d)) => {
                let digest = Digest::parse(d).map_err(|source| ReferenceError::Digest {
                    input: input.to_string(),
                    source,
                })?;
                (r, Some(digest))
            }
            None => (input, None),
        };
        // A tag is after the last ':' that follows the last '/', so that a registry port
        // (`localhost:5000/x`) is not mistaken for one.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(tag) = tag
            && !valid_tag(tag)
        {
            return Err(ReferenceError::Tag {
                input: input.to_string(),
                tag: tag.to_string(),
            });
        }
        if name.is_empty() {
            return Err(ReferenceError::Empty(input.to_string()));
        }
        let (registry, path) = match name.split_once('/') {
            Some((first, path)) if looks_like_registry(first) => (first, path),
            _ => (DOCKER_HUB, name),
        };
        if !valid_registry(registry) {
            return Err(ReferenceError::Registry {
                input: input.to_string(),
                host: registry.to_string(),
            });
        }
        let registry = match registry {
            "index.docker.io" | DOCKER_HUB_API => DOCKER_HUB,
            r => r,
        };
        let repository = if registry == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path.to_string()
        };
        if !path.split('/').all(valid_path_component) {
            return Err(ReferenceError::Repository {
                input: input.to_string(),
                name: path.to_string(),
            });
        }
        if registry.len() + 1 + repository.len() > MAX_NAME_LEN {
            return Err(ReferenceError::TooLong {
                input: input.to_string(),
            });
        }
        Ok(ImageRef {
            registry: registry.to_string(),
            repository,
            tag: tag.map(str::to_string),
            digest,
        })
    }

    /// The registry as named by the user, with Docker Hub's aliases folded into `docker.io`.
    /// This is the key for credentials.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The `host[:port]` that serves the registry API.
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }

    /// The repository path (`library/alpine`).
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag, if one was given (`latest` is implied otherwise).
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// What to ask the registry for: the digest when there is one, else the tag.
    pub fn manifest_reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => DEFAULT_TAG.to_string(),
        }
    }

    /// A short name for file names and messages: the last path part and the tag
    /// (`alpine_latest`), as `pull` names its output.
    pub fn default_file_stem(&self) -> String {
        let base = self
            .repository
            .rsplit('/')
            .next()
            .unwrap_or(&self.repository);
        let tag = self.tag.as_deref().unwrap_or(DEFAULT_TAG);
        format!("{base}_{tag}")
    }
}

impl fmt::Display for ImageRef {
    /// The fully qualified name: `docker.io/library/alpine:latest`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        match (&self.tag, &self.digest) {
            (Some(t), Some(d)) => write!(f, ":{t}@{d}"),
            (Some(t), None) => write!(f, ":{t}"),
            (None, Some(d)) => write!(f, "@{d}"),
            (None, None) => write!(f, ":{DEFAULT_TAG}"),
        }
    }
}

/// Which image of a `docker save` archive to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArchiveRef {
    /// A `RepoTags` entry (`busybox:latest`).
    Name(String),
    /// The N-th image of `manifest.json`, counted from 0.
    Index(usize),
}

/// Where an OCI image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `docker://`: an OCI distribution registry.
    Registry(ImageRef),
    /// `oci:DIR[:ref]`: an OCI image layout directory; `ref` matches the
    /// `org.opencontainers.image.ref.name` annotation of `index.json`.
    OciLayout {
        dir: PathBuf,
        reference: Option<String>,
    },
    /// `oci-archive:FILE[:ref]`: a tar of an OCI image layout.
    OciArchive {
        file: PathBuf,
        reference: Option<String>,
    },
    /// `docker-archive:FILE[:name:tag|:@N]`: the output of `docker save`.
    DockerArchive {
        file: PathBuf,
        reference: Option<ArchiveRef>,
    },
}

impl Source {
    /// True if `s` names one of the sources this module handles (a quick check before
    /// treating an argument as an image path).
    pub fn is_oci_source(s: &str) -> bool {
        ["docker://", "oci:", "oci-archive:", "docker-archive:"]
            .iter()
            .any(|p| s.starts_with(p))
    }

    /// Parses a source URI (`docker://alpine:3.19`, `oci:/tmp/layout:v1`, ...).
    pub fn parse(input: &str) -> Result<Source, ReferenceError> {
        if let Some(name) = input.strip_prefix("docker://") {
            return Ok(Source::Registry(ImageRef::parse(name).map_err(
                |e| match e {
                    ReferenceError::Empty(_) => ReferenceError::Empty(input.to_string()),
                    other => other,
                },
            )?));
        }
        // Transport paths end at the first ':', as in containers/image.
        let path_and_ref = |scheme: &'static str, rest: &str| {
            let (path, reference) = match rest.split_once(':') {
                Some((p, r)) => (p, (!r.is_empty()).then(|| r.to_string())),
                None => (rest, None),
            };
            if path.is_empty() {
                return Err(ReferenceError::NoPath {
                    input: input.to_string(),
                    scheme,
                });
            }
            Ok((PathBuf::from(path), reference))
        };
        if let Some(rest) = input.strip_prefix("oci-archive:") {
            let (file, reference) = path_and_ref("oci-archive", rest)?;
            return Ok(Source::OciArchive { file, reference });
        }
        if let Some(rest) = input.strip_prefix("oci:") {
            let (dir, reference) = path_and_ref("oci", rest)?;
            return Ok(Source::OciLayout { dir, reference });
        }
        if let Some(rest) = input.strip_prefix("docker-archive:") {
            let (file, reference) = path_and_ref("docker-archive", rest)?;
            let reference = match reference {
                Some(r) => Some(match r.strip_prefix('@') {
                    Some(n) => {
                        ArchiveRef::Index(n.parse().map_err(|_| ReferenceError::ArchiveIndex {
                            input: input.to_string(),
                            index: r.clone(),
                        })?)
                    }
                    None => ArchiveRef::Name(r),
                }),
                None => None,
            };
            return Ok(Source::DockerArchive { file, reference });
        }
        Err(ReferenceError::Scheme(input.to_string()))
    }

    /// The source of a definition file header: `Bootstrap: AGENT` with `From: FROM`
    /// (`docker` + `alpine:3.19` is `docker://alpine:3.19`; `oci` + `/dir:tag` is
    /// `oci:/dir:tag`). `Registry:`/`Namespace:` headers are prepended by the caller.
    pub fn from_bootstrap(agent: &str, from: &str) -> Result<Source, ReferenceError> {
        let from = from.trim();
        match agent.trim().to_ascii_lowercase().as_str() {
            "docker" => Source::parse(&format!("docker://{}", from.trim_start_matches("//"))),
            a @ ("oci" | "oci-archive" | "docker-archive") => Source::parse(&format!("{a}:{from}")),
            _ => Err(ReferenceError::Agent(agent.to_string())),
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let with_ref =
            |f: &mut fmt::Formatter<'_>, scheme: &str, p: &PathBuf, r: &Option<String>| {
                write!(f, "{scheme}:{}", p.display())?;
                match r {
                    Some(r) => write!(f, ":{r}"),
                    None => Ok(()),
                }
            };
        match self {
            Source::Registry(r) => write!(f, "docker://{r}"),
            Source::OciLayout { dir, reference } => with_ref(f, "oci", dir, reference),
            Source::OciArchive { file, reference } => with_ref(f, "oci-archive", file, reference),
            Source::DockerArchive { file, reference } => {
                write!(f, "docker-archive:{}", file.display())?;
                match reference {
                    Some(ArchiveRef::Name(n)) => write!(f, ":{n}"),
                    Some(ArchiveRef::Index(i)) => write!(f, ":@{i}"),
                    None => Ok(()),
                }
            }
        }
    }
}

fn looks_like_registry(first: &str) -> bool {
    first.contains('.')
        || first.contains(':')
        || first == "localhost"
        || first.bytes().any(|b| b.is_ascii_uppercase())
}

/// `host[:port]`: DNS labels or a bracketed IPv6 address, and an optional numeric port.
fn valid_registry(r: &str) -> bool {
    let (host, port) = if let Some(rest) = r.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else {
            return false;
        };
        if v6.parse::<std::net::Ipv6Addr>().is_err() {
            return false;
        }
        match after {
            "" => return true,
            p => match p.strip_prefix(':') {
                Some(port) => ("x", Some(port)),
                None => return false,
            },
        }
    } else {
        match r.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (r, None),
        }
    };
    if let Some(port) = port
        && (port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()))
    {
        return false;
    }
    !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// One `/`-separated part of a repository path:
/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn valid_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    let (Some(&first), Some(&last)) = (b.first(), b.last()) else {
        return false;
    };
    if !alnum(first) || !alnum(last) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: ".", "_", "__" or one or more "-".
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = matches!(sep, "." | "_" | "__") || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
fn valid_tag(t: &str) -> bool {
    let word = |x: u8| x.is_ascii_alphanumeric() || x == b'_';
    match t.as_bytes().split_first() {
        Some((&first, rest)) => {
            word(first)
                && rest.len() <= 127
                && rest.iter().all(|&x| word(x) || x == b'.' || x == b'-')
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> ImageRef {
        ImageRef::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn test_docker_hub_defaults() {
        let a = r("alpine");
        assert_eq!(a.registry(), "docker.io");
        assert_eq!(a.api_host(), "registry-1.docker.io");
        assert_eq!(a.repository(), "library/alpine");
        assert_eq!(a.manifest_reference(), "latest");
        assert_eq!(a.to_string(), "docker.io/library/alpine:latest");
        let u = r("user/image:1.0");
        assert_eq!(u.repository(), "user/image");
        assert_eq!(u.tag(), Some("1.0"));
        assert_eq!(r("docker.io/busybox").repository(), "library/busybox");
        assert_eq!(r("index.docker.io/busybox").registry(), "docker.io");
        assert_eq!(r("registry-1.docker.io/x/y").registry(), "docker.io");
    }

    #[test]
    fn test_registry_detection() {
        let q = r("quay.io/biocontainers/samtools:1.9--h91753b0_8");
        assert_eq!(q.registry(), "quay.io");
        assert_eq!(q.api_host(), "quay.io");
        assert_eq!(q.repository(), "biocontainers/samtools");
        assert_eq!(q.tag(), Some("1.9--h91753b0_8"));
        let l = r("localhost:5000/test/img:v2");
        assert_eq!(l.registry(), "localhost:5000");
        assert_eq!(l.repository(), "test/img");
        assert_eq!(l.tag(), Some("v2"));
        // A port without a tag must not be taken for a tag.
        let p = r("127.0.0.1:5000/img");
        assert_eq!(p.registry(), "127.0.0.1:5000");
        assert_eq!(p.tag(), None);
        assert_eq!(r("localhost/img").registry(), "localhost");
        // Single-part names never name a registry, even with a dot-free host.
        assert_eq!(r("localhost").repository(), "library/localhost");
        assert_eq!(r("[::1]:5000/img").registry(), "[::1]:5000");
        // Uppercase in the first part makes it a host, as in Docker.
        assert_eq!(r("Host/img").registry(), "Host");
    }

    #[test]
    fn test_digest_references() {
        let d = format!("sha256:{}", "a".repeat(64));
        let x = r(&format!("alpine@{d}"));
        assert_eq!(x.manifest_reference(), d);
        assert_eq!(x.tag(), None);
        let both = r(&format!("alpine:3.19@{d}"));
        assert_eq!(both.manifest_reference(), d, "the digest wins");
        assert_eq!(
            both.to_string(),
            format!("docker.io/library/alpine:3.19@{d}")
        );
        assert!(matches!(
            ImageRef::parse("alpine@sha256:zz"),
            Err(ReferenceError::Digest { .. })
        ));
    }

    #[test]
    fn test_invalid_names_refused() {
        for bad in [
            "",
            "UPPER",
            "a//b",
            "a/-b",
            "a/b_",
            "a..b",
            "a/b:",
            "a/b:.tag",
            "a:bad/tag",
            "-host.io/x",
            "host.io:port/x",
            "/x",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(ImageRef::parse(&"a".repeat(300)).is_err());
        // Separators Docker allows.
        for good in ["a__b", "a-b", "a---b", "a.b", "a_b/c.d-e", "x:_tag"] {
            assert!(ImageRef::parse(good).is_ok(), "{good:?} should parse");
        }
    }

    #[test]
    fn test_source_schemes() {
        assert_eq!(
            Source::parse("docker://alpine:3").expect("docker"),
            Source::Registry(r("alpine:3"))
        );
        assert_eq!(
            Source::parse("oci:/tmp/layout:v1").expect("oci"),
            Source::OciLayout {
                dir: "/tmp/layout".into(),
                reference: Some("v1".into())
            }
        );
        assert_eq!(
            Source::parse("oci:rel/dir").expect("oci"),
            Source::OciLayout {
                dir: "rel/dir".into(),
                reference: None
            }
        );
        assert_eq!(
            Source::parse("oci-archive:/x.tar").expect("oci-archive"),
            Source::OciArchive {
                file: "/x.tar".into(),
                reference: None
            }
        );
        assert_eq!(
            Source::parse("docker-archive:/x.tar:busybox:latest").expect("docker-archive"),
            Source::DockerArchive {
                file: "/x.tar".into(),
                reference: Some(ArchiveRef::Name("busybox:latest".into()))
            }
        );
        assert_eq!(
            Source::parse("docker-archive:/x.tar:@1").expect("index"),
            Source::DockerArchive {
                file: "/x.tar".into(),
                reference: Some(ArchiveRef::Index(1))
            }
        );
        assert!(matches!(
            Source::parse("docker-archive:/x.tar:@one"),
            Err(ReferenceError::ArchiveIndex { .. })
        ));
        assert!(matches!(
            Source::parse("oci:"),
            Err(ReferenceError::NoPath { .. })
        ));
        assert!(matches!(
            Source::parse("library://alpine"),
            Err(ReferenceError::Scheme(_))
        ));
        assert!(matches!(
            Source::parse("docker://"),
            Err(ReferenceError::Empty(_))
        ));
    }

    #[test]
    fn test_source_display_round_trips() {
        for s in [
            "docker://docker.io/library/alpine:latest",
            "oci:/tmp/l:v1",
            "oci-archive:/a.tar",
            "docker-archive:/a.tar:@2",
            "docker-archive:/a.tar:busybox:1",
        ] {
            assert_eq!(Source::parse(s).expect("parse").to_string(), s);
        }
    }

    #[test]
    fn test_from_bootstrap() {
        assert_eq!(
            Source::from_bootstrap("docker", "alpine:3.19").expect("docker"),
            Source::parse("docker://alpine:3.19").expect("uri")
        );
        assert_eq!(
            Source::from_bootstrap("Docker", "//localhost:5000/x").expect("docker"),
            Source::parse("docker://localhost:5000/x").expect("uri")
        );
        assert_eq!(
            Source::from_bootstrap("oci-archive", "/a.tar").expect("oci-archive"),
            Source::parse("oci-archive:/a.tar").expect("uri")
        );
        assert!(matches!(
            Source::from_bootstrap("debootstrap", "x"),
            Err(ReferenceError::Agent(_))
        ));
    }

    #[test]
    fn test_default_file_stem() {
        assert_eq!(r("alpine").default_file_stem(), "alpine_latest");
        assert_eq!(r("quay.io/a/b:2").default_file_stem(), "b_2");
        assert!(Source::is_oci_source("docker://x"));
        assert!(!Source::is_oci_source("/path/x.sif"));
    }
}
