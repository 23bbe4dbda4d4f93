//! HMAC_DRBG with SHA-256, exactly as NIST SP 800-90A Rev. 1 section 10.1.2
//! specifies it: instantiate, reseed and generate, and nothing else.
//!
//! This is the pure mechanism. It does not fetch entropy, decide when to
//! reseed, or mix in anything on its own: [`crate::prng`] owns that policy
//! and hands this module bytes. Keeping the two apart is what lets the
//! algorithm be checked bit for bit against NIST's CAVP vectors (see the
//! tests at the bottom) while the policy is tested with fake capabilities.
//!
//! The working state is the 32-byte HMAC key `Key`, the 32-byte chaining
//! value `V` and the `reseed_counter`, as in section 10.1.2.1. The optional
//! parts of the spec are resolved as follows: the security strength is
//! always 256 bits (the most SHA-256 supports), and prediction resistance
//! is not offered (see *Limitations*).
//!
//! It is written here instead of taken from a crate because no maintained
//! `no_std` crate offers it on the current RustCrypto traits: `hmac-drbg`
//! 0.3.0 (the only HMAC_DRBG crate) is built on `hmac` 0.8 / `digest` 0.9,
//! never resets its counter on reseed, enforces none of the NIST limits,
//! panics on output lengths that are not a multiple of the digest size and
//! does not zeroize its state; `drbg` 2.0 is a CTR_DRBG (AES) that gathers
//! its own entropy through `getrandom`, which the core must not do. The
//! algorithm is some forty lines on top of `hmac`, and the known-answer
//! tests pin it down.
//!
//! # Security
//!
//! Trusted: the caller, for the quality of the entropy input and for the
//! uniqueness of the nonce (only the entropy *length* is checked here), and
//! the `hmac`/`sha2` crates. Possibly attacker-influenced: the
//! personalization string and additional input, which HMAC absorbs safely
//! whatever their content, and the requested output length, which is
//! bounded by [`MAX_BYTES_PER_REQUEST`]. Secrets held: `Key` and `V`, which
//! together determine all output until the next reseed, so [`HmacDrbg`] has
//! no `Debug` and no `Clone` (a copy would replay the same stream) and is
//! zeroized on drop. Seed material is streamed into HMAC rather than
//! concatenated, and HMAC results are written straight into the state or the
//! caller's buffer, so this module keeps no temporary copies of secrets. The
//! `hmac`/`sha2` instances used for each step wipe their own internal state
//! only when those crates' `zeroize` features are enabled; without them,
//! key-derived SHA-256 midstates may remain in freed stack memory.
//!
//! # Limitations
//!
//! - No prediction resistance: it needs fresh entropy on every generate
//!   call, i.e. an entropy source inside the mechanism, which would break the
//!   separation above. A caller that wants it does what section 9.3.1 does
//!   for a prediction-resistance request: [`HmacDrbg::reseed`] with fresh
//!   entropy and the additional input, then [`HmacDrbg::generate`] without.
//!   That keeps the one source of entropy, and the decision, in the policy.
//! - The nonce is not checked: SP 800-90A section 8.6.7 asks for either
//!   security_strength/2 bits of entropy or uniqueness, and neither can be
//!   judged from its length; the caller must provide it.
//! - The 2^35-bit ceilings on entropy, personalization and additional input
//!   (Table 2) are not checked: on wasm32 no slice can reach 2^32 bytes, and
//!   the native build of the crate exists to run tests.
//! - No uninstantiate function: dropping the value zeroizes it, which is what
//!   section 9.4 asks for.

use hmac::digest::{FixedOutput, Output};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop};

type HmacSha256 = Hmac<Sha256>;

/// Output length of SHA-256 in bytes; the size of `Key` and `V`.
const OUTLEN: usize = 32;

/// Largest request one generate call serves: 2^19 bits (NIST Table 2).
pub const MAX_BYTES_PER_REQUEST: usize = 65536;
/// NIST's ceiling on generate calls between reseeds (2^48).
pub const MAX_RESEED_INTERVAL: u64 = 1 << 48;
/// Minimum entropy input for 256-bit security strength: 32 bytes.
pub const MIN_ENTROPY_BYTES: usize = 32;

