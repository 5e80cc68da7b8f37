//! The payload's command line: how an action (exec/run/shell/test/start) becomes an
//! `execve` inside the container.
//!
//! With a `/bin/sh` in the image (nearly always), sifr runs its own action script
//! (`action.sh`, embedded) with the container's shell: it sources the image's environment
//! scripts exactly as they were written for a shell, applies injected variables, and
//! dispatches. Without a shell, the environment scripts are evaluated by `shenv` (the subset
//! environment files use), and `exec` runs the command directly; `run` and `test` work if
//! their scripts start with a `#!` line for an interpreter the image has.

use std::path::{Path, PathBuf};

use super::environ::{DEFAULT_PATH, shell_quote};
use super::plan::{Action, ProcessPlan};
use super::shenv::ShellEnv;

/// The embedded action script.
pub const ACTION_SCRIPT: &str = include_str!("action.sh");

/// What to execute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exec {
    pub path: PathBuf,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
}

/// Why the action cannot start.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ActionError {
    #[error("{0:?}: executable file not found in $PATH")]
    NotFound(String),
    #[error("no command given")]
    NoCommand,
    #[error(
        "the container has no /bin/sh, which `{0}` needs (only exec works in images without a shell)"
    )]
    NoShell(&'static str),
}

/// The shell code that applies injected variables after the image's environment.
pub fn inject_code(p: &ProcessPlan) -> String {
    p.inject
        .iter()
        .map(|(k, v)| format!("export {k}={}\n", shell_quote(v, p.evaluate)))
        .collect()
}

