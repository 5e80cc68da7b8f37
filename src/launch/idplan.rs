//! The user-namespace identity of a run or a build: the fakeroot plan (subordinate ids, or
//! root-mapped with root emulation) in the launch's terms, and the map writer and the
//! user-namespace diagnosis from `sifr-idmap`, shared by `exec` and `build`.

use std::path::PathBuf;

use nix::unistd::Pid;

use super::identity::HostUser;
use super::plan::IdMapPlan;
use super::seccomp::Emulation;

/// The fakeroot mapping for `user` and the root emulation it needs: subordinate ids when the
/// user has a usable range and newuidmap/newgidmap are in `helper_dirs` (mknod of devices
/// emulated), otherwise a root-mapped namespace (ownership, devices, groups and identity
/// switches emulated) with a one-line notice.
pub fn fakeroot(
    user: &HostUser,
    ignore_subuid: bool,
    helper_dirs: Vec<PathBuf>,
) -> (IdMapPlan, Emulation) {
    let fk = if ignore_subuid {
        sifr_idmap::FakerootPlan {
            mode: sifr_idmap::FakerootMode::RootMapped {
                reason: "--ignore-subuid given".into(),
            },
            maps: sifr_idmap::IdMaps::root_mapped(user.uid, user.gid),
            warnings: vec![],
        }
    } else {
        sifr_idmap::plan_fakeroot(&sifr_idmap::FakerootRequest {
            helper_dirs: helper_dirs.clone(),
            ..sifr_idmap::FakerootRequest::for_current_process()
        })
    };
    for w in &fk.warnings {
        log::warn!("{w}");
    }
    let tuple = |m: &sifr_idmap::IdMapping| (m.inside, m.outside, m.count);
    let (notice, emulation) = match &fk.mode {
        sifr_idmap::FakerootMode::Subid { .. } => (None, Emulation::MknodOnly),
        sifr_idmap::FakerootMode::RootMapped { reason } => (
            Some(format!(
                "fakeroot: using a root-mapped user namespace with root emulation ({reason})"
            )),
            Emulation::RootMapped,
        ),
    };
    let ids = IdMapPlan {
        uid_map: fk.maps.uid_map.iter().map(tuple).collect(),
        gid_map: fk.maps.gid_map.iter().map(tuple).collect(),
        needs_helpers: matches!(fk.mode, sifr_idmap::FakerootMode::Subid { .. }),
        uid: 0,
        gid: 0,
        notice,
        helper_dirs,
    };
    (ids, emulation)
}

fn mapping(&(inside, outside, count): &(u32, u32, u32)) -> sifr_idmap::IdMapping {
    sifr_idmap::IdMapping {
        inside,
        outside,
        count,
    }
}

/// Writes the maps of a child that unshared its user namespace (directly for the caller's
/// own ids, through newuidmap/newgidmap for subordinate ranges) and checks them.
pub fn write_maps(pid: Pid, ids: &IdMapPlan) -> Result<(), String> {
    let maps = sifr_idmap::IdMaps {
        uid_map: ids.uid_map.iter().map(mapping).collect(),
        gid_map: ids.gid_map.iter().map(mapping).collect(),
    };
    sifr_idmap::write_maps_with(pid, &maps, &ids.helper_dirs).map_err(|e| e.to_string())
}

/// The one-line message for a refused user namespace, with the sysctl that blocks it.
pub fn explain_userns(e: nix::Error) -> String {
    let diag = sifr_idmap::diagnose_userns();
    if diag.is_blocked() {
        format!("cannot create a user namespace: {e}: {diag}")
    } else {
        format!("cannot create a user namespace: {e} ({diag})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// newuidmap is looked for only where `binary path` says (the plan carries the dirs).
    #[test]
    fn test_helpers_are_looked_up_in_the_plans_dirs() {
        let empty = tempfile::tempdir().expect("tempdir");
        let user = HostUser::current().expect("user");
        let (mut ids, _) = fakeroot(&user, true, vec![empty.path().to_path_buf()]);
        assert_eq!(ids.helper_dirs, [empty.path().to_path_buf()]);
        // Subordinate maps (more than one range) need the helpers: not found there.
        ids.uid_map = vec![(0, user.uid, 1), (1, 200_000, 10)];
        ids.gid_map = vec![(0, user.gid, 1), (1, 200_000, 10)];
        let err = write_maps(nix::unistd::getpid(), &ids).expect_err("no helper");
        assert!(
            err.starts_with(&format!(
                "newuidmap is not installed in {}",
                empty.path().display()
            )),
            "{err}"
        );
    }
}
