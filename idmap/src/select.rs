//! Choosing the caller's usable subordinate range, or saying exactly why there is none.
//!
//! A range is usable when it is enabled, holds at least [`FAKEROOT_IDS`] ids, and its
//! first [`FAKEROOT_IDS`] ids (the part that gets mapped) contain neither an id of a real
//! host account nor the caller's own id. Among usable ranges the largest wins, as in
//! Apptainer; on a tie the earlier line wins.

use std::fmt;
use std::path::PathBuf;

use crate::hostids::HostIds;
use crate::subid::{SubidEntry, SubidFile};
use crate::user::UserRef;

/// Ids a fakeroot range must hold: container ids 1..=65536 map onto it.
pub const FAKEROOT_IDS: u32 = 65536;

/// Whether a file holds uid or gid ranges (only changes the wording).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    /// /etc/subuid and host uids.
    Uid,
    /// /etc/subgid and host gids.
    Gid,
}

impl IdKind {
    fn word(self) -> &'static str {
        match self {
            IdKind::Uid => "uid",
            IdKind::Gid => "gid",
        }
    }
}

/// The range chosen for the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubidRange {
    /// The file it came from.
    pub path: PathBuf,
    /// Its 1-based line number.
    pub line: usize,
    /// First host id.
    pub start: u32,
    /// Ids in the entry (at least [`FAKEROOT_IDS`]; only that many are mapped).
    pub count: u32,
}

/// Why one of the caller's entries cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// `!`-prefixed by the administrator.
    Disabled,
    /// Fewer than [`FAKEROOT_IDS`] ids.
    TooSmall,
    /// The mapped part contains the id of a host account.
    HostId {
        /// The lowest such id.
        id: u32,
        /// The account (or group) that has it.
        name: String,
    },
    /// The mapped part contains the caller's own id.
    CallerId {
        /// The caller's uid or gid.
        id: u32,
    },
}

/// One rejected entry and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// The entry.
    pub entry: SubidEntry,
    /// Why it cannot be used.
    pub why: Rejection,
}

/// Why the caller has no usable range in a file. `Display` gives one line: what is wrong,
/// where, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoRange {
    /// No line names the user, by login name or by uid.
    NoEntry {
        path: PathBuf,
        user: UserRef,
        kind: IdKind,
    },
    /// Lines name the user but none is usable.
    Rejected {
        path: PathBuf,
        user: UserRef,
        kind: IdKind,
        rejected: Vec<Rejected>,
    },
}

impl fmt::Display for NoRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NoRange::NoEntry { path, user, .. } => write!(
                f,
                "no entry for user {user} in {} (by name or uid): ask the administrator to run `sifr config fakeroot --add {}` as root",
                path.display(),
                user.display_name()
            ),
            NoRange::Rejected {
                path,
                user,
                kind,
                rejected,
            } => {
                let name = user.display_name();
                let all = |p: fn(&Rejection) -> bool| rejected.iter().all(|r| p(&r.why));
                if all(|w| matches!(w, Rejection::Disabled)) {
                    let lines: Vec<String> =
                        rejected.iter().map(|r| r.entry.line.to_string()).collect();
                    return write!(
                        f,
                        "the fakeroot mapping of user {user} in {} (line {}) has been disabled by the administrator: ask them to run `sifr config fakeroot --enable {name}`",
                        path.display(),
                        lines.join(", ")
                    );
                }
                if all(|w| matches!(w, Rejection::TooSmall)) {
                    let ranges: Vec<String> = rejected
                        .iter()
                        .map(|r| format!("{} (line {})", r.entry, r.entry.line))
                        .collect();
                    return write!(
                        f,
                        "user {user} has only ranges smaller than {FAKEROOT_IDS} ids in {}: {}; fakeroot needs {FAKEROOT_IDS}: run `sifr config fakeroot --add {name}` as root, or ask the administrator to",
                        path.display(),
                        ranges.join(", ")
                    );
                }
                let reasons: Vec<String> = rejected
                    .iter()
                    .map(|r| describe(&r.entry, &r.why, *kind))
                    .collect();
                write!(
                    f,
                    "no usable fakeroot range for user {user} in {}: {}; {}",
                    path.display(),
                    reasons.join("; "),
                    fix_hint(rejected, &name)
                )
            }
        }
    }
}

