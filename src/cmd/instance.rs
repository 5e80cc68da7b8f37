//! `instance start|run|stop|list`, and joining an instance (`exec|run|shell|test
//! instance://NAME`): flags translated to `launch::instance` calls; output in Apptainer's
//! formats (spython parses `instance list --json`). `stop` with nothing to stop says so as
//! Apptainer does (`Error for command "stop": no instance found`, exit status 1).

use std::time::Duration;

use anyhow::{Context as _, bail};

use super::action::prepare;
use super::{CommandError, Context};
use crate::cli::action::ActionArgs;
use crate::cli::instance::{InstanceArgs, InstanceCommand, InstanceStartArgs};
use crate::launch::identity::HostUser;
use crate::launch::instance::{self, Dirs, InstanceError, LiveProcs, StartSpec, StopRequest};
use crate::launch::plan::Action;

/// `instance list --json` with no instance, as Go's json.Encoder with a tab indent writes it.
pub const EMPTY_JSON: &str = "{\n\t\"instances\": []\n}\n";

/// Apptainer's default `instance stop --timeout`.
const DEFAULT_STOP_TIMEOUT: u32 = 10;

pub fn instance(ctx: &Context, a: InstanceArgs) -> anyhow::Result<i32> {
    match a.command {
        InstanceCommand::Start(s) => start(ctx, Action::Start, s),
        InstanceCommand::Run(s) => start(ctx, Action::Run, s),
        InstanceCommand::Stats { user: Some(_), .. } if !is_root() => {
            bail!("Only the root user can look at stats of a user's instance")
        }
        InstanceCommand::Stats { user: Some(_), .. } => {
            bail!("sifr shows only the calling user's instances (drop --user)")
        }
        InstanceCommand::Stats { json: true, .. } => bail!(
            "instance stats --json (Apptainer's cgroup statistics) is not supported by sifr yet; \
             use the table (--no-stream for one reading)"
        ),
        InstanceCommand::Stats {
            no_stream, name, ..
        } => stats(&name, no_stream),
        InstanceCommand::List { user: Some(_), .. } if !is_root() => {
            bail!("Only root user can list user's instances")
        }
        InstanceCommand::List { user: Some(_), .. } | InstanceCommand::List { all: true, .. } => {
            bail!("sifr lists only the calling user's instances (drop --user and --all)")
        }
        InstanceCommand::List {
            json, logs, name, ..
        } => {
            if json && logs {
                bail!("more than one flags have been set");
            }
            let dirs = Dirs::current(&HostUser::current()?)?;
            let found = instance::list(&dirs, name.as_deref(), &LiveProcs)?;
            if json {
                print!("{}", instance::format_json(&found));
            } else {
                print!("{}", instance::format_table(&found, logs));
            }
            Ok(0)
        }
        // Apptainer: no name and no --all is "invalid command"; otherwise the (empty) list
        // of matching instances is "no instance found". Both exit with status 1.
        InstanceCommand::Stop {
            all: false,
            name: None,
            ..
        } => Err(CommandError {
            verb: "stop",
            message: "invalid command".into(),
        }
        .into()),
        InstanceCommand::Stop { user: Some(_), .. } if !is_root() => {
            bail!("Only root user can stop user's instances")
        }
        InstanceCommand::Stop { user: Some(_), .. } => {
            bail!("sifr stops only the calling user's instances (drop --user)")
        }
        InstanceCommand::Stop {
            all,
            force,
            signal,
            timeout,
            name,
            ..
        } => {
            let sig = match (force, signal.as_deref()) {
                (true, _) => nix::sys::signal::Signal::SIGKILL,
                (false, Some(s)) => parse_signal(s)?,
                (false, None) => nix::sys::signal::Signal::SIGTERM,
            };
            let req = StopRequest {
                pattern: if all { None } else { name },
                signal: sig,
                timeout: Duration::from_secs(timeout.unwrap_or(DEFAULT_STOP_TIMEOUT).into()),
            };
            let dirs = Dirs::current(&HostUser::current()?)?;
            match instance::stop(&dirs, &req, &LiveProcs, &mut |l| log::info!("{l}")) {
                Ok(()) => Ok(0),
                Err(InstanceError::NotFound) => Err(CommandError {
                    verb: "stop",
                    message: "no instance found".into(),
                }
                .into()),
                Err(e) => Err(e.into()),
            }
        }
    }
}

