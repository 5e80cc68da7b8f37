//! sifr.conf: the typed `Config`, its line parser, and loading it from the install, from
//! `-c/--config FILE`, or from the built-in default.
//!
//! Syntax (apptainer.conf's): `directive = value` per line; `#` starts a comment line; blank
//! lines are ignored. As in Apptainer (pkg/util/apptainerconf), a line that names no known
//! directive (or has no `=`) is ignored, and a single-valued directive set twice keeps its
//! FIRST value, so that a SingularityCE or older Singularity file loads unchanged. Unlike
//! Apptainer, which is silent, each such line is a warning naming the file and line (see
//! [`Provenance::warnings`]), so a typo does not pass unnoticed. A bad value for a known
//! directive stays an error (as in Apptainer).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::directives::{
    self, BindPath, EnableOverlay, EnableUnderlay, Expected, MemSize, MemoryFsType, MountDev,
    RootDefaultCapabilities, SearchPath, SetuidMountSquashfs,
};
use super::paths::{SystemFile, SystemPaths, read_text_file};
use super::{ConfigError, Source};

/// Every sifr.conf setting, typed. Field names follow the directive names; the shipped
/// `etc/sifr.conf` documents each one and whether sifr acts on it.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    // Privilege and namespaces.
    pub allow_setuid: bool,
    pub max_loop_devices: u32,
    pub shared_loop_devices: bool,
    pub allow_ipc_ns: bool,
    pub allow_pid_ns: bool,
    pub allow_user_ns: bool,
    pub allow_uts_ns: bool,
    pub root_default_capabilities: RootDefaultCapabilities,
    pub allow_net_users: Vec<String>,
    pub allow_net_groups: Vec<String>,
    pub allow_net_networks: Vec<String>,
    pub allow_netns_paths: Vec<PathBuf>,
    pub cni_configuration_path: Option<PathBuf>,
    pub cni_plugin_path: Option<PathBuf>,
    // Which containers may run.
    pub limit_container_owners: Vec<String>,
    pub limit_container_groups: Vec<String>,
    pub limit_container_paths: Vec<PathBuf>,
    pub allow_container_sif: bool,
    pub allow_container_encrypted: bool,
    pub allow_container_squashfs: bool,
    pub allow_container_extfs: bool,
    pub allow_container_dir: bool,
    pub allow_setuid_mount_encrypted: bool,
    pub allow_setuid_mount_squashfs: SetuidMountSquashfs,
    pub allow_setuid_mount_extfs: bool,
    pub sync_writable_extfs: bool,
    pub image_driver: Option<String>,
    pub sif_fuse: bool,
    pub tmp_sandbox: bool,
    // What is mounted into every container.
    pub config_passwd: bool,
    pub config_group: bool,
    pub config_resolv_conf: bool,
    pub mount_proc: bool,
    pub mount_sys: bool,
    pub mount_dev: MountDev,
    pub mount_devpts: bool,
    pub mount_home: bool,
    pub mount_tmp: bool,
    pub mount_hostfs: bool,
    pub mount_slave: bool,
    pub bind_path: Vec<BindPath>,
    pub user_bind_control: bool,
    pub enable_fusemount: bool,
    pub enable_overlay: EnableOverlay,
    pub enable_underlay: EnableUnderlay,
    /// MiB.
    pub sessiondir_max_size: u64,
    pub memory_fs_type: MemoryFsType,
    /// Seconds an idle kept image mount stays (sifr's own directive; 0: no kept mounts).
    pub kept_mount_idle_timeout: u64,
    // GPUs.
    pub always_use_nv: bool,
    pub use_nvidia_container_cli: bool,
    pub always_use_rocm: bool,
    // Helper programs.
    pub binary_path: SearchPath,
    pub suidbinary_path: Option<String>,
    pub cryptsetup_path: Option<PathBuf>,
    pub go_path: Option<PathBuf>,
    pub ldconfig_path: Option<PathBuf>,
    pub mksquashfs_path: Option<PathBuf>,
    pub unsquashfs_path: Option<PathBuf>,
    pub nvidia_container_cli_path: Option<PathBuf>,
    /// 0 = all CPUs.
    pub mksquashfs_procs: u32,
    pub mksquashfs_mem: Option<MemSize>,
    // Downloads, cgroups, monitoring.
    pub download_concurrency: u32,
    pub download_part_size: u64,
    pub download_buffer_size: u64,
    pub systemd_cgroups: bool,
    pub apptheus_socket_path: PathBuf,
    pub allow_monitoring: bool,

    /// Where the values came from.
    pub provenance: Provenance,
}

/// Where a `Config` came from: the file, the line of each directive it set, and the install
/// it was loaded for.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Provenance {
    /// The file read, or `None` for `Config::default()`.
    pub source: Option<Source>,
    /// For each directive the file set, the lines that set it.
    pub lines: BTreeMap<&'static str, Vec<usize>>,
    /// The install the config was loaded for (its internal bin dir is searched first).
    pub install: Option<SystemPaths>,
    /// Lines that were ignored, one message each (`FILE:LINE: what, and what to do`);
    /// `Config::load` logs them as warnings.
    pub warnings: Vec<String>,
}

