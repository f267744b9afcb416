//! Every size, rate and count limit of the network layer, in one place.

use std::time::Duration;

/// Limits applied to everything the network layer accepts. The defaults suit a public
/// network; tests and simulations tighten or loosen them.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest encoded envelope accepted or published (gossip carries announcements; bodies
    /// travel by request-response). Default 64 KiB.
    pub max_envelope_bytes: usize,
    /// Largest request or response frame. Default 4 MiB.
    pub max_request_bytes: usize,
    /// Longest `payload_type`. Default 128.
    pub max_payload_type_bytes: usize,
    /// How far an envelope's timestamp may be from our clock, either way. Default 30 s.
    pub max_clock_skew: Duration,
    /// Sequence numbers this far below a sender's highest are rejected as too old. Default 256.
    pub replay_window: u64,
    /// Senders whose replay windows are kept (least recently seen forgotten first).
    /// Default 100,000.
    pub replay_senders: usize,
    /// Message ids remembered to drop duplicates. Default 65,536.
    pub seen_cache: usize,
    /// Messages accepted per peer per second (sustained). Default 200.
    pub messages_per_second: u32,
    /// Burst of messages a peer may send above the sustained rate. Default 400.
    pub message_burst: u32,
    /// Requests accepted per peer per second (sustained). Default 50.
    pub requests_per_second: u32,
    /// Request burst above the sustained rate. Default 100.
    pub request_burst: u32,
    /// Undelivered messages queued per subscription; beyond it messages for that subscriber
    /// are dropped and counted. Default 1,024.
    pub subscription_queue: usize,
    /// Inbound requests queued per served protocol; beyond it requests are refused as busy.
    /// Default 256.
    pub request_queue: usize,
    /// Commands queued from handles to the adapter. Default 1,024.
    pub command_queue: usize,
    /// Events buffered for each event subscriber; slow subscribers miss the oldest.
    /// Default 1,024.
    pub event_queue: usize,
    /// How long a request may take before it fails with a timeout. Default 10 s.
    pub request_timeout: Duration,
    /// Connected peers at most. Default 256.
    pub max_peers: usize,
    /// Physical gossip shards per topic kind. Default 16.
    pub topic_shards: u32,
    /// A peer whose score falls to this is banned. Default -100.
    pub ban_threshold: i64,
    /// How long a ban lasts. Default 10 minutes.
    pub ban_duration: Duration,
    /// Scores decay toward 0 by this many points per second. Default 1.
    pub score_decay_per_second: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_envelope_bytes: 64 * 1024,
            max_request_bytes: 4 * 1024 * 1024,
            max_payload_type_bytes: 128,
            max_clock_skew: Duration::from_secs(30),
            replay_window: 256,
            replay_senders: 100_000,
            seen_cache: 65_536,
            messages_per_second: 200,
            message_burst: 400,
            requests_per_second: 50,
            request_burst: 100,
            subscription_queue: 1024,
            request_queue: 256,
            command_queue: 1024,
            event_queue: 1024,
            request_timeout: Duration::from_secs(10),
            max_peers: 256,
            topic_shards: 16,
            ban_threshold: -100,
            ban_duration: Duration::from_secs(600),
            score_decay_per_second: 1,
        }
    }
}
