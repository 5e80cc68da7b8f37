//! User bind specifications: `-B/--bind src[:dst[:opts]]` and `--mount type=bind,...`.
//!
//! Parsing only, with Apptainer's syntax: a `-B` value is a comma-separated list of binds
//! (`\,` escapes a comma, `\:` a colon; options after the destination are comma-separated
//! too: `/a:/b:ro,/c`), and a `--mount` value is one or more newline-separated CSV records
//! whose `type=` defaults to `bind`. Whether the source exists, and what it resolves to, is
//! checked by the planner on the host before any namespace is created.

use std::path::{Path, PathBuf};

/// One user bind mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindSpec {
    /// Host path (absolute after [`BindSpec::absolutize`]).
    pub source: PathBuf,
    /// Path inside the container (always absolute).
    pub destination: PathBuf,
    pub readonly: bool,
    /// Left out of `APPTAINER_BIND` inside the container (`--mount ...,nonested`).
    pub nonested: bool,
}

/// A bind specification that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BindError {
    #[error("empty bind specification")]
    Empty,
    #[error("bind specification {spec:?}: empty source (give src[:dest[:opts]])")]
    EmptySource { spec: String },
    #[error("bind specification {spec:?}: destination {dest:?} must be an absolute path")]
    RelativeDestination { spec: String, dest: String },
    #[error("bind specification {spec:?}: unknown option {opt:?} (expected ro or rw)")]
    UnknownOption { spec: String, opt: String },
    #[error(
        "bind specification {spec:?}: option {opt:?} (a bind from inside an image file) is \
         not supported by sifr; bind a host directory instead"
    )]
    ImageSource { spec: String, opt: String },
    #[error(
        "bind specification {spec:?}: too many ':'-separated fields (escape a ':' in a path \
         as '\\:')"
    )]
    TooManyFields { spec: String },
    #[error("mount specification {spec:?}: {what}")]
    Mount { spec: String, what: String },
}

/// Splits `s` at every `sep` not preceded by a backslash. With `unescape`, `\sep` becomes
/// `sep` in the pieces; other backslashes are kept as they are.
fn split_unescaped(s: &str, sep: char, unescape: bool) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        let cur = parts.last_mut().expect("never empty");
        if c == '\\' && chars.peek() == Some(&sep) {
            if !unescape {
                cur.push('\\');
            }
            cur.push(sep);
            chars.next();
        } else if c == sep {
            parts.push(String::new());
        } else {
            cur.push(c);
        }
    }
    parts
}

/// True for the words Apptainer takes as bind options (`ro`, `rw`, `image-src=`, `id=`).
fn is_option(word: &str) -> bool {
    matches!(word, "ro" | "rw") || word.starts_with("image-src=") || word.starts_with("id=")
}

impl BindSpec {
    /// Parses one `src[:dst[:opts]]` (Apptainer's `-B` syntax for a single bind; `\:`
    /// escapes a colon, options are separated by `,`).
    pub fn parse(spec: &str) -> Result<BindSpec, BindError> {
        let spec_trim = spec.trim();
        if spec_trim.is_empty() {
            return Err(BindError::Empty);
        }
        let fields = split_unescaped(spec_trim, ':', true);
        let (src, dst, opts) = match fields.as_slice() {
            [s] => (s.as_str(), s.as_str(), None),
            [s, d] => (s.as_str(), d.as_str(), None),
            [s, d, o] => (s.as_str(), d.as_str(), Some(o.as_str())),
            _ => {
                return Err(BindError::TooManyFields {
                    spec: spec.to_string(),
                });
            }
        };
        if src.trim().is_empty() {
            return Err(BindError::EmptySource {
                spec: spec.to_string(),
            });
        }
        let dst = if dst.is_empty() { src } else { dst };
        if !dst.starts_with('/') {
            return Err(BindError::RelativeDestination {
                spec: spec.to_string(),
                dest: dst.to_string(),
            });
        }
        let mut readonly = false;
        for opt in opts
            .into_iter()
            .flat_map(|o| o.split([',', ';']))
            .map(str::trim)
            .filter(|o| !o.is_empty())
        {
            match opt {
                "ro" => readonly = true,
                "rw" => readonly = false,
                other if is_option(other) => {
                    return Err(BindError::ImageSource {
                        spec: spec.to_string(),
                        opt: other.to_string(),
                    });
                }
                other => {
                    return Err(BindError::UnknownOption {
                        spec: spec.to_string(),
                        opt: other.to_string(),
                    });
                }
            }
        }
        Ok(BindSpec {
            source: PathBuf::from(src),
            destination: PathBuf::from(dst),
            readonly,
            nonested: false,
        })
    }

