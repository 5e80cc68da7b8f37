//! Block compression for the writer (gzip, xz, zstd, lz4, lzo), each behind the same cargo
//! feature as its decompressor, plus the compressor-options block mksquashfs writes.
//! One `Encoder` per thread: it keeps the library's context between blocks.

// A build without any compressor can write nothing; keep it compiling quietly.
#![cfg_attr(
    not(any(
        feature = "gzip",
        feature = "xz",
        feature = "zstd",
        feature = "lz4",
        feature = "lzo"
    )),
    allow(unused, unreachable_code)
)]

use super::error::{WriteError, WriteResult};
use crate::Compressor;

/// mksquashfs' default gzip level (zlib's best).
pub(crate) const GZIP_DEFAULT: u32 = 9;
/// xz preset used when none is given (xz's own default).
pub(crate) const XZ_DEFAULT: u32 = 6;
/// mksquashfs' default zstd level.
pub(crate) const ZSTD_DEFAULT: u32 = 15;

/// The level to use for `comp`: `level` checked against the range the compressor (and
/// unsquashfs, which validates the options block) accepts, or the mksquashfs default.
pub(crate) fn resolve_level(comp: Compressor, level: Option<u32>) -> WriteResult<u32> {
    let (range, default) = match comp {
        Compressor::Gzip => (1..=9, GZIP_DEFAULT),
        Compressor::Xz => (0..=9, XZ_DEFAULT),
        Compressor::Zstd => (1..=22, ZSTD_DEFAULT),
        Compressor::Lz4 | Compressor::Lzo => {
            return match level {
                None => Ok(0),
                Some(l) => Err(WriteError::Options(format!(
                    "{} has no compression levels here (got {l}); leave the level unset",
                    comp.name()
                ))),
            };
        }
        Compressor::Lzma => {
            return Err(WriteError::Options(
                "the legacy lzma compressor cannot be written (the kernel never supported it); \
                 use xz"
                    .into(),
            ));
        }
    };
    let l = level.unwrap_or(default);
    if !range.contains(&l) {
        return Err(WriteError::Options(format!(
            "{} level {l} is out of range {}..={}",
            comp.name(),
            range.start(),
            range.end()
        )));
    }
    Ok(l)
}

/// The compressor-options block mksquashfs writes after the superblock, or None when the
/// settings are the defaults (then mksquashfs writes none). lz4 always has one: the kernel
/// refuses lz4 images without it.
pub(crate) fn options_block(comp: Compressor, level: u32) -> Option<Vec<u8>> {
    match comp {
        Compressor::Gzip if level != GZIP_DEFAULT => {
            let mut b = level.to_le_bytes().to_vec();
            b.extend_from_slice(&15u16.to_le_bytes()); // window bits
            b.extend_from_slice(&0u16.to_le_bytes()); // strategies: default
            Some(b)
        }
        Compressor::Zstd if level != ZSTD_DEFAULT => Some(level.to_le_bytes().to_vec()),
        Compressor::Lz4 => {
            let mut b = 1u32.to_le_bytes().to_vec(); // LZ4_LEGACY format version
            b.extend_from_slice(&0u32.to_le_bytes()); // flags: not HC
            Some(b)
        }
        _ => None,
    }
}

/// Whether this build can write `comp`.
pub(crate) fn check_enabled(comp: Compressor) -> WriteResult<()> {
    let on = match comp {
        Compressor::Gzip => cfg!(feature = "gzip"),
        Compressor::Xz | Compressor::Lzma => cfg!(feature = "xz"),
        Compressor::Zstd => cfg!(feature = "zstd"),
        Compressor::Lz4 => cfg!(feature = "lz4"),
        Compressor::Lzo => cfg!(feature = "lzo"),
    };
    if on {
        Ok(())
    } else {
        Err(WriteError::CompressorDisabled(comp.name()))
    }
}

/// Output space `compress` needs for `n` input bytes (lz4 and lzo want their worst case up
/// front; the others stop cleanly when the output would not be smaller than the input).
pub(crate) fn output_bound(comp: Compressor, n: usize) -> usize {
    match comp {
        #[cfg(feature = "lz4")]
        Compressor::Lz4 => lz4_flex::block::get_maximum_output_size(n),
        #[cfg(feature = "lzo")]
        Compressor::Lzo => lzokay::compress::compress_worst_size(n),
        _ => n,
    }
}

