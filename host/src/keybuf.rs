//! The `keybuf` of a `tktkey` reply: Postfix's raw `TLS_TICKET_KEY` struct.
//!
//! tlsmgr answers a ticket-key request with the key as the bytes of the C
//! struct from `src/tls/tls_scache.h`, and the client `memcpy`s them back
//! into its own struct (`request_scache_key()` in `src/tls/tls_mgr.c`),
//! rejecting any other length. On x86_64 and arm64 Linux that struct is 88
//! bytes with no padding:
//!
//! | field | offset | size | meaning |
//! |---|---|---|---|
//! | `name` | 0 | 16 | key name, sent in clear inside each ticket |
//! | `bits` | 16 | 32 | cipher key (AES-256-CBC by default) |
//! | `hmac` | 48 | 32 | HMAC-SHA256 key |
//! | `tout` | 80 | 8 | `time_t`: encryption expiry, seconds since the epoch, little-endian |
//!
//! [`encode`] builds that buffer for the server; [`decode`] reads it back for
//! clients and tests. Both write and read little-endian explicitly, rather
//! than reinterpreting memory (`repr(C)` plus a byte cast was rejected: it
//! needs `unsafe` and would silently follow the *server's* byte order, while
//! what matters is the client's).
//!
//! # Security
//!
//! The buffer is the secret that protects every session ticket issued with
//! it: anyone holding it can decrypt those tickets and resume the sessions.
//! [`encode`] returns it in a [`Zeroizing`] array, and [`TicketKey`]
//! zeroizes itself on drop and has a hand-written `Debug` that shows only the
//! name and expiry. Moves of these values can still leave copies on the
//! stack; zeroizing is best effort. [`decode`] accepts any 88 bytes (input
//! there comes from a server the client already trusts), but never panics.
//!
//! # Limitations
//!
//! - Only the 64-bit little-endian ABI (x86_64, arm64 and other LP64
//!   little-endian Linux) is produced. On platforms with a 32-bit `time_t`
//!   (Debian bookworm i386, armhf) the struct is 84 bytes and those clients
//!   reject this buffer; on big-endian 64-bit platforms (s390x, ppc64) the
//!   length matches but the client would misread `tout`. Postfix and this
//!   server must run on the same kind of machine, as they always do, since
//!   they talk over a UNIX socket; running on another ABI needs a change
//!   here.
//! - The cipher key is always 32 bytes; a client configured for a cipher
//!   with a shorter key (e.g. AES-128) uses only its first bytes, as Postfix
//!   does.

use zeroize::Zeroizing;

pub use tlskeeper_engine::keys::TicketKey;

/// Size of the encoded struct (`sizeof(TLS_TICKET_KEY)` on LP64).
pub const KEYBUF_LEN: usize = 88;
/// Length of a key name (`TLS_TICKET_NAMELEN`).
pub const NAME_LEN: usize = 16;
/// Length of the cipher key (`TLS_TICKET_KEYLEN`).
pub const CIPHER_KEY_LEN: usize = 32;
/// Length of the HMAC key (`TLS_TICKET_MACLEN`).
pub const HMAC_KEY_LEN: usize = 32;

const CIPHER_KEY_AT: usize = NAME_LEN;
const HMAC_KEY_AT: usize = CIPHER_KEY_AT + CIPHER_KEY_LEN;
const TOUT_AT: usize = HMAC_KEY_AT + HMAC_KEY_LEN;

// The layout adds up to the struct size: no padding before `tout`, which is
// 8-aligned at offset 80.
const _: () = assert!(TOUT_AT + 8 == KEYBUF_LEN && TOUT_AT.is_multiple_of(8));

/// Encodes a ticket key as the 88-byte `keybuf`.
///
/// `expires` is the struct's `tout`: the time after which the key is no
/// longer used to encrypt new tickets (tlsmgr uses `now + T/2 - 1`).
///
/// The result holds the key in clear. It is wrapped in [`Zeroizing`] so it is
/// wiped when dropped; callers that copy it elsewhere (for example into a
/// base64 reply) must zeroize those copies too.
pub fn encode(key: &TicketKey) -> Zeroizing<[u8; KEYBUF_LEN]> {
    let mut out = Zeroizing::new([0u8; KEYBUF_LEN]);
    // Constant in-bounds ranges of a fixed-size array: these cannot panic.
    out[..CIPHER_KEY_AT].copy_from_slice(&key.name);
    out[CIPHER_KEY_AT..HMAC_KEY_AT].copy_from_slice(&key.cipher_key);
    out[HMAC_KEY_AT..TOUT_AT].copy_from_slice(&key.hmac_key);
    out[TOUT_AT..].copy_from_slice(&key.expires.to_le_bytes());
    out
}

/// Why a buffer is not a `keybuf`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeybufError {
    /// The buffer is not [`KEYBUF_LEN`] bytes (the Postfix client rejects it
    /// too).
    #[error("ticket key buffer is {len} bytes, expected {KEYBUF_LEN}")]
    Length {
        /// The length found.
        len: usize,
    },
}

