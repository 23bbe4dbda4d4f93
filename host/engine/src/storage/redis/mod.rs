//! The Redis backend: the core's tables in a Redis (or Valkey) server that
//! several tlskeeper nodes share, so that a fleet agrees on ticket keys and
//! finds each other's sessions.
//!
//! [`RedisStorage`] implements the [`Storage`] contract on one Redis 7
//! server, reached over TCP (`redis://HOST:PORT/DB`), TLS
//! (`rediss://HOST:PORT/DB`, with a CA file) or a UNIX socket
//! (`redis+unix:///PATH?db=DB`), or on a Redis Cluster named by some of
//! its nodes ([`link`] opens either). Tables are laid out as [`layout`]
//! says, each in one hash slot; every change that touches more than one
//! Redis key is one Lua script, so nodes writing at once never see or leave
//! a table half-changed, and in a cluster each script runs on one node.
//! The two calls of a cache update are one round trip each: `get_with_stat`
//! pipelines the read and the size, `apply` pipelines its changes' scripts
//! (on one server; in a cluster a batch may span masters, and its changes
//! are made one by one, in order, so that a failure leaves a prefix made).
//!
//! The client is the `redis` crate (redis-rs): the most used Rust client
//! for Redis, started in 2013 and actively maintained; a synchronous API
//! with socket timeouts, TLS through rustls and script caching (EVALSHA,
//! falling back to EVAL). Writing a RESP client here was rejected: the protocol is
//! simple, but reconnection, TLS and errors are where clients go wrong.
//!
//! # Waiting
//!
//! Every call is bounded by [`RedisOptions::timeout`] (connect, and each
//! read and write): the core's lock is held meanwhile, so a slow Redis
//! must cost a request a small, known wait and then an error. After a
//! failure that says the server cannot be reached, calls fail at once for
//! [`RedisOptions::retry_after`] and then the next call tries again (a new
//! connection), so that a Redis that is down costs each Postfix request
//! nothing, rather than a connect timeout each. Going down and coming back
//! are logged once each (and through the throttle, so that a flapping
//! server cannot fill the log); no restart is needed.
//!
//! # Security
//!
//! Trusted: nothing stored. Whoever can reach the Redis server may read,
//! change or delete anything in it; the sealing layer above this backend
//! ([`super::sealed`]) keeps values unreadable and unforgeable, so this
//! module is given only sealed records. The password is read from a file
//! that only its owner may read ([`RedisOptions::password_file`]); a URL
//! with a password in it
//! is refused, so that it is never on a command line or in the settings
//! file, and the location logged is the URL without credentials.
//!
//! # Limitations
//!
//! - Durability is Redis's: `flush` does nothing, and a write survives a
//!   Redis crash only as Redis's own persistence allows (`appendonly yes`
//!   and `appendfsync always` for every write; `everysec` may lose the last
//!   second). README "Fleet" says what a lost ticket key costs.
//! - In a cluster a table lives on one master: the fleet's load spreads
//!   over masters table by table (a cache's entries, its age index), not
//!   entry by entry. A call there may wait a few timeouts (see [`link`]).
//! - The password stays in the client's memory, unzeroized, for as long as
//!   the backend lives: the client library keeps it to reconnect.
//! - Keys and value lengths are visible to whoever reads Redis, as in every
//!   backend (see [`super::sealed`]).

#[cfg(test)]
mod cluster_tests;
pub mod layout;
pub mod link;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tls_tests;

use std::collections::BTreeSet;
use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use redis::{RedisError, Script};

use self::layout::{ScriptCall, TableKeys};
use self::link::{Dialer, Link, dialer_for};
use super::{Change, Entry, Storage, StorageError, TableStat, check_sizes};
use crate::throttle::Throttle;

