//! Crash safety of durable state: the daemon is killed with SIGKILL, again
//! and again, while a client writes sessions and rotates ticket keys, and
//! after every restart the test checks what came back.
//!
//! The daemon is this test binary run again as a child ([`crash_daemon`]):
//! the library's own `daemon::run` over `state::open`, the real component,
//! the sealed redb store, the seed file and a real socket, exactly as
//! `tlskeeper serve --state-dir` assembles them, with one difference: its
//! clock runs [`RATE`] times faster than real time, on one timeline shared
//! by every restart. With the ticket cache at its 120-second floor, a key
//! then encrypts for about a real second and decrypts for two, so a run of
//! a few seconds rotates keys many times, and kills land during rotations.
//! (The `tlskeeper` binary has no clock knob, and should not grow one for a
//! test.)
//!
//! What each restart must show:
//! - the store opens (the child comes up and answers);
//! - every ticket key a client was given still decrypts, by name, with the
//!   same secrets, until its window ends (and not after);
//! - every session read back is exactly what was written under its id,
//!   and a session that survived one restart survives every later one;
//! - no record ever fails authentication (the child's log says so if one
//!   does);
//! - the DRBG's first output differs from every earlier run's, and each
//!   seed file on disk differs from every earlier one;
//! - across all runs, every seed taken was saved by an earlier run and none
//!   is taken twice ([`SeedWitness`] logs each one's hash).
//!
//! Every fifth cycle kills the child during start-up instead, at a random
//! moment of its first 400 ms: during the store's recovery, or in the
//! moment between taking the old seed and saving the next one, which those
//! runs widen to 300 ms (see [`SeedWitness`]). Without that, a seed file
//! that was read but not removed would pass: every run replaces it within
//! microseconds of reading it.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use common::Daemon;
use tlskeeper::config::{CacheSettings, Settings};
use tlskeeper::keybuf;
use tlskeeper::shutdown::Shutdown;
use tlskeeper_engine::caps::{Clock, OsEntropy, SeedStore};
use tlskeeper_engine::keys::TicketKey;
use tlskeeper_engine::{Capabilities, Runtime};
use tlskeeper_protocol::client::Client;
use tlskeeper_protocol::tlsmgr::{Reply, Request, Status};

/// Kills, start-up kills included.
const KILLS: usize = 60;
/// Fake seconds per real second.
const RATE: u64 = 60;
/// The ticket cache's timeout: the floor, so keys turn over fast.
const TICKET_TIMEOUT: u32 = 120;
/// Half of it: how long a key decrypts after it stops encrypting.
const HALF: i64 = TICKET_TIMEOUT as i64 / 2;
/// Fake seconds of slack around a key's deadline, for the time between the
/// test reading the clock and the daemon reading it.
const MARGIN: i64 = 10;
/// Where the fake timeline starts.
const FAKE_EPOCH_SECS: u64 = 1_900_000_000;

const ENV_DIR: &str = "TLSKEEPER_CRASH_DIR";
const ENV_REAL0: &str = "TLSKEEPER_CRASH_REAL0";
const ENV_LINGER: &str = "TLSKEEPER_CRASH_LINGER";
/// How long a start-up-kill run lingers after taking the seed.
const LINGER: Duration = Duration::from_millis(300);

fn unix_nanos() -> u64 {
    u64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos()).unwrap()
}

/// Fake time as a function of real time, the same in every process.
#[derive(Clone, Copy)]
struct FastClock {
    real0: u64,
}

impl FastClock {
    fn fake_nanos(self) -> u64 {
        FAKE_EPOCH_SECS * 1_000_000_000 + (unix_nanos() - self.real0) * RATE
    }

    fn fake_secs(self) -> i64 {
        i64::try_from(self.fake_nanos() / 1_000_000_000).unwrap()
    }
}

impl Clock for FastClock {
    fn now_nanos(&mut self) -> u64 {
        self.fake_nanos()
    }
}

fn settings(dir: &Path) -> Settings {
    let mut caches = BTreeMap::new();
    caches.insert("smtpd".to_owned(), CacheSettings { timeout: TICKET_TIMEOUT, ..CacheSettings::default() });
    // Sessions go to a cache whose entries outlive the test.
    caches.insert("smtp".to_owned(), CacheSettings { timeout: 8_640_000, ..CacheSettings::default() });
    Settings {
        socket: dir.join("socket"),
        state_dir: Some(dir.join("state")),
        compile_cache_dir: Some(dir.join("compiled")),
        caches,
        ..Settings::default()
    }
}

