//! Applying an id-map plan to a process that has just entered a new user namespace, then
//! reading the kernel's maps back to prove they are exactly the planned ones.
//!
//! - A single-line map is written directly to /proc/PID/uid_map or gid_map. For gid maps
//!   "deny" goes to /proc/PID/setgroups first: the kernel requires it before an
//!   unprivileged process may write gid_map (CVE-2014-8989).
//! - A multi-line map needs privilege over the subordinate ids, which only the setuid (or
//!   file-capability) helpers newuidmap/newgidmap from shadow have: they check
//!   /etc/subuid and /etc/subgid themselves. They are looked up only in the fixed system
//!   directories [`HELPER_DIRS`], never on the user's PATH, so a user cannot substitute them.
//!   Their exit status is checked and their stderr is carried in the error.

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub use nix::unistd::Pid;

use crate::plan::{IdMapping, IdMaps};
use crate::userns::diagnose_userns;

/// shadow's uid-map helper.
pub const NEWUIDMAP: &str = "newuidmap";
/// shadow's gid-map helper.
pub const NEWGIDMAP: &str = "newgidmap";

/// The only directories searched for the helpers (Apptainer's list).
pub const HELPER_DIRS: [&str; 6] = [
    "/bin",
    "/sbin",
    "/usr/bin",
    "/usr/sbin",
    "/usr/local/bin",
    "/usr/local/sbin",
];

/// Helper stderr longer than this is cut in error messages.
const MAX_STDERR_IN_ERROR: usize = 2000;

