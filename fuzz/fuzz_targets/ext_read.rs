//! Fuzz target: opens arbitrary bytes as an ext2/3/4 image with sifr's backend over the
//! vendored ext4-view and walks the whole tree through the `ImageBackend` interface, within a
//! work budget (`sifr_fuse::fuzzing`). Nothing may panic.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = sifr_fuse::fuzzing::ext_open_and_walk(data);
});
