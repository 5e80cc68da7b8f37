//! cgroups.toml: container resource limits in the OCI runtime spec's `LinuxResources`
//! shape, written as TOML (the file format of Apptainer's `--apply-cgroups`).
//!
//! The keys are those of Apptainer's `cgroups.Config`: `memory`, `cpu`, `pids`, `blockIO`,
//! `hugepageLimits`, `devices`, `network`, `rdma`, `unified`. Unknown keys are errors. Values
//! are checked where the kernel would otherwise fail late or, for `unified`, where a key
//! names a file that will be written in the cgroup directory. Applying them is the launch
//! code's job.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::paths::{SystemFile, SystemPaths, read_text_file};
use super::{ConfigError, Loaded, Source, toml_error};

/// Resource limits; every section is optional.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CgroupsConfig {
    #[serde(default)]
    pub devices: Vec<DeviceRule>,
    pub memory: Option<Memory>,
    pub cpu: Option<Cpu>,
    pub pids: Option<Pids>,
    #[serde(rename = "blockIO")]
    pub block_io: Option<BlockIo>,
    #[serde(default, rename = "hugepageLimits")]
    pub hugepage_limits: Vec<HugepageLimit>,
    pub network: Option<Network>,
    #[serde(default)]
    pub rdma: BTreeMap<String, Rdma>,
    #[serde(default)]
    pub unified: BTreeMap<String, String>,
}

/// `[memory]`: sizes in bytes; -1 means no limit.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Memory {
    pub limit: Option<i64>,
    pub reservation: Option<i64>,
    pub swap: Option<i64>,
    pub kernel: Option<i64>,
    #[serde(rename = "kernelTCP")]
    pub kernel_tcp: Option<i64>,
    pub swappiness: Option<u64>,
    #[serde(rename = "disableOOMKiller")]
    pub disable_oom_killer: Option<bool>,
}

/// `[cpu]`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cpu {
    pub shares: Option<u64>,
    pub quota: Option<i64>,
    pub period: Option<u64>,
    #[serde(rename = "realtimeRuntime")]
    pub realtime_runtime: Option<i64>,
    #[serde(rename = "realtimePeriod")]
    pub realtime_period: Option<u64>,
    pub cpus: Option<CpuList>,
    pub mems: Option<CpuList>,
}

/// A cpuset list such as `0-3,8,10-11`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuList(String);

impl CpuList {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Checks a list such as `0-3,8`; the error says what was expected.
    pub fn parse(raw: &str) -> Result<CpuList, String> {
        let number = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        let valid = !raw.is_empty()
            && raw.split(',').all(|part| match part.split_once('-') {
                Some((a, b)) => number(a) && number(b),
                None => number(part),
            });
        if valid {
            Ok(CpuList(raw.to_string()))
        } else {
            Err(format!(
                "expected a list of numbers and ranges such as \"0-3,8\", got \"{raw}\""
            ))
        }
    }
}

impl<'de> Deserialize<'de> for CpuList {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        CpuList::parse(&raw).map_err(serde::de::Error::custom)
    }
}

/// `[pids]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pids {
    pub limit: i64,
}

/// `[blockIO]`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockIo {
    pub weight: Option<u16>,
    #[serde(rename = "leafWeight")]
    pub leaf_weight: Option<u16>,
    #[serde(default, rename = "weightDevice")]
    pub weight_device: Vec<WeightDevice>,
    #[serde(default, rename = "throttleReadBpsDevice")]
    pub throttle_read_bps_device: Vec<ThrottleDevice>,
    #[serde(default, rename = "throttleWriteBpsDevice")]
    pub throttle_write_bps_device: Vec<ThrottleDevice>,
    #[serde(default, rename = "throttleReadIOPSDevice")]
    pub throttle_read_iops_device: Vec<ThrottleDevice>,
    #[serde(default, rename = "throttleWriteIOPSDevice")]
    pub throttle_write_iops_device: Vec<ThrottleDevice>,
}

