//! The actor: the one thread that owns the core.
//!
//! Socket threads never touch the wasmtime store. They send a job (a closure
//! over [`Core`]) down a channel and wait for its result; the actor runs jobs
//! one at a time, in arrival order, which is the total order of export calls
//! a trace records. Between jobs it runs the core's housekeeping when the
//! core asked for it, one bounded batch at a time, checking for queued jobs
//! between batches so that a long cleanup never holds requests back by more
//! than one batch.
//!
//! It also asks storage to make recent writes durable about once a second
//! ([`FLUSH_INTERVAL`]): session-cache writes are committed without an
//! fsync each, so a crash loses at most that much of them. When the last
//! handle goes, it checkpoints the core (which saves a fresh seed) before
//! dropping it.
//!
//! Closures rather than a request enum: each caller gets its own result type
//! with no second enum to keep in step with [`Core`]'s methods.
//!
//! # Security
//!
//! Jobs come only from this process's own code (service, CLI); the actor
//! adds no trust boundary of its own.
//!
//! # Limitations
//!
//! The queue is unbounded; connection limits in the server bound it in
//! practice (one job in flight per connection).

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::engine::Core;

type Job = Box<dyn FnOnce(&mut Core) + Send>;

/// How often completed storage writes are made durable.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// The actor has stopped (its thread exited or panicked).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the core's actor thread has stopped")]
pub struct ActorGone;

/// A cheap, cloneable handle for sending jobs to the actor.
#[derive(Clone)]
pub struct ActorHandle {
    jobs: mpsc::Sender<Job>,
}

impl ActorHandle {
    /// Run `f` on the core and wait for its result.
    ///
    /// # Errors
    ///
    /// [`ActorGone`] when the actor thread is no longer running.
    pub fn call<T: Send + 'static>(&self, f: impl FnOnce(&mut Core) -> T + Send + 'static) -> Result<T, ActorGone> {
        let (tx, rx) = mpsc::sync_channel(1);
        let job: Job = Box::new(move |core| {
            // The caller may have given up waiting; nothing to do then.
            let _ = tx.send(f(core));
        });
        self.jobs.send(job).map_err(|_| ActorGone)?;
        rx.recv().map_err(|_| ActorGone)
    }
}

/// Start the actor thread over `core`. It runs until every handle is
/// dropped, then drops the core.
///
/// # Errors
///
/// When the OS cannot create the thread.
pub fn spawn(core: Core) -> std::io::Result<(ActorHandle, thread::JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel::<Job>();
    let thread = thread::Builder::new().name("tlskeeper-core".into()).spawn(move || run(core, &rx))?;
    Ok((ActorHandle { jobs: tx }, thread))
}

fn run(mut core: Core, jobs: &mpsc::Receiver<Job>) {
    // Housekeeping runs once at start (it also instantiates the DRBG, so the
    // first seed request does not pay for it).
    let mut next_housekeeping = Instant::now();
    let mut next_flush = Instant::now() + FLUSH_INTERVAL;
    loop {
        let wait = next_housekeeping.min(next_flush).saturating_duration_since(Instant::now());
        match jobs.recv_timeout(wait) {
            Ok(job) => job(&mut core),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                // The last chance to leave a fresh seed for the next run;
                // the store flushes when the core drops.
                if let Err(e) = core.checkpoint() {
                    tracing::warn!("{e}");
                }
                return;
            }
        }
        if Instant::now() >= next_housekeeping {
            let delay = match core.housekeeping() {
                Ok(ms) => Duration::from_millis(ms),
                Err(e) => {
                    tracing::warn!("housekeeping failed: {e}; retrying in 1s");
                    Duration::from_secs(1)
                }
            };
            next_housekeeping = Instant::now() + delay;
        }
        if Instant::now() >= next_flush {
            if let Err(e) = core.flush_storage() {
                tracing::warn!("cannot make stored sessions durable: {e}; retrying in {FLUSH_INTERVAL:?}");
            }
            next_flush = Instant::now() + FLUSH_INTERVAL;
        }
    }
}
