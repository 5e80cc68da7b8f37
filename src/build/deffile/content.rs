//! The two sections whose bodies are data rather than scripts: `%labels`/`%applabels`
//! (`KEY VALUE` lines) and `%files`/`%appfiles` (`SRC [DST]` lines).
//!
//! Labels follow Apptainer's `GetLabels`: blank lines and lines starting with `#` are skipped,
//! the key is the first word, the value the rest of the line trimmed (maybe empty), and a later
//! key replaces an earlier one. Unlike Apptainer the key ends at a tab too, and a key holding
//! `=` is an error (`Author=alice` is a mistake for `Author alice`).
//!
//! Files lines: blank lines and lines starting with `#` are skipped; a path with spaces is
//! quoted with `"` or `'`; a word starting with `#` after the first path starts a comment.
//! Apptainer silently ignores a third path, treats `'` as a literal character and keeps text
//! glued to a quote as a separate path; here those are errors.

use std::collections::BTreeMap;

use super::error::{FilesLineError, Problem};
use super::{Ctx, DefError, Line};

/// One path to copy: from the host (or an earlier stage) into the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileCopy {
    /// The source path; may hold glob patterns.
    pub src: String,
    /// The destination in the container; `None` means the same path as `src`.
    pub dst: Option<String>,
    /// The line it is written on.
    pub line: usize,
}

/// Adds the labels of one `%labels` / `%applabels` body to `labels`.
pub(crate) fn parse_labels(
    lines: &[Line],
    section: &'static str,
    labels: &mut BTreeMap<String, String>,
    ctx: &Ctx,
) -> Result<(), DefError> {
    for line in lines {
        let text = line.text.trim();
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        let (key, value) = text.split_once(char::is_whitespace).unwrap_or((text, ""));
        if key.contains('=') {
            return Err(ctx.at(
                line.no,
                Problem::BadLabel {
                    section,
                    text: text.to_string(),
                },
            ));
        }
        labels.insert(key.to_string(), value.trim().to_string());
    }
    Ok(())
}

/// Parses the lines of one `%files` / `%appfiles` body.
pub(crate) fn parse_files(
    lines: &[Line],
    section: &'static str,
    ctx: &Ctx,
) -> Result<Vec<FileCopy>, DefError> {
    let mut copies = Vec::new();
    for line in lines {
        let text = line.text.trim();
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        let fail = |why| {
            ctx.at(
                line.no,
                Problem::FilesLine {
                    section,
                    text: text.to_string(),
                    why,
                },
            )
        };
        let mut paths = split_paths(text).map_err(fail)?.into_iter();
        let src = paths.next().unwrap_or_default();
        let dst = paths.next();
        if paths.next().is_some() {
            return Err(fail(FilesLineError::TooManyPaths));
        }
        if src.is_empty() {
            return Err(fail(FilesLineError::EmptySource));
        }
        copies.push(FileCopy {
            src,
            dst,
            line: line.no,
        });
    }
    Ok(copies)
}

