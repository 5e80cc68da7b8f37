//! The user's keyserver list (`keyserver add/remove/list/login/logout`): an ordered list of
//! HKP keyservers with their TLS choice and login, kept in `~/.sifr/keyservers.toml` (0600,
//! as it may hold a password). Apptainer keeps them in its remote endpoints; sifr has no
//! endpoints, so the list is per user.

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::hkp::{self, HkpClient, HkpError};

/// Largest keyserver file read.
const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// Why the keyserver list cannot be read, changed or used.
#[derive(Debug, thiserror::Error)]
pub enum KeyserverError {
    #[error("cannot {what} {}: {cause}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{}: not a keyserver list: {why}", path.display())]
    Parse { path: PathBuf, why: String },
    #[error("no home directory to keep the keyserver list in (set HOME)")]
    NoHome,
    #[error("invalid URI: cannot have empty URI")]
    EmptyUri,
    #[error("order must be > 0")]
    ZeroOrder,
    #[error("order is out of range: maximum is {0}")]
    OrderOutOfRange(usize),
    #[error("{0} is already configured")]
    AlreadyConfigured(String),
    #[error("keyserver {0} is not configured")]
    NotConfigured(String),
    #[error(transparent)]
    Url(#[from] HkpError),
}

/// One configured keyserver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Keyserver {
    /// As the user gave it.
    pub uri: String,
    /// Skip TLS certificate checks.
    #[serde(default)]
    pub insecure: bool,
    /// Login (HTTP basic authentication), from `keyserver login`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

impl Keyserver {
    /// A client for this keyserver.
    pub fn client(&self) -> Result<HkpClient, HkpError> {
        let creds = match (&self.username, &self.password) {
            (Some(u), Some(p)) => Some((u.as_str(), p.as_str())),
            _ => None,
        };
        HkpClient::new(&self.uri, self.insecure, creds)
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct File {
    #[serde(default, rename = "keyserver")]
    keyservers: Vec<Keyserver>,
}

/// The ordered keyserver list and the file it lives in.
#[derive(Debug)]
pub struct KeyserverList {
    path: PathBuf,
    /// In order: the first is used first.
    pub keyservers: Vec<Keyserver>,
}

/// `~/.sifr/keyservers.toml`.
pub fn default_path() -> Result<PathBuf, KeyserverError> {
    crate::build::oci::home_dir()
        .map(|h| h.join(".sifr").join("keyservers.toml"))
        .ok_or(KeyserverError::NoHome)
}

/// Same keyserver when the normalized URLs are equal.
fn same(a: &str, b: &str) -> bool {
    match (hkp::normalize_url(a), hkp::normalize_url(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => a.trim_end_matches('/') == b.trim_end_matches('/'),
    }
}

impl KeyserverList {
    /// Reads the list at `path`; a missing file is an empty list.
    pub fn load(path: &Path) -> Result<KeyserverList, KeyserverError> {
        let text = match crate::config::paths::read_capped(path, MAX_FILE_BYTES) {
            Ok(b) => String::from_utf8(b).map_err(|_| KeyserverError::Parse {
                path: path.to_path_buf(),
                why: "not UTF-8".into(),
            })?,
            Err(crate::config::ConfigError::Read { cause, .. })
                if cause.kind() == std::io::ErrorKind::NotFound =>
            {
                String::new()
            }
            Err(crate::config::ConfigError::Read { cause, .. }) => {
                return Err(KeyserverError::Io {
                    what: "read",
                    path: path.to_path_buf(),
                    cause,
                });
            }
            Err(e) => {
                return Err(KeyserverError::Parse {
                    path: path.to_path_buf(),
                    why: e.to_string(),
                });
            }
        };
        let f: File = toml::from_str(&text).map_err(|e| KeyserverError::Parse {
            path: path.to_path_buf(),
            why: e.message().to_string(),
        })?;
        Ok(KeyserverList {
            path: path.to_path_buf(),
            keyservers: f.keyservers,
        })
    }

    /// The file of this list.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes the list (0600, replaced atomically, directory created 0700).
    pub fn save(&self) -> Result<(), KeyserverError> {
        let io = |what, cause| KeyserverError::Io {
            what,
            path: self.path.clone(),
            cause,
        };
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| io("create the directory of", e))?;
        let text = toml::to_string(&File {
            keyservers: self.keyservers.clone(),
        })
        .map_err(|e| KeyserverError::Parse {
            path: self.path.clone(),
            why: e.to_string(),
        })?;
        let tmp = dir.join(format!(".keyservers.toml.tmp{}", std::process::id()));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| io("write", e))?;
        let written = f
            .write_all(text.as_bytes())
            .and_then(|_| f.sync_all())
            .and_then(|_| std::fs::rename(&tmp, &self.path));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(io("write", e));
        }
        Ok(())
    }

