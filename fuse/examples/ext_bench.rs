//! Micro-benchmark of the ext2/3/4 reader (`ExtFs`), and a tiny mount tool for FUSE
//! comparisons.
//!
//! `ext_bench IMAGE [OFFSET]`: open, full walk (readdir with attributes), read every byte of
//! every file in 1 MiB requests, 2000 random 4 KiB reads in files > 1 MiB; prints times,
//! the inode-table size and peak RSS.
//! `ext_bench mount IMAGE MOUNTPOINT [OFFSET]`: mount with the FUSE server until stdin closes
//! (run inside `unshare -Urm`).

use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use sifr_fuse::{ExtFs, FileType, MountOptions, mount_image};

fn status(key: &str) -> String {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn walk(fs: &ExtFs, dir: u32, files: &mut Vec<(u32, u64)>, n: &mut u64) -> Result<(), String> {
    let mut kids = Vec::new();
    fs.readdir(dir, 0, &mut |e, a| {
        kids.push((e.ino, e.kind, a.size));
        true
    })
    .map_err(|e| e.to_string())?;
    for (ino, kind, size) in kids {
        *n += 1;
        match kind {
            FileType::Directory => walk(fs, ino, files, n)?,
            FileType::Regular => files.push((ino, size)),
            _ => {}
        }
    }
    Ok(())
}

fn bench(img: &Path, off: u64) -> Result<(), String> {
    let f = File::open(img).map_err(|e| format!("{}: {e}", img.display()))?;
    let rss0 = status("VmRSS:");
    let t = Instant::now();
    let fs = ExtFs::open(f, off).map_err(|e| e.to_string())?;
    println!(
        "open: {:?} (RSS before {rss0}, after {})",
        t.elapsed(),
        status("VmRSS:")
    );
    let t = Instant::now();
    let (mut files, mut n) = (Vec::new(), 0);
    walk(&fs, fs.root(), &mut files, &mut n)?;
    println!(
        "walk (readdir with attributes): {n} entries in {:?}; {} numbers known, RSS {}",
        t.elapsed(),
        fs.known_inodes(),
        status("VmRSS:")
    );
    let t = Instant::now();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    for &(ino, size) in &files {
        let mut off = 0;
        while off < size {
            let k = fs.read(ino, off, &mut buf).map_err(|e| e.to_string())?;
            if k == 0 {
                return Err(format!("inode {ino}: short read at {off} of {size}"));
            }
            off += k as u64;
        }
        total += size;
    }
    let dt = t.elapsed();
    println!(
        "read all: {} files, {total} bytes in {dt:?} ({:.0} MB/s)",
        files.len(),
        total as f64 / dt.as_secs_f64() / 1e6
    );
    let big: Vec<_> = files.iter().filter(|f| f.1 > 1 << 20).collect();
    if !big.is_empty() {
        let t = Instant::now();
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut b = [0u8; 4096];
        for _ in 0..2000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let (ino, size) = *big[(x % big.len() as u64) as usize];
            fs.read(ino, (x >> 8) % size, &mut b)
                .map_err(|e| e.to_string())?;
        }
        println!(
            "2000 random 4 KiB reads in {} files > 1 MiB: {:?}",
            big.len(),
            t.elapsed()
        );
    }
    println!("peak RSS {}", status("VmHWM:"));
    Ok(())
}

fn mount(img: &Path, mnt: &Path, off: u64) -> Result<(), String> {
    let fs =
        ExtFs::open(File::open(img).map_err(|e| e.to_string())?, off).map_err(|e| e.to_string())?;
    let h = mount_image(Arc::new(fs), mnt, &MountOptions::default()).map_err(|e| e.to_string())?;
    println!("mounted on {}; close stdin to unmount", mnt.display());
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
            "usage: ext_bench IMAGE [OFFSET] | ext_bench mount IMAGE MOUNTPOINT [OFFSET]".into(),
        ),
    };
    if let Err(e) = r {
        eprintln!("ext_bench: {e}");
        std::process::exit(1);
    }
}
