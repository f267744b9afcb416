//! [`ContentId`]: the BLAKE3-256 digest of an object's canonical bytes, with a CIDv1 text form.

use std::fmt;
use std::io;
use std::str::FromStr;

use crate::base32;

/// Length of a [`ContentId`] in bytes.
pub const CONTENT_ID_LEN: usize = 32;

/// CID version 1.
const CID_VERSION: u8 = 0x01;
/// Multicodec `raw`: the id names the bytes themselves.
const CODEC_RAW: u8 = 0x55;
/// Multihash code of BLAKE3 (default 32-byte output).
const MULTIHASH_BLAKE3: u8 = 0x1e;
/// Multibase prefix of RFC 4648 base32, lower case, no padding.
const MULTIBASE_BASE32_LOWER: char = 'b';
/// The binary CID: version, codec, multihash code, digest length, digest.
const CID_BINARY_LEN: usize = 4 + CONTENT_ID_LEN;

/// The identity of a piece of content: BLAKE3-256 over its canonical bytes.
///
/// In binary it is the 32 digest bytes. As text ([`Display`](fmt::Display) /
/// [`FromStr`]) it is a CIDv1 in base32-lower with the `raw` codec and the BLAKE3
/// multihash (`0x1e`), so standard CID tools can parse it. For logs,
/// [`ContentId::short`] gives the first 8 bytes in hex.
///
/// # Example
///
/// ```
/// use causality_hash::ContentId;
///
/// let id = ContentId::of(b"hello");
/// let text = id.to_string();
/// assert!(text.starts_with("bafkr4i"));
/// assert_eq!(text.parse::<ContentId>().unwrap(), id);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ContentId([u8; CONTENT_ID_LEN]);

impl ContentId {
    /// Hashes `bytes` in one call.
    pub fn of(bytes: &[u8]) -> Self {
        Self(*blake3::hash(bytes).as_bytes())
    }

    /// Hashes everything `reader` yields, streaming, in bounded memory.
    pub fn from_reader<R: io::Read>(mut reader: R) -> io::Result<Self> {
        let mut hasher = ContentHasher::new();
        io::copy(&mut reader, &mut hasher)?;
        Ok(hasher.finalize())
    }

    /// Wraps 32 digest bytes that were computed elsewhere.
    pub const fn from_bytes(bytes: [u8; CONTENT_ID_LEN]) -> Self {
        Self(bytes)
    }

    /// Reads an id from a slice that must be exactly 32 bytes long.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, ParseError> {
        <[u8; CONTENT_ID_LEN]>::try_from(bytes)
            .map(Self)
            .map_err(|_| ParseError::DigestLength(bytes.len()))
    }

    /// The 32 digest bytes.
    pub const fn as_bytes(&self) -> &[u8; CONTENT_ID_LEN] {
        &self.0
    }

    /// The 32 digest bytes, by value.
    pub const fn to_bytes(self) -> [u8; CONTENT_ID_LEN] {
        self.0
    }

    /// The full digest as 64 lower-case hex characters.
    pub fn to_hex(&self) -> String {
        let mut out = String::with_capacity(2 * CONTENT_ID_LEN);
        for b in self.0 {
            out.push(char::from_digit(u32::from(b >> 4), 16).expect("nibble"));
            out.push(char::from_digit(u32::from(b & 0x0f), 16).expect("nibble"));
        }
        out
    }

    /// Parses the 64-character hex form produced by [`ContentId::to_hex`].
    pub fn from_hex(text: &str) -> Result<Self, ParseError> {
        let text = text.as_bytes();
        if text.len() != 2 * CONTENT_ID_LEN {
            return Err(ParseError::HexLength(text.len()));
        }
        let mut out = [0u8; CONTENT_ID_LEN];
        for (i, pair) in text.chunks_exact(2).enumerate() {
            let hi = hex_value(pair[0]).ok_or(ParseError::InvalidCharacter(pair[0] as char))?;
            let lo = hex_value(pair[1]).ok_or(ParseError::InvalidCharacter(pair[1] as char))?;
            out[i] = (hi << 4) | lo;
        }
        Ok(Self(out))
    }

    /// A compact form for log lines: the first 8 bytes in hex.
    pub fn short(&self) -> ShortId<'_> {
        ShortId(self)
    }

    /// The binary CIDv1: `0x01 0x55 0x1e 0x20` followed by the digest.
    pub fn to_cid_bytes(&self) -> [u8; CID_BINARY_LEN] {
        let mut out = [0u8; CID_BINARY_LEN];
        out[..4].copy_from_slice(&[
            CID_VERSION,
            CODEC_RAW,
            MULTIHASH_BLAKE3,
            CONTENT_ID_LEN as u8,
        ]);
        out[4..].copy_from_slice(&self.0);
        out
    }

    /// Parses a binary CIDv1 as produced by [`ContentId::to_cid_bytes`].
    pub fn from_cid_bytes(bytes: &[u8]) -> Result<Self, ParseError> {
        let [version, codec, hash_code, digest_len, digest @ ..] = bytes else {
            return Err(ParseError::Truncated);
        };
        if *version != CID_VERSION {
            return Err(ParseError::UnsupportedVersion(u64::from(*version)));
        }
        if *codec != CODEC_RAW {
            return Err(ParseError::UnsupportedCodec(u64::from(*codec)));
        }
        if *hash_code != MULTIHASH_BLAKE3 {
            return Err(ParseError::UnsupportedHash(u64::from(*hash_code)));
        }
        if usize::from(*digest_len) != CONTENT_ID_LEN {
            return Err(ParseError::DigestLength(usize::from(*digest_len)));
        }
        Self::from_slice(digest)
    }
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

