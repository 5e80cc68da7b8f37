//! Glue between the parsed command line and the library: one file per verb.
//!
//! `main` here owns the process-level contract: env aliases, logging, exit codes
//! (sifr's own fatal errors exit 255, as Apptainer's do).

pub mod config;

use std::ffi::OsString;

use crate::build::oci::RegistryAccess;
use crate::cli::registry::RegistryArgs;
use crate::cli::{Cli, Command, GlobalArgs};
use crate::launch::plan::Action;

pub mod action;
pub mod build;
pub mod cache;
pub mod inspect;
pub mod instance;
pub mod key;
pub mod keyserver;
pub mod login;
pub mod overlay;
pub mod pull;
pub mod push;
pub mod sif;
pub mod sign;
use crate::compat::{self, Persona};
use crate::log::{self as sylog, Verbosity};

/// Exit status for sifr's own fatal errors (Apptainer's sylog uses 255).
pub use crate::log::EXIT_FATAL;

/// Exit status for a command line Apptainer's cobra refuses (an unknown verb or flag, a
/// missing argument) and for an error a verb returns rather than a fatal one.
pub const EXIT_USAGE: i32 = 1;

/// An error Apptainer reports from a verb's own run function (cobra's `RunE`): one line
/// `Error for command "VERB": MESSAGE` and exit status 1, not a fatal 255.
#[derive(Debug, thiserror::Error)]
#[error("Error for command \"{verb}\": {message}")]
pub struct CommandError {
    pub verb: &'static str,
    pub message: String,
}

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
        cache_root: None,
        platform: None,
    }
}

