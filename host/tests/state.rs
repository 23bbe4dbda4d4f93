//! Durable state: the sealed store, its key-encryption key (KEK) and the
//! seed file, checked from outside the library.
//!
//! Two ways in. The real `tlskeeper serve` binary, as a child process, shows
//! what an operator sees: state surviving a restart, and start-up refused
//! with an exit status and a message when the state cannot be used. The real
//! core component over `state::open`, in this process with a scripted clock,
//! shows what time and tampering do to stored keys and sessions; there the
//! store is also opened raw, without sealing, to look at what is on disk.
//!
//! Every store lives in a temporary directory. Children are started and
//! stopped (by PID) through the shared harness in `common`; they share one
//! compiled-core cache in Cargo's per-target temporary directory, so only
//! the first start of a build pays for compiling the core.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tlskeeper::config::Settings;
use tlskeeper_engine::Core;
use tlskeeper_engine::caps::OsEntropy;
use tlskeeper_engine::state::{self, StateError, TICKET_KEY_TABLE};
use tlskeeper_engine::storage::file::FILE_NAME;
use tlskeeper_engine::storage::{FileOptions, FileStorage, SealError, Storage, kek};

use common::{Daemon, ScriptedClock, cli_client, ok_stdout, runtime};

/// The core's tables for the smtpd cache: its entries and their age index.
const SMTPD: &str = "scache/smtpd";
const SMTPD_AGE: &str = "scache-age/smtpd";
/// Every table a store written by these tests holds.
const TABLES: [&str; 4] = [TICKET_KEY_TABLE, SMTPD, SMTPD_AGE, "scache-salt"];
/// redb's page size, for choosing where to flip bytes.
const PAGE: usize = 4096;

/// A session of Postfix's typical size, easy to spot in a file.
fn session_pattern() -> Vec<u8> {
    b"<tlskeeper plaintext session marker>".iter().copied().cycle().take(140).collect()
}

/// True when `needle` occurs anywhere in `haystack`.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Permission bits of `path`.
fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode() & 0o7777
}

fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// A new directory that only we may use, as a state directory must be.
fn private_dir(path: &Path) -> PathBuf {
    fs::DirBuilder::new().mode(0o700).create(path).unwrap();
    path.to_path_buf()
}

/// Default settings with the state in `dir`.
fn settings(dir: &Path) -> Settings {
    Settings { state_dir: Some(dir.to_path_buf()), ..Settings::default() }
}

/// The real core over the state `settings` name, on `clock`.
fn start(settings: &Settings, clock: &ScriptedClock) -> Core {
    let state = state::open(&settings.state_options()).unwrap_or_else(|e| panic!("the state opens: {e}"));
    let caps = state.into_capabilities(Box::new(clock.clone()), Box::new(OsEntropy));
    Core::start(runtime(), caps, settings.core_config(), settings.limits()).expect("core starts")
}

/// `state::open`'s error; `State` has no `Debug`, so no `unwrap_err`.
fn open_error(settings: &Settings) -> StateError {
    match state::open(&settings.state_options()) {
        Ok(_) => panic!("the state opened"),
        Err(e) => e,
    }
}

/// The store in `dir` as it is on disk: no sealing, records as stored.
fn raw_store(dir: &Path) -> FileStorage {
    FileStorage::open_path(dir, FileOptions::default()).unwrap_or_else(|e| panic!("raw open: {e}"))
}

/// The storage key a session id had before ids were keyed under a salt.
fn legacy_session_key(id: &str) -> Vec<u8> {
    Sha256::digest(id.as_bytes()).to_vec()
}

/// Every entry of `table`, paged as the core reads it.
fn scan_all(storage: &mut dyn Storage, table: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut all: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    loop {
        let page = storage.scan(table, all.last().map(|(k, _)| k.as_slice()), 16).unwrap();
        if page.is_empty() {
            return all;
        }
        all.extend(page);
    }
}

