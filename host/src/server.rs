//! The UNIX-socket server: accept connections, speak attr0, hand each
//! request to the [`Service`].
//!
//! One thread, one event loop (epoll, through mio), every connection
//! non-blocking. Per connection:
//!
//! 1. send the announcement (`protocol=tlsmgr_protocol`);
//! 2. if the first bytes are master(8)'s wakeup `W\0`, close;
//! 3. otherwise, whenever it is readable: read, decode whole frames, parse
//!    each into a [`Request`], answer it; a request that does not parse gets
//!    the failure reply tlsmgr's client expects, a frame that cannot be
//!    decoded (over a limit) ends the connection.
//!
//! The loop answers requests one at a time, and the core takes calls one
//! at a time anyway. Rejected after measuring, with 16 busy connections on
//! two cores:
//! - a thread per connection, the first design: the threads spent half of
//!   all CPU time switching between each other and queueing for the core,
//!   and held the daemon below half the rate of a do-nothing server;
//! - two loops, each with connections of its own: waiting in turn for each
//!   other at the core's lock, they got 10% less throughput and three times
//!   the p99 latency (3.6 ms against 1.1 ms).
//!
//! A loop also serves a thousand idle connections without a thousand
//! stacks, and a client that trickles bytes holds up no one.
//!
//! # Security
//!
//! Every byte from a client is untrusted. Frames are bounded by
//! [`attr0::Limits`]; a connection idle past the idle timeout, or sending
//! one request for longer than the read timeout, is closed; the
//! number of connections is capped and the cap logged when reached. A client
//! that stops reading its replies is not read from until it catches up, so
//! it cannot make the daemon buffer without bound. A bad client affects only
//! its own connection. Each turn of the loop serves a connection at most
//! [`REQUESTS_PER_TURN`] requests, so a client that pipelines a flood cannot
//! starve the others.
//!
//! # Limitations
//!
//! One thread: a slow core call (a flush's fsync) delays every connection,
//! as it would anyway, since calls into the core are serialised.

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mio::net::{UnixListener as MioListener, UnixStream as MioStream};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use crate::service::Service;
use crate::shutdown::Shutdown;
use tlskeeper_protocol::attr0::{self, Decoder};
use tlskeeper_protocol::tlsmgr::{self, Prefix, Request};

/// Connection handling settings.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Most connections served at once; more are closed on accept.
    pub max_connections: usize,
    /// A connection with no request for this long is closed. Postfix clients
    /// close idle connections after `ipc_idle` (5 s) themselves.
    pub idle_timeout: Duration,
    /// A connection whose request has been arriving for this long without
    /// being complete is closed: a trickling or stalled client must not hold
    /// one of the `max_connections` slots for the whole idle timeout. Postfix
    /// clients write each request whole.
    pub read_timeout: Duration,
    /// Frame limits.
    pub limits: attr0::Limits,
    /// Event loops, each a thread with connections of its own: one per
    /// core of a pool, so that a loop waiting on its core's round trip to a
    /// shared store does not hold up the connections of the others. One
    /// for a single core (two loops at one core's lock were measured worse).
    pub loops: usize,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            max_connections: 1024,
            idle_timeout: Duration::from_secs(300),
            read_timeout: Duration::from_secs(10),
            limits: attr0::Limits::default(),
            loops: 1,
        }
    }
}

/// Bytes read per `read` call.
const READ_CHUNK: usize = 16 * 1024;
/// Most requests answered on one connection per turn of the loop.
pub const REQUESTS_PER_TURN: usize = 32;
/// Replies buffered for a connection beyond which it is not read from until
/// its client has taken them.
const MAX_PENDING_OUTPUT: usize = 256 * 1024;
/// The shutdown pipe's token; listeners are numbered from 0, connections
/// from [`FIRST_CONNECTION`].
const SHUTDOWN: Token = Token(usize::MAX);
/// Listeners take the tokens below this one.
const FIRST_CONNECTION: usize = 1 << 16;

