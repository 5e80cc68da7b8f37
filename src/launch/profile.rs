//! Seccomp profiles (`--security seccomp:PROFILE`) compiled to a classic BPF program and
//! installed as the payload's last step before `execve`.
//!
//! The profile's rules are evaluated as runc/libseccomp evaluate the OCI seccomp JSON: a
//! call named by no applicable rule gets `defaultAction` (with `defaultErrnoRet`, EPERM when
//! absent); for a named call the first rule (in profile order) whose argument conditions
//! all hold decides; none holding → `defaultAction`. Docker's `includes`/`excludes` are
//! evaluated once, here, as moby's `setupSeccomp` does: `caps` against the payload's
//! capability set (none, or every capability of its user namespace under `--fakeroot`),
//! `arches` against the native architecture's Go name (`amd64`, `arm64`), `minKernel`
//! against the running kernel. Arguments are compared as 64-bit values, as libseccomp does.
//!
//! Architectures: sifr knows the system call numbers of the native architecture only
//! (x86_64 or aarch64, see `syscalls`). A call made through another ABI (i386 `int 0x80`,
//! x32, arm32 compat) gets the profile's `defaultAction` when that denies, and ENOSYS when
//! the default allows: letting such calls through would bypass every rule of a deny-list
//! profile (32-bit programs therefore do not run under a profile; without one they do).
//! `architectures`/`archMap` are accepted and have no further effect. Names of calls that
//! exist only on another architecture (`riscv_hwprobe` on x86_64) are skipped, as libseccomp
//! and Docker skip them; a name no architecture has is an error.
//!
//! Stacking: the kernel runs every installed filter and takes the most restrictive result
//! (for equal results, the most recently installed filter's data). The profile is installed
//! after sifr's root-emulation filter, so a profile that denies `chown` still denies under
//! `--fakeroot`, and calls the profile allows keep the emulation's answer.

use std::collections::BTreeMap;

use crate::config::seccomp::{
    Action, ArgCondition, CompareOp, Flag, KernelVersion, RuleFilter, SeccompProfile,
};

use super::syscalls;

/// One classic BPF instruction (`struct sock_filter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

/// A compiled profile, ready to install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileFilter {
    /// Where the profile came from (messages).
    pub origin: String,
    pub program: Vec<Insn>,
    /// `seccomp(2)` flags (`SECCOMP_FILTER_FLAG_*`).
    pub flags: u32,
}

/// What the rule conditions are evaluated against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Context {
    /// The payload holds every capability (of its user namespace): `--fakeroot`.
    pub all_caps: bool,
    /// The running kernel (`None`: unknown, `minKernel` conditions never hold).
    pub kernel: Option<KernelVersion>,
}

/// Why a profile cannot be used; one line each, naming the profile and the entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProfileError {
    #[error(
        "seccomp profile {origin}: {entry}: action {action} is not supported by sifr (use \
         SCMP_ACT_ALLOW, SCMP_ACT_ERRNO, SCMP_ACT_KILL, SCMP_ACT_KILL_THREAD, \
         SCMP_ACT_KILL_PROCESS, SCMP_ACT_TRAP or SCMP_ACT_LOG)"
    )]
    Action {
        origin: String,
        entry: String,
        action: &'static str,
    },
    #[error(
        "seccomp profile {origin}: {entry}: unknown system call \"{name}\" (no Linux \
         architecture has it; fix the name or remove it)"
    )]
    UnknownSyscall {
        origin: String,
        entry: String,
        name: String,
    },
    #[error("seccomp profile {origin}: {what} is not supported by sifr; remove it")]
    Unsupported { origin: String, what: &'static str },
    #[error(
        "seccomp profile {origin}: the filter needs {len} BPF instructions, more than the \
         kernel's 4096; merge rules or shorten the profile"
    )]
    TooLong { origin: String, len: usize },
    #[error("seccomp profiles are not supported on this architecture (x86_64 and aarch64 only)")]
    Arch,
}

const EPERM: u32 = 1;
const ENOSYS: u32 = 38;
/// The kernel's BPF_MAXINSNS.
const MAX_INSNS: usize = 4096;

// Classic BPF opcodes.
const LD_W_ABS: u16 = 0x20;
const JEQ_K: u16 = 0x15;
const JGT_K: u16 = 0x25;
const JGE_K: u16 = 0x35;
const JA: u16 = 0x05;
const RET_K: u16 = 0x06;
const AND_K: u16 = 0x54;

// struct seccomp_data offsets.
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const OFF_ARGS: u32 = 16;

