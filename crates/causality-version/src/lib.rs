#![doc = include_str!("../README.md")]
#![deny(missing_docs, rustdoc::broken_intra_doc_links)]

mod error;
mod features;
mod negotiate;
mod protocol_id;
mod version;

/// Raw protobuf wire types generated from `proto/causality/version/`. Prefer the domain
/// types ([`Hello`], [`ProtocolVersion`]); these exist for other crates' messages that embed them.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
#[path = "generated/mod.rs"]
pub mod proto;

pub use error::Error;
pub use features::FeatureSet;
pub use negotiate::{Agreement, Hello, Incompatibility, MAX_AGENT_LEN, MAX_HELLO_LEN, negotiate};
pub use protocol_id::{MAX_PROTOCOL_NAME_LEN, ProtocolId};
pub use version::ProtocolVersion;
