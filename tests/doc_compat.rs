//! docs/compatibility.md cannot drift from the tests: every row of its `## Verbs` and
//! `## Action flags` tables names at least one test, every named test exists, and the test
//! of a "refused" row mentions the verb or flag it refuses.
//!
//! The document and the sources are compiled in (CI runs the test binaries as an
//! unprivileged user, from a directory that does not hold the source tree).

/// The integration test files and the `src/` modules the two tables may name. A row that
/// names a file not listed here fails, saying which file to add.
const SOURCES: &[(&str, &str)] = &[
    ("tests/cli.rs", include_str!("cli.rs")),
    ("tests/cli_output.rs", include_str!("cli_output.rs")),
    (
        "tests/config_fakeroot.rs",
        include_str!("config_fakeroot.rs"),
    ),
    (
        "tests/e2e_action_flags.rs",
        include_str!("e2e_action_flags.rs"),
    ),
    ("tests/e2e_binds.rs", include_str!("e2e_binds.rs")),
    ("tests/e2e_caps.rs", include_str!("e2e_caps.rs")),
    (
        "tests/e2e_config_compat.rs",
        include_str!("e2e_config_compat.rs"),
    ),
    ("tests/e2e_build.rs", include_str!("e2e_build.rs")),
    ("tests/e2e_cache.rs", include_str!("e2e_cache.rs")),
    ("tests/e2e_registry.rs", include_str!("e2e_registry.rs")),
    ("tests/e2e_env_compat.rs", include_str!("e2e_env_compat.rs")),
    ("tests/e2e_keyserver.rs", include_str!("e2e_keyserver.rs")),
    ("tests/e2e_fakeroot.rs", include_str!("e2e_fakeroot.rs")),
    ("tests/e2e_gpu.rs", include_str!("e2e_gpu.rs")),
    ("tests/e2e_instance.rs", include_str!("e2e_instance.rs")),
    ("tests/e2e_kept.rs", include_str!("e2e_kept.rs")),
    (
        "src/launch/instance.rs",
        include_str!("../src/launch/instance.rs"),
    ),
    ("tests/e2e_network.rs", include_str!("e2e_network.rs")),
    ("tests/e2e_cgroups.rs", include_str!("e2e_cgroups.rs")),
    ("tests/e2e_oci.rs", include_str!("e2e_oci.rs")),
    ("tests/e2e_oras.rs", include_str!("e2e_oras.rs")),
    (
        "tests/e2e_overlay_create.rs",
        include_str!("e2e_overlay_create.rs"),
    ),
    (
        "tests/e2e_overlay_dir.rs",
        include_str!("e2e_overlay_dir.rs"),
    ),
    (
        "tests/e2e_overlay_image.rs",
        include_str!("e2e_overlay_image.rs"),
    ),
    (
        "src/launch/ovlfile.rs",
        include_str!("../src/launch/ovlfile.rs"),
    ),
    (
        "src/launch/cgroups.rs",
        include_str!("../src/launch/cgroups.rs"),
    ),
    (
        "src/launch/layers.rs",
        include_str!("../src/launch/layers.rs"),
    ),
    ("tests/e2e_refusals.rs", include_str!("e2e_refusals.rs")),
    ("tests/e2e_run.rs", include_str!("e2e_run.rs")),
    ("tests/e2e_seccomp.rs", include_str!("e2e_seccomp.rs")),
    ("tests/e2e_simg.rs", include_str!("e2e_simg.rs")),
    ("tests/e2e_supervisor.rs", include_str!("e2e_supervisor.rs")),
    ("tests/oci_sources.rs", include_str!("oci_sources.rs")),
    ("tests/sif_cli.rs", include_str!("sif_cli.rs")),
    ("tests/sif_oracle.rs", include_str!("sif_oracle.rs")),
    ("tests/sign_cli.rs", include_str!("sign_cli.rs")),
    ("src/source.rs", include_str!("../src/source.rs")),
    (
        "src/build/oci/cache_admin.rs",
        include_str!("../src/build/oci/cache_admin.rs"),
    ),
    (
        "src/build/oci/login.rs",
        include_str!("../src/build/oci/login.rs"),
    ),
    (
        "src/build/oci/registry.rs",
        include_str!("../src/build/oci/registry.rs"),
    ),
    (
        "src/build/oci/oras.rs",
        include_str!("../src/build/oci/oras.rs"),
    ),
    (
        "src/launch/planner.rs",
        include_str!("../src/launch/planner.rs"),
    ),
    ("src/cmd/mod.rs", include_str!("../src/cmd/mod.rs")),
    ("src/launch/gpu.rs", include_str!("../src/launch/gpu.rs")),
    (
        "src/launch/profile.rs",
        include_str!("../src/launch/profile.rs"),
    ),
    (
        "src/sign/keychoice.rs",
        include_str!("../src/sign/keychoice.rs"),
    ),
    (
        "src/sign/keytext.rs",
        include_str!("../src/sign/keytext.rs"),
    ),
    ("src/sign/hkp.rs", include_str!("../src/sign/hkp.rs")),
    (
        "src/sign/keyservers.rs",
        include_str!("../src/sign/keyservers.rs"),
    ),
];

