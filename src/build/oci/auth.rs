//! Registry credentials and authentication challenges.
//!
//! Credentials come from, in order: the command line (`--docker-username` /
//! `--docker-password`), the environment (`SIFR_DOCKER_USERNAME` / `_PASSWORD`, then the
//! `APPTAINER_` and `SINGULARITY_` spellings), an explicit `--authfile`, and otherwise the
//! first docker-style `config.json` that has an entry for the registry: sifr's
//! `~/.sifr/docker-config.json` (written by `sifr registry login`, see [`super::login`]),
//! Apptainer's `~/.apptainer/docker-config.json` (written by `apptainer registry login`), then
//! `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`, then `$REGISTRY_AUTH_FILE` and
//! `$XDG_RUNTIME_DIR/containers/auth.json` (podman/skopeo). Credential helpers
//! (`credsStore`, `credHelpers`) and identity tokens are not supported.
//!
//! A registry that wants authentication answers 401 with a `WWW-Authenticate` header:
//! `Basic realm=...` (send the credentials on every request) or
//! `Bearer realm=...,service=...,scope=...` (trade them for a token at the realm).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Deserialize;

use crate::compat::ENV_PREFIXES;

use super::reference::DOCKER_HUB;

/// Config files bigger than this are refused rather than read.
const MAX_CONFIG_BYTES: u64 = 4 << 20;

/// A user name and password (or token) for a registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    /// Never prints the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl Credentials {
    /// The value of an `Authorization: Basic` header.
    pub fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

/// Where credentials were found; said in errors when a registry rejects them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialOrigin {
    CommandLine,
    Environment(String),
    ConfigFile(PathBuf),
}

impl fmt::Display for CredentialOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CredentialOrigin::CommandLine => write!(f, "--docker-username/--docker-password"),
            CredentialOrigin::Environment(v) => write!(f, "environment variable {v}"),
            CredentialOrigin::ConfigFile(p) => write!(f, "{}", p.display()),
        }
    }
}

/// Why credentials could not be determined.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error(
        "--docker-username {username} was given without a password: add --docker-password \
                 or set SIFR_DOCKER_PASSWORD"
    )]
    UsernameWithoutPassword { username: String },
    #[error("--docker-password was given without --docker-username")]
    PasswordWithoutUsername,
    #[error("{user_var} is set but {password_var} is not: set both, or neither")]
    HalfSet {
        user_var: String,
        password_var: String,
    },
    #[error("cannot read registry auth file {path}: {err}")]
    Read { path: PathBuf, err: std::io::Error },
    #[error("registry auth file {path} is larger than 4 MiB")]
    TooLarge { path: PathBuf },
    #[error("registry auth file {path} is not valid JSON: {err}")]
    Json {
        path: PathBuf,
        err: serde_json::Error,
    },
    #[error(
        "registry auth file {path}: the entry for {key:?} has an invalid \"auth\" value (expected base64 of user:password)"
    )]
    BadAuth { path: PathBuf, key: String },
}

#[derive(Deserialize, Default)]
struct ConfigFile {
    #[serde(default)]
    auths: Option<BTreeMap<String, AuthEntry>>,
}

#[derive(Deserialize, Default)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// Inputs for finding credentials, so tests need no real environment or home directory.
pub struct CredentialQuery<'a> {
    /// `--docker-username` / `--docker-password`.
    pub explicit: Option<&'a Credentials>,
    /// `--authfile`: when given it is the only file consulted, and it must exist.
    pub authfile: Option<&'a Path>,
    /// The home directory for the default file locations.
    pub home: Option<&'a Path>,
    /// Environment lookup.
    pub env: &'a dyn Fn(&str) -> Option<String>,
}

