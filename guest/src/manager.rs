//! The manager: the one type behind every export of the core.
//!
//! Each method is one export call: it reads the clock at most once, applies
//! the policy of [`crate::scache`], [`crate::tickets`] (or [`crate::fleet`])
//! and [`crate::prng`], and returns a typed result. Refusals are returned, not logged: the host's
//! service logs them in tlsmgr's words, because only it knows which request
//! was refused (`bogus cache type "x" in "lookup" request`).
//!
//! # Security
//!
//! Every argument comes from a network client through the host and is
//! bounded here: seed lengths to 1..=255, key names to 16 bytes, sessions to
//! the cache's limit, cache names to those configured. Returns ticket keys
//! and random bytes, which the host sends only to the requesting client.
//!
//! # Limitations
//!
//! Not thread-safe by design: the host serialises calls.

use alloc::string::String;
use alloc::vec::Vec;

use crate::caps::{Capabilities, Level};
use crate::config::{Config, Settings};
use crate::error::{Error, Result};
use crate::fleet::FleetRing;
use crate::idkey::IdKey;
use crate::nonces::Nonces;
use crate::prng::Prng;
use crate::scache::{Counters, SessionCache};
use crate::sealing::{self, SealCache};
use crate::tickets::{self, KeyRing, NAME_LEN, TicketKey};

/// Largest seed request, as in tlsmgr.
pub const MAX_SEED_LEN: u32 = 255;
/// Nanoseconds per second: the clock capability's unit.
const NANOS: u64 = 1_000_000_000;
/// Longest housekeeping sleep, so that a clock jump is noticed in time.
pub const MAX_HOUSEKEEPING_DELAY_MS: u64 = 60_000;

/// The `policy` answer for one cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// True when lookups and updates are served.
    pub cachable: bool,
    /// The sanitised timeout, reported even when the cache is disabled.
    pub timeout_secs: u32,
}

/// Counters and size of one cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheStats {
    /// Cache name.
    pub name: String,
    /// Entries stored now.
    pub entries: u64,
    /// Bytes stored now (keys plus values).
    pub bytes: u64,
    /// Counters since the instance started.
    pub counters: Counters,
}

/// A ticket sealed by [`Manager::seal_ticket`].
pub struct SealedTicket {
    /// The ticket, in the format of [`crate::sealing`].
    pub ticket: Vec<u8>,
    /// Seconds every ticket sealed now is sure to open for
    /// ([`tickets::guaranteed_lifetime_secs`]).
    pub lifetime_secs: u32,
}

/// Counters of the whole core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    /// One entry per configured cache.
    pub caches: Vec<CacheStats>,
    /// Ticket keys minted.
    pub keys_minted: u64,
    /// DRBG reseeds.
    pub reseeds: u64,
    /// Bytes served by `seed`.
    pub seed_bytes: u64,
}

/// The core's state: caches, key ring, PRNG.
pub struct Manager {
    settings: Option<Settings>,
    caches: Vec<SessionCache>,
    keys: KeyRing,
    /// Set once the core joined a fleet: then it replaces `keys`.
    fleet: Option<FleetRing>,
    /// How cache ids are keyed; loaded from the store on the first cache
    /// request.
    id_key: Option<IdKey>,
    /// When a fleet core last re-asserted the id salt, seconds.
    salt_verified_at: u64,
    seal_keys: SealCache,
    nonces: Nonces,
    prng: Prng,
    /// The cache the next housekeeping call starts with, so that every cache
    /// gets its turn even when one has a large backlog.
    sweep_cursor: usize,
    seed_bytes: u64,
}

impl Default for Manager {
    fn default() -> Self {
        Self::new()
    }
}

impl Manager {
    /// An unconfigured manager; every call but `configure` fails until it is
    /// configured.
    pub fn new() -> Self {
        Manager {
            settings: None,
            caches: Vec::new(),
            keys: KeyRing::new(),
            fleet: None,
            id_key: None,
            salt_verified_at: 0,
            seal_keys: SealCache::new(),
            nonces: Nonces::new(),
            prng: Prng::new(3600),
            sweep_cursor: 0,
            seed_bytes: 0,
        }
    }

    /// Install (or replace) the configuration. Caches keep their entries and
    /// counters across a reconfiguration.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`]; the previous configuration stays in force.
    pub fn configure(&mut self, caps: &mut impl Capabilities, config: &Config) -> Result<()> {
        let settings = config
            .validate()
            .and_then(|s| match &self.fleet {
                Some(f) => check_margin(f.margin_secs(), s.ticket_timeout_secs).map(|()| s),
                None => Ok(s),
            })
            .inspect_err(|e| caps.log(Level::Error, &alloc::format!("{e}")))?;
        let mut caches = Vec::with_capacity(settings.caches.len());
        for cs in &settings.caches {
            let mut cache = match self.caches.iter().position(|c| c.settings().name == cs.name) {
                Some(i) => {
                    let mut cache = self.caches.swap_remove(i);
                    cache.reconfigure(cs.clone());
                    cache
                }
                None => SessionCache::new(cs.clone()),
            };
            cache.set_shared(self.fleet.is_some());
            if let Some(id_key) = &self.id_key {
                cache.set_id_key(id_key.clone());
            }
            caches.push(cache);
        }
        self.caches = caches;
        self.prng.set_period(settings.reseed_period_secs);
        self.prng.set_seed_period(settings.seed_save_period_secs);
        self.sweep_cursor = 0;
        self.settings = Some(settings);
        Ok(())
    }

    /// Share ticket keys with the other cores on this store, agreeing one
    /// key per time slot ([`crate::fleet`]), `margin_secs` being how far
    /// their clocks may disagree. Repeated, it changes the margin.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] when the margin exceeds T/4;
    /// [`Error::NotConfigured`].
    pub fn join_fleet(&mut self, caps: &mut impl Capabilities, margin_secs: u32) -> Result<()> {
        let t = self.settings()?.ticket_timeout_secs;
        check_margin(margin_secs, t).inspect_err(|e| caps.log(Level::Error, &alloc::format!("{e}")))?;
        match &mut self.fleet {
            Some(f) => f.set_margin(margin_secs),
            None => {
                self.fleet = Some(FleetRing::new(margin_secs));
                for cache in &mut self.caches {
                    cache.set_shared(true);
                }
                caps.log(
                    Level::Info,
                    &alloc::format!("sharing session ticket keys with the store's other cores, margin {margin_secs} s"),
                );
            }
        }
        Ok(())
    }

    /// The key to seal with now, from the fleet's ring or our own.
    fn encrypt_key(&mut self, caps: &mut impl Capabilities, now: u64, half: i64) -> Result<TicketKey> {
        match &mut self.fleet {
            Some(f) => f.encrypt_key(caps, &mut self.prng, now, half),
            None => self.keys.encrypt_key(caps, &mut self.prng, now, half),
        }
    }

