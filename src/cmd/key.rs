//! `key newpair|list|import|export|remove|search|pull|push`: the user's and the global
//! keyrings and HKP keyservers, with Apptainer's output lines.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow, bail};

use super::Context;
use crate::cli::key::{
    ExportArgs, ImportArgs, KeyAlgorithm, KeyArgs, KeyCommand, KeysDirArg, ListArgs, NewpairArgs,
    PullArgs, PushArgs, RemoveArgs, SearchArgs,
};
use crate::sign::hkp::{self, HkpClient};
use crate::sign::keychoice::{Purpose, choose_key};
use crate::sign::keyring::{
    GlobalKeyring, LocalKeyring, RemoveWhich, parse_fingerprint, read_key_file,
};
use crate::sign::keyservers::{self, KeyserverList};
use crate::sign::keytext::entries_text;
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
        // As Apptainer's: a keyserver that cannot be set up is fatal (255); everything
        // after (the server down or refusing, no such key, a bad fingerprint) is one
        // `ERROR:` line and exit status 2.
        KeyCommand::Search(a) => {
            let c = keyserver_client(a.url.url.as_deref())?;
            return Ok(remote_status(search(&a, &c)));
        }
        KeyCommand::Pull(a) => {
            let c = keyserver_client(a.url.url.as_deref())?;
            return Ok(remote_status(pull(&a, &c)));
        }
        KeyCommand::Push(a) => {
            let c = keyserver_client(a.url.url.as_deref())?;
            return Ok(remote_status(push(&a, &c)));
        }
    }?;
    Ok(0)
}

/// Exit status of `key search|pull|push` once the keyserver client is made: a failure is
/// Apptainer's `sylog.Errorf` line and `os.Exit(2)`.
fn remote_status(r: anyhow::Result<()>) -> i32 {
    match r {
        Ok(()) => 0,
        Err(e) => {
            log::error!("{e:#}");
            KEY_REMOTE_FAILED
        }
    }
}

/// Apptainer's exit status for a failed `key search|pull|push`.
const KEY_REMOTE_FAILED: i32 = 2;

fn local(k: &KeysDirArg) -> anyhow::Result<LocalKeyring> {
    Ok(LocalKeyring::at_or_default(k.keysdir.as_deref())?)
}

fn euid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// A value from its flag, else asked on the terminal.
fn flag_or_ask(value: &Option<String>, prompt: &str, flag: &str) -> anyhow::Result<String> {
    if let Some(v) = value {
        return Ok(v.clone());
    }
    password::ask(prompt, true)?.ok_or_else(|| anyhow!("no terminal to ask on: give {flag}"))
}

fn newpair(a: &NewpairArgs) -> anyhow::Result<()> {
    let push_to = if a.push {
        Some(keyserver_client(None)?)
    } else {
        None
    };
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
    let fp = pgp::secret_info(&key).fingerprint;
    log::debug!("key pair {fp} added to {}", kr.dir().display());
    if let Some(c) = push_to {
        // As Apptainer: a failed push is reported on stdout and the new pair is kept.
        let pushed = key
            .to_public_key()
            .to_armored_string(::pgp::composed::ArmorOptions::default())
            .map_err(|e| e.to_string())
            .and_then(|armored| c.push(&armored).map_err(|e| e.to_string()));
        match pushed {
            Ok(_) => println!("Key successfully pushed to keystore"),
            Err(e) => println!("Failed to push newly created key to keystore: {e}"),
        }
    }
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
        let i = choose_key(&infos, a.keyidx, &kr.secret_path(), Purpose::ExportPrivate)
            .context(fail)?;
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
        let i = choose_key(&infos, a.keyidx, &path, Purpose::ExportPublic).context(fail)?;
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

/// The keyserver to talk to: `--url` (with its login from the keyserver list, if any),
/// else the first of the user's keyserver list. sifr has no default keyserver.
pub fn keyserver_client(url: Option<&str>) -> anyhow::Result<HkpClient> {
    let path = keyservers::default_path()?;
    let list = KeyserverList::load(&path).context("Keyserver client failed")?;
    let ks = match url {
        Some(u) => list.for_uri(u),
        None => list.keyservers.first().cloned().ok_or_else(|| {
            anyhow!(
                "Keyserver client failed: no keyserver configured: give --url URL or add one with 'keyserver add URL'"
            )
        })?,
    };
    ks.client().context("Keyserver client failed")
}

fn search(a: &SearchArgs, c: &HkpClient) -> anyhow::Result<()> {
    let mr = c.search(&a.query).map_err(|e| match e {
        hkp::HkpError::NotFound { .. } | hkp::HkpError::Status { status: 404, .. } => {
            anyhow!("search failed: no matching keys found for fingerprint")
        }
        e => anyhow!("search failed: failed to get key: {e}"),
    })?;
    match hkp::format_index(&mr, a.long_list) {
        Ok((n, text)) => {
            print!("Showing {n} results\n\n{text}");
            Ok(())
        }
        Err(e) => bail!("search failed: {e}"),
    }
}

/// The key ID or fingerprint to pull: 8 or 40 hex digits (as Apptainer) or a 16-digit key
/// ID (as the verify messages name keys), `0x` allowed.
fn pull_id(text: &str) -> anyhow::Result<String> {
    let t = text.trim();
    let t = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(t);
    if !t.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!(
            "pull failed: unable to pull key from server: failed to decode fingerprint: {text:?} is not hexadecimal"
        );
    }
    if ![8, 16, 40].contains(&t.len()) {
        bail!(
            "pull failed: unable to pull key from server: not a valid key length: only accepts 8, 16 or 40 chars"
        );
    }
    Ok(t.to_ascii_uppercase())
}

