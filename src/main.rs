//! The `sifr` binary (also installed as `singularity` / `apptainer` links).

fn main() {
    std::process::exit(sifr::cmd::main());
}
