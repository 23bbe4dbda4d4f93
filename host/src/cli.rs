//! The `tlskeeper` command line: `serve` runs the daemon, `client` talks to
//! one.
//!
//! Flags become validated settings here; everything else lives in library
//! modules, so `main` only maps errors to exit codes.
//!
//! # Security
//!
//! `client` prints seed bytes and ticket-key material only when asked with
//! `--show-secrets`; by default it prints lengths, names and expiry.
//!
//! # Limitations
//!
//! `serve` stops on SIGTERM, SIGINT or SIGHUP; configuration is read once at
//! start.

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{Parser, Subcommand};

use crate::client::Client;
use crate::config::Settings;
use crate::engine::{Capabilities, Core, Runtime};
use crate::protocol::keybuf;
use crate::protocol::tlsmgr::{Reply, Request};
use crate::service::Service;

/// A TLS session-state manager: shared session caches, RFC 5077 ticket keys
/// and a seeded DRBG, wire-compatible with Postfix's tlsmgr(8).
#[derive(Debug, Parser)]
#[command(name = "tlskeeper", version, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon on a UNIX socket.
    Serve(ServeArgs),
    /// Send one request to a running daemon and print the reply.
    Client(ClientArgs),
}

/// Flags of `serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// TOML settings file (every setting has a default).
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Socket path [default: /run/tlskeeper/tlsmgr, or the file's `socket`].
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Directory for the compiled-core cache.
    #[arg(long, value_name = "DIR", conflicts_with = "no_compile_cache")]
    pub compile_cache: Option<PathBuf>,
    /// Compile the core at every start instead of caching it.
    #[arg(long)]
    pub no_compile_cache: bool,
    /// Log filter, e.g. `info` or `tlskeeper=debug` (also RUST_LOG).
    #[arg(long, value_name = "FILTER", default_value = "info", env = "RUST_LOG")]
    pub log: String,
}

/// Flags of `client`.
#[derive(Debug, clap::Args)]
pub struct ClientArgs {
    /// Socket path.
    #[arg(long, value_name = "PATH", default_value = crate::config::DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Print seed bytes, sessions and ticket-key material (secret!) in hex.
    #[arg(long, global = true)]
    pub show_secrets: bool,
    /// The request.
    #[command(subcommand)]
    pub request: ClientRequest,
}

/// Requests `client` can send.
#[derive(Debug, Subcommand)]
pub enum ClientRequest {
    /// Random bytes (1..255).
    Seed {
        /// How many bytes.
        #[arg(default_value_t = 32)]
        size: u32,
    },
    /// Whether a cache is enabled, and its timeout.
    Policy {
        /// Cache name (smtpd, smtp, lmtp, ...).
        cache: String,
    },
    /// Find a session.
    Lookup {
        /// Cache name.
        cache: String,
        /// Cache id.
        id: String,
    },
    /// Store a session.
    Update {
        /// Cache name.
        cache: String,
        /// Cache id.
        id: String,
        /// Session bytes in hex.
        session_hex: String,
    },
    /// Remove a session.
    Delete {
        /// Cache name.
        cache: String,
        /// Cache id.
        id: String,
    },
    /// Get the current ticket key, or a key by its name.
    Tktkey {
        /// 16-byte key name in hex (32 hex digits); omit for the current key.
        name_hex: Option<String>,
    },
}

/// An error with the exit status it should produce.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    /// What went wrong and what to do about it.
    pub message: String,
    /// Process exit status.
    pub status: i32,
}

fn fail(status: i32, message: impl Into<String>) -> Failure {
    Failure { message: message.into(), status }
}

/// Run the parsed command line.
///
/// # Errors
///
/// A [`Failure`] with a message for the operator.
pub fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Client(args) => client(args),
    }
}

fn serve(args: ServeArgs) -> Result<(), Failure> {
    init_logging(&args.log);
    let mut settings = Settings::load(args.config.as_deref()).map_err(|e| fail(78, e.to_string()))?;
    if let Some(socket) = args.socket {
        settings.socket = socket;
    }
    if let Some(dir) = args.compile_cache {
        settings.compile_cache_dir = Some(dir);
    }
    if args.no_compile_cache {
        settings.compile_cache = false;
    }
    let mode = settings.socket_mode().map_err(|e| fail(78, e.to_string()))?;

    // Handlers before anything else: a signal that arrives while the core
    // loads or once the socket accepts must find them in place, or it kills
    // the daemon and leaves the socket file behind. The accept loop checks
    // the flag before its first accept.
    let shutdown = Arc::new(AtomicBool::new(false));
    watch_signals(&settings.socket, Arc::clone(&shutdown))
        .map_err(|e| fail(71, format!("cannot watch signals: {e}")))?;
    let started = std::time::Instant::now();
    let runtime = Runtime::new(settings.compile_cache_dir().as_deref()).map_err(|e| fail(70, e.to_string()))?;
    let caps = Capabilities {
        clock: Box::new(crate::caps::SystemClock),
        entropy: Box::new(crate::caps::OsEntropy),
        storage: Box::new(crate::storage::MemoryStorage::new()),
    };
    let core =
        Core::start(&runtime, caps, settings.core_config(), settings.limits()).map_err(|e| fail(78, e.to_string()))?;
    let (actor, actor_thread) = crate::actor::spawn(core).map_err(|e| fail(71, format!("cannot start: {e}")))?;
    let listener = bind(&settings.socket, mode).map_err(|e| fail(73, e))?;
    tracing::info!(
        "tlskeeper {} listening on {} (core {:?} in {} ms)",
        env!("CARGO_PKG_VERSION"),
        settings.socket.display(),
        runtime.origin(),
        started.elapsed().as_millis()
    );

    let service = Service::new(actor);
    let served = crate::server::serve(&listener, &service, &settings.server(), &shutdown);
    let _ = std::fs::remove_file(&settings.socket);
    drop(service);
    let _ = actor_thread.join();
    tracing::info!("tlskeeper stopped");
    served.map_err(|e| fail(74, format!("listener failed: {e}")))
}

