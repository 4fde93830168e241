//! Signing keys: PEM and JWK round trips, key sizes, uses, and keys prepared once.

use super::*;

fn entry(alg: SigningAlgorithm, created: u64, signs: u64, retired: Option<u64>) -> KeyEntry {
    KeyEntry {
        key: SigningKey::generate(alg).unwrap().0,
        created_at: created,
        signs_from: signs,
        retired_at: retired,
    }
}

#[test]
fn generated_keys_round_trip_through_pem_with_a_stable_kid() {
    for alg in [
        SigningAlgorithm::ES256,
        SigningAlgorithm::EdDSA,
        SigningAlgorithm::RS256,
    ] {
        let (key, pem) = SigningKey::generate(alg).unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"), "{alg}");
        let again = SigningKey::from_pem(alg, pem.as_bytes()).unwrap();
        assert_eq!(again.kid(), key.kid());
        assert_eq!(key.kid().len(), 43, "base64url SHA-256 thumbprint");
    }
}

#[test]
fn public_jwks_hold_no_private_members() {
    for alg in [
        SigningAlgorithm::ES256,
        SigningAlgorithm::EdDSA,
        SigningAlgorithm::RS256,
    ] {
        let (key, _) = SigningKey::generate(alg).unwrap();
        let jwk = serde_json::to_value(key.public_jwk().unwrap()).unwrap();
        for private in ["d", "p", "q", "dp", "dq", "qi", "k"] {
            assert!(jwk.get(private).is_none(), "{alg} leaks {private}: {jwk}");
        }
        assert_eq!(jwk["kid"], key.kid());
        assert_eq!(jwk["use"], "sig");
        assert_eq!(jwk["alg"], alg.as_str());
    }
    let secret: HmacSecret = HmacSecret::generate_hex().unwrap().parse().unwrap();
    let hs = SigningKey::hmac(SigningAlgorithm::HS256, &secret).unwrap();
    assert!(hs.public_jwk().is_none());
    assert_eq!(
        KeySet::single(hs).jwks(0, 0),
        serde_json::json!({"keys": []})
    );
}

fn public_jwk_of(alg: SigningAlgorithm) -> serde_json::Value {
    let (key, _) = SigningKey::generate(alg).unwrap();
    serde_json::to_value(key.public_jwk().unwrap()).unwrap()
}

fn from_json(alg: SigningAlgorithm, jwk: &serde_json::Value) -> Result<SigningKey> {
    SigningKey::from_public_jwk(alg, &serde_json::from_value(jwk.clone()).unwrap())
}

#[test]
fn a_published_key_for_encryption_never_verifies() {
    let mut jwk = public_jwk_of(SigningAlgorithm::ES256);
    assert!(from_json(SigningAlgorithm::ES256, &jwk).is_ok());
    jwk["use"] = "enc".into();
    assert!(from_json(SigningAlgorithm::ES256, &jwk).is_err());
    jwk.as_object_mut().unwrap().remove("use");
    jwk["key_ops"] = serde_json::json!(["encrypt", "wrapKey"]);
    assert!(from_json(SigningAlgorithm::ES256, &jwk).is_err());
    jwk["key_ops"] = serde_json::json!(["verify"]);
    assert!(from_json(SigningAlgorithm::ES256, &jwk).is_ok());
}

#[test]
fn a_published_rsa_key_under_2048_bits_is_refused() {
    use base64::Engine;
    let mut jwk = public_jwk_of(SigningAlgorithm::RS256);
    assert!(from_json(SigningAlgorithm::RS256, &jwk).is_ok());
    let mut n = vec![0u8; 1 + 256];
    n[1] = 0x80;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    assert_eq!(
        rsa_modulus_bits(&b64(&n)),
        2048,
        "a leading zero byte is no bit"
    );
    jwk["n"] = b64(&n[1..129]).into();
    assert_eq!(rsa_modulus_bits(jwk["n"].as_str().unwrap()), 1024);
    let err = from_json(SigningAlgorithm::RS256, &jwk).unwrap_err();
    assert!(err.to_string().contains("1024 bits"), "{err}");
}

#[test]
fn a_key_of_the_wrong_kind_is_refused() {
    let (_, ec_pem) = SigningKey::generate(SigningAlgorithm::ES256).unwrap();
    assert!(SigningKey::from_pem(SigningAlgorithm::RS256, ec_pem.as_bytes()).is_err());
    assert!(SigningKey::from_pem(SigningAlgorithm::EdDSA, ec_pem.as_bytes()).is_err());
    assert!(SigningKey::from_pem(SigningAlgorithm::ES256, b"not a pem").is_err());
}

#[test]
fn a_new_key_is_published_first_and_signs_after_its_delay() {
    let set = KeySet::new(vec![
        entry(SigningAlgorithm::ES256, 100, 100, None),
        entry(SigningAlgorithm::ES256, 1000, 1600, None),
    ])
    .unwrap();
    let (old, new) = (set.entries[0].key.kid(), set.entries[1].key.kid());
    assert_eq!(set.signer(1200).unwrap().kid(), old);
    assert_eq!(
        set.published(1200, 0).count(),
        2,
        "published before it signs"
    );
    assert_eq!(set.signer(1600).unwrap().kid(), new);
    assert_eq!(set.verifying(Some(old), 1600, 0).unwrap().kid(), old);
    assert!(set.verifying(None, 1600, 0).is_none(), "no kid, two keys");
}

#[test]
fn a_retired_key_verifies_until_its_last_token_expires() {
    let set = KeySet::new(vec![
        entry(SigningAlgorithm::ES256, 100, 100, Some(2000)),
        entry(SigningAlgorithm::ES256, 1000, 1600, None),
    ])
    .unwrap();
    let old = set.entries[0].key.kid().to_owned();
    assert_ne!(set.signer(2000).unwrap().kid(), old);
    assert!(set.verifying(Some(&old), 2000 + 1829, 1830).is_some());
    assert!(set.verifying(Some(&old), 2000 + 1830, 1830).is_none());
    assert_eq!(
        set.jwks(2000 + 1830, 1830)["keys"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn a_fresh_set_signs_with_its_oldest_key_at_once() {
    let set = KeySet::new(vec![entry(SigningAlgorithm::EdDSA, 1000, 1600, None)]).unwrap();
    assert!(set.signer(1000).is_some());
    let all_retired =
        KeySet::new(vec![entry(SigningAlgorithm::EdDSA, 1000, 1000, Some(1500))]).unwrap();
    assert!(all_retired.signer(1500).is_none());
}

/// ES256 and EdDSA keys, ours and those read from a JWKS, verify with a public key
/// parsed once, not once per token.
#[test]
fn elliptic_keys_are_prepared_once() {
    for alg in [SigningAlgorithm::ES256, SigningAlgorithm::EdDSA] {
        let (key, pem) = SigningKey::generate(alg).unwrap();
        assert!(key.public.is_some(), "{alg}");
        let key = SigningKey::from_pem(alg, pem.as_bytes()).unwrap();
        assert!(key.public.is_some(), "{alg} from PEM");
        let published = SigningKey::from_public_jwk(alg, key.public_jwk().unwrap()).unwrap();
        assert!(published.public.is_some(), "{alg} from a JWK");
        let input = b"header.payload";
        let signature = key.sign(input).unwrap();
        published.verify_signature(input, &signature).unwrap();
        let mut forged = signature.into_bytes();
        forged[5] ^= 1;
        let forged = String::from_utf8(forged).unwrap();
        assert!(published.verify_signature(input, &forged).is_err());
    }
}
