//! Fuzzes the core's whole API (`tlskeeper_guest::manager::Manager`, with
//! the session caches, the ticket-key ring and the PRNG behind it) with
//! random call sequences, natively, on the fake capabilities of
//! `tlskeeper_guest::testing` (a scripted clock and an in-memory store).
//!
//! **Input.** A sequence of [`Op`]s, decoded one after another with
//! `arbitrary` until the input ends (at most [`MAX_OPS`]): seed, policy,
//! lookup, update, delete, ticket key (new, by a name handed out before, by
//! a random name, or by a name of a bad length), housekeeping, stats,
//! checkpoint, moving the clock (a tick of up to 255 s, a jump of up to
//! 65535 s) and a restart (a fresh `Manager` over the same storage, as after
//! a daemon restart). The configuration is small so that every path is
//! reachable in a few calls: caches of 4 entries / 1000 bytes (`smtpd`,
//! T = 120 s, which also drives ticket keys: a key encrypts for 59 s and
//! decrypts for 60 s more) and 3 entries / 400 bytes (`smtp`, T = 300 s), a
//! cache with T = 0, a disabled one, an unknown name, six session ids, and
//! housekeeping batches of 3.
//!
//! **Asserts**, against a model kept here, after every call:
//!
//! - *Sessions.* A served session is the last one stored under that id, and
//!   is never served once expired: the code's boundary (`scache.rs`) is
//!   "fresh while `stored_at + T >= now`", so serving needs
//!   `now <= stored_at + T`. A lookup of an entry that is stored and fresh
//!   must hit. Storage holds only what the model says was stored (same
//!   timestamp and bytes), and every entry has exactly one age-index entry
//!   and no index entry dangles.
//! - *Removal.* An entry leaves storage only when the call may remove it: a
//!   lookup its own expired entry, a delete its own entry (reporting
//!   whether it was there), housekeeping expired entries, an update other
//!   entries of its cache and only when the cache would not fit otherwise,
//!   oldest (by age index) first.
//! - *Bounds.* Entry and byte counts of each cache stay within its bounds,
//!   counted in the fake storage and reported identically by `stats`.
//!   After housekeeping no ticket key past its decrypt window is left in
//!   storage, and once it reports no backlog (a delay above 0), no expired
//!   entry either.
//! - *Ticket keys.* The encryption key encrypts now and no longer than a
//!   new key would (`now < expires <= now + T/2 - 1`); it is the previous
//!   one for as long as that one encrypts, else a new name. A key by name is
//!   one handed out before, with the same secrets, and never one past its
//!   decrypt window (`expires + T/2 > now`); one inside it by more than the
//!   second the two-slot ring allows (`tickets.rs`) is found. At most two
//!   keys are stored.
//! - *Everything else.* `seed(n)` returns exactly `n` bytes for
//!   `1 <= n <= 255` and `BadSeedLength(n)` otherwise; every refusal is the
//!   typed error the inputs call for (unknown or disabled cache, bad key
//!   name length, session too large), never `Internal`, `Storage` or
//!   `CacheFull`; `stats` counts keys minted and seed bytes served; no
//!   sequence panics.
//!
//! **Why.** The core's promises are about sequences (expiry over time,
//! eviction order, key rotation across restarts), which unit tests check at
//! the points their authors thought of; this checks them at every step of
//! sequences nobody wrote down.

#![no_main]

use std::collections::{BTreeMap, BTreeSet};

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use tlskeeper_guest::config::{CacheConfig, Config};
use tlskeeper_guest::error::Error;
use tlskeeper_guest::manager::{Manager, Policy};
use tlskeeper_guest::testing::{FakeCaps, SECOND};
use tlskeeper_guest::tickets::{NAME_LEN, TABLE as KEY_TABLE, TicketKey};

