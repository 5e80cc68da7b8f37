//! Output that scripts parse, as Apptainer gives it: `version` under each name, the exit
//! status of usage errors (1, as cobra's), `instance stop` with nothing to stop, and
//! `key list` (`Name (Comment) <Email>`, creation times in local time).

mod common;

use std::process::Command;

use common::*;

/// `version` prints the version `--version` shows, under sifr's own name and the drop-in
/// names: `apptainer --version` → `apptainer version V`, `apptainer version` → `V`.
#[test]
fn test_version_verb_matches_version_flag_under_each_name() {
    let dir = tempdir();
    let mut names = vec![sifr_bin()];
    for name in ["apptainer", "singularity"] {
        let link = dir.path().join(name);
        std::os::unix::fs::symlink(sifr_bin(), &link).expect("symlink");
        names.push(link);
    }
    for bin in names {
        let flag = ok(&run(&bin, ["--version"]));
        let verb = ok(&run(&bin, ["version"]));
        assert_eq!(verb.lines().count(), 1, "{verb:?}");
        let (_, v) = flag
            .trim_end()
            .rsplit_once(" version ")
            .expect("a version line");
        assert_eq!(
            verb,
            format!("{v}\n"),
            "{}: --version said {flag:?}",
            bin.display()
        );
    }
}

/// Unknown verbs and flags and missing arguments exit 1, as Apptainer's cobra handling
/// does, with one line that points to the help of the verb (or sub-command) given.
#[test]
fn test_usage_errors_exit_1() {
    let img = sif_fixture("busybox_amd64.sif").display().to_string();
    let cases: Vec<(Vec<&str>, &str, &str)> = vec![
        (vec!["no-such-verb"], "no-such-verb", "(see 'sifr --help')"),
        (
            vec!["--no-such-flag", "version"],
            "--no-such-flag",
            "--help')",
        ),
        (
            vec!["exec", "--no-such-flag", &img, "true"],
            "--no-such-flag",
            "(see 'sifr exec --help')",
        ),
        (vec!["exec", &img], "COMMAND", "(see 'sifr exec --help')"),
        // Apptainer's docker daemon flag: not in sifr.
        (
            vec!["exec", "--docker-host", "unix:///x", &img, "true"],
            "--docker-host",
            "(see 'sifr exec --help')",
        ),
        (
            vec!["pull", "--docker-host", "unix:///x", "docker://a"],
            "--docker-host",
            "(see 'sifr pull --help')",
        ),
        (
            vec![
                "push",
                "--docker-host",
                "unix:///x",
                "a.sif",
                "oras://a/b:1",
            ],
            "--docker-host",
            "(see 'sifr push --help')",
        ),
        (vec!["inspect"], "IMAGE", "(see 'sifr inspect --help')"),
        (
            vec!["key", "no-such-subcommand"],
            "no-such-subcommand",
            "(see 'sifr key --help')",
        ),
        (
            vec!["key", "export", "--no-such-flag", "x.asc"],
            "--no-such-flag",
            "(see 'sifr key export --help')",
        ),
    ];
    for (args, needle, hint) in cases {
        let out = sifr(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
        assert_one_line_error(&out, needle);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.trim_end().ends_with(hint), "{args:?}: {err}");
    }
    // A verb group without its subcommand shows its help, as cobra does.
    for group in [
        &["instance"][..],
        &["key"][..],
        &["sif"][..],
        &["config"][..],
        &[][..],
    ] {
        let out = sifr(group);
        assert_eq!(out.status.code(), Some(0), "{group:?}: {out:?}");
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(
            help.contains("\nAvailable Commands:\n"),
            "{group:?}: {help}"
        );
        assert!(out.stderr.is_empty(), "{group:?}: {out:?}");
    }
}

