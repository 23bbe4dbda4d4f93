//! The Postfix `tlsmgr(8)` wire protocol: codecs, and a blocking client.
//!
//! The protocol is layered the same way the server handles a connection:
//! bytes -> [`attr0::Frame`] -> [`tlsmgr::Request`] -> one service call ->
//! [`tlsmgr::Reply`] -> [`attr0::Frame`] -> bytes. Each layer knows only the
//! one below it:
//!
//! - [`attr0`] splits a byte stream into Postfix `attr_print0`/`attr_scan0`
//!   attribute lists and back. It knows nothing about tlsmgr: values stay raw
//!   bytes (base64 text is not decoded there, because the list format carries
//!   no type information).
//! - [`tlsmgr`] maps frames to the six typed tlsmgr requests (and
//!   tlskeeper's own beside them) and their replies, in the exact attribute
//!   order of Postfix 3.7, and decides what a malformed request must be
//!   answered with. It knows nothing about sockets, the core or cache
//!   policy. A `tktkey` reply's `keybuf` stays opaque bytes here; the
//!   daemon's `keybuf` module knows the C struct inside.
//! - [`client`] is a blocking client of a tlsmgr socket, for the CLI, tests,
//!   the load generator and worker processes of TLS servers.
//!
//! This crate depends on no engine: a worker process that only talks to a
//! tlskeeper daemon links the codecs and the client, not wasmtime.
//!
//! Splitting the codec this way, rather than parsing requests straight off
//! the socket the way Postfix's `attr_scan` does, means a request is
//! complete and bounded before any of it is interpreted, and that an error
//! never leaves the stream positioned in the middle of a list.
//!
//! # Security
//!
//! Every byte these modules decode on the server side comes from a local
//! client of `private/tlsmgr` and is attacker-controlled: decoding never
//! panics, bounds memory through [`attr0::Limits`], and is strict (exact
//! attribute order, canonical numbers and base64). Secrets pass through
//! here: TLS session state (`update` requests, `lookup` replies), PRNG seeds
//! and ticket keys (`tktkey` replies). Frames and the typed values that hold
//! them are zeroized on drop, and `Debug` output never shows them.
//!
//! # Limitations
//!
//! Only what tlsmgr uses is implemented: STR, INT and DATA attributes of the
//! attr0 encoding, not LONG, nested hash groups or the other Postfix
//! attribute encodings (`attr_print64`, `attr_print_plain`).

pub mod attr0;
pub mod client;
pub mod tlsmgr;

pub use client::{Client, ClientError};
