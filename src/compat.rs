//! Drop-in identity: how sifr behaves when invoked as `singularity` or `apptainer`, and how
//! `APPTAINER_*` / `SINGULARITY_*` control variables map onto `SIFR_*`.
//!
//! Workflow tools (spython, Snakemake, Nextflow) call `singularity` or `apptainer` and parse
//! `--version`; batch scripts set `APPTAINER_BIND`, `SINGULARITY_CACHEDIR` and friends. sifr
//! normalises those variables into `SIFR_*` once at start-up, so the rest of the program (and
//! clap's `env = "SIFR_..."` attributes) only ever looks at one name.

use std::ffi::OsString;

/// sifr's own version.
pub const SIFR_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The Apptainer release whose command-line contract sifr follows. Reported by the drop-in
/// names so that version checks in clients (Snakemake wants apptainer >= 1.0.0) pass.
pub const APPTAINER_COMPAT_VERSION: &str = "1.4.0";

/// The name sifr was invoked under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persona {
    Sifr,
    Apptainer,
    Singularity,
    /// `run-singularity IMAGE ARGS...`: what a SIF's launch script line runs.
    RunSingularity,
}

impl Persona {
    /// Decides the persona from `argv[0]`'s file name.
    pub fn from_argv0(argv0: &std::ffi::OsStr) -> Persona {
        let name = std::path::Path::new(argv0)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("sifr");
        match name {
            "apptainer" => Persona::Apptainer,
            "singularity" => Persona::Singularity,
            "run-singularity" | "run-apptainer" => Persona::RunSingularity,
            _ => Persona::Sifr,
        }
    }

    /// The command name used in messages and `--help`.
    pub fn command_name(self) -> &'static str {
        match self {
            Persona::Sifr => "sifr",
            Persona::Apptainer => "apptainer",
            Persona::Singularity | Persona::RunSingularity => "singularity",
        }
    }

    /// The `--version` line. The drop-in names print Apptainer's format
    /// (`apptainer version X.Y.Z`), as Apptainer's own `singularity` link does; the local
    /// version part names sifr so a human can still tell.
    pub fn version_line(self) -> String {
        match self {
            Persona::Sifr => format!("sifr version {SIFR_VERSION}"),
            _ => format!("apptainer version {APPTAINER_COMPAT_VERSION}+sifr.{SIFR_VERSION}"),
        }
    }
}

/// Prefixes accepted for runtime control variables, highest precedence first.
pub const ENV_PREFIXES: [&str; 3] = ["SIFR_", "APPTAINER_", "SINGULARITY_"];

/// Names Apptainer's CLI binds to one flag under several spellings (its `EnvKeys`), with
/// the `SIFR_` name that sifr's flag reads. Apptainer takes the first spelling set, in this
/// order, the `APPTAINER_` spellings before the `SINGULARITY_` ones.
pub const ALTERNATIVE_NAMES: &[(&str, &[&str])] = &[
    ("APP", &["APP", "APPNAME"]),
    ("OVERLAY", &["OVERLAY", "OVERLAYIMAGE"]),
    ("SCRATCH", &["SCRATCH", "SCRATCHDIR"]),
    ("PWD", &["CWD", "TARGET_CWD", "PWD", "TARGET_PWD"]),
    ("PID", &["PID", "UNSHARE_PID"]),
    ("IPC", &["IPC", "UNSHARE_IPC"]),
    ("NET", &["NET", "UNSHARE_NET"]),
    ("UTS", &["UTS", "UNSHARE_UTS"]),
    ("USERNS", &["USERNS", "UNSHARE_USERNS"]),
    ("NO_INIT", &["NOSHIMINIT", "NO_INIT"]),
    ("NO_HTTPS", &["NOHTTPS", "NO_HTTPS"]),
    ("AUTHFILE", &["AUTH_FILE", "AUTHFILE"]),
    ("CONFIG", &["CONFIG_FILE", "CONFIG"]),
    ("PULLFOLDER", &["PULLDIR", "PULLFOLDER"]),
    ("NO_NV", &["NV_OFF", "NO_NV"]),
    ("NO_ROCM", &["ROCM_OFF", "NO_ROCM"]),
];

