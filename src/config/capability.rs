//! capability.json: Apptainer's map of which users and groups may request which Linux
//! capabilities (`{"users": {NAME: [CAP, ...]}, "groups": {...}}`).
//!
//! Apptainer enforces it only in setuid mode; in a user namespace `--add-caps` is not
//! checked against it, but the file is still read at each start (prepareUserCaps), and one
//! that does not parse stops the start. sifr does the same (`cmd::action`): it reads and
//! validates the file, and it grants and limits nothing (`launch::capabilities`). An empty
//! file means an empty map, as in Apptainer. Capability names are matched
//! case-insensitively and stored canonically.

use std::collections::BTreeMap;
use std::str::FromStr;

pub use caps::Capability;
use serde::Deserialize;

use super::paths::{SystemFile, SystemPaths};
use super::{ConfigError, Loaded, Source, json_error};

/// Users' and groups' authorised capabilities.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CapabilityConfig {
    pub users: BTreeMap<String, Vec<Capability>>,
    pub groups: BTreeMap<String, Vec<Capability>>,
}

/// A capability name in the file, e.g. `CAP_SYS_RAWIO`.
struct CapName(Capability);

impl<'de> Deserialize<'de> for CapName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Capability::from_str(&raw.to_ascii_uppercase())
            .map(CapName)
            .map_err(|_| {
                serde::de::Error::custom(format!(
                    "unknown capability \"{raw}\" (expected a name such as CAP_NET_RAW; see capabilities(7))"
                ))
            })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    users: Option<BTreeMap<String, Option<Vec<CapName>>>>,
    #[serde(default)]
    groups: Option<BTreeMap<String, Option<Vec<CapName>>>>,
}

fn convert(
    raw: Option<BTreeMap<String, Option<Vec<CapName>>>>,
) -> BTreeMap<String, Vec<Capability>> {
    raw.unwrap_or_default()
        .into_iter()
        .map(|(name, caps)| {
            let mut caps: Vec<Capability> =
                caps.unwrap_or_default().into_iter().map(|c| c.0).collect();
            caps.sort_by_key(|c| c.index());
            caps.dedup();
            (name, caps)
        })
        .collect()
}

impl CapabilityConfig {
    /// Parses the JSON text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &Source) -> Result<CapabilityConfig, ConfigError> {
        if text.trim().is_empty() {
            return Ok(CapabilityConfig::default());
        }
        let raw: RawFile = serde_json::from_str(text).map_err(|e| json_error(origin, &e))?;
        Ok(CapabilityConfig {
            users: convert(raw.users),
            groups: convert(raw.groups),
        })
    }

    /// The install's capability.json, or the built-in (empty) default.
    pub fn load(paths: &SystemPaths) -> Result<Loaded<CapabilityConfig>, ConfigError> {
        let Loaded { value, source } = paths.read_text(SystemFile::Capability)?;
        let value = CapabilityConfig::parse(&value, &source)?;
        log::debug!("capability.json: {source}");
        Ok(Loaded { value, source })
    }

    /// The capabilities authorised for user `name`.
    pub fn for_user(&self, name: &str) -> &[Capability] {
        self.users.get(name).map_or(&[], Vec::as_slice)
    }

    /// The capabilities authorised for group `name`.
    pub fn for_group(&self, name: &str) -> &[Capability] {
        self.groups.get(name).map_or(&[], Vec::as_slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn origin() -> Source {
        Source::File(PathBuf::from("/etc/sifr/capability.json"))
    }

    #[test]
    fn test_parses_users_and_groups() {
        let c = CapabilityConfig::parse(
            r#"{
  "users": { "david": ["CAP_SYS_RAWIO", "cap_net_raw", "CAP_SYS_RAWIO"] },
  "groups": { "mygroup": ["CAP_AUDIT_WRITE"], "empty": null }
}"#,
            &origin(),
        )
        .expect("parses");
        assert_eq!(
            c.for_user("david"),
            [Capability::CAP_NET_RAW, Capability::CAP_SYS_RAWIO]
        );
        assert_eq!(c.for_group("mygroup"), [Capability::CAP_AUDIT_WRITE]);
        assert!(c.for_group("empty").is_empty());
        assert!(c.for_user("nobody").is_empty());
    }

    #[test]
    fn test_empty_file_and_empty_object() {
        assert_eq!(
            CapabilityConfig::parse("  \n", &origin()).expect("empty"),
            CapabilityConfig::default()
        );
        assert_eq!(
            CapabilityConfig::parse("{}", &origin()).expect("{}"),
            CapabilityConfig::default()
        );
    }

    #[test]
    fn test_errors_name_line() {
        let err = CapabilityConfig::parse(
            "{\n  \"users\": {\n    \"david\": [\"CAP_FLY\"]\n  }\n}",
            &origin(),
        )
        .expect_err("must be refused");
        let msg = err.to_string();
        assert!(
            msg.starts_with("/etc/sifr/capability.json:3: unknown capability \"CAP_FLY\""),
            "{msg}"
        );
        let err =
            CapabilityConfig::parse("{\"user\": {}}", &origin()).expect_err("must be refused");
        assert!(err.to_string().contains("unknown field `user`"), "{err}");
        assert!(CapabilityConfig::parse("{\"users\": [", &origin()).is_err());
        assert!(CapabilityConfig::parse("{\"users\": {\"a\": \"CAP_CHOWN\"}}", &origin()).is_err());
    }

    #[test]
    fn test_builtin_default_is_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        let loaded =
            CapabilityConfig::load(&SystemPaths::with_prefix(dir.path())).expect("built-in");
        assert_eq!(loaded.value, CapabilityConfig::default());
    }
}
