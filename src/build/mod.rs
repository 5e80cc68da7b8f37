//! `sifr build`: definition files, bootstrap sources, running the sections under fakeroot,
//! and writing sandboxes and SIF images.
//!
//! - `deffile`: parses and validates definition files (runs nothing).
//! - `stage`: builds one stage: bootstrap, then the sections, as fakeroot root.
//! - `baseenv`: the `/.singularity.d` skeleton; `assemble`: squashfs and SIF output;
//!   `workdir`: the build's scratch directory and interrupts; `output`: atomic outputs;
//!   `supervise`: the build's worker process and the processes it starts.
//! - `oci`: OCI sources (registries, layouts, archives): fetch, unpack layers, metadata.

pub mod assemble;
pub mod baseenv;
pub mod deffile;
pub mod oci;
pub mod output;
pub mod stage;
pub mod supervise;
pub mod workdir;
