//! Choosing one key of a keyring for `sign` and `key export`: the index given, the only key,
//! or the one the user picks on the terminal from the listing Apptainer shows for each.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::keytext::{entries_text, local_time_text, user_text};
use super::password::{self, PasswordError};
use super::pgp::KeyInfo;

/// Why no key was chosen.
#[derive(Debug, thiserror::Error)]
pub enum ChooseError {
    #[error(
        "keyring is empty: no key in {}; create one with 'key newpair' or add one with 'key import'",
        path.display()
    )]
    Empty { path: PathBuf },
    #[error(
        "index out of range: key {index} requested, but {} holds {count} key(s) (see 'key list')",
        path.display()
    )]
    OutOfRange {
        index: usize,
        path: PathBuf,
        count: usize,
    },
    #[error("{} holds {count} keys; choose one with --keyidx N (see 'key list')", path.display())]
    NeedIndex { path: PathBuf, count: usize },
    #[error("\"{answer}\" is not a key number from 0 to {last}")]
    NotANumber { answer: String, last: usize },
    #[error(transparent)]
    Password(#[from] PasswordError),
}

/// The short listing shown when choosing a key (Apptainer's `printEntityAtIndex`): user ids
/// and creation time formatted as `key list` formats them.
fn choice_text(keys: &[KeyInfo]) -> String {
    let mut out = String::new();
    for (i, k) in keys.iter().enumerate() {
        for u in &k.user_ids {
            out.push_str(&format!("{i}) U: {}\n", user_text(u)));
        }
        out.push_str(&format!("   C: {}\n", local_time_text(k.created)));
        out.push_str(&format!("   F: {}\n", k.fingerprint));
        out.push_str(&format!("   L: {}\n", k.bits));
        out.push_str("   --------\n");
    }
    out
}

/// What the key is chosen for: Apptainer lists and asks differently for each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// `sign`: the short listing, a private key.
    Sign,
    /// `key export`: the `key list` entries, a public key.
    ExportPublic,
    /// `key export --secret`: the `key list` entries, a private key.
    ExportPrivate,
}

/// The listing printed before asking, and the question, as Apptainer's (`sign`'s
/// `selectEntityInteractive`, sypgp's `selectPubKey` and `SelectPrivKey` for `key export`).
fn asking(keys: &[KeyInfo], purpose: Purpose) -> (String, String) {
    match purpose {
        Purpose::Sign => (
            choice_text(keys),
            "Enter # of private key to use : ".to_string(),
        ),
        Purpose::ExportPublic => (
            entries_text(keys),
            "Enter # of public key to use : ".to_string(),
        ),
        Purpose::ExportPrivate => (
            entries_text(keys),
            "Enter # of private key to use : ".to_string(),
        ),
    }
}

/// Picks a key: `keyidx` if given, the only key if there is one, else asks on the terminal.
/// `what` names the keyring file in messages.
pub fn choose_key(
    keys: &[KeyInfo],
    keyidx: Option<usize>,
    what: &Path,
    purpose: Purpose,
) -> Result<usize, ChooseError> {
    if keys.is_empty() {
        return Err(ChooseError::Empty {
            path: what.to_path_buf(),
        });
    }
    if let Some(i) = keyidx {
        if i >= keys.len() {
            return Err(ChooseError::OutOfRange {
                index: i,
                path: what.to_path_buf(),
                count: keys.len(),
            });
        }
        return Ok(i);
    }
    if keys.len() == 1 {
        return Ok(0);
    }
    if !password::has_terminal() {
        return Err(ChooseError::NeedIndex {
            path: what.to_path_buf(),
            count: keys.len(),
        });
    }
    let (listing, prompt) = asking(keys, purpose);
    print!("{listing}");
    let _ = std::io::stdout().flush();
    let answer = password::ask(&prompt, true)?.unwrap_or_default();
    match answer.trim().parse::<usize>() {
        Ok(i) if i < keys.len() => Ok(i),
        _ => Err(ChooseError::NotANumber {
            answer: answer.trim().to_string(),
            last: keys.len() - 1,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sign::keytext::tests::info;

    #[test]
    fn test_choose_key_rules() {
        let p = Path::new("/k/pgp-secret");
        let err = choose_key(&[], None, p, Purpose::Sign).expect_err("empty");
        assert!(err.to_string().starts_with("keyring is empty"), "{err}");
        assert_eq!(
            choose_key(&[info(&["a"])], None, p, Purpose::Sign).expect("only"),
            0
        );
        let two = [info(&["a"]), info(&["b"])];
        assert_eq!(
            choose_key(&two, Some(1), p, Purpose::ExportPublic).expect("index"),
            1
        );
        let err = choose_key(&two, Some(2), p, Purpose::ExportPrivate).expect_err("out of range");
        assert!(err.to_string().starts_with("index out of range"), "{err}");
    }

    /// The listing `sign` shows before asking is Apptainer's `printEntityAtIndex`: the user id
    /// split as `Name (Comment) <Email>` and the creation time in local time, formatted as
    /// `key list` formats them.
    #[test]
    fn test_choice_text_is_apptainer_listing() {
        let text = choice_text(&[info(&["Unit Test <unit@test.com>", "Alias (c) <a@b>"])]);
        let created = local_time_text(1_588_023_280);
        assert_eq!(
            text,
            format!(
                "0) U: Unit Test () <unit@test.com>\n\
                 0) U: Alias (c) <a@b>\n   \
                 C: {created}\n   \
                 F: 12045C8C0B1004D058DE4BEDA20C27EE7FF7BA84\n   \
                 L: 2048\n   \
                 --------\n"
            )
        );
    }

    /// What Apptainer asks: `sign` lists the short entries and asks for a private key
    /// (`printEntityAtIndex`); `key export` lists the `key list` entries and asks for a
    /// public or a private key (sypgp's `selectPubKey`, `SelectPrivKey`).
    #[test]
    fn test_asking_is_apptainers_per_purpose() {
        let keys = [info(&["A <a@x>"]), info(&["B (b) <b@x>"])];
        assert_eq!(
            asking(&keys, Purpose::Sign),
            (
                choice_text(&keys),
                "Enter # of private key to use : ".to_string()
            )
        );
        assert_eq!(
            asking(&keys, Purpose::ExportPublic),
            (
                entries_text(&keys),
                "Enter # of public key to use : ".to_string()
            )
        );
        assert_eq!(
            asking(&keys, Purpose::ExportPrivate),
            (
                entries_text(&keys),
                "Enter # of private key to use : ".to_string()
            )
        );
    }
}