fn describe(e: &SubidEntry, why: &Rejection, kind: IdKind) -> String {
    let what = match why {
        Rejection::Disabled => "is disabled by the administrator".to_owned(),
        Rejection::TooSmall => format!("has {} ids, fewer than {FAKEROOT_IDS}", e.count),
        Rejection::HostId { id, name } => {
            format!("overlaps host {} {id} ({name})", kind.word())
        }
        Rejection::CallerId { id } => format!("includes your own {} {id}", kind.word()),
    };
    format!("line {} ({e}) {what}", e.line)
}

fn fix_hint(rejected: &[Rejected], name: &str) -> String {
    let overlap = rejected
        .iter()
        .any(|r| matches!(r.why, Rejection::HostId { .. } | Rejection::CallerId { .. }));
    if overlap {
        format!(
            "a subordinate range must not contain ids of real accounts: ask the administrator to move it (`sifr config fakeroot --remove {name}`, then `--add {name}`)"
        )
    } else {
        format!("ask the administrator to run `sifr config fakeroot --add {name}` as root")
    }
}

/// Picks the caller's usable range in `file`, or says why there is none.
///
/// `host` holds the ids of real accounts (uids for /etc/subuid, gids for /etc/subgid) and
/// `caller_id` the caller's own uid or gid.
pub fn select_range(
    file: &SubidFile,
    user: &UserRef,
    kind: IdKind,
    host: &HostIds,
    caller_id: u32,
) -> Result<SubidRange, NoRange> {
    let mut best: Option<&SubidEntry> = None;
    let mut rejected = Vec::new();
    for e in file.entries_for(user) {
        match check(e, host, caller_id) {
            Some(why) => rejected.push(Rejected {
                entry: e.clone(),
                why,
            }),
            None => {
                if best.is_none_or(|b| e.count > b.count) {
                    best = Some(e);
                }
            }
        }
    }
    if let Some(e) = best {
        return Ok(SubidRange {
            path: file.path().to_owned(),
            line: e.line,
            start: e.start,
            count: e.count,
        });
    }
    if rejected.is_empty() {
        Err(NoRange::NoEntry {
            path: file.path().to_owned(),
            user: user.clone(),
            kind,
        })
    } else {
        Err(NoRange::Rejected {
            path: file.path().to_owned(),
            user: user.clone(),
            kind,
            rejected,
        })
    }
}

