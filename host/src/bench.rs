//! The load generator behind `tlskeeper bench`: N connections to any
//! tlsmgr-compatible socket, each with one request in flight at a time, as
//! Postfix's smtpd and smtp processes talk to tlsmgr.
//!
//! A run is a workload ([`Mix`]), a number of connections, and either a
//! duration or a request count. Each connection times every request from
//! just before it is written to just after its reply is decoded; the report
//! gives requests per second over the whole run and the latency
//! percentiles of all requests together.
//!
//! The same client code measures every server (tlskeeper, Postfix's tlsmgr,
//! a do-nothing floor), so its own cost is the same in every figure: only
//! ratios taken in one run mean much on a shared machine.
//!
//! # Security
//!
//! Sessions and ids are synthetic; replies' secrets (seeds, keys, sessions)
//! are checked for shape and dropped, never printed.
//!
//! # Limitations
//!
//! Latencies are kept one by one (4 bytes each) to compute exact
//! percentiles: a run of 100 million requests needs 400 MB. A connection
//! that fails stops; the others go on, and the failures are counted.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use tlskeeper_protocol::client::{Client, ClientError};
use tlskeeper_protocol::tlsmgr::{Reply, Request, Status};

/// What each connection sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mix {
    /// `seed` of 32 bytes.
    Seed,
    /// `tktkey` for the current encryption key.
    Tktkey,
    /// `tktkey` by name, for a key that exists.
    TktkeyName,
    /// `lookup` of a stored session.
    LookupHit,
    /// `lookup` of an id never stored.
    LookupMiss,
    /// `update` of a 140-byte session under one of 1024 ids.
    Update,
    /// `delete` of an id (present or not).
    Delete,
    /// One smtpd handshake, as five requests: seed, tktkey, tktkey by name,
    /// lookup, update.
    Smtpd,
    /// `tktseal` of a 128-byte plaintext: a TLS server issuing a ticket.
    Seal,
    /// `tktopen` of a ticket sealed at the start: a TLS server resuming.
    Open,
    /// `tktseal` and `tktopen` in turn: a ticket issued and one resumed,
    /// as a server whose worker holds no key pays for each pair.
    Tickets,
}

impl std::fmt::Display for Mix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The name the command line takes, e.g. `lookup-hit`.
        match clap::ValueEnum::to_possible_value(self) {
            Some(v) => f.write_str(v.get_name()),
            None => write!(f, "{self:?}"),
        }
    }
}

/// How to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The server's socket.
    pub socket: PathBuf,
    /// Simultaneous connections.
    pub connections: usize,
    /// Stop after this long...
    pub duration: Option<Duration>,
    /// ...or after this many requests in all.
    pub requests: Option<u64>,
    /// The workload.
    pub mix: Mix,
    /// Session cache name used by lookups and updates.
    pub cache: String,
}

/// What a run measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// The workload.
    pub mix: Mix,
    /// Connections.
    pub connections: usize,
    /// Requests answered as expected.
    pub requests: u64,
    /// Requests answered otherwise, or not at all.
    pub errors: u64,
    /// Wall time of the run, seconds.
    pub seconds: f64,
    /// Requests per second.
    pub rps: f64,
    /// Median latency, microseconds.
    pub p50_us: u32,
    /// 99th percentile latency, microseconds.
    pub p99_us: u32,
    /// Slowest request, microseconds.
    pub max_us: u32,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} mix, {} connection(s): {} requests in {:.2} s = {:.0} req/s; latency p50 {:.3} ms, p99 {:.3} ms, \
             max {:.3} ms; {} error(s)",
            self.mix,
            self.connections,
            self.requests,
            self.seconds,
            self.rps,
            f64::from(self.p50_us) / 1000.0,
            f64::from(self.p99_us) / 1000.0,
            f64::from(self.max_us) / 1000.0,
            self.errors
        )
    }
}

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Neither a duration nor a request count was given, or zero connections.
    #[error("give a duration or a request count, and at least one connection")]
    Unbounded,
    /// The server could not be reached or refused the set-up requests.
    #[error("cannot set up the benchmark on {socket}: {why}")]
    Setup {
        /// The socket.
        socket: PathBuf,
        /// What failed.
        why: String,
    },
}

/// Ids used by lookups and updates: enough that a cache of any size sees
/// replacements rather than one hot entry.
const IDS: u64 = 1024;
/// The size of a session (a typical DER `SSL_SESSION` without a client
/// certificate).
pub const SESSION_BYTES: usize = 140;
/// The size of a ticket's plaintext: about what rustls encodes for a TLS
/// 1.3 session without a client certificate.
pub const TICKET_PLAINTEXT_BYTES: usize = 128;

