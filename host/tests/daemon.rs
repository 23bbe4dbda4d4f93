//! End-to-end tests of the daemon: the real core component behind the real
//! server on a UNIX socket, driven with raw attr0 bytes built here (not with
//! the crate's codec), so the wire itself is what is checked.
//!
//! The last group runs the `tlskeeper` binary itself as a child process.

#![allow(clippy::unwrap_used)]

mod common;

use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;

use std::process::Command;
use std::sync::{Arc, Barrier, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use common::{BIN, Daemon, START_SECS, TestServer, cli_client, ok_stdout, stdout};
use tlskeeper::config::Settings;
use tlskeeper_protocol::tlsmgr::{Reply, Request, Status};

// ---------------------------------------------------------------------------
// Wire helpers, independent of the crate's codec.
// ---------------------------------------------------------------------------

/// The 26 bytes every connection must start with (reference §1.5).
const ANNOUNCEMENT: &[u8] = b"protocol\0tlsmgr_protocol\0\0";
/// Read and write timeout on raw sockets: a bug fails a test, never hangs it.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

const OK: &str = "0";
const ERR: &str = "4294967295";

/// An attr0 list: `name\0value\0` pairs and the terminating `\0`.
fn list(pairs: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in pairs {
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        out.extend_from_slice(value);
        out.push(0);
    }
    out.push(0);
    out
}

fn b64(bytes: &[u8]) -> Vec<u8> {
    STANDARD.encode(bytes).into_bytes()
}

fn unb64(text: &[u8]) -> Vec<u8> {
    STANDARD.decode(text).unwrap_or_else(|e| panic!("reply value {} is not base64: {e}", show(text)))
}

/// Bytes as an escaped string, for readable assertion messages.
fn show(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

fn seed_req(size: &[u8]) -> Vec<u8> {
    list(&[("request", b"seed"), ("size", size)])
}

fn policy_req(cache: &str) -> Vec<u8> {
    list(&[("request", b"policy"), ("cache_type", cache.as_bytes())])
}

fn lookup_req(cache: &str, id: &str) -> Vec<u8> {
    list(&[("request", b"lookup"), ("cache_type", cache.as_bytes()), ("cache_id", id.as_bytes())])
}

fn update_req(cache: &str, id: &str, session: &[u8]) -> Vec<u8> {
    list(&[
        ("request", b"update"),
        ("cache_type", cache.as_bytes()),
        ("cache_id", id.as_bytes()),
        ("session", &b64(session)),
    ])
}

fn delete_req(cache: &str, id: &str) -> Vec<u8> {
    list(&[("request", b"delete"), ("cache_type", cache.as_bytes()), ("cache_id", id.as_bytes())])
}

fn tktkey_req(name: &[u8]) -> Vec<u8> {
    list(&[("request", b"tktkey"), ("keyname", &b64(name))])
}

/// A reply as it must appear on the wire, DATA values given raw.
fn reply(status: &str, data: &[(&str, &[u8])]) -> Vec<u8> {
    let mut pairs: Vec<(&str, &[u8])> = vec![("status", status.as_bytes())];
    pairs.extend_from_slice(data);
    list(&pairs)
}

/// Length of the first whole attr0 list in `buf`, if there is one.
fn list_len(buf: &[u8]) -> Option<usize> {
    let mut pos = 0;
    loop {
        let name_end = pos + buf.get(pos..)?.iter().position(|&b| b == 0)?;
        if name_end == pos {
            return Some(pos + 1); // an empty name is the terminator
        }
        let value_end = name_end + 1 + buf.get(name_end + 1..)?.iter().position(|&b| b == 0)?;
        pos = value_end + 1;
    }
}

/// The `(name, value)` pairs of one whole list.
fn pairs(frame: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let body = &frame[..frame.len() - 1];
    let tokens: Vec<&[u8]> = body.split(|&b| b == 0).collect();
    // `body` ends with the last value's NUL, so the split ends with "".
    tokens[..tokens.len() - 1].chunks(2).map(|c| (c[0].to_vec(), c[1].to_vec())).collect()
}

/// A raw connection that has already read (and checked) the announcement.
struct Raw {
    s: UnixStream,
    buf: Vec<u8>,
}

impl Raw {
    fn connect(server: &TestServer) -> Raw {
        Self::over(server.raw())
    }

    fn over(s: UnixStream) -> Raw {
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        let mut raw = Raw { s, buf: Vec::new() };
        let announcement = raw.frame();
        assert_eq!(show(&announcement), show(ANNOUNCEMENT));
        assert!(raw.buf.is_empty(), "unsolicited bytes after the announcement: {}", show(&raw.buf));
        raw
    }

    fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).unwrap();
    }

    /// The next whole list from the server.
    fn frame(&mut self) -> Vec<u8> {
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(n) = list_len(&self.buf) {
                return self.buf.drain(..n).collect();
            }
            match self.s.read(&mut chunk) {
                Ok(0) => panic!("server closed the connection; partial reply: {}", show(&self.buf)),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => panic!("no reply ({e}); partial reply: {}", show(&self.buf)),
            }
        }
    }

    /// Send one request and return its reply.
    fn ask(&mut self, request: &[u8]) -> Vec<u8> {
        self.send(request);
        self.frame()
    }

    /// The server closes the connection without sending anything more.
    fn expect_closed(&mut self, what: &str) {
        assert!(self.buf.is_empty(), "{what}: unexpected bytes {}", show(&self.buf));
        let mut chunk = [0u8; 4096];
        loop {
            match self.s.read(&mut chunk) {
                Ok(0) => return,
                // Closing with our bytes still unread makes Linux report a
                // reset rather than EOF; either way the server closed.
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Ok(n) => panic!("{what}: expected the connection to close, got {}", show(&chunk[..n])),
                Err(e) => panic!("{what}: expected the connection to close, got {e}"),
            }
        }
    }

    /// Nothing arrives within `wait` (and the connection is still open).
    fn expect_silence(&mut self, wait: Duration, what: &str) {
        self.s.set_read_timeout(Some(wait)).unwrap();
        let mut chunk = [0u8; 64];
        match self.s.read(&mut chunk) {
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Ok(0) => panic!("{what}: the server closed the connection"),
            Ok(n) => panic!("{what}: unexpected bytes {}", show(&chunk[..n])),
            Err(e) => panic!("{what}: {e}"),
        }
        self.s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    }
}

