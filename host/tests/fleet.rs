//! Nodes sharing one Redis store, on a real `redis-server` (Debian's
//! package, installed by `scripts/setup`) on a UNIX socket in a temporary
//! directory, stopped by PID.
//!
//! Two ways in. The real `tlskeeper serve` binary, as child processes that
//! are killed with SIGKILL and started again, shows what an operator sees.
//! The real core component over `state::open`, several in this process
//! with scripted clocks set apart, walks many rotation periods in seconds,
//! which a real clock would take hours for.

#![allow(clippy::unwrap_used)]

mod common;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tlskeeper::config::{CacheSettings, Settings};
use tlskeeper_engine::Core;
use tlskeeper_engine::caps::{Clock, OsEntropy};
use tlskeeper_protocol::tlsmgr::{Reply, Request, Status};

use common::{BIN, Daemon, ScriptedClock, cli_client, ok_stdout, runtime};

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

    /// SIGSTOP: the server hangs. Its socket stays open and the kernel
    /// still accepts connections, but nothing answers, as with a server
    /// stuck in a long command or swapped out.
    fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// SIGCONT: the server answers again, with everything it held.
    fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).unwrap();
        // SAFETY: kill(2) on a child we started and have not reaped.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
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
    node_with(dir, name, redis, kek, &[])
}

/// [`node`] with more flags (`--config FILE`, ...).
fn node_with(dir: &Path, name: &str, redis: &Redis, kek: &Path, extra: &[&OsStr]) -> Daemon {
    let socket = dir.join(format!("{name}.sock"));
    let log = dir.join(format!("{name}.log"));
    let mut flags: Vec<std::ffi::OsString> = vec![
        "--no-compile-cache".into(),
        "--store".into(),
        redis.url().into(),
        "--kek-file".into(),
        kek.into(),
        "--seed-file".into(),
        dir.join(format!("{name}.seed")).into(),
    ];
    flags.extend(extra.iter().map(|flag| flag.to_os_string()));
    let flags: Vec<&OsStr> = flags.iter().map(std::ffi::OsString::as_os_str).collect();
    let mut daemon = Daemon::spawn_with(&socket, &log, &flags);
    daemon.wait_ready();
    daemon
}

