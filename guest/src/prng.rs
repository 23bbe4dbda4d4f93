//! The core's PRNG: one HMAC-DRBG, and the policy for seeding it.
//!
//! Every random byte that leaves the core (seed replies, ticket keys, the
//! seed file) comes from here. This module decides *when* the DRBG draws on
//! the entropy capability and *what* is mixed in; [`crate::drbg`] is the
//! bare algorithm.
//!
//! - Instantiation is lazy, on first use, with 32 bytes of entropy, a 16-byte
//!   nonce (also from the entropy capability) and a personalisation string
//!   that includes the clock reading and, when a seed file is configured,
//!   the seed the previous run left.
//! - Reseeds happen at random intervals, uniform in `[P/2, P]` for the
//!   configured period `P` (tlsmgr draws from `[0, P]`; the lower bound
//!   keeps a small period from turning into a reseed on every request), and
//!   unconditionally after [`RESEED_AFTER_REQUESTS`] generate calls.
//! - Every generate call mixes the current clock reading in as additional
//!   input, as tlsmgr stirs `gettimeofday` into OpenSSL's pool.
//!
//! # The seed file
//!
//! Done as SeedRNG and systemd-random-seed do it, not as tlsmgr does (it
//! keeps `prng_exch` open and rewrites it in place, so a crash can leave the
//! same seed to be read twice):
//!
//! 1. at instantiation the saved seed is *taken*: the host removes it, and
//!    makes that durable, before the core sees it, so no later run (not
//!    even one after a SIGKILL) can read it again;
//! 2. it is mixed into the personalisation string, alongside fresh OS
//!    entropy, never instead of it: a stale, copied or attacker-written seed
//!    file adds nothing but cannot weaken the DRBG;
//! 3. a new seed ([`SEED_FILE_BYTES`] of DRBG output) is saved by the first
//!    housekeeping call, then at random intervals uniform in `[S/2, S]` for
//!    the configured period `S`, and at [`Prng::checkpoint`] when the host
//!    stops. Saving is an atomic replacement by the host.
//!
//! A run killed between steps 1 and 3 leaves no seed, and the next run
//! starts from OS entropy alone: a missing seed costs nothing, a reused one
//! would repeat key material.
//!
//! # Security
//!
//! Holds the DRBG state (key and V), zeroized on drop, as are the entropy
//! and seed buffers. The entropy capability is trusted to be unpredictable;
//! the clock is not trusted for secrecy (it only adds uniqueness), nor is
//! the seed file (whoever can write the data directory controls it).
//! Intervals are drawn from the DRBG itself so that outsiders cannot predict
//! when reseeds and saves happen. A saved seed is DRBG output: it reveals
//! nothing about the DRBG state, before or after.
//!
//! # Limitations
//!
//! No prediction resistance mode: reseeding on every request would cost an
//! entropy import per seed reply for no practical gain over the schedule.

use alloc::format;
use alloc::vec::Vec;

use zeroize::Zeroizing;

use crate::caps::{Capabilities, Level};
use crate::drbg::{HmacDrbg, MAX_BYTES_PER_REQUEST};
use crate::error::{Error, Result};

/// Generate calls after which a reseed is forced regardless of the clock.
/// NIST allows 2^48; OpenSSL's primary DRBG reseeds after 256 and
/// mbedTLS's after 10 000. 2^16 costs one entropy read per 65 536 requests.
pub const RESEED_AFTER_REQUESTS: u64 = 1 << 16;

/// Bytes of each saved seed: twice the DRBG's 256-bit security strength.
pub const SEED_FILE_BYTES: usize = 64;
/// Most bytes of a taken seed that are mixed in. Ours are
/// [`SEED_FILE_BYTES`]; tlsmgr's `prng_exch` is 1024, and mixing all of it
/// keeps its entropy when tlskeeper takes over from tlsmgr.
pub const MAX_SEED_FILE_BYTES: usize = 4096;
/// Seconds before a failed seed save is tried again.
pub const SEED_SAVE_RETRY_SECS: u64 = 60;

const ENTROPY_BYTES: usize = 32;
const NONCE_BYTES: usize = 16;
const PERSONALIZATION: &[u8] = b"tlskeeper core prng v1";
const NANOS: u64 = 1_000_000_000;

