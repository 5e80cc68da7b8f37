//! Site configuration: `sifr.conf` and the other admin files, parsed into typed values.
//!
//! # Where each file comes from (first match wins)
//!
//! 1. For `sifr.conf` only: `-c/--config FILE` (or `SIFR_CONFIG`). FILE replaces the
//!    installed `sifr.conf` as a whole; a FILE that is missing or unreadable is an error.
//! 2. The install's configuration directory, `<prefix>/etc/sifr/`, where `<prefix>` is the
//!    directory above the one holding the running binary (`/proc/self/exe`), so an install
//!    can be moved as a unit. For the distribution prefix `/usr` it is `/etc/sifr`.
//! 3. The default compiled into the binary from the repository's `etc/` (the same text that
//!    is installed), used when the file does not exist there.
//!
//! A file that exists but cannot be read (permissions, I/O error, not UTF-8, too large) is an
//! error, never a silent fall back to the built-in default: the site's policy must not vanish
//! because of a permission slip.
//!
//! # Inside sifr.conf
//!
//! A directive left out keeps its documented default, except the list directives
//! (`bind path`, `limit container *`, `allow net *`, `allow netns paths`): a file that does
//! not list them has none, as in Apptainer. So `Config::default()` (no file at all) binds
//! `/etc/localtime` and `/etc/hosts`, and so does the shipped file, which lists them.
//!
//! Every value records where it came from (file and line, or default); `Config::describe`
//! renders that for `--debug`.
//!
//! # Modules
//!
//! - [`paths`]: the install layout and reading a file or its built-in default.
//! - [`directives`]: the table of sifr.conf directives and their value types.
//! - [`conf`]: the `Config` struct, its line parser and loader.
//! - [`policy`]: what the launch code asks of `Config`: may this image run, where is program X.
//! - [`nvliblist`], [`capability`], [`cgroups`], [`ecl`], [`seccomp`]: the other admin files,
//!   parsed and validated (enforcement lives in the launch code).

pub mod capability;
pub mod cgroups;
pub mod conf;
pub mod directives;
pub mod ecl;
pub mod nvliblist;
pub mod paths;
pub mod policy;
pub mod seccomp;

use std::fmt;
use std::io;
use std::path::PathBuf;

pub use capability::CapabilityConfig;
pub use cgroups::CgroupsConfig;
pub use conf::{Config, DirectiveError};
pub use ecl::EclConfig;
pub use nvliblist::GpuLibList;
pub use paths::{SystemFile, SystemPaths};
pub use policy::{BinaryError, ContainerKind, PolicyError};
pub use seccomp::SeccompProfile;

/// Where a configuration text came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A file on disk.
    File(PathBuf),
    /// The default compiled into the binary; the name is the file's name in `etc/sifr/`.
    BuiltIn(&'static str),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::File(p) => write!(f, "{}", p.display()),
            Source::BuiltIn(name) => write!(f, "built-in {name}"),
        }
    }
}

/// A parsed admin file together with where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded<T> {
    pub value: T,
    pub source: Source,
}

/// Everything that can go wrong while finding, reading or parsing a configuration file.
///
/// Each message is one line naming the file (and the line or field when known).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot locate the sifr installation (reading /proc/self/exe): {cause}")]
    Locate { cause: io::Error },

    #[error("cannot read {}: {cause}", path.display())]
    Read { path: PathBuf, cause: io::Error },

    #[error("{} is larger than {limit} bytes; is it the right file?", path.display())]
    TooLarge { path: PathBuf, limit: u64 },

    /// A bad line in sifr.conf.
    #[error("{origin}:{line}: {error}")]
    Directive {
        origin: Source,
        line: usize,
        error: DirectiveError,
    },

    /// A syntax or value error at a known line of a TOML, JSON or list file.
    #[error("{origin}:{line}: {message}")]
    Syntax {
        origin: Source,
        line: usize,
        message: String,
    },

    /// A value that parsed but breaks a rule spanning several fields.
    #[error("{origin}: {field}: {message}")]
    Invalid {
        origin: Source,
        field: String,
        message: String,
    },
}

