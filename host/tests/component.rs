//! The core component inside wasmtime, without sockets: its sandbox (the
//! exact import list), its resource limits, and that everything it does is a
//! function of its capability inputs.

mod common;

use std::collections::BTreeSet;

use tlskeeper::config::{CacheSettings, Settings};
use tlskeeper_engine::caps::NoSeedFile;
use tlskeeper_engine::storage::MemoryStorage;
use tlskeeper_engine::{CallError, Capabilities, Core, CoreError, EngineError, Limits};

use common::{ScriptedClock, SeededEntropy, runtime};

fn seeded_core(seed: u64, clock: &ScriptedClock, settings: &Settings) -> Core {
    let caps = Capabilities {
        clock: Box::new(clock.clone()),
        entropy: Box::new(SeededEntropy::new(seed)),
        storage: Box::new(MemoryStorage::new()),
        seed_file: Box::new(NoSeedFile),
    };
    Core::start(runtime(), caps, settings.core_config(), settings.limits()).expect("core starts")
}

/// The sandbox: the core imports tlskeeper's five capability interfaces and
/// nothing else — no `wasi:*`, so no files, sockets, clocks or randomness
/// behind the host's back. A dependency that drags in WASI fails here.
#[test]
fn imports_are_exactly_our_five_capabilities() {
    let imports: BTreeSet<String> = runtime().imports().into_iter().collect();
    let expected: BTreeSet<String> = ["clock", "entropy", "log", "seed-file", "storage"]
        .iter()
        .map(|i| format!("tlskeeper:core/{i}@0.1.0"))
        .collect();
    assert_eq!(imports, expected);
    assert_eq!(runtime().exports(), vec!["tlskeeper:core/manager@0.1.0".to_owned()]);
}

/// Everything the core returns is a function of its inputs: the same
/// entropy, clock and calls give the same seeds and keys; other entropy gives
/// other ones.
#[test]
fn outputs_depend_only_on_capability_inputs() {
    let settings = Settings::default();
    let run = |seed: u64| {
        let clock = ScriptedClock::new();
        let mut core = seeded_core(seed, &clock, &settings);
        let mut out = core.seed(32).unwrap();
        let key = core.ticket_key(None).unwrap().unwrap();
        out.extend_from_slice(&key.name);
        out.extend_from_slice(&key.cipher_key);
        clock.advance_secs(5000);
        out.extend(core.seed(255).unwrap());
        out
    };
    assert_eq!(run(1), run(1));
    assert_ne!(run(1), run(2));
}

/// Fuel is enforced: a budget too small for any call makes the core trap,
/// and the trap is reported as an error, not a crash.
#[test]
fn fuel_budget_is_enforced() {
    let clock = ScriptedClock::new();
    let settings = Settings::default();
    let caps = common::caps(&clock);
    let limits = Limits { fuel_per_call: 1_000, ..settings.limits() };
    match Core::start(runtime(), caps, settings.core_config(), limits) {
        Err(EngineError::Start(why)) => assert!(why.contains("trapped"), "{why}"),
        Err(other) => panic!("unexpected error: {other}"),
        Ok(_) => panic!("a 1000-unit budget should not be enough to configure the core"),
    }
}

/// Ordinary calls stay far below the default budget (a regression guard for
/// the budget's headroom, not a speed test).
#[test]
fn ordinary_calls_use_little_fuel() {
    let clock = ScriptedClock::new();
    let mut core = common::core(&clock);
    core.update("smtpd", "id", &[7u8; 140]).unwrap();
    core.lookup("smtpd", "id").unwrap();
    assert!(core.fuel_used() < Limits::default().fuel_per_call / 100, "{}", core.fuel_used());
}