/// A start that must fail: `tlskeeper serve --store URL --kek-file KEK`'s
/// exit code and log.
fn failed_start(dir: &Path, name: &str, url: &str, kek: &Path) -> (Option<i32>, String) {
    let flags: [&OsStr; 5] =
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
    // Redis drops the entry by itself once the cache's timeout (3600 s) has
    // passed, should no node ever delete it.
    let mut conn = redis::Client::open(redis.url()).unwrap().get_connection().unwrap();
    let now_ms = i64::try_from(std::time::SystemTime::UNIX_EPOCH.elapsed().unwrap().as_millis()).unwrap();
    for pattern in ["{tlskeeper:scache/smtpd}:v:*", "{tlskeeper:scache-age/smtpd}:v:*"] {
        let keys: Vec<Vec<u8>> = redis::cmd("KEYS").arg(pattern).query(&mut conn).unwrap();
        assert_eq!(keys.len(), 1, "{pattern}");
        let at: i64 = redis::cmd("PEXPIRETIME").arg(&keys[0]).query(&mut conn).unwrap();
        assert!((3_590_000..=3_602_000).contains(&(at - now_ms)), "{pattern} expires {} ms from now", at - now_ms);
    }
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

/// A ticket sealed through `daemon`'s socket.
fn seal_on(daemon: &Daemon, plaintext: &[u8]) -> Vec<u8> {
    let mut client = tlskeeper_protocol::client::Client::connect(&daemon.socket).unwrap();
    match client.request(&Request::Seal { plaintext: plaintext.to_vec().into() }).unwrap() {
        Reply::Seal { status: Status::Ok, ticket, .. } => ticket.to_vec(),
        other => panic!("tktseal: {other:?}"),
    }
}

/// The plaintext of `ticket` opened through `daemon`'s socket, if it opens.
fn open_on(daemon: &Daemon, ticket: &[u8]) -> Option<Vec<u8>> {
    let mut client = tlskeeper_protocol::client::Client::connect(&daemon.socket).unwrap();
    match client.request(&Request::Open { ticket: ticket.to_vec() }).unwrap() {
        Reply::Open { status: Status::Ok, plaintext } => Some(plaintext.to_vec()),
        Reply::Open { status: Status::Err, .. } => None,
        other => panic!("tktopen: {other:?}"),
    }
}

/// The name of the key Postfix's `tktkey` request hands out for sealing.
fn postfix_key_name(daemon: &Daemon) -> Vec<u8> {
    let mut client = tlskeeper_protocol::client::Client::connect(&daemon.socket).unwrap();
    match client.request(&Request::TicketKey { key_name: Vec::new() }).unwrap() {
        Reply::TicketKey { status: Status::Ok, keybuf } => tlskeeper::keybuf::decode(&keybuf).unwrap().name.to_vec(),
        other => panic!("tktkey: {other:?}"),
    }
}

/// A deterministic stream of choices.
struct Dice(u64);

impl Dice {
    fn roll(&mut self, sides: usize) -> usize {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        usize::try_from(self.0 >> 33).unwrap() % sides
    }
}

/// Proves that three daemons on one Redis seal under one key: a ticket
/// sealed through any opens through every other, Postfix's `tktkey` names
/// the same key everywhere, and nodes killed with SIGKILL and started again
/// at random adopt that key instead of minting their own. Each node runs
/// its default pool of cores, and requests go to them in turn, so a ticket
/// sealed by one node's core opens on the other nodes' every core.
#[test]
fn tickets_sealed_on_any_node_open_on_every_other_through_sigkills() {
    let dir = tempfile::tempdir().unwrap();
    let redis = Redis::start(dir.path());
    let kek = dir.path().join("kek");
    new_kek(&kek);
    let names = ["a", "b", "c"];
    let mut nodes: Vec<Daemon> = names.iter().map(|n| node(dir.path(), n, &redis, &kek)).collect();
    for node in &nodes {
        assert!(node.log().contains(" with 4 cores"), "{}", node.log());
    }
    let mut key = postfix_key_name(&nodes[0]);
    let mut keys = 1;
    let mut dice = Dice(17);
    let mut tickets: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut kills = 0;
    for round in 0..60u32 {
        if round % 10 == 9 {
            let victim = dice.roll(nodes.len());
            let pid = nodes[victim].pid();
            // SAFETY: kill(2) on a child we started and have not reaped.
            assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
            let _ = nodes[victim].child().wait();
            let _ = std::fs::remove_file(&nodes[victim].socket);
            nodes[victim] = node(dir.path(), &format!("{}-{round}", names[victim]), &redis, &kek);
            kills += 1;
        }
        let plaintext = format!("session {round}").into_bytes();
        let ticket = seal_on(&nodes[dice.roll(nodes.len())], &plaintext);
        // Keys seal for 30 minutes on the wall clock; should this test run
        // across a slot boundary, the next key takes over, once.
        if ticket[..16] != key[..] {
            keys += 1;
            assert_eq!(keys, 2, "round {round}: sealed under a third key");
            key = ticket[..16].to_vec();
        }
        tickets.push((ticket, plaintext));
        let (ticket, plaintext) = &tickets[dice.roll(tickets.len())];
        let opener = dice.roll(nodes.len());
        assert_eq!(open_on(&nodes[opener], ticket).as_ref(), Some(plaintext), "round {round}, node {opener}");
    }
    assert_eq!(kills, 6);
    for node in &nodes {
        assert_eq!(postfix_key_name(node), key, "Postfix's tktkey names the key every node seals with");
        for (ticket, plaintext) in &tickets {
            assert_eq!(open_on(node, ticket).as_ref(), Some(plaintext));
        }
    }
    let minted: usize = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap().matches("new fleet session ticket key").count())
        .sum();
    // The key sealing now, and perhaps the next one if a node's
    // housekeeping published it during the test.
    assert!((1..=2).contains(&minted), "{minted} keys minted");
}

/// One node's clock: the fleet's scripted time plus its own offset.
#[derive(Clone)]
struct SkewedClock {
    base: ScriptedClock,
    offset_secs: i64,
}