impl Default for Config {
    /// The documented defaults: what applies when no file exists at all.
    fn default() -> Self {
        Config {
            allow_setuid: true,
            max_loop_devices: 256,
            shared_loop_devices: false,
            allow_ipc_ns: true,
            allow_pid_ns: true,
            allow_user_ns: true,
            allow_uts_ns: true,
            root_default_capabilities: RootDefaultCapabilities::Full,
            allow_net_users: Vec::new(),
            allow_net_groups: Vec::new(),
            allow_net_networks: Vec::new(),
            allow_netns_paths: Vec::new(),
            cni_configuration_path: None,
            cni_plugin_path: None,
            limit_container_owners: Vec::new(),
            limit_container_groups: Vec::new(),
            limit_container_paths: Vec::new(),
            allow_container_sif: true,
            allow_container_encrypted: true,
            allow_container_squashfs: true,
            allow_container_extfs: true,
            allow_container_dir: true,
            allow_setuid_mount_encrypted: true,
            allow_setuid_mount_squashfs: SetuidMountSquashfs::IfLimited,
            allow_setuid_mount_extfs: false,
            sync_writable_extfs: false,
            image_driver: None,
            sif_fuse: false,
            tmp_sandbox: true,
            config_passwd: true,
            config_group: true,
            config_resolv_conf: true,
            mount_proc: true,
            mount_sys: true,
            mount_dev: MountDev::Yes,
            mount_devpts: true,
            mount_home: true,
            mount_tmp: true,
            mount_hostfs: false,
            mount_slave: true,
            bind_path: vec![
                BindPath {
                    source: PathBuf::from("/etc/localtime"),
                    dest: PathBuf::from("/etc/localtime"),
                    read_only: false,
                },
                BindPath {
                    source: PathBuf::from("/etc/hosts"),
                    dest: PathBuf::from("/etc/hosts"),
                    read_only: false,
                },
            ],
            user_bind_control: true,
            enable_fusemount: true,
            enable_overlay: EnableOverlay::Yes,
            enable_underlay: EnableUnderlay::Yes,
            sessiondir_max_size: 64,
            memory_fs_type: MemoryFsType::Tmpfs,
            kept_mount_idle_timeout: 300,
            always_use_nv: false,
            use_nvidia_container_cli: false,
            always_use_rocm: false,
            binary_path: SearchPath::default(),
            suidbinary_path: None,
            cryptsetup_path: None,
            go_path: None,
            ldconfig_path: None,
            mksquashfs_path: None,
            unsquashfs_path: None,
            nvidia_container_cli_path: None,
            mksquashfs_procs: 0,
            mksquashfs_mem: None,
            download_concurrency: 3,
            download_part_size: 5_242_880,
            download_buffer_size: 32_768,
            systemd_cgroups: true,
            apptheus_socket_path: PathBuf::from("/run/apptheus/gateway.sock"),
            allow_monitoring: false,
            provenance: Provenance::default(),
        }
    }
}

/// A bad line in sifr.conf. The file and line number are added by `ConfigError::Directive`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirectiveError {
    #[error("expected \"directive = value\", got \"{text}\"")]
    MissingEquals { text: String },

    #[error("unknown directive \"{name}\"{}", unknown_hint(*suggestion))]
    Unknown {
        name: String,
        suggestion: Option<&'static str>,
    },

    #[error(
        "\"{directive}\" must be yes or no, got \"{got}\"{}",
        comment_hint(got)
    )]
    BadBool { directive: String, got: String },

    #[error(
        "\"{directive}\" must be {}, got \"{got}\"{}",
        one_of(allowed),
        comment_hint(got)
    )]
    BadChoice {
        directive: String,
        allowed: &'static [&'static str],
        got: String,
    },

    #[error(
        "\"{directive}\" must be a whole number from 0 to {max}, got \"{got}\"{}",
        comment_hint(got)
    )]
    BadInt {
        directive: String,
        got: String,
        max: u64,
    },

    #[error(
        "\"{directive}\" must be {expected}, got \"{got}\"{}",
        comment_hint(got)
    )]
    BadValue {
        directive: String,
        got: String,
        expected: String,
    },

    #[error(
        "\"{directive}\" is set again; it takes a single value and the first one (line {first_line}) applies, as in Apptainer: delete one of the lines"
    )]
    Duplicate {
        directive: String,
        first_line: usize,
    },

    #[error("\"{directive} = {got}\" is not supported: {reason}")]
    Unsupported {
        directive: String,
        got: String,
        reason: &'static str,
    },
}

fn unknown_hint(suggestion: Option<&'static str>) -> String {
    match suggestion {
        Some(s) => format!(" (did you mean \"{s}\"?)"),
        None => " (not an Apptainer or sifr directive; the shipped sifr.conf lists every directive sifr knows)".to_string(),
    }
}

