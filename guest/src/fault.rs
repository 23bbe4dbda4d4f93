//! Deliberate faults, compiled in only by the guest's `test-fault` feature:
//! a lookup of one of the marker session ids below makes the core fail the
//! way a real bug, a runaway loop or a leak would, so that tests can show
//! the host surviving each.
//!
//! The faults are triggered by an input rather than by a host-side switch
//! because a real fault arrives the same way: in the middle of an ordinary
//! call, with the store half-used. A host-side "trap now" hook was rejected:
//! it would test the hook, not the recovery from a core that misbehaves.
//!
//! # Security
//!
//! Never part of a shipped build: `host/engine/build.rs` builds the component
//! without features, and only `host/tests/faults.rs` builds this variant,
//! into a directory of its own. A shipped core that crashed on request
//! would be a denial-of-service switch for any client.
//!
//! # Limitations
//!
//! Only `lookup-session` checks for the markers; one fault per kind of
//! trap is all the recovery path needs.

use alloc::vec::Vec;

/// Panics: a bug. With `panic = abort` this is a wasm `unreachable` trap.
pub const PANIC: &str = "tlskeeper-test-fault-panic";
/// Loops forever: the host's fuel budget must stop it.
pub const SPIN: &str = "tlskeeper-test-fault-spin";
/// Allocates until the allocator fails: the host's memory cap must stop it.
pub const GROW: &str = "tlskeeper-test-fault-grow";

/// Fail as `id` asks, or return if it is no marker.
pub fn inject(id: &str) {
    match id {
        PANIC => panic!("deliberate fault: {id}"),
        SPIN => {
            let mut n: u64 = 0;
            loop {
                // black_box: a loop with no observable effect may be
                // assumed to end, and removed.
                n = core::hint::black_box(n.wrapping_add(1));
            }
        }
        GROW => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                // Filled, so the pages are really touched.
                hoard.push(alloc::vec![0x5a; 1 << 20]);
                core::hint::black_box(&hoard);
            }
        }
        _ => {}
    }
}
