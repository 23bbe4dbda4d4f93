//! Session caches: entry format, expiry, bounds, eviction and cleanup.
//!
//! A cache maps a client-chosen `cache_id` to an opaque session (DER
//! `SSL_SESSION` for Postfix) with the time it was stored. It lives in two
//! storage tables:
//!
//! - `scache/<name>`: key `HMAC-SHA-256(salt, cache_id)` ([`crate::idkey`]),
//!   value `version (1) ‖ stored_at (u64 BE seconds) ‖ session`.
//! - `scache-age/<name>`: key `stored_at (u64 BE) ‖ that key`, empty
//!   value. Ordered by age, so the oldest entries (the first to expire, and
//!   the first to evict) are always at the front of a scan.
//!
//! Ids are keyed rather than stored: they embed peer addresses and host
//! names, which then never reach the store in clear, nor can a guess be
//! confirmed without the salt; and every key has the same 32-byte size
//! whatever a client sends. Until the manager gives a cache its
//! [`IdKey`] (before any request; the unit tests below run without one), ids
//! are keyed with plain SHA-256, as stores were before the salt. While the
//! id key says old entries may still be fresh, every operation first moves
//! the entry under the id's old key, if any, to its new key.
//!
//! Expiry follows tlsmgr: an entry stored at `t` is fresh while
//! `t + T >= now`. A lookup that finds an expired or malformed entry deletes
//! it and misses. [`SessionCache::sweep`] removes expired entries from the
//! front of the age index, a bounded number per call, so a cache of a
//! million entries never stalls a request.
//!
//! Bounds (entries and bytes of the primary table) are enforced on every
//! update by evicting from the front of the age index. Because all entries
//! of a cache share one timeout, the front holds the expired entries first
//! and then the oldest live ones: "evict expired first, then oldest" is one
//! scan.
//!
//! On a store shared by a fleet, where every call is a round trip, an
//! update reads the entry it replaces and the tables' sizes only when the
//! sizes it last read are more than [`HEADROOM_SECS`] old, or when they and
//! the updates since could reach half of a bound; otherwise it writes the
//! new entry without reading, in one call, and leaves the replaced entry's
//! index entry dangling. A fleet's caches therefore stay within their
//! bounds as long as its other nodes add less than half of a bound within
//! that second; the age index, dangling entries included, under one and a
//! half times `max_entries` plus that much.
//!
//! Write order keeps one invariant through a crash at any point: *every
//! primary entry has an age-index entry*. Updates write the new index entry
//! before the primary and remove the old index entry after it; deletions
//! remove the primary before its index entry. A crash can leave a dangling
//! index entry (its primary gone or newer), which the sweep and eviction
//! recognise by comparing timestamps and drop; it can never leave a primary
//! entry that nothing will ever expire.
//!
//! # Security
//!
//! Ids and sessions come from network clients: sizes are bounded and ids are
//! only hashed. Stored bytes are untrusted and decoded defensively; anything
//! malformed is deleted, never served. Sessions are secret (they hold TLS
//! master secrets); they are never logged.
//!
//! # Limitations
//!
//! The age index costs 40 bytes of key per entry; on a shared store, entries
//! replaced without a read leave theirs until they expire, up to half of
//! `max_entries` more. Counters (hits, misses...) live in memory and
//! restart from zero with the instance.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use crate::caps::{Capabilities, Change, Level};
use crate::config::CacheSettings;
use crate::error::{Error, Result};
use crate::idkey::{IdKey, legacy_key};

/// Format version of primary values; a stored entry of any other version is
/// treated as malformed and deleted.
pub const ENTRY_VERSION: u8 = 1;
/// Bytes of a primary value before the session: version and timestamp.
pub const ENTRY_HEADER: usize = 1 + 8;
/// Bytes of a primary key: SHA-256 of the id.
pub const KEY_LEN: usize = 32;
/// Storage bytes a session costs in the primary table beyond its own length.
pub const ENTRY_OVERHEAD: u64 = (KEY_LEN + ENTRY_HEADER) as u64;
/// Bytes of an age-index key.
const INDEX_KEY_LEN: usize = 8 + KEY_LEN;
/// Index entries fetched per eviction scan.
const EVICT_PAGE: u32 = 16;
/// Most eviction scans one update may do. Each scan frees at least one
/// entry unless the index holds only dangling entries, so this bounds the
/// work of a single update without giving up early in practice.
const EVICT_ROUNDS: usize = 64;
/// Seconds a [`Headroom`] read by one update on a shared store vouches for
/// the updates after it.
const HEADROOM_SECS: u64 = 1;

/// Counters of one cache since the instance started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Lookups that returned a session.
    pub hits: u64,
    /// Lookups that returned nothing.
    pub misses: u64,
    /// Updates stored.
    pub updates: u64,
    /// Deletes that removed an entry.
    pub deletes: u64,
    /// Entries removed because they had expired or were malformed.
    pub expired: u64,
    /// Entries removed to keep the cache within its bounds.
    pub evicted: u64,
}

/// What one [`SessionCache::sweep`] call did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sweep {
    /// Index entries examined and removed.
    pub removed: u32,
    /// True when the budget ran out before the first fresh entry.
    pub more: bool,
    /// When the oldest remaining entry expires (seconds since the epoch).
    pub next_expiry_secs: Option<u64>,
}

/// What an update on a shared store knows of the cache's size without
/// asking the store: the sizes it read at `read_at`, plus every update this
/// core has made since, each counted as a new entry. Young and under half
/// of every bound, it lets an update write without reading first.
#[derive(Debug, Clone, Copy)]
struct Headroom {
    /// When the sizes were read (seconds since the epoch).
    read_at: u64,
    /// Entries of the primary table, at most.
    entries: u64,
    /// Bytes of the primary table, at most.
    bytes: u64,
    /// Entries of the age index, dangling ones included, at most.
    index_entries: u64,
}

impl Headroom {
    /// These sizes after one more update of `entry_bytes`, if they are
    /// still young at `now_secs` and under half of every bound then.
    fn after(self, settings: &CacheSettings, now_secs: u64, entry_bytes: u64) -> Option<Headroom> {
        let young = now_secs.checked_sub(self.read_at).is_some_and(|age| age <= HEADROOM_SECS);
        let next = Headroom {
            entries: self.entries + 1,
            bytes: self.bytes + entry_bytes,
            index_entries: self.index_entries + 1,
            ..self
        };
        let far = next.entries <= settings.max_entries / 2
            && next.bytes <= settings.max_bytes / 2
            && next.index_entries <= settings.max_entries / 2;
        (young && far).then_some(next)
    }
}

