//! `key newpair|list|import|export|remove`: the user's and the global keyrings, with
//! Apptainer's output lines.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow, bail};

use super::Context;
use crate::cli::key::{
    ExportArgs, ImportArgs, KeyAlgorithm, KeyArgs, KeyCommand, KeysDirArg, ListArgs, NewpairArgs,
    RemoveArgs,
};
use crate::sign::keychoice::choose_key;
use crate::sign::keyring::{
    GlobalKeyring, LocalKeyring, RemoveWhich, parse_fingerprint, read_key_file,
};
use crate::sign::password::{self, PasswordSources};
use crate::sign::pgp::{self, KeyInfo, NewKeyType};

/// Runs one `key` sub-command.
pub fn key(_ctx: &Context, a: KeyArgs) -> anyhow::Result<i32> {
    match a.command {
        KeyCommand::Newpair(n) => newpair(&n),
        KeyCommand::List(l) => list(&l),
        KeyCommand::Import(i) => import(&i),
        KeyCommand::Export(e) => export(&e),
        KeyCommand::Remove(r) => remove(&r),
    }?;
    Ok(0)
}

fn local(k: &KeysDirArg) -> anyhow::Result<LocalKeyring> {
    Ok(LocalKeyring::at_or_default(k.keysdir.as_deref())?)
}

fn euid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// A user id as Apptainer's `key list` prints it: `Name (Comment) <Email>`, the three parts
/// always shown (an empty comment as `()`), split the way Go's openpgp `parseUserId` splits.
pub fn user_text(id: &str) -> String {
    let (mut name, mut comment, mut email) = ((0, 0), (0, 0), (0, 0));
    let mut state = 0;
    for (at, c) in id.char_indices() {
        if state == 0 {
            name.0 = at;
            state = 1;
        }
        match state {
            1 if c == '(' => (state, name.1) = (2, at),
            1 if c == '<' => (state, name.1) = (5, at),
            2 => {
                comment.0 = at;
                state = 3;
                if c == ')' {
                    (state, comment.1) = (4, at);
                }
            }
            3 if c == ')' => (state, comment.1) = (4, at),
            4 if c == '<' => state = 5,
            5 => {
                email.0 = at;
                state = 6;
                if c == '>' {
                    (state, email.1) = (7, at);
                }
            }
            6 if c == '>' => (state, email.1) = (7, at),
            _ => {}
        }
    }
    match state {
        1 => name.1 = id.len(),
        3 => comment.1 = id.len(),
        6 => email.1 = id.len(),
        _ => {}
    }
    let part = |(a, b): (usize, usize)| id.get(a..b.max(a)).unwrap_or("").trim();
    format!("{} ({}) <{}>", part(name), part(comment), part(email))
}

/// A time as Go's `time.Time.String()` prints it for whole seconds:
/// `2006-01-02 15:04:05 -0700 MST`, given the local wall-clock time, the zone's offset in
/// seconds and its abbreviation (Go prints the numeric offset again when it has none).
pub fn go_time_text(wall: chrono::NaiveDateTime, offset: i64, abbrev: &str) -> String {
    let sign = if offset < 0 { '-' } else { '+' };
    let off = offset.abs();
    let numeric = format!("{sign}{:02}{:02}", off / 3600, off % 3600 / 60);
    let zone = if abbrev.is_empty() { &numeric } else { abbrev };
    format!("{} {numeric} {zone}", wall.format("%Y-%m-%d %H:%M:%S"))
}

