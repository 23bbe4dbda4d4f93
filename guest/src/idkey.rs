//! Cache ids keyed before they become storage keys.
//!
//! A session is stored under `HMAC-SHA-256(salt, cache_id)`. The salt is 32
//! bytes from the core's DRBG, kept in the store itself (table
//! [`TABLE`], sealed at rest by the host like every value) and created with
//! `put-if-absent`, so that every core on a shared store agrees on one salt
//! and keys ids alike. Cache ids are easy to guess (Postfix's embed a peer
//! address, a port and a host name); with the salt out of reach, whoever
//! reads the store cannot confirm a guess, which plain SHA-256 of the id,
//! the key before, let anyone do.
//!
//! **Migration.** Stores written before the salt existed keyed ids with
//! SHA-256. When the salt is created over caches that already hold entries,
//! its record notes `legacy_until`: now plus the longest cache timeout,
//! after which every such entry has expired. Until then the caches look for
//! an entry under the old key before each operation and move it under the
//! new one ([`crate::scache`]), so that nothing is lost and no old entry is
//! left for a later lookup to find after a delete or an update; after it,
//! the old entries left are stale and the sweep removes them.
//!
//! Rejected: re-keying every entry at start-up (a store of a million
//! sessions would stall the first request, and the core cannot tell an id
//! from its SHA-256 to re-key it anyway); a salt in the settings (one more
//! secret for operators to distribute and rotate, when the store can keep
//! it).
//!
//! # Security
//!
//! Holds the salt ([`IdKey`]: no `Debug`, zeroized on drop). A salt record
//! in a format this core does not know is never overwritten (other cores
//! may use it): the caches refuse to work until it is understood.
//!
//! # Limitations
//!
//! The salt is never rotated: rotating it would orphan every cached
//! session. Anyone who can unseal the store can read the salt, as they can
//! read the sessions themselves.

use alloc::format;

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::caps::{Capabilities, Level};
use crate::error::{Error, Result};
use crate::prng::Prng;

/// The storage table of the salt record.
pub const TABLE: &str = "scache-salt";
/// The salt record's key in [`TABLE`].
const RECORD_KEY: &[u8] = b"salt";
/// Format version of the record.
const RECORD_VERSION: u8 = 1;
/// Bytes of the salt.
const SALT_LEN: usize = 32;
/// Record: version ‖ salt ‖ legacy_until (u64 BE seconds).
const RECORD_LEN: usize = 1 + SALT_LEN + 8;

/// The key every cache id is keyed under, and until when ids keyed the old
/// way may still be found.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct IdKey {
    salt: [u8; SALT_LEN],
    legacy_until: u64,
}

