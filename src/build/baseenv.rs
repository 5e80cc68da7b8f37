//! The `/.singularity.d` skeleton every built image gets, as Apptainer lays it out
//! (apptainer-contract.md §4.1): directories, the legacy action scripts, the standard
//! environment files, default runscript and startscript, and the legacy symlinks.
//!
//! The file contents are sifr's own but behave as Apptainer's: the action scripts are what
//! old runtimes call, the environment files are what every runtime sources.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Sources the environment; shared by every legacy action script.
const SOURCE_ENV: &str = "for script in /.singularity.d/env/*.sh; do\n    if [ -f \"$script\" ]; then\n        . \"$script\"\n    fi\ndone\n";

fn action(body: &str) -> String {
    format!("#!/bin/sh\n\n{SOURCE_ENV}\n{body}")
}

/// `(path, mode, contents)` of every skeleton file.
pub fn files() -> Vec<(&'static str, u32, String)> {
    let exec = action("exec \"$@\"\n");
    let run = action(
        "if test -n \"${APPTAINER_APPNAME:-}\"; then\n\
         \x20   if test -x \"/scif/apps/${APPTAINER_APPNAME}/scif/runscript\"; then\n\
         \x20       exec \"/scif/apps/${APPTAINER_APPNAME}/scif/runscript\" \"$@\"\n\
         \x20   fi\n\
         \x20   echo \"No runscript for the container application ${APPTAINER_APPNAME}\"\n\
         \x20   exit 1\n\
         elif test -x /.singularity.d/runscript; then\n\
         \x20   exec /.singularity.d/runscript \"$@\"\n\
         fi\n\
         echo \"No runscript found, executing /bin/sh\"\n\
         exec /bin/sh \"$@\"\n",
    );
    let shell = action(
        "if test -n \"${APPTAINER_SHELL:-}\" -a -x \"${APPTAINER_SHELL:-}\"; then\n\
         \x20   exec $APPTAINER_SHELL \"$@\"\n\
         elif test -x /bin/bash; then\n\
         \x20   SHELL=/bin/bash\n\
         \x20   PS1=\"Apptainer ${APPTAINER_NAME:-}:\\\\w> \"\n\
         \x20   export SHELL PS1\n\
         \x20   exec /bin/bash --norc \"$@\"\n\
         elif test -x /bin/sh; then\n\
         \x20   SHELL=/bin/sh\n\
         \x20   export SHELL\n\
         \x20   exec /bin/sh \"$@\"\n\
         fi\n\
         echo \"ERROR: /bin/sh does not exist in the container\" 1>&2\n\
         exit 1\n",
    );
    let start = format!(
        "#!/bin/sh\n\n# The instance is up: let PID 1 continue.\nkill -CONT 1\n\n{SOURCE_ENV}\n\
         if test -x /.singularity.d/startscript; then\n    exec /.singularity.d/startscript\nfi\n"
    );
    let test = action(
        "if test -n \"${APPTAINER_APPNAME:-}\"; then\n\
         \x20   if test -x \"/scif/apps/${APPTAINER_APPNAME}/scif/test\"; then\n\
         \x20       exec \"/scif/apps/${APPTAINER_APPNAME}/scif/test\" \"$@\"\n\
         \x20   fi\n\
         \x20   echo \"No tests for the container application ${APPTAINER_APPNAME}\"\n\
         \x20   exit 1\n\
         elif test -x /.singularity.d/test; then\n\
         \x20   exec /.singularity.d/test \"$@\"\n\
         fi\n\
         echo \"No test found in the container, executing /bin/sh -c true\"\n\
         exec /bin/sh -c true\n",
    );
    let apps = "#!/bin/sh\n# Activates the SCIF application named by $APPTAINER_APPNAME.\n\
        if test -n \"${APPTAINER_APPNAME:-}\"; then\n\
        \x20   export APPTAINER_APPNAME\n\
        \x20   if test -d \"/scif/apps/${APPTAINER_APPNAME}/\"; then\n\
        \x20       SCIF_APPS=/scif/apps\n\
        \x20       SCIF_APPROOT=\"/scif/apps/${APPTAINER_APPNAME}\"\n\
        \x20       export SCIF_APPROOT SCIF_APPS\n\
        \x20       PATH=\"/scif/apps/${APPTAINER_APPNAME}:$PATH\"\n\
        \x20       if test -d \"/scif/apps/${APPTAINER_APPNAME}/bin\"; then\n\
        \x20           PATH=\"/scif/apps/${APPTAINER_APPNAME}/bin:$PATH\"\n\
        \x20       fi\n\
        \x20       if test -d \"/scif/apps/${APPTAINER_APPNAME}/lib\"; then\n\
        \x20           LD_LIBRARY_PATH=\"/scif/apps/${APPTAINER_APPNAME}/lib:${LD_LIBRARY_PATH:-}\"\n\
        \x20           export LD_LIBRARY_PATH\n\
        \x20       fi\n\
        \x20       for f in 01-base.sh 90-environment.sh; do\n\
        \x20           if [ -f \"/scif/apps/${APPTAINER_APPNAME}/scif/env/$f\" ]; then\n\
        \x20               . \"/scif/apps/${APPTAINER_APPNAME}/scif/env/$f\"\n\
        \x20           fi\n\
        \x20       done\n\
        \x20       export PATH\n\
        \x20   else\n\
        \x20       echo \"Could not locate the container application: ${APPTAINER_APPNAME}\"\n\
        \x20       exit 1\n\
        \x20   fi\n\
        fi\n"
        .to_string();
    // Apptainer's current 99-base.sh (its code, not its licence comment): the libs
    // directory appended, PS1 set only when the caller has none.
    let base99 = "#!/bin/sh\n\n\
        if [ -z \"${LD_LIBRARY_PATH:-}\" ]; then\n\
        \x20   LD_LIBRARY_PATH=\"/.singularity.d/libs\"\n\
        else\n\
        \x20   LD_LIBRARY_PATH=\"$LD_LIBRARY_PATH:/.singularity.d/libs\"\n\
        fi\n\n\
        if [ -z \"${PS1:-}\" ]; then\n\
        \x20   PS1=\"Apptainer> \"\n\
        fi\n\
        export LD_LIBRARY_PATH PS1\n"
        .to_string();
    let runtimevars = "#!/bin/sh\n\
        if [ -n \"${SING_USER_DEFINED_PREPEND_PATH:-}\" ]; then\n\
        \x20   PATH=\"${SING_USER_DEFINED_PREPEND_PATH}:${PATH}\"\n\
        fi\n\
        if [ -n \"${SING_USER_DEFINED_APPEND_PATH:-}\" ]; then\n\
        \x20   PATH=\"${PATH}:${SING_USER_DEFINED_APPEND_PATH}\"\n\
        fi\n\
        if [ -n \"${SING_USER_DEFINED_PATH:-}\" ]; then\n\
        \x20   PATH=\"${SING_USER_DEFINED_PATH}\"\n\
        fi\n\
        unset SING_USER_DEFINED_PREPEND_PATH SING_USER_DEFINED_APPEND_PATH SING_USER_DEFINED_PATH\n\
        export PATH\n"
        .to_string();
    vec![
        (".singularity.d/actions/exec", 0o755, exec),
        (".singularity.d/actions/run", 0o755, run),
        (".singularity.d/actions/shell", 0o755, shell),
        (".singularity.d/actions/start", 0o755, start),
        (".singularity.d/actions/test", 0o755, test),
        (".singularity.d/env/01-base.sh", 0o755, "#!/bin/sh\n".into()),
        (
            ".singularity.d/env/90-environment.sh",
            0o755,
            "#!/bin/sh\n# Custom environment shell code should follow\n\n".into(),
        ),
        (".singularity.d/env/95-apps.sh", 0o755, apps),
        (".singularity.d/env/99-base.sh", 0o755, base99),
        (".singularity.d/env/99-runtimevars.sh", 0o755, runtimevars),
        (
            ".singularity.d/runscript",
            0o755,
            "#!/bin/sh\n\necho \"There is no runscript defined for this container\"\n".into(),
        ),
        (".singularity.d/startscript", 0o755, "#!/bin/sh\n".into()),
    ]
}

