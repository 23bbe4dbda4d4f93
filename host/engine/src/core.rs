//! [`Core`]: one running instance of the core component, the handle that
//! owns its store and makes export calls, one at a time.
//!
//! Every export goes through one path: a fresh fuel budget, the tape told
//! of the call and its outcome, the core's refusal kept apart from a trap.
//! When a call traps, [`Core`] logs it (throttled), reinstantiates the
//! component from the same capabilities (state that matters lives in
//! storage), reapplies the configuration and reports the call as failed.
//!
//! # Security
//!
//! Ticket keys returned by the core are converted into [`TicketKey`]
//! (zeroizing, no `Debug` of secrets) at once. A client that has found an
//! input which traps the core can send it again and again: the trap lines
//! are throttled, and recovery is one attempt per call, never a loop.
//!
//! # Limitations
//!
//! A trap loses the core's in-memory state (DRBG, counters); the DRBG is
//! reinstantiated from fresh entropy and whatever seed the seed file then
//! holds (one saved since the old instance took its own), which is safe.
//!
//! Values read back from storage (decrypted sessions and ticket keys) and a
//! taken seed are handed to wasmtime by value, which copies them into the
//! core's memory and frees its buffer without zeroizing it.

use wasmtime::Store;

use crate::bindings::{self, manager};
use crate::capabilities::{Capabilities, HostState, instantiate, new_store};
use crate::keys::TicketKey;
use crate::runtime::{EngineError, Limits, Runtime};
use crate::tape::Tape;
use crate::throttle::{Throttle, Verdict};
use crate::trace::{Call, Outcome};
use crate::{CachePolicy, CoreConfig, CoreError, FleetConfig, ManagerStats, SealedTicket};

/// Why an export call did not return a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The core refused the request.
    #[error("{0}")]
    Refused(CoreError),
    /// The core trapped (bug, fuel or memory exhausted); it has been
    /// reinstantiated and the call is lost.
    #[error("the core trapped: {0}")]
    Trapped(String),
}

/// One running core: a store, an instance, and the configuration to
/// reapply after a trap.
pub struct Core {
    runtime: Runtime,
    pub(crate) store: Store<HostState>,
    /// `None` only after a reinstantiation failed; the next call retries.
    instance: Option<bindings::Core>,
    config: CoreConfig,
    /// The fleet the core joined, reapplied with `config` after a trap.
    fleet: Option<FleetConfig>,
    limits: Limits,
}

impl Core {
    /// Instantiate the core with `caps` and apply `config`.
    ///
    /// # Errors
    ///
    /// [`EngineError::Start`] when instantiation traps or the core rejects
    /// the configuration (the message says which setting).
    pub fn start(
        runtime: &Runtime,
        caps: Capabilities,
        config: CoreConfig,
        limits: Limits,
    ) -> Result<Core, EngineError> {
        Self::start_with_tape(runtime, caps, config, limits, Tape::Off)
    }

    /// As [`Core::start`], with every boundary event going to `tape`
    /// (recorded to a trace, or replayed from one).
    ///
    /// # Errors
    ///
    /// As [`Core::start`].
    pub fn start_with_tape(
        runtime: &Runtime,
        caps: Capabilities,
        config: CoreConfig,
        limits: Limits,
        tape: Tape,
    ) -> Result<Core, EngineError> {
        let mut store = new_store(runtime, caps, tape, limits);
        let instance = instantiate(runtime, &mut store, limits).map_err(|e| EngineError::Start(format!("{e:#}")))?;
        let mut core = Core { runtime: runtime.clone(), store, instance: Some(instance), config, fleet: None, limits };
        let configured = core.configure();
        // A replay reports a refused or divergent configure as its result;
        // anywhere else the core cannot run without its configuration.
        if core.tape().player().is_none() {
            configured.map_err(|e| EngineError::Start(e.to_string()))?;
        }
        Ok(core)
    }

