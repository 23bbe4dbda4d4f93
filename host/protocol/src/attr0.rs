//! The Postfix `attr0` attribute-list encoding: bytes <-> [`Frame`].
//!
//! Postfix's `attr_print0` sends an attribute list as `name NUL value NUL`
//! pairs followed by one extra NUL where the next name would start; there is
//! no length prefix, so the terminator is the only framing. This module finds
//! whole lists in a byte buffer ([`decode`], [`Decoder`]) and writes lists
//! ([`encode`]). It does not know attribute types: values are kept as the raw
//! bytes seen on the wire, so a DATA attribute is still base64 text here and
//! is decoded by the layer that knows which attributes are DATA
//! (`super::tlsmgr`). The value encodings that Postfix uses are provided as
//! helpers ([`Frame::push_str`], [`Frame::push_int`], [`Frame::push_data`]).
//!
//! Decoding is done in two passes: a cheap scan that only looks for NUL bytes
//! and checks the [`Limits`], and, once a whole list is buffered, a parse that
//! allocates the [`Frame`]. An incomplete list therefore costs no allocation,
//! and the scan can be resumed where it stopped ([`Decoder`]) so that a
//! client trickling one byte per write does not make the server rescan the
//! whole buffer each time (quadratic work). The rejected alternative was to
//! parse incrementally into a growing `Frame`, which allocates for input that
//! may never complete.
//!
//! # Security
//!
//! On the server side every byte given to [`decode`] comes from a local
//! client and is attacker-controlled. Decoding never panics, and the
//! [`Limits`] are checked against the bytes buffered so far, even before a
//! list is complete, so a client cannot make the server buffer or allocate
//! without bound: callers should stop reading and close the connection on
//! any [`FrameError`]. Names must be UTF-8 so they can be compared and logged
//! safely; values are arbitrary non-NUL bytes. Values may hold secrets in
//! base64 (sessions, seeds, ticket keys): [`Frame`] zeroizes its contents on
//! drop and its `Debug` output shows only names and value lengths.
//!
//! # Limitations
//!
//! - Only flat lists: the `{ ... }` groups that `SEND_ATTR_HASH` produces are
//!   not recognised (a `{` is just a name here). tlsmgr never sends them.
//! - Postfix's scanner can stop in the middle of a list (`ATTR_FLAG_MORE`)
//!   and read the rest later; this codec always takes whole lists, which is
//!   what every tlsmgr exchange consists of.
//! - Bytes the caller has already buffered past a list's terminator are left
//!   alone (the returned length says where the list ended); zeroizing the
//!   socket buffer itself is the caller's job.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use zeroize::Zeroize;

/// One attribute list: `(name, value)` pairs in wire order.
///
/// A decoded frame always has non-empty, NUL-free, UTF-8 names and NUL-free
/// values. Frames built by hand are checked by [`encode`], which refuses
/// anything that would not read back as the same list (an empty name would
/// be read as the list terminator; a NUL would split a token).
///
/// The contents are zeroized when the frame is dropped, because values carry
/// base64-encoded secrets. For the same reason `Debug` prints only the names
/// and value lengths.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Frame {
    /// The attributes in wire order. Duplicate names are kept as sent: the
    /// attr0 format allows them, and the layer above decides (tlsmgr's
    /// strict scan rejects them).
    pub attrs: Vec<(String, Vec<u8>)>,
}

impl Frame {
    /// An empty attribute list (on the wire: a single NUL).
    pub fn new() -> Self {
        Self::default()
    }

    /// The number of attributes.
    pub fn len(&self) -> usize {
        self.attrs.len()
    }

    /// Whether the list has no attributes.
    pub fn is_empty(&self) -> bool {
        self.attrs.is_empty()
    }

