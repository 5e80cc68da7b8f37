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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn test_global_flags_before_verb() {
        let cli = Cli::try_parse_from(["sifr", "-q", "--silent", "-d", "version"]).expect("parses");
        assert!(cli.global.quiet && cli.global.silent && cli.global.debug);
        assert!(matches!(cli.command, Some(Command::Version)));
    }
}
