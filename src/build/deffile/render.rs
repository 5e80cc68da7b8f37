//! Writing parsed stages back as definition-file text (Apptainer's `populateRaw`), e.g. for a
//! definition built from a URI or to show what was parsed. Parsing the output gives the same
//! header, sections and apps again (as long as no filled-in value holds `{{ }}` itself): the
//! fuzz target `deffile_parse` checks it ([`super::fuzzing`]).
//! Unlike Apptainer's writer, this one keeps the header order (after `Bootstrap`) and key
//! spelling, writes SCIF apps, and quotes paths that hold spaces.
//!
//! For the definition stored in an image, prefer [`super::Definition::text`]: the user's own
//! text with build variables filled, comments included.

use std::fmt::Write as _;

use super::Definition;
use super::content::FileCopy;
use super::script::Script;
use super::stage::{App, Stage};

/// Every stage of `definition`, in order.
pub fn render_definition(definition: &Definition) -> String {
    definition.stages.iter().map(render_stage).collect()
}

/// One stage as definition text.
pub fn render_stage(stage: &Stage) -> String {
    let mut out = String::new();
    // `Bootstrap` first: a stage starts at its `Bootstrap:` line.
    let (boot, rest): (Vec<_>, Vec<_>) = stage
        .header
        .entries()
        .iter()
        .partition(|e| e.key == "bootstrap");
    for entry in boot.into_iter().chain(rest) {
        // A newline becomes `\n\` and a continuation line, indented so that it cannot start
        // a stage (continuation lines are trimmed).
        let value = entry.value.replace('\n', "\\n\\\n    ");
        if value.ends_with('\\') {
            // Read alone, a final `\` continues the value: one more, and a blank line to end it.
            let _ = writeln!(out, "{}: {value}\\\n", entry.written);
        } else {
            let _ = writeln!(out, "{}: {value}", entry.written);
        }
    }
    if !stage.header.is_empty() {
        out.push('\n');
    }
    let s = &stage.sections;
    script(&mut out, "arguments", s.arguments.as_ref());
    script(&mut out, "pre", s.pre.as_ref());
    script(&mut out, "setup", s.setup.as_ref());
    for block in &s.files {
        match &block.from_stage {
            Some(from) => {
                let _ = writeln!(out, "%files from {from}");
            }
            None => out.push_str("%files\n"),
        }
        files(&mut out, &block.entries);
    }
    script(&mut out, "post", s.post.as_ref());
    script(&mut out, "environment", s.environment.as_ref());
    script(&mut out, "runscript", s.runscript.as_ref());
    script(&mut out, "startscript", s.startscript.as_ref());
    script(&mut out, "test", s.test.as_ref());
    labels(&mut out, "%labels", &s.labels);
    script(&mut out, "help", s.help.as_ref());
    for name in &stage.app_order {
        if let Some(app) = stage.apps.get(name) {
            render_app(&mut out, name, app);
        }
    }
    out
}

fn render_app(out: &mut String, name: &str, app: &App) {
    if *app == App::default() {
        // The app comes only from empty sections; one keeps it.
        let _ = writeln!(out, "%applabels {name}");
        return;
    }
    script(out, &format!("appinstall {name}"), app.install.as_ref());
    if !app.files.is_empty() {
        let _ = writeln!(out, "%appfiles {name}");
        files(out, &app.files);
    }
    script(out, &format!("appenv {name}"), app.env.as_ref());
    script(out, &format!("apprun {name}"), app.run.as_ref());
    labels(out, &format!("%applabels {name}"), &app.labels);
    script(out, &format!("apptest {name}"), app.test.as_ref());
    script(out, &format!("apphelp {name}"), app.help.as_ref());
    script(out, &format!("appstart {name}"), app.start.as_ref());
}

fn script(out: &mut String, section: &str, script: Option<&Script>) {
    let Some(script) = script else { return };
    out.push('%');
    out.push_str(section);
    if !script.args.is_empty() {
        out.push(' ');
        out.push_str(&script.args);
    }
    out.push('\n');
    // Every line ends in `\n`; a line that ends in `\r` gets `\r\n`, as the parser reads
    // `\r\n` as a line ending (so `\r\r\n` gives back the line and its `\r`).
    for line in script.body.split_inclusive('\n') {
        let line = line.strip_suffix('\n').unwrap_or(line);
        out.push_str(line);
        if line.ends_with('\r') {
            out.push('\r');
        }
        out.push('\n');
    }
}

