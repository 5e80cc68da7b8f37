//! Diagnosing why unprivileged user namespaces are unavailable, from the sysctls that
//! switch them off, so that errors can name the exact knob and the fix.
//!
//! The three knobs (each absent on kernels that lack it):
//! - `kernel.unprivileged_userns_clone` (Debian/Ubuntu patch): 0 forbids them;
//! - `user.max_user_namespaces`: 0 forbids them (RHEL 7 ships 0);
//! - `kernel.apparmor_restrict_unprivileged_userns` (Ubuntu 23.10+): 1 lets only programs
//!   whose AppArmor profile grants `userns` create them.

use std::fmt;
use std::path::{Path, PathBuf};

/// The usual location of the sysctl tree.
pub const PROC_SYS: &str = "/proc/sys";

/// A sysctl setting that stops unprivileged users from creating user namespaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsernsBlocker {
    /// `kernel.unprivileged_userns_clone = 0`.
    UnprivilegedCloneDisabled,
    /// `user.max_user_namespaces = 0`.
    MaxUserNamespacesZero,
    /// `kernel.apparmor_restrict_unprivileged_userns = 1`.
    AppArmorRestricted,
}

impl fmt::Display for UsernsBlocker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UsernsBlocker::UnprivilegedCloneDisabled => write!(
                f,
                "kernel.unprivileged_userns_clone is 0, which disables unprivileged user namespaces (an administrator can run `sysctl -w kernel.unprivileged_userns_clone=1`)"
            ),
            UsernsBlocker::MaxUserNamespacesZero => write!(
                f,
                "user.max_user_namespaces is 0, which disables user namespaces (an administrator can run `sysctl -w user.max_user_namespaces=15000`)"
            ),
            UsernsBlocker::AppArmorRestricted => write!(
                f,
                "kernel.apparmor_restrict_unprivileged_userns is 1, so AppArmor lets only programs whose profile grants `userns` create user namespaces (an administrator can install such a profile for sifr, or run `sysctl -w kernel.apparmor_restrict_unprivileged_userns=0`)"
            ),
        }
    }
}

/// What the sysctls say about unprivileged user namespaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsernsDiagnosis {
    /// Each setting that blocks them; empty when none does.
    pub blockers: Vec<UsernsBlocker>,
    /// `kernel.unprivileged_userns_clone`, when the kernel has it.
    pub unprivileged_userns_clone: Option<u64>,
    /// `user.max_user_namespaces`, when readable.
    pub max_user_namespaces: Option<u64>,
    /// `kernel.apparmor_restrict_unprivileged_userns`, when the kernel has it.
    pub apparmor_restrict_unprivileged_userns: Option<u64>,
    /// Where the sysctls were read from.
    pub proc_sys: PathBuf,
}

impl UsernsDiagnosis {
    /// True when some sysctl blocks unprivileged user namespaces.
    pub fn is_blocked(&self) -> bool {
        !self.blockers.is_empty()
    }
}

impl fmt::Display for UsernsDiagnosis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_blocked() {
            let parts: Vec<String> = self.blockers.iter().map(|b| b.to_string()).collect();
            return write!(f, "{}", parts.join("; "));
        }
        let show = |v: Option<u64>| v.map_or_else(|| "absent".to_owned(), |v| v.to_string());
        write!(
            f,
            "no sysctl disables unprivileged user namespaces (kernel.unprivileged_userns_clone: {}, user.max_user_namespaces: {}, kernel.apparmor_restrict_unprivileged_userns: {})",
            show(self.unprivileged_userns_clone),
            show(self.max_user_namespaces),
            show(self.apparmor_restrict_unprivileged_userns)
        )
    }
}

/// Reads the sysctls under /proc/sys and says which, if any, block unprivileged user
/// namespaces.
pub fn diagnose_userns() -> UsernsDiagnosis {
    diagnose_userns_in(Path::new(PROC_SYS))
}

/// As [`diagnose_userns`], reading the sysctl tree rooted at `proc_sys` (tests pass a
/// fake tree). A missing or unreadable sysctl counts as "not set".
pub fn diagnose_userns_in(proc_sys: &Path) -> UsernsDiagnosis {
    let read = |rel: &str| -> Option<u64> {
        std::fs::read_to_string(proc_sys.join(rel))
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
    };
    let clone = read("kernel/unprivileged_userns_clone");
    let max = read("user/max_user_namespaces");
    let apparmor = read("kernel/apparmor_restrict_unprivileged_userns");
    let mut blockers = Vec::new();
    if clone == Some(0) {
        blockers.push(UsernsBlocker::UnprivilegedCloneDisabled);
    }
    if max == Some(0) {
        blockers.push(UsernsBlocker::MaxUserNamespacesZero);
    }
    if apparmor.is_some_and(|v| v != 0) {
        blockers.push(UsernsBlocker::AppArmorRestricted);
    }
    UsernsDiagnosis {
        blockers,
        unprivileged_userns_clone: clone,
        max_user_namespaces: max,
        apparmor_restrict_unprivileged_userns: apparmor,
        proc_sys: proc_sys.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(values: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        for (rel, v) in values {
            let p = dir.path().join(rel);
            std::fs::create_dir_all(p.parent().expect("has parent")).expect("mkdir");
            std::fs::write(p, v).expect("write");
        }
        dir
    }

    #[test]
    fn test_nothing_blocks() {
        let t = tree(&[("user/max_user_namespaces", "15000\n")]);
        let d = diagnose_userns_in(t.path());
        assert!(!d.is_blocked());
        assert_eq!(d.max_user_namespaces, Some(15000));
        let s = d.to_string();
        assert!(
            s.contains("kernel.unprivileged_userns_clone: absent"),
            "{s}"
        );
    }

    #[test]
    fn test_each_blocker_is_named() {
        let t = tree(&[
            ("kernel/unprivileged_userns_clone", "0\n"),
            ("user/max_user_namespaces", "0\n"),
            ("kernel/apparmor_restrict_unprivileged_userns", "1\n"),
        ]);
        let d = diagnose_userns_in(t.path());
        assert_eq!(
            d.blockers,
            vec![
                UsernsBlocker::UnprivilegedCloneDisabled,
                UsernsBlocker::MaxUserNamespacesZero,
                UsernsBlocker::AppArmorRestricted
            ]
        );
        let s = d.to_string();
        for knob in [
            "kernel.unprivileged_userns_clone is 0",
            "user.max_user_namespaces is 0",
            "kernel.apparmor_restrict_unprivileged_userns is 1",
        ] {
            assert!(s.contains(knob), "{s}");
        }
        assert_eq!(s.lines().count(), 1);
    }

    #[test]
    fn test_enabled_values_do_not_block() {
        let t = tree(&[
            ("kernel/unprivileged_userns_clone", "1\n"),
            ("kernel/apparmor_restrict_unprivileged_userns", "0\n"),
        ]);
        assert!(!diagnose_userns_in(t.path()).is_blocked());
    }

    #[test]
    fn test_real_proc_sys_reads() {
        // Whatever this host says, the call must not fail and must read max_user_namespaces.
        let d = diagnose_userns();
        assert!(d.max_user_namespaces.is_some(), "{d:?}");
    }
}
