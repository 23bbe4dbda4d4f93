//! The shared core: one [`Core`] behind a lock, called by the server's
//! event loops, and a caretaker thread for its periodic work.
//!
//! A server thread that has decoded a request takes the lock, makes the one
//! export call, and lets go. Calls are therefore made one at a time, and the
//! order in which they take the lock is the total order a trace records.
//! The caretaker thread takes the same lock for the core's housekeeping, one
//! bounded batch at a time, and about once a second ([`FLUSH_INTERVAL`])
//! asks storage to make recent writes durable (session writes are not
//! fsynced one by one, so a crash loses at most that much of them). It
//! starts that commit under the lock but writes it out and waits for the
//! disk without it ([`crate::storage::Storage::start_commit`]); likewise
//! when storage holds enough writes to want an early commit (checked every
//! [`COMMIT_CHECK_INTERVAL`] and after each housekeeping batch). Committing
//! under the lock was measured to stall every request for the length of
//! the fsync: up to a second during a sweep of a million sessions. When the
//! last handle goes, it checkpoints the core (which saves a fresh seed) and
//! drops it, which flushes the store.
//!
//! An actor thread that owned the core and ran closures sent down a channel
//! was the first design, and was rejected once measured: every request cost
//! two extra thread wake-ups (to the actor and back), half of all CPU time
//! under load on a two-core machine, which held the daemon to a quarter of a
//! do-nothing server's rate. A lock costs nothing when it is free, and with
//! the server's few event-loop threads it mostly is.
//!
//! Fairness matters when housekeeping has a long backlog (a sweep of a
//! million expired sessions): after each batch and each flush the caretaker
//! hands the lock straight to a waiting server thread
//! ([`MutexGuard::unlock_fair`]) instead of taking it back at once, so a
//! request waits for at most one batch. Server threads let go normally: a
//! fair hand-over on every call was measured to halve throughput, each one
//! waiting for a sleeping thread to be scheduled.
//!
//! # Security
//!
//! Calls come only from this process's own code (server, CLI); this module
//! adds no trust boundary of its own.
//!
//! # Limitations
//!
//! A panic in a call (a bug in the host, since a fault in the guest is a
//! trap, not a panic) unwinds the calling thread and marks the core gone:
//! the store may have been left halfway through a call, so every later call
//! fails with [`CoreGone`] rather than trust it, and the caretaker stops.
//! Storage still flushes when the core is dropped.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, MutexGuard};

use crate::Core;

/// How often completed storage writes are made durable.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// How often the caretaker asks storage whether its held writes have grown
/// enough to commit before the next flush. Often enough that a burst of
/// updates is committed here, off the request path, long before storage
/// would have to commit inline.
pub const COMMIT_CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// The core can no longer be called: a call panicked while holding it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the core is no longer available (an earlier call panicked)")]
pub struct CoreGone;

/// The core and whether a panic has left it unusable.
struct Guarded {
    core: Mutex<Core>,
    poisoned: AtomicBool,
}

impl Guarded {
    /// Run `f` on the locked core, marking the core gone if `f` panics;
    /// returns the guard too, so the caller chooses how to let go.
    fn with<T>(&self, f: impl FnOnce(&mut Core) -> T) -> Result<(T, MutexGuard<'_, Core>), CoreGone> {
        self.run(self.core.lock(), f)
    }

    /// [`Guarded::with`] on a lock already taken.
    fn run<'a, T>(
        &'a self,
        mut guard: MutexGuard<'a, Core>,
        f: impl FnOnce(&mut Core) -> T,
    ) -> Result<(T, MutexGuard<'a, Core>), CoreGone> {
        /// Sets the flag when dropped during unwinding, while the lock is
        /// still held: no other call can run before it is set.
        struct PoisonOnPanic<'a>(&'a AtomicBool);
        impl Drop for PoisonOnPanic<'_> {
            fn drop(&mut self) {
                if thread::panicking() {
                    self.0.store(true, Ordering::Release);
                }
            }
        }
        if self.poisoned.load(Ordering::Acquire) {
            return Err(CoreGone);
        }
        let watch = PoisonOnPanic(&self.poisoned);
        let value = f(&mut guard);
        drop(watch);
        Ok((value, guard))
    }
}

