//! Logging in the style of Apptainer's sylog: `LEVEL:   message` lines on stderr.
//!
//! Levels follow Apptainer's global flags: `-s/--silent` shows errors only, `-q/--quiet`
//! adds warnings, the default adds informational messages, `-v/--verbose` adds verbose
//! messages and `-d/--debug` everything. Successful commands print nothing at the default
//! level: informational messages are reserved for things a user must know.

use std::io::Write;

use log::{Level, LevelFilter, Log, Metadata, Record};

/// Verbosity chosen by the global flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verbosity {
    Silent,
    Quiet,
    Normal,
    Verbose,
    Debug,
}

impl Verbosity {
    fn filter(self) -> LevelFilter {
        match self {
            Verbosity::Silent => LevelFilter::Error,
            Verbosity::Quiet => LevelFilter::Warn,
            Verbosity::Normal => LevelFilter::Info,
            Verbosity::Verbose => LevelFilter::Debug,
            Verbosity::Debug => LevelFilter::Trace,
        }
    }
}

struct SyLogger {
    color: bool,
}

/// The prefix Apptainer prints for each level, padded to the same width.
fn prefix(level: Level) -> (&'static str, &'static str) {
    match level {
        Level::Error => ("ERROR:  ", "\x1b[31m"),
        Level::Warn => ("WARNING:", "\x1b[33m"),
        Level::Info => ("INFO:   ", "\x1b[34m"),
        Level::Debug => ("VERBOSE:", ""),
        Level::Trace => ("DEBUG:  ", ""),
    }
}

impl Log for SyLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        // Other crates' messages (the FUSE library logs every request) only when asked for
        // with SIFR_DEBUG_LIBS=1 on top of --debug.
        let ours = metadata.target().starts_with("sifr");
        if !ours {
            return log::max_level() >= LevelFilter::Trace
                && std::env::var_os("SIFR_DEBUG_LIBS").is_some_and(|v| v == "1");
        }
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let (p, c) = prefix(record.level());
        let mut err = std::io::stderr().lock();
        // A failing stderr cannot be reported anywhere; ignore it.
        let _ = if self.color && !c.is_empty() {
            writeln!(err, "{c}{p}\x1b[0m {}", record.args())
        } else {
            writeln!(err, "{p} {}", record.args())
        };
    }

    fn flush(&self) {}
}

/// Installs the logger once; later calls only change the level.
pub fn init(verbosity: Verbosity, color: bool) {
    static LOGGER: std::sync::OnceLock<SyLogger> = std::sync::OnceLock::new();
    let logger = LOGGER.get_or_init(|| SyLogger { color });
    // set_logger fails only if a logger is already installed, which is fine.
    let _ = log::set_logger(logger);
    log::set_max_level(verbosity.filter());
}

/// Exit status for sifr's own fatal errors (Apptainer's sylog uses 255).
pub const EXIT_FATAL: i32 = 255;

/// Prints a fatal error the way Apptainer does (`FATAL:   ...`), whatever the verbosity.
pub fn fatal(msg: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "FATAL:   {}", one_line(msg));
}

/// A fatal error is one line: line breaks and other control characters (which may come
/// from a damaged file quoted in a message) become spaces, runs of them one space.
fn one_line(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut space = false;
    for c in msg.trim_end().chars() {
        if c.is_control() {
            if !space {
                out.push(' ');
                space = true;
            }
        } else {
            out.push(c);
            space = false;
        }
    }
    out
}

/// Milliseconds since sifr started, for `--debug` timing messages.
pub fn since_start_ms() -> f64 {
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_secs_f64()
        * 1000.0
}

static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

/// Records sifr's start time (call first thing in `main`).
pub fn mark_start() {
    START.get_or_init(std::time::Instant::now);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_fatal_messages_are_one_line() {
        assert_eq!(one_line("a\nb\r\n\tc\n"), "a b c");
        assert_eq!(one_line("plain: text"), "plain: text");
    }
}
