//! Every input saved in `tests/fuzz-regressions/layer_apply/` (crashes the fuzzer once found,
//! and hand-made seeds) goes through the same code as the fuzz target `layer_apply`
//! (`sifr::build::oci::fuzzing`: apply as given and gzip-wrapped into `root/` of a scratch
//! directory, nothing beside `root/` may change) without a panic, and the hand-made seeds do
//! what their names say.

use sifr::build::oci::apply::ApplyError;
use sifr::build::oci::fuzzing::apply_and_check;

/// (file name, bytes), embedded by build.rs.
const CASES: &[(&str, &[u8])] =
    include!(concat!(env!("OUT_DIR"), "/fuzz_regressions_layer_apply.rs"));

fn case(name: &str) -> &'static [u8] {
    CASES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, d)| *d)
        .unwrap_or_else(|| panic!("seed {name} missing from tests/fuzz-regressions/layer_apply"))
}

#[test]
fn test_layer_fuzz_regressions_do_not_panic_or_escape() {
    assert!(
        CASES.len() >= 5,
        "expected the seeds, found {}",
        CASES.len()
    );
    for (name, data) in CASES {
        let r = std::panic::catch_unwind(|| apply_and_check(data));
        assert!(
            r.is_ok(),
            "regression input {name} panicked or escaped its root"
        );
    }
}

#[test]
fn test_layer_seeds_are_what_they_say() {
    for ok in ["small-layer.tar", "small-layer.tar.gz"] {
        let o = apply_and_check(case(ok));
        let plain = o.plain.expect("applied").expect(ok);
        assert!(plain.entries >= 2, "{ok}: {plain:?}");
        assert!(plain.whiteouts + plain.opaque_dirs >= 1, "{ok}: {plain:?}");
        // Wrapped once more in gzip it is no layer (gzip of gzip): refused, nothing written.
        let gz = o.gzip.expect("applied");
        if ok.ends_with(".tar") {
            assert_eq!(gz.expect("gzip-wrapped").entries, plain.entries);
        }
    }
    let o = apply_and_check(case("dotdot.tar"));
    assert!(
        matches!(o.plain, Some(Err(ApplyError::Escape { .. }))),
        "{:?}",
        o.plain
    );
    assert!(matches!(o.gzip, Some(Err(ApplyError::Escape { .. }))));
    assert!(matches!(
        apply_and_check(case("hardlink-outside.tar")).plain,
        Some(Err(_))
    ));
    assert!(matches!(
        apply_and_check(case("truncated.tar")).plain,
        Some(Err(ApplyError::Read(_)))
    ));
    // Writing through a planted symlink stays inside the root (apply_and_check asserts it);
    // the write lands in root/ or is refused.
    for name in ["symlink-up-then-write.tar", "symlink-root-then-write.tar"] {
        assert!(apply_and_check(case(name)).plain.is_some(), "{name}");
    }
}
