//! Running work as root of a fakeroot user namespace, without a container: what `build`
//! needs to unpack images and copy files so that ownership inside the image is right
//! (root-owned files stay root-owned; with subordinate ids, other owners keep their ids).
//!
//! The work runs in a forked child that unshares its user and mount namespaces; this process
//! writes the id maps from outside (newuidmap/newgidmap need the parent namespace) and waits.
//! The handshake and the child's result cross as typed messages (see `msg`): the result is
//! `ChildMsg::Done` or `ChildMsg::Failed` with the error message.

use nix::sched::CloneFlags;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, fork};

use super::msg::ChildMsg;
use super::plan::IdMapPlan;
use super::sys::Sys;

/// A failure of the work or of the namespace set-up.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsernsError(pub String);

/// Runs `work` as uid 0 of a new user namespace mapped by `ids` (with its own mount
/// namespace), in a child process; `write_maps` applies the maps from this process. The
/// child's namespace step goes through `sys` (the kernel's: `LinuxSys`).
///
/// Must be called while the process is single-threaded (it forks).
pub fn run_as_fakeroot<F>(
    sys: &dyn Sys,
    ids: &IdMapPlan,
    write_maps: &dyn Fn(nix::unistd::Pid, &IdMapPlan) -> Result<(), String>,
    work: F,
) -> Result<(), UsernsError>
where
    F: FnOnce() -> Result<(), String>,
{
    let pipe = |what: &str| {
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| UsernsError(format!("cannot create a pipe for {what}: {e}")))
    };
    let (ready_r, ready_w) = pipe("the namespace handshake")?;
    let (go_r, go_w) = pipe("the namespace handshake")?;
    let (res_r, res_w) = pipe("the result")?;
    let parent = nix::unistd::getpid();
    // SAFETY: the caller guarantees a single-threaded process.
    match unsafe { fork() }.map_err(|e| UsernsError(format!("cannot fork: {e}")))? {
        ForkResult::Child => {
            drop((ready_r, go_w, res_r));
            let fail = |msg: String| -> ! {
                ChildMsg::Failed(msg).send(&res_w);
                // SAFETY: ends the forked child.
                unsafe { libc::_exit(1) }
            };
            // Die with the caller, and not run at all if it is already gone.
            if !super::security::die_with_parent(parent) {
                fail("the caller exited before the fakeroot work started".into());
            }
            if let Err(e) = sys.unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS) {
                fail(format!(
                    "cannot create a user namespace: {}",
                    nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
                ));
            }
            ChildMsg::UsernsReady.send(&ready_w);
            drop(ready_w);
            if ChildMsg::recv(&go_r) != Ok(Some(ChildMsg::MapsWritten)) {
                // The parent reported the mapping error.
                // SAFETY: ends the forked child.
                unsafe { libc::_exit(1) }
            }
            match work() {
                Ok(()) => {
                    ChildMsg::Done.send(&res_w);
                    // SAFETY: ends the forked child.
                    unsafe { libc::_exit(0) }
                }
                Err(msg) => fail(msg),
            }
        }
        ForkResult::Parent { child } => {
            drop((ready_w, go_r, res_w));
            let ready = ChildMsg::recv(&ready_r) == Ok(Some(ChildMsg::UsernsReady));
            drop(ready_r);
            if ready {
                if let Err(msg) = write_maps(child, ids) {
                    let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
                    let _ = waitpid(child, None);
                    return Err(UsernsError(msg));
                }
                ChildMsg::MapsWritten.send(&go_w);
            }
            drop(go_w);
            // The first message is the result; the pipe is read until every holder closed it.
            let result = ChildMsg::recv(&res_r);
            while let Ok(Some(_)) = ChildMsg::recv(&res_r) {}
            drop(res_r);
            let status = waitpid(child, None)
                .map_err(|e| UsernsError(format!("cannot wait for the namespace child: {e}")))?;
            match (result, status) {
                (Ok(Some(ChildMsg::Done)), WaitStatus::Exited(_, 0)) => Ok(()),
                (Ok(Some(ChildMsg::Failed(msg))), _) => {
                    Err(UsernsError(msg.trim_end().to_string()))
                }
                (_, st) => Err(UsernsError(format!(
                    "the fakeroot namespace child ended unexpectedly ({st:?})"
                ))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::launch::process::write_single_maps;
    use crate::launch::sys::{Call, LinuxSys, RecordingSys};
    use std::os::unix::fs::MetadataExt;

    /// The identity map of this user as root of the namespace.
    fn single_map() -> (IdMapPlan, u32, u32) {
        // SAFETY: getuid/getgid cannot fail.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        let ids = IdMapPlan {
            uid_map: vec![(0, uid, 1)],
            gid_map: vec![(0, gid, 1)],
            needs_helpers: false,
            uid: 0,
            gid: 0,
            notice: None,
            helper_dirs: vec![],
        };
        (ids, uid, gid)
    }

    /// True when the error says user namespaces are unavailable here: a skip for a developer
    /// (some sandboxes forbid them), a failure in CI (sifr cannot work without them).
    fn unavailable(e: &UsernsError) -> bool {
        if e.0.contains("user namespace") {
            crate::testutil::skip(&format!("user namespaces unavailable: {e}"));
            return true;
        }
        false
    }

    #[test]
    fn test_work_runs_as_root_of_the_namespace() {
        let (ids, uid, gid) = single_map();
        let dir = tempfile::tempdir().expect("tmp");
        let f = dir.path().join("made-as-root");
        let f2 = f.clone();
        let r = run_as_fakeroot(&LinuxSys::new(), &ids, &write_single_maps, move || {
            // SAFETY: these getters cannot fail.
            let ids = unsafe {
                [
                    libc::getuid(),
                    libc::geteuid(),
                    libc::getgid(),
                    libc::getegid(),
                ]
            };
            if ids != [0; 4] {
                return Err(format!(
                    "not root in the namespace: uid/euid/gid/egid {ids:?}"
                ));
            }
            std::fs::write(&f2, b"x").map_err(|e| e.to_string())?;
            // Inside, the new file is root's (the map shows the owner as 0:0).
            let m = std::fs::metadata(&f2).map_err(|e| e.to_string())?;
            if (m.uid(), m.gid()) != (0, 0) {
                return Err(format!(
                    "the file is {}:{} inside the namespace, not 0:0",
                    m.uid(),
                    m.gid()
                ));
            }
            Ok(())
        });
        match r {
            Ok(()) => {
                // Outside, root of the namespace is this user: the file is ours.
                let m = std::fs::metadata(&f).expect("the work created the file");
                assert_eq!((m.uid(), m.gid()), (uid, gid));
                assert_eq!(std::fs::read(&f).expect("read"), b"x");
            }
            Err(e) if unavailable(&e) => return,
            Err(e) => panic!("{e}"),
        }
        // The work's error comes back as it was, word for word.
        let err = run_as_fakeroot(&LinuxSys::new(), &ids, &write_single_maps, || {
            Err("work failed: x".into())
        })
        .expect_err("fails");
        assert_eq!(err.0, "work failed: x");
    }

    /// The namespace step goes through the seam: a refused unshare is reported in nix's
    /// words, the maps are never written and the work never runs.
    #[test]
    fn test_refused_namespace_stops_before_the_work() {
        let (ids, _, _) = single_map();
        let mut sys = RecordingSys::default();
        sys.fail_steps = vec![Call::Unshare(
            CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS,
        )];
        let maps = |_: nix::unistd::Pid, _: &IdMapPlan| -> Result<(), String> {
            Err("the maps were written".into())
        };
        let err =
            run_as_fakeroot(&sys, &ids, &maps, || Err("the work ran".into())).expect_err("refused");
        assert_eq!(
            err.0,
            "cannot create a user namespace: EPERM: Operation not permitted"
        );
    }
}
