//! tlskeeper at a million sessions: memory per cached session, and what a
//! housekeeping sweep of a million expired sessions does to request latency.
//!
//! Runs the real core and the real server in this process, on a clock it
//! moves by hand, so that a million sessions can expire without waiting an
//! hour. Two stores:
//! - `memory`: the cache kept in memory (`persistent = false`), where every
//!   session costs resident memory;
//! - `persistent`: the default, a sealed redb store in a state directory,
//!   where sessions live on disk behind a bounded page cache.
//!
//! For each it fills `--sessions` sessions of 140 bytes through the core,
//! reports resident memory per session, then measures the smtpd mix on 16
//! connections for `--seconds` twice: with nothing to sweep, and from the
//! moment every filled session has expired and the daemon's own caretaker
//! is told to sweep (`SharedCore::housekeep_now`): batches back to back,
//! the lock handed on fairly after each, storage committed as it goes. It
//! reports p50/p99/max of both and how long the sweep took.
//!
//! Usage: cargo run --release -p tlskeeper --example scale -- \
//!            [--sessions N] [--seconds S] [--json]
//!
//! A benchmark, not a test: it asserts nothing about speed.

#![allow(clippy::unwrap_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tlskeeper::bench::{self, Mix, Options, Report};
use tlskeeper::config::{CacheSettings, Settings};
use tlskeeper::service::Service;
use tlskeeper::shutdown::Shutdown;
use tlskeeper_engine::caps::{Clock, OsEntropy};
use tlskeeper_engine::shared_core::SharedCore;
use tlskeeper_engine::{Core, Runtime};

/// A realistic start time, in nanoseconds since the epoch.
const START_NANOS: u64 = 1_795_000_000 * 1_000_000_000;
/// The cache's session timeout.
const TIMEOUT_SECS: u32 = 3600;
/// A typical TLS 1.2 session as Postfix stores it.
const SESSION: [u8; 140] = [0x5a; 140];

/// How often the harness asks how many sessions are left while the sweep
/// runs: each ask is one call into the core.
const SWEEP_POLL: Duration = Duration::from_millis(20);

/// Sessions cached in every cache.
fn cached(shared: &SharedCore) -> u64 {
    shared.call(Core::stats).unwrap().unwrap().caches.iter().map(|c| c.entries).sum()
}

/// A clock this harness moves.
#[derive(Clone)]
struct HandClock(Arc<AtomicU64>);

impl Clock for HandClock {
    fn now_nanos(&mut self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

#[derive(Serialize, Deserialize)]
struct Outcome {
    store: String,
    sessions: u64,
    fill_seconds: f64,
    rss_before_mib: f64,
    rss_after_mib: f64,
    bytes_per_session: f64,
    quiet: Report,
    sweeping: Report,
    sweep_seconds: f64,
    p99_ratio: f64,
}

fn main() {
    let mut sessions: u64 = 1_000_000;
    let mut seconds: u64 = 5;
    let mut json = false;
    let mut store: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--sessions" => sessions = args.next().and_then(|v| v.parse().ok()).expect("--sessions N"),
            "--seconds" => seconds = args.next().and_then(|v| v.parse().ok()).expect("--seconds S"),
            "--store" => store = args.next(),
            "--json" => json = true,
            other => {
                eprintln!("scale: unknown argument {other}; usage: scale [--sessions N] [--seconds S] [--json]");
                std::process::exit(64);
            }
        }
    }
    let outcomes: Vec<Outcome> = match store.as_deref() {
        // One store per process, so that memory freed by one run cannot
        // hide the next run's growth.
        None => ["memory", "persistent"]
            .into_iter()
            .map(|store| {
                let out = std::process::Command::new(std::env::current_exe().unwrap())
                    .args(["--store", store, "--sessions", &sessions.to_string(), "--seconds", &seconds.to_string()])
                    .stderr(std::process::Stdio::inherit())
                    .output()
                    .unwrap();
                assert!(out.status.success(), "scale --store {store} failed");
                serde_json::from_slice(&out.stdout).unwrap()
            })
            .collect(),
        Some(store @ ("memory" | "persistent")) => {
            let work = tempfile::tempdir().unwrap();
            let runtime = Runtime::new(None).unwrap();
            let outcome = measure(&runtime, work.path(), store == "persistent", sessions, seconds);
            println!("{}", serde_json::to_string(&Outcome { store: store.to_owned(), ..outcome }).unwrap());
            return;
        }
        Some(other) => {
            eprintln!("scale: --store is memory or persistent, not {other}");
            std::process::exit(64);
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&outcomes).unwrap());
        return;
    }
    for o in &outcomes {
        println!(
            "{}: {} sessions filled in {:.1} s; resident {:.1} -> {:.1} MiB = {:.0} bytes per session",
            o.store, o.sessions, o.fill_seconds, o.rss_before_mib, o.rss_after_mib, o.bytes_per_session
        );
        println!("  quiet:    {}", o.quiet);
        println!("  sweeping: {}", o.sweeping);
        println!(
            "  sweep of {} expired sessions: {:.1} s; p99 {:.2}x the quiet p99",
            o.sessions, o.sweep_seconds, o.p99_ratio
        );
    }
}

