//! Parser for /etc/subuid and /etc/subgid: `[!]owner:start:count` lines.
//!
//! The file is kept line by line with its raw bytes, so that the editor can rewrite it
//! changing only the lines it means to. Malformed lines are reported as diagnostics (file,
//! line, what is wrong) and otherwise skipped, as shadow's tools skip them; they never make
//! the whole parse fail.
//!
//! Accepted syntax, per line:
//! - blank (only spaces/tabs) and `#` comment lines are ignored;
//! - `owner:start:count`, owner being a login name or a uid in decimal;
//! - `!owner:start:count`: an entry disabled by the administrator (what Apptainer's
//!   `config fakeroot --disable` writes). newuidmap never matches it, so it grants nothing.
//!
//! Numbers must be plain decimal: shadow reads `0100` as octal and `0x10` as hex, so such
//! numbers are reported rather than silently read differently from newuidmap.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::user::{UserRef, is_plain_decimal};

/// Files larger than this are refused: a real /etc/subuid is a few kilobytes.
pub const MAX_SUBID_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// One entry (enabled or disabled) of a subordinate-id file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubidEntry {
    /// The owner field: a login name or a decimal uid.
    pub owner: String,
    /// First id of the range.
    pub start: u32,
    /// Number of ids; `start + count` never exceeds 2^32.
    pub count: u32,
    /// True for `!`-prefixed lines.
    pub disabled: bool,
    /// 1-based line number in the file.
    pub line: usize,
}

impl SubidEntry {
    /// One past the last id of the range.
    pub fn end(&self) -> u64 {
        u64::from(self.start) + u64::from(self.count)
    }

    /// True when `[start, end)` shares an id with this entry's range.
    pub fn overlaps(&self, start: u64, end: u64) -> bool {
        u64::from(self.start) < end && start < self.end()
    }
}

impl fmt::Display for SubidEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.start, self.count)
    }
}

/// What is wrong with a malformed line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineProblem {
    /// The line is not valid UTF-8.
    NotUtf8,
    /// Not exactly three `:`-separated fields.
    FieldCount(usize),
    /// The owner field is empty.
    EmptyOwner,
    /// A field contains whitespace (shadow does not trim it).
    Whitespace,
    /// A number field is not a number.
    BadNumber { field: &'static str, value: String },
    /// A number with a leading zero or a `0x` prefix, which shadow reads as octal or hex.
    AmbiguousNumber { field: &'static str, value: String },
    /// A number too large to be an id.
    NumberTooLarge { field: &'static str, value: String },
    /// A count of zero grants nothing.
    ZeroCount,
    /// `start + count` goes past the 32-bit id space.
    PastIdSpace { start: u64, count: u64 },
}

impl fmt::Display for LineProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LineProblem::NotUtf8 => write!(f, "line is not valid UTF-8"),
            LineProblem::FieldCount(n) => {
                write!(f, "expected 3 fields `name-or-uid:start:count`, found {n}")
            }
            LineProblem::EmptyOwner => write!(f, "the user field is empty"),
            LineProblem::Whitespace => write!(
                f,
                "fields contain whitespace (spaces, tabs or a CRLF line ending); remove it"
            ),
            LineProblem::BadNumber { field, value } => {
                write!(f, "{field} {value:?} is not a decimal number")
            }
            LineProblem::AmbiguousNumber { field, value } => write!(
                f,
                "{field} {value:?} has a leading 0 or 0x, which newuidmap reads as octal or hex; write it in plain decimal"
            ),
            LineProblem::NumberTooLarge { field, value } => {
                write!(f, "{field} {value} is larger than any 32-bit id")
            }
            LineProblem::ZeroCount => write!(f, "count is 0, so the entry grants no ids"),
            LineProblem::PastIdSpace { start, count } => write!(
                f,
                "range {start}:{count} ends past the last 32-bit id (4294967295)"
            ),
        }
    }
}

/// A malformed line: where, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file.
    pub path: PathBuf,
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub problem: LineProblem,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {}; the line is ignored",
            self.path.display(),
            self.line,
            self.problem
        )
    }
}

/// Reading a subordinate-id file failed.
#[derive(Debug, thiserror::Error)]
pub enum SubidError {
    /// The file does not exist.
    #[error("{} does not exist", path.display())]
    NotFound { path: PathBuf },
    /// The file exists but could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is implausibly large.
    #[error("{} is larger than {MAX_SUBID_FILE_BYTES} bytes; it is not a subordinate id file", path.display())]
    TooLarge { path: PathBuf },
}

/// What one line is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LineKind {
    Blank,
    Comment,
    Entry(SubidEntry),
    Malformed(LineProblem),
}

/// One line: its exact bytes (terminator included, if any) and what it parsed to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Line {
    pub(crate) raw: Vec<u8>,
    pub(crate) kind: LineKind,
}

/// A parsed /etc/subuid or /etc/subgid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubidFile {
    path: PathBuf,
    pub(crate) lines: Vec<Line>,
}

