//! End-to-end encryption of payloads to chosen peers, so the nodes that relay them cannot
//! read them.
//!
//! A random content key encrypts the payload once with ChaCha20-Poly1305; the key is wrapped
//! for each recipient with HPKE (RFC 9180, base mode, DHKEM(X25519, HKDF-SHA256),
//! HKDF-SHA256, ChaCha20-Poly1305) to the X25519 form of the recipient's ed25519 peer key.
//! The payload's associated data commits to the recipient list, so dropping, adding or
//! altering a recipient or any byte of the ciphertext makes opening fail. Sealing does not
//! authenticate the sender: send sealed payloads inside a signed envelope or request.

use chacha20poly1305::aead::{Aead as _, KeyInit as _, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hpke::aead::ChaCha20Poly1305 as HpkeChaCha;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, OpModeR, OpModeS, Serializable};
use prost::Message as _;
use rand::{CryptoRng, RngCore};

use crate::error::NetError;
use crate::peer::{Keypair, PeerId};
use crate::proto::v1 as pb;

const INFO: &[u8] = b"causality/sealed/v1";
/// Most recipients one sealed payload may name.
pub const MAX_RECIPIENTS: usize = 256;

type KemPublic = <X25519HkdfSha256 as hpke::Kem>::PublicKey;
type KemPrivate = <X25519HkdfSha256 as hpke::Kem>::PrivateKey;
type KemEncapped = <X25519HkdfSha256 as hpke::Kem>::EncappedKey;

fn x25519_public(peer: &PeerId) -> Result<KemPublic, NetError> {
    let montgomery = peer.verifying_key().to_montgomery();
    KemPublic::from_bytes(montgomery.as_bytes()).map_err(|_| NetError::Seal("bad recipient key"))
}

fn x25519_private(keypair: &Keypair) -> Result<KemPrivate, NetError> {
    KemPrivate::from_bytes(&keypair.signing_key().to_scalar_bytes())
        .map_err(|_| NetError::Seal("bad private key"))
}

fn associated_data(nonce: &[u8], recipients: &[pb::SealedKey]) -> Vec<u8> {
    let mut hasher = blake3::Hasher::new();
    hasher.update(INFO);
    hasher.update(nonce);
    for key in recipients {
        hasher.update(&key.recipient);
        hasher.update(&key.encapsulated);
        hasher.update(&key.wrapped);
    }
    hasher.finalize().as_bytes().to_vec()
}

/// Encrypts `plaintext` so that only `recipients` can read it. Returns the encoded
/// `Sealed` message (see `proto/causality/net/v1/net.proto`).
pub fn seal<R: RngCore + CryptoRng>(
    plaintext: &[u8],
    recipients: &[PeerId],
    rng: &mut R,
) -> Result<Vec<u8>, NetError> {
    if recipients.is_empty() || recipients.len() > MAX_RECIPIENTS {
        return Err(NetError::Seal("between 1 and 256 recipients are required"));
    }
    let mut content_key = [0u8; 32];
    rng.fill_bytes(&mut content_key);
    let mut nonce = [0u8; 12];
    rng.fill_bytes(&mut nonce);
    let mut keys = Vec::with_capacity(recipients.len());
    for recipient in recipients {
        let public = x25519_public(recipient)?;
        let (encapped, wrapped) =
            hpke::single_shot_seal::<HpkeChaCha, HkdfSha256, X25519HkdfSha256, _>(
                &OpModeS::Base,
                &public,
                INFO,
                &content_key,
                recipient.as_bytes(),
                rng,
            )
            .map_err(|_| NetError::Seal("key wrapping failed"))?;
        keys.push(pb::SealedKey {
            recipient: recipient.as_bytes().to_vec(),
            encapsulated: encapped.to_bytes().to_vec(),
            wrapped,
        });
    }
    let aad = associated_data(&nonce, &keys);
    let ciphertext = ChaCha20Poly1305::new(Key::from_slice(&content_key))
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad: &aad,
            },
        )
        .map_err(|_| NetError::Seal("encryption failed"))?;
    Ok(pb::Sealed {
        keys,
        nonce: nonce.to_vec(),
        ciphertext,
    }
    .encode_to_vec())
}

/// Decrypts a payload sealed to `keypair`'s peer id. Fails when this peer is not a
/// recipient or when anything was altered.
pub fn open(sealed: &[u8], keypair: &Keypair) -> Result<Vec<u8>, NetError> {
    let sealed = pb::Sealed::decode(sealed).map_err(|_| NetError::Seal("malformed"))?;
    if sealed.keys.len() > MAX_RECIPIENTS || sealed.nonce.len() != 12 {
        return Err(NetError::Seal("malformed"));
    }
    let me = keypair.peer_id();
    let entry = sealed
        .keys
        .iter()
        .find(|k| k.recipient == me.as_bytes())
        .ok_or(NetError::Seal("not a recipient"))?;
    let encapped =
        KemEncapped::from_bytes(&entry.encapsulated).map_err(|_| NetError::Seal("malformed"))?;
    let content_key = hpke::single_shot_open::<HpkeChaCha, HkdfSha256, X25519HkdfSha256>(
        &OpModeR::Base,
        &x25519_private(keypair)?,
        &encapped,
        INFO,
        &entry.wrapped,
        me.as_bytes(),
    )
    .map_err(|_| NetError::Seal("tampered or not for us"))?;
    if content_key.len() != 32 {
        return Err(NetError::Seal("malformed"));
    }
    let aad = associated_data(&sealed.nonce, &sealed.keys);
    ChaCha20Poly1305::new(Key::from_slice(&content_key))
        .decrypt(
            Nonce::from_slice(&sealed.nonce),
            Payload {
                msg: &sealed.ciphertext,
                aad: &aad,
            },
        )
        .map_err(|_| NetError::Seal("tampered"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn recipients_open_others_cannot_and_tampering_is_caught() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(7);
        let (a, b, eve) = (
            Keypair::from_index(1),
            Keypair::from_index(2),
            Keypair::from_index(3),
        );
        let sealed = seal(b"secret terms", &[a.peer_id(), b.peer_id()], &mut rng).unwrap();
        assert_eq!(open(&sealed, &a).unwrap(), b"secret terms");
        assert_eq!(open(&sealed, &b).unwrap(), b"secret terms");
        assert!(open(&sealed, &eve).is_err());
        assert!(!sealed.windows(12).any(|w| w == b"secret terms"));
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x40;
            assert!(open(&bad, &a).is_err(), "byte {i} altered was accepted");
        }
    }
}
