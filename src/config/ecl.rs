//! ecl.toml: the execution control list, which admits SIF files by directory and by the
//! PGP keys that signed them.
//!
//! Shape (Apptainer's): `activated`, `legacyinsecure`, then `[[execgroup]]` tables with
//! `tagname`, `mode` (`whitelist`, `whitestrict` or `blacklist`), `dirpath` and `keyfp`.
//! This module parses and validates only; the launch code enforces. Unlike Apptainer, which
//! ignores unknown keys, an unknown key is an error, so a misspelt `activated` cannot leave
//! the list silently off. `dirpath` is checked lexically (absolute, no `.`/`..`, no trailing
//! or doubled `/`); whether it holds symbolic links is left to enforcement, which must
//! compare against the image's resolved directory anyway.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::paths::{SystemFile, SystemPaths};
use super::{ConfigError, Loaded, Source, is_clean_absolute, toml_error};

/// The parsed execution control list.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EclConfig {
    /// Whether the list is enforced at all.
    #[serde(default)]
    pub activated: bool,
    /// Also accept the pre-3.6 signature format, which does not cover the metadata.
    #[serde(default)]
    pub legacyinsecure: bool,
    #[serde(default, rename = "execgroup")]
    pub execgroups: Vec<ExecGroup>,
}

/// One `[[execgroup]]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecGroup {
    /// A label for messages.
    #[serde(default)]
    pub tagname: String,
    pub mode: EclMode,
    /// The directory this group governs; `None` (absent or empty) governs every directory
    /// that no other group names.
    #[serde(default, deserialize_with = "dirpath")]
    pub dirpath: Option<PathBuf>,
    /// Signing keys, as upper-case 40-hex-digit fingerprints.
    #[serde(default)]
    pub keyfp: Vec<Fingerprint>,
}

/// How a group judges a SIF file's signers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EclMode {
    /// At least one listed key signed it.
    Whitelist,
    /// Every listed key signed it.
    Whitestrict,
    /// No listed key signed it.
    Blacklist,
}

/// A PGP v4 key fingerprint: 40 hex digits, stored upper-case.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Fingerprint(String);

impl Fingerprint {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Fingerprint {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        if raw.len() == 40 && raw.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(Fingerprint(raw.to_ascii_uppercase()))
        } else {
            Err(serde::de::Error::custom(format!(
                "expected a key fingerprint of 40 hex digits, got \"{raw}\""
            )))
        }
    }
}

fn dirpath<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    let raw = String::deserialize(d)?;
    if raw.is_empty() {
        return Ok(None);
    }
    if is_clean_absolute(Path::new(&raw)) {
        Ok(Some(PathBuf::from(raw)))
    } else {
        Err(serde::de::Error::custom(format!(
            "dirpath must be an absolute path without '.', '..', '//' or a trailing '/', got \"{raw}\""
        )))
    }
}

