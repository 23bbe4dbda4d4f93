//! The file backend: every table in one redb database, `store.redb`, inside
//! the data directory, so caches and ticket keys survive a restart.
//!
//! redb is an embedded, pure-Rust, ACID key-value store with copy-on-write
//! B-trees: a commit either happens whole or not at all, whatever moment the
//! process dies at. Each core table is a redb table of byte keys and byte
//! values under the name `t/<table>`; the backend's own tables live under
//! `m/`. Prefixing every core table, rather than reserving a prefix the core
//! must avoid, means no core name can collide with the metadata, so there is
//! no name to refuse and no error variant for it.
//!
//! The file is opened through a [`cap_std::fs::Dir`], the data directory
//! opened once before chroot(2): the backend never resolves a path outside
//! it, and keeps working inside the jail.
//!
//! `stat` is answered from memory. Per-table entry and byte counters live in
//! the `m/stat` table, are updated in the same write transaction as the put
//! or delete they count (so a crash cannot separate them from the data), are
//! read once at open, and are then kept in a map. Counting on demand was
//! rejected: the core calls `stat` on every update, and a count walks the
//! whole table.
//!
//! # Durability
//!
//! Writes to the tables named in [`FileOptions::durable_tables`] (the
//! ticket-key table: a key handed to a client must survive a SIGKILL a
//! moment later) are each one write transaction, committed with
//! [`Durability::Immediate`]: on disk, with every write before them, when
//! the call returns.
//!
//! Writes to any other table (the session caches) are held in an
//! [`Overlay`] in memory, which reads consult first, and are committed in one
//! transaction at the next durable commit: a ticket-key write, or the flush
//! the host makes about once a second and at shutdown, and which `Drop`
//! attempts. Should the overlay reach [`OVERLAY_LIMIT`] bytes or
//! [`OVERLAY_DELETES`] deletes first, it asks to be committed early
//! ([`Storage::wants_commit`]) with [`Durability::None`] (crash-consistent,
//! not fsynced), which bounds its memory and the work a scan wastes stepping
//! over deleted keys. A crash loses the writes made since the last durable
//! commit, and leaves the file at that commit, consistent with its
//! counters; losing recent sessions only costs clients a full handshake.
//!
//! The host makes both kinds of commit detached ([`Storage::start_commit`]):
//! the overlay is moved aside, still read beneath the new one, and the
//! transaction is begun at once but written out and committed by the
//! caller after it has let go of the core. Reads meanwhile use redb's last
//! commit plus the two overlays, so requests never wait for the disk. The
//! transaction is begun while the caller still holds the core, so that
//! redb's single writer orders it before any inline commit that follows;
//! an inline commit (a ticket-key write, or an overlay grown to
//! [`OVERLAY_SLACK`] times its limits because nobody committed it) writes
//! the detached writes again beneath its own, so they can never land after
//! newer ones whatever the detached commit's fate. A detached commit that
//! fails gives its writes back to the overlay.
//!
//! Rejected: a transaction per write. Even without an fsync, a redb commit
//! costs about 10 us, three of them per cached session (the session, its
//! age-index entry, the old index entry's removal); the overlay costs under
//! 1 us a write and commits 10 000 of them in about 15 ms. Also rejected: an
//! fsync per cached session, which would bound the cache by the disk's flush
//! rate.
//!
//! Durable commits use two-phase commit (two fsyncs rather than one). They are
//! rare (key rotation, flushes), and it closes the window redb documents in
//! which a crash during the single fsync could let a partly written commit
//! pass its checksum.
//!
//! A failed write (a full disk, an I/O error) latches redb: it refuses
//! every later call until the database is reopened. The backend therefore
//! reopens the file before the next call after any I/O error, keeping the
//! overlay and the counters, which a failed commit never changes; while the
//! reopen fails it is retried at most once a second, and calls fail with
//! [`StorageError::Unavailable`] meanwhile. Requests fail cleanly while the
//! disk is bad and the store comes back with it, without a restart.
//! [`super::faulty`] puts the file behind a switch to show this in tests.
//!
//! Every open runs redb's integrity check, which verifies the checksum of
//! every page and is also what recovers from a crash: a damaged file is
//! refused with [`OpenError::Corrupt`]. A plain open, the rejected
//! alternative, trusts a cleanly closed file and may panic on one damaged
//! behind redb's back.
//!
//! # Security
//!
//! The file holds whatever values it is given, as given: the daemon puts
//! [`super::sealed::Sealed`] in front of it, so that what reaches the disk
//! is sealed under a key kept outside the file. It is created with mode
//! 0600; opening refuses a file that is group- or world-accessible or not a
//! regular file, does not follow a symbolic link at `store.redb`, and refuses
//! a data directory that group or others may access (whoever can write to it
//! can delete the store or roll it back to an older copy; sealing keeps them
//! from reading it or choosing its ticket keys, not from that).
//! [`FileStorage::open_path`] also creates the directory with mode 0700 and
//! refuses one that is a symbolic link. Ownership is not checked: the host
//! may open the directory before dropping privileges. Values are never
//! logged, and `Debug` shows only table sizes.
//!
//! Copy-on-write means an overwritten or deleted value stays in a free page
//! of the file until redb reuses the page: deletion does not erase it from
//! the disk; sealed, it stays unreadable without the key-encryption key.
//! redb's page cache holds values in memory without zeroizing them (sealed
//! too): whoever can read the process memory can also read the key.
//!
//! # Limitations
//!
//! One process at a time: redb locks the file, and a second open, from
//! another daemon or this one, is refused with [`OpenError::Locked`].
//!
//! Opening reads the whole file and commits (the integrity check): a few
//! milliseconds for a few megabytes. An inline commit holds the core for as
//! long as it takes (about 15 ms per 10 000 overlay writes, plus two fsyncs
//! when durable), and waits first for a detached commit still running: a
//! ticket-key write during a flush waits for the flush's fsync.
//!
//! Pages freed by a commit are reused only after a durable one, so commits
//! between flushes grow the file: rewriting 10 000 sessions of 140 bytes
//! (1.4 MiB) twice between flushes left a 2 MiB file, and again flushing every
//! 1 000 writes, 4 MiB. The file is at least about 1 MiB, open or closed.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cap_std::fs::{Dir, MetadataExt, OpenOptions, OpenOptionsExt};
use redb::{
    Database, DatabaseError, Durability, ReadableDatabase, ReadableTable, TableDefinition, TableError, TableHandle,
    WriteTransaction,
};

