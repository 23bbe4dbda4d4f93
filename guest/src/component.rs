//! The component glue: WIT exports onto [`Manager`], WIT imports onto
//! [`Capabilities`].
//!
//! This is the only file that knows the generated bindings. Every conversion
//! between WIT types and the core's own types happens here, so the policy
//! modules compile and test natively with no trace of wit-bindgen.
//!
//! # Security
//!
//! Arguments arrive already lifted by the canonical ABI (valid UTF-8 strings,
//! well-formed lists); their *contents* are still attacker-controlled and are
//! checked by [`Manager`]. Ticket keys leave through the `ticket-key` export
//! only; `seal-ticket` and `open-ticket` use them without letting them out.
//!
//! # Limitations
//!
//! One manager per instance, kept in a global: the component model gives an
//! instance no other place to keep state between calls.

use alloc::string::String;
use alloc::vec::Vec;
use core::cell::RefCell;

use crate::caps::{self, Capabilities, Entry, StorageError, TableStat};
use crate::config;
use crate::error::Error;
use crate::manager::Manager;

wit_bindgen::generate!({
    path: "../wit",
    world: "core",
});

use exports::tlskeeper::core::manager as wit;
use tlskeeper::core::{clock, entropy, log, seed_file, storage};

/// The instance's one manager.
struct State(RefCell<Option<Manager>>);

// SAFETY: wasm32-wasip2 without the threads proposal has exactly one thread,
// so the RefCell can never be reached concurrently. The host engine is
// configured without threads, and a component cannot spawn any.
unsafe impl Sync for State {}

static STATE: State = State(RefCell::new(None));

/// Run `f` on the manager with the import-backed capabilities.
fn with_manager<T>(f: impl FnOnce(&mut Manager, &mut Imports) -> T) -> T {
    // A second borrow would need re-entry from an import back into an
    // export, which the component model forbids; a panic (trap) is the
    // right answer if it ever happened.
    let mut slot = STATE.0.borrow_mut();
    f(slot.get_or_insert_with(Manager::new), &mut Imports)
}

/// The capabilities, as WIT imports.
struct Imports;

impl Capabilities for Imports {
    fn now_nanos(&mut self) -> u64 {
        clock::now()
    }

    fn fill_entropy(&mut self, buf: &mut [u8]) {
        let mut bytes = entropy::fill(buf.len() as u32);
        // A host that returns the wrong length is broken; using a short
        // buffer would silently weaken the DRBG, so trap instead.
        assert_eq!(bytes.len(), buf.len(), "entropy capability returned the wrong length");
        buf.copy_from_slice(&bytes);
        zeroize::Zeroize::zeroize(&mut bytes);
    }

    fn get(&mut self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        storage::get(table, key).map_err(from_wit_storage)
    }

    fn put(&mut self, table: &str, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        storage::put(table, key, value).map_err(from_wit_storage)
    }

    fn put_expiring(&mut self, table: &str, key: &[u8], value: &[u8], expires_at: u64) -> Result<(), StorageError> {
        storage::put_expiring(table, key, value, expires_at).map_err(from_wit_storage)
    }

    fn put_if_absent(&mut self, table: &str, key: &[u8], value: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        storage::put_if_absent(table, key, value).map_err(from_wit_storage)
    }

    fn delete(&mut self, table: &str, key: &[u8]) -> Result<bool, StorageError> {
        storage::delete(table, key).map_err(from_wit_storage)
    }

    fn scan(&mut self, table: &str, after: Option<&[u8]>, limit: u32) -> Result<Vec<Entry>, StorageError> {
        storage::scan(table, after, limit).map_err(from_wit_storage)
    }

    fn stat(&mut self, table: &str) -> Result<TableStat, StorageError> {
        storage::stat(table).map(|s| TableStat { entries: s.entries, bytes: s.bytes }).map_err(from_wit_storage)
    }

