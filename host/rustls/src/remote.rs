//! A pool of connections to one tlskeeper daemon, with every wait bounded:
//! [`Remote`] sends a request on an idle connection or a new one and gives
//! up after [`RemoteOptions::timeout`].
//!
//! The rules that bound every wait, and the bound they give a handshake,
//! are on [`Remote`] itself, where rustdoc shows them.
//!
//! # Security
//!
//! The daemon at the socket is trusted: it is the one the operator
//! configured, behind a directory whose permissions decide who may connect.
//! Its replies are parsed strictly by [`tlskeeper_protocol::client`]. Requests carry
//! secrets (ticket plaintexts, session values) and replies carry them back;
//! they are held in zeroizing types and never logged. This module holds no
//! key.
//!
//! # Limitations
//!
//! Blocking: a request holds its calling thread for up to the timeout.
//! Idle connections are not checked before use; a dead one costs the retry
//! (a fast failure, since the peer has closed).

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tlskeeper_protocol::{
    client::{Client, ClientError, deadline_after},
    tlsmgr,
};

/// Most requests an ordinary rustls handshake makes (one TLS 1.3 ticket
/// sent); [`Remote`]'s docs list the exceptions.
pub const REQUESTS_PER_HANDSHAKE: u32 = 2;

/// How a [`Remote`] waits and pools.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteOptions {
    /// The longest one request may take, connecting and the one retry on a
    /// fresh connection included.
    pub timeout: Duration,
    /// After a failure, how long requests fail at once before the daemon is
    /// tried again.
    pub retry_after: Duration,
    /// Most idle connections kept for reuse; more are closed.
    pub max_idle: usize,
}

impl Default for RemoteOptions {
    fn default() -> Self {
        RemoteOptions { timeout: Duration::from_millis(250), retry_after: Duration::from_secs(1), max_idle: 16 }
    }
}

impl RemoteOptions {
    /// The longest an ordinary handshake waits for the daemon:
    /// [`REQUESTS_PER_HANDSHAKE`] times the timeout (a daemon that fails
    /// rather than answers slowly costs at most one timeout).
    pub fn handshake_bound(&self) -> Duration {
        self.timeout.saturating_mul(REQUESTS_PER_HANDSHAKE)
    }
}

/// Why a request to the daemon got no reply.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// A recent failure: requests fail at once until the backoff ends.
    #[error("the tlskeeper daemon failed recently; trying again in {0:?}")]
    Backoff(Duration),
    /// The socket could not be connected to, or did not announce the
    /// tlsmgr protocol, within the timeout.
    #[error("cannot connect to the tlskeeper daemon at {path}: {source}")]
    Connect {
        /// The daemon's socket.
        path: PathBuf,
        /// What failed.
        #[source]
        source: ClientError,
    },
    /// No whole reply came within the timeout.
    #[error("the tlskeeper daemon did not answer within {0:?}")]
    TimedOut(Duration),
    /// The connection failed during the request: closed by the daemon, or a
    /// reply that is not what the request expects.
    #[error("the request to the tlskeeper daemon failed: {0}")]
    Exchange(#[source] ClientError),
}

