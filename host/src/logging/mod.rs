//! Logging: `tracing` events rendered and delivered the way Postfix daemons
//! log, so that tlskeeper's lines in the mail log look like tlsmgr(8)'s:
//! `Nov 22 10:00:01 mx postfix/tlsmgr[1234]: warning: bogus cache type`.
//!
//! Two ways to run:
//!
//! - [`install_stderr`]: `tlskeeper serve`'s plain `tracing_subscriber::fmt`
//!   output on stderr, filtered by an `EnvFilter` directive.
//! - [`install_postfix`]: a [`PostfixLayer`] that renders each event with
//!   Postfix's msg(3) conventions and sends it to syslogd (`/dev/log`, as
//!   glibc's syslog(3) would) or, when `maillog_file` is set, to Postfix
//!   3.7's postlogd(8) (as its msg_logger(3) would). It returns a
//!   [`LogHandle`] to switch tag, facility, destination and level once
//!   main.cf has been read: `tracing` allows one global subscriber, so the
//!   subscriber stays and its configuration changes.
//!
//! Rendering: INFO, DEBUG and TRACE give the text as is (Postfix logs its
//! verbose output at info, and so do we: a `mail.info` syslog rule must
//! still show `-v` output), WARN gives `warning: TEXT`, ERROR gives
//! `error: TEXT`, and an ERROR event with target [`FATAL`] gives
//! `fatal: TEXT`. TEXT is the `message` field followed by the other fields as
//! ` key=value`. Every record is sent synchronously, inside the `tracing`
//! call, so a fatal error logged just before `exit` has reached the socket
//! by then.
//!
//! Order of use in the daemon: [`install_postfix`] with
//! [`PostfixLogConfig::bootstrap`] first thing, before chroot(2) (it calls
//! tzset(3) and connects the socket); chdir to the queue directory; read
//! main.cf; [`LogHandle::reconfigure`] — still before chroot, so that a
//! changed destination is connected while its path resolves.
//!
//! # Security
//!
//! Log text is partly chosen by clients: a cache type name, a session id, a
//! protocol error. Every record is therefore made printable before it is
//! sent — control characters (newline, tab, DEL, C1), Unicode line and
//! paragraph separators and bidirectional overrides become `?`, as Postfix's
//! printable(3) does — so a client can neither forge a second log line nor
//! disguise one; and text is cut at [`MAX_TEXT`] bytes, Postfix's limit.
//! Secrets are never passed to `tracing` at all; this module cannot tell
//! them apart and does not try. The configuration (tag, host name, socket
//! paths) comes from the operator and is trusted, though still made
//! printable. Sends never block and never panic: a wedged syslogd costs log
//! lines, not service.
//!
//! # Limitations
//!
//! - A record the log socket cannot take at once (reader behind, service
//!   absent) is dropped silently, as syslog(3) without LOG_CONS and Postfix
//!   daemons do; only a `fatal:` record that could not be delivered is also
//!   written to stderr, the last place anyone may see it.
//! - After chroot(2), reconnecting resolves the socket path inside the jail:
//!   `/dev/log` works only if the system provides one there (Debian's
//!   Postfix package has rsyslog create `$queue_directory/dev/log`), and the
//!   postlog path must be relative to the queue directory, which needs the
//!   daemon's working directory to be the queue directory before chroot and
//!   the jail root after. The connection made before chroot survives as
//!   long as the reader keeps its socket.
//! - A stream `/dev/log` (glibc's fallback on EPROTOTYPE) is supported, but
//!   its connect can wait while the listener's backlog is full, and a record
//!   the stream takes only partly is lost and closes the connection.
//! - Local time comes from localtime_r(3), which uses the zone rules loaded
//!   by the tzset(3) that [`install_postfix`] performs; a zone change after
//!   start is not noticed (Postfix behaves the same).
//! - Records from the `log` crate are bridged at the level in force at
//!   [`install_postfix`]; raising the level later does not raise theirs.
//! - The level applies to every target, dependencies included.

mod postlog;
mod socket;
mod syslog;

use std::fmt::{self, Write as _};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt as _};
use tracing_subscriber::util::{SubscriberInitExt as _, TryInitError};

