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

use crate::error::{Error, Result};

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

/// Classifies a presented key. A key that starts with `kg_` must parse and carry a
/// matching checksum, or it is refused here, before any lookup.
pub fn classify(key: &str) -> Result<PresentedKey<'_>> {
    let Some(rest) = key.strip_prefix(PREFIX) else {
        return Ok(PresentedKey::HandMade);
    };
    // The id may itself contain `_`, so split from the right where the lengths are fixed.
    if rest.len() < TAIL_LEN + 2 || !rest.is_char_boundary(rest.len() - TAIL_LEN) {
        return Err(Error::MalformedKey);
    }
    let (head, tail) = rest.split_at(rest.len() - TAIL_LEN);
    let id = head.strip_suffix('_').ok_or(Error::MalformedKey)?;
    if !is_valid_id(id)
        || !tail
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        return Err(Error::MalformedKey);
    }
    let (_, checksum) = key.split_at(key.len() - CHECKSUM_HEX_LEN);
    if checksum != checksum_hex(&key[..key.len() - CHECKSUM_HEX_LEN]) {
        return Err(Error::MalformedKey);
    }
    Ok(PresentedKey::Generated { id })
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
        return Err(Error::MalformedKey);
    }
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| Error::Signing(format!("OS RNG failed: {e}")))?;
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
        assert!(matches!(classify(&typo), Err(Error::MalformedKey)));
    }

    #[test]
    fn truncated_or_mangled_kg_keys_are_malformed() {
        let key = generate("billing").unwrap();
        let upper_tail = format!("kg_billing_{}", key["kg_billing_".len()..].to_uppercase());
        for bad in [
            &key[..key.len() - 1],
            "kg_",
            "kg_billing",
            "kg__",
            &upper_tail,
        ] {
            assert!(classify(bad).is_err(), "{bad}");
        }
        let no_underscore = key.replacen("billing_", "billingX", 1);
        assert!(classify(&no_underscore).is_err());
        let multibyte = format!("kg_é_{}", "a".repeat(71));
        assert!(classify(&multibyte).is_err());
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
