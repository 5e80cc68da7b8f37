//! Seccomp profiles: the OCI seccomp JSON shape (`defaultAction`, `defaultErrnoRet`,
//! `architectures`, `flags`, `syscalls[{names, action, errnoRet, args}]`) plus the fields
//! Docker-style profiles add (`archMap`, per-rule `comment`, `includes`, `excludes`, the old
//! single `name`), parsed into typed values. Enforcement (building the BPF filter) is the
//! launch code's job.
//!
//! Own types rather than the `oci-spec` crate's: `oci-spec` follows the runtime spec, which
//! has no `archMap`, `includes` or `excludes`, and serde would drop them silently. Dropping
//! an `includes.caps` condition turns a conditional rule into an unconditional one, so
//! every key here is known and an unknown key is an error.
//!
//! # The default profile (`etc/seccomp-profiles/default.json`)
//!
//! Docker's current default profile, copied unchanged from github.com/moby/profiles
//! (`seccomp/default.json` at commit cd3bed8): an allow-list (`defaultAction` ERRNO/EPERM)
//! whose conditional rules depend on the payload's capabilities (`includes.caps`), so a
//! `--fakeroot` payload may use `mount`, `unshare`, `setns` in its own namespaces and others
//! may not. Unlike Apptainer's own `default.json` it allows `statx`, which Debian bookworm's
//! `ls -l` needs. Go writes empty lists as `null` there; such lists are read as empty.
//! `--security seccomp:default` uses it (see [`SeccompProfile::resolve`]); the launch code
//! (`launch::profile`) compiles and installs it.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::paths::{SystemFile, SystemPaths, read_text_file};
use super::{ConfigError, Loaded, Source, json_error};

/// The largest errno a seccomp rule can return (Linux's MAX_ERRNO).
const MAX_ERRNO: u32 = 4095;
/// Seccomp compares at most six system call arguments.
const MAX_ARGS: u8 = 6;

/// A seccomp profile.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SeccompProfile {
    pub default_action: Action,
    pub default_errno_ret: Option<u32>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub architectures: Vec<Arch>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub arch_map: Vec<ArchMapEntry>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub flags: Vec<Flag>,
    pub listener_path: Option<PathBuf>,
    pub listener_metadata: Option<String>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub syscalls: Vec<SyscallRule>,
}

/// An architecture and the compatible ones to filter along with it (`archMap`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ArchMapEntry {
    pub architecture: Arch,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub sub_architectures: Vec<Arch>,
}

/// One rule: what happens when any of `names` is called with matching `args`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SyscallRule {
    #[serde(default, deserialize_with = "null_as_empty")]
    pub names: Vec<SyscallName>,
    /// The old single-name form; `SeccompProfile::parse` moves it into `names`.
    #[serde(default)]
    name: Option<SyscallName>,
    pub action: Action,
    pub errno_ret: Option<u32>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub args: Vec<ArgCondition>,
    pub comment: Option<String>,
    pub includes: Option<RuleFilter>,
    pub excludes: Option<RuleFilter>,
}

/// Docker's conditions on a rule: it applies only (includes) or never (excludes) when the
/// container has one of `caps`, runs on one of `arches` (Go names: amd64, arm64, ...), or
/// the kernel is at least `minKernel`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RuleFilter {
    #[serde(default, deserialize_with = "null_as_empty")]
    pub caps: Vec<String>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub arches: Vec<String>,
    pub min_kernel: Option<KernelVersion>,
}

/// A comparison of one system call argument.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ArgCondition {
    #[serde(deserialize_with = "arg_index")]
    pub index: u8,
    pub value: u64,
    #[serde(default)]
    pub value_two: u64,
    pub op: CompareOp,
}

/// What a rule (or the default) does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Action {
    #[serde(rename = "SCMP_ACT_KILL")]
    Kill,
    #[serde(rename = "SCMP_ACT_KILL_PROCESS")]
    KillProcess,
    #[serde(rename = "SCMP_ACT_KILL_THREAD")]
    KillThread,
    #[serde(rename = "SCMP_ACT_TRAP")]
    Trap,
    #[serde(rename = "SCMP_ACT_ERRNO")]
    Errno,
    #[serde(rename = "SCMP_ACT_TRACE")]
    Trace,
    #[serde(rename = "SCMP_ACT_ALLOW")]
    Allow,
    #[serde(rename = "SCMP_ACT_LOG")]
    Log,
    #[serde(rename = "SCMP_ACT_NOTIFY")]
    Notify,
}