    /// The attributes as `(name, value)` borrows, in wire order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.attrs.iter().map(|(n, v)| (n.as_str(), v.as_slice()))
    }

    /// The value of the first attribute called `name`, if any.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// Appends an attribute whose value is given as raw wire bytes.
    ///
    /// Nothing is checked here; [`encode`] rejects an empty name or a NUL.
    pub fn push_raw(&mut self, name: &str, value: impl Into<Vec<u8>>) -> &mut Self {
        self.attrs.push((name.to_owned(), value.into()));
        self
    }

    /// Appends a STR attribute: the bytes of the string (`SEND_ATTR_STR`).
    ///
    /// A string containing NUL cannot be sent in attr0; [`encode`] rejects it
    /// rather than truncating it the way C would.
    pub fn push_str(&mut self, name: &str, value: &str) -> &mut Self {
        self.push_raw(name, value.as_bytes())
    }

    /// Appends an INT attribute as unsigned decimal (`SEND_ATTR_INT`, printed
    /// by Postfix with `%u`). Negative C values are sent as their 32-bit
    /// two's complement, e.g. `-1` as `4294967295`; convert before calling.
    pub fn push_int(&mut self, name: &str, value: u32) -> &mut Self {
        self.push_raw(name, value.to_string())
    }

    /// Appends a DATA attribute as standard, padded base64 without line
    /// breaks (`SEND_ATTR_DATA`, Postfix's `base64_encode`). Empty data is
    /// sent as an empty value.
    pub fn push_data(&mut self, name: &str, data: &[u8]) -> &mut Self {
        // `Engine::encode` computes the exact output length and allocates
        // once, so no reallocation leaves an unzeroized copy behind.
        self.push_raw(name, STANDARD.encode(data))
    }
}

impl Drop for Frame {
    fn drop(&mut self) {
        for (name, value) in &mut self.attrs {
            name.zeroize();
            value.zeroize();
        }
    }
}

impl fmt::Debug for Frame {
    /// Shows names and value lengths only: values may be secrets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Len(usize);
        impl fmt::Debug for Len {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "<{} bytes>", self.0)
            }
        }
        f.debug_map().entries(self.attrs.iter().map(|(n, v)| (n, Len(v.len())))).finish()
    }
}

/// Bounds on what [`decode`] accepts, checked as bytes arrive.
///
/// Postfix 3.7 itself has no bound at all (`vstring_get_null` grows without
/// limit); these limits exist so that one client cannot exhaust the server's
/// memory. The defaults are far above anything tlsmgr traffic needs while
/// keeping the worst case per connection small.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest list accepted, in bytes, terminator included.
    ///
    /// Default 256 KiB. The largest legitimate message is an `update`
    /// request carrying a DER `SSL_SESSION` in base64: about 200 bytes
    /// normally and a few KB when the session holds a client certificate, so
    /// the default leaves ample room for big certificates while bounding the
    /// buffer a connection can pin.
    pub max_frame_bytes: usize,
    /// Longest attribute name accepted, in bytes.
    ///
    /// Default 64. The longest name tlsmgr uses is `cache_type` (10 bytes);
    /// a small bound rejects garbage early, while the list is still
    /// incomplete, instead of buffering up to `max_frame_bytes` first.
    pub max_name_bytes: usize,
    /// Most attributes accepted in one list.
    ///
    /// Default 16. The largest tlsmgr list has 4 attributes (`update`);
    /// without a bound a 256 KiB list of 3-byte attributes would make the
    /// parser allocate some 87 000 entries before the strict request check
    /// above this layer could reject it.
    pub max_attrs: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_frame_bytes: 256 * 1024, max_name_bytes: 64, max_attrs: 16 }
    }
}

/// Why a byte buffer is not an acceptable attribute list.
///
/// All of these are fatal for the connection: the stream cannot be
/// resynchronised, because attr0 has no framing other than the terminator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// No list terminator within `limit` bytes: the list is (or would
    /// become) larger than [`Limits::max_frame_bytes`].
    #[error("attribute list exceeds {limit} bytes")]
    TooLarge {
        /// The limit that was exceeded.
        limit: usize,
    },
    /// The list has more attributes than [`Limits::max_attrs`].
    #[error("attribute list has more than {limit} attributes")]
    TooManyAttributes {
        /// The limit that was exceeded.
        limit: usize,
    },
    /// An attribute name, complete or still arriving, is longer than
    /// [`Limits::max_name_bytes`].
    #[error("attribute name longer than {limit} bytes")]
    NameTooLong {
        /// The limit that was exceeded.
        limit: usize,
    },
    /// An attribute name is not valid UTF-8.
    #[error("attribute name {index} is not valid UTF-8")]
    NonUtf8Name {
        /// Zero-based position of the attribute in the list.
        index: usize,
    },
}

