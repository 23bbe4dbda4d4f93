//! A blocking tlsmgr client: connect, check the announcement, send typed
//! requests, read typed replies.
//!
//! Used by `tlskeeper client`, by the integration tests, by the load
//! generator and by the TLS-library adapters. It speaks exactly what
//! Postfix's `tls_mgr.c` speaks, so a server that satisfies it satisfies
//! Postfix's clients too.
//!
//! Waits are bounded two ways. [`Client::connect`] waits without limit to
//! connect and then [`DEFAULT_READ_TIMEOUT`] for each read, as a tool run by
//! hand wants. A client on the path of a TLS handshake must not wait that
//! long: [`Client::connect_within`] bounds the connect and the announcement
//! together, and [`Client::set_deadline`] bounds every write and read of the
//! requests that follow by what is left until one instant. Connecting a
//! UNIX socket blocks while the listener's backlog is full (a daemon that
//! has stopped accepting), so the connect itself needs the bound, not only
//! the reads: it is set as the socket's send timeout before connecting,
//! which Linux applies to a UNIX-socket connect. A nonblocking connect and
//! a poll was rejected because a full backlog makes a UNIX-socket connect
//! fail with `EAGAIN` at once instead of waiting.
//!
//! # Security
//!
//! The server is trusted to be the one configured (a UNIX socket whose
//! directory permissions the operator controls); its replies are still
//! parsed strictly. Requests and replies may carry secrets (sessions, ticket
//! plaintexts, seed bytes, ticket keys): they are held in zeroizing types,
//! and the encoded request and the consumed reply bytes are zeroized once
//! used.
//!
//! # Limitations
//!
//! One request at a time per connection, as in Postfix. A request whose
//! deadline passes halfway leaves the connection out of step (part of a
//! request sent, or a reply still to come): drop the client after any
//! error. Reply bytes that arrive past the end of a reply, which a
//! well-behaved server never sends, stay in the buffer until consumed or
//! until the client drops (which zeroizes it), and a buffer that grows
//! leaves its old allocation unzeroized.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use socket2::{Domain, SockAddr, Socket, Type};
use zeroize::{Zeroize, Zeroizing};

use crate::attr0::{self, Decoder, Frame};
use crate::tlsmgr::{ANNOUNCEMENT, Reply, ReplyError, Request};

