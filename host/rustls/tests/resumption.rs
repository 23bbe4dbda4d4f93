//! Resumption across processes, end to end: two `https_server` workers on
//! one tlskeeper daemon, OpenSSL's `s_client` as the client. A session made
//! by worker A (`-sess_out`) is offered to worker B (`-sess_in`), and
//! s_client says whether B resumed it (`Reused`) or made a new one (`New`);
//! B's answer says so too (`resumed: yes`), and which process served it.
//!
//! Each test says what it proves in its doc line.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use common::{Daemon, Handshake, HungDaemon, ScriptedClock, Worker, s_client, serial};
use tlskeeper::keybuf;
use tlskeeper_protocol::{
    attr0::{self, Decoder},
    tlsmgr::{Reply, Request, RequestKind, Status},
};

/// A daemon, two workers on it with `flags`, and the temporary directory
/// for the socket and the session files.
struct Pair {
    dir: tempfile::TempDir,
    daemon: Option<Daemon>,
    a: Worker,
    b: Worker,
}

impl Pair {
    fn start(flags: &[&str]) -> Pair {
        Pair::start_with(flags, flags)
    }

    fn start_with(a_flags: &[&str], b_flags: &[&str]) -> Pair {
        let dir = tempfile::tempdir().unwrap();
        let daemon = Daemon::start(&dir.path().join("tlsmgr"), &ScriptedClock::new(), None);
        let a = Worker::remote(&daemon.socket, a_flags);
        let b = Worker::remote(&daemon.socket, b_flags);
        Pair { dir, daemon: Some(daemon), a, b }
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("tlsmgr")
    }

    fn daemon(&self) -> &Daemon {
        self.daemon.as_ref().unwrap()
    }

    fn session_file(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// A fresh session from A, saved to `name`.
    fn new_session_at_a(&self, name: &str, tls: &[&str]) -> Handshake {
        let file = self.session_file(name);
        let h = s_client(self.a.addr, &[tls, &["-sess_out", &file]].concat());
        assert!(h.new_session(), "A made a new session:\n{}", h.output);
        assert!(h.served().contains(&format!("pid {} ", self.a.pid)), "{}", h.served());
        assert!(h.served().ends_with("resumed: no"), "{}", h.served());
        assert!(Path::new(&file).exists(), "s_client saved the session");
        h
    }

    /// The session saved in `name`, offered to B.
    fn offer_to_b(&self, name: &str, tls: &[&str]) -> Handshake {
        let file = self.session_file(name);
        let h = s_client(self.b.addr, &[tls, &["-sess_in", &file]].concat());
        assert!(h.served().contains(&format!("pid {} ", self.b.pid)), "B answered:\n{}", h.output);
        h
    }

    fn assert_b_resumes(&self, name: &str, tls: &[&str], version: &str) {
        let h = self.offer_to_b(name, tls);
        assert!(h.reused(), "B resumed A's session ({tls:?}):\n{}", h.output);
        assert!(h.served().ends_with(&format!("{version}, resumed: yes")), "{}", h.served());
    }

    fn assert_b_does_not_resume(&self, name: &str, tls: &[&str], why: &str) -> Handshake {
        let h = self.offer_to_b(name, tls);
        assert!(h.new_session() && !h.reused(), "{why}: a full handshake expected:\n{}", h.output);
        assert!(h.served().ends_with("resumed: no"), "{}", h.served());
        h
    }
}

const TLS13: &[&str] = &[];
const TLS12: &[&str] = &["-tls1_2"];
const TLS12_IDS: &[&str] = &["-tls1_2", "-no_ticket"];

/// Proves that a TLS 1.3 ticket issued by one worker resumes in another:
/// the ticket was sealed by the daemon, not by either process.
#[test]
fn tls13_tickets_resume_in_another_worker() {
    let _serial = serial();
    let pair = Pair::start(&[]);
    let h = pair.new_session_at_a("s", TLS13);
    assert!(h.served().contains("TLSv1_3"), "{}", h.served());
    pair.assert_b_resumes("s", TLS13, "TLSv1_3");
    // And back: B's tickets resume in A.
    let back = s_client(pair.b.addr, &["-sess_out", &pair.session_file("back")]);
    assert!(back.new_session());
    let h = s_client(pair.a.addr, &["-sess_in", &pair.session_file("back")]);
    assert!(h.reused(), "{}", h.output);
}

/// Proves that a rustls client resumes against worker B the sessions that
/// worker A gave it, TLS 1.3 tickets and TLS 1.2 tickets and ids alike:
/// rustls on both sides, one certificate for both workers (as behind a
/// load balancer), the client's own in-memory session cache.
#[test]
fn a_rustls_client_resumes_against_another_worker() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
    let (cert_arg, key_arg) = (cert.display().to_string(), key.display().to_string());
    let flags = ["--tls12", "--cert", cert_arg.as_str(), "--key", key_arg.as_str()];
    let pair = Pair::start(&flags);
    let mut roots = rustls::RootCertStore::empty();
    roots.add(made.cert.der().clone()).unwrap();

