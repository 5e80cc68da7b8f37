//! The keyrings on disk: the user's (`pgp-public` and `pgp-secret`, binary OpenPGP packets
//! in a private directory, as Apptainer keeps them) and the install's global public keyring
//! (`<prefix>/etc/sifr/global-pgp-public`), with the operations of `sifr key`: add a new
//! pair, import, export, remove, list.
//!
//! Every change is written to a temporary file in the same directory and renamed over the
//! keyring, so a crash never leaves a truncated keyring. A change is all or nothing: an
//! import that would fail half-way writes nothing.

use std::ffi::OsString;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ::pgp::composed::{PublicOrSecret, SignedPublicKey, SignedSecretKey};
use ::pgp::types::KeyDetails;

use super::pgp::{self, KeySource, Keyring, MAX_KEY_FILE_BYTES};
use crate::config::paths::read_capped;
use crate::config::{ConfigError, SystemFile, SystemPaths};

/// The user's public keyring file name.
pub const PUBLIC_FILE: &str = "pgp-public";
/// The user's secret keyring file name.
pub const SECRET_FILE: &str = "pgp-secret";

/// A keyring problem. Each message names the file and how to fix it where there is a fix.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    #[error(
        "cannot find the keyring directory: set --keysdir or SIFR_KEYSDIR, or HOME or XDG_DATA_HOME"
    )]
    NoHome,
    #[error("cannot {what} {}: {cause}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        cause: io::Error,
    },
    #[error("{}: {why}", path.display())]
    Parse { path: PathBuf, why: String },
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{}: no OpenPGP key found in the file", path.display())]
    NoKeys { path: PathBuf },
    #[error("the key with fingerprint {fingerprint} already belongs to the keyring ({})", path.display())]
    Exists { fingerprint: String, path: PathBuf },
    #[error("no key matching fingerprint {fingerprint} found in {}", path.display())]
    NotFound { fingerprint: String, path: PathBuf },
    #[error("\"{0}\" is not a key fingerprint (expected 40 hex digits, optionally after 0x)")]
    BadFingerprint(String),
    #[error(
        "the global keyring {} can be changed only by root or by the owner of the installation ({}, uid {owner}); you are uid {uid}",
        path.display(), dir.display()
    )]
    NotAllowed {
        path: PathBuf,
        dir: PathBuf,
        owner: u32,
        uid: u32,
    },
    #[error("{0}")]
    Key(String),
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> KeyringError + 'a {
    move |cause| KeyringError::Io {
        what,
        path: path.to_path_buf(),
        cause,
    }
}

/// The user's keyring directory when `--keysdir`/`SIFR_KEYSDIR` is not given:
/// `$XDG_DATA_HOME/sifr/keys`, else `$HOME/.local/share/sifr/keys`.
pub fn default_keys_dir(env: impl Fn(&str) -> Option<OsString>) -> Result<PathBuf, KeyringError> {
    if let Some(x) = env("XDG_DATA_HOME").map(PathBuf::from)
        && x.is_absolute()
    {
        return Ok(x.join("sifr/keys"));
    }
    match env("HOME").map(PathBuf::from) {
        Some(h) if h.is_absolute() => Ok(h.join(".local/share/sifr/keys")),
        _ => Err(KeyringError::NoHome),
    }
}

/// Normalises a fingerprint argument: `0x` prefix dropped, 40 hex digits, upper case.
pub fn parse_fingerprint(text: &str) -> Result<String, KeyringError> {
    let t = text.trim();
    let t = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(t);
    if t.len() == 40 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(t.to_ascii_uppercase())
    } else {
        Err(KeyringError::BadFingerprint(text.to_string()))
    }
}

