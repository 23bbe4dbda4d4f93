//! An in-process daemon for the unit tests: the real core component in the
//! real engine behind the real server, on a UNIX socket, as
//! `host/tests/common` builds one.
//!
//! # Security
//!
//! Test code only (`cfg(test)`): OS entropy, memory storage, a socket in a
//! private temporary directory.
//!
//! # Limitations
//!
//! The system clock: tests that move time use the integration tests'
//! scripted clock instead.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;

use tlskeeper::{
    config::{CacheSettings, Settings},
    server,
    service::Service,
    shutdown::Shutdown,
};
use tlskeeper_engine::{
    Capabilities, Core, Runtime,
    caps::{NoSeedFile, OsEntropy, SystemClock},
    shared_core::{self, SharedCore},
    storage::MemoryStorage,
};

/// The cache the tests use, beside the default ones.
pub const CACHE: &str = "https";

/// The compiled component, shared by the tests of this binary.
fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| Runtime::new(None).expect("the embedded core loads"))
}

/// Default settings with an [`CACHE`] cache.
pub fn settings() -> Settings {
    let mut settings = Settings::default();
    settings.caches.insert(CACHE.into(), CacheSettings::default());
    settings
}

/// [`settings`] with a cache `name` that is switched off.
pub fn settings_with_disabled(name: &str) -> Settings {
    let mut settings = settings();
    settings.caches.insert(name.into(), CacheSettings { enabled: false, ..CacheSettings::default() });
    settings
}

/// A started core with [`settings`] on memory storage and the system
/// clock, shared.
pub fn core() -> SharedCore {
    core_with(&settings())
}

/// As [`core`], with `settings`.
pub fn core_with(settings: &Settings) -> SharedCore {
    let caps = Capabilities {
        clock: Box::new(SystemClock),
        entropy: Box::new(OsEntropy),
        storage: Box::new(MemoryStorage::new()),
        seed_file: Box::new(NoSeedFile),
    };
    let core = Core::start(runtime(), caps, settings.core_config(), settings.limits()).expect("core starts");
    shared_core::spawn(core).expect("caretaker starts").0
}

/// A daemon serving a fresh core on a socket; stopped on drop.
pub struct Daemon {
    _dir: Option<tempfile::TempDir>,
    socket: PathBuf,
    shutdown: Arc<Shutdown>,
    thread: Option<JoinHandle<()>>,
}

impl Daemon {
    /// On a socket in a new temporary directory.
    pub fn start() -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let mut daemon = Daemon::start_at(&dir.path().join("tlsmgr"));
        daemon._dir = Some(dir);
        daemon
    }

    /// On the socket at `path`, which must not exist.
    pub fn start_at(path: &Path) -> Daemon {
        let listener = UnixListener::bind(path).unwrap();
        let shutdown = Arc::new(Shutdown::new().unwrap());
        let flag = Arc::clone(&shutdown);
        let core = core();
        let thread = std::thread::spawn(move || {
            let service = Service::new(core);
            server::serve(&[listener], &service, &settings().server(), &flag).unwrap();
        });
        Daemon { _dir: None, socket: path.to_path_buf(), shutdown, thread: Some(thread) }
    }

    /// The socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Stop (closing every connection) and start a fresh core on the same
    /// socket.
    pub fn restart(&mut self) {
        self.stop();
        std::fs::remove_file(&self.socket).unwrap();
        let mut fresh = Daemon::start_at(&self.socket);
        // `fresh` goes with the old, stopped server's handles.
        std::mem::swap(&mut self.shutdown, &mut fresh.shutdown);
        std::mem::swap(&mut self.thread, &mut fresh.thread);
    }

    fn stop(&mut self) {
        self.shutdown.trigger();
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}
