//! Storage backends: where the core's tables live.
//!
//! The core sees storage through the WIT `storage` interface: named tables of
//! ordered byte keys and opaque byte values. This module defines the same
//! contract as the [`Storage`] trait, which every backend implements; the
//! engine routes the core's imports to one `Box<dyn Storage>`.
//!
//! Contract, for every backend:
//! - tables are created on first `put`; a missing table reads as empty;
//! - `put_if_absent` stores only where nothing is, atomically against
//!   every other writer of the store (one process, or every node of a
//!   fleet sharing a Redis);
//! - `scan` returns keys in ascending bytewise order, strictly after `after`;
//! - `stat` counts entries and the sum of key and value lengths, and is cheap
//!   (the core calls it on every update);
//! - `get_with_stat` is `get` then `stat`, and `apply` is its changes made
//!   one by one, in order (not atomically): the defaults do exactly that,
//!   and a backend across a network overrides them to make one round trip;
//! - an error must leave the table as it was or as if the operation had
//!   completed, never half-written;
//! - after `flush` returns, every completed write survives a crash; a
//!   backend may make writes durable sooner (the memory backend, never).
//!
//! A backend that batches writes may also let its commits run apart from
//! the store ([`Storage::start_commit`]): the host starts one while it
//! holds the core, runs it ([`Commit::run`]) after letting go, and hands
//! the outcome back ([`Storage::finish_commit`]). Meanwhile every call sees
//! the store as if the commit had already happened, so slow disk work
//! (writing pages, the fsync) no longer holds up requests.
//!
//! # Security
//!
//! Values are secret (sessions, ticket keys): backends never log them.
//! Table names and keys come from the core, which derives them from client
//! input only through hashing, but a backend still bounds their size.
//!
//! # Limitations
//!
//! Apart from a detached commit, synchronous: a slow read holds the core's
//! lock, and so every request, for as long as it takes.

pub mod faulty;
pub mod file;
pub mod kek;
pub mod memory;
pub mod overlay;
pub mod redis;
pub mod sealed;
pub mod split;

use std::fmt;

pub use file::{FileOptions, FileStorage, OpenError};
pub use kek::{Kek, KekError};
pub use memory::MemoryStorage;
pub use sealed::{SealError, Sealed};
pub use split::Split;

/// Longest table name a backend accepts.
pub const MAX_TABLE_NAME: usize = 128;
/// Largest key a backend accepts.
pub const MAX_KEY_BYTES: usize = 1024;
/// Largest value a backend accepts (a session is bounded far below this).
pub const MAX_VALUE_BYTES: usize = 1024 * 1024;

/// Why a storage operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    /// The backend cannot be reached now; a later call may succeed.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// The backend reported an I/O error.
    #[error("storage I/O error: {0}")]
    Io(String),
    /// A table name, key or value is larger than the backend accepts.
    #[error("storage refused an oversized table name, key or value")]
    TooLarge,
}

/// Entry count and byte total of a table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableStat {
    /// Number of entries.
    pub entries: u64,
    /// Sum of key and value lengths.
    pub bytes: u64,
}

/// A key-value pair from [`Storage::scan`].
pub type Entry = (Vec<u8>, Vec<u8>);

/// One write of [`Storage::apply`]: a put (with the expiry hint of
/// [`Storage::put_expiring`], if any) or a delete. The value is zeroized
/// on drop and kept out of `Debug`: it may be a session in clear.
#[derive(Clone, PartialEq, Eq)]
pub struct Change {
    /// The table.
    pub table: String,
    /// The key.
    pub key: Vec<u8>,
    /// The value to store; `None` deletes `key`.
    pub value: Option<Vec<u8>>,
    /// For a value: when it is of no use any more (seconds since the epoch).
    pub expires_at: Option<u64>,
}

impl Change {
    /// Store `value` under `key`.
    pub fn put(table: &str, key: &[u8], value: &[u8], expires_at: Option<u64>) -> Change {
        Change { table: table.to_owned(), key: key.to_vec(), value: Some(value.to_vec()), expires_at }
    }

    /// Remove `key`.
    pub fn delete(table: &str, key: &[u8]) -> Change {
        Change { table: table.to_owned(), key: key.to_vec(), value: None, expires_at: None }
    }

