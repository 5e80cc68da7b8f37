//! sifr-idmap: /etc/subuid and /etc/subgid parsing, id-map planning and writing.
//!
//! What the launcher calls:
//! - [`plan_fakeroot`] (with a [`FakerootRequest`]) → [`FakerootPlan`]: the subordinate-id
//!   mapping when the caller has a usable range, else a root-mapped plan with a one-line
//!   reason. [`IdMaps::single`] is the plan for non-fakeroot runs.
//! - [`write_maps`]`(pid, &plan)`: applies a plan to a child that has unshared its user
//!   namespace, through /proc or newuidmap/newgidmap, and verifies the result.
//! - [`diagnose_userns`]: which sysctl, if any, stops unprivileged user namespaces.
//!
//! What `sifr config fakeroot` calls: [`edit_fakeroot`].
//!
//! Modules: `subid` (file parser), `user` (user lookup), `hostids` (ids of host accounts),
//! `select` (range choice and diagnostics), `plan` (plans), `write` (applying plans),
//! `userns` (sysctl diagnosis), `edit` (the locked, atomic editor).

pub mod edit;
pub mod hostids;
pub mod plan;
pub mod select;
pub mod subid;
pub mod user;
pub mod userns;
pub mod write;

pub use edit::{Change, EditError, EditPaths, FakerootEdit, FileChange, ShadowLock, edit_fakeroot};
pub use hostids::HostIds;
pub use plan::{FakerootMode, FakerootPlan, FakerootRequest, IdMapping, IdMaps, plan_fakeroot};
pub use select::{FAKEROOT_IDS, IdKind, NoRange, SubidRange, select_range};
pub use subid::{Diagnostic, LineProblem, SubidEntry, SubidError, SubidFile};
pub use user::{UserError, UserRef};
pub use userns::{UsernsBlocker, UsernsDiagnosis, diagnose_userns, diagnose_userns_in};
pub use write::{MapError, Pid, find_helper, write_maps, write_maps_with};