/// A per-device block I/O weight.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightDevice {
    pub major: i64,
    pub minor: i64,
    pub weight: Option<u16>,
    #[serde(rename = "leafWeight")]
    pub leaf_weight: Option<u16>,
}

/// A per-device rate limit (bytes or operations per second).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThrottleDevice {
    pub major: i64,
    pub minor: i64,
    pub rate: u64,
}

/// `[[hugepageLimits]]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HugepageLimit {
    #[serde(rename = "pageSize")]
    pub page_size: PageSize,
    pub limit: u64,
}

/// A huge page size as cgroups name it: `2MB`, `1GB`, `64KB`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageSize(String);

impl PageSize {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for PageSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        let digits = raw
            .strip_suffix("KB")
            .or_else(|| raw.strip_suffix("MB"))
            .or_else(|| raw.strip_suffix("GB"));
        match digits {
            Some(n) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => Ok(PageSize(raw)),
            _ => Err(serde::de::Error::custom(format!(
                "expected a page size such as \"2MB\" or \"1GB\", got \"{raw}\""
            ))),
        }
    }
}

/// `[[devices]]`: one device access rule.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceRule {
    pub allow: bool,
    #[serde(rename = "type")]
    pub kind: Option<DeviceType>,
    pub major: Option<i64>,
    pub minor: Option<i64>,
    pub access: Option<DeviceAccess>,
}

/// The device type of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum DeviceType {
    #[serde(rename = "a")]
    All,
    #[serde(rename = "b")]
    Block,
    #[serde(rename = "c")]
    Char,
}

/// Device access: some of `r`, `w`, `m`, each at most once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceAccess(String);

impl DeviceAccess {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for DeviceAccess {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        let mut seen = [false; 3];
        let valid = raw.chars().all(|c| {
            let slot = match c {
                'r' => 0,
                'w' => 1,
                'm' => 2,
                _ => return false,
            };
            !std::mem::replace(&mut seen[slot], true)
        });
        if valid {
            Ok(DeviceAccess(raw))
        } else {
            Err(serde::de::Error::custom(format!(
                "expected some of r, w and m (each once), got \"{raw}\""
            )))
        }
    }
}

/// `[network]` (cgroups v1 net_cls and net_prio).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    #[serde(rename = "classID")]
    pub class_id: Option<u32>,
    #[serde(default)]
    pub priorities: Vec<InterfacePriority>,
}

/// A network interface priority.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterfacePriority {
    pub name: String,
    pub priority: u32,
}

/// `[rdma.DEVICE]`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rdma {
    #[serde(rename = "hcaHandles")]
    pub hca_handles: Option<u32>,
    #[serde(rename = "hcaObjects")]
    pub hca_objects: Option<u32>,
}

/// Whether `key` can name a cgroup v2 interface file: `controller.setting`, lowercase
/// letters, digits and `_`, never a path.
fn is_unified_key(key: &str) -> bool {
    let mut parts = key.splitn(2, '.');
    let ok = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.')
    };
    match (parts.next(), parts.next()) {
        (Some(controller), Some(setting)) => {
            ok(controller) && !controller.contains('.') && ok(setting) && !setting.ends_with('.')
        }
        _ => false,
    }
}

