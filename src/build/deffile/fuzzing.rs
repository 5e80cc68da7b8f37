//! The fuzzing entry point of the definition-file parser, shared by the `fuzz/` target
//! `deffile_parse` and the regression test: parse arbitrary text (as a build and as an
//! `--update`), and when it parses, render it with [`super::render_definition`] and parse that
//! again: the module's property is that rendered text always parses back to the same stages
//! (header entries, agent, name, apps and sections; line numbers aside), except for text
//! [`round_trips`] leaves out (build variables). Panics only when that property or the
//! one-line error rule breaks.

use std::path::Path;

use super::{Definition, ParseOptions, Stage, parse_str, render_definition};

/// What one input did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Parsed (in at least one mode) and rendered back to the same stages.
    RoundTrip,
    /// Refused in both modes, each with a one-line error.
    Refused,
}

/// Parses `data` (invalid UTF-8 replaced, as the file reader would refuse it) and checks the
/// round trip of whatever parses.
pub fn parse_and_round_trip(data: &[u8]) -> Outcome {
    let text = String::from_utf8_lossy(data);
    let mut outcome = Outcome::Refused;
    for update in [false, true] {
        let options = ParseOptions {
            update,
            ..ParseOptions::default()
        };
        match parse_str(&text, Path::new("fuzz.def"), &options) {
            Ok(def) => {
                outcome = Outcome::RoundTrip;
                if round_trips(&text) {
                    assert_round_trip(&def, &options);
                }
            }
            Err(e) => {
                let msg = e.to_string();
                assert!(
                    !msg.contains('\n'),
                    "a parse error of several lines: {msg:?}"
                );
            }
        }
    }
    outcome
}

/// Whether the property holds for `text` by design: not when it holds `{{` (a filled-in value
/// holding `{{ }}` is filled again by the re-parse). Two exceptions this fuzzer found are
/// fixed, their inputs kept in `tests/fuzz-regressions/deffile_parse/`: a script line ending
/// in `\r\r\n` (`crash-62914ad3...`; the body keeps one `\r`, as in Apptainer, and the renderer
/// writes it back as `\r\r\n`), and a header value ending in white space kept by a `\`
/// continuation line (`crash-77849862...`; the parser trims values once joined).
pub fn round_trips(text: &str) -> bool {
    !text.contains("{{")
}

/// Parsing the rendered definition gives the same stages again.
pub fn assert_round_trip(def: &Definition, options: &ParseOptions) {
    let rendered = render_definition(def);
    let again = parse_str(&rendered, Path::new("rendered.def"), options).unwrap_or_else(|e| {
        panic!(
            "rendered text does not parse: {e}\nrendered: {rendered:?}\nfrom: {:?}",
            def.text
        )
    });
    assert_eq!(def.stages.len(), again.stages.len(), "{rendered:?}");
    for (a, b) in def.stages.iter().zip(&again.stages) {
        assert_eq!(entries(a), entries(b), "header of {rendered:?}");
        assert_eq!(a.agent, b.agent, "{rendered:?}");
        assert_eq!(a.name, b.name, "{rendered:?}");
        assert_eq!(a.app_order, b.app_order, "{rendered:?}");
        assert_eq!(
            without_lines(a),
            without_lines(b),
            "sections of {rendered:?} from {:?}",
            def.text
        );
    }
}

/// A stage's header entries, sorted (rendering puts `Bootstrap` first).
fn entries(s: &Stage) -> Vec<(String, String, String)> {
    let mut e: Vec<_> = s
        .header
        .entries()
        .iter()
        .map(|e| (e.key.clone(), e.written.clone(), e.value.clone()))
        .collect();
    e.sort();
    e
}

/// A stage's sections and apps with line numbers zeroed.
fn without_lines(stage: &Stage) -> String {
    let mut s = stage.clone();
    let sec = &mut s.sections;
    for x in [
        &mut sec.arguments,
        &mut sec.pre,
        &mut sec.setup,
        &mut sec.post,
        &mut sec.environment,
        &mut sec.runscript,
        &mut sec.startscript,
        &mut sec.test,
        &mut sec.help,
    ]
    .into_iter()
    .flatten()
    {
        x.line = 0;
    }
    for block in &mut sec.files {
        block.line = 0;
        block.entries.iter_mut().for_each(|e| e.line = 0);
    }
    for app in s.apps.values_mut() {
        for x in [
            &mut app.install,
            &mut app.env,
            &mut app.run,
            &mut app.test,
            &mut app.help,
            &mut app.start,
        ]
        .into_iter()
        .flatten()
        {
            x.line = 0;
        }
        app.files.iter_mut().for_each(|e| e.line = 0);
    }
    format!("{:?}{:?}", s.sections, s.apps)
}
