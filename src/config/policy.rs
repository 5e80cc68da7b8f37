//! The questions the launch and build code ask of `Config`: may this image run here
//! (`allow container *`, `limit container *`), and where is helper program X
//! (`binary path` and the `... path` directives).
//!
//! These checks are site policy for containers started through sifr. They are not a
//! security boundary: a user who can create user namespaces can start containers without
//! sifr. Apptainer exempts the real root user from them; that decision is the caller's.

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::conf::Config;
use super::is_clean_absolute;

/// The kinds of image `allow container *` distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerKind {
    /// A SIF file whose root file system is not encrypted.
    Sif,
    /// A SIF file with an encrypted root file system.
    EncryptedSif,
    /// A bare squashfs image file.
    Squashfs,
    /// A bare ext2/3/4 image file.
    Extfs,
    /// A sandbox directory.
    Sandbox,
}

impl ContainerKind {
    /// The directive that allows or forbids this kind.
    pub fn directive(self) -> &'static str {
        match self {
            ContainerKind::Sif => "allow container sif",
            ContainerKind::EncryptedSif => "allow container encrypted",
            ContainerKind::Squashfs => "allow container squashfs",
            ContainerKind::Extfs => "allow container extfs",
            ContainerKind::Sandbox => "allow container dir",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            ContainerKind::Sif => "SIF images",
            ContainerKind::EncryptedSif => "encrypted SIF images",
            ContainerKind::Squashfs => "squashfs image files",
            ContainerKind::Extfs => "ext image files",
            ContainerKind::Sandbox => "sandbox directories",
        }
    }
}

/// An image refused by site policy. Each message names the directive and the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("{what} may not be run here: \"{directive} = no\" in {config} (ask the administrator)")]
    KindNotAllowed {
        what: &'static str,
        directive: &'static str,
        config: String,
    },

    #[error("{} is owned by uid {uid}, but \"limit container owners\" in {config} allows only {allowed} (ask the administrator)", path.display())]
    OwnerNotAllowed {
        path: PathBuf,
        uid: u32,
        allowed: String,
        config: String,
    },

    #[error("{} belongs to gid {gid}, but \"limit container groups\" in {config} allows only {allowed} (ask the administrator)", path.display())]
    GroupNotAllowed {
        path: PathBuf,
        gid: u32,
        allowed: String,
        config: String,
    },

    #[error("{} is outside the directories allowed by \"limit container paths\" in {config} ({allowed}); copy the image into one of them", path.display())]
    PathNotAllowed {
        path: PathBuf,
        allowed: String,
        config: String,
    },

    #[error("cannot check {} against \"limit container paths\": the path must be absolute with symbolic links resolved", path.display())]
    NotCanonical { path: PathBuf },
}

/// A helper program that cannot be found or run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BinaryError {
    #[error("\"{name}\" is not a program name (it must not be empty or contain '/')")]
    BadName { name: String },

    #[error(
        "{name} not found in the binary path ({searched}) from {config}; install it or add its directory to \"binary path\""
    )]
    NotFound {
        name: String,
        searched: String,
        config: String,
    },

    #[error("\"{directive}\" in {config} is {}, which is not an executable file", path.display())]
    NotExecutable {
        directive: &'static str,
        path: PathBuf,
        config: String,
    },
}

/// Name-to-id lookups, behind a trait so that tests need no passwd entries.
pub(crate) trait IdLookup {
    fn uid_of(&self, name: &str) -> Option<u32>;
    fn gid_of(&self, name: &str) -> Option<u32>;
}

/// The host's passwd and group databases.
struct SystemIds;

impl IdLookup for SystemIds {
    fn uid_of(&self, name: &str) -> Option<u32> {
        nix::unistd::User::from_name(name)
            .ok()
            .flatten()
            .map(|u| u.uid.as_raw())
    }
    fn gid_of(&self, name: &str) -> Option<u32> {
        nix::unistd::Group::from_name(name)
            .ok()
            .flatten()
            .map(|g| g.gid.as_raw())
    }
}

/// Whether `id` is one of `entries` (names, looked up, or numeric ids). Unknown names match
/// nothing, so a list of only unknown names allows nothing.
fn listed(entries: &[String], id: u32, lookup: impl Fn(&str) -> Option<u32>) -> bool {
    entries
        .iter()
        .any(|e| lookup(e).or_else(|| e.parse::<u32>().ok()) == Some(id))
}

