//! The harness of the integration tests: a tlskeeper daemon in this process
//! (the real core component behind the real server, on a clock the test
//! moves), `https_server` workers as child processes, and `openssl
//! s_client` as the TLS client.
//!
//! The daemon runs in this process, not as the `tlskeeper` binary, so that
//! a test can move its clock past a key's windows in an instant; a restart
//! over a state directory reopens the same store, as the binary does.

#![allow(dead_code, missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, mpsc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use tlskeeper::{
    config::{CacheSettings, Settings},
    server,
    service::Service,
    shutdown::Shutdown,
};
use tlskeeper_engine::{
    Capabilities, Core, Runtime,
    caps::{Clock, NoSeedFile, OsEntropy, SeedStore},
    shared_core, state,
    storage::{MemoryStorage, Storage},
};
use tlskeeper_protocol::{client::Client, tlsmgr::ANNOUNCEMENT};

/// The cache the workers use.
pub const CACHE: &str = "https";

/// One test at a time: each starts two worker processes and a daemon, and
/// some measure how long a handshake takes, which a second test running
/// beside it on two cores would distort.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The compiled component, shared by the tests of one binary.
pub fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| Runtime::new(None).expect("the embedded core loads"))
}

/// A clock the test moves by hand; starts at a fixed, realistic time.
#[derive(Clone)]
pub struct ScriptedClock(Arc<AtomicU64>);

impl ScriptedClock {
    pub fn new() -> Self {
        ScriptedClock(Arc::new(AtomicU64::new(1_795_000_000 * 1_000_000_000)))
    }
    pub fn advance_secs(&self, secs: u64) {
        self.0.fetch_add(secs * 1_000_000_000, Ordering::SeqCst);
    }
}

impl Clock for ScriptedClock {
    fn now_nanos(&mut self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Default settings (ticket keys on the `smtpd` cache's hour) with the
/// workers' cache.
pub fn settings(state_dir: Option<&Path>) -> Settings {
    let mut settings = Settings::default();
    settings.caches.insert(CACHE.into(), CacheSettings::default());
    settings.state_dir = state_dir.map(Path::to_path_buf);
    settings
}

/// The daemon: a core on `clock` served on `socket`, over memory or over
/// the durable state in a state directory.
pub struct Daemon {
    pub socket: PathBuf,
    pub clock: ScriptedClock,
    state_dir: Option<PathBuf>,
    shutdown: Arc<Shutdown>,
    thread: Option<JoinHandle<()>>,
}

impl Daemon {
    /// Start on `socket` (removed first if a stopped daemon left it).
    pub fn start(socket: &Path, clock: &ScriptedClock, state_dir: Option<&Path>) -> Daemon {
        let _ = std::fs::remove_file(socket);
        let settings = settings(state_dir);
        let (storage, seed_file): (Box<dyn Storage>, Box<dyn SeedStore>) = match state_dir {
            Some(_) => {
                let state = state::open(&settings.state_options()).unwrap_or_else(|e| panic!("{e}"));
                (state.storage, state.seed_file)
            }
            None => (Box::new(MemoryStorage::new()), Box::new(NoSeedFile)),
        };
        let caps = Capabilities { clock: Box::new(clock.clone()), entropy: Box::new(OsEntropy), storage, seed_file };
        let core = Core::start(runtime(), caps, settings.core_config(), settings.limits()).expect("core starts");
        let (core, caretaker) = shared_core::spawn(core).expect("caretaker starts");
        let listener = UnixListener::bind(socket).unwrap();
        let shutdown = Arc::new(Shutdown::new().unwrap());
        let flag = Arc::clone(&shutdown);
        let thread = thread::spawn(move || {
            let service = Service::new(core);
            server::serve(&[listener], &service, &settings.server(), &flag).expect("serve");
            // The caretaker checkpoints and drops the core (closing the
            // store) once the last handle is gone: wait for it, so that a
            // restart finds the store free.
            drop(service);
            caretaker.join().unwrap();
        });
        Daemon {
            socket: socket.to_path_buf(),
            clock: clock.clone(),
            state_dir: state_dir.map(Path::to_path_buf),
            shutdown,
            thread: Some(thread),
        }
    }

    /// A client of its own, straight to the socket.
    pub fn client(&self) -> Client {
        Client::connect(&self.socket).unwrap()
    }

    /// Stop: close every connection, close the store, remove the socket.
    pub fn stop(mut self) {
        self.stop_now();
    }

    /// Stop and start again on the same socket, clock and state.
    pub fn restart(self) -> Daemon {
        let (socket, clock, state_dir) = (self.socket.clone(), self.clock.clone(), self.state_dir.clone());
        self.stop();
        Daemon::start(&socket, &clock, state_dir.as_deref())
    }

    fn stop_now(&mut self) {
        self.shutdown.trigger();
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop_now();
    }
}

/// A daemon that accepts, announces the protocol, and never answers.
pub struct HungDaemon {
    socket: PathBuf,
}

impl HungDaemon {
    pub fn start(socket: &Path) -> HungDaemon {
        let _ = std::fs::remove_file(socket);
        let listener = UnixListener::bind(socket).unwrap();
        thread::spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let _ = stream.write_all(ANNOUNCEMENT);
                held.push(stream);
            }
        });
        HungDaemon { socket: socket.to_path_buf() }
    }
}