/// Connections to one daemon socket; shared by every handshake of a
/// process (put it behind an `Arc`, as [`crate::Backend`] does).
///
/// A rustls server calls its session store and ticketer in the middle of a
/// handshake, synchronously, so the daemon's answer is on the handshake's
/// path. The rules that keep it short:
///
/// - **One deadline per request.** Connecting, sending and reading the reply
///   together get [`RemoteOptions::timeout`] (250 ms by default), the retry
///   below included. A daemon that is slow is treated as one that is away.
/// - **A stale connection is retried once.** A pooled connection may have
///   been closed by the daemon since it was last used (the daemon's idle
///   timeout, a restart); when one fails without timing out, the request is
///   sent once more on a fresh connection, within the same deadline.
/// - **Backoff.** After a timeout, or a failure on a fresh connection (the
///   daemon refuses connections, or answers nonsense), requests fail at
///   once for [`RemoteOptions::retry_after`] (1 s), and the idle connections
///   are dropped. After that one request, the probe, is let through while
///   the others still fail at once: if it succeeds the daemon is back (no
///   restart of anything needed), if it fails the backoff starts again.
///   Without it, a hung daemon would cost every handshake the whole
///   timeout.
///
/// **The bound.** A request waits at most the timeout. A daemon that
/// fails (away, hung, refusing connections) costs a handshake at most one
/// timeout: its first failure starts the backoff, and the handshake's later
/// requests fail at once. A daemon that answers, but slowly, can cost each
/// answered request up to the timeout; an ordinary handshake makes at most
/// [`REQUESTS_PER_HANDSHAKE`] requests (TLS 1.3 with one ticket sent: open
/// the offered ticket, seal the next; TLS 1.2: store the session and seal
/// its ticket, or one lookup or open to resume). So a handshake waits at
/// most [`RemoteOptions::handshake_bound`], twice the timeout (500 ms by
/// default), whatever the daemon does. Beyond that bound, and only against
/// a slow daemon: each further TLS 1.3 ticket sent adds a request, a TLS 1.2
/// client offering a session id that misses while tickets are on makes
/// three (lookup, store, seal), and a TLS 1.3 client offering several
/// tickets makes one open for each.
pub struct Remote {
    path: PathBuf,
    options: RemoteOptions,
    idle: Mutex<Vec<Client>>,
    breaker: Mutex<Breaker>,
    connects: AtomicU64,
}

/// The backoff state.
#[derive(Default)]
struct Breaker {
    /// Requests fail at once until then.
    until: Option<Instant>,
}

/// Whether a request may go ahead, and as what.
enum Admission {
    /// The daemon is believed to be up.
    Normal,
    /// The backoff has just ended: this request finds out whether the
    /// daemon is back.
    Probe,
}

impl Remote {
    /// A pool for the daemon at `path`; connects lazily, at the first
    /// request.
    pub fn new(path: impl Into<PathBuf>, options: RemoteOptions) -> Remote {
        Remote {
            path: path.into(),
            options,
            idle: Mutex::new(Vec::new()),
            breaker: Mutex::new(Breaker::default()),
            connects: AtomicU64::new(0),
        }
    }

    /// The daemon's socket.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The options it was made with.
    pub fn options(&self) -> &RemoteOptions {
        &self.options
    }

    /// How many connections it has opened so far (successful or not): with
    /// a healthy daemon, at most the number of concurrent requests.
    pub fn connects(&self) -> u64 {
        self.connects.load(Ordering::Relaxed)
    }