/// Asserts `frame` is `status=0 seed=<size random bytes>` and returns them.
fn seed_bytes(frame: &[u8], size: usize) -> Vec<u8> {
    let p = pairs(frame);
    assert_eq!(p.len(), 2, "{}", show(frame));
    assert_eq!((p[0].0.as_slice(), p[0].1.as_slice()), (&b"status"[..], &b"0"[..]), "{}", show(frame));
    assert_eq!(p[1].0, b"seed", "{}", show(frame));
    let seed = unb64(&p[1].1);
    assert_eq!(seed.len(), size, "{}", show(frame));
    seed
}

/// Asserts `frame` is `status=0 keybuf=<88 bytes>` and returns the keybuf.
fn keybuf(frame: &[u8]) -> Vec<u8> {
    let p = pairs(frame);
    assert_eq!(p.len(), 2, "{}", show(frame));
    assert_eq!((p[0].0.as_slice(), p[0].1.as_slice()), (&b"status"[..], &b"0"[..]), "{}", show(frame));
    assert_eq!(p[1].0, b"keybuf", "{}", show(frame));
    assert_eq!(p[1].1.len(), 120, "88 bytes are 120 base64 characters: {}", show(frame));
    let key = unb64(&p[1].1);
    assert_eq!(key.len(), 88);
    key
}

/// `tout`: the little-endian `time_t` at offset 80 of a keybuf.
fn tout(keybuf: &[u8]) -> i64 {
    i64::from_le_bytes(keybuf[80..88].try_into().unwrap())
}

fn start() -> i64 {
    i64::try_from(START_SECS).unwrap()
}

// ---------------------------------------------------------------------------
// 1-5: the protocol on the socket.
// ---------------------------------------------------------------------------

/// Proves every connection first receives exactly the 26-byte announcement and nothing else unasked.
#[test]
fn announcement_is_exactly_the_26_bytes_and_nothing_more() {
    let server = TestServer::start();
    for _ in 0..2 {
        let mut s = server.raw();
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let mut got = [0u8; 26];
        s.read_exact(&mut got).unwrap();
        assert_eq!(show(&got), show(b"protocol\0tlsmgr_protocol\0\0"));
        let mut raw = Raw { s, buf: Vec::new() };
        raw.expect_silence(Duration::from_millis(200), "after the announcement");
    }
}

/// Proves the reference smtpd conversation (§1.6) gets tlsmgr's replies, byte for byte where they are deterministic.
#[test]
fn smtpd_conversation_matches_the_reference_transcript() {
    let server = TestServer::start();
    let mut c = Raw::connect(&server);

    // seed 32, twice: OK, 32 bytes each, different.
    let first = seed_bytes(&c.ask(b"request\0seed\0size\x0032\0\0"), 32);
    let second = seed_bytes(&c.ask(&seed_req(b"32")), 32);
    assert_ne!(first, second);

    // policy smtpd.
    assert_eq!(
        show(&c.ask(b"request\0policy\0cache_type\0smtpd\0\0")),
        show(b"status\x000\0cachable\x001\0timeout\x003600\0\0")
    );

    // tktkey with an empty name: a new key, tout = now + T/2 - 1.
    let reply_new = c.ask(b"request\0tktkey\0keyname\0\0\0");
    let key = keybuf(&reply_new);
    assert_eq!(tout(&key), start() + 1799);
    // tktkey with that key's name: the identical 88 bytes.
    let reply_named = c.ask(&tktkey_req(&key[..16]));
    assert_eq!(show(&reply_named), show(&reply_new));

    // update / lookup / delete of a session under a real smtpd cache id.
    let id = "0C41A67197757F77600C01A3B033ADCE318B8D2384C8490CC5B19103EDC24F14&s=127.0.0.1:10025&l=805306720";
    let session: Vec<u8> = (0..138u8).map(|i| i.wrapping_mul(37) ^ 0x30).collect();
    assert_eq!(show(&c.ask(&update_req("smtpd", id, &session))), show(b"status\x000\0\0"));
    assert_eq!(show(&c.ask(&lookup_req("smtpd", id))), show(&reply(OK, &[("session", &b64(&session))])));

    // The captured lookup request of §1.6, byte for byte, and its reply.
    assert_eq!(show(&c.ask(&update_req("smtpd", "PROBE&s=probe&l=1", b"hello"))), show(b"status\x000\0\0"));
    let captured = b"request\0lookup\0cache_type\0smtpd\0cache_id\0PROBE&s=probe&l=1\0\0";
    assert_eq!(show(&c.ask(captured)), show(b"status\x000\0session\0aGVsbG8=\0\0"));

    assert_eq!(show(&c.ask(&delete_req("smtpd", id))), show(b"status\x000\0\0"));
    assert_eq!(show(&c.ask(&lookup_req("smtpd", id))), show(b"status\x004294967295\0session\0\0\0"));
    assert_eq!(show(&c.ask(&delete_req("smtpd", id))), show(b"status\x004294967295\0\0"));

    // A lookup of an id never stored: ERR with an empty session.
    assert_eq!(
        show(&c.ask(&lookup_req("smtpd", "NEVER&s=smtp&l=805306720"))),
        show(b"status\x004294967295\0session\0\0\0")
    );
}

/// Proves a ticket key's encrypt window ends at tout and its decrypt window at tout + T/2, then ERR echoes the name.
#[test]
fn ticket_key_lifecycle_on_the_scripted_clock() {
    let server = TestServer::start();
    let mut c = Raw::connect(&server);

    let a_reply = c.ask(&tktkey_req(b""));
    let a = keybuf(&a_reply);
    let a_name = a[..16].to_vec();
    assert_eq!(tout(&a), start() + 1799);

    // Still the encrypt key in its last second (tout > now).
    server.clock.advance_secs(1798);
    assert_eq!(show(&c.ask(&tktkey_req(b""))), show(&a_reply));

    // At tout a new key is minted.
    server.clock.advance_secs(1);
    let b_reply = c.ask(&tktkey_req(b""));
    let b = keybuf(&b_reply);
    assert_ne!(b[..16], a[..16], "a new name");
    assert_ne!(b[16..80], a[16..80], "new secrets");
    assert_eq!(tout(&b), start() + 1799 + 1799);
    assert_eq!(show(&c.ask(&tktkey_req(b""))), show(&b_reply), "the new key is now the encrypt key");
    assert_eq!(show(&c.ask(&tktkey_req(&a_name))), show(&a_reply), "the old key still decrypts");

    // The old key decrypts until tout + T/2 (exclusive).
    server.clock.advance_secs(1799); // START + 3598
    assert_eq!(show(&c.ask(&tktkey_req(&a_name))), show(&a_reply), "last decrypting second");
    server.clock.advance_secs(1); // START + 3599 = tout + T/2
    assert_eq!(
        show(&c.ask(&tktkey_req(&a_name))),
        show(&reply(ERR, &[("keybuf", &b64(&a_name))])),
        "expired: ERR with the name echoed"
    );
    assert_eq!(show(&c.ask(&tktkey_req(&b[..16]))), show(&b_reply), "the newer key still decrypts");
}

