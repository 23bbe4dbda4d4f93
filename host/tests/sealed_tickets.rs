//! tlskeeper's own requests beside Postfix's, on the real socket with the
//! real component and a scripted clock: `tktseal` and `tktopen` (tickets
//! sealed by the daemon, whose keys never leave it) and `take` (a session
//! handed out once).
//!
//! Each test says what it proves in its doc line.

#![allow(clippy::unwrap_used)]

mod common;

use common::TestServer;
use tlskeeper::keybuf;
use tlskeeper_engine::keys::TicketKey;
use tlskeeper_protocol::attr0;
use tlskeeper_protocol::client::Client;
use tlskeeper_protocol::tlsmgr::{Reply, Request, Status};

/// What `tktseal` gave: the ticket and its announced lifetime.
fn seal(c: &mut Client, plaintext: &[u8]) -> (Vec<u8>, u32) {
    match c.request(&Request::Seal { plaintext: plaintext.to_vec().into() }).unwrap() {
        Reply::Seal { status: Status::Ok, ticket, lifetime } => (ticket, lifetime),
        other => panic!("seal: {other:?}"),
    }
}

/// The `tktopen` reply.
fn open(c: &mut Client, ticket: &[u8]) -> Reply {
    c.request(&Request::Open { ticket: ticket.to_vec() }).unwrap()
}

fn opened(plaintext: &[u8]) -> Reply {
    Reply::Open { status: Status::Ok, plaintext: plaintext.to_vec().into() }
}

fn refused() -> Reply {
    Reply::Open { status: Status::Err, plaintext: Vec::new().into() }
}

fn current_key(c: &mut Client) -> TicketKey {
    match c.request(&Request::TicketKey { key_name: Vec::new() }).unwrap() {
        Reply::TicketKey { status: Status::Ok, keybuf: buf } => keybuf::decode(&buf).unwrap(),
        other => panic!("tktkey: {other:?}"),
    }
}

fn wire(frame: &attr0::Frame) -> Vec<u8> {
    attr0::encode_to_vec(frame).unwrap()
}

/// Proves a ticket sealed by the daemon opens while its key decrypts and is
/// refused from the first second after, with the lifetime the ring
/// guarantees, under the same key ring Postfix's `tktkey` sees.
#[test]
fn a_sealed_ticket_opens_for_its_keys_window_and_no_longer() {
    let server = TestServer::start();
    let mut c = server.client();
    let (ticket, lifetime) = seal(&mut c, b"resumption state");
    assert_eq!(lifetime, 1798, "T = 3600: half - 2 seconds");
    let key = current_key(&mut c);
    assert_eq!(&ticket[..16], &key.name, "the name in the ticket is the tktkey key's");
    assert_eq!(ticket.len(), b"resumption state".len() + 72);
    assert_eq!(open(&mut c, &ticket), opened(b"resumption state"));

    // The key decrypts until tout + T/2 = start + 3598, inclusive.
    server.clock.advance_secs(3598);
    assert_eq!(open(&mut c, &ticket), opened(b"resumption state"), "last second");
    server.clock.advance_secs(1);
    assert_eq!(open(&mut c, &ticket), refused(), "replayed after its key's window");
    // A new ticket is sealed under a new key.
    let (fresh, _) = seal(&mut c, b"later");
    assert_ne!(&fresh[..16], &ticket[..16]);
    assert_eq!(open(&mut c, &fresh), opened(b"later"));
}

