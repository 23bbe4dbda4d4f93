//! Traces: every input that reaches the core, and every output it gives, in
//! the order they happen, so that a run can be replayed bit for bit.
//!
//! The core's only inputs are its export calls' arguments and the results
//! of its imports (clock, entropy, storage, seed file; `log` has no result
//! but is recorded too, as something the core does). The engine writes one
//! [`Event`] for each as it happens ([`crate::Tape`]): an
//! [`Event::Call`] with the export and its arguments, the [`Event::Import`]s
//! the guest makes during it, then an [`Event::Return`] with the result and
//! the fuel it used. [`Event::Instantiate`] marks a fresh instance: the
//! first, and one after every trap.
//!
//! Recording at the WIT boundary, rather than at the protocol or the
//! capability traits, is what makes a trace replayable against another
//! build of the core: the boundary is the contract both builds share.
//!
//! - [`file`]: the file format (postcard frames with checksums);
//! - [`replay`]: running a fresh instance against a trace.
//!
//! # Security
//!
//! A trace holds everything the core saw and said: ticket keys, sessions,
//! entropy and DRBG output, in clear. Trace files are created 0600; treat
//! them like the key-encryption key. Traces read back are untrusted input:
//! the reader bounds every length and never panics on bad bytes.
//!
//! # Limitations
//!
//! Host-side work the core never sees (storage flushes, the sealing layer,
//! socket I/O) is not in a trace.

pub mod file;

use serde::{Deserialize, Serialize};

use crate::bindings::{log, manager, storage};

/// A key and its value, as `storage.scan` returns them.
pub type Entry = (Vec<u8>, Vec<u8>);

/// The WIT package a trace's calls and imports belong to.
pub const WIT_PACKAGE: &str = "tlskeeper:core@0.1.0";

/// The first frame of every trace: what produced it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// SHA-256 of the component that was recorded, hex.
    pub component_sha256: String,
    /// The wasmtime version that ran it.
    pub wasmtime: String,
    /// The engine settings that affect execution (fuel, NaN handling...).
    pub engine: String,
    /// The WIT package of the boundary.
    pub wit: String,
    /// The tlskeeper version that recorded it.
    pub tlskeeper: String,
    /// Fuel granted per call (a call that runs out traps, so replay needs
    /// the same budget).
    pub fuel_per_call: u64,
    /// The core's memory cap, in bytes.
    pub memory_bytes: usize,
}

/// One thing that happened at the boundary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// A fresh instance: the first, or one after a trap.
    Instantiate,
    /// An export call, with its arguments.
    Call(Call),
    /// An import the guest made during the current call, with its result.
    Import(Import),
    /// The current call's result and the fuel it consumed.
    Return(Return),
}

/// An export call and its arguments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Call {
    /// `configure`.
    Configure(manager::Config),
    /// `seed`.
    Seed(u32),
    /// `policy`.
    Policy(String),
    /// `lookup-session`.
    Lookup {
        /// Cache name.
        cache: String,
        /// Session id.
        id: String,
    },
    /// `update-session`.
    Update {
        /// Cache name.
        cache: String,
        /// Session id.
        id: String,
        /// The session.
        session: Vec<u8>,
    },
    /// `delete-session`.
    Delete {
        /// Cache name.
        cache: String,
        /// Session id.
        id: String,
    },
    /// `ticket-key`.
    TicketKey(Option<Vec<u8>>),
    /// `housekeeping`.
    Housekeeping,
    /// `stats`.
    Stats,
    /// `checkpoint`.
    Checkpoint,
    // New exports are appended, so that recorded traces keep their variant
    // numbers.
    /// `take-session`.
    Take {
        /// Cache name.
        cache: String,
        /// Session id.
        id: String,
    },
    /// `seal-ticket`, with the plaintext.
    SealTicket(Vec<u8>),
    /// `open-ticket`, with the ticket.
    OpenTicket(Vec<u8>),
    /// `join-fleet`.
    JoinFleet(manager::FleetConfig),
}

impl Call {
    /// The export's WIT name.
    pub fn export(&self) -> &'static str {
        match self {
            Call::Configure(_) => "configure",
            Call::Seed(_) => "seed",
            Call::Policy(_) => "policy",
            Call::Lookup { .. } => "lookup-session",
            Call::Update { .. } => "update-session",
            Call::Delete { .. } => "delete-session",
            Call::TicketKey(_) => "ticket-key",
            Call::Housekeeping => "housekeeping",
            Call::Stats => "stats",
            Call::Checkpoint => "checkpoint",
            Call::Take { .. } => "take-session",
            Call::SealTicket(_) => "seal-ticket",
            Call::OpenTicket(_) => "open-ticket",
            Call::JoinFleet(_) => "join-fleet",
        }
    }
}