use self::socket::LogSocket;
pub use self::syslog::Facility;

/// The target that marks an ERROR event as fatal:
/// `tracing::error!(target: logging::FATAL, "...")` logs `fatal: ...`, as
/// Postfix's msg_fatal(3) does before the process exits.
pub const FATAL: &str = "fatal";

/// The local syslog socket.
pub const DEV_LOG: &str = "/dev/log";

/// Postfix's default `postlog_service_name`.
pub const POSTLOG_SERVICE_NAME: &str = "postlog";

/// Most bytes of text per record (after the `warning: ` prefix), as
/// Postfix's `MSG_SYSLOG_RECLEN` and `MSG_LOGGER_RECLEN`.
pub const MAX_TEXT: usize = 2000;

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// `syslog_facility` names no facility syslog(3) knows.
    #[error("unrecognized syslog facility: {0}")]
    UnknownFacility(String),
    /// A global `tracing` subscriber (or `log` logger) was already installed.
    #[error("cannot install the logger: {0}")]
    Install(#[from] TryInitError),
}

/// Where Postfix-style records go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkKind {
    /// syslogd, through the UNIX socket at `socket` ([`DEV_LOG`] normally;
    /// another path in tests).
    Syslog {
        /// The socket path.
        socket: PathBuf,
    },
    /// postlogd(8), through its datagram socket.
    Postlog {
        /// The socket path, normally `public/$postlog_service_name` relative
        /// to the queue directory (see [`SinkKind::postlog`]).
        socket: PathBuf,
        /// `$myhostname`; records carry its first label. Empty: the local
        /// host name.
        hostname: String,
    },
}

impl SinkKind {
    /// syslog at [`DEV_LOG`].
    pub fn syslog() -> SinkKind {
        SinkKind::Syslog { socket: PathBuf::from(DEV_LOG) }
    }

    /// postlogd at `public/{service_name}`. The path is relative on purpose:
    /// Postfix's absolute `$queue_directory/public/...` stops resolving
    /// inside the chroot jail, the relative one resolves both before chroot
    /// (working directory: the queue directory) and inside it (the jail's
    /// root).
    pub fn postlog(service_name: &str, myhostname: &str) -> SinkKind {
        SinkKind::Postlog { socket: Path::new("public").join(service_name), hostname: myhostname.to_owned() }
    }
}

/// A complete Postfix logging configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostfixLogConfig {
    /// The program tag, `$syslog_name/tlsmgr`.
    pub tag: String,
    /// `syslog_facility` (syslog only).
    pub facility: Facility,
    /// The destination.
    pub sink: SinkKind,
    /// Events above this level are not logged.
    pub level: LevelFilter,
    /// Also write each record to stderr as `TAG: TEXT`, like a Postfix
    /// daemon started with `-V` or by hand.
    pub also_stderr: bool,
}

impl PostfixLogConfig {
    /// What a Postfix daemon `program` logs with before it has read main.cf:
    /// tag `$MAIL_LOGTAG/program` (`postfix/program` without it), facility
    /// mail, level INFO; postlogd if master exported `POSTLOG_SERVICE` (and
    /// `POSTLOG_HOSTNAME`), as it does when `maillog_file` is set, syslog at
    /// [`DEV_LOG`] otherwise — Postfix's mail_task(3) and
    /// maillog_client(3) rules.
    pub fn bootstrap(program: &str) -> PostfixLogConfig {
        Self::bootstrap_from(program, |name| std::env::var(name).ok())
    }

    fn bootstrap_from(program: &str, env: impl Fn(&str) -> Option<String>) -> PostfixLogConfig {
        let get = |name: &str| env(name).filter(|v| !v.is_empty());
        let tag = format!("{}/{program}", get("MAIL_LOGTAG").as_deref().unwrap_or("postfix"));
        let sink = match get("POSTLOG_SERVICE") {
            Some(socket) => {
                SinkKind::Postlog { socket: socket.into(), hostname: get("POSTLOG_HOSTNAME").unwrap_or_default() }
            }
            None => SinkKind::syslog(),
        };
        PostfixLogConfig { tag, facility: Facility::MAIL, sink, level: LevelFilter::INFO, also_stderr: false }
    }
}