/// The compiled-core cache the children share (see the module docs).
fn compile_cache() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("state-tests-compile-cache")
}

/// `tlskeeper serve --state-dir <state>` on `socket`, output to `log`.
fn serve(state: &Path, socket: &Path, log: &Path) -> Daemon {
    let cache = compile_cache();
    Daemon::spawn_with(
        socket,
        log,
        &["--state-dir".as_ref(), state.as_os_str(), "--compile-cache".as_ref(), cache.as_os_str()],
    )
}

/// A `serve` that must refuse to start: its exit status and output.
fn refused_start(state: &Path, socket: &Path, log: &Path) -> (Option<i32>, String) {
    let mut daemon = serve(state, socket, log);
    let status = daemon.wait_exit(Duration::from_secs(30), "serve over unusable state");
    assert!(!socket.exists(), "a socket was bound although the state was refused");
    (status.code(), daemon.log())
}

/// What reading a store opened after a flipped byte found.
#[derive(Default)]
struct Check {
    /// Values that differ from what was stored: must never happen.
    wrong: Vec<String>,
    /// Stored values that read as absent.
    missing: usize,
    /// Reads that failed with an error.
    read_errors: usize,
}

/// The value of `name=` in a line of client output.
fn field(line: &str, name: &str) -> String {
    let prefix = format!("{name}=");
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("no {name} in {line:?}"))
        .to_owned()
}

/// Proves keys, sessions and the seed file survive a restart of the real
/// binary: the KEK and seed are private files, the same ticket key comes
/// back by name and as the current key, the session comes back byte for
/// byte, and the seed left at exit is consumed and replaced.
#[test]
fn keys_sessions_and_the_seed_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let socket = dir.path().join("s");
    let session_hex = hex::encode(session_pattern());

    let mut first = serve(&state, &socket, &dir.path().join("log1"));
    first.wait_ready();
    let key = ok_stdout(&cli_client(&socket, &["tktkey", "--show-secrets"]), "tktkey");
    let name = field(&key, "name");
    // The whole line is compared below: it must hold the secrets, or equal
    // lines would prove little.
    assert_eq!((field(&key, "cipher_key").len(), field(&key, "hmac_key").len()), (64, 64), "{key}");
    let update = ok_stdout(&cli_client(&socket, &["update", "smtpd", "restart-id", &session_hex]), "update");
    assert_eq!(update, "status=OK");
    first.sigterm();
    let status = first.wait_exit(Duration::from_secs(30), "first run, SIGTERM");
    assert!(status.success(), "{status}:\n{}", first.log());

    assert_eq!(mode(&state), 0o700, "state directory");
    assert_eq!(mode(&state.join(FILE_NAME)), 0o600, "store");
    assert_eq!(mode(&state.join("kek")), 0o600, "key-encryption key");
    let seed_path = state.join("seed");
    assert_eq!(mode(&seed_path), 0o600, "seed file");
    let seed_at_exit = fs::read(&seed_path).unwrap();
    assert_eq!(seed_at_exit.len(), 64);

    let mut second = serve(&state, &socket, &dir.path().join("log2"));
    second.wait_ready();
    let named = ok_stdout(&cli_client(&socket, &["tktkey", &name, "--show-secrets"]), "tktkey <name>");
    assert_eq!(named, key, "the key comes back by name with the same secrets and expiry");
    let current = ok_stdout(&cli_client(&socket, &["tktkey", "--show-secrets"]), "tktkey after restart");
    assert_eq!(current, key, "and is still the current encryption key");
    let lookup = ok_stdout(&cli_client(&socket, &["lookup", "smtpd", "restart-id", "--show-secrets"]), "lookup");
    assert_eq!(lookup, format!("status=OK session={session_hex}"));

    // The first housekeeping takes the seed (removing it) and saves a new
    // one; the caretaker runs it concurrently with the requests above.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match fs::read(&seed_path) {
            Ok(seed) if seed != seed_at_exit => {
                assert_eq!(seed.len(), 64);
                break;
            }
            _ => {}
        }
        assert!(Instant::now() < deadline, "the seed file was not replaced:\n{}", second.log());
        thread::sleep(Duration::from_millis(50));
    }
    assert!(second.log().contains("mixed 64 bytes of saved seed"), "the saved seed was not used:\n{}", second.log());
    second.sigterm();
    let status = second.wait_exit(Duration::from_secs(30), "second run, SIGTERM");
    assert!(status.success(), "{status}:\n{}", second.log());
}

