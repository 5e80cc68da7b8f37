//! `instance` flags. sifr does not run instances yet: `list` reports none, `stop` finds
//! none, `start` says so in one line.

use clap::{Args, Subcommand};

/// `instance <start|stop|list>`
#[derive(Debug, Args, Clone)]
#[command(arg_required_else_help = true)]
pub struct InstanceArgs {
    #[command(subcommand)]
    pub command: InstanceCommand,
}

#[derive(Debug, Subcommand, Clone)]
pub enum InstanceCommand {
    /// Start a named instance of the given container image (not supported by sifr)
    Start {
        /// the image, the instance name, then arguments for the startscript
        #[arg(num_args = 0.., allow_hyphen_values = true, trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Stop a named instance of a given container image
    Stop {
        /// stop all user's instances
        #[arg(short = 'a', long, env = "SIFR_ALL", value_parser = clap::builder::BoolishValueParser::new())]
        all: bool,
        /// force kill instance
        #[arg(short = 'F', long, env = "SIFR_FORCE", value_parser = clap::builder::BoolishValueParser::new())]
        force: bool,
        /// send a signal to the instance
        #[arg(short = 's', long, value_name = "SIGNAL", env = "SIFR_SIGNAL")]
        signal: Option<String>,
        /// seconds to wait before sending SIGKILL
        #[arg(short = 't', long, value_name = "SECONDS")]
        timeout: Option<u32>,
        /// stop an instance of another user (root only)
        #[arg(short = 'u', long, value_name = "USER", env = "SIFR_USER")]
        user: Option<String>,
        /// the instance name (a glob pattern)
        name: Option<String>,
    },
    /// List all running and named instances
    List {
        /// print structured json instead of a list
        #[arg(short = 'j', long, env = "SIFR_JSON", value_parser = clap::builder::BoolishValueParser::new())]
        json: bool,
        /// show the paths of the log files
        #[arg(short = 'l', long, env = "SIFR_LOGS", value_parser = clap::builder::BoolishValueParser::new())]
        logs: bool,
        /// list the instances of another user (root only)
        #[arg(short = 'u', long, value_name = "USER", env = "SIFR_USER")]
        user: Option<String>,
        /// show all users' instances (root only)
        #[arg(short = 'a', long, env = "SIFR_ALL", value_parser = clap::builder::BoolishValueParser::new())]
        all: bool,
        /// the instance name (a glob pattern)
        name: Option<String>,
    },
}
