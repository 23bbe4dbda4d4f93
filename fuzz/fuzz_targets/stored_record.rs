//! Fuzzes every decoder of bytes read back from storage: the host's sealing
//! layer (`tlskeeper_engine::storage::sealed`) and the core's own stored formats
//! (session entries and age-index keys in `guest/src/scache.rs`, ticket-key
//! records in `guest/src/tickets.rs`, and the seed file the PRNG takes in
//! `guest/src/prng.rs`).
//!
//! Those decoders are private; they are driven here through the public API
//! only (`Sealed` over a `MemoryStorage`; the core's `Manager` over the fake
//! capabilities of `tlskeeper_guest::testing`, whose tables the fuzzer
//! fills), so nothing was made public for this target.
//!
//! **Input.** The first byte (mod 4) picks the layer; the rest is its input:
//!
//! - 0, *open a record*: the rest is a sealed record stored under a fixed
//!   table and key, then read through `Sealed` with the fixed test KEK
//!   ([`TEST_KEK`]). It either opens, and then the plaintext is exactly the
//!   record less its 41 bytes of overhead, or it is rejected: read as
//!   absent, removed and counted. The same record stored under another key
//!   never opens there as well (the associated data binds it to its key).
//! - 1, *the key-check record*: the rest is the store's check record;
//!   `Sealed::open` either accepts it (then it must have the check record's
//!   exact length) or refuses with `WrongKek` (naming the key given, and a
//!   stored fingerprint that differs from it) or `DamagedCheck`, never
//!   another error and never for both of two KEKs. (The fingerprint in
//!   front is not authenticated, so an altered one is accepted with a
//!   sealed part that opens: it only names the key in messages.)
//! - 2, *seal, then damage*: bytes 1-4 say how to damage (`pos` u16 LE,
//!   `mask`, `cut`), the rest is a plaintext. Sealing and reading it back
//!   gives the plaintext; after flipping `mask` into byte `pos`, or cutting
//!   off (`cut` < 128) or appending (`cut` >= 128) bytes, reading it is a
//!   rejection, never a plaintext and never a panic.
//! - 3, *the core's formats*: the rest is a list of records the fuzzer puts
//!   straight into the fake storage (see [`fill`]): session entries,
//!   age-index keys, ticket-key records and the seed file, in any shape.
//!   Then a fresh core over that storage runs lookups, a ticket-key request
//!   (new and by name), an update, a delete, housekeeping as the clock
//!   moves, stats and a seed. Every call must return a typed result (never
//!   `Error::Internal`, never a panic), and what it serves must be what the
//!   stored bytes say: a session only from a well-formed, fresh entry, byte
//!   for byte; a ticket key by name only from a well-formed record whose
//!   key still decrypts, with the record's secrets; an encryption key that
//!   encrypts at the current time; a stored update found again.
//!
//! **Why.** Both the host (`Sealed`: "an attacker may control every byte of
//! the inner store") and the core (`caps.rs`: "every decoder in the core
//! treats it as hostile") promise to read damaged or planted records
//! without trusting them; this checks the promise byte by byte.

#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};
use tlskeeper_engine::storage::sealed::{CHECK_TABLE, OVERHEAD};
use tlskeeper_engine::storage::{Kek, MemoryStorage, SealError, Sealed, Storage};
use tlskeeper_guest::config::{CacheConfig, Config};
use tlskeeper_guest::error::Error;
use tlskeeper_guest::manager::Manager;
use tlskeeper_guest::testing::{FakeCaps, SECOND};
use tlskeeper_guest::tickets::{NAME_LEN, TABLE as KEY_TABLE, TicketKey};

/// The key-encryption key of every record this target opens. The seeds in
/// `fixtures/fuzz/stored_record/` were sealed under it.
const TEST_KEK: [u8; 32] = [0x4b; 32];
/// Where mode 0 stores the record: a session entry of the `smtpd` cache
/// under `SHA-256("id0")`, as the file backend would hold it.
const TABLE: &str = "scache/smtpd";
const INDEX: &str = "scache-age/smtpd";

/// The core's clock at the start of mode 3 (the traces' start,
/// 2026-11-18T11:06:40Z); the seeds' timestamps are near it.
const T0: u64 = 1_795_000_000;
/// The `smtpd` cache's timeout in mode 3, and half of it (ticket keys).
const TIMEOUT: u64 = 120;
const HALF: i64 = 60;
/// The session ids mode 3 looks up; stored entries can be keyed by them.
const IDS: [&str; 4] = ["id0", "id1", "id2", "id3"];

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 4 {
        0 => open_record(rest),
        1 => check_record(rest),
        2 => seal_and_damage(rest),
        _ => core_formats(rest),
    }
});

