//! Typed errors of the squashfs writer: each names the source path or the image step and the
//! cause.

use std::io;
use std::path::PathBuf;

/// Result alias of the writer.
pub type WriteResult<T> = std::result::Result<T, WriteError>;

/// An error while building a squashfs image.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The options cannot be used (bad block size, level out of range, ...).
    #[error("invalid squashfs options: {0}")]
    Options(String),
    /// The chosen compressor is left out of this build.
    #[error(
        "squashfs compressor {0} is not compiled into this build (cargo feature of sifr-squashfs)"
    )]
    CompressorDisabled(&'static str),
    /// A source file or directory could not be read.
    #[error("cannot {op} {}: {source}", path.display())]
    Source {
        /// The source path.
        path: PathBuf,
        /// What was being done ("read", "list directory", "read xattrs of", ...).
        op: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A source file changed size while the image was being built.
    #[error(
        "{} changed while the image was being built ({was} bytes when scanned, {now} when read); \
         build from a tree nothing else writes to",
        path.display()
    )]
    Changed {
        /// The source file.
        path: PathBuf,
        /// Size when the tree was scanned.
        was: u64,
        /// Size found when its data was read.
        now: u64,
    },
    /// Something in the source tree has no squashfs representation.
    #[error("{}: {what}", path.display())]
    Unsupported {
        /// The source path.
        path: PathBuf,
        /// What cannot be stored.
        what: String,
    },
    /// A squashfs limit was exceeded (ids, inodes, table sizes).
    #[error("the image would exceed a squashfs limit: {0}")]
    Limit(String),
    /// Writing the image failed.
    #[error("cannot write the squashfs image ({op}): {source}")]
    Output {
        /// Which step.
        op: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The compressor failed.
    #[error("{comp} compression failed: {reason}")]
    Compress {
        /// Compressor name.
        comp: &'static str,
        /// What the library said.
        reason: String,
    },
    /// A worker thread stopped unexpectedly.
    #[error("squashfs writer thread failed: {0}")]
    Thread(String),
}

impl WriteError {
    /// Shorthand for a `Source` error.
    pub(crate) fn source(path: impl Into<PathBuf>, op: &'static str, source: io::Error) -> Self {
        WriteError::Source {
            path: path.into(),
            op,
            source,
        }
    }

    /// Shorthand for an `Output` error.
    pub(crate) fn output(op: &'static str, source: io::Error) -> Self {
        WriteError::Output { op, source }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_messages_name_the_path_and_cause() {
        let e = WriteError::source(
            "/src/etc/shadow",
            "open",
            io::Error::from_raw_os_error(libc::EACCES),
        );
        let s = e.to_string();
        assert!(s.contains("/src/etc/shadow") && s.contains("open"), "{s}");
        assert!(s.contains("ermission denied"), "{s}");
        let e = WriteError::Changed {
            path: "/src/log".into(),
            was: 10,
            now: 5,
        };
        let s = e.to_string();
        assert!(
            s.contains("/src/log") && s.contains("10") && s.contains('5'),
            "{s}"
        );
    }
}