/// Proves time is applied to what comes back from disk: with the smtpd
/// timeout at its 120 s floor, a key and a session reopened 90 s later are
/// served, the same ones reopened 10 minutes later are not, and after
/// housekeeping the store holds neither.
#[test]
fn expired_keys_and_sessions_do_not_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("state");
    let mut settings = settings(&state_dir);
    // Ticket keys follow smtpd's timeout T: one encrypts for T/2 and
    // decrypts for T/2 more, so this key decrypts for about 120 s.
    settings.caches.get_mut("smtpd").unwrap().timeout = 120;
    let clock = ScriptedClock::new();
    let session = session_pattern();

    let mut core = start(&settings, &clock);
    let key = core.ticket_key(None).unwrap().unwrap();
    core.update("smtpd", "aging-id", &session).unwrap();
    core.flush_storage().unwrap();
    drop(core);

    // Inside both windows: everything comes back (the test can fail this
    // way too).
    clock.advance_secs(90);
    let mut core = start(&settings, &clock);
    let back = core.ticket_key(Some(&key.name)).unwrap().expect("a key inside its decrypt window comes back");
    assert!(back == key, "the key came back changed");
    assert_eq!(core.lookup("smtpd", "aging-id").unwrap().as_deref(), Some(&session[..]));
    drop(core);

    clock.advance_secs(510);
    let mut core = start(&settings, &clock);
    assert!(core.ticket_key(Some(&key.name)).unwrap().is_none(), "an expired key was served");
    assert_eq!(core.lookup("smtpd", "aging-id").unwrap(), None, "an expired session was served");
    let mut calls = 0;
    while core.housekeeping().unwrap() == 0 {
        calls += 1;
        assert!(calls < 10, "housekeeping never finished");
    }
    core.flush_storage().unwrap();
    drop(core);

    let mut raw = raw_store(&state_dir);
    let names: Vec<Vec<u8>> = scan_all(&mut raw, TICKET_KEY_TABLE).into_iter().map(|(k, _)| k).collect();
    assert!(!names.contains(&key.name.to_vec()), "the expired key's record is still stored");
    assert_eq!(raw.stat(SMTPD).unwrap().entries, 0, "an expired session is still stored");
    assert_eq!(raw.stat(SMTPD_AGE).unwrap().entries, 0, "its age-index entry is still stored");
}