/// How to reach the server and how long to wait.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisOptions {
    /// `redis://HOST:PORT/DB`, `rediss://HOST:PORT/DB` or
    /// `redis+unix:///PATH?db=DB`; with [`RedisOptions::cluster`], one or
    /// more cluster nodes' `redis://HOST:PORT` (or `rediss://`),
    /// comma-separated. A user name may be in it, a password may not.
    pub url: String,
    /// The URL names seed nodes of a Redis Cluster, which the client asks
    /// for the rest.
    pub cluster: bool,
    /// A file holding the ACL user's password (one line; mode 0600 or
    /// stricter, or it is refused).
    pub password_file: Option<PathBuf>,
    /// PEM file of the CA that signed the server's certificate, for
    /// `rediss://` (none: the system's roots).
    pub ca_file: Option<PathBuf>,
    /// Namespace of every key, so that several fleets can share a server.
    pub prefix: String,
    /// The longest wait of one call: connecting, and each read or write.
    pub timeout: Duration,
    /// After the server could not be reached, how long calls fail at once.
    pub retry_after: Duration,
    /// The directory the process works in and will `chroot(2)` to once
    /// connected (Postfix's queue directory, for a chrooted tlsmgr). A UNIX
    /// socket under it is then reached by its path relative to it, which
    /// names the same socket before the chroot and after (reconnects); one
    /// outside it is refused, as it could not be reached again. Rejected:
    /// holding one connection for life, which a Redis restart would end.
    pub jail: Option<PathBuf>,
}

impl RedisOptions {
    /// Defaults for `url`: prefix `tlskeeper`, 200 ms timeout, 1 s backoff.
    pub fn new(url: impl Into<String>) -> RedisOptions {
        RedisOptions {
            url: url.into(),
            cluster: false,
            password_file: None,
            ca_file: None,
            prefix: "tlskeeper".into(),
            timeout: Duration::from_millis(200),
            retry_after: Duration::from_secs(1),
            jail: None,
        }
    }
}

impl fmt::Debug for RedisOptions {
    // Written out rather than derived only to keep the field order of the
    // docs; nothing here is secret (the password stays in its file).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisOptions")
            .field("url", &self.url)
            .field("cluster", &self.cluster)
            .field("password_file", &self.password_file)
            .field("ca_file", &self.ca_file)
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("retry_after", &self.retry_after)
            .field("jail", &self.jail)
            .finish()
    }
}

/// Why a Redis store could not be set up. Each message says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum RedisSetupError {
    /// The URL does not parse as a Redis URL.
    #[error(
        "store URL {url:?} is not a Redis URL ({reason}); use redis://HOST:PORT/DB, rediss://HOST:PORT/DB or redis+unix:///PATH?db=DB"
    )]
    BadUrl {
        /// The URL as given, without credentials.
        url: String,
        /// What the parser said.
        reason: String,
    },
    /// The URL carries a password.
    #[error(
        "store URL {0:?} contains a password; put the password in a file named by store_password_file (--store-password-file) instead, so it never appears in settings, command lines or logs"
    )]
    PasswordInUrl(String),
    /// The prefix would break the key layout.
    #[error("store prefix {0:?} must be 1 to 64 characters, without '{{' or '}}'")]
    BadPrefix(String),
    /// The password file could not be read, or others may read it.
    #[error("cannot use the store's password file {path}: {reason}")]
    PasswordFile {
        /// The file.
        path: PathBuf,
        /// What is wrong, and what to do.
        reason: String,
    },
    /// The CA file could not be read.
    #[error("cannot read the store's CA file {path}: {source}")]
    CaFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A CA file was given for a URL that is not `rediss://`.
    #[error("store_ca_file is set, but the store URL {0:?} does not use TLS (rediss://)")]
    CaWithoutTls(String),
    /// A UNIX socket outside the directory the process will chroot to.
    #[error(
        "the Redis socket {socket} is outside the chroot jail {jail}: it could not be reached again after a reconnect; have Redis listen on a socket inside the jail (redis.conf: unixsocket {jail}/private/redis.sock) or on loopback TCP, or run tlsmgr with chroot n in master.cf"
    )]
    SocketOutsideJail {
        /// The socket.
        socket: PathBuf,
        /// The jail.
        jail: PathBuf,
    },
    /// The client refused the settings.
    #[error("cannot set up the Redis client for {location}: {reason}")]
    Client {
        /// The URL without credentials.
        location: String,
        /// What the client said.
        reason: String,
    },
    /// The first contact failed: the server is away, or refuses us.
    #[error("cannot use the Redis store at {location}: {reason}")]
    Unreachable {
        /// The URL without credentials.
        location: String,
        /// What failed.
        reason: String,
    },
}

/// The core's tables in one Redis server.
pub struct RedisStorage {
    client: Dialer,
    location: String,
    options: RedisOptions,
    connection: Option<Link>,
    /// Set when the server could not be reached, cleared (and the recovery
    /// logged) by the next call that succeeds: until then calls fail at
    /// once, and the first call after it is the one that tries again.
    retry_at: Option<Instant>,
    /// Tables known to be in the registry, so that it is written once per
    /// table and process rather than on every put.
    registered: BTreeSet<String>,
    scripts: Scripts,
    throttle: Throttle,
}