use super::faulty::FaultyDisk;
use super::overlay::{Known, Overlay};
use super::{Commit, Committed, Entry, Storage, StorageError, TableStat, check_sizes};

/// The database file's name inside the data directory.
pub const FILE_NAME: &str = "store.redb";

/// Prefix of the redb table that holds each core table.
const CORE_PREFIX: &str = "t/";
/// Per-table `(entries, bytes)` counters, keyed by the core's table name.
const STAT_TABLE: TableDefinition<&str, (u64, u64)> = TableDefinition::new("m/stat");
/// The layout version, under [`FORMAT_KEY`].
const META_TABLE: TableDefinition<&str, u64> = TableDefinition::new("m/meta");
const FORMAT_KEY: &str = "format";
/// Bumped when the table layout changes, so an old binary refuses a newer
/// store instead of misreading it.
const FORMAT: u64 = 1;

/// How [`FileStorage`] opens and commits.
#[derive(Debug, Clone)]
pub struct FileOptions {
    /// Tables (exact core names) whose writes are on disk when `put` or
    /// `delete` returns; every other table's writes wait for a flush.
    pub durable_tables: Vec<String>,
    /// How messages name the data directory (the path the host opened it
    /// by): a directory handle has no name of its own, and inside a chroot
    /// none can be looked up.
    pub location: String,
    /// Most memory redb may use to cache pages. redb's own default is 1 GiB;
    /// a daemon should not grow that large for a cache the core bounds far
    /// below it.
    pub cache_bytes: usize,
    /// Put the file behind this switch (fault-injection tests only).
    pub disk: Option<FaultyDisk>,
}

impl Default for FileOptions {
    fn default() -> Self {
        Self {
            durable_tables: Vec::new(),
            location: "the data directory".to_owned(),
            cache_bytes: 32 * 1024 * 1024,
            disk: None,
        }
    }
}

