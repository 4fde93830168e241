use std::error::Error as _;

use super::*;
use crate::password::PasswordHash;
use crate::token::SigningKey;

fn jwt_error() -> jsonwebtoken::errors::Error {
    jsonwebtoken::errors::ErrorKind::InvalidKeyFormat.into()
}

#[cfg(feature = "jwks")]
fn json_error() -> serde_json::Error {
    serde_json::from_str::<u8>("x").unwrap_err()
}

#[cfg(feature = "jwks")]
fn reqwest_error() -> reqwest::Error {
    reqwest::Client::new()
        .get("http://[::1")
        .build()
        .unwrap_err()
}

/// One error of every variant, with the label `reason()` gave it before the variants
/// were grouped: the labels are Prometheus label values and audit fields, and must not
/// change. A variant added to `Error` or a group is added here too.
fn every_variant() -> Vec<(Error, &'static str)> {
    // Extended below with the JWKS variants when that feature is on.
    #[cfg_attr(not(feature = "jwks"), allow(unused_mut))]
    let mut all: Vec<(Error, &'static str)> = vec![
        (TokenError::Malformed("x").into(), "malformed"),
        (TokenError::TooLong.into(), "too_long"),
        (TokenError::WrongAlgorithm.into(), "wrong_algorithm"),
        (TokenError::InvalidSignature.into(), "invalid_signature"),
        (TokenError::WrongType.into(), "wrong_type"),
        (TokenError::UnsupportedCritical.into(), "crit"),
        (TokenError::Expired.into(), "expired"),
        (TokenError::NotYetValid.into(), "not_yet_valid"),
        (TokenError::IssuedInFuture.into(), "issued_in_future"),
        (TokenError::LifetimeTooLong.into(), "lifetime"),
        (TokenError::WrongIssuer.into(), "wrong_issuer"),
        (TokenError::WrongAudience.into(), "wrong_audience"),
        (TokenError::BadClaim("aud").into(), "bad_claim"),
        (TokenError::UnknownKeyId.into(), "unknown_kid"),
        (TokenError::Revoked.into(), "revoked"),
        (CredentialError::MalformedKey.into(), "malformed_key"),
        (CredentialError::Wrong.into(), "wrong_credential"),
        (CredentialError::Expired.into(), "credential_expired"),
        (
            CredentialError::PasswordTooLong(72).into(),
            "password_too_long",
        ),
        (CredentialError::HashingBusy.into(), "hashing_busy"),
        (
            KeyError::Pem {
                algorithm: SigningAlgorithm::ES256,
                source: jwt_error(),
            }
            .into(),
            "bad_key",
        ),
        (
            KeyError::NotAsymmetric(SigningAlgorithm::HS256).into(),
            "bad_key",
        ),
        (
            KeyError::RsaTooShort {
                kid: None,
                bits: 1024,
            }
            .into(),
            "bad_key",
        ),
        (
            KeyError::Unusable {
                action: "derive the public key",
                source: jwt_error(),
            }
            .into(),
            "bad_key",
        ),
        (KeyError::Mismatched.into(), "bad_key"),
        (
            KeyError::Jwk {
                kid: None,
                problem: "has no `kid`",
            }
            .into(),
            "bad_key",
        ),
        (
            KeyError::JwkAlgorithm {
                found: "RS256".into(),
                expected: SigningAlgorithm::ES256,
            }
            .into(),
            "bad_key",
        ),
        (
            KeyError::JwkUnusable {
                kid: "k".into(),
                source: jwt_error(),
            }
            .into(),
            "bad_key",
        ),
        (KeyError::DuplicateKid("k".into()).into(), "bad_key"),
        (KeyError::WeakSecret("is weak").into(), "weak_secret"),
        (KeyError::ShortSecret(12).into(), "weak_secret"),
        (
            KeyError::BadHash("malformed bcrypt hash").into(),
            "bad_hash",
        ),
        (
            KeyError::Argon2 {
                what: "hash",
                source: argon2::password_hash::Error::Algorithm,
            }
            .into(),
            "bad_hash",
        ),
        (KeyError::Argon2Variant("argon2i".into()).into(), "bad_hash"),
        (
            KeyError::Argon2RepeatedParameter("p".into()).into(),
            "bad_hash",
        ),
        (KeyError::Argon2Memory(u32::MAX).into(), "bad_hash"),
        (KeyError::Argon2Iterations(11).into(), "bad_hash"),
        (KeyError::Argon2Parallelism(17).into(), "bad_hash"),
        (KeyError::Argon2TooWeak { m: 1, t: 1 }.into(), "bad_hash"),
        (KeyError::BcryptCost(4).into(), "bad_hash"),
        (
            SigningError::NotHmac(SigningAlgorithm::ES256).into(),
            "signing",
        ),
        (SigningError::Lifetime.into(), "signing"),
        (SigningError::NoActiveKey.into(), "signing"),
        (SigningError::PublicOnly.into(), "signing"),
        (SigningError::Sign(jwt_error()).into(), "signing"),
        (
            SigningError::Generate {
                algorithm: SigningAlgorithm::EdDSA,
                source: aws_lc_rs::error::Unspecified,
            }
            .into(),
            "signing",
        ),
        (
            SigningError::HashPassword(argon2::password_hash::Error::Password).into(),
            "signing",
        ),
        (Error::Random(getrandom::Error::UNSUPPORTED), "signing"),
        (
            Error::ThreadSpawn(std::io::Error::other("no threads")),
            "signing",
        ),
        (
            StoreError::Unavailable(Box::new(std::io::Error::other("refused"))).into(),
            "store_unavailable",
        ),
        (
            StoreError::Timeout(Duration::from_secs(1)).into(),
            "store_unavailable",
        ),
        (
            StoreError::UnexpectedAnswer("the quota script").into(),
            "store_unavailable",
        ),
    ];
    #[cfg(feature = "jwks")]
    {
        let url = || "https://auth.example.com/.well-known/jwks.json".to_owned();
        all.extend([
            (
                JwksError::Request {
                    url: url(),
                    source: reqwest_error(),
                }
                .into(),
                "jwks_unavailable",
            ),
            (
                JwksError::Status {
                    url: url(),
                    status: reqwest::StatusCode::NOT_FOUND,
                }
                .into(),
                "jwks_unavailable",
            ),
            (
                JwksError::TooLarge { url: url() }.into(),
                "jwks_unavailable",
            ),
            (
                JwksError::NotJwks {
                    url: url(),
                    source: json_error(),
                }
                .into(),
                "jwks_unavailable",
            ),
            (
                JwksError::NoUsableKey {
                    url: url(),
                    algorithm: SigningAlgorithm::ES256,
                }
                .into(),
                "jwks_unavailable",
            ),
            (JwksError::NoAnswer.into(), "jwks_unavailable"),
            (
                JwksError::Refresh(std::sync::Arc::new(
                    JwksError::TooLarge { url: url() }.into(),
                ))
                .into(),
                "jwks_unavailable",
            ),
            (TlsError::RootNotPem(None).into(), "bad_certificate"),
            (TlsError::Client(reqwest_error()).into(), "bad_certificate"),
        ]);
    }
    all
}

