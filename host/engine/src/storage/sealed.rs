//! Sealing: a [`Storage`] wrapper that encrypts and authenticates every
//! value before the inner backend stores it.
//!
//! [`Sealed`] sits between the engine and a backend (the file backend, in
//! practice) and seals each value under the key-encryption key
//! ([`Kek`], see [`super::kek`]), so that the store on disk, and every backup
//! of it, holds no session or ticket key in clear, and a store rewritten
//! behind the daemon's back cannot hand it sessions or ticket keys of an
//! attacker's choosing. Table names and keys pass through unchanged: the
//! backend orders and scans by key, so keys cannot be encrypted with a
//! random nonce; the core derives them from client input only by hashing.
//!
//! # Record format
//!
//! ```text
//! version (1 byte, = 1) ‖ nonce (24 random bytes) ‖ AES-256-GCM ciphertext ‖ tag (16 bytes)
//! ```
//!
//! [`OVERHEAD`], 41 bytes, is added to every value. Each record has its own
//! AES-256 key, `K = HMAC-SHA-256(KEK, "tlskeeper seal key v1" ‖ nonce[0..12])`,
//! and is encrypted under `K` with the 96-bit GCM nonce `nonce[12..24]`.
//!
//! Why a key per record: one AES-GCM key with random 96-bit nonces is good
//! for about 2^32 messages (NIST SP 800-38D, to keep the chance of a repeated
//! nonce, which reveals the authentication key, below 2^-32), and a busy
//! cache writing a session per handshake could reach that within days under
//! one long-lived KEK. Deriving the key from 96 further random bits means a
//! key and nonce pair repeats only if the whole 192-bit nonce does: with `n`
//! records, a chance of about n²/2^193, out of reach, while the cipher stays
//! AES-256-GCM. HMAC-SHA-256 keyed by the uniformly random KEK is a PRF, all
//! this derivation needs (HKDF's extract step is for keys that are not
//! uniform). Rejected: a counter as the nonce, which needs persisted state
//! that a crash or a restored backup can roll back, and then reuses nonces;
//! AES-GCM-SIV, which tolerates a repeated nonce but is a different
//! construction from the AES-256-GCM this format specifies.
//!
//! The associated data binds a record to its place:
//!
//! ```text
//! "tlskeeper record v1" ‖ version ‖ table length (u32, big-endian) ‖ table ‖ key
//! ```
//!
//! so a record copied to another key or table, truncated, extended or with
//! any bit flipped fails authentication.
//!
//! A record that fails (too short, an unknown version, a bad tag) is
//! *rejected*: never served, logged with its table name, deleted, counted in
//! [`Sealed::rejected`], and reported to the caller as absent. A missing
//! session costs a client one full handshake; returning an error instead
//! would fail every later lookup of that key, and the record can never
//! become valid again.
//!
//! # Key check
//!
//! [`Sealed::open`] keeps one record of its own, under key `kek` in the
//! reserved table [`CHECK_TABLE`]: the KEK's 8-byte fingerprint in clear,
//! then the constant `"tlskeeper key check v1"` sealed like any other value.
//! Without it, a store opened with the wrong key file would reject, and so
//! delete, every record as it was read: a configuration mistake would wipe
//! the store. With it, opening fails at once with [`SealError::WrongKek`],
//! naming both fingerprints. Noticing the wrong key from the first record
//! that fails, the rejected alternative, is too late: that record is already
//! gone, and a store that is merely damaged looks the same.
//!
//! # Security
//!
//! Trusted: the KEK and this process. An attacker may control every byte of
//! the inner store: add, change, remove, reorder or copy records, or replace
//! the store with another. They cannot read values, nor make the daemon
//! accept a value or ticket key the KEK did not seal for that table and key.
//!
//! Secrets held: the KEK, for as long as the [`Sealed`] lives (see
//! [`Kek`]), per-record keys, zeroized as soon as the cipher is built, and
//! plaintext, which is encrypted and decrypted in place in the buffer the
//! caller gets or the backend stores, so no other copy is made. `Debug`
//! shows the KEK's fingerprint only, and the rejection warning names only
//! the table.
//!
//! # Limitations
//!
//! - No freshness: whoever can write the store can put back an older record
//!   under the same table and key, delete records, or roll the whole store
//!   back to a copy sealed under the same KEK.
//! - Visible in clear: table names, keys, the number of records, and each
//!   value's length (the record's, less [`OVERHEAD`]). For session caches the
//!   keys are unkeyed SHA-256 hashes of cache ids, and the age index's keys
//!   start with the time each session was stored: a copy of the store
//!   cannot be read, but it can confirm a guessed id (an SMTP client cache
//!   id names the server it was for) and shows when sessions were written.
//! - `stat` reports the inner store's byte count less [`OVERHEAD`] per
//!   entry, so callers see plaintext sizes as with the memory backend; a
//!   record shorter than [`OVERHEAD`] that has not yet been read and
//!   removed skews it slightly.
//! - The largest value is [`super::MAX_VALUE_BYTES`] less [`OVERHEAD`]; a
//!   larger one is refused with [`StorageError::TooLarge`] by the inner
//!   store.
//! - A record sealed by a later format version is rejected and removed, so
//!   running an older release over a newer store empties it record by
//!   record.
//! - No key rotation: a new KEK means starting with an empty store.
//! - The AES key schedule and GHASH key of each per-record cipher are wiped
//!   on drop (the `zeroize` features of `aes` and `aes-gcm` are on), but the
//!   HMAC state derived from the KEK is left in freed stack memory; whoever
//!   can read this process's memory can read the KEK itself anyway.
//! - Each rejected record logs a warning; a store full of damaged records
//!   logs one per record as they are read.