impl SkewedClock {
    fn now_secs(&self) -> i64 {
        i64::try_from(self.base.now_secs()).unwrap() + self.offset_secs
    }
}

impl Clock for SkewedClock {
    fn now_nanos(&mut self) -> u64 {
        u64::try_from(self.now_secs()).unwrap() * 1_000_000_000
    }
}

/// Settings of a fleet node with T = 120 (keys seal for 60 s) and a
/// 10-second margin.
fn fast_fleet(url: &str, kek: &Path) -> Settings {
    let mut settings = Settings {
        store: Some(url.to_owned()),
        kek_file: Some(kek.to_owned()),
        ticket_key_margin: 10,
        ..Settings::default()
    };
    settings.caches.insert("smtpd".into(), CacheSettings { timeout: 120, ..CacheSettings::default() });
    settings
}

/// The real core on the fleet's Redis, on `clock`.
fn fleet_core(settings: &Settings, clock: &SkewedClock) -> Core {
    let state = tlskeeper_engine::state::open(&settings.state_options()).unwrap_or_else(|e| panic!("{e}"));
    let caps = state.into_capabilities(Box::new(clock.clone()), Box::new(OsEntropy));
    let mut core = Core::start(runtime(), caps, settings.core_config(), settings.limits()).expect("core starts");
    core.join_fleet(settings.fleet().unwrap()).expect("joins the fleet");
    core
}

/// Proves the fleet's guarantee on the real component and a real Redis:
/// five cores whose clocks differ by up to the margin, walked second by
/// second through 12 rotation periods, each sealing every second, tickets
/// opened on random cores, cores dropped and started again at random. Every
/// ticket opens on every core for the lifetime its seal announced, none
/// opens past its key's window, and two cores seal with different keys only
/// within the margin of a slot boundary.
#[test]
fn five_cores_with_skewed_clocks_rotate_as_one_through_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let redis = Redis::start(dir.path());
    let kek = dir.path().join("kek");
    new_kek(&kek);
    let settings = fast_fleet(&redis.url(), &kek);
    let (half, margin) = (60i64, 10i64);
    let base = ScriptedClock::new();
    let clocks: Vec<SkewedClock> =
        [-5, -2, 0, 3, 5].iter().map(|&offset_secs| SkewedClock { base: base.clone(), offset_secs }).collect();
    let mut cores: Vec<Core> = clocks.iter().map(|c| fleet_core(&settings, c)).collect();
    let mut dice = Dice(3);
    // (ticket, slot of its key by the sealer's clock, true second sealed, lifetime)
    let mut tickets: Vec<(Vec<u8>, i64, i64, i64)> = Vec::new();
    let mut restarts = 0;
    let mut minted_before_restarts = 0;
    let first_slot = clocks[0].now_secs().div_euclid(half);
    for _ in 0..12 * half {
        base.advance_secs(1);
        let t = clocks[2].now_secs(); // the offset-0 clock: true time
        if dice.roll(30) == 0 {
            let victim = dice.roll(cores.len());
            minted_before_restarts += cores[victim].stats().unwrap().keys_minted;
            cores[victim] = fleet_core(&settings, &clocks[victim]);
            restarts += 1;
        }
        let mut sealing: Vec<Vec<u8>> = Vec::new();
        for (i, core) in cores.iter_mut().enumerate() {
            core.housekeeping().unwrap();
            let sealed = core.seal_ticket(format!("{t}/{i}").as_bytes()).unwrap();
            let name = sealed.ticket[..16].to_vec();
            if !sealing.contains(&name) {
                sealing.push(name);
            }
            let slot = clocks[i].now_secs().div_euclid(half);
            tickets.push((sealed.ticket, slot, t, i64::from(sealed.lifetime_secs)));
        }
        let into_slot = t.rem_euclid(half);
        let near_boundary = into_slot.min(half - into_slot) <= margin;
        assert!(sealing.len() == 1 || (sealing.len() == 2 && near_boundary), "{} keys seal at {t}", sealing.len());

        for _ in 0..4 {
            let (ticket, slot, sealed, lifetime) = &tickets[dice.roll(tickets.len())];
            let i = dice.roll(cores.len());
            let opened = cores[i].open_ticket(ticket).unwrap().is_some();
            if t - sealed <= *lifetime {
                assert!(opened, "sealed at {sealed} (lifetime {lifetime}), refused by core {i} at {t}");
            }
            if clocks[i].now_secs() >= (slot + 2) * half + margin {
                assert!(!opened, "a ticket of slot {slot} opened on core {i} at its {}", clocks[i].now_secs());
            }
        }
    }
    assert!(restarts >= 10, "{restarts} restarts");
    // One key per slot, from the slowest clock's first to the one the
    // fastest has published by now.
    let last_published = (clocks[4].now_secs() + margin).div_euclid(half);
    let minted: u64 = minted_before_restarts + cores.iter_mut().map(|c| c.stats().unwrap().keys_minted).sum::<u64>();
    assert_eq!(minted, u64::try_from(last_published - first_slot + 1).unwrap());
}