fn kek() -> Kek {
    Kek::from_bytes(TEST_KEK)
}

fn sealed() -> Sealed<MemoryStorage> {
    Sealed::open(MemoryStorage::new(), kek(), "fuzz store", true).expect("an empty store opens")
}

fn entry_key(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

/// Mode 0.
fn open_record(record: &[u8]) {
    let key = entry_key("id0");
    let other = entry_key("id1");
    let mut s = sealed();
    s.inner_mut().put(TABLE, &key, record).expect("memory put");
    s.inner_mut().put(TABLE, &other, record).expect("memory put");
    let here = s.get(TABLE, &key).expect("a bad record is not a storage error");
    let moved = s.get(TABLE, &other).expect("a bad record is not a storage error");
    assert!(here.is_none() || moved.is_none(), "one sealed record opened under two keys");
    for (opened, k) in [(&here, &key), (&moved, &other)] {
        match opened {
            Some(plaintext) => {
                assert_eq!(
                    plaintext.len() + OVERHEAD,
                    record.len(),
                    "plaintext length is not the record's less overhead"
                );
                assert_eq!(s.inner_mut().get(TABLE, k).expect("memory get").as_deref(), Some(record));
            }
            None => assert_eq!(s.inner_mut().get(TABLE, k).expect("memory get"), None, "a rejected record stayed"),
        }
    }
    let rejected = u64::from(here.is_none()) + u64::from(moved.is_none());
    assert_eq!(s.rejected(), rejected, "rejections not counted");
    // Reading it through a scan must agree (the caretaker's sweeps read that way).
    let mut s = sealed();
    s.inner_mut().put(TABLE, &key, record).expect("memory put");
    let scanned = s.scan(TABLE, None, 4).expect("a bad record is not a storage error");
    match &here {
        Some(plaintext) => assert_eq!(scanned, vec![(key.to_vec(), plaintext.clone())]),
        None => assert!(scanned.is_empty(), "scan served a record get rejected"),
    }
}

/// Mode 1.
fn check_record(record: &[u8]) {
    let mut accepted = 0;
    for kek in [kek(), Kek::from_bytes([0x4c; 32])] {
        let fingerprint = kek.fingerprint();
        let mut inner = MemoryStorage::new();
        inner.put(CHECK_TABLE, b"kek", record).expect("memory put");
        match Sealed::open(inner, kek, "fuzz store", false) {
            Ok(_) => {
                accepted += 1;
                // 8 bytes of fingerprint, then "tlskeeper key check v1" sealed.
                // Only the sealed part decides: the fingerprint is in clear,
                // not authenticated, and only names the key in messages.
                assert_eq!(record.len(), 8 + OVERHEAD + 22, "a check record of the wrong length was accepted");
            }
            Err(SealError::WrongKek { stored, given, .. }) => {
                assert_eq!(given, fingerprint);
                assert_ne!(stored, given, "WrongKek naming the key given");
            }
            Err(SealError::DamagedCheck { .. }) => {}
            Err(e) => panic!("unexpected refusal of a check record: {e}"),
        }
    }
    assert!(accepted <= 1, "one check record accepted under two keys");
}

/// Mode 2.
fn seal_and_damage(input: &[u8]) {
    let Some((params, plaintext)) = input.split_first_chunk::<4>() else {
        return;
    };
    let pos = usize::from(u16::from_le_bytes([params[0], params[1]]));
    let (mask, cut) = (params[2], params[3]);
    let key = entry_key("id0");
    let mut s = sealed();
    s.put(TABLE, &key, plaintext).expect("sealing a small value");
    assert_eq!(s.get(TABLE, &key).expect("get").as_deref(), Some(plaintext), "sealed value did not read back");

    let original = s.inner_mut().get(TABLE, &key).expect("memory get").expect("the record is there");
    assert_eq!(original.len(), plaintext.len() + OVERHEAD);
    let mut damaged = original.clone();
    if mask != 0 {
        let at = pos % damaged.len();
        damaged[at] ^= mask;
    }
    if cut >= 128 {
        damaged.extend(std::iter::repeat_n(mask, usize::from(cut - 127)));
    } else {
        damaged.truncate(damaged.len().saturating_sub(usize::from(cut)));
    }
    if damaged == original {
        return;
    }
    s.inner_mut().put(TABLE, &key, &damaged).expect("memory put");
    assert_eq!(s.get(TABLE, &key).expect("a damaged record is not a storage error"), None, "a damaged record opened");
    assert_eq!(s.inner_mut().get(TABLE, &key).expect("memory get"), None, "a damaged record was not removed");
    assert_eq!(s.rejected(), 1);
}

/// Reads fuzz input front to back; past the end, reads come up short.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (taken, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        taken
    }
}