/// Why a [`Frame`] cannot be written as an attr0 list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// An attribute name is empty, which the receiver would read as the end
    /// of the list.
    #[error("attribute {index} has an empty name")]
    EmptyName {
        /// Zero-based position of the attribute in the list.
        index: usize,
    },
    /// An attribute name contains a NUL byte, which would split it.
    #[error("attribute {index} has a NUL byte in its name")]
    NulInName {
        /// Zero-based position of the attribute in the list.
        index: usize,
    },
    /// An attribute value contains a NUL byte, which would split it (for
    /// example a `cache_id` string with an embedded NUL).
    #[error("attribute {index} has a NUL byte in its value")]
    NulInValue {
        /// Zero-based position of the attribute in the list.
        index: usize,
    },
}

/// Decodes the first attribute list in `buf`.
///
/// Returns `Ok(None)` when `buf` holds only the beginning of a list (read
/// more and call again), and `Ok(Some((frame, consumed)))` when a whole list,
/// through its terminating NUL, is at the start of `buf`; `consumed` is its
/// length and any bytes after it are not looked at. Errors are returned as
/// soon as the buffered bytes break a limit, complete list or not.
///
/// This rescans `buf` from the start on every call. A server that appends to
/// a buffer after each read should keep a [`Decoder`], which resumes where
/// the previous scan stopped.
pub fn decode(buf: &[u8], limits: &Limits) -> Result<Option<(Frame, usize)>, FrameError> {
    Decoder::new(*limits).decode(buf)
}

/// A resumable [`decode`] for a buffer that grows between calls.
///
/// Keep one per connection. Call [`Decoder::decode`] with the whole buffered
/// input each time more bytes arrive; the scan continues from where it
/// stopped, so the total work is linear in the list length. After it returns
/// a frame, remove the `consumed` bytes from the front of the buffer before
/// the next call; after an error, close the connection.
#[derive(Clone, Debug)]
pub struct Decoder {
    limits: Limits,
    scan: ScanState,
}

/// How far the cheap scan has got in the current list.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct ScanState {
    /// Offset of the next byte to look at.
    pos: usize,
    /// Offset where the current token (name or value) begins.
    token_start: usize,
    /// Whether the current token is a value (otherwise a name).
    in_value: bool,
    /// Names seen so far.
    attrs: usize,
}

impl Decoder {
    /// A decoder at the start of a list.
    pub fn new(limits: Limits) -> Self {
        Self { limits, scan: ScanState::default() }
    }

    /// The limits this decoder enforces.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Decodes the first list in `buf`; see [`decode`] for the results.
    ///
    /// `buf` must start with the same bytes as on the previous call (it may
    /// only have grown) unless that call returned a frame or an error. If it
    /// is shorter than what was already scanned, the scan restarts from the
    /// beginning rather than trusting stale state.
    pub fn decode(&mut self, buf: &[u8]) -> Result<Option<(Frame, usize)>, FrameError> {
        if buf.len() < self.scan.pos {
            self.scan = ScanState::default();
        }
        let result = self.scan(buf);
        // A frame or an error ends this list: the next call starts afresh.
        match result {
            Ok(None) => Ok(None),
            Ok(Some((end, attrs))) => {
                self.scan = ScanState::default();
                // `end` lies within `buf` (the scan only looks inside it);
                // falling back to the whole buffer keeps this total.
                let list = buf.get(..end).unwrap_or(buf);
                let frame = parse(list, attrs)?;
                Ok(Some((frame, end)))
            }
            Err(e) => {
                self.scan = ScanState::default();
                Err(e)
            }
        }
    }

    /// Looks for the list terminator without allocating. Returns the length
    /// of the list (terminator included) and its attribute count.
    fn scan(&mut self, buf: &[u8]) -> Result<Option<(usize, usize)>, FrameError> {
        let limits = self.limits;
        // Never look past the frame limit: a terminator beyond it would make
        // the list too large anyway.
        let window = buf.get(..limits.max_frame_bytes).unwrap_or(buf);
        let mut s = self.scan;
        while let Some(rest) = window.get(s.pos..) {
            let Some(offset) = rest.iter().position(|&b| b == 0) else {
                s.pos = window.len();
                break;
            };
            let nul = s.pos + offset;
            if s.in_value {
                s.in_value = false;
            } else {
                let name_len = nul - s.token_start;
                if name_len == 0 {
                    // An empty name is the list terminator.
                    return Ok(Some((nul + 1, s.attrs)));
                }
                if name_len > limits.max_name_bytes {
                    return Err(FrameError::NameTooLong { limit: limits.max_name_bytes });
                }
                s.attrs += 1;
                if s.attrs > limits.max_attrs {
                    return Err(FrameError::TooManyAttributes { limit: limits.max_attrs });
                }
                s.in_value = true;
            }
            s.token_start = nul + 1;
            s.pos = nul + 1;
        }
        // Incomplete. A name still arriving is checked now, not when its NUL
        // finally comes, so a client cannot stream an endless name.
        if !s.in_value && s.pos - s.token_start > limits.max_name_bytes {
            return Err(FrameError::NameTooLong { limit: limits.max_name_bytes });
        }
        // No terminator in the first `max_frame_bytes` bytes: any complete
        // list would be longer than the limit.
        if !buf.is_empty() && buf.len() >= limits.max_frame_bytes {
            return Err(FrameError::TooLarge { limit: limits.max_frame_bytes });
        }
        self.scan = s;
        Ok(None)
    }
}