/// The handle: cheap to clone, one per server thread.
#[derive(Clone)]
pub struct SharedCore {
    inner: Arc<Handles>,
}

/// What every clone of a [`SharedCore`] shares. Field order matters: the
/// cores' references are dropped before the senders, so that when a
/// caretaker sees its channel close, its own reference is the last one.
struct Handles {
    /// One, or a pool of cores over one shared store.
    cores: Vec<Arc<Guarded>>,
    /// Wake each core's caretaker for housekeeping now; their closing tells
    /// the caretakers to stop.
    alive: Vec<mpsc::Sender<()>>,
    /// Where the next call starts looking for a free core.
    next: AtomicUsize,
}

impl SharedCore {
    /// Run `f` on the core (in a pool: the first free one, else wait for
    /// one), waiting for the lock.
    ///
    /// # Errors
    ///
    /// [`CoreGone`] when an earlier call panicked.
    pub fn call<T>(&self, f: impl FnOnce(&mut Core) -> T) -> Result<T, CoreGone> {
        let cores = &self.inner.cores;
        if let [only] = cores.as_slice() {
            return only.with(f).map(|(value, _guard)| value);
        }
        // Round the pool from a moving start, so that waits spread over
        // the cores rather than pile onto the first.
        let start = self.inner.next.fetch_add(1, Ordering::Relaxed) % cores.len();
        let order = || (0..cores.len()).map(|i| &cores[(start + i) % cores.len()]);
        let free = order().find_map(|core| core.core.try_lock().map(|guard| (core, guard)));
        let (core, guard) = match free {
            Some(free) => free,
            None => (&cores[start], cores[start].core.lock()),
        };
        core.run(guard, f).map(|(value, _guard)| value)
    }

    /// Have the caretaker run housekeeping now rather than when the core
    /// last asked (its next expiry): after the clock has jumped, or to
    /// sweep on demand. Batches then follow back to back while the core
    /// reports more to do, each handing the lock on fairly, as always.
    pub fn housekeep_now(&self) {
        for alive in &self.inner.alive {
            // Fails only once the caretaker has stopped, with nothing to wake.
            let _ = alive.send(());
        }
    }
}

/// Share `core` and start its caretaker thread, which runs until every
/// handle is dropped, then checkpoints and drops the core.
///
/// # Errors
///
/// When the OS cannot create the thread.
pub fn spawn(core: Core) -> std::io::Result<(SharedCore, thread::JoinHandle<()>)> {
    let (shared, mut caretakers) = spawn_pool(vec![core])?;
    // One core, one caretaker.
    let caretaker = caretakers.pop().ok_or_else(|| std::io::Error::other("no caretaker started"))?;
    Ok((shared, caretaker))
}

/// Share a pool of cores whose storage is one store many cores may use at
/// once (a fleet's Redis: each core is one more node of the fleet), each
/// with its caretaker. A call takes whichever core is free, so that one
/// waiting on the store's round trips does not hold up the others.
///
/// # Errors
///
/// When the OS cannot create a thread, or `cores` is empty.
pub fn spawn_pool(cores: Vec<Core>) -> std::io::Result<(SharedCore, Vec<thread::JoinHandle<()>>)> {
    if cores.is_empty() {
        return Err(std::io::Error::other("a pool needs at least one core"));
    }
    let mut guarded = Vec::with_capacity(cores.len());
    let mut alive = Vec::with_capacity(cores.len());
    let mut threads = Vec::with_capacity(cores.len());
    for core in cores {
        let core = Arc::new(Guarded { core: Mutex::new(core), poisoned: AtomicBool::new(false) });
        let (sender, closed) = mpsc::channel::<()>();
        let caretaker = Arc::clone(&core);
        let thread = thread::Builder::new().name("tlskeeper-core".into()).spawn(move || care(&caretaker, &closed))?;
        guarded.push(core);
        alive.push(sender);
        threads.push(thread);
    }
    Ok((SharedCore { inner: Arc::new(Handles { cores: guarded, alive, next: AtomicUsize::new(0) }) }, threads))
}

