//! Ids that belong to real accounts on the host (uids from /etc/passwd, gids from
//! /etc/group), so that a subordinate range that would hand them out can be refused.
//!
//! Only the local files are read: that is where the administrator assigns ids on the
//! machines sifr targets, and a directory service may be unreachable. Lines that do not
//! look like account entries are skipped silently; they are not ours to diagnose.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Account databases larger than this are refused (a large site has a few MB).
pub const MAX_ACCOUNT_FILE_BYTES: u64 = 256 * 1024 * 1024;

/// The ids in use on the host, each with the account name that holds it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostIds {
    ids: BTreeMap<u32, String>,
}

/// Reading an account file failed.
#[derive(Debug, thiserror::Error)]
pub enum HostIdsError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is implausibly large.
    #[error("{} is larger than {MAX_ACCOUNT_FILE_BYTES} bytes", path.display())]
    TooLarge { path: PathBuf },
}

impl HostIds {
    /// No ids at all.
    pub fn none() -> HostIds {
        HostIds::default()
    }

    /// Reads the uids of a passwd-format file (`name:x:uid:gid:...`).
    pub fn from_passwd(path: &Path) -> Result<HostIds, HostIdsError> {
        Ok(HostIds::parse(&read_limited(path)?))
    }

    /// Reads the gids of a group-format file (`name:x:gid:members`).
    pub fn from_group(path: &Path) -> Result<HostIds, HostIdsError> {
        Ok(HostIds::parse(&read_limited(path)?))
    }

    /// Parses passwd or group text: both keep the id in the third field.
    pub fn parse(bytes: &[u8]) -> HostIds {
        let mut ids = BTreeMap::new();
        for line in bytes.split(|&b| b == b'\n') {
            let Ok(line) = std::str::from_utf8(line) else {
                continue;
            };
            let mut fields = line.split(':');
            let (Some(name), Some(_), Some(id)) = (fields.next(), fields.next(), fields.next())
            else {
                continue;
            };
            if name.is_empty() || name.starts_with(['#', '+', '-']) {
                continue;
            }
            if let Ok(id) = id.parse::<u32>() {
                ids.entry(id).or_insert_with(|| name.to_owned());
            }
        }
        HostIds { ids }
    }

    /// Adds one id (for tests and callers that know of other ids in use).
    pub fn insert(&mut self, id: u32, name: &str) {
        self.ids.entry(id).or_insert_with(|| name.to_owned());
    }

    /// The lowest id in `[start, end)` that belongs to an account, with its name.
    pub fn first_in(&self, start: u64, end: u64) -> Option<(u32, &str)> {
        let lo = u32::try_from(start).ok()?;
        let hi = end.min(1u64 << 32);
        self.ids
            .range(lo..)
            .next()
            .filter(|(id, _)| u64::from(**id) < hi)
            .map(|(id, name)| (*id, name.as_str()))
    }
}

fn read_limited(path: &Path) -> Result<Vec<u8>, HostIdsError> {
    let read_err = |source| HostIdsError::Read {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let mut bytes = Vec::new();
    file.take(MAX_ACCOUNT_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > MAX_ACCOUNT_FILE_BYTES {
        return Err(HostIdsError::TooLarge {
            path: path.to_owned(),
        });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
                          # comment:x:5:5\n\
                          +nis::::\n\
                          nobody:x:65534:65534::/:/usr/sbin/nologin\n\
                          broken line\n\
                          alice:x:1000:1000::/home/alice:/bin/bash\n\
                          high:x:150000:150000::/:/bin/false\n";

    #[test]
    fn test_parse_passwd_ids() {
        let h = HostIds::parse(PASSWD.as_bytes());
        assert_eq!(h.first_in(0, 1), Some((0, "root")));
        assert_eq!(h.first_in(1, 1000), None);
        assert_eq!(h.first_in(1, 1001), Some((1000, "alice")));
        assert_eq!(h.first_in(100000, 165536), Some((150000, "high")));
        assert_eq!(h.first_in(200000, 265536), None);
        assert_eq!(h.first_in(5, 6), None, "comment lines are not accounts");
    }

    #[test]
    fn test_first_in_past_id_space() {
        let mut h = HostIds::none();
        h.insert(u32::MAX, "max");
        assert_eq!(
            h.first_in(u64::from(u32::MAX), 1u64 << 33),
            Some((u32::MAX, "max"))
        );
        assert_eq!(h.first_in(1u64 << 32, 1u64 << 33), None);
    }

    #[test]
    fn test_read_group_file_and_missing_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("group");
        std::fs::write(&p, "root:x:0:\nstaff:x:50:alice,bob\n").expect("write");
        let h = HostIds::from_group(&p).expect("read");
        assert_eq!(h.first_in(1, 100), Some((50, "staff")));
        let err = HostIds::from_group(&dir.path().join("nope")).expect_err("missing");
        assert!(err.to_string().contains("nope"), "{err}");
    }
}
