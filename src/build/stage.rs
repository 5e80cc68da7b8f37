//! Building one stage of a definition file into a root filesystem directory: the bootstrap
//! agent, then the sections in Apptainer's order (setup, files, environment, post, apps,
//! runscript/startscript/test/labels/help, test run), as root of the build's fakeroot user
//! namespace. Scripts that run inside the container (`%post`, `%appinstall`, `%test`) run
//! through sifr itself (`exec --fakeroot --writable` on the stage's directory), as Apptainer
//! re-invokes itself.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use super::baseenv;
use super::context::Build;
use super::deffile::{Agent, AppPart, Definition, FileCopy, Script, Section, SectionFilter, Stage};
use super::supervise;
use super::unpack::{unpack_image, unpack_oci};
use crate::image::inroot::{Resolved, resolve_in_root};
use crate::image::{self, extract};

/// What a stage build needs besides the definition.
pub struct StageEnv<'a> {
    pub build: &'a Build,
    pub filter: &'a SectionFilter,
    pub notest: bool,
    /// `-B` binds for `%post`/`%test`.
    pub binds: &'a [String],
    /// `--nv`/`--rocm` for `%post`/`%test` (Apptainer's build sets APPTAINER_NV/ROCM for
    /// the containers that run them).
    pub gpu_flags: &'a [String],
    /// The directory the definition's relative `%files` sources and `From:` paths are read
    /// from (the caller's working directory, as Apptainer).
    pub cwd: &'a Path,
    /// Root filesystems of the stages built so far, by stage name.
    pub stages: &'a BTreeMap<String, PathBuf>,
    pub ignore_subuid: bool,
    /// `--update`: build over an existing sandbox, no bootstrap.
    pub update: bool,
}

/// Runs a host command as root of the fakeroot namespace (for `%setup` and debootstrap),
/// with `env` added. It dies with the fakeroot worker (which ends on an interrupt).
fn host_command(
    b: &Build,
    what: &str,
    argv: Vec<String>,
    env: Vec<(String, String)>,
    cwd: PathBuf,
) -> anyhow::Result<()> {
    let what = what.to_string();
    b.as_root(move || {
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]).envs(env).current_dir(&cwd);
        supervise::tie_to_parent(&mut cmd);
        let status = cmd
            .status()
            .map_err(|e| format!("{what}: cannot run {}: {e}", argv[0]))?;
        match status.code() {
            Some(0) => Ok(()),
            Some(c) => Err(format!("{what} failed with exit status {c}")),
            None => Err(format!("{what} was killed ({status})")),
        }
    })
}

/// Runs a script inside the container (the stage's directory) through `sifr exec`.
fn container_script(
    env: &StageEnv<'_>,
    rootfs: &Path,
    what: &str,
    script: &Script,
    pwd: &str,
    name: &str,
) -> anyhow::Result<()> {
    script_body(
        env,
        rootfs,
        what,
        &script.body,
        &script.shell_command(&format!("/.{name}.script")),
        pwd,
        name,
    )
}

/// Runs `body`, saved as `/.NAME.script` in the root, with `command` inside the container.
/// The script is written and removed as root of the fakeroot namespace (the root directory
/// of a base image need not be the user's to write), through a descriptor of the root and
/// without following a link planted there.
fn script_body(
    env: &StageEnv<'_>,
    rootfs: &Path,
    what: &str,
    body: &str,
    command: &[String],
    pwd: &str,
    name: &str,
) -> anyhow::Result<()> {
    let file = format!(".{name}.script");
    let (root, f, text) = (rootfs.to_path_buf(), file.clone(), body.to_string());
    env.build.as_root(move || {
        use std::io::Write as _;
        let dir = std::fs::File::open(&root)
            .map_err(|e| format!("cannot open {}: {e}", root.display()))?;
        let _ = nix::unistd::unlinkat(&dir, f.as_str(), nix::unistd::UnlinkatFlags::NoRemoveDir);
        let fd = nix::fcntl::openat(
            &dir,
            f.as_str(),
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o755),
        )
        .map_err(|e| format!("cannot write /{f}: {e}"))?;
        let mut out = std::fs::File::from(fd);
        out.write_all(text.as_bytes())
            .and_then(|_| out.set_permissions(std::fs::Permissions::from_mode(0o755)))
            .map_err(|e| format!("cannot write /{f}: {e}"))
    })?;
    let r = run_in_container(env, rootfs, what, pwd, true, command.to_vec());
    let (root, f) = (rootfs.to_path_buf(), file);
    let removed = env.build.as_root(move || {
        let dir = std::fs::File::open(&root)
            .map_err(|e| format!("cannot open {}: {e}", root.display()))?;
        match nix::unistd::unlinkat(&dir, f.as_str(), nix::unistd::UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(format!("cannot remove /{f}: {e}")),
        }
    });
    r.and(removed)
}

