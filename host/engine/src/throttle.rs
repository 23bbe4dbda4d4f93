//! A limit on repeated log lines: at most [`BURST`] lines of one kind per
//! [`WINDOW`], then one line saying how many were held back.
//!
//! Every request a client makes can end in a warning (a bogus cache name,
//! a disk that has failed), so without a limit a client sending junk, or a
//! busy server over a dead disk, writes thousands of lines a second into
//! the mail log. The first lines of a burst are kept whole, because they
//! are the ones an operator greps for; a count replaces the rest. Logging
//! only the first line ever was rejected: a problem that comes back an hour
//! later must show up again.
//!
//! # Security
//!
//! Holds no secrets: counts per kind, nothing of what was logged.
//!
//! # Limitations
//!
//! Kinds are fixed labels chosen by the caller, not the text: two different
//! bogus cache names share one budget. The held-back count is reported when
//! the next line of that kind comes, not on a timer, so the last count of a
//! burst that simply stops is never logged.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Lines of one kind logged per window.
pub const BURST: u32 = 10;
/// How long a window lasts.
pub const WINDOW: Duration = Duration::from_secs(10);

/// Per-kind budgets.
#[derive(Default)]
pub struct Throttle {
    kinds: Mutex<BTreeMap<&'static str, Window>>,
}

struct Window {
    started: Instant,
    logged: u32,
    held_back: u64,
}

/// What to do with one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Log it; `held_back` lines of its kind were dropped before it.
    Log {
        /// Lines dropped since the last one logged.
        held_back: u64,
    },
    /// Drop it.
    Drop,
}

impl Throttle {
    /// A throttle with no history.
    pub const fn new() -> Throttle {
        Throttle { kinds: Mutex::new(BTreeMap::new()) }
    }

    /// Whether a line of `kind`, at `now`, may be logged.
    pub fn check(&self, kind: &'static str, now: Instant) -> Verdict {
        // A poisoned lock only means a panic elsewhere while counting; the
        // counts are still usable.
        let mut kinds = self.kinds.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let window = kinds.entry(kind).or_insert(Window { started: now, logged: 0, held_back: 0 });
        if now.duration_since(window.started) >= WINDOW {
            window.started = now;
            window.logged = 0;
        }
        if window.logged < BURST {
            window.logged += 1;
            Verdict::Log { held_back: std::mem::take(&mut window.held_back) }
        } else {
            window.held_back += 1;
            Verdict::Drop
        }
    }

    /// [`Throttle::check`] for callers that only need a yes or no: when the
    /// line may be logged after some were held back, the count is logged
    /// first, as a warning of its own, so that every caller words it alike.
    pub fn allow(&self, kind: &'static str, now: Instant) -> bool {
        match self.check(kind, now) {
            Verdict::Log { held_back: 0 } => true,
            Verdict::Log { held_back } => {
                tracing::warn!("{held_back} more lines like the next were not logged");
                true
            }
            Verdict::Drop => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_cut_and_the_count_comes_with_the_next_window() {
        let throttle = Throttle::new();
        let t0 = Instant::now();
        for _ in 0..BURST {
            assert_eq!(throttle.check("disk", t0), Verdict::Log { held_back: 0 });
        }
        for _ in 0..25 {
            assert_eq!(throttle.check("disk", t0 + WINDOW / 2), Verdict::Drop);
        }
        // Another kind has its own budget.
        assert_eq!(throttle.check("junk", t0 + WINDOW / 2), Verdict::Log { held_back: 0 });
        assert_eq!(throttle.check("disk", t0 + WINDOW), Verdict::Log { held_back: 25 });
        assert_eq!(throttle.check("disk", t0 + WINDOW), Verdict::Log { held_back: 0 });
    }
}
