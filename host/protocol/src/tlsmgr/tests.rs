//! Unit tests of the tlsmgr codec, kept apart so that the codec reads
//! on its own.

// A failed unwrap is a failed test, which is what tests are for.
#![allow(clippy::unwrap_used)]

use super::super::attr0::{self, Limits};
use super::*;

fn decode_frame(wire: &[u8]) -> Frame {
    let (frame, n) = attr0::decode(wire, &Limits::default()).unwrap().unwrap();
    assert_eq!(n, wire.len(), "trailing bytes in test input");
    frame
}

fn wire(frame: &Frame) -> Vec<u8> {
    attr0::encode_to_vec(frame).unwrap()
}

fn frame(pairs: &[(&str, &[u8])]) -> Frame {
    let mut f = Frame::new();
    for (n, v) in pairs {
        f.push_raw(n, *v);
    }
    f
}

/// Bytes from hex-dump lines (spaces ignored).
fn hex_dump(lines: &[&str]) -> Vec<u8> {
    hex::decode(lines.concat().replace(' ', "")).unwrap()
}

fn z(bytes: &[u8]) -> Zeroizing<Vec<u8>> {
    Zeroizing::new(bytes.to_vec())
}

/// Asserts the request decodes from `bytes` and encodes back to them.
fn request_transcript(bytes: &[u8], want: Request) {
    let got = Request::from_frame(&decode_frame(bytes)).unwrap();
    assert_eq!(got, want);
    assert_eq!(wire(&want.to_frame()), bytes);
}

/// Asserts the reply encodes to `bytes` and decodes back from them.
fn reply_transcript(bytes: &[u8], want: Reply) {
    assert_eq!(wire(&want.to_frame()), bytes, "{want:?}");
    let kind = want.kind().unwrap();
    assert_eq!(Reply::from_frame(kind, &decode_frame(bytes)).unwrap(), want);
}

#[test]
fn announcement_bytes() {
    // Reference §1.5, 26 bytes as captured.
    let captured = hex_dump(&["70 72 6f 74 6f 63 6f 6c 00 74 6c 73 6d 67 72 5f", "70 72 6f 74 6f 63 6f 6c 00 00"]);
    assert_eq!(ANNOUNCEMENT, captured);
    assert_eq!(ANNOUNCEMENT.len(), 26);
    let f = decode_frame(ANNOUNCEMENT);
    assert_eq!(f, frame(&[("protocol", b"tlsmgr_protocol")]));
}

#[test]
fn wakeup_prefixes() {
    assert_eq!(wakeup_prefix(b""), Prefix::NeedMore);
    assert_eq!(wakeup_prefix(b"W"), Prefix::NeedMore);
    assert_eq!(wakeup_prefix(b"W\0"), Prefix::Wakeup);
    assert_eq!(wakeup_prefix(b"W\0junk"), Prefix::Wakeup);
    assert_eq!(wakeup_prefix(b"WX"), Prefix::NotWakeup);
    assert_eq!(wakeup_prefix(b"w\0"), Prefix::NotWakeup);
    assert_eq!(wakeup_prefix(b"\0"), Prefix::NotWakeup);
    assert_eq!(wakeup_prefix(b"r"), Prefix::NotWakeup);
    assert_eq!(wakeup_prefix(b"request\0seed\0"), Prefix::NotWakeup);
}

#[test]
fn status_wire_values() {
    assert_eq!(Status::Ok.to_wire(), 0);
    assert_eq!(Status::Err.to_wire(), 4_294_967_295);
    assert_eq!(Status::Fail.to_wire(), 4_294_967_294);
    for s in [Status::Ok, Status::Err, Status::Fail] {
        assert_eq!(Status::from_wire(s.to_wire()), Some(s));
    }
    assert_eq!(Status::from_wire(1), None);
    assert_eq!(Status::from_wire(4_294_967_293), None);
    assert_eq!(Status::Fail.code(), -2);
    assert_eq!(Status::Err.to_string(), "ERR");
}

#[test]
fn request_kind_names() {
    for kind in RequestKind::ALL {
        assert_eq!(RequestKind::from_name(kind.name().as_bytes()), Some(kind));
    }
    assert_eq!(RequestKind::TicketKey.name(), "tktkey");
    assert_eq!(RequestKind::from_name(b"Seed"), None);
    assert_eq!(RequestKind::from_name(b"seed\0"), None);
}