/// A key's creation time in the local time zone, as Apptainer prints it (its openpgp
/// library makes creation times with `time.Unix`, which is local time).
pub fn local_time_text(secs: u32) -> String {
    let t = libc::time_t::from(secs);
    // SAFETY: an all-zero `tm` is a valid value for localtime_r to overwrite.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: localtime_r reads `t` and writes `tm`, both valid for the call; it reads TZ.
    let ok = !unsafe { libc::localtime_r(&t, &mut tm) }.is_null();
    let utc = chrono::DateTime::from_timestamp(i64::from(secs), 0);
    let (offset, abbrev) = if ok {
        let abbrev = if tm.tm_zone.is_null() {
            String::new()
        } else {
            // SAFETY: a non-null tm_zone points to a NUL-terminated string owned by libc's
            // time zone data, which lives as long as the process.
            unsafe { std::ffi::CStr::from_ptr(tm.tm_zone) }
                .to_string_lossy()
                .into_owned()
        };
        (tm.tm_gmtoff, abbrev)
    } else {
        (0, "UTC".to_string())
    };
    match utc {
        Some(u) => go_time_text(
            u.naive_utc() + chrono::Duration::seconds(offset),
            offset,
            &abbrev,
        ),
        None => secs.to_string(),
    }
}

/// The `key list` entries, aligned as Apptainer's tabwriter does.
pub fn entries_text(keys: &[KeyInfo]) -> String {
    let mut out = String::new();
    for (i, k) in keys.iter().enumerate() {
        let index = format!("{i})");
        let first = index.len() + 2;
        let mut rows: Vec<(String, &str, String)> = Vec::new();
        let users = if k.user_ids.is_empty() {
            vec![String::new()]
        } else {
            k.user_ids.clone()
        };
        for (j, u) in users.into_iter().enumerate() {
            let idx = if j == 0 { index.clone() } else { String::new() };
            rows.push((idx, "User:", user_text(&u)));
        }
        rows.push((String::new(), "Creation time:", local_time_text(k.created)));
        rows.push((String::new(), "Fingerprint:", k.fingerprint.clone()));
        rows.push((String::new(), "Length (in bits):", k.bits.to_string()));
        for (idx, label, value) in rows {
            out.push_str(&format!("{idx:<first$}{label:<19}{value}\n"));
        }
        out.push('\n');
    }
    out
}

/// A value from its flag, else asked on the terminal.
fn flag_or_ask(value: &Option<String>, prompt: &str, flag: &str) -> anyhow::Result<String> {
    if let Some(v) = value {
        return Ok(v.clone());
    }
    password::ask(prompt, true)?.ok_or_else(|| anyhow!("no terminal to ask on: give {flag}"))
}

fn newpair(a: &NewpairArgs) -> anyhow::Result<()> {
    if a.push {
        bail!(
            "--push is not supported: sifr talks to no keyserver; export the key with 'key export --armor' and publish it yourself"
        );
    }
    let kr = local(&a.keysdir)?;
    let name = flag_or_ask(&a.name, "Enter your name (e.g., John Doe) : ", "--name")?;
    let email = flag_or_ask(
        &a.email,
        "Enter your email address (e.g., john.doe@example.com) : ",
        "--email",
    )?;
    let comment = flag_or_ask(
        &a.comment,
        "Enter optional comment (e.g., development keys) : ",
        "--comment",
    )?;
    if name.trim().is_empty() {
        bail!("the key owner name is empty; give it with --name");
    }
    let password = match &a.password {
        Some(p) => p.clone(),
        None => {
            let sources = PasswordSources::from_process(a.password_file.clone());
            match sources.obtain("Enter a passphrase : ", true)? {
                Some(p) if p.is_empty() && sources.file.is_none() && sources.env.is_none() => {
                    let yn = password::ask(
                        "WARNING: if there is no password set, your key is not secure. Do you want to continue? [y/n] ",
                        true,
                    )?
                    .unwrap_or_default();
                    if !yn.trim().eq_ignore_ascii_case("y") {
                        bail!("empty passphrase");
                    }
                    p
                }
                Some(p) => p,
                None => bail!(
                    "no terminal to ask for a password: give one with --password, --password-file FILE or SIFR_KEY_PASSWORD (--password '' creates a key without password)"
                ),
            }
        }
    };
    let mut uid = name.trim().to_string();
    if !comment.trim().is_empty() {
        uid.push_str(&format!(" ({})", comment.trim()));
    }
    if !email.trim().is_empty() {
        uid.push_str(&format!(" <{}>", email.trim()));
    }
    let kind = match a.algorithm {
        KeyAlgorithm::Rsa => NewKeyType::Rsa(a.bit_length),
        KeyAlgorithm::Ed25519 => NewKeyType::Ed25519,
    };
    print!("Generating Entity and OpenPGP Key Pair... ");
    let _ = std::io::stdout().flush();
    let key = match pgp::generate_key(&uid, kind, &password) {
        Ok(k) => k,
        Err(e) => {
            println!();
            bail!("creating newpair failed: {e}");
        }
    };
    kr.add_pair(&key)
        .with_context(|| format!("creating newpair failed (keyring {})", kr.dir().display()))?;
    println!("done");
    log::debug!(
        "key pair {} added to {}",
        pgp::secret_info(&key).fingerprint,
        kr.dir().display()
    );
    Ok(())
}

