//! The network manager alone: two nodes on the in-memory hub.

use causality_net::{MemoryNetwork, Topic};
use futures::StreamExt as _;

fn main() {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(async {
            let hub = MemoryNetwork::new(1);
            let (alice, bob) = (hub.add_node(), hub.add_node());
            alice
                .dial(bob.listen_addresses()[0].clone())
                .await
                .expect("dial");
            let topic: Topic = "execution/result/downstream".parse().expect("topic");
            let mut at_bob = bob.subscribe(&topic).await.expect("subscribe");
            hub.settle().await;
            alice
                .publish(&topic, "downstream.Text", b"over memory".to_vec())
                .await
                .expect("publish");
            let message = at_bob.next().await.expect("a message");
            assert_eq!(message.payload, b"over memory");
            assert_eq!(message.sender, alice.local_peer_id());
            let mut requests = bob.serve("/causality/echo/0.1.0").await.expect("serve");
            tokio::spawn(async move {
                while let Some(request) = requests.next().await {
                    let body = request.body.clone();
                    request.respond(body);
                }
            });
            let answer = alice
                .request(bob.local_peer_id(), "/causality/echo/0.1.0", b"hi".to_vec())
                .await
                .expect("an answer");
            assert_eq!(answer, b"hi");
            println!("memory network: a signed topic message and a request-response round trip");
        });
}