/// Calls per input, so that one input stays fast.
const MAX_OPS: usize = 300;
/// The clock's start (the fixture traces' start, 2026-11-18T11:06:40Z).
const T0: u64 = 1_795_000_000;
/// Half the ticket cache's (smtpd's) timeout.
const HALF: i64 = 60;
/// Storage bytes per entry beyond the session: 32 (key) + 1 + 8 (header).
const ENTRY_OVERHEAD: u64 = 41;
/// Session ids; more than any cache holds, so updates evict.
const IDS: [&str; 6] = ["id0", "id1", "id2", "id3", "id4", "id5"];

/// One configured (or not) cache name and what the core must make of it.
struct CacheSpec {
    name: &'static str,
    enabled: bool,
    raw_timeout: u32,
    /// The timeout after tlsmgr's sanitising (1..119 becomes 120).
    timeout: u64,
    max_entries: u64,
    max_bytes: u64,
    max_session: u32,
    /// False for a name that is not configured at all.
    configured: bool,
}

impl CacheSpec {
    fn cachable(&self) -> bool {
        self.configured && self.enabled && self.timeout > 0
    }
}

const CACHES: [CacheSpec; 5] = [
    CacheSpec {
        name: "smtpd",
        enabled: true,
        raw_timeout: 1,
        timeout: 120,
        max_entries: 4,
        max_bytes: 1000,
        max_session: 200,
        configured: true,
    },
    CacheSpec {
        name: "smtp",
        enabled: true,
        raw_timeout: 300,
        timeout: 300,
        max_entries: 3,
        max_bytes: 400,
        max_session: 100,
        configured: true,
    },
    // Switched on, but T = 0: not cachable.
    CacheSpec {
        name: "lmtp",
        enabled: true,
        raw_timeout: 0,
        timeout: 0,
        max_entries: 0,
        max_bytes: 0,
        max_session: 0,
        configured: true,
    },
    // Not configured at all.
    CacheSpec {
        name: "pop3",
        enabled: false,
        raw_timeout: 0,
        timeout: 0,
        max_entries: 0,
        max_bytes: 0,
        max_session: 0,
        configured: false,
    },
    // No database configured: switched off, T kept for `policy`.
    CacheSpec {
        name: "submission",
        enabled: false,
        raw_timeout: 120,
        timeout: 120,
        max_entries: 0,
        max_bytes: 0,
        max_session: 0,
        configured: true,
    },
];

fn config() -> Config {
    Config {
        caches: CACHES
            .iter()
            .filter(|c| c.configured)
            .map(|c| CacheConfig {
                name: c.name.into(),
                enabled: c.enabled,
                timeout_secs: c.raw_timeout,
                max_entries: c.max_entries,
                max_bytes: c.max_bytes,
                max_session_bytes: c.max_session,
            })
            .collect(),
        ticket_cache: "smtpd".into(),
        reseed_period_secs: 60,
        housekeeping_batch: 3,
        seed_save_period_secs: 30,
    }
}

/// One call, or a move of the clock, or a restart.
#[derive(Arbitrary, Debug)]
enum Op {
    /// `seed` with a length that is often valid.
    Seed {
        len: u16,
    },
    /// `seed` with any 32-bit length.
    SeedWide {
        len: u32,
    },
    Policy {
        cache: u8,
    },
    Lookup {
        cache: u8,
        id: u8,
    },
    /// `update` with a session of `len % 260` bytes, unique to this update.
    Update {
        cache: u8,
        id: u8,
        len: u16,
    },
    Delete {
        cache: u8,
        id: u8,
    },
    TicketKey {
        name: KeyName,
    },
    Housekeeping,
    /// Move the clock by up to 255 s.
    Tick {
        secs: u8,
    },
    /// Move the clock by up to 65535 s.
    Jump {
        secs: u16,
    },
    Stats,
    Checkpoint,
    /// A new `Manager` over the same storage, as after a daemon restart.
    Restart,
    /// `seal-ticket` of `len % 600` bytes, then `open-ticket` of the ticket
    /// as it is and with byte `flip.0` xored with `flip.1`.
    Seal {
        len: u16,
        flip: (u16, u8),
    },
    /// `open-ticket` of ticket `i` (modulo their count) sealed earlier.
    OpenSealed {
        i: u8,
    },
    /// `open-ticket` of arbitrary bytes.
    OpenJunk {
        bytes: Vec<u8>,
    },
}

