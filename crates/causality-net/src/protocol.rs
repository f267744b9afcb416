//! Registered request protocols: each has its own id, versions and limits.

use std::time::Duration;

use causality_version::{ProtocolId, ProtocolVersion};

use crate::error::ConfigError;

/// The limits of one request protocol: how large its requests and responses may be, how
/// many inbound requests may wait for the handler, how fast one peer may ask, and how long
/// an outbound request may take.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestLimits {
    max_request_bytes: usize,
    max_response_bytes: usize,
    queue: usize,
    requests_per_second: u32,
    burst: u32,
    timeout: Duration,
}

impl Default for RequestLimits {
    /// 4 MiB requests and responses, a queue of 256, 50 requests per peer per second with
    /// a burst of 100, a 10 s timeout. Protocols with small messages should lower the sizes.
    fn default() -> Self {
        Self {
            max_request_bytes: 4 * 1024 * 1024,
            max_response_bytes: 4 * 1024 * 1024,
            queue: 256,
            requests_per_second: 50,
            burst: 100,
            timeout: Duration::from_secs(10),
        }
    }
}

impl RequestLimits {
    /// A builder starting from the defaults.
    pub fn builder() -> RequestLimitsBuilder {
        RequestLimitsBuilder(Self::default())
    }

    /// Largest request frame accepted or sent.
    pub fn max_request_bytes(&self) -> usize {
        self.max_request_bytes
    }

    /// Largest response frame accepted or sent.
    pub fn max_response_bytes(&self) -> usize {
        self.max_response_bytes
    }

    /// Inbound requests waiting for the handler; beyond it requests are refused as busy.
    pub fn queue(&self) -> usize {
        self.queue
    }

    /// Sustained requests per peer per second.
    pub fn requests_per_second(&self) -> u32 {
        self.requests_per_second
    }

    /// Requests a peer may make at once above the sustained rate.
    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// How long an outbound request may take.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

/// Builds [`RequestLimits`]; [`build`](Self::build) checks them.
#[derive(Clone, Debug)]
pub struct RequestLimitsBuilder(RequestLimits);

impl RequestLimitsBuilder {
    /// Largest request frame.
    pub fn max_request_bytes(mut self, bytes: usize) -> Self {
        self.0.max_request_bytes = bytes;
        self
    }

    /// Largest response frame.
    pub fn max_response_bytes(mut self, bytes: usize) -> Self {
        self.0.max_response_bytes = bytes;
        self
    }

    /// Inbound queue length.
    pub fn queue(mut self, n: usize) -> Self {
        self.0.queue = n;
        self
    }

    /// Sustained rate and burst per peer.
    pub fn rate(mut self, per_second: u32, burst: u32) -> Self {
        self.0.requests_per_second = per_second;
        self.0.burst = burst;
        self
    }

    /// Outbound timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.0.timeout = timeout;
        self
    }

    /// The limits, or the first field that is out of range.
    pub fn build(self) -> Result<RequestLimits, ConfigError> {
        let l = self.0;
        ConfigError::positive("max_request_bytes", l.max_request_bytes > 0)?;
        ConfigError::positive("max_response_bytes", l.max_response_bytes > 0)?;
        ConfigError::positive("queue", l.queue > 0)?;
        ConfigError::positive("requests_per_second", l.requests_per_second > 0)?;
        ConfigError::positive("timeout", !l.timeout.is_zero())?;
        if l.burst < 1 {
            return Err(ConfigError::new("burst", "must be at least 1"));
        }
        const CAP: usize = 256 * 1024 * 1024;
        if l.max_request_bytes > CAP || l.max_response_bytes > CAP {
            return Err(ConfigError::new(
                "max_response_bytes",
                "frames are limited to 256 MiB",
            ));
        }
        Ok(l)
    }
}

