//! tlskeeper-rustls: rustls session tickets and session storage shared
//! between server processes through tlskeeper, with no ticket key in any
//! of them.
//!
//! A TLS server run as many processes (prefork workers, a fleet of
//! containers on one host) resumes a client's session only in the process
//! that made it, unless they share the session cache and the ticket keys.
//! These adapters share both through a tlskeeper daemon: [`Ticketer`] has
//! the daemon seal and open tickets (rustls's `ProducesTickets`), and
//! [`SessionStore`] keeps sessions in one of its caches (rustls's
//! `StoresServerSessions`). A session made by one process then resumes in
//! any other, across TLS 1.3 tickets, TLS 1.2 tickets and TLS 1.2 session
//! ids, and across the daemon's key rotation and restarts.
//!
//! # Adopting it
//!
//! In an existing rustls server, two lines after the configuration is
//! built:
//!
//! ```no_run
//! use std::sync::Arc;
//!
//! use tlskeeper_rustls::{Backend, SessionStore, Ticketer};
//!
//! fn share(config: &mut rustls::ServerConfig) -> Result<(), Box<dyn std::error::Error>> {
//!     let backend = Backend::remote("/run/tlskeeper/tlsmgr");
//!     config.ticketer = Arc::new(Ticketer::new(backend.clone())?);
//!     config.session_storage = Arc::new(SessionStore::new(backend, "https")?);
//!     // One ticket per handshake: each costs a request to the daemon.
//!     config.send_tls13_tickets = 1;
//!     Ok(())
//! }
//! ```
//!
//! The daemon needs a cache for the store (its defaults are Postfix's
//! `smtpd`, `smtp` and `lmtp`), and its ticket keys should follow that
//! cache's timeout rather than smtpd's:
//!
//! ```toml
//! ticket_cache = "https"   # whose timeout drives the ticket keys
//! [caches.smtpd]           # a [caches] table replaces the defaults
//! [caches.https]
//! timeout = 3600
//! ```
//!
//! `examples/https_server.rs` is a whole server built this way.
//!
//! # Layout
//!
//! - [`Ticketer`] (`ticketer.rs`): tickets sealed and opened by the backend.
//! - [`SessionStore`] (`store.rs`): sessions in one of the backend's caches.
//! - [`Backend`] (`backend.rs`): where requests go, a daemon
//!   ([`Backend::remote`]) or a core in this process
//!   ([`Backend::embedded`]), and what each answer means.
//! - [`Remote`] (`remote.rs`): the pool of connections to a daemon, with
//!   every wait bounded and a backoff while the daemon is away.
//! - `warn.rs`: warnings once per kind of failure, not per handshake.
//!
//! # Security
//!
//! **Remote mode: the worker never holds a ticket key.** It sends a
//! ticket's plaintext to the daemon over the UNIX socket and gets the
//! sealed ticket back (`tktseal`), and sends a client's ticket and gets the
//! plaintext back, or a refusal (`tktopen`); it never asks for a key
//! (`tktkey`, Postfix's request, is not used). A worker that is
//! compromised leaks the sessions it handles, as any TLS server does, and
//! while it can reach the socket it can have the daemon open tickets it
//! has captured whose key still decrypts; but it learns no key: once it is
//! cut off it can open and seal nothing, and tickets whose keys have left
//! the ring stay closed to it for good.
//! Sessions go through the same socket (`lookup`, `update`, `take`), and
//! `policy` once at start. The integration tests check by what crosses the
//! socket that nothing else does.
//!
//! What is trusted: the daemon at the configured socket, and the
//! permissions of the socket's directory, which decide who can seal and
//! open tickets. What an attacker controls: every ticket and session id a
//! TLS client presents, passed to the daemon unchanged (it bounds and
//! checks them, and refuses every bad ticket with the same answer).
//! Secrets held here: plaintexts and session values in transit, in
//! zeroizing buffers, never logged, and no `Debug` output of them.
//!
//! Embedded mode ([`Backend::embedded`]) runs the core in this process,
//! keys included: for a single-process server that wants the core's
//! rotation and bounded caches, not for key separation.
//!
//! # Limitations
//!
//! - **Bounded waits, not none.** rustls calls these adapters
//!   synchronously, in the middle of a handshake. A request waits at most
//!   [`RemoteOptions::timeout`] (250 ms); a daemon that is away or hung
//!   costs a handshake at most one timeout, and requests then fail at once
//!   for [`RemoteOptions::retry_after`] (1 s), with full handshakes; a daemon
//!   that answers slowly costs an ordinary handshake at most
//!   [`RemoteOptions::handshake_bound`] (two requests, 500 ms; the
//!   exceptions are in [`Remote`]'s docs). In an async server the wait
//!   blocks a runtime worker.
//! - **No shared client-side cache.** A `ClientSessionStore` that shares
//!   sessions across processes cannot be written with rustls 0.23. Checked
//!   against rustls 0.23.48: `Tls12ClientSessionValue::new` and
//!   `Tls13ClientSessionValue::new` are `pub(crate)`, neither type has an
//!   encoding (`Codec` is implemented only for the server's
//!   `ServerSessionValue`), and their `ClientSessionCommon` keeps the
//!   secret `pub(crate)` and holds `Weak` references to the certificate
//!   verifier and client-certificate resolver that made it, which no other
//!   process could supply. So a session can be neither written out nor
//!   rebuilt (rustls issues #2287 and #3103; PR #3051, which would have
//!   added an encoding, was closed unmerged). Clients keep rustls's
//!   in-memory `ClientSessionMemoryCache`.
//! - Ticket and cache policy (on or off) are learnt once, when the adapters
//!   are made.

mod backend;
mod remote;
mod store;
#[cfg(test)]
mod testing;
mod ticketer;
mod warn;

pub use backend::{Backend, Unavailable};
pub use remote::{REQUESTS_PER_HANDSHAKE, Remote, RemoteError, RemoteOptions};
pub use store::{MAX_KEY_BYTES, SessionStore, StoreError};
pub use ticketer::{MAX_TICKET_LIFETIME, Ticketer, TicketerError};
