//! `push` flags (Apptainer's `push` command, for `oras://` destinations).

use clap::Args;

/// `push [flags] IMAGE.sif oras://REGISTRY/REPO[:TAG]`
#[derive(Debug, Args, Clone)]
pub struct PushArgs {
    /// add a manifest annotation KEY=VALUE (oras:// only; may be repeated)
    #[arg(long, value_name = "KEY=VALUE", value_delimiter = ',')]
    pub annotation: Vec<String>,
    #[command(flatten)]
    pub registry: super::registry::RegistryArgs,
    /// hidden: Apptainer's --library (a library:// endpoint; sifr pushes to none)
    #[arg(long, hide = true, value_name = "URL", env = "SIFR_LIBRARY")]
    pub library: Option<String>,
    /// hidden: Apptainer's library-only --allow-unsigned (ignored for oras://, as there)
    #[arg(short = 'U', long, hide = true, env = "SIFR_ALLOW_UNSIGNED", value_parser = clap::builder::BoolishValueParser::new())]
    pub allow_unsigned: bool,
    /// hidden: Apptainer's library-only --description (ignored for oras://, as there)
    #[arg(short = 'D', long, hide = true, value_name = "TEXT")]
    pub description: Option<String>,

    /// the SIF file to upload
    #[arg(value_name = "IMAGE")]
    pub image: std::path::PathBuf,
    /// where to: oras://REGISTRY/REPO[:TAG]
    #[arg(value_name = "URI")]
    pub uri: String,
}
