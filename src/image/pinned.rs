//! Serving exactly the bytes that were verified: an image file read through a table of
//! chunk digests, so that a file rewritten after the execution control list checked its
//! signatures can never feed unsigned bytes to the container.
//!
//! The file is read in fixed, aligned chunks. While the image is being verified
//! (`Phase::Recording`), every chunk read is hashed and its digest kept: the verifier sees the
//! same buffer that was hashed, so the digests describe exactly the bytes whose signatures
//! were checked. [`PinnedFile::freeze`] then ends recording: from then on every read hashes
//! the chunks it touches again and fails with EIO when one differs from its digest, or was
//! never read during verification (bytes nobody verified are never served). A chunk read twice
//! while recording must also read the same both times.
//!
//! The cost is one SHA-256 of each chunk a read touches; only images governed by an
//! activated execution control list are read this way.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use sha2::{Digest as _, Sha256};

use super::sif::SharedReader;

/// Bytes per chunk: a power of two, so chunk boundaries are aligned offsets.
pub const CHUNK: u64 = 64 * 1024;

/// An open image file whose reads are checked against digests taken while it was verified.
pub struct PinnedFile {
    file: File,
    /// The length when pinned; the file is served as this long, whatever happens to it later.
    len: u64,
    digests: Vec<OnceLock<[u8; 32]>>,
    frozen: AtomicBool,
    /// A refused read after freezing was reported (once: the reader retries).
    reported: AtomicBool,
}

impl std::fmt::Debug for PinnedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PinnedFile")
            .field("len", &self.len)
            .field("frozen", &self.frozen.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

fn changed(offset: u64) -> io::Error {
    io::Error::other(format!(
        "the image changed after its signatures were verified (bytes at offset {offset} differ); \
         it will not be served"
    ))
}

fn unverified(offset: u64) -> io::Error {
    io::Error::other(format!(
        "bytes at offset {offset} of the image were not covered by the verified signatures; \
         they will not be served"
    ))
}

impl PinnedFile {
    /// Pins `file` at its current length, in the recording phase.
    pub fn new(file: File) -> io::Result<PinnedFile> {
        let len = file.metadata()?.len();
        let chunks = usize::try_from(len.div_ceil(CHUNK))
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "image too large"))?;
        let mut digests = Vec::new();
        digests.resize_with(chunks, OnceLock::new);
        Ok(PinnedFile {
            file,
            len,
            digests,
            frozen: AtomicBool::new(false),
            reported: AtomicBool::new(false),
        })
    }

    /// Ends recording: from now on only chunks read (and so verified) before are served, and
    /// only while they still hash to what they did then.
    pub fn freeze(&self) {
        self.frozen.store(true, Ordering::SeqCst);
    }

    /// The length the file had when it was pinned.
    pub fn pinned_len(&self) -> u64 {
        self.len
    }

    /// Reads chunk `k` whole into `buf` (resized to the chunk's length) and checks or records
    /// its digest.
    fn load_chunk(&self, k: u64, buf: &mut Vec<u8>) -> io::Result<()> {
        let start = k * CHUNK;
        let n = CHUNK.min(self.len - start) as usize;
        buf.resize(n, 0);
        self.file.read_exact_at(buf, start).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                changed(start)
            } else {
                e
            }
        })?;
        let digest: [u8; 32] = Sha256::digest(&buf[..]).into();
        let slot = &self.digests[k as usize];
        let want = if self.frozen.load(Ordering::SeqCst) {
            *slot.get().ok_or_else(|| unverified(start))?
        } else {
            *slot.get_or_init(|| digest)
        };
        if want != digest {
            return Err(changed(start));
        }
        Ok(())
    }

    /// Reads up to `out.len()` bytes at `offset` (fewer only at the pinned end); once frozen,
    /// the first refused read is also logged, since the container only sees EIO.
    pub fn read_checked(&self, out: &mut [u8], offset: u64) -> io::Result<usize> {
        let r = self.read_unlogged(out, offset);
        if let Err(e) = &r
            && self.frozen.load(Ordering::SeqCst)
            && !self.reported.swap(true, Ordering::SeqCst)
        {
            log::error!("{e}");
        }
        r
    }

    fn read_unlogged(&self, out: &mut [u8], offset: u64) -> io::Result<usize> {
        if offset >= self.len || out.is_empty() {
            return Ok(0);
        }
        let want = (out.len() as u64).min(self.len - offset) as usize;
        let mut chunk = Vec::with_capacity(CHUNK as usize);
        let mut done = 0usize;
        while done < want {
            let pos = offset + done as u64;
            let k = pos / CHUNK;
            self.load_chunk(k, &mut chunk)?;
            let from = (pos - k * CHUNK) as usize;
            let n = (chunk.len() - from).min(want - done);
            out[done..done + n].copy_from_slice(&chunk[from..from + n]);
            done += n;
        }
        Ok(want)
    }
}

