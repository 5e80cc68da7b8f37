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
fn test_unknown_verb_is_one_line_fatal_255() {
    let out = sifr(["no-such-verb"]);
    assert_eq!(out.status.code(), Some(255));
    assert_one_line_error(&out, "no-such-verb");
}
