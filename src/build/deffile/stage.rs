//! One build stage: its header, its sections and its SCIF apps, parsed from the stage's lines
//! (after build variables are filled).
//!
//! As in Apptainer, a section given twice is joined (bodies in file order; `%files` blocks with
//! the same source are merged; a later label replaces an earlier one). Unlike Apptainer,
//! repeating a script section with different arguments is an error, and so are arguments on
//! sections that take none (`%labels x`), `%files` arguments other than `from STAGE`, and a
//! `-c` without a shell after it.

use std::collections::BTreeMap;

use super::content::{FileCopy, parse_files, parse_labels};
use super::error::Problem;
use super::header::{Agent, Header, parse_header};
use super::script::Script;
use super::section::{AppPart, Section, is_app_name, kind_of, section_line};
use super::{Ctx, DefError, Line, is_blank_or_comment};

/// One stage of a definition file: everything from a `Bootstrap:` line to the next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// The `Stage:` name, used by `%files from NAME`.
    pub name: Option<String>,
    /// The bootstrap agent; `None` only for a definition without header run with `--update`.
    pub agent: Option<Agent>,
    pub header: Header,
    pub sections: Sections,
    /// SCIF apps by name.
    pub apps: BTreeMap<String, App>,
    /// App names in the order they first appear; Apptainer installs apps in this order.
    pub app_order: Vec<String>,
    /// The text of the stage, build variables filled in, line endings as in the file.
    pub raw: String,
    /// The first line of the stage that is not blank or a comment (for a stage after the
    /// first, its `Bootstrap:` line).
    pub line: usize,
}

/// The sections of a stage. A script section is `None` when the file does not have it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Sections {
    /// `%arguments`: default values of build variables (already applied to the stage).
    pub arguments: Option<Script>,
    /// `%pre`: legacy host script run before bootstrap.
    pub pre: Option<Script>,
    /// `%setup`: host script, `$APPTAINER_ROOTFS` is the root filesystem.
    pub setup: Option<Script>,
    /// `%files [from STAGE]` blocks, one per distinct source, in file order.
    pub files: Vec<FilesBlock>,
    /// `%post`: run inside the container.
    pub post: Option<Script>,
    /// `%environment`: written to `/.singularity.d/env/90-environment.sh`.
    pub environment: Option<Script>,
    /// `%runscript`: written to `/.singularity.d/runscript` (see [`Script::script_file`]).
    pub runscript: Option<Script>,
    /// `%startscript`: written to `/.singularity.d/startscript`.
    pub startscript: Option<Script>,
    /// `%test`: run after the build unless `--notest`, written to `/.singularity.d/test`.
    pub test: Option<Script>,
    /// `%labels`, parsed.
    pub labels: BTreeMap<String, String>,
    /// `%help`: written to `/.singularity.d/runscript.help`.
    pub help: Option<Script>,
}

/// The `%files` lines with one source: the host (`from_stage: None`) or an earlier stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilesBlock {
    pub from_stage: Option<String>,
    pub entries: Vec<FileCopy>,
    /// The line of the first `%files` keyword of this source.
    pub line: usize,
}

/// An SCIF app (`%app* NAME` sections), built into `/scif/apps/NAME`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct App {
    /// `%appinstall`: run inside the container after `%post`, in `/scif/apps/NAME`.
    pub install: Option<Script>,
    /// `%appfiles`: copied from the host into `/scif/apps/NAME` (destination defaults to the
    /// source path).
    pub files: Vec<FileCopy>,
    /// `%appenv`: the app's `scif/env/90-environment.sh`.
    pub env: Option<Script>,
    /// `%apprun`: the app's runscript.
    pub run: Option<Script>,
    /// `%applabels`, parsed.
    pub labels: BTreeMap<String, String>,
    /// `%apptest`.
    pub test: Option<Script>,
    /// `%apphelp`.
    pub help: Option<Script>,
    /// `%appstart`.
    pub start: Option<Script>,
}

/// A stage parsed from its lines, before the checks that look at other stages.
pub(crate) fn parse_stage(lines: &[Line], raw: String, ctx: &Ctx) -> Result<Stage, DefError> {
    let first_section = lines
        .iter()
        .position(|l| section_line(&l.text).is_some())
        .unwrap_or(lines.len());
    let parsed = parse_header(&lines[..first_section], ctx)?;
    let mut stage = Stage {
        name: parsed.header.get("stage").map(str::to_string),
        agent: parsed.agent,
        header: parsed.header,
        sections: Sections::default(),
        apps: BTreeMap::new(),
        app_order: Vec::new(),
        raw,
        line: lines
            .iter()
            .find(|l| !is_blank_or_comment(&l.text))
            .or(lines.first())
            .map_or(1, |l| l.no),
    };
    let mut start = first_section;
    while start < lines.len() {
        let end = lines[start + 1..]
            .iter()
            .position(|l| section_line(&l.text).is_some())
            .map_or(lines.len(), |i| start + 1 + i);
        add_section(&mut stage, &lines[start], &lines[start + 1..end], ctx)?;
        start = end;
    }
    Ok(stage)
}

