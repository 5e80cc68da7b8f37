//! Interoperability with the reference SIF implementation (`sif-oracle`, sylabs/sif
//! v2.8.3): on every fixture, and on images built by either tool, `list`, `header`, `info`
//! and `dump` of every object print the same bytes through sifr and the oracle.
//!
//! Documented exception: v2.8.3 predates the OCI data types and prints `Unknown` (and no
//! digest) for OCI.RootIndex/OCI.Blob objects; there the oracle's label is replaced by the
//! golden name and sifr's `Digest:` line is dropped before comparing (the exact output is
//! checked against the golden files in `sif_golden.rs`).

mod common;

use std::path::{Path, PathBuf};

use common::{oracle, run, sif_fixture, sifr, tempdir};
use sifr::image::sif::{DataType, SifImage};

fn ok_stdout(what: &str, out: std::process::Output) -> Vec<u8> {
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn ours(args: &[&str]) -> Vec<u8> {
    let mut full = vec!["sif"];
    full.extend_from_slice(args);
    ok_stdout(&format!("sifr {full:?}"), sifr(&full))
}

fn theirs(oracle: &Path, args: &[&str]) -> Vec<u8> {
    ok_stdout(&format!("sif-oracle {args:?}"), run(oracle, args))
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Applies the documented OCI exception to a pair of outputs.
fn normalise_oci(ours: Vec<u8>, theirs: Vec<u8>, label: &str) -> (String, String) {
    let ours = String::from_utf8_lossy(&ours)
        .lines()
        .filter(|l| !l.trim_start().starts_with("Digest:"))
        .map(|l| format!("{l}\n"))
        .collect::<String>();
    let theirs = String::from_utf8_lossy(&theirs).replace("Unknown", label);
    (ours, theirs)
}

fn assert_same(what: &str, path: &Path, ours: Vec<u8>, theirs: Vec<u8>) {
    assert!(
        ours == theirs,
        "{what} of {} differs from the oracle\n--- sifr\n{}\n--- oracle\n{}",
        path.display(),
        String::from_utf8_lossy(&ours),
        String::from_utf8_lossy(&theirs)
    );
}

/// Compares list, header, and info and dump of every object.
fn compare_all(oracle: &Path, path: &Path) {
    let img = SifImage::open(path).unwrap_or_else(|e| panic!("{e}"));
    let oci: Vec<&'static str> = img
        .objects()
        .filter(|d| matches!(d.data_type, DataType::OciBlob | DataType::OciRootIndex))
        .map(|d| d.data_type.label())
        .collect();
    let p = s(path);
    for verb in ["list", "header"] {
        let (a, b) = (ours(&[verb, p]), theirs(oracle, &[verb, p]));
        if let Some(label) = oci.first() {
            let (a, b) = normalise_oci(a, b, label);
            assert_eq!(a, b, "{verb} of {p} differs from the oracle");
        } else {
            assert_same(verb, path, a, b);
        }
    }
    for d in img.objects() {
        let id = d.id.to_string();
        let (a, b) = (ours(&["info", &id, p]), theirs(oracle, &["info", &id, p]));
        if matches!(d.data_type, DataType::OciBlob | DataType::OciRootIndex) {
            let (a, b) = normalise_oci(a, b, d.data_type.label());
            assert_eq!(a, b, "info {id} of {p} differs from the oracle");
        } else {
            assert_same(&format!("info {id}"), path, a, b);
        }
        let (a, b) = (ours(&["dump", &id, p]), theirs(oracle, &["dump", &id, p]));
        assert_eq!(a.len() as i64, d.size, "dump {id} of {p}: size");
        assert_same(&format!("dump {id}"), path, a, b);
    }
}

fn fixtures() -> Vec<PathBuf> {
    let mut v = Vec::new();
    for dir in [sif_fixture(""), sif_fixture("apptainer")] {
        for e in std::fs::read_dir(&dir).expect("read fixtures") {
            let p = e.expect("entry").path();
            if p.extension().is_some_and(|x| x == "sif") {
                v.push(p);
            }
        }
    }
    v.sort();
    assert!(
        v.len() >= 28,
        "expected every SIF fixture, found {}",
        v.len()
    );
    v
}

#[test]
fn test_every_fixture_matches_oracle() {
    let Some(oracle) = oracle() else { return };
    for f in fixtures() {
        compare_all(&oracle, &f);
    }
}

/// Object files for the build sequence.
struct Inputs {
    generic: PathBuf,
    json: PathBuf,
    squashfs: PathBuf,
    ext3: PathBuf,
    sig: PathBuf,
    generic2: PathBuf,
    deffile: PathBuf,
    sbom: PathBuf,
    crypt: PathBuf,
}

fn inputs(dir: &Path) -> Inputs {
    let w = |name: &str, data: &[u8]| {
        let p = dir.join(name);
        std::fs::write(&p, data).expect("write input");
        p
    };
    Inputs {
        generic: w("generic.bin", b"\x00\x01generic\xff"),
        json: w("data.json", b"{\"a\": 1}\n"),
        squashfs: sif_fixture("input/root.squashfs"),
        ext3: sif_fixture("input/root.ext3"),
        sig: w(
            "sig.asc",
            b"-----BEGIN PGP SIGNED MESSAGE-----\nnot really\n",
        ),
        generic2: w("generic2.bin", &[7u8; 1000]),
        deffile: w("recipe.def", b"Bootstrap: scratch\n"),
        sbom: std::fs::read(sif_fixture("input/sbom.cdx.json"))
            .map(|b| w("sbom.json", &b))
            .expect("sbom input"),
        crypt: w("key.bin", &[0xfe, 0xfe, 0xf0, 0xf0]),
    }
}

/// The steps: `new`, eight `add`s (no group, groups 1 and 2, links to an object and to a
/// group, a non-default alignment, squashfs and ext3 partitions), `del 2`, an `add` that
/// reuses slot 2. `setprim` is separate.
fn build_steps(img: &str, i: &Inputs) -> Vec<Vec<String>> {
    let add = |obj: &Path, flags: &[&str]| {
        let mut v: Vec<String> = vec!["add".into()];
        v.extend(flags.iter().map(|f| f.to_string()));
        v.push(img.into());
        v.push(s(obj).into());
        v
    };
    vec![
        vec!["new".into(), img.into()],
        add(
            &i.generic,
            &["--datatype", "7", "--filename", "generic.bin"],
        ),
        add(
            &i.json,
            &[
                "--datatype",
                "6",
                "--groupid",
                "1",
                "--filename",
                "data.json",
            ],
        ),
        add(
            &i.squashfs,
            &[
                "--datatype",
                "4",
                "--parttype",
                "1",
                "--partfs",
                "1",
                "--partarch",
                "2",
                "--groupid",
                "1",
            ],
        ),
        add(
            &i.ext3,
            &[
                "--datatype",
                "4",
                "--parttype",
                "3",
                "--partfs",
                "2",
                "--partarch",
                "2",
                "--groupid",
                "2",
            ],
        ),
        add(
            &i.sig,
            &[
                "--datatype",
                "5",
                "--signhash",
                "1",
                "--signentity",
                "12045C8C0B1004D058DE4BEDA20C27EE7FF7BA84",
                "--link",
                "4026531841",
            ],
        ),
        add(
            &i.generic2,
            &[
                "--datatype",
                "7",
                "--groupid",
                "2",
                "--link",
                "3",
                "--alignment",
                "512",
            ],
        ),
        add(&i.deffile, &["--datatype", "1", "--groupid", "1"]),
        add(
            &i.crypt,
            &["--datatype", "8", "--groupid", "1", "--link", "3"],
        ),
        vec!["del".into(), "2".into(), img.into()],
        add(
            &i.sbom,
            &[
                "--datatype",
                "9",
                "--sbomformat",
                "spdx-json",
                "--groupid",
                "1",
            ],
        ),
    ]
}

fn run_steps(tool: &dyn Fn(&[&str]) -> Vec<u8>, steps: &[Vec<String>]) {
    for step in steps {
        let args: Vec<&str> = step.iter().map(String::as_str).collect();
        tool(&args);
    }
}

/// The dumps must also equal the input files.
fn check_dumps_match_inputs(path: &Path, i: &Inputs) {
    let p = s(path);
    for (id, file) in [
        (1, &i.generic),
        (2, &i.sbom),
        (3, &i.squashfs),
        (4, &i.ext3),
        (5, &i.sig),
        (6, &i.generic2),
        (7, &i.deffile),
        (8, &i.crypt),
    ] {
        let want = std::fs::read(file).expect("read input");
        assert_eq!(ours(&["dump", &id.to_string(), p]), want, "dump {id}");
    }
}

#[test]
fn test_image_built_by_sifr_reads_the_same_in_oracle() {
    let Some(oracle) = oracle() else { return };
    let dir = tempdir();
    let i = inputs(dir.path());
    let img = dir.path().join("ours.sif");
    run_steps(&|a| ours(a), &build_steps(s(&img), &i));
    let list = String::from_utf8(ours(&["list", s(&img)])).expect("utf8");
    assert!(
        list.contains("\n2    |1       |NONE    "),
        "slot 2 reused:\n{list}"
    );
    compare_all(&oracle, &img);
    check_dumps_match_inputs(&img, &i);
    ours(&["setprim", "3", s(&img)]);
    let list = String::from_utf8(ours(&["list", s(&img)])).expect("utf8");
    assert!(list.contains("|FS (Squashfs/*System/amd64)"), "{list}");
    compare_all(&oracle, &img);
}

#[test]
fn test_image_built_by_oracle_reads_the_same_in_sifr() {
    let Some(oracle) = oracle() else { return };
    let dir = tempdir();
    let i = inputs(dir.path());
    let img = dir.path().join("theirs.sif");
    run_steps(&|a| theirs(&oracle, a), &build_steps(s(&img), &i));
    compare_all(&oracle, &img);
    check_dumps_match_inputs(&img, &i);
    theirs(&oracle, &["setprim", "3", s(&img)]);
    compare_all(&oracle, &img);
}

/// Masks what legitimately differs between two builds: the UUID and every timestamp.
fn mask_times(mut b: Vec<u8>) -> Vec<u8> {
    b[48..80].fill(0);
    let total = i64::from_le_bytes(b[88..96].try_into().expect("8")) as usize;
    for slot in 0..total {
        let at = 4096 + slot * 585;
        b[at + 41..at + 57].fill(0);
    }
    b
}

#[test]
fn test_sifr_and_oracle_build_the_same_bytes() {
    let Some(oracle) = oracle() else { return };
    let dir = tempdir();
    let i = inputs(dir.path());
    let a = dir.path().join("a.sif");
    let b = dir.path().join("b.sif");
    run_steps(&|x| ours(x), &build_steps(s(&a), &i));
    run_steps(&|x| theirs(&oracle, x), &build_steps(s(&b), &i));
    let (a, b) = (
        mask_times(std::fs::read(&a).expect("read")),
        mask_times(std::fs::read(&b).expect("read")),
    );
    assert_eq!(a.len(), b.len(), "file lengths differ");
    if let Some(at) = a.iter().zip(&b).position(|(x, y)| x != y) {
        panic!("builds differ first at byte {at}");
    }
}
