//! Replay: a fresh instance of a core, run against a trace. Its export
//! calls are the trace's, its imports are answered from the trace, and
//! every import it makes and every result it returns is checked against
//! what was recorded (see [`crate::tape`]).
//!
//! Against the component that recorded the trace, a replay is a
//! determinism check: anything but "identical" is a bug. Against another
//! build (`--component`), it is the differential test of a core change: the
//! report names the first call where the new core behaves differently.
//! Fuel is compared only when the component, wasmtime and engine settings
//! are the ones recorded; any other build spends other amounts.
//!
//! # Security
//!
//! The trace is untrusted input ([`super::file`] bounds and checks it); the
//! core replayed is whatever `--component` names, run in the same sandbox as
//! in the daemon, with capabilities that only ever answer from the trace.
//!
//! # Limitations
//!
//! Stops at the first divergence: after it, the trace no longer describes
//! what the replayed core would see.

use serde::Serialize;

use crate::trace::file::Trace;
use crate::trace::{Call, Event, WIT_PACKAGE};
use crate::{Capabilities, Core, Divergence, ENGINE_SETTINGS, Limits, Runtime, Tape, WASMTIME_VERSION};

/// Why a trace could not be replayed at all.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The trace was made for another boundary.
    #[error("the trace speaks {found}, this build {WIT_PACKAGE}: it cannot be replayed here")]
    OtherWit {
        /// The trace's WIT package.
        found: String,
    },
    /// The trace does not start the way every recording starts.
    #[error("the trace does not start with an instance and its configure call; it was not written by tlskeeper")]
    BadStart,
    /// The engine could not start the core.
    #[error("{0}")]
    Start(String),
}

/// What a replay found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Export calls in the trace.
    pub calls_in_trace: u64,
    /// Export calls replayed (up to and including a divergent one).
    pub calls_replayed: u64,
    /// The first difference, if any.
    pub divergence: Option<Divergence>,
    /// How the trace file was cut off, if it was (its last, unfinished call
    /// is not replayed).
    pub cut_off: Option<String>,
    /// Whether fuel was compared (same component, wasmtime and engine).
    pub fuel_compared: bool,
    /// Fuel the replayed calls used.
    pub fuel_replayed: u64,
    /// Fuel the same calls used when recorded.
    pub fuel_recorded: u64,
    /// SHA-256 of the component recorded, and of the one replayed.
    pub components: (String, String),
}

impl Report {
    /// True when the replay matched the trace throughout.
    pub fn identical(&self) -> bool {
        self.divergence.is_none() && self.calls_replayed == self.calls_in_trace
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.divergence {
            None => write!(f, "{} calls replayed, identical", self.calls_replayed)?,
            Some(d) => {
                writeln!(f, "divergence at call {} ({}):", d.call, d.export)?;
                writeln!(f, "  the trace has:  {}", d.expected)?;
                writeln!(f, "  the core did:   {}", d.actual)?;
                write!(f, "{} calls before it replayed identically", d.call.saturating_sub(1))?;
            }
        }
        if self.fuel_compared {
            write!(f, "\nfuel: {} (compared call by call)", self.fuel_replayed)?;
        } else {
            write!(
                f,
                "\nfuel not compared (recorded with component {}, replayed with {}): {} replayed, {} recorded",
                short(&self.components.0),
                short(&self.components.1),
                self.fuel_replayed,
                self.fuel_recorded
            )?;
        }
        if let Some(cut) = &self.cut_off {
            write!(f, "\nthe trace is cut off ({cut}); it was probably still being written when its recorder died")?;
        }
        Ok(())
    }
}

fn short(digest: &str) -> &str {
    digest.get(..12).unwrap_or(digest)
}

/// Replay `trace` on `runtime`, calling `progress(done, total)` after each
/// call.
///
/// # Errors
///
/// [`ReplayError`] when the trace cannot be replayed at all; a divergence is
/// a result, in the [`Report`].
pub fn replay(trace: Trace, runtime: &Runtime, mut progress: impl FnMut(u64, u64)) -> Result<Report, ReplayError> {
    let Trace { header, events, cut_off } = trace;
    if header.wit != WIT_PACKAGE {
        return Err(ReplayError::OtherWit { found: header.wit });
    }
    let fuel_compared = header.component_sha256 == runtime.component_sha256()
        && header.wasmtime == WASMTIME_VERSION
        && header.engine == ENGINE_SETTINGS;
    let calls_in_trace = events.iter().filter(|e| matches!(e, Event::Call(_))).count() as u64;
    let components = (header.component_sha256.clone(), runtime.component_sha256().to_owned());
    let empty = Report {
        calls_in_trace,
        calls_replayed: 0,
        divergence: None,
        cut_off,
        fuel_compared,
        fuel_replayed: 0,
        fuel_recorded: 0,
        components,
    };
    if events.is_empty() {
        return Ok(empty);
    }
    let config = match (events.first(), events.get(1)) {
        (Some(Event::Instantiate), Some(Event::Call(Call::Configure(config)))) => config.clone(),
        _ => return Err(ReplayError::BadStart),
    };
    let limits = Limits { fuel_per_call: header.fuel_per_call, memory_bytes: header.memory_bytes };
    let tape = Tape::Replay(crate::Player::new(events, fuel_compared));
    let mut core = Core::start_with_tape(runtime, Capabilities::inert(), config, limits, tape)
        .map_err(|e| ReplayError::Start(e.to_string()))?;
    while let Some(player) = core.tape().player() {
        if player.divergence().is_some() {
            break;
        }
        progress(player.calls(), calls_in_trace);
        // `configure` and new instances come only from the engine itself
        // (at start and after a trap), never from the driver.
        let call = match player.peek() {
            None => break,
            Some(Event::Call(call)) if !matches!(call, Call::Configure(_)) => call.clone(),
            Some(_) => {
                core.tape_mut().unexpected_event();
                break;
            }
        };
        // Results are checked by the tape; the values are not needed here.
        let _ = match call {
            Call::Configure(_) => continue, // excluded just above
            Call::Seed(n) => core.seed(n).map(drop),
            Call::Policy(cache) => core.policy(&cache).map(drop),
            Call::Lookup { cache, id } => core.lookup(&cache, &id).map(drop),
            Call::Update { cache, id, session } => core.update(&cache, &id, &session),
            Call::Delete { cache, id } => core.delete(&cache, &id).map(drop),
            Call::TicketKey(name) => core.ticket_key(name.as_deref()).map(drop),
            Call::Housekeeping => core.housekeeping().map(drop),
            Call::Stats => core.stats().map(drop),
            Call::Checkpoint => core.checkpoint(),
            Call::Take { cache, id } => core.take(&cache, &id).map(drop),
            Call::SealTicket(plain) => core.seal_ticket(&plain).map(drop),
            Call::OpenTicket(ticket) => core.open_ticket(&ticket).map(drop),
            Call::JoinFleet(fleet) => core.join_fleet(fleet),
        };
    }
    // The engine keeps a replay's tape for its whole life (a diverged replay
    // is never recovered), so the player is still there.
    let Some(player) = core.tape().player() else {
        return Err(ReplayError::Start("internal error: the replay's tape is gone".into()));
    };
    progress(player.calls(), calls_in_trace);
    Ok(Report {
        calls_replayed: player.calls(),
        divergence: player.divergence().cloned(),
        fuel_replayed: player.fuel.0,
        fuel_recorded: player.fuel.1,
        ..empty
    })
}