fn pull(a: &PullArgs, c: &HkpClient) -> anyhow::Result<()> {
    let id = pull_id(&a.fingerprint)?;
    let keys = c
        .fetch(&id)
        .map_err(|e| anyhow!("pull failed: unable to pull key from server: {e}"))?;
    if keys.len() > 1 {
        bail!(
            "pull failed: unable to pull key from server: server returned more than one key for unique fingerprint"
        );
    }
    // The key returned must be the one asked for.
    let got = pgp::public_info(&keys[0]).fingerprint;
    if !got.ends_with(&id) {
        bail!(
            "pull failed: unable to pull key from server: {} returned key {got}, not {id}",
            c.base()
        );
    }
    let (count, path) = if a.global {
        let g = GlobalKeyring::detect()?;
        let have = g.public_keys().context("pull failed")?;
        let new: Vec<::pgp::composed::PublicOrSecret> = keys
            .iter()
            .filter(|k| {
                let fp = pgp::public_info(k).fingerprint;
                !have.iter().any(|h| pgp::public_info(h).fingerprint == fp)
            })
            .map(|k| ::pgp::composed::PublicOrSecret::Public(k.clone()))
            .collect();
        let n = if new.is_empty() {
            0
        } else {
            g.import(&new, euid()).context("pull failed")?.len()
        };
        (n, g.path())
    } else {
        let kr = local(&a.keysdir)?;
        (
            kr.add_public(&keys).context("pull failed")?,
            kr.public_path(),
        )
    };
    println!(
        "{count} key(s) added to keyring of trust {}",
        path.display()
    );
    Ok(())
}

fn push(a: &PushArgs, c: &HkpClient) -> anyhow::Result<()> {
    let keys = if a.global {
        GlobalKeyring::detect()?
            .public_keys()
            .context("push failed")?
    } else {
        local(&a.keysdir)?.public_keys().context("push failed")?
    };
    if keys.is_empty() {
        bail!("push failed: no public keys in local store to choose from");
    }
    let fp = a.fingerprint.trim();
    let fp = fp
        .strip_prefix("0x")
        .or_else(|| fp.strip_prefix("0X"))
        .unwrap_or(fp);
    if (fp.len() != 16 && fp.len() != 40) || !fp.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("push failed: please provide a keyid(16 chars) or a full fingerprint(40 chars)");
    }
    let want = fp.to_ascii_uppercase();
    let found: Vec<_> = keys
        .iter()
        .filter(|k| pgp::public_info(k).fingerprint.ends_with(&want))
        .collect();
    if found.len() != 1 {
        bail!("push failed: could not find the requested key");
    }
    let armored = found[0]
        .to_armored_string(::pgp::composed::ArmorOptions::default())
        .map_err(|e| anyhow!("push failed: {e}"))?;
    let reply = c
        .push(&armored)
        .map_err(|e| anyhow!("push failed: key server did not accept PGP key: {e}"))?;
    if !reply.is_empty() {
        log::info!("Key server response: {reply}");
    }
    println!(
        "public key `{}' pushed to server successfully",
        a.fingerprint
    );
    Ok(())
}
