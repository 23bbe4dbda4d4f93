//! [`Ticketer`]: rustls's [`ProducesTickets`] with the tickets sealed and
//! opened by tlskeeper, so that every server process that shares a daemon
//! resumes every other's tickets and none of them holds a ticket key.
//!
//! rustls hands `encrypt` the encoded resumption state of a connection and
//! sends the result to the client as a session ticket; `decrypt` gets back
//! whatever a client presents. Here `encrypt` is a `tktseal` request and
//! `decrypt` a `tktopen` request (or the same calls into an embedded core).
//! The daemon seals under its ticket-key ring (the keys Postfix's `tktkey`
//! hands out, rotated on Postfix's schedule: a key seals new tickets for
//! half the ticket cache's timeout, then only opens them for another half)
//! and refuses any ticket it did not seal or whose key has expired.
//!
//! **The lifetime** announced to clients ([`ProducesTickets::lifetime`]) is
//! the one the daemon returned with the last ticket it sealed: the time
//! every ticket sealed now is sure to still open for, whatever the ring
//! does meanwhile (half the timeout less two seconds; 1798 s for the default
//! hour). It is enforced by the ring's keys expiring, not by a time kept in
//! the ticket, as rustls's contract asks. rustls reads it right after
//! `encrypt`, so it is the lifetime of the ticket just sealed; it is capped
//! at RFC 8446's seven days.
//!
//! # Security
//!
//! Remote: the worker sends plaintexts to the daemon and gets sealed
//! tickets back; it never asks for a ticket key (`tktkey`), so a worker
//! that is compromised can open tickets only while it can reach the daemon,
//! and takes no key with it. Embedded: the keys are in this process's
//! core. Tickets given to `decrypt` are attacker-controlled and go to the
//! daemon as they are; the daemon's answer for every ticket that does not
//! open is the same (no oracle). Plaintexts are zeroized after use here and
//! handed to rustls by move.
//!
//! Everything that can reach the daemon's socket can open every ticket
//! sealed by it: the socket's directory must admit only the TLS servers.
//! And every server that shares a daemon resumes every other's tickets:
//! servers with different client-authentication settings or certificates
//! need daemons of their own (rustls's `ServerConfig` documentation
//! explains the risk).
//!
//! # Limitations
//!
//! Whether tickets are on is learnt once, at [`Ticketer::new`]; a daemon
//! reconfigured later to turn them on or off is not noticed until the
//! server restarts. While the daemon is unavailable, `encrypt` issues no
//! ticket (TLS 1.3) or an empty one (TLS 1.2) and `decrypt` opens nothing:
//! full handshakes, bounded as [`crate::remote`] describes.

use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};

use rustls::server::ProducesTickets;

use crate::backend::{Backend, Unavailable};

/// The longest ticket lifetime a server may announce (RFC 8446, 4.6.1).
pub const MAX_TICKET_LIFETIME: u32 = 604_800;

/// Tickets sealed and opened by a tlskeeper daemon or embedded core.
pub struct Ticketer {
    backend: Backend,
    enabled: bool,
    /// The lifetime the backend gave the last ticket it sealed.
    lifetime: AtomicU32,
}

/// Why a [`Ticketer`] could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TicketerError {
    /// The probe ticket could not be sealed: the daemon is not running, not
    /// at that socket, or not tlskeeper (Postfix's tlsmgr does not seal
    /// tickets).
    #[error("cannot seal a session ticket with tlskeeper ({backend:?}): {source}")]
    Unavailable {
        /// Where the probe went.
        backend: Backend,
        /// What failed.
        #[source]
        source: Unavailable,
    },
}

impl Ticketer {
    /// A ticketer over `backend`, which it probes with one sealed empty
    /// plaintext to learn whether tickets are on and their lifetime.
    ///
    /// # Errors
    ///
    /// [`TicketerError::Unavailable`] when the backend does not answer the
    /// probe: a server should not start believing it shares tickets when it
    /// does not.
    pub fn new(backend: Backend) -> Result<Ticketer, TicketerError> {
        let (enabled, lifetime) = match backend.seal(b"") {
            Ok(Some(sealed)) => (true, sealed.lifetime),
            // The daemon's ticket cache has timeout 0: tickets are off, and
            // rustls falls back to the session store for TLS 1.3 too.
            Ok(None) => (false, 0),
            Err(source) => return Err(TicketerError::Unavailable { backend, source }),
        };
        Ok(Ticketer { backend, enabled, lifetime: AtomicU32::new(lifetime) })
    }
}

impl ProducesTickets for Ticketer {
    fn enabled(&self) -> bool {
        self.enabled
    }

    fn lifetime(&self) -> u32 {
        self.lifetime.load(Ordering::Relaxed).min(MAX_TICKET_LIFETIME)
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let sealed = self.backend.seal(plain).ok().flatten()?;
        self.lifetime.store(sealed.lifetime, Ordering::Relaxed);
        Some(sealed.ticket)
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        let mut plaintext = self.backend.open(cipher).ok().flatten()?;
        // Moved out, not copied: the buffer rustls gets is the only one.
        Some(std::mem::take(&mut *plaintext))
    }
}

impl fmt::Debug for Ticketer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ticketer")
            .field("backend", &self.backend)
            .field("enabled", &self.enabled)
            .field("lifetime", &self.lifetime())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{Daemon, core};

    /// Proves that tickets one ticketer seals another (a second process's,
    /// here a second backend on the same daemon) opens, that the announced
    /// lifetime is the daemon's, and that junk opens nothing.
    #[test]
    fn tickets_sealed_by_one_ticketer_open_in_another() {
        let daemon = Daemon::start();
        let a = Ticketer::new(Backend::remote(daemon.socket())).unwrap();
        let b = Ticketer::new(Backend::remote(daemon.socket())).unwrap();
        assert!(a.enabled());
        assert_eq!(a.lifetime(), 1798);
        let ticket = a.encrypt(b"state").unwrap();
        assert_eq!(b.decrypt(&ticket).as_deref(), Some(&b"state"[..]));
        assert_eq!(b.decrypt(&ticket[1..]), None);
        assert_eq!(b.decrypt(&[]), None);

        let embedded = Ticketer::new(Backend::embedded(core())).unwrap();
        assert_eq!(embedded.decrypt(&ticket), None, "another core's ring does not open it");
        assert!(format!("{a:?}").contains("lifetime: 1798"));
    }

    /// Proves that a ticketer cannot be made without a daemon, and that one
    /// whose daemon goes away issues and opens nothing.
    #[test]
    fn without_a_daemon_no_ticket_is_issued_or_opened() {
        let dir = tempfile::tempdir().unwrap();
        let err = Ticketer::new(Backend::remote(dir.path().join("tlsmgr"))).unwrap_err();
        assert!(err.to_string().contains("cannot seal a session ticket"), "{err}");

        let daemon = Daemon::start();
        let ticketer = Ticketer::new(Backend::remote(daemon.socket())).unwrap();
        let ticket = ticketer.encrypt(b"state").unwrap();
        drop(daemon);
        assert_eq!(ticketer.encrypt(b"state"), None);
        assert_eq!(ticketer.decrypt(&ticket), None);
    }
}