impl SubidFile {
    /// Reads and parses `path`. Malformed lines do not fail the read: see
    /// [`SubidFile::diagnostics`].
    pub fn read(path: &Path) -> Result<SubidFile, SubidError> {
        let file = std::fs::File::open(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                SubidError::NotFound {
                    path: path.to_owned(),
                }
            } else {
                SubidError::Read {
                    path: path.to_owned(),
                    source,
                }
            }
        })?;
        let mut bytes = Vec::new();
        file.take(MAX_SUBID_FILE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|source| SubidError::Read {
                path: path.to_owned(),
                source,
            })?;
        if bytes.len() as u64 > MAX_SUBID_FILE_BYTES {
            return Err(SubidError::TooLarge {
                path: path.to_owned(),
            });
        }
        Ok(SubidFile::parse(path, &bytes))
    }

    /// Parses file contents; `path` is only used in diagnostics.
    pub fn parse(path: &Path, bytes: &[u8]) -> SubidFile {
        let lines = bytes
            .split_inclusive(|&b| b == b'\n')
            .enumerate()
            .map(|(i, raw)| Line {
                raw: raw.to_vec(),
                kind: parse_line(raw, i + 1),
            })
            .collect();
        SubidFile {
            path: path.to_owned(),
            lines,
        }
    }

    /// An empty file at `path` (for an editor creating it).
    pub fn empty(path: &Path) -> SubidFile {
        SubidFile {
            path: path.to_owned(),
            lines: Vec::new(),
        }
    }

    /// The file this was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every well-formed entry, enabled or disabled, in file order.
    pub fn entries(&self) -> impl Iterator<Item = &SubidEntry> {
        self.lines.iter().filter_map(|l| match &l.kind {
            LineKind::Entry(e) => Some(e),
            _ => None,
        })
    }

    /// The entries (enabled or disabled) whose owner is `user`, by name or uid.
    pub fn entries_for<'a>(&'a self, user: &'a UserRef) -> impl Iterator<Item = &'a SubidEntry> {
        self.entries().filter(move |e| user.is_owner(&e.owner))
    }

    /// One diagnostic per malformed line.
    pub fn diagnostics(&self) -> Vec<Diagnostic> {
        self.lines
            .iter()
            .enumerate()
            .filter_map(|(i, l)| match &l.kind {
                LineKind::Malformed(p) => Some(Diagnostic {
                    path: self.path.clone(),
                    line: i + 1,
                    problem: p.clone(),
                }),
                _ => None,
            })
            .collect()
    }

    /// The file's bytes, reassembled from its lines.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.lines
            .iter()
            .flat_map(|l| l.raw.iter().copied())
            .collect()
    }
}

/// Classifies one raw line (terminator included).
fn parse_line(raw: &[u8], line: usize) -> LineKind {
    let body = raw.strip_suffix(b"\n").unwrap_or(raw);
    let Ok(text) = std::str::from_utf8(body) else {
        return LineKind::Malformed(LineProblem::NotUtf8);
    };
    let trimmed = text.trim_matches([' ', '\t']);
    if trimmed.is_empty() {
        return LineKind::Blank;
    }
    if trimmed.starts_with('#') {
        return LineKind::Comment;
    }
    match parse_entry(text, line) {
        Ok(e) => LineKind::Entry(e),
        Err(p) => LineKind::Malformed(p),
    }
}

fn parse_entry(text: &str, line: usize) -> Result<SubidEntry, LineProblem> {
    let (disabled, rest) = match text.strip_prefix('!') {
        Some(r) => (true, r),
        None => (false, text),
    };
    let fields: Vec<&str> = rest.split(':').collect();
    let [owner, start, count] = fields[..] else {
        return Err(LineProblem::FieldCount(fields.len()));
    };
    if rest.contains(|c: char| c.is_whitespace()) {
        return Err(LineProblem::Whitespace);
    }
    if owner.is_empty() {
        return Err(LineProblem::EmptyOwner);
    }
    let start = parse_number("start", start)?;
    let count = parse_number("count", count)?;
    if count == 0 {
        return Err(LineProblem::ZeroCount);
    }
    let (Ok(start32), Ok(count32)) = (u32::try_from(start), u32::try_from(count)) else {
        return Err(LineProblem::PastIdSpace { start, count });
    };
    if start.saturating_add(count) > 1u64 << 32 {
        return Err(LineProblem::PastIdSpace { start, count });
    }
    Ok(SubidEntry {
        owner: owner.to_owned(),
        start: start32,
        count: count32,
        disabled,
        line,
    })
}