/// Every key and value in `redis`, read raw, whatever its type.
fn dump(redis: &Redis) -> Vec<Vec<u8>> {
    let mut conn = redis::Client::open(redis.url()).unwrap().get_connection().unwrap();
    let keys: Vec<Vec<u8>> = redis::cmd("KEYS").arg("*").query(&mut conn).unwrap();
    let mut all = Vec::new();
    for key in keys {
        let kind: String = redis::cmd("TYPE").arg(&key).query(&mut conn).unwrap();
        let parts: Vec<Vec<u8>> = match kind.as_str() {
            "string" => vec![redis::cmd("GET").arg(&key).query(&mut conn).unwrap()],
            "hash" => redis::cmd("HGETALL").arg(&key).query(&mut conn).unwrap(),
            "zset" => redis::cmd("ZRANGE").arg(&key).arg(0).arg(-1).query(&mut conn).unwrap(),
            "set" => redis::cmd("SMEMBERS").arg(&key).query(&mut conn).unwrap(),
            "list" => redis::cmd("LRANGE").arg(&key).arg(0).arg(-1).query(&mut conn).unwrap(),
            other => panic!("a Redis key of type {other}"),
        };
        all.push(key);
        all.extend(parts);
    }
    all
}

/// Proves that what two nodes leave in Redis after a load holds no session
/// bytes, no ticket plaintext, no ticket key bytes and no cache id, in clear
/// or hashed.
#[test]
fn nothing_readable_is_left_in_redis() {
    let dir = tempfile::tempdir().unwrap();
    let redis = Redis::start(dir.path());
    let kek = dir.path().join("kek");
    new_kek(&kek);
    let nodes = [node(dir.path(), "a", &redis, &kek), node(dir.path(), "b", &redis, &kek)];
    let marker = b"<tlskeeper plaintext session marker>";
    let session: Vec<u8> = marker.iter().copied().cycle().take(140).collect();
    let ids: Vec<String> = (0..40).map(|i| format!("[mx{i}.example.net]:25&cache-id-{i:04}")).collect();
    for (i, id) in ids.iter().enumerate() {
        let mut client = tlskeeper_protocol::client::Client::connect(&nodes[i % 2].socket).unwrap();
        let update =
            Request::Update { cache_type: "smtpd".into(), cache_id: id.clone(), session: session.clone().into() };
        assert!(matches!(client.request(&update).unwrap(), Reply::Update { status: Status::Ok }));
    }
    let ticket_marker = b"<tlskeeper ticket plaintext marker>";
    for node in &nodes {
        assert!(open_on(node, &seal_on(node, ticket_marker)).is_some());
    }
    let mut client = tlskeeper_protocol::client::Client::connect(&nodes[1].socket).unwrap();
    let key = match client.request(&Request::TicketKey { key_name: Vec::new() }).unwrap() {
        Reply::TicketKey { status: Status::Ok, keybuf } => tlskeeper::keybuf::decode(&keybuf).unwrap(),
        other => panic!("tktkey: {other:?}"),
    };

    let stored = dump(&redis);
    assert!(stored.len() > 100, "only {} keys and values in Redis", stored.len());
    let mut secrets: Vec<(String, Vec<u8>)> = vec![
        ("a session".into(), marker[..16].to_vec()),
        ("a ticket's plaintext".into(), ticket_marker[..16].to_vec()),
        ("the KEK".into(), std::fs::read(&kek).unwrap()),
    ];
    for (what, bytes) in [("AES key", &key.cipher_key[..]), ("HMAC key", &key.hmac_key[..])] {
        for (i, window) in bytes.windows(8).enumerate() {
            secrets.push((format!("bytes {i}..{} of the ticket {what}", i + 8), window.to_vec()));
        }
    }
    for id in &ids {
        secrets.push((format!("cache id {id}"), id.as_bytes().to_vec()));
        secrets.push((format!("part of cache id {id}"), id.as_bytes()[..12].to_vec()));
        // What anyone could compute from a guessed id: ids are keyed under
        // a salt sealed in the store, not merely hashed.
        let hashed = <sha2::Sha256 as sha2::Digest>::digest(id.as_bytes());
        secrets.push((format!("SHA-256 of cache id {id}"), hashed[..16].to_vec()));
    }
    for (what, needle) in &secrets {
        let found = stored.iter().find(|v| v.windows(needle.len()).any(|w| w == needle.as_slice()));
        assert!(found.is_none(), "{what} is in Redis in clear");
    }
}