impl CredentialQuery<'_> {
    /// Finds credentials for `registry` (`docker.io`, `localhost:5000`) and `repository`.
    /// `Ok(None)` means anonymous access.
    pub fn find(
        &self,
        registry: &str,
        repository: &str,
    ) -> Result<Option<(Credentials, CredentialOrigin)>, AuthError> {
        if let Some(c) = self.explicit {
            return Ok(Some((c.clone(), CredentialOrigin::CommandLine)));
        }
        for prefix in ENV_PREFIXES {
            let user_var = format!("{prefix}DOCKER_USERNAME");
            let password_var = format!("{prefix}DOCKER_PASSWORD");
            match ((self.env)(&user_var), (self.env)(&password_var)) {
                (Some(username), Some(password)) if !username.is_empty() => {
                    return Ok(Some((
                        Credentials { username, password },
                        CredentialOrigin::Environment(user_var),
                    )));
                }
                (Some(u), None) if !u.is_empty() => {
                    return Err(AuthError::HalfSet {
                        user_var,
                        password_var,
                    });
                }
                _ => {}
            }
        }
        if let Some(path) = self.authfile {
            return lookup_file(path, registry, repository, true);
        }
        for path in self.default_files() {
            if let Some(found) = lookup_file(&path, registry, repository, false)? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    fn default_files(&self) -> Vec<PathBuf> {
        let mut files = Vec::new();
        if let Some(home) = self.home {
            files.push(super::login::default_auth_file(home));
            files.push(home.join(".apptainer/docker-config.json"));
            files.push(home.join(".singularity/docker-config.json"));
        }
        match (self.env)("DOCKER_CONFIG") {
            Some(dir) if !dir.is_empty() => files.push(Path::new(&dir).join("config.json")),
            _ => {
                if let Some(home) = self.home {
                    files.push(home.join(".docker/config.json"));
                }
            }
        }
        if let Some(f) = (self.env)("REGISTRY_AUTH_FILE").filter(|f| !f.is_empty()) {
            files.push(PathBuf::from(f));
        }
        if let Some(run) = (self.env)("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
            files.push(Path::new(&run).join("containers/auth.json"));
        }
        files
    }
}

/// Looks `registry` up in one docker-style config file. A missing default file is skipped;
/// an unreadable or malformed one is an error naming it.
fn lookup_file(
    path: &Path,
    registry: &str,
    repository: &str,
    must_exist: bool,
) -> Result<Option<(Credentials, CredentialOrigin)>, AuthError> {
    let bytes = match super::read_capped(path, MAX_CONFIG_BYTES) {
        Ok(b) => b,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound && !must_exist => return Ok(None),
        Err(err) if err.kind() == std::io::ErrorKind::FileTooLarge => {
            return Err(AuthError::TooLarge {
                path: path.to_path_buf(),
            });
        }
        Err(err) => {
            return Err(AuthError::Read {
                path: path.to_path_buf(),
                err,
            });
        }
    };
    let file: ConfigFile = serde_json::from_slice(&bytes).map_err(|err| AuthError::Json {
        path: path.to_path_buf(),
        err,
    })?;
    let Some(auths) = file.auths else {
        return Ok(None);
    };
    // The most specific key wins: `registry/namespace/repo` entries (podman) before the
    // plain registry.
    let wanted_host = normalize_key(registry);
    let full = format!("{wanted_host}/{repository}");
    let mut best: Option<(&String, &AuthEntry, usize)> = None;
    for (key, entry) in &auths {
        let k = normalize_key(key);
        let matches = k == wanted_host
            || (k.starts_with(&format!("{wanted_host}/"))
                && (full == k || full.starts_with(&format!("{k}/"))));
        if matches && best.is_none_or(|(_, _, len)| k.len() > len) {
            best = Some((key, entry, k.len()));
        }
    }
    let Some((key, entry, _)) = best else {
        return Ok(None);
    };
    let creds = if let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
        let bad = || AuthError::BadAuth {
            path: path.to_path_buf(),
            key: key.clone(),
        };
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|_| bad())?;
        let text = String::from_utf8(decoded).map_err(|_| bad())?;
        let (u, p) = text.split_once(':').ok_or_else(bad)?;
        Credentials {
            username: u.to_string(),
            password: p.to_string(),
        }
    } else if let (Some(u), Some(p)) = (&entry.username, &entry.password) {
        Credentials {
            username: u.clone(),
            password: p.clone(),
        }
    } else {
        log::debug!(
            "{}: entry {key:?} has no auth or username/password (identity tokens and \
             credential helpers are not supported); using anonymous access",
            path.display()
        );
        return Ok(None);
    };
    Ok(Some((
        creds,
        CredentialOrigin::ConfigFile(path.to_path_buf()),
    )))
}

/// `https://index.docker.io/v1/` → `docker.io`; `http://localhost:5000` → `localhost:5000`.
pub(crate) fn normalize_key(key: &str) -> String {
    let k = key
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let k = k.trim_end_matches('/');
    let k = k.strip_suffix("/v1").or(k.strip_suffix("/v2")).unwrap_or(k);
    let (host, rest) = match k.split_once('/') {
        Some((h, r)) => (h, Some(r)),
        None => (k, None),
    };
    let host = match host {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => DOCKER_HUB,
        h => h,
    };
    match rest {
        Some(r) => format!("{host}/{r}"),
        None => host.to_string(),
    }
}

