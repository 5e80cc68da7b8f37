//! Build variables: `{{ NAME }}` in a definition file, filled from `--build-arg NAME=VALUE`
//! (repeatable), `--build-arg-file FILE` (`NAME=VALUE` lines) and the `%arguments` section of
//! the stage, in that order of precedence (Apptainer's `internal/pkg/build/args`).
//!
//! Apptainer's rules, kept: a variable is `{{`, optional spaces, letters/digits/`_`, optional
//! spaces, `}}`; anything else between braces (`{{ .Id }}`) is left alone. A variable is not
//! filled when the text before it on its line holds a `#` followed by a character other than
//! `!` (a comment). A default value may itself name other variables, filled once from the
//! build args or the defaults (unknown ones stay as written). A build arg given as
//! `--build-arg` overrides the same name from the file.
//!
//! Stricter than Apptainer: a bad line in a build-arg file or in `%arguments` is an error
//! (Apptainer warns and skips it), and so is `{{ NAME` without its closing `}}`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::error::Problem;
use super::{Ctx, DefError, Line, read_capped};

/// The largest build-arg file read.
pub const MAX_BUILD_ARG_FILE_BYTES: u64 = 1024 * 1024;

/// Build variables given on the command line.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BuildArgs {
    values: BTreeMap<String, String>,
}

impl BuildArgs {
    pub fn new() -> BuildArgs {
        BuildArgs::default()
    }

    /// The build args of `--build-arg-file FILE` (read first) and `--build-arg NAME=VALUE`
    /// (later ones win).
    pub fn from_cli(args: &[String], file: Option<&Path>) -> Result<BuildArgs, DefError> {
        let mut build_args = match file {
            Some(path) => {
                let text = read_capped(path, MAX_BUILD_ARG_FILE_BYTES)?;
                BuildArgs::parse_file_text(&text, path)?
            }
            None => BuildArgs::new(),
        };
        for arg in args {
            let (name, value) = arg
                .split_once('=')
                .map(|(n, v)| (n.trim(), v.trim()))
                .filter(|(n, _)| is_variable_name(n))
                .ok_or_else(|| DefError::BuildArg { arg: arg.clone() })?;
            build_args
                .values
                .insert(name.to_string(), value.to_string());
        }
        Ok(build_args)
    }

    /// The `NAME=VALUE` lines of a build-arg file; blank lines and lines starting with `#` are
    /// skipped. `path` names the file in errors.
    pub fn parse_file_text(text: &str, path: &Path) -> Result<BuildArgs, DefError> {
        let ctx = Ctx { path };
        let mut values = BTreeMap::new();
        for (i, line) in text.lines().enumerate() {
            let text = line.trim();
            if text.is_empty() || text.starts_with('#') {
                continue;
            }
            let (name, value) = parse_assignment(text)
                .ok_or_else(|| ctx.at(i + 1, Problem::BuildArgLine { text: text.into() }))?;
            if !is_variable_name(name) {
                return Err(ctx.at(i + 1, Problem::BadVariableName { name: name.into() }));
            }
            values.insert(name.to_string(), value.to_string());
        }
        Ok(BuildArgs { values })
    }

