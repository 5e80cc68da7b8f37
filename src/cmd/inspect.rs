//! `inspect` and `run-help`: metadata read from the image, no container started.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

use super::Context;
use crate::cli::inspect::{InspectArgs, RunHelpArgs};
use crate::image::files::{BackendFiles, ImageFiles, SandboxFiles, SquashFiles};
use crate::image::inspect::{self, Selection};
use crate::image::{self, ImageKind};
use crate::launch::plan::RootSource;

/// Opens an image for reading its files.
pub fn open_files(arg: &str) -> anyhow::Result<(PathBuf, Box<dyn ImageFiles>)> {
    let path = PathBuf::from(arg);
    let kind = image::detect(&path)?;
    match kind {
        ImageKind::Sandbox => Ok((path.clone(), Box::new(SandboxFiles::new(&path)))),
        // A bare image, possibly behind a Singularity 2.x launch line (`.simg`).
        ImageKind::Squashfs => {
            let f = std::fs::File::open(&path)
                .with_context(|| format!("cannot open image {}", path.display()))?;
            let offset = image::fs_offset(&f);
            let files = SquashFiles::open(f, offset)
                .with_context(|| format!("cannot read image {}", path.display()))?;
            Ok((path, Box::new(files)))
        }
        ImageKind::Ext => {
            let f = std::fs::File::open(&path)
                .with_context(|| format!("cannot open image {}", path.display()))?;
            let offset = image::fs_offset(&f);
            let size = f.metadata()?.len().saturating_sub(offset);
            let files = BackendFiles::open_ext(f, offset, size)
                .with_context(|| format!("cannot read image {}", path.display()))?;
            Ok((path, Box::new(files)))
        }
        ImageKind::Sif => {
            let root = crate::image::source::sif_root(&path)?;
            let f = std::fs::File::open(&path)
                .with_context(|| format!("cannot open image {}", path.display()))?;
            match root {
                RootSource::Squashfs { offset, .. } => {
                    let files = SquashFiles::open(f, offset)
                        .with_context(|| format!("cannot read image {}", path.display()))?;
                    Ok((path, Box::new(files)))
                }
                RootSource::Ext { offset, size, .. } => {
                    let files = BackendFiles::open_ext(f, offset, size)
                        .with_context(|| format!("cannot read image {}", path.display()))?;
                    Ok((path, Box::new(files)))
                }
                RootSource::Directory { .. } => bail!("{}: not a SIF", path.display()),
            }
        }
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
    let m = match sif_metadata(&path)? {
        // A SIF built by Apptainer carries the answer as a JSON object.
        Some(full) => inspect::select(&full, &sel),
        None => inspect::from_files(&*files, &sel)
            .with_context(|| format!("cannot inspect {}", path.display()))?,
    };
    if json {
        println!("{}", inspect::to_go_json(&m));
    } else {
        print!("{}", inspect::to_text(&m, &sel));
    }
    Ok(0)
}

/// The `inspect-metadata.json` object of a SIF (what `apptainer build` writes), with the
/// definition file object as the deffile; `None` for other images or older SIFs.
fn sif_metadata(path: &Path) -> anyhow::Result<Option<inspect::Metadata>> {
    use crate::image::sif::{DataType, SifImage};
    if image::detect(path)? != ImageKind::Sif {
        return Ok(None);
    }
    let img = SifImage::open(path)?;
    let Some(d) = img.find_object(DataType::GenericJson, "inspect-metadata.json") else {
        return Ok(None);
    };
    let bytes = img.read_object(d, 16 << 20)?;
    match serde_json::from_slice::<inspect::Metadata>(&bytes) {
        Ok(mut m) => {
            if let Some(def) = img.objects_of_type(DataType::Deffile).next() {
                let text = img.read_object(def, 16 << 20)?;
                m.data.attributes.deffile = String::from_utf8_lossy(&text)
                    .trim_end_matches('\n')
                    .to_string();
            }
            Ok(Some(m))
        }
        Err(e) => {
            log::warn!(
                "Unable to read inspect-metadata.json SIF descriptor of {}: {e}",
                path.display()
            );
            Ok(None)
        }
    }
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
