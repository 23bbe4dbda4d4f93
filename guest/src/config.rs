//! The deployment's settings, validated and sanitised as tlsmgr does.
//!
//! The host passes raw values (from main.cf or a TOML file) through the
//! WIT `configure` export; this module turns them into [`Settings`] the rest
//! of the core can rely on: timeouts clamped by Postfix's rules, bounds
//! filled with defaults and checked for consistency, names validated. Doing
//! it here rather than in the host keeps the rules in one place and puts
//! the configuration into every recorded trace.
//!
//! # Security
//!
//! Configuration comes from the operator and is trusted for intent, not for
//! form: every value is checked before use.
//!
//! # Limitations
//!
//! A cache cannot be renamed or removed without a restart of the host; a
//! reconfiguration keeps stored entries of caches it no longer names.

use alloc::string::String;
use alloc::vec::Vec;

use crate::error::{Error, Result};

/// Postfix's `TLS_SESSION_LIFEMIN`: shorter non-zero timeouts are raised.
pub const LIFEMIN_SECS: u32 = 120;
/// Postfix's maximum `*_tls_session_cache_timeout` (100 days).
pub const MAX_TIMEOUT_SECS: u32 = 8_640_000;
/// Default bound on entries per cache. tlsmgr has none; a million sessions
/// is far more than any single MTA resumes within an hour, yet small enough
/// to keep in memory (about 300 MB at ~300 B an entry).
pub const DEFAULT_MAX_ENTRIES: u64 = 1_000_000;
/// Default bound on bytes per cache (keys plus values).
pub const DEFAULT_MAX_BYTES: u64 = 512 * 1024 * 1024;
/// Default largest session. A DER `SSL_SESSION` is ~140 bytes, a few KB
/// with a client certificate chain; nginx stops at 8 KiB. 16 KiB leaves room
/// for long chains without letting one client fill the cache.
pub const DEFAULT_MAX_SESSION_BYTES: u32 = 16 * 1024;
/// Default expired entries removed per housekeeping call: one call takes
/// well under a millisecond from memory, about 3 ms from a persistent store
/// of a million sessions (mostly reads that miss redb's page cache), and a
/// request waits for at most one call. 64 was measured too: p99 during a
/// million-session sweep fell only from about 10 to 8 ms, while the sweep
/// took half as long again.
pub const DEFAULT_HOUSEKEEPING_BATCH: u32 = 256;
/// Longest cache name; names become storage table names.
pub const MAX_CACHE_NAME: usize = 64;

/// Raw settings of one cache, as the host read them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    /// Cache name, `[a-z0-9_-]{1,64}`.
    pub name: String,
    /// False when the operator configured no database for it.
    pub enabled: bool,
    /// Raw timeout in seconds, before sanitising.
    pub timeout_secs: u32,
    /// Most entries kept; 0 = [`DEFAULT_MAX_ENTRIES`].
    pub max_entries: u64,
    /// Most bytes kept; 0 = [`DEFAULT_MAX_BYTES`].
    pub max_bytes: u64,
    /// Largest session accepted; 0 = [`DEFAULT_MAX_SESSION_BYTES`].
    pub max_session_bytes: u32,
}

/// Raw settings of the whole core, as the host read them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The caches; names must be unique.
    pub caches: Vec<CacheConfig>,
    /// The cache whose timeout drives ticket keys.
    pub ticket_cache: String,
    /// Mean seconds between DRBG reseeds; 0 is raised to 1.
    pub reseed_period_secs: u32,
    /// Expired entries removed per housekeeping call; 0 = default.
    pub housekeeping_batch: u32,
    /// Mean seconds between seed-file saves; 0 = no seed file.
    pub seed_save_period_secs: u32,
}

/// One cache's settings after validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheSettings {
    /// Cache name.
    pub name: String,
    /// Operator switch (database configured).
    pub enabled: bool,
    /// Sanitised timeout: 0 (off) or 120..=8 640 000.
    pub timeout_secs: u32,
    /// Entry bound.
    pub max_entries: u64,
    /// Byte bound.
    pub max_bytes: u64,
    /// Session size bound.
    pub max_session_bytes: u32,
}

impl CacheSettings {
    /// Whether lookups and updates are served: switched on and a non-zero
    /// timeout, as tlsmgr decides.
    pub fn cachable(&self) -> bool {
        self.enabled && self.timeout_secs > 0
    }
}

/// The core's settings after validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Caches in the order configured.
    pub caches: Vec<CacheSettings>,
    /// Sanitised timeout T that drives ticket keys; 0 = no tickets.
    pub ticket_timeout_secs: u32,
    /// Mean seconds between reseeds, at least 1.
    pub reseed_period_secs: u32,
    /// Expired entries removed per housekeeping call, at least 1.
    pub housekeeping_batch: u32,
    /// Mean seconds between seed-file saves; 0 = no seed file.
    pub seed_save_period_secs: u32,
}

