//! Building one stage of a definition file into a root filesystem directory: the bootstrap
//! agent, then the sections in Apptainer's order (setup, files, environment, post, apps,
//! runscript/startscript/test/labels/help, test run), as root of the build's fakeroot user
//! namespace. Scripts that run inside the container (`%post`, `%appinstall`, `%test`) run
//! through sifr itself (`exec --fakeroot --writable` on the stage's directory), as Apptainer
//! re-invokes itself.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

use super::baseenv;
use super::deffile::{Agent, AppPart, Definition, FileCopy, Script, Section, SectionFilter, Stage};
use super::supervise;
use crate::cmd::build::{Build, fetch_oci, unpack_image, unpack_oci};
use crate::image::{self, extract};

/// What a stage build needs besides the definition.
pub struct StageEnv<'a> {
    pub build: &'a Build,
    pub filter: &'a SectionFilter,
    pub notest: bool,
    /// `-B` binds for `%post`/`%test`.
    pub binds: &'a [String],
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
    let inside = format!("/.{name}.script");
    let host = rootfs.join(inside.trim_start_matches('/'));
    std::fs::write(&host, &script.body)
        .with_context(|| format!("cannot write {}", host.display()))?;
    std::fs::set_permissions(&host, std::fs::Permissions::from_mode(0o755))?;
    let r = run_in_container(env, rootfs, what, pwd, true, script.shell_command(&inside));
    let _ = std::fs::remove_file(&host);
    r
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
    cmd.arg("--env")
        .arg("APPTAINER_ENVIRONMENT=/.singularity.d/env/91-environment.sh")
        .arg("--env")
        .arg("SINGULARITY_ENVIRONMENT=/.singularity.d/env/91-environment.sh")
        .arg(rootfs)
        .args(&command);
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

/// Expands one `%files` source (globs allowed) relative to `base`.
fn expand_sources(base: &Path, src: &str) -> anyhow::Result<Vec<PathBuf>> {
    let pattern = if Path::new(src).is_absolute() {
        PathBuf::from(src)
    } else {
        base.join(src)
    };
    let pat = pattern.to_string_lossy().into_owned();
    if !pat.contains(['*', '?', '[']) {
        if std::fs::symlink_metadata(&pattern).is_err() {
            bail!("%files: {} does not exist", pattern.display());
        }
        return Ok(vec![pattern]);
    }
    let mut out: Vec<PathBuf> = glob::glob(&pat)
        .with_context(|| format!("%files: bad pattern {src:?}"))?
        .filter_map(Result::ok)
        .collect();
    out.sort();
    if out.is_empty() {
        bail!("%files: no file matches {src:?}");
    }
    Ok(out)
}

