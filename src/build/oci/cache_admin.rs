//! `cache list` and `cache clean` over the cache of [`super::cache`]: its entries by
//! Apptainer's cache types, their counts and sizes, and their removal (all, by type, or
//! older than some days), as Apptainer's `internal/pkg/cache` does.
//!
//! Types: `blob` (the OCI blobs, `blob/blobs/<algorithm>/<hex>`: one entry per blob), and
//! the file caches `library`, `oci-tmp` (SIFs converted from OCI sources), `shub`, `oras`,
//! `ipfs` and `net` (one entry per file in `<type>/`; sifr fills `oci-tmp` only, the others
//! are listed and cleaned when something put files there). Temporary files of a pull in
//! progress (`.partial-*`, `.sifr-convert-*`) are not entries: listing skips them, and
//! cleaning removes the partial downloads no pull is writing (an interrupted pull's, kept
//! for the next to continue; see [`super::partial`]) and the other temporary files older
//! than a day (left by a build that was killed), leaving younger ones to the build that
//! writes them.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// The file cache types, in Apptainer's order.
pub const FILE_TYPES: [&str; 6] = ["library", "oci-tmp", "shub", "oras", "ipfs", "net"];
/// The OCI blob cache type.
pub const BLOB_TYPE: &str = "blob";

/// Temporary files younger than this are left to the pull that writes them.
const TEMP_GRACE: Duration = Duration::from_secs(24 * 3600);

/// Why the cache could not be listed or cleaned.
#[derive(Debug, thiserror::Error)]
pub enum CacheAdminError {
    #[error(
        "unknown cache type {0:?} (possible values: library, oci-tmp, shub, blob, oras, ipfs, net, all)"
    )]
    UnknownType(String),
    #[error("unable to open cache {kind} at directory {}: {err}", dir.display())]
    Open {
        kind: String,
        dir: PathBuf,
        err: io::Error,
    },
    #[error("failed to remove {count} cache entries (first: {}: {err})", first.display())]
    Remove {
        count: usize,
        first: PathBuf,
        err: io::Error,
    },
}

/// One cache entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub path: PathBuf,
    /// `blob` or a file cache type.
    pub kind: &'static str,
    pub size: u64,
    pub modified: SystemTime,
}

/// The cache types a `-T/--type` list selects: `all` (or nothing) is every type; `blobs`
/// is `blob` (as `cache list` accepts it); `oci` is `oci-tmp` (Apptainer names `oci` in
/// the flag's help but has no such directory, so cleans nothing for it).
pub fn select_types(requested: &[String]) -> Result<Vec<&'static str>, CacheAdminError> {
    let mut all = vec![BLOB_TYPE];
    all.extend(FILE_TYPES);
    let words: Vec<&str> = requested
        .iter()
        .flat_map(|r| r.split(','))
        .map(str::trim)
        .filter(|w| !w.is_empty())
        .collect();
    if words.is_empty() || words.contains(&"all") {
        return Ok(all);
    }
    let mut out = Vec::new();
    for w in words {
        let t = match w {
            "blob" | "blobs" => BLOB_TYPE,
            "oci" => "oci-tmp",
            other => *FILE_TYPES
                .iter()
                .find(|t| **t == other)
                .ok_or_else(|| CacheAdminError::UnknownType(other.to_string()))?,
        };
        if !out.contains(&t) {
            out.push(t);
        }
    }
    // In Apptainer's order, whatever the order asked.
    Ok(all.into_iter().filter(|t| out.contains(t)).collect())
}

fn is_temp(name: &str) -> bool {
    name.starts_with(".partial-") || name.starts_with(".sifr-convert-") || name.starts_with("tmp_")
}

/// The directories holding the entries of `kind` under the cache root.
fn dirs_of(root: &Path, kind: &str) -> Vec<PathBuf> {
    if kind == BLOB_TYPE {
        let blobs = root.join("blob/blobs");
        vec![blobs.join("sha256"), blobs.join("sha512")]
    } else {
        vec![root.join(kind)]
    }
}