/// Why the store could not be opened. Each message names the file or
/// directory and says what the operator can do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// Another process, or another handle in this one, has the store open.
    #[error(
        "{FILE_NAME} in {location} is in use by another process (is another tlskeeper running with this data \
         directory?); stop it first, or give each instance its own data directory"
    )]
    Locked {
        /// The data directory.
        location: String,
    },
    /// The file failed redb's checks: damaged on disk or not a redb file.
    #[error(
        "{FILE_NAME} in {location} is corrupt ({detail}); move it aside (for example to {FILE_NAME}.bad) and \
         restart to begin with an empty store, which costs clients one full handshake each"
    )]
    Corrupt {
        /// The data directory.
        location: String,
        /// What redb found.
        detail: String,
    },
    /// A valid redb file, but written by an incompatible version or not a
    /// tlskeeper store.
    #[error(
        "{FILE_NAME} in {location} is not a store this version of tlskeeper can use ({detail}); run the version \
         that wrote it, or move the file aside to begin with an empty store"
    )]
    Incompatible {
        /// The data directory.
        location: String,
        /// What was found.
        detail: String,
    },
    /// The operating system refused access.
    #[error(
        "cannot open {what}: permission denied ({detail}); it must be owned by, and readable and writable by, the \
         user tlskeeper runs as"
    )]
    PermissionDenied {
        /// The file or directory.
        what: String,
        /// The OS error.
        detail: String,
    },
    /// Group or others may access it; refused rather than used, because the
    /// store holds ticket keys.
    #[error("{what} is accessible to group or others (mode {mode:03o}); run `chmod {wanted:03o}` on it")]
    Insecure {
        /// The file or directory.
        what: String,
        /// Its permission bits.
        mode: u32,
        /// The mode it should have.
        wanted: u32,
    },
    /// A symbolic link where the directory or file should be.
    #[error("{what} is a symbolic link, which tlskeeper does not follow; configure the real path instead")]
    Symlink {
        /// The link.
        what: String,
    },
    /// Something other than a directory or regular file is in the way.
    #[error("{what} is not a {expected}; move it aside")]
    WrongType {
        /// The path.
        what: String,
        /// "directory" or "regular file".
        expected: &'static str,
    },
    /// Any other I/O error.
    #[error("cannot open {what}: {detail}")]
    Io {
        /// The file or directory.
        what: String,
        /// The OS or redb error.
        detail: String,
    },
}

/// How long after a failed reopen the next call tries again; calls in
/// between fail at once. Each attempt reads the whole file (redb's
/// integrity check), which a disk that is still failing must not be made
/// to do on every request.
const REOPEN_INTERVAL: Duration = Duration::from_secs(1);

/// The core's tables in one redb file; see the module docs.
pub struct FileStorage {
    /// The database; `None` only while reopening it after an I/O error
    /// has failed (see [`FileStorage::heal`]).
    db: Option<Database>,
    /// The data directory, kept to reopen the file after an I/O error.
    dir: Dir,
    /// Page-cache size, for a reopen.
    cache_bytes: usize,
    /// The switch the file sits behind, in fault-injection tests.
    disk: Option<FaultyDisk>,
    /// Set by any redb I/O error: redb refuses every call after a failed
    /// write (`PreviousIo`) until the database is reopened.
    suspect: Cell<bool>,
    /// After a failed reopen, when the next attempt may be made.
    retry_at: Option<Instant>,
    /// Counters of every table ever written, keyed by core name; a table
    /// not here is empty. A `BTreeMap` so `Debug` lists them in order.
    stats: BTreeMap<String, TableStat>,
    durable_tables: Vec<String>,
    /// Writes to non-durable tables not yet committed; the counters in
    /// `stats` already include them.
    overlay: Overlay,
    /// The writes of a detached commit that has not reported back: read
    /// beneath `overlay`, and written again by any inline commit meanwhile.
    committing: Option<InFlight>,
    /// The number the next detached commit gets.
    next_commit: u64,
    /// True after a non-durable commit that no durable commit has followed.
    pending: bool,
    location: String,
}

/// A commit started by [`Storage::start_commit`] and not yet finished.
struct InFlight {
    id: u64,
    writes: Arc<Overlay>,
}

/// A put (`Some(value)`) or delete (`None`) of a key in a table.
type Write<'a> = (&'a str, &'a [u8], Option<&'a [u8]>);

/// Bytes of keys and values in the overlay at which it asks to be
/// committed ahead of the next flush ([`Storage::wants_commit`]): about
/// 16 000 sealed sessions with their index entries, a fraction of a second
/// of updates at full speed.
const OVERLAY_LIMIT: usize = 4 * 1024 * 1024;

/// Deletes in the overlay at which it asks to be committed. A scan steps
/// over every key deleted in the overlay, and a housekeeping sweep deletes
/// the front of the very range it scans next: unbounded, each batch of a
/// million-entry sweep walked over all the earlier ones (measured: 32 s for
/// the sweep, p99 near a second). At 1 024 a scan wastes well under a
/// millisecond.
const OVERLAY_DELETES: usize = 1024;

/// How far past its limits the overlay may grow while nobody commits it
/// (no host running detached commits, or one still running) before a write
/// commits it inline, holding up the core for the commit: the hard bound
/// on the overlay's memory and on a scan's wasted steps.
const OVERLAY_SLACK: usize = 4;

impl fmt::Debug for FileStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Sizes only: values are secret.
        let mut d = f.debug_struct("FileStorage");
        d.field("location", &self.location)
            .field("pending", &self.pending)
            .field("overlay_bytes", &self.overlay.bytes())
            .field("committing", &self.committing.as_ref().map(|c| c.id));
        for (name, s) in &self.stats {
            d.field(name, &(s.entries, s.bytes));
        }
        d.finish()
    }
}

