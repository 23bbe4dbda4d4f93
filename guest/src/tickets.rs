//! Session-ticket keys: Postfix's two-slot ring, kept in storage.
//!
//! A key has a 16-byte name, a 32-byte AES-256 key, a 32-byte HMAC-SHA-256
//! key and an expiry `tout`. With T the ticket cache's timeout and
//! `half = T / 2`, as in tlsmgr (`tlsmgr_key`, `tls_scache_key`,
//! `tls_scache_key_rotate`):
//!
//! - a key is minted on demand when no key encrypts any more, with
//!   `tout = now + half - 1`;
//! - it **encrypts** new tickets while `tout > now`;
//! - it **decrypts** tickets while `tout + half > now`, so a ticket lives
//!   about T from the key's birth: its encrypt phase plus its decrypt-only
//!   phase;
//! - slot 0 holds the newest key, slot 1 the one before it. A new key goes
//!   into slot 1 and swaps to the front if it expires later than slot 0;
//!   whatever slot 1 held is dropped (by then its decrypt window has at most
//!   a second left, exactly as in tlsmgr).
//!
//! Unlike tlsmgr, every key is written to the `tktkey` table before it is
//! handed out, and reloaded on first use after a restart, so tickets issued
//! before a restart (or a `postfix reload`) still decrypt. Keys past their
//! decrypt window are erased from storage and zeroized in memory.
//!
//! # Security
//!
//! Holds the ticket keys, which protect every resumed session's master
//! secret: [`TicketKey`] has no key bytes in its `Debug`, is zeroized on
//! drop, and names are compared in constant time. Stored records are
//! untrusted: a malformed one is deleted and logged, never used. Key
//! material comes only from the core's DRBG.
//!
//! # Limitations
//!
//! Two slots, as in Postfix: a ticket sealed under a key that has been
//! rotated out of slot 1 no longer decrypts, which with tlsmgr's timing only
//! happens after its decrypt window anyway.

use alloc::format;
use alloc::vec::Vec;
use core::fmt;

use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::caps::{Capabilities, Level};
use crate::error::Result;
use crate::prng::Prng;

/// Bytes of a key name.
pub const NAME_LEN: usize = 16;
/// Bytes of the AES key and of the HMAC key.
pub const SECRET_LEN: usize = 32;
/// The storage table of ticket keys, keyed by name.
pub const TABLE: &str = "tktkey";
/// Format version of stored records.
const RECORD_VERSION: u8 = 1;
/// Record: version ‖ tout (i64 BE) ‖ AES key ‖ HMAC key.
const RECORD_LEN: usize = 1 + 8 + 2 * SECRET_LEN;
/// Records read when loading; more than two is already leftover junk.
const LOAD_LIMIT: u32 = 64;
/// RFC 8446 section 4.6.1: a ticket lifetime hint may not exceed 7 days.
pub const MAX_TICKET_LIFETIME_SECS: u32 = 604_800;

/// Seconds for which a ticket sealed now is sure to still open, whatever
/// the ring does meanwhile, capped at RFC 8446's 7 days. It is what a server
/// may honestly announce as a ticket's lifetime.
///
/// A key encrypts until `tout - 1` and decrypts until `tout + half - 1`,
/// but the rotation may drop it from slot 1 one second early (at the
/// earliest mint of the key after next, `tout + half - 1`), so a ticket
/// sealed in the key's last encrypting second `tout - 1` opens for `half - 1`
/// more whole seconds. Clocks count whole seconds while clients measure
/// fractions, so one more second is given up: `half - 2`.
pub fn guaranteed_lifetime_secs(half: i64) -> u32 {
    u32::try_from(half.saturating_sub(2).max(0)).unwrap_or(u32::MAX).min(MAX_TICKET_LIFETIME_SECS)
}

