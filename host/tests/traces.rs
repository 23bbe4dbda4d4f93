//! The trace corpus: recorded runs of the core, replayed on every test run.
//!
//! `fixtures/traces/` holds one trace per scenario below, each a whole run
//! of the real core component recorded at the WIT boundary (see
//! `tlskeeper_engine::trace`): every export call with its arguments, every import
//! the core made with the host's answer, every result and the fuel it used.
//! The scenarios:
//!
//! - `key-life.trace`: one ticket key's whole life with T = 3600 (the
//!   `smtpd` cache's timeout, which `policy` reports first): minted, reused
//!   while it encrypts, fetched by name; past T/2 a second key is minted
//!   (rotation) while the first still decrypts by name; past its decrypt
//!   window the first no longer decrypts and housekeeping erases it from
//!   storage; a third key follows.
//! - `cache-fill-and-eviction.trace`: a cache bounded by entries (8) and
//!   one bounded by bytes (1024), filled past their bounds so the oldest
//!   entries are evicted; lookups of evicted and kept entries, a
//!   replacement, deletes, expiry as the clock moves, and housekeeping
//!   sweeping a backlog 3 entries per call; stats along the way.
//! - `reseeding.trace`: the DRBG with a 60 s reseed period driven over 16
//!   minutes of seed requests and housekeeping: timed reseeds, the seed
//!   file taken at instantiation and saved on its own schedule, and a final
//!   checkpoint that saves it once more.
//! - `restart-before.trace`, `restart-after.trace`: persistent state. The
//!   first run stores sessions and mints a key in storage that outlives it;
//!   the second, a new core over the same storage ten minutes later, finds
//!   the sessions and the key (by name and as the encryption key) without
//!   minting another.
//! - `bad-input.trace`: refusals: unknown and disabled caches, seed lengths
//!   0, 256 and `u32::MAX`, ticket-key names of 1, 15 and 17 bytes, a
//!   session over the cache's `max_session_bytes`, and the harmless misses
//!   (deleting or looking up an id never stored, a well-formed unknown key
//!   name).
//!
//! Recordings are deterministic: entropy is SHA-256 in counter mode over a
//! fixed seed per run, the clock is scripted (it starts at
//! `common::START_SECS` and moves only when a scenario moves it), storage
//! is in memory and the seed file is an in-memory stand-in. Re-recording an
//! unchanged core therefore gives byte-identical files
//! (`recording_is_reproducible` checks that on every run).
//!
//! `fixture_traces_replay_identically` replays every `*.trace` in
//! `fixtures/traces/` against the core embedded in this build, on every
//! test run: a core change that alters any result, or any import the core
//! makes (a storage key, a clock read, an entropy request, a log line),
//! fails it, naming the first call that differs. Fuel is compared call by
//! call only when this build's component is the very one that recorded the
//! trace (same SHA-256, wasmtime and engine settings); any other build of
//! the core spends other amounts, so then only behaviour is compared.
//!
//! Changing core behaviour on purpose means re-recording: read the failing
//! replay reports to check that what changed is what was meant to, then run
//! `scripts/record-traces` (it runs the ignored test `record_fixture_traces`
//! with `TLSKEEPER_TRACES_DIR` pointing at `fixtures/traces/`) and commit the
//! new traces with the change. A scenario's own assertions may need the same
//! update: they state what the core is expected to do.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use sha2::{Digest, Sha256};
use tlskeeper::config::{CacheSettings, Settings};
use tlskeeper_engine::caps::{NoSeedFile, SeedStore};
use tlskeeper_engine::replay::replay;
use tlskeeper_engine::storage::{Entry, MemoryStorage, Storage, StorageError, TableStat};
use tlskeeper_engine::trace::file;
use tlskeeper_engine::{CallError, Capabilities, Core, CoreError};

use common::{START_SECS, ScriptedClock, SeededEntropy, recording, runtime};

const KEY_LIFE: &str = "key-life.trace";
const CACHE_FILL: &str = "cache-fill-and-eviction.trace";
const RESEEDING: &str = "reseeding.trace";
const RESTART_BEFORE: &str = "restart-before.trace";
const RESTART_AFTER: &str = "restart-after.trace";
const BAD_INPUT: &str = "bad-input.trace";