    /// The key named `name`, if it opens now.
    fn decrypt_key(
        &mut self,
        caps: &mut impl Capabilities,
        now: u64,
        name: &[u8; NAME_LEN],
        half: i64,
    ) -> Result<Option<TicketKey>> {
        match &mut self.fleet {
            Some(f) => f.decrypt_key(caps, now, name, half),
            None => self.keys.decrypt_key(caps, now, name, half),
        }
    }

    fn settings(&self) -> Result<&Settings> {
        self.settings.as_ref().ok_or(Error::NotConfigured)
    }

    /// `len` bytes from the DRBG.
    ///
    /// # Errors
    ///
    /// [`Error::BadSeedLength`] outside 1..=255.
    pub fn seed(&mut self, caps: &mut impl Capabilities, len: u32) -> Result<Vec<u8>> {
        self.settings()?;
        if !(1..=MAX_SEED_LEN).contains(&len) {
            return Err(Error::BadSeedLength(len));
        }
        let now = caps.now_nanos();
        let mut out = alloc::vec![0u8; len as usize];
        self.prng.fill(caps, now, &mut out)?;
        self.seed_bytes += u64::from(len);
        Ok(out)
    }

    /// Whether `cache` is served, and its timeout.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownCache`].
    pub fn policy(&mut self, cache: &str) -> Result<Policy> {
        self.settings()?;
        match self.caches.iter().find(|c| c.settings().name == cache) {
            Some(c) => Ok(Policy {
                cachable: c.settings().cachable(),
                // The replay tests' deliberate divergence (see Cargo.toml).
                timeout_secs: c.settings().timeout_secs + u32::from(cfg!(feature = "test-divergence")),
            }),
            None => Err(Error::UnknownCache(cache.into())),
        }
    }

    /// The cache that `lookup`, `update`, `take` and `delete` may use, at
    /// `now_nanos` (the call's one clock reading), with the store's id key
    /// loaded.
    fn usable_cache(&mut self, caps: &mut impl Capabilities, name: &str) -> Result<(&mut SessionCache, u64)> {
        self.settings()?;
        let Some(i) = self.caches.iter().position(|c| c.settings().name == name) else {
            return Err(Error::UnknownCache(name.into()));
        };
        if !self.caches[i].settings().cachable() {
            return Err(Error::CacheDisabled(name.into()));
        }
        let now = caps.now_nanos();
        if self.id_key.is_none() {
            let caches = &self.caches;
            // Entries keyed the old way stay fresh at most the longest
            // timeout of a cache that holds any.
            let id_key = IdKey::load(caps, &mut self.prng, now, |caps| {
                let mut longest = 0;
                for c in caches {
                    if c.size(caps)?.entries > 0 {
                        longest = longest.max(c.settings().timeout_secs);
                    }
                }
                Ok(longest)
            })?;
            for c in &mut self.caches {
                c.set_id_key(id_key.clone());
            }
            self.id_key = Some(id_key);
        }
        Ok((&mut self.caches[i], now / NANOS))
    }

    /// The fresh session stored under `id` in `cache`.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownCache`], [`Error::CacheDisabled`], [`Error::Storage`].
    pub fn lookup(&mut self, caps: &mut impl Capabilities, cache: &str, id: &str) -> Result<Option<Vec<u8>>> {
        let (cache, now) = self.usable_cache(caps, cache)?;
        cache.lookup(caps, now, id)
    }

    /// Store `session` under `id` in `cache`.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownCache`], [`Error::CacheDisabled`],
    /// [`Error::SessionTooLarge`], [`Error::CacheFull`], [`Error::Storage`].
    pub fn update(&mut self, caps: &mut impl Capabilities, cache: &str, id: &str, session: &[u8]) -> Result<()> {
        let (cache, now) = self.usable_cache(caps, cache)?;
        cache.update(caps, now, id, session)
    }

    /// The fresh session under `id` in `cache`, removed in the same call:
    /// handed out at most once.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownCache`], [`Error::CacheDisabled`], [`Error::Storage`].
    pub fn take(&mut self, caps: &mut impl Capabilities, cache: &str, id: &str) -> Result<Option<Vec<u8>>> {
        let (cache, now) = self.usable_cache(caps, cache)?;
        cache.take(caps, now, id)
    }

    /// Remove `id` from `cache`; true when it was present.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownCache`], [`Error::CacheDisabled`], [`Error::Storage`].
    pub fn delete(&mut self, caps: &mut impl Capabilities, cache: &str, id: &str) -> Result<bool> {
        let (cache, now) = self.usable_cache(caps, cache)?;
        cache.delete(caps, now, id)
    }

    /// The key to encrypt with (no name), or the named key if it still
    /// decrypts.
    ///
    /// # Errors
    ///
    /// [`Error::TicketsDisabled`] when T = 0; [`Error::BadKeyNameLength`];
    /// [`Error::Storage`].
    pub fn ticket_key(&mut self, caps: &mut impl Capabilities, name: Option<&[u8]>) -> Result<Option<TicketKey>> {
        // tlsmgr checks the name's length before the timeout; so do we, so
        // that a bad length is reported (and logged) even when tickets are
        // off.
        self.settings()?;
        let name: Option<&[u8; NAME_LEN]> = match name {
            None => None,
            Some(n) => {
                Some(n.try_into().map_err(|_| Error::BadKeyNameLength(u32::try_from(n.len()).unwrap_or(u32::MAX)))?)
            }
        };
        let half = self.ticket_half()?;
        let now = caps.now_nanos();
        match name {
            None => self.encrypt_key(caps, now, half).map(Some),
            Some(name) => self.decrypt_key(caps, now, name, half),
        }
    }

    /// Seal a ticket's plaintext under the current encryption key (minting
    /// one if none encrypts), with a nonce no other ticket has ([`Nonces`]).
    ///
    /// # Errors
    ///
    /// [`Error::TicketTooLarge`] beyond [`sealing::MAX_PLAINTEXT`] bytes;
    /// [`Error::TicketsDisabled`] when T = 0; [`Error::Storage`] when a new
    /// key cannot be stored (no ticket is sealed under a key that would not
    /// survive a restart).
    pub fn seal_ticket(&mut self, caps: &mut impl Capabilities, plaintext: &[u8]) -> Result<SealedTicket> {
        self.settings()?;
        if plaintext.len() > sealing::MAX_PLAINTEXT {
            return Err(Error::TicketTooLarge(u32::try_from(plaintext.len()).unwrap_or(u32::MAX)));
        }
        let half = self.ticket_half()?;
        let now = caps.now_nanos();
        let key = self.encrypt_key(caps, now, half)?;
        let nonce = self.nonces.next(caps, &mut self.prng, now)?;
        let ticket = self.seal_keys.keys_for(&key).seal(&nonce, plaintext);
        Ok(SealedTicket { ticket, lifetime_secs: tickets::guaranteed_lifetime_secs(half) })
    }