/// A request protocol as a crate registers it: a name, the versions it speaks (the highest
/// the peer also speaks is used) and its limits.
///
/// ```
/// use causality_net::{RequestLimits, RequestProtocol};
/// use causality_version::ProtocolVersion;
///
/// let limits = RequestLimits::builder().max_request_bytes(4096).build().unwrap();
/// let protocol = RequestProtocol::new("discovery", &[ProtocolVersion::new(0, 1, 0)], limits)
///     .unwrap();
/// assert_eq!(protocol.ids()[0].to_string(), "/causality/discovery/0.1.0");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestProtocol {
    name: String,
    /// Newest first.
    ids: Vec<ProtocolId>,
    limits: RequestLimits,
}

impl RequestProtocol {
    /// A protocol `name` (`a-z`, `0-9`, `-`, `_`) in `versions` with `limits`.
    pub fn new(
        name: &str,
        versions: &[ProtocolVersion],
        limits: RequestLimits,
    ) -> Result<Self, ConfigError> {
        let ids = ProtocolId::all_versions(name, versions)
            .map_err(|e| ConfigError::new("name", e.to_string()))?;
        if ids.is_empty() {
            return Err(ConfigError::new("versions", "at least one version"));
        }
        Ok(Self {
            name: name.to_owned(),
            ids,
            limits,
        })
    }

    /// The protocol of one full id, e.g. `/causality/echo/0.1.0`, with default limits.
    pub fn from_id(id: &str) -> Result<Self, ConfigError> {
        let parsed: ProtocolId = id
            .parse()
            .map_err(|e: causality_version::Error| ConfigError::new("id", e.to_string()))?;
        Self::new(parsed.name(), &[parsed.version()], RequestLimits::default())
    }

    /// The name, e.g. `discovery`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Every id offered, newest version first.
    pub fn ids(&self) -> &[ProtocolId] {
        &self.ids
    }

    /// The limits.
    pub fn limits(&self) -> &RequestLimits {
        &self.limits
    }
}

/// Anything that names a request protocol: a registered [`RequestProtocol`], or the text of
/// one id (`/causality/<name>/<version>`) for a protocol used with default limits.
pub trait AsProtocol {
    /// The protocol.
    fn as_protocol(&self) -> Result<RequestProtocol, ConfigError>;
}

impl AsProtocol for RequestProtocol {
    fn as_protocol(&self) -> Result<RequestProtocol, ConfigError> {
        Ok(self.clone())
    }
}

impl AsProtocol for &RequestProtocol {
    fn as_protocol(&self) -> Result<RequestProtocol, ConfigError> {
        Ok((*self).clone())
    }
}

impl AsProtocol for &str {
    fn as_protocol(&self) -> Result<RequestProtocol, ConfigError> {
        RequestProtocol::from_id(self)
    }
}

impl AsProtocol for String {
    fn as_protocol(&self) -> Result<RequestProtocol, ConfigError> {
        RequestProtocol::from_id(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_names_the_bad_field() {
        let err = RequestLimits::builder().queue(0).build().unwrap_err();
        assert_eq!(err.field(), "queue");
        let err = RequestLimits::builder()
            .timeout(Duration::ZERO)
            .build()
            .unwrap_err();
        assert_eq!(err.field(), "timeout");
        assert!(RequestLimits::builder().rate(1, 1).build().is_ok());
    }

    #[test]
    fn versions_are_offered_newest_first() {
        let p = RequestProtocol::new(
            "sync",
            &[ProtocolVersion::new(1, 0, 0), ProtocolVersion::new(2, 1, 0)],
            RequestLimits::default(),
        )
        .unwrap();
        assert_eq!(p.ids()[0].version(), ProtocolVersion::new(2, 1, 0));
        assert!(
            RequestProtocol::new(
                "Bad",
                &[ProtocolVersion::new(1, 0, 0)],
                RequestLimits::default()
            )
            .is_err()
        );
        assert!(RequestProtocol::new("x", &[], RequestLimits::default()).is_err());
    }
}
