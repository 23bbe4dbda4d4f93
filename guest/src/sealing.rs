//! Session tickets sealed and opened inside the core, so that the processes
//! that talk TLS never hold a ticket key.
//!
//! A TLS server hands its ticket plaintext (the resumption state rustls or
//! OpenSSL serialises) to the manager and gets back an opaque ticket; when a
//! client presents a ticket, the server asks the manager to open it. The key
//! that seals is the ring's current encryption key ([`crate::tickets`]), and
//! a ticket opens only while the key its name selects is still in the ring's
//! decrypt window. The ring's rotation rule is Postfix's and is not changed
//! here; this module is only the construction.
//!
//! # Format (version 1)
//!
//! ```text
//! ticket     = name (16) ‖ nonce (24) ‖ ciphertext (len(plaintext)) ‖ tag (32)
//! enc_key    = HMAC-SHA-256(cipher_key, "tlskeeper ticket v1 encryption")
//! mac_key    = HMAC-SHA-256(hmac_key,   "tlskeeper ticket v1 authentication")
//! ciphertext = plaintext XOR XChaCha20(enc_key, nonce)
//! tag        = HMAC-SHA-256(mac_key, name ‖ nonce ‖ ciphertext)
//! ```
//!
//! `name`, `cipher_key` and `hmac_key` are the ring key's; the nonce is 24
//! bytes that no other ticket of this core has and no outsider can predict
//! ([`crate::nonces`]). Opening checks the length, selects the
//! key by name, verifies the tag in constant time over everything before it,
//! and only then decrypts: nothing of an unauthenticated ticket is ever
//! deciphered or parsed.
//!
//! # Why this construction
//!
//! - **RFC 5077 section 4** recommends `key_name ‖ IV ‖ encrypted_state ‖
//!   MAC` with AES-128-CBC and HMAC-SHA-256 in encrypt-then-MAC order. The
//!   layout and the MAC are kept; CBC is not: it needs padding, and AES
//!   without the CPU's AES instructions (which the sandbox cannot reach) is
//!   either slow (bitsliced) or leaks through cache timing (table-based).
//!   XChaCha20 is constant-time in portable code and needs no padding, so a
//!   ticket is exactly 72 bytes longer than its plaintext.
//! - **rustls's aws-lc-rs ticketer** is that RFC 5077 construction with
//!   AES-256-CBC; it is sound, and rejected here for the AES reason above.
//! - **rustls's ring ticketer** is ChaCha20-Poly1305 with a random 96-bit
//!   nonce. Random 96-bit nonces bound how many tickets one key may seal
//!   before a collision (which would reveal the XOR of two plaintexts and
//!   allow forgeries), and Poly1305 is not key-committing. XChaCha20's
//!   192-bit nonce makes pseudo-random nonces safe for any number of
//!   tickets, even across instances that know nothing of each other, and
//!   the HMAC tag replaces Poly1305.
//! - **Key commitment.** An AEAD such as GCM or ChaCha20-Poly1305 lets one
//!   ciphertext be crafted to open under several keys. HMAC-SHA-256 is
//!   collision-resistant, so a tag commits to the MAC key: a ticket opens
//!   under at most one ring key. The name already selects a single key, so
//!   there is no key to try "all of"; the commitment makes that true by
//!   construction rather than by how lookups happen to be written.
//! - **Separate subkeys.** The same ring keys reach Postfix through
//!   `tktkey`, where OpenSSL uses them raw for RFC 5077 tickets. Deriving
//!   `enc_key` and `mac_key` under version labels keeps the two uses apart:
//!   a ticket of one kind never authenticates as the other, and a future
//!   version 2 gets keys of its own.
//! - The full 32-byte tag is kept (not truncated to 16) because the
//!   commitment argument needs the collision resistance of the whole output.
//!
//! # Security
//!
//! Tickets to open come from network clients: every length is checked
//! before use, and every failure (too short, too long, unknown or expired
//! key, forged or altered tag) is the same `None`, so a client learns
//! nothing from the reply but "not accepted". Nothing is logged per ticket:
//! a client sending garbage must not be able to fill the log. The derived
//! keys are secrets: [`SealKeys`] has no `Debug` of them and is zeroized on
//! drop, and so are the working copies.
//!
//! # Limitations
//!
//! - Plaintexts are limited to [`MAX_PLAINTEXT`] bytes: rustls's resumption
//!   state is a few hundred bytes, more only with a client certificate chain.
//! - A ticket can be replayed for as long as its key decrypts, as with every
//!   stateless ticket (RFC 8446 section 8); refusing replays needs state,
//!   which is what the session cache is for.

