//! The in-memory backend: ordered maps per table, gone when the process
//! exits.
//!
//! For caches an operator wants volatile, for tests, and as the reference
//! against which other backends are checked. Keys and values are boxed
//! slices rather than `Vec`s: they never grow, and a box is 8 bytes smaller
//! per entry.
//!
//! # Security
//!
//! Holds sessions and ticket keys in process memory; values are zeroized
//! when removed or overwritten, and on drop.
//!
//! # Limitations
//!
//! Nothing survives a restart. Memory is bounded only by the core's cache
//! bounds.

use std::collections::BTreeMap;
use std::ops::Bound;

use zeroize::Zeroize;

use super::{Entry, Storage, StorageError, TableStat, check_sizes};

#[derive(Default)]
struct Table {
    map: BTreeMap<Box<[u8]>, Box<[u8]>>,
    bytes: u64,
}

/// Tables in process memory.
#[derive(Default)]
pub struct MemoryStorage {
    tables: BTreeMap<String, Table>,
}

impl std::fmt::Debug for MemoryStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Sizes only: values are secret.
        let mut d = f.debug_struct("MemoryStorage");
        for (name, t) in &self.tables {
            d.field(name, &(t.map.len(), t.bytes));
        }
        d.finish()
    }
}

impl MemoryStorage {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Drop for MemoryStorage {
    fn drop(&mut self) {
        for table in self.tables.values_mut() {
            for value in table.map.values_mut() {
                value.zeroize();
            }
        }
    }
}

fn entry_bytes(key: &[u8], value: &[u8]) -> u64 {
    (key.len() + value.len()) as u64
}

impl Storage for MemoryStorage {
    fn get(&mut self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        check_sizes(table, key, None)?;
        Ok(self.tables.get(table).and_then(|t| t.map.get(key)).map(|v| v.to_vec()))
    }

    fn put(&mut self, table: &str, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        check_sizes(table, key, Some(value))?;
        let t = self.tables.entry(table.to_owned()).or_default();
        t.bytes += entry_bytes(key, value);
        if let Some(mut old) = t.map.insert(key.into(), value.into()) {
            t.bytes -= entry_bytes(key, &old);
            old.zeroize();
        }
        Ok(())
    }

    fn delete(&mut self, table: &str, key: &[u8]) -> Result<bool, StorageError> {
        check_sizes(table, key, None)?;
        let Some(t) = self.tables.get_mut(table) else {
            return Ok(false);
        };
        match t.map.remove(key) {
            Some(mut old) => {
                t.bytes -= entry_bytes(key, &old);
                old.zeroize();
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn scan(&mut self, table: &str, after: Option<&[u8]>, limit: u32) -> Result<Vec<Entry>, StorageError> {
        check_sizes(table, after.unwrap_or_default(), None)?;
        let Some(t) = self.tables.get(table) else {
            return Ok(Vec::new());
        };
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        Ok(t.map
            .range::<[u8], _>((lower, Bound::Unbounded))
            .take(limit as usize)
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect())
    }

    fn stat(&mut self, table: &str) -> Result<TableStat, StorageError> {
        check_sizes(table, &[], None)?;
        Ok(self
            .tables
            .get(table)
            .map_or(TableStat::default(), |t| TableStat { entries: t.map.len() as u64, bytes: t.bytes }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_get_replace_delete_and_accounting() {
        crate::storage::contract::put_get_replace_delete(&mut MemoryStorage::new());
        crate::storage::contract::batched_calls(&mut MemoryStorage::new());
    }

    #[test]
    fn scan_in_order() {
        crate::storage::contract::scan_in_order(&mut MemoryStorage::new());
    }

    #[test]
    fn scan_is_ordered_exclusive_and_limited() {
        let mut s = MemoryStorage::new();
        for k in [b"c", b"a", b"d", b"b"] {
            s.put("t", k, b"").unwrap();
        }
        let keys = |v: Vec<Entry>| v.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
        assert_eq!(keys(s.scan("t", None, 2).unwrap()), vec![b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(keys(s.scan("t", Some(b"b"), 10).unwrap()), vec![b"c".to_vec(), b"d".to_vec()]);
        assert!(s.scan("t", Some(b"d"), 10).unwrap().is_empty());
        assert!(s.scan("other", None, 10).unwrap().is_empty());
    }

    #[test]
    fn oversized_input_is_refused() {
        let mut s = MemoryStorage::new();
        let big = vec![0u8; super::super::MAX_KEY_BYTES + 1];
        assert_eq!(s.put("t", &big, b""), Err(StorageError::TooLarge));
        assert_eq!(s.get(&"x".repeat(200), b""), Err(StorageError::TooLarge));
    }

    #[test]
    fn debug_shows_no_values() {
        let mut s = MemoryStorage::new();
        s.put("t", b"k", b"secret-session").unwrap();
        assert!(!format!("{s:?}").contains("secret"));
    }
}