/// Accept and serve connections on every listener until `shutdown` fires,
/// then close every open connection and return.
///
/// The listeners are switched to non-blocking mode; master(8) hands its
/// listening socket over non-blocking anyway (it shares the open file
/// description, so leaving it non-blocking is also what master expects).
///
/// # Errors
///
/// Only when waiting for events fails in a way that will not recover, or
/// the listeners cannot be watched.
pub fn serve(
    listeners: &[UnixListener],
    service: &Service,
    settings: &ServerSettings,
    shutdown: &Shutdown,
) -> io::Result<()> {
    raise_descriptor_limit(settings.max_connections);
    if settings.loops <= 1 {
        // Returning drops the loop, and with it every open connection.
        return EventLoop::new(listeners, service, settings, shutdown)?.run();
    }
    // Every loop watches every listener (the kernel wakes them all; one
    // wins each accept) and keeps its share of the connection limit.
    let share = ServerSettings {
        max_connections: settings.max_connections.div_ceil(settings.loops).max(1),
        ..settings.clone()
    };
    // Any loop that fails, or cannot start, stops them all.
    let run_one = || {
        let outcome = EventLoop::new(listeners, service, &share, shutdown).and_then(EventLoop::run);
        if outcome.is_err() {
            shutdown.trigger();
        }
        outcome
    };
    std::thread::scope(|scope| {
        let mut others = Vec::with_capacity(settings.loops - 1);
        for _ in 1..settings.loops {
            match std::thread::Builder::new().name("tlskeeper-loop".into()).spawn_scoped(scope, run_one) {
                Ok(other) => others.push(other),
                Err(e) => {
                    shutdown.trigger();
                    return Err(e);
                }
            }
        }
        let mine = run_one();
        others.into_iter().fold(mine, |first, other| {
            let outcome = other.join().unwrap_or_else(|_| Err(io::Error::other("an event loop panicked")));
            first.and(outcome)
        })
    })
}

/// The poller, the listeners and every connection.
struct EventLoop<'a> {
    service: &'a Service,
    settings: &'a ServerSettings,
    shutdown: &'a Shutdown,
    poll: Poll,
    listeners: Vec<MioListener>,
    conns: Slab<Connection>,
    /// Whether the connection limit has been logged since a connection was
    /// last accepted.
    refused_logged: bool,
    /// When to try accepting again after an error such as EMFILE (edge-
    /// triggered events would not report the waiting clients again).
    retry_accept: Option<Instant>,
}

impl<'a> EventLoop<'a> {
    fn new(
        listeners: &[UnixListener],
        service: &'a Service,
        settings: &'a ServerSettings,
        shutdown: &'a Shutdown,
    ) -> io::Result<Self> {
        let poll = Poll::new()?;
        let mut watched = Vec::with_capacity(listeners.len());
        for (i, listener) in listeners.iter().enumerate() {
            let listener = listener.try_clone()?;
            listener.set_nonblocking(true)?;
            let mut listener = MioListener::from_std(listener);
            poll.registry().register(&mut listener, Token(i), Interest::READABLE)?;
            watched.push(listener);
        }
        let shutdown_fd = shutdown.fd().as_raw_fd();
        poll.registry().register(&mut SourceFd(&shutdown_fd), SHUTDOWN, Interest::READABLE)?;
        Ok(EventLoop {
            service,
            settings,
            shutdown,
            poll,
            listeners: watched,
            conns: Slab::default(),
            refused_logged: false,
            retry_accept: None,
        })
    }

    fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(256);
        // Connections with requests left over from their turn.
        let mut again: Vec<Token> = Vec::new();
        let shortest = self.settings.idle_timeout.min(self.settings.read_timeout);
        let idle_check = (shortest / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
        let mut next_idle_check = Instant::now() + idle_check;
        // Checked before the first wait too: a signal may have arrived while
        // the daemon was starting.
        while !self.shutdown.is_triggered() {
            let wake = self.retry_accept.map_or(next_idle_check, |t| t.min(next_idle_check));
            let timeout =
                if again.is_empty() { wake.saturating_duration_since(Instant::now()) } else { Duration::ZERO };
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            if self.shutdown.is_triggered() {
                break;
            }
            let mut turn = std::mem::take(&mut again);
            for event in &events {
                match event.token() {
                    SHUTDOWN => {}
                    Token(i) if i < FIRST_CONNECTION => self.accept_all(i),
                    token => turn.push(token),
                }
            }
            if self.retry_accept.is_some_and(|t| Instant::now() >= t) {
                self.retry_accept = None;
                (0..self.listeners.len()).for_each(|i| self.accept_all(i));
            }
            turn.sort_unstable();
            turn.dedup();
            for token in turn {
                let Some(conn) = self.conns.get_mut(token.0 - FIRST_CONNECTION) else { continue };
                match conn.serve(self.service) {
                    Progress::Waiting => {}
                    Progress::More => again.push(token),
                    Progress::Closed => {
                        self.close(token);
                        continue;
                    }
                }
                if let Err(e) = conn.watch(self.poll.registry(), token) {
                    tracing::warn!("cannot watch a connection: {e}");
                    self.close(token);
                }
            }
            if Instant::now() >= next_idle_check {
                self.close_idle();
                next_idle_check = Instant::now() + idle_check;
            }
        }
        Ok(())
    }