use alloc::vec::Vec;

use chacha20::XChaCha20;
use chacha20::cipher::{KeyIvInit, StreamCipher};
use hmac::digest::{FixedOutput, Output};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use zeroize::{Zeroize, Zeroizing};

use crate::tickets::{NAME_LEN, SECRET_LEN, TicketKey, names_equal};

type HmacSha256 = Hmac<Sha256>;

/// Bytes of the nonce.
pub const NONCE_LEN: usize = 24;
/// Bytes of the tag.
pub const TAG_LEN: usize = 32;
/// What a ticket adds to its plaintext: name, nonce and tag.
pub const OVERHEAD: usize = NAME_LEN + NONCE_LEN + TAG_LEN;
/// Largest plaintext [`SealKeys::seal`] is given (the manager refuses more).
pub const MAX_PLAINTEXT: usize = 16 * 1024;
/// Largest ticket that can open.
pub const MAX_TICKET: usize = MAX_PLAINTEXT + OVERHEAD;
/// How many ring keys' derived keys are kept (the ring holds two).
const CACHE_SLOTS: usize = 4;

const ENC_LABEL: &[u8] = b"tlskeeper ticket v1 encryption";
const MAC_LABEL: &[u8] = b"tlskeeper ticket v1 authentication";

/// The name a ticket claims to be sealed under, if its length is one a
/// sealed ticket can have. Says nothing about whether the ticket is genuine.
pub fn claimed_name(ticket: &[u8]) -> Option<&[u8; NAME_LEN]> {
    if !(OVERHEAD..=MAX_TICKET).contains(&ticket.len()) {
        return None;
    }
    ticket[..NAME_LEN].try_into().ok()
}

/// The keys one ring key seals and opens with.
pub struct SealKeys {
    name: [u8; NAME_LEN],
    enc: Zeroizing<[u8; SECRET_LEN]>,
    /// HMAC keyed with `mac_key`, cloned for each tag so that the key
    /// schedule (two SHA-256 blocks) is paid once per ring key. `hmac` wipes
    /// its own state on drop (its `zeroize` feature is on).
    mac: HmacSha256,
}

impl SealKeys {
    /// Derive the subkeys of `key`.
    pub fn derive(key: &TicketKey) -> SealKeys {
        let mut enc = Zeroizing::new([0u8; SECRET_LEN]);
        prf(&key.cipher_key, ENC_LABEL, &mut enc);
        let mut mac_key = Zeroizing::new([0u8; SECRET_LEN]);
        prf(&key.hmac_key, MAC_LABEL, &mut mac_key);
        SealKeys { name: key.name, enc, mac: keyed(mac_key.as_ref()) }
    }

    /// Seal `plaintext` under these keys with `nonce`, which must be one no
    /// other ticket had ([`crate::nonces`]): a nonce used twice under one
    /// key reveals the XOR of the two plaintexts.
    pub fn seal(&self, nonce: &[u8; NONCE_LEN], plaintext: &[u8]) -> Vec<u8> {
        let mut ticket = Vec::with_capacity(plaintext.len() + OVERHEAD);
        ticket.extend_from_slice(&self.name);
        ticket.extend_from_slice(nonce);
        ticket.extend_from_slice(plaintext);
        self.keystream(nonce, &mut ticket[NAME_LEN + NONCE_LEN..]);
        let tag = self.tag(&ticket);
        ticket.extend_from_slice(&tag);
        ticket
    }

    /// The plaintext of `ticket` if it was sealed under these keys and not
    /// altered since; `None` for anything else.
    pub fn open(&self, ticket: &[u8]) -> Option<Vec<u8>> {
        let name = claimed_name(ticket)?;
        if !names_equal(name, &self.name) {
            return None;
        }
        let (body, tag) = ticket.split_at(ticket.len() - TAG_LEN);
        let mut mac = self.mac.clone();
        mac.update(body);
        // Constant-time comparison of the whole tag.
        mac.verify_slice(tag).ok()?;
        let nonce: &[u8; NONCE_LEN] = body[NAME_LEN..NAME_LEN + NONCE_LEN].try_into().ok()?;
        let mut plaintext = body[NAME_LEN + NONCE_LEN..].to_vec();
        self.keystream(nonce, &mut plaintext);
        Some(plaintext)
    }