    fn get_with_stat(&mut self, table: &str, key: &[u8]) -> Result<(Option<Vec<u8>>, TableStat), StorageError> {
        storage::get_with_stat(table, key)
            .map(|(value, s)| (value, TableStat { entries: s.entries, bytes: s.bytes }))
            .map_err(from_wit_storage)
    }

    fn apply(&mut self, changes: &[caps::Change<'_>]) -> Result<(), StorageError> {
        let changes: Vec<storage::Change> = changes
            .iter()
            .map(|c| storage::Change {
                table: c.table.into(),
                key: c.key.to_vec(),
                value: c.value.map(<[u8]>::to_vec),
                expires_at: c.expires_at,
            })
            .collect();
        storage::apply(&changes).map_err(from_wit_storage)
    }

    fn take_seed(&mut self) -> Option<Vec<u8>> {
        seed_file::take()
    }

    fn save_seed(&mut self, seed: &[u8]) -> Result<(), String> {
        seed_file::save(seed)
    }

    fn log(&mut self, level: caps::Level, message: &str) {
        let level = match level {
            caps::Level::Error => log::Level::Error,
            caps::Level::Warn => log::Level::Warn,
            caps::Level::Info => log::Level::Info,
            caps::Level::Debug => log::Level::Debug,
            caps::Level::Trace => log::Level::Trace,
        };
        log::log(level, message);
    }
}

fn from_wit_storage(e: storage::Error) -> StorageError {
    match e {
        storage::Error::Unavailable(why) => StorageError::Unavailable(why),
        storage::Error::Io(why) => StorageError::Io(why),
        storage::Error::TooLarge => StorageError::TooLarge,
    }
}

fn to_wit_error(e: Error) -> wit::Error {
    match e {
        Error::UnknownCache(name) => wit::Error::UnknownCache(name),
        Error::CacheDisabled(name) => wit::Error::CacheDisabled(name),
        Error::BadSeedLength(n) => wit::Error::BadSeedLength(n),
        Error::BadKeyNameLength(n) => wit::Error::BadKeyNameLength(n),
        Error::TicketsDisabled => wit::Error::TicketsDisabled,
        Error::SessionTooLarge(n) => wit::Error::SessionTooLarge(n),
        Error::CacheFull(name) => wit::Error::CacheFull(name),
        Error::InvalidConfig(why) => wit::Error::InvalidConfig(why),
        Error::NotConfigured => wit::Error::NotConfigured,
        Error::Storage(why) => wit::Error::Storage(why),
        Error::SeedFile(why) => wit::Error::SeedFile(why),
        Error::Internal(what) => wit::Error::Internal(String::from(what)),
        Error::TicketTooLarge(n) => wit::Error::TicketTooLarge(n),
    }
}

fn from_wit_config(c: wit::Config) -> config::Config {
    config::Config {
        caches: c
            .caches
            .into_iter()
            .map(|c| config::CacheConfig {
                name: c.name,
                enabled: c.enabled,
                timeout_secs: c.timeout_secs,
                max_entries: c.max_entries,
                max_bytes: c.max_bytes,
                max_session_bytes: c.max_session_bytes,
            })
            .collect(),
        ticket_cache: c.ticket_cache,
        reseed_period_secs: c.reseed_period_secs,
        housekeeping_batch: c.housekeeping_batch,
        seed_save_period_secs: c.seed_save_period_secs,
    }
}

struct Component;

impl wit::Guest for Component {
    fn configure(config: wit::Config) -> Result<(), wit::Error> {
        let config = from_wit_config(config);
        with_manager(|m, caps| m.configure(caps, &config)).map_err(to_wit_error)
    }

    fn seed(len: u32) -> Result<Vec<u8>, wit::Error> {
        with_manager(|m, caps| m.seed(caps, len)).map_err(to_wit_error)
    }

