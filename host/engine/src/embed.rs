//! [`Embedder`]: a core inside an embedding server's own process, built
//! from the capabilities the server chooses and started behind a
//! [`SharedCore`], with no daemon, socket or config file.
//!
//! The daemon puts the same pieces together from its settings; an embedder
//! names only what it cares about and gets the daemon's defaults for the
//! rest: the OS clock and CSPRNG, everything in memory, the default
//! resource limits. A state directory instead keeps keys and sessions in the
//! sealed redb store (see [`crate::state`]) across restarts, and the DRBG's
//! seed file beside it.
//!
//! A builder rather than the daemon's `Settings` struct: an embedder does
//! not want socket modes, log targets or Postfix's parameter names, and the
//! settings file's defaults (Postfix's three caches) are the wrong ones for
//! an HTTPS server.
//!
//! # Security
//!
//! The capabilities given here are trusted: a clock that lies makes keys
//! and sessions live longer or shorter, an entropy source that is weak
//! makes every key weak. The defaults are the OS's. With a state
//! directory, its KEK file is created 0600 on first start and must come
//! with the store afterwards, exactly as for the daemon.
//!
//! # Limitations
//!
//! Compiling the component takes a moment on the first start in a process
//! (cached on disk with [`Embedder::compile_cache`]); start one core and
//! share its handle rather than one per thread.

use std::path::PathBuf;
use std::thread::JoinHandle;

use crate::caps::{Clock, Entropy, OsEntropy, SystemClock};
use crate::shared_core::{self, SharedCore};
use crate::state::{self, StateError, StateOptions};
use crate::{CacheConfig, Core, CoreConfig, EngineError, Limits, Runtime};

