//! The wasmtime embedding: one engine configured for determinism, the core
//! component loaded once, and [`Core`], the handle that owns the core's
//! store and makes export calls.
//!
//! Engine settings and why:
//! - NaN canonicalisation and deterministic relaxed SIMD: the same inputs
//!   give the same bits on every CPU, so a trace replays anywhere.
//! - No threads (the `threads` cargo feature is off, so shared memory cannot
//!   even be enabled) and no async: one caller, a total order of calls.
//! - Fuel, refilled to a fixed budget before every call: a runaway core traps
//!   deterministically instead of stalling the daemon. Epoch interruption was
//!   rejected because it depends on wall-clock time and breaks replay.
//! - A memory cap through store limits, so growth fails the same way every
//!   time.
//!
//! When a call traps, [`Core`] logs it, reinstantiates the component from the
//! same capabilities (state that matters lives in storage), reapplies the
//! configuration and reports the call as failed.
//!
//! # Security
//!
//! The component is embedded in this binary at build time and is the only
//! code the engine runs. It gets exactly the five capability interfaces; the
//! import list is pinned by a test. Ticket keys returned by the core are
//! converted into [`TicketKey`] (zeroizing, no `Debug` of secrets) at once.
//! Values the core stores and the seeds it saves are zeroized here once the
//! backend has them.
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

pub mod artifact;
pub mod bindings;
pub mod tape;

use std::path::Path;

use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, Engine, Store, StoreLimits, StoreLimitsBuilder};

use crate::caps::{Clock, Entropy, SeedStore};
use crate::keys::TicketKey;
use crate::logging::throttle::{Throttle, Verdict};
use crate::storage::Storage;
use bindings::manager;
pub use tape::{Divergence, Player, Tape};

use crate::trace::{Call, Import, Outcome};

/// The wasmtime this binary embeds (pinned in `host/Cargo.toml`; a unit test
/// checks it against `Cargo.lock`). Traces record it: fuel is only
/// comparable between runs of the same wasmtime.
pub const WASMTIME_VERSION: &str = "48.0.8";

/// The engine settings that affect what the core computes, as traces
/// record them; [`engine_config`] applies them.
pub const ENGINE_SETTINGS: &str =
    "cranelift; nan-canonicalization; relaxed-simd-deterministic; fuel; no epochs; stack 512 KiB; no threads";

pub use artifact::Origin;
pub use bindings::manager::{CachePolicy, Config as CoreConfig, Error as CoreError, ManagerStats, SealedTicket};

/// The core component, built from `guest/` by `build.rs`.
pub static COMPONENT: &[u8] = include_bytes!(env!("TLSKEEPER_COMPONENT_PATH"));

/// Most entropy the core may ask for in one import call.
pub const MAX_ENTROPY_REQUEST: u32 = 4096;

/// Resource limits for the core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Fuel (roughly wasm instructions) per export call.
    pub fuel_per_call: u64,
    /// Largest linear memory, in bytes.
    pub memory_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        // A housekeeping batch of 256 entries uses a few million units; a
        // seed, lookup or update well under a million. 10^9 is far above any
        // legitimate call and still trips within about a second.
        Limits { fuel_per_call: 1_000_000_000, memory_bytes: 64 * 1024 * 1024 }
    }
}

/// Why the engine could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// wasmtime rejected the engine configuration.
    #[error("cannot configure wasmtime: {0:#}")]
    Config(wasmtime::Error),
    /// The component could not be compiled or linked.
    #[error("cannot load the core component: {0:#}")]
    Load(wasmtime::Error),
    /// Instantiation or the initial `configure` call failed.
    #[error("cannot start the core: {0}")]
    Start(String),
}

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

/// The compiled component, ready to instantiate; shareable across threads.
#[derive(Clone)]
pub struct Runtime {
    engine: Engine,
    component: wasmtime::component::Component,
    pre: bindings::CorePre<HostState>,
    origin: Origin,
    digest: String,
}