/// One challenge from a `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
    Other(String),
}

/// Parses a `WWW-Authenticate` value: one or more `Scheme k=v, k="v"` challenges.
pub fn parse_challenges(header: &str) -> Vec<Challenge> {
    let mut out = Vec::new();
    let mut current: Option<(String, BTreeMap<String, String>)> = None;
    let mut rest = header.trim();
    let finish = |c: Option<(String, BTreeMap<String, String>)>, out: &mut Vec<Challenge>| {
        if let Some((scheme, params)) = c {
            out.push(make_challenge(&scheme, params));
        }
    };
    while !rest.is_empty() {
        rest = rest.trim_start_matches([' ', ',', '\t']);
        let token_end = rest
            .find(|c: char| c == '=' || c == ',' || c.is_whitespace())
            .unwrap_or(rest.len());
        let token = &rest[..token_end];
        if token.is_empty() {
            break;
        }
        let after = rest[token_end..].trim_start();
        if let Some(value_part) = after.strip_prefix('=') {
            // key=value inside the current challenge.
            let value_part = value_part.trim_start();
            let (value, remaining) = if let Some(q) = value_part.strip_prefix('"') {
                let mut v = String::new();
                let mut chars = q.char_indices();
                let mut end = q.len();
                while let Some((i, ch)) = chars.next() {
                    match ch {
                        '\\' => {
                            if let Some((_, n)) = chars.next() {
                                v.push(n);
                            }
                        }
                        '"' => {
                            end = i + 1;
                            break;
                        }
                        c => v.push(c),
                    }
                }
                (v, &q[end.min(q.len())..])
            } else {
                let e = value_part.find(',').unwrap_or(value_part.len());
                (value_part[..e].trim().to_string(), &value_part[e..])
            };
            if let Some((_, params)) = current.as_mut() {
                params.insert(token.to_ascii_lowercase(), value);
            }
            rest = remaining;
        } else {
            // A new scheme.
            finish(current.take(), &mut out);
            current = Some((token.to_string(), BTreeMap::new()));
            rest = after;
        }
    }
    finish(current, &mut out);
    out
}

