//! `causality-node proof verify` and `proof import` on every shared Groth16 vector: each
//! valid case exits 0, each negative case exits non-zero with its reason, by both routes
//! (snarkjs JSON, arkworks compressed bytes) and in the node's own form.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_causality-node");

fn vectors() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../causality-proofshare/tests/vectors/groth16")
}

fn node(args: &[&Path]) -> Output {
    Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn verify(vk: &Path, proof: &Path, public: Option<&Path>) -> (i32, String) {
    let mut args: Vec<&Path> = vec![
        Path::new("proof"),
        Path::new("verify"),
        Path::new("--vk"),
        vk,
        Path::new("--proof"),
        proof,
    ];
    if let Some(public) = public {
        args.extend([Path::new("--public"), public]);
    }
    let out = node(&args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.code().unwrap(), stdout)
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

fn cases() -> Vec<serde_json::Value> {
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(vectors().join("manifest.json")).unwrap())
            .unwrap();
    let cases = manifest["cases"].as_array().unwrap().clone();
    assert!(cases.len() >= 10, "the manifest lists every case");
    cases
}

fn assert_outcome(name: &str, route: &str, valid: bool, (code, stdout): (i32, String)) {
    if valid {
        assert_eq!((code, stdout.as_str()), (0, "valid\n"), "{name} ({route})");
    } else {
        assert_eq!(code, 1, "{name} ({route}): {stdout}");
        let reason = stdout.strip_prefix("invalid: ").unwrap_or_else(|| {
            panic!("{name} ({route}): no reason: {stdout}");
        });
        assert!(reason.trim().len() > 5, "{name} ({route}): {stdout}");
    }
}

#[test]
fn every_vector_by_its_snarkjs_json() {
    let dir = vectors();
    for case in cases() {
        let name = case["name"].as_str().unwrap();
        let file = |key: &str| dir.join(case[key].as_str().unwrap());
        let outcome = verify(&file("vk"), &file("proof"), Some(&file("public")));
        assert_outcome(name, "json", case["valid"].as_bool().unwrap(), outcome);
    }
}

#[test]
fn every_vector_by_its_compressed_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    for case in cases() {
        let name = case["name"].as_str().unwrap();
        let write = |file: &str, bytes: Vec<u8>| {
            let path = tmp.path().join(format!("{name}.{file}"));
            std::fs::write(&path, bytes).unwrap();
            path
        };
        let vk = write("vk", unhex(case["vk_compressed_hex"].as_str().unwrap()));
        let proof = write(
            "proof",
            unhex(case["proof_compressed_hex"].as_str().unwrap()),
        );
        let public = case["public_inputs_compressed_hex"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|h| unhex(h.as_str().unwrap()))
            .collect();
        let public = write("public", public);
        let outcome = verify(&vk, &proof, Some(&public));
        assert_outcome(
            name,
            "compressed",
            case["valid"].as_bool().unwrap(),
            outcome,
        );
    }
}

#[test]
fn reasons_name_what_is_wrong() {
    let dir = vectors();
    let f = |name: &str| dir.join(name);
    let (code, out) = verify(
        &f("verification_key.json"),
        &f("proof_neg_pi_c_x_plus_1.json"),
        Some(&f("public_1.json")),
    );
    assert_eq!(code, 1);
    assert!(out.contains("not on the curve"), "{out}");
    let (code, out) = verify(
        &f("verification_key.json"),
        &f("proof_1.json"),
        Some(&f("public_neg_noncanonical.json")),
    );
    assert_eq!(code, 1);
    assert!(out.contains("not canonical"), "{out}");
    // A bare proof without its public inputs cannot be checked.
    let (code, out) = verify(&f("verification_key.json"), &f("proof_1.json"), None);
    assert_eq!(code, 1);
    assert!(out.contains("--public"), "{out}");
    // A missing file is an error, not a verdict.
    let out = node(&[
        Path::new("proof"),
        Path::new("verify"),
        Path::new("--vk"),
        &f("no-such-key.json"),
        Path::new("--proof"),
        &f("proof_1.json"),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no-such-key.json"),
        "{out:?}"
    );
}

#[test]
fn imported_proofs_verify_in_the_nodes_form_and_name_their_key() {
    let dir = vectors();
    let tmp = tempfile::tempdir().unwrap();
    let import = |proof: &str, public: &str, out: &Path| {
        node(&[
            Path::new("proof"),
            Path::new("import"),
            Path::new("--vk"),
            &dir.join("verification_key.json"),
            Path::new("--proof"),
            &dir.join(proof),
            Path::new("--public"),
            &dir.join(public),
            Path::new("--out"),
            out,
        ])
    };
    let out = import("proof_1.json", "public_1.json", tmp.path());
    assert!(out.status.success(), "{out:?}");
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        printed.starts_with("key   ") && printed.contains("\nproof "),
        "{printed}"
    );
    let key = tmp.path().join("key.bin");
    let proof = tmp.path().join("proof.bin");
    // The proof message carries its public inputs.
    assert_eq!(verify(&key, &proof, None), (0, "valid\n".into()));
    // Given inputs replace them, and a wrong one is caught.
    let (code, out) = verify(&key, &proof, Some(&dir.join("public_neg_modified.json")));
    assert_eq!(code, 1, "{out}");
    // Under another circuit's key the message names the key it is for.
    let (code, out) = verify(
        &dir.join("verification_key_other_circuit.json"),
        &proof,
        None,
    );
    assert_eq!(code, 1);
    assert!(out.contains("the proof is for verification key"), "{out}");

    // A proof that does not verify is not imported, and nothing is written.
    let refused = tmp.path().join("refused");
    let out = import("proof_2.json", "public_1.json", &refused);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not verify"),
        "{out:?}"
    );
    assert!(!refused.exists());
}
