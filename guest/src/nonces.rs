//! Nonces for sealed tickets: distinct for every ticket one instance seals,
//! and unpredictable to outsiders, at the cost of one ChaCha20 block each.
//!
//! The first nonce an instance needs draws a 32-byte key from the DRBG; the
//! nonce for the `n`-th ticket is the first [`NONCE_LEN`] bytes of the
//! ChaCha20 keystream block under that key with `n` as its nonce. Counters
//! never repeat within an instance, ChaCha20 is a pseudo-random function of
//! its nonce, and two instances hold independent keys, so two tickets share
//! a nonce only by a 192-bit collision.
//!
//! The rejected alternative is what this replaces: 24 bytes of HMAC-DRBG
//! output per ticket. That is as sound, but a DRBG generate call with
//! additional input is nine HMAC-SHA-256 computations in software (the
//! sandbox has no SHA instructions) and was two thirds of the cost of
//! sealing a ticket. A bare
//! counter would be cheaper still and is rejected too: it would tell every
//! client how many tickets the server has issued and when the core last
//! restarted.
//!
//! # Security
//!
//! Nonces are public (every ticket carries its own); the key only keeps
//! them unpredictable and is zeroized on drop, with no `Debug`. Being DRBG
//! output, it is recorded and replayed like every other random byte, so a
//! replayed trace seals the very same tickets.
//!
//! # Limitations
//!
//! The key is not replaced when the DRBG reseeds: nonces need uniqueness,
//! not forward secrecy. After 2^64 tickets a new key is drawn, which no
//! instance lives long enough to reach.

use chacha20::ChaCha20;
use chacha20::cipher::{KeyIvInit, StreamCipher};
use zeroize::Zeroizing;

use crate::caps::Capabilities;
use crate::error::Result;
use crate::prng::Prng;
use crate::sealing::NONCE_LEN;

/// Bytes of the nonce key.
const KEY_LEN: usize = 32;

/// The nonce source of one instance.
#[derive(Default)]
pub struct Nonces {
    /// Drawn on first use; `None` until then and after the counter runs out.
    key: Option<Zeroizing<[u8; KEY_LEN]>>,
    /// The counter of the next nonce under `key`.
    next: u64,
}

impl Nonces {
    /// A source that has not drawn its key yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The next nonce, drawing a key from `prng` first when there is none.
    ///
    /// # Errors
    ///
    /// Those of [`Prng::fill`], only when a key is drawn.
    pub fn next(&mut self, caps: &mut impl Capabilities, prng: &mut Prng, now_nanos: u64) -> Result<[u8; NONCE_LEN]> {
        if self.next == u64::MAX {
            self.key = None;
        }
        let key = match &mut self.key {
            Some(key) => key,
            empty => {
                let mut key = Zeroizing::new([0u8; KEY_LEN]);
                prng.fill(caps, now_nanos, key.as_mut())?;
                self.next = 0;
                empty.insert(key)
            }
        };
        let mut block_nonce = [0u8; 12];
        block_nonce[..8].copy_from_slice(&self.next.to_le_bytes());
        self.next += 1;
        let mut nonce = [0u8; NONCE_LEN];
        // The cipher's expanded key is wiped on drop (`chacha20`'s `zeroize`
        // feature).
        ChaCha20::new((&**key).into(), (&block_nonce).into()).apply_keystream(&mut nonce);
        Ok(nonce)
    }
}

#[cfg(test)]
mod tests {
    use alloc::collections::BTreeSet;

    use super::*;
    use crate::testing::FakeCaps;

    /// The next 32 bytes of `prng`: equal for two PRNGs only if both drew
    /// the same number of times before.
    fn after(caps: &mut FakeCaps, prng: &mut Prng) -> [u8; 32] {
        let mut out = [0u8; 32];
        prng.fill(caps, 1, &mut out).expect("fill");
        out
    }

    #[test]
    fn nonces_are_distinct_and_only_the_first_draws_on_the_drbg() {
        let (mut caps_a, mut prng_a, mut nonces_a) = (FakeCaps::new(1, 7), Prng::new(3600), Nonces::new());
        let (mut caps_b, mut prng_b, mut nonces_b) = (FakeCaps::new(1, 7), Prng::new(3600), Nonces::new());
        let mut seen = BTreeSet::new();
        for _ in 0..1000 {
            assert!(seen.insert(nonces_a.next(&mut caps_a, &mut prng_a, 1).expect("nonce")));
        }
        nonces_b.next(&mut caps_b, &mut prng_b, 1).expect("nonce");
        assert_eq!(after(&mut caps_a, &mut prng_a), after(&mut caps_b, &mut prng_b));
    }

    #[test]
    fn instances_with_different_entropy_disagree() {
        let (mut caps_a, mut prng_a) = (FakeCaps::new(1, 7), Prng::new(3600));
        let (mut caps_b, mut prng_b) = (FakeCaps::new(1, 8), Prng::new(3600));
        let a = Nonces::new().next(&mut caps_a, &mut prng_a, 1).expect("nonce");
        let b = Nonces::new().next(&mut caps_b, &mut prng_b, 1).expect("nonce");
        assert_ne!(a, b);
    }

    #[test]
    fn same_inputs_same_nonces() {
        let run = || {
            let (mut caps, mut prng, mut nonces) = (FakeCaps::new(1, 7), Prng::new(3600), Nonces::new());
            [nonces.next(&mut caps, &mut prng, 5).expect("nonce"), nonces.next(&mut caps, &mut prng, 6).expect("nonce")]
        };
        assert_eq!(run(), run(), "a replay must seal the same tickets");
    }

    #[test]
    fn a_spent_counter_draws_a_new_key() {
        let (mut caps_a, mut prng_a, mut nonces_a) = (FakeCaps::new(1, 7), Prng::new(3600), Nonces::new());
        let (mut caps_b, mut prng_b, mut nonces_b) = (FakeCaps::new(1, 7), Prng::new(3600), Nonces::new());
        let first = nonces_a.next(&mut caps_a, &mut prng_a, 1).expect("nonce");
        nonces_b.next(&mut caps_b, &mut prng_b, 1).expect("nonce");
        nonces_a.next = u64::MAX;
        let again = nonces_a.next(&mut caps_a, &mut prng_a, 1).expect("nonce");
        nonces_b.next(&mut caps_b, &mut prng_b, 1).expect("nonce");
        assert_eq!(nonces_a.next, 1, "counter 0 went to the new key's first nonce");
        assert_ne!(first, again, "counter 0 under a new key is a new nonce");
        assert_ne!(after(&mut caps_a, &mut prng_a), after(&mut caps_b, &mut prng_b), "the new key came from the DRBG");
    }
}