    /// Make this change through the one-call methods of `s`.
    ///
    /// # Errors
    ///
    /// The call's.
    pub fn make_on(&self, s: &mut (impl Storage + ?Sized)) -> Result<(), StorageError> {
        match (&self.value, self.expires_at) {
            (Some(value), Some(at)) => s.put_expiring(&self.table, &self.key, value, at),
            (Some(value), None) => s.put(&self.table, &self.key, value),
            (None, _) => s.delete(&self.table, &self.key).map(drop),
        }
    }
}

impl Drop for Change {
    fn drop(&mut self) {
        if let Some(value) = &mut self.value {
            zeroize::Zeroize::zeroize(value);
        }
    }
}

impl fmt::Debug for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Change")
            .field("table", &self.table)
            .field("key_len", &self.key.len())
            .field("value_len", &self.value.as_ref().map(Vec::len))
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// An ordered key-value store with named tables; see the module docs for the
/// contract.
pub trait Storage: Send + fmt::Debug {
    /// The value under `key`, if any.
    fn get(&mut self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError>;
    /// Store `value` under `key`, replacing any previous value.
    fn put(&mut self, table: &str, key: &[u8], value: &[u8]) -> Result<(), StorageError>;
    /// Store `value` under `key` only if nothing is there; returns `None`
    /// when it stored, or the value already there (and stores nothing).
    /// Atomic against every other writer of the same store: this is how
    /// nodes sharing one store agree on a single value (the sealing key
    /// check, ticket keys). The default suits backends that only this
    /// process writes.
    ///
    /// # Errors
    ///
    /// As for `get` and `put`.
    fn put_if_absent(&mut self, table: &str, key: &[u8], value: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        if let Some(existing) = self.get(table, key)? {
            return Ok(Some(existing));
        }
        self.put(table, key, value)?;
        Ok(None)
    }
    /// `put`, with a hint that the entry is of no use from `expires_at`
    /// (seconds since the epoch) on. A backend that can drop entries by
    /// itself (Redis) does so then, so that an entry nobody deletes does
    /// not stay forever; the others ignore the hint, and the core's own
    /// expiry checks apply either way.
    ///
    /// # Errors
    ///
    /// As for `put`.
    fn put_expiring(&mut self, table: &str, key: &[u8], value: &[u8], expires_at: u64) -> Result<(), StorageError> {
        let _ = expires_at;
        self.put(table, key, value)
    }
    /// Remove `key`; true when it was present.
    fn delete(&mut self, table: &str, key: &[u8]) -> Result<bool, StorageError>;
    /// Up to `limit` entries with keys strictly after `after`, ascending.
    fn scan(&mut self, table: &str, after: Option<&[u8]>, limit: u32) -> Result<Vec<Entry>, StorageError>;
    /// Entry count and byte total of `table`.
    fn stat(&mut self, table: &str) -> Result<TableStat, StorageError>;
    /// `get` of `key`, then `stat` of `table`: what a cache update reads.
    ///
    /// # Errors
    ///
    /// As for `get` and `stat`.
    fn get_with_stat(&mut self, table: &str, key: &[u8]) -> Result<(Option<Vec<u8>>, TableStat), StorageError> {
        let value = self.get(table, key)?;
        Ok((value, self.stat(table)?))
    }
    /// `changes` in order, each as its one-call method would make it; the
    /// first error stops the rest.
    ///
    /// # Errors
    ///
    /// The first change's that failed.
    fn apply(&mut self, changes: &[Change]) -> Result<(), StorageError> {
        for change in changes {
            change.make_on(self)?;
        }
        Ok(())
    }
    /// Make every completed write durable (a no-op for backends whose
    /// writes always are, or that keep nothing).
    fn flush(&mut self) -> Result<(), StorageError> {
        Ok(())
    }
    /// True when held writes have reached the size at which they should be
    /// committed soon with [`Storage::start_commit`].
    fn wants_commit(&self) -> bool {
        false
    }
    /// Detach the held writes into a [`Commit`] that runs without the
    /// store; with `durable`, it also makes every completed write durable,
    /// like `flush`. `None` when nothing needs doing, or when the backend
    /// did the work now (the default: `flush` when `durable`).
    ///
    /// Until [`Storage::finish_commit`] takes its outcome back, calls see
    /// the store as if the commit had succeeded. Another commit must not
    /// be started meanwhile (it returns `None`).
    ///
    /// # Errors
    ///
    /// The backend's error; nothing was detached.
    fn start_commit(&mut self, durable: bool) -> Result<Option<Commit>, StorageError> {
        if durable {
            self.flush()?;
        }
        Ok(None)
    }
    /// Take back the outcome of a commit this backend started. On failure
    /// the writes it held are held again, for the next commit.
    ///
    /// # Errors
    ///
    /// The commit's error.
    fn finish_commit(&mut self, done: Committed) -> Result<(), StorageError> {
        done.result
    }
}

/// A commit detached from its backend by [`Storage::start_commit`]: the
/// slow part of writing out held writes, to run without holding the core.
/// Dropped without running, its transaction is abandoned but
/// [`Storage::finish_commit`] is never told: the backend keeps the writes
/// visible and, since it starts no other detached commit meanwhile, writes
/// them with its next inline one (a durable write, a full overlay, or
/// `flush`, which closing the store makes).
#[must_use = "a commit does nothing until run, and its outcome must go back to the backend"]
pub struct Commit {
    id: u64,
    work: Box<dyn FnOnce() -> Result<(), StorageError>>,
}

impl Commit {
    /// A commit numbered `id` (by its backend) that does `work`.
    pub fn new(id: u64, work: impl FnOnce() -> Result<(), StorageError> + 'static) -> Self {
        Self { id, work: Box::new(work) }
    }