/// Every file the scenarios write, in the order they are recorded.
const TRACES: [&str; 6] = [KEY_LIFE, CACHE_FILL, RESEEDING, RESTART_BEFORE, RESTART_AFTER, BAD_INPUT];

/// The ticket-key table of the core's storage.
const KEY_TABLE: &str = "tktkey";

// ---------------------------------------------------------------------------
// Deterministic capabilities.
// ---------------------------------------------------------------------------

/// In-memory storage that outlives the core using it (for the restart
/// scenario) and that a scenario can inspect.
#[derive(Debug, Clone, Default)]
struct SharedStorage(Arc<Mutex<MemoryStorage>>);

impl SharedStorage {
    fn lock(&self) -> MutexGuard<'_, MemoryStorage> {
        self.0.lock().unwrap()
    }

    /// Entries in `table` now.
    fn entries(&self, table: &str) -> u64 {
        self.lock().stat(table).unwrap().entries
    }
}

impl Storage for SharedStorage {
    fn get(&mut self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.lock().get(table, key)
    }
    fn put(&mut self, table: &str, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        self.lock().put(table, key, value)
    }
    fn delete(&mut self, table: &str, key: &[u8]) -> Result<bool, StorageError> {
        self.lock().delete(table, key)
    }
    fn scan(&mut self, table: &str, after: Option<&[u8]>, limit: u32) -> Result<Vec<Entry>, StorageError> {
        self.lock().scan(table, after, limit)
    }
    fn stat(&mut self, table: &str) -> Result<TableStat, StorageError> {
        self.lock().stat(table)
    }
}

/// What happened to an in-memory seed file.
#[derive(Default)]
struct SeedLog {
    seed: Option<Vec<u8>>,
    taken: usize,
    saved: usize,
}

/// An in-memory seed file, shared with the scenario that checks it.
#[derive(Clone, Default)]
struct MemorySeed(Arc<Mutex<SeedLog>>);

impl MemorySeed {
    fn holding(seed: Vec<u8>) -> MemorySeed {
        MemorySeed(Arc::new(Mutex::new(SeedLog { seed: Some(seed), ..SeedLog::default() })))
    }

    fn log(&self) -> MutexGuard<'_, SeedLog> {
        self.0.lock().unwrap()
    }
}

impl SeedStore for MemorySeed {
    fn take(&mut self) -> Option<Vec<u8>> {
        let mut log = self.log();
        let seed = log.seed.take();
        log.taken += usize::from(seed.is_some());
        seed
    }

    fn save(&mut self, seed: &[u8]) -> Result<(), String> {
        let mut log = self.log();
        log.seed = Some(seed.to_vec());
        log.saved += 1;
        Ok(())
    }
}

/// Capabilities for one run: the scripted clock, entropy from
/// `entropy_seed`, the shared storage and `seed_file`.
fn caps(
    entropy_seed: u64,
    clock: &ScriptedClock,
    storage: &SharedStorage,
    seed_file: Box<dyn SeedStore>,
) -> Capabilities {
    Capabilities {
        clock: Box::new(clock.clone()),
        entropy: Box::new(SeededEntropy::new(entropy_seed)),
        storage: Box::new(storage.clone()),
        seed_file,
    }
}

/// End a recording. A failed write to the trace stops the recording with
/// only a log line (the daemon must go on serving); here it must fail the
/// scenario, or a short trace would pass for a whole one.
#[track_caller]
fn finish(core: Core) {
    assert!(core.tape().active(), "the recording stopped early: a write to the trace failed and the tape switched off");
}

