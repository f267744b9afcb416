//! Discovery's wire messages (`proto/causality/discovery/v1`): encoding, and decoding with
//! every body bounded by the protocol's limit before it is decoded.

use prost::Message as _;

use crate::proto::v1 as pb;
use crate::record::MAX_RECORD_BYTES;

/// Why a discovery message was refused.
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    /// Larger than the most records a message may carry could take.
    #[error("message of {size} bytes is over the limit of {limit}")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Not a valid protobuf message.
    #[error("malformed: {0}")]
    Malformed(String),
    /// A request with no kind.
    #[error("request without a kind")]
    Empty,
}

/// The largest body of a message carrying `max_records` records.
pub fn max_body(max_records: usize) -> usize {
    max_records.saturating_mul(MAX_RECORD_BYTES) + 1024
}

fn bounded(body: &[u8], max_records: usize) -> Result<(), MessageError> {
    let limit = max_body(max_records);
    if body.len() > limit {
        return Err(MessageError::TooLarge {
            size: body.len(),
            limit,
        });
    }
    Ok(())
}

/// Encodes a request of `kind`.
pub fn encode_request(kind: pb::request::Kind) -> Vec<u8> {
    pb::Request { kind: Some(kind) }.encode_to_vec()
}

/// Decodes a request body.
pub fn decode_request(body: &[u8], max_records: usize) -> Result<pb::Request, MessageError> {
    bounded(body, max_records)?;
    let request = pb::Request::decode(body).map_err(|e| MessageError::Malformed(e.to_string()))?;
    if request.kind.is_none() {
        return Err(MessageError::Empty);
    }
    Ok(request)
}

/// Encodes a response.
pub fn encode_response(response: &pb::Response) -> Vec<u8> {
    response.encode_to_vec()
}

/// Decodes a response body.
pub fn decode_response(body: &[u8], max_records: usize) -> Result<pb::Response, MessageError> {
    bounded(body, max_records)?;
    pb::Response::decode(body).map_err(|e| MessageError::Malformed(e.to_string()))
}