    /// Parses a `-B` value or a bind variable (`APPTAINER_BIND`, `APPTAINER_BINDPATH`): a
    /// comma-separated list of binds, as Apptainer reads it. `\,` is a comma inside a path;
    /// a word that is an option (`ro`, `rw`) after a bind that has options belongs to it
    /// (`/a:/b:ro,rw,/c` is two binds).
    pub fn parse_list(value: &str) -> Result<Vec<BindSpec>, BindError> {
        let mut groups: Vec<String> = Vec::new();
        for word in split_unescaped(value, ',', true) {
            let word = word.trim();
            if word.is_empty() {
                continue;
            }
            match groups.last_mut() {
                Some(last) if is_option(word) && split_unescaped(last, ':', false).len() == 3 => {
                    last.push(',');
                    last.push_str(word);
                }
                _ => groups.push(word.to_string()),
            }
        }
        groups.iter().map(|g| BindSpec::parse(g)).collect()
    }

    /// Parses a `--mount` value (or `APPTAINER_MOUNT`): one or more newline-separated CSV
    /// records of `key[=value]` fields, as Apptainer (and Docker) read them:
    /// `[type=bind,]source=SRC,destination=DST[,ro][,nonested]` with the aliases `src`,
    /// `dst`, `target` and `readonly`. A missing `type` means a bind.
    pub fn parse_mount(spec: &str) -> Result<Vec<BindSpec>, BindError> {
        let err = |what: String| BindError::Mount {
            spec: spec.to_string(),
            what,
        };
        let mut binds = Vec::new();
        for record in csv_records(spec).map_err(|e| err(e.to_string()))? {
            let mut source = None;
            let mut destination = None;
            let mut readonly = false;
            let mut nonested = false;
            for field in record.iter().map(|f| f.trim()).filter(|f| !f.is_empty()) {
                let (key, value) = match field.split_once('=') {
                    Some((k, v)) => (k.trim(), Some(v.trim())),
                    None => (field, None),
                };
                match (key, value) {
                    ("type", Some("bind")) => {}
                    ("type", v) => {
                        return Err(err(format!(
                            "mount type {:?} is not supported (only bind)",
                            v.unwrap_or_default()
                        )));
                    }
                    ("source" | "src", Some(v)) if !v.is_empty() => source = Some(v.to_string()),
                    ("destination" | "dst" | "target", Some(v)) if !v.is_empty() => {
                        destination = Some(v.to_string())
                    }
                    ("source" | "src" | "destination" | "dst" | "target", _) => {
                        return Err(err(format!("{key} cannot be empty")));
                    }
                    ("ro" | "readonly", None) => readonly = true,
                    ("ro" | "readonly", Some(v)) => match v {
                        "true" | "1" => readonly = true,
                        "false" | "0" => readonly = false,
                        _ => return Err(err("readonly must be true or false".into())),
                    },
                    ("nonested", None) => nonested = true,
                    ("image-src" | "id", _) => {
                        return Err(err(format!(
                            "{key}= (a bind from inside an image file) is not supported by sifr"
                        )));
                    }
                    ("bind-propagation", _) => {
                        return Err(err(
                            "bind-propagation is not supported for individual mounts".into(),
                        ));
                    }
                    _ => return Err(err(format!("invalid field {field:?}"))),
                }
            }
            let (Some(source), Some(destination)) = (source, destination) else {
                return Err(err("a mount needs a source= and a destination=".into()));
            };
            if !destination.starts_with('/') {
                return Err(err("destination must be an absolute path".into()));
            }
            binds.push(BindSpec {
                source: PathBuf::from(source),
                destination: PathBuf::from(destination),
                readonly,
                nonested,
            });
        }
        Ok(binds)
    }

    /// Makes a relative source absolute against `cwd`.
    pub fn absolutize(mut self, cwd: &Path) -> BindSpec {
        if self.source.is_relative() {
            self.source = cwd.join(&self.source);
        }
        self
    }

    /// The `src:dst[:ro]` form, for messages.
    pub fn display(&self) -> String {
        let mut s = format!("{}:{}", self.source.display(), self.destination.display());
        if self.readonly {
            s.push_str(":ro");
        }
        s
    }
}

