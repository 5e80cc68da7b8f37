//! Fuzz target: applies arbitrary bytes as an image layer (as given and gzip-wrapped) into
//! `root/` of a scratch directory and checks that nothing beside `root/` changed
//! (`sifr::build::oci::fuzzing`). Nothing may panic or escape.

#![no_main]

use libfuzzer_sys::fuzz_target;

// The modules themselves, not the whole sifr crate (see fuzz/Cargo.toml). They name each
// other as `super::NAME`, which here is the crate root.
#[allow(dead_code, unused_imports)]
#[path = "../../src/build/oci/apply.rs"]
mod apply;
#[allow(dead_code, unused_imports)]
#[path = "../../src/build/oci/fuzzing.rs"]
mod fuzzing;
// The one in-root resolver (src/image/inroot.rs), under the names the modules use:
// `crate::image::inroot` (apply.rs) and `super::inroot` (fuzzing.rs).
#[allow(dead_code, unused_imports)]
#[path = "../../src/image/inroot.rs"]
pub mod inroot;
mod image {
    pub use super::inroot;
}

fuzz_target!(|data: &[u8]| {
    fuzzing::apply_and_check(data);
});