    /// Do the work; the outcome goes back to [`Storage::finish_commit`].
    pub fn run(self) -> Committed {
        Committed { id: self.id, result: (self.work)() }
    }
}

impl fmt::Debug for Commit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Commit").field("id", &self.id).finish_non_exhaustive()
    }
}

/// The outcome of a [`Commit`], for [`Storage::finish_commit`].
#[derive(Debug)]
#[must_use = "the backend must be told how its commit went"]
pub struct Committed {
    /// The commit's number.
    pub id: u64,
    /// What the work returned.
    pub result: Result<(), StorageError>,
}

/// Check sizes against the limits every backend shares.
///
/// # Errors
///
/// [`StorageError::TooLarge`] when any part is over its limit.
pub fn check_sizes(table: &str, key: &[u8], value: Option<&[u8]>) -> Result<(), StorageError> {
    if table.len() > MAX_TABLE_NAME || key.len() > MAX_KEY_BYTES || value.is_some_and(|v| v.len() > MAX_VALUE_BYTES) {
        return Err(StorageError::TooLarge);
    }
    Ok(())
}

/// Behaviour every backend's tests check, written once.
#[cfg(test)]
pub(crate) mod contract {
    use super::{Change, Storage, TableStat};

    /// Put, get, replace, delete and the byte accounting of `stat`, on an
    /// empty store.
    pub(crate) fn put_get_replace_delete(s: &mut dyn Storage) {
        assert_eq!(s.get("t", b"k").unwrap(), None);
        s.put("t", b"k", b"v1").unwrap();
        s.put("t", b"k", b"value2").unwrap();
        assert_eq!(s.get("t", b"k").unwrap().as_deref(), Some(&b"value2"[..]));
        assert_eq!(s.stat("t").unwrap(), TableStat { entries: 1, bytes: 7 });
        assert!(s.delete("t", b"k").unwrap());
        assert!(!s.delete("t", b"k").unwrap());
        assert_eq!(s.stat("t").unwrap(), TableStat::default());
        assert_eq!(s.stat("missing").unwrap(), TableStat::default());
        assert_eq!(s.put_if_absent("t", b"once", b"first").unwrap(), None);
        assert_eq!(s.put_if_absent("t", b"once", b"second").unwrap().as_deref(), Some(&b"first"[..]));
        assert_eq!(s.get("t", b"once").unwrap().as_deref(), Some(&b"first"[..]));
        assert_eq!(s.stat("t").unwrap(), TableStat { entries: 1, bytes: 9 });
        assert!(s.delete("t", b"once").unwrap());
    }