/// The DRBG plus its reseed and seed-file schedules.
pub struct Prng {
    drbg: Option<HmacDrbg>,
    period_secs: u64,
    next_reseed_secs: u64,
    reseeds: u64,
    /// Mean seconds between seed saves; 0 = no seed file.
    seed_period_secs: u64,
    /// When the next save is due; 0 = at the first chance.
    next_seed_save_secs: u64,
}

impl Prng {
    /// A PRNG that instantiates on first use and reseeds about every
    /// `period_secs` seconds. No seed file until [`Prng::set_seed_period`].
    pub fn new(period_secs: u32) -> Self {
        Prng {
            drbg: None,
            period_secs: u64::from(period_secs.max(1)),
            next_reseed_secs: 0,
            reseeds: 0,
            seed_period_secs: 0,
            next_seed_save_secs: 0,
        }
    }

    /// Change the mean reseed period; takes effect at the next reseed.
    pub fn set_period(&mut self, period_secs: u32) {
        self.period_secs = u64::from(period_secs.max(1));
    }

    /// Use the seed file, saving about every `period_secs` seconds (0 = no
    /// seed file). A change takes effect at the next save.
    pub fn set_seed_period(&mut self, period_secs: u32) {
        self.seed_period_secs = u64::from(period_secs);
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
        let now_secs = now_nanos / NANOS;
        let due = match &self.drbg {
            None => false, // instantiation below is fresh enough
            Some(d) => now_secs >= self.next_reseed_secs || d.reseed_counter() >= RESEED_AFTER_REQUESTS,
        };
        self.instance(caps, now_nanos)?;
        if due {
            let mut entropy = Zeroizing::new([0u8; ENTROPY_BYTES]);
            caps.fill_entropy(entropy.as_mut());
            if let Some(drbg) = self.drbg.as_mut() {
                drbg.reseed(entropy.as_ref(), &now_nanos.to_be_bytes()).map_err(drbg_error)?;
            }
            self.reseeds += 1;
            self.next_reseed_secs = now_secs + self.draw_interval(self.period_secs)?;
        }
        Ok(())
    }

    fn instance(&mut self, caps: &mut impl Capabilities, now_nanos: u64) -> Result<&mut HmacDrbg> {
        if self.drbg.is_none() {
            let mut input = Zeroizing::new([0u8; ENTROPY_BYTES + NONCE_BYTES]);
            caps.fill_entropy(input.as_mut());
            // Taken (and so gone from disk) before it is used, never after.
            let saved = Zeroizing::new(if self.seed_period_secs > 0 { caps.take_seed() } else { None });
            let saved: &[u8] = saved.as_deref().unwrap_or_default();
            let saved = &saved[..saved.len().min(MAX_SEED_FILE_BYTES)];
            let mut pers = Zeroizing::new(Vec::with_capacity(PERSONALIZATION.len() + 8 + saved.len()));
            pers.extend_from_slice(PERSONALIZATION);
            pers.extend_from_slice(&now_nanos.to_be_bytes());
            pers.extend_from_slice(saved);
            let (entropy, nonce) = input.split_at(ENTROPY_BYTES);
            self.drbg = Some(HmacDrbg::instantiate(entropy, nonce, &pers).map_err(drbg_error)?);
            if self.seed_period_secs > 0 {
                caps.log(
                    Level::Info,
                    &if saved.is_empty() {
                        "no saved seed to mix in (first start, or the last run ended before saving one)".into()
                    } else {
                        format!("mixed {} bytes of saved seed into the DRBG", saved.len())
                    },
                );
            }
            let interval = self.draw_interval(self.period_secs)?;
            self.next_reseed_secs = now_nanos / NANOS + interval;
        }
        self.drbg.as_mut().ok_or(Error::Internal("DRBG missing after instantiation"))
    }

