//! Waiting for descriptors to become readable: one `poll(2)` call, retried
//! when a signal interrupts it.
//!
//! Used by the random source (to bound a read of a device that may block)
//! and by the daemon's shutdown trigger. `mio` was rejected here: these
//! callers wait on one or two descriptors once, not in an event loop.
//!
//! # Security
//!
//! Reads nothing; only reports readiness.
//!
//! # Limitations
//!
//! Linux and other Unix systems only (`libc::poll`).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// Wait until one of `fds` is readable (or in error or hung up); returns
/// the `revents` of each, in order. `timeout` of `None` waits forever.
///
/// # Errors
///
/// When `poll` itself fails other than by being interrupted.
pub fn poll_readable(fds: &[BorrowedFd<'_>], timeout: Option<std::time::Duration>) -> io::Result<Vec<libc::c_short>> {
    let mut pollfds: Vec<libc::pollfd> =
        fds.iter().map(|fd| libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 }).collect();
    let timeout_ms = timeout.map_or(-1, |t| libc::c_int::try_from(t.as_millis()).unwrap_or(libc::c_int::MAX));
    loop {
        // SAFETY: `pollfds` is a valid, exclusively borrowed array of
        // `pollfds.len()` entries.
        let n = unsafe { libc::poll(pollfds.as_mut_ptr(), pollfds.len() as libc::nfds_t, timeout_ms) };
        if n >= 0 {
            return Ok(pollfds.iter().map(|p| p.revents).collect());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}