impl SharedReader for PinnedFile {
    fn size(&self) -> io::Result<u64> {
        Ok(self.len)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.read_checked(buf, offset)
    }
}

impl sifr_fuse::ImageSource for PinnedFile {
    fn size(&self) -> io::Result<u64> {
        Ok(self.len)
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if self.read_checked(buf, offset)? == buf.len() {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "read past the end of the image",
            ))
        }
    }

    fn will_need(&self, offset: u64, len: u64) {
        sifr_fuse::ImageSource::will_need(&self.file, offset, len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file_with(data: &[u8]) -> (tempfile::NamedTempFile, File) {
        let mut t = tempfile::NamedTempFile::new().expect("tempfile");
        t.write_all(data).expect("write");
        let f = File::open(t.path()).expect("open");
        (t, f)
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn test_serves_verified_bytes_and_refuses_changed_ones() {
        let data = pattern(3 * CHUNK as usize + 100);
        let (t, f) = file_with(&data);
        let p = PinnedFile::new(f).expect("pin");
        // "Verification" reads everything, across chunk boundaries.
        let mut all = vec![0u8; data.len()];
        assert_eq!(p.read_checked(&mut all[..1000], 0).expect("read"), 1000);
        assert_eq!(
            p.read_checked(&mut all[1000..], 1000).expect("read"),
            data.len() - 1000
        );
        assert_eq!(all, data);
        p.freeze();
        // Unchanged bytes are served, at any offset and length.
        let mut b = vec![0u8; 70_000];
        let off = CHUNK - 5;
        assert_eq!(p.read_checked(&mut b, off).expect("read"), 70_000);
        assert_eq!(&b[..], &data[off as usize..off as usize + 70_000]);
        // Rewrite one byte of chunk 2 in place: reads of chunk 2 fail, others still work.
        let w = std::fs::OpenOptions::new()
            .write(true)
            .open(t.path())
            .expect("open rw");
        w.write_all_at(b"X", 2 * CHUNK + 3).expect("rewrite");
        let e = p
            .read_checked(&mut b[..10], 2 * CHUNK)
            .expect_err("changed");
        assert!(e.to_string().contains("changed after"), "{e}");
        assert_eq!(p.read_checked(&mut b[..10], 0).expect("chunk 0"), 10);
        // Truncation is a change too, not a short read.
        w.set_len(CHUNK + 10).expect("truncate");
        let e = p.read_checked(&mut b[..10], CHUNK + 20).expect_err("gone");
        assert!(e.to_string().contains("changed after"), "{e}");
        // Reads never go past the pinned length, even if the file grows.
        w.set_len(10 * CHUNK).expect("grow");
        assert_eq!(p.read_checked(&mut b, data.len() as u64).expect("end"), 0);
    }

    #[test]
    fn test_chunks_never_read_while_recording_are_not_served() {
        let data = pattern(2 * CHUNK as usize);
        let (_t, f) = file_with(&data);
        let p = PinnedFile::new(f).expect("pin");
        let mut b = vec![0u8; 16];
        p.read_checked(&mut b, 0).expect("chunk 0");
        p.freeze();
        p.read_checked(&mut b, 8).expect("chunk 0 again");
        let e = p.read_checked(&mut b, CHUNK).expect_err("chunk 1");
        assert!(e.to_string().contains("not covered"), "{e}");
    }

    #[test]
    fn test_a_chunk_that_changes_while_recording_fails() {
        let data = pattern(CHUNK as usize);
        let (t, f) = file_with(&data);
        let p = PinnedFile::new(f).expect("pin");
        let mut b = vec![0u8; 16];
        p.read_checked(&mut b, 0).expect("first read");
        let w = std::fs::OpenOptions::new()
            .write(true)
            .open(t.path())
            .expect("open rw");
        w.write_all_at(b"Y", 100).expect("rewrite");
        let e = p.read_checked(&mut b, 0).expect_err("second read differs");
        assert!(e.to_string().contains("changed after"), "{e}");
    }
}
