//! Writing parsed stages back as definition-file text (Apptainer's `populateRaw`), e.g. for a
//! definition built from a URI or to show what was parsed. Parsing the output gives the same
//! header, sections and apps again (as long as no filled-in value holds `{{ }}` itself).
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
        let value = entry.value.replace('\n', "\\n\\\n");
        let _ = writeln!(out, "{}: {value}", entry.written);
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
    out.push_str(&script.body);
    if !script.body.is_empty() && !script.body.ends_with('\n') {
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