const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
const AUDIT_ARCH_AARCH64: u32 = 0xc000_00b7;
/// x32 system calls arrive with AUDIT_ARCH_X86_64 and this bit set.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// The native architecture: its audit number, Go name and system call table.
struct Native {
    audit: u32,
    go_name: &'static str,
    table: &'static [(&'static str, i64)],
    x32: bool,
}

fn native() -> Result<Native, ProfileError> {
    if cfg!(target_arch = "x86_64") {
        Ok(Native {
            audit: AUDIT_ARCH_X86_64,
            go_name: "amd64",
            table: syscalls::X86_64,
            x32: true,
        })
    } else if cfg!(target_arch = "aarch64") {
        Ok(Native {
            audit: AUDIT_ARCH_AARCH64,
            go_name: "arm64",
            table: syscalls::AARCH64,
            x32: false,
        })
    } else {
        Err(ProfileError::Arch)
    }
}

/// The number of system call `name` in `table` (sorted by name).
pub fn lookup(table: &[(&str, i64)], name: &str) -> Option<i64> {
    table
        .binary_search_by(|(n, _)| (*n).cmp(name))
        .ok()
        .map(|i| table[i].1)
}

fn ret_value(action: Action, errno: Option<u32>) -> Option<u32> {
    Some(match action {
        Action::Allow => libc::SECCOMP_RET_ALLOW,
        Action::Errno => libc::SECCOMP_RET_ERRNO | errno.unwrap_or(EPERM),
        Action::Kill | Action::KillThread => libc::SECCOMP_RET_KILL_THREAD,
        Action::KillProcess => libc::SECCOMP_RET_KILL_PROCESS,
        Action::Trap => libc::SECCOMP_RET_TRAP,
        Action::Log => libc::SECCOMP_RET_LOG,
        Action::Trace | Action::Notify => return None,
    })
}

fn action_name(action: Action) -> &'static str {
    match action {
        Action::Trace => "SCMP_ACT_TRACE",
        Action::Notify => "SCMP_ACT_NOTIFY",
        _ => "this action",
    }
}

/// Whether a rule with these `includes`/`excludes` applies here (moby's setupSeccomp).
fn applies(
    includes: Option<&RuleFilter>,
    excludes: Option<&RuleFilter>,
    ctx: &Context,
    arch: &str,
) -> bool {
    let kernel_at_least = |v: &KernelVersion| ctx.kernel.is_some_and(|k| k >= *v);
    // Every capability name is held under fakeroot, none otherwise.
    let has_cap = |_: &String| ctx.all_caps;
    if let Some(ex) = excludes
        && (ex.arches.iter().any(|a| a == arch)
            || ex.caps.iter().any(has_cap)
            || ex.min_kernel.as_ref().is_some_and(kernel_at_least))
    {
        return false;
    }
    if let Some(inc) = includes
        && ((!inc.arches.is_empty() && !inc.arches.iter().any(|a| a == arch))
            || !inc.caps.iter().all(has_cap)
            || inc.min_kernel.as_ref().is_some_and(|v| !kernel_at_least(v)))
    {
        return false;
    }
    true
}

/// A rule for one system call number: conditions (all must hold) and the return value.
#[derive(Debug, Clone)]
struct Compiled {
    conds: Vec<ArgCondition>,
    ret: u32,
}