/// Reads a key file given by the user.
pub fn read_key_file(path: &Path) -> Result<Vec<PublicOrSecret>, KeyringError> {
    let bytes = read_capped(path, MAX_KEY_FILE_BYTES).map_err(|e| match e {
        ConfigError::Read { cause, .. } => KeyringError::Io {
            what: "read",
            path: path.to_path_buf(),
            cause,
        },
        other => KeyringError::Config(other),
    })?;
    let keys = pgp::parse_keys(&bytes).map_err(|why| KeyringError::Parse {
        path: path.to_path_buf(),
        why: format!("not an OpenPGP key file: {why}"),
    })?;
    if keys.is_empty() {
        return Err(KeyringError::NoKeys {
            path: path.to_path_buf(),
        });
    }
    Ok(keys)
}

/// Reads a keyring file; a missing one is empty.
fn read_ring(path: &Path) -> Result<Vec<PublicOrSecret>, KeyringError> {
    match read_capped(path, MAX_KEY_FILE_BYTES) {
        Ok(bytes) => pgp::parse_keys(&bytes).map_err(|why| KeyringError::Parse {
            path: path.to_path_buf(),
            why: format!("corrupt keyring: {why}"),
        }),
        Err(ConfigError::Read { cause, .. }) if cause.kind() == io::ErrorKind::NotFound => {
            Ok(Vec::new())
        }
        Err(ConfigError::Read { cause, .. }) => Err(KeyringError::Io {
            what: "read",
            path: path.to_path_buf(),
            cause,
        }),
        Err(other) => Err(other.into()),
    }
}

/// Replaces `path` with `bytes` atomically, with permissions `mode`.
fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), KeyringError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        // The umask may have narrowed the mode; set it exactly.
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(io_err("write", path))
}

/// Upper-case hex fingerprint of a public key.
fn fp_public(k: &SignedPublicKey) -> String {
    pgp::fingerprint_hex(k.fingerprint().as_bytes())
}

/// Upper-case hex fingerprint of a secret key.
fn fp_secret(k: &SignedSecretKey) -> String {
    pgp::fingerprint_hex(k.fingerprint().as_bytes())
}

/// The user's keyring directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalKeyring {
    dir: PathBuf,
}

/// Which half of a key pair `key remove` deletes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RemoveWhich {
    #[default]
    Public,
    Private,
    Both,
}

/// What an import added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    pub fingerprint: String,
    /// True for the secret keyring, false for the public one.
    pub secret: bool,
}