    let tls13: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];
    let tls12: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS12];
    for (what, versions, tickets) in
        [("TLS 1.3 tickets", tls13, true), ("TLS 1.2 tickets", tls12, true), ("TLS 1.2 ids", tls12, false)]
    {
        let mut config =
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
                .with_protocol_versions(versions)
                .unwrap()
                .with_root_certificates(roots.clone())
                .with_no_client_auth();
        if !tickets {
            config.resumption = config.resumption.tls12_resumption(rustls::client::Tls12Resumption::SessionIdOnly);
        }
        let config = Arc::new(config);
        let first = rustls_get(&config, pair.a.addr);
        assert!(
            first.starts_with(&format!("served by pid {} ", pair.a.pid)) && first.ends_with("resumed: no"),
            "{what}: {first}"
        );
        let second = rustls_get(&config, pair.b.addr);
        assert!(second.starts_with(&format!("served by pid {} ", pair.b.pid)), "{what}: {second}");
        assert!(second.ends_with("resumed: yes"), "{what}: B did not resume A's session: {second}");
    }
}

/// One request over a rustls connection with `config`: the server's answer.
fn rustls_get(config: &Arc<rustls::ClientConfig>, addr: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let connector = tokio_rustls::TlsConnector::from(Arc::clone(config));
        let mut tls = tokio::time::timeout(Duration::from_secs(10), connector.connect(name, stream))
            .await
            .expect("the handshake ends in time")
            .unwrap();
        tls.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
        let mut answer = Vec::new();
        // To the end: that also takes in the TLS 1.3 tickets sent after the handshake.
        let _ = tls.read_to_end(&mut answer).await;
        let answer = String::from_utf8_lossy(&answer).into_owned();
        answer.rsplit("\r\n\r\n").next().unwrap_or_default().trim().to_owned()
    })
}

/// Proves the same for TLS 1.2 session tickets (RFC 5077).
#[test]
fn tls12_tickets_resume_in_another_worker() {
    let _serial = serial();
    let pair = Pair::start(&["--tls12"]);
    let h = pair.new_session_at_a("s", TLS12);
    assert!(h.served().contains("TLSv1_2"), "{}", h.served());
    pair.assert_b_resumes("s", TLS12, "TLSv1_2");
}

/// Proves that TLS 1.2 sessions resumed by session id (no ticket) are
/// shared through the daemon's session cache, stored under the session id
/// in hex.
#[test]
fn tls12_session_ids_resume_in_another_worker() {
    let _serial = serial();
    let pair = Pair::start(&["--tls12"]);
    let h = pair.new_session_at_a("s", TLS12_IDS);
    pair.assert_b_resumes("s", TLS12_IDS, "TLSv1_2");
    let id = h.output.lines().find_map(|l| l.trim().strip_prefix("Session-ID: ")).expect("s_client shows the id");
    assert_eq!(id.len(), 64, "a 32-byte session id");
    let lookup = Request::Lookup { cache_type: common::CACHE.into(), cache_id: id.to_ascii_lowercase() };
    match pair.daemon().client().request(&lookup).unwrap() {
        Reply::Lookup { status: Status::Ok, session } => assert!(!session.is_empty()),
        other => panic!("the session is not in the cache under its id: {other:?}"),
    }
}