/// Resident memory of process `pid`, in KiB.
fn rss_kib(pid: libc::pid_t) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Store an `smtpd` session under `id`; true if the node said OK.
fn update(client: &mut tlskeeper_protocol::client::Client, id: &str) -> bool {
    let request = Request::Update { cache_type: "smtpd".into(), cache_id: id.into(), session: b"s".to_vec().into() };
    matches!(client.request(&request).unwrap(), Reply::Update { status: Status::Ok })
}

/// Look up the `smtpd` session `id`; true if found, false for a miss or
/// a failure.
fn lookup(client: &mut tlskeeper_protocol::client::Client, id: &str) -> bool {
    let request = Request::Lookup { cache_type: "smtpd".into(), cache_id: id.into() };
    match client.request(&request).unwrap() {
        Reply::Lookup { status: Status::Ok, .. } => true,
        Reply::Lookup { status: Status::Err | Status::Fail, .. } => false,
        other => panic!("lookup: {other:?}"),
    }
}

/// What `f` returned, and how long it took.
fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let started = Instant::now();
    (f(), started.elapsed())
}

/// What the load saw in one phase: replies, the slowest, and what they were.
#[derive(Default, Debug)]
struct Phase {
    replies: u64,
    slowest: Duration,
    ok: u64,
}

// The phases of a load across an outage. A change (a kill, a start, a
// signal) takes a moment while requests keep coming, so the rounds during
// one count in a phase of their own rather than as served during the outage
// or failed before it.
const UP: u8 = 0;
const LEAVING: u8 = 1;
const OUT: u8 = 2;
const RETURNING: u8 = 3;
const BACK: u8 = 4;
const DONE: u8 = 5;

/// One client's requests to a node, round after round (an update of a new
/// session, a lookup of `before-0`), each timed and counted in the phase it
/// ran in, until [`Load::finish`]. A round that meets a phase change counts
/// in neither phase: requests answered before a kill can fail, and ones
/// answered after a start can succeed, within the same round.
struct Load {
    phase: Arc<AtomicU8>,
    seen: Arc<Mutex<[Phase; 5]>>,
    thread: std::thread::JoinHandle<()>,
}

impl Load {
    /// Start the load on `socket`, in phase [`UP`].
    fn start(socket: &Path) -> Load {
        let (phase, seen): (Arc<AtomicU8>, Arc<Mutex<[Phase; 5]>>) = Default::default();
        let (phase_here, seen_here) = (Arc::clone(&phase), Arc::clone(&seen));
        let socket = socket.to_owned();
        let thread = std::thread::spawn(move || {
            let mut client = tlskeeper_protocol::client::Client::connect(&socket).unwrap();
            let mut n = 0u64;
            loop {
                let p = phase.load(Ordering::SeqCst);
                if p == DONE {
                    return;
                }
                n += 1;
                let answers =
                    [timed(|| update(&mut client, &format!("load-{n}"))), timed(|| lookup(&mut client, "before-0"))];
                if phase.load(Ordering::SeqCst) != p {
                    continue; // it met a change: it belongs to neither side
                }
                let mut seen = seen.lock().unwrap();
                let phase = &mut seen[usize::from(p)];
                for (ok, took) in answers {
                    phase.replies += 1;
                    phase.slowest = phase.slowest.max(took);
                    phase.ok += u64::from(ok);
                }
            }
        });
        Load { phase: phase_here, seen: seen_here, thread }
    }