    /// The tape, for a replay's progress and result.
    pub fn tape(&self) -> &Tape {
        &self.store.data().tape
    }

    /// The tape, for a replay driver that finds the trace out of order.
    pub fn tape_mut(&mut self) -> &mut Tape {
        &mut self.store.data_mut().tape
    }

    /// Run one export `f` with a fresh fuel budget, telling the tape about
    /// it (`call` and `outcome` build its events, only when it wants them).
    /// Without `recover`, a trap is reported and the instance left as it is.
    fn run<T: Clone>(
        &mut self,
        call: impl FnOnce() -> Call,
        f: impl FnOnce(&manager::Guest, &mut Store<HostState>) -> wasmtime::Result<Result<T, CoreError>>,
        outcome: fn(Result<T, CoreError>) -> Outcome,
    ) -> Result<T, CallError> {
        let Some(instance) = &self.instance else {
            return Err(CallError::Trapped("the core is not running: it could not be reinstantiated".into()));
        };
        self.store
            .set_fuel(self.limits.fuel_per_call)
            .map_err(|e| CallError::Trapped(format!("cannot set fuel: {e}")))?;
        self.store.data_mut().tape.begin(call);
        let result = f(instance.tlskeeper_core_manager(), &mut self.store);
        let fuel = self.fuel_used();
        self.store.data_mut().tape.end(
            || match &result {
                Ok(r) => outcome(r.clone()),
                Err(trap) => Outcome::Trap(trap_reason(trap)),
            },
            fuel,
        );
        match result {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(CallError::Refused(e)),
            Err(trap) => {
                // The reason alone makes a one-line log entry an operator
                // can read; the wasm backtrace is for whoever debugs it.
                tracing::debug!("core trap in detail: {trap:?}");
                Err(CallError::Trapped(trap_reason(&trap)))
            }
        }
    }

    /// [`Core::run`], and on a trap, rebuild the instance.
    fn call<T: Clone>(
        &mut self,
        call: impl FnOnce() -> Call,
        f: impl FnOnce(&manager::Guest, &mut Store<HostState>) -> wasmtime::Result<Result<T, CoreError>>,
        outcome: fn(Result<T, CoreError>) -> Outcome,
    ) -> Result<T, CallError> {
        if self.instance.is_none() {
            self.recover();
        }
        let result = self.run(call, f, outcome);
        if let Err(CallError::Trapped(what)) = &result {
            // A replay that has diverged stops here: recovering would only
            // run the trace further out of step, and would drop the player
            // with its report.
            if self.tape().player().is_some_and(|p| p.divergence().is_some()) {
                return result;
            }
            // Limited: a client that has found an input which traps the
            // core can send it again and again.
            match TRAPS.check("core trapped", std::time::Instant::now()) {
                Verdict::Log { held_back: 0 } => tracing::error!("core trapped: {what}; reinstantiating"),
                Verdict::Log { held_back } => {
                    tracing::error!("core trapped: {what}; reinstantiating ({held_back} more traps not logged)");
                }
                Verdict::Drop => {}
            }
            self.recover();
        }
        result
    }

    /// Apply the configuration to the current instance. Without recovery:
    /// a core that traps while being configured must not send recovery into
    /// a loop.
    fn configure(&mut self) -> Result<(), CallError> {
        let config = self.config.clone();
        self.run(|| Call::Configure(config.clone()), |m, s| m.call_configure(s, &config), Outcome::Configure)
    }