// --- Byte-exact transcripts from the reference (§1.6) ---

#[test]
fn transcript_lookup_request() {
    // Hex dump lines as captured.
    let bytes = hex_dump(&[
        "72 65 71 75 65 73 74 00 6c 6f 6f 6b 75 70 00 63",
        "61 63 68 65 5f 74 79 70 65 00 73 6d 74 70 64 00",
        "63 61 63 68 65 5f 69 64 00 50 52 4f 42 45 26 73",
        "3d 70 72 6f 62 65 26 6c 3d 31 00 00",
    ]);
    request_transcript(&bytes, Request::Lookup { cache_type: "smtpd".into(), cache_id: "PROBE&s=probe&l=1".into() });
}

#[test]
fn transcript_lookup_found_reply() {
    let bytes = hex_dump(&["73 74 61 74 75 73 00 30 00 73 65 73 73 69 6f 6e", "00 61 47 56 73 62 47 38 3d 00 00"]);
    assert_eq!(bytes, b"status\x000\0session\0aGVsbG8=\0\0");
    reply_transcript(&bytes, Reply::Lookup { status: Status::Ok, session: z(b"hello") });
}

#[test]
fn transcript_lookup_not_found_reply() {
    let bytes = hex_dump(&["73 74 61 74 75 73 00 34 32 39 34 39 36 37 32 39", "35 00 73 65 73 73 69 6f 6e 00 00 00"]);
    reply_transcript(&bytes, Reply::Lookup { status: Status::Err, session: z(b"") });
}

#[test]
fn transcript_real_smtpd_lookup_request() {
    let id = "0C41A67197757F77600C01A3B033ADCE318B8D2384C8490CC5B19103EDC24F14&s=127.0.0.1:10025&l=805306720";
    let mut bytes = b"request\0lookup\0cache_type\0smtpd\0cache_id\0".to_vec();
    bytes.extend_from_slice(id.as_bytes());
    bytes.extend_from_slice(b"\0\0");
    request_transcript(&bytes, Request::Lookup { cache_type: "smtpd".into(), cache_id: id.into() });
}

#[test]
fn transcript_real_smtpd_seed() {
    request_transcript(b"request\0seed\0size\x0032\0\0", Request::Seed { size: 32 });
    let reply = b"status\x000\0seed\0TmAtsVOSwCyrCdF63NmY5yz82n3NZA1NrnAY3z8yXqY=\0\0";
    let got = Reply::from_frame(RequestKind::Seed, &decode_frame(reply)).unwrap();
    match &got {
        Reply::Seed { status, seed } => {
            assert_eq!(*status, Status::Ok);
            assert_eq!(seed.len(), 32);
        }
        other => panic!("wrong variant {other:?}"),
    }
    reply_transcript(reply, got);
}

#[test]
fn transcript_real_smtpd_policy() {
    request_transcript(b"request\0policy\0cache_type\0smtpd\0\0", Request::Policy { cache_type: "smtpd".into() });
    reply_transcript(
        b"status\x000\0cachable\x001\0timeout\x003600\0\0",
        Reply::Policy { status: Status::Ok, cachable: true, timeout: 3600 },
    );
}

#[test]
fn transcript_real_smtpd_tktkey_request() {
    request_transcript(b"request\0tktkey\0keyname\0\0\0", Request::TicketKey { key_name: vec![] });
}

#[test]
fn tktkey_reply_carries_an_88_byte_keybuf() {
    // The codec carries the struct's 88 bytes opaquely; what they hold is
    // the daemon's keybuf module's business.
    let keybuf = [7u8; 88];
    let reply = Reply::TicketKey { status: Status::Ok, keybuf: z(&keybuf[..]) };
    let bytes = wire(&reply.to_frame());
    let prefix = b"status\x000\0keybuf\0";
    assert!(bytes.starts_with(prefix));
    // 120 base64 characters ending in "==", then NUL and terminator.
    let b64 = &bytes[prefix.len()..bytes.len() - 2];
    assert_eq!(b64.len(), 120);
    assert!(b64.ends_with(b"=="));
    reply_transcript(&bytes, reply);
}

