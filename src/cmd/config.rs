//! `sifr config fakeroot`: checks the caller may edit the files, resolves the user and
//! hands the edit to sifr-idmap's locked, atomic editor.

use anyhow::{Context as _, bail};
use sifr_idmap::{EditPaths, FakerootEdit, UserRef, edit_fakeroot};

use crate::cli::{ConfigArgs, ConfigCommand, FakerootArgs};
use crate::cmd::Context;

/// Runs `sifr config SUBCOMMAND`.
pub fn run(_ctx: &Context, args: &ConfigArgs) -> anyhow::Result<i32> {
    match &args.command {
        ConfigCommand::Fakeroot(f) => fakeroot(f),
    }
}

fn action(args: &FakerootArgs) -> FakerootEdit {
    if args.add {
        FakerootEdit::Add
    } else if args.remove {
        FakerootEdit::Remove
    } else if args.enable {
        FakerootEdit::Enable
    } else {
        FakerootEdit::Disable
    }
}

/// `sifr config fakeroot --add|--remove|--enable|--disable USER`.
///
/// Root only, like Apptainer's. The hidden `--subuid-path`/`--subgid-path` flags (env
/// `SIFR_SUBUID_PATH`/`SIFR_SUBGID_PATH`) exist for tests; when both are given the root
/// check is skipped, since the caller then edits files it can write anyway.
fn fakeroot(args: &FakerootArgs) -> anyhow::Result<i32> {
    let overridden = args.subuid_path.is_some() && args.subgid_path.is_some();
    if !nix::unistd::geteuid().is_root() && !overridden {
        bail!(
            "`config fakeroot` must be run as root: it edits /etc/subuid and /etc/subgid (try `sudo sifr config fakeroot ...`)"
        );
    }
    let mut paths = EditPaths::system();
    if let Some(p) = &args.subuid_path {
        paths.subuid = p.clone();
    }
    if let Some(p) = &args.subgid_path {
        paths.subgid = p.clone();
    }
    let edit = action(args);
    let user = match UserRef::lookup(&args.user) {
        Ok(u) => u,
        // A uid without an account can still own entries (a deleted user's, say): allow
        // cleaning those up; --add still needs a real account.
        Err(e) => match args.user.parse::<u32>() {
            Ok(uid) if edit != FakerootEdit::Add => UserRef::uid(uid),
            _ => return Err(e.into()),
        },
    };
    let changes = edit_fakeroot(&paths, edit, &user)
        .with_context(|| format!("config fakeroot for user {user}"))?;
    for c in &changes {
        if c.changed() {
            log::debug!("{}", c.message(&user));
        } else {
            log::info!("{}", c.message(&user));
        }
    }
    Ok(0)
}