/// Why an HMAC_DRBG function refused to run. The working state is left
/// unchanged in every case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrbgError {
    /// More than [`MAX_BYTES_PER_REQUEST`] bytes were asked for.
    RequestTooLarge,
    /// `reseed_counter` passed [`MAX_RESEED_INTERVAL`]; call reseed first.
    ReseedRequired,
    /// The entropy input is shorter than [`MIN_ENTROPY_BYTES`].
    InsufficientEntropy,
}

impl core::fmt::Display for DrbgError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            DrbgError::RequestTooLarge => {
                write!(f, "DRBG request larger than {MAX_BYTES_PER_REQUEST} bytes")
            }
            DrbgError::ReseedRequired => f.write_str("DRBG reseed interval exhausted; reseed first"),
            DrbgError::InsufficientEntropy => write!(f, "DRBG entropy input shorter than {MIN_ENTROPY_BYTES} bytes"),
        }
    }
}

/// HMAC_DRBG (SHA-256) working state. No Debug, no Clone; zeroized on drop.
pub struct HmacDrbg {
    key: [u8; OUTLEN],
    v: [u8; OUTLEN],
    reseed_counter: u64,
}

// A manual Drop rather than `#[derive(Zeroize, ZeroizeOnDrop)]`: the derive
// would also make `zeroize()` public, and a state zeroized in place is still
// a working generator, one whose output anybody can compute. Wiping belongs
// at the end of the value's life only.
impl Drop for HmacDrbg {
    fn drop(&mut self) {
        self.key.zeroize();
        self.v.zeroize();
        self.reseed_counter.zeroize();
    }
}

impl ZeroizeOnDrop for HmacDrbg {}

impl HmacDrbg {
    /// Instantiate (10.1.2.3). Errors with InsufficientEntropy if entropy.len() < MIN_ENTROPY_BYTES.
    ///
    /// `seed_material = entropy || nonce || personalization`; `Key` starts
    /// as 32 zero bytes and `V` as 32 bytes of 0x01 before the update.
    pub fn instantiate(entropy: &[u8], nonce: &[u8], personalization: &[u8]) -> Result<Self, DrbgError> {
        // Every NIST CAVP vector for SHA-256 at this strength uses a 32-byte
        // entropy input, so the SP 800-90A minimum (security_strength bits)
        // is checked as is, with no exception for test vectors.
        check_entropy(entropy)?;
        let mut drbg = HmacDrbg { key: [0x00; OUTLEN], v: [0x01; OUTLEN], reseed_counter: 1 };
        drbg.update(&[entropy, nonce, personalization]);
        Ok(drbg)
    }

    /// Reseed (10.1.2.4). Same entropy length rule.
    ///
    /// `seed_material = entropy || additional_input`; the counter goes back
    /// to 1.
    pub fn reseed(&mut self, entropy: &[u8], additional_input: &[u8]) -> Result<(), DrbgError> {
        check_entropy(entropy)?;
        self.update(&[entropy, additional_input]);
        self.reseed_counter = 1;
        Ok(())
    }

    /// Generate (10.1.2.5) into `out`, with optional additional input (empty slice = none).
    ///
    /// Fills all of `out`. On error `out` and the state are left untouched.
    /// An empty `out` is a valid request: the state still advances, as the
    /// spec's step 6 runs regardless of the length.
    pub fn generate(&mut self, out: &mut [u8], additional_input: &[u8]) -> Result<(), DrbgError> {
        // The request-size check belongs to the generic Generate Process
        // (9.3.1 step 2) and comes before the mechanism's own steps.
        if out.len() > MAX_BYTES_PER_REQUEST {
            return Err(DrbgError::RequestTooLarge);
        }
        // Step 1. NIST compares with `>`: the counter may equal the interval,
        // so exactly 2^48 generate calls are allowed per seed.
        if self.reseed_counter > MAX_RESEED_INTERVAL {
            return Err(DrbgError::ReseedRequired);
        }
        // Step 2. "Null" in the spec means zero length, hence the emptiness
        // test (the same one the update function applies).
        if !additional_input.is_empty() {
            self.update(&[additional_input]);
        }
        // Steps 3-5: V = HMAC(Key, V) repeatedly, output the leftmost bytes.
        // Each block goes straight into `out`, so no temporary holds output.
        for chunk in out.chunks_mut(OUTLEN) {
            let mut mac = keyed(&self.key);
            mac.update(&self.v);
            mac.finalize_into(<&mut Output<HmacSha256>>::from(&mut self.v));
            chunk.copy_from_slice(&self.v[..chunk.len()]);
        }
        // Step 6 runs even with no additional input (a one-round update):
        // it is what makes earlier output unrecoverable from the new state.
        self.update(&[additional_input]);
        // Step 7. Cannot overflow: the check above keeps it at most 2^48 + 1.
        self.reseed_counter += 1;
        Ok(())
    }

