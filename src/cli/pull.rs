//! `pull` flags (Apptainer's `pull` command, for OCI sources).

use std::path::PathBuf;

use clap::Args;

/// `pull [flags] [OUTPUT] URI`
#[derive(Debug, Args, Clone)]
pub struct PullArgs {
    /// name of the image file to write (the default is NAME_TAG.sif from the URI)
    #[arg(long, value_name = "FILE", env = "SIFR_PULL_NAME")]
    pub name: Option<PathBuf>,
    /// download the image into this directory [env: SIFR_PULLFOLDER; empty: the current
    /// directory]
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// overwrite an image file if it exists
    #[arg(short = 'F', long, env = "SIFR_FORCE", value_parser = clap::builder::BoolishValueParser::new())]
    pub force: bool,
    /// do not use the cache: the image is converted in a temporary directory, its layers
    /// downloaded there, and nothing is kept
    #[arg(long, env = "SIFR_DISABLE_CACHE", value_parser = clap::builder::BoolishValueParser::new())]
    pub disable_cache: bool,
    #[command(flatten)]
    pub registry: super::registry::RegistryArgs,
    /// architecture to pull from a multi-platform docker:// or oras:// image (Go names:
    /// amd64, arm64, arm, ppc64le, s390x, riscv64, ...)
    #[arg(long, value_name = "ARCH", env = "SIFR_PULL_ARCH")]
    pub arch: Option<String>,
    /// architecture variant to pull with --arch (v6, v7, v8)
    #[arg(long, value_name = "VARIANT", env = "SIFR_PULL_ARCH_VARIANT")]
    pub arch_variant: Option<String>,
    /// specify a temporary directory to use for the conversion
    #[arg(long, value_name = "DIR", env = "SIFR_TMPDIR")]
    pub tmpdir: Option<PathBuf>,
    /// hidden: do not use the subuid/subgid mapping for fakeroot
    #[arg(long, hide = true, env = "SIFR_IGNORE_SUBUID", value_parser = clap::builder::BoolishValueParser::new())]
    pub ignore_subuid: bool,

    /// the output file, then the URI; or only the URI
    #[arg(value_name = "[OUTPUT] URI", num_args = 1..=2, required = true)]
    pub args: Vec<String>,
}