#[test]
fn every_variant_keeps_its_reason_label() {
    for (error, label) in every_variant() {
        assert_eq!(error.reason(), label, "{error:?}");
        assert!(!error.to_string().is_empty(), "{error:?}");
    }
}

#[test]
fn the_labels_are_the_27_of_before_and_no_other() {
    let mut labels: Vec<&str> = every_variant().iter().map(|(e, _)| e.reason()).collect();
    labels.sort_unstable();
    labels.dedup();
    let mut before = vec![
        "malformed",
        "too_long",
        "wrong_algorithm",
        "invalid_signature",
        "wrong_type",
        "crit",
        "expired",
        "not_yet_valid",
        "issued_in_future",
        "lifetime",
        "wrong_issuer",
        "wrong_audience",
        "bad_claim",
        "unknown_kid",
        "revoked",
        "malformed_key",
        "wrong_credential",
        "credential_expired",
        "password_too_long",
        "hashing_busy",
        "bad_hash",
        "bad_key",
        "weak_secret",
        "signing",
        "store_unavailable",
    ];
    if cfg!(feature = "jwks") {
        before.extend(["jwks_unavailable", "bad_certificate"]);
    }
    before.sort_unstable();
    assert_eq!(labels, before);
}

/// An error that wraps another library's or the system's failure gives it as `source()`,
/// and its own text does not repeat it (so a chain prints each cause once).
#[test]
fn a_wrapped_failure_is_the_source_not_part_of_the_text() {
    let mut wrapped = 0;
    for (error, _) in every_variant() {
        let Some(source) = error.source() else {
            continue;
        };
        wrapped += 1;
        let text = error.to_string();
        assert!(!text.contains(&source.to_string()), "{text}");
        assert_eq!(chain(&error), format!("{text}: {}", chain(source)));
    }
    let expected = if cfg!(feature = "jwks") { 13 } else { 10 };
    assert_eq!(wrapped, expected);
}

