//! The core's PRNG: one HMAC-DRBG, and the policy for seeding it.
//!
//! Every random byte that leaves the core (seed replies, ticket keys) comes
//! from here. This module decides *when* the DRBG draws on the entropy
//! capability and *what* is mixed in; [`crate::drbg`] is the bare algorithm.
//!
//! - Instantiation is lazy, on first use, with 32 bytes of entropy, a 16-byte
//!   nonce (also from the entropy capability) and a personalisation string
//!   that includes the clock reading.
//! - Reseeds happen at random intervals, uniform in `[P/2, P]` for the
//!   configured period `P` (tlsmgr draws from `[0, P]`; the lower bound
//!   keeps a small period from turning into a reseed on every request), and
//!   unconditionally after [`RESEED_AFTER_REQUESTS`] generate calls.
//! - Every generate call mixes the current clock reading in as additional
//!   input, as tlsmgr stirs `gettimeofday` into OpenSSL's pool.
//!
//! # Security
//!
//! Holds the DRBG state (key and V), zeroized on drop. The entropy
//! capability is trusted to be unpredictable; the clock is not trusted for
//! secrecy (it only adds uniqueness). Intervals are drawn from the DRBG
//! itself so that outsiders cannot predict when reseeds happen.
//!
//! # Limitations
//!
//! No prediction resistance mode: reseeding on every request would cost an
//! entropy import per seed reply for no practical gain over the schedule.

use crate::caps::Capabilities;
use crate::drbg::{HmacDrbg, MAX_BYTES_PER_REQUEST};
use crate::error::{Error, Result};

/// Generate calls after which a reseed is forced regardless of the clock.
/// NIST allows 2^48; OpenSSL's primary DRBG reseeds after 256 and
/// mbedTLS's after 10 000. 2^16 costs one entropy read per 65 536 requests.
pub const RESEED_AFTER_REQUESTS: u64 = 1 << 16;

const ENTROPY_BYTES: usize = 32;
const NONCE_BYTES: usize = 16;
const PERSONALIZATION: &[u8] = b"tlskeeper core prng v1";

/// The DRBG plus its reseed schedule.
pub struct Prng {
    drbg: Option<HmacDrbg>,
    period_secs: u64,
    next_reseed_secs: u64,
    reseeds: u64,
}

impl Prng {
    /// A PRNG that instantiates on first use and reseeds about every
    /// `period_secs` seconds.
    pub fn new(period_secs: u32) -> Self {
        Prng { drbg: None, period_secs: u64::from(period_secs.max(1)), next_reseed_secs: 0, reseeds: 0 }
    }

    /// Change the mean reseed period; takes effect at the next reseed.
    pub fn set_period(&mut self, period_secs: u32) {
        self.period_secs = u64::from(period_secs.max(1));
    }

    /// Reseeds done since instantiation.
    pub fn reseeds(&self) -> u64 {
        self.reseeds
    }

    /// When the next timed reseed is due (seconds since the epoch), once
    /// instantiated.
    pub fn next_reseed_secs(&self) -> Option<u64> {
        self.drbg.as_ref().map(|_| self.next_reseed_secs)
    }

    /// Fill `out` with DRBG output, instantiating or reseeding first when due.
    /// `now_nanos` is the clock reading of the current export call.
    ///
    /// # Errors
    ///
    /// [`Error::Internal`] only if the DRBG's contract is broken: its limits
    /// are kept here by chunking requests and reseeding early.
    pub fn fill(&mut self, caps: &mut impl Capabilities, now_nanos: u64, out: &mut [u8]) -> Result<()> {
        self.maybe_reseed(caps, now_nanos)?;
        let additional = now_nanos.to_be_bytes();
        for chunk in out.chunks_mut(MAX_BYTES_PER_REQUEST) {
            let drbg = self.instance(caps, now_nanos)?;
            drbg.generate(chunk, &additional).map_err(drbg_error)?;
        }
        Ok(())
    }

    /// Reseed if the timer or the request counter says so (instantiating if
    /// needed). Called by `fill` and by housekeeping.
    pub fn maybe_reseed(&mut self, caps: &mut impl Capabilities, now_nanos: u64) -> Result<()> {
        let now_secs = now_nanos / 1_000_000_000;
        let due = match &self.drbg {
            None => false, // instantiation below is fresh enough
            Some(d) => now_secs >= self.next_reseed_secs || d.reseed_counter() >= RESEED_AFTER_REQUESTS,
        };
        self.instance(caps, now_nanos)?;
        if due {
            let mut entropy = zeroize::Zeroizing::new([0u8; ENTROPY_BYTES]);
            caps.fill_entropy(entropy.as_mut());
            if let Some(drbg) = self.drbg.as_mut() {
                drbg.reseed(entropy.as_ref(), &now_nanos.to_be_bytes()).map_err(drbg_error)?;
            }
            self.reseeds += 1;
            self.schedule(now_secs)?;
        }
        Ok(())
    }

