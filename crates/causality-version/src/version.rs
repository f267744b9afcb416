//! [`ProtocolVersion`]: a semantic version of the wire protocol.

use std::fmt;
use std::str::FromStr;

use crate::Error;

/// A semantic version `major.minor.patch` of a Causality protocol.
///
/// Within one major version, a higher minor only adds: a node of minor `m` understands
/// every peer of the same major whose minor is at most `m`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ProtocolVersion {
    /// Incompatible changes.
    pub major: u32,
    /// Backwards-compatible additions.
    pub minor: u32,
    /// Fixes with no protocol change.
    pub patch: u32,
}

impl ProtocolVersion {
    /// A version from its three numbers.
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        Self {
            major,
            minor,
            patch,
        }
    }
}

impl fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl FromStr for ProtocolVersion {
    type Err = Error;

    /// Parses `major.minor.patch`: three decimal numbers without leading zeros, signs or
    /// pre-release suffixes.
    fn from_str(text: &str) -> Result<Self, Error> {
        let bad = || Error::InvalidVersion(text.to_owned());
        let mut parts = text.split('.');
        let mut next = || -> Result<u32, Error> {
            let part = parts.next().ok_or_else(bad)?;
            let digits = !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
            if !digits || (part.len() > 1 && part.starts_with('0')) {
                return Err(bad());
            }
            part.parse().map_err(|_| bad())
        };
        let version = Self::new(next()?, next()?, next()?);
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(version)
    }
}
