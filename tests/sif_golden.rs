//! `sifr sif header|list|info|dump` against the reference siftool's golden outputs
//! (`testdata/sif/golden/siftool/`): every golden file must match byte for byte.

mod common;

use std::path::Path;

use common::{sif_fixture, sifr, testdata};

/// Fixture image for a Header/List golden name (`OneGroupSignedPGP` ↔ `one-group-signed-pgp.sif`).
fn image_for(name: &str) -> &'static str {
    match name {
        "Empty" => "empty.sif",
        "EmptyID" => "empty-id.sif",
        "EmptyLaunchScript" => "empty-launch-script.sif",
        "OneGroup" => "one-group.sif",
        "OneGroupSignedLegacy" => "one-group-signed-legacy.sif",
        "OneGroupSignedLegacyAll" => "one-group-signed-legacy-all.sif",
        "OneGroupSignedLegacyGroup" => "one-group-signed-legacy-group.sif",
        "OneGroupSignedPGP" => "one-group-signed-pgp.sif",
        "OneObjectCryptMessage" => "one-object-crypt-message.sif",
        "OneObjectGenericJSON" => "one-object-generic-json.sif",
        "OneObjectOCIBlob" => "one-object-oci-blob.sif",
        "OneObjectOCIRootIndex" => "one-object-oci-root-index.sif",
        "OneObjectSBOM" => "one-object-sbom.sif",
        "OneObjectTime" => "one-object-time.sif",
        "TwoGroups" => "two-groups.sif",
        "TwoGroupsSignedLegacy" => "two-groups-signed-legacy.sif",
        "TwoGroupsSignedLegacyAll" => "two-groups-signed-legacy-all.sif",
        "TwoGroupsSignedLegacyGroup" => "two-groups-signed-legacy-group.sif",
        "TwoGroupsSignedPGP" => "two-groups-signed-pgp.sif",
        other => panic!("no fixture mapping for golden {other}; update tests/sif_golden.rs"),
    }
}

/// Fixture image and object ID for an Info/Dump golden name (testdata/sif/README.md).
fn object_for(kind: &str, name: &str) -> (&'static str, u32) {
    match (kind, name) {
        ("TestApp_Info", "Time") => ("one-object-time.sif", 1),
        ("TestApp_Info", "GenericJSON") => ("one-object-generic-json.sif", 1),
        ("TestApp_Info", "CryptMessage") => ("one-object-crypt-message.sif", 1),
        ("TestApp_Info", "SBOM") => ("one-object-sbom.sif", 1),
        ("TestApp_Info", "OCIRootIndex") => ("one-object-oci-root-index.sif", 1),
        ("TestApp_Info", "OCIBlob") => ("one-object-oci-blob.sif", 1),
        ("TestApp_Info", "DataPartitionRaw") => ("two-groups-signed-pgp.sif", 1),
        ("TestApp_Info", "DataPartitionSquashFS") => ("two-groups-signed-pgp.sif", 2),
        ("TestApp_Info", "DataPartitionEXT3") => ("two-groups-signed-pgp.sif", 3),
        ("TestApp_Info", "DataSignature") => ("two-groups-signed-pgp.sif", 4),
        ("TestApp_Dump", "One") => ("one-group.sif", 1),
        ("TestApp_Dump", "Two") => ("one-group.sif", 2),
        other => panic!("no fixture mapping for golden {other:?}; update tests/sif_golden.rs"),
    }
}

fn goldens(kind: &str) -> Vec<(String, Vec<u8>)> {
    let dir = testdata().join("sif/golden/siftool").join(kind);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "golden"))
        .map(|p| {
            let name = p.file_stem().expect("stem").to_string_lossy().into_owned();
            (name, std::fs::read(&p).expect("read golden"))
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no goldens in {}", dir.display());
    out
}

fn run_ok(args: &[&str]) -> Vec<u8> {
    let out = sifr(args);
    assert!(
        out.status.success(),
        "sifr {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stderr.is_empty(), "unexpected stderr for {args:?}");
    out.stdout
}

fn check(kind: &str, verb: &str, name: &str, args: &[&str], want: &[u8]) {
    let got = run_ok(args);
    assert!(
        got == want,
        "{kind}/{name}: `sifr sif {verb}` differs from the golden file\n--- want\n{}\n--- got\n{}",
        String::from_utf8_lossy(want),
        String::from_utf8_lossy(&got)
    );
}

fn path_str(p: &Path) -> String {
    p.to_str().expect("utf-8 path").to_string()
}

#[test]
fn test_header_goldens() {
    for (name, want) in goldens("TestApp_Header") {
        let img = path_str(&sif_fixture(image_for(&name)));
        check(
            "TestApp_Header",
            "header",
            &name,
            &["sif", "header", &img],
            &want,
        );
    }
}

#[test]
fn test_list_goldens() {
    for (name, want) in goldens("TestApp_List") {
        let img = path_str(&sif_fixture(image_for(&name)));
        check("TestApp_List", "list", &name, &["sif", "list", &img], &want);
    }
}

#[test]
fn test_info_goldens() {
    for (name, want) in goldens("TestApp_Info") {
        let (image, id) = object_for("TestApp_Info", &name);
        let img = path_str(&sif_fixture(image));
        let id = id.to_string();
        check(
            "TestApp_Info",
            "info",
            &name,
            &["sif", "info", &id, &img],
            &want,
        );
    }
}

#[test]
fn test_dump_goldens() {
    for (name, want) in goldens("TestApp_Dump") {
        let (image, id) = object_for("TestApp_Dump", &name);
        let img = path_str(&sif_fixture(image));
        let id = id.to_string();
        check(
            "TestApp_Dump",
            "dump",
            &name,
            &["sif", "dump", &id, &img],
            &want,
        );
    }
}