/// Why an embedded core did not start.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// The engine could not be set up or the core refused its
    /// configuration (the message names the setting).
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The state directory could not be opened (the message names the file
    /// and what to do).
    #[error(transparent)]
    State(#[from] StateError),
    /// The OS would not start the caretaker thread.
    #[error("cannot start the core's caretaker thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// How to build an embedded core; [`Embedder::start`] starts it.
pub struct Embedder {
    config: CoreConfig,
    limits: Limits,
    clock: Box<dyn Clock>,
    entropy: Box<dyn Entropy>,
    state: StateOptions,
    compile_cache: Option<PathBuf>,
}

impl Embedder {
    /// A core with one session cache, `cache`, holding sessions for
    /// `timeout_secs` (the core raises 1..119 to 120; 0 turns it off). The
    /// same timeout drives the ticket keys, as Postfix's `smtpd` cache
    /// does: a key encrypts for half of it and decrypts for all of it.
    pub fn new(cache: &str, timeout_secs: u32) -> Embedder {
        Embedder {
            config: CoreConfig {
                caches: vec![cache_config(cache, timeout_secs)],
                ticket_cache: cache.to_owned(),
                reseed_period_secs: 3600,
                housekeeping_batch: 0,
                seed_save_period_secs: 0,
            },
            limits: Limits::default(),
            clock: Box::new(SystemClock),
            entropy: Box::new(OsEntropy),
            state: StateOptions::default(),
            compile_cache: None,
        }
    }

    /// Add another session cache (with the core's default bounds).
    #[must_use]
    pub fn cache(mut self, name: &str, timeout_secs: u32) -> Embedder {
        self.config.caches.push(cache_config(name, timeout_secs));
        self
    }

    /// Bound a cache already named: most entries and most bytes kept (0 =
    /// the core's default); the oldest are evicted beyond them.
    #[must_use]
    pub fn bounds(mut self, name: &str, max_entries: u64, max_bytes: u64) -> Embedder {
        for cache in self.config.caches.iter_mut().filter(|c| c.name == name) {
            cache.max_entries = max_entries;
            cache.max_bytes = max_bytes;
        }
        self
    }

    /// Use `clock` for time (the default is the system's wall clock).
    #[must_use]
    pub fn clock(mut self, clock: impl Clock + 'static) -> Embedder {
        self.clock = Box::new(clock);
        self
    }

    /// Use `entropy` for the DRBG's seeding (the default is the OS CSPRNG).
    #[must_use]
    pub fn entropy(mut self, entropy: impl Entropy + 'static) -> Embedder {
        self.entropy = Box::new(entropy);
        self
    }

    /// Keep keys and sessions in the sealed store in `dir` (created 0700 if
    /// missing), under the KEK file `dir/kek` (created on first start), and
    /// the DRBG's seed in `dir/seed`. Without this, everything is in memory
    /// and lost when the core is dropped.
    #[must_use]
    pub fn state_dir(self, dir: impl Into<PathBuf>) -> Embedder {
        self.state(StateOptions::in_dir(dir))
    }

    /// As [`Embedder::state_dir`], with every path chosen (for example the
    /// KEK outside the state directory).
    #[must_use]
    pub fn state(mut self, options: StateOptions) -> Embedder {
        self.config.seed_save_period_secs = if options.seed_file.is_some() { 3600 } else { 0 };
        self.state = options;
        self
    }

    /// Cache the compiled component in `dir`, so later starts skip the
    /// compilation.
    #[must_use]
    pub fn compile_cache(mut self, dir: impl Into<PathBuf>) -> Embedder {
        self.compile_cache = Some(dir.into());
        self
    }

    /// The core's resource limits (fuel per call, memory).
    #[must_use]
    pub fn limits(mut self, limits: Limits) -> Embedder {
        self.limits = limits;
        self
    }

    /// Load the component, open the state, start the core and its
    /// caretaker.
    ///
    /// # Errors
    ///
    /// [`EmbedError`], whose message says what to fix.
    pub fn start(self) -> Result<Embedded, EmbedError> {
        let runtime = Runtime::new(self.compile_cache.as_deref())?;
        let state = state::open(&self.state)?;
        let caps = state.into_capabilities(self.clock, self.entropy);
        let core = Core::start(&runtime, caps, self.config, self.limits)?;
        let (core, caretaker) = shared_core::spawn(core).map_err(EmbedError::Thread)?;
        Ok(Embedded { core, caretaker })
    }
}

/// A started core: its handle, and the caretaker that owns its periodic
/// work.
pub struct Embedded {
    core: SharedCore,
    caretaker: JoinHandle<()>,
}

impl Embedded {
    /// The handle to call the core through; clone it for each thread.
    pub fn core(&self) -> &SharedCore {
        &self.core
    }

    /// Let go of this handle and wait until every clone is gone too; the
    /// caretaker then checkpoints the core (saving a fresh seed) and drops
    /// it, which flushes the store. Dropping an [`Embedded`] without this
    /// does the same, but without waiting.
    pub fn close(self) {
        drop(self.core);
        // A caretaker that panicked has already marked the core gone and
        // has nothing left to report.
        let _ = self.caretaker.join();
    }
}

fn cache_config(name: &str, timeout_secs: u32) -> CacheConfig {
    CacheConfig {
        name: name.to_owned(),
        enabled: true,
        timeout_secs,
        max_entries: 0,
        max_bytes: 0,
        max_session_bytes: 0,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// Proves a state directory keeps the key ring and the sessions across
    /// a restart of the embedded core.
    #[test]
    fn a_state_directory_keeps_tickets_and_sessions_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let first = Embedder::new("https", 3600).state_dir(dir.path().join("state")).start().unwrap();
        let sealed = first.core().call(|c| c.seal_ticket(b"state")).unwrap().unwrap();
        first.core().call(|c| c.update("https", "ab", b"session")).unwrap().unwrap();
        first.close();
        assert!(dir.path().join("state/kek").is_file(), "the KEK is made on first start");

        let second = Embedder::new("https", 3600).state_dir(dir.path().join("state")).start().unwrap();
        let opened = second.core().call(|c| c.open_ticket(&sealed.ticket)).unwrap().unwrap();
        assert_eq!(opened.as_deref(), Some(&b"state"[..]));
        let found = second.core().call(|c| c.lookup("https", "ab")).unwrap().unwrap();
        assert_eq!(found.as_deref(), Some(&b"session"[..]));
        second.close();
    }

    /// Proves a configuration the core rejects stops the start with a
    /// message naming the setting.
    #[test]
    fn a_bad_cache_name_is_refused_at_start() {
        let Err(e) = Embedder::new("Not A Name", 3600).start() else { panic!("started") };
        assert!(matches!(e, EmbedError::Engine(EngineError::Start(_))), "{e}");
    }
}