/// Install the stderr logger of `tlskeeper serve`: `tracing_subscriber::fmt`
/// filtered by the `EnvFilter` directive `filter` (`info` if it does not
/// parse). A second install is reported on stderr and otherwise ignored.
pub fn install_stderr(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|e| {
        eprintln!("tlskeeper: bad log filter {filter:?} ({e}); using \"info\"");
        tracing_subscriber::EnvFilter::new("info")
    });
    if let Err(e) = tracing_subscriber::fmt().with_env_filter(filter).with_writer(io::stderr).try_init() {
        eprintln!("tlskeeper: cannot install logging: {e}");
    }
}

/// Install a [`PostfixLayer`] as the global subscriber and return its
/// handle. Calls tzset(3) and connects the socket, so call it before
/// chroot(2) and before starting threads.
///
/// # Errors
///
/// [`LogError::Install`] when a global subscriber is already set.
pub fn install_postfix(config: PostfixLogConfig) -> Result<LogHandle, LogError> {
    // SAFETY: tzset(3) reads TZ and may race with a concurrent setenv; the
    // daemon installs logging first thing, before it starts threads.
    unsafe { tzset() };
    let (layer, handle) = postfix_layer(config);
    tracing_subscriber::registry().with(layer).try_init()?;
    Ok(handle)
}

unsafe extern "C" {
    /// POSIX tzset(3); the libc crate does not declare it for Unix.
    fn tzset();
}

/// A layer and its handle, without installing anything: for
/// [`install_postfix`], for composing with other layers, and for tests
/// (with `tracing::subscriber::with_default`). Connects the socket now.
pub fn postfix_layer(config: PostfixLogConfig) -> (PostfixLayer, LogHandle) {
    let shared = Arc::new(Shared { level: AtomicU8::new(encode(config.level)), state: Mutex::new(State::new(config)) });
    (PostfixLayer { shared: Arc::clone(&shared) }, LogHandle { shared })
}

/// Changes the configuration of an installed [`PostfixLayer`].
#[derive(Clone)]
pub struct LogHandle {
    shared: Arc<Shared>,
}

impl fmt::Debug for LogHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogHandle").field("level", &self.shared.level()).finish_non_exhaustive()
    }
}

impl LogHandle {
    /// Switch to `config`. Events logged from now on use it. When the
    /// destination is the same kind and socket path as before, the existing
    /// connection is kept (it may be the only one that works after chroot);
    /// otherwise the new socket is connected now. A socket that cannot be
    /// connected is not an error: records are dropped and the connection
    /// retried with each one, as Postfix does (see [`LogHandle::connected`]).
    pub fn reconfigure(&self, config: PostfixLogConfig) {
        let level = config.level;
        self.shared.lock().apply(config);
        self.shared.level.store(encode(level), Ordering::SeqCst);
        // The level decides callsite interest, which tracing caches. The
        // `callsite` module is hidden from tracing's docs but public (its
        // macros use it); `reload::Layer` would do the same call, at the
        // cost of a subscriber-typed handle.
        tracing::callsite::rebuild_interest_cache();
    }

    /// Whether the log socket is connected now. False means records are
    /// being dropped until the service appears; the daemon may say so on
    /// stderr at startup, where an operator can still see it.
    pub fn connected(&self) -> bool {
        self.shared.lock().socket.is_connected()
    }
}

/// The `tracing` layer that renders and sends Postfix-style records.
pub struct PostfixLayer {
    shared: Arc<Shared>,
}

impl<S: Subscriber> Layer<S> for PostfixLayer {
    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        if self.shared.enabled(metadata.level()) { Interest::always() } else { Interest::never() }
    }

    fn enabled(&self, metadata: &Metadata<'_>, _ctx: Context<'_, S>) -> bool {
        self.shared.enabled(metadata.level())
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(self.shared.level())
    }

    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let metadata = event.metadata();
        // Interest is cached; between a reconfigure and the cache rebuild an
        // event of a no longer enabled level can still arrive.
        if !self.shared.enabled(metadata.level()) {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        let mut text = String::with_capacity(fields.message.len() + fields.rest.len());
        sanitize(&mut text, &fields.message, MAX_TEXT);
        // Fields come as ` key=value`; without a message, drop the space.
        let rest = if text.is_empty() { fields.rest.strip_prefix(' ').unwrap_or_default() } else { &fields.rest };
        let room = MAX_TEXT.saturating_sub(text.len());
        sanitize(&mut text, rest, room);
        self.shared.log(Severity::of(metadata), &text);
    }
}