/// Proves a session stored at t is found at t + T and gone at t + T + 1.
#[test]
fn session_expires_after_the_cache_timeout() {
    let server = TestServer::start();
    let mut c = Raw::connect(&server);
    let found = reply(OK, &[("session", &b64(b"session-bytes"))]);
    let missing = b"status\x004294967295\0session\0\0\0";

    assert_eq!(show(&c.ask(&update_req("smtpd", "id-expiry", b"session-bytes"))), show(b"status\x000\0\0"));
    server.clock.advance_secs(3600);
    assert_eq!(show(&c.ask(&lookup_req("smtpd", "id-expiry"))), show(&found), "t + 3600: still fresh");
    server.clock.advance_secs(1);
    assert_eq!(show(&c.ask(&lookup_req("smtpd", "id-expiry"))), show(missing), "t + 3601: expired");
    // And it stays gone (the expired entry was removed, not just hidden once).
    assert_eq!(show(&c.ask(&lookup_req("smtpd", "id-expiry"))), show(missing));
}

/// Proves requests pipelined in one write are each answered, in order.
#[test]
fn pipelined_requests_are_answered_in_order() {
    let server = TestServer::start();
    let mut c = Raw::connect(&server);
    let mut batch = Vec::new();
    batch.extend(seed_req(b"16"));
    batch.extend(policy_req("smtp"));
    batch.extend(update_req("smtp", "pipe-1", b"one"));
    batch.extend(update_req("lmtp", "pipe-2", b"two"));
    batch.extend(lookup_req("smtp", "pipe-1"));
    batch.extend(lookup_req("lmtp", "pipe-2"));
    batch.extend(tktkey_req(b""));
    batch.extend(delete_req("smtp", "pipe-1"));
    batch.extend(lookup_req("smtp", "pipe-1"));
    batch.extend(policy_req("nosuch"));
    batch.extend(seed_req(b"255"));
    c.send(&batch);

    seed_bytes(&c.frame(), 16);
    assert_eq!(show(&c.frame()), show(b"status\x000\0cachable\x001\0timeout\x003600\0\0"));
    assert_eq!(show(&c.frame()), show(b"status\x000\0\0"));
    assert_eq!(show(&c.frame()), show(b"status\x000\0\0"));
    assert_eq!(show(&c.frame()), show(&reply(OK, &[("session", &b64(b"one"))])));
    assert_eq!(show(&c.frame()), show(&reply(OK, &[("session", &b64(b"two"))])));
    assert_eq!(tout(&keybuf(&c.frame())), start() + 1799);
    assert_eq!(show(&c.frame()), show(b"status\x000\0\0"));
    assert_eq!(show(&c.frame()), show(b"status\x004294967295\0session\0\0\0"));
    assert_eq!(show(&c.frame()), show(b"status\x004294967294\0cachable\x000\0timeout\x000\0\0"));
    seed_bytes(&c.frame(), 255);
    c.expect_silence(Duration::from_millis(100), "after the last pipelined reply");
}

// ---------------------------------------------------------------------------
// 6: bad input.
// ---------------------------------------------------------------------------

enum Expect {
    /// Exactly this reply, after which the connection still serves.
    Reply(Vec<u8>),
    /// The server closes the connection without replying.
    Closed,
}

struct Case {
    what: &'static str,
    /// A request answered OK on the same connection first (its reply's data
    /// must not reappear in the reply under test).
    before: Option<Vec<u8>>,
    send: Vec<u8>,
    /// Shut down our write side after sending.
    then_close: bool,
    expect: Expect,
}

fn case(what: &'static str, send: Vec<u8>, expect: Expect) -> Case {
    Case { what, before: None, send, then_close: false, expect }
}

fn bare_fail() -> Expect {
    Expect::Reply(b"status\x004294967294\0\0".to_vec())
}

fn seed_fail() -> Expect {
    Expect::Reply(b"status\x004294967294\0seed\0\0\0".to_vec())
}

fn update_fail() -> Expect {
    Expect::Reply(b"status\x004294967294\0\0".to_vec())
}

fn lookup_fail() -> Expect {
    Expect::Reply(b"status\x004294967294\0session\0\0\0".to_vec())
}

fn tktkey_fail() -> Expect {
    Expect::Reply(b"status\x004294967294\0keybuf\0\0\0".to_vec())
}

fn seal_fail() -> Expect {
    Expect::Reply(b"status\x004294967294\0ticket\0\0lifetime\x000\0\0".to_vec())
}

fn open_fail() -> Expect {
    Expect::Reply(b"status\x004294967294\0plaintext\0\0\0".to_vec())
}

/// The one refusal every ticket that does not open gets: no oracle.
fn open_refused() -> Expect {
    Expect::Reply(b"status\x004294967295\0plaintext\0\0\0".to_vec())
}