impl CgroupsConfig {
    /// Parses TOML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &Source) -> Result<CgroupsConfig, ConfigError> {
        let config: CgroupsConfig =
            toml::from_str(text).map_err(|e| toml_error(text, origin, &e))?;
        config.validate(origin)?;
        Ok(config)
    }

    /// Reads and parses a file given by the user (`--apply-cgroups FILE`).
    pub fn from_file(path: &Path) -> Result<CgroupsConfig, ConfigError> {
        let loaded = read_text_file(path)?;
        CgroupsConfig::parse(&loaded.value, &loaded.source)
    }

    /// The install's cgroups.toml, or the built-in default (no limits).
    pub fn load(paths: &SystemPaths) -> Result<Loaded<CgroupsConfig>, ConfigError> {
        let Loaded { value, source } = paths.read_text(SystemFile::Cgroups)?;
        let value = CgroupsConfig::parse(&value, &source)?;
        log::debug!("cgroups.toml: {source}");
        Ok(Loaded { value, source })
    }

    /// True when the file sets no limit at all.
    pub fn is_empty(&self) -> bool {
        *self == CgroupsConfig::default()
    }

    fn validate(&self, origin: &Source) -> Result<(), ConfigError> {
        let invalid = |field: String, message: String| ConfigError::Invalid {
            origin: origin.clone(),
            field,
            message,
        };
        if let Some(s) = self.memory.as_ref().and_then(|m| m.swappiness)
            && s > 100
        {
            return Err(invalid(
                "memory.swappiness".to_string(),
                format!("must be from 0 to 100, got {s}"),
            ));
        }
        if let Some(b) = &self.block_io {
            let weights = [
                ("blockIO.weight", b.weight),
                ("blockIO.leafWeight", b.leaf_weight),
            ]
            .into_iter()
            .map(|(f, w)| (f.to_string(), w))
            .chain(b.weight_device.iter().enumerate().flat_map(|(i, d)| {
                [
                    (format!("blockIO.weightDevice[{i}].weight"), d.weight),
                    (
                        format!("blockIO.weightDevice[{i}].leafWeight"),
                        d.leaf_weight,
                    ),
                ]
            }));
            for (field, weight) in weights {
                if let Some(w) = weight
                    && !(10..=1000).contains(&w)
                {
                    return Err(invalid(field, format!("must be from 10 to 1000, got {w}")));
                }
            }
        }
        for key in self.unified.keys() {
            if !is_unified_key(key) {
                return Err(invalid(
                    format!("unified.\"{key}\""),
                    "keys must name a cgroup v2 file such as \"memory.high\"".to_string(),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn origin() -> Source {
        Source::File(PathBuf::from("/tmp/limits.toml"))
    }

    fn parse(text: &str) -> Result<CgroupsConfig, ConfigError> {
        CgroupsConfig::parse(text, &origin())
    }

    #[test]
    fn test_admin_guide_examples() {
        let c = parse(
            r#"
[memory]
  limit = 524288000
[cpu]
  shares = 512
  period = 100000
  quota = 20000
  cpus = "0-1"
  mems = "0-1"
[blockIO]
  weight = 1000
  leafWeight = 1000
  [[blockIO.weightDevice]]
    major = 7
    minor = 0
    weight = 100
    leafWeight = 50
  [[blockIO.throttleReadBpsDevice]]
    major = 7
    minor = 0
    rate = 16777216
"#,
        )
        .expect("parses");
        assert_eq!(c.memory.as_ref().and_then(|m| m.limit), Some(524_288_000));
        let cpu = c.cpu.as_ref().expect("cpu");
        assert_eq!(
            (cpu.shares, cpu.quota, cpu.period),
            (Some(512), Some(20000), Some(100_000))
        );
        assert_eq!(cpu.cpus.as_ref().map(CpuList::as_str), Some("0-1"));
        let b = c.block_io.as_ref().expect("blockIO");
        assert_eq!(b.weight_device[0].leaf_weight, Some(50));
        assert_eq!(b.throttle_read_bps_device[0].rate, 16_777_216);
        assert!(!c.is_empty());
    }

    #[test]
    fn test_other_sections() {
        let c = parse(
            r#"
[pids]
limit = 100
[[hugepageLimits]]
pageSize = "2MB"
limit = 1073741824
[[devices]]
allow = false
access = "rwm"
[[devices]]
allow = true
type = "c"
major = 1
minor = 3
access = "rw"
[network]
classID = 1048577
[[network.priorities]]
name = "eth0"
priority = 5
[rdma.mlx5_0]
hcaHandles = 3
[unified]
"memory.high" = "1073741824"
"io.bfq.weight" = "100"
"#,
        )
        .expect("parses");
        assert_eq!(c.pids, Some(Pids { limit: 100 }));
        assert_eq!(c.hugepage_limits[0].page_size.as_str(), "2MB");
        assert_eq!(c.devices[1].kind, Some(DeviceType::Char));
        assert_eq!(
            c.devices[0].access.as_ref().map(DeviceAccess::as_str),
            Some("rwm")
        );
        assert_eq!(c.network.as_ref().and_then(|n| n.class_id), Some(1_048_577));
        assert_eq!(c.rdma["mlx5_0"].hca_handles, Some(3));
        assert_eq!(c.unified["memory.high"], "1073741824");
    }

    #[test]
    fn test_errors_name_line() {
        let err = parse("[memory]\nlimit = 1\nlimt = 2\n").expect_err("must be refused");
        let msg = err.to_string();
        assert!(
            msg.starts_with("/tmp/limits.toml:3: unknown field `limt`"),
            "{msg}"
        );
        let err = parse("[cpu]\n\ncpus = \"0-a\"\n").expect_err("must be refused");
        assert!(
            err.to_string()
                .starts_with("/tmp/limits.toml:3: expected a list of numbers"),
            "{err}"
        );
        let err = parse("[[devices]]\nallow = true\ntype = \"x\"\n").expect_err("must be refused");
        assert!(err.to_string().starts_with("/tmp/limits.toml:3: "), "{err}");
        assert!(parse("[[devices]]\nallow = true\naccess = \"rr\"\n").is_err());
        assert!(parse("[[hugepageLimits]]\npageSize = \"2M\"\nlimit = 1\n").is_err());
        assert!(parse("[pids]\n").is_err(), "pids.limit is required");
        assert!(parse("[memory]\nlimit = \"lots\"\n").is_err());
        assert!(parse("memory = [").is_err());
        assert!(!err.to_string().contains('\n'));
    }

    #[test]
    fn test_value_rules() {
        let err = parse("[memory]\nswappiness = 101\n").expect_err("must be refused");
        assert_eq!(
            err.to_string(),
            "/tmp/limits.toml: memory.swappiness: must be from 0 to 100, got 101"
        );
        let err = parse("[blockIO]\n[[blockIO.weightDevice]]\nmajor = 1\nminor = 2\nweight = 5\n")
            .expect_err("must be refused");
        assert!(
            err.to_string()
                .contains("blockIO.weightDevice[0].weight: must be from 10 to 1000"),
            "{err}"
        );
        for bad in [
            "../../release_agent",
            "memory",
            "memory/high",
            ".high",
            "Memory.high",
            "memory.",
        ] {
            let text = format!("[unified]\n\"{bad}\" = \"1\"\n");
            assert!(parse(&text).is_err(), "{bad}");
        }
    }

    #[test]
    fn test_builtin_default_sets_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let loaded = CgroupsConfig::load(&SystemPaths::with_prefix(dir.path())).expect("built-in");
        assert_eq!(loaded.source, Source::BuiltIn("cgroups.toml"));
        assert!(loaded.value.is_empty());
    }

    #[test]
    fn test_shipped_examples_parse_when_uncommented() {
        // Every example in the shipped file is valid once its '#' is removed.
        let text = std::str::from_utf8(SystemFile::Cgroups.builtin()).expect("utf-8");
        let uncommented: String = text
            .lines()
            .filter_map(|l| l.strip_prefix("# "))
            .filter(|l| {
                l.starts_with('[') || l.split_once(" = ").is_some_and(|(k, _)| !k.contains(' '))
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let c = parse(&uncommented).unwrap_or_else(|e| panic!("{e}\n{uncommented}"));
        assert!(c.memory.is_some() && c.cpu.is_some() && c.pids.is_some());
        assert!(c.block_io.is_some() && !c.devices.is_empty() && !c.unified.is_empty());
    }

    #[test]
    fn test_from_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[pids]\nlimit = 5\n").expect("w");
        assert_eq!(
            CgroupsConfig::from_file(&path).expect("parses").pids,
            Some(Pids { limit: 5 })
        );
        assert!(CgroupsConfig::from_file(&dir.path().join("none.toml")).is_err());
    }
}
