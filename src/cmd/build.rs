//! `build`: the typed flags, as a `build::pipeline::Request` (the library does the build).
//!
//! An unprivileged build is a fakeroot build (as Apptainer's): the work that creates files
//! runs as root of a fakeroot user namespace, so the image's files are root-owned where the
//! build made them as root.

use super::{Context, registry_access};
use crate::build::pipeline::{self, Request};
use crate::cli::build::BuildArgs;
use crate::config::Config;

/// The build flags as a build request, with the sifr.conf settings a build reads
/// (`mksquashfs procs`).
fn request(a: BuildArgs, cfg: &Config) -> Request {
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
        squash_threads: usize::try_from(cfg.mksquashfs_procs).unwrap_or(usize::MAX),
        helper_dirs: cfg.setuid_helper_dirs(),
        reproducible: a.reproducible,
        binds: a.bind,
        gpu_flags: [(a.nv, "--nv"), (a.rocm, "--rocm")]
            .into_iter()
            .filter(|(on, _)| *on)
            .map(|(_, f)| f.to_string())
            .collect(),
        no_cleanup: a.no_cleanup,
        disable_cache: a.disable_cache,
        ignore_subuid: a.ignore_subuid,
    }
}

/// `sifr build`: returns 0 when the build succeeded; a failed build reported itself and
/// ended this process with its exit status (see `build::pipeline::run`).
pub fn build(ctx: &Context, a: BuildArgs) -> anyhow::Result<i32> {
    if let Some((flag, why)) = a.refused() {
        anyhow::bail!("build {flag} is not supported by sifr: {why}");
    }
    let platform = match (&a.arch, &a.arch_variant) {
        (None, None) => None,
        (None, Some(v)) => anyhow::bail!("build --arch-variant {v} needs --arch"),
        (Some(arch), variant) => {
            let host = crate::image::sif::Arch::host().go_name();
            let registry = a.spec.starts_with("docker://") || a.spec.starts_with("oras://");
            if (arch != host || variant.is_some()) && !registry {
                anyhow::bail!(
                    "build --arch {arch} is not supported by sifr for {}: only a docker:// or \
                     oras:// source is built for another platform than the host's ({host}), \
                     as nothing of it runs",
                    a.spec
                );
            }
            let mut p = crate::build::oci::PlatformSpec::from_arch(arch)?;
            if crate::image::sif::Arch::from_go_name(&p.architecture).is_none() {
                anyhow::bail!(
                    "build --arch {arch}: sifr cannot label a SIF with this architecture"
                );
            }
            if let Some(v) = variant {
                p.variant = Some(v.clone());
            }
            Some(p)
        }
    };
    let cfg = super::action::load_config(ctx)?;
    let registry = a.registry.clone();
    let mut req = request(a, &cfg);
    req.access.platform = platform;
    super::docker_login(&registry, &mut req.access)?;
    pipeline::run(&req)?;
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
        assert!(a.refused().is_none());
        assert_eq!(request(a, &Config::default()), want);
    }

    /// `mksquashfs procs` reaches the squashfs writer's thread count.
    #[test]
    fn test_mksquashfs_procs_sets_the_writer_threads() {
        let cmd = BuildArgs::augment_args(clap::Command::new("build").no_binary_name(true));
        let m = cmd
            .try_get_matches_from(["out.sif", "docker://alpine"])
            .expect("parse");
        let a = BuildArgs::from_arg_matches(&m).expect("args");
        let cfg = Config {
            mksquashfs_procs: 3,
            ..Config::default()
        };
        assert_eq!(request(a, &cfg).squash_threads, 3);
    }

    /// Apptainer's build flags that sifr does not implement are refused, each with why; the
    /// ones whose effect sifr always has are accepted.
    #[test]
    fn test_unimplemented_apptainer_flags_are_refused() {
        let parse = |args: &[&str]| {
            let cmd = BuildArgs::augment_args(clap::Command::new("build").no_binary_name(true));
            let m = cmd.try_get_matches_from(args).expect("parse");
            BuildArgs::from_arg_matches(&m).expect("args")
        };
        for flag in [
            "--nvccli",
            "--compat32",
            "--encrypt",
            "--json",
            "--data",
            "--writable-tmpfs",
            "--ignore-userns",
            "--remote",
            "--passphrase",
        ] {
            let a = parse(&[flag, "out.sif", "x.def"]);
            assert_eq!(a.refused().map(|r| r.0), Some(flag), "{flag}");
        }
        let a = parse(&["--mount", "type=bind,src=/a,dst=/b", "out.sif", "x.def"]);
        assert_eq!(a.refused().map(|r| r.0), Some("--mount"));
        for flag in ["--userns", "--ignore-fakeroot-command", "--ignore-proot"] {
            assert!(
                parse(&[flag, "out.sif", "x.def"]).refused().is_none(),
                "{flag}"
            );
        }
    }
}
