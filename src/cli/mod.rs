//! Command-line parsing only: clap definitions of the global flags and of every verb.
//!
//! Nothing here touches the system. `cmd` turns the parsed values into actions.

pub mod config;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub mod action;
pub mod build;
pub mod cache;
pub mod inspect;
pub mod instance;
pub mod key;
pub mod keyserver;
pub mod login;
pub mod overlay;
pub mod pull;
pub mod push;
pub mod registry;
pub mod sif;
pub mod sign;

pub use config::{ConfigArgs, ConfigCommand, FakerootArgs};

/// Global flags, accepted before the verb as Apptainer takes them. They are not accepted after
/// the verb: `-c` and `-s` mean `--contain` and `--shell` there, as in Apptainer.
#[derive(Debug, Args, Clone, Default)]
pub struct GlobalArgs {
    /// print debugging information (highest verbosity)
    #[arg(short = 'd', long, env = "SIFR_DEBUG", value_parser = clap::builder::BoolishValueParser::new())]
    pub debug: bool,

    /// suppress normal output
    #[arg(short = 'q', long, env = "SIFR_QUIET", value_parser = clap::builder::BoolishValueParser::new())]
    pub quiet: bool,

    /// only print errors
    #[arg(short = 's', long, env = "SIFR_SILENT", value_parser = clap::builder::BoolishValueParser::new())]
    pub silent: bool,

    /// print additional information
    #[arg(short = 'v', long, env = "SIFR_VERBOSE", value_parser = clap::builder::BoolishValueParser::new())]
    pub verbose: bool,

    /// print without color output
    #[arg(long, env = "SIFR_NOCOLOR", value_parser = clap::builder::BoolishValueParser::new())]
    pub nocolor: bool,

    /// specify a configuration file (for root or unprivileged installation only)
    #[arg(short = 'c', long, value_name = "FILE", env = "SIFR_CONFIG")]
    pub config: Option<PathBuf>,

    /// show the version and exit
    #[arg(long)]
    pub version: bool,
}

/// The top-level command line.
#[derive(Debug, Parser)]
#[command(
    name = "sifr",
    about = "Rootless runtime for Singularity/Apptainer (SIF) containers",
    disable_version_flag = true,
    arg_required_else_help = true,
    subcommand_required = false
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,

    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Every verb.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a command within a container
    Exec(action::ExecArgs),
    /// Run the user-defined default command within a container
    Run(action::RunArgs),
    /// Run a shell within a container
    Shell(action::ShellArgs),
    /// Run the user-defined tests within a container
    Test(action::TestArgs),
    /// Build a container image (SIF or sandbox)
    Build(build::BuildArgs),
    /// Pull an image from a URI (docker://, oras://, http(s)://, oci:...) into a SIF
    Pull(pull::PullArgs),
    /// Upload a SIF image to an OCI registry (oras://)
    Push(push::PushArgs),
    /// Manage containers running as services (sifr: none can be started yet)
    Instance(instance::InstanceArgs),
    /// Show metadata for an image
    Inspect(inspect::InspectArgs),
    /// Show the user-defined help for an image
    RunHelp(inspect::RunHelpArgs),
    /// Manage sifr's system configuration (fakeroot mappings)
    Config(ConfigArgs),
    /// Manage an EXT3 writable overlay image
    Overlay(overlay::OverlayArgs),
    /// Manipulate Singularity Image Format (SIF) images
    Sif(sif::SifArgs),
    /// Manage OpenPGP keys
    #[command(visible_alias = "keys")]
    Key(key::KeyArgs),
    /// Manage your keyservers
    Keyserver(keyserver::KeyserverArgs),
    /// Add digital signature(s) to an image
    Sign(sign::SignArgs),
    /// Verify digital signature(s) within an image
    Verify(sign::VerifyArgs),
    /// Manage your local sifr cache
    Cache(cache::CacheArgs),
    /// Manage authentication to OCI/Docker registries
    Registry(login::RegistryVerbArgs),
    /// Log in to a registry (sifr has no remote endpoints: `remote login` of docker:// and
    /// oras:// URIs only)
    Remote(login::RemoteArgs),
    /// Show the version number
    Version,
}

