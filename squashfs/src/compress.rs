//! Block decompression for every squashfs compressor (gzip, lzma, lzo, xz, lz4, zstd), each
//! behind its own cargo feature. Output always goes into a caller-sized buffer, so a hostile
//! block can never make us allocate more than that buffer.

use super::error::{Result, SqfsError};

/// Most memory liblzma may use to decode one block (squashfs dictionaries are at most one
/// block, 1 MiB, so this is generous; a header asking for more is rejected).
#[cfg(feature = "xz")]
const LZMA_MEMLIMIT: u64 = 64 << 20;

/// The compressor named by the superblock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compressor {
    /// zlib-wrapped deflate (id 1).
    Gzip,
    /// Legacy lzma "alone" streams (id 2; squashfs-tools only, the kernel never supported it).
    Lzma,
    /// LZO1X (id 3).
    Lzo,
    /// xz container streams (id 4).
    Xz,
    /// Raw LZ4 blocks (id 5).
    Lz4,
    /// zstd frames (id 6).
    Zstd,
}

impl Compressor {
    /// Maps the superblock id; fails for unknown ids and for compressors left out of this build.
    pub(crate) fn from_id(id: u16) -> Result<Self> {
        let c = match id {
            1 => Compressor::Gzip,
            2 => Compressor::Lzma,
            3 => Compressor::Lzo,
            4 => Compressor::Xz,
            5 => Compressor::Lz4,
            6 => Compressor::Zstd,
            _ => return Err(SqfsError::UnknownCompressor(id)),
        };
        if !c.enabled() {
            return Err(SqfsError::CompressorDisabled(c.name()));
        }
        Ok(c)
    }

    /// The name mksquashfs uses (`-comp NAME`).
    pub fn name(self) -> &'static str {
        match self {
            Compressor::Gzip => "gzip",
            Compressor::Lzma => "lzma",
            Compressor::Lzo => "lzo",
            Compressor::Xz => "xz",
            Compressor::Lz4 => "lz4",
            Compressor::Zstd => "zstd",
        }
    }

    fn enabled(self) -> bool {
        match self {
            Compressor::Gzip => cfg!(feature = "gzip"),
            Compressor::Lzma | Compressor::Xz => cfg!(feature = "xz"),
            Compressor::Lzo => cfg!(feature = "lzo"),
            Compressor::Lz4 => cfg!(feature = "lz4"),
            Compressor::Zstd => cfg!(feature = "zstd"),
        }
    }

    /// Decompresses `src` (read from image offset `pos`, used in errors) into `dst` and returns
    /// the number of bytes produced. Output that would not fit in `dst` is an error.
    pub(crate) fn decompress(self, src: &[u8], dst: &mut [u8], pos: u64) -> Result<usize> {
        let r = match self {
            Compressor::Gzip => gzip(src, dst),
            Compressor::Lzma => lzma(src, dst, false),
            Compressor::Xz => lzma(src, dst, true),
            Compressor::Lzo => lzo(src, dst),
            Compressor::Lz4 => lz4(src, dst),
            Compressor::Zstd => zstd(src, dst),
        };
        r.map_err(|reason| SqfsError::Decompress {
            comp: self.name(),
            pos,
            reason,
        })
    }
}

type DResult = std::result::Result<usize, String>;

#[cfg(feature = "gzip")]
fn gzip(src: &[u8], dst: &mut [u8]) -> DResult {
    use std::cell::RefCell;
    // libdeflate's decompressor keeps ~10 KiB of tables; one per thread avoids re-allocating.
    thread_local! {
        static D: RefCell<libdeflater::Decompressor> = RefCell::new(libdeflater::Decompressor::new());
    }
    D.with(|d| d.borrow_mut().zlib_decompress(src, dst))
        .map_err(|e| e.to_string())
}
#[cfg(not(feature = "gzip"))]
fn gzip(_: &[u8], _: &mut [u8]) -> DResult {
    Err("gzip support not compiled in".into())
}