impl Runtime {
    /// Configure the engine and load the embedded component, through the
    /// compiled-artifact cache in `cache_dir` when given.
    ///
    /// # Errors
    ///
    /// [`EngineError`] when wasmtime cannot be configured or the component
    /// cannot be loaded.
    pub fn new(cache_dir: Option<&Path>) -> Result<Runtime, EngineError> {
        Self::with_component(COMPONENT, cache_dir)
    }

    /// As [`Runtime::new`], for another build of the core (tests, replay).
    ///
    /// # Errors
    ///
    /// As [`Runtime::new`].
    pub fn with_component(bytes: &[u8], cache_dir: Option<&Path>) -> Result<Runtime, EngineError> {
        let engine = Engine::new(&engine_config()).map_err(EngineError::Config)?;
        let (component, origin) = artifact::load_or_compile(&engine, bytes, cache_dir).map_err(EngineError::Load)?;
        let mut linker = Linker::<HostState>::new(&engine);
        bindings::Core::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
            .map_err(EngineError::Load)?;
        let pre = linker.instantiate_pre(&component).map_err(EngineError::Load)?;
        let pre = bindings::CorePre::new(pre).map_err(EngineError::Load)?;
        Ok(Runtime { engine, component, pre, origin, digest: artifact::component_digest(bytes) })
    }

    /// SHA-256 of the component, hex.
    pub fn component_sha256(&self) -> &str {
        &self.digest
    }

    /// A trace header for runs of this component under `limits`.
    pub fn trace_header(&self, limits: Limits) -> crate::trace::Header {
        crate::trace::Header {
            component_sha256: self.digest.clone(),
            wasmtime: WASMTIME_VERSION.to_owned(),
            engine: ENGINE_SETTINGS.to_owned(),
            wit: crate::trace::WIT_PACKAGE.to_owned(),
            tlskeeper: env!("CARGO_PKG_VERSION").to_owned(),
            fuel_per_call: limits.fuel_per_call,
            memory_bytes: limits.memory_bytes,
        }
    }

    /// Whether the component came from the artifact cache.
    pub fn origin(&self) -> Origin {
        self.origin
    }

    /// The engine the component was compiled for.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The names of the interfaces the component imports: the whole of
    /// what the core can reach.
    pub fn imports(&self) -> Vec<String> {
        self.component.component_type().imports(&self.engine).map(|(name, _)| name.to_owned()).collect()
    }

    /// The names of the interfaces the component exports.
    pub fn exports(&self) -> Vec<String> {
        self.component.component_type().exports(&self.engine).map(|(name, _)| name.to_owned()).collect()
    }
}

/// The engine configuration; see the module docs for each choice.
pub fn engine_config() -> Config {
    let mut config = Config::new();
    config.cranelift_nan_canonicalization(true);
    config.relaxed_simd_deterministic(true);
    config.consume_fuel(true);
    config.epoch_interruption(false);
    config.max_wasm_stack(512 * 1024);
    config
}

/// The capabilities granted to one core instance.
pub struct Capabilities {
    /// Wall-clock time.
    pub clock: Box<dyn Clock>,
    /// Fresh entropy for the DRBG.
    pub entropy: Box<dyn Entropy>,
    /// The tables.
    pub storage: Box<dyn Storage>,
    /// Where the DRBG's seed is kept between runs.
    pub seed_file: Box<dyn SeedStore>,
}

impl Capabilities {
    /// Capabilities that stand in where none are used: between a trapped
    /// store and its replacement, and under a replay, whose tape answers
    /// every import before they are reached.
    pub fn inert() -> Capabilities {
        Capabilities {
            clock: Box::new(crate::caps::SystemClock),
            entropy: Box::new(crate::caps::OsEntropy),
            storage: Box::new(crate::storage::MemoryStorage::new()),
            seed_file: Box::new(crate::caps::NoSeedFile),
        }
    }
}

