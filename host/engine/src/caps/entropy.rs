//! The entropy capability: fresh random bytes for the core's DRBG.
//!
//! # Security
//!
//! The production source is `getrandom(2)`, which blocks until the kernel's
//! pool is initialised and never returns predictable bytes after that.
//!
//! # Limitations
//!
//! Extra sources (Postfix's `tls_random_source`) are mixed in by
//! [`super::random_source::MixedEntropy`], not here.

/// Why entropy could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read entropy from the OS: {0}")]
pub struct EntropyError(pub String);

/// A source of unpredictable bytes.
pub trait Entropy: Send {
    /// Fill `buf` completely.
    ///
    /// # Errors
    ///
    /// When the source cannot supply the bytes; the caller must not proceed
    /// with a partly filled buffer.
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), EntropyError>;
}

/// The operating system's CSPRNG.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsEntropy;

impl Entropy for OsEntropy {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), EntropyError> {
        getrandom::fill(buf).map_err(|e| EntropyError(e.to_string()))
    }
}
