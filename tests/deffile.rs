//! Definition-file parsing through the public API: Apptainer's own example and parser-test
//! definition files, every section, multi-stage builds, build variables, comments, CRLF, and
//! every error with its exact one-line message.

use std::collections::BTreeMap;
use std::path::Path;

use sifr::build::deffile::{
    Agent, BuildArgs, DefError, Definition, ParseOptions, Problem, Script, Stage, parse_file,
    parse_str, render_definition, render_stage,
};

/// Apptainer's files, embedded so the test does not need the source tree at run time.
macro_rules! example {
    ($name:literal) => {
        (
            $name,
            include_str!(concat!("../src/build/deffile/testdata/apptainer/", $name)),
        )
    };
}

const EXAMPLES: &[(&str, &str)] = &[
    example!("almalinux-yum.def"),
    example!("arch.def"),
    example!("build-apptainer.def"),
    example!("buildkit.def"),
    example!("busybox.def"),
    example!("centos-dnf.def"),
    example!("instances.def"),
    example!("library.def"),
    example!("multistage.def"),
    example!("nested.def"),
    example!("opensuse.def"),
    example!("rocky.def"),
    example!("scratch-busybox.def"),
    example!("singularity-apps.def"),
    example!("sle.def"),
    example!("ubuntu.def"),
    example!("parser-apps.def"),
    example!("parser-multiplescripts.def"),
    example!("parser-quotedfiles.def"),
    example!("parser-shebang.def"),
    example!("parser-shebang-test.def"),
];

fn example(name: &str) -> &'static str {
    EXAMPLES
        .iter()
        .chain(OTHER_EXAMPLES)
        .find(|(n, _)| *n == name)
        .map(|(_, text)| *text)
        .unwrap_or_else(|| panic!("no example {name}"))
}

/// Apptainer parser test files that are not valid builds on their own.
const OTHER_EXAMPLES: &[(&str, &str)] = &[
    example!("parser-noheadercomments.def"),
    example!("parser-sectionargs.def"),
    example!("parser-multiplefiles.def"),
];

fn parse(text: &str) -> Definition {
    parse_str(text, Path::new("t.def"), &ParseOptions::default())
        .unwrap_or_else(|e| panic!("parse failed: {e}\n{text}"))
}

fn parse_with(text: &str, options: &ParseOptions) -> Result<Definition, DefError> {
    parse_str(text, Path::new("t.def"), options)
}

fn error(text: &str) -> String {
    match parse_with(text, &ParseOptions::default()) {
        Ok(_) => panic!("parsed but should not:\n{text}"),
        Err(e) => e.to_string(),
    }
}

fn only_stage(def: &Definition) -> &Stage {
    assert_eq!(def.stages.len(), 1);
    &def.stages[0]
}

fn body(script: &Option<Script>) -> &str {
    script.as_ref().map_or("<none>", |s| s.body.as_str())
}

fn args_of(script: &Option<Script>) -> &str {
    script.as_ref().map_or("<none>", |s| s.args.as_str())
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A `%files` block as (source stage, [(src, dst)]).
type Block<'a> = (Option<&'a str>, Vec<(&'a str, Option<&'a str>)>);

fn files(stage: &Stage) -> Vec<Block<'_>> {
    stage
        .sections
        .files
        .iter()
        .map(|b| {
            (
                b.from_stage.as_deref(),
                b.entries
                    .iter()
                    .map(|e| (e.src.as_str(), e.dst.as_deref()))
                    .collect(),
            )
        })
        .collect()
}

fn build_args(pairs: &[(&str, &str)]) -> ParseOptions {
    let mut args = BuildArgs::new();
    for (k, v) in pairs {
        args.insert(k, v).expect("valid name");
    }
    ParseOptions {
        build_args: args,
        update: false,
    }
}

#[test]
fn test_apptainer_examples_parse_and_keep_their_text() {
    for (name, text) in EXAMPLES {
        let def = parse_str(text, Path::new(name), &ParseOptions::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!def.stages.is_empty(), "{name}");
        assert!(def.stages.iter().all(|s| s.agent.is_some()), "{name}");
        // Without build variables the stored definition is the file itself.
        assert_eq!(def.text, *text, "{name}");
        assert!(def.unused_build_args.is_empty());
    }
}

