//! The verifier against the attack catalogue: forged, tampered, mistyped and malformed tokens.

use super::*;
use crate::clock::ManualClock;
use crate::token::{Grant, Issuer, now_unix};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::time::Duration;

use crate::Error;

const SECRET: &str = "4f1c0f9a7d6e8b2c3a5d7e9f1b3c5d7e9a1b3c5d7e9f1a2b3c4d5e6f7a8b9c0d";
const ISS: &str = "https://keygate.test";

fn secret() -> HmacSecret {
    SECRET.parse().unwrap()
}

fn policy() -> TokenPolicy {
    TokenPolicy {
        issuer: ISS.into(),
        audience: vec!["api".into()],
        ttl: Duration::from_secs(1800),
        leeway: Duration::from_secs(30),
    }
}

fn pair() -> (Issuer, Verifier) {
    (
        Issuer::hmac(SigningAlgorithm::HS256, &secret(), policy()).unwrap(),
        Verifier::hmac(SigningAlgorithm::HS256, &secret(), policy()).unwrap(),
    )
}

fn grant() -> Grant<'static> {
    Grant {
        subject: "billing",
        client_id: "billing",
        role: "service",
        scopes: &[],
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Signs arbitrary header and payload JSON with the real secret: only the checks
/// after the signature can refuse these.
fn forge(header: &str, payload: &str, key: &[u8]) -> String {
    let input = format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()));
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(input.as_bytes());
    format!("{input}.{}", b64(&mac.finalize().into_bytes()))
}

fn payload_with(now: u64, overrides: &str) -> String {
    let base = serde_json::json!({
        "iss": ISS, "sub": "billing", "aud": "api", "exp": now + 600, "iat": now,
        "nbf": now, "jti": "j1", "client_id": "billing", "role": "service", "scope": ""
    });
    let mut obj = base.as_object().unwrap().clone();
    let extra: serde_json::Value = serde_json::from_str(overrides).unwrap();
    for (k, v) in extra.as_object().unwrap() {
        if v.is_null() {
            obj.remove(k);
        } else {
            obj.insert(k.clone(), v.clone());
        }
    }
    serde_json::Value::Object(obj).to_string()
}

const HS256_HEADER: &str = r#"{"alg":"HS256","typ":"at+jwt"}"#;

#[test]
fn issued_token_verifies_with_all_claims() {
    let (issuer, verifier) = pair();
    let scopes = vec!["orders:read".to_owned(), "orders:write".to_owned()];
    let g = Grant {
        scopes: &scopes,
        ..grant()
    };
    let issued = issuer.issue(&g).unwrap();
    let claims = verifier.verify(&issued.token).unwrap();
    assert_eq!(claims, issued.claims);
    assert_eq!(claims.scope, "orders:read orders:write");
    assert_eq!(claims.exp - claims.iat, 1800);
    assert_eq!(claims.jti.len(), 22);
    let header = jsonwebtoken::decode_header(&issued.token).unwrap();
    assert_eq!(header.typ.as_deref(), Some("at+jwt"));
    assert_eq!(header.kid.as_deref().map(str::len), Some(16));
}

#[test]
fn forged_but_correctly_signed_token_passes_the_helper_sanity_check() {
    let (_, verifier) = pair();
    let now = now_unix();
    let t = forge(HS256_HEADER, &payload_with(now, "{}"), SECRET.as_bytes());
    verifier.verify(&t).unwrap();
    let upper = forge(
        r#"{"alg":"HS256","typ":"application/AT+JWT"}"#,
        &payload_with(now, "{}"),
        SECRET.as_bytes(),
    );
    verifier.verify(&upper).unwrap();
}