/// Fill the fake storage from `input`, a list of records, each starting
/// with a selector byte (mod 4):
///
/// - 0, session entry: a key byte `k` (below 128: the key of `IDS[k % 4]`;
///   else `k % 64` raw key bytes follow), a length byte, the value;
/// - 1, age-index key: a key byte `k` (below 128: 8 timestamp bytes follow,
///   then the key of `IDS[k % 4]` is appended; else `k % 64` raw key bytes);
/// - 2, ticket-key record: a length byte and the name, a length byte and
///   the record;
/// - 3, the seed file: a length byte and its content.
fn fill(caps: &mut FakeCaps, mut input: Input<'_>) {
    let put = |caps: &mut FakeCaps, table: &str, key: Vec<u8>, value: Vec<u8>| {
        caps.tables.entry(table.to_owned()).or_default().insert(key, value);
    };
    while let Some(selector) = input.byte() {
        match selector % 4 {
            0 | 1 => {
                let k = input.byte().unwrap_or(0);
                let key = match (selector % 4, k < 128) {
                    (0, true) => entry_key(IDS[usize::from(k % 4)]).to_vec(),
                    (1, true) => [input.bytes(8), &entry_key(IDS[usize::from(k % 4)])[..]].concat(),
                    _ => input.bytes(usize::from(k % 64)).to_vec(),
                };
                if selector % 4 == 0 {
                    let len = usize::from(input.byte().unwrap_or(0));
                    put(caps, TABLE, key, input.bytes(len).to_vec());
                } else {
                    put(caps, INDEX, key, Vec::new());
                }
            }
            2 => {
                let len = usize::from(input.byte().unwrap_or(0));
                let name = input.bytes(len).to_vec();
                let len = usize::from(input.byte().unwrap_or(0));
                put(caps, KEY_TABLE, name, input.bytes(len).to_vec());
            }
            _ => {
                let len = usize::from(input.byte().unwrap_or(0));
                caps.seed_file = Some(input.bytes(len).to_vec());
            }
        }
    }
}

fn config() -> Config {
    Config {
        caches: vec![CacheConfig {
            name: "smtpd".into(),
            enabled: true,
            timeout_secs: TIMEOUT as u32,
            max_entries: 4,
            max_bytes: 1024,
            max_session_bytes: 256,
        }],
        ticket_cache: "smtpd".into(),
        reseed_period_secs: 60,
        housekeeping_batch: 2,
        seed_save_period_secs: 30,
    }
}

/// A ticket key: name, `tout`, AES key, HMAC key.
type KeyParts = ([u8; NAME_LEN], i64, [u8; 32], [u8; 32]);

/// What a stored ticket-key record says, if it is well-formed: version 1,
/// then `tout` (i64 BE), the AES key and the HMAC key.
fn parse_key_record(name: &[u8], record: &[u8]) -> Option<KeyParts> {
    let name = name.try_into().ok()?;
    if record.len() != 73 || record[0] != 1 {
        return None;
    }
    let expires = i64::from_be_bytes(record[1..9].try_into().ok()?);
    Some((name, expires, record[9..41].try_into().ok()?, record[41..73].try_into().ok()?))
}

fn key_parts(k: &TicketKey) -> KeyParts {
    (k.name, k.expires, k.cipher_key, k.hmac_key)
}

fn table(caps: &FakeCaps, name: &str) -> BTreeMap<Vec<u8>, Vec<u8>> {
    caps.tables.get(name).cloned().unwrap_or_default()
}

fn now_secs(caps: &FakeCaps) -> i64 {
    i64::try_from(caps.now / SECOND).expect("the clock fits i64")
}

/// No core call may fail but for the reasons a damaged store allows.
fn typed<T>(what: &str, result: Result<T, Error>) -> Option<T> {
    match result {
        Ok(v) => Some(v),
        Err(Error::CacheFull(_)) if what == "update" => None,
        Err(e) => panic!("{what} over damaged storage failed: {e:?}"),
    }
}

