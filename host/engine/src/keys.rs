//! A session-ticket key as the host holds it between the core and a client.
//!
//! # Security
//!
//! Key bytes: no `Debug` output of them, zeroized on drop. The host holds a
//! key only for the moment it takes to encode one reply.
//!
//! # Limitations
//!
//! Fixed to Postfix's sizes (16-byte name, 32-byte AES and HMAC keys).

use std::fmt;

use zeroize::{Zeroize, ZeroizeOnDrop};

/// An RFC 5077 ticket key.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct TicketKey {
    /// Public name carried in every ticket.
    pub name: [u8; 16],
    /// AES-256 key.
    pub cipher_key: [u8; 32],
    /// HMAC-SHA-256 key.
    pub hmac_key: [u8; 32],
    /// Postfix's `tout`: the key encrypts while `expires > now`.
    pub expires: i64,
}

impl fmt::Debug for TicketKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TicketKey")
            .field("name", &hex::encode(self.name))
            .field("expires", &self.expires)
            .finish_non_exhaustive()
    }
}
