//! sifr: a rootless runtime for Singularity/Apptainer (SIF) containers.
//!
//! The module tree is the architecture:
//! `cli` (argument parsing only) → `cmd` (one file per verb, glue) → `config` (policy) →
//! `image` (SIF, squashfs, ext3, sandbox) → `launch` (namespaces, mounts, identity,
//! environment, security) → the `sifr-fuse` and `sifr-idmap` crates.

pub mod build;
pub mod cli;
pub mod cmd;
pub mod compat;
pub mod config;
pub mod image;
pub mod launch;
pub mod log;
pub mod progress;
pub mod sign;
#[cfg(test)]
pub(crate) mod testutil;
