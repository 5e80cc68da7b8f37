//! Every input saved in `tests/fuzz-regressions/sif/` (crashes the fuzzer once found, and
//! hand-made seeds such as truncated or overlapping images) loads or is rejected without a
//! panic, and loaded ones survive every query and formatter.

/// (file name, bytes), embedded by build.rs.
const CASES: &[(&str, &[u8])] = include!(concat!(env!("OUT_DIR"), "/fuzz_regressions.rs"));

#[test]
fn test_fuzz_regressions_do_not_panic() {
    assert!(
        CASES.len() >= 5,
        "expected the seeds in tests/fuzz-regressions/sif, found {}",
        CASES.len()
    );
    for (name, data) in CASES {
        let r = std::panic::catch_unwind(|| sifr::image::sif::fuzzing::parse_and_exercise(data));
        assert!(r.is_ok(), "regression input {name} panicked");
    }
}

fn case(name: &str) -> &'static [u8] {
    CASES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, d)| *d)
        .unwrap_or_else(|| panic!("seed {name} missing from tests/fuzz-regressions/sif"))
}

#[test]
fn test_hand_made_seeds_are_what_they_say() {
    use sifr::image::sif::{ErrorKind, SifImage};
    let load = |name: &str| SifImage::from_bytes(case(name).to_vec(), name).map_err(|e| e.kind);
    let img = load("valid-two-objects.sif").expect("valid seed loads");
    assert_eq!(img.object_count(), 2);
    assert!(load("zero-size-objects.sif").is_ok());
    assert!(load("odd-bytes-in-text.sif").is_ok());
    assert!(matches!(
        load("truncated-header.sif"),
        Err(ErrorKind::Truncated { .. })
    ));
    assert!(matches!(
        load("truncated-table.sif"),
        Err(ErrorKind::DescriptorTableOutside { .. })
    ));
    assert!(matches!(
        load("truncated-object.sif"),
        Err(ErrorKind::ObjectOutOfRange { .. })
    ));
    assert!(matches!(
        load("overlapping-objects.sif"),
        Err(ErrorKind::ObjectsOverlap { a: 1, b: 2 })
    ));
    assert!(matches!(
        load("absurd-descriptor-count.sif"),
        Err(ErrorKind::AbsurdDescriptorCount { .. })
    ));
    assert!(matches!(
        load("unknown-data-type.sif"),
        Err(ErrorKind::UnknownDataType { .. })
    ));
    assert!(matches!(
        load("duplicate-ids.sif"),
        Err(ErrorKind::DuplicateObjectId { id: 1 })
    ));
}