impl LocalKeyring {
    /// The keyring in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> LocalKeyring {
        LocalKeyring { dir: dir.into() }
    }

    /// The user's keyring: in `dir` when given (`--keysdir`/`SIFR_KEYSDIR`), else under the
    /// XDG data home (see `default_keys_dir`).
    pub fn at_or_default(dir: Option<&Path>) -> Result<LocalKeyring, KeyringError> {
        let dir = match dir {
            Some(d) => d.to_path_buf(),
            None => default_keys_dir(|k| std::env::var_os(k))?,
        };
        Ok(LocalKeyring::new(dir))
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The public keyring file.
    pub fn public_path(&self) -> PathBuf {
        self.dir.join(PUBLIC_FILE)
    }

    /// The secret keyring file.
    pub fn secret_path(&self) -> PathBuf {
        self.dir.join(SECRET_FILE)
    }

    /// The public keys.
    pub fn public_keys(&self) -> Result<Vec<SignedPublicKey>, KeyringError> {
        Ok(read_ring(&self.public_path())?
            .iter()
            .map(pgp::public_of)
            .collect())
    }

    /// The secret keys (public keys in the secret file are ignored).
    pub fn secret_keys(&self) -> Result<Vec<SignedSecretKey>, KeyringError> {
        Ok(read_ring(&self.secret_path())?
            .into_iter()
            .filter_map(|k| match k {
                PublicOrSecret::Secret(s) => Some(s),
                PublicOrSecret::Public(_) => None,
            })
            .collect())
    }

    /// Creates the directory (mode 0700) if needed; tightens the mode of an existing one.
    fn ensure_dir(&self) -> Result<(), KeyringError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(io_err("create the keyring directory", &self.dir))?;
        let meta = fs::metadata(&self.dir).map_err(io_err("read", &self.dir))?;
        if meta.permissions().mode() & 0o077 != 0 && meta.uid() == nix::unistd::geteuid().as_raw() {
            log::warn!(
                "the keyring directory {} was readable by others; making it private (0700)",
                self.dir.display()
            );
            fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o700))
                .map_err(io_err("change the mode of", &self.dir))?;
        }
        Ok(())
    }

    fn store_public(&self, keys: &[SignedPublicKey]) -> Result<(), KeyringError> {
        self.ensure_dir()?;
        let bytes = pgp::to_binary(keys).map_err(KeyringError::Key)?;
        write_atomic(&self.public_path(), &bytes, 0o600)
    }

    fn store_secret(&self, keys: &[SignedSecretKey]) -> Result<(), KeyringError> {
        self.ensure_dir()?;
        let bytes = pgp::to_binary(keys).map_err(KeyringError::Key)?;
        write_atomic(&self.secret_path(), &bytes, 0o600)
    }

    /// Adds a new key pair (secret and public halves).
    pub fn add_pair(&self, key: &SignedSecretKey) -> Result<(), KeyringError> {
        let mut secret = self.secret_keys()?;
        let mut public = self.public_keys()?;
        let fp = fp_secret(key);
        if secret.iter().any(|k| fp_secret(k) == fp) {
            return Err(KeyringError::Exists {
                fingerprint: fp,
                path: self.secret_path(),
            });
        }
        secret.push(key.clone());
        public.retain(|k| fp_public(k) != fp);
        public.push(key.to_public_key());
        self.store_secret(&secret)?;
        self.store_public(&public)
    }

    /// Adds public keys fetched from a keyserver, skipping those already in the public
    /// keyring (as Apptainer's `key pull`); returns how many were added.
    pub fn add_public(&self, keys: &[SignedPublicKey]) -> Result<usize, KeyringError> {
        let mut public = self.public_keys()?;
        let mut added = 0;
        for k in keys {
            let fp = fp_public(k);
            if !public.iter().any(|x| fp_public(x) == fp) {
                public.push(k.clone());
                added += 1;
            }
        }
        if added > 0 {
            self.store_public(&public)?;
        }
        Ok(added)
    }

    /// Imports every key of a file: secret keys into the secret keyring (and their public
    /// halves into the public one), public keys into the public keyring. A key already
    /// there is an error, except the public half of an imported secret key.
    pub fn import(&self, keys: &[PublicOrSecret]) -> Result<Vec<Imported>, KeyringError> {
        let mut secret = self.secret_keys()?;
        let mut public = self.public_keys()?;
        let mut added = Vec::new();
        let (mut secret_changed, mut public_changed) = (false, false);
        for k in keys {
            match k {
                PublicOrSecret::Secret(s) => {
                    let fp = fp_secret(s);
                    if secret.iter().any(|x| fp_secret(x) == fp) {
                        return Err(KeyringError::Exists {
                            fingerprint: fp,
                            path: self.secret_path(),
                        });
                    }
                    secret.push(s.clone());
                    secret_changed = true;
                    added.push(Imported {
                        fingerprint: fp.clone(),
                        secret: true,
                    });
                    if !public.iter().any(|x| fp_public(x) == fp) {
                        public.push(s.to_public_key());
                        public_changed = true;
                        added.push(Imported {
                            fingerprint: fp,
                            secret: false,
                        });
                    }
                }
                PublicOrSecret::Public(p) => {
                    let fp = fp_public(p);
                    if public.iter().any(|x| fp_public(x) == fp) {
                        return Err(KeyringError::Exists {
                            fingerprint: fp,
                            path: self.public_path(),
                        });
                    }
                    public.push(p.clone());
                    public_changed = true;
                    added.push(Imported {
                        fingerprint: fp,
                        secret: false,
                    });
                }
            }
        }
        if secret_changed {
            self.store_secret(&secret)?;
        }
        if public_changed {
            self.store_public(&public)?;
        }
        Ok(added)
    }

    /// Removes the key with fingerprint `fp` (see [`parse_fingerprint`]).
    pub fn remove(&self, fp: &str, which: RemoveWhich) -> Result<(), KeyringError> {
        let want_public = matches!(which, RemoveWhich::Public | RemoveWhich::Both);
        let want_secret = matches!(which, RemoveWhich::Private | RemoveWhich::Both);
        let mut public = self.public_keys()?;
        let mut secret = self.secret_keys()?;
        let np = public.len();
        let ns = secret.len();
        public.retain(|k| fp_public(k) != fp);
        secret.retain(|k| fp_secret(k) != fp);
        if want_public && public.len() == np {
            return Err(KeyringError::NotFound {
                fingerprint: fp.to_string(),
                path: self.public_path(),
            });
        }
        if want_secret && secret.len() == ns {
            return Err(KeyringError::NotFound {
                fingerprint: fp.to_string(),
                path: self.secret_path(),
            });
        }
        if want_secret {
            self.store_secret(&secret)?;
        }
        if want_public {
            self.store_public(&public)?;
        }
        Ok(())
    }
}

