//! `inspect` and `run-help` flags.

use clap::Args;

/// `inspect [flags] IMAGE`
#[derive(Debug, Args, Clone)]
pub struct InspectArgs {
    /// show the labels for the image (default)
    #[arg(short = 'l', long)]
    pub labels: bool,
    /// show the definition file that was used to generate the image
    #[arg(short = 'd', long)]
    pub deffile: bool,
    /// show the runscript for the image
    #[arg(short = 'r', long)]
    pub runscript: bool,
    /// show the startscript for the image
    #[arg(short = 's', long)]
    pub startscript: bool,
    /// show the test script for the image
    #[arg(short = 't', long)]
    pub test: bool,
    /// show the environment settings for the image
    #[arg(short = 'e', long)]
    pub environment: bool,
    /// inspect the runscript helpfile, if it exists
    #[arg(short = 'H', long)]
    pub helpfile: bool,
    /// print structured json instead of sections
    #[arg(short = 'j', long)]
    pub json: bool,
    /// list all apps in a container
    #[arg(long)]
    pub list_apps: bool,
    /// inspect a specific app
    #[arg(long, value_name = "NAME")]
    pub app: Option<String>,
    /// show all available data (implies --json)
    #[arg(long)]
    pub all: bool,
    #[arg(value_name = "IMAGE")]
    pub image: String,
}

/// `run-help [--app NAME] IMAGE`
#[derive(Debug, Args, Clone)]
pub struct RunHelpArgs {
    /// show the help for an app
    #[arg(long, value_name = "NAME")]
    pub app: Option<String>,
    #[arg(value_name = "IMAGE")]
    pub image: String,
}
