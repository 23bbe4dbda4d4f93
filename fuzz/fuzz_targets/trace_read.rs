//! Fuzzes the trace reader (`tlskeeper_engine::trace::file::read`), which
//! `tlskeeper replay` runs on files that may be damaged, cut off or not
//! traces at all.
//!
//! **Input.** The first byte picks how the rest becomes a file (the reader
//! takes a path, so the file is written to a private temporary directory):
//!
//! - bit 0 clear, *raw*: the rest is the file, byte for byte. Real traces
//!   from `fixtures/traces/` are seeds of this kind.
//! - bit 0 set, *framed*: the rest is a list of `len (u16 LE) ‖ body`
//!   chunks, written as the trace format's frames after the magic, with
//!   the correct length and checksums. Random bytes almost never pass a
//!   CRC-32; this mode takes the checksums out of the fuzzer's way so that
//!   the postcard decoding of headers and events behind them is fuzzed too.
//!   Bits 2-7 (0..=63) cut that many bytes off the end of the file, to make
//!   torn tails.
//!
//! **Asserts.**
//!
//! 1. `read` never panics, and errors are the typed, expected ones: never
//!    `Io` (the file is a readable regular file); `NotATrace` exactly when
//!    the file does not start with the magic; a `Corrupt` error's offset
//!    lies inside the file, past the magic; in framed mode without a cut,
//!    where every checksum is right, the only corruption can be an
//!    undecodable frame.
//! 2. A trace read back holds whole calls only: no events, or the last is
//!    a `Return`.
//! 3. Round trip: writing the header and events read back with
//!    `TraceWriter` and reading that file gives the same header and events,
//!    and no cut-off.
//!
//! **Why.** A trace is untrusted input to `replay` (the module docs say so:
//! "the reader bounds every length and never panics on bad bytes"), and the
//! torn-tail logic (a cut-off last call is dropped, a damaged middle is an
//! error) is exactly the kind of boundary arithmetic fuzzing checks well.

#![no_main]

use std::ffi::c_int;
use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tlskeeper_engine::trace::Event;
use tlskeeper_engine::trace::file::{self, MAGIC, TraceError, TraceWriter};

/// A private temporary directory for the input and the rewritten trace.
static DIR: OnceLock<PathBuf> = OnceLock::new();

unsafe extern "C" {
    /// C's `atexit`: libFuzzer ends a run with `exit`, which runs no Rust
    /// destructors of statics, but does run these.
    fn atexit(callback: extern "C" fn()) -> c_int;
}

extern "C" fn remove_dir() {
    if let Some(dir) = DIR.get() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

fn path(name: &str) -> PathBuf {
    DIR.get_or_init(|| {
        let dir = tempfile::Builder::new().prefix("tlskeeper-fuzz-trace").tempdir().expect("a temporary directory");
        // SAFETY: registers a plain function with no arguments, as C's
        // atexit requires; it only removes the directory, once the fuzzer
        // is done with it (a crash leaves it behind).
        unsafe { atexit(remove_dir) };
        dir.keep()
    })
    .join(name)
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let framed = mode & 1 == 1;
    let cut = usize::from(mode >> 2);
    let bytes = if framed { frame(rest, cut) } else { rest.to_vec() };
    let input = path("input.trace");
    std::fs::write(&input, &bytes).expect("writing the input file");

    match file::read(&input) {
        Ok(trace) => {
            assert!(bytes.starts_with(MAGIC), "a trace without the magic was read");
            if let Some(last) = trace.events.last() {
                assert!(matches!(last, Event::Return(_)), "the events end inside a call: {last:?}");
            }
            // 3: write what was read, and read it again.
            let again = path("again.trace");
            let _ = std::fs::remove_file(&again);
            let mut w = TraceWriter::create(&again, &trace.header).expect("creating the rewritten trace");
            for event in &trace.events {
                w.write(event).expect("writing an event read back");
            }
            w.flush().expect("flushing the rewritten trace");
            drop(w);
            let reread = file::read(&again).expect("a trace tlskeeper wrote reads back");
            assert_eq!(reread.header, trace.header, "header changed in a round trip");
            assert_eq!(reread.events, trace.events, "events changed in a round trip");
            assert_eq!(reread.cut_off, None, "a rewritten trace of whole calls is cut off");
        }
        Err(TraceError::NotATrace(_)) => {
            assert!(!bytes.starts_with(MAGIC), "NotATrace for a file that starts with the magic");
        }
        Err(TraceError::NoHeader(_)) => assert!(bytes.starts_with(MAGIC)),
        Err(TraceError::Corrupt { offset, why, .. }) => {
            assert!(bytes.starts_with(MAGIC));
            let offset = usize::try_from(offset).expect("offset fits usize");
            assert!(
                (MAGIC.len()..bytes.len()).contains(&offset),
                "corrupt frame at byte {offset} of a {}-byte file",
                bytes.len()
            );
            if framed && cut == 0 {
                assert!(why.starts_with("undecodable frame"), "a frame with correct checksums reported as: {why}");
            }
        }
        Err(e @ (TraceError::Io { .. } | TraceError::Exists(_))) => panic!("unexpected error reading a trace: {e}"),
    }
});

/// The magic, then each `len ‖ body` chunk of `chunks` as a frame with
/// correct checksums, less `cut` bytes at the end.
fn frame(mut chunks: &[u8], cut: usize) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    while let Some((len, rest)) = chunks.split_first_chunk::<2>() {
        let len = usize::from(u16::from_le_bytes(*len)).min(rest.len());
        let (body, rest) = rest.split_at(len);
        let len = u32::try_from(len).expect("under 64 KiB").to_le_bytes();
        out.extend_from_slice(&len);
        out.extend_from_slice(&crc32(&len).to_le_bytes());
        out.extend_from_slice(body);
        out.extend_from_slice(&crc32(body).to_le_bytes());
        chunks = rest;
    }
    out.truncate(out.len().saturating_sub(cut).max(MAGIC.len()));
    out
}

/// CRC-32 (IEEE), as the trace format uses (`crc32fast::hash`), written out
/// here so that the fuzz crate needs no dependency for it.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}
