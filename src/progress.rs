//! Progress display for long steps (layer downloads and unpacking, squashfs writing): a bar
//! on stderr when it is a terminal and informational messages are shown; nothing otherwise
//! (logs, CI, `-q`, `SIFR_NO_PROGRESS=1`).

use std::io::{IsTerminal as _, Read};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// True if progress is shown.
pub fn enabled() -> bool {
    std::io::stderr().is_terminal()
        && log::max_level() >= log::LevelFilter::Info
        && std::env::var_os("SIFR_NO_PROGRESS").is_none_or(|v| v.is_empty() || v == "0")
}

/// One step's progress bar (or nothing).
pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    /// A byte counter for `message`, a bar when `total` is known.
    pub fn bytes(message: &str, total: Option<u64>) -> Progress {
        if !enabled() {
            return Progress { bar: None };
        }
        let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr());
        let template = if total.is_some() {
            "{msg:30!} {wide_bar} {bytes:>10}/{total_bytes:<10} {elapsed:>4}"
        } else {
            "{msg:30!} {spinner} {bytes:>10} {elapsed:>4}"
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style);
        }
        bar.set_message(message.to_string());
        bar.enable_steady_tick(Duration::from_millis(200));
        Progress { bar: Some(bar) }
    }

    /// Moves the bar to `pos` bytes (a download continuing from there).
    pub fn set_position(&self, pos: u64) {
        if let Some(b) = &self.bar {
            b.set_position(pos);
        }
    }

    /// Wraps a reader so that what is read moves the bar.
    pub fn reader<'a, R: Read + 'a>(&self, r: R) -> Box<dyn Read + 'a> {
        match &self.bar {
            Some(b) => Box::new(b.wrap_read(r)),
            None => Box::new(r),
        }
    }

    /// Follows the size of a file being written (by this or another thread) until the
    /// returned guard is dropped.
    pub fn watch_file(message: &str, path: PathBuf) -> FileWatch {
        let progress = Progress::bytes(message, None);
        let Some(bar) = progress.bar.clone() else {
            return FileWatch {
                stop: Arc::new(AtomicBool::new(true)),
                thread: None,
                _progress: progress,
            };
        };
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::Builder::new()
            .name("progress".into())
            .spawn(move || {
                while !s.load(Ordering::Relaxed) {
                    if let Ok(m) = std::fs::metadata(&path) {
                        bar.set_position(m.len());
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            })
            .ok();
        FileWatch {
            stop,
            thread,
            _progress: progress,
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

/// Stops following a file when dropped.
pub struct FileWatch {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    _progress: Progress,
}

impl Drop for FileWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
