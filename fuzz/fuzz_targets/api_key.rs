//! `api_key`: the presented-key classifier (`keygate::api_key::classify`), the stored-hash
//! parsers (`KeyHash`, `PasswordHash`: `sha256:<hex>`, argon2id PHC strings with their
//! parameter bounds, bcrypt), id validation and the HMAC secret parser.
//!
//! The first byte picks the mode:
//! - even: the rest is the string, as sent (non-UTF-8 input is read lossily, which puts
//!   multi-byte characters everywhere: RUSTSEC-2026-0199, bcrypt's panic on a non-ASCII
//!   hash, must be refused by keygate before bcrypt sees it);
//! - odd: the rest is a client id and secret made into a `kg_<id>_<secret><crc>` key with
//!   a correct checksum, so the classifier is reached past its checksum check.
//!
//! Beyond "no panic": a key classified as generated names a valid id and has the exact
//! generated shape; a parsed hash prints back to a string that parses to the same hash;
//! nothing non-ASCII is ever accepted as a password hash.

#![no_main]

use keygate::api_key::{self, KeyHash, PresentedKey};
use keygate::password::PasswordHash;
use keygate::token::HmacSecret;
use libfuzzer_sys::fuzz_target;

/// The generated shape, written out apart from the classifier: `kg_`, a valid id, `_`,
/// then 64 + 8 lowercase hex digits (secret and checksum).
fn generated_shape(s: &str) -> bool {
    let Some(rest) = s.strip_prefix(api_key::PREFIX) else {
        return false;
    };
    let b = rest.as_bytes();
    if b.len() < 72 + 2 {
        return false;
    }
    let (head, tail) = b.split_at(b.len() - 72);
    tail.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
        && head.last() == Some(&b'_')
        && std::str::from_utf8(&head[..head.len() - 1]).is_ok_and(api_key::is_valid_id)
}

fn check(s: &str) {
    match api_key::classify(s) {
        Ok(PresentedKey::Generated { id }) => {
            assert!(
                api_key::is_valid_id(id),
                "generated key with a bad id {id:?}"
            );
            assert!(generated_shape(s), "{s:?}");
            assert_eq!(s.len(), api_key::PREFIX.len() + id.len() + 1 + 72, "{s:?}");
            assert!(s.starts_with(&format!("{}{id}_", api_key::PREFIX)), "{s:?}");
        }
        // Anything not in the generated shape is a hand-made key, `kg_…` ones included
        // (the seed's `kg_test_…`): found by digest, never refused unseen.
        Ok(PresentedKey::HandMade) => {
            assert!(
                !generated_shape(s),
                "generated-shape key taken as hand-made: {s:?}"
            )
        }
        // Only a generated-shape key with a wrong checksum is refused before any lookup.
        Err(_) => assert!(generated_shape(s), "refused a hand-made key {s:?}"),
    }
    let _ = api_key::is_valid_id(s);

    match s.parse::<KeyHash>() {
        Ok(hash) => {
            let text = hash.to_string();
            let again: KeyHash = text.parse().expect("a hash's own text parses");
            assert_eq!(again, hash, "{s:?} does not round-trip");
            if let KeyHash::Password(p) = &hash {
                assert_eq!(p.as_str(), s);
            }
        }
        Err(_) => {}
    }
    match s.parse::<PasswordHash>() {
        Ok(hash) => {
            assert!(s.is_ascii(), "accepted a non-ASCII hash {s:?}");
            assert_eq!(hash.as_str(), s);
            if let PasswordHash::Bcrypt(b) = &hash {
                assert_eq!(b.len(), 60, "bcrypt hash of the wrong length {b:?}");
                let cost: u32 = b[4..6].parse().expect("cost");
                assert!((10..=31).contains(&cost), "bcrypt cost {cost}");
            }
        }
        Err(_) => {}
    }
    if !s.is_ascii() {
        assert!(
            s.parse::<KeyHash>().is_err(),
            "accepted a non-ASCII key hash"
        );
    }
    let _ = s.parse::<HmacSecret>();
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    if mode % 2 == 0 {
        check(&text);
        return;
    }
    // `id` and `secret` split at the first NUL; the secret is hex-encoded unless it already
    // is 64 characters (so non-hex and upper-case secrets get a correct checksum too).
    let (id, secret) = text.split_once('\0').unwrap_or((&text, ""));
    let secret = if secret.len() == 64 {
        secret.to_owned()
    } else {
        hex::encode(secret.as_bytes())
    };
    let body = format!("{}{id}_{secret}", api_key::PREFIX);
    let key = format!("{body}{:08x}", crc32fast::hash(body.as_bytes()));
    check(&key);
    if let Ok(PresentedKey::Generated { id: parsed }) = api_key::classify(&key) {
        assert_eq!(parsed, id, "the id read back differs");
    }
});
