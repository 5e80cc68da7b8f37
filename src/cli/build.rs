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
    /// specify a temporary directory to use for build (a build killed outright leaves its
    /// sifr-build-* directory there; the next build removes it)
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
    /// -b BLOCK_SIZE, -Xcompression-level N, -processors N, -all-root
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

    // --- Apptainer build flags: the same where sifr does what they ask, else refused -------
    /// architecture to build for: the host's, or, from a docker:// or oras:// source, the
    /// platform to take from a multi-platform image
    #[arg(long, value_name = "ARCH", env = "SIFR_BUILD_ARCH")]
    pub arch: Option<String>,
    /// architecture variant to build for with --arch (docker:// and oras:// sources)
    #[arg(long, value_name = "VARIANT", env = "SIFR_BUILD_ARCH_VARIANT")]
    pub arch_variant: Option<String>,
    /// hidden: Apptainer's --userns; sifr always builds in a user namespace
    #[arg(long, hide = true, env = "SIFR_USERNS", value_parser = clap::builder::BoolishValueParser::new())]
    pub userns: bool,
    /// hidden: Apptainer's --ignore-fakeroot-command; sifr never runs the fakeroot command
    #[arg(long, hide = true, env = "SIFR_IGNORE_FAKEROOT_COMMAND", value_parser = clap::builder::BoolishValueParser::new())]
    pub ignore_fakeroot_command: bool,
    /// hidden: Apptainer's --ignore-proot; sifr never runs proot (files are root-owned)
    #[arg(long, hide = true, env = "SIFR_IGNORE_PROOT", value_parser = clap::builder::BoolishValueParser::new())]
    pub ignore_proot: bool,
    /// hidden: Apptainer flags sifr refuses (see `refused`)
    #[arg(long, hide = true)]
    pub data: bool,
    #[arg(long, hide = true)]
    pub json: bool,
    #[arg(long, hide = true, value_name = "URL")]
    pub library: Option<String>,
    /// do not use the cache: registry layers are downloaded into the build directory and
    /// removed with it
    #[arg(long, env = "SIFR_DISABLE_CACHE", value_parser = clap::builder::BoolishValueParser::new())]
    pub disable_cache: bool,
    #[arg(short = 'e', long, hide = true)]
    pub encrypt: bool,
    #[arg(long, hide = true)]
    pub passphrase: bool,
    #[arg(long, hide = true, value_name = "FILE")]
    pub pem_path: Option<String>,
    /// bind the host's NVIDIA driver into the containers that run %post and %test (as
    /// exec --nv)
    #[arg(long)]
    pub nv: bool,
    #[arg(long, hide = true)]
    pub nvccli: bool,
    #[arg(long, hide = true)]
    pub compat32: bool,
    /// bind the host's ROCm driver into the containers that run %post and %test (as
    /// exec --rocm)
    #[arg(long)]
    pub rocm: bool,
    #[arg(long, hide = true, value_name = "SPEC")]
    pub mount: Vec<String>,
    #[arg(long, hide = true)]
    pub writable_tmpfs: bool,
    #[arg(long, hide = true)]
    pub ignore_userns: bool,
    #[arg(long, hide = true)]
    pub remote: bool,

    /// the image to write: a SIF file, or a directory with --sandbox
    #[arg(value_name = "DEST")]
    pub dest: PathBuf,
    /// what to build from: a definition file, an image (SIF, squashfs, sandbox), or
    /// docker://, oci:, oci-archive:, docker-archive: sources
    #[arg(value_name = "SPEC")]
    pub spec: String,
}

impl BuildArgs {
    /// The first Apptainer build flag given that sifr does not implement, with why: the
    /// flag and a reason, for a one-line refusal.
    pub fn refused(&self) -> Option<(&'static str, &'static str)> {
        let checks: [(bool, &'static str, &'static str); 12] = [
            (self.data, "--data", "data-container images are not built"),
            (
                self.json,
                "--json",
                "JSON definition files are not read; use a definition file",
            ),
            (
                self.library.is_some(),
                "--library",
                "library:// sources are not supported",
            ),
            (
                self.encrypt,
                "--encrypt",
                "encrypted images are not supported",
            ),
            (
                self.passphrase,
                "--passphrase",
                "encrypted images are not supported",
            ),
            (
                self.pem_path.is_some(),
                "--pem-path",
                "encrypted images are not supported",
            ),
            (
                self.nvccli,
                "--nvccli",
                "sifr does not drive nvidia-container-cli yet; use --nv",
            ),
            (
                self.compat32,
                "--compat32",
                "32-bit GPU libraries are not bound; use --nv or --rocm",
            ),
            (
                !self.mount.is_empty(),
                "--mount",
                "use --bind SRC:DEST for %post and %test",
            ),
            (
                self.writable_tmpfs,
                "--writable-tmpfs",
                "%test runs without a writable overlay",
            ),
            (
                self.ignore_userns,
                "--ignore-userns",
                "sifr builds only in a user namespace",
            ),
            (self.remote, "--remote", "remote builds are not supported"),
        ];
        checks
            .into_iter()
            .find(|(given, _, _)| *given)
            .map(|(_, flag, why)| (flag, why))
    }
}
