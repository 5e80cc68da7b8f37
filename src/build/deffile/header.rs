//! The header of a definition-file stage: `Key: value` lines before the first section, with
//! Apptainer's rules (`pkg/build/types/parser/deffile.go`, `doHeader`):
//!
//! - keys are case-insensitive and must be known (`OtherURL<n>` takes any number `n`);
//! - blank lines and lines starting with `#` are skipped, and `#` ends the value of a line;
//! - a value ending in `\` continues on the next line (a final `\n` before the `\` becomes a
//!   newline), until a blank or comment line;
//! - values are trimmed, a continued one once joined (Apptainer trims each line; this also
//!   trims the white space a `\` kept at the end, `Key: v \` then a blank line), so a value
//!   reads the same when written back ([`super::render`]).
//!
//! Stricter than Apptainer: a key given twice is an error (Apptainer keeps the last value
//! silently), `Bootstrap` must name a known agent here rather than at build time (in any case;
//! Apptainer wants lower case), and `Stage` must be one word.

use super::error::{Problem, closest};
use super::{Ctx, DefError, Line};

/// The header keys Apptainer accepts, as its documentation spells them.
pub const KNOWN_KEYS: &[&str] = &[
    "Bootstrap",
    "From",
    "Stage",
    "IncludeCmd",
    "MirrorURL",
    "UpdateURL",
    "OSVersion",
    "Include",
    "Library",
    "Registry",
    "Namespace",
    "Product",
    "User",
    "Regcode",
    "ProductPGP",
    "RegisterURL",
    "Modules",
    "OtherURL<n>",
    "Fingerprints",
    "ConfURL",
    "Setopt",
    "Target",
    "Frontend",
    "Filename",
    "BuildArgs",
];

/// A bootstrap agent: where a stage's base root filesystem comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Agent {
    Library,
    Oras,
    Shub,
    Docker,
    DockerArchive,
    DockerDaemon,
    Oci,
    OciArchive,
    Busybox,
    Debootstrap,
    Arch,
    Localimage,
    Yum,
    Dnf,
    Zypper,
    Scratch,
    Buildkit,
}

impl Agent {
    const ALL: [Agent; 17] = [
        Agent::Library,
        Agent::Oras,
        Agent::Shub,
        Agent::Docker,
        Agent::DockerArchive,
        Agent::DockerDaemon,
        Agent::Oci,
        Agent::OciArchive,
        Agent::Busybox,
        Agent::Debootstrap,
        Agent::Arch,
        Agent::Localimage,
        Agent::Yum,
        Agent::Dnf,
        Agent::Zypper,
        Agent::Scratch,
        Agent::Buildkit,
    ];

    /// Every agent's name, as written after `Bootstrap:`.
    pub const NAMES: [&'static str; 17] = [
        "library",
        "oras",
        "shub",
        "docker",
        "docker-archive",
        "docker-daemon",
        "oci",
        "oci-archive",
        "busybox",
        "debootstrap",
        "arch",
        "localimage",
        "yum",
        "dnf",
        "zypper",
        "scratch",
        "buildkit",
    ];

    /// The name written after `Bootstrap:`.
    pub fn name(self) -> &'static str {
        let index = Agent::ALL.iter().position(|a| *a == self).unwrap_or(0);
        Agent::NAMES[index]
    }

    /// The agent called `name` (case-insensitive; Apptainer itself wants lower case).
    pub fn from_name(name: &str) -> Option<Agent> {
        let lower = name.to_ascii_lowercase();
        Agent::NAMES
            .iter()
            .position(|n| *n == lower)
            .map(|i| Agent::ALL[i])
    }
}

/// One `Key: value` of a header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderEntry {
    /// The key in lower case, as Apptainer records it (also in the
    /// `org.label-schema.usage.singularity.deffile.<key>` labels).
    pub key: String,
    /// The key as written in the file.
    pub written: String,
    /// The value, trimmed, continuation lines joined.
    pub value: String,
    /// The line the key is on.
    pub line: usize,
}

/// The header of one stage, in file order; each key appears once.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Header {
    entries: Vec<HeaderEntry>,
}

