//! `overlay create`: finds mkfs.ext3 on `binary path`, says (as Apptainer does) when an
//! image made without --fakeroot will not suit --fakeroot runs, and hands the work to
//! `image::overlay_create`.

use anyhow::Context as _;

use super::Context;
use crate::cli::overlay::{CreateArgs, OverlayArgs, OverlayCommand};
use crate::image::overlay_create::{self, Request};

/// Runs one `overlay` sub-command.
pub fn overlay(ctx: &Context, a: OverlayArgs) -> anyhow::Result<i32> {
    match a.command {
        OverlayCommand::Create(c) => create(ctx, c),
    }
}

fn create(ctx: &Context, a: CreateArgs) -> anyhow::Result<i32> {
    let cfg = super::action::load_config(ctx)?;
    let mkfs = cfg
        .find_binary("mkfs.ext3")
        .context("mkfs.ext3 (package e2fsprogs) is needed to create overlay images")?;
    let req = Request {
        image: a.image,
        size_mib: a.size,
        create_dirs: a.create_dir,
        sparse: a.sparse,
        fakeroot: a.fakeroot,
        tmpdir: a.tmpdir.unwrap_or_else(std::env::temp_dir),
        mkfs,
        command_name: ctx.persona.command_name().to_string(),
    };
    let prepared = overlay_create::prepare(&req)?;
    // SAFETY: getuid cannot fail.
    if unsafe { libc::getuid() } != 0 && !req.fakeroot {
        // Apptainer's notice: without subordinate ids, root of a --fakeroot run cannot
        // write into directories that belong to the user.
        let plan = sifr_idmap::plan_fakeroot(&sifr_idmap::FakerootRequest {
            helper_dirs: cfg.setuid_helper_dirs(),
            ..sifr_idmap::FakerootRequest::for_current_process()
        });
        if matches!(plan.mode, sifr_idmap::FakerootMode::RootMapped { .. }) {
            log::info!("Creating overlay image for use without fakeroot.");
            log::info!("Consider re-running with --fakeroot option.");
        }
    }
    match prepared.build()? {
        overlay_create::Created::Image => log::debug!("created {}", req.image.display()),
        overlay_create::Created::SifPartition { id } => log::debug!(
            "added the overlay partition to {} as object {id}",
            req.image.display()
        ),
    }
    Ok(0)
}
