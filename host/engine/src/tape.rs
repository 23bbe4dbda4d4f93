//! The tape: what the engine does with each event at the boundary. Off (the
//! usual case), recording it to a trace file, or replaying it from one.
//!
//! Recording and replay share every hook, in [`super::Core`]'s call
//! wrapper and in the import handlers, so the two cannot drift apart: a
//! replayed run passes through exactly the code a recorded run did, with
//! the capabilities swapped for the trace.
//!
//! In replay, each import the guest makes must be the next event of the
//! trace, with the same arguments; the recorded result is returned to the
//! guest. Each export's result and fuel are compared with the recorded
//! [`Return`]. The first difference is kept as a [`Divergence`], and the
//! guest is trapped so that it does nothing more (and is not recovered: the
//! engine leaves a diverged replay as it is, for its report).
//!
//! # Security
//!
//! Recorded events hold secrets; they go only to the trace file (see
//! [`crate::trace`]). Recording copies stored values and seeds into events
//! that are freed without zeroizing: a recording daemon keeps more copies
//! of secrets in its memory than one that does not record. A divergence's
//! description shows byte strings only as their length and a SHA-256
//! fingerprint.
//!
//! # Limitations
//!
//! A write error stops the recording (logged once) rather than the daemon:
//! serving clients matters more than the trace.

use crate::trace::file::TraceWriter;
use crate::trace::{Call, Event, Import, Outcome, Return};

/// What happens to boundary events.
#[derive(Default)]
pub enum Tape {
    /// Nothing: events are not even built.
    #[default]
    Off,
    /// Written to a trace file.
    Record(TraceWriter),
    /// Checked against a trace, whose results are served to the guest.
    Replay(Player),
}

/// The first point where a replay differed from its trace.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Divergence {
    /// The export call it happened in, counting from 1.
    pub call: u64,
    /// That call's export.
    pub export: String,
    /// What the trace says happened next.
    pub expected: String,
    /// What the replayed guest did instead.
    pub actual: String,
}

/// A trace being replayed.
pub struct Player {
    events: Vec<Event>,
    pos: usize,
    compare_fuel: bool,
    calls: u64,
    export: &'static str,
    divergence: Option<Divergence>,
    /// Fuel of replayed calls, and of the same calls as recorded.
    pub fuel: (u64, u64),
}

impl Player {
    /// Replay `events`. `compare_fuel` is for the same component and
    /// wasmtime as recorded: any other build uses other amounts of fuel.
    pub fn new(events: Vec<Event>, compare_fuel: bool) -> Player {
        Player { events, pos: 0, compare_fuel, calls: 0, export: "", divergence: None, fuel: (0, 0) }
    }

    /// The next event, if any.
    pub fn peek(&self) -> Option<&Event> {
        self.events.get(self.pos)
    }

    /// Export calls replayed so far.
    pub fn calls(&self) -> u64 {
        self.calls
    }

    /// The first divergence, once there is one.
    pub fn divergence(&self) -> Option<&Divergence> {
        self.divergence.as_ref()
    }

    fn diverge(&mut self, actual: String) {
        if self.divergence.is_none() {
            let expected = self.peek().map_or_else(|| "the end of the trace".to_owned(), describe);
            self.divergence = Some(Divergence { call: self.calls, export: self.export.to_owned(), expected, actual });
        }
    }

    fn trap(&self) -> wasmtime::Error {
        wasmtime::Error::msg("replay diverged from the trace")
    }

    /// A fresh instance must be what the trace has next.
    fn instantiate(&mut self) -> wasmtime::Result<()> {
        if self.divergence.is_some() {
            return Err(self.trap());
        }
        if self.peek() == Some(&Event::Instantiate) {
            self.pos += 1;
            return Ok(());
        }
        self.diverge("a new instance".to_owned());
        Err(self.trap())
    }

    /// An export call must be the trace's next event.
    fn begin(&mut self, call: Call) {
        if self.divergence.is_some() {
            return;
        }
        self.calls += 1;
        self.export = call.export();
        match self.peek() {
            Some(Event::Call(recorded)) if *recorded == call => self.pos += 1,
            _ => self.diverge(describe(&Event::Call(call))),
        }
    }

    /// The call's end must be the trace's next event, with the same result
    /// (and fuel, when comparable).
    fn end(&mut self, ret: Return) {
        if self.divergence.is_some() {
            return;
        }
        match self.peek() {
            Some(Event::Return(recorded)) => {
                let recorded_fuel = recorded.fuel;
                let same = recorded.outcome == ret.outcome && (!self.compare_fuel || recorded_fuel == ret.fuel);
                self.fuel.0 += ret.fuel;
                self.fuel.1 += recorded_fuel;
                if same {
                    self.pos += 1;
                } else {
                    self.diverge(describe(&Event::Return(ret)));
                }
            }
            _ => self.diverge(describe(&Event::Return(ret))),
        }
    }