/// One named session cache over the storage capability.
pub struct SessionCache {
    settings: CacheSettings,
    table: String,
    index: String,
    counters: Counters,
    /// On a store shared by a fleet: entries are written with an expiry
    /// hint, so that the store drops what no core deletes, and an update
    /// makes its writes in one call ([`Capabilities::apply`]), after one
    /// read ([`Capabilities::get_with_stat`]) unless [`Headroom`] spares
    /// it, since each call is a round trip to it.
    shared: bool,
    /// On a shared store, the sizes the last update that read them saw.
    headroom: Option<Headroom>,
    /// How ids become keys; `None` keys with plain SHA-256.
    id_key: Option<IdKey>,
}

fn index_key(stored_at: u64, key: &[u8; KEY_LEN]) -> [u8; INDEX_KEY_LEN] {
    let mut k = [0u8; INDEX_KEY_LEN];
    k[..8].copy_from_slice(&stored_at.to_be_bytes());
    k[8..].copy_from_slice(key);
    k
}

fn parse_index_key(k: &[u8]) -> Option<(u64, [u8; KEY_LEN])> {
    let k: &[u8; INDEX_KEY_LEN] = k.try_into().ok()?;
    let (ts, key) = k.split_at(8);
    Some((u64::from_be_bytes(ts.try_into().ok()?), key.try_into().ok()?))
}

fn encode_entry(stored_at: u64, session: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(ENTRY_HEADER + session.len());
    v.push(ENTRY_VERSION);
    v.extend_from_slice(&stored_at.to_be_bytes());
    v.extend_from_slice(session);
    v
}

/// The timestamp of a stored value, or `None` when it is malformed.
fn entry_stored_at(value: &[u8]) -> Option<u64> {
    match value {
        [ENTRY_VERSION, rest @ ..] if rest.len() >= 8 => Some(u64::from_be_bytes(rest[..8].try_into().ok()?)),
        _ => None,
    }
}

impl SessionCache {
    /// A cache with these settings; its tables are named after it.
    pub fn new(settings: CacheSettings) -> Self {
        let table = format!("scache/{}", settings.name);
        let index = format!("scache-age/{}", settings.name);
        SessionCache {
            settings,
            table,
            index,
            counters: Counters::default(),
            shared: false,
            headroom: None,
            id_key: None,
        }
    }

    /// The cache's settings.
    pub fn settings(&self) -> &CacheSettings {
        &self.settings
    }

    /// Replace the settings (same name); entries are kept.
    pub fn reconfigure(&mut self, settings: CacheSettings) {
        debug_assert_eq!(settings.name, self.settings.name);
        self.settings = settings;
    }

    /// Treat the store as shared by a fleet from now on: every entry
    /// written carries its expiry as a hint (a node that stops for good
    /// leaves entries nobody else would sweep), and updates batch their
    /// calls. A node's own store is written with plain `put`, one call at
    /// a time, as recorded traces expect.
    pub fn set_shared(&mut self, on: bool) {
        self.shared = on;
        self.headroom = None;
    }

    /// Key ids with `id_key` from now on.
    pub fn set_id_key(&mut self, id_key: IdKey) {
        self.id_key = Some(id_key);
    }

    /// The storage key of `id`.
    fn entry_key(&self, id: &str) -> [u8; KEY_LEN] {
        self.id_key.as_ref().map_or_else(|| legacy_key(id), |k| k.key(id))
    }

    /// Move the entry under `id`'s key from before ids were keyed, if there
    /// is one and it may still be fresh, to its key now; returns that key.
    /// A well-formed old entry replaces nothing: if the new key already
    /// holds an entry, the old one is only removed.
    fn migrate(&mut self, caps: &mut impl Capabilities, now_secs: u64, id: &str) -> Result<[u8; KEY_LEN]> {
        let key = self.entry_key(id);
        let Some(old) = self.id_key.as_ref().and_then(|k| k.legacy_key(id, now_secs)) else {
            return Ok(key);
        };
        let Some(value) = caps.get(&self.table, &old)? else {
            return Ok(key);
        };
        let stored_at = entry_stored_at(&value);
        if let Some(ts) = stored_at
            && caps.get(&self.table, &key)?.is_none()
        {
            // The new entry before the old one goes: a crash in between
            // leaves two copies, never none.
            self.write(caps, &self.index, &index_key(ts, &key), &[], ts)?;
            self.write(caps, &self.table, &key, &value, ts)?;
        }
        self.remove(caps, &old, stored_at)?;
        Ok(key)
    }

    /// Write one of the cache's entries, stored at `stored_at`.
    fn write(&self, caps: &mut impl Capabilities, table: &str, key: &[u8], value: &[u8], stored_at: u64) -> Result<()> {
        Ok(Change { table, key, value: Some(value), expires_at: self.expiry_hint(stored_at) }.make_on(caps)?)
    }

    /// When an entry stored at `stored_at` is of no use to a shared store.
    fn expiry_hint(&self, stored_at: u64) -> Option<u64> {
        // Fresh while stored_at + T >= now: of no use from the second after.
        self.shared.then(|| stored_at.saturating_add(u64::from(self.settings.timeout_secs)).saturating_add(1))
    }

    /// `changes` in order: in one call on a shared store, else one call
    /// each, as recorded traces expect.
    fn apply(&self, caps: &mut impl Capabilities, changes: &[Change<'_>]) -> Result<()> {
        if self.shared {
            return Ok(caps.apply(changes)?);
        }
        // Off a shared store no change carries an expiry hint: plain puts.
        for change in changes {
            change.make_on(caps)?;
        }
        Ok(())
    }

    /// Counters since the instance started.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    fn expired(&self, stored_at: u64, now_secs: u64) -> bool {
        stored_at.saturating_add(u64::from(self.settings.timeout_secs)) < now_secs
    }

    /// The fresh session stored under `id`, deleting it if expired or
    /// malformed.
    ///
    /// # Errors
    ///
    /// [`Error::Storage`] when the storage capability fails.
    pub fn lookup(&mut self, caps: &mut impl Capabilities, now_secs: u64, id: &str) -> Result<Option<Vec<u8>>> {
        let key = self.migrate(caps, now_secs, id)?;
        let Some(mut value) = caps.get(&self.table, &key)? else {
            self.counters.misses += 1;
            return Ok(None);
        };
        match entry_stored_at(&value) {
            Some(stored_at) if !self.expired(stored_at, now_secs) => {
                self.counters.hits += 1;
                value.drain(..ENTRY_HEADER);
                Ok(Some(value))
            }
            stored_at => {
                if stored_at.is_none() {
                    caps.log(Level::Warn, &format!("{} cache: malformed entry removed", self.settings.name));
                }
                self.remove(caps, &key, stored_at)?;
                self.counters.expired += 1;
                self.counters.misses += 1;
                Ok(None)
            }
        }
    }