/// Splits a files line into paths, honouring quotes and a trailing `#` comment.
fn split_paths(text: &str) -> Result<Vec<String>, FilesLineError> {
    let mut paths = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let Some(&first) = chars.peek() else { break };
        if first == '#' && !paths.is_empty() {
            break;
        }
        let mut path = String::new();
        if first == '"' || first == '\'' {
            chars.next();
            loop {
                match chars.next() {
                    Some(c) if c == first => break,
                    Some(c) => path.push(c),
                    None => return Err(FilesLineError::UnclosedQuote),
                }
            }
            if chars.peek().is_some_and(|c| !c.is_whitespace()) {
                return Err(FilesLineError::QuoteInsidePath);
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '"' || c == '\'' {
                    return Err(FilesLineError::QuoteInsidePath);
                }
                path.push(c);
            }
        }
        paths.push(path);
    }
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn lines(text: &str) -> Vec<Line> {
        text.lines()
            .enumerate()
            .map(|(i, t)| Line {
                no: i + 10,
                text: t.to_string(),
            })
            .collect()
    }

    fn ctx() -> Ctx<'static> {
        Ctx {
            path: Path::new("f.def"),
        }
    }

    fn files(text: &str) -> Result<Vec<(String, Option<String>)>, String> {
        parse_files(&lines(text), "files", &ctx())
            .map(|v| v.into_iter().map(|c| (c.src, c.dst)).collect())
            .map_err(|e| e.to_string())
    }

    fn pair(src: &str, dst: Option<&str>) -> (String, Option<String>) {
        (src.to_string(), dst.map(str::to_string))
    }

    #[test]
    fn test_labels_rules() {
        let mut labels = BTreeMap::new();
        let text =
            "  Author alice\n\n# c\nVersion\tv1.0 \nMyLabel Hello  World\nEmpty\nAuthor bob\n";
        parse_labels(&lines(text), "labels", &mut labels, &ctx()).expect("ok");
        let got: Vec<_> = labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("Author", "bob"),
                ("Empty", ""),
                ("MyLabel", "Hello  World"),
                ("Version", "v1.0")
            ]
        );
    }

    #[test]
    fn test_labels_error() {
        let mut labels = BTreeMap::new();
        let err = parse_labels(
            &lines("ok yes\nAuthor=alice\n"),
            "labels",
            &mut labels,
            &ctx(),
        )
        .expect_err("bad");
        assert_eq!(
            err.to_string(),
            "f.def:11: `Author=alice` in %labels looks like KEY=VALUE; labels are written `KEY VALUE`"
        );
    }

    #[test]
    fn test_files_apptainer_quoting_cases() {
        // Apptainer's own testdata_good/quotedfiles.
        let text = r#"
    "file 1"
    "file 1" "nospace1"
    "file 1" "with space 1"
    file2
    file2 "nospace2"
    file2 "with space 2"
    "file3" "nospace3"
    "file3" "with space 3"
"#;
        assert_eq!(
            files(text).expect("ok"),
            [
                pair("file 1", None),
                pair("file 1", Some("nospace1")),
                pair("file 1", Some("with space 1")),
                pair("file2", None),
                pair("file2", Some("nospace2")),
                pair("file2", Some("with space 2")),
                pair("file3", Some("nospace3")),
                pair("file3", Some("with space 3")),
            ]
        );
    }

    #[test]
    fn test_files_single_quotes_globs_comments_tabs() {
        let text = "'a b'\t'/opt/c d'\n/src/*.txt /opt/ # copy them\n# whole comment\n\ta\tb\n";
        assert_eq!(
            files(text).expect("ok"),
            [
                pair("a b", Some("/opt/c d")),
                pair("/src/*.txt", Some("/opt/")),
                pair("a", Some("b")),
            ]
        );
        let copies = parse_files(&lines("x\n\ny z\n"), "files", &ctx()).expect("ok");
        assert_eq!(copies[1].line, 12);
        // `#` inside a path is kept.
        assert_eq!(files("a#b c#d").expect("ok"), [pair("a#b", Some("c#d"))]);
    }

    #[test]
    fn test_files_errors() {
        assert_eq!(
            files("a b c").expect_err("bad"),
            "f.def:10: `a b c` in %files: more than a source and a destination; quote paths that contain spaces"
        );
        assert_eq!(
            files("\"a b").expect_err("bad"),
            "f.def:10: `\"a b` in %files: a quote is not closed"
        );
        assert!(
            files("a\"b c\"")
                .expect_err("bad")
                .ends_with("a quote starts or ends inside a path; quote the whole path")
        );
        assert!(
            files("\"a\"b")
                .expect_err("bad")
                .contains("quote the whole path")
        );
        assert!(
            files("\"\" /x")
                .expect_err("bad")
                .ends_with("the source path is empty")
        );
    }
}