/// `instance stop` with nothing to stop: Apptainer's message and exit status 1, for the
/// legacy `instance.stop --all` that spython sends too.
#[test]
fn test_instance_stop_with_nothing_to_stop() {
    for args in [
        vec!["instance", "stop", "--all"],
        vec!["instance.stop", "--all"],
        vec!["instance", "stop", "web1"],
    ] {
        let out = sifr(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            "Error for command \"stop\": no instance found\n",
            "{args:?}"
        );
        assert!(out.stdout.is_empty());
    }
    // Another user's instances are root's business (Apptainer's fatal line, 255).
    require_unprivileged();
    for verb in ["stop", "list"] {
        let out = sifr(["instance", verb, "--user", "root", "x"]);
        assert_eq!(out.status.code(), Some(255), "{verb}: {out:?}");
        assert_one_line_error(&out, &format!("Only root user can {verb} user's instances"));
    }
    let out = sifr(["instance", "stop"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "Error for command \"stop\": invalid command\n"
    );
}

/// `key list`: `Name (Comment) <Email>` even with no comment, and the creation time in the
/// local time zone in Go's format.
#[test]
fn test_key_list_shows_apptainer_user_and_local_time() {
    let dir = tempdir();
    let keys = dir.path().join("keys");
    let keys = keys.to_str().expect("utf8");
    let key = |args: &[&str], tz: &str| {
        Command::new(sifr_bin())
            .arg("key")
            .args(args)
            .args(["--keysdir", keys])
            .env("TZ", tz)
            .output()
            .expect("run sifr")
    };
    ok(&key(
        &[
            "newpair",
            "-N",
            "Key Owner",
            "-E",
            "owner@example.com",
            "-C",
            "",
            "-P",
            "",
            "--algorithm",
            "ed25519",
        ],
        "UTC",
    ));
    let list = ok(&key(&["list"], "Asia/Tokyo"));
    assert!(
        list.contains("0)  User:              Key Owner () <owner@example.com>\n"),
        "{list}"
    );
    let created = list
        .lines()
        .find_map(|l| l.trim().strip_prefix("Creation time:"))
        .expect("a creation time")
        .trim()
        .to_string();
    assert!(created.ends_with(" +0900 JST"), "{created}");
    let utc = ok(&key(&["list"], "UTC"));
    assert!(utc.contains(" +0000 UTC\n"), "{utc}");
}

/// `VERB --help` has the shape of Apptainer's help (its docs/templates.go): the short
/// description, `Usage:` with Apptainer's usage line under the name sifr was called by,
/// `Description:`, `Options:`; verb groups list `Available Commands:`.
#[test]
fn test_help_has_apptainer_shape() {
    let dir = tempdir();
    let link = dir.path().join("apptainer");
    std::os::unix::fs::symlink(sifr_bin(), &link).expect("symlink");
    for (bin, name) in [(sifr_bin(), "sifr"), (link, "apptainer")] {
        for (verb, usage) in [
            ("exec", "exec [exec options...] <container> <command>"),
            ("run", "run [run options...] <container> [args...]"),
            ("shell", "shell [shell options...] <container>"),
            (
                "build",
                "build [local options...] <IMAGE PATH> <BUILD SPEC>",
            ),
            ("pull", "pull [pull options...] [output file] <URI>"),
            ("push", "push [push options...] <image> <URI>"),
            ("inspect", "inspect [inspect options...] <image path>"),
        ] {
            let help = ok(&run(&bin, [verb, "--help"]));
            let want = format!("\n\nUsage:\n  {name} {usage}\n\nDescription:\n");
            assert!(help.contains(&want), "{name} {verb}: {help}");
            assert!(help.contains("\nOptions:\n"), "{name} {verb}: {help}");
        }
        let help = ok(&run(&bin, ["instance", "stop", "--help"]));
        assert!(
            help.contains(&format!(
                "Usage:\n  {name} instance stop [stop options...] [instance]\n"
            )),
            "{help}"
        );
        // `help VERB` is `VERB --help`, as cobra's help command.
        assert_eq!(
            ok(&run(&bin, ["help", "exec"])),
            ok(&run(&bin, ["exec", "--help"]))
        );
        let help = ok(&run(&bin, ["key", "--help"]));
        assert!(help.contains("\nAvailable Commands:\n"), "{help}");
        assert!(
            help.contains(&format!("Usage:\n  {name} key [key options...]\n")),
            "{help}"
        );
    }
}

/// An Apptainer verb that sifr does not implement says so in one line (not "unrecognized
/// subcommand", as for a typo), and exits with sifr's fatal status.
#[test]
fn test_apptainer_verbs_sifr_lacks_say_so() {
    for args in [
        vec!["capability", "avail"],
        vec!["checkpoint", "list"],
        vec!["completion", "bash"],
        vec!["delete", "library://x/y/z:1"],
        vec!["oci", "state", "x"],
        vec!["plugin", "list"],
        vec!["remote", "list"],
        vec!["search", "alpine"],
        vec!["tag", "x", "y"],
        vec!["buildcfg", "x"],
        vec!["confgen", "x"],
        vec!["config", "global", "--set", "x", "y"],
    ] {
        let out = sifr(&args);
        assert_eq!(out.status.code(), Some(255), "{args:?}: {out:?}");
        let what = args[..2].join(" ");
        let needle = match args[0] {
            "instance" | "key" | "keys" | "config" | "remote" => {
                format!("'{what}' is an Apptainer command")
            }
            v => format!("'{v}' is an Apptainer command"),
        };
        assert_one_line_error(&out, &needle);
    }
}

/// The main verbs' help ends with Apptainer's `Examples:` section (`  $ NAME VERB ...` lines,
/// under the name sifr was called by), and `Description:` says more than the short text
/// on the first line.
#[test]
fn test_help_has_examples_and_long_descriptions() {
    let dir = tempdir();
    let link = dir.path().join("apptainer");
    std::os::unix::fs::symlink(sifr_bin(), &link).expect("symlink");
    for (bin, name) in [(sifr_bin(), "sifr"), (link, "apptainer")] {
        for verb in [
            "exec", "run", "shell", "test", "build", "pull", "push", "inspect", "sign", "verify",
            "key",
        ] {
            let help = ok(&run(&bin, [verb, "--help"]));
            let (_, examples) = help
                .split_once("\n\nExamples:\n")
                .unwrap_or_else(|| panic!("{name} {verb}: no Examples: section in {help}"));
            let lines: Vec<&str> = examples.lines().filter(|l| !l.is_empty()).collect();
            assert!(!lines.is_empty(), "{name} {verb}: {help}");
            for l in &lines {
                assert!(
                    l.starts_with(&format!("  $ {name} {verb}")),
                    "{name} {verb}: example {l:?} in {help}"
                );
            }
            let short = help.lines().next().expect("a first line");
            let (_, rest) = help.split_once("\nDescription:\n").expect("Description:");
            let (description, _) = rest.split_once("\n\nOptions:\n").expect("Options:");
            assert_ne!(description.trim(), short.trim(), "{name} {verb}: {help}");
            assert!(
                description.lines().count() >= 2,
                "{name} {verb}: a one-line description in {help}"
            );
        }
    }
}
