//! Fake capabilities for driving the core natively in tests.
//!
//! [`FakeCaps`] has a scripted clock (it moves only when a test says so),
//! deterministic "entropy" (SHA-256 in counter mode over a seed, so a test
//! can be rerun bit for bit yet two seeds give different streams), an
//! in-memory ordered store that can be told to fail, a seed file kept in a
//! field (so a test can carry it from one "run" to the next), and a log that
//! tests can read back.
//!
//! # Security
//!
//! Nothing here is secret or random: it must never be linked into a
//! production build, which is why it sits behind `cfg(test)` or the
//! `testing` feature.
//!
//! # Limitations
//!
//! Storage byte accounting matches the host's memory backend (key plus value
//! lengths), not any on-disk format.

use alloc::collections::BTreeMap;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use sha2::{Digest, Sha256};

use crate::caps::{Capabilities, Change, Entry, Level, StorageError, TableStat};

/// One second in the clock's unit.
pub const SECOND: u64 = 1_000_000_000;

/// Scripted clock, seeded entropy, in-memory storage, captured log.
pub struct FakeCaps {
    /// Current time in nanoseconds since the epoch; tests move it.
    pub now: u64,
    entropy_seed: u64,
    entropy_counter: u64,
    /// Entropy bytes handed out so far.
    pub entropy_drawn: usize,
    /// Tables by name; keys sort bytewise as in every real backend.
    pub tables: BTreeMap<String, BTreeMap<Vec<u8>, Vec<u8>>>,
    /// When set, every storage call fails with this error.
    pub storage_fault: Option<StorageError>,
    /// Storage calls made so far, failed ones included.
    pub storage_calls: u64,
    /// The expiry hint of every entry last written with `put_expiring`.
    pub expiries: BTreeMap<(String, Vec<u8>), u64>,
    /// Every message logged, in order.
    pub logs: Vec<(Level, String)>,
    /// The seed file's content, as a host keeps it between runs.
    pub seed_file: Option<Vec<u8>>,
    /// Seeds taken so far (each removed from `seed_file` as it is taken).
    pub seeds_taken: Vec<Vec<u8>>,
    /// Seeds saved so far, in order.
    pub seeds_saved: Vec<Vec<u8>>,
    /// When set, every seed save fails with this reason.
    pub seed_fault: Option<String>,
}

impl FakeCaps {
    /// Start at `now_secs` with an entropy stream derived from `seed`.
    pub fn new(now_secs: u64, seed: u64) -> Self {
        FakeCaps {
            now: now_secs * SECOND,
            entropy_seed: seed,
            entropy_counter: 0,
            entropy_drawn: 0,
            tables: BTreeMap::new(),
            storage_fault: None,
            storage_calls: 0,
            expiries: BTreeMap::new(),
            logs: Vec::new(),
            seed_file: None,
            seeds_taken: Vec::new(),
            seeds_saved: Vec::new(),
            seed_fault: None,
        }
    }

    /// Move the clock forward.
    pub fn advance_secs(&mut self, secs: u64) {
        self.now += secs * SECOND;
    }

    /// Current time in whole seconds.
    pub fn now_secs(&self) -> u64 {
        self.now / SECOND
    }

    /// Number of entries in `table`.
    pub fn len(&self, table: &str) -> usize {
        self.tables.get(table).map_or(0, BTreeMap::len)
    }

    /// Whether any logged message contains `needle`.
    pub fn logged(&self, needle: &str) -> bool {
        self.logs.iter().any(|(_, m)| m.contains(needle))
    }

    fn check(&mut self) -> Result<(), StorageError> {
        self.storage_calls += 1;
        match &self.storage_fault {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }
}

impl Capabilities for FakeCaps {
    fn now_nanos(&mut self) -> u64 {
        self.now
    }

    fn fill_entropy(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(32) {
            let mut h = Sha256::new();
            h.update(self.entropy_seed.to_be_bytes());
            h.update(self.entropy_counter.to_be_bytes());
            self.entropy_counter += 1;
            let block = h.finalize();
            chunk.copy_from_slice(&block[..chunk.len()]);
        }
        self.entropy_drawn += buf.len();
    }

    fn get(&mut self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.check()?;
        Ok(self.tables.get(table).and_then(|t| t.get(key)).cloned())
    }

    fn put(&mut self, table: &str, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        self.check()?;
        self.tables.entry(table.to_string()).or_default().insert(key.to_vec(), value.to_vec());
        Ok(())
    }

    fn put_expiring(&mut self, table: &str, key: &[u8], value: &[u8], expires_at: u64) -> Result<(), StorageError> {
        self.put(table, key, value)?;
        self.expiries.insert((table.to_string(), key.to_vec()), expires_at);
        Ok(())
    }

    fn put_if_absent(&mut self, table: &str, key: &[u8], value: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.check()?;
        let table = self.tables.entry(table.to_string()).or_default();
        if let Some(existing) = table.get(key) {
            return Ok(Some(existing.clone()));
        }
        table.insert(key.to_vec(), value.to_vec());
        Ok(None)
    }

    fn delete(&mut self, table: &str, key: &[u8]) -> Result<bool, StorageError> {
        self.check()?;
        Ok(self.tables.get_mut(table).is_some_and(|t| t.remove(key).is_some()))
    }

    fn scan(&mut self, table: &str, after: Option<&[u8]>, limit: u32) -> Result<Vec<Entry>, StorageError> {
        use core::ops::Bound;
        self.check()?;
        let Some(t) = self.tables.get(table) else {
            return Ok(Vec::new());
        };
        let lower = match after {
            Some(k) => Bound::Excluded(k.to_vec()),
            None => Bound::Unbounded,
        };
        Ok(t.range((lower, Bound::Unbounded)).take(limit as usize).map(|(k, v)| (k.clone(), v.clone())).collect())
    }

    fn stat(&mut self, table: &str) -> Result<TableStat, StorageError> {
        self.check()?;
        Ok(self.tables.get(table).map_or(TableStat::default(), |t| TableStat {
            entries: t.len() as u64,
            bytes: t.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum(),
        }))
    }

    fn get_with_stat(&mut self, table: &str, key: &[u8]) -> Result<(Option<Vec<u8>>, TableStat), StorageError> {
        let value = self.get(table, key)?;
        // One call, as a host would count it.
        self.storage_calls -= 1;
        Ok((value, self.stat(table)?))
    }

    fn apply(&mut self, changes: &[Change<'_>]) -> Result<(), StorageError> {
        self.check()?;
        let calls = self.storage_calls;
        for change in changes {
            change.make_on(self)?;
        }
        self.storage_calls = calls;
        Ok(())
    }

    fn take_seed(&mut self) -> Option<Vec<u8>> {
        let seed = self.seed_file.take()?;
        self.seeds_taken.push(seed.clone());
        Some(seed)
    }

    fn save_seed(&mut self, seed: &[u8]) -> Result<(), String> {
        if let Some(why) = &self.seed_fault {
            return Err(why.clone());
        }
        self.seed_file = Some(seed.to_vec());
        self.seeds_saved.push(seed.to_vec());
        Ok(())
    }

    fn log(&mut self, level: Level, message: &str) {
        self.logs.push((level, message.to_string()));
    }
}
