//! Kept image mounts, as the unprivileged user: a second run joins the first run's mount,
//! a changed image is never served from it, the holder leaves when idle or killed (the
//! next run starts afresh), `--fresh-mount` / `SIFR_FRESH_MOUNT`, an instance keeps its
//! holder, and 50 parallel runs of one image share one holder with none failing.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A copy of the busybox fixture in `dir` (each test its own image, hence its own holder).
fn image(dir: &Path, name: &str) -> PathBuf {
    let img = dir.join(name);
    // (Written, not copied: a copy keeps the fixture's read-only mode, which fuse2fs
    // refuses to open for the copy's own writing.)
    let bytes = std::fs::read(sif_fixture("busybox_amd64.sif")).expect("read the fixture");
    std::fs::write(&img, bytes).expect("copy the fixture");
    img
}

/// A configuration with kept mounts that leave after `idle` seconds.
fn conf(dir: &Path, idle: u64) -> PathBuf {
    let c = dir.join(format!("sifr-{idle}.conf"));
    std::fs::write(&c, format!("kept mount idle timeout = {idle}\n")).expect("write the config");
    c
}

/// How a run used a kept mount: ("started" | "joined", the holder's pid), from --debug.
fn kept_use(out: &Output) -> Option<(String, i32)> {
    kept_uses(&String::from_utf8_lossy(&out.stderr))
        .into_iter()
        .next()
}

/// Every "kept mount: started|joined holder PID" line of `text`.
fn kept_uses(text: &str) -> Vec<(String, i32)> {
    text.lines()
        .filter_map(|l| {
            let rest = l.split("kept mount: ").nth(1)?;
            let mut w = rest.split_whitespace();
            let how = w.next()?.to_string();
            (w.next()? == "holder").then_some(())?;
            Some((how, w.next()?.parse().ok()?))
        })
        .collect()
}

/// A home of the test's own (so its holders and sockets are its own), next to `conf`.
fn home_of(conf: &Path) -> PathBuf {
    use std::os::unix::fs::DirBuilderExt;
    let home = conf.parent().expect("dir").join("home");
    let _ = std::fs::DirBuilder::new().mode(0o700).create(&home);
    home
}

fn command(conf: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(sifr_bin());
    cmd.args(["--debug", "-c", conf.to_str().expect("utf-8")])
        .args(args)
        .env("HOME", home_of(conf))
        .stdin(Stdio::null());
    cmd
}

fn run_with(conf: &Path, args: &[&str]) -> Output {
    command(conf, args).output().expect("run sifr")
}

/// The holder process `pid` is alive (not a zombie) and is a holder.
fn holder_alive(pid: i32) -> bool {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit_once(')')
        .map(|(_, r)| r.trim_start().chars().next());
    comm.trim() == "sifr-keep" && state != Some(Some('Z'))
}

fn wait_gone(pid: i32, within: Duration) -> bool {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if !holder_alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Ends a holder a test started (SIGTERM), and checks that it went.
fn stop_holder(pid: i32) {
    if holder_alive(pid) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    assert!(
        wait_gone(pid, Duration::from_secs(10)),
        "holder {pid} did not end"
    );
}

/// The kept-mount directory of the test's home on this host.
fn mounts_dir(conf: &Path) -> PathBuf {
    let host = nix::unistd::gethostname().expect("hostname");
    home_of(conf).join(".sifr/mounts").join(host)
}

fn sockets(conf: &Path) -> Vec<String> {
    std::fs::read_dir(mounts_dir(conf))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".sock"))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn test_second_run_joins_the_first_runs_mount() {
    require_unprivileged();
    let t = tempdir();
    let img = image(t.path(), "a.sif");
    let img = img.to_str().expect("utf-8");
    let c = conf(t.path(), 60);
    let first = run_with(&c, &["exec", img, "test", "-x", "/bin/busybox"]);
    let (how, pid) = kept_use(&first).expect("the first run uses a kept mount");
    assert_eq!(how, "started");
    assert!(holder_alive(pid), "the holder outlives the run");
    let second = run_with(&c, &["exec", img, "sh", "-c", "ls /bin | wc -l"]);
    assert_eq!(ok(&second).trim().parse::<u32>().map(|n| n > 100), Ok(true));
    assert_eq!(kept_use(&second), Some(("joined".into(), pid)));
    // The holder's directory is private; the kept mount is not visible in the container
    // (it is the root, detached from its place), and its mount point on the host is an
    // empty directory.
    let md = std::fs::metadata(mounts_dir(&c)).expect("mounts dir");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(md.permissions().mode() & 0o777, 0o700);
    let inside = ok(&run_with(
        &c,
        &[
            "exec",
            img,
            "sh",
            "-c",
            "grep -c sifr/mounts /proc/self/mountinfo; true",
        ],
    ));
    assert_eq!(inside.trim(), "0");
    let roots: Vec<_> = std::fs::read_dir(mounts_dir(&c))
        .expect("read")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".root"))
        .collect();
    assert!(!roots.is_empty());
    for r in roots {
        assert_eq!(std::fs::read_dir(r.path()).expect("read").count(), 0);
    }
    stop_holder(pid);
}