fn files(out: &mut String, entries: &[FileCopy]) {
    for entry in entries {
        out.push_str("    ");
        out.push_str(&quote(&entry.src));
        if let Some(dst) = &entry.dst {
            out.push(' ');
            out.push_str(&quote(dst));
        }
        out.push('\n');
    }
}

fn labels(out: &mut String, keyword: &str, labels: &std::collections::BTreeMap<String, String>) {
    if labels.is_empty() {
        return;
    }
    out.push_str(keyword);
    out.push('\n');
    for (key, value) in labels {
        let _ = writeln!(out, "    {key} {value}");
    }
}

/// A path as a files line word: quoted when it holds spaces or quotes, or starts a comment or
/// (as the first word of a line) a section.
fn quote(path: &str) -> String {
    let plain = !path.is_empty()
        && !path.starts_with(['#', '%'])
        && !path.contains(|c: char| c.is_whitespace() || c == '"' || c == '\'');
    if plain {
        path.to_string()
    } else if path.contains('"') {
        format!("'{path}'")
    } else {
        format!("\"{path}\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::deffile::fuzzing::assert_round_trip;
    use crate::build::deffile::{ParseOptions, parse_str};
    use std::path::Path;

    fn parse(text: &str) -> Definition {
        parse_str(text, Path::new("r.def"), &ParseOptions::default()).expect("parses")
    }

    #[test]
    fn test_script_line_ending_in_cr_round_trips() {
        // As Apptainer's `bufio.ScanLines`: a line ending drops one `\r` before its `\n` (or
        // at the end of the file), so `\r\r\n` leaves `\r` in the body, and rendering keeps it.
        let def = parse("Bootstrap: scratch\n%post\necho a\r\r\n\r\r\nlast\r\r");
        let post = def.stages[0].sections.post.as_ref().expect("post");
        assert_eq!(post.body, "echo a\r\n\r\nlast\r\n");
        assert_round_trip(&def, &ParseOptions::default());
        // Windows line endings are plain line endings, in the body and in what is rendered.
        let def = parse("Bootstrap: scratch\r\n%post\r\necho hi\r\n");
        let post = def.stages[0].sections.post.as_ref().expect("post");
        assert_eq!(post.body, "echo hi\n");
        assert_eq!(
            render_definition(&def),
            "Bootstrap: scratch\n\n%post\necho hi\n"
        );
        assert_round_trip(&def, &ParseOptions::default());
    }

    fn round_trips(text: &str) {
        assert_round_trip(&parse(text), &ParseOptions::default());
    }

    #[test]
    fn test_header_value_ending_in_space_round_trips() {
        // White space kept by a continuation line at the end of the value.
        round_trips("Bootstrap: scratch\nFrom: v \\\n\n%post\n");
        round_trips("Bootstrap: scratch\nFrom: v \\\n \\\n# c\n");
    }

    #[test]
    fn test_header_value_ending_in_backslash_round_trips() {
        round_trips("Bootstrap: scratch\nFrom: a\\\\\n\nInclude: b\n");
    }

    #[test]
    fn test_header_value_lines_round_trip() {
        // A continued line that would start a stage at the start of a line.
        round_trips("Bootstrap: scratch\nInclude: a\\n\\\n  Bootstrap: x\n");
        // Newlines in values, at the end too.
        round_trips("Bootstrap: scratch\nSetopt: a\\n\\\n\\n\\\nb\\n\\\n\nFrom: c\n");
    }

    #[test]
    fn test_quote() {
        assert_eq!(quote("/a/b"), "/a/b");
        assert_eq!(quote("a b"), "\"a b\"");
        assert_eq!(quote("#x"), "\"#x\"");
        assert_eq!(quote("%post"), "\"%post\"");
        assert_eq!(quote("say \"hi\""), "'say \"hi\"'");
        assert_eq!(quote("it's"), "\"it's\"");
    }
}