/// Proves that with tickets off, TLS 1.3 resumes from the session cache,
/// and each ticket only once: the second offer of the same ticket is a full
/// handshake, because `take` handed the session out to the first.
#[test]
fn tls13_stateful_tickets_are_resumed_once() {
    let _serial = serial();
    let pair = Pair::start(&["--no-tickets"]);
    pair.new_session_at_a("s", TLS13);
    pair.assert_b_resumes("s", TLS13, "TLSv1_3");
    pair.assert_b_does_not_resume("s", TLS13, "a single-use ticket offered again");
}

/// Proves that tickets sealed under one crypto provider resume under the
/// other (ring -> aws-lc-rs in TLS 1.3, aws-lc-rs -> ring in TLS 1.2): the
/// sealing is the daemon's, whatever the workers' provider.
#[test]
fn both_providers_resume_each_others_tickets() {
    let _serial = serial();
    let pair = Pair::start_with(&["--provider", "ring", "--tls12"], &["--provider", "aws-lc-rs", "--tls12"]);
    pair.new_session_at_a("s13", TLS13);
    pair.assert_b_resumes("s13", TLS13, "TLSv1_3");
    let pair = Pair::start_with(&["--provider", "aws-lc-rs", "--tls12"], &["--provider", "ring", "--tls12"]);
    pair.new_session_at_a("s12", TLS12);
    pair.assert_b_resumes("s12", TLS12, "TLSv1_2");
    pair.new_session_at_a("ids", TLS12_IDS);
    pair.assert_b_resumes("ids", TLS12_IDS, "TLSv1_2");
}

/// Proves resumption across the key ring's rotation, on the daemon's
/// clock: a ticket whose key no longer seals (past T/2) still resumes
/// while the key decrypts, and not once the key has expired (past T).
#[test]
fn tickets_resume_across_a_key_rotation_until_their_key_expires() {
    let _serial = serial();
    let pair = Pair::start(&["--tls12"]);
    let first_key = sealing_key(pair.daemon());
    pair.new_session_at_a("s13", TLS13);
    pair.new_session_at_a("s12", TLS12);
    // T = 3600: the key seals until +1799 and opens until +3598.
    pair.daemon().clock.advance_secs(1800);
    pair.assert_b_resumes("s13", TLS13, "TLSv1_3");
    pair.assert_b_resumes("s12", TLS12, "TLSv1_2");
    assert_ne!(sealing_key(pair.daemon()), first_key, "a new key seals by now");
    pair.new_session_at_a("fresh", TLS13);
    pair.daemon().clock.advance_secs(1799);
    pair.assert_b_does_not_resume("s13", TLS13, "a TLS 1.3 ticket whose key expired");
    pair.assert_b_does_not_resume("s12", TLS12, "a TLS 1.2 ticket whose key expired");
    pair.assert_b_resumes("fresh", TLS13, "TLSv1_3");
}

/// The name of the key that seals now: the first 16 bytes of a ticket.
fn sealing_key(daemon: &Daemon) -> Vec<u8> {
    match daemon.client().request(&Request::Seal { plaintext: b"probe".to_vec().into() }).unwrap() {
        Reply::Seal { status: Status::Ok, ticket, .. } => ticket[..16].to_vec(),
        other => panic!("tktseal: {other:?}"),
    }
}

