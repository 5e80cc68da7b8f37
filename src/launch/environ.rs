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

/// Names an `--env-file` never sets (the shell's read-only variables; Apptainer's
/// `env.ReadOnlyVars`).
const FILE_READ_ONLY: [&str; 7] = ["EUID", "GID", "HOME", "IFS", "OPTIND", "PWD", "UID"];

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
    #[error("--env {0:?}: {1:?} must be formatted as NAME=VALUE")]
    BadEnvFlag(String, String),
    #[error("--env {0:?}: {1:?} is not a valid variable name")]
    BadName(String, String),
    #[error("--env {0:?}: {1}; quote a pair holding commas as a whole: \"NAME=a,b\",OTHER=c")]
    BadCsv(String, &'static str),
}

/// The directory Apptainer appends to an injected `LD_LIBRARY_PATH` (its engine's
/// injection does, so that bound GPU libraries stay visible).
pub const LIBS_DIR: &str = "/.singularity.d/libs";

/// Parses one `--env` value as Apptainer's flag (pflag's string-to-string map) does: with
/// one `=`, the whole value is one `NAME=VALUE` (outer double quotes trimmed); with more,
/// it is one CSV record of `NAME=VALUE` fields, so `A=1,B=2` sets two variables, a value
/// may itself hold `=`, and a quoted field (`"A=x,y"`) may hold commas.
pub fn parse_env_flag(flag: &str) -> Result<Vec<(String, String)>, EnvError> {
    let fields = match flag.matches('=').count() {
        0 => return Err(EnvError::BadEnvFlag(flag.to_string(), flag.to_string())),
        1 => vec![flag.trim_matches('"').to_string()],
        _ => csv_record(flag).map_err(|why| EnvError::BadCsv(flag.to_string(), why))?,
    };
    fields
        .into_iter()
        .map(|f| match f.split_once('=') {
            Some((k, v)) => Ok((k.to_string(), v.to_string())),
            None => Err(EnvError::BadEnvFlag(flag.to_string(), f)),
        })
        .collect()
}

