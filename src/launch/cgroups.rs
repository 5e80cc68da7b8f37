//! Resource limits (`--memory`, `--cpus`, ..., `--apply-cgroups`) in a cgroup v2 subtree
//! the user owns.
//!
//! Three steps. [`limits`] turns the flags (or the cgroups.toml of `--apply-cgroups`; never
//! both, as in Apptainer) into the OCI `LinuxResources` shape ([`CgroupsConfig`]), with
//! Apptainer's parsing: byte sizes as docker's `RAMInBytes`, `--cpus` as a quota of a 100 ms
//! period. [`plan`] converts that to the cgroup v2 files to write (a plain value, unit
//! tested): the v1→v2 conversions of opencontainers/cgroups (memory.swap.max is swap minus
//! memory, cpu.weight from shares, io.weight from a blkio weight when BFQ is absent).
//! [`setup`] carries the plan out through [`CgroupOps`] (the seam tests replace by a
//! directory laid out like a delegated tree).
//!
//! Where. Apptainer asks the systemd user manager over D-Bus for a transient scope; sifr
//! does without D-Bus: it creates `sifr-PID` next to its own cgroup (the parent of the
//! cgroup named by the `0::` line of /proc/self/cgroup), which must be a cgroup v2 directory
//! the user may write, with the needed controllers available there (everything under the
//! systemd user manager, `user@UID.service`, is delegated: `systemd-run --user --scope -p
//! Delegate=yes` starts sifr there). The limits are written, then sifr moves the supervisor
//! (the first process of the container, before it forks anything) into it, so that every
//! process of the container, its init and FUSE server included, is limited, and sifr's own
//! process is not. The directory is removed when the container has ended, and a `sifr-PID`
//! whose sifr no longer runs (a crashed run) is removed by the next run. On a cgroup v1 or
//! hybrid host, or without a delegation, resource limits are refused in one line.

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};

use crate::config::ConfigError;
use crate::config::cgroups::{BlockIo, CgroupsConfig, Cpu, CpuList, Memory, Pids, WeightDevice};

/// The resource flags as given on the command line (strings, as clap keeps them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResourceFlags {
    pub memory: Option<String>,
    pub memory_reservation: Option<String>,
    pub memory_swap: Option<String>,
    pub oom_kill_disable: bool,
    pub cpus: Option<String>,
    pub cpu_shares: Option<String>,
    pub cpuset_cpus: Option<String>,
    pub cpuset_mems: Option<String>,
    pub pids_limit: Option<String>,
    pub blkio_weight: Option<String>,
    pub blkio_weight_device: Vec<String>,
    pub apply_cgroups: Option<PathBuf>,
}

/// What went wrong with resource limits; one line each.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// A flag value or a combination Apptainer refuses too.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A limit cgroup v2 has no file for.
    #[error("{what} cannot be applied: cgroup v2 has no such limit; remove it")]
    NotInV2 { what: &'static str },
    /// No cgroup v2 subtree the user may write.
    #[error(
        "resource limits need a cgroup v2 delegation ({why}): run sifr in a cgroup the user \
         owns under the systemd user manager (Delegate=yes), e.g. 'systemd-run --user --scope \
         -p Delegate=yes sifr ...', on a host booted with the unified cgroup v2 hierarchy"
    )]
    NoDelegation { why: String },
    #[error("cgroup {}: {what}: {err}", path.display())]
    Io {
        path: PathBuf,
        what: &'static str,
        err: io::Error,
    },
}

fn invalid(msg: impl Into<String>) -> CgroupError {
    CgroupError::Invalid(msg.into())
}

// ---------------------------------------------------------------------------------------
// 1. Flags → LinuxResources (Apptainer's cmd/internal/cli/cgroups.go).

/// Parses a size as docker's `units.RAMInBytes` does: a decimal number, an optional space,
/// an optional binary prefix (k, m, g, t, p, any case) with an optional `i` and `b`.
pub fn ram_in_bytes(s: &str) -> Result<i64, String> {
    let bad = || format!("invalid size: '{s}'");
    let num_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, rest) = s.split_at(num_end);
    // `^(\d+(\.\d+)*)`: digits, then groups of a dot and digits.
    if num.is_empty() || num.split('.').any(|p| p.is_empty()) {
        return Err(bad());
    }
    let rest = rest.strip_prefix(' ').unwrap_or(rest);
    let mut chars = rest.chars().peekable();
    let shift = match chars.peek().map(|c| c.to_ascii_lowercase()) {
        Some(c @ ('k' | 'm' | 'g' | 't' | 'p')) => {
            chars.next();
            10 * (1 + "kmgtp".find(c).unwrap_or(0) as u32)
        }
        _ => 0,
    };
    if chars.peek().is_some_and(|c| c.eq_ignore_ascii_case(&'i')) {
        chars.next();
    }
    if chars.peek().is_some_and(|c| c.eq_ignore_ascii_case(&'b')) {
        chars.next();
    }
    if chars.next().is_some() {
        return Err(bad());
    }
    // "1.2.3" matches the pattern but is no float (strconv.ParseFloat fails).
    let value: f64 = num
        .parse()
        .map_err(|_| format!("strconv.ParseFloat: parsing \"{num}\": invalid syntax"))?;
    // Go converts with int64(float), which saturates in practice on amd64 only by chance;
    // sizes beyond i64 are refused instead.
    let bytes = value * f64::from(2u32).powi(shift as i32);
    if bytes >= i64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes as i64)
}

/// `--cpus N` as a CFS quota of the default 100 ms period, in microseconds; N from 0.01 to
/// the CPUs sifr may run on (Apptainer's range, at 1e-9 precision).
pub fn cpus_quota(s: &str, ncpus: u64) -> Result<(i64, u64), String> {
    const PERIOD: u64 = 100_000;
    let range = || format!("cpus value must be in range 0.01 - {ncpus}");
    let bad = || format!("invalid cpus value: can't convert {s} to decimal");
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    let int = int.strip_prefix('+').unwrap_or(int);
    if let Some(neg) = int.strip_prefix('-') {
        return if digits(neg) && digits(frac) && !(neg.is_empty() && frac.is_empty()) {
            Err(range())
        } else {
            Err(bad())
        };
    }
    if (int.is_empty() && frac.is_empty()) || !digits(int) || !digits(frac) {
        return Err(bad());
    }
    let int: u64 = if int.is_empty() {
        0
    } else if int.len() > 12 {
        return Err(range());
    } else {
        int.parse().map_err(|_| bad())?
    };
    let frac9: String = frac.chars().chain(std::iter::repeat('0')).take(9).collect();
    let nano = int * 1_000_000_000 + frac9.parse::<u64>().map_err(|_| bad())?;
    if nano < 10_000_000 || nano > ncpus.saturating_mul(1_000_000_000) {
        return Err(range());
    }
    Ok(((nano * PERIOD / 1_000_000_000) as i64, PERIOD))
}

