//! End-to-end tests of instances (`instance start|run|list|stop`, `exec instance://NAME`),
//! run as the unprivileged test user (CI runs this binary as `sifrtest`, with subordinate
//! ids, and as `sifrnosub`, root-mapped fakeroot). Each test keeps its instances under a
//! HOME of its own, so its `list` and `stop --all` see only them.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::*;

fn busybox() -> PathBuf {
    sif_fixture("busybox_amd64.sif")
}

/// A HOME of the test's own, and a host directory the instances bind at /data.
struct Env {
    home: tempfile::TempDir,
    data: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        require_unprivileged();
        let env = Env {
            home: tempdir(),
            data: tempdir(),
        };
        // The start script every test uses: its arguments, its output on both streams, its
        // PID (in the instance's PID namespace) in the instance's private /tmp, then it
        // waits; SIGHUP (trapped before the first output) makes it leave a mark in /data
        // and end.
        let script = env.data.path().join("start.sh");
        std::fs::write(
            &script,
            "#!/bin/sh\n\
             trap 'echo got-hup > /data/hup; exit 0' HUP\n\
             echo \"out $*\"\n\
             echo \"err $*\" >&2\n\
             echo $$ > /tmp/pid\n\
             echo \"$*\" > /tmp/args\n\
             while :; do sleep 1; done\n",
        )
        .expect("write start.sh");
        set_mode(&script, 0o755);
        env
    }

    fn sifr<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        Command::new(sifr_bin())
            .args(args)
            .env("HOME", self.home.path())
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run sifr")
    }

    /// `instance start` with the test's start script, the data directory and a private
    /// /tmp (`--contain`), then `extra` flags, the image, the name and `args`.
    fn start(&self, extra: &[&str], name: &str, args: &[&str]) -> Output {
        let script = self.data.path().join("start.sh");
        let mut a: Vec<String> = vec![
            "instance".into(),
            "start".into(),
            "--contain".into(),
            "-B".into(),
            format!("{}:/.singularity.d/startscript", script.display()),
            "-B".into(),
            format!("{}:/data", self.data.path().display()),
        ];
        a.extend(extra.iter().map(|s| s.to_string()));
        a.push(busybox().display().to_string());
        a.push(name.into());
        a.extend(args.iter().map(|s| s.to_string()));
        self.sifr(&a)
    }

    fn list_json(&self) -> serde_json::Value {
        let out = self.sifr(["instance", "list", "--json"]);
        serde_json::from_str(&ok(&out)).expect("instance list --json is JSON")
    }

    /// The (pid, ppid) recorded for `name`.
    fn state(&self, name: &str) -> (i32, i32) {
        let app = self.home.path().join(".sifr/instances/app");
        let host = only_entry(&app);
        let file = host
            .join(user_name())
            .join(name)
            .join(format!("{name}.json"));
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&file).expect("read state")).expect("json");
        (
            v["pid"].as_i64().expect("pid") as i32,
            v["ppid"].as_i64().expect("ppid") as i32,
        )
    }

    /// Waits until the start script of `name` has written its output (it runs in the
    /// background once the instance is up).
    fn wait_script(&self, name: &str) {
        let log = walk(&self.instances_dir().join("logs"))
            .into_iter()
            .find(|p| p.ends_with(format!("{name}.out")))
            .expect("the output log");
        let deadline = Instant::now() + Duration::from_secs(5);
        while !std::fs::read_to_string(&log)
            .unwrap_or_default()
            .starts_with("out")
        {
            assert!(Instant::now() < deadline, "{}", log.display());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn instances_dir(&self) -> PathBuf {
        self.home.path().join(".sifr/instances")
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // Whatever a failed test left running.
        let _ = self.sifr(["instance", "stop", "--all", "--force"]);
    }
}

fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).expect("stat").permissions().mode() & 0o777
}

fn only_entry(dir: &Path) -> PathBuf {
    let mut e: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(e.len(), 1, "{}: {e:?}", dir.display());
    e.remove(0)
}

/// Fields of /proc/PID/stat after the command name (state first); `None` once gone.
fn stat(pid: i32) -> Option<Vec<String>> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = s.rsplit_once(')')?.1;
    let f: Vec<String> = rest.split_whitespace().map(str::to_string).collect();
    (f.first().map(String::as_str) != Some("Z")).then_some(f)
}

fn alive(pid: i32) -> bool {
    stat(pid).is_some()
}