impl Header {
    /// The value of `key` (case-insensitive).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entry(key).map(|e| e.value.as_str())
    }

    /// The entry of `key` (case-insensitive).
    pub fn entry(&self, key: &str) -> Option<&HeaderEntry> {
        let key = key.to_ascii_lowercase();
        self.entries.iter().find(|e| e.key == key)
    }

    /// Every entry, in file order.
    pub fn entries(&self) -> &[HeaderEntry] {
        &self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// A parsed header and the agent its `Bootstrap:` names.
pub(crate) struct ParsedHeader {
    pub header: Header,
    pub agent: Option<Agent>,
}

/// Whether `key` (lower case) is a header key Apptainer accepts.
fn is_known(key: &str) -> bool {
    if let Some(n) = key.strip_prefix("otherurl") {
        return !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit());
    }
    KNOWN_KEYS
        .iter()
        .any(|k| !k.contains('<') && k.eq_ignore_ascii_case(key))
}

/// A key whose value continues on the next line.
struct Pending {
    written: String,
    value: String,
    line: usize,
}

/// Parses the header lines of one stage (the lines before its first section).
pub(crate) fn parse_header(lines: &[Line], ctx: &Ctx) -> Result<ParsedHeader, DefError> {
    let mut header = Header::default();
    let mut pending: Option<Pending> = None;
    for line in lines {
        let text = line.text.trim();
        if text.is_empty() || text.starts_with('#') {
            if let Some(p) = pending.take() {
                add_entry(&mut header, p, ctx)?;
            }
            continue;
        }
        // `#` ends the value, as in Apptainer (so a value cannot hold one).
        let text = text.split('#').next().unwrap_or_default();
        let mut entry = match pending.take() {
            Some(mut p) => {
                p.value.push_str(text.trim());
                p
            }
            None => {
                let Some((key, value)) = text.split_once(':') else {
                    return Err(ctx.at(
                        line.no,
                        Problem::NotHeaderLine {
                            text: text.trim().to_string(),
                        },
                    ));
                };
                Pending {
                    written: key.trim().to_string(),
                    value: value.trim().to_string(),
                    line: line.no,
                }
            }
        };
        if let Some(stripped) = entry.value.strip_suffix('\\') {
            entry.value = match stripped.strip_suffix("\\n") {
                Some(s) => format!("{s}\n"),
                None => stripped.to_string(),
            };
            pending = Some(entry);
            continue;
        }
        add_entry(&mut header, entry, ctx)?;
    }
    if let Some(p) = pending.take() {
        add_entry(&mut header, p, ctx)?;
    }
    let agent = match header.entry("bootstrap") {
        None => None,
        Some(e) if e.value.is_empty() => return Err(ctx.at(e.line, Problem::EmptyBootstrap)),
        Some(e) => match Agent::from_name(&e.value) {
            Some(agent) => Some(agent),
            None => {
                return Err(ctx.at(
                    e.line,
                    Problem::UnknownAgent {
                        agent: one_line(&e.value),
                        suggestion: closest(&e.value, &Agent::NAMES),
                    },
                ));
            }
        },
    };
    if let Some(e) = header.entry("stage")
        && (e.value.is_empty() || e.value.contains(char::is_whitespace))
    {
        return Err(ctx.at(
            e.line,
            Problem::BadStageName {
                name: one_line(&e.value),
            },
        ));
    }
    Ok(ParsedHeader { header, agent })
}

/// A value as it can appear in a one-line message (continuation lines may hold newlines).
fn one_line(value: &str) -> String {
    value.replace('\n', "\\n").replace('\r', "\\r")
}