    /// Send `request` and read its reply, within the timeout.
    ///
    /// # Errors
    ///
    /// [`RemoteError`]; any error but [`RemoteError::Backoff`] on a fresh
    /// connection, and a timeout on any, starts the backoff.
    pub fn request(&self, request: &tlsmgr::Request) -> Result<tlsmgr::Reply, RemoteError> {
        let started = Instant::now();
        let admission = self.admit(started)?;
        let deadline = deadline_after(started, self.options.timeout);
        if let Some(client) = self.checkout() {
            match self.exchange(client, request, deadline) {
                Ok(reply) => return Ok(self.succeeded(admission, reply)),
                Err(timeout @ RemoteError::TimedOut(_)) => return Err(self.failed(timeout)),
                // Closed or broken since it was pooled: once more, fresh.
                Err(_stale) => {}
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        self.connects.fetch_add(1, Ordering::Relaxed);
        let client = match Client::connect_within(&self.path, left) {
            Ok(client) => client,
            Err(source) => return Err(self.failed(RemoteError::Connect { path: self.path.clone(), source })),
        };
        match self.exchange(client, request, deadline) {
            Ok(reply) => Ok(self.succeeded(admission, reply)),
            Err(e) => Err(self.failed(e)),
        }
    }

    /// Fail at once during a backoff; let one probe through when it ends.
    fn admit(&self, now: Instant) -> Result<Admission, RemoteError> {
        let mut breaker = lock(&self.breaker);
        match breaker.until {
            None => Ok(Admission::Normal),
            Some(until) if now < until => Err(RemoteError::Backoff(until - now)),
            Some(_) => {
                // Hold the others back for as long as the probe may take.
                breaker.until = Some(deadline_after(now, self.options.timeout));
                Ok(Admission::Probe)
            }
        }
    }

    fn succeeded(&self, admission: Admission, reply: tlsmgr::Reply) -> tlsmgr::Reply {
        if let Admission::Probe = admission {
            lock(&self.breaker).until = None;
        }
        reply
    }

    /// Start (or restart) the backoff and forget the idle connections, which
    /// lead to a daemon that has just failed.
    fn failed(&self, error: RemoteError) -> RemoteError {
        lock(&self.breaker).until = Some(deadline_after(Instant::now(), self.options.retry_after));
        lock(&self.idle).clear();
        error
    }

    /// One request on `client`, which goes back to the pool if it is
    /// answered and is dropped otherwise (it may be out of step).
    fn exchange(
        &self,
        mut client: Client,
        request: &tlsmgr::Request,
        deadline: Instant,
    ) -> Result<tlsmgr::Reply, RemoteError> {
        let outcome = client.set_deadline(Some(deadline)).and_then(|()| client.request(request));
        match outcome {
            Ok(reply) => {
                self.checkin(client);
                Ok(reply)
            }
            Err(ClientError::Io(e)) if e.kind() == std::io::ErrorKind::TimedOut => {
                Err(RemoteError::TimedOut(self.options.timeout))
            }
            Err(e) => Err(RemoteError::Exchange(e)),
        }
    }

    fn checkout(&self) -> Option<Client> {
        lock(&self.idle).pop()
    }

    fn checkin(&self, client: Client) {
        let mut idle = lock(&self.idle);
        if idle.len() < self.options.max_idle {
            idle.push(client);
        }
    }
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("path", &self.path)
            .field("options", &self.options)
            .field("idle", &lock(&self.idle).len())
            .finish_non_exhaustive()
    }
}

/// A poisoned lock only means that a panic elsewhere interrupted a push or
/// a pop; the pool and the backoff state are still usable.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixListener;
    use std::thread;

    use super::*;
    use crate::testing::Daemon;
    use tlsmgr::{ANNOUNCEMENT, Reply, Request, Status};

    fn fast() -> RemoteOptions {
        RemoteOptions { timeout: Duration::from_millis(200), retry_after: Duration::from_millis(600), max_idle: 4 }
    }

    fn seed() -> Request {
        Request::Seed { size: 16 }
    }

    fn assert_seeded(outcome: Result<Reply, RemoteError>) {
        match outcome {
            Ok(Reply::Seed { status: Status::Ok, seed }) => assert_eq!(seed.len(), 16),
            other => panic!("{other:?}"),
        }
    }