fn settings(state_dir: Option<PathBuf>, persistent: bool) -> Settings {
    let mut settings = Settings::default();
    settings.caches.clear();
    settings.caches.insert(
        "smtpd".to_owned(),
        CacheSettings { timeout: TIMEOUT_SECS, max_entries: 2_000_000, persistent, ..CacheSettings::default() },
    );
    settings.ticket_cache = "smtpd".to_owned();
    settings.state_dir = state_dir;
    settings
}

fn measure(runtime: &Runtime, work: &Path, persistent: bool, sessions: u64, seconds: u64) -> Outcome {
    let state_dir = work.join("state");
    std::fs::create_dir(&state_dir).unwrap();
    std::fs::set_permissions(&state_dir, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let settings = settings(Some(state_dir), persistent);
    let clock = HandClock(Arc::new(AtomicU64::new(START_NANOS)));

    let rss_before = rss_bytes();
    let state = tlskeeper_engine::state::open(&settings.state_options()).unwrap_or_else(|e| panic!("{e}"));
    let caps = state.into_capabilities(Box::new(clock.clone()), Box::new(OsEntropy));
    let mut core = Core::start(runtime, caps, settings.core_config(), settings.limits()).unwrap();
    let started = Instant::now();
    for i in 0..sessions {
        core.update("smtpd", &format!("fill-{i:016x}"), &SESSION).unwrap();
    }
    core.flush_storage().unwrap();
    let fill_seconds = started.elapsed().as_secs_f64();
    let rss_after = rss_bytes();

    // Serve it, with the caretaker running as in the daemon.
    let (shared, caretaker) = tlskeeper_engine::shared_core::spawn(core).unwrap();
    let socket = work.join("tlsmgr.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let shutdown = Arc::new(Shutdown::new().unwrap());
    let server = {
        let shutdown = Arc::clone(&shutdown);
        let service = Service::new(shared.clone());
        let server_settings = settings.server();
        thread::spawn(move || tlskeeper::server::serve(&[listener], &service, &server_settings, &shutdown).unwrap())
    };
    let load = |seconds: u64| {
        let options = Options {
            socket: socket.clone(),
            connections: 16,
            duration: Some(Duration::from_secs(seconds)),
            requests: None,
            mix: Mix::Smtpd,
            cache: "smtpd".to_owned(),
        };
        bench::run(&options, &|_| {}).unwrap()
    };
    let quiet = load(seconds);

    // Every filled session expires, and the caretaker is told to sweep now
    // (as after a clock jump): it runs housekeeping batches back to back,
    // handing the lock on after each, and commits storage as it goes.
    clock.0.fetch_add(u64::from(TIMEOUT_SECS + 60) * 1_000_000_000, Ordering::SeqCst);
    shared.housekeep_now();
    let (done_tx, done_rx) = mpsc::channel();
    let watcher = {
        let shared = shared.clone();
        thread::spawn(move || {
            let started = Instant::now();
            // The load stores sessions of its own (bench.rs cycles through
            // 1024 ids), at the advanced time: those stay.
            while cached(&shared) > 1024 {
                thread::sleep(SWEEP_POLL);
            }
            done_tx.send(()).unwrap();
            started.elapsed().as_secs_f64()
        })
    };
    let sweeping = load(seconds);
    let swept_during_load = done_rx.try_recv().is_ok();
    let sweep_seconds = watcher.join().unwrap();
    if !swept_during_load {
        eprintln!("scale: the sweep outlasted the {seconds} s load; the sweeping figures cover its first {seconds} s");
    }

    shutdown.trigger();
    server.join().unwrap();
    drop(shared);
    caretaker.join().unwrap();

    let p99_ratio = f64::from(sweeping.p99_us) / f64::from(quiet.p99_us.max(1));
    Outcome {
        store: String::new(),
        sessions,
        fill_seconds,
        rss_before_mib: rss_before as f64 / 1048576.0,
        rss_after_mib: rss_after as f64 / 1048576.0,
        bytes_per_session: (rss_after.saturating_sub(rss_before)) as f64 / sessions as f64,
        quiet,
        sweeping,
        sweep_seconds,
        p99_ratio,
    }
}

/// Resident set size of this process, from /proc/self/statm.
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}
