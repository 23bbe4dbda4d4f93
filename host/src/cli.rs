//! The `tlskeeper` command line: `serve` runs the daemon, `client` talks to
//! one, `replay` checks a core against a recorded trace.
//!
//! Flags become validated settings here; everything else lives in library
//! modules, so `main` only maps errors to exit codes.
//!
//! # Security
//!
//! `client` prints seed bytes and ticket-key material only when asked with
//! `--show-secrets`; by default it prints lengths, names and expiry.
//! `serve --record` writes every secret the core handles to its trace
//! (mode 0600); `replay` prints at most short prefixes of them.
//!
//! # Limitations
//!
//! `serve` stops on SIGTERM, SIGINT or SIGHUP; configuration is read once at
//! start.

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use crate::config::Settings;
pub use crate::daemon::Failure;
use crate::daemon::{Daemon, fail};
use crate::keybuf;
use crate::shutdown::Shutdown;
use tlskeeper_engine::{Runtime, Tape};
use tlskeeper_protocol::client::Client;
use tlskeeper_protocol::tlsmgr::{Reply, Request};

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
    /// Serve Postfix standalone on `$queue_directory/private/tlsmgr`,
    /// configured from main.cf (for systemd or another supervisor; under
    /// master(8), name the binary in master.cf instead).
    Postfix(crate::postfix::Standalone),
    /// Send one request to a running daemon and print the reply.
    Client(ClientArgs),
    /// Replay a trace recorded by `serve --record` against a fresh core,
    /// and report whether it behaves identically.
    Replay(ReplayArgs),
    /// Load a tlsmgr-compatible socket (tlskeeper, Postfix's tlsmgr, ...)
    /// and report requests per second and latency.
    Bench(BenchArgs),
    /// Key-encryption keys: `kek new FILE` makes one (mode 0600), for a
    /// fleet whose nodes must all seal with the same key.
    #[command(subcommand)]
    Kek(KekCommand),
}

/// What `kek` does.
#[derive(Debug, Subcommand)]
pub enum KekCommand {
    /// Make a new key in FILE (which must not exist) and print its
    /// fingerprint; copy the file to every node of the fleet.
    New {
        /// Where to write it.
        file: PathBuf,
    },
}

/// Flags of `bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// The server's socket.
    #[arg(long, value_name = "PATH", default_value = crate::config::DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Simultaneous connections, one request in flight on each.
    #[arg(long, short = 'c', default_value_t = 1)]
    pub connections: usize,
    /// Run for this many seconds [default: 10, unless --requests is given].
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,
    /// Stop after this many requests in all.
    #[arg(long, value_name = "N")]
    pub requests: Option<u64>,
    /// The workload.
    #[arg(long, value_enum, default_value = "smtpd")]
    pub mix: crate::bench::Mix,
    /// The session cache that lookups and updates use.
    #[arg(long, default_value = "smtpd")]
    pub cache: String,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Flags of `replay`.
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// The trace file.
    pub trace: PathBuf,
    /// Replay against this build of the core (a `.wasm` component) instead of the embedded one: the differential test of a core change.
    #[arg(long, value_name = "PATH")]
    pub component: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
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
    /// Keep keys and sessions in a store in this directory [default: the file's `state_dir`, else memory only].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Key-encryption key that seals the state directory, created on first start [default: the file's `kek_file`, else <state-dir>/kek].
    #[arg(long, value_name = "FILE")]
    pub kek_file: Option<PathBuf>,
    /// Keep the tables in this Redis server, shared by a fleet: redis://HOST:PORT/DB, rediss://HOST:PORT/DB or redis+unix:///PATH?db=DB, no password in it [default: the file's `store`, else the state directory].
    #[arg(long, value_name = "URL")]
    pub store: Option<String>,
    /// The store is a Redis Cluster: --store lists one or more of its nodes, comma-separated (redis://HOST:PORT,redis://HOST:PORT) [default: the file's `store_cluster`].
    #[arg(long)]
    pub store_cluster: bool,
    /// Cores serving requests at once, each one more node of the fleet with its own connection to the store (more than 1 needs a store) [default: the file's `cores`, else 4 with a store, 1 without].
    #[arg(long, value_name = "N")]
    pub cores: Option<u32>,
    /// File holding the Redis ACL user's password (mode 0600) [default: the file's `store_password_file`].
    #[arg(long, value_name = "FILE")]
    pub store_password_file: Option<PathBuf>,
    /// Seed file for the DRBG; "" for none [default: the file's `seed_file`, else <state-dir>/seed].
    #[arg(long, value_name = "FILE")]
    pub seed_file: Option<PathBuf>,
    /// Directory for the compiled-core cache.
    #[arg(long, value_name = "DIR", conflicts_with = "no_compile_cache")]
    pub compile_cache: Option<PathBuf>,
    /// Compile the core at every start instead of caching it.
    #[arg(long)]
    pub no_compile_cache: bool,
    /// Log filter, e.g. `info` or `tlskeeper=debug` (also RUST_LOG).
    #[arg(long, value_name = "FILTER", default_value = "info", env = "RUST_LOG")]
    pub log: String,
    /// Record every call into the core, and everything it sees, to this new file (mode 0600; it holds keys and sessions in clear). Replay it with `tlskeeper replay`.
    #[arg(long, value_name = "FILE")]
    pub record: Option<PathBuf>,
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
    /// Find a session and remove it in the same step (tlskeeper's own
    /// request: a single-use session is handed out once).
    Take {
        /// Cache name.
        cache: String,
        /// Cache id.
        id: String,
    },
    /// Seal a ticket plaintext under the current ticket key, which stays in
    /// the daemon (tlskeeper's own request); prints the ticket in hex.
    Seal {
        /// The plaintext in hex (at most 16 KiB).
        plaintext_hex: String,
    },
    /// Open a ticket that `seal` made (tlskeeper's own request): OK with the
    /// plaintext, or ERR for a ticket that does not open, whatever the
    /// reason.
    Open {
        /// The ticket in hex.
        ticket_hex: String,
    },
}