/// Proves that tickets and cached sessions survive a restart of the daemon
/// over a state directory, without restarting the workers: their pooled
/// connections go stale and are replaced.
#[test]
fn sessions_survive_a_daemon_restart_with_a_state_directory() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("tlsmgr");
    let state = dir.path().join("state");
    let clock = ScriptedClock::new();
    let daemon = Daemon::start(&socket, &clock, Some(&state));
    let pair =
        Pair { a: Worker::remote(&socket, &["--tls12"]), b: Worker::remote(&socket, &["--tls12"]), daemon: None, dir };
    pair.new_session_at_a("s13", TLS13);
    pair.new_session_at_a("s12", TLS12);
    pair.new_session_at_a("ids", TLS12_IDS);
    // Session writes are made durable at the next flush or at the stop.
    let daemon = daemon.restart();
    pair.assert_b_resumes("s13", TLS13, "TLSv1_3");
    pair.assert_b_resumes("s12", TLS12, "TLSv1_2");
    pair.assert_b_resumes("ids", TLS12_IDS, "TLSv1_2");

    // Without the state directory, a restart forgets: the control.
    daemon.stop();
    let _forgetful = Daemon::start(&socket, &clock, None);
    pair.assert_b_does_not_resume("s13", TLS13, "a daemon that kept no state");
}

/// Proves that with the daemon away (nobody listening) and then hung
/// (accepting, never answering), handshakes still complete, unresumed,
/// within the bound; and that once the daemon is back the workers resume
/// again without being restarted.
#[test]
fn handshakes_complete_in_bounded_time_while_the_daemon_is_away_and_resume_when_it_is_back() {
    let _serial = serial();
    let (timeout, retry_after) = (Duration::from_millis(250), Duration::from_millis(500));
    let flags = ["--tls12", "--timeout-ms", "250", "--retry-after-ms", "500"];
    let pair = Pair::start(&flags);
    pair.new_session_at_a("before", TLS13);
    pair.assert_b_resumes("before", TLS13, "TLSv1_3");
    // The bound a handshake may wait for the daemon, and what s_client
    // itself takes (a process start and a handshake on loopback).
    let bound = tlskeeper_rustls::RemoteOptions { timeout, retry_after, max_idle: 16 }.handshake_bound();
    let slack = Duration::from_millis(1500);
    let mut pair = pair;

    pair.daemon.take().unwrap().stop();
    let mut away = Vec::new();
    for tls in [TLS13, TLS12, TLS12_IDS] {
        let h = pair.assert_b_does_not_resume("before", tls, "the daemon is away");
        away.push(h.elapsed);
        assert!(h.elapsed < bound + slack, "{tls:?}: {:?} with the daemon away", h.elapsed);
    }

    // Hung: after the backoff, the first handshake waits out one timeout
    // (its probe), the next ones fail fast during the new backoff.
    let hung = HungDaemon::start(&pair.socket());
    thread::sleep(retry_after);
    let mut stalled = Vec::new();
    for tls in [TLS13, TLS12] {
        let h = pair.assert_b_does_not_resume("before", tls, "the daemon is hung");
        stalled.push(h.elapsed);
        assert!(h.elapsed < bound + slack, "{tls:?}: {:?} with the daemon hung", h.elapsed);
    }
    assert!(stalled[0] >= timeout, "the first handshake did wait for the hung daemon: {:?}", stalled[0]);
    // During the backoff a hung daemon costs nothing: the handshake takes
    // what s_client alone takes (about 50 ms here), well under a timeout.
    assert!(stalled[1] < timeout, "the next handshake failed fast: {:?}", stalled[1]);
    eprintln!("handshake times: daemon away {away:?}, daemon hung {stalled:?} (bound {bound:?})");
    drop(hung);

    // Back (a new daemon, new keys): after the backoff, fresh sessions are
    // shared again, by the same two worker processes.
    pair.daemon = Some(Daemon::start(&pair.socket(), &ScriptedClock::new(), None));
    thread::sleep(retry_after + Duration::from_millis(100));
    pair.new_session_at_a("after", TLS13);
    pair.assert_b_resumes("after", TLS13, "TLSv1_3");
    pair.new_session_at_a("after-ids", TLS12_IDS);
    pair.assert_b_resumes("after-ids", TLS12_IDS, "TLSv1_2");

    // Five handshakes failed to reach the daemon, away then hung: one
    // warning, and one line when it answered again.
    let log = pair.b.log();
    assert_eq!(log.matches("WARN").count(), 1, "{log}");
    assert_eq!(log.matches("tlskeeper answers again").count(), 1, "{log}");
}

