//! RFC 4648 base32, lower-case alphabet, no padding: the multibase `b` encoding of CIDs.

use crate::cid::ParseError;

const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// Number of characters needed for `len` bytes.
pub(crate) const fn encoded_len(len: usize) -> usize {
    (len * 8).div_ceil(5)
}

/// Encodes `input` into `out` (which must be exactly `encoded_len(input.len())` long).
pub(crate) fn encode<'a>(input: &[u8], out: &'a mut [u8]) -> &'a str {
    debug_assert_eq!(out.len(), encoded_len(input.len()));
    let mut acc: u32 = 0;
    let mut bits = 0u32;
    let mut n = 0;
    for &byte in input {
        acc = (acc << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out[n] = ALPHABET[((acc >> bits) & 0x1f) as usize];
            n += 1;
        }
    }
    if bits > 0 {
        out[n] = ALPHABET[((acc << (5 - bits)) & 0x1f) as usize];
        n += 1;
    }
    // Only ASCII from ALPHABET was written.
    std::str::from_utf8(&out[..n]).expect("base32 alphabet is ASCII")
}

/// Decodes canonical unpadded base32 into `out`, which must have the decoded length.
pub(crate) fn decode(text: &str, out: &mut [u8]) -> Result<(), ParseError> {
    if encoded_len(out.len()) != text.len() {
        return Err(ParseError::TextLength(text.len()));
    }
    let mut acc: u32 = 0;
    let mut bits = 0u32;
    let mut n = 0;
    for c in text.bytes() {
        let value = match c {
            b'a'..=b'z' => c - b'a',
            b'2'..=b'7' => c - b'2' + 26,
            _ => return Err(ParseError::InvalidCharacter(char::from(c))),
        };
        acc = (acc << 5) | u32::from(value);
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out[n] = (acc >> bits) as u8;
            n += 1;
        }
        acc &= (1 << bits) - 1;
    }
    if acc != 0 {
        return Err(ParseError::NonCanonical);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4648_vectors() {
        // RFC 4648 §10, lower-cased and without padding.
        for (input, expected) in [
            ("", ""),
            ("f", "my"),
            ("fo", "mzxq"),
            ("foo", "mzxw6"),
            ("foob", "mzxw6yq"),
            ("fooba", "mzxw6ytb"),
            ("foobar", "mzxw6ytboi"),
        ] {
            let mut buf = vec![0u8; encoded_len(input.len())];
            assert_eq!(encode(input.as_bytes(), &mut buf), expected);
            let mut back = vec![0u8; input.len()];
            decode(expected, &mut back).unwrap();
            assert_eq!(back, input.as_bytes());
        }
    }
}
