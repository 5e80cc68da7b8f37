//! The table of sifr.conf directives: each one's name, value type, whether sifr acts on it,
//! and how to parse, store and print its value.
//!
//! The names, defaults and allowed values follow Apptainer's apptainer.conf (and
//! SingularityCE's singularity.conf for the few it alone has). Decisions about directives
//! that exist in SingularityCE only:
//!
//! - `allow kernel squashfs` and `allow kernel extfs` are synonyms of Apptainer's
//!   `allow setuid-mount squashfs` / `extfs` (the same setting under another name).
//! - `cryptsetup path`, `go path`, `ldconfig path`, `mksquashfs path`, `unsquashfs path` and
//!   `nvidia-container-cli path` name a program's full path (older Apptainer releases had
//!   them too). `ldconfig path` is the ldconfig whose `-p` lists the host libraries for
//!   `--nv`/`--rocm`, and `nvidia-container-cli path` where `--nvccli` looks for it
//!   (`Config::find_binary` honours them ahead of `binary path`); sifr runs none of the
//!   other programs (its own squashfs writer and reader, no encryption, no plugins), so
//!   those are parsed and have no effect.
//! - `tmp sandbox` and `sif fuse` are parsed and have no effect: sifr always serves images
//!   with its own FUSE driver and never extracts one into a temporary sandbox.
//!
//! A directive marked [`Effect::Enforced`] is read by run-time code and has a test that fails
//! when its value is ignored (docs/compatibility.md, section "sifr.conf directives", names
//! it). [`Effect::NoEffect`] ones are parsed and checked; [`Config::ignored_settings`] warns
//! about the values whose Apptainer behaviour a user would miss.
//! - `oci mode` is accepted with `no` only: `yes` is refused with a message, since silently
//!   ignoring it would run containers in a way the administrator did not choose.
//!
//! Apptainer's hidden `suidbinary path` is accepted and ignored, and Apptainer's internal
//! name `apptheus communication socket path` is a synonym of `apptheus socket path`.

use std::path::{Path, PathBuf};

use super::conf::Config;

/// Whether sifr acts on a directive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// The runtime consults the value.
    Enforced,
    /// Accepted and validated for compatibility; changes nothing in sifr.
    NoEffect,
}

/// The shape of a directive's value, as the shipped file's block headers name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Bool,
    Choice(&'static [&'static str]),
    UInt,
    Text,
    Path,
    List,
}

impl Kind {
    /// The header tag used in the shipped sifr.conf, e.g. `[BOOL]` or `[yes/no/minimal]`.
    pub fn header(self) -> String {
        match self {
            Kind::Bool => "[BOOL]".to_string(),
            Kind::Choice(choices) => format!("[{}]", choices.join("/")),
            Kind::UInt => "[UINT]".to_string(),
            Kind::Text => "[STRING]".to_string(),
            Kind::Path => "[PATH]".to_string(),
            Kind::List => "[LIST]".to_string(),
        }
    }
}

/// Why a value was refused: what the directive expects instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expected {
    Bool,
    Choice(&'static [&'static str]),
    UInt {
        max: u64,
    },
    /// A free description of the expected value ("an absolute path", ...).
    Other(String),
    /// The value is well formed but sifr cannot honour it; the text says why.
    Unsupported(&'static str),
}

/// One row of the directive table.
pub struct Directive {
    /// The canonical name, as written in sifr.conf.
    pub name: &'static str,
    pub kind: Kind,
    pub effect: Effect,
    /// Whether the directive may appear on several lines (lists do).
    pub repeatable: bool,
    pub(crate) apply: fn(&mut Config, &str) -> Result<(), Expected>,
    pub(crate) render: fn(&Config) -> String,
}

impl std::fmt::Debug for Directive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directive")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("effect", &self.effect)
            .finish()
    }
}

impl Directive {
    /// The value of this directive in `config`, as it would be written in sifr.conf
    /// (`unset` for an unset value or an empty list).
    pub fn render(&self, config: &Config) -> String {
        (self.render)(config)
    }
}

/// A type that a directive's value parses into.
pub(crate) trait Value: Sized {
    const KIND: Kind;
    const REPEATABLE: bool = false;
    /// Parses one (trimmed, non-empty) value.
    fn parse(raw: &str) -> Result<Self, Expected>;
    /// Stores a parsed value: scalars replace, lists append.
    fn store(slot: &mut Self, value: Self) {
        *slot = value;
    }
    fn render(&self) -> String;
}