/// The install's global public keyring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobalKeyring {
    paths: SystemPaths,
}

impl GlobalKeyring {
    /// The global keyring of the install at `paths`.
    pub fn new(paths: SystemPaths) -> GlobalKeyring {
        GlobalKeyring { paths }
    }

    /// The global keyring of the running install.
    pub fn detect() -> Result<GlobalKeyring, ConfigError> {
        Ok(GlobalKeyring::new(SystemPaths::detect()?))
    }

    /// The keyring file.
    pub fn path(&self) -> PathBuf {
        self.paths.path_of(SystemFile::GlobalPgpPublic)
    }

    /// The public keys (the built-in default is empty).
    pub fn public_keys(&self) -> Result<Vec<SignedPublicKey>, KeyringError> {
        let loaded = self.paths.read(SystemFile::GlobalPgpPublic)?;
        let keys = pgp::parse_keys(&loaded.value).map_err(|why| KeyringError::Parse {
            path: self.path(),
            why: format!("corrupt keyring: {why}"),
        })?;
        Ok(keys.iter().map(pgp::public_of).collect())
    }

    /// Refuses a change unless the caller is root or owns the installation (the
    /// configuration directory, or the prefix when that does not exist yet).
    pub fn check_may_modify(&self, uid: u32) -> Result<(), KeyringError> {
        if uid == 0 {
            return Ok(());
        }
        let dir = if self.paths.config_dir().exists() {
            self.paths.config_dir().to_path_buf()
        } else {
            self.paths.prefix().to_path_buf()
        };
        let owner = fs::metadata(&dir).map_err(io_err("read", &dir))?.uid();
        if owner == uid {
            Ok(())
        } else {
            Err(KeyringError::NotAllowed {
                path: self.path(),
                dir,
                owner,
                uid,
            })
        }
    }

    fn store(&self, keys: &[SignedPublicKey]) -> Result<(), KeyringError> {
        let dir = self.paths.config_dir();
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(io_err("create", dir))?;
        let bytes = pgp::to_binary(keys).map_err(KeyringError::Key)?;
        write_atomic(&self.path(), &bytes, 0o644)
    }

    /// Imports the public keys of a file (the public halves of secret keys: the global
    /// keyring never holds secrets). Checks the caller with [`Self::check_may_modify`].
    pub fn import(&self, keys: &[PublicOrSecret], uid: u32) -> Result<Vec<Imported>, KeyringError> {
        self.check_may_modify(uid)?;
        let mut public = self.public_keys()?;
        let mut added = Vec::new();
        for k in keys {
            let p = pgp::public_of(k);
            let fp = fp_public(&p);
            if public.iter().any(|x| fp_public(x) == fp) {
                return Err(KeyringError::Exists {
                    fingerprint: fp,
                    path: self.path(),
                });
            }
            public.push(p);
            added.push(Imported {
                fingerprint: fp,
                secret: false,
            });
        }
        self.store(&public)?;
        Ok(added)
    }