/// Proves a copy of `store.redb` without its KEK reveals nothing and opens
/// nowhere: no session or key bytes in the file, a copy without the KEK
/// refused (in process and by the binary, status 78) with a message naming
/// the missing file, and a different KEK refused naming both fingerprints.
#[test]
fn a_copy_of_the_store_without_its_kek_reveals_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("state");
    let settings = settings(&state_dir);
    let clock = ScriptedClock::new();
    let session = session_pattern();

    let mut core = start(&settings, &clock);
    for i in 0..8 {
        core.update("smtpd", &format!("copy-id-{i}"), &session).unwrap();
    }
    let key = core.ticket_key(None).unwrap().unwrap();
    core.flush_storage().unwrap();
    drop(core);

    let store = state_dir.join(FILE_NAME);
    let bytes = fs::read(&store).unwrap();
    // Controls: table names and key names are stored in clear, so finding
    // them shows the search works on this file.
    assert!(contains(&bytes, b"t/scache/smtpd") && contains(&bytes, &key.name), "the records are not in this file");
    assert!(!contains(&bytes, &session), "a session is stored in clear");
    assert!(!contains(&bytes, &session[..24]), "part of a session is stored in clear");
    assert!(!contains(&bytes, &key.cipher_key), "a ticket cipher key is stored in clear");
    assert!(!contains(&bytes, &key.hmac_key), "a ticket HMAC key is stored in clear");

    let copy = private_dir(&dir.path().join("copy"));
    fs::copy(&store, copy.join(FILE_NAME)).unwrap();
    let copy_settings = self::settings(&copy);
    let copy_kek = copy.join("kek");
    let e = open_error(&copy_settings);
    assert!(matches!(&e, StateError::KekMissing { kek, .. } if *kek == copy_kek), "{e:?}");
    let message = e.to_string();
    assert!(message.contains(&copy_kek.display().to_string()) && message.contains("restore"), "{message}");
    assert!(!copy_kek.exists(), "a new key was created for a store sealed under another");

    let (status, log) = refused_start(&copy, &dir.path().join("s"), &dir.path().join("log"));
    assert_eq!(status, Some(78), "{log}");
    assert!(log.contains(&copy_kek.display().to_string()) && log.contains("restore"), "{log}");
    assert!(!copy_kek.exists(), "the binary created a new key for a store sealed under another");

    let original = kek::load(&state_dir.join("kek")).unwrap().unwrap().fingerprint();
    let other = kek::create(&copy_kek).unwrap().fingerprint();
    let e = open_error(&copy_settings);
    match &e {
        StateError::Seal { source: SealError::WrongKek { stored, given, .. }, .. } => {
            assert_eq!((stored, given), (&original, &other));
        }
        other => panic!("expected WrongKek, got {other:?}"),
    }
    let message = e.to_string();
    assert!(message.contains(&original) && message.contains(&other), "{message}");
}

