//! What the harnesses that launch the real binary share: where it is, and a
//! guard that stops it by its PID.
//!
//! Included by each example with `#[path]`: an example is a crate of its
//! own, and `tests/common` is not visible to it.
//!
//! # Security
//!
//! Signals only the child this process started, by PID, never by name.
//!
//! # Limitations
//!
//! Linux and the usual `target/<profile>/examples/` layout only.

use std::path::{Path, PathBuf};
use std::process::Child;

/// `target/<profile>/tlskeeper` for `target/<profile>/examples/<this>`.
pub fn default_binary() -> PathBuf {
    let me = std::env::current_exe().unwrap();
    me.parent().and_then(Path::parent).unwrap().join("tlskeeper")
}

/// The daemon under test, stopped with SIGTERM by its PID when dropped
/// (also when a run panics), and reaped.
pub struct Daemon(pub Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let pid = libc::pid_t::try_from(self.0.id()).unwrap();
        // SAFETY: kill(2) on our own child's PID; the child is not yet
        // reaped (we wait below), so the PID cannot have been reused.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}
