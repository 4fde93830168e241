//! The HMAC signing secret and the checks that refuse a weak one.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;

use crate::error::{Error, KeyError, Result};

/// The secret of FastAPI's JWT tutorial, copied into many production services. Refused as
/// the 64-character string and as the 32 bytes it decodes to.
pub const WELL_KNOWN_EXAMPLE_SECRET: &str =
    "09d25e094faa6ca2556c818166b7a9563b93f7099f6f0f4caa6cf63b88e8d3e7";

use crate::bounds::MIN_SECRET_LEN;

/// Defaults and placeholders that show up as secrets (jwt.io, framework docs).
const KNOWN_WEAK: &[&str] = &[
    "your-256-bit-secret",
    "your-384-bit-secret",
    "your-512-bit-secret",
    "secret",
    "changeme",
    "change-me-to-a-long-random-string-of-32-bytes",
    "supersecretkeythatshouldbechanged",
];

/// An HMAC key. Written in configuration as the string itself (its UTF-8 bytes are the
/// key, as PyJWT and FastAPI use such strings), or as `hex:<hex>` / `base64:<base64>`
/// for binary keys.
#[derive(Clone, PartialEq, Eq)]
pub struct HmacSecret(Vec<u8>);

impl fmt::Debug for HmacSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HmacSecret([redacted; {} bytes])", self.0.len())
    }
}

impl HmacSecret {
    /// The key bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// A fresh secret: 32 bytes from the OS RNG, written as 64 hex characters.
    pub fn generate_hex() -> Result<String> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(Error::Random)?;
        Ok(hex::encode(bytes))
    }
}

impl FromStr for HmacSecret {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bytes = if let Some(h) = s.strip_prefix("hex:") {
            hex::decode(h).map_err(|_| KeyError::WeakSecret("hex: secret is not valid hex"))?
        } else if let Some(b) = s.strip_prefix("base64:") {
            base64::engine::general_purpose::STANDARD
                .decode(b)
                .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(b))
                .map_err(|_| KeyError::WeakSecret("base64: secret is not valid base64"))?
        } else {
            s.as_bytes().to_vec()
        };
        check_strength(&bytes)?;
        Ok(HmacSecret(bytes))
    }
}

fn check_strength(bytes: &[u8]) -> Result<()> {
    let example_bytes = hex::decode(WELL_KNOWN_EXAMPLE_SECRET).unwrap_or_default();
    if bytes == WELL_KNOWN_EXAMPLE_SECRET.as_bytes() || bytes == example_bytes.as_slice() {
        return Err(KeyError::WeakSecret(
            "is the well-known example secret from the FastAPI docs; generate one with `keygate secret`",
        )
        .into());
    }
    if KNOWN_WEAK
        .iter()
        .any(|w| w.as_bytes().eq_ignore_ascii_case(bytes))
    {
        return Err(KeyError::WeakSecret(
            "is a well-known placeholder; generate one with `keygate secret`",
        )
        .into());
    }
    if bytes.len() < MIN_SECRET_LEN {
        return Err(KeyError::ShortSecret(bytes.len()).into());
    }
    let mut seen = [false; 256];
    for b in bytes {
        seen[usize::from(*b)] = true;
    }
    let distinct = seen.iter().filter(|s| **s).count();
    let periodic =
        (1..=16).any(|p| bytes.len() > p && bytes.iter().skip(p).zip(bytes).all(|(a, b)| a == b));
    if distinct < 8 || periodic {
        return Err(KeyError::WeakSecret(
            "looks low-entropy (repeated characters or a repeating pattern); generate one with `keygate secret`",
        )
        .into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secret_is_accepted() {
        let s = HmacSecret::generate_hex().unwrap();
        assert_eq!(s.len(), 64);
        assert_eq!(s.parse::<HmacSecret>().unwrap().as_bytes(), s.as_bytes());
    }

    #[test]
    fn example_secret_is_refused_in_both_encodings() {
        assert!(WELL_KNOWN_EXAMPLE_SECRET.parse::<HmacSecret>().is_err());
        let hex_form = format!("hex:{WELL_KNOWN_EXAMPLE_SECRET}");
        assert!(hex_form.parse::<HmacSecret>().is_err());
        let b64 = base64::engine::general_purpose::STANDARD
            .encode(hex::decode(WELL_KNOWN_EXAMPLE_SECRET).unwrap());
        assert!(format!("base64:{b64}").parse::<HmacSecret>().is_err());
    }

    #[test]
    fn short_placeholder_and_low_entropy_secrets_are_refused() {
        for bad in [
            "",
            "secret",
            "your-256-bit-secret",
            "0123456789abcdef0123456789abcde",
            &"a".repeat(64),
            &"0123456789abcdef".repeat(4),
            &"ab".repeat(32),
            "hex:00ff",
            "hex:zz",
        ] {
            assert!(bad.parse::<HmacSecret>().is_err(), "{bad}");
        }
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let s: HmacSecret = HmacSecret::generate_hex().unwrap().parse().unwrap();
        assert_eq!(format!("{s:?}"), "HmacSecret([redacted; 64 bytes])");
    }
}