/// Which key a `TicketKey` call asks for.
#[derive(Arbitrary, Debug)]
enum KeyName {
    /// No name: the key to encrypt with.
    Current,
    /// The name of a key handed out before (by index, modulo their count).
    Known(u8),
    /// A name no key is likely to have.
    Random([u8; NAME_LEN]),
    /// A name of `len % 40` bytes, never 16.
    BadLength(u8),
}

/// A key as handed out: name, expiry and secrets.
type KeyParts = ([u8; NAME_LEN], i64, [u8; 32], [u8; 32]);

fn parts(k: &TicketKey) -> KeyParts {
    (k.name, k.expires, k.cipher_key, k.hmac_key)
}

/// A stored entry, decoded: when it was stored and the session.
type Stored = (u64, Vec<u8>);

/// Whether a call may remove the entry of (cache, id), given the entry and
/// the time after the call.
type MayRemove = dyn Fn(usize, usize, &Stored, u64) -> bool;

/// The model: what was stored and handed out, as the client side saw it.
struct Model {
    /// The last session stored under each (cache, id), and when, while
    /// it is (as far as the model knows) still in storage.
    sessions: BTreeMap<(usize, usize), Stored>,
    /// Every ticket key handed out, by name.
    keys: BTreeMap<[u8; NAME_LEN], KeyParts>,
    /// Names in the order they were first handed out.
    key_order: Vec<[u8; NAME_LEN]>,
    /// The last key handed out for encryption.
    last_encrypt: Option<KeyParts>,
    /// Since the last restart: keys minted and seed bytes served.
    minted: u64,
    seed_bytes: u64,
    /// Updates so far, which makes every session stored unique.
    updates: u64,
    /// Tickets sealed so far, with their plaintexts.
    tickets: Vec<(Vec<u8>, Vec<u8>)>,
}

/// The ids' storage keys (`idkey.rs`), under a salt made here and put in
/// `caps`'s store first, where the manager then finds it.
fn id_hashes(caps: &mut FakeCaps) -> [[u8; 32]; IDS.len()] {
    let now = caps.now;
    let key = tlskeeper_guest::idkey::IdKey::load(caps, &mut tlskeeper_guest::prng::Prng::new(3600), now, |_| Ok(0))
        .expect("the salt is stored");
    IDS.map(|id| key.key(id))
}

fn now_secs(caps: &FakeCaps) -> u64 {
    caps.now / SECOND
}

/// The primary table of cache `c`, decoded, by storage key. Every entry the
/// core wrote must be well-formed.
fn primary(caps: &FakeCaps, c: usize) -> BTreeMap<[u8; 32], Stored> {
    let table = format!("scache/{}", CACHES[c].name);
    let mut out = BTreeMap::new();
    for (k, v) in caps.tables.get(&table).into_iter().flatten() {
        let key: [u8; 32] = k.as_slice().try_into().expect("a primary key of 32 bytes");
        assert!(v.len() >= 9 && v[0] == 1, "a malformed entry written by the core");
        let ts = u64::from_be_bytes(v[1..9].try_into().expect("8 bytes"));
        out.insert(key, (ts, v[9..].to_vec()));
    }
    out
}

