//! Network events are written through `tracing` into the content-addressed log.

use std::sync::Arc;

use causality_log::{Filter, Kind, Level, LogLayer, LogStore, MemoryLog};
use causality_net::{MemoryNetwork, NetworkEvent, Topic};
use futures::StreamExt as _;
use tracing_subscriber::layer::SubscriberExt as _;

#[tokio::test(start_paused = true)]
async fn network_events_land_in_the_log() {
    let log = MemoryLog::new();
    let (layer, guard) = LogLayer::new(Arc::new(log.clone()));
    let _default = tracing::subscriber::set_default(tracing_subscriber::registry().with(layer));

    let sim = MemoryNetwork::new(5);
    let (a, b) = (sim.add_node(), sim.add_node());
    let mut events = b.events();
    a.dial(b.listen_addresses()[0].clone()).await.unwrap();
    let topic: Topic = "timemap/update/d1".parse().unwrap();
    let _sub = b.subscribe(&topic).await.unwrap();
    sim.settle().await;
    a.publish_raw(b.physical_topic(&topic), b"junk".to_vec())
        .await
        .unwrap();
    loop {
        if let NetworkEvent::MessageRejected { .. } = events.next().await.unwrap() {
            break;
        }
    }
    guard.flush();

    let network = log
        .query(&Filter::new().kind(Kind::Network), 0..u64::MAX, 100)
        .unwrap();
    let payloads: Vec<String> = network
        .iter()
        .map(|e| String::from_utf8_lossy(&e.payload).into_owned())
        .collect();
    assert!(
        payloads.iter().any(|p| p == "peer connected"),
        "{payloads:?}"
    );
    let rejected = network
        .iter()
        .find(|e| e.payload == b"message rejected")
        .expect("the rejection is logged");
    assert_eq!(rejected.level, Level::Warn);
    assert_eq!(rejected.metadata["peer"], a.local_peer_id().to_string());
    assert!(
        rejected.metadata["reason"].starts_with("malformed"),
        "{:?}",
        rejected.metadata
    );
    // The log that recorded them is intact.
    assert_eq!(log.verify(&[]).unwrap().size, log.len());
}

/// A flood of bad messages writes a bounded number of warnings (a burst, then one per ten
/// seconds per peer and reason), while the counters stay exact.
#[tokio::test(start_paused = true)]
async fn a_flood_of_rejections_logs_a_bounded_number_of_warnings() {
    let log = MemoryLog::new();
    let (layer, guard) = LogLayer::new(Arc::new(log.clone()));
    let _default = tracing::subscriber::set_default(tracing_subscriber::registry().with(layer));

    let sim = MemoryNetwork::new(6);
    let (a, b) = (sim.add_node(), sim.add_node());
    a.dial(b.listen_addresses()[0].clone()).await.unwrap();
    let topic: Topic = "timemap/update/d1".parse().unwrap();
    let _sub = b.subscribe(&topic).await.unwrap();
    sim.settle().await;
    // Distinct junk each time (identical bytes would be dropped as duplicates): 200 at
    // once. The flooder is banned after ten; what is still in flight is refused as banned.
    for i in 0..200u32 {
        let mut junk = b"\xff\xff junk ".to_vec();
        junk.extend_from_slice(&i.to_le_bytes());
        a.publish_raw(b.physical_topic(&topic), junk).await.unwrap();
    }
    sim.settle().await;
    guard.flush();

    let counted: u64 = b.metrics().rejected.values().sum();
    let warnings = log
        .query(&Filter::new().kind(Kind::Network), 0..u64::MAX, 10_000)
        .unwrap()
        .into_iter()
        .filter(|e| e.payload == b"message rejected" && e.level == Level::Warn)
        .count();
    assert!(counted >= 10, "the rejections are counted ({counted})");
    assert!(
        (1..=10).contains(&warnings),
        "{warnings} warnings for {counted} rejections"
    );
}
