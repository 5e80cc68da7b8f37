//! `cache` flags (Apptainer's `cache list` and `cache clean`).

use clap::{Args, Subcommand};

/// `cache <list|clean>`
#[derive(Debug, Args, Clone)]
#[command(arg_required_else_help = true)]
pub struct CacheArgs {
    #[command(subcommand)]
    pub command: CacheCommand,
}

#[derive(Debug, Subcommand, Clone)]
pub enum CacheCommand {
    /// List your local sifr cache
    List {
        /// a list of cache types to display, possible entries: library, oci-tmp (or oci),
        /// shub, oras, ipfs, net, blob(s), all
        #[arg(
            short = 'T',
            long = "type",
            value_name = "TYPES",
            value_delimiter = ',',
            default_value = "all"
        )]
        types: Vec<String>,
        /// include cache entries in the output
        #[arg(short = 'v', long)]
        verbose: bool,
    },
    /// Clean your local sifr cache
    Clean {
        /// a list of cache types to clean (possible values: library, oci-tmp (or oci), shub,
        /// blob, net, oras, ipfs, all)
        #[arg(
            short = 'T',
            long = "type",
            value_name = "TYPES",
            value_delimiter = ',',
            default_value = "all"
        )]
        types: Vec<String>,
        /// remove all cache entries older than specified number of days
        #[arg(short = 'D', long, value_name = "DAYS", default_value_t = 0)]
        days: u32,
        /// operate in dry run mode and do not actually clean the cache
        #[arg(short = 'n', long)]
        dry_run: bool,
        /// suppress any prompts and clean the cache
        #[arg(short = 'f', long)]
        force: bool,
    },
}