fn parse_number(field: &'static str, value: &str) -> Result<u64, LineProblem> {
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) && !is_plain_decimal(value)
        || value.starts_with("0x")
        || value.starts_with("0X")
    {
        return Err(LineProblem::AmbiguousNumber {
            field,
            value: value.to_owned(),
        });
    }
    if !is_plain_decimal(value) {
        return Err(LineProblem::BadNumber {
            field,
            value: value.to_owned(),
        });
    }
    // Plain decimal digits: only overflow can fail.
    value
        .parse::<u64>()
        .map_err(|_| LineProblem::NumberTooLarge {
            field,
            value: value.to_owned(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> SubidFile {
        SubidFile::parse(Path::new("/etc/subuid"), text.as_bytes())
    }

    fn problems(text: &str) -> Vec<(usize, LineProblem)> {
        parse(text)
            .diagnostics()
            .into_iter()
            .map(|d| (d.line, d.problem))
            .collect()
    }

    #[test]
    fn test_parse_entries_comments_blank_disabled() {
        let f =
            parse("# comment\n\n  \nalice:100000:65536\n!bob:165536:65536\n1001:231072:70000\n");
        let e: Vec<_> = f.entries().cloned().collect();
        assert_eq!(e.len(), 3);
        assert_eq!(
            e[0],
            SubidEntry {
                owner: "alice".into(),
                start: 100000,
                count: 65536,
                disabled: false,
                line: 4
            }
        );
        assert!(e[1].disabled && e[1].owner == "bob" && e[1].line == 5);
        assert_eq!((e[2].owner.as_str(), e[2].count), ("1001", 70000));
        assert!(f.diagnostics().is_empty());
    }

    #[test]
    fn test_malformed_lines_are_reported_and_skipped() {
        let text = "alice:100000\n\
                    bob:1:2:3\n\
                    :100000:65536\n\
                    carol: 100000:65536\n\
                    dave:abc:65536\n\
                    erin:0100000:65536\n\
                    frank:0x10:65536\n\
                    gina:100000:0\n\
                    hank:4294967295:2\n\
                    ivan:99999999999999999999999:1\n\
                    ok:1:1\n";
        let p = problems(text);
        assert_eq!(
            p,
            vec![
                (1, LineProblem::FieldCount(2)),
                (2, LineProblem::FieldCount(4)),
                (3, LineProblem::EmptyOwner),
                (4, LineProblem::Whitespace),
                (
                    5,
                    LineProblem::BadNumber {
                        field: "start",
                        value: "abc".into()
                    }
                ),
                (
                    6,
                    LineProblem::AmbiguousNumber {
                        field: "start",
                        value: "0100000".into()
                    }
                ),
                (
                    7,
                    LineProblem::AmbiguousNumber {
                        field: "start",
                        value: "0x10".into()
                    }
                ),
                (8, LineProblem::ZeroCount),
                (
                    9,
                    LineProblem::PastIdSpace {
                        start: 4294967295,
                        count: 2
                    }
                ),
                (
                    10,
                    LineProblem::NumberTooLarge {
                        field: "start",
                        value: "99999999999999999999999".into()
                    }
                ),
            ]
        );
        let f = parse(text);
        assert_eq!(f.entries().count(), 1);
    }

    #[test]
    fn test_last_id_range_is_accepted() {
        let f = parse("a:4294901760:65536\n");
        let e = f.entries().next().expect("one entry");
        assert_eq!(e.end(), 1u64 << 32);
    }

    #[test]
    fn test_not_utf8_and_crlf() {
        let mut bytes = b"a\xff:1:1\n".to_vec();
        bytes.extend_from_slice(b"b:1:1\r\n");
        let f = SubidFile::parse(Path::new("x"), &bytes);
        let p: Vec<_> = f.diagnostics().into_iter().map(|d| d.problem).collect();
        assert_eq!(p, vec![LineProblem::NotUtf8, LineProblem::Whitespace]);
    }

    #[test]
    fn test_diagnostic_names_file_and_line() {
        let d = &parse("x\n").diagnostics()[0];
        let s = d.to_string();
        assert!(s.starts_with("/etc/subuid:1: expected 3 fields"), "{s}");
    }

    #[test]
    fn test_round_trip_bytes_exact() {
        let text = "# c\r\n\nalice:1:2\nbad line\n!b:3:4"; // no final newline
        let f = parse(text);
        assert_eq!(f.to_bytes(), text.as_bytes());
    }

    #[test]
    fn test_entries_for_by_name_and_uid() {
        let f = parse("alice:1:65536\n1000:70000:65536\nbob:2:3\n01000:9:9\n");
        let u = UserRef::named("alice", 1000);
        let lines: Vec<_> = f.entries_for(&u).map(|e| e.line).collect();
        assert_eq!(lines, vec![1, 2]);
    }

    #[test]
    fn test_read_missing_and_present_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("subuid");
        assert!(matches!(
            SubidFile::read(&p),
            Err(SubidError::NotFound { .. })
        ));
        std::fs::write(&p, "a:1:2\n").expect("write");
        let f = SubidFile::read(&p).expect("read");
        assert_eq!(f.entries().count(), 1);
        assert_eq!(f.path(), p);
    }

    #[test]
    fn test_overlaps() {
        let e = SubidEntry {
            owner: "a".into(),
            start: 100,
            count: 10,
            disabled: false,
            line: 1,
        };
        assert!(e.overlaps(109, 200));
        assert!(!e.overlaps(110, 200));
        assert!(!e.overlaps(0, 100));
        assert!(e.overlaps(0, 101));
    }
}
