//! Fuzz target: loads arbitrary bytes as a SIF image and, when they load, runs every query
//! and the `siftool` formatters (header, list, info). Nothing may panic, and every object
//! read must stay inside its object (`sifr::image::sif::fuzzing`).

#![no_main]

use libfuzzer_sys::fuzz_target;

// The module itself, not the whole sifr crate (see fuzz/Cargo.toml).
#[allow(dead_code, unused_imports)]
#[path = "../../src/image/sif/mod.rs"]
mod sif;

fuzz_target!(|data: &[u8]| {
    sif::fuzzing::parse_and_exercise(data);
});