/// Where `%post` writes labels (`$APPTAINER_LABELS`), as in Apptainer; read into labels.json
/// and removed after the sections that run in the container.
const BUILD_LABELS: &str = ".build.labels";

/// Takes the labels `%post` wrote to `$APPTAINER_LABELS` out of the root: `KEY VALUE` lines,
/// as `%labels`. The file is moved (as root of the namespace, not following a link) into
/// the build directory next to the root and read there.
fn take_build_labels(b: &Build, rootfs: &Path) -> anyhow::Result<BTreeMap<String, String>> {
    let side = rootfs.with_extension("build-labels");
    let (root, to) = (rootfs.to_path_buf(), side.clone());
    b.as_root(move || {
        let dir = std::fs::File::open(&root)
            .map_err(|e| format!("cannot open {}: {e}", root.display()))?;
        let fd = match nix::fcntl::openat(
            &dir,
            BUILD_LABELS,
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Ok(()),
            Err(e) => return Err(format!("cannot read /{BUILD_LABELS}: {e}")),
        };
        let mut from = std::fs::File::from(fd);
        if !from.metadata().is_ok_and(|m| m.is_file()) {
            return Err(format!("/{BUILD_LABELS} is not a regular file"));
        }
        let mut text = Vec::new();
        use std::io::Read as _;
        (&mut from)
            .take(1 << 20)
            .read_to_end(&mut text)
            .map_err(|e| format!("cannot read /{BUILD_LABELS}: {e}"))?;
        std::fs::write(&to, text).map_err(|e| format!("cannot write {}: {e}", to.display()))?;
        nix::unistd::unlinkat(&dir, BUILD_LABELS, nix::unistd::UnlinkatFlags::NoRemoveDir)
            .map_err(|e| format!("cannot remove /{BUILD_LABELS}: {e}"))
    })?;
    let mut labels = BTreeMap::new();
    let Ok(text) = std::fs::read(&side) else {
        return Ok(labels);
    };
    let _ = std::fs::remove_file(&side);
    for line in String::from_utf8_lossy(&text).lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (k, v) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        labels.insert(k.to_string(), v.trim().to_string());
    }
    Ok(labels)
}

fn run_in_container(
    env: &StageEnv<'_>,
    rootfs: &Path,
    what: &str,
    pwd: &str,
    writable: bool,
    command: Vec<String>,
) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find the sifr executable")?;
    let mut cmd = Command::new(exe);
    cmd.arg("exec")
        .arg("--fakeroot")
        .arg("--cleanenv")
        .arg("--pwd")
        .arg(pwd);
    if writable {
        cmd.arg("--writable");
    }
    if env.ignore_subuid {
        cmd.arg("--ignore-subuid");
    }
    for b in env.binds {
        cmd.arg("--bind").arg(b);
    }
    cmd.args(env.gpu_flags);
    for e in [
        "APPTAINER_ENVIRONMENT=/.singularity.d/env/91-environment.sh",
        "SINGULARITY_ENVIRONMENT=/.singularity.d/env/91-environment.sh",
        "APPTAINER_LABELS=/.build.labels",
        "SINGULARITY_LABELS=/.build.labels",
    ] {
        cmd.arg("--env").arg(e);
    }
    cmd.arg(rootfs).args(&command);
    // The build already said which fakeroot mode it uses.
    cmd.env("SIFR_QUIET", "1");
    // The container dies with the build (even a killed one), and an interrupted build
    // stops it at once instead of waiting for it.
    supervise::tie_to_parent(&mut cmd);
    let child = cmd
        .spawn()
        .with_context(|| format!("{what}: cannot start the container"))?;
    let Some(status) =
        supervise::wait_child(child).with_context(|| format!("{what}: cannot wait for it"))?
    else {
        bail!("build interrupted during {what}");
    };
    match status.code() {
        Some(0) => Ok(()),
        Some(c) => bail!("{what} failed with exit status {c}"),
        None => bail!("{what} was killed ({status})"),
    }
}

/// Where the sources of a `%files` block are read from.
#[derive(Debug, Clone)]
enum FilesFrom {
    /// The host; relative sources are taken from this directory.
    Host(PathBuf),
    /// An earlier stage (name, root filesystem): every source, absolute or not, is a path
    /// inside that root, its symlinks resolved there, never on the host.
    Stage(String, PathBuf),
}

