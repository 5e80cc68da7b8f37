//! Build script: embeds the saved fuzzing regressions (`tests/fuzz-regressions/sif/`) in
//! the test binaries, so the regression test also runs where the source tree is not
//! readable (CI stages only the binaries).

use std::path::{Path, PathBuf};

fn main() {
    let dir = Path::new("tests/fuzz-regressions/sif");
    println!("cargo:rerun-if-changed={}", dir.display());
    let root = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
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
    let dest =
        PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR")).join("fuzz_regressions.rs");
    std::fs::write(&dest, out).expect("write fuzz_regressions.rs");
}
