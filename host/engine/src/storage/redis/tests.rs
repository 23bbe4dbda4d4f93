//! The Redis backend against a real `redis-server` (Debian's package,
//! installed by `scripts/setup`): the storage contract, the byte
//! accounting with several writers, expiry done by Redis, outages, and the
//! settings that must be refused.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::*;
use redis::{Client, Connection, ConnectionAddr};

/// One `redis-server` on a UNIX socket in a temporary directory, with no
/// persistence, killed by PID when dropped. `tls_tests.rs` gives it a TLS
/// port too, through [`Server::start_with`].
pub(super) struct Server {
    child: Option<Child>,
    dir: tempfile::TempDir,
    extra: Vec<String>,
}

impl Server {
    fn start() -> Server {
        Server::start_with(&[])
    }

    /// With extra `redis-server` arguments (`--requirepass x`, ...).
    pub(super) fn start_with(extra: &[&str]) -> Server {
        let mut server = Server {
            child: None,
            dir: tempfile::tempdir().unwrap(),
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
        };
        server.spawn();
        server
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("redis.sock")
    }

    fn url(&self) -> String {
        format!("redis+unix://{}", self.socket().display())
    }

    fn options(&self) -> RedisOptions {
        RedisOptions::new(self.url())
    }

    fn spawn(&mut self) {
        let _ = std::fs::remove_file(self.socket());
        let child = Command::new("redis-server")
            .args(["--port", "0", "--unixsocket"])
            .arg(self.socket())
            .args(["--unixsocketperm", "700", "--save", "", "--appendonly", "no", "--dir"])
            .arg(self.dir.path())
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/setup installs it)");
        self.child = Some(child);
        let started = Instant::now();
        while std::os::unix::net::UnixStream::connect(self.socket()).is_err() {
            assert!(started.elapsed() < Duration::from_secs(10), "redis-server did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kill the server (SIGKILL, by PID) and wait for it.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stop and start again: empty, since nothing is persisted.
    fn restart_empty(&mut self) {
        self.stop();
        self.spawn();
    }

    /// A raw client, for looking behind the backend's back.
    pub(super) fn raw(&self) -> Connection {
        Client::open(self.url()).unwrap().get_connection().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn store(server: &Server) -> RedisStorage {
    RedisStorage::connect(server.options()).unwrap()
}

#[test]
fn put_get_replace_delete() {
    let server = Server::start();
    crate::storage::contract::put_get_replace_delete(&mut store(&server));
    crate::storage::contract::batched_calls(&mut store(&server));
}

#[test]
fn scan_in_order() {
    let server = Server::start();
    crate::storage::contract::scan_in_order(&mut store(&server));
}

#[test]
fn two_nodes_see_one_table_and_one_byte_count() {
    let server = Server::start();
    let (mut a, mut b) = (store(&server), store(&server));
    a.put("t", b"k1", b"aaaa").unwrap();
    b.put("t", b"k1", b"bb").unwrap();
    b.put("t", b"k2", b"cccccc").unwrap();
    assert_eq!(a.get("t", b"k1").unwrap().as_deref(), Some(&b"bb"[..]));
    assert_eq!(a.stat("t").unwrap(), TableStat { entries: 2, bytes: 2 + 2 + 2 + 6 });
    assert!(a.delete("t", b"k2").unwrap());
    assert!(!b.delete("t", b"k2").unwrap());
    assert_eq!(b.stat("t").unwrap(), TableStat { entries: 1, bytes: 4 });
}

#[test]
fn a_value_redis_expired_is_gone_from_scans_and_counts() {
    let server = Server::start();
    let mut s = store(&server);
    s.put("t", b"a", b"1").unwrap();
    s.put("t", b"b", b"22").unwrap();
    s.put("t", b"c", b"333").unwrap();
    // As Redis's own expiry would: the value key goes, the index stays.
    let () = redis::cmd("DEL").arg(TableKeys::new("tlskeeper", "t").value(b"b")).query(&mut server.raw()).unwrap();
    assert_eq!(s.get("t", b"b").unwrap(), None);
    // A scan with a limit of 2 still finds two live entries.
    let keys: Vec<Vec<u8>> = s.scan("t", None, 2).unwrap().into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys, [b"a".to_vec(), b"c".to_vec()]);
    assert_eq!(s.stat("t").unwrap(), TableStat { entries: 2, bytes: 2 + 4 });
    assert!(!s.delete("t", b"b").unwrap());
}

#[test]
fn put_expiring_hands_its_expiry_to_redis() {
    let server = Server::start();
    let mut s = store(&server);
    let expires_at = 4_000_000_000u64;
    s.put_expiring("t", b"k", b"v", expires_at).unwrap();
    s.put("t", b"plain", b"v").unwrap();
    let expiry = |key: &[u8]| -> i64 {
        redis::cmd("PEXPIRETIME").arg(TableKeys::new("tlskeeper", "t").value(key)).query(&mut server.raw()).unwrap()
    };
    assert_eq!(expiry(b"k"), i64::try_from(expires_at * 1000).unwrap());
    assert_eq!(expiry(b"plain"), -1, "a plain put never expires");
    // A replacement by plain put clears the expiry, as SET does.
    s.put("t", b"k", b"w").unwrap();
    assert_eq!(expiry(b"k"), -1);
    // An expiry already past: Redis drops the value at once.
    s.put_expiring("t", b"old", b"v", 1).unwrap();
    assert_eq!(s.get("t", b"old").unwrap(), None);
    assert_eq!(s.stat("t").unwrap().entries, 2 + 1, "counted until a scan or delete meets it");
    assert_eq!(s.scan("t", None, 10).unwrap().len(), 2);
    assert_eq!(s.stat("t").unwrap().entries, 2);
}

#[test]
fn is_empty_until_a_table_holds_something() {
    let server = Server::start();
    let mut s = store(&server);
    assert!(s.is_empty().unwrap());
    s.put("t", b"k", b"v").unwrap();
    assert!(!s.is_empty().unwrap());
    s.delete("t", b"k").unwrap();
    assert!(s.is_empty().unwrap());
    let mut other_fleet = RedisStorage::connect(RedisOptions { prefix: "other".into(), ..server.options() }).unwrap();
    s.put("t", b"k", b"v").unwrap();
    assert!(other_fleet.is_empty().unwrap(), "prefixes keep fleets apart");
    assert_eq!(other_fleet.get("t", b"k").unwrap(), None);
}

#[test]
fn an_outage_fails_fast_and_ends_by_itself() {
    let mut server = Server::start();
    let mut s =
        RedisStorage::connect(RedisOptions { retry_after: Duration::from_millis(300), ..server.options() }).unwrap();
    s.put("t", b"k", b"v").unwrap();
    server.stop();
    let started = Instant::now();
    assert!(matches!(s.get("t", b"k"), Err(StorageError::Unavailable(_))));
    // During the backoff, at once, without touching the socket.
    for _ in 0..100 {
        assert!(matches!(s.stat("t"), Err(StorageError::Unavailable(_))));
    }
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    server.spawn();
    std::thread::sleep(Duration::from_millis(350));
    // Back, empty (no persistence): nothing old is served, new writes work.
    assert_eq!(s.get("t", b"k").unwrap(), None);
    s.put("t", b"k2", b"v2").unwrap();
    assert_eq!(s.stat("t").unwrap(), TableStat { entries: 1, bytes: 4 });
}

#[test]
fn a_restart_with_data_lost_is_a_cold_store() {
    let mut server = Server::start();
    let mut s =
        RedisStorage::connect(RedisOptions { retry_after: Duration::from_millis(1), ..server.options() }).unwrap();
    s.put("t", b"k", b"v").unwrap();
    server.restart_empty();
    // The first call meets the dead connection and takes a new one.
    assert_eq!(s.get("t", b"k").unwrap(), None);
    assert!(s.is_empty().unwrap());
}

/// A server that closed our connection (here `CLIENT KILL`, as a restart
/// or a proxy's idle timeout would) costs no request: the call reconnects
/// once, and the server is not called down.
#[test]
fn a_closed_connection_is_replaced_without_a_failure() {
    let server = Server::start();
    let mut s = store(&server);
    s.put("t", b"k", b"v").unwrap();
    for _ in 0..3 {
        let killed: u64 = redis::cmd("CLIENT").arg(&["KILL", "TYPE", "normal"]).query(&mut server.raw()).unwrap();
        assert_eq!(killed, 1, "the store's connection, and not the killer's");
        assert_eq!(s.get("t", b"k").unwrap().as_deref(), Some(&b"v"[..]));
        s.put("t", b"k2", b"w").unwrap();
        assert!(s.retry_at.is_none());
    }
    // Each rewrite of k2 recounted, not added: k+v, k2+w.
    assert_eq!(s.stat("t").unwrap(), TableStat { entries: 2, bytes: 5 });
}

/// A batch of changes is one pipeline of scripts: a server that forgot
/// them (`SCRIPT FLUSH`, as after a restart with the connection kept) has
/// them loaded again and the batch made once; so does a closed connection.
#[test]
fn a_batch_survives_forgotten_scripts_and_a_closed_connection() {
    let server = Server::start();
    let mut s = store(&server);
    let batch = |n: u8| {
        [
            Change::put("t-age", &[n], b"", Some(4_000_000_000)),
            Change::put("t", b"k", &[n; 3], Some(4_000_000_000)),
            Change::delete("t-age", &[n - 1]),
        ]
    };
    s.apply(&batch(1)).unwrap();
    let () = redis::cmd("SCRIPT").arg("FLUSH").query(&mut server.raw()).unwrap();
    s.apply(&batch(2)).unwrap();
    let killed: u64 = redis::cmd("CLIENT").arg(&["KILL", "TYPE", "normal"]).query(&mut server.raw()).unwrap();
    assert_eq!(killed, 1);
    s.apply(&batch(3)).unwrap();
    assert_eq!(s.get_with_stat("t", b"k").unwrap(), (Some(vec![3; 3]), TableStat { entries: 1, bytes: 4 }));
    assert_eq!(s.scan("t-age", None, 10).unwrap(), vec![(vec![3], Vec::new())]);
    assert_eq!(s.stat("t-age").unwrap(), TableStat { entries: 1, bytes: 1 });
    // Redis keeps the expiry hint of each put.
    let ttl: i64 = redis::cmd("PTTL").arg(s.keys("t").unwrap().value(b"k")).query(&mut server.raw()).unwrap();
    assert!(ttl > 0, "{ttl}");
    assert!(s.retry_at.is_none());
}

#[test]
fn a_hung_server_costs_one_timeout_then_fails_at_once() {
    let server = Server::start();
    let mut s =
        RedisStorage::connect(RedisOptions { timeout: Duration::from_millis(100), ..server.options() }).unwrap();
    s.put("t", b"k", b"v").unwrap();
    let pid = libc::pid_t::try_from(server.child.as_ref().unwrap().id()).unwrap();
    // SIGSTOP: the socket stays open, nothing answers, as with a server
    // stuck in a long command or a host that has vanished.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    let started = Instant::now();
    let outcome = s.get("t", b"k");
    let waited = started.elapsed();
    let again = Instant::now();
    let second = s.get("t", b"k");
    let second_waited = again.elapsed();
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
    assert!(matches!(outcome, Err(StorageError::Unavailable(_))), "{outcome:?}");
    assert!(waited >= Duration::from_millis(90) && waited < Duration::from_millis(900), "waited {waited:?}");
    assert!(matches!(second, Err(StorageError::Unavailable(_))));
    assert!(second_waited < Duration::from_millis(20), "the backoff answers at once: {second_waited:?}");
}

#[test]
fn a_busy_server_is_unavailable_not_broken() {
    let server = Server::start_with(&["--busy-reply-threshold", "10"]);
    let mut s = store(&server);
    let mut raw = server.raw();
    let blocker = std::thread::spawn(move || {
        let script = "local n = 0 for i = 1, 100000000 do n = n + i end return n";
        let _: Result<i64, _> = redis::cmd("EVAL").arg(script).arg(0).query(&mut raw);
    });
    std::thread::sleep(Duration::from_millis(100));
    let outcome = s.get("t", b"k");
    blocker.join().unwrap();
    assert!(matches!(outcome, Err(StorageError::Unavailable(_))), "{outcome:?}");
}

#[test]
fn a_password_comes_from_options_never_from_the_url() {
    let server = Server::start_with(&["--requirepass", "s3cret-pass"]);
    let e = RedisStorage::connect(RedisOptions::new(format!(
        "redis+unix://{}?pass=s3cret-pass",
        server.socket().display()
    )));
    let e = e.expect_err("refused").to_string();
    assert!(e.contains("store_password_file") && !e.contains("s3cret-pass"), "{e}");
    let e = RedisStorage::connect(server.options()).expect_err("no password: refused by the server").to_string();
    assert!(!e.contains("s3cret-pass"), "{e}");
    let file = server.dir.path().join("password");
    std::fs::write(&file, "s3cret-pass\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let with_file = RedisOptions { password_file: Some(file.clone()), ..server.options() };
    let e = RedisStorage::connect(with_file.clone()).expect_err("a file others may read").to_string();
    assert!(e.contains("chmod 600"), "{e}");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut s = RedisStorage::connect(with_file).unwrap();
    s.put("t", b"k", b"v").unwrap();
    assert!(!format!("{s:?} {:?}", server.options()).contains("s3cret"));
}

#[test]
fn bad_settings_are_refused_with_the_fix() {
    let e = RedisStorage::connect(RedisOptions::new("http://example")).err().unwrap().to_string();
    assert!(e.contains("redis://HOST:PORT/DB"), "{e}");
    let e = RedisStorage::connect(RedisOptions { prefix: "a{b".into(), ..RedisOptions::new("redis://127.0.0.1:1/0") })
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("prefix"), "{e}");
    let e = RedisStorage::connect(RedisOptions {
        ca_file: Some("/nonexistent".into()),
        ..RedisOptions::new("redis://127.0.0.1:1/0")
    })
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("rediss://"), "{e}");
    // Nothing listens on port 1: the start fails at once, naming the place.
    let e = RedisStorage::connect(RedisOptions::new("redis://127.0.0.1:1/0")).err().unwrap().to_string();
    assert!(e.contains("redis://127.0.0.1:1/0"), "{e}");
    // A socket a chrooted process could not reach again.
    let e = RedisStorage::connect(RedisOptions {
        jail: Some("/var/spool/postfix".into()),
        ..RedisOptions::new("redis+unix:///run/redis/redis.sock")
    })
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("outside the chroot jail /var/spool/postfix") && e.contains("chroot n"), "{e}");
}

/// Inside a jail the socket is reached by its path relative to the jail,
/// which the process works in: the same socket before the chroot and after.
#[test]
fn a_socket_in_the_jail_is_reached_relative_to_it() {
    let (dialer, _) = link::dialer_for(&RedisOptions {
        jail: Some("/var/spool/postfix".into()),
        ..RedisOptions::new("redis+unix:///var/spool/postfix/private/redis.sock?db=2")
    })
    .unwrap();
    let link::Dialer::Node(client) = dialer else { panic!("one server, not a cluster") };
    let info = client.get_connection_info();
    assert_eq!(*info.addr(), ConnectionAddr::Unix("private/redis.sock".into()));
    assert_eq!(info.redis_settings().db(), 2);
}

#[test]
fn redacted_drops_credentials() {
    use super::link::redacted;
    assert_eq!(redacted("redis://user:pw@host:6379/0"), "redis://host:6379/0");
    assert_eq!(redacted("redis://host:6379/0"), "redis://host:6379/0");
    assert_eq!(redacted("redis+unix:///run/r.sock?db=1&pass=pw&user=u"), "redis+unix:///run/r.sock?db=1");
    assert_eq!(redacted("rediss://:pw@host/2?protocol=resp3"), "rediss://host/2?protocol=resp3");
    assert_eq!(redacted("redis://u:pw@a:7000, redis://u:pw@b:7001"), "redis://a:7000,redis://b:7001");
}

#[test]
fn put_if_absent_has_one_winner_among_racing_nodes() {
    let server = Server::start();
    crate::storage::contract::racing_put_if_absent_has_one_winner(|| store(&server));
}

#[test]
fn two_nodes_with_different_keks_cannot_both_claim_an_empty_store() {
    use crate::storage::kek::Kek;
    use crate::storage::sealed::{SealError, Sealed};
    let server = Server::start();
    // Both looked before either wrote: each believes the store is empty.
    let first = Sealed::open(store(&server), Kek::from_bytes([1; 32]), "redis", true);
    let second = Sealed::open(store(&server), Kek::from_bytes([2; 32]), "redis", true);
    assert!(first.is_ok());
    assert!(matches!(second, Err(SealError::WrongKek { .. })), "{:?}", second.err());
    // The same key joins the fleet.
    let mut third = Sealed::open(store(&server), Kek::from_bytes([1; 32]), "redis", true).unwrap();
    third.put("t", b"k", b"v").unwrap();
    let mut first = first.unwrap();
    assert_eq!(first.get("t", b"k").unwrap().as_deref(), Some(&b"v"[..]));
}
