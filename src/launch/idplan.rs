//! The user-namespace identity of a run or a build: the fakeroot plan (subordinate ids, or
//! root-mapped with root emulation) in the launch's terms, and the map writer and the
//! user-namespace diagnosis from `sifr-idmap`, shared by `exec` and `build`.

use nix::unistd::Pid;

use super::identity::HostUser;
use super::plan::IdMapPlan;
use super::seccomp::Emulation;

/// The fakeroot mapping for `user` and the root emulation it needs: subordinate ids when the
/// user has a usable range (mknod of devices emulated), otherwise a root-mapped namespace
/// (ownership, devices, groups and identity switches emulated) with a one-line notice.
pub fn fakeroot(user: &HostUser, ignore_subuid: bool) -> (IdMapPlan, Emulation) {
    let fk = if ignore_subuid {
        sifr_idmap::FakerootPlan {
            mode: sifr_idmap::FakerootMode::RootMapped {
                reason: "--ignore-subuid given".into(),
            },
            maps: sifr_idmap::IdMaps::root_mapped(user.uid, user.gid),
            warnings: vec![],
        }
    } else {
        sifr_idmap::plan_fakeroot(&sifr_idmap::FakerootRequest::for_current_process())
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
    sifr_idmap::write_maps(pid, &maps).map_err(|e| e.to_string())
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