fn add_entry(header: &mut Header, p: Pending, ctx: &Ctx) -> Result<(), DefError> {
    let key = p.written.to_ascii_lowercase();
    if !is_known(&key) {
        return Err(ctx.at(
            p.line,
            Problem::UnknownHeaderKey {
                suggestion: closest(&p.written, KNOWN_KEYS),
                key: p.written,
            },
        ));
    }
    if let Some(first) = header.entry(&key) {
        return Err(ctx.at(
            p.line,
            Problem::DuplicateHeaderKey {
                key: p.written,
                first_line: first.line,
            },
        ));
    }
    header.entries.push(HeaderEntry {
        key,
        written: p.written,
        value: p.value.trim().to_string(),
        line: p.line,
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn lines(text: &str) -> Vec<Line> {
        text.lines()
            .enumerate()
            .map(|(i, t)| Line {
                no: i + 1,
                text: t.to_string(),
            })
            .collect()
    }

    fn parse(text: &str) -> Result<ParsedHeader, DefError> {
        parse_header(
            &lines(text),
            &Ctx {
                path: Path::new("h.def"),
            },
        )
    }

    fn err(text: &str) -> String {
        match parse(text) {
            Ok(_) => panic!("{text:?} parsed"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn test_keys_case_insensitive_in_order() {
        let p = parse("# c\nBootStrap: docker   # comment\nFROM: alpine:3\n\nosversion: 9\n")
            .expect("parses");
        assert_eq!(p.agent, Some(Agent::Docker));
        let keys: Vec<_> = p.header.entries().iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["bootstrap", "from", "osversion"]);
        assert_eq!(p.header.get("From"), Some("alpine:3"));
        assert_eq!(p.header.get("OSVersion"), Some("9"));
        assert_eq!(p.header.entry("from").map(|e| e.line), Some(3));
        assert_eq!(
            p.header.entry("from").map(|e| e.written.as_str()),
            Some("FROM")
        );
        assert_eq!(p.header.get("stage"), None);
    }

    #[test]
    fn test_values_keep_colons_and_tabs_trim() {
        let p = parse("Bootstrap:\tyum\nMirrorURL:  http://x/%{OSVERSION}/os  \n").expect("ok");
        assert_eq!(p.header.get("mirrorurl"), Some("http://x/%{OSVERSION}/os"));
        assert_eq!(p.agent, Some(Agent::Yum));
    }

    #[test]
    fn test_continuation_lines() {
        let p = parse("Bootstrap: yum\nInclude: a \\\n  b\\\n c\nSetopt: x\\n\\\ny\n\nFrom: z\\\n")
            .expect("ok");
        // As in Apptainer, the space before a `\` stays and the next line is trimmed.
        assert_eq!(p.header.get("include"), Some("a bc"));
        assert_eq!(p.header.get("setopt"), Some("x\ny"));
        assert_eq!(p.header.get("from"), Some("z"));
    }

    #[test]
    fn test_continued_values_are_trimmed() {
        // Apptainer trims every value; a value kept open by `\` is trimmed once joined, so
        // it reads the same when written back on one line.
        let p = parse("Bootstrap: yum\nInclude: a \\\n\nFrom: b \\\n \\\n# c\nSetopt: x\\n\\\n")
            .expect("ok");
        assert_eq!(p.header.get("include"), Some("a"));
        assert_eq!(p.header.get("from"), Some("b"));
        assert_eq!(p.header.get("setopt"), Some("x"));
    }

    #[test]
    fn test_other_url_numbers() {
        let p = parse("Bootstrap: zypper\nOtherURL1: a\notherurl23: b\n").expect("ok");
        assert_eq!(p.header.get("OtherURL23"), Some("b"));
        assert!(err("Bootstrap: zypper\nOtherURL: a\n").contains("unknown header key `OtherURL`"));
        assert!(err("Bootstrap: zypper\nFrom1: a\n").contains("unknown header key `From1`"));
    }

    #[test]
    fn test_every_known_key_parses() {
        for key in KNOWN_KEYS {
            let key = key.replace("<n>", "7");
            let text = format!("{key}: scratch\n");
            assert!(parse(&text).is_ok(), "{key}");
        }
    }

    #[test]
    fn test_agents_round_trip() {
        for name in Agent::NAMES {
            let agent = Agent::from_name(name).expect("known");
            assert_eq!(agent.name(), name);
        }
        assert_eq!(Agent::from_name("Docker"), Some(Agent::Docker));
        assert_eq!(Agent::from_name("dockerx"), None);
    }

    #[test]
    fn test_errors() {
        assert_eq!(
            err("Bootstrap: docker\nForm: alpine\n"),
            "h.def:2: unknown header key `Form` (did you mean `From`?)"
        );
        assert!(err("Bootstrap: docker\nWhatever: x\n").contains("known keys: Bootstrap, From"));
        assert_eq!(
            err("Bootstrap: docker\nalpine\n"),
            "h.def:2: `alpine` is not a header line; header lines are `Key: value` and sections start with `%`"
        );
        assert_eq!(
            err("Bootstrap: docker\nFrom: a\nfrom: b\n"),
            "h.def:3: header key `from` is already set on line 2; give it once (Apptainer would silently keep only the last value)"
        );
        assert_eq!(
            err("Bootstrap:\n"),
            "h.def:1: `Bootstrap:` has no value; name a bootstrap agent such as docker, localimage or scratch"
        );
        assert!(
            err("Bootstrap: dokcer\n")
                .starts_with("h.def:1: unknown bootstrap agent `dokcer` (did you mean `docker`?); known agents: library, oras")
        );
        assert_eq!(
            err("Bootstrap: docker\nStage: my stage\n"),
            "h.def:2: stage name `my stage` must be one word (it is used as `%files from NAME`)"
        );
        assert!(err("Bootstrap: docker\nStage:\n").contains("stage name ``"));
        assert!(err(": x\n").contains("unknown header key ``"));
    }
}