    /// The plaintext of a ticket this core sealed, if the key its name
    /// selects still decrypts and the ticket is intact. Every reason for
    /// not opening is the same `Ok(None)`: the client that sent the ticket
    /// must learn nothing else.
    ///
    /// # Errors
    ///
    /// [`Error::TicketsDisabled`] when T = 0; [`Error::Storage`] when the
    /// ring cannot be loaded.
    pub fn open_ticket(&mut self, caps: &mut impl Capabilities, ticket: &[u8]) -> Result<Option<Vec<u8>>> {
        self.settings()?;
        let half = self.ticket_half()?;
        let Some(name) = sealing::claimed_name(ticket) else {
            return Ok(None);
        };
        let now = caps.now_nanos();
        let Some(key) = self.decrypt_key(caps, now, name, half)? else {
            return Ok(None);
        };
        Ok(self.seal_keys.keys_for(&key).open(ticket))
    }

    /// `T / 2` of the ticket cache, the length of each key phase.
    fn ticket_half(&self) -> Result<i64> {
        match self.settings()?.ticket_timeout_secs {
            0 => Err(Error::TicketsDisabled),
            t => Ok(i64::from(t / 2)),
        }
    }

    /// Bounded background work: reseed when due, erase dead ticket keys,
    /// remove up to one batch of expired cache entries. Returns milliseconds
    /// until the next call is wanted (0 when a backlog remains).
    ///
    /// # Errors
    ///
    /// [`Error::Storage`]; work done before the failure stands.
    pub fn housekeeping(&mut self, caps: &mut impl Capabilities) -> Result<u64> {
        let settings = self.settings()?;
        let mut budget = settings.housekeeping_batch;
        let tickets = self.ticket_half().ok();
        let now_nanos = caps.now_nanos();
        let now_u = now_nanos / NANOS;

        self.prng.maybe_reseed(caps, now_nanos)?;
        let mut next = now_u + MAX_HOUSEKEEPING_DELAY_MS / 1000;
        if let Some(t) = self.prng.next_reseed_secs() {
            next = next.min(t);
        }
        if let Some(t) = self.prng.maybe_save_seed(caps, now_nanos)? {
            next = next.min(t);
        }
        // A fleet's ticket keys and id salt may fail (an unreachable store,
        // a record from a newer core) without holding up the cache sweep
        // below; the first such error is returned after it.
        let mut fleet_error = None;
        if let Some(half) = tickets {
            let wake = match &mut self.fleet {
                Some(f) => f.maintain(caps, &mut self.prng, now_nanos, half).map(Some),
                None => self.keys.expire(caps, now_nanos, half),
            };
            match wake {
                Ok(Some(t)) => next = next.min(u64::try_from(t).unwrap_or(0)),
                Ok(None) => {}
                Err(e) if self.fleet.is_some() => fleet_error = Some(e),
                Err(e) => return Err(e),
            }
        }
        if self.fleet.is_some()
            && let Some(id_key) = &self.id_key
            && (now_u < self.salt_verified_at || now_u >= self.salt_verified_at + crate::fleet::VERIFY_SECS as u64)
        {
            match id_key.reassert(caps) {
                Ok(adopted) => {
                    self.salt_verified_at = now_u;
                    if let Some(theirs) = adopted {
                        for c in &mut self.caches {
                            c.set_id_key(theirs.clone());
                        }
                        self.id_key = Some(theirs);
                    }
                }
                Err(e) => fleet_error = fleet_error.or(Some(e)),
            }
            next = next.min(self.salt_verified_at + crate::fleet::VERIFY_SECS as u64);
        }

        let n = self.caches.len();
        let mut backlog = false;
        for step in 0..n {
            let i = (self.sweep_cursor + step) % n;
            let cache = &mut self.caches[i];
            if cache.settings().timeout_secs == 0 {
                continue;
            }
            let sweep = cache.sweep(caps, now_u, budget)?;
            budget -= sweep.removed.min(budget);
            if let Some(t) = sweep.next_expiry_secs {
                next = next.min(t);
            }
            if sweep.more {
                backlog = true;
                // The next call starts with the cache after this one.
                self.sweep_cursor = (i + 1) % n;
                break;
            }
        }
        if let Some(e) = fleet_error {
            return Err(e);
        }
        if backlog {
            return Ok(0);
        }
        self.sweep_cursor = 0;
        let delay_ms = next.saturating_sub(now_u).saturating_mul(1000);
        Ok(delay_ms.min(MAX_HOUSEKEEPING_DELAY_MS))
    }

    /// Save what the next run needs: a fresh seed, when a seed file is
    /// configured and this run consumed the old one.
    ///
    /// # Errors
    ///
    /// [`Error::SeedFile`] when the host could not save it.
    pub fn checkpoint(&mut self, caps: &mut impl Capabilities) -> Result<()> {
        self.settings()?;
        let now = caps.now_nanos();
        self.prng.checkpoint(caps, now)
    }

    /// Counters and sizes.
    ///
    /// # Errors
    ///
    /// [`Error::Storage`] when a cache's size cannot be read.
    pub fn stats(&mut self, caps: &mut impl Capabilities) -> Result<Stats> {
        self.settings()?;
        let mut caches = Vec::with_capacity(self.caches.len());
        for cache in &self.caches {
            let size = cache.size(caps)?;
            caches.push(CacheStats {
                name: cache.settings().name.clone(),
                entries: size.entries,
                bytes: size.bytes,
                counters: cache.counters(),
            });
        }
        Ok(Stats {
            caches,
            keys_minted: self.keys.minted() + self.fleet.as_ref().map_or(0, FleetRing::minted),
            reseeds: self.prng.reseeds(),
            seed_bytes: self.seed_bytes,
        })
    }
}