/// Run the parsed command line.
///
/// # Errors
///
/// A [`Failure`] with a message for the operator.
pub fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Postfix(args) => {
            let launch = crate::postfix::Launch::Standalone(args);
            // Failures are logged to the mail log (and stderr) already.
            match crate::postfix::run(&launch) {
                0 => Ok(()),
                status => Err(fail(status, "stopped after a start-up failure; see the mail log")),
            }
        }
        Command::Client(args) => client(args),
        Command::Replay(args) => replay(args),
        Command::Bench(args) => bench(args),
        Command::Kek(KekCommand::New { file }) => {
            let kek = tlskeeper_engine::storage::kek::create(&file).map_err(|e| fail(73, e.to_string()))?;
            println!("{}: new key-encryption key, fingerprint {}", file.display(), kek.fingerprint());
            Ok(())
        }
    }
}

fn bench(args: BenchArgs) -> Result<(), Failure> {
    let duration = match (args.duration, args.requests) {
        (Some(secs), _) => Some(
            std::time::Duration::try_from_secs_f64(secs).map_err(|e| fail(64, format!("--duration {secs}: {e}")))?,
        ),
        (None, Some(_)) => None,
        (None, None) => Some(std::time::Duration::from_secs(10)),
    };
    let options = crate::bench::Options {
        socket: args.socket,
        connections: args.connections,
        duration,
        requests: args.requests,
        mix: args.mix,
        cache: args.cache,
    };
    let bar = if args.json {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new_spinner().with_style(
            indicatif::ProgressStyle::with_template("{spinner} {pos} requests, {per_sec}, {elapsed}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        )
    };
    let report = crate::bench::run(&options, &|done| bar.set_position(done)).map_err(|e| fail(69, e.to_string()))?;
    bar.finish_and_clear();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report).map_err(|e| fail(70, e.to_string()))?);
    } else {
        println!("{report}");
    }
    if report.errors == 0 { Ok(()) } else { Err(fail(1, format!("{} request(s) failed", report.errors))) }
}

