//! Keyed BLAKE3 for message authentication and key derivation.

use std::fmt;

/// A 32-byte secret key for [`mac`] and [`MacHasher`].
#[derive(Clone)]
pub struct MacKey([u8; 32]);

impl MacKey {
    /// Wraps 32 secret bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Derives a key from input key material under a fixed, application-specific `context`
    /// string (BLAKE3 `derive_key` mode), e.g. `"causality 2026-01 peer-exchange mac"`.
    pub fn derive(context: &str, material: &[u8]) -> Self {
        Self(blake3::derive_key(context, material))
    }
}

impl fmt::Debug for MacKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MacKey(..)")
    }
}

/// A 32-byte authentication tag. Equality is constant-time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MacTag(blake3::Hash);

impl MacTag {
    /// The tag bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        self.0.as_bytes()
    }

    /// Reads a tag received from elsewhere.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes.into())
    }
}

/// Computes the keyed BLAKE3 tag of `data`.
///
/// ```
/// use causality_hash::{mac, verify_mac, MacKey};
///
/// let key = MacKey::from_bytes([7; 32]);
/// let tag = mac(&key, b"payload");
/// assert!(verify_mac(&key, b"payload", &tag));
/// assert!(!verify_mac(&key, b"tampered", &tag));
/// ```
pub fn mac(key: &MacKey, data: &[u8]) -> MacTag {
    MacTag(blake3::keyed_hash(&key.0, data))
}

/// Checks `tag` against `data` in constant time.
pub fn verify_mac(key: &MacKey, data: &[u8], tag: &MacTag) -> bool {
    mac(key, data) == *tag
}

/// Incremental keyed hashing for large messages.
#[derive(Clone, Debug)]
pub struct MacHasher(blake3::Hasher);

impl MacHasher {
    /// Starts a keyed hash.
    pub fn new(key: &MacKey) -> Self {
        Self(blake3::Hasher::new_keyed(&key.0))
    }

    /// Feeds more bytes.
    pub fn update(&mut self, bytes: &[u8]) -> &mut Self {
        self.0.update(bytes);
        self
    }

    /// The tag of everything fed so far.
    pub fn finalize(&self) -> MacTag {
        MacTag(self.0.finalize())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streaming_matches_one_shot_and_keys_matter() {
        let key = MacKey::derive("causality-hash test", b"material");
        let mut h = MacHasher::new(&key);
        h.update(b"ab").update(b"c");
        assert_eq!(h.finalize(), mac(&key, b"abc"));
        let other = MacKey::derive("causality-hash test", b"other");
        assert_ne!(mac(&other, b"abc"), mac(&key, b"abc"));
        assert!(!verify_mac(&other, b"abc", &mac(&key, b"abc")));
        assert_eq!(
            MacTag::from_bytes(*mac(&key, b"x").as_bytes()),
            mac(&key, b"x")
        );
    }
}