/// The names of the environment the action starts with, one a line, for the action script's
/// clear and restore (Apptainer hides them from the image's environment scripts). Only
/// names the shell can handle; never the script's own `__sifr_` names.
pub fn base_names(p: &ProcessPlan) -> String {
    p.env
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| {
            let mut c = k.chars();
            matches!(c.next(), Some(ch) if ch.is_ascii_alphabetic() || ch == '_')
                && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
                && !k.starts_with("__sifr_")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Builds the exec for a container that has `/bin/sh`.
pub fn with_shell(p: &ProcessPlan) -> Exec {
    let mut argv = vec![
        "/bin/sh".to_string(),
        "-c".to_string(),
        ACTION_SCRIPT.to_string(),
        "sifr".to_string(),
    ];
    argv.extend(p.args.iter().cloned());
    let mut env = p.env.clone();
    env.push(("__SIFR_ACTION".into(), p.action.as_str().into()));
    env.push(("__SIFR_INJECT".into(), inject_code(p)));
    env.push(("__SIFR_BASE_NAMES".into(), base_names(p)));
    if p.instance_init {
        env.push(("__SIFR_INSTANCE_INIT".into(), "1".into()));
    }
    Exec {
        path: PathBuf::from("/bin/sh"),
        argv,
        env,
    }
}

/// A filesystem view for the shell-less path (the real root after pivot_root, or a fake in
/// tests).
pub trait Files {
    fn read(&self, path: &Path) -> Option<String>;
    fn list(&self, dir: &Path) -> Vec<String>;
    fn is_executable(&self, path: &Path) -> bool;
}

/// The variables Apptainer's `clear_env` leaves visible to the image's environment scripts
/// (the action script's `__sifr_kept` has the same list).
const KEPT_FOR_SCRIPTS: [&str; 10] = [
    "PWD",
    "HOME",
    "OPTIND",
    "UID",
    "GID",
    "SINGULARITY_APPNAME",
    "SINGULARITY_SHELL",
    "APPTAINER_NAME",
    "APPTAINER_CONTAINER",
    "APPTAINER_INSTANCE",
];

/// Apptainer's `fixpath`: PATH with the default directories it lacks appended.
fn fixpath(sh: &mut ShellEnv) {
    let current = sh.get("PATH").unwrap_or("").to_string();
    let mut parts: Vec<&str> = if current.is_empty() {
        Vec::new()
    } else {
        current.split(':').collect()
    };
    for d in DEFAULT_PATH.split(':') {
        if !parts.contains(&d) {
            parts.push(d);
        }
    }
    let path = parts.join(":");
    sh.export("PATH", Some(path));
}

/// Builds the exec for a container without `/bin/sh`; `notes` receives the environment
/// statements that could not be evaluated.
pub fn without_shell(
    p: &ProcessPlan,
    files: &dyn Files,
    notes: &mut Vec<String>,
) -> Result<Exec, ActionError> {
    // An instance's init is a shell (see action.sh).
    if p.instance_init {
        return Err(ActionError::NoShell(match p.action {
            Action::Run => "instance run",
            _ => "instance start",
        }));
    }
    // Apptainer's clear_env: the scripts see only the variables it keeps.
    let mut sh = ShellEnv::from_env(
        p.env
            .iter()
            .filter(|(k, _)| KEPT_FOR_SCRIPTS.contains(&k.as_str()))
            .cloned(),
    );
    let inject = |sh: &mut ShellEnv| {
        for (k, v) in &p.inject {
            let value = if p.evaluate {
                sh.expand(&shell_quote(v, true))
                    .unwrap_or_else(|_| v.clone())
            } else {
                v.clone()
            };
            sh.export(k, Some(value));
        }
    };
    let env_dir = Path::new("/.singularity.d/env");
    let mut scripts: Vec<String> = files
        .list(env_dir)
        .into_iter()
        .filter(|n| n.ends_with(".sh") && n != "99-runtimevars.sh")
        .collect();
    scripts.sort();
    let mut injected = false;
    for name in scripts {
        let path = env_dir.join(&name);
        if name == "90-environment.sh" && sh.get("PATH").is_none() {
            sh.export("PATH", Some(DEFAULT_PATH.to_string()));
        }
        if let Some(text) = files.read(&path) {
            for n in sh.eval(&text) {
                notes.push(format!("{}: {n}", path.display()));
            }
        }
        match name.as_str() {
            "10-docker2singularity.sh" | "10-docker.sh" => fixpath(&mut sh),
            "99-base.sh" => {
                inject(&mut sh);
                injected = true;
            }
            _ => {}
        }
    }
    if !injected {
        inject(&mut sh);
    }
    // PREPEND_/APPEND_LD_LIBRARY_PATH extend a set LD_LIBRARY_PATH, as Apptainer's action
    // script does (the ldconfig directories need a shell and glibc's ldconfig: not here).
    if let Some(lp) = sh.get("LD_LIBRARY_PATH").filter(|v| !v.is_empty()) {
        let mut lp = lp.to_string();
        if let Some(pre) = sh.get("PREPEND_LD_LIBRARY_PATH").filter(|v| !v.is_empty()) {
            lp = format!("{pre}:{lp}");
        }
        if let Some(post) = sh.get("APPEND_LD_LIBRARY_PATH").filter(|v| !v.is_empty()) {
            lp = format!("{lp}:{post}");
        }
        sh.export("LD_LIBRARY_PATH", Some(lp));
    }
    // Apptainer's restore_env: what the scripts left unset comes back, what they left
    // empty is unset.
    for (k, v) in &p.env {
        if KEPT_FOR_SCRIPTS.contains(&k.as_str()) {
            continue;
        }
        match sh.get(k) {
            None => sh.export(k, Some(v.clone())),
            Some("") => sh.unset(k),
            Some(_) => {}
        }
    }
    let mut path = sh.get("PATH").unwrap_or("").to_string();
    if let Some(v) = sh.get("SING_USER_DEFINED_PATH") {
        path = v.to_string();
    }
    if let Some(v) = sh.get("SING_USER_DEFINED_PREPEND_PATH") {
        path = format!("{v}:{path}");
    }
    if let Some(v) = sh.get("SING_USER_DEFINED_APPEND_PATH") {
        path = format!("{path}:{v}");
    }
    for k in [
        "SING_USER_DEFINED_PATH",
        "SING_USER_DEFINED_PREPEND_PATH",
        "SING_USER_DEFINED_APPEND_PATH",
    ] {
        sh.unset(k);
    }
    if path.is_empty() {
        path = DEFAULT_PATH.to_string();
    }
    sh.export("PATH", Some(path.clone()));
    let env = sh.exported();

    let (cmd, rest): (String, Vec<String>) = match p.action {
        Action::Exec => {
            let (first, rest) = p.args.split_first().ok_or(ActionError::NoCommand)?;
            (first.clone(), rest.to_vec())
        }
        Action::Run => {
            let script = match &p.app {
                Some(app) => format!("/scif/apps/{app}/scif/runscript"),
                None => "/.singularity.d/runscript".to_string(),
            };
            if !files.is_executable(Path::new(&script)) {
                return Err(ActionError::NoShell("run"));
            }
            (script, p.args.clone())
        }
        Action::Test => {
            let script = "/.singularity.d/test".to_string();
            if !files.is_executable(Path::new(&script)) {
                return Err(ActionError::NoShell("test"));
            }
            (script, p.args.clone())
        }
        Action::Shell => match &p.shell {
            Some(s) => (s.clone(), p.args.clone()),
            None => return Err(ActionError::NoShell("shell")),
        },
        Action::Start => return Err(ActionError::NoShell("instance start")),
    };
    let resolved = if cmd.contains('/') {
        PathBuf::from(&cmd)
    } else {
        path.split(':')
            .filter(|d| !d.is_empty())
            .map(|d| Path::new(d).join(&cmd))
            .find(|c| files.is_executable(c))
            .ok_or_else(|| ActionError::NotFound(cmd.clone()))?
    };
    let mut argv = vec![cmd];
    argv.extend(rest);
    Ok(Exec {
        path: resolved,
        argv,
        env,
    })
}

/// The real container filesystem (after pivot_root).
pub struct RootFiles;

impl Files for RootFiles {
    fn read(&self, path: &Path) -> Option<String> {
        std::fs::read_to_string(path).ok()
    }
    fn list(&self, dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
    fn is_executable(&self, path: &Path) -> bool {
        nix::unistd::access(path, nix::unistd::AccessFlags::X_OK).is_ok() && path.is_file()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    struct Fake {
        files: BTreeMap<String, String>,
        exec: Vec<String>,
    }

    impl Files for Fake {
        fn read(&self, path: &Path) -> Option<String> {
            self.files.get(path.to_str()?).cloned()
        }
        fn list(&self, dir: &Path) -> Vec<String> {
            let d = format!("{}/", dir.display());
            self.files
                .keys()
                .filter_map(|k| k.strip_prefix(&d).map(str::to_string))
                .collect()
        }
        fn is_executable(&self, path: &Path) -> bool {
            self.exec.iter().any(|e| Path::new(e) == path)
        }
    }

    fn proc_plan(action: Action, args: &[&str]) -> ProcessPlan {
        ProcessPlan {
            action,
            args: args.iter().map(|s| s.to_string()).collect(),
            env: vec![
                ("PATH".into(), DEFAULT_PATH.into()),
                ("HOME".into(), "/h".into()),
            ],
            inject: vec![
                ("FOO".into(), "injected".into()),
                ("SING_USER_DEFINED_PREPEND_PATH".into(), "/pre".into()),
            ],
            evaluate: true,
            cwd: "/".into(),
            cwd_required: false,
            home: "/h".into(),
            umask: None,
            app: None,
            shell: None,
            instance_init: false,
        }
    }

    #[test]
    fn test_with_shell_argv_and_env() {
        let e = with_shell(&proc_plan(Action::Exec, &["echo", "hi"]));
        assert_eq!(e.argv[0], "/bin/sh");
        assert_eq!(e.argv[3], "sifr");
        assert_eq!(&e.argv[4..], ["echo", "hi"]);
        let inject = e
            .env
            .iter()
            .find(|(k, _)| k == "__SIFR_INJECT")
            .map(|(_, v)| v.clone())
            .expect("inject");
        assert!(inject.contains("export FOO=\"injected\"\n"));
        assert!(e.env.contains(&("__SIFR_ACTION".into(), "exec".into())));
        assert!(
            e.env
                .contains(&("__SIFR_BASE_NAMES".into(), "PATH\nHOME".into()))
        );
    }

    #[test]
    fn test_base_names_are_what_the_shell_can_clear() {
        let mut p = proc_plan(Action::Exec, &["true"]);
        p.env.push(("BASH_FUNC_f%%".into(), "() { :; }".into()));
        p.env.push(("__sifr_n".into(), "x".into()));
        p.env.push(("_OK1".into(), "x".into()));
        assert_eq!(base_names(&p), "PATH\nHOME\n_OK1");
    }

    #[test]
    fn test_without_shell_evaluates_env_and_resolves_path() {
        let fake = Fake {
            files: [
                (
                    "/.singularity.d/env/10-docker2singularity.sh",
                    "export PATH=/app/bin:$PATH\nexport FOO=image\nexport LANG=C.UTF-8",
                ),
                ("/.singularity.d/env/90-environment.sh", "# empty"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            exec: vec!["/app/bin/tool".into()],
        };
        let mut notes = vec![];
        let e = without_shell(&proc_plan(Action::Exec, &["tool", "-x"]), &fake, &mut notes)
            .expect("ok");
        assert_eq!(e.path, PathBuf::from("/app/bin/tool"));
        assert_eq!(e.argv, ["tool", "-x"]);
        let env: BTreeMap<_, _> = e.env.into_iter().collect();
        assert_eq!(env["FOO"], "injected", "injected beats the image");
        assert_eq!(env["LANG"], "C.UTF-8");
        assert!(env["PATH"].starts_with("/pre:/app/bin:"));
        assert!(!env.contains_key("SING_USER_DEFINED_PREPEND_PATH"));
        assert!(notes.is_empty(), "{notes:?}");

        let err = without_shell(&proc_plan(Action::Exec, &["nope"]), &fake, &mut notes);
        assert_eq!(err, Err(ActionError::NotFound("nope".into())));
        let err = without_shell(&proc_plan(Action::Shell, &[]), &fake, &mut notes);
        assert_eq!(err, Err(ActionError::NoShell("shell")));
    }

    #[test]
    fn test_without_shell_scripts_run_without_the_starting_environment() {
        // As Apptainer's clear_env/restore_env: the scripts do not see FOO, so they set
        // the default; EMPTIED left empty is unset; KEPT is given back; HOME stays visible.
        let fake = Fake {
            files: [
                (
                    "/.singularity.d/env/10-docker2singularity.sh",
                    "export PATH=/app/bin\nexport SEEN_HOME=$HOME",
                ),
                (
                    "/.singularity.d/env/90-environment.sh",
                    "export FOO=${FOO:-image}\nexport EMPTIED=",
                ),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            exec: vec!["/app/bin/tool".into()],
        };
        let mut p = proc_plan(Action::Exec, &["tool"]);
        p.inject = vec![];
        p.env.extend([
            ("FOO".into(), "host".into()),
            ("EMPTIED".into(), "x".into()),
            ("KEPT".into(), "k".into()),
        ]);
        let e = without_shell(&p, &fake, &mut vec![]).expect("ok");
        let env: BTreeMap<_, _> = e.env.into_iter().collect();
        assert_eq!(env["FOO"], "image");
        assert!(!env.contains_key("EMPTIED"));
        assert_eq!(env["KEPT"], "k");
        assert_eq!(env["SEEN_HOME"], "/h");
        // fixpath: the default directories the docker script's PATH lacks are appended.
        assert_eq!(env["PATH"], format!("/app/bin:{DEFAULT_PATH}"));
    }

    #[test]
    fn test_without_shell_prepends_and_appends_ld_library_path() {
        let fake = Fake {
            files: [(
                "/.singularity.d/env/99-base.sh",
                "LD_LIBRARY_PATH=/.singularity.d/libs\nexport LD_LIBRARY_PATH",
            )]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            exec: vec!["/bin/tool".into()],
        };
        let mut p = proc_plan(Action::Exec, &["tool"]);
        p.inject = vec![
            ("PREPEND_LD_LIBRARY_PATH".into(), "/pre".into()),
            ("APPEND_LD_LIBRARY_PATH".into(), "/post".into()),
        ];
        let e = without_shell(&p, &fake, &mut vec![]).expect("ok");
        let env: BTreeMap<_, _> = e.env.into_iter().collect();
        assert_eq!(env["LD_LIBRARY_PATH"], "/pre:/.singularity.d/libs:/post");
    }

    #[test]
    fn test_action_script_is_valid_sh() {
        // The embedded script must parse with the host's sh (syntax check only).
        let out = std::process::Command::new("/bin/sh")
            .args(["-n", "-c", ACTION_SCRIPT])
            .output()
            .expect("run sh");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
