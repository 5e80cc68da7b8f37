//! `keyserver add|remove|list|login|logout`: the user's keyserver list
//! (`~/.sifr/keyservers.toml`), with Apptainer's arguments and messages.

use std::io::Read as _;

use anyhow::{Context as _, anyhow, bail};

use super::Context;
use crate::cli::keyserver::{KeyserverArgs, KeyserverCommand};
use crate::sign::keyservers::{self, KeyserverList};

/// `[REMOTE] URI`: sifr has no remote endpoints, so a remote name is refused.
fn uri_only(args: &[String]) -> anyhow::Result<&str> {
    match args {
        [uri] => Ok(uri),
        [remote, _] => bail!(
            "remote endpoints are not supported ({remote}): sifr keeps one keyserver list per user; give the keyserver URI only"
        ),
        _ => bail!("give the keyserver URI"),
    }
}

fn load() -> anyhow::Result<KeyserverList> {
    let path = keyservers::default_path()?;
    Ok(KeyserverList::load(&path)?)
}

/// Runs one `keyserver` sub-command.
pub fn keyserver(_ctx: &Context, a: KeyserverArgs) -> anyhow::Result<i32> {
    match a.command {
        KeyserverCommand::Add(a) => {
            let uri = uri_only(&a.args)?;
            let mut l = load()?;
            l.add(uri, a.order, a.insecure)?;
            l.save()?;
        }
        KeyserverCommand::Remove(a) => {
            let uri = uri_only(&a.args)?;
            let mut l = load()?;
            l.remove(uri)?;
            l.save()?;
        }
        KeyserverCommand::List(a) => {
            if let Some(r) = a.remote {
                bail!(
                    "no remote-endpoint with the name {r:?} found (sifr has no remote endpoints)"
                );
            }
            print!("{}", load()?.listing());
        }
        KeyserverCommand::Login(a) => {
            let Some(user) = a.username.filter(|u| !u.is_empty()) else {
                bail!(
                    "while login to {}: a username is required: give --username",
                    a.uri
                );
            };
            let password = if a.password_stdin {
                let mut s = String::new();
                std::io::stdin()
                    .take(64 * 1024)
                    .read_to_string(&mut s)
                    .context("cannot read the password from standard input")?;
                s.trim_end_matches(['\n', '\r']).to_string()
            } else if let Some(p) = a.password {
                p
            } else {
                crate::sign::password::ask("Password / Token: ", false)?.ok_or_else(|| {
                    anyhow!(
                        "while login to {}: no terminal to ask for the password: give --password or --password-stdin",
                        a.uri
                    )
                })?
            };
            let mut l = load()?;
            l.login(&a.uri, &user, &password)
                .with_context(|| format!("while login to {}", a.uri))?;
            l.save()?;
            log::info!("Token stored in {}", l.path().display());
        }
        KeyserverCommand::Logout(a) => {
            let mut l = load()?;
            let uri = match a.uri {
                Some(u) => u,
                None => l
                    .keyservers
                    .first()
                    .map(|k| k.uri.clone())
                    .ok_or_else(|| anyhow!("no keyserver configured: give its URI"))?,
            };
            l.logout(&uri)?;
            l.save()?;
            log::info!("Logout succeeded");
        }
    }
    Ok(0)
}
