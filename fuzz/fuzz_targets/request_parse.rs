//! Fuzzes the tlsmgr request parser (`tlskeeper_protocol::tlsmgr`) the way
//! the server reaches it: bytes -> attr0 frames -> typed `Request`, or a
//! `RequestError` and the failure reply it maps to.
//!
//! **Input.** The bytes a client sends on a connection, as is: the server's
//! own sequence (`server.rs`): the master(8) trigger check on the first
//! bytes, then a `Decoder` with the server's default `Limits`, each frame
//! drained and handed to `Request::from_frame`, until the input is used up
//! or the decoder fails (where the server closes the connection).
//!
//! **Asserts.**
//!
//! 1. Nothing panics, and the trigger check answers `Wakeup` exactly for
//!    input starting with `W\0`.
//! 2. A parsed request, encoded the way the client (`client.rs`) sends it
//!    (`Request::to_frame`, then `attr0::encode`), gives back the very bytes
//!    it was parsed from, and those parse back to the same request. The
//!    parser is strict (exact attributes and order, canonical numbers and
//!    base64), so a request has exactly one spelling: any other would mean
//!    a value read as something other than what it says.
//! 3. A request that fails to parse is answered with one of seven fixed
//!    byte strings (the nine failure replies and the bare `FAIL`), the one
//!    that belongs to its request type: a failure reply never echoes
//!    anything the client sent, nor anything else. Its error message, which
//!    the server logs, is printable ASCII of bounded length.
//!
//! **Why.** The request is the attacker's whole influence on the daemon;
//! the strict parse is what keeps glibc- and Postfix-style laxness (signs,
//! wrapped numbers, base64 after padding) out, and the failure path is where
//! tlsmgr 3.7 leaks stale data.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tlskeeper_protocol::attr0::{self, Decoder, Limits};
use tlskeeper_protocol::tlsmgr::{self, Prefix, Reply, Request, RequestError, RequestKind};

/// The only bytes a failure reply may be: `status=FAIL` (4294967294) with
/// the request type's data attributes empty or zero.
const BARE_FAIL: &[u8] = b"status\x004294967294\0\0";
const FAILURE_REPLIES: [(RequestKind, &[u8]); 9] = [
    (RequestKind::Seed, b"status\x004294967294\0seed\0\0\0"),
    (RequestKind::Policy, b"status\x004294967294\0cachable\x000\0timeout\x000\0\0"),
    (RequestKind::Lookup, b"status\x004294967294\0session\0\0\0"),
    (RequestKind::Update, b"status\x004294967294\0\0"),
    (RequestKind::Delete, b"status\x004294967294\0\0"),
    (RequestKind::TicketKey, b"status\x004294967294\0keybuf\0\0\0"),
    (RequestKind::Take, b"status\x004294967294\0session\0\0\0"),
    (RequestKind::Seal, b"status\x004294967294\0ticket\0\0lifetime\x000\0\0"),
    (RequestKind::Open, b"status\x004294967294\0plaintext\0\0\0"),
];

/// Longest error message: a fixed text plus at most two names, each cut at
/// 64 input bytes and escaped (at most 4 characters a byte) plus "...".
const MAX_MESSAGE: usize = 120 + 2 * (64 * 4 + 3);

fuzz_target!(|data: &[u8]| {
    let wakeup = tlsmgr::wakeup_prefix(data);
    match data {
        [b'W', 0, ..] => assert_eq!(wakeup, Prefix::Wakeup),
        [] | [b'W'] => assert_eq!(wakeup, Prefix::NeedMore),
        _ => assert_eq!(wakeup, Prefix::NotWakeup),
    }
    // On `Wakeup` the server just closes the connection; the bytes are
    // parsed anyway, as if a client had sent them.

    let mut decoder = Decoder::new(Limits::default());
    let mut input = data.to_vec();
    while let Ok(Some((frame, used))) = decoder.decode(&input) {
        let wire: Vec<u8> = input.drain(..used).collect();
        match Request::from_frame(&frame) {
            Ok(request) => check_request(&request, &wire),
            Err(e) => check_failure(&e),
        }
    }
});

/// 2: the client's encoding of the request is the input, byte for byte, and
/// parses back to the same request.
fn check_request(request: &Request, wire: &[u8]) {
    let sent = attr0::encode_to_vec(&request.to_frame()).expect("a parsed request has no NUL, so it encodes");
    assert_eq!(sent, wire, "the client would send {request:?} differently from the bytes it was parsed from");
    let (frame, used) = attr0::decode(&sent, &Limits::default())
        .expect("the client's encoding decodes")
        .expect("the client's encoding is a whole list");
    assert_eq!(used, sent.len());
    assert_eq!(Request::from_frame(&frame).as_ref(), Ok(request), "round trip changed the request");
}

/// 3: the reply is a fixed template chosen by the request type alone, and
/// the message is safe to log.
fn check_failure(e: &RequestError) {
    let reply = e.reply();
    let wire = attr0::encode_to_vec(&reply.to_frame()).expect("a failure reply encodes");
    match e.kind() {
        None => {
            assert!(matches!(e, RequestError::NotARequest { .. } | RequestError::UnknownRequest { .. }));
            assert_eq!(reply, Reply::Bare { status: tlsmgr::Status::Fail });
            assert_eq!(wire, BARE_FAIL, "{e}: bare failure reply is not the template");
        }
        Some(kind) => {
            assert!(matches!(e, RequestError::Malformed { .. }));
            assert_eq!(reply, Reply::failure(kind));
            let template = FAILURE_REPLIES.iter().find(|(k, _)| *k == kind).map(|(_, t)| *t);
            assert_eq!(Some(wire.as_slice()), template, "{e}: failure reply is not the template for {kind}");
        }
    }
    let message = e.to_string();
    assert!(message.len() <= MAX_MESSAGE, "error message of {} bytes: {message}", message.len());
    assert!(
        message.bytes().all(|b| (0x20..0x7f).contains(&b)),
        "error message with non-printable or non-ASCII bytes: {message:?}"
    );
}