    /// For a store that many clients share (`open` connects one more):
    /// eight clients racing `put_if_absent` on one empty key, one wins and
    /// one entry is left.
    pub(crate) fn racing_put_if_absent_has_one_winner<S: Storage + Send>(mut open: impl FnMut() -> S) {
        let winners: Vec<bool> = std::thread::scope(|scope| {
            let racers: Vec<_> = (0..8u8)
                .map(|i| {
                    let mut s = open();
                    scope.spawn(move || s.put_if_absent("t", b"k", &[i]).unwrap().is_none())
                })
                .collect();
            racers.into_iter().map(|r| r.join().unwrap()).collect()
        });
        assert_eq!(winners.iter().filter(|w| **w).count(), 1, "{winners:?}");
        assert_eq!(open().stat("t").unwrap(), TableStat { entries: 1, bytes: 2 });
    }

    /// `get_with_stat` and `apply` agree with the calls one by one: puts,
    /// replacements and deletes in order (a later change to a key wins),
    /// deletes of absent keys harmless, the byte accounting kept; an
    /// oversized change is refused.
    pub(crate) fn batched_calls(s: &mut dyn Storage) {
        assert_eq!(s.get_with_stat("b", b"k").unwrap(), (None, TableStat::default()));
        s.apply(&[
            Change::put("b-age", b"i1", b"", Some(4_000_000_000)),
            Change::put("b", b"k", b"v1", Some(4_000_000_000)),
            Change::put("b", b"gone", b"x", None),
            Change::delete("b", b"gone"),
            Change::delete("b", b"never"),
            Change::put("b", b"k", b"value2", None),
        ])
        .unwrap();
        assert_eq!(s.get_with_stat("b", b"k").unwrap(), (Some(b"value2".to_vec()), TableStat { entries: 1, bytes: 7 }));
        assert_eq!(s.get_with_stat("b-age", b"i1").unwrap(), (Some(Vec::new()), TableStat { entries: 1, bytes: 2 }));
        assert_eq!(s.get("b", b"gone").unwrap(), None);
        s.apply(&[]).unwrap();
        s.apply(&[Change::delete("b", b"k"), Change::delete("b-age", b"i1")]).unwrap();
        assert_eq!(s.stat("b").unwrap(), TableStat::default());
        assert_eq!(s.stat("b-age").unwrap(), TableStat::default());
        let huge = vec![0; super::MAX_VALUE_BYTES + 1];
        assert_eq!(s.apply(&[Change::put("b", b"k", &huge, None)]), Err(super::StorageError::TooLarge));
        assert_eq!(s.get("b", b"k").unwrap(), None);
    }

    /// `scan`: bytewise order (a shorter key before its extensions, 0xff
    /// last), strictly after `after`, at most `limit`, tables apart.
    pub(crate) fn scan_in_order(s: &mut dyn Storage) {
        let keys: [&[u8]; 6] = [b"\xff", b"b", b"a\x00", b"a", b"", b"ab"];
        for k in keys {
            s.put("t", k, k).unwrap();
        }
        s.put("other", b"a", b"x").unwrap();
        let all: Vec<Vec<u8>> = s
            .scan("t", None, 100)
            .unwrap()
            .into_iter()
            .map(|(k, v)| {
                assert_eq!(k, v);
                k
            })
            .collect();
        let want: Vec<Vec<u8>> = [&b""[..], b"a", b"a\x00", b"ab", b"b", b"\xff"].iter().map(|k| k.to_vec()).collect();
        assert_eq!(all, want);
        let page: Vec<Vec<u8>> = s.scan("t", Some(b"a"), 2).unwrap().into_iter().map(|(k, _)| k).collect();
        assert_eq!(page, want[2..4]);
        let from_empty: Vec<Vec<u8>> = s.scan("t", Some(b""), 1).unwrap().into_iter().map(|(k, _)| k).collect();
        assert_eq!(from_empty, want[1..2], "after the empty key is not from the start");
        assert!(s.scan("t", Some(b"\xff"), 10).unwrap().is_empty());
        assert!(s.scan("t", None, 0).unwrap().is_empty());
        assert!(s.scan("missing", None, 10).unwrap().is_empty());
    }
}