    /// Sets one build arg (as `--build-arg NAME=VALUE` does).
    pub fn insert(&mut self, name: &str, value: &str) -> Result<(), DefError> {
        if !is_variable_name(name) {
            return Err(DefError::BuildArg {
                arg: format!("{name}={value}"),
            });
        }
        self.values.insert(name.to_string(), value.to_string());
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// Every name, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.values.keys().map(String::as_str)
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

/// `NAME=VALUE`, both trimmed; `None` without `=` or with an empty name.
fn parse_assignment(text: &str) -> Option<(&str, &str)> {
    let (name, value) = text.split_once('=')?;
    let name = name.trim();
    (!name.is_empty()).then_some((name, value.trim()))
}

/// Whether `name` can appear in `{{ }}` (Go's `\w+`: ASCII letters, digits, `_`).
pub(crate) fn is_variable_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(is_word_byte)
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// The default values in the `%arguments` body lines of one stage.
pub(crate) fn parse_defaults(
    lines: &[&Line],
    ctx: &Ctx,
) -> Result<BTreeMap<String, String>, DefError> {
    let mut defaults = BTreeMap::new();
    for line in lines {
        let text = line.text.trim();
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        let (name, value) = parse_assignment(text)
            .ok_or_else(|| ctx.at(line.no, Problem::BadArgument { text: text.into() }))?;
        if !is_variable_name(name) {
            return Err(ctx.at(line.no, Problem::BadVariableName { name: name.into() }));
        }
        defaults.insert(name.to_string(), value.to_string());
    }
    Ok(defaults)
}

/// A `{{ NAME }}` found in a line.
struct Variable<'t> {
    start: usize,
    end: usize,
    name: &'t str,
}

/// What follows a `{{` at byte `start` of `text`.
enum Found<'t> {
    Variable(Variable<'t>),
    /// `{{ NAME` at the end of the line or before a single `}`.
    Unterminated(&'t str),
    /// Something else between braces.
    Other,
}

fn look_at(text: &str, start: usize) -> Found<'_> {
    let bytes = text.as_bytes();
    let skip_space = |mut i: usize| {
        while i < bytes.len() && matches!(bytes[i], b' ' | b'\t' | b'\n' | b'\r' | b'\x0c') {
            i += 1;
        }
        i
    };
    let name_start = skip_space(start + 2);
    let mut name_end = name_start;
    while name_end < bytes.len() && is_word_byte(bytes[name_end]) {
        name_end += 1;
    }
    if name_end == name_start {
        return Found::Other;
    }
    let name = &text[name_start..name_end];
    let close = skip_space(name_end);
    let rest = &bytes[close..];
    if rest.starts_with(b"}}") {
        Found::Variable(Variable {
            start,
            end: close + 2,
            name,
        })
    } else if rest.is_empty() || rest[0] == b'}' {
        Found::Unterminated(name)
    } else {
        Found::Other
    }
}

/// Apptainer's comment test on the text before a variable: a `#` followed by anything but `!`.
fn is_commented(prefix: &str) -> bool {
    prefix
        .as_bytes()
        .windows(2)
        .any(|w| w[0] == b'#' && w[1] != b'!')
}

/// Fills the variables of one stage's lines.
pub(crate) struct Templater<'a> {
    pub args: &'a BuildArgs,
    pub defaults: &'a BTreeMap<String, String>,
    /// The build variables filled so far.
    pub used: &'a mut BTreeSet<String>,
    /// Bytes the filled text may still grow by (a value used many times must not exhaust
    /// memory); filling past it fails.
    pub budget: &'a mut usize,
}

/// Filling used up the budget.
struct OverBudget;

/// Appends `piece` to `out`, charging the growth to `budget`.
fn push(out: &mut String, piece: &str, budget: &mut usize) -> Result<(), OverBudget> {
    *budget = budget.checked_sub(piece.len()).ok_or(OverBudget)?;
    out.push_str(piece);
    Ok(())
}

impl Templater<'_> {
    /// The text of `line` with its variables filled.
    pub fn fill(&mut self, line: &Line, ctx: &Ctx) -> Result<String, DefError> {
        let text = line.text.as_str();
        let mut out = String::new();
        // Bytes of `text` copied to `out`; where the comment test starts.
        let mut copied = 0;
        let mut search = 0;
        while let Some(offset) = text[search..].find("{{") {
            let start = search + offset;
            match look_at(text, start) {
                Found::Other => search = start + 1,
                Found::Unterminated(name) => {
                    if is_commented(&text[copied..start]) {
                        search = start + 1;
                        continue;
                    }
                    return Err(ctx.at(
                        line.no,
                        Problem::UnterminatedTemplate {
                            name: name.to_string(),
                            text: text.trim().to_string(),
                        },
                    ));
                }
                Found::Variable(var) => {
                    search = var.end;
                    if is_commented(&text[copied..var.start]) {
                        continue;
                    }
                    let value = self
                        .value_of(var.name)
                        .map_err(|OverBudget| over_budget(ctx))?
                        .ok_or_else(|| {
                            ctx.at(
                                line.no,
                                Problem::UndefinedVariable {
                                    name: var.name.to_string(),
                                },
                            )
                        })?;
                    out.push_str(&text[copied..var.start]);
                    push(&mut out, &value, self.budget).map_err(|OverBudget| over_budget(ctx))?;
                    copied = var.end;
                    self.used.insert(var.name.to_string());
                }
            }
        }
        out.push_str(&text[copied..]);
        Ok(out)
    }

    /// The value of `name`, with the variables inside a value filled once; `None` when it is
    /// not defined. Only the growth of the value as used is charged to the budget.
    fn value_of(&self, name: &str) -> Result<Option<String>, OverBudget> {
        let Some(value) = self
            .args
            .get(name)
            .or(self.defaults.get(name).map(String::as_str))
        else {
            return Ok(None);
        };
        let mut budget: usize = *self.budget;
        let mut out = String::new();
        let mut copied = 0;
        let mut search = 0;
        while let Some(offset) = value[search..].find("{{") {
            let start = search + offset;
            search = start + 1;
            if let Found::Variable(var) = look_at(value, start) {
                search = var.end;
                let inner = self
                    .args
                    .get(var.name)
                    .or(self.defaults.get(var.name).map(String::as_str));
                if let Some(inner) = inner {
                    out.push_str(&value[copied..var.start]);
                    push(&mut out, inner, &mut budget)?;
                    copied = var.end;
                }
            }
        }
        out.push_str(&value[copied..]);
        Ok(Some(out))
    }
}

