//! Definition files (`sifr build X.sif X.def`): parsing and validation into typed values,
//! with Apptainer's rules (`pkg/build/types/parser/deffile.go`, `internal/pkg/build/args`).
//! Nothing here runs a section or fetches a base image.
//!
//! # The format
//!
//! A file holds one or more stages. A stage starts at a line beginning `Bootstrap:` (any case,
//! at the start of the line); text before the first such line that is not blank or a comment
//! belongs to no stage and is an error, unless the file has no `Bootstrap:` at all (a file of
//! sections only, valid with `--update`). In each stage:
//!
//! 1. build variables `{{ NAME }}` are filled from the build args and the stage's
//!    `%arguments` defaults ([`template`]);
//! 2. the lines before the first section are the header ([`header`]);
//! 3. each line whose first word starts with `%` starts a section ([`section`]) that runs to
//!    the next one; script bodies are kept verbatim ([`script`]), `%labels` and `%files` are
//!    parsed ([`content`]), `%app* NAME` sections make SCIF apps ([`stage`]).
//!
//! Then, across stages: stage names are unique and `%files from NAME` names an earlier stage.
//! Line endings: `\r\n` reads as `\n` (the stored text keeps the file's endings); a UTF-8
//! byte order mark is ignored.
//!
//! # What goes into the image
//!
//! [`Definition::text`] is the whole file with build variables filled: what Apptainer stores
//! as `/.singularity.d/Singularity` and as the SIF definition object. [`render::render_stage`]
//! writes a stage back as definition text from the parsed values.
//!
//! Every error is one [`DefError`] naming the file, the line and the fix; where this parser is
//! stricter than Apptainer the module docs of the part concerned say so.

pub mod content;
pub mod error;
pub mod fuzzing;
pub mod header;
pub mod render;
pub mod script;
pub mod section;
pub mod select;
pub mod stage;
pub mod template;

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

pub use content::FileCopy;
pub use error::{DefError, FilesLineError, Problem};
pub use header::{Agent, Header, HeaderEntry};
pub use render::{render_definition, render_stage};
pub use script::Script;
pub use section::{AppPart, Section};
pub use select::SectionFilter;
pub use stage::{App, FilesBlock, Sections, Stage};
pub use template::BuildArgs;

use section::section_line;

/// The largest definition file read.
pub const MAX_DEFINITION_BYTES: u64 = 8 * 1024 * 1024;

/// The largest definition after build variables are filled in.
pub const MAX_FILLED_BYTES: usize = 64 * 1024 * 1024;

/// How to parse.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ParseOptions {
    /// `--build-arg` / `--build-arg-file` values.
    pub build_args: BuildArgs,
    /// `-u/--update`: the sections run over an existing sandbox and the header is skipped, so
    /// a single-stage definition may have no `Bootstrap:`.
    pub update: bool,
}

/// A parsed definition file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Definition {
    /// The file it was read from (or the name given to [`parse_str`]).
    pub path: PathBuf,
    /// The stages, in file order; never empty. The last one is the image being built.
    pub stages: Vec<Stage>,
    /// The whole file with build variables filled in, line endings as in the file.
    pub text: String,
    /// Build args no `{{ }}` used, sorted. Apptainer fails the build over them unless
    /// `--warn-unused-build-args`; see [`Definition::check_unused_build_args`].
    pub unused_build_args: Vec<String>,
}

impl Definition {
    /// The stage named `name`.
    pub fn stage(&self, name: &str) -> Option<&Stage> {
        self.stages.iter().find(|s| s.name.as_deref() == Some(name))
    }

    /// The stage that becomes the image: the last one.
    pub fn final_stage(&self) -> Option<&Stage> {
        self.stages.last()
    }

    /// An error when some build args went unused (Apptainer's default; the CLI warns instead
    /// with `--warn-unused-build-args`).
    pub fn check_unused_build_args(&self) -> Result<(), DefError> {
        if self.unused_build_args.is_empty() {
            Ok(())
        } else {
            Err(DefError::UnusedBuildArgs {
                names: self.unused_build_args.clone(),
            })
        }
    }
}

