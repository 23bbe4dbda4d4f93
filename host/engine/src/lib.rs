//! tlskeeper's engine: the TLS session-state core, a sandboxed WebAssembly
//! component, run in this process with wasmtime on capabilities the host
//! chooses.
//!
//! The core keeps session caches, mints and rotates session-ticket keys,
//! seals and opens tickets under them, and serves random bytes from a
//! well-seeded DRBG. The daemon (`tlskeeper`) runs it behind a socket for
//! Postfix and for worker processes; a server that wants it inside its own
//! process embeds this crate instead, with no daemon, socket or config file.
//!
//! # Embedding
//!
//! [`Embedder`] builds a core on the capabilities you choose (clock,
//! entropy, storage in memory or the sealed redb store in a directory) and
//! starts it behind a [`SharedCore`], a handle that many threads call in
//! turn, with a caretaker thread for the core's periodic work:
//!
//! ```
//! use tlskeeper_engine::Embedder;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // One session cache, "https", whose timeout (an hour) also drives the
//! // ticket keys' rotation. Everything in memory.
//! let embedded = Embedder::new("https", 3600).start()?;
//! let core = embedded.core().clone(); // one clone per thread
//!
//! // A ticket sealed under the current key; the key never leaves the core.
//! let sealed = core.call(|c| c.seal_ticket(b"resumption state"))??;
//! assert!(sealed.lifetime_secs > 0);
//! let opened = core.call(|c| c.open_ticket(&sealed.ticket))??;
//! assert_eq!(opened.as_deref(), Some(&b"resumption state"[..]));
//!
//! // A session cached, found, and handed out once.
//! core.call(|c| c.update("https", "7a6b", b"session"))??;
//! assert_eq!(core.call(|c| c.take("https", "7a6b"))??.as_deref(), Some(&b"session"[..]));
//! assert_eq!(core.call(|c| c.take("https", "7a6b"))??, None);
//!
//! drop(core);
//! embedded.close(); // waits for the last handle, checkpoints, flushes
//! # Ok(())
//! # }
//! ```
//!
//! # Layout
//!
//! - [`Runtime`] ([`runtime`]): the wasmtime engine and the compiled
//!   component, loaded once; [`artifact`] caches the compilation.
//! - [`Capabilities`] ([`capabilities`]): what one core runs on; [`caps`]
//!   (clock, entropy, seed file, log) and [`storage`] (memory, the redb
//!   file, sealing, overlays) implement them; [`state`] opens the durable
//!   ones.
//! - [`Core`] ([`core`]): one instance and its export calls, with trap
//!   recovery; its import handlers are in `imports`, the host's storage
//!   calls in `durability`.
//! - [`SharedCore`] ([`shared_core`]): the core behind one lock, and its
//!   caretaker thread.
//! - [`trace`], [`tape`] and [`replay`]: every input to the core recorded,
//!   and replayed bit for bit.
//! - [`Embedder`] ([`embed`]): all of the above put together for an
//!   embedding server.
//!
//! The engine knows nothing of protocols or sockets: those are the
//! `tlskeeper-protocol` crate's and the daemon's.
//!
//! # Security
//!
//! The component is embedded in this library at build time and reaches
//! nothing but the capabilities it is given. Secrets (ticket keys, sessions,
//! DRBG state) live in the core and in storage, sealed at rest in the redb
//! store; the host side handles them only to move them, in zeroizing types,
//! and never logs them. Callers of [`Core`] are this process's own code and
//! are trusted; what their peers sent is checked by the core.
//!
//! # Limitations
//!
//! One core call at a time per [`SharedCore`] (a lock, not parallelism):
//! measured to be far faster than any socket in front of it, but a server
//! with many cores cannot spread calls across them.

pub mod artifact;
pub mod bindings;
pub mod capabilities;
pub mod caps;
pub mod core;
mod durability;
pub mod embed;
mod imports;
pub mod keys;
pub mod poll;
pub mod read;
pub mod replay;
pub mod runtime;
pub mod shared_core;
pub mod state;
pub mod storage;
pub mod tape;
pub mod throttle;
pub mod trace;

pub use crate::core::{CallError, Core};
pub use artifact::Origin;
pub use bindings::manager::{
    CacheConfig, CachePolicy, Config as CoreConfig, Error as CoreError, FleetConfig, ManagerStats, SealedTicket,
};
pub use capabilities::{Capabilities, HostState};
pub use embed::{EmbedError, Embedded, Embedder};
pub use keys::TicketKey;
pub use runtime::{
    COMPONENT, ENGINE_SETTINGS, EngineError, Limits, MAX_ENTROPY_REQUEST, Runtime, WASMTIME_VERSION, engine_config,
};
pub use shared_core::{CoreGone, SharedCore};
pub use tape::{Divergence, Player, Tape};