    /// Replace a trapped instance with a fresh one over the same capabilities.
    fn recover(&mut self) {
        // A trapped store must not be entered again; move its capabilities
        // into a new one. A placeholder store takes its place meanwhile.
        let placeholder = Store::new(&self.runtime.engine, HostState::placeholder());
        let old = std::mem::replace(&mut self.store, placeholder);
        let HostState { caps, tape, .. } = old.into_data();
        // The capabilities go into the new store before anything can fail,
        // so a failed instantiation keeps them (and the storage they hold)
        // for the next attempt instead of dropping them with an error.
        self.store = new_store(&self.runtime, caps, tape, self.limits);
        self.instance = None;
        match instantiate(&self.runtime, &mut self.store, self.limits) {
            Ok(instance) => {
                self.instance = Some(instance);
                // If this fails too, the next call traps again and recovery
                // is retried then: one attempt per call, never a loop.
                if let Err(e) = self.configure().and_then(|()| self.rejoin_fleet()) {
                    tracing::error!("the reinstantiated core could not be configured: {e}");
                }
            }
            // Calls fail until an attempt succeeds: one attempt per call.
            Err(e) => tracing::error!("cannot reinstantiate the core: {e:#}; the next call tries again"),
        }
    }

    /// Share ticket keys with every core on this core's store (see the WIT
    /// `join-fleet`); kept, and applied again to a reinstantiated core.
    ///
    /// # Errors
    ///
    /// [`CallError`]: the core refuses a margin over a quarter of T.
    pub fn join_fleet(&mut self, fleet: FleetConfig) -> Result<(), CallError> {
        self.call(|| Call::JoinFleet(fleet), |m, s| m.call_join_fleet(s, fleet), Outcome::JoinFleet)?;
        self.fleet = Some(fleet);
        Ok(())
    }

    /// Apply the kept fleet to a fresh instance, without recovery (as
    /// [`Core::configure`]).
    fn rejoin_fleet(&mut self) -> Result<(), CallError> {
        let Some(fleet) = self.fleet else {
            return Ok(());
        };
        self.run(|| Call::JoinFleet(fleet), |m, s| m.call_join_fleet(s, fleet), Outcome::JoinFleet)
    }

    /// `len` random bytes.
    ///
    /// # Errors
    ///
    /// [`CallError`].
    pub fn seed(&mut self, len: u32) -> Result<Vec<u8>, CallError> {
        self.call(|| Call::Seed(len), |m, s| m.call_seed(s, len), Outcome::Seed)
    }

    /// Whether `cache` is served, and its timeout.
    ///
    /// # Errors
    ///
    /// [`CallError`].
    pub fn policy(&mut self, cache: &str) -> Result<CachePolicy, CallError> {
        self.call(|| Call::Policy(cache.to_owned()), |m, s| m.call_policy(s, cache), Outcome::Policy)
    }

    /// The session under `id`.
    ///
    /// # Errors
    ///
    /// [`CallError`].
    pub fn lookup(&mut self, cache: &str, id: &str) -> Result<Option<Vec<u8>>, CallError> {
        self.call(
            || Call::Lookup { cache: cache.to_owned(), id: id.to_owned() },
            |m, s| m.call_lookup_session(s, cache, id),
            Outcome::Lookup,
        )
    }

    /// Store `session` under `id`.
    ///
    /// # Errors
    ///
    /// [`CallError`].
    pub fn update(&mut self, cache: &str, id: &str, session: &[u8]) -> Result<(), CallError> {
        self.call(
            || Call::Update { cache: cache.to_owned(), id: id.to_owned(), session: session.to_vec() },
            |m, s| m.call_update_session(s, cache, id, session),
            Outcome::Update,
        )
    }

    /// Remove `id`; true when it was present.
    ///
    /// # Errors
    ///
    /// [`CallError`].
    pub fn delete(&mut self, cache: &str, id: &str) -> Result<bool, CallError> {
        self.call(
            || Call::Delete { cache: cache.to_owned(), id: id.to_owned() },
            |m, s| m.call_delete_session(s, cache, id),
            Outcome::Delete,
        )
    }

    /// The session under `id`, removed in the same call (handed out once).
    ///
    /// # Errors
    ///
    /// [`CallError`].
    pub fn take(&mut self, cache: &str, id: &str) -> Result<Option<Vec<u8>>, CallError> {
        self.call(
            || Call::Take { cache: cache.to_owned(), id: id.to_owned() },
            |m, s| m.call_take_session(s, cache, id),
            Outcome::Take,
        )
    }

