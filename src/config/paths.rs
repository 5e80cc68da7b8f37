//! The install layout: where the admin files live for a relocatable install, and reading
//! one of them or, when it does not exist, its default compiled into the binary.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use super::{ConfigError, Loaded, Source, utf8_text};

/// Largest text configuration file sifr reads (sifr.conf, TOML, JSON, lists).
pub const MAX_TEXT_BYTES: u64 = 1024 * 1024;
/// Largest public keyring sifr reads.
pub const MAX_KEYRING_BYTES: u64 = 16 * 1024 * 1024;

/// The admin files of an install, each with a built-in default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SystemFile {
    SifrConf,
    Ecl,
    Cgroups,
    NvLibList,
    RocmLibList,
    Capability,
    SeccompDefault,
    GlobalPgpPublic,
}

impl SystemFile {
    /// Every admin file.
    pub const ALL: [SystemFile; 8] = [
        SystemFile::SifrConf,
        SystemFile::Ecl,
        SystemFile::Cgroups,
        SystemFile::NvLibList,
        SystemFile::RocmLibList,
        SystemFile::Capability,
        SystemFile::SeccompDefault,
        SystemFile::GlobalPgpPublic,
    ];

    /// The file's path relative to the configuration directory (and to the repo's `etc/`).
    pub fn relative_path(self) -> &'static str {
        match self {
            SystemFile::SifrConf => "sifr.conf",
            SystemFile::Ecl => "ecl.toml",
            SystemFile::Cgroups => "cgroups.toml",
            SystemFile::NvLibList => "nvliblist.conf",
            SystemFile::RocmLibList => "rocmliblist.conf",
            SystemFile::Capability => "capability.json",
            SystemFile::SeccompDefault => "seccomp-profiles/default.json",
            SystemFile::GlobalPgpPublic => "global-pgp-public",
        }
    }

    /// The default compiled into the binary.
    pub fn builtin(self) -> &'static [u8] {
        match self {
            SystemFile::SifrConf => include_bytes!("../../etc/sifr.conf"),
            SystemFile::Ecl => include_bytes!("../../etc/ecl.toml"),
            SystemFile::Cgroups => include_bytes!("../../etc/cgroups.toml"),
            SystemFile::NvLibList => include_bytes!("../../etc/nvliblist.conf"),
            SystemFile::RocmLibList => include_bytes!("../../etc/rocmliblist.conf"),
            SystemFile::Capability => include_bytes!("../../etc/capability.json"),
            SystemFile::SeccompDefault => include_bytes!("../../etc/seccomp-profiles/default.json"),
            SystemFile::GlobalPgpPublic => include_bytes!("../../etc/global-pgp-public"),
        }
    }

    /// The size limit applied when reading the file from disk.
    pub fn size_limit(self) -> u64 {
        match self {
            SystemFile::GlobalPgpPublic => MAX_KEYRING_BYTES,
            _ => MAX_TEXT_BYTES,
        }
    }
}

/// Where an install keeps its files, derived from the location of the sifr binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemPaths {
    prefix: PathBuf,
    config_dir: PathBuf,
}

impl SystemPaths {
    /// The layout of the running binary's install: `<prefix>/bin/sifr` → `<prefix>/etc/sifr/`.
    pub fn detect() -> Result<SystemPaths, ConfigError> {
        let exe =
            std::fs::read_link("/proc/self/exe").map_err(|cause| ConfigError::Locate { cause })?;
        Ok(SystemPaths::from_exe(&exe))
    }

    /// The layout of the install holding the binary `exe` (an absolute, resolved path).
    pub fn from_exe(exe: &Path) -> SystemPaths {
        let prefix = exe
            .parent()
            .and_then(Path::parent)
            .unwrap_or_else(|| Path::new("/"));
        SystemPaths::with_prefix(prefix)
    }

    /// The layout of an install under `prefix`. The distribution prefix `/usr` keeps its
    /// configuration in `/etc/sifr` (FHS); every other prefix in `<prefix>/etc/sifr`.
    pub fn with_prefix(prefix: impl Into<PathBuf>) -> SystemPaths {
        let prefix = prefix.into();
        let config_dir = if prefix == Path::new("/usr") {
            PathBuf::from("/etc/sifr")
        } else {
            prefix.join("etc/sifr")
        };
        SystemPaths { prefix, config_dir }
    }

    /// The install prefix.
    pub fn prefix(&self) -> &Path {
        &self.prefix
    }

    /// The configuration directory (`<prefix>/etc/sifr`).
    pub fn config_dir(&self) -> &Path {
        &self.config_dir
    }

    /// sifr's own helper programs, searched before `binary path` (`<prefix>/libexec/sifr/bin`).
    pub fn internal_bin_dir(&self) -> PathBuf {
        self.prefix.join("libexec/sifr/bin")
    }

    /// Where the install keeps `file`.
    pub fn path_of(&self, file: SystemFile) -> PathBuf {
        self.config_dir.join(file.relative_path())
    }

    /// The bytes of `file` from the install, or its built-in default when the install has no
    /// such file. Any other failure to read it is an error.
    pub fn read(&self, file: SystemFile) -> Result<Loaded<Vec<u8>>, ConfigError> {
        let path = self.path_of(file);
        match read_capped(&path, file.size_limit()) {
            Ok(bytes) => Ok(Loaded {
                value: bytes,
                source: Source::File(path),
            }),
            Err(ConfigError::Read { cause, .. }) if cause.kind() == io::ErrorKind::NotFound => {
                Ok(Loaded {
                    value: file.builtin().to_vec(),
                    source: Source::BuiltIn(file.relative_path()),
                })
            }
            Err(e) => Err(e),
        }
    }