/// Postfix's message classes (panic aside: a Rust panic is not logged here).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Severity {
    Info,
    Warning,
    Error,
    Fatal,
}

impl Severity {
    fn of(metadata: &Metadata<'_>) -> Severity {
        match *metadata.level() {
            Level::ERROR if metadata.target() == FATAL => Severity::Fatal,
            Level::ERROR => Severity::Error,
            Level::WARN => Severity::Warning,
            _ => Severity::Info,
        }
    }

    /// The `warning: ` text prefix; none for info.
    fn prefix(self) -> &'static str {
        match self {
            Severity::Info => "",
            Severity::Warning => "warning: ",
            Severity::Error => "error: ",
            Severity::Fatal => "fatal: ",
        }
    }
}

/// The local time of a record, as localtime_r(3) gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    /// 0 = January.
    month: u8,
    day: u8,
    hour: u8,
    minute: u8,
    second: u8,
}

impl Stamp {
    fn now() -> Stamp {
        let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let t = libc::time_t::try_from(secs).unwrap_or(libc::time_t::MAX);
        let mut tm = std::mem::MaybeUninit::<libc::tm>::uninit();
        // SAFETY: both pointers are valid for the call; localtime_r is
        // thread-safe and fills `tm` when it returns non-null.
        let filled = unsafe { libc::localtime_r(&t, tm.as_mut_ptr()) };
        if filled.is_null() {
            // Only when the year overflows an int; a fixed stamp beats none.
            return Stamp { month: 0, day: 1, hour: 0, minute: 0, second: 0 };
        }
        // SAFETY: localtime_r returned non-null, so it initialised `tm`.
        let tm = unsafe { tm.assume_init() };
        let field = |v: libc::c_int| u8::try_from(v).unwrap_or(0);
        Stamp {
            month: field(tm.tm_mon),
            day: field(tm.tm_mday),
            hour: field(tm.tm_hour),
            minute: field(tm.tm_min),
            second: field(tm.tm_sec),
        }
    }

    /// `%b` in the C locale, whatever the process locale: syslogd and
    /// postlogd readers expect English month names.
    fn month_name(&self) -> &'static str {
        const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
        MONTHS.get(usize::from(self.month)).copied().unwrap_or("Jan")
    }
}

/// The level filter encoded for an atomic: the index in this table.
const LEVELS: [LevelFilter; 6] = [
    LevelFilter::OFF,
    LevelFilter::ERROR,
    LevelFilter::WARN,
    LevelFilter::INFO,
    LevelFilter::DEBUG,
    LevelFilter::TRACE,
];

fn encode(level: LevelFilter) -> u8 {
    // Every LevelFilter is in LEVELS; OFF is the harmless answer otherwise.
    LEVELS.iter().position(|l| *l == level).and_then(|i| u8::try_from(i).ok()).unwrap_or(0)
}

/// What the layer and its handles share.
struct Shared {
    /// The level, read on every event without taking the lock.
    level: AtomicU8,
    state: Mutex<State>,
}

impl Shared {
    fn level(&self) -> LevelFilter {
        LEVELS.get(usize::from(self.level.load(Ordering::Relaxed))).copied().unwrap_or(LevelFilter::OFF)
    }