/// Bind the socket at `path`, replacing a stale socket file but never a live
/// server or a non-socket file.
fn bind(path: &Path, mode: u32) -> Result<UnixListener, String> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}; create it or choose another --socket", dir.display()))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if UnixStream::connect(path).is_ok() {
                return Err(format!("{} is in use by a running server; stop it first", path.display()));
            }
            std::fs::remove_file(path).map_err(|e| format!("cannot remove stale socket {}: {e}", path.display()))?;
        }
        Ok(_) => return Err(format!("{} exists and is not a socket; refusing to replace it", path.display())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot inspect {}: {e}", path.display())),
    }
    let listener = UnixListener::bind(path).map_err(|e| format!("cannot listen on {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("cannot set the mode of {}: {e}", path.display()))?;
    Ok(listener)
}

/// On SIGTERM, SIGINT or SIGHUP: set `shutdown` and wake the accept loop with
/// a connection of our own.
fn watch_signals(socket: &Path, shutdown: Arc<AtomicBool>) -> io::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])?;
    let socket = socket.to_path_buf();
    std::thread::Builder::new().name("tlskeeper-signals".into()).spawn(move || {
        if let Some(signal) = signals.forever().next() {
            tracing::info!("signal {signal} received; shutting down");
            shutdown.store(true, Ordering::SeqCst);
            let _ = UnixStream::connect(&socket);
        }
    })?;
    Ok(())
}

fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|e| {
        eprintln!("tlskeeper: bad log filter {filter:?} ({e}); using \"info\"");
        tracing_subscriber::EnvFilter::new("info")
    });
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(io::stderr).init();
}

fn client(args: ClientArgs) -> Result<(), Failure> {
    let request = match args.request {
        ClientRequest::Seed { size } => Request::Seed { size },
        ClientRequest::Policy { cache } => Request::Policy { cache_type: cache },
        ClientRequest::Lookup { cache, id } => Request::Lookup { cache_type: cache, cache_id: id },
        ClientRequest::Update { cache, id, session_hex } => Request::Update {
            cache_type: cache,
            cache_id: id,
            session: hex::decode(&session_hex).map_err(|e| fail(64, format!("session_hex: {e}")))?.into(),
        },
        ClientRequest::Delete { cache, id } => Request::Delete { cache_type: cache, cache_id: id },
        ClientRequest::Tktkey { name_hex } => Request::TicketKey {
            key_name: match name_hex {
                Some(h) => hex::decode(&h).map_err(|e| fail(64, format!("name_hex: {e}")))?,
                None => Vec::new(),
            },
        },
    };
    let mut conn = Client::connect(&args.socket)
        .map_err(|e| fail(69, format!("cannot reach tlskeeper at {}: {e}", args.socket.display())))?;
    let reply = conn.request(&request).map_err(|e| fail(76, e.to_string()))?;
    println!("{}", describe(&reply, args.show_secrets));
    match reply.status() {
        crate::protocol::tlsmgr::Status::Ok => Ok(()),
        _ => Err(fail(1, format!("request answered with status {}", reply.status()))),
    }
}

/// One line per reply, secrets shown only on request.
fn describe(reply: &Reply, show_secrets: bool) -> String {
    let secret = |b: &[u8]| if show_secrets { hex::encode(b) } else { format!("<{} bytes>", b.len()) };
    match reply {
        Reply::Seed { status, seed } => format!("status={status} seed={}", secret(seed)),
        Reply::Policy { status, cachable, timeout } => {
            format!("status={status} cachable={} timeout={timeout}", u8::from(*cachable))
        }
        Reply::Lookup { status, session } => format!("status={status} session={}", secret(session)),
        Reply::Update { status } | Reply::Delete { status } | Reply::Bare { status } => format!("status={status}"),
        Reply::TicketKey { status, keybuf } => match keybuf::decode(keybuf) {
            Ok(key) => format!(
                "status={status} name={} expires={}{}",
                hex::encode(key.name),
                key.expires,
                if show_secrets {
                    format!(" cipher_key={} hmac_key={}", hex::encode(key.cipher_key), hex::encode(key.hmac_key))
                } else {
                    String::new()
                }
            ),
            Err(_) => format!("status={status} keybuf={}", hex::encode(keybuf)),
        },
    }
}