/// Builds the frame from a complete list, terminator included, that the scan
/// has already checked against the limits.
fn parse(list: &[u8], attrs: usize) -> Result<Frame, FrameError> {
    let mut frame = Frame { attrs: Vec::with_capacity(attrs) };
    let mut tokens = list.split(|&b| b == 0);
    for index in 0.. {
        let name = match tokens.next() {
            Some(name) if !name.is_empty() => name,
            // The empty name before the terminator's NUL (or the end).
            _ => break,
        };
        // The scan guarantees a value token after every name; an empty
        // default keeps this total should that invariant ever break.
        let value = tokens.next().unwrap_or_default();
        let name = std::str::from_utf8(name).map_err(|_| FrameError::NonUtf8Name { index })?;
        frame.attrs.push((name.to_owned(), value.to_vec()));
    }
    Ok(frame)
}

/// Appends `frame` to `out` as an attr0 list, terminator included.
///
/// Fails, leaving `out` unchanged, if the frame could not be read back as
/// the same list: an empty name, or a NUL in a name or value. (A signature
/// without `Result` was rejected: it would have to either panic or write a
/// list that the receiver parses differently.)
pub fn encode(frame: &Frame, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let mut len = 1;
    for (index, (name, value)) in frame.attrs.iter().enumerate() {
        if name.is_empty() {
            return Err(EncodeError::EmptyName { index });
        }
        if name.as_bytes().contains(&0) {
            return Err(EncodeError::NulInName { index });
        }
        if value.contains(&0) {
            return Err(EncodeError::NulInValue { index });
        }
        len += name.len() + value.len() + 2;
    }
    out.reserve(len);
    for (name, value) in &frame.attrs {
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        out.extend_from_slice(value);
        out.push(0);
    }
    out.push(0);
    Ok(())
}

/// [`encode`] into a new buffer.
pub fn encode_to_vec(frame: &Frame) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::new();
    encode(frame, &mut out)?;
    Ok(out)
}

