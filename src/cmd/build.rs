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
