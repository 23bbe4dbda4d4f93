//! Postfix's `tls_random_source`: an extra entropy source mixed into the
//! OS entropy the core receives.
//!
//! The three forms tlsmgr(8) accepts:
//!
//! - `dev:/path`: a device read at every reseed, at most
//!   `min(tls_random_bytes, 255)` bytes, with a 10-second timeout;
//! - `egd:/path`: an EGD-compatible UNIX socket, asked for the same amount
//!   with EGD's "read entropy nonblocking" command (`0x01`, n), answered by
//!   a count byte and that many bytes;
//! - anything else: a plain file, read once (up to `tls_random_bytes`) and
//!   then closed.
//!
//! Sources are opened before the daemon chroots and drops privileges, and
//! kept open, as tlsmgr does. Unlike tlsmgr, a source that fails later does
//! not make the daemon exit: the OS generator alone is sufficient, so the
//! failure is logged once and the source dropped.
//!
//! [`MixedEntropy`] combines: the output is the OS bytes XORed with a
//! SHA-256 expansion of the extra bytes. It is at least as unpredictable as
//! the OS bytes (the extra source never sees them), and the extra source
//! still counts if the OS generator were weak. Concatenating both into a
//! longer entropy input was rejected: the core's `entropy.fill` contract is
//! "exactly n bytes", and the mix belongs to the host, which owns sources.
//!
//! # Security
//!
//! An extra source is trusted only as much as any input: an attacker who
//! controls it (say, the EGD socket) cannot lower the entropy of the
//! result below the OS generator's. The bytes read are zeroized after use.
//!
//! # Limitations
//!
//! Device and EGD reads block the core's thread for up to 10 seconds when
//! the source stalls; that happens at most once per reseed, after which a
//! failing source is dropped.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::entropy::{Entropy, EntropyError, OsEntropy};
use crate::poll::poll_readable;

/// tlsmgr's `TLS_MGR_TIMEOUT` for device and EGD reads.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Most bytes one device or EGD read asks for (EGD's one-byte count).
const MAX_READ: u32 = 255;

/// An opened extra source.
#[derive(Debug)]
pub enum RandomSource {
    /// `dev:/path`.
    Device {
        /// The device path, for messages.
        path: PathBuf,
        /// The open device.
        file: File,
        /// Bytes per read.
        bytes: usize,
    },
    /// `egd:/path`.
    Egd {
        /// The socket path, for messages.
        path: PathBuf,
        /// The connection.
        stream: UnixStream,
        /// Bytes per request.
        bytes: u8,
    },
    /// A plain file: its bytes, consumed by the first read.
    File {
        /// The file path, for messages.
        path: PathBuf,
        /// What was read at open time, until used.
        bytes: Option<Zeroizing<Vec<u8>>>,
    },
}

/// Why an extra source could not be opened or read.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Opening failed.
    #[error("cannot open entropy source {path}: {source}")]
    Open {
        /// The source.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Reading failed or timed out.
    #[error("cannot read from entropy source {path}: {source}")]
    Read {
        /// The source.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

impl RandomSource {
    /// Open the source `spec` names (a `tls_random_source` value), reading
    /// at most `tls_random_bytes` bytes per use. An empty spec is no source.
    ///
    /// # Errors
    ///
    /// [`SourceError::Open`] when the device, socket or file cannot be
    /// opened (tlsmgr only warns then; the caller decides).
    pub fn open(spec: &str, tls_random_bytes: u32) -> Result<Option<RandomSource>, SourceError> {
        let per_read = tls_random_bytes.clamp(1, MAX_READ);
        if spec.is_empty() {
            return Ok(None);
        }
        if let Some(path) = spec.strip_prefix("dev:") {
            let path = PathBuf::from(path);
            let file = File::open(&path).map_err(|source| SourceError::Open { path: path.clone(), source })?;
            return Ok(Some(RandomSource::Device { path, file, bytes: per_read as usize }));
        }
        if let Some(path) = spec.strip_prefix("egd:") {
            let path = PathBuf::from(path);
            let open = |path: &PathBuf| -> io::Result<UnixStream> {
                let stream = UnixStream::connect(path)?;
                stream.set_read_timeout(Some(TIMEOUT))?;
                stream.set_write_timeout(Some(TIMEOUT))?;
                Ok(stream)
            };
            let stream = open(&path).map_err(|source| SourceError::Open { path: path.clone(), source })?;
            // In range: clamped to 255 above.
            let bytes = u8::try_from(per_read).unwrap_or(u8::MAX);
            return Ok(Some(RandomSource::Egd { path, stream, bytes }));
        }
        let path = PathBuf::from(spec);
        let mut bytes = Zeroizing::new(Vec::new());
        File::open(&path)
            .and_then(|f| f.take(u64::from(tls_random_bytes)).read_to_end(&mut bytes))
            .map_err(|source| SourceError::Open { path: path.clone(), source })?;
        Ok(Some(RandomSource::File { path, bytes: Some(bytes) }))
    }

    /// The source's path, for messages.
    pub fn path(&self) -> &std::path::Path {
        match self {
            RandomSource::Device { path, .. } | RandomSource::Egd { path, .. } | RandomSource::File { path, .. } => {
                path
            }
        }
    }

    /// The next batch of bytes (empty once a plain file has been used).
    ///
    /// # Errors
    ///
    /// [`SourceError::Read`] on an I/O error, a timeout, or EOF.
    pub fn read(&mut self) -> Result<Zeroizing<Vec<u8>>, SourceError> {
        let path = self.path().to_path_buf();
        let failed = |source: io::Error| SourceError::Read { path: path.clone(), source };
        match self {
            RandomSource::Device { file, bytes, .. } => {
                let ready = poll_readable(&[file.as_fd()], Some(TIMEOUT)).map_err(failed)?;
                if ready[0] == 0 {
                    return Err(failed(io::ErrorKind::TimedOut.into()));
                }
                let mut out = Zeroizing::new(vec![0u8; *bytes]);
                let n = file.read(&mut out).map_err(failed)?;
                if n == 0 {
                    return Err(failed(io::ErrorKind::UnexpectedEof.into()));
                }
                out.truncate(n);
                Ok(out)
            }
            RandomSource::Egd { stream, bytes, .. } => {
                stream.write_all(&[0x01, *bytes]).map_err(failed)?;
                let mut count = [0u8; 1];
                stream.read_exact(&mut count).map_err(failed)?;
                let mut out = Zeroizing::new(vec![0u8; usize::from(count[0].min(*bytes))]);
                stream.read_exact(&mut out).map_err(failed)?;
                Ok(out)
            }
            RandomSource::File { bytes, .. } => Ok(bytes.take().unwrap_or_default()),
        }
    }
}

/// The OS generator, with an optional extra source mixed in.
#[derive(Debug)]
pub struct MixedEntropy {
    os: OsEntropy,
    extra: Option<RandomSource>,
}

impl MixedEntropy {
    /// OS entropy plus `extra`.
    pub fn new(extra: Option<RandomSource>) -> Self {
        MixedEntropy { os: OsEntropy, extra }
    }
}

impl Entropy for MixedEntropy {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), EntropyError> {
        self.os.fill(buf)?;
        let Some(source) = self.extra.as_mut() else {
            return Ok(());
        };
        match source.read() {
            Ok(extra) if !extra.is_empty() => mix(buf, &extra),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!("{e}; continuing with the OS generator alone");
                self.extra = None;
            }
        }
        Ok(())
    }
}