/// Copies `%files` entries into `rootfs` as root of the namespace.
fn copy_files(
    b: &Build,
    base: &Path,
    rootfs: &Path,
    entries: &[FileCopy],
    dest_prefix: &str,
) -> anyhow::Result<()> {
    let mut pairs = Vec::new();
    for e in entries {
        let sources = expand_sources(base, &e.src).with_context(|| format!("line {}", e.line))?;
        let dst = e.dst.clone().unwrap_or_else(|| e.src.clone());
        let dst = format!("{dest_prefix}{}", dst.trim_start_matches('/'));
        let multiple = sources.len() > 1;
        for s in sources {
            pairs.push((s, dst.clone(), multiple || dst.ends_with('/')));
        }
    }
    let root = rootfs.to_path_buf();
    b.as_root(move || {
        for (src, dst, into) in pairs {
            let target = root.join(dst.trim_start_matches('/'));
            // Into a directory: an existing one, or a destination ending with '/'.
            let target = if into || target.is_dir() {
                let name = src
                    .file_name()
                    .ok_or_else(|| format!("%files: bad source {}", src.display()))?;
                target.join(name)
            } else {
                target
            };
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| format!("%files: cannot create {}: {e}", parent.display()))?;
            }
            extract::copy_tree(&src, &target).map_err(|e| format!("%files: {e}"))?;
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
    // 2. The /.singularity.d skeleton (as root of the namespace: the tree is root's).
    let r = rootfs.to_path_buf();
    b.as_root(move || {
        baseenv::write(&r).map_err(|e| format!("cannot write /.singularity.d: {e}"))
    })?;
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
            let base = match &block.from_stage {
                Some(name) => env
                    .stages
                    .get(name)
                    .cloned()
                    .with_context(|| format!("%files from {name}: no such stage was built"))?,
                None => env.cwd.to_path_buf(),
            };
            copy_files(b, &base, rootfs, &block.entries, "/")?;
        }
    }
    // 5. %environment.
    if let Some(s) = stage
        .sections
        .environment
        .as_ref()
        .filter(|_| f.runs(Section::Environment))
    {
        let p = sd.join("env/90-environment.sh");
        let mut text = std::fs::read_to_string(&p).unwrap_or_default();
        text.push_str(&s.body);
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
        if !stage.app_order.is_empty() {
            write_file(
                &sd.join("env/94-appsbase.sh"),
                &appsbase(&stage.app_order),
                0o755,
            )?;
        }
    }
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
        labels.extend(build_labels(stage));
        labels.extend(stage.sections.labels.clone());
        write_file(&p, &serde_json::to_string_pretty(&labels)?, 0o644)?;
    }
    // The definition itself, the previous one kept in bootstrap_history.
    let def_path = sd.join("Singularity");
    if def_path.exists() {
        let hist = sd.join("bootstrap_history");
        std::fs::create_dir_all(&hist)?;
        let n = std::fs::read_dir(&hist).map(|d| d.count()).unwrap_or(0);
        let _ = std::fs::rename(&def_path, hist.join(format!("Singularity{n}")));
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
        Some(a @ (Agent::Docker | Agent::Oci | Agent::OciArchive | Agent::DockerArchive)) => {
            let from =
                from.with_context(|| format!("Bootstrap: {} needs a From: image", a.name()))?;
            let source = oci_source(stage, a, from, env.cwd)?;
            let image = fetch_oci(&source, &b.access)?;
            unpack_oci(b, &image, rootfs).map(|_| ())
        }
        Some(a) => bail!(
            "Bootstrap: {} is not supported by sifr (supported: localimage, scratch, \
             debootstrap, docker, oci, oci-archive, docker-archive)",
            a.name()
        ),
        None => bail!("the definition has no Bootstrap: header"),
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

fn build_app(
    _def: &Definition,
    name: &str,
    app: &super::deffile::App,
    rootfs: &Path,
    env: &StageEnv<'_>,
) -> anyhow::Result<()> {
    let base = format!("/scif/apps/{name}");
    let scif = rootfs.join(format!("scif/apps/{name}/scif"));
    for d in ["env", ""] {
        std::fs::create_dir_all(scif.join(d))?;
    }
    std::fs::create_dir_all(rootfs.join(format!("scif/data/{name}/input")))?;
    std::fs::create_dir_all(rootfs.join(format!("scif/data/{name}/output")))?;
    if !app.files.is_empty() {
        copy_files(env.build, env.cwd, rootfs, &app.files, &format!("{base}/"))?;
    }
    write_file(&scif.join("env/01-base.sh"), "#!/bin/sh\n", 0o755)?;
    let mut envtext = String::from("#!/bin/sh\n");
    if let Some(e) = &app.env {
        envtext.push_str(&e.body);
    }
    write_file(&scif.join("env/90-environment.sh"), &envtext, 0o755)?;
    if let Some(s) = &app.run {
        write_file(&scif.join("runscript"), &s.script_file(), 0o755)?;
    }
    if let Some(s) = &app.test {
        write_file(&scif.join("test"), &s.script_file(), 0o755)?;
    }
    if let Some(s) = &app.start {
        write_file(&scif.join("startscript"), &s.script_file(), 0o755)?;
    }
    if let Some(s) = &app.help {
        write_file(&scif.join("runscript.help"), &s.body, 0o644)?;
    }
    if !app.labels.is_empty() {
        write_file(
            &scif.join("labels.json"),
            &serde_json::to_string_pretty(&app.labels)?,
            0o644,
        )?;
    }
    if let Some(s) = app.install.as_ref().filter(|s| !s.is_empty()) {
        container_script(
            env,
            rootfs,
            &format!("%appinstall {name}"),
            s,
            &base,
            &format!("appinstall-{name}"),
        )?;
    }
    let _ = AppPart::Install;
    Ok(())
}

/// `/.singularity.d/env/94-appsbase.sh`: where each app lives, for SCIF.
fn appsbase(apps: &[String]) -> String {
    let mut s = String::from("#!/bin/sh\n");
    for a in apps {
        let v = a.replace(['-', '.'], "_");
        for (k, p) in [
            ("SCIF_APPDATA", format!("/scif/data/{a}")),
            ("SCIF_APPMETA", format!("/scif/apps/{a}/scif")),
            ("SCIF_APPROOT", format!("/scif/apps/{a}")),
            ("SCIF_APPBIN", format!("/scif/apps/{a}/bin")),
            ("SCIF_APPLIB", format!("/scif/apps/{a}/lib")),
            ("SCIF_APPINPUT", format!("/scif/data/{a}/input")),
            ("SCIF_APPOUTPUT", format!("/scif/data/{a}/output")),
            (
                "SCIF_APPENV",
                format!("/scif/apps/{a}/scif/env/90-environment.sh"),
            ),
            ("SCIF_APPRUN", format!("/scif/apps/{a}/scif/runscript")),
            ("SCIF_APPTEST", format!("/scif/apps/{a}/scif/test")),
            (
                "SCIF_APPHELP",
                format!("/scif/apps/{a}/scif/runscript.help"),
            ),
            ("SCIF_APPLABELS", format!("/scif/apps/{a}/scif/labels.json")),
        ] {
            s.push_str(&format!("{k}_{v}={p}\nexport {k}_{v}\n"));
        }
    }
    s
}