impl Config {
    fn config_name(&self) -> String {
        match &self.provenance.source {
            Some(source) => source.to_string(),
            None => "sifr's built-in defaults".to_string(),
        }
    }

    /// Whether an image may run under `allow container *` and `limit container *`.
    ///
    /// `path` must be the image's canonical path (absolute, symbolic links resolved, as
    /// `std::fs::canonicalize` gives); `owner_uid`/`owner_gid` are the image file's or
    /// sandbox directory's owner. `limit container paths` compares whole path components:
    /// `/scratch` admits `/scratch/a.sif`, not `/scratch2/a.sif`.
    pub fn allows_container_path(
        &self,
        path: &Path,
        kind: ContainerKind,
        owner_uid: u32,
        owner_gid: u32,
    ) -> Result<(), PolicyError> {
        self.allows_container_path_with(path, kind, owner_uid, owner_gid, &SystemIds)
    }

    pub(crate) fn allows_container_path_with(
        &self,
        path: &Path,
        kind: ContainerKind,
        owner_uid: u32,
        owner_gid: u32,
        ids: &dyn IdLookup,
    ) -> Result<(), PolicyError> {
        let allowed = match kind {
            ContainerKind::Sif => self.allow_container_sif,
            ContainerKind::EncryptedSif => self.allow_container_encrypted,
            ContainerKind::Squashfs => self.allow_container_squashfs,
            ContainerKind::Extfs => self.allow_container_extfs,
            ContainerKind::Sandbox => self.allow_container_dir,
        };
        if !allowed {
            return Err(PolicyError::KindNotAllowed {
                what: kind.describe(),
                directive: kind.directive(),
                config: self.config_name(),
            });
        }

        let owners = &self.limit_container_owners;
        if !owners.is_empty() && !listed(owners, owner_uid, |n| ids.uid_of(n)) {
            return Err(PolicyError::OwnerNotAllowed {
                path: path.to_path_buf(),
                uid: owner_uid,
                allowed: owners.join(", "),
                config: self.config_name(),
            });
        }

        let groups = &self.limit_container_groups;
        if !groups.is_empty() && !listed(groups, owner_gid, |n| ids.gid_of(n)) {
            return Err(PolicyError::GroupNotAllowed {
                path: path.to_path_buf(),
                gid: owner_gid,
                allowed: groups.join(", "),
                config: self.config_name(),
            });
        }

        let dirs = &self.limit_container_paths;
        if !dirs.is_empty() {
            if !is_clean_absolute(path) {
                return Err(PolicyError::NotCanonical {
                    path: path.to_path_buf(),
                });
            }
            if !dirs.iter().any(|d| path.starts_with(d)) {
                return Err(PolicyError::PathNotAllowed {
                    path: path.to_path_buf(),
                    allowed: dirs
                        .iter()
                        .map(|d| d.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                    config: self.config_name(),
                });
            }
        }
        Ok(())
    }

    /// The directories searched for helper programs, in order: `binary path` with `$PATH`
    /// expanded from `env_path`, and the install's internal bin directory at the place of
    /// `$PATH` (or first when there is no `$PATH`). Relative entries of `env_path` are
    /// skipped: a helper must never be found relative to the current directory.
    pub fn binary_search_dirs(&self, env_path: Option<&OsStr>) -> Vec<PathBuf> {
        let internal = self
            .provenance
            .install
            .as_ref()
            .map(|p| p.internal_bin_dir());
        let has_path = self.binary_path.entries().any(|e| e.is_none());
        let mut dirs = Vec::new();
        if !has_path {
            dirs.extend(internal.clone());
        }
        for entry in self.binary_path.entries() {
            match entry {
                Some(dir) => dirs.push(dir.to_path_buf()),
                None => {
                    dirs.extend(internal.clone());
                    if let Some(env_path) = env_path {
                        dirs.extend(std::env::split_paths(env_path).filter(|d| d.is_absolute()));
                    }
                }
            }
        }
        dirs
    }

    /// Where the setuid helpers newuidmap and newgidmap are looked for: the `binary path`
    /// directories in order, with `$PATH` standing for the system directories
    /// (`sifr_idmap::write::HELPER_DIRS`), never the caller's PATH: Apptainer searches
    /// `binary path` for them too, and sifr keeps a user's own PATH out of the lookup of a
    /// setuid program.
    pub fn setuid_helper_dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = Vec::new();
        for entry in self.binary_path.entries() {
            let more = match entry {
                Some(dir) => vec![dir.to_path_buf()],
                None => sifr_idmap::write::default_helper_dirs(),
            };
            for d in more {
                if !dirs.contains(&d) {
                    dirs.push(d);
                }
            }
        }
        dirs
    }