/// Proves tampering is never served, record by record and byte by byte:
/// (a) a flipped byte in a stored session or ticket-key record makes a miss
/// (not an error), a new key is minted, and the records are removed; (b) a
/// flipped byte anywhere in the file either stops the open with a message
/// naming the store, or opens a store that serves original values or
/// nothing, and never panics.
#[test]
fn flipped_bytes_are_never_served() {
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("state");
    let settings = settings(&state_dir);
    let clock = ScriptedClock::new();
    let session = session_pattern();

    // (a) Records. Ids are keyed under a salt sealed in the store, so the
    // tampered session's record is found as the one its update added.
    let mut core = start(&settings, &clock);
    core.update("smtpd", "tampered-id", &session).unwrap();
    core.flush_storage().unwrap();
    drop(core);
    let tampered_key = scan_all(&mut raw_store(&state_dir), SMTPD).pop().unwrap().0;
    let mut core = start(&settings, &clock);
    core.update("smtpd", "intact-id", &session).unwrap();
    let key = core.ticket_key(None).unwrap().unwrap();
    core.flush_storage().unwrap();
    drop(core);

    let flip = |raw: &mut FileStorage, table: &str, key: &[u8]| {
        let mut record = raw.get(table, key).unwrap().unwrap_or_else(|| panic!("no record in {table}"));
        let middle = record.len() / 2;
        record[middle] ^= 0x01;
        raw.put(table, key, &record).unwrap();
    };
    let mut raw = raw_store(&state_dir);
    flip(&mut raw, SMTPD, &tampered_key);
    flip(&mut raw, TICKET_KEY_TABLE, &key.name);
    drop(raw);

    let mut core = start(&settings, &clock);
    assert_eq!(core.lookup("smtpd", "tampered-id").unwrap(), None, "a tampered session was served");
    assert_eq!(core.lookup("smtpd", "intact-id").unwrap().as_deref(), Some(&session[..]), "one bad record is one miss");
    assert!(core.ticket_key(Some(&key.name)).unwrap().is_none(), "a tampered key was served");
    let new_key = core.ticket_key(None).unwrap().unwrap();
    assert_ne!(new_key.name, key.name, "no new key was minted");
    core.flush_storage().unwrap();
    drop(core);
    let mut raw = raw_store(&state_dir);
    assert_eq!(raw.get(SMTPD, &tampered_key).unwrap(), None, "the tampered session was kept");
    assert_eq!(raw.get(TICKET_KEY_TABLE, &key.name).unwrap(), None, "the tampered key was kept");
    assert!(raw.get(TICKET_KEY_TABLE, &new_key.name).unwrap().is_some(), "the new key was not stored");
    drop(raw);

    // (b) The file: a store with a few sessions and a key, then one
    // flipped byte per case.
    let base = dir.path().join("base");
    let base_settings = self::settings(&base);
    let mut core = start(&base_settings, &clock);
    for i in 0..5 {
        core.update("smtpd", &format!("flip-id-{i}"), &session).unwrap();
    }
    core.ticket_key(None).unwrap().unwrap();
    core.flush_storage().unwrap();
    drop(core);
    let mut originals: BTreeMap<(&str, Vec<u8>), Vec<u8>> = BTreeMap::new();
    {
        let mut state = state::open(&base_settings.state_options()).unwrap_or_else(|e| panic!("{e}"));
        for table in TABLES {
            for (k, v) in scan_all(state.storage.as_mut(), table) {
                originals.insert((table, k), v);
            }
        }
    }
    assert_eq!(originals.len(), 12, "5 sessions, their index entries, one key and the id salt");
    let original = fs::read(base.join(FILE_NAME)).unwrap();

    // Every byte of the headers, every 97th byte of each page that holds
    // anything, and a coarser spread over free space (all zeros, most of a
    // small store: redb keeps the file at 1 MiB or more), to stay quick.
    let used: Vec<bool> = original.chunks(PAGE).map(|page| page.iter().any(|&b| b != 0)).collect();
    let mut offsets: Vec<usize> = (0..512)
        .chain((512..original.len()).step_by(97).filter(|&o| used[o / PAGE]))
        .chain((0..original.len()).step_by(4099).filter(|&o| !used[o / PAGE]))
        .collect();
    offsets.sort_unstable();
    offsets.dedup();
    // Each case reads the KEK from the base directory, and has no seed file.
    let case = dir.path().join("case");
    let case_settings =
        Settings { kek_file: Some(base.join("kek")), seed_file: Some(PathBuf::new()), ..self::settings(&case) };
    let (mut refused, mut intact, mut partial, mut read_errors) = (0, 0, 0, 0);
    let mut violations = Vec::new();
    let started = Instant::now();
    for &offset in &offsets {
        if case.exists() {
            fs::remove_dir_all(&case).unwrap();
        }
        private_dir(&case);
        let mut bytes = original.clone();
        bytes[offset] ^= 0xff;
        fs::write(case.join(FILE_NAME), &bytes).unwrap();
        set_mode(&case.join(FILE_NAME), 0o600);

        let outcome = catch_unwind(AssertUnwindSafe(|| match state::open(&case_settings.state_options()) {
            Err(e) => Err(e.to_string()),
            Ok(mut state) => {
                // Everything readable, by scan and by get, must be an
                // original value; a read may fail, cleanly.
                let mut check = Check::default();
                for table in TABLES {
                    let mut after: Option<Vec<u8>> = None;
                    loop {
                        let page = match state.storage.scan(table, after.as_deref(), 16) {
                            Ok(page) if !page.is_empty() => page,
                            Ok(_) => break,
                            Err(_) => {
                                check.read_errors += 1;
                                break;
                            }
                        };
                        for (k, v) in page {
                            if originals.get(&(table, k.clone())) != Some(&v) {
                                check.wrong.push(format!("scan of {table} returned a value not stored under that key"));
                            }
                            after = Some(k);
                        }
                    }
                }
                for ((table, k), v) in &originals {
                    match state.storage.get(table, k) {
                        Ok(Some(got)) if got != *v => check.wrong.push(format!("get of {table} returned other bytes")),
                        Ok(Some(_)) => {}
                        Ok(None) => check.missing += 1,
                        Err(_) => check.read_errors += 1,
                    }
                }
                Ok(check)
            }
        }));
        match outcome {
            Err(_) => violations.push(format!("offset {offset}: panicked")),
            Ok(Err(message)) => {
                refused += 1;
                if !(message.contains(FILE_NAME) && message.contains(&case.display().to_string())) {
                    violations.push(format!(
                        "offset {offset}: the message does not name the store and its directory: {message}"
                    ));
                }
            }
            Ok(Ok(check)) => {
                match (check.missing, check.read_errors) {
                    (0, 0) => intact += 1,
                    (_, 0) => partial += 1,
                    _ => read_errors += 1,
                }
                violations.extend(check.wrong.into_iter().map(|w| format!("offset {offset}: {w}")));
            }
        }
    }
    println!(
        "flipped bytes: {} offsets in a {}-byte store ({} of its {} pages in use): {refused} refused at open, {intact} opened with every record, \
         {partial} opened with records missing, {read_errors} opened with reads failing; {:.1} ms per case",
        offsets.len(),
        original.len(),
        used.iter().filter(|&&u| u).count(),
        used.len(),
        started.elapsed().as_secs_f64() * 1e3 / offsets.len() as f64
    );
    assert!(violations.is_empty(), "{} violations:\n{}", violations.len(), violations.join("\n"));
    assert!(refused > 0, "no flip was noticed at all");
}

