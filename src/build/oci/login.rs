//! `registry login/logout/list`: registry credentials checked against the registry and
//! kept in a docker `config.json`-style file only the user can read.
//!
//! sifr's file is `~/.sifr/docker-config.json` (Apptainer's is
//! `~/.apptainer/docker-config.json`; [`super::auth`] reads both, sifr's first), or the
//! `--authfile` given. Entries are `{"auths": {"<registry>": {"auth": base64(user:pass)}}}`
//! with Docker Hub under `https://index.docker.io/v1/`, as Docker and Apptainer write them;
//! other keys of an existing file are kept. The file is replaced through a temporary file
//! (mode 0600) renamed over it, so it is never half-written. The URIs logged in to (for
//! `registry list`, as Apptainer's `remote.yaml` keeps them) are in
//! `~/.sifr/registries.json`, updated only when no `--authfile` is given (as Apptainer).

use std::fs;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde_json::{Map, Value};

use super::auth::{CredentialOrigin, Credentials, normalize_key};
use super::reference::{DOCKER_HUB, ImageRef};
use super::registry::{FetchOptions, RegistryClient, RegistryError};

/// Docker Hub's key in docker config files.
pub const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

/// Credential files bigger than this are refused rather than read.
const MAX_FILE_BYTES: u64 = 4 << 20;

/// Why a login or logout failed.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error(
        "{uri}: {scheme} transport is not supported for login (use docker://HOST or oras://HOST)"
    )]
    Transport { uri: String, scheme: String },
    #[error("{uri}: keyserver login is not supported by sifr (it talks to no keyserver)")]
    Keyserver { uri: String },
    #[error("{uri}: not a registry URI (expected docker://HOST[:PORT] or oras://HOST[:PORT])")]
    BadUri { uri: String },
    #[error("Docker/OCI registry requires a username (give --username)")]
    NoUsername,
    #[error("a password is required (give --password, --password-stdin, or answer the prompt)")]
    NoPassword,
    #[error("registry {registry} rejected the credentials of user {user:?}: nothing stored")]
    Rejected { registry: String, user: String },
    #[error("cannot log in to {registry}: {err}")]
    Registry {
        registry: String,
        err: Box<RegistryError>,
    },
    #[error("cannot read registry credentials {}: {err}", path.display())]
    Read { path: PathBuf, err: io::Error },
    #[error("registry credentials {} are not a JSON object (fix or remove the file)", path.display())]
    NotJson { path: PathBuf },
    #[error("cannot write registry credentials {}: {err}", path.display())]
    Write { path: PathBuf, err: io::Error },
    #[error("no home directory to keep registry credentials in: set HOME or give --authfile")]
    NoHome,
}

/// A registry named by a login URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginTarget {
    /// The URI as given (`docker://localhost:5000`).
    pub uri: String,
    /// `host[:port][/path]`, Docker Hub's aliases folded into `docker.io`.
    pub registry: String,
}

impl LoginTarget {
    /// Parses `docker://HOST[:PORT][/PATH]` or `oras://...`; `http(s)://` names a keyserver
    /// (refused); anything else is refused as an unsupported transport, as Apptainer.
    pub fn parse(uri: &str) -> Result<LoginTarget, LoginError> {
        let Some((scheme, rest)) = uri.split_once("://") else {
            let scheme = uri.split_once(':').map_or("", |(s, _)| s);
            return Err(LoginError::Transport {
                uri: uri.to_string(),
                scheme: scheme.to_string(),
            });
        };
        match scheme {
            "docker" | "oras" => {}
            "http" | "https" => {
                return Err(LoginError::Keyserver {
                    uri: uri.to_string(),
                });
            }
            other => {
                return Err(LoginError::Transport {
                    uri: uri.to_string(),
                    scheme: other.to_string(),
                });
            }
        }
        let rest = rest.trim_end_matches('/');
        let (host, path) = match rest.split_once('/') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        };
        let valid_host = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-.:[]_".contains(c));
        if !valid_host {
            return Err(LoginError::BadUri {
                uri: uri.to_string(),
            });
        }
        let host = match host {
            "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => DOCKER_HUB,
            h => h,
        };
        Ok(LoginTarget {
            uri: uri.to_string(),
            registry: match path {
                Some(p) if !p.is_empty() => format!("{host}/{p}"),
                _ => host.to_string(),
            },
        })
    }

    /// The host part (`localhost:5000`).
    pub fn host(&self) -> &str {
        self.registry.split('/').next().unwrap_or(&self.registry)
    }

    /// The key of this registry in a docker config file.
    pub fn config_key(&self) -> String {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_KEY.to_string()
        } else {
            self.registry.clone()
        }
    }

    /// Whether Apptainer's registry client would speak plain HTTP to this host without
    /// being told: loopback hosts (`localhost`, `127.x.x.x`, `[::1]`).
    pub fn is_loopback(&self) -> bool {
        let host = self.host();
        let name = match host.rsplit_once(':') {
            Some((n, port)) if port.chars().all(|c| c.is_ascii_digit()) && !n.ends_with(':') => n,
            _ => host,
        };
        name == "localhost"
            || name.ends_with(".localhost")
            || name.starts_with("127.")
            || name == "[::1]"
            || name == "::1"
    }
}