    /// Removes the key with fingerprint `fp`.
    pub fn remove(&self, fp: &str, uid: u32) -> Result<(), KeyringError> {
        self.check_may_modify(uid)?;
        let mut public = self.public_keys()?;
        let n = public.len();
        public.retain(|k| fp_public(k) != fp);
        if public.len() == n {
            return Err(KeyringError::NotFound {
                fingerprint: fp.to_string(),
                path: self.path(),
            });
        }
        self.store(&public)
    }
}

/// The keys `verify` uses: the global keyring, plus the user's unless `global_only`.
pub fn verification_keyring(
    local: Option<&LocalKeyring>,
    global: &GlobalKeyring,
) -> Result<Keyring, KeyringError> {
    let mut kr = Keyring::new();
    for k in global.public_keys()? {
        kr.add(k, KeySource::Global);
    }
    if let Some(local) = local {
        for k in local.public_keys()? {
            kr.add(k, KeySource::Local);
        }
    }
    Ok(kr)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sign::pgp::tests::{PGP_A, PGP_S, read_fixture};

    fn keys_of(rel: &str) -> Option<Vec<PublicOrSecret>> {
        pgp::parse_keys(&read_fixture(rel)?).ok()
    }

    #[test]
    fn test_default_keys_dir() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| OsString::from(v))
            }
        };
        assert_eq!(
            default_keys_dir(env(&[("HOME", "/home/u")])).expect("home"),
            Path::new("/home/u/.local/share/sifr/keys")
        );
        assert_eq!(
            default_keys_dir(env(&[("HOME", "/home/u"), ("XDG_DATA_HOME", "/x")])).expect("xdg"),
            Path::new("/x/sifr/keys")
        );
        // A relative XDG_DATA_HOME is ignored, as the XDG spec says.
        assert_eq!(
            default_keys_dir(env(&[("HOME", "/h"), ("XDG_DATA_HOME", "rel")])).expect("home"),
            Path::new("/h/.local/share/sifr/keys")
        );
        assert!(default_keys_dir(env(&[])).is_err());
    }

    #[test]
    fn test_parse_fingerprint() {
        assert_eq!(
            parse_fingerprint(&format!("0x{}", PGP_S.to_lowercase())).expect("ok"),
            PGP_S
        );
        for bad in ["", "ABCD", &format!("{PGP_S}00"), &PGP_S.replace('A', "Z")] {
            assert!(parse_fingerprint(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn test_import_export_remove_cycle() {
        let (Some(secret), Some(public)) = (
            keys_of("keys/private.asc"),
            keys_of("apptainer/keys/pgp-public.asc"),
        ) else {
            crate::testutil::skip("fixtures not found");
            return;
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let kr = LocalKeyring::new(dir.path().join("keys"));
        assert!(kr.public_keys().expect("missing = empty").is_empty());
        let added = kr.import(&secret).expect("import secret");
        assert_eq!(
            added,
            [
                Imported {
                    fingerprint: PGP_S.into(),
                    secret: true
                },
                Imported {
                    fingerprint: PGP_S.into(),
                    secret: false
                }
            ]
        );
        kr.import(&public).expect("import public");
        assert_eq!(kr.public_keys().expect("read").len(), 2);
        assert_eq!(kr.secret_keys().expect("read").len(), 1);
        let mode = |p: &Path| fs::metadata(p).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode(kr.dir()), 0o700);
        assert_eq!(mode(&kr.public_path()), 0o600);
        assert_eq!(mode(&kr.secret_path()), 0o600);
        // Duplicates are refused and change nothing.
        let before = fs::read(kr.public_path()).expect("read");
        let err = kr.import(&public).expect_err("duplicate");
        assert!(err.to_string().contains(PGP_A), "{err}");
        assert_eq!(fs::read(kr.public_path()).expect("read"), before);
        // Remove the public half only, then the secret half.
        kr.remove(PGP_S, RemoveWhich::Public)
            .expect("remove public");
        assert_eq!(kr.public_keys().expect("read").len(), 1);
        assert_eq!(kr.secret_keys().expect("read").len(), 1);
        assert!(kr.remove(PGP_S, RemoveWhich::Public).is_err());
        kr.remove(PGP_S, RemoveWhich::Private)
            .expect("remove secret");
        assert!(kr.secret_keys().expect("read").is_empty());
        let err = kr.remove(PGP_S, RemoveWhich::Both).expect_err("gone");
        assert!(
            err.to_string().starts_with("no key matching fingerprint"),
            "{err}"
        );
    }

    #[test]
    fn test_add_public_skips_keys_already_there() {
        let Some(public) = keys_of("apptainer/keys/pgp-public.asc") else {
            crate::testutil::skip("fixtures not found");
            return;
        };
        let keys: Vec<SignedPublicKey> = public.iter().map(pgp::public_of).collect();
        let dir = tempfile::tempdir().expect("tempdir");
        let kr = LocalKeyring::new(dir.path().join("keys"));
        assert_eq!(kr.add_public(&keys).expect("add"), keys.len());
        let before = fs::read(kr.public_path()).expect("stored");
        assert_eq!(kr.add_public(&keys).expect("again"), 0);
        assert_eq!(fs::read(kr.public_path()).expect("stored"), before);
    }

    #[test]
    fn test_corrupt_keyring_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let kr = LocalKeyring::new(dir.path());
        fs::write(kr.public_path(), b"\x99\x01garbage").expect("write");
        let err = kr.public_keys().expect_err("corrupt");
        assert!(err.to_string().contains("pgp-public"), "{err}");
        let err = read_key_file(&dir.path().join("none.asc")).expect_err("missing");
        assert!(err.to_string().contains("none.asc"), "{err}");
        fs::write(dir.path().join("empty.asc"), b"").expect("write");
        assert!(matches!(
            read_key_file(&dir.path().join("empty.asc")),
            Err(KeyringError::NoKeys { .. })
        ));
    }

    #[test]
    fn test_global_keyring_rules() {
        let Some(secret) = keys_of("keys/private.asc") else {
            crate::testutil::skip("fixtures not found");
            return;
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let paths = SystemPaths::with_prefix(dir.path());
        let g = GlobalKeyring::new(paths);
        assert!(g.public_keys().expect("built-in empty").is_empty());
        let owner = fs::metadata(dir.path()).expect("stat").uid();
        let stranger = owner.wrapping_add(4242).max(1);
        let err = g.import(&secret, stranger).expect_err("not the owner");
        assert!(matches!(err, KeyringError::NotAllowed { .. }), "{err}");
        assert!(!g.path().exists());
        // The owner may; secrets are stored as public keys only.
        g.import(&secret, owner).expect("owner");
        assert_eq!(g.public_keys().expect("read").len(), 1);
        let stored = pgp::parse_keys(&fs::read(g.path()).expect("read")).expect("parse");
        assert!(matches!(stored[0], PublicOrSecret::Public(_)));
        assert_eq!(
            fs::metadata(g.path()).expect("stat").permissions().mode() & 0o777,
            0o644
        );
        let kr = verification_keyring(None, &g).expect("keyring");
        assert_eq!(
            kr.source_of(&hex::decode(PGP_S).expect("hex")),
            Some(KeySource::Global)
        );
        assert!(g.remove(PGP_S, stranger).is_err());
        g.remove(PGP_S, owner).expect("remove");
        assert!(g.public_keys().expect("read").is_empty());
        // Root may always.
        g.check_may_modify(0).expect("root");
    }
}