/// The first record of `s` read as Go's `encoding/csv` reads it (comma separated; a field
/// that starts with `"` is quoted, `""` inside it is one `"`; a bare `"` elsewhere is an
/// error; an unquoted newline ends the record).
fn csv_record(s: &str) -> Result<Vec<String>, &'static str> {
    let mut fields = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err("extraneous or missing \" in quoted-field"),
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                }
            }
            match chars.next() {
                None | Some('\n') => {
                    fields.push(field);
                    return Ok(fields);
                }
                Some(',') => fields.push(field),
                Some('\r') if matches!(chars.peek(), None | Some('\n')) => {
                    fields.push(field);
                    return Ok(fields);
                }
                Some(_) => return Err("extraneous or missing \" in quoted-field"),
            }
        } else {
            loop {
                match chars.next() {
                    None | Some('\n') => {
                        fields.push(field.trim_end_matches('\r').to_string());
                        return Ok(fields);
                    }
                    Some(',') => break,
                    Some('"') => return Err("bare \" in non-quoted-field"),
                    Some(c) => field.push(c),
                }
            }
            fields.push(field);
        }
    }
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
        // Evaluated as Apptainer does: the host environment (and APPTAINER_IMAGE) visible
        // but not exported, every assignment exported; what the file set is what it
        // exports, a value equal to the host's included. The shell's read-only names never
        // come from a file.
        let image = inputs
            .runtime
            .iter()
            .find(|(k, _)| k == "CONTAINER")
            .map(|(_, v)| ("APPTAINER_IMAGE".to_string(), v.clone()));
        let mut sh = ShellEnv::allexport_over(
            host.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .chain(image),
        );
        for note in sh.eval(contents) {
            warnings.push(format!("--env-file {path}: {note}"));
        }
        for (k, v) in sh.exported() {
            if !FILE_READ_ONLY.contains(&k.as_str()) {
                inject.insert(k, v);
            }
        }
    }
    for flag in &inputs.env_flags {
        for (k, v) in parse_env_flag(flag)? {
            if k.is_empty() {
                // Apptainer skips a pair without a name, with a warning.
                warnings.push(format!(
                    "Ignore environment variable {k}={v}: variable name missing"
                ));
                continue;
            }
            if !is_valid_name(&k) {
                return Err(EnvError::BadName(flag.clone(), k));
            }
            inject.insert(k, v);
        }
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
            // Apptainer's engine never injects these (the shell owns them).
            "UID" | "GID" => {}
            "PATH" => inject_out.push(("SING_USER_DEFINED_PATH".to_string(), v)),
            "LD_LIBRARY_PATH" if !v.is_empty() => {
                inject_out.push((k, format!("{v}:{LIBS_DIR}")));
            }
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

/// Quotes a value for the action script as Apptainer's engine does: double quotes with only
/// `"` escaped (the shell expands `$VAR` and command substitutions and consumes one level of
/// backslash escaping, so `\$X` stays a literal `$X`), or single quotes with `--no-eval`.
pub fn shell_quote(value: &str, evaluate: bool) -> String {
    if evaluate {
        format!("\"{}\"", value.replace('"', "\\\""))
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
        assert_eq!(
            compute(&i),
            Err(EnvError::BadEnvFlag("NOEQUALS".into(), "NOEQUALS".into()))
        );
        i.env_flags = vec!["1X=2".into()];
        assert!(matches!(compute(&i), Err(EnvError::BadName(..))));
    }

    #[test]
    fn test_env_file_injects_what_it_sets_as_apptainer_evaluates_it() {
        let mut i = inputs(&[("FOO", "1"), ("OTHER", "o")]);
        i.runtime = vec![("CONTAINER".into(), "/img.sif".into())];
        i.env_files = vec![(
            "f".into(),
            "FOO=1\nexport BAR=\"$FOO-$APPTAINER_IMAGE\"\nUID=5\nHOME=/x\n".into(),
        )];
        let e = compute(&i).expect("ok");
        // FOO is set to the host's value: the file set it, so it is injected.
        assert_eq!(get(&e.inject, "FOO"), Some("1"));
        assert_eq!(get(&e.inject, "BAR"), Some("1-/img.sif"));
        assert_eq!(get(&e.inject, "OTHER"), None);
        assert_eq!(get(&e.inject, "UID"), None);
        assert_eq!(get(&e.inject, "HOME"), None);
        assert!(
            !e.warnings.iter().any(|w| w.contains("HOME")),
            "a file's HOME is dropped silently: {:?}",
            e.warnings
        );
    }

    #[test]
    fn test_runtime_vars_under_both_prefixes() {
        let mut i = inputs(&[]);
        i.runtime = vec![("CONTAINER".into(), "/img.sif".into())];
        let e = compute(&i).expect("ok");
        assert_eq!(get(&e.base, "APPTAINER_CONTAINER"), Some("/img.sif"));
        assert_eq!(get(&e.base, "SINGULARITY_CONTAINER"), Some("/img.sif"));
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn test_env_flag_parses_as_apptainers_string_to_string_flag() {
        // One '=': one variable, commas and all; outer double quotes trimmed.
        assert_eq!(parse_env_flag("A=x,y"), Ok(pairs(&[("A", "x,y")])));
        assert_eq!(parse_env_flag("\"A=x\""), Ok(pairs(&[("A", "x")])));
        // More: a CSV record of pairs; a value may hold '='; quoted fields hold commas.
        assert_eq!(
            parse_env_flag("B=1,C=a=b"),
            Ok(pairs(&[("B", "1"), ("C", "a=b")]))
        );
        assert_eq!(
            parse_env_flag("\"D=q,r\",E=s,\"F=say \"\"hi\"\"\""),
            Ok(pairs(&[("D", "q,r"), ("E", "s"), ("F", "say \"hi\"")]))
        );
        assert_eq!(parse_env_flag("G=,H="), Ok(pairs(&[("G", ""), ("H", "")])));
        // Errors, each naming what is wrong.
        assert_eq!(
            parse_env_flag("NOEQUALS"),
            Err(EnvError::BadEnvFlag("NOEQUALS".into(), "NOEQUALS".into()))
        );
        assert_eq!(
            parse_env_flag("A=1,B,C=2"),
            Err(EnvError::BadEnvFlag("A=1,B,C=2".into(), "B".into()))
        );
        assert!(matches!(
            parse_env_flag("A=1,B=x\"y"),
            Err(EnvError::BadCsv(_, _))
        ));
        assert!(matches!(
            parse_env_flag("\"A=1,B=2"),
            Err(EnvError::BadCsv(_, _))
        ));
        // A pair without a name is skipped with a warning, as Apptainer does.
        let mut i = inputs(&[]);
        i.env_flags = vec!["=v,K=1".into()];
        let e = compute(&i).expect("ok");
        assert_eq!(e.inject, pairs(&[("K", "1")]));
        assert!(
            e.warnings
                .iter()
                .any(|w| w.contains("variable name missing"))
        );
    }

    #[test]
    fn test_injected_ld_library_path_gets_libs_dir_and_uid_is_never_injected() {
        let mut i = inputs(&[
            ("APPTAINERENV_LD_LIBRARY_PATH", "/opt/lib"),
            ("APPTAINERENV_UID", "0"),
            ("SINGULARITYENV_GID", "0"),
            ("LD_LIBRARY_PATH", "/host/lib"),
        ]);
        let e = compute(&i).expect("ok");
        assert_eq!(
            e.inject,
            pairs(&[("LD_LIBRARY_PATH", "/opt/lib:/.singularity.d/libs")])
        );
        assert_eq!(get(&e.base, "LD_LIBRARY_PATH"), None);
        // An empty value is injected as it is.
        i.host = pairs(&[("APPTAINERENV_LD_LIBRARY_PATH", "")]);
        let e = compute(&i).expect("ok");
        assert_eq!(e.inject, pairs(&[("LD_LIBRARY_PATH", "")]));
    }

    #[test]
    fn test_shell_quote_keeps_an_escaped_dollar_literal() {
        // What the container's shell makes of the quoted value: one level of backslash
        // escaping consumed, unescaped variables expanded (Apptainer's injection).
        let eval = |value: &str| {
            let code = format!(
                "X=expanded; export A={}; printf %s \"$A\"",
                shell_quote(value, true)
            );
            let out = std::process::Command::new("/bin/sh")
                .args(["-c", &code])
                .output()
                .expect("run sh");
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        assert_eq!(eval("\\$X"), "$X");
        assert_eq!(eval("a\\$X-$X"), "a$X-expanded");
        assert_eq!(eval("say \"hi\""), "say \"hi\"");
        assert_eq!(eval("back\\\\slash"), "back\\slash");
    }

    #[test]
    fn test_shell_quote() {
        assert_eq!(shell_quote("a \"b\" $X", true), "\"a \\\"b\\\" $X\"");
        assert_eq!(shell_quote("it's $X", false), "'it'\\''s $X'");
    }
}