fn core_table(table: &str) -> String {
    format!("{CORE_PREFIX}{table}")
}

fn entry_bytes(key: &[u8], value_len: usize) -> u64 {
    (key.len() + value_len) as u64
}

/// Update `stat` for replacing the value of length `old` under `key` (none:
/// the key was absent) with one of length `new` (none: a delete).
///
/// Saturating: the counters can only be off if the file was edited behind
/// redb's back, and a wrong size is better than a panic in the daemon.
fn account(stat: &mut TableStat, key: &[u8], old: Option<usize>, new: Option<usize>) {
    if let Some(old) = old {
        stat.entries = stat.entries.saturating_sub(1);
        stat.bytes = stat.bytes.saturating_sub(entry_bytes(key, old));
    }
    if let Some(new) = new {
        stat.entries = stat.entries.saturating_add(1);
        stat.bytes = stat.bytes.saturating_add(entry_bytes(key, new));
    }
}

impl FileStorage {
    /// Open, or create, `store.redb` inside `dir`.
    ///
    /// # Errors
    ///
    /// [`OpenError`], whose message names the file and the fix;
    /// [`OpenError::Insecure`] when group or others may access `dir`.
    pub fn open(dir: &Dir, options: FileOptions) -> Result<Self, OpenError> {
        let FileOptions { durable_tables, location, cache_bytes, disk } = options;
        // Whoever can write to the directory can delete the file or swap in
        // an older copy; refuse before touching it.
        let dir_what = format!("data directory {location}");
        let dir_meta = dir.dir_metadata().map_err(|e| io_error(&dir_what, e))?;
        if dir_meta.mode() & 0o077 != 0 {
            return Err(OpenError::Insecure { what: dir_what, mode: dir_meta.mode() & 0o7777, wanted: 0o700 });
        }
        let db = open_db(dir, &location, cache_bytes, disk.as_ref())?;
        let stats = load_stats(&db, &location)?;
        Ok(Self {
            db: Some(db),
            dir: dir.try_clone().map_err(|e| io_error(&dir_what, e))?,
            cache_bytes,
            disk,
            suspect: Cell::new(false),
            retry_at: None,
            stats,
            durable_tables,
            overlay: Overlay::default(),
            committing: None,
            next_commit: 0,
            pending: false,
            location,
        })
    }

    /// Open, or create, `store.redb` in the directory at `path`, creating
    /// the directory (mode 0700, parent must exist) if it is missing.
    ///
    /// For tools and tests; the daemon opens its directory once, before
    /// chroot, and calls [`FileStorage::open`]. `options.location` is
    /// replaced by `path`.
    ///
    /// # Errors
    ///
    /// [`OpenError::Symlink`] when the directory is a symbolic link, and
    /// those of [`FileStorage::open`].
    pub fn open_path(path: &Path, options: FileOptions) -> Result<Self, OpenError> {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt as _};

