//! `key` flags: newpair, list, import, export, remove, search, pull, push (Apptainer's names
//! and short flags).

use std::path::PathBuf;

use clap::{ArgGroup, Args, Subcommand, ValueEnum};

/// `key SUBCOMMAND`
#[derive(Debug, Args, Clone)]
#[command(arg_required_else_help = true)]
pub struct KeyArgs {
    #[command(subcommand)]
    pub command: KeyCommand,
}

/// The `key` sub-commands.
#[derive(Debug, Subcommand, Clone)]
pub enum KeyCommand {
    /// Create a new key pair
    Newpair(NewpairArgs),
    /// List keys in your local or in the global keyring
    List(ListArgs),
    /// Import a local key into the local or global keyring
    Import(ImportArgs),
    /// Export a public or private key into a specific file
    Export(ExportArgs),
    /// Remove a local public key from your local or the global keyring
    Remove(RemoveArgs),
    /// Search for keys on a key server
    Search(SearchArgs),
    /// Download a public key from a key server
    Pull(PullArgs),
    /// Upload a public key to a key server
    Push(PushArgs),
}

/// The keyserver of `key search/pull/push` (else the first of `keyserver list`).
#[derive(Debug, Args, Clone, Default)]
pub struct KeyserverUrlArg {
    /// specify the key server URL
    #[arg(short = 'u', long, value_name = "URL", env = "SIFR_URL")]
    pub url: Option<String>,
}

/// `key search [flags] QUERY`
#[derive(Debug, Args, Clone)]
pub struct SearchArgs {
    #[command(flatten)]
    pub url: KeyserverUrlArg,
    /// output long list when searching for keys
    #[arg(short = 'l', long)]
    pub long_list: bool,
    #[arg(value_name = "QUERY")]
    pub query: String,
}

/// `key pull [flags] FINGERPRINT`
#[derive(Debug, Args, Clone)]
pub struct PullArgs {
    #[command(flatten)]
    pub url: KeyserverUrlArg,
    /// manage global public keys (root or the owner of the installation only)
    #[arg(short = 'g', long)]
    pub global: bool,
    #[command(flatten)]
    pub keysdir: KeysDirArg,
    #[arg(value_name = "FINGERPRINT")]
    pub fingerprint: String,
}

/// `key push [flags] FINGERPRINT`
#[derive(Debug, Args, Clone)]
pub struct PushArgs {
    #[command(flatten)]
    pub url: KeyserverUrlArg,
    /// manage global public keys
    #[arg(short = 'g', long)]
    pub global: bool,
    #[command(flatten)]
    pub keysdir: KeysDirArg,
    #[arg(value_name = "FINGERPRINT")]
    pub fingerprint: String,
}

/// The user's keyring directory.
#[derive(Debug, Args, Clone, Default)]
pub struct KeysDirArg {
    /// set local keyring dir path, an alternative way is to set environment variable
    /// 'SIFR_KEYSDIR' (or 'APPTAINER_KEYSDIR')
    #[arg(short = 'd', long, env = "SIFR_KEYSDIR", value_name = "DIR")]
    pub keysdir: Option<PathBuf>,
}

/// The algorithm of a new key pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum KeyAlgorithm {
    /// RSA (size from --bit-length)
    #[default]
    Rsa,
    /// Ed25519 (the form go-crypto and gpg 2.2 read)
    Ed25519,
}

/// `key newpair [flags]`
#[derive(Debug, Args, Clone)]
pub struct NewpairArgs {
    /// key owner name
    #[arg(short = 'N', long)]
    pub name: Option<String>,
    /// key owner email
    #[arg(short = 'E', long)]
    pub email: Option<String>,
    /// key comment
    #[arg(short = 'C', long)]
    pub comment: Option<String>,
    /// key password (an empty value creates a key without password)
    #[arg(short = 'P', long)]
    pub password: Option<String>,
    /// read the key password from the first line of FILE
    #[arg(long, value_name = "FILE", env = "SIFR_PASSWORD_FILE")]
    pub password_file: Option<PathBuf>,
    /// specify key bit length (RSA)
    #[arg(short = 'b', long, default_value_t = 4096)]
    pub bit_length: u32,
    /// key algorithm
    #[arg(long, value_enum, default_value_t = KeyAlgorithm::Rsa)]
    pub algorithm: KeyAlgorithm,
    /// specify to push the public key to the remote keystore (the first configured keyserver)
    #[arg(short = 'U', long)]
    pub push: bool,
    #[command(flatten)]
    pub keysdir: KeysDirArg,
}

/// `key list [flags]`
#[derive(Debug, Args, Clone)]
pub struct ListArgs {
    /// list private keys instead of the default which displays public ones
    #[arg(short = 's', long, env = "SIFR_SECRET", value_parser = clap::builder::BoolishValueParser::new())]
    pub secret: bool,
    /// manage global public keys
    #[arg(short = 'g', long)]
    pub global: bool,
    #[command(flatten)]
    pub keysdir: KeysDirArg,
}

/// `key import [flags] FILE`
#[derive(Debug, Args, Clone)]
pub struct ImportArgs {
    /// manage global public keys (root or the owner of the installation only)
    #[arg(short = 'g', long)]
    pub global: bool,
    /// set a new password to the private key (not supported)
    #[arg(long)]
    pub new_password: bool,
    #[command(flatten)]
    pub keysdir: KeysDirArg,
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

/// `key export [flags] FILE`
#[derive(Debug, Args, Clone)]
pub struct ExportArgs {
    /// export a secret key
    #[arg(short = 's', long)]
    pub secret: bool,
    /// ascii armored format
    #[arg(short = 'a', long)]
    pub armor: bool,
    /// manage global public keys
    #[arg(short = 'g', long)]
    pub global: bool,
    /// the key to export (index from 'key list'), instead of asking
    #[arg(short = 'k', long, value_name = "N")]
    pub keyidx: Option<usize>,
    #[command(flatten)]
    pub keysdir: KeysDirArg,
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

/// `key remove [flags] FINGERPRINT`
#[derive(Debug, Args, Clone)]
#[command(group(ArgGroup::new("which").args(["public", "private", "both"])))]
pub struct RemoveArgs {
    /// manage global public keys (root or the owner of the installation only)
    #[arg(short = 'g', long)]
    pub global: bool,
    /// remove public keys only (the default)
    #[arg(short = 'p', long)]
    pub public: bool,
    /// remove private keys only
    #[arg(short = 'r', long)]
    pub private: bool,
    /// remove both public and private keys
    #[arg(short = 'b', long)]
    pub both: bool,
    #[command(flatten)]
    pub keysdir: KeysDirArg,
    #[arg(value_name = "FINGERPRINT")]
    pub fingerprint: String,
}