/// One session-ticket key.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct TicketKey {
    /// Identifies the key inside each ticket.
    pub name: [u8; NAME_LEN],
    /// AES-256-CBC key.
    pub cipher_key: [u8; SECRET_LEN],
    /// HMAC-SHA-256 key.
    pub hmac_key: [u8; SECRET_LEN],
    /// Postfix's `tout`: encrypts while `expires > now`.
    pub expires: i64,
}

impl fmt::Debug for TicketKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Key bytes left out on purpose; the name is public (it is in every
        // ticket).
        f.debug_struct("TicketKey")
            .field("name", &HexName(&self.name))
            .field("expires", &self.expires)
            .finish_non_exhaustive()
    }
}

/// A key name in hex, for logs and `Debug` (names are public: every
/// ticket carries its key's).
pub(crate) struct HexName<'a>(pub(crate) &'a [u8; NAME_LEN]);

impl fmt::Debug for HexName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl TicketKey {
    fn encrypts_at(&self, now: i64) -> bool {
        self.expires > now
    }

    fn decrypts_at(&self, now: i64, half: i64) -> bool {
        self.expires.saturating_add(half) > now
    }

    fn to_record(&self) -> Zeroizing<[u8; RECORD_LEN]> {
        let mut r = Zeroizing::new([0u8; RECORD_LEN]);
        r[0] = RECORD_VERSION;
        r[1..9].copy_from_slice(&self.expires.to_be_bytes());
        r[9..9 + SECRET_LEN].copy_from_slice(&self.cipher_key);
        r[9 + SECRET_LEN..].copy_from_slice(&self.hmac_key);
        r
    }

    fn from_record(name: &[u8], record: &[u8]) -> Option<TicketKey> {
        let name: [u8; NAME_LEN] = name.try_into().ok()?;
        if record.len() != RECORD_LEN || record[0] != RECORD_VERSION {
            return None;
        }
        let mut key = TicketKey { name, cipher_key: [0; SECRET_LEN], hmac_key: [0; SECRET_LEN], expires: 0 };
        key.expires = i64::from_be_bytes(record[1..9].try_into().ok()?);
        key.cipher_key.copy_from_slice(&record[9..9 + SECRET_LEN]);
        key.hmac_key.copy_from_slice(&record[9 + SECRET_LEN..]);
        Some(key)
    }
}

