//! A container start as one call, for the verbs: plan the request against this host (pure),
//! prepare the host for the plan, then run the process tree (sifr, supervisor, payload)
//! with the real kernel behind the seam, and report how the payload ended.

use std::os::fd::AsRawFd;

use super::cgroups::{self, CgroupError, CgroupOps, LinuxCgroupOps};
use super::host::{self, HostError, HostFacts, LiveHost};
use super::identity::HostUser;
use super::idplan;
use super::kept;
use super::mounter::Mounter;
use super::ovlfile::{self, LockError};
use super::planner::{self, LaunchPolicy, PlanError, Request};
use super::process::{self, Launch, LaunchError, Outcome};
use super::sys::LinuxSys;

/// Why a container could not be started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Host(#[from] HostError),
    #[error(transparent)]
    Launch(#[from] LaunchError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
}

/// Starts the container `req` describes, as `user`, under `policy`, with `mounter` serving
/// the image; returns when the payload has ended. The plan's warnings are logged (one line
/// each) before anything starts.
pub fn start(
    req: &Request,
    policy: &LaunchPolicy,
    user: HostUser,
    mounter: Mounter,
) -> Result<Outcome, StartError> {
    start_reporting(req, policy, user, mounter, None)
}

/// [`start`], with `on_up` called once the payload runs (instances record their state
/// there; see `instance`).
pub fn start_reporting(
    req: &Request,
    policy: &LaunchPolicy,
    user: HostUser,
    mut mounter: Mounter,
    on_up: Option<process::OnUp>,
) -> Result<Outcome, StartError> {
    // 1. Plan: every decision, from the request, the policy and the host's answers.
    let facts = HostFacts::current(user.clone());
    let mut plan = planner::plan(req, policy, &facts, &LiveHost)?;
    // 2. The host changes the plan asks for (directories under --workdir, canonical paths).
    host::prepare(&mut plan)?;
    // The overlay images, opened and locked here, before anything starts: a second writer
    // is refused now, and fuse2fs inherits the locked descriptor.
    mounter.overlay_files = plan
        .overlay
        .images
        .iter()
        .map(ovlfile::open_locked)
        .collect::<Result<_, _>>()?;
    // 3. Resource limits: the container's cgroup, created and limited before anything
    // starts (refused here, in one line, without a cgroup v2 delegation).
    let active = match &plan.cgroup {
        Some(cg) => Some(cgroups::setup(&LinuxCgroupOps, cg, std::process::id())?),
        None => None,
    };
    let enter_cgroup: Option<process::CgroupEnter> = active.clone().map(|cg| {
        Box::new(move |pid: nix::unistd::Pid| {
            cg.enter(&LinuxCgroupOps, pid.as_raw())
                .map_err(|e| e.to_string())
        }) as process::CgroupEnter
    });
    for w in &plan.warnings {
        log::warn!("{w}");
    }
    log::debug!("launch plan: {plan:#?}");
    // What planning allocated and freed (the command line's parser, the configuration
    // text) goes back to the kernel first: a holder forked now starts without it, and
    // this process and the supervisor it forks stay for the whole run (many runs at once,
    // MPI ranks or array jobs, would each keep it).
    // SAFETY: malloc_trim only releases free heap memory; sifr is single-threaded here.
    unsafe { libc::malloc_trim(0) };
    // 4. The image's kept mount: joined, or started for this and later runs (any
    //    obstacle leaves this run to mount the image itself).
    let attached = plan.kept.as_ref().and_then(|k| {
        let served = kept::Served {
            image: mounter.image.clone()?,
            pinned: mounter.pinned,
        };
        match kept::attach(&plan, k.idle_secs, &served, &user, &idplan::write_maps) {
            Ok(a) => {
                log::debug!(
                    "{:.1} ms: kept mount: {} holder {} ({})",
                    crate::log::since_start_ms(),
                    if a.started { "started" } else { "joined" },
                    a.holder,
                    a.key
                );
                Some(a)
            }
            Err(e) => {
                log::debug!("kept mount not used, mounting the image for this run: {e}");
                None
            }
        }
    });
    let join = attached.as_ref().map(|a| {
        mounter.kept_tree = Some(a.tree.as_raw_fd());
        process::KeptJoin {
            userns: a.userns.as_raw_fd(),
        }
    });
    // 5. The process tree, against the kernel.
    let outcome = process::run(Launch {
        plan,
        sys: LinuxSys::new(),
        user,
        mounter: Box::new(mounter),
        // A kept mount's user namespace has its maps already (written for the holder).
        write_maps: if join.is_some() {
            Box::new(|_, _| Ok(()))
        } else {
            Box::new(idplan::write_maps)
        },
        explain_userns: Box::new(idplan::explain_userns),
        enter_cgroup,
        on_up,
        kept: join,
    });
    // The run's end, for the holder (the connection closes here).
    drop(attached);
    if let Some(cg) = active {
        remove_cgroup(&LinuxCgroupOps, &cg);
    }
    Ok(outcome?)
}

/// Removes the container's cgroup after the run; a cgroup that processes left in the
/// background still occupy is left (the next run removes it once empty), with a warning.
fn remove_cgroup(ops: &dyn CgroupOps, cg: &cgroups::ActiveCgroup) {
    if let Err(e) = cg.remove(ops) {
        log::warn!("{e}");
    }
}

/// Runs the command `req` describes inside the live instance whose init is `init` (see
/// `process::join`): planned as a start would be (environment, capabilities, seccomp), but
/// nothing is mounted or prepared: the instance's namespaces and root are joined.
pub fn join(
    req: &Request,
    policy: &LaunchPolicy,
    user: HostUser,
    init: &super::instance::State,
) -> Result<Outcome, StartError> {
    let facts = HostFacts::current(user);
    let plan = planner::plan(req, policy, &facts, &LiveHost)?;
    let target = process::JoinTarget::open(init.pid)?;
    // The descriptors name the process recorded in the state, not a later one with its PID.
    if !init.processes_alive(&super::instance::LiveProcs) {
        return Err(LaunchError::Child(format!("instance {} has ended", init.name)).into());
    }
    for w in &plan.warnings {
        log::warn!("{w}");
    }
    log::debug!("join plan: {plan:#?}");
    Ok(process::join(&plan, &LinuxSys::new(), target)?)
}
