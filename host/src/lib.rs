//! tlskeeper: a TLS session-state manager. It keeps the session caches that
//! many short-lived TLS processes share, mints and rotates the RFC 5077
//! ticket keys they must agree on, and serves random bytes from a
//! well-seeded DRBG — the job of Postfix's `tlsmgr(8)`, wire-compatible with
//! it, with all policy inside a sandboxed WebAssembly component.
//!
//! # Layout
//!
//! Requests flow bytes -> frame -> typed request -> one core call -> typed
//! reply, each step in its own module:
//!
//! - [`protocol`]: codecs. `attr0` (bytes <-> frames), `tlsmgr` (frames <->
//!   typed requests and replies), `keybuf` (the 88-byte ticket-key struct).
//!   Know nothing of the core or of sockets.
//! - [`engine`]: the wasmtime embedding and [`engine::Core`], the handle for
//!   export calls. Knows nothing of protocols.
//! - [`caps`] and [`storage`]: the capabilities the core runs on;
//!   [`state`] opens the durable ones (the sealed store, the seed file).
//! - [`shared_core`]: the core behind one lock, called by the connection
//!   threads in turn, and the caretaker thread for its periodic work.
//! - [`service`]: the only module that sees both a protocol request and the
//!   core: it turns one into a call on the other and back.
//! - [`server`]: the UNIX-socket listener and per-connection loops;
//!   [`shutdown`] wakes it when the daemon must stop.
//! - [`client`]: a blocking attr0 client (CLI, tests, load generator);
//!   [`bench`]: the load generator.
//! - [`config`]: settings from defaults, a TOML file and flags.
//! - [`daemon`]: a started core behind the server, until shutdown.
//! - [`postfix`]: running as Postfix's tlsmgr: master(8)'s arguments and
//!   descriptors, main.cf through postconf, chroot and privilege drop.
//! - [`logging`]: Postfix-style log lines to syslog or postlogd(8).
//! - [`cli`]: the `tlskeeper` command line.
//!
//! # Security
//!
//! Network clients control every byte they send; the codecs bound and
//! reject, the core decides. Secrets (ticket keys, sessions, DRBG state) live
//! in the core and in storage; the host handles them only to move them, in
//! zeroizing types, and never logs them.
//!
//! # Limitations
//!
//! Postfix's attr0 protocol over UNIX sockets is the only protocol so far.

pub mod bench;
pub mod caps;
pub mod cli;
pub mod client;
pub mod config;
pub mod daemon;
pub mod engine;
pub mod keys;
pub mod logging;
pub mod postfix;
pub mod protocol;
pub mod read;
pub mod server;
pub mod service;
pub mod shared_core;
pub mod shutdown;
pub mod state;
pub mod storage;
pub mod trace;
