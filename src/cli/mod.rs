//! Command-line parsing only: clap definitions of the global flags and of every verb.
//!
//! Nothing here touches the system. `cmd` turns the parsed values into actions.

pub mod config;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub mod action;
pub mod build;
pub mod inspect;
pub mod instance;
pub mod key;
pub mod pull;
pub mod registry;
pub mod sif;
pub mod sign;

pub use config::{ConfigArgs, ConfigCommand, FakerootArgs};

/// Global flags, accepted before the verb as Apptainer takes them. They are not accepted after
/// the verb: `-c` and `-s` mean `--contain` and `--shell` there, as in Apptainer.
#[derive(Debug, Args, Clone, Default)]
pub struct GlobalArgs {
    /// print debugging information (highest verbosity)
    #[arg(short = 'd', long, env = "SIFR_DEBUG", value_parser = clap::builder::BoolishValueParser::new())]
    pub debug: bool,

    /// suppress normal output
    #[arg(short = 'q', long, env = "SIFR_QUIET", value_parser = clap::builder::BoolishValueParser::new())]
    pub quiet: bool,

    /// only print errors
    #[arg(short = 's', long, env = "SIFR_SILENT", value_parser = clap::builder::BoolishValueParser::new())]
    pub silent: bool,

    /// print additional information
    #[arg(short = 'v', long, env = "SIFR_VERBOSE", value_parser = clap::builder::BoolishValueParser::new())]
    pub verbose: bool,

    /// print without color output
    #[arg(long, env = "SIFR_NOCOLOR", value_parser = clap::builder::BoolishValueParser::new())]
    pub nocolor: bool,

    /// specify a configuration file (for root or unprivileged installation only)
    #[arg(short = 'c', long, value_name = "FILE", env = "SIFR_CONFIG")]
    pub config: Option<PathBuf>,

    /// show the version and exit
    #[arg(long)]
    pub version: bool,
}

/// The top-level command line.
#[derive(Debug, Parser)]
#[command(
    name = "sifr",
    about = "Rootless runtime for Singularity/Apptainer (SIF) containers",
    disable_version_flag = true,
    arg_required_else_help = true,
    subcommand_required = false
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,

    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Every verb.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a command within a container
    Exec(action::ExecArgs),
    /// Run the user-defined default command within a container
    Run(action::RunArgs),
    /// Run a shell within a container
    Shell(action::ShellArgs),
    /// Run the user-defined tests within a container
    Test(action::TestArgs),
    /// Build a container image (SIF or sandbox)
    Build(build::BuildArgs),
    /// Pull an image from a URI (docker://, oci:, oci-archive:, docker-archive:) into a SIF
    Pull(pull::PullArgs),
    /// Manage containers running as services (sifr: none can be started yet)
    Instance(instance::InstanceArgs),
    /// Show metadata for an image
    Inspect(inspect::InspectArgs),
    /// Show the user-defined help for an image
    RunHelp(inspect::RunHelpArgs),
    /// Manage sifr's system configuration (fakeroot mappings)
    Config(ConfigArgs),
    /// Manipulate Singularity Image Format (SIF) images
    Sif(sif::SifArgs),
    /// Manage OpenPGP keys
    #[command(visible_alias = "keys")]
    Key(key::KeyArgs),
    /// Add digital signature(s) to an image
    Sign(sign::SignArgs),
    /// Verify digital signature(s) within an image
    Verify(sign::VerifyArgs),
    /// Show the version number
    Version,
}

/// Apptainer's help layout for a verb (its `docs/templates.go`): the short description,
/// `Usage:`, `Description:`, then the options.
const HELP_TEMPLATE: &str = "{about-with-newline}\nUsage:\n  {usage}\n\nDescription:\n  {about}\n\nOptions:\n{options}{after-help}\n";