fn make_challenge(scheme: &str, mut params: BTreeMap<String, String>) -> Challenge {
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => Challenge::Basic,
        "bearer" => match params.remove("realm") {
            Some(realm) => Challenge::Bearer {
                realm,
                service: params.remove("service"),
                scope: params.remove("scope"),
            },
            None => Challenge::Other(scheme.to_string()),
        },
        _ => Challenge::Other(scheme.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn query<'a>(
        env: &'a dyn Fn(&str) -> Option<String>,
        home: Option<&'a Path>,
    ) -> CredentialQuery<'a> {
        CredentialQuery {
            explicit: None,
            authfile: None,
            home,
            env,
        }
    }

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn test_parse_bearer_and_basic() {
        let c = parse_challenges(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull""#,
        );
        assert_eq!(
            c,
            vec![Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/alpine:pull".into()),
            }]
        );
        assert_eq!(
            parse_challenges(r#"Basic realm="basic-realm""#),
            vec![Challenge::Basic]
        );
        // Two challenges in one header, unquoted values, odd spacing and escapes.
        let two =
            parse_challenges(r#"Basic realm=x , Bearer realm="http://h/t\"q",scope=a:b:pull"#);
        assert_eq!(two.len(), 2);
        assert_eq!(
            two[1],
            Challenge::Bearer {
                realm: "http://h/t\"q".into(),
                service: None,
                scope: Some("a:b:pull".into())
            }
        );
        assert_eq!(
            parse_challenges("Negotiate"),
            vec![Challenge::Other("Negotiate".into())]
        );
        assert_eq!(
            parse_challenges("Bearer service=x"),
            vec![Challenge::Other("Bearer".into())]
        );
        for junk in ["", "=", "\"", "Bearer realm=\"unterminated", ",,,", "a=b=c"] {
            let _ = parse_challenges(junk);
        }
    }

    #[test]
    fn test_explicit_beats_environment() {
        let env = |k: &str| {
            (k == "SIFR_DOCKER_USERNAME" || k == "SIFR_DOCKER_PASSWORD").then(|| "e".to_string())
        };
        let explicit = Credentials {
            username: "u".into(),
            password: "p".into(),
        };
        let q = CredentialQuery {
            explicit: Some(&explicit),
            ..query(&env, None)
        };
        let (c, o) = q
            .find("docker.io", "library/x")
            .expect("ok")
            .expect("found");
        assert_eq!(c.username, "u");
        assert_eq!(o, CredentialOrigin::CommandLine);
        let (c, o) = query(&env, None)
            .find("docker.io", "x")
            .expect("ok")
            .expect("found");
        assert_eq!(c.username, "e");
        assert_eq!(
            o,
            CredentialOrigin::Environment("SIFR_DOCKER_USERNAME".into())
        );
    }

    #[test]
    fn test_environment_prefixes_and_half_set() {
        let env = |k: &str| match k {
            "APPTAINER_DOCKER_USERNAME" => Some("a".to_string()),
            "APPTAINER_DOCKER_PASSWORD" => Some("s3cr3t".to_string()),
            "SINGULARITY_DOCKER_USERNAME" => Some("s".to_string()),
            "SINGULARITY_DOCKER_PASSWORD" => Some("ps".to_string()),
            _ => None,
        };
        let (c, _) = query(&env, None)
            .find("r", "x")
            .expect("ok")
            .expect("found");
        assert_eq!((c.username.as_str(), c.password.as_str()), ("a", "s3cr3t"));
        let half = |k: &str| (k == "SINGULARITY_DOCKER_USERNAME").then(|| "s".to_string());
        let err = query(&half, None).find("r", "x").expect_err("half set");
        assert!(
            err.to_string().contains("SINGULARITY_DOCKER_PASSWORD"),
            "{err}"
        );
        let (c, _) = query(&env, None)
            .find("r", "x")
            .expect("ok")
            .expect("found");
        assert!(
            !format!("{c:?}").contains("s3cr3t"),
            "Debug must not show the password"
        );
    }

    #[test]
    fn test_config_files() {
        let home = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(home.path().join(".docker")).expect("mkdir");
        std::fs::write(
            home.path().join(".docker/config.json"),
            format!(
                r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{}"}},
                    "localhost:5000":{{"username":"lu","password":"lp"}},
                    "quay.io":{{"auth":"{}"}},
                    "quay.io/org":{{"auth":"{}"}},
                    "ghcr.io":{{"identitytoken":"t"}}}},"credsStore":"desktop"}}"#,
                b64("hub:hp"),
                b64("q:1"),
                b64("qo:2")
            ),
        )
        .expect("write");
        let q = query(&no_env, Some(home.path()));
        let user = |reg: &str, repo: &str| {
            q.find(reg, repo)
                .expect("ok")
                .map(|(c, _)| format!("{}:{}", c.username, c.password))
        };
        assert_eq!(
            user("docker.io", "library/alpine").as_deref(),
            Some("hub:hp")
        );
        assert_eq!(user("localhost:5000", "x").as_deref(), Some("lu:lp"));
        assert_eq!(user("quay.io", "org/tool").as_deref(), Some("qo:2"));
        assert_eq!(user("quay.io", "other/tool").as_deref(), Some("q:1"));
        assert_eq!(user("quay.io", "organic/x").as_deref(), Some("q:1"));
        assert_eq!(
            user("ghcr.io", "x"),
            None,
            "identity tokens are not supported"
        );
        assert_eq!(user("example.org", "x"), None);
        // Apptainer's own file is consulted first.
        std::fs::create_dir_all(home.path().join(".apptainer")).expect("mkdir");
        std::fs::write(
            home.path().join(".apptainer/docker-config.json"),
            format!(
                r#"{{"auths":{{"docker.io":{{"auth":"{}"}}}}}}"#,
                b64("app:1")
            ),
        )
        .expect("write");
        assert_eq!(
            user("docker.io", "library/alpine").as_deref(),
            Some("app:1")
        );
    }

    #[test]
    fn test_bad_config_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("auth.json");
        std::fs::write(&f, "{not json").expect("write");
        let q = CredentialQuery {
            authfile: Some(&f),
            ..query(&no_env, None)
        };
        assert!(matches!(q.find("r", "x"), Err(AuthError::Json { .. })));
        std::fs::write(&f, r#"{"auths":{"r":{"auth":"!!notbase64"}}}"#).expect("write");
        let err = q.find("r", "x").expect_err("bad auth");
        assert!(err.to_string().contains("auth.json"), "{err}");
        let missing = dir.path().join("missing.json");
        let q = CredentialQuery {
            authfile: Some(&missing),
            ..query(&no_env, None)
        };
        assert!(matches!(q.find("r", "x"), Err(AuthError::Read { .. })));
    }

    #[test]
    fn test_basic_header() {
        let c = Credentials {
            username: "user".into(),
            password: "pa:ss".into(),
        };
        assert_eq!(c.basic_header(), format!("Basic {}", b64("user:pa:ss")));
    }
}