    /// Adds `uri` at position `order` (1-based; `None` appends), as Apptainer's
    /// `AddKeyserver`.
    pub fn add(
        &mut self,
        uri: &str,
        order: Option<usize>,
        insecure: bool,
    ) -> Result<(), KeyserverError> {
        if uri.trim().is_empty() {
            return Err(KeyserverError::EmptyUri);
        }
        hkp::normalize_url(uri)?;
        let max = self.keyservers.len() + 1;
        let at = match order {
            Some(0) => return Err(KeyserverError::ZeroOrder),
            Some(n) if n > max => return Err(KeyserverError::OrderOutOfRange(max)),
            Some(n) => n,
            None => max,
        };
        if self.keyservers.iter().any(|k| same(&k.uri, uri)) {
            return Err(KeyserverError::AlreadyConfigured(uri.to_string()));
        }
        self.keyservers.insert(
            at - 1,
            Keyserver {
                uri: uri.to_string(),
                insecure,
                username: None,
                password: None,
            },
        );
        Ok(())
    }

    /// Removes `uri`.
    pub fn remove(&mut self, uri: &str) -> Result<(), KeyserverError> {
        let i = self.position(uri)?;
        self.keyservers.remove(i);
        Ok(())
    }

    fn position(&self, uri: &str) -> Result<usize, KeyserverError> {
        self.keyservers
            .iter()
            .position(|k| same(&k.uri, uri))
            .ok_or_else(|| KeyserverError::NotConfigured(uri.to_string()))
    }

    /// Records a login for `uri` (added at the end when not in the list yet).
    pub fn login(
        &mut self,
        uri: &str,
        username: &str,
        password: &str,
    ) -> Result<(), KeyserverError> {
        let i = match self.position(uri) {
            Ok(i) => i,
            Err(_) => {
                self.add(uri, None, false)?;
                self.keyservers.len() - 1
            }
        };
        let k = &mut self.keyservers[i];
        k.username = Some(username.to_string());
        k.password = Some(password.to_string());
        Ok(())
    }

    /// Forgets the login for `uri`.
    pub fn logout(&mut self, uri: &str) -> Result<(), KeyserverError> {
        let i = self.position(uri)?;
        self.keyservers[i].username = None;
        self.keyservers[i].password = None;
        Ok(())
    }

    /// The configured keyserver for `uri`, or a plain one (no login, TLS checked).
    pub fn for_uri(&self, uri: &str) -> Keyserver {
        self.keyservers
            .iter()
            .find(|k| same(&k.uri, uri))
            .cloned()
            .unwrap_or_else(|| Keyserver {
                uri: uri.to_string(),
                insecure: false,
                username: None,
                password: None,
            })
    }

    /// `keyserver list`'s text (Apptainer's layout for one endpoint, named `sifr`).
    pub fn listing(&self) -> String {
        let mut t = String::new();
        for (i, k) in self.keyservers.iter().enumerate() {
            let lock = if k.insecure { "" } else { "🔒" };
            t.push_str(&format!(" \t#{}\t{}\t{lock}\n", i + 1, k.uri));
        }
        format!(
            "\nsifr ^\n{}\n(* = system endpoint, ^ = default endpoint)\n",
            hkp::tabwrite(&t)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list() -> (tempfile::TempDir, KeyserverList) {
        let d = tempfile::tempdir().expect("tempdir");
        let l = KeyserverList::load(&d.path().join("sub/keyservers.toml")).expect("empty");
        (d, l)
    }

    #[test]
    fn test_add_orders_as_apptainer() {
        let (_d, mut l) = list();
        l.add("http://a:1", None, false).expect("add");
        l.add("http://b:1", Some(1), true).expect("add first");
        l.add("http://c:1", Some(3), false).expect("add last");
        let uris: Vec<&str> = l.keyservers.iter().map(|k| k.uri.as_str()).collect();
        assert_eq!(uris, ["http://b:1", "http://a:1", "http://c:1"]);
        assert!(matches!(
            l.add("http://d:1", Some(5), false),
            Err(KeyserverError::OrderOutOfRange(4))
        ));
        assert!(matches!(
            l.add("http://d:1", Some(0), false),
            Err(KeyserverError::ZeroOrder)
        ));
        assert!(matches!(
            l.add("http://a:1/", None, false),
            Err(KeyserverError::AlreadyConfigured(_))
        ));
        assert!(l.add("nohost", None, false).is_err());
        assert!(matches!(
            l.remove("http://x:1"),
            Err(KeyserverError::NotConfigured(_))
        ));
        l.remove("http://a:1").expect("remove");
        assert_eq!(l.keyservers.len(), 2);
    }

    #[test]
    fn test_saved_0600_and_read_back_with_login() {
        use std::os::unix::fs::PermissionsExt as _;
        let (_d, mut l) = list();
        l.add("http://a:1", None, true).expect("add");
        l.login("http://b:2", "u", "p").expect("login");
        l.save().expect("save");
        let mode = std::fs::metadata(l.path())
            .expect("saved")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let back = KeyserverList::load(l.path()).expect("load");
        assert_eq!(back.keyservers, l.keyservers);
        assert_eq!(back.for_uri("http://b:2").username.as_deref(), Some("u"));
        let mut back = back;
        back.logout("http://b:2").expect("logout");
        assert_eq!(back.for_uri("http://b:2").password, None);
        assert!(back.listing().contains("#1  http://a:1"));
    }

    #[test]
    fn test_corrupt_file_is_an_error() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("k.toml");
        std::fs::write(&p, "[[keyserver]]\nnouri = 1\n").expect("write");
        assert!(matches!(
            KeyserverList::load(&p),
            Err(KeyserverError::Parse { .. })
        ));
    }
}