/// One `%files` source after glob expansion.
struct Source {
    /// The directory holding it, and its name there (`.`: that directory itself).
    dir: OwnedFd,
    name: OsString,
    /// What messages call it.
    label: PathBuf,
    /// The path as written (globs expanded): the destination when none is given.
    written: String,
    /// Its last component as written: its name when copied into a directory.
    base: Option<OsString>,
}

fn has_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// The last component of `p` as written (`None` for `/` or a path ending in `.`/`..`).
fn base_name(p: &str) -> Option<OsString> {
    p.trim_end_matches('/')
        .rsplit('/')
        .next()
        .filter(|n| !n.is_empty() && *n != "." && *n != "..")
        .map(OsString::from)
}

/// Opens a host directory (`O_PATH`), following symlinks: the caller's own paths.
fn open_host_dir(d: &Path) -> Result<OwnedFd, String> {
    let d = if d.as_os_str().is_empty() {
        Path::new(".")
    } else {
        d
    };
    nix::fcntl::open(
        d,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("cannot open {}: {e}", d.display()))
}

/// Expands one `%files` source (globs allowed): on the host relative to `base`, or inside
/// a stage's root (`stage_root`, opened) for `%files from STAGE`.
fn expand_sources(
    from: &FilesFrom,
    stage_root: Option<BorrowedFd<'_>>,
    src: &str,
) -> Result<Vec<Source>, String> {
    match (from, stage_root) {
        (FilesFrom::Stage(stage, _), Some(root)) => stage_sources(root, stage, src),
        (FilesFrom::Host(base), _) => host_sources(base, src),
        (FilesFrom::Stage(stage, _), None) => Err(format!("stage {stage} is not open")),
    }
}

fn host_sources(base: &Path, src: &str) -> Result<Vec<Source>, String> {
    let relative = !Path::new(src).is_absolute();
    let pattern = if relative {
        base.join(src)
    } else {
        PathBuf::from(src)
    };
    let pat = pattern.to_string_lossy().into_owned();
    let paths = if !has_glob(&pat) {
        if std::fs::symlink_metadata(&pattern).is_err() {
            return Err(format!("{} does not exist", pattern.display()));
        }
        vec![pattern]
    } else {
        let mut out: Vec<PathBuf> = glob::glob(&pat)
            .map_err(|e| format!("bad pattern {src:?}: {e}"))?
            .filter_map(Result::ok)
            .collect();
        out.sort();
        if out.is_empty() {
            return Err(format!("no file matches {src:?}"));
        }
        out
    };
    let mut sources = Vec::new();
    for p in paths {
        let written = if relative {
            p.strip_prefix(base)
                .unwrap_or(&p)
                .to_string_lossy()
                .into_owned()
        } else {
            p.to_string_lossy().into_owned()
        };
        let (dir, name) = match (p.parent(), p.file_name()) {
            (Some(d), Some(n)) => (open_host_dir(d)?, n.to_os_string()),
            _ => (open_host_dir(&p)?, OsString::from(".")),
        };
        sources.push(Source {
            dir,
            name,
            label: p.clone(),
            base: base_name(&written),
            written,
        });
    }
    Ok(sources)
}

/// The paths inside `root` matching `pattern`, component by component (symlinks resolved
/// inside the root), sorted.
fn glob_in_root(root: BorrowedFd<'_>, pattern: &str) -> Result<Vec<String>, String> {
    let mut found = vec![String::new()];
    for comp in pattern.split('/').filter(|c| !c.is_empty()) {
        if !has_glob(comp) {
            for f in &mut found {
                f.push('/');
                f.push_str(comp);
            }
            continue;
        }
        let pat = glob::Pattern::new(comp).map_err(|e| format!("bad pattern {pattern:?}: {e}"))?;
        let mut next = Vec::new();
        for f in &found {
            let Ok(Resolved::Dir { fd, .. }) = resolve_in_root(root, f.as_bytes(), None) else {
                continue;
            };
            let names = extract::list_dir(&fd).map_err(|e| format!("cannot list {f}: {e}"))?;
            for n in names {
                let n = String::from_utf8_lossy(&n).into_owned();
                if pat.matches_with(&n, glob::MatchOptions::new()) {
                    next.push(format!("{f}/{n}"));
                }
            }
        }
        found = next;
    }
    found.retain(|f| {
        matches!(
            resolve_in_root(root, f.as_bytes(), None),
            Ok(Resolved::Dir { .. } | Resolved::Entry { exists: true, .. })
        )
    });
    found.sort();
    Ok(found)
}