/// One line of the file: its 1-based number and its text without the line ending. A build
/// variable whose value holds newlines makes several lines with the same number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Line {
    pub no: usize,
    pub text: String,
}

/// Where errors point: the file being parsed.
pub(crate) struct Ctx<'a> {
    pub path: &'a Path,
}

impl Ctx<'_> {
    pub fn at(&self, line: usize, problem: Problem) -> DefError {
        DefError::At {
            path: self.path.to_path_buf(),
            line,
            problem,
        }
    }
}

/// Reads and parses the definition file at `path`.
pub fn parse_file(path: &Path, options: &ParseOptions) -> Result<Definition, DefError> {
    let text = read_capped(path, MAX_DEFINITION_BYTES)?;
    parse_str(&text, path, options)
}

/// Parses definition text; `path` names it in errors and in [`Definition::path`].
pub fn parse_str(text: &str, path: &Path, options: &ParseOptions) -> Result<Definition, DefError> {
    let ctx = Ctx { path };
    let (lines, ends) = split_lines(text);
    let mut used = BTreeSet::new();
    let mut budget = MAX_FILLED_BYTES.saturating_sub(text.len());
    let mut stages = Vec::new();
    let mut filled_text = String::new();
    // A stage-less first chunk, and what its first line holds.
    let mut before_first: Option<(Stage, String, usize)> = None;
    for (index, chunk) in split_stages(&lines).into_iter().enumerate() {
        let fill = Fill {
            args: &options.build_args,
            used: &mut used,
            budget: &mut budget,
        };
        let (filled, raw) = fill_stage(chunk, &ends, fill, &ctx)?;
        filled_text.push_str(&raw);
        let starts_stage = chunk.first().is_some_and(|l| is_stage_start(&l.text));
        if !starts_stage && filled.iter().all(|l| is_blank_or_comment(&l.text)) {
            continue;
        }
        let stage = stage::parse_stage(&filled, raw, &ctx)?;
        if index == 0 && !starts_stage {
            let (what, line) = first_content(&filled);
            before_first = Some((stage, what, line));
        } else {
            stages.push(stage);
        }
    }
    if let Some((first, what, line)) = before_first {
        if !stages.is_empty() && first.agent.is_none() {
            return Err(ctx.at(line, Problem::BeforeFirstBootstrap { what }));
        }
        stages.insert(0, first);
    }
    check_stages(&stages, options, &ctx)?;
    let unused_build_args = options
        .build_args
        .names()
        .filter(|n| !used.contains(*n))
        .map(str::to_string)
        .collect();
    Ok(Definition {
        path: path.to_path_buf(),
        stages,
        text: filled_text,
        unused_build_args,
    })
}

/// Reads a text file of at most `limit` bytes.
pub(crate) fn read_capped(path: &Path, limit: u64) -> Result<String, DefError> {
    let read_err = |cause| DefError::Read {
        path: path.to_path_buf(),
        cause,
    };
    let file = File::open(path).map_err(read_err)?;
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > limit {
        return Err(DefError::TooLarge {
            path: path.to_path_buf(),
            limit,
        });
    }
    String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        DefError::At {
            path: path.to_path_buf(),
            line: valid.iter().filter(|&&b| b == b'\n').count() + 1,
            problem: Problem::NotUtf8,
        }
    })
}

