//! Seccomp filters installed in the payload: root emulation for fakeroot.
//!
//! In a root-mapped user namespace (container uid 0 ← the caller, nothing else mapped), the
//! kernel refuses what package managers do as root: `chown` to another user (EINVAL: the id
//! is not mapped), `mknod` of devices (EPERM in any user namespace), `setgroups` (denied) and
//! switching to another uid/gid (EINVAL). The filter turns exactly those calls into
//! successful no-ops (`SECCOMP_RET_ERRNO` with errno 0 returns 0 without running the call),
//! so `apt-get`, `dpkg` and `useradd` complete; calls that would succeed anyway (ids 0 and -1)
//! still reach the kernel. With subordinate ids only `mknod` of devices is emulated, as
//! Apptainer does for fakeroot builds.
//!
//! seccompiler kills a process whose syscall comes from another architecture (its filter
//! starts with an architecture check); sifr's filter lets such calls through instead, so
//! 32-bit programs in a container keep working (the filter only relaxes errors, it never
//! denies anything).

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// What to emulate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Emulation {
    /// Root-mapped fakeroot: ownership, devices, groups and identity switches.
    RootMapped,
    /// Subordinate-id fakeroot: device nodes only.
    MknodOnly,
}

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("seccomp filters are not supported on this architecture")]
    Arch,
    #[error("cannot build the seccomp filter: {0}")]
    Build(String),
    #[error("cannot install the seccomp filter: {0}")]
    Install(String),
}

const S_IFMT: u64 = 0o170000;
const S_IFCHR: u64 = 0o020000;
const S_IFBLK: u64 = 0o060000;

fn cond(arg: u8, op: SeccompCmpOp, value: u64) -> Result<SeccompCondition, SeccompError> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, value)
        .map_err(|e| SeccompError::Build(e.to_string()))
}

fn rule(conds: Vec<SeccompCondition>) -> Result<SeccompRule, SeccompError> {
    SeccompRule::new(conds).map_err(|e| SeccompError::Build(e.to_string()))
}

/// A rule matching when argument `arg` is an id the namespace cannot honour (not 0, not -1).
fn unmapped_id(arg: u8) -> Result<SeccompRule, SeccompError> {
    rule(vec![
        cond(arg, SeccompCmpOp::Ne, 0)?,
        cond(arg, SeccompCmpOp::Ne, 0xffff_ffff)?,
    ])
}

/// Rules matching a device-creating mode in argument `arg`.
fn device_mode(arg: u8) -> Result<Vec<SeccompRule>, SeccompError> {
    Ok(vec![
        rule(vec![cond(arg, SeccompCmpOp::MaskedEq(S_IFMT), S_IFCHR)?])?,
        rule(vec![cond(arg, SeccompCmpOp::MaskedEq(S_IFMT), S_IFBLK)?])?,
    ])
}

fn target_arch() -> Result<TargetArch, SeccompError> {
    if cfg!(target_arch = "x86_64") {
        Ok(TargetArch::x86_64)
    } else if cfg!(target_arch = "aarch64") {
        Ok(TargetArch::aarch64)
    } else if cfg!(target_arch = "riscv64") {
        Ok(TargetArch::riscv64)
    } else {
        Err(SeccompError::Arch)
    }
}

/// The syscall rules (number → rules, any of which matches) for an emulation.
pub fn rules(emulation: Emulation) -> Result<BTreeMap<i64, Vec<SeccompRule>>, SeccompError> {
    let mut r: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    r.insert(libc::SYS_mknodat, device_mode(2)?);
    #[cfg(target_arch = "x86_64")]
    r.insert(libc::SYS_mknod, device_mode(1)?);
    if emulation == Emulation::MknodOnly {
        return Ok(r);
    }
    // Ownership changes to ids the namespace does not map.
    r.insert(libc::SYS_fchown, vec![unmapped_id(1)?, unmapped_id(2)?]);
    r.insert(libc::SYS_fchownat, vec![unmapped_id(2)?, unmapped_id(3)?]);
    #[cfg(target_arch = "x86_64")]
    {
        r.insert(libc::SYS_chown, vec![unmapped_id(1)?, unmapped_id(2)?]);
        r.insert(libc::SYS_lchown, vec![unmapped_id(1)?, unmapped_id(2)?]);
    }
    // Supplementary groups cannot be set (setgroups is denied in this namespace).
    r.insert(libc::SYS_setgroups, vec![]);
    // Identity switches to unmapped ids.
    r.insert(libc::SYS_setuid, vec![unmapped_id(0)?]);
    r.insert(libc::SYS_setgid, vec![unmapped_id(0)?]);
    r.insert(libc::SYS_setfsuid, vec![unmapped_id(0)?]);
    r.insert(libc::SYS_setfsgid, vec![unmapped_id(0)?]);
    r.insert(libc::SYS_setreuid, vec![unmapped_id(0)?, unmapped_id(1)?]);
    r.insert(libc::SYS_setregid, vec![unmapped_id(0)?, unmapped_id(1)?]);
    r.insert(
        libc::SYS_setresuid,
        vec![unmapped_id(0)?, unmapped_id(1)?, unmapped_id(2)?],
    );
    r.insert(
        libc::SYS_setresgid,
        vec![unmapped_id(0)?, unmapped_id(1)?, unmapped_id(2)?],
    );
    Ok(r)
}