fn stage_sources(root: BorrowedFd<'_>, stage: &str, src: &str) -> Result<Vec<Source>, String> {
    let paths = if has_glob(src) {
        let found = glob_in_root(root, src)?;
        if found.is_empty() {
            return Err(format!("no file matches {src:?} in stage {stage}"));
        }
        found
    } else {
        vec![src.to_string()]
    };
    let mut sources = Vec::new();
    for p in paths {
        let missing = || format!("{p} does not exist in stage {stage}");
        let (dir, name) = match resolve_in_root(root, p.as_bytes(), None) {
            Ok(Resolved::Dir { fd, .. }) => (fd, OsString::from(".")),
            Ok(Resolved::Entry {
                parent,
                name,
                exists: true,
                ..
            }) => (parent, name),
            Ok(Resolved::Entry { .. }) | Err(Errno::ENOENT) | Err(Errno::ENOTDIR) => {
                return Err(missing());
            }
            Err(e) => return Err(format!("cannot resolve {p} in stage {stage}: {e}")),
        };
        sources.push(Source {
            dir,
            name,
            label: PathBuf::from(format!("{stage}:{p}")),
            base: base_name(&p),
            written: p,
        });
    }
    Ok(sources)
}

/// Where a `%files` destination is inside the root: (directory, its path, name). The name is
/// `None` when the source goes into that directory under its own name: the destination is
/// an existing directory, or `into` (it ends with `/`, or several sources match) and it is
/// then made. Missing parents are made; `..` stops at the root and symlinks (planted by the
/// base image, say) resolve inside it, as in the container.
fn destination(
    root: BorrowedFd<'_>,
    dst: &str,
    into: bool,
) -> Result<(OwnedFd, Vec<u8>, Option<OsString>), String> {
    let mut mkdir = |d: BorrowedFd<'_>, n: &OsStr| {
        nix::sys::stat::mkdirat(d, n, Mode::from_bits_truncate(0o755))
    };
    let fail = |e: Errno| format!("cannot make destination {dst}: {e}");
    match resolve_in_root(root, dst.as_bytes(), Some(&mut mkdir)).map_err(fail)? {
        Resolved::Dir { fd, path } => Ok((fd, path, None)),
        Resolved::Entry {
            parent,
            parent_path,
            name,
            exists,
        } => {
            if !into {
                return Ok((parent, parent_path, Some(name)));
            }
            if exists {
                return Err(format!("destination {dst} is not a directory"));
            }
            mkdir(parent.as_fd(), &name).map_err(fail)?;
            let fd = nix::fcntl::openat(
                &parent,
                name.as_os_str(),
                OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(fail)?;
            let mut path = parent_path;
            if path != b"/" {
                path.push(b'/');
            }
            path.extend_from_slice(name.as_bytes());
            Ok((fd, path, None))
        }
    }
}

/// Copies `%files` entries into `rootfs` as root of the namespace. Destinations are resolved
/// inside `rootfs`; sources on the host, or inside the stage they are taken from.
fn copy_files(
    b: &Build,
    from: FilesFrom,
    rootfs: &Path,
    entries: &[FileCopy],
    dest_prefix: &str,
) -> anyhow::Result<()> {
    let entries = entries.to_vec();
    let (root, prefix) = (rootfs.to_path_buf(), dest_prefix.to_string());
    b.as_root(move || {
        let open = |p: &Path| {
            std::fs::File::open(p).map_err(|e| format!("%files: cannot open {}: {e}", p.display()))
        };
        let rfd = open(&root)?;
        let stage_fd = match &from {
            FilesFrom::Stage(_, p) => Some(open(p)?),
            FilesFrom::Host(_) => None,
        };
        for e in &entries {
            let at = |m: String| format!("line {}: %files: {m}", e.line);
            let sources =
                expand_sources(&from, stage_fd.as_ref().map(|f| f.as_fd()), &e.src).map_err(at)?;
            let multiple = sources.len() > 1;
            for s in sources {
                let (dst, into) = match &e.dst {
                    Some(d) => (d.clone(), multiple || d.ends_with('/')),
                    None => (s.written.trim_end_matches('/').to_string(), false),
                };
                let dst = format!("{prefix}{}", dst.trim_start_matches('/'));
                let (dir, path, name) = destination(rfd.as_fd(), &dst, into).map_err(at)?;
                let name = match name.or(s.base.clone()) {
                    Some(n) => n,
                    None => return Err(at(format!("cannot copy {} into a directory", s.written))),
                };
                extract::copy_at(
                    rfd.as_fd(),
                    s.dir.as_fd(),
                    &s.name,
                    &s.label,
                    dir.as_fd(),
                    &path,
                    &name,
                )
                .map_err(|x| at(x.to_string()))?;
            }
        }
        Ok(())
    })
}