/// Applying a map failed. `Display` is one line with the cause and, when known, the fix.
#[derive(Debug, thiserror::Error)]
pub enum MapError {
    /// The plan has an empty map: the kernel would reject it.
    #[error("invalid id map plan: the {0} is empty")]
    EmptyMap(&'static str),
    /// newuidmap or newgidmap is not installed in the system directories.
    #[error(
        "{helper} is not installed in {dirs}: install the package that provides it (uidmap on Debian/Ubuntu, shadow-utils on RHEL/Fedora/SUSE)"
    )]
    HelperMissing { helper: &'static str, dirs: String },
    /// The helper could not be started.
    #[error("cannot run {}: {source}", path.display())]
    HelperSpawn {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The helper ran and failed.
    #[error("`{} {args}` failed ({status}): {stderr}{}", path.display(), hint_suffix(hint))]
    HelperFailed {
        path: PathBuf,
        args: String,
        status: std::process::ExitStatus,
        stderr: String,
        hint: Option<String>,
    },
    /// Writing a /proc map file failed.
    #[error("cannot write {:?} to {}: {source}{}", content.trim_end(), path.display(), hint_suffix(hint))]
    Write {
        path: PathBuf,
        content: String,
        #[source]
        source: std::io::Error,
        hint: Option<String>,
    },
    /// Reading a /proc map file back failed.
    #[error("cannot read {} back: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The kernel's map differs from the plan.
    #[error("{} holds [{}], not the planned [{}]", path.display(), show_map(found), show_map(expected))]
    Mismatch {
        path: PathBuf,
        expected: Vec<IdMapping>,
        found: Vec<IdMapping>,
    },
}

fn hint_suffix(hint: &Option<String>) -> String {
    hint.as_ref().map(|h| format!(" ({h})")).unwrap_or_default()
}

fn show_map(map: &[IdMapping]) -> String {
    map.iter()
        .map(|m| m.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The default helper search list, [`HELPER_DIRS`].
pub fn default_helper_dirs() -> Vec<PathBuf> {
    HELPER_DIRS.iter().map(PathBuf::from).collect()
}

/// The first executable regular file called `name` in `dirs`, in order.
pub fn find_helper(name: &str, dirs: &[PathBuf]) -> Option<PathBuf> {
    dirs.iter().map(|d| d.join(name)).find(|p| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

pub(crate) fn join_dirs(dirs: &[PathBuf]) -> String {
    let v: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    v.join(":")
}

/// Writes `plan`'s uid and gid maps for process `pid`, which must already be in its new
/// user namespace and not have had maps written, then verifies them. Helpers are looked up
/// in [`HELPER_DIRS`].
///
/// Accepts an [`IdMaps`] or a [`crate::FakerootPlan`].
pub fn write_maps(pid: Pid, plan: &impl AsRef<IdMaps>) -> Result<(), MapError> {
    write_maps_with(pid, plan, &default_helper_dirs())
}

/// As [`write_maps`], looking for newuidmap/newgidmap only in `helper_dirs`.
pub fn write_maps_with(
    pid: Pid,
    plan: &impl AsRef<IdMaps>,
    helper_dirs: &[PathBuf],
) -> Result<(), MapError> {
    let maps = plan.as_ref();
    if maps.uid_map.is_empty() {
        return Err(MapError::EmptyMap("uid map"));
    }
    if maps.gid_map.is_empty() {
        return Err(MapError::EmptyMap("gid map"));
    }
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    let direct_gid = maps.gid_map.len() == 1;

    // setgroups must be "deny" before an unprivileged gid_map write; it also keeps the
    // caller's supplementary groups in place, as no setgroups() can drop them.
    if direct_gid {
        write_proc_file(&proc_dir.join("setgroups"), "deny\n", true)?;
    }
    if maps.uid_map.len() == 1 {
        write_proc_file(&proc_dir.join("uid_map"), &map_text(&maps.uid_map), false)?;
    } else {
        run_helper(NEWUIDMAP, pid, &maps.uid_map, helper_dirs)?;
    }
    if direct_gid {
        write_proc_file(&proc_dir.join("gid_map"), &map_text(&maps.gid_map), false)?;
    } else {
        run_helper(NEWGIDMAP, pid, &maps.gid_map, helper_dirs)?;
    }

    verify(&proc_dir.join("uid_map"), &maps.uid_map)?;
    verify(&proc_dir.join("gid_map"), &maps.gid_map)?;
    Ok(())
}

/// The lines of a map file, as the kernel wants them.
fn map_text(map: &[IdMapping]) -> String {
    map.iter().map(|m| format!("{m}\n")).collect()
}

/// Writes `content` with one write(2): the kernel takes a map only in a single write.
/// `missing_ok` tolerates a file the kernel lacks (setgroups before Linux 3.19).
fn write_proc_file(path: &Path, content: &str, missing_ok: bool) -> Result<(), MapError> {
    let err = |source: std::io::Error| MapError::Write {
        hint: write_hint(&source),
        path: path.to_owned(),
        content: content.to_owned(),
        source,
    };
    let mut file = match std::fs::OpenOptions::new().write(true).open(path) {
        Ok(f) => f,
        Err(e) if missing_ok && e.kind() == std::io::ErrorKind::NotFound => {
            // Either an old kernel without the file or a vanished process; the map write
            // that follows tells the two apart.
            return Ok(());
        }
        Err(e) => return Err(err(e)),
    };
    let n = file.write(content.as_bytes()).map_err(err)?;
    if n != content.len() {
        return Err(err(std::io::Error::new(
            std::io::ErrorKind::WriteZero,
            format!("the kernel took {n} of {} bytes", content.len()),
        )));
    }
    Ok(())
}

fn write_hint(e: &std::io::Error) -> Option<String> {
    let base = match e.raw_os_error() {
        Some(libc::ENOENT) | Some(libc::ESRCH) => {
            Some("the process no longer exists".to_owned())
        }
        Some(libc::EPERM) => Some(
            "the map was already written, or this process may not map these ids: without privilege a process can map only its own uid, and its gid after setgroups is denied"
                .to_owned(),
        ),
        Some(libc::EINVAL) => {
            Some("the kernel rejected the lines (overlapping or out-of-range ids)".to_owned())
        }
        _ => None,
    };
    with_userns_diagnosis(base)
}

/// Appends the sysctl diagnosis when some sysctl blocks unprivileged user namespaces.
fn with_userns_diagnosis(hint: Option<String>) -> Option<String> {
    let d = diagnose_userns();
    if !d.is_blocked() {
        return hint;
    }
    Some(match hint {
        Some(h) => format!("{h}; also {d}"),
        None => d.to_string(),
    })
}

/// Runs newuidmap/newgidmap for `pid` with `map`, checking its exit status.
fn run_helper(
    name: &'static str,
    pid: Pid,
    map: &[IdMapping],
    helper_dirs: &[PathBuf],
) -> Result<(), MapError> {
    let path = find_helper(name, helper_dirs).ok_or_else(|| MapError::HelperMissing {
        helper: name,
        dirs: join_dirs(helper_dirs),
    })?;
    let mut args: Vec<OsString> = vec![pid.to_string().into()];
    for m in map {
        args.extend([
            m.inside.to_string().into(),
            m.outside.to_string().into(),
            m.count.to_string().into(),
        ]);
    }
    // A clean environment in the C locale: the helper is setuid, and its messages are
    // matched below to explain known failures.
    let out = Command::new(&path)
        .args(&args)
        .env_clear()
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .output()
        .map_err(|source| MapError::HelperSpawn {
            path: path.clone(),
            source,
        })?;
    if out.status.success() {
        return Ok(());
    }
    let mut stderr = String::from_utf8_lossy(&out.stderr)
        .trim()
        .replace('\n', "; ");
    if stderr.is_empty() {
        stderr = String::from_utf8_lossy(&out.stdout)
            .trim()
            .replace('\n', "; ");
    }
    if stderr.len() > MAX_STDERR_IN_ERROR {
        let mut cut = MAX_STDERR_IN_ERROR;
        while !stderr.is_char_boundary(cut) {
            cut -= 1;
        }
        stderr.truncate(cut);
        stderr.push_str("...");
    }
    let hint = helper_hint(name, &path, &stderr);
    let args = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    Err(MapError::HelperFailed {
        path,
        args,
        status: out.status,
        stderr: if stderr.is_empty() {
            "no message".to_owned()
        } else {
            stderr
        },
        hint,
    })
}

/// Known causes of helper failures, recognised from the message or the helper itself.
fn helper_hint(name: &str, path: &Path, stderr: &str) -> Option<String> {
    let file = if name == NEWUIDMAP {
        "/etc/subuid"
    } else {
        "/etc/subgid"
    };
    let base = if stderr.contains("different user") {
        Some(format!(
            "{name} checks that /proc/PID belongs to you; it does not when the process is not dumpable, a known effect of running from an NFS home directory: run without the subordinate-id mapping (root-mapped fakeroot) instead"
        ))
    } else if stderr.contains("not allowed") {
        Some(format!(
            "{name} checks the ranges against the system file {file}, which does not grant them to you"
        ))
    } else if !is_privileged_helper(path) {
        Some(format!(
            "{} is neither setuid root nor owned by root with the setuid bit; unless it has file capabilities it cannot map other ids: reinstall the package that provides it",
            path.display()
        ))
    } else {
        None
    };
    with_userns_diagnosis(base)
}

/// True when the helper is setuid root. File capabilities are not inspected, so false
/// only means "maybe unprivileged".
fn is_privileged_helper(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).is_ok_and(|m| m.uid() == 0 && m.mode() & 0o4000 != 0)
        || has_file_caps(path)
}

/// True when `path` carries a `security.capability` extended attribute.
fn has_file_caps(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: both strings are NUL-terminated; a null buffer of size 0 only asks the size.
    let n = unsafe {
        libc::getxattr(
            c.as_ptr(),
            c"security.capability".as_ptr(),
            std::ptr::null_mut(),
            0,
        )
    };
    n > 0
}

/// Reads a /proc/PID/uid_map or gid_map.
pub fn read_map(path: &Path) -> Result<Vec<IdMapping>, MapError> {
    let text = std::fs::read_to_string(path).map_err(|source| MapError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_map(&text).map_err(|line| MapError::Read {
        path: path.to_owned(),
        source: std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("unexpected line {line:?}"),
        ),
    })
}

/// Parses map lines `inside outside count`; the error is the offending line.
fn parse_map(text: &str) -> Result<Vec<IdMapping>, String> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let n: Vec<u32> = l
                .split_whitespace()
                .map(|f| f.parse::<u32>())
                .collect::<Result<_, _>>()
                .map_err(|_| l.to_owned())?;
            match n[..] {
                [inside, outside, count] => Ok(IdMapping::new(inside, outside, count)),
                _ => Err(l.to_owned()),
            }
        })
        .collect()
}

/// Checks that the kernel holds exactly `expected` (in any order).
fn verify(path: &Path, expected: &[IdMapping]) -> Result<(), MapError> {
    let mut found = read_map(path)?;
    let mut want = expected.to_vec();
    found.sort();
    want.sort();
    if found != want {
        return Err(MapError::Mismatch {
            path: path.to_owned(),
            expected: expected.to_vec(),
            found,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_find_helper_only_in_given_dirs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        std::fs::create_dir(&a).expect("mkdir");
        std::fs::create_dir(&b).expect("mkdir");
        // Not executable in a: skipped. Executable in b: found.
        std::fs::write(a.join(NEWUIDMAP), "").expect("write");
        std::fs::write(b.join(NEWUIDMAP), "").expect("write");
        std::fs::set_permissions(b.join(NEWUIDMAP), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let dirs = vec![a.clone(), b.clone()];
        assert_eq!(find_helper(NEWUIDMAP, &dirs), Some(b.join(NEWUIDMAP)));
        assert_eq!(find_helper(NEWGIDMAP, &dirs), None);
        // A directory named like the helper is not the helper.
        std::fs::create_dir(a.join(NEWGIDMAP)).expect("mkdir");
        assert_eq!(find_helper(NEWGIDMAP, &dirs), None);
    }

    #[test]
    fn test_default_dirs_exclude_path() {
        let dirs = default_helper_dirs();
        assert_eq!(dirs.len(), 6);
        assert!(dirs.iter().all(|d| d.is_absolute()));
        assert_eq!(
            join_dirs(&dirs),
            "/bin:/sbin:/usr/bin:/usr/sbin:/usr/local/bin:/usr/local/sbin"
        );
    }

    #[test]
    fn test_parse_map_kernel_format() {
        let text = "         0       1000          1\n         1     100000      65536\n";
        assert_eq!(
            parse_map(text),
            Ok(vec![
                IdMapping::new(0, 1000, 1),
                IdMapping::new(1, 100000, 65536)
            ])
        );
        assert_eq!(parse_map(""), Ok(vec![]));
        assert_eq!(parse_map("1 2\n"), Err("1 2".to_owned()));
        assert_eq!(parse_map("a b c\n"), Err("a b c".to_owned()));
    }

    #[test]
    fn test_map_text() {
        let t = map_text(&[IdMapping::new(0, 1000, 1), IdMapping::new(1, 5, 65536)]);
        assert_eq!(t, "0 1000 1\n1 5 65536\n");
    }

    #[test]
    fn test_verify_detects_mismatch_in_any_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("uid_map");
        std::fs::write(&p, "1 100000 65536\n0 1000 1\n").expect("write");
        let plan = [IdMapping::new(0, 1000, 1), IdMapping::new(1, 100000, 65536)];
        verify(&p, &plan).expect("same lines, other order");
        let err = verify(&p, &plan[..1]).expect_err("differs");
        let msg = err.to_string();
        assert!(msg.contains("not the planned [0 1000 1]"), "{msg}");
    }

    #[test]
    fn test_empty_plan_is_refused() {
        let plan = IdMaps {
            uid_map: vec![],
            gid_map: vec![IdMapping::new(0, 0, 1)],
        };
        let err = write_maps(Pid::from_raw(1), &plan).expect_err("empty");
        assert!(matches!(err, MapError::EmptyMap("uid map")));
    }

    #[test]
    fn test_missing_helper_error_names_package() {
        let dir = tempfile::tempdir().expect("tempdir");
        let plan = IdMaps::subid(1000, 1000, 100000, 100000);
        // A pid that cannot exist: the helper lookup comes before any use of it.
        let err = write_maps_with(Pid::from_raw(i32::MAX), &plan, &[dir.path().to_owned()])
            .expect_err("no helper");
        let msg = err.to_string();
        assert!(msg.starts_with("newuidmap is not installed in"), "{msg}");
        assert!(msg.contains("uidmap on Debian"), "{msg}");
    }

    #[test]
    fn test_failing_helper_stderr_and_hint_are_captured() {
        let dir = tempfile::tempdir().expect("tempdir");
        let helper = dir.path().join(NEWUIDMAP);
        std::fs::write(
            &helper,
            "#!/bin/sh\necho \"newuidmap: Target process $1 is owned by a different user: uid:0 pw_uid:0 st_uid:0\" >&2\nexit 1\n",
        )
        .expect("write");
        std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let plan = IdMaps::subid(1000, 1000, 100000, 100000);
        let err = write_maps_with(Pid::from_raw(4242), &plan, &[dir.path().to_owned()])
            .expect_err("helper fails");
        let msg = err.to_string();
        assert!(
            msg.contains("4242 0 1000 1 1 100000 65536` failed"),
            "{msg}"
        );
        assert!(
            msg.contains("Target process 4242 is owned by a different user"),
            "{msg}"
        );
        assert!(msg.contains("NFS home"), "{msg}");
        assert_eq!(msg.lines().count(), 1);
    }

    #[test]
    fn test_helper_not_allowed_hint_names_system_file() {
        let h = helper_hint(
            NEWGIDMAP,
            Path::new("/usr/bin/newgidmap"),
            "newgidmap: gid range [1-65537) -> [5-65541) not allowed",
        )
        .expect("hint");
        assert!(h.contains("/etc/subgid"), "{h}");
    }

    #[test]
    fn test_write_to_dead_process_says_so() {
        // Spawn and reap a short-lived child: its pid is then free (and unlikely reused
        // within the test).
        let mut child = Command::new("/bin/true").spawn().expect("spawn true");
        let pid = Pid::from_raw(i32::try_from(child.id()).expect("pid fits"));
        child.wait().expect("wait");
        let err = write_maps(pid, &IdMaps::single(0, 0)).expect_err("gone");
        let msg = err.to_string();
        assert!(msg.contains("no longer exists"), "{msg}");
    }
}
