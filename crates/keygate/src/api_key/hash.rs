//! How an API key is stored: `sha256:<hex>` for high-entropy keys, or a password hash
//! (argon2id, bcrypt) for keys imported from systems that hashed them that way.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::{Error, KeyError, Result};
use crate::password::PasswordHash;

/// The stored form of one API key.
#[derive(Clone, PartialEq, Eq)]
pub enum KeyHash {
    /// SHA-256 of the whole key. Right for generated keys: with 256 random bits a fast
    /// hash is as strong as a slow one (OWASP ASVS 6.5.2), and it allows O(1) lookup.
    Sha256([u8; 32]),
    /// A slow password hash; checked on the bounded hashing pool.
    Password(PasswordHash),
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyHash::Sha256(_) => f.write_str("KeyHash::Sha256(..)"),
            KeyHash::Password(p) => write!(f, "KeyHash::Password({p:?})"),
        }
    }
}

impl KeyHash {
    /// The SHA-256 form of `key`, as `keygate key add` stores it.
    pub fn sha256_of(key: &str) -> Self {
        KeyHash::Sha256(digest(key))
    }

    /// The SHA-256 digest, when this is a SHA-256 hash.
    pub fn sha256(&self) -> Option<&[u8; 32]> {
        match self {
            KeyHash::Sha256(d) => Some(d),
            KeyHash::Password(_) => None,
        }
    }

    /// Constant-time check of a key against a SHA-256 hash. Password hashes are not
    /// checked here: they go through [`crate::password::PasswordVerifier`].
    pub fn matches_digest(&self, presented: &[u8; 32]) -> bool {
        match self {
            KeyHash::Sha256(stored) => bool::from(stored.ct_eq(presented)),
            KeyHash::Password(_) => false,
        }
    }
}

/// SHA-256 of a presented key.
pub fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

impl FromStr for KeyHash {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        if let Some(hex_digest) = s.strip_prefix("sha256:") {
            let mut out = [0u8; 32];
            hex::decode_to_slice(hex_digest, &mut out)
                .map_err(|_| KeyError::BadHash("sha256: must be followed by 64 hex characters"))?;
            return Ok(KeyHash::Sha256(out));
        }
        Ok(KeyHash::Password(s.parse()?))
    }
}

impl fmt::Display for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyHash::Sha256(d) => write!(f, "sha256:{}", hex::encode(d)),
            KeyHash::Password(p) => f.write_str(p.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_hash_round_trips_through_its_string_form() {
        let h = KeyHash::sha256_of("test");
        let s = h.to_string();
        assert_eq!(
            s,
            "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
        );
        assert_eq!(s.parse::<KeyHash>().unwrap(), h);
        assert!(h.matches_digest(&digest("test")));
        assert!(!h.matches_digest(&digest("tesT")));
    }

    #[test]
    fn malformed_sha256_is_refused() {
        for bad in ["sha256:", "sha256:xyz", "sha256:9f86", "md5:abc"] {
            assert!(bad.parse::<KeyHash>().is_err(), "{bad}");
        }
    }
}
