//! `instance`: sifr does not run instances (services kept running in the background) yet.
//! `list` therefore always reports none, in Apptainer's formats (spython calls
//! `instance list --json` and expects rc 0 with an empty list); `stop --all` has nothing to
//! stop; `stop NAME` finds no instance; `start` fails with one clear line.

use anyhow::bail;

use super::Context;
use crate::cli::instance::{InstanceArgs, InstanceCommand};

/// `instance list --json` with no instance, as Go's json.Encoder with a tab indent writes it.
pub const EMPTY_JSON: &str = "{\n\t\"instances\": []\n}\n";

pub fn instance(_ctx: &Context, a: InstanceArgs) -> anyhow::Result<i32> {
    match a.command {
        InstanceCommand::Start { .. } => bail!(
            "instances are not supported by sifr yet: run the service in the foreground with \
             `sifr run` or `sifr exec`"
        ),
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
        InstanceCommand::Stop { all: true, .. } => Ok(0),
        InstanceCommand::Stop {
            name: Some(name), ..
        } => bail!("no instance found with name {name}"),
        InstanceCommand::Stop { .. } => {
            bail!("instance stop needs an instance name or --all")
        }
    }
}