const DOC: &str = include_str!("../docs/compatibility.md");

/// The table rows of one `## ` section: (line number, cells).
fn rows(section: &str) -> Vec<(usize, Vec<String>)> {
    let mut inside = false;
    let mut out = Vec::new();
    for (n, line) in DOC.lines().enumerate() {
        if let Some(title) = line.strip_prefix("## ") {
            inside = title.trim() == section;
            continue;
        }
        if !inside || !line.starts_with('|') || line.starts_with("|---") {
            continue;
        }
        let cells: Vec<String> = line
            .trim_matches('|')
            .split(" | ")
            .map(|c| c.trim().to_string())
            .collect();
        if cells.first().is_some_and(|c| c == "name") {
            continue;
        }
        out.push((n + 1, cells));
    }
    out
}

/// The backticked spans of a cell.
fn code_spans(cell: &str) -> Vec<&str> {
    cell.split('`').skip(1).step_by(2).collect()
}

/// Where a named test is, and its body: `file::test` is `tests/file.rs`, `a::b::tests::test`
/// a unit test in `src/a/b.rs` (or `src/a/b/mod.rs`, or a file whose path ends so).
fn find_test(name: &str) -> Result<&'static str, String> {
    let parts: Vec<&str> = name.split("::").collect();
    let (func, modules) = parts.split_last().ok_or("empty name")?;
    let modules: Vec<&str> = modules.iter().copied().filter(|m| *m != "tests").collect();
    if modules.is_empty() {
        return Err(format!("`{name}` names no file"));
    }
    let candidates: Vec<String> = if modules.len() == 1 {
        vec![
            format!("tests/{}.rs", modules[0]),
            format!("/{}.rs", modules[0]),
            format!("/{}/mod.rs", modules[0]),
        ]
    } else {
        let joined = modules.join("/");
        vec![format!("/{joined}.rs"), format!("/{joined}/mod.rs")]
    };
    let file = SOURCES
        .iter()
        .find(|(path, _)| {
            candidates
                .iter()
                .any(|c| *path == c.as_str() || path.ends_with(c.as_str()))
        })
        .ok_or_else(|| {
            format!("`{name}`: no file {candidates:?} (add it to SOURCES in tests/doc_compat.rs)")
        })?;
    let head = format!("fn {func}(");
    let start = file
        .1
        .find(&head)
        .ok_or_else(|| format!("`{name}`: no fn {func} in {}", file.0))?;
    let body = &file.1[start..];
    let end = body
        .find("\n}\n")
        .or_else(|| body.find("\n    }\n"))
        .unwrap_or(body.len());
    Ok(&body[..end])
}

/// What a row is about: each backticked span of its first cell as words, each word as its
/// `/`-separated alternatives (`-o/--overlay` is one word, `cache clean` two).
fn subjects(cell: &str) -> Vec<Vec<Vec<String>>> {
    code_spans(cell)
        .iter()
        .map(|span| {
            span.split_whitespace()
                .filter(|w| !w.starts_with('[') && !w.contains('='))
                .map(|w| w.split('/').map(str::to_string).collect())
                .collect()
        })
        .collect()
}

/// Whether one of the alternatives appears as (the start of) a string in a test body.
fn mentioned(alternatives: &[String], bodies: &[&str]) -> bool {
    alternatives.iter().any(|a| {
        bodies.iter().any(|b| {
            b.contains(&format!("\"{a}\""))
                || b.contains(&format!("\"{a} "))
                || b.contains(&format!("\"{a}="))
        })
    })
}

fn check(section: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let table = rows(section);
    assert!(table.len() > 10, "no table under ## {section}");
    for (line, cells) in table {
        let [name, state, tests] = &cells[..] else {
            problems.push(format!("line {line}: not three cells: {cells:?}"));
            continue;
        };
        let named: Vec<&str> = code_spans(tests)
            .into_iter()
            .filter(|t| t.contains("::"))
            .collect();
        if named.is_empty() {
            problems.push(format!("line {line}: {name} names no test"));
            continue;
        }
        let mut bodies = Vec::new();
        for t in named {
            match find_test(t) {
                Ok(b) => bodies.push(b),
                Err(e) => problems.push(format!("line {line}: {e}")),
            }
        }
        if !state.starts_with("refused") || bodies.is_empty() {
            continue;
        }
        // The verb or flag of every span appears as a string in a named test, and all the
        // words of at least one span do (`cache list` for `cache clean`, `cache list`).
        let spans = subjects(name);
        for words in &spans {
            if let Some(first) = words.first().filter(|w| !mentioned(w, &bodies)) {
                problems.push(format!(
                    "line {line}: {name} is refused, but no named test mentions \"{}\"",
                    first.join("/")
                ));
            }
        }
        if !spans
            .iter()
            .any(|words| words.iter().all(|w| mentioned(w, &bodies)))
        {
            problems.push(format!(
                "line {line}: {name} is refused, but no named test runs any of it whole"
            ));
        }
    }
    problems
}

#[test]
fn test_verbs_table_names_existing_tests() {
    let problems = check("Verbs");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn test_action_flags_table_names_existing_tests() {
    let problems = check("Action flags");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
