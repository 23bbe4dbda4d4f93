//! The capabilities the core runs on: clock, entropy, storage, the seed
//! file and log.
//!
//! This trait is the core's whole view of the outside world. On wasm32 it is
//! implemented by the component glue ([`crate::component`]) over the WIT
//! imports; natively, tests implement it with a scripted clock, seeded
//! entropy and an in-memory store ([`crate::testing`]). Policy code takes
//! `&mut impl Capabilities` and never reaches around it, which is what makes
//! every run replayable: the only inputs are export arguments and what these
//! methods return.
//!
//! # Security
//!
//! The host behind these methods is trusted to be honest about time and to
//! supply unpredictable entropy; storage contents are *not* trusted (a value
//! read back may be truncated or altered, and every decoder in the core
//! treats it as hostile). Log messages must never carry secrets.
//!
//! # Limitations
//!
//! Calls are synchronous: a slow storage backend stalls the core, which is
//! single-threaded by design (one instance, one actor).

use alloc::vec::Vec;
use core::fmt;

/// Why a storage operation failed; mirrors the WIT `storage.error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageError {
    /// The backend cannot be reached now.
    Unavailable(alloc::string::String),
    /// The backend reported an I/O error.
    Io(alloc::string::String),
    /// The key or value exceeds what the backend accepts.
    TooLarge,
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageError::Unavailable(why) => write!(f, "storage unavailable: {why}"),
            StorageError::Io(why) => write!(f, "storage I/O error: {why}"),
            StorageError::TooLarge => f.write_str("storage refused an oversized key or value"),
        }
    }
}

/// Severity of a log message; mirrors the WIT `log.level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Something failed and a request was refused because of it.
    Error,
    /// Bad input or a degraded state that an operator should see.
    Warn,
    /// A notable, normal event (a key minted, a reseed).
    Info,
    /// Per-request detail.
    Debug,
    /// Very verbose detail.
    Trace,
}

/// Entry count and byte total of one storage table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableStat {
    /// Number of entries.
    pub entries: u64,
    /// Sum of the lengths of all keys and values.
    pub bytes: u64,
}

/// One key-value pair returned by [`Capabilities::scan`].
pub type Entry = (Vec<u8>, Vec<u8>);

/// One write of [`Capabilities::apply`].
#[derive(Clone, Copy)]
pub struct Change<'a> {
    /// The table.
    pub table: &'a str,
    /// The key.
    pub key: &'a [u8],
    /// The value to store; `None` deletes `key`.
    pub value: Option<&'a [u8]>,
    /// For a value: the expiry hint of [`Capabilities::put_expiring`].
    pub expires_at: Option<u64>,
}

impl Change<'_> {
    /// Make this change with the one-call method it stands for.
    ///
    /// # Errors
    ///
    /// The call's.
    pub fn make_on(&self, caps: &mut (impl Capabilities + ?Sized)) -> Result<(), StorageError> {
        match (self.value, self.expires_at) {
            (Some(value), Some(at)) => caps.put_expiring(self.table, self.key, value, at),
            (Some(value), None) => caps.put(self.table, self.key, value),
            (None, _) => caps.delete(self.table, self.key).map(drop),
        }
    }
}

/// Everything the core may ask of its host.
pub trait Capabilities {
    /// Nanoseconds since the Unix epoch.
    fn now_nanos(&mut self) -> u64;

    /// Fill `buf` with fresh entropy. `buf.len()` is at most 4096.
    fn fill_entropy(&mut self, buf: &mut [u8]);

    /// The value under `key` in `table`, if any.
    fn get(&mut self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError>;

    /// Store `value` under `key` in `table`, replacing any previous value.
    fn put(&mut self, table: &str, key: &[u8], value: &[u8]) -> Result<(), StorageError>;

    /// [`Capabilities::put`], with a hint that the entry is of no use from
    /// `expires_at` (seconds since the epoch) on, for a backend that can
    /// drop entries by itself.
    fn put_expiring(&mut self, table: &str, key: &[u8], value: &[u8], expires_at: u64) -> Result<(), StorageError>;

    /// Store `value` under `key` in `table` only if `key` is absent, in one
    /// step atomic for every core sharing the store: `None` when `value` was
    /// stored, otherwise the value already there (left unchanged).
    fn put_if_absent(&mut self, table: &str, key: &[u8], value: &[u8]) -> Result<Option<Vec<u8>>, StorageError>;

    /// Remove `key` from `table`; true when it was present.
    fn delete(&mut self, table: &str, key: &[u8]) -> Result<bool, StorageError>;

    /// Up to `limit` entries of `table` with keys strictly after `after`, in
    /// ascending key order.
    fn scan(&mut self, table: &str, after: Option<&[u8]>, limit: u32) -> Result<Vec<Entry>, StorageError>;

    /// Entry count and byte total of `table`.
    fn stat(&mut self, table: &str) -> Result<TableStat, StorageError>;

    /// [`Capabilities::get`] of `key` and [`Capabilities::stat`] of
    /// `table`, in one call: one round trip to a store across a network.
    fn get_with_stat(&mut self, table: &str, key: &[u8]) -> Result<(Option<Vec<u8>>, TableStat), StorageError>;

    /// The changes in order, as the calls one by one would make them, in
    /// one call (one round trip where the store allows). Not atomic: after
    /// an error, some leading changes may have been made.
    fn apply(&mut self, changes: &[Change<'_>]) -> Result<(), StorageError>;

    /// The seed the previous run saved, already consumed (removed, durably)
    /// by the host, so it is never used twice. `None` when there is none.
    fn take_seed(&mut self) -> Option<Vec<u8>>;

    /// Leave `seed` for the next run, replacing any earlier one atomically.
    ///
    /// # Errors
    ///
    /// The host's reason, for the log.
    fn save_seed(&mut self, seed: &[u8]) -> Result<(), alloc::string::String>;

    /// Record a diagnostic message. Never pass secrets.
    fn log(&mut self, level: Level, message: &str);
}
