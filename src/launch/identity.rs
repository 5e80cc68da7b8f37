//! Who the payload is: the caller's passwd and group entries, merged into the container's
//! `/etc/passwd` and `/etc/group` (Apptainer's `config passwd`/`config group`).
//!
//! Pure text transformation; the launch sequence writes the results into the session
//! directory and binds them over the container's files.

use std::path::{Path, PathBuf};

/// The caller, as the host's user database describes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostUser {
    pub uid: u32,
    pub gid: u32,
    pub name: String,
    pub gecos: String,
    /// Home directory on the host.
    pub home: String,
    pub shell: String,
    /// Every group the caller is in: (gid, name), primary group first.
    pub groups: Vec<(u32, String)>,
}

impl HostUser {
    /// The user's sifr directory (`$HOME/.sifr`, else the database's home) and this host's
    /// name, under which per-host state lives (instances, kept mounts); `None` without a
    /// home directory.
    pub fn sifr_dir_and_host(&self) -> Option<(PathBuf, String)> {
        let home = crate::build::oci::home_dir()
            .or_else(|| (!self.home.is_empty()).then(|| PathBuf::from(&self.home)))?;
        let host = nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "localhost".into());
        Some((home.join(".sifr"), host))
    }

    /// Looks up the calling user (real uid/gid) in the host's user database.
    ///
    /// The home directory comes from the database, not `$HOME`: Nextflow runs sifr under
    /// `env -`, and Apptainer also takes it from passwd.
    pub fn current() -> Result<HostUser, IdentityError> {
        let uid = nix::unistd::getuid();
        let gid = nix::unistd::getgid();
        let user = nix::unistd::User::from_uid(uid)
            .map_err(|e| IdentityError::Lookup(format!("uid {uid}: {e}")))?
            .ok_or_else(|| IdentityError::Lookup(format!("uid {uid} has no passwd entry")))?;
        let mut groups = Vec::new();
        let primary_name = nix::unistd::Group::from_gid(gid)
            .ok()
            .flatten()
            .map(|g| g.name)
            .unwrap_or_else(|| gid.to_string());
        groups.push((gid.as_raw(), primary_name));
        if let Ok(list) = nix::unistd::getgroups() {
            for g in list {
                if g == gid {
                    continue;
                }
                let name = nix::unistd::Group::from_gid(g)
                    .ok()
                    .flatten()
                    .map(|g| g.name)
                    .unwrap_or_else(|| g.to_string());
                groups.push((g.as_raw(), name));
            }
        }
        Ok(HostUser {
            uid: uid.as_raw(),
            gid: gid.as_raw(),
            name: user.name,
            gecos: user.gecos.to_string_lossy().into_owned(),
            home: user.dir.to_string_lossy().into_owned(),
            shell: user.shell.to_string_lossy().into_owned(),
            groups,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot look up the calling user: {0}")]
    Lookup(String),
}

/// The container's passwd with an entry for `user` whose home is `home_dest`.
///
/// An existing entry with the same uid keeps its name and gets the home directory the
/// container uses; otherwise a new entry is appended.
pub fn passwd_with_user(container: &str, uid: u32, user: &HostUser, home_dest: &Path) -> String {
    let home = home_dest.to_string_lossy();
    let mut out = String::new();
    let mut found = false;
    for line in container.lines() {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.len() == 7 && fields[2].parse::<u32>().ok() == Some(uid) && !found {
            found = true;
            out.push_str(&format!(
                "{}:{}:{}:{}:{}:{}:{}\n",
                fields[0], fields[1], fields[2], fields[3], fields[4], home, fields[6]
            ));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    if !found {
        let gid = if uid == 0 { 0 } else { user.gid };
        let name = if uid == 0 { "root" } else { user.name.as_str() };
        out.push_str(&format!(
            "{name}:x:{uid}:{gid}:{}:{home}:{}\n",
            user.gecos.replace(':', " "),
            if user.shell.is_empty() {
                "/bin/sh"
            } else {
                &user.shell
            }
        ));
    }
    out
}

/// The container's group file with the caller added to each of their groups.
pub fn group_with_user(container: &str, user: &HostUser) -> String {
    let mut lines: Vec<String> = container.lines().map(str::to_string).collect();
    for (gid, name) in &user.groups {
        let existing = lines.iter_mut().find(|l| {
            let f: Vec<&str> = l.split(':').collect();
            f.len() == 4 && f[2].parse::<u32>().ok() == Some(*gid)
        });
        match existing {
            Some(line) => {
                let f: Vec<&str> = line.split(':').collect();
                let members: Vec<&str> = f[3].split(',').filter(|m| !m.is_empty()).collect();
                if *gid != user.gid && !members.contains(&user.name.as_str()) {
                    let mut m = members.clone();
                    m.push(&user.name);
                    *line = format!("{}:{}:{}:{}", f[0], f[1], f[2], m.join(","));
                }
            }
            None => lines.push(format!("{name}:x:{gid}:{}", user.name)),
        }
    }
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> HostUser {
        HostUser {
            uid: 1000,
            gid: 1000,
            name: "alice".into(),
            gecos: "Alice A".into(),
            home: "/home/alice".into(),
            shell: "/bin/bash".into(),
            groups: vec![
                (1000, "alice".into()),
                (27, "sudo".into()),
                (5000, "proj".into()),
            ],
        }
    }

    #[test]
    fn test_passwd_appends_caller() {
        let c = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n";
        let out = passwd_with_user(c, 1000, &user(), Path::new("/home/alice"));
        assert!(out.starts_with(c));
        assert!(out.ends_with("alice:x:1000:1000:Alice A:/home/alice:/bin/bash\n"));
    }

    #[test]
    fn test_passwd_existing_uid_gets_home() {
        let c = "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh";
        let out = passwd_with_user(c, 1000, &user(), Path::new("/srv/h"));
        assert_eq!(out.lines().count(), 2);
        assert!(out.contains("user:x:1000:1000::/srv/h:/bin/sh\n"));
    }

    #[test]
    fn test_passwd_fakeroot_keeps_root_entry() {
        let c = "root:x:0:0:root:/root:/bin/sh\n";
        let out = passwd_with_user(c, 0, &user(), Path::new("/root"));
        assert_eq!(out, "root:x:0:0:root:/root:/bin/sh\n");
    }

    #[test]
    fn test_group_adds_memberships() {
        let c = "root:x:0:\nsudo:x:27:bob\nusers:x:100:";
        let out = group_with_user(c, &user());
        assert!(out.contains("sudo:x:27:bob,alice\n"));
        assert!(out.contains("alice:x:1000:alice\n"));
        assert!(out.contains("proj:x:5000:alice\n"));
        assert!(out.contains("users:x:100:\n"));
        // Idempotent.
        assert_eq!(group_with_user(&out, &user()), out);
    }
}
