//! The floor: a tlsmgr-compatible server that does nothing, for measuring
//! how fast any server on this socket could possibly be.
//!
//! It speaks the protocol with tlskeeper's own codec (so decoding and
//! encoding cost what they cost tlskeeper) and a thread per connection (as
//! tlskeeper's server does), but has no core, no storage and no actor:
//! every request gets a fixed reply. `scripts/bench` measures it next to
//! tlskeeper and Postfix's tlsmgr; tlskeeper's distance from it is the cost
//! of everything tlskeeper does beyond the socket.
//!
//! Replies are fixed per request type, with one concession to the load
//! generator's checks: a lookup of an id starting `never-` (the
//! `lookup-miss` mix) is answered "not found".
//!
//! ```sh
//! cargo run --release --example floor -- /tmp/floor.sock
//! ```
//!
//! # Security
//!
//! A benchmarking tool: its "keys" and "sessions" are constants. Never put
//! it where a real client could reach it.
//!
//! # Limitations
//!
//! No limits, no timeouts, no master(8) wake-ups; it runs until killed.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;

use tlskeeper::keybuf;
use tlskeeper_engine::keys::TicketKey;
use tlskeeper_protocol::attr0::{self, Decoder, Limits};
use tlskeeper_protocol::tlsmgr::{self, Reply, Request, RequestKind, Status};

fn main() {
    let Some(path) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: floor SOCKET");
        std::process::exit(64);
    };
    let _ = std::fs::remove_file(&path);
    let listener = match UnixListener::bind(&path) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("floor: cannot listen on {}: {e}", path.display());
            std::process::exit(73);
        }
    };
    eprintln!("floor: serving fixed replies on {}", path.display());
    for stream in listener.incoming().flatten() {
        std::thread::spawn(move || serve(stream));
    }
}

/// The reply to `request`, fixed but for lookups of `never-` ids.
fn reply(request: &Request) -> Reply {
    let key = TicketKey { name: [1; 16], cipher_key: [2; 32], hmac_key: [3; 32], expires: i64::MAX / 2 };
    match request {
        Request::Seed { size } => Reply::Seed { status: Status::Ok, seed: vec![7; *size as usize].into() },
        Request::Policy { .. } => Reply::Policy { status: Status::Ok, cachable: true, timeout: 3600 },
        Request::Lookup { cache_id, .. } if cache_id.starts_with("never-") => {
            Reply::Lookup { status: Status::Err, session: Vec::new().into() }
        }
        Request::Lookup { .. } => Reply::Lookup { status: Status::Ok, session: vec![0x30; 140].into() },
        Request::Update { .. } => Reply::Update { status: Status::Ok },
        Request::Delete { .. } => Reply::Delete { status: Status::Ok },
        Request::TicketKey { .. } => {
            Reply::TicketKey { status: Status::Ok, keybuf: keybuf::encode(&key).to_vec().into() }
        }
        Request::Take { .. } => Reply::Take { status: Status::Ok, session: vec![0x30; 140].into() },
        // A ticket the size of a sealed 200-byte plaintext, and that
        // plaintext back: the wire cost of sealing, with no crypto.
        Request::Seal { .. } => Reply::Seal { status: Status::Ok, ticket: vec![0x42; 272], lifetime: 1798 },
        Request::Open { .. } => Reply::Open { status: Status::Ok, plaintext: vec![0x30; 200].into() },
    }
}

fn serve(mut stream: UnixStream) {
    if stream.write_all(tlsmgr::ANNOUNCEMENT).is_err() {
        return;
    }
    let mut decoder = Decoder::new(Limits::default());
    let (mut buf, mut out, mut chunk) = (Vec::new(), Vec::new(), vec![0u8; 16 * 1024]);
    loop {
        while let Ok(Some((frame, used))) = decoder.decode(&buf) {
            buf.drain(..used);
            let reply = match Request::from_frame(&frame) {
                Ok(request) => reply(&request),
                Err(_) => Reply::failure(RequestKind::Seed),
            };
            out.clear();
            if attr0::encode(&reply.to_frame(), &mut out).is_err() || stream.write_all(&out).is_err() {
                return;
            }
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}