fn wait_gone(pid: i32, within: Duration) {
    let deadline = Instant::now() + within;
    while alive(pid) {
        assert!(Instant::now() < deadline, "process {pid} still running");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Nothing of the instance is left: its processes (the whole session of its sifr process),
/// its state directory.
fn assert_nothing_left(env: &Env, name: &str, pid: i32, ppid: i32) {
    wait_gone(pid, Duration::from_secs(5));
    wait_gone(ppid, Duration::from_secs(5));
    assert_session_empty(ppid);
    let app = env.instances_dir().join("app");
    let left: Vec<_> = walk(&app)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(&format!("/{name}")))
        .collect();
    assert!(left.is_empty(), "state left behind: {left:?}");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            out.push(e.path());
            if e.path().is_dir() {
                out.extend(walk(&e.path()));
            }
        }
    }
    out
}

#[test]
fn test_start_list_join_logs_and_stop() {
    let env = Env::new();
    // Arguments after the name are the script's, even those that look like flags.
    let out = env.start(&[], "web", &["a", "--b"]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("instance started successfully"),
        "{out:?}"
    );
    let (pid, ppid) = env.state("web");

    // Detached: the instance runs in a session of its own, after `start` has returned.
    let sid = |p: i32| stat(p).and_then(|f| f[3].parse::<i32>().ok());
    assert!(alive(pid) && alive(ppid));
    assert_eq!(
        sid(ppid),
        Some(ppid),
        "the instance's sifr leads its own session"
    );
    assert_ne!(sid(ppid), sid(std::process::id() as i32));

    // list: Apptainer's table and JSON, with the real PID and image.
    let table = ok(&env.sifr(["instance", "list"]));
    let mut lines = table.lines();
    assert_eq!(
        lines
            .next()
            .map(|l| l.split_whitespace().collect::<Vec<_>>()),
        Some(vec!["INSTANCE", "NAME", "PID", "IP", "IMAGE"])
    );
    let row: Vec<&str> = lines.next().expect("a row").split_whitespace().collect();
    assert_eq!(
        row,
        vec![
            "web",
            pid.to_string().as_str(),
            busybox().to_str().expect("utf-8")
        ]
    );
    let json = env.list_json();
    let list = json["instances"].as_array().expect("instances");
    assert_eq!(list.len(), 1, "{json}");
    assert_eq!(list[0]["instance"], "web");
    assert_eq!(list[0]["pid"].as_i64(), Some(pid as i64));
    assert_eq!(list[0]["img"], busybox().to_str().expect("utf-8"));
    assert_eq!(ok(&env.sifr(["instance", "list", "w*"])).lines().count(), 2);
    assert_eq!(ok(&env.sifr(["instance", "list", "x*"])).lines().count(), 1);

    // Logs: the start script's output, in private files.
    let err_log = PathBuf::from(list[0]["logErrPath"].as_str().expect("err path"));
    let out_log = PathBuf::from(list[0]["logOutPath"].as_str().expect("out path"));
    assert!(err_log.starts_with(env.instances_dir().join("logs")));
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::fs::read_to_string(&out_log).unwrap_or_default() != "out a --b\n" {
        assert!(Instant::now() < deadline, "{}", out_log.display());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        std::fs::read_to_string(&err_log).expect("err log"),
        "err a --b\n"
    );
    assert_eq!(mode(&err_log), 0o600);
    assert_eq!(mode(&out_log), 0o600);
    let state_dir = env
        .instances_dir()
        .join("app")
        .join(only_entry(&env.instances_dir().join("app")))
        .join(user_name())
        .join("web");
    assert_eq!(mode(&state_dir), 0o700);
    assert_eq!(mode(&state_dir.join("web.json")), 0o600);

    // Joining: the instance's private /tmp, and its PID namespace (the start script's PID
    // there is alive, and PID 1 is the instance's).
    let out = env.sifr([
        "exec",
        "instance://web",
        "sh",
        "-c",
        "cat /tmp/args; kill -0 $(cat /tmp/pid) && echo alive; echo $APPTAINER_INSTANCE",
    ]);
    assert_eq!(ok(&out), "a --b\nalive\nweb\n");
    // No warning for the flags a join uses; one for those it cannot (the instance keeps
    // its own binds, namespaces, ...), and the command still runs.
    let out = env.sifr([
        "exec",
        "--env",
        "X=1",
        "instance://web",
        "sh",
        "-c",
        "echo $X",
    ]);
    assert_eq!(ok(&out), "1\n");
    assert!(out.stderr.is_empty(), "{out:?}");
    let out = env.sifr(["exec", "-B", "/etc:/mnt/etc", "instance://web", "true"]);
    assert!(out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("joining instance web: only --env")
            && err.contains("the other flags given are ignored")
            && err.lines().count() == 1,
        "{err}"
    );
    // The exit status of the joined command is sifr's.
    let out = env.sifr(["exec", "instance://web", "sh", "-c", "exit 7"]);
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    // The joining process is the user, without capabilities, under no_new_privs.
    let out = env.sifr([
        "exec",
        "instance://web",
        "sh",
        "-c",
        "id -u; grep -E '^(CapEff|NoNewPrivs)' /proc/self/status",
    ]);
    let text = ok(&out);
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() };
    assert!(text.starts_with(&format!("{uid}\n")), "{text}");
    assert!(text.contains("CapEff:\t0000000000000000"), "{text}");
    assert!(text.contains("NoNewPrivs:\t1"), "{text}");

    // A second instance of the same name is refused in one line.
    let dup = env.start(&[], "web", &[]);
    assert_eq!(dup.status.code(), Some(255), "{dup:?}");
    assert_one_line_error(&dup, "instance web already exists");
    assert!(alive(pid));

    // stop: Apptainer's message, then nothing left.
    let out = env.sifr(["instance", "stop", "web"]);
    assert!(out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "INFO:    Stopping web instance of {} (PID={pid})",
            busybox().display()
        )),
        "{err}"
    );
    assert_nothing_left(&env, "web", pid, ppid);
    assert_eq!(env.list_json()["instances"], serde_json::json!([]));
    let gone = env.sifr(["exec", "instance://web", "true"]);
    assert_eq!(gone.status.code(), Some(255));
    assert_one_line_error(&gone, "no instance found with name web");
}

