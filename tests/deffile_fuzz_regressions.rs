//! Every input saved in `tests/fuzz-regressions/deffile_parse/` (crashes the fuzzer once
//! found, and hand-made seeds) goes through the same code as the fuzz target `deffile_parse`
//! (`sifr::build::deffile::fuzzing`: parse, render, parse again to the same stages) without a
//! panic, and the hand-made seeds do what their names say.

use std::path::Path;

use sifr::build::deffile::fuzzing::{
    Outcome, header_value_ends_in_space, parse_and_round_trip, round_trips,
};
use sifr::build::deffile::{ParseOptions, parse_str};

/// (file name, bytes), embedded by build.rs.
const CASES: &[(&str, &[u8])] = include!(concat!(
    env!("OUT_DIR"),
    "/fuzz_regressions_deffile_parse.rs"
));

fn case(name: &str) -> &'static [u8] {
    CASES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, d)| *d)
        .unwrap_or_else(|| panic!("seed {name} missing from tests/fuzz-regressions/deffile_parse"))
}

#[test]
fn test_deffile_fuzz_regressions_do_not_panic() {
    assert!(
        CASES.len() >= 5,
        "expected the seeds, found {}",
        CASES.len()
    );
    for (name, data) in CASES {
        let r = std::panic::catch_unwind(|| parse_and_round_trip(data));
        assert!(r.is_ok(), "regression input {name} panicked");
    }
}

#[test]
fn test_deffile_seeds_are_what_they_say() {
    for ok in ["two-stages.def", "bom-crlf.def"] {
        assert_eq!(parse_and_round_trip(case(ok)), Outcome::RoundTrip, "{ok}");
    }
    for bad in [
        "empty.def",
        "section-before-bootstrap.def",
        "unterminated-variable.def",
        "files-from-later-stage.def",
    ] {
        assert_eq!(parse_and_round_trip(case(bad)), Outcome::Refused, "{bad}");
    }
    // Found by the fuzzer: a script line ending in `\r\r\n` loses its `\r` when rendered and
    // parsed again; it parses, and the property leaves such text out (known limit).
    let crash = case("crash-62914ad3de90d2b017f8a40e89b5aac649e0b117");
    assert!(String::from_utf8_lossy(crash).contains("\r\r\n"));
    assert!(!round_trips(&String::from_utf8_lossy(crash)));
    assert_eq!(parse_and_round_trip(crash), Outcome::RoundTrip);
    // Found by the fuzzer: a header value ending in white space (`Key: v \` continued by a
    // blank line) is trimmed when the rendered text is parsed again (known limit).
    let crash = case("crash-778498621f8be5306927149ec32a54a492dffb26");
    let text = String::from_utf8_lossy(crash);
    let def = parse_str(&text, Path::new("c.def"), &ParseOptions::default()).expect("parses");
    assert!(header_value_ends_in_space(&def));
    assert_eq!(parse_and_round_trip(crash), Outcome::RoundTrip);
}