/// Checks `creds` against the registry (see [`RegistryClient::check_login`]).
pub fn verify(
    target: &LoginTarget,
    creds: &Credentials,
    plain_http: bool,
) -> Result<(), LoginError> {
    // A client needs an image; the check asks only for the API root.
    let image = ImageRef::parse(&format!("{}/sifr-login-check", target.host())).map_err(|_| {
        LoginError::BadUri {
            uri: target.uri.clone(),
        }
    })?;
    let options = FetchOptions {
        plain_http,
        credentials: Some((creds.clone(), CredentialOrigin::CommandLine)),
        ..FetchOptions::default()
    };
    match RegistryClient::new(&image, options).check_login() {
        Ok(()) => Ok(()),
        Err(RegistryError::CredentialsRejected { .. }) | Err(RegistryError::Denied { .. }) => {
            Err(LoginError::Rejected {
                registry: target.registry.clone(),
                user: creds.username.clone(),
            })
        }
        Err(err) => Err(LoginError::Registry {
            registry: target.registry.clone(),
            err: Box::new(err),
        }),
    }
}

/// sifr's per-user directory (`~/.sifr`).
pub fn user_dir(home: Option<&Path>) -> Result<PathBuf, LoginError> {
    home.map(|h| h.join(".sifr")).ok_or(LoginError::NoHome)
}

/// sifr's credential file (`~/.sifr/docker-config.json`).
pub fn default_auth_file(home: &Path) -> PathBuf {
    home.join(".sifr/docker-config.json")
}

/// Reads a JSON object file; a missing file is an empty object.
fn read_object(path: &Path) -> Result<Map<String, Value>, LoginError> {
    let bytes = match super::read_capped(path, MAX_FILE_BYTES) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Map::new()),
        Err(err) => {
            return Err(LoginError::Read {
                path: path.to_path_buf(),
                err,
            });
        }
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(LoginError::NotJson {
            path: path.to_path_buf(),
        }),
    }
}

/// The directory of `path`, created (mode 0700) when missing.
fn private_dir(path: &Path) -> Result<&Path, LoginError> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !dir.is_dir() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|err| LoginError::Write {
                path: path.to_path_buf(),
                err,
            })?;
    }
    Ok(dir)
}

/// Holds an exclusive lock on the directory of `path` (created, mode 0700, when missing)
/// while a file in it is read, changed and written back, so that two logins at once do not
/// lose one another's entry. Released when the returned handle is dropped.
fn lock_dir(path: &Path) -> Result<fs::File, LoginError> {
    let werr = |err| LoginError::Write {
        path: path.to_path_buf(),
        err,
    };
    let dir = private_dir(path)?;
    let handle = fs::File::open(dir).map_err(werr)?;
    loop {
        // SAFETY: flock(2) on a descriptor this function owns; it changes no memory.
        let rc = unsafe { libc::flock(handle.as_raw_fd(), libc::LOCK_EX) };
        if rc == 0 {
            return Ok(handle);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(werr(err));
        }
    }
}

/// Writes `value` to `path` through a temporary file (mode 0600) renamed over it; the
/// directory is created (mode 0700) when missing.
fn write_private(path: &Path, value: &Value) -> Result<(), LoginError> {
    let werr = |err| LoginError::Write {
        path: path.to_path_buf(),
        err,
    };
    let dir = private_dir(path)?;
    // tempfile creates the file with mode 0600.
    let mut tmp = tempfile::Builder::new()
        .prefix(".sifr-auth-")
        .tempfile_in(dir)
        .map_err(werr)?;
    let mut text = serde_json::to_vec_pretty(value).map_err(|e| werr(io::Error::other(e)))?;
    text.push(b'\n');
    tmp.write_all(&text).map_err(werr)?;
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(0o600))
        .map_err(werr)?;
    tmp.as_file().sync_all().map_err(werr)?;
    tmp.persist(path).map_err(|e| werr(e.error))?;
    Ok(())
}