/// Proves each malformed input gets tlsmgr's failure reply (or a close), never stale data, and the daemon survives.
#[test]
fn bad_input_table() {
    let server = TestServer::start();
    let unknown_name = [0x5a_u8; 16];
    let mut big = b"request\0update\0cache_type\0smtpd\0cache_id\0big\0session\0".to_vec();
    big.resize(big.len() + 300 * 1024, b'A');
    big.extend_from_slice(b"\0\0");
    // A lookup list of exactly `len` bytes, terminator included.
    let lookup_of_len = |len: usize| {
        let shell = lookup_req("smtpd", "").len();
        lookup_req("smtpd", &"i".repeat(len - shell))
    };
    let mut long_name = vec![b'n'; 100];
    long_name.extend_from_slice(b"\0v\0\0");

    let cases = vec![
        case("first attribute is not request", b"cache_type\0smtpd\0request\0lookup\0\0".to_vec(), bare_fail()),
        case("empty list", b"\0".to_vec(), bare_fail()),
        case("unknown request name", b"request\0frobnicate\0\0".to_vec(), bare_fail()),
        case("request=W as a list is not a trigger", b"request\0W\0\0".to_vec(), bare_fail()),
        case("seed size 0", seed_req(b"0"), seed_fail()),
        case("seed size 256", seed_req(b"256"), seed_fail()),
        case("seed size 4294967295", seed_req(b"4294967295"), seed_fail()),
        case("seed size 4294967296 (glibc wraps it to 0)", seed_req(b"4294967296"), seed_fail()),
        case("seed size not numeric", seed_req(b"abc"), seed_fail()),
        case("seed size -1", seed_req(b"-1"), seed_fail()),
        case("seed size empty", seed_req(b""), seed_fail()),
        case("seed size +5", seed_req(b"+5"), seed_fail()),
        case("seed size with a leading zero", seed_req(b"032"), seed_fail()),
        Case {
            what: "lookup without cache_id after a tktkey (3.7 leaks the key here)",
            before: Some(tktkey_req(b"")),
            ..case("", b"request\0lookup\0cache_type\0smtpd\0\0".to_vec(), lookup_fail())
        },
        Case {
            what: "malformed seed after a seed",
            before: Some(seed_req(b"32")),
            ..case("", seed_req(b"0"), seed_fail())
        },
        case(
            "update with invalid base64 session",
            list(&[("request", b"update"), ("cache_type", b"smtpd"), ("cache_id", b"x"), ("session", b"!!!!")]),
            update_fail(),
        ),
        case(
            "update with base64 data after the padding",
            list(&[("request", b"update"), ("cache_type", b"smtpd"), ("cache_id", b"x"), ("session", b"AA==AAAA")]),
            update_fail(),
        ),
        case(
            "tktkey with invalid base64 keyname",
            list(&[("request", b"tktkey"), ("keyname", b"*not-b64*")]),
            tktkey_fail(),
        ),
        case("tktkey name of 1 byte", tktkey_req(&[7]), tktkey_fail()),
        case("tktkey name of 15 bytes", tktkey_req(&[7; 15]), tktkey_fail()),
        case("tktkey name of 17 bytes", tktkey_req(&[7; 17]), tktkey_fail()),
        case(
            "tktkey with an unknown 16-byte name",
            tktkey_req(&unknown_name),
            Expect::Reply(reply(ERR, &[("keybuf", &b64(&unknown_name))])),
        ),
        case("extra attribute after the last one", b"request\0seed\0size\x0032\0extra\0x\0\0".to_vec(), seed_fail()),
        case("request attribute repeated", b"request\0seed\0request\0seed\0size\x001\0\0".to_vec(), seed_fail()),
        case(
            "attributes in the wrong order",
            b"request\0lookup\0cache_id\0x\0cache_type\0smtpd\0\0".to_vec(),
            lookup_fail(),
        ),
        case(
            "bogus cache type in policy",
            policy_req("bogus"),
            Expect::Reply(b"status\x004294967294\0cachable\x000\0timeout\x000\0\0".to_vec()),
        ),
        case("bogus cache type in lookup", lookup_req("bogus", "x"), lookup_fail()),
        case("bogus cache type in update", update_req("bogus", "x", b"s"), update_fail()),
        case("binary junk with NULs, control-character name", b"\x01\x02\x03\0\x7f\xff\x80\0\0".to_vec(), bare_fail()),
        case("binary junk with NULs, non-UTF-8 name", b"\xff\xfe\xfd\0\x01\x02\0\0".to_vec(), Expect::Closed),
        case("attribute name of 100 bytes", long_name, Expect::Closed),
        case("endless attribute name", vec![b'x'; 4096], Expect::Closed),
        case("frame over 256 KiB", big, Expect::Closed),
        case(
            "frame of exactly 256 KiB (the limit)",
            lookup_of_len(256 * 1024),
            Expect::Reply(b"status\x004294967295\0session\0\0\0".to_vec()),
        ),
        case("frame of 256 KiB + 1", lookup_of_len(256 * 1024 + 1), Expect::Closed),
        case(
            "session over the 16 KiB default limit",
            update_req("smtpd", "too-big", &[0x42; 16 * 1024 + 1]),
            Expect::Reply(b"status\x004294967295\0\0".to_vec()),
        ),
        Case {
            then_close: true,
            ..case("truncated list, then the client closes", b"request\0seed\0size\x003".to_vec(), Expect::Closed)
        },
        case("request attribute with an empty value", b"request\0\0\0".to_vec(), bare_fail()),
        // "size=3\02": the NUL splits the number, and "2" becomes an
        // attribute name of its own.
        case("NUL inside a number", b"request\0seed\0size\x003\x002\0\0\0".to_vec(), seed_fail()),
        case("lookup without cache_type", b"request\0lookup\0cache_id\0x\0\0".to_vec(), lookup_fail()),
        case("update without session", b"request\0update\0cache_type\0smtpd\0cache_id\0x\0\0".to_vec(), update_fail()),
        case(
            "policy without cache_type",
            b"request\0policy\0\0".to_vec(),
            Expect::Reply(b"status\x004294967294\0cachable\x000\0timeout\x000\0\0".to_vec()),
        ),
        case("delete without cache_id", b"request\0delete\0cache_type\0smtpd\0\0".to_vec(), bare_fail()),
        case(
            "cache_id of 200 KiB",
            lookup_req("smtpd", &"i".repeat(200 * 1024)),
            Expect::Reply(b"status\x004294967295\0session\0\0\0".to_vec()),
        ),
        case("empty cache_id", lookup_req("smtpd", ""), Expect::Reply(b"status\x004294967295\0session\0\0\0".to_vec())),
        // tlskeeper's own requests: malformed lists get their FAIL shape;
        // tickets that are not ours get ERR with no plaintext, every one the
        // same (sealed_tickets.rs covers forged and expired tickets).
        case("tktseal without plaintext", b"request\0tktseal\0\0".to_vec(), seal_fail()),
        case("tktseal with invalid base64", list(&[("request", b"tktseal"), ("plaintext", b"!!!!")]), seal_fail()),
        case(
            "tktseal of a plaintext over 16 KiB",
            list(&[("request", b"tktseal"), ("plaintext", &b64(&[0x42; 16 * 1024 + 1]))]),
            Expect::Reply(b"status\x004294967295\0ticket\0\0lifetime\x000\0\0".to_vec()),
        ),
        case("tktopen without ticket", b"request\0tktopen\0\0".to_vec(), open_fail()),
        case("tktopen with invalid base64", list(&[("request", b"tktopen"), ("ticket", b"*")]), open_fail()),
        case("tktopen of an empty ticket", list(&[("request", b"tktopen"), ("ticket", b"")]), open_refused()),
        case("tktopen of 72 zero bytes", list(&[("request", b"tktopen"), ("ticket", &b64(&[0; 72]))]), open_refused()),
        case(
            "tktopen of a ticket over 16 KiB",
            list(&[("request", b"tktopen"), ("ticket", &b64(&[0x41; 16 * 1024 + 73]))]),
            open_refused(),
        ),
        case("take without cache_id", b"request\0take\0cache_type\0smtpd\0\0".to_vec(), lookup_fail()),
        case(
            "bogus cache type in take",
            list(&[("request", b"take"), ("cache_type", b"bogus"), ("cache_id", b"x")]),
            lookup_fail(),
        ),
    ];
    assert!(cases.len() >= 30, "the table must name at least 30 bad inputs");

    // Connected throughout, and served after every case.
    let mut bystander = Raw::connect(&server);
    for c in &cases {
        let what = c.what;
        let mut conn = Raw::connect(&server);
        let mut earlier: Vec<Vec<u8>> = Vec::new();
        if let Some(before) = &c.before {
            let r = conn.ask(before);
            assert!(r.starts_with(b"status\x000\0"), "{what}: setup request failed: {}", show(&r));
            earlier = pairs(&r).into_iter().map(|(_, v)| v).filter(|v| v.len() >= 8).collect();
            assert!(!earlier.is_empty());
        }
        match &c.expect {
            Expect::Reply(want) => {
                conn.send(&c.send);
                let got = conn.frame();
                assert_eq!(show(&got), show(want), "{what}");
                for v in &earlier {
                    let raw = unb64(v);
                    assert!(!got.windows(v.len()).any(|w| w == v.as_slice()), "{what}: earlier data echoed");
                    assert!(!got.windows(raw.len()).any(|w| w == raw.as_slice()), "{what}: earlier data echoed");
                }
                // The stream is still in step: a good request works.
                seed_bytes(&conn.ask(&seed_req(b"8")), 8);
            }
            Expect::Closed => {
                // The server may close while we are still writing.
                let _ = conn.s.write_all(&c.send);
                if c.then_close {
                    conn.s.shutdown(Shutdown::Write).unwrap();
                }
                conn.expect_closed(what);
            }
        }
        seed_bytes(&bystander.ask(&seed_req(b"8")), 8);
    }

    // The daemon still serves a normal client.
    let mut client = server.client();
    match client.request(&Request::Seed { size: 32 }).unwrap() {
        Reply::Seed { status: Status::Ok, seed } => assert_eq!(seed.len(), 32),
        other => panic!("{other:?}"),
    }
}

