use std::sync::Arc;
use std::time::Duration;

use keygate::token::{Claims, KeyEntry, KeySet, SigningAlgorithm, SigningKey, TokenPolicy};

use super::{Lookup, MAX_CACHED_TOKEN, VerifiedTokens, Window};

const NOW: u64 = 1_800_000_000;

fn claims(jti: &str) -> Arc<Claims> {
    Arc::new(Claims {
        iss: "https://keygate.test".into(),
        sub: "billing".into(),
        aud: None,
        exp: NOW + 1800,
        iat: NOW,
        nbf: NOW,
        jti: jti.into(),
        client_id: "billing".into(),
        role: "service".into(),
        scope: "orders:read".into(),
    })
}

/// A token-shaped string, distinct per `n`.
fn token(kind: &str, n: usize) -> String {
    format!("eyJhbGciOiJIUzI1NiJ9.{kind}-{n:08}.c2lnbmF0dXJl")
}

const ALWAYS: Window = Window {
    from: 0,
    until: u64::MAX,
};

fn hits(cache: &VerifiedTokens, token: &str, now: u64) -> bool {
    matches!(cache.get(token, now), Lookup::Hit(_))
}

/// Presents `token` as the server does: a hit, or a miss that verifies and fills.
fn present(cache: &VerifiedTokens, token: &str) -> bool {
    if hits(cache, token, NOW) {
        return true;
    }
    cache.insert(token, claims(token), ALWAYS);
    false
}

#[test]
fn a_verified_token_hits_and_only_that_token_does() {
    let cache = VerifiedTokens::default();
    let t = token("a", 1);
    assert!(!hits(&cache, &t, NOW));
    cache.insert(&t, claims("j1"), ALWAYS);
    match cache.get(&t, NOW) {
        Lookup::Hit(c) => assert_eq!(c.jti, "j1"),
        Lookup::Miss => panic!("a verified token misses"),
    }
    // Same length, one byte apart; a prefix; an extension.
    let mut other = t.clone();
    other.pop();
    other.push('F');
    for different in [other, t[..t.len() - 1].to_owned(), format!("{t}x")] {
        assert!(!hits(&cache, &different, NOW), "{different}");
    }
    assert_eq!(cache.len(), 1);
}

#[test]
fn an_entry_answers_only_inside_its_window_and_is_dropped_after() {
    let cache = VerifiedTokens::default();
    let t = token("w", 1);
    let window = Window {
        from: NOW - 30,
        until: NOW + 100,
    };
    cache.insert(&t, claims("j"), window);
    assert!(!hits(&cache, &t, NOW - 31), "before nbf - leeway");
    assert!(hits(&cache, &t, NOW - 30));
    assert!(
        hits(&cache, &t, NOW + 100),
        "exp + leeway itself still verifies"
    );
    assert_eq!(cache.len(), 1);
    assert!(!hits(&cache, &t, NOW + 101), "past exp + leeway");
    assert_eq!(cache.len(), 0, "an expired entry is dropped");
    assert!(
        !hits(&cache, &t, NOW),
        "and does not come back with the clock"
    );
}

#[test]
fn the_window_is_the_verifiers_and_ends_before_a_retired_key_stops_verifying() {
    let mut policy = TokenPolicy::new("https://keygate.test");
    policy.leeway = Duration::from_secs(30);
    policy.ttl = Duration::from_secs(1800);
    let key = |_| SigningKey::generate(SigningAlgorithm::EdDSA).unwrap().0;
    let mut c = (*claims("j")).clone();
    c.nbf = NOW - 5;
    c.iat = NOW - 3;
    c.exp = NOW + 600;

    let single = KeySet::single(key(0));
    assert_eq!(
        Window::of(&c, &policy, &single, NOW),
        Window {
            from: NOW - 3 - 30,
            until: NOW + 600 + 30
        }
    );
    // A key retired 1700 s ago verifies until 1700 - 1830 = 130 s from now: the last
    // second it verifies bounds the window.
    let entry = |retired_at| KeyEntry {
        key: key(0),
        created_at: 0,
        signs_from: 0,
        retired_at,
    };
    let retiring = KeySet::new(vec![entry(None), entry(Some(NOW - 1700))]).unwrap();
    assert_eq!(Window::of(&c, &policy, &retiring, NOW).until, NOW + 129);
    assert!(
        retiring
            .published(NOW + 129, policy.keep_after_retire())
            .count()
            == 2
            && retiring
                .published(NOW + 130, policy.keep_after_retire())
                .count()
                == 1,
        "the bound is the key's own last second"
    );
    // A key that no longer verifies at all bounds nothing.
    let gone = KeySet::new(vec![entry(None), entry(Some(NOW - 5000))]).unwrap();
    assert_eq!(Window::of(&c, &policy, &gone, NOW).until, NOW + 630);
}

#[test]
fn entries_and_bytes_stay_within_their_bounds() {
    let cache = VerifiedTokens::new(64, 1 << 30, 4);
    for n in 0..10_000 {
        present(&cache, &token("n", n));
    }
    assert!(cache.len() <= 64, "{} entries", cache.len());
    assert!(cache.len() >= 60, "{} entries", cache.len());

    let budget = 16 * 1024;
    let cache = VerifiedTokens::new(10_000, budget, 1);
    for n in 0..10_000 {
        present(&cache, &token("b", n));
    }
    assert!(cache.bytes() <= budget, "{} bytes", cache.bytes());
    assert!(cache.bytes() > budget / 2, "{} bytes", cache.bytes());

    let cache = VerifiedTokens::default();
    let long = "a".repeat(MAX_CACHED_TOKEN + 1);
    cache.insert(&long, claims("j"), ALWAYS);
    assert!(cache.is_empty(), "a token over the size bound is not kept");
}

/// Tokens presented again (the working set) survive any number of distinct tokens each
/// presented once: those only pass through the probationary segment.
#[test]
fn a_flood_of_distinct_tokens_does_not_evict_the_working_set() {
    let cache = VerifiedTokens::new(1_000, 1 << 30, 1);
    let working: Vec<String> = (0..500).map(|n| token("working", n)).collect();
    for t in &working {
        present(&cache, t);
        assert!(present(&cache, t));
    }
    for n in 0..100_000 {
        present(&cache, &token("flood", n));
    }
    let kept = working.iter().filter(|t| hits(&cache, t, NOW)).count();
    assert_eq!(kept, working.len());
    // The flood itself found room: the cache keeps serving newcomers.
    assert!(present(&cache, &token("flood", 99_999)));
}

/// Even tokens each presented twice (promoted, so each cost the flooder an issuance at
/// /login) evict a working-set token only once it has gone unused while the CLOCK hand
/// swept the protected segment as often as the token's count allowed.
#[test]
fn promoted_flood_tokens_evict_only_a_working_set_left_unused() {
    let working: Vec<String> = (0..200).map(|n| token("working", n)).collect();
    let run = |use_every: Option<usize>| {
        let cache = VerifiedTokens::new(1_000, 1 << 30, 1);
        for t in &working {
            present(&cache, t);
            present(&cache, t);
        }
        for n in 0..20_000 {
            let t = token("flood", n);
            present(&cache, &t);
            present(&cache, &t);
            if use_every.is_some_and(|k| n % k == 0) {
                for t in &working {
                    present(&cache, t);
                }
            }
        }
        working.iter().filter(|t| hits(&cache, t, NOW)).count()
    };
    // Used once per 300 promotions (the protected segment holds 900): all kept.
    assert_eq!(run(Some(300)), working.len());
    // Never used again: promoted newcomers take their place.
    assert_eq!(run(None), 0);
}
