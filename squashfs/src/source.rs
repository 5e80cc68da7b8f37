//! Where an image's bytes come from: a plain file, or any other positioned reader (sifr
//! serves images checked by the execution control list through one that refuses bytes that
//! changed since they were verified).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Positioned, shared reads of an image. `Send + Sync`: the FUSE server reads from many
/// threads at once.
pub trait ImageSource: Send + Sync {
    /// The number of bytes the source holds.
    fn size(&self) -> io::Result<u64>;

    /// Fills `buf` from `offset`, or fails (short reads are errors).
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;

    /// A hint that `len` bytes from `offset` will be read soon. Advisory.
    fn will_need(&self, _offset: u64, _len: u64) {}
}

impl ImageSource for File {
    fn size(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        FileExt::read_exact_at(self, buf, offset)
    }

    fn will_need(&self, offset: u64, len: u64) {
        use std::os::fd::AsRawFd;
        let (Ok(start), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
            return;
        };
        // SAFETY: posix_fadvise only reads its integer arguments; the descriptor is open.
        unsafe {
            libc::posix_fadvise(self.as_raw_fd(), start, len, libc::POSIX_FADV_WILLNEED);
        }
    }
}
