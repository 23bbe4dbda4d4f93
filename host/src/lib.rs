//! tlskeeper: a TLS session-state manager. It keeps the session caches that
//! many short-lived TLS processes share, mints and rotates the RFC 5077
//! ticket keys they must agree on, and serves random bytes from a
//! well-seeded DRBG — the job of Postfix's `tlsmgr(8)`, wire-compatible with
//! it, with all policy inside a sandboxed WebAssembly component.
//!
//! # Layout
//!
//! The engine (`tlskeeper-engine`: the component, capabilities, storage,
//! the shared core, traces) and the wire protocol (`tlskeeper-protocol`:
//! codecs and a client) are libraries of their own; this crate is the
//! daemon around them. Requests flow bytes -> frame -> typed request -> one
//! core call -> typed reply:
//!
//! - [`service`]: the only module that sees both a protocol request and the
//!   core: it turns one into a call on the other and back; [`keybuf`]
//!   encodes the ticket-key struct Postfix's `tktkey` reply carries.
//! - [`server`]: the UNIX-socket listener and per-connection loops;
//!   [`shutdown`] wakes it when the daemon must stop.
//! - [`bench`]: the load generator.
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
pub mod cli;
pub mod config;
pub mod daemon;
pub mod keybuf;
pub mod logging;
pub mod postfix;
pub mod server;
pub mod service;
pub mod shutdown;