/// Compare names without an early exit, so timing does not reveal how many
/// leading bytes of a guessed name are right.
pub(crate) fn names_equal(a: &[u8; NAME_LEN], b: &[u8; NAME_LEN]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The two-slot key ring.
#[derive(Default)]
pub struct KeyRing {
    /// Slot 0 is the newest key, slot 1 the previous one.
    slots: [Option<TicketKey>; 2],
    loaded: bool,
    minted: u64,
}

impl KeyRing {
    /// An empty ring; it loads stored keys on first use.
    pub fn new() -> Self {
        Self::default()
    }

    /// Keys minted since the instance started.
    pub fn minted(&self) -> u64 {
        self.minted
    }

    /// The key to encrypt new tickets with at `now`, minting (and storing)
    /// one if no key encrypts any more.
    ///
    /// # Errors
    ///
    /// [`Error::Storage`] if the ring cannot be loaded or the new key cannot
    /// be stored: a key that is not durable is never handed out.
    pub fn encrypt_key(
        &mut self,
        caps: &mut impl Capabilities,
        prng: &mut Prng,
        now_nanos: u64,
        half: i64,
    ) -> Result<TicketKey> {
        let now = secs(now_nanos);
        self.load(caps, now, half)?;
        if let Some(key) = self.slots[0].as_ref().filter(|k| k.encrypts_at(now)) {
            return Ok(key.clone());
        }
        let mut key = TicketKey {
            name: [0; NAME_LEN],
            cipher_key: [0; SECRET_LEN],
            hmac_key: [0; SECRET_LEN],
            expires: now.saturating_add(half) - 1,
        };
        prng.fill(caps, now_nanos, &mut key.name)?;
        prng.fill(caps, now_nanos, &mut key.cipher_key)?;
        prng.fill(caps, now_nanos, &mut key.hmac_key)?;
        caps.put(TABLE, &key.name, key.to_record().as_ref())?;
        self.minted += 1;
        caps.log(Level::Info, &format!("new session ticket key {:?} expires {}", HexName(&key.name), key.expires));
        self.rotate(caps, key.clone())?;
        Ok(key)
    }

    /// The key named `name` if it still decrypts at `now`.
    ///
    /// # Errors
    ///
    /// [`Error::Storage`] if the ring cannot be loaded.
    pub fn decrypt_key(
        &mut self,
        caps: &mut impl Capabilities,
        now_nanos: u64,
        name: &[u8; NAME_LEN],
        half: i64,
    ) -> Result<Option<TicketKey>> {
        let now = secs(now_nanos);
        self.load(caps, now, half)?;
        // Postfix scans the slots in order and stops at the first match.
        for key in self.slots.iter().flatten() {
            if names_equal(&key.name, name) {
                return Ok(key.decrypts_at(now, half).then(|| key.clone()));
            }
        }
        Ok(None)
    }

    /// Erase keys past their decrypt window from memory and storage.
    /// Returns when the next key leaves its window, if any.
    ///
    /// # Errors
    ///
    /// [`Error::Storage`]; the key stays in memory until its erasure
    /// succeeds, and is retried on the next call.
    pub fn expire(&mut self, caps: &mut impl Capabilities, now_nanos: u64, half: i64) -> Result<Option<i64>> {
        let now = secs(now_nanos);
        self.load(caps, now, half)?;
        for slot in &mut self.slots {
            if slot.as_ref().is_some_and(|k| !k.decrypts_at(now, half)) {
                if let Some(key) = slot.as_ref() {
                    caps.delete(TABLE, &key.name)?;
                }
                *slot = None; // zeroized on drop
            }
        }
        if self.slots[0].is_none() {
            self.slots.swap(0, 1);
        }
        Ok(self.slots.iter().flatten().map(|k| k.expires.saturating_add(half)).min())
    }

    /// Postfix's rotation: the new key goes into slot 1 (dropping and
    /// erasing what was there) and swaps to the front if it expires later.
    fn rotate(&mut self, caps: &mut impl Capabilities, key: TicketKey) -> Result<()> {
        // Erase from storage first: if that fails the old key stays in the
        // ring and the caller sees the error, rather than a stored key that
        // nothing remembers to erase.
        if let Some(old) = &self.slots[1] {
            caps.delete(TABLE, &old.name)?;
        }
        self.slots[1] = None;
        let front_is_older = self.slots[0].as_ref().is_none_or(|k| k.expires < key.expires);
        self.slots[1] = Some(key);
        if front_is_older {
            self.slots.swap(0, 1);
        }
        Ok(())
    }

    /// Load the stored keys once per instance: keep the two newest that still
    /// decrypt, erase the rest and anything malformed.
    fn load(&mut self, caps: &mut impl Capabilities, now: i64, half: i64) -> Result<()> {
        if self.loaded {
            return Ok(());
        }
        let mut keys: Vec<TicketKey> = Vec::new();
        for (name, mut record) in caps.scan(TABLE, None, LOAD_LIMIT)? {
            let parsed = TicketKey::from_record(&name, &record);
            record.zeroize();
            match parsed {
                Some(key) if key.decrypts_at(now, half) => keys.push(key),
                Some(_) => {
                    caps.delete(TABLE, &name)?;
                }
                None => {
                    caps.log(Level::Warn, "malformed session ticket key record removed");
                    caps.delete(TABLE, &name)?;
                }
            }
        }
        keys.sort_by_key(|k| core::cmp::Reverse(k.expires));
        for extra in keys.iter().skip(2) {
            caps.delete(TABLE, &extra.name)?;
        }
        let mut keys = keys.into_iter();
        self.slots = [keys.next(), keys.next()];
        self.loaded = true;
        Ok(())
    }
}

/// Whole seconds of a clock reading.
pub(crate) fn secs(now_nanos: u64) -> i64 {
    i64::try_from(now_nanos / 1_000_000_000).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caps::StorageError;
    use crate::error::Error;
    use crate::testing::{FakeCaps, SECOND};
    use alloc::string::{String, ToString};
    use alloc::vec;

    const T0: u64 = 1_700_000_000;
    /// Half of T = 3600.
    const HALF: i64 = 1800;

    fn at(secs: u64) -> u64 {
        secs * SECOND
    }

    fn t(offset: i64) -> i64 {
        T0 as i64 + offset
    }

    fn encrypt(ring: &mut KeyRing, caps: &mut FakeCaps, prng: &mut Prng) -> TicketKey {
        let now = caps.now;
        ring.encrypt_key(caps, prng, now, HALF).unwrap()
    }

    fn decrypt(ring: &mut KeyRing, caps: &mut FakeCaps, name: &[u8; NAME_LEN]) -> Option<TicketKey> {
        let now = caps.now;
        ring.decrypt_key(caps, now, name, HALF).unwrap()
    }

    /// Name, keys and expiry: everything a key is.
    fn parts(k: &TicketKey) -> ([u8; NAME_LEN], [u8; SECRET_LEN], [u8; SECRET_LEN], i64) {
        (k.name, k.cipher_key, k.hmac_key, k.expires)
    }

    fn same(a: Option<TicketKey>, b: &TicketKey) -> bool {
        a.is_some_and(|a| parts(&a) == parts(b))
    }

    fn stored_names(caps: &FakeCaps) -> Vec<Vec<u8>> {
        caps.tables.get(TABLE).map_or(Vec::new(), |t| t.keys().cloned().collect())
    }

    fn sorted(mut names: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
        names.sort();
        names
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| alloc::format!("{b:02x}")).collect()
    }

    fn key(name: u8, expires: i64) -> TicketKey {
        TicketKey {
            name: [name; NAME_LEN],
            cipher_key: [name ^ 0x55; SECRET_LEN],
            hmac_key: [name ^ 0xaa; SECRET_LEN],
            expires,
        }
    }

    #[test]
    fn a_key_walks_its_whole_life_on_tlsmgr_boundaries() {
        // T = 3600, half = 1800: minted at t0 with tout = t0 + 1799; encrypts
        // while tout > now (t0 ..= t0+1798); decrypts while tout + 1800 > now
        // (until t0+3598 inclusive).
        let mut caps = FakeCaps::new(T0, 1);
        let mut prng = Prng::new(3600);
        let mut ring = KeyRing::new();

        let a = encrypt(&mut ring, &mut caps, &mut prng);
        assert_eq!(a.expires, t(1799));
        assert_eq!(ring.minted(), 1);
        assert_eq!(stored_names(&caps), vec![a.name.to_vec()]);
        assert_eq!(caps.tables[TABLE][a.name.as_slice()].as_slice(), a.to_record().as_slice());
        assert!(caps.logged(&alloc::format!("new session ticket key {} expires {}", hex(&a.name), t(1799))));

        caps.now = at(T0 + 1798);
        assert!(same(Some(encrypt(&mut ring, &mut caps, &mut prng)), &a), "last encrypting second");
        assert_eq!(ring.minted(), 1);

        caps.now = at(T0 + 1799);
        let b = encrypt(&mut ring, &mut caps, &mut prng);
        assert_ne!(b.name, a.name);
        assert_eq!((b.expires, ring.minted()), (t(1799 + 1799), 2));
        assert!(same(decrypt(&mut ring, &mut caps, &a.name), &a));
        assert!(same(decrypt(&mut ring, &mut caps, &b.name), &b));

        caps.now = at(T0 + 3597);
        assert!(same(Some(encrypt(&mut ring, &mut caps, &mut prng)), &b));
        caps.now = at(T0 + 3598);
        assert!(same(decrypt(&mut ring, &mut caps, &a.name), &a), "last decrypting second");
        caps.now = at(T0 + 3599);
        assert!(decrypt(&mut ring, &mut caps, &a.name).is_none());
        assert!(same(decrypt(&mut ring, &mut caps, &b.name), &b));

        // B stopped encrypting at t0+3598 (its tout): a third key.
        let c = encrypt(&mut ring, &mut caps, &mut prng);
        assert_eq!((c.expires, ring.minted()), (t(3599 + 1799), 3));
        assert_eq!(sorted(stored_names(&caps)), sorted(vec![b.name.to_vec(), c.name.to_vec()]));

        // B decrypts until its tout + half = t0+5398, exclusive.
        caps.now = at(T0 + 5397);
        assert!(same(decrypt(&mut ring, &mut caps, &b.name), &b));
        caps.now = at(T0 + 5398);
        assert!(decrypt(&mut ring, &mut caps, &b.name).is_none());
        assert!(same(decrypt(&mut ring, &mut caps, &c.name), &c));
    }

    #[test]
    fn rotation_keeps_two_keys_and_erases_the_third() {
        let mut caps = FakeCaps::new(T0, 1);
        let mut prng = Prng::new(3600);
        let mut ring = KeyRing::new();
        let a = encrypt(&mut ring, &mut caps, &mut prng);
        caps.now = at(T0 + 1799);
        let b = encrypt(&mut ring, &mut caps, &mut prng);
        assert!(same(decrypt(&mut ring, &mut caps, &a.name), &a));
        assert!(same(decrypt(&mut ring, &mut caps, &b.name), &b));
        assert_eq!(caps.len(TABLE), 2);

        // The earliest B stops encrypting is t0+3598. A still had one second
        // of its decrypt window left, but the rotation drops it from slot 1,
        // exactly as tls_scache_key_rotate does.
        caps.now = at(T0 + 3598);
        let c = encrypt(&mut ring, &mut caps, &mut prng);
        assert_eq!(c.expires, t(3598 + 1799));
        assert!(decrypt(&mut ring, &mut caps, &a.name).is_none());
        assert!(same(decrypt(&mut ring, &mut caps, &b.name), &b));
        assert!(same(decrypt(&mut ring, &mut caps, &c.name), &c));
        assert_eq!(sorted(stored_names(&caps)), sorted(vec![b.name.to_vec(), c.name.to_vec()]));
        // The newest key is the one that encrypts.
        assert!(same(Some(encrypt(&mut ring, &mut caps, &mut prng)), &c));
    }

    #[test]
    fn unknown_names_do_not_decrypt() {
        let mut caps = FakeCaps::new(T0, 1);
        let mut prng = Prng::new(3600);
        let mut ring = KeyRing::new();
        let a = encrypt(&mut ring, &mut caps, &mut prng);
        let mut other = a.name;
        other[NAME_LEN - 1] ^= 1;
        assert!(decrypt(&mut ring, &mut caps, &other).is_none());
        assert!(decrypt(&mut ring, &mut caps, &[0; NAME_LEN]).is_none());
    }

    #[test]
    fn stored_keys_survive_a_restart() {
        let mut caps = FakeCaps::new(T0, 1);
        let mut prng = Prng::new(3600);
        let mut ring = KeyRing::new();
        let a = encrypt(&mut ring, &mut caps, &mut prng);
        caps.now = at(T0 + 1799);
        let b = encrypt(&mut ring, &mut caps, &mut prng);

        // A new instance over the same storage, with its own entropy.
        let mut caps2 = FakeCaps::new(T0 + 1800, 2);
        caps2.tables = core::mem::take(&mut caps.tables);
        let mut prng2 = Prng::new(3600);
        let mut ring2 = KeyRing::new();
        assert!(same(Some(encrypt(&mut ring2, &mut caps2, &mut prng2)), &b));
        assert_eq!((ring2.minted(), caps2.entropy_drawn), (0, 0));
        assert!(same(decrypt(&mut ring2, &mut caps2, &a.name), &a));
        assert_eq!(caps2.len(TABLE), 2);

        // Another restart after A's window: A is erased on load.
        let mut caps3 = FakeCaps::new(T0 + 3599, 3);
        caps3.tables = core::mem::take(&mut caps2.tables);
        let mut ring3 = KeyRing::new();
        assert!(decrypt(&mut ring3, &mut caps3, &a.name).is_none());
        assert_eq!(stored_names(&caps3), vec![b.name.to_vec()]);
        assert!(same(decrypt(&mut ring3, &mut caps3, &b.name), &b));
    }

    #[test]
    fn load_keeps_the_two_newest_live_keys() {
        let mut caps = FakeCaps::new(T0, 1);
        let dead = key(1, t(-HALF)); // tout + half == now: out of its window
        let (old, mid, new) = (key(2, t(100)), key(3, t(200)), key(4, t(300)));
        for k in [&dead, &old, &mid, &new] {
            caps.put(TABLE, &k.name, k.to_record().as_ref()).unwrap();
        }
        let mut prng = Prng::new(3600);
        let mut ring = KeyRing::new();
        assert!(same(Some(encrypt(&mut ring, &mut caps, &mut prng)), &new));
        assert!(same(decrypt(&mut ring, &mut caps, &mid.name), &mid));
        assert!(decrypt(&mut ring, &mut caps, &old.name).is_none());
        assert!(decrypt(&mut ring, &mut caps, &dead.name).is_none());
        assert_eq!(stored_names(&caps), vec![mid.name.to_vec(), new.name.to_vec()]);
        assert_eq!(ring.minted(), 0);
        assert!(caps.logs.is_empty(), "{:?}", caps.logs);
    }

    #[test]
    fn malformed_records_are_deleted_logged_and_never_used() {
        let good = key(9, t(1000));
        let mut wrong_version = good.to_record().to_vec();
        wrong_version[0] = RECORD_VERSION + 1;
        let cases: [(&str, Vec<u8>, Vec<u8>); 4] = [
            ("wrong version", vec![1; NAME_LEN], wrong_version),
            ("record too short", vec![2; NAME_LEN], good.to_record()[..RECORD_LEN - 1].to_vec()),
            ("record too long", vec![3; NAME_LEN], [good.to_record().as_slice(), &[0]].concat()),
            ("name of 15 bytes", vec![4; NAME_LEN - 1], good.to_record().to_vec()),
        ];
        for (what, name, record) in cases {
            let mut caps = FakeCaps::new(T0, 1);
            caps.put(TABLE, &name, &record).unwrap();
            let mut prng = Prng::new(3600);
            let mut ring = KeyRing::new();
            if let Ok(n) = <[u8; NAME_LEN]>::try_from(name.as_slice()) {
                assert!(decrypt(&mut ring, &mut caps, &n).is_none(), "{what}");
            }
            let k = encrypt(&mut ring, &mut caps, &mut prng);
            assert_ne!(k.name.as_slice(), name.as_slice(), "{what}");
            assert_eq!((k.expires, ring.minted()), (t(1799), 1), "{what}");
            assert_eq!(stored_names(&caps), vec![k.name.to_vec()], "{what}");
            assert_eq!(
                caps.logs.first(),
                Some(&(Level::Warn, "malformed session ticket key record removed".to_string())),
                "{what}"
            );
        }
    }

    #[test]
    fn debug_shows_name_and_expiry_but_no_key_bytes() {
        let mut caps = FakeCaps::new(T0, 1);
        let mut prng = Prng::new(3600);
        let k = encrypt(&mut KeyRing::new(), &mut caps, &mut prng);
        let shown = alloc::format!("{k:?}");
        assert_eq!(shown, alloc::format!("TicketKey {{ name: {}, expires: {}, .. }}", hex(&k.name), t(1799)));
        assert!(!shown.contains(&hex(&k.cipher_key)));
        assert!(!shown.contains(&hex(&k.hmac_key)));
        let pretty = alloc::format!("{k:#?}");
        assert!(!pretty.contains(&hex(&k.cipher_key)) && !pretty.contains("cipher") && !pretty.contains("hmac"));
    }

    #[test]
    fn expire_erases_keys_past_their_window() {
        let mut caps = FakeCaps::new(T0, 1);
        let mut prng = Prng::new(3600);
        let mut ring = KeyRing::new();
        let a = encrypt(&mut ring, &mut caps, &mut prng);
        caps.now = at(T0 + 1799);
        let b = encrypt(&mut ring, &mut caps, &mut prng);

        // Both alive: the next event is A leaving its window at t0+3599.
        assert_eq!(ring.expire(&mut caps, at(T0 + 3598), HALF), Ok(Some(t(3599))));
        assert_eq!(caps.len(TABLE), 2);

        assert_eq!(ring.expire(&mut caps, at(T0 + 3599), HALF), Ok(Some(t(3598 + HALF))));
        assert_eq!(stored_names(&caps), vec![b.name.to_vec()]);
        caps.now = at(T0 + 3599);
        assert!(decrypt(&mut ring, &mut caps, &a.name).is_none());
        assert!(same(decrypt(&mut ring, &mut caps, &b.name), &b));

        assert_eq!(ring.expire(&mut caps, at(T0 + 3598 + 1800), HALF), Ok(None));
        assert_eq!(caps.len(TABLE), 0);
        assert!(decrypt(&mut ring, &mut caps, &b.name).is_none());
    }

    #[test]
    fn a_failed_erasure_is_retried() {
        let mut caps = FakeCaps::new(T0, 1);
        let mut prng = Prng::new(3600);
        let mut ring = KeyRing::new();
        let a = encrypt(&mut ring, &mut caps, &mut prng);
        caps.storage_fault = Some(StorageError::Io("eio".into()));
        assert_eq!(ring.expire(&mut caps, at(T0 + 3599), HALF), Err(Error::Storage("storage I/O error: eio".into())));
        caps.storage_fault = None;
        assert_eq!(stored_names(&caps), vec![a.name.to_vec()]);
        assert_eq!(ring.expire(&mut caps, at(T0 + 3599), HALF), Ok(None));
        assert_eq!(caps.len(TABLE), 0);
    }

    #[test]
    fn a_key_that_cannot_be_stored_is_not_handed_out() {
        let mut caps = FakeCaps::new(T0, 1);
        let mut prng = Prng::new(3600);
        let mut ring = KeyRing::new();
        // Loading fails as a whole...
        caps.storage_fault = Some(StorageError::Unavailable("down".into()));
        assert_eq!(
            ring.decrypt_key(&mut caps, T0 * SECOND, &[0; NAME_LEN], HALF).map(|k| k.is_some()),
            Err(Error::Storage("storage unavailable: down".into()))
        );
        caps.storage_fault = None;
        assert!(decrypt(&mut ring, &mut caps, &[0; NAME_LEN]).is_none());
        // ...and once loaded, a key whose record cannot be written is refused.
        caps.storage_fault = Some(StorageError::Unavailable("down".into()));
        let now = caps.now;
        assert_eq!(
            ring.encrypt_key(&mut caps, &mut prng, now, HALF).map(|k| k.name),
            Err(Error::Storage("storage unavailable: down".into()))
        );
        assert_eq!(ring.minted(), 0);
        caps.storage_fault = None;
        let k = encrypt(&mut ring, &mut caps, &mut prng);
        assert_eq!(stored_names(&caps), vec![k.name.to_vec()]);
        assert_eq!(ring.minted(), 1);
    }
}
