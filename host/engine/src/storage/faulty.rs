//! A disk that fails on command: a redb storage backend wrapped so that a
//! test (or a drill on a staging host) can make the file behind
//! [`super::FileStorage`] run out of space or stop answering, and then come
//! back, while everything above it runs unchanged.
//!
//! The fault sits under redb rather than above [`super::Storage`] because
//! the failures worth proving are redb's own: a failed write latches the
//! database into refusing every later call until it is reopened, which a
//! fault injected above the store would never show. A switch shared by
//! clones ([`FaultyDisk`]) outlives the backends it wraps, so a store that
//! reopens its file after a failure gets the same switch again.
//!
//! # Security
//!
//! Holds nothing: bytes pass through to the real file untouched, and only
//! the chosen [`Fault`] decides whether a call reaches it.
//!
//! # Limitations
//!
//! Faults are all-or-nothing per call kind: no torn writes (redb's own
//! tests cover those), no latency.

use std::fmt;
use std::io;
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};

/// What the disk does now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Fault {
    /// Every call reaches the file.
    None = 0,
    /// Writes and growth fail with ENOSPC; reads still work.
    Full = 1,
    /// Every call fails with EIO: a dead disk or a lost mount.
    Broken = 2,
}

/// The switch: cheap to clone, every clone and every backend made from it
/// sees the same [`Fault`].
#[derive(Clone, Default)]
pub struct FaultyDisk(Arc<AtomicU8>);

impl fmt::Debug for FaultyDisk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("FaultyDisk").field(&self.fault()).finish()
    }
}

impl FaultyDisk {
    /// A disk that works until told otherwise.
    pub fn new() -> FaultyDisk {
        FaultyDisk::default()
    }

    /// Make the disk behave as `fault` from the next call on.
    pub fn set(&self, fault: Fault) {
        self.0.store(fault as u8, Ordering::SeqCst);
    }

    /// What the disk does now.
    pub fn fault(&self) -> Fault {
        match self.0.load(Ordering::SeqCst) {
            0 => Fault::None,
            1 => Fault::Full,
            _ => Fault::Broken,
        }
    }

    /// `inner` behind this switch.
    pub fn wrap(&self, inner: FileBackend) -> FaultyBackend {
        FaultyBackend { inner, disk: self.clone() }
    }

    /// Err unless the disk lets a call of this kind through.
    fn check(&self, writes: bool) -> io::Result<()> {
        match self.fault() {
            Fault::None => Ok(()),
            Fault::Full if !writes => Ok(()),
            Fault::Full => Err(io::Error::from_raw_os_error(libc::ENOSPC)),
            Fault::Broken => Err(io::Error::from_raw_os_error(libc::EIO)),
        }
    }
}

/// A [`FileBackend`] behind a [`FaultyDisk`].
#[derive(Debug)]
pub struct FaultyBackend {
    inner: FileBackend,
    disk: FaultyDisk,
}

impl StorageBackend for FaultyBackend {
    fn len(&self) -> Result<u64, io::Error> {
        self.disk.check(false)?;
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        self.disk.check(false)?;
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        self.disk.check(true)?;
        self.inner.set_len(len)
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        self.disk.check(true)?;
        self.inner.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        self.disk.check(true)?;
        self.inner.write(offset, data)
    }

    // Closing and locking always reach the file: a broken disk must not
    // keep redb's lock held after the database is dropped, or the store
    // could never be reopened.
    fn close(&self) -> Result<(), io::Error> {
        self.inner.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_range(start, end)
    }

    fn try_lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.query_lock_range(start, end)
    }
}