    /// Store `session` under `id` at `now_secs`, replacing any previous
    /// entry and evicting the oldest entries to stay within bounds.
    ///
    /// # Errors
    ///
    /// [`Error::SessionTooLarge`] beyond `max_session_bytes`;
    /// [`Error::CacheFull`] if no room could be made; [`Error::Storage`].
    pub fn update(&mut self, caps: &mut impl Capabilities, now_secs: u64, id: &str, session: &[u8]) -> Result<()> {
        if session.len() > self.settings.max_session_bytes as usize {
            return Err(Error::SessionTooLarge(u32::try_from(session.len()).unwrap_or(u32::MAX)));
        }
        let key = self.migrate(caps, now_secs, id)?;
        let value = encode_entry(now_secs, session);
        let expires_at = self.expiry_hint(now_secs);
        let index_entry = index_key(now_secs, &key);
        let entry_bytes = (KEY_LEN + value.len()) as u64;
        let blind = self.headroom.and_then(|h| h.after(&self.settings, now_secs, entry_bytes));
        if let Some(headroom) = blind {
            // Far from the bounds on a shared store: write without reading
            // the entry this replaces, one round trip instead of two. Its
            // index entry, if any, is left dangling, for the sweep or the
            // store's expiry to drop when it expires (the sweep and
            // eviction tell a dangling entry by its timestamp); the index
            // grows by one for each, which `headroom` counts. Rejected:
            // reading first always, which made updates the slowest request
            // of a node on Redis (two round trips against a lookup's one).
            self.headroom = None; // until the write is known made
            self.apply(
                caps,
                &[
                    Change { table: &self.index, key: &index_entry, value: Some(&[][..]), expires_at },
                    Change { table: &self.table, key: &key, value: Some(&value), expires_at },
                ],
            )?;
            self.headroom = Some(headroom);
            self.counters.updates += 1;
            return Ok(());
        }
        let (old, stat, index_stat) = if self.shared {
            let (old, stat) = caps.get_with_stat(&self.table, &key)?;
            // The index's size too, dangling entries included: writes
            // without a read add to it, and must stop before it is large.
            (old, stat, Some(caps.stat(&self.index)?))
        } else {
            let old = caps.get(&self.table, &key)?;
            (old, caps.stat(&self.table)?, None)
        };
        let old_len = old.as_ref().map_or(0, |v| (KEY_LEN + v.len()) as u64);
        let old_stored_at = old.as_deref().and_then(entry_stored_at);

        let entries = stat.entries + u64::from(old.is_none());
        let bytes = (stat.bytes - old_len.min(stat.bytes)) + entry_bytes;
        self.make_room(caps, now_secs, &key, entries, bytes)?;

        // Index first, so the primary entry is never without one.
        let stale_index = old_stored_at.filter(|&ts| ts != now_secs).map(|ts| index_key(ts, &key));
        let mut changes = Vec::with_capacity(3);
        changes.push(Change { table: &self.index, key: &index_entry, value: Some(&[][..]), expires_at });
        changes.push(Change { table: &self.table, key: &key, value: Some(&value), expires_at });
        if let Some(stale) = &stale_index {
            changes.push(Change { table: &self.index, key: stale, value: None, expires_at: None });
        }
        self.apply(caps, &changes)?;
        // Sizes before any eviction and with the new index entry counted:
        // at least what the store holds now, as the headroom must be.
        self.headroom =
            index_stat.map(|index| Headroom { read_at: now_secs, entries, bytes, index_entries: index.entries + 1 });
        self.counters.updates += 1;
        Ok(())
    }

    /// Remove `id`; true when it was present.
    ///
    /// # Errors
    ///
    /// [`Error::Storage`] when the storage capability fails.
    pub fn delete(&mut self, caps: &mut impl Capabilities, now_secs: u64, id: &str) -> Result<bool> {
        let key = self.migrate(caps, now_secs, id)?;
        let Some(value) = caps.get(&self.table, &key)? else {
            return Ok(false);
        };
        self.remove(caps, &key, entry_stored_at(&value))?;
        self.counters.deletes += 1;
        Ok(true)
    }

    /// The fresh session under `id`, removed in the same core call, so that
    /// it is handed out at most once however many processes ask (rustls
    /// takes TLS 1.3 sessions this way). Counts as a hit and a delete.
    ///
    /// # Errors
    ///
    /// [`Error::Storage`] when the storage capability fails; a session that
    /// was found but could not be removed is not returned.
    pub fn take(&mut self, caps: &mut impl Capabilities, now_secs: u64, id: &str) -> Result<Option<Vec<u8>>> {
        let Some(session) = self.lookup(caps, now_secs, id)? else {
            return Ok(None);
        };
        // Rereading the entry is cheap (the host's overlay holds it) and
        // keeps one removal path for the index and the counters.
        self.delete(caps, now_secs, id)?;
        Ok(Some(session))
    }

    /// Remove up to `budget` expired entries from the front of the age index.
    ///
    /// # Errors
    ///
    /// [`Error::Storage`] when the storage capability fails; entries removed
    /// before the failure stay removed.
    pub fn sweep(&mut self, caps: &mut impl Capabilities, now_secs: u64, budget: u32) -> Result<Sweep> {
        let mut sweep = Sweep::default();
        if budget == 0 {
            sweep.more = true;
            return Ok(sweep);
        }
        for (ikey, _) in caps.scan(&self.index, None, budget)? {
            match parse_index_key(&ikey) {
                Some((ts, _)) if !self.expired(ts, now_secs) => {
                    sweep.next_expiry_secs = ts.checked_add(u64::from(self.settings.timeout_secs) + 1);
                    return Ok(sweep);
                }
                Some((ts, key)) => {
                    if self.drop_indexed(caps, ts, &key)? {
                        self.counters.expired += 1;
                    }
                }
                None => {
                    caps.delete(&self.index, &ikey)?;
                }
            }
            sweep.removed += 1;
        }
        sweep.more = sweep.removed == budget;
        Ok(sweep)
    }

    /// Entry count and byte total of the primary table.
    ///
    /// # Errors
    ///
    /// [`Error::Storage`] when the storage capability fails.
    pub fn size(&self, caps: &mut impl Capabilities) -> Result<crate::caps::TableStat> {
        Ok(caps.stat(&self.table)?)
    }

