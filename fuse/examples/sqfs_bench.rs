//! Micro-benchmark of the squashfs reader, and a tiny mount tool for FUSE comparisons.
//!
//! `sqfs_bench IMAGE [OFFSET]`: open, full walk (readdir + stat), read every byte of every
//! file, 2000 random 4 KiB reads in files > 1 MiB; prints times and peak RSS.
//! `sqfs_bench mount IMAGE MOUNTPOINT [OFFSET]`: mount with the FUSE server until stdin closes
//! (run inside `unshare -Urm`).

use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use sifr_fuse::{FileType, MountOptions, SquashFs, mount_image};

fn status(key: &str) -> String {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn walk(fs: &SquashFs, dir: u32, files: &mut Vec<(u32, u64)>, n: &mut u64) -> Result<(), String> {
    let mut kids = Vec::new();
    fs.readdir(dir, 0, &mut |e| {
        kids.push((e.ino, e.kind));
        true
    })
    .map_err(|e| e.to_string())?;
    for (ino, kind) in kids {
        let a = fs.stat(ino).map_err(|e| e.to_string())?;
        *n += 1;
        match kind {
            FileType::Directory => walk(fs, ino, files, n)?,
            FileType::Regular => files.push((ino, a.size)),
            _ => {}
        }
    }
    Ok(())
}

fn bench(img: &Path, off: u64) -> Result<(), String> {
    let f = File::open(img).map_err(|e| format!("{}: {e}", img.display()))?;
    let rss0 = status("VmRSS:");
    let t = Instant::now();
    let fs = SquashFs::open(f, off).map_err(|e| e.to_string())?;
    println!(
        "open: {:?} (RSS before {rss0}, after {})",
        t.elapsed(),
        status("VmRSS:")
    );
    let t = Instant::now();
    let (mut files, mut n) = (Vec::new(), 0);
    walk(&fs, fs.root(), &mut files, &mut n)?;
    println!("walk (readdir + stat): {n} entries in {:?}", t.elapsed());
    files.sort();
    files.dedup();
    let t = Instant::now();
    let mut buf = vec![0u8; 128 << 10];
    let mut total = 0u64;
    for &(ino, size) in &files {
        let mut off = 0;
        while off < size {
            let got = fs.read(ino, off, &mut buf).map_err(|e| e.to_string())?;
            if got == 0 {
                break;
            }
            off += got as u64;
        }
        total += off;
    }
    let el = t.elapsed();
    println!(
        "read all: {} files, {} MiB in {:?} ({:.0} MiB/s); peak RSS {}",
        files.len(),
        total >> 20,
        el,
        total as f64 / (1 << 20) as f64 / el.as_secs_f64(),
        status("VmHWM:")
    );
    let big: Vec<_> = files.iter().filter(|f| f.1 > 1 << 20).collect();
    if !big.is_empty() {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut small = [0u8; 4096];
        let t = Instant::now();
        for _ in 0..2000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let (ino, size) = *big[(x % big.len() as u64) as usize];
            fs.read(ino, (x >> 20) % (size - 4096), &mut small)
                .map_err(|e| e.to_string())?;
        }
        println!(
            "2000 random 4 KiB reads: {:.1} us/read",
            t.elapsed().as_secs_f64() * 1e6 / 2000.0
        );
    }
    let s = fs.cache_stats();
    println!(
        "caches: data {} / {} bytes, meta {} / {} bytes",
        s.data_bytes, s.data_capacity, s.meta_bytes, s.meta_capacity
    );
    Ok(())
}

fn mount(img: &Path, mnt: &Path, off: u64) -> Result<(), String> {
    let fs = SquashFs::open(File::open(img).map_err(|e| e.to_string())?, off)
        .map_err(|e| e.to_string())?;
    let h = mount_image(Arc::new(fs), mnt, &MountOptions::default()).map_err(|e| e.to_string())?;
    eprintln!(
        "mounted {} on {}; close stdin to unmount",
        img.display(),
        mnt.display()
    );
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    h.unmount_and_join().map_err(|e| e.to_string())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let off = |i: usize| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(0);
    let r = match args.first().map(String::as_str) {
        Some("mount") if args.len() >= 3 => mount(Path::new(&args[1]), Path::new(&args[2]), off(3)),
        Some(img) if img != "mount" => bench(Path::new(img), off(1)),
        _ => Err(
            "usage: sqfs_bench IMAGE [OFFSET] | sqfs_bench mount IMAGE MOUNTPOINT [OFFSET]".into(),
        ),
    };
    if let Err(e) = r {
        eprintln!("sqfs_bench: {e}");
        std::process::exit(1);
    }
}
