//! `sifr config ...`: clap definitions of the configuration verbs (parsing only).

use std::path::PathBuf;

use clap::{ArgGroup, Args, Subcommand};

/// `sifr config SUBCOMMAND`.
#[derive(Debug, Args)]
#[command(arg_required_else_help = true)]
pub struct ConfigArgs {
    #[command(subcommand)]
    pub command: ConfigCommand,
}

/// The configuration subcommands.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Manage fakeroot user mappings in /etc/subuid and /etc/subgid (root only)
    Fakeroot(FakerootArgs),
}

/// `sifr config fakeroot --add|--remove|--enable|--disable USER`.
///
/// `--disable` has no `-d` short form: `-d` is the global `--debug` flag.
#[derive(Debug, Args)]
#[command(group(
    ArgGroup::new("action")
        .required(true)
        .args(["add", "remove", "enable", "disable"])
))]
pub struct FakerootArgs {
    /// add a fakeroot mapping entry for a user, allocating a 65536 ids range
    #[arg(short = 'a', long)]
    pub add: bool,

    /// remove the user's fakeroot mapping entries
    #[arg(short = 'r', long)]
    pub remove: bool,

    /// enable the user's fakeroot mapping entries
    #[arg(short = 'e', long)]
    pub enable: bool,

    /// disable the user's fakeroot mapping entries
    #[arg(long)]
    pub disable: bool,

    /// user name or uid
    #[arg(value_name = "USER")]
    pub user: String,

    /// For tests: the subuid file to edit instead of /etc/subuid.
    #[arg(long, hide = true, env = "SIFR_SUBUID_PATH", value_name = "FILE")]
    pub subuid_path: Option<PathBuf>,

    /// For tests: the subgid file to edit instead of /etc/subgid.
    #[arg(long, hide = true, env = "SIFR_SUBGID_PATH", value_name = "FILE")]
    pub subgid_path: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::cli::{Cli, Command};

    use super::*;

    fn parse(args: &[&str]) -> Result<FakerootArgs, clap::Error> {
        let cli = Cli::try_parse_from(args)?;
        match cli.command {
            Some(Command::Config(ConfigArgs {
                command: ConfigCommand::Fakeroot(f),
            })) => Ok(f),
            other => panic!("expected config fakeroot, got {other:?}"),
        }
    }

    #[test]
    fn test_parse_each_action() {
        let f = parse(&["sifr", "config", "fakeroot", "--add", "alice"]).expect("parses");
        assert!(f.add && !f.remove && f.user == "alice");
        let f = parse(&["sifr", "config", "fakeroot", "-r", "alice"]).expect("parses");
        assert!(f.remove);
        let f = parse(&["sifr", "config", "fakeroot", "-e", "1000"]).expect("parses");
        assert!(f.enable && f.user == "1000");
        let f = parse(&["sifr", "-d", "config", "fakeroot", "--disable", "bob"]).expect("parses");
        assert!(f.disable);
    }

    #[test]
    fn test_exactly_one_action_required() {
        assert!(parse(&["sifr", "config", "fakeroot", "alice"]).is_err());
        assert!(parse(&["sifr", "config", "fakeroot", "--add", "--remove", "alice"]).is_err());
        assert!(parse(&["sifr", "config", "fakeroot", "--add"]).is_err());
    }

    #[test]
    fn test_hidden_path_flags() {
        let f = parse(&[
            "sifr",
            "config",
            "fakeroot",
            "--add",
            "alice",
            "--subuid-path",
            "/tmp/u",
            "--subgid-path",
            "/tmp/g",
        ])
        .expect("parses");
        assert_eq!(f.subuid_path, Some(PathBuf::from("/tmp/u")));
        assert_eq!(f.subgid_path, Some(PathBuf::from("/tmp/g")));
    }
}
