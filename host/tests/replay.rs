//! Record and replay, end to end: traces recorded by the real daemon and by
//! random workloads replay identically; a core changed by one line diverges
//! at the call that shows the change; damaged traces are errors, not panics.
//!
//! The changed core is the guest built with its `test-divergence` feature
//! (its `policy` reports the timeout plus one), by `common::guest_with_feature`.
//! It exists only for this test.

#![allow(clippy::unwrap_used)]

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use proptest::prelude::*;

use common::{BIN, Daemon, ScriptedClock, caps, cli_client, guest_with_feature, ok_stdout, recording, runtime};
use tlskeeper::config::Settings;
use tlskeeper_engine::Runtime;
use tlskeeper_engine::replay::replay;
use tlskeeper_engine::trace::file::{TraceWriter, read};
use tlskeeper_engine::trace::{Call, Event};

fn replay_file(path: &Path, runtime: &Runtime) -> tlskeeper_engine::replay::Report {
    replay(read(path).unwrap(), runtime, |_, _| {}).unwrap()
}

/// One step of a random workload.
#[derive(Debug, Clone)]
enum Op {
    Seed(u32),
    Update(u8, u8, Vec<u8>),
    Lookup(u8, u8),
    Delete(u8, u8),
    EncryptKey,
    DecryptKey(usize),
    KeyName(Vec<u8>),
    Policy(u8),
    Housekeeping,
    Stats,
    Advance(u64),
}

const CACHES: [&str; 4] = ["smtpd", "smtp", "lmtp", "nosuch"];

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u32..300).prop_map(Op::Seed),
        (0u8..4, 0u8..16, proptest::collection::vec(any::<u8>(), 0..300)).prop_map(|(c, i, s)| Op::Update(c, i, s)),
        (0u8..4, 0u8..16).prop_map(|(c, i)| Op::Lookup(c, i)),
        (0u8..4, 0u8..16).prop_map(|(c, i)| Op::Delete(c, i)),
        Just(Op::EncryptKey),
        (0usize..8).prop_map(Op::DecryptKey),
        proptest::collection::vec(any::<u8>(), 0..20).prop_map(Op::KeyName),
        (0u8..4).prop_map(Op::Policy),
        Just(Op::Housekeeping),
        Just(Op::Stats),
        prop_oneof![0u64..10, 0u64..4000].prop_map(Op::Advance),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Any workload, recorded and replayed on the same core, gives the same
    /// results, the same imports in the same order and the same fuel, call
    /// by call (the replay checks all three and stops at the first
    /// difference).
    #[test]
    fn random_workloads_replay_identically(ops in proptest::collection::vec(op(), 1..60)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.trace");
        let clock = ScriptedClock::new();
        let mut settings = Settings::default();
        settings.caches.get_mut("lmtp").unwrap().enabled = false;
        settings.caches.get_mut("smtp").unwrap().max_entries = 4;
        let mut core = recording(&path, &settings, caps(&clock));
        let mut names: Vec<Vec<u8>> = Vec::new();
        let mut calls = 1; // configure
        for op in ops {
            calls += 1;
            match op {
                Op::Seed(n) => drop(core.seed(n)),
                Op::Update(c, i, s) => drop(core.update(CACHES[c as usize], &format!("id{i}"), &s)),
                Op::Lookup(c, i) => drop(core.lookup(CACHES[c as usize], &format!("id{i}"))),
                Op::Delete(c, i) => drop(core.delete(CACHES[c as usize], &format!("id{i}"))),
                Op::EncryptKey => {
                    if let Ok(Some(k)) = core.ticket_key(None) {
                        names.push(k.name.to_vec());
                    }
                }
                Op::DecryptKey(i) => {
                    let name = names.get(i).cloned().unwrap_or_else(|| vec![7; 16]);
                    drop(core.ticket_key(Some(&name)));
                }
                Op::KeyName(name) => drop(core.ticket_key(Some(&name))),
                Op::Policy(c) => drop(core.policy(CACHES[c as usize])),
                Op::Housekeeping => drop(core.housekeeping()),
                Op::Stats => drop(core.stats()),
                Op::Advance(secs) => {
                    clock.advance_secs(secs);
                    calls -= 1;
                }
            }
        }
        drop(core);
        let trace = read(&path).unwrap();
        let returns = trace.events.iter().filter(|e| matches!(e, Event::Return(_))).count();
        prop_assert_eq!(returns, calls);
        let report = replay(trace, runtime(), |_, _| {}).unwrap();
        prop_assert!(report.identical(), "{}", report);
        prop_assert_eq!(report.calls_replayed, calls as u64);
        prop_assert!(report.fuel_compared);
        prop_assert_eq!(report.fuel_replayed, report.fuel_recorded);
    }
}

