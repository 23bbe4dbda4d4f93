//! The capabilities the host grants the core: entropy, clock, the seed
//! file, log (storage is in [`crate::storage`]).
//!
//! Each capability is a small trait with a production implementation, so
//! tests (and later the replayer) can substitute their own. The engine's
//! import handlers call through these traits and nothing else.
//!
//! # Security
//!
//! Entropy is the root of every key the core makes: the production source is
//! the OS CSPRNG (`getrandom`), and a failure to read it is fatal for the call
//! (it traps the core) rather than falling back to anything weaker. An
//! operator's extra source (Postfix's `tls_random_source`) is mixed in on
//! top, never used instead.
//!
//! # Limitations
//!
//! The clock is wall-clock time; a clock stepped backwards makes entries and
//! keys live longer, stepped forwards makes them expire early.

pub mod clock;
pub mod entropy;
pub mod log;
pub mod random_source;
pub mod seed_file;

pub use clock::{Clock, SystemClock};
pub use entropy::{Entropy, EntropyError, OsEntropy};
pub use random_source::{MixedEntropy, RandomSource};
pub use seed_file::{NoSeedFile, SeedFile, SeedStore};
