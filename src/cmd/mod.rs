//! Glue between the parsed command line and the library: one file per verb.
//!
//! `main` here owns the process-level contract: env aliases, logging, exit codes
//! (sifr's own fatal errors exit 255, as Apptainer's do).

pub mod config;

use std::ffi::OsString;

use clap::Parser;

use crate::cli::{Cli, Command, GlobalArgs};
use crate::launch::plan::Action;

pub mod action;
pub mod inspect;
pub mod sif;
use crate::compat::{self, Persona};
use crate::log::{self as sylog, Verbosity};

/// Exit status for sifr's own fatal errors (Apptainer's sylog uses 255).
pub const EXIT_FATAL: i32 = 255;

/// Everything a verb needs to know about how sifr was invoked.
#[derive(Debug, Clone)]
pub struct Context {
    pub persona: Persona,
    pub global: GlobalArgs,
}

/// Entry point: parses the command line, runs the verb and returns the exit status.
pub fn main() -> i32 {
    // Must run before any thread starts: it may set environment variables.
    let alias_warnings = compat::apply_env_aliases();
    let mut args: Vec<OsString> = std::env::args_os().collect();
    let persona = args
        .first()
        .map(|a| Persona::from_argv0(a))
        .unwrap_or(Persona::Sifr);
    if persona == Persona::RunSingularity {
        // `#!/usr/bin/env run-singularity` in a SIF header: `run-singularity IMAGE ARGS...`.
        args.insert(1, OsString::from("run"));
    }

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
        Some(Command::Inspect(a)) => inspect::inspect(&ctx, a),
        Some(Command::RunHelp(a)) => inspect::run_help(&ctx, a),
        Some(Command::Config(args)) => config::run(&ctx, &args),
        Some(Command::Sif(a)) => sif::sif(&ctx, a),
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
