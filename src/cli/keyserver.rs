//! `keyserver` flags: add, remove, list, login, logout (Apptainer's names and short flags).

use clap::{Args, Subcommand};

/// `keyserver SUBCOMMAND`
#[derive(Debug, Args, Clone)]
#[command(arg_required_else_help = true)]
pub struct KeyserverArgs {
    #[command(subcommand)]
    pub command: KeyserverCommand,
}

/// The `keyserver` sub-commands.
#[derive(Debug, Subcommand, Clone)]
pub enum KeyserverCommand {
    /// Add a keyserver
    Add(KeyserverAddArgs),
    /// Remove a keyserver
    Remove(KeyserverRemoveArgs),
    /// List all keyservers that are configured
    List(KeyserverListArgs),
    /// Login to a keyserver
    Login(KeyserverLoginArgs),
    /// Logout from a keyserver
    Logout(KeyserverLogoutArgs),
}

/// `keyserver add [flags] [REMOTE] URI`
#[derive(Debug, Args, Clone)]
pub struct KeyserverAddArgs {
    /// define the keyserver order
    #[arg(short = 'o', long, value_name = "N")]
    pub order: Option<usize>,
    /// allow insecure connection to keyserver
    #[arg(short = 'i', long)]
    pub insecure: bool,
    /// [REMOTE] URI (sifr has no remote endpoints: give the URI only)
    #[arg(value_name = "URI", num_args = 1..=2, required = true)]
    pub args: Vec<String>,
}

/// `keyserver remove [REMOTE] URI`
#[derive(Debug, Args, Clone)]
pub struct KeyserverRemoveArgs {
    /// [REMOTE] URI (sifr has no remote endpoints: give the URI only)
    #[arg(value_name = "URI", num_args = 1..=2, required = true)]
    pub args: Vec<String>,
}

/// `keyserver list [REMOTE]`
#[derive(Debug, Args, Clone)]
pub struct KeyserverListArgs {
    /// a remote endpoint (sifr has none)
    #[arg(value_name = "REMOTE")]
    pub remote: Option<String>,
}

/// `keyserver login [flags] URI`
#[derive(Debug, Args, Clone)]
pub struct KeyserverLoginArgs {
    /// username to authenticate with
    #[arg(short = 'u', long, env = "SIFR_LOGIN_USERNAME")]
    pub username: Option<String>,
    /// password / token to authenticate with
    #[arg(short = 'p', long, env = "SIFR_LOGIN_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// take password from standard input
    #[arg(long)]
    pub password_stdin: bool,
    #[arg(value_name = "URI")]
    pub uri: String,
}

/// `keyserver logout [URI]`
#[derive(Debug, Args, Clone)]
pub struct KeyserverLogoutArgs {
    /// the keyserver (default: the first configured)
    #[arg(value_name = "URI")]
    pub uri: Option<String>,
}