/// The same for a verb with sub-commands (`instance`, `key`, ...) and for sifr itself.
const GROUP_HELP_TEMPLATE: &str = "{about-with-newline}\nUsage:\n  {usage}\n\nDescription:\n  {about}\n\nOptions:\n{options}\n\nAvailable Commands:\n{subcommands}{after-help}\n";

/// Apptainer's usage line of each verb (the `...Use` strings of its `docs/content.go`),
/// after the command name; sub-commands as `PARENT SUB`.
const APPTAINER_USAGE: &[(&str, &str)] = &[
    (
        "build",
        "build [local options...] <IMAGE PATH> <BUILD SPEC>",
    ),
    ("exec", "exec [exec options...] <container> <command>"),
    ("run", "run [run options...] <container> [args...]"),
    ("shell", "shell [shell options...] <container>"),
    ("test", "test [exec options...] <image path>"),
    ("pull", "pull [pull options...] [output file] <URI>"),
    ("inspect", "inspect [inspect options...] <image path>"),
    ("run-help", "run-help <image path>"),
    ("sign", "sign [sign options...] <image path>"),
    ("verify", "verify [verify options...] <image path>"),
    ("version", "version"),
    ("instance", "instance"),
    (
        "instance start",
        "instance start [start options...] <container path> <instance name> [startscript args...]",
    ),
    (
        "instance stop",
        "instance stop [stop options...] [instance]",
    ),
    (
        "instance list",
        "instance list [list options...] [<instance name glob>]",
    ),
    ("key", "key [key options...]"),
    ("key newpair", "key newpair"),
    ("key list", "key list"),
    ("key import", "key import [import options...] <input-key>"),
    ("key export", "key export [export options...] <output-file>"),
    ("key remove", "key remove <fingerprint>"),
    ("config", "config"),
    ("config fakeroot", "config fakeroot <option> <user>"),
    ("sif", "sif"),
];

/// The command line's help in Apptainer's shape, under the name sifr was invoked by
/// (`sifr`, `apptainer`, `singularity`): the layout of every verb's `--help`, and
/// Apptainer's usage lines.
pub fn with_apptainer_help(cmd: clap::Command, name: &str) -> clap::Command {
    let shape = |c: clap::Command, path: &str| {
        let c = match APPTAINER_USAGE.iter().find(|(p, _)| *p == path) {
            Some((_, usage)) => c.override_usage(format!("{name} {usage}")),
            None => c,
        };
        if c.has_subcommands() {
            c.help_template(GROUP_HELP_TEMPLATE)
        } else {
            c.help_template(HELP_TEMPLATE)
        }
    };
    cmd.bin_name(name)
        .override_usage(format!("{name} [global options...]"))
        .help_template(GROUP_HELP_TEMPLATE)
        .mut_subcommands(|verb| {
            let path = verb.get_name().to_string();
            shape(verb, &path).mut_subcommands(|sub| {
                let sub_path = format!("{path} {}", sub.get_name());
                shape(sub, &sub_path)
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn test_apptainer_help_is_consistent() {
        use clap::CommandFactory;
        let mut cmd = with_apptainer_help(Cli::command(), "apptainer");
        cmd.build();
        let exec = cmd.find_subcommand_mut("exec").expect("exec");
        let help = exec.render_long_help().to_string();
        assert!(
            help.starts_with(
                "Run a command within a container\n\nUsage:\n  apptainer exec [exec options...] <container> <command>\n\nDescription:\n"
            ),
            "{help}"
        );
        // Every usage line names a verb that exists.
        for (path, _) in APPTAINER_USAGE {
            let mut c = &cmd;
            for part in path.split(' ') {
                c = c.find_subcommand(part).unwrap_or_else(|| panic!("{path}"));
            }
        }
    }

    #[test]
    fn test_global_flags_before_verb() {
        let cli = Cli::try_parse_from(["sifr", "-q", "--silent", "-d", "version"]).expect("parses");
        assert!(cli.global.quiet && cli.global.silent && cli.global.debug);
        assert!(matches!(cli.command, Some(Command::Version)));
    }
}