#[test]
fn test_apptainer_parser_apps_matches_apptainer_json() {
    // Expectations from Apptainer's testdata_good/apps/apps.json.
    let def = parse(example("parser-apps.def"));
    let stage = only_stage(&def);
    assert_eq!(stage.agent, Some(Agent::Docker));
    let header: Vec<_> = stage
        .header
        .entries()
        .iter()
        .map(|e| (e.key.as_str(), e.value.as_str()))
        .collect();
    assert_eq!(
        header,
        [
            ("bootstrap", "docker"),
            ("from", "<registry>/<namespace>/<container>:<tag>@<digest>"),
            ("includecmd", "yes")
        ]
    );
    let s = &stage.sections;
    assert_eq!(body(&s.help), "Hello Help!\n# # double Hashtag comment\n");
    assert_eq!(
        body(&s.setup),
        "    touch ${APPTAINER_ROOTFS}/mock.txt\n    touch mock.txt\n\n# Some dummy comment 2\n\n"
    );
    assert_eq!(
        body(&s.environment),
        "    VADER=badguy\n    LUKE=goodguy\n    SOLO=someguy # comment 4\n    export VADER LUKE SOLO\n\n\n\n"
    );
    assert_eq!(
        body(&s.runscript),
        "    echo \"Mock!\"\n    echo \"Arguments received: $*\" # This is a very long comment\n    exec echo \"$@\"\n\n"
    );
    assert_eq!(
        body(&s.post),
        "    echo 'this is a command so long that the user had to' \\\n    'add a new line'\n    echo 'export GOPATH=$HOME/go' >> $APPTAINER_ENVIRONMENT\n\n"
    );
    assert_eq!(
        s.labels,
        labels(&[("Maintainer", "Eduardo"), ("Version", "v1.0")])
    );
    assert_eq!(
        files(stage),
        [(None, vec![("mock1.txt", None), ("mock2.txt", Some("/opt"))])]
    );
    assert_eq!(stage.app_order, ["foo", "bar"]);
    let foo = &stage.apps["foo"];
    assert_eq!(
        body(&foo.install),
        "\n    echo \"INSTALLING FOO\"\n    touch filefoo.exec\n\n"
    );
    assert_eq!(body(&foo.help), "    This is the help for foo!\n\n");
    assert_eq!(
        body(&foo.env),
        "    HELLOTHISIS=foo\n    export HELLOTHISIS\n\n"
    );
    assert_eq!(body(&foo.run), "    echo \"RUNNING FOO\"\n");
    assert_eq!(foo.labels, labels(&[("HELLOTHISIS", "foo")]));
    let bar = &stage.apps["bar"];
    assert_eq!(bar.labels, labels(&[("HELLOTHISIS", "bar")]));
    assert_eq!(bar.run, None);
}

#[test]
fn test_apptainer_repeated_sections_are_joined() {
    // testdata_good/multiplescripts: bodies joined in file order.
    let def = parse(example("parser-multiplescripts.def"));
    let s = &only_stage(&def).sections;
    assert_eq!(
        body(&s.setup),
        "    touch ${APPTAINER_ROOTFS}/mock.txt\n    touch mock.txt\n\n    touch ${APPTAINER_ROOTFS}/secondmock.txt\n    touch secondmock.txt\n\n"
    );
    assert_eq!(
        body(&s.runscript),
        "    echo \"Mock!\"\n\n\n    echo \"SecondMock!\"\n    echo \"Arguments received: $*\" # This is a very long comment\n    exec echo \"$@\"\n"
    );
    assert_eq!(s.setup.as_ref().map(|s| s.line), Some(5));
}

#[test]
fn test_apptainer_quoted_files() {
    let def = parse(example("parser-quotedfiles.def"));
    assert_eq!(
        files(only_stage(&def)),
        [(
            None,
            vec![
                ("file 1", None),
                ("file 1", Some("nospace1")),
                ("file 1", Some("with space 1")),
                ("file2", None),
                ("file2", Some("nospace2")),
                ("file2", Some("with space 2")),
                ("file3", Some("nospace3")),
                ("file3", Some("with space 3")),
            ]
        )]
    );
}

#[test]
fn test_apptainer_shebangs() {
    let def = parse(example("parser-shebang.def"));
    let run = only_stage(&def)
        .sections
        .runscript
        .clone()
        .expect("runscript");
    // The file has no final newline; the body still ends with one, as in Apptainer.
    assert_eq!(
        run.body,
        "#!/usr/bin/env python\nprint(\"Uh-oh, there's a snake in my container\")\n"
    );
    assert_eq!(
        run.script_file(),
        "#!/usr/bin/env python\n\nprint(\"Uh-oh, there's a snake in my container\")\n\n"
    );
    let def = parse(example("parser-shebang-test.def"));
    let test = only_stage(&def).sections.test.clone().expect("test");
    assert_eq!(test.body, "#!/usr/local/csh\necho $0\n");
    assert_eq!(test.shebang().0, "#!/usr/local/csh");
}

#[test]
fn test_apptainer_section_args_and_unknown_stage() {
    let text = example("parser-sectionargs.def");
    // Apptainer's parser accepts `%files from something` and its build then fails: here the
    // parse fails.
    assert_eq!(
        error(text),
        "t.def:4: `%files from something`: no earlier stage is named `something`; name a stage with `Stage: NAME` in its header"
    );
    let text = text.replace("%files from something\n", "%files\n");
    let text = text.replace("%files from somethingelse\n", "%files\n");
    let def = parse(&text);
    let stage = only_stage(&def);
    let post = stage.sections.post.clone().expect("post");
    assert_eq!(post.args, "-c /bin/bash extra stuff here");
    assert_eq!(
        post.shell_command("/.post.script"),
        [
            "/bin/sh",
            "-ex",
            "-c",
            "/bin/bash extra stuff here /.post.script"
        ]
    );
    assert_eq!(
        files(stage),
        [(
            None,
            vec![
                ("notafile", Some("notafile")),
                ("something", Some("different"))
            ]
        )]
    );
}