    /// The guest's import: `matches` accepts the recorded one when its
    /// arguments are the guest's, and gives its result; `actual` describes
    /// what the guest asked for, for the report.
    pub(super) fn import<T>(
        &mut self,
        matches: impl FnOnce(&Import) -> Option<T>,
        actual: impl FnOnce() -> Import,
    ) -> wasmtime::Result<T> {
        if self.divergence.is_some() {
            return Err(self.trap());
        }
        if let Some(Event::Import(recorded)) = self.peek()
            && let Some(result) = matches(recorded)
        {
            self.pos += 1;
            return Ok(result);
        }
        self.diverge(describe_request(&actual()));
        Err(self.trap())
    }
}

impl Tape {
    /// True when events are wanted.
    pub fn active(&self) -> bool {
        !matches!(self, Tape::Off)
    }

    /// The replay state, when replaying.
    pub fn player(&self) -> Option<&Player> {
        match self {
            Tape::Replay(p) => Some(p),
            _ => None,
        }
    }

    fn write(&mut self, event: &Event) {
        if let Tape::Record(writer) = self
            && let Err(e) = writer.write(event)
        {
            tracing::error!("{e}; recording stopped");
            *self = Tape::Off;
        }
    }

    /// A fresh instance is starting.
    pub(super) fn instantiate(&mut self) -> wasmtime::Result<()> {
        match self {
            Tape::Off => Ok(()),
            Tape::Record(_) => {
                self.write(&Event::Instantiate);
                Ok(())
            }
            Tape::Replay(p) => p.instantiate(),
        }
    }

    /// An export call is about to be made.
    pub(super) fn begin(&mut self, call: impl FnOnce() -> Call) {
        match self {
            Tape::Off => {}
            Tape::Record(_) => self.write(&Event::Call(call())),
            Tape::Replay(p) => p.begin(call()),
        }
    }

    /// The export call returned `outcome` using `fuel`.
    pub(super) fn end(&mut self, outcome: impl FnOnce() -> Outcome, fuel: u64) {
        match self {
            Tape::Off => {}
            Tape::Record(_) => self.write(&Event::Return(Return { outcome: outcome(), fuel })),
            Tape::Replay(p) => p.end(Return { outcome: outcome(), fuel }),
        }
    }

    /// The trace has something other than an export call the driver can
    /// make where the next call should be (a file put together by hand or
    /// by another program): reported as a divergence at that position.
    pub fn unexpected_event(&mut self) {
        if let Tape::Replay(p) = self
            && p.divergence.is_none()
        {
            p.calls += 1;
            p.export = match p.peek() {
                Some(Event::Call(call)) => call.export(),
                _ => "(none)",
            };
            p.diverge("nothing: the trace is out of order here, so the replay stops".to_owned());
        }
    }

    /// A live import happened: record it.
    pub(super) fn record(&mut self, import: impl FnOnce() -> Import) {
        if matches!(self, Tape::Record(_)) {
            self.write(&Event::Import(import()));
        }
    }
}

/// Bytes as their length and a fingerprint: enough to tell same from
/// different, and nothing of the bytes themselves (they may be keys,
/// sessions or DRBG output, and reports end up in terminals and CI logs).
fn bytes(b: &[u8]) -> String {
    use sha2::Digest;
    format!("<{} bytes, sha256 {}>", b.len(), hex::encode(&sha2::Sha256::digest(b)[..6]))
}

/// One line for an event, for divergence reports.
pub fn describe(event: &Event) -> String {
    match event {
        Event::Instantiate => "a new instance".to_owned(),
        Event::Call(call) => format!("call {}", describe_call(call)),
        Event::Import(import) => format!("{} -> {}", describe_request(import), describe_result(import)),
        Event::Return(ret) => format!("return {} (fuel {})", describe_outcome(&ret.outcome), ret.fuel),
    }
}

fn describe_call(call: &Call) -> String {
    match call {
        Call::Configure(c) => format!("configure({} caches, ticket cache {:?})", c.caches.len(), c.ticket_cache),
        Call::Seed(n) => format!("seed({n})"),
        Call::Policy(c) => format!("policy({c:?})"),
        Call::Lookup { cache, id } => format!("lookup-session({cache:?}, {id:?})"),
        Call::Update { cache, id, session } => format!("update-session({cache:?}, {id:?}, {})", bytes(session)),
        Call::Delete { cache, id } => format!("delete-session({cache:?}, {id:?})"),
        Call::TicketKey(name) => format!("ticket-key({})", name.as_deref().map_or("none".to_owned(), bytes)),
        Call::Housekeeping => "housekeeping()".to_owned(),
        Call::Stats => "stats()".to_owned(),
        Call::Checkpoint => "checkpoint()".to_owned(),
        Call::Take { cache, id } => format!("take-session({cache:?}, {id:?})"),
        Call::SealTicket(plain) => format!("seal-ticket({})", bytes(plain)),
        Call::OpenTicket(ticket) => format!("open-ticket({})", bytes(ticket)),
        Call::JoinFleet(f) => format!("join-fleet(margin {} s)", f.margin_secs),
    }
}