/// Apptainer's help layout for a verb (its `docs/templates.go`): the short description,
/// `Usage:`, `Description:` (`DESCRIPTION` is replaced by the verb's long text), the options,
/// then `Examples:` as the after-help.
const HELP_TEMPLATE: &str = "{about-with-newline}\nUsage:\n  {usage}\n\nDescription:\nDESCRIPTION\n\nOptions:\n{options}{after-help}\n";

/// The same for a verb with sub-commands (`instance`, `key`, ...) and for sifr itself.
const GROUP_HELP_TEMPLATE: &str = "{about-with-newline}\nUsage:\n  {usage}\n\nDescription:\nDESCRIPTION\n\nOptions:\n{options}\n\nAvailable Commands:\n{subcommands}{after-help}\n";

/// The `Description:` of the main verbs, longer than their one-line summary (sifr's own
/// words; the others repeat the summary). Two-space indented, as Apptainer's.
const DESCRIPTIONS: &[(&str, &str)] = &[
    (
        "exec",
        "  Runs COMMAND with its arguments inside the container, with the image's environment
  (/.singularity.d/env) applied. The container runs in a user namespace, without
  privileges; the user's home directory, the current directory and /tmp are shared
  with it unless a flag says otherwise. The exit status is COMMAND's.",
    ),
    (
        "run",
        "  Runs the image's runscript (/.singularity.d/runscript, the %runscript section of
  its definition file) with ARGS, or the runscript of an app with --app. An image
  without a runscript runs a shell. The exit status is the runscript's.",
    ),
    (
        "shell",
        "  Starts an interactive shell inside the container: /bin/sh unless --shell or the
  APPTAINER_SHELL / SINGULARITY_SHELL variable names another. Leave it with 'exit'.",
    ),
    (
        "test",
        "  Runs the image's test script (/.singularity.d/test, the %test section of its
  definition file). An image without one succeeds; the exit status is the script's.",
    ),
    (
        "build",
        "  Builds a SIF image, or a directory tree with --sandbox, from a build spec: a
  definition file, a docker://, oci:, oci-archive: or docker-archive: source, an
  existing SIF image or a directory. sifr builds without root: %post runs as root
  inside a user namespace (--fakeroot is implied). The image is written only when the
  build succeeds.",
    ),
    (
        "pull",
        "  Fetches an image from a URI and writes it as a SIF file: docker:// from a
  registry, oras:// (a SIF stored in a registry), http:// or https:// (an image
  file from a web server), or oci:, oci-archive:, docker-archive: from the local disk.
  Without an output file the name is made from the URI; --name gives one, --force
  overwrites.",
    ),
    (
        "push",
        "  Uploads a SIF image to an OCI registry as an oras:// artifact, stored as Apptainer
  stores it (so either tool pulls it). Credentials come from --docker-username and
  --docker-password, --authfile or the docker config files.",
    ),
    (
        "inspect",
        "  Shows an image's metadata: its labels by default, or the definition file,
  runscript, test script, environment or help text, as flags select. --json prints
  it in Apptainer's JSON shape.",
    ),
    (
        "sign",
        "  Adds digital signatures to a SIF image: by default one over the image's objects
  with the first key of the user's PGP keyring (--keyidx chooses another), or with a
  PEM private key given by --key. Signatures are added to the file itself.",
    ),
    (
        "verify",
        "  Checks the digital signatures of a SIF image against the user's and the global
  PGP keyrings, a PEM public key (--key) or an X.509 certificate chain
  (--certificate). Exits non-zero when a signature is missing or does not match.",
    ),
    (
        "key",
        "  Manages the OpenPGP keys used by sign and verify: the user's keyring (under
  ~/.apptainer/keys, or --keysdir) and the global public keyring of the
  installation; search, pull and push talk to HKP keyservers (--url, or the
  first of 'keyserver list').",
    ),
    (
        "instance",
        "  Instances are containers running in the background as services: start one with
  instance start (or instance run), list them, join one with exec instance://NAME,
  stop them with instance stop.",
    ),
    (
        "overlay",
        "  The overlay command allows management of EXT3 writable overlay images.

  All overlay commands have their own help output:

  $ NAME help overlay create
  $ NAME overlay create --help",
    ),
    (
        "overlay create",
        "  The overlay create command allows creating EXT3 writable overlay image either
  as a single EXT3 image or by adding it automatically to an existing SIF image.
  The image holds upper/ and work/ (and the --create-dir directories under
  upper/), owned by the caller, or by root inside with --fakeroot. An image
  must be at least 64 MiB; an existing SIF must be unsigned and without an
  overlay partition. Needs mkfs.ext3 (e2fsprogs).",
    ),
    (
        "cache list",
        "  Lists sifr's cache ($SIFR_CACHEDIR/cache, or under APPTAINER_CACHEDIR or
  SINGULARITY_CACHEDIR, else ~/.sifr/cache): how many container files and OCI
  blobs it holds and their size, and with --verbose every entry. --type selects
  the cache types shown.",
    ),
    (
        "cache clean",
        "  Removes entries from sifr's cache ($SIFR_CACHEDIR/cache, or under
  APPTAINER_CACHEDIR or SINGULARITY_CACHEDIR, else ~/.sifr/cache): all of it by
  default; --type and --days select. It asks first unless --force; --dry-run
  shows what would be removed and removes nothing.",
    ),
    (
        "registry login",
        "  Checks a user name and password (or token) against a docker:// or oras://
  registry and stores them in ~/.sifr/docker-config.json (mode 0600), or in the
  --authfile given; pulls then use them. The password is asked on the terminal
  unless --password or --password-stdin gives it. Nothing is stored when the
  registry refuses them.",
    ),
    (
        "run-help",
        "  Prints the help text an image carries (the %help section of its definition
  file, /.singularity.d/runscript.help), or that of an app with --app.",
    ),
];

