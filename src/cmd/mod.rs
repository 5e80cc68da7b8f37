//! Glue between the parsed command line and the library: one file per verb.
//!
//! `main` here owns the process-level contract: env aliases, logging, exit codes
//! (sifr's own fatal errors exit 255, as Apptainer's do).

pub mod config;

use std::ffi::OsString;

use clap::Parser;

use crate::build::oci::RegistryAccess;
use crate::cli::registry::RegistryArgs;
use crate::cli::{Cli, Command, GlobalArgs};
use crate::launch::plan::Action;

pub mod action;
pub mod build;
pub mod inspect;
pub mod instance;
pub mod key;
pub mod pull;
pub mod sif;
pub mod sign;
use crate::compat::{self, Persona};
use crate::log::{self as sylog, Verbosity};

/// Exit status for sifr's own fatal errors (Apptainer's sylog uses 255).
pub use crate::log::EXIT_FATAL;

/// Everything a verb needs to know about how sifr was invoked.
#[derive(Debug, Clone)]
pub struct Context {
    pub persona: Persona,
    pub global: GlobalArgs,
}

/// The registry flags (shared by `build`, `pull` and the action verbs) as library values.
pub fn registry_access(a: &RegistryArgs) -> RegistryAccess {
    RegistryAccess {
        plain_http: a.no_https,
        username: a.docker_username.clone(),
        password: a.docker_password.clone(),
        authfile: a.authfile.clone(),
    }
}

/// `instance.start`, `instance.stop`, `instance.list`: Singularity 2's spelling, which
/// spython still sends (`instance.stop --all`) when the version string lacks "version 3".
pub fn legacy_instance_verbs(mut args: Vec<OsString>) -> Vec<OsString> {
    let Some(i) = verb_index(&args) else {
        return args;
    };
    if let Some(verb) = args[i]
        .to_str()
        .and_then(|v| v.strip_prefix("instance."))
        .filter(|v| matches!(*v, "start" | "stop" | "list"))
        .map(str::to_string)
    {
        args[i] = OsString::from("instance");
        args.insert(i + 1, OsString::from(verb));
    }
    args
}

/// Where the verb is: the first argument after argv[0] and the global flags.
fn verb_index(args: &[OsString]) -> Option<usize> {
    let mut i = 1;
    while i < args.len() {
        let a = args[i].to_string_lossy();
        if a == "-c" || a == "--config" {
            i += 2;
            continue;
        }
        if a.starts_with('-') {
            i += 1;
            continue;
        }
        return Some(i);
    }
    None
}

/// Verbs whose arguments after the image belong to the container, as Apptainer parses them
/// (no interspersed flags): `sifr run IMG -c x` passes `-c x` to the runscript.
const IMAGE_VERBS: [&str; 4] = ["exec", "run", "shell", "test"];

/// Inserts `--` right after the image argument of an action verb, so that nothing after it
/// is taken for a sifr flag. Flags before the image, with or without values, are skipped
/// using clap's own description of each verb.
pub fn end_options_after_image(mut args: Vec<OsString>) -> Vec<OsString> {
    use clap::Args;
    // Skip argv[0] and the global flags to find the verb.
    let Some(mut i) = verb_index(&args) else {
        return args;
    };
    let verb = args[i].to_string_lossy().into_owned();
    if !IMAGE_VERBS.contains(&verb.as_str()) {
        return args;
    }
    // Only this verb's flags (building the whole command tree would cost more than the
    // rest of a container start's argument handling).
    let sub = match verb.as_str() {
        "exec" => crate::cli::action::ExecArgs::augment_args(clap::Command::new("exec")),
        "run" => crate::cli::action::RunArgs::augment_args(clap::Command::new("run")),
        "shell" => crate::cli::action::ShellArgs::augment_args(clap::Command::new("shell")),
        _ => crate::cli::action::TestArgs::augment_args(clap::Command::new("test")),
    };
    let takes_value = |a: &clap::Arg| {
        matches!(
            a.get_action(),
            clap::ArgAction::Set | clap::ArgAction::Append
        )
    };
    i += 1;
    while i < args.len() {
        let a = args[i].to_string_lossy().into_owned();
        if a == "--" {
            return args;
        }
        if let Some(long) = a.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((n, _)) => (n, true),
                None => (long, false),
            };
            let needs = sub
                .get_arguments()
                .find(|x| {
                    x.get_long() == Some(name)
                        || x.get_all_aliases().is_some_and(|al| al.contains(&name))
                })
                .is_some_and(&takes_value);
            i += if needs && !inline { 2 } else { 1 };
            continue;
        }
        if a.len() > 1 && a.starts_with('-') {
            // A cluster of short flags; the first that takes a value consumes the rest of
            // the token, or the next argument.
            let chars: Vec<char> = a[1..].chars().collect();
            let mut skip_next = false;
            for (k, c) in chars.iter().enumerate() {
                let needs = sub
                    .get_arguments()
                    .find(|x| x.get_short() == Some(*c))
                    .is_some_and(&takes_value);
                if needs {
                    skip_next = k + 1 == chars.len();
                    break;
                }
            }
            i += if skip_next { 2 } else { 1 };
            continue;
        }
        // The image.
        if args.get(i + 1).is_some_and(|n| n != "--") {
            args.insert(i + 1, OsString::from("--"));
        }
        return args;
    }
    args
}

