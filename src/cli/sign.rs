//! `sign` and `verify` flags (Apptainer's names, short flags and environment variables;
//! `APPTAINER_*`/`SINGULARITY_*` map onto the `SIFR_*` names).

use std::path::PathBuf;

use clap::Args;

/// `sign [flags] IMAGE`
#[derive(Debug, Args, Clone)]
pub struct SignArgs {
    /// sign objects with the specified group ID
    #[arg(
        short = 'g',
        long = "group-id",
        visible_alias = "groupid",
        value_name = "ID"
    )]
    pub group_id: Option<u32>,
    /// sign object with the specified ID
    #[arg(short = 'i', long = "sif-id", visible_alias = "id", value_name = "ID")]
    pub sif_id: Option<u32>,
    /// private key to use (index from 'key list --secret')
    #[arg(short = 'k', long, value_name = "N")]
    pub keyidx: Option<usize>,
    /// path to the PEM private key file (DSSE signature instead of PGP)
    #[arg(long, value_name = "FILE", env = "SIFR_SIGN_KEY")]
    pub key: Option<PathBuf>,
    /// sign all objects (now the default; kept for compatibility)
    #[arg(short = 'a', long)]
    pub all: bool,
    /// read the PGP key password from the first line of FILE (else SIFR_KEY_PASSWORD, else
    /// asked on the terminal)
    #[arg(long, value_name = "FILE", env = "SIFR_PASSWORD_FILE")]
    pub password_file: Option<PathBuf>,
    /// the local keyring directory (also SIFR_KEYSDIR)
    #[arg(long, env = "SIFR_KEYSDIR", value_name = "DIR")]
    pub keysdir: Option<PathBuf>,
    #[arg(value_name = "IMAGE")]
    pub image: PathBuf,
}

/// `verify [flags] IMAGE`
#[derive(Debug, Args, Clone)]
pub struct VerifyArgs {
    /// verify objects with the specified group ID
    #[arg(
        short = 'g',
        long = "group-id",
        visible_alias = "groupid",
        value_name = "ID"
    )]
    pub group_id: Option<u32>,
    /// verify object with the specified ID
    #[arg(short = 'i', long = "sif-id", visible_alias = "id", value_name = "ID")]
    pub sif_id: Option<u32>,
    /// verify all objects (with --legacy-insecure: one check per object)
    #[arg(short = 'a', long)]
    pub all: bool,
    /// enable verification of (insecure) legacy signatures
    #[arg(long)]
    pub legacy_insecure: bool,
    /// path to the PEM public key file (DSSE signatures)
    #[arg(long, value_name = "FILE", env = "SIFR_VERIFY_KEY")]
    pub key: Option<PathBuf>,
    /// path to the certificate (its public key checks DSSE signatures)
    #[arg(long, value_name = "FILE", env = "SIFR_VERIFY_CERTIFICATE")]
    pub certificate: Option<PathBuf>,
    /// path to pool of intermediate certificates
    #[arg(long, value_name = "FILE", env = "SIFR_VERIFY_INTERMEDIATES")]
    pub certificate_intermediates: Option<PathBuf>,
    /// path to pool of root certificates (default: the system's)
    #[arg(long, value_name = "FILE", env = "SIFR_VERIFY_ROOTS")]
    pub certificate_roots: Option<PathBuf>,
    /// enable online revocation check for certificates (not supported)
    #[arg(long, env = "SIFR_VERIFY_OCSP", value_parser = clap::builder::BoolishValueParser::new())]
    pub ocsp_verify: bool,
    /// only verify with local key(s) in keyring (no keyserver is asked for unknown signers)
    #[arg(short = 'l', long, env = "SIFR_LOCAL_VERIFY", value_parser = clap::builder::BoolishValueParser::new())]
    pub local: bool,
    /// output json
    #[arg(short = 'j', long)]
    pub json: bool,
    /// specify a URL for a key server
    #[arg(short = 'u', long, value_name = "URL", env = "SIFR_URL")]
    pub url: Option<String>,
    /// the local keyring directory (also SIFR_KEYSDIR)
    #[arg(long, env = "SIFR_KEYSDIR", value_name = "DIR")]
    pub keysdir: Option<PathBuf>,
    #[arg(value_name = "IMAGE")]
    pub image: PathBuf,
}
