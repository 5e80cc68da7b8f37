//! The payload's capability set, computed from `--add-caps`, `--drop-caps`, `--no-privs` and
//! `--keep-privs` as Apptainer does in its user-namespace (non-setuid) mode. Pure: no system
//! calls; `security::apply_caps` carries the result out.
//!
//! Apptainer gives the one computed list to all five sets (permitted, effective, inheritable,
//! bounding, ambient), and so does sifr:
//! - a payload that is not root (no `--fakeroot`): `--add-caps` less `--drop-caps`
//!   (prepareUserCaps, not enforced without setuid: capability.json is not consulted), so a
//!   plain run holds nothing, bounding set included; an added capability is ambient, so it
//!   survives execve for the ordinary user;
//! - container root (`--fakeroot`): every capability (Apptainer's "full" default for root in
//!   a user namespace), none with `--no-privs`, then `--add-caps` added and `--drop-caps`
//!   removed (prepareRootCaps).
//!
//! Every capability is one in the user namespace sifr created, never one on the host.

use caps::Capability;

/// A set of capabilities, as a bit mask by capability number (bit N is capability N).
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct CapMask(pub u64);

impl CapMask {
    /// Every capability sifr knows by name (those the running kernel lacks are skipped when
    /// the set is applied).
    pub fn all() -> CapMask {
        CapMask(caps::all().iter().fold(0, |m, c| m | c.bitmask()))
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn contains(self, cap: Capability) -> bool {
        self.0 & cap.bitmask() != 0
    }

    /// The capabilities in the set, by number.
    pub fn iter(self) -> impl Iterator<Item = Capability> {
        let mut all: Vec<Capability> = caps::all().into_iter().collect();
        all.sort_by_key(|c| c.index());
        all.into_iter().filter(move |c| self.contains(*c))
    }
}

impl std::fmt::Debug for CapMask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

/// The capability flags as given on the command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CapOptions {
    /// `--add-caps` (comma-separated names; `all`).
    pub add: Option<String>,
    /// `--drop-caps`.
    pub drop: Option<String>,
    /// `--no-privs`.
    pub no_privs: bool,
    /// `--keep-privs`.
    pub keep_privs: bool,
}

/// A capability flag that cannot be honoured.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CapError {
    #[error(
        "{flag}: unknown capability \"{name}\" (expected names such as CAP_CHOWN or chown, \
         comma-separated, or all; see 'man 7 capabilities')"
    )]
    Unknown { flag: &'static str, name: String },
    #[error(
        "--keep-privs requires root privileges (sifr never runs with them; with --fakeroot \
         container root already keeps its capabilities: drop --keep-privs)"
    )]
    KeepPrivs,
}

/// Parses a comma-separated list as Apptainer does: blanks trimmed, any case, `CAP_` optional,
/// `all` for every capability. An empty item is skipped; an unknown name is refused.
pub fn parse_list(flag: &'static str, list: &str) -> Result<CapMask, CapError> {
    let mut mask = CapMask::default();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let upper = item.to_ascii_uppercase();
        let name = if upper.starts_with("CAP_") {
            upper
        } else {
            format!("CAP_{upper}")
        };
        if name == "CAP_ALL" {
            mask.0 |= CapMask::all().0;
            continue;
        }
        let cap: Capability = name.parse().map_err(|_| CapError::Unknown {
            flag,
            name: item.to_string(),
        })?;
        mask.0 |= cap.bitmask();
    }
    Ok(mask)
}

