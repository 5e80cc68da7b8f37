//! nvliblist.conf and rocmliblist.conf: the NVIDIA (`--nv`) and AMD ROCm (`--rocm`) driver
//! programs and libraries bound into a container. One file name per line, `#` comment lines; a name containing `.so` is a
//! library, anything else a program (Apptainer's rule).

use super::paths::{SystemFile, SystemPaths};
use super::{ConfigError, Loaded, Source};

/// The programs and libraries to bind for GPU support, in file order, without duplicates.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GpuLibList {
    /// Program names, looked up on `binary path`.
    pub binaries: Vec<String>,
    /// Library names, looked up in the dynamic linker cache.
    pub libraries: Vec<String>,
}

impl GpuLibList {
    /// Parses the list; `origin` names the text in errors.
    pub fn parse(text: &str, origin: &Source) -> Result<GpuLibList, ConfigError> {
        let mut list = GpuLibList::default();
        for (index, raw) in text.lines().enumerate() {
            let name = raw.trim();
            if name.is_empty() || name.starts_with('#') {
                continue;
            }
            let problem = if name.chars().any(char::is_whitespace) {
                Some("one file name per line, without spaces")
            } else if name.contains('/') {
                Some("a file name, not a path (no '/')")
            } else if name == "." || name == ".." {
                Some("a file name")
            } else {
                None
            };
            if let Some(expected) = problem {
                return Err(ConfigError::Syntax {
                    origin: origin.clone(),
                    line: index + 1,
                    message: format!("expected {expected}, got \"{name}\""),
                });
            }
            let target = if name.contains(".so") {
                &mut list.libraries
            } else {
                &mut list.binaries
            };
            if !target.iter().any(|n| n == name) {
                target.push(name.to_string());
            }
        }
        Ok(list)
    }

    /// The install's nvliblist.conf, or the built-in default.
    pub fn load(paths: &SystemPaths) -> Result<Loaded<GpuLibList>, ConfigError> {
        GpuLibList::load_file(paths, SystemFile::NvLibList)
    }

    /// The install's rocmliblist.conf, or the built-in default.
    pub fn load_rocm(paths: &SystemPaths) -> Result<Loaded<GpuLibList>, ConfigError> {
        GpuLibList::load_file(paths, SystemFile::RocmLibList)
    }

    fn load_file(paths: &SystemPaths, file: SystemFile) -> Result<Loaded<GpuLibList>, ConfigError> {
        let Loaded { value, source } = paths.read_text(file)?;
        let value = GpuLibList::parse(&value, &source)?;
        log::debug!("{}: {source}", file.relative_path());
        Ok(Loaded { value, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn origin() -> Source {
        Source::File(PathBuf::from("/etc/sifr/nvliblist.conf"))
    }

    #[test]
    fn test_classifies_programs_and_libraries() {
        let list = GpuLibList::parse(
            "# comment\n\nnvidia-smi\n  libcuda.so  \nlibnvoptix.so.1\nnvidia-smi\n# libfoo.so\n",
            &origin(),
        )
        .expect("parses");
        assert_eq!(list.binaries, ["nvidia-smi"]);
        assert_eq!(list.libraries, ["libcuda.so", "libnvoptix.so.1"]);
    }

    #[test]
    fn test_rejects_paths_and_spaces() {
        let err = GpuLibList::parse("libcuda.so\n/usr/bin/nvidia-smi\n", &origin())
            .expect_err("must be refused");
        assert_eq!(
            err.to_string(),
            "/etc/sifr/nvliblist.conf:2: expected a file name, not a path (no '/'), got \"/usr/bin/nvidia-smi\""
        );
        let err =
            GpuLibList::parse("libcuda.so libGL.so\n", &origin()).expect_err("must be refused");
        assert!(
            err.to_string()
                .contains(":1: expected one file name per line"),
            "{err}"
        );
        assert!(GpuLibList::parse("..\n", &origin()).is_err());
    }

    #[test]
    fn test_builtin_default_parses() {
        let dir = tempfile::tempdir().expect("tempdir");
        let loaded = GpuLibList::load(&SystemPaths::with_prefix(dir.path())).expect("built-in");
        assert_eq!(loaded.source, Source::BuiltIn("nvliblist.conf"));
        assert!(loaded.value.binaries.iter().any(|b| b == "nvidia-smi"));
        assert!(loaded.value.libraries.iter().any(|l| l == "libcuda.so"));
        assert!(
            loaded
                .value
                .libraries
                .iter()
                .any(|l| l == "libnvidia-ml.so")
        );
        let rocm = GpuLibList::load_rocm(&SystemPaths::with_prefix(dir.path())).expect("built-in");
        assert_eq!(rocm.source, Source::BuiltIn("rocmliblist.conf"));
        assert!(rocm.value.binaries.iter().any(|b| b == "rocm-smi"));
        assert!(rocm.value.libraries.iter().any(|l| l == "libamdocl64.so"));
    }
}