/// `instance stats`: Apptainer's table, from /proc (the instance's processes: CPU over the
/// last second, resident memory against the host's, storage I/O, count), every second until
/// the instance ends, or once with `--no-stream`.
fn stats(name: &str, no_stream: bool) -> anyhow::Result<i32> {
    use std::io::Write as _;
    let dirs = Dirs::current(&HostUser::current()?)?;
    let found = instance::list(&dirs, Some(name), &LiveProcs)?;
    let s = match found.as_slice() {
        [] => bail!("no instance found"),
        [s] => s,
        more => bail!("query returned more than one instance ({})", more.len()),
    };
    log::info!(
        "Stats for {} instance of {} (PID={})",
        s.name,
        s.image,
        s.pid
    );
    // SAFETY: sysconf reads a constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let mem_limit = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .unwrap_or(0)
        * 1024;
    let mut before = instance::usage(s);
    let mut at = std::time::Instant::now();
    loop {
        std::thread::sleep(Duration::from_secs(1));
        if !s.processes_alive(&LiveProcs) {
            bail!("instance {} has ended", s.name);
        }
        let after = instance::usage(s);
        let table = instance::format_stats(
            &s.name,
            &before,
            &after,
            at.elapsed().as_secs_f64(),
            ticks,
            mem_limit,
        );
        let mut out = std::io::stdout().lock();
        if !no_stream {
            // goterm's Clear and MoveCursor(1, 1), as Apptainer's live view.
            write!(out, "\x1b[2J\x1b[1;1H")?;
        }
        write!(out, "{table}")?;
        out.flush()?;
        if no_stream {
            return Ok(0);
        }
        before = after;
        at = std::time::Instant::now();
    }
}

/// A signal by name (`TERM`, `SIGTERM`) or number, as Apptainer's `--signal`.
fn parse_signal(s: &str) -> anyhow::Result<nix::sys::signal::Signal> {
    use nix::sys::signal::Signal;
    use std::str::FromStr;
    let bad = || anyhow::anyhow!("Could not convert stop signal: unknown signal {s:?}");
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| bad());
    }
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    Signal::from_str(&name).map_err(|_| bad())
}

/// `instance start|run`: the flags as any start's, the instance detached.
fn start(ctx: &Context, action: Action, mut s: InstanceStartArgs) -> anyhow::Result<i32> {
    // Apptainer binds --boot to APPTAINER_BOOT for instances only; it is refused as the
    // flag is (root only).
    if crate::compat::control_var("BOOT").is_some_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "1" | "t" | "true" | "y" | "yes" | "on"
        )
    }) {
        s.action.boot = true;
    }
    // Flags Apptainer's instance start does not take.
    for (given, flag) in [
        (s.action.no_pid, "--no-pid"),
        (s.action.pwd.is_some(), "--pwd"),
    ] {
        if given {
            bail!(
                "{flag} is not a flag of instance start: instances always start in /, with a PID namespace"
            );
        }
    }
    instance::check_name(&s.name)?;
    let args: Vec<String> = std::env::args().collect();
    let init = !(s.action.no_init || s.action.compat);
    let p = prepare(
        ctx,
        action,
        &s.image,
        s.args.clone(),
        &s.action,
        None,
        Some(&s.name),
    )?;
    let spec = StartSpec {
        dirs: Dirs::current(&p.user)?,
        name: s.name.clone(),
        image: p.req.image_display.display().to_string(),
        args,
        init,
        pid_file: s.pid_file.as_ref().map(Into::into),
    };
    instance::start(spec, &p.req, &p.policy, p.user, p.mounter)?;
    log::info!("instance started successfully");
    Ok(0)
}