/// The age index of cache `c`: (stored_at, storage key) pairs.
fn index(caps: &FakeCaps, c: usize) -> BTreeSet<(u64, [u8; 32])> {
    let table = format!("scache-age/{}", CACHES[c].name);
    caps.tables
        .get(&table)
        .into_iter()
        .flatten()
        .map(|(k, v)| {
            assert!(v.is_empty(), "an index entry with a value");
            assert_eq!(k.len(), 40, "an index key of {} bytes", k.len());
            let ts = u64::from_be_bytes(k[..8].try_into().expect("8 bytes"));
            (ts, k[8..].try_into().expect("32 bytes"))
        })
        .collect()
}

/// Entry count and bytes (keys plus values) of cache `c` in storage.
fn size(caps: &FakeCaps, c: usize) -> (u64, u64) {
    let table = format!("scache/{}", CACHES[c].name);
    caps.tables.get(&table).into_iter().flatten().fold((0, 0), |(e, b), (k, v)| (e + 1, b + (k.len() + v.len()) as u64))
}

fn expired(c: usize, ts: u64, now: u64) -> bool {
    ts + CACHES[c].timeout < now
}

/// The stored ticket-key records, decoded.
fn stored_keys(caps: &FakeCaps) -> Vec<KeyParts> {
    caps.tables
        .get(KEY_TABLE)
        .into_iter()
        .flatten()
        .map(|(name, r)| {
            let name: [u8; NAME_LEN] = name.as_slice().try_into().expect("a 16-byte key name");
            assert!(r.len() == 73 && r[0] == 1, "a malformed key record written by the core");
            let expires = i64::from_be_bytes(r[1..9].try_into().expect("8 bytes"));
            (name, expires, r[9..41].try_into().expect("32 bytes"), r[41..73].try_into().expect("32 bytes"))
        })
        .collect()
}

/// The error a call on cache `c` must fail with, if any.
fn cache_refusal(c: usize) -> Option<Error> {
    let spec = &CACHES[c];
    if !spec.configured {
        Some(Error::UnknownCache(spec.name.into()))
    } else if !spec.cachable() {
        Some(Error::CacheDisabled(spec.name.into()))
    } else {
        None
    }
}