        let what = format!("data directory {}", path.display());
        let io_error = |e| io_error(&what, e);
        match std::fs::DirBuilder::new().mode(0o700).create(path) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(io_error(e)),
            _ => {}
        }
        let link = std::fs::symlink_metadata(path).map_err(io_error)?;
        if link.file_type().is_symlink() {
            return Err(OpenError::Symlink { what });
        }
        if !link.is_dir() {
            return Err(OpenError::WrongType { what, expected: "directory" });
        }
        let dir = Dir::open_ambient_dir(path, cap_std::ambient_authority()).map_err(io_error)?;
        // Check the directory actually opened, not the path: one swapped for
        // a link between the lstat above and the open shows a different inode.
        let meta = dir.dir_metadata().map_err(io_error)?;
        if (meta.dev(), meta.ino()) != (link.dev(), link.ino()) {
            return Err(OpenError::Symlink { what });
        }
        Self::open(&dir, FileOptions { location: path.display().to_string(), ..options })
    }

    /// True when no table holds an entry.
    pub fn is_empty(&self) -> bool {
        self.stats.values().all(|s| s.entries == 0)
    }

    /// The file, as messages name it: `store.redb in <location>`.
    pub fn describe(&self) -> String {
        format!("{FILE_NAME} in {}", self.location)
    }

    /// Whether the sealing layer's key-check record is present (see
    /// [`super::sealed::CHECK_TABLE`]): tells a sealed store whose key is
    /// missing from one that was never sealed.
    pub fn has_check_record(&self) -> bool {
        self.stats.get(super::sealed::CHECK_TABLE).is_some_and(|s| s.entries > 0)
    }

    /// The file's path, for messages that tell the operator to move it.
    pub fn path(&self) -> String {
        format!("{}/{FILE_NAME}", self.location.trim_end_matches('/'))
    }

    /// A redb failure as a storage error naming the file; an I/O error
    /// also marks the database for reopening.
    fn error(&self, e: impl Into<redb::Error>) -> StorageError {
        let e = e.into();
        if matches!(e, redb::Error::Io(_) | redb::Error::PreviousIo) {
            self.suspect.set(true);
        }
        io_failure(&self.describe(), e)
    }

    /// The database, or why there is none.
    fn db(&self) -> Result<&Database, StorageError> {
        self.db.as_ref().ok_or_else(|| {
            StorageError::Unavailable(format!("{} could not be reopened after an I/O error", self.describe()))
        })
    }

    /// After an I/O error, reopen the database before the next call: redb
    /// refuses every call once a write has failed, and a disk that has come
    /// back must bring the store back with it, not need a restart.
    ///
    /// The overlay and the counters are kept: a failed commit changed
    /// neither, so its writes are retried by the next one. Waits while a
    /// detached commit is in flight (its transaction holds the database);
    /// its outcome comes back first. Retried at most every
    /// [`REOPEN_INTERVAL`]; calls in between fail with
    /// [`StorageError::Unavailable`].
    fn heal(&mut self) -> Result<(), StorageError> {
        if !self.suspect.get() || self.committing.is_some() {
            return self.db().map(|_| ());
        }
        if self.retry_at.is_some_and(|at| Instant::now() < at) {
            return Err(StorageError::Unavailable(format!(
                "{} is unavailable after an I/O error; reopening it is retried every {} s",
                self.describe(),
                REOPEN_INTERVAL.as_secs()
            )));
        }
        // The old handle goes first: it holds redb's lock on the file.
        self.db = None;
        match open_db(&self.dir, &self.location, self.cache_bytes, self.disk.as_ref()) {
            Ok(db) => {
                self.db = Some(db);
                self.suspect.set(false);
                if self.retry_at.take().is_some() || !self.overlay.is_empty() {
                    tracing::warn!("{} reopened after an I/O error; uncommitted writes kept", self.describe());
                }
                // Whatever redb had not made durable is made so again.
                self.pending = true;
                Ok(())
            }
            Err(e) => {
                if self.retry_at.is_none() {
                    tracing::error!("{e}; storage calls fail until it can be reopened");
                }
                self.retry_at = Some(Instant::now() + REOPEN_INTERVAL);
                Err(StorageError::Unavailable(e.to_string()))
            }
        }
    }

    /// The counters of `table`, overlay included (zero for a table never
    /// written).
    fn stat_of(&self, table: &str) -> TableStat {
        self.stats.get(table).copied().unwrap_or_default()
    }

    fn is_durable(&self, table: &str) -> bool {
        self.durable_tables.iter().any(|t| t == table)
    }

    /// `read` applied to the value the store (not the overlay) holds under
    /// `key`, if any.
    fn stored<T>(&self, table: &str, key: &[u8], read: impl FnOnce(&[u8]) -> T) -> Result<Option<T>, StorageError> {
        let name = core_table(table);
        let txn = self.db()?.begin_read().map_err(|e| self.error(e))?;
        let t = match txn.open_table(TableDefinition::<&[u8], &[u8]>::new(&name)) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(self.error(e)),
        };
        Ok(t.get(key).map_err(|e| self.error(e))?.map(|v| read(v.value())))
    }

    /// `read` applied to the value under `key`, if any: the overlay's, else
    /// that of the commit in flight, else the store's.
    fn current<T>(&self, table: &str, key: &[u8], read: impl FnOnce(&[u8]) -> T) -> Result<Option<T>, StorageError> {
        let mut known = self.overlay.get(table, key);
        if let (Known::Unknown, Some(committing)) = (known, &self.committing) {
            known = committing.writes.get(table, key);
        }
        match known {
            Known::Value(value) => Ok(Some(read(value))),
            Known::Deleted => Ok(None),
            Known::Unknown => self.stored(table, key, read),
        }
    }

    /// Commit the overlay inline once it holds [`OVERLAY_SLACK`] times its
    /// limits: nobody has taken the hint of [`Storage::wants_commit`]. Called
    /// before a write is applied, so that a failure leaves the write undone
    /// and the overlay no larger.
    fn make_room(&mut self) -> Result<(), StorageError> {
        if self.overlay.bytes() < OVERLAY_LIMIT * OVERLAY_SLACK
            && self.overlay.deletes() < OVERLAY_DELETES * OVERLAY_SLACK
        {
            return Ok(());
        }
        self.commit(false, None).map(|_| ())
    }

    /// One write transaction, inline: the writes of a detached commit still
    /// in flight (so that they can never land after newer ones), the
    /// overlay, then `write` (a put of a value or a delete) if given, and the
    /// counters of every table they touch; durable (two-phase, fsynced) or
    /// not. Waits for a detached commit to finish first: redb has one writer
    /// at a time. Returns whether `write` found its key. Memory is changed
    /// only once the commit has succeeded, so a failed commit leaves the
    /// overlay to be retried and the counters as they were.
    fn commit(&mut self, durable: bool, write: Option<Write<'_>>) -> Result<bool, StorageError> {
        let mut txn = begin(self.db()?, durable).map_err(|e| self.error(e))?;
        let in_flight = self.committing.as_ref().map(|c| &*c.writes);
        let mut counters: Vec<(&str, TableStat)> = Vec::new();
        for overlay in in_flight.into_iter().chain([&self.overlay]) {
            for table in apply(&mut txn, overlay).map_err(|e| self.error(e))? {
                counters.push((table, self.stat_of(table)));
            }
        }
        // `write`'s table, its new counters, and whether it found its key.
        let written = match write {
            Some((table, key, value)) => {
                let mut stat = self.stat_of(table);
                let name = core_table(table);
                let mut t = txn.open_table(TableDefinition::<&[u8], &[u8]>::new(&name)).map_err(|e| self.error(e))?;
                let old_len = match value {
                    Some(value) => t.insert(key, value),
                    None => t.remove(key),
                }
                .map_err(|e| self.error(e))?
                .map(|old| old.value().len());
                account(&mut stat, key, old_len, value.map(<[u8]>::len));
                Some((table, stat, old_len.is_some()))
            }
            None => None,
        };
        let all_counters = counters.into_iter().chain(written.map(|(table, stat, _)| (table, stat)));
        save_counters(&txn, all_counters).map_err(|e| self.error(e))?;
        txn.commit().map_err(|e| self.error(e))?;
        if let Some((table, stat, _)) = written {
            self.stats.insert(table.to_owned(), stat);
        }
        self.overlay.clear();
        // A detached commit still running wrote, or will write, nothing
        // this one has not: its outcome no longer matters.
        self.committing = None;
        // A durable commit also makes every earlier non-durable one durable.
        self.pending = !durable;
        Ok(written.is_some_and(|(_, _, found)| found))
    }
}