/// Run the benchmark; `progress` is called from time to time with the
/// requests done so far.
///
/// # Errors
///
/// [`BenchError`] when the run cannot start; failures during the run are
/// counted in the report.
pub fn run(options: &Options, progress: &(dyn Fn(u64) + Sync)) -> Result<Report, BenchError> {
    if options.connections == 0 || (options.duration.is_none() && options.requests.is_none()) {
        return Err(BenchError::Unbounded);
    }
    let setup = |why: String| BenchError::Setup { socket: options.socket.clone(), why };
    // One key name and the stored sessions that every connection can use.
    let mut client = Client::connect(&options.socket).map_err(|e| setup(e.to_string()))?;
    let key_name = match client.request(&Request::TicketKey { key_name: Vec::new() }) {
        Ok(Reply::TicketKey { status: Status::Ok, keybuf }) => {
            crate::keybuf::decode(&keybuf).map(|k| k.name.to_vec()).map_err(|e| setup(e.to_string()))?
        }
        Ok(other) if needs_key(options.mix) => return Err(setup(format!("tktkey answered {:?}", other.status()))),
        Ok(_) => vec![0; 16],
        Err(e) => return Err(setup(e.to_string())),
    };
    if matches!(options.mix, Mix::LookupHit | Mix::Smtpd) {
        for i in 0..IDS {
            let update = update(&options.cache, i);
            match client.request(&update) {
                Ok(r) if r.status() == Status::Ok => {}
                Ok(r) => return Err(setup(format!("update answered {}", r.status()))),
                Err(e) => return Err(setup(e.to_string())),
            }
        }
    }
    // A ticket for the mixes that open one.
    let ticket = if matches!(options.mix, Mix::Open | Mix::Tickets) {
        match client.request(&seal()) {
            Ok(Reply::Seal { status: Status::Ok, ticket, .. }) => ticket,
            Ok(r) => return Err(setup(format!("tktseal answered {}", r.status()))),
            Err(e) => return Err(setup(e.to_string())),
        }
    } else {
        Vec::new()
    };
    drop(client);

    let done = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let started = Instant::now();
    let deadline = options.duration.map(|d| started + d);
    let shared = Shared { options, key_name: &key_name, ticket: &ticket, done: &done, stop: &stop, deadline };
    let results: Vec<(Vec<u32>, u64, Instant)> = std::thread::scope(|scope| {
        let workers: Vec<_> =
            (0..options.connections).map(|n| scope.spawn(move || shared.connection(n as u64))).collect();
        while !workers.iter().all(|w| w.is_finished()) {
            progress(done.load(Ordering::Relaxed));
            std::thread::sleep(Duration::from_millis(20));
        }
        workers.into_iter().map(|w| w.join().unwrap_or_else(|_| (Vec::new(), 1, Instant::now()))).collect()
    });
    // From the start to the last connection's last reply, not to when this
    // thread noticed: the progress loop's sleep is no part of the run.
    let finished = results.iter().map(|(_, _, end)| *end).max().unwrap_or(started);
    let seconds = finished.duration_since(started).as_secs_f64();
    progress(done.load(Ordering::Relaxed));

    let errors = results.iter().map(|(_, e, _)| e).sum();
    let mut latencies: Vec<u32> = results.into_iter().flat_map(|(l, _, _)| l).collect();
    latencies.sort_unstable();
    let pick = |q: f64| -> u32 {
        if latencies.is_empty() {
            return 0;
        }
        // Nearest rank: the smallest latency with at least q of all at or
        // below it.
        let rank = ((q * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len());
        latencies[rank - 1]
    };
    Ok(Report {
        mix: options.mix,
        connections: options.connections,
        requests: latencies.len() as u64,
        errors,
        seconds,
        rps: latencies.len() as f64 / seconds.max(f64::MIN_POSITIVE),
        p50_us: pick(0.50),
        p99_us: pick(0.99),
        max_us: latencies.last().copied().unwrap_or(0),
    })
}

fn needs_key(mix: Mix) -> bool {
    matches!(mix, Mix::TktkeyName | Mix::Smtpd)
}

fn update(cache: &str, i: u64) -> Request {
    Request::Update { cache_type: cache.to_owned(), cache_id: id(i), session: vec![0x30; SESSION_BYTES].into() }
}

fn seal() -> Request {
    Request::Seal { plaintext: vec![0x5a; TICKET_PLAINTEXT_BYTES].into() }
}

fn id(i: u64) -> String {
    format!("bench-{:016x}", i % IDS)
}

/// The answer a request should get.
#[derive(Clone, Copy)]
enum Expect {
    /// Exactly this status.
    Is(Status),
    /// OK or ERR: anything but a failure.
    NotFail,
}

impl Expect {
    fn accepts(self, status: Status) -> bool {
        match self {
            Expect::Is(s) => s == status,
            Expect::NotFail => status != Status::Fail,
        }
    }
}

/// What every connection shares.
#[derive(Clone, Copy)]
struct Shared<'a> {
    options: &'a Options,
    key_name: &'a [u8],
    ticket: &'a [u8],
    done: &'a AtomicU64,
    stop: &'a AtomicBool,
    deadline: Option<Instant>,
}

