//! `instance` flags: `start`/`run` (the action flags, then IMAGE NAME [ARGS...]), `stop`,
//! `list`.

use clap::{Args, Subcommand};

use super::action::ActionArgs;

/// `instance start|run [flags] IMAGE NAME [ARGS...]`
#[derive(Debug, Args, Clone)]
pub struct InstanceStartArgs {
    #[command(flatten)]
    pub action: ActionArgs,

    /// write the instance's PID to this file
    #[arg(long, value_name = "FILE", env = "SIFR_PID_FILE")]
    pub pid_file: Option<String>,

    #[arg(value_name = "IMAGE")]
    pub image: String,

    /// the instance name
    #[arg(value_name = "NAME")]
    pub name: String,

    /// arguments for the startscript (or the runscript)
    #[arg(
        value_name = "ARGS",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub args: Vec<String>,
}

/// `instance <start|stop|list>`
#[derive(Debug, Args, Clone)]
#[command(arg_required_else_help = true)]
pub struct InstanceArgs {
    #[command(subcommand)]
    pub command: InstanceCommand,
}

#[derive(Debug, Subcommand, Clone)]
pub enum InstanceCommand {
    /// Start a named instance of the given container image
    #[command(arg_required_else_help = true)]
    Start(InstanceStartArgs),
    /// Start a named instance that runs the image's runscript
    #[command(arg_required_else_help = true)]
    Run(InstanceStartArgs),
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
    /// Get stats (CPU, memory, pids) for a named instance
    #[command(arg_required_else_help = true)]
    Stats {
        /// output stats in json (not supported by sifr yet)
        #[arg(short = 'j', long, value_parser = clap::builder::BoolishValueParser::new())]
        json: bool,
        /// disable streaming (live update) of instance stats
        #[arg(long, value_parser = clap::builder::BoolishValueParser::new())]
        no_stream: bool,
        /// view stats for an instance belonging to a user (root only)
        #[arg(short = 'u', long, value_name = "USER", env = "SIFR_USER")]
        user: Option<String>,
        /// the instance name
        name: String,
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