    /// Evict from the front of the age index until `entries` and `bytes`
    /// (the cache's size once the pending update is written) fit the bounds.
    fn make_room(
        &mut self,
        caps: &mut impl Capabilities,
        now_secs: u64,
        incoming: &[u8; KEY_LEN],
        mut entries: u64,
        mut bytes: u64,
    ) -> Result<()> {
        let fits = |e: u64, b: u64, s: &CacheSettings| e <= s.max_entries && b <= s.max_bytes;
        let mut rounds = 0;
        // Entries this loop skips stay in the index, so page forward from
        // the last one seen instead of rescanning the front.
        let mut cursor: Option<Vec<u8>> = None;
        while !fits(entries, bytes, &self.settings) {
            rounds += 1;
            let page = caps.scan(&self.index, cursor.as_deref(), EVICT_PAGE)?;
            cursor = page.last().map(|(k, _)| k.clone());
            if page.is_empty() || rounds > EVICT_ROUNDS {
                caps.log(
                    Level::Warn,
                    &format!("{} cache: cannot make room within its bounds; session not stored", self.settings.name),
                );
                return Err(Error::CacheFull(self.settings.name.clone()));
            }
            for (ikey, _) in page {
                if fits(entries, bytes, &self.settings) {
                    break;
                }
                let Some((ts, key)) = parse_index_key(&ikey) else {
                    caps.delete(&self.index, &ikey)?;
                    continue;
                };
                if key == *incoming {
                    // The entry being replaced; its size is already
                    // accounted for, and its index entry goes after the write.
                    continue;
                }
                let value_len = caps.get(&self.table, &key)?.map(|v| v.len());
                if self.drop_indexed(caps, ts, &key)? {
                    entries -= 1;
                    bytes -= (KEY_LEN + value_len.unwrap_or(0)) as u64;
                    if self.expired(ts, now_secs) {
                        self.counters.expired += 1;
                    } else {
                        self.counters.evicted += 1;
                    }
                }
            }
        }
        Ok(())
    }

    /// Remove the index entry `(ts, key)` and, if the primary entry still
    /// carries that timestamp (or is malformed), the primary entry too. True when a primary
    /// entry was removed.
    fn drop_indexed(&mut self, caps: &mut impl Capabilities, ts: u64, key: &[u8; KEY_LEN]) -> Result<bool> {
        let current = caps.get(&self.table, key)?;
        // Remove the primary if this index entry owns it, or if it is
        // malformed: such an entry could never be expired otherwise.
        let owned = current.as_deref().is_some_and(|v| entry_stored_at(v).is_none_or(|t| t == ts));
        if owned {
            caps.delete(&self.table, key)?;
        }
        caps.delete(&self.index, &index_key(ts, key))?;
        Ok(owned)
    }