/// tlsmgr's timeout rule: 0 stays 0 (off), 1..119 becomes 120, above the
/// maximum is an error (Postfix treats it as a fatal configuration error).
pub fn sanitize_timeout(raw: u32) -> Result<u32> {
    match raw {
        0 => Ok(0),
        1..LIFEMIN_SECS => Ok(LIFEMIN_SECS),
        LIFEMIN_SECS..=MAX_TIMEOUT_SECS => Ok(raw),
        _ => Err(Error::InvalidConfig(alloc::format!("timeout {raw}s exceeds the maximum of {MAX_TIMEOUT_SECS}s"))),
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_CACHE_NAME
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn or_default<T: PartialEq + Default>(value: T, default: T) -> T {
    if value == T::default() { default } else { value }
}

impl Config {
    /// Validate and sanitise.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] naming the first offending setting.
    pub fn validate(&self) -> Result<Settings> {
        let mut caches: Vec<CacheSettings> = Vec::with_capacity(self.caches.len());
        for raw in &self.caches {
            if !valid_name(&raw.name) {
                return Err(Error::InvalidConfig(alloc::format!(
                    "cache name \"{}\" must be 1..{MAX_CACHE_NAME} characters of [a-z0-9_-]",
                    raw.name
                )));
            }
            if caches.iter().any(|c| c.name == raw.name) {
                return Err(Error::InvalidConfig(alloc::format!("cache \"{}\" is configured twice", raw.name)));
            }
            let settings = CacheSettings {
                name: raw.name.clone(),
                enabled: raw.enabled,
                timeout_secs: sanitize_timeout(raw.timeout_secs)?,
                max_entries: or_default(raw.max_entries, DEFAULT_MAX_ENTRIES),
                max_bytes: or_default(raw.max_bytes, DEFAULT_MAX_BYTES),
                max_session_bytes: or_default(raw.max_session_bytes, DEFAULT_MAX_SESSION_BYTES),
            };
            // One largest entry must fit, or `update` could evict the whole
            // cache and still fail.
            let largest = u64::from(settings.max_session_bytes) + crate::scache::ENTRY_OVERHEAD;
            if largest > settings.max_bytes {
                return Err(Error::InvalidConfig(alloc::format!(
                    "cache \"{}\": max_bytes {} cannot hold one session of max_session_bytes {}",
                    raw.name,
                    settings.max_bytes,
                    settings.max_session_bytes
                )));
            }
            caches.push(settings);
        }
        let ticket_timeout_secs = caches.iter().find(|c| c.name == self.ticket_cache).map_or(0, |c| c.timeout_secs);
        Ok(Settings {
            caches,
            ticket_timeout_secs,
            reseed_period_secs: self.reseed_period_secs.max(1),
            housekeeping_batch: or_default(self.housekeeping_batch, DEFAULT_HOUSEKEEPING_BATCH),
            seed_save_period_secs: self.seed_save_period_secs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn cache(name: &str, timeout: u32) -> CacheConfig {
        CacheConfig {
            name: name.into(),
            enabled: true,
            timeout_secs: timeout,
            max_entries: 0,
            max_bytes: 0,
            max_session_bytes: 0,
        }
    }

    fn config(caches: Vec<CacheConfig>) -> Config {
        Config {
            caches,
            ticket_cache: "smtpd".into(),
            reseed_period_secs: 3600,
            housekeeping_batch: 0,
            seed_save_period_secs: 0,
        }
    }

    #[test]
    fn timeouts_follow_tlsmgr() {
        assert_eq!(sanitize_timeout(0), Ok(0));
        assert_eq!(sanitize_timeout(1), Ok(120));
        assert_eq!(sanitize_timeout(119), Ok(120));
        assert_eq!(sanitize_timeout(120), Ok(120));
        assert_eq!(sanitize_timeout(3600), Ok(3600));
        assert_eq!(sanitize_timeout(8_640_000), Ok(8_640_000));
        assert!(matches!(sanitize_timeout(8_640_001), Err(Error::InvalidConfig(_))));
    }

    #[test]
    fn defaults_fill_zeros_and_ticket_timeout_follows_its_cache() {
        let s = config(vec![cache("smtpd", 10), cache("smtp", 0)]).validate().unwrap();
        assert_eq!(s.caches[0].timeout_secs, 120);
        assert_eq!(s.caches[0].max_entries, DEFAULT_MAX_ENTRIES);
        assert_eq!(s.caches[0].max_session_bytes, DEFAULT_MAX_SESSION_BYTES);
        assert_eq!(s.ticket_timeout_secs, 120);
        assert!(s.caches[0].cachable());
        assert!(!s.caches[1].cachable());
        assert_eq!(s.housekeeping_batch, DEFAULT_HOUSEKEEPING_BATCH);
    }

    #[test]
    fn missing_ticket_cache_turns_tickets_off() {
        let s = config(vec![cache("smtp", 3600)]).validate().unwrap();
        assert_eq!(s.ticket_timeout_secs, 0);
    }

    #[test]
    fn rejects_bad_names_duplicates_and_impossible_bounds() {
        for bad in ["", "SMTPD", "a/b", "x y"] {
            assert!(config(vec![cache(bad, 1)]).validate().is_err(), "{bad:?}");
        }
        assert!(config(vec![cache("a", 1), cache("a", 2)]).validate().is_err());
        let mut tiny = cache("smtpd", 3600);
        tiny.max_bytes = 100;
        assert!(config(vec![tiny]).validate().is_err());
    }
}
