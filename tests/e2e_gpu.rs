//! End-to-end: `--nv`, `--rocm`, `--nvccli`, `--contain-libs`, `--no-nv` and the GPU
//! directives of sifr.conf (issue 14), on the synthetic driver of `ci/fake-gpu`: fake
//! NVIDIA and ROCm libraries in the host's linker cache, fake nvidia-smi and rocm-smi,
//! device nodes bound from /dev/null, all in a private mount namespace.
//!
//! Runs only under `ci/fake-gpu` (ci/test runs it so, as the unprivileged test user; by hand,
//! as root: `ci/fake-gpu runuser -u sifrtest -- TEST-BINARY`). Without the fake driver every test fails: there is nothing to
//! check against, and a GPU test must not pass by skipping.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::*;

/// The synthetic driver's directory (`$SIFR_FAKE_GPU`, set by ci/fake-gpu).
fn fake() -> PathBuf {
    match std::env::var_os("SIFR_FAKE_GPU") {
        Some(d) if Path::new(&d).join("lib").is_dir() => PathBuf::from(d),
        _ => panic!(
            "e2e_gpu needs the synthetic GPU driver: run it under ci/fake-gpu (ci/test does)"
        ),
    }
}

fn busybox() -> String {
    sif_fixture("busybox_amd64.sif").display().to_string()
}

fn debian() -> String {
    test_images()
        .expect("the GPU tests need the Debian test image (ci/make-test-images)")
        .join("debian.sif")
        .display()
        .to_string()
}

