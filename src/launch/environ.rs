//! The container's environment: which host variables pass, which are injected, and what the
//! runtime always sets (apptainer-contract.md §4.3).
//!
//! Pure computation. The result has two parts because of precedence: `base` is the
//! environment the action starts with (host variables and runtime variables); `inject` holds
//! the `SIFRENV_`/`APPTAINERENV_`/`SINGULARITYENV_`/`--env`/`--env-file` variables, applied
//! *after* the image's `/.singularity.d/env` scripts so that they override the image:
//! injected > image > host.

use std::collections::BTreeMap;

use super::shenv::ShellEnv;

/// The default PATH inside a container, before the image's environment scripts run.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Prefixes that inject a variable into the container, highest precedence first.
const INJECT_PREFIXES: [&str; 3] = ["SIFRENV_", "APPTAINERENV_", "SINGULARITYENV_"];

/// Prefixes of runtime control variables, never passed into the container.
const CONTROL_PREFIXES: [&str; 3] = ["SIFR_", "APPTAINER_", "SINGULARITY_"];

/// Host variables that `--cleanenv` keeps.
const CLEANENV_KEEP: [&str; 11] = [
    "TERM",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "all_proxy",
    "ftp_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
    "FTP_PROXY",
];

/// What the environment depends on.
#[derive(Debug, Clone, Default)]
pub struct EnvInputs {
    /// The host environment (variables that are not UTF-8 are dropped by the caller).
    pub host: Vec<(String, String)>,
    pub cleanenv: bool,
    /// `--env K=V` values, in order.
    pub env_flags: Vec<String>,
    /// `--env-file` files: (path for messages, contents), in order.
    pub env_files: Vec<(String, String)>,
    /// `--no-env` names.
    pub no_env: Vec<String>,
    /// Runtime variables set under both `APPTAINER_` and `SINGULARITY_` prefixes
    /// (e.g. `("CONTAINER", "/path/img.sif")`).
    pub runtime: Vec<(String, String)>,
    /// Variables the runtime sets as they are (HOME, ...).
    pub fixed: Vec<(String, String)>,
}

/// The computed environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerEnv {
    /// The environment the action process starts with.
    pub base: Vec<(String, String)>,
    /// Variables applied after the image's environment scripts, in order.
    pub inject: Vec<(String, String)>,
    /// Messages for the user (one line each).
    pub warnings: Vec<String>,
}

/// Errors in user-supplied environment settings.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvError {
    #[error("--env {0:?}: expected NAME=VALUE")]
    BadEnvFlag(String),
    #[error("--env {0:?}: {1:?} is not a valid variable name")]
    BadName(String, String),
}

fn is_valid_name(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(ch) if ch.is_ascii_alphabetic() || ch == '_')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
}

/// The variables injected through the host's prefixes (`APPTAINERENV_`, `SINGULARITYENV_`,
/// ...): the lower rank wins, with a warning when both spellings give different values.
fn from_prefixes(
    host: &BTreeMap<&str, &str>,
    warnings: &mut Vec<String>,
) -> BTreeMap<String, String> {
    let mut from_prefix: BTreeMap<String, (usize, String)> = BTreeMap::new();
    for (k, v) in host {
        for (rank, p) in INJECT_PREFIXES.iter().enumerate() {
            if let Some(name) = k.strip_prefix(p) {
                if name.is_empty() {
                    continue;
                }
                match from_prefix.get(name) {
                    Some((r, existing)) if *r < rank => {
                        if existing != v && rank == 2 && *r == 1 {
                            warnings.push(format!(
                                "APPTAINERENV_{name} and SINGULARITYENV_{name} are both set, \
                                 using APPTAINERENV_{name}"
                            ));
                        }
                    }
                    Some((r, existing)) if *r > rank => {
                        if existing != *v && rank == 1 && *r == 2 {
                            warnings.push(format!(
                                "APPTAINERENV_{name} and SINGULARITYENV_{name} are both set, \
                                 using APPTAINERENV_{name}"
                            ));
                        }
                        from_prefix.insert(name.to_string(), (rank, v.to_string()));
                    }
                    Some(_) => {}
                    None => {
                        from_prefix.insert(name.to_string(), (rank, v.to_string()));
                    }
                }
            }
        }
    }
    from_prefix
        .into_iter()
        .map(|(name, (_, v))| (name, v))
        .collect()
}

