//! A connected local log socket that never blocks the logging thread.
//!
//! Both destinations are UNIX-domain sockets named by a path: syslogd's
//! `/dev/log` and postlogd(8)'s `public/postlog`. The socket is connected
//! when the sink is configured, which is before chroot(2), and kept: after
//! chroot the path may not resolve any more. When a send fails the socket is
//! reconnected once by path and the record sent again, as glibc's syslog(3)
//! does; if that fails too the record is dropped and the next record tries
//! to connect afresh.
//!
//! Sends are non-blocking. glibc and Postfix block when the reader falls
//! behind; a daemon that answers TLS clients must not stall because syslogd
//! does, so a full queue (`EAGAIN`, or `ENOBUFS` on the BSDs) drops the
//! record instead.

use std::io::{self, Write};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};

/// What a send attempt did.
enum Sent {
    /// The whole record went out.
    Done,
    /// The reader is behind; the record is dropped, the connection kept.
    Full,
    /// The connection is gone (reader restarted, socket removed); reconnect.
    Broken,
    /// A stream took part of the record: the framing is lost, so the
    /// connection is closed and the record not repeated (the reader saw a
    /// torn record; sending it again would show it twice).
    Torn,
}

enum Connection {
    Datagram(UnixDatagram),
    /// syslog(3)'s fallback when `/dev/log` is a stream socket: records end
    /// with a NUL byte, as glibc frames them.
    Stream(UnixStream),
}

/// A log socket: its path, and the connection when there is one.
pub(super) struct LogSocket {
    path: PathBuf,
    stream_fallback: bool,
    connection: Option<Connection>,
}