fn session_bytes(update: u64, len: usize) -> Vec<u8> {
    (0..len).map(|i| (update >> (8 * (i % 8))) as u8 ^ i as u8).collect()
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let mut caps = FakeCaps::new(T0, 1);
    let hashes = id_hashes(&mut caps);
    let mut m = Manager::new();
    m.configure(&mut caps, &config()).expect("the configuration is valid");
    let mut model = Model {
        sessions: BTreeMap::new(),
        keys: BTreeMap::new(),
        key_order: Vec::new(),
        last_encrypt: None,
        minted: 0,
        seed_bytes: 0,
        updates: 0,
        tickets: Vec::new(),
    };

    for _ in 0..MAX_OPS {
        if u.is_empty() {
            break;
        }
        let Ok(op) = Op::arbitrary(&mut u) else {
            break;
        };
        let before: Vec<_> = (0..CACHES.len()).map(|c| primary(&caps, c)).collect();
        // Which of the entries the model knows this call may remove from
        // storage, given (cache, id, entry, now); by default none.
        let mut may_remove: Box<MayRemove> = Box::new(|_: usize, _: usize, _: &Stored, _: u64| false);

        match op {
            Op::Seed { len } => check_seed(&mut m, &mut caps, &mut model, u32::from(len)),
            Op::SeedWide { len } => check_seed(&mut m, &mut caps, &mut model, len),
            Op::Policy { cache } => {
                let c = usize::from(cache) % CACHES.len();
                let spec = &CACHES[c];
                let got = m.policy(spec.name);
                if spec.configured {
                    let timeout_secs = u32::try_from(spec.timeout).expect("small");
                    assert_eq!(got, Ok(Policy { cachable: spec.cachable(), timeout_secs }), "policy {}", spec.name);
                } else {
                    assert_eq!(got, Err(Error::UnknownCache(spec.name.into())));
                }
            }
            Op::Lookup { cache, id } => {
                let (c, i) = (usize::from(cache) % CACHES.len(), usize::from(id) % IDS.len());
                let now = now_secs(&caps);
                let got = m.lookup(&mut caps, CACHES[c].name, IDS[i]);
                if let Some(e) = cache_refusal(c) {
                    assert_eq!(got, Err(e));
                } else {
                    let got = got.unwrap_or_else(|e| panic!("lookup failed: {e:?}"));
                    let stored = before[c].get(&hashes[i]);
                    match got {
                        Some(session) => {
                            let (ts, want) =
                                model.sessions.get(&(c, i)).expect("a session served that was never stored");
                            assert_eq!(&session, want, "the session served is not the last one stored");
                            assert!(now <= ts + CACHES[c].timeout, "session stored at {ts} served at {now}, expired");
                        }
                        None => {
                            if let Some((ts, _)) = stored {
                                assert!(expired(c, *ts, now), "a fresh stored session (stored {ts}, now {now}) missed");
                            }
                        }
                    }
                    may_remove = Box::new(move |rc: usize, ri: usize, (ts, _): &Stored, now: u64| {
                        (rc, ri) == (c, i) && expired(c, *ts, now)
                    });
                }
            }
            Op::Update { cache, id, len } => {
                let (c, i) = (usize::from(cache) % CACHES.len(), usize::from(id) % IDS.len());
                let len = usize::from(len % 260);
                model.updates += 1;
                let session = session_bytes(model.updates, len);
                let now = now_secs(&caps);
                let got = m.update(&mut caps, CACHES[c].name, IDS[i], &session);
                if let Some(e) = cache_refusal(c) {
                    assert_eq!(got, Err(e));
                } else if len > CACHES[c].max_session as usize {
                    assert_eq!(got, Err(Error::SessionTooLarge(len as u32)));
                } else {
                    got.unwrap_or_else(|e| panic!("update of {len} bytes failed: {e:?}"));
                    assert_eq!(
                        primary(&caps, c).get(&hashes[i]),
                        Some(&(now, session.clone())),
                        "the update is not what storage holds"
                    );
                    check_eviction(c, &hashes[i], &before[c], &primary(&caps, c), len);
                    model.sessions.insert((c, i), (now, session));
                    may_remove = Box::new(move |rc: usize, ri: usize, _: &Stored, _: u64| rc == c && ri != i);
                }
            }
            Op::Delete { cache, id } => {
                let (c, i) = (usize::from(cache) % CACHES.len(), usize::from(id) % IDS.len());
                let got = m.delete(&mut caps, CACHES[c].name, IDS[i]);
                if let Some(e) = cache_refusal(c) {
                    assert_eq!(got, Err(e));
                } else {
                    let was_there = before[c].contains_key(&hashes[i]);
                    assert_eq!(got, Ok(was_there), "delete reported presence wrongly");
                    may_remove = Box::new(move |rc: usize, ri: usize, _: &Stored, _: u64| (rc, ri) == (c, i));
                }
            }
            Op::TicketKey { name } => check_ticket_key(&mut m, &mut caps, &mut model, name),
            Op::Housekeeping => {
                let delay = m.housekeeping(&mut caps).unwrap_or_else(|e| panic!("housekeeping failed: {e:?}"));
                assert!(delay <= 60_000, "housekeeping asked for {delay} ms");
                let now = now_secs(&caps);
                if delay > 0 {
                    for (c, spec) in CACHES.iter().enumerate() {
                        for (key, (ts, _)) in primary(&caps, c) {
                            assert!(
                                !expired(c, ts, now),
                                "no backlog reported, but {} holds an entry stored at {ts} (now {now}, key {key:02x?})",
                                spec.name
                            );
                        }
                    }
                }
                // Dead keys are erased by every call, backlog or not.
                for (_, expires, _, _) in stored_keys(&caps) {
                    let now = i64::try_from(now).expect("fits");
                    assert!(expires + HALF > now, "a ticket key past its decrypt window is stored after housekeeping");
                }
                may_remove = Box::new(|c: usize, _: usize, (ts, _): &Stored, now: u64| expired(c, *ts, now));
            }
            Op::Tick { secs } => caps.advance_secs(u64::from(secs)),
            Op::Jump { secs } => caps.advance_secs(u64::from(secs)),
            Op::Stats => {
                let stats = m.stats(&mut caps).unwrap_or_else(|e| panic!("stats failed: {e:?}"));
                let configured: Vec<_> = CACHES.iter().enumerate().filter(|(_, c)| c.configured).collect();
                assert_eq!(stats.caches.len(), configured.len());
                for (s, (c, spec)) in stats.caches.iter().zip(configured) {
                    assert_eq!(s.name, spec.name, "stats in another order than configured");
                    assert_eq!((s.entries, s.bytes), size(&caps, c), "stats of {} differ from storage", spec.name);
                }
                assert_eq!(stats.keys_minted, model.minted, "keys minted");
                assert_eq!(stats.seed_bytes, model.seed_bytes, "seed bytes served");
            }
            Op::Checkpoint => m.checkpoint(&mut caps).unwrap_or_else(|e| panic!("checkpoint failed: {e:?}")),
            Op::Seal { len, flip } => check_seal(&mut m, &mut caps, &mut model, usize::from(len) % 600, flip),
            Op::OpenSealed { i } if !model.tickets.is_empty() => {
                let (ticket, plaintext) = model.tickets[usize::from(i) % model.tickets.len()].clone();
                check_open(&mut m, &mut caps, &ticket, &plaintext);
            }
            Op::OpenSealed { .. } => {}
            Op::OpenJunk { bytes } => {
                // Junk opens only if it is, by chance, a sealed ticket.
                if let Some(plain) = m.open_ticket(&mut caps, &bytes).unwrap_or_else(|e| panic!("open failed: {e:?}")) {
                    let known = model.tickets.iter().find(|(t, _)| *t == bytes);
                    assert_eq!(known.map(|(_, p)| p), Some(&plain), "junk opened");
                }
            }
            Op::Restart => {
                m = Manager::new();
                m.configure(&mut caps, &config()).expect("the configuration is valid");
                model.minted = 0;
                model.seed_bytes = 0;
            }
        }

        check_storage(&caps, &hashes, &mut model, &*may_remove);
    }
});