/// Converts raw bytes to text, reporting the line of the first invalid byte.
pub(crate) fn utf8_text(bytes: Vec<u8>, origin: &Source) -> Result<String, ConfigError> {
    String::from_utf8(bytes).map_err(|e| {
        let valid = e.utf8_error().valid_up_to();
        let line = line_of(e.as_bytes(), valid);
        ConfigError::Syntax {
            origin: origin.clone(),
            line,
            message: "not valid UTF-8 text".to_string(),
        }
    })
}

/// The 1-based line number holding byte `offset` of `text`.
pub(crate) fn line_of(text: &[u8], offset: usize) -> usize {
    let end = offset.min(text.len());
    text[..end].iter().filter(|&&b| b == b'\n').count() + 1
}

/// Turns a TOML deserialization error into a one-line error with the line number.
pub(crate) fn toml_error(text: &str, origin: &Source, e: &toml::de::Error) -> ConfigError {
    let line = e
        .span()
        .map(|s| line_of(text.as_bytes(), s.start))
        .unwrap_or(1);
    ConfigError::Syntax {
        origin: origin.clone(),
        line,
        message: one_line(e.message()),
    }
}

/// Turns a JSON deserialization error into a one-line error with the line number.
pub(crate) fn json_error(origin: &Source, e: &serde_json::Error) -> ConfigError {
    // serde_json appends " at line L column C"; the line goes in front instead.
    let full = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    let message = full.strip_suffix(&suffix).unwrap_or(&full);
    ConfigError::Syntax {
        origin: origin.clone(),
        line: e.line().max(1),
        message: one_line(message),
    }
}

/// True when `path` is absolute and in canonical form: no `.` or `..` parts, no doubled or
/// trailing `/` (`/` itself is fine). Checked on the text: `Path::components` hides `.`.
pub(crate) fn is_clean_absolute(path: &std::path::Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    if bytes == b"/" {
        return true;
    }
    match bytes.strip_prefix(b"/") {
        Some(rest) => rest
            .split(|&b| b == b'/')
            .all(|part| !part.is_empty() && part != b"." && part != b".."),
        None => false,
    }
}

/// Collapses a possibly multi-line message onto one line.
pub(crate) fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_source_display() {
        assert_eq!(
            Source::File(PathBuf::from("/opt/sifr/etc/sifr/sifr.conf")).to_string(),
            "/opt/sifr/etc/sifr/sifr.conf"
        );
        assert_eq!(
            Source::BuiltIn("sifr.conf").to_string(),
            "built-in sifr.conf"
        );
    }

    #[test]
    fn test_line_of() {
        assert_eq!(line_of(b"a\nb\nc", 0), 1);
        assert_eq!(line_of(b"a\nb\nc", 2), 2);
        assert_eq!(line_of(b"a\nb\nc", 4), 3);
        assert_eq!(line_of(b"a\nb\nc", 99), 3);
    }

    #[test]
    fn test_utf8_error_names_line() {
        let origin = Source::BuiltIn("x");
        let err = utf8_text(b"ok\nstill ok\nbad \xff here\n".to_vec(), &origin)
            .expect_err("must be refused");
        assert_eq!(err.to_string(), "built-in x:3: not valid UTF-8 text");
    }

    #[test]
    fn test_is_clean_absolute() {
        use std::path::Path;
        for good in ["/", "/a", "/a/b.sif", "/a/.hidden"] {
            assert!(is_clean_absolute(Path::new(good)), "{good}");
        }
        for bad in [
            "", "a", "./a", "/a/./b", "/a/../b", "/a/", "/a//b", "//a", "/..",
        ] {
            assert!(!is_clean_absolute(Path::new(bad)), "{bad}");
        }
    }

    #[test]
    fn test_one_line() {
        assert_eq!(one_line("a\n  b\tc "), "a b c");
    }
}
