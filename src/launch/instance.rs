//! Instances: named containers kept running in the background (`instance start|run`,
//! `instance list|stop`, `instance://NAME`). This module owns their state on disk, laid
//! out as Apptainer's under sifr's per-user directory (`~/.sifr/instances`):
//!
//! ```text
//! instances/app/HOST/USER/NAME/NAME.json    state (mode 0600; directories 0700)
//! instances/app/HOST/USER/NAME/NAME.lock    held (flock) by the instance's sifr processes
//! instances/logs/HOST/USER/NAME.out, .err   the instance's output
//! ```
//!
//! A state file is trusted only while its lock is held and both recorded processes (the
//! instance's init and the sifr process that started it) still run with the start times
//! recorded (so a reused PID is never taken for the instance); anything else is stale and
//! removed by `list`, `start` and `stop`. The start itself (a detached sifr process that
//! runs the usual launch and records the state once the payload runs) is [`start`].

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::{ForkResult, Pid, fork};
use serde::{Deserialize, Serialize};

use super::identity::HostUser;
use super::mounter::Mounter;
use super::msg::ChildMsg;
use super::planner::{LaunchPolicy, Request};
use super::start::{self, StartError};

/// Why an instance operation failed.
#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    #[error("{0:?} is not a valid instance name: use letters, digits, '.', '_' and '-' only")]
    BadName(String),
    #[error("instance {0} already exists")]
    Exists(String),
    #[error("no instance found")]
    NotFound,
    #[error("no instance found with name {0}")]
    NoSuch(String),
    #[error("cannot {what} {path}: {err}")]
    Io {
        what: &'static str,
        path: PathBuf,
        err: io::Error,
    },
    #[error("no home directory to keep instances in: set HOME")]
    NoHome,
    #[error("{0}")]
    Start(String),
    #[error(transparent)]
    Launch(#[from] StartError),
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> InstanceError + use<> {
    let path = path.to_path_buf();
    move |err| InstanceError::Io { what, path, err }
}

/// Checks an instance name as Apptainer does (`^[a-zA-Z0-9._-]+$`).
pub fn check_name(name: &str) -> Result<(), InstanceError> {
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && name != "."
        && name != "..";
    if ok {
        Ok(())
    } else {
        Err(InstanceError::BadName(name.to_string()))
    }
}

/// Where one user's instances live on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dirs {
    base: PathBuf,
    host: String,
    user: String,
}

impl Dirs {
    /// The instances under `sifr_dir` (`~/.sifr`), for `user` on `host`.
    pub fn new(sifr_dir: &Path, host: &str, user: &str) -> Dirs {
        Dirs {
            base: sifr_dir.join("instances"),
            host: host.to_string(),
            user: user.to_string(),
        }
    }

    /// The calling user's (`$HOME/.sifr`, this host's name).
    pub fn current(user: &HostUser) -> Result<Dirs, InstanceError> {
        let (sifr_dir, host) = user.sifr_dir_and_host().ok_or(InstanceError::NoHome)?;
        Ok(Dirs::new(&sifr_dir, &host, &user.name))
    }

    /// The directory holding every instance's state directory.
    pub fn app_dir(&self) -> PathBuf {
        self.base.join("app").join(&self.host).join(&self.user)
    }

    pub fn state_dir(&self, name: &str) -> PathBuf {
        self.app_dir().join(name)
    }

    pub fn state_file(&self, name: &str) -> PathBuf {
        self.state_dir(name).join(format!("{name}.json"))
    }

    pub fn lock_file(&self, name: &str) -> PathBuf {
        self.state_dir(name).join(format!("{name}.lock"))
    }

    /// The output and error logs.
    pub fn logs(&self, name: &str) -> (PathBuf, PathBuf) {
        let d = self.base.join("logs").join(&self.host).join(&self.user);
        (d.join(format!("{name}.out")), d.join(format!("{name}.err")))
    }
}

