//! Build script: embeds the saved fuzzing regressions (`tests/fuzz-regressions/<target>/`)
//! in the test binaries, so the regression tests also run where the source tree is not
//! readable (CI stages only the binaries). `sif/` becomes `$OUT_DIR/fuzz_regressions.rs`;
//! every other folder NAME becomes `$OUT_DIR/fuzz_regressions_NAME.rs`.

use std::path::{Path, PathBuf};

/// The folders of saved inputs, one per fuzz target.
const TARGETS: &[&str] = &[
    "sif",
    "squashfs_read",
    "ext_read",
    "deffile_parse",
    "layer_apply",
];

fn main() {
    let root = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    println!("cargo:rerun-if-changed=tests/fuzz-regressions");
    for target in TARGETS {
        let dir = Path::new("tests/fuzz-regressions").join(target);
        let out = embed(&dir, &root);
        let name = match *target {
            "sif" => "fuzz_regressions.rs".to_string(),
            t => format!("fuzz_regressions_{t}.rs"),
        };
        std::fs::write(out_dir.join(&name), out).expect("write fuzz_regressions");
    }
}

/// `&[(file name, bytes)]` of every file in `dir`, sorted by name.
fn embed(dir: &Path, root: &Path) -> String {
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect(),
        Err(_) => Vec::new(),
    };
    files.sort();
    let mut out = String::from("&[\n");
    for f in &files {
        let name = f
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        println!("cargo:rerun-if-changed={}", f.display());
        out.push_str(&format!(
            "    ({name:?}, include_bytes!({:?}) as &[u8]),\n",
            root.join(f)
        ));
    }
    out.push_str("]\n");
    out
}