/// Proves the embedded mode: one process with its own core resumes its own
/// sessions (two connections, the second resumed), with no daemon at all.
#[test]
fn the_embedded_mode_resumes_within_one_process() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let server = Worker::spawn(&["--embedded".to_owned(), "--tls12".to_owned()]);
    for (name, tls, version) in [("s13", TLS13, "TLSv1_3"), ("s12", TLS12, "TLSv1_2"), ("ids", TLS12_IDS, "TLSv1_2")] {
        let file = dir.path().join(name).display().to_string();
        let first = s_client(server.addr, &[tls, &["-sess_out", &file]].concat());
        assert!(first.new_session(), "{}", first.output);
        let second = s_client(server.addr, &[tls, &["-sess_in", &file]].concat());
        assert!(second.reused(), "{name}: {}", second.output);
        assert!(second.served().ends_with(&format!("{version}, resumed: yes")), "{}", second.served());
    }
    let status = server.terminate(Duration::from_secs(10)).expect("SIGTERM stops it");
    assert!(status.success(), "{status}");
}

/// Proves by what crosses the socket that a worker never holds a ticket
/// key: between the workers and the daemon there are only `policy`,
/// `tktseal`, `tktopen` and session-cache requests, never `tktkey`, and no
/// piece of the daemon's ticket keys (asked for by the test itself,
/// straight from the daemon) appears in either direction, raw or in base64.
#[test]
fn the_workers_never_receive_a_ticket_key() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&dir.path().join("tlsmgr"), &ScriptedClock::new(), None);
    let proxy = Proxy::start(&dir.path().join("proxy"), &daemon.socket);
    let pair = Pair {
        a: Worker::remote(&proxy.path, &["--tls12"]),
        b: Worker::remote(&proxy.path, &["--tls12"]),
        daemon: None,
        dir,
    };
    for (name, tls) in [("s13", TLS13), ("s12", TLS12), ("ids", TLS12_IDS)] {
        pair.new_session_at_a(name, tls);
        pair.assert_b_resumes(name, tls, if tls.is_empty() { "TLSv1_3" } else { "TLSv1_2" });
    }
    // A worker without tickets keeps TLS 1.3 sessions in the cache and
    // takes them back (`take`).
    let stateful = Worker::remote(&proxy.path, &["--no-tickets"]);
    let file = pair.session_file("stateful");
    assert!(s_client(stateful.addr, &["-sess_out", &file]).new_session());
    assert!(s_client(stateful.addr, &["-sess_in", &file]).reused());

    let (up, down) = proxy.recorded();
    let mut kinds = Vec::new();
    for stream in &up {
        let mut decoder = Decoder::new(attr0::Limits::default());
        let mut rest = &stream[..];
        while let Some((frame, used)) = decoder.decode(rest).unwrap() {
            kinds.push(Request::from_frame(&frame).unwrap().kind());
            rest = &rest[used..];
        }
        assert!(rest.is_empty(), "a request was cut off");
    }
    for kind in &kinds {
        assert!(
            matches!(
                kind,
                RequestKind::Policy
                    | RequestKind::Seal
                    | RequestKind::Open
                    | RequestKind::Lookup
                    | RequestKind::Update
                    | RequestKind::Take
            ),
            "a worker sent {kind}"
        );
    }
    for needed in [RequestKind::Seal, RequestKind::Open, RequestKind::Update, RequestKind::Lookup, RequestKind::Take] {
        assert!(kinds.contains(&needed), "no {needed} request crossed: {kinds:?}");
    }

    // Now the test, not a worker, asks for the key, to know what to look
    // for; the tickets that crossed carry its name.
    let key = match daemon.client().request(&Request::TicketKey { key_name: Vec::new() }).unwrap() {
        Reply::TicketKey { status: Status::Ok, keybuf: buf } => keybuf::decode(&buf).unwrap(),
        other => panic!("tktkey: {other:?}"),
    };
    let crossed: Vec<u8> = up.iter().chain(down.iter()).flatten().copied().collect();
    let name_b64 = base64_of(&key.name[..12]);
    assert!(contains(&crossed, name_b64.as_bytes()), "the sealed tickets that crossed carry the key's name");
    for secret in [&key.cipher_key[..], &key.hmac_key[..]] {
        for piece in secret.chunks(8) {
            assert!(!contains(&crossed, piece), "a piece of a ticket key crossed the socket");
            // Every alignment of the piece in base64: three shifts of the
            // byte stream give every encoding of those bytes.
            for shift in 0..3 {
                let padded: Vec<u8> = std::iter::repeat_n(0u8, shift).chain(piece.iter().copied()).collect();
                let encoded = base64_of(&padded);
                let core = &encoded.as_bytes()[4..encoded.len() - 4];
                assert!(!contains(&crossed, core), "a piece of a ticket key crossed in base64");
            }
        }
    }
    eprintln!("{} requests crossed the socket: {kinds:?}", kinds.len());
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The bytes that crossed one connection in one direction.
type Recording = Arc<Mutex<Vec<u8>>>;