fn describe_outcome(outcome: &Outcome) -> String {
    fn r<T>(r: &Result<T, crate::CoreError>, ok: impl FnOnce(&T) -> String) -> String {
        match r {
            Ok(v) => format!("ok({})", ok(v)),
            Err(e) => format!("err({e:?})"),
        }
    }
    match outcome {
        Outcome::Configure(x) | Outcome::Update(x) | Outcome::Checkpoint(x) | Outcome::JoinFleet(x) => {
            r(x, |()| String::new())
        }
        Outcome::Seed(x) => r(x, |v| bytes(v)),
        Outcome::Policy(x) => r(x, |p| format!("cachable {}, timeout {}", p.cachable, p.timeout_secs)),
        Outcome::Lookup(x) | Outcome::Take(x) | Outcome::OpenTicket(x) => {
            r(x, |v| v.as_deref().map_or("none".to_owned(), bytes))
        }
        Outcome::SealTicket(x) => r(x, |t| format!("ticket {}, lifetime {}", bytes(&t.ticket), t.lifetime_secs)),
        Outcome::Delete(x) => r(x, |b| b.to_string()),
        Outcome::TicketKey(x) => {
            r(x, |k| k.as_ref().map_or("none".to_owned(), |k| format!("key {} expires {}", bytes(&k.name), k.expires)))
        }
        Outcome::Housekeeping(x) => r(x, |ms| format!("{ms} ms")),
        Outcome::Stats(x) => r(x, |s| format!("{} caches, {} keys minted", s.caches.len(), s.keys_minted)),
        Outcome::Trap(why) => format!("trap: {why}"),
    }
}

/// An import's name and arguments.
fn describe_request(import: &Import) -> String {
    let args = match import {
        Import::ClockNow { .. } | Import::SeedTake { .. } => String::new(),
        Import::EntropyFill { len, .. } => len.to_string(),
        Import::StorageGet { table, key, .. } | Import::StorageDelete { table, key, .. } => {
            format!("{table:?}, {}", bytes(key))
        }
        Import::StoragePut { table, key, value, .. } | Import::StoragePutIfAbsent { table, key, value, .. } => {
            format!("{table:?}, {}, {}", bytes(key), bytes(value))
        }
        Import::StoragePutExpiring { table, key, value, expires_at, .. } => {
            format!("{table:?}, {}, {}, {expires_at}", bytes(key), bytes(value))
        }
        Import::StorageScan { table, after, limit, .. } => {
            format!("{table:?}, after {}, limit {limit}", after.as_deref().map_or("none".to_owned(), bytes))
        }
        Import::StorageStat { table, .. } => format!("{table:?}"),
        Import::StorageGetWithStat { table, key, .. } => format!("{table:?}, {}", bytes(key)),
        Import::StorageApply { changes, .. } => {
            let changes: Vec<String> = changes
                .iter()
                .map(|c| match (&c.value, c.expires_at) {
                    (Some(v), Some(at)) => format!("put {:?} {} {} {at}", c.table, bytes(&c.key), bytes(v)),
                    (Some(v), None) => format!("put {:?} {} {}", c.table, bytes(&c.key), bytes(v)),
                    (None, _) => format!("delete {:?} {}", c.table, bytes(&c.key)),
                })
                .collect();
            changes.join(", ")
        }
        Import::SeedSave { seed, .. } => bytes(seed),
        Import::Log { level, message } => format!("{level:?}, {message:?}"),
    };
    format!("{}({args})", import.name())
}

fn describe_result(import: &Import) -> String {
    match import {
        Import::ClockNow { result } => result.to_string(),
        Import::EntropyFill { result, .. } => bytes(result),
        Import::StorageGet { result, .. } => format!("{:?}", result.as_ref().map(|v| v.as_deref().map(bytes))),
        Import::StoragePut { result, .. }
        | Import::StoragePutExpiring { result, .. }
        | Import::StorageApply { result, .. } => format!("{result:?}"),
        Import::StorageGetWithStat { result, .. } => {
            format!("{:?}", result.as_ref().map(|(v, stat)| (v.as_deref().map(bytes), stat)))
        }
        Import::StoragePutIfAbsent { result, .. } => {
            format!("{:?}", result.as_ref().map(|v| v.as_deref().map(bytes)))
        }
        Import::StorageDelete { result, .. } => format!("{result:?}"),
        Import::StorageScan { result, .. } => match result {
            Ok(entries) => format!("{} entries", entries.len()),
            Err(e) => format!("{e:?}"),
        },
        Import::StorageStat { result, .. } => format!("{result:?}"),
        Import::SeedTake { result } => result.as_deref().map_or("none".to_owned(), bytes),
        Import::SeedSave { result, .. } => format!("{result:?}"),
        Import::Log { .. } => String::new(),
    }
}
