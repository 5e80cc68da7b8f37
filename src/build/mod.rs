//! `sifr build`: turning a definition file (or another image) into a container image.
//!
//! [`deffile`] parses and validates definition files; it runs nothing.

pub mod deffile;