#[test]
fn test_apptainer_multiple_files_blocks_merge() {
    let text = example("parser-multiplefiles.def");
    assert!(error(text).contains("no earlier stage is named `somewhere`"));
    let text = format!("Bootstrap: scratch\nStage: somewhere\n\n{text}");
    let def = parse(&text);
    assert_eq!(def.stages.len(), 2);
    assert_eq!(
        files(&def.stages[1]),
        [
            (
                None,
                vec![
                    ("file2", Some("onefile2")),
                    ("file1", Some("onefile1")),
                    ("file1", Some("twofile1")),
                    ("file2", Some("twofile2"))
                ]
            ),
            (
                Some("somewhere"),
                vec![
                    ("file1", Some("file1copy")),
                    ("file2", Some("file2copy")),
                    ("file1", Some("file1copy2")),
                    ("file2", Some("file2copy2"))
                ]
            )
        ]
    );
}

#[test]
fn test_apptainer_headerless_needs_update() {
    let text = example("parser-noheadercomments.def");
    assert_eq!(
        error(text),
        "t.def:2: no `Bootstrap:` header; start the definition with one, e.g. `Bootstrap: docker` (or use --update to run the sections over an existing sandbox)"
    );
    let options = ParseOptions {
        update: true,
        ..ParseOptions::default()
    };
    let def = parse_with(text, &options).expect("parses with --update");
    let stage = only_stage(&def);
    assert_eq!(stage.agent, None);
    assert!(stage.header.is_empty());
    assert_eq!(stage.line, 2);
    assert_eq!(stage.sections.labels.len(), 2);
}

#[test]
fn test_apptainer_multistage_example() {
    let text = example("multistage.def");
    let def = parse(text);
    assert_eq!(def.stages.len(), 2);
    let (one, two) = (&def.stages[0], &def.stages[1]);
    assert_eq!(one.name.as_deref(), Some("one"));
    assert_eq!(one.agent, Some(Agent::Docker));
    assert_eq!(one.line, 5);
    assert_eq!(two.name.as_deref(), Some("two"));
    assert_eq!(two.agent, Some(Agent::Oras));
    assert_eq!(two.line, 37);
    assert!(body(&one.sections.post).contains("cat << EOF > hello.go\npackage main\n"));
    // As in Apptainer, comments between the stages end the first stage's last section.
    assert!(
        body(&one.sections.post)
            .ends_with("# Install go application into image without golang installed\n")
    );
    assert_eq!(
        files(two),
        [(Some("one"), vec![("/root/hello", Some("/bin/hello"))])]
    );
    assert_eq!(body(&two.sections.runscript), "        hello\n\n");
    assert_eq!(def.stage("one").map(|s| s.line), Some(5));
    assert_eq!(
        def.final_stage().and_then(|s| s.name.as_deref()),
        Some("two")
    );
    assert!(two.raw.starts_with("Bootstrap: oras\n"));
    assert_eq!(
        format!("{}{}", one.raw, two.raw),
        text[text.find("Bootstrap").unwrap_or(0)..]
    );
}

#[test]
fn test_apptainer_apps_example_and_other_headers() {
    let def = parse(example("busybox.def"));
    let stage = only_stage(&def);
    assert_eq!(stage.agent, Some(Agent::Busybox));
    assert_eq!(stage.app_order, ["testapp"]);
    let app = &stage.apps["testapp"];
    assert_eq!(body(&app.run), "    $TESTAPP.sh\n");
    assert!(body(&app.install).contains("chmod 0755"));
    assert!(app.env.is_some());

    let def = parse(example("rocky.def"));
    let stage = only_stage(&def);
    assert_eq!(
        stage.header.get("MirrorURL"),
        Some("http://dl.rockylinux.org/pub/rocky/%{OSVERSION}/BaseOS/x86_64/os/")
    );
    assert_eq!(stage.header.entries()[0].written, "bootstrap");

    let def = parse(example("build-apptainer.def"));
    let stage = only_stage(&def);
    assert_eq!(stage.header.entries()[0].written, "BootStrap");
    assert_eq!(
        stage.sections.labels,
        labels(&[("Author", "chrismmaggio"), ("Version", "1.0.3")])
    );
    assert!(body(&stage.sections.help).contains("\n    \t./build-apptainer.sif 1.4.0\n"));

    let def = parse(example("arch.def"));
    assert_eq!(only_stage(&def).line, 17);
    assert_eq!(only_stage(&def).agent, Some(Agent::Arch));
}

const EVERY_SECTION: &str = "\
Bootstrap: docker
From: alpine:3.20
Stage: final

%arguments
    greeting=hello