/// Apptainer's build labels for a stage.
fn build_labels(stage: &Stage) -> BTreeMap<String, String> {
    let mut l = BTreeMap::new();
    l.insert(
        "org.label-schema.build-arch".into(),
        crate::image::sif::Arch::host().go_name().to_string(),
    );
    l.insert(
        "org.label-schema.build-date".into(),
        chrono::Utc::now()
            .format("%A_%-d_%B_%Y_%-H:%-M:%-S_UTC")
            .to_string(),
    );
    l.insert("org.label-schema.schema-version".into(), "1.0".into());
    if let Some(a) = stage.agent {
        l.insert(
            "org.label-schema.usage.singularity.deffile.bootstrap".into(),
            a.name().to_string(),
        );
    }
    if let Some(f) = stage.header.get("from") {
        l.insert(
            "org.label-schema.usage.singularity.deffile.from".into(),
            f.to_string(),
        );
    }
    l.insert(
        "org.label-schema.usage.apptainer.version".into(),
        format!(
            "{}+sifr.{}",
            crate::compat::APPTAINER_COMPAT_VERSION,
            crate::compat::SIFR_VERSION
        ),
    );
    if stage.sections.help.is_some() {
        l.insert(
            "org.label-schema.usage".into(),
            "/.singularity.d/runscript.help".into(),
        );
    }
    l
}

fn write_file(path: &Path, text: &str, mode: u32) -> anyhow::Result<()> {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p)?;
    }
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// Builds `stage` into `rootfs`.
pub fn build_stage(
    def: &Definition,
    stage: &Stage,
    rootfs: &Path,
    env: &StageEnv<'_>,
) -> anyhow::Result<()> {
    let b = env.build;
    let f = env.filter;
    // 1. The base root filesystem.
    if !env.update {
        bootstrap(stage, rootfs, env)?;
    }
    // 2. The /.singularity.d skeleton (as root of the namespace: the tree is root's), as
    // Apptainer's conveyor packers make it: a local image keeps its own files, a new root
    // gets the standard ones; an OCI image got them with its config when unpacked.
    let oci = matches!(
        stage.agent,
        Some(Agent::Docker | Agent::Oci | Agent::OciArchive | Agent::DockerArchive)
    );
    if env.update || !oci {
        let overwrite = !env.update && stage.agent != Some(Agent::Localimage);
        let r = rootfs.to_path_buf();
        b.as_root(move || {
            baseenv::write(&r, overwrite).map_err(|e| format!("cannot write /.singularity.d: {e}"))
        })?;
    }
    let sd = rootfs.join(".singularity.d");
    // 3. %setup on the host.
    if let Some(s) = stage
        .sections
        .setup
        .as_ref()
        .filter(|s| !s.is_empty() && f.runs(Section::Setup))
    {
        let script = rootfs.with_extension("setup.sh");
        write_file(&script, &s.body, 0o700)?;
        let argv = s.shell_command(&script.to_string_lossy());
        let root = rootfs.display().to_string();
        let r = host_command(
            b,
            "%setup",
            argv,
            vec![
                ("APPTAINER_ROOTFS".into(), root.clone()),
                ("SINGULARITY_ROOTFS".into(), root),
            ],
            env.cwd.to_path_buf(),
        );
        let _ = std::fs::remove_file(&script);
        r?;
    }
    // 4. %files, from the host and from earlier stages.
    if f.runs(Section::Files) {
        for block in &stage.sections.files {
            let from = match &block.from_stage {
                Some(name) => FilesFrom::Stage(
                    name.clone(),
                    env.stages
                        .get(name)
                        .cloned()
                        .with_context(|| format!("%files from {name}: no such stage was built"))?,
                ),
                None => FilesFrom::Host(env.cwd.to_path_buf()),
            };
            copy_files(b, from, rootfs, &block.entries, "/")?;
        }
    }
    // 5. %environment.
    if let Some(s) = stage
        .sections
        .environment
        .as_ref()
        .filter(|_| f.runs(Section::Environment))
    {
        // As Apptainer's insertEnvScript: appended after a blank line, or a new file.
        let p = sd.join("env/90-environment.sh");
        let text = match std::fs::read_to_string(&p) {
            Ok(mut t) => {
                t.push('\n');
                t.push_str(&s.body);
                t.push('\n');
                t
            }
            Err(_) => format!("#!/bin/sh\n\n{}\n", s.body),
        };
        write_file(&p, &text, 0o755)?;
    }
    // 6. %post inside the container.
    if let Some(s) = stage
        .sections
        .post
        .as_ref()
        .filter(|s| !s.is_empty() && f.runs(Section::Post))
    {
        container_script(env, rootfs, "%post", s, "/", "post")?;
    }
    // 7. SCIF apps.
    let apps = !matches!(f, SectionFilter::None);
    if apps {
        for name in &stage.app_order {
            let Some(app) = stage.apps.get(name) else {
                continue;
            };
            build_app(def, name, app, rootfs, env)?;
        }
        // Written even without apps (empty), as Apptainer's createAllApps does.
        write_file(
            &sd.join("env/94-appsbase.sh"),
            &appsbase(rootfs, &stage.app_order),
            0o755,
        )?;
    }
    // Labels %post wrote to $APPTAINER_LABELS.
    let post_labels = take_build_labels(b, rootfs)?;
    // 8. The metadata files.
    if let Some(s) = stage
        .sections
        .runscript
        .as_ref()
        .filter(|_| f.runs(Section::Runscript))
    {
        write_file(&sd.join("runscript"), &s.script_file(), 0o755)?;
    }
    if let Some(s) = stage
        .sections
        .startscript
        .as_ref()
        .filter(|_| f.runs(Section::Startscript))
    {
        write_file(&sd.join("startscript"), &s.script_file(), 0o755)?;
    }
    if let Some(s) = stage
        .sections
        .test
        .as_ref()
        .filter(|_| f.runs(Section::Test))
    {
        write_file(&sd.join("test"), &s.script_file(), 0o755)?;
    }
    if let Some(s) = stage
        .sections
        .help
        .as_ref()
        .filter(|_| f.runs(Section::Help))
    {
        write_file(&sd.join("runscript.help"), &s.body, 0o644)?;
    }
    if f.runs(Section::Labels) {
        let p = sd.join("labels.json");
        let mut labels: BTreeMap<String, String> = std::fs::read(&p)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        labels.extend(post_labels);
        labels.extend(build_labels(stage));
        labels.extend(stage.sections.labels.clone());
        write_file(&p, &labels_json(&labels)?, 0o644)?;
    }
    // The definition itself, the previous one kept in bootstrap_history (as `ApptainerN`,
    // Apptainer's name).
    let def_path = sd.join("Singularity");
    if def_path.exists() {
        let hist = sd.join("bootstrap_history");
        std::fs::create_dir_all(&hist)?;
        let n = std::fs::read_dir(&hist).map(|d| d.count()).unwrap_or(0);
        let _ = std::fs::rename(&def_path, hist.join(format!("Apptainer{n}")));
    }
    write_file(&def_path, &stage.raw, 0o644)?;
    // 9. %test, in the finished container.
    if !env.notest && f.runs(Section::Test) && stage.sections.test.is_some() {
        run_in_container(
            env,
            rootfs,
            "%test",
            "/",
            false,
            vec!["/.singularity.d/test".into()],
        )?;
    }
    let _ = def;
    Ok(())
}

