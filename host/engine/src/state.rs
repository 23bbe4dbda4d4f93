//! The daemon's durable state, opened and put together: the store in the
//! state directory, sealed under its key-encryption key, with volatile
//! caches split off into memory, and the DRBG's seed file.
//!
//! Both ways of starting tlskeeper come through here, so the rules are the
//! same for `tlskeeper serve` and the Postfix modes:
//!
//! - a new, empty store gets a new key-encryption key (KEK) file, created
//!   0600 on first start;
//! - a store that holds anything must come with the KEK it was sealed
//!   under: a missing or different key stops the start with a message that
//!   names both files, rather than starting from nothing;
//! - a store written without sealing is refused the same way.
//!
//! The store is opened by the caller ([`open_store`]), the KEK here: the
//! Postfix modes open the store as `mail_owner`, so that its files belong to
//! that account, but read the KEK as root, so that it can live in a
//! root-only file that the unprivileged daemon could not read again.
//!
//! # Security
//!
//! Holds the KEK until it is handed to the sealing layer. The state
//! directory's contents are untrusted (see [`crate::storage::sealed`]); the
//! KEK file is trusted once its ownership and mode have been checked.
//!
//! # Limitations
//!
//! No KEK rotation: changing the key means starting with an empty store.

use std::path::{Path, PathBuf};

use crate::Capabilities;
use crate::caps::seed_file::SeedFileError;
use crate::caps::{Clock, Entropy, NoSeedFile, SeedFile, SeedStore};
use crate::storage::file::{FileOptions, FileStorage, OpenError};
use crate::storage::kek::{self, KekError};
use crate::storage::redis::{RedisOptions, RedisSetupError, RedisStorage};
use crate::storage::sealed::{SealError, Sealed};
use crate::storage::split::{Split, cache_tables};
use crate::storage::{MemoryStorage, Storage, StorageError};

/// The core's table of ticket keys, whose writes must be durable before a
/// key is handed out: a key lost in a crash strands every ticket sealed
/// with it. (Session caches may lose their last second of writes: that only
/// costs full handshakes.)
pub const TICKET_KEY_TABLE: &str = "tktkey";

/// Where the durable state lives and what stays out of it: all that
/// [`open`] needs, whoever read the settings (the daemon's config file, an
/// embedder's own).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StateOptions {
    /// The state directory; `None` keeps everything in memory.
    pub state_dir: Option<PathBuf>,
    /// The KEK file; `None` means `kek` inside the state directory.
    pub kek_file: Option<PathBuf>,
    /// The DRBG's seed file; `None` keeps no seed between runs.
    pub seed_file: Option<PathBuf>,
    /// Caches kept in memory even when there is a state directory.
    pub volatile_caches: Vec<String>,
    /// Keep the tables in this Redis server rather than in the state
    /// directory: the store a fleet of nodes shares. The KEK must then
    /// exist already (every node needs the same one).
    pub redis: Option<RedisOptions>,
}

impl StateOptions {
    /// Everything in `dir`: the store, its KEK (`kek`) and the seed file
    /// (`seed`), with every cache persistent.
    pub fn in_dir(dir: impl Into<PathBuf>) -> StateOptions {
        let dir = dir.into();
        StateOptions { seed_file: Some(dir.join("seed")), state_dir: Some(dir), ..StateOptions::default() }
    }

    /// The KEK file, when there is a store to seal: the one named, else
    /// `kek` in the state directory.
    pub fn kek_path(&self) -> Option<PathBuf> {
        if self.state_dir.is_none() && self.redis.is_none() {
            return None;
        }
        self.kek_file.clone().or_else(|| self.state_dir.as_ref().map(|dir| dir.join("kek")))
    }
}

/// The opened state, ready to become the core's capabilities.
pub struct State {
    /// The tables.
    pub storage: Box<dyn Storage>,
    /// The seed file (or none).
    pub seed_file: Box<dyn SeedStore>,
}

impl State {
    /// The core's capabilities: this state with `clock` and `entropy`.
    pub fn into_capabilities(self, clock: Box<dyn Clock>, entropy: Box<dyn Entropy>) -> Capabilities {
        Capabilities { clock, entropy, storage: self.storage, seed_file: self.seed_file }
    }
}

