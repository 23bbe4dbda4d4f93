//! Faults the daemon must survive, shown on the real socket with the real
//! component over a real sealed store:
//!
//! - a core that traps: the guest built with its never-shipped `test-fault`
//!   feature panics, spins or allocates without end when asked to look up a
//!   marker id; the host must answer that request with tlsmgr's FAIL, log
//!   the trap, reinstantiate the core over the same state and go on
//!   serving, with nothing stored lost;
//! - a disk that fails: the store's file sits behind a
//!   [`FaultyDisk`](tlskeeper_engine::storage::faulty::FaultyDisk) switched to
//!   "full" or "broken" under load; requests must fail cleanly (FAIL, never
//!   a wrong answer), and once the disk is back every request must succeed
//!   again, with every update that was answered OK still there.
//!
//! Logs are captured by a subscriber installed for this test binary, so a
//! test can show what an operator would read.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::{ScriptedClock, SeededEntropy, TestServer, guest_with_feature};
use tlskeeper::config::Settings;
use tlskeeper_engine::state::{assemble, store_options};
use tlskeeper_engine::storage::faulty::{Fault, FaultyDisk};
use tlskeeper_engine::storage::{FileOptions, FileStorage, OpenError};
use tlskeeper_engine::{Core, Runtime};
use tlskeeper_protocol::client::Client;
use tlskeeper_protocol::tlsmgr::{Reply, Request, Status};

/// The marker ids of `guest/src/fault.rs`.
const PANIC: &str = "tlskeeper-test-fault-panic";
const SPIN: &str = "tlskeeper-test-fault-spin";
const GROW: &str = "tlskeeper-test-fault-grow";

/// Everything logged by this test binary, from any thread.
fn logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&buffer);
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || Sink(Arc::clone(&sink)))
            .init();
        buffer
    })
}

struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Lines logged since `mark` (a length of the buffer) that contain `text`.
fn logged_since(mark: usize, text: &str) -> Vec<String> {
    let all = logs().lock().unwrap();
    String::from_utf8_lossy(&all[mark.min(all.len())..])
        .lines()
        .filter(|l| l.contains(text))
        .map(str::to_owned)
        .collect()
}

fn log_mark() -> usize {
    logs().lock().unwrap().len()
}

/// Fail if any of `secrets` was logged, raw, hex or base64.
fn assert_not_logged(secrets: &[&[u8]]) {
    use base64::Engine as _;
    let all = logs().lock().unwrap();
    for secret in secrets {
        let forms = [
            secret.to_vec(),
            hex::encode(secret).into_bytes(),
            base64::prelude::BASE64_STANDARD.encode(secret).into_bytes(),
        ];
        for form in forms {
            assert!(!all.windows(form.len()).any(|w| w == form.as_slice()), "a secret was logged");
        }
    }
}

/// A server over a sealed store in `dir` (created 0700 if missing, as the
/// daemon does; its file behind `disk`), running
/// the component `runtime`, with the daemon's default limits.
fn server_on_disk(runtime: &Runtime, dir: &Path, disk: &FaultyDisk) -> TestServer {
    let settings = Settings { state_dir: Some(dir.to_owned()), ..Settings::default() };
    let options = || FileOptions { disk: Some(disk.clone()), ..store_options(dir) };
    // A server stopped a moment ago may still be letting go of the store:
    // its caretaker ends on its own once the last handle is dropped.
    let deadline = Instant::now() + Duration::from_secs(10);
    let store = loop {
        match FileStorage::open_path(dir, options()) {
            Err(OpenError::Locked { .. }) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            opened => break opened.unwrap(),
        }
    };
    let state = assemble(Some(store), &settings.state_options()).unwrap();
    let clock = ScriptedClock::new();
    let caps = state.into_capabilities(Box::new(clock.clone()), Box::new(SeededEntropy::new(7)));
    let core = Core::start(runtime, caps, settings.core_config(), settings.limits()).unwrap();
    TestServer::with_core(core, clock, &settings)
}