    /// Finds helper program `name`: its `... path` directive when set, else the first
    /// executable file called `name` in [`Config::binary_search_dirs`] with the caller's PATH.
    pub fn find_binary(&self, name: &str) -> Result<PathBuf, BinaryError> {
        self.find_binary_with(name, std::env::var_os("PATH").as_deref())
    }

    pub(crate) fn find_binary_with(
        &self,
        name: &str,
        env_path: Option<&OsStr>,
    ) -> Result<PathBuf, BinaryError> {
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(BinaryError::BadName {
                name: name.to_string(),
            });
        }
        let explicit = match name {
            "cryptsetup" => Some(("cryptsetup path", &self.cryptsetup_path)),
            "go" => Some(("go path", &self.go_path)),
            "ldconfig" => Some(("ldconfig path", &self.ldconfig_path)),
            "mksquashfs" => Some(("mksquashfs path", &self.mksquashfs_path)),
            "unsquashfs" => Some(("unsquashfs path", &self.unsquashfs_path)),
            "nvidia-container-cli" => {
                Some(("nvidia-container-cli path", &self.nvidia_container_cli_path))
            }
            _ => None,
        };
        if let Some((directive, Some(path))) = explicit {
            return if is_executable(path) {
                Ok(path.clone())
            } else {
                Err(BinaryError::NotExecutable {
                    directive,
                    path: path.clone(),
                    config: self.config_name(),
                })
            };
        }
        let dirs = self.binary_search_dirs(env_path);
        dirs.iter()
            .map(|d| d.join(name))
            .find(|candidate| is_executable(candidate))
            .ok_or_else(|| BinaryError::NotFound {
                name: name.to_string(),
                searched: std::env::join_paths(&dirs)
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_else(|_| self.binary_path.as_str().to_string()),
                config: self.config_name(),
            })
    }
}