/// Directories every image has.
pub const DIRS: [&str; 11] = [
    ".singularity.d/libs",
    ".singularity.d/actions",
    ".singularity.d/env",
    "dev",
    "proc",
    "root",
    "var/tmp",
    "tmp",
    "etc",
    "sys",
    "home",
];

/// Legacy symlinks: (link, target).
pub const LINKS: [(&str, &str); 7] = [
    ("singularity", ".singularity.d/runscript"),
    ("apptainer", ".singularity.d/runscript"),
    (".run", ".singularity.d/actions/run"),
    (".exec", ".singularity.d/actions/exec"),
    (".test", ".singularity.d/actions/test"),
    (".shell", ".singularity.d/actions/shell"),
    ("environment", ".singularity.d/env/90-environment.sh"),
];

/// Creates the skeleton in `root` (an unpacked root filesystem), as Apptainer's
/// `makeBaseEnv`: the root gets owner write permission, the directories and links are made
/// where missing, and the standard files are written; with `overwrite` false (a
/// `localimage` base, a directory source, `--update`) files the image has are kept (its
/// environment, its 99-base.sh and PS1, its scripts), only their mode set. `/etc/hosts` and
/// `/etc/resolv.conf` are created empty when missing (they are mount points at run time).
/// `91-environment.sh` is not made: `%post` creates it when it writes to
/// `$APPTAINER_ENVIRONMENT`, as in Apptainer.
pub fn write(root: &Path, overwrite: bool) -> std::io::Result<()> {
    let md = std::fs::metadata(root)?;
    if md.permissions().mode() & 0o200 == 0 {
        let mode = md.permissions().mode() & 0o7777;
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(mode | 0o200))?;
    }
    for d in DIRS {
        std::fs::create_dir_all(root.join(d))?;
    }
    for (link, target) in LINKS {
        let p = root.join(link);
        if std::fs::symlink_metadata(&p).is_err() {
            std::os::unix::fs::symlink(target, &p)?;
        }
    }
    for f in ["etc/hosts", "etc/resolv.conf"] {
        let p = root.join(f);
        if std::fs::symlink_metadata(&p).is_err() {
            std::fs::write(&p, b"")?;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644))?;
        }
    }
    for (path, mode, contents) in files() {
        let p = root.join(path);
        let existing = std::fs::symlink_metadata(&p).ok();
        if let Some(m) = &existing {
            if m.is_file() && !overwrite {
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))?;
                continue;
            }
            if m.file_type().is_symlink() {
                std::fs::remove_file(&p)?;
            }
        }
        std::fs::write(&p, contents)?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_skeleton_scripts_are_valid_sh_and_complete() {
        for (path, _, text) in files() {
            let out = std::process::Command::new("/bin/sh")
                .args(["-n", "-c", &text])
                .output()
                .expect("sh");
            assert!(
                out.status.success(),
                "{path}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let t = tempfile::tempdir().expect("tmp");
        write(t.path(), true).expect("write");
        assert!(t.path().join(".singularity.d/env/99-base.sh").is_file());
        assert!(
            !t.path()
                .join(".singularity.d/env/91-environment.sh")
                .exists()
        );
        assert_eq!(
            std::fs::read_link(t.path().join("singularity")).expect("link"),
            Path::new(".singularity.d/runscript")
        );
        // Running it twice is fine.
        write(t.path(), true).expect("again");
    }

    #[test]
    fn test_a_base_images_files_are_kept_unless_overwritten() {
        let t = tempfile::tempdir().expect("tmp");
        let env = t.path().join(".singularity.d/env");
        std::fs::create_dir_all(&env).expect("mkdir");
        std::fs::write(env.join("99-base.sh"), "PS1=\"Singularity> \"\n").expect("write");
        std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o555)).expect("ro");
        write(t.path(), false).expect("write");
        assert_eq!(
            std::fs::read_to_string(env.join("99-base.sh")).expect("read"),
            "PS1=\"Singularity> \"\n"
        );
        // The root got owner write permission, the missing files were made.
        assert_eq!(
            std::fs::metadata(t.path())
                .expect("md")
                .permissions()
                .mode()
                & 0o777,
            0o755
        );
        assert!(env.join("01-base.sh").is_file());
        write(t.path(), true).expect("overwrite");
        assert!(
            std::fs::read_to_string(env.join("99-base.sh"))
                .expect("read")
                .contains("Apptainer> ")
        );
    }
}