#[test]
fn test_stop_signal_timeout_and_all() {
    let env = Env::new();
    // --signal: the start script's trap runs.
    assert!(env.start(&[], "one", &[]).status.success());
    let (pid, ppid) = env.state("one");
    env.wait_script("one");
    let out = env.sifr(["instance", "stop", "--signal", "HUP", "one"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        std::fs::read_to_string(env.data.path().join("hup")).expect("the trap ran"),
        "got-hup\n"
    );
    assert_nothing_left(&env, "one", pid, ppid);

    // A script that ignores SIGTERM is killed after --timeout.
    let stubborn = env.data.path().join("stubborn.sh");
    std::fs::write(
        &stubborn,
        "#!/bin/sh\ntrap '' TERM\necho ready > /data/ready\nexec sleep 1000\n",
    )
    .expect("write");
    set_mode(&stubborn, 0o755);
    let out = env.sifr([
        "instance".to_string(),
        "start".into(),
        "-B".into(),
        format!("{}:/.singularity.d/startscript", stubborn.display()),
        "-B".into(),
        format!("{}:/data", env.data.path().display()),
        busybox().display().to_string(),
        "slow".into(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let (pid, ppid) = env.state("slow");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !env.data.path().join("ready").exists() {
        assert!(
            Instant::now() < deadline,
            "the stubborn script did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let t = Instant::now();
    let out = env.sifr(["instance", "stop", "--timeout", "1", "slow"]);
    assert!(out.status.success(), "{out:?}");
    let took = t.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(8),
        "{took:?}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("(Timeout)"),
        "{out:?}"
    );
    assert_nothing_left(&env, "slow", pid, ppid);

    // --all stops every instance of the user.
    assert!(env.start(&[], "a1", &[]).status.success());
    assert!(env.start(&[], "a2", &[]).status.success());
    let s1 = env.state("a1");
    let s2 = env.state("a2");
    let out = env.sifr(["instance", "stop", "--all"]);
    assert!(out.status.success(), "{out:?}");
    assert_nothing_left(&env, "a1", s1.0, s1.1);
    assert_nothing_left(&env, "a2", s2.0, s2.1);
    // Nothing left to stop: Apptainer's answer.
    let out = env.sifr(["instance", "stop", "--all"]);
    assert_eq!(out.status.code(), Some(1));
    assert_one_line_error(&out, "no instance found");
}

#[test]
fn test_killed_instance_leaves_only_stale_state_that_is_cleaned() {
    let env = Env::new();
    // SIGKILL of the instance's sifr process: every process of the instance ends with it;
    // the state it could not remove is stale and removed by the next list.
    assert!(env.start(&[], "k", &[]).status.success());
    let (pid, ppid) = env.state("k");
    // SAFETY: kill(2) on a process this test started.
    assert_eq!(unsafe { libc::kill(ppid, libc::SIGKILL) }, 0);
    wait_gone(ppid, Duration::from_secs(5));
    wait_gone(pid, Duration::from_secs(5));
    assert_session_empty(ppid);
    let app = env.instances_dir().join("app");
    assert!(
        walk(&app).iter().any(|p| p.ends_with("k/k.json")),
        "the killed instance's state should still be on disk"
    );
    assert_eq!(env.list_json()["instances"], serde_json::json!([]));
    assert_nothing_left(&env, "k", pid, ppid);
    // The name is free again.
    assert!(env.start(&[], "k", &[]).status.success());
    let (pid, ppid) = env.state("k");

    // SIGKILL of the instance's init: the instance ends and its sifr process cleans up.
    // SAFETY: kill(2) on a process this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    assert_nothing_left(&env, "k", pid, ppid);
}

#[test]
fn test_fakeroot_instance_and_pid_file() {
    let env = Env::new();
    let pid_file = env.data.path().join("pidfile");
    let out = env.start(
        &[
            "--fakeroot",
            "--pid-file",
            pid_file.to_str().expect("utf-8"),
        ],
        "fr",
        &[],
    );
    assert!(out.status.success(), "{out:?}");
    let (pid, ppid) = env.state("fr");
    assert_eq!(
        std::fs::read_to_string(&pid_file).expect("pid file"),
        format!("{pid}\n")
    );
    // The joined command runs as the instance's (fake) root, with the files it made.
    env.wait_script("fr");
    let out = env.sifr(["exec", "instance://fr", "sh", "-c", "id -u; cat /tmp/args"]);
    assert_eq!(ok(&out), "0\n\n");
    let out = env.sifr(["instance", "stop", "fr"]);
    assert!(out.status.success(), "{out:?}");
    assert_nothing_left(&env, "fr", pid, ppid);
}

#[test]
fn test_instance_run_and_what_a_joined_command_sees() {
    let env = Env::new();
    // `instance run`: the runscript (busybox's runs its arguments), output in the log.
    let out = env.sifr([
        "instance".as_ref(),
        "run".as_ref(),
        busybox().as_os_str(),
        "r".as_ref(),
        "echo".as_ref(),
        "from-runscript".as_ref(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let (pid, ppid) = env.state("r");
    let log = walk(&env.instances_dir().join("logs"))
        .into_iter()
        .find(|p| p.ends_with("r.out"))
        .expect("the output log");
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::fs::read_to_string(&log).unwrap_or_default() != "from-runscript\n" {
        assert!(Instant::now() < deadline, "{}", log.display());
        std::thread::sleep(Duration::from_millis(20));
    }
    // The instance lives on after its runscript ended.
    assert!(alive(pid) && alive(ppid));
    // Inside, the joined command sees the instance's processes only: PID 1 (the one sifr
    // process of the instance there), the init, and itself; not the sifr that joined it.
    let out = env.sifr([
        "exec",
        "instance://r",
        "sh",
        "-c",
        "for p in /proc/[0-9]*; do echo \"${p#/proc/} $(cat $p/comm)\"; done",
    ]);
    let text = ok(&out);
    let sifrs: Vec<&str> = text.lines().filter(|l| l.ends_with(" sifr")).collect();
    assert_eq!(sifrs, vec!["1 sifr"], "{text}");

    // stats: Apptainer's table, from the instance's processes.
    let out = env.sifr(["instance", "stats", "--no-stream", "r"]);
    let text = ok(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].starts_with("INSTANCE NAME    CPU USAGE    MEM USAGE / LIMIT"),
        "{text}"
    );
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(row[0], "r", "{text}");
    assert!(row[1].ends_with('%') && row[5].ends_with('%'), "{text}");
    // sifr, supervisor, container process, PID 1, the init and its sleep at least.
    let pids: usize = row.last().and_then(|p| p.parse().ok()).expect("pids");
    assert!(pids >= 5, "{text}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!(
            "Stats for r instance of {} (PID={pid})",
            busybox().display()
        )),
        "{out:?}"
    );
    let out = env.sifr(["instance", "stats", "--json", "r"]);
    assert_eq!(out.status.code(), Some(255));
    assert_one_line_error(&out, "--json");

    let out = env.sifr(["instance", "stop", "r"]);
    assert!(out.status.success(), "{out:?}");
    assert_nothing_left(&env, "r", pid, ppid);
}

#[test]
fn test_no_init_instance_is_its_own_pid_1() {
    let env = Env::new();
    assert!(env.start(&["--no-init"], "ni", &[]).status.success());
    let (pid, ppid) = env.state("ni");
    env.wait_script("ni");
    // The instance's init is PID 1 of its namespace; the joined command sees no sifr.
    let out = env.sifr([
        "exec",
        "instance://ni",
        "sh",
        "-c",
        "cat /proc/1/comm; for p in /proc/[0-9]*; do cat $p/comm; done | grep -c sifr",
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "sh\n0\n", "{out:?}");
    let out = env.sifr(["instance", "stop", "ni"]);
    assert!(out.status.success(), "{out:?}");
    assert_nothing_left(&env, "ni", pid, ppid);
}

#[test]
fn test_refusals() {
    let env = Env::new();
    let out = env.sifr(["instance", "stats", "--no-stream", "x"]);
    assert_eq!(out.status.code(), Some(255));
    assert_one_line_error(&out, "no instance found");
    let out = env.start(&["--no-pid"], "np", &[]);
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    assert_one_line_error(&out, "--no-pid");
    let out = env.sifr(["exec", "instance://nothere", "true"]);
    assert_eq!(out.status.code(), Some(255));
    assert_one_line_error(&out, "no instance found with name nothere");
}