// ---------------------------------------------------------------------------
// 7-9: clients and connections.
// ---------------------------------------------------------------------------

fn seed_ok(client: &mut tlskeeper_protocol::client::Client, size: u32) {
    match client.request(&Request::Seed { size }).unwrap() {
        Reply::Seed { status: Status::Ok, seed } => assert_eq!(seed.len(), size as usize),
        other => panic!("{other:?}"),
    }
}

/// Proves a trickling client and a silent half-request do not stop a third client's 200 requests.
#[test]
fn slow_and_stalled_clients_do_not_block_others() {
    let server = TestServer::start();
    let request = seed_req(b"32");

    // A client that stops in the middle of a request.
    let mut silent = Raw::connect(&server);
    silent.send(&request[..11]);

    // A client that sends one byte every 100 ms for a second, then waits.
    let mut slow = Raw::connect(&server);
    let (started_tx, started_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let slow_request = request.clone();
    let slow_thread = thread::spawn(move || {
        for (i, byte) in slow_request[..10].iter().enumerate() {
            slow.send(&[*byte]);
            if i == 0 {
                started_tx.send(()).unwrap();
            }
            thread::sleep(Duration::from_millis(100));
        }
        go_rx.recv().unwrap();
        slow.send(&slow_request[10..]);
        slow.frame()
    });
    started_rx.recv().unwrap();

    let mut client = server.client();
    for _ in 0..200 {
        seed_ok(&mut client, 32);
    }

    // Both bad clients were still connected all along: finishing their
    // requests gets them answered.
    go_tx.send(()).unwrap();
    seed_bytes(&slow_thread.join().unwrap(), 32);
    silent.send(&request[11..]);
    seed_bytes(&silent.frame(), 32);
}

/// Proves master(8)'s wakeup (`W`, then `\0` in a separate write) gets the announcement and a close, and the daemon keeps serving.
#[test]
fn master_wakeup_trigger_is_closed() {
    let server = TestServer::start();
    let mut trigger = Raw::connect(&server);
    trigger.send(b"W");
    trigger.expect_silence(Duration::from_millis(200), "after W alone");
    trigger.send(b"\0");
    trigger.expect_closed("after W\\0");

    let mut client = server.client();
    seed_ok(&mut client, 32);
}

/// Proves 8 concurrent clients x 200 mixed requests all succeed and each finds exactly its own sessions.
#[test]
fn concurrent_clients_each_see_their_own_sessions() {
    const THREADS: usize = 8;
    const REQUESTS: usize = 200;
    let server = TestServer::start();
    let session = |t: usize, i: usize| format!("session of client {t}, request {i}").into_bytes();
    let id = |t: usize, i: usize| format!("client-{t}-request-{i}");

    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let mut client = server.client();
            thread::spawn(move || {
                let mut key_names = Vec::new();
                for i in 0..REQUESTS {
                    match i % 4 {
                        0 => seed_ok(&mut client, 32),
                        1 => match client.request(&Request::TicketKey { key_name: Vec::new() }).unwrap() {
                            Reply::TicketKey { status: Status::Ok, keybuf } => {
                                assert_eq!(keybuf.len(), 88);
                                key_names.push(keybuf[..16].to_vec());
                            }
                            other => panic!("{other:?}"),
                        },
                        2 => {
                            let r = client.request(&Request::Update {
                                cache_type: "smtpd".into(),
                                cache_id: id(t, i),
                                session: session(t, i).into(),
                            });
                            assert_eq!(r.unwrap(), Reply::Update { status: Status::Ok });
                        }
                        _ => {
                            let r =
                                client.request(&Request::Lookup { cache_type: "smtpd".into(), cache_id: id(t, i - 1) });
                            match r.unwrap() {
                                Reply::Lookup { status: Status::Ok, session: got } => {
                                    assert_eq!(got.as_slice(), session(t, i - 1).as_slice())
                                }
                                other => panic!("client {t} request {i}: {other:?}"),
                            }
                        }
                    }
                }
                key_names
            })
        })
        .collect();
    let mut names = Vec::new();
    for w in workers {
        names.extend(w.join().unwrap());
    }
    assert_eq!(names.len(), THREADS * REQUESTS / 4);
    assert!(names.iter().all(|n| n == &names[0]), "one encrypt key for everyone while the clock stands still");

    // Every client's sessions are there, each under its own id only.
    let mut client = server.client();
    for t in 0..THREADS {
        for i in (2..REQUESTS).step_by(4) {
            match client.request(&Request::Lookup { cache_type: "smtpd".into(), cache_id: id(t, i) }).unwrap() {
                Reply::Lookup { status: Status::Ok, session: got } => {
                    assert_eq!(got.as_slice(), session(t, i).as_slice())
                }
                other => panic!("{other:?}"),
            }
        }
    }
}