/// What an export call gave back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// `configure`.
    Configure(Result<(), manager::Error>),
    /// `seed`.
    Seed(Result<Vec<u8>, manager::Error>),
    /// `policy`.
    Policy(Result<manager::CachePolicy, manager::Error>),
    /// `lookup-session`.
    Lookup(Result<Option<Vec<u8>>, manager::Error>),
    /// `update-session`.
    Update(Result<(), manager::Error>),
    /// `delete-session`.
    Delete(Result<bool, manager::Error>),
    /// `ticket-key`.
    TicketKey(Result<Option<manager::SessionTicketKey>, manager::Error>),
    /// `housekeeping`.
    Housekeeping(Result<u64, manager::Error>),
    /// `stats`.
    Stats(Result<manager::ManagerStats, manager::Error>),
    /// `checkpoint`.
    Checkpoint(Result<(), manager::Error>),
    /// The call trapped; the message is wasmtime's.
    Trap(String),
    // Appended, as in `Call`.
    /// `take-session`.
    Take(Result<Option<Vec<u8>>, manager::Error>),
    /// `seal-ticket`.
    SealTicket(Result<manager::SealedTicket, manager::Error>),
    /// `open-ticket`.
    OpenTicket(Result<Option<Vec<u8>>, manager::Error>),
    /// `join-fleet`.
    JoinFleet(Result<(), manager::Error>),
}

/// A call's end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Return {
    /// What it gave back.
    pub outcome: Outcome,
    /// Fuel it consumed.
    pub fuel: u64,
}

/// An import the guest made, with its arguments and the host's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Import {
    /// `clock.now`.
    ClockNow {
        /// Nanoseconds since the epoch.
        result: u64,
    },
    /// `entropy.fill`.
    EntropyFill {
        /// Bytes asked for.
        len: u32,
        /// Bytes given.
        result: Vec<u8>,
    },
    /// `storage.get`.
    StorageGet {
        /// Table.
        table: String,
        /// Key.
        key: Vec<u8>,
        /// Answer.
        result: Result<Option<Vec<u8>>, storage::Error>,
    },
    /// `storage.put`.
    StoragePut {
        /// Table.
        table: String,
        /// Key.
        key: Vec<u8>,
        /// Value.
        value: Vec<u8>,
        /// Answer.
        result: Result<(), storage::Error>,
    },
    /// `storage.delete`.
    StorageDelete {
        /// Table.
        table: String,
        /// Key.
        key: Vec<u8>,
        /// Answer.
        result: Result<bool, storage::Error>,
    },
    /// `storage.scan`.
    StorageScan {
        /// Table.
        table: String,
        /// Lower bound (exclusive).
        after: Option<Vec<u8>>,
        /// Most entries.
        limit: u32,
        /// Answer.
        result: Result<Vec<Entry>, storage::Error>,
    },
    /// `storage.stat`.
    StorageStat {
        /// Table.
        table: String,
        /// Answer.
        result: Result<storage::TableStat, storage::Error>,
    },
    /// `seed-file.take`.
    SeedTake {
        /// Answer.
        result: Option<Vec<u8>>,
    },
    /// `seed-file.save`.
    SeedSave {
        /// The seed.
        seed: Vec<u8>,
        /// Answer.
        result: Result<(), String>,
    },
    /// `log.log`.
    Log {
        /// Severity.
        level: log::Level,
        /// Message.
        message: String,
    },
    // New imports are appended, as calls are.
    /// `storage.put-if-absent`.
    StoragePutIfAbsent {
        /// Table.
        table: String,
        /// Key.
        key: Vec<u8>,
        /// Value offered.
        value: Vec<u8>,
        /// Answer: the value already there, if any.
        result: Result<Option<Vec<u8>>, storage::Error>,
    },
    /// `storage.put-expiring`.
    StoragePutExpiring {
        /// Table.
        table: String,
        /// Key.
        key: Vec<u8>,
        /// Value.
        value: Vec<u8>,
        /// The expiry hint, seconds since the epoch.
        expires_at: u64,
        /// Answer.
        result: Result<(), storage::Error>,
    },
    /// `storage.get-with-stat`.
    StorageGetWithStat {
        /// Table.
        table: String,
        /// Key.
        key: Vec<u8>,
        /// Answer: the value, if any, and the table's size.
        result: Result<(Option<Vec<u8>>, storage::TableStat), storage::Error>,
    },
    /// `storage.apply`.
    StorageApply {
        /// The changes, in order.
        changes: Vec<storage::Change>,
        /// Answer.
        result: Result<(), storage::Error>,
    },
}

impl Import {
    /// The import's WIT name.
    pub fn name(&self) -> &'static str {
        match self {
            Import::ClockNow { .. } => "clock.now",
            Import::EntropyFill { .. } => "entropy.fill",
            Import::StorageGet { .. } => "storage.get",
            Import::StoragePut { .. } => "storage.put",
            Import::StorageDelete { .. } => "storage.delete",
            Import::StorageScan { .. } => "storage.scan",
            Import::StorageStat { .. } => "storage.stat",
            Import::SeedTake { .. } => "seed-file.take",
            Import::SeedSave { .. } => "seed-file.save",
            Import::Log { .. } => "log.log",
            Import::StoragePutIfAbsent { .. } => "storage.put-if-absent",
            Import::StoragePutExpiring { .. } => "storage.put-expiring",
            Import::StorageGetWithStat { .. } => "storage.get-with-stat",
            Import::StorageApply { .. } => "storage.apply",
        }
    }
}

#[cfg(test)]
mod tests {
    /// Traces name the WIT package they speak; the constant must follow
    /// the WIT file.
    #[test]
    fn the_recorded_wit_package_is_the_one_in_wit() {
        let wit = include_str!("../../../../wit/tlskeeper.wit");
        assert!(
            wit.contains(&format!("package {};", super::WIT_PACKAGE)),
            "wit/tlskeeper.wit declares another package"
        );
    }
}
