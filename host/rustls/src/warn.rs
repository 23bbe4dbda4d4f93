//! Warnings about the backend, once per kind of failure rather than once
//! per handshake.
//!
//! While the daemon is away every handshake fails to reach it, hundreds a
//! second on a busy server; one line when a kind of failure begins says all
//! there is to say, and one line when requests succeed again says it is
//! over. The lines that remain go through the daemon's own
//! [`throttle::Throttle`] (at most [`throttle::BURST`] lines of a kind per
//! [`throttle::WINDOW`]), so a daemon that flaps (up, down, up) still cannot
//! fill the log.
//!
//! # Security
//!
//! Holds no secrets. The text logged is an error's message, which names
//! the socket, the request type and the OS error, never a session, a
//! ticket or a plaintext.
//!
//! # Limitations
//!
//! Kinds are fixed labels: two different causes of one kind (a refused
//! connection, then a timeout) give one line. A failure that ends between
//! two requests of a quiet server may never be reported as over.

use std::fmt::Display;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Instant;

use tlskeeper_engine::throttle;

/// The kinds of failure, each warned about once until requests succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// The daemon could not be reached or did not answer in time.
    Unreachable,
    /// The daemon answered, but failed the request (FAIL).
    Failed,
    /// The embedded core failed a call.
    Core,
}

impl Kind {
    const ALL: [Kind; 3] = [Kind::Unreachable, Kind::Failed, Kind::Core];

    fn label(self) -> &'static str {
        match self {
            Kind::Unreachable => "tlskeeper unreachable",
            Kind::Failed => "tlskeeper failed",
            Kind::Core => "tlskeeper core failed",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// Which kinds are going on, and the budget of their lines.
#[derive(Default)]
pub(crate) struct Warnings {
    /// One bit per [`Kind`] warned about and not yet over. An atomic, not
    /// a mutex: every successful request reads it, and a lock there would
    /// make every handshake of the process meet at one point.
    active: AtomicU8,
    throttle: throttle::Throttle,
}

impl Warnings {
    /// A request failed with `kind`: warn if that kind was not going on.
    pub(crate) fn failed(&self, kind: Kind, why: &dyn Display) {
        if self.active.fetch_or(kind.bit(), Ordering::Relaxed) & kind.bit() != 0 {
            return;
        }
        if self.allowed(kind.label()) {
            tracing::warn!("{why}; TLS sessions are not resumed and tickets not issued until it answers");
        }
    }

    /// A request succeeded: say so if any kind of failure was going on.
    pub(crate) fn succeeded(&self) {
        // A plain load first, so that the common case (nothing going on)
        // writes nothing shared.
        if self.active.load(Ordering::Relaxed) == 0 {
            return;
        }
        let was = self.active.swap(0, Ordering::Relaxed);
        if was == 0 {
            return;
        }
        let over: Vec<&str> = Kind::ALL.iter().filter(|k| was & k.bit() != 0).map(|k| k.label()).collect();
        if self.allowed("tlskeeper answers") {
            tracing::info!("tlskeeper answers again (was: {})", over.join(", "));
        }
    }

    /// Whether a line of `label` fits the budget.
    fn allowed(&self, label: &'static str) -> bool {
        self.throttle.allow(label, Instant::now())
    }

    /// The kinds going on (for tests).
    #[cfg(test)]
    pub(crate) fn active(&self) -> Vec<Kind> {
        let active = self.active.load(Ordering::Relaxed);
        Kind::ALL.into_iter().filter(|k| active & k.bit() != 0).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Log lines written while `f` runs on this thread.
    fn logged(f: impl FnOnce()) -> Vec<String> {
        #[derive(Clone, Default)]
        struct Capture(Arc<Mutex<Vec<u8>>>);
        impl io::Write for Capture {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let capture = Capture::default();
        let writer = capture.clone();
        let subscriber = tracing_subscriber::fmt().with_writer(move || writer.clone()).with_ansi(false).finish();
        tracing::subscriber::with_default(subscriber, f);
        let text = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
        text.lines().map(str::to_owned).collect()
    }

    /// Proves that a hundred failures of one kind are one warning, that the
    /// end of it is one line, and that a kind that comes back is warned
    /// about again.
    #[test]
    fn a_kind_is_warned_once_until_requests_succeed() {
        let w = Warnings::default();
        let lines = logged(|| {
            for _ in 0..100 {
                w.failed(Kind::Unreachable, &"connection refused");
            }
            w.failed(Kind::Failed, &"FAIL");
            assert_eq!(w.active(), [Kind::Unreachable, Kind::Failed]);
            w.succeeded();
            w.succeeded();
            assert!(w.active().is_empty());
            w.failed(Kind::Unreachable, &"again");
            assert_eq!(w.active(), [Kind::Unreachable]);
        });
        assert_eq!(lines.len(), 4, "{lines:#?}");
        assert!(lines[0].contains("WARN") && lines[0].contains("connection refused"), "{}", lines[0]);
        assert!(lines[1].contains("FAIL"), "{}", lines[1]);
        assert!(lines[2].contains("answers again (was: tlskeeper unreachable, tlskeeper failed)"), "{}", lines[2]);
        assert!(lines[3].contains("again"), "{}", lines[3]);
    }

    /// Proves that a daemon that flaps (down, up, down...) still cannot
    /// fill the log: the throttle holds each kind to its burst.
    #[test]
    fn a_flapping_daemon_is_throttled() {
        let w = Warnings::default();
        let lines = logged(|| {
            for _ in 0..500 {
                w.failed(Kind::Unreachable, &"connection refused");
                w.succeeded();
            }
        });
        let burst = usize::try_from(throttle::BURST).unwrap();
        assert!(lines.len() <= 2 * burst, "{} lines", lines.len());
    }
}