/// An integer flag value, as pflag reports a bad one.
fn int_flag(flag: &str, s: &str) -> Result<i64, CgroupError> {
    s.trim().parse::<i64>().map_err(|_| {
        invalid(format!(
            "invalid argument \"{s}\" for \"{flag}\" flag: not an integer"
        ))
    })
}

/// Returns the device numbers of a block, character or FIFO device (Lstat, not followed).
pub type DeviceLookup<'a> = &'a dyn Fn(&Path) -> Result<(i64, i64), String>;

/// The device numbers of `path` on this host.
pub fn device_numbers(path: &Path) -> Result<(i64, i64), String> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let md =
        std::fs::symlink_metadata(path).map_err(|e| format!("lstat {}: {e}", path.display()))?;
    let ft = md.file_type();
    if !(ft.is_block_device() || ft.is_char_device() || ft.is_fifo()) {
        return Err(format!("{} is not a device", path.display()));
    }
    let rdev = md.rdev();
    Ok((
        i64::from(nix::sys::stat::major(rdev) as u32),
        i64::from(nix::sys::stat::minor(rdev) as u32),
    ))
}

/// The limits the flags or `--apply-cgroups` ask for; `None` when none is asked for.
pub fn limits(
    f: &ResourceFlags,
    ncpus: u64,
    device: DeviceLookup<'_>,
) -> Result<Option<CgroupsConfig>, CgroupError> {
    let mut c = CgroupsConfig::default();

    // Block I/O.
    let mut bio = BlockIo::default();
    let mut bio_set = false;
    if let Some(s) = &f.blkio_weight {
        let w = int_flag("--blkio-weight", s)?;
        if w > 0 {
            if !(10..=1000).contains(&w) {
                return Err(invalid("blkio-weight must be in range 10-1000"));
            }
            bio.weight = Some(w as u16);
            bio_set = true;
        }
    }
    for spec in &f.blkio_weight_device {
        let Some((dev, weight)) = spec.split_once(':') else {
            return Err(invalid(
                "blkio-weight-device specifications must be in <device>:<weight> format",
            ));
        };
        let (major, minor) =
            device(Path::new(dev)).map_err(|e| invalid(format!("while examining device: {e}")))?;
        let w: i64 = weight
            .parse()
            .map_err(|_| invalid(format!("{weight} is not a valid device weight")))?;
        if !(10..=1000).contains(&w) {
            return Err(invalid("blkio-device-weight must be in range 10-1000"));
        }
        bio.weight_device.push(WeightDevice {
            major,
            minor,
            weight: Some(w as u16),
            leaf_weight: None,
        });
        bio_set = true;
    }
    if bio_set {
        c.block_io = Some(bio);
    }

    // CPU.
    let mut cpu = Cpu::default();
    let mut cpu_set = false;
    if let Some(s) = &f.cpu_shares {
        let v = int_flag("--cpu-shares", s)?;
        if v > 0 {
            cpu.shares = Some(v as u64);
            cpu_set = true;
        }
    }
    for (flag, value, slot) in [
        ("--cpuset-cpus", &f.cpuset_cpus, &mut cpu.cpus),
        ("--cpuset-mems", &f.cpuset_mems, &mut cpu.mems),
    ] {
        if let Some(s) = value.as_deref().filter(|s| !s.is_empty()) {
            *slot = Some(CpuList::parse(s).map_err(|e| invalid(format!("{flag}: {e}")))?);
            cpu_set = true;
        }
    }
    if let Some(s) = f.cpus.as_deref().filter(|s| !s.is_empty()) {
        let (quota, period) = cpus_quota(s, ncpus).map_err(invalid)?;
        cpu.quota = Some(quota);
        cpu.period = Some(period);
        cpu_set = true;
    }
    if cpu_set {
        c.cpu = Some(cpu);
    }

    // Memory.
    let mut mem = Memory::default();
    let mut mem_set = false;
    for (name, value, slot) in [
        ("memory", &f.memory, &mut mem.limit),
        (
            "memory-reservation",
            &f.memory_reservation,
            &mut mem.reservation,
        ),
        ("memory-swap", &f.memory_swap, &mut mem.swap),
    ] {
        if let Some(s) = value.as_deref().filter(|s| !s.is_empty()) {
            *slot = Some(if name == "memory-swap" && s == "-1" {
                -1
            } else {
                ram_in_bytes(s).map_err(|e| invalid(format!("invalid {name} value: {e}")))?
            });
            mem_set = true;
        }
    }
    if f.oom_kill_disable {
        mem.disable_oom_killer = Some(true);
        mem_set = true;
    }
    if mem_set {
        c.memory = Some(mem);
    }

    // Processes.
    if let Some(s) = &f.pids_limit {
        let v = int_flag("--pids-limit", s)?;
        if v < -1 {
            return Err(invalid(format!("invalid pids-limit: {v}")));
        }
        if v != 0 {
            c.pids = Some(Pids { limit: v });
        }
    }

    let from_flags = !c.is_empty();
    match &f.apply_cgroups {
        Some(_) if from_flags => Err(invalid(
            "cannot apply a cgroups TOML file while using limit flags",
        )),
        Some(path) => Ok(Some(CgroupsConfig::from_file(path)?)),
        None if from_flags => Ok(Some(c)),
        None => Ok(None),
    }
}

// ---------------------------------------------------------------------------------------
// 2. LinuxResources → cgroup v2 files (opencontainers/cgroups fs2, as runc writes them).

/// One file to write in the container's cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupWrite {
    pub file: String,
    pub value: String,
    /// Written instead when `file` does not exist in the cgroup (io.weight when the BFQ
    /// scheduler's io.bfq.weight is absent); without one, a missing file is an error.
    pub fallback: Option<(String, String)>,
}

/// The cgroup a container start needs: controllers and files, in writing order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CgroupPlan {
    /// Controllers to enable for the container's cgroup (`cgroup.subtree_control`).
    pub controllers: BTreeSet<String>,
    pub writes: Vec<CgroupWrite>,
    /// Messages to show before starting.
    pub warnings: Vec<String>,
}

impl CgroupPlan {
    fn write(&mut self, file: impl Into<String>, value: impl Into<String>) {
        self.writes.push(CgroupWrite {
            file: file.into(),
            value: value.into(),
            fallback: None,
        });
    }
}