fn comment_hint(got: &str) -> &'static str {
    if got.contains('#') {
        " (a comment must be on a line of its own)"
    } else {
        ""
    }
}

/// `["a", "b", "c"]` → `a, b or c`.
fn one_of(words: &[&str]) -> String {
    match words {
        [] => String::new(),
        [one] => (*one).to_string(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

impl DirectiveError {
    fn from_expected(directive: &str, got: &str, expected: Expected) -> DirectiveError {
        let directive = directive.to_string();
        let got = got.to_string();
        match expected {
            Expected::Bool => DirectiveError::BadBool { directive, got },
            Expected::Choice(allowed) => DirectiveError::BadChoice {
                directive,
                allowed,
                got,
            },
            Expected::UInt { max } => DirectiveError::BadInt {
                directive,
                got,
                max,
            },
            Expected::Other(expected) => DirectiveError::BadValue {
                directive,
                got,
                expected,
            },
            Expected::Unsupported(reason) => DirectiveError::Unsupported {
                directive,
                got,
                reason,
            },
        }
    }
}

impl Config {
    /// Parses sifr.conf text. `origin` names the text in errors and in `provenance`.
    pub fn parse(text: &str, origin: Source) -> Result<Config, ConfigError> {
        let mut config = Config::default();
        // A file lists its binds itself; the defaults apply only when there is no file.
        config.bind_path.clear();
        let mut lines: BTreeMap<&'static str, Vec<usize>> = BTreeMap::new();
        let mut warnings = Vec::new();
        let fail = |line: usize, error: DirectiveError| ConfigError::Directive {
            origin: origin.clone(),
            line,
            error,
        };

        for (index, raw) in text.lines().enumerate() {
            let number = index + 1;
            let line = raw.trim_start_matches('\u{feff}').trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let warn = |warnings: &mut Vec<String>, error: DirectiveError| {
                warnings.push(format!("{origin}:{number}: {error}; the line is ignored"));
            };
            let name = line
                .split_once('=')
                .map(|(key, _)| key.split_whitespace().collect::<Vec<_>>().join(" "))
                .unwrap_or_default();
            let Some((_, value)) = line.split_once('=').filter(|_| !name.is_empty()) else {
                warn(
                    &mut warnings,
                    DirectiveError::MissingEquals {
                        text: line.to_string(),
                    },
                );
                continue;
            };
            let Some(directive) = directives::lookup(&name) else {
                let suggestion = directives::suggest(&name);
                warn(&mut warnings, DirectiveError::Unknown { name, suggestion });
                continue;
            };
            let value = value.trim();
            if value.is_empty() {
                // As in Apptainer: an empty value leaves the default in place.
                continue;
            }
            if !directive.repeatable
                && let Some(first) = lines.get(directive.name).and_then(|l| l.first())
            {
                warn(
                    &mut warnings,
                    DirectiveError::Duplicate {
                        directive: name,
                        first_line: *first,
                    },
                );
                continue;
            }
            (directive.apply)(&mut config, value).map_err(|expected| {
                fail(
                    number,
                    DirectiveError::from_expected(&name, value, expected),
                )
            })?;
            lines.entry(directive.name).or_default().push(number);
        }

        config.provenance = Provenance {
            source: Some(origin),
            lines,
            install: None,
            warnings,
        };
        let ignored = config.ignored_settings();
        config.provenance.warnings.extend(ignored);
        Ok(config)
    }

    /// One warning for each setting that has no effect in sifr although Apptainer would act
    /// on it in a way a user would notice: a memory limit for image builds, an image driver
    /// plugin.
    pub fn ignored_settings(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut note = |directive: &str, set: bool, what: &str| {
            if set {
                out.push(format!(
                    "{}: \"{directive}\" has no effect in sifr: {what}",
                    self.origin_of(directive)
                ));
            }
        };
        note(
            "mksquashfs mem",
            self.mksquashfs_mem.is_some(),
            "sifr's own squashfs writer takes no memory limit",
        );
        note(
            "image driver",
            self.image_driver.is_some(),
            "sifr has no image driver plugins and always serves images with its own FUSE driver",
        );
        out
    }

    /// Reads and parses a sifr.conf file.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let loaded = read_text_file(path)?;
        Config::parse(&loaded.value, loaded.source)
    }

    /// The built-in default sifr.conf, parsed.
    pub fn builtin() -> Result<Config, ConfigError> {
        let origin = Source::BuiltIn(SystemFile::SifrConf.relative_path());
        let text = super::utf8_text(SystemFile::SifrConf.builtin().to_vec(), &origin)?;
        Config::parse(&text, origin)
    }

    /// Loads the configuration for an install: `override_file` (from `-c/--config`) when
    /// given, else the install's sifr.conf, else the built-in default.
    pub fn load(paths: &SystemPaths, override_file: Option<&Path>) -> Result<Config, ConfigError> {
        let loaded = match override_file {
            Some(path) => read_text_file(path)?,
            None => paths.read_text(SystemFile::SifrConf)?,
        };
        log::debug!("sifr.conf: {}", loaded.source);
        let mut config = Config::parse(&loaded.value, loaded.source)?;
        config.provenance.install = Some(paths.clone());
        config.log_warnings();
        Ok(config)
    }

    /// Where a directive's value came from: `FILE:LINE` (first line for lists) or `default`.
    pub fn origin_of(&self, directive: &str) -> String {
        let canonical = directives::lookup(directive).map_or(directive, |d| d.name);
        match (
            &self.provenance.source,
            self.provenance.lines.get(canonical),
        ) {
            (Some(source), Some(lines)) => {
                let lines: Vec<String> = lines.iter().map(ToString::to_string).collect();
                format!("{source}:{}", lines.join(","))
            }
            _ => "default".to_string(),
        }
    }

    /// One line per directive, `name = value (origin)`, preceded by the file read; for
    /// `--debug`.
    pub fn describe(&self) -> Vec<String> {
        let source = match &self.provenance.source {
            Some(s) => s.to_string(),
            None => "none (built-in defaults)".to_string(),
        };
        let mut out = vec![format!("configuration file: {source}")];
        for d in directives::DIRECTIVES {
            out.push(format!(
                "{} = {} ({})",
                d.name,
                d.render(self),
                self.origin_of(d.name)
            ));
        }
        out
    }

    /// Logs the lines the parser ignored (`provenance.warnings`) as warnings.
    pub fn log_warnings(&self) {
        for w in &self.provenance.warnings {
            log::warn!("{w}");
        }
    }

    /// Logs `describe()` at debug level.
    pub fn log_debug(&self) {
        for line in self.describe() {
            log::debug!("{line}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::directives::{DIRECTIVES, Effect, Kind};

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Source::File(PathBuf::from("/etc/sifr/sifr.conf")))
    }

    fn parse_err(text: &str) -> (usize, DirectiveError, String) {
        match parse(text) {
            Err(e @ ConfigError::Directive { .. }) => {
                let message = e.to_string();
                let ConfigError::Directive { line, error, .. } = e else {
                    unreachable!("matched above")
                };
                (line, error, message)
            }
            other => panic!("expected a directive error, got {other:?}"),
        }
    }

    /// The config with everything defaulted, as parsing a file sees it (no default binds).
    fn empty_file_config() -> Config {
        let mut c = Config::default();
        c.bind_path.clear();
        c
    }

    fn without_provenance(mut c: Config) -> Config {
        c.provenance = Provenance::default();
        c
    }

    #[test]
    fn test_empty_file_gives_defaults_without_lists() {
        let c = parse("\n# only a comment\n   \n").expect("parses");
        assert_eq!(without_provenance(c), empty_file_config());
        for d in DIRECTIVES.iter().filter(|d| d.kind == Kind::List) {
            assert_eq!(d.render(&parse("").expect("empty")), "unset", "{}", d.name);
        }
    }

    #[test]
    fn test_builtin_equals_documented_defaults() {
        let c = Config::builtin().expect("the shipped sifr.conf parses");
        assert_eq!(c.provenance.source, Some(Source::BuiltIn("sifr.conf")));
        assert_eq!(without_provenance(c), Config::default());
    }

    #[test]
    fn test_every_directive_kind() {
        let c = parse(
            "mount proc = no\n\
             mount dev = minimal\n\
             enable overlay = driver\n\
             enable underlay = preferred\n\
             memory fs type = ramfs\n\
             root default capabilities = file\n\
             allow setuid-mount squashfs = no\n\
             sessiondir max size = 128\n\
             mksquashfs procs = 4\n\
             download part size = 1048576\n\
             mksquashfs mem = 1G\n\
             image driver = myplugin\n\
             cni plugin path = /opt/cni/bin\n\
             mksquashfs path = /opt/sq/bin/mksquashfs\n\
             binary path = /opt/tools/bin:$PATH\n\
             apptheus socket path = /run/x.sock\n",
        )
        .expect("parses");
        assert!(!c.mount_proc);
        assert_eq!(c.mount_dev, MountDev::Minimal);
        assert_eq!(c.enable_overlay, EnableOverlay::Driver);
        assert_eq!(c.enable_underlay, EnableUnderlay::Preferred);
        assert_eq!(c.memory_fs_type, MemoryFsType::Ramfs);
        assert_eq!(c.root_default_capabilities, RootDefaultCapabilities::File);
        assert_eq!(c.allow_setuid_mount_squashfs, SetuidMountSquashfs::No);
        assert_eq!(c.sessiondir_max_size, 128);
        assert_eq!(c.mksquashfs_procs, 4);
        assert_eq!(c.download_part_size, 1_048_576);
        assert_eq!(c.mksquashfs_mem.as_ref().map(MemSize::as_str), Some("1G"));
        assert_eq!(c.image_driver.as_deref(), Some("myplugin"));
        assert_eq!(
            c.cni_plugin_path.as_deref(),
            Some(Path::new("/opt/cni/bin"))
        );
        assert_eq!(
            c.mksquashfs_path.as_deref(),
            Some(Path::new("/opt/sq/bin/mksquashfs"))
        );
        assert_eq!(c.binary_path.as_str(), "/opt/tools/bin:$PATH");
        assert_eq!(c.apptheus_socket_path, Path::new("/run/x.sock"));
        // Everything not named keeps its default.
        assert!(c.mount_sys && c.allow_pid_ns);
    }

    #[test]
    fn test_repeats_and_lists_accumulate() {
        let c = parse(
            "bind path = /etc/localtime\n\
             bind path = /opt/data:/data:ro, /scratch\n\
             limit container owners = alice, bob\n\
             limit container owners = 1500\n\
             limit container paths = /scratch,/global/images\n\
             allow netns paths = /run/netns/a\n",
        )
        .expect("parses");
        let dests: Vec<_> = c.bind_path.iter().map(|b| b.dest.clone()).collect();
        assert_eq!(
            dests,
            [
                PathBuf::from("/etc/localtime"),
                PathBuf::from("/data"),
                PathBuf::from("/scratch")
            ]
        );
        assert!(c.bind_path[1].read_only);
        assert_eq!(c.limit_container_owners, ["alice", "bob", "1500"]);
        assert_eq!(
            c.limit_container_paths,
            [PathBuf::from("/scratch"), PathBuf::from("/global/images")]
        );
        assert_eq!(c.provenance.lines.get("bind path"), Some(&vec![1, 2]));
        assert_eq!(
            c.origin_of("limit container owners"),
            "/etc/sifr/sifr.conf:3,4"
        );
        assert_eq!(c.origin_of("mount dev"), "default");
    }

    #[test]
    fn test_whitespace_crlf_and_empty_values() {
        let c = parse(
            "\u{feff}  mount   home\t=   no   \r\n\
             image driver =\r\n\
             mksquashfs mem = \n\
             sessiondir max size=8\n",
        )
        .expect("parses");
        assert!(!c.mount_home);
        assert_eq!(c.image_driver, None);
        assert_eq!(c.mksquashfs_mem, None);
        assert_eq!(c.sessiondir_max_size, 8);
        // An empty value does not count as setting the directive.
        assert_eq!(c.origin_of("image driver"), "default");
        assert!(parse("image driver =\nimage driver = x\n").is_ok());
    }

    /// The warnings of a text that parses.
    fn warnings_of(text: &str) -> (Config, Vec<String>) {
        let c = parse(text).expect("parses");
        let w = c.provenance.warnings.clone();
        (c, w)
    }

    #[test]
    fn test_unknown_directive_warns_and_is_ignored() {
        // Apptainer ignores a line it does not know; sifr does too, with a warning naming the
        // file and line (and the closest known name).
        let (c, w) = warnings_of("mount proc = no\n\nmount devs = minimal\nmount sys = no\n");
        assert!(!c.mount_proc && !c.mount_sys, "the lines around it apply");
        assert_eq!(c.mount_dev, MountDev::Yes);
        assert_eq!(
            w,
            [
                "/etc/sifr/sifr.conf:3: unknown directive \"mount devs\" (did you mean \"mount dev\"?); the line is ignored"
            ]
        );
        let (_, w) = warnings_of("autofs bug path = /nfs\n");
        assert_eq!(w.len(), 1);
        assert!(
            w[0].contains("\"autofs bug path\" (not an Apptainer or sifr directive"),
            "{w:?}"
        );
        // Directive names are case-sensitive, as in Apptainer, with a helpful suggestion.
        let (c, w) = warnings_of("Mount Proc = no\n");
        assert!(c.mount_proc);
        assert!(w[0].contains("did you mean \"mount proc\""), "{w:?}");
        // A clean file has no warnings.
        assert!(warnings_of("mount proc = no\n").1.is_empty());
    }

    #[test]
    fn test_error_bad_bool() {
        let (line, error, message) = parse_err("mount proc = true\n");
        assert_eq!(line, 1);
        assert!(matches!(error, DirectiveError::BadBool { .. }));
        assert_eq!(
            message,
            "/etc/sifr/sifr.conf:1: \"mount proc\" must be yes or no, got \"true\""
        );
        let (_, _, message) = parse_err("mount proc = yes # keep it\n");
        assert!(
            message.ends_with("(a comment must be on a line of its own)"),
            "{message}"
        );
    }

    #[test]
    fn test_error_bad_enum() {
        let (line, error, message) = parse_err("# c\nmount dev = maybe\n");
        assert_eq!(line, 2);
        assert!(matches!(error, DirectiveError::BadChoice { .. }));
        assert_eq!(
            message,
            "/etc/sifr/sifr.conf:2: \"mount dev\" must be yes, no or minimal, got \"maybe\""
        );
        let (_, _, message) = parse_err("enable overlay = sometimes\n");
        assert!(
            message.contains("must be yes, no, try or driver"),
            "{message}"
        );
    }

    #[test]
    fn test_error_bad_int() {
        let (_, error, message) = parse_err("sessiondir max size = -1\n");
        assert!(matches!(error, DirectiveError::BadInt { .. }));
        assert_eq!(
            message,
            "/etc/sifr/sifr.conf:1: \"sessiondir max size\" must be a whole number from 0 to 18446744073709551615, got \"-1\""
        );
        let (_, _, message) = parse_err("mksquashfs procs = 99999999999\n");
        assert!(message.contains("from 0 to 4294967295"), "{message}");
        assert!(parse("max loop devices = 12MB\n").is_err());
    }

    #[test]
    fn test_line_without_equals_warns_and_is_ignored() {
        let (c, w) = warnings_of("mount proc = no\nmount sys yes\n = yes\n");
        assert!(!c.mount_proc && c.mount_sys);
        assert_eq!(
            w,
            [
                "/etc/sifr/sifr.conf:2: expected \"directive = value\", got \"mount sys yes\"; the line is ignored",
                "/etc/sifr/sifr.conf:3: expected \"directive = value\", got \"= yes\"; the line is ignored"
            ]
        );
    }

    #[test]
    fn test_error_bad_values() {
        let (_, error, message) = parse_err("limit container paths = /scratch, tmp\n");
        assert!(matches!(error, DirectiveError::BadValue { .. }));
        assert!(
            message.contains("must be an absolute path, got \"/scratch, tmp\""),
            "{message}"
        );
        assert!(parse("bind path = relative\n").is_err());
        assert!(parse("binary path = bin:/usr/bin\n").is_err());
        assert!(parse("mksquashfs mem = lots\n").is_err());
        assert!(parse("cni plugin path = cni\n").is_err());
        assert!(parse("limit container owners = alice smith\n").is_err());
    }

    #[test]
    fn test_repeated_scalar_keeps_the_first_value() {
        // Apptainer's GetConfig takes value[0] of a single-valued directive.
        let (c, w) = warnings_of(
            "mount dev = minimal\n\nmount dev = no\nsessiondir max size = 8\nsessiondir max size = 99\n",
        );
        assert_eq!(c.mount_dev, MountDev::Minimal);
        assert_eq!(c.sessiondir_max_size, 8);
        assert_eq!(c.origin_of("mount dev"), "/etc/sifr/sifr.conf:1");
        assert_eq!(w.len(), 2);
        assert_eq!(
            w[0],
            "/etc/sifr/sifr.conf:3: \"mount dev\" is set again; it takes a single value and the first one (line 1) applies, as in Apptainer: delete one of the lines; the line is ignored"
        );
        // An alias and its canonical name are the same setting.
        let (c, w) = warnings_of("allow setuid-mount extfs = no\nallow kernel extfs = yes\n");
        assert!(!c.allow_setuid_mount_extfs);
        assert_eq!(w.len(), 1);
        // Apptainer never reads a second value, so a bad one is not an error either.
        let (c, w) = warnings_of("mount dev = yes\nmount dev = maybe\n");
        assert_eq!((c.mount_dev, w.len()), (MountDev::Yes, 1));
    }

    #[test]
    fn test_singularityce_names() {
        let c = parse(
            "allow kernel squashfs = no\n\
             allow kernel extfs = yes\n\
             sif fuse = yes\n\
             tmp sandbox = no\n\
             oci mode = no\n\
             apptheus communication socket path = /run/a.sock\n",
        )
        .expect("parses");
        assert_eq!(c.allow_setuid_mount_squashfs, SetuidMountSquashfs::No);
        assert!(c.allow_setuid_mount_extfs);
        assert!(c.sif_fuse && !c.tmp_sandbox);
        assert_eq!(c.apptheus_socket_path, Path::new("/run/a.sock"));
        assert_eq!(
            c.origin_of("allow kernel squashfs"),
            "/etc/sifr/sifr.conf:1"
        );

        let (_, error, message) = parse_err("oci mode = yes\n");
        assert!(matches!(error, DirectiveError::Unsupported { .. }));
        assert_eq!(
            message,
            "/etc/sifr/sifr.conf:1: \"oci mode = yes\" is not supported: sifr has no OCI mode; set \"oci mode = no\" or delete the line"
        );
        assert!(parse("oci mode = perhaps\n").is_err());
    }

    #[test]
    fn test_apptainer_and_singularityce_defaults_load() {
        // The directive lines (comments dropped) of the files Apptainer 1.4 and
        // SingularityCE 4 install by default: an existing site file must load unchanged.
        let apptainer = "allow setuid = yes\nmax loop devices = 256\nallow pid ns = yes\n\
            allow uts ns = yes\nconfig passwd = yes\nconfig group = yes\nconfig resolv_conf = yes\n\
            mount proc = yes\nmount sys = yes\nmount dev = yes\nmount devpts = yes\n\
            mount home = yes\nmount tmp = yes\nmount hostfs = no\nbind path = /etc/localtime\n\
            bind path = /etc/hosts\nuser bind control = yes\nenable fusemount = yes\n\
            enable overlay = yes\nenable underlay = yes\nmount slave = yes\n\
            sessiondir max size = 64\nallow container sif = yes\n\
            allow container encrypted = yes\nallow container squashfs = yes\n\
            allow container extfs = yes\nallow container dir = yes\n\
            # allow setuid-mount encrypted = yes\n# allow setuid-mount squashfs = iflimited\n\
            # allow setuid-mount extfs = no\nalways use nv = no\n\
            use nvidia-container-cli = no\nalways use rocm = no\n\
            root default capabilities = full\nmemory fs type = tmpfs\n# binary path = \n\
            mksquashfs procs = 0\nshared loop devices = no\nimage driver = \n\
            download concurrency = 3\ndownload part size = 5242880\n\
            download buffer size = 32768\nsystemd cgroups = yes\n\
            apptheus socket path = /run/apptheus/gateway.sock\nallow monitoring = no\n";
        let c = parse(apptainer).expect("Apptainer's default file loads");
        assert_eq!(without_provenance(c), Config::default());

        let singularityce = "allow setuid = yes\noci mode = no\nmax loop devices = 256\n\
            allow ipc ns = yes\nallow pid ns = yes\nallow user ns = yes\nallow uts ns = yes\n\
            config passwd = yes\nmount dev = yes\nbind path = /etc/localtime\n\
            bind path = /etc/hosts\nenable overlay = try\nenable underlay = yes\n\
            tmp sandbox = yes\nsessiondir max size = 64\nallow kernel squashfs = yes\n\
            allow kernel extfs = yes\ncryptsetup path = \ngo path = \nldconfig path = \n\
            mksquashfs path = \nnvidia-container-cli path = \nunsquashfs path = \n\
            sif fuse = no\n";
        let c = parse(singularityce).expect("SingularityCE's default file loads");
        assert_eq!(c.enable_overlay, EnableOverlay::Try);
        assert_eq!(c.allow_setuid_mount_squashfs, SetuidMountSquashfs::Yes);
        assert_eq!(c.mksquashfs_path, None);
    }

    #[test]
    fn test_singularity_33_and_singularityce_45_files_load() {
        // Singularity 3.3's default singularity.conf (its own test fixture of the file) and
        // SingularityCE 4.5's (its template rendered with its defaults), unchanged.
        let text = include_str!("../../tests/data/conf/singularity-3.3.conf");
        let (c, w) = warnings_of(text);
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(c.enable_overlay, EnableOverlay::Try);
        assert_eq!(c.sessiondir_max_size, 16);
        assert_eq!(c.bind_path.len(), 2);
        assert!(c.mount_slave && c.user_bind_control);

        let text = include_str!("../../tests/data/conf/singularityce-4.5.conf");
        let (c, w) = warnings_of(text);
        // SingularityCE's own search paths are not Apptainer's: warned about and ignored.
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(
            w[0].contains("unknown directive \"root search path\""),
            "{w:?}"
        );
        assert!(
            w[1].contains("unknown directive \"user search path\""),
            "{w:?}"
        );
        assert_eq!(c.enable_overlay, EnableOverlay::Try);
        assert_eq!(c.sessiondir_max_size, 64);
        assert_eq!(c.download_part_size, 5_242_880);
        assert!(c.allow_setuid_mount_squashfs == SetuidMountSquashfs::Yes && c.tmp_sandbox);
    }

    #[test]
    fn test_no_effect_settings_that_matter_warn() {
        // GPU set-up is sifr's too now: `always use nv`/`always use rocm` warn no more.
        let (_, w) = warnings_of("always use nv = yes\nmksquashfs mem = 1G\n");
        assert_eq!(
            w,
            [
                "/etc/sifr/sifr.conf:2: \"mksquashfs mem\" has no effect in sifr: sifr's own squashfs writer takes no memory limit"
            ]
        );
        let (_, w) = warnings_of("always use rocm = yes\nimage driver = squashfuse\n");
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].contains(":2: \"image driver\" has no effect in sifr"),
            "{w:?}"
        );
        // Their defaults say nothing.
        assert!(
            warnings_of("always use nv = no\nalways use rocm = no\n")
                .1
                .is_empty()
        );
        assert!(Config::default().ignored_settings().is_empty());
    }

    #[test]
    fn test_every_directive_accepts_its_default_text() {
        // Writing each default back into a file must parse to the same value: the table's
        // parse and render agree for every directive.
        let defaults = Config::default();
        for d in DIRECTIVES {
            let text = d.render(&defaults);
            if text == "unset" {
                continue;
            }
            let c = parse(&format!("{} = {text}\n", d.name))
                .unwrap_or_else(|e| panic!("{}: {e}", d.name));
            assert_eq!(d.render(&c), text, "{}", d.name);
        }
    }

    #[test]
    fn test_load_prefers_override_then_install_then_builtin() {
        let dir = tempfile::tempdir().expect("tempdir");
        let paths = SystemPaths::with_prefix(dir.path());

        let c = Config::load(&paths, None).expect("built-in");
        assert_eq!(c.provenance.source, Some(Source::BuiltIn("sifr.conf")));
        assert_eq!(c.provenance.install.as_ref(), Some(&paths));

        std::fs::create_dir_all(paths.config_dir()).expect("mkdir");
        let installed = paths.path_of(SystemFile::SifrConf);
        std::fs::write(&installed, "mount home = no\n").expect("w");
        let c = Config::load(&paths, None).expect("installed");
        assert!(!c.mount_home);
        assert_eq!(c.provenance.source, Some(Source::File(installed.clone())));
        assert_eq!(
            c.origin_of("mount home"),
            format!("{}:1", installed.display())
        );
        assert!(
            c.bind_path.is_empty(),
            "a file without bind path binds nothing"
        );

        let other = dir.path().join("other.conf");
        std::fs::write(&other, "mount tmp = no\n").expect("w");
        let c = Config::load(&paths, Some(&other)).expect("override");
        assert!(c.mount_home && !c.mount_tmp);
        assert_eq!(c.provenance.source, Some(Source::File(other)));

        let missing = dir.path().join("missing.conf");
        let err = Config::load(&paths, Some(&missing)).expect_err("must be refused");
        assert!(
            err.to_string()
                .starts_with(&format!("cannot read {}", missing.display()))
        );

        std::fs::write(&installed, "mount home = perhaps\n").expect("w");
        let err = Config::load(&paths, None).expect_err("must be refused");
        assert!(
            err.to_string()
                .starts_with(&format!("{}:1: ", installed.display()))
        );
    }

    #[test]
    fn test_describe_names_every_directive_and_origin() {
        let c = parse("mount dev = minimal\n").expect("parses");
        let lines = c.describe();
        assert_eq!(lines[0], "configuration file: /etc/sifr/sifr.conf");
        assert_eq!(lines.len(), DIRECTIVES.len() + 1);
        assert!(lines.contains(&"mount dev = minimal (/etc/sifr/sifr.conf:1)".to_string()));
        assert!(lines.contains(&"mount proc = yes (default)".to_string()));
        assert!(lines.contains(&"bind path = unset (default)".to_string()));
        let defaults = Config::default().describe();
        assert_eq!(defaults[0], "configuration file: none (built-in defaults)");
        assert!(defaults.contains(&"bind path = /etc/localtime, /etc/hosts (default)".to_string()));
    }

    /// The lines of the shipped file that document directive `name`: from its block header
    /// (`# NAME: [KIND]`) to the next blank line.
    fn doc_block<'a>(text: &'a str, name: &str, kind: Kind) -> Option<Vec<&'a str>> {
        let header = format!("# {}: {}", name.to_uppercase(), kind.header());
        let lines: Vec<&str> = text.lines().collect();
        let start = lines.iter().position(|l| *l == header)?;
        Some(
            lines[start..]
                .iter()
                .take_while(|l| !l.trim().is_empty())
                .copied()
                .collect(),
        )
    }

    #[test]
    fn test_shipped_file_documents_every_directive() {
        let text = std::str::from_utf8(SystemFile::SifrConf.builtin()).expect("utf-8");
        let defaults = Config::default();
        for d in DIRECTIVES {
            let block = doc_block(text, d.name, d.kind).unwrap_or_else(|| {
                panic!(
                    "etc/sifr.conf has no block headed \"# {}: {}\"",
                    d.name.to_uppercase(),
                    d.kind.header()
                )
            });
            let default_line = format!("# DEFAULT: {}", d.render(&defaults));
            assert!(
                block.contains(&default_line.as_str()),
                "{}: expected \"{default_line}\"",
                d.name
            );
            let effect_line = match d.effect {
                Effect::Enforced => "# IN SIFR: enforced.",
                Effect::NoEffect => "# IN SIFR: parsed, no effect in sifr",
            };
            assert!(
                block.iter().any(|l| l.starts_with(effect_line)),
                "{}: expected a line starting \"{effect_line}\"",
                d.name
            );
            let active = format!("{} = ", d.name);
            let commented = format!("#{} =", d.name);
            assert!(
                block
                    .iter()
                    .any(|l| l.starts_with(&active) || l.starts_with(&commented)),
                "{}: the block shows no \"{}\" line",
                d.name,
                d.name
            );
        }
        for (alias, _) in directives::ALIASES {
            assert!(
                text.contains(&format!("'{alias}'")),
                "alias {alias} undocumented"
            );
        }
    }
}
