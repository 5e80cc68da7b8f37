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

/// Computes the `SIFR_*` variables to set from `APPTAINER_*` / `SINGULARITY_*` ones.
///
/// Returns `(name, value)` pairs to set and warnings to print. A `SIFR_` variable that is
/// already set wins; otherwise `APPTAINER_` beats `SINGULARITY_`, with a warning when both
/// are set to different values (as Apptainer warns).
pub fn normalize_env(
    vars: impl IntoIterator<Item = (OsString, OsString)>,
) -> (Vec<(String, OsString)>, Vec<String>) {
    use std::collections::BTreeMap;
    let mut sifr: BTreeMap<String, OsString> = BTreeMap::new();
    let mut app: BTreeMap<String, OsString> = BTreeMap::new();
    let mut sing: BTreeMap<String, OsString> = BTreeMap::new();
    for (k, v) in vars {
        let Some(k) = k.to_str() else { continue };
        if let Some(rest) = k.strip_prefix("SIFR_") {
            sifr.insert(rest.to_string(), v);
        } else if let Some(rest) = k.strip_prefix("APPTAINER_") {
            app.insert(rest.to_string(), v);
        } else if let Some(rest) = k.strip_prefix("SINGULARITY_") {
            sing.insert(rest.to_string(), v);
        }
    }
    let mut set = Vec::new();
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
        set.push((format!("SIFR_{key}"), value));
    }
    (set, warnings)
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

    #[test]
    fn test_normalize_env_same_value_no_warning() {
        let (set, warn) = normalize_env(os(&[("APPTAINER_X", "1"), ("SINGULARITY_X", "1")]));
        assert_eq!(set.len(), 1);
        assert!(warn.is_empty());
    }
}