/// Run `f` as the caretaker, then hand the lock to a waiting server thread.
fn fairly<T>(core: &Guarded, f: impl FnOnce(&mut Core) -> T) -> Result<T, CoreGone> {
    let (value, guard) = core.with(f)?;
    MutexGuard::unlock_fair(guard);
    Ok(value)
}

/// The caretaker's loop: housekeeping when the core asks for it, flushes
/// every [`FLUSH_INTERVAL`], a checkpoint at the end.
fn care(core: &Guarded, closed: &mpsc::Receiver<()>) {
    // Housekeeping runs once at start (it also instantiates the DRBG, so the
    // first seed request does not pay for it).
    let mut next_housekeeping = Instant::now();
    let mut next_flush = Instant::now() + FLUSH_INTERVAL;
    loop {
        let next_check = Instant::now() + COMMIT_CHECK_INTERVAL;
        let wait = next_housekeeping.min(next_flush).min(next_check).saturating_duration_since(Instant::now());
        match closed.recv_timeout(wait) {
            Ok(()) => next_housekeeping = Instant::now(),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                // The last chance to leave a fresh seed for the next run; the
                // store flushes when the core drops, with our reference.
                if let Ok(Err(e)) = fairly(core, Core::checkpoint) {
                    tracing::warn!("{e}");
                }
                return;
            }
        }
        if Instant::now() >= next_housekeeping {
            let batch = Instant::now();
            let Ok(outcome) = fairly(core, Core::housekeeping) else { return };
            let delay = match outcome {
                // A backlog: the next batch after as long again as this one
                // took, so that a long sweep leaves requests at least half
                // of the core. Back to back, a sweep of a million sessions
                // from the persistent store held the core 85% of the time
                // (each batch waits on the disk), and the request rate fell
                // to a seventh.
                Ok(0) => batch.elapsed(),
                Ok(ms) => Duration::from_millis(ms),
                Err(e) => {
                    tracing::warn!("housekeeping failed: {e}; retrying in 1s");
                    Duration::from_secs(1)
                }
            };
            next_housekeeping = Instant::now() + delay;
        }
        let durable = Instant::now() >= next_flush;
        let wanted = durable || core.with(|c| c.storage_wants_commit()).is_ok_and(|(wanted, _)| wanted);
        if wanted && commit_storage(core, durable).is_err() {
            return;
        }
        if durable {
            next_flush = Instant::now() + FLUSH_INTERVAL;
        }
    }
}

/// Commit storage's held writes (durably, for a flush): started under the
/// lock, written out and fsynced without it, so requests go on meanwhile,
/// and finished under the lock. Failures are logged; the writes stay held
/// for the next attempt.
fn commit_storage(core: &Guarded, durable: bool) -> Result<(), CoreGone> {
    let outcome = match fairly(core, |c| c.start_storage_commit(durable))? {
        Ok(Some(commit)) => {
            let done = commit.run();
            fairly(core, |c| c.finish_storage_commit(done))?
        }
        Ok(None) => Ok(()),
        Err(e) => Err(e),
    };
    match outcome {
        Err(e) if durable => {
            tracing::warn!("cannot make stored sessions durable: {e}; retrying in {FLUSH_INTERVAL:?}");
        }
        Err(e) => tracing::warn!("cannot commit stored sessions: {e}; they stay in memory until a later commit"),
        Ok(()) => {}
    }
    Ok(())
}
