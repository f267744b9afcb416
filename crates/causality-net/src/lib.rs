#![doc = include_str!("../README.md")]
#![deny(missing_docs, rustdoc::broken_intra_doc_links)]

mod clock;
mod core;
mod driver;
mod envelope;
mod error;
mod event;
mod evidence;
#[cfg(any(feature = "libp2p", fuzzing, test))]
mod frame;
#[cfg(any(fuzzing, test))]
#[doc(hidden)]
pub mod fuzzing;
#[cfg(feature = "libp2p")]
mod libp2p;
mod limits;
mod memory;
mod network;
mod peer;
mod policy;
mod protocol;
mod replay;
pub mod seal;
pub mod service;
mod topic;
mod transport;

/// Raw protobuf wire types generated from `proto/causality/net/`.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
#[path = "generated/mod.rs"]
pub mod proto;

pub use crate::clock::{Clock, SystemClock, TokioClock};
pub use crate::core::{NodeConfig, PeerInfo};
pub use crate::driver::PeerSet;
#[cfg(feature = "test-utils")]
pub use crate::envelope::sign_envelope;
pub use crate::envelope::{Acceptance, Message, SIGNING_DOMAIN};
pub use crate::error::{Blame, ConfigError, NetError, RefusalReason, Rejection};
pub use crate::event::{NetworkEvent, NetworkMetrics};
pub use crate::evidence::{Equivocation, EvidenceError};
#[cfg(feature = "libp2p")]
pub use crate::libp2p::{Libp2pConfig, Libp2pNetwork, Security};
pub use crate::limits::{Limits, LimitsBuilder};
pub use crate::memory::{LinkConfig, MemoryNetwork, SIMULATION_EPOCH_MS, SimStats};
pub use crate::network::{EventStream, InboundRequest, Network, Requests, Subscription};
pub use crate::peer::{Keypair, PeerId};
pub use crate::policy::{Policy, Role};
pub use crate::protocol::{AsProtocol, RequestLimits, RequestLimitsBuilder, RequestProtocol};
pub use crate::topic::{MAX_TOPIC_ID_BYTES, MAX_TOPIC_NAME_BYTES, PhysicalTopic, Topic, TopicKind};
/// The Prometheus registry type libp2p's metrics are recorded into (feature `metrics`).
#[cfg(feature = "metrics")]
pub use ::libp2p::metrics::Registry as MetricsRegistry;
pub use causality_version::{FeatureSet, Hello, ProtocolId, ProtocolVersion};
pub use multiaddr::Multiaddr;

/// The version of the Causality wire protocol this crate speaks.
pub const PROTOCOL_VERSION: ProtocolVersion = ProtocolVersion::new(0, 1, 0);

/// The `Hello` a node sends by default: [`PROTOCOL_VERSION`], the features this crate
/// implements, and an agent string naming the crate.
pub fn default_hello() -> Hello {
    let features = FeatureSet::BASIC_MESSAGING
        | FeatureSet::PUB_SUB
        | FeatureSet::CONTENT_ADDRESSING
        | FeatureSet::SECURE_TRANSPORT
        | FeatureSet::PEER_AUTH;
    Hello::new(PROTOCOL_VERSION, features)
        .with_agent(concat!("causality-net/", env!("CARGO_PKG_VERSION")))
}