#[test]
fn test_captured_output_is_not_held_open_by_the_holder() {
    require_unprivileged();
    let t = tempdir();
    let img = image(t.path(), "a.sif");
    let c = conf(t.path(), 60);
    // `$(sifr exec ...)`: the reader sees the end of the output when the run ends, while
    // the holder stays (it kept no descriptor of sifr's).
    let start = Instant::now();
    let out = command(&c, &["exec", img.to_str().expect("utf-8"), "echo", "hello"])
        .output()
        .expect("run sifr");
    assert_eq!(ok(&out), "hello\n");
    assert!(start.elapsed() < Duration::from_secs(30));
    let (_, pid) = kept_use(&out).expect("kept");
    assert!(holder_alive(pid));
    // (Its descriptors cannot be listed: it is not dumpable. Had it kept the pipe, the
    // output would have ended only with the holder, 60 s after the run.)
    stop_holder(pid);
}

#[test]
fn test_a_changed_image_is_never_served_from_the_kept_mount() {
    require_unprivileged();
    let t = tempdir();
    // Two images that differ in one file.
    let mk = |name: &str, marker: &str| {
        let root = t.path().join(format!("{name}-root"));
        extract_busybox(&root);
        std::fs::write(root.join("marker"), marker).expect("write");
        let img = t.path().join(format!("{name}.sqfs"));
        let out = Command::new("mksquashfs")
            .arg(&root)
            .arg(&img)
            .args(["-noappend", "-quiet", "-comp", "gzip"])
            .output()
            .expect("run mksquashfs (squashfs-tools)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        img
    };
    let a = mk("a", "first\n");
    let b = mk("b", "second, and longer\n");
    let img = t.path().join("img.sqfs");
    std::fs::copy(&a, &img).expect("copy");
    let c = conf(t.path(), 60);
    let s = img.to_str().expect("utf-8");
    let one = run_with(&c, &["exec", s, "cat", "/marker"]);
    assert_eq!(ok(&one), "first\n");
    let (_, h1) = kept_use(&one).expect("kept");
    // The same file, rewritten in place (same inode).
    std::fs::copy(&b, &img).expect("overwrite");
    let two = run_with(&c, &["exec", s, "cat", "/marker"]);
    assert_eq!(ok(&two), "second, and longer\n");
    let (how, h2) = kept_use(&two).expect("kept");
    assert_eq!(how, "started", "a changed image gets a new holder");
    assert_ne!(h1, h2);
    // Replaced by another file (new inode) under the same name.
    let tmp = t.path().join("img.new");
    std::fs::copy(&a, &tmp).expect("copy");
    std::fs::rename(&tmp, &img).expect("rename");
    let three = run_with(&c, &["exec", s, "cat", "/marker"]);
    assert_eq!(ok(&three), "first\n");
    let (how, h3) = kept_use(&three).expect("kept");
    assert_eq!(how, "started");
    assert!(h3 != h1 && h3 != h2);
    for h in [h1, h2, h3] {
        stop_holder(h);
    }
}

#[test]
fn test_idle_holder_leaves_and_removes_its_socket() {
    require_unprivileged();
    let t = tempdir();
    let img = image(t.path(), "a.sif");
    let c = conf(t.path(), 1);
    let out = run_with(&c, &["exec", img.to_str().expect("utf-8"), "true"]);
    ok(&out);
    let (_, pid) = kept_use(&out).expect("kept");
    let socks = sockets(&c);
    assert_eq!(socks.len(), 1, "{socks:?}");
    assert!(
        wait_gone(pid, Duration::from_secs(15)),
        "idle holder {pid} still there"
    );
    let dir = mounts_dir(&c);
    assert!(!dir.join(&socks[0]).exists(), "socket left behind");
    assert!(
        !dir.join(socks[0].replace(".sock", ".root")).exists(),
        "mount point left behind"
    );
    // The next run starts a new holder.
    let out = run_with(&c, &["exec", img.to_str().expect("utf-8"), "true"]);
    ok(&out);
    let (how, next) = kept_use(&out).expect("kept");
    assert_eq!(how, "started");
    assert!(wait_gone(next, Duration::from_secs(15)));
}

#[test]
fn test_killed_holder_is_replaced_by_the_next_run() {
    require_unprivileged();
    let t = tempdir();
    let img = image(t.path(), "a.sif");
    let s = img.to_str().expect("utf-8");
    let c = conf(t.path(), 60);
    let (_, h1) = kept_use(&run_with(&c, &["exec", s, "true"])).expect("kept");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(h1),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the holder");
    assert!(wait_gone(h1, Duration::from_secs(10)));
    let out = run_with(&c, &["exec", s, "test", "-x", "/bin/busybox"]);
    ok(&out);
    let (how, h2) = kept_use(&out).expect("kept");
    assert_eq!(how, "started");
    assert_ne!(h1, h2);
    stop_holder(h2);
    // SIGTERM: the holder removes its socket; the next run starts another.
    let (how, h3) = kept_use(&run_with(&c, &["exec", s, "true"])).expect("kept");
    assert_eq!(how, "started");
    stop_holder(h3);
}

#[test]
fn test_fresh_mount_flag_and_variable_turn_reuse_off() {
    require_unprivileged();
    let t = tempdir();
    let img = image(t.path(), "a.sif");
    let s = img.to_str().expect("utf-8");
    let c = conf(t.path(), 60);
    let (_, pid) = kept_use(&run_with(&c, &["exec", s, "true"])).expect("kept");
    let flag = run_with(
        &c,
        &["exec", "--fresh-mount", s, "test", "-x", "/bin/busybox"],
    );
    ok(&flag);
    assert_eq!(kept_use(&flag), None);
    let env = command(&c, &["exec", s, "true"])
        .env("SIFR_FRESH_MOUNT", "1")
        .output()
        .expect("run sifr");
    ok(&env);
    assert_eq!(kept_use(&env), None);
    // And off in sifr.conf.
    let off = run_with(&conf(t.path(), 0), &["exec", s, "true"]);
    ok(&off);
    assert_eq!(kept_use(&off), None);
    stop_holder(pid);
}

#[test]
fn test_fakeroot_runs_have_their_own_holder() {
    require_unprivileged();
    let t = tempdir();
    let img = image(t.path(), "a.sif");
    let s = img.to_str().expect("utf-8");
    let c = conf(t.path(), 60);
    let plain = run_with(&c, &["exec", s, "id", "-u"]);
    assert_eq!(ok(&plain).trim(), nix::unistd::getuid().to_string());
    let (_, h1) = kept_use(&plain).expect("kept");
    let fake = run_with(&c, &["exec", "--fakeroot", s, "id", "-u"]);
    assert_eq!(ok(&fake).trim(), "0");
    let (how, h2) = kept_use(&fake).expect("kept");
    assert_eq!(how, "started");
    assert_ne!(h1, h2);
    let again = run_with(&c, &["exec", "--fakeroot", s, "id", "-u"]);
    assert_eq!(ok(&again).trim(), "0");
    assert_eq!(kept_use(&again), Some(("joined".into(), h2)));
    stop_holder(h1);
    stop_holder(h2);
}

#[test]
fn test_an_instance_keeps_its_holder_past_the_idle_timeout() {
    require_unprivileged();
    let t = tempdir();
    let img = image(t.path(), "a.sif");
    let s = img.to_str().expect("utf-8");
    let c = conf(t.path(), 1);
    let name = format!("kept{}", std::process::id());
    let start = run_with(&c, &["instance", "start", s, &name]);
    ok(&start);
    // The instance's own messages go to its log.
    let host = nix::unistd::gethostname().expect("hostname");
    let user = user_name();
    let log = home_of(&c)
        .join(".sifr/instances/logs")
        .join(host)
        .join(user)
        .join(format!("{name}.err"));
    let logged = Output {
        status: start.status,
        stdout: Vec::new(),
        stderr: std::fs::read(&log).unwrap_or_default(),
    };
    let (_, pid) = kept_use(&start)
        .or_else(|| kept_use(&logged))
        .expect("kept");
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        holder_alive(pid),
        "the instance's holder left while the instance runs"
    );
    let join = run_with(
        &c,
        &[
            "exec",
            &format!("instance://{name}"),
            "test",
            "-x",
            "/bin/busybox",
        ],
    );
    ok(&join);
    ok(&run_with(&c, &["instance", "stop", &name]));
    assert!(
        wait_gone(pid, Duration::from_secs(15)),
        "the holder stayed after the instance stopped"
    );
}

