//! Advisory whole-file locks (flock(2)), as sifr's cooperating processes take them on
//! their state files: the lock belongs to the open file description, so every process
//! that inherited the descriptor shares it, and closing the last one releases it.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// Takes the exclusive lock of `file` if nobody holds it: `Ok(false)` when another open
/// file holds it.
pub fn try_exclusive(file: &File) -> io::Result<bool> {
    // SAFETY: flock(2) on a descriptor this function borrows; it changes no memory.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(err)
    }
}

/// Releases the lock `file` holds (for every process sharing its open file description).
pub fn unlock(file: &File) {
    // SAFETY: flock(2) on a descriptor this function borrows; it changes no memory.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_UN) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_a_second_open_file_waits_for_the_first() {
        let t = tempfile::tempdir().expect("tempdir");
        let p = t.path().join("lock");
        let a = File::create(&p).expect("create");
        let b = File::open(&p).expect("open");
        assert!(try_exclusive(&a).expect("lock"));
        assert!(!try_exclusive(&b).expect("busy"));
        unlock(&a);
        assert!(try_exclusive(&b).expect("lock after unlock"));
    }
}