/// Adds one section (its keyword line and body lines) to the stage.
fn add_section(stage: &mut Stage, head: &Line, body: &[Line], ctx: &Ctx) -> Result<(), DefError> {
    let Some(line) = section_line(&head.text) else {
        return Ok(());
    };
    let kind = kind_of(&line).map_err(|p| ctx.at(head.no, p))?;
    let script = |args: String| Script {
        args,
        body: body.iter().map(|l| format!("{}\n", l.text)).collect(),
        line: head.no,
    };
    let no_args = |section: &str| {
        if line.rest.is_empty() {
            Ok(())
        } else {
            Err(ctx.at(
                head.no,
                Problem::UnexpectedSectionArgs {
                    section: section.to_string(),
                    args: line.rest.clone(),
                },
            ))
        }
    };
    let sections = &mut stage.sections;
    match kind {
        Section::App(part) => {
            let section = kind.name();
            let (name, extra) = line
                .rest
                .split_once(char::is_whitespace)
                .map_or((line.rest.as_str(), ""), |(n, e)| (n, e.trim()));
            if name.is_empty() {
                return Err(ctx.at(head.no, Problem::MissingAppName { section }));
            }
            if !is_app_name(name) {
                return Err(ctx.at(head.no, Problem::BadAppName { name: name.into() }));
            }
            if !extra.is_empty() {
                return Err(ctx.at(
                    head.no,
                    Problem::UnexpectedSectionArgs {
                        section: format!("{section} {name}"),
                        args: extra.to_string(),
                    },
                ));
            }
            if !stage.app_order.iter().any(|a| a == name) {
                stage.app_order.push(name.to_string());
            }
            let app = stage.apps.entry(name.to_string()).or_default();
            let slot = match part {
                AppPart::Files => {
                    app.files.extend(parse_files(body, section, ctx)?);
                    return Ok(());
                }
                AppPart::Labels => return parse_labels(body, section, &mut app.labels, ctx),
                AppPart::Install => &mut app.install,
                AppPart::Env => &mut app.env,
                AppPart::Run => &mut app.run,
                AppPart::Test => &mut app.test,
                AppPart::Help => &mut app.help,
                AppPart::Start => &mut app.start,
            };
            merge(slot, script(String::new()), section, ctx)
        }
        Section::Files => {
            let from_stage = match line.rest.split_whitespace().collect::<Vec<_>>()[..] {
                [] => None,
                [from, name] if from.eq_ignore_ascii_case("from") => Some(name.to_string()),
                _ => {
                    return Err(ctx.at(
                        head.no,
                        Problem::BadFilesArgs {
                            args: line.rest.clone(),
                        },
                    ));
                }
            };
            let entries = parse_files(body, "files", ctx)?;
            match sections
                .files
                .iter_mut()
                .find(|b| b.from_stage == from_stage)
            {
                Some(block) => block.entries.extend(entries),
                None => sections.files.push(FilesBlock {
                    from_stage,
                    entries,
                    line: head.no,
                }),
            }
            Ok(())
        }
        Section::Labels => {
            no_args("labels")?;
            parse_labels(body, "labels", &mut sections.labels, ctx)
        }
        Section::Arguments | Section::Environment | Section::Help => {
            no_args(kind.name())?;
            let slot = match kind {
                Section::Arguments => &mut sections.arguments,
                Section::Environment => &mut sections.environment,
                _ => &mut sections.help,
            };
            merge(slot, script(String::new()), kind.name(), ctx)
        }
        Section::Pre | Section::Setup | Section::Post => {
            let mut words = line.rest.split_whitespace();
            if words.any(|w| w == "-c") && words.next().is_none() {
                return Err(ctx.at(
                    head.no,
                    Problem::MissingShellCommand {
                        section: kind.name(),
                    },
                ));
            }
            let slot = match kind {
                Section::Pre => &mut sections.pre,
                Section::Setup => &mut sections.setup,
                _ => &mut sections.post,
            };
            merge(slot, script(line.rest.clone()), kind.name(), ctx)
        }
        Section::Runscript | Section::Startscript | Section::Test => {
            let slot = match kind {
                Section::Runscript => &mut sections.runscript,
                Section::Startscript => &mut sections.startscript,
                _ => &mut sections.test,
            };
            merge(slot, script(line.rest.clone()), kind.name(), ctx)
        }
    }
}

/// Joins a repeated section to the first one, as Apptainer does.
fn merge(
    slot: &mut Option<Script>,
    new: Script,
    section: &'static str,
    ctx: &Ctx,
) -> Result<(), DefError> {
    let Some(old) = slot else {
        *slot = Some(new);
        return Ok(());
    };
    if !new.args.is_empty() && !old.args.is_empty() && new.args != old.args {
        return Err(ctx.at(
            new.line,
            Problem::ConflictingSectionArgs {
                section,
                args: new.args,
                first_args: old.args.clone(),
                first_line: old.line,
            },
        ));
    }
    if old.args.is_empty() {
        old.args = new.args;
    }
    old.body.push_str(&new.body);
    Ok(())
}