/// A write transaction, durable (two-phase: two fsyncs) or not (no fsync).
fn begin(db: &Database, durable: bool) -> Result<WriteTransaction, redb::Error> {
    let mut txn = db.begin_write()?;
    if durable {
        txn.set_two_phase_commit(true);
    } else {
        txn.set_durability(Durability::None)?;
    }
    Ok(txn)
}

/// Write every put and delete `overlay` holds into `txn`; the names of the
/// tables touched.
fn apply<'o>(txn: &mut WriteTransaction, overlay: &'o Overlay) -> Result<Vec<&'o str>, redb::Error> {
    let mut touched = Vec::new();
    for (table, writes) in overlay.tables() {
        let name = core_table(table);
        let mut t = txn.open_table(TableDefinition::<&[u8], &[u8]>::new(&name))?;
        for (key, value) in writes {
            match value {
                Some(value) => t.insert(key, value).map(|_| ())?,
                None => t.remove(key).map(|_| ())?,
            }
        }
        touched.push(table);
    }
    Ok(touched)
}

/// Record per-table counters in `txn`.
fn save_counters<'t>(
    txn: &WriteTransaction,
    counters: impl IntoIterator<Item = (&'t str, TableStat)>,
) -> Result<(), redb::Error> {
    let mut stats = txn.open_table(STAT_TABLE)?;
    for (table, stat) in counters {
        stats.insert(table, (stat.entries, stat.bytes))?;
    }
    Ok(())
}

/// A storage I/O error naming the file.
fn io_failure(file: &str, e: impl fmt::Display) -> StorageError {
    StorageError::Io(format!("{file}: {e}"))
}

/// Open, or create, the database file in `dir`, with the checks of
/// [`FileStorage::open`]: not a link, a regular file, mode 0600.
fn open_db(dir: &Dir, location: &str, cache_bytes: usize, disk: Option<&FaultyDisk>) -> Result<Database, OpenError> {
    let what = format!("{FILE_NAME} in {location}");
    let io_error = |e: io::Error| match e.raw_os_error() {
        Some(libc::ELOOP) => OpenError::Symlink { what: what.clone() },
        Some(libc::EISDIR) => OpenError::WrongType { what: what.clone(), expected: "regular file" },
        _ => io_error(&what, e),
    };

    // O_NOFOLLOW: cap-std already keeps a link from leading out of the
    // directory; this also refuses one that points at another file in it.
    let file = dir
        .open_with(
            FILE_NAME,
            OpenOptions::new().read(true).write(true).create(true).mode(0o600).custom_flags(libc::O_NOFOLLOW),
        )
        .map_err(io_error)?;
    let meta = file.metadata().map_err(io_error)?;
    if !meta.is_file() {
        return Err(OpenError::WrongType { what, expected: "regular file" });
    }
    if meta.mode() & 0o077 != 0 {
        return Err(OpenError::Insecure { what, mode: meta.mode() & 0o7777, wanted: 0o600 });
    }

    let backend = redb::backends::FileBackend::new(file.into_std()).map_err(|e| db_error(location, e))?;
    let mut builder = redb::Builder::new();
    builder
        .set_cache_size(cache_bytes)
        // Verify every page: a plain open trusts a cleanly closed file and
        // may panic on one damaged behind redb's back.
        .set_check_integrity_on_open(true);
    match disk {
        Some(disk) => builder.create_with_backend(disk.wrap(backend)),
        None => builder.create_with_backend(backend),
    }
    .map_err(|e| db_error(location, e))
}