    fn instance(&mut self, caps: &mut impl Capabilities, now_nanos: u64) -> Result<&mut HmacDrbg> {
        if self.drbg.is_none() {
            let mut input = zeroize::Zeroizing::new([0u8; ENTROPY_BYTES + NONCE_BYTES]);
            caps.fill_entropy(input.as_mut());
            let mut pers = [0u8; PERSONALIZATION.len() + 8];
            pers[..PERSONALIZATION.len()].copy_from_slice(PERSONALIZATION);
            pers[PERSONALIZATION.len()..].copy_from_slice(&now_nanos.to_be_bytes());
            let (entropy, nonce) = input.split_at(ENTROPY_BYTES);
            self.drbg = Some(HmacDrbg::instantiate(entropy, nonce, &pers).map_err(drbg_error)?);
            self.schedule(now_nanos / 1_000_000_000)?;
        }
        self.drbg.as_mut().ok_or(Error::Internal("DRBG missing after instantiation"))
    }

    /// Pick the next reseed time uniformly in `[now + P/2, now + P]`.
    fn schedule(&mut self, now_secs: u64) -> Result<()> {
        let mut r = [0u8; 8];
        if let Some(drbg) = self.drbg.as_mut() {
            drbg.generate(&mut r, b"reseed schedule").map_err(drbg_error)?;
        }
        // At least one second ahead, so a 1-second period cannot schedule a
        // reseed for the current second and make housekeeping spin.
        let half = (self.period_secs / 2).max(1);
        let jitter = u64::from_be_bytes(r) % (self.period_secs.saturating_sub(half) + 1);
        self.next_reseed_secs = now_secs + half + jitter;
        Ok(())
    }
}

fn drbg_error(e: crate::drbg::DrbgError) -> Error {
    // The DRBG's limits are respected above (chunking, early reseed, 32-byte
    // entropy), so this only fires if that contract is broken.
    Error::Internal(match e {
        crate::drbg::DrbgError::RequestTooLarge => "DRBG request too large",
        crate::drbg::DrbgError::ReseedRequired => "DRBG reseed required",
        crate::drbg::DrbgError::InsufficientEntropy => "DRBG given too little entropy",
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{FakeCaps, SECOND};

    #[test]
    fn instantiates_lazily_and_reseeds_on_schedule() {
        let mut caps = FakeCaps::new(1_000_000, 7);
        let mut prng = Prng::new(3600);
        assert_eq!(caps.entropy_drawn, 0);
        let mut a = [0u8; 32];
        {
            let now = caps.now;
            prng.fill(&mut caps, now, &mut a)
        }
        .unwrap();
        assert_eq!(caps.entropy_drawn, 48);
        let next = prng.next_reseed_secs().unwrap();
        assert!((1_000_000 + 1800..=1_000_000 + 3600).contains(&next), "{next}");
        // Before the deadline: no entropy drawn.
        caps.now = (next - 1) * SECOND;
        {
            let now = caps.now;
            prng.fill(&mut caps, now, &mut a)
        }
        .unwrap();
        assert_eq!((caps.entropy_drawn, prng.reseeds()), (48, 0));
        // At the deadline: one reseed of 32 bytes, and a new deadline.
        caps.now = next * SECOND;
        {
            let now = caps.now;
            prng.fill(&mut caps, now, &mut a)
        }
        .unwrap();
        assert_eq!((caps.entropy_drawn, prng.reseeds()), (80, 1));
        assert!(prng.next_reseed_secs().unwrap() >= next + 1800);
    }

    #[test]
    fn reseeds_after_request_limit() {
        let mut caps = FakeCaps::new(1_000_000, 7);
        let mut prng = Prng::new(3600);
        let mut b = [0u8; 1];
        for _ in 0..RESEED_AFTER_REQUESTS + 2 {
            {
                let now = caps.now;
                prng.fill(&mut caps, now, &mut b)
            }
            .unwrap();
        }
        assert_eq!(prng.reseeds(), 1);
    }

    #[test]
    fn outputs_are_deterministic_per_entropy_and_differ_across_it() {
        let run = |seed| {
            let mut caps = FakeCaps::new(1_000_000, seed);
            let mut prng = Prng::new(3600);
            let mut out = [0u8; 64];
            {
                let now = caps.now;
                prng.fill(&mut caps, now, &mut out)
            }
            .unwrap();
            out
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
    }

    #[test]
    fn large_requests_are_chunked() {
        let mut caps = FakeCaps::new(1_000_000, 7);
        let mut prng = Prng::new(3600);
        let mut big = alloc::vec![0u8; MAX_BYTES_PER_REQUEST * 2 + 5];
        {
            let now = caps.now;
            prng.fill(&mut caps, now, &mut big)
        }
        .unwrap();
        assert!(big[MAX_BYTES_PER_REQUEST * 2..].iter().any(|&b| b != 0));
    }
}
