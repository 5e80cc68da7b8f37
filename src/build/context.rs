//! The settings every build step shares (`Build`), and running a step's work as root of the
//! build's fakeroot user namespace.

use anyhow::bail;

use super::assemble::SquashSettings;
use super::oci::RegistryAccess;
use super::workdir;
use crate::launch::idplan;
use crate::launch::plan::IdMapPlan;
use crate::launch::sys::LinuxSys;
use crate::launch::userns::run_as_fakeroot;

/// Settings shared by the build steps.
pub struct Build {
    pub ids: IdMapPlan,
    /// Registry access for OCI sources.
    pub access: RegistryAccess,
    pub squash: SquashSettings,
    /// `SOURCE_DATE_EPOCH` or `--reproducible`.
    pub epoch: Option<i64>,
}

impl Build {
    /// Runs `work` as root of the build's fakeroot namespace, in a process that ends at
    /// once when the build is interrupted.
    pub fn as_root(&self, work: impl FnOnce() -> Result<(), String>) -> anyhow::Result<()> {
        if workdir::interrupted() {
            bail!("build interrupted");
        }
        let r = run_as_fakeroot(
            &LinuxSys::new(),
            &self.ids,
            &idplan::write_maps,
            move || {
                workdir::exit_on_interrupt();
                work()
            },
        );
        if workdir::interrupted() {
            bail!("build interrupted");
        }
        r.map_err(|e| anyhow::anyhow!(e.0))
    }
}
