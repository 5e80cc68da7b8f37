//! OCI image sources for `build`, `pull` and `exec docker://`: parse a source, fetch or open
//! the image, apply its layers into a root filesystem, and turn its config into Apptainer's
//! container metadata.
//!
//! Modules: `reference` (source strings), `digest` (content digests, verifying reads),
//! `spec` (manifests, indexes, configs, platform choice), `auth` (credentials, challenges),
//! `registry` (the distribution-API client), `cache` (the content-addressed blob cache),
//! `inroot` (path resolution confined to a root), `apply` (layer tarballs onto a directory).

pub mod apply;
pub mod auth;
pub mod cache;
pub mod digest;
pub mod inroot;
pub mod reference;
pub mod registry;
pub mod spec;

use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// Reads a whole file, refusing files larger than `limit` with `ErrorKind::FileTooLarge`.
pub(crate) fn read_capped(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    let file = std::fs::File::open(path)?;
    let mut bytes = Vec::new();
    file.take(limit.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(io::Error::new(
            io::ErrorKind::FileTooLarge,
            format!("larger than {limit} bytes"),
        ));
    }
    Ok(bytes)
}

/// The invoking user's home directory: `$HOME`, else the password database.
pub fn home_dir() -> Option<PathBuf> {
    match std::env::var_os("HOME") {
        Some(h) if !h.is_empty() => Some(PathBuf::from(h)),
        _ => nix::unistd::User::from_uid(nix::unistd::getuid())
            .ok()
            .flatten()
            .map(|u| u.dir),
    }
}
