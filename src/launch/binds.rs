//! User bind specifications: `-B/--bind src[:dst[:opts]]` and `--mount type=bind,...`.
//!
//! Parsing only: turns the strings users pass (and `SIFR_BIND`/`APPTAINER_BIND`) into plain
//! `BindSpec` values. Whether the source exists, and what it resolves to, is checked by the
//! planner on the host before any namespace is created.

use std::path::{Path, PathBuf};

/// One user bind mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindSpec {
    /// Host path (absolute after [`BindSpec::absolutize`]).
    pub source: PathBuf,
    /// Path inside the container (always absolute).
    pub destination: PathBuf,
    pub readonly: bool,
}

/// A bind specification that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BindError {
    #[error("empty bind specification")]
    Empty,
    #[error("bind specification {spec:?}: destination {dest:?} must be an absolute path")]
    RelativeDestination { spec: String, dest: String },
    #[error("bind specification {spec:?}: unknown option {opt:?} (expected ro or rw)")]
    UnknownOption { spec: String, opt: String },
    #[error("bind specification {spec:?}: too many ':'-separated fields")]
    TooManyFields { spec: String },
    #[error("mount specification {spec:?}: {what}")]
    Mount { spec: String, what: String },
}

impl BindSpec {
    /// Parses `src[:dst[:opts]]`, Apptainer's `-B` syntax.
    pub fn parse(spec: &str) -> Result<BindSpec, BindError> {
        let spec_trim = spec.trim();
        if spec_trim.is_empty() {
            return Err(BindError::Empty);
        }
        let fields: Vec<&str> = spec_trim.split(':').collect();
        let (src, dst, opts) = match fields.as_slice() {
            [s] => (*s, *s, None),
            [s, d] => (*s, *d, None),
            [s, d, o] => (*s, *d, Some(*o)),
            _ => {
                return Err(BindError::TooManyFields {
                    spec: spec.to_string(),
                });
            }
        };
        if src.is_empty() {
            return Err(BindError::Empty);
        }
        let dst = if dst.is_empty() { src } else { dst };
        if !dst.starts_with('/') {
            return Err(BindError::RelativeDestination {
                spec: spec.to_string(),
                dest: dst.to_string(),
            });
        }
        let mut readonly = false;
        if let Some(opts) = opts {
            for opt in opts.split(';').filter(|o| !o.is_empty()) {
                match opt {
                    "ro" => readonly = true,
                    "rw" => readonly = false,
                    other => {
                        return Err(BindError::UnknownOption {
                            spec: spec.to_string(),
                            opt: other.to_string(),
                        });
                    }
                }
            }
        }
        Ok(BindSpec {
            source: PathBuf::from(src),
            destination: PathBuf::from(dst),
            readonly,
        })
    }

    /// Parses a Docker-style `--mount` specification:
    /// `type=bind,source=SRC,destination=DST[,ro|readonly]` (`src`, `dst`, `target` aliases).
    pub fn parse_mount(spec: &str) -> Result<BindSpec, BindError> {
        let err = |what: &str| BindError::Mount {
            spec: spec.to_string(),
            what: what.to_string(),
        };
        let mut kind = None;
        let mut source = None;
        let mut destination = None;
        let mut readonly = false;
        for field in spec.split(',').map(str::trim).filter(|f| !f.is_empty()) {
            let (key, value) = match field.split_once('=') {
                Some((k, v)) => (k.trim(), Some(v.trim())),
                None => (field, None),
            };
            match (key, value) {
                ("type", Some(v)) => kind = Some(v.to_string()),
                ("source" | "src", Some(v)) => source = Some(v.to_string()),
                ("destination" | "dst" | "target", Some(v)) => destination = Some(v.to_string()),
                ("ro" | "readonly", None) => readonly = true,
                ("ro" | "readonly", Some(v)) => match v {
                    "true" | "1" => readonly = true,
                    "false" | "0" => readonly = false,
                    _ => return Err(err("readonly must be true or false")),
                },
                ("bind-propagation", Some(_)) => {}
                _ => return Err(err(&format!("unknown field {field:?}"))),
            }
        }
        match kind.as_deref() {
            Some("bind") => {}
            Some(other) => {
                return Err(err(&format!("type {other:?} is not supported (only bind)")));
            }
            None => return Err(err("missing type=bind")),
        }
        let source = source.ok_or_else(|| err("missing source="))?;
        let destination = destination.ok_or_else(|| err("missing destination="))?;
        if !destination.starts_with('/') {
            return Err(err("destination must be an absolute path"));
        }
        Ok(BindSpec {
            source: PathBuf::from(source),
            destination: PathBuf::from(destination),
            readonly,
        })
    }

    /// Makes a relative source absolute against `cwd`.
    pub fn absolutize(mut self, cwd: &Path) -> BindSpec {
        if self.source.is_relative() {
            self.source = cwd.join(&self.source);
        }
        self
    }

    /// The `src:dst[:ro]` form, as `APPTAINER_BIND` shows binds inside the container.
    pub fn display(&self) -> String {
        let mut s = format!("{}:{}", self.source.display(), self.destination.display());
        if self.readonly {
            s.push_str(":ro");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_parse_forms() {
        assert_eq!(
            BindSpec::parse("/data").expect("ok"),
            BindSpec {
                source: "/data".into(),
                destination: "/data".into(),
                readonly: false
            }
        );
        let b = BindSpec::parse("/a:/b:ro").expect("ok");
        assert_eq!(
            (b.source, b.destination, b.readonly),
            ("/a".into(), "/b".into(), true)
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
    }

    #[test]
    fn test_parse_errors() {
        assert_eq!(BindSpec::parse(" "), Err(BindError::Empty));
        assert!(matches!(
            BindSpec::parse("/a:rel"),
            Err(BindError::RelativeDestination { .. })
        ));
        assert!(matches!(
            BindSpec::parse("/a:/b:rx"),
            Err(BindError::UnknownOption { .. })
        ));
        assert!(matches!(
            BindSpec::parse("/a:/b:ro:x"),
            Err(BindError::TooManyFields { .. })
        ));
        // A relative source with no destination is an error: the destination is relative.
        assert!(BindSpec::parse("data").is_err());
    }

    #[test]
    fn test_parse_mount() {
        let b = BindSpec::parse_mount("type=bind,source=/opt,destination=/hostopt,ro").expect("ok");
        assert_eq!(
            (b.source, b.destination, b.readonly),
            ("/opt".into(), "/hostopt".into(), true)
        );
        let b = BindSpec::parse_mount("type=bind,src=/a,dst=/b").expect("ok");
        assert!(!b.readonly);
        assert!(BindSpec::parse_mount("type=tmpfs,dst=/b").is_err());
        assert!(BindSpec::parse_mount("type=bind,src=/a").is_err());
        assert!(BindSpec::parse_mount("type=bind,src=/a,dst=b").is_err());
        assert!(BindSpec::parse_mount("type=bind,src=/a,dst=/b,bogus=1").is_err());
    }

    #[test]
    fn test_display() {
        let b = BindSpec::parse("/a:/b:ro").expect("ok");
        assert_eq!(b.display(), "/a:/b:ro");
    }
}