#[test]
fn test_fifty_parallel_runs_share_one_holder() {
    require_unprivileged();
    let t = tempdir();
    let img = image(t.path(), "a.sif");
    let c = conf(t.path(), 60);
    let children: Vec<_> = (0..50)
        .map(|i| {
            let script = format!("test -x /bin/busybox && echo {i}");
            command(
                &c,
                &["exec", img.to_str().expect("utf-8"), "sh", "-c", &script],
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sifr")
        })
        .collect();
    let mut holders = Vec::new();
    let mut started = 0;
    for (i, ch) in children.into_iter().enumerate() {
        let out = ch.wait_with_output().expect("wait");
        assert_eq!(ok(&out), format!("{i}\n"), "run {i}");
        let (how, pid) = kept_use(&out).expect("kept");
        started += usize::from(how == "started");
        holders.push(pid);
    }
    holders.dedup();
    assert_eq!(holders.len(), 1, "one holder for 50 runs: {holders:?}");
    assert_eq!(started, 1);
    stop_holder(holders[0]);
}

#[test]
fn test_mpi_ranks_share_one_holder() {
    require_unprivileged();
    let Some(mpirun) = which("mpirun") else {
        let why = "mpirun not found (apt-get install openmpi-bin)";
        assert!(!in_ci(), "{why}; CI requires it");
        eprintln!("SKIP: {why}");
        return;
    };
    let t = tempdir();
    let img = image(t.path(), "a.sif");
    let c = conf(t.path(), 60);
    // Host mpirun starting 6 ranks of one image on this node, as a batch script does; each
    // rank's messages go to a file of its own (mpirun would interleave them).
    let logs = t.path().join("logs");
    std::fs::create_dir(&logs).expect("mkdir");
    let rank = "exec \"$0\" --debug -c \"$1\" exec \"$2\" sh -c 'echo rank=$OMPI_COMM_WORLD_RANK' \
                2>\"$3/$OMPI_COMM_WORLD_RANK.err\"";
    let out = Command::new(mpirun)
        .args(["--oversubscribe", "-n", "6", "sh", "-c", rank])
        .arg(sifr_bin())
        .arg(&c)
        .arg(&img)
        .arg(&logs)
        .env("HOME", home_of(&c))
        .stdin(Stdio::null())
        .output()
        .expect("run mpirun");
    let stdout = ok(&out);
    let mut ranks: Vec<&str> = stdout.lines().collect();
    ranks.sort();
    assert_eq!(
        ranks,
        ["rank=0", "rank=1", "rank=2", "rank=3", "rank=4", "rank=5"]
    );
    let uses: Vec<(String, i32)> = (0..6)
        .flat_map(|r| {
            let text = std::fs::read_to_string(logs.join(format!("{r}.err"))).unwrap_or_default();
            kept_uses(&text)
        })
        .collect();
    assert_eq!(uses.len(), 6, "{uses:?}");
    assert_eq!(uses.iter().filter(|(how, _)| how == "started").count(), 1);
    let mut holders: Vec<i32> = uses.iter().map(|(_, pid)| *pid).collect();
    holders.dedup();
    assert_eq!(
        holders.len(),
        1,
        "one holder (one mount, one cache) for the ranks"
    );
    stop_holder(holders[0]);
}

#[test]
fn test_holder_of_a_deleted_image_leaves_after_its_last_run() {
    require_unprivileged();
    let t = tempdir();
    let img = image(t.path(), "gone.sif");
    let c = conf(t.path(), 600);
    let s = img.to_str().expect("utf-8").to_string();
    // The container says it runs through a file in the test's directory (under /tmp,
    // which the container shares with the host).
    let up = t.path().join("up");
    let script = format!("touch {} && sleep 2", up.display());
    let running = command(&c, &["exec", &s, "sh", "-c", &script])
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sifr");
    let end = Instant::now() + Duration::from_secs(30);
    while !up.exists() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(up.exists(), "the container did not start");
    std::fs::remove_file(&img).expect("delete the image");
    let out = running.wait_with_output().expect("wait");
    ok(&out);
    let (_, pid) = kept_use(&out).expect("kept");
    assert!(
        wait_gone(pid, Duration::from_secs(10)),
        "the holder of a deleted image stayed for its idle timeout"
    );
}

/// A FUSE mount (fuse2fs over an ext3 image) the user makes on the host.
struct FuseMount(PathBuf);

impl FuseMount {
    /// Mounts a new 16 MiB ext3 image `dir/NAME.img` (the user's) on `dir/NAME`.
    fn new(dir: &Path, name: &str) -> FuseMount {
        let fsimg = dir.join(format!("{name}.img"));
        let mnt = dir.join(name);
        std::fs::create_dir(&mnt).expect("mkdir");
        std::fs::File::create(&fsimg)
            .and_then(|f| f.set_len(16 << 20))
            .expect("image");
        let owner = format!(
            "root_owner={}:{}",
            nix::unistd::getuid(),
            nix::unistd::getgid()
        );
        let mkfs = which("mkfs.ext3").expect("mkfs.ext3 (e2fsprogs; ci/setup-host installs it)");
        ok(&run(
            mkfs,
            ["-q", "-F", "-E", &owner, fsimg.to_str().expect("utf-8")],
        ));
        let fuse2fs = which("fuse2fs").expect("fuse2fs (ci/setup-host installs it)");
        ok(&run(fuse2fs, [fsimg.as_os_str(), mnt.as_os_str()]));
        FuseMount(mnt)
    }
}

impl Drop for FuseMount {
    fn drop(&mut self) {
        let _ = Command::new("fusermount3").arg("-u").arg(&self.0).status();
    }
}

#[test]
fn test_runs_see_host_mounts_made_after_the_holder_started() {
    require_unprivileged();
    let t = tempdir();
    let img = image(t.path(), "a.sif");
    let s = img.to_str().expect("utf-8");
    let c = conf(t.path(), 60);
    let (_, pid) = kept_use(&run_with(&c, &["exec", s, "true"])).expect("kept");
    // Now the user mounts a filesystem on the host.
    let guard = FuseMount::new(t.path(), "mnt");
    let mnt = guard.0.clone();
    std::fs::write(mnt.join("hello"), "from a later mount\n").expect("write");
    let bind = format!("{}:/data", mnt.display());
    let out = run_with(&c, &["exec", "-B", &bind, s, "cat", "/data/hello"]);
    assert_eq!(ok(&out), "from a later mount\n");
    assert_eq!(kept_use(&out), Some(("joined".into(), pid)));
    drop(guard);
    stop_holder(pid);
}

/// The pids of processes whose command line mentions `needle`.
fn pids_with(needle: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .expect("read /proc")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
        })
        .collect()
}