impl LogSocket {
    /// A socket for `path`, connected now if possible. `stream_fallback`
    /// allows a SOCK_STREAM connection when the path is a stream socket
    /// (syslog only: postlogd is datagram-only).
    pub(super) fn open(path: &Path, stream_fallback: bool) -> Self {
        let mut socket = LogSocket { path: path.to_owned(), stream_fallback, connection: None };
        socket.connect();
        socket
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    pub(super) fn is_connected(&self) -> bool {
        self.connection.is_some()
    }

    /// Drop any connection and connect anew by path. Failure leaves the
    /// socket unconnected; it is not an error, because syslog(3) and Postfix
    /// treat an absent log service the same way: drop, retry next time.
    fn connect(&mut self) -> bool {
        self.connection = None;
        let datagram = UnixDatagram::unbound().and_then(|s| {
            s.connect(&self.path)?;
            s.set_nonblocking(true)?;
            Ok(s)
        });
        self.connection = match datagram {
            Ok(s) => Some(Connection::Datagram(s)),
            // EPROTOTYPE: the path is a stream socket. glibc then retries
            // with SOCK_STREAM.
            Err(e) if self.stream_fallback && e.raw_os_error() == Some(libc::EPROTOTYPE) => {
                // A UNIX stream connect can wait for a full listen backlog;
                // accepted (see the module's Limitations) rather than adding
                // a hand-written non-blocking connect for a rare setup.
                UnixStream::connect(&self.path)
                    .and_then(|s| {
                        s.set_nonblocking(true)?;
                        Ok(s)
                    })
                    .ok()
                    .map(Connection::Stream)
            }
            Err(_) => None,
        };
        self.connection.is_some()
    }

    /// Send one record; true if it was delivered. Never blocks (beyond a
    /// connect, see [`LogSocket::connect`]) and never fails: a record that
    /// cannot be delivered is dropped.
    pub(super) fn send(&mut self, record: &[u8]) -> bool {
        if self.connection.is_none() && !self.connect() {
            return false;
        }
        match self.try_send(record) {
            Sent::Done => return true,
            Sent::Full => return false,
            Sent::Torn => {
                self.connection = None;
                return false;
            }
            Sent::Broken => {}
        }
        // One reconnect: syslogd or postlogd may have been restarted and
        // recreated its socket.
        if !self.connect() {
            return false;
        }
        match self.try_send(record) {
            Sent::Done => true,
            Sent::Full => false,
            Sent::Broken | Sent::Torn => {
                self.connection = None;
                false
            }
        }
    }

    fn try_send(&mut self, record: &[u8]) -> Sent {
        let Some(connection) = &mut self.connection else {
            return Sent::Broken;
        };
        loop {
            let result = match connection {
                Connection::Datagram(s) => s.send(record).map(|_| true),
                Connection::Stream(s) => {
                    let mut framed = Vec::with_capacity(record.len() + 1);
                    framed.extend_from_slice(record);
                    framed.push(0);
                    // Rust ignores SIGPIPE, so a closed reader is EPIPE here,
                    // not a signal.
                    s.write(&framed).map(|n| n == framed.len())
                }
            };
            return match result {
                Ok(true) => Sent::Done,
                Ok(false) => Sent::Torn,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.raw_os_error() == Some(libc::ENOBUFS) => {
                    Sent::Full
                }
                Err(_) => Sent::Broken,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::os::unix::net::UnixListener;
    use std::sync::mpsc;
    use std::thread;
    use std::time::{Duration, Instant};

    use super::*;

    fn receiver(path: &Path) -> UnixDatagram {
        let r = UnixDatagram::bind(path).unwrap();
        r.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        r
    }

    fn recv(r: &UnixDatagram) -> Vec<u8> {
        let mut buf = vec![0; 8192];
        let n = r.recv(&mut buf).unwrap();
        buf.truncate(n);
        buf
    }

    #[test]
    fn sends_datagrams() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let r = receiver(&path);
        let mut socket = LogSocket::open(&path, false);
        assert!(socket.is_connected());
        assert!(socket.send(b"one"));
        assert!(socket.send(b"two"));
        assert_eq!(recv(&r), b"one");
        assert_eq!(recv(&r), b"two");
    }

    #[test]
    fn no_listener_drops_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        // A socket file whose reader has gone: connect gets ECONNREFUSED.
        let stale = dir.path().join("stale");
        drop(UnixDatagram::bind(&stale).unwrap());
        // Not a socket at all.
        let plain = dir.path().join("plain");
        std::fs::write(&plain, b"").unwrap();
        let started = Instant::now();
        for path in [&missing, &stale, &plain] {
            for fallback in [false, true] {
                let mut socket = LogSocket::open(path, fallback);
                assert!(!socket.is_connected());
                for _ in 0..100 {
                    assert!(!socket.send(b"lost"));
                }
            }
        }
        assert!(started.elapsed() < Duration::from_secs(5));
        // The reader appears: the next record connects.
        let r = receiver(&missing);
        let mut socket = LogSocket::open(&missing, false);
        assert!(socket.send(b"found"));
        assert_eq!(recv(&r), b"found");
    }

    #[test]
    fn full_queue_drops_instead_of_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let r = receiver(&path); // never read until the end
        let (done, finished) = mpsc::channel();
        let sender_path = path.clone();
        thread::spawn(move || {
            let mut socket = LogSocket::open(&sender_path, false);
            let delivered = (0..20_000).filter(|_| socket.send(&[b'x'; 1500])).count();
            done.send((delivered, socket.is_connected())).unwrap();
        });
        let (delivered, connected) = finished.recv_timeout(Duration::from_secs(30)).expect("a send blocked");
        assert!(delivered > 0 && delivered < 20_000, "{delivered}");
        // Dropping for a full queue keeps the connection.
        assert!(connected);
        assert_eq!(recv(&r).len(), 1500);
    }

    #[test]
    fn reconnects_once_when_the_reader_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let first = receiver(&path);
        let mut socket = LogSocket::open(&path, false);
        assert!(socket.send(b"before"));
        assert_eq!(recv(&first), b"before");
        // syslogd restarts: old socket closed, path recreated.
        drop(first);
        std::fs::remove_file(&path).unwrap();
        let second = receiver(&path);
        assert!(socket.send(b"after"));
        assert_eq!(recv(&second), b"after");
    }

    #[test]
    fn stream_socket_gets_nul_terminated_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let listener = UnixListener::bind(&path).unwrap();
        // Postlog is datagram-only.
        assert!(!LogSocket::open(&path, false).is_connected());
        let mut socket = LogSocket::open(&path, true);
        assert!(socket.is_connected());
        assert!(socket.send(b"one"));
        assert!(socket.send(b"two"));
        let (mut conn, _) = listener.accept().unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut got = vec![0; 8];
        conn.read_exact(&mut got).unwrap();
        assert_eq!(got, b"one\0two\0");
        // The reader goes away: sends fail, the reconnect fails, no panic.
        drop(conn);
        drop(listener);
        std::fs::remove_file(&path).unwrap();
        for _ in 0..3 {
            assert!(!socket.send(b"lost"));
        }
    }
}
