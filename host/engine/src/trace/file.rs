//! The trace file format: a magic string, then length-prefixed postcard
//! frames, the length and the body each followed by its CRC-32.
//!
//! ```text
//! "TLSKTRC1" ‖ frame* ;  frame = len (u32 LE) ‖ crc32(len) ‖ postcard(value) ‖ crc32(postcard bytes)
//! ```
//!
//! The first frame is a [`Header`], every later one an [`Event`]. The
//! writer flushes after each [`Event::Return`], so a recorder killed at any
//! moment leaves a file whose whole calls all read back: the reader stops
//! at a partial last frame and keeps the events up to the last complete
//! call. A frame whose checksum or encoding is wrong anywhere else is
//! corruption, reported with its number and byte offset. The length has a
//! checksum of its own: a damaged length would otherwise point past the end
//! of the file and pass for a cut-off tail, silently dropping every call
//! after it.
//!
//! Length-prefixed frames rather than postcard's COBS framing: the length
//! tells a torn tail from a damaged middle, and a frame is read with one
//! allocation of a known, bounded size.
//!
//! # Security
//!
//! Files are created with mode 0600 and `O_EXCL | O_NOFOLLOW`: a trace
//! holds ticket keys and sessions. Reading treats the file as hostile:
//! lengths are bounded by [`MAX_FRAME`], every frame is checksummed, and
//! decoding errors are values, never panics.
//!
//! # Limitations
//!
//! A trace is read whole into memory before replay; traces of many
//! millions of calls need as much memory as their file size, roughly.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Event, Header};

/// The first bytes of every trace file.
pub const MAGIC: &[u8; 8] = b"TLSKTRC1";
/// The largest frame accepted: above any event the core can cause (a value
/// is at most 1 MiB; a scan returns a bounded page of them).
pub const MAX_FRAME: u32 = 64 * 1024 * 1024;

/// Why a trace could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The file could not be created, written or read.
    #[error("trace {path}: {source}")]
    Io {
        /// The trace file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The file exists already; traces are never overwritten.
    #[error("trace {0} already exists; remove it or record to another file")]
    Exists(PathBuf),
    /// Not a trace (wrong magic).
    #[error("{0} is not a tlskeeper trace (it does not start with {magic:?})", magic = String::from_utf8_lossy(MAGIC))]
    NotATrace(PathBuf),
    /// The file ends before its header is complete.
    #[error("trace {0} is empty or cut off inside its header")]
    NoHeader(PathBuf),
    /// A frame in the middle of the file is damaged.
    #[error("trace {path} is corrupt at frame {frame} (byte {offset}): {why}; the file was altered or damaged")]
    Corrupt {
        /// The trace file.
        path: PathBuf,
        /// Frame number, from 0 (the header).
        frame: u64,
        /// Byte offset of the frame.
        offset: u64,
        /// What is wrong.
        why: String,
    },
}

/// Writes a trace: header first, then events.
pub struct TraceWriter {
    out: BufWriter<File>,
    path: PathBuf,
}

impl TraceWriter {
    /// Create `path` (mode 0600; it must not exist) and write the magic and
    /// `header`.
    ///
    /// # Errors
    ///
    /// [`TraceError::Exists`] or [`TraceError::Io`].
    pub fn create(path: &Path, header: &Header) -> Result<TraceWriter, TraceError> {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map_err(|source| match source.kind() {
                io::ErrorKind::AlreadyExists => TraceError::Exists(path.to_owned()),
                _ => TraceError::Io { path: path.to_owned(), source },
            })?;
        let mut writer = TraceWriter { out: BufWriter::new(file), path: path.to_owned() };
        writer.out.write_all(MAGIC).map_err(|e| writer.io(e))?;
        writer.frame(header)?;
        writer.flush()?;
        Ok(writer)
    }

    fn io(&self, source: io::Error) -> TraceError {
        TraceError::Io { path: self.path.clone(), source }
    }

    fn frame(&mut self, value: &impl Serialize) -> Result<(), TraceError> {
        let bytes = postcard::to_stdvec(value).map_err(|e| self.io(io::Error::other(e)))?;
        let len = u32::try_from(bytes.len()).ok().filter(|n| *n <= MAX_FRAME).ok_or_else(|| {
            self.io(io::Error::other(format!("an event of {} bytes exceeds the frame limit", bytes.len())))
        })?;
        let crc = crc32fast::hash(&bytes);
        self.out.write_all(&len.to_le_bytes()).map_err(|e| self.io(e))?;
        self.out.write_all(&crc32fast::hash(&len.to_le_bytes()).to_le_bytes()).map_err(|e| self.io(e))?;
        self.out.write_all(&bytes).map_err(|e| self.io(e))?;
        self.out.write_all(&crc.to_le_bytes()).map_err(|e| self.io(e))
    }