/// Compiles `profile` (from `origin`) for the native architecture.
pub fn compile(
    profile: &SeccompProfile,
    origin: &str,
    ctx: &Context,
) -> Result<ProfileFilter, ProfileError> {
    let nat = native()?;
    let origin_s = origin.to_string();
    if profile.listener_path.is_some() {
        return Err(ProfileError::Unsupported {
            origin: origin_s,
            what: "listenerPath (user-space notification)",
        });
    }
    let mut flags = 0u32;
    for f in &profile.flags {
        flags |= match f {
            Flag::Tsync => libc::SECCOMP_FILTER_FLAG_TSYNC as u32,
            Flag::Log => libc::SECCOMP_FILTER_FLAG_LOG as u32,
            Flag::SpecAllow => libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW as u32,
            Flag::WaitKillableRecv => {
                return Err(ProfileError::Unsupported {
                    origin: origin_s,
                    what: "flag SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV (user-space notification)",
                });
            }
        };
    }
    let default =
        ret_value(profile.default_action, profile.default_errno_ret).ok_or_else(|| {
            ProfileError::Action {
                origin: origin_s.clone(),
                entry: "defaultAction".into(),
                action: action_name(profile.default_action),
            }
        })?;
    // Calls through another ABI: the default when it denies, ENOSYS when it allows.
    let foreign = match profile.default_action {
        Action::Allow | Action::Log => libc::SECCOMP_RET_ERRNO | ENOSYS,
        _ => default,
    };
    let mut by_nr: BTreeMap<i64, Vec<Compiled>> = BTreeMap::new();
    for (i, rule) in profile.syscalls.iter().enumerate() {
        let entry = || {
            let names: Vec<&str> = rule.names.iter().map(|n| n.as_str()).collect();
            format!("syscalls[{i}] ({})", names.join(", "))
        };
        let ret = ret_value(rule.action, rule.errno_ret).ok_or_else(|| ProfileError::Action {
            origin: origin_s.clone(),
            entry: entry(),
            action: action_name(rule.action),
        })?;
        // Names are checked even when the rule does not apply here.
        let mut nrs = Vec::new();
        for name in &rule.names {
            match lookup(nat.table, name.as_str()) {
                Some(nr) => nrs.push(nr),
                None if syscalls::OTHER_ARCHES.contains(&name.as_str()) => {
                    log::debug!(
                        "seccomp profile {origin}: {} is not a system call of this \
                         architecture; skipped",
                        name.as_str()
                    );
                }
                None => {
                    return Err(ProfileError::UnknownSyscall {
                        origin: origin_s,
                        entry: entry(),
                        name: name.as_str().to_string(),
                    });
                }
            }
        }
        if !applies(
            rule.includes.as_ref(),
            rule.excludes.as_ref(),
            ctx,
            nat.go_name,
        ) {
            continue;
        }
        for nr in nrs {
            let rules = by_nr.entry(nr).or_default();
            // After an unconditional rule nothing else for this call is reached.
            if rules.last().is_some_and(|r| r.conds.is_empty()) {
                continue;
            }
            rules.push(Compiled {
                conds: rule.args.clone(),
                ret,
            });
        }
    }
    let program = assemble(&nat, &by_nr, default, foreign);
    if program.len() > MAX_INSNS {
        return Err(ProfileError::TooLong {
            origin: origin_s,
            len: program.len(),
        });
    }
    Ok(ProfileFilter {
        origin: origin_s,
        program,
        flags,
    })
}

/// An instruction whose jump target is a label, resolved by [`Asm::finish`].
#[derive(Debug, Clone, Copy)]
enum Op {
    Insn(Insn),
    /// `ja label`.
    Jump(usize),
    Label(usize),
}

#[derive(Default)]
struct Asm {
    ops: Vec<Op>,
    labels: usize,
}

impl Asm {
    fn label(&mut self) -> usize {
        self.labels += 1;
        self.labels - 1
    }
    fn place(&mut self, l: usize) {
        self.ops.push(Op::Label(l));
    }
    fn raw(&mut self, code: u16, jt: u8, jf: u8, k: u32) {
        self.ops.push(Op::Insn(Insn { code, jt, jf, k }));
    }
    fn load(&mut self, off: u32) {
        self.raw(LD_W_ABS, 0, 0, off);
    }
    fn ret(&mut self, k: u32) {
        self.raw(RET_K, 0, 0, k);
    }
    /// If `A <code> k` holds, go to `target`; else fall through.
    fn jump_if(&mut self, code: u16, k: u32, target: usize) {
        self.raw(code, 0, 1, k);
        self.ops.push(Op::Jump(target));
    }
    /// If `A <code> k` does not hold, go to `target`; else fall through.
    fn jump_unless(&mut self, code: u16, k: u32, target: usize) {
        self.raw(code, 1, 0, k);
        self.ops.push(Op::Jump(target));
    }
    fn finish(self) -> Vec<Insn> {
        let mut at = vec![0usize; self.labels];
        let mut n = 0;
        for op in &self.ops {
            match op {
                Op::Label(l) => at[*l] = n,
                _ => n += 1,
            }
        }
        let mut out = Vec::with_capacity(n);
        for op in self.ops {
            match op {
                Op::Insn(i) => out.push(i),
                Op::Jump(l) => {
                    let next = out.len() + 1;
                    let k = at[l].saturating_sub(next) as u32;
                    out.push(Insn {
                        code: JA,
                        jt: 0,
                        jf: 0,
                        k,
                    });
                }
                Op::Label(_) => {}
            }
        }
        out
    }
}