#[test]
fn a_pem_that_does_not_parse_keeps_the_readers_error() {
    let error = SigningKey::from_pem(SigningAlgorithm::ES256, b"not a pem").unwrap_err();
    assert!(
        matches!(error, Error::Key(KeyError::Pem { .. })),
        "{error:?}"
    );
    let source = error.source().expect("the PEM reader's error");
    assert!(
        source
            .downcast_ref::<jsonwebtoken::errors::Error>()
            .is_some()
    );
    assert_eq!(error.to_string(), "not a ES256 private key in PEM");
    assert!(chain(&error).starts_with("not a ES256 private key in PEM: "));
}

#[test]
fn a_malformed_argon2_hash_keeps_the_argon2_error() {
    let error = "$argon2id$v=19$m=19456,t=2,p=1$!!$aGFzaA"
        .parse::<PasswordHash>()
        .unwrap_err();
    assert!(
        matches!(error, Error::Key(KeyError::Argon2 { what: "hash", .. })),
        "{error:?}"
    );
    assert_eq!(error.reason(), "bad_hash");
    let source = error.source().expect("argon2's error");
    assert!(
        source
            .downcast_ref::<argon2::password_hash::Error>()
            .is_some()
    );
}

#[test]
fn a_shared_jwks_failure_reads_as_the_failure_itself() {
    #[cfg(feature = "jwks")]
    {
        let inner: Error = JwksError::NotJwks {
            url: "u".into(),
            source: json_error(),
        }
        .into();
        let inner_text = chain(&inner);
        let shared: Error = JwksError::Refresh(std::sync::Arc::new(inner)).into();
        assert_eq!(chain(&shared), inner_text);
    }
}

#[test]
fn texts_say_what_happened() {
    for (error, text) in [
        (
            Error::from(KeyError::RsaTooShort {
                kid: Some("k1".into()),
                bits: 1024,
            }),
            "JWK `k1`: RSA key of 1024 bits; at least 2048 are required",
        ),
        (
            KeyError::Jwk {
                kid: Some("k1".into()),
                problem: "is not for signatures",
            }
            .into(),
            "JWK `k1` is not for signatures",
        ),
        (
            KeyError::ShortSecret(12).into(),
            "is 12 bytes; at least 32 are required (generate one with `keygate secret`)",
        ),
        (
            KeyError::Argon2Iterations(11).into(),
            "argon2 iterations t=11 are above the limit t<=10: one check would take over a second",
        ),
        (
            SigningError::Lifetime.into(),
            "a token lifetime must be between 1s and 86400s",
        ),
        (
            StoreError::Timeout(Duration::from_millis(500)).into(),
            "the store did not answer within 500ms",
        ),
    ] {
        assert_eq!(error.to_string(), text);
    }
}