    /// Save a new seed if one is due (instantiating first if needed, which
    /// takes the old one). Returns when the next save is due, or `None`
    /// without a seed file. Called by housekeeping.
    ///
    /// # Errors
    ///
    /// [`Error::Internal`] only if the DRBG's contract is broken. A failed
    /// save is logged and retried after [`SEED_SAVE_RETRY_SECS`].
    pub fn maybe_save_seed(&mut self, caps: &mut impl Capabilities, now_nanos: u64) -> Result<Option<u64>> {
        if self.seed_period_secs == 0 {
            return Ok(None);
        }
        let now_secs = now_nanos / NANOS;
        if now_secs >= self.next_seed_save_secs {
            self.next_seed_save_secs = match self.save_seed(caps, now_nanos)? {
                Ok(()) => now_secs + self.draw_interval(self.seed_period_secs)?,
                Err(why) => {
                    caps.log(
                        Level::Warn,
                        &format!("cannot save the seed file: {why}; retrying in {SEED_SAVE_RETRY_SECS} s"),
                    );
                    now_secs + SEED_SAVE_RETRY_SECS
                }
            };
        }
        Ok(Some(self.next_seed_save_secs))
    }

    /// Save a fresh seed for the next run, if a seed file is configured and
    /// this run has used (and so consumed) the old one. Called when the host
    /// stops.
    ///
    /// # Errors
    ///
    /// [`Error::SeedFile`] with the host's reason.
    pub fn checkpoint(&mut self, caps: &mut impl Capabilities, now_nanos: u64) -> Result<()> {
        if self.seed_period_secs == 0 || self.drbg.is_none() {
            // Without an instance the old seed was never taken: it is still
            // there for the next run.
            return Ok(());
        }
        self.save_seed(caps, now_nanos)?.map_err(Error::SeedFile)
    }

    /// Draw a seed and hand it to the host. The outer result is the DRBG's,
    /// the inner one the host's.
    fn save_seed(
        &mut self,
        caps: &mut impl Capabilities,
        now_nanos: u64,
    ) -> Result<core::result::Result<(), alloc::string::String>> {
        let mut seed = Zeroizing::new([0u8; SEED_FILE_BYTES]);
        self.fill(caps, now_nanos, seed.as_mut())?;
        Ok(caps.save_seed(seed.as_ref()))
    }