use std::fmt;

use aes_gcm::aead::AeadInPlace;
use aes_gcm::aead::generic_array::GenericArray;
use aes_gcm::{Aes256Gcm, KeyInit};
use hmac::digest::FixedOutput;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::{Zeroize, Zeroizing};

use super::kek::{FINGERPRINT_LEN, Kek};
use super::{Change, Commit, Committed, Entry, Storage, StorageError, TableStat, check_sizes};

/// Bytes a sealed value adds to its plaintext: version, nonce and tag.
pub const OVERHEAD: usize = 1 + NONCE_LEN + TAG_LEN;
/// The reserved table holding the key-check record.
pub const CHECK_TABLE: &str = "tlskeeper.seal";

/// The format version, the first byte of every record.
const VERSION: u8 = 1;
/// Random bytes per record: 12 select the key, 12 are the GCM nonce.
const NONCE_LEN: usize = 24;
/// Where the GCM nonce starts within the nonce.
const GCM_NONCE_AT: usize = 12;
const TAG_LEN: usize = 16;
/// `OVERHEAD` for byte counts.
const OVERHEAD_U64: u64 = OVERHEAD as u64;

const KEY_LABEL: &[u8] = b"tlskeeper seal key v1";
const AD_LABEL: &[u8] = b"tlskeeper record v1";
const CHECK_KEY: &[u8] = b"kek";
const CHECK_PLAINTEXT: &[u8] = b"tlskeeper key check v1";

/// Why [`Sealed::open`] refused a store. Each message names the store and
/// says what the operator can do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// The store was sealed under another key-encryption key.
    #[error(
        "{location} was sealed with a different key-encryption key (fingerprint {stored}; the key given has \
         {given}); restore the key file that belongs to this store, or move the store away to start with empty \
         state"
    )]
    WrongKek {
        /// The store.
        location: String,
        /// Fingerprint of the key the store was sealed with, as its check
        /// record says.
        stored: String,
        /// Fingerprint of the key given.
        given: String,
    },
    /// The store holds records but no check record.
    #[error(
        "{location} holds records but no sealing check record: it was written without sealing or has been \
         tampered with; move it away to start with empty state"
    )]
    Unsealed {
        /// The store.
        location: String,
    },
    /// The check record names the key given but fails authentication, or is
    /// too short to name a key.
    #[error(
        "{location} has a damaged sealing check record: it has been tampered with or corrupted; move it away to \
         start with empty state"
    )]
    DamagedCheck {
        /// The store.
        location: String,
    },
    /// The inner store failed while the check record was read or written.
    #[error("cannot check the sealing of {location}: {source}; correct the storage problem and restart")]
    Storage {
        /// The store.
        location: String,
        /// The inner store's error.
        source: StorageError,
    },
}

/// A [`Storage`] that seals every value into `inner`; see the module docs.
pub struct Sealed<S: Storage> {
    inner: S,
    kek: Kek,
    /// Records rejected since `open`.
    rejected: u64,
    /// Names the store in messages.
    location: String,
    /// For a store others share: the check record, written back at every
    /// flush where it has gone ([`Sealed::reasserting_check`]).
    check_record: Option<Vec<u8>>,
}

impl<S: Storage> fmt::Debug for Sealed<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The KEK's fingerprint only, never its bytes.
        f.debug_struct("Sealed")
            .field("location", &self.location)
            .field("kek", &self.kek)
            .field("rejected", &self.rejected)
            .field("inner", &self.inner)
            .finish()
    }
}