%pre
    echo pre
%setup -c /bin/bash
    touch \"$APPTAINER_ROOTFS/f\"
%files
    /etc/hosts /opt/hosts
    'my file'
%post -e
    apk add bash
%environment
    export A=1
%runscript
    #!/bin/bash
    echo \"$@\"
%startscript -x
    exec sleep inf
%test
    test -f /opt/hosts
%labels
    Author alice
    Version 1.0
%help
    Say {{ greeting }}.
%appinstall tool
    make install
%appfiles tool
    tool.conf etc/tool.conf
%appenv tool
    TOOL=1
%apprun tool
    exec tool \"$@\"
%applabels tool
    Tool yes
%apptest tool
    tool --version
%apphelp tool
    The tool.
%appstart tool
    exec tool --serve
";

#[test]
fn test_every_section_kind() {
    let def = parse(EVERY_SECTION);
    let stage = only_stage(&def);
    let s = &stage.sections;
    assert_eq!(body(&s.arguments), "    greeting=hello\n\n");
    assert_eq!(body(&s.pre), "    echo pre\n");
    assert_eq!(args_of(&s.setup), "-c /bin/bash");
    assert_eq!(
        s.setup.as_ref().map(|x| x.shell_command("/tmp/setup")),
        Some(vec![
            "/bin/sh".into(),
            "-ex".into(),
            "-c".into(),
            "/bin/bash /tmp/setup".into()
        ])
    );
    assert_eq!(
        files(stage),
        [(
            None,
            vec![("/etc/hosts", Some("/opt/hosts")), ("my file", None)]
        )]
    );
    assert_eq!(s.files[0].entries[1].line, 14);
    assert_eq!(args_of(&s.post), "-e");
    assert_eq!(body(&s.environment), "    export A=1\n");
    let run = s.runscript.clone().expect("runscript");
    assert_eq!(run.script_file(), "#!/bin/bash\n\n    echo \"$@\"\n\n");
    let start = s.startscript.clone().expect("startscript");
    assert_eq!(start.shebang().0, "#!/bin/sh -x");
    assert_eq!(body(&s.test), "    test -f /opt/hosts\n");
    assert_eq!(s.labels, labels(&[("Author", "alice"), ("Version", "1.0")]));
    // %help was templated from %arguments.
    assert_eq!(body(&s.help), "    Say hello.\n");
    let tool = &stage.apps["tool"];
    assert_eq!(body(&tool.install), "    make install\n");
    assert_eq!(tool.files.len(), 1);
    assert_eq!(tool.files[0].dst.as_deref(), Some("etc/tool.conf"));
    assert_eq!(body(&tool.env), "    TOOL=1\n");
    assert_eq!(body(&tool.run), "    exec tool \"$@\"\n");
    assert_eq!(tool.labels, labels(&[("Tool", "yes")]));
    assert_eq!(body(&tool.test), "    tool --version\n");
    assert_eq!(body(&tool.help), "    The tool.\n");
    assert_eq!(body(&tool.start), "    exec tool --serve\n");
    assert_eq!(s.post.as_ref().map(|p| p.line), Some(15));
    assert!(def.text.contains("    Say hello.\n"));
}

#[test]
fn test_section_keywords_any_case_tabs_and_indent() {
    let def = parse(
        "Bootstrap: scratch\n%POST\t-c /bin/bash\n  echo\n  %RunScript\n  run\n%%labels\nA\tb\n",
    );
    let s = &only_stage(&def).sections;
    assert_eq!(args_of(&s.post), "-c /bin/bash");
    assert_eq!(body(&s.post), "  echo\n");
    assert_eq!(body(&s.runscript), "  run\n");
    assert_eq!(s.labels, labels(&[("A", "b")]));
}

#[test]
fn test_crlf_reads_like_lf() {
    let lf = parse(EVERY_SECTION);
    let crlf_text = EVERY_SECTION.replace('\n', "\r\n");
    let crlf = parse(&crlf_text);
    assert_eq!(lf.stages.len(), crlf.stages.len());
    for (a, b) in lf.stages.iter().zip(&crlf.stages) {
        assert_eq!(
            (&a.header, &a.sections, &a.apps),
            (&b.header, &b.sections, &b.apps)
        );
        assert_eq!(a.raw.replace('\r', ""), b.raw.replace('\r', ""));
    }
    // The stored text keeps the file's line endings.
    assert_eq!(crlf.text, crlf_text.replace("{{ greeting }}", "hello"));
}

#[test]
fn test_comments_everywhere() {
    let text = "\
# leading comment
Bootstrap: docker # the agent
# between header lines
From: alpine  # the image

# before the first section
%files
    # a comment line
    a b # trailing comment
%labels
    # comment
    K v # not a comment in a label value
%post
    # kept in the script
    echo hi
";
    let def = parse(text);
    let stage = only_stage(&def);
    assert_eq!(stage.header.get("bootstrap"), Some("docker"));
    assert_eq!(stage.header.get("from"), Some("alpine"));
    assert_eq!(files(stage), [(None, vec![("a", Some("b"))])]);
    assert_eq!(
        stage.sections.labels,
        labels(&[("K", "v # not a comment in a label value")])
    );
    assert_eq!(
        body(&stage.sections.post),
        "    # kept in the script\n    echo hi\n"
    );
    assert_eq!(def.text, text);
}

