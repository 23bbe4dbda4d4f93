//! The log capability: the core's messages into `tracing`.
//!
//! # Security
//!
//! The core promises never to log secrets; the host still treats messages
//! as untrusted text and bounds their length, so a confused core cannot
//! flood the log.
//!
//! # Limitations
//!
//! The core's own levels map one to one onto `tracing` levels; there is no
//! per-module filtering inside the core.

use crate::bindings::log::Level;

/// Longest message kept; the rest is cut.
pub const MAX_MESSAGE: usize = 1024;

/// Emit one message from the core.
pub fn emit(level: Level, message: &str) {
    let message = match message.char_indices().nth(MAX_MESSAGE) {
        Some((cut, _)) => &message[..cut],
        None => message,
    };
    match level {
        Level::Error => tracing::error!(target: "tlskeeper::core", "{message}"),
        Level::Warn => tracing::warn!(target: "tlskeeper::core", "{message}"),
        Level::Info => tracing::info!(target: "tlskeeper::core", "{message}"),
        Level::Debug => tracing::debug!(target: "tlskeeper::core", "{message}"),
        Level::Trace => tracing::trace!(target: "tlskeeper::core", "{message}"),
    }
}
