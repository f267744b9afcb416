//! Rendezvous hashing: shared test vectors and the remap fraction under churn.
//!
//! The vectors live in the workspace's `tests/vectors/hrw.json` so implementations in other
//! languages can check themselves against the same file. Regenerate it (only when the scoring
//! rule deliberately changes) with `CAUSALITY_REGENERATE_VECTORS=1 cargo test -p causality-hash --test hrw`.

use std::path::PathBuf;

use causality_hash::{ContentId, Rendezvous};
use serde_json::{Value, json};

/// The directory of the crate being tested, as `cargo test` says at run time (a binary
/// reused from another checkout through a shared target directory must not read that
/// checkout's files).
fn vector_path() -> PathBuf {
    PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("run by cargo test"))
        .join("../../tests/vectors/hrw.json")
}

fn peer(i: u32) -> [u8; 32] {
    ContentId::of(format!("peer {i}").as_bytes()).to_bytes()
}

fn key(i: u32) -> [u8; 32] {
    ContentId::of(format!("key {i}").as_bytes()).to_bytes()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Computes the vectors from the current implementation.
fn compute() -> Value {
    let peers: Vec<[u8; 32]> = (0..16).map(peer).collect();
    let weight = |p: &[u8; 32]| f64::from(p[0] % 4 + 1);
    let mut cases = Vec::new();
    for epoch in [0u64, 1, 0x0000_0001_0000_0007] {
        let hrw = Rendezvous::for_epoch(epoch);
        for k in 0..8 {
            let key = key(k);
            let scores: Vec<String> = peers[..4]
                .iter()
                .map(|p| hrw.score(&key, p).to_string())
                .collect();
            let top3: Vec<String> = hrw.top_k(&key, &peers, 3).iter().map(|p| hex(*p)).collect();
            let weighted: Vec<String> = hrw
                .top_k_weighted(&key, &peers, 3, weight)
                .iter()
                .map(|p| hex(*p))
                .collect();
            cases.push(json!({
                "epoch": epoch,
                "key": hex(&key),
                "scores_of_first_4_peers": scores,
                "top3": top3,
                "top3_weighted": weighted,
            }));
        }
    }
    json!({
        "rule_version": causality_hash::HRW_RULE_VERSION,
        "description": "HRW rule 2: kd = u64_le(BLAKE3(epoch_be8 || key)[0..8]), pd = u64_le(BLAKE3(epoch_be8 || peer)[0..8]), score = splitmix64_finalizer(kd ^ pd) where z = (z ^ z>>30) * 0xbf58476d1ce4e5b9; z = (z ^ z>>27) * 0x94d049bb133111eb; z ^ z>>31 (wrapping); highest wins, ties by greater peer bytes. Weighted: -w/ln(u), u = ((score >> 12) + 0.5) / 2^52, ln from musl (libm). Weight of a peer = (peer[0] % 4) + 1.",
        "peers": peers.iter().map(|p| hex(p)).collect::<Vec<_>>(),
        "cases": cases,
    })
}

#[test]
fn vectors_match() {
    let computed = compute();
    let path = vector_path();
    if std::env::var_os("CAUSALITY_REGENERATE_VECTORS").is_some() {
        let text = serde_json::to_string_pretty(&computed).unwrap() + "\n";
        std::fs::write(&path, text).unwrap();
    }
    let stored: Value = serde_json::from_str(
        &std::fs::read_to_string(&path).expect("tests/vectors/hrw.json is committed"),
    )
    .unwrap();
    assert_eq!(stored["peers"], computed["peers"]);
    assert_eq!(
        stored["rule_version"], computed["rule_version"],
        "vectors of another rule"
    );
    let (stored, computed) = (
        stored["cases"].as_array().unwrap(),
        computed["cases"].as_array().unwrap(),
    );
    assert_eq!(stored.len(), 24);
    for (s, c) in stored.iter().zip(computed) {
        assert_eq!(s, c, "vector for epoch {} key {}", s["epoch"], s["key"]);
    }
}

#[test]
fn vector_scores_follow_the_definition() {
    // Independent of the library: hash the concatenation directly.
    let stored: Value =
        serde_json::from_str(&std::fs::read_to_string(vector_path()).unwrap()).unwrap();
    for case in stored["cases"].as_array().unwrap() {
        let epoch = case["epoch"].as_u64().unwrap();
        let key = case["key"].as_str().unwrap();
        let key: Vec<u8> = (0..32)
            .map(|i| u8::from_str_radix(&key[2 * i..2 * i + 2], 16).unwrap())
            .collect();
        let salted = |x: &[u8]| {
            let mut input = epoch.to_be_bytes().to_vec();
            input.extend_from_slice(x);
            let digest = blake3::hash(&input);
            u64::from_le_bytes(digest.as_bytes()[..8].try_into().unwrap())
        };
        let kd = salted(&key);
        for (i, score) in case["scores_of_first_4_peers"]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
        {
            let mut z = kd ^ salted(&peer(i as u32));
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            assert_eq!(score.as_str().unwrap(), z.to_string());
        }
    }
}

/// Fraction of `keys` whose winner differs between two peer sets.
fn moved_fraction(
    hrw: &Rendezvous,
    keys: &[[u8; 32]],
    before: &[[u8; 32]],
    after: &[[u8; 32]],
) -> f64 {
    let moved = keys
        .iter()
        .filter(|k| {
            let a = &before[hrw.winner(&k[..], before).unwrap()];
            let b = &after[hrw.winner(&k[..], after).unwrap()];
            a != b
        })
        .count();
    moved as f64 / keys.len() as f64
}

#[test]
fn one_peer_joining_or_leaving_moves_one_nth_of_keys() {
    let hrw = Rendezvous::for_epoch(42);
    let keys: Vec<[u8; 32]> = (0..100_000).map(key).collect();
    for n in [10u32, 50] {
        let peers: Vec<[u8; 32]> = (0..n).map(peer).collect();

        // Leave: only the keys of the departed peer move, 1/N of them.
        let fewer = &peers[1..];
        let leave = moved_fraction(&hrw, &keys, &peers, fewer);
        let expected = 1.0 / f64::from(n);
        println!(
            "N = {n}: one peer leaves, {:.4} of keys move (1/N = {expected:.4})",
            leave
        );
        assert!(
            (leave - expected).abs() <= 0.05 * expected,
            "leave: {leave} vs {expected}"
        );

        // Join: the newcomer takes 1/(N+1) of the keys, and nothing else moves.
        let mut more = peers.clone();
        more.push(peer(1_000));
        let join = moved_fraction(&hrw, &keys, &peers, &more);
        let expected = 1.0 / f64::from(n + 1);
        println!(
            "N = {n}: one peer joins, {:.4} of keys move (1/(N+1) = {expected:.4})",
            join
        );
        assert!(
            (join - expected).abs() <= 0.05 * expected,
            "join: {join} vs {expected}"
        );
        let newcomer_wins = keys
            .iter()
            .filter(|k| more[hrw.winner(&k[..], &more).unwrap()] == peer(1_000))
            .count() as f64
            / keys.len() as f64;
        assert_eq!(newcomer_wins, join, "only keys won by the newcomer move");
    }
}