/// A regular file (after following links) with an execute bit set.
fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Source, SystemPaths};
    use std::collections::HashMap;

    struct FakeIds {
        users: HashMap<&'static str, u32>,
        groups: HashMap<&'static str, u32>,
    }

    impl IdLookup for FakeIds {
        fn uid_of(&self, name: &str) -> Option<u32> {
            self.users.get(name).copied()
        }
        fn gid_of(&self, name: &str) -> Option<u32> {
            self.groups.get(name).copied()
        }
    }

    fn ids() -> FakeIds {
        FakeIds {
            users: HashMap::from([("alice", 1001), ("bob", 1002)]),
            groups: HashMap::from([("images", 2000)]),
        }
    }

    fn config(text: &str) -> Config {
        Config::parse(
            text,
            Source::File(PathBuf::from("/opt/sifr/etc/sifr/sifr.conf")),
        )
        .expect("valid config")
    }

    fn check(
        c: &Config,
        path: &str,
        kind: ContainerKind,
        uid: u32,
        gid: u32,
    ) -> Result<(), PolicyError> {
        c.allows_container_path_with(Path::new(path), kind, uid, gid, &ids())
    }

    #[test]
    fn test_defaults_allow_everything() {
        let c = Config::default();
        for kind in [
            ContainerKind::Sif,
            ContainerKind::EncryptedSif,
            ContainerKind::Squashfs,
            ContainerKind::Extfs,
            ContainerKind::Sandbox,
        ] {
            assert_eq!(
                check(&c, "relative/ok.sif", kind, 4242, 4242),
                Ok(()),
                "{kind:?}"
            );
        }
    }

    #[test]
    fn test_allow_container_kinds() {
        let c = config("allow container extfs = no\nallow container dir = no\n");
        assert_eq!(check(&c, "/a.sif", ContainerKind::Sif, 0, 0), Ok(()));
        assert_eq!(check(&c, "/a.sqfs", ContainerKind::Squashfs, 0, 0), Ok(()));
        let err = check(&c, "/a.img", ContainerKind::Extfs, 0, 0).expect_err("must be refused");
        assert_eq!(
            err.to_string(),
            "ext image files may not be run here: \"allow container extfs = no\" in /opt/sifr/etc/sifr/sifr.conf (ask the administrator)"
        );
        assert!(matches!(
            check(&c, "/sandbox", ContainerKind::Sandbox, 0, 0),
            Err(PolicyError::KindNotAllowed {
                directive: "allow container dir",
                ..
            })
        ));
        let c = config("allow container encrypted = no\n");
        assert!(check(&c, "/e.sif", ContainerKind::EncryptedSif, 0, 0).is_err());
        assert!(check(&c, "/p.sif", ContainerKind::Sif, 0, 0).is_ok());
        let c = config("allow container sif = no\nallow container squashfs = no\n");
        assert!(check(&c, "/p.sif", ContainerKind::Sif, 0, 0).is_err());
        assert!(check(&c, "/a.sqfs", ContainerKind::Squashfs, 0, 0).is_err());
        assert!(check(&c, "/a.img", ContainerKind::Extfs, 0, 0).is_ok());
    }

    #[test]
    fn test_limit_container_owners() {
        let c = config("limit container owners = alice, 1500\n");
        assert!(check(&c, "/a.sif", ContainerKind::Sif, 1001, 1).is_ok());
        assert!(check(&c, "/a.sif", ContainerKind::Sif, 1500, 1).is_ok());
        let err = check(&c, "/x/a.sif", ContainerKind::Sif, 1002, 1).expect_err("must be refused");
        assert_eq!(
            err.to_string(),
            "/x/a.sif is owned by uid 1002, but \"limit container owners\" in /opt/sifr/etc/sifr/sifr.conf allows only alice, 1500 (ask the administrator)"
        );
        // Only unknown names: nothing is allowed (fail closed).
        let c = config("limit container owners = nosuchuser\n");
        assert!(check(&c, "/a.sif", ContainerKind::Sif, 1001, 1).is_err());
    }

    #[test]
    fn test_limit_container_groups() {
        let c = config("limit container groups = images\n");
        assert!(check(&c, "/a.sif", ContainerKind::Sif, 1, 2000).is_ok());
        assert!(matches!(
            check(&c, "/a.sif", ContainerKind::Sif, 1, 2001),
            Err(PolicyError::GroupNotAllowed { gid: 2001, .. })
        ));
    }

    #[test]
    fn test_limit_container_paths_compares_components() {
        let c = config("limit container paths = /scratch, /global/images\n");
        assert!(check(&c, "/scratch/a.sif", ContainerKind::Sif, 1, 1).is_ok());
        assert!(check(&c, "/global/images/x/y.sif", ContainerKind::Sif, 1, 1).is_ok());
        let err =
            check(&c, "/scratch2/a.sif", ContainerKind::Sif, 1, 1).expect_err("must be refused");
        assert_eq!(
            err.to_string(),
            "/scratch2/a.sif is outside the directories allowed by \"limit container paths\" in /opt/sifr/etc/sifr/sifr.conf (/scratch, /global/images); copy the image into one of them"
        );
        for sneaky in ["/scratch/../etc/a.sif", "scratch/a.sif", "/scratch/./a.sif"] {
            assert!(
                matches!(
                    check(&c, sneaky, ContainerKind::Sif, 1, 1),
                    Err(PolicyError::NotCanonical { .. })
                ),
                "{sneaky}"
            );
        }
    }

    #[test]
    fn test_all_limits_apply_together() {
        let c = config(
            "limit container owners = alice\nlimit container groups = images\nlimit container paths = /scratch\n",
        );
        assert!(check(&c, "/scratch/a.sif", ContainerKind::Sif, 1001, 2000).is_ok());
        assert!(check(&c, "/scratch/a.sif", ContainerKind::Sif, 1001, 1).is_err());
        assert!(check(&c, "/tmp/a.sif", ContainerKind::Sif, 1001, 2000).is_err());
    }

    #[test]
    fn test_system_lookup_resolves_root() {
        let c = config("limit container owners = root\nlimit container groups = root\n");
        assert!(
            c.allows_container_path(Path::new("/a.sif"), ContainerKind::Sif, 0, 0)
                .is_ok()
        );
        assert!(
            c.allows_container_path(Path::new("/a.sif"), ContainerKind::Sif, 1, 0)
                .is_err()
        );
    }

    fn make_exe(dir: &Path, name: &str, mode: u32) -> PathBuf {
        std::fs::create_dir_all(dir).expect("mkdir");
        let path = dir.join(name);
        std::fs::write(&path, "#!/bin/sh\n").expect("w");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        path
    }

    #[test]
    fn test_find_binary_search_order() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let t = tmp.path();
        let site = t.join("site");
        let user = t.join("user");
        let prefix = t.join("prefix");
        let c = {
            let mut c = config(&format!("binary path = {}:$PATH\n", site.display()));
            c.provenance.install = Some(SystemPaths::with_prefix(&prefix));
            c
        };
        let env = std::env::join_paths([user.as_path(), Path::new("relative")]).expect("join");

        // Nothing anywhere: a one-line error listing the searched directories.
        let err = c
            .find_binary_with("tool", Some(&env))
            .expect_err("must be refused");
        let msg = err.to_string();
        assert!(
            msg.starts_with("tool not found in the binary path ("),
            "{msg}"
        );
        assert!(
            !msg.contains("relative"),
            "relative PATH entries are skipped: {msg}"
        );

        let in_user = make_exe(&user, "tool", 0o755);
        assert_eq!(c.find_binary_with("tool", Some(&env)), Ok(in_user));
        let internal = make_exe(&prefix.join("libexec/sifr/bin"), "tool", 0o755);
        assert_eq!(c.find_binary_with("tool", Some(&env)), Ok(internal));
        let in_site = make_exe(&site, "tool", 0o755);
        assert_eq!(c.find_binary_with("tool", Some(&env)), Ok(in_site));

        // A file without execute permission is skipped.
        make_exe(&site, "plain", 0o644);
        let in_user_plain = make_exe(&user, "plain", 0o700);
        assert_eq!(c.find_binary_with("plain", Some(&env)), Ok(in_user_plain));
    }

    #[test]
    fn test_setuid_helper_dirs_follow_binary_path() {
        let system: Vec<PathBuf> = sifr_idmap::write::default_helper_dirs();
        // The default binary path gives exactly the system directories.
        assert_eq!(Config::default().setuid_helper_dirs(), system);
        // A site directory first; $PATH is the system directories, not the caller's PATH.
        let c = config("binary path = /opt/shadow/bin:$PATH\n");
        let dirs = c.setuid_helper_dirs();
        assert_eq!(dirs[0], PathBuf::from("/opt/shadow/bin"));
        assert_eq!(dirs[1..], system[..]);
        // Without $PATH only the listed directories.
        let c = config("binary path = /opt/shadow/bin\n");
        assert_eq!(c.setuid_helper_dirs(), [PathBuf::from("/opt/shadow/bin")]);
    }

    #[test]
    fn test_internal_dir_first_without_path() {
        let c = {
            let mut c = config("binary path = /usr/bin:/bin\n");
            c.provenance.install = Some(SystemPaths::with_prefix("/opt/sifr"));
            c
        };
        let dirs = c.binary_search_dirs(Some(OsStr::new("/home/u/bin")));
        assert_eq!(
            dirs,
            [
                PathBuf::from("/opt/sifr/libexec/sifr/bin"),
                PathBuf::from("/usr/bin"),
                PathBuf::from("/bin")
            ]
        );
    }

    #[test]
    fn test_find_binary_explicit_tool_path() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let tool = make_exe(tmp.path(), "my-mksquashfs", 0o755);
        let c = config(&format!("mksquashfs path = {}\n", tool.display()));
        assert_eq!(c.find_binary_with("mksquashfs", None), Ok(tool));

        let c = config("unsquashfs path = /nonexistent/unsquashfs\n");
        let err = c
            .find_binary_with("unsquashfs", None)
            .expect_err("must be refused");
        assert_eq!(
            err.to_string(),
            "\"unsquashfs path\" in /opt/sifr/etc/sifr/sifr.conf is /nonexistent/unsquashfs, which is not an executable file"
        );
    }

    #[test]
    fn test_find_binary_rejects_paths() {
        let c = Config::default();
        for bad in ["", "bin/sh", "/bin/sh", "..", "."] {
            assert!(
                matches!(
                    c.find_binary_with(bad, None),
                    Err(BinaryError::BadName { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn test_find_binary_finds_sh_on_this_host() {
        let c = Config::default();
        let sh = c.find_binary_with("sh", Some(OsStr::new("/usr/bin:/bin")));
        assert!(sh.is_ok(), "{sh:?}");
    }
}