fn list(a: &ListArgs) -> anyhow::Result<()> {
    if a.global {
        if a.secret {
            bail!("the global keyring holds public keys only; list it without --secret");
        }
        let g = GlobalKeyring::detect()?;
        let keys: Vec<KeyInfo> = g.public_keys()?.iter().map(pgp::public_info).collect();
        print!(
            "Public key listing ({}):\n\n{}",
            g.path().display(),
            entries_text(&keys)
        );
        return Ok(());
    }
    let kr = local(&a.keysdir)?;
    if a.secret {
        let keys: Vec<KeyInfo> = kr
            .secret_keys()
            .context("could not list private keys")?
            .iter()
            .map(pgp::secret_info)
            .collect();
        print!(
            "Private key listing ({}):\n\n{}",
            kr.secret_path().display(),
            entries_text(&keys)
        );
    } else {
        let keys: Vec<KeyInfo> = kr
            .public_keys()
            .context("could not list public keys")?
            .iter()
            .map(pgp::public_info)
            .collect();
        print!(
            "Public key listing ({}):\n\n{}",
            kr.public_path().display(),
            entries_text(&keys)
        );
    }
    Ok(())
}

fn import(a: &ImportArgs) -> anyhow::Result<()> {
    if a.new_password {
        bail!("--new-password is not supported: keys are imported with the password they have");
    }
    let keys = read_key_file(&a.file).context("key import command failed")?;
    let (added, ring) = if a.global {
        let g = GlobalKeyring::detect()?;
        (
            g.import(&keys, euid())
                .context("key import command failed")?,
            "global public",
        )
    } else {
        let kr = local(&a.keysdir)?;
        (kr.import(&keys).context("key import command failed")?, "")
    };
    for k in added {
        let which = match (k.secret, ring) {
            (true, _) => "private",
            (false, "") => "public",
            (false, r) => r,
        };
        println!(
            "Key with fingerprint {} successfully added to the {which} keyring",
            k.fingerprint
        );
    }
    Ok(())
}

/// Creates `path` for an exported key (0600 for secret keys).
fn create_export(path: &Path, secret: bool) -> anyhow::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(path)
        .with_context(|| format!("unable to create file {}", path.display()))
}

fn export(a: &ExportArgs) -> anyhow::Result<()> {
    use ::pgp::composed::ArmorOptions;
    let fail = "key export command failed";
    let (bytes, fp, what) = if a.secret {
        if a.global {
            bail!("{fail}: the global keyring holds public keys only");
        }
        let kr = local(&a.keysdir)?;
        let keys = kr.secret_keys().context(fail)?;
        let infos: Vec<KeyInfo> = keys.iter().map(pgp::secret_info).collect();
        let i = choose_key(&infos, a.keyidx, &kr.secret_path()).context(fail)?;
        let bytes = if a.armor {
            keys[i]
                .to_armored_bytes(ArmorOptions::default())
                .map_err(|e| e.to_string())
        } else {
            pgp::to_binary(std::slice::from_ref(&keys[i]))
        }
        .map_err(|e| anyhow!("{fail}: {e}"))?;
        (bytes, infos[i].fingerprint.clone(), "Private")
    } else {
        let (keys, path): (_, PathBuf) = if a.global {
            let g = GlobalKeyring::detect()?;
            (g.public_keys().context(fail)?, g.path())
        } else {
            let kr = local(&a.keysdir)?;
            (kr.public_keys().context(fail)?, kr.public_path())
        };
        let infos: Vec<KeyInfo> = keys.iter().map(pgp::public_info).collect();
        let i = choose_key(&infos, a.keyidx, &path).context(fail)?;
        let bytes = if a.armor {
            keys[i]
                .to_armored_bytes(ArmorOptions::default())
                .map_err(|e| e.to_string())
        } else {
            pgp::to_binary(std::slice::from_ref(&keys[i]))
        }
        .map_err(|e| anyhow!("{fail}: {e}"))?;
        (bytes, infos[i].fingerprint.clone(), "Public")
    };
    let mut f = create_export(&a.file, a.secret).context(fail)?;
    f.write_all(&bytes)
        .with_context(|| format!("{fail}: writing {}", a.file.display()))?;
    println!(
        "{what} key with fingerprint {fp} correctly exported to file: {}",
        a.file.display()
    );
    Ok(())
}

