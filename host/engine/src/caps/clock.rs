//! The clock capability: wall-clock time for the core.
//!
//! # Security
//!
//! Trusted for correctness of expiry, not for secrecy.
//!
//! # Limitations
//!
//! A time before the Unix epoch reads as 0.

use std::time::{SystemTime, UNIX_EPOCH};

/// A source of wall-clock time.
pub trait Clock: Send {
    /// Nanoseconds since the Unix epoch.
    fn now_nanos(&mut self) -> u64;
}

/// The system's real-time clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_nanos(&mut self) -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    }
}