/// Emits the test of one argument condition: falls through when it holds, jumps to `fail`
/// when not. The argument is 64 bits: low word at +0, high word at +4 (little-endian).
fn condition(a: &mut Asm, c: &ArgCondition, fail: usize) {
    let lo = OFF_ARGS + 8 * u32::from(c.index);
    let hi = lo + 4;
    let split = |v: u64| ((v >> 32) as u32, v as u32);
    match c.op {
        CompareOp::Equal | CompareOp::NotEqual => {
            let (vh, vl) = split(c.value);
            if c.op == CompareOp::Equal {
                a.load(hi);
                a.jump_unless(JEQ_K, vh, fail);
                a.load(lo);
                a.jump_unless(JEQ_K, vl, fail);
            } else {
                let ok = a.label();
                a.load(hi);
                a.jump_unless(JEQ_K, vh, ok);
                a.load(lo);
                a.jump_if(JEQ_K, vl, fail);
                a.place(ok);
            }
        }
        CompareOp::MaskedEqual => {
            let (mh, ml) = split(c.value);
            let (vh, vl) = split(c.value_two);
            a.load(hi);
            a.raw(AND_K, 0, 0, mh);
            a.jump_unless(JEQ_K, vh, fail);
            a.load(lo);
            a.raw(AND_K, 0, 0, ml);
            a.jump_unless(JEQ_K, vl, fail);
        }
        CompareOp::Greater
        | CompareOp::GreaterOrEqual
        | CompareOp::Less
        | CompareOp::LessOrEqual => {
            // a > v (or a >= v) as 64-bit unsigned; Less/LessOrEqual are the negations of
            // GreaterOrEqual/Greater.
            let (low_code, negate) = match c.op {
                CompareOp::Greater => (JGT_K, false),
                CompareOp::GreaterOrEqual => (JGE_K, false),
                CompareOp::Less => (JGE_K, true),
                _ => (JGT_K, true),
            };
            let ok = a.label();
            let (on_true, on_false) = if negate { (fail, ok) } else { (ok, fail) };
            let (vh, vl) = split(c.value);
            a.load(hi);
            a.jump_if(JGT_K, vh, on_true);
            a.jump_unless(JEQ_K, vh, on_false);
            a.load(lo);
            a.jump_if(low_code, vl, on_true);
            a.ops.push(Op::Jump(on_false));
            a.place(ok);
        }
    }
}

/// Where a dispatched number goes.
#[derive(Debug, Clone, Copy)]
enum Target {
    Ret(u32),
    Block(usize),
}

/// Emits the dispatch over `entries` (sorted by number; A holds the number): halves with
/// `jge` down to runs of at most four, compared one by one; no match returns `default`.
fn dispatch(a: &mut Asm, entries: &[(u32, Target)], default: u32) {
    if entries.len() > 4 {
        let (low, high) = entries.split_at(entries.len() / 2);
        let upper = a.label();
        a.jump_if(JGE_K, high[0].0, upper);
        dispatch(a, low, default);
        a.place(upper);
        dispatch(a, high, default);
        return;
    }
    for (nr, target) in entries {
        match target {
            Target::Ret(k) => {
                a.raw(JEQ_K, 0, 1, *nr);
                a.ret(*k);
            }
            Target::Block(l) => a.jump_if(JEQ_K, *nr, *l),
        }
    }
    a.ret(default);
}

fn assemble(
    nat: &Native,
    by_nr: &BTreeMap<i64, Vec<Compiled>>,
    default: u32,
    foreign: u32,
) -> Vec<Insn> {
    let mut a = Asm::default();
    let other = a.label();
    a.load(OFF_ARCH);
    a.jump_unless(JEQ_K, nat.audit, other);
    a.load(OFF_NR);
    if nat.x32 {
        a.jump_if(JGE_K, X32_SYSCALL_BIT, other);
    }
    // Dispatch on the number, a binary search over the sorted numbers (a handful of
    // comparisons per call, not one per rule); an unconditional first rule returns at once.
    let mut blocks = Vec::new();
    let entries: Vec<(u32, Target)> = by_nr
        .iter()
        .map(|(nr, rules)| {
            let target = match rules.first() {
                Some(r) if r.conds.is_empty() => Target::Ret(r.ret),
                _ => {
                    let l = a.label();
                    blocks.push((l, rules));
                    Target::Block(l)
                }
            };
            (*nr as u32, target)
        })
        .collect();
    dispatch(&mut a, &entries, default);
    for (l, rules) in blocks {
        a.place(l);
        for r in rules {
            let next = a.label();
            for c in &r.conds {
                condition(&mut a, c, next);
            }
            a.ret(r.ret);
            a.place(next);
        }
        a.ret(default);
    }
    a.place(other);
    a.ret(foreign);
    a.finish()
}

