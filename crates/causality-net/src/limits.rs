//! Every node-wide size, rate and count limit of the network layer, in one place. Limits
//! of one request protocol live with its registration ([`RequestLimits`](crate::RequestLimits)).

use std::time::Duration;

use crate::error::ConfigError;

/// Limits applied to everything the network layer accepts. The defaults suit a public
/// network; tests and simulations tighten or loosen them. Fields are public for reading
/// and for struct-update syntax; [`Limits::builder`] validates.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest encoded envelope accepted or published (gossip carries announcements; bodies
    /// travel by request-response). Default 64 KiB.
    pub max_envelope_bytes: usize,
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
    /// Messages accepted per originator (the envelope's signed sender) per second,
    /// sustained. Counted per originator, not per relay, so an honest relay forwarding many
    /// originators is never limited for them. Default 200.
    pub messages_per_second: u32,
    /// Burst of messages an originator may send above the sustained rate. Default 400.
    pub message_burst: u32,
    /// Gossip bytes accepted from one relay per second, in KiB, each message counting at
    /// least 1 KiB, before anything is decoded (a cheap guard on decoding and signature
    /// work: at most this many signature checks per second per relay; over it, messages
    /// are dropped and nobody is penalized). Default 8,192 (8 MiB/s).
    pub relay_kib_per_second: u32,
    /// Burst above that, in KiB. Default 16,384.
    pub relay_kib_burst: u32,
    /// Bytes of recently accepted envelopes kept, so that an equivocation can be proven
    /// with both envelopes. Default 8 MiB.
    pub evidence_bytes: usize,
    /// How long an equivocating sender stays banned. Default 24 hours.
    pub equivocation_ban: Duration,
    /// Requests accepted per peer per second over all protocols (each protocol has its own
    /// rate besides). Default 50.
    pub requests_per_second: u32,
    /// Request burst above the sustained rate, over all protocols. Default 100.
    pub request_burst: u32,
    /// Undelivered messages queued per subscription; beyond it messages for that subscriber
    /// are dropped and counted. Default 1,024.
    pub subscription_queue: usize,
    /// Commands queued from handles to the driver. Default 1,024.
    pub command_queue: usize,
    /// Events buffered for each event subscriber; slow subscribers miss the oldest.
    /// Default 1,024.
    pub event_queue: usize,
    /// Connected peers at most. Default 256.
    pub max_peers: usize,
    /// Connection slots kept for peers we dial (at most half of `max_peers`): inbound
    /// connections fill the rest, so inbound Sybils can never block our own choices.
    /// Default 32.
    pub outbound_slots: usize,
    /// Inbound connections from one IP address at most (loopback exempt: local nodes
    /// share it). Default 8.
    pub max_inbound_per_ip: usize,
    /// Inbound connections from one /24 (IPv4) or /48 (IPv6) at most (loopback exempt).
    /// Default 32.
    pub max_inbound_per_subnet: usize,
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
            max_payload_type_bytes: 128,
            max_clock_skew: Duration::from_secs(30),
            replay_window: 256,
            replay_senders: 100_000,
            seen_cache: 65_536,
            messages_per_second: 200,
            message_burst: 400,
            relay_kib_per_second: 8192,
            relay_kib_burst: 16_384,
            evidence_bytes: 8 << 20,
            equivocation_ban: Duration::from_secs(24 * 3600),
            requests_per_second: 50,
            request_burst: 100,
            subscription_queue: 1024,
            command_queue: 1024,
            event_queue: 1024,
            max_peers: 256,
            outbound_slots: 32,
            max_inbound_per_ip: 8,
            max_inbound_per_subnet: 32,
            topic_shards: 16,
            ban_threshold: -100,
            ban_duration: Duration::from_secs(600),
            score_decay_per_second: 1,
        }
    }
}

impl Limits {
    /// A builder starting from the defaults.
    ///
    /// ```
    /// use causality_net::Limits;
    ///
    /// let limits = Limits::builder().max_peers(64).messages(100, 200).build().unwrap();
    /// assert_eq!(limits.max_peers, 64);
    /// let err = Limits::builder().topic_shards(0).build().unwrap_err();
    /// assert_eq!(err.field(), "topic_shards");
    /// ```
    pub fn builder() -> LimitsBuilder {
        LimitsBuilder(Self::default())
    }