/// The daemon's seed file, with a line in its log for every seed taken and
/// every seed about to be saved (a hash, not the seed), so that the parent
/// can check across all runs that no seed is ever taken twice. Output and
/// clock alone cannot show that: fresh OS entropy and a new clock reading
/// make every run's output differ even if a seed were reused.
///
/// In the runs meant to be killed during start-up it also lingers after a
/// take, widening the moment between consuming the old seed and saving the
/// next one (a few microseconds otherwise) so that kills land in it: that
/// is when a seed that was not really consumed would be taken again.
struct SeedWitness {
    inner: Box<dyn SeedStore>,
    linger: bool,
}

fn seed_id(seed: &[u8]) -> String {
    hex::encode(&Sha256::digest(seed)[..8])
}

impl SeedStore for SeedWitness {
    fn take(&mut self) -> Option<Vec<u8>> {
        let seed = self.inner.take();
        if let Some(seed) = &seed {
            eprintln!("crash-test: seed taken {}", seed_id(seed));
        }
        if self.linger {
            thread::sleep(LINGER);
        }
        seed
    }

    fn save(&mut self, seed: &[u8]) -> Result<(), String> {
        // Before, not after: a kill between the rename and a later line
        // would leave a seed on disk that the log never mentioned.
        eprintln!("crash-test: seed saving {}", seed_id(seed));
        self.inner.save(seed)
    }
}

/// The daemon half, run by [`sigkill_during_load_loses_nothing_durable`] as
/// a child process; does nothing when run on its own.
#[test]
#[ignore = "the daemon half of the crash test, run by it as a child process"]
fn crash_daemon() {
    let (Some(dir), Some(real0)) = (std::env::var_os(ENV_DIR), std::env::var_os(ENV_REAL0)) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let real0: u64 = real0.to_str().unwrap().parse().unwrap();
    tlskeeper::logging::install_stderr("info");
    let started = Instant::now();
    let settings = settings(&dir);
    let shutdown = Arc::new(Shutdown::new().unwrap());
    tlskeeper::shutdown::on_signals(Arc::clone(&shutdown)).unwrap();
    let runtime = Runtime::new(settings.compile_cache_dir.as_deref()).unwrap();
    // An error here is what the parent is looking for: it fails the test
    // with this message and the log.
    let state = match tlskeeper_engine::state::open(&settings.state_options()) {
        Ok(state) => state,
        Err(e) => {
            eprintln!("state did not open: {e}");
            std::process::exit(e.status());
        }
    };
    let caps = Capabilities {
        clock: Box::new(FastClock { real0 }),
        entropy: Box::new(OsEntropy),
        storage: state.storage,
        seed_file: Box::new(SeedWitness { inner: state.seed_file, linger: std::env::var_os(ENV_LINGER).is_some() }),
    };
    let daemon =
        tlskeeper::daemon::Daemon::on_own_socket(runtime, caps, settings, 0o600, shutdown, started, Default::default())
            .unwrap();
    tlskeeper::daemon::run(daemon).unwrap();
}

fn spawn(dir: &Path, clock: FastClock, cycle: usize, linger: bool) -> Daemon {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    if linger {
        cmd.env(ENV_LINGER, "1");
    }
    cmd.args(["--exact", "crash_daemon", "--ignored", "--nocapture", "--test-threads=1"])
        .env(ENV_DIR, dir)
        .env(ENV_REAL0, clock.real0.to_string())
        .env_remove("RUST_LOG");
    Daemon::launch(cmd, &dir.join("socket"), &dir.join(format!("daemon-{cycle}.log")))
}

fn sigkill(daemon: &mut Daemon) {
    let pid = daemon.pid();
    // SAFETY: kill(2) on our own child's PID; no memory is involved.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let status = daemon.wait_exit(Duration::from_secs(10), "after SIGKILL");
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(libc::SIGKILL), "{status}");
}

/// The session stored under `id`: derived from the id, so any reply can be
/// checked, acknowledged or not.
fn session_for(id: &str) -> Vec<u8> {
    let block = Sha256::digest(id.as_bytes());
    block.iter().cycle().take(140).copied().collect()
}

/// A small deterministic generator; the seed is printed for a rerun.
struct XorShift(u64);