/// Why the state could not be opened. Every message names the file and
/// what to do.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The store itself could not be opened.
    #[error(transparent)]
    Store(#[from] OpenError),
    /// The KEK file is unreadable, insecure or malformed.
    #[error(transparent)]
    Kek(#[from] KekError),
    /// The store holds sealed state but its KEK file is gone.
    #[error(
        "{store} holds sealed state, but its key-encryption key {kek} does not exist; restore that file from \
         where you keep it, or move {store} away to start with empty state"
    )]
    KekMissing {
        /// The store's file.
        store: String,
        /// The missing key file.
        kek: PathBuf,
    },
    /// The KEK does not open the store, or the store was never sealed.
    #[error("{source} (key file: {kek})")]
    Seal {
        /// What the sealing layer found.
        source: SealError,
        /// The key file that was used.
        kek: PathBuf,
    },
    /// A store was opened, but the settings name no key file for it (a bug
    /// in the caller: every state directory has one).
    #[error("no key-encryption key file is configured for {0}")]
    NoKekFile(String),
    /// Entries of a cache made volatile could not be removed from the store.
    #[error("cannot remove the stored entries of caches now kept in memory: {0}")]
    Purge(StorageError),
    /// The seed file's directory cannot be used.
    #[error(transparent)]
    SeedFile(#[from] SeedFileError),
    /// The Redis store cannot be set up or reached.
    #[error(transparent)]
    Redis(#[from] RedisSetupError),
    /// A Redis store was asked for, but neither a KEK file nor a state
    /// directory to hold one.
    #[error(
        "a Redis store needs the fleet's key-encryption key: set kek_file (--kek-file), or a state_dir holding it as kek"
    )]
    RedisWithoutKek,
    /// The KEK of a Redis store does not exist, and is not made here.
    #[error(
        "{kek} does not exist; every node of a fleet must seal with the same key-encryption key, so tlskeeper does \
         not make one for a Redis store: create it once with `tlskeeper kek new {kek}` and copy it to every node"
    )]
    FleetKekMissing {
        /// The missing key file.
        kek: PathBuf,
    },
    /// The Redis store could not be inspected at start.
    #[error("cannot read {store}: {source}")]
    RedisRead {
        /// The store, as described in messages.
        store: String,
        /// Why.
        #[source]
        source: StorageError,
    },
}

impl StateError {
    /// The exit status for this failure (sysexits(3)): a key that does not
    /// fit is a configuration problem; the rest are files that cannot be
    /// used.
    pub fn status(&self) -> i32 {
        match self {
            StateError::Kek(_)
            | StateError::KekMissing { .. }
            | StateError::Seal { .. }
            | StateError::RedisWithoutKek
            | StateError::FleetKekMissing { .. } => 78, // EX_CONFIG
            StateError::Redis(_) | StateError::RedisRead { .. } => 69, // EX_UNAVAILABLE
            _ => 73,                                                   // EX_CANTCREAT
        }
    }
}

/// How the daemon opens its persistent store in `dir`.
pub fn store_options(dir: &Path) -> FileOptions {
    FileOptions {
        durable_tables: vec![TICKET_KEY_TABLE.to_owned()],
        location: dir.display().to_string(),
        ..FileOptions::default()
    }
}

/// Open (creating if needed) the store in the state directory `dir`.
///
/// # Errors
///
/// [`OpenError`], naming the file and the fix.
pub fn open_store(dir: &Path) -> Result<FileStorage, OpenError> {
    FileStorage::open_path(dir, store_options(dir))
}

