//! Criterion benchmarks of the hot paths: signing, verifying, and checking an API key.
//! Run with `cargo bench -p keygate`; numbers are recorded in docs/benchmarks.md.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use keygate::api_key::{self, KeyHash};
use keygate::password::{PasswordVerifier, hash_password};
use keygate::principal::{Access, Credential, Credentials, Directory, Principal, PrincipalKind};
use keygate::token::{
    Grant, HmacSecret, Issuer, KeySet, SigningAlgorithm, SigningKey, TokenPolicy, Verifier,
};
use std::sync::Arc;
use time::OffsetDateTime;

fn tokens(c: &mut Criterion) {
    let secret: HmacSecret = HmacSecret::generate_hex().unwrap().parse().unwrap();
    let mut policy = TokenPolicy::new("https://keygate.test");
    policy.audience = vec!["orders-api".into()];
    let issuer = Issuer::hmac(SigningAlgorithm::HS256, &secret, policy.clone()).unwrap();
    let verifier = Verifier::hmac(SigningAlgorithm::HS256, &secret, policy).unwrap();
    let scopes = vec!["orders:read".to_owned(), "orders:write".to_owned()];
    let grant = Grant {
        subject: "billing",
        client_id: "billing",
        role: "service",
        scopes: &scopes,
    };
    let token = issuer.issue(&grant).unwrap().token;
    c.bench_function("token/issue_hs256", |b| {
        b.iter(|| issuer.issue(black_box(&grant)).unwrap())
    });
    c.bench_function("token/verify_hs256", |b| {
        b.iter(|| verifier.verify(black_box(&token)).unwrap())
    });
    let mut forged = token.clone();
    forged.pop();
    forged.push('A');
    c.bench_function("token/reject_bad_signature", |b| {
        b.iter(|| verifier.verify(black_box(&forged)).unwrap_err())
    });
}

fn public_key_tokens(c: &mut Criterion) {
    let scopes = vec!["orders:read".to_owned()];
    let grant = Grant {
        subject: "billing",
        client_id: "billing",
        role: "service",
        scopes: &scopes,
    };
    for alg in [
        SigningAlgorithm::ES256,
        SigningAlgorithm::EdDSA,
        SigningAlgorithm::RS256,
    ] {
        let keys = Arc::new(KeySet::single(SigningKey::generate(alg).unwrap().0));
        let policy = TokenPolicy::new("https://keygate.test");
        let issuer = Issuer::new(keys.clone(), policy.clone());
        let verifier = Verifier::new(alg, keys.clone(), policy);
        let token = issuer.issue(&grant).unwrap().token;
        c.bench_function(
            &format!("token/issue_{}", alg.as_str().to_lowercase()),
            |b| b.iter(|| issuer.issue(black_box(&grant)).unwrap()),
        );
        c.bench_function(
            &format!("token/verify_{}", alg.as_str().to_lowercase()),
            |b| b.iter(|| verifier.verify(black_box(&token)).unwrap()),
        );
        // The primitive alone on the same bytes: keygate's verify should cost little more.
        if let Some((public, input, signature)) = primitive(alg, &keys, &token) {
            c.bench_function(
                &format!(
                    "token/verify_{}_primitive_only",
                    alg.as_str().to_lowercase()
                ),
                |b| b.iter(|| public.verify_sig(black_box(&input), &signature).unwrap()),
            );
        }
    }
}

/// The aws-lc-rs public key of `keys`' signer, the signing input and the signature of
/// `token`: what a bare verification of the same bytes needs.
fn primitive(
    alg: SigningAlgorithm,
    keys: &KeySet,
    token: &str,
) -> Option<(aws_lc_rs::signature::ParsedPublicKey, Vec<u8>, Vec<u8>)> {
    use base64::Engine as _;
    use jsonwebtoken::jwk::AlgorithmParameters;
    let b64 = |s: &str| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s)
            .unwrap()
    };
    let jwk = keys.signer(0)?.public_jwk()?;
    let public = match (&jwk.algorithm, alg) {
        (AlgorithmParameters::EllipticCurve(ec), SigningAlgorithm::ES256) => {
            let mut point = vec![0x04];
            point.extend(b64(&ec.x));
            point.extend(b64(&ec.y));
            aws_lc_rs::signature::ParsedPublicKey::new(
                &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED,
                point,
            )
            .ok()?
        }
        (AlgorithmParameters::OctetKeyPair(okp), SigningAlgorithm::EdDSA) => {
            aws_lc_rs::signature::ParsedPublicKey::new(&aws_lc_rs::signature::ED25519, b64(&okp.x))
                .ok()?
        }
        _ => return None,
    };
    let (input, signature) = token.rsplit_once('.')?;
    Some((public, input.as_bytes().to_vec(), b64(signature)))
}

fn api_keys(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let passwords = PasswordVerifier::new(1, 16).unwrap();
    let mut keys = Vec::new();
    let principals: Vec<Principal> = (0..10_000)
        .map(|i| {
            let id = format!("client-{i}");
            let key = api_key::generate(&id).unwrap();
            let p = Principal {
                id: id.as_str().into(),
                kind: PrincipalKind::Client,
                access: Arc::new(Access {
                    role: "service".into(),
                    scopes: vec![],
                }),
                credentials: Credentials::one(Credential {
                    hash: KeyHash::sha256_of(&key),
                    valid_until: None,
                }),
                revoked_at: None,
                not_before: None,
            };
            keys.push(key);
            p
        })
        .collect();
    let directory = Directory::new(principals).unwrap();
    let now = OffsetDateTime::now_utc();
    let key = keys[4242].clone();
    c.bench_function("api_key/authenticate_among_10k", |b| {
        b.iter(|| {
            runtime
                .block_on(directory.authenticate_key(black_box(&key), &passwords, now))
                .unwrap()
        })
    });
    let unknown = api_key::generate("nobody").unwrap();
    c.bench_function("api_key/refuse_unknown_among_10k", |b| {
        b.iter(|| {
            runtime
                .block_on(directory.authenticate_key(black_box(&unknown), &passwords, now))
                .unwrap_err()
        })
    });
    let mut typo = key.clone();
    typo.replace_range(30..31, if &typo[30..31] == "a" { "b" } else { "a" });
    c.bench_function("api_key/refuse_bad_checksum", |b| {
        b.iter(|| api_key::classify(black_box(&typo)).unwrap_err())
    });
}

fn passwords(c: &mut Criterion) {
    let hash = hash_password(b"correct horse battery").unwrap();
    let mut group = c.benchmark_group("password");
    group.sample_size(10);
    group.bench_function("verify_argon2id_m19456_t2", |b| {
        b.iter(|| {
            hash.verify_blocking(black_box(b"correct horse battery"))
                .unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, tokens, public_key_tokens, api_keys, passwords);
criterion_main!(benches);
