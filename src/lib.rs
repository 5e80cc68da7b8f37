//! sifr: a rootless runtime for Singularity/Apptainer (SIF) containers.
//!
//! The module tree is the architecture:
//! `cli` (argument parsing only) → `cmd` (one file per verb, glue) → `config` (policy) →
//! `image` (SIF, squashfs, ext3, sandbox) → `launch` (namespaces, mounts, identity,
//! environment, security) → the `sifr-fuse` and `sifr-idmap` crates. `build` (definition
//! files, OCI sources, SIF output) and `sign` sit beside `image`; `source` is the one road
//! from an image argument to an opened image (local images through `image`, OCI sources
//! converted through `build`).

pub mod build;
pub mod cli;
pub mod cmd;
pub mod compat;
pub mod config;
pub mod flock;
pub mod image;
pub mod launch;
pub mod log;
pub mod progress;
pub mod sign;
pub mod source;
#[cfg(test)]
pub(crate) mod testutil;
