//! tlskeeper's core: TLS session caches, RFC 5077 session-ticket keys and an
//! HMAC-DRBG, written as a state machine over injected capabilities.
//!
//! On `wasm32` this crate is a WASI component (`no_std` + `alloc`) whose only
//! imports are tlskeeper's own `clock`, `entropy`, `storage` and `log`
//! interfaces (see `wit/tlskeeper.wit`). Natively it is an ordinary library,
//! so every policy below is unit-tested without wasmtime.
//!
//! # Layout
//!
//! - [`caps`]: the [`Capabilities`](caps::Capabilities) trait, the core's only
//!   window on the world.
//! - [`config`]: the deployment's settings, sanitised as tlsmgr does.
//! - [`drbg`]: HMAC-DRBG (SHA-256) per NIST SP 800-90A, the pure algorithm.
//! - [`prng`]: when the DRBG is instantiated and reseeded, and what is mixed in.
//! - [`scache`]: session caches: entry format, expiry, bounds, eviction,
//!   incremental cleanup.
//! - [`idkey`]: cache ids keyed under a salt the store keeps, and the
//!   migration from stores that keyed them with SHA-256.
//! - [`tickets`]: the two-slot ticket-key ring and its persistence.
//! - [`fleet`]: ticket keys shared by cores on one store, one per time slot.
//! - [`sealing`]: tickets sealed and opened under the ring's keys, so that
//!   TLS servers need never hold a key.
//! - [`nonces`]: the sealed tickets' nonces, one ChaCha20 block each.
//! - [`manager`]: the one type the exports call; it owns the pieces above.
//! - [`error`]: the error every export can return.
//! - `component` and `rt` (wasm32 only): the WIT glue, allocator and panic
//!   handler.
//! - [`testing`] (tests only): fake capabilities.
//! - `fault` (the `test-fault` feature only, never shipped): lookups that
//!   trap on purpose, for the host's recovery tests.
//!
//! # Security
//!
//! The core holds every secret tlskeeper has: ticket keys and DRBG state. It
//! trusts the host for time and entropy and nothing else: export arguments
//! come from network clients and stored bytes may have been tampered with, so
//! both are parsed, bounded and rejected rather than trusted. Secret types
//! have no `Debug` and are zeroized on drop; log messages carry no secrets.
//!
//! # Limitations
//!
//! One instance serves one daemon; calls must be serialised by the host.

#![cfg_attr(target_arch = "wasm32", no_std)]

extern crate alloc;

pub mod caps;
pub mod config;
pub mod drbg;
pub mod error;
pub mod fleet;
pub mod idkey;
pub mod manager;
pub mod nonces;
pub mod prng;
pub mod scache;
pub mod sealing;
pub mod tickets;

#[cfg(target_arch = "wasm32")]
mod component;
#[cfg(all(target_arch = "wasm32", feature = "test-fault"))]
mod fault;
#[cfg(target_arch = "wasm32")]
mod rt;

#[cfg(any(test, feature = "testing"))]
pub mod testing;
