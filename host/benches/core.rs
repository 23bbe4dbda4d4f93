//! The cost of the sandbox: each core call made natively (the guest crate as
//! an ordinary library) and through wasmtime (the real component, with its
//! fuel metering and memory cap), on equivalent capabilities.
//!
//! Both sides get a clock that stands still, SHA-256 counter-mode "entropy"
//! and an in-memory ordered store, so the difference is what the component
//! boundary, wasm code generation and fuel metering add. Each benchmark is
//! named `<call>/native` or `<call>/wasm`; `scripts/bench-core` runs them
//! and prints the ratio per call.
//!
//! Run: `cargo bench -p tlskeeper --bench core` (add `-- --quick` for a
//! shorter run).

#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use sha2::{Digest, Sha256};
use tlskeeper::config::{CacheSettings, Settings};
use tlskeeper_engine::caps::{Clock, Entropy, EntropyError, NoSeedFile};
use tlskeeper_engine::storage::MemoryStorage;
use tlskeeper_engine::{Capabilities, Core, Runtime};
use tlskeeper_guest::config::{CacheConfig, Config};
use tlskeeper_guest::manager::Manager;
use tlskeeper_guest::testing::FakeCaps;

/// A realistic start time, in seconds since the epoch.
const NOW_SECS: u64 = 1_795_000_000;
/// Sessions stored before the lookups and updates are measured.
const SESSIONS: usize = 1000;
/// A typical TLS 1.2 session as Postfix stores it.
const SESSION: [u8; 140] = [0x5a; 140];
/// An id that is never stored.
const MISSING_ID: &str = "never-stored-0000000000000000000000000000000000000000000000000";

/// A clock that stands still.
struct StillClock;

impl Clock for StillClock {
    fn now_nanos(&mut self) -> u64 {
        NOW_SECS * 1_000_000_000
    }
}

/// SHA-256 in counter mode, as the native side's fake capabilities do.
struct CounterEntropy(u64);

impl Entropy for CounterEntropy {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), EntropyError> {
        for chunk in buf.chunks_mut(32) {
            let block = Sha256::new().chain_update(b"bench").chain_update(self.0.to_be_bytes()).finalize();
            self.0 += 1;
            chunk.copy_from_slice(&block[..chunk.len()]);
        }
        Ok(())
    }
}

fn session_id(i: usize) -> String {
    format!("{i:064x}")
}

/// One cache, `smtpd`, with the daemon's defaults.
fn settings() -> Settings {
    let mut settings = Settings::default();
    settings.caches.clear();
    settings.caches.insert("smtpd".to_owned(), CacheSettings { timeout: 3600, ..CacheSettings::default() });
    settings.ticket_cache = "smtpd".to_owned();
    settings
}

/// The same configuration for the native manager.
fn native_config(settings: &Settings) -> Config {
    let wit = settings.core_config();
    Config {
        caches: wit
            .caches
            .iter()
            .map(|c| CacheConfig {
                name: c.name.clone(),
                enabled: c.enabled,
                timeout_secs: c.timeout_secs,
                max_entries: c.max_entries,
                max_bytes: c.max_bytes,
                max_session_bytes: c.max_session_bytes,
            })
            .collect(),
        ticket_cache: wit.ticket_cache,
        reseed_period_secs: wit.reseed_period_secs,
        housekeeping_batch: wit.housekeeping_batch,
        seed_save_period_secs: wit.seed_save_period_secs,
    }
}

/// The calls measured, each over a core holding [`SESSIONS`] sessions and a
/// current ticket key.
trait Calls {
    fn seed(&mut self) -> Vec<u8>;
    fn ticket_key(&mut self, name: Option<&[u8]>) -> Option<Vec<u8>>;
    fn policy(&mut self) -> u32;
    fn lookup(&mut self, id: &str) -> Option<Vec<u8>>;
    fn update(&mut self, id: &str);
    fn delete(&mut self, id: &str) -> bool;
}

struct Native {
    manager: Manager,
    caps: FakeCaps,
}