/// The caller's PATH with the fake driver's programs in front (where nvidia-smi would be).
fn path_with_driver() -> String {
    format!(
        "{}:{}",
        fake().join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// Runs sifr from `/` with `envs` added (PATH with the fake driver's programs unless
/// `envs` sets it).
fn gpu_sifr(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut c = Command::new(sifr_bin());
    c.args(args)
        .current_dir("/")
        .stdin(Stdio::null())
        .env("PATH", path_with_driver());
    for (k, v) in envs {
        c.env(k, v);
    }
    c.output().expect("run sifr")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Writes a sifr.conf with `text` in `dir`.
fn conf(dir: &Path, text: &str) -> String {
    let p = dir.join("sifr.conf");
    std::fs::write(&p, text).expect("write sifr.conf");
    p.display().to_string()
}

/// `--nv`: the libraries of nvliblist.conf that the linker cache knows are in
/// /.singularity.d/libs (read-only, nosuid, nodev), and a program linked against
/// libcuda.so.1 and libnvidia-ml.so.1 resolves them there (ldd) and runs with them (the
/// loader); nvidia-smi is bound into /usr/bin and runs; CUDA_VISIBLE_DEVICES and
/// NVIDIA_VISIBLE_DEVICES pass as the rest of the environment does. The Debian test image
/// is a bare debootstrap tree without Apptainer's environment scripts, so the search path
/// is given here; the next test checks that an Apptainer-built image's 99-base.sh puts
/// /.singularity.d/libs on LD_LIBRARY_PATH.
#[test]
fn test_nv_binds_libraries_and_programs_that_resolve_and_run() {
    require_unprivileged();
    let probe = format!("{}:/opt/probe", fake().join("probe").display());
    let script = "ls /.singularity.d/libs; export LD_LIBRARY_PATH=/.singularity.d/libs; \
                  ldd /opt/probe/gpu-probe; /opt/probe/gpu-probe; nvidia-smi; \
                  echo \"VIS=$CUDA_VISIBLE_DEVICES/$NVIDIA_VISIBLE_DEVICES\"; \
                  grep ' /.singularity.d/libs ' /proc/self/mountinfo; \
                  touch /.singularity.d/libs/x 2>/dev/null || echo read-only";
    let out = gpu_sifr(
        &["exec", "--nv", "-B", &probe, &debian(), "sh", "-c", script],
        &[
            ("CUDA_VISIBLE_DEVICES", "0"),
            ("NVIDIA_VISIBLE_DEVICES", "all"),
        ],
    );
    let text = ok(&out);
    for lib in [
        "libcuda.so.1",
        "libnvidia-ml.so.1",
        "libnvidia-ptxjitcompiler.so.1",
    ] {
        assert!(text.lines().any(|l| l == lib), "{lib} missing: {text}");
    }
    assert!(
        text.contains("libcuda.so.1 => /.singularity.d/libs/libcuda.so.1"),
        "{text}"
    );
    assert!(
        text.contains("libnvidia-ml.so.1 => /.singularity.d/libs/libnvidia-ml.so.1"),
        "{text}"
    );
    assert!(text.contains("gpu-probe: cuInit=0 nvmlInit=0"), "{text}");
    assert!(text.contains("GPU 0: Fake GPU for sifr tests"), "{text}");
    assert!(text.contains("VIS=0/all"), "{text}");
    let mount = text
        .lines()
        .find(|l| l.contains(" /.singularity.d/libs "))
        .expect("the libs mount");
    let opts = mount.split(' ').nth(5).unwrap_or("");
    for o in ["ro", "nosuid", "nodev"] {
        assert!(opts.split(',').any(|x| x == o), "{o} missing: {mount}");
    }
    assert!(text.lines().any(|l| l == "read-only"), "{text}");
    assert!(!stderr(&out).contains("WARNING"), "{}", stderr(&out));
}

/// In an image Apptainer built (99-base.sh), `--nv` leaves /.singularity.d/libs on
/// LD_LIBRARY_PATH, as Apptainer's action script does.
#[test]
fn test_nv_libraries_are_on_ld_library_path() {
    require_unprivileged();
    let out = gpu_sifr(
        &[
            "exec",
            "--nv",
            &busybox(),
            "sh",
            "-c",
            "echo \"LD=$LD_LIBRARY_PATH\"",
        ],
        &[],
    );
    let text = ok(&out);
    let ld = text.trim().trim_start_matches("LD=");
    assert!(ld.split(':').any(|d| d == "/.singularity.d/libs"), "{text}");
}

/// The device nodes: `/dev/nvidia*` (and the nvidia-caps directory) in the minimal /dev of
/// `--contain`/`--containall`, usable character devices; none without `--nv`.
#[test]
fn test_nv_device_nodes_exist_under_containall() {
    require_unprivileged();
    let script = "ls /dev /dev/nvidia-caps; for d in /dev/nvidia0 /dev/nvidiactl /dev/nvidia-uvm \
                  /dev/nvidia-caps/nvidia-cap1; do test -c $d && echo chr:$d; done; \
                  echo hello > /dev/nvidia0 && echo writable";
    for flag in ["--containall", "--contain"] {
        let out = gpu_sifr(&["exec", flag, "--nv", &busybox(), "sh", "-c", script], &[]);
        let text = ok(&out);
        for d in [
            "nvidia0",
            "nvidiactl",
            "nvidia-uvm",
            "nvidia-uvm-tools",
            "nvidia-caps",
            "nvidia-cap1",
        ] {
            assert!(text.lines().any(|l| l == d), "{flag}: {d} missing: {text}");
        }
        for d in [
            "nvidia0",
            "nvidiactl",
            "nvidia-uvm",
            "nvidia-caps/nvidia-cap1",
        ] {
            assert!(text.contains(&format!("chr:/dev/{d}")), "{flag}: {text}");
        }
        assert!(text.contains("writable"), "{text}");
    }
    let out = gpu_sifr(&["exec", "--containall", &busybox(), "ls", "/dev"], &[]);
    assert!(!ok(&out).contains("nvidia"), "no --nv, no GPU devices");
}

/// `--rocm`: the libraries of rocmliblist.conf, rocm-smi, /dev/kfd and /dev/dri.
#[test]
fn test_rocm_binds_libraries_programs_and_devices() {
    require_unprivileged();
    let script = "ls /.singularity.d/libs /dev /dev/dri; rocm-smi; test -c /dev/kfd && echo kfd";
    let out = gpu_sifr(
        &[
            "exec",
            "--containall",
            "--rocm",
            &busybox(),
            "sh",
            "-c",
            script,
        ],
        &[],
    );
    let text = ok(&out);
    for name in [
        "libamdocl64.so",
        "libamdcomgr64.so.2",
        "kfd",
        "dri",
        "renderD128",
        "card0",
    ] {
        assert!(text.lines().any(|l| l == name), "{name} missing: {text}");
    }
    assert!(!text.contains("libcuda"), "{text}");
    assert!(text.contains("GPU[0] : Fake ROCm GPU"), "{text}");
    assert!(text.lines().any(|l| l == "kfd"), "{text}");
}

/// Nothing found (an `ldconfig path` whose cache is empty, and no nvidia-smi on PATH):
/// Apptainer's warnings, and the container runs. The same sifr.conf with the real ldconfig
/// finds the libraries: `ldconfig path` is what is asked.
#[test]
fn test_nothing_found_warns_and_the_container_runs() {
    require_unprivileged();
    let d = tempdir();
    let empty = d.path().join("empty-ldconfig");
    std::fs::write(&empty, "#!/bin/sh\necho '0 libs found in cache'\n").expect("write");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&empty, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let c = conf(d.path(), &format!("ldconfig path = {}\n", empty.display()));
    let plain_path = std::env::var("PATH").unwrap_or_default();
    let out = gpu_sifr(
        &["-c", &c, "exec", "--nv", &busybox(), "echo", "ran"],
        &[("PATH", &plain_path)],
    );
    assert_eq!(ok(&out), "ran\n");
    let err = stderr(&out);
    assert!(
        err.contains("WARNING: Could not find any nv files on this host!"),
        "{err}"
    );
    assert!(
        err.contains("WARNING: Could not find any nv libraries on this host!"),
        "{err}"
    );
    let real = ["/sbin/ldconfig", "/usr/sbin/ldconfig"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("ldconfig");
    let c = conf(d.path(), &format!("ldconfig path = {real}\n"));
    let out = gpu_sifr(
        &[
            "-c",
            &c,
            "exec",
            "--nv",
            &busybox(),
            "ls",
            "/.singularity.d/libs",
        ],
        &[],
    );
    assert!(ok(&out).contains("libcuda.so.1"));
}

/// `always use nv`/`always use rocm` set the GPUs up without the flag; `--no-nv`,
/// `--no-rocm` and their variables turn that off; `user bind control = no` leaves the
/// libraries out with Apptainer's warnings.
#[test]
fn test_always_use_nv_rocm_and_no_nv() {
    require_unprivileged();
    let d = tempdir();
    let c = conf(d.path(), "always use nv = yes\nalways use rocm = yes\n");
    let libs = |extra: &[&str], envs: &[(&str, &str)]| {
        let mut args = vec!["-c", c.as_str(), "exec"];
        args.extend_from_slice(extra);
        let img = busybox();
        args.extend_from_slice(&[&img, "sh", "-c", "ls /.singularity.d/libs; true"]);
        ok(&gpu_sifr(&args, envs))
    };
    let both = libs(&[], &[]);
    assert!(
        both.contains("libcuda.so.1") && both.contains("libamdocl64.so"),
        "{both}"
    );
    let no_nv = libs(&["--no-nv"], &[]);
    assert!(
        !no_nv.contains("libcuda.so.1") && no_nv.contains("libamdocl64.so"),
        "{no_nv}"
    );
    let none = libs(&["--no-nv", "--no-rocm"], &[]);
    assert!(
        !none.contains("libcuda") && !none.contains("libamd"),
        "{none}"
    );
    let env_off = libs(
        &[],
        &[("APPTAINER_NO_NV", "1"), ("SINGULARITY_ROCM_OFF", "1")],
    );
    assert!(
        !env_off.contains("libcuda") && !env_off.contains("libamd"),
        "{env_off}"
    );

    let c = conf(d.path(), "user bind control = no\n");
    let out = gpu_sifr(
        &[
            "-c",
            &c,
            "exec",
            "--nv",
            &busybox(),
            "sh",
            "-c",
            "ls /.singularity.d/libs; true",
        ],
        &[],
    );
    assert!(!ok(&out).contains("libcuda"));
    let err = stderr(&out);
    assert!(
        err.contains(
            "Ignoring libraries bind request: user bind control disabled by system administrator"
        ),
        "{err}"
    );
}

/// `--nvccli` (and `use nvidia-container-cli = yes` with `--nv`): one line and exit 255,
/// whether nvidia-container-cli is missing or installed (sifr does not drive it); nothing
/// runs.
#[test]
fn test_nvccli_is_refused_in_one_line() {
    require_unprivileged();
    let out = gpu_sifr(&["exec", "--nvccli", &busybox(), "echo", "ran"], &[]);
    assert_eq!(out.status.code(), Some(255));
    assert_one_line_error(&out, "needs nvidia-container-cli, which is not installed");
    assert!(out.stdout.is_empty());
    let d = tempdir();
    let cli = fake().join("bin/nvidia-smi");
    let c = conf(
        d.path(),
        &format!("nvidia-container-cli path = {}\n", cli.display()),
    );
    let out = gpu_sifr(
        &["-c", &c, "exec", "--nvccli", &busybox(), "echo", "ran"],
        &[],
    );
    assert_eq!(out.status.code(), Some(255));
    assert_one_line_error(&out, "sifr does not drive nvidia-container-cli");
    let c = conf(
        d.path(),
        &format!(
            "use nvidia-container-cli = yes\nnvidia-container-cli path = {}\n",
            cli.display()
        ),
    );
    let out = gpu_sifr(&["-c", &c, "exec", "--nv", &busybox(), "echo", "ran"], &[]);
    assert_eq!(out.status.code(), Some(255));
    assert_one_line_error(&out, "use nvidia-container-cli = yes");
}

/// `--contain-libs` (Apptainer's hidden `--containlibs`) binds the given files into
/// /.singularity.d/libs, with or without a GPU; a missing one is one line; a `-B` into
/// /.singularity.d/libs joins the libraries of `--nv`.
#[test]
fn test_contain_libs_binds_the_given_libraries() {
    require_unprivileged();
    let lib = fake().join("lib/libamdocl64.so");
    let out = gpu_sifr(
        &[
            "exec",
            "--containlibs",
            &lib.display().to_string(),
            &busybox(),
            "ls",
            "/.singularity.d/libs",
        ],
        &[],
    );
    assert_eq!(ok(&out), "libamdocl64.so\n");
    let out = gpu_sifr(
        &["exec", &busybox(), "ls", "/.singularity.d/libs"],
        &[("APPTAINER_CONTAINLIBS", &lib.display().to_string())],
    );
    assert_eq!(ok(&out), "libamdocl64.so\n");
    let out = gpu_sifr(
        &[
            "exec",
            "--contain-libs",
            "/nonexistent/libx.so",
            &busybox(),
            "echo",
            "ran",
        ],
        &[],
    );
    assert_one_line_error(&out, "--contain-libs /nonexistent/libx.so: no such file");
    // A user bind into /.singularity.d/libs joins the libraries of --nv, as in Apptainer.
    let bind = format!("{}:/.singularity.d/libs/libextra.so", lib.display());
    let out = gpu_sifr(
        &[
            "exec",
            "--nv",
            "-B",
            &bind,
            &busybox(),
            "ls",
            "/.singularity.d/libs",
        ],
        &[],
    );
    let text = ok(&out);
    assert!(
        text.lines().any(|l| l == "libextra.so") && text.lines().any(|l| l == "libcuda.so.1"),
        "{text}"
    );
}

/// `sifr build --nv`: %post runs with the host libraries in /.singularity.d/libs, as in
/// Apptainer (which sets APPTAINER_NV for the build's containers).
#[test]
fn test_build_nv_binds_the_libraries_for_post() {
    require_unprivileged();
    let d = tempdir();
    let def = d.path().join("s.def");
    std::fs::write(
        &def,
        format!(
            "Bootstrap: localimage\nFrom: {}\n\n%post\n    ls /.singularity.d/libs > /libs.txt\n",
            busybox()
        ),
    )
    .expect("write");
    let sif = d.path().join("gpu.sif").display().to_string();
    ok(&gpu_sifr(
        &["build", "--nv", &sif, &def.display().to_string()],
        &[],
    ));
    let out = gpu_sifr(
        &[
            "exec",
            &sif,
            "sh",
            "-c",
            "cat /libs.txt; echo ---; ls /.singularity.d/libs; \
             if test -e /usr/bin/nvidia-smi; then echo smi-left-in-image; fi",
        ],
        &[],
    );
    let text = ok(&out);
    let (during, after) = text.split_once("---\n").expect("two parts");
    assert!(during.lines().any(|l| l == "libcuda.so.1"), "{text}");
    // Bound for the build, not copied into the image; no mount point left either.
    assert_eq!(after, "", "{text}");
}