/// The lines of `text`, numbered from 1, without `\n` or `\r\n`, and each line's ending
/// (`"\n"`, `"\r\n"`, or what ends the last line), so the text can be put back together.
fn split_lines(text: &str) -> (Vec<Line>, Vec<&'static str>) {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if text.is_empty() {
        return (Vec::new(), Vec::new());
    }
    let (body, last_end) = match text.strip_suffix('\n') {
        Some(body) => (body, "\n"),
        None => (text, ""),
    };
    let pieces: Vec<&str> = body.split('\n').collect();
    let count = pieces.len();
    let mut lines = Vec::with_capacity(count);
    let mut ends = Vec::with_capacity(count);
    for (i, piece) in pieces.into_iter().enumerate() {
        let newline = i + 1 < count || !last_end.is_empty();
        let (line, end) = match (piece.strip_suffix('\r'), newline) {
            (Some(l), true) => (l, "\r\n"),
            (Some(l), false) => (l, "\r"),
            (None, true) => (piece, "\n"),
            (None, false) => (piece, ""),
        };
        lines.push(Line {
            no: i + 1,
            text: line.to_string(),
        });
        ends.push(end);
    }
    (lines, ends)
}

/// Whether a line starts a stage: `Bootstrap:` at its very start, any case (Apptainer's
/// `(?mi)^bootstrap:`).
fn is_stage_start(text: &str) -> bool {
    text.get(..10)
        .is_some_and(|p| p.eq_ignore_ascii_case("bootstrap:"))
}

pub(crate) fn is_blank_or_comment(text: &str) -> bool {
    let t = text.trim();
    t.is_empty() || t.starts_with('#')
}

/// The lines before the first stage start, then each stage's lines.
fn split_stages(lines: &[Line]) -> Vec<&[Line]> {
    let mut chunks = Vec::new();
    let mut start = 0;
    for (i, line) in lines.iter().enumerate() {
        if i > 0 && is_stage_start(&line.text) {
            chunks.push(&lines[start..i]);
            start = i;
        }
    }
    if start < lines.len() {
        chunks.push(&lines[start..]);
    }
    chunks
}

/// What filling a stage shares with the other stages.
struct Fill<'a> {
    args: &'a BuildArgs,
    used: &'a mut BTreeSet<String>,
    budget: &'a mut usize,
}

/// The lines of one stage with its build variables filled, and its text (original line
/// endings kept). `ends` holds the ending of every line of the file.
fn fill_stage(
    chunk: &[Line],
    ends: &[&str],
    fill: Fill,
    ctx: &Ctx,
) -> Result<(Vec<Line>, String), DefError> {
    let mut arguments = Vec::new();
    let mut in_arguments = false;
    for line in chunk {
        if let Some(s) = section_line(&line.text) {
            in_arguments = s.name == "arguments";
        } else if in_arguments {
            arguments.push(line);
        }
    }
    let defaults = template::parse_defaults(&arguments, ctx)?;
    let mut templater = template::Templater {
        args: fill.args,
        defaults: &defaults,
        used: fill.used,
        budget: fill.budget,
    };
    let mut filled = Vec::with_capacity(chunk.len());
    let mut raw = String::new();
    for line in chunk {
        let text = templater.fill(line, ctx)?;
        raw.push_str(&text);
        raw.push_str(ends.get(line.no - 1).copied().unwrap_or("\n"));
        filled.extend(text.split('\n').map(|t| Line {
            no: line.no,
            text: t.to_string(),
        }));
    }
    Ok((filled, raw))
}

/// What the first line that is not blank or a comment holds (a section or a header key), and
/// its number.
fn first_content(lines: &[Line]) -> (String, usize) {
    let Some(line) = lines.iter().find(|l| !is_blank_or_comment(&l.text)) else {
        return ("text".to_string(), lines.first().map_or(1, |l| l.no));
    };
    let what = match section_line(&line.text) {
        Some(s) => format!("section `%{}`", s.name),
        None => {
            let key = line.text.split(':').next().unwrap_or_default().trim();
            format!("header key `{key}`")
        }
    };
    (what, line.no)
}