/// The refusal a call ended in.
#[track_caller]
fn refused<T: std::fmt::Debug>(result: Result<T, CallError>) -> CoreError {
    match result {
        Err(CallError::Refused(e)) => e,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Seconds since the scenario's start.
fn elapsed(clock: &ScriptedClock) -> u64 {
    clock.now_secs() - START_SECS
}

/// Move `clock` to `secs` after the start.
fn at(clock: &ScriptedClock, secs: u64) {
    clock.advance_secs(secs - elapsed(clock));
}

// ---------------------------------------------------------------------------
// Scenarios: each writes its trace(s) into `dir`.
// ---------------------------------------------------------------------------

/// A ticket key's whole life with T = 3600, half = 1800. A key minted at t
/// expires (stops encrypting) at t + 1799 and decrypts while
/// `expires + 1800 > now`.
fn key_life(dir: &Path) {
    let settings = Settings::default();
    assert_eq!((settings.ticket_cache.as_str(), settings.caches["smtpd"].timeout), ("smtpd", 3600));
    let clock = ScriptedClock::new();
    let storage = SharedStorage::default();
    let mut core = recording(&dir.join(KEY_LIFE), &settings, caps(1, &clock, &storage, Box::new(NoSeedFile)));
    let start = i64::try_from(START_SECS).unwrap();
    // What smtpd asks first: T, from which it derives ticket lifetimes.
    let policy = core.policy("smtpd").unwrap();
    assert_eq!((policy.cachable, policy.timeout_secs), (true, 3600));

    // t = 0: minted on first demand, stored before it is handed out.
    let k1 = core.ticket_key(None).unwrap().expect("an encryption key");
    assert_eq!(k1.expires, start + 1799);
    assert_eq!(storage.entries(KEY_TABLE), 1);
    assert_eq!(core.ticket_key(Some(&k1.name)).unwrap().as_ref(), Some(&k1), "fetched by name");

    // Reused while it encrypts, up to its last second.
    for t in [60, 1798] {
        at(&clock, t);
        assert_eq!(core.ticket_key(None).unwrap().as_ref(), Some(&k1), "t = {t}");
    }

    // t = 1799: k1 no longer encrypts; k2 is minted and reused.
    at(&clock, 1799);
    let k2 = core.ticket_key(None).unwrap().expect("an encryption key");
    assert_ne!(k2.name, k1.name);
    assert_eq!(k2.expires, start + 1799 + 1799);
    assert_eq!(core.ticket_key(None).unwrap().as_ref(), Some(&k2));
    // Both decrypt by name; housekeeping keeps both.
    assert_eq!(core.ticket_key(Some(&k1.name)).unwrap().as_ref(), Some(&k1));
    assert_eq!(core.ticket_key(Some(&k2.name)).unwrap().as_ref(), Some(&k2));
    core.housekeeping().unwrap();
    assert_eq!(storage.entries(KEY_TABLE), 2);

    // t = 3598: k1's last second of decryption.
    at(&clock, 3598);
    assert_eq!(core.ticket_key(Some(&k1.name)).unwrap().as_ref(), Some(&k1));

    // t = 3599: k1 is past its decrypt window; k2 still decrypts.
    at(&clock, 3599);
    assert_eq!(core.ticket_key(Some(&k1.name)).unwrap(), None);
    assert_eq!(core.ticket_key(Some(&k2.name)).unwrap().as_ref(), Some(&k2));
    assert_eq!(storage.entries(KEY_TABLE), 2, "a dead key is erased by housekeeping, not by a lookup");
    core.housekeeping().unwrap();
    assert_eq!(storage.entries(KEY_TABLE), 1, "housekeeping erased k1");
    assert_eq!(core.ticket_key(Some(&k1.name)).unwrap(), None);

    // k2 stopped encrypting at this same second: the cycle goes on with k3.
    let k3 = core.ticket_key(None).unwrap().expect("an encryption key");
    assert!(k3.name != k1.name && k3.name != k2.name);
    assert_eq!(core.ticket_key(Some(&k2.name)).unwrap().as_ref(), Some(&k2));
    assert_eq!(core.stats().unwrap().keys_minted, 3);
    finish(core);
}

/// Two bounded caches filled past their bounds, then expiry and a
/// housekeeping backlog.
fn cache_fill_and_eviction(dir: &Path) {
    let settings = Settings {
        caches: BTreeMap::from([
            ("smtpd".to_owned(), CacheSettings { timeout: 300, max_entries: 8, ..CacheSettings::default() }),
            (
                "smtp".to_owned(),
                // 200-byte sessions take 241 bytes each (32-byte key, 9-byte
                // header): four fit in 1024.
                CacheSettings { timeout: 300, max_bytes: 1024, max_session_bytes: 256, ..CacheSettings::default() },
            ),
        ]),
        housekeeping_batch: 3,
        ..Settings::default()
    };
    let clock = ScriptedClock::new();
    let storage = SharedStorage::default();
    let mut core = recording(&dir.join(CACHE_FILL), &settings, caps(2, &clock, &storage, Box::new(NoSeedFile)));
    let session = |cache: &str, i: usize| format!("{cache} session {i:02} ").repeat(4).into_bytes();
    let cache_stats = |core: &mut Core, name: &str| {
        core.stats().unwrap().caches.into_iter().find(|c| c.name == name).expect("a configured cache")
    };

    for cache in ["smtpd", "smtp"] {
        let policy = core.policy(cache).unwrap();
        assert_eq!((policy.cachable, policy.timeout_secs), (true, 300), "{cache}");
    }

    // smtpd: 12 sessions, one a second, into room for 8.
    for i in 0..12 {
        core.update("smtpd", &format!("smtpd-{i:02}"), &session("smtpd", i)).unwrap();
        clock.advance_secs(1);
    }
    let s = cache_stats(&mut core, "smtpd");
    assert_eq!((s.entries, s.evicted, s.updates), (8, 4, 12));
    for i in 0..12 {
        let found = core.lookup("smtpd", &format!("smtpd-{i:02}")).unwrap();
        assert_eq!(found, (i >= 4).then(|| session("smtpd", i)), "smtpd-{i:02}: the four oldest were evicted");
    }
    // t = 12: a replacement evicts nothing; deletes.
    core.update("smtpd", "smtpd-05", &session("smtpd", 105)).unwrap();
    assert_eq!(core.lookup("smtpd", "smtpd-05").unwrap(), Some(session("smtpd", 105)));
    assert!(core.delete("smtpd", "smtpd-06").unwrap());
    assert!(!core.delete("smtpd", "smtpd-06").unwrap());
    let s = cache_stats(&mut core, "smtpd");
    assert_eq!((s.entries, s.evicted, s.hits, s.misses, s.deletes), (7, 4, 9, 4, 1));

    // smtp: 6 sessions of 200 bytes into 1024 bytes.
    let big = |i: usize| vec![u8::try_from(i).unwrap(); 200];
    for i in 0..6 {
        core.update("smtp", &format!("smtp-{i}"), &big(i)).unwrap();
        clock.advance_secs(1);
    }
    let s = cache_stats(&mut core, "smtp");
    assert_eq!((s.entries, s.bytes, s.evicted), (4, 4 * 241, 2));
    assert_eq!(core.lookup("smtp", "smtp-1").unwrap(), None, "evicted");
    assert_eq!(core.lookup("smtp", "smtp-5").unwrap(), Some(big(5)));

    // t = 310: smtpd entries stored before t = 10 have expired (an entry
    // lives while stored_at + 300 >= now); a lookup removes one.
    at(&clock, 310);
    assert_eq!(core.lookup("smtpd", "smtpd-04").unwrap(), None, "expired");
    assert_eq!(core.lookup("smtpd", "smtpd-10").unwrap(), Some(session("smtpd", 10)));
    assert_eq!(cache_stats(&mut core, "smtpd").expired, 1);

    // t = 1000: everything has expired. Housekeeping removes 3 entries per
    // call and asks to be called again at once (0 ms) while a backlog lasts.
    at(&clock, 1000);
    let mut backlog_calls = 0;
    while core.housekeeping().unwrap() == 0 {
        backlog_calls += 1;
        assert!(backlog_calls < 20, "housekeeping never finished");
    }
    assert!(backlog_calls >= 2, "only {backlog_calls} housekeeping calls reported a backlog");
    let stats = core.stats().unwrap();
    assert!(stats.caches.iter().all(|c| c.entries == 0 && c.bytes == 0), "{:?}", stats.caches);
    assert_eq!(storage.entries("scache/smtpd") + storage.entries("scache/smtp"), 0);
    assert!(core.housekeeping().unwrap() > 0, "no backlog left");
    finish(core);
}

/// The DRBG reseeding every 30..60 s for 16 minutes, with a seed file.
fn reseeding(dir: &Path) {
    let settings = Settings {
        reseed_period: 60,
        seed_update_period: 300,
        // Only switches seed saving on (core_config reads the path's
        // presence); the capability is the in-memory stand-in below, and
        // nothing touches this path.
        seed_file: Some(PathBuf::from("/nonexistent/tlskeeper-trace-seed")),
        ..Settings::default()
    };
    assert_eq!(settings.core_config().seed_save_period_secs, 300);
    let clock = ScriptedClock::new();
    let storage = SharedStorage::default();
    let left_by_last_run: Vec<u8> = Sha256::digest(b"tlskeeper trace corpus: the previous run's seed").repeat(2);
    let seed_file = MemorySeed::holding(left_by_last_run.clone());
    let mut core = recording(&dir.join(RESEEDING), &settings, caps(3, &clock, &storage, Box::new(seed_file.clone())));

    // The first request instantiates the DRBG, taking the saved seed.
    assert_eq!(core.seed(32).unwrap().len(), 32);
    let (taken, saved) = {
        let log = seed_file.log();
        (log.taken, log.saved)
    };
    assert_eq!((taken, saved), (1, 0));
    // 16 minutes: a request every 20 s, housekeeping every minute.
    for i in 1..=48u32 {
        clock.advance_secs(20);
        assert_eq!(core.seed(1 + (i * 37) % 255).unwrap().len(), (1 + (i * 37) % 255) as usize);
        if i % 3 == 0 {
            assert!(core.housekeeping().unwrap() <= 60_000);
        }
    }
    assert_eq!(core.seed(255).unwrap().len(), 255);
    let stats = core.stats().unwrap();
    // Deadlines fall 30..60 s apart and are noticed at the next call (every
    // 20 s): at least one reseed a minute.
    assert!(stats.reseeds >= 15, "{} reseeds in 960 s at a period of 60 s", stats.reseeds);
    let saved = seed_file.log().saved;
    assert!(saved >= 3, "{saved} seed saves in 960 s at a period of 300 s");

    // Stopping: checkpoint saves a fresh seed once more.
    core.checkpoint().unwrap();
    finish(core);
    let log = seed_file.log();
    assert_eq!((log.taken, log.saved), (1, saved + 1));
    let last = log.seed.as_deref().expect("a saved seed");
    assert_eq!(last.len(), 64);
    assert_ne!(last, &left_by_last_run[..]);
}

/// Two runs over one storage: what the first stores, the second finds.
fn restart(dir: &Path) {
    let settings = Settings::default();
    let clock = ScriptedClock::new();
    let storage = SharedStorage::default();
    let sessions = [("smtpd", "restart-a"), ("smtpd", "restart-b"), ("smtp", "restart-c")];
    let session = |id: &str| format!("the session stored as {id}").into_bytes();

    let key = {
        let mut core = recording(&dir.join(RESTART_BEFORE), &settings, caps(4, &clock, &storage, Box::new(NoSeedFile)));
        for (cache, id) in sessions {
            core.update(cache, id, &session(id)).unwrap();
            clock.advance_secs(1);
        }
        let key = core.ticket_key(None).unwrap().expect("an encryption key");
        assert_eq!(core.stats().unwrap().keys_minted, 1);
        // The core is dropped here: its in-memory state is gone.
        finish(core);
        key
    };
    assert_eq!(storage.entries(KEY_TABLE), 1);

    // Ten minutes later, a new process: fresh entropy, the same storage.
    clock.advance_secs(600);
    let mut core = recording(&dir.join(RESTART_AFTER), &settings, caps(5, &clock, &storage, Box::new(NoSeedFile)));
    assert_eq!(core.policy("smtpd").unwrap().timeout_secs, 3600);
    for (cache, id) in sessions {
        assert_eq!(core.lookup(cache, id).unwrap(), Some(session(id)), "{cache} {id}");
    }
    assert_eq!(core.lookup("smtpd", "never-stored").unwrap(), None);
    assert_eq!(core.ticket_key(Some(&key.name)).unwrap().as_ref(), Some(&key), "the key, by name");
    assert_eq!(core.ticket_key(None).unwrap().as_ref(), Some(&key), "still the encryption key");
    assert!(core.delete("smtpd", "restart-a").unwrap());
    assert_eq!(core.lookup("smtpd", "restart-a").unwrap(), None);
    core.housekeeping().unwrap();
    let stats = core.stats().unwrap();
    assert_eq!(stats.keys_minted, 0, "no key minted after the restart");
    let smtpd = stats.caches.iter().find(|c| c.name == "smtpd").unwrap();
    assert_eq!((smtpd.entries, smtpd.hits, smtpd.misses), (1, 2, 2));
    finish(core);
}

/// Every refusal a client can cause, and the misses that are not refusals.
fn bad_input(dir: &Path) {
    let settings = Settings {
        caches: BTreeMap::from([
            ("smtpd".to_owned(), CacheSettings { max_session_bytes: 1024, ..CacheSettings::default() }),
            ("smtp".to_owned(), CacheSettings { enabled: false, ..CacheSettings::default() }),
        ]),
        ..Settings::default()
    };
    let clock = ScriptedClock::new();
    let storage = SharedStorage::default();
    let mut core = recording(&dir.join(BAD_INPUT), &settings, caps(6, &clock, &storage, Box::new(NoSeedFile)));
    let unknown = || CoreError::UnknownCache("nosuch".into());
    let disabled = || CoreError::CacheDisabled("smtp".into());

    // An unknown cache, in every call that names one.
    assert_eq!(refused(core.policy("nosuch")), unknown());
    assert_eq!(refused(core.lookup("nosuch", "id")), unknown());
    assert_eq!(refused(core.update("nosuch", "id", b"session")), unknown());
    assert_eq!(refused(core.delete("nosuch", "id")), unknown());

    // A disabled cache: its policy says so, everything else is refused.
    let policy = core.policy("smtp").unwrap();
    assert_eq!((policy.cachable, policy.timeout_secs), (false, 3600));
    assert_eq!(refused(core.lookup("smtp", "id")), disabled());
    assert_eq!(refused(core.update("smtp", "id", b"session")), disabled());
    assert_eq!(refused(core.delete("smtp", "id")), disabled());

    // Seed lengths outside 1..=255.
    for len in [0, 256, u32::MAX] {
        assert_eq!(refused(core.seed(len)), CoreError::BadSeedLength(len));
    }

    // Ticket-key names that are not 16 bytes; a 16-byte unknown one is a
    // miss, not a refusal.
    for len in [1usize, 15, 17] {
        let name = vec![0xab; len];
        assert_eq!(refused(core.ticket_key(Some(&name))), CoreError::BadKeyNameLength(len as u32));
    }
    assert_eq!(core.ticket_key(Some(&[0xab; 16])).unwrap(), None);

    // A session over max_session_bytes; the largest allowed one is stored.
    assert_eq!(refused(core.update("smtpd", "big", &[7; 1025])), CoreError::SessionTooLarge(1025));
    core.update("smtpd", "largest", &[7; 1024]).unwrap();

    // Ids never stored.
    assert!(!core.delete("smtpd", "missing").unwrap());
    assert_eq!(core.lookup("smtpd", "missing").unwrap(), None);

    let stats = core.stats().unwrap();
    let smtpd = stats.caches.iter().find(|c| c.name == "smtpd").unwrap();
    assert_eq!((smtpd.entries, smtpd.updates, smtpd.deletes, smtpd.misses), (1, 1, 0, 1));
    assert_eq!((stats.keys_minted, stats.seed_bytes), (0, 0));
    finish(core);
}

/// Record every scenario into `dir`.
fn record_all(dir: &Path) {
    key_life(dir);
    cache_fill_and_eviction(dir);
    reseeding(dir);
    restart(dir);
    bad_input(dir);
}

// ---------------------------------------------------------------------------
// Tests.
// ---------------------------------------------------------------------------

/// `*.trace` files in `dir`, sorted by name.
fn trace_files(dir: &Path) -> Vec<PathBuf> {
    let entries = fs::read_dir(dir).unwrap_or_else(|e| {
        panic!("cannot list {}: {e}; the corpus is recorded by scripts/record-traces", dir.display())
    });
    let mut paths: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "trace") && p.is_file())
        .collect();
    paths.sort();
    paths
}

