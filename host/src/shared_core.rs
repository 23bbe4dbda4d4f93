//! The shared core: one [`Core`], called by the connection threads in turn,
//! and a caretaker thread for its periodic work.
//!
//! A connection thread that has decoded a request calls [`SharedCore::call`]
//! with a closure over the core. If the core is free, the thread takes it
//! and runs the closure itself. If another thread holds it, the closure is
//! queued and the caller sleeps; the holder runs every queued closure before
//! letting go (it "combines" them), and wakes each caller as its result is
//! ready. Calls are therefore made one at a time, and the order they run in
//! is the total order a trace records.
//!
//! The caretaker thread calls the core the same way for housekeeping, one
//! bounded batch at a time, and about once a second ([`FLUSH_INTERVAL`])
//! asks storage to make recent writes durable (session writes are not
//! fsynced one by one, so a crash loses at most that much of them). When the
//! last handle goes, it checkpoints the core (which saves a fresh seed) and
//! drops it, which flushes the store.
//!
//! Two designs were measured and rejected:
//! - an actor thread that owned the core and ran closures sent down a
//!   channel: every request cost two extra thread wake-ups (to the actor and
//!   back), half of all CPU time under load on a two-core machine, which held
//!   the daemon to a quarter of a do-nothing server's rate;
//! - a plain lock: free when uncontended, but with 16 busy connections the
//!   threads that happened to be running kept winning it, and p99 latency
//!   was 60 times the median (3 ms). Handing the lock over fairly at every
//!   release fixed that and halved throughput, each hand-over waiting for a
//!   sleeping thread to be scheduled.
//!
//! Combining keeps the lock's free fast path and serves queued calls in
//! arrival order, by a thread that is already running. A holder runs only
//! the calls queued when it looks (at most one per connection), then lets
//! go and wakes the next queued caller to take over, so that no caller's own
//! reply waits behind an endless stream of other people's calls.
//!
//! # Security
//!
//! Calls come only from this process's own code (service, CLI); this module
//! adds no trust boundary of its own.
//!
//! # Limitations
//!
//! A panic in a call (a bug in the host, since a fault in the guest is a
//! trap, not a panic) poisons the core: the store may have been left halfway
//! through a call, so that call's thread unwinds, every queued and later call
//! fails with [`CoreGone`], and the caretaker stops.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, TryLockError, mpsc};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use crate::engine::Core;

/// How often completed storage writes are made durable.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// The core can no longer be called: a call panicked while holding it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the core is no longer available (an earlier call panicked)")]
pub struct CoreGone;

type Job = Box<dyn FnOnce(&mut Core) + Send>;

/// A call waiting for the core, and the thread to wake when it has run (or
/// has been dropped unrun, when the core is poisoned).
struct Queued {
    job: Job,
    caller: Thread,
}

/// The core and the calls waiting for it.
struct Guarded {
    /// Poisoned by a call that panicked.
    core: Mutex<Core>,
    queue: Mutex<VecDeque<Queued>>,
}

impl Guarded {
    /// Take the queue lock. Its critical sections are pushes and swaps,
    /// which cannot panic halfway, so a poisoned queue is still whole.
    fn queue(&self) -> MutexGuard<'_, VecDeque<Queued>> {
        self.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Run `f`, on this thread if the core is free, otherwise by whichever
    /// thread holds it.
    fn call<T: Send + 'static>(&self, f: impl FnOnce(&mut Core) -> T + Send + 'static) -> Result<T, CoreGone> {
        match self.core.try_lock() {
            Ok(mut core) => {
                let unwinding = UnwindGuard { guarded: self, batch: VecDeque::new() };
                let value = f(&mut core);
                drop(unwinding);
                self.combine(core);
                return Ok(value);
            }
            Err(TryLockError::Poisoned(_)) => return Err(CoreGone),
            Err(TryLockError::WouldBlock) => {}
        }
        let (tx, rx) = mpsc::sync_channel(1);
        let job: Job = Box::new(move |core| {
            let _ = tx.send(f(core));
        });
        self.queue().push_back(Queued { job, caller: thread::current() });
        loop {
            // The holder may have let go between our try_lock and the push,
            // without seeing our call: then it is ours to run.
            match self.core.try_lock() {
                Ok(core) => self.combine(core),
                Err(TryLockError::Poisoned(_)) => {
                    // Our call was dropped unrun, or is about to be; either
                    // way it will not run now.
                    return rx.try_recv().map_err(|_| CoreGone);
                }
                Err(TryLockError::WouldBlock) => {}
            }
            match rx.try_recv() {
                Ok(value) => return Ok(value),
                // Ran, but the job was dropped before sending: poisoned.
                Err(mpsc::TryRecvError::Disconnected) => return Err(CoreGone),
                // Wakes are tokens: one given before we park is not lost,
                // and a spurious one just goes round again.
                Err(mpsc::TryRecvError::Empty) => thread::park(),
            }
        }
    }

    /// With the core held: run the calls queued now, let go, and hand over
    /// to the next queued caller if more arrived meanwhile.
    fn combine(&self, mut core: MutexGuard<'_, Core>) {
        let batch = std::mem::take(&mut *self.queue());
        let mut unwinding = UnwindGuard { guarded: self, batch };
        while let Some(Queued { job, caller }) = unwinding.batch.pop_front() {
            job(&mut core);
            caller.unpark();
        }
        drop(unwinding);
        drop(core);
        // Calls queued while we ran: wake the first so that it takes the
        // core (or finds that someone else has).
        if let Some(next) = self.queue().front() {
            next.caller.unpark();
        }
    }
}

