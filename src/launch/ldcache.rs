//! The host's dynamic linker cache, as Apptainer reads it to find GPU libraries: the output
//! of `ldconfig -p` (the `ldconfig path` of sifr.conf, else `ldconfig.real` or `ldconfig`
//! on `binary path`), one `NAME (FLAGS) => PATH` line per entry; and the ELF header of a
//! candidate, so that only libraries built for this machine and word size are bound (as
//! Apptainer compares them with its own executable's).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// One entry of the cache: the name the linker knows (`libcuda.so.1`) and the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheEntry {
    pub name: String,
    pub path: PathBuf,
}

/// Why the cache could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LdCacheError {
    #[error("could not execute {}: {cause}", ldconfig.display())]
    Run {
        ldconfig: PathBuf,
        cause: std::io::Error,
    },
    #[error("could not execute {}: it exited with {status}", ldconfig.display())]
    Failed {
        ldconfig: PathBuf,
        status: std::process::ExitStatus,
    },
}

/// Parses `ldconfig -p` output, in its (priority) order. The first line ("N libs found in
/// cache ...") and anything else without ` => ` is skipped; a name or path that is empty,
/// and a path that is not absolute, are skipped too.
pub fn parse(text: &str) -> Vec<CacheEntry> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((left, path)) = line.split_once(" => ") else {
            continue;
        };
        // "\tlibcuda.so.1 (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/libcuda.so.1"
        let name = match left.rfind(" (") {
            Some(i) if left.trim_end().ends_with(')') => &left[..i],
            _ => left,
        }
        .trim();
        let path = path.trim();
        if name.is_empty() || !path.starts_with('/') {
            continue;
        }
        out.push(CacheEntry {
            name: name.to_string(),
            path: PathBuf::from(path),
        });
    }
    out
}

/// Runs `ldconfig -p` (with `-C cache` when given) and parses what it prints.
pub fn read(ldconfig: &Path, cache: Option<&Path>) -> Result<Vec<CacheEntry>, LdCacheError> {
    let mut cmd = Command::new(ldconfig);
    cmd.arg("-p");
    if let Some(c) = cache {
        cmd.arg("-C").arg(c);
    }
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map_err(|cause| LdCacheError::Run {
            ldconfig: ldconfig.to_path_buf(),
            cause,
        })?;
    if !out.status.success() {
        return Err(LdCacheError::Failed {
            ldconfig: ldconfig.to_path_buf(),
            status: out.status,
        });
    }
    Ok(parse(&String::from_utf8_lossy(&out.stdout)))
}

/// An ELF file's class (1: 32-bit, 2: 64-bit) and machine (`e_machine`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ElfKind {
    pub class: u8,
    pub machine: u16,
}

/// The class and machine of the ELF file at `path`; `None` when it cannot be read or is no
/// ELF file.
pub fn elf_kind(path: &Path) -> Option<ElfKind> {
    let mut head = [0u8; 20];
    std::fs::File::open(path).ok()?.read_exact(&mut head).ok()?;
    if head[..4] != *b"\x7fELF" {
        return None;
    }
    let machine = match head[5] {
        1 => u16::from_le_bytes([head[18], head[19]]),
        2 => u16::from_be_bytes([head[18], head[19]]),
        _ => return None,
    };
    Some(ElfKind {
        class: head[4],
        machine,
    })
}

/// The kind of this process's executable: what a bound library must match.
pub fn host_kind() -> Option<ElfKind> {
    elf_kind(Path::new("/proc/self/exe"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_parse_ldconfig_p_lines() {
        let text = "3 libs found in cache `/etc/ld.so.cache'\n\
            \tlibcuda.so.1 (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/libcuda.so.1\n\
            \tlibcuda.so.1 (libc6) => /usr/lib/i386-linux-gnu/libcuda.so.1\n\
            \tlibweird (x).so (libc6,x86-64, OS ABI: Linux 3.2.0) => /opt/w/libweird (x).so\n\
            \tgarbage line\n\
            \tlibrel.so (libc6) => relative/path\n";
        let e = parse(text);
        assert_eq!(
            e,
            vec![
                CacheEntry {
                    name: "libcuda.so.1".into(),
                    path: "/usr/lib/x86_64-linux-gnu/libcuda.so.1".into()
                },
                CacheEntry {
                    name: "libcuda.so.1".into(),
                    path: "/usr/lib/i386-linux-gnu/libcuda.so.1".into()
                },
                CacheEntry {
                    name: "libweird (x).so".into(),
                    path: "/opt/w/libweird (x).so".into()
                },
            ]
        );
    }

    /// A real cache, made by `ldconfig -C` over shared objects compiled here with their
    /// sonames, read back through `ldconfig -p -C`; the ELF check tells a library from a
    /// text file. Needs cc and ldconfig (CI has both): their absence is a failure.
    #[test]
    fn test_read_a_cache_made_by_ldconfig() {
        let d = tempfile::tempdir().expect("tempdir");
        let lib = d.path().join("lib");
        std::fs::create_dir(&lib).expect("mkdir");
        let src = d.path().join("f.c");
        std::fs::write(&src, "int fake_gpu_probe(void) { return 42; }\n").expect("write");
        for (file, soname) in [
            ("libcuda.so.535.1", "libcuda.so.1"),
            ("libnvidia-ml.so.535.1", "libnvidia-ml.so.1"),
        ] {
            let st = Command::new("cc")
                .args(["-shared", "-fPIC", "-o"])
                .arg(lib.join(file))
                .arg(format!("-Wl,-soname,{soname}"))
                .arg(&src)
                .status()
                .expect("cc must be installed for this test");
            assert!(st.success(), "cc failed");
        }
        std::fs::write(lib.join("libnotelf.so.1"), "not an ELF file").expect("write");
        let conf = d.path().join("ld.so.conf");
        std::fs::write(&conf, format!("{}\n", lib.display())).expect("write");
        let cache = d.path().join("ld.so.cache");
        let ldconfig = ["/sbin/ldconfig", "/usr/sbin/ldconfig"]
            .into_iter()
            .map(Path::new)
            .find(|p| p.exists())
            .expect("ldconfig must be installed for this test");
        // ldconfig also makes the soname links (libcuda.so.1 -> libcuda.so.535.1).
        let st = Command::new(ldconfig)
            .arg("-C")
            .arg(&cache)
            .arg("-f")
            .arg(&conf)
            .status()
            .expect("ldconfig runs");
        assert!(st.success());
        let entries = read(ldconfig, Some(&cache)).expect("read");
        let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        assert!(names.contains(&"libcuda.so.1"), "{entries:?}");
        assert!(names.contains(&"libnvidia-ml.so.1"), "{entries:?}");
        let cuda = entries
            .iter()
            .find(|e| e.name == "libcuda.so.1")
            .expect("cuda");
        assert_eq!(cuda.path, lib.join("libcuda.so.1"));
        assert_eq!(elf_kind(&cuda.path), host_kind());
        assert!(host_kind().is_some_and(|k| k.class == 2 || k.class == 1));
        assert_eq!(elf_kind(&lib.join("libnotelf.so.1")), None);
        // A program that is not ldconfig: a clear error naming it.
        let e = read(Path::new("/nonexistent/ldconfig"), None).expect_err("missing");
        assert!(e.to_string().contains("/nonexistent/ldconfig"), "{e}");
    }
}