/// A per-thread compressor.
pub(crate) struct Encoder {
    comp: Compressor,
    state: State,
}

enum State {
    #[cfg(feature = "gzip")]
    Gzip(libdeflater::Compressor),
    #[cfg(feature = "xz")]
    Xz { preset: u32, dict: u32 },
    #[cfg(feature = "zstd")]
    Zstd(zstd::bulk::Compressor<'static>),
    #[cfg(feature = "lz4")]
    Lz4,
    #[cfg(feature = "lzo")]
    Lzo(Box<lzokay::compress::Dict>),
    /// Keeps the enum inhabited when every compressor is compiled out (never built).
    #[allow(dead_code)]
    Disabled,
}

fn failed(comp: Compressor, reason: impl std::fmt::Display) -> WriteError {
    WriteError::Compress {
        comp: comp.name(),
        reason: reason.to_string(),
    }
}

impl Encoder {
    /// An encoder for `comp` at `level` (already resolved) for blocks up to `block_size`.
    #[cfg_attr(
        not(all(feature = "gzip", feature = "xz", feature = "zstd")),
        allow(unused_variables)
    )]
    pub(crate) fn new(comp: Compressor, level: u32, block_size: u32) -> WriteResult<Self> {
        check_enabled(comp)?;
        let state = match comp {
            #[cfg(feature = "gzip")]
            Compressor::Gzip => {
                let lvl = libdeflater::CompressionLvl::new(level as i32)
                    .map_err(|e| failed(comp, format!("level {level}: {e:?}")))?;
                State::Gzip(libdeflater::Compressor::new(lvl))
            }
            #[cfg(feature = "xz")]
            Compressor::Xz => State::Xz {
                preset: level,
                dict: block_size,
            },
            #[cfg(feature = "zstd")]
            Compressor::Zstd => {
                State::Zstd(zstd::bulk::Compressor::new(level as i32).map_err(|e| failed(comp, e))?)
            }
            #[cfg(feature = "lz4")]
            Compressor::Lz4 => State::Lz4,
            #[cfg(feature = "lzo")]
            Compressor::Lzo => State::Lzo(lzokay::compress::Dict::new()),
            _ => return Err(WriteError::CompressorDisabled(comp.name())),
        };
        Ok(Encoder { comp, state })
    }

    /// Compresses `src` into `dst` (resized as needed) and returns the compressed length, or
    /// None when compressing does not make it smaller (the caller stores `src` as is).
    pub(crate) fn compress(&mut self, src: &[u8], dst: &mut Vec<u8>) -> WriteResult<Option<usize>> {
        if src.is_empty() {
            return Ok(None);
        }
        dst.resize(output_bound(self.comp, src.len()), 0);
        let comp = self.comp;
        let n = match &mut self.state {
            #[cfg(feature = "gzip")]
            State::Gzip(c) => match c.zlib_compress(src, dst) {
                Ok(n) => n,
                Err(libdeflater::CompressionError::InsufficientSpace) => return Ok(None),
            },
            #[cfg(feature = "xz")]
            State::Xz { preset, dict } => {
                match xz(src, dst, *preset, *dict).map_err(|e| failed(comp, e))? {
                    Some(n) => n,
                    None => return Ok(None),
                }
            }
            #[cfg(feature = "zstd")]
            State::Zstd(c) => match c.compress_to_buffer(src, dst.as_mut_slice()) {
                Ok(n) => n,
                // zstd reports a too-small output as an error: the block does not shrink.
                Err(_) => return Ok(None),
            },
            #[cfg(feature = "lz4")]
            State::Lz4 => lz4_flex::block::compress_into(src, dst).map_err(|e| failed(comp, e))?,
            #[cfg(feature = "lzo")]
            State::Lzo(dict) => lzokay::compress::compress_no_alloc(src, dst, dict)
                .map_err(|e| failed(comp, format!("{e:?}")))?,
            State::Disabled => return Err(WriteError::CompressorDisabled(comp.name())),
        };
        Ok((n < src.len()).then_some(n))
    }
}