#[test]
fn test_multistage_rules() {
    let ok = "Bootstrap: docker\nFrom: golang\nStage: build\n%post\n  go build\n\
              Bootstrap: docker\nFrom: alpine\nStage: run\n%files FROM build\n  /go/bin/app /usr/bin/app\n\
              bootstrap: scratch\n%files from run\n  /usr/bin/app\n%files from build\n  /x\n";
    let def = parse(ok);
    assert_eq!(def.stages.len(), 3);
    assert_eq!(
        files(&def.stages[1]),
        [(Some("build"), vec![("/go/bin/app", Some("/usr/bin/app"))])]
    );
    assert_eq!(def.stages[2].name, None);
    assert_eq!(def.stages[2].line, 11);
    assert_eq!(
        files(&def.stages[2]),
        [
            (Some("run"), vec![("/usr/bin/app", None)]),
            (Some("build"), vec![("/x", None)])
        ]
    );

    assert_eq!(
        error("Bootstrap: docker\nStage: a\nBootstrap: docker\nStage: a\n"),
        "t.def:4: stage name `a` is already used by the stage on line 2; stage names must be unique"
    );
    assert_eq!(
        error("Bootstrap: docker\nStage: a\n%files from b\n x\nBootstrap: docker\nStage: b\n"),
        "t.def:3: `%files from b`: stage `b` is not before this one; files can only be copied from an earlier stage"
    );
    assert_eq!(
        error("Bootstrap: docker\nStage: a\n%files from a\n x\n"),
        "t.def:3: `%files from a`: stage `a` is not before this one; files can only be copied from an earlier stage"
    );
    assert_eq!(
        error("Bootstrap: docker\nStage: a\nBootstrap: docker\n%files from c\n x\n"),
        "t.def:4: `%files from c`: no earlier stage is named `c` (earlier stages: a)"
    );
    assert_eq!(
        error("# c\nFrom: alpine\n%post\nBootstrap: docker\n"),
        "t.def:2: header key `From` comes before the first `Bootstrap:` line, so it belongs to no stage; move it below `Bootstrap:`"
    );
    assert_eq!(
        error("\n%post\n  x\nBootstrap: docker\n"),
        "t.def:2: section `%post` comes before the first `Bootstrap:` line, so it belongs to no stage; move it below `Bootstrap:`"
    );
    // An indented Bootstrap does not start a stage, but does give the first one its agent.
    let def =
        parse(" Bootstrap: docker\nFrom: a\nStage: x\nBootstrap: scratch\n%files from x\n /f\n");
    assert_eq!(def.stages.len(), 2);
    // --update allows a missing header only for a single stage.
    let options = ParseOptions {
        update: true,
        ..ParseOptions::default()
    };
    assert!(parse_with("%post\n x\n", &options).is_ok());
    let err = parse_with("%post\n x\nBootstrap: docker\n", &options).expect_err("two stages");
    assert!(
        err.to_string()
            .contains("comes before the first `Bootstrap:` line")
    );
}

#[test]
fn test_build_variables() {
    let text = "\
Bootstrap: docker
From: {{ image }}:{{tag}}
Stage: {{ stage }}

%arguments
    tag=3.19
    image=alpine
    stage=build
    # unused={{ nothing }}

%post
    echo {{ greeting }} # {{ not_filled }}
    echo '{{.NotAVariable}}'

Bootstrap: scratch
%arguments
    stage=other
%files from {{ stage }}
    /a
";
    let options = build_args(&[
        ("greeting", "hi there"),
        ("tag", "3.20"),
        ("extra", "1"),
        ("stage", "build"),
    ]);
    let def = parse_with(text, &options).expect("parses");
    let first = &def.stages[0];
    assert_eq!(first.header.get("from"), Some("alpine:3.20"));
    assert_eq!(first.name.as_deref(), Some("build"));
    assert_eq!(
        body(&first.sections.post),
        "    echo hi there # {{ not_filled }}\n    echo '{{.NotAVariable}}'\n\n"
    );
    // The command line wins over the second stage's default.
    assert_eq!(files(&def.stages[1]), [(Some("build"), vec![("/a", None)])]);
    assert_eq!(def.unused_build_args, ["extra"]);
    assert_eq!(
        def.check_unused_build_args()
            .expect_err("unused")
            .to_string(),
        "build args not used by the definition file: extra; remove them or use --warn-unused-build-args"
    );
    assert!(def.text.contains("From: alpine:3.20\n"));
    assert!(def.text.contains("# unused={{ nothing }}"));
    assert!(def.stages[0].raw.contains("echo hi there"));

    // Defaults are per stage: the second stage has no `image`.
    let err = parse_with(
        "Bootstrap: docker\n%arguments\n image=a\nBootstrap: docker\nFrom: {{ image }}\n",
        &ParseOptions::default(),
    )
    .expect_err("undefined");
    assert_eq!(
        err.to_string(),
        "t.def:5: build variable `image` is not defined: pass --build-arg image=VALUE or add `image=VALUE` to this stage's %arguments section"
    );
    assert!(matches!(err.problem(), Some(Problem::UndefinedVariable { name }) if name == "image"));

    // A value with a newline makes more lines, numbered as the original one.
    let options = build_args(&[("cmds", "echo a\necho b")]);
    let def = parse_with(
        "Bootstrap: docker\n%post\n    {{ cmds }}\n%test\n  t\n",
        &options,
    )
    .expect("ok");
    let stage = only_stage(&def);
    assert_eq!(body(&stage.sections.post), "    echo a\necho b\n");
    assert_eq!(stage.sections.test.as_ref().map(|t| t.line), Some(4));
}