/// Names Apptainer's flags also read without a prefix, after the prefixed spellings
/// (`DOCKER_HOST` too, but sifr has no `--docker-host`: the plain name is left alone).
const WITHOUT_PREFIX: [&str; 2] = ["DOCKER_USERNAME", "DOCKER_PASSWORD"];

/// Names whose value Apptainer does not trim: `BIND`/`BINDPATH` are appended to `-B`
/// as given. Every other flag-bound value is trimmed of surrounding white space.
const UNTRIMMED: [&str; 2] = ["BIND", "BINDPATH"];

/// Names bound to comma-separated list flags: Apptainer also trims each element
/// (`FOO="a , b"` is `a,b`).
const LIST_NAMES: [&str; 7] = [
    "NOENV",
    "CONTAINLIBS",
    "SCRATCH",
    "SCRATCHDIR",
    "NO_MOUNT",
    "SECURITY",
    "SECTION",
];

/// A value as Apptainer's flag binding reads it: trimmed (lists element by element), and
/// `None` when nothing is left (a blank variable counts as unset).
fn flag_value(key: &str, v: &OsString) -> Option<OsString> {
    let Some(text) = v.to_str() else {
        return Some(v.clone());
    };
    if UNTRIMMED.contains(&key) {
        return Some(v.clone());
    }
    let t = text.trim();
    if t.is_empty() {
        return None;
    }
    if LIST_NAMES.contains(&key) {
        let parts: Vec<&str> = t.split(',').map(str::trim).collect();
        return Some(OsString::from(parts.join(",")));
    }
    Some(OsString::from(t))
}

/// Computes the `SIFR_*` variables to set from `APPTAINER_*` / `SINGULARITY_*` ones.
///
/// Returns `(name, value)` pairs to set and warnings to print. A `SIFR_` variable that is
/// already set wins; otherwise `APPTAINER_` beats `SINGULARITY_`, with a warning when both
/// are set to different values (as Apptainer warns). The alternative spellings of
/// [`ALTERNATIVE_NAMES`] set the `SIFR_` name of their flag. Values are trimmed as
/// Apptainer trims them; a blank one counts as unset.
pub fn normalize_env(
    vars: impl IntoIterator<Item = (OsString, OsString)>,
) -> (Vec<(String, OsString)>, Vec<String>) {
    use std::collections::BTreeMap;
    let mut sifr: BTreeMap<String, OsString> = BTreeMap::new();
    let mut app: BTreeMap<String, OsString> = BTreeMap::new();
    let mut sing: BTreeMap<String, OsString> = BTreeMap::new();
    let mut plain: BTreeMap<String, OsString> = BTreeMap::new();
    for (k, v) in vars {
        let Some(k) = k.to_str() else { continue };
        if WITHOUT_PREFIX.contains(&k) {
            if let Some(v) = flag_value(k, &v) {
                plain.insert(k.to_string(), v);
            }
            continue;
        }
        if let Some(rest) = k.strip_prefix("SIFR_") {
            sifr.insert(rest.to_string(), v);
            continue;
        }
        let (map, rest) = if let Some(rest) = k.strip_prefix("APPTAINER_") {
            (&mut app, rest)
        } else if let Some(rest) = k.strip_prefix("SINGULARITY_") {
            (&mut sing, rest)
        } else {
            continue;
        };
        if let Some(v) = flag_value(rest, &v) {
            map.insert(rest.to_string(), v);
        }
    }
    let mut set: BTreeMap<String, OsString> = BTreeMap::new();
    let mut warnings = Vec::new();
    let keys: std::collections::BTreeSet<&String> = app.keys().chain(sing.keys()).collect();
    for key in keys {
        if sifr.contains_key(key) {
            continue;
        }
        let value = match (app.get(key), sing.get(key)) {
            (Some(a), Some(s)) => {
                if a != s {
                    warnings.push(format!(
                        "Both APPTAINER_{key} and SINGULARITY_{key} are set, \
                         using APPTAINER_{key}"
                    ));
                }
                a.clone()
            }
            (Some(a), None) => a.clone(),
            (None, Some(s)) => s.clone(),
            (None, None) => continue,
        };
        set.insert(key.clone(), value);
    }
    for (canonical, spellings) in ALTERNATIVE_NAMES {
        if sifr.contains_key(*canonical) {
            continue;
        }
        let first = spellings
            .iter()
            .find_map(|k| app.get(*k))
            .or_else(|| spellings.iter().find_map(|k| sing.get(*k)));
        if let Some(v) = first {
            set.insert(canonical.to_string(), v.clone());
        }
    }
    for (k, v) in plain {
        if !sifr.contains_key(&k) {
            set.entry(k).or_insert(v);
        }
    }
    let set = set
        .into_iter()
        .map(|(k, v)| (format!("SIFR_{k}"), v))
        .collect();
    (set, warnings)
}

