//! The wasmtime runtime: one engine configured for determinism and the core
//! component compiled once ([`Runtime`]), ready to instantiate as many
//! [`Core`](crate::Core)s as the host wants.
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
//! # Security
//!
//! The component is embedded in this library at build time and is the only
//! code the engine runs. It gets exactly the five capability interfaces; the
//! import list is pinned by a test.
//!
//! # Limitations
//!
//! [`Runtime::with_component`] runs whatever component it is given; only
//! tests and replays of other builds use it.

use std::path::Path;

use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, Engine};

use crate::artifact::{self, Origin};
use crate::bindings;
use crate::capabilities::HostState;

/// The wasmtime this binary embeds (pinned in `host/Cargo.toml`; a unit test
/// checks it against `Cargo.lock`). Traces record it: fuel is only
/// comparable between runs of the same wasmtime.
pub const WASMTIME_VERSION: &str = "48.0.8";

/// The engine settings that affect what the core computes, as traces
/// record them; [`engine_config`] applies them.
pub const ENGINE_SETTINGS: &str =
    "cranelift; nan-canonicalization; relaxed-simd-deterministic; fuel; no epochs; stack 512 KiB; no threads";

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

/// The compiled component, ready to instantiate; shareable across threads.
#[derive(Clone)]
pub struct Runtime {
    pub(crate) engine: Engine,
    component: wasmtime::component::Component,
    pub(crate) pre: bindings::CorePre<HostState>,
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
