//! Content ids, rendezvous hashing and Merkle proofs in a few lines:
//! `cargo run -p causality-hash --example content_ids`.

use causality_hash::merkle::MerkleTree;
use causality_hash::merkle::leaf_hash;
use causality_hash::{ContentId, Rendezvous};

fn main() {
    // A content id is the BLAKE3 hash of the bytes; its text form is a CIDv1.
    let id = ContentId::of(b"hello, causality");
    let text = id.to_string();
    let parsed: ContentId = text.parse().expect("a content id parses back");
    assert_eq!(parsed, id);
    println!("content id: {text} (short {})", id.short());

    // Rendezvous hashing: every node with the same peer list picks the same three peers
    // for a key, and a peer joining or leaving moves only the keys it wins or held.
    let peers: Vec<Vec<u8>> = (0u8..20).map(|i| vec![i; 32]).collect();
    let hrw = Rendezvous::for_epoch(1);
    let chosen = hrw.top_k(id.as_bytes(), &peers, 3);
    println!(
        "responsible peers: {:?}",
        chosen.iter().map(|p| p[0]).collect::<Vec<_>>()
    );
    let without_first: Vec<Vec<u8>> = peers.iter().filter(|p| *p != chosen[0]).cloned().collect();
    let after = hrw.top_k(id.as_bytes(), &without_first, 3);
    assert_eq!(after[..2], chosen[1..], "the others keep their places");

    // A Merkle tree over 1,000 leaves: an inclusion proof of leaf 123 against the root.
    let mut tree = MerkleTree::new();
    for i in 0u32..1000 {
        tree.push(leaf_hash(&i.to_le_bytes()));
    }
    let proof = tree.inclusion_proof(123, tree.len()).expect("in range");
    proof
        .verify(&leaf_hash(&123u32.to_le_bytes()), &tree.root())
        .expect("leaf 123 is in the tree");
    assert!(
        proof
            .verify(&leaf_hash(&124u32.to_le_bytes()), &tree.root())
            .is_err()
    );
    println!("inclusion proof of leaf 123 of 1000 verifies");
}