impl XorShift {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// What clients were told, shared with the load thread.
#[derive(Default)]
struct Acked {
    /// Ticket keys handed out, by name.
    keys: BTreeMap<[u8; 16], TicketKey>,
    /// Sessions whose update was answered OK, not yet seen after a restart.
    fresh: Vec<String>,
    /// Requests answered.
    requests: u64,
}

/// Requests until the connection breaks (the kill) or `stop` is set.
fn load(socket: &Path, cycle: usize, acked: &Mutex<Acked>, stop: &AtomicBool) {
    let Ok(mut client) = Client::connect(socket) else { return };
    for n in 0.. {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let Ok(reply) = client.request(&Request::TicketKey { key_name: Vec::new() }) else { return };
        let Reply::TicketKey { status: Status::Ok, keybuf } = reply else { panic!("tktkey refused: {reply:?}") };
        let key = keybuf::decode(&keybuf).unwrap();
        {
            let mut a = acked.lock().unwrap();
            a.keys.insert(key.name, key);
            a.requests += 1;
        }
        let id = format!("c{cycle}-{n}");
        let update =
            Request::Update { cache_type: "smtp".into(), cache_id: id.clone(), session: session_for(&id).into() };
        let Ok(reply) = client.request(&update) else { return };
        assert_eq!(reply.status(), Status::Ok, "update refused");
        let mut a = acked.lock().unwrap();
        a.fresh.push(id);
        a.requests += 1;
    }
}

fn ticket_key(client: &mut Client, name: &[u8; 16]) -> Option<TicketKey> {
    match client.request(&Request::TicketKey { key_name: name.to_vec() }).unwrap() {
        Reply::TicketKey { status: Status::Ok, keybuf } => Some(keybuf::decode(&keybuf).unwrap()),
        Reply::TicketKey { status: Status::Err, .. } => None,
        other => panic!("tktkey by name: {other:?}"),
    }
}

fn lookup(client: &mut Client, id: &str) -> Option<Vec<u8>> {
    match client.request(&Request::Lookup { cache_type: "smtp".into(), cache_id: id.into() }).unwrap() {
        Reply::Lookup { status: Status::Ok, session } => Some(session.to_vec()),
        Reply::Lookup { status: Status::Err, .. } => None,
        other => panic!("lookup: {other:?}"),
    }
}

#[derive(Default, Debug)]
struct Figures {
    kills_in_load: usize,
    kills_in_start: usize,
    requests: u64,
    keys_handed_out: usize,
    key_checks: usize,
    keys_expired_as_due: usize,
    sessions_acked: usize,
    sessions_lost_unflushed: usize,
    session_checks: usize,
    first_outputs: usize,
    seed_files_seen: usize,
    seeds_saved: usize,
    seeds_taken: usize,
    start_ms: Vec<u128>,
}

#[test]
fn sigkill_during_load_loses_nothing_durable() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let clock = FastClock { real0: unix_nanos() };
    let seed = clock.real0 | 1;
    println!("crash test: rng seed {seed}, {KILLS} kills, clock x{RATE}");
    let mut rng = XorShift(seed);
    let acked = Arc::new(Mutex::new(Acked::default()));
    let mut keys: BTreeMap<[u8; 16], TicketKey> = BTreeMap::new();
    // Sessions that survived a restart: they must survive every later one.
    let mut durable: Vec<String> = Vec::new();
    let mut first_outputs: BTreeSet<Vec<u8>> = BTreeSet::new();
    let mut seed_files: BTreeSet<Vec<u8>> = BTreeSet::new();
    let mut figures = Figures::default();
    let began = Instant::now();

