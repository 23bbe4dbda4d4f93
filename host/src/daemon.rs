//! The running daemon: a started core, its caretaker, the service and the
//! server loop, from the first accept to the last flush.
//!
//! Both ways of starting tlskeeper end here: `tlskeeper serve` (TOML
//! settings, a socket of its own) and the Postfix modes (main.cf, a socket
//! from master(8) or `private/tlsmgr`). They differ only in how they get
//! their settings, listeners and capabilities, which is their business;
//! what happens once those exist is this module's.
//!
//! # Security
//!
//! By the time [`run`] is called the process holds only what it needs:
//! the Postfix modes have already chrooted and dropped privileges.
//!
//! # Limitations
//!
//! Settings are fixed for the life of the process; changing them means a
//! restart (which keeps persisted keys and sessions).

use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use crate::config::Settings;
use crate::service::Service;
use crate::shutdown::Shutdown;
use tlskeeper_engine::caps::{OsEntropy, SystemClock};
use tlskeeper_engine::state::StateOptions;
use tlskeeper_engine::{Capabilities, Core, Runtime, Tape};

/// Everything a daemon needs, already opened.
pub struct Daemon {
    /// The compiled core.
    pub runtime: Runtime,
    /// The capabilities granted to it.
    pub caps: Capabilities,
    /// Those of the pool's other cores (`cores` above 1, a shared store
    /// only): see [`more_cores`].
    pub more_caps: Vec<Capabilities>,
    /// Cache, core and connection settings.
    pub settings: Settings,
    /// Where clients connect.
    pub listeners: Vec<UnixListener>,
    /// A socket file to remove at exit (one we bound ourselves).
    pub socket_file: Option<PathBuf>,
    /// How the socket is named in the start-up log line.
    pub socket_label: String,
    /// Caches whose operations are logged one by one.
    pub logged_caches: Vec<String>,
    /// Fired to stop.
    pub shutdown: Arc<Shutdown>,
    /// When start-up began, for the start-up log line.
    pub started: Instant,
    /// Where boundary events go: nowhere, or a trace (`serve --record`).
    pub tape: Tape,
}

impl Daemon {
    /// A daemon on a socket of its own at `settings.socket`, bound here
    /// with `mode` and removed at exit: how `tlskeeper serve` runs.
    ///
    /// # Errors
    ///
    /// A [`Failure`] (status 73) when the socket cannot be bound.
    pub fn on_own_socket(
        runtime: Runtime,
        caps: Capabilities,
        settings: Settings,
        mode: u32,
        shutdown: Arc<Shutdown>,
        started: Instant,
        tape: Tape,
    ) -> Result<Daemon, Failure> {
        let listener = crate::server::bind(&settings.socket, mode).map_err(|e| fail(73, e.to_string()))?;
        Ok(Daemon {
            runtime,
            caps,
            more_caps: Vec::new(),
            socket_label: settings.socket.display().to_string(),
            socket_file: Some(settings.socket.clone()),
            settings,
            listeners: vec![listener],
            logged_caches: Vec::new(),
            shutdown,
            started,
            tape,
        })
    }
}

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The core did not start (bad settings, broken component).
    #[error("{0}")]
    Core(String),
    /// A thread could not be started.
    #[error("cannot start the core's thread: {0}")]
    Thread(std::io::Error),
    /// Waiting for connections failed.
    #[error("listener failed: {0}")]
    Listener(std::io::Error),
}

impl From<RunError> for Failure {
    fn from(e: RunError) -> Failure {
        let status = match e {
            RunError::Core(_) => 78,     // EX_CONFIG: the settings the core refused
            RunError::Thread(_) => 71,   // EX_OSERR
            RunError::Listener(_) => 74, // EX_IOERR
        };
        fail(status, e.to_string())
    }
}

/// A failure that ends the process: what went wrong and what to do, with
/// the exit status (a sysexits(3) value) it should produce. Both the
/// `tlskeeper` subcommands and the Postfix modes report through it.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    /// What went wrong and what to do about it.
    pub message: String,
    /// Process exit status.
    pub status: i32,
}

/// A [`Failure`] with `status` and `message`.
pub fn fail(status: i32, message: impl Into<String>) -> Failure {
    Failure { message: message.into(), status }
}

/// Capabilities for the `count` other cores of a pool: each its own
/// connection to the shared store `options` names, the system clock and
/// the OS's entropy, and no seed file (the first core keeps it, and the
/// others' generators are seeded from the OS anyway).
///
/// # Errors
///
/// A [`Failure`] when the store cannot be opened again.
pub fn more_cores(options: &StateOptions, count: usize) -> Result<Vec<Capabilities>, Failure> {
    let options = StateOptions { seed_file: None, ..options.clone() };
    (0..count)
        .map(|_| {
            let state = tlskeeper_engine::state::open(&options).map_err(|e| fail(e.status(), e.to_string()))?;
            Ok(state.into_capabilities(Box::new(SystemClock), Box::new(OsEntropy)))
        })
        .collect()
}

/// Start the core and serve until shutdown; then close every connection,
/// stop the core (which flushes its storage) and return.
///
/// # Errors
///
/// [`RunError`] naming the step that failed.
pub fn run(daemon: Daemon) -> Result<(), RunError> {
    let Daemon {
        runtime,
        caps,
        more_caps,
        settings,
        listeners,
        socket_file,
        socket_label,
        logged_caches,
        shutdown,
        started,
        tape,
    } = daemon;
    let pool = more_caps.len() + 1;
    // Only the first core records: a trace is one core's calls, in order.
    let tapes = std::iter::once(tape).chain(std::iter::repeat_with(|| Tape::Off));
    let mut cores = Vec::with_capacity(pool);
    for (i, (caps, tape)) in std::iter::once(caps).chain(more_caps).zip(tapes).enumerate() {
        let mut config = settings.core_config();
        if i > 0 {
            // The first core keeps the seed file; the others have none.
            config.seed_save_period_secs = 0;
        }
        let mut core = Core::start_with_tape(&runtime, caps, config, settings.limits(), tape)
            .map_err(|e| RunError::Core(e.to_string()))?;
        if let Some(fleet) = settings.fleet() {
            core.join_fleet(fleet).map_err(|e| RunError::Core(format!("ticket_key_margin: {e}")))?;
        }
        cores.push(core);
    }
    let (core, caretakers) = tlskeeper_engine::shared_core::spawn_pool(cores).map_err(RunError::Thread)?;
    tracing::info!(
        "tlskeeper {} serving {}{} (core {}, ready in {} ms)",
        env!("CARGO_PKG_VERSION"),
        socket_label,
        if pool > 1 { format!(" with {pool} cores") } else { String::new() },
        match runtime.origin() {
            tlskeeper_engine::Origin::Cached => "precompiled",
            tlskeeper_engine::Origin::Compiled => "compiled now",
        },
        started.elapsed().as_millis()
    );

    let service = Service::new(core).with_cache_logging(logged_caches);
    let served = crate::server::serve(&listeners, &service, &settings.server(), &shutdown);
    if let Some(path) = socket_file {
        let _ = std::fs::remove_file(path);
    }
    // The caretaker checkpoints and drops the core once the last handle is
    // gone: ours, and those of the connection threads the server has just
    // shut down.
    drop(service);
    for caretaker in caretakers {
        let _ = caretaker.join();
    }
    tracing::info!("tlskeeper stopped");
    served.map_err(RunError::Listener)
}