impl fmt::Display for ContentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; base32::encoded_len(CID_BINARY_LEN)];
        let text = base32::encode(&self.to_cid_bytes(), &mut buf);
        write!(f, "{MULTIBASE_BASE32_LOWER}{text}")
    }
}

impl fmt::Debug for ContentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentId({})", self.short())
    }
}

impl FromStr for ContentId {
    type Err = ParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut chars = text.chars();
        match chars.next() {
            Some(MULTIBASE_BASE32_LOWER) => {}
            Some(other) => return Err(ParseError::UnsupportedMultibase(other)),
            None => return Err(ParseError::Empty),
        }
        let body = chars.as_str();
        if body.len() != base32::encoded_len(CID_BINARY_LEN) {
            return Err(ParseError::TextLength(text.len()));
        }
        let mut bytes = [0u8; CID_BINARY_LEN];
        base32::decode(body, &mut bytes)?;
        Self::from_cid_bytes(&bytes)
    }
}

impl From<blake3::Hash> for ContentId {
    fn from(hash: blake3::Hash) -> Self {
        Self(*hash.as_bytes())
    }
}

impl From<ContentId> for [u8; CONTENT_ID_LEN] {
    fn from(id: ContentId) -> Self {
        id.0
    }
}

impl AsRef<[u8]> for ContentId {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// Display adapter returned by [`ContentId::short`].
#[derive(Clone, Copy, Debug)]
pub struct ShortId<'a>(&'a ContentId);

impl fmt::Display for ShortId<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0.0[..8] {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// Why a [`ContentId`] could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The text was empty.
    #[error("empty content id")]
    Empty,
    /// The multibase prefix is not `b` (base32 lower case).
    #[error("unsupported multibase prefix {0:?}: expected 'b' (base32, lower case)")]
    UnsupportedMultibase(char),
    /// A character outside the expected alphabet.
    #[error("invalid character {0:?}")]
    InvalidCharacter(char),
    /// The CID text has the wrong length for a 32-byte BLAKE3 CIDv1.
    #[error("content id text is {0} characters long: expected 59")]
    TextLength(usize),
    /// Hex text that is not 64 characters long.
    #[error("hex content id is {0} characters long: expected 64")]
    HexLength(usize),
    /// The binary CID ended early.
    #[error("truncated CID")]
    Truncated,
    /// Not a CIDv1.
    #[error("unsupported CID version {0}: expected 1")]
    UnsupportedVersion(u64),
    /// The codec is not `raw` (0x55).
    #[error("unsupported multicodec 0x{0:x}: expected raw (0x55)")]
    UnsupportedCodec(u64),
    /// The multihash is not BLAKE3 (0x1e).
    #[error("unsupported multihash 0x{0:x}: expected blake3 (0x1e)")]
    UnsupportedHash(u64),
    /// The digest is not 32 bytes.
    #[error("digest is {0} bytes long: expected 32")]
    DigestLength(usize),
    /// Non-zero padding bits at the end of the base32 text (not canonical).
    #[error("non-canonical base32: trailing bits are not zero")]
    NonCanonical,
}