fn name(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

/// Writes the corpus into `$TLSKEEPER_TRACES_DIR`, replacing every trace
/// there (so that a renamed or removed scenario leaves no stale file).
/// Run it through `scripts/record-traces`.
#[test]
#[ignore = "run by scripts/record-traces"]
fn record_fixture_traces() {
    let dir = match std::env::var_os("TLSKEEPER_TRACES_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => panic!(
            "TLSKEEPER_TRACES_DIR is not set: it names the directory to record the traces into; \
             run scripts/record-traces, which sets it to fixtures/traces"
        ),
    };
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    // The trace writer never overwrites a file.
    for old in trace_files(&dir) {
        fs::remove_file(&old).unwrap_or_else(|e| panic!("cannot remove {}: {e}", old.display()));
    }
    record_all(&dir);
    let written: Vec<String> = trace_files(&dir).iter().map(|p| name(p)).collect();
    let mut expected: Vec<String> = TRACES.iter().map(|&n| n.to_owned()).collect();
    expected.sort();
    assert_eq!(written, expected);
    for name in TRACES {
        let path = dir.join(name);
        let trace = file::read(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(trace.cut_off, None, "{name}");
        let calls = trace.events.iter().filter(|e| matches!(e, tlskeeper_engine::trace::Event::Call(_))).count();
        println!("{name}: {calls} calls, {} bytes", fs::metadata(&path).unwrap().len());
    }
}

/// Every trace of the corpus replays against this build's core with the
/// same results and imports (and the same fuel, when this build's core is
/// the one that recorded it).
#[test]
fn fixture_traces_replay_identically() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/traces");
    let paths = trace_files(&dir);
    assert!(
        paths.len() >= TRACES.len(),
        "{} holds {} traces, expected at least {}: re-record the corpus with scripts/record-traces",
        dir.display(),
        paths.len(),
        TRACES.len()
    );
    let mut failures = Vec::new();
    for path in &paths {
        let name = name(path);
        let trace = file::read(path).unwrap_or_else(|e| panic!("{e}"));
        let report = replay(trace, runtime(), |_, _| {}).unwrap_or_else(|e| panic!("{name}: {e}"));
        let fuel = if report.fuel_compared {
            "fuel compared call by call".to_owned()
        } else {
            format!("fuel not compared (recorded by component {:.12})", report.components.0)
        };
        println!("{name}: {} calls, {fuel}", report.calls_in_trace);
        let whole = report.calls_replayed == report.calls_in_trace && report.cut_off.is_none();
        if !report.identical() || !whole {
            failures.push(format!("{name}:\n{report}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} traces did not replay identically:\n\n{}\n\n\
         re-record with scripts/record-traces if the change was intended",
        failures.len(),
        paths.len(),
        failures.join("\n\n")
    );
}

/// Recording an unchanged core twice gives byte-identical traces, and a
/// fresh recording replays against its own core with fuel compared.
#[test]
fn recording_is_reproducible() {
    let (first, second) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    reseeding(first.path());
    reseeding(second.path());
    let a = fs::read(first.path().join(RESEEDING)).unwrap();
    let b = fs::read(second.path().join(RESEEDING)).unwrap();
    assert!(a == b, "two recordings of {RESEEDING} differ ({} and {} bytes)", a.len(), b.len());

    let trace = file::read(&first.path().join(RESEEDING)).unwrap();
    let report = replay(trace, runtime(), |_, _| {}).unwrap();
    assert!(report.identical(), "{report}");
    assert!(report.fuel_compared, "{report}");
    assert_eq!(report.fuel_replayed, report.fuel_recorded);
}