fn update(client: &mut Client, id: &str, session: &[u8]) -> Status {
    let request = Request::Update { cache_type: "smtpd".into(), cache_id: id.into(), session: session.to_vec().into() };
    match client.request(&request).unwrap() {
        Reply::Update { status } => status,
        other => panic!("{other:?}"),
    }
}

fn lookup(client: &mut Client, id: &str) -> (Status, Vec<u8>) {
    match client.request(&Request::Lookup { cache_type: "smtpd".into(), cache_id: id.into() }).unwrap() {
        Reply::Lookup { status, session } => (status, session.to_vec()),
        other => panic!("{other:?}"),
    }
}

fn ticket_key(client: &mut Client, name: &[u8]) -> (Status, Vec<u8>) {
    match client.request(&Request::TicketKey { key_name: name.to_vec() }).unwrap() {
        Reply::TicketKey { status, keybuf } => (status, keybuf.to_vec()),
        other => panic!("{other:?}"),
    }
}

/// The 16-byte key name at the start of a keybuf.
fn key_name(keybuf: &[u8]) -> Vec<u8> {
    keybuf[..16].to_vec()
}

/// Each way a core can fail (a bug, a runaway loop, unbounded growth)
/// costs exactly the request that caused it: that request gets FAIL, the
/// trap is logged, and the same connection and another one go on being
/// served by a fresh instance that finds every session and ticket key
/// stored before.
#[test]
fn a_trapping_core_fails_one_request_and_the_daemon_goes_on() {
    let runtime = Runtime::with_component(&std::fs::read(guest_with_feature("test-fault")).unwrap(), None).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let server = server_on_disk(&runtime, &tmp.path().join("state"), &FaultyDisk::new());
    let mut client = server.client();
    let mut bystander = server.client();

    assert_eq!(update(&mut client, "kept", b"session stored before the faults"), Status::Ok);
    let (status, keybuf) = ticket_key(&mut client, b"");
    assert_eq!(status, Status::Ok);
    let name = key_name(&keybuf);

    for (marker, reason) in [(PANIC, "unreachable"), (SPIN, "fuel"), (GROW, "unreachable")] {
        let mark = log_mark();
        let started = Instant::now();
        assert_eq!(lookup(&mut client, marker), (Status::Fail, Vec::new()), "{marker}");
        let took = started.elapsed();
        let trapped = logged_since(mark, "ERROR tlskeeper_engine::core: core trapped");
        assert_eq!(trapped.len(), 1, "{marker}: {trapped:?}");
        assert!(trapped[0].contains(reason), "{marker}: the log line does not say why: {trapped:?}");
        assert!(logged_since(mark, "reinstantiat").iter().all(|l| !l.contains("cannot")), "{marker}");

        // The fresh instance has everything that was stored.
        assert_eq!(lookup(&mut client, "kept"), (Status::Ok, b"session stored before the faults".to_vec()), "{marker}");
        assert_eq!(ticket_key(&mut bystander, &name), (Status::Ok, keybuf.clone()), "{marker}");
        assert_eq!(update(&mut bystander, marker, b"after"), Status::Ok, "{marker}");
        eprintln!("{marker}: failed after {took:?}");
    }
    // The new instance's DRBG answers, and the encryption key is the same.
    match client.request(&Request::Seed { size: 32 }).unwrap() {
        Reply::Seed { status: Status::Ok, seed } => assert_eq!(seed.len(), 32),
        other => panic!("{other:?}"),
    }
    assert_eq!(ticket_key(&mut client, b""), (Status::Ok, keybuf.clone()));
    // Traps, reinstantiation and all: no key or session reached the log.
    assert_not_logged(&[&keybuf[16..], b"session stored before the faults"]);
}