/// The `Examples:` of the main verbs, `NAME` standing for the name sifr was called by. Each
/// is a complete command line without shell quoting (a unit test parses every one).
pub const EXAMPLES: &[(&str, &[&str])] = &[
    (
        "exec",
        &[
            "NAME exec alpine.sif cat /etc/os-release",
            "NAME exec --bind /data:/mnt alpine.sif ls /mnt",
            "NAME exec --cleanenv --env LANG=C analysis.sif python3 script.py",
        ],
    ),
    (
        "run",
        &[
            "NAME run tools.sif --input data.csv",
            "NAME run --app fastqc pipeline.sif sample.fq",
            "NAME run docker://alpine:3.20",
        ],
    ),
    (
        "shell",
        &[
            "NAME shell alpine.sif",
            "NAME shell --containall --shell /bin/bash debian.sif",
        ],
    ),
    (
        "test",
        &["NAME test tools.sif", "NAME test --contain tools.sif"],
    ),
    (
        "build",
        &[
            "NAME build tools.sif tools.def",
            "NAME build alpine.sif docker://alpine:3.20",
            "NAME build --sandbox alpine-tree/ alpine.sif",
            "NAME build --force tools.sif tools.def",
        ],
    ),
    (
        "pull",
        &[
            "NAME pull docker://alpine:3.20",
            "NAME pull --name alpine.sif docker://alpine:3.20",
            "NAME pull local.sif oci-archive:image.tar",
            "NAME pull oras://registry.example.com/tools:1.0",
        ],
    ),
    (
        "push",
        &[
            "NAME push tools.sif oras://registry.example.com/tools:1.0",
            "NAME push --annotation org.example.team=hpc tools.sif oras://localhost:5000/tools:1.0",
        ],
    ),
    (
        "inspect",
        &[
            "NAME inspect tools.sif",
            "NAME inspect --deffile tools.sif",
            "NAME inspect --runscript --json tools.sif",
        ],
    ),
    (
        "sign",
        &[
            "NAME sign tools.sif",
            "NAME sign --keyidx 1 tools.sif",
            "NAME sign --key private.pem tools.sif",
        ],
    ),
    (
        "verify",
        &[
            "NAME verify tools.sif",
            "NAME verify --key public.pem tools.sif",
            "NAME verify --all --json tools.sif",
        ],
    ),
    (
        "overlay create",
        &[
            "NAME overlay create --size 1024 /tmp/image.sif",
            "NAME overlay create --size 1024 /tmp/my_overlay.img",
            "NAME overlay create --size 1024 --sparse /tmp/ext3_overlay.img",
            "NAME overlay create --fakeroot --size 1024 /tmp/my_overlay.img",
        ],
    ),
    (
        "cache list",
        &["NAME cache list", "NAME cache list --verbose --type blob"],
    ),
    (
        "cache clean",
        &[
            "NAME cache clean --dry-run",
            "NAME cache clean --force --days 30",
            "NAME cache clean --type oci-tmp",
        ],
    ),
    (
        "registry login",
        &[
            "NAME registry login --username alice docker://registry.example.org",
            "NAME registry login -u alice --password-stdin oras://ghcr.io",
        ],
    ),
    (
        "key",
        &[
            "NAME key newpair",
            "NAME key list --secret",
            "NAME key import colleague.asc",
            "NAME key export --armor mykey.asc",
            "NAME key search --url https://keys.example.org alice@example.org",
            "NAME key pull --url https://keys.example.org 0123456789ABCDEF0123456789ABCDEF01234567",
        ],
    ),
];