    /// Remove a primary entry and, when its timestamp is known, its index
    /// entry (primary first: a crash leaves at worst a dangling index entry).
    fn remove(&mut self, caps: &mut impl Capabilities, key: &[u8; KEY_LEN], stored_at: Option<u64>) -> Result<()> {
        caps.delete(&self.table, key)?;
        if let Some(ts) = stored_at {
            caps.delete(&self.index, &index_key(ts, key))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caps::StorageError;
    use crate::testing::FakeCaps;
    use alloc::string::ToString;
    use alloc::vec;
    use sha2::{Digest, Sha256};

    const T0: u64 = 1_700_000_000;
    const TABLE: &str = "scache/smtpd";
    const INDEX: &str = "scache-age/smtpd";

    fn settings(timeout_secs: u32, max_entries: u64, max_bytes: u64) -> CacheSettings {
        CacheSettings {
            name: "smtpd".into(),
            enabled: true,
            timeout_secs,
            max_entries,
            max_bytes,
            max_session_bytes: 1024,
        }
    }

    fn cache(timeout_secs: u32) -> SessionCache {
        SessionCache::new(settings(timeout_secs, 1_000_000, 1 << 30))
    }

    /// Whether a primary entry for `id` is in storage.
    fn stored(caps: &FakeCaps, id: &str) -> bool {
        caps.tables.get(TABLE).is_some_and(|t| t.contains_key(legacy_key(id).as_slice()))
    }

    /// The ids among `ids` that have a primary entry.
    fn present<'a>(caps: &FakeCaps, ids: &[&'a str]) -> Vec<&'a str> {
        ids.iter().copied().filter(|id| stored(caps, id)).collect()
    }

    fn counters(hits: u64, misses: u64, updates: u64, deletes: u64, expired: u64, evicted: u64) -> Counters {
        Counters { hits, misses, updates, deletes, expired, evicted }
    }

    #[test]
    fn update_then_lookup_hits_and_other_ids_miss() {
        let mut caps = FakeCaps::new(T0, 1);
        let mut c = cache(3600);
        c.update(&mut caps, T0, "id-a", b"session-a").unwrap();
        assert_eq!(c.lookup(&mut caps, T0, "id-a").unwrap(), Some(b"session-a".to_vec()));
        assert_eq!(c.lookup(&mut caps, T0, "id-b").unwrap(), None);
        assert_eq!(c.counters(), counters(1, 1, 1, 0, 0, 0));

        // The stored layout: SHA-256 of the id, never the id in clear.
        let hash: [u8; 32] = Sha256::digest(b"id-a").into();
        let mut value = vec![ENTRY_VERSION];
        value.extend_from_slice(&T0.to_be_bytes());
        value.extend_from_slice(b"session-a");
        let primary: Vec<_> = caps.tables[TABLE].iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        assert_eq!(primary, vec![(hash.to_vec(), value)]);
        let mut ikey = T0.to_be_bytes().to_vec();
        ikey.extend_from_slice(&hash);
        let index: Vec<_> = caps.tables[INDEX].iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        assert_eq!(index, vec![(ikey, Vec::new())]);
    }

    /// On a shared store an update whose sizes are old costs three calls,
    /// a read, the index's size and a write, however many entries it
    /// touches, and leaves the tables as the one-call-at-a-time path does,
    /// with expiry hints.
    #[test]
    fn a_shared_update_reads_once_and_writes_once() {
        let run = |shared: bool| {
            let mut caps = FakeCaps::new(T0, 1);
            let mut c = cache(60);
            c.set_shared(shared);
            c.update(&mut caps, T0, "id", b"first").unwrap();
            let before = caps.storage_calls;
            // A later second, past the headroom: the old index entry goes.
            c.update(&mut caps, T0 + 5, "id", b"second").unwrap();
            (caps.storage_calls - before, caps.tables.clone(), caps.expiries.clone())
        };
        let (calls, tables, hints) = run(true);
        assert_eq!(calls, 3);
        let (one_by_one, same_tables, no_hints) = run(false);
        assert_eq!(one_by_one, 5); // get, stat, put, put, delete
        assert_eq!(tables, same_tables);
        assert!(no_hints.is_empty());
        let expires = T0 + 5 + 60 + 1;
        let hinted: Vec<(&str, u64)> = hints.iter().map(|((t, _), e)| (t.as_str(), *e)).collect();
        assert!(hinted.contains(&(TABLE, expires)) && hinted.contains(&(INDEX, expires)), "{hinted:?}");

        // A failed write fails the update.
        let mut caps = FakeCaps::new(T0, 1);
        let mut c = cache(60);
        c.set_shared(true);
        caps.storage_fault = Some(StorageError::Unavailable("down".into()));
        assert!(matches!(c.update(&mut caps, T0, "id", b"s"), Err(Error::Storage(_))));
    }

    /// On a shared store, within a second of a read and far from the
    /// bounds, an update is one call: the entry it replaces leaves a
    /// dangling index entry, which never serves the old session and which
    /// the sweep drops once expired. The writes without a read stop at half
    /// of a bound, counting the index's dangling entries, and a second
    /// after the read; a failed write ends them too.
    #[test]
    fn a_shared_update_far_from_its_bounds_writes_without_reading() {
        let mut caps = FakeCaps::new(T0, 1);
        let mut c = SessionCache::new(settings(60, 20, 1 << 20));
        c.set_shared(true);
        let calls = |caps: &mut FakeCaps, c: &mut SessionCache, now: u64, id: &str, session: &[u8]| {
            let before = caps.storage_calls;
            c.update(caps, now, id, session).unwrap();
            caps.storage_calls - before
        };
        assert_eq!(calls(&mut caps, &mut c, T0, "id", b"v0"), 3, "no sizes yet: read");
        // Index: 1 after the read; 9 more writes reach half of 20.
        for i in 1..10 {
            let session = format!("v{i}");
            assert_eq!(calls(&mut caps, &mut c, T0 + i % 2, "id", session.as_bytes()), 1, "write {i}");
        }
        assert_eq!(caps.len(TABLE), 1);
        assert_eq!(caps.len(INDEX), 2, "one dangling entry for each second");
        assert_eq!(c.lookup(&mut caps, T0 + 1, "id").unwrap().as_deref(), Some(&b"v9"[..]));
        assert_eq!(calls(&mut caps, &mut c, T0 + 1, "id", b"v10"), 3, "half of max_entries: read");
        assert_eq!(calls(&mut caps, &mut c, T0 + 1, "id", b"v11"), 1);
        assert_eq!(calls(&mut caps, &mut c, T0 + 3, "id", b"v12"), 3, "two seconds old: read");
        // The read replaced its entry and dropped that one's index entry;
        // the one from T0 dangles until it expires, then the sweep takes it
        // and leaves the session.
        assert_eq!((caps.len(TABLE), caps.len(INDEX)), (1, 2));
        let sweep = c.sweep(&mut caps, T0 + 61, 16).unwrap();
        assert_eq!(sweep.removed, 1);
        assert_eq!((caps.len(TABLE), caps.len(INDEX)), (1, 1));
        assert_eq!(c.lookup(&mut caps, T0 + 61, "id").unwrap().as_deref(), Some(&b"v12"[..]));
        assert_eq!(c.counters().expired, 0);

        // Bytes count as entries do: two sessions of 100 bytes (141 with
        // key and header) pass half of 500.
        let mut c = SessionCache::new(settings(60, 1000, 500));
        c.set_shared(true);
        let mut caps = FakeCaps::new(T0, 1);
        let big = [7u8; 100];
        assert_eq!(calls(&mut caps, &mut c, T0, "a", &big), 3);
        assert_eq!(calls(&mut caps, &mut c, T0, "b", &big), 3, "2 x 141 bytes is more than 250");

        // A failed write without a read: the next update reads.
        let mut c = cache(60);
        c.set_shared(true);
        let mut caps = FakeCaps::new(T0, 1);
        assert_eq!(calls(&mut caps, &mut c, T0, "a", b"s"), 3);
        caps.storage_fault = Some(StorageError::Unavailable("down".into()));
        assert!(c.update(&mut caps, T0, "b", b"s").is_err());
        caps.storage_fault = None;
        assert_eq!(calls(&mut caps, &mut c, T0, "c", b"s"), 3);
        assert_eq!(calls(&mut caps, &mut c, T0, "d", b"s"), 1);
    }

    #[test]
    fn update_overwrites_and_keeps_one_entry_per_table() {
        let mut caps = FakeCaps::new(T0, 1);
        let mut c = cache(3600);
        c.update(&mut caps, T0, "id", b"first").unwrap();
        // Same second: the index key is the same and is simply rewritten.
        c.update(&mut caps, T0, "id", b"second").unwrap();
        assert_eq!(c.lookup(&mut caps, T0, "id").unwrap(), Some(b"second".to_vec()));
        assert_eq!((caps.len(TABLE), caps.len(INDEX)), (1, 1));
        // A later second: the index entry moves to the new timestamp.
        c.update(&mut caps, T0 + 5, "id", b"third").unwrap();
        assert_eq!(c.lookup(&mut caps, T0 + 5, "id").unwrap(), Some(b"third".to_vec()));
        assert_eq!((caps.len(TABLE), caps.len(INDEX)), (1, 1));
        let only_index = caps.tables[INDEX].keys().next().unwrap().clone();
        assert_eq!(only_index, index_key(T0 + 5, &legacy_key("id")).to_vec());
        assert_eq!(c.counters(), counters(2, 0, 3, 0, 0, 0));
    }

    #[test]
    fn expiry_boundary_matches_tlsmgr() {
        // tlsmgr: expired when `timestamp + timeout < now`; exactly at the
        // limit the entry is still served.
        let mut caps = FakeCaps::new(T0, 1);
        let mut c = cache(120);
        c.update(&mut caps, T0, "id", b"s").unwrap();
        assert_eq!(c.lookup(&mut caps, T0 + 120, "id").unwrap(), Some(b"s".to_vec()));
        assert_eq!((caps.len(TABLE), caps.len(INDEX)), (1, 1));
        assert_eq!(c.lookup(&mut caps, T0 + 121, "id").unwrap(), None);
        assert_eq!((caps.len(TABLE), caps.len(INDEX)), (0, 0));
        assert_eq!(c.counters(), counters(1, 1, 1, 0, 1, 0));
        // Gone for good: a later lookup is a plain miss.
        assert_eq!(c.lookup(&mut caps, T0 + 121, "id").unwrap(), None);
        assert_eq!(c.counters(), counters(1, 2, 1, 0, 1, 0));
    }

    #[test]
    fn malformed_values_are_deleted_logged_and_miss() {
        let mut wrong_version = vec![ENTRY_VERSION + 1];
        wrong_version.extend_from_slice(&T0.to_be_bytes());
        wrong_version.extend_from_slice(b"session");
        let too_short = vec![ENTRY_VERSION, 0, 0, 0, 0, 0, 0, 0]; // 7 timestamp bytes
        let cases: [(&str, Vec<u8>); 3] =
            [("wrong version", wrong_version), ("too short", too_short), ("empty", Vec::new())];
        for (what, value) in cases {
            let mut caps = FakeCaps::new(T0, 1);
            let mut c = cache(3600);
            caps.put(TABLE, &legacy_key("id"), &value).unwrap();
            assert_eq!(c.lookup(&mut caps, T0, "id").unwrap(), None, "{what}");
            assert!(!stored(&caps, "id"), "{what}: malformed entry left in storage");
            assert_eq!(caps.logs, vec![(Level::Warn, "smtpd cache: malformed entry removed".to_string())], "{what}");
            assert_eq!(c.counters(), counters(0, 1, 0, 0, 1, 0), "{what}");
        }
    }

    #[test]
    fn sweep_removes_malformed_index_keys() {
        let mut caps = FakeCaps::new(T0, 1);
        let mut c = cache(120);
        c.update(&mut caps, T0, "fresh", b"s").unwrap();
        // Too short to parse; sorts before every real index key.
        caps.put(INDEX, &[0, 0, 0], &[]).unwrap();
        let sweep = c.sweep(&mut caps, T0 + 1, 16).unwrap();
        assert_eq!(sweep, Sweep { removed: 1, more: false, next_expiry_secs: Some(T0 + 121) });
        assert!(!caps.tables[INDEX].contains_key([0u8, 0, 0].as_slice()));
        assert_eq!((caps.len(TABLE), caps.len(INDEX)), (1, 1));
        assert_eq!(c.counters().expired, 0);
    }

    #[test]
    fn entry_bound_keeps_the_newest() {
        let mut caps = FakeCaps::new(T0, 1);
        let mut c = SessionCache::new(settings(3600, 3, 1 << 20));
        let ids = ["id0", "id1", "id2", "id3", "id4"];
        for (i, id) in ids.iter().enumerate() {
            c.update(&mut caps, T0 + i as u64, id, b"session").unwrap();
        }
        assert_eq!(present(&caps, &ids), ["id2", "id3", "id4"]);
        assert_eq!((caps.len(TABLE), caps.len(INDEX)), (3, 3));
        assert_eq!(c.counters(), counters(0, 0, 5, 0, 0, 2));
    }

    #[test]
    fn byte_bound_keeps_what_fits() {
        // A 59-byte session costs 32 (key) + 9 (header) + 59 = 100 bytes.
        let mut caps = FakeCaps::new(T0, 1);
        let mut c = SessionCache::new(settings(3600, 1_000, 250));
        let ids = ["id0", "id1", "id2", "id3"];
        for (i, id) in ids.iter().enumerate() {
            c.update(&mut caps, T0 + i as u64, id, &[7; 59]).unwrap();
        }
        assert_eq!(present(&caps, &ids), ["id2", "id3"]);
        assert_eq!(c.size(&mut caps).unwrap().bytes, 200);
        assert_eq!(caps.len(INDEX), 2);
        assert_eq!(c.counters().evicted, 2);

        // One 200-byte entry needs the room of both.
        c.update(&mut caps, T0 + 10, "big", &[7; 159]).unwrap();
        assert_eq!(present(&caps, &["id2", "id3", "big"]), ["big"]);
        assert_eq!(c.size(&mut caps).unwrap(), crate::caps::TableStat { entries: 1, bytes: 200 });
        assert_eq!((caps.len(TABLE), caps.len(INDEX)), (1, 1));
        assert_eq!(c.counters().evicted, 4);
    }

    #[test]
    fn expired_entries_are_evicted_before_live_ones() {
        let mut caps = FakeCaps::new(T0, 1);
        let mut c = SessionCache::new(settings(120, 3, 1 << 20));
        c.update(&mut caps, T0, "old1", b"s").unwrap();
        c.update(&mut caps, T0 + 1, "old2", b"s").unwrap();
        // Both old entries have expired by T0 + 200.
        c.update(&mut caps, T0 + 200, "live1", b"s").unwrap();
        c.update(&mut caps, T0 + 201, "live2", b"s").unwrap();
        assert_eq!(present(&caps, &["old1", "old2", "live1", "live2"]), ["old2", "live1", "live2"]);
        assert_eq!((c.counters().expired, c.counters().evicted), (1, 0));
        c.update(&mut caps, T0 + 202, "live3", b"s").unwrap();
        assert_eq!((c.counters().expired, c.counters().evicted), (2, 0));
        // No expired entry left: the oldest live one goes.
        c.update(&mut caps, T0 + 203, "live4", b"s").unwrap();
        assert_eq!(present(&caps, &["live1", "live2", "live3", "live4"]), ["live2", "live3", "live4"]);
        assert_eq!((c.counters().expired, c.counters().evicted), (2, 1));
        assert_eq!((caps.len(TABLE), caps.len(INDEX)), (3, 3));
    }

    #[test]
    fn replacing_in_a_full_cache_evicts_nothing_else() {
        let mut caps = FakeCaps::new(T0, 1);
        let mut c = SessionCache::new(settings(3600, 3, 300));
        let ids = ["a", "b", "c"];
        for (i, id) in ids.iter().enumerate() {
            c.update(&mut caps, T0 + i as u64, id, &[1; 59]).unwrap(); // 100 bytes each
        }
        // Full on both bounds. Replacing the oldest entry (the one at the
        // front of the age index) with a same-size session evicts nothing.
        c.update(&mut caps, T0 + 10, "a", &[2; 59]).unwrap();
        assert_eq!(present(&caps, &ids), ["a", "b", "c"]);
        assert_eq!((caps.len(TABLE), caps.len(INDEX)), (3, 3));
        assert_eq!(c.counters().evicted, 0);
        assert_eq!(c.lookup(&mut caps, T0 + 10, "a").unwrap(), Some(vec![2; 59]));

        // "b" is now the oldest, at the front of the index. One byte larger:
        // 301 > 300, so exactly one other entry goes ("c", the next oldest),
        // never the entry being replaced.
        c.update(&mut caps, T0 + 11, "b", &[3; 60]).unwrap();
        assert_eq!(present(&caps, &ids), ["a", "b"]);
        assert_eq!((caps.len(TABLE), caps.len(INDEX)), (2, 2));
        assert_eq!(c.size(&mut caps).unwrap().bytes, 100 + 101);
        assert_eq!(c.counters().evicted, 1);
        assert_eq!(c.lookup(&mut caps, T0 + 11, "b").unwrap(), Some(vec![3; 60]));
    }

    #[test]
    fn dangling_index_entries_are_skipped_by_eviction() {
        let mut caps = FakeCaps::new(T0, 1);
        let mut c = SessionCache::new(settings(3600, 2, 1 << 20));
        c.update(&mut caps, T0, "a", b"s").unwrap();
        c.update(&mut caps, T0 + 1, "b", b"s").unwrap();
        // An index entry whose primary is gone, at the very front.
        caps.put(INDEX, &index_key(T0 - 5, &legacy_key("ghost")), &[]).unwrap();
        c.update(&mut caps, T0 + 2, "c", b"s").unwrap();
        assert_eq!(present(&caps, &["a", "b", "c"]), ["b", "c"]);
        assert_eq!((caps.len(TABLE), caps.len(INDEX)), (2, 2));
        assert_eq!((c.counters().evicted, c.counters().expired), (1, 0));
    }

    #[test]
    fn oversized_session_is_refused_and_nothing_stored() {
        let mut caps = FakeCaps::new(T0, 1);
        let mut c = cache(3600);
        assert_eq!(c.update(&mut caps, T0, "id", &[0; 1025]), Err(Error::SessionTooLarge(1025)));
        assert_eq!((caps.len(TABLE), caps.len(INDEX)), (0, 0));
        assert_eq!(c.counters(), Counters::default());
        // Exactly the limit is accepted.
        c.update(&mut caps, T0, "id", &[0; 1024]).unwrap();
        assert_eq!(c.lookup(&mut caps, T0, "id").unwrap().map(|s| s.len()), Some(1024));
    }

    #[test]
    fn take_hands_a_session_out_once() {
        let mut caps = FakeCaps::new(1000, 1);
        let mut c = cache(3600);
        c.update(&mut caps, 1000, "a", b"state").unwrap();
        assert_eq!(c.take(&mut caps, 1001, "a"), Ok(Some(b"state".to_vec())));
        assert_eq!(c.take(&mut caps, 1001, "a"), Ok(None));
        assert_eq!(c.lookup(&mut caps, 1001, "a"), Ok(None));
        assert!(!stored(&caps, "a"));
        assert_eq!(c.size(&mut caps).map(|s| (s.entries, s.bytes)), Ok((0, 0)));
        // An expired session is not taken.
        c.update(&mut caps, 1000, "b", b"old").unwrap();
        assert_eq!(c.take(&mut caps, 1000 + 3601, "b"), Ok(None));
        assert_eq!(c.counters(), counters(1, 3, 2, 1, 1, 0));
    }

    #[test]
    fn delete_reports_presence_and_clears_both_tables() {
        let mut caps = FakeCaps::new(T0, 1);
        let mut c = cache(3600);
        c.update(&mut caps, T0, "id", b"s").unwrap();
        assert_eq!(c.delete(&mut caps, T0, "id"), Ok(true));
        assert_eq!((caps.len(TABLE), caps.len(INDEX)), (0, 0));
        assert_eq!(c.delete(&mut caps, T0, "id"), Ok(false));
        assert_eq!(c.lookup(&mut caps, T0, "id").unwrap(), None);
        assert_eq!(c.counters(), counters(0, 1, 1, 1, 0, 0));
    }

    #[test]
    fn sweep_works_through_a_backlog_in_bounded_steps() {
        let mut caps = FakeCaps::new(T0, 1);
        let mut c = cache(120);
        // 1000 entries stored over T0..=T0+9, all expired at T0+130.
        for i in 0..1000u64 {
            c.update(&mut caps, T0 + i / 100, &alloc::format!("old-{i}"), b"s").unwrap();
        }
        // 10 fresh entries stored over T0+100..=T0+109.
        let fresh: Vec<String> = (0..10).map(|i| alloc::format!("fresh-{i}")).collect();
        for (i, id) in fresh.iter().enumerate() {
            c.update(&mut caps, T0 + 100 + i as u64, id, b"s").unwrap();
        }
        let now = T0 + 130;
        let mut results = Vec::new();
        for _ in 0..5 {
            results.push(c.sweep(&mut caps, now, 256).unwrap());
            assert!(fresh.iter().all(|id| stored(&caps, id)), "a sweep removed a fresh entry");
        }
        let next = Some(T0 + 100 + 121);
        let full = Sweep { removed: 256, more: true, next_expiry_secs: None };
        assert_eq!(
            results,
            [
                full,
                full,
                full,
                Sweep { removed: 232, more: false, next_expiry_secs: next },
                Sweep { removed: 0, more: false, next_expiry_secs: next },
            ]
        );
        assert_eq!((caps.len(TABLE), caps.len(INDEX)), (10, 10));
        assert_eq!(c.counters().expired, 1000);
        for id in &fresh {
            assert_eq!(c.lookup(&mut caps, now, id).unwrap(), Some(b"s".to_vec()));
        }
    }

    #[test]
    fn sweep_of_a_fresh_cache_removes_nothing() {
        let mut caps = FakeCaps::new(T0, 1);
        let mut c = cache(120);
        c.update(&mut caps, T0, "a", b"s").unwrap();
        c.update(&mut caps, T0 + 3, "b", b"s").unwrap();
        // T0 + 120 is the last second "a" is fresh.
        let sweep = c.sweep(&mut caps, T0 + 120, 256).unwrap();
        assert_eq!(sweep, Sweep { removed: 0, more: false, next_expiry_secs: Some(T0 + 121) });
        assert_eq!((caps.len(TABLE), caps.len(INDEX)), (2, 2));
        let sweep = c.sweep(&mut caps, T0 + 121, 256).unwrap();
        assert_eq!(sweep, Sweep { removed: 1, more: false, next_expiry_secs: Some(T0 + 124) });
        assert_eq!(present(&caps, &["a", "b"]), ["b"]);
        // An empty index: nothing to do and nothing to wait for.
        let mut empty = SessionCache::new(CacheSettings { name: "lmtp".into(), ..settings(120, 10, 1 << 20) });
        assert_eq!(empty.sweep(&mut caps, T0, 256).unwrap(), Sweep::default());
    }

    #[test]
    fn sweep_drops_dangling_index_entries_without_touching_newer_primaries() {
        let mut caps = FakeCaps::new(T0, 1);
        let mut c = cache(120);
        c.update(&mut caps, T0, "a", b"first").unwrap();
        c.update(&mut caps, T0 + 50, "a", b"second").unwrap();
        // A crash between writing the new entry and removing the old index
        // entry leaves the old one behind; so does one whose primary is gone.
        caps.put(INDEX, &index_key(T0, &legacy_key("a")), &[]).unwrap();
        caps.put(INDEX, &index_key(T0 + 1, &legacy_key("gone")), &[]).unwrap();
        assert_eq!((caps.len(TABLE), caps.len(INDEX)), (1, 3));

        let sweep = c.sweep(&mut caps, T0 + 125, 16).unwrap();
        assert_eq!(sweep, Sweep { removed: 2, more: false, next_expiry_secs: Some(T0 + 50 + 121) });
        assert_eq!((caps.len(TABLE), caps.len(INDEX)), (1, 1));
        assert_eq!(
            caps.tables[INDEX].keys().next().unwrap().as_slice(),
            index_key(T0 + 50, &legacy_key("a")).as_slice()
        );
        assert_eq!(c.counters().expired, 0);
        assert_eq!(c.lookup(&mut caps, T0 + 125, "a").unwrap(), Some(b"second".to_vec()));
    }

    #[test]
    fn sweep_removes_a_malformed_primary_entry() {
        let mut caps = FakeCaps::new(T0, 1);
        let mut c = cache(120);
        c.update(&mut caps, T0, "id", b"s").unwrap();
        caps.tables.get_mut(TABLE).unwrap().get_mut(legacy_key("id").as_slice()).unwrap()[0] = 0xff;
        let sweep = c.sweep(&mut caps, T0 + 200, 16).unwrap();
        assert_eq!(sweep.removed, 1);
        assert_eq!(caps.len(INDEX), 0);
        // Nothing indexes the entry any more, so nothing else will ever
        // expire it: the sweep must take it.
        assert_eq!(caps.len(TABLE), 0, "malformed primary entry left with no index entry");
    }

    #[test]
    fn eviction_removes_a_malformed_primary_entry() {
        let mut caps = FakeCaps::new(T0, 1);
        let mut c = SessionCache::new(settings(3600, 1, 1 << 20));
        c.update(&mut caps, T0, "a", b"s").unwrap();
        caps.tables.get_mut(TABLE).unwrap().get_mut(legacy_key("a").as_slice()).unwrap()[0] = 0xff;
        assert_eq!(c.update(&mut caps, T0 + 1, "b", b"s"), Ok(()));
        assert_eq!(present(&caps, &["a", "b"]), ["b"]);
    }

    #[test]
    fn storage_failures_are_errors_not_panics() {
        let mut caps = FakeCaps::new(T0, 1);
        let mut c = cache(120);
        c.update(&mut caps, T0, "id", b"s").unwrap();
        caps.storage_fault = Some(StorageError::Io("disk on fire".into()));
        let io = Error::Storage("storage I/O error: disk on fire".into());
        assert_eq!(c.lookup(&mut caps, T0, "id"), Err(io.clone()));
        assert_eq!(c.update(&mut caps, T0, "other", b"s"), Err(io.clone()));
        assert_eq!(c.delete(&mut caps, T0, "id"), Err(io.clone()));
        assert_eq!(c.sweep(&mut caps, T0 + 500, 16), Err(io.clone()));
        assert_eq!(c.size(&mut caps), Err(io));
        caps.storage_fault = Some(StorageError::Unavailable("db restarting".into()));
        assert_eq!(c.lookup(&mut caps, T0, "id"), Err(Error::Storage("storage unavailable: db restarting".into())));
        // Failed calls changed nothing; the cache works again afterwards.
        caps.storage_fault = None;
        assert_eq!(c.counters(), counters(0, 0, 1, 0, 0, 0));
        assert_eq!(c.lookup(&mut caps, T0, "id").unwrap(), Some(b"s".to_vec()));
        assert!(!stored(&caps, "other"));
    }

    /// An id key over `caps`'s store, made when the caches held entries
    /// for up to `legacy` seconds.
    fn id_key(caps: &mut FakeCaps, legacy: u32) -> IdKey {
        let now = caps.now;
        IdKey::load(caps, &mut crate::prng::Prng::new(3600), now, |_| Ok(legacy)).unwrap()
    }

    fn index_keys(caps: &FakeCaps) -> Vec<Vec<u8>> {
        caps.tables.get(INDEX).map_or(Vec::new(), |t| t.keys().cloned().collect())
    }

    #[test]
    fn keyed_ids_are_not_their_sha256() {
        let mut caps = FakeCaps::new(T0, 1);
        let mut c = cache(3600);
        c.set_id_key(id_key(&mut caps, 0));
        c.update(&mut caps, T0, "[mx.example.net]:25", b"s").unwrap();
        assert!(!stored(&caps, "[mx.example.net]:25"), "stored under SHA-256 of the id");
        assert_eq!(caps.len(TABLE), 1);
        assert_eq!(c.lookup(&mut caps, T0, "[mx.example.net]:25").unwrap().as_deref(), Some(&b"s"[..]));
    }

    #[test]
    fn entries_stored_before_ids_were_keyed_move_to_their_new_keys() {
        let mut caps = FakeCaps::new(T0, 1);
        let mut c = cache(3600);
        for id in ["looked-up", "deleted", "updated", "taken"] {
            c.update(&mut caps, T0, id, id.as_bytes()).unwrap();
        }
        let key = id_key(&mut caps, 3600);
        c.set_id_key(key.clone());
        let now = T0 + 100;

        // Found, and moved: under its new key, with its age kept.
        assert_eq!(c.lookup(&mut caps, now, "looked-up").unwrap().as_deref(), Some(&b"looked-up"[..]));
        assert!(!stored(&caps, "looked-up"));
        let moved = key.key("looked-up");
        assert!(caps.tables[TABLE].contains_key(moved.as_slice()));
        assert!(index_keys(&caps).contains(&index_key(T0, &moved).to_vec()));
        assert!(!index_keys(&caps).contains(&index_key(T0, &legacy_key("looked-up")).to_vec()));

        // A delete or an update leaves no old entry for a later lookup.
        assert_eq!(c.delete(&mut caps, now, "deleted"), Ok(true));
        assert_eq!(c.lookup(&mut caps, now, "deleted").unwrap(), None);
        c.update(&mut caps, now, "updated", b"new").unwrap();
        assert_eq!(c.lookup(&mut caps, now, "updated").unwrap().as_deref(), Some(&b"new"[..]));
        assert_eq!(c.take(&mut caps, now, "taken").unwrap().as_deref(), Some(&b"taken"[..]));
        assert_eq!(c.lookup(&mut caps, now, "taken").unwrap(), None);
        assert!(["deleted", "updated", "taken"].iter().all(|id| !stored(&caps, id)));
        assert_eq!((caps.len(TABLE), caps.len(INDEX)), (2, 2), "looked-up and updated, each indexed once");
    }

    #[test]
    fn old_entries_are_not_looked_for_once_they_must_have_expired() {
        let mut caps = FakeCaps::new(T0, 1);
        let mut c = cache(3600);
        c.update(&mut caps, T0, "old", b"s").unwrap();
        c.set_id_key(id_key(&mut caps, 3600));
        let calls = caps.storage_calls;
        assert_eq!(c.lookup(&mut caps, T0 + 3601, "old").unwrap(), None);
        assert_eq!(caps.storage_calls - calls, 1, "one read: the new key only");
        assert!(stored(&caps, "old"), "left to the sweep");
        assert_eq!(c.sweep(&mut caps, T0 + 3601, 16).unwrap().removed, 1);
        assert_eq!((caps.len(TABLE), caps.len(INDEX)), (0, 0));
    }
}