/// An instance's state file: Apptainer's fields (those `list` shows), and what sifr needs
/// to trust and join it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// The instance's init (the process `stop` signals and `instance://` joins).
    pub pid: i32,
    /// The sifr process that runs the instance (it ends last).
    pub ppid: i32,
    pub name: String,
    pub user: String,
    pub image: String,
    #[serde(default)]
    pub userns: bool,
    #[serde(default)]
    pub cgroup: bool,
    #[serde(default)]
    pub ip: String,
    #[serde(rename = "logErrPath")]
    pub log_err_path: String,
    #[serde(rename = "logOutPath")]
    pub log_out_path: String,
    /// Start times (clock ticks after boot) of `pid` and `ppid`.
    #[serde(rename = "sifrPidStart")]
    pub pid_start: u64,
    #[serde(rename = "sifrPpidStart")]
    pub ppid_start: u64,
    /// The command line that started the instance (what joining plans from).
    #[serde(rename = "sifrArgs", default)]
    pub args: Vec<String>,
}

/// What the instance code reads about processes (the real one reads /proc).
pub trait Procs {
    /// The start time of `pid` (field 22 of /proc/PID/stat), `None` when it is gone.
    fn start_time(&self, pid: i32) -> Option<u64>;
    /// The children of `pid`.
    fn children(&self, pid: i32) -> Vec<i32>;
}

/// /proc.
pub struct LiveProcs;

/// The fields of /proc/PID/stat after the command name (field 3 first).
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

impl Procs for LiveProcs {
    fn start_time(&self, pid: i32) -> Option<u64> {
        if pid <= 0 {
            return None;
        }
        let f = stat_fields(pid)?;
        // A zombie has ended (whatever reaps it may be slow to).
        if matches!(f.first().map(String::as_str), Some("Z" | "X")) {
            return None;
        }
        f.get(19)?.parse().ok()
    }

    fn children(&self, pid: i32) -> Vec<i32> {
        let Ok(dir) = fs::read_dir("/proc") else {
            return Vec::new();
        };
        let mut out: Vec<i32> = dir
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter(|&p| {
                stat_fields(p)
                    .and_then(|f| f.get(1)?.parse::<i32>().ok())
                    .is_some_and(|pp| pp == pid)
            })
            .collect();
        out.sort_unstable();
        out
    }
}

impl State {
    /// True when both recorded processes still run (same start times).
    pub fn processes_alive(&self, procs: &dyn Procs) -> bool {
        procs.start_time(self.pid) == Some(self.pid_start)
            && procs.start_time(self.ppid) == Some(self.ppid_start)
    }
}

/// Whether the instance's lock is held by a live instance (`Some(lock)` when it was free:
/// the caller now holds it). The lock (flock) belongs to the open file: every process that
/// inherited the descriptor holds it until the last one closes it; closing it is the only
/// release (no explicit unlock, which would release it for all of them).
fn try_lock(path: &Path) -> Result<Option<File>, InstanceError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path)
        .map_err(io_err("open the instance lock", path))?;
    match crate::flock::try_exclusive(&file) {
        Ok(true) => Ok(Some(file)),
        Ok(false) => Ok(None),
        Err(err) => Err(InstanceError::Io {
            what: "lock",
            path: path.to_path_buf(),
            err,
        }),
    }
}

/// Removes an instance's state directory (state file, lock, directory).
fn remove_state(dirs: &Dirs, name: &str) {
    let _ = fs::remove_file(dirs.state_file(name));
    let _ = fs::remove_file(dirs.lock_file(name));
    let _ = fs::remove_dir(dirs.state_dir(name));
}

/// The instance's state when it is live; a stale one (lock free, or processes gone or
/// replaced) is removed and `None` returned.
fn load_live(dirs: &Dirs, name: &str, procs: &dyn Procs) -> Option<State> {
    let dir = dirs.state_dir(name);
    if !dir.is_dir() {
        return None;
    }
    let state: Option<State> = fs::read(dirs.state_file(name))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let lock = match try_lock(&dirs.lock_file(name)) {
        Ok(l) => l,
        Err(e) => {
            log::debug!("{e}");
            return None;
        }
    };
    match (lock, state) {
        // Held: a live instance (or one still starting, without a state file yet).
        (None, Some(s)) if s.name == name && s.processes_alive(procs) => Some(s),
        (None, _) => None,
        // Free: nothing runs it any more.
        (Some(_held), _) => {
            log::debug!("removing the stale state of instance {name}");
            remove_state(dirs, name);
            None
        }
    }
}

/// Whether `name` matches the glob `pattern` (Apptainer's filepath.Match).
fn matches(pattern: &str, name: &str) -> bool {
    glob::Pattern::new(pattern).is_ok_and(|p| p.matches(name))
}