/// The `Examples:` section of a verb under the invoked name, if it has one.
fn examples_text(path: &str, name: &str) -> Option<String> {
    let (_, lines) = EXAMPLES.iter().find(|(p, _)| *p == path)?;
    let mut out = String::from("\nExamples:");
    for l in lines.iter() {
        out.push_str("\n  $ ");
        out.push_str(&l.replacen("NAME", name, 1));
    }
    Some(out)
}

/// Apptainer's usage line of each verb (the `...Use` strings of its `docs/content.go`),
/// after the command name; sub-commands as `PARENT SUB`.
const APPTAINER_USAGE: &[(&str, &str)] = &[
    (
        "build",
        "build [local options...] <IMAGE PATH> <BUILD SPEC>",
    ),
    ("exec", "exec [exec options...] <container> <command>"),
    ("run", "run [run options...] <container> [args...]"),
    ("shell", "shell [shell options...] <container>"),
    ("test", "test [exec options...] <image path>"),
    ("pull", "pull [pull options...] [output file] <URI>"),
    ("push", "push [push options...] <image> <URI>"),
    ("inspect", "inspect [inspect options...] <image path>"),
    ("run-help", "run-help <image path>"),
    ("sign", "sign [sign options...] <image path>"),
    ("verify", "verify [verify options...] <image path>"),
    ("version", "version"),
    ("instance", "instance"),
    (
        "instance start",
        "instance start [start options...] <container path> <instance name> [startscript args...]",
    ),
    (
        "instance run",
        "instance run [run options...] <container path> <instance name> [runscript args...]",
    ),
    (
        "instance stop",
        "instance stop [stop options...] [instance]",
    ),
    (
        "instance list",
        "instance list [list options...] [<instance name glob>]",
    ),
    (
        "instance stats",
        "instance stats [stats options...] <instance name>",
    ),
    ("key", "key [key options...]"),
    ("key newpair", "key newpair"),
    ("key list", "key list"),
    ("key import", "key import [import options...] <input-key>"),
    ("key export", "key export [export options...] <output-file>"),
    ("key remove", "key remove <fingerprint>"),
    (
        "key search",
        "key search [search options...] <search string>",
    ),
    ("key pull", "key pull [pull options...] <fingerprint>"),
    ("key push", "key push [push options...] <key fingerprint>"),
    ("keyserver", "keyserver [keyserver options...]"),
    (
        "keyserver add",
        "keyserver add [options] [remoteName] <keyserver_url>",
    ),
    (
        "keyserver remove",
        "keyserver remove [remoteName] <keyserver_url>",
    ),
    ("keyserver list", "keyserver list [remoteName]"),
    (
        "keyserver login",
        "keyserver login [login options...] <keyserver_url>",
    ),
    (
        "keyserver logout",
        "keyserver logout [remoteName|keyserver_url]",
    ),
    ("config", "config"),
    ("config fakeroot", "config fakeroot <option> <user>"),
    ("sif", "sif"),
    ("overlay", "overlay"),
    ("overlay create", "overlay create <options> image"),
    ("cache", "cache"),
    ("cache list", "cache list [list options...]"),
    ("cache clean", "cache clean [clean options...]"),
    ("registry", "registry [subcommand options...]"),
    (
        "registry login",
        "registry login [login options...] <registry_uri>",
    ),
    ("registry logout", "registry logout <registry_uri>"),
    ("registry list", "registry list"),
    ("remote", "remote [remote options...]"),
    (
        "remote login",
        "remote login [login options...] <remote_name>",
    ),
];

