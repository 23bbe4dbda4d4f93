//! The capabilities the host grants the core: entropy, clock, log (storage
//! is in [`crate::storage`]).
//!
//! Each capability is a small trait with a production implementation, so
//! tests (and later the replayer) can substitute their own. The engine's
//! import handlers call through these traits and nothing else.
//!
//! # Security
//!
//! Entropy is the root of every key the core makes: the production source is
//! the OS CSPRNG (`getrandom`), and a failure to read it is fatal for the call
//! (it traps the core) rather than falling back to anything weaker.
//!
//! # Limitations
//!
//! The clock is wall-clock time; a clock stepped backwards makes entries and
//! keys live longer, stepped forwards makes them expire early.

pub mod clock;
pub mod entropy;
pub mod log;

pub use clock::{Clock, SystemClock};
pub use entropy::{Entropy, EntropyError, OsEntropy};
