//! GPUs and host libraries, as Apptainer's legacy `--nv` and `--rocm` set them up: which
//! set-ups a start asks for ([`wanted`]: the flags, `--no-nv`/`--no-rocm`, `always use nv`,
//! `always use rocm`, `use nvidia-container-cli`), what the host has ([`discover`]: the
//! libraries of nvliblist.conf/rocmliblist.conf through the linker cache, the programs on
//! the caller's PATH, the device nodes), and the planner's two steps that turn it into
//! mounts ([`devices`] into a minimal /dev, [`host_files`]: /.singularity.d/libs, the
//! programs in /usr/bin, the persistenced socket). `--nvccli` is refused: sifr does not
//! drive nvidia-container-cli.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use super::host::HostProbe;
use super::ldcache::{self, CacheEntry, ElfKind};
use super::plan::{MountOp, MountSource, TargetKind};
use crate::config::{Config, GpuLibList, SystemPaths};

/// Where the host libraries appear in the container (Apptainer's `ContainerLibsDir`).
pub const LIBS_DIR: &str = "/.singularity.d/libs";
/// The persistence daemon's socket, bound when it exists (Apptainer's `NvidiaIpcsPath`).
pub const PERSISTENCED_SOCKET: &str = "/var/run/nvidia-persistenced/socket";

pub const WHY_GPU_DEVICE: &str = "GPU device";
pub const WHY_LIBRARIES: &str = "host libraries";
pub const WHY_GPU_PROGRAM: &str = "GPU program";
pub const WHY_GPU_SOCKET: &str = "GPU driver socket";

/// The GPU flags of a start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GpuOptions {
    pub nv: bool,
    pub nvccli: bool,
    pub rocm: bool,
    /// Hidden `--no-nv`/`--no-rocm`: override `always use nv`/`always use rocm`.
    pub no_nv: bool,
    pub no_rocm: bool,
    /// Hidden `--contain-libs` (Apptainer's `--containlibs`): host libraries bound into
    /// /.singularity.d/libs by path, with or without a GPU.
    pub contain_libs: Vec<PathBuf>,
}

/// The sifr.conf settings of GPU set-up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GpuPolicy {
    pub always_use_nv: bool,
    pub always_use_rocm: bool,
    pub use_nvidia_container_cli: bool,
}

impl From<&Config> for GpuPolicy {
    fn from(c: &Config) -> GpuPolicy {
        GpuPolicy {
            always_use_nv: c.always_use_nv,
            always_use_rocm: c.always_use_rocm,
            use_nvidia_container_cli: c.use_nvidia_container_cli,
        }
    }
}

/// The set-ups a start asks for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Wanted {
    pub nv: bool,
    pub rocm: bool,
    /// NVIDIA set-up through nvidia-container-cli (which sifr refuses).
    pub nvccli: bool,
}

/// Apptainer's `SetGPUConfig`: `always use nv`/`always use rocm` turn the set-up on unless
/// `--no-nv`/`--no-rocm` is given (a flag given on the command line wins over its `--no-`);
/// `--nvccli` implies `--nv`; `use nvidia-container-cli` makes every NVIDIA set-up go
/// through nvidia-container-cli.
pub fn wanted(o: &GpuOptions, p: &GpuPolicy) -> Wanted {
    let nv = o.nv || o.nvccli || (p.always_use_nv && !o.no_nv);
    let rocm = o.rocm || (p.always_use_rocm && !o.no_rocm);
    Wanted {
        nv,
        rocm,
        nvccli: nv && (o.nvccli || p.use_nvidia_container_cli),
    }
}

/// A library found on the host: its name in /.singularity.d/libs (the name the linker
/// cache lists it under) and the file, canonical.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostLibrary {
    pub name: String,
    pub path: PathBuf,
}

/// What the host has for one platform (NVIDIA or ROCm).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Found {
    pub libraries: Vec<HostLibrary>,
    /// Programs found on the caller's PATH (bound into /usr/bin under their names).
    pub binaries: Vec<PathBuf>,
    /// Sockets of the driver's daemons (the persistenced socket).
    pub ipcs: Vec<PathBuf>,
    /// Device nodes and directories under /dev.
    pub devices: Vec<PathBuf>,
    /// Whether the list named any library / any program (Apptainer warns only then).
    pub lists_libraries: bool,
    pub lists_binaries: bool,
    /// Problems met while looking (an unreadable list, no ldconfig): warnings.
    pub problems: Vec<String>,
}

