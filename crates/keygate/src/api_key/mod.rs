//! API keys: the `kg_<id>_<secret><checksum>` format, and how keys are stored and checked.
//!
//! A generated key reads `kg_billing_<64 hex secret><8 hex checksum>`:
//! - `kg_` lets secret scanners find leaked keys;
//! - the client id makes lookup O(1) and tells whose key leaked;
//! - the secret is 32 bytes (256 bits) from the operating system's RNG;
//! - the checksum (CRC-32 of everything before it) rejects typos and random guesses
//!   before any lookup or hash.
//!
//! Only a hash of the key is stored ([`KeyHash`]); see [`hash`].

pub mod hash;

pub use hash::KeyHash;

use crate::error::{CredentialError, Error, Result};

/// The fixed prefix of generated keys.
pub const PREFIX: &str = "kg_";
const SECRET_HEX_LEN: usize = 64;
const CHECKSUM_HEX_LEN: usize = 8;
const TAIL_LEN: usize = SECRET_HEX_LEN + CHECKSUM_HEX_LEN;

/// A presented API key, classified without any lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresentedKey<'a> {
    /// A well-formed `kg_` key whose checksum matches: look the client up by `id`.
    Generated {
        /// The client id carried in the key.
        id: &'a str,
    },
    /// Any other string: a hand-made key, found by its SHA-256 digest.
    HandMade,
}

/// Classifies a presented key. A key in the generated shape (`kg_<id>_<72 lowercase hex>`)
/// must carry a matching checksum, or it is refused here, before any lookup: that is a
/// typo or a guess. Anything else — including a hand-made key that merely starts with
/// `kg_`, like the seed's `kg_test_…` — is a hand-made key, found by its digest.
pub fn classify(key: &str) -> Result<PresentedKey<'_>> {
    let Some(id) = generated_id(key) else {
        return Ok(PresentedKey::HandMade);
    };
    let (body, checksum) = key.split_at(key.len() - CHECKSUM_HEX_LEN);
    // Parsed rather than formatted for comparison: `generated_id` let through lowercase hex
    // digits only, which is all `from_str_radix` reads here.
    if u32::from_str_radix(checksum, 16) != Ok(crc32fast::hash(body.as_bytes())) {
        return Err(CredentialError::MalformedKey.into());
    }
    Ok(PresentedKey::Generated { id })
}

/// The client id a key in the generated shape names, its checksum not checked: who a key
/// claims to be, for logs and audit events, at no cost ([`classify`] computes the checksum).
pub fn claimed_id(key: &str) -> Option<&str> {
    generated_id(key)
}

/// The client id of a key in the generated shape, checksum not yet checked.
fn generated_id(key: &str) -> Option<&str> {
    let rest = key.strip_prefix(PREFIX)?;
    // The id may itself contain `_`, so split from the right where the lengths are fixed.
    if rest.len() < TAIL_LEN + 2 || !rest.is_char_boundary(rest.len() - TAIL_LEN) {
        return None;
    }
    let (head, tail) = rest.split_at(rest.len() - TAIL_LEN);
    let id = head.strip_suffix('_')?;
    let hex_tail = tail
        .bytes()
        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
    (is_valid_id(id) && hex_tail).then_some(id)
}

/// Client ids and usernames: 1 to 64 of `A-Z a-z 0-9 . _ - @`, so they are safe in keys,
/// headers, logs and file names.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@'))
}

/// A new key for `id`, with 256 bits from the operating system's RNG.
pub fn generate(id: &str) -> Result<String> {
    if !is_valid_id(id) {
        return Err(CredentialError::MalformedKey.into());
    }
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(Error::Random)?;
    let body = format!("{PREFIX}{id}_{}", hex::encode(secret));
    let checksum = checksum_hex(&body);
    Ok(body + &checksum)
}

fn checksum_hex(body: &str) -> String {
    format!("{:08x}", crc32fast::hash(body.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_key_parses_back_to_its_id() {
        let key = generate("billing_v2").unwrap();
        assert!(key.starts_with("kg_billing_v2_"));
        assert_eq!(key.len(), "kg_billing_v2_".len() + 72);
        assert_eq!(
            classify(&key).unwrap(),
            PresentedKey::Generated { id: "billing_v2" }
        );
    }

    #[test]
    fn two_generated_keys_differ() {
        assert_ne!(generate("a").unwrap(), generate("a").unwrap());
    }

    #[test]
    fn typo_in_a_key_fails_the_checksum() {
        let key = generate("billing").unwrap();
        let mut bytes = key.into_bytes();
        let i = bytes.len() - 20;
        bytes[i] = if bytes[i] == b'0' { b'1' } else { b'0' };
        let typo = String::from_utf8(bytes).unwrap();
        assert!(matches!(
            classify(&typo),
            Err(Error::Credential(CredentialError::MalformedKey))
        ));
    }

    #[test]
    fn kg_strings_outside_the_generated_shape_are_hand_made_keys() {
        let key = generate("billing").unwrap();
        let upper_tail = format!("kg_billing_{}", key["kg_billing_".len()..].to_uppercase());
        let no_underscore = key.replacen("billing_", "billingX", 1);
        let multibyte = format!("kg_é_{}", "a".repeat(71));
        // The seed's demo key starts with `kg_` and is a plain string to its owner.
        let seed = "kg_test_5f2b8c1e9a7d4036b1e8f0c2d4a6b8e0f1a3c5e7";
        for other in [
            &key[..key.len() - 1],
            "kg_",
            "kg_billing",
            "kg__",
            &upper_tail,
            &no_underscore,
            &multibyte,
            seed,
        ] {
            assert_eq!(classify(other).unwrap(), PresentedKey::HandMade, "{other}");
        }
    }

    #[test]
    fn generated_shape_with_a_bad_checksum_is_malformed() {
        let key = generate("billing").unwrap();
        let (body, _) = key.split_at(key.len() - CHECKSUM_HEX_LEN);
        let wrong = format!("{body}00000000");
        assert_ne!(wrong, key);
        assert!(matches!(
            classify(&wrong),
            Err(Error::Credential(CredentialError::MalformedKey))
        ));
    }

    #[test]
    fn other_strings_are_hand_made_keys() {
        assert_eq!(classify("my-old-key").unwrap(), PresentedKey::HandMade);
        assert_eq!(classify("").unwrap(), PresentedKey::HandMade);
    }

    #[test]
    fn ids_are_restricted_to_safe_characters() {
        assert!(is_valid_id("svc.billing-1@eu_west"));
        for bad in ["", "a b", "a/b", "é", "a\n", &"x".repeat(65)] {
            assert!(!is_valid_id(bad), "{bad:?}");
        }
    }
}
