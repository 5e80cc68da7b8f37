//! Who a subordinate-id entry is for: a user known by uid and, when the account database
//! has it, by name. Lookups go through `nix` (getpwnam_r/getpwuid_r, so NSS sources count).

use std::fmt;

use nix::unistd::{Uid, User};

/// A user as `/etc/subuid` entries refer to it: by name or by numeric uid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRef {
    /// The login name, when the account database knows the uid.
    pub name: Option<String>,
    /// The numeric user id.
    pub uid: u32,
}

/// Why a user could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    /// Neither a known login name nor a known numeric uid.
    #[error(
        "no such user {spec:?}: it is neither a login name nor a uid in the account database (check `getent passwd {spec}`)"
    )]
    Unknown { spec: String },
    /// The account database itself failed.
    #[error("cannot look up user {spec:?} in the account database: {source}")]
    Lookup {
        spec: String,
        #[source]
        source: nix::Error,
    },
}

impl UserRef {
    /// A user known only by number (no account database lookup).
    pub fn uid(uid: u32) -> UserRef {
        UserRef { name: None, uid }
    }

    /// A user with both name and uid, as given (no lookup).
    pub fn named(name: &str, uid: u32) -> UserRef {
        UserRef {
            name: Some(name.to_owned()),
            uid,
        }
    }

    /// Resolves `uid` to a name when the account database has one. A uid without an
    /// account is still a valid user for numeric subuid entries, so this never fails; a
    /// failing lookup just leaves the name out.
    pub fn from_uid(uid: u32) -> UserRef {
        let name = User::from_uid(Uid::from_raw(uid))
            .ok()
            .flatten()
            .map(|u| u.name);
        UserRef { name, uid }
    }

    /// Resolves a command-line user argument: a login name first, then a numeric uid that
    /// has an account (as Apptainer's `config fakeroot` requires an existing user).
    pub fn lookup(spec: &str) -> Result<UserRef, UserError> {
        let lookup_err = |source| UserError::Lookup {
            spec: spec.to_owned(),
            source,
        };
        if let Some(u) = User::from_name(spec).map_err(lookup_err)? {
            return Ok(UserRef {
                name: Some(u.name),
                uid: u.uid.as_raw(),
            });
        }
        if let Ok(uid) = spec.parse::<u32>()
            && let Some(u) = User::from_uid(Uid::from_raw(uid)).map_err(lookup_err)?
        {
            return Ok(UserRef {
                name: Some(u.name),
                uid,
            });
        }
        Err(UserError::Unknown {
            spec: spec.to_owned(),
        })
    }

    /// True when a subid entry's owner field names this user, by login name or by uid
    /// written in plain decimal (the two forms shadow's newuidmap accepts).
    pub fn is_owner(&self, owner: &str) -> bool {
        if self.name.as_deref() == Some(owner) {
            return true;
        }
        is_plain_decimal(owner) && owner.parse::<u32>() == Ok(self.uid)
    }

    /// The name for messages and commands: the login name, else the uid.
    pub fn display_name(&self) -> String {
        match &self.name {
            Some(n) => n.clone(),
            None => self.uid.to_string(),
        }
    }
}

impl fmt::Display for UserRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(n) => write!(f, "{n} (uid {})", self.uid),
            None => write!(f, "uid {}", self.uid),
        }
    }
}

/// Digits only, no sign, no leading zero (except "0" itself).
pub(crate) fn is_plain_decimal(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_is_owner_by_name_and_uid() {
        let u = UserRef::named("alice", 1000);
        assert!(u.is_owner("alice"));
        assert!(u.is_owner("1000"));
        assert!(!u.is_owner("01000"));
        assert!(!u.is_owner("bob"));
        assert!(!u.is_owner("1001"));
        let n = UserRef::uid(1000);
        assert!(n.is_owner("1000"));
        assert!(!n.is_owner("alice"));
    }

    #[test]
    fn test_lookup_root_by_name_and_uid() {
        // root exists on every Linux system this runs on.
        let by_name = UserRef::lookup("root").expect("root resolves");
        assert_eq!(by_name.uid, 0);
        let by_uid = UserRef::lookup("0").expect("uid 0 resolves");
        assert_eq!(by_uid.name.as_deref(), Some("root"));
    }

    #[test]
    fn test_lookup_unknown_user_names_it() {
        let err = UserRef::lookup("no-such-user-sifr-test").expect_err("unknown");
        assert!(err.to_string().contains("no-such-user-sifr-test"), "{err}");
    }

    #[test]
    fn test_display() {
        assert_eq!(UserRef::named("alice", 7).to_string(), "alice (uid 7)");
        assert_eq!(UserRef::uid(7).to_string(), "uid 7");
        assert_eq!(UserRef::uid(7).display_name(), "7");
    }
}