/// Check the layout version, record it in a new store, and read the
/// counters.
fn load_stats(db: &Database, location: &str) -> Result<BTreeMap<String, TableStat>, OpenError> {
    let err =
        |e: &dyn fmt::Display| OpenError::Io { what: format!("{FILE_NAME} in {location}"), detail: e.to_string() };
    let incompatible = |detail: String| OpenError::Incompatible { location: location.to_owned(), detail };
    let txn = db.begin_write().map_err(|e| err(&e))?;
    let mut stats = BTreeMap::new();
    let created = {
        let mut meta = txn.open_table(META_TABLE).map_err(|e| err(&e))?;
        let format = meta.get(FORMAT_KEY).map_err(|e| err(&e))?.map(|g| g.value());
        let created = match format {
            Some(FORMAT) => false,
            Some(other) => return Err(incompatible(format!("layout version {other}, this version reads {FORMAT}"))),
            None => {
                let foreign = txn
                    .list_tables()
                    .map_err(|e| err(&e))?
                    .map(|t| t.name().to_owned())
                    .find(|name| name != "m/meta" && name != "m/stat");
                if let Some(name) = foreign {
                    return Err(incompatible(format!("no tlskeeper layout version, but a table named {name:?}")));
                }
                meta.insert(FORMAT_KEY, FORMAT).map_err(|e| err(&e))?;
                true
            }
        };
        let table = txn.open_table(STAT_TABLE).map_err(|e| err(&e))?;
        for row in table.iter().map_err(|e| err(&e))? {
            let (name, counts) = row.map_err(|e| err(&e))?;
            let (entries, bytes) = counts.value();
            stats.insert(name.value().to_owned(), TableStat { entries, bytes });
        }
        created
    };
    if created {
        txn.commit().map_err(|e| err(&e))?;
    } else {
        txn.abort().map_err(|e| err(&e))?;
    }
    Ok(stats)
}

fn io_error(what: &str, e: io::Error) -> OpenError {
    match e.kind() {
        io::ErrorKind::PermissionDenied => OpenError::PermissionDenied { what: what.to_owned(), detail: e.to_string() },
        _ => OpenError::Io { what: what.to_owned(), detail: e.to_string() },
    }
}

fn db_error(location: &str, e: DatabaseError) -> OpenError {
    let location = location.to_owned();
    match e {
        DatabaseError::DatabaseAlreadyOpen | DatabaseError::LockProtocolMismatch => OpenError::Locked { location },
        DatabaseError::UpgradeRequired(v) => {
            OpenError::Incompatible { location, detail: format!("redb file format {v}; needs a manual upgrade") }
        }
        DatabaseError::Storage(redb::StorageError::Corrupted(detail)) => OpenError::Corrupt { location, detail },
        DatabaseError::Storage(redb::StorageError::Io(e)) if e.kind() == io::ErrorKind::PermissionDenied => {
            OpenError::PermissionDenied { what: format!("{FILE_NAME} in {location}"), detail: e.to_string() }
        }
        // A file too short or too garbled for redb to parse comes back as
        // an I/O error of these kinds rather than as corruption.
        DatabaseError::Storage(redb::StorageError::Io(e))
            if matches!(e.kind(), io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof) =>
        {
            OpenError::Corrupt { location, detail: e.to_string() }
        }
        other => OpenError::Io { what: format!("{FILE_NAME} in {location}"), detail: other.to_string() },
    }
}

impl Drop for FileStorage {
    fn drop(&mut self) {
        if let Err(e) = self.flush() {
            tracing::warn!("could not flush the store on close; recent session-cache writes may be lost: {e}");
        }
    }
}

impl Storage for FileStorage {
    fn get(&mut self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        check_sizes(table, key, None)?;
        self.heal()?;
        self.current(table, key, <[u8]>::to_vec)
    }