/// Incremental BLAKE3 hashing of large objects into a [`ContentId`].
///
/// Implements [`io::Write`], so it can be the target of [`io::copy`].
///
/// ```
/// use causality_hash::{ContentHasher, ContentId};
///
/// let mut hasher = ContentHasher::new();
/// hasher.update(b"hel");
/// hasher.update(b"lo");
/// assert_eq!(hasher.finalize(), ContentId::of(b"hello"));
/// ```
#[derive(Clone, Debug, Default)]
pub struct ContentHasher(blake3::Hasher);

impl ContentHasher {
    /// A hasher with no input yet.
    pub fn new() -> Self {
        Self(blake3::Hasher::new())
    }

    /// Feeds more bytes.
    pub fn update(&mut self, bytes: &[u8]) -> &mut Self {
        self.0.update(bytes);
        self
    }

    /// The id of everything fed so far. The hasher can keep going afterwards.
    pub fn finalize(&self) -> ContentId {
        self.0.finalize().into()
    }
}

impl io::Write for ContentHasher {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(feature = "serde")]
mod serde_impl {
    use super::*;
    use serde::de::Error as _;

    impl serde::Serialize for ContentId {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            if s.is_human_readable() {
                s.collect_str(self)
            } else {
                s.serialize_bytes(&self.0)
            }
        }
    }

    impl<'de> serde::Deserialize<'de> for ContentId {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            if d.is_human_readable() {
                let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                text.parse().map_err(D::Error::custom)
            } else {
                let bytes = <std::borrow::Cow<'de, [u8]>>::deserialize(d)?;
                ContentId::from_slice(&bytes).map_err(D::Error::custom)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trip_and_prefix() {
        let id = ContentId::of(b"");
        let text = id.to_string();
        assert_eq!(text.len(), 59);
        // CIDv1 + raw + blake3 always starts like this in base32.
        assert!(text.starts_with("bafkr4i"), "{text}");
        assert_eq!(text.parse::<ContentId>().unwrap(), id);
    }

    #[test]
    fn rejects_bad_text() {
        let good = ContentId::of(b"x").to_string();
        assert_eq!("".parse::<ContentId>(), Err(ParseError::Empty));
        assert_eq!(
            format!("z{}", &good[1..]).parse::<ContentId>(),
            Err(ParseError::UnsupportedMultibase('z'))
        );
        assert!(matches!(
            good[..40].parse::<ContentId>(),
            Err(ParseError::TextLength(40))
        ));
        let upper = good.to_uppercase().replacen('B', "b", 1);
        assert!(matches!(
            upper.parse::<ContentId>(),
            Err(ParseError::InvalidCharacter(_))
        ));
        // 36 bytes are 288 bits in 58 characters: the last character ends with 2 padding
        // bits. Setting the lowest one must be refused, not silently dropped.
        const ALPHABET: &str = "abcdefghijklmnopqrstuvwxyz234567";
        let last = good.chars().last().unwrap();
        let value = ALPHABET.find(last).unwrap();
        let flipped = ALPHABET.as_bytes()[value ^ 1] as char;
        let tweaked = format!("{}{flipped}", &good[..good.len() - 1]);
        assert_eq!(tweaked.parse::<ContentId>(), Err(ParseError::NonCanonical));
    }

    #[test]
    fn rejects_other_codecs_and_hashes() {
        let mut bytes = ContentId::of(b"x").to_cid_bytes();
        bytes[1] = 0x70;
        assert_eq!(
            ContentId::from_cid_bytes(&bytes),
            Err(ParseError::UnsupportedCodec(0x70))
        );
        bytes[1] = CODEC_RAW;
        bytes[2] = 0x12;
        assert_eq!(
            ContentId::from_cid_bytes(&bytes),
            Err(ParseError::UnsupportedHash(0x12))
        );
        assert_eq!(
            ContentId::from_cid_bytes(&bytes[..3]),
            Err(ParseError::Truncated)
        );
    }

    #[test]
    fn hex_round_trip() {
        let id = ContentId::of(b"abc");
        assert_eq!(ContentId::from_hex(&id.to_hex()).unwrap(), id);
        assert_eq!(id.short().to_string(), id.to_hex()[..16]);
        assert_eq!(ContentId::from_hex("ab"), Err(ParseError::HexLength(2)));
        assert!(ContentId::from_hex(&"g".repeat(64)).is_err());
    }

    #[test]
    fn streaming_matches_one_shot() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let mut hasher = ContentHasher::new();
        for chunk in data.chunks(777) {
            hasher.update(chunk);
        }
        assert_eq!(hasher.finalize(), ContentId::of(&data));
        assert_eq!(
            ContentId::from_reader(&data[..]).unwrap(),
            ContentId::of(&data)
        );
    }
}