/// Put the state together from an opened store (`None` without a state
/// directory: everything in memory) and the settings.
///
/// # Errors
///
/// [`StateError`].
pub fn assemble(store: Option<FileStorage>, options: &StateOptions) -> Result<State, StateError> {
    let storage: Box<dyn Storage> = match (store, &options.redis) {
        (_, Some(redis)) => Box::new(fleet_store(redis, options)?),
        (Some(store), None) => {
            // Never fall back to memory for a store that was opened: that
            // would be starting from nothing when told to keep state.
            let Some(kek_path) = options.kek_path() else {
                return Err(StateError::NoKekFile(store.path()));
            };
            let sealed = seal(store, &kek_path)?;
            Box::new(Split::new(sealed, volatile_tables(options)).map_err(StateError::Purge)?)
        }
        (None, None) => Box::new(MemoryStorage::new()),
    };
    let seed_file: Box<dyn SeedStore> = match options.seed_file.clone() {
        Some(path) => Box::new(SeedFile::open(&path)?),
        None => Box::new(NoSeedFile),
    };
    Ok(State { storage, seed_file })
}

fn volatile_tables(options: &StateOptions) -> Vec<String> {
    options.volatile_caches.iter().flat_map(|name| cache_tables(name)).collect()
}

/// The Redis store, sealed under the fleet's KEK, which must exist.
fn fleet_store(redis: &RedisOptions, options: &StateOptions) -> Result<Split<Sealed<RedisStorage>>, StateError> {
    let kek_path = options.kek_path().ok_or(StateError::RedisWithoutKek)?;
    let kek = kek::load(&kek_path)?.ok_or_else(|| StateError::FleetKekMissing { kek: kek_path.clone() })?;
    let mut store = RedisStorage::connect(redis.clone())?;
    let described = store.describe();
    let read_error = |source| StateError::RedisRead { store: described.clone(), source };
    let empty = store.is_empty().map_err(read_error)?;
    let fingerprint = kek.fingerprint();
    let sealed = Sealed::open(store, kek, &described, empty)
        .and_then(Sealed::reasserting_check)
        .map_err(|e| seal_error(e, &kek_path))?;
    tracing::info!(
        "state in {described}{}, sealed under {} (fingerprint {fingerprint})",
        if empty { ", empty: the first node of a new fleet" } else { "" },
        kek_path.display()
    );
    Split::new(sealed, volatile_tables(options)).map_err(StateError::Purge)
}

/// Open the KEK that belongs to `store` (creating both together on first
/// start) and wrap the store in it.
fn seal(store: FileStorage, kek_path: &Path) -> Result<Sealed<FileStorage>, StateError> {
    let described = store.describe();
    let empty = store.is_empty();
    let kek = match kek::load(kek_path)? {
        Some(kek) => kek,
        None if empty => {
            let kek = kek::create(kek_path)?;
            tracing::info!(
                "created key-encryption key {} (fingerprint {}) for {described}; keep a copy apart from the store: \
                 without it the store cannot be read",
                kek_path.display(),
                kek.fingerprint()
            );
            kek
        }
        // No check record: not a store sealed under any key (one written
        // before sealing, or tampered with), which the sealing layer names.
        None if !store.has_check_record() => {
            return Err(seal_error(SealError::Unsealed { location: described }, kek_path));
        }
        None => return Err(StateError::KekMissing { store: store.path(), kek: kek_path.to_owned() }),
    };
    if empty {
        // Said once, so that a store lost or moved away shows in the log
        // rather than as clients quietly doing full handshakes.
        tracing::info!("{described} is empty: starting without stored ticket keys or sessions");
    }
    let fingerprint = kek.fingerprint();
    let sealed = Sealed::open(store, kek, &described, empty).map_err(|e| seal_error(e, kek_path))?;
    tracing::info!("state in {described}, sealed under {} (fingerprint {fingerprint})", kek_path.display());
    Ok(sealed)
}

fn seal_error(source: SealError, kek: &Path) -> StateError {
    StateError::Seal { source, kek: kek.to_owned() }
}

