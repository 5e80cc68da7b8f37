//! Id-map plans: plain values saying which uid_map/gid_map lines a new user namespace gets.
//!
//! - [`IdMaps::single`]: the caller as itself (uid→uid, gid→gid, one id each), for normal
//!   runs; every other id shows as the overflow id (`nobody`).
//! - [`plan_fakeroot`]: for `--fakeroot`, either the full subordinate-id mapping (container
//!   0 ← caller, 1..=65536 ← the caller's /etc/subuid and /etc/subgid range, written with
//!   newuidmap/newgidmap) or, when that is not possible, a root-mapped namespace (container
//!   0 ← caller only) with a one-line reason saying why.
//!
//! Planning reads files but performs no namespace operation; `write::write_maps` applies a
//! plan to a process.

use std::fmt;
use std::path::PathBuf;

use crate::hostids::HostIds;
use crate::select::{FAKEROOT_IDS, IdKind, SubidRange, select_range};
use crate::subid::{Diagnostic, SubidFile};
use crate::user::UserRef;
use crate::write::{NEWGIDMAP, NEWUIDMAP, default_helper_dirs, find_helper, join_dirs};

/// One line of a uid_map or gid_map: `count` ids starting at `inside` in the namespace are
/// `outside`.. on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct IdMapping {
    /// First id inside the namespace.
    pub inside: u32,
    /// First id outside (in the parent namespace).
    pub outside: u32,
    /// Number of ids.
    pub count: u32,
}

impl IdMapping {
    /// A mapping line.
    pub const fn new(inside: u32, outside: u32, count: u32) -> IdMapping {
        IdMapping {
            inside,
            outside,
            count,
        }
    }
}

impl fmt::Display for IdMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.inside, self.outside, self.count)
    }
}

/// The uid and gid maps for one user namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdMaps {
    /// Lines for /proc/PID/uid_map.
    pub uid_map: Vec<IdMapping>,
    /// Lines for /proc/PID/gid_map.
    pub gid_map: Vec<IdMapping>,
}

impl IdMaps {
    /// The non-fakeroot map: the caller's uid and gid as themselves, one id each.
    pub fn single(uid: u32, gid: u32) -> IdMaps {
        IdMaps {
            uid_map: vec![IdMapping::new(uid, uid, 1)],
            gid_map: vec![IdMapping::new(gid, gid, 1)],
        }
    }

    /// The root-mapped map: container 0 is the caller, nothing else is mapped.
    pub fn root_mapped(uid: u32, gid: u32) -> IdMaps {
        IdMaps {
            uid_map: vec![IdMapping::new(0, uid, 1)],
            gid_map: vec![IdMapping::new(0, gid, 1)],
        }
    }

    /// The subordinate-id map: 0 ← caller, 1..=65536 ← the start of each range.
    pub fn subid(uid: u32, gid: u32, subuid_start: u32, subgid_start: u32) -> IdMaps {
        IdMaps {
            uid_map: vec![
                IdMapping::new(0, uid, 1),
                IdMapping::new(1, subuid_start, FAKEROOT_IDS),
            ],
            gid_map: vec![
                IdMapping::new(0, gid, 1),
                IdMapping::new(1, subgid_start, FAKEROOT_IDS),
            ],
        }
    }
}

impl AsRef<IdMaps> for IdMaps {
    fn as_ref(&self) -> &IdMaps {
        self
    }
}

/// Everything the fakeroot planner looks at. [`FakerootRequest::new`] fills in the system
/// locations; tests replace them with fixtures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakerootRequest {
    /// The caller's real uid.
    pub caller_uid: u32,
    /// The caller's real gid.
    pub caller_gid: u32,
    /// The caller as subid entries name it (login name and uid).
    pub user: UserRef,
    /// Usually /etc/subuid.
    pub subuid_path: PathBuf,
    /// Usually /etc/subgid.
    pub subgid_path: PathBuf,
    /// Host accounts whose uids a range must avoid; usually /etc/passwd.
    pub passwd_path: PathBuf,
    /// Host groups whose gids a range must avoid; usually /etc/group.
    pub group_path: PathBuf,
    /// Where newuidmap/newgidmap may live (never the user's PATH).
    pub helper_dirs: Vec<PathBuf>,
}

impl FakerootRequest {
    /// A request for `user` (with `caller_uid`/`caller_gid`) against the system files.
    pub fn new(caller_uid: u32, caller_gid: u32, user: UserRef) -> FakerootRequest {
        FakerootRequest {
            caller_uid,
            caller_gid,
            user,
            subuid_path: PathBuf::from("/etc/subuid"),
            subgid_path: PathBuf::from("/etc/subgid"),
            passwd_path: PathBuf::from("/etc/passwd"),
            group_path: PathBuf::from("/etc/group"),
            helper_dirs: default_helper_dirs(),
        }
    }