/// The live instances whose names match `pattern` (all with `None`), by name; stale state
/// met on the way is removed.
pub fn list(
    dirs: &Dirs,
    pattern: Option<&str>,
    procs: &dyn Procs,
) -> Result<Vec<State>, InstanceError> {
    let app = dirs.app_dir();
    let entries = match fs::read_dir(&app) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("read the instance directory", &app)(e)),
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| check_name(n).is_ok())
        .filter(|n| pattern.is_none_or(|p| matches(p, n)))
        .collect();
    names.sort();
    Ok(names
        .iter()
        .filter_map(|n| load_live(dirs, n, procs))
        .collect())
}

/// The live instance `name` (for `instance://NAME`).
pub fn find(dirs: &Dirs, name: &str, procs: &dyn Procs) -> Result<State, InstanceError> {
    check_name(name)?;
    load_live(dirs, name, procs).ok_or_else(|| InstanceError::NoSuch(name.to_string()))
}

// --- output formats ----------------------------------------------------------------------

/// Go's text/tabwriter as Apptainer configures it (padding 4, spaces): every cell but a
/// line's last is padded to its column's widest cell plus 4.
fn tabwrite(rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = Vec::new();
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(row.len().saturating_sub(1)) {
            let w = cell.chars().count();
            if widths.len() <= i {
                widths.push(w);
            } else {
                widths[i] = widths[i].max(w);
            }
        }
    }
    let mut out = String::new();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            out.push_str(cell);
            if i + 1 < row.len() {
                let pad = widths[i] + 4 - cell.chars().count();
                out.push_str(&" ".repeat(pad));
            }
        }
        out.push('\n');
    }
    out
}

/// `instance list` (with `--logs`: the log paths instead of IP and image).
pub fn format_table(states: &[State], logs: bool) -> String {
    let mut rows = Vec::new();
    if logs {
        rows.push(vec!["INSTANCE NAME".into(), "PID".into(), "LOGS".into()]);
        for s in states {
            rows.push(vec![
                s.name.clone(),
                s.pid.to_string(),
                s.log_err_path.clone(),
            ]);
            rows.push(vec![String::new(), String::new(), s.log_out_path.clone()]);
        }
    } else {
        rows.push(vec![
            "INSTANCE NAME".into(),
            "PID".into(),
            "IP".into(),
            "IMAGE".into(),
        ]);
        for s in states {
            rows.push(vec![
                s.name.clone(),
                s.pid.to_string(),
                s.ip.clone(),
                s.image.clone(),
            ]);
        }
    }
    tabwrite(&rows)
}

#[derive(Serialize)]
struct JsonInstance<'a> {
    instance: &'a str,
    pid: i32,
    img: &'a str,
    ip: &'a str,
    #[serde(rename = "logErrPath")]
    log_err_path: &'a str,
    #[serde(rename = "logOutPath")]
    log_out_path: &'a str,
}

#[derive(Serialize)]
struct JsonList<'a> {
    instances: Vec<JsonInstance<'a>>,
}

/// `instance list --json`, as Go's json.Encoder with a tab indent writes it.
pub fn format_json(states: &[State]) -> String {
    let list = JsonList {
        instances: states
            .iter()
            .map(|s| JsonInstance {
                instance: &s.name,
                pid: s.pid,
                img: &s.image,
                ip: &s.ip,
                log_err_path: &s.log_err_path,
                log_out_path: &s.log_out_path,
            })
            .collect(),
    };
    let mut out = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"\t");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    // Serializing plain strings and numbers into memory cannot fail.
    if list.serialize(&mut ser).is_err() {
        return "{\n\t\"instances\": []\n}\n".into();
    }
    let mut s = String::from_utf8_lossy(&out).into_owned();
    s.push('\n');
    s
}

// --- stats -------------------------------------------------------------------------------

/// What an instance's processes use, read from /proc at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// CPU time of the processes, in clock ticks.
    pub cpu_ticks: u64,
    /// Resident memory, summed over the processes (shared pages count once per process).
    pub rss_bytes: u64,
    /// Bytes read from and written to storage (only processes the user may inspect).
    pub read_bytes: u64,
    pub write_bytes: u64,
    pub pids: usize,
}