struct Scripts {
    put: Script,
    delete: Script,
    scan: Script,
}

impl fmt::Debug for RedisStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStorage").field("location", &self.location).field("prefix", &self.options.prefix).finish()
    }
}

impl RedisStorage {
    /// Set up the client for `options` and make a first contact, so that a
    /// wrong address, password or permission stops the start with a clear
    /// message rather than failing every request later.
    ///
    /// # Errors
    ///
    /// [`RedisSetupError`].
    pub fn connect(options: RedisOptions) -> Result<RedisStorage, RedisSetupError> {
        let (client, location) = dialer_for(&options)?;
        let mut storage = RedisStorage {
            client,
            location,
            options,
            connection: None,
            retry_at: None,
            registered: BTreeSet::new(),
            scripts: Scripts { put: layout::put(), delete: layout::delete(), scan: layout::scan() },
            throttle: Throttle::new(),
        };
        // Straight to the server rather than through `call`: a start that
        // fails says so once, in its error, not also in a backoff warning.
        let first = storage.open_connection().and_then(|mut con| {
            let _: String = redis::cmd("PING").query(&mut con)?;
            Ok(con)
        });
        match first {
            Ok(con) => {
                storage.connection = Some(con);
                Ok(storage)
            }
            Err(e) => Err(RedisSetupError::Unreachable {
                location: storage.location.clone(),
                reason: link::explain(&storage.options, &e),
            }),
        }
    }

    /// The server, as logged: the URL without credentials, and the prefix.
    pub fn describe(&self) -> String {
        format!("the Redis store {} (prefix {})", self.location, self.options.prefix)
    }