/// The checks across stages: every stage bootstraps, names are unique, `%files from` names an
/// earlier stage.
fn check_stages(stages: &[Stage], options: &ParseOptions, ctx: &Ctx) -> Result<(), DefError> {
    let Some(first) = stages.first() else {
        return Err(DefError::In {
            path: ctx.path.to_path_buf(),
            problem: Problem::Empty,
        });
    };
    // Only a stage-less first chunk can lack an agent, and only when it is the whole file
    // (otherwise parse_str has already rejected it).
    if first.agent.is_none() && !options.update {
        return Err(ctx.at(first.line, Problem::MissingBootstrap));
    }
    for (index, stage) in stages.iter().enumerate() {
        let earlier = &stages[..index];
        if let Some(name) = &stage.name
            && let Some(other) = earlier.iter().find(|s| s.name.as_ref() == Some(name))
        {
            let line = stage.header.entry("stage").map_or(stage.line, |e| e.line);
            let first_line = other.header.entry("stage").map_or(other.line, |e| e.line);
            return Err(ctx.at(
                line,
                Problem::DuplicateStage {
                    name: name.clone(),
                    first_line,
                },
            ));
        }
        for block in &stage.sections.files {
            let Some(from) = &block.from_stage else {
                continue;
            };
            if earlier.iter().any(|s| s.name.as_ref() == Some(from)) {
                continue;
            }
            let problem = if stages[index..]
                .iter()
                .any(|s| s.name.as_ref() == Some(from))
            {
                Problem::LaterStage { name: from.clone() }
            } else {
                Problem::UnknownStage {
                    name: from.clone(),
                    earlier: earlier.iter().filter_map(|s| s.name.clone()).collect(),
                }
            };
            return Err(ctx.at(block.line, problem));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_split_lines_endings() {
        let (lines, ends) = split_lines("\u{feff}a\r\nb\n\nc");
        let got: Vec<_> = lines.iter().map(|l| (l.no, l.text.as_str())).collect();
        assert_eq!(got, [(1, "a"), (2, "b"), (3, ""), (4, "c")]);
        assert_eq!(ends, ["\r\n", "\n", "\n", ""]);
        assert!(split_lines("").0.is_empty());
        assert_eq!(
            split_lines("\n"),
            (
                vec![Line {
                    no: 1,
                    text: String::new()
                }],
                vec!["\n"]
            )
        );
        assert_eq!(split_lines("x\n").1, ["\n"]);
        assert_eq!(split_lines("x\r").1, ["\r"]);
        // A lone `\r` inside a line stays.
        assert_eq!(split_lines("a\rb\n").0[0].text, "a\rb");
    }

    #[test]
    fn test_stage_start_and_split() {
        assert!(is_stage_start("Bootstrap: docker"));
        assert!(is_stage_start("BOOTSTRAP:docker"));
        assert!(!is_stage_start(" Bootstrap: docker"));
        assert!(!is_stage_start("Bootstrap : docker"));
        assert!(!is_stage_start("Bootstrapé"));
        let (lines, _) = split_lines("# c\nBootstrap: a\n%post\nbootstrap: b\nx\n");
        let chunks: Vec<Vec<usize>> = split_stages(&lines)
            .iter()
            .map(|c| c.iter().map(|l| l.no).collect())
            .collect();
        assert_eq!(chunks, [vec![1], vec![2, 3], vec![4, 5]]);
        let (lines, _) = split_lines("Bootstrap: a\n");
        assert_eq!(split_stages(&lines).len(), 1);
    }

    #[test]
    fn test_read_capped_limits_and_utf8() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("big.def");
        std::fs::write(&path, "x".repeat(11)).expect("write");
        assert!(matches!(
            read_capped(&path, 10),
            Err(DefError::TooLarge { limit: 10, .. })
        ));
        assert_eq!(read_capped(&path, 11).expect("fits").len(), 11);
        std::fs::write(&path, b"Bootstrap: docker\n\xff\n").expect("write");
        let err = read_capped(&path, 100).expect_err("not utf-8");
        assert_eq!(
            err.to_string(),
            format!("{}:2: not valid UTF-8 text", path.display())
        );
    }
}