    fn put(&mut self, table: &str, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        check_sizes(table, key, Some(value))?;
        self.heal()?;
        if self.is_durable(table) {
            return self.commit(true, Some((table, key, Some(value)))).map(|_| ());
        }
        let old_len = self.current(table, key, <[u8]>::len)?;
        self.make_room()?;
        account(self.stats.entry(table.to_owned()).or_default(), key, old_len, Some(value.len()));
        self.overlay.put(table, key, value);
        Ok(())
    }

    fn delete(&mut self, table: &str, key: &[u8]) -> Result<bool, StorageError> {
        check_sizes(table, key, None)?;
        self.heal()?;
        // Looked up first, whatever the table, so that deleting what is not
        // there writes nothing (and creates no table).
        let Some(old_len) = self.current(table, key, <[u8]>::len)? else {
            return Ok(false);
        };
        if self.is_durable(table) {
            return self.commit(true, Some((table, key, None)));
        }
        self.make_room()?;
        account(self.stats.entry(table.to_owned()).or_default(), key, Some(old_len), None);
        self.overlay.delete(table, key);
        Ok(true)
    }

    fn scan(&mut self, table: &str, after: Option<&[u8]>, limit: u32) -> Result<Vec<Entry>, StorageError> {
        check_sizes(table, after.unwrap_or_default(), None)?;
        self.heal()?;
        let name = core_table(table);
        let txn = self.db()?.begin_read().map_err(|e| self.error(e))?;
        let t = match txn.open_table(TableDefinition::<&[u8], &[u8]>::new(&name)) {
            Ok(t) => Some(t),
            Err(TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(self.error(e)),
        };
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        let range = t.as_ref().map(|t| t.range::<&[u8]>((lower, Bound::Unbounded))).transpose();
        let rows = range.map_err(|e| self.error(e))?.into_iter().flatten().map(|row| {
            let (k, v) = row.map_err(|e| self.error(e))?;
            Ok((k.value().to_vec(), v.value().to_vec()))
        });
        match &self.committing {
            Some(c) => self.overlay.scan(table, after, limit as usize, c.writes.merge(table, after, rows)),
            None => self.overlay.scan(table, after, limit as usize, rows),
        }
    }

    fn stat(&mut self, table: &str) -> Result<TableStat, StorageError> {
        check_sizes(table, &[], None)?;
        Ok(self.stat_of(table))
    }

    fn flush(&mut self) -> Result<(), StorageError> {
        if !self.pending && self.overlay.is_empty() && self.committing.is_none() {
            return Ok(());
        }
        self.heal()?;
        // A durable commit of the overlay: redb writes out every earlier
        // non-durable commit with it.
        self.commit(true, None).map(|_| ())
    }

    fn wants_commit(&self) -> bool {
        self.committing.is_none()
            && (self.overlay.bytes() >= OVERLAY_LIMIT || self.overlay.deletes() >= OVERLAY_DELETES)
    }

    fn start_commit(&mut self, durable: bool) -> Result<Option<Commit>, StorageError> {
        if self.committing.is_some() || (self.overlay.is_empty() && !(durable && self.pending)) {
            return Ok(None);
        }
        self.heal()?;
        // Begun now, while the caller holds the core: redb's single writer
        // then orders this commit before any inline one that follows.
        let mut txn = begin(self.db()?, durable).map_err(|e| self.error(e))?;
        let writes = Arc::new(std::mem::take(&mut self.overlay));
        let counters: Vec<(String, TableStat)> =
            writes.tables().map(|(table, _)| (table.to_owned(), self.stat_of(table))).collect();
        let id = self.next_commit;
        self.next_commit += 1;
        self.committing = Some(InFlight { id, writes: Arc::clone(&writes) });
        // Set back on failure, in `finish_commit`.
        self.pending = !durable;
        let file = self.describe();
        let work = move || -> Result<(), redb::Error> {
            apply(&mut txn, &writes)?;
            save_counters(&txn, counters.iter().map(|(table, stat)| (table.as_str(), *stat)))?;
            Ok(txn.commit()?)
        };
        Ok(Some(Commit::new(id, move || work().map_err(|e| io_failure(&file, e)))))
    }

    fn finish_commit(&mut self, done: Committed) -> Result<(), StorageError> {
        // Not in flight any more: an inline commit wrote its writes since.
        let Some(in_flight) = self.committing.take_if(|c| c.id == done.id) else {
            return Ok(());
        };
        done.result.inspect_err(|_| {
            // Nearly always I/O; a needless reopen costs one integrity check.
            self.suspect.set(true);
            let writes = Arc::try_unwrap(in_flight.writes).unwrap_or_else(|shared| (*shared).clone());
            self.overlay.absorb_under(writes);
            self.pending = true;
        })
    }
}

#[cfg(test)]
mod tests;