/// The instance's processes: its sifr process and every descendant.
fn instance_processes(procs: &dyn Procs, state: &State) -> Vec<i32> {
    let mut all = vec![state.ppid];
    let mut i = 0;
    while i < all.len() {
        let kids = procs.children(all[i]);
        all.extend(kids);
        i += 1;
    }
    all
}

/// Reads the instance's usage from /proc.
pub fn usage(state: &State) -> Usage {
    // SAFETY: sysconf reads a constant.
    let page = u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    let mut u = Usage::default();
    for pid in instance_processes(&LiveProcs, state) {
        let Some(f) = stat_fields(pid) else { continue };
        let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        u.pids += 1;
        u.cpu_ticks += num(11) + num(12);
        u.rss_bytes += num(21) * page;
        if let Ok(io) = fs::read_to_string(format!("/proc/{pid}/io")) {
            for line in io.lines() {
                let v = |p: &str| {
                    line.strip_prefix(p)
                        .and_then(|v| v.trim().parse::<u64>().ok())
                };
                if let Some(n) = v("read_bytes:") {
                    u.read_bytes += n;
                } else if let Some(n) = v("write_bytes:") {
                    u.write_bytes += n;
                }
            }
        }
    }
    u
}

/// go-units' BytesSize: binary units, four significant digits (Go's `%.4g`).
pub fn bytes_size(mut size: f64) -> String {
    const UNITS: [&str; 9] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB"];
    let mut i = 0;
    while size >= 1024.0 && i < UNITS.len() - 1 {
        size /= 1024.0;
        i += 1;
    }
    format!("{}{}", go_g4(size), UNITS[i])
}

/// Go's `%.4g` for 0 <= v < 10000.
fn go_g4(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let exp = v.abs().log10().floor() as i32;
    let decimals = usize::try_from(3 - exp).unwrap_or(0);
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// One `instance stats` table (Apptainer's columns), from two readings `seconds` apart.
pub fn format_stats(
    name: &str,
    before: &Usage,
    after: &Usage,
    seconds: f64,
    ticks_per_second: f64,
    mem_limit: u64,
) -> String {
    let cpu = after.cpu_ticks.saturating_sub(before.cpu_ticks) as f64 / ticks_per_second;
    let cpu_percent = if seconds > 0.0 {
        cpu / seconds * 100.0
    } else {
        0.0
    };
    let mem_percent = if mem_limit > 0 {
        after.rss_bytes as f64 / mem_limit as f64 * 100.0
    } else {
        0.0
    };
    tabwrite(&[
        vec![
            "INSTANCE NAME".into(),
            "CPU USAGE".into(),
            "MEM USAGE / LIMIT".into(),
            "MEM %".into(),
            "BLOCK I/O".into(),
            "PIDS".into(),
        ],
        vec![
            name.to_string(),
            format!("{cpu_percent:.2}%"),
            format!(
                "{} / {}",
                bytes_size(after.rss_bytes as f64),
                bytes_size(mem_limit as f64)
            ),
            format!("{mem_percent:.2}%"),
            format!(
                "{} / {}",
                bytes_size(after.read_bytes as f64),
                bytes_size(after.write_bytes as f64)
            ),
            after.pids.to_string(),
        ],
    ])
}

// --- stop --------------------------------------------------------------------------------

/// How to stop instances.
#[derive(Debug, Clone)]
pub struct StopRequest {
    /// A name glob; `None` with `all`.
    pub pattern: Option<String>,
    pub signal: Signal,
    pub timeout: Duration,
}

/// Stops the matching instances: `signal` to each init, SIGKILL to those still running
/// after the timeout; returns once each instance's sifr process has ended and its state
/// is gone. `info` receives Apptainer's INFO lines.
pub fn stop(
    dirs: &Dirs,
    req: &StopRequest,
    procs: &dyn Procs,
    info: &mut dyn FnMut(String),
) -> Result<(), InstanceError> {
    let found = list(dirs, req.pattern.as_deref(), procs)?;
    if found.is_empty() {
        return Err(InstanceError::NotFound);
    }
    for s in &found {
        info(format!(
            "Stopping {} instance of {} (PID={})",
            s.name, s.image, s.pid
        ));
        let _ = kill(Pid::from_raw(s.pid), req.signal);
    }
    let ended = |s: &State| procs.start_time(s.ppid) != Some(s.ppid_start);
    let deadline = Instant::now() + req.timeout;
    while Instant::now() < deadline && !found.iter().all(ended) {
        std::thread::sleep(Duration::from_millis(10));
    }
    for s in found.iter().filter(|s| !ended(s)) {
        info(format!(
            "Killing {} instance of {} (PID={}) (Timeout)",
            s.name, s.image, s.pid
        ));
        if procs.start_time(s.pid) == Some(s.pid_start) {
            let _ = kill(Pid::from_raw(s.pid), Signal::SIGKILL);
        }
    }
    // The init's end ends the instance's processes, then its sifr process, which removes
    // the state; give it a few seconds, then end it too.
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && !found.iter().all(ended) {
        std::thread::sleep(Duration::from_millis(10));
    }
    for s in found.iter().filter(|s| !ended(s)) {
        let _ = kill(Pid::from_raw(s.ppid), Signal::SIGKILL);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && !found.iter().all(ended) {
        std::thread::sleep(Duration::from_millis(10));
    }
    for s in &found {
        // Stale now (lock free): removed; still held: left to its owner.
        let _ = load_live(dirs, &s.name, procs);
    }
    Ok(())
}

// --- start -------------------------------------------------------------------------------

/// What `start` needs besides the launch request.
pub struct StartSpec {
    pub dirs: Dirs,
    pub name: String,
    /// The image as `list` shows it.
    pub image: String,
    /// The command line, for joining later.
    pub args: Vec<String>,
    /// The payload runs under an init of its own (not `--no-init`).
    pub init: bool,
    /// `--pid-file`: where to write the init's PID.
    pub pid_file: Option<PathBuf>,
}

/// Creates `dir` and its missing parents with mode 0700.
fn private_dir(dir: &Path) -> Result<(), InstanceError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_err("create the directory", dir))
}

