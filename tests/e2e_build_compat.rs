//! End-to-end tests of `sifr build` against what Apptainer's build does for an unprivileged
//! user (issue 12, builds): a directory source is stored root-owned (mksquashfs -all-root)
//! with the /.singularity.d base, and works as a `Bootstrap: localimage` base with %post;
//! a sandbox is deletable by the user; the environment files are Apptainer's bytes; %post
//! sees APPTAINER_LABELS; %appinstall runs with the app's SCIF environment; a localimage
//! build keeps the base's 99-base.sh; an unwritable destination fails before the build.
//! Run as the unprivileged user (sifrtest, and sifrnosub in CI).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::*;

/// Runs sifr in `cwd` with its temporary directory (build directories) in `tmp`.
fn sifr_in(cwd: &Path, tmp: &Path, args: &[&str]) -> Output {
    Command::new(sifr_bin())
        .args(args)
        .current_dir(cwd)
        .env("TMPDIR", tmp)
        .env_remove("SIFR_TMPDIR")
        .stdin(Stdio::null())
        .output()
        .expect("run sifr")
}

/// A project directory with the busybox base image and an empty temporary directory.
struct Project {
    dir: tempfile::TempDir,
}

impl Project {
    fn new() -> Project {
        let dir = tempdir();
        std::fs::copy(
            sif_fixture("busybox_amd64.sif"),
            dir.path().join("busybox.sif"),
        )
        .expect("base");
        std::fs::create_dir(dir.path().join("tmp")).expect("tmp");
        Project { dir }
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
    fn tmp(&self) -> PathBuf {
        self.dir.path().join("tmp")
    }
    fn sifr(&self, args: &[&str]) -> Output {
        sifr_in(self.path(), &self.tmp(), args)
    }
    fn write(&self, name: &str, text: &str) {
        std::fs::write(self.path().join(name), text).expect("write");
    }
    fn cat(&self, image: &str, file: &str) -> String {
        ok(&self.sifr(&["exec", image, "cat", file]))
    }
    /// Nothing is left in the build's temporary directory, and the whole project can be
    /// deleted by the user.
    fn assert_clean_and_deletable(self) {
        let left: Vec<_> = std::fs::read_dir(self.tmp())
            .expect("tmp")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(left.is_empty(), "left in the temporary directory: {left:?}");
        let p = self.dir.keep();
        let out = run("rm", [OsStr("-rf"), OsStr(p.as_os_str())]);
        assert!(
            out.status.success() && !p.exists(),
            "rm -rf as the user failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[allow(non_snake_case)]
fn OsStr(s: impl AsRef<std::ffi::OsStr>) -> std::ffi::OsString {
    s.as_ref().to_os_string()
}

/// The owners (`uid/gid`) of every entry of the squashfs partition of `sif`, by unsquashfs.
fn owners(sif: &Path) -> Vec<String> {
    let Some(unsq) = which("unsquashfs") else {
        assert!(!in_ci(), "unsquashfs is needed in CI");
        panic!("unsquashfs not found");
    };
    let data = std::fs::read(sif).expect("read sif");
    let off = data
        .windows(4)
        .position(|w| w == b"hsqs")
        .expect("a squashfs partition");
    let out = run(
        unsq,
        [
            OsStr("-o"),
            OsStr(off.to_string()),
            OsStr("-lln"),
            OsStr(sif.as_os_str()),
        ],
    );
    let text = ok(&out);
    text.lines()
        .filter(|l| l.contains("squashfs-root"))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            format!("{} {}", f[1], f.last().unwrap_or(&""))
        })
        .collect()
}

fn assert_all_root(sif: &Path) {
    let all = owners(sif);
    assert!(all.len() > 10, "too few entries: {all:?}");
    let not_root: Vec<&String> = all.iter().filter(|o| !o.starts_with("0/0 ")).collect();
    assert!(
        not_root.is_empty(),
        "entries not owned by root in the image: {not_root:?}"
    );
}

/// A directory tree without /.singularity.d, its top directory read-only (mode 0555), as
/// a user's copy of a root filesystem can be.
fn plain_tree(p: &Project) -> PathBuf {
    ok(&p.sifr(&["build", "--sandbox", "sb", "busybox.sif"]));
    let sb = p.path().join("sb");
    std::fs::remove_dir_all(sb.join(".singularity.d")).expect("rm .singularity.d");
    for l in [
        "singularity",
        ".run",
        ".exec",
        ".test",
        ".shell",
        "environment",
    ] {
        let _ = std::fs::remove_file(sb.join(l));
    }
    std::fs::set_permissions(&sb, std::fs::Permissions::from_mode(0o555)).expect("chmod");
    sb
}

#[test]
fn test_directory_source_gets_the_base_and_works_as_a_localimage_base_with_post() {
    require_unprivileged();
    let p = Project::new();
    let sb = plain_tree(&p);
    ok(&p.sifr(&["build", "dir.sif", "sb/"]));
    // The base environment, as Apptainer's local conveyor packer adds it.
    for f in [
        "/.singularity.d/env/01-base.sh",
        "/.singularity.d/env/90-environment.sh",
        "/.singularity.d/env/95-apps.sh",
        "/.singularity.d/env/99-base.sh",
        "/.singularity.d/actions/run",
        "/.singularity.d/runscript",
    ] {
        ok(&p.sifr(&["exec", "dir.sif", "test", "-f", f]));
    }
    assert_all_root(&p.path().join("dir.sif"));
    p.write(
        "post.def",
        "Bootstrap: localimage\nFrom: dir.sif\n\n%post\n    echo made > /made.txt\n",
    );
    ok(&p.sifr(&["build", "post.sif", "post.def"]));
    assert_eq!(p.cat("post.sif", "/made.txt"), "made\n");
    std::fs::set_permissions(&sb, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    p.assert_clean_and_deletable();
}

#[test]
fn test_debian_tree_is_stored_root_owned_and_builds_on_with_nothing_left() {
    require_unprivileged();
    let Some(images) = test_images() else { return };
    let tree = images.join(format!("debian-sandbox-{}", user_name()));
    let p = Project::new();
    let src = format!("{}/", tree.display());
    ok(&p.sifr(&["build", "deb.sif", &src]));
    assert_all_root(&p.path().join("deb.sif"));
    ok(&p.sifr(&[
        "exec",
        "deb.sif",
        "test",
        "-f",
        "/.singularity.d/env/99-base.sh",
    ]));
    p.write(
        "deb.def",
        "Bootstrap: localimage\nFrom: deb.sif\n\n%post\n    useradd -m builder\n    \
         touch /home/builder/mine\n    chown builder /home/builder/mine\n    \
         echo ok > /post.txt\n",
    );
    ok(&p.sifr(&["build", "deb2.sif", "deb.def"]));
    assert_eq!(p.cat("deb2.sif", "/post.txt"), "ok\n");
    assert_all_root(&p.path().join("deb2.sif"));
    p.assert_clean_and_deletable();
}

#[test]
fn test_sandbox_with_files_of_other_users_is_deletable_by_the_user() {
    require_unprivileged();
    let p = Project::new();
    p.write(
        "sb.def",
        "Bootstrap: localimage\nFrom: busybox.sif\n\n%post\n    mkdir -p /other/deep\n    \
         touch /other/deep/f /other/g\n    chown -R 1000:1000 /other\n    \
         chmod 0555 /other/deep\n",
    );
    ok(&p.sifr(&["build", "--sandbox", "out", "sb.def"]));
    assert!(p.path().join("out/other/g").exists());
    // The same over the sandbox with --update.
    p.write(
        "up.def",
        "Bootstrap: localimage\nFrom: busybox.sif\n\n%post\n    mkdir -p /more/deep\n    \
         touch /more/deep/f\n    chown -R 1000:1000 /more\n    chmod 0555 /more/deep\n",
    );
    ok(&p.sifr(&["build", "--sandbox", "--update", "out", "up.def"]));
    assert!(p.path().join("out/more/deep/f").exists());
    p.assert_clean_and_deletable();
}

#[test]
fn test_environment_files_are_apptainers_bytes() {
    require_unprivileged();
    let p = Project::new();
    let base90 = p.cat("busybox.sif", "/.singularity.d/env/90-environment.sh");
    let base99 = p.cat("busybox.sif", "/.singularity.d/env/99-base.sh");
    p.write(
        "env.def",
        "Bootstrap: localimage\nFrom: busybox.sif\n\n%environment\n    export A=1\n\n\
         %post\n    echo 'export B=2' >> \"$APPTAINER_ENVIRONMENT\"\n",
    );
    ok(&p.sifr(&["build", "env.sif", "env.def"]));
    // insertEnvScript appends "\n" + the section + "\n"; %post's file has only what it wrote.
    assert_eq!(
        p.cat("env.sif", "/.singularity.d/env/90-environment.sh"),
        format!("{base90}\n    export A=1\n\n\n")
    );
    assert_eq!(
        p.cat("env.sif", "/.singularity.d/env/91-environment.sh"),
        "export B=2\n"
    );
    // The base's definition is kept as Apptainer names it.
    assert_eq!(
        p.cat("env.sif", "/.singularity.d/bootstrap_history/Apptainer0"),
        p.cat("busybox.sif", "/.singularity.d/Singularity")
    );
    // The base image's 99-base.sh (and its PS1) is kept.
    assert_eq!(p.cat("env.sif", "/.singularity.d/env/99-base.sh"), base99);
    // Without %post writing it, there is no 91-environment.sh (inspect lists what
    // Apptainer's image would list), and a fresh base has Apptainer's 90-environment.sh.
    plain_tree(&p);
    ok(&p.sifr(&["build", "dir.sif", "sb/"]));
    assert_eq!(
        p.cat("dir.sif", "/.singularity.d/env/90-environment.sh"),
        base90
    );
    let out = p.sifr(&[
        "exec",
        "dir.sif",
        "test",
        "-e",
        "/.singularity.d/env/91-environment.sh",
    ]);
    assert!(!out.status.success(), "91-environment.sh exists");
    std::fs::set_permissions(p.path().join("sb"), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
    p.assert_clean_and_deletable();
}

/// Apptainer's current 99-base.sh (internal/pkg/build/sources/99-base.sh), without its
/// licence comment: `/.singularity.d/libs` appended to LD_LIBRARY_PATH, PS1 set only when
/// unset.
const BASE99: &str = "#!/bin/sh\n\n\
    if [ -z \"${LD_LIBRARY_PATH:-}\" ]; then\n    LD_LIBRARY_PATH=\"/.singularity.d/libs\"\n\
    else\n    LD_LIBRARY_PATH=\"$LD_LIBRARY_PATH:/.singularity.d/libs\"\nfi\n\n\
    if [ -z \"${PS1:-}\" ]; then\n    PS1=\"Apptainer> \"\nfi\n\
    export LD_LIBRARY_PATH PS1\n";

#[test]
fn test_new_image_99_base_sets_ps1_only_when_unset() {
    require_unprivileged();
    let p = Project::new();
    let sb = plain_tree(&p);
    ok(&p.sifr(&["build", "dir.sif", "sb/"]));
    assert_eq!(p.cat("dir.sif", "/.singularity.d/env/99-base.sh"), BASE99);
    let ps1 = |set: &str| {
        ok(&p.sifr(&[
            "exec",
            "dir.sif",
            "sh",
            "-c",
            &format!("{set} . /.singularity.d/env/99-base.sh; echo \"$PS1|$LD_LIBRARY_PATH\""),
        ]))
    };
    assert_eq!(
        ps1("PS1='mine> '; unset LD_LIBRARY_PATH;"),
        "mine> |/.singularity.d/libs\n"
    );
    assert_eq!(
        ps1("unset PS1; LD_LIBRARY_PATH=/x;"),
        "Apptainer> |/x:/.singularity.d/libs\n"
    );
    std::fs::set_permissions(&sb, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    p.assert_clean_and_deletable();
}

#[test]
fn test_post_sees_labels_file_and_appinstall_has_the_scif_environment() {
    require_unprivileged();
    let p = Project::new();
    p.write(
        "l.def",
        "Bootstrap: localimage\nFrom: busybox.sif\n\n%post\n    \
         test \"$APPTAINER_LABELS\" = \"$SINGULARITY_LABELS\"\n    \
         echo \"FromPost yes-it-does\" >> \"$APPTAINER_LABELS\"\n\n\
         %appinstall foo\n    \
         echo \"$SCIF_APPNAME $SCIF_APPROOT $(pwd) $SCIF_APPDATA $SCIF_APPMETA\" > out.txt\n\n\
         %appenv foo\n    export FOO=1\n",
    );
    ok(&p.sifr(&["build", "l.sif", "l.def"]));
    let v: serde_json::Value =
        serde_json::from_str(&ok(&p.sifr(&["inspect", "--json", "--labels", "l.sif"])))
            .expect("json");
    assert_eq!(
        v["data"]["attributes"]["labels"]["FromPost"], "yes-it-does",
        "{v}"
    );
    assert_eq!(
        p.cat("l.sif", "/scif/apps/foo/out.txt"),
        "foo /scif/apps/foo /scif/apps/foo /scif/data/foo /scif/apps/foo/scif\n"
    );
    // The app's labels as Apptainer writes them (tab indented, with SCIF_APP_NAME), its
    // environment sourced for --app.
    assert_eq!(
        p.cat("l.sif", "/scif/apps/foo/scif/labels.json"),
        "{\n\t\"SCIF_APP_NAME\": \"foo\"\n}"
    );
    assert_eq!(
        ok(&p.sifr(&[
            "exec",
            "--app",
            "foo",
            "l.sif",
            "sh",
            "-c",
            "echo $FOO $SCIF_APPNAME"
        ])),
        "1 foo\n"
    );
    // The labels file is not left in the image.
    let out = p.sifr(&["exec", "l.sif", "test", "-e", "/.build.labels"]);
    assert!(!out.status.success(), "/.build.labels left in the image");
    p.assert_clean_and_deletable();
}

#[test]
fn test_unwritable_destination_directory_fails_before_the_build() {
    require_unprivileged();
    let p = Project::new();
    let marker = p.path().join("setup-ran");
    p.write(
        "d.def",
        &format!(
            "Bootstrap: localimage\nFrom: busybox.sif\n\n%setup\n    touch {}\n",
            marker.display()
        ),
    );
    let ro = p.path().join("ro");
    std::fs::create_dir(&ro).expect("mkdir");
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).expect("chmod");
    for dest in ["ro/out.sif", "ro/sandbox"] {
        let mut args = vec!["build"];
        if dest.ends_with("sandbox") {
            args.push("--sandbox");
        }
        args.extend([dest, "d.def"]);
        let out = p.sifr(&args);
        assert_one_line_error(&out, &ro.display().to_string());
        assert!(!marker.exists(), "the build started for {dest}");
    }
    let out = p.sifr(&["build", "missing/out.sif", "d.def"]);
    assert_one_line_error(&out, "missing");
    assert!(!marker.exists(), "the build started");
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    p.assert_clean_and_deletable();
}

#[test]
fn test_debian_build_killed_outright_is_cleaned_up_by_the_next_build() {
    use std::os::unix::process::CommandExt;
    require_unprivileged();
    let Some(images) = test_images() else { return };
    let p = Project::new();
    p.write(
        "k.def",
        &format!(
            "Bootstrap: localimage\nFrom: {}\n\n%post\n    useradd -m builder\n    \
             mkdir -p /home/builder/deep/er\n    touch /home/builder/deep/er/f\n    \
             chown -R builder:builder /home/builder\n    chmod 0500 /home/builder/deep\n    \
             touch /post-started\n    sleep 300\n",
            images.join("debian.sif").display()
        ),
    );
    let mut child = Command::new(sifr_bin())
        .args(["build", "k.sif", "k.def"])
        .current_dir(p.path())
        .env("TMPDIR", p.tmp())
        .env_remove("SIFR_TMPDIR")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("spawn sifr");
    // Wait until %post made its files (owned by another user of the container).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(240);
    let started = loop {
        let found = std::fs::read_dir(p.tmp())
            .expect("tmp")
            .flatten()
            .any(|e| e.path().join("rootfs/post-started").exists());
        if found || std::time::Instant::now() > deadline {
            break found;
        }
        if let Ok(Some(st)) = child.try_wait() {
            panic!("the build ended before %post ran: {st}");
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    // Every process of the build killed at once (as an out-of-memory kill or a job
    // scheduler does): nothing can clean up.
    let pgid = -(child.id() as i32);
    // SAFETY: kill(2) on the process group of our child.
    let killed = unsafe { libc::kill(pgid, libc::SIGKILL) };
    assert_eq!(killed, 0);
    let _ = child.wait();
    assert!(started, "%post did not start in time");
    std::thread::sleep(std::time::Duration::from_secs(2));
    let left: Vec<PathBuf> = std::fs::read_dir(p.tmp())
        .expect("tmp")
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(left.len(), 1, "one build directory left: {left:?}");
    // Some time later, the next build removes it.
    ok(&run(
        "touch",
        [OsStr("-d"), OsStr("1 hour ago"), OsStr(left[0].as_os_str())],
    ));
    let out = p.sifr(&["build", "--sandbox", "next", "busybox.sif"]);
    ok(&out);
    assert!(
        !left[0].exists(),
        "the killed build's directory is still there"
    );
    // One plain line says what was removed and why; nothing alarming.
    let err = String::from_utf8_lossy(&out.stderr);
    let name = left[0].display().to_string();
    let said: Vec<&str> = err.lines().filter(|l| l.contains(&name)).collect();
    assert_eq!(said.len(), 1, "{err}");
    assert!(
        said[0].starts_with("INFO:") && said[0].contains("an earlier build that was killed"),
        "{err}"
    );
    for bad in ["WARNING", "ERROR", "FATAL", "cannot", "failed"] {
        assert!(!err.contains(bad), "{bad} in: {err}");
    }
    p.assert_clean_and_deletable();
}

#[test]
fn test_apptainer_build_flags_refused_or_accepted() {
    require_unprivileged();
    let p = Project::new();
    p.write("s.def", "Bootstrap: localimage\nFrom: busybox.sif\n");
    for flag in ["--nvccli", "--encrypt", "--writable-tmpfs"] {
        let out = p.sifr(&["build", flag, "out.sif", "s.def"]);
        assert_one_line_error(&out, &format!("build {flag} is not supported by sifr"));
        assert!(!p.path().join("out.sif").exists());
    }
    p.write("y.def", "Bootstrap: yum\nOSVersion: 9\n");
    let out = p.sifr(&["build", "out.sif", "y.def"]);
    assert_one_line_error(&out, "Bootstrap: yum is not supported by sifr");
    let out = p.sifr(&["build", "--arch", "ppc64le", "out.sif", "s.def"]);
    assert_one_line_error(&out, "--arch ppc64le");
    // What sifr always does: accepted.
    ok(&p.sifr(&[
        "build",
        "--userns",
        "--ignore-proot",
        "--ignore-fakeroot-command",
        "--arch",
        "amd64",
        "out.sif",
        "s.def",
    ]));
    p.assert_clean_and_deletable();
}