    /// Generate calls since the last (re)instantiation/reseed, as NIST counts them (starts at 1).
    pub fn reseed_counter(&self) -> u64 {
        self.reseed_counter
    }

    /// HMAC_DRBG_Update (10.1.2.2) with `provided_data` given as the
    /// concatenation of `parts`.
    ///
    /// Streaming the parts into HMAC instead of joining them into one buffer
    /// avoids an allocation holding seed material that would then need
    /// wiping.
    fn update(&mut self, parts: &[&[u8]]) {
        self.update_round(0x00, parts);
        // Step 3: with no provided data the second round is skipped.
        if parts.iter().all(|p| p.is_empty()) {
            return;
        }
        self.update_round(0x01, parts);
    }

    /// One round of the update: `Key = HMAC(Key, V || sep || data)`, then
    /// `V = HMAC(Key, V)`.
    fn update_round(&mut self, separator: u8, parts: &[&[u8]]) {
        let mut mac = keyed(&self.key);
        mac.update(&self.v);
        mac.update(&[separator]);
        for part in parts {
            mac.update(part);
        }
        mac.finalize_into(<&mut Output<HmacSha256>>::from(&mut self.key));

        let mut mac = keyed(&self.key);
        mac.update(&self.v);
        mac.finalize_into(<&mut Output<HmacSha256>>::from(&mut self.v));
    }
}

/// HMAC-SHA-256 keyed with the DRBG's `Key`.
fn keyed(key: &[u8; OUTLEN]) -> HmacSha256 {
    // `new_from_slice` is the only constructor taking a key shorter than the
    // 64-byte block (padding it by hand would add a secret buffer to wipe).
    // Invariant: HMAC accepts keys of any length (RFC 2104), and `hmac`
    // never returns an error from it, so this cannot panic.
    HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length")
}

