//! What the verified-token cache saves: the signature and claims check of a token against
//! a lookup of the same token in a full cache. Run with
//! `cargo bench -p keygate-server --bench verified`; numbers go in docs/benchmarks.md.
//!
//! Both sides end where `authorize.rs` continues (the revocation list and the directory,
//! looked up on every request either way): with the claims in hand.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use keygate::token::{
    Grant, HmacSecret, Issuer, KeySet, SigningAlgorithm, SigningKey, TokenPolicy, Verifier,
    now_unix,
};
use keygate_server::verified::{Lookup, VerifiedTokens, Window};

fn verified(c: &mut Criterion) {
    let scopes = vec!["orders:read".to_owned(), "orders:write".to_owned()];
    let grant = Grant {
        subject: "billing",
        client_id: "billing",
        role: "service",
        scopes: &scopes,
    };
    let mut policy = TokenPolicy::new("https://keygate.test");
    policy.audience = vec!["orders-api".into()];
    let secret: HmacSecret = HmacSecret::generate_hex().unwrap().parse().unwrap();
    let hs256 = (
        Issuer::hmac(SigningAlgorithm::HS256, &secret, policy.clone()).unwrap(),
        Verifier::hmac(SigningAlgorithm::HS256, &secret, policy.clone()).unwrap(),
    );
    let keys = Arc::new(KeySet::single(
        SigningKey::generate(SigningAlgorithm::ES256).unwrap().0,
    ));
    let es256 = (
        Issuer::new(keys.clone(), policy.clone()),
        Verifier::new(SigningAlgorithm::ES256, keys, policy),
    );

    let mut g = c.benchmark_group("verified");
    g.measurement_time(Duration::from_secs(3));
    for (name, (issuer, verifier)) in [("hs256", hs256), ("es256", es256)] {
        let token = issuer.issue(&grant).unwrap().token;
        g.bench_function(format!("{name}/verify"), |b| {
            b.iter(|| Arc::new(verifier.verify(black_box(&token)).unwrap()))
        });
        // A cache as full as it gets by default, so the lookup pays its real memory
        // traffic: the other entries differ from the token in their last bytes.
        let cache = VerifiedTokens::default();
        let now = now_unix();
        let claims = Arc::new(verifier.verify(&token).unwrap());
        let window = Window {
            from: 0,
            until: claims.exp,
        };
        for i in 0..keygate_server::verified::DEFAULT_ENTRIES {
            cache.insert(&format!("{token}.{i}"), claims.clone(), window);
        }
        cache.insert(&token, claims, window);
        // Presented again: from probation to the protected segment on the next evictions.
        assert!(matches!(cache.get(&token, now), Lookup::Hit(_)));
        g.bench_function(format!("{name}/cached"), |b| {
            b.iter(|| match cache.get(black_box(&token), now) {
                Lookup::Hit(claims) => claims,
                Lookup::Miss => unreachable!("the token was cached"),
            })
        });
    }
    g.finish();
}

criterion_group!(benches, verified);
criterion_main!(benches);