/// The host's GPU facts for one start, found before planning (see [`discover`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GpuHost {
    /// `Some` when the NVIDIA set-up is wanted.
    pub nv: Option<Found>,
    /// `Some` when the ROCm set-up is wanted.
    pub rocm: Option<Found>,
    /// `Some` when nvidia-container-cli is wanted: where it is, or why it was not found.
    pub nvccli: Option<Result<PathBuf, String>>,
}

/// A GPU request that cannot be planned.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GpuError {
    #[error(
        "{why} needs nvidia-container-cli, which is not installed ({cause}); install it, or \
         use --nv without --nvccli"
    )]
    NvccliMissing { why: &'static str, cause: String },
    #[error(
        "{why} is not supported by sifr yet: sifr does not drive nvidia-container-cli (found \
         at {}); use --nv without --nvccli, which binds the libraries of nvliblist.conf",
        path.display()
    )]
    NvccliUnsupported { why: &'static str, path: PathBuf },
    #[error(
        "--contain-libs {}: no such file on the host (give the path of a library to bind into \
         /.singularity.d/libs)",
        .0.display()
    )]
    ContainLibMissing(PathBuf),
}

/// Looks for what the wanted set-ups bind, on the live host: the lists of the install
/// (or the built-in ones), the linker cache through `ldconfig -p` (`ldconfig path`, else
/// `ldconfig.real` or `ldconfig` on `binary path`), programs on `path_env` (the caller's
/// PATH, as Apptainer's `exec.LookPath`), the device nodes. Problems are kept as warnings:
/// the container still runs, as in Apptainer.
pub fn discover(
    w: &Wanted,
    cfg: &Config,
    paths: &SystemPaths,
    path_env: Option<&OsStr>,
) -> GpuHost {
    let mut host = GpuHost::default();
    if w.nvccli {
        host.nvccli = Some(
            cfg.find_binary("nvidia-container-cli")
                .map_err(|e| e.to_string()),
        );
        return host;
    }
    if !w.nv && !w.rocm {
        return host;
    }
    let cache = find_ldconfig(cfg).and_then(|ld| {
        ldcache::read(&ld, None).map_err(|e| format!("could not retrieve ld cache: {e}"))
    });
    let kind = ldcache::host_kind();
    let look = |list: Result<GpuLibList, String>, devices: Vec<PathBuf>, ipcs, platform| {
        let mut found = Found {
            devices,
            ipcs,
            ..Found::default()
        };
        let list = match list {
            Ok(l) => l,
            Err(e) => {
                found
                    .problems
                    .push(format!("While finding {platform} bind points: {e}"));
                return found;
            }
        };
        found.lists_libraries = !list.libraries.is_empty();
        found.lists_binaries = !list.binaries.is_empty();
        match &cache {
            Ok(entries) => {
                found.libraries =
                    resolve_libraries(&list.libraries, entries, kind, &|p| ldcache::elf_kind(p))
                        .into_iter()
                        .map(|l| HostLibrary {
                            path: std::fs::canonicalize(&l.path).unwrap_or(l.path),
                            name: l.name,
                        })
                        .collect();
            }
            Err(e) if found.lists_libraries => found
                .problems
                .push(format!("While finding {platform} bind points: {e}")),
            Err(_) => {}
        }
        found.binaries = list
            .binaries
            .iter()
            .filter_map(|b| look_path(b, path_env))
            .collect();
        found
    };
    if w.nv {
        let list = GpuLibList::load(paths)
            .map(|l| l.value)
            .map_err(|e| e.to_string());
        let sock = Path::new(PERSISTENCED_SOCKET);
        let ipcs = if sock.exists() {
            vec![sock.to_path_buf()]
        } else {
            vec![]
        };
        host.nv = Some(look(list, nvidia_devices(Path::new("/dev")), ipcs, "nv"));
    }
    if w.rocm {
        let list = GpuLibList::load_rocm(paths)
            .map(|l| l.value)
            .map_err(|e| e.to_string());
        host.rocm = Some(look(list, rocm_devices(Path::new("/dev")), vec![], "rocm"));
    }
    host
}