/// Entry point: parses the command line, runs the verb and returns the exit status.
pub fn main() -> i32 {
    sylog::mark_start();
    // Must run before any thread starts: it may set environment variables.
    let alias_warnings = compat::apply_env_aliases();
    // Writing to a closed pipe (`sifr inspect IMG | head`) ends sifr quietly, as it ends
    // any Unix tool; Rust ignores SIGPIPE by default. The launch ignores it again while it
    // talks to its children.
    // SAFETY: restoring the default action of SIGPIPE installs no handler code.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let mut args: Vec<OsString> = std::env::args_os().collect();
    let persona = args
        .first()
        .map(|a| Persona::from_argv0(a))
        .unwrap_or(Persona::Sifr);
    if persona == Persona::RunSingularity {
        // `#!/usr/bin/env run-singularity` in a SIF header: `run-singularity IMAGE ARGS...`.
        args.insert(1, OsString::from("run"));
    }

    let args = end_options_after_image(legacy_instance_verbs(args));
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            let code = match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => 0,
                ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => 0,
                _ => EXIT_FATAL,
            };
            if code == 0 {
                // Help goes to stdout.
                let _ = e.print();
            } else {
                // Usage errors get one line, like every other bad input: clap's first
                // paragraph (which may list the missing arguments on indented lines).
                let rendered = e.render().to_string();
                let paragraph: Vec<&str> = rendered
                    .lines()
                    .map(str::trim)
                    .take_while(|l| !l.is_empty())
                    .collect();
                let first = match paragraph.join(" ") {
                    p if p.is_empty() => "invalid command line".to_owned(),
                    p => p,
                };
                let first = first.strip_prefix("error: ").unwrap_or(&first);
                sylog::fatal(&format!(
                    "{first} (see '{} --help')",
                    persona.command_name()
                ));
            }
            return code;
        }
    };

    let g = &cli.global;
    let verbosity = if g.debug {
        Verbosity::Debug
    } else if g.verbose {
        Verbosity::Verbose
    } else if g.silent {
        Verbosity::Silent
    } else if g.quiet {
        Verbosity::Quiet
    } else {
        Verbosity::Normal
    };
    let color = !g.nocolor && std::io::IsTerminal::is_terminal(&std::io::stderr());
    sylog::init(verbosity, color);
    for w in alias_warnings {
        log::warn!("{w}");
    }
    // An APPTAINER_/SINGULARITY_ name bound to a flag sifr lacks is refused as the flag is.
    let verb = match &cli.command {
        Some(Command::Exec(_)) => Some("exec"),
        Some(Command::Run(_)) => Some("run"),
        Some(Command::Shell(_)) => Some("shell"),
        Some(Command::Test(_)) => Some("test"),
        Some(Command::Build(_)) => Some("build"),
        Some(Command::Pull(_)) => Some("pull"),
        _ => None,
    };
    if let Some(msg) = verb.and_then(|v| compat::refused_env(v, std::env::vars_os())) {
        sylog::fatal(&msg);
        return EXIT_FATAL;
    }
    if verb == Some("build") {
        // %post and %test run through `sifr exec`: names Apptainer's build ignores must not
        // fail them there.
        for k in compat::exec_only_names("build", std::env::vars_os()) {
            // SAFETY: still single-threaded: nothing has started a thread since main began.
            unsafe { std::env::remove_var(k) };
        }
    }

    let ctx = Context {
        persona,
        global: cli.global.clone(),
    };
    if ctx.global.version {
        println!("{}", persona.version_line());
        return 0;
    }
    let result: anyhow::Result<i32> = match cli.command {
        Some(Command::Exec(a)) => {
            action::run_action(&ctx, Action::Exec, &a.image, a.command, a.action, None)
        }
        Some(Command::Run(a)) => {
            action::run_action(&ctx, Action::Run, &a.image, a.args, a.action, None)
        }
        Some(Command::Shell(a)) => {
            action::run_action(&ctx, Action::Shell, &a.image, a.args, a.action, a.shell)
        }
        Some(Command::Test(a)) => {
            action::run_action(&ctx, Action::Test, &a.image, a.args, a.action, None)
        }
        Some(Command::Build(a)) => build::build(&ctx, a),
        Some(Command::Pull(a)) => pull::pull(&ctx, a),
        Some(Command::Instance(a)) => instance::instance(&ctx, a),
        Some(Command::Inspect(a)) => inspect::inspect(&ctx, a),
        Some(Command::RunHelp(a)) => inspect::run_help(&ctx, a),
        Some(Command::Config(args)) => config::run(&ctx, &args),
        Some(Command::Sif(a)) => sif::sif(&ctx, a),
        Some(Command::Key(a)) => key::key(&ctx, a),
        Some(Command::Sign(a)) => sign::sign(&ctx, a),
        Some(Command::Verify(a)) => sign::verify(&ctx, a),
        Some(Command::Version) => {
            println!("{}", compat::SIFR_VERSION);
            Ok(0)
        }
        None => Ok(0),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            sylog::fatal(&format!("{e:#}"));
            EXIT_FATAL
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn test_legacy_instance_verbs() {
        assert_eq!(
            legacy_instance_verbs(v(&["singularity", "-q", "instance.stop", "--all"])),
            v(&["singularity", "-q", "instance", "stop", "--all"])
        );
        let exec = v(&["sifr", "exec", "img", "echo", "instance.stop"]);
        assert_eq!(legacy_instance_verbs(exec.clone()), exec);
    }

    #[test]
    fn test_end_options_after_image() {
        assert_eq!(
            end_options_after_image(v(&["sifr", "run", "img", "-c", "x"])),
            v(&["sifr", "run", "img", "--", "-c", "x"])
        );
        assert_eq!(
            end_options_after_image(v(&[
                "sifr",
                "-q",
                "exec",
                "-B",
                "/a:/b",
                "--env=X=1",
                "--pwd",
                "/",
                "-ec",
                "img",
                "ls",
                "-l"
            ])),
            v(&[
                "sifr",
                "-q",
                "exec",
                "-B",
                "/a:/b",
                "--env=X=1",
                "--pwd",
                "/",
                "-ec",
                "img",
                "--",
                "ls",
                "-l"
            ])
        );
        // Already ended, or no arguments after the image, or another verb: unchanged.
        for a in [
            v(&["sifr", "exec", "img", "--", "ls"]),
            v(&["sifr", "shell", "img"]),
            v(&["sifr", "inspect", "-r", "img"]),
            v(&["sifr", "-c", "/etc/x.conf", "sif", "list", "img"]),
        ] {
            assert_eq!(end_options_after_image(a.clone()), a);
        }
        // A flag value that looks like an image is skipped.
        assert_eq!(
            end_options_after_image(v(&["sifr", "exec", "--home", "/h", "img", "-x"])),
            v(&["sifr", "exec", "--home", "/h", "img", "--", "-x"])
        );
    }
}