    /// Accept every client waiting on listener `i` (several may be queued).
    fn accept_all(&mut self, i: usize) {
        loop {
            let Some(listener) = self.listeners.get(i) else { return };
            let mut stream = match listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if matches!(e.kind(), io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted) => continue,
                Err(e) => {
                    // EMFILE and friends: try again shortly, without holding
                    // up the connections already open.
                    tracing::warn!("accept failed: {e}; retrying in 100 ms");
                    self.retry_accept = Some(Instant::now() + Duration::from_millis(100));
                    return;
                }
            };
            if self.conns.len() >= self.settings.max_connections {
                if !self.refused_logged {
                    tracing::warn!(
                        "connection limit of {} reached; refusing new connections until some close",
                        self.settings.max_connections
                    );
                    self.refused_logged = true;
                }
                continue;
            }
            self.refused_logged = false;
            let slot = self.conns.vacant();
            let token = Token(FIRST_CONNECTION + slot);
            if let Err(e) = self.poll.registry().register(&mut stream, token, Interest::READABLE) {
                tracing::warn!("cannot watch a new connection: {e}");
                continue;
            }
            let mut conn = Connection::new(stream, self.settings);
            // Send the announcement now; the event registration reported
            // brings us back for anything else.
            let progress = conn.serve(self.service);
            if progress == Progress::Closed || conn.watch(self.poll.registry(), token).is_err() {
                let _ = self.poll.registry().deregister(&mut conn.stream);
                continue;
            }
            self.conns.insert(slot, conn);
        }
    }

    fn close(&mut self, token: Token) {
        if let Some(mut conn) = self.conns.remove(token.0 - FIRST_CONNECTION) {
            let _ = self.poll.registry().deregister(&mut conn.stream);
        }
    }

    /// Close connections that have neither sent a request nor taken a reply
    /// for the idle timeout, or have been sending one request for the read
    /// timeout.
    fn close_idle(&mut self) {
        let now = Instant::now();
        let overdue: Vec<(usize, &'static str)> =
            self.conns.iter().filter_map(|(i, c)| c.overdue(now, self.settings).map(|why| (i, why))).collect();
        for (i, why) in overdue {
            tracing::debug!("closing a connection: {why}");
            self.close(Token(FIRST_CONNECTION + i));
        }
    }
}

/// Make room for `max_connections` descriptors: raise the soft limit on
/// open files as far as the hard limit allows, and say so if that is not
/// enough (accept would then fail with EMFILE before the connection limit
/// is reached).
fn raise_descriptor_limit(max_connections: usize) {
    // The store, the logs, the listeners and the pollers need a few more.
    let wanted = max_connections as u64 + 64;
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `limit` is a valid, exclusively borrowed rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) } != 0 || limit.rlim_cur >= wanted {
        return;
    }
    let raised = libc::rlimit { rlim_cur: wanted.min(limit.rlim_max), rlim_max: limit.rlim_max };
    // SAFETY: `raised` is a valid rlimit, read only.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const raised) } != 0 || raised.rlim_cur < wanted {
        tracing::warn!(
            "open-file limit {} is below the {} descriptors max_connections = {max_connections} needs; raise the \
             hard limit (ulimit -Hn) or lower max_connections",
            raised.rlim_cur.max(limit.rlim_cur),
            wanted
        );
    }
}