/// The command line's help in Apptainer's shape, under the name sifr was invoked by
/// (`sifr`, `apptainer`, `singularity`): the layout of every verb's `--help`, and
/// Apptainer's usage lines.
pub fn with_apptainer_help(cmd: clap::Command, name: &str) -> clap::Command {
    let shape = |c: clap::Command, path: &str| {
        let c = match APPTAINER_USAGE.iter().find(|(p, _)| *p == path) {
            Some((_, usage)) => c.override_usage(format!("{name} {usage}")),
            None => c,
        };
        let c = match examples_text(path, name) {
            Some(examples) => c.after_help(examples),
            None => c,
        };
        let description = match DESCRIPTIONS.iter().find(|(p, _)| *p == path) {
            Some((_, d)) => d.replace("NAME", name),
            None => format!(
                "  {}",
                c.get_about().map(|a| a.to_string()).unwrap_or_default()
            ),
        };
        let template = if c.has_subcommands() {
            GROUP_HELP_TEMPLATE
        } else {
            HELP_TEMPLATE
        };
        c.help_template(template.replace("DESCRIPTION", &description))
    };
    let about = cmd.get_about().map(|a| a.to_string()).unwrap_or_default();
    cmd.bin_name(name)
        .override_usage(format!("{name} [global options...]"))
        .help_template(GROUP_HELP_TEMPLATE.replace("DESCRIPTION", &format!("  {about}")))
        .mut_subcommands(|verb| {
            let path = verb.get_name().to_string();
            shape(verb, &path).mut_subcommands(|sub| {
                let sub_path = format!("{path} {}", sub.get_name());
                shape(sub, &sub_path)
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn test_apptainer_help_is_consistent() {
        use clap::CommandFactory;
        let mut cmd = with_apptainer_help(Cli::command(), "apptainer");
        cmd.build();
        let exec = cmd.find_subcommand_mut("exec").expect("exec");
        let help = exec.render_long_help().to_string();
        assert!(
            help.starts_with(
                "Run a command within a container\n\nUsage:\n  apptainer exec [exec options...] <container> <command>\n\nDescription:\n"
            ),
            "{help}"
        );
        // Every usage line names a verb that exists.
        for (path, _) in APPTAINER_USAGE {
            let mut c = &cmd;
            for part in path.split(' ') {
                c = c.find_subcommand(part).unwrap_or_else(|| panic!("{path}"));
            }
        }
    }

    #[test]
    fn test_global_flags_before_verb() {
        let cli = Cli::try_parse_from(["sifr", "-q", "--silent", "-d", "version"]).expect("parses");
        assert!(cli.global.quiet && cli.global.silent && cli.global.debug);
        assert!(matches!(cli.command, Some(Command::Version)));
    }
}
