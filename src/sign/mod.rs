//! Signing and verifying SIF images, the PGP keyrings, and the execution control list.
//!
//! - [`metadata`], [`digest`]: what a current-format signature covers (spec §9.1).
//! - [`pgp`]: OpenPGP keys and clear-signed messages (rpgp).
//! - [`error`]: why verification fails, in the reference's words.

pub mod digest;
pub mod dsse;
pub mod error;
pub mod metadata;
pub mod pem;
pub mod pgp;
pub mod signer;
pub mod verify;
pub mod x509;
