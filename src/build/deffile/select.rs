//! `--section NAME[,NAME...]`: which sections of the definition a build runs
//! (Apptainer's `Bundle.RunSection` and `checkSections`). `all` (the default) and `none` stand
//! alone. Apptainer ignores names it does not know, so a typo silently skips every section;
//! here it is an error with a suggestion.
//!
//! `-T/--notest` is separate: it skips running `%test` after the build, while `--section`
//! decides whether `%test` is written into the image.

use std::collections::BTreeSet;

use super::DefError;
use super::error::closest;
use super::section::Section;

/// The names `--section` takes.
pub const SECTION_NAMES: [&str; 12] = [
    "all",
    "none",
    "pre",
    "setup",
    "files",
    "post",
    "environment",
    "runscript",
    "startscript",
    "test",
    "labels",
    "help",
];

/// The sections a build runs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SectionFilter {
    #[default]
    All,
    None,
    Only(BTreeSet<&'static str>),
}

impl SectionFilter {
    /// Parses the `--section` values; each may hold several names separated by commas. No
    /// values means `all`.
    pub fn parse(values: &[String]) -> Result<SectionFilter, DefError> {
        let mut names = BTreeSet::new();
        for value in values {
            for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                let lower = name.to_ascii_lowercase();
                let Some(known) = SECTION_NAMES.iter().find(|n| **n == lower) else {
                    return Err(DefError::UnknownSectionName {
                        value: name.to_string(),
                        suggestion: closest(name, &SECTION_NAMES),
                    });
                };
                names.insert(*known);
            }
        }
        for alone in ["all", "none"] {
            if names.contains(alone) && names.len() > 1 {
                return Err(DefError::SectionMix { value: alone });
            }
        }
        Ok(if names.is_empty() || names.contains("all") {
            SectionFilter::All
        } else if names.contains("none") {
            SectionFilter::None
        } else {
            SectionFilter::Only(names)
        })
    }

    /// Whether the build runs `section`. SCIF app sections cannot be selected; they run
    /// unless `none`. `%arguments` is always applied (it is read while parsing).
    pub fn runs(&self, section: Section) -> bool {
        match (self, section) {
            (_, Section::Arguments) => true,
            (SectionFilter::All, _) => true,
            (SectionFilter::None, _) => false,
            (SectionFilter::Only(_), Section::App(_)) => true,
            (SectionFilter::Only(names), s) => names.contains(s.name()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::deffile::AppPart;

    fn parse(values: &[&str]) -> Result<SectionFilter, String> {
        let values: Vec<String> = values.iter().map(|v| v.to_string()).collect();
        SectionFilter::parse(&values).map_err(|e| e.to_string())
    }

    #[test]
    fn test_default_all_and_none() {
        assert_eq!(parse(&[]), Ok(SectionFilter::All));
        assert_eq!(parse(&["all"]), Ok(SectionFilter::All));
        let none = parse(&["none"]).expect("ok");
        assert!(!none.runs(Section::Post));
        assert!(!none.runs(Section::App(AppPart::Install)));
        assert!(none.runs(Section::Arguments));
        assert!(SectionFilter::All.runs(Section::Labels));
    }

    #[test]
    fn test_only_listed_sections() {
        let f = parse(&["setup,post", "Labels"]).expect("ok");
        assert!(f.runs(Section::Setup));
        assert!(f.runs(Section::Post));
        assert!(f.runs(Section::Labels));
        assert!(!f.runs(Section::Files));
        assert!(!f.runs(Section::Test));
        assert!(f.runs(Section::App(AppPart::Run)));
    }

    #[test]
    fn test_errors() {
        assert_eq!(
            parse(&["post,enviroment"]),
            Err("--section \"enviroment\": unknown section (did you mean \"environment\"?); choose from all, none, pre, setup, files, post, environment, runscript, startscript, test, labels, help".to_string())
        );
        assert_eq!(
            parse(&["all", "post"]),
            Err("--section all: \"all\" cannot be combined with other sections".to_string())
        );
        assert!(parse(&["none,files"]).is_err());
        assert!(
            parse(&["xyz"])
                .expect_err("bad")
                .contains("unknown section;")
        );
    }
}