/// Every file in `dir` (sorted by name), temporary ones apart; a missing directory has none.
fn files_in(dir: &Path, kind: &'static str) -> Result<(Vec<Entry>, Vec<Entry>), CacheAdminError> {
    let open = |err| CacheAdminError::Open {
        kind: kind.to_string(),
        dir: dir.to_path_buf(),
        err,
    };
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Vec::new(), Vec::new())),
        Err(e) => return Err(open(e)),
    };
    let (mut entries, mut temps) = (Vec::new(), Vec::new());
    for e in rd {
        let e = e.map_err(open)?;
        let path = e.path();
        // A file removed meanwhile (a concurrent clean) is not an error.
        let Ok(m) = fs::symlink_metadata(&path) else {
            continue;
        };
        let name = e.file_name().to_string_lossy().into_owned();
        let entry = Entry {
            size: m.len(),
            modified: m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            name: name.clone(),
            path,
            kind,
        };
        if is_temp(&name) {
            temps.push(entry);
        } else {
            entries.push(entry);
        }
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok((entries, temps))
}

/// The entries of the cache at `root` of the given types, in type order then by name.
pub fn list(root: &Path, types: &[&'static str]) -> Result<Vec<Entry>, CacheAdminError> {
    let mut out = Vec::new();
    for kind in types {
        for dir in dirs_of(root, kind) {
            out.extend(files_in(&dir, kind)?.0);
        }
    }
    Ok(out)
}

/// Apptainer's human size (`fs.FindSize`): two decimals in KiB, MiB, GiB or TiB.
pub fn human_size(size: u64) -> String {
    const KIB: f64 = 1024.0;
    let s = size as f64;
    let (factor, unit) = if s < KIB * KIB {
        (KIB, "KiB")
    } else if s < KIB * KIB * KIB {
        (KIB * KIB, "MiB")
    } else if s < KIB * KIB * KIB * KIB {
        (KIB * KIB * KIB, "GiB")
    } else {
        (KIB * KIB * KIB * KIB, "TiB")
    };
    format!("{:.2} {unit}", s / factor)
}

/// `cache list`'s text: with `verbose` a table of entries first (Apptainer's columns:
/// name cut at 22 characters, local date, size, type), then the counts and sizes.
pub fn list_text(
    entries: &[Entry],
    types: &[&str],
    verbose: bool,
    date: &dyn Fn(SystemTime) -> String,
) -> String {
    let mut out = String::new();
    if verbose {
        out.push_str(&format!(
            "{:<24} {:<22} {:<16} {}\n",
            "NAME", "DATE CREATED", "SIZE", "TYPE"
        ));
        for e in entries {
            let name: String = e.name.chars().take(22).collect();
            out.push_str(&format!(
                "{:<24} {:<22} {:<16} {}\n",
                name,
                date(e.modified),
                human_size(e.size),
                e.kind
            ));
        }
        out.push('\n');
    }
    let containers_shown = types.iter().any(|t| *t != BLOB_TYPE);
    let blobs_shown = types.contains(&BLOB_TYPE);
    let (mut n_files, mut files_size, mut n_blobs, mut blobs_size) = (0usize, 0u64, 0usize, 0u64);
    for e in entries {
        if e.kind == BLOB_TYPE {
            n_blobs += 1;
            blobs_size += e.size;
        } else {
            n_files += 1;
            files_size += e.size;
        }
    }
    out.push_str("There are");
    if containers_shown {
        out.push_str(&format!(
            " {n_files} container file(s) using {}",
            human_size(files_size)
        ));
    }
    if containers_shown && blobs_shown {
        out.push_str(" and");
    }
    if blobs_shown {
        out.push_str(&format!(
            " {n_blobs} oci blob file(s) using {}",
            human_size(blobs_size)
        ));
    }
    out.push_str(" of space\n");
    out.push_str(&format!(
        "Total space used: {}\n",
        human_size(files_size + blobs_size)
    ));
    out
}

/// What cleaning one type did (or, in a dry run, would do).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Cleaned {
    /// The entries removed (or that would be).
    pub removed: Vec<Entry>,
}

