//! The UNIX-socket server: accept connections, speak attr0, hand each
//! request to the [`Service`].
//!
//! One thread per connection, blocking I/O. Postfix keeps a handful of
//! long-lived connections per process (one per smtpd/smtp), and each request
//! waits on the single core anyway, so an async runtime would add machinery
//! without adding throughput. Per connection:
//!
//! 1. send the announcement (`protocol=tlsmgr_protocol`);
//! 2. if the first bytes are master(8)'s wakeup `W\0`, close;
//! 3. otherwise loop: read, decode whole frames, parse each into a
//!    [`Request`], answer it; a request that does not parse gets the failure
//!    reply tlsmgr's client expects, a frame that cannot be decoded (over a
//!    limit) ends the connection.
//!
//! # Security
//!
//! Every byte from a client is untrusted. Frames are bounded by
//! [`attr0::Limits`]; a connection idle past the timeout is closed; the
//! number of connections is capped and the cap logged when reached. A bad
//! client affects only its own connection.
//!
//! # Limitations
//!
//! A thread per connection costs a stack each (small, 256 KiB reserved);
//! tens of thousands of idle connections would want an event loop.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::Shutdown as SocketShutdown;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::Duration;

use crate::protocol::attr0::{self, Decoder};
use crate::protocol::tlsmgr::{self, Prefix, Request};
use crate::service::Service;
use crate::shutdown::{Shutdown, poll_readable};

/// Connection handling settings.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Most connections served at once; more are closed on accept.
    pub max_connections: usize,
    /// A connection with no request for this long is closed. Postfix clients
    /// close idle connections after `ipc_idle` (5 s) themselves.
    pub idle_timeout: Duration,
    /// Frame limits.
    pub limits: attr0::Limits,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            max_connections: 1024,
            idle_timeout: Duration::from_secs(300),
            limits: attr0::Limits::default(),
        }
    }
}

/// Stack reserved per connection thread: the loop needs little, and 1000
/// idle connections should not reserve 2 GiB of address space.
const CONNECTION_STACK: usize = 256 * 1024;
/// Bytes read per `read` call.
const READ_CHUNK: usize = 16 * 1024;

/// The open connections, so that shutdown can end them: a connection
/// thread blocked in `read` would otherwise keep the daemon alive until its
/// client leaves or the idle timeout passes.
#[derive(Default)]
struct Connections {
    next_id: AtomicU64,
    open: Mutex<BTreeMap<u64, UnixStream>>,
}

impl Connections {
    fn len(&self) -> usize {
        self.open.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// Remember a handle on `stream`; the guard forgets it when dropped.
    fn register(self: &Arc<Self>, stream: &UnixStream) -> io::Result<Registered> {
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        let handle = stream.try_clone()?;
        self.open.lock().unwrap_or_else(PoisonError::into_inner).insert(id, handle);
        Ok(Registered { connections: Arc::clone(self), id })
    }

    /// Shut down every open connection: blocked reads return end-of-file.
    fn close_all(&self) {
        for stream in self.open.lock().unwrap_or_else(PoisonError::into_inner).values() {
            let _ = stream.shutdown(SocketShutdown::Both);
        }
    }
}

/// Removes a connection from [`Connections`] when its thread ends, however
/// it ends.
struct Registered {
    connections: Arc<Connections>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.connections.open.lock().unwrap_or_else(PoisonError::into_inner).remove(&self.id);
    }
}

