//! Fuzz target: opens arbitrary bytes as a squashfs image with sifr's reader and walks the
//! whole tree through the `ImageBackend` interface, within a work budget
//! (`sifr_fuse::fuzzing`). Nothing may panic.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = sifr_fuse::fuzzing::squashfs_open_and_walk(data);
});