// --- Round trips for every request and reply ---

fn all_requests() -> Vec<Request> {
    vec![
        Request::Seed { size: 0 },
        Request::Seed { size: u32::MAX },
        Request::Policy { cache_type: "lmtp".into() },
        Request::Lookup {
            cache_type: "smtp".into(),
            cache_id: "smtp&[127.0.0.1]:10025&127.0.0.1&127.0.0.1&&34D8A6C0".into(),
        },
        Request::Update {
            cache_type: "smtpd".into(),
            cache_id: "AB&s=smtp&l=1".into(),
            session: z(&(0..=255).collect::<Vec<u8>>()),
        },
        Request::Update { cache_type: "".into(), cache_id: "".into(), session: z(b"") },
        Request::Delete { cache_type: "smtpd".into(), cache_id: "x".into() },
        Request::TicketKey { key_name: vec![] },
        Request::TicketKey { key_name: vec![0, 0xff, 7, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12] },
        Request::TicketKey { key_name: vec![9] },
    ]
}

#[test]
fn requests_round_trip_through_bytes() {
    for request in all_requests() {
        let bytes = wire(&request.to_frame());
        let back = Request::from_frame(&decode_frame(&bytes)).unwrap();
        assert_eq!(back, request);
    }
}

#[test]
fn requests_are_incomplete_at_every_split_point() {
    for request in all_requests() {
        let bytes = wire(&request.to_frame());
        for cut in 0..bytes.len() {
            assert_eq!(attr0::decode(&bytes[..cut], &Limits::default()).unwrap(), None, "{request:?} cut at {cut}");
        }
    }
}

fn all_replies() -> Vec<Reply> {
    let mut v = Vec::new();
    for status in [Status::Ok, Status::Err, Status::Fail] {
        v.push(Reply::Seed { status, seed: z(&[0xAB; 32]) });
        v.push(Reply::Policy { status, cachable: status == Status::Ok, timeout: 3600 });
        v.push(Reply::Lookup { status, session: z(b"\x30\x81\x87") });
        v.push(Reply::Update { status });
        v.push(Reply::Delete { status });
        v.push(Reply::TicketKey { status, keybuf: z(&[5; 16]) });
    }
    v
}

#[test]
fn replies_round_trip_through_bytes() {
    for reply in all_replies() {
        let kind = reply.kind().unwrap();
        let bytes = wire(&reply.to_frame());
        assert!(bytes.starts_with(b"status\0"), "status must come first");
        let back = Reply::from_frame(kind, &decode_frame(&bytes)).unwrap();
        assert_eq!(back, reply);
    }
    let bare = Reply::Bare { status: Status::Fail };
    let bytes = wire(&bare.to_frame());
    assert_eq!(bytes, b"status\x004294967294\0\0");
    assert_eq!(Reply::bare_from_frame(&decode_frame(&bytes)).unwrap(), bare);
}

#[test]
fn failure_replies_are_byte_exact_and_carry_no_data() {
    let cases: [(RequestKind, &[u8]); 6] = [
        (RequestKind::Seed, b"status\x004294967294\0seed\0\0\0"),
        (RequestKind::Policy, b"status\x004294967294\0cachable\x000\0timeout\x000\0\0"),
        (RequestKind::Lookup, b"status\x004294967294\0session\0\0\0"),
        (RequestKind::Update, b"status\x004294967294\0\0"),
        (RequestKind::Delete, b"status\x004294967294\0\0"),
        (RequestKind::TicketKey, b"status\x004294967294\0keybuf\0\0\0"),
    ];
    for (kind, bytes) in cases {
        let reply = Reply::failure(kind);
        assert_eq!(reply.kind(), Some(kind));
        assert_eq!(reply.status(), Status::Fail);
        assert_eq!(wire(&reply.to_frame()), bytes, "{kind}");
    }
}

// --- Request errors and the replies they map to ---

fn request_error(bytes: &[u8]) -> RequestError {
    Request::from_frame(&decode_frame(bytes)).unwrap_err()
}