fn remove(a: &RemoveArgs) -> anyhow::Result<()> {
    let fp = parse_fingerprint(&a.fingerprint).context("Unable to remove public key")?;
    if a.global {
        if a.private || a.both {
            bail!("the global keyring holds public keys only; remove without --private/--both");
        }
        let g = GlobalKeyring::detect()?;
        g.remove(&fp, euid())
            .context("Unable to remove public key")?;
        return Ok(());
    }
    let which = if a.both {
        RemoveWhich::Both
    } else if a.private {
        RemoveWhich::Private
    } else {
        RemoveWhich::Public
    };
    let kr = local(&a.keysdir)?;
    let what = match which {
        RemoveWhich::Public => "Unable to remove public key",
        RemoveWhich::Private => "Unable to remove private key",
        RemoveWhich::Both => "Unable to remove key",
    };
    kr.remove(&fp, which).context(what)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(users: &[&str]) -> KeyInfo {
        KeyInfo {
            user_ids: users.iter().map(|u| u.to_string()).collect(),
            fingerprint: "12045C8C0B1004D058DE4BEDA20C27EE7FF7BA84".into(),
            created: 1_588_023_280,
            bits: 2048,
            encrypted: false,
        }
    }

    #[test]
    fn test_user_text_is_name_comment_email() {
        assert_eq!(
            user_text("Unit Test <unit@test.com>"),
            "Unit Test () <unit@test.com>"
        );
        assert_eq!(
            user_text("name 1 (comment 1) <email.1@example.org>"),
            "name 1 (comment 1) <email.1@example.org>"
        );
        assert_eq!(user_text("Only Name"), "Only Name () <>");
        assert_eq!(user_text("<a@b>"), " () <a@b>");
        assert_eq!(user_text("N (c"), "N (c) <>");
        assert_eq!(user_text(""), " () <>");
    }

    #[test]
    fn test_go_time_text() {
        let wall = chrono::DateTime::from_timestamp(1_588_023_280, 0)
            .expect("time")
            .naive_utc();
        assert_eq!(
            go_time_text(wall, 0, "UTC"),
            "2020-04-27 21:34:40 +0000 UTC"
        );
        assert_eq!(
            go_time_text(wall, 9 * 3600, "JST"),
            "2020-04-27 21:34:40 +0900 JST"
        );
        assert_eq!(
            go_time_text(wall, -(3 * 3600 + 1800), ""),
            "2020-04-27 21:34:40 -0330 -0330"
        );
    }

    #[test]
    fn test_entries_text_layout() {
        let text = entries_text(&[info(&["Unit Test <unit@test.com>", "Alias <a@b>"])]);
        let created = local_time_text(1_588_023_280);
        assert_eq!(
            text,
            format!(
                "0)  User:              Unit Test () <unit@test.com>\n\
             \x20   User:              Alias () <a@b>\n\
             \x20   Creation time:     {created}\n\
             \x20   Fingerprint:       12045C8C0B1004D058DE4BEDA20C27EE7FF7BA84\n\
             \x20   Length (in bits):  2048\n\n"
            )
        );
        assert_eq!(entries_text(&[]), "");
    }
}