impl<S: Storage> Sealed<S> {
    /// Wrap `inner`, checking its key-check record:
    /// - present and sealed under `kek`: the store is opened;
    /// - present, and sealed under another key: [`SealError::WrongKek`];
    /// - absent, and `inner_is_empty`: the record is written and `inner`
    ///   flushed;
    /// - absent, and not empty: [`SealError::Unsealed`], since the store was
    ///   written without sealing or its check record removed.
    ///
    /// `inner_is_empty` comes from the caller (the file backend's per-table
    /// counters): the [`Storage`] trait cannot list tables.
    /// `location` names the store in messages, for example
    /// `/var/lib/postfix/tlskeeper/store.redb`.
    ///
    /// # Errors
    ///
    /// [`SealError`]; on error `inner` is dropped.
    pub fn open(mut inner: S, kek: Kek, location: &str, inner_is_empty: bool) -> Result<Self, SealError> {
        let storage_error = |source| SealError::Storage { location: location.to_owned(), source };
        match inner.get(CHECK_TABLE, CHECK_KEY).map_err(storage_error)? {
            Some(record) => {
                let Some((stored, sealed)) = record.split_first_chunk::<FINGERPRINT_LEN>() else {
                    return Err(SealError::DamagedCheck { location: location.to_owned() });
                };
                let opened = Zeroizing::new(open_record(&kek, CHECK_TABLE, CHECK_KEY, sealed.to_vec()));
                if opened.as_deref() != Some(CHECK_PLAINTEXT) {
                    let (stored, given) = (hex::encode(stored), kek.fingerprint());
                    // The same fingerprint means the same key (but for a
                    // 2^-64 chance): the record itself is what is wrong.
                    if stored == given {
                        return Err(SealError::DamagedCheck { location: location.to_owned() });
                    }
                    return Err(SealError::WrongKek { location: location.to_owned(), stored, given });
                }
            }
            None if inner_is_empty => {
                let mut record = kek.fingerprint_bytes().to_vec();
                record.extend(seal(&kek, CHECK_TABLE, CHECK_KEY, CHECK_PLAINTEXT).map_err(storage_error)?);
                // Put-if-absent: nodes of a fleet starting at once on an
                // empty shared store must not each install their own
                // check; the one that loses is checked against the winner's
                // as if it had been there all along.
                if inner.put_if_absent(CHECK_TABLE, CHECK_KEY, &record).map_err(storage_error)?.is_some() {
                    return Self::open(inner, kek, location, false);
                }
                // Durable before any record sealed under this key can be.
                inner.flush().map_err(storage_error)?;
            }
            None => return Err(SealError::Unsealed { location: location.to_owned() }),
        }
        Ok(Self { inner, kek, rejected: 0, location: location.to_owned(), check_record: None })
    }

    /// Write the check record back at every flush if it has gone, as it
    /// does when a shared store (a Redis without persistence) restarts
    /// empty under running nodes: they go on writing sealed records, and
    /// without the check a node started afterwards would take the store for
    /// one never sealed and refuse it.
    ///
    /// # Errors
    ///
    /// [`SealError::Storage`] when the check record cannot be sealed.
    pub fn reasserting_check(mut self) -> Result<Self, SealError> {
        let mut record = self.kek.fingerprint_bytes().to_vec();
        record.extend(
            seal(&self.kek, CHECK_TABLE, CHECK_KEY, CHECK_PLAINTEXT)
                .map_err(|source| SealError::Storage { location: self.location.clone(), source })?,
        );
        self.check_record = Some(record);
        Ok(self)
    }

    /// The check record written back where it has gone. Failures are not
    /// reported: a store that cannot be reached logs that itself, and the
    /// next flush tries again.
    fn reassert_check(&mut self) {
        if let Some(record) = &self.check_record {
            let _ = self.inner.put_if_absent(CHECK_TABLE, CHECK_KEY, record);
        }
    }

    /// Records rejected (failed authentication, and removed) since
    /// [`Sealed::open`].
    pub fn rejected(&self) -> u64 {
        self.rejected
    }

    /// The inner store, holding sealed records: for tests that tamper with
    /// them.
    pub fn inner_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner store, unwrapped.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// Count, remove and log a record that failed to open. An error removing
    /// it is returned to the caller (instead of `Ok(None)`): the record is
    /// not served either way, and is rejected again when next read.
    fn reject(&mut self, table: &str, key: &[u8]) -> Result<(), StorageError> {
        self.rejected += 1;
        let removed = self.inner.delete(table, key);
        // Table name only: keys and values are not for logs.
        match &removed {
            Ok(_) => tracing::warn!(
                "sealed record in table {table} of {} failed authentication (tampered with, moved, or sealed under \
                 another key); removed",
                self.location
            ),
            Err(e) => tracing::warn!(
                "sealed record in table {table} of {} failed authentication (tampered with, moved, or sealed under \
                 another key); not served, but could not be removed: {e}",
                self.location
            ),
        }
        removed.map(|_| ())
    }
}

/// Refuse the caller access to the check record's table.
fn not_reserved(table: &str) -> Result<(), StorageError> {
    if table == CHECK_TABLE {
        return Err(StorageError::Io(format!(
            "table {CHECK_TABLE} is reserved for the sealing layer's key check and was refused; this is a bug in \
             tlskeeper, please report it"
        )));
    }
    Ok(())
}

/// The AES-256-GCM cipher for the record with this nonce.
fn cipher(kek: &Kek, nonce: &[u8; NONCE_LEN]) -> Aes256Gcm {
    // HMAC takes keys of any length, so new_from_slice cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(kek.bytes()).expect("HMAC accepts a key of any length");
    mac.update(KEY_LABEL);
    mac.update(&nonce[..GCM_NONCE_AT]);
    let mut key = Zeroizing::new([0u8; 32]);
    mac.finalize_into(GenericArray::from_mut_slice(&mut key[..]));
    Aes256Gcm::new(GenericArray::from_slice(&key[..]))
}