/// Installs `filter` in the calling thread (needs no_new_privs first).
pub fn install(filter: &ProfileFilter) -> std::io::Result<()> {
    let mut insns: Vec<libc::sock_filter> = filter
        .program
        .iter()
        .map(|i| libc::sock_filter {
            code: i.code,
            jt: i.jt,
            jf: i.jf,
            k: i.k,
        })
        .collect();
    let len = u16::try_from(insns.len())
        .map_err(|_| std::io::Error::other("seccomp filter longer than 65535 instructions"))?;
    let prog = libc::sock_fprog {
        len,
        filter: insns.as_mut_ptr(),
    };
    // SAFETY: seccomp(SECCOMP_SET_MODE_FILTER) reads `prog` and the instructions it points
    // to, both alive for the duration of the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            filter.flags as libc::c_ulong,
            &prog as *const libc::sock_fprog,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The running kernel's version, from uname(2).
pub fn running_kernel() -> Option<KernelVersion> {
    // SAFETY: uname fills the zeroed struct it is given; the release field is then a
    // NUL-terminated string within the array.
    let release = unsafe {
        let mut uts: libc::utsname = std::mem::zeroed();
        if libc::uname(&mut uts) != 0 {
            return None;
        }
        std::ffi::CStr::from_ptr(uts.release.as_ptr())
            .to_string_lossy()
            .into_owned()
    };
    parse_release(&release)
}

/// `MAJOR.MINOR` of a kernel release string such as `6.1.0-28-amd64`.
pub fn parse_release(release: &str) -> Option<KernelVersion> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some(KernelVersion { major, minor })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Source;

    fn parse(text: &str) -> SeccompProfile {
        SeccompProfile::parse(text, &Source::File("/p.json".into())).expect("profile parses")
    }

    fn ctx() -> Context {
        Context {
            all_caps: false,
            kernel: Some(KernelVersion { major: 6, minor: 1 }),
        }
    }

    fn build(text: &str, ctx: &Context) -> ProfileFilter {
        compile(&parse(text), "/p.json", ctx).expect("compiles")
    }

    /// Runs the program on one system call, as the kernel would (the few opcodes used).
    fn run(prog: &[Insn], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
        let word = |off: u32| -> u32 {
            match off {
                OFF_NR => nr,
                OFF_ARCH => arch,
                o => {
                    let i = ((o - OFF_ARGS) / 8) as usize;
                    if (o - OFF_ARGS).is_multiple_of(8) {
                        args[i] as u32
                    } else {
                        (args[i] >> 32) as u32
                    }
                }
            }
        };
        let (mut pc, mut acc) = (0usize, 0u32);
        loop {
            let i = prog[pc];
            pc += 1;
            let jump = |cond: bool| if cond { i.jt } else { i.jf } as usize;
            match i.code {
                LD_W_ABS => acc = word(i.k),
                AND_K => acc &= i.k,
                JA => pc += i.k as usize,
                JEQ_K => pc += jump(acc == i.k),
                JGT_K => pc += jump(acc > i.k),
                JGE_K => pc += jump(acc >= i.k),
                RET_K => return i.k,
                other => panic!("opcode {other:#x}"),
            }
        }
    }

    fn call(p: &ProfileFilter, name: &str, args: [u64; 6]) -> u32 {
        let nr = lookup(native().expect("arch").table, name).expect("known") as u32;
        run(&p.program, native().expect("arch").audit, nr, args)
    }

    const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
    const DENY: u32 = libc::SECCOMP_RET_ERRNO | 1;

    #[test]
    fn test_table_matches_libc() {
        #[cfg(target_arch = "x86_64")]
        let table = syscalls::X86_64;
        #[cfg(target_arch = "aarch64")]
        let table = syscalls::AARCH64;
        for (name, nr) in [
            ("read", libc::SYS_read),
            ("openat", libc::SYS_openat),
            ("mkdirat", libc::SYS_mkdirat),
            ("clone3", libc::SYS_clone3),
            ("statx", libc::SYS_statx),
            ("personality", libc::SYS_personality),
            ("fchmodat2", libc::SYS_fchmodat2),
            ("mseal", libc::SYS_mseal),
            ("futex_waitv", libc::SYS_futex_waitv),
            ("execveat", libc::SYS_execveat),
            ("seccomp", libc::SYS_seccomp),
        ] {
            assert_eq!(lookup(table, name), Some(nr), "{name}");
        }
        // Sorted (binary search) and without duplicate names.
        for t in [syscalls::X86_64, syscalls::AARCH64] {
            assert!(t.windows(2).all(|w| w[0].0 < w[1].0));
        }
    }

    #[test]
    fn test_new_syscalls_numbered_as_the_kernel() {
        let generic = [
            ("cachestat", 451),
            ("fchmodat2", 452),
            ("map_shadow_stack", 453),
            ("futex_wake", 454),
            ("futex_wait", 455),
            ("futex_requeue", 456),
            ("statmount", 457),
            ("listmount", 458),
            ("lsm_get_self_attr", 459),
            ("lsm_set_self_attr", 460),
            ("lsm_list_modules", 461),
            ("mseal", 462),
            ("setxattrat", 463),
            ("getxattrat", 464),
            ("listxattrat", 465),
            ("removexattrat", 466),
        ];
        for (name, nr) in generic {
            assert_eq!(lookup(syscalls::X86_64, name), Some(nr), "x86_64 {name}");
            assert_eq!(lookup(syscalls::AARCH64, name), Some(nr), "aarch64 {name}");
        }
        assert_eq!(lookup(syscalls::X86_64, "uretprobe"), Some(335));
        assert_eq!(lookup(syscalls::X86_64, "mkdir"), Some(83));
        assert_eq!(lookup(syscalls::AARCH64, "mkdir"), None);
        assert!(syscalls::OTHER_ARCHES.contains(&"riscv_hwprobe"));
        assert!(syscalls::OTHER_ARCHES.contains(&"mkdir"));
    }

    #[test]
    fn test_docker_default_profile_compiles() {
        let text = include_str!("../../etc/seccomp-profiles/default.json");
        let p = parse(text);
        for all_caps in [false, true] {
            let f = compile(&p, "default", &Context { all_caps, ..ctx() }).expect("compiles");
            assert!(f.program.len() < MAX_INSNS, "{}", f.program.len());
            assert_eq!(call(&f, "statx", [0; 6]), ALLOW);
            assert_eq!(call(&f, "read", [0; 6]), ALLOW);
            assert_eq!(call(&f, "kexec_load", [0; 6]), DENY);
            // clone3 is ENOSYS unless CAP_SYS_ADMIN, so that glibc falls back to clone.
            let clone3 = call(&f, "clone3", [0; 6]);
            if all_caps {
                assert_eq!(clone3, ALLOW);
            } else {
                assert_eq!(clone3, libc::SECCOMP_RET_ERRNO | 38);
            }
            // mount needs CAP_SYS_ADMIN.
            assert_eq!(call(&f, "mount", [0; 6]) == ALLOW, all_caps);
            // personality: only the listed personas.
            assert_eq!(call(&f, "personality", [0; 6]), ALLOW);
            assert_eq!(call(&f, "personality", [0x0040_0000, 0, 0, 0, 0, 0]), DENY);
        }
    }

    #[test]
    fn test_rules_args_and_errno() {
        let f = build(
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
  {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"},
  {"names": ["uname"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
  {"names": ["personality"], "action": "SCMP_ACT_ERRNO",
   "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]},
  {"names": ["socket"], "action": "SCMP_ACT_ERRNO",
   "args": [{"index": 0, "value": 17, "op": "SCMP_CMP_EQ"}]},
  {"names": ["lseek"], "action": "SCMP_ACT_KILL_PROCESS",
   "args": [{"index": 1, "value": 4294967296, "op": "SCMP_CMP_GT"}]},
  {"names": ["pread64"], "action": "SCMP_ACT_TRAP",
   "args": [{"index": 3, "value": 4294967296, "op": "SCMP_CMP_LT"}]},
  {"names": ["fcntl"], "action": "SCMP_ACT_LOG",
   "args": [{"index": 1, "value": 1030, "op": "SCMP_CMP_NE"},
            {"index": 2, "value": 255, "valueTwo": 1, "op": "SCMP_CMP_MASKED_EQ"}]},
  {"names": ["getpid"], "action": "SCMP_ACT_KILL",
   "args": [{"index": 0, "value": 5, "op": "SCMP_CMP_GE"}]},
  {"names": ["getpid"], "action": "SCMP_ACT_ERRNO",
   "args": [{"index": 0, "value": 2, "op": "SCMP_CMP_LE"}]}
]}"#,
            &ctx(),
        );
        assert_eq!(call(&f, "mkdirat", [0; 6]), DENY);
        assert_eq!(call(&f, "openat", [0; 6]), ALLOW);
        assert_eq!(call(&f, "uname", [0; 6]), libc::SECCOMP_RET_ERRNO | 38);
        assert_eq!(call(&f, "personality", [8, 0, 0, 0, 0, 0]), DENY);
        assert_eq!(call(&f, "personality", [0, 0, 0, 0, 0, 0]), ALLOW);
        // 64-bit comparisons: the high word counts.
        assert_eq!(call(&f, "personality", [8 | 1 << 32, 0, 0, 0, 0, 0]), ALLOW);
        assert_eq!(call(&f, "socket", [17, 3, 0, 0, 0, 0]), DENY);
        assert_eq!(call(&f, "socket", [2, 1, 0, 0, 0, 0]), ALLOW);
        let kp = libc::SECCOMP_RET_KILL_PROCESS;
        assert_eq!(call(&f, "lseek", [0, 1 << 32, 0, 0, 0, 0]), ALLOW);
        assert_eq!(call(&f, "lseek", [0, (1 << 32) + 1, 0, 0, 0, 0]), kp);
        assert_eq!(call(&f, "lseek", [0, 1 << 33, 0, 0, 0, 0]), kp);
        assert_eq!(call(&f, "lseek", [0, u32::MAX as u64, 0, 0, 0, 0]), ALLOW);
        let trap = libc::SECCOMP_RET_TRAP;
        assert_eq!(call(&f, "pread64", [0, 0, 0, u32::MAX as u64, 0, 0]), trap);
        assert_eq!(call(&f, "pread64", [0, 0, 0, 1 << 32, 0, 0]), ALLOW);
        let log = libc::SECCOMP_RET_LOG;
        assert_eq!(call(&f, "fcntl", [0, 1, 0x101, 0, 0, 0]), log);
        assert_eq!(call(&f, "fcntl", [0, 1030, 0x101, 0, 0, 0]), ALLOW);
        assert_eq!(call(&f, "fcntl", [0, 1, 0x102, 0, 0, 0]), ALLOW);
        // Two rules for one call: the first that holds decides.
        assert_eq!(call(&f, "getpid", [7, 0, 0, 0, 0, 0]), 0);
        assert_eq!(call(&f, "getpid", [2, 0, 0, 0, 0, 0]), DENY);
        assert_eq!(call(&f, "getpid", [3, 0, 0, 0, 0, 0]), ALLOW);
        // Another ABI: ENOSYS under an allowing default; x32 numbers too.
        let enosys = libc::SECCOMP_RET_ERRNO | 38;
        assert_eq!(run(&f.program, 0x4000_0003, 39, [0; 6]), enosys);
        if cfg!(target_arch = "x86_64") {
            let x32 = AUDIT_ARCH_X86_64;
            assert_eq!(run(&f.program, x32, X32_SYSCALL_BIT | 83, [0; 6]), enosys);
        }
    }

    /// Every number of the native table reaches its own rule through the binary dispatch.
    #[test]
    fn test_dispatch_reaches_every_call() {
        let table = native().expect("arch").table;
        let rules: Vec<String> = table
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 3 != 0)
            .map(|(_, (name, nr))| {
                format!(
                    r#"{{"names": ["{name}"], "action": "SCMP_ACT_ERRNO", "errnoRet": {}}}"#,
                    nr + 1
                )
            })
            .collect();
        let text = format!(
            r#"{{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{}]}}"#,
            rules.join(",")
        );
        let f = build(&text, &ctx());
        for (i, (name, nr)) in table.iter().enumerate() {
            let want = if i % 3 == 0 {
                ALLOW
            } else {
                libc::SECCOMP_RET_ERRNO | (*nr as u32 + 1)
            };
            assert_eq!(call(&f, name, [0; 6]), want, "{name}");
        }
        // Numbers no call has.
        let audit = native().expect("arch").audit;
        assert_eq!(run(&f.program, audit, 5000, [0; 6]), ALLOW);
    }

    #[test]
    fn test_default_action_and_foreign_calls() {
        let f = build(
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 13,
                "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW"}]}"#,
            &ctx(),
        );
        assert_eq!(call(&f, "read", [0; 6]), ALLOW);
        assert_eq!(call(&f, "write", [0; 6]), libc::SECCOMP_RET_ERRNO | 13);
        assert_eq!(
            run(&f.program, 0x4000_0003, 3, [0; 6]),
            libc::SECCOMP_RET_ERRNO | 13
        );
    }

    #[test]
    fn test_includes_and_excludes() {
        let text = r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
  {"names": ["mount"], "action": "SCMP_ACT_ERRNO", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
  {"names": ["umount2"], "action": "SCMP_ACT_ERRNO", "excludes": {"caps": ["CAP_SYS_ADMIN"]}},
  {"names": ["sync"], "action": "SCMP_ACT_ERRNO", "includes": {"minKernel": "6.2"}},
  {"names": ["syncfs"], "action": "SCMP_ACT_ERRNO", "excludes": {"minKernel": "4.8"}},
  {"names": ["getcwd"], "action": "SCMP_ACT_ERRNO", "includes": {"arches": ["s390x"]}},
  {"names": ["getuid"], "action": "SCMP_ACT_ERRNO", "excludes": {"arches": ["amd64", "arm64"]}},
  {"names": ["riscv_hwprobe", "getgid"], "action": "SCMP_ACT_ERRNO"}
]}"#;
        let none = build(text, &ctx());
        let all = build(
            text,
            &Context {
                all_caps: true,
                ..ctx()
            },
        );
        assert_eq!(call(&none, "mount", [0; 6]), ALLOW);
        assert_eq!(call(&all, "mount", [0; 6]), DENY);
        assert_eq!(call(&none, "umount2", [0; 6]), DENY);
        assert_eq!(call(&all, "umount2", [0; 6]), ALLOW);
        assert_eq!(call(&none, "sync", [0; 6]), ALLOW);
        assert_eq!(call(&none, "syncfs", [0; 6]), ALLOW);
        assert_eq!(call(&none, "getcwd", [0; 6]), ALLOW);
        assert_eq!(call(&none, "getuid", [0; 6]), ALLOW);
        // A name of another architecture is skipped; the rest of the rule applies.
        assert_eq!(call(&none, "getgid", [0; 6]), DENY);
    }

    #[test]
    fn test_refusals_name_profile_and_entry() {
        let err = |text: &str| {
            compile(&parse(text), "/p.json", &ctx())
                .expect_err("refused")
                .to_string()
        };
        let e = err(r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
            {"names": ["read"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["mkdir", "nosuchcall"], "action": "SCMP_ACT_ERRNO"}]}"#);
        assert!(
            e.contains("/p.json") && e.contains("syscalls[1]") && e.contains("\"nosuchcall\""),
            "{e}"
        );
        let e = err(r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
            {"names": ["ptrace"], "action": "SCMP_ACT_NOTIFY"}]}"#);
        assert!(
            e.contains("syscalls[0] (ptrace)") && e.contains("SCMP_ACT_NOTIFY"),
            "{e}"
        );
        let e = err(r#"{"defaultAction": "SCMP_ACT_TRACE"}"#);
        assert!(
            e.contains("defaultAction") && e.contains("SCMP_ACT_TRACE"),
            "{e}"
        );
        assert!(!e.contains('\n'));
    }

    #[test]
    fn test_release_parsing() {
        assert_eq!(
            parse_release("6.1.0-28-amd64"),
            Some(KernelVersion { major: 6, minor: 1 })
        );
        assert_eq!(parse_release("garbage"), None);
        assert!(running_kernel().is_some());
    }

    #[test]
    fn test_installed_profile_denies_in_the_kernel() {
        let f = build(
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
  {"names": ["mkdirat", "mkdir"], "action": "SCMP_ACT_ERRNO"},
  {"names": ["getcwd"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}]}"#,
            &ctx(),
        );
        // SAFETY: the child only makes raw system calls and leaves with _exit.
        match unsafe { nix::unistd::fork() }.expect("fork") {
            nix::unistd::ForkResult::Child => {
                let code = (|| {
                    if nix::sys::prctl::set_no_new_privs().is_err() || install(&f).is_err() {
                        return 100;
                    }
                    // SAFETY: plain system calls on C string literals and a local buffer.
                    unsafe {
                        if libc::mkdir(c"/nonexistent-sifr/d".as_ptr(), 0o700) == 0
                            || *libc::__errno_location() != libc::EPERM
                        {
                            return 1;
                        }
                        let mut buf = [0 as libc::c_char; 64];
                        if !libc::getcwd(buf.as_mut_ptr(), buf.len()).is_null()
                            || *libc::__errno_location() != libc::ENOSYS
                        {
                            return 2;
                        }
                    }
                    0
                })();
                // SAFETY: ends the forked child.
                unsafe { libc::_exit(code) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                let status = nix::sys::wait::waitpid(child, None).expect("wait");
                assert_eq!(status, nix::sys::wait::WaitStatus::Exited(child, 0));
            }
        }
    }
}