/// What a connection needs next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Progress {
    /// Nothing until the socket is ready again.
    Waiting,
    /// Its turn ended with requests left; serve it again soon.
    More,
    /// Closed (by the client, for misbehaving, or on an error).
    Closed,
}

/// One client connection's buffers and protocol state.
struct Connection {
    stream: MioStream,
    decoder: Decoder,
    /// Bytes read and not yet decoded.
    input: Vec<u8>,
    /// Encoded replies not yet written, from `written` on.
    output: Vec<u8>,
    written: usize,
    /// Still looking for master(8)'s `W\0` wakeup.
    first: bool,
    /// The client has closed its end; answer what is buffered, then close.
    eof: bool,
    last_active: Instant,
    /// When the first byte of the request now in `input` arrived.
    request_started: Option<Instant>,
    /// Whether the poller reports writability too. Only while replies are
    /// waiting: otherwise every reply the client reads would wake the loop
    /// for nothing.
    watching_writes: bool,
}

impl Connection {
    fn new(stream: MioStream, settings: &ServerSettings) -> Self {
        Connection {
            stream,
            decoder: Decoder::new(settings.limits),
            input: Vec::new(),
            output: tlsmgr::ANNOUNCEMENT.to_vec(),
            written: 0,
            first: true,
            eof: false,
            last_active: Instant::now(),
            request_started: None,
            watching_writes: false,
        }
    }

    /// Start the read timeout's clock when a request's first bytes arrive.
    fn note_input(&mut self) {
        if self.input.is_empty() {
            self.request_started = None;
        } else if self.request_started.is_none() {
            self.request_started = Some(Instant::now());
        }
    }