/// A fleet's margin may be at most T/4, so that a key is published after
/// the one before it began to seal, and a ticket's life stays mostly its own.
fn check_margin(margin_secs: u32, ticket_timeout_secs: u32) -> Result<()> {
    if ticket_timeout_secs != 0 && u64::from(margin_secs) * 4 > u64::from(ticket_timeout_secs) {
        return Err(Error::InvalidConfig(alloc::format!(
            "a ticket key margin of {margin_secs} s is more than a quarter of the ticket cache's timeout \
             ({ticket_timeout_secs} s); lower the margin or raise the timeout"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caps::StorageError;
    use crate::config::CacheConfig;
    use crate::scache::Counters;
    use crate::testing::{FakeCaps, SECOND};
    use alloc::vec;

    const T0: u64 = 1_700_000_000;

    fn cache(name: &str, enabled: bool, timeout_secs: u32) -> CacheConfig {
        CacheConfig { name: name.into(), enabled, timeout_secs, max_entries: 0, max_bytes: 0, max_session_bytes: 0 }
    }

    /// smtpd (T=3600, enabled), smtp (T=3600, no database), lmtp (T=0).
    fn config() -> Config {
        Config {
            caches: vec![cache("smtpd", true, 3600), cache("smtp", false, 3600), cache("lmtp", true, 0)],
            ticket_cache: "smtpd".into(),
            reseed_period_secs: 3600,
            housekeeping_batch: 0,
            seed_save_period_secs: 0,
        }
    }

    fn configured(config: &Config, seed: u64) -> (Manager, FakeCaps) {
        let mut caps = FakeCaps::new(T0, seed);
        let mut m = Manager::new();
        m.configure(&mut caps, config).unwrap();
        (m, caps)
    }

    fn parts(k: &TicketKey) -> ([u8; NAME_LEN], [u8; 32], [u8; 32], i64) {
        (k.name, k.cipher_key, k.hmac_key, k.expires)
    }

    #[test]
    fn every_call_fails_before_configure() {
        let mut caps = FakeCaps::new(T0, 1);
        let mut m = Manager::new();
        assert_eq!(m.seed(&mut caps, 32), Err(Error::NotConfigured));
        assert_eq!(m.seed(&mut caps, 0), Err(Error::NotConfigured));
        assert_eq!(m.policy("smtpd"), Err(Error::NotConfigured));
        assert_eq!(m.lookup(&mut caps, "smtpd", "id"), Err(Error::NotConfigured));
        assert_eq!(m.update(&mut caps, "smtpd", "id", b"s"), Err(Error::NotConfigured));
        assert_eq!(m.delete(&mut caps, "smtpd", "id"), Err(Error::NotConfigured));
        assert_eq!(m.ticket_key(&mut caps, None).map(|k| k.is_some()), Err(Error::NotConfigured));
        assert_eq!(m.housekeeping(&mut caps), Err(Error::NotConfigured));
        assert_eq!(m.stats(&mut caps), Err(Error::NotConfigured));
        assert!(caps.tables.is_empty());
        assert_eq!(caps.entropy_drawn, 0);
    }

    #[test]
    fn an_invalid_configuration_is_refused_and_the_previous_one_stays() {
        let (mut m, mut caps) = configured(&config(), 1);
        m.update(&mut caps, "smtpd", "id", b"s").unwrap();
        let mut bad = config();
        bad.caches.push(cache("smtpd", true, 60));
        assert!(matches!(m.configure(&mut caps, &bad), Err(Error::InvalidConfig(_))));
        assert!(caps.logs.iter().any(|(l, msg)| *l == Level::Error && msg.contains("configured twice")));
        assert_eq!(m.lookup(&mut caps, "smtpd", "id"), Ok(Some(b"s".to_vec())));
        assert_eq!(m.policy("smtpd"), Ok(Policy { cachable: true, timeout_secs: 3600 }));
    }

    #[test]
    fn reconfiguring_keeps_entries_and_counters() {
        let (mut m, mut caps) = configured(&config(), 1);
        m.update(&mut caps, "smtpd", "id", b"s").unwrap();
        let mut c = config();
        c.caches[0].timeout_secs = 7200;
        c.caches.swap(0, 2);
        m.configure(&mut caps, &c).unwrap();
        assert_eq!(m.policy("smtpd"), Ok(Policy { cachable: true, timeout_secs: 7200 }));
        assert_eq!(m.lookup(&mut caps, "smtpd", "id"), Ok(Some(b"s".to_vec())));
        let stats = m.stats(&mut caps).unwrap();
        let smtpd = stats.caches.iter().find(|c| c.name == "smtpd").unwrap();
        assert_eq!((smtpd.counters.updates, smtpd.counters.hits), (1, 1));
    }

    #[test]
    fn seed_lengths_follow_tlsmgr() {
        let (mut m, mut caps) = configured(&config(), 1);
        assert_eq!(m.seed(&mut caps, 1).unwrap().len(), 1);
        assert_eq!(m.seed(&mut caps, 255).unwrap().len(), 255);
        let a = m.seed(&mut caps, 32).unwrap();
        let b = m.seed(&mut caps, 32).unwrap();
        assert_eq!((a.len(), b.len()), (32, 32));
        assert_ne!(a, b);
        assert!(caps.logs.iter().all(|(l, _)| *l != Level::Warn));

        assert_eq!(m.seed(&mut caps, 0), Err(Error::BadSeedLength(0)));
        assert_eq!(m.seed(&mut caps, 256), Err(Error::BadSeedLength(256)));
        assert_eq!(m.seed(&mut caps, u32::MAX), Err(Error::BadSeedLength(u32::MAX)));
        assert_eq!(m.stats(&mut caps).unwrap().seed_bytes, 1 + 255 + 32 + 32);
    }

    #[test]
    fn policy_reports_the_timeout_even_when_disabled() {
        let (mut m, caps) = configured(&config(), 1);
        assert_eq!(m.policy("smtpd"), Ok(Policy { cachable: true, timeout_secs: 3600 }));
        assert_eq!(m.policy("smtp"), Ok(Policy { cachable: false, timeout_secs: 3600 }));
        assert_eq!(m.policy("lmtp"), Ok(Policy { cachable: false, timeout_secs: 0 }));
        assert!(caps.logs.is_empty());
        assert_eq!(m.policy("pop3"), Err(Error::UnknownCache("pop3".into())));
        // Refusals are the host's to log, with the request they came in.
        assert!(caps.logs.is_empty());
    }

    #[test]
    fn disabled_and_unknown_caches_refuse_requests() {
        let (mut m, mut caps) = configured(&config(), 1);
        for name in ["smtp", "lmtp"] {
            let disabled = Err(Error::CacheDisabled(name.into()));
            assert_eq!(m.lookup(&mut caps, name, "id"), disabled.clone().map(|()| None));
            assert_eq!(m.update(&mut caps, name, "id", b"s"), disabled.clone());
            assert_eq!(m.delete(&mut caps, name, "id"), disabled.map(|()| false));
            assert_eq!(caps.len(&alloc::format!("scache/{name}")), 0);
        }
        let unknown = Error::UnknownCache("SMTPD".into());
        assert_eq!(m.lookup(&mut caps, "SMTPD", "id"), Err(unknown.clone()));
        assert_eq!(m.update(&mut caps, "SMTPD", "id", b"s"), Err(unknown.clone()));
        assert_eq!(m.delete(&mut caps, "SMTPD", "id"), Err(unknown));
        assert!(caps.tables.is_empty());
    }

    #[test]
    fn update_lookup_delete_round_trip() {
        let (mut m, mut caps) = configured(&config(), 1);
        m.update(&mut caps, "smtpd", "id", b"session").unwrap();
        assert_eq!(m.lookup(&mut caps, "smtpd", "id"), Ok(Some(b"session".to_vec())));
        assert_eq!(m.delete(&mut caps, "smtpd", "id"), Ok(true));
        assert_eq!(m.delete(&mut caps, "smtpd", "id"), Ok(false));
        assert_eq!(m.lookup(&mut caps, "smtpd", "id"), Ok(None));
        assert_eq!(
            m.update(&mut caps, "smtpd", "id", &vec![0; 16 * 1024 + 1]),
            Err(Error::SessionTooLarge(16 * 1024 + 1))
        );
        // The clock is read per call: the entry expires with the cache's T.
        m.update(&mut caps, "smtpd", "id", b"again").unwrap();
        caps.advance_secs(3600);
        assert_eq!(m.lookup(&mut caps, "smtpd", "id"), Ok(Some(b"again".to_vec())));
        caps.advance_secs(1);
        assert_eq!(m.lookup(&mut caps, "smtpd", "id"), Ok(None));
        caps.storage_fault = Some(StorageError::Io("eio".into()));
        assert_eq!(m.lookup(&mut caps, "smtpd", "id"), Err(Error::Storage("storage I/O error: eio".into())));
    }

    #[test]
    fn ticket_key_requests_follow_tlsmgr() {
        let (mut m, mut caps) = configured(&config(), 1);
        let k = m.ticket_key(&mut caps, None).unwrap().unwrap();
        assert_eq!(k.expires, T0 as i64 + 1799);
        let again = m.ticket_key(&mut caps, None).unwrap().unwrap();
        assert_eq!(parts(&again), parts(&k));
        let named = m.ticket_key(&mut caps, Some(&k.name)).unwrap().unwrap();
        assert_eq!(parts(&named), parts(&k));
        let mut unknown = k.name;
        unknown[0] ^= 0x80;
        assert!(m.ticket_key(&mut caps, Some(&unknown)).unwrap().is_none());
        assert!(caps.logs.iter().all(|(l, _)| *l != Level::Warn));

        assert_eq!(m.ticket_key(&mut caps, Some(&[0; 15])).map(|k| k.is_some()), Err(Error::BadKeyNameLength(15)));
        assert_eq!(m.ticket_key(&mut caps, Some(&[0; 17])).map(|k| k.is_some()), Err(Error::BadKeyNameLength(17)));
        // An empty name is not "no name": it has the wrong length.
        assert_eq!(m.ticket_key(&mut caps, Some(&[])).map(|k| k.is_some()), Err(Error::BadKeyNameLength(0)));
        assert_eq!(m.stats(&mut caps).unwrap().keys_minted, 1);
    }

    #[test]
    fn tickets_are_disabled_when_the_ticket_cache_timeout_is_zero() {
        let mut c = config();
        c.ticket_cache = "lmtp".into();
        let (mut m, mut caps) = configured(&c, 1);
        assert_eq!(m.ticket_key(&mut caps, None).map(|k| k.is_some()), Err(Error::TicketsDisabled));
        assert_eq!(m.ticket_key(&mut caps, Some(&[0; 16])).map(|k| k.is_some()), Err(Error::TicketsDisabled));
        // A missing ticket cache also means no tickets.
        c.ticket_cache = "none".into();
        m.configure(&mut caps, &c).unwrap();
        assert_eq!(m.ticket_key(&mut caps, None).map(|k| k.is_some()), Err(Error::TicketsDisabled));
        assert_eq!(caps.len(crate::tickets::TABLE), 0);
        // Tickets need only T > 0, not a database: the disabled smtp cache will do.
        c.ticket_cache = "smtp".into();
        m.configure(&mut caps, &c).unwrap();
        assert_eq!(m.ticket_key(&mut caps, None).map(|k| k.map(|k| k.expires)), Ok(Some(T0 as i64 + 1799)));
    }

    #[test]
    fn a_bad_key_name_length_is_refused_even_when_tickets_are_disabled() {
        let mut c = config();
        c.ticket_cache = "lmtp".into();
        let (mut m, mut caps) = configured(&c, 1);
        assert_eq!(m.ticket_key(&mut caps, Some(&[0; 15])).map(|k| k.is_some()), Err(Error::BadKeyNameLength(15)));
    }

    #[test]
    fn a_short_timeout_is_raised_to_lifemin() {
        let mut c = config();
        c.caches[0].timeout_secs = 10;
        let (mut m, mut caps) = configured(&c, 1);
        assert_eq!(m.policy("smtpd"), Ok(Policy { cachable: true, timeout_secs: 120 }));
        let k = m.ticket_key(&mut caps, None).unwrap().unwrap();
        assert_eq!(k.expires, T0 as i64 + 59);
        caps.advance_secs(58);
        assert_eq!(m.ticket_key(&mut caps, None).unwrap().map(|n| n.name), Some(k.name));
        caps.advance_secs(1);
        let k2 = m.ticket_key(&mut caps, None).unwrap().unwrap();
        assert_ne!(k2.name, k.name);
        assert_eq!(k2.expires, T0 as i64 + 59 + 59);
    }

    #[test]
    fn ticket_keys_survive_a_restart() {
        let (mut m, mut caps) = configured(&config(), 1);
        let a = m.ticket_key(&mut caps, None).unwrap().unwrap();
        caps.advance_secs(1799);
        let b = m.ticket_key(&mut caps, None).unwrap().unwrap();
        drop(m);

        let mut m2 = Manager::new();
        m2.configure(&mut caps, &config()).unwrap();
        caps.advance_secs(1);
        assert_eq!(m2.ticket_key(&mut caps, None).unwrap().map(|k| parts(&k)), Some(parts(&b)));
        assert_eq!(m2.ticket_key(&mut caps, Some(&a.name)).unwrap().map(|k| parts(&k)), Some(parts(&a)));
        assert_eq!(m2.stats(&mut caps).unwrap().keys_minted, 0);
    }

    #[test]
    fn housekeeping_and_checkpoint_keep_the_seed_file_fresh() {
        let mut c = config();
        c.seed_save_period_secs = 600;
        let (mut m, mut caps) = configured(&c, 1);
        caps.seed_file = Some(b"left by the last run".to_vec());
        let delay = m.housekeeping(&mut caps).unwrap();
        assert_eq!(caps.seeds_taken, [b"left by the last run".to_vec()]);
        assert_eq!(caps.seeds_saved.len(), 1);
        assert!(delay <= 600_000, "{delay}");
        m.checkpoint(&mut caps).unwrap();
        assert_eq!(caps.seeds_saved.len(), 2);
        assert_eq!(caps.seed_file.as_ref(), caps.seeds_saved.last());
    }

    /// Config with two caches of T = 120 and a small housekeeping batch.
    fn two_caches(batch: u32) -> Config {
        Config {
            caches: vec![cache("smtpd", true, 120), cache("smtp", true, 120), cache("lmtp", true, 0)],
            ticket_cache: "smtpd".into(),
            reseed_period_secs: 3600,
            housekeeping_batch: batch,
            seed_save_period_secs: 0,
        }
    }

    fn fill(m: &mut Manager, caps: &mut FakeCaps, cache: &str, n: usize) {
        for i in 0..n {
            m.update(caps, cache, &alloc::format!("{cache}-{i}"), b"s").unwrap();
        }
    }

    fn entries(m: &mut Manager, caps: &mut FakeCaps) -> Vec<u64> {
        m.stats(caps).unwrap().caches.iter().map(|c| c.entries).collect()
    }

    #[test]
    fn housekeeping_returns_zero_while_a_backlog_remains() {
        let mut c = two_caches(4);
        c.caches[0].timeout_secs = 3600;
        let (mut m, mut caps) = configured(&c, 1);
        fill(&mut m, &mut caps, "smtpd", 10);
        caps.advance_secs(100);
        m.update(&mut caps, "smtpd", "fresh", b"s").unwrap();
        // The 10 old entries expired at T0+3601; "fresh" expires at T0+3701.
        caps.now = (T0 + 3671) * SECOND;
        assert_eq!(m.housekeeping(&mut caps), Ok(0));
        assert_eq!(entries(&mut m, &mut caps), [7, 0, 0]);
        assert_eq!(m.housekeeping(&mut caps), Ok(0));
        assert_eq!(entries(&mut m, &mut caps), [3, 0, 0]);
        // Backlog gone: wait until "fresh" expires, 30 s from now.
        assert_eq!(m.housekeeping(&mut caps), Ok(30_000));
        assert_eq!(entries(&mut m, &mut caps), [1, 0, 0]);
        assert_eq!(m.lookup(&mut caps, "smtpd", "fresh"), Ok(Some(b"s".to_vec())));
        // Nothing to wait for: the delay is capped.
        caps.now = (T0 + 3702) * SECOND;
        assert_eq!(m.housekeeping(&mut caps), Ok(MAX_HOUSEKEEPING_DELAY_MS));
        assert_eq!(entries(&mut m, &mut caps), [0, 0, 0]);
        assert_eq!(m.stats(&mut caps).unwrap().caches[0].counters.expired, 11);
    }

    #[test]
    fn housekeeping_wakes_for_ticket_keys() {
        let (mut m, mut caps) = configured(&config(), 1);
        let k = m.ticket_key(&mut caps, None).unwrap().unwrap();
        // The key leaves its decrypt window at t0 + 1799 + 1800 = t0 + 3599.
        caps.now = (T0 + 3590) * SECOND;
        assert_eq!(m.housekeeping(&mut caps), Ok(9_000));
        assert_eq!(caps.len(crate::tickets::TABLE), 1);
        caps.now = (T0 + 3599) * SECOND;
        assert_eq!(m.housekeeping(&mut caps), Ok(MAX_HOUSEKEEPING_DELAY_MS));
        assert_eq!(caps.len(crate::tickets::TABLE), 0);
        assert!(m.ticket_key(&mut caps, Some(&k.name)).unwrap().is_none());
    }

    #[test]
    fn housekeeping_empties_every_cache() {
        let (mut m, mut caps) = configured(&two_caches(4), 1);
        fill(&mut m, &mut caps, "smtpd", 10);
        fill(&mut m, &mut caps, "smtp", 10);
        caps.advance_secs(121);
        let mut delays = Vec::new();
        while delays.last().is_none_or(|&d| d == 0) && delays.len() < 20 {
            delays.push(m.housekeeping(&mut caps).unwrap());
            assert!(entries(&mut m, &mut caps).iter().sum::<u64>() >= 20u64.saturating_sub(4 * delays.len() as u64));
        }
        assert_eq!(entries(&mut m, &mut caps), [0, 0, 0]);
        let last = *delays.last().unwrap();
        assert!(last > 0 && last <= MAX_HOUSEKEEPING_DELAY_MS, "{delays:?}");
        assert!(delays.len() >= 5, "20 entries at 4 per call: {delays:?}");
        let stats = m.stats(&mut caps).unwrap();
        assert_eq!((stats.caches[0].counters.expired, stats.caches[1].counters.expired), (10, 10));
    }

    #[test]
    fn housekeeping_gives_every_cache_a_turn() {
        let (mut m, mut caps) = configured(&two_caches(4), 1);
        fill(&mut m, &mut caps, "smtpd", 10);
        fill(&mut m, &mut caps, "smtp", 10);
        caps.advance_secs(121);
        assert_eq!(m.housekeeping(&mut caps), Ok(0));
        assert_eq!(m.housekeeping(&mut caps), Ok(0));
        let left = entries(&mut m, &mut caps);
        assert!(left[0] < 10 && left[1] < 10, "both caches have a backlog, yet only one shrank: {left:?}");
    }

    #[test]
    fn housekeeping_never_returns_zero_without_a_backlog() {
        let mut c = config();
        c.reseed_period_secs = 1;
        let (mut m, mut caps) = configured(&c, 1);
        for _ in 0..32 {
            let delay = m.housekeeping(&mut caps).unwrap();
            assert!(delay > 0 && delay <= MAX_HOUSEKEEPING_DELAY_MS, "no backlog, yet delay {delay}");
            caps.advance_secs(1);
        }
    }

    /// A fixed sequence of calls; returns everything the manager handed out.
    fn script(seed: u64) -> (Vec<Vec<u8>>, FakeCaps) {
        let (mut m, mut caps) = configured(&config(), seed);
        let mut out = Vec::new();
        out.push(m.seed(&mut caps, 32).unwrap());
        let k1 = m.ticket_key(&mut caps, None).unwrap().unwrap();
        out.extend([k1.name.to_vec(), k1.cipher_key.to_vec(), k1.hmac_key.to_vec()]);
        m.update(&mut caps, "smtpd", "id", b"session").unwrap();
        out.push(m.lookup(&mut caps, "smtpd", "id").unwrap().unwrap());
        caps.advance_secs(1799);
        let k2 = m.ticket_key(&mut caps, None).unwrap().unwrap();
        out.extend([k2.name.to_vec(), k2.cipher_key.to_vec(), k2.hmac_key.to_vec()]);
        // Both keys and the session are still live: storage is not empty.
        caps.advance_secs(1000);
        out.push(m.housekeeping(&mut caps).unwrap().to_be_bytes().to_vec());
        out.push(m.seed(&mut caps, 255).unwrap());
        (out, caps)
    }

    #[test]
    fn same_entropy_and_calls_give_identical_runs() {
        let (out1, caps1) = script(7);
        let (out2, caps2) = script(7);
        assert_eq!(out1, out2);
        assert_eq!(caps1.tables, caps2.tables);
        assert_eq!(caps1.logs, caps2.logs);
        assert_eq!(caps1.entropy_drawn, caps2.entropy_drawn);

        let (out3, caps3) = script(8);
        assert_ne!(out1[0], out3[0], "seed replies");
        assert_ne!(out1[1..4], out3[1..4], "ticket keys");
        assert_ne!(caps1.tables, caps3.tables);
        // Same shape, different bytes: the call sequence is the same.
        assert_eq!(out1.len(), out3.len());
        assert_eq!(out1[4], out3[4]);
    }

    #[test]
    fn stats_reflect_activity() {
        let (mut m, mut caps) = configured(&config(), 1);
        m.update(&mut caps, "smtpd", "a", b"12345").unwrap();
        m.update(&mut caps, "smtpd", "b", b"123").unwrap();
        m.update(&mut caps, "smtpd", "a", b"1234567").unwrap();
        assert_eq!(m.lookup(&mut caps, "smtpd", "a"), Ok(Some(b"1234567".to_vec())));
        assert_eq!(m.lookup(&mut caps, "smtpd", "c"), Ok(None));
        assert_eq!(m.delete(&mut caps, "smtpd", "b"), Ok(true));
        m.seed(&mut caps, 10).unwrap();
        m.ticket_key(&mut caps, None).unwrap();
        let stats = m.stats(&mut caps).unwrap();
        let idle = |name: &str| CacheStats { name: name.into(), entries: 0, bytes: 0, counters: Counters::default() };
        assert_eq!(
            stats,
            Stats {
                caches: vec![
                    CacheStats {
                        name: "smtpd".into(),
                        entries: 1,
                        bytes: 32 + 9 + 7,
                        counters: Counters { hits: 1, misses: 1, updates: 3, deletes: 1, expired: 0, evicted: 0 },
                    },
                    idle("smtp"),
                    idle("lmtp"),
                ],
                keys_minted: 1,
                reseeds: 0,
                seed_bytes: 10,
            }
        );
        caps.storage_fault = Some(StorageError::TooLarge);
        assert_eq!(m.stats(&mut caps), Err(Error::Storage("storage refused an oversized key or value".into())));
    }

    fn seal(m: &mut Manager, caps: &mut FakeCaps, plain: &[u8]) -> Vec<u8> {
        m.seal_ticket(caps, plain).unwrap().ticket
    }

    fn open(m: &mut Manager, caps: &mut FakeCaps, ticket: &[u8]) -> Option<Vec<u8>> {
        m.open_ticket(caps, ticket).unwrap()
    }

    #[test]
    fn sealed_tickets_follow_the_key_ring_through_a_key_life() {
        // T = 3600: the first key encrypts t0 ..= t0+1798 and decrypts until
        // t0+3598; the ticket carries its name, so tktkey names the same key.
        let (mut m, mut caps) = configured(&config(), 1);
        let first = seal(&mut m, &mut caps, b"state one");
        let key = m.ticket_key(&mut caps, None).unwrap().unwrap();
        assert_eq!(&first[..NAME_LEN], &key.name, "sealed under the key tktkey hands out");
        assert_eq!(open(&mut m, &mut caps, &first).as_deref(), Some(&b"state one"[..]));

        caps.now = (T0 + 1798) * SECOND;
        let last = seal(&mut m, &mut caps, b"state two");
        assert_eq!(&last[..NAME_LEN], &key.name);
        caps.now = (T0 + 1799) * SECOND;
        let next = seal(&mut m, &mut caps, b"state three");
        assert_ne!(&next[..NAME_LEN], &key.name, "a new key once the first stops encrypting");

        caps.now = (T0 + 3598) * SECOND;
        assert_eq!(open(&mut m, &mut caps, &first).as_deref(), Some(&b"state one"[..]), "last second");
        caps.now = (T0 + 3599) * SECOND;
        assert_eq!(open(&mut m, &mut caps, &first), None, "replayed after its key's window");
        assert_eq!(open(&mut m, &mut caps, &last), None);
        assert_eq!(open(&mut m, &mut caps, &next).as_deref(), Some(&b"state three"[..]));
        // Refusals are not errors and are not logged.
        assert!(caps.logs.iter().all(|(l, _)| *l != Level::Warn && *l != Level::Error), "{:?}", caps.logs);
    }

    /// The announced lifetime holds for a ticket sealed at any second, even
    /// when something seals every second so that keys rotate at the
    /// earliest moment the ring allows.
    #[test]
    fn every_ticket_opens_for_its_announced_lifetime() {
        let mut c = config();
        c.caches[0].timeout_secs = 120; // half = 60: a short life to walk
        let (mut m, mut caps) = configured(&c, 1);
        let mut sealed: Vec<(u64, Vec<u8>)> = Vec::new();
        let mut lifetime = 0;
        for second in 0..400 {
            caps.now = (T0 + second) * SECOND;
            let s = m.seal_ticket(&mut caps, &second.to_be_bytes()).unwrap();
            lifetime = u64::from(s.lifetime_secs);
            sealed.push((second, s.ticket));
            for (at, ticket) in &sealed {
                // A client may present the ticket until `lifetime` seconds
                // after it got it, measured in fractions: up to one whole
                // second more on our clock.
                if second <= at + lifetime + 1 {
                    assert_eq!(
                        open(&mut m, &mut caps, ticket),
                        Some(at.to_be_bytes().to_vec()),
                        "sealed at {at}, opened at {second}"
                    );
                }
            }
        }
        assert_eq!(lifetime, 58);
    }

    #[test]
    fn the_lifetime_is_capped_at_seven_days() {
        let mut c = config();
        c.caches[0].timeout_secs = 8_640_000;
        let (mut m, mut caps) = configured(&c, 1);
        assert_eq!(m.seal_ticket(&mut caps, b"x").unwrap().lifetime_secs, 604_800);
        assert_eq!(m.seal_ticket(&mut caps, b"x").map(|_| ()), Ok(()));
        let (mut m, mut caps) = configured(&config(), 1);
        assert_eq!(m.seal_ticket(&mut caps, b"x").unwrap().lifetime_secs, 1798);
    }

    #[test]
    fn hostile_tickets_are_refused_alike() {
        let (mut m, mut caps) = configured(&config(), 1);
        let good = seal(&mut m, &mut caps, b"state");
        let mut forged = good.clone();
        *forged.last_mut().unwrap() ^= 1;
        let mut unknown = good.clone();
        unknown[0] ^= 1;
        let cases: [(&str, Vec<u8>); 6] = [
            ("empty", vec![]),
            ("cut", good[..good.len() - 1].to_vec()),
            ("only a name", good[..NAME_LEN].to_vec()),
            ("forged tag", forged),
            ("unknown key name", unknown),
            ("oversized", vec![0; sealing::MAX_TICKET + 1]),
        ];
        let drawn = caps.entropy_drawn;
        for (what, ticket) in cases {
            assert_eq!(m.open_ticket(&mut caps, &ticket), Ok(None), "{what}");
        }
        assert_eq!(caps.entropy_drawn, drawn, "opening draws no entropy");
        assert_eq!(m.stats(&mut caps).unwrap().keys_minted, 1, "opening mints no key");
    }

    #[test]
    fn a_ticket_from_another_core_does_not_open() {
        let (mut a, mut caps_a) = configured(&config(), 1);
        let (mut b, mut caps_b) = configured(&config(), 2);
        let ticket = seal(&mut a, &mut caps_a, b"state");
        seal(&mut b, &mut caps_b, b"other");
        assert_eq!(open(&mut b, &mut caps_b, &ticket), None);
    }

    #[test]
    fn sealed_tickets_open_after_a_restart() {
        let (mut m, mut caps) = configured(&config(), 1);
        let ticket = seal(&mut m, &mut caps, b"state");
        let mut caps2 = FakeCaps::new(T0 + 10, 2);
        caps2.tables = core::mem::take(&mut caps.tables);
        let mut m2 = Manager::new();
        m2.configure(&mut caps2, &config()).unwrap();
        assert_eq!(open(&mut m2, &mut caps2, &ticket).as_deref(), Some(&b"state"[..]));
        // And the restarted core seals under the same key.
        assert_eq!(&seal(&mut m2, &mut caps2, b"x")[..NAME_LEN], &ticket[..NAME_LEN]);
    }

    #[test]
    fn sealing_refuses_what_it_cannot_do_well() {
        let (mut m, mut caps) = configured(&config(), 1);
        let big = vec![0; sealing::MAX_PLAINTEXT + 1];
        assert_eq!(m.seal_ticket(&mut caps, &big).map(|_| ()), Err(Error::TicketTooLarge(16 * 1024 + 1)));
        assert_eq!(caps.len(crate::tickets::TABLE), 0, "no key minted for a refused plaintext");
        assert!(m.seal_ticket(&mut caps, &big[1..]).is_ok());

        // A key that cannot be stored seals nothing.
        let (mut m, mut caps) = configured(&config(), 1);
        caps.storage_fault = Some(StorageError::Unavailable("down".into()));
        assert_eq!(m.seal_ticket(&mut caps, b"x").map(|_| ()), Err(Error::Storage("storage unavailable: down".into())));

        let mut c = config();
        c.ticket_cache = "lmtp".into();
        let (mut m, mut caps) = configured(&c, 1);
        assert_eq!(m.seal_ticket(&mut caps, b"x").map(|_| ()), Err(Error::TicketsDisabled));
        assert_eq!(m.open_ticket(&mut caps, &[0; 100]), Err(Error::TicketsDisabled));
        assert_eq!(Manager::new().seal_ticket(&mut caps, b"x").map(|_| ()), Err(Error::NotConfigured));
        assert_eq!(Manager::new().open_ticket(&mut caps, b"x"), Err(Error::NotConfigured));
    }

    #[test]
    fn joining_a_fleet_checks_the_margin_against_t() {
        let mut caps = FakeCaps::new(T0, 1);
        assert_eq!(Manager::new().join_fleet(&mut caps, 30), Err(Error::NotConfigured));
        let (mut m, mut caps) = configured(&config(), 1);
        let refused = m.join_fleet(&mut caps, 901);
        assert!(matches!(&refused, Err(Error::InvalidConfig(why)) if why.contains("quarter")), "{refused:?}");
        assert_eq!(m.join_fleet(&mut caps, 900), Ok(()));
        // A shorter T that the margin no longer fits is refused, and the
        // previous configuration stays.
        let mut c = config();
        c.caches[0].timeout_secs = 3599;
        assert!(matches!(m.configure(&mut caps, &c), Err(Error::InvalidConfig(_))));
        assert_eq!(m.policy("smtpd").map(|p| p.timeout_secs), Ok(3600));
        assert_eq!(m.join_fleet(&mut caps, 30), Ok(()));
        assert_eq!(m.configure(&mut caps, &c), Ok(()));
    }

    #[test]
    fn a_fleet_core_seals_and_hands_out_the_slot_key() {
        let (mut m, mut caps) = configured(&config(), 1);
        m.join_fleet(&mut caps, 30).unwrap();
        assert!(caps.logged("sharing session ticket keys with the store's other cores, margin 30 s"));
        let ticket = seal(&mut m, &mut caps, b"state");
        assert_eq!(caps.len(crate::fleet::TABLE), 1);
        assert_eq!(caps.len(crate::tickets::TABLE), 0, "the node's own ring is not used");
        let key = m.ticket_key(&mut caps, None).unwrap().unwrap();
        assert_eq!(&ticket[..NAME_LEN], &key.name[..]);
        // Postfix's tout: the end of the slot (slots of T/2 = 1800 s).
        assert_eq!(key.expires, (T0 as i64 / 1800 + 1) * 1800);
        assert_eq!(open(&mut m, &mut caps, &ticket).as_deref(), Some(&b"state"[..]));
        assert_eq!(m.stats(&mut caps).unwrap().keys_minted, 1);
        // Housekeeping wakes for the fleet: at most the re-assertion period.
        assert!(m.housekeeping(&mut caps).unwrap() <= 5_000);

        // Sessions go to the shared store with their expiry (T = 3600) as a
        // hint, the primary entry and its age index alike.
        m.update(&mut caps, "smtpd", "id", b"session").unwrap();
        let hints: Vec<(&str, u64)> = caps.expiries.iter().map(|((t, _), e)| (t.as_str(), *e)).collect();
        assert_eq!(hints, [("scache-age/smtpd", T0 + 3601), ("scache/smtpd", T0 + 3601)]);

        // The store emptied under the core: the next re-assertion writes the
        // id salt back (as it writes the ticket keys back).
        caps.tables.clear();
        caps.advance_secs(5);
        m.housekeeping(&mut caps).unwrap();
        assert_eq!(caps.len(crate::idkey::TABLE), 1);
        assert_eq!(caps.len(crate::fleet::TABLE), 1);
    }

    #[test]
    fn a_fleet_key_that_cannot_be_agreed_does_not_hold_up_the_cache_sweep() {
        let mut c = config();
        c.caches[0].timeout_secs = 120;
        let (mut m, mut caps) = configured(&c, 1);
        m.join_fleet(&mut caps, 10).unwrap();
        m.update(&mut caps, "smtpd", "old", b"s").unwrap();
        caps.advance_secs(200);
        // A record for the current slot that a newer core wrote.
        let slot = caps.now_secs() / 60;
        let key = [60u32.to_be_bytes().as_slice(), &slot.to_be_bytes()].concat();
        caps.put(crate::fleet::TABLE, &key, &[9; 81]).unwrap();
        assert!(matches!(m.housekeeping(&mut caps), Err(Error::Storage(_))));
        assert_eq!(caps.len("scache/smtpd"), 0, "the expired session was swept all the same");
    }
}