#[test]
fn test_build_args_from_cli_and_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("args.txt");
    std::fs::write(&file, "tag=1\nimage=debian\n").expect("write");
    let build_args = BuildArgs::from_cli(&["tag=2".into()], Some(&file)).expect("ok");
    let options = ParseOptions {
        build_args,
        update: false,
    };
    let def = parse_with("Bootstrap: docker\nFrom: {{ image }}:{{ tag }}\n", &options).expect("ok");
    assert_eq!(only_stage(&def).header.get("from"), Some("debian:2"));
}

#[test]
fn test_parse_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("x.def");
    std::fs::write(&path, EVERY_SECTION).expect("write");
    let def = parse_file(&path, &ParseOptions::default()).expect("ok");
    assert_eq!(def.path, path);
    assert_eq!(def.stages[0].name.as_deref(), Some("final"));

    std::fs::write(&path, "Bootstrap: docker\n%bogus\n").expect("write");
    let err = parse_file(&path, &ParseOptions::default()).expect_err("bad");
    assert_eq!(
        err.to_string(),
        format!(
            "{}:2: unknown section `%bogus`; a line whose first word starts with `%` begins a section",
            path.display()
        )
    );
    let missing = dir.path().join("missing.def");
    let err = parse_file(&missing, &ParseOptions::default()).expect_err("missing");
    assert_eq!(
        err.to_string(),
        format!(
            "cannot read {}: No such file or directory (os error 2)",
            missing.display()
        )
    );
    let big = dir.path().join("big.def");
    std::fs::write(&big, vec![b'#'; 8 * 1024 * 1024 + 1]).expect("write");
    let err = parse_file(&big, &ParseOptions::default()).expect_err("big");
    assert_eq!(
        err.to_string(),
        format!(
            "{} is larger than 8388608 bytes; is it the right file?",
            big.display()
        )
    );
}

