//! `inspect` and `run-help`: metadata read from the image, no container started.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

use super::Context;
use crate::cli::inspect::{InspectArgs, RunHelpArgs};
use crate::image::files::{ImageFiles, SandboxFiles, SquashFiles};
use crate::image::inspect::{self, Selection};
use crate::image::{self, ImageKind};

/// Opens an image for reading its files.
pub fn open_files(arg: &str) -> anyhow::Result<(PathBuf, Box<dyn ImageFiles>)> {
    let path = PathBuf::from(arg);
    let kind = image::detect(&path)?;
    match kind {
        ImageKind::Sandbox => Ok((path.clone(), Box::new(SandboxFiles::new(&path)))),
        ImageKind::Squashfs => {
            let f = std::fs::File::open(&path)
                .with_context(|| format!("cannot open image {}", path.display()))?;
            let files = SquashFiles::open(f, 0)
                .with_context(|| format!("cannot read image {}", path.display()))?;
            Ok((path, Box::new(files)))
        }
        other => bail!(
            "{}: reading files of a {} image is not supported yet",
            path.display(),
            other.name()
        ),
    }
}

pub fn inspect(_ctx: &Context, a: InspectArgs) -> anyhow::Result<i32> {
    let mut sel = Selection {
        labels: a.labels,
        deffile: a.deffile,
        runscript: a.runscript,
        startscript: a.startscript,
        test: a.test,
        environment: a.environment,
        helpfile: a.helpfile,
        list_apps: a.list_apps,
        all: a.all,
        app: a.app.clone(),
    };
    let json = a.json || a.all;
    if a.all {
        sel.app = None;
    }
    let (path, files) = open_files(&a.image)?;
    let m = inspect::from_files(&*files, &sel)
        .with_context(|| format!("cannot inspect {}", path.display()))?;
    if json {
        println!("{}", inspect::to_go_json(&m));
    } else {
        print!("{}", inspect::to_text(&m, &sel));
    }
    Ok(0)
}

pub fn run_help(_ctx: &Context, a: RunHelpArgs) -> anyhow::Result<i32> {
    let (path, files) = open_files(&a.image)?;
    let file = match &a.app {
        Some(app) => format!("/scif/apps/{app}/scif/runscript.help"),
        None => "/.singularity.d/runscript.help".to_string(),
    };
    let help = files
        .read(&file)
        .with_context(|| format!("cannot read {file} in {}", Path::new(&path).display()))?;
    match help {
        Some(h) => print!("{}", String::from_utf8_lossy(&h)),
        None => println!("No help sections were defined for this image"),
    }
    Ok(0)
}