    /// `plaintext` sealed into a ticket under the current encryption key,
    /// which stays in the core.
    ///
    /// # Errors
    ///
    /// [`CallError`].
    pub fn seal_ticket(&mut self, plaintext: &[u8]) -> Result<SealedTicket, CallError> {
        self.call(|| Call::SealTicket(plaintext.to_vec()), |m, s| m.call_seal_ticket(s, plaintext), Outcome::SealTicket)
    }

    /// The plaintext of a ticket the core sealed, if it still opens.
    ///
    /// # Errors
    ///
    /// [`CallError`].
    pub fn open_ticket(&mut self, ticket: &[u8]) -> Result<Option<Vec<u8>>, CallError> {
        self.call(|| Call::OpenTicket(ticket.to_vec()), |m, s| m.call_open_ticket(s, ticket), Outcome::OpenTicket)
    }

    /// The encryption key (no name) or the named decryption key.
    ///
    /// # Errors
    ///
    /// [`CallError`]; a key of the wrong shape from the core is a trap-level
    /// contract breach reported as [`CallError::Trapped`].
    pub fn ticket_key(&mut self, name: Option<&[u8]>) -> Result<Option<TicketKey>, CallError> {
        let Some(mut raw) = self.call(
            || Call::TicketKey(name.map(<[u8]>::to_vec)),
            |m, s| m.call_ticket_key(s, name),
            Outcome::TicketKey,
        )?
        else {
            return Ok(None);
        };
        let key = convert_key(&raw);
        zeroize::Zeroize::zeroize(&mut raw.cipher_key);
        zeroize::Zeroize::zeroize(&mut raw.hmac_key);
        key.map(Some).ok_or_else(|| CallError::Trapped("the core returned a malformed ticket key".into()))
    }

    /// Bounded background work; returns milliseconds until the next run.
    ///
    /// # Errors
    ///
    /// [`CallError`].
    pub fn housekeeping(&mut self) -> Result<u64, CallError> {
        self.call(|| Call::Housekeeping, |m, s| m.call_housekeeping(s), Outcome::Housekeeping)
    }

    /// Counters and sizes.
    ///
    /// # Errors
    ///
    /// [`CallError`].
    pub fn stats(&mut self) -> Result<ManagerStats, CallError> {
        self.call(|| Call::Stats, |m, s| m.call_stats(s), Outcome::Stats)
    }

    /// Save what the next run needs (a fresh seed). Called once, when the
    /// host stops.
    ///
    /// # Errors
    ///
    /// [`CallError`].
    pub fn checkpoint(&mut self) -> Result<(), CallError> {
        self.call(|| Call::Checkpoint, |m, s| m.call_checkpoint(s), Outcome::Checkpoint)
    }

    /// Fuel the last call consumed.
    pub fn fuel_used(&self) -> u64 {
        self.limits.fuel_per_call.saturating_sub(self.store.get_fuel().unwrap_or(0))
    }
}

fn convert_key(raw: &manager::SessionTicketKey) -> Option<TicketKey> {
    Some(TicketKey {
        name: raw.name.as_slice().try_into().ok()?,
        cipher_key: raw.cipher_key.as_slice().try_into().ok()?,
        hmac_key: raw.hmac_key.as_slice().try_into().ok()?,
        expires: raw.expires,
    })
}

/// The budget of the "core trapped" lines.
static TRAPS: Throttle = Throttle::new();

/// The reason for a trap, without the backtrace: offsets in a backtrace
/// differ between builds of the core, the reason does not.
fn trap_reason(trap: &wasmtime::Error) -> String {
    match trap.downcast_ref::<wasmtime::Trap>() {
        Some(code) => code.to_string(),
        None => trap.to_string(),
    }
}