#[test]
fn alg_none_in_every_casing_is_refused() {
    let (issuer, verifier) = pair();
    let good = issuer.issue(&grant()).unwrap().token;
    let payload = good.split('.').nth(1).unwrap();
    for alg in ["none", "None", "NONE", "nOnE"] {
        let h = b64(format!(r#"{{"alg":"{alg}","typ":"at+jwt"}}"#).as_bytes());
        for t in [format!("{h}.{payload}."), format!("{h}.{payload}")] {
            assert!(verifier.verify(&t).is_err(), "{alg}: {t}");
        }
    }
}

#[test]
fn other_algorithms_are_refused_even_with_a_valid_mac() {
    let (_, verifier) = pair();
    let now = now_unix();
    for alg in [
        "HS384", "HS512", "hs256", "HS256 ", "", "RS256", "ES256", "EdDSA",
    ] {
        let t = forge(
            &format!(r#"{{"alg":"{alg}","typ":"at+jwt"}}"#),
            &payload_with(now, "{}"),
            SECRET.as_bytes(),
        );
        assert!(
            matches!(
                verifier.verify(&t),
                Err(Error::Token(TokenError::WrongAlgorithm))
            ),
            "{alg}"
        );
    }
}

#[test]
fn tampered_payload_is_refused() {
    let (issuer, verifier) = pair();
    let good = issuer.issue(&grant()).unwrap().token;
    let parts: Vec<&str> = good.split('.').collect();
    let now = now_unix();
    let evil = b64(payload_with(now, r#"{"role":"admin"}"#).as_bytes());
    let t = format!("{}.{}.{}", parts[0], evil, parts[2]);
    assert!(matches!(
        verifier.verify(&t),
        Err(Error::Token(TokenError::InvalidSignature))
    ));
}

#[test]
fn wrong_secret_blank_key_and_stripped_signature_are_refused() {
    let (_, verifier) = pair();
    let now = now_unix();
    let p = payload_with(now, "{}");
    let other = "9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b";
    for key in [other.as_bytes(), b"", b"\0"] {
        let t = forge(HS256_HEADER, &p, key);
        assert!(matches!(
            verifier.verify(&t),
            Err(Error::Token(TokenError::InvalidSignature))
        ));
    }
    let t = forge(HS256_HEADER, &p, SECRET.as_bytes());
    let (unsigned, sig) = t.rsplit_once('.').unwrap();
    assert!(verifier.verify(&format!("{unsigned}.")).is_err());
    assert!(verifier.verify(&format!("{unsigned}.AA")).is_err());
    assert!(
        verifier
            .verify(&format!("{unsigned}.{}", &sig[1..]))
            .is_err()
    );
}

#[test]
fn expiry_honours_the_leeway_exactly() {
    let (_, verifier) = pair();
    let now = now_unix();
    let within = forge(
        HS256_HEADER,
        &payload_with(
            now,
            &format!(r#"{{"exp":{},"iat":{}}}"#, now - 29, now - 100),
        ),
        SECRET.as_bytes(),
    );
    verifier.verify(&within).unwrap();
    let beyond = forge(
        HS256_HEADER,
        &payload_with(
            now,
            &format!(r#"{{"exp":{},"iat":{}}}"#, now - 31, now - 100),
        ),
        SECRET.as_bytes(),
    );
    assert!(matches!(
        verifier.verify(&beyond),
        Err(Error::Token(TokenError::Expired))
    ));
}

#[test]
fn future_nbf_and_iat_are_refused() {
    let (_, verifier) = pair();
    let now = now_unix();
    let nbf = forge(
        HS256_HEADER,
        &payload_with(now, &format!(r#"{{"nbf":{}}}"#, now + 60)),
        SECRET.as_bytes(),
    );
    assert!(matches!(
        verifier.verify(&nbf),
        Err(Error::Token(TokenError::NotYetValid))
    ));
    let iat = forge(
        HS256_HEADER,
        &payload_with(now, &format!(r#"{{"iat":{}}}"#, now + 60)),
        SECRET.as_bytes(),
    );
    assert!(matches!(
        verifier.verify(&iat),
        Err(Error::Token(TokenError::IssuedInFuture))
    ));
}

#[test]
fn a_signed_token_living_longer_than_a_day_is_refused() {
    let (_, verifier) = pair();
    let now = now_unix();
    let forever = forge(
        HS256_HEADER,
        &payload_with(now, r#"{"exp":4102444800}"#),
        SECRET.as_bytes(),
    );
    assert!(matches!(
        verifier.verify(&forever),
        Err(Error::Token(TokenError::LifetimeTooLong))
    ));
    let backwards = forge(
        HS256_HEADER,
        &payload_with(
            now,
            &format!(r#"{{"exp":{},"iat":{}}}"#, now + 10, now + 20),
        ),
        SECRET.as_bytes(),
    );
    assert!(verifier.verify(&backwards).is_err());
    let one_day = forge(
        HS256_HEADER,
        &payload_with(now, &format!(r#"{{"exp":{}}}"#, now + 86_400)),
        SECRET.as_bytes(),
    );
    verifier.verify(&one_day).unwrap();
}

#[test]
fn an_all_zero_ecdsa_signature_is_refused() {
    // CVE-2022-21449 ("psychic signatures"): r = s = 0.
    let (issuer, verifier, _) = asymmetric(SigningAlgorithm::ES256);
    let good = issuer.issue(&grant()).unwrap().token;
    let (unsigned, _) = good.rsplit_once('.').unwrap();
    let zero = format!("{unsigned}.{}", b64(&[0u8; 64]));
    assert!(matches!(
        verifier.verify(&zero),
        Err(Error::Token(TokenError::InvalidSignature))
    ));
}

#[test]
fn wrong_type_and_crit_are_refused() {
    let (_, verifier) = pair();
    let p = payload_with(now_unix(), "{}");
    for h in [
        r#"{"alg":"HS256"}"#,
        r#"{"alg":"HS256","typ":"JWT"}"#,
        r#"{"alg":"HS256","typ":"logout+jwt"}"#,
    ] {
        let t = forge(h, &p, SECRET.as_bytes());
        assert!(
            matches!(
                verifier.verify(&t),
                Err(Error::Token(TokenError::WrongType))
            ),
            "{h}"
        );
    }
    let t = forge(
        r#"{"alg":"HS256","typ":"at+jwt","crit":["x-unknown"],"x-unknown":1}"#,
        &p,
        SECRET.as_bytes(),
    );
    assert!(matches!(
        verifier.verify(&t),
        Err(Error::Token(TokenError::UnsupportedCritical))
    ));
    let t = forge(
        r#"{"alg":"HS256","typ":"at+jwt","zip":"DEF"}"#,
        &p,
        SECRET.as_bytes(),
    );
    assert!(verifier.verify(&t).is_err());
}

#[test]
fn crit_zip_and_enc_are_refused_even_when_null() {
    // `"crit": null` is a `crit` member all the same (RFC 7515 §4.1.11): refused, never
    // read as absent. The fuzz target `token` holds the input in its corpus.
    let (_, verifier) = pair();
    let p = payload_with(now_unix(), "{}");
    for member in ["crit", "zip", "enc"] {
        let h = format!(r#"{{"alg":"HS256","typ":"at+jwt","{member}":null}}"#);
        let t = forge(&h, &p, SECRET.as_bytes());
        assert!(verifier.verify(&t).is_err(), "{h}");
    }
    let t = forge(
        r#"{"alg":"HS256","typ":"at+jwt","crit":null}"#,
        &p,
        SECRET.as_bytes(),
    );
    assert!(matches!(
        verifier.verify(&t),
        Err(Error::Token(TokenError::UnsupportedCritical))
    ));
}

#[test]
fn issuer_and_audience_must_match_exactly() {
    let (_, verifier) = pair();
    let now = now_unix();
    for o in [
        r#"{"iss":"https://keygate.test/"}"#,
        r#"{"iss":"https://keygate"}"#,
        r#"{"iss":["https://keygate.test"]}"#,
        r#"{"aud":"other-api"}"#,
        r#"{"aud":["other-api"]}"#,
        r#"{"aud":"API"}"#,
        r#"{"aud":null}"#,
        r#"{"iss":null}"#,
    ] {
        let t = forge(HS256_HEADER, &payload_with(now, o), SECRET.as_bytes());
        assert!(verifier.verify(&t).is_err(), "{o}");
    }
    let t = forge(
        HS256_HEADER,
        &payload_with(now, r#"{"aud":["api","other-api"]}"#),
        SECRET.as_bytes(),
    );
    verifier.verify(&t).unwrap();
}

/// docs/security.md, Audience: with no audience configured, a token that names one is meant for someone
/// else and is refused; a token without `aud` is accepted.
#[test]
fn with_no_audience_configured_tokens_naming_one_are_refused() {
    let secret: HmacSecret = SECRET.parse().unwrap();
    let mut policy = policy();
    policy.audience.clear();
    let verifier = Verifier::hmac(SigningAlgorithm::HS256, &secret, policy).unwrap();
    let now = now_unix();
    for aud in [r#"{"aud":"api"}"#, r#"{"aud":["api"]}"#, r#"{"aud":[]}"#] {
        let t = forge(HS256_HEADER, &payload_with(now, aud), SECRET.as_bytes());
        assert!(
            matches!(
                verifier.verify(&t),
                Err(Error::Token(TokenError::BadClaim(_)))
            ),
            "{aud}"
        );
    }
    let t = forge(
        HS256_HEADER,
        &payload_with(now, r#"{"aud":null}"#),
        SECRET.as_bytes(),
    );
    verifier.verify(&t).unwrap();
}

#[test]
fn wrongly_typed_or_missing_claims_are_refused() {
    let (_, verifier) = pair();
    let now = now_unix();
    for o in [
        r#"{"exp":"99999999999"}"#,
        r#"{"nbf":"99999999999"}"#,
        r#"{"exp":true}"#,
        r#"{"exp":1.5}"#,
        r#"{"exp":-1}"#,
        r#"{"exp":18446744073709551616}"#,
        r#"{"exp":null}"#,
        r#"{"sub":null}"#,
        r#"{"jti":null}"#,
        r#"{"jti":""}"#,
        r#"{"iat":null}"#,
        r#"{"client_id":null}"#,
        r#"{"role":null}"#,
    ] {
        let t = forge(HS256_HEADER, &payload_with(now, o), SECRET.as_bytes());
        assert!(verifier.verify(&t).is_err(), "{o}");
    }
}

#[test]
fn duplicate_members_are_refused() {
    let (_, verifier) = pair();
    let now = now_unix();
    let p = payload_with(now, "{}");
    let dup_payload = p.replacen(
        r#""role":"service""#,
        r#""role":"service","role":"admin""#,
        1,
    );
    let t = forge(HS256_HEADER, &dup_payload, SECRET.as_bytes());
    assert!(verifier.verify(&t).is_err());
    let t = forge(
        r#"{"alg":"HS256","alg":"none","typ":"at+jwt"}"#,
        &p,
        SECRET.as_bytes(),
    );
    assert!(verifier.verify(&t).is_err());
}

#[test]
fn malformed_encodings_are_refused() {
    let (issuer, verifier) = pair();
    let good = issuer.issue(&grant()).unwrap().token;
    let parts: Vec<&str> = good.split('.').collect();
    let cases = [
        String::new(),
        ".".into(),
        "..".into(),
        "...".into(),
        parts[0].into(),
        format!("{}.{}", parts[0], parts[1]),
        format!("{good}.extra"),
        format!("{good}.a.b"),
        good.replace('.', "%2E"),
        format!("{}=.{}.{}", parts[0], parts[1], parts[2]),
        format!("{} .{}.{}", parts[0], parts[1], parts[2]),
        format!("{}.{}.{}", b64(b"\xff\xfe{}"), parts[1], parts[2]),
        format!("{}.{}.{}", b64(b"[]"), parts[1], parts[2]),
        format!("{}.{}.{}", parts[0], b64(b"\"str\""), parts[2]),
        "x".repeat(MAX_TOKEN_LEN + 1),
    ];
    for t in &cases {
        assert!(verifier.verify(t).is_err(), "{t}");
    }
}

#[test]
fn deep_nesting_does_not_overflow() {
    let (_, verifier) = pair();
    let deep = format!("{}1{}", "{\"a\":".repeat(2000), "}".repeat(2000));
    let t = forge(HS256_HEADER, &deep, SECRET.as_bytes());
    assert!(verifier.verify(&t).is_err());
}

#[test]
fn jku_and_embedded_jwk_headers_are_not_key_sources() {
    let (_, verifier) = pair();
    let now = now_unix();
    let attacker = "attacker-controlled-secret-of-32-bytes-or-more!";
    let t = forge(
        r#"{"alg":"HS256","typ":"at+jwt","jku":"http://127.0.0.1:1/jwks.json","jwk":{"kty":"oct","k":"YXR0YWNrZXI"}}"#,
        &payload_with(now, "{}"),
        attacker.as_bytes(),
    );
    assert!(matches!(
        verifier.verify(&t),
        Err(Error::Token(TokenError::InvalidSignature))
    ));
}

#[test]
fn single_bit_flips_anywhere_are_refused() {
    let (issuer, verifier) = pair();
    let good = issuer.issue(&grant()).unwrap().token;
    let bytes = good.as_bytes();
    for i in 0..bytes.len() {
        for bit in [1u8, 2, 4, 8, 16, 32, 64] {
            let mut v = bytes.to_vec();
            v[i] ^= bit;
            if let Ok(s) = String::from_utf8(v)
                && s != good
            {
                assert!(verifier.verify(&s).is_err(), "flip {i}/{bit}: {s}");
            }
        }
    }
}

fn asymmetric(alg: SigningAlgorithm) -> (Issuer, Verifier, String) {
    let (key, pem) = SigningKey::generate(alg).unwrap();
    let keys = Arc::new(KeySet::single(key));
    (
        Issuer::new(keys.clone(), policy()),
        Verifier::new(alg, keys, policy()),
        pem,
    )
}

#[test]
fn es256_eddsa_and_rs256_round_trip_with_their_kid() {
    for alg in [
        SigningAlgorithm::ES256,
        SigningAlgorithm::EdDSA,
        SigningAlgorithm::RS256,
    ] {
        let (issuer, verifier, _) = asymmetric(alg);
        let t = issuer.issue(&grant()).unwrap().token;
        verifier.verify(&t).unwrap();
        let header = jsonwebtoken::decode_header(&t).unwrap();
        assert_eq!(
            header.kid.as_deref(),
            issuer.keys().signer(now_unix()).map(SigningKey::kid)
        );
        let (other_issuer, _, _) = asymmetric(alg);
        let foreign = other_issuer.issue(&grant()).unwrap().token;
        assert!(
            matches!(
                verifier.verify(&foreign),
                Err(Error::Token(TokenError::UnknownKeyId))
            ),
            "{alg}"
        );
    }
}

#[test]
fn hs256_signed_with_the_public_key_is_refused() {
    for alg in [
        SigningAlgorithm::ES256,
        SigningAlgorithm::EdDSA,
        SigningAlgorithm::RS256,
    ] {
        let (issuer, verifier, _) = asymmetric(alg);
        let key = issuer.keys().signer(now_unix()).unwrap();
        let jwk = serde_json::to_string(key.public_jwk().unwrap()).unwrap();
        let kid = key.kid();
        let header = format!(r#"{{"alg":"HS256","typ":"at+jwt","kid":"{kid}"}}"#);
        for secret in [jwk.as_bytes(), kid.as_bytes()] {
            let t = forge(&header, &payload_with(now_unix(), "{}"), secret);
            assert!(
                matches!(
                    verifier.verify(&t),
                    Err(Error::Token(TokenError::WrongAlgorithm))
                ),
                "{alg}"
            );
        }
    }
}

#[test]
fn an_embedded_jwk_does_not_replace_our_keys() {
    let (issuer, verifier, _) = asymmetric(SigningAlgorithm::ES256);
    let (attacker_key, attacker_pem) = SigningKey::generate(SigningAlgorithm::ES256).unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.typ = Some("at+jwt".into());
    header.kid = Some(issuer.keys().signer(now_unix()).unwrap().kid().to_owned());
    header.jwk = attacker_key.public_jwk().cloned();
    header.jku = Some("http://127.0.0.1:9/jwks.json".into());
    header.x5u = Some("http://127.0.0.1:9/cert.pem".into());
    let claims: Claims = serde_json::from_str(&payload_with(now_unix(), "{}")).unwrap();
    let enc = jsonwebtoken::EncodingKey::from_ec_pem(attacker_pem.as_bytes()).unwrap();
    let t = jsonwebtoken::encode(&header, &claims, &enc).unwrap();
    assert!(matches!(
        verifier.verify(&t),
        Err(Error::Token(TokenError::InvalidSignature))
    ));
}

#[test]
fn hs384_and_hs512_round_trip() {
    for alg in [SigningAlgorithm::HS384, SigningAlgorithm::HS512] {
        let issuer = Issuer::hmac(alg, &secret(), policy()).unwrap();
        let verifier = Verifier::hmac(alg, &secret(), policy()).unwrap();
        let t = issuer.issue(&grant()).unwrap().token;
        verifier.verify(&t).unwrap();
        let hs256 = Verifier::hmac(SigningAlgorithm::HS256, &secret(), policy()).unwrap();
        assert!(matches!(
            hs256.verify(&t),
            Err(Error::Token(TokenError::WrongAlgorithm))
        ));
    }
}

/// `verify` and `issue` read their clocks: a token is accepted from `nbf - leeway` to
/// `exp + leeway` by the verifier's clock, both ends included, and refused a second
/// outside.
#[test]
fn time_is_read_from_the_issuers_and_the_verifiers_clock() {
    const NOW: u64 = 1_800_000_000;
    let clock = ManualClock::at_ms(NOW * 1000);
    let issuer = Issuer::hmac(SigningAlgorithm::HS256, &secret(), policy())
        .unwrap()
        .with_clock(clock.clock());
    let verifier = Verifier::hmac(SigningAlgorithm::HS256, &secret(), policy())
        .unwrap()
        .with_clock(clock.clock());
    let issued = issuer.issue(&grant()).unwrap();
    assert_eq!((issued.claims.iat, issued.claims.exp), (NOW, NOW + 1800));
    let later = forge(
        HS256_HEADER,
        &payload_with(NOW, &format!(r#"{{"nbf": {}}}"#, NOW + 100)),
        SECRET.as_bytes(),
    );
    assert!(matches!(
        verifier.verify(&later),
        Err(Error::Token(TokenError::NotYetValid))
    ));
    clock.advance(Duration::from_secs(70));
    verifier.verify(&later).unwrap();
    clock.advance(Duration::from_secs(1800 + 30 - 70));
    verifier.verify(&issued.token).unwrap();
    clock.advance(Duration::from_secs(1));
    assert!(matches!(
        verifier.verify(&issued.token),
        Err(Error::Token(TokenError::Expired))
    ));
}