fn bootstrap(stage: &Stage, rootfs: &Path, env: &StageEnv<'_>) -> anyhow::Result<()> {
    let b = env.build;
    let from = stage.header.get("from").map(str::trim);
    match stage.agent {
        Some(Agent::Scratch) => {
            std::fs::create_dir_all(rootfs)?;
            Ok(())
        }
        Some(Agent::Localimage) => {
            let from = from.context("Bootstrap: localimage needs a From: image")?;
            let path = if Path::new(from).is_absolute() {
                PathBuf::from(from)
            } else {
                env.cwd.join(from)
            };
            let kind = image::detect(&path)?;
            unpack_image(b, &path, kind, rootfs)
        }
        Some(Agent::Debootstrap) => {
            let suite = stage
                .header
                .get("osversion")
                .context("Bootstrap: debootstrap needs an OSVersion: (e.g. bookworm)")?;
            let mirror = stage
                .header
                .get("mirrorurl")
                .unwrap_or("http://deb.debian.org/debian");
            let mut argv = vec!["debootstrap".to_string(), "--variant=minbase".to_string()];
            if let Some(inc) = stage.header.get("include") {
                argv.push(format!(
                    "--include={}",
                    inc.split_whitespace().collect::<Vec<_>>().join(",")
                ));
            }
            argv.extend([
                suite.to_string(),
                rootfs.display().to_string(),
                mirror.to_string(),
            ]);
            std::fs::create_dir_all(rootfs)?;
            host_command(b, "debootstrap", argv, vec![], env.cwd.to_path_buf())
        }
        Some(Agent::Oras) => {
            // `From: REGISTRY/REPO:TAG` (Apptainer adds the `oras://`): the SIF is pulled
            // into the cache, then used as a local image.
            let from = from.context("Bootstrap: oras needs a From: image")?;
            let name = from.strip_prefix("oras://").unwrap_or(from);
            let image_ref = crate::build::oci::ImageRef::parse(name)?;
            let options = b
                .access
                .fetch_options(&crate::build::oci::Source::Registry(image_ref.clone()))?;
            let cache = crate::build::oci::BlobCache::from_env()?;
            let path = crate::build::oci::oras::pull_sif(&image_ref, &options, &cache)?;
            let kind = image::detect(&path)?;
            unpack_image(b, &path, kind, rootfs)
        }
        Some(a @ (Agent::Docker | Agent::Oci | Agent::OciArchive | Agent::DockerArchive)) => {
            let from =
                from.with_context(|| format!("Bootstrap: {} needs a From: image", a.name()))?;
            let source = oci_source(stage, a, from, env.cwd)?;
            let image = b.access.fetch(&source)?;
            unpack_oci(b, &image, rootfs).map(|_| ())
        }
        Some(_) | None => check_agent(stage),
    }
}