/// The entropy-length rule shared by instantiate and reseed.
fn check_entropy(entropy: &[u8]) -> Result<(), DrbgError> {
    if entropy.len() < MIN_ENTROPY_BYTES {
        return Err(DrbgError::InsufficientEntropy);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::String;
    use alloc::vec;
    use alloc::vec::Vec;

    fn hex(s: &str) -> Vec<u8> {
        assert!(s.len().is_multiple_of(2), "odd-length hex string");
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("valid hex")).collect()
    }

    fn generated(drbg: &mut HmacDrbg, len: usize, additional_input: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; len];
        drbg.generate(&mut out, additional_input).expect("generate");
        out
    }

    const ENTROPY: [u8; 32] = [0x11; 32];
    const NONCE: [u8; 16] = [0x22; 16];

    fn sample() -> HmacDrbg {
        HmacDrbg::instantiate(&ENTROPY, &NONCE, b"pers").expect("instantiate")
    }

    /// One NIST CAVP HMAC_DRBG test case as the fixture stores it: hex
    /// strings, `null` for an empty input.
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct NistVector {
        name: String,
        entropy: String,
        nonce: String,
        pers: Option<String>,
        add: [Option<String>; 2],
        expected: String,
    }

    /// The 30 SHA-256 no-reseed, no-prediction-resistance vectors, run with
    /// the CAVP procedure: instantiate, generate once and discard, generate
    /// again and compare. The second call is what checks step 6's update.
    #[test]
    fn nist_cavp_no_reseed_vectors() {
        let vectors: Vec<NistVector> =
            serde_json::from_str(include_str!("../../fixtures/drbg/hmac-drbg-sha256-nist.json"))
                .expect("fixture parses");
        assert_eq!(vectors.len(), 30, "fixture truncated or replaced");

        let opt = |s: &Option<String>| s.as_deref().map(hex).unwrap_or_default();
        for v in &vectors {
            let expected = hex(&v.expected);
            let mut drbg = HmacDrbg::instantiate(&hex(&v.entropy), &hex(&v.nonce), &opt(&v.pers)).expect("instantiate");
            let mut out = vec![0u8; expected.len()];
            drbg.generate(&mut out, &opt(&v.add[0])).expect("first generate");
            drbg.generate(&mut out, &opt(&v.add[1])).expect("second generate");
            assert_eq!(out, expected, "vector {}", v.name);
            assert_eq!(drbg.reseed_counter(), 3, "vector {}", v.name);
        }
    }

    /// Reseed known answer, with 45-byte requests so the last block is
    /// partial. The values were computed once by an independent Python 3
    /// implementation of 10.1.2 using only the standard `hmac` and `hashlib`
    /// modules, which was first checked against all 30 vectors in the NIST
    /// fixture. Its core, for re-running:
    ///
    /// ```text
    /// H = lambda k, d: hmac.new(k, d, hashlib.sha256).digest()
    /// def update(s, data):
    ///     s.K = H(s.K, s.V + b"\x00" + data); s.V = H(s.K, s.V)
    ///     if data: s.K = H(s.K, s.V + b"\x01" + data); s.V = H(s.K, s.V)
    /// instantiate: K = 00*32, V = 01*32, update(entropy + nonce + pers)
    /// reseed:      update(entropy + add)
    /// generate(n, add): if add: update(add)
    ///                   t = b""; while len(t) < n: V = H(K, V); t += V
    ///                   update(add); return t[:n]
    /// ```
    #[test]
    fn reseed_known_answer() {
        let entropy: Vec<u8> = (0x00..0x20).collect();
        let nonce: Vec<u8> = (0x20..0x30).collect();
        let mut drbg = HmacDrbg::instantiate(&entropy, &nonce, b"tlskeeper drbg kat").expect("instantiate");
        assert_eq!(
            generated(&mut drbg, 45, b""),
            hex("8a9620cf5c622d286dbf42e84e54b71a036cdaf5588326de1d41903b57077752676f817f17246e368075fc3d26")
        );

        let reseed_entropy: Vec<u8> = (0x40..0x60).collect();
        drbg.reseed(&reseed_entropy, b"reseed").expect("reseed");
        assert_eq!(
            generated(&mut drbg, 45, b"after"),
            hex("bad0e1584c3283a2706dd2bba40a2890a4ea969d46d48a22b7f212c3e2523ab28c32aa8f9358fc9845aa00d846")
        );
        assert_eq!(
            generated(&mut drbg, 45, b""),
            hex("d2fe7f9af9dba53955f903e03ebe66a9b569c08714fdcf52c9e396f16d68e595d442448706cca945cfd2dd2f72")
        );
    }

    #[test]
    fn reseed_changes_output_deterministically() {
        let (mut a, mut b, mut c) = (sample(), sample(), sample());
        let first = generated(&mut a, 64, b"");
        assert_eq!(first, generated(&mut b, 64, b""));
        assert_eq!(first, generated(&mut c, 64, b""));

        b.reseed(&[0x33; 32], b"").expect("reseed");
        c.reseed(&[0x33; 32], b"").expect("reseed");
        let after_a = generated(&mut a, 64, b"");
        let after_b = generated(&mut b, 64, b"");
        assert_ne!(after_a, after_b, "reseed had no effect");
        assert_eq!(after_b, generated(&mut c, 64, b""), "reseed not deterministic");

        // The additional input is part of the seed material too.
        let (mut d, mut e) = (sample(), sample());
        d.reseed(&[0x33; 32], b"one").expect("reseed");
        e.reseed(&[0x33; 32], b"two").expect("reseed");
        assert_ne!(generated(&mut d, 32, b""), generated(&mut e, 32, b""));
    }

    #[test]
    fn oversized_request_is_refused_without_side_effects() {
        let (mut a, mut b) = (sample(), sample());
        let mut big = vec![0xAAu8; MAX_BYTES_PER_REQUEST + 1];
        assert_eq!(a.generate(&mut big, b""), Err(DrbgError::RequestTooLarge));
        assert!(big.iter().all(|&x| x == 0xAA), "output written on error");
        assert_eq!(a.reseed_counter(), 1);
        // The refused call left the state as it was.
        assert_eq!(generated(&mut a, 32, b""), generated(&mut b, 32, b""));
        // The limit itself is allowed.
        let mut max = vec![0u8; MAX_BYTES_PER_REQUEST];
        assert_eq!(a.generate(&mut max, b""), Ok(()));
    }

    #[test]
    fn reseed_counter_counts_generate_calls() {
        let mut drbg = sample();
        assert_eq!(drbg.reseed_counter(), 1);
        for expected in 2..=5 {
            generated(&mut drbg, 16, b"");
            assert_eq!(drbg.reseed_counter(), expected);
        }
        generated(&mut drbg, 0, b"");
        assert_eq!(drbg.reseed_counter(), 6, "an empty request still counts");
        drbg.reseed(&ENTROPY, b"").expect("reseed");
        assert_eq!(drbg.reseed_counter(), 1);
    }

    #[test]
    fn reseed_required_after_interval() {
        let mut drbg = sample();
        // Jump to the last permitted call instead of making 2^48 of them.
        drbg.reseed_counter = MAX_RESEED_INTERVAL;
        let mut out = [0u8; 16];
        assert_eq!(drbg.generate(&mut out, b""), Ok(()));
        assert_eq!(drbg.reseed_counter(), MAX_RESEED_INTERVAL + 1);
        let mut out = [0xAAu8; 16];
        assert_eq!(drbg.generate(&mut out, b""), Err(DrbgError::ReseedRequired));
        assert_eq!(out, [0xAA; 16], "output written on error");
        assert_eq!(drbg.reseed_counter(), MAX_RESEED_INTERVAL + 1);
        drbg.reseed(&ENTROPY, b"").expect("reseed");
        assert_eq!(drbg.generate(&mut out, b""), Ok(()));
    }

    #[test]
    fn short_entropy_is_refused() {
        assert_eq!(
            HmacDrbg::instantiate(&[0x11; MIN_ENTROPY_BYTES - 1], &NONCE, b"").err(),
            Some(DrbgError::InsufficientEntropy)
        );
        assert!(HmacDrbg::instantiate(&[0x11; MIN_ENTROPY_BYTES], &NONCE, b"").is_ok());

        let (mut a, mut b) = (sample(), sample());
        generated(&mut a, 8, b"");
        generated(&mut b, 8, b"");
        assert_eq!(a.reseed(&[0x33; MIN_ENTROPY_BYTES - 1], b""), Err(DrbgError::InsufficientEntropy));
        // A refused reseed neither changed the state nor reset the counter.
        assert_eq!(a.reseed_counter(), 2);
        assert_eq!(generated(&mut a, 32, b""), generated(&mut b, 32, b""));
    }

    #[test]
    fn same_inputs_same_output_and_nonce_matters() {
        let (mut a, mut b) = (sample(), sample());
        assert_eq!(generated(&mut a, 100, b"x"), generated(&mut b, 100, b"x"));

        let mut other_nonce = HmacDrbg::instantiate(&ENTROPY, &[0x23; 16], b"pers").expect("instantiate");
        let mut base = sample();
        assert_ne!(generated(&mut base, 32, b""), generated(&mut other_nonce, 32, b""));

        let mut other_pers = HmacDrbg::instantiate(&ENTROPY, &NONCE, b"perz").expect("instantiate");
        let mut base = sample();
        assert_ne!(generated(&mut base, 32, b""), generated(&mut other_pers, 32, b""));
    }

    #[test]
    fn additional_input_changes_output() {
        let (mut a, mut b) = (sample(), sample());
        assert_ne!(generated(&mut a, 32, b""), generated(&mut b, 32, b"add"));
    }

    #[test]
    fn output_is_a_prefix_of_a_longer_request() {
        // One generate call emits a single stream: a shorter request from
        // the same state is its prefix, whatever the block boundaries.
        for len in [0, 1, 31, 32, 33, 63, 64, 65] {
            let (mut a, mut b) = (sample(), sample());
            let short = generated(&mut a, len, b"");
            let long = generated(&mut b, 96, b"");
            assert_eq!(short[..], long[..len], "length {len}");
        }
    }

    #[test]
    fn errors_display_without_secrets() {
        for e in [DrbgError::RequestTooLarge, DrbgError::ReseedRequired, DrbgError::InsufficientEntropy] {
            let text = alloc::format!("{e}");
            assert!(text.starts_with("DRBG "), "{text}");
        }
    }
}
