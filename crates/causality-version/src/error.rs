//! The crate's error type.

/// Errors from parsing versions, protocol ids and `Hello` messages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Text that is not `major.minor.patch`.
    #[error("invalid protocol version {0:?}: expected <major>.<minor>.<patch>")]
    InvalidVersion(String),
    /// A malformed protocol id.
    #[error("invalid protocol id {id:?}: {reason}")]
    InvalidProtocolId {
        /// The offending text.
        id: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A message longer than its limit.
    #[error("message of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Bytes that are not a valid protobuf encoding.
    #[error("malformed protobuf: {0}")]
    Decode(#[from] prost::DecodeError),
    /// A well-formed `Hello` with invalid contents.
    #[error("invalid hello: {0}")]
    InvalidHello(&'static str),
}