/// Converts the cgroup v1 `cpu.shares` range [2, 262144] to `cpu.weight` [1, 10000], with
/// the quadratic fit of opencontainers/cgroups (1024, the default share, gives 100, the
/// default weight).
pub fn cpu_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    if shares <= 2 {
        return 1;
    }
    if shares >= 262_144 {
        return 10_000;
    }
    let l = (shares as f64).log2();
    let exponent = (l * l + 125.0 * l) / 612.0 - 7.0 / 34.0;
    10f64.powf(exponent).ceil() as u64
}

/// Converts a blkio weight [10, 1000] to `io.weight` [1, 10000].
pub fn io_weight(weight: u16) -> u64 {
    if weight == 0 {
        return 0;
    }
    1 + (u64::from(weight) - 10) * 9999 / 990
}

/// `memory.swap.max` from the v1 memory+swap total and the memory limit.
pub fn swap_max(memory_swap: i64, memory: i64) -> Result<i64, String> {
    if memory == -1 && memory_swap == 0 {
        return Ok(-1);
    }
    if memory_swap == -1 || memory_swap == 0 {
        return Ok(memory_swap);
    }
    if memory == 0 || memory == -1 {
        return Err("unable to set swap limit without memory limit".into());
    }
    if memory < 0 {
        return Err(format!("invalid memory value: {memory}"));
    }
    if memory_swap < memory {
        return Err("memory+swap limit should be >= memory limit".into());
    }
    Ok(memory_swap - memory)
}

/// A size as a cgroup v2 file takes it: -1 is `max`, 0 is unset.
fn num(field: &str, v: i64) -> Result<Option<String>, CgroupError> {
    match v {
        0 => Ok(None),
        -1 => Ok(Some("max".into())),
        v if v < 0 => Err(invalid(format!("{field}: invalid value {v}"))),
        v => Ok(Some(v.to_string())),
    }
}

/// The cgroup v2 writes for `c`; refuses what cgroup v2 cannot limit.
pub fn plan(c: &CgroupsConfig) -> Result<CgroupPlan, CgroupError> {
    let mut p = CgroupPlan::default();
    if !c.devices.is_empty() {
        // Apptainer's warning: device rules need BPF programs, only root may load them.
        p.warnings
            .push("Device limits will not be applied with rootless cgroups".into());
    }
    if c.network.is_some() {
        return Err(CgroupError::NotInV2 {
            what: "[network] (net_cls/net_prio)",
        });
    }
    if let Some(cpu) = &c.cpu {
        if cpu.realtime_runtime.is_some() || cpu.realtime_period.is_some() {
            return Err(CgroupError::NotInV2 {
                what: "cpu.realtimeRuntime/realtimePeriod",
            });
        }
        if let Some(w) = cpu.shares.map(cpu_weight).filter(|w| *w > 0) {
            p.write("cpu.weight", w.to_string());
        }
        let quota = cpu.quota.unwrap_or(0);
        let period = cpu.period.unwrap_or(0);
        if quota != 0 || period != 0 {
            let mut v = if quota > 0 {
                quota.to_string()
            } else {
                "max".to_string()
            };
            if period != 0 {
                v.push_str(&format!(" {period}"));
            }
            p.write("cpu.max", v);
        }
        if let Some(l) = &cpu.cpus {
            p.write("cpuset.cpus", l.as_str());
        }
        if let Some(l) = &cpu.mems {
            p.write("cpuset.mems", l.as_str());
        }
    }
    if let Some(b) = &c.block_io {
        if b.leaf_weight.is_some() || b.weight_device.iter().any(|d| d.leaf_weight.is_some()) {
            return Err(CgroupError::NotInV2 {
                what: "blockIO leafWeight",
            });
        }
        if let Some(w) = b.weight.filter(|w| *w > 0) {
            p.writes.push(CgroupWrite {
                file: "io.bfq.weight".into(),
                value: w.to_string(),
                fallback: Some(("io.weight".into(), io_weight(w).to_string())),
            });
        }
        for d in &b.weight_device {
            if let Some(w) = d.weight {
                // Only BFQ has per-device weights: no fallback.
                p.write("io.bfq.weight", format!("{}:{} {w}", d.major, d.minor));
            }
        }
        for (key, list) in [
            ("rbps", &b.throttle_read_bps_device),
            ("wbps", &b.throttle_write_bps_device),
            ("riops", &b.throttle_read_iops_device),
            ("wiops", &b.throttle_write_iops_device),
        ] {
            for d in list {
                p.write(
                    "io.max",
                    format!("{}:{} {key}={}", d.major, d.minor, d.rate),
                );
            }
        }
    }
    if let Some(m) = &c.memory {
        if m.kernel.is_some() || m.kernel_tcp.is_some() {
            return Err(CgroupError::NotInV2 {
                what: "memory.kernel/kernelTCP",
            });
        }
        if m.swappiness.is_some() {
            return Err(CgroupError::NotInV2 {
                what: "memory.swappiness",
            });
        }
        let limit = m.limit.unwrap_or(0);
        let swap = m.swap.unwrap_or(0);
        let v2_swap = swap_max(swap, limit).map_err(invalid)?;
        match num("memory.swap", v2_swap)? {
            Some(v) => p.write("memory.swap.max", v),
            // Memory and memory+swap equal: no swap at all.
            None if swap > 0 => p.write("memory.swap.max", "0"),
            None => {}
        }
        if let Some(v) = num("memory.limit", limit)? {
            p.write("memory.max", v);
        }
        if let Some(v) = num("memory.reservation", m.reservation.unwrap_or(0))? {
            p.write("memory.low", v);
        }
        if m.disable_oom_killer == Some(true) {
            p.warnings.push(
                "--oom-kill-disable is not applied: cgroup v2 has no switch to disable the \
                 OOM killer"
                    .into(),
            );
        }
    }
    if let Some(pids) = &c.pids
        && pids.limit != 0
    {
        let v = if pids.limit < 0 {
            "max".to_string()
        } else {
            pids.limit.to_string()
        };
        p.write("pids.max", v);
    }
    for h in &c.hugepage_limits {
        p.write(
            format!("hugetlb.{}.max", h.page_size.as_str()),
            h.limit.to_string(),
        );
    }
    for (dev, r) in &c.rdma {
        let mut v = dev.clone();
        if let Some(n) = r.hca_handles {
            v.push_str(&format!(" hca_handle={n}"));
        }
        if let Some(n) = r.hca_objects {
            v.push_str(&format!(" hca_object={n}"));
        }
        p.write("rdma.max", v);
    }
    for (k, v) in &c.unified {
        p.write(k.clone(), v.clone());
    }
    for w in &p.writes {
        if let Some((controller, _)) = w.file.split_once('.')
            && controller != "cgroup"
        {
            p.controllers.insert(controller.to_string());
        }
    }
    Ok(p)
}

