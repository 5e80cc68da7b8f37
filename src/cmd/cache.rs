//! `cache list` and `cache clean`: the cache at its location for this process (see
//! `build::oci::cache`), listed and cleaned by `build::oci::cache_admin` in Apptainer's
//! formats. `clean` asks for confirmation on standard input unless `--force` or
//! `--dry-run`, as Apptainer.

use std::io::{BufRead, Write};

use anyhow::{Context as _, bail};

use super::Context;
use crate::build::oci::BlobCache;
use crate::build::oci::cache_admin::{self, CleanEvent};
use crate::cli::cache::{CacheArgs, CacheCommand};

pub fn cache(_ctx: &Context, a: CacheArgs) -> anyhow::Result<i32> {
    let cache = BlobCache::from_env()?;
    let root = cache.root();
    match a.command {
        CacheCommand::List { types, verbose } => {
            let types = cache_admin::select_types(&types)?;
            let entries =
                cache_admin::list(root, &types).context("an error occurred while listing cache")?;
            let date = |t: std::time::SystemTime| {
                chrono::DateTime::<chrono::Local>::from(t)
                    .format("%Y-%m-%d %H:%M:%S")
                    .to_string()
            };
            print!(
                "{}",
                cache_admin::list_text(&entries, &types, verbose, &date)
            );
            Ok(0)
        }
        CacheCommand::Clean {
            types,
            days,
            dry_run,
            force,
        } => {
            let types = cache_admin::select_types(&types)?;
            if dry_run {
                println!("User requested a dry run. Not actually deleting any data!");
            }
            if !force && !dry_run && !confirm()? {
                log::info!("Handle cleanup canceled");
                return Ok(0);
            }
            let now = std::time::SystemTime::now();
            for kind in types {
                let mut report = |e: CleanEvent<'_>| match e {
                    CleanEvent::Removing(e) => {
                        log::info!("Removing {} cache entry: {}", e.kind, e.name)
                    }
                    CleanEvent::Skipped(e) => {
                        log::debug!("Skipping {}: less than {days} days old", e.name)
                    }
                    CleanEvent::Empty(dir) => {
                        log::info!("No cached files to remove at {}", dir.display())
                    }
                };
                cache_admin::clean(root, kind, days, dry_run, now, &mut report)
                    .context("could not clean cache")?;
            }
            Ok(0)
        }
    }
}

/// Apptainer's question, answered on standard input: only `y` (any case) goes on.
fn confirm() -> anyhow::Result<bool> {
    print!(
        "This will delete everything in your cache (containers from all sources and OCI blobs).\n\
         Hint: You can see exactly what would be deleted by canceling and using the --dry-run option.\n\
         Do you want to continue? [y/N] "
    );
    std::io::stdout().flush().context("could not prompt user")?;
    let mut line = String::new();
    let n = std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("could not prompt user: could not read user's input")?;
    if n == 0 {
        println!();
        bail!(
            "could not prompt user: no answer on standard input (give --force to clean without \
             asking, or --dry-run to see what would go)"
        );
    }
    Ok(line.eq_ignore_ascii_case("y\n"))
}