/// The ldconfig Apptainer runs: `ldconfig path` when set, else `ldconfig.real` (Ubuntu's
/// real one behind a wrapper) or `ldconfig` on `binary path`.
fn find_ldconfig(cfg: &Config) -> Result<PathBuf, String> {
    if cfg.ldconfig_path.is_some() {
        return cfg.find_binary("ldconfig").map_err(|e| e.to_string());
    }
    cfg.find_binary("ldconfig.real")
        .or_else(|_| cfg.find_binary("ldconfig"))
        .map_err(|e| e.to_string())
}

/// Apptainer's `resolveLibs`: for each listed name, every cache name that starts with it
/// (`libcuda.so` finds `libcuda.so.1` and `libcuda.so`), once each, the first file of that
/// name built for this machine and word size (`kind`; 32-bit libraries of a 64-bit host are
/// left out, as without Apptainer's `--compat32`). The name in the container is the file
/// name the cache gives.
pub fn resolve_libraries(
    listed: &[String],
    cache: &[CacheEntry],
    kind: Option<ElfKind>,
    elf: &dyn Fn(&Path) -> Option<ElfKind>,
) -> Vec<HostLibrary> {
    let mut out: Vec<HostLibrary> = Vec::new();
    let mut taken: Vec<&str> = Vec::new();
    for want in listed {
        for e in cache.iter().filter(|e| e.name.starts_with(want.as_str())) {
            if taken.contains(&e.name.as_str()) {
                continue;
            }
            if kind.is_none() || elf(&e.path) != kind {
                continue;
            }
            taken.push(&e.name);
            let name = e
                .path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| e.name.clone());
            if !out.iter().any(|l| l.name == name) {
                out.push(HostLibrary {
                    name,
                    path: e.path.clone(),
                });
            }
        }
    }
    out
}

/// `name` on a PATH value: the first executable regular file.
fn look_path(name: &str, path_env: Option<&OsStr>) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(path_env?)
        .filter(|d| d.is_absolute())
        .map(|d| d.join(name))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Apptainer's `NvidiaDevices(true)`: every `/dev/nvidia*` (nvidia0, nvidiactl,
/// nvidia-uvm, nvidia-uvm-tools, nvidia-modeset, the nvidia-caps directory), sorted.
fn nvidia_devices(dev: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dev)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("nvidia"))
        .map(|e| e.path())
        .collect();
    out.sort();
    out
}

/// Apptainer's `RocmDevices`: /dev/dri and /dev/kfd when present.
fn rocm_devices(dev: &Path) -> Vec<PathBuf> {
    ["dri", "kfd"]
        .iter()
        .map(|n| dev.join(n))
        .filter(|p| p.exists())
        .collect()
}

/// Planner step: the GPU device nodes added to a minimal /dev (`--contain`, `mount dev =
/// minimal`), as Apptainer adds them to its session /dev; with the host's /dev they are
/// there already, and with no /dev there is nowhere to put them.
pub fn devices(host: &GpuHost, minimal_dev: bool, probe: &dyn HostProbe) -> Vec<MountOp> {
    if !minimal_dev {
        return Vec::new();
    }
    let mut out: Vec<MountOp> = Vec::new();
    for dev in host
        .nv
        .iter()
        .chain(host.rocm.iter())
        .flat_map(|f| &f.devices)
    {
        if out.iter().any(|m| &m.dest == dev) {
            continue;
        }
        out.push(MountOp {
            source: MountSource::Host(dev.clone()),
            dest: dev.clone(),
            target: if probe.is_dir(dev) {
                TargetKind::Dir
            } else {
                TargetKind::File
            },
            readonly: false,
            recursive: true,
            allow_dev: true,
            optional: false,
            why: WHY_GPU_DEVICE,
        });
    }
    out
}

