//! `registry` and `remote login` flags (Apptainer's `registry login/logout/list`; `remote
//! login` for docker:// and oras:// URIs, which Apptainer runs as `registry login`).

use std::path::PathBuf;

use clap::{Args, Subcommand};

/// `registry <login|logout|list>`
#[derive(Debug, Args, Clone)]
#[command(arg_required_else_help = true)]
pub struct RegistryVerbArgs {
    #[command(subcommand)]
    pub command: RegistryCommand,
}

/// The flags of a login.
#[derive(Debug, Args, Clone)]
pub struct LoginArgs {
    /// username to authenticate with (required for Docker/OCI registry login)
    #[arg(short = 'u', long, value_name = "USER", env = "SIFR_LOGIN_USERNAME")]
    pub username: Option<String>,
    /// password / token to authenticate with
    #[arg(
        short = 'p',
        long,
        value_name = "PASSWORD",
        env = "SIFR_LOGIN_PASSWORD",
        hide_env_values = true
    )]
    pub password: Option<String>,
    /// take password from standard input
    #[arg(long)]
    pub password_stdin: bool,
    /// the docker config.json-style file to store the credentials in
    #[arg(long, value_name = "FILE", env = "SIFR_AUTHFILE")]
    pub authfile: Option<PathBuf>,
    /// the registry: docker://HOST[:PORT] or oras://HOST[:PORT]
    #[arg(value_name = "URI")]
    pub uri: String,
}

#[derive(Debug, Subcommand, Clone)]
pub enum RegistryCommand {
    /// Login to an OCI/Docker registry
    Login(LoginArgs),
    /// Logout from an OCI/Docker registry
    Logout {
        /// the docker config.json-style file to remove the credentials from
        #[arg(long, value_name = "FILE", env = "SIFR_AUTHFILE")]
        authfile: Option<PathBuf>,
        /// the registry: docker://HOST[:PORT] or oras://HOST[:PORT]
        #[arg(value_name = "URI")]
        uri: Option<String>,
    },
    /// List all OCI credentials that are configured
    List,
}

/// `remote <login>` (the other `remote` sub-commands are refused: sifr has no remote
/// endpoints).
#[derive(Debug, Args, Clone)]
#[command(arg_required_else_help = true)]
pub struct RemoteArgs {
    #[command(subcommand)]
    pub command: RemoteCommand,
}

#[derive(Debug, Subcommand, Clone)]
pub enum RemoteCommand {
    /// Login to a registry (docker:// or oras:// URI), as `registry login`
    Login {
        #[command(flatten)]
        login: LoginArgs,
        /// allow insecure login (plain HTTP)
        #[arg(short = 'i', long, env = "SIFR_LOGIN_INSECURE", value_parser = clap::builder::BoolishValueParser::new())]
        insecure: bool,
    },
}