    /// A random interval, uniform in `[P/2, P]`, at least one second (so a
    /// 1-second period cannot schedule work for the current second and make
    /// housekeeping spin).
    fn draw_interval(&mut self, period_secs: u64) -> Result<u64> {
        let mut r = [0u8; 8];
        if let Some(drbg) = self.drbg.as_mut() {
            drbg.generate(&mut r, b"schedule").map_err(drbg_error)?;
        }
        let half = (period_secs / 2).max(1);
        let jitter = u64::from_be_bytes(r) % (period_secs.saturating_sub(half) + 1);
        Ok(half + jitter)
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

    /// A PRNG with a seed file saved about every `period` seconds.
    fn with_seed_file(period: u32) -> Prng {
        let mut prng = Prng::new(3600);
        prng.set_seed_period(period);
        prng
    }

    /// One run: instantiate and save as the first housekeeping call does,
    /// then return the first 32 bytes served.
    fn run_once(caps: &mut FakeCaps) -> [u8; 32] {
        let mut prng = with_seed_file(3600);
        let now = caps.now;
        prng.maybe_save_seed(caps, now).unwrap();
        let mut out = [0u8; 32];
        prng.fill(caps, now, &mut out).unwrap();
        out
    }

    #[test]
    fn the_saved_seed_is_taken_before_use_and_mixed_in() {
        let first = |seed: Option<&[u8]>| {
            let mut caps = FakeCaps::new(1_000_000, 7);
            caps.seed_file = seed.map(<[u8]>::to_vec);
            let mut prng = with_seed_file(3600);
            let mut out = [0u8; 32];
            let now = caps.now;
            prng.fill(&mut caps, now, &mut out).unwrap();
            // Gone from the "disk" before any output existed.
            assert_eq!(caps.seed_file, None);
            assert_eq!(caps.seeds_taken, seed.map(<[u8]>::to_vec).into_iter().collect::<Vec<_>>());
            out
        };
        // Same entropy and clock: only the seed tells the runs apart.
        assert_ne!(first(Some(b"one")), first(Some(b"two")));
        assert_ne!(first(Some(b"one")), first(None));
        assert_eq!(first(Some(b"one")), first(Some(b"one")));
    }

    #[test]
    fn runs_differ_even_when_entropy_and_clock_repeat() {
        // A cloned VM image: every run gets the same entropy and time. The
        // seed file, taken once and replaced each run, still makes each
        // run's output new.
        let mut seed_file = None;
        let mut seen: Vec<[u8; 32]> = Vec::new();
        let mut taken: Vec<Vec<u8>> = Vec::new();
        for _ in 0..50 {
            let mut caps = FakeCaps::new(1_000_000, 7);
            caps.seed_file = seed_file.take();
            let out = run_once(&mut caps);
            assert!(!seen.contains(&out), "a run repeated an earlier run's output");
            seen.push(out);
            for seed in caps.seeds_taken.drain(..) {
                assert!(!taken.contains(&seed), "a seed was used twice");
                taken.push(seed);
            }
            assert_eq!(caps.seeds_saved.len(), 1);
            assert_eq!(caps.seeds_saved[0].len(), SEED_FILE_BYTES);
            seed_file = caps.seed_file;
        }
        assert_eq!(taken.len(), 49);
    }

    #[test]
    fn without_a_seed_period_the_seed_file_is_left_alone() {
        let mut caps = FakeCaps::new(1_000_000, 7);
        caps.seed_file = Some(b"old".to_vec());
        let mut prng = Prng::new(3600);
        let now = caps.now;
        assert_eq!(prng.maybe_save_seed(&mut caps, now), Ok(None));
        prng.fill(&mut caps, now, &mut [0u8; 8]).unwrap();
        prng.checkpoint(&mut caps, now).unwrap();
        assert_eq!(caps.seed_file.as_deref(), Some(&b"old"[..]));
        assert!(caps.seeds_taken.is_empty() && caps.seeds_saved.is_empty());
    }

    #[test]
    fn seeds_are_saved_at_start_at_random_intervals_and_retried() {
        let mut caps = FakeCaps::new(1_000_000, 7);
        let mut prng = with_seed_file(600);
        let now = caps.now;
        let next = prng.maybe_save_seed(&mut caps, now).unwrap().unwrap();
        assert_eq!(caps.seeds_saved.len(), 1);
        assert!((1_000_000 + 300..=1_000_000 + 600).contains(&next), "{next}");
        caps.now = (next - 1) * SECOND;
        let now = caps.now;
        assert_eq!(prng.maybe_save_seed(&mut caps, now), Ok(Some(next)));
        assert_eq!(caps.seeds_saved.len(), 1);

        caps.seed_fault = Some("disk full".into());
        caps.now = next * SECOND;
        let now = caps.now;
        assert_eq!(prng.maybe_save_seed(&mut caps, now), Ok(Some(next + SEED_SAVE_RETRY_SECS)));
        assert!(caps.logged("cannot save the seed file: disk full; retrying in 60 s"));

        caps.seed_fault = None;
        caps.now = (next + SEED_SAVE_RETRY_SECS) * SECOND;
        let now = caps.now;
        let after = prng.maybe_save_seed(&mut caps, now).unwrap().unwrap();
        assert!(after >= next + SEED_SAVE_RETRY_SECS + 300, "{after}");
        assert_eq!(caps.seeds_saved.len(), 2);
        assert_ne!(caps.seeds_saved[0], caps.seeds_saved[1]);
    }

    #[test]
    fn checkpoint_saves_only_after_the_old_seed_was_taken() {
        let mut caps = FakeCaps::new(1_000_000, 7);
        caps.seed_file = Some(b"old".to_vec());
        let mut prng = with_seed_file(3600);
        let now = caps.now;
        // Never instantiated: the old seed stays for the next run.
        prng.checkpoint(&mut caps, now).unwrap();
        assert_eq!(caps.seed_file.as_deref(), Some(&b"old"[..]));

        prng.fill(&mut caps, now, &mut [0u8; 8]).unwrap();
        prng.checkpoint(&mut caps, now).unwrap();
        assert_eq!(caps.seeds_saved.len(), 1);
        caps.seed_fault = Some("read-only file system".into());
        assert_eq!(prng.checkpoint(&mut caps, now), Err(Error::SeedFile("read-only file system".into())));
    }
}
