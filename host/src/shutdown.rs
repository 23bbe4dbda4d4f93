//! A shutdown trigger that threads can fire and a `poll(2)` loop can wait
//! on.
//!
//! The accept loop sleeps in `poll` on its listening sockets plus the read
//! end of this pipe; whoever decides the daemon must stop (the signal
//! thread, the watcher of master(8)'s status pipe) calls [`Shutdown::trigger`],
//! which sets a flag and writes one byte, so the loop wakes at once.
//!
//! A pipe rather than the earlier trick of connecting to our own socket:
//! that needed the socket's path, which a daemon started by master(8) does
//! not have (it inherits an already-bound descriptor), and which may be
//! unreachable after chroot.
//!
//! # Security
//!
//! No data crosses the pipe; only this process holds its ends.
//!
//! # Limitations
//!
//! Once fired, a trigger stays fired: there is no reset.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tlskeeper_engine::poll::poll_readable;

/// The shared stop flag plus a pipe to wake pollers.
#[derive(Debug)]
pub struct Shutdown {
    fired: AtomicBool,
    read: OwnedFd,
    write: OwnedFd,
}

impl Shutdown {
    /// A trigger that has not fired.
    ///
    /// # Errors
    ///
    /// When the OS cannot create a pipe.
    pub fn new() -> io::Result<Shutdown> {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both descriptors are open and ours.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        Ok(Shutdown { fired: AtomicBool::new(false), read, write })
    }

    /// Ask everyone waiting to stop. Safe to call more than once and from
    /// any thread.
    pub fn trigger(&self) {
        self.fired.store(true, Ordering::SeqCst);
        // A full pipe (EAGAIN) already wakes every poller; nothing to do then.
        // SAFETY: writing one byte from a valid buffer to our own descriptor.
        let _ = unsafe { libc::write(self.write.as_raw_fd(), [1u8].as_ptr().cast(), 1) };
    }

    /// Whether [`trigger`](Self::trigger) has been called.
    pub fn is_triggered(&self) -> bool {
        self.fired.load(Ordering::SeqCst)
    }

    /// The descriptor that becomes readable once triggered, for `poll`.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.read.as_fd()
    }
}

/// Fire `shutdown` on SIGTERM, SIGINT or SIGHUP, from a thread of its own.
///
/// # Errors
///
/// When the handlers or the thread cannot be set up.
pub fn on_signals(shutdown: Arc<Shutdown>) -> io::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])?;
    std::thread::Builder::new().name("tlskeeper-signals".into()).spawn(move || {
        if let Some(signal) = signals.forever().next() {
            tracing::info!("signal {signal} received; shutting down");
            shutdown.trigger();
        }
    })?;
    Ok(())
}

/// Fire `shutdown` once `fd` becomes readable, hangs up or errs: how
/// master(8)'s children learn that master went away or was reloaded (it
/// closes its end of the status pipe).
///
/// # Errors
///
/// When the thread cannot be started.
pub fn on_hangup(fd: OwnedFd, shutdown: Arc<Shutdown>, what: &'static str) -> io::Result<()> {
    std::thread::Builder::new().name("tlskeeper-watch".into()).spawn(move || {
        match poll_readable(&[fd.as_fd(), shutdown.fd()], None) {
            Ok(revents) if revents[0] != 0 => {
                tracing::debug!("{what} -- exiting");
                shutdown.trigger();
            }
            Ok(_) => {} // shutting down for another reason
            Err(e) => {
                tracing::warn!("cannot watch for {what}: {e}; exiting");
                shutdown.trigger();
            }
        }
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn trigger_wakes_a_poller_in_another_thread() {
        let shutdown = Arc::new(Shutdown::new().unwrap());
        assert!(!shutdown.is_triggered());
        let s = Arc::clone(&shutdown);
        let waiter = std::thread::spawn(move || poll_readable(&[s.fd()], Some(Duration::from_secs(10))).unwrap());
        std::thread::sleep(Duration::from_millis(20));
        shutdown.trigger();
        shutdown.trigger(); // twice is fine
        let revents = waiter.join().unwrap();
        assert_ne!(revents[0] & libc::POLLIN, 0);
        assert!(shutdown.is_triggered());
    }

    #[test]
    fn a_closed_pipe_fires_the_trigger() {
        let shutdown = Arc::new(Shutdown::new().unwrap());
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: a valid two-int array.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: both descriptors were just created and are ours.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        on_hangup(read, Arc::clone(&shutdown), "test pipe closed").unwrap();
        std::thread::sleep(Duration::from_millis(20));
        assert!(!shutdown.is_triggered());
        drop(write); // as master(8) does on reload
        poll_readable(&[shutdown.fd()], Some(Duration::from_secs(10))).unwrap();
        assert!(shutdown.is_triggered());
    }

    #[test]
    fn poll_times_out_when_nothing_happens() {
        let shutdown = Shutdown::new().unwrap();
        let revents = poll_readable(&[shutdown.fd()], Some(Duration::from_millis(10))).unwrap();
        assert_eq!(revents, [0]);
    }
}