    fn keystream(&self, nonce: &[u8; NONCE_LEN], buf: &mut [u8]) {
        // The cipher keeps an expanded copy of the key; `chacha20`'s
        // `zeroize` feature wipes it when it drops at the end of this call.
        let mut cipher = XChaCha20::new((&*self.enc).into(), nonce.into());
        cipher.apply_keystream(buf);
    }

    fn tag(&self, body: &[u8]) -> Output<HmacSha256> {
        let mut mac = self.mac.clone();
        mac.update(body);
        mac.finalize_fixed()
    }
}

/// The derived keys of the last few ring keys used, so that sealing does not
/// pay for two key derivations each time.
///
/// An entry is used only for the very ring key it was derived from (name
/// and both secrets compared in constant time), and only after the ring has
/// said that key may seal or open now: the cache never decides validity.
#[derive(Default)]
pub struct SealCache {
    /// Newest last.
    entries: Vec<(Zeroizing<[u8; 2 * SECRET_LEN]>, SealKeys)>,
}

impl SealCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// The keys of `key`, derived now if they are not cached.
    pub fn keys_for(&mut self, key: &TicketKey) -> &SealKeys {
        let mut secrets = Zeroizing::new([0u8; 2 * SECRET_LEN]);
        secrets[..SECRET_LEN].copy_from_slice(&key.cipher_key);
        secrets[SECRET_LEN..].copy_from_slice(&key.hmac_key);
        let found = self
            .entries
            .iter()
            .position(|(s, k)| names_equal(&k.name, &key.name) & bytes_equal(s.as_ref(), secrets.as_ref()));
        let i = match found {
            Some(i) => i,
            None => {
                if self.entries.len() == CACHE_SLOTS {
                    self.entries.remove(0); // zeroized on drop
                }
                self.entries.push((secrets, SealKeys::derive(key)));
                self.entries.len() - 1
            }
        };
        &self.entries[i].1
    }
}

/// HMAC-SHA-256(key, label) into `out`.
fn prf(key: &[u8; SECRET_LEN], label: &[u8], out: &mut [u8; SECRET_LEN]) {
    let mut mac = keyed(key);
    mac.update(label);
    mac.finalize_into(<&mut Output<HmacSha256>>::from(out));
}

fn keyed(key: &[u8]) -> HmacSha256 {
    // Invariant: HMAC accepts keys of any length (RFC 2104), and `hmac`
    // never returns an error from `new_from_slice`, so this cannot panic.
    HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length")
}