#[test]
fn not_a_request_gets_a_bare_fail() {
    for bytes in [&b"\0"[..], b"cache_type\0smtpd\0request\0lookup\0\0", b"Request\0seed\0size\x0032\0\0"] {
        let e = request_error(bytes);
        assert!(matches!(e, RequestError::NotARequest { .. }), "{e}");
        assert_eq!(e.kind(), None);
        assert_eq!(wire(&e.reply().to_frame()), b"status\x004294967294\0\0");
    }
    assert_eq!(request_error(b"cache_type\0smtpd\0\0"), RequestError::NotARequest { found: Some("cache_type".into()) });
    assert_eq!(request_error(b"\0"), RequestError::NotARequest { found: None });
}

#[test]
fn unknown_request_gets_a_bare_fail() {
    let e = request_error(b"request\0frobnicate\0\0");
    assert_eq!(e, RequestError::UnknownRequest { name: "frobnicate".into() });
    assert_eq!(e.reply(), Reply::Bare { status: Status::Fail });
    // The master trigger string sent as an attribute list is not special.
    assert!(matches!(request_error(b"request\0W\0\0"), RequestError::UnknownRequest { .. }));
    // Non-UTF-8 and overlong names are escaped and truncated for logs.
    let mut long = b"request\0\xff\n".to_vec();
    long.extend(std::iter::repeat_n(b'x', 100));
    long.extend_from_slice(b"\0\0");
    match request_error(&long) {
        RequestError::UnknownRequest { name } => {
            assert!(name.starts_with("\\xff\\n"), "{name}");
            assert!(name.ends_with("..."), "{name}");
            assert!(name.len() < 80, "{name}");
        }
        other => panic!("{other:?}"),
    }
}

fn malformed(bytes: &[u8]) -> (RequestKind, AttrError) {
    match request_error(bytes) {
        RequestError::Malformed { kind, error } => (kind, error),
        other => panic!("expected Malformed, got {other:?}"),
    }
}

#[test]
fn missing_attributes() {
    let cases: [(&[u8], RequestKind, &str); 7] = [
        (b"request\0seed\0\0", RequestKind::Seed, ATTR_SIZE),
        (b"request\0policy\0\0", RequestKind::Policy, ATTR_CACHE_TYPE),
        (b"request\0lookup\0cache_type\0smtpd\0\0", RequestKind::Lookup, ATTR_CACHE_ID),
        (b"request\0update\0cache_type\0smtpd\0cache_id\0x\0\0", RequestKind::Update, ATTR_SESSION),
        (b"request\0delete\0\0", RequestKind::Delete, ATTR_CACHE_TYPE),
        (b"request\0tktkey\0\0", RequestKind::TicketKey, ATTR_KEYNAME),
        (b"request\0lookup\0\0", RequestKind::Lookup, ATTR_CACHE_TYPE),
    ];
    for (bytes, kind, expected) in cases {
        assert_eq!(malformed(bytes), (kind, AttrError::Missing { expected }));
    }
}

#[test]
fn extra_attributes() {
    assert_eq!(
        malformed(b"request\0seed\0size\x0032\0size\x0032\0\0"),
        (RequestKind::Seed, AttrError::Extra { found: "size".into() })
    );
    assert_eq!(
        malformed(b"request\0delete\0cache_type\0smtpd\0cache_id\0x\0session\0\0\0"),
        (RequestKind::Delete, AttrError::Extra { found: "session".into() })
    );
}

#[test]
fn out_of_order_or_unknown_attributes() {
    assert_eq!(
        malformed(b"request\0lookup\0cache_id\0x\0cache_type\0smtpd\0\0"),
        (RequestKind::Lookup, AttrError::Unexpected { expected: ATTR_CACHE_TYPE, found: "cache_id".into() })
    );
    assert_eq!(
        malformed(b"request\0policy\0junk\0x\0cache_type\0smtpd\0\0"),
        (RequestKind::Policy, AttrError::Unexpected { expected: ATTR_CACHE_TYPE, found: "junk".into() })
    );
    // `request` repeated.
    assert!(matches!(
        malformed(b"request\0seed\0request\0seed\0size\x001\0\0"),
        (RequestKind::Seed, AttrError::Unexpected { .. })
    ));
}