/// Drops every waiting call unrun, and wakes its caller, when a call panics
/// while holding the core: each woken caller finds its call gone and reports
/// [`CoreGone`], as does every later one (the panic poisons the core's
/// mutex as it unwinds through the guard).
struct UnwindGuard<'a> {
    guarded: &'a Guarded,
    batch: VecDeque<Queued>,
}

impl Drop for UnwindGuard<'_> {
    fn drop(&mut self) {
        if !thread::panicking() {
            return;
        }
        let waiting = std::mem::take(&mut *self.guarded.queue());
        for Queued { job, caller } in self.batch.drain(..).chain(waiting) {
            drop(job);
            caller.unpark();
        }
    }
}

/// The handle: cheap to clone, one per connection thread.
#[derive(Clone)]
pub struct SharedCore {
    inner: Arc<Handles>,
}

/// What every clone of a [`SharedCore`] shares. Field order matters: the
/// core's reference is dropped before the sender, so that when the caretaker
/// sees the channel close, its own reference is the last one.
struct Handles {
    core: Arc<Guarded>,
    /// Never sent on: its closing tells the caretaker to stop.
    _alive: mpsc::Sender<()>,
}

impl SharedCore {
    /// Run `f` on the core and return its result, waiting for the core if
    /// another call holds it.
    ///
    /// # Errors
    ///
    /// [`CoreGone`] when an earlier call panicked.
    pub fn call<T: Send + 'static>(&self, f: impl FnOnce(&mut Core) -> T + Send + 'static) -> Result<T, CoreGone> {
        self.inner.core.call(f)
    }
}

/// Share `core` and start its caretaker thread, which runs until every
/// handle is dropped, then checkpoints and drops the core.
///
/// # Errors
///
/// When the OS cannot create the thread.
pub fn spawn(core: Core) -> std::io::Result<(SharedCore, thread::JoinHandle<()>)> {
    let core = Arc::new(Guarded { core: Mutex::new(core), queue: Mutex::default() });
    let (alive, closed) = mpsc::channel::<()>();
    let caretaker = Arc::clone(&core);
    let thread = thread::Builder::new().name("tlskeeper-core".into()).spawn(move || care(&caretaker, &closed))?;
    Ok((SharedCore { inner: Arc::new(Handles { core, _alive: alive }) }, thread))
}

/// The caretaker's loop: housekeeping when the core asks for it, flushes
/// every [`FLUSH_INTERVAL`], a checkpoint at the end. Each is one call, so
/// requests queued behind a housekeeping batch run as soon as it ends.
fn care(core: &Guarded, closed: &mpsc::Receiver<()>) {
    // Housekeeping runs once at start (it also instantiates the DRBG, so the
    // first seed request does not pay for it).
    let mut next_housekeeping = Instant::now();
    let mut next_flush = Instant::now() + FLUSH_INTERVAL;
    loop {
        let wait = next_housekeeping.min(next_flush).saturating_duration_since(Instant::now());
        match closed.recv_timeout(wait) {
            Ok(()) | Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                // The last chance to leave a fresh seed for the next run; the
                // store flushes when the core drops, with our reference.
                if let Ok(Err(e)) = core.call(Core::checkpoint) {
                    tracing::warn!("{e}");
                }
                return;
            }
        }
        if Instant::now() >= next_housekeeping {
            let Ok(outcome) = core.call(Core::housekeeping) else { return };
            let delay = match outcome {
                Ok(ms) => Duration::from_millis(ms),
                Err(e) => {
                    tracing::warn!("housekeeping failed: {e}; retrying in 1s");
                    Duration::from_secs(1)
                }
            };
            next_housekeeping = Instant::now() + delay;
        }
        if Instant::now() >= next_flush {
            let Ok(outcome) = core.call(Core::flush_storage) else { return };
            if let Err(e) = outcome {
                tracing::warn!("cannot make stored sessions durable: {e}; retrying in {FLUSH_INTERVAL:?}");
            }
            next_flush = Instant::now() + FLUSH_INTERVAL;
        }
    }
}