    /// Whether this connection has outstayed the idle timeout, or the read
    /// timeout in the middle of a request, at `now`. While replies wait for
    /// the client to take them, its next request waits on us, not on it:
    /// only the idle timeout applies then (taking replies counts as activity).
    fn overdue(&self, now: Instant, settings: &ServerSettings) -> Option<&'static str> {
        let replies_waiting = self.written < self.output.len();
        if !replies_waiting && self.request_started.is_some_and(|t| now.duration_since(t) >= settings.read_timeout) {
            Some("its request did not arrive whole within the read timeout")
        } else if now.duration_since(self.last_active) >= settings.idle_timeout {
            Some("idle")
        } else {
            None
        }
    }

    /// Write what is pending, answer what is buffered, read what has
    /// arrived, until the socket would block or the turn ends.
    fn serve(&mut self, service: &Service) -> Progress {
        let mut answered = 0;
        let mut chunk = [0u8; READ_CHUNK];
        loop {
            match self.flush() {
                Ok(true) => {}
                // The client is not taking its replies: read nothing more
                // until it does (the writable event brings us back).
                Ok(false) if self.output.len() - self.written >= MAX_PENDING_OUTPUT => return Progress::Waiting,
                Ok(false) => {}
                Err(e) => {
                    tracing::debug!("connection ended: {e}");
                    return Progress::Closed;
                }
            }
            if self.first {
                match tlsmgr::wakeup_prefix(&self.input) {
                    Prefix::Wakeup => return Progress::Closed, // master(8) trigger: just close
                    Prefix::NotWakeup => self.first = false,
                    Prefix::NeedMore => {}
                }
            }
            if !self.first {
                match self.decoder.decode(&self.input) {
                    Ok(Some((frame, used))) => {
                        self.input.drain(..used);
                        // What is left (if anything) is the next request,
                        // begun with the bytes just read.
                        self.request_started = None;
                        self.note_input();
                        let reply = match Request::from_frame(&frame) {
                            Ok(request) => service.handle(request),
                            Err(e) => {
                                tracing::warn!("{e}");
                                e.reply()
                            }
                        };
                        if let Err(e) = attr0::encode(&reply.to_frame(), &mut self.output) {
                            tracing::error!("cannot encode a reply (a bug): {e}");
                            return Progress::Closed;
                        }
                        self.last_active = Instant::now();
                        answered += 1;
                        if answered >= REQUESTS_PER_TURN {
                            return match self.flush() {
                                Ok(_) => Progress::More,
                                Err(_) => Progress::Closed,
                            };
                        }
                        continue;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!("closing connection: {e}");
                        return Progress::Closed;
                    }
                }
            }
            if self.eof {
                if self.written < self.output.len() {
                    // Replies the client may still read: the writable
                    // event brings us back to finish them.
                    return Progress::Waiting;
                }
                if !self.input.is_empty() {
                    tracing::warn!(
                        "client closed the connection in the middle of a request ({} bytes)",
                        self.input.len()
                    );
                }
                return Progress::Closed;
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => self.eof = true,
                Ok(n) => {
                    self.input.extend_from_slice(&chunk[..n]);
                    self.note_input();
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Progress::Waiting,
                Err(e) => {
                    tracing::debug!("connection ended: {e}");
                    return Progress::Closed;
                }
            }
        }
    }

    /// Ask the poller for writability exactly while output is waiting.
    fn watch(&mut self, registry: &mio::Registry, token: Token) -> io::Result<()> {
        let pending = self.written < self.output.len();
        if pending != self.watching_writes {
            let interest = if pending { Interest::READABLE | Interest::WRITABLE } else { Interest::READABLE };
            registry.reregister(&mut self.stream, token, interest)?;
            self.watching_writes = pending;
        }
        Ok(())
    }

    /// Write pending output; true when all of it went.
    fn flush(&mut self) -> io::Result<bool> {
        while self.written < self.output.len() {
            match self.stream.write(&self.output[self.written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.written += n;
                    // A client still taking its replies is not idle.
                    self.last_active = Instant::now();
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        self.output.clear();
        self.written = 0;
        Ok(true)
    }
}

/// Connections by slot, reusing freed slots so tokens stay small.
struct Slab<T> {
    slots: Vec<Option<T>>,
    free: Vec<usize>,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab { slots: Vec::new(), free: Vec::new() }
    }
}

impl<T> Slab<T> {
    fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// The slot the next [`Slab::insert`] should use.
    fn vacant(&self) -> usize {
        self.free.last().copied().unwrap_or(self.slots.len())
    }

    /// Fill `slot`, which [`Slab::vacant`] returned.
    fn insert(&mut self, slot: usize, value: T) {
        if self.free.last() == Some(&slot) {
            self.free.pop();
        } else {
            self.slots.push(None);
        }
        self.slots[slot] = Some(value);
    }

    fn get_mut(&mut self, slot: usize) -> Option<&mut T> {
        self.slots.get_mut(slot).and_then(Option::as_mut)
    }

    fn remove(&mut self, slot: usize) -> Option<T> {
        let value = self.slots.get_mut(slot).and_then(Option::take)?;
        self.free.push(slot);
        Some(value)
    }

    fn iter(&self) -> impl Iterator<Item = (usize, &T)> {
        self.slots.iter().enumerate().filter_map(|(i, v)| v.as_ref().map(|v| (i, v)))
    }
}

/// Why a socket could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// A server already answers on the path.
    #[error("{0} is in use by a running server; stop it first")]
    InUse(PathBuf),
    /// Something other than a socket is at the path.
    #[error("{0} exists and is not a socket; refusing to replace it")]
    NotASocket(PathBuf),
    /// A system call failed.
    #[error("cannot {what} {path}: {source}")]
    Io {
        /// What was attempted.
        what: &'static str,
        /// On which path.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// Bind a listening socket at `path` with permissions `mode`, replacing a
/// stale socket file (one nobody answers on) but never a live server or a
/// file that is not a socket. The parent directory is created if missing.
///
/// # Errors
///
/// [`BindError`] saying what is in the way.
pub fn bind(path: &Path, mode: u32) -> Result<UnixListener, BindError> {
    fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> BindError + use<> {
        let path = path.to_path_buf();
        move |source| BindError::Io { what, path, source }
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        std::fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if UnixStream::connect(path).is_ok() {
                return Err(BindError::InUse(path.to_path_buf()));
            }
            std::fs::remove_file(path).map_err(io_err("remove stale socket", path))?;
        }
        Ok(_) => return Err(BindError::NotASocket(path.to_path_buf())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(BindError::Io { what: "inspect", path: path.to_path_buf(), source: e }),
    }
    let listener = UnixListener::bind(path).map_err(io_err("listen on", path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io_err("set the mode of", path))?;
    Ok(listener)
}