/// Proves the binary stops with a status and an actionable message rather
/// than start over unusable state, and leaves that state as it was: (a) a
/// garbage store (73), (b) a KEK others may read (78), (c) a state
/// directory others may read (73).
#[test]
fn unreadable_state_stops_the_daemon_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("s");

    // (a) Not a store at all.
    let garbage = private_dir(&dir.path().join("garbage"));
    let store = garbage.join(FILE_NAME);
    fs::write(&store, [0x5a; 4096]).unwrap();
    set_mode(&store, 0o600);
    let (status, log) = refused_start(&garbage, &socket, &dir.path().join("log-a"));
    assert_eq!(status, Some(73), "{log}");
    let named = format!("{FILE_NAME} in {}", garbage.display());
    assert!(log.contains(&named) && log.contains("move it aside"), "{log}");
    assert_eq!(fs::read(&store).unwrap(), [0x5a; 4096], "the garbage store was replaced or changed");
    assert!(!garbage.join("kek").exists(), "a key was created for a store that did not open");

    // A real store with one key in it, for (b) and (c).
    let clock = ScriptedClock::new();
    let real_state = |name: &str| {
        let state_dir = dir.path().join(name);
        let mut core = start(&settings(&state_dir), &clock);
        let key = core.ticket_key(None).unwrap().unwrap();
        drop(core);
        (state_dir, key)
    };
    // The store still holds `key` once its files are usable again.
    let still_there = |state_dir: &Path, key: &tlskeeper_engine::keys::TicketKey| {
        let mut core = start(&settings(state_dir), &clock);
        assert!(core.ticket_key(Some(&key.name)).unwrap().is_some_and(|k| k == *key), "the stored key was lost");
    };

    // (b) A KEK group and others may read.
    let (loose_kek, key) = real_state("loose-kek");
    let kek_path = loose_kek.join("kek");
    set_mode(&kek_path, 0o644);
    let (status, log) = refused_start(&loose_kek, &socket, &dir.path().join("log-b"));
    assert_eq!(status, Some(78), "{log}");
    assert!(log.contains(&format!("chmod 600 {}", kek_path.display())), "{log}");
    set_mode(&kek_path, 0o600);
    still_there(&loose_kek, &key);

    // (c) A state directory group and others may read.
    let (open_dir, key) = real_state("open-dir");
    let before = fs::read(open_dir.join(FILE_NAME)).unwrap();
    set_mode(&open_dir, 0o755);
    let (status, log) = refused_start(&open_dir, &socket, &dir.path().join("log-c"));
    assert_eq!(status, Some(73), "{log}");
    assert!(log.contains(&open_dir.display().to_string()) && log.contains("chmod 700"), "{log}");
    assert_eq!(fs::read(open_dir.join(FILE_NAME)).unwrap(), before, "the store was touched");
    set_mode(&open_dir, 0o700);
    still_there(&open_dir, &key);
}