impl Value for bool {
    const KIND: Kind = Kind::Bool;
    fn parse(raw: &str) -> Result<Self, Expected> {
        match raw {
            "yes" => Ok(true),
            "no" => Ok(false),
            _ => Err(Expected::Bool),
        }
    }
    fn render(&self) -> String {
        if *self { "yes" } else { "no" }.to_string()
    }
}

fn parse_uint(raw: &str, max: u64) -> Result<u64, Expected> {
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Expected::UInt { max });
    }
    match raw.parse::<u64>() {
        Ok(n) if n <= max => Ok(n),
        _ => Err(Expected::UInt { max }),
    }
}

impl Value for u32 {
    const KIND: Kind = Kind::UInt;
    fn parse(raw: &str) -> Result<Self, Expected> {
        let n = parse_uint(raw, u64::from(u32::MAX))?;
        u32::try_from(n).map_err(|_| Expected::UInt {
            max: u64::from(u32::MAX),
        })
    }
    fn render(&self) -> String {
        self.to_string()
    }
}

impl Value for u64 {
    const KIND: Kind = Kind::UInt;
    fn parse(raw: &str) -> Result<Self, Expected> {
        parse_uint(raw, u64::MAX)
    }
    fn render(&self) -> String {
        self.to_string()
    }
}

impl Value for PathBuf {
    const KIND: Kind = Kind::Path;
    fn parse(raw: &str) -> Result<Self, Expected> {
        <PathBuf as ListItem>::parse_item(raw)
    }
    fn render(&self) -> String {
        self.display().to_string()
    }
}

impl Value for String {
    const KIND: Kind = Kind::Text;
    fn parse(raw: &str) -> Result<Self, Expected> {
        Ok(raw.to_string())
    }
    fn render(&self) -> String {
        self.clone()
    }
}

impl<T: Value> Value for Option<T> {
    const KIND: Kind = T::KIND;
    fn parse(raw: &str) -> Result<Self, Expected> {
        T::parse(raw).map(Some)
    }
    fn render(&self) -> String {
        match self {
            Some(v) => v.render(),
            None => "unset".to_string(),
        }
    }
}

/// One element of a comma-separated list directive.
pub(crate) trait ListItem: Sized {
    fn parse_item(raw: &str) -> Result<Self, Expected>;
    fn render_item(&self) -> String;
}

impl ListItem for String {
    fn parse_item(raw: &str) -> Result<Self, Expected> {
        if raw.chars().any(char::is_whitespace) {
            return Err(Expected::Other(
                "a comma-separated list of names".to_string(),
            ));
        }
        Ok(raw.to_string())
    }
    fn render_item(&self) -> String {
        self.clone()
    }
}

impl ListItem for PathBuf {
    fn parse_item(raw: &str) -> Result<Self, Expected> {
        if !Path::new(raw).is_absolute() {
            return Err(Expected::Other("an absolute path".to_string()));
        }
        Ok(PathBuf::from(raw))
    }
    fn render_item(&self) -> String {
        self.display().to_string()
    }
}

