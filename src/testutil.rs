//! Test-only helpers shared by the unit tests: where the fixtures are, and the rule that a
//! missing fixture or facility is a skip for a developer but a failure in CI (`SIFR_CI=1`),
//! as `tests/common/mod.rs` does for the integration tests.
//!
//! CI runs the unit-test binaries as an unprivileged user who cannot read the source tree,
//! with `SIFR_TESTDATA` pointing at a staged copy of the fixtures: so every fixture path goes
//! through [`testdata`], never `CARGO_MANIFEST_DIR` alone.

use std::path::{Path, PathBuf};

/// The shared fixtures directory: `SIFR_TESTDATA`, else `../shared/testdata` next to the
/// source tree.
pub(crate) fn testdata() -> PathBuf {
    match std::env::var_os("SIFR_TESTDATA") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/testdata"),
    }
}

/// A file under `testdata/sif/`.
pub(crate) fn sif_fixture(name: &str) -> PathBuf {
    testdata().join("sif").join(name)
}

/// True when running in CI, where a missing fixture or facility fails the test.
pub(crate) fn in_ci() -> bool {
    std::env::var_os("SIFR_CI").is_some_and(|v| v == "1")
}

/// Says that a test cannot run because `what` is missing: prints `SKIP: ...` outside CI
/// (the caller then returns), panics in CI.
#[track_caller]
pub(crate) fn skip(what: &str) {
    if in_ci() {
        panic!(
            "{what} (testdata: {}); CI (SIFR_CI=1) requires it: set SIFR_TESTDATA to the \
             shared fixtures, or make the facility available",
            testdata().display()
        );
    }
    eprintln!("SKIP: {what}");
}

/// `found`, or (when it is None) [`skip`] with `what`: use as
/// `let Some(x) = fixture_or_skip("x.sif", load("x.sif")) else { return };`.
#[track_caller]
pub(crate) fn fixture_or_skip<T>(what: &str, found: Option<T>) -> Option<T> {
    if found.is_none() {
        skip(&format!("fixture {what} not found"));
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_fixture_or_skip_passes_what_was_found() {
        assert_eq!(fixture_or_skip("x", Some(3)), Some(3));
    }

    #[test]
    fn test_skip_fails_in_ci() {
        // Decided by the environment of this run: in CI a skip must panic, elsewhere not.
        let r = std::panic::catch_unwind(|| skip("probe"));
        assert_eq!(r.is_err(), in_ci());
    }
}