/// `seal-ticket`: sealed under the key `ticket-key` hands out for
/// encryption at this moment, opens to its plaintext, and not with any byte
/// changed.
fn check_seal(m: &mut Manager, caps: &mut FakeCaps, model: &mut Model, len: usize, flip: (u16, u8)) {
    // Ask for the encryption key first (through the model, so that a key
    // minted now is accounted for); sealing in the same second uses it.
    check_ticket_key(m, caps, model, KeyName::Current);
    let name = model.last_encrypt.expect("an encryption key").0;
    let plaintext: Vec<u8> = (0..len).map(|i| (i as u8) ^ (model.tickets.len() as u8)).collect();
    let sealed = m.seal_ticket(caps, &plaintext).unwrap_or_else(|e| panic!("seal failed: {e:?}"));
    assert_eq!(sealed.ticket[..NAME_LEN], name, "sealed under another key than the encryption key");
    assert_eq!(sealed.ticket.len(), len + 72);
    assert_eq!(i64::from(sealed.lifetime_secs), HALF - 2);
    check_open(m, caps, &sealed.ticket, &plaintext);
    let mut bad = sealed.ticket.clone();
    let at = usize::from(flip.0) % bad.len();
    bad[at] ^= flip.1;
    let got = m.open_ticket(caps, &bad).unwrap_or_else(|e| panic!("open failed: {e:?}"));
    if flip.1 == 0 {
        assert_eq!(got, Some(plaintext.clone()));
    } else {
        assert_eq!(got, None, "a ticket with byte {at} changed opened");
    }
    model.tickets.push((sealed.ticket, plaintext));
}

