//! Nodes sharing one Redis store, through the real binary and a real
//! `redis-server` (Debian's package, installed by `scripts/setup`) on a
//! UNIX socket in a temporary directory, stopped by PID.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, Daemon, cli_client, ok_stdout};

/// A `redis-server` with no persistence, killed by PID when dropped.
struct Redis {
    child: Child,
    socket: PathBuf,
}

impl Redis {
    fn start(dir: &Path) -> Redis {
        let socket = dir.join("redis.sock");
        let child = Command::new("redis-server")
            .args(["--port", "0", "--unixsocket"])
            .arg(&socket)
            .args(["--unixsocketperm", "700", "--save", "", "--appendonly", "no", "--dir"])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/setup installs it)");
        let started = Instant::now();
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            assert!(started.elapsed() < Duration::from_secs(10), "redis-server did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        Redis { child, socket }
    }

    fn url(&self) -> String {
        format!("redis+unix://{}", self.socket.display())
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `tlskeeper serve` on `name`'s socket with the Redis store.
fn node(dir: &Path, name: &str, redis: &Redis, kek: &Path) -> Daemon {
    let socket = dir.join(format!("{name}.sock"));
    let log = dir.join(format!("{name}.log"));
    let flags: Vec<std::ffi::OsString> = vec![
        "--no-compile-cache".into(),
        "--store".into(),
        redis.url().into(),
        "--kek-file".into(),
        kek.into(),
        "--seed-file".into(),
        dir.join(format!("{name}.seed")).into(),
    ];
    let flags: Vec<&std::ffi::OsStr> = flags.iter().map(std::ffi::OsString::as_os_str).collect();
    let mut daemon = Daemon::spawn_with(&socket, &log, &flags);
    daemon.wait_ready();
    daemon
}

/// A start that must fail: `tlskeeper serve --store URL --kek-file KEK`'s
/// exit code and log.
fn failed_start(dir: &Path, name: &str, url: &str, kek: &Path) -> (Option<i32>, String) {
    let flags: [&std::ffi::OsStr; 5] =
        ["--no-compile-cache".as_ref(), "--store".as_ref(), url.as_ref(), "--kek-file".as_ref(), kek.as_ref()];
    let mut daemon = Daemon::spawn_with(&dir.join(format!("{name}.sock")), &dir.join(format!("{name}.log")), &flags);
    let status = daemon.wait_exit(Duration::from_secs(30), name);
    (status.code(), daemon.log())
}

fn new_kek(path: &Path) {
    let out = Command::new(BIN).args(["kek", "new"]).arg(path).output().unwrap();
    let said = ok_stdout(&out, "kek new");
    assert!(said.contains("fingerprint"), "{said}");
}

#[test]
fn a_session_stored_through_one_node_is_found_through_another() {
    let dir = tempfile::tempdir().unwrap();
    let redis = Redis::start(dir.path());
    let kek = dir.path().join("kek");
    new_kek(&kek);
    let (a, b) = (node(dir.path(), "a", &redis, &kek), node(dir.path(), "b", &redis, &kek));
    let stored = ok_stdout(&cli_client(&a.socket, &["update", "smtpd", "fleet-id", "308187020101"]), "update on a");
    assert_eq!(stored, "status=OK");
    let found = ok_stdout(&cli_client(&b.socket, &["lookup", "smtpd", "fleet-id"]), "lookup on b");
    assert_eq!(found, "status=OK session=<6 bytes>");
    let deleted = ok_stdout(&cli_client(&b.socket, &["delete", "smtpd", "fleet-id"]), "delete on b");
    assert_eq!(deleted, "status=OK");
    // A miss exits 1, as every ERR does.
    let gone = cli_client(&a.socket, &["lookup", "smtpd", "fleet-id"]);
    assert_eq!(common::stdout(&gone), "status=ERR session=<0 bytes>");
}

#[test]
fn a_node_never_makes_a_fleet_key_and_refuses_a_different_one() {
    let dir = tempfile::tempdir().unwrap();
    let redis = Redis::start(dir.path());
    let missing = dir.path().join("no-such-kek");
    let (code, log) = failed_start(dir.path(), "no-kek", &redis.url(), &missing);
    assert_eq!(code, Some(78), "{log}");
    assert!(log.contains("tlskeeper kek new"), "{log}");
    assert!(!missing.exists(), "no key is made for a fleet");

    let (kek, other) = (dir.path().join("kek"), dir.path().join("other-kek"));
    new_kek(&kek);
    new_kek(&other);
    let _first = node(dir.path(), "first", &redis, &kek);
    let (code, log) = failed_start(dir.path(), "wrong-kek", &redis.url(), &other);
    assert_eq!(code, Some(78), "{log}");
    assert!(log.contains("fingerprint"), "{log}");
}

#[test]
fn a_store_that_cannot_be_reached_stops_the_start_with_its_address() {
    let dir = tempfile::tempdir().unwrap();
    let kek = dir.path().join("kek");
    new_kek(&kek);
    let (code, log) = failed_start(dir.path(), "unreachable", "redis://127.0.0.1:1/0", &kek);
    assert_eq!(code, Some(69), "{log}");
    assert!(log.contains("redis://127.0.0.1:1/0"), "{log}");
}