/// How long [`Client::connect`] lets each read wait when no deadline is set.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Connecting, reading or writing failed.
    #[error("I/O error talking to the server: {0}")]
    Io(#[from] io::Error),
    /// The server closed the connection before a whole reply arrived.
    #[error("the server closed the connection")]
    Closed,
    /// The server did not announce `protocol=tlsmgr_protocol` first.
    #[error("the server's announcement is not tlsmgr_protocol")]
    BadAnnouncement,
    /// A reply could not be decoded.
    #[error("malformed reply frame: {0}")]
    Frame(#[from] attr0::FrameError),
    /// A reply frame did not have the expected attributes.
    #[error("unexpected reply: {0}")]
    Reply(#[from] ReplyError),
    /// A request could not be encoded (e.g. a NUL in a cache id).
    #[error("cannot encode the request: {0}")]
    Encode(#[from] attr0::EncodeError),
}

/// One connection to a tlsmgr-compatible server.
pub struct Client {
    stream: UnixStream,
    decoder: Decoder,
    buf: Vec<u8>,
    /// When set, every write and read waits at most until then.
    deadline: Option<Instant>,
}

impl Client {
    /// Connect to the socket at `path` and read the announcement.
    ///
    /// Connecting waits as long as the OS does; each read then waits at
    /// most [`DEFAULT_READ_TIMEOUT`], writes without limit.
    ///
    /// # Errors
    ///
    /// [`ClientError`] when the socket is unreachable or the server does not
    /// announce the tlsmgr protocol.
    pub fn connect(path: impl AsRef<Path>) -> Result<Client, ClientError> {
        let stream = UnixStream::connect(path)?;
        stream.set_read_timeout(Some(DEFAULT_READ_TIMEOUT))?;
        Self::greeted(stream, None)
    }

    /// Connect to the socket at `path` and read the announcement, all
    /// within `timeout`. The client keeps no deadline afterwards: set one
    /// with [`Client::set_deadline`] for each request.
    ///
    /// # Errors
    ///
    /// [`ClientError::Io`] of kind [`io::ErrorKind::TimedOut`] when the
    /// connect (a listener whose backlog is full) or the announcement takes
    /// longer than `timeout`; another [`ClientError`] as for
    /// [`Client::connect`].
    pub fn connect_within(path: impl AsRef<Path>, timeout: Duration) -> Result<Client, ClientError> {
        let deadline = deadline_after(Instant::now(), timeout);
        let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
        // SO_SNDTIMEO bounds a blocking connect of a UNIX socket on Linux;
        // it runs out with EAGAIN, which std reports as WouldBlock.
        socket.set_write_timeout(Some(remaining(deadline)?))?;
        socket.connect(&SockAddr::unix(path)?).map_err(timed_out)?;
        let stream = UnixStream::from(std::os::fd::OwnedFd::from(socket));
        Self::greeted(stream, Some(deadline))
    }

    /// Read and check the announcement on a fresh connection, within
    /// `deadline` if given; leaves the client without a deadline.
    fn greeted(stream: UnixStream, deadline: Option<Instant>) -> Result<Client, ClientError> {
        let mut client = Client { stream, decoder: Decoder::new(attr0::Limits::default()), buf: Vec::new(), deadline };
        let announcement = client.read_frame()?;
        let mut expected = Vec::new();
        attr0::encode(&announcement, &mut expected)?;
        if expected != ANNOUNCEMENT {
            return Err(ClientError::BadAnnouncement);
        }
        if deadline.is_some() {
            client.set_deadline(None)?;
        }
        Ok(client)
    }

    /// Bound every write and read from now on by what is left until
    /// `deadline`; `None` goes back to [`Client::connect`]'s waits (reads
    /// [`DEFAULT_READ_TIMEOUT`], writes unbounded). Once the deadline has
    /// passed, writes and reads fail with [`io::ErrorKind::TimedOut`]
    /// without touching the socket.
    ///
    /// # Errors
    ///
    /// [`ClientError::Io`] when the socket's timeouts cannot be set.
    pub fn set_deadline(&mut self, deadline: Option<Instant>) -> Result<(), ClientError> {
        self.deadline = deadline;
        if deadline.is_none() {
            self.stream.set_read_timeout(Some(DEFAULT_READ_TIMEOUT))?;
            self.stream.set_write_timeout(None)?;
        }
        Ok(())
    }

    /// The deadline set by [`Client::set_deadline`], if any.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Send `request` and read its reply.
    ///
    /// # Errors
    ///
    /// [`ClientError`].
    pub fn request(&mut self, request: &Request) -> Result<Reply, ClientError> {
        // The encoding holds the request's secrets in base64.
        let mut out = Zeroizing::new(Vec::new());
        attr0::encode(&request.to_frame(), &mut out)?;
        self.write_all(&out)?;
        let frame = self.read_frame()?;
        Ok(Reply::from_frame(request.kind(), &frame)?)
    }

    /// Send raw bytes (for tests of malformed input).
    ///
    /// # Errors
    ///
    /// [`ClientError::Io`].
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.write_all(bytes)?;
        Ok(())
    }

    /// Read one whole frame.
    ///
    /// # Errors
    ///
    /// [`ClientError::Closed`] at end of stream, or another [`ClientError`].
    pub fn read_frame(&mut self) -> Result<Frame, ClientError> {
        let mut chunk = Zeroizing::new([0u8; 4096]);
        loop {
            if let Some((frame, used)) = self.decoder.decode(&self.buf)? {
                self.buf[..used].zeroize();
                self.buf.drain(..used);
                return Ok(frame);
            }
            let n = self.read_some(&mut chunk[..])?;
            if n == 0 {
                return Err(ClientError::Closed);
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// The underlying stream (for tests that need timeouts or shutdown).
    pub fn stream(&self) -> &UnixStream {
        &self.stream
    }

    /// `write_all`, each write bounded by the deadline if there is one.
    /// With a deadline, a write to a connection the server has closed
    /// fails with `EPIPE` and raises no `SIGPIPE` (`MSG_NOSIGNAL`), so that
    /// a library using the client does not depend on its program ignoring
    /// the signal.
    fn write_all(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        let Some(deadline) = self.deadline else {
            return self.stream.write_all(bytes);
        };
        while !bytes.is_empty() {
            self.stream.set_write_timeout(Some(remaining(deadline)?))?;
            match socket2::SockRef::from(&self.stream).send_with_flags(bytes, libc::MSG_NOSIGNAL) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => bytes = &bytes[n..],
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(timed_out(e)),
            }
        }
        Ok(())
    }

    /// One read, bounded by the deadline if there is one.
    fn read_some(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(deadline) = self.deadline else {
            return self.stream.read(buf);
        };
        loop {
            self.stream.set_read_timeout(Some(remaining(deadline)?))?;
            match self.stream.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                outcome => return outcome.map_err(timed_out),
            }
        }
    }
}

impl Drop for Client {
    /// Wipe what is left of a reply: a client dropped after an error may
    /// hold part of a session or a ticket plaintext.
    fn drop(&mut self) {
        self.buf.zeroize();
    }
}

/// The time left until `deadline`, or [`io::ErrorKind::TimedOut`] once it
/// has passed (a zero timeout would mean "no timeout" to the OS).
/// `now + wait`, or a century from now when that sum does not fit in an
/// [`Instant`]: a caller's `Duration::MAX` means "no limit", and must not
/// panic the way `Instant + Duration` does on overflow.
pub fn deadline_after(now: Instant, wait: Duration) -> Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    now.checked_add(wait).or_else(|| now.checked_add(CENTURY)).unwrap_or(now)
}

fn remaining(deadline: Instant) -> io::Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() { Err(io::Error::new(io::ErrorKind::TimedOut, "deadline passed")) } else { Ok(left) }
}

/// A socket timeout as what it is: the OS reports one as `EAGAIN`
/// ([`io::ErrorKind::WouldBlock`]) on a blocking socket.
fn timed_out(e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::WouldBlock { io::Error::new(io::ErrorKind::TimedOut, e) } else { e }
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixListener;
    use std::thread;

    use super::*;

    /// How long the bounded waits below are given, and the most any of them
    /// may take beyond it on a loaded machine.
    const BOUND: Duration = Duration::from_millis(200);
    const SLACK: Duration = Duration::from_secs(2);

    fn socket_path(dir: &tempfile::TempDir) -> std::path::PathBuf {
        dir.path().join("tlsmgr")
    }

    fn assert_timed_out(outcome: Result<impl Sized, ClientError>, started: Instant, what: &str) {
        let waited = started.elapsed();
        match outcome {
            Err(ClientError::Io(e)) if e.kind() == io::ErrorKind::TimedOut => {}
            Err(e) => panic!("{what}: {e} instead of a timeout"),
            Ok(_) => panic!("{what}: succeeded"),
        }
        assert!(waited >= BOUND - Duration::from_millis(20), "{what}: gave up early, after {waited:?}");
        assert!(waited < BOUND + SLACK, "{what}: waited {waited:?}");
    }

    /// A listener that announces the protocol on every connection and then
    /// reads requests without ever answering; holds each connection open.
    fn mute_server(path: &Path) {
        let listener = UnixListener::bind(path).unwrap();
        thread::spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming() {
                let mut stream = stream.unwrap();
                stream.write_all(ANNOUNCEMENT).unwrap();
                held.push(stream);
            }
        });
    }

    #[test]
    fn connecting_to_a_listener_whose_backlog_is_full_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = socket_path(&dir);
        let listener = Socket::new(Domain::UNIX, Type::STREAM, None).unwrap();
        listener.bind(&SockAddr::unix(&path).unwrap()).unwrap();
        listener.listen(0).unwrap();
        // Fill the backlog: nonblocking connects succeed until it is full.
        let mut queued = Vec::new();
        loop {
            let s = Socket::new(Domain::UNIX, Type::STREAM, None).unwrap();
            s.set_nonblocking(true).unwrap();
            match s.connect(&SockAddr::unix(&path).unwrap()) {
                Ok(()) => queued.push(s),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("filling the backlog: {e}"),
            }
            assert!(queued.len() < 64, "the backlog never filled");
        }
        let started = Instant::now();
        assert_timed_out(Client::connect_within(&path, BOUND), started, "connect to a full backlog");
        drop(listener);
    }

    #[test]
    fn a_listener_that_accepts_but_never_announces_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = socket_path(&dir);
        let listener = UnixListener::bind(&path).unwrap();
        let holder = thread::spawn(move || listener.accept().map(|(stream, _)| stream));
        let started = Instant::now();
        assert_timed_out(Client::connect_within(&path, BOUND), started, "no announcement");
        drop(holder.join().unwrap());
    }

    #[test]
    fn a_request_that_gets_no_reply_times_out_at_its_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let path = socket_path(&dir);
        mute_server(&path);
        let mut client = Client::connect_within(&path, BOUND).unwrap();
        assert_eq!(client.deadline(), None, "the connect's bound is not kept");
        let started = Instant::now();
        client.set_deadline(Some(started + BOUND)).unwrap();
        assert_timed_out(client.request(&Request::Seed { size: 32 }), started, "no reply");

        // Past its deadline a request fails at once, without I/O.
        let mut client = Client::connect_within(&path, BOUND).unwrap();
        client.set_deadline(Some(Instant::now())).unwrap();
        let started = Instant::now();
        match client.request(&Request::Policy { cache_type: "smtpd".into() }) {
            Err(ClientError::Io(e)) if e.kind() == io::ErrorKind::TimedOut => {}
            other => panic!("past the deadline: {other:?}"),
        }
        assert!(started.elapsed() < Duration::from_millis(50));
    }

    #[test]
    fn without_a_deadline_the_default_waits_are_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = socket_path(&dir);
        mute_server(&path);
        let mut client = Client::connect_within(&path, BOUND).unwrap();
        client.set_deadline(Some(Instant::now() + BOUND)).unwrap();
        client.set_deadline(None).unwrap();
        assert_eq!(client.stream().read_timeout().unwrap(), Some(DEFAULT_READ_TIMEOUT));
        assert_eq!(client.stream().write_timeout().unwrap(), None);
        let plain = Client::connect(&path).unwrap();
        assert_eq!(plain.stream().read_timeout().unwrap(), Some(DEFAULT_READ_TIMEOUT));
        assert_eq!(plain.deadline(), None);
    }
}