/// Decodes a `keybuf` (client direction), which must be exactly
/// [`KEYBUF_LEN`] bytes.
pub fn decode(buf: &[u8]) -> Result<TicketKey, KeybufError> {
    let length = KeybufError::Length { len: buf.len() };
    if buf.len() != KEYBUF_LEN {
        return Err(length);
    }
    // Splitting by fixed-size chunks is total: each step returns `None`
    // instead of panicking, which the length check above rules out.
    let (name, rest) = buf.split_first_chunk::<NAME_LEN>().ok_or(length.clone())?;
    let (cipher_key, rest) = rest.split_first_chunk::<CIPHER_KEY_LEN>().ok_or(length.clone())?;
    let (hmac_key, rest) = rest.split_first_chunk::<HMAC_KEY_LEN>().ok_or(length.clone())?;
    let tout = rest.first_chunk::<8>().ok_or(length)?;
    Ok(TicketKey { name: *name, cipher_key: *cipher_key, hmac_key: *hmac_key, expires: i64::from_le_bytes(*tout) })
}

#[cfg(test)]
// A failed unwrap is a failed test, which is what tests are for.
#[allow(clippy::unwrap_used)]
mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;

    use super::*;

    fn sample() -> ([u8; 16], [u8; 32], [u8; 32]) {
        let mut name = [0u8; 16];
        let mut cipher = [0u8; 32];
        let mut hmac = [0u8; 32];
        for (i, b) in name.iter_mut().enumerate() {
            *b = i as u8;
        }
        for (i, b) in cipher.iter_mut().enumerate() {
            *b = 0x40 + i as u8;
        }
        for (i, b) in hmac.iter_mut().enumerate() {
            *b = 0x80 + i as u8;
        }
        (name, cipher, hmac)
    }

    #[test]
    fn layout_is_name_cipher_hmac_then_le_time() {
        let (name, cipher, hmac) = sample();
        let buf = encode(&TicketKey { name, cipher_key: cipher, hmac_key: hmac, expires: 0x0102_0304_0506_0708 });
        assert_eq!(buf.len(), 88);
        assert_eq!(&buf[0..16], &name);
        assert_eq!(&buf[16..48], &cipher);
        assert_eq!(&buf[48..80], &hmac);
        assert_eq!(&buf[80..88], &[8, 7, 6, 5, 4, 3, 2, 1]);
    }

    #[test]
    fn matches_the_captured_tktkey_reply_tail() {
        // The real tlsmgr's keybuf (reference §1.6) ends in
        // "...8EnFmgJrAAAAAA==": the last two hmac bytes f0 49, then tout
        // 1795332805 (the "key expiration" smtpd logged) little-endian.
        let (name, cipher, mut hmac) = sample();
        hmac[30] = 0xf0;
        hmac[31] = 0x49;
        let buf = encode(&TicketKey { name, cipher_key: cipher, hmac_key: hmac, expires: 1_795_332_805 });
        let b64 = STANDARD.encode(&buf[..]);
        assert_eq!(b64.len(), 120);
        assert!(b64.ends_with("8EnFmgJrAAAAAA=="), "{b64}");

        let tail = STANDARD.decode("8EnFmgJrAAAAAA==").unwrap();
        let mut captured = [0u8; 88];
        captured[78..].copy_from_slice(&tail);
        assert_eq!(decode(&captured).unwrap().expires, 1_795_332_805);
    }

    #[test]
    fn round_trip() {
        let (name, cipher, hmac) = sample();
        for expires in [0, 1_795_332_805, -1, i64::MIN, i64::MAX] {
            let buf = encode(&TicketKey { name, cipher_key: cipher, hmac_key: hmac, expires });
            let key = decode(&buf[..]).unwrap();
            assert_eq!(&key.name, &name);
            assert_eq!(&key.cipher_key, &cipher);
            assert_eq!(&key.hmac_key, &hmac);
            assert_eq!(key.expires, expires);
            assert_eq!(*encode(&key), *buf);
            assert_eq!(key, TicketKey { name, cipher_key: cipher, hmac_key: hmac, expires });
        }
    }

    #[test]
    fn wrong_lengths_are_rejected() {
        // 84 is the 32-bit time_t layout; 16 is an echoed key name.
        for len in [0, 16, 84, 87, 89, 176] {
            assert_eq!(decode(&vec![0u8; len]).unwrap_err(), KeybufError::Length { len });
        }
    }

    #[test]
    fn debug_shows_name_and_expiry_only() {
        let (name, cipher, hmac) = sample();
        let key = TicketKey { name, cipher_key: cipher, hmac_key: hmac, expires: 1_795_332_805 };
        let shown = format!("{key:?}");
        assert!(shown.contains(&hex::encode(name)), "{shown}");
        assert!(shown.contains("1795332805"), "{shown}");
        assert!(!shown.contains(&hex::encode(&cipher[..4])), "{shown}");
        assert!(!shown.contains(&hex::encode(&hmac[..4])), "{shown}");
        // Decimal byte lists would leak too (derived Debug style).
        assert!(!shown.contains("64, 65"), "{shown}");
    }

    #[test]
    fn zeroize_wipes_the_key() {
        let (name, cipher, hmac) = sample();
        let mut key = TicketKey { name, cipher_key: cipher, hmac_key: hmac, expires: 5 };
        zeroize::Zeroize::zeroize(&mut key);
        assert_eq!(&key.cipher_key, &[0; 32]);
        assert_eq!(&key.hmac_key, &[0; 32]);
        assert_eq!(&key.name, &[0; 16]);
        assert_eq!(key.expires, 0);
    }
}
