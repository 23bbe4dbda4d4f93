//! Shared harness for the integration tests: a real core component in a real
//! wasmtime engine, behind the real server on a UNIX socket in a temporary
//! directory.
//!
//! Each `TestServer` runs in this process (threads, not a child), so tests
//! can drive its clock; `stop` (or drop) shuts it down and joins its threads.

#![allow(dead_code, missing_docs)]

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;

use tlskeeper::caps::{Clock, OsEntropy};
use tlskeeper::client::Client;
use tlskeeper::config::Settings;
use tlskeeper::engine::{Capabilities, Core, Runtime};
use tlskeeper::service::Service;
use tlskeeper::storage::MemoryStorage;

/// The compiled component, shared by all tests of one binary (compiling it
/// is the slowest step of a test).
pub fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| Runtime::new(None).expect("the embedded core loads"))
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

/// Capabilities with OS entropy, in-memory storage and `clock`.
pub fn caps(clock: &ScriptedClock) -> Capabilities {
    Capabilities {
        clock: Box::new(clock.clone()),
        entropy: Box::new(OsEntropy),
        storage: Box::new(MemoryStorage::new()),
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
    shutdown: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TestServer {
    pub fn start() -> TestServer {
        Self::with_settings(Settings::default())
    }

    pub fn with_settings(settings: Settings) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("tlsmgr");
        let clock = ScriptedClock::new();
        let core =
            Core::start(runtime(), caps(&clock), settings.core_config(), settings.limits()).expect("core starts");
        let (actor, actor_thread) = tlskeeper::actor::spawn(core).expect("actor starts");
        let listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
        let shutdown = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&shutdown);
        let server_settings = settings.server();
        let thread = std::thread::spawn(move || {
            let service = Service::new(actor);
            tlskeeper::server::serve(&listener, &service, &server_settings, &flag).expect("serve");
            // The actor stops once the last connection thread drops its
            // handle; a test must not wait for clients it still holds.
            drop((service, actor_thread));
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
        self.shutdown.store(true, Ordering::SeqCst);
        let _ = UnixStream::connect(&self.socket); // wake the accept loop
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