/// Every problem a definition file can have, with its exact message.
#[test]
fn test_error_messages() {
    let cases: &[(&str, &str)] = &[
        (
            "",
            "t.def: the definition file has no header and no sections; start it with a header such as `Bootstrap: docker` and `From: alpine`",
        ),
        (
            "# only a comment\n\n",
            "t.def: the definition file has no header and no sections; start it with a header such as `Bootstrap: docker` and `From: alpine`",
        ),
        (
            "From: alpine\n",
            "t.def:1: no `Bootstrap:` header; start the definition with one, e.g. `Bootstrap: docker` (or use --update to run the sections over an existing sandbox)",
        ),
        (
            "Bootstrap: docker\nFrom alpine\n",
            "t.def:2: `From alpine` is not a header line; header lines are `Key: value` and sections start with `%`",
        ),
        (
            "Bootstrap: docker\nFrm: alpine\n",
            "t.def:2: unknown header key `Frm` (did you mean `From`?)",
        ),
        (
            "Bootstrap: docker\nFrom: a\nFROM: b\n",
            "t.def:3: header key `FROM` is already set on line 2; give it once (Apptainer would silently keep only the last value)",
        ),
        (
            "Bootstrap:   # nothing\n",
            "t.def:1: `Bootstrap:` has no value; name a bootstrap agent such as docker, localimage or scratch",
        ),
        (
            "Bootstrap: scracth\n",
            "t.def:1: unknown bootstrap agent `scracth` (did you mean `scratch`?); known agents: library, oras, shub, docker, docker-archive, docker-daemon, oci, oci-archive, busybox, debootstrap, arch, localimage, yum, dnf, zypper, scratch, buildkit",
        ),
        (
            "Bootstrap: docker\nStage: a b\n",
            "t.def:2: stage name `a b` must be one word (it is used as `%files from NAME`)",
        ),
        (
            "Bootstrap: docker\n%enviroment\n",
            "t.def:2: unknown section `%enviroment` (did you mean `%environment`?); a line whose first word starts with `%` begins a section",
        ),
        (
            "Bootstrap: docker\n%post\n    %{__python} setup.py\n",
            "t.def:3: unknown section `%{__python}`; a line whose first word starts with `%` begins a section",
        ),
        (
            "Bootstrap: docker\n%apprun\n",
            "t.def:2: `%apprun` needs an app name: `%apprun NAME`",
        ),
        (
            "Bootstrap: docker\n%apprun ../x\n",
            "t.def:2: app name `../x` may hold only letters, digits, `.`, `_` and `-`, and must start with a letter or digit",
        ),
        (
            "Bootstrap: docker\n%apprun foo bar\n",
            "t.def:2: `%apprun foo` takes no arguments, got `bar`",
        ),
        (
            "Bootstrap: docker\n%labels x\n",
            "t.def:2: `%labels` takes no arguments, got `x`",
        ),
        (
            "Bootstrap: docker\n%environment -x\n",
            "t.def:2: `%environment` takes no arguments, got `-x`",
        ),
        (
            "Bootstrap: docker\n%post -c /bin/bash\n a\n%post -c /bin/zsh\n b\n",
            "t.def:4: `%post` is repeated from line 2 with different arguments (`-c /bin/zsh` here, `-c /bin/bash` there); the bodies are joined and run with one set of arguments, so give the same arguments or none",
        ),
        (
            "Bootstrap: docker\n%post -c\n",
            "t.def:2: `%post -c` needs a shell after `-c`, e.g. `%post -c /bin/bash`",
        ),
        (
            "Bootstrap: docker\n%setup -e -c # shell?\n",
            "t.def:2: `%setup -c` needs a shell after `-c`, e.g. `%setup -c /bin/bash`",
        ),
        (
            "Bootstrap: docker\n%files to x\n",
            "t.def:2: `%files to x`: expected `%files` (copy from the host) or `%files from STAGE`",
        ),
        (
            "Bootstrap: docker\n%files from\n",
            "t.def:2: `%files from`: expected `%files` (copy from the host) or `%files from STAGE`",
        ),
        (
            "Bootstrap: docker\n%files from x\n a\n",
            "t.def:2: `%files from x`: no earlier stage is named `x`; name a stage with `Stage: NAME` in its header",
        ),
        (
            "Bootstrap: docker\n%files\n  a b c\n",
            "t.def:3: `a b c` in %files: more than a source and a destination; quote paths that contain spaces",
        ),
        (
            "Bootstrap: docker\n%appfiles x\n  \"a b\n",
            "t.def:3: `\"a b` in %appfiles: a quote is not closed",
        ),
        (
            "Bootstrap: docker\n%labels\n  Author=alice\n",
            "t.def:3: `Author=alice` in %labels looks like KEY=VALUE; labels are written `KEY VALUE`",
        ),
        (
            "Bootstrap: docker\n%applabels a\n  K=v\n",
            "t.def:3: `K=v` in %applabels looks like KEY=VALUE; labels are written `KEY VALUE`",
        ),
        (
            "Bootstrap: docker\n%arguments\n  version 1\n",
            "t.def:3: `version 1` in %arguments is not `NAME=VALUE`",
        ),
        (
            "Bootstrap: docker\n%arguments\n  my-var=1\n",
            "t.def:3: `my-var` cannot be a build variable: use only letters, digits and _",
        ),
        (
            "Bootstrap: docker\nFrom: {{ image }}\n",
            "t.def:2: build variable `image` is not defined: pass --build-arg image=VALUE or add `image=VALUE` to this stage's %arguments section",
        ),
        (
            "Bootstrap: docker\n%post\n  echo {{ name }\n",
            "t.def:3: unterminated `{{ name` in `echo {{ name }`: close it with `}}`",
        ),
        (
            "Bootstrap: docker\nStage: a\nBootstrap: docker\nStage: a\n",
            "t.def:4: stage name `a` is already used by the stage on line 2; stage names must be unique",
        ),
    ];
    for (text, expected) in cases {
        let got = error(text);
        assert_eq!(&got, expected, "for {text:?}");
        assert!(!got.contains('\n'));
    }
}

#[test]
fn test_render_round_trip() {
    let mut texts: Vec<&str> = EXAMPLES.iter().map(|(_, t)| *t).collect();
    texts.push(EVERY_SECTION);
    texts.push(
        "Bootstrap: yum\nSetopt: a\\n\\\nb\n%files\n  \"a b\" '#c'\n%labels\n  K  spaced value\n",
    );
    for text in texts {
        let def = parse(text);
        let rendered = render_definition(&def);
        let again = parse(&rendered);
        assert_eq!(def.stages.len(), again.stages.len());
        for (a, b) in def.stages.iter().zip(&again.stages) {
            assert_eq!(a.header.entries().len(), b.header.entries().len());
            for (x, y) in a.header.entries().iter().zip(b.header.entries()) {
                assert_eq!(
                    (&x.key, &x.written, &x.value),
                    (&y.key, &y.written, &y.value)
                );
            }
            assert_eq!(a.agent, b.agent);
            assert_eq!(a.name, b.name);
            assert_eq!(a.app_order, b.app_order);
            assert_eq!(strip_lines(a), strip_lines(b), "{rendered}");
        }
    }
    let def = parse("Bootstrap: docker\nFrom: alpine\n%post -e\n  echo\n");
    assert_eq!(
        render_stage(&def.stages[0]),
        "Bootstrap: docker\nFrom: alpine\n\n%post -e\n  echo\n"
    );
}