/// Planner step: the libraries into /.singularity.d/libs (read-only, nosuid, nodev, one
/// bind each into a session directory bound there, as Apptainer's `addLibsMount`), the
/// programs into /usr/bin and the persistenced socket at its path (read-only, nosuid,
/// nodev, Apptainer's `addFilesMount`; not with `--writable`, where their mount points
/// would be left in the sandbox), with Apptainer's warnings: nothing found, `user bind
/// control = no`, `--writable`. `--nvccli` is refused here.
pub fn host_files(
    host: &GpuHost,
    contain_libs: &[PathBuf],
    user_bind_control: bool,
    writable: bool,
    probe: &dyn HostProbe,
    warnings: &mut Vec<String>,
) -> Result<Vec<MountOp>, GpuError> {
    if let Some(cli) = &host.nvccli {
        let why = "--nvccli (or --nv with 'use nvidia-container-cli = yes' in sifr.conf)";
        return Err(match cli {
            Ok(path) => GpuError::NvccliUnsupported {
                why,
                path: path.clone(),
            },
            Err(cause) => GpuError::NvccliMissing {
                why,
                cause: cause.clone(),
            },
        });
    }
    let mut libs: Vec<(PathBuf, String)> = Vec::new();
    let mut files: Vec<(PathBuf, PathBuf, &'static str)> = Vec::new();
    for (found, platform) in [(&host.rocm, "rocm"), (&host.nv, "nv")] {
        let Some(f) = found else { continue };
        let mut bind_files = true;
        warnings.extend(f.problems.iter().cloned());
        if f.binaries.is_empty() && f.ipcs.is_empty() {
            if f.lists_binaries {
                warnings.push(format!("Could not find any {platform} files on this host!"));
            }
        } else if writable {
            // Their mount points would be created in the sandbox itself, and left there.
            warnings.push(format!("{platform} files may not be bound with --writable"));
            bind_files = false;
        }
        for b in f.binaries.iter().filter(|_| bind_files) {
            if let Some(name) = b.file_name() {
                files.push((b.clone(), Path::new("/usr/bin").join(name), WHY_GPU_PROGRAM));
            }
        }
        for s in f.ipcs.iter().filter(|_| bind_files) {
            files.push((s.clone(), s.clone(), WHY_GPU_SOCKET));
        }
        if f.libraries.is_empty() && f.lists_libraries {
            warnings.push(format!(
                "Could not find any {platform} libraries on this host!"
            ));
        }
        for l in &f.libraries {
            if !libs.iter().any(|(_, n)| n == &l.name) {
                libs.push((l.path.clone(), l.name.clone()));
            }
        }
    }
    for lib in contain_libs {
        if !probe.exists(lib) {
            return Err(GpuError::ContainLibMissing(lib.clone()));
        }
        let Some(name) = lib.file_name() else {
            return Err(GpuError::ContainLibMissing(lib.clone()));
        };
        let name = name.to_string_lossy().into_owned();
        // A later one of the same name replaces an earlier one, as a later bind would.
        libs.retain(|(_, n)| n != &name);
        libs.push((lib.clone(), name));
    }
    if !user_bind_control {
        if !libs.is_empty() {
            warnings.push(
                "Ignoring libraries bind request: user bind control disabled by system \
                 administrator"
                    .into(),
            );
        }
        if !files.is_empty() {
            warnings.push(
                "Ignoring binaries bind request: user bind control disabled by system \
                 administrator"
                    .into(),
            );
        }
        return Ok(Vec::new());
    }
    let mut out: Vec<MountOp> = files
        .into_iter()
        .map(|(source, dest, why)| MountOp {
            source: MountSource::Host(source),
            dest,
            target: TargetKind::File,
            readonly: true,
            recursive: false,
            allow_dev: false,
            // Where the image has no /usr/bin and there is no layer to create it.
            optional: true,
            why,
        })
        .collect();
    if !libs.is_empty() {
        out.insert(
            0,
            MountOp {
                source: MountSource::FileSet {
                    name: "libs".into(),
                    files: libs,
                },
                dest: PathBuf::from(LIBS_DIR),
                target: TargetKind::Dir,
                readonly: true,
                recursive: true,
                allow_dev: false,
                optional: false,
                why: WHY_LIBRARIES,
            },
        );
    }
    Ok(out)
}

/// Apptainer's `addUserbindsMount`: a user bind of a file into /.singularity.d/libs is
/// deferred to the library directory, which would otherwise hide it. When `files` binds
/// that directory, such binds leave `mounts` and join its files under their destination's
/// name (replacing a library of that name, as the later bind would).
pub fn absorb_library_binds(
    mounts: &mut Vec<MountOp>,
    files: &mut [MountOp],
    probe: &dyn HostProbe,
) {
    let Some(MountSource::FileSet { files: set, .. }) = files
        .iter_mut()
        .find(|m| m.dest == Path::new(LIBS_DIR))
        .map(|m| &mut m.source)
    else {
        return;
    };
    mounts.retain(|m| {
        let (MountSource::Host(src), Some(name)) = (&m.source, m.dest.file_name()) else {
            return true;
        };
        let into_libs = m.why == super::planner::WHY_USER_BIND
            && m.dest.parent() == Some(Path::new(LIBS_DIR))
            && !probe.is_dir(src);
        if into_libs {
            let name = name.to_string_lossy().into_owned();
            set.retain(|(_, n)| n != &name);
            set.push((src.clone(), name));
        }
        !into_libs
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const X86_64: ElfKind = ElfKind {
        class: 2,
        machine: 62,
    };
    const I386: ElfKind = ElfKind {
        class: 1,
        machine: 3,
    };

    #[test]
    fn test_wanted_follows_flags_config_and_no_flags() {
        let o = |f: fn(&mut GpuOptions)| {
            let mut o = GpuOptions::default();
            f(&mut o);
            o
        };
        let none = GpuPolicy::default();
        let always = GpuPolicy {
            always_use_nv: true,
            always_use_rocm: true,
            use_nvidia_container_cli: false,
        };
        let cli = GpuPolicy {
            use_nvidia_container_cli: true,
            ..GpuPolicy::default()
        };
        assert_eq!(wanted(&o(|_| {}), &none), Wanted::default());
        let w = wanted(&o(|o| o.nv = true), &none);
        assert!(w.nv && !w.rocm && !w.nvccli);
        // always use nv/rocm: on, unless --no-nv/--no-rocm; a flag given wins.
        let w = wanted(&o(|_| {}), &always);
        assert!(w.nv && w.rocm);
        let w = wanted(
            &o(|o| {
                o.no_nv = true;
                o.no_rocm = true
            }),
            &always,
        );
        assert!(!w.nv && !w.rocm);
        let w = wanted(
            &o(|o| {
                o.no_nv = true;
                o.nv = true
            }),
            &always,
        );
        assert!(w.nv);
        // --nvccli implies --nv; 'use nvidia-container-cli' applies to --nv only.
        let w = wanted(&o(|o| o.nvccli = true), &none);
        assert!(w.nv && w.nvccli);
        assert!(wanted(&o(|o| o.nv = true), &cli).nvccli);
        assert!(!wanted(&o(|o| o.rocm = true), &cli).nvccli);
    }

    #[test]
    fn test_resolve_libraries_by_prefix_machine_and_once() {
        let e = |n: &str, p: &str| CacheEntry {
            name: n.into(),
            path: p.into(),
        };
        let cache = vec![
            e("libcuda.so.1", "/usr/lib32/libcuda.so.1"),
            e("libcuda.so.1", "/usr/lib64/libcuda.so.1"),
            e("libcuda.so", "/usr/lib64/libcuda.so"),
            e("libcudadebugger.so.1", "/usr/lib64/libcudadebugger.so.1"),
            e("libnvidia-ml.so.1", "/usr/lib64/libnvidia-ml.so.1"),
            e("libGL.so.1", "/usr/lib64/libGL.so.1"),
        ];
        let elf = |p: &Path| {
            if p.starts_with("/usr/lib32") {
                Some(I386)
            } else {
                Some(X86_64)
            }
        };
        let listed: Vec<String> = ["libcuda.so", "libnvidia-ml.so", "libcuda.so", "libEGL.so"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let got = resolve_libraries(&listed, &cache, Some(X86_64), &elf);
        let names: Vec<(&str, &Path)> = got
            .iter()
            .map(|l| (l.name.as_str(), l.path.as_path()))
            .collect();
        assert_eq!(
            names,
            vec![
                ("libcuda.so.1", Path::new("/usr/lib64/libcuda.so.1")),
                ("libcuda.so", Path::new("/usr/lib64/libcuda.so")),
                (
                    "libnvidia-ml.so.1",
                    Path::new("/usr/lib64/libnvidia-ml.so.1")
                ),
            ]
        );
        // Not an ELF file of this machine: nothing.
        assert!(resolve_libraries(&listed, &cache, Some(X86_64), &|_| None).is_empty());
        assert!(resolve_libraries(&listed, &cache, None, &elf).is_empty());
    }

    /// A described host: these paths exist; the listed ones are directories.
    struct Listed(Vec<&'static str>, Vec<&'static str>);
    impl HostProbe for Listed {
        fn exists(&self, p: &Path) -> bool {
            self.0.iter().any(|e| Path::new(e) == p)
        }
        fn is_dir(&self, p: &Path) -> bool {
            self.1.iter().any(|e| Path::new(e) == p)
        }
    }

    fn nv_host() -> GpuHost {
        GpuHost {
            nv: Some(Found {
                libraries: vec![
                    HostLibrary {
                        name: "libcuda.so.1".into(),
                        path: "/usr/lib64/libcuda.so.535.1".into(),
                    },
                    HostLibrary {
                        name: "libnvidia-ml.so.1".into(),
                        path: "/usr/lib64/libnvidia-ml.so.535.1".into(),
                    },
                ],
                binaries: vec!["/opt/nv/bin/nvidia-smi".into()],
                ipcs: vec![PERSISTENCED_SOCKET.into()],
                devices: vec!["/dev/nvidia-caps".into(), "/dev/nvidia0".into()],
                lists_libraries: true,
                lists_binaries: true,
                problems: vec![],
            }),
            ..GpuHost::default()
        }
    }

    #[test]
    fn test_host_files_libs_programs_and_socket() {
        let probe = Listed(vec!["/h/libfoo.so.2"], vec![]);
        let mut w = Vec::new();
        let ops = host_files(
            &nv_host(),
            &["/h/libfoo.so.2".into()],
            true,
            false,
            &probe,
            &mut w,
        )
        .expect("ok");
        assert!(w.is_empty(), "{w:?}");
        let libs = &ops[0];
        assert_eq!(libs.dest, Path::new(LIBS_DIR));
        assert!(libs.readonly && libs.recursive && !libs.allow_dev);
        assert_eq!(
            libs.source,
            MountSource::FileSet {
                name: "libs".into(),
                files: vec![
                    ("/usr/lib64/libcuda.so.535.1".into(), "libcuda.so.1".into()),
                    (
                        "/usr/lib64/libnvidia-ml.so.535.1".into(),
                        "libnvidia-ml.so.1".into()
                    ),
                    ("/h/libfoo.so.2".into(), "libfoo.so.2".into()),
                ]
            }
        );
        let smi = &ops[1];
        assert_eq!(
            (smi.source.clone(), smi.dest.as_path(), smi.why),
            (
                MountSource::Host("/opt/nv/bin/nvidia-smi".into()),
                Path::new("/usr/bin/nvidia-smi"),
                WHY_GPU_PROGRAM
            )
        );
        assert!(smi.readonly && !smi.allow_dev && smi.target == TargetKind::File);
        assert_eq!(ops[2].dest, Path::new(PERSISTENCED_SOCKET));
        assert_eq!(ops.len(), 3);

        // --contain-libs naming a missing file: refused by name.
        let e = host_files(
            &GpuHost::default(),
            &["/h/none.so".into()],
            true,
            false,
            &probe,
            &mut w,
        )
        .expect_err("missing");
        assert!(
            e.to_string()
                .starts_with("--contain-libs /h/none.so: no such file")
        );

        // --writable: Apptainer's warning; the libraries only (no mount point is made in
        // the sandbox for the programs).
        let mut w = Vec::new();
        let ops = host_files(&nv_host(), &[], true, true, &probe, &mut w).expect("ok");
        assert_eq!(w, ["nv files may not be bound with --writable"]);
        let dests: Vec<&Path> = ops.iter().map(|m| m.dest.as_path()).collect();
        assert_eq!(dests, [Path::new(LIBS_DIR)]);
    }

    #[test]
    fn test_nothing_found_warns_as_apptainer_and_runs() {
        let empty = Found {
            lists_libraries: true,
            lists_binaries: true,
            ..Found::default()
        };
        let host = GpuHost {
            nv: Some(empty.clone()),
            rocm: Some(empty),
            nvccli: None,
        };
        let mut w = Vec::new();
        let ops =
            host_files(&host, &[], true, false, &Listed(vec![], vec![]), &mut w).expect("runs");
        assert!(ops.is_empty());
        assert_eq!(
            w,
            [
                "Could not find any rocm files on this host!",
                "Could not find any rocm libraries on this host!",
                "Could not find any nv files on this host!",
                "Could not find any nv libraries on this host!",
            ]
        );
    }

    #[test]
    fn test_user_bind_control_no_ignores_the_binds_with_apptainers_warnings() {
        let mut w = Vec::new();
        let ops = host_files(
            &nv_host(),
            &[],
            false,
            false,
            &Listed(vec![], vec![]),
            &mut w,
        )
        .expect("runs");
        assert!(ops.is_empty());
        assert_eq!(
            w,
            [
                "Ignoring libraries bind request: user bind control disabled by system \
                 administrator",
                "Ignoring binaries bind request: user bind control disabled by system \
                 administrator"
            ]
        );
    }

    #[test]
    fn test_nvccli_is_refused_in_one_line() {
        let probe = Listed(vec![], vec![]);
        let mut w = Vec::new();
        let missing = GpuHost {
            nvccli: Some(Err(
                "nvidia-container-cli not found in the binary path".into()
            )),
            ..GpuHost::default()
        };
        let e = host_files(&missing, &[], true, false, &probe, &mut w).expect_err("refused");
        let msg = e.to_string();
        assert!(
            msg.contains("needs nvidia-container-cli, which is not installed"),
            "{msg}"
        );
        assert_eq!(msg.lines().count(), 1);
        let installed = GpuHost {
            nvccli: Some(Ok("/usr/bin/nvidia-container-cli".into())),
            ..GpuHost::default()
        };
        let e = host_files(&installed, &[], true, false, &probe, &mut w).expect_err("refused");
        let msg = e.to_string();
        assert!(
            msg.contains("is not supported by sifr yet: sifr does not drive nvidia-container-cli"),
            "{msg}"
        );
        assert_eq!(msg.lines().count(), 1);
    }

    #[test]
    fn test_devices_only_into_a_minimal_dev() {
        let probe = Listed(
            vec!["/dev/nvidia-caps", "/dev/nvidia0", "/dev/dri", "/dev/kfd"],
            vec!["/dev/nvidia-caps", "/dev/dri"],
        );
        let mut host = nv_host();
        host.rocm = Some(Found {
            devices: vec!["/dev/dri".into(), "/dev/kfd".into()],
            ..Found::default()
        });
        assert!(devices(&host, false, &probe).is_empty());
        let ops = devices(&host, true, &probe);
        let got: Vec<(&Path, TargetKind)> =
            ops.iter().map(|m| (m.dest.as_path(), m.target)).collect();
        assert_eq!(
            got,
            vec![
                (Path::new("/dev/nvidia-caps"), TargetKind::Dir),
                (Path::new("/dev/nvidia0"), TargetKind::File),
                (Path::new("/dev/dri"), TargetKind::Dir),
                (Path::new("/dev/kfd"), TargetKind::File),
            ]
        );
        assert!(ops.iter().all(|m| m.allow_dev && m.why == WHY_GPU_DEVICE));
    }

    #[test]
    fn test_discovery_on_a_described_dev() {
        let d = tempfile::tempdir().expect("tempdir");
        for n in ["nvidia0", "nvidiactl", "nvidia-uvm", "null", "kfd"] {
            std::fs::write(d.path().join(n), "").expect("write");
        }
        std::fs::create_dir(d.path().join("nvidia-caps")).expect("mkdir");
        let names = |v: Vec<PathBuf>| -> Vec<String> {
            v.iter()
                .map(|p| p.file_name().unwrap_or_default().to_string_lossy().into())
                .collect()
        };
        assert_eq!(
            names(nvidia_devices(d.path())),
            ["nvidia-caps", "nvidia-uvm", "nvidia0", "nvidiactl"]
        );
        assert_eq!(names(rocm_devices(d.path())), ["kfd"]);
        let bin = d.path().join("bin");
        std::fs::create_dir(&bin).expect("mkdir");
        std::fs::write(bin.join("nvidia-smi"), "#!/bin/sh\n").expect("write");
        std::fs::write(bin.join("plain"), "").expect("write");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            bin.join("nvidia-smi"),
            std::fs::Permissions::from_mode(0o755),
        )
        .expect("chmod");
        let path = std::env::join_paths([Path::new("/nonexistent"), &bin]).expect("join");
        assert_eq!(
            look_path("nvidia-smi", Some(&path)),
            Some(bin.join("nvidia-smi"))
        );
        assert_eq!(look_path("plain", Some(&path)), None);
        assert_eq!(look_path("nvidia-smi", None), None);
    }
}