/// Opens a log file for writing (created 0600, emptied).
fn open_log(path: &Path) -> Result<File, InstanceError> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path)
        .map_err(io_err("open the log file", path))
}

/// Writes the state file atomically (a temporary file, mode 0600, renamed into place).
fn write_state(dirs: &Dirs, state: &State) -> Result<(), String> {
    let path = dirs.state_file(&state.name);
    let tmp = path.with_extension("json.tmp");
    let bytes = serde_json::to_vec_pretty(state).map_err(|e| e.to_string())?;
    let write = || -> io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, &path)
    };
    write().map_err(|e| format!("cannot write the instance state {}: {e}", path.display()))
}

/// The instance's init among the supervisor's descendants: the supervisor (C) forks the
/// container process (D), which forks the PID namespace's PID 1 (E), which forks the
/// payload (F) unless the payload runs as PID 1 (`--no-init`). Helper processes of the
/// supervisor (fuse2fs, fuse-overlayfs) have no such descendants.
pub fn find_init(procs: &dyn Procs, supervisor: i32, init: bool) -> Option<i32> {
    for d in procs.children(supervisor) {
        for e in procs.children(d) {
            if !init {
                return Some(e);
            }
            if let Some(f) = procs.children(e).first() {
                return Some(*f);
            }
        }
    }
    None
}

/// Reads the first message the detached process sends.
fn read_first(fd: &OwnedFd) -> Result<Option<ChildMsg>, String> {
    let mut f = File::from(fd.try_clone().map_err(|e| e.to_string())?);
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    loop {
        match f.read(&mut b) {
            Ok(0) => break,
            Ok(_) if b[0] == b'\n' => break,
            Ok(_) => line.push(b[0]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.to_string()),
        }
    }
    if line.is_empty() {
        return Ok(None);
    }
    ChildMsg::decode(&line).map(Some).map_err(|e| e.to_string())
}

