//! End-to-end tests of the container's separation from sifr's own processes (issue 10, holes
//! 2 and 6): from inside a container, sifr (P), its supervisor (C, the FUSE server) and any
//! helper cannot be seen, traced, signalled or used to reach the host; and a SIGKILL of sifr
//! or of its supervisor leaves no process of the container running.
//!
//! The same holds for `%post` in an unprivileged (fakeroot) `sifr build`: it reaches neither
//! `sifr build`, nor the build's worker, nor the processes of the launch that runs it.
//!
//! Run as the unprivileged test user in both fakeroot modes (CI runs this binary as
//! `sifrtest`, subordinate ids, and as `sifrnosub`, root-mapped). The attacks come from a
//! small static C probe (`tests/supervisor/probe.c`) compiled here with `cc -static` and
//! bound into the busybox image.

mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Compiles the probe once per test into `dir`; `None` (skip) only outside CI.
fn probe(dir: &Path) -> Option<PathBuf> {
    // CI runs a staged copy of this binary: the source is embedded, not read from the tree.
    let c = dir.join("probe.c");
    std::fs::write(&c, include_str!("supervisor/probe.c")).expect("write probe.c");
    let out = dir.join("probe");
    let cc = match which("cc") {
        Some(cc) => cc,
        None if in_ci() => panic!("cc not found: the supervisor tests need a C compiler"),
        None => {
            eprintln!("SKIP: cc not found");
            return None;
        }
    };
    let o = run(
        &cc,
        [
            "-static".as_ref(),
            "-O1".as_ref(),
            "-o".as_ref(),
            out.as_os_str(),
            c.as_os_str(),
        ],
    );
    assert!(
        o.status.success(),
        "cc -static probe.c failed (static libc needed):\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    Some(out)
}

fn busybox() -> PathBuf {
    sif_fixture("busybox_amd64.sif")
}

/// The parent pid and the state of a process, from /proc/PID/stat.
fn ppid_state(pid: i32) -> Option<(i32, char)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some((f.get(1)?.parse().ok()?, f.first()?.chars().next()?))
}

fn all_pids() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .expect("read /proc")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// `root` and every live descendant of it.
fn descendants(root: i32) -> BTreeSet<i32> {
    let mut set = BTreeSet::from([root]);
    loop {
        let before = set.len();
        for pid in all_pids() {
            if let Some((ppid, state)) = ppid_state(pid)
                && state != 'Z'
                && set.contains(&ppid)
            {
                set.insert(pid);
            }
        }
        if set.len() == before {
            return set;
        }
    }
}