impl Shared<'_> {
    /// Claim the next request of the budget; false when the run is over.
    fn claim(&self) -> bool {
        if self.stop.load(Ordering::Relaxed) || self.deadline.is_some_and(|d| Instant::now() >= d) {
            return false;
        }
        let n = self.done.fetch_add(1, Ordering::Relaxed);
        if self.options.requests.is_some_and(|limit| n >= limit) {
            self.stop.store(true, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// One connection's run: latencies of its requests, its errors, and
    /// when it ended.
    fn connection(&self, n: u64) -> (Vec<u32>, u64, Instant) {
        let (latencies, errors) = self.requests(n);
        (latencies, errors, Instant::now())
    }

    fn requests(&self, n: u64) -> (Vec<u32>, u64) {
        let mut latencies = Vec::new();
        let Ok(mut client) = Client::connect(&self.options.socket) else {
            return (latencies, 1);
        };
        let cache = self.options.cache.as_str();
        let mut errors = 0;
        let mut step: u64 = n.wrapping_mul(7919);
        while self.claim() {
            step += 1;
            let (request, expected) = self.request(cache, step);
            let sent = Instant::now();
            let reply = client.request(&request);
            let micros = u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX);
            match reply {
                Ok(reply) if expected.accepts(reply.status()) => latencies.push(micros),
                Ok(_) => errors += 1,
                Err(ClientError::Io(_) | ClientError::Closed) => return (latencies, errors + 1),
                Err(_) => errors += 1,
            }
        }
        (latencies, errors)
    }

    /// The request for `step`, and the answer it should get.
    fn request(&self, cache: &str, step: u64) -> (Request, Expect) {
        let (request, status) = self.request_status(cache, step);
        let expect = match request {
            // Present or not, depending on what ran before.
            Request::Delete { .. } => Expect::NotFail,
            _ => Expect::Is(status),
        };
        (request, expect)
    }

    fn request_status(&self, cache: &str, step: u64) -> (Request, Status) {
        let lookup = |i| Request::Lookup { cache_type: cache.to_owned(), cache_id: id(i) };
        let by_name = || Request::TicketKey { key_name: self.key_name.to_vec() };
        let open = || Request::Open { ticket: self.ticket.to_vec() };
        match self.options.mix {
            Mix::Seed => (Request::Seed { size: 32 }, Status::Ok),
            Mix::Tktkey => (Request::TicketKey { key_name: Vec::new() }, Status::Ok),
            Mix::TktkeyName => (by_name(), Status::Ok),
            Mix::LookupHit => (lookup(step), Status::Ok),
            Mix::LookupMiss => {
                (Request::Lookup { cache_type: cache.to_owned(), cache_id: format!("never-{step}") }, Status::Err)
            }
            Mix::Update => (update(cache, step), Status::Ok),
            Mix::Delete => (Request::Delete { cache_type: cache.to_owned(), cache_id: id(step) }, Status::Ok),
            Mix::Smtpd => match step % 5 {
                0 => (Request::Seed { size: 32 }, Status::Ok),
                1 => (Request::TicketKey { key_name: Vec::new() }, Status::Ok),
                2 => (by_name(), Status::Ok),
                3 => (lookup(step), Status::Ok),
                _ => (update(cache, step), Status::Ok),
            },
            Mix::Seal => (seal(), Status::Ok),
            Mix::Open => (open(), Status::Ok),
            Mix::Tickets if step.is_multiple_of(2) => (seal(), Status::Ok),
            Mix::Tickets => (open(), Status::Ok),
        }
    }
}