impl Action {
    /// Whether the action returns an errno (and so may carry `errnoRet`).
    pub fn takes_errno(self) -> bool {
        matches!(self, Action::Errno | Action::Trace)
    }
}

/// Argument comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum CompareOp {
    #[serde(rename = "SCMP_CMP_NE")]
    NotEqual,
    #[serde(rename = "SCMP_CMP_LT")]
    Less,
    #[serde(rename = "SCMP_CMP_LE")]
    LessOrEqual,
    #[serde(rename = "SCMP_CMP_EQ")]
    Equal,
    #[serde(rename = "SCMP_CMP_GE")]
    GreaterOrEqual,
    #[serde(rename = "SCMP_CMP_GT")]
    Greater,
    #[serde(rename = "SCMP_CMP_MASKED_EQ")]
    MaskedEqual,
}

/// Filter flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Flag {
    #[serde(rename = "SECCOMP_FILTER_FLAG_TSYNC")]
    Tsync,
    #[serde(rename = "SECCOMP_FILTER_FLAG_LOG")]
    Log,
    #[serde(rename = "SECCOMP_FILTER_FLAG_SPEC_ALLOW")]
    SpecAllow,
    #[serde(rename = "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV")]
    WaitKillableRecv,
}

/// Architectures, by libseccomp's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Arch {
    #[serde(rename = "SCMP_ARCH_X86")]
    X86,
    #[serde(rename = "SCMP_ARCH_X86_64")]
    X86_64,
    #[serde(rename = "SCMP_ARCH_X32")]
    X32,
    #[serde(rename = "SCMP_ARCH_ARM")]
    Arm,
    #[serde(rename = "SCMP_ARCH_AARCH64")]
    Aarch64,
    #[serde(rename = "SCMP_ARCH_MIPS")]
    Mips,
    #[serde(rename = "SCMP_ARCH_MIPS64")]
    Mips64,
    #[serde(rename = "SCMP_ARCH_MIPS64N32")]
    Mips64N32,
    #[serde(rename = "SCMP_ARCH_MIPSEL")]
    Mipsel,
    #[serde(rename = "SCMP_ARCH_MIPSEL64")]
    Mipsel64,
    #[serde(rename = "SCMP_ARCH_MIPSEL64N32")]
    Mipsel64N32,
    #[serde(rename = "SCMP_ARCH_PPC")]
    Ppc,
    #[serde(rename = "SCMP_ARCH_PPC64")]
    Ppc64,
    #[serde(rename = "SCMP_ARCH_PPC64LE")]
    Ppc64Le,
    #[serde(rename = "SCMP_ARCH_S390")]
    S390,
    #[serde(rename = "SCMP_ARCH_S390X")]
    S390X,
    #[serde(rename = "SCMP_ARCH_PARISC")]
    Parisc,
    #[serde(rename = "SCMP_ARCH_PARISC64")]
    Parisc64,
    #[serde(rename = "SCMP_ARCH_RISCV64")]
    Riscv64,
    #[serde(rename = "SCMP_ARCH_LOONGARCH64")]
    Loongarch64,
    #[serde(rename = "SCMP_ARCH_M68K")]
    M68k,
    #[serde(rename = "SCMP_ARCH_SH")]
    Sh,
    #[serde(rename = "SCMP_ARCH_SHEB")]
    Sheb,
}

/// A system call name: lower-case letters, digits and `_`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SyscallName(String);

impl SyscallName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for SyscallName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        let valid = !raw.is_empty()
            && raw.len() <= 64
            && raw
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if valid {
            Ok(SyscallName(raw))
        } else {
            Err(serde::de::Error::custom(format!(
                "\"{raw}\" is not a system call name (lower-case letters, digits and '_')"
            )))
        }
    }
}

/// A kernel version `MAJOR.MINOR`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct KernelVersion {
    pub major: u32,
    pub minor: u32,
}

impl<'de> Deserialize<'de> for KernelVersion {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        let parsed = raw
            .split_once('.')
            .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)));
        match parsed {
            Some((major, minor)) => Ok(KernelVersion { major, minor }),
            None => Err(serde::de::Error::custom(format!(
                "expected a kernel version such as \"5.8\", got \"{raw}\""
            ))),
        }
    }
}

