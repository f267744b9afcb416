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
