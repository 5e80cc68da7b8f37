//! `overlay` flags: `overlay create` with Apptainer's options, short names and variables
//! (`SPARSE`, `FAKEROOT`, `TMPDIR` under the APPTAINER_/SINGULARITY_ prefixes).

use std::path::PathBuf;

use clap::{Args, Subcommand};

/// `overlay COMMAND ...`
#[derive(Debug, Args, Clone)]
#[command(arg_required_else_help = true)]
pub struct OverlayArgs {
    #[command(subcommand)]
    pub command: OverlayCommand,
}

/// The `overlay` sub-commands.
#[derive(Debug, Subcommand, Clone)]
pub enum OverlayCommand {
    /// Create EXT3 writable overlay image
    Create(CreateArgs),
}

/// `overlay create [options] IMAGE`
#[derive(Debug, Args, Clone)]
pub struct CreateArgs {
    /// size of the EXT3 writable overlay in MiB
    #[arg(short = 's', long, default_value = "64", value_parser = super::sif::go_int, allow_hyphen_values = true)]
    pub size: i64,
    /// create a sparse overlay
    #[arg(short = 'S', long, env = "SIFR_SPARSE", value_parser = clap::builder::BoolishValueParser::new())]
    pub sparse: bool,
    /// directory to create as part of the overlay layout
    #[arg(long = "create-dir", value_name = "DIR")]
    pub create_dir: Vec<String>,
    /// make overlay layout usable by actions run with --fakeroot
    #[arg(short = 'f', long, env = "SIFR_FAKEROOT", value_parser = clap::builder::BoolishValueParser::new())]
    pub fakeroot: bool,
    /// specify a temporary directory to use for build
    #[arg(long, value_name = "DIR", env = "SIFR_TMPDIR", hide = true)]
    pub tmpdir: Option<PathBuf>,
    #[arg(value_name = "image")]
    pub image: PathBuf,
}