    fn policy(cache: String) -> Result<wit::CachePolicy, wit::Error> {
        with_manager(|m, _| m.policy(&cache))
            .map(|p| wit::CachePolicy { cachable: p.cachable, timeout_secs: p.timeout_secs })
            .map_err(to_wit_error)
    }

    fn lookup_session(cache: String, id: String) -> Result<Option<Vec<u8>>, wit::Error> {
        #[cfg(feature = "test-fault")]
        crate::fault::inject(&id);
        with_manager(|m, caps| m.lookup(caps, &cache, &id)).map_err(to_wit_error)
    }

    fn update_session(cache: String, id: String, session: Vec<u8>) -> Result<(), wit::Error> {
        with_manager(|m, caps| m.update(caps, &cache, &id, &session)).map_err(to_wit_error)
    }

    fn take_session(cache: String, id: String) -> Result<Option<Vec<u8>>, wit::Error> {
        with_manager(|m, caps| m.take(caps, &cache, &id)).map_err(to_wit_error)
    }

    fn delete_session(cache: String, id: String) -> Result<bool, wit::Error> {
        with_manager(|m, caps| m.delete(caps, &cache, &id)).map_err(to_wit_error)
    }

    fn ticket_key(name: Option<Vec<u8>>) -> Result<Option<wit::SessionTicketKey>, wit::Error> {
        let key = with_manager(|m, caps| m.ticket_key(caps, name.as_deref())).map_err(to_wit_error)?;
        // The lists below are handed to the canonical ABI, which copies them
        // out and frees them; `key` itself is zeroized when it drops here.
        Ok(key.map(|k| wit::SessionTicketKey {
            name: k.name.to_vec(),
            cipher_key: k.cipher_key.to_vec(),
            hmac_key: k.hmac_key.to_vec(),
            expires: k.expires,
        }))
    }

    fn seal_ticket(plaintext: Vec<u8>) -> Result<wit::SealedTicket, wit::Error> {
        let mut plaintext = plaintext;
        let sealed = with_manager(|m, caps| m.seal_ticket(caps, &plaintext));
        // The plaintext holds a session's secrets; wipe this copy.
        zeroize::Zeroize::zeroize(&mut plaintext);
        sealed.map(|s| wit::SealedTicket { ticket: s.ticket, lifetime_secs: s.lifetime_secs }).map_err(to_wit_error)
    }

    fn open_ticket(ticket: Vec<u8>) -> Result<Option<Vec<u8>>, wit::Error> {
        // The opened plaintext goes to the canonical ABI, which copies it
        // out and frees it, as with a looked-up session.
        with_manager(|m, caps| m.open_ticket(caps, &ticket)).map_err(to_wit_error)
    }

    fn housekeeping() -> Result<u64, wit::Error> {
        with_manager(|m, caps| m.housekeeping(caps)).map_err(to_wit_error)
    }

    fn checkpoint() -> Result<(), wit::Error> {
        with_manager(|m, caps| m.checkpoint(caps)).map_err(to_wit_error)
    }

    fn join_fleet(fleet: wit::FleetConfig) -> Result<(), wit::Error> {
        with_manager(|m, caps| m.join_fleet(caps, fleet.margin_secs)).map_err(to_wit_error)
    }

    fn stats() -> Result<wit::ManagerStats, wit::Error> {
        let stats = with_manager(|m, caps| m.stats(caps)).map_err(to_wit_error)?;
        Ok(wit::ManagerStats {
            caches: stats
                .caches
                .into_iter()
                .map(|c| wit::CacheStats {
                    name: c.name,
                    entries: c.entries,
                    bytes: c.bytes,
                    hits: c.counters.hits,
                    misses: c.counters.misses,
                    updates: c.counters.updates,
                    deletes: c.counters.deletes,
                    expired: c.counters.expired,
                    evicted: c.counters.evicted,
                })
                .collect(),
            keys_minted: stats.keys_minted,
            reseeds: stats.reseeds,
            seed_bytes: stats.seed_bytes,
        })
    }
}

export!(Component);