/// Mode 3.
fn core_formats(input: &[u8]) {
    // Entropy the input cannot predict (as real entropy is unpredictable to
    // whoever writes the store), yet the same for the same input: with a
    // fixed stream, the fuzzer learns the name of the first key minted and
    // plants a record under it, a 2^-128 event in reality.
    let entropy_seed = u64::from_le_bytes(Sha256::digest(input)[..8].try_into().expect("8 bytes"));
    let mut caps = FakeCaps::new(T0, entropy_seed);
    fill(&mut caps, Input(input));
    let mut m = Manager::new();
    m.configure(&mut caps, &config()).expect("the configuration is valid");

    // Lookups serve only well-formed, fresh entries, byte for byte.
    for id in IDS {
        let stored = table(&caps, TABLE).get(entry_key(id).as_slice()).cloned();
        let served = typed("lookup", m.lookup(&mut caps, "smtpd", id)).flatten();
        if let Some(session) = served {
            let value = stored.expect("a session served from no entry");
            assert!(value.len() >= 9 && value[0] == 1, "a session served from a malformed entry");
            let ts = u64::from_be_bytes(value[1..9].try_into().expect("8 bytes"));
            assert!(ts.saturating_add(TIMEOUT) >= caps.now_secs(), "an expired session served");
            assert_eq!(session, value[9..], "the session served is not the one stored");
        }
    }

    // The encryption key encrypts now, and is a stored one or a new one.
    let stored_keys = table(&caps, KEY_TABLE);
    let now = now_secs(&caps);
    let key = typed("ticket_key", m.ticket_key(&mut caps, None)).flatten().expect("an encryption key");
    assert!(key.expires > now, "encryption key expired at {} (now {now})", key.expires);
    let from_store = stored_keys.get(key.name.as_slice()).and_then(|r| parse_key_record(&key.name, r));
    match from_store {
        Some(parts) => assert_eq!(parts, key_parts(&key), "encryption key differs from its stored record"),
        None => assert_eq!(key.expires, now + HALF - 1, "a new key with the wrong expiry"),
    }
    let stored_now = table(&caps, KEY_TABLE);
    let record = stored_now.get(key.name.as_slice()).expect("the encryption key is stored");
    assert_eq!(parse_key_record(&key.name, record), Some(key_parts(&key)), "the encryption key's record differs");

    // Keys by name: only well-formed records that still decrypt.
    let mut names: Vec<Vec<u8>> = stored_keys.keys().cloned().collect();
    names.push(key.name.to_vec());
    for name in names {
        let result = m.ticket_key(&mut caps, Some(&name));
        if name.len() != NAME_LEN {
            assert_eq!(result.map(|k| k.is_some()), Err(Error::BadKeyNameLength(name.len() as u32)));
            continue;
        }
        if let Some(k) = typed("ticket_key by name", result).flatten() {
            assert_eq!(k.name.as_slice(), name, "a key served for another name");
            assert!(k.expires.saturating_add(HALF) > now, "a key served past its decrypt window");
            let parts = if k.name == key.name {
                Some(key_parts(&key))
            } else {
                stored_keys.get(&name).and_then(|r| parse_key_record(&name, r))
            };
            assert_eq!(parts, Some(key_parts(&k)), "a key by name differs from its record");
        }
    }

    // An update is found again; a delete, stats and a seed work.
    if typed("update", m.update(&mut caps, "smtpd", "id0", b"fresh session")).is_some() {
        let found = typed("lookup", m.lookup(&mut caps, "smtpd", "id0")).flatten();
        assert_eq!(found.as_deref(), Some(&b"fresh session"[..]), "a stored session was not found");
    }
    typed("delete", m.delete(&mut caps, "smtpd", "id1"));
    typed("stats", m.stats(&mut caps));
    let seed = typed("seed", m.seed(&mut caps, 32)).expect("seed");
    assert_eq!(seed.len(), 32);

    // Housekeeping works through whatever is stored, as the clock moves.
    for step in 0..12 {
        let delay = typed("housekeeping", m.housekeeping(&mut caps)).expect("housekeeping");
        assert!(delay <= 60_000, "housekeeping asked for {delay} ms");
        caps.advance_secs(if step % 3 == 2 { 97 } else { 0 });
    }
    typed("checkpoint", m.checkpoint(&mut caps));
}