/// `open-ticket` of a ticket sealed earlier: it opens, to its plaintext,
/// exactly while the ring still gives out its key by name.
fn check_open(m: &mut Manager, caps: &mut FakeCaps, ticket: &[u8], plaintext: &[u8]) {
    let key = m.ticket_key(caps, Some(&ticket[..NAME_LEN])).unwrap_or_else(|e| panic!("ticket key failed: {e:?}"));
    let got = m.open_ticket(caps, ticket).unwrap_or_else(|e| panic!("open failed: {e:?}"));
    match key {
        Some(_) => assert_eq!(got.as_deref(), Some(plaintext), "a ticket under a live key did not open"),
        None => assert_eq!(got, None, "a ticket opened after its key left the ring"),
    }
}

/// `seed(len)`: exactly `len` bytes for 1..=255, else `BadSeedLength`.
fn check_seed(m: &mut Manager, caps: &mut FakeCaps, model: &mut Model, len: u32) {
    match m.seed(caps, len) {
        Ok(bytes) => {
            assert!((1..=255).contains(&len), "seed of length {len} granted");
            assert_eq!(bytes.len(), len as usize, "seed({len}) returned {} bytes", bytes.len());
            model.seed_bytes += u64::from(len);
        }
        Err(e) => {
            assert!(!(1..=255).contains(&len), "seed({len}) refused: {e:?}");
            assert_eq!(e, Error::BadSeedLength(len));
        }
    }
}

/// The ticket-key request `name`, checked against the keys handed out.
fn check_ticket_key(m: &mut Manager, caps: &mut FakeCaps, model: &mut Model, name: KeyName) {
    let now = i64::try_from(now_secs(caps)).expect("fits");
    let name: Option<Vec<u8>> = match name {
        KeyName::Current => None,
        KeyName::Known(i) if !model.key_order.is_empty() => {
            Some(model.key_order[usize::from(i) % model.key_order.len()].to_vec())
        }
        KeyName::Known(i) => Some(vec![i; NAME_LEN]),
        KeyName::Random(n) => Some(n.to_vec()),
        KeyName::BadLength(len) => {
            let len = match usize::from(len) % 40 {
                NAME_LEN => NAME_LEN + 1,
                n => n,
            };
            Some(vec![len as u8; len])
        }
    };
    let got = m.ticket_key(caps, name.as_deref());
    match name {
        None => {
            let key = got.unwrap_or_else(|e| panic!("ticket key failed: {e:?}")).expect("an encryption key");
            let key = parts(&key);
            let (name, expires, _, _) = key;
            assert!(expires > now, "encryption key expired at {expires} handed out at {now}");
            assert!(expires < now + HALF, "encryption key expires at {expires}, later than a new one would");
            match model.last_encrypt {
                Some(last) if last.1 > now => {
                    assert_eq!(key, last, "a new encryption key while the last still encrypts")
                }
                _ => {}
            }
            match model.keys.get(&name) {
                Some(known) => assert_eq!(*known, key, "a key changed"),
                None => {
                    assert_eq!(expires, now + HALF - 1, "a new key with the wrong expiry");
                    model.keys.insert(name, key);
                    model.key_order.push(name);
                    model.minted += 1;
                }
            }
            model.last_encrypt = Some(key);
        }
        Some(name) if name.len() != NAME_LEN => {
            assert_eq!(got.map(|k| k.is_some()), Err(Error::BadKeyNameLength(name.len() as u32)));
        }
        Some(name) => {
            let name: [u8; NAME_LEN] = name.as_slice().try_into().expect("16 bytes");
            let got = got.unwrap_or_else(|e| panic!("ticket key by name failed: {e:?}"));
            let known = model.keys.get(&name);
            match got {
                Some(key) => {
                    let key = parts(&key);
                    assert_eq!(Some(&key), known, "a key by name that was never handed out, or changed");
                    assert!(key.1 + HALF > now, "key expiring at {} served by name at {now}, past its window", key.1);
                }
                None => {
                    if let Some((_, expires, _, _)) = known {
                        assert!(
                            *expires + HALF <= now + 1,
                            "key expiring at {expires} not found by name at {now}, inside its decrypt window"
                        );
                    }
                }
            }
        }
    }
    assert!(stored_keys(caps).len() <= 2, "more than two ticket keys stored");
}