    fn enabled(&self, level: &Level) -> bool {
        *level <= self.level()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while logging leaves the state usable: at worst a socket
        // that the next send reconnects.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Build the record for `text`, send it, echo it if configured.
    fn log(&self, severity: Severity, text: &str) {
        let stamp = Stamp::now();
        let pid = std::process::id();
        let mut state = self.lock();
        let mut record = String::with_capacity(text.len() + 80);
        match &state.format {
            Format::Syslog(facility) => syslog::header(&mut record, *facility, severity, &stamp, &state.tag, pid),
            Format::Postlog { host } => postlog::header(&mut record, &stamp, host, &state.tag, pid),
        }
        record.push_str(severity.prefix());
        record.push_str(text);
        let delivered = state.socket.send(record.as_bytes());
        let echo = (state.also_stderr || (severity == Severity::Fatal && !delivered))
            .then(|| stderr_line(&state.tag, severity, text));
        drop(state);
        if let Some(line) = echo {
            // Nothing to do if stderr is gone too.
            let _ = io::stderr().lock().write_all(line.as_bytes());
        }
    }
}

/// How records are framed for the current destination.
enum Format {
    Syslog(Facility),
    Postlog {
        /// The first label of the host name, ready to print.
        host: String,
    },
}

/// The configuration in force, with its connection.
struct State {
    tag: String,
    format: Format,
    socket: LogSocket,
    also_stderr: bool,
}

impl State {
    fn new(config: PostfixLogConfig) -> State {
        State {
            tag: printable(&config.tag),
            format: Format::of(&config),
            socket: Self::connect(&config.sink),
            also_stderr: config.also_stderr,
        }
    }

    fn apply(&mut self, config: PostfixLogConfig) {
        let same_socket = match (&self.format, &config.sink) {
            (Format::Syslog(_), SinkKind::Syslog { socket })
            | (Format::Postlog { .. }, SinkKind::Postlog { socket, .. }) => self.socket.path() == socket,
            _ => false,
        };
        // Keep a connection to the same socket rather than reconnecting:
        // after chroot the path may no longer lead anywhere, while the
        // connection made before still works.
        if !same_socket {
            self.socket = Self::connect(&config.sink);
        }
        self.tag = printable(&config.tag);
        self.format = Format::of(&config);
        self.also_stderr = config.also_stderr;
    }

    fn connect(sink: &SinkKind) -> LogSocket {
        match sink {
            SinkKind::Syslog { socket } => LogSocket::open(socket, true),
            SinkKind::Postlog { socket, .. } => LogSocket::open(socket, false),
        }
    }
}

impl Format {
    fn of(config: &PostfixLogConfig) -> Format {
        match &config.sink {
            SinkKind::Syslog { .. } => Format::Syslog(config.facility),
            SinkKind::Postlog { hostname, .. } => Format::Postlog { host: postlog::host_label(hostname) },
        }
    }
}

/// The stderr echo, as Postfix's msg_vstream(3) writes it: `TAG: TEXT` or
/// `TAG: warning: TEXT`, no time, no pid.
fn stderr_line(tag: &str, severity: Severity, text: &str) -> String {
    format!("{tag}: {}{text}\n", severity.prefix())
}

/// An event's fields: the message, and the rest as ` key=value`.
#[derive(Default)]
struct Fields {
    message: String,
    rest: String,
}

impl Fields {
    fn push(&mut self, field: &Field, value: fmt::Arguments<'_>) {
        // Writing to a String cannot fail.
        if field.name() == "message" {
            let _ = self.message.write_fmt(value);
        } else if !field.name().starts_with("log.") {
            // `log.*` are tracing-log's record metadata, not content.
            let _ = write!(self.rest, " {}={value}", field.name());
        }
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        // Unquoted, unlike fmt's Debug rendering: Postfix writes `key=value`.
        self.push(field, format_args!("{value}"));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.push(field, format_args!("{value:?}"));
    }
}

/// Whether `c` must not reach a log line: it would end the line, hide text
/// or reorder it on display.
fn unprintable(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Append `text` to `out` with unprintable characters replaced by `?`,
/// stopping before `limit` bytes would be exceeded (at a character
/// boundary). Postfix's printable(3) replaces the same way; non-ASCII text
/// passes, as in Postfix with SMTPUTF8 enabled (its default).
fn sanitize(out: &mut String, text: &str, limit: usize) {
    let mut room = limit;
    for c in text.chars() {
        let c = if unprintable(c) { '?' } else { c };
        let Some(left) = room.checked_sub(c.len_utf8()) else {
            break;
        };
        room = left;
        out.push(c);
    }
}

/// `text` made printable, without a length limit (configuration strings).
fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    sanitize(&mut out, text, usize::MAX);
    out
}

#[cfg(test)]
mod tests;