/// One xz stream (CRC32 check, LZMA2 with the preset and a one-block dictionary, as
/// mksquashfs writes); None when the output would not be smaller than the input.
#[cfg(feature = "xz")]
fn xz(src: &[u8], dst: &mut [u8], preset: u32, dict: u32) -> Result<Option<usize>, String> {
    use liblzma::stream::{Action, Check, Filters, LzmaOptions, Status, Stream};
    let mut opts = LzmaOptions::new_preset(preset).map_err(|e| e.to_string())?;
    opts.dict_size(dict);
    let mut filters = Filters::new();
    filters.lzma2(&opts);
    let mut s = Stream::new_stream_encoder(&filters, Check::Crc32).map_err(|e| e.to_string())?;
    let limit = src.len().min(dst.len());
    loop {
        let (i, o) = (s.total_in() as usize, s.total_out() as usize);
        let (Some(inp), Some(out)) = (src.get(i..), dst.get_mut(o..limit)) else {
            return Err("encoder position out of range".into());
        };
        if out.is_empty() {
            return Ok(None);
        }
        match s
            .process(inp, out, Action::Finish)
            .map_err(|e| e.to_string())?
        {
            Status::StreamEnd => return Ok(Some(s.total_out() as usize)),
            _ if s.total_out() as usize >= limit => return Ok(None),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<Compressor> {
        [
            Compressor::Gzip,
            Compressor::Xz,
            Compressor::Zstd,
            Compressor::Lz4,
            Compressor::Lzo,
        ]
        .into_iter()
        .filter(|&c| check_enabled(c).is_ok())
        .collect()
    }

    #[test]
    fn test_roundtrip_every_compressor() {
        let text: Vec<u8> = (0..100_000u32)
            .map(|i| b"squashfs writer "[(i % 16) as usize])
            .collect();
        let mut x = 0x1234_5678u32;
        let noise: Vec<u8> = (0..50_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        for comp in all() {
            let level = resolve_level(comp, None).expect("default level");
            let mut enc = Encoder::new(comp, level, 131072).expect("encoder");
            let mut out = Vec::new();
            let n = enc
                .compress(&text, &mut out)
                .expect("compress")
                .expect("text shrinks");
            assert!(n < text.len() / 4, "{comp:?}: {n}");
            let mut back = vec![0u8; text.len()];
            let got = comp
                .decompress(&out[..n], &mut back, 0)
                .expect("decompress");
            assert_eq!(&back[..got], &text[..], "{comp:?}");
            // Random bytes do not shrink: stored as they are.
            assert_eq!(enc.compress(&noise, &mut out).expect("compress"), None);
            assert_eq!(enc.compress(&[], &mut out).expect("compress"), None);
        }
    }

    #[test]
    fn test_levels_and_options() {
        assert_eq!(resolve_level(Compressor::Gzip, None).ok(), Some(9));
        assert!(resolve_level(Compressor::Gzip, Some(10)).is_err());
        assert!(resolve_level(Compressor::Gzip, Some(0)).is_err());
        assert_eq!(resolve_level(Compressor::Zstd, Some(22)).ok(), Some(22));
        assert!(resolve_level(Compressor::Zstd, Some(23)).is_err());
        assert!(resolve_level(Compressor::Lz4, Some(1)).is_err());
        assert!(resolve_level(Compressor::Lzma, None).is_err());
        assert_eq!(options_block(Compressor::Gzip, 9), None);
        assert_eq!(
            options_block(Compressor::Gzip, 1),
            Some(vec![1, 0, 0, 0, 15, 0, 0, 0])
        );
        assert_eq!(options_block(Compressor::Zstd, 15), None);
        assert_eq!(options_block(Compressor::Zstd, 3), Some(vec![3, 0, 0, 0]));
        assert_eq!(
            options_block(Compressor::Lz4, 0),
            Some(vec![1, 0, 0, 0, 0, 0, 0, 0])
        );
        assert_eq!(options_block(Compressor::Xz, 9), None);
    }
}
