//! The shared core (`tlskeeper_engine::shared_core`) under concurrent callers: a
//! real core component behind `spawn`, called from many threads at once.
//!
//! What is checked is what the module promises: every call runs, exactly
//! once and one at a time, and returns its own result to its own caller;
//! calls queued behind a long one all complete; a panic in a call poisons
//! the core without leaving any caller waiting; and when the last handle
//! goes, the caretaker checkpoints the core, drops it and ends.
//!
//! Nothing here asserts on speed. Sleeps only arrange for callers to be
//! queued, and every wait for another thread is bounded by [`PATIENCE`], so
//! that a lost caller fails the test instead of hanging it.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Barrier, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use tlskeeper::config::Settings;
use tlskeeper_engine::caps::SeedStore;
use tlskeeper_engine::shared_core::{CoreGone, SharedCore, spawn};
use tlskeeper_engine::storage::{Commit, Committed, Entry, MemoryStorage, Storage, StorageError, TableStat};
use tlskeeper_engine::{Capabilities, Core};

use common::{ScriptedClock, caps, runtime};

/// How long a test waits for another thread before calling it lost. Far
/// beyond anything a working call needs, even on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(60);

/// How long a call holds the core while others queue behind it.
const LONG_CALL: Duration = Duration::from_millis(200);

/// A default core behind a fresh caretaker.
fn start() -> (SharedCore, JoinHandle<()>) {
    spawn(common::core(&ScriptedClock::new())).expect("caretaker starts")
}

/// Start a call that takes the core, waits until `waiters` other threads
/// have said (on the returned sender) that they are about to call, holds on
/// for [`LONG_CALL`] more so that their calls queue behind it, and then runs
/// `then`. Returns once the call holds the core.
fn hold_core<T: Send + 'static>(
    core: &SharedCore,
    waiters: usize,
    then: impl FnOnce(&mut Core) -> T + Send + 'static,
) -> (JoinHandle<Result<T, CoreGone>>, mpsc::Sender<()>) {
    let (started_tx, started_rx) = mpsc::channel();
    let (arriving_tx, arriving_rx) = mpsc::channel::<()>();
    let core = core.clone();
    let holder = thread::Builder::new()
        .name("holder".into())
        .spawn(move || {
            core.call(move |c| {
                started_tx.send(()).unwrap();
                for _ in 0..waiters {
                    arriving_rx.recv_timeout(PATIENCE).unwrap();
                }
                thread::sleep(LONG_CALL);
                then(c)
            })
        })
        .unwrap();
    started_rx.recv_timeout(PATIENCE).expect("the long call started");
    (holder, arriving_tx)
}

/// Join `thread`, failing the test if it has not ended within [`PATIENCE`].
fn join_within<T>(thread: JoinHandle<T>, what: &str) -> thread::Result<T> {
    let deadline = Instant::now() + PATIENCE;
    while !thread.is_finished() {
        assert!(Instant::now() < deadline, "{what} did not end within {PATIENCE:?}");
        thread::sleep(Duration::from_millis(5));
    }
    thread.join()
}

/// Counts the calls it wraps as they run, the times one started while
/// another was still running, and those run by a thread other than their
/// caller's.
#[derive(Clone, Default)]
struct Turns {
    inside: Arc<AtomicBool>,
    overlaps: Arc<AtomicUsize>,
    ran: Arc<AtomicUsize>,
    combined: Arc<AtomicUsize>,
}

impl Turns {
    /// `f`, counted.
    fn counted<T>(
        &self,
        f: impl FnOnce(&mut Core) -> T + Send + 'static,
    ) -> impl FnOnce(&mut Core) -> T + Send + 'static {
        let (turns, caller) = (self.clone(), thread::current().id());
        move |c: &mut Core| {
            if thread::current().id() != caller {
                turns.combined.fetch_add(1, Ordering::SeqCst);
            }
            if turns.inside.swap(true, Ordering::SeqCst) {
                turns.overlaps.fetch_add(1, Ordering::SeqCst);
            }
            turns.ran.fetch_add(1, Ordering::SeqCst);
            let value = f(c);
            turns.inside.store(false, Ordering::SeqCst);
            value
        }
    }
}