/// Every connection's recording, in the order they were accepted.
type Recordings = Arc<Mutex<Vec<Recording>>>;

/// A UNIX-socket proxy that records every byte each way, per connection.
struct Proxy {
    path: PathBuf,
    up: Recordings,
    down: Recordings,
}

impl Proxy {
    fn start(path: &Path, daemon: &Path) -> Proxy {
        let listener = UnixListener::bind(path).unwrap();
        let (up, down) = (Arc::new(Mutex::new(Vec::new())), Arc::new(Mutex::new(Vec::new())));
        let (ups, downs, daemon) = (Arc::clone(&up), Arc::clone(&down), daemon.to_path_buf());
        thread::spawn(move || {
            for worker in listener.incoming() {
                let Ok(worker) = worker else { return };
                let Ok(upstream) = UnixStream::connect(&daemon) else { return };
                let (sent, received) = (Arc::new(Mutex::new(Vec::new())), Arc::new(Mutex::new(Vec::new())));
                ups.lock().unwrap().push(Arc::clone(&sent));
                downs.lock().unwrap().push(Arc::clone(&received));
                pump(worker.try_clone().unwrap(), upstream.try_clone().unwrap(), sent);
                pump(upstream, worker, received);
            }
        });
        Proxy { path: path.to_path_buf(), up, down }
    }

    /// What each connection sent (worker to daemon) and received.
    fn recorded(&self) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
        let copy = |streams: &Recordings| streams.lock().unwrap().iter().map(|s| s.lock().unwrap().clone()).collect();
        (copy(&self.up), copy(&self.down))
    }
}

/// Copy `from` to `to`, recording, until either side closes.
fn pump(mut from: UnixStream, mut to: UnixStream, record: Recording) {
    thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            record.lock().unwrap().extend_from_slice(&buf[..n]);
            if to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(std::net::Shutdown::Both);
    });
}

/// Proves that a worker started with no daemon to talk to refuses to start
/// (it would otherwise run believing it shares tickets), with a message
/// that says why.
#[test]
fn a_worker_without_a_daemon_refuses_to_start() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(common::https_server_bin())
        .args(["--listen", "127.0.0.1:0", "--socket"])
        .arg(dir.path().join("nothing"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot seal a session ticket with tlskeeper"), "{stderr}");
    assert!(out.stdout.is_empty(), "no `listening on` line");
}