/// `exec|run|shell|test instance://NAME`: the command runs inside the live instance, planned
/// from the flags the instance was started with (its identity, capabilities and seccomp),
/// with this command's environment, working directory and app flags.
pub fn join(
    ctx: &Context,
    action: Action,
    name: &str,
    args: Vec<String>,
    flags: ActionArgs,
    shell: Option<String>,
) -> anyhow::Result<i32> {
    let user = HostUser::current()?;
    let dirs = Dirs::current(&user)?;
    let state = instance::find(&dirs, name, &LiveProcs)?;
    let mut joined = started_flags(&state.args)
        .with_context(|| format!("cannot read how instance {name} was started"))?;
    if let Some(warning) = ignored_when_joining(&flags, name) {
        eprintln!("WARNING: {warning}");
    }
    keep_join_flags(&mut joined, &flags);
    let mut p = prepare(ctx, action, &state.image, args, &joined, shell, None)?;
    // The instance has a PID namespace: the plan is made for one. The command sees the
    // instance's name (APPTAINER_INSTANCE), as Apptainer's joined processes do.
    p.req.opts.pid = true;
    p.req.opts.instance = Some(state.name.clone());
    p.req.opts.joining = true;
    let outcome = crate::launch::start::join(&p.req, &p.policy, p.user, &state)?;
    Ok(outcome.exit_status())
}

/// The flags a join uses from its own command line; the others are the instance's.
fn keep_join_flags(to: &mut ActionArgs, from: &ActionArgs) {
    to.cleanenv = from.cleanenv;
    to.env = from.env.clone();
    to.env_file = from.env_file.clone();
    to.no_env = from.no_env.clone();
    to.no_eval = from.no_eval;
    to.no_umask = from.no_umask;
    to.pwd = from.pwd.clone();
    to.app = from.app.clone();
}

/// A join runs with the flags its instance was started with (as Apptainer's, which ignores
/// the others silently, saying so only for --fakeroot): sifr says so whenever the command
/// line (or an environment name) asked for anything else.
fn ignored_when_joining(flags: &ActionArgs, name: &str) -> Option<String> {
    use clap::Parser;
    #[derive(Parser)]
    struct Defaults {
        #[command(flatten)]
        action: ActionArgs,
    }
    let mut plain = Defaults::try_parse_from(["sifr"]).ok()?.action;
    keep_join_flags(&mut plain, flags);
    let asked = flags;
    (format!("{asked:?}") != format!("{plain:?}")).then(|| {
        format!(
            "joining instance {name}: only --env, --env-file, --cleanenv, --no-env, --no-eval, \
             --no-umask, --pwd and --app apply; the other flags given are ignored (the \
             instance keeps those it was started with)"
        )
    })
}

/// The action flags of the recorded `instance start|run` command line.
fn started_flags(args: &[String]) -> anyhow::Result<ActionArgs> {
    use clap::Parser;
    let argv = super::end_options_after_image(super::legacy_instance_verbs(
        args.iter().map(Into::into).collect(),
    ));
    let cli = crate::cli::Cli::try_parse_from(argv).map_err(|e| anyhow::anyhow!("{e}"))?;
    match cli.command {
        Some(crate::cli::Command::Instance(InstanceArgs {
            command: InstanceCommand::Start(s) | InstanceCommand::Run(s),
        })) => Ok(s.action),
        _ => bail!("the recorded command line is not an instance start"),
    }
}

/// Whether sifr runs as root (only root may name another user's instances).
fn is_root() -> bool {
    nix::unistd::getuid().is_root()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_signals_by_name_or_number() {
        use nix::sys::signal::Signal;
        assert_eq!(parse_signal("TERM").expect("test"), Signal::SIGTERM);
        assert_eq!(parse_signal("sigusr1").expect("test"), Signal::SIGUSR1);
        assert_eq!(parse_signal("9").expect("test"), Signal::SIGKILL);
        assert!(parse_signal("NOPE").is_err());
    }

    #[test]
    fn test_join_reads_the_instance_flags() {
        let args: Vec<String> = [
            "sifr",
            "instance",
            "start",
            "--fakeroot",
            "--drop-caps",
            "CAP_CHOWN",
            "img.sif",
            "web",
            "a",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let f = started_flags(&args).expect("test");
        assert!(f.fakeroot);
        assert!(f.drop_caps.is_some());
    }
}
