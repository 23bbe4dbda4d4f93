//! Settings: built-in defaults, overridden by a TOML file, overridden by
//! command-line flags.
//!
//! Every setting has a default, so `tlskeeper serve` runs with no file at
//! all. The file format is plain TOML with unknown keys rejected (a typo
//! must not silently fall back to a default):
//!
//! ```toml
//! socket = "/run/tlskeeper/tlsmgr"
//! state_dir = "/var/lib/tlskeeper"  # omit to keep state in memory only
//! kek_file = "/etc/tlskeeper/kek"   # default: <state_dir>/kek
//! # store = "redis://10.0.0.5:6379/0"  # tables in a Redis a fleet shares
//! # store_cluster = false         # true: store lists Redis Cluster nodes,
//! #                               # "redis://10.0.0.5:7000,redis://10.0.0.6:7000"
//! # store_password_file = "/etc/tlskeeper/redis-password"
//! # store_ca_file = "/etc/tlskeeper/redis-ca.pem"  # rediss:// only
//! # store_prefix = "tlskeeper"    # namespace of every Redis key
//! # store_timeout_ms = 200        # longest wait of one Redis call
//! # ticket_key_margin = 30        # seconds the fleet's clocks may differ
//! # cores = 0                     # cores serving at once: 0 = 4 with a store, else 1
//! seed_file = "/var/lib/tlskeeper/seed"  # default: <state_dir>/seed; "" = none
//! seed_update_period = 3600       # seconds, mean interval between seed saves
//! ticket_cache = "smtpd"          # whose timeout drives ticket keys
//! reseed_period = 3600            # seconds, mean DRBG reseed interval
//! max_connections = 1024
//! idle_timeout = 300              # seconds
//! read_timeout = 10               # seconds to send one request
//!
//! [caches.smtpd]
//! enabled = true
//! timeout = 3600                  # seconds; 0 = off, 1..119 -> 120
//! max_entries = 1000000
//! persistent = true               # false: keep this cache in memory only
//! ```
//!
//! The cache values are passed to the core unchanged; the core applies
//! tlsmgr's sanitising and rejects what it cannot accept, with a message
//! naming the setting.
//!
//! # Security
//!
//! The file is operator-supplied and trusted for intent; it holds no
//! secrets.
//!
//! # Limitations
//!
//! Durations are whole seconds (Postfix's `3600s`/`1h` suffixes come with
//! main.cf support).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::server::ServerSettings;
use tlskeeper_engine::bindings::manager::CacheConfig;
use tlskeeper_engine::state::StateOptions;
use tlskeeper_engine::storage::redis::RedisOptions;
use tlskeeper_engine::{CoreConfig, FleetConfig, Limits};

/// Cores with a shared store unless `cores` says otherwise. Measured with
/// the smtpd mix at 16 connections on two CPUs (README "A fleet on
/// Redis"): one core did 12k requests a second, waiting on Redis round
/// trips one at a time; two to four did 32k to 39k, more did no better.
pub const DEFAULT_STORE_CORES: usize = 4;

/// The default socket path.
pub const DEFAULT_SOCKET: &str = "/run/tlskeeper/tlsmgr";

/// Why the settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has an unknown or mistyped key.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, with line and column.
        message: String,
    },
    /// A value is out of range.
    #[error("invalid setting {key}: {message}")]
    Value {
        /// The setting.
        key: String,
        /// What is wrong with it.
        message: String,
    },
}

/// One session cache.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheSettings {
    /// Serve lookups and updates.
    pub enabled: bool,
    /// Entry lifetime in seconds (tlsmgr rules: 0 = off, 1..119 -> 120).
    pub timeout: u32,
    /// Most entries (0 = the core's default).
    pub max_entries: u64,
    /// Most bytes, keys plus values (0 = the core's default).
    pub max_bytes: u64,
    /// Largest session accepted (0 = the core's default).
    pub max_session_bytes: u32,
    /// Keep this cache in the state directory (when there is one); false
    /// keeps it in memory, lost at exit.
    pub persistent: bool,
}

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings {
            enabled: true,
            timeout: 3600,
            max_entries: 0,
            max_bytes: 0,
            max_session_bytes: 0,
            persistent: true,
        }
    }
}

