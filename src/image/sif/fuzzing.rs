//! The fuzzing entry point, shared by the `fuzz/` target and the regression test: load
//! arbitrary bytes as a SIF image and, when they load, run every query and every `siftool`
//! formatter, checking that object reads stay inside their objects.

use super::display;
use super::image::SifImage;

/// Loads `data` as an in-memory SIF image and exercises everything that reads it. Panics
/// only when an invariant is broken (which is what a fuzzer looks for).
pub fn parse_and_exercise(data: &[u8]) {
    let Ok(img) = SifImage::from_bytes(data.to_vec(), "fuzz.sif") else {
        return;
    };
    exercise(&img);
}

/// Runs every query and formatter on a loaded image.
pub fn exercise(img: &SifImage) {
    let _ = display::header_text(img.header());
    let _ = display::list_text(img);
    let _ = img.header_digest_input();
    for d in img.objects() {
        let _ = display::info_text(img, d);
        let size = u64::try_from(d.size).unwrap_or(0);
        if let Ok(bytes) = img.read_object(d, 1 << 20) {
            assert_eq!(bytes.len() as u64, size, "object {} read size", d.id);
        }
        let mut buf = [0u8; 64];
        if let Ok(n) = img.read_object_at(d, 3, &mut buf) {
            assert!(
                n as u64 <= size.saturating_sub(3),
                "object {} read_at",
                d.id
            );
        }
        let mut r = img.object_reader(d);
        if let Ok(n) = std::io::copy(&mut r, &mut std::io::sink()) {
            assert_eq!(n, size, "object {} reader length", d.id);
        }
        let _ = img.descriptor_digest_input(d);
        let _ = img.relative_id(d);
        assert!(img.object(d.id).is_ok(), "object {} not found by ID", d.id);
        let _ = (
            d.partition(),
            d.signature(),
            d.crypto_message(),
            d.sbom_format(),
        );
        let _ = (
            d.oci_digest(),
            d.link(),
            d.group(),
            d.name_lossy(),
            d.range(),
        );
    }
    let _ = img.object(0);
    let _ = img.object(u32::MAX);
    for g in img.group_ids() {
        let _ = img.group_objects(g);
    }
    let _ = img.ungrouped_objects();
    if let Ok(Some(p)) = img.primary_partition() {
        let _ = img.check_partition_header(&p);
    }
    let _ = img.data_partitions();
    let _ = img.overlay_partitions();
    let parts: Vec<_> = img.partitions().collect();
    for p in &parts {
        let _ = img.fs_magic(p);
    }
}