/// Fails, with the reason, for a stage whose bootstrap agent sifr does not build from: run
/// before the build starts, so an unsupported definition costs nothing.
pub fn check_agent(stage: &Stage) -> anyhow::Result<()> {
    match stage.agent {
        Some(
            Agent::Scratch
            | Agent::Localimage
            | Agent::Debootstrap
            | Agent::Oras
            | Agent::Docker
            | Agent::Oci
            | Agent::OciArchive
            | Agent::DockerArchive,
        ) => Ok(()),
        Some(a) => bail!(
            "Bootstrap: {} is not supported by sifr (supported: localimage, scratch, \
             debootstrap, oras, docker, oci, oci-archive, docker-archive)",
            a.name()
        ),
        None if stage.header.get("bootstrap").is_none() => {
            bail!("the definition has no Bootstrap: header")
        }
        None => bail!("the definition's Bootstrap: header names no agent sifr knows"),
    }
}

/// The OCI source a `Bootstrap: docker|oci|oci-archive|docker-archive` header names:
/// `Registry:` and `Namespace:` complete a docker name; relative paths are taken from the
/// directory the build runs in.
fn oci_source(
    stage: &Stage,
    agent: Agent,
    from: &str,
    cwd: &Path,
) -> anyhow::Result<crate::build::oci::Source> {
    use crate::build::oci::Source;
    let mut from = from.to_string();
    if agent == Agent::Docker {
        let first = from.split('/').next().unwrap_or("");
        let has_registry = from.contains('/')
            && (first.contains('.') || first.contains(':') || first == "localhost");
        if !has_registry {
            if let Some(ns) = stage
                .header
                .get("namespace")
                .map(str::trim)
                .filter(|n| !n.is_empty())
                && !from.contains('/')
            {
                from = format!("{}/{from}", ns.trim_end_matches('/'));
            }
            if let Some(reg) = stage
                .header
                .get("registry")
                .map(str::trim)
                .filter(|r| !r.is_empty())
            {
                from = format!("{}/{from}", reg.trim_end_matches('/'));
            }
        }
    } else if !from.starts_with('/') {
        from = cwd.join(&from).display().to_string();
    }
    Ok(Source::from_bootstrap(agent.name(), &from)?)
}