#[cfg(feature = "xz")]
fn lzma(src: &[u8], dst: &mut [u8], xz: bool) -> DResult {
    use liblzma::stream::{Action, Status, Stream};
    let mut s = if xz {
        Stream::new_stream_decoder(LZMA_MEMLIMIT, 0)
    } else {
        Stream::new_lzma_decoder(LZMA_MEMLIMIT)
    }
    .map_err(|e| e.to_string())?;
    // All input and all output space are given at once, so each call either finishes or runs
    // out of output; a few rounds cover the decoder returning early.
    for _ in 0..4 {
        let (i, o) = (s.total_in() as usize, s.total_out() as usize);
        let (Some(inp), Some(out)) = (src.get(i..), dst.get_mut(o..)) else {
            return Err("decoder position out of range".into());
        };
        match s
            .process(inp, out, Action::Finish)
            .map_err(|e| e.to_string())?
        {
            Status::StreamEnd => return Ok(s.total_out() as usize),
            _ if s.total_out() as usize == dst.len() => {
                return Err(format!("output exceeds {} bytes", dst.len()));
            }
            _ => {}
        }
    }
    Err("stream does not end".into())
}
#[cfg(not(feature = "xz"))]
fn lzma(_: &[u8], _: &mut [u8], _: bool) -> DResult {
    Err("xz/lzma support not compiled in".into())
}

#[cfg(feature = "lzo")]
fn lzo(src: &[u8], dst: &mut [u8]) -> DResult {
    lzokay::decompress::decompress(src, dst).map_err(|e| e.to_string())
}
#[cfg(not(feature = "lzo"))]
fn lzo(_: &[u8], _: &mut [u8]) -> DResult {
    Err("lzo support not compiled in".into())
}

#[cfg(feature = "lz4")]
fn lz4(src: &[u8], dst: &mut [u8]) -> DResult {
    lz4_flex::block::decompress_into(src, dst).map_err(|e| e.to_string())
}
#[cfg(not(feature = "lz4"))]
fn lz4(_: &[u8], _: &mut [u8]) -> DResult {
    Err("lz4 support not compiled in".into())
}

#[cfg(feature = "zstd")]
fn zstd(src: &[u8], dst: &mut [u8]) -> DResult {
    use std::cell::RefCell;
    // A zstd decompression context is expensive to build; keep one per thread.
    thread_local! {
        static D: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
    }
    D.with(|d| {
        let mut d = d.borrow_mut();
        if d.is_none() {
            *d = Some(zstd::bulk::Decompressor::new().map_err(|e| e.to_string())?);
        }
        match d.as_mut() {
            Some(d) => d.decompress_to_buffer(src, dst).map_err(|e| e.to_string()),
            None => Err("no zstd context".into()),
        }
    })
}
#[cfg(not(feature = "zstd"))]
fn zstd(_: &[u8], _: &mut [u8]) -> DResult {
    Err("zstd support not compiled in".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_from_id() {
        if cfg!(feature = "gzip") {
            assert_eq!(Compressor::from_id(1).ok(), Some(Compressor::Gzip));
        } else {
            assert!(matches!(
                Compressor::from_id(1),
                Err(SqfsError::CompressorDisabled("gzip"))
            ));
        }
        if cfg!(feature = "zstd") {
            assert_eq!(Compressor::from_id(6).ok(), Some(Compressor::Zstd));
        } else {
            assert!(matches!(
                Compressor::from_id(6),
                Err(SqfsError::CompressorDisabled("zstd"))
            ));
        }
        assert!(matches!(
            Compressor::from_id(0),
            Err(SqfsError::UnknownCompressor(0))
        ));
        assert!(matches!(
            Compressor::from_id(7),
            Err(SqfsError::UnknownCompressor(7))
        ));
    }

    #[test]
    fn test_garbage_is_an_error_for_every_compressor() {
        let garbage: Vec<u8> = (0..200u32)
            .map(|i| (i.wrapping_mul(97) ^ 0x5a) as u8)
            .collect();
        for id in 1..=6 {
            let Ok(c) = Compressor::from_id(id) else {
                continue;
            };
            let mut out = vec![0u8; 8192];
            for len in [0, 1, 3, 17, garbage.len()] {
                // Must return (Ok or Err), never panic; garbage that happens to decode is fine
                // as long as it stays within the buffer.
                if let Ok(n) = c.decompress(&garbage[..len], &mut out, 0) {
                    assert!(n <= out.len());
                }
            }
        }
    }

    #[cfg(feature = "gzip")]
    #[test]
    fn test_gzip_overflow_is_error() {
        // zlib stream of 100 zero bytes, made with libdeflate itself.
        let mut c = libdeflater::Compressor::new(libdeflater::CompressionLvl::default());
        let mut z = vec![0u8; 256];
        let n = c.zlib_compress(&[0u8; 100], &mut z).expect("compress");
        let mut out = [0u8; 100];
        assert_eq!(
            Compressor::Gzip.decompress(&z[..n], &mut out, 0).ok(),
            Some(100)
        );
        let mut small = [0u8; 50];
        assert!(Compressor::Gzip.decompress(&z[..n], &mut small, 7).is_err());
    }
}
