//! Fuzzes the attr0 frame decoder (`tlskeeper_protocol::attr0`): the first
//! layer every byte a client sends to the tlsmgr socket goes through.
//!
//! **Input.** A five-byte header, then the bytes a client would send:
//!
//! | byte | meaning |
//! |---|---|
//! | 0 | bit 0 set: use the fuzzed limits below; clear: `Limits::default()`, what the server uses |
//! | 1 | `max_frame_bytes` = byte × 4 (0..=1020) |
//! | 2 | `max_name_bytes` = byte % 80 |
//! | 3 | `max_attrs` = byte % 20 |
//! | 4 | chunk size for the streaming pass, byte % 32 + 1 |
//!
//! Small fuzzed limits make every limit reachable with short inputs; the
//! default ones are what a real connection gets.
//!
//! **Asserts.**
//!
//! 1. `decode` never panics, and agrees with a reference decoder written
//!    here from the format's definition (`name NUL value NUL ... NUL`):
//!    a frame is returned exactly when the reference finds a complete list
//!    within the limits, `Ok(None)` exactly when it finds an incomplete one
//!    that breaks no limit so far, an error otherwise.
//! 2. A decoded frame's consumed length is > 0 and <= the input's, within
//!    `max_frame_bytes`; it has at most `max_attrs` attributes, and every
//!    name is non-empty, NUL-free and at most `max_name_bytes` long; values
//!    are NUL-free.
//! 3. Round trip: `encode` of a decoded frame gives back exactly the bytes
//!    it was decoded from (attr0 has one spelling per list), and decoding
//!    those gives the same frame and length.
//! 4. The server's way of reading, a resumable `Decoder` fed a growing
//!    buffer a chunk at a time and drained after each frame, yields the same
//!    frames, and ends the same way (error or incomplete), as `decode` run
//!    over the whole input.
//!
//! **Why.** Every byte here is attacker-controlled (any local process can
//! connect), the decoder is the only thing between them and the server's
//! memory, and its resumable scan keeps state across reads: exactly where an
//! off-by-one or a stale offset would hide.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tlskeeper_protocol::attr0::{self, Decoder, Frame, FrameError, Limits};

fuzz_target!(|data: &[u8]| {
    let Some((header, wire)) = data.split_first_chunk::<5>() else {
        return;
    };
    let limits = if header[0] & 1 == 1 {
        Limits {
            max_frame_bytes: usize::from(header[1]) * 4,
            max_name_bytes: usize::from(header[2] % 80),
            max_attrs: usize::from(header[3] % 20),
        }
    } else {
        Limits::default()
    };
    let chunk = usize::from(header[4] % 32) + 1;

    // 1-3: one-shot decoding of the first list, checked against the
    // reference, its limits, and a round trip.
    let got = attr0::decode(wire, &limits);
    let want = reference(wire, &limits);
    match (&got, &want) {
        (Ok(Some((frame, consumed))), Reference::Complete { frame: expected, len }) => {
            assert_eq!(consumed, len, "consumed length differs from the reference");
            assert_eq!(frame, expected, "frame differs from the reference");
            check_frame(frame, *consumed, wire.len(), &limits);
            let encoded = attr0::encode_to_vec(frame).expect("a decoded frame always encodes");
            assert_eq!(encoded, &wire[..*consumed], "re-encoding differs from the bytes decoded");
            let again = attr0::decode(&encoded, &limits).expect("re-encoded frame must decode");
            assert_eq!(again.as_ref(), Some(&(frame.clone(), *consumed)), "round trip changed the frame");
        }
        (Ok(None), Reference::Incomplete) => {}
        (Err(e), Reference::Invalid(why)) => check_error(e, why, wire, &limits),
        _ => panic!("decode returned {got:?}, the reference says {want:?}"),
    }

    // 4: the server's streaming use must match one-shot decoding of the
    // whole input, frame after frame.
    let expected = frames_one_shot(wire, &limits);
    let streamed = frames_streaming(wire, &limits, chunk);
    assert_eq!(streamed, expected, "streaming decoder (chunk {chunk}) differs from one-shot decoding");
});