/// A cache marked volatile is served from memory and never reaches the
/// store, while the others do: this pins the table names the host routes
/// by (`storage::split::cache_tables`) to the ones the real core uses.
#[test]
fn volatile_caches_never_reach_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let state_dir = private_dir(&dir.path().join("state"));
    let mut s = settings(&state_dir);
    s.caches.get_mut("smtp").unwrap().persistent = false;
    let clock = ScriptedClock::new();
    let mut core = start(&s, &clock);
    core.update("smtp", "volatile-id", b"volatile session").unwrap();
    core.update("smtpd", "durable-id", b"durable session").unwrap();
    assert_eq!(core.lookup("smtp", "volatile-id").unwrap().as_deref(), Some(&b"volatile session"[..]));
    core.flush_storage().unwrap();
    drop(core);

    let mut raw = raw_store(&state_dir);
    for table in tlskeeper_engine::storage::split::cache_tables("smtp") {
        assert_eq!(raw.stat(&table).unwrap().entries, 0, "{table} reached the disk");
    }
    for table in tlskeeper_engine::storage::split::cache_tables("smtpd") {
        assert_eq!(raw.stat(&table).unwrap().entries, 1, "{table} should hold the smtpd session");
    }
}

/// Proves the migration of a store written before cache ids were keyed
/// under a salt: its sessions, stored under SHA-256 of their ids, are found
/// by the real core and moved under their keyed names, so that afterwards
/// no record of the store is named by a hash anyone can compute from a
/// guessed id.
#[test]
fn a_store_from_before_keyed_ids_is_migrated_as_its_sessions_are_used() {
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("state");
    let settings = settings(&state_dir);
    let clock = ScriptedClock::new();
    let session = session_pattern();
    let ids: Vec<String> = (0..5).map(|i| format!("[mx{i}.example.net]:25")).collect();
    {
        // Written as an earlier tlskeeper did: entry and age index under
        // SHA-256 of the id.
        let mut state = state::open(&settings.state_options()).unwrap();
        let stored_at = clock.now_secs();
        for id in &ids {
            let key = legacy_session_key(id);
            let mut value = vec![1u8];
            value.extend_from_slice(&stored_at.to_be_bytes());
            value.extend_from_slice(&session);
            state.storage.put(SMTPD_AGE, &[&stored_at.to_be_bytes()[..], &key].concat(), &[]).unwrap();
            state.storage.put(SMTPD, &key, &value).unwrap();
        }
        state.storage.flush().unwrap();
    }
    clock.advance_secs(60);
    let mut core = start(&settings, &clock);
    for id in &ids[..4] {
        assert_eq!(core.lookup("smtpd", id).unwrap().as_deref(), Some(&session[..]), "{id} lost in the migration");
    }
    assert!(core.delete("smtpd", &ids[4]).unwrap(), "an old entry is deleted like any other");
    assert_eq!(core.lookup("smtpd", &ids[4]).unwrap(), None);
    core.flush_storage().unwrap();
    drop(core);

    let mut raw = raw_store(&state_dir);
    let keys: Vec<Vec<u8>> = scan_all(&mut raw, SMTPD).into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys.len(), 4);
    for id in &ids {
        assert!(!keys.contains(&legacy_session_key(id)), "{id} is still stored under its SHA-256");
    }
    assert_eq!(scan_all(&mut raw, SMTPD_AGE).len(), 4, "one age entry per session");
}