/// Open everything `options` asks for, as `tlskeeper serve` does.
///
/// # Errors
///
/// [`StateError`].
pub fn open(options: &StateOptions) -> Result<State, StateError> {
    // With a Redis store the state directory keeps only the seed file (and
    // perhaps the KEK): no file store is opened.
    let store = match options.redis {
        Some(_) => None,
        None => options.state_dir.as_deref().map(open_store).transpose()?,
    };
    assemble(store, options)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(dir: &Path) -> StateOptions {
        StateOptions::in_dir(dir.join("state"))
    }

    fn put_and_close(settings: &StateOptions) {
        let mut state = open(settings).unwrap();
        state.storage.put(TICKET_KEY_TABLE, b"name", b"secret key").unwrap();
    }

    #[test]
    fn a_store_written_without_sealing_is_refused_with_or_without_a_key() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path());
        let mut raw = open_store(s.state_dir.as_deref().unwrap()).unwrap();
        raw.put(TICKET_KEY_TABLE, b"name", b"key in clear").unwrap();
        drop(raw);
        let e = open(&s).err().unwrap();
        assert!(matches!(e, StateError::Seal { source: SealError::Unsealed { .. }, .. }), "{e}");
        assert!(!dir.path().join("state/kek").exists(), "no key made for a store that is not empty");
        kek::create(&dir.path().join("state/kek")).unwrap();
        let e = open(&s).err().unwrap();
        assert!(matches!(e, StateError::Seal { source: SealError::Unsealed { .. }, .. }), "{e}");
    }

    #[test]
    fn first_start_creates_the_kek_and_later_starts_need_it() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path());
        put_and_close(&s);
        let kek = dir.path().join("state/kek");
        assert!(kek.is_file());
        let mut state = open(&s).unwrap();
        assert_eq!(state.storage.get(TICKET_KEY_TABLE, b"name").unwrap().as_deref(), Some(&b"secret key"[..]));
        drop(state);

        // Without its key the store does not open, and says what to do.
        let kept = dir.path().join("kek.kept");
        std::fs::rename(&kek, &kept).unwrap();
        let e = open(&s).err().unwrap();
        assert!(matches!(e, StateError::KekMissing { .. }), "{e}");
        assert!(e.to_string().contains("restore that file"), "{e}");
        assert_eq!(e.status(), 78);
        assert!(!kek.exists(), "no new key was made for a store that has one");

        // Another key does not open it either.
        kek::create(&kek).unwrap();
        let e = open(&s).err().unwrap();
        assert!(matches!(e, StateError::Seal { source: SealError::WrongKek { .. }, .. }), "{e}");
        assert!(e.to_string().contains(&kek.display().to_string()), "names the key file: {e}");

        std::fs::rename(&kept, &kek).unwrap();
        assert!(open(&s).is_ok());
    }

    #[test]
    fn an_explicit_kek_file_lives_outside_the_state_directory() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateOptions { kek_file: Some(dir.path().join("secrets.kek")), ..settings(dir.path()) };
        put_and_close(&s);
        assert!(dir.path().join("secrets.kek").is_file());
        assert!(!dir.path().join("state/kek").exists());
    }

    #[test]
    fn volatile_caches_stay_out_of_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = settings(dir.path());
        put_and_close(&s);
        {
            let mut state = open(&s).unwrap();
            state.storage.put("scache/smtp", b"id", b"session").unwrap();
        }
        s.volatile_caches = vec!["smtp".to_owned()];
        let mut state = open(&s).unwrap();
        assert_eq!(state.storage.get("scache/smtp", b"id").unwrap(), None, "purged when made volatile");
        state.storage.put("scache/smtp", b"id2", b"session").unwrap();
        drop(state);
        s.volatile_caches.clear();
        let mut state = open(&s).unwrap();
        assert_eq!(state.storage.get("scache/smtp", b"id").unwrap(), None, "purged from the store");
        assert_eq!(state.storage.get("scache/smtp", b"id2").unwrap(), None, "never written to the store");
    }

    #[test]
    fn without_a_state_directory_everything_is_in_memory() {
        let mut state = open(&StateOptions::default()).unwrap();
        assert!(state.seed_file.take().is_none());
        state.storage.put("t", b"k", b"v").unwrap();
    }

    #[test]
    fn the_seed_file_defaults_into_the_state_directory() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path());
        let mut state = open(&s).unwrap();
        state.seed_file.save(b"seed").unwrap();
        assert_eq!(std::fs::read(dir.path().join("state/seed")).unwrap(), b"seed");
    }
}