/// Why `e` is not usable, or `None` when it is.
fn check(e: &SubidEntry, host: &HostIds, caller_id: u32) -> Option<Rejection> {
    if e.disabled {
        return Some(Rejection::Disabled);
    }
    if e.count < FAKEROOT_IDS {
        return Some(Rejection::TooSmall);
    }
    let start = u64::from(e.start);
    let end = start + u64::from(FAKEROOT_IDS);
    if (start..end).contains(&u64::from(caller_id)) {
        return Some(Rejection::CallerId { id: caller_id });
    }
    if let Some((id, name)) = host.first_in(start, end) {
        return Some(Rejection::HostId {
            id,
            name: name.to_owned(),
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn file(text: &str) -> SubidFile {
        SubidFile::parse(Path::new("/etc/subuid"), text.as_bytes())
    }

    fn host() -> HostIds {
        HostIds::parse(
            b"root:x:0:0::/:/bin/sh\nalice:x:1000:1000::/:/bin/sh\nsvc:x:300000:1::/:/bin/sh\n",
        )
    }

    fn alice() -> UserRef {
        UserRef::named("alice", 1000)
    }

    fn pick(text: &str) -> Result<SubidRange, NoRange> {
        select_range(&file(text), &alice(), IdKind::Uid, &host(), 1000)
    }

    #[test]
    fn test_select_by_name() {
        let r = pick("bob:1:65536\nalice:100000:65536\n").expect("usable");
        assert_eq!((r.start, r.count, r.line), (100000, 65536, 2));
        assert_eq!(r.path, Path::new("/etc/subuid"));
    }

    #[test]
    fn test_select_by_uid() {
        let r = pick("1000:200000:65536\n").expect("usable");
        assert_eq!(r.start, 200000);
    }

    #[test]
    fn test_largest_usable_wins_and_tie_keeps_first() {
        let r =
            pick("alice:100000:65536\nalice:400000:100000\nalice:600000:100000\n").expect("usable");
        assert_eq!((r.start, r.line), (400000, 2));
        // The largest overall is rejected (overlaps svc's uid 300000): the next one wins.
        let r = pick("alice:100000:65536\nalice:250000:200000\n").expect("usable");
        assert_eq!(r.start, 100000);
    }

    #[test]
    fn test_no_entry_message() {
        let err = pick("bob:100000:65536\n").expect_err("none");
        assert!(matches!(err, NoRange::NoEntry { .. }));
        let msg = err.to_string();
        assert!(
            msg.contains("no entry for user alice (uid 1000) in /etc/subuid"),
            "{msg}"
        );
        assert!(msg.contains("sifr config fakeroot --add alice"), "{msg}");
    }

    #[test]
    fn test_disabled_message() {
        let err = pick("!alice:100000:65536\n").expect_err("disabled");
        let msg = err.to_string();
        assert!(msg.contains("disabled by the administrator"), "{msg}");
        assert!(msg.contains("(line 1)"), "{msg}");
        assert!(msg.contains("--enable alice"), "{msg}");
    }

    #[test]
    fn test_too_small_lists_ranges() {
        let err = pick("alice:100000:1000\n1000:200000:65535\n").expect_err("small");
        let msg = err.to_string();
        assert!(
            msg.contains("only ranges smaller than 65536 ids in /etc/subuid: 100000:1000 (line 1), 200000:65535 (line 2)"),
            "{msg}"
        );
        assert!(msg.contains("sifr config fakeroot --add alice"), "{msg}");
    }

    #[test]
    fn test_overlap_host_id_and_caller() {
        let err = pick("alice:0:65536\n").expect_err("overlap");
        let msg = err.to_string();
        assert!(
            msg.contains("line 1 (0:65536) includes your own uid 1000"),
            "{msg}"
        );
        assert!(
            msg.contains("must not contain ids of real accounts"),
            "{msg}"
        );
        let err = pick("alice:250000:65536\n").expect_err("overlap");
        let NoRange::Rejected { rejected, .. } = &err else {
            panic!("expected Rejected, got {err:?}");
        };
        assert_eq!(
            rejected[0].why,
            Rejection::HostId {
                id: 300000,
                name: "svc".into()
            }
        );
        assert!(err.to_string().contains("overlaps host uid 300000 (svc)"));
    }

    #[test]
    fn test_overlap_only_checks_mapped_part() {
        // 280000..345536 is mapped; svc's 300000 is inside. 200000..265536 is not.
        assert!(pick("alice:280000:65536\n").is_err());
        let r = pick("alice:200000:200000\n").expect("mapped part is clear");
        assert_eq!(r.count, 200000);
    }

    #[test]
    fn test_mixed_rejections_list_each_line() {
        let err = pick("!alice:100000:65536\nalice:500000:10\n").expect_err("none");
        let msg = err.to_string();
        assert!(
            msg.contains("line 1 (100000:65536) is disabled by the administrator"),
            "{msg}"
        );
        assert!(
            msg.contains("line 2 (500000:10) has 10 ids, fewer than 65536"),
            "{msg}"
        );
        assert_eq!(msg.lines().count(), 1);
    }

    #[test]
    fn test_gid_wording() {
        let err = select_range(
            &file("alice:0:65536\n"),
            &alice(),
            IdKind::Gid,
            &host(),
            1000,
        )
        .expect_err("overlap");
        assert!(
            err.to_string().contains("includes your own gid 1000"),
            "{err}"
        );
    }
}