/// Starts instance `spec.name`: refuses a name in use, then forks a detached sifr process
/// (own session, stdin /dev/null, output to the logs) that runs the container as any start
/// does and records the state once the payload runs; returns that state, or the start's
/// failure. The detached process removes the state when the instance ends.
pub fn start(
    spec: StartSpec,
    req: &Request,
    policy: &LaunchPolicy,
    user: HostUser,
    mounter: Mounter,
) -> Result<State, InstanceError> {
    let name = spec.name.clone();
    check_name(&name)?;
    let dirs = spec.dirs.clone();
    private_dir(&dirs.state_dir(&name))?;
    let (out_path, err_path) = dirs.logs(&name);
    if let Some(d) = out_path.parent() {
        private_dir(d)?;
    }
    // The lock, held by the instance's processes for as long as they live.
    let Some(lock) = try_lock(&dirs.lock_file(&name))? else {
        return Err(InstanceError::Exists(name));
    };
    // Whatever state is left there is stale.
    let _ = fs::remove_file(dirs.state_file(&name));
    let out = open_log(&out_path)?;
    let err = open_log(&err_path)?;
    let devnull = File::open("/dev/null").map_err(io_err("open", Path::new("/dev/null")))?;
    let (ready_r, ready_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| InstanceError::Start(format!("cannot create a pipe: {e}")))?;
    // SAFETY: sifr is single-threaded here (it starts no thread before launching), so the
    // child may run arbitrary code.
    match unsafe { fork() } {
        Err(e) => Err(InstanceError::Start(format!(
            "cannot fork the instance process: {e}"
        ))),
        Ok(ForkResult::Child) => {
            drop(ready_r);
            let code = detached(
                spec, req, policy, user, mounter, &dirs, lock, out, err, devnull, ready_w,
            );
            // SAFETY: _exit ends the forked child without running the parent's exit
            // handlers (the parent's buffers are not ours to flush).
            unsafe { libc::_exit(code) }
        }
        Ok(ForkResult::Parent { .. }) => {
            drop(ready_w);
            drop(lock);
            match read_first(&ready_r).map_err(InstanceError::Start)? {
                Some(ChildMsg::Done) => {}
                Some(ChildMsg::Failed(m)) => return Err(InstanceError::Start(m)),
                _ => {
                    return Err(InstanceError::Start(format!(
                        "the instance {name} ended while starting (see {})",
                        err_path.display()
                    )));
                }
            }
            let state: State = fs::read(dirs.state_file(&name))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .ok_or_else(|| {
                    InstanceError::Start(format!("the instance {name} ended while starting"))
                })?;
            Ok(state)
        }
    }
}

