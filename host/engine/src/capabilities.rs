//! The capability bundle a core runs on ([`Capabilities`]) and the state a
//! wasmtime store holds for it ([`HostState`]): the capabilities, the
//! store's resource limits and the tape that records or replays every
//! boundary crossing.
//!
//! # Security
//!
//! The capabilities are the whole of what the core can reach: a clock, an
//! entropy source, the tables and the seed file (and a log). Whoever builds
//! a [`Capabilities`] decides what each one is; the core cannot name
//! anything else.
//!
//! # Limitations
//!
//! One bundle per store: the core's instance and its capabilities are
//! replaced together after a trap, never separately.

use wasmtime::{Store, StoreLimits, StoreLimitsBuilder};

use crate::Limits;
use crate::bindings;
use crate::caps::{Clock, Entropy, SeedStore};
use crate::runtime::Runtime;
use crate::storage::Storage;
use crate::tape::Tape;

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
    pub(crate) caps: Capabilities,
    limits: StoreLimits,
    pub(crate) tape: Tape,
}

/// A store holding `caps` and `tape`, under `limits`, with no instance yet.
pub(crate) fn new_store(runtime: &Runtime, caps: Capabilities, tape: Tape, limits: Limits) -> Store<HostState> {
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
pub(crate) fn instantiate(
    runtime: &Runtime,
    store: &mut Store<HostState>,
    limits: Limits,
) -> wasmtime::Result<bindings::Core> {
    store.data_mut().tape.instantiate()?;
    store.set_fuel(limits.fuel_per_call)?;
    runtime.pre.instantiate(store)
}

impl HostState {
    /// A store's state for the instant between a trapped store and its
    /// replacement.
    pub(crate) fn placeholder() -> HostState {
        HostState { caps: Capabilities::inert(), limits: StoreLimitsBuilder::new().build(), tape: Tape::Off }
    }
}