fn over_budget(ctx: &Ctx) -> DefError {
    DefError::In {
        path: ctx.path.to_path_buf(),
        problem: Problem::TooLargeAfterTemplating {
            limit: super::MAX_FILLED_BYTES,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Ctx<'static> {
        Ctx {
            path: Path::new("t.def"),
        }
    }

    fn fill_with(
        text: &str,
        args: &BuildArgs,
        defaults: &[(&str, &str)],
    ) -> (Result<String, String>, Vec<String>) {
        let defaults: BTreeMap<String, String> = defaults
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut used = BTreeSet::new();
        let mut budget = 1000;
        let mut t = Templater {
            args,
            defaults: &defaults,
            used: &mut used,
            budget: &mut budget,
        };
        let line = Line {
            no: 4,
            text: text.to_string(),
        };
        let result = t.fill(&line, &ctx()).map_err(|e| e.to_string());
        (result, used.into_iter().collect())
    }

    fn args(pairs: &[(&str, &str)]) -> BuildArgs {
        let mut a = BuildArgs::new();
        for (k, v) in pairs {
            a.insert(k, v).expect("valid name");
        }
        a
    }

    #[test]
    fn test_fill_precedence_and_spacing() {
        let a = args(&[("version", "2.0")]);
        let (out, used) = fill_with(
            "From: alpine:{{version}} {{  os }}-{{ version }}",
            &a,
            &[("version", "1.0"), ("os", "linux")],
        );
        assert_eq!(out.as_deref(), Ok("From: alpine:2.0 linux-2.0"));
        assert_eq!(used, ["os", "version"]);
    }

    #[test]
    fn test_not_variables_left_alone() {
        let a = args(&[]);
        for text in [
            "docker inspect --format '{{.Id}}'",
            "{{ a b }}",
            "{ {x} }",
            "echo {{}}",
            "{{ - }}",
        ] {
            let (out, used) = fill_with(text, &a, &[]);
            assert_eq!(out.as_deref(), Ok(text));
            assert!(used.is_empty());
        }
        // Extra braces around a variable stay.
        let (out, _) = fill_with("{{{ x }}}", &args(&[("x", "1")]), &[]);
        assert_eq!(out.as_deref(), Ok("{1}"));
    }

    #[test]
    fn test_comments_are_not_filled() {
        let a = args(&[]);
        for text in [
            "# uses {{ undefined }}",
            "    # {{ undefined }}",
            "echo hi # {{ undefined }}",
            "# {{ unterminated",
        ] {
            let (out, _) = fill_with(text, &a, &[]);
            assert_eq!(out.as_deref(), Ok(text), "{text}");
        }
        // `#!` is not a comment, and neither is `#` right before the braces (Apptainer's rule).
        let a = args(&[("x", "1")]);
        assert_eq!(
            fill_with("#!/bin/{{ x }}", &a, &[]).0.as_deref(),
            Ok("#!/bin/1")
        );
        assert_eq!(
            fill_with("issue #{{ x }}", &a, &[]).0.as_deref(),
            Ok("issue #1")
        );
    }

    #[test]
    fn test_nested_defaults() {
        let a = args(&[("base", "debian")]);
        let (out, used) = fill_with(
            "From: {{ image }}",
            &a,
            &[("image", "{{ base }}:{{tag}}-{{ nope }}"), ("tag", "12")],
        );
        assert_eq!(out.as_deref(), Ok("From: debian:12-{{ nope }}"));
        assert_eq!(used, ["image"]);
    }

    #[test]
    fn test_undefined_and_unterminated() {
        let a = args(&[]);
        assert_eq!(
            fill_with("From: {{ image }}", &a, &[]).0,
            Err("t.def:4: build variable `image` is not defined: pass --build-arg image=VALUE or add `image=VALUE` to this stage's %arguments section".to_string())
        );
        assert_eq!(
            fill_with("From: {{ image", &a, &[]).0,
            Err(
                "t.def:4: unterminated `{{ image` in `From: {{ image`: close it with `}}`"
                    .to_string()
            )
        );
        assert!(fill_with("x {{ image } y", &a, &[]).0.is_err());
    }

    #[test]
    fn test_filling_is_bounded() {
        // The test budget is 1000 bytes.
        let a = args(&[("x", &"y".repeat(400))]);
        assert!(fill_with("{{x}}{{x}}", &a, &[]).0.is_ok());
        assert_eq!(
            fill_with("{{x}}{{x}}{{x}}", &a, &[]).0,
            Err("t.def: filling in the build variables made the definition larger than 67108864 bytes".to_string())
        );
        // Nested values are charged too.
        let (out, _) = fill_with("{{ big }}", &a, &[("big", "{{x}}{{x}}{{x}}")]);
        assert!(out.is_err());
    }

    #[test]
    fn test_values_with_newlines_and_multibyte() {
        let a = args(&[("x", "a\nb")]);
        assert_eq!(fill_with("é{{x}}é", &a, &[]).0.as_deref(), Ok("éa\nbé"));
    }

    #[test]
    fn test_build_arg_file_and_cli() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("args");
        std::fs::write(&file, "# comment\n\nA = 1\nB=two words\r\nC=\n").expect("write");
        let a = BuildArgs::from_cli(&["B=cli".to_string(), "D=x=y".to_string()], Some(&file))
            .expect("ok");
        let got: Vec<_> = a.names().map(|n| (n, a.get(n).unwrap_or("?"))).collect();
        assert_eq!(got, [("A", "1"), ("B", "cli"), ("C", ""), ("D", "x=y")]);

        std::fs::write(&file, "A=1\nnot an assignment\n").expect("write");
        let err = BuildArgs::from_cli(&[], Some(&file)).expect_err("bad line");
        assert_eq!(
            err.to_string(),
            format!(
                "{}:2: `not an assignment` is not `NAME=VALUE`",
                file.display()
            )
        );
        std::fs::write(&file, "my-var=1\n").expect("write");
        let err = BuildArgs::from_cli(&[], Some(&file)).expect_err("bad name");
        assert!(
            err.to_string().ends_with(
                ":1: `my-var` cannot be a build variable: use only letters, digits and _"
            )
        );

        let err = BuildArgs::from_cli(&["novalue".to_string()], None).expect_err("bad");
        assert_eq!(
            err.to_string(),
            "--build-arg \"novalue\": expected NAME=VALUE, where NAME holds only letters, digits and _"
        );
        assert!(BuildArgs::from_cli(&["=x".to_string()], None).is_err());
        let missing = dir.path().join("missing");
        let err = BuildArgs::from_cli(&[], Some(&missing)).expect_err("missing");
        assert!(
            err.to_string()
                .starts_with(&format!("cannot read {}:", missing.display()))
        );
    }

    #[test]
    fn test_defaults_parsing() {
        let lines: Vec<Line> = ["", "# c", " a = 1 ", "b=", "c=x=y"]
            .iter()
            .enumerate()
            .map(|(i, t)| Line {
                no: i + 1,
                text: t.to_string(),
            })
            .collect();
        let refs: Vec<&Line> = lines.iter().collect();
        let d = parse_defaults(&refs, &ctx()).expect("ok");
        let got: Vec<_> = d.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(got, [("a", "1"), ("b", ""), ("c", "x=y")]);

        let bad = Line {
            no: 9,
            text: "version 1".into(),
        };
        let err = parse_defaults(&[&bad], &ctx()).expect_err("bad");
        assert_eq!(
            err.to_string(),
            "t.def:9: `version 1` in %arguments is not `NAME=VALUE`"
        );
    }
}
