//! A blocking tlsmgr client: connect, check the announcement, send typed
//! requests, read typed replies.
//!
//! Used by `tlskeeper client`, by the integration tests and by the load
//! generator. It speaks exactly what Postfix's `tls_mgr.c` speaks, so a
//! server that satisfies it satisfies Postfix's clients too.
//!
//! # Security
//!
//! The server is trusted to be the one configured (a UNIX socket whose
//! directory permissions the operator controls); its replies are still
//! parsed strictly. Replies may carry secrets (seed bytes, ticket keys) and
//! are held in zeroizing types.
//!
//! # Limitations
//!
//! One request at a time per connection, as in Postfix.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use crate::attr0::{self, Decoder, Frame};
use crate::tlsmgr::{ANNOUNCEMENT, Reply, ReplyError, Request};

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
}

impl Client {
    /// Connect to the socket at `path` and read the announcement.
    ///
    /// # Errors
    ///
    /// [`ClientError`] when the socket is unreachable or the server does not
    /// announce the tlsmgr protocol.
    pub fn connect(path: impl AsRef<Path>) -> Result<Client, ClientError> {
        let stream = UnixStream::connect(path)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut client = Client { stream, decoder: Decoder::new(attr0::Limits::default()), buf: Vec::new() };
        let announcement = client.read_frame()?;
        let mut expected = Vec::new();
        attr0::encode(&announcement, &mut expected)?;
        if expected != ANNOUNCEMENT {
            return Err(ClientError::BadAnnouncement);
        }
        Ok(client)
    }

    /// Send `request` and read its reply.
    ///
    /// # Errors
    ///
    /// [`ClientError`].
    pub fn request(&mut self, request: &Request) -> Result<Reply, ClientError> {
        let mut out = Vec::new();
        attr0::encode(&request.to_frame(), &mut out)?;
        self.stream.write_all(&out)?;
        let frame = self.read_frame()?;
        Ok(Reply::from_frame(request.kind(), &frame)?)
    }

    /// Send raw bytes (for tests of malformed input).
    ///
    /// # Errors
    ///
    /// [`ClientError::Io`].
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.stream.write_all(bytes)?;
        Ok(())
    }

    /// Read one whole frame.
    ///
    /// # Errors
    ///
    /// [`ClientError::Closed`] at end of stream, or another [`ClientError`].
    pub fn read_frame(&mut self) -> Result<Frame, ClientError> {
        let mut chunk = [0u8; 4096];
        loop {
            if let Some((frame, used)) = self.decoder.decode(&self.buf)? {
                self.buf.drain(..used);
                return Ok(frame);
            }
            let n = self.stream.read(&mut chunk)?;
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
}