    /// Append `event`; a [`Event::Return`] is flushed to the file at once,
    /// so that every finished call survives the process.
    ///
    /// # Errors
    ///
    /// [`TraceError::Io`].
    pub fn write(&mut self, event: &Event) -> Result<(), TraceError> {
        self.frame(event)?;
        if matches!(event, Event::Return(_)) {
            self.flush()?;
        }
        Ok(())
    }

    /// Push buffered frames to the file.
    ///
    /// # Errors
    ///
    /// [`TraceError::Io`].
    pub fn flush(&mut self) -> Result<(), TraceError> {
        self.out.flush().map_err(|e| self.io(e))
    }
}

/// A trace read back.
#[derive(Debug)]
pub struct Trace {
    /// What recorded it.
    pub header: Header,
    /// Every event of every whole call, in order.
    pub events: Vec<Event>,
    /// When the file ended inside a call (a recorder that was killed), how:
    /// the events of that last call are left out.
    pub cut_off: Option<String>,
}

/// Read the trace at `path`.
///
/// # Errors
///
/// [`TraceError`]; a file cut off at its end is not an error (see
/// [`Trace::cut_off`]).
pub fn read(path: &Path) -> Result<Trace, TraceError> {
    let io = |source| TraceError::Io { path: path.to_owned(), source };
    let mut input = BufReader::new(File::open(path).map_err(io)?);
    let mut magic = [0u8; 8];
    match input.read_exact(&mut magic) {
        Ok(()) if &magic == MAGIC => {}
        Ok(()) => return Err(TraceError::NotATrace(path.to_owned())),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(TraceError::NotATrace(path.to_owned())),
        Err(e) => return Err(io(e)),
    }
    let mut frames = Frames { input, path, offset: MAGIC.len() as u64, frame: 0 };
    let header: Header = match frames.next()? {
        Some(Ok(header)) => header,
        Some(Err(_)) | None => return Err(TraceError::NoHeader(path.to_owned())),
    };
    let mut events = Vec::new();
    let mut whole = 0;
    let mut cut_off = None;
    loop {
        match frames.next()? {
            Some(Ok(event)) => {
                let ends_call = matches!(event, Event::Return(_));
                events.push(event);
                if ends_call {
                    whole = events.len();
                }
            }
            Some(Err(tail)) => {
                cut_off = Some(tail);
                break;
            }
            None => break,
        }
    }
    if whole < events.len() {
        let dropped = events.len() - whole;
        cut_off.get_or_insert_with(|| "the file ends inside a call".to_owned());
        if let Some(why) = cut_off.as_mut() {
            why.push_str(&format!("; the last {dropped} event(s), of an unfinished call, are left out"));
        }
        events.truncate(whole);
    }
    Ok(Trace { header, events, cut_off })
}

struct Frames<'a, R> {
    input: R,
    path: &'a Path,
    offset: u64,
    frame: u64,
}

