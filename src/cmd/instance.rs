//! `instance`: sifr does not run instances (services kept running in the background) yet.
//! `list` therefore always reports none, in Apptainer's formats (spython calls
//! `instance list --json` and expects rc 0 with an empty list); `stop` finds nothing to
//! stop and says so as Apptainer does (`Error for command "stop": no instance found`, exit
//! status 1); `start` fails with one clear line.

use anyhow::bail;

use super::{CommandError, Context};
use crate::cli::instance::{InstanceArgs, InstanceCommand};

/// `instance list --json` with no instance, as Go's json.Encoder with a tab indent writes it.
pub const EMPTY_JSON: &str = "{\n\t\"instances\": []\n}\n";

pub fn instance(_ctx: &Context, a: InstanceArgs) -> anyhow::Result<i32> {
    match a.command {
        InstanceCommand::Start { .. } => bail!(
            "instances are not supported by sifr yet: run the service in the foreground with \
             `sifr run` or `sifr exec`"
        ),
        InstanceCommand::List { user: Some(_), .. } if !is_root() => {
            bail!("Only root user can list user's instances")
        }
        InstanceCommand::List { json, logs, .. } => {
            if json {
                print!("{EMPTY_JSON}");
            } else if logs {
                println!("INSTANCE NAME    PID    LOGS");
            } else {
                println!("INSTANCE NAME    PID    IP    IMAGE");
            }
            Ok(0)
        }
        // Apptainer: no name and no --all is "invalid command"; otherwise the (empty) list
        // of matching instances is "no instance found". Both exit with status 1.
        InstanceCommand::Stop {
            all: false,
            name: None,
            ..
        } => Err(CommandError {
            verb: "stop",
            message: "invalid command".into(),
        }
        .into()),
        InstanceCommand::Stop { user: Some(_), .. } if !is_root() => {
            bail!("Only root user can stop user's instances")
        }
        InstanceCommand::Stop { .. } => Err(CommandError {
            verb: "stop",
            message: "no instance found".into(),
        }
        .into()),
    }
}

/// Whether sifr runs as root (only root may name another user's instances).
fn is_root() -> bool {
    nix::unistd::getuid().is_root()
}
