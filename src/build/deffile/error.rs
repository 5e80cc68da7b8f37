//! The errors of definition-file parsing: one typed value per problem, each rendering as one
//! line that names the file and line, says what is wrong and how to fix it.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong while reading a definition file, its build args or the
/// `--section` list.
#[derive(Debug, thiserror::Error)]
pub enum DefError {
    #[error("cannot read {}: {cause}", path.display())]
    Read { path: PathBuf, cause: io::Error },

    #[error("{} is larger than {limit} bytes; is it the right file?", path.display())]
    TooLarge { path: PathBuf, limit: u64 },

    /// A problem at a known line of a file (the definition file or a `--build-arg-file`).
    #[error("{}:{line}: {problem}", path.display())]
    At {
        path: PathBuf,
        line: usize,
        problem: Problem,
    },

    /// A problem with the file as a whole.
    #[error("{}: {problem}", path.display())]
    In { path: PathBuf, problem: Problem },

    #[error(
        "--build-arg {arg:?}: expected NAME=VALUE, where NAME holds only letters, digits and _"
    )]
    BuildArg { arg: String },

    #[error(
        "build args not used by the definition file: {}; remove them or use --warn-unused-build-args",
        names.join(", ")
    )]
    UnusedBuildArgs { names: Vec<String> },

    #[error("--section {value:?}: unknown section{}; choose from {}",
        suggestion.map(|s| format!(" (did you mean {s:?}?)")).unwrap_or_default(),
        super::select::SECTION_NAMES.join(", "))]
    UnknownSectionName {
        value: String,
        suggestion: Option<&'static str>,
    },

    #[error("--section {value}: {value:?} cannot be combined with other sections")]
    SectionMix { value: &'static str },
}

impl DefError {
    /// The problem, when the error is about the content of a file.
    pub fn problem(&self) -> Option<&Problem> {
        match self {
            DefError::At { problem, .. } | DefError::In { problem, .. } => Some(problem),
            _ => None,
        }
    }

    /// The 1-based line the error is about, when it is about one line.
    pub fn line(&self) -> Option<usize> {
        match self {
            DefError::At { line, .. } => Some(*line),
            _ => None,
        }
    }
}