/// Run `request` until `done` holds of its answer, for at most `limit`;
/// every answer seen on the way.
fn until<T: Clone>(limit: Duration, mut request: impl FnMut() -> T, done: impl Fn(&T) -> bool) -> Vec<T> {
    let deadline = Instant::now() + limit;
    let mut seen = Vec::new();
    loop {
        let answer = request();
        seen.push(answer.clone());
        if done(&answer) || Instant::now() > deadline {
            return seen;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A disk that fills up, or dies, under a steady stream of updates: the
/// requests that cannot be served get FAIL, lookups never return a wrong
/// session, the operator is told, and when the disk is back the daemon
/// serves again with no restart and every update it acknowledged intact.
#[test]
fn a_failing_disk_fails_requests_cleanly_and_the_daemon_recovers() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    let disk = FaultyDisk::new();
    let server = server_on_disk(common::runtime(), &dir, &disk);
    let mut client = server.client();
    let mut acknowledged: Vec<(String, Vec<u8>)> = Vec::new();
    let mut n = 0;
    let mut put = |client: &mut Client, acknowledged: &mut Vec<(String, Vec<u8>)>| {
        n += 1;
        let (id, session) = (format!("id-{n}"), format!("session-{n}").into_bytes());
        let status = update(client, &id, &session);
        assert!(matches!(status, Status::Ok | Status::Fail), "{status:?}");
        if status == Status::Ok {
            acknowledged.push((id, session));
        }
        status
    };
    for _ in 0..20 {
        assert_eq!(put(&mut client, &mut acknowledged), Status::Ok);
    }
    let (_, keybuf) = ticket_key(&mut client, b"");

    for fault in [Fault::Full, Fault::Broken] {
        let mark = log_mark();
        disk.set(fault);
        // Session writes wait in memory, so they fail only once the
        // caretaker's commit (about once a second) has met the disk.
        let seen = until(Duration::from_secs(10), || put(&mut client, &mut acknowledged), |s| *s == Status::Fail);
        assert_eq!(seen.last(), Some(&Status::Fail), "{fault:?}: no update failed");
        // While the disk is bad: FAIL or the right session, never another.
        for (id, session) in acknowledged.iter().take(5) {
            let (status, got) = lookup(&mut client, id);
            assert!(status == Status::Fail || (status == Status::Ok && got == *session), "{fault:?} {id}: {status:?}");
        }
        let (status, got) = ticket_key(&mut client, &key_name(&keybuf));
        assert!(status == Status::Fail || got == keybuf, "{fault:?}: {status:?}");
        let told = logged_since(mark, "store.redb");
        assert!(told.iter().any(|l| l.contains("os error")), "{fault:?}: the operator was not told: {told:?}");

        disk.set(Fault::None);
        let seen = until(Duration::from_secs(10), || put(&mut client, &mut acknowledged), |s| *s == Status::Ok);
        assert_eq!(seen.last(), Some(&Status::Ok), "{fault:?}: the daemon did not recover");
        assert!(!logged_since(mark, "reopened after an I/O error").is_empty(), "{fault:?}");
        for _ in 0..5 {
            assert_eq!(put(&mut client, &mut acknowledged), Status::Ok, "{fault:?}");
        }
    }

    // Nothing acknowledged was lost, in memory or on disk.
    for (id, session) in &acknowledged {
        assert_eq!(lookup(&mut client, id), (Status::Ok, session.clone()), "{id}");
    }
    assert_eq!(ticket_key(&mut client, &key_name(&keybuf)), (Status::Ok, keybuf.clone()));
    drop(client);
    server.stop();
    let server = server_on_disk(common::runtime(), &dir, &FaultyDisk::new());
    let mut client = server.client();
    for (id, session) in &acknowledged {
        assert_eq!(lookup(&mut client, id), (Status::Ok, session.clone()), "{id} after a restart");
    }
    let sessions: Vec<&[u8]> = acknowledged.iter().map(|(_, s)| s.as_slice()).collect();
    assert_not_logged(&[&[&keybuf[16..]], sessions.as_slice()].concat());
}
