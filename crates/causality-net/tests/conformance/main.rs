//! One conformance suite, run on the in-memory adapter (virtual time) and on libp2p over
//! TCP (noise and TLS) and QUIC on 127.0.0.1.

mod harness;
mod suite;

macro_rules! conformance {
    ($($test:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(start_paused = true)]
                async fn $test() {
                    super::suite::$test(&super::harness::Memory::new()).await;
                }
            )*
        }
        mod libp2p_tcp {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::suite::$test(&super::harness::Libp2p::tcp()).await;
                }
            )*
        }
        mod libp2p_quic {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::suite::$test(&super::harness::Libp2p::quic()).await;
                }
            )*
        }
    };
}

conformance!(
    pubsub_delivers_each_message_once,
    unsubscribe_leaves_the_topic,
    request_response,
    concurrent_requests_are_all_answered,
    disconnect,
    version_mismatch,
    bad_gossip_is_rejected,
    cheap_checks_come_before_the_signature,
    flood_is_limited_and_honest_traffic_flows,
    bad_requests_are_refused,
    validated_topics_forward_only_what_is_accepted,
    equivocation_is_proven_and_the_evidence_spreads,
    a_republished_envelope_does_not_poison_the_genuine_one,
);

/// TLS instead of noise on TCP: the basics.
mod libp2p_tls {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pubsub_delivers_each_message_once() {
        super::suite::pubsub_delivers_each_message_once(&super::harness::Libp2p::tls()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn request_response() {
        super::suite::request_response(&super::harness::Libp2p::tls()).await;
    }
}