/// Stores `creds` for `target` in the config file `path` (other entries and keys kept).
pub fn store(path: &Path, target: &LoginTarget, creds: &Credentials) -> Result<(), LoginError> {
    let _lock = lock_dir(path)?;
    let mut file = read_object(path)?;
    let auths = file
        .entry("auths")
        .or_insert_with(|| Value::Object(Map::new()));
    if !auths.is_object() {
        *auths = Value::Object(Map::new());
    }
    let raw = format!("{}:{}", creds.username, creds.password);
    let mut entry = Map::new();
    entry.insert(
        "auth".into(),
        Value::String(base64::engine::general_purpose::STANDARD.encode(raw)),
    );
    if let Value::Object(a) = auths {
        // Docker Hub's other spellings of the key go, so one entry is left.
        let key = target.config_key();
        a.retain(|k, _| *k == key || normalize_key(k) != target.registry);
        a.insert(key, Value::Object(entry));
    }
    write_private(path, &Value::Object(file))
}

/// Removes the entry for `target` from `path`; false when there was none (the file is then
/// left untouched).
pub fn remove(path: &Path, target: &LoginTarget) -> Result<bool, LoginError> {
    if !path.exists() {
        return Ok(false);
    }
    let _lock = lock_dir(path)?;
    let mut file = read_object(path)?;
    let Some(Value::Object(auths)) = file.get_mut("auths") else {
        return Ok(false);
    };
    let before = auths.len();
    auths.retain(|k, _| normalize_key(k) != target.registry);
    if auths.len() == before {
        return Ok(false);
    }
    write_private(path, &Value::Object(file))?;
    Ok(true)
}

/// One URI logged in to, as `registry list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LoggedIn {
    pub uri: String,
    #[serde(default)]
    pub insecure: bool,
}

/// The file listing the URIs logged in to (`~/.sifr/registries.json`).
pub fn list_file(home: &Path) -> PathBuf {
    home.join(".sifr/registries.json")
}

/// The URIs logged in to, in login order.
pub fn read_list(path: &Path) -> Result<Vec<LoggedIn>, LoginError> {
    let file = read_object(path)?;
    match file.get("registries") {
        None => Ok(Vec::new()),
        Some(v) => serde_json::from_value(v.clone()).map_err(|_| LoginError::NotJson {
            path: path.to_path_buf(),
        }),
    }
}

/// Records a login (`Some`) or a logout (`None`) of `target` in the list file: entries for
/// the same registry are replaced.
pub fn update_list(
    path: &Path,
    target: &LoginTarget,
    login: Option<bool>,
) -> Result<(), LoginError> {
    let _lock = lock_dir(path)?;
    let mut list = read_list(path)?;
    let same = |e: &LoggedIn| {
        LoginTarget::parse(&e.uri).is_ok_and(|t| t.registry == target.registry)
            || e.uri == target.uri
    };
    list.retain(|e| !same(e));
    if let Some(insecure) = login {
        list.push(LoggedIn {
            uri: target.uri.clone(),
            insecure,
        });
    }
    let mut m = Map::new();
    m.insert(
        "registries".into(),
        serde_json::to_value(&list).map_err(|e| LoginError::Write {
            path: path.to_path_buf(),
            err: io::Error::other(e),
        })?,
    );
    write_private(path, &Value::Object(m))
}