/// Sixteen threads making hundreds of calls each at once: every call runs
/// exactly once, no two calls overlap, and each caller gets its own
/// results (what it stored under its own ids, read back).
#[test]
fn concurrent_calls_run_once_each_one_at_a_time_with_their_own_results() {
    const THREADS: usize = 16;
    const ROUNDS: usize = 200;
    let (core, caretaker) = start();
    let turns = Turns::default();
    let start_together = Arc::new(Barrier::new(THREADS));

    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (core, turns, start_together) = (core.clone(), turns.clone(), Arc::clone(&start_together));
            thread::spawn(move || {
                start_together.wait();
                let mut made = 0;
                for i in 0..ROUNDS {
                    let id = format!("thread-{t}-call-{i}");
                    let session = format!("session of thread {t}, call {i}").into_bytes();
                    let (update_id, stored) = (id.clone(), session.clone());
                    let updated = core.call(turns.counted(move |c| c.update("smtpd", &update_id, &stored).unwrap()));
                    assert_eq!(updated, Ok(()), "thread {t} call {i}");
                    let found = core.call(turns.counted(move |c| c.lookup("smtpd", &id).unwrap()));
                    assert_eq!(found, Ok(Some(session)), "thread {t} call {i}");
                    made += 2;
                }
                made
            })
        })
        .collect();

    let made: usize = threads.into_iter().map(|t| join_within(t, "a calling thread").unwrap()).sum();
    assert_eq!(made, THREADS * ROUNDS * 2);
    assert_eq!(turns.ran.load(Ordering::SeqCst), made, "calls run != calls made");
    assert_eq!(turns.overlaps.load(Ordering::SeqCst), 0, "calls ran at the same time");
    // Nothing was lost or mixed up between threads: every session is there.
    let stats = core.call(|c| c.stats().unwrap()).unwrap();
    let combined = turns.combined.load(Ordering::SeqCst);
    println!("{made} concurrent calls, {combined} of them run by another caller's thread; {stats:?}");
    assert_eq!(combined, 0, "every call runs on its caller's thread");
    let smtpd = stats.caches.iter().find(|c| c.name == "smtpd").expect("the smtpd cache");
    let sessions = (THREADS * ROUNDS) as u64;
    assert_eq!((smtpd.entries, smtpd.updates, smtpd.hits, smtpd.misses), (sessions, sessions, sessions, 0));
    for t in 0..THREADS {
        let id = format!("thread-{t}-call-0");
        let expected = format!("session of thread {t}, call 0").into_bytes();
        assert_eq!(core.call(move |c| c.lookup("smtpd", &id).unwrap()), Ok(Some(expected)));
    }
    drop(core);
    join_within(caretaker, "the caretaker").unwrap();
}

/// One call holds the core for a while; callers arriving meanwhile are
/// queued, and every one of them completes with its own result, after the
/// long call (never during it) and without waiting forever.
#[test]
fn calls_queued_behind_a_long_call_all_complete() {
    const WAITERS: usize = 12;
    let (core, caretaker) = start();
    let long_done = Arc::new(AtomicBool::new(false));
    let (holder, arriving_tx) = {
        let long_done = long_done.clone();
        hold_core(&core, WAITERS, move |c| {
            let seed = c.seed(16).unwrap();
            long_done.store(true, Ordering::SeqCst);
            seed.len()
        })
    };

    let (results_tx, results_rx) = mpsc::channel();
    let waiters: Vec<_> = (0..WAITERS)
        .map(|w| {
            let (core, long_done, arriving_tx, results_tx) =
                (core.clone(), long_done.clone(), arriving_tx.clone(), results_tx.clone());
            thread::spawn(move || {
                arriving_tx.send(()).unwrap();
                let result = core.call(move |c| {
                    let after_long = long_done.load(Ordering::SeqCst);
                    c.update("smtpd", &format!("waiter-{w}"), &[w as u8; 32]).unwrap();
                    (w, after_long)
                });
                results_tx.send(result).unwrap();
            })
        })
        .collect();
    drop(results_tx);

    let mut seen = BTreeSet::new();
    for _ in 0..WAITERS {
        let result = results_rx.recv_timeout(PATIENCE).expect("a queued call never completed");
        let (w, after_long) = result.expect("a queued call failed");
        assert!(after_long, "waiter {w}'s call ran while the long call held the core");
        assert!(seen.insert(w), "waiter {w} answered twice");
    }
    assert_eq!(seen, (0..WAITERS).collect());
    assert_eq!(join_within(holder, "the long call").unwrap(), Ok(16));
    for w in waiters {
        join_within(w, "a waiter").unwrap();
    }
    // Each queued call did its own work on the core.
    for w in 0..WAITERS {
        let found = core.call(move |c| c.lookup("smtpd", &format!("waiter-{w}")).unwrap());
        assert_eq!(found, Ok(Some(vec![w as u8; 32])));
    }
    drop(core);
    join_within(caretaker, "the caretaker").unwrap();
}

