//! `sifr build`: definition files, bootstrap sources, running the sections under fakeroot,
//! and writing sandboxes and SIF images.

pub mod assemble;
pub mod baseenv;
pub mod workdir;