/// What is wrong with a definition file (or a build-arg file), without where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("not valid UTF-8 text")]
    NotUtf8,

    #[error(
        "the definition file has no header and no sections; start it with a header such as \
         `Bootstrap: docker` and `From: alpine`"
    )]
    Empty,

    #[error(
        "no `Bootstrap:` header; start the definition with one, e.g. `Bootstrap: docker` \
         (or use --update to run the sections over an existing sandbox)"
    )]
    MissingBootstrap,

    #[error(
        "{what} comes before the first `Bootstrap:` line, so it belongs to no stage; \
         move it below `Bootstrap:`"
    )]
    BeforeFirstBootstrap { what: String },

    #[error(
        "`Bootstrap:` has no value; name a bootstrap agent such as docker, localimage or scratch"
    )]
    EmptyBootstrap,

    #[error("unknown bootstrap agent `{agent}`{}; known agents: {}",
        suggest_text(*suggestion), super::header::Agent::NAMES.join(", "))]
    UnknownAgent {
        agent: String,
        suggestion: Option<&'static str>,
    },

    #[error(
        "`{text}` is not a header line; header lines are `Key: value` and sections start with `%`"
    )]
    NotHeaderLine { text: String },

    #[error("unknown header key `{key}`{}", match suggestion {
        Some(s) => format!(" (did you mean `{s}`?)"),
        None => format!("; known keys: {}", super::header::KNOWN_KEYS.join(", ")),
    })]
    UnknownHeaderKey {
        key: String,
        suggestion: Option<&'static str>,
    },

    #[error(
        "header key `{key}` is already set on line {first_line}; give it once \
         (Apptainer would silently keep only the last value)"
    )]
    DuplicateHeaderKey { key: String, first_line: usize },

    #[error("stage name `{name}` must be one word (it is used as `%files from NAME`)")]
    BadStageName { name: String },

    #[error(
        "stage name `{name}` is already used by the stage on line {first_line}; stage names must be unique"
    )]
    DuplicateStage { name: String, first_line: usize },

    #[error("unknown section `%{name}`{}; a line whose first word starts with `%` begins a section",
        suggestion.map(|s| format!(" (did you mean `%{s}`?)")).unwrap_or_default())]
    UnknownSection {
        name: String,
        suggestion: Option<&'static str>,
    },

    #[error("`%{section}` needs an app name: `%{section} NAME`")]
    MissingAppName { section: &'static str },

    #[error(
        "app name `{name}` may hold only letters, digits, `.`, `_` and `-`, and must start with a \
         letter or digit"
    )]
    BadAppName { name: String },

    #[error("`%{section}` takes no arguments, got `{args}`")]
    UnexpectedSectionArgs { section: String, args: String },

    #[error(
        "`%{section}` is repeated from line {first_line} with different arguments (`{args}` here, \
         `{first_args}` there); the bodies are joined and run with one set of arguments, so give \
         the same arguments or none"
    )]
    ConflictingSectionArgs {
        section: &'static str,
        args: String,
        first_args: String,
        first_line: usize,
    },

    #[error("`%{section} -c` needs a shell after `-c`, e.g. `%{section} -c /bin/bash`")]
    MissingShellCommand { section: &'static str },

    #[error("`%files {args}`: expected `%files` (copy from the host) or `%files from STAGE`")]
    BadFilesArgs { args: String },

    #[error("`%files from {name}`: no earlier stage is named `{name}`{}",
        if earlier.is_empty() {
            "; name a stage with `Stage: NAME` in its header".to_string()
        } else {
            format!(" (earlier stages: {})", earlier.join(", "))
        })]
    UnknownStage { name: String, earlier: Vec<String> },

    #[error(
        "`%files from {name}`: stage `{name}` is not before this one; files can only be copied \
         from an earlier stage"
    )]
    LaterStage { name: String },

    #[error("`{text}` in %{section}: {why}")]
    FilesLine {
        section: &'static str,
        text: String,
        why: FilesLineError,
    },

    #[error("`{text}` in %{section} looks like KEY=VALUE; labels are written `KEY VALUE`")]
    BadLabel { section: &'static str, text: String },

    #[error("`{text}` in %arguments is not `NAME=VALUE`")]
    BadArgument { text: String },

    #[error("`{name}` cannot be a build variable: use only letters, digits and _")]
    BadVariableName { name: String },

    #[error(
        "build variable `{name}` is not defined: pass --build-arg {name}=VALUE or add \
         `{name}=VALUE` to this stage's %arguments section"
    )]
    UndefinedVariable { name: String },

    #[error("unterminated `{{{{ {name}` in `{text}`: close it with `}}}}`")]
    UnterminatedTemplate { name: String, text: String },

    #[error("filling in the build variables made the definition larger than {limit} bytes")]
    TooLargeAfterTemplating { limit: usize },

    #[error("`{text}` is not `NAME=VALUE`")]
    BuildArgLine { text: String },
}

/// Why a `%files` / `%appfiles` line cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FilesLineError {
    #[error("a quote is not closed")]
    UnclosedQuote,
    #[error("a quote starts or ends inside a path; quote the whole path")]
    QuoteInsidePath,
    #[error("more than a source and a destination; quote paths that contain spaces")]
    TooManyPaths,
    #[error("the source path is empty")]
    EmptySource,
}

fn suggest_text(suggestion: Option<&'static str>) -> String {
    suggestion
        .map(|s| format!(" (did you mean `{s}`?)"))
        .unwrap_or_default()
}

/// The known name closest to a misspelt one (case-insensitive), when it is close enough.
pub(crate) fn closest(name: &str, known: &[&'static str]) -> Option<&'static str> {
    let lower = name.to_lowercase();
    known
        .iter()
        .map(|k| (strsim::levenshtein(&lower, &k.to_lowercase()), *k))
        .filter(|(distance, k)| *distance <= 2.max(k.len() / 4) && *distance < k.len())
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, k)| k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_closest_suggests_only_near_names() {
        let known = ["From", "Bootstrap", "Stage", "Include"];
        assert_eq!(closest("form", &known), Some("From"));
        assert_eq!(closest("BOOTSTRAPP", &known), Some("Bootstrap"));
        assert_eq!(closest("xyz", &known), None);
        assert_eq!(closest("", &known), None);
    }

    #[test]
    fn test_error_messages_are_one_line() {
        let e = DefError::At {
            path: PathBuf::from("a.def"),
            line: 3,
            problem: Problem::UnterminatedTemplate {
                name: "x".into(),
                text: "echo {{ x".into(),
            },
        };
        assert_eq!(
            e.to_string(),
            "a.def:3: unterminated `{{ x` in `echo {{ x`: close it with `}}`"
        );
        assert_eq!(e.line(), Some(3));
        let e = DefError::UnusedBuildArgs {
            names: vec!["a".into(), "b".into()],
        };
        assert_eq!(
            e.to_string(),
            "build args not used by the definition file: a, b; remove them or use --warn-unused-build-args"
        );
        assert!(!e.to_string().contains('\n'));
    }
}
