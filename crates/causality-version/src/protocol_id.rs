//! Protocol-id strings: `/causality/<protocol>/<major>.<minor>.<patch>`.

use std::fmt;
use std::str::FromStr;

use crate::{Error, ProtocolVersion};

const PREFIX: &str = "/causality/";
/// Longest protocol name accepted.
pub const MAX_PROTOCOL_NAME_LEN: usize = 64;

/// A versioned protocol identifier as negotiated by multistream-select, e.g.
/// `/causality/proofshare/1.0.0`.
///
/// ```
/// use causality_version::{ProtocolId, ProtocolVersion};
///
/// let id: ProtocolId = "/causality/discovery/1.2.0".parse().unwrap();
/// assert_eq!(id.name(), "discovery");
/// assert_eq!(id.version(), ProtocolVersion::new(1, 2, 0));
/// assert_eq!(id.to_string(), "/causality/discovery/1.2.0");
/// assert!("/causality/Discovery/1.2".parse::<ProtocolId>().is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProtocolId {
    name: String,
    version: ProtocolVersion,
}

impl ProtocolId {
    /// A protocol id; the name must be 1–64 characters of `a-z`, `0-9`, `-` and `_`.
    pub fn new(name: &str, version: ProtocolVersion) -> Result<Self, Error> {
        validate_name(name).map_err(|reason| Error::InvalidProtocolId {
            id: format!("{PREFIX}{name}/{version}"),
            reason,
        })?;
        Ok(Self {
            name: name.to_owned(),
            version,
        })
    }

    /// The protocol name, e.g. `discovery`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The protocol version.
    pub fn version(&self) -> ProtocolVersion {
        self.version
    }

    /// The ids a node advertises for a protocol it speaks in several versions, newest first.
    pub fn all_versions(name: &str, versions: &[ProtocolVersion]) -> Result<Vec<Self>, Error> {
        let mut ids = versions
            .iter()
            .map(|v| Self::new(name, *v))
            .collect::<Result<Vec<_>, _>>()?;
        ids.sort_by_key(|id| std::cmp::Reverse(id.version));
        ids.dedup();
        Ok(ids)
    }
}

fn validate_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("empty protocol name");
    }
    if name.len() > MAX_PROTOCOL_NAME_LEN {
        return Err("protocol name longer than 64 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    {
        return Err("protocol name may only contain a-z, 0-9, '-' and '_'");
    }
    Ok(())
}

impl fmt::Display for ProtocolId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{}/{}", self.name, self.version)
    }
}

impl FromStr for ProtocolId {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Error> {
        let invalid = |reason| Error::InvalidProtocolId {
            id: text.to_owned(),
            reason,
        };
        let rest = text
            .strip_prefix(PREFIX)
            .ok_or_else(|| invalid("does not start with /causality/"))?;
        let (name, version) = rest
            .split_once('/')
            .ok_or_else(|| invalid("expected /causality/<protocol>/<major>.<minor>.<patch>"))?;
        validate_name(name).map_err(invalid)?;
        let version = version
            .parse()
            .map_err(|_| invalid("version is not <major>.<minor>.<patch>"))?;
        Ok(Self {
            name: name.to_owned(),
            version,
        })
    }
}
