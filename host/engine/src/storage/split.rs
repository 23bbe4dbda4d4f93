//! A backend that keeps some tables in memory and the rest in another
//! backend: how an operator makes one session cache volatile while ticket
//! keys and the other caches persist.
//!
//! Routing is by exact table name, fixed at construction. The tables of a
//! session cache are named by the core ([`cache_tables`]); the host names
//! them only to route them, never to read them.
//!
//! The alternative, rejected: a second core instance for volatile caches,
//! which would split the one total order of calls that record and replay
//! rely on.
//!
//! # Security
//!
//! Adds nothing of its own: each half keeps its own guarantees (the memory
//! backend zeroizes, the persistent one is sealed by the daemon).
//!
//! # Limitations
//!
//! `flush` reaches only the persistent half; the volatile half never
//! survives a restart, by design.

use std::collections::BTreeSet;

use super::{Change, Commit, Committed, Entry, MemoryStorage, Storage, StorageError, TableStat};

/// The storage tables of the session cache `name`, as the core names them
/// (guest `scache` module): the entries and their age index. The
/// durable-state tests (`host/tests/state.rs`) pin these names against the
/// real core.
pub fn cache_tables(name: &str) -> [String; 2] {
    [format!("scache/{name}"), format!("scache-age/{name}")]
}

/// Volatile tables in memory, every other table in `persistent`.
#[derive(Debug)]
pub struct Split<S: Storage> {
    persistent: S,
    volatile: MemoryStorage,
    volatile_tables: BTreeSet<String>,
}

/// Entries removed per scan while purging.
const PURGE_BATCH: u32 = 1024;

impl<S: Storage> Split<S> {
    /// Route `volatile_tables` to memory. Any entries the persistent
    /// backend still holds for them (from a time when they persisted) are
    /// deleted, so they can neither resurface nor linger on disk.
    ///
    /// # Errors
    ///
    /// The persistent backend's error while purging.
    pub fn new(mut persistent: S, volatile_tables: impl IntoIterator<Item = String>) -> Result<Self, StorageError> {
        let volatile_tables: BTreeSet<String> = volatile_tables.into_iter().collect();
        for table in &volatile_tables {
            loop {
                let batch = persistent.scan(table, None, PURGE_BATCH)?;
                for (key, _) in &batch {
                    persistent.delete(table, key)?;
                }
                if batch.len() < PURGE_BATCH as usize {
                    break;
                }
            }
        }
        Ok(Split { persistent, volatile: MemoryStorage::new(), volatile_tables })
    }

    /// The persistent half.
    pub fn persistent_mut(&mut self) -> &mut S {
        &mut self.persistent
    }

    fn route(&mut self, table: &str) -> &mut dyn Storage {
        if self.volatile_tables.contains(table) { &mut self.volatile } else { &mut self.persistent }
    }
}

impl<S: Storage> Storage for Split<S> {
    fn get(&mut self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.route(table).get(table, key)
    }

    fn put(&mut self, table: &str, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        self.route(table).put(table, key, value)
    }

    fn put_if_absent(&mut self, table: &str, key: &[u8], value: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.route(table).put_if_absent(table, key, value)
    }

    fn put_expiring(&mut self, table: &str, key: &[u8], value: &[u8], expires_at: u64) -> Result<(), StorageError> {
        self.route(table).put_expiring(table, key, value, expires_at)
    }

    fn delete(&mut self, table: &str, key: &[u8]) -> Result<bool, StorageError> {
        self.route(table).delete(table, key)
    }

    fn scan(&mut self, table: &str, after: Option<&[u8]>, limit: u32) -> Result<Vec<Entry>, StorageError> {
        self.route(table).scan(table, after, limit)
    }

    fn stat(&mut self, table: &str) -> Result<TableStat, StorageError> {
        self.route(table).stat(table)
    }

    fn get_with_stat(&mut self, table: &str, key: &[u8]) -> Result<(Option<Vec<u8>>, TableStat), StorageError> {
        self.route(table).get_with_stat(table, key)
    }

    fn apply(&mut self, changes: &[Change]) -> Result<(), StorageError> {
        let volatile = |c: &Change| self.volatile_tables.contains(&c.table);
        if changes.iter().all(volatile) {
            self.volatile.apply(changes)
        } else if !changes.iter().any(volatile) {
            self.persistent.apply(changes)
        } else {
            // Across both halves there is no one round trip to save.
            changes.iter().try_for_each(|change| change.make_on(self))
        }
    }

    fn flush(&mut self) -> Result<(), StorageError> {
        self.persistent.flush()
    }

    fn wants_commit(&self) -> bool {
        self.persistent.wants_commit()
    }

    fn start_commit(&mut self, durable: bool) -> Result<Option<Commit>, StorageError> {
        self.persistent.start_commit(durable)
    }

    fn finish_commit(&mut self, done: Committed) -> Result<(), StorageError> {
        self.persistent.finish_commit(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volatile_tables_stay_in_memory_and_old_copies_are_purged() {
        let mut disk = MemoryStorage::new();
        for i in 0..2500u32 {
            disk.put("scache/smtp", &i.to_be_bytes(), b"old").unwrap();
        }
        disk.put("tktkey", b"k", b"key").unwrap();
        let mut split = Split::new(disk, cache_tables("smtp")).unwrap();
        let stale = split.persistent_mut().stat("scache/smtp").unwrap();
        assert_eq!(stale, TableStat::default(), "stale entries purged from the persistent half");

        split.put("scache/smtp", b"id", b"session").unwrap();
        split.put("scache/smtpd", b"id", b"session").unwrap();
        assert_eq!(split.get("scache/smtp", b"id").unwrap().as_deref(), Some(&b"session"[..]));
        let disk = split.persistent_mut();
        assert_eq!(disk.get("scache/smtp", b"id").unwrap(), None);
        assert_eq!(disk.get("scache/smtpd", b"id").unwrap().as_deref(), Some(&b"session"[..]));
        assert_eq!(disk.get("tktkey", b"k").unwrap().as_deref(), Some(&b"key"[..]));
    }

    #[test]
    fn meets_the_backend_contract() {
        let mut split = Split::new(MemoryStorage::new(), ["t".to_owned()]).unwrap();
        crate::storage::contract::put_get_replace_delete(&mut split);
        crate::storage::contract::batched_calls(&mut split);
        crate::storage::contract::scan_in_order(&mut Split::new(MemoryStorage::new(), ["t".to_owned()]).unwrap());
        crate::storage::contract::scan_in_order(&mut Split::new(MemoryStorage::new(), []).unwrap());
    }
}