impl IdKey {
    /// The storage key of `id`.
    pub fn key(&self, id: &str) -> [u8; 32] {
        // A key of any length is accepted by HMAC; 32 bytes never fail.
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.salt).unwrap_or_else(|_| unreachable!());
        mac.update(id.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// The key `id` had before ids were keyed, while entries stored so may
    /// still be fresh at `now_secs`.
    pub fn legacy_key(&self, id: &str, now_secs: u64) -> Option<[u8; 32]> {
        (now_secs < self.legacy_until).then(|| legacy_key(id))
    }

    /// The store's salt, created if there is none. `legacy_secs` says how
    /// long entries keyed the old way can stay fresh (0 when the caches
    /// hold none); it is asked only when the salt is created.
    ///
    /// # Errors
    ///
    /// [`Error::Storage`] when the store fails or holds a record in a format
    /// this core does not know.
    pub fn load<C: Capabilities>(
        caps: &mut C,
        prng: &mut Prng,
        now_nanos: u64,
        legacy_secs: impl FnOnce(&mut C) -> Result<u32>,
    ) -> Result<IdKey> {
        if let Some(record) = caps.get(TABLE, RECORD_KEY)? {
            return from_record(record);
        }
        let now_secs = now_nanos / 1_000_000_000;
        let legacy = legacy_secs(caps)?;
        let mut key = IdKey {
            salt: [0; SALT_LEN],
            // Fresh while stored_at + T >= now: stale from T + 1 after now.
            legacy_until: if legacy == 0 { 0 } else { now_secs + u64::from(legacy) + 1 },
        };
        prng.fill(caps, now_nanos, &mut key.salt)?;
        match caps.put_if_absent(TABLE, RECORD_KEY, to_record(&key).as_ref())? {
            None => Ok(key),
            // Another core on the store created one first: use it.
            Some(theirs) => from_record(theirs),
        }
    }
}

impl IdKey {
    /// Offer this salt to the store again, as a fleet's cores do every few
    /// seconds: written back if the store lost it (a Redis restarted
    /// empty), so that cores started afterwards key ids alike; the store's
    /// own if it holds another (a core started in that gap made it), which
    /// the caller then uses, leaving what it stored under ours cold.
    ///
    /// # Errors
    ///
    /// [`Error::Storage`], as for [`IdKey::load`].
    pub fn reassert(&self, caps: &mut impl Capabilities) -> Result<Option<IdKey>> {
        match caps.put_if_absent(TABLE, RECORD_KEY, to_record(self).as_ref())? {
            None => {
                caps.log(Level::Warn, "the cache id salt was missing from the store (was it emptied?); written back");
                Ok(None)
            }
            Some(theirs) => {
                let theirs = from_record(theirs)?;
                if theirs.salt == self.salt {
                    return Ok(None);
                }
                caps.log(Level::Warn, "the store holds another cache id salt than this core's; using the store's");
                Ok(Some(theirs))
            }
        }
    }
}

/// SHA-256 of the id: the key of stores written before ids were keyed.
pub fn legacy_key(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

fn to_record(key: &IdKey) -> Zeroizing<[u8; RECORD_LEN]> {
    let mut r = Zeroizing::new([0u8; RECORD_LEN]);
    r[0] = RECORD_VERSION;
    r[1..1 + SALT_LEN].copy_from_slice(&key.salt);
    r[1 + SALT_LEN..].copy_from_slice(&key.legacy_until.to_be_bytes());
    r
}

fn from_record(mut record: alloc::vec::Vec<u8>) -> Result<IdKey> {
    let key = (record.len() == RECORD_LEN && record[0] == RECORD_VERSION).then(|| {
        let mut key = IdKey { salt: [0; SALT_LEN], legacy_until: 0 };
        key.salt.copy_from_slice(&record[1..1 + SALT_LEN]);
        let mut until = [0u8; 8];
        until.copy_from_slice(&record[1 + SALT_LEN..]);
        key.legacy_until = u64::from_be_bytes(until);
        key
    });
    record.zeroize();
    key.ok_or_else(|| {
        Error::Storage(format!(
            "the store's cache id salt ({TABLE}) is in a format this core does not know (a newer tlskeeper on the \
             same store?); session caches are unavailable"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{FakeCaps, SECOND};

    const T0: u64 = 1_700_000_000;

    fn load(caps: &mut FakeCaps, legacy: u32) -> Result<IdKey> {
        let now = caps.now;
        IdKey::load(caps, &mut Prng::new(3600), now, |_| Ok(legacy))
    }

    #[test]
    fn ids_are_keyed_under_a_salt_the_store_keeps() {
        let mut caps = FakeCaps::new(T0, 1);
        let key = load(&mut caps, 0).unwrap();
        assert_eq!(caps.len(TABLE), 1);
        let k = key.key("[mx.example.net]:25");
        assert_ne!(k, legacy_key("[mx.example.net]:25"), "not plain SHA-256");
        assert_ne!(k, key.key("[mx.example.net]:26"));
        assert_eq!(key.legacy_key("id", T0), None, "a store that held no entries has nothing to migrate");

        // Another core on the same store keys alike; one with another store
        // does not.
        let mut other = FakeCaps::new(T0, 2);
        other.tables = caps.tables.clone();
        assert_eq!(load(&mut other, 0).unwrap().key("x"), key.key("x"));
        assert_ne!(load(&mut FakeCaps::new(T0, 2), 0).unwrap().key("x"), key.key("x"));
    }

    #[test]
    fn old_keys_are_looked_for_until_the_longest_timeout_has_passed() {
        let mut caps = FakeCaps::new(T0, 1);
        let key = load(&mut caps, 3600).unwrap();
        assert_eq!(key.legacy_key("id", T0 + 3600), Some(legacy_key("id")));
        assert_eq!(key.legacy_key("id", T0 + 3601), None);
        // Kept in the record: a restarted core still migrates.
        caps.now = (T0 + 10) * SECOND;
        let again = load(&mut caps, 0).unwrap();
        assert_eq!(again.legacy_key("id", T0 + 3600), Some(legacy_key("id")));
    }

    #[test]
    fn a_store_that_lost_the_salt_gets_it_back_or_its_own_is_adopted() {
        let mut caps = FakeCaps::new(T0, 1);
        let key = load(&mut caps, 0).unwrap();
        assert!(key.reassert(&mut caps).unwrap().is_none(), "nothing to do");
        caps.tables.clear();
        assert!(key.reassert(&mut caps).unwrap().is_none());
        assert!(caps.logged("written back"));
        assert_eq!(load(&mut caps, 0).unwrap().key("x"), key.key("x"), "a core started now keys alike");

        caps.tables.clear();
        let mut other = FakeCaps::new(T0, 2);
        let rival = load(&mut other, 0).unwrap();
        caps.tables = other.tables;
        let adopted = key.reassert(&mut caps).unwrap().expect("the store's salt");
        assert_eq!(adopted.key("x"), rival.key("x"));
    }

    #[test]
    fn a_record_in_an_unknown_format_is_refused_and_kept() {
        let mut caps = FakeCaps::new(T0, 1);
        let mut record = alloc::vec![0u8; RECORD_LEN];
        record[0] = RECORD_VERSION + 1;
        caps.put(TABLE, RECORD_KEY, &record).unwrap();
        assert!(matches!(load(&mut caps, 0), Err(Error::Storage(why)) if why.contains("does not know")));
        assert_eq!(caps.tables[TABLE][RECORD_KEY], record);
    }
}