/// Compiles the filter: matching calls return 0, everything else is allowed.
pub fn compile(emulation: Emulation) -> Result<BpfProgram, SeccompError> {
    let filter = SeccompFilter::new(
        rules(emulation)?,
        SeccompAction::Allow,
        SeccompAction::Errno(0),
        target_arch()?,
    )
    .map_err(|e| SeccompError::Build(e.to_string()))?;
    let mut prog: BpfProgram = filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| SeccompError::Build(e.to_string()))?;
    // The third instruction is seccompiler's "wrong architecture: kill the process"; allow
    // such calls instead (see the module comment).
    const RET_K: u16 = 0x06;
    match prog.get_mut(2) {
        Some(ins) if ins.code == RET_K && ins.k == libc::SECCOMP_RET_KILL_PROCESS => {
            ins.k = libc::SECCOMP_RET_ALLOW;
        }
        _ => return Err(SeccompError::Build("unexpected filter prologue".into())),
    }
    Ok(prog)
}

/// Installs the filter in the calling thread (needs no_new_privs first).
pub fn install(prog: &BpfProgram) -> Result<(), SeccompError> {
    seccompiler::apply_filter(prog).map_err(|e| SeccompError::Install(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_filters_compile() {
        let root = compile(Emulation::RootMapped).expect("root-mapped");
        let mknod = compile(Emulation::MknodOnly).expect("mknod only");
        assert!(root.len() > mknod.len());
        assert!(root.len() < 4096, "kernel limit");
        assert_eq!(root[2].k, libc::SECCOMP_RET_ALLOW);
    }

    /// Runs `f` in a forked child that installs the filter; returns the child's exit code.
    fn in_child(emulation: Emulation, f: fn() -> i32) -> i32 {
        let prog = compile(emulation).expect("compile");
        // SAFETY: the test harness may have threads; the child only makes raw syscalls and
        // exits with _exit.
        match unsafe { nix::unistd::fork() }.expect("fork") {
            nix::unistd::ForkResult::Child => {
                let code =
                    if nix::sys::prctl::set_no_new_privs().is_err() || install(&prog).is_err() {
                        100
                    } else {
                        f()
                    };
                // SAFETY: ends the forked child.
                unsafe { libc::_exit(code) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                match nix::sys::wait::waitpid(child, None).expect("wait") {
                    nix::sys::wait::WaitStatus::Exited(_, c) => c,
                    other => panic!("child: {other:?}"),
                }
            }
        }
    }

    #[test]
    fn test_root_emulation_by_errno() {
        // Checked by the errno each call returns (bubblewrap's try-syscall approach).
        let code = in_child(Emulation::RootMapped, || {
            // SAFETY: raw syscalls with valid arguments; a C string literal for the path.
            unsafe {
                // chown to an arbitrary user of a path that does not exist: the filter
                // answers before the kernel could say ENOENT.
                if libc::chown(c"/nonexistent-sifr".as_ptr(), 4242, 4242) != 0 {
                    return 1;
                }
                // chown to root still reaches the kernel (ENOENT here).
                if libc::chown(c"/nonexistent-sifr".as_ptr(), 0, 0) == 0 {
                    return 2;
                }
                if libc::setgroups(0, std::ptr::null()) != 0 {
                    return 3;
                }
                if libc::mknod(c"/nonexistent-dir/dev".as_ptr(), libc::S_IFCHR | 0o600, 0) != 0 {
                    return 4;
                }
                // A regular-file mknod is not emulated.
                if libc::mknod(c"/nonexistent-dir/f".as_ptr(), libc::S_IFREG | 0o600, 0) == 0 {
                    return 5;
                }
                let uid = libc::getuid();
                if libc::setresuid(4243, 4243, 4243) != 0 {
                    return 6;
                }
                // The identity did not really change.
                if libc::getuid() != uid {
                    return 7;
                }
            }
            0
        });
        assert_eq!(code, 0);
    }

    #[test]
    fn test_mknod_only_leaves_chown_alone() {
        let code = in_child(Emulation::MknodOnly, || {
            // SAFETY: raw syscalls with valid arguments.
            unsafe {
                if libc::mknod(c"/nonexistent-dir/dev".as_ptr(), libc::S_IFBLK | 0o600, 0) != 0 {
                    return 1;
                }
                if libc::chown(c"/nonexistent-sifr".as_ptr(), 4242, 4242) == 0 {
                    return 2;
                }
            }
            0
        });
        assert_eq!(code, 0);
    }
}