/// The associated data binding a record of `version` to `table` and `key`.
fn associated_data(version: u8, table: &str, key: &[u8]) -> Result<Vec<u8>, StorageError> {
    let table_len = u32::try_from(table.len()).map_err(|_| StorageError::TooLarge)?;
    let mut ad = Vec::with_capacity(AD_LABEL.len() + 1 + 4 + table.len() + key.len());
    ad.extend_from_slice(AD_LABEL);
    ad.push(version);
    ad.extend_from_slice(&table_len.to_be_bytes());
    ad.extend_from_slice(table.as_bytes());
    ad.extend_from_slice(key);
    Ok(ad)
}

/// Seal `plaintext` for `key` in `table`.
fn seal(kek: &Kek, table: &str, key: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, StorageError> {
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce).map_err(|e| {
        StorageError::Io(format!(
            "cannot seal a record for table {table}: the operating system's random generator failed ({e}); check \
             that getrandom(2) or /dev/urandom is available to tlskeeper"
        ))
    })?;
    let ad = associated_data(VERSION, table, key)?;
    // Reserved in full up front: the plaintext copied in is encrypted in
    // place, and a reallocation would leave a copy behind.
    let mut record = Vec::with_capacity(OVERHEAD + plaintext.len());
    record.push(VERSION);
    record.extend_from_slice(&nonce);
    record.extend_from_slice(plaintext);
    let gcm_nonce = GenericArray::from_slice(&nonce[GCM_NONCE_AT..]);
    match cipher(kek, &nonce).encrypt_in_place_detached(gcm_nonce, &ad, &mut record[1 + NONCE_LEN..]) {
        Ok(tag) => {
            record.extend_from_slice(&tag);
            Ok(record)
        }
        // Only for a message over 64 GiB, far beyond MAX_VALUE_BYTES.
        Err(_) => {
            record.zeroize();
            Err(StorageError::TooLarge)
        }
    }
}

/// The plaintext of `record`, the value under `key` in `table`, or `None`
/// when it fails to open. Decrypts in place: the plaintext returned is the
/// record's own buffer.
fn open_record(kek: &Kek, table: &str, key: &[u8], record: Vec<u8>) -> Option<Vec<u8>> {
    if record.len() < OVERHEAD || record[0] != VERSION {
        return None;
    }
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&record[1..1 + NONCE_LEN]);
    let tag_at = record.len() - TAG_LEN;
    let tag = *GenericArray::from_slice(&record[tag_at..]);
    let ad = associated_data(record[0], table, key).ok()?;
    let mut buf = record;
    buf.truncate(tag_at);
    buf.drain(..1 + NONCE_LEN);
    let gcm_nonce = GenericArray::from_slice(&nonce[GCM_NONCE_AT..]);
    match cipher(kek, &nonce).decrypt_in_place_detached(gcm_nonce, &ad, &mut buf, &tag) {
        Ok(()) => Some(buf),
        Err(_) => {
            // aes-gcm checks the tag before decrypting, so this is still
            // ciphertext; wiped all the same rather than rely on that.
            buf.zeroize();
            None
        }
    }
}

impl<S: Storage> Storage for Sealed<S> {
    fn get(&mut self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        not_reserved(table)?;
        let Some(record) = self.inner.get(table, key)? else {
            return Ok(None);
        };
        match open_record(&self.kek, table, key, record) {
            Some(value) => Ok(Some(value)),
            None => {
                self.reject(table, key)?;
                Ok(None)
            }
        }
    }

    fn put(&mut self, table: &str, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        not_reserved(table)?;
        check_sizes(table, key, Some(value))?;
        let record = seal(&self.kek, table, key, value)?;
        self.inner.put(table, key, &record)
    }

    fn put_expiring(&mut self, table: &str, key: &[u8], value: &[u8], expires_at: u64) -> Result<(), StorageError> {
        not_reserved(table)?;
        check_sizes(table, key, Some(value))?;
        let record = seal(&self.kek, table, key, value)?;
        self.inner.put_expiring(table, key, &record, expires_at)
    }

    fn put_if_absent(&mut self, table: &str, key: &[u8], value: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        not_reserved(table)?;
        check_sizes(table, key, Some(value))?;
        let record = seal(&self.kek, table, key, value)?;
        // A record there that fails authentication holds no value: it is
        // rejected as a `get` would, and the put tried once more. Twice is
        // someone writing forgeries as fast as they are removed.
        for _ in 0..2 {
            match self.inner.put_if_absent(table, key, &record)? {
                None => return Ok(None),
                Some(existing) => match open_record(&self.kek, table, key, existing) {
                    Some(value) => return Ok(Some(value)),
                    None => self.reject(table, key)?,
                },
            }
        }
        Err(StorageError::Io(format!("table {table}: records that fail authentication keep reappearing under one key")))
    }

    fn delete(&mut self, table: &str, key: &[u8]) -> Result<bool, StorageError> {
        not_reserved(table)?;
        self.inner.delete(table, key)
    }