/// Equality without an early exit.
fn bytes_equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Drop for SealKeys {
    fn drop(&mut self) {
        // `enc` wipes itself; the name is public but cheap to clear too.
        self.name.zeroize();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn key(n: u8) -> TicketKey {
        TicketKey {
            name: [n; NAME_LEN],
            cipher_key: [n ^ 0x55; SECRET_LEN],
            hmac_key: [n ^ 0xaa; SECRET_LEN],
            expires: 0,
        }
    }

    const NONCE: [u8; NONCE_LEN] = [7; NONCE_LEN];

    #[test]
    fn a_sealed_ticket_has_the_documented_layout_and_opens() {
        let k = key(1);
        let keys = SealKeys::derive(&k);
        let plain = b"resumption state";
        let ticket = keys.seal(&NONCE, plain);
        assert_eq!(ticket.len(), plain.len() + OVERHEAD);
        assert_eq!(&ticket[..NAME_LEN], &k.name);
        assert_eq!(&ticket[NAME_LEN..NAME_LEN + NONCE_LEN], &NONCE);
        assert_ne!(&ticket[NAME_LEN + NONCE_LEN..NAME_LEN + NONCE_LEN + plain.len()], plain);
        assert_eq!(keys.open(&ticket).as_deref(), Some(&plain[..]));
    }

    /// The format, recomputed from its definition in the module docs with
    /// the primitives used directly: a change to the construction that the
    /// docs do not describe fails here.
    #[test]
    fn the_format_matches_its_definition() {
        let k = key(2);
        let plain = b"0123456789abcdef-plaintext";
        let ticket = SealKeys::derive(&k).seal(&NONCE, plain);

        let mut enc = [0u8; 32];
        prf(&k.cipher_key, b"tlskeeper ticket v1 encryption", &mut enc);
        let mut mac_key = [0u8; 32];
        prf(&k.hmac_key, b"tlskeeper ticket v1 authentication", &mut mac_key);
        let mut ct = plain.to_vec();
        XChaCha20::new((&enc).into(), (&NONCE).into()).apply_keystream(&mut ct);
        let mut body = [&k.name[..], &NONCE[..], &ct[..]].concat();
        let mut mac = keyed(&mac_key);
        mac.update(&body);
        body.extend_from_slice(&mac.finalize_fixed());
        assert_eq!(ticket, body);
    }

    #[test]
    fn any_altered_byte_stops_the_ticket_from_opening() {
        let keys = SealKeys::derive(&key(3));
        let ticket = keys.seal(&NONCE, b"state");
        for i in 0..ticket.len() {
            let mut bad = ticket.clone();
            bad[i] ^= 0x01;
            assert_eq!(keys.open(&bad), None, "byte {i}");
        }
    }

    #[test]
    fn cut_extended_and_empty_tickets_do_not_open() {
        let keys = SealKeys::derive(&key(4));
        let ticket = keys.seal(&NONCE, b"state");
        for len in 0..ticket.len() {
            assert_eq!(keys.open(&ticket[..len]), None, "cut to {len}");
        }
        assert_eq!(keys.open(&[ticket.as_slice(), &[0]].concat()), None);
        // An empty plaintext seals to a ticket of just the overhead.
        let empty = keys.seal(&NONCE, b"");
        assert_eq!(empty.len(), OVERHEAD);
        assert_eq!(keys.open(&empty), Some(vec![]));
    }

    #[test]
    fn a_ticket_opens_only_under_its_own_key() {
        let (a, b) = (SealKeys::derive(&key(5)), SealKeys::derive(&key(6)));
        let ticket = a.seal(&NONCE, b"state");
        assert_eq!(b.open(&ticket), None);
        // Same name, other secrets: still refused (the tag commits to them).
        let mut twin = key(6);
        twin.name = key(5).name;
        assert_eq!(SealKeys::derive(&twin).open(&ticket), None);
    }

    #[test]
    fn claimed_names_need_a_possible_length() {
        let keys = SealKeys::derive(&key(7));
        let ticket = keys.seal(&NONCE, b"x");
        assert_eq!(claimed_name(&ticket), Some(&key(7).name));
        assert_eq!(claimed_name(&ticket[..OVERHEAD - 1]), None);
        assert_eq!(claimed_name(&vec![0; MAX_TICKET + 1]), None);
        assert!(claimed_name(&vec![0; MAX_TICKET]).is_some());
    }

    #[test]
    fn the_largest_plaintext_round_trips() {
        let keys = SealKeys::derive(&key(8));
        let plain = vec![0x5a; MAX_PLAINTEXT];
        let ticket = keys.seal(&NONCE, &plain);
        assert_eq!(ticket.len(), MAX_TICKET);
        assert_eq!(keys.open(&ticket), Some(plain));
    }

    #[test]
    fn the_cache_derives_once_per_key_and_never_mixes_keys() {
        let mut cache = SealCache::new();
        let ticket = cache.keys_for(&key(1)).seal(&NONCE, b"one");
        for n in 2..=6 {
            cache.keys_for(&key(n));
        }
        assert_eq!(cache.entries.len(), CACHE_SLOTS);
        // Key 1 fell out and is derived again, to the same keys.
        assert_eq!(cache.keys_for(&key(1)).open(&ticket).as_deref(), Some(&b"one"[..]));
        // A key with key 1's name but other secrets gets its own entry.
        let mut twin = key(9);
        twin.name = key(1).name;
        assert_eq!(cache.keys_for(&twin).open(&ticket), None);
        assert_eq!(cache.keys_for(&key(1)).open(&ticket).as_deref(), Some(&b"one"[..]));
    }
}