/// The detached instance process: runs the container; returns its exit status.
#[allow(clippy::too_many_arguments)]
fn detached(
    spec: StartSpec,
    req: &Request,
    policy: &LaunchPolicy,
    user: HostUser,
    mounter: Mounter,
    dirs: &Dirs,
    lock: File,
    out: File,
    err: File,
    devnull: File,
    ready: OwnedFd,
) -> i32 {
    // Its own session: no controlling terminal, no SIGHUP when the starting shell ends.
    let _ = nix::unistd::setsid();
    for (from, to) in [(devnull.as_fd(), 0), (out.as_fd(), 1), (err.as_fd(), 2)] {
        // SAFETY: dup2 onto the standard descriptors of this single-threaded process.
        if unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&from), to) } < 0 {
            ChildMsg::Failed(format!(
                "cannot redirect the instance's output: {}",
                io::Error::last_os_error()
            ))
            .send(&ready);
            return 255;
        }
    }
    drop((out, err, devnull));
    let (out_path, err_path) = dirs.logs(&spec.name);
    let me = std::process::id() as i32;
    let template = State {
        pid: 0,
        ppid: me,
        name: spec.name.clone(),
        user: user.name.clone(),
        image: spec.image.clone(),
        userns: true,
        cgroup: false,
        ip: String::new(),
        log_err_path: err_path.display().to_string(),
        log_out_path: out_path.display().to_string(),
        pid_start: 0,
        ppid_start: LiveProcs.start_time(me).unwrap_or(0),
        args: spec.args.clone(),
    };
    let ready_up = ready.try_clone();
    let dirs_up = dirs.clone();
    let init = spec.init;
    let pid_file = spec.pid_file.clone();
    let on_up: super::process::OnUp = Box::new(move |supervisor: Pid| {
        let pid = find_init(&LiveProcs, supervisor.as_raw(), init)
            .ok_or_else(|| "cannot find the instance's init process".to_string())?;
        let state = State {
            pid,
            pid_start: LiveProcs
                .start_time(pid)
                .ok_or_else(|| "the instance's init ended while starting".to_string())?,
            ..template
        };
        if let Some(p) = &pid_file {
            fs::write(p, format!("{pid}\n"))
                .map_err(|e| format!("cannot write the pid file {}: {e}", p.display()))?;
        }
        write_state(&dirs_up, &state)?;
        if let Ok(r) = &ready_up {
            ChildMsg::Done.send(r);
        }
        Ok(())
    });
    let result = start::start_reporting(req, policy, user, mounter, Some(on_up));
    let code = match result {
        Ok(outcome) => match outcome {
            super::process::Outcome::Exited(c) => c,
            super::process::Outcome::Signaled(s) => 128 + s,
        },
        Err(e) => {
            ChildMsg::Failed(e.to_string()).send(&ready);
            eprintln!("FATAL:   {e}");
            255
        }
    };
    drop(ready);
    remove_state(dirs, &spec.name);
    drop(lock);
    code
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct FakeProcs {
        start: HashMap<i32, u64>,
        children: HashMap<i32, Vec<i32>>,
    }

    impl Procs for FakeProcs {
        fn start_time(&self, pid: i32) -> Option<u64> {
            self.start.get(&pid).copied()
        }
        fn children(&self, pid: i32) -> Vec<i32> {
            self.children.get(&pid).cloned().unwrap_or_default()
        }
    }

    fn state(name: &str) -> State {
        State {
            pid: 10,
            ppid: 5,
            name: name.into(),
            user: "u".into(),
            image: "/img.sif".into(),
            userns: true,
            cgroup: false,
            ip: String::new(),
            log_err_path: format!("/l/{name}.err"),
            log_out_path: format!("/l/{name}.out"),
            pid_start: 100,
            ppid_start: 50,
            args: vec![],
        }
    }

    fn procs(pairs: &[(i32, u64)]) -> FakeProcs {
        FakeProcs {
            start: pairs.iter().copied().collect(),
            children: HashMap::new(),
        }
    }

    #[test]
    fn test_names_as_apptainer() {
        for ok in ["a", "web-1", "x.y_z"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a/b", "a b", "..", "é", "*"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn test_layout_as_apptainer() {
        let d = Dirs::new(Path::new("/h/.sifr"), "host", "alice");
        assert_eq!(
            d.state_file("web"),
            Path::new("/h/.sifr/instances/app/host/alice/web/web.json")
        );
        assert_eq!(
            d.logs("web"),
            (
                PathBuf::from("/h/.sifr/instances/logs/host/alice/web.out"),
                PathBuf::from("/h/.sifr/instances/logs/host/alice/web.err")
            )
        );
    }

    #[test]
    fn test_alive_needs_both_processes_with_their_start_times() {
        let s = state("a");
        assert!(s.processes_alive(&procs(&[(10, 100), (5, 50)])));
        // The init's PID reused by another process: stale.
        assert!(!s.processes_alive(&procs(&[(10, 999), (5, 50)])));
        // The init gone.
        assert!(!s.processes_alive(&procs(&[(5, 50)])));
        // The sifr process gone.
        assert!(!s.processes_alive(&procs(&[(10, 100)])));
    }

    #[test]
    fn test_stale_state_is_removed_and_live_state_kept() {
        let tmp = tempfile::tempdir().expect("test");
        let dirs = Dirs::new(tmp.path(), "h", "u");
        let live = procs(&[(10, 100), (5, 50)]);
        // A state whose lock nobody holds: stale, removed.
        private_dir(&dirs.state_dir("gone")).expect("test");
        write_state(&dirs, &state("gone")).expect("test");
        assert!(list(&dirs, None, &live).expect("test").is_empty());
        assert!(!dirs.state_dir("gone").exists());
        // Held lock and live processes: listed, then filtered by glob.
        private_dir(&dirs.state_dir("web")).expect("test");
        let _held = try_lock(&dirs.lock_file("web"))
            .expect("test")
            .expect("test");
        write_state(&dirs, &state("web")).expect("test");
        assert_eq!(list(&dirs, None, &live).expect("test"), vec![state("web")]);
        assert_eq!(list(&dirs, Some("w*"), &live).expect("test").len(), 1);
        assert!(list(&dirs, Some("x*"), &live).expect("test").is_empty());
        // Held lock but the init's PID reused: not listed, not removed (its owner does).
        let reused = procs(&[(10, 7), (5, 50)]);
        assert!(list(&dirs, None, &reused).expect("test").is_empty());
        assert!(dirs.state_file("web").exists());
        assert!(matches!(
            find(&dirs, "web", &reused),
            Err(InstanceError::NoSuch(_))
        ));
        assert_eq!(find(&dirs, "web", &live).expect("test").pid, 10);
    }

    #[test]
    fn test_state_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().expect("test");
        let dirs = Dirs::new(tmp.path(), "h", "u");
        private_dir(&dirs.state_dir("a")).expect("test");
        write_state(&dirs, &state("a")).expect("test");
        let mode = |p: &Path| fs::metadata(p).expect("test").permissions().mode() & 0o777;
        assert_eq!(mode(&dirs.state_file("a")), 0o600);
        assert_eq!(mode(&dirs.state_dir("a")), 0o700);
        assert_eq!(mode(&dirs.app_dir()), 0o700);
    }

    #[test]
    fn test_table_as_go_tabwriter() {
        assert_eq!(
            format_table(&[], false),
            "INSTANCE NAME    PID    IP    IMAGE\n"
        );
        assert_eq!(format_table(&[], true), "INSTANCE NAME    PID    LOGS\n");
        let mut s = state("web");
        s.pid = 12345;
        assert_eq!(
            format_table(&[s.clone()], false),
            "INSTANCE NAME    PID      IP    IMAGE\n\
             web              12345          /img.sif\n"
        );
        assert_eq!(
            format_table(&[s], true),
            "INSTANCE NAME    PID      LOGS\n\
             web              12345    /l/web.err\n\
             \x20                         /l/web.out\n"
        );
    }

    #[test]
    fn test_json_as_go_encoder() {
        assert_eq!(format_json(&[]), "{\n\t\"instances\": []\n}\n");
        assert_eq!(
            format_json(&[state("web")]),
            "{\n\t\"instances\": [\n\t\t{\n\t\t\t\"instance\": \"web\",\n\t\t\t\"pid\": 10,\n\
             \t\t\t\"img\": \"/img.sif\",\n\t\t\t\"ip\": \"\",\n\
             \t\t\t\"logErrPath\": \"/l/web.err\",\n\t\t\t\"logOutPath\": \"/l/web.out\"\n\
             \t\t}\n\t]\n}\n"
        );
    }

    #[test]
    fn test_bytes_size_as_go_units() {
        assert_eq!(bytes_size(0.0), "0B");
        assert_eq!(bytes_size(512.0), "512B");
        assert_eq!(bytes_size(1536.0), "1.5KiB");
        assert_eq!(bytes_size(10.0 * 1024.0 * 1024.0), "10MiB");
        assert_eq!(bytes_size(1234.5678 * 1024.0 * 1024.0 * 1024.0), "1.206TiB");
        assert_eq!(bytes_size(123.456 * 1024.0), "123.5KiB");
    }

    #[test]
    fn test_stats_table() {
        let before = Usage {
            cpu_ticks: 100,
            ..Usage::default()
        };
        let after = Usage {
            cpu_ticks: 150,
            rss_bytes: 2 * 1024 * 1024,
            read_bytes: 0,
            write_bytes: 4096,
            pids: 5,
        };
        assert_eq!(
            format_stats("web", &before, &after, 1.0, 100.0, 8 * 1024 * 1024),
            "INSTANCE NAME    CPU USAGE    MEM USAGE / LIMIT    MEM %     BLOCK I/O    PIDS\n\
             web              50.00%       2MiB / 8MiB          25.00%    0B / 4KiB    5\n"
        );
    }

    #[test]
    fn test_instance_processes_are_the_sifr_process_and_its_descendants() {
        let p = FakeProcs {
            start: HashMap::new(),
            children: [(5, vec![6]), (6, vec![7, 8]), (8, vec![9])]
                .into_iter()
                .collect(),
        };
        assert_eq!(instance_processes(&p, &state("a")), vec![5, 6, 7, 8, 9]);
    }

    #[test]
    fn test_init_is_found_below_the_supervisor() {
        let p = FakeProcs {
            start: HashMap::new(),
            // C=1: a helper (2, no children) and D=3; D → E=4 → F=5.
            children: [(1, vec![2, 3]), (3, vec![4]), (4, vec![5])]
                .into_iter()
                .collect(),
        };
        assert_eq!(find_init(&p, 1, true), Some(5));
        assert_eq!(find_init(&p, 1, false), Some(4));
        assert_eq!(find_init(&p, 9, true), None);
    }
}