    fn scan(&mut self, table: &str, after: Option<&[u8]>, limit: u32) -> Result<Vec<Entry>, StorageError> {
        not_reserved(table)?;
        let mut entries = Vec::new();
        let mut cursor = after.map(<[u8]>::to_vec);
        // The caller takes a short batch for the end of the table, so rejected
        // records are made up for by scanning on from the last inner key.
        while entries.len() < limit as usize {
            // Below `limit`, a u32, so it fits.
            let want = limit - entries.len() as u32;
            let batch = self.inner.scan(table, cursor.as_deref(), want)?;
            let exhausted = batch.len() < want as usize;
            let Some(last) = batch.last().map(|(key, _)| key.clone()) else {
                break;
            };
            for (key, record) in batch {
                match open_record(&self.kek, table, &key, record) {
                    Some(value) => entries.push((key, value)),
                    None => self.reject(table, &key)?,
                }
            }
            if exhausted {
                break;
            }
            cursor = Some(last);
        }
        Ok(entries)
    }

    fn stat(&mut self, table: &str) -> Result<TableStat, StorageError> {
        not_reserved(table)?;
        let stat = self.inner.stat(table)?;
        Ok(TableStat {
            entries: stat.entries,
            bytes: stat.bytes.saturating_sub(stat.entries.saturating_mul(OVERHEAD_U64)),
        })
    }

    fn get_with_stat(&mut self, table: &str, key: &[u8]) -> Result<(Option<Vec<u8>>, TableStat), StorageError> {
        not_reserved(table)?;
        let (record, stat) = self.inner.get_with_stat(table, key)?;
        let stat = TableStat {
            entries: stat.entries,
            bytes: stat.bytes.saturating_sub(stat.entries.saturating_mul(OVERHEAD_U64)),
        };
        let Some(record) = record else {
            return Ok((None, stat));
        };
        match open_record(&self.kek, table, key, record) {
            Some(value) => Ok((Some(value), stat)),
            None => {
                // The size counted the record just removed: ask again (rare).
                self.reject(table, key)?;
                Ok((None, self.stat(table)?))
            }
        }
    }

    fn apply(&mut self, changes: &[Change]) -> Result<(), StorageError> {
        // Every change checked and sealed before any is made, so that a
        // refused one leaves the store as it was.
        let mut sealed = Vec::with_capacity(changes.len());
        for change in changes {
            not_reserved(&change.table)?;
            check_sizes(&change.table, &change.key, change.value.as_deref())?;
            let value = match &change.value {
                Some(value) => Some(seal(&self.kek, &change.table, &change.key, value)?),
                None => None,
            };
            sealed.push(Change {
                table: change.table.clone(),
                key: change.key.clone(),
                value,
                expires_at: change.expires_at,
            });
        }
        self.inner.apply(&sealed)
    }

    fn flush(&mut self) -> Result<(), StorageError> {
        self.reassert_check();
        self.inner.flush()
    }

    fn wants_commit(&self) -> bool {
        self.inner.wants_commit()
    }

    fn start_commit(&mut self, durable: bool) -> Result<Option<Commit>, StorageError> {
        if durable {
            self.reassert_check();
        }
        self.inner.start_commit(durable)
    }

    fn finish_commit(&mut self, done: Committed) -> Result<(), StorageError> {
        self.inner.finish_commit(done)
    }
}

#[cfg(test)]
mod tests {
    use aes_gcm::aead::{Aead, Payload};

    use super::*;
    use crate::storage::MemoryStorage;

    fn kek(n: u8) -> Kek {
        Kek::from_bytes([n; 32])
    }

    fn sealed() -> Sealed<MemoryStorage> {
        Sealed::open(MemoryStorage::new(), kek(1), "test store", true).unwrap()
    }

    /// A copy of `tables` of `src`: `MemoryStorage` is not `Clone`.
    fn copy(src: &mut MemoryStorage, tables: &[&str]) -> MemoryStorage {
        let mut out = MemoryStorage::new();
        for table in tables {
            for (k, v) in src.scan(table, None, u32::MAX).unwrap() {
                out.put(table, &k, &v).unwrap();
            }
        }
        out
    }

    fn raw(s: &mut Sealed<MemoryStorage>, table: &str, key: &[u8]) -> Option<Vec<u8>> {
        s.inner_mut().get(table, key).unwrap()
    }

    /// `get` of `key` is refused: absent, removed from the inner store, and
    /// counted.
    fn assert_rejected(s: &mut Sealed<MemoryStorage>, table: &str, key: &[u8]) {
        let before = s.rejected();
        assert_eq!(s.get(table, key).unwrap(), None);
        assert_eq!(raw(s, table, key), None);
        assert_eq!(s.rejected(), before + 1);
    }

    #[test]
    fn contract() {
        crate::storage::contract::put_get_replace_delete(&mut sealed());
        crate::storage::contract::batched_calls(&mut sealed());
        crate::storage::contract::scan_in_order(&mut sealed());
    }

