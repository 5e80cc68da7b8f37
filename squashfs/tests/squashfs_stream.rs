//! Phase A: memory stays flat while streaming a file much larger than the cache budgets, the
//! checkpoint index of big block lists works, and many threads can read one image at once.

mod common;

use std::fs::File;
use std::sync::Arc;

use common::*;
use sifr_squashfs::{Options, SquashFs};

fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS line")
}

#[test]
fn test_stream_big_file_with_small_caches() {
    const SIZE: usize = 64 << 20;
    let dir = tempdir();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).expect("mkdir");
    let data = bytes(42, SIZE + 777, true);
    std::fs::write(src.join("big"), &data).expect("write");
    let img = dir.path().join("big.sqfs");
    // 4 KiB blocks: 16k+ entries in the block list, so the checkpoint index is used.
    mksquashfs(&src, &img, "gzip", &["-b", "4096", "-no-fragments"]);
    let opts = Options {
        data_cache_bytes: 1 << 20,
        meta_cache_bytes: 256 << 10,
        index_cache_bytes: 64 << 10,
        ..Options::default()
    };
    let fs = Arc::new(
        SquashFs::open_with(File::open(&img).expect("open"), 0, opts).expect("open squashfs"),
    );
    let ino = fs
        .lookup(fs.root(), b"big")
        .expect("lookup")
        .expect("big exists");
    let rss0 = rss_kib();
    let mut buf = vec![0u8; 128 << 10];
    let mut off = 0usize;
    let mut max_data = 0;
    while off < data.len() {
        let n = fs.read(ino, off as u64, &mut buf).expect("read");
        assert!(n > 0);
        assert!(buf[..n] == data[off..off + n], "content differs at {off}");
        off += n;
        let st = fs.cache_stats();
        assert!(
            st.data_bytes <= st.data_capacity,
            "data cache {} > {}",
            st.data_bytes,
            st.data_capacity
        );
        assert!(
            st.meta_bytes <= st.meta_capacity,
            "meta cache {} > {}",
            st.meta_bytes,
            st.meta_capacity
        );
        max_data = max_data.max(st.data_bytes);
    }
    assert!(max_data > 0, "the data cache was used");
    let grown = rss_kib().saturating_sub(rss0);
    eprintln!(
        "streamed {} MiB; RSS grew {grown} KiB; peak data cache {max_data} bytes",
        SIZE >> 20
    );
    assert!(grown < 16 << 10, "RSS grew by {grown} KiB while streaming");

    // Random access deep into the file (block index checkpoints), from 4 threads at once.
    let data = Arc::new(data);
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let (fs, data) = (Arc::clone(&fs), Arc::clone(&data));
            std::thread::spawn(move || {
                let mut x = 0x1234_5678_9abc_def1u64 ^ t;
                let mut buf = vec![0u8; 10_000];
                for _ in 0..300 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let off = (x % data.len() as u64) as usize;
                    let n = fs.read(ino, off as u64, &mut buf).expect("read");
                    assert_eq!(n, buf.len().min(data.len() - off));
                    assert!(
                        buf[..n] == data[off..off + n],
                        "thread {t}: content differs at {off}"
                    );
                }
            })
        })
        .collect();
    for t in threads {
        assert!(t.join().is_ok(), "reader thread panicked");
    }
}
