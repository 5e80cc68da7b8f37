//! Section lines: which lines start a section, the section names Apptainer knows
//! (`validSections` and `appSections` in `deffile.go`), and what may follow a name.
//!
//! As in Apptainer, a line whose first word starts with `%` starts a section (so a body line
//! such as `%{__python} setup.py` is an unknown section); names are case-insensitive; leading
//! `%` signs are dropped (`%%post` is `%post`). Unlike Apptainer, the name may be followed by a
//! tab as well as a space, and the line may be indented.

use super::error::{Problem, closest};

/// A part of an SCIF app (`%app<part> NAME`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AppPart {
    Install,
    Files,
    Env,
    Run,
    Labels,
    Test,
    Help,
    Start,
}

/// A section kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Section {
    Arguments,
    Pre,
    Setup,
    Files,
    Post,
    Environment,
    Runscript,
    Startscript,
    Test,
    Labels,
    Help,
    App(AppPart),
}

/// Every section name and its kind.
const NAMES: [(&str, Section); 19] = [
    ("arguments", Section::Arguments),
    ("pre", Section::Pre),
    ("setup", Section::Setup),
    ("files", Section::Files),
    ("post", Section::Post),
    ("environment", Section::Environment),
    ("runscript", Section::Runscript),
    ("startscript", Section::Startscript),
    ("test", Section::Test),
    ("labels", Section::Labels),
    ("help", Section::Help),
    ("appinstall", Section::App(AppPart::Install)),
    ("appfiles", Section::App(AppPart::Files)),
    ("appenv", Section::App(AppPart::Env)),
    ("apprun", Section::App(AppPart::Run)),
    ("applabels", Section::App(AppPart::Labels)),
    ("apptest", Section::App(AppPart::Test)),
    ("apphelp", Section::App(AppPart::Help)),
    ("appstart", Section::App(AppPart::Start)),
];

/// Every section name, for suggestions.
const NAME_LIST: [&str; 19] = {
    let mut list = [""; 19];
    let mut i = 0;
    while i < NAMES.len() {
        list[i] = NAMES[i].0;
        i += 1;
    }
    list
};

impl Section {
    /// The name written after `%`.
    pub fn name(self) -> &'static str {
        NAMES
            .iter()
            .find(|(_, s)| *s == self)
            .map_or("", |(name, _)| name)
    }

    /// The section called `name` (lower case, without `%`).
    pub fn from_name(name: &str) -> Option<Section> {
        NAMES.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
    }

    /// Whether the section body is a shell script run at build time with `/bin/sh` options
    /// as arguments.
    pub fn takes_shell_args(self) -> bool {
        matches!(self, Section::Pre | Section::Setup | Section::Post)
    }

    /// Whether the arguments go on the interpreter line of the written script.
    pub fn takes_shebang_args(self) -> bool {
        matches!(
            self,
            Section::Runscript | Section::Startscript | Section::Test
        )
    }
}

/// A line that starts a section, split up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SectionLine {
    /// The name, lower case, without `%`.
    pub name: String,
    /// The rest of the line up to a `#`, trimmed.
    pub rest: String,
}

/// The section a line starts, if its first word starts with `%`.
pub(crate) fn section_line(text: &str) -> Option<SectionLine> {
    let trimmed = text.trim_start();
    if !trimmed.starts_with('%') {
        return None;
    }
    let (word, rest) = trimmed
        .split_once(char::is_whitespace)
        .unwrap_or((trimmed, ""));
    let rest = rest.split('#').next().unwrap_or_default().trim();
    Some(SectionLine {
        name: word.trim_start_matches('%').to_lowercase(),
        rest: rest.to_string(),
    })
}

/// The kind of a section line, or why it is not one we know.
pub(crate) fn kind_of(line: &SectionLine) -> Result<Section, Problem> {
    Section::from_name(&line.name).ok_or_else(|| Problem::UnknownSection {
        name: line.name.clone(),
        suggestion: closest(&line.name, &NAME_LIST),
    })
}

/// Whether `name` can name an SCIF app: it becomes a directory (`/scif/apps/NAME`) and part of
/// environment variable names.
pub(crate) fn is_app_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_section_line_recognition() {
        assert_eq!(section_line("echo %post"), None);
        assert_eq!(section_line("post"), None);
        let l = section_line("%post -c /bin/bash  # comment").expect("section");
        assert_eq!(l.name, "post");
        assert_eq!(l.rest, "-c /bin/bash");
        let l = section_line("  %%RunScript\t-e").expect("section");
        assert_eq!(l.name, "runscript");
        assert_eq!(l.rest, "-e");
        let l = section_line("%files from build").expect("section");
        assert_eq!((l.name.as_str(), l.rest.as_str()), ("files", "from build"));
        let l = section_line("%").expect("section");
        assert_eq!(l.name, "");
        let l = section_line("%{__python} setup.py").expect("section");
        assert_eq!(l.name, "{__python}");
    }

    #[test]
    fn test_names_round_trip() {
        for (name, kind) in NAMES {
            assert_eq!(Section::from_name(name), Some(kind));
            assert_eq!(kind.name(), name);
        }
        assert_eq!(Section::from_name("Post"), None);
    }

    #[test]
    fn test_unknown_section_suggestion() {
        let line = section_line("%enviroment").expect("section");
        assert_eq!(
            kind_of(&line),
            Err(Problem::UnknownSection {
                name: "enviroment".into(),
                suggestion: Some("environment")
            })
        );
        let line = section_line("%xyzzy").expect("section");
        assert_eq!(
            kind_of(&line),
            Err(Problem::UnknownSection {
                name: "xyzzy".into(),
                suggestion: None
            })
        );
    }

    #[test]
    fn test_app_names() {
        for ok in ["foo", "Foo-2", "a.b_c", "9"] {
            assert!(is_app_name(ok), "{ok}");
        }
        for bad in ["", ".", "..", "-x", "a/b", "a b", "é"] {
            assert!(!is_app_name(bad), "{bad}");
        }
    }
}