/// Computes the container environment.
pub fn compute(inputs: &EnvInputs) -> Result<ContainerEnv, EnvError> {
    let mut warnings = Vec::new();
    let host: BTreeMap<&str, &str> = inputs
        .host
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();

    // 1. Host variables that pass through.
    let mut base: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in &host {
        let blocked = *k == "HOME"
            || *k == "PATH"
            || *k == "LD_LIBRARY_PATH"
            || CONTROL_PREFIXES.iter().any(|p| k.starts_with(p))
            || INJECT_PREFIXES.iter().any(|p| k.starts_with(p))
            || inputs.no_env.iter().any(|n| n == k);
        let kept_by_cleanenv = CLEANENV_KEEP.contains(k);
        if blocked || (inputs.cleanenv && !kept_by_cleanenv) {
            continue;
        }
        base.insert(k.to_string(), v.to_string());
    }
    if inputs.cleanenv {
        base.insert("LANG".into(), "C".into());
    }

    // 2. Injected variables: the host prefixes, then --env-file, then --env (later wins).
    let mut inject: BTreeMap<String, String> = BTreeMap::new();
    inject.extend(from_prefixes(&host, &mut warnings));
    for (path, contents) in &inputs.env_files {
        // Evaluated with the host environment visible, as Apptainer does.
        let mut sh = ShellEnv::from_env(host.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        // Every variable the file sets counts, exported or not (Docker-style env files).
        let before: BTreeMap<String, String> = sh.all().into_iter().collect();
        for note in sh.eval(contents) {
            warnings.push(format!("--env-file {path}: {note}"));
        }
        for (k, v) in sh.all() {
            if before.get(&k) != Some(&v) {
                inject.insert(k, v);
            }
        }
    }
    for flag in &inputs.env_flags {
        let (k, v) = flag
            .split_once('=')
            .ok_or_else(|| EnvError::BadEnvFlag(flag.clone()))?;
        if !is_valid_name(k) {
            return Err(EnvError::BadName(flag.clone(), k.to_string()));
        }
        inject.insert(k.to_string(), v.to_string());
    }

    // 3. Injected names the runtime owns, and the PATH specials.
    let mut inject_out = Vec::new();
    for (k, v) in inject {
        match k.as_str() {
            "HOME" | "SHELL" | "APPNAME" => {
                warnings.push(format!(
                    "Overriding {k} environment variable with APPTAINERENV_{k} is not \
                     permitted"
                ));
            }
            "PATH" => inject_out.push(("SING_USER_DEFINED_PATH".to_string(), v)),
            "PREPEND_PATH" => inject_out.push(("SING_USER_DEFINED_PREPEND_PATH".to_string(), v)),
            "APPEND_PATH" => inject_out.push(("SING_USER_DEFINED_APPEND_PATH".to_string(), v)),
            _ if !is_valid_name(&k) => {
                warnings.push(format!(
                    "ignoring injected variable with invalid name {k:?}"
                ));
            }
            _ => inject_out.push((k, v)),
        }
    }

    // 4. What the runtime always sets.
    for (suffix, value) in &inputs.runtime {
        for p in ["APPTAINER_", "SINGULARITY_"] {
            base.insert(format!("{p}{suffix}"), value.clone());
        }
    }
    base.insert("PATH".into(), DEFAULT_PATH.into());
    for (k, v) in &inputs.fixed {
        base.insert(k.clone(), v.clone());
    }

    Ok(ContainerEnv {
        base: base.into_iter().collect(),
        inject: inject_out,
        warnings,
    })
}

/// Quotes a value for the action script: double quotes (the shell expands `$VAR` and command
/// substitutions, as Apptainer's default evaluation does), or single quotes with `--no-eval`.
pub fn shell_quote(value: &str, evaluate: bool) -> String {
    if evaluate {
        let mut s = String::from("\"");
        for c in value.chars() {
            if matches!(c, '"' | '\\') {
                s.push('\\');
            }
            s.push(c);
        }
        s.push('"');
        s
    } else {
        format!("'{}'", value.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(host: &[(&str, &str)]) -> EnvInputs {
        EnvInputs {
            host: host
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    fn get<'a>(v: &'a [(String, String)], k: &str) -> Option<&'a str> {
        v.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }

    #[test]
    fn test_host_passthrough_and_blocked() {
        let mut i = inputs(&[
            ("OMP_NUM_THREADS", "4"),
            ("HOME", "/home/u"),
            ("PATH", "/host/bin"),
            ("LD_LIBRARY_PATH", "/host/lib"),
            ("APPTAINER_BIND", "/x"),
            ("SINGULARITYENV_FOO", "bar"),
            ("SECRET", "s"),
        ]);
        i.no_env = vec!["SECRET".into()];
        i.fixed = vec![("HOME".into(), "/home/u".into())];
        let e = compute(&i).expect("ok");
        assert_eq!(get(&e.base, "OMP_NUM_THREADS"), Some("4"));
        assert_eq!(get(&e.base, "PATH"), Some(DEFAULT_PATH));
        assert_eq!(get(&e.base, "HOME"), Some("/home/u"));
        assert_eq!(get(&e.base, "LD_LIBRARY_PATH"), None);
        assert_eq!(get(&e.base, "APPTAINER_BIND"), None);
        assert_eq!(get(&e.base, "SINGULARITYENV_FOO"), None);
        assert_eq!(get(&e.base, "SECRET"), None);
        assert_eq!(e.inject, vec![("FOO".to_string(), "bar".to_string())]);
    }

    #[test]
    fn test_cleanenv_keeps_term_and_proxies() {
        let mut i = inputs(&[("TERM", "xterm"), ("https_proxy", "p"), ("FOO", "1")]);
        i.cleanenv = true;
        let e = compute(&i).expect("ok");
        assert_eq!(get(&e.base, "TERM"), Some("xterm"));
        assert_eq!(get(&e.base, "https_proxy"), Some("p"));
        assert_eq!(get(&e.base, "FOO"), None);
        assert_eq!(get(&e.base, "LANG"), Some("C"));
    }

    #[test]
    fn test_injection_precedence_and_specials() {
        let mut i = inputs(&[
            ("SINGULARITYENV_A", "sing"),
            ("APPTAINERENV_A", "app"),
            ("SIFRENV_B", "sifr"),
            ("APPTAINERENV_B", "app"),
            ("APPTAINERENV_PREPEND_PATH", "/pre"),
            ("SINGULARITYENV_APPEND_PATH", "/post"),
            ("APPTAINERENV_HOME", "/evil"),
            ("APPTAINERENV_C", "from-prefix"),
        ]);
        i.env_files = vec![("f".into(), "C=from-file\nD=\"$HOST_VAR\"x\n".into())];
        i.env_flags = vec!["C=from-flag".into()];
        let e = compute(&i).expect("ok");
        assert_eq!(get(&e.inject, "A"), Some("app"));
        assert_eq!(get(&e.inject, "B"), Some("sifr"));
        assert_eq!(get(&e.inject, "C"), Some("from-flag"));
        assert_eq!(get(&e.inject, "D"), Some("x"), "plain assignments count");
        assert_eq!(
            get(&e.inject, "SING_USER_DEFINED_PREPEND_PATH"),
            Some("/pre")
        );
        assert_eq!(
            get(&e.inject, "SING_USER_DEFINED_APPEND_PATH"),
            Some("/post")
        );
        assert_eq!(get(&e.inject, "HOME"), None);
        assert!(e.warnings.iter().any(|w| w.contains("HOME")));
        assert!(e.warnings.iter().any(|w| w.contains("APPTAINERENV_A")));
    }

    #[test]
    fn test_env_file_exports_and_flags_errors() {
        let mut i = inputs(&[("HOST_VAR", "h")]);
        i.env_files = vec![("f".into(), "export D=\"$HOST_VAR\"x\n".into())];
        let e = compute(&i).expect("ok");
        assert_eq!(get(&e.inject, "D"), Some("hx"));
        let mut i = inputs(&[]);
        i.env_flags = vec!["NOEQUALS".into()];
        assert_eq!(compute(&i), Err(EnvError::BadEnvFlag("NOEQUALS".into())));
        i.env_flags = vec!["1X=2".into()];
        assert!(matches!(compute(&i), Err(EnvError::BadName(..))));
    }

    #[test]
    fn test_runtime_vars_under_both_prefixes() {
        let mut i = inputs(&[]);
        i.runtime = vec![("CONTAINER".into(), "/img.sif".into())];
        let e = compute(&i).expect("ok");
        assert_eq!(get(&e.base, "APPTAINER_CONTAINER"), Some("/img.sif"));
        assert_eq!(get(&e.base, "SINGULARITY_CONTAINER"), Some("/img.sif"));
    }

    #[test]
    fn test_shell_quote() {
        assert_eq!(shell_quote("a \"b\" $X", true), "\"a \\\"b\\\" $X\"");
        assert_eq!(shell_quote("it's $X", false), "'it'\\''s $X'");
    }
}