/// A list that may be `null` (Go writes a nil slice so; Docker's profile has such).
fn null_as_empty<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

fn arg_index<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
    let index = u64::deserialize(d)?;
    match u8::try_from(index) {
        Ok(i) if i < MAX_ARGS => Ok(i),
        _ => Err(serde::de::Error::custom(format!(
            "argument index must be from 0 to {}, got {index}",
            MAX_ARGS - 1
        ))),
    }
}

impl SeccompProfile {
    /// Parses profile JSON; `origin` names it in errors.
    pub fn parse(text: &str, origin: &Source) -> Result<SeccompProfile, ConfigError> {
        let mut profile: SeccompProfile =
            serde_json::from_str(text).map_err(|e| json_error(origin, &e))?;
        let invalid = |field: String, message: String| ConfigError::Invalid {
            origin: origin.clone(),
            field,
            message,
        };
        if let Some(errno) = profile.default_errno_ret
            && errno > MAX_ERRNO
        {
            return Err(invalid(
                "defaultErrnoRet".to_string(),
                format!("must be from 0 to {MAX_ERRNO}, got {errno}"),
            ));
        }
        for (i, rule) in profile.syscalls.iter_mut().enumerate() {
            if let Some(name) = rule.name.take() {
                rule.names.insert(0, name);
            }
            if rule.names.is_empty() {
                return Err(invalid(
                    format!("syscalls[{i}]"),
                    "a rule needs \"names\" (a list of system calls)".to_string(),
                ));
            }
            if let Some(errno) = rule.errno_ret {
                if !rule.action.takes_errno() {
                    return Err(invalid(
                        format!("syscalls[{i}].errnoRet"),
                        "only SCMP_ACT_ERRNO and SCMP_ACT_TRACE return an errno".to_string(),
                    ));
                }
                if errno > MAX_ERRNO {
                    return Err(invalid(
                        format!("syscalls[{i}].errnoRet"),
                        format!("must be from 0 to {MAX_ERRNO}, got {errno}"),
                    ));
                }
            }
        }
        Ok(profile)
    }

    /// Reads and parses a profile given by the user (`--security seccomp:FILE`).
    pub fn from_file(path: &Path) -> Result<SeccompProfile, ConfigError> {
        let loaded = read_text_file(path)?;
        SeccompProfile::parse(&loaded.value, &loaded.source)
    }

    /// The install's `seccomp-profiles/default.json`, or sifr's built-in default.
    pub fn load_default(paths: &SystemPaths) -> Result<Loaded<SeccompProfile>, ConfigError> {
        let Loaded { value, source } = paths.read_text(SystemFile::SeccompDefault)?;
        let value = SeccompProfile::parse(&value, &source)?;
        log::debug!("seccomp default profile: {source}");
        Ok(Loaded { value, source })
    }