    #[test]
    fn round_trip_without_plaintext_at_rest() {
        let mut s = sealed();
        let value = b"a secret TLS session".as_slice();
        s.put("t", b"a", value).unwrap();
        s.put("t", b"b", value).unwrap();
        s.put("t", b"empty", b"").unwrap();
        assert_eq!(s.get("t", b"a").unwrap().as_deref(), Some(value));
        assert_eq!(s.get("t", b"b").unwrap().as_deref(), Some(value));
        assert_eq!(s.get("t", b"empty").unwrap().as_deref(), Some(&b""[..]));

        let (a, b) = (raw(&mut s, "t", b"a").unwrap(), raw(&mut s, "t", b"b").unwrap());
        assert_eq!(a.len(), value.len() + OVERHEAD);
        assert_eq!(a[0], VERSION);
        assert!(!a.windows(value.len()).any(|w| w == value));
        assert!(!a.windows(6).any(|w| w == b"secret"));
        assert_ne!(a, b);
        assert_ne!(a[1 + NONCE_LEN..], b[1 + NONCE_LEN..]);
        assert_eq!(raw(&mut s, "t", b"empty").unwrap().len(), OVERHEAD);
        assert_eq!(s.rejected(), 0);
    }

    #[test]
    fn the_format_is_as_documented() {
        // Seal by hand, independently of `seal`, and read it back.
        let mut s = sealed();
        let nonce: [u8; 24] = std::array::from_fn(|i| i as u8);
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&[1; 32]).unwrap();
        mac.update(b"tlskeeper seal key v1");
        mac.update(&nonce[..12]);
        let key = mac.finalize().into_bytes();
        let ad = b"tlskeeper record v1\x01\x00\x00\x00\x02tbkey";
        let body = Aes256Gcm::new(&key)
            .encrypt(GenericArray::from_slice(&nonce[12..]), Payload { msg: b"hello", aad: ad })
            .unwrap();
        let record = [&[1u8][..], &nonce, &body].concat();
        s.inner_mut().put("tb", b"key", &record).unwrap();
        assert_eq!(s.get("tb", b"key").unwrap().as_deref(), Some(&b"hello"[..]));