/// Parsing the rendered definition gives the same stages again.
fn assert_round_trip(def: &Definition, options: &ParseOptions) {
    let rendered = render_definition(def);
    let again = parse_with(&rendered, options).unwrap_or_else(|e| {
        panic!(
            "rendered text does not parse: {e}\n{rendered:?}\nfrom {:?}",
            def.text
        )
    });
    assert_eq!(def.stages.len(), again.stages.len(), "{rendered}");
    for (a, b) in def.stages.iter().zip(&again.stages) {
        let entries = |s: &Stage| {
            let mut e: Vec<_> = s
                .header
                .entries()
                .iter()
                .map(|e| (e.key.clone(), e.written.clone(), e.value.clone()))
                .collect();
            e.sort();
            e
        };
        assert_eq!(entries(a), entries(b), "{rendered}");
        assert_eq!(a.agent, b.agent);
        assert_eq!(a.name, b.name);
        assert_eq!(a.app_order, b.app_order, "{rendered}");
        assert_eq!(strip_lines(a), strip_lines(b), "{rendered}");
    }
}

/// A stage's sections and apps with line numbers zeroed, for comparing re-parsed text.
fn strip_lines(stage: &Stage) -> String {
    let mut s = stage.clone();
    let zero = |x: &mut Option<Script>| {
        if let Some(x) = x {
            x.line = 0;
        }
    };
    let sec = &mut s.sections;
    for x in [
        &mut sec.arguments,
        &mut sec.pre,
        &mut sec.setup,
        &mut sec.post,
        &mut sec.environment,
        &mut sec.runscript,
        &mut sec.startscript,
        &mut sec.test,
        &mut sec.help,
    ] {
        zero(x);
    }
    for block in &mut sec.files {
        block.line = 0;
        block.entries.iter_mut().for_each(|e| e.line = 0);
    }
    for app in s.apps.values_mut() {
        for x in [
            &mut app.install,
            &mut app.env,
            &mut app.run,
            &mut app.test,
            &mut app.help,
            &mut app.start,
        ] {
            zero(x);
        }
        app.files.iter_mut().for_each(|e| e.line = 0);
    }
    format!("{:?}{:?}", s.sections, s.apps)
}

/// Mangled definition files never panic: every one parses or gives one error line.
#[test]
fn test_mangled_input_never_panics() {
    const PIECES: &[&str] = &[
        "%",
        "%post",
        "%files from ",
        "%appinstall ",
        "Bootstrap: ",
        "bootstrap:",
        "{{",
        "}}",
        "{{ x",
        " x }}",
        "#",
        "#!",
        ":",
        "\"",
        "'",
        "\\",
        "\n",
        "\r\n",
        "\t",
        " ",
        "=",
        "é",
        "-c",
        "from",
        "\u{feff}",
    ];
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let options = build_args(&[("x", "v\n%post"), ("y", "")]);
    let mut outcomes = [0usize; 2];
    for round in 0..3000 {
        let (_, base) = EXAMPLES[round % EXAMPLES.len()];
        let mut text: Vec<char> = base.chars().collect();
        for _ in 0..(1 + next() % 6) {
            let at = (next() % (text.len() as u64 + 1)) as usize;
            match next() % 3 {
                0 => {
                    let piece = PIECES[(next() % PIECES.len() as u64) as usize];
                    for (i, c) in piece.chars().enumerate() {
                        text.insert(at + i, c);
                    }
                }
                1 if at < text.len() => {
                    text.remove(at);
                }
                _ => text.truncate(at),
            }
        }
        let text: String = text.into_iter().collect();
        match parse_with(&text, &options) {
            Ok(def) => {
                outcomes[0] += 1;
                if !text.contains("{{") {
                    assert_round_trip(&def, &options);
                }
            }
            Err(e) => {
                outcomes[1] += 1;
                assert!(!e.to_string().contains('\n'), "{e}");
            }
        }
    }
    // Both outcomes happen, so the test exercises errors and successes.
    assert!(outcomes[0] > 100 && outcomes[1] > 100, "{outcomes:?}");
}

#[test]
fn test_filling_cannot_exhaust_memory() {
    let options = build_args(&[("big", &"x".repeat(1024 * 1024))]);
    let line = "{{big}}".repeat(70);
    let err =
        parse_with(&format!("Bootstrap: docker\n%post\n{line}\n"), &options).expect_err("too big");
    assert_eq!(
        err.to_string(),
        "t.def: filling in the build variables made the definition larger than 67108864 bytes"
    );
}
