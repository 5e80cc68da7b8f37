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
        #[arg(short = 'a', long)]
        all: bool,
        /// force kill instance
        #[arg(short = 'F', long)]
        force: bool,
        /// send a signal to the instance
        #[arg(short = 's', long, value_name = "SIGNAL")]
        signal: Option<String>,
        /// seconds to wait before sending SIGKILL
        #[arg(short = 't', long, value_name = "SECONDS")]
        timeout: Option<u32>,
        /// stop an instance of another user (root only)
        #[arg(short = 'u', long, value_name = "USER")]
        user: Option<String>,
        /// the instance name (a glob pattern)
        name: Option<String>,
    },
    /// List all running and named instances
    List {
        /// print structured json instead of a list
        #[arg(short = 'j', long)]
        json: bool,
        /// show the paths of the log files
        #[arg(short = 'l', long)]
        logs: bool,
        /// list the instances of another user (root only)
        #[arg(short = 'u', long, value_name = "USER")]
        user: Option<String>,
        /// show all users' instances (root only)
        #[arg(short = 'a', long)]
        all: bool,
        /// the instance name (a glob pattern)
        name: Option<String>,
    },
}