impl<R: Read> Frames<'_, R> {
    /// The next frame: `None` at a clean end, `Some(Err(why))` for a frame
    /// cut off by the end of the file, an error for a damaged one.
    fn next<T: DeserializeOwned>(&mut self) -> Result<Option<Result<T, String>>, TraceError> {
        let corrupt = |s: &Self, why: String| TraceError::Corrupt {
            path: s.path.to_owned(),
            frame: s.frame,
            offset: s.offset,
            why,
        };
        let mut head = [0u8; 8];
        match crate::read::up_to(&mut self.input, &mut head).map_err(|e| self.io(e))? {
            0 => return Ok(None),
            8 => {}
            n => return Ok(Some(Err(format!("the file ends {n} byte(s) into frame {}", self.frame)))),
        }
        let (len, len_crc) = head.split_at(4);
        if crc32fast::hash(len) != u32::from_le_bytes([len_crc[0], len_crc[1], len_crc[2], len_crc[3]]) {
            return Err(corrupt(self, "checksum mismatch in the frame's length".to_owned()));
        }
        let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]);
        if len > MAX_FRAME {
            return Err(corrupt(self, format!("frame length {len} exceeds the limit of {MAX_FRAME}")));
        }
        // Grown as bytes arrive, not allocated up front: a short file that
        // claims a large frame costs only what it holds.
        let want = u64::from(len) + 4;
        let mut body = Vec::new();
        (&mut self.input).take(want).read_to_end(&mut body).map_err(|e| self.io(e))?;
        if (body.len() as u64) < want {
            return Ok(Some(Err(format!("the file ends inside frame {} (byte {})", self.frame, self.offset))));
        }
        let (bytes, crc) = body.split_at(len as usize);
        let crc = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
        if crc32fast::hash(bytes) != crc {
            return Err(corrupt(self, "checksum mismatch".to_owned()));
        }
        let value = postcard::from_bytes(bytes).map_err(|e| corrupt(self, format!("undecodable frame: {e}")))?;
        self.offset += 8 + u64::from(len) + 4;
        self.frame += 1;
        Ok(Some(Ok(value)))
    }

    fn io(&self, source: io::Error) -> TraceError {
        TraceError::Io { path: self.path.to_owned(), source }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::{Call, Import, Outcome, Return};
    use std::os::unix::fs::PermissionsExt;

    fn header() -> Header {
        Header {
            component_sha256: "00".repeat(32),
            wasmtime: "48.0.8".into(),
            engine: "test".into(),
            wit: crate::trace::WIT_PACKAGE.into(),
            tlskeeper: "0.1.0".into(),
            fuel_per_call: 1000,
            memory_bytes: 1 << 20,
        }
    }

    fn call(n: u32) -> [Event; 3] {
        [
            Event::Call(Call::Seed(n)),
            Event::Import(Import::ClockNow { result: u64::from(n) }),
            Event::Return(Return { outcome: Outcome::Seed(Ok(vec![7; n as usize])), fuel: 99 }),
        ]
    }

    /// Write a trace of `calls` calls; returns the file length after each
    /// frame (the frame boundaries), header first.
    fn write(path: &Path, calls: u32) -> Vec<usize> {
        let mut w = TraceWriter::create(path, &header()).unwrap();
        let len = || std::fs::metadata(path).unwrap().len() as usize;
        let mut ends = vec![len()];
        w.write(&Event::Instantiate).unwrap();
        w.flush().unwrap();
        ends.push(len());
        for n in 1..=calls {
            for e in call(n) {
                w.write(&e).unwrap();
                w.flush().unwrap();
                ends.push(len());
            }
        }
        ends
    }

    #[test]
    fn round_trip_and_a_private_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        write(&path, 3);
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let t = read(&path).unwrap();
        assert_eq!(t.header, header());
        assert_eq!(t.events.len(), 1 + 3 * 3);
        assert_eq!(t.cut_off, None);
        assert!(matches!(TraceWriter::create(&path, &header()), Err(TraceError::Exists(_))));
    }

    #[test]
    fn a_cut_off_file_reads_up_to_the_last_whole_call() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        let ends = write(&path, 3);
        let full = std::fs::read(&path).unwrap();
        let whole = read(&path).unwrap().events;
        let header_len = ends[0];
        // Frame ends: the header, the instance, then call, import, return
        // for each call; a call ends with its return.
        let call_ends: Vec<usize> = ends.iter().skip(4).step_by(3).copied().collect();
        // Every possible cut: never an error past the header, never a
        // partial call, never more than was written.
        let mut last_len = usize::MAX;
        for cut in (0..full.len()).rev() {
            std::fs::write(&path, &full[..cut]).unwrap();
            match read(&path) {
                Ok(t) => {
                    assert!(t.events.len() <= last_len);
                    last_len = t.events.len();
                    assert_eq!(t.events[..], whole[..t.events.len()]);
                    assert!(t.events.is_empty() || matches!(t.events.last(), Some(Event::Return(_))));
                    // A cut on a frame boundary just after a call (or the
                    // header) looks like a complete, shorter trace; any other
                    // cut is reported.
                    let clean = cut == header_len || call_ends.contains(&cut);
                    assert_eq!(t.cut_off.is_none(), clean || cut == full.len(), "cut at {cut}");
                }
                Err(TraceError::NotATrace(_) | TraceError::NoHeader(_)) => assert!(cut < header_len, "cut at {cut}"),
                Err(e) => panic!("cut at {cut}: {e}"),
            }
        }
    }

    #[test]
    fn damage_is_reported_never_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        write(&path, 2);
        let full = std::fs::read(&path).unwrap();
        for i in 0..full.len() {
            let mut bad = full.clone();
            bad[i] ^= 0x20;
            std::fs::write(&path, &bad).unwrap();
            // Every flipped byte is found: in the magic, or by a checksum
            // (lengths included), never read as a shorter trace.
            match read(&path) {
                Err(TraceError::NotATrace(_)) => assert!(i < MAGIC.len(), "flip at {i}"),
                Err(TraceError::Corrupt { .. }) => assert!(i >= MAGIC.len(), "flip at {i}"),
                other => panic!("flip at {i}: {other:?}"),
            }
        }
        std::fs::write(&path, b"not a trace at all").unwrap();
        assert!(matches!(read(&path), Err(TraceError::NotATrace(_))));
        let mut huge = MAGIC.to_vec();
        huge.extend(u32::MAX.to_le_bytes());
        huge.extend(crc32fast::hash(&u32::MAX.to_le_bytes()).to_le_bytes());
        std::fs::write(&path, &huge).unwrap();
        assert!(matches!(read(&path), Err(TraceError::Corrupt { .. })), "{:?}", read(&path));
    }
}