/// `--docker-login`: asks for the registry user name (unless `--docker-username` gave it)
/// and the password on the terminal, as Apptainer, and puts them in `access`. Without a
/// terminal, one line.
pub fn docker_login(a: &RegistryArgs, access: &mut RegistryAccess) -> anyhow::Result<()> {
    use crate::sign::password::ask;
    if !a.docker_login {
        return Ok(());
    }
    let no_tty = || {
        anyhow::anyhow!(
            "--docker-login asks for the registry user name and password on a terminal, and \
             there is none: give --docker-username and --docker-password (or \
             SIFR_DOCKER_USERNAME and SIFR_DOCKER_PASSWORD) instead"
        )
    };
    let username = match a.docker_username.as_deref().filter(|u| !u.is_empty()) {
        Some(u) => u.to_string(),
        None => ask("Enter Docker Username: ", true)?.ok_or_else(no_tty)?,
    };
    let password = ask("Enter Docker Password: ", false)?.ok_or_else(no_tty)?;
    access.username = Some(username);
    access.password = Some(password);
    Ok(())
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

/// Apptainer verbs (and sub-commands) that sifr does not implement, with what to do
/// instead. Anything else that clap does not know is a typo, reported as one.
const NOT_IMPLEMENTED: &[(&str, &str)] = &[
    (
        "capability",
        "without setuid, capability.json grants and limits nothing (as in Apptainer's \
         user-namespace mode); edit it by hand, and use --add-caps/--drop-caps",
    ),
    ("checkpoint", "sifr does not checkpoint containers"),
    ("delete", "sifr talks to no container library"),
    ("oci", "sifr runs SIF images natively, with no OCI runtime"),
    ("plugin", "sifr has no plugins"),
    ("remote add", "sifr talks to no library or remote endpoint"),
    (
        "remote remove",
        "sifr talks to no library or remote endpoint",
    ),
    ("remote use", "sifr talks to no library or remote endpoint"),
    ("remote list", "sifr talks to no library or remote endpoint"),
    (
        "remote status",
        "sifr talks to no library or remote endpoint",
    ),
    (
        "remote logout",
        "sifr talks to no library or remote endpoint",
    ),
    (
        "remote get-login-password",
        "sifr talks to no library or remote endpoint",
    ),
    (
        "remote add-keyserver",
        "sifr talks to no library or remote endpoint",
    ),
    (
        "remote remove-keyserver",
        "sifr talks to no library or remote endpoint",
    ),
    ("search", "sifr talks to no container library"),
    ("tag", "sifr talks to no container library"),
    ("buildcfg", "sifr has no compile-time paths to show"),
    ("confgen", "sifr.conf is edited by hand"),
    (
        "completion",
        "sifr generates no shell completion scripts yet",
    ),
    ("config global", "sifr.conf is edited by hand"),
];

/// One line for an Apptainer verb or sub-command that sifr does not implement.
pub fn not_implemented(args: &[OsString]) -> Option<String> {
    let i = verb_index(args)?;
    let verb = args[i].to_str()?;
    let sub = args
        .get(i + 1)
        .and_then(|s| s.to_str())
        .filter(|s| !s.starts_with('-'));
    let two = sub.map(|s| format!("{verb} {s}"));
    NOT_IMPLEMENTED
        .iter()
        .find(|(name, _)| Some(*name) == two.as_deref() || *name == verb)
        .map(|(name, why)| {
            format!("'{name}' is an Apptainer command that sifr does not implement: {why}")
        })
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
    let mut verb = args[i].to_string_lossy().into_owned();
    // `instance start|run IMAGE NAME [ARGS...]`: `--` goes after the name.
    let mut positionals = 1;
    if verb == "instance" {
        match args.get(i + 1).and_then(|a| a.to_str()) {
            Some(sub @ ("start" | "run")) => {
                verb = format!("instance {sub}");
                positionals = 2;
                i += 1;
            }
            _ => return args,
        }
    } else if !IMAGE_VERBS.contains(&verb.as_str()) {
        return args;
    }
    // Only this verb's flags (building the whole command tree would cost more than the
    // rest of a container start's argument handling).
    let sub = match verb.as_str() {
        "exec" => crate::cli::action::ExecArgs::augment_args(clap::Command::new("exec")),
        "run" => crate::cli::action::RunArgs::augment_args(clap::Command::new("run")),
        "shell" => crate::cli::action::ShellArgs::augment_args(clap::Command::new("shell")),
        "instance start" | "instance run" => {
            crate::cli::instance::InstanceStartArgs::augment_args(clap::Command::new("start"))
        }
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
        // The image (and for instances, then the name).
        if positionals > 1 {
            positionals -= 1;
            i += 1;
            continue;
        }
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
    if let Some(msg) = not_implemented(&args) {
        sylog::fatal(&msg);
        return EXIT_FATAL;
    }
    let parsed = {
        use clap::{CommandFactory, FromArgMatches};
        crate::cli::with_apptainer_help(Cli::command(), persona.command_name())
            .try_get_matches_from(&args)
            .and_then(|m| Cli::from_arg_matches(&m))
    };
    let cli = match parsed {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            let code = match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => 0,
                ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => 0,
                _ => EXIT_USAGE,
            };
            if code == 0 {
                // Help goes to stdout, also when shown for a verb group given without its
                // sub-command (`sifr instance`), which clap would print on stderr.
                if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                    print!("{}", e.render());
                } else {
                    let _ = e.print();
                }
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
                    "{first} (see '{}')",
                    help_hint(&args, persona.command_name())
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
        Some(Command::Push(_)) => Some("push"),
        Some(Command::Instance(crate::cli::instance::InstanceArgs {
            command:
                crate::cli::instance::InstanceCommand::Start(_)
                | crate::cli::instance::InstanceCommand::Run(_),
        })) => Some("instance"),
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
        Some(Command::Push(a)) => push::push(&ctx, a),
        Some(Command::Instance(a)) => instance::instance(&ctx, a),
        Some(Command::Inspect(a)) => inspect::inspect(&ctx, a),
        Some(Command::RunHelp(a)) => inspect::run_help(&ctx, a),
        Some(Command::Config(args)) => config::run(&ctx, &args),
        Some(Command::Overlay(a)) => overlay::overlay(&ctx, a),
        Some(Command::Sif(a)) => sif::sif(&ctx, a),
        Some(Command::Key(a)) => key::key(&ctx, a),
        Some(Command::Keyserver(a)) => keyserver::keyserver(&ctx, a),
        Some(Command::Sign(a)) => sign::sign(&ctx, a),
        Some(Command::Verify(a)) => sign::verify(&ctx, a),
        Some(Command::Cache(a)) => cache::cache(&ctx, a),
        Some(Command::Registry(a)) => login::registry(&ctx, a),
        Some(Command::Remote(a)) => login::remote(&ctx, a),
        Some(Command::Version) => {
            println!("{}", version_number(persona));
            Ok(0)
        }
        None => Ok(0),
    };
    match result {
        Ok(code) => code,
        Err(e) => match e.downcast_ref::<CommandError>() {
            Some(c) => {
                eprintln!("{c}");
                EXIT_USAGE
            }
            None => {
                sylog::fatal(&format!("{e:#}"));
                EXIT_FATAL
            }
        },
    }
}

/// The help to point a usage error to: `NAME VERB [SUB] --help` for the verb (and
/// sub-command) the command line names, `NAME --help` when it names none sifr knows.
/// Apptainer prints that verb's usage and options after its `Error for command "VERB"` line;
/// sifr keeps one line and names where they are.
pub fn help_hint(args: &[OsString], name: &str) -> String {
    use clap::CommandFactory;
    let cmd = Cli::command();
    let mut words = vec![name.to_string()];
    let found = verb_index(args).and_then(|i| {
        let verb = args[i].to_str()?;
        let c = cmd.find_subcommand(verb)?;
        Some((i, c))
    });
    if let Some((i, c)) = found {
        words.push(c.get_name().to_string());
        let sub = args
            .get(i + 1)
            .and_then(|s| s.to_str())
            .and_then(|s| c.find_subcommand(s));
        if let Some(sub) = sub {
            words.push(sub.get_name().to_string());
        }
    }
    words.push("--help".to_string());
    words.join(" ")
}

/// What `version` prints: the version that `--version` shows under this name, alone on its
/// line, as Apptainer's `version` verb prints its package version (`apptainer version` →
/// `1.4.0`, `apptainer --version` → `apptainer version 1.4.0`).
pub fn version_number(persona: Persona) -> String {
    let line = persona.version_line();
    match line.rsplit_once(' ') {
        Some((_, v)) => v.to_string(),
        None => line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn test_version_verb_prints_the_version_of_the_version_flag() {
        for p in [
            Persona::Sifr,
            Persona::Apptainer,
            Persona::Singularity,
            Persona::RunSingularity,
        ] {
            let line = p.version_line();
            let v = version_number(p);
            assert!(line.ends_with(&format!(" version {v}")), "{line} / {v}");
            assert!(!v.contains(' '), "{v}");
        }
    }

    #[test]
    fn test_not_implemented_names_the_apptainer_command() {
        let m = not_implemented(&v(&["apptainer", "-q", "plugin", "list"])).expect("plugin");
        assert!(m.starts_with("'plugin' is an Apptainer command"), "{m}");
        let m = not_implemented(&v(&["sifr", "remote", "add", "x", "y"])).expect("remote add");
        assert!(m.starts_with("'remote add' is an Apptainer command"), "{m}");
        for (name, _) in NOT_IMPLEMENTED {
            let mut args = vec![OsString::from("sifr")];
            args.extend(name.split(' ').map(OsString::from));
            let m = not_implemented(&args).expect(name);
            assert!(
                m.starts_with(&format!("'{name}' is an Apptainer command")),
                "{m}"
            );
        }
        for implemented in [
            v(&["sifr", "key", "list"]),
            v(&["sifr", "key", "push", "ABC"]),
            v(&["sifr", "keyserver", "list"]),
            v(&["sifr", "exec", "img", "cache"]),
            v(&["sifr", "cache", "clean", "-f"]),
            v(&["sifr", "registry", "login", "docker://x"]),
            v(&["sifr", "remote", "login", "docker://x"]),
            v(&["sifr", "instance", "stop", "--all"]),
            v(&["sifr", "no-such-verb"]),
            v(&["sifr"]),
        ] {
            assert_eq!(not_implemented(&implemented), None, "{implemented:?}");
        }
    }

    /// Every example the help shows is a command line sifr parses, for the verb it is shown
    /// under (so the examples cannot name a flag that does not exist).
    #[test]
    fn test_help_examples_parse() {
        use clap::Parser;
        for (verb, lines) in crate::cli::EXAMPLES {
            for line in lines.iter() {
                let line = line.replacen("NAME", "sifr", 1);
                let args =
                    end_options_after_image(line.split_whitespace().map(OsString::from).collect());
                let cli = Cli::try_parse_from(&args).unwrap_or_else(|e| panic!("{line}: {e}"));
                let name = match cli.command {
                    Some(Command::Exec(_)) => "exec",
                    Some(Command::Run(_)) => "run",
                    Some(Command::Shell(_)) => "shell",
                    Some(Command::Test(_)) => "test",
                    Some(Command::Build(_)) => "build",
                    Some(Command::Pull(_)) => "pull",
                    Some(Command::Push(_)) => "push",
                    Some(Command::Inspect(_)) => "inspect",
                    Some(Command::Sign(_)) => "sign",
                    Some(Command::Verify(_)) => "verify",
                    Some(Command::Key(_)) => "key",
                    Some(Command::Overlay(_)) => "overlay create",
                    Some(Command::Cache(crate::cli::cache::CacheArgs {
                        command: crate::cli::cache::CacheCommand::List { .. },
                    })) => "cache list",
                    Some(Command::Cache(crate::cli::cache::CacheArgs {
                        command: crate::cli::cache::CacheCommand::Clean { .. },
                    })) => "cache clean",
                    Some(Command::Registry(crate::cli::login::RegistryVerbArgs {
                        command: crate::cli::login::RegistryCommand::Login(_),
                    })) => "registry login",
                    _ => "other",
                };
                assert_eq!(name, *verb, "{line}");
            }
        }
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
        // Instances: after the image and the name.
        assert_eq!(
            end_options_after_image(v(&[
                "sifr", "instance", "start", "-B", "/a", "img", "web", "-c", "x"
            ])),
            v(&[
                "sifr", "instance", "start", "-B", "/a", "img", "web", "--", "-c", "x"
            ])
        );
        assert_eq!(
            end_options_after_image(v(&["sifr", "instance", "run", "img", "web", "--env"])),
            v(&["sifr", "instance", "run", "img", "web", "--", "--env"])
        );
        for a in [
            v(&["sifr", "instance", "start", "img", "web"]),
            v(&["sifr", "instance", "stop", "--all"]),
        ] {
            assert_eq!(end_options_after_image(a.clone()), a);
        }
    }
}