fn serve(args: ServeArgs) -> Result<(), Failure> {
    crate::logging::install_stderr(&args.log);
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        // Said, not refused: root is where a first try happens. The daemon
        // needs no privilege of its own; the Postfix modes switch to
        // mail_owner themselves.
        tracing::warn!(
            "running as root: tlskeeper serve keeps every privilege it starts with; run it as a dedicated \
             unprivileged user that owns the state directory and the socket's directory"
        );
    }
    let mut settings = Settings::load(args.config.as_deref()).map_err(|e| fail(78, e.to_string()))?;
    if let Some(socket) = args.socket {
        settings.socket = socket;
    }
    if let Some(dir) = args.state_dir {
        settings.state_dir = Some(dir);
    }
    if let Some(file) = args.kek_file {
        settings.kek_file = Some(file);
    }
    if let Some(file) = args.seed_file {
        settings.seed_file = Some(file);
    }
    if let Some(url) = args.store {
        settings.store = Some(url);
    }
    if args.store_cluster {
        settings.store_cluster = true;
    }
    if let Some(cores) = args.cores {
        settings.cores = cores;
    }
    if let Some(file) = args.store_password_file {
        settings.store_password_file = Some(file);
    }
    if let Some(dir) = args.compile_cache {
        settings.compile_cache_dir = Some(dir);
    }
    if args.no_compile_cache {
        settings.compile_cache = false;
    }
    let mode = settings.socket_mode().map_err(|e| fail(78, e.to_string()))?;
    if args.record.is_some() && settings.cores == 0 {
        // A trace is one core's: recording picks one unless told more.
        settings.cores = 1;
    }
    let cores = settings.core_count().map_err(|e| fail(78, e.to_string()))?;
    if cores > 1 && args.record.is_some() {
        return Err(fail(64, "--record needs cores = 1: a trace is one core's calls, in the order it made them"));
    }

    // Handlers before anything else: a signal that arrives while the core
    // loads must find them in place, or it kills the daemon and leaves the
    // socket file behind. The server checks the trigger before it waits.
    let started = std::time::Instant::now();
    let shutdown = Arc::new(Shutdown::new().map_err(|e| fail(71, format!("cannot set up shutdown: {e}")))?);
    crate::shutdown::on_signals(Arc::clone(&shutdown)).map_err(|e| fail(71, format!("cannot watch signals: {e}")))?;
    let runtime = Runtime::new(settings.compile_cache_dir().as_deref()).map_err(|e| fail(70, e.to_string()))?;
    let tape = match &args.record {
        Some(path) => {
            let header = runtime.trace_header(settings.limits());
            let writer = tlskeeper_engine::trace::file::TraceWriter::create(path, &header)
                .map_err(|e| fail(73, e.to_string()))?;
            tracing::info!("recording every core call to {} (it holds secrets: keep it private)", path.display());
            Tape::Record(writer)
        }
        None => Tape::Off,
    };
    let state =
        tlskeeper_engine::state::open(&settings.state_options()).map_err(|e| fail(e.status(), e.to_string()))?;
    let caps = state
        .into_capabilities(Box::new(tlskeeper_engine::caps::SystemClock), Box::new(tlskeeper_engine::caps::OsEntropy));
    let more_caps = crate::daemon::more_cores(&settings.state_options(), cores - 1)?;
    let mut daemon = Daemon::on_own_socket(runtime, caps, settings, mode, shutdown, started, tape)?;
    daemon.more_caps = more_caps;
    crate::daemon::run(daemon).map_err(Failure::from)
}

fn replay(args: ReplayArgs) -> Result<(), Failure> {
    crate::logging::install_stderr("warn");
    let trace = tlskeeper_engine::trace::file::read(&args.trace).map_err(|e| fail(65, e.to_string()))?;
    let runtime = match &args.component {
        Some(path) => {
            let bytes =
                std::fs::read(path).map_err(|e| fail(66, format!("cannot read component {}: {e}", path.display())))?;
            Runtime::with_component(&bytes, None)
        }
        None => Runtime::new(Settings::default().compile_cache_dir().as_deref()),
    }
    .map_err(|e| fail(70, e.to_string()))?;
    let bar = if args.json {
        indicatif::ProgressBar::hidden()
    } else {
        // Drawn only on a terminal; a pipe or a log file gets the report alone.
        indicatif::ProgressBar::new(0).with_style(
            indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} calls ({eta} left)")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        )
    };
    let report = tlskeeper_engine::replay::replay(trace, &runtime, |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    })
    .map_err(|e| fail(65, e.to_string()))?;
    bar.finish_and_clear();
    if args.json {
        let json = serde_json::to_string_pretty(&report).map_err(|e| fail(70, e.to_string()))?;
        println!("{json}");
    } else {
        println!("{report}");
    }
    if report.identical() { Ok(()) } else { Err(fail(1, "the replay diverged from the trace")) }
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
        ClientRequest::Take { cache, id } => Request::Take { cache_type: cache, cache_id: id },
        ClientRequest::Seal { plaintext_hex } => Request::Seal {
            plaintext: hex::decode(&plaintext_hex).map_err(|e| fail(64, format!("plaintext_hex: {e}")))?.into(),
        },
        ClientRequest::Open { ticket_hex } => {
            Request::Open { ticket: hex::decode(&ticket_hex).map_err(|e| fail(64, format!("ticket_hex: {e}")))? }
        }
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
        tlskeeper_protocol::tlsmgr::Status::Ok => Ok(()),
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
        Reply::Lookup { status, session } | Reply::Take { status, session } => {
            format!("status={status} session={}", secret(session))
        }
        // A ticket is no secret: it crosses the network in clear.
        Reply::Seal { status, ticket, lifetime } => {
            format!("status={status} ticket={} lifetime={lifetime}", hex::encode(ticket))
        }
        Reply::Open { status, plaintext } => format!("status={status} plaintext={}", secret(plaintext)),
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
