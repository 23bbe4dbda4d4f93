//! The error every export of the core can return.
//!
//! One variant per WIT `manager.error` case; the component glue maps them
//! one to one. A miss is not an error (`Ok(None)`), which keeps Postfix's
//! three outcomes apart: OK = `Ok(Some)`, ERR = `Ok(None)`, FAIL = `Err`.
//!
//! # Security
//!
//! Variants carry names and lengths from the request, never key material
//! or session contents, so an error can be logged as is.
//!
//! # Limitations
//!
//! Storage failures are flattened to a message: the core cannot act on the
//! difference between them, only report it.

use alloc::string::String;
use core::fmt;

use crate::caps::StorageError;

/// Why the core refused a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// No cache of that name is configured.
    UnknownCache(String),
    /// The cache exists but is switched off.
    CacheDisabled(String),
    /// Seed length outside 1..=255.
    BadSeedLength(u32),
    /// Ticket key name neither absent nor 16 bytes.
    BadKeyNameLength(u32),
    /// The ticket cache's timeout is 0, so there are no ticket keys.
    TicketsDisabled,
    /// The session is larger than the cache accepts.
    SessionTooLarge(u32),
    /// The cache could not make room within its bounds.
    CacheFull(String),
    /// The configuration is invalid; the string says why.
    InvalidConfig(String),
    /// A call came before `configure`.
    NotConfigured,
    /// The storage capability failed.
    Storage(String),
    /// The seed file could not be saved; the host's reason.
    SeedFile(String),
    /// A broken internal invariant: a bug in the core; please report it.
    Internal(&'static str),
    /// A ticket plaintext larger than the core seals.
    TicketTooLarge(u32),
}

impl From<StorageError> for Error {
    fn from(e: StorageError) -> Self {
        Error::Storage(alloc::format!("{e}"))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::UnknownCache(name) => write!(f, "bogus cache type \"{name}\""),
            Error::CacheDisabled(name) => write!(f, "cache \"{name}\" is disabled"),
            Error::BadSeedLength(n) => write!(f, "bogus seed length \"{n}\""),
            Error::BadKeyNameLength(n) => {
                write!(f, "invalid session ticket key name length: {n}")
            }
            Error::TicketsDisabled => f.write_str("session tickets are disabled (timeout 0)"),
            Error::SessionTooLarge(n) => write!(f, "session of {n} bytes is too large"),
            Error::CacheFull(name) => write!(f, "cache \"{name}\" is full and nothing could be evicted"),
            Error::InvalidConfig(why) => write!(f, "invalid configuration: {why}"),
            Error::NotConfigured => f.write_str("core called before configure"),
            Error::Storage(why) => f.write_str(why),
            Error::SeedFile(why) => write!(f, "cannot save the seed file: {why}"),
            Error::Internal(what) => write!(f, "internal error (a bug): {what}"),
            Error::TicketTooLarge(n) => write!(f, "ticket plaintext of {n} bytes is too large"),
        }
    }
}

/// Shorthand for the core's results.
pub type Result<T> = core::result::Result<T, Error>;