    /// A listener that accepts, announces the protocol, and never answers.
    fn mute_daemon(path: &Path) -> thread::JoinHandle<()> {
        let listener = UnixListener::bind(path).unwrap();
        thread::spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                if stream.write_all(ANNOUNCEMENT).is_err() {
                    return;
                }
                // Read the request so that it is really sent, then sit.
                let mut buf = [0u8; 256];
                let _ = stream.read(&mut buf);
                held.push(stream);
            }
        })
    }

    /// Proves that sequential requests share one connection, and that the
    /// pool keeps no more than `max_idle` of those concurrent requests opened.
    #[test]
    fn sequential_requests_reuse_one_connection() {
        let daemon = Daemon::start();
        let remote = Remote::new(daemon.socket(), fast());
        for _ in 0..50 {
            assert_seeded(remote.request(&seed()));
        }
        assert_eq!(remote.connects(), 1, "fifty requests, one connection");

        // Eight at once need up to eight connections; four stay idle.
        thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..20 {
                        assert_seeded(remote.request(&seed()));
                    }
                });
            }
        });
        assert!(remote.connects() <= 9, "{} connections for 8 threads", remote.connects());
        assert!(lock(&remote.idle).len() <= 4);
    }

    /// Proves that a pooled connection the daemon has closed (a restart) is
    /// retried once on a fresh one: the request succeeds, with no backoff.
    #[test]
    fn a_stale_pooled_connection_is_retried_on_a_fresh_one() {
        let mut daemon = Daemon::start();
        let remote = Remote::new(daemon.socket(), fast());
        assert_seeded(remote.request(&seed()));
        assert_eq!(lock(&remote.idle).len(), 1);
        daemon.restart();
        assert_seeded(remote.request(&seed()));
        assert_eq!(remote.connects(), 2, "the stale connection was replaced once");
        assert!(lock(&remote.breaker).until.is_none(), "no backoff for a stale connection");
    }

    /// Proves a request to a daemon that accepts but never answers gives up
    /// at the timeout, that requests then fail at once during the backoff,
    /// and that the daemon is used again once the backoff is over.
    #[test]
    fn a_timeout_starts_a_backoff_that_ends_when_the_daemon_is_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tlsmgr");
        let options = fast();
        let _mute = mute_daemon(&path);
        let remote = Remote::new(&path, options);

        let started = Instant::now();
        assert!(matches!(remote.request(&seed()), Err(RemoteError::TimedOut(_))));
        let waited = started.elapsed();
        assert!(waited >= options.timeout - Duration::from_millis(20), "gave up early: {waited:?}");
        assert!(waited < options.timeout + Duration::from_secs(1), "waited {waited:?}");

        let started = Instant::now();
        for _ in 0..100 {
            assert!(matches!(remote.request(&seed()), Err(RemoteError::Backoff(_))));
        }
        assert!(started.elapsed() < Duration::from_millis(100), "backoff failures are immediate");
        assert_eq!(remote.connects(), 1, "nothing was tried during the backoff");

        // The real daemon takes the socket's place; after the backoff the
        // first request finds it.
        std::fs::remove_file(&path).unwrap();
        let daemon = Daemon::start_at(&path);
        assert!(matches!(remote.request(&seed()), Err(RemoteError::Backoff(_))), "still backing off");
        thread::sleep(options.retry_after);
        assert_seeded(remote.request(&seed()));
        assert_seeded(remote.request(&seed()));
        assert_eq!(remote.connects(), 2);
        drop(daemon);
    }

    /// Proves that a socket nobody listens on fails fast and backs off, and
    /// that during a probe the other requests still fail at once.
    #[test]
    fn an_absent_daemon_fails_fast_and_one_probe_goes_through() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tlsmgr");
        let options = fast();
        let remote = Remote::new(&path, options);
        let started = Instant::now();
        assert!(matches!(remote.request(&seed()), Err(RemoteError::Connect { .. })));
        assert!(started.elapsed() < Duration::from_millis(100));
        assert!(matches!(remote.request(&seed()), Err(RemoteError::Backoff(_))));

        // A hung daemon: the probe waits out the timeout, the others do not.
        let _mute = mute_daemon(&path);
        thread::sleep(options.retry_after);
        thread::scope(|s| {
            let probe = s.spawn(|| remote.request(&seed()));
            thread::sleep(Duration::from_millis(50));
            let started = Instant::now();
            assert!(matches!(remote.request(&seed()), Err(RemoteError::Backoff(_))), "held back behind the probe");
            assert!(started.elapsed() < Duration::from_millis(50));
            assert!(matches!(probe.join().unwrap(), Err(RemoteError::TimedOut(_))));
        });
        assert!(matches!(remote.request(&seed()), Err(RemoteError::Backoff(_))), "the failed probe backs off again");
    }
}