/// What the store holds: the capabilities, the limits and the tape.
pub struct HostState {
    caps: Capabilities,
    limits: StoreLimits,
    tape: Tape,
}

/// One running core: a store, an instance, and the configuration to
/// reapply after a trap.
pub struct Core {
    runtime: Runtime,
    store: Store<HostState>,
    /// `None` only after a reinstantiation failed; the next call retries.
    instance: Option<bindings::Core>,
    config: CoreConfig,
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
        let mut core = Core { runtime: runtime.clone(), store, instance: Some(instance), config, limits };
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
                if let Err(e) = self.configure() {
                    tracing::error!("the reinstantiated core could not be configured: {e}");
                }
            }
            // Calls fail until an attempt succeeds: one attempt per call.
            Err(e) => tracing::error!("cannot reinstantiate the core: {e:#}; the next call tries again"),
        }
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

    /// Make the storage's completed writes durable (see
    /// [`Storage::flush`](crate::storage::Storage::flush)). The host calls
    /// this on a timer; it is not an export call, so the core never sees it.
    ///
    /// # Errors
    ///
    /// The backend's error.
    pub fn flush_storage(&mut self) -> Result<(), crate::storage::StorageError> {
        self.store.data_mut().caps.storage.flush()
    }

    /// Whether storage holds enough writes to want a commit before the next
    /// flush (see [`Storage::wants_commit`](crate::storage::Storage::wants_commit)).
    pub fn storage_wants_commit(&self) -> bool {
        self.store.data().caps.storage.wants_commit()
    }

    /// Detach storage's held writes into a commit to run without the core
    /// (see [`Storage::start_commit`](crate::storage::Storage::start_commit));
    /// with `durable`, it is a flush. Not an export call: the core never
    /// sees it.
    ///
    /// # Errors
    ///
    /// The backend's error.
    pub fn start_storage_commit(
        &mut self,
        durable: bool,
    ) -> Result<Option<crate::storage::Commit>, crate::storage::StorageError> {
        self.store.data_mut().caps.storage.start_commit(durable)
    }

    /// Hand a detached commit's outcome back to storage.
    ///
    /// # Errors
    ///
    /// The commit's error (its writes are held again for the next one).
    pub fn finish_storage_commit(
        &mut self,
        done: crate::storage::Committed,
    ) -> Result<(), crate::storage::StorageError> {
        self.store.data_mut().caps.storage.finish_commit(done)
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

/// A store holding `caps` and `tape`, under `limits`, with no instance yet.
fn new_store(runtime: &Runtime, caps: Capabilities, tape: Tape, limits: Limits) -> Store<HostState> {
    let state = HostState {
        tape,
        caps,
        // A component is several core instances (the core module plus the
        // canonical ABI's shims), each with its tables; one linear memory.
        limits: StoreLimitsBuilder::new().memory_size(limits.memory_bytes).instances(16).memories(1).tables(16).build(),
    };
    let mut store = Store::new(&runtime.engine, state);
    store.limiter(|s| &mut s.limits);
    store
}

/// Instantiate the component in `store` (made under the same `limits`),
/// which keeps its capabilities whether or not this succeeds.
fn instantiate(runtime: &Runtime, store: &mut Store<HostState>, limits: Limits) -> wasmtime::Result<bindings::Core> {
    store.data_mut().tape.instantiate()?;
    store.set_fuel(limits.fuel_per_call)?;
    runtime.pre.instantiate(store)
}

impl HostState {
    /// A store's state for the instant between a trapped store and its
    /// replacement.
    fn placeholder() -> HostState {
        HostState { caps: Capabilities::inert(), limits: StoreLimitsBuilder::new().build(), tape: Tape::Off }
    }
}

impl bindings::clock::Host for HostState {
    fn now(&mut self) -> wasmtime::Result<u64> {
        if let Tape::Replay(p) = &mut self.tape {
            return p.import(
                |r| match r {
                    Import::ClockNow { result } => Some(*result),
                    _ => None,
                },
                || Import::ClockNow { result: 0 },
            );
        }
        let result = self.caps.clock.now_nanos();
        self.tape.record(|| Import::ClockNow { result });
        Ok(result)
    }
}

impl bindings::entropy::Host for HostState {
    fn fill(&mut self, len: u32) -> wasmtime::Result<Vec<u8>> {
        wasmtime::ensure!(
            len <= MAX_ENTROPY_REQUEST,
            "core asked for {len} bytes of entropy (limit {MAX_ENTROPY_REQUEST})"
        );
        if let Tape::Replay(p) = &mut self.tape {
            return p.import(
                |r| match r {
                    Import::EntropyFill { len: l, result } if *l == len => Some(result.clone()),
                    _ => None,
                },
                || Import::EntropyFill { len, result: Vec::new() },
            );
        }
        let mut buf = vec![0u8; len as usize];
        self.caps.entropy.fill(&mut buf)?;
        self.tape.record(|| Import::EntropyFill { len, result: buf.clone() });
        Ok(buf)
    }
}

fn to_wit(e: crate::storage::StorageError) -> bindings::storage::Error {
    use crate::storage::StorageError as S;
    match e {
        S::Unavailable(why) => bindings::storage::Error::Unavailable(why),
        S::Io(why) => bindings::storage::Error::Io(why),
        S::TooLarge => bindings::storage::Error::TooLarge,
    }
}

impl bindings::storage::Host for HostState {
    fn get(
        &mut self,
        table: String,
        key: Vec<u8>,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, bindings::storage::Error>> {
        if let Tape::Replay(p) = &mut self.tape {
            return p.import(
                |r| match r {
                    Import::StorageGet { table: t, key: k, result } if *t == table && *k == key => Some(result.clone()),
                    _ => None,
                },
                || Import::StorageGet { table: table.clone(), key: key.clone(), result: Ok(None) },
            );
        }
        let result = self.caps.storage.get(&table, &key).map_err(to_wit);
        self.tape.record(|| Import::StorageGet { table, key, result: result.clone() });
        Ok(result)
    }

    fn put(
        &mut self,
        table: String,
        key: Vec<u8>,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), bindings::storage::Error>> {
        if let Tape::Replay(p) = &mut self.tape {
            return p.import(
                |r| match r {
                    Import::StoragePut { table: t, key: k, value: v, result }
                        if (t, k, v) == (&table, &key, &value) =>
                    {
                        Some(result.clone())
                    }
                    _ => None,
                },
                || Import::StoragePut { table: table.clone(), key: key.clone(), value: value.clone(), result: Ok(()) },
            );
        }
        let mut value = value;
        let result = self.caps.storage.put(&table, &key, &value).map_err(to_wit);
        self.tape.record(|| Import::StoragePut { table, key, value: value.clone(), result: result.clone() });
        zeroize::Zeroize::zeroize(&mut value);
        Ok(result)
    }

    fn delete(&mut self, table: String, key: Vec<u8>) -> wasmtime::Result<Result<bool, bindings::storage::Error>> {
        if let Tape::Replay(p) = &mut self.tape {
            return p.import(
                |r| match r {
                    Import::StorageDelete { table: t, key: k, result } if *t == table && *k == key => {
                        Some(result.clone())
                    }
                    _ => None,
                },
                || Import::StorageDelete { table: table.clone(), key: key.clone(), result: Ok(false) },
            );
        }
        let result = self.caps.storage.delete(&table, &key).map_err(to_wit);
        self.tape.record(|| Import::StorageDelete { table, key, result: result.clone() });
        Ok(result)
    }

    fn scan(
        &mut self,
        table: String,
        after: Option<Vec<u8>>,
        limit: u32,
    ) -> wasmtime::Result<Result<Vec<(Vec<u8>, Vec<u8>)>, bindings::storage::Error>> {
        if let Tape::Replay(p) = &mut self.tape {
            return p.import(
                |r| match r {
                    Import::StorageScan { table: t, after: a, limit: l, result }
                        if (t, a, *l) == (&table, &after, limit) =>
                    {
                        Some(result.clone())
                    }
                    _ => None,
                },
                || Import::StorageScan { table: table.clone(), after: after.clone(), limit, result: Ok(Vec::new()) },
            );
        }
        let result = self.caps.storage.scan(&table, after.as_deref(), limit).map_err(to_wit);
        self.tape.record(|| Import::StorageScan { table, after, limit, result: result.clone() });
        Ok(result)
    }

    fn stat(
        &mut self,
        table: String,
    ) -> wasmtime::Result<Result<bindings::storage::TableStat, bindings::storage::Error>> {
        if let Tape::Replay(p) = &mut self.tape {
            return p.import(
                |r| match r {
                    Import::StorageStat { table: t, result } if *t == table => Some(result.clone()),
                    _ => None,
                },
                || Import::StorageStat {
                    table: table.clone(),
                    result: Ok(bindings::storage::TableStat { entries: 0, bytes: 0 }),
                },
            );
        }
        let result = self
            .caps
            .storage
            .stat(&table)
            .map(|s| bindings::storage::TableStat { entries: s.entries, bytes: s.bytes })
            .map_err(to_wit);
        self.tape.record(|| Import::StorageStat { table, result: result.clone() });
        Ok(result)
    }
}

impl bindings::seed_file::Host for HostState {
    fn take(&mut self) -> wasmtime::Result<Option<Vec<u8>>> {
        if let Tape::Replay(p) = &mut self.tape {
            return p.import(
                |r| match r {
                    Import::SeedTake { result } => Some(result.clone()),
                    _ => None,
                },
                || Import::SeedTake { result: None },
            );
        }
        let result = self.caps.seed_file.take();
        self.tape.record(|| Import::SeedTake { result: result.clone() });
        Ok(result)
    }

    fn save(&mut self, seed: Vec<u8>) -> wasmtime::Result<Result<(), String>> {
        if let Tape::Replay(p) = &mut self.tape {
            return p.import(
                |r| match r {
                    Import::SeedSave { seed: s, result } if *s == seed => Some(result.clone()),
                    _ => None,
                },
                || Import::SeedSave { seed: seed.clone(), result: Ok(()) },
            );
        }
        let mut seed = seed;
        let result = self.caps.seed_file.save(&seed);
        self.tape.record(|| Import::SeedSave { seed: seed.clone(), result: result.clone() });
        zeroize::Zeroize::zeroize(&mut seed);
        Ok(result)
    }
}

impl bindings::log::Host for HostState {
    fn log(&mut self, level: bindings::log::Level, message: String) -> wasmtime::Result<()> {
        if let Tape::Replay(p) = &mut self.tape {
            // Checked, not emitted: a replay's log is its report.
            return p.import(
                |r| match r {
                    Import::Log { level: l, message: m } if (*l, m) == (level, &message) => Some(()),
                    _ => None,
                },
                || Import::Log { level, message: message.clone() },
            );
        }
        crate::caps::log::emit(level, &message);
        self.tape.record(|| Import::Log { level, message });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Traces name the wasmtime that ran them; the constant must follow the
    /// lock file when wasmtime is upgraded.
    #[test]
    fn the_recorded_wasmtime_version_is_the_locked_one() {
        let lock = include_str!("../../../Cargo.lock");
        let entry = format!("name = \"wasmtime\"\nversion = \"{WASMTIME_VERSION}\"");
        assert!(lock.contains(&entry), "Cargo.lock has another wasmtime than {WASMTIME_VERSION}");
    }
}