// ---------------------------------------------------------------------------------------
// 3. The plan, carried out in the cgroup tree.

/// The filesystem operations the cgroup set-up needs (the seam; `LinuxCgroupOps` performs
/// them on /sys/fs/cgroup).
pub trait CgroupOps {
    /// The cgroup2 mount (`/sys/fs/cgroup`).
    fn root(&self) -> PathBuf;
    /// The text of /proc/self/cgroup.
    fn self_cgroup(&self) -> io::Result<String>;
    fn read(&self, path: &Path) -> io::Result<String>;
    fn write(&self, path: &Path, value: &str) -> io::Result<()>;
    fn exists(&self, path: &Path) -> bool;
    /// access(2) W_OK for the calling user.
    fn writable(&self, path: &Path) -> bool;
    fn mkdir(&self, path: &Path) -> io::Result<()>;
    fn rmdir(&self, path: &Path) -> io::Result<()>;
    /// The names of the directories in `dir`.
    fn subdirs(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// True when process `pid` exists.
    fn pid_alive(&self, pid: u32) -> bool;
    /// True when process `pid` exists and has not exited (a zombie has).
    fn pid_running(&self, pid: u32) -> bool;
}

/// The real cgroup tree.
#[derive(Debug, Clone, Default)]
pub struct LinuxCgroupOps;

impl CgroupOps for LinuxCgroupOps {
    fn root(&self) -> PathBuf {
        PathBuf::from("/sys/fs/cgroup")
    }
    fn self_cgroup(&self) -> io::Result<String> {
        std::fs::read_to_string("/proc/self/cgroup")
    }
    fn read(&self, path: &Path) -> io::Result<String> {
        std::fs::read_to_string(path)
    }
    fn write(&self, path: &Path, value: &str) -> io::Result<()> {
        use std::io::Write;
        // One write(2) of the whole value: cgroup files take one setting per write.
        let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
        f.write_all(value.as_bytes())
    }
    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }
    fn writable(&self, path: &Path) -> bool {
        nix::unistd::access(path, nix::unistd::AccessFlags::W_OK).is_ok()
    }
    fn mkdir(&self, path: &Path) -> io::Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new().mode(0o755).create(path)
    }
    fn rmdir(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_dir(path)
    }
    fn subdirs(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            if e.file_type()?.is_dir() {
                out.push(e.file_name().to_string_lossy().into_owned());
            }
        }
        Ok(out)
    }
    fn pid_alive(&self, pid: u32) -> bool {
        Path::new("/proc").join(pid.to_string()).exists()
    }
    fn pid_running(&self, pid: u32) -> bool {
        // The state follows the command name's closing parenthesis in /proc/PID/stat.
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .is_some_and(|state| state != "Z" && state != "X")
        })
    }
}

/// How long [`ActiveCgroup::remove`] waits for exited processes to be reaped.
pub const REAP_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The prefix of sifr's cgroups; the rest is the pid of the sifr that made it.
const PREFIX: &str = "sifr-";

/// The container's cgroup, created and limited; [`ActiveCgroup::enter`] moves a process
/// in, [`ActiveCgroup::remove`] removes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveCgroup {
    pub dir: PathBuf,
}

impl ActiveCgroup {
    /// Moves process `pid` (and the children it forks from then on) into the cgroup.
    pub fn enter(&self, ops: &dyn CgroupOps, pid: i32) -> Result<(), CgroupError> {
        let path = self.dir.join("cgroup.procs");
        ops.write(&path, &pid.to_string())
            .map_err(|err| CgroupError::Io {
                path,
                what: "move the container into it",
                err,
            })
    }

    /// Removes the cgroup once its processes have ended. The kernel keeps an exited task
    /// in its cgroup until it is reaped, and an orphan of the container (a process whose
    /// parent ended first, without `--pid`) is reaped by init, which may take its time (seen
    /// on CI hosts). So while the cgroup is busy: tries for half a second, then waits, up to
    /// [`REAP_WAIT`], as long as every process left in it has exited; a process still running
    /// (a background job of the container) ends the wait at once.
    pub fn remove(&self, ops: &dyn CgroupOps) -> Result<(), CgroupError> {
        let start = std::time::Instant::now();
        let err = loop {
            match ops.rmdir(&self.dir) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
                Err(e) => break e,
            }
            let busy = || io::Error::from_raw_os_error(libc::EBUSY);
            let waited = start.elapsed();
            if waited >= REAP_WAIT {
                break busy();
            }
            if waited >= std::time::Duration::from_millis(500) {
                let procs = ops.read(&self.dir.join("cgroup.procs")).unwrap_or_default();
                if procs
                    .split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok())
                    .any(|p| ops.pid_running(p))
                {
                    break busy();
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        Err(CgroupError::Io {
            path: self.dir.clone(),
            what: "remove (processes of the container still run in it)",
            err,
        })
    }
}

fn no_delegation(why: impl Into<String>) -> CgroupError {
    CgroupError::NoDelegation { why: why.into() }
}

/// Finds the delegated parent, removes stale cgroups of crashed runs, enables the
/// controllers, creates `sifr-ID` and writes the limits. Nothing is left behind on failure.
pub fn setup(ops: &dyn CgroupOps, plan: &CgroupPlan, id: u32) -> Result<ActiveCgroup, CgroupError> {
    let root = ops.root();
    if !ops.exists(&root.join("cgroup.controllers")) {
        return Err(no_delegation(format!(
            "{} is not a cgroup v2 hierarchy: this host uses cgroup v1",
            root.display()
        )));
    }
    let text = ops.self_cgroup().map_err(|err| CgroupError::Io {
        path: "/proc/self/cgroup".into(),
        what: "read",
        err,
    })?;
    let Some(rel) = text.lines().find_map(|l| l.strip_prefix("0::")) else {
        return Err(no_delegation(
            "/proc/self/cgroup has no cgroup v2 entry: this host uses cgroup v1",
        ));
    };
    let own = root.join(rel.trim_start_matches('/'));
    let base = match own.parent() {
        Some(b) if own != root && b.starts_with(&root) => b.to_path_buf(),
        _ => return Err(no_delegation("sifr runs in the root cgroup")),
    };
    for p in [
        base.clone(),
        base.join("cgroup.procs"),
        base.join("cgroup.subtree_control"),
    ] {
        if !ops.writable(&p) {
            return Err(no_delegation(format!(
                "{} is not writable by the user",
                p.display()
            )));
        }
    }
    let available = read_set(ops, &base.join("cgroup.controllers"))?;
    let missing: Vec<&str> = plan
        .controllers
        .iter()
        .filter(|c| !available.contains(*c))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        return Err(no_delegation(format!(
            "controller {} not delegated to {}",
            missing.join(", "),
            base.display()
        )));
    }
    remove_stale(ops, &base);
    let enabled = read_set(ops, &base.join("cgroup.subtree_control"))?;
    let enable: Vec<String> = plan
        .controllers
        .iter()
        .filter(|c| !enabled.contains(*c))
        .map(|c| format!("+{c}"))
        .collect();
    if !enable.is_empty() {
        let path = base.join("cgroup.subtree_control");
        ops.write(&path, &enable.join(" ")).map_err(|err| {
            no_delegation(format!(
                "cannot enable {} in {}: {err}",
                enable.join(" "),
                path.display()
            ))
        })?;
    }
    let dir = base.join(format!("{PREFIX}{id}"));
    if ops.exists(&dir) {
        let _ = ops.rmdir(&dir);
    }
    ops.mkdir(&dir).map_err(|err| CgroupError::Io {
        path: dir.clone(),
        what: "create",
        err,
    })?;
    let active = ActiveCgroup { dir: dir.clone() };
    if let Err(e) = write_limits(ops, &dir, plan) {
        let _ = active.remove(ops);
        return Err(e);
    }
    Ok(active)
}