/// Builds one SCIF app as Apptainer's `internal/pkg/build/apps` does: its directories
/// (`bin`, `lib`, `scif/env`, the data directories), `scif/env/01-base.sh` with the app's
/// SCIF variables, `%appenv` as `scif/env/90-environment.sh`, the scripts, `labels.json`
/// (with `SCIF_APP_NAME`), `%appfiles`; then `%appinstall` in the container, after sourcing
/// the app's 01-base.sh, in the app's directory.
fn build_app(
    _def: &Definition,
    name: &str,
    app: &super::deffile::App,
    rootfs: &Path,
    env: &StageEnv<'_>,
) -> anyhow::Result<()> {
    let base = format!("/scif/apps/{name}");
    let scif = rootfs.join(format!("scif/apps/{name}/scif"));
    for d in ["scif/env", "bin", "lib"] {
        std::fs::create_dir_all(rootfs.join(format!("scif/apps/{name}/{d}")))?;
    }
    std::fs::create_dir_all(rootfs.join(format!("scif/data/{name}/input")))?;
    std::fs::create_dir_all(rootfs.join(format!("scif/data/{name}/output")))?;
    write_file(&scif.join("env/01-base.sh"), &app_base_env(name), 0o755)?;
    if let Some(e) = app.env.as_ref().filter(|e| !e.is_empty()) {
        write_file(&scif.join("env/90-environment.sh"), &e.body, 0o755)?;
    }
    if let Some(s) = &app.run {
        write_file(&scif.join("runscript"), &s.script_file(), 0o755)?;
    }
    if let Some(s) = &app.start {
        write_file(&scif.join("startscript"), &s.script_file(), 0o755)?;
    }
    if let Some(s) = &app.test {
        write_file(&scif.join("test"), &s.script_file(), 0o755)?;
    }
    if let Some(s) = &app.help {
        write_file(&scif.join("runscript.help"), &s.body, 0o644)?;
    }
    if !app.files.is_empty() {
        let from = FilesFrom::Host(env.cwd.to_path_buf());
        copy_files(env.build, from, rootfs, &app.files, &format!("{base}/"))?;
    }
    let mut labels = app.labels.clone();
    labels.insert("SCIF_APP_NAME".into(), name.to_string());
    write_file(&scif.join("labels.json"), &labels_json(&labels)?, 0o644)?;
    if let Some(s) = app.install.as_ref().filter(|s| !s.is_empty()) {
        let body = format!(
            "\ncd /\n. {base}/scif/env/01-base.sh\n\ncd {base}\n{}\n\ncd /\n",
            s.body
        );
        let file = format!("appinstall-{name}");
        script_body(
            env,
            rootfs,
            &format!("%appinstall {name}"),
            &body,
            &s.shell_command(&format!("/.{file}.script")),
            "/",
            &file,
        )?;
    }
    let _ = AppPart::Install;
    Ok(())
}

/// An app's `scif/env/01-base.sh`: its SCIF variables, as Apptainer writes them.
fn app_base_env(name: &str) -> String {
    format!(
        "#!/bin/sh\n\nSCIF_APPNAME={name}\nSCIF_APPROOT=\"/scif/apps/{name}\"\n\
         SCIF_APPMETA=\"/scif/apps/{name}/scif\"\nSCIF_DATA=\"/scif/data\"\n\
         SCIF_APPDATA=\"/scif/data/{name}\"\nSCIF_APPINPUT=\"/scif/data/{name}/input\"\n\
         SCIF_APPOUTPUT=\"/scif/data/{name}/output\"\n\
         export SCIF_APPDATA SCIF_APPNAME SCIF_APPROOT SCIF_APPMETA SCIF_APPINPUT \
         SCIF_APPOUTPUT SCIF_DATA\n"
    )
}

/// Labels as Apptainer writes labels.json: keys sorted, tab indented.
fn labels_json(labels: &BTreeMap<String, String>) -> anyhow::Result<String> {
    use serde::Serialize as _;
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(
        &mut out,
        serde_json::ser::PrettyFormatter::with_indent(b"\t"),
    );
    labels.serialize(&mut ser)?;
    Ok(String::from_utf8(out)?)
}

/// `/.singularity.d/env/94-appsbase.sh`: where each app lives, as Apptainer writes it (the
/// app's files made so far decide which variables it has).
fn appsbase(rootfs: &Path, apps: &[String]) -> String {
    let mut s = String::new();
    for a in apps {
        let v: String = a
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        s.push_str(&format!(
            "## App Global Exports For: {v}\n\n\
             SCIF_APPDATA_{v}=/scif/data/{v}\n\
             SCIF_APPMETA_{v}=/scif/apps/{v}/scif\n\
             SCIF_APPROOT_{v}=/scif/apps/{v}\n\
             SCIF_APPBIN_{v}=/scif/apps/{v}/bin\n\
             SCIF_APPLIB_{v}=/scif/apps/{v}/lib\n\n\
             export SCIF_APPDATA_{v} SCIF_APPMETA_{v} SCIF_APPROOT_{v} SCIF_APPBIN_{v} \
             SCIF_APPLIB_{v}\n"
        ));
        let meta = rootfs.join(format!("scif/apps/{a}/scif"));
        for (file, var) in [
            ("env/90-environment.sh", "APPENV"),
            ("labels.json", "APPLABELS"),
            ("runscript", "APPRUN"),
            ("startscript", "APPSTART"),
        ] {
            if std::fs::symlink_metadata(meta.join(file)).is_ok() {
                s.push_str(&format!(
                    "export SCIF_{var}_{v}=\"/scif/apps/{v}/scif/{file}\"\n"
                ));
            }
        }
    }
    s
}