impl Drop for HungDaemon {
    fn drop(&mut self) {
        // The accepting thread stays blocked on a socket nobody can reach
        // any more; its connections stay open (hung) until the test ends.
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// The example, built by `cargo test` beside this test binary:
/// `target/<profile>/deps/<test>` runs, `target/<profile>/examples/` holds
/// the examples. Cargo builds examples for a whole-package `cargo test`,
/// not for `cargo test --test resumption`; a binary older than the sources
/// would test old code, so that is refused.
pub fn https_server_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    let bin = profile_dir.join("examples").join("https_server");
    let built = std::fs::metadata(&bin)
        .and_then(|m| m.modified())
        .unwrap_or_else(|e| panic!("{}: {e}; `cargo test -p tlskeeper-rustls` builds it", bin.display()));
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    for dir in ["src", "examples"] {
        for entry in std::fs::read_dir(crate_dir.join(dir)).unwrap() {
            let source = entry.unwrap().path();
            let changed = std::fs::metadata(&source).and_then(|m| m.modified()).unwrap();
            assert!(
                changed <= built,
                "{} is older than {}: run `cargo test -p tlskeeper-rustls` (or `cargo build -p tlskeeper-rustls \
                 --example https_server`) first",
                bin.display(),
                source.display()
            );
        }
    }
    bin
}

/// An `https_server` child process, killed by its PID when dropped; its
/// log (standard error) is shown when a test fails.
pub struct Worker {
    child: Option<Child>,
    log: tempfile::NamedTempFile,
    pub addr: SocketAddr,
    pub pid: u32,
}

impl Worker {
    /// Remote mode on `socket`, on a free loopback port, with `flags`.
    pub fn remote(socket: &Path, flags: &[&str]) -> Worker {
        let mut args = vec!["--socket".to_owned(), socket.display().to_string()];
        args.extend(flags.iter().map(|f| (*f).to_owned()));
        Worker::spawn(&args)
    }

    /// `https_server --listen 127.0.0.1:0 <args>`; waits for `listening on`.
    pub fn spawn(args: &[String]) -> Worker {
        let log = tempfile::NamedTempFile::new().unwrap();
        let mut child = Command::new(https_server_bin())
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let pid = child.id();
        let mut worker = Worker { child: Some(child), log, addr: "0.0.0.0:0".parse().unwrap(), pid };
        // The embedded mode compiles the core first: allow for it.
        let line = rx.recv_timeout(Duration::from_secs(120)).unwrap_or_default();
        let Some(addr) = line.trim().strip_prefix("listening on ") else {
            let status = worker.child.as_mut().unwrap().try_wait().unwrap();
            panic!(
                "https_server {args:?} did not start (exit {status:?}); its first line: {line:?}; its log:\n{}",
                worker.log()
            );
        };
        worker.addr = addr.parse().unwrap();
        worker
    }

    /// What it has written to standard error.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// SIGTERM, then the exit status within `limit`.
    pub fn terminate(mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take().unwrap();
        let pid = libc::pid_t::try_from(child.id()).unwrap();
        // SAFETY: kill(2) on our own child's PID; no memory is involved.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait().unwrap() {
                return Some(status);
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("--- log of https_server pid {} ---\n{}", self.pid, self.log());
        }
        if let Some(mut child) = self.child.take() {
            // Child::kill sends SIGKILL to this child's PID, nothing else.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What one `openssl s_client` run showed.
pub struct Handshake {
    pub output: String,
    pub elapsed: Duration,
}

impl Handshake {
    /// `Reused, TLSv1.x` in s_client's summary.
    pub fn reused(&self) -> bool {
        self.output.lines().any(|l| l.starts_with("Reused, "))
    }

    /// `New, TLSv1.x`.
    pub fn new_session(&self) -> bool {
        self.output.lines().any(|l| l.starts_with("New, "))
    }

    /// The server's answer line.
    pub fn served(&self) -> &str {
        self.output.lines().find(|l| l.starts_with("served by pid ")).unwrap_or("")
    }
}

/// `openssl s_client -connect <addr> <args>`, sending one HTTP/1.0 request
/// and reading until the server closes.
pub fn s_client(addr: SocketAddr, args: &[&str]) -> Handshake {
    let started = Instant::now();
    let mut child = Command::new("/usr/bin/openssl")
        .arg("s_client")
        .arg("-connect")
        .arg(addr.to_string())
        .arg("-ign_eof")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl runs");
    child.stdin.take().unwrap().write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    // A server that never answers must not hang the test: kill the client
    // (by its PID) after 20 s.
    let pid = child.id();
    let (done, waited) = mpsc::channel::<()>();
    let watchdog = thread::spawn(move || {
        if waited.recv_timeout(Duration::from_secs(20)).is_err() {
            // SAFETY: kill(2) on our own child's PID; no memory is involved.
            unsafe { libc::kill(libc::pid_t::try_from(pid).unwrap(), libc::SIGKILL) };
        }
    });
    let out = child.wait_with_output().unwrap();
    let elapsed = started.elapsed();
    let _ = done.send(());
    watchdog.join().unwrap();
    let output = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "s_client {args:?} failed ({}):\n{output}", out.status);
    Handshake { output, elapsed }
}