    /// Checks every field; the first out of range is named.
    pub fn validate(&self) -> Result<(), ConfigError> {
        ConfigError::positive("max_envelope_bytes", self.max_envelope_bytes > 0)?;
        ConfigError::positive("replay_senders", self.replay_senders > 0)?;
        ConfigError::positive("seen_cache", self.seen_cache > 0)?;
        ConfigError::positive("messages_per_second", self.messages_per_second > 0)?;
        ConfigError::positive("message_burst", self.message_burst > 0)?;
        ConfigError::positive("relay_kib_per_second", self.relay_kib_per_second > 0)?;
        ConfigError::positive("relay_kib_burst", self.relay_kib_burst > 0)?;
        ConfigError::positive("requests_per_second", self.requests_per_second > 0)?;
        ConfigError::positive("request_burst", self.request_burst > 0)?;
        ConfigError::positive("subscription_queue", self.subscription_queue > 0)?;
        ConfigError::positive("command_queue", self.command_queue > 0)?;
        ConfigError::positive("event_queue", self.event_queue > 0)?;
        ConfigError::positive("max_peers", self.max_peers > 0)?;
        ConfigError::positive("max_inbound_per_ip", self.max_inbound_per_ip > 0)?;
        ConfigError::positive("max_inbound_per_subnet", self.max_inbound_per_subnet > 0)?;
        ConfigError::positive("topic_shards", self.topic_shards > 0)?;
        if self.replay_window < 64 {
            return Err(ConfigError::new("replay_window", "must be at least 64"));
        }
        if self.ban_threshold >= 0 {
            return Err(ConfigError::new("ban_threshold", "must be negative"));
        }
        if self.score_decay_per_second < 0 {
            return Err(ConfigError::new(
                "score_decay_per_second",
                "must not be negative",
            ));
        }
        Ok(())
    }
}

/// Builds [`Limits`]; [`build`](Self::build) validates.
#[derive(Clone, Debug)]
pub struct LimitsBuilder(Limits);

impl LimitsBuilder {
    /// Largest envelope.
    pub fn max_envelope_bytes(mut self, bytes: usize) -> Self {
        self.0.max_envelope_bytes = bytes;
        self
    }

    /// Clock-skew bound.
    pub fn max_clock_skew(mut self, skew: Duration) -> Self {
        self.0.max_clock_skew = skew;
        self
    }

    /// Messages per originator per second, and burst.
    pub fn messages(mut self, per_second: u32, burst: u32) -> Self {
        self.0.messages_per_second = per_second;
        self.0.message_burst = burst;
        self
    }

    /// Requests per peer per second over all protocols, and burst.
    pub fn requests(mut self, per_second: u32, burst: u32) -> Self {
        self.0.requests_per_second = per_second;
        self.0.request_burst = burst;
        self
    }

    /// Subscription queue length.
    pub fn subscription_queue(mut self, n: usize) -> Self {
        self.0.subscription_queue = n;
        self
    }

    /// Connected peers at most.
    pub fn max_peers(mut self, n: usize) -> Self {
        self.0.max_peers = n;
        self
    }

    /// Connection slots kept for outbound dials, and inbound caps per IP and per subnet.
    pub fn connections(mut self, outbound_slots: usize, per_ip: usize, per_subnet: usize) -> Self {
        self.0.outbound_slots = outbound_slots;
        self.0.max_inbound_per_ip = per_ip;
        self.0.max_inbound_per_subnet = per_subnet;
        self
    }

    /// Physical shards per topic kind.
    pub fn topic_shards(mut self, n: u32) -> Self {
        self.0.topic_shards = n;
        self
    }

    /// Ban threshold and duration.
    pub fn bans(mut self, threshold: i64, duration: Duration) -> Self {
        self.0.ban_threshold = threshold;
        self.0.ban_duration = duration;
        self
    }

    /// The limits, or the first field out of range.
    pub fn build(self) -> Result<Limits, ConfigError> {
        self.0.validate()?;
        Ok(self.0)
    }
}