    /// The profile `--security seccomp:NAME` names. As in Apptainer, NAME is a path (relative
    /// to the working directory); when no such file exists and NAME has no `/`, sifr also
    /// looks in the install's `seccomp-profiles/` for `NAME` and `NAME.json` (so
    /// `seccomp:default` is the shipped default profile, built in when the install lacks
    /// it). A missing profile is an error naming the path looked at last.
    pub fn resolve(name: &str, paths: &SystemPaths) -> Result<Loaded<SeccompProfile>, ConfigError> {
        let given = Path::new(name);
        if name.contains('/') || given.exists() {
            let value = SeccompProfile::from_file(given)?;
            return Ok(Loaded {
                value,
                source: Source::File(given.to_path_buf()),
            });
        }
        let dir = paths.config_dir().join("seccomp-profiles");
        let plain = dir.join(name);
        let json = dir.join(format!("{name}.json"));
        for candidate in [&plain, &json] {
            if candidate.exists() {
                let value = SeccompProfile::from_file(candidate)?;
                return Ok(Loaded {
                    value,
                    source: Source::File(candidate.clone()),
                });
            }
        }
        if name == "default" {
            return SeccompProfile::load_default(paths);
        }
        Err(ConfigError::Read {
            path: json,
            cause: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!(
                    "no seccomp profile named {name} (give a path to a profile file, or \
                     install it in {})",
                    dir.display()
                ),
            ),
        })
    }

    /// The rule that names system call `name`, if any (the first one).
    pub fn rule_for(&self, name: &str) -> Option<&SyscallRule> {
        self.syscalls
            .iter()
            .find(|r| r.names.iter().any(|n| n.as_str() == name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> Source {
        Source::File(PathBuf::from("/tmp/profile.json"))
    }

    fn parse(text: &str) -> Result<SeccompProfile, ConfigError> {
        SeccompProfile::parse(text, &origin())
    }

    #[test]
    fn test_full_shape() {
        let p = parse(
            r#"{
  "defaultAction": "SCMP_ACT_ERRNO",
  "defaultErrnoRet": 38,
  "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
  "archMap": [{"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]}],
  "flags": ["SECCOMP_FILTER_FLAG_LOG"],
  "syscalls": [
    {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
    {"name": "personality", "action": "SCMP_ACT_ALLOW",
     "args": [{"index": 0, "value": 8, "valueTwo": 0, "op": "SCMP_CMP_EQ"}],
     "comment": "setarch -R",
     "includes": {"arches": ["amd64"], "minKernel": "4.8"},
     "excludes": {"caps": ["CAP_SYS_ADMIN"]}},
    {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}
  ]
}"#,
        )
        .expect("parses");
        assert_eq!(p.default_action, Action::Errno);
        assert_eq!(p.default_errno_ret, Some(38));
        assert_eq!(p.architectures, [Arch::X86_64, Arch::X86]);
        assert_eq!(p.arch_map[0].sub_architectures, [Arch::Arm]);
        assert_eq!(p.flags, [Flag::Log]);
        let r = p.rule_for("personality").expect("rule");
        assert_eq!(
            r.names[0].as_str(),
            "personality",
            "single name moved into names"
        );
        assert_eq!(r.args[0].op, CompareOp::Equal);
        assert_eq!(
            r.includes.as_ref().and_then(|i| i.min_kernel),
            Some(KernelVersion { major: 4, minor: 8 })
        );
        assert_eq!(r.excludes.as_ref().map(|e| e.caps.len()), Some(1));
        assert_eq!(p.rule_for("mkdir").and_then(|r| r.errno_ret), Some(1));
        assert!(p.rule_for("open").is_none());
    }

    #[test]
    fn test_errors_name_line() {
        let err = parse("{\n\"defaultAction\": \"SCMP_ACT_ALLOW\",\n\"syscalls\": [{\"names\": [\"read\"], \"action\": \"SCMP_ACT_ALOW\"}]\n}")
            .expect_err("must be refused");
        let msg = err.to_string();
        assert!(
            msg.starts_with("/tmp/profile.json:3: unknown variant `SCMP_ACT_ALOW`"),
            "{msg}"
        );
        let err = parse("{\"defaultAction\": \"SCMP_ACT_ALLOW\", \"comment\": \"x\"}")
            .expect_err("must be refused");
        assert!(err.to_string().contains("unknown field `comment`"), "{err}");
        let err = parse("{\"syscalls\": []}").expect_err("must be refused");
        assert!(
            err.to_string().contains("missing field `defaultAction`"),
            "{err}"
        );
        let err = parse(
            "{\"defaultAction\": \"SCMP_ACT_ALLOW\", \"syscalls\": [{\"names\": [\"read\"], \"action\": \"SCMP_ACT_ERRNO\",\n \"args\": [{\"index\": 6, \"value\": 1, \"op\": \"SCMP_CMP_EQ\"}]}]}",
        )
        .expect_err("must be refused");
        assert!(
            err.to_string()
                .starts_with("/tmp/profile.json:2: argument index must be from 0 to 5"),
            "{err}"
        );
        assert!(parse("{\"defaultAction\": \"SCMP_ACT_ALLOW\", \"syscalls\": [{\"names\": [\"Read\"], \"action\": \"SCMP_ACT_ALLOW\"}]}").is_err());
        assert!(
            parse(
                "{\"defaultAction\": \"SCMP_ACT_ALLOW\", \"architectures\": [\"SCMP_ARCH_Z80\"]}"
            )
            .is_err()
        );
        assert!(parse("not json").is_err());
    }

    #[test]
    fn test_rule_rules() {
        let err = parse("{\"defaultAction\": \"SCMP_ACT_ALLOW\", \"syscalls\": [{\"action\": \"SCMP_ACT_ERRNO\"}]}")
            .expect_err("must be refused");
        assert_eq!(
            err.to_string(),
            "/tmp/profile.json: syscalls[0]: a rule needs \"names\" (a list of system calls)"
        );
        let err = parse("{\"defaultAction\": \"SCMP_ACT_ALLOW\", \"syscalls\": [{\"names\": [\"read\"], \"action\": \"SCMP_ACT_KILL\", \"errnoRet\": 1}]}")
            .expect_err("must be refused");
        assert!(
            err.to_string()
                .contains("syscalls[0].errnoRet: only SCMP_ACT_ERRNO"),
            "{err}"
        );
        assert!(
            parse("{\"defaultAction\": \"SCMP_ACT_ERRNO\", \"defaultErrnoRet\": 5000}").is_err()
        );
        assert!(parse("{\"defaultAction\": \"SCMP_ACT_ALLOW\", \"syscalls\": [{\"names\": [\"read\"], \"action\": \"SCMP_ACT_ERRNO\", \"errnoRet\": 4096}]}").is_err());
    }

    #[test]
    fn test_builtin_default_profile() {
        let dir = tempfile::tempdir().expect("tempdir");
        let loaded =
            SeccompProfile::load_default(&SystemPaths::with_prefix(dir.path())).expect("built-in");
        assert_eq!(
            loaded.source,
            Source::BuiltIn("seccomp-profiles/default.json")
        );
        let p = loaded.value;
        // Docker's profile (moby/profiles cd3bed8): an allow-list.
        assert_eq!(p.default_action, Action::Errno);
        assert_eq!(p.default_errno_ret, Some(1));
        for allowed in ["read", "statx", "clone3", "openat2", "mseal", "listmount"] {
            let rule = p.rule_for(allowed).expect(allowed);
            assert_eq!(rule.action, Action::Allow, "{allowed}");
        }
        for denied in ["kexec_load", "init_module", "reboot", "open_by_handle_at"] {
            assert!(
                p.syscalls.iter().all(|r| r.action != Action::Allow
                    || r.includes.is_some()
                    || !r.names.iter().any(|n| n.as_str() == denied)),
                "{denied} allowed unconditionally"
            );
        }
        assert!(p.arch_map.iter().any(|a| a.architecture == Arch::X86_64
            && a.sub_architectures.contains(&Arch::X86)));
    }

    #[test]
    fn test_resolve_by_path_or_install_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let paths = SystemPaths::with_prefix(dir.path());
        let profiles = paths.config_dir().join("seccomp-profiles");
        std::fs::create_dir_all(&profiles).expect("mkdir");
        std::fs::write(
            profiles.join("strict.json"),
            "{\"defaultAction\": \"SCMP_ACT_KILL\"}",
        )
        .expect("w");
        let by_name = SeccompProfile::resolve("strict", &paths).expect("by name");
        assert_eq!(by_name.value.default_action, Action::Kill);
        assert_eq!(by_name.source, Source::File(profiles.join("strict.json")));
        let path = dir.path().join("p.json");
        std::fs::write(&path, "{\"defaultAction\": \"SCMP_ACT_LOG\"}").expect("w");
        let by_path = SeccompProfile::resolve(path.to_str().expect("utf8"), &paths).expect("path");
        assert_eq!(by_path.value.default_action, Action::Log);
        // `default` falls back to the built-in profile.
        let default = SeccompProfile::resolve("default", &paths).expect("default");
        assert_eq!(
            default.source,
            Source::BuiltIn("seccomp-profiles/default.json")
        );
        let missing = SeccompProfile::resolve("nosuch", &paths).expect_err("missing");
        assert!(
            missing
                .to_string()
                .contains(&profiles.join("nosuch.json").display().to_string()),
            "{missing}"
        );
        let missing = SeccompProfile::resolve("/no/such.json", &paths).expect_err("missing");
        assert!(missing.to_string().contains("/no/such.json"), "{missing}");
    }

    #[test]
    fn test_from_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("p.json");
        std::fs::write(&path, "{\"defaultAction\": \"SCMP_ACT_LOG\"}").expect("w");
        assert_eq!(
            SeccompProfile::from_file(&path)
                .expect("parses")
                .default_action,
            Action::Log
        );
    }
}