#[cfg(test)]
// A failed unwrap is a failed test, which is what tests are for.
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn frame(pairs: &[(&str, &[u8])]) -> Frame {
        let mut f = Frame::new();
        for (n, v) in pairs {
            f.push_raw(n, *v);
        }
        f
    }

    /// The lookup request of the reference transcript (§1.6).
    const LOOKUP: &[u8] = b"request\0lookup\0cache_type\0smtpd\0cache_id\0PROBE&s=probe&l=1\0\0";

    #[test]
    fn decodes_a_whole_list() {
        let (f, n) = decode(LOOKUP, &Limits::default()).unwrap().unwrap();
        assert_eq!(n, LOOKUP.len());
        assert_eq!(f, frame(&[("request", b"lookup"), ("cache_type", b"smtpd"), ("cache_id", b"PROBE&s=probe&l=1"),]));
    }

    #[test]
    fn empty_list_is_one_nul() {
        let (f, n) = decode(b"\0", &Limits::default()).unwrap().unwrap();
        assert!(f.is_empty());
        assert_eq!(n, 1);
        assert_eq!(encode_to_vec(&Frame::new()).unwrap(), b"\0");
    }

    #[test]
    fn empty_values_and_binary_values() {
        let wire = b"keyname\0\0x\0\xff\x01\x7f\0\0";
        let (f, n) = decode(wire, &Limits::default()).unwrap().unwrap();
        assert_eq!(n, wire.len());
        assert_eq!(f.get("keyname"), Some(&b""[..]));
        assert_eq!(f.get("x"), Some(&b"\xff\x01\x7f"[..]));
        assert_eq!(f.get("missing"), None);
        assert_eq!(encode_to_vec(&f).unwrap(), wire);
    }

    #[test]
    fn bytes_after_the_terminator_are_left_alone() {
        let mut buf = LOOKUP.to_vec();
        buf.extend_from_slice(b"request\0se");
        let (_, n) = decode(&buf, &Limits::default()).unwrap().unwrap();
        assert_eq!(n, LOOKUP.len());
        assert_eq!(decode(&buf[n..], &Limits::default()).unwrap(), None);
    }

    #[test]
    fn incomplete_at_every_split_point() {
        for cut in 0..LOOKUP.len() {
            assert_eq!(decode(&LOOKUP[..cut], &Limits::default()).unwrap(), None, "cut at {cut}");
        }
    }

    #[test]
    fn resumable_decoder_matches_one_shot_at_every_split_point() {
        let (want, _) = decode(LOOKUP, &Limits::default()).unwrap().unwrap();
        for cut in 0..LOOKUP.len() {
            let mut d = Decoder::new(Limits::default());
            assert_eq!(d.decode(&LOOKUP[..cut]).unwrap(), None, "cut at {cut}");
            let (got, n) = d.decode(LOOKUP).unwrap().unwrap();
            assert_eq!((got, n), (want.clone(), LOOKUP.len()), "cut at {cut}");
        }
        // One byte at a time.
        let mut d = Decoder::new(Limits::default());
        for end in 0..LOOKUP.len() {
            assert_eq!(d.decode(&LOOKUP[..end]).unwrap(), None);
        }
        assert_eq!(d.decode(LOOKUP).unwrap().unwrap().0, want);
    }

    #[test]
    fn decoder_starts_afresh_after_a_frame() {
        let mut d = Decoder::new(Limits::default());
        let mut buf = LOOKUP.to_vec();
        buf.extend_from_slice(b"a\0b\0\0");
        let (_, n) = d.decode(&buf).unwrap().unwrap();
        buf.drain(..n);
        let (f, n) = d.decode(&buf).unwrap().unwrap();
        assert_eq!((f, n), (frame(&[("a", b"b")]), 5));
    }

    #[test]
    fn decoder_restarts_if_the_buffer_shrinks() {
        let mut d = Decoder::new(Limits::default());
        assert_eq!(d.decode(b"abc\0de").unwrap(), None);
        // Contract broken by the caller: shorter buffer. It must not index
        // out of bounds or misparse.
        let (f, _) = d.decode(b"x\0\0\0").unwrap().unwrap();
        assert_eq!(f, frame(&[("x", b"")]));
    }

    #[test]
    fn frame_size_limit() {
        let limits = Limits { max_frame_bytes: LOOKUP.len(), ..Limits::default() };
        // Exactly at the limit: accepted.
        assert!(decode(LOOKUP, &limits).unwrap().is_some());
        // One byte more that arrives before the terminator: rejected as soon
        // as the limit is reached, while still incomplete.
        let mut longer = LOOKUP[..LOOKUP.len() - 2].to_vec();
        longer.extend_from_slice(b"XX");
        assert_eq!(longer.len(), limits.max_frame_bytes);
        assert_eq!(decode(&longer, &limits), Err(FrameError::TooLarge { limit: LOOKUP.len() }));
        // Below the limit and incomplete: just incomplete.
        assert_eq!(decode(&longer[..longer.len() - 1], &limits), Ok(None));
        // Complete but too large.
        let mut big = LOOKUP[..LOOKUP.len() - 2].to_vec();
        big.extend_from_slice(b"X\0\0");
        assert_eq!(decode(&big, &limits), Err(FrameError::TooLarge { limit: LOOKUP.len() }));
    }

    #[test]
    fn default_limits_stop_an_endless_value() {
        let limits = Limits::default();
        let mut buf = b"request\0update\0cache_type\0smtpd\0cache_id\0x\0session\0".to_vec();
        buf.resize(limits.max_frame_bytes - 1, b'A');
        assert_eq!(decode(&buf, &limits), Ok(None));
        buf.push(b'A');
        assert_eq!(decode(&buf, &limits), Err(FrameError::TooLarge { limit: limits.max_frame_bytes }));
        // The resumable decoder detects it too.
        let mut d = Decoder::new(limits);
        assert_eq!(d.decode(&buf[..1000]), Ok(None));
        assert!(matches!(d.decode(&buf), Err(FrameError::TooLarge { .. })));
    }

    #[test]
    fn name_length_limit() {
        let limits = Limits { max_name_bytes: 4, ..Limits::default() };
        assert!(decode(b"abcd\0v\0\0", &limits).unwrap().is_some());
        assert_eq!(decode(b"abcde\0v\0\0", &limits), Err(FrameError::NameTooLong { limit: 4 }));
        // Detected while the name is still arriving.
        assert_eq!(decode(b"abcd", &limits), Ok(None));
        assert_eq!(decode(b"abcde", &limits), Err(FrameError::NameTooLong { limit: 4 }));
        assert_eq!(decode(b"a\0b\0abcde", &limits), Err(FrameError::NameTooLong { limit: 4 }));
        // Values are not names: a long value is fine.
        assert!(decode(b"a\0abcdefgh\0\0", &limits).unwrap().is_some());
        assert_eq!(decode(b"a\0abcdefgh", &limits), Ok(None));
    }

    #[test]
    fn attribute_count_limit() {
        let limits = Limits { max_attrs: 2, ..Limits::default() };
        assert_eq!(decode(b"a\0\0b\0\0\0", &limits).unwrap().unwrap().0.len(), 2);
        assert_eq!(decode(b"a\0\0b\0\0c\0", &limits), Err(FrameError::TooManyAttributes { limit: 2 }));
        assert_eq!(decode(b"a\0\0b\0\0c\0\0\0", &limits), Err(FrameError::TooManyAttributes { limit: 2 }));
    }

    #[test]
    fn zero_limits_do_not_panic() {
        let limits = Limits { max_frame_bytes: 0, max_name_bytes: 0, max_attrs: 0 };
        assert_eq!(decode(b"", &limits), Ok(None));
        assert_eq!(decode(b"\0", &limits), Err(FrameError::TooLarge { limit: 0 }));
        let limits = Limits { max_attrs: 0, ..Limits::default() };
        assert!(decode(b"\0", &limits).unwrap().is_some());
        assert_eq!(decode(b"a\0", &limits), Err(FrameError::TooManyAttributes { limit: 0 }));
    }

    #[test]
    fn non_utf8_name_is_rejected() {
        assert_eq!(decode(b"ok\0v\0\xff\xfe\0v\0\0", &Limits::default()), Err(FrameError::NonUtf8Name { index: 1 }));
    }

    #[test]
    fn value_encodings() {
        let mut f = Frame::new();
        f.push_str("request", "seed")
            .push_int("size", 32)
            .push_int("status", u32::MAX)
            .push_data("seed", b"hello")
            .push_data("empty", b"");
        assert_eq!(
            encode_to_vec(&f).unwrap(),
            b"request\0seed\0size\x0032\0status\x004294967295\0seed\0aGVsbG8=\0empty\0\0\0"
        );
    }

    #[test]
    fn encode_rejects_what_would_not_read_back() {
        let mut out = b"prefix".to_vec();
        let bad = frame(&[("a", b"1"), ("", b"2")]);
        assert_eq!(encode(&bad, &mut out), Err(EncodeError::EmptyName { index: 1 }));
        let bad = frame(&[("a\0b", b"1")]);
        assert_eq!(encode(&bad, &mut out), Err(EncodeError::NulInName { index: 0 }));
        let mut bad = Frame::new();
        bad.push_str("cache_id", "x\0y");
        assert_eq!(encode(&bad, &mut out), Err(EncodeError::NulInValue { index: 0 }));
        assert_eq!(out, b"prefix", "output must be untouched on error");
    }

    #[test]
    fn encode_appends() {
        let mut out = b"x".to_vec();
        encode(&frame(&[("a", b"b")]), &mut out).unwrap();
        assert_eq!(out, b"xa\0b\0\0");
    }

    #[test]
    fn round_trip_keeps_order_and_duplicates() {
        let f = frame(&[("b", b"2"), ("a", b"1"), ("b", b"3")]);
        let wire = encode_to_vec(&f).unwrap();
        assert_eq!(decode(&wire, &Limits::default()).unwrap().unwrap(), (f, wire.len()));
    }

    #[test]
    fn debug_hides_values() {
        let f = frame(&[("session", b"SECRETSECRET")]);
        let shown = format!("{f:?}");
        assert!(shown.contains("session"), "{shown}");
        assert!(shown.contains("12 bytes"), "{shown}");
        assert!(!shown.contains("SECRET"), "{shown}");
    }
}