/// A core that differs by one line diverges exactly at the first call that
/// shows the difference, and the report says what the trace had and what
/// the core did instead; the CLI says the same and exits 1.
#[test]
fn a_changed_core_diverges_at_the_call_that_shows_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.trace");
    let clock = ScriptedClock::new();
    let mut core = recording(&path, &Settings::default(), caps(&clock));
    core.seed(32).unwrap(); // call 2 (configure is call 1)
    core.update("smtpd", "a", b"session").unwrap(); // 3
    core.ticket_key(None).unwrap(); // 4
    core.policy("smtpd").unwrap(); // 5: where the changed core differs
    core.lookup("smtpd", "a").unwrap(); // 6
    drop(core);

    // The same trace replays identically on the core that recorded it...
    assert!(replay_file(&path, runtime()).identical());
    // ...and not on the changed one.
    let changed = Runtime::with_component(&fs::read(guest_with_feature("test-divergence")).unwrap(), None).unwrap();
    let report = replay_file(&path, &changed);
    let d = report.divergence.clone().unwrap_or_else(|| panic!("no divergence: {report}"));
    assert_eq!((d.call, d.export.as_str()), (5, "policy"), "{report}");
    assert!(d.expected.contains("timeout 3600") && d.actual.contains("timeout 3601"), "{report}");
    assert!(!report.fuel_compared, "another build's fuel is not comparable");
    assert_eq!(report.calls_replayed, 5);

    let out = Command::new(BIN)
        .arg("replay")
        .arg(&path)
        .arg("--component")
        .arg(guest_with_feature("test-divergence"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("divergence at call 5 (policy)"), "{stdout}");
}

/// `serve --record` writes a private trace of a real daemon's run, which
/// `tlskeeper replay` replays identically, in text and in JSON.
#[test]
fn a_recorded_daemon_replays_identically() {
    let dir = tempfile::tempdir().unwrap();
    let (socket, trace) = (dir.path().join("s"), dir.path().join("run.trace"));
    let mut daemon = Daemon::spawn_with(
        &socket,
        &dir.path().join("log"),
        &["--no-compile-cache".as_ref(), "--record".as_ref(), trace.as_os_str()],
    );
    daemon.wait_ready();
    for args in [
        &["seed", "32"][..],
        &["update", "smtpd", "id1", "308187020101"],
        &["lookup", "smtpd", "id1"],
        &["tktkey"],
        &["policy", "smtp"],
    ] {
        ok_stdout(&cli_client(&socket, args), "request");
    }
    assert!(!cli_client(&socket, &["lookup", "nosuch", "x"]).status.success());
    daemon.sigterm();
    assert!(daemon.wait_exit(Duration::from_secs(10), "stop").success(), "{}", daemon.log());
    assert_eq!(fs::metadata(&trace).unwrap().permissions().mode() & 0o777, 0o600);

    let calls: Vec<Call> = read(&trace)
        .unwrap()
        .events
        .into_iter()
        .filter_map(|e| match e {
            Event::Call(c) => Some(c),
            _ => None,
        })
        .collect();
    let exports: Vec<&str> = calls.iter().map(Call::export).collect();
    for export in ["configure", "seed", "update-session", "lookup-session", "ticket-key", "policy", "checkpoint"] {
        assert!(exports.contains(&export), "{export} missing from {exports:?}");
    }

    let out = Command::new(BIN).arg("replay").arg(&trace).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(&format!("{} calls replayed, identical", calls.len())), "{stdout}");
    let out = Command::new(BIN).arg("replay").arg("--json").arg(&trace).output().unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["calls_replayed"], serde_json::json!(calls.len()));
    assert_eq!(json["divergence"], serde_json::Value::Null);
    assert_eq!(json["fuel_compared"], serde_json::json!(true));
}

