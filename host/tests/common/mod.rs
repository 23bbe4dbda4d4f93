//! Shared harness for the integration tests: a real core component in a real
//! wasmtime engine, behind the real server on a UNIX socket in a temporary
//! directory.
//!
//! Each `TestServer` runs in this process (threads, not a child), so tests
//! can drive its clock; `stop` (or drop) shuts it down and joins its threads.

#![allow(dead_code, missing_docs, clippy::unwrap_used)]

use std::fs;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tlskeeper::config::Settings;
use tlskeeper::service::Service;
use tlskeeper::shutdown::Shutdown;
use tlskeeper_engine::caps::{Clock, Entropy, EntropyError, NoSeedFile, OsEntropy};
use tlskeeper_engine::storage::MemoryStorage;
use tlskeeper_engine::trace::file::TraceWriter;
use tlskeeper_engine::{Capabilities, Core, Runtime, Tape};
use tlskeeper_protocol::client::Client;

/// The compiled component, shared by all tests of one binary (compiling it
/// is the slowest step of a test).
pub fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| Runtime::new(None).expect("the embedded core loads"))
}

/// The guest built with `feature` (one of its never-shipped test
/// features), by a nested cargo build into Cargo's per-target temporary
/// directory, as `host/engine/build.rs` builds the real one; once per feature and
/// test binary.
pub fn guest_with_feature(feature: &'static str) -> PathBuf {
    static BUILT: std::sync::Mutex<Vec<(&'static str, PathBuf)>> = std::sync::Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap();
    if let Some((_, path)) = built.iter().find(|(f, _)| *f == feature) {
        return path.clone();
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("component-{feature}"));
    let status = Command::new(env!("CARGO"))
        .current_dir(workspace)
        .args(["build", "--locked", "--package", "tlskeeper-guest", "--lib", "--target", "wasm32-wasip2"])
        .args(["--profile", "guest", "--features", feature, "--target-dir"])
        .arg(&target)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .status()
        .unwrap();
    assert!(status.success(), "building the guest with {feature} failed");
    let path = target.join("wasm32-wasip2/guest/tlskeeper_guest.wasm");
    built.push((feature, path.clone()));
    path
}

/// A clock the test moves by hand; starts at a fixed, realistic time.
#[derive(Clone)]
pub struct ScriptedClock(pub Arc<AtomicU64>);

pub const START_SECS: u64 = 1_795_000_000;

impl ScriptedClock {
    pub fn new() -> Self {
        ScriptedClock(Arc::new(AtomicU64::new(START_SECS * 1_000_000_000)))
    }
    pub fn advance_secs(&self, secs: u64) {
        self.0.fetch_add(secs * 1_000_000_000, Ordering::SeqCst);
    }
    pub fn now_secs(&self) -> u64 {
        self.0.load(Ordering::SeqCst) / 1_000_000_000
    }
}

impl Clock for ScriptedClock {
    fn now_nanos(&mut self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Deterministic "entropy": SHA-256 in counter mode over a seed, so a run
/// can be repeated bit for bit while two seeds give different streams.
pub struct SeededEntropy {
    seed: u64,
    counter: u64,
}

impl SeededEntropy {
    pub fn new(seed: u64) -> SeededEntropy {
        SeededEntropy { seed, counter: 0 }
    }
}

impl Entropy for SeededEntropy {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), EntropyError> {
        for chunk in buf.chunks_mut(32) {
            let block = Sha256::new().chain_update(self.seed.to_be_bytes()).chain_update(self.counter.to_be_bytes());
            self.counter += 1;
            chunk.copy_from_slice(&block.finalize()[..chunk.len()]);
        }
        Ok(())
    }
}

/// A core over `caps` recording every boundary event to the new trace file
/// `path`.
pub fn recording(path: &Path, settings: &Settings, caps: Capabilities) -> Core {
    let writer =
        TraceWriter::create(path, &runtime().trace_header(settings.limits())).unwrap_or_else(|e| panic!("{e}"));
    Core::start_with_tape(runtime(), caps, settings.core_config(), settings.limits(), Tape::Record(writer))
        .expect("core starts")
}

/// Capabilities with OS entropy, in-memory storage and `clock`.
pub fn caps(clock: &ScriptedClock) -> Capabilities {
    Capabilities {
        clock: Box::new(clock.clone()),
        entropy: Box::new(OsEntropy),
        storage: Box::new(MemoryStorage::new()),
        seed_file: Box::new(NoSeedFile),
    }
}

/// A core with default settings and a scripted clock.
pub fn core(clock: &ScriptedClock) -> Core {
    let settings = Settings::default();
    Core::start(runtime(), caps(clock), settings.core_config(), settings.limits()).expect("core starts")
}

pub struct TestServer {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub clock: ScriptedClock,
    shutdown: Arc<Shutdown>,
    thread: Option<JoinHandle<()>>,
}

impl TestServer {
    pub fn start() -> TestServer {
        Self::with_settings(Settings::default())
    }

    pub fn with_settings(settings: Settings) -> TestServer {
        let clock = ScriptedClock::new();
        let core =
            Core::start(runtime(), caps(&clock), settings.core_config(), settings.limits()).expect("core starts");
        Self::with_core(core, clock, &settings)
    }

    /// Serve `core`, started by the caller (on `clock`) with whatever
    /// component and capabilities the test needs.
    pub fn with_core(core: Core, clock: ScriptedClock, settings: &Settings) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("tlsmgr");
        let (core, caretaker) = tlskeeper_engine::shared_core::spawn(core).expect("caretaker starts");
        let listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
        let shutdown = Arc::new(Shutdown::new().expect("shutdown pipe"));
        let flag = Arc::clone(&shutdown);
        let server_settings = settings.server();
        let thread = std::thread::spawn(move || {
            let service = Service::new(core);
            tlskeeper::server::serve(&[listener], &service, &server_settings, &flag).expect("serve");
            // The core stops once the last connection thread drops its
            // handle; a test must not wait for clients it still holds.
            drop((service, caretaker));
        });
        TestServer { dir, socket, clock, shutdown, thread: Some(thread) }
    }

    pub fn client(&self) -> Client {
        Client::connect(&self.socket).expect("connect")
    }

    pub fn raw(&self) -> UnixStream {
        UnixStream::connect(&self.socket).expect("connect")
    }

    pub fn path(&self) -> &Path {
        &self.socket
    }

    /// Stop accepting, then wait for the server thread. Connections still
    /// open keep their threads until they close.
    pub fn stop(mut self) {
        self.shutdown_now();
    }

    fn shutdown_now(&mut self) {
        self.shutdown.trigger();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown_now();
    }
}

// ---------------------------------------------------------------------------
// The real binary as a child process.
// ---------------------------------------------------------------------------

pub const BIN: &str = env!("CARGO_BIN_EXE_tlskeeper");

/// A child process that is killed (by its PID) if a test fails before it
/// exits.
pub struct Daemon {
    pub child: Option<Child>,
    pub socket: PathBuf,
    pub log: PathBuf,
}

impl Daemon {
    /// `tlskeeper serve --socket <socket> --no-compile-cache`, output to `log`.
    pub fn spawn(socket: &Path, log: &Path) -> Daemon {
        Self::spawn_with(socket, log, &["--no-compile-cache".as_ref()])
    }

    /// `tlskeeper serve --socket <socket> <flags>`, output to `log`.
    pub fn spawn_with(socket: &Path, log: &Path, flags: &[&std::ffi::OsStr]) -> Daemon {
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--log", "info"]).args(flags).arg("--socket").arg(socket).env_remove("RUST_LOG");
        Self::launch(cmd, socket, log)
    }

    /// Run `cmd` (which serves on `socket`) with stdin closed and its
    /// output to `log`.
    pub fn launch(mut cmd: Command, socket: &Path, log: &Path) -> Daemon {
        let log_file = fs::File::create(log).unwrap();
        let child = cmd.stdin(Stdio::null()).stdout(log_file.try_clone().unwrap()).stderr(log_file).spawn().unwrap();
        Daemon { child: Some(child), socket: socket.to_path_buf(), log: log.to_path_buf() }
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn child(&mut self) -> &mut Child {
        self.child.as_mut().unwrap()
    }

    /// Waits (up to 30 s) until the socket accepts a connection.
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            if let Some(status) = self.child().try_wait().unwrap() {
                panic!("the daemon exited early ({status}):\n{}", self.log());
            }
            assert!(Instant::now() < deadline, "the socket never accepted:\n{}", self.log());
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits (up to 30 s) until the daemon answers a request: for sockets
    /// that accept before the daemon runs (master(8) binds them).
    pub fn wait_answering(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if cli_client(&self.socket, &["seed", "1"]).status.success() {
                return;
            }
            if let Some(status) = self.child().try_wait().unwrap() {
                panic!("the daemon exited early ({status}):\n{}", self.log());
            }
            assert!(Instant::now() < deadline, "the daemon never answered:\n{}", self.log());
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits up to `limit` for the child to exit; kills it (by PID) and fails otherwise.
    pub fn wait_exit(&mut self, limit: Duration, what: &str) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child().try_wait().unwrap() {
                self.child = None;
                return status;
            }
            if Instant::now() >= deadline {
                let mut child = self.child.take().unwrap();
                let _ = child.kill();
                let _ = child.wait();
                panic!("{what}: the daemon did not exit within {limit:?}:\n{}", self.log());
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn pid(&mut self) -> libc::pid_t {
        libc::pid_t::try_from(self.child().id()).unwrap()
    }

    pub fn sigterm(&mut self) {
        let pid = self.pid();
        // SAFETY: kill(2) on our own child's PID; no memory is involved.
        let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `tlskeeper client --socket <socket> <args>`.
pub fn cli_client(socket: &Path, args: &[&str]) -> Output {
    Command::new(BIN).arg("client").arg("--socket").arg(socket).args(args).env_remove("RUST_LOG").output().unwrap()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub fn ok_stdout(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {}\nstdout: {}\nstderr: {}",
        out.status,
        stdout(out),
        String::from_utf8_lossy(&out.stderr)
    );
    stdout(out)
}