/// A call that panics while callers are queued behind it: its own thread
/// unwinds, each queued caller gets `CoreGone` (none is left waiting), so
/// does every later call, and the caretaker ends once the handles are gone.
#[test]
fn a_panicking_call_fails_queued_and_later_calls_with_core_gone() {
    const WAITERS: usize = 6;
    let (core, caretaker) = start();
    let (panicking, arriving_tx) =
        hold_core(&core, WAITERS, |_| -> () { panic!("a deliberate panic inside a core call") });

    let (results_tx, results_rx) = mpsc::channel();
    let ran = Arc::new(AtomicUsize::new(0));
    for _ in 0..WAITERS {
        let (core, arriving_tx, results_tx, ran) = (core.clone(), arriving_tx.clone(), results_tx.clone(), ran.clone());
        thread::spawn(move || {
            arriving_tx.send(()).unwrap();
            let result = core.call(move |c| {
                ran.fetch_add(1, Ordering::SeqCst);
                c.stats().is_ok()
            });
            results_tx.send(result).unwrap();
        });
    }
    drop(results_tx);

    for _ in 0..WAITERS {
        let result = results_rx.recv_timeout(PATIENCE).expect("a queued caller was left waiting");
        assert_eq!(result, Err(CoreGone));
    }
    assert_eq!(ran.load(Ordering::SeqCst), 0, "a call ran on the poisoned core");
    let unwound = join_within(panicking, "the panicking caller");
    assert!(unwound.is_err(), "the panicking call's thread did not unwind: {unwound:?}");

    assert_eq!(core.call(|_| ()), Err(CoreGone));
    assert_eq!(core.clone().call(|c| c.stats().is_ok()), Err(CoreGone));
    drop(core);
    join_within(caretaker, "the caretaker").expect("the caretaker ends without panicking");
}

/// A panic in a call that had to wait for the core: its own caller must not
/// be left waiting forever, and later calls find the core gone. (A design
/// that ran waiting calls on the thread holding the core once lost exactly
/// this caller.)
#[test]
fn the_caller_of_a_queued_call_that_panics_is_not_left_waiting() {
    let (core, _caretaker) = start();
    let (holder, queued_tx) = hold_core(&core, 1, |_| ());

    let (result_tx, result_rx) = mpsc::channel();
    let victim = {
        let core = core.clone();
        thread::Builder::new().name("victim".into()).spawn(move || {
            queued_tx.send(()).unwrap();
            let result = core.call(|_| -> () { panic!("a deliberate panic in a queued call") });
            result_tx.send(result).unwrap();
        })
    }
    .unwrap();

    // The caller may report CoreGone or unwind itself; either is an answer.
    match result_rx.recv_timeout(PATIENCE) {
        Ok(result) => assert_eq!(result, Err(CoreGone)),
        Err(mpsc::RecvTimeoutError::Disconnected) => {}
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("the caller of the panicking call was left waiting"),
    }
    let _ = join_within(victim, "the caller of the panicking call");
    // Whichever thread ran the panicking call unwound; the holder's own
    // call may or may not have finished first.
    let _ = join_within(holder, "the holder");
    assert_eq!(core.call(|_| ()), Err(CoreGone));
}

/// Seeds the core saves, shared with the test (and with [`Watched`]).
#[derive(Clone, Default)]
struct SavedSeeds(Arc<Mutex<Vec<Vec<u8>>>>);