/// Removes the entries of `kind` last modified at least `days` days before `now` (`days`
/// 0: all of them), and the temporary files a killed pull left (older than a day). With
/// `dry_run` nothing is removed. `report` is told of each entry as it goes (Apptainer
/// prints `Removing TYPE cache entry: NAME`), and of a type with nothing in it.
pub fn clean(
    root: &Path,
    kind: &'static str,
    days: u32,
    dry_run: bool,
    now: SystemTime,
    report: &mut dyn FnMut(CleanEvent<'_>),
) -> Result<Cleaned, CacheAdminError> {
    let mut cleaned = Cleaned::default();
    let mut failures: Vec<(PathBuf, io::Error)> = Vec::new();
    let age = |e: &Entry| now.duration_since(e.modified).unwrap_or(Duration::ZERO);
    let min_age = Duration::from_secs(u64::from(days) * 24 * 3600);
    let mut any = false;
    for dir in dirs_of(root, kind) {
        let (entries, temps) = files_in(&dir, kind)?;
        any |= !entries.is_empty();
        for e in entries {
            if age(&e) < min_age {
                report(CleanEvent::Skipped(&e));
                continue;
            }
            report(CleanEvent::Removing(&e));
            if !dry_run && let Err(err) = remove(&e.path) {
                failures.push((e.path.clone(), err));
                continue;
            }
            cleaned.removed.push(e);
        }
        for t in temps {
            if dry_run {
                continue;
            }
            if t.name.starts_with(".partial-") {
                // A download in progress holds its file's lock; one left by an interrupted
                // pull (kept for the next to continue) is removed as an entry would be.
                if age(&t) >= min_age {
                    let _ = super::partial::remove_if_unused(&t.path);
                }
            } else if age(&t) >= TEMP_GRACE.max(min_age) {
                let _ = remove(&t.path);
            }
        }
    }
    if !any {
        report(CleanEvent::Empty(&dirs_of(root, kind)[0]));
    }
    let count = failures.len();
    if let Some((first, err)) = failures.into_iter().next() {
        return Err(CacheAdminError::Remove { count, first, err });
    }
    Ok(cleaned)
}

fn remove(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        // Removed meanwhile by another clean: what was asked is done.
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// What [`clean`] tells its caller as it goes.
#[derive(Debug)]
pub enum CleanEvent<'a> {
    Removing(&'a Entry),
    Skipped(&'a Entry),
    /// The type has no entries (the directory named).
    Empty(&'a Path),
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;

    fn write(p: &Path, len: usize, age_days: u64) {
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        fs::write(p, vec![b'x'; len]).expect("write");
        let t = SystemTime::now() - Duration::from_secs(age_days * 24 * 3600 + 60);
        File::options()
            .write(true)
            .open(p)
            .expect("open")
            .set_modified(t)
            .expect("mtime");
    }

    fn cache() -> tempfile::TempDir {
        let d = tempfile::tempdir().expect("tempdir");
        let r = d.path();
        write(&r.join("blob/blobs/sha256/aaaa"), 2048, 0);
        write(&r.join("blob/blobs/sha256/bbbb"), 1024, 10);
        write(&r.join("blob/blobs/sha256/.partial-x"), 5, 0);
        write(
            &r.join("oci-tmp/0123456789abcdef0123456789abcdef.sif"),
            3 << 20,
            40,
        );
        write(&r.join("oci-tmp/.sifr-convert-1-2.sif"), 7, 3);
        fs::create_dir_all(r.join("library")).expect("mkdir");
        d
    }

    #[test]
    fn test_select_types() {
        let s = |v: &[&str]| select_types(&v.iter().map(|x| x.to_string()).collect::<Vec<_>>());
        assert_eq!(s(&[]).expect("all").len(), 7);
        assert_eq!(s(&["all"]).expect("all").len(), 7);
        assert_eq!(s(&["oci-tmp,blob"]).expect("two"), vec!["blob", "oci-tmp"]);
        assert_eq!(s(&["blobs"]).expect("blobs"), vec!["blob"]);
        assert_eq!(
            s(&["oci", "library"]).expect("oci"),
            vec!["library", "oci-tmp"]
        );
        let err = s(&["blob", "nope"]).expect_err("unknown");
        assert!(err.to_string().contains("\"nope\""), "{err}");
    }

    #[test]
    fn test_list_counts_and_formats() {
        let d = cache();
        let all = select_types(&[]).expect("types");
        let entries = list(d.path(), &all).expect("list");
        let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            vec!["aaaa", "bbbb", "0123456789abcdef0123456789abcdef.sif"]
        );
        let text = list_text(&entries, &all, false, &|_| String::new());
        assert_eq!(
            text,
            "There are 1 container file(s) using 3.00 MiB and 2 oci blob file(s) using 3.00 KiB of space\nTotal space used: 3.00 MiB\n"
        );
        let blobs = list(d.path(), &["blob"]).expect("list");
        assert_eq!(
            list_text(&blobs, &["blob"], false, &|_| String::new()),
            "There are 2 oci blob file(s) using 3.00 KiB of space\nTotal space used: 3.00 KiB\n"
        );
        let sifs = list(d.path(), &["oci-tmp"]).expect("list");
        let v = list_text(&sifs, &["oci-tmp"], true, &|_| "2026-01-02 03:04:05".into());
        assert_eq!(
            v,
            "NAME                     DATE CREATED           SIZE             TYPE\n\
             0123456789abcdef012345   2026-01-02 03:04:05    3.00 MiB         oci-tmp\n\
             \n\
             There are 1 container file(s) using 3.00 MiB of space\n\
             Total space used: 3.00 MiB\n"
        );
        assert_eq!(human_size(0), "0.00 KiB");
        assert_eq!(human_size(1536), "1.50 KiB");
        assert_eq!(human_size(5 << 30), "5.00 GiB");
        assert_eq!(human_size(2 << 40), "2.00 TiB");
    }

    #[test]
    fn test_clean_by_days_dry_run_and_all() {
        let d = cache();
        let r = d.path();
        let now = SystemTime::now();
        let mut seen = Vec::new();
        let mut rep = |e: CleanEvent<'_>| {
            if let CleanEvent::Removing(e) = e {
                seen.push(e.name.clone())
            }
        };
        // Dry run: told, nothing removed.
        let c = clean(r, "blob", 0, true, now, &mut rep).expect("dry");
        assert_eq!(c.removed.len(), 2);
        assert!(r.join("blob/blobs/sha256/aaaa").exists());
        // Older than 5 days: only bbbb.
        let c = clean(r, "blob", 5, false, now, &mut rep).expect("days");
        assert_eq!(c.removed.len(), 1);
        assert!(!r.join("blob/blobs/sha256/bbbb").exists());
        assert!(r.join("blob/blobs/sha256/aaaa").exists());
        // A young temporary file of a running pull stays; an old one goes.
        clean(r, "oci-tmp", 0, false, now, &mut rep).expect("clean");
        assert!(!r.join("oci-tmp/.sifr-convert-1-2.sif").exists());
        assert!(
            !r.join("oci-tmp/0123456789abcdef0123456789abcdef.sif")
                .exists()
        );
        // A partial download: kept while a pull writes it, removed once none does.
        let writing =
            super::super::partial::Partial::open(&r.join("blob/blobs/sha256/x")).expect("partial");
        clean(r, "blob", 0, false, now, &mut rep).expect("clean");
        assert!(r.join("blob/blobs/sha256/.partial-x").exists());
        drop(writing);
        clean(r, "blob", 0, false, now, &mut rep).expect("clean");
        assert!(!r.join("blob/blobs/sha256/.partial-x").exists());
        assert_eq!(
            seen,
            vec![
                "aaaa",
                "bbbb",
                "bbbb",
                "0123456789abcdef0123456789abcdef.sif",
                "aaaa"
            ]
        );
        let mut empty = 0;
        clean(r, "library", 0, false, now, &mut |e| {
            if matches!(e, CleanEvent::Empty(_)) {
                empty += 1
            }
        })
        .expect("empty");
        assert_eq!(empty, 1);
        assert!(
            list(r, &select_types(&[]).expect("t"))
                .expect("list")
                .is_empty()
        );
    }
}