#[test]
fn malformed_requests_get_their_full_failure_reply() {
    let e = request_error(b"request\0lookup\0cache_type\0smtpd\0\0");
    assert_eq!(e.kind(), Some(RequestKind::Lookup));
    assert_eq!(e.reply(), Reply::failure(RequestKind::Lookup));
    assert_eq!(wire(&e.reply().to_frame()), b"status\x004294967294\0session\0\0\0");
    let e = request_error(b"request\0tktkey\0keyname\0!!!!\0\0");
    assert_eq!(wire(&e.reply().to_frame()), b"status\x004294967294\0keybuf\0\0\0");
    let e = request_error(b"request\0policy\0\0");
    assert_eq!(e.reply(), Reply::Policy { status: Status::Fail, cachable: false, timeout: 0 });
}

#[test]
fn numbers_must_be_canonical() {
    let ok: [(&[u8], u32); 4] = [(b"0", 0), (b"32", 32), (b"255", 255), (b"4294967295", u32::MAX)];
    for (digits, n) in ok {
        let mut bytes = b"request\0seed\0size\0".to_vec();
        bytes.extend_from_slice(digits);
        bytes.extend_from_slice(b"\0\0");
        assert_eq!(Request::from_frame(&decode_frame(&bytes)).unwrap(), Request::Seed { size: n });
    }
    // glibc's sscanf would accept most of these.
    let bad: [&[u8]; 12] = [
        b"",
        b"-1",
        b"+5",
        b" 7",
        b"7 ",
        b"4294967296",
        b"99999999999999999999",
        b"007",
        b"00",
        b"12a",
        b"0x10",
        b"\xd9\xa3", // ARABIC-INDIC DIGIT THREE
    ];
    for digits in bad {
        let mut bytes = b"request\0seed\0size\0".to_vec();
        bytes.extend_from_slice(digits);
        bytes.extend_from_slice(b"\0\0");
        assert_eq!(
            malformed(&bytes),
            (RequestKind::Seed, AttrError::BadNumber { attr: ATTR_SIZE }),
            "{:?}",
            String::from_utf8_lossy(digits)
        );
    }
}

#[test]
fn base64_must_be_canonical() {
    let decode_name = |text: &[u8]| {
        let mut bytes = b"request\0tktkey\0keyname\0".to_vec();
        bytes.extend_from_slice(text);
        bytes.extend_from_slice(b"\0\0");
        Request::from_frame(&decode_frame(&bytes))
    };
    assert_eq!(decode_name(b"AAECAwQFBgcICQoLDA0ODw==").unwrap(), Request::TicketKey { key_name: (0..16).collect() });
    assert_eq!(decode_name(b"Zm9v").unwrap(), Request::TicketKey { key_name: b"foo".to_vec() });
    // Postfix accepts the first three (stopping at '=' or ignoring
    // trailing bits); none is what its encoder would send.
    let bad: [&[u8]; 11] = [
        b"AA==AAAA", // data after padding
        b"AB==",     // non-zero trailing bits
        b"Zm9=",     // non-zero trailing bits
        b"AA",       // missing padding
        b"Zg=",      // length not a multiple of 4
        b"A===",
        b"====",
        b"Zm9v\n",
        b"Zm 9v",
        b"Zm9v-_==", // URL-safe alphabet
        b"\xff\xff\xff\xff",
    ];
    for text in bad {
        assert_eq!(
            decode_name(text).unwrap_err(),
            RequestError::Malformed {
                kind: RequestKind::TicketKey,
                error: AttrError::BadBase64 { attr: ATTR_KEYNAME }
            },
            "{:?}",
            String::from_utf8_lossy(text)
        );
    }
    // Same rules for the session in an update.
    let (kind, error) = malformed(b"request\0update\0cache_type\0smtpd\0cache_id\0x\0session\0AA\0\0");
    assert_eq!((kind, error), (RequestKind::Update, AttrError::BadBase64 { attr: ATTR_SESSION }));
}

