//! `registry login/logout/list` and `remote login`: the URI parsed, the password from the
//! flag, standard input or the terminal, the credentials checked against the registry and
//! stored by `build::oci::login` (sifr's file, or `--authfile`).

use std::io::Read;
use std::path::PathBuf;

use anyhow::{Context as _, bail};

use super::Context;
use crate::build::oci::Credentials;
use crate::build::oci::login::{self, LoginTarget};
use crate::cli::login::{LoginArgs, RegistryCommand, RegistryVerbArgs, RemoteArgs, RemoteCommand};

pub fn registry(_ctx: &Context, a: RegistryVerbArgs) -> anyhow::Result<i32> {
    match a.command {
        RegistryCommand::Login(l) => do_login(l, false),
        RegistryCommand::Logout { authfile, uri } => {
            let Some(uri) = uri else {
                bail!(
                    "registry logout needs the registry URI (sifr has no default remote): \
                     give docker://HOST or oras://HOST"
                );
            };
            let target = LoginTarget::parse(&uri)?;
            let home = crate::build::oci::home_dir();
            let (file, own) = auth_file(authfile, home.as_deref())?;
            if login::remove(&file, &target)? {
                log::info!("Token removed from {}", file.display());
            } else {
                log::warn!(
                    "There is no existing login to registry {:?}.",
                    target.registry
                );
            }
            if own && let Some(h) = home.as_deref() {
                login::update_list(&login::list_file(h), &target, None)?;
            }
            log::info!("Logout succeeded");
            Ok(0)
        }
        RegistryCommand::List => {
            let home = crate::build::oci::home_dir();
            let home = login::user_dir(home.as_deref())?;
            let list = login::read_list(&home.join("registries.json"))?;
            print!("{}", login::list_text(&list));
            Ok(0)
        }
    }
}

pub fn remote(_ctx: &Context, a: RemoteArgs) -> anyhow::Result<i32> {
    match a.command {
        RemoteCommand::Login { login, insecure } => {
            // Apptainer: a URI that is not a remote endpoint is logged in to as a registry,
            // with a warning.
            LoginTarget::parse(&login.uri).with_context(|| {
                format!(
                    "{}: sifr has no remote endpoints; remote login takes docker:// or oras:// \
                     registry URIs",
                    login.uri
                )
            })?;
            log::warn!(
                "'remote login' is deprecated for registries or keyservers and will be removed \
                 in a future release; running 'registry login'"
            );
            do_login(login, insecure)
        }
    }
}

/// The file credentials go to: `--authfile`, else sifr's own (true: the URI list is kept
/// too).
fn auth_file(
    authfile: Option<PathBuf>,
    home: Option<&std::path::Path>,
) -> anyhow::Result<(PathBuf, bool)> {
    Ok(match authfile {
        Some(f) => (f, false),
        None => {
            let home = home.ok_or(login::LoginError::NoHome)?;
            (login::default_auth_file(home), true)
        }
    })
}

fn do_login(l: LoginArgs, insecure: bool) -> anyhow::Result<i32> {
    let target = LoginTarget::parse(&l.uri)?;
    let username = l
        .username
        .filter(|u| !u.is_empty())
        .ok_or(login::LoginError::NoUsername)?;
    let password = if l.password_stdin {
        let mut p = String::new();
        std::io::stdin()
            .read_to_string(&mut p)
            .context("Failed to read password from stdin")?;
        let p = p.strip_suffix('\n').unwrap_or(&p);
        p.strip_suffix('\r').unwrap_or(p).to_string()
    } else {
        match l.password {
            Some(p) if !p.is_empty() => p,
            _ => crate::sign::password::ask("Password / Token: ", false)
                .context("failed to read password")?
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "a password is required: give --password or --password-stdin (no \
                         terminal to ask on)"
                    )
                })?,
        }
    };
    if password.is_empty() {
        return Err(login::LoginError::NoPassword.into());
    }
    let creds = Credentials { username, password };
    let plain_http = insecure || target.is_loopback();
    login::verify(&target, &creds, plain_http)?;
    let home = crate::build::oci::home_dir();
    let (file, own) = auth_file(l.authfile, home.as_deref())?;
    login::store(&file, &target, &creds)?;
    log::info!("Token stored in {}", file.display());
    if own && let Some(h) = home.as_deref() {
        login::update_list(&login::list_file(h), &target, Some(insecure))?;
    }
    Ok(0)
}