impl SavedSeeds {
    fn count(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

impl SeedStore for SavedSeeds {
    fn take(&mut self) -> Option<Vec<u8>> {
        None
    }
    fn save(&mut self, seed: &[u8]) -> Result<(), String> {
        self.0.lock().unwrap().push(seed.to_vec());
        Ok(())
    }
}

/// In-memory storage that records, when it is dropped (with the core), how
/// many seeds had been saved by then.
#[derive(Debug)]
struct Watched {
    inner: MemoryStorage,
    saves_at_drop: Arc<Mutex<Option<usize>>>,
    seeds: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Drop for Watched {
    fn drop(&mut self) {
        let saved = self.seeds.lock().unwrap().len();
        *self.saves_at_drop.lock().unwrap() = Some(saved);
    }
}

impl Storage for Watched {
    fn get(&mut self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.inner.get(table, key)
    }
    fn put(&mut self, table: &str, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        self.inner.put(table, key, value)
    }
    fn delete(&mut self, table: &str, key: &[u8]) -> Result<bool, StorageError> {
        self.inner.delete(table, key)
    }
    fn scan(&mut self, table: &str, after: Option<&[u8]>, limit: u32) -> Result<Vec<Entry>, StorageError> {
        self.inner.scan(table, after, limit)
    }
    fn stat(&mut self, table: &str) -> Result<TableStat, StorageError> {
        self.inner.stat(table)
    }
}

/// The caretaker outlives every handle but the last; when that one goes,
/// it checkpoints the core (which saves a fresh seed), then drops it (and
/// with it the storage), and its thread ends.
#[test]
fn dropping_the_last_handle_checkpoints_drops_the_core_and_ends_the_caretaker() {
    let clock = ScriptedClock::new();
    let seeds = SavedSeeds::default();
    let saves_at_drop = Arc::new(Mutex::new(None));
    let storage = Watched { inner: MemoryStorage::new(), saves_at_drop: saves_at_drop.clone(), seeds: seeds.0.clone() };
    // A seed file is configured (the core saves seeds only then); the path
    // is never opened, `SavedSeeds` stands in for it.
    let settings = Settings { seed_file: Some("/nonexistent/seed".into()), ..Settings::default() };
    let caps = Capabilities { storage: Box::new(storage), seed_file: Box::new(seeds.clone()), ..caps(&clock) };
    let core = Core::start(runtime(), caps, settings.core_config(), settings.limits()).expect("core starts");
    let (first, caretaker) = spawn(core).expect("caretaker starts");

    // The caretaker's first housekeeping saves a seed; with the clock
    // standing still, no other is due until the checkpoint.
    let deadline = Instant::now() + PATIENCE;
    while seeds.count() == 0 {
        assert!(Instant::now() < deadline, "the first housekeeping saved no seed");
        thread::sleep(Duration::from_millis(5));
    }
    let before = seeds.count();

    // Dropping one of two handles stops nothing.
    let second = first.clone();
    drop(first);
    assert_eq!(second.call(|c| c.seed(8).map(|s| s.len()).unwrap()), Ok(8));
    thread::sleep(Duration::from_millis(50));
    assert!(!caretaker.is_finished(), "the caretaker ended while a handle remained");
    assert_eq!(seeds.count(), before, "a checkpoint before the last handle went");
    assert_eq!(*saves_at_drop.lock().unwrap(), None, "the core was dropped while a handle remained");

    drop(second);
    join_within(caretaker, "the caretaker").expect("the caretaker ends without panicking");
    assert_eq!(seeds.count(), before + 1, "the checkpoint saved no seed");
    assert_eq!(
        *saves_at_drop.lock().unwrap(),
        Some(before + 1),
        "the core was not dropped by the time the caretaker ended, or before its checkpoint"
    );
}

/// Sessions left in every cache.
fn cached(core: &SharedCore) -> u64 {
    core.call(|c| c.stats().unwrap()).unwrap().caches.iter().map(|c| c.entries).sum()
}

/// `housekeep_now` has the caretaker sweep at once: after the clock jumps
/// past every session's expiry, the caretaker (which scheduled its next
/// housekeeping for the first expiry, an hour of real time away) removes
/// them all, in back-to-back batches, without further prompting.
#[test]
fn housekeep_now_sweeps_at_once_what_has_expired() {
    const SESSIONS: u64 = 3000; // several housekeeping batches
    let clock = ScriptedClock::new();
    let (core, caretaker) = spawn(common::core(&clock)).expect("caretaker starts");
    core.call(|c| {
        for i in 0..SESSIONS {
            c.update("smtpd", &format!("id-{i}"), &[7; 140]).unwrap();
        }
    })
    .unwrap();
    assert_eq!(cached(&core), SESSIONS);
    clock.advance_secs(Settings::default().caches["smtpd"].timeout.into());
    clock.advance_secs(1);
    thread::sleep(Duration::from_millis(300));
    assert_eq!(cached(&core), SESSIONS, "swept before being asked (the test cannot tell the request apart)");

    core.housekeep_now();
    let deadline = Instant::now() + PATIENCE;
    while cached(&core) > 0 {
        assert!(Instant::now() < deadline, "{} sessions still cached", cached(&core));
        thread::sleep(Duration::from_millis(5));
    }
    drop(core);
    join_within(caretaker, "the caretaker").unwrap();
}

/// Storage whose commits are detached: it wants one as soon as it holds a
/// write, and each commit's work waits until the test has made a call
/// through the shared core, which it could not if the caretaker ran the
/// commit while holding the core.
#[derive(Debug)]
struct Detached {
    inner: MemoryStorage,
    /// Writes since the last commit started.
    held: usize,
    /// The test's signal that its call went through; the commits' report
    /// of how they ended.
    signal: Arc<Mutex<mpsc::Receiver<()>>>,
    finished: Arc<Mutex<Vec<Result<(), StorageError>>>>,
}

impl Storage for Detached {
    fn get(&mut self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.inner.get(table, key)
    }
    fn put(&mut self, table: &str, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        self.held += 1;
        self.inner.put(table, key, value)
    }
    fn delete(&mut self, table: &str, key: &[u8]) -> Result<bool, StorageError> {
        self.inner.delete(table, key)
    }
    fn scan(&mut self, table: &str, after: Option<&[u8]>, limit: u32) -> Result<Vec<Entry>, StorageError> {
        self.inner.scan(table, after, limit)
    }
    fn stat(&mut self, table: &str) -> Result<TableStat, StorageError> {
        self.inner.stat(table)
    }
    fn wants_commit(&self) -> bool {
        self.held > 0
    }
    fn start_commit(&mut self, _durable: bool) -> Result<Option<Commit>, StorageError> {
        if self.held == 0 {
            return Ok(None);
        }
        self.held = 0;
        let signal = Arc::clone(&self.signal);
        Ok(Some(Commit::new(0, move || match signal.lock().unwrap().recv_timeout(PATIENCE) {
            Ok(()) => Ok(()),
            Err(_) => Err(StorageError::Unavailable("the test's call never went through".to_owned())),
        })))
    }
    fn finish_commit(&mut self, done: Committed) -> Result<(), StorageError> {
        self.finished.lock().unwrap().push(done.result.clone());
        done.result
    }
}

/// The caretaker commits storage without holding the core: while a
/// commit's work runs (here, waits), calls go through; its outcome then
/// goes back to storage.
#[test]
fn the_caretaker_runs_storage_commits_without_holding_the_core() {
    let clock = ScriptedClock::new();
    let (signal_tx, signal_rx) = mpsc::channel();
    let finished = Arc::new(Mutex::new(Vec::new()));
    let storage = Detached {
        inner: MemoryStorage::new(),
        held: 0,
        signal: Arc::new(Mutex::new(signal_rx)),
        finished: Arc::clone(&finished),
    };
    let caps = Capabilities { storage: Box::new(storage), ..caps(&clock) };
    let settings = Settings::default();
    let core = Core::start(runtime(), caps, settings.core_config(), settings.limits()).expect("core starts");
    let (core, caretaker) = spawn(core).expect("caretaker starts");

    // A write makes storage want a commit; the caretaker starts it within
    // its check interval and runs it, and the commit waits for our signal.
    core.call(|c| c.update("smtpd", "id", &[1; 100]).unwrap()).unwrap();
    thread::sleep(tlskeeper_engine::shared_core::COMMIT_CHECK_INTERVAL * 3);
    // Were the caretaker holding the core, this would wait for the commit,
    // which waits for this.
    let (done_tx, done_rx) = mpsc::channel();
    let caller = {
        let core = core.clone();
        thread::spawn(move || done_tx.send(core.call(|c| c.seed(8).map(|s| s.len()).unwrap())).unwrap())
    };
    let answered = done_rx.recv_timeout(PATIENCE);
    signal_tx.send(()).unwrap();
    assert_eq!(answered, Ok(Ok(8)), "a call waited for the storage commit");
    join_within(caller, "the caller").unwrap();

    let deadline = Instant::now() + PATIENCE;
    while finished.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "the commit's outcome never went back to storage");
        thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(finished.lock().unwrap()[0], Ok(()));
    drop(core);
    join_within(caretaker, "the caretaker").unwrap();
}