// ---------------------------------------------------------------------------
// 9a: connection handling in the event loop.
// ---------------------------------------------------------------------------

/// How long a test waits for the server to notice something asynchronous
/// (a close, a timeout) before it fails.
const NOTICE_DEADLINE: Duration = Duration::from_secs(5);

/// Reads from `s` until the server closes it and returns everything read.
/// A reset counts as a close (Linux reports one when our bytes were left
/// unread); anything else, a timeout included, fails the test.
fn read_until_closed(s: &mut UnixStream, what: &str) -> Vec<u8> {
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return got,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("{what}: the server did not close the connection ({e}); read so far: {}", show(&got)),
        }
    }
}

/// A new connection the server accepted and announced itself on, or `None`
/// when it closed the connection instead (nothing but a prefix of the
/// announcement arrived).
fn try_connect(server: &TestServer) -> Option<Raw> {
    let mut s = server.raw();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 64];
    while buf.len() < ANNOUNCEMENT.len() {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("neither an announcement nor a close ({e}); read so far: {}", show(&buf)),
        }
    }
    if buf.len() < ANNOUNCEMENT.len() {
        assert!(ANNOUNCEMENT.starts_with(&buf), "a refused connection got {}", show(&buf));
        return None;
    }
    assert_eq!(show(&buf[..ANNOUNCEMENT.len()]), show(ANNOUNCEMENT));
    Some(Raw { s, buf: buf.split_off(ANNOUNCEMENT.len()) })
}

/// Connects until the server accepts (it frees a slot only once it has
/// noticed a close), failing after [`NOTICE_DEADLINE`].
fn connect_once_accepted(server: &TestServer, what: &str) -> Raw {
    let deadline = Instant::now() + NOTICE_DEADLINE;
    loop {
        if let Some(raw) = try_connect(server) {
            return raw;
        }
        assert!(Instant::now() < deadline, "{what}: no connection accepted within {NOTICE_DEADLINE:?}");
        thread::sleep(Duration::from_millis(50));
    }
}

/// Asserts the server closes a new connection without serving it: a
/// request sent on it gets no reply, at most (part of) the announcement.
fn expect_refused(server: &TestServer, what: &str) {
    let mut s = server.raw();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    // The server may already have closed it: the write may fail.
    let _ = s.write_all(&seed_req(b"32"));
    let got = read_until_closed(&mut s, what);
    assert!(ANNOUNCEMENT.starts_with(&got), "{what}: a refused connection was served: {}", show(&got));
}

fn settings(edit: impl FnOnce(&mut Settings)) -> Settings {
    let mut settings = Settings::default();
    edit(&mut settings);
    settings
}

/// Proves that with `max_connections = 2` a third client is closed unserved, and a slot freed by a close is reused.
#[test]
fn connection_limit_refuses_extra_clients_until_one_closes() {
    let server = TestServer::with_settings(settings(|s| s.max_connections = 2));
    let mut first = Raw::connect(&server);
    let mut second = Raw::connect(&server);
    seed_bytes(&first.ask(&seed_req(b"32")), 32);
    seed_bytes(&second.ask(&seed_req(b"32")), 32);

    // Full: new clients are closed without an answer, however many try.
    for attempt in 0..3 {
        expect_refused(&server, &format!("client {} of 2", attempt + 3));
    }
    seed_bytes(&first.ask(&seed_req(b"16")), 16);
    seed_bytes(&second.ask(&seed_req(b"16")), 16);

    // One leaves: once the server has noticed, a newcomer gets its slot.
    drop(first);
    let mut third = connect_once_accepted(&server, "after the first client closed");
    seed_bytes(&third.ask(&seed_req(b"8")), 8);
    seed_bytes(&second.ask(&seed_req(b"8")), 8);

    // And the limit holds again with the newcomer counted.
    expect_refused(&server, "a client beyond the limit after the slot was reused");
    seed_bytes(&third.ask(&seed_req(b"4")), 4);
    seed_bytes(&second.ask(&seed_req(b"4")), 4);
}

/// Proves that with `idle_timeout = 1` a silent connection is closed (not before a second) while one asking every 200 ms stays open.
#[test]
fn idle_connections_are_closed_and_active_ones_kept() {
    let server = TestServer::with_settings(settings(|s| s.idle_timeout = 1));
    let connected = Instant::now();
    let mut idle = Raw::connect(&server);
    let mut busy = Raw::connect(&server);

    // Asks for three seconds, three times the timeout, well past the idle
    // connection's close.
    let busy_thread = thread::spawn(move || {
        let until = Instant::now() + Duration::from_secs(3);
        while Instant::now() < until {
            seed_bytes(&busy.ask(&seed_req(b"32")), 32);
            thread::sleep(Duration::from_millis(200));
        }
        busy
    });

    idle.s.set_read_timeout(Some(NOTICE_DEADLINE)).unwrap();
    idle.expect_closed("the idle connection");
    let closed_after = connected.elapsed();
    assert!(closed_after >= Duration::from_secs(1), "closed after {closed_after:?}, before the timeout");

    let mut busy = busy_thread.join().unwrap();
    // Still open after three timeouts' worth of activity.
    seed_bytes(&busy.ask(&seed_req(b"32")), 32);
}