#[test]
fn strings_must_be_utf8() {
    assert_eq!(
        malformed(b"request\0policy\0cache_type\0\xff\0\0"),
        (RequestKind::Policy, AttrError::NonUtf8 { attr: ATTR_CACHE_TYPE })
    );
    assert_eq!(
        malformed(b"request\0delete\0cache_type\0smtpd\0cache_id\0\xc3\0\0"),
        (RequestKind::Delete, AttrError::NonUtf8 { attr: ATTR_CACHE_ID })
    );
    // Valid UTF-8 beyond ASCII is fine.
    assert_eq!(
        Request::from_frame(&decode_frame("request\0delete\0cache_type\0smtpd\0cache_id\0m\u{fc}ller\0\0".as_bytes()))
            .unwrap(),
        Request::Delete { cache_type: "smtpd".into(), cache_id: "m\u{fc}ller".into() }
    );
}

#[test]
fn request_with_nul_in_a_string_cannot_be_encoded() {
    let r = Request::Lookup { cache_type: "smtpd".into(), cache_id: "a\0b".into() };
    assert_eq!(attr0::encode_to_vec(&r.to_frame()), Err(attr0::EncodeError::NulInValue { index: 2 }));
}

// --- Reply decoding errors (client direction) ---

#[test]
fn reply_errors() {
    // A bare status where data is expected: the Postfix client would
    // count 1 conversion and fail the call.
    assert_eq!(
        Reply::from_frame(RequestKind::Lookup, &decode_frame(b"status\x004294967294\0\0")),
        Err(ReplyError::Attr(AttrError::Missing { expected: ATTR_SESSION }))
    );
    assert_eq!(
        Reply::from_frame(RequestKind::Update, &decode_frame(b"status\x007\0\0")),
        Err(ReplyError::UnknownStatus { value: 7 })
    );
    assert_eq!(
        Reply::from_frame(RequestKind::Policy, &decode_frame(b"status\x000\0cachable\x002\0timeout\x000\0\0")),
        Err(ReplyError::BadCachable { value: 2 })
    );
    assert_eq!(
        Reply::from_frame(RequestKind::Policy, &decode_frame(b"status\x000\0timeout\x000\0cachable\x001\0\0")),
        Err(ReplyError::Attr(AttrError::Unexpected { expected: ATTR_CACHABLE, found: "timeout".into() }))
    );
    assert_eq!(
        Reply::from_frame(RequestKind::Delete, &decode_frame(b"status\x000\0x\0y\0\0")),
        Err(ReplyError::Attr(AttrError::Extra { found: "x".into() }))
    );
    assert_eq!(
        Reply::from_frame(RequestKind::Seed, &decode_frame(b"status\x00-2\0seed\0\0\0")),
        Err(ReplyError::Attr(AttrError::BadNumber { attr: ATTR_STATUS }))
    );
    assert_eq!(
        Reply::from_frame(RequestKind::Seed, &decode_frame(b"status\x000\0seed\0A\0\0")),
        Err(ReplyError::Attr(AttrError::BadBase64 { attr: ATTR_SEED }))
    );
    assert_eq!(
        Reply::from_frame(RequestKind::Seed, &decode_frame(b"\0")),
        Err(ReplyError::Attr(AttrError::Missing { expected: ATTR_STATUS }))
    );
    assert_eq!(
        Reply::bare_from_frame(&decode_frame(b"status\x000\0seed\0\0\0")),
        Err(ReplyError::Attr(AttrError::Extra { found: "seed".into() }))
    );
}

#[test]
fn debug_output_hides_secrets() {
    let r = Request::Update { cache_type: "smtpd".into(), cache_id: "id".into(), session: z(b"MASTERSECRET") };
    let shown = format!("{r:?}");
    assert!(shown.contains("12 bytes"), "{shown}");
    assert!(!shown.contains("MASTERSECRET"), "{shown}");
    for reply in [
        Reply::Seed { status: Status::Ok, seed: z(b"MASTERSECRET") },
        Reply::Lookup { status: Status::Ok, session: z(b"MASTERSECRET") },
        Reply::TicketKey { status: Status::Ok, keybuf: z(b"MASTERSECRET") },
    ] {
        let shown = format!("{reply:?}");
        assert!(!shown.contains("MASTERSECRET"), "{shown}");
        assert!(!shown.contains("77"), "{shown}"); // 'M' as a byte list
        assert!(shown.contains("12 bytes"), "{shown}");
    }
    // The ticket key name is public and useful in logs.
    let shown = format!("{:?}", Request::TicketKey { key_name: vec![0xab; 2] });
    assert!(shown.contains("abab"), "{shown}");
}