#[test]
fn test_holder_keeps_no_host_filesystem_in_use() {
    require_unprivileged();
    let t = tempdir();
    let c = conf(t.path(), 60);
    // A filesystem the user mounted (fuse2fs), holding the working directory (the holder
    // keeps the image file open, so a filesystem holding the image stays in use).
    let guard = FuseMount::new(t.path(), "usb");
    let mnt = guard.0.clone();
    let fsimg = t.path().join("usb.img");
    let server = pids_with(fsimg.to_str().expect("utf-8"));
    assert_eq!(server.len(), 1, "one fuse2fs: {server:?}");
    let img = image(t.path(), "a.sif");
    let out = command(&c, &["exec", img.to_str().expect("utf-8"), "true"])
        .current_dir(&mnt)
        .output()
        .expect("run sifr");
    ok(&out);
    let (_, pid) = kept_use(&out).expect("kept");
    // The user unmounts it: the filesystem ends (its server exits) while the holder runs.
    drop(guard);
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end && std::path::Path::new(&format!("/proc/{}", server[0])).exists() {
        std::thread::sleep(Duration::from_millis(50));
    }
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", server[0])).unwrap_or_default();
    assert!(
        stat.is_empty() || stat.contains(") Z "),
        "fuse2fs still serves the unmounted filesystem: something keeps it mounted"
    );
    assert!(holder_alive(pid));
    stop_holder(pid);
}

#[test]
fn test_stopped_holder_is_replaced_and_leaves_its_successor_alone() {
    require_unprivileged();
    let t = tempdir();
    let img = image(t.path(), "a.sif");
    let s = img.to_str().expect("utf-8");
    let c = conf(t.path(), 60);
    let (_, h1) = kept_use(&run_with(&c, &["exec", s, "true"])).expect("kept");
    let signal = |pid: i32, sig| {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig).expect("signal the holder")
    };
    use nix::sys::signal::Signal;
    // A holder that does not answer (stopped) is replaced after a few seconds.
    signal(h1, Signal::SIGSTOP);
    let out = run_with(&c, &["exec", s, "true"]);
    signal(h1, Signal::SIGCONT);
    ok(&out);
    let (how, h2) = kept_use(&out).expect("kept");
    assert_eq!(how, "started");
    assert_ne!(h1, h2);
    // The old one, ending, leaves the new one's socket in place.
    stop_holder(h1);
    let again = run_with(&c, &["exec", s, "true"]);
    ok(&again);
    assert_eq!(kept_use(&again), Some(("joined".into(), h2)));
    stop_holder(h2);
}