/// Proves a client trickling one request a byte at a time is closed once the read timeout
/// passes, though it is never idle, while a connection with no request pending is kept.
#[test]
fn a_request_that_trickles_past_the_read_timeout_is_closed() {
    let server = TestServer::with_settings(settings(|s| s.read_timeout = 1));
    let mut quiet = Raw::connect(&server);
    let mut trickle = Raw::connect(&server);
    let request = seed_req(b"32");
    let started = Instant::now();
    let mut closed = false;
    // One byte every 100 ms: the whole request would take about 2 s.
    for byte in &request[..request.len() - 1] {
        if trickle.s.write_all(&[*byte]).is_err() {
            closed = true;
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    if !closed {
        trickle.s.set_read_timeout(Some(NOTICE_DEADLINE)).unwrap();
        trickle.expect_closed("the trickling connection");
    }
    let after = started.elapsed();
    assert!(after >= Duration::from_secs(1), "closed after {after:?}, before the read timeout");
    // No request pending: the read timeout does not apply.
    seed_bytes(&quiet.ask(&seed_req(b"8")), 8);
}

/// Proves a client pipelining 20 000 requests without reading blocks no one else, then gets every reply, in order.
#[test]
fn client_not_reading_a_pipelined_flood_does_not_block_others() {
    const REQUESTS: usize = 20_000;
    // Sizes 1..=255 in turn: each reply's length says which request it answers.
    let size = |i: usize| i % 255 + 1;
    let server = TestServer::start();
    let mut flood = Raw::connect(&server);
    let mut batch = Vec::new();
    for i in 0..REQUESTS {
        batch.extend(seed_req(size(i).to_string().as_bytes()));
    }
    // Several MB of replies: once the server holds its limit of them unread,
    // it stops reading and this write blocks until the replies are read
    // below, so it runs on its own thread.
    let mut writer_stream = flood.s.try_clone().unwrap();
    let writer = thread::spawn(move || writer_stream.write_all(&batch).unwrap());
    thread::sleep(Duration::from_millis(300));

    // Meanwhile another client is served as usual.
    let mut other = server.client();
    for _ in 0..100 {
        seed_ok(&mut other, 32);
    }
    let mut latecomer = Raw::connect(&server);
    seed_bytes(&latecomer.ask(&seed_req(b"32")), 32);

    for i in 0..REQUESTS {
        let frame = flood.frame();
        assert_eq!(seed_bytes(&frame, size(i)).len(), size(i), "reply {i}");
    }
    writer.join().unwrap();
    flood.expect_silence(Duration::from_millis(100), "after the last reply");
    seed_ok(&mut other, 32);
}

/// Proves the read timeout does not cut off a client whose requests have arrived but wait,
/// unanswered, for it to take the replies already sent: the delay is its reading, not its
/// writing, and the idle timeout governs that.
#[test]
fn a_client_slow_to_read_its_replies_is_not_cut_off_by_the_read_timeout() {
    const REQUESTS: usize = 20_000;
    let server = TestServer::with_settings(settings(|s| s.read_timeout = 1));
    let mut flood = Raw::connect(&server);
    let batch: Vec<u8> = (0..REQUESTS).flat_map(|_| seed_req(b"255")).collect();
    let mut writer_stream = flood.s.try_clone().unwrap();
    let writer = thread::spawn(move || writer_stream.write_all(&batch).unwrap());
    // Three read timeouts without reading a reply.
    thread::sleep(Duration::from_secs(3));
    for i in 0..REQUESTS {
        assert_eq!(seed_bytes(&flood.frame(), 255).len(), 255, "reply {i}");
    }
    writer.join().unwrap();
}

/// Proves clients that close in the middle of a request (alone, after pipelined requests, or with replies unread) free their slot and disturb no one.
#[test]
fn client_closing_mid_request_disturbs_no_one() {
    // A limit leaves room for exactly one more client, so getting a new
    // connection accepted proves the server has dealt with the close.
    let server = TestServer::with_settings(settings(|s| s.max_connections = 3));
    let mut a = Raw::connect(&server);
    let mut b = Raw::connect(&server);
    let request = seed_req(b"32");
    let mut pipelined = Vec::new();
    for _ in 0..50 {
        pipelined.extend_from_slice(&request);
    }

    let partial: [(&str, Vec<u8>); 4] = [
        ("half a request", request[..request.len() / 2].to_vec()),
        ("a request without its final NUL", request[..request.len() - 1].to_vec()),
        ("50 requests and half of another", [pipelined.as_slice(), &request[..7]].concat()),
        ("one byte", request[..1].to_vec()),
    ];
    for (what, bytes) in &partial {
        let mut leaver = connect_once_accepted(&server, what);
        // A request answered first: the connection is being served.
        seed_bytes(&leaver.ask(&request), 32);
        leaver.send(bytes);
        drop(leaver);
        seed_bytes(&a.ask(&request), 32);
        seed_bytes(&b.ask(&request), 32);
    }

    // The last slot is free again, and the earlier clients still work.
    let mut last = connect_once_accepted(&server, "after the last leaver");
    seed_bytes(&last.ask(&request), 32);
    expect_refused(&server, "a fourth client");
    seed_bytes(&a.ask(&request), 32);
    seed_bytes(&b.ask(&request), 32);
}

/// Proves 200 connections open at once, each sending a seed request together, are all answered.
#[test]
fn two_hundred_simultaneous_connections_are_all_served() {
    const CONNECTIONS: usize = 200;
    let server = TestServer::start();
    // All connect before any is read from, so the server finds many
    // waiting to be accepted at once (within the default limit of 1024).
    let sockets: Vec<UnixStream> = (0..CONNECTIONS).map(|_| server.raw()).collect();
    let conns: Vec<Raw> = sockets.into_iter().map(Raw::over).collect();
    let start = Arc::new(Barrier::new(CONNECTIONS));
    let workers: Vec<_> = conns
        .into_iter()
        .map(|mut c| {
            let start = Arc::clone(&start);
            thread::spawn(move || {
                start.wait();
                let seed = seed_bytes(&c.ask(&seed_req(b"32")), 32);
                (c, seed)
            })
        })
        .collect();
    let results: Vec<(Raw, Vec<u8>)> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    let mut seeds: Vec<&Vec<u8>> = results.iter().map(|(_, seed)| seed).collect();
    seeds.sort();
    seeds.dedup();
    assert_eq!(seeds.len(), CONNECTIONS, "every connection got its own random bytes");

    // Every one is still open and served.
    for (mut c, _) in results {
        seed_bytes(&c.ask(&seed_req(b"8")), 8);
    }
}

// ---------------------------------------------------------------------------
// 10: the real binary.
// ---------------------------------------------------------------------------

/// Proves the binary serves its own client end to end and stops on SIGTERM, removing its socket.
#[test]
fn binary_serves_the_cli_client_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("s");
    let mut daemon = Daemon::spawn(&socket, &dir.path().join("log"));
    daemon.wait_ready();

    let seed = ok_stdout(&cli_client(&socket, &["seed", "32"]), "seed");
    assert_eq!(seed, "status=OK seed=<32 bytes>");

    let session_hex = "308187020101020203030402c0300420deadbeef";
    let update = ok_stdout(&cli_client(&socket, &["update", "smtpd", "id1", session_hex]), "update");
    assert_eq!(update, "status=OK");
    let lookup = ok_stdout(&cli_client(&socket, &["lookup", "smtpd", "id1", "--show-secrets"]), "lookup");
    assert_eq!(lookup, format!("status=OK session={session_hex}"));

    let current = ok_stdout(&cli_client(&socket, &["tktkey"]), "tktkey");
    let name = current
        .split_whitespace()
        .find_map(|w| w.strip_prefix("name="))
        .unwrap_or_else(|| panic!("no name in {current:?}"))
        .to_string();
    assert_eq!(name.len(), 32, "{current}");
    assert!(name.bytes().all(|b| b.is_ascii_hexdigit()), "{current}");
    assert!(current.starts_with("status=OK name="), "{current}");
    let named = ok_stdout(&cli_client(&socket, &["tktkey", &name]), "tktkey <name>");
    assert_eq!(named, current, "the named key is the current key");

    let bogus = cli_client(&socket, &["policy", "nosuch"]);
    assert!(!bogus.status.success(), "policy nosuch must fail: {}", stdout(&bogus));
    assert_eq!(stdout(&bogus), "status=FAIL cachable=0 timeout=0");

    daemon.sigterm();
    let status = daemon.wait_exit(Duration::from_secs(10), "after SIGTERM");
    assert!(status.success(), "{status}:\n{}", daemon.log());
    assert!(!socket.exists(), "the socket file was left behind");
}

/// Proves `serve` refuses to replace a regular file at the socket path, says why, and leaves it intact.
#[test]
fn binary_refuses_a_socket_path_that_is_a_regular_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("precious");
    fs::write(&path, b"do not delete\n").unwrap();
    let log = dir.path().join("log");
    let mut daemon = Daemon::spawn(&path, &log);
    let status = daemon.wait_exit(Duration::from_secs(30), "serve on a regular file");
    assert!(!status.success());
    let message = daemon.log();
    assert!(message.contains("is not a socket"), "{message}");
    assert_eq!(fs::read(&path).unwrap(), b"do not delete\n");
}

