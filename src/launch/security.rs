//! The payload's last steps before `execve`: descriptors, signal state, privileges.
//!
//! Order matters and is the same every time:
//! 1. every descriptor above stderr becomes close-on-exec (nothing of sifr's leaks in);
//! 2. signal mask and dispositions are reset (sifr blocks signals for its signalfd);
//! 3. PR_SET_NO_NEW_PRIVS, so no setuid binary or file capability can raise privileges;
//! 4. capabilities: the plan's set (`capabilities.rs`) in all five sets, every other one
//!    dropped, bounding set included: nothing for a plain run, all for fakeroot unless
//!    `--drop-caps`/`--no-privs` say otherwise. They only mean anything inside the user
//!    namespace sifr created, never on the host;
//! 5. a seccomp filter, if any, last (`seccomp.rs`).

use std::io;

use caps::CapSet;

use super::capabilities::CapMask;
use super::plan::RunAs;

/// Marks every descriptor >= 3 close-on-exec.
pub fn cloexec_from(first: u32) -> io::Result<()> {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only changes descriptor flags.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if r == 0 {
        return Ok(());
    }
    // Kernels before 5.11 lack CLOSE_RANGE_CLOEXEC: walk /proc/self/fd instead.
    let fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    for fd in fds.into_iter().filter(|fd| *fd >= first as i32) {
        // SAFETY: F_SETFD on a descriptor number; a stale number just returns EBADF.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    Ok(())
}

/// Unblocks every signal and restores default dispositions (the mask survives execve).
pub fn reset_signals() -> io::Result<()> {
    use nix::sys::signal::{SigHandler, SigSet, SigmaskHow, Signal, sigprocmask};
    sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
        .map_err(|e| io::Error::from_raw_os_error(e as i32))?;
    for sig in Signal::iterator() {
        if matches!(sig, Signal::SIGKILL | Signal::SIGSTOP) {
            continue;
        }
        // SAFETY: installing SIG_DFL has no handler code to be unsafe about.
        let _ = unsafe { nix::sys::signal::signal(sig, SigHandler::SigDfl) };
    }
    Ok(())
}

/// PR_SET_NO_NEW_PRIVS.
pub fn no_new_privs() -> io::Result<()> {
    nix::sys::prctl::set_no_new_privs().map_err(|e| io::Error::from_raw_os_error(e as i32))
}

/// Leaves the calling thread `keep` in all five sets, as Apptainer's starter does: the
/// bounding set first (dropping needs CAP_SETPCAP, still held), then inheritable, effective
/// and permitted, then ambient (raising needs the capability permitted and inheritable).
/// Capabilities the running kernel lacks are skipped.
pub fn apply_caps(keep: CapMask) -> io::Result<()> {
    let to_io = |e: caps::errors::CapsError| io::Error::other(e.to_string());
    let supported = caps::runtime::thread_all_supported();
    let kept: caps::CapsHashSet = supported
        .iter()
        .copied()
        .filter(|c| keep.contains(*c))
        .collect();
    for cap in &supported {
        if !kept.contains(cap) && caps::has_cap(None, CapSet::Bounding, *cap).unwrap_or(false) {
            caps::drop(None, CapSet::Bounding, *cap).map_err(to_io)?;
        }
    }
    caps::clear(None, CapSet::Ambient).map_err(to_io)?;
    caps::set(None, CapSet::Inheritable, &kept).map_err(to_io)?;
    caps::set(None, CapSet::Effective, &kept).map_err(to_io)?;
    caps::set(None, CapSet::Permitted, &kept).map_err(to_io)?;
    for cap in &kept {
        caps::raise(None, CapSet::Ambient, *cap).map_err(to_io)?;
    }
    Ok(())
}

/// `--security uid:/gid:`: setgroups and setresgid to the gids (the first is the primary
/// group), then setresuid to the uid, with PR_SET_KEEPCAPS so that the permitted set
/// survives the change from uid 0; the effective set, which the kernel clears then, is
/// raised again to the permitted one, so that `apply_caps` can set every set next.
pub fn set_ids(ids: &RunAs) -> io::Result<()> {
    use nix::unistd::{Gid, Uid, setgroups, setresgid, setresuid};
    let errno = |e: nix::errno::Errno| io::Error::from_raw_os_error(e as i32);
    nix::sys::prctl::set_keepcaps(true).map_err(errno)?;
    if let Some(&primary) = ids.gids.first() {
        let gids: Vec<Gid> = ids.gids.iter().map(|g| Gid::from_raw(*g)).collect();
        setgroups(&gids).map_err(errno)?;
        let g = Gid::from_raw(primary);
        setresgid(g, g, g).map_err(errno)?;
    }
    if let Some(uid) = ids.uid {
        let u = Uid::from_raw(uid);
        setresuid(u, u, u).map_err(errno)?;
    }
    nix::sys::prctl::set_keepcaps(false).map_err(errno)?;
    let to_io = |e: caps::errors::CapsError| io::Error::other(e.to_string());
    let permitted = caps::read(None, CapSet::Permitted).map_err(to_io)?;
    caps::set(None, CapSet::Effective, &permitted).map_err(to_io)
}

/// True when the calling process holds no capability in any set.
pub fn holds_no_caps() -> bool {
    [
        CapSet::Effective,
        CapSet::Permitted,
        CapSet::Inheritable,
        CapSet::Ambient,
    ]
    .iter()
    .all(|set| {
        caps::read(None, *set)
            .map(|s| s.is_empty())
            .unwrap_or(false)
    })
}

/// PR_SET_DUMPABLE: a non-dumpable process cannot be traced, and its /proc/PID files (mem,
/// root, fd/, environ, ns/) cannot be opened, by anything without CAP_SYS_PTRACE in the user
/// namespace its memory belongs to (the host's, for a process forked from sifr that has not
/// exec'd). It also makes its /proc/PID files root-owned: id maps must be written first.
pub fn set_dumpable(on: bool) -> io::Result<()> {
    nix::sys::prctl::set_dumpable(on).map_err(|e| io::Error::from_raw_os_error(e as i32))
}

/// PR_SET_PDEATHSIG(SIGKILL), then checks that the parent is still `parent` (it may have died
/// before the signal was armed, and the process was re-parented). False when it is gone.
pub fn die_with_parent(parent: nix::unistd::Pid) -> bool {
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).is_ok()
        && nix::unistd::getppid() == parent
}