    /// A request for the calling process (real uid/gid, name from the account database).
    pub fn for_current_process() -> FakerootRequest {
        let uid = nix::unistd::getuid().as_raw();
        let gid = nix::unistd::getgid().as_raw();
        FakerootRequest::new(uid, gid, UserRef::from_uid(uid))
    }
}

/// Which fakeroot mode a plan uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FakerootMode {
    /// Full mapping through the caller's subordinate ranges (needs newuidmap/newgidmap).
    Subid {
        /// The chosen /etc/subuid range.
        subuid: SubidRange,
        /// The chosen /etc/subgid range.
        subgid: SubidRange,
    },
    /// Only container 0 ← caller. `reason` is one line saying why the subid mode is not
    /// used, with the fix; the launcher shows it to the user.
    RootMapped {
        /// Why the subid mode is not used, and how to fix it (one line).
        reason: String,
    },
}

/// The fakeroot plan: the mode, the maps to write, and warnings (malformed lines in the
/// subordinate-id files) the launcher should log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakerootPlan {
    /// Subid or root-mapped, with the ranges or the reason.
    pub mode: FakerootMode,
    /// The maps to hand to `write_maps`.
    pub maps: IdMaps,
    /// Malformed lines of the subordinate-id files (each already says file and line).
    pub warnings: Vec<Diagnostic>,
}

impl AsRef<IdMaps> for FakerootPlan {
    fn as_ref(&self) -> &IdMaps {
        &self.maps
    }
}

/// Plans a fakeroot user namespace for the caller described by `req`.
///
/// Never fails: anything that rules out the subid mode (no or unusable range, unreadable
/// files, missing newuidmap/newgidmap) yields [`FakerootMode::RootMapped`] with the reason.
pub fn plan_fakeroot(req: &FakerootRequest) -> FakerootPlan {
    let mut warnings = Vec::new();
    match subid_ranges(req, &mut warnings) {
        Ok((subuid, subgid)) => FakerootPlan {
            maps: IdMaps::subid(req.caller_uid, req.caller_gid, subuid.start, subgid.start),
            mode: FakerootMode::Subid { subuid, subgid },
            warnings,
        },
        Err(reason) => FakerootPlan {
            maps: IdMaps::root_mapped(req.caller_uid, req.caller_gid),
            mode: FakerootMode::RootMapped { reason },
            warnings,
        },
    }
}

