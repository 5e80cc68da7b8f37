//! Signing and verifying SIF images, the PGP keyrings, and the execution control list.
//!
//! - [`metadata`], [`digest`]: what a current-format signature covers (spec §9.1).
//! - [`pgp`]: OpenPGP keys and clear-signed messages (rpgp).
//! - [`pem`], [`dsse`], [`x509`]: PEM keys, DSSE envelopes, certificate chains.
//! - [`signer`]: adding signature objects to an image.
//! - [`verify`]: checking them (current and legacy formats); [`error`]: why they fail.
//! - [`keyring`]: the user's and the install's keyrings on disk; [`password`]: key passwords;
//!   [`keychoice`]: choosing one key of a keyring (index, only key, or asked);
//!   [`keytext`]: keys shown as Apptainer shows them (`key list`, the choice listing).
//! - [`hkp`]: the HKP keyserver client (search, fetch, push); [`keyservers`]: the user's
//!   keyserver list.
//! - [`ecl`]: enforcing ecl.toml before a container is mounted (the image is then served
//!   through `image::pinned`, only as verified).

pub mod digest;
pub mod dsse;
pub mod ecl;
pub mod error;
pub mod hkp;
pub mod keychoice;
pub mod keyring;
pub mod keyservers;
pub mod keytext;
pub mod metadata;
pub mod password;
pub mod pem;
pub mod pgp;
pub mod signer;
pub mod verify;
pub mod x509;