/// A trace cut off mid-call (a killed recorder) replays up to its last
/// whole call and says so; a damaged or foreign file is an error with a
/// message, exit status 65, never a panic.
#[test]
fn cut_off_and_damaged_traces() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.trace");
    let clock = ScriptedClock::new();
    let mut core = recording(&path, &Settings::default(), caps(&clock));
    for n in 1..=20 {
        core.seed(n).unwrap();
    }
    drop(core);
    let full = fs::read(&path).unwrap();
    let replay_cli = |bytes: &[u8]| {
        let p = dir.path().join("case.trace");
        fs::write(&p, bytes).unwrap();
        let out = Command::new(BIN).arg("replay").arg(&p).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
    };

    let (code, text) = replay_cli(&full[..full.len() - 10]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("20 calls replayed, identical") && text.contains("cut off"), "{text}");

    let mut damaged = full.clone();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0x40;
    let (code, text) = replay_cli(&damaged);
    assert_eq!(code, Some(65), "{text}");
    assert!(text.contains("is corrupt at frame"), "{text}");

    let (code, text) = replay_cli(b"GIF89a not a trace");
    assert_eq!(code, Some(65), "{text}");
    assert!(text.contains("is not a tlskeeper trace"), "{text}");
    let (code, text) = replay_cli(b"");
    assert_eq!(code, Some(65), "{text}");
}

/// Write `events` as a trace with `header` (for traces edited by a test).
fn write_trace(path: &Path, header: &tlskeeper_engine::trace::Header, events: &[Event]) {
    let mut w = TraceWriter::create(path, header).unwrap();
    for e in events {
        w.write(e).unwrap();
    }
}

/// An import the core makes differently from the trace (here: the trace
/// says `update` wrote another key) is reported at its call, with the
/// import the trace has and the one the core made; the replay stops there.
#[test]
fn an_import_that_differs_is_reported_at_its_call() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.trace");
    let clock = ScriptedClock::new();
    let mut core = recording(&path, &Settings::default(), caps(&clock));
    core.seed(32).unwrap(); // 2
    core.update("smtpd", "a", b"session").unwrap(); // 3
    core.lookup("smtpd", "a").unwrap(); // 4
    drop(core);

    let mut trace = read(&path).unwrap();
    let put = trace.events.iter_mut().find_map(|e| match e {
        Event::Import(tlskeeper_engine::trace::Import::StoragePut { key, .. }) => Some(key),
        _ => None,
    });
    put.unwrap()[0] ^= 1;
    let edited = dir.path().join("edited.trace");
    write_trace(&edited, &trace.header, &trace.events);

    let report = replay_file(&edited, runtime());
    let d = report.divergence.clone().unwrap_or_else(|| panic!("no divergence: {report}"));
    assert_eq!((d.call, d.export.as_str()), (3, "update-session"), "{report}");
    assert!(d.expected.starts_with("storage.put(") && d.actual.starts_with("storage.put("), "{report}");
    assert_ne!(d.expected, d.actual);
    assert!(!report.identical());
    assert_eq!(report.calls_replayed, 3, "stops at the divergence");
}

/// A core that traps while recording is reinstantiated (a new instance and
/// its configure in the trace), and the replay traps and recovers the same
/// way, identically.
#[test]
fn traps_and_recovery_replay_identically() {
    let dir = tempfile::tempdir().unwrap();
    // The first update creates the cache id salt, which instantiates the
    // DRBG: by far the dearest call here; a budget below it and above the
    // rest traps exactly that call.
    let run = |path: &Path, settings: &Settings| {
        let clock = ScriptedClock::new();
        let mut core = recording(path, settings, caps(&clock));
        let before = core.policy("smtpd").map(drop);
        let heavy = core.update("smtpd", "a", b"session");
        // Light on the fresh instance too (an update or a seed would
        // instantiate its DRBG again).
        let after = core.policy("smtpd").map(drop);
        (before, heavy, after)
    };
    let probe = dir.path().join("probe.trace");
    let (_, heavy, _) = run(&probe, &Settings::default());
    heavy.unwrap();
    let fuel: Vec<u64> = read(&probe)
        .unwrap()
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Return(r) => Some(r.fuel),
            _ => None,
        })
        .collect();
    let (light, heavy_fuel) = (fuel[0].max(fuel[1]).max(fuel[3]), fuel[2]);
    assert!(heavy_fuel > 2 * light, "the first update must cost far more than the rest: {fuel:?}");

    let settings = Settings { fuel_per_call: (light + heavy_fuel) / 2, ..Settings::default() };
    let path = dir.path().join("trap.trace");
    let (before, heavy, after) = run(&path, &settings);
    assert!(before.is_ok() && after.is_ok(), "{before:?} {after:?}");
    assert!(matches!(heavy, Err(tlskeeper_engine::CallError::Trapped(_))), "{heavy:?}");
    let events = read(&path).unwrap().events;
    assert_eq!(events.iter().filter(|e| matches!(e, Event::Instantiate)).count(), 2, "start and recovery");

    let report = replay_file(&path, runtime());
    assert!(report.identical(), "{report}");
    assert_eq!(report.calls_replayed, 5, "configure, policy, update (trap), configure again, policy");
}