/// Bounds and eviction behave inside wasm as the native unit tests show:
/// with room for three entries, the three newest survive.
#[test]
fn cache_bounds_hold_inside_the_component() {
    let mut settings = Settings::default();
    settings.caches.insert("smtpd".into(), CacheSettings { max_entries: 3, ..CacheSettings::default() });
    let clock = ScriptedClock::new();
    let mut core = seeded_core(7, &clock, &settings);
    for i in 0..5 {
        core.update("smtpd", &format!("id{i}"), format!("session{i}").as_bytes()).unwrap();
        clock.advance_secs(1);
    }
    let present: Vec<bool> = (0..5).map(|i| core.lookup("smtpd", &format!("id{i}")).unwrap().is_some()).collect();
    assert_eq!(present, [false, false, true, true, true]);
    let stats = core.stats().unwrap();
    let smtpd = stats.caches.iter().find(|c| c.name == "smtpd").unwrap();
    assert_eq!((smtpd.entries, smtpd.evicted), (3, 2));
}

/// Refusals arrive as typed errors, with the cache or length that caused
/// them.
#[test]
fn refusals_are_typed() {
    let clock = ScriptedClock::new();
    let mut core = common::core(&clock);
    assert_eq!(core.seed(0), Err(CallError::Refused(CoreError::BadSeedLength(0))));
    assert_eq!(core.policy("nosuch").unwrap_err(), CallError::Refused(CoreError::UnknownCache("nosuch".into())));
    assert!(matches!(core.ticket_key(Some(&[0u8; 15])), Err(CallError::Refused(CoreError::BadKeyNameLength(15)))));
    assert!(matches!(
        core.update("smtpd", "big", &vec![0u8; 64 * 1024]),
        Err(CallError::Refused(CoreError::SessionTooLarge(65536)))
    ));
}

/// Housekeeping removes expired sessions through the component and asks to
/// run again soon, never spinning without a backlog.
#[test]
fn housekeeping_sweeps_expired_sessions() {
    let clock = ScriptedClock::new();
    let mut core = common::core(&clock);
    for i in 0..600 {
        core.update("smtpd", &format!("id{i}"), b"s").unwrap();
    }
    clock.advance_secs(3601);
    let mut calls = 0;
    while core.housekeeping().unwrap() == 0 {
        calls += 1;
        assert!(calls < 10, "housekeeping never finished");
    }
    assert_eq!(calls, 2, "600 entries at 256 per call: two calls report a backlog");
    let stats = core.stats().unwrap();
    assert_eq!(stats.caches.iter().find(|c| c.name == "smtpd").unwrap().entries, 0);
    assert!(core.housekeeping().unwrap() > 0);
}

/// The compiled-core cache: the first start compiles and stores the
/// artifact, the next one loads it.
#[test]
fn compiled_core_is_cached_and_reused() {
    use tlskeeper_engine::{Origin, Runtime};
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    assert_eq!(Runtime::new(Some(&cache)).unwrap().origin(), Origin::Compiled);
    let files: Vec<_> = std::fs::read_dir(&cache).unwrap().collect();
    assert_eq!(files.len(), 1, "one artifact, no temporary files left");
    assert_eq!(Runtime::new(Some(&cache)).unwrap().origin(), Origin::Cached);
}

/// A cached artifact that others could have written is never loaded (it
/// is native code), and a corrupt one is replaced, not trusted.
#[test]
fn unsafe_or_corrupt_artifacts_are_not_loaded() {
    use std::os::unix::fs::PermissionsExt;
    use tlskeeper_engine::{Origin, Runtime, artifact};
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let runtime = Runtime::new(Some(&cache)).unwrap();
    let path = artifact::artifact_path(&cache, runtime.engine(), tlskeeper_engine::COMPONENT);
    assert!(path.is_file());

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    assert_eq!(Runtime::new(Some(&cache)).unwrap().origin(), Origin::Compiled);

    std::fs::write(&path, b"not a compiled component").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let runtime = Runtime::new(Some(&cache)).unwrap();
    assert_eq!(runtime.origin(), Origin::Compiled);
    assert_eq!(Runtime::new(Some(&cache)).unwrap().origin(), Origin::Cached, "the corrupt file was replaced");
}
