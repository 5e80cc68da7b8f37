//! `build` flags (Apptainer's `build` command).

use std::path::PathBuf;

use clap::Args;

/// `build [flags] DEST SPEC`
#[derive(Debug, Args, Clone)]
pub struct BuildArgs {
    /// build image as sandbox format (chroot directory structure)
    #[arg(short = 's', long, env = "SIFR_SANDBOX", value_parser = clap::builder::BoolishValueParser::new())]
    pub sandbox: bool,
    /// overwrite an image file if it exists
    #[arg(short = 'F', long, env = "SIFR_FORCE", value_parser = clap::builder::BoolishValueParser::new())]
    pub force: bool,
    /// run definition over existing container (skips header)
    #[arg(short = 'u', long, env = "SIFR_UPDATE", value_parser = clap::builder::BoolishValueParser::new())]
    pub update: bool,
    /// build without running tests in %test section
    #[arg(short = 'T', long, env = "SIFR_NOTEST", value_parser = clap::builder::BoolishValueParser::new())]
    pub notest: bool,
    /// only run specific section(s) of deffile (setup, post, files, environment, test,
    /// labels, none)
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "all",
        env = "SIFR_SECTION"
    )]
    pub section: Vec<String>,
    /// build using user namespace to fake root user (implied for unprivileged users)
    #[arg(short = 'f', long, env = "SIFR_FAKEROOT", value_parser = clap::builder::BoolishValueParser::new())]
    pub fakeroot: bool,
    /// ensure owner has rwX permissions on all container content for oci/docker sources
    #[arg(long, env = "SIFR_FIXPERMS", value_parser = clap::builder::BoolishValueParser::new())]
    pub fix_perms: bool,
    /// specify a temporary directory to use for build
    #[arg(long, value_name = "DIR", env = "SIFR_TMPDIR")]
    pub tmpdir: Option<PathBuf>,
    /// defines variable=value to replace {{ variable }} entries in build definition file
    #[arg(long, value_name = "VAR=VALUE", action = clap::ArgAction::Append)]
    pub build_arg: Vec<String>,
    /// specifies a file containing variable=value lines to replace '{{ variable }}' with
    /// value in build definition files
    #[arg(long, value_name = "FILE")]
    pub build_arg_file: Option<PathBuf>,
    /// shows warning instead of fatal message when any variables are not consumed
    #[arg(long)]
    pub warn_unused_build_args: bool,
    /// options for the squashfs writer, as mksquashfs takes them: -comp gzip|xz|zstd|lz4,
    /// -b BLOCK_SIZE, -Xcompression-level N
    #[arg(
        long,
        value_name = "ARGS",
        allow_hyphen_values = true,
        env = "SIFR_MKSQUASHFS_ARGS"
    )]
    pub mksquashfs_args: Option<String>,
    /// build an image that is bit-identical for the same inputs (fixed times and ids)
    #[arg(long, env = "SIFR_REPRODUCIBLE", value_parser = clap::builder::BoolishValueParser::new())]
    pub reproducible: bool,
    /// a user-bind path specification for %post: src[:dest[:opts]]
    #[arg(short = 'B', long = "bind", value_delimiter = ',', action = clap::ArgAction::Append)]
    pub bind: Vec<String>,
    #[command(flatten)]
    pub registry: super::registry::RegistryArgs,
    /// do not clean up the build sandbox on failure (for debugging)
    #[arg(long, env = "SIFR_NO_CLEANUP", value_parser = clap::builder::BoolishValueParser::new())]
    pub no_cleanup: bool,
    /// hidden: do not use the subuid/subgid mapping for fakeroot
    #[arg(long, hide = true, env = "SIFR_IGNORE_SUBUID", value_parser = clap::builder::BoolishValueParser::new())]
    pub ignore_subuid: bool,

    /// the image to write: a SIF file, or a directory with --sandbox
    #[arg(value_name = "DEST")]
    pub dest: PathBuf,
    /// what to build from: a definition file, an image (SIF, squashfs, sandbox), or
    /// docker://, oci:, oci-archive:, docker-archive: sources
    #[arg(value_name = "SPEC")]
    pub spec: String,
}