    for cycle in 0..=KILLS {
        let spawned = Instant::now();
        let kill_in_start = cycle % 5 == 4 && cycle < KILLS;
        let mut daemon = spawn(dir, clock, cycle, kill_in_start);
        if kill_in_start {
            thread::sleep(Duration::from_millis(rng.below(400)));
            if daemon.child().try_wait().unwrap().is_none() {
                sigkill(&mut daemon);
                figures.kills_in_start += 1;
                continue;
            }
        }
        daemon.wait_ready();
        figures.start_ms.push(spawned.elapsed().as_millis());
        let mut client = Client::connect(&daemon.socket).unwrap();

        // The DRBG's first output of this run.
        let Reply::Seed { status: Status::Ok, seed } = client.request(&Request::Seed { size: 255 }).unwrap() else {
            panic!("seed refused")
        };
        assert!(first_outputs.insert(seed.to_vec()), "run {cycle}: the DRBG repeated an earlier run's first output");
        // The first seed request took the last run's seed file (if the
        // start-up housekeeping had not already): the file is now absent or
        // this run's own, never one seen before.
        if let Ok(file) = fs::read(dir.join("state/seed")) {
            assert!(seed_files.insert(file), "run {cycle}: an earlier seed file came back");
        }

        // Keys handed out before the kill decrypt until their window ends.
        let new_keys = std::mem::take(&mut acked.lock().unwrap().keys);
        figures.keys_handed_out += new_keys.keys().filter(|name| !keys.contains_key(*name)).count();
        keys.extend(new_keys);
        let now = clock.fake_secs();
        keys.retain(|name, key| {
            let deadline = key.expires + HALF;
            let got = ticket_key(&mut client, name);
            figures.key_checks += 1;
            match &got {
                Some(got) => {
                    assert_eq!(got, key, "run {cycle}: key {} came back different", hex::encode(name));
                    assert!(deadline > now - MARGIN, "run {cycle}: key past its window still decrypts");
                }
                None => {
                    assert!(
                        deadline <= now + MARGIN,
                        "run {cycle}: key {} lost {}s before the end of its window",
                        hex::encode(name),
                        deadline - now
                    );
                    figures.keys_expired_as_due += 1;
                }
            }
            got.is_some()
        });

        // Sessions: exact or absent; once durable, always there.
        let fresh = std::mem::take(&mut acked.lock().unwrap().fresh);
        figures.sessions_acked += fresh.len();
        for id in fresh {
            figures.session_checks += 1;
            match lookup(&mut client, &id) {
                Some(session) => {
                    assert_eq!(session, session_for(&id), "run {cycle}: session {id} came back different");
                    durable.push(id);
                }
                None => figures.sessions_lost_unflushed += 1,
            }
        }
        for _ in 0..durable.len().min(200) {
            let id = &durable[rng.below(durable.len() as u64) as usize];
            figures.session_checks += 1;
            assert_eq!(lookup(&mut client, id), Some(session_for(id)), "run {cycle}: durable session {id} lost");
        }
        assert_eq!(lookup(&mut client, "never-written"), None);
        drop(client);
        let log = daemon.log();
        assert!(!log.contains("failed authentication"), "run {cycle}: a record failed authentication:\n{log}");
        assert!(!log.contains("malformed"), "run {cycle}: a malformed record:\n{log}");

        if cycle == KILLS {
            daemon.sigterm();
            assert!(daemon.wait_exit(Duration::from_secs(10), "final stop").success(), "{}", daemon.log());
            break;
        }

        // Load, and a kill at a random moment of it.
        let stop = Arc::new(AtomicBool::new(false));
        let worker = {
            let (socket, acked, stop) = (daemon.socket.clone(), Arc::clone(&acked), Arc::clone(&stop));
            thread::spawn(move || load(&socket, cycle, &acked, &stop))
        };
        thread::sleep(Duration::from_millis(50 + rng.below(if cycle % 7 == 0 { 1500 } else { 450 })));
        sigkill(&mut daemon);
        stop.store(true, Ordering::Relaxed);
        worker.join().unwrap();
        figures.kills_in_load += 1;
    }

    // Across every run, start-up kills included: each seed taken was saved
    // by an earlier run, and none was taken twice.
    let (mut saved, mut taken) = (BTreeSet::new(), BTreeSet::new());
    for cycle in 0..=KILLS {
        let log = fs::read_to_string(dir.join(format!("daemon-{cycle}.log"))).unwrap_or_default();
        for line in log.lines() {
            if let Some(id) = line.strip_prefix("crash-test: seed saving ") {
                saved.insert(id.to_owned());
            } else if let Some(id) = line.strip_prefix("crash-test: seed taken ") {
                assert!(saved.contains(id), "run {cycle} took seed {id}, which no earlier run saved");
                assert!(taken.insert(id.to_owned()), "run {cycle} took seed {id} a second time");
            }
        }
    }
    figures.seeds_taken = taken.len();
    figures.seeds_saved = saved.len();

    let a = acked.lock().unwrap();
    figures.requests = a.requests;
    figures.first_outputs = first_outputs.len();
    figures.seed_files_seen = seed_files.len();
    let starts = &mut figures.start_ms;
    starts.sort_unstable();
    println!(
        "crash test: {} kills ({} during load, {} during start-up) in {:.1} s; {} requests answered; \
         {} ticket keys handed out, {} key checks, every key decrypted until its window ended ({} expired on time); \
         {} sessions acknowledged, {} lost because unflushed at the kill, {} session checks, none corrupt, \
         no durable one lost; {} distinct first DRBG outputs in {} runs, {} distinct seed files; \
         {} seeds saved, {} taken, none twice; \
         start-up to first answer: median {} ms, max {} ms",
        figures.kills_in_load + figures.kills_in_start,
        figures.kills_in_load,
        figures.kills_in_start,
        began.elapsed().as_secs_f64(),
        figures.requests,
        figures.keys_handed_out,
        figures.key_checks,
        figures.keys_expired_as_due,
        figures.sessions_acked,
        figures.sessions_lost_unflushed,
        figures.session_checks,
        figures.first_outputs,
        starts.len(),
        figures.seed_files_seen,
        figures.seeds_saved,
        figures.seeds_taken,
        starts[starts.len() / 2],
        starts[starts.len() - 1],
    );
    assert!(figures.kills_in_load + figures.kills_in_start >= 50);
    assert!(figures.keys_expired_as_due > 0, "the test never saw a key expire: it did not rotate keys");
}
