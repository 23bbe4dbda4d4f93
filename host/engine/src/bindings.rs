//! The one `bindgen!` of the host: Rust types and traits generated from
//! `wit/tlskeeper.wit`.
//!
//! Imports are `trappable`: a host function returns `wasmtime::Result`, and
//! an `Err` traps the core (used for a core that breaks the contract, such as
//! asking for more entropy than allowed). Domain errors (`storage.error`,
//! `manager.error`) are ordinary WIT results.
//!
//! # Security
//!
//! The generated `SessionTicketKey` record derives `Debug` and holds key
//! bytes in plain `Vec`s: [`super::Core`] converts it at once into
//! [`crate::keys::TicketKey`], which zeroizes and redacts, and never lets
//! the generated value escape.
//!
//! # Limitations
//!
//! Generated code; its names follow the WIT, not this crate's conventions.

#![allow(missing_docs)]

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "core",
    imports: { default: trappable },
    // serde: the trace format records every value that crosses the boundary.
    additional_derives: [PartialEq, Eq, serde::Serialize, serde::Deserialize],
});

pub use self::exports::tlskeeper::core::manager;
pub use self::tlskeeper::core::{clock, entropy, log, seed_file, storage};