    /// Run `change` as phase `during`, then go on in phase `after`.
    fn across<T>(&self, during: u8, after: u8, change: impl FnOnce() -> T) -> T {
        self.phase.store(during, Ordering::SeqCst);
        let changed = change();
        self.phase.store(after, Ordering::SeqCst);
        changed
    }

    /// Wait (up to 10 s) until a request of phase `phase` has succeeded.
    fn wait_served(&self, phase: u8) {
        let started = Instant::now();
        while self.seen.lock().unwrap()[usize::from(phase)].ok == 0 {
            assert!(started.elapsed() < Duration::from_secs(10), "no request served in phase {phase}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stop the load; what each phase saw.
    fn finish(self) -> [Phase; 5] {
        self.phase.store(DONE, Ordering::SeqCst);
        self.thread.join().unwrap();
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

/// Store `before-0` to `before-19` through `daemon`, then run a load on it
/// while `leave` makes an outage, for 4 s, until `come_back` ends it (what
/// it returns is returned), and until the load is served again. Checks
/// what every outage must show: everything served before it; during it,
/// over 20 answers, none served, none slower than 2 s (the timeout is 200
/// ms, the rest slack for a loaded machine), and memory flat. Returns what
/// each phase of the load saw.
fn across_an_outage<T>(
    daemon: &mut Daemon,
    what: &str,
    leave: impl FnOnce(),
    come_back: impl FnOnce() -> T,
) -> ([Phase; 5], T) {
    let mut client = tlskeeper_protocol::client::Client::connect(&daemon.socket).unwrap();
    for i in 0..20 {
        assert!(update(&mut client, &format!("before-{i}")));
    }
    let load = Load::start(&daemon.socket);
    std::thread::sleep(Duration::from_millis(500));
    load.across(LEAVING, OUT, leave);
    std::thread::sleep(Duration::from_millis(500));
    let rss_early = rss_kib(daemon.pid());
    std::thread::sleep(Duration::from_secs(3));
    let rss_late = rss_kib(daemon.pid());
    let back = load.across(RETURNING, BACK, come_back);
    load.wait_served(BACK);
    std::thread::sleep(Duration::from_millis(500));
    let seen = load.finish();

    println!("{what}: {seen:?}; memory {rss_early} KiB -> {rss_late} KiB");
    let before = &seen[usize::from(UP)];
    assert!(before.replies > 0 && before.ok == before.replies, "before {what}: {before:?}");
    let during = &seen[usize::from(OUT)];
    assert!(during.replies > 20, "only {} answers during {what}", during.replies);
    assert_eq!(during.ok, 0, "served during {what}");
    assert!(during.slowest < Duration::from_secs(2), "a request took {:?} during {what}", during.slowest);
    assert!(rss_late < rss_early + 16 * 1024, "memory grew from {rss_early} to {rss_late} KiB during {what}");
    (seen, back)
}

/// Proves what a Redis outage does to a node under load: every request is
/// answered (FAIL or a miss) within a bound near the 200 ms timeout, the
/// node's memory stays flat and nothing panics; the outage is logged once
/// each way; Redis back (restarted empty, no persistence) means full
/// service without a restart, no session from before served, tickets under
/// the keys the node knows still opening, and a node started afterwards
/// adopting those keys.
#[test]
fn a_redis_outage_costs_quick_answers_and_ends_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let mut redis = Some(Redis::start(dir.path()));
    let kek = dir.path().join("kek");
    new_kek(&kek);
    let mut a = node(dir.path(), "a", redis.as_ref().unwrap(), &kek);
    let ticket = seal_on(&a, b"sealed before the outage");
    let socket = a.socket.clone();
    // Killed by PID; back on the same socket, empty.
    let (_, redis) = across_an_outage(&mut a, "the outage", || drop(redis.take()), || Redis::start(dir.path()));

    // Back, empty: nothing from before is served; new sessions are.
    let mut client = tlskeeper_protocol::client::Client::connect(&socket).unwrap();
    for i in 0..20 {
        assert!(!lookup(&mut client, &format!("before-{i}")), "before-{i} served after Redis restarted empty");
    }
    assert!(update(&mut client, "after") && lookup(&mut client, "after"));
    assert_eq!(open_on(&a, &ticket).as_deref(), Some(&b"sealed before the outage"[..]), "a known key stopped opening");

    // The node writes its keys and the store's check record back; a node
    // started now adopts them.
    std::thread::sleep(Duration::from_secs(6));
    let b = node(dir.path(), "b", &redis, &kek);
    assert_eq!(open_on(&b, &ticket).as_deref(), Some(&b"sealed before the outage"[..]));
    assert_eq!(postfix_key_name(&b), postfix_key_name(&a));

    a.sigterm();
    let log = a.log();
    assert!(!log.contains("panicked"), "{log}");
    assert_eq!(log.matches("cannot be reached").count(), 1, "{log}");
    assert_eq!(log.matches("answers again").count(), 1, "{log}");
}

/// Proves what a hung Redis (SIGSTOP: connections stay open, nothing
/// answers) does to a node under load, with `store_timeout_ms = 200`: every
/// request is answered (FAIL or a miss), none waiting much past the
/// timeout, and some waiting it out; the node's memory stays flat and
/// nothing panics; the hang is logged once each way; and once Redis runs
/// again (SIGCONT, with everything it held) the same process serves in
/// full within seconds (each core's backoff): the sessions stored before
/// the hang are found, new ones are stored, tickets open.
#[test]
fn a_hung_redis_costs_bounded_answers_and_ends_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let redis = Redis::start(dir.path());
    let kek = dir.path().join("kek");
    new_kek(&kek);
    let config = dir.path().join("tlskeeper.toml");
    std::fs::write(&config, "store_timeout_ms = 200\n").unwrap();
    let mut a = node_with(dir.path(), "a", &redis, &kek, &[OsStr::new("--config"), config.as_os_str()]);
    let ticket = seal_on(&a, b"sealed before the hang");
    let socket = a.socket.clone();
    let (seen, resumed) = across_an_outage(
        &mut a,
        "the hang",
        || redis.pause(),
        || {
            redis.resume();
            Instant::now()
        },
    );
    // A request that meets the hang waits out the 200 ms timeout.
    let hung = &seen[usize::from(OUT)];
    assert!(hung.slowest >= Duration::from_millis(150), "no request waited for the hung server: {hung:?}");

    // The same process serves in full, nothing lost. Each core that met
    // the hang fails at once until its backoff (1 s) ends; its next call
    // finds the server answering. Requests go to the cores in turn, so a
    // round of lookups finds every session only once all cores are back.
    assert!(a.child().try_wait().unwrap().is_none(), "the node exited");
    let back = &seen[usize::from(BACK)];
    assert!(back.ok > 0, "back: {back:?}");
    let mut client = tlskeeper_protocol::client::Client::connect(&socket).unwrap();
    let found_before = |client: &mut tlskeeper_protocol::client::Client| {
        (0..20).filter(|i| lookup(client, &format!("before-{i}"))).count()
    };
    loop {
        let found = found_before(&mut client);
        if found == 20 {
            break;
        }
        assert!(resumed.elapsed() < Duration::from_secs(5), "{found} of 20 sessions found, 5 s after the hang");
        std::thread::sleep(Duration::from_millis(50));
    }
    println!("full service {:?} after the hang", resumed.elapsed());
    assert_eq!(found_before(&mut client), 20, "full service, and then a failure");
    for i in 0..8 {
        let id = format!("after-{i}");
        assert!(update(&mut client, &id) && lookup(&mut client, &id), "{id}");
    }
    assert_eq!(open_on(&a, &ticket).as_deref(), Some(&b"sealed before the hang"[..]), "a known key stopped opening");

    a.sigterm();
    let log = a.log();
    assert!(!log.contains("panicked"), "{log}");
    assert_eq!(log.matches("cannot be reached (no answer within 200 ms)").count(), 1, "{log}");
    assert_eq!(log.matches("answers again").count(), 1, "{log}");
}