fn write_limits(ops: &dyn CgroupOps, dir: &Path, plan: &CgroupPlan) -> Result<(), CgroupError> {
    for w in &plan.writes {
        let mut path = dir.join(&w.file);
        let mut value = w.value.as_str();
        if !ops.exists(&path) {
            match &w.fallback {
                Some((file, v)) => {
                    path = dir.join(file);
                    value = v;
                }
                None if w.file == "io.bfq.weight" => {
                    return Err(invalid(format!(
                        "--blkio-weight-device needs the BFQ I/O scheduler ({} is missing)",
                        path.display()
                    )));
                }
                None => {}
            }
        }
        ops.write(&path, value).map_err(|err| CgroupError::Io {
            path: path.clone(),
            what: "write the limit",
            err,
        })?;
    }
    Ok(())
}

fn read_set(ops: &dyn CgroupOps, path: &Path) -> Result<BTreeSet<String>, CgroupError> {
    let text = ops.read(path).map_err(|err| CgroupError::Io {
        path: path.to_path_buf(),
        what: "read",
        err,
    })?;
    Ok(text.split_whitespace().map(str::to_string).collect())
}

/// Removes the `sifr-PID` cgroups whose sifr no longer runs and which hold no process.
fn remove_stale(ops: &dyn CgroupOps, base: &Path) {
    let Ok(names) = ops.subdirs(base) else {
        return;
    };
    for name in names {
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let dir = base.join(&name);
        let empty = ops
            .read(&dir.join("cgroup.procs"))
            .is_ok_and(|t| t.trim().is_empty());
        if !ops.pid_alive(pid) && empty {
            match ops.rmdir(&dir) {
                Ok(()) => log::debug!("removed stale cgroup {}", dir.display()),
                Err(e) => log::debug!("stale cgroup {}: {e}", dir.display()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    fn flags() -> ResourceFlags {
        ResourceFlags::default()
    }

    fn no_dev(p: &Path) -> Result<(i64, i64), String> {
        Err(format!("{} is not a device", p.display()))
    }

    fn sda(p: &Path) -> Result<(i64, i64), String> {
        if p == Path::new("/dev/sda") {
            Ok((8, 0))
        } else {
            no_dev(p)
        }
    }

    fn writes(p: &CgroupPlan) -> Vec<(String, String)> {
        p.writes
            .iter()
            .map(|w| (w.file.clone(), w.value.clone()))
            .collect()
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn test_ram_in_bytes_as_docker_units() {
        for (s, v) in [
            ("32", 32),
            ("32b", 32),
            ("32 B", 32),
            ("1k", 1024),
            ("1KiB", 1024),
            ("1 kb", 1024),
            ("1m", 1 << 20),
            ("512M", 512 << 20),
            ("1g", 1 << 30),
            ("1.5g", 3 << 29),
            ("2T", 2 << 40),
            ("1p", 1 << 50),
            ("0.5k", 512),
            ("1 ", 1),
            ("1ib", 1),
        ] {
            assert_eq!(ram_in_bytes(s), Ok(v), "{s}");
        }
        for s in [
            "", "-1", "1x", "k", "1kk", "1  ", " 1", "1.", ".5", "1bi", "1gbb", "1.2.3",
        ] {
            assert!(ram_in_bytes(s).is_err(), "{s}");
        }
        assert_eq!(ram_in_bytes("12x"), Err("invalid size: '12x'".to_string()));
    }

    #[test]
    fn test_cpus_as_quota_of_100ms() {
        assert_eq!(cpus_quota("1", 4), Ok((100_000, 100_000)));
        assert_eq!(cpus_quota("0.5", 4), Ok((50_000, 100_000)));
        assert_eq!(cpus_quota("2.25", 4), Ok((225_000, 100_000)));
        assert_eq!(cpus_quota(".01", 4), Ok((1_000, 100_000)));
        assert_eq!(cpus_quota("4", 4), Ok((400_000, 100_000)));
        let range = Err("cpus value must be in range 0.01 - 4".to_string());
        for s in ["0.009", "0", "4.001", "-1", "100000000000000"] {
            assert_eq!(cpus_quota(s, 4), range, "{s}");
        }
        for s in ["", "one", "1.2.3", "1,5", "."] {
            let e = cpus_quota(s, 4).expect_err(s);
            assert!(e.starts_with("invalid cpus value"), "{s}: {e}");
        }
    }

    #[test]
    fn test_conversion_formulas() {
        // opencontainers/cgroups: shares 2 → 1, 1024 (default) → 100, 262144 → 10000.
        assert_eq!(cpu_weight(0), 0);
        assert_eq!(cpu_weight(2), 1);
        assert_eq!(cpu_weight(1024), 100);
        assert_eq!(cpu_weight(512), 59);
        assert_eq!(cpu_weight(262_144), 10_000);
        assert_eq!(cpu_weight(1 << 20), 10_000);
        assert_eq!(io_weight(10), 1);
        assert_eq!(io_weight(500), 4950);
        assert_eq!(io_weight(1000), 10_000);
        assert_eq!(swap_max(0, 0), Ok(0));
        assert_eq!(swap_max(0, -1), Ok(-1));
        assert_eq!(swap_max(-1, 100), Ok(-1));
        assert_eq!(swap_max(300, 100), Ok(200));
        assert_eq!(swap_max(100, 100), Ok(0));
        assert!(swap_max(50, 100).is_err());
        assert!(swap_max(50, 0).is_err());
    }

    #[test]
    fn test_flags_to_files() {
        let f = ResourceFlags {
            memory: Some("1G".into()),
            memory_reservation: Some("512M".into()),
            memory_swap: Some("2G".into()),
            cpus: Some("1.5".into()),
            cpu_shares: Some("512".into()),
            cpuset_cpus: Some("0-1".into()),
            cpuset_mems: Some("0".into()),
            pids_limit: Some("10".into()),
            blkio_weight: Some("500".into()),
            blkio_weight_device: vec!["/dev/sda:100".into()],
            ..flags()
        };
        let c = limits(&f, 4, &sda).expect("valid").expect("limits");
        let p = plan(&c).expect("plan");
        assert_eq!(
            writes(&p),
            pairs(&[
                ("cpu.weight", "59"),
                ("cpu.max", "150000 100000"),
                ("cpuset.cpus", "0-1"),
                ("cpuset.mems", "0"),
                ("io.bfq.weight", "500"),
                ("io.bfq.weight", "8:0 100"),
                ("memory.swap.max", "1073741824"),
                ("memory.max", "1073741824"),
                ("memory.low", "536870912"),
                ("pids.max", "10"),
            ])
        );
        assert_eq!(
            p.writes[4].fallback,
            Some(("io.weight".into(), "4950".into()))
        );
        let ctl: Vec<&str> = p.controllers.iter().map(String::as_str).collect();
        assert_eq!(ctl, ["cpu", "cpuset", "io", "memory", "pids"]);
        assert!(p.warnings.is_empty());
    }

    #[test]
    fn test_flag_edge_values() {
        let one = |f: ResourceFlags| {
            let c = limits(&f, 4, &no_dev).expect("valid").expect("limits");
            writes(&plan(&c).expect("plan"))
        };
        // --memory-swap -1: unlimited swap; equal to --memory: no swap.
        assert_eq!(
            one(ResourceFlags {
                memory: Some("1m".into()),
                memory_swap: Some("-1".into()),
                ..flags()
            }),
            pairs(&[("memory.swap.max", "max"), ("memory.max", "1048576")])
        );
        assert_eq!(
            one(ResourceFlags {
                memory: Some("1m".into()),
                memory_swap: Some("1m".into()),
                ..flags()
            }),
            pairs(&[("memory.swap.max", "0"), ("memory.max", "1048576")])
        );
        assert_eq!(
            one(ResourceFlags {
                pids_limit: Some("-1".into()),
                ..flags()
            }),
            pairs(&[("pids.max", "max")])
        );
        // Values Apptainer treats as "not set".
        for f in [
            ResourceFlags {
                pids_limit: Some("0".into()),
                ..flags()
            },
            ResourceFlags {
                cpu_shares: Some("0".into()),
                blkio_weight: Some("0".into()),
                ..flags()
            },
        ] {
            assert_eq!(limits(&f, 4, &no_dev).expect("valid"), None);
        }
        // --oom-kill-disable: cgroup v2 has no such switch, a warning says so.
        let c = limits(
            &ResourceFlags {
                oom_kill_disable: true,
                ..flags()
            },
            4,
            &no_dev,
        )
        .expect("valid")
        .expect("limits");
        let p = plan(&c).expect("plan");
        assert!(p.writes.is_empty());
        assert!(p.warnings[0].contains("--oom-kill-disable is not applied"));
    }

    #[test]
    fn test_bad_values_one_line_each() {
        let cases: Vec<(ResourceFlags, &str)> = vec![
            (
                ResourceFlags {
                    memory: Some("12x".into()),
                    ..flags()
                },
                "invalid memory value: invalid size: '12x'",
            ),
            (
                ResourceFlags {
                    memory_reservation: Some("-5".into()),
                    ..flags()
                },
                "invalid memory-reservation value",
            ),
            (
                ResourceFlags {
                    memory_swap: Some("lots".into()),
                    ..flags()
                },
                "invalid memory-swap value",
            ),
            (
                ResourceFlags {
                    cpus: Some("64".into()),
                    ..flags()
                },
                "cpus value must be in range 0.01 - 4",
            ),
            (
                ResourceFlags {
                    cpu_shares: Some("x".into()),
                    ..flags()
                },
                "invalid argument \"x\" for \"--cpu-shares\" flag",
            ),
            (
                ResourceFlags {
                    cpuset_cpus: Some("0-a".into()),
                    ..flags()
                },
                "--cpuset-cpus: expected a list",
            ),
            (
                ResourceFlags {
                    pids_limit: Some("-2".into()),
                    ..flags()
                },
                "invalid pids-limit: -2",
            ),
            (
                ResourceFlags {
                    blkio_weight: Some("5".into()),
                    ..flags()
                },
                "blkio-weight must be in range 10-1000",
            ),
            (
                ResourceFlags {
                    blkio_weight_device: vec!["/dev/sda".into()],
                    ..flags()
                },
                "blkio-weight-device specifications must be in <device>:<weight> format",
            ),
            (
                ResourceFlags {
                    blkio_weight_device: vec!["/etc/passwd:100".into()],
                    ..flags()
                },
                "while examining device: /etc/passwd is not a device",
            ),
            (
                ResourceFlags {
                    blkio_weight_device: vec!["/dev/sda:2000".into()],
                    ..flags()
                },
                "blkio-device-weight must be in range 10-1000",
            ),
            (
                ResourceFlags {
                    memory: Some("1m".into()),
                    apply_cgroups: Some("/x.toml".into()),
                    ..flags()
                },
                "cannot apply a cgroups TOML file while using limit flags",
            ),
            (
                ResourceFlags {
                    apply_cgroups: Some("/nonexistent/limits.toml".into()),
                    ..flags()
                },
                "/nonexistent/limits.toml",
            ),
        ];
        for (f, needle) in cases {
            let e = limits(&f, 4, &sda).expect_err(needle).to_string();
            assert!(e.starts_with(needle) || e.contains(needle), "{needle}: {e}");
            assert_eq!(e.lines().count(), 1, "{e}");
        }
        // The memory+swap total below the memory limit is refused when planning.
        let c = limits(
            &ResourceFlags {
                memory: Some("2m".into()),
                memory_swap: Some("1m".into()),
                ..flags()
            },
            4,
            &no_dev,
        )
        .expect("valid")
        .expect("limits");
        let e = plan(&c).expect_err("refused").to_string();
        assert_eq!(e, "memory+swap limit should be >= memory limit");
    }

    #[test]
    fn test_apply_cgroups_file_to_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("limits.toml");
        std::fs::write(
            &path,
            "[memory]\nlimit = 524288000\n[cpu]\nshares = 1024\nquota = 20000\n\
             [pids]\nlimit = 5\n[[hugepageLimits]]\npageSize = \"2MB\"\nlimit = 4194304\n\
             [blockIO]\n[[blockIO.throttleReadBpsDevice]]\nmajor = 7\nminor = 0\nrate = 100\n\
             [rdma.mlx5_0]\nhcaHandles = 3\n[[devices]]\nallow = false\naccess = \"rwm\"\n\
             [unified]\n\"memory.high\" = \"400000000\"\n",
        )
        .expect("write");
        let f = ResourceFlags {
            apply_cgroups: Some(path),
            ..flags()
        };
        let c = limits(&f, 4, &no_dev).expect("valid").expect("limits");
        let p = plan(&c).expect("plan");
        assert_eq!(
            writes(&p),
            pairs(&[
                ("cpu.weight", "100"),
                ("cpu.max", "20000"),
                ("io.max", "7:0 rbps=100"),
                ("memory.max", "524288000"),
                ("pids.max", "5"),
                ("hugetlb.2MB.max", "4194304"),
                ("rdma.max", "mlx5_0 hca_handle=3"),
                ("memory.high", "400000000"),
            ])
        );
        assert_eq!(
            p.warnings,
            ["Device limits will not be applied with rootless cgroups"]
        );
        let ctl: Vec<&str> = p.controllers.iter().map(String::as_str).collect();
        assert_eq!(ctl, ["cpu", "hugetlb", "io", "memory", "pids", "rdma"]);
        // What cgroup v2 cannot limit is refused.
        for (text, needle) in [
            ("[memory]\nswappiness = 10\n", "memory.swappiness"),
            ("[memory]\nkernel = 10\n", "memory.kernel"),
            ("[cpu]\nrealtimeRuntime = 10\n", "cpu.realtime"),
            ("[network]\nclassID = 1\n", "[network]"),
            ("[blockIO]\nleafWeight = 100\n", "blockIO leafWeight"),
        ] {
            let c = CgroupsConfig::parse(text, &crate::config::Source::BuiltIn("t")).expect(text);
            let e = plan(&c).expect_err(text).to_string();
            assert!(e.starts_with(needle) && e.contains("cgroup v2"), "{e}");
        }
    }

    /// A directory laid out like the cgroup v2 tree of a systemd user manager, behind the
    /// seam: `mkdir` creates the interface files the kernel would (`child_files`), `rmdir`
    /// refuses a cgroup that holds a process, every write is recorded.
    struct FakeTree {
        dir: tempfile::TempDir,
        own: String,
        child_files: Vec<&'static str>,
        read_only: Vec<PathBuf>,
        alive: Vec<u32>,
        fail_writes: Vec<&'static str>,
        log: RefCell<Vec<String>>,
    }

    impl FakeTree {
        /// /sys/fs/cgroup with `user.slice/user-1000.slice/user@1000.service/app.slice`
        /// (delegated: controllers available, memory and pids enabled) holding the caller's
        /// `run-1.scope`.
        fn delegated() -> FakeTree {
            let dir = tempfile::tempdir().expect("tempdir");
            let root = dir.path();
            std::fs::write(
                root.join("cgroup.controllers"),
                "cpuset cpu io memory pids\n",
            )
            .expect("w");
            let base = root.join("user.slice/user-1000.slice/user@1000.service/app.slice");
            std::fs::create_dir_all(base.join("run-1.scope")).expect("mkdir");
            std::fs::write(
                base.join("cgroup.controllers"),
                "cpuset cpu io memory pids\n",
            )
            .expect("w");
            std::fs::write(base.join("cgroup.subtree_control"), "memory pids\n").expect("w");
            std::fs::write(base.join("cgroup.procs"), "").expect("w");
            std::fs::write(base.join("run-1.scope/cgroup.procs"), "4242\n").expect("w");
            FakeTree {
                dir,
                own: "0::/user.slice/user-1000.slice/user@1000.service/app.slice/run-1.scope"
                    .into(),
                child_files: vec![
                    "cgroup.procs",
                    "memory.max",
                    "memory.swap.max",
                    "pids.max",
                    "cpu.max",
                    "io.weight",
                ],
                read_only: vec![],
                alive: vec![],
                fail_writes: vec![],
                log: RefCell::new(vec![]),
            }
        }
        fn base(&self) -> PathBuf {
            self.dir
                .path()
                .join("user.slice/user-1000.slice/user@1000.service/app.slice")
        }
        fn rel(&self, p: &Path) -> String {
            p.strip_prefix(self.base())
                .map(|r| r.display().to_string())
                .unwrap_or_else(|_| p.display().to_string())
        }
        fn log(&self) -> Vec<String> {
            self.log.borrow().clone()
        }
    }

    impl CgroupOps for FakeTree {
        fn root(&self) -> PathBuf {
            self.dir.path().to_path_buf()
        }
        fn self_cgroup(&self) -> io::Result<String> {
            Ok(format!("{}\n", self.own))
        }
        fn read(&self, path: &Path) -> io::Result<String> {
            std::fs::read_to_string(path)
        }
        fn write(&self, path: &Path, value: &str) -> io::Result<()> {
            if self.fail_writes.iter().any(|f| path.ends_with(f)) {
                return Err(io::Error::from_raw_os_error(libc::EBUSY));
            }
            if !path.exists() {
                return Err(io::Error::from_raw_os_error(libc::ENOENT));
            }
            self.log
                .borrow_mut()
                .push(format!("write {} {value}", self.rel(path)));
            std::fs::write(path, value)
        }
        fn exists(&self, path: &Path) -> bool {
            path.exists()
        }
        fn writable(&self, path: &Path) -> bool {
            path.exists() && !self.read_only.iter().any(|r| r == path)
        }
        fn mkdir(&self, path: &Path) -> io::Result<()> {
            std::fs::create_dir(path)?;
            for f in &self.child_files {
                std::fs::write(path.join(f), "")?;
            }
            self.log
                .borrow_mut()
                .push(format!("mkdir {}", self.rel(path)));
            Ok(())
        }
        fn rmdir(&self, path: &Path) -> io::Result<()> {
            let procs = std::fs::read_to_string(path.join("cgroup.procs")).unwrap_or_default();
            if !procs.trim().is_empty() {
                return Err(io::Error::from_raw_os_error(libc::EBUSY));
            }
            std::fs::remove_dir_all(path)?;
            self.log
                .borrow_mut()
                .push(format!("rmdir {}", self.rel(path)));
            Ok(())
        }
        fn subdirs(&self, dir: &Path) -> io::Result<Vec<String>> {
            LinuxCgroupOps.subdirs(dir)
        }
        fn pid_alive(&self, pid: u32) -> bool {
            self.alive.contains(&pid)
        }
        fn pid_running(&self, pid: u32) -> bool {
            self.alive.contains(&pid)
        }
    }

    fn limit_plan() -> CgroupPlan {
        let f = ResourceFlags {
            memory: Some("64m".into()),
            cpus: Some("0.5".into()),
            pids_limit: Some("20".into()),
            blkio_weight: Some("100".into()),
            ..flags()
        };
        plan(&limits(&f, 4, &no_dev).expect("valid").expect("limits")).expect("plan")
    }

    #[test]
    fn test_setup_writes_limits_moves_pid_and_cleans_up() {
        let mut t = FakeTree::delegated();
        // The payload moved in below (4243) runs; 4250 has exited, awaiting its reaper.
        t.alive = vec![4243];
        let p = limit_plan();
        let cg = setup(&t, &p, 777).expect("set up");
        assert_eq!(cg.dir, t.base().join("sifr-777"));
        cg.enter(&t, 4243).expect("enter");
        assert_eq!(
            t.log(),
            [
                "write cgroup.subtree_control +cpu +io",
                "mkdir sifr-777",
                "write sifr-777/cpu.max 50000 100000",
                // No BFQ scheduler here: io.weight, converted.
                "write sifr-777/io.weight 1 + 90 * 9999 / 990",
                "write sifr-777/memory.max 67108864",
                "write sifr-777/pids.max 20",
                "write sifr-777/cgroup.procs 4243",
            ]
            .map(|s| s.replace("1 + 90 * 9999 / 990", &io_weight(100).to_string()))
        );
        // The payload still runs: the cgroup stays, without waiting for it.
        let started = std::time::Instant::now();
        assert!(cg.remove(&t).is_err());
        assert!(started.elapsed() < REAP_WAIT / 2);
        // Only an exited process left (a zombie awaiting init): waited for, bounded.
        std::fs::write(cg.dir.join("cgroup.procs"), "4250\n").expect("w");
        let dir = cg.dir.clone();
        let reaper = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(800));
            std::fs::write(dir.join("cgroup.procs"), "").expect("w");
        });
        cg.remove(&t).expect("removed once reaped");
        reaper.join().expect("reaper");
        assert!(!cg.dir.exists());
        assert_eq!(t.log().last().map(String::as_str), Some("rmdir sifr-777"));
    }

    #[test]
    fn test_setup_uses_bfq_and_removes_stale_cgroups() {
        let mut t = FakeTree::delegated();
        t.child_files.push("io.bfq.weight");
        t.alive.push(31);
        let base = t.base();
        // A crashed run (pid 30 gone, empty), a live one (31), a busy one, an other cgroup.
        for (name, procs) in [
            ("sifr-30", ""),
            ("sifr-31", ""),
            ("sifr-32", "99\n"),
            ("other", ""),
        ] {
            std::fs::create_dir(base.join(name)).expect("mkdir");
            std::fs::write(base.join(name).join("cgroup.procs"), procs).expect("w");
        }
        let cg = setup(&t, &limit_plan(), 778).expect("set up");
        assert!(!base.join("sifr-30").exists());
        for name in ["sifr-31", "sifr-32", "other"] {
            assert!(base.join(name).exists(), "{name}");
        }
        assert!(t.log().contains(&"rmdir sifr-30".to_string()));
        assert!(
            t.log()
                .contains(&"write sifr-778/io.bfq.weight 100".to_string())
        );
        cg.remove(&t).expect("removed");
    }

    #[test]
    fn test_setup_refusals_leave_nothing() {
        let p = limit_plan();
        let check = |t: &FakeTree, needle: &str| {
            let e = setup(t, &p, 900).expect_err(needle).to_string();
            assert!(e.contains(needle), "{needle}: {e}");
            assert!(
                e.starts_with("resource limits need a cgroup v2 delegation")
                    || e.starts_with("cgroup ")
                    || e.starts_with("--blkio"),
                "{e}"
            );
            assert_eq!(e.lines().count(), 1);
            assert!(!t.base().join("sifr-900").exists(), "{needle}: left behind");
        };
        // cgroup v1: no cgroup.controllers at the root.
        let t = FakeTree::delegated();
        std::fs::remove_file(t.dir.path().join("cgroup.controllers")).expect("rm");
        check(&t, "this host uses cgroup v1");
        // Hybrid (cgroup2 not at /sys/fs/cgroup's place for this process): no 0:: line.
        let t = FakeTree {
            own: "1:name=systemd:/user.slice".into(),
            ..FakeTree::delegated()
        };
        check(&t, "/proc/self/cgroup has no cgroup v2 entry");
        // In the root cgroup (a container without cgroup namespace delegation).
        let t = FakeTree {
            own: "0::/".into(),
            ..FakeTree::delegated()
        };
        check(&t, "sifr runs in the root cgroup");
        // Not owned by the user (a login session's slice).
        let mut t = FakeTree::delegated();
        let base = t.base();
        t.read_only.push(base.join("cgroup.procs"));
        check(&t, "cgroup.procs is not writable by the user");
        // A controller that is not delegated.
        let t = FakeTree::delegated();
        std::fs::write(t.base().join("cgroup.controllers"), "memory pids\n").expect("w");
        check(&t, "controller cpu, io not delegated");
        // The parent holds processes: the kernel refuses to enable controllers (EBUSY).
        let mut t = FakeTree::delegated();
        t.fail_writes.push("cgroup.subtree_control");
        check(&t, "cannot enable +cpu +io");
        // A limit file the kernel lacks (swap accounting off): the new cgroup is removed.
        let t = FakeTree::delegated();
        let swap = plan(
            &limits(
                &ResourceFlags {
                    memory: Some("1m".into()),
                    memory_swap: Some("2m".into()),
                    ..flags()
                },
                4,
                &no_dev,
            )
            .expect("valid")
            .expect("limits"),
        )
        .expect("plan");
        let mut t = t;
        t.child_files.retain(|f| *f != "memory.swap.max");
        let e = setup(&t, &swap, 900).expect_err("no swap file").to_string();
        assert!(e.contains("memory.swap.max: write the limit"), "{e}");
        assert!(!t.base().join("sifr-900").exists());
        assert!(t.log().contains(&"rmdir sifr-900".to_string()));
        // Per-device weights without BFQ.
        let t = FakeTree::delegated();
        let dev = plan(
            &limits(
                &ResourceFlags {
                    blkio_weight_device: vec!["/dev/sda:100".into()],
                    ..flags()
                },
                4,
                &sda,
            )
            .expect("valid")
            .expect("limits"),
        )
        .expect("plan");
        let e = setup(&t, &dev, 900).expect_err("no bfq").to_string();
        assert!(
            e.starts_with("--blkio-weight-device needs the BFQ I/O scheduler"),
            "{e}"
        );
        assert!(!t.base().join("sifr-900").exists());
    }
}