/// All settings of `tlskeeper serve`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Where to listen.
    pub socket: PathBuf,
    /// Permissions of the socket file, octal as a string. 0666 as Postfix's
    /// master(8) creates its sockets: access is controlled by the directory.
    pub socket_mode: String,
    /// Keep keys and sessions in a store in this directory (`None` = in
    /// memory only, lost at exit).
    pub state_dir: Option<PathBuf>,
    /// The key-encryption key that seals the state directory's store
    /// (`None` = `<state_dir>/kek`). Created on first start.
    pub kek_file: Option<PathBuf>,
    /// Keep the tables in this Redis server (`redis://`, `rediss://`,
    /// `redis+unix://`) instead of the state directory (`None`); with
    /// `store_cluster`, one or more nodes of a Redis Cluster,
    /// comma-separated.
    pub store: Option<String>,
    /// `store` names seed nodes of a Redis Cluster.
    pub store_cluster: bool,
    /// The Redis ACL user's password, in a file only its owner may read.
    pub store_password_file: Option<PathBuf>,
    /// The CA that signed a `rediss://` server's certificate (PEM).
    pub store_ca_file: Option<PathBuf>,
    /// Namespace of every Redis key.
    pub store_prefix: String,
    /// Longest wait of one Redis call, in milliseconds.
    pub store_timeout_ms: u64,
    /// With a shared `store`: seconds by which the fleet's clocks may
    /// differ. Each ticket key is published this long before it seals and
    /// opens this long past its window. At most a quarter of the ticket
    /// cache's timeout.
    pub ticket_key_margin: u32,
    /// Cores serving requests at once; 0 (the default) picks
    /// [`DEFAULT_STORE_CORES`] with a shared `store`, else one. More than
    /// one needs a shared store: each core is then one more node of the
    /// fleet, with its own connection and event loop, so that requests
    /// waiting on Redis do not hold up the others.
    pub cores: u32,
    /// The DRBG's seed file (`None` = `<state_dir>/seed` when there is a
    /// state directory; an empty path = no seed file).
    pub seed_file: Option<PathBuf>,
    /// Mean seconds between seed-file saves (0 = no seed file).
    pub seed_update_period: u32,
    /// Cache compiled code here (`None` = the per-user default).
    pub compile_cache_dir: Option<PathBuf>,
    /// Use the compiled-code cache at all.
    pub compile_cache: bool,
    /// The cache whose timeout drives ticket keys.
    pub ticket_cache: String,
    /// Mean seconds between DRBG reseeds.
    pub reseed_period: u32,
    /// Expired entries removed per housekeeping step (0 = core default).
    pub housekeeping_batch: u32,
    /// Most simultaneous connections.
    pub max_connections: usize,
    /// Seconds before an idle connection is closed.
    pub idle_timeout: u64,
    /// Seconds a client may take to send one request.
    pub read_timeout: u64,
    /// Fuel per core call.
    pub fuel_per_call: u64,
    /// Memory cap of the core, in MiB.
    pub core_memory_mib: usize,
    /// The session caches by name.
    pub caches: BTreeMap<String, CacheSettings>,
}

impl Default for Settings {
    fn default() -> Self {
        let caches = ["smtpd", "smtp", "lmtp"].into_iter().map(|n| (n.to_owned(), CacheSettings::default())).collect();
        let limits = Limits::default();
        Settings {
            socket: PathBuf::from(DEFAULT_SOCKET),
            socket_mode: "0666".into(),
            state_dir: None,
            kek_file: None,
            store: None,
            store_cluster: false,
            store_password_file: None,
            store_ca_file: None,
            store_prefix: "tlskeeper".into(),
            store_timeout_ms: 200,
            ticket_key_margin: 30,
            cores: 0,
            seed_file: None,
            seed_update_period: 3600,
            compile_cache_dir: None,
            compile_cache: true,
            ticket_cache: "smtpd".into(),
            reseed_period: 3600,
            housekeeping_batch: 0,
            max_connections: ServerSettings::default().max_connections,
            idle_timeout: ServerSettings::default().idle_timeout.as_secs(),
            read_timeout: ServerSettings::default().read_timeout.as_secs(),
            fuel_per_call: limits.fuel_per_call,
            core_memory_mib: limits.memory_bytes / (1024 * 1024),
            caches,
        }
    }
}