/// `registry list`'s table: a blank line, then `URI` and `SECURE?` columns two spaces
/// apart (Go's tabwriter as Apptainer uses it).
pub fn list_text(list: &[LoggedIn]) -> String {
    let width = list
        .iter()
        .map(|e| e.uri.chars().count())
        .chain([3])
        .max()
        .unwrap_or(3)
        + 2;
    let mut out = String::from("\n");
    out.push_str(&format!("{:<width$}SECURE?\n", "URI"));
    for e in list {
        let secure = if e.insecure { "✗!" } else { "✓" };
        out.push_str(&format!("{:<width$}{secure}\n", e.uri));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn creds(u: &str, p: &str) -> Credentials {
        Credentials {
            username: u.into(),
            password: p.into(),
        }
    }

    #[test]
    fn test_parse_targets() {
        let t = LoginTarget::parse("docker://localhost:5000").expect("docker");
        assert_eq!(t.registry, "localhost:5000");
        assert!(t.is_loopback());
        assert_eq!(t.config_key(), "localhost:5000");
        let t = LoginTarget::parse("oras://ghcr.io/org/").expect("oras");
        assert_eq!((t.registry.as_str(), t.host()), ("ghcr.io/org", "ghcr.io"));
        assert!(!t.is_loopback());
        let t = LoginTarget::parse("docker://index.docker.io").expect("hub");
        assert_eq!(t.config_key(), DOCKER_HUB_KEY);
        assert!(
            LoginTarget::parse("docker://127.0.0.1:5000")
                .expect("ip")
                .is_loopback()
        );
        assert!(matches!(
            LoginTarget::parse("https://keys.example.org"),
            Err(LoginError::Keyserver { .. })
        ));
        assert!(matches!(
            LoginTarget::parse("library://x"),
            Err(LoginError::Transport { .. })
        ));
        assert!(matches!(
            LoginTarget::parse("localhost:5000"),
            Err(LoginError::Transport { .. })
        ));
        for bad in ["docker://", "docker://a b", "docker:///x"] {
            assert!(
                matches!(LoginTarget::parse(bad), Err(LoginError::BadUri { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn test_store_and_remove_keep_other_entries() {
        let d = tempfile::tempdir().expect("tempdir");
        let f = d.path().join("sub/config.json");
        let hub = LoginTarget::parse("docker://docker.io").expect("hub");
        let local = LoginTarget::parse("docker://localhost:5000").expect("local");
        store(&f, &hub, &creds("u", "p:1")).expect("store");
        let meta = fs::metadata(&f).expect("stat");
        assert_eq!(meta.mode() & 0o777, 0o600);
        assert_eq!(
            fs::metadata(f.parent().expect("dir")).expect("stat").mode() & 0o777,
            0o700
        );
        // Other keys of the file survive, an entry is replaced.
        let mut v: Value = serde_json::from_slice(&fs::read(&f).expect("read")).expect("json");
        v["credsStore"] = Value::String("desktop".into());
        fs::write(&f, serde_json::to_vec(&v).expect("json")).expect("write");
        store(&f, &local, &creds("a", "b")).expect("store");
        store(&f, &local, &creds("a", "c")).expect("store");
        let v: Value = serde_json::from_slice(&fs::read(&f).expect("read")).expect("json");
        assert_eq!(v["credsStore"], "desktop");
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        assert_eq!(v["auths"][DOCKER_HUB_KEY]["auth"], b64("u:p:1"));
        assert_eq!(v["auths"]["localhost:5000"]["auth"], b64("a:c"));
        // What auth.rs reads back.
        let q = super::super::auth::CredentialQuery {
            explicit: None,
            authfile: Some(&f),
            home: None,
            env: &|_| None,
        };
        let (c, _) = q
            .find("docker.io", "library/x")
            .expect("ok")
            .expect("found");
        assert_eq!(c, creds("u", "p:1"));
        assert!(remove(&f, &hub).expect("remove"));
        assert!(!remove(&f, &hub).expect("again"));
        let v: Value = serde_json::from_slice(&fs::read(&f).expect("read")).expect("json");
        assert!(v["auths"].get(DOCKER_HUB_KEY).is_none());
        assert!(v["auths"].get("localhost:5000").is_some());
        // A missing file has nothing to remove, and is not created.
        let none = d.path().join("none.json");
        assert!(!remove(&none, &hub).expect("missing"));
        assert!(!none.exists());
        // A file that is not JSON is refused, not overwritten.
        fs::write(&none, "garbage").expect("write");
        assert!(matches!(
            store(&none, &hub, &creds("u", "p")),
            Err(LoginError::NotJson { .. })
        ));
        assert_eq!(fs::read(&none).expect("read"), b"garbage");
    }

    /// Logins to different registries at once all end up in the file.
    #[test]
    fn test_concurrent_stores_lose_nothing() {
        let d = tempfile::tempdir().expect("tempdir");
        let f = d.path().join("c/config.json");
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let f = f.clone();
                std::thread::spawn(move || {
                    let t = LoginTarget::parse(&format!("docker://r{i}.example")).expect("t");
                    for _ in 0..5 {
                        store(&f, &t, &creds("u", &format!("p{i}"))).expect("store");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("join");
        }
        let v: Value = serde_json::from_slice(&fs::read(&f).expect("read")).expect("json");
        assert_eq!(v["auths"].as_object().expect("auths").len(), 8, "{v}");
        let leftovers: Vec<_> = fs::read_dir(f.parent().expect("dir"))
            .expect("list")
            .flatten()
            .filter(|e| e.file_name() != "config.json")
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn test_list() {
        let d = tempfile::tempdir().expect("tempdir");
        let f = d.path().join("registries.json");
        assert!(read_list(&f).expect("empty").is_empty());
        let a = LoginTarget::parse("docker://localhost:5000").expect("a");
        let b = LoginTarget::parse("oras://ghcr.io").expect("b");
        update_list(&f, &a, Some(false)).expect("a");
        update_list(&f, &b, Some(true)).expect("b");
        update_list(&f, &a, Some(false)).expect("a again");
        let l = read_list(&f).expect("list");
        assert_eq!(
            list_text(&l),
            "\nURI                      SECURE?\noras://ghcr.io           ✗!\ndocker://localhost:5000  ✓\n"
        );
        update_list(&f, &b, None).expect("logout");
        assert_eq!(read_list(&f).expect("list").len(), 1);
        assert_eq!(list_text(&[]), "\nURI  SECURE?\n");
    }
}