/// The caller's uid and gid ranges, or the one-line reason there are none.
fn subid_ranges(
    req: &FakerootRequest,
    warnings: &mut Vec<Diagnostic>,
) -> Result<(SubidRange, SubidRange), String> {
    let subuid = SubidFile::read(&req.subuid_path).map_err(|e| e.to_string())?;
    let subgid = SubidFile::read(&req.subgid_path).map_err(|e| e.to_string())?;
    warnings.extend(subuid.diagnostics());
    warnings.extend(subgid.diagnostics());
    let uids = HostIds::from_passwd(&req.passwd_path).map_err(|e| e.to_string())?;
    let gids = HostIds::from_group(&req.group_path).map_err(|e| e.to_string())?;
    let uid_range = select_range(&subuid, &req.user, IdKind::Uid, &uids, req.caller_uid)
        .map_err(|e| e.to_string())?;
    let gid_range = select_range(&subgid, &req.user, IdKind::Gid, &gids, req.caller_gid)
        .map_err(|e| e.to_string())?;
    for helper in [NEWUIDMAP, NEWGIDMAP] {
        if find_helper(helper, &req.helper_dirs).is_none() {
            return Err(format!(
                "{helper} is not installed in {} (it is needed to use your subordinate id ranges): install the package that provides it (uidmap on Debian/Ubuntu, shadow-utils on RHEL/Fedora/SUSE)",
                join_dirs(&req.helper_dirs)
            ));
        }
    }
    Ok((uid_range, gid_range))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    /// A fixture directory with subuid/subgid/passwd/group files and a fake helper dir.
    struct Fixture {
        dir: tempfile::TempDir,
    }

    impl Fixture {
        fn new(subuid: &str, subgid: &str) -> Fixture {
            let dir = tempfile::tempdir().expect("tempdir");
            let w = |name: &str, text: &str| {
                std::fs::write(dir.path().join(name), text).expect("write fixture")
            };
            w("subuid", subuid);
            w("subgid", subgid);
            w(
                "passwd",
                "root:x:0:0::/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n",
            );
            w("group", "root:x:0:\nalice:x:1000:\nweird:x:170000:\n");
            let bin = dir.path().join("bin");
            std::fs::create_dir(&bin).expect("mkdir");
            for h in [NEWUIDMAP, NEWGIDMAP] {
                let p = bin.join(h);
                std::fs::write(&p, "#!/bin/sh\n").expect("write helper");
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))
                    .expect("chmod");
            }
            Fixture { dir }
        }

        fn request(&self) -> FakerootRequest {
            let p = |n: &str| self.dir.path().join(n);
            FakerootRequest {
                caller_uid: 1000,
                caller_gid: 1000,
                user: UserRef::named("alice", 1000),
                subuid_path: p("subuid"),
                subgid_path: p("subgid"),
                passwd_path: p("passwd"),
                group_path: p("group"),
                helper_dirs: vec![p("bin")],
            }
        }

        fn path(&self, name: &str) -> PathBuf {
            self.dir.path().join(name)
        }
    }

    fn reason(plan: &FakerootPlan) -> &str {
        match &plan.mode {
            FakerootMode::RootMapped { reason } => reason,
            FakerootMode::Subid { .. } => panic!("expected root-mapped, got {plan:?}"),
        }
    }

    #[test]
    fn test_single_map() {
        let m = IdMaps::single(1000, 100);
        assert_eq!(m.uid_map, vec![IdMapping::new(1000, 1000, 1)]);
        assert_eq!(m.gid_map, vec![IdMapping::new(100, 100, 1)]);
    }

    #[test]
    fn test_subid_plan_maps() {
        let f = Fixture::new("alice:100000:65536\n", "1000:200000:65536\n");
        let plan = plan_fakeroot(&f.request());
        assert_eq!(
            plan.maps.uid_map,
            vec![IdMapping::new(0, 1000, 1), IdMapping::new(1, 100000, 65536)]
        );
        assert_eq!(
            plan.maps.gid_map,
            vec![IdMapping::new(0, 1000, 1), IdMapping::new(1, 200000, 65536)]
        );
        let FakerootMode::Subid { subuid, subgid } = &plan.mode else {
            panic!("expected subid mode: {plan:?}");
        };
        assert_eq!((subuid.line, subgid.start), (1, 200000));
        assert!(plan.warnings.is_empty());
    }

    #[test]
    fn test_larger_range_maps_only_65536() {
        let f = Fixture::new("alice:100000:500000\n", "alice:100000:500000\n");
        let plan = plan_fakeroot(&f.request());
        assert_eq!(plan.maps.uid_map[1], IdMapping::new(1, 100000, 65536));
    }

    #[test]
    fn test_no_entry_falls_back_to_root_mapped() {
        let f = Fixture::new("bob:100000:65536\n", "bob:100000:65536\n");
        let plan = plan_fakeroot(&f.request());
        assert_eq!(plan.maps, IdMaps::root_mapped(1000, 1000));
        let r = reason(&plan);
        assert!(r.contains("no entry for user alice (uid 1000)"), "{r}");
        assert!(r.contains(&f.path("subuid").display().to_string()), "{r}");
    }

    #[test]
    fn test_subgid_problem_is_reported_with_its_file() {
        // uid range fine; the gid range overlaps group "weird" (170000).
        let f = Fixture::new("alice:100000:65536\n", "alice:150000:65536\n");
        let plan = plan_fakeroot(&f.request());
        let r = reason(&plan);
        assert!(r.contains("overlaps host gid 170000 (weird)"), "{r}");
        assert!(r.contains(&f.path("subgid").display().to_string()), "{r}");
    }

    #[test]
    fn test_missing_files_and_helpers() {
        let f = Fixture::new("alice:100000:65536\n", "alice:100000:65536\n");
        let mut req = f.request();
        req.subgid_path = f.path("nonexistent");
        let plan = plan_fakeroot(&req);
        assert!(reason(&plan).contains("nonexistent does not exist"));

        let mut req = f.request();
        req.helper_dirs = vec![f.path("empty")];
        let plan = plan_fakeroot(&req);
        let r = reason(&plan);
        assert!(r.starts_with("newuidmap is not installed in"), "{r}");
        assert!(r.contains("uidmap"), "{r}");
    }

    #[test]
    fn test_malformed_lines_become_warnings() {
        let f = Fixture::new("garbage\nalice:100000:65536\n", "alice:100000:65536\nx:1\n");
        let plan = plan_fakeroot(&f.request());
        assert!(matches!(plan.mode, FakerootMode::Subid { .. }));
        let w: Vec<_> = plan
            .warnings
            .iter()
            .map(|d| (d.path.clone(), d.line))
            .collect();
        assert_eq!(w, vec![(f.path("subuid"), 1), (f.path("subgid"), 2)]);
    }

    #[test]
    fn test_request_defaults_are_system_paths() {
        let r = FakerootRequest::new(1, 2, UserRef::uid(1));
        assert_eq!(r.subuid_path, Path::new("/etc/subuid"));
        assert_eq!(r.group_path, Path::new("/etc/group"));
        assert!(r.helper_dirs.contains(&PathBuf::from("/usr/bin")));
        assert!(!r.helper_dirs.is_empty());
    }
}