impl Settings {
    /// Defaults, overridden by the TOML file at `path` if given.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the file and what is wrong.
    pub fn load(path: Option<&Path>) -> Result<Settings, ConfigError> {
        let Some(path) = path else {
            return Ok(Settings::default());
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        Self::parse(&text).map_err(|message| ConfigError::Parse { path: path.into(), message })
    }

    /// Parse TOML text over the defaults. A `[caches]` table in the text
    /// replaces the default caches entirely.
    ///
    /// # Errors
    ///
    /// The parser's message, with line and column.
    pub fn parse(text: &str) -> Result<Settings, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// Permissions for the socket file.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Value`] unless `socket_mode` is octal within 0..=0777.
    pub fn socket_mode(&self) -> Result<u32, ConfigError> {
        u32::from_str_radix(self.socket_mode.trim_start_matches("0o"), 8).ok().filter(|m| *m <= 0o777).ok_or_else(
            || ConfigError::Value {
                key: "socket_mode".into(),
                message: format!("\"{}\" is not an octal mode like \"0666\"", self.socket_mode),
            },
        )
    }

    /// The compiled-code cache directory: the configured one, else
    /// `/var/cache/tlskeeper` for root and `$XDG_CACHE_HOME/tlskeeper` or
    /// `~/.cache/tlskeeper` for others. `None` when disabled.
    pub fn compile_cache_dir(&self) -> Option<PathBuf> {
        if !self.compile_cache {
            return None;
        }
        if let Some(dir) = &self.compile_cache_dir {
            return Some(dir.clone());
        }
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } == 0 {
            return Some(PathBuf::from("/var/cache/tlskeeper"));
        }
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
        Some(base.join("tlskeeper"))
    }

    /// The key-encryption key file, when there is a state directory.
    pub fn kek_path(&self) -> Option<PathBuf> {
        self.state_options().kek_path()
    }

    /// The seed file, if any.
    pub fn seed_file_path(&self) -> Option<PathBuf> {
        if self.seed_update_period == 0 {
            return None;
        }
        match &self.seed_file {
            Some(path) if path.as_os_str().is_empty() => None,
            Some(path) => Some(path.clone()),
            None => self.state_dir.as_ref().map(|dir| dir.join("seed")),
        }
    }

    /// Caches kept in memory even when there is a state directory.
    pub fn volatile_caches(&self) -> Vec<String> {
        self.caches.iter().filter(|(_, c)| !c.persistent).map(|(name, _)| name.clone()).collect()
    }

    /// Where the durable state lives, for [`tlskeeper_engine::state::open`].
    pub fn state_options(&self) -> StateOptions {
        StateOptions {
            state_dir: self.state_dir.clone(),
            kek_file: self.kek_file.clone(),
            seed_file: self.seed_file_path(),
            volatile_caches: self.volatile_caches(),
            redis: self.store.as_ref().map(|url| RedisOptions {
                cluster: self.store_cluster,
                password_file: self.store_password_file.clone(),
                ca_file: self.store_ca_file.clone(),
                prefix: self.store_prefix.clone(),
                timeout: Duration::from_millis(self.store_timeout_ms.max(1)),
                ..RedisOptions::new(url.clone())
            }),
        }
    }

    /// How many cores to run: `cores`, checked.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Value`] above 64, or above 1 without a shared store
    /// (a state directory's store is one core's).
    pub fn core_count(&self) -> Result<usize, ConfigError> {
        let refuse = |message: String| ConfigError::Value { key: "cores".into(), message };
        match self.cores {
            0 if self.store.is_some() => Ok(DEFAULT_STORE_CORES),
            0 | 1 => Ok(1),
            65.. => Err(refuse(format!("{} is more than 64", self.cores))),
            n if self.store.is_none() => Err(refuse(format!(
                "{n} cores need a shared store (store = \"redis://...\"): a state directory or memory is one core's"
            ))),
            n => Ok(usize::try_from(n).unwrap_or(1)),
        }
    }

    /// The fleet the core joins: one when the store is shared (`store`),
    /// none for a state directory or memory, which are this node's alone.
    pub fn fleet(&self) -> Option<FleetConfig> {
        self.store.as_ref().map(|_| FleetConfig { margin_secs: self.ticket_key_margin })
    }