/// What the reference decoder makes of the first list in a buffer.
#[derive(Debug)]
enum Reference {
    /// A whole list of `len` bytes, terminator included, within the limits.
    Complete { frame: Frame, len: usize },
    /// No terminator yet, and no limit broken by what has arrived.
    Incomplete,
    /// A limit is broken, or a complete list has a non-UTF-8 name.
    Invalid(&'static str),
}

/// The first list in `buf`, decoded straight from the format's definition:
/// tokens end at NUL bytes and alternate name, value, name, value...; an
/// empty name ends the list. Limits are judged on the bytes present, as the
/// module promises ("checked against the bytes buffered so far").
fn reference(buf: &[u8], limits: &Limits) -> Reference {
    let mut attrs: Vec<(&[u8], &[u8])> = Vec::new();
    let mut pos = 0;
    let mut name: Option<&[u8]> = None;
    loop {
        let Some(offset) = buf[pos..].iter().position(|&b| b == 0) else {
            // Incomplete. A name still arriving counts against the limit.
            if name.is_none() && buf.len() - pos > limits.max_name_bytes {
                return Reference::Invalid("partial name too long");
            }
            if !buf.is_empty() && buf.len() >= limits.max_frame_bytes {
                return Reference::Invalid("incomplete list reaches max_frame_bytes");
            }
            return Reference::Incomplete;
        };
        let token = &buf[pos..pos + offset];
        pos += offset + 1;
        match name.take() {
            Some(n) => attrs.push((n, token)),
            None if token.is_empty() => break,
            None => {
                if token.len() > limits.max_name_bytes {
                    return Reference::Invalid("name too long");
                }
                if attrs.len() + 1 > limits.max_attrs {
                    return Reference::Invalid("too many attributes");
                }
                name = Some(token);
            }
        }
    }
    if pos > limits.max_frame_bytes {
        return Reference::Invalid("complete list longer than max_frame_bytes");
    }
    let mut frame = Frame::new();
    for (n, v) in attrs {
        let Ok(n) = std::str::from_utf8(n) else {
            return Reference::Invalid("non-UTF-8 name");
        };
        frame.push_raw(n, v);
    }
    Reference::Complete { frame, len: pos }
}

/// Limits and well-formedness of a decoded frame.
fn check_frame(frame: &Frame, consumed: usize, input_len: usize, limits: &Limits) {
    assert!(consumed > 0, "a frame consumed no bytes");
    assert!(consumed <= input_len, "consumed {consumed} of {input_len} bytes");
    assert!(consumed <= limits.max_frame_bytes, "frame of {consumed} bytes over the limit {limits:?}");
    assert!(frame.len() <= limits.max_attrs, "{} attributes over the limit {limits:?}", frame.len());
    for (name, value) in frame.iter() {
        assert!(!name.is_empty(), "empty name in a decoded frame");
        assert!(name.len() <= limits.max_name_bytes, "name of {} bytes over the limit", name.len());
        assert!(!name.as_bytes().contains(&0), "NUL in a decoded name");
        assert!(!value.contains(&0), "NUL in a decoded value");
    }
}

/// The error's kind must be one the reference reason allows, and name the
/// limit in force.
fn check_error(e: &FrameError, why: &str, buf: &[u8], limits: &Limits) {
    match e {
        FrameError::TooLarge { limit } => {
            assert_eq!(*limit, limits.max_frame_bytes);
            assert!(buf.len() >= limits.max_frame_bytes, "TooLarge for {} bytes under {limits:?}", buf.len());
        }
        FrameError::NameTooLong { limit } => assert_eq!(*limit, limits.max_name_bytes),
        FrameError::TooManyAttributes { limit } => assert_eq!(*limit, limits.max_attrs),
        FrameError::NonUtf8Name { .. } => {
            assert_eq!(why, "non-UTF-8 name", "NonUtf8Name where the reference says: {why}");
        }
    }
}

/// How a sequence of lists in a buffer decodes: the frames in order, then
/// whether the rest is an error (`true`) or an incomplete list (`false`).
type Outcome = (Vec<(Frame, usize)>, bool);

/// `decode` over the whole input, dropping each frame's bytes and decoding
/// again.
fn frames_one_shot(wire: &[u8], limits: &Limits) -> Outcome {
    let mut frames = Vec::new();
    let mut rest = wire;
    loop {
        match attr0::decode(rest, limits) {
            Ok(Some((frame, n))) => {
                frames.push((frame, n));
                rest = &rest[n..];
            }
            Ok(None) => return (frames, false),
            Err(_) => return (frames, true),
        }
    }
}

/// As the server reads: the buffer grows by `chunk` bytes per read, one
/// `Decoder` per connection, the frame's bytes drained after each frame,
/// and decoding stops at the first error.
fn frames_streaming(wire: &[u8], limits: &Limits, chunk: usize) -> Outcome {
    let mut decoder = Decoder::new(*limits);
    let mut frames = Vec::new();
    let mut input: Vec<u8> = Vec::new();
    let mut next = 0;
    loop {
        loop {
            match decoder.decode(&input) {
                Ok(Some((frame, n))) => {
                    assert!(n > 0 && n <= input.len(), "streaming frame consumed {n} of {} bytes", input.len());
                    input.drain(..n);
                    frames.push((frame, n));
                }
                Ok(None) => break,
                Err(_) => return (frames, true),
            }
        }
        if next == wire.len() {
            return (frames, false);
        }
        let end = (next + chunk).min(wire.len());
        input.extend_from_slice(&wire[next..end]);
        next = end;
    }
}