impl Calls for Native {
    fn seed(&mut self) -> Vec<u8> {
        self.manager.seed(&mut self.caps, 32).unwrap()
    }
    fn ticket_key(&mut self, name: Option<&[u8]>) -> Option<Vec<u8>> {
        self.manager.ticket_key(&mut self.caps, name).unwrap().map(|k| k.name.to_vec())
    }
    fn policy(&mut self) -> u32 {
        self.manager.policy("smtpd").unwrap().timeout_secs
    }
    fn lookup(&mut self, id: &str) -> Option<Vec<u8>> {
        self.manager.lookup(&mut self.caps, "smtpd", id).unwrap()
    }
    fn update(&mut self, id: &str) {
        self.manager.update(&mut self.caps, "smtpd", id, &SESSION).unwrap();
    }
    fn delete(&mut self, id: &str) -> bool {
        self.manager.delete(&mut self.caps, "smtpd", id).unwrap()
    }
}

struct Wasm(Core);

impl Calls for Wasm {
    fn seed(&mut self) -> Vec<u8> {
        self.0.seed(32).unwrap()
    }
    fn ticket_key(&mut self, name: Option<&[u8]>) -> Option<Vec<u8>> {
        self.0.ticket_key(name).unwrap().map(|k| k.name.to_vec())
    }
    fn policy(&mut self) -> u32 {
        self.0.policy("smtpd").unwrap().timeout_secs
    }
    fn lookup(&mut self, id: &str) -> Option<Vec<u8>> {
        self.0.lookup("smtpd", id).unwrap()
    }
    fn update(&mut self, id: &str) {
        self.0.update("smtpd", id, &SESSION).unwrap();
    }
    fn delete(&mut self, id: &str) -> bool {
        self.0.delete("smtpd", id).unwrap()
    }
}

fn native() -> Native {
    let mut caps = FakeCaps::new(NOW_SECS, 1);
    let mut manager = Manager::new();
    manager.configure(&mut caps, &native_config(&settings())).unwrap();
    let mut native = Native { manager, caps };
    fill(&mut native);
    native
}

fn wasm(runtime: &Runtime) -> Wasm {
    let settings = settings();
    let caps = Capabilities {
        clock: Box::new(StillClock),
        entropy: Box::new(CounterEntropy(0)),
        storage: Box::new(MemoryStorage::new()),
        seed_file: Box::new(NoSeedFile),
    };
    let mut wasm = Wasm(Core::start(runtime, caps, settings.core_config(), settings.limits()).unwrap());
    fill(&mut wasm);
    wasm
}

/// Store the sessions and mint the first key (and the DRBG, on the first
/// seed), so that no measured call pays for a first use.
fn fill(core: &mut impl Calls) {
    for i in 0..SESSIONS {
        core.update(&session_id(i));
    }
    core.ticket_key(None).unwrap();
    core.seed();
}

fn bench_calls(c: &mut Criterion, label: &str, core: &mut impl Calls) {
    let key_name = core.ticket_key(None).unwrap();
    let ids: Vec<String> = (0..SESSIONS).map(session_id).collect();
    let mut group = c.benchmark_group("core");
    group.bench_function(BenchmarkId::new("seed", label), |b| b.iter(|| black_box(core.seed())));
    group.bench_function(BenchmarkId::new("tktkey", label), |b| b.iter(|| black_box(core.ticket_key(None))));
    group.bench_function(BenchmarkId::new("tktkey-name", label), |b| {
        b.iter(|| black_box(core.ticket_key(Some(&key_name))));
    });
    group.bench_function(BenchmarkId::new("policy", label), |b| b.iter(|| black_box(core.policy())));
    let mut next = ids.iter().cycle();
    group.bench_function(BenchmarkId::new("lookup-hit", label), |b| {
        b.iter(|| black_box(core.lookup(next.next().unwrap())));
    });
    group.bench_function(BenchmarkId::new("lookup-miss", label), |b| b.iter(|| black_box(core.lookup(MISSING_ID))));
    group.bench_function(BenchmarkId::new("update", label), |b| b.iter(|| core.update(next.next().unwrap())));
    group.bench_function(BenchmarkId::new("delete-miss", label), |b| b.iter(|| black_box(core.delete(MISSING_ID))));
    group.finish();
}

fn benches(c: &mut Criterion) {
    let runtime = Runtime::new(None).unwrap();
    bench_calls(c, "native", &mut native());
    bench_calls(c, "wasm", &mut wasm(&runtime));
}

criterion_group!(core, benches);
criterion_main!(core);