impl EclConfig {
    /// Parses TOML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &Source) -> Result<EclConfig, ConfigError> {
        let ecl: EclConfig = toml::from_str(text).map_err(|e| toml_error(text, origin, &e))?;
        let mut seen = BTreeSet::new();
        for (i, group) in ecl.execgroups.iter().enumerate() {
            if !seen.insert(group.dirpath.clone()) {
                let which = match &group.dirpath {
                    Some(p) => format!("dirpath \"{}\"", p.display()),
                    None => "an empty dirpath".to_string(),
                };
                return Err(ConfigError::Invalid {
                    origin: origin.clone(),
                    field: format!("execgroup[{i}] (tagname \"{}\")", group.tagname),
                    message: format!("{which} already belongs to an earlier execgroup"),
                });
            }
        }
        Ok(ecl)
    }

    /// The install's ecl.toml, or the built-in default (not activated).
    pub fn load(paths: &SystemPaths) -> Result<Loaded<EclConfig>, ConfigError> {
        let Loaded { value, source } = paths.read_text(SystemFile::Ecl)?;
        let value = EclConfig::parse(&value, &source)?;
        log::debug!("ecl.toml: {source}");
        Ok(Loaded { value, source })
    }

    /// The group governing a SIF file in directory `dir`: the one naming `dir`, else the
    /// one without a dirpath. `None` means no group admits the file.
    pub fn group_for(&self, dir: &Path) -> Option<&ExecGroup> {
        self.execgroups
            .iter()
            .find(|g| g.dirpath.as_deref() == Some(dir))
            .or_else(|| self.execgroups.iter().find(|g| g.dirpath.is_none()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> Source {
        Source::File(PathBuf::from("/etc/sifr/ecl.toml"))
    }

    fn parse(text: &str) -> Result<EclConfig, ConfigError> {
        EclConfig::parse(text, &origin())
    }

    const FP: &str = "7064B1D6EFF01B1262FED3F03581D99FE87EAFD1";

    #[test]
    fn test_parses_groups() {
        let ecl = parse(&format!(
            "activated = true\nlegacyinsecure = true\n\n\
             [[execgroup]]\n  tagname = \"group2\"\n  mode = \"whitelist\"\n  dirpath = \"/tmp/containers\"\n  keyfp = [\"{}\"]\n\n\
             [[execgroup]]\n  tagname = \"rest\"\n  mode = \"blacklist\"\n  dirpath = \"\"\n",
            FP.to_lowercase()
        ))
        .expect("parses");
        assert!(ecl.activated && ecl.legacyinsecure);
        assert_eq!(ecl.execgroups.len(), 2);
        let g = &ecl.execgroups[0];
        assert_eq!(g.mode, EclMode::Whitelist);
        assert_eq!(g.dirpath.as_deref(), Some(Path::new("/tmp/containers")));
        assert_eq!(g.keyfp[0].as_str(), FP, "stored upper-case");
        assert_eq!(ecl.execgroups[1].dirpath, None);
        assert_eq!(
            ecl.group_for(Path::new("/tmp/containers"))
                .map(|g| g.tagname.as_str()),
            Some("group2")
        );
        assert_eq!(
            ecl.group_for(Path::new("/elsewhere"))
                .map(|g| g.tagname.as_str()),
            Some("rest")
        );
    }

    #[test]
    fn test_defaults_and_no_fallback_group() {
        let ecl = parse("").expect("empty");
        assert_eq!(ecl, EclConfig::default());
        let ecl = parse("[[execgroup]]\nmode = \"whitestrict\"\ndirpath = \"/a\"\n").expect("ok");
        assert!(ecl.group_for(Path::new("/b")).is_none());
    }

    #[test]
    fn test_errors_name_line() {
        let err = parse("activated = true\n[[execgroup]]\nmode = \"whitelst\"\n")
            .expect_err("must be refused");
        let msg = err.to_string();
        assert!(
            msg.starts_with("/etc/sifr/ecl.toml:3: unknown variant `whitelst`"),
            "{msg}"
        );
        assert!(msg.contains("whitestrict"), "{msg}");

        let err = parse("activate = true\n").expect_err("must be refused");
        assert!(
            err.to_string()
                .starts_with("/etc/sifr/ecl.toml:1: unknown field `activate`"),
            "{err}"
        );

        let err = parse("[[execgroup]]\nmode = \"blacklist\"\nkeyfp = [\"ABCD\"]\n")
            .expect_err("must be refused");
        assert!(
            err.to_string()
                .starts_with("/etc/sifr/ecl.toml:3: expected a key fingerprint of 40 hex digits"),
            "{err}"
        );
        assert!(
            parse(&format!(
                "[[execgroup]]\nmode = \"blacklist\"\nkeyfp = [\"{}\"]\n",
                FP.replace('7', "Z")
            ))
            .is_err()
        );
        assert!(
            parse("[[execgroup]]\ntagname = \"x\"\n").is_err(),
            "mode is required"
        );
        assert!(parse("activated = \"yes\"\n").is_err());
    }

    #[test]
    fn test_dirpath_rules() {
        for bad in ["relative", "/a/../b", "/a/./b", "/a/", "/a//b"] {
            let text = format!("[[execgroup]]\nmode = \"whitelist\"\ndirpath = \"{bad}\"\n");
            assert!(parse(&text).is_err(), "{bad}");
        }
        let err = parse(
            "[[execgroup]]\ntagname = \"a\"\nmode = \"whitelist\"\ndirpath = \"/x\"\n\
             [[execgroup]]\ntagname = \"b\"\nmode = \"blacklist\"\ndirpath = \"/x\"\n",
        )
        .expect_err("must be refused");
        assert_eq!(
            err.to_string(),
            "/etc/sifr/ecl.toml: execgroup[1] (tagname \"b\"): dirpath \"/x\" already belongs to an earlier execgroup"
        );
        assert!(parse(
            "[[execgroup]]\nmode = \"whitelist\"\n[[execgroup]]\nmode = \"blacklist\"\ndirpath = \"\"\n"
        )
        .is_err());
    }

    #[test]
    fn test_builtin_default_is_inactive() {
        let dir = tempfile::tempdir().expect("tempdir");
        let loaded = EclConfig::load(&SystemPaths::with_prefix(dir.path())).expect("built-in");
        assert_eq!(loaded.source, Source::BuiltIn("ecl.toml"));
        assert!(!loaded.value.activated && loaded.value.execgroups.is_empty());
    }

    #[test]
    fn test_shipped_example_parses_when_uncommented() {
        let text = std::str::from_utf8(SystemFile::Ecl.builtin()).expect("utf-8");
        let example: String = text
            .lines()
            .filter_map(|l| l.strip_prefix("# "))
            .filter(|l| {
                l.starts_with("[[") || l.split_once(" = ").is_some_and(|(k, _)| !k.contains(' '))
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let ecl = parse(&example).unwrap_or_else(|e| panic!("{e}\n{example}"));
        assert_eq!(ecl.execgroups.len(), 2);
    }
}