        // And `seal` produces what the same steps open.
        let sealed = seal(&kek(1), "tb", b"key", b"hello").unwrap();
        let nonce = &sealed[1..25];
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&[1; 32]).unwrap();
        mac.update(b"tlskeeper seal key v1");
        mac.update(&nonce[..12]);
        let key = mac.finalize().into_bytes();
        let plain = Aes256Gcm::new(&key)
            .decrypt(GenericArray::from_slice(&nonce[12..]), Payload { msg: &sealed[25..], aad: ad })
            .unwrap();
        assert_eq!(plain, b"hello");
    }

    #[test]
    fn any_flipped_byte_is_rejected_and_removed() {
        let mut s = sealed();
        s.put("t", b"k", b"session state").unwrap();
        let original = raw(&mut s, "t", b"k").unwrap();
        let mut expected_rejected = 0;
        for i in 0..original.len() {
            for mask in [0x01, 0x80, 0xff] {
                let mut tampered = original.clone();
                tampered[i] ^= mask;
                s.inner_mut().put("t", b"k", &tampered).unwrap();
                assert_rejected(&mut s, "t", b"k");
                expected_rejected += 1;
                s.inner_mut().put("t", b"k", &original).unwrap();
                assert_eq!(s.get("t", b"k").unwrap().as_deref(), Some(&b"session state"[..]), "byte {i}");
            }
        }
        assert_eq!(s.rejected(), expected_rejected);
    }

    #[test]
    fn moved_truncated_and_unknown_versions_are_rejected() {
        let mut s = sealed();
        s.put("t", b"k", b"session state").unwrap();
        let record = raw(&mut s, "t", b"k").unwrap();

        s.inner_mut().put("t", b"other", &record).unwrap();
        assert_rejected(&mut s, "t", b"other");
        s.inner_mut().put("u", b"k", &record).unwrap();
        assert_rejected(&mut s, "u", b"k");
        // Table and key are delimited: moving a byte between them fails too.
        s.put("ab", b"c", b"v").unwrap();
        let moved = raw(&mut s, "ab", b"c").unwrap();
        s.inner_mut().put("a", b"bc", &moved).unwrap();
        assert_rejected(&mut s, "a", b"bc");

        for len in [0, 1, OVERHEAD - 1, OVERHEAD, record.len() - 1] {
            s.inner_mut().put("t", b"k", &record[..len]).unwrap();
            assert_rejected(&mut s, "t", b"k");
        }
        let mut extended = record.clone();
        extended.push(0);
        s.inner_mut().put("t", b"k", &extended).unwrap();
        assert_rejected(&mut s, "t", b"k");

        let mut v2 = record.clone();
        v2[0] = 2;
        s.inner_mut().put("t", b"k", &v2).unwrap();
        assert_rejected(&mut s, "t", b"k");

        // Sealed under another key.
        let mut other = Sealed::open(MemoryStorage::new(), kek(2), "other", true).unwrap();
        other.put("t", b"k", b"session state").unwrap();
        let foreign = raw(&mut other, "t", b"k").unwrap();
        s.inner_mut().put("t", b"k", &foreign).unwrap();
        assert_rejected(&mut s, "t", b"k");

        // The original, back in its place, still opens.
        s.inner_mut().put("t", b"k", &record).unwrap();
        assert_eq!(s.get("t", b"k").unwrap().as_deref(), Some(&b"session state"[..]));
    }

    #[test]
    fn scan_skips_rejected_records_and_fills_batches() {
        let mut s = sealed();
        let key = |i: u32| format!("k{i:02}").into_bytes();
        for i in (0..20).step_by(2) {
            s.put("t", &key(i), format!("v{i}").as_bytes()).unwrap();
        }
        let good = raw(&mut s, "t", &key(0)).unwrap();
        // Bad records among and after the good ones: garbage, a moved one,
        // one flipped, one truncated.
        let bad = [1, 3, 5, 7, 13, 15, 17, 19];
        for (n, &i) in bad.iter().enumerate() {
            let record = match n % 4 {
                0 => vec![0x5a; 60],
                1 => good.clone(),
                2 => {
                    let mut r = good.clone();
                    r[30] ^= 4;
                    r
                }
                _ => good[..10].to_vec(),
            };
            s.inner_mut().put("t", &key(i), &record).unwrap();
        }

        let mut seen = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let batch = s.scan("t", after.as_deref(), 4).unwrap();
            let len = batch.len();
            assert!(len <= 4);
            for (k, v) in batch {
                assert_eq!(v, format!("v{}", std::str::from_utf8(&k[1..]).unwrap().parse::<u32>().unwrap()).as_bytes());
                after = Some(k.clone());
                seen.push(k);
            }
            if len < 4 {
                break;
            }
        }
        assert_eq!(seen, (0..20).step_by(2).map(key).collect::<Vec<_>>());
        assert_eq!(s.rejected(), bad.len() as u64);
        for i in bad {
            assert_eq!(raw(&mut s, "t", &key(i)), None);
        }
        assert_eq!(s.stat("t").unwrap().entries, 10);
        // Batches are full while valid entries remain.
        assert_eq!(s.scan("t", None, 4).unwrap().len(), 4);
        assert_eq!(s.scan("t", Some(&key(6)), 4).unwrap().len(), 4);
        assert_eq!(s.scan("t", Some(&key(14)), 4).unwrap().len(), 2);
        assert!(s.scan("t", None, 0).unwrap().is_empty());
        assert!(s.scan("missing", None, 4).unwrap().is_empty());
    }

    #[test]
    fn scan_continues_past_a_batch_of_only_rejected_records() {
        let mut s = sealed();
        for k in [b"a", b"b", b"c", b"d", b"e"] {
            s.inner_mut().put("t", k, b"garbage").unwrap();
        }
        s.put("t", b"f", b"good").unwrap();
        s.put("t", b"g", b"good").unwrap();
        let keys: Vec<_> = s.scan("t", None, 2).unwrap().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, vec![b"f".to_vec(), b"g".to_vec()]);
        assert_eq!(s.rejected(), 5);
        assert_eq!(s.inner_mut().stat("t").unwrap().entries, 2);
    }

    #[test]
    fn stat_counts_plaintext_bytes() {
        let mut s = sealed();
        s.put("t", b"key", b"value").unwrap();
        s.put("t", b"k2", b"").unwrap();
        assert_eq!(s.stat("t").unwrap(), TableStat { entries: 2, bytes: 3 + 5 + 2 });
        assert_eq!(s.inner_mut().stat("t").unwrap().bytes, 10 + 2 * OVERHEAD_U64);
        // A short bad record cannot make the count wrap.
        s.inner_mut().put("short", b"", b"").unwrap();
        assert_eq!(s.stat("short").unwrap(), TableStat { entries: 1, bytes: 0 });
    }

    #[test]
    fn oversized_values_are_refused() {
        let mut s = sealed();
        let largest = vec![7u8; crate::storage::MAX_VALUE_BYTES - OVERHEAD];
        s.put("t", b"k", &largest).unwrap();
        assert_eq!(s.get("t", b"k").unwrap(), Some(largest));
        let over = vec![7u8; crate::storage::MAX_VALUE_BYTES - OVERHEAD + 1];
        assert_eq!(s.put("t", b"k", &over), Err(StorageError::TooLarge));
        assert_eq!(s.put(&"x".repeat(200), b"k", b""), Err(StorageError::TooLarge));
    }

    #[test]
    fn open_writes_the_check_record_once() {
        let mut s = sealed();
        let check = raw(&mut s, CHECK_TABLE, CHECK_KEY).unwrap();
        assert_eq!(check[..8], kek(1).fingerprint_bytes());
        assert_eq!(check.len(), 8 + CHECK_PLAINTEXT.len() + OVERHEAD);
        s.put("t", b"k", b"v").unwrap();

        let mut again = Sealed::open(s.into_inner(), kek(1), "test store", false).unwrap();
        assert_eq!(raw(&mut again, CHECK_TABLE, CHECK_KEY).unwrap(), check);
        assert_eq!(again.get("t", b"k").unwrap().as_deref(), Some(&b"v"[..]));
    }

    #[test]
    fn open_with_the_wrong_kek_is_refused() {
        let mut s = sealed();
        s.put("t", b"k", b"v").unwrap();
        for empty in [false, true] {
            let inner = copy(s.inner_mut(), &["t", CHECK_TABLE]);
            let err = Sealed::open(inner, kek(2), "/data/store.redb", empty).unwrap_err();
            assert_eq!(
                err,
                SealError::WrongKek {
                    location: "/data/store.redb".to_owned(),
                    stored: kek(1).fingerprint(),
                    given: kek(2).fingerprint(),
                }
            );
            let message = err.to_string();
            assert!(message.contains(&kek(1).fingerprint()) && message.contains(&kek(2).fingerprint()), "{message}");
            assert!(message.contains("/data/store.redb"), "{message}");
        }
        // Nothing was rejected or deleted.
        assert_eq!(s.get("t", b"k").unwrap().as_deref(), Some(&b"v"[..]));
    }

    #[test]
    fn a_damaged_check_record_is_refused() {
        let mut inner = sealed().into_inner();
        let check = inner.get(CHECK_TABLE, CHECK_KEY).unwrap().unwrap();
        for damaged in [check[..5].to_vec(), check[..8].to_vec(), {
            let mut c = check.clone();
            c[20] ^= 1;
            c
        }] {
            inner.put(CHECK_TABLE, CHECK_KEY, &damaged).unwrap();
            let err = Sealed::open(copy(&mut inner, &[CHECK_TABLE]), kek(1), "loc", false).unwrap_err();
            assert_eq!(err, SealError::DamagedCheck { location: "loc".to_owned() });
        }
    }

    #[test]
    fn unsealed_stores_are_refused() {
        let mut inner = MemoryStorage::new();
        inner.put("t", b"k", b"plain").unwrap();
        let err = Sealed::open(inner, kek(1), "loc", false).unwrap_err();
        assert_eq!(err, SealError::Unsealed { location: "loc".to_owned() });
        assert!(err.to_string().starts_with("loc holds records"));
    }

    #[test]
    fn the_check_table_is_reserved() {
        let mut s = sealed();
        let reserved = |r: Result<(), StorageError>| matches!(r, Err(StorageError::Io(m)) if m.contains("reserved"));
        assert!(reserved(s.get(CHECK_TABLE, CHECK_KEY).map(|_| ())));
        assert!(reserved(s.put(CHECK_TABLE, b"x", b"y")));
        assert!(reserved(s.delete(CHECK_TABLE, CHECK_KEY).map(|_| ())));
        assert!(reserved(s.scan(CHECK_TABLE, None, 10).map(|_| ())));
        assert!(reserved(s.stat(CHECK_TABLE).map(|_| ())));
        assert!(raw(&mut s, CHECK_TABLE, CHECK_KEY).is_some());
    }

    #[test]
    fn debug_shows_no_secrets() {
        let mut s = Sealed::open(MemoryStorage::new(), Kek::from_bytes([0xab; 32]), "loc", true).unwrap();
        s.put("t", b"k", b"secret-session").unwrap();
        let shown = format!("{s:?}");
        assert!(shown.contains(&Kek::from_bytes([0xab; 32]).fingerprint()), "{shown}");
        assert!(!shown.contains("abab") && !shown.contains("171") && !shown.contains("secret"), "{shown}");
    }

    #[test]
    fn a_shared_store_that_lost_its_check_gets_it_back_at_the_next_flush() {
        let mut s = Sealed::open(MemoryStorage::new(), kek(1), "shared", true).unwrap().reasserting_check().unwrap();
        // As a Redis restarted empty: everything gone, then a write.
        s.inner_mut().delete(CHECK_TABLE, CHECK_KEY).unwrap();
        s.put("t", b"k", b"v").unwrap();
        s.flush().unwrap();
        let inner = s.into_inner();
        let mut reopened = Sealed::open(inner, kek(1), "shared", false).unwrap();
        assert_eq!(reopened.get("t", b"k").unwrap().as_deref(), Some(&b"v"[..]));
        // Still checked: another key is refused.
        let inner = reopened.into_inner();
        assert!(matches!(Sealed::open(inner, kek(2), "shared", false), Err(SealError::WrongKek { .. })));

        // A store of one node's own does not write it back.
        let mut own = Sealed::open(MemoryStorage::new(), kek(1), "own", true).unwrap();
        own.inner_mut().delete(CHECK_TABLE, CHECK_KEY).unwrap();
        own.put("t", b"k", b"v").unwrap();
        own.flush().unwrap();
        assert!(matches!(Sealed::open(own.into_inner(), kek(1), "own", false), Err(SealError::Unsealed { .. })));
    }
}
