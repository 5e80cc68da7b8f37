//! Fuzz target: parses arbitrary text as a definition file, renders what parses and parses
//! that again: it must give the same stages (`sifr::build::deffile::fuzzing`). Nothing may
//! panic, and every error is one line.

#![no_main]

use libfuzzer_sys::fuzz_target;

// The module itself, not the whole sifr crate (see fuzz/Cargo.toml).
#[allow(dead_code, unused_imports)]
#[path = "../../src/build/deffile/mod.rs"]
mod deffile;

fuzz_target!(|data: &[u8]| {
    deffile::fuzzing::parse_and_round_trip(data);
});