fn cmdline(pid: i32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|c| *c == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The sifr binary as its processes name it: `sifr build` starts its `%post` containers
/// through `current_exe()`, the resolved path.
fn is_sifr(argv0: Option<&String>) -> bool {
    let bin = sifr_bin();
    argv0.is_some_and(|a| {
        Path::new(a) == bin || std::fs::canonicalize(a).ok() == std::fs::canonicalize(&bin).ok()
    })
}

/// The processes of sifr itself under `root` (they never exec: their argv is sifr's).
fn sifr_processes(root: i32) -> Vec<i32> {
    descendants(root)
        .into_iter()
        .filter(|p| is_sifr(cmdline(*p).first()))
        .collect()
}

/// The sifr processes in `pids` started by `parent`.
fn children_in(pids: &[i32], parent: i32) -> Vec<i32> {
    pids.iter()
        .copied()
        .filter(|c| ppid_state(*c).is_some_and(|(pp, _)| pp == parent))
        .collect()
}

/// The supervisor of the one container running among `pids`: the child of the `sifr exec`
/// process (the one spawned by a test, or the one a build runs `%post` with).
fn supervisor(pids: &[i32]) -> i32 {
    // The processes of a launch are forks: all have the argv of `sifr exec`.
    let exec = |p: &i32| pids.contains(p) && cmdline(*p).get(1).map(String::as_str) == Some("exec");
    let launchers: Vec<i32> = pids
        .iter()
        .copied()
        .filter(|p| exec(p) && !ppid_state(*p).is_some_and(|(pp, _)| exec(&pp)))
        .collect();
    let [launcher] = launchers[..] else {
        panic!("not one `sifr exec` among {pids:?}: {launchers:?}");
    };
    match children_in(pids, launcher)[..] {
        [sup] => sup,
        ref other => panic!("not one supervisor under {launcher}: {other:?}"),
    }
}

fn spawn(args: &[&str]) -> Child {
    Command::new(sifr_bin())
        .args(args)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sifr")
}

/// The probe and the directory it exchanges with the test (`started`, `pids`), to be bound
/// at `/probe` and `/x`.
struct ProbeSetup {
    /// Holds the probe and `x` (removed on drop).
    dir: tempfile::TempDir,
    bind_probe: String,
    bind_x: String,
    x: PathBuf,
}

/// Compiles the probe into a fresh directory; `None` (skip) only outside CI.
fn probe_setup() -> Option<ProbeSetup> {
    require_unprivileged();
    let dir = tempdir();
    let probe = probe(dir.path())?;
    let x = dir.path().join("x");
    std::fs::create_dir(&x).expect("mkdir");
    Some(ProbeSetup {
        bind_probe: format!("{}:/probe", probe.display()),
        bind_x: format!("{}:/x", x.display()),
        x,
        dir,
    })
}

/// Waits for the probe that `child` (sifr) runs to start, gives it the host pids of every
/// process of sifr under `child` (all of them must be alive by then, `expect` checks that
/// they are the ones the caller means), and returns the probe's report.
fn run_probe(child: Child, x: &Path, expect: impl FnOnce(i32, &[i32])) -> String {
    let p = child.id() as i32;
    let started = x.join("started");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !started.exists() {
        if Instant::now() > deadline || ppid_state(p).is_none_or(|(_, s)| s == 'Z') {
            let o = child.wait_with_output().expect("wait");
            panic!(
                "the probe did not start: {:?}\n{}",
                o.status,
                String::from_utf8_lossy(&o.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let pids = sifr_processes(p);
    expect(p, &pids);
    // The supervisor has left the session: nothing of the host (nor the image) is mounted
    // in its namespace any more, only its empty root.
    let sup = supervisor(&pids);
    let mi = std::fs::read_to_string(format!("/proc/{sup}/mountinfo")).expect("mountinfo");
    let points: Vec<&str> = mi.lines().filter_map(|l| l.split(' ').nth(4)).collect();
    assert_eq!(points, ["/"], "the supervisor's mounts: {mi}");
    let root = std::fs::metadata("/").expect("stat /");
    let list: Vec<String> = pids.iter().map(i32::to_string).collect();
    let tmp = x.join("pids.tmp");
    std::fs::write(
        &tmp,
        format!("{} {}\n{}\n", root.dev(), root.ino(), list.join(" ")),
    )
    .expect("write pids");
    std::fs::rename(&tmp, x.join("pids")).expect("rename pids");
    let o = child.wait_with_output().expect("wait sifr");
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    eprintln!("sifr processes {pids:?}; the probe's report:\n{out}");
    assert!(
        o.status.success() && out.contains("DONE"),
        "probe failed: {:?}\nstdout: {out}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        out.contains(&format!("targets={}", pids.len())),
        "the probe did not get every target: {out}"
    );
    out
}

/// Runs the probe in a container started with `flags`; returns its report.
fn attack(flags: &[&str]) -> Option<String> {
    let s = probe_setup()?;
    let img = busybox();
    let mut args: Vec<&str> = vec!["exec"];
    args.extend_from_slice(flags);
    args.extend_from_slice(&[
        "-B",
        &s.bind_probe,
        "-B",
        &s.bind_x,
        img.to_str().expect("utf8"),
        "/probe",
        "/x",
    ]);
    let child = spawn(&args);
    Some(run_probe(child, &s.x, |p, pids| {
        // sifr, its supervisor and the payload's parent at least.
        assert!(
            pids.len() >= 2 && pids.contains(&p),
            "sifr and its supervisor not found under {p}: {pids:?}"
        );
    }))
}

fn assert_no_reach(what: &str, out: &str) {
    let reached: Vec<&str> = out.lines().filter(|l| l.starts_with("REACHED")).collect();
    assert!(
        reached.is_empty(),
        "the container reached sifr's processes or the host with {what}:\n{}",
        reached.join("\n")
    );
}

fn assert_unreachable(flags: &[&str]) {
    let Some(out) = attack(flags) else { return };
    assert_no_reach(&format!("{flags:?}"), &out);
}

#[test]
fn test_fakeroot_cannot_reach_the_supervisor() {
    assert_unreachable(&["--fakeroot", "--contain", "--no-home"]);
}

#[test]
fn test_fakeroot_pid_cannot_reach_the_supervisor() {
    assert_unreachable(&["--fakeroot", "--pid", "--contain", "--no-home"]);
}

#[test]
fn test_fakeroot_default_cannot_reach_the_supervisor() {
    assert_unreachable(&["--fakeroot"]);
}

/// `%post` of an unprivileged (so fakeroot) build runs the probe: it reaches neither
/// `sifr build`, nor its worker, nor the `sifr exec` the worker runs `%post` with, nor that
/// container's supervisor and helpers.
#[test]
fn test_build_post_cannot_reach_the_build() {
    let Some(s) = probe_setup() else { return };
    let def = s.dir.path().join("probe.def");
    std::fs::write(
        &def,
        format!(
            // `exec`: the probe reports every process it can see and open, and the shell
            // of `%post` would be one, the container's own. %post runs `--writable`, where
            // bind destinations must exist (as in Apptainer): %setup makes them.
            "Bootstrap: localimage\nFrom: {}\n\n%setup\n    mkdir -p \"$APPTAINER_ROOTFS/x\" && \
             touch \"$APPTAINER_ROOTFS/probe\"\n\n%post\n    exec /probe /x\n",
            busybox().display()
        ),
    )
    .expect("write the definition");
    let out = s.dir.path().join("out");
    let child = spawn(&[
        "build",
        "--sandbox",
        "-B",
        &s.bind_probe,
        "-B",
        &s.bind_x,
        out.to_str().expect("utf8"),
        def.to_str().expect("utf8"),
    ]);
    let report = run_probe(child, &s.x, |build, pids| {
        let role = |p: &i32| cmdline(*p).get(1).cloned().unwrap_or_default();
        // `sifr build`, its worker (a fork: `build` too), the worker's `sifr exec` of
        // `%post`, and that container's supervisor (one of its children).
        let worker = match children_in(pids, build)[..] {
            [w] if role(&w) == "build" => w,
            ref other => panic!("not one build worker under {build}: {other:?} of {pids:?}"),
        };
        let exec = match children_in(pids, worker)[..] {
            [e] if role(&e) == "exec" => e,
            ref other => panic!("not one `sifr exec` under the worker {worker}: {other:?}"),
        };
        assert!(pids.contains(&build), "{build} is not among {pids:?}");
        assert_eq!(
            ppid_state(supervisor(pids)).map(|(pp, _)| pp),
            Some(exec),
            "the supervisor of %post is not a child of the worker's `sifr exec`"
        );
    });
    assert_no_reach("%post of a build", &report);
}

/// Processes whose argv contains `marker` as one argument.
fn marked(marker: &str) -> Vec<i32> {
    all_pids()
        .into_iter()
        .filter(|p| ppid_state(*p).is_some_and(|(_, s)| s != 'Z'))
        .filter(|p| cmdline(*p).iter().any(|a| a == marker))
        .collect()
}

fn unique_marker() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    // A whole number of seconds no other test uses: pid and counter.
    format!(
        "{}{:03}",
        std::process::id() % 100_000 + 100_000,
        N.fetch_add(1, Ordering::SeqCst)
    )
}

#[derive(Debug, Clone, Copy)]
enum Victim {
    Sifr,
    Supervisor,
}

/// Starts `sh -c 'sleep M & sleep M & wait'` with `flags`, SIGKILLs `victim`, and asserts that
/// nothing of the container stays.
fn kill_leaves_nothing(flags: &[&str], victim: Victim) {
    require_unprivileged();
    let marker = unique_marker();
    let script = format!("sleep {marker} & sleep {marker} & wait");
    let img = busybox();
    let mut args: Vec<&str> = vec!["exec"];
    args.extend_from_slice(flags);
    args.extend_from_slice(&[img.to_str().expect("utf8"), "sh", "-c", &script]);
    let mut child = spawn(&args);
    let p = child.id() as i32;
    let deadline = Instant::now() + Duration::from_secs(30);
    while marked(&marker).len() < 2 {
        if Instant::now() > deadline || matches!(child.try_wait(), Ok(Some(_))) {
            let _ = child.kill();
            let o = child.wait_with_output().expect("wait");
            panic!(
                "the container did not start its sleeps: {:?}\n{}",
                o.status,
                String::from_utf8_lossy(&o.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let all = descendants(p);
    let sifr = sifr_processes(p);
    let target = match victim {
        Victim::Sifr => p,
        Victim::Supervisor => supervisor(&sifr),
    };
    // SAFETY: kill(2) on a pid of this test's own process tree.
    assert_eq!(unsafe { libc::kill(target, libc::SIGKILL) }, 0);
    let _ = child.wait();
    let alive = |pid: &i32| {
        *pid != p && ppid_state(*pid).is_some_and(|(_, s)| s != 'Z') && {
            // The same process (not a reused pid): still one of ours or marked.
            let c = cmdline(*pid);
            is_sifr(c.first()) || c.contains(&marker)
        }
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left: Vec<i32> = all.iter().copied().filter(alive).collect();
        let stray = marked(&marker);
        if left.is_empty() && stray.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            for pid in left.iter().chain(&stray) {
                // SAFETY: cleaning up processes this test started.
                unsafe { libc::kill(*pid, libc::SIGKILL) };
            }
            panic!(
                "after SIGKILL of {victim:?} with {flags:?}, still running: {:?}",
                left.iter()
                    .chain(&stray)
                    .map(|p| (p, cmdline(*p)))
                    .collect::<Vec<_>>()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // The image was served by FUSE inside the container's namespaces: no trace here.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(
        !mounts.contains(img.to_str().expect("utf8")),
        "a mount of the image is left: {mounts}"
    );
}

#[test]
fn test_kill_sifr_with_pid() {
    kill_leaves_nothing(&["--pid"], Victim::Sifr);
}

#[test]
fn test_kill_supervisor_with_pid() {
    kill_leaves_nothing(&["--pid"], Victim::Supervisor);
}

#[test]
fn test_kill_sifr_with_containall() {
    kill_leaves_nothing(&["--containall"], Victim::Sifr);
}

#[test]
fn test_kill_supervisor_with_containall() {
    kill_leaves_nothing(&["--containall"], Victim::Supervisor);
}

#[test]
fn test_kill_sifr_with_fakeroot() {
    kill_leaves_nothing(&["--fakeroot"], Victim::Sifr);
}

#[test]
fn test_kill_supervisor_with_fakeroot() {
    kill_leaves_nothing(&["--fakeroot"], Victim::Supervisor);
}
