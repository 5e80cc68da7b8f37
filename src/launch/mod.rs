//! Starting containers: plan (pure), then a linear, commented launch sequence.
//!
//! - `binds`, `environ`, `shenv`, `identity`: parsing and computing, no system calls.
//! - `options`: what the user asked for, typed; `plan`, `planner`: the `Plan` value and how
//!   it is derived; `host`: what the planner reads from the host, and the host preparation
//!   a plan asks for.
//! - `gpu`, `ldcache`: GPU set-up (`--nv`, `--rocm`) and host libraries: what the host has,
//!   found through its linker cache, and the planner's steps that bind it.
//! - `sys`: the seam to the kernel; `rootfs`: the mount sequence inside the container.
//! - `action`: the payload's argv; `capabilities`: the payload's capability set (pure);
//!   `security`: the last steps before execve; `seccomp`: sifr's root-emulation filter;
//!   `profile`, `syscalls`: `--security seccomp:` profiles compiled to BPF with sifr's own
//!   system call table.
//! - `process`: the process tree (sifr, supervisor, payload) and signals.
//! - `mounter`: mounting the image itself; `msg`: the messages that cross fork.
//! - `ovlfile`: overlay image files on the host (kind by content, the lock); `layers`: the
//!   supervisor's overlay image mounts (fuse2fs, fuse-overlayfs, sifr's squashfs driver).
//! - `network`: `--network` and `--network-args`, planned (pasta's command line); `pasta`:
//!   starting pasta for the container's network namespace, and stopping it.
//! - `start`: the whole start as one call (plan, prepare, run), for the verbs.
//! - `instance`: instances' state on disk (list, stale state, stop) and their detached
//!   start; `process::join` runs a command in a live instance (`instance://NAME`).
//!
//! docs/architecture.md draws the road from the command line to execve through these.

pub mod action;
pub mod binds;
pub mod capabilities;
pub mod cgroups;
pub mod environ;
pub mod gpu;
pub mod host;
pub mod identity;
pub mod idplan;
pub mod instance;
pub mod kept;
pub mod layers;
pub mod ldcache;
pub mod mounter;
pub mod msg;
pub mod network;
pub mod options;
pub mod ovlfile;
pub mod pasta;
pub mod plan;
pub mod planner;
pub mod process;
pub mod profile;
pub mod rootfs;
pub mod seccomp;
pub mod security;
pub mod shenv;
pub mod start;
pub mod sys;
pub mod syscalls;
pub mod userns;
