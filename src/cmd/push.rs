//! `push`: a SIF file to `oras://` (an OCI artifact, as Apptainer stores it); `library://`
//! and other destinations are refused in one line.

use std::collections::BTreeMap;

use anyhow::bail;

use super::{Context, registry_access};
use crate::build::oci::{ImageRef, Source, oras};
use crate::cli::push::PushArgs;

pub fn push(_ctx: &Context, a: PushArgs) -> anyhow::Result<i32> {
    let Some(name) = a.uri.strip_prefix("oras://") else {
        match a.uri.split_once("://") {
            Some(("library", _)) => bail!(
                "{}: sifr pushes to no container library (Sylabs Cloud); push to an OCI \
                 registry with oras://REGISTRY/REPO:TAG",
                a.uri
            ),
            Some((scheme, _)) => bail!(
                "{}: cannot push to {scheme}:// (sifr pushes SIF files to oras://REGISTRY/REPO:TAG)",
                a.uri
            ),
            None => bail!(
                "{}: no transport type in the destination (push to oras://REGISTRY/REPO:TAG)",
                a.uri
            ),
        }
    };
    if let Some(url) = &a.library {
        bail!("push --library {url}: sifr pushes to no container library; leave --library out");
    }
    let image = ImageRef::parse(name)?;
    let mut annotations = BTreeMap::new();
    for kv in &a.annotation {
        match kv.split_once('=') {
            Some((k, v)) => {
                annotations.insert(k.to_string(), v.to_string());
            }
            None => log::warn!("Value missing for \"{kv}\", not setting"),
        }
    }
    let options = registry_access(&a.registry).fetch_options(&Source::Registry(image.clone()))?;
    let digest = oras::push_sif(&a.image, &image, &options, annotations)?;
    log::info!("Digest: {digest}");
    log::info!("Upload complete");
    Ok(0)
}
