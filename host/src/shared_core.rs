//! The shared core: one [`Core`] behind a lock, called by the server's
//! event loops, and a caretaker thread for its periodic work.
//!
//! A server thread that has decoded a request takes the lock, makes the one
//! export call, and lets go. Calls are therefore made one at a time, and the
//! order in which they take the lock is the total order a trace records.
//! The caretaker thread takes the same lock for the core's housekeeping, one
//! bounded batch at a time, and about once a second ([`FLUSH_INTERVAL`])
//! asks storage to make recent writes durable (session writes are not
//! fsynced one by one, so a crash loses at most that much of them). When the
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

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, MutexGuard};

use crate::engine::Core;

/// How often completed storage writes are made durable.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

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
        let mut guard = self.core.lock();
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
/// core's reference is dropped before the sender, so that when the caretaker
/// sees the channel close, its own reference is the last one.
struct Handles {
    core: Arc<Guarded>,
    /// Never sent on: its closing tells the caretaker to stop.
    _alive: mpsc::Sender<()>,
}

impl SharedCore {
    /// Run `f` on the core, waiting for the lock.
    ///
    /// # Errors
    ///
    /// [`CoreGone`] when an earlier call panicked.
    pub fn call<T>(&self, f: impl FnOnce(&mut Core) -> T) -> Result<T, CoreGone> {
        self.inner.core.with(f).map(|(value, _guard)| value)
    }
}

/// Share `core` and start its caretaker thread, which runs until every
/// handle is dropped, then checkpoints and drops the core.
///
/// # Errors
///
/// When the OS cannot create the thread.
pub fn spawn(core: Core) -> std::io::Result<(SharedCore, thread::JoinHandle<()>)> {
    let core = Arc::new(Guarded { core: Mutex::new(core), poisoned: AtomicBool::new(false) });
    let (alive, closed) = mpsc::channel::<()>();
    let caretaker = Arc::clone(&core);
    let thread = thread::Builder::new().name("tlskeeper-core".into()).spawn(move || care(&caretaker, &closed))?;
    Ok((SharedCore { inner: Arc::new(Handles { core, _alive: alive }) }, thread))
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
        let wait = next_housekeeping.min(next_flush).saturating_duration_since(Instant::now());
        match closed.recv_timeout(wait) {
            Ok(()) | Err(mpsc::RecvTimeoutError::Timeout) => {}
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
            let Ok(outcome) = fairly(core, Core::housekeeping) else { return };
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
            let Ok(outcome) = fairly(core, Core::flush_storage) else { return };
            if let Err(e) = outcome {
                tracing::warn!("cannot make stored sessions durable: {e}; retrying in {FLUSH_INTERVAL:?}");
            }
            next_flush = Instant::now() + FLUSH_INTERVAL;
        }
    }
}
