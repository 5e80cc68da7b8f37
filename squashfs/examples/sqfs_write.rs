//! Writes a squashfs image with sifr's writer, optionally timing mksquashfs on the same tree.
//!
//! `sqfs_write SRC OUT [-comp C] [-b BYTES] [-level N] [-processors N] [-tailends]
//!  [-no-fragments] [-no-duplicates] [-no-xattrs] [-all-root] [-reproducible] [-runs N]
//!  [-compare]`
//!
//! Prints wall time, CPU time and peak RSS of each run. With `-compare` it also runs
//! `mksquashfs SRC OUT.mksq -comp C -b BYTES -processors N -noappend` (same settings) after
//! each of ours and prints the median of both and the ratio. Run as root for trees with
//! root-only files (like a debootstrap rootfs).

use std::fs::File;
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Instant;

use sifr_squashfs::{Compressor, WriteOptions, Writer, XattrMode};

fn usage() -> ExitCode {
    eprintln!(
        "usage: sqfs_write SRC OUT [-comp gzip|xz|zstd|lz4|lzo] [-b BYTES] [-level N] \
         [-processors N] [-tailends] [-no-fragments] [-no-duplicates] [-no-xattrs] [-all-root] \
         [-reproducible] [-runs N] [-compare]"
    );
    ExitCode::from(2)
}

fn rusage_children() -> (f64, i64) {
    // SAFETY: getrusage writes into the zeroed struct we own.
    let mut r: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to an owned rusage.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut r) };
    let cpu = r.ru_utime.tv_sec as f64
        + r.ru_utime.tv_usec as f64 / 1e6
        + r.ru_stime.tv_sec as f64
        + r.ru_stime.tv_usec as f64 / 1e6;
    (cpu, r.ru_maxrss)
}

fn rusage_self() -> (f64, i64) {
    // SAFETY: as above.
    let mut r: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to an owned rusage.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut r) };
    let cpu = r.ru_utime.tv_sec as f64
        + r.ru_utime.tv_usec as f64 / 1e6
        + r.ru_stime.tv_sec as f64
        + r.ru_stime.tv_usec as f64 / 1e6;
    (cpu, r.ru_maxrss)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        return usage();
    }
    let (src, out) = (PathBuf::from(&args[0]), PathBuf::from(&args[1]));
    let mut o = WriteOptions::default();
    let (mut runs, mut compare, mut comp_name) = (1usize, false, "gzip".to_string());
    let mut it = args[2..].iter();
    while let Some(a) = it.next() {
        let mut num = || it.next().and_then(|v| v.parse::<u64>().ok());
        match a.as_str() {
            "-comp" => {
                let Some(c) = it.next() else { return usage() };
                comp_name = c.clone();
                o.compressor = match c.as_str() {
                    "gzip" => Compressor::Gzip,
                    "xz" => Compressor::Xz,
                    "zstd" => Compressor::Zstd,
                    "lz4" => Compressor::Lz4,
                    "lzo" => Compressor::Lzo,
                    _ => return usage(),
                };
            }
            "-b" => match num() {
                Some(n) => o.block_size = n as u32,
                None => return usage(),
            },
            "-level" => match num() {
                Some(n) => o.level = Some(n as u32),
                None => return usage(),
            },
            "-processors" => match num() {
                Some(n) => o.threads = n as usize,
                None => return usage(),
            },
            "-runs" => match num() {
                Some(n) => runs = n.max(1) as usize,
                None => return usage(),
            },
            "-tailends" => o.tail_ends = true,
            "-no-fragments" => o.fragments = false,
            "-no-duplicates" => o.duplicates = false,
            "-no-xattrs" => o.xattrs = XattrMode::None,
            "-all-root" => o.all_root = true,
            "-reproducible" => o.reproducible = true,
            "-compare" => compare = true,
            _ => return usage(),
        }
    }
    let threads = o.threads;
    let (bs, tail, frags) = (o.block_size, o.tail_ends, o.fragments);
    let writer = match Writer::new(o) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("sqfs_write: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for run in 0..runs {
        let load = loadavg();
        let (cpu0, _) = rusage_self();
        let t = Instant::now();
        let res = File::create(&out)
            .map_err(|e| e.to_string())
            .and_then(|mut f| writer.write_dir(&src, &mut f).map_err(|e| e.to_string()));
        let wall = t.elapsed().as_secs_f64();
        let (cpu1, rss) = rusage_self();
        let st = match res {
            Ok(st) => st,
            Err(e) => {
                eprintln!("sqfs_write: {e}");
                return ExitCode::FAILURE;
            }
        };
        println!(
            "run {run}: sifr      {wall:7.2}s wall {:7.2}s cpu  peak rss {} KiB  {} bytes  \
             ({} inodes, {} files, {} dups, {} frags)  load {load}",
            cpu1 - cpu0,
            rss,
            st.bytes_used,
            st.inodes,
            st.files,
            st.duplicates,
            st.fragments
        );
        ours.push(wall);
        if compare {
            let mut mk = out.clone().into_os_string();
            mk.push(".mksq");
            let mut cmd = Command::new("mksquashfs");
            cmd.arg(&src)
                .arg(&mk)
                .args(["-comp", &comp_name, "-b", &bs.to_string(), "-noappend"])
                .args(["-no-progress", "-quiet"]);
            if threads > 0 {
                cmd.args(["-processors", &threads.to_string()]);
            }
            if tail {
                cmd.arg("-tailends");
            }
            if !frags {
                cmd.arg("-no-fragments");
            }
            let load = loadavg();
            let (c0, _) = rusage_children();
            let t = Instant::now();
            let ok = cmd.status().is_ok_and(|s| s.success());
            let wall = t.elapsed().as_secs_f64();
            let (c1, rss) = rusage_children();
            if !ok {
                eprintln!("sqfs_write: mksquashfs failed");
                return ExitCode::FAILURE;
            }
            let size = std::fs::metadata(&mk).map(|m| m.len()).unwrap_or(0);
            println!(
                "run {run}: mksquashfs {wall:7.2}s wall {:7.2}s cpu  peak rss {rss} KiB  {size} \
                 bytes (file)  load {load}",
                c1 - c0
            );
            theirs.push(wall);
        }
    }
    let m = median(&mut ours);
    if compare {
        let t = median(&mut theirs);
        println!(
            "median of {runs}: sifr {m:.2}s, mksquashfs {t:.2}s, ratio {:.2}",
            m / t
        );
    } else {
        println!("median of {runs}: sifr {m:.2}s");
    }
    ExitCode::SUCCESS
}