/// A name Apptainer's CLI binds to a flag that sifr does not have, for the verbs where
/// Apptainer binds it.
#[derive(Debug, Clone, Copy)]
pub struct Unsupported {
    /// The names, without prefix.
    pub keys: &'static [&'static str],
    /// Apptainer's flag.
    pub flag: &'static str,
    /// The verbs.
    pub verbs: &'static [&'static str],
    /// A boolean flag: a false value asks for nothing and is accepted.
    pub boolean: bool,
}

const fn unsupported(
    keys: &'static [&'static str],
    flag: &'static str,
    verbs: &'static [&'static str],
    boolean: bool,
) -> Unsupported {
    Unsupported {
        keys,
        flag,
        verbs,
        boolean,
    }
}

// `instance` stands for `instance start|run`, which take the action flags.
const ACTION: &[&str] = &["exec", "run", "shell", "test", "instance"];
const BUILD: &[&str] = &["build"];
const PULL: &[&str] = &["pull"];
const BUILD_PULL: &[&str] = &["build", "pull"];
const ACTION_BUILD_PULL_PUSH: &[&str] = &[
    "exec", "run", "shell", "test", "instance", "build", "pull", "push",
];

/// The names bound to flags sifr lacks: set (to a true value for a boolean), each is
/// refused as the flag would be.
pub const UNSUPPORTED: &[Unsupported] = &[
    unsupported(&["FUSESPEC"], "--fusemount", ACTION, false),
    unsupported(&["COMPAT32"], "--compat32", ACTION, true),
    unsupported(&["UNDERLAY"], "--underlay", ACTION, true),
    unsupported(
        &["RUNSCRIPT_TIMEOUT"],
        "--runscript-timeout",
        &["run"],
        false,
    ),
    unsupported(&["NETNS_PATH"], "--netns-path", ACTION, false),
    unsupported(&["INTEL_HPU"], "--intel-hpu", ACTION, true),
    unsupported(
        &["DOCKER_HOST"],
        "--docker-host",
        ACTION_BUILD_PULL_PUSH,
        false,
    ),
    unsupported(&["BUILDKIT_HOST"], "--buildkit-host", BUILD, false),
    unsupported(&["DATA"], "--data", BUILD, true),
    unsupported(&["JSON"], "--json", BUILD, true),
    unsupported(&["LIBRARY"], "--library", BUILD_PULL, false),
    unsupported(&["NVCCLI"], "--nvccli", BUILD, true),
    unsupported(&["MOUNT"], "--mount", BUILD, false),
    unsupported(&["WRITABLE_TMPFS"], "--writable-tmpfs", BUILD, true),
    unsupported(&["IGNORE_USERNS"], "--ignore-userns", BUILD, true),
    unsupported(&["NO_CLEANUP"], "--no-cleanup", PULL, true),
    unsupported(&["ALLOW_UNSIGNED"], "--allow-unsigned", PULL, true),
    unsupported(
        &["ALLOW_UNAUTHENTICATED"],
        "--allow-unauthenticated",
        PULL,
        true,
    ),
    unsupported(&["REPRODUCIBLE"], "--reproducible", PULL, true),
    unsupported(&["SANDBOX"], "--sandbox", PULL, true),
];