/// Accept and serve connections on every listener until `shutdown` fires.
/// On the way out every open connection is shut down, so that its thread
/// ends and drops its handle on the core.
///
/// The listeners are switched to non-blocking mode and watched with `poll`
/// together with the shutdown pipe: a blocking `accept` could not notice a
/// shutdown, and master(8) hands its listening socket over non-blocking
/// anyway (it shares the open file description, so leaving it non-blocking
/// is also what master expects).
///
/// # Errors
///
/// Only when waiting for connections fails in a way that will not recover.
pub fn serve(
    listeners: &[UnixListener],
    service: &Service,
    settings: &ServerSettings,
    shutdown: &Shutdown,
) -> io::Result<()> {
    for listener in listeners {
        listener.set_nonblocking(true)?;
    }
    let connections = Arc::new(Connections::default());
    let mut refused_logged = false;
    let mut fds: Vec<BorrowedFd<'_>> = listeners.iter().map(AsFd::as_fd).collect();
    fds.push(shutdown.fd());
    // Checked before the first wait too: a signal may have arrived while the
    // daemon was starting.
    while !shutdown.is_triggered() {
        let ready = poll_readable(&fds, None)?;
        if shutdown.is_triggered() {
            break;
        }
        for (listener, revents) in listeners.iter().zip(&ready) {
            if *revents == 0 {
                continue;
            }
            // Drain the backlog: several clients may be waiting.
            loop {
                let stream = match listener.accept() {
                    Ok((s, _)) => s,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if matches!(e.kind(), io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted) => {
                        continue;
                    }
                    Err(e) => {
                        // EMFILE and friends: back off briefly rather than spin.
                        tracing::warn!("accept failed: {e}");
                        thread::sleep(Duration::from_millis(100));
                        break;
                    }
                };
                if connections.len() >= settings.max_connections {
                    if !refused_logged {
                        tracing::warn!(
                            "connection limit of {} reached; refusing new connections until some close",
                            settings.max_connections
                        );
                        refused_logged = true;
                    }
                    drop(stream);
                    continue;
                }
                refused_logged = false;
                start_connection(stream, &connections, service, settings);
            }
        }
    }
    connections.close_all();
    Ok(())
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

/// Serve `stream` on a thread of its own.
fn start_connection(stream: UnixStream, connections: &Arc<Connections>, service: &Service, settings: &ServerSettings) {
    // Accepted sockets do not inherit O_NONBLOCK on Linux; set it plainly
    // anyway, since the connection loop relies on blocking reads with a
    // timeout.
    if let Err(e) = stream.set_nonblocking(false) {
        tracing::warn!("cannot set up a new connection: {e}");
        return;
    }
    let registered = match connections.register(&stream) {
        Ok(registered) => registered,
        Err(e) => {
            tracing::warn!("cannot track a new connection: {e}");
            return;
        }
    };
    let service = service.clone();
    let settings = settings.clone();
    let spawned = thread::Builder::new().name("tlskeeper-conn".into()).stack_size(CONNECTION_STACK).spawn(move || {
        let _registered = registered;
        if let Err(e) = connection(stream, &service, &settings) {
            tracing::debug!("connection ended: {e}");
        }
    });
    if let Err(e) = spawned {
        tracing::warn!("cannot start a connection thread: {e}");
    }
}

/// Serve one connection until the client closes it or misbehaves.
fn connection(mut stream: UnixStream, service: &Service, settings: &ServerSettings) -> io::Result<()> {
    stream.set_read_timeout(Some(settings.idle_timeout))?;
    stream.set_write_timeout(Some(settings.idle_timeout))?;
    stream.write_all(tlsmgr::ANNOUNCEMENT)?;

    let mut decoder = Decoder::new(settings.limits);
    let mut buf: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    let mut out: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    let mut chunk = vec![0u8; READ_CHUNK];
    let mut first = true;
    loop {
        if first {
            match tlsmgr::wakeup_prefix(&buf) {
                Prefix::Wakeup => return Ok(()), // master(8) trigger: just close
                Prefix::NotWakeup => first = false,
                Prefix::NeedMore => {}
            }
        }
        if !first {
            // Answer every whole frame already buffered.
            loop {
                match decoder.decode(&buf) {
                    Ok(Some((frame, used))) => {
                        buf.drain(..used);
                        let reply = match Request::from_frame(&frame) {
                            Ok(request) => service.handle(request),
                            Err(e) => {
                                tracing::warn!("{e}");
                                e.reply()
                            }
                        };
                        out.clear();
                        if let Err(e) = attr0::encode(&reply.to_frame(), &mut out) {
                            tracing::error!("cannot encode a reply (a bug): {e}");
                            return Ok(());
                        }
                        stream.write_all(&out)?;
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!("closing connection: {e}");
                        return Ok(());
                    }
                }
            }
        }
        let n = match stream.read(&mut chunk) {
            Ok(0) => {
                if !buf.is_empty() {
                    tracing::warn!("client closed the connection in the middle of a request ({} bytes)", buf.len());
                }
                return Ok(());
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                tracing::debug!("closing idle connection");
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        buf.extend_from_slice(&chunk[..n]);
    }
}