impl<T: ListItem> Value for Vec<T> {
    const KIND: Kind = Kind::List;
    const REPEATABLE: bool = true;
    fn parse(raw: &str) -> Result<Self, Expected> {
        raw.split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(T::parse_item)
            .collect()
    }
    fn store(slot: &mut Self, value: Self) {
        slot.extend(value);
    }
    fn render(&self) -> String {
        if self.is_empty() {
            return "unset".to_string();
        }
        self.iter()
            .map(ListItem::render_item)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Declares an enum whose values are a fixed set of words.
macro_rules! choice_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name { $($(#[$vmeta])* $variant),+ }

        impl $name {
            /// Every accepted word, in documentation order.
            pub const WORDS: &'static [&'static str] = &[$($text),+];

            /// The word for this value, as written in sifr.conf.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Value for $name {
            const KIND: Kind = Kind::Choice($name::WORDS);
            fn parse(raw: &str) -> Result<Self, Expected> {
                match raw {
                    $($text => Ok($name::$variant),)+
                    _ => Err(Expected::Choice($name::WORDS)),
                }
            }
            fn render(&self) -> String {
                self.as_str().to_string()
            }
        }
    };
}

choice_enum!(
    /// `mount dev`.
    MountDev {
        /// Bind the host's /dev.
        Yes => "yes",
        /// Mount nothing on /dev.
        No => "no",
        /// A small /dev with the basic nodes only.
        Minimal => "minimal",
    }
);

choice_enum!(
    /// `enable overlay`.
    EnableOverlay {
        /// Kernel overlayfs when it works, else the FUSE overlay.
        Yes => "yes",
        /// No overlays at all.
        No => "no",
        /// An old spelling of `yes`.
        Try => "try",
        /// Always the FUSE overlay.
        Driver => "driver",
    }
);

impl EnableOverlay {
    /// Whether overlays may be used at all (`try` counts as `yes`).
    pub fn enabled(self) -> bool {
        self != EnableOverlay::No
    }
}

choice_enum!(
    /// `enable underlay`.
    EnableUnderlay {
        /// On request (--underlay) or when overlays are off.
        Yes => "yes",
        /// Never.
        No => "no",
        /// Always, for bind targets.
        Preferred => "preferred",
    }
);

choice_enum!(
    /// `allow setuid-mount squashfs` (setuid installs only).
    SetuidMountSquashfs {
        Yes => "yes",
        No => "no",
        /// Only when `limit container *` or the ECL is active.
        IfLimited => "iflimited",
    }
);

choice_enum!(
    /// `memory fs type`.
    MemoryFsType {
        Tmpfs => "tmpfs",
        Ramfs => "ramfs",
    }
);

choice_enum!(
    /// `root default capabilities` (real root only).
    RootDefaultCapabilities {
        Full => "full",
        File => "file",
        No => "no",
    }
);

/// One `bind path` entry: `SOURCE[:DEST[:ro|rw]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindPath {
    pub source: PathBuf,
    pub dest: PathBuf,
    pub read_only: bool,
}

impl ListItem for BindPath {
    fn parse_item(raw: &str) -> Result<Self, Expected> {
        let bad = || {
            Expected::Other(
                "SOURCE, SOURCE:DEST or SOURCE:DEST:ro|rw with absolute paths".to_string(),
            )
        };
        let mut parts = raw.split(':');
        let source = parts
            .next()
            .filter(|s| s.starts_with('/'))
            .ok_or_else(bad)?;
        let dest = match parts.next() {
            None => source,
            Some(d) if d.starts_with('/') => d,
            Some(_) => return Err(bad()),
        };
        let read_only = match parts.next() {
            None | Some("rw") => false,
            Some("ro") => true,
            Some(_) => return Err(bad()),
        };
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(BindPath {
            source: PathBuf::from(source),
            dest: PathBuf::from(dest),
            read_only,
        })
    }
    fn render_item(&self) -> String {
        let mut s = self.source.display().to_string();
        if self.dest != self.source || self.read_only {
            s.push(':');
            s.push_str(&self.dest.display().to_string());
        }
        if self.read_only {
            s.push_str(":ro");
        }
        s
    }
}

/// `binary path`: colon-separated absolute directories, `$PATH` standing for the caller's PATH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchPath(String);

impl SearchPath {
    /// The entries in order; `None` stands for `$PATH`.
    pub fn entries(&self) -> impl Iterator<Item = Option<&Path>> {
        self.0.split(':').filter(|e| !e.is_empty()).map(|e| {
            if e == "$PATH" {
                None
            } else {
                Some(Path::new(e))
            }
        })
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Value for SearchPath {
    const KIND: Kind = Kind::Text;
    fn parse(raw: &str) -> Result<Self, Expected> {
        let ok = raw
            .split(':')
            .filter(|e| !e.is_empty())
            .all(|e| e == "$PATH" || e.starts_with('/'));
        if !ok {
            return Err(Expected::Other(
                "a colon-separated list of absolute directories and $PATH".to_string(),
            ));
        }
        Ok(SearchPath(raw.to_string()))
    }
    fn render(&self) -> String {
        self.0.clone()
    }
}

impl Default for SearchPath {
    fn default() -> Self {
        SearchPath("$PATH:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string())
    }
}

/// `mksquashfs mem`: a size with an optional K, M or G suffix, passed to `mksquashfs -mem`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemSize(String);

impl MemSize {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Value for MemSize {
    const KIND: Kind = Kind::Text;
    fn parse(raw: &str) -> Result<Self, Expected> {
        let digits = raw.trim_end_matches(['K', 'k', 'M', 'm', 'G', 'g']);
        let suffix_len = raw.len() - digits.len();
        if digits.is_empty() || suffix_len > 1 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Expected::Other(
                "a size such as 500M or 2G (digits, then K, M or G)".to_string(),
            ));
        }
        Ok(MemSize(raw.to_string()))
    }
    fn render(&self) -> String {
        self.0.clone()
    }
}

/// A table row for a directive stored in field `$field` of type `$ty`.
macro_rules! directive {
    ($name:literal, $field:ident: $ty:ty, $effect:ident) => {
        Directive {
            name: $name,
            kind: <$ty as Value>::KIND,
            effect: Effect::$effect,
            repeatable: <$ty as Value>::REPEATABLE,
            apply: |c: &mut Config, raw: &str| {
                let v = <$ty as Value>::parse(raw)?;
                <$ty as Value>::store(&mut c.$field, v);
                Ok(())
            },
            render: |c: &Config| <$ty as Value>::render(&c.$field),
        }
    };
}

/// Every directive sifr knows, in the order of the shipped sifr.conf.
pub static DIRECTIVES: &[Directive] = &[
    // Privilege and namespaces.
    directive!("allow setuid", allow_setuid: bool, NoEffect),
    directive!("max loop devices", max_loop_devices: u32, NoEffect),
    directive!("shared loop devices", shared_loop_devices: bool, NoEffect),
    directive!("allow ipc ns", allow_ipc_ns: bool, Enforced),
    directive!("allow pid ns", allow_pid_ns: bool, Enforced),
    directive!("allow user ns", allow_user_ns: bool, Enforced),
    directive!("allow uts ns", allow_uts_ns: bool, Enforced),
    directive!("root default capabilities", root_default_capabilities: RootDefaultCapabilities, NoEffect),
    directive!("allow net users", allow_net_users: Vec<String>, NoEffect),
    directive!("allow net groups", allow_net_groups: Vec<String>, NoEffect),
    directive!("allow net networks", allow_net_networks: Vec<String>, NoEffect),
    directive!("allow netns paths", allow_netns_paths: Vec<PathBuf>, NoEffect),
    directive!("cni configuration path", cni_configuration_path: Option<PathBuf>, NoEffect),
    directive!("cni plugin path", cni_plugin_path: Option<PathBuf>, NoEffect),
    // Which containers may run.
    directive!("limit container owners", limit_container_owners: Vec<String>, Enforced),
    directive!("limit container groups", limit_container_groups: Vec<String>, Enforced),
    directive!("limit container paths", limit_container_paths: Vec<PathBuf>, Enforced),
    directive!("allow container sif", allow_container_sif: bool, Enforced),
    directive!("allow container encrypted", allow_container_encrypted: bool, Enforced),
    directive!("allow container squashfs", allow_container_squashfs: bool, Enforced),
    directive!("allow container extfs", allow_container_extfs: bool, Enforced),
    directive!("allow container dir", allow_container_dir: bool, Enforced),
    directive!("allow setuid-mount encrypted", allow_setuid_mount_encrypted: bool, NoEffect),
    directive!("allow setuid-mount squashfs", allow_setuid_mount_squashfs: SetuidMountSquashfs, NoEffect),
    directive!("allow setuid-mount extfs", allow_setuid_mount_extfs: bool, NoEffect),
    directive!("sync writable extfs", sync_writable_extfs: bool, NoEffect),
    directive!("image driver", image_driver: Option<String>, NoEffect),
    directive!("sif fuse", sif_fuse: bool, NoEffect),
    directive!("tmp sandbox", tmp_sandbox: bool, NoEffect),
    Directive {
        name: "oci mode",
        kind: Kind::Bool,
        effect: Effect::NoEffect,
        repeatable: false,
        apply: |_c: &mut Config, raw: &str| match bool::parse(raw)? {
            false => Ok(()),
            true => Err(Expected::Unsupported(
                "sifr has no OCI mode; set \"oci mode = no\" or delete the line",
            )),
        },
        render: |_c: &Config| "no".to_string(),
    },
    // What is mounted into every container.
    directive!("config passwd", config_passwd: bool, Enforced),
    directive!("config group", config_group: bool, Enforced),
    directive!("config resolv_conf", config_resolv_conf: bool, Enforced),
    directive!("mount proc", mount_proc: bool, Enforced),
    directive!("mount sys", mount_sys: bool, Enforced),
    directive!("mount dev", mount_dev: MountDev, Enforced),
    directive!("mount devpts", mount_devpts: bool, Enforced),
    directive!("mount home", mount_home: bool, Enforced),
    directive!("mount tmp", mount_tmp: bool, Enforced),
    directive!("mount hostfs", mount_hostfs: bool, Enforced),
    directive!("mount slave", mount_slave: bool, Enforced),
    directive!("bind path", bind_path: Vec<BindPath>, Enforced),
    directive!("user bind control", user_bind_control: bool, Enforced),
    directive!("enable fusemount", enable_fusemount: bool, NoEffect),
    directive!("enable overlay", enable_overlay: EnableOverlay, Enforced),
    directive!("enable underlay", enable_underlay: EnableUnderlay, Enforced),
    directive!("sessiondir max size", sessiondir_max_size: u64, Enforced),
    directive!("memory fs type", memory_fs_type: MemoryFsType, Enforced),
    directive!("kept mount idle timeout", kept_mount_idle_timeout: u64, Enforced),
    // GPUs.
    directive!("always use nv", always_use_nv: bool, Enforced),
    directive!("use nvidia-container-cli", use_nvidia_container_cli: bool, Enforced),
    directive!("always use rocm", always_use_rocm: bool, Enforced),
    // Helper programs.
    directive!("binary path", binary_path: SearchPath, Enforced),
    directive!("suidbinary path", suidbinary_path: Option<String>, NoEffect),
    directive!("cryptsetup path", cryptsetup_path: Option<PathBuf>, NoEffect),
    directive!("go path", go_path: Option<PathBuf>, NoEffect),
    directive!("ldconfig path", ldconfig_path: Option<PathBuf>, Enforced),
    directive!("mksquashfs path", mksquashfs_path: Option<PathBuf>, NoEffect),
    directive!("unsquashfs path", unsquashfs_path: Option<PathBuf>, NoEffect),
    directive!("nvidia-container-cli path", nvidia_container_cli_path: Option<PathBuf>, Enforced),
    directive!("mksquashfs procs", mksquashfs_procs: u32, Enforced),
    directive!("mksquashfs mem", mksquashfs_mem: Option<MemSize>, NoEffect),
    // Downloads, cgroups, monitoring.
    directive!("download concurrency", download_concurrency: u32, NoEffect),
    directive!("download part size", download_part_size: u64, NoEffect),
    directive!("download buffer size", download_buffer_size: u64, NoEffect),
    directive!("systemd cgroups", systemd_cgroups: bool, NoEffect),
    directive!("apptheus socket path", apptheus_socket_path: PathBuf, NoEffect),
    directive!("allow monitoring", allow_monitoring: bool, NoEffect),
];

/// Other names accepted for a directive: `(alias, canonical name)`.
pub static ALIASES: &[(&str, &str)] = &[
    // SingularityCE's names for the same settings.
    ("allow kernel squashfs", "allow setuid-mount squashfs"),
    ("allow kernel extfs", "allow setuid-mount extfs"),
    // The name in Apptainer's own struct tag (its template writes the short one).
    ("apptheus communication socket path", "apptheus socket path"),
];

/// The directive called `name` (canonical or alias).
pub fn lookup(name: &str) -> Option<&'static Directive> {
    let canonical = ALIASES
        .iter()
        .find(|(alias, _)| *alias == name)
        .map_or(name, |(_, canonical)| canonical);
    DIRECTIVES.iter().find(|d| d.name == canonical)
}

/// The known name closest to a misspelt one, when one is close enough to suggest.
pub fn suggest(name: &str) -> Option<&'static str> {
    let lower = name.to_lowercase();
    DIRECTIVES
        .iter()
        .map(|d| d.name)
        .chain(ALIASES.iter().map(|(alias, _)| *alias))
        .map(|known| (strsim::levenshtein(&lower, known), known))
        .filter(|(distance, _)| *distance <= 3)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, known)| known)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_names_are_unique_and_normalised() {
        let mut names: Vec<&str> = DIRECTIVES.iter().map(|d| d.name).collect();
        names.extend(ALIASES.iter().map(|(a, _)| *a));
        let count = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), count, "duplicate directive name");
        for name in names {
            assert_eq!(name, name.to_lowercase());
            assert_eq!(name, name.split_whitespace().collect::<Vec<_>>().join(" "));
        }
    }

    #[test]
    fn test_aliases_point_at_directives() {
        for (alias, canonical) in ALIASES {
            let d = lookup(alias).expect("alias resolves");
            assert_eq!(d.name, *canonical);
        }
    }

    #[test]
    fn test_bool_values() {
        assert_eq!(bool::parse("yes"), Ok(true));
        assert_eq!(bool::parse("no"), Ok(false));
        for bad in ["Yes", "true", "1", "on", "y"] {
            assert_eq!(bool::parse(bad), Err(Expected::Bool), "{bad}");
        }
    }

    #[test]
    fn test_uint_values() {
        assert_eq!(u32::parse("0"), Ok(0));
        assert_eq!(u32::parse("4294967295"), Ok(u32::MAX));
        assert_eq!(
            u32::parse("4294967296"),
            Err(Expected::UInt {
                max: u64::from(u32::MAX)
            })
        );
        for bad in ["-1", "+1", "1.5", "0x10", "ten", "1 000"] {
            assert!(u64::parse(bad).is_err(), "{bad}");
        }
        assert!(u64::parse("18446744073709551616").is_err());
    }

    #[test]
    fn test_choice_values() {
        assert_eq!(MountDev::parse("minimal"), Ok(MountDev::Minimal));
        assert_eq!(
            MountDev::parse("maybe"),
            Err(Expected::Choice(MountDev::WORDS))
        );
        assert_eq!(EnableOverlay::parse("driver"), Ok(EnableOverlay::Driver));
        assert!(EnableOverlay::Try.enabled() && !EnableOverlay::No.enabled());
        assert_eq!(
            SetuidMountSquashfs::parse("iflimited"),
            Ok(SetuidMountSquashfs::IfLimited)
        );
        assert_eq!(MemoryFsType::parse("ramfs"), Ok(MemoryFsType::Ramfs));
        assert!(MemoryFsType::parse("Tmpfs").is_err());
        assert_eq!(Kind::Choice(MountDev::WORDS).header(), "[yes/no/minimal]");
    }

    #[test]
    fn test_list_values() {
        let v = <Vec<String>>::parse(" alice ,bob,, carol").expect("names");
        assert_eq!(v, ["alice", "bob", "carol"]);
        assert!(<Vec<String>>::parse("alice smith").is_err());
        let mut slot = vec!["x".to_string()];
        <Vec<String>>::store(&mut slot, v);
        assert_eq!(slot.len(), 4);
        assert!(<Vec<PathBuf>>::parse("/scratch, tmp").is_err());
        assert_eq!(
            <Vec<PathBuf>>::parse("").expect("empty"),
            Vec::<PathBuf>::new()
        );
        assert_eq!(<Vec<PathBuf>>::new().render(), "unset");
    }

    #[test]
    fn test_bind_path_values() {
        let b = BindPath::parse_item("/etc/hosts").expect("plain");
        assert_eq!(
            (b.source.as_path(), b.dest.as_path()),
            (Path::new("/etc/hosts"), Path::new("/etc/hosts"))
        );
        assert!(!b.read_only);
        let b = BindPath::parse_item("/opt/a:/a:ro").expect("full");
        assert_eq!(b.dest, Path::new("/a"));
        assert!(b.read_only);
        assert_eq!(b.render_item(), "/opt/a:/a:ro");
        assert_eq!(
            BindPath::parse_item("/x:/y:rw").expect("rw").render_item(),
            "/x:/y"
        );
        for bad in ["etc/hosts", "/a:b", "/a:/b:rx", "/a:/b:ro:x", ":/b"] {
            assert!(BindPath::parse_item(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn test_search_path_values() {
        let p = SearchPath::parse("$PATH:/usr/bin::/bin").expect("valid");
        let entries: Vec<_> = p.entries().collect();
        assert_eq!(
            entries,
            [None, Some(Path::new("/usr/bin")), Some(Path::new("/bin"))]
        );
        assert!(SearchPath::parse("/usr/bin:bin").is_err());
        assert!(SearchPath::parse("$HOME/bin").is_err());
    }

    #[test]
    fn test_mem_size_values() {
        for good in ["1G", "500M", "64k", "1024"] {
            assert!(MemSize::parse(good).is_ok(), "{good}");
        }
        for bad in ["G", "1GB", "1.5G", "-1G", "1 G", "lots"] {
            assert!(MemSize::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn test_suggest() {
        assert_eq!(suggest("mount devs"), Some("mount dev"));
        assert_eq!(suggest("Mount Proc"), Some("mount proc"));
        assert_eq!(
            suggest("allow kernel squash"),
            Some("allow kernel squashfs")
        );
        assert_eq!(suggest("completely different"), None);
    }
}