    /// Like [`SystemPaths::read`], for a text file.
    pub fn read_text(&self, file: SystemFile) -> Result<Loaded<String>, ConfigError> {
        let Loaded { value, source } = self.read(file)?;
        let value = utf8_text(value, &source)?;
        Ok(Loaded { value, source })
    }
}

/// Reads at most `limit` bytes of `path`; a longer file is an error, never a huge allocation.
pub fn read_capped(path: &Path, limit: u64) -> Result<Vec<u8>, ConfigError> {
    let read_err = |cause| ConfigError::Read {
        path: path.to_path_buf(),
        cause,
    };
    let file = File::open(path).map_err(read_err)?;
    let mut bytes = Vec::new();
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > limit {
        return Err(ConfigError::TooLarge {
            path: path.to_path_buf(),
            limit,
        });
    }
    Ok(bytes)
}

/// Reads a text file given by the user (no built-in fallback).
pub fn read_text_file(path: &Path) -> Result<Loaded<String>, ConfigError> {
    let source = Source::File(path.to_path_buf());
    let bytes = read_capped(path, MAX_TEXT_BYTES)?;
    let value = utf8_text(bytes, &source)?;
    Ok(Loaded { value, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn test_from_exe_relocates() {
        let p = SystemPaths::from_exe(Path::new("/opt/sifr-1.0/bin/sifr"));
        assert_eq!(p.prefix(), Path::new("/opt/sifr-1.0"));
        assert_eq!(p.config_dir(), Path::new("/opt/sifr-1.0/etc/sifr"));
        assert_eq!(
            p.path_of(SystemFile::SeccompDefault),
            Path::new("/opt/sifr-1.0/etc/sifr/seccomp-profiles/default.json")
        );
        assert_eq!(
            p.internal_bin_dir(),
            Path::new("/opt/sifr-1.0/libexec/sifr/bin")
        );
    }

    #[test]
    fn test_usr_prefix_uses_etc() {
        let p = SystemPaths::from_exe(Path::new("/usr/bin/sifr"));
        assert_eq!(p.config_dir(), Path::new("/etc/sifr"));
        let p = SystemPaths::from_exe(Path::new("/usr/local/bin/sifr"));
        assert_eq!(p.config_dir(), Path::new("/usr/local/etc/sifr"));
        // A binary at the root has no parent directory above bin/.
        let p = SystemPaths::from_exe(Path::new("/sifr"));
        assert_eq!(p.config_dir(), Path::new("/etc/sifr"));
    }

    #[test]
    fn test_detect_uses_running_binary() {
        let paths = SystemPaths::detect().expect("/proc/self/exe is readable in tests");
        let exe = std::env::current_exe().expect("current exe");
        let expected = exe.parent().and_then(Path::parent).expect("two levels");
        assert_eq!(paths.prefix(), expected);
    }

    #[test]
    fn test_relocation_overrides_only_present_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("bin")).expect("bin");
        std::fs::create_dir_all(dir.path().join("etc/sifr/seccomp-profiles")).expect("etc");
        std::fs::write(dir.path().join("etc/sifr/ecl.toml"), "activated = true\n").expect("w");
        std::fs::write(
            dir.path().join("etc/sifr/seccomp-profiles/default.json"),
            "{\"defaultAction\": \"SCMP_ACT_ALLOW\"}",
        )
        .expect("w");
        let paths = SystemPaths::from_exe(&dir.path().join("bin/sifr"));
        for file in SystemFile::ALL {
            let loaded = paths.read(file).expect("readable");
            match file {
                SystemFile::Ecl | SystemFile::SeccompDefault => {
                    assert_eq!(loaded.source, Source::File(paths.path_of(file)));
                    assert_ne!(loaded.value, file.builtin());
                }
                _ => {
                    assert_eq!(loaded.source, Source::BuiltIn(file.relative_path()));
                    assert_eq!(loaded.value, file.builtin());
                }
            }
        }
    }

    #[test]
    fn test_unreadable_file_is_an_error_not_a_fallback() {
        let dir = tempfile::tempdir().expect("tempdir");
        let paths = SystemPaths::with_prefix(dir.path());
        // A directory where the file should be cannot be read: EISDIR, not NotFound.
        std::fs::create_dir_all(paths.path_of(SystemFile::SifrConf)).expect("mkdir");
        let err = paths
            .read(SystemFile::SifrConf)
            .expect_err("must be refused");
        assert!(matches!(err, ConfigError::Read { .. }), "{err}");
        assert!(err.to_string().starts_with("cannot read "), "{err}");

        // Permission denied matters only when not root (root reads anything).
        if nix::unistd::geteuid().is_root() {
            return;
        }
        std::fs::remove_dir(paths.path_of(SystemFile::SifrConf)).expect("rmdir");
        std::fs::write(paths.path_of(SystemFile::SifrConf), "").expect("w");
        let perms = std::fs::Permissions::from_mode(0o000);
        std::fs::set_permissions(paths.path_of(SystemFile::SifrConf), perms).expect("chmod");
        assert!(paths.read(SystemFile::SifrConf).is_err());
    }

    #[test]
    fn test_read_capped_refuses_large_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("big");
        std::fs::write(&path, vec![b'#'; 101]).expect("w");
        let err = read_capped(&path, 100).expect_err("must be refused");
        assert!(matches!(err, ConfigError::TooLarge { limit: 100, .. }));
        assert_eq!(read_capped(&path, 101).expect("fits").len(), 101);
    }

    #[test]
    fn test_builtin_texts_are_utf8() {
        for file in SystemFile::ALL {
            assert!(std::str::from_utf8(file.builtin()).is_ok(), "{file:?}");
        }
    }
}