/// After an update of `key` with `len` bytes in cache `c`: entries other
/// than `key` were removed only when the cache would not fit otherwise,
/// and oldest first.
fn check_eviction(
    c: usize,
    key: &[u8; 32],
    before: &BTreeMap<[u8; 32], Stored>,
    after: &BTreeMap<[u8; 32], Stored>,
    len: usize,
) {
    let spec = &CACHES[c];
    let entry_bytes = |s: &Stored| ENTRY_OVERHEAD + s.1.len() as u64;
    let (mut entries, mut bytes) = before.values().fold((0u64, 0u64), |(e, b), s| (e + 1, b + entry_bytes(s)));
    match before.get(key) {
        Some(old) => bytes -= entry_bytes(old),
        None => entries += 1,
    }
    bytes += ENTRY_OVERHEAD + len as u64;
    let removed: Vec<_> = before.iter().filter(|(k, _)| *k != key && !after.contains_key(*k)).collect();
    if entries <= spec.max_entries && bytes <= spec.max_bytes {
        assert!(removed.is_empty(), "{}: an update that fits evicted {} entries", spec.name, removed.len());
    }
    for (gone, (gone_ts, _)) in &removed {
        for (kept, (kept_ts, _)) in after.iter().filter(|(k, _)| *k != key) {
            assert!(
                (*kept_ts, *kept) > (*gone_ts, **gone),
                "{}: evicted an entry stored at {gone_ts} but kept one stored at {kept_ts}",
                spec.name
            );
        }
    }
}

/// Invariants of the whole store after every call; drops from the model
/// the entries that left storage, checking that the call was allowed to
/// remove them.
fn check_storage(caps: &FakeCaps, hashes: &[[u8; 32]; IDS.len()], model: &mut Model, may_remove: &MayRemove) {
    let now = now_secs(caps);
    for (c, spec) in CACHES.iter().enumerate() {
        let stored = primary(caps, c);
        // Only what the model stored, as stored.
        for (key, entry) in &stored {
            let i = hashes.iter().position(|h| h == key).expect("an entry under no id's key");
            assert!(spec.cachable(), "{} is not cachable but holds entries", spec.name);
            assert_eq!(
                model.sessions.get(&(c, i)),
                Some(entry),
                "{}: storage holds another session for {}",
                spec.name,
                IDS[i]
            );
        }
        // Exactly one index entry per entry, and no other.
        let want: BTreeSet<_> = stored.iter().map(|(k, (ts, _))| (*ts, *k)).collect();
        assert_eq!(index(caps, c), want, "{}: the age index does not match the entries", spec.name);
        // Bounds.
        if spec.cachable() {
            let (entries, bytes) = size(caps, c);
            assert!(entries <= spec.max_entries, "{}: {entries} entries", spec.name);
            assert!(bytes <= spec.max_bytes, "{}: {bytes} bytes", spec.name);
        }
        // Whatever left storage must have been allowed to.
        for i in 0..IDS.len() {
            if let Some(entry) = model.sessions.get(&(c, i))
                && !stored.contains_key(&hashes[i])
            {
                assert!(
                    may_remove(c, i, entry, now),
                    "{}: the entry of {} (stored at {}) left storage at {now} without cause",
                    spec.name,
                    IDS[i],
                    entry.0
                );
                model.sessions.remove(&(c, i));
            }
        }
    }
    assert!(stored_keys(caps).len() <= 2, "more than two ticket keys stored");
}
