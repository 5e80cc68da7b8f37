//! `build`: the typed flags, as a `build::pipeline::Request` (the library does the build).
//!
//! An unprivileged build is a fakeroot build (as Apptainer's): the work that creates files
//! runs as root of a fakeroot user namespace, so the image's files are root-owned where the
//! build made them as root.

use super::{Context, registry_access};
use crate::build::pipeline::{self, Request};
use crate::cli::build::BuildArgs;

/// The build flags as a build request.
fn request(a: BuildArgs) -> Request {
    Request {
        access: registry_access(&a.registry),
        spec: a.spec,
        dest: a.dest,
        sandbox: a.sandbox,
        force: a.force,
        update: a.update,
        notest: a.notest,
        sections: a.section,
        fix_perms: a.fix_perms,
        tmpdir: a.tmpdir,
        build_args: a.build_arg,
        build_arg_file: a.build_arg_file,
        warn_unused_build_args: a.warn_unused_build_args,
        mksquashfs_args: a.mksquashfs_args,
        reproducible: a.reproducible,
        binds: a.bind,
        no_cleanup: a.no_cleanup,
        ignore_subuid: a.ignore_subuid,
    }
}

/// `sifr build`: returns 0 when the build succeeded; a failed build reported itself and
/// ended this process with its exit status (see `build::pipeline::run`).
pub fn build(_ctx: &Context, a: BuildArgs) -> anyhow::Result<i32> {
    pipeline::run(&request(a))?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Args as _, FromArgMatches as _};

    /// `sifr build DEST SPEC` without flags is `Request::new` (what the OCI conversion behind
    /// `pull` builds with, now that it no longer parses a made-up command line).
    #[test]
    fn test_build_without_flags_is_the_default_request() {
        let cmd = BuildArgs::augment_args(clap::Command::new("build").no_binary_name(true));
        let m = cmd
            .try_get_matches_from(["out.sif", "docker://alpine"])
            .expect("parse");
        let a = BuildArgs::from_arg_matches(&m).expect("args");
        // The flags that also read the environment (SIFR_FORCE, SIFR_TMPDIR, ...) as the
        // environment gives them; the rest must be the library's defaults.
        let mut want = Request::new("out.sif".into(), "docker://alpine".into());
        want.force = a.force;
        want.tmpdir = a.tmpdir.clone();
        want.ignore_subuid = a.ignore_subuid;
        want.access = registry_access(&a.registry);
        assert_eq!(request(a), want);
    }
}