/// Proves cut, extended, oversized, forged and foreign tickets all get the
/// very same refusal (no oracle), that the daemon keeps serving, and that
/// malformed requests get the failure shape of their type.
#[test]
fn hostile_tickets_and_requests_are_refused_cleanly() {
    let server = TestServer::start();
    let other = TestServer::start();
    let mut c = server.client();
    let (ticket, _) = seal(&mut c, b"state");
    let (foreign, _) = seal(&mut other.client(), b"state");

    let mut forged_tag = ticket.clone();
    *forged_tag.last_mut().unwrap() ^= 1;
    let mut forged_body = ticket.clone();
    forged_body[40] ^= 1;
    let mut renamed = ticket.clone();
    renamed[0] ^= 1;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("cut by one byte", ticket[..ticket.len() - 1].to_vec()),
        ("cut to the name", ticket[..16].to_vec()),
        ("one byte added", [ticket.as_slice(), &[0]].concat()),
        ("oversized", vec![0x41; 16 * 1024 + 73]),
        ("forged tag", forged_tag),
        ("altered ciphertext", forged_body),
        ("unknown key name", renamed),
        ("sealed by another daemon", foreign),
    ];
    for (what, bad) in &cases {
        let reply = open(&mut c, bad);
        assert_eq!(reply, refused(), "{what}");
        assert_eq!(wire(&reply.to_frame()), b"status\x004294967295\0plaintext\0\0\0", "{what}: byte for byte");
    }
    assert_eq!(open(&mut c, &ticket), opened(b"state"), "the genuine ticket still opens");

    // A plaintext over 16 KiB is understood and not sealed: ERR, no ticket.
    let big = c.request(&Request::Seal { plaintext: vec![0; 16 * 1024 + 1].into() }).unwrap();
    assert_eq!(big, Reply::Seal { status: Status::Err, ticket: Vec::new(), lifetime: 0 });
    assert_eq!(seal(&mut c, &vec![0; 16 * 1024]).0.len(), 16 * 1024 + 72, "16 KiB is sealed");

    // Malformed lists: the failure shape of the request, FAIL.
    let fail_seal: &[u8] = b"status\x004294967294\0ticket\0\0lifetime\x000\0\0";
    let fail_open: &[u8] = b"status\x004294967294\0plaintext\0\0\0";
    let malformed: [(&str, &[u8], &[u8]); 5] = [
        ("tktseal without plaintext", b"request\0tktseal\0\0", fail_seal),
        ("tktseal with bad base64", b"request\0tktseal\0plaintext\0!!!!\0\0", fail_seal),
        ("tktseal with an extra attribute", b"request\0tktseal\0plaintext\0\0x\0y\0\0", fail_seal),
        ("tktopen without ticket", b"request\0tktopen\0\0", fail_open),
        ("tktopen with the attribute misnamed", b"request\0tktopen\0tiket\0AAAA\0\0", fail_open),
    ];
    for (what, send, want) in malformed {
        c.send_raw(send).unwrap();
        assert_eq!(wire(&c.read_frame().unwrap()), want, "{what}");
    }
    assert_eq!(open(&mut c, &ticket), opened(b"state"), "the stream is still in step");
}

/// Proves by what crosses the socket that a worker using `tktseal` and
/// `tktopen` never receives a ticket key: neither the AES nor the HMAC key
/// of the ring appears in any request or reply of a seal and open.
#[test]
fn sealing_and_opening_send_no_key_material() {
    let server = TestServer::start();
    let mut c = server.client();
    let plaintext = vec![0x33; 300];
    let seal_request = Request::Seal { plaintext: plaintext.clone().into() };
    let seal_reply = c.request(&seal_request).unwrap();
    let Reply::Seal { ticket, .. } = &seal_reply else { panic!("{seal_reply:?}") };
    let open_request = Request::Open { ticket: ticket.clone() };
    let open_reply = c.request(&open_request).unwrap();
    assert_eq!(open_reply, opened(&plaintext));

    // Only now ask for the key, as Postfix would, to know what to look for.
    let key = current_key(&mut c);
    assert_eq!(&ticket[..16], &key.name);
    let crossed = [
        wire(&seal_request.to_frame()),
        wire(&seal_reply.to_frame()),
        wire(&open_request.to_frame()),
        wire(&open_reply.to_frame()),
    ]
    .concat();
    for secret in [&key.cipher_key[..], &key.hmac_key[..]] {
        for window in [&secret[..8], &secret[8..16], &secret[16..24], &secret[24..]] {
            assert!(!crossed.windows(8).any(|w| w == window), "a piece of a ticket key crossed the socket");
            let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, window);
            assert!(!crossed.windows(b64.len()).any(|w| w == b64.as_bytes()), "key bytes crossed in base64");
        }
    }
}

/// Proves `take` hands a stored session out once, across connections.
#[test]
fn take_hands_a_session_out_once() {
    let server = TestServer::start();
    let (mut a, mut b) = (server.client(), server.client());
    let update = Request::Update { cache_type: "smtpd".into(), cache_id: "id-1".into(), session: vec![7; 140].into() };
    assert_eq!(a.request(&update).unwrap(), Reply::Update { status: Status::Ok });
    let take = Request::Take { cache_type: "smtpd".into(), cache_id: "id-1".into() };
    assert_eq!(b.request(&take).unwrap(), Reply::Take { status: Status::Ok, session: vec![7; 140].into() });
    assert_eq!(a.request(&take).unwrap(), Reply::Take { status: Status::Err, session: Vec::new().into() });
    let lookup = Request::Lookup { cache_type: "smtpd".into(), cache_id: "id-1".into() };
    assert_eq!(a.request(&lookup).unwrap(), Reply::Lookup { status: Status::Err, session: Vec::new().into() });
    let unknown = Request::Take { cache_type: "nope".into(), cache_id: "x".into() };
    assert_eq!(a.request(&unknown).unwrap(), Reply::failure(tlskeeper_protocol::tlsmgr::RequestKind::Take));
}