    /// True when no table of this prefix holds anything: a new fleet.
    ///
    /// # Errors
    ///
    /// [`StorageError`] when the server cannot be asked.
    pub fn is_empty(&mut self) -> Result<bool, StorageError> {
        let registry = layout::registry(&self.options.prefix);
        let tables: Vec<String> = self.call(|con, _| redis::cmd("SMEMBERS").arg(&registry).query(con))?;
        for table in tables {
            if self.stat(&table)?.entries > 0 {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Run `f` on a connection, connecting first if needed; map and
    /// account its errors (the backoff, the once-only log lines).
    ///
    /// A connection kept from an earlier call that turns out closed (Redis
    /// restarted, `CLIENT KILL`, a proxy's idle timeout) is replaced once
    /// before the server is called down, so that such a close costs no
    /// request. `f` may therefore run twice; every command here may: a put
    /// writes the same value again (the scripts recount its bytes), a
    /// put-if-absent that landed the first time returns our own value, a
    /// delete that landed reports nothing deleted, a batch of changes makes
    /// the same changes again (a sequence of puts and deletes made twice
    /// leaves what it left once). A timeout is not retried:
    /// a hung server must cost one wait, not two.
    fn call<T>(&mut self, mut f: impl FnMut(&mut Link, &Scripts) -> Result<T, RedisError>) -> Result<T, StorageError> {
        let now = Instant::now();
        if let Some(retry_at) = self.retry_at
            && now < retry_at
        {
            return Err(StorageError::Unavailable(format!(
                "{} could not be reached; trying again in {} ms",
                self.location,
                (retry_at - now).as_millis()
            )));
        }
        let fresh = |this: &mut Self, f: &mut dyn FnMut(&mut Link, &Scripts) -> Result<T, RedisError>| {
            this.open_connection().and_then(|con| this.run_on(con, f))
        };
        let outcome = match self.connection.take() {
            Some(con) => match self.run_on(con, &mut f) {
                Err(e) if e.is_connection_dropped() => fresh(self, &mut f),
                kept => kept,
            },
            None => fresh(self, &mut f),
        };
        match outcome {
            Ok(value) => {
                if self.retry_at.take().is_some() {
                    self.log_once(false, "tlskeeper redis back", format_args!("{} answers again", self.describe()));
                    // It may have come back empty: name the tables again.
                    self.registered.clear();
                }
                Ok(value)
            }
            Err(e) if unreachable(&e) => {
                if self.retry_at.replace(now + self.options.retry_after).is_none() {
                    self.log_once(true,
                        "tlskeeper redis down",
                        format_args!(
                            "{} cannot be reached ({}); requests that need it fail until it answers, tried again every {} ms",
                            self.describe(),
                            link::explain(&self.options, &e),
                            self.options.retry_after.as_millis()
                        ),
                    );
                }
                Err(StorageError::Unavailable(format!("{}: {e}", self.location)))
            }
            // Up, but not serving now (a long script, loading its data, a
            // cluster failing over): this request fails, the next may not.
            Err(e) if e.code().is_some_and(|code| TRANSIENT.contains(&code)) => {
                Err(StorageError::Unavailable(format!("{}: {e}", self.location)))
            }
            Err(e) => Err(StorageError::Io(format!("{} refused a command: {e}", self.location))),
        }
    }

    /// `f` on `con`, which is kept for the next call unless it failed in a
    /// way that may leave it out of step.
    fn run_on<T>(
        &mut self,
        mut con: Link,
        f: &mut dyn FnMut(&mut Link, &Scripts) -> Result<T, RedisError>,
    ) -> Result<T, RedisError> {
        let result = f(&mut con, &self.scripts);
        if !result.as_ref().is_err_and(unreachable) {
            self.connection = Some(con);
        }
        result
    }

    fn open_connection(&self) -> Result<Link, RedisError> {
        self.client.open(self.options.timeout)
    }

    /// Log that the server went (`down`) or came back, once for the
    /// process: the stores of a pool of cores each see the same outage,
    /// and the first to see each change says it.
    fn log_once(&self, down: bool, kind: &'static str, message: fmt::Arguments<'_>) {
        static DOWN: std::sync::Mutex<BTreeSet<String>> = std::sync::Mutex::new(BTreeSet::new());
        // A poisoned set is still a set of names.
        let mut known = DOWN.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let changed = if down { known.insert(self.describe()) } else { known.remove(&self.describe()) };
        drop(known);
        if changed {
            self.log(kind, message);
        }
    }

    fn log(&self, kind: &'static str, message: fmt::Arguments<'_>) {
        if self.throttle.allow(kind, Instant::now()) {
            tracing::warn!("{message}");
        }
    }

    /// `put`, `put_expiring` (with an expiry in Unix seconds) or, with
    /// `only_if_absent`, `put_if_absent`: one script.
    fn write(
        &mut self,
        table: &str,
        key: &[u8],
        value: &[u8],
        expires_at: Option<u64>,
        only_if_absent: bool,
    ) -> Result<Option<Vec<u8>>, StorageError> {
        check_sizes(table, key, Some(value))?;
        let keys = self.keys(table)?;
        self.register(table)?;
        self.call(|con, s| ScriptCall::put(&s.put, &keys, key, value, expires_at, only_if_absent).invoke(con))
    }

    /// Name `table` in the registry, once per table and process.
    fn register(&mut self, table: &str) -> Result<(), StorageError> {
        if !self.registered.contains(table) {
            let registry = layout::registry(&self.options.prefix);
            let () = self.call(|con, _| redis::cmd("SADD").arg(&registry).arg(table).query(con))?;
            self.registered.insert(table.to_owned());
        }
        Ok(())
    }

    /// The keys of `table`, once its name is known to fit the layout.
    fn keys(&self, table: &str) -> Result<TableKeys, StorageError> {
        if !layout::table_name_ok(table) {
            return Err(StorageError::Io(format!("table name {table:?} cannot be stored in Redis ('{{' or '}}')")));
        }
        Ok(TableKeys::new(&self.options.prefix, table))
    }
}

impl Storage for RedisStorage {
    fn get(&mut self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        check_sizes(table, key, None)?;
        let name = self.keys(table)?.value(key);
        self.call(|con, _| redis::cmd("GET").arg(&name).query(con))
    }

    fn put(&mut self, table: &str, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        self.write(table, key, value, None, false).map(drop)
    }

    fn put_expiring(&mut self, table: &str, key: &[u8], value: &[u8], expires_at: u64) -> Result<(), StorageError> {
        self.write(table, key, value, Some(expires_at), false).map(drop)
    }

    fn put_if_absent(&mut self, table: &str, key: &[u8], value: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.write(table, key, value, None, true)
    }

    fn delete(&mut self, table: &str, key: &[u8]) -> Result<bool, StorageError> {
        check_sizes(table, key, None)?;
        let keys = self.keys(table)?;
        let deleted: u64 = self.call(|con, s| ScriptCall::delete(&s.delete, &keys, key).invoke(con))?;
        Ok(deleted > 0)
    }

    fn scan(&mut self, table: &str, after: Option<&[u8]>, limit: u32) -> Result<Vec<Entry>, StorageError> {
        check_sizes(table, after.unwrap_or_default(), None)?;
        if limit == 0 {
            return Ok(Vec::new());
        }
        let keys = self.keys(table)?;
        let flat: Vec<Vec<u8>> = self.call(|con, s| {
            s.scan
                .key(&keys.idx)
                .key(&keys.len)
                .key(&keys.bytes)
                .key(&keys.value_prefix)
                .arg(u8::from(after.is_some()))
                .arg(after.unwrap_or_default())
                .arg(limit)
                .invoke(con)
        })?;
        if !flat.len().is_multiple_of(2) {
            return Err(StorageError::Io(format!("{}: a scan answered an odd number of items", self.location)));
        }
        let mut entries = Vec::with_capacity(flat.len() / 2);
        let mut items = flat.into_iter();
        while let (Some(key), Some(value)) = (items.next(), items.next()) {
            entries.push((key, value));
        }
        Ok(entries)
    }

    fn stat(&mut self, table: &str) -> Result<TableStat, StorageError> {
        check_sizes(table, b"", None)?;
        let keys = self.keys(table)?;
        let (entries, bytes): (u64, Option<i64>) =
            self.call(|con, _| redis::pipe().cmd("ZCARD").arg(&keys.idx).cmd("GET").arg(&keys.bytes).query(con))?;
        Ok(table_stat(entries, bytes))
    }

    fn get_with_stat(&mut self, table: &str, key: &[u8]) -> Result<(Option<Vec<u8>>, TableStat), StorageError> {
        check_sizes(table, key, None)?;
        let keys = self.keys(table)?;
        let value_key = keys.value(key);
        // One slot (the table's hash tag), so one pipeline even in a cluster.
        let (value, entries, bytes): (Option<Vec<u8>>, u64, Option<i64>) = self.call(|con, _| {
            redis::pipe().cmd("GET").arg(&value_key).cmd("ZCARD").arg(&keys.idx).cmd("GET").arg(&keys.bytes).query(con)
        })?;
        Ok((value, table_stat(entries, bytes)))
    }

    fn apply(&mut self, changes: &[Change]) -> Result<(), StorageError> {
        // All checked before any is sent: a refused change leaves the store
        // as it was.
        let mut keys = Vec::with_capacity(changes.len());
        for change in changes {
            check_sizes(&change.table, &change.key, change.value.as_deref())?;
            keys.push(self.keys(&change.table)?);
        }
        if self.options.cluster || changes.len() < 2 {
            return changes.iter().try_for_each(|change| change.make_on(self));
        }
        for change in changes.iter().filter(|c| c.value.is_some()) {
            self.register(&change.table)?;
        }
        let mut pipe = redis::pipe();
        for (change, keys) in changes.iter().zip(&keys) {
            let call = match &change.value {
                Some(value) => ScriptCall::put(&self.scripts.put, keys, &change.key, value, change.expires_at, false),
                None => ScriptCall::delete(&self.scripts.delete, keys, &change.key),
            };
            call.add_to(&mut pipe);
        }
        self.call(|con, s| match pipe.query::<()>(con) {
            // The server forgot the scripts (restarted, SCRIPT FLUSH): they
            // are loaded and the batch sent again, which makes it once.
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                s.put.prepare_invoke().load(con)?;
                s.delete.prepare_invoke().load(con)?;
                pipe.query(con)
            }
            sent => sent,
        })
    }
}

/// A table's size from Redis's answers; a negative total can only come
/// from someone else's writes.
fn table_stat(entries: u64, bytes: Option<i64>) -> TableStat {
    TableStat { entries, bytes: bytes.map_or(0, |b| u64::try_from(b).unwrap_or(0)) }
}

/// Error replies of a server that is up but cannot serve for now.
const TRANSIENT: [&str; 6] = ["BUSY", "LOADING", "TRYAGAIN", "CLUSTERDOWN", "MASTERDOWN", "READONLY"];

/// Errors after which the connection, and perhaps the server, is gone.
fn unreachable(e: &RedisError) -> bool {
    e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal()
}
