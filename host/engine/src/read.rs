//! Reading a bounded prefix: fill a caller's buffer from a reader until it
//! is full or the input ends, and say how much arrived.
//!
//! `Read::read_exact` cannot tell "the input ended cleanly before the
//! first byte" from "it ended part-way", which the trace reader needs (a
//! torn tail versus a clean end), and `read_to_end` reads into a growing
//! `Vec` whose reallocations leave copies behind, which the key-file reader
//! must not (the bytes are a key).
//!
//! # Security
//!
//! Writes only into the caller's buffer; it keeps no copy of what it reads.
//!
//! # Limitations
//!
//! Blocking; retries reads interrupted by a signal.

use std::io::{self, Read};

/// Fill `buf` from `input` until it is full or the input ends; returns the
/// number of bytes read.
///
/// # Errors
///
/// The reader's error, other than `Interrupted`.
pub fn up_to(input: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match input.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stops_at_the_end_or_when_full() {
        let mut buf = [0u8; 4];
        assert_eq!(up_to(&mut &b"ab"[..], &mut buf).unwrap(), 2);
        assert_eq!(&buf[..2], b"ab");
        assert_eq!(up_to(&mut &b"abcdef"[..], &mut buf).unwrap(), 4);
        assert_eq!(&buf, b"abcd");
        assert_eq!(up_to(&mut &b""[..], &mut buf).unwrap(), 0);
    }
}