    /// What the core is configured with.
    pub fn core_config(&self) -> CoreConfig {
        CoreConfig {
            caches: self
                .caches
                .iter()
                .map(|(name, c)| CacheConfig {
                    name: name.clone(),
                    enabled: c.enabled,
                    timeout_secs: c.timeout,
                    max_entries: c.max_entries,
                    max_bytes: c.max_bytes,
                    max_session_bytes: c.max_session_bytes,
                })
                .collect(),
            ticket_cache: self.ticket_cache.clone(),
            reseed_period_secs: self.reseed_period,
            housekeeping_batch: self.housekeeping_batch,
            seed_save_period_secs: if self.seed_file_path().is_some() { self.seed_update_period } else { 0 },
        }
    }

    /// The core's resource limits.
    pub fn limits(&self) -> Limits {
        Limits { fuel_per_call: self.fuel_per_call, memory_bytes: self.core_memory_mib.saturating_mul(1024 * 1024) }
    }

    /// Connection handling.
    pub fn server(&self) -> ServerSettings {
        ServerSettings {
            max_connections: self.max_connections,
            idle_timeout: Duration::from_secs(self.idle_timeout.max(1)),
            read_timeout: Duration::from_secs(self.read_timeout.max(1)),
            loops: self.core_count().unwrap_or(1),
            ..ServerSettings::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_serve_three_caches() {
        let s = Settings::default();
        assert_eq!(s.caches.keys().collect::<Vec<_>>(), ["lmtp", "smtp", "smtpd"]);
        assert_eq!(s.socket_mode().unwrap(), 0o666);
        assert_eq!(s.core_config().caches.len(), 3);
    }

    #[test]
    fn file_overrides_and_replaces_caches() {
        let s =
            Settings::parse("socket = \"/tmp/x\"\nreseed_period = 60\n[caches.smtpd]\ntimeout = 10\nmax_entries = 5\n")
                .unwrap();
        assert_eq!(s.socket, PathBuf::from("/tmp/x"));
        assert_eq!(s.reseed_period, 60);
        assert_eq!(s.caches.len(), 1);
        assert_eq!(s.caches["smtpd"], CacheSettings { timeout: 10, max_entries: 5, ..CacheSettings::default() });
    }

    #[test]
    fn state_files_default_into_the_state_directory() {
        let memory = Settings::default();
        assert_eq!((memory.kek_path(), memory.seed_file_path()), (None, None));
        assert_eq!(memory.core_config().seed_save_period_secs, 0);

        let s = Settings::parse("state_dir = \"/var/lib/tk\"\n[caches.smtp]\npersistent = false\n").unwrap();
        assert_eq!(s.kek_path(), Some(PathBuf::from("/var/lib/tk/kek")));
        assert_eq!(s.seed_file_path(), Some(PathBuf::from("/var/lib/tk/seed")));
        assert_eq!(s.core_config().seed_save_period_secs, 3600);
        assert_eq!(s.volatile_caches(), ["smtp"]);

        let s = Settings::parse("state_dir = \"/v\"\nkek_file = \"/etc/k\"\nseed_file = \"\"\n").unwrap();
        assert_eq!((s.kek_path(), s.seed_file_path()), (Some(PathBuf::from("/etc/k")), None));
        let s = Settings::parse("state_dir = \"/v\"\nseed_update_period = 0\n").unwrap();
        assert_eq!(s.seed_file_path(), None);
    }

    /// A shared store becomes the engine's Redis options, and makes the
    /// core join a fleet.
    #[test]
    fn a_shared_store_is_a_fleet() {
        let s = Settings::parse(
            "store = \"redis://a:7000,redis://b:7000\"\nstore_cluster = true\nstore_timeout_ms = 50\nticket_key_margin = 20\n",
        )
        .unwrap();
        let redis = s.state_options().redis.unwrap();
        assert!(redis.cluster);
        assert_eq!((redis.url.as_str(), redis.timeout), ("redis://a:7000,redis://b:7000", Duration::from_millis(50)));
        assert_eq!(s.fleet().map(|f| f.margin_secs), Some(20));
        assert!(Settings::default().state_options().redis.is_none() && Settings::default().fleet().is_none());
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        let e = Settings::parse("sokcet = \"/tmp/x\"\n").unwrap_err();
        assert!(e.contains("sokcet"), "{e}");
        assert!(Settings::parse("[caches.smtpd]\ntimeout = \"long\"\n").is_err());
        let s = Settings { socket_mode: "999".into(), ..Settings::default() };
        assert!(s.socket_mode().is_err());
    }
}