/// Proves `--help` works for the binary and both subcommands.
#[test]
fn binary_help_exits_zero() {
    for args in [&["--help"][..], &["serve", "--help"], &["client", "--help"]] {
        let out = Command::new(BIN).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", out.status);
        assert!(stdout(&out).contains("Usage"), "{args:?}: {}", stdout(&out));
    }
}

/// Proves SIGTERM stops the daemon even while a client keeps its connection open.
#[test]

fn binary_stops_on_sigterm_while_a_client_is_connected() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("s");
    let mut daemon = Daemon::spawn(&socket, &dir.path().join("log"));
    daemon.wait_ready();

    // A Postfix process keeps its connection between requests.
    let mut held = Raw::over(UnixStream::connect(&socket).unwrap());
    seed_bytes(&held.ask(&seed_req(b"32")), 32);

    daemon.sigterm();
    let status = daemon.wait_exit(Duration::from_secs(10), "SIGTERM with a client connected");
    assert!(status.success(), "{status}");
    assert!(!socket.exists());
    held.expect_closed("the held connection after shutdown");
}

/// Proves a SIGTERM sent as soon as the socket accepts is handled (clean exit, socket removed), not fatal.
#[test]

fn binary_handles_sigterm_as_soon_as_the_socket_accepts() {
    // The window is short: many quick starts (compiled core cached).
    let cache = tempfile::tempdir().unwrap();
    let cache_flags = ["--compile-cache".as_ref(), cache.path().as_os_str()];
    for trial in 0..40 {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("s");
        let mut daemon = Daemon::spawn_with(&socket, &dir.path().join("log"), &cache_flags);
        let deadline = Instant::now() + Duration::from_secs(30);
        // No sleep: signal the moment a connection is accepted.
        while UnixStream::connect(&socket).is_err() {
            assert!(Instant::now() < deadline, "trial {trial}: the socket never accepted:\n{}", daemon.log());
            if let Some(status) = daemon.child().try_wait().unwrap() {
                panic!("trial {trial}: the daemon exited early ({status}):\n{}", daemon.log());
            }
        }
        daemon.sigterm();
        let status = daemon.wait_exit(Duration::from_secs(10), "early SIGTERM");
        assert!(status.success(), "trial {trial}: {status}:\n{}", daemon.log());
        assert!(!socket.exists(), "trial {trial}: the socket file was left behind");
    }
}

/// Proves `serve` refuses a socket a live daemon is using (which keeps serving) and replaces a stale one.
#[test]
fn binary_refuses_a_live_socket_and_replaces_a_stale_one() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("s");
    let mut first = Daemon::spawn(&socket, &dir.path().join("log1"));
    first.wait_ready();

    let mut second = Daemon::spawn(&socket, &dir.path().join("log2"));
    let status = second.wait_exit(Duration::from_secs(30), "serve on a live socket");
    assert!(!status.success());
    assert!(second.log().contains("in use by a running server"), "{}", second.log());
    assert_eq!(ok_stdout(&cli_client(&socket, &["seed", "8"]), "seed"), "status=OK seed=<8 bytes>");

    // Killed without a chance to clean up: the socket file stays, stale.
    let mut child = first.child.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(socket.exists());
    let mut third = Daemon::spawn(&socket, &dir.path().join("log3"));
    third.wait_ready();
    assert_eq!(ok_stdout(&cli_client(&socket, &["seed", "8"]), "seed"), "status=OK seed=<8 bytes>");
    third.sigterm();
    assert!(third.wait_exit(Duration::from_secs(10), "SIGTERM").success());
}