/// The payload's capabilities. `root`: the payload is container root (`--fakeroot`);
/// `root_mapped`: sifr runs as Apptainer's root-mapped re-execution does (caller not in
/// /etc/subuid), where Apptainer runs as uid 0 and accepts `--keep-privs`.
pub fn compute(o: &CapOptions, root: bool, root_mapped: bool) -> Result<CapMask, CapError> {
    let add = o
        .add
        .as_deref()
        .map_or(Ok(CapMask::default()), |l| parse_list("--add-caps", l))?;
    let drop = o
        .drop
        .as_deref()
        .map_or(Ok(CapMask::default()), |l| parse_list("--drop-caps", l))?;
    if o.keep_privs && !(root && root_mapped) {
        return Err(CapError::KeepPrivs);
    }
    let base = if root && !o.no_privs {
        CapMask::all()
    } else {
        CapMask::default()
    };
    Ok(CapMask((base.0 | add.0) & !drop.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use Capability::*;

    fn mask(list: &[Capability]) -> CapMask {
        CapMask(list.iter().fold(0, |m, c| m | c.bitmask()))
    }

    fn opts(add: Option<&str>, drop: Option<&str>, no_privs: bool) -> CapOptions {
        CapOptions {
            add: add.map(String::from),
            drop: drop.map(String::from),
            no_privs,
            keep_privs: false,
        }
    }

    #[test]
    fn test_names_any_case_with_or_without_prefix_and_all() {
        assert_eq!(
            parse_list("--drop-caps", "CAP_CHOWN, sys_admin,Cap_Net_Raw,,").expect("names"),
            mask(&[CAP_CHOWN, CAP_SYS_ADMIN, CAP_NET_RAW])
        );
        assert_eq!(
            parse_list("--add-caps", "all").expect("all"),
            CapMask::all()
        );
        assert_eq!(parse_list("--add-caps", "").expect("empty"), CapMask(0));
        assert_eq!(
            parse_list("--drop-caps", "chown,CAP_FLY"),
            Err(CapError::Unknown {
                flag: "--drop-caps",
                name: "CAP_FLY".into()
            })
        );
        let e = parse_list("--add-caps", "nosuch").expect_err("unknown");
        assert!(
            e.to_string()
                .starts_with("--add-caps: unknown capability \"nosuch\"")
        );
    }

    #[test]
    fn test_plain_payload_holds_only_what_was_added() {
        assert!(
            compute(&CapOptions::default(), false, false)
                .expect("plain")
                .is_empty()
        );
        // --no-privs changes nothing for an ordinary user.
        assert!(
            compute(&opts(None, None, true), false, false)
                .expect("no-privs")
                .is_empty()
        );
        assert_eq!(
            compute(
                &opts(Some("net_raw,chown"), Some("chown"), false),
                false,
                false
            )
            .expect("add"),
            mask(&[CAP_NET_RAW])
        );
    }

    #[test]
    fn test_fakeroot_full_less_dropped_or_none_with_no_privs() {
        let full = compute(&CapOptions::default(), true, false).expect("fakeroot");
        assert_eq!(full, CapMask::all());
        assert!(full.contains(CAP_SYS_ADMIN) && full.contains(CAP_CHOWN));
        let dropped =
            compute(&opts(None, Some("CAP_CHOWN,sys_admin"), false), true, false).expect("drop");
        assert_eq!(
            dropped,
            CapMask(CapMask::all().0 & !mask(&[CAP_CHOWN, CAP_SYS_ADMIN]).0)
        );
        assert!(
            compute(&opts(None, Some("all"), false), true, false)
                .expect("drop all")
                .is_empty()
        );
        assert!(
            compute(&opts(None, None, true), true, false)
                .expect("no-privs")
                .is_empty()
        );
        // As prepareRootCaps: --add-caps still adds after --no-privs.
        assert_eq!(
            compute(&opts(Some("CAP_CHOWN"), None, true), true, false).expect("add"),
            mask(&[CAP_CHOWN])
        );
    }

    #[test]
    fn test_keep_privs_only_where_apptainer_runs_as_uid_0() {
        let keep = CapOptions {
            keep_privs: true,
            ..CapOptions::default()
        };
        assert_eq!(compute(&keep, false, false), Err(CapError::KeepPrivs));
        assert_eq!(compute(&keep, true, false), Err(CapError::KeepPrivs));
        assert_eq!(compute(&keep, true, true), Ok(CapMask::all()));
        // --no-privs wins over --keep-privs, as in prepareRootCaps.
        let both = CapOptions {
            no_privs: true,
            ..keep
        };
        assert!(compute(&both, true, true).expect("both").is_empty());
    }

    #[test]
    fn test_debug_lists_names() {
        assert_eq!(
            format!("{:?}", mask(&[CAP_SYS_ADMIN, CAP_CHOWN])),
            "{CAP_CHOWN, CAP_SYS_ADMIN}"
        );
    }
}
