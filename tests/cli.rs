//! Black-box tests of sifr's process-level contract: version lines, drop-in names, exit codes.

mod common;

use common::*;

#[test]
fn test_version_flag_and_verb() {
    let out = sifr(["--version"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("sifr version {}\n", env!("CARGO_PKG_VERSION"))
    );
    assert!(out.stderr.is_empty());
    let out = sifr(["version"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{}\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn test_drop_in_names_print_apptainer_version() {
    let dir = tempdir();
    for name in ["apptainer", "singularity"] {
        let link = dir.path().join(name);
        std::os::unix::fs::symlink(sifr_bin(), &link).expect("symlink");
        let out = run(&link, ["--version"]);
        assert!(out.status.success());
        let line = String::from_utf8_lossy(&out.stdout);
        // Snakemake requires stdout to start with "apptainer" and a version >= 1.0.0.
        assert!(line.starts_with("apptainer version 1."), "{line}");
        assert_eq!(line.lines().count(), 1);
        // Global flags before the verb, as workflow tools pass them.
        let out = run(&link, ["--quiet", "--silent", "version"]);
        assert!(out.status.success());
        assert!(out.stderr.is_empty());
    }
}

#[test]
fn test_unknown_verb_is_one_line_usage_error_1() {
    let out = sifr(["no-such-verb"]);
    assert_eq!(out.status.code(), Some(1));
    assert_one_line_error(&out, "no-such-verb");
}

/// spython lists instances with `instance list --json` and stops them with the legacy
/// `instance.stop --all`; with none running, sifr says so in Apptainer's formats
/// (tests/e2e_instance.rs starts real ones).
#[test]
fn test_instance_verbs_report_none() {
    let out = sifr(["instance", "list", "--json"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "{\n\t\"instances\": []\n}\n"
    );
    assert!(out.stderr.is_empty());
    let out = sifr(["-q", "instance.list", "-j"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"instances\": []"));
    let out = sifr(["instance", "list"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "INSTANCE NAME    PID    IP    IMAGE\n"
    );
    // Nothing to stop: Apptainer's message and exit status 1 (see tests/cli_output.rs).
    let out = sifr(["instance.stop", "--all"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_one_line_error(&out, "no instance found");
    assert_one_line_error(&sifr(["instance", "stop", "web1"]), "no instance found");
    let out = sifr(["instance", "start", "no-such-img.sif", "web1"]);
    assert_one_line_error(&out, "no-such-img.sif");
    assert_eq!(out.status.code(), Some(255));
    let out = sifr(["instance", "start", "no-such-img.sif", "bad/name"]);
    assert_one_line_error(&out, "not a valid instance name");
    assert_eq!(out.status.code(), Some(255));
}

/// An empty control variable is unset, as in Apptainer: spython exports
/// SINGULARITY_PULLFOLDER="", batch scripts clear SINGULARITY_CONFIG= or SINGULARITY_TMPDIR=.
#[test]
fn test_empty_control_variables_mean_unset() {
    let fixture = sif_fixture("busybox_amd64.sif");
    let out = std::process::Command::new(sifr_bin())
        .args(["sif", "list"])
        .arg(&fixture)
        .env("SINGULARITY_CONFIG", "")
        .env("APPTAINER_TMPDIR", "")
        .env("SIFR_BIND", "")
        .output()
        .expect("run sifr");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stderr.is_empty());
}