/// XOR `buf` with SHA-256(counter ‖ extra) blocks.
fn mix(buf: &mut [u8], extra: &[u8]) {
    for (counter, chunk) in (0u32..).zip(buf.chunks_mut(32)) {
        let mut block = Sha256::new().chain_update(counter.to_be_bytes()).chain_update(extra).finalize();
        for (b, k) in chunk.iter_mut().zip(block.iter()) {
            *b ^= k;
        }
        zeroize::Zeroize::zeroize(block.as_mut_slice());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn no_spec_is_no_source() {
        assert!(RandomSource::open("", 32).unwrap().is_none());
    }

    #[test]
    fn device_reads_the_configured_amount_each_time() {
        let mut s = RandomSource::open("dev:/dev/urandom", 32).unwrap().unwrap();
        let a = s.read().unwrap();
        let b = s.read().unwrap();
        assert_eq!((a.len(), b.len()), (32, 32));
        assert_ne!(*a, *b);
        // tls_random_bytes above EGD's limit is capped at 255 per read.
        let mut s = RandomSource::open("dev:/dev/urandom", 1000).unwrap().unwrap();
        assert_eq!(s.read().unwrap().len(), 255);
    }

    #[test]
    fn plain_file_is_read_once_up_to_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seed");
        std::fs::write(&path, [7u8; 100]).unwrap();
        let mut s = RandomSource::open(path.to_str().unwrap(), 40).unwrap().unwrap();
        assert_eq!(s.read().unwrap().len(), 40);
        assert!(s.read().unwrap().is_empty());
    }

    #[test]
    fn missing_sources_are_open_errors_naming_the_path() {
        let e = RandomSource::open("dev:/nonexistent/random", 32).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/random"), "{e}");
        assert!(RandomSource::open("egd:/nonexistent/egd", 32).is_err());
        assert!(RandomSource::open("/nonexistent/file", 32).is_err());
    }

    #[test]
    fn egd_protocol_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("egd");
        let listener = UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut req = [0u8; 2];
            conn.read_exact(&mut req).unwrap();
            // Answer with fewer bytes than asked, as EGD may.
            conn.write_all(&[10]).unwrap();
            conn.write_all(&[0xAB; 10]).unwrap();
            req
        });
        let mut s = RandomSource::open(&format!("egd:{}", path.display()), 32).unwrap().unwrap();
        let got = s.read().unwrap();
        assert_eq!(*got, [0xAB; 10]);
        assert_eq!(server.join().unwrap(), [0x01, 32]);
    }

    #[test]
    fn a_failing_source_is_dropped_and_os_entropy_still_flows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("egd");
        let listener = UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || drop(listener.accept().unwrap())); // hang up at once
        let source = RandomSource::open(&format!("egd:{}", path.display()), 32).unwrap();
        server.join().unwrap();
        let mut mixed = MixedEntropy::new(source);
        let mut buf = [0u8; 48];
        mixed.fill(&mut buf).unwrap();
        assert!(mixed.extra.is_none());
        assert_ne!(buf, [0u8; 48]);
    }

    #[test]
    fn mixing_changes_every_block_and_depends_on_the_extra_bytes() {
        let mut a = [0u8; 80];
        let mut b = [0u8; 80];
        mix(&mut a, b"one");
        mix(&mut b, b"two");
        assert_ne!(a, b);
        assert!(a.chunks(32).all(|c| c.iter().any(|&x| x != 0)));
    }
}
