//! Registry flags shared by `build`, `pull` and the action verbs (for docker:// images).

use std::path::PathBuf;

use clap::Args;

/// How to reach OCI registries.
#[derive(Debug, Args, Clone, Default)]
pub struct RegistryArgs {
    /// do not use HTTPS with the docker:// transport (insecure registries)
    #[arg(long, alias = "nohttps", env = "SIFR_NO_HTTPS", value_parser = clap::builder::BoolishValueParser::new())]
    pub no_https: bool,
    /// specify a username for docker:// registries
    #[arg(long, value_name = "USER", env = "SIFR_DOCKER_USERNAME")]
    pub docker_username: Option<String>,
    /// specify a password for docker:// registries
    #[arg(
        long,
        value_name = "PASSWORD",
        env = "SIFR_DOCKER_PASSWORD",
        hide_env_values = true
    )]
    pub docker_password: Option<String>,
    /// login to a Docker Repository interactively (the user name, unless
    /// --docker-username gives it, and the password are asked on the terminal)
    #[arg(long, env = "SIFR_DOCKER_LOGIN", value_parser = clap::builder::BoolishValueParser::new())]
    pub docker_login: bool,
    /// the docker config.json-style file holding registry credentials
    #[arg(long, value_name = "FILE", env = "SIFR_AUTHFILE")]
    pub authfile: Option<PathBuf>,
}
