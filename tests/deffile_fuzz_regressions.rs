//! Every input saved in `tests/fuzz-regressions/deffile_parse/` (crashes the fuzzer once
//! found, and hand-made seeds) goes through the same code as the fuzz target `deffile_parse`
//! (`sifr::build::deffile::fuzzing`: parse, render, parse again to the same stages) without a
//! panic, and the hand-made seeds do what their names say.

use std::path::Path;

use sifr::build::deffile::fuzzing::{Outcome, parse_and_round_trip, round_trips};
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
    // Found by the fuzzer, now round trips (the property no longer leaves such text out):
    // a script line ending in `\r\r\n` kept its `\r` in the body but lost it when rendered
    // and parsed again.
    let crash = case("crash-62914ad3de90d2b017f8a40e89b5aac649e0b117");
    let text = String::from_utf8_lossy(crash);
    assert!(text.contains("\r\r\n") && round_trips(&text));
    assert_eq!(parse_and_round_trip(crash), Outcome::RoundTrip);
    let text = String::from_utf8_lossy(case("script-cr-cr-lf.def"));
    let def = parse_str(&text, Path::new("c.def"), &ParseOptions::default()).expect("parses");
    let post = def.stages[0].sections.post.as_ref().expect("post");
    assert_eq!(post.body, "echo a\r\nlast\r\n");
    // Found by the fuzzer: a header value ending in white space (`Key: v \` continued by a
    // blank line) was trimmed only when the rendered text was parsed again; now the first
    // parse trims it. Its neighbours: a value ending in `\`, and a continued value line that
    // would start a stage when written at the start of a line.
    let crash = case("crash-778498621f8be5306927149ec32a54a492dffb26");
    assert_eq!(parse_and_round_trip(crash), Outcome::RoundTrip);
    for (name, key, value) in [
        ("header-value-continued-space.def", "from", "v"),
        ("header-value-ends-in-backslash.def", "from", "a\\"),
        (
            "header-value-continued-bootstrap.def",
            "include",
            "a\nBootstrap: x",
        ),
    ] {
        let text = String::from_utf8_lossy(case(name));
        let def = parse_str(&text, Path::new("c.def"), &ParseOptions::default()).expect(name);
        assert_eq!(def.stages.len(), 1, "{name}");
        assert_eq!(def.stages[0].header.get(key), Some(value), "{name}");
        assert_eq!(
            parse_and_round_trip(case(name)),
            Outcome::RoundTrip,
            "{name}"
        );
    }
}