/// Splits CSV text into records of fields: `,` between fields, newlines between records,
/// `"` quoting a field (`""` is a quote inside one). Blank lines are skipped.
fn csv_records(text: &str) -> Result<Vec<Vec<String>>, &'static str> {
    let mut records = Vec::new();
    let mut record: Vec<String> = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    let mut end_record = |record: &mut Vec<String>, field: &mut String| {
        record.push(std::mem::take(field));
        if record.iter().any(|f| !f.trim().is_empty()) {
            records.push(std::mem::take(record));
        }
        record.clear();
    };
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') if field.trim().is_empty() => {
                field.clear();
                quoted = true;
            }
            (false, ',') => record.push(std::mem::take(&mut field)),
            (false, '\n') => end_record(&mut record, &mut field),
            (false, '\r') => {}
            (false, c) => field.push(c),
        }
    }
    if quoted {
        return Err("unterminated quoted field");
    }
    end_record(&mut record, &mut field);
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bind(src: &str, dst: &str, readonly: bool) -> BindSpec {
        BindSpec {
            source: src.into(),
            destination: dst.into(),
            readonly,
            nonested: false,
        }
    }

    #[test]
    fn test_parse_forms() {
        assert_eq!(
            BindSpec::parse("/data").expect("ok"),
            bind("/data", "/data", false)
        );
        assert_eq!(
            BindSpec::parse("/a:/b:ro").expect("ok"),
            bind("/a", "/b", true)
        );
        let b = BindSpec::parse("rel/dir:/mnt:rw").expect("ok");
        assert!(!b.readonly);
        let b = b.absolutize(Path::new("/home/u"));
        assert_eq!(b.source, PathBuf::from("/home/u/rel/dir"));
        // Empty destination means "same as source".
        assert_eq!(
            BindSpec::parse("/x:").expect("ok").destination,
            PathBuf::from("/x")
        );
        // An escaped colon is part of the path.
        assert_eq!(
            BindSpec::parse("/a\\:b:/c").expect("ok"),
            bind("/a:b", "/c", false)
        );
    }

    #[test]
    fn test_parse_errors() {
        assert_eq!(BindSpec::parse(" "), Err(BindError::Empty));
        assert!(matches!(
            BindSpec::parse(":/b"),
            Err(BindError::EmptySource { .. })
        ));
        assert!(matches!(
            BindSpec::parse("/a:rel"),
            Err(BindError::RelativeDestination { .. })
        ));
        assert!(matches!(
            BindSpec::parse("/a:/b:rx"),
            Err(BindError::UnknownOption { .. })
        ));
        assert!(matches!(
            BindSpec::parse("/a:/b:image-src=/x"),
            Err(BindError::ImageSource { .. })
        ));
        assert!(matches!(
            BindSpec::parse("/a:/b:ro:x"),
            Err(BindError::TooManyFields { .. })
        ));
        // A relative source with no destination is an error: the destination is relative.
        assert!(BindSpec::parse("data").is_err());
    }

    #[test]
    fn test_parse_list_as_apptainer() {
        let l = |s: &str| BindSpec::parse_list(s).expect(s);
        assert_eq!(
            l("/a,/b:/c"),
            [bind("/a", "/a", false), bind("/b", "/c", false)]
        );
        // Options after the destination are comma-separated; the last one wins.
        assert_eq!(
            l("/a:/b:rw,ro,/c"),
            [bind("/a", "/b", true), bind("/c", "/c", false)]
        );
        // An escaped comma is part of the path, source or destination.
        assert_eq!(l("/x\\,y:/m\\,n:ro"), [bind("/x,y", "/m,n", true)]);
        // Blanks around entries and empty entries are dropped.
        assert_eq!(
            l(" /a , ,/b "),
            [bind("/a", "/a", false), bind("/b", "/b", false)]
        );
        assert!(l("").is_empty());
        // A bare option with no bind that takes options is a (bad) bind of its own.
        assert!(BindSpec::parse_list("/a:/b,ro").is_err());
    }

    #[test]
    fn test_parse_mount() {
        let m = |s: &str| BindSpec::parse_mount(s).expect(s);
        assert_eq!(
            m("type=bind,source=/opt,destination=/hostopt,ro"),
            [bind("/opt", "/hostopt", true)]
        );
        assert_eq!(m("type=bind,src=/a,dst=/b"), [bind("/a", "/b", false)]);
        // No type: a bind.
        assert_eq!(m("src=/a,target=/b,readonly"), [bind("/a", "/b", true)]);
        // Records on lines; CSV quoting for commas in paths.
        assert_eq!(
            m("src=/a,dst=/b\n\"src=/c,d\",dst=/e\n"),
            [bind("/a", "/b", false), bind("/c,d", "/e", false)]
        );
        let n = &m("src=/a,dst=/b,nonested")[0];
        assert!(n.nonested);
        for bad in [
            "type=tmpfs,dst=/b",
            "type=bind,src=/a",
            "type=bind,src=/a,dst=b",
            "type=bind,src=/a,dst=/b,bogus=1",
            "src=,dst=/b",
            "src=/a,dst=/b,bind-propagation=rshared",
            "src=/a,dst=/b,image-src=/x",
            "\"src=/a,dst=/b",
        ] {
            assert!(BindSpec::parse_mount(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn test_display() {
        let b = BindSpec::parse("/a:/b:ro").expect("ok");
        assert_eq!(b.display(), "/a:/b:ro");
    }
}
