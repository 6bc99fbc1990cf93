//! Cross-process locks of a file store's keys: one byte of the file
//! `<root>/.locks` per key (at an offset taken from the key), locked with
//! an open-file-description lock (`F_OFD_SETLK`; `F_SETLK` on Unix systems
//! without them). The kernel releases a lock when its process dies, so a
//! crash never leaves a key locked. Nothing is written to the file.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;
use std::sync::Arc;

use crate::key::Key;

/// The lock file's name, at the store's root.
pub(crate) const LOCKS: &str = ".locks";

/// The lock file of one store, open.
#[derive(Debug)]
pub(crate) struct LockFile(Arc<File>);

/// A key's lock, held until dropped.
struct Held {
    file: Arc<File>,
    offset: i64,
}

/// Whether a key's lock was taken.
pub(crate) enum Taken {
    Held(Box<dyn Send>),
    Busy,
}

impl LockFile {
    pub(crate) fn open(root: &Path) -> io::Result<LockFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(root.join(LOCKS))?;
        Ok(LockFile(Arc::new(file)))
    }

    /// Takes `key`'s lock if no other process holds it.
    pub(crate) fn try_lock(&self, key: &Key) -> io::Result<Taken> {
        let offset = offset_of(key);
        match set_lock(&self.0, offset, Lock::Try) {
            Ok(true) => Ok(Taken::Held(Box::new(Held {
                file: Arc::clone(&self.0),
                offset,
            }))),
            Ok(false) => Ok(Taken::Busy),
            Err(e) => Err(e),
        }
    }

    /// Takes the lock of the byte at `offset` (one past every key's, for
    /// the store's own upkeep), waiting while another process holds it.
    pub(crate) fn lock_waiting(&self, offset: i64) -> io::Result<Box<dyn Send>> {
        set_lock(&self.0, offset, Lock::Wait)?;
        Ok(Box::new(Held {
            file: Arc::clone(&self.0),
            offset,
        }))
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let _ = set_lock(&self.file, self.offset, Lock::Release);
    }
}

/// What [`set_lock`] does.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Lock {
    /// Takes the lock if it is free.
    Try,
    /// Takes the lock, waiting for it.
    Wait,
    /// Releases it.
    Release,
}

/// Where a key's byte is: its first bytes, kept below `i64::MAX`.
fn offset_of(key: &Key) -> i64 {
    let mut head = [0u8; 8];
    head.copy_from_slice(&key.as_bytes()[..8]);
    (u64::from_le_bytes(head) >> 2) as i64
}

/// Locks (or unlocks) one byte; `Ok(false)` if another holds it.
#[cfg(unix)]
fn set_lock(file: &File, offset: i64, action: Lock) -> io::Result<bool> {
    use std::os::unix::io::AsRawFd;
    #[cfg(any(target_os = "linux", target_os = "android"))]
    const SET: [libc::c_int; 2] = [libc::F_OFD_SETLK, libc::F_OFD_SETLKW];
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    const SET: [libc::c_int; 2] = [libc::F_SETLK, libc::F_SETLKW];
    let lock = action != Lock::Release;
    // SAFETY: a zeroed `flock` is a valid value of a plain C struct, and
    // every field that matters is set below.
    let mut range: libc::flock = unsafe { std::mem::zeroed() };
    range.l_type = if lock { libc::F_WRLCK } else { libc::F_UNLCK } as _;
    range.l_whence = libc::SEEK_SET as _;
    range.l_start = offset as _;
    range.l_len = 1;
    let command = SET[usize::from(action == Lock::Wait)];
    loop {
        // SAFETY: `fcntl` with a lock command reads the `flock` we own, on
        // a descriptor `file` keeps open for the call.
        let done = unsafe { libc::fcntl(file.as_raw_fd(), command, &range) };
        if done == 0 {
            return Ok(true);
        }
        let error = io::Error::last_os_error();
        match error.raw_os_error() {
            // A signal interrupted the wait: wait on.
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN) | Some(libc::EACCES) => return Ok(false),
            _ => return Err(error),
        }
    }
}

#[cfg(not(unix))]
fn set_lock(_: &File, _: i64, _: Lock) -> io::Result<bool> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "cross-process locks of a file store need Unix",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_locked_once_until_released() {
        let dir = tempfile::tempdir().unwrap();
        // Two open file descriptions stand for two processes.
        let (first, second) = (
            LockFile::open(dir.path()).unwrap(),
            LockFile::open(dir.path()).unwrap(),
        );
        let key = Key::of("t", "1", &1u8).unwrap();
        let other = Key::of("t", "1", &2u8).unwrap();
        let held = match first.try_lock(&key).unwrap() {
            Taken::Held(held) => held,
            Taken::Busy => panic!("a free key was busy"),
        };
        assert!(matches!(second.try_lock(&key).unwrap(), Taken::Busy));
        assert!(matches!(second.try_lock(&other).unwrap(), Taken::Held(_)));
        drop(held);
        assert!(matches!(second.try_lock(&key).unwrap(), Taken::Held(_)));
    }
}