/// Whether Apptainer's flag binding reads `value` as a true boolean (strconv.ParseBool's
/// spellings; sifr's flags also take yes/no/on/off, so those count too).
fn is_true(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "t" | "true" | "y" | "yes" | "on" => Some(true),
        "0" | "f" | "false" | "n" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// The refusal for a verb (`exec`, `run`, `shell`, `test`, `build`, `pull`) when the environment sets a name
/// bound to a flag sifr does not have: one line naming the variable, the flag and the fix.
pub fn refused_env(
    verb: &str,
    vars: impl IntoIterator<Item = (OsString, OsString)>,
) -> Option<String> {
    let vars: Vec<(String, String)> = vars
        .into_iter()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect();
    for u in UNSUPPORTED.iter().filter(|u| u.verbs.contains(&verb)) {
        for key in u.keys {
            for prefix in ["APPTAINER_", "SINGULARITY_"] {
                let name = format!("{prefix}{key}");
                let Some((_, value)) = vars.iter().find(|(k, _)| *k == name) else {
                    continue;
                };
                if value.trim().is_empty() || (u.boolean && is_true(value) == Some(false)) {
                    continue;
                }
                return Some(format!(
                    "{name}={value} asks for {}, which sifr does not support for {verb}: \
                     unset {name}",
                    u.flag
                ));
            }
        }
    }
    None
}

/// Applies [`normalize_env`] to the process environment.
///
/// Must be called at the very start of `main`, while the process has a single thread.
pub fn apply_env_aliases() -> Vec<String> {
    // An empty control variable means "not set", as in Apptainer (spython exports
    // SINGULARITY_PULLFOLDER=""; batch scripts clear SINGULARITY_TMPDIR= or _BIND=); left in
    // place, clap would take it for an option given without its value.
    for k in empty_control_vars(std::env::vars_os()) {
        // SAFETY: as below, before any thread exists.
        unsafe { std::env::remove_var(k) };
    }
    let (set, warnings) = normalize_env(std::env::vars_os());
    for (k, v) in set {
        // SAFETY: called at the start of main, before any thread exists, so no other thread
        // can read the environment concurrently.
        unsafe { std::env::set_var(k, v) };
    }
    warnings
}

/// The names of the `SIFR_*`, `APPTAINER_*` and `SINGULARITY_*` variables set to "".
pub fn empty_control_vars(vars: impl IntoIterator<Item = (OsString, OsString)>) -> Vec<OsString> {
    vars.into_iter()
        .filter(|(k, v)| {
            v.is_empty()
                && k.to_str().is_some_and(|k| {
                    ["SIFR_", "APPTAINER_", "SINGULARITY_"]
                        .iter()
                        .any(|p| k.starts_with(p))
                })
        })
        .map(|(k, _)| k)
        .collect()
}

/// Reads a runtime control variable by its suffix (`"BIND"` → `SIFR_BIND`, after
/// normalisation also covering `APPTAINER_BIND` and `SINGULARITY_BIND`).
pub fn control_var(suffix: &str) -> Option<String> {
    std::env::var(format!("SIFR_{suffix}")).ok()
}

/// The `APPTAINER_`/`SINGULARITY_` names set in `vars` that are refused for `exec` but that
/// Apptainer does not bind for `verb`. `build` drops them from its own environment before
/// it runs `%post`/`%test` through `sifr exec`, so that a name Apptainer's build ignores
/// does not fail the build's container steps.
pub fn exec_only_names(
    verb: &str,
    vars: impl IntoIterator<Item = (OsString, OsString)>,
) -> Vec<OsString> {
    vars.into_iter()
        .map(|(k, _)| k)
        .filter(|k| {
            let Some(k) = k.to_str() else { return false };
            let Some(bare) = k
                .strip_prefix("APPTAINER_")
                .or_else(|| k.strip_prefix("SINGULARITY_"))
            else {
                return false;
            };
            UNSUPPORTED.iter().any(|u| {
                u.keys.contains(&bare) && u.verbs.contains(&"exec") && !u.verbs.contains(&verb)
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        pairs
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect()
    }

    #[test]
    fn test_empty_control_vars_are_unset() {
        let v = os(&[
            ("SINGULARITY_PULLFOLDER", ""),
            ("APPTAINER_TMPDIR", ""),
            ("SIFR_BIND", ""),
            ("SINGULARITYENV_FOO", ""),
            ("SINGULARITY_BIND", "/x"),
            ("HOME", ""),
        ]);
        let mut got = empty_control_vars(v);
        got.sort();
        assert_eq!(
            got,
            vec![
                OsString::from("APPTAINER_TMPDIR"),
                OsString::from("SIFR_BIND"),
                OsString::from("SINGULARITY_PULLFOLDER"),
            ]
        );
    }

    #[test]
    fn test_persona_from_argv0() {
        assert_eq!(
            Persona::from_argv0("/usr/bin/apptainer".as_ref()),
            Persona::Apptainer
        );
        assert_eq!(
            Persona::from_argv0("singularity".as_ref()),
            Persona::Singularity
        );
        assert_eq!(Persona::from_argv0("./target/sifr".as_ref()), Persona::Sifr);
        assert_eq!(
            Persona::from_argv0("run-singularity".as_ref()),
            Persona::RunSingularity
        );
    }

    #[test]
    fn test_version_lines() {
        assert_eq!(
            Persona::Sifr.version_line(),
            format!("sifr version {SIFR_VERSION}")
        );
        let v = Persona::Singularity.version_line();
        assert!(v.starts_with("apptainer version 1."), "{v}");
    }

    #[test]
    fn test_normalize_env_precedence() {
        let (set, warn) = normalize_env(os(&[
            ("APPTAINER_BIND", "/a"),
            ("SINGULARITY_BIND", "/b"),
            ("SINGULARITY_CACHEDIR", "/c"),
            ("SIFR_DEBUG", "1"),
            ("APPTAINER_DEBUG", "0"),
            ("APPTAINERENV_FOO", "x"),
        ]));
        assert_eq!(
            set,
            vec![
                ("SIFR_BIND".to_string(), OsString::from("/a")),
                ("SIFR_CACHEDIR".to_string(), OsString::from("/c")),
            ]
        );
        assert_eq!(warn.len(), 1);
        assert!(warn[0].contains("APPTAINER_BIND"));
    }

    fn set_of(pairs: &[(&str, &str)]) -> std::collections::BTreeMap<String, OsString> {
        normalize_env(os(pairs)).0.into_iter().collect()
    }

    #[test]
    fn test_alternative_names_set_their_flags_name() {
        let set = set_of(&[
            ("APPTAINER_CWD", "/a"),
            ("SINGULARITY_UNSHARE_PID", "1"),
            ("SINGULARITY_APP", "s"),
            ("APPTAINER_APPNAME", "a"),
            ("APPTAINER_OVERLAYIMAGE", "/o.img"),
            ("SINGULARITY_SCRATCHDIR", "/scr"),
            ("APPTAINER_NOSHIMINIT", "1"),
            ("SINGULARITY_NOHTTPS", "1"),
            ("APPTAINER_AUTH_FILE", "/auth.json"),
            ("SINGULARITY_CONFIG_FILE", "/c.conf"),
            ("APPTAINER_PULLDIR", "/pulls"),
        ]);
        let get = |k: &str| set.get(k).and_then(|v| v.to_str());
        assert_eq!(get("SIFR_PWD"), Some("/a"));
        assert_eq!(get("SIFR_PID"), Some("1"));
        assert_eq!(
            get("SIFR_APP"),
            Some("a"),
            "APPTAINER_ spellings come first"
        );
        assert_eq!(get("SIFR_OVERLAY"), Some("/o.img"));
        assert_eq!(get("SIFR_SCRATCH"), Some("/scr"));
        assert_eq!(get("SIFR_NO_INIT"), Some("1"));
        assert_eq!(get("SIFR_NO_HTTPS"), Some("1"));
        assert_eq!(get("SIFR_AUTHFILE"), Some("/auth.json"));
        assert_eq!(get("SIFR_CONFIG"), Some("/c.conf"));
        assert_eq!(get("SIFR_PULLFOLDER"), Some("/pulls"));
        // The first spelling in Apptainer's order wins; a SIFR_ name set by the user wins
        // over all.
        let set = set_of(&[
            ("APPTAINER_TARGET_PWD", "/late"),
            ("APPTAINER_CWD", "/first"),
        ]);
        assert_eq!(set["SIFR_PWD"], OsString::from("/first"));
        let set = set_of(&[("SIFR_PWD", "/mine"), ("APPTAINER_CWD", "/first")]);
        assert!(!set.contains_key("SIFR_PWD"));
    }

    #[test]
    fn test_docker_credentials_are_also_read_without_prefix() {
        // Apptainer's --docker-username/--docker-password also read the plain names.
        let set = set_of(&[("DOCKER_USERNAME", "u"), ("DOCKER_PASSWORD", "p")]);
        assert_eq!(set["SIFR_DOCKER_USERNAME"], OsString::from("u"));
        assert_eq!(set["SIFR_DOCKER_PASSWORD"], OsString::from("p"));
        // A prefixed name wins over the plain one; DOCKER_HOST is never taken.
        let set = set_of(&[
            ("DOCKER_USERNAME", "plain"),
            ("SINGULARITY_DOCKER_USERNAME", "prefixed"),
            ("DOCKER_HOST", "tcp://x"),
        ]);
        assert_eq!(set["SIFR_DOCKER_USERNAME"], OsString::from("prefixed"));
        assert!(!set.contains_key("SIFR_DOCKER_HOST"));
    }

    #[test]
    fn test_values_are_trimmed_as_apptainer_trims_them() {
        let set = set_of(&[
            ("APPTAINER_CLEANENV", " true "),
            ("SINGULARITY_NOENV", " A , B,C "),
            ("APPTAINER_BIND", " /x "),
            ("APPTAINER_CONTAIN", "   "),
        ]);
        assert_eq!(set["SIFR_CLEANENV"], OsString::from("true"));
        assert_eq!(set["SIFR_NOENV"], OsString::from("A,B,C"));
        assert_eq!(
            set["SIFR_BIND"],
            OsString::from(" /x "),
            "BIND is appended as given"
        );
        assert!(!set.contains_key("SIFR_CONTAIN"), "blank is unset");
    }

    #[test]
    fn test_names_bound_to_flags_sifr_lacks_are_refused_per_verb() {
        let refused = |verb: &str, k: &str, v: &str| refused_env(verb, os(&[(k, v)]));
        let msg = refused("exec", "APPTAINER_UNDERLAY", "1").expect("refused");
        assert!(
            msg.contains("APPTAINER_UNDERLAY=1") && msg.contains("--underlay"),
            "{msg}"
        );
        assert!(msg.contains("unset APPTAINER_UNDERLAY"), "{msg}");
        assert_eq!(refused("exec", "APPTAINER_UNDERLAY", "false"), None);
        assert_eq!(refused("exec", "APPTAINER_UNDERLAY", ""), None);
        assert!(refused("shell", "SINGULARITY_UNDERLAY", "maybe").is_some());
        assert_eq!(refused("build", "APPTAINER_UNDERLAY", "1"), None);
        assert_eq!(refused("exec", "APPTAINER_RUNSCRIPT_TIMEOUT", "5"), None);
        assert!(refused("run", "APPTAINER_RUNSCRIPT_TIMEOUT", "5").is_some());
        assert!(refused("pull", "APPTAINER_SANDBOX", "1").is_some());
        assert_eq!(refused("build", "APPTAINER_SANDBOX", "1"), None);
        // Apptainer reads DOCKER_HOST without prefix too; sifr never refuses the plain name.
        assert_eq!(refused("pull", "DOCKER_HOST", "tcp://x"), None);
        assert!(refused("pull", "APPTAINER_DOCKER_HOST", "tcp://x").is_some());
    }

    #[test]
    fn test_build_drops_names_only_exec_refuses() {
        let vars = os(&[
            ("APPTAINER_UNDERLAY", "1"),
            ("SINGULARITY_COMPAT32", "1"),
            ("APPTAINER_MOUNT", "/x"),
            ("APPTAINER_DOCKER_LOGIN", "1"),
            ("APPTAINER_CLEANENV", "1"),
            ("UNDERLAY", "1"),
        ]);
        let mut got = exec_only_names("build", vars.clone());
        got.sort();
        assert_eq!(
            got,
            [
                OsString::from("APPTAINER_UNDERLAY"),
                OsString::from("SINGULARITY_COMPAT32")
            ]
        );
        assert!(exec_only_names("exec", vars).is_empty());
    }

    /// Every name Apptainer 1.4's CLI binds (its flags' EnvKeys, cmd/internal/cli/*.go) for
    /// the verbs sifr has: a flag of that verb reads its SIFR_ name, or it is refused.
    #[test]
    fn test_every_apptainer_name_for_sifrs_verbs_is_bound_or_refused() {
        use clap::CommandFactory;
        const ACTIONS: &[&str] = &[
            "APP",
            "APPNAME",
            "BIND",
            "MOUNT",
            "HOME",
            "OVERLAY",
            "OVERLAYIMAGE",
            "SCRATCH",
            "SCRATCHDIR",
            "WORKDIR",
            "DISABLE_CACHE",
            "CWD",
            "TARGET_CWD",
            "PWD",
            "TARGET_PWD",
            "HOSTNAME",
            "NETWORK",
            "NETWORK_ARGS",
            "DNS",
            "SECURITY",
            "APPLY_CGROUPS",
            "CONTAINLIBS",
            "FUSESPEC",
            "TMPDIR",
            "FAKEROOT",
            "CLEANENV",
            "COMPAT",
            "CONTAIN",
            "CONTAINALL",
            "NV",
            "NVCCLI",
            "COMPAT32",
            "ROCM",
            "WRITABLE",
            "WRITABLE_TMPFS",
            "NO_HOME",
            "NO_MOUNT",
            "NOSHIMINIT",
            "PID",
            "UNSHARE_PID",
            "NO_PID",
            "IPC",
            "UNSHARE_IPC",
            "NET",
            "UNSHARE_NET",
            "UTS",
            "UNSHARE_UTS",
            "USERNS",
            "UNSHARE_USERNS",
            "KEEP_PRIVS",
            "NO_PRIVS",
            "ADD_CAPS",
            "DROP_CAPS",
            "ALLOW_SETUID",
            "NOENV",
            "ENV_FILE",
            "NO_UMASK",
            "NO_EVAL",
            "BLKIO_WEIGHT",
            "BLKIO_WEIGHT_DEVICE",
            "CPU_SHARES",
            "CPUSET_CPUS",
            "CPUSET_MEMS",
            "MEMORY",
            "MEMORY_RESERVATION",
            "MEMORY_SWAP",
            "OOM_KILL_DISABLE",
            "PIDS_LIMIT",
            "UNSQUASH",
            "IGNORE_SUBUID",
            "IGNORE_FAKEROOT_COMMAND",
            "IGNORE_USERNS",
            "UNDERLAY",
            "SHARENS",
            "INTEL_HPU",
            "NOHTTPS",
            "NO_HTTPS",
            "DOCKER_USERNAME",
            "DOCKER_PASSWORD",
            "DOCKER_LOGIN",
            "DOCKER_HOST",
            "AUTH_FILE",
        ];
        const GLOBAL: &[&str] = &[
            "DEBUG",
            "NOCOLOR",
            "SILENT",
            "QUIET",
            "VERBOSE",
            "CONFIG_FILE",
        ];
        let table: &[(&[&str], &[&str])] = &[
            (&["exec"], ACTIONS),
            (&["test"], ACTIONS),
            (&["shell"], &["SHELL"]),
            (&["run"], &["RUNSCRIPT_TIMEOUT"]),
            (
                &["build"],
                &[
                    "SANDBOX",
                    "DATA",
                    "SECTION",
                    "JSON",
                    "UPDATE",
                    "NOTEST",
                    "BUILD_ARCH",
                    "BUILD_ARCH_VARIANT",
                    "LIBRARY",
                    "DISABLE_CACHE",
                    "NO_CLEANUP",
                    "FAKEROOT",
                    "FIXPERMS",
                    "MKSQUASHFS_ARGS",
                    "NVCCLI",
                    "MOUNT",
                    "WRITABLE_TMPFS",
                    "USERNS",
                    "IGNORE_SUBUID",
                    "IGNORE_FAKEROOT_COMMAND",
                    "IGNORE_PROOT",
                    "IGNORE_USERNS",
                    "REPRODUCIBLE",
                    "FORCE",
                    "NOHTTPS",
                    "NO_HTTPS",
                    "TMPDIR",
                    "DOCKER_USERNAME",
                    "DOCKER_PASSWORD",
                    "DOCKER_LOGIN",
                    "DOCKER_HOST",
                    "BUILDKIT_HOST",
                    "AUTH_FILE",
                ],
            ),
            (
                &["pull"],
                &[
                    "FORCE",
                    "LIBRARY",
                    "PULL_NAME",
                    "NOHTTPS",
                    "NO_HTTPS",
                    "TMPDIR",
                    "DISABLE_CACHE",
                    "DOCKER_HOST",
                    "DOCKER_USERNAME",
                    "DOCKER_PASSWORD",
                    "DOCKER_LOGIN",
                    "NO_CLEANUP",
                    "ALLOW_UNSIGNED",
                    "ALLOW_UNAUTHENTICATED",
                    "PULL_ARCH",
                    "PULL_ARCH_VARIANT",
                    "AUTH_FILE",
                    "REPRODUCIBLE",
                    "SANDBOX",
                ],
            ),
            (
                &["push"],
                &[
                    "LIBRARY",
                    "ALLOW_UNSIGNED",
                    "NOHTTPS",
                    "NO_HTTPS",
                    "DOCKER_HOST",
                    "DOCKER_USERNAME",
                    "DOCKER_PASSWORD",
                    "AUTH_FILE",
                ],
            ),
            (&["instance", "start"], ACTIONS),
            (&["instance", "start"], &["PID_FILE"]),
            (&["instance", "run"], ACTIONS),
            (&["instance", "run"], &["PID_FILE"]),
            (&["instance", "stop"], &["USER", "ALL", "FORCE", "SIGNAL"]),
            (&["instance", "stats"], &["USER"]),
            (&["instance", "list"], &["USER", "JSON", "LOGS", "ALL"]),
            (&["key", "list"], &["SECRET"]),
            (&["key", "search"], &["URL"]),
            (&["key", "pull"], &["URL"]),
            (&["key", "push"], &["URL"]),
            (
                &["keyserver", "login"],
                &["LOGIN_USERNAME", "LOGIN_PASSWORD"],
            ),
            (&["overlay", "create"], &["SPARSE", "FAKEROOT", "TMPDIR"]),
            (&["sign"], &["SIGN_KEY"]),
            (
                &["verify"],
                &[
                    "VERIFY_CERTIFICATE",
                    "VERIFY_INTERMEDIATES",
                    "VERIFY_ROOTS",
                    "VERIFY_OCSP",
                    "VERIFY_KEY",
                    "LOCAL_VERIFY",
                    "URL",
                ],
            ),
        ];
        // Read elsewhere than a clap attribute: PULLDIR/PULLFOLDER by `pull` itself (a blank
        // value means unset there), BIND, BINDPATH and MOUNT by the binds code (appended to
        // the flags: cmd::action::user_binds).
        let elsewhere = ["PULLDIR", "PULLFOLDER", "BIND", "BINDPATH", "MOUNT"];
        let root = crate::cli::Cli::command();
        let envs_of = |cmd: &clap::Command| -> Vec<String> {
            cmd.get_arguments()
                .chain(root.get_arguments())
                .filter_map(|a| a.get_env()?.to_str().map(str::to_string))
                .collect()
        };
        let mut missing = Vec::new();
        for (path, keys) in table {
            let mut cmd = &root;
            for p in *path {
                cmd = cmd.find_subcommand(p).expect("sifr has the verb");
            }
            let envs = envs_of(cmd);
            for key in keys.iter().chain(GLOBAL) {
                let canonical = ALTERNATIVE_NAMES
                    .iter()
                    .find(|(_, spellings)| spellings.contains(key))
                    .map_or(*key, |(c, _)| *c);
                let bound = envs.contains(&format!("SIFR_{canonical}"));
                let refused = UNSUPPORTED
                    .iter()
                    .any(|u| u.keys.contains(key) && u.verbs.contains(&path[0]));
                if bound && refused {
                    missing.push(format!("{path:?} {key}: both bound and refused"));
                } else if !bound && !refused && !elsewhere.contains(key) {
                    missing.push(format!("{path:?} {key}"));
                }
            }
        }
        assert!(missing.is_empty(), "not bound: {missing:#?}");
    }

    #[test]
    fn test_normalize_env_same_value_no_warning() {
        let (set, warn) = normalize_env(os(&[("APPTAINER_X", "1"), ("SINGULARITY_X", "1")]));
        assert_eq!(set.len(), 1);
        assert!(warn.is_empty());
    }
}
