//! `sifr build`: definition files, bootstrap sources, running the sections under fakeroot,
//! and writing sandboxes and SIF images.
//!
//! - `pipeline`: the whole build, from a `Request` to the written image, in a worker
//!   process; `convert`: OCI sources to SIF images kept in the cache (pull, exec docker://).
//! - `deffile`: parses and validates definition files (runs nothing).
//! - `stage`: builds one stage: bootstrap, then the sections, as fakeroot root.
//! - `context`: the settings every step shares, and running work as fakeroot root;
//!   `unpack`: filling a root filesystem from a local or OCI image.
//! - `baseenv`: the `/.singularity.d` skeleton; `assemble`: squashfs and SIF output;
//!   `workdir`: the build's scratch directory and interrupts; `output`: atomic outputs;
//!   `supervise`: the build's worker process and the processes it starts.
//! - `oci`: OCI sources (registries, layouts, archives): fetch, unpack layers, metadata;
//!   `oci::oras`: SIF files in registries (`oras://`); `net`: http(s):// image downloads.

pub mod assemble;
pub mod baseenv;
pub mod context;
pub mod convert;
pub mod deffile;
pub mod net;
pub mod oci;
pub mod output;
pub mod pipeline;
pub mod stage;
pub mod supervise;
pub mod unpack;
pub mod workdir;
