//! The signing algorithms keygate knows by name.

use std::fmt;
use std::str::FromStr;

/// A JWS algorithm, as written in `token.algorithm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SigningAlgorithm {
    /// HMAC with SHA-256.
    HS256,
    /// HMAC with SHA-384.
    HS384,
    /// HMAC with SHA-512.
    HS512,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// ECDSA on P-256 with SHA-256.
    ES256,
    /// Ed25519.
    EdDSA,
}

impl SigningAlgorithm {
    /// The JWS `alg` name.
    pub fn as_str(self) -> &'static str {
        match self {
            SigningAlgorithm::HS256 => "HS256",
            SigningAlgorithm::HS384 => "HS384",
            SigningAlgorithm::HS512 => "HS512",
            SigningAlgorithm::RS256 => "RS256",
            SigningAlgorithm::ES256 => "ES256",
            SigningAlgorithm::EdDSA => "EdDSA",
        }
    }

    /// True for the HMAC family (a shared secret rather than a key pair).
    pub fn is_hmac(self) -> bool {
        matches!(
            self,
            SigningAlgorithm::HS256 | SigningAlgorithm::HS384 | SigningAlgorithm::HS512
        )
    }

    pub(crate) fn to_jsonwebtoken(self) -> jsonwebtoken::Algorithm {
        match self {
            SigningAlgorithm::HS256 => jsonwebtoken::Algorithm::HS256,
            SigningAlgorithm::HS384 => jsonwebtoken::Algorithm::HS384,
            SigningAlgorithm::HS512 => jsonwebtoken::Algorithm::HS512,
            SigningAlgorithm::RS256 => jsonwebtoken::Algorithm::RS256,
            SigningAlgorithm::ES256 => jsonwebtoken::Algorithm::ES256,
            SigningAlgorithm::EdDSA => jsonwebtoken::Algorithm::EdDSA,
        }
    }
}

impl fmt::Display for SigningAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An `alg` name keygate does not sign with.
#[derive(Debug, thiserror::Error)]
#[error("unknown algorithm `{0}` (expected one of HS256 HS384 HS512 RS256 ES256 EdDSA)")]
pub struct UnknownAlgorithm(pub String);

impl FromStr for SigningAlgorithm {
    type Err = UnknownAlgorithm;

    /// Exact, case-sensitive names only: `hs256` or `none` are not algorithms.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "HS256" => SigningAlgorithm::HS256,
            "HS384" => SigningAlgorithm::HS384,
            "HS512" => SigningAlgorithm::HS512,
            "RS256" => SigningAlgorithm::RS256,
            "ES256" => SigningAlgorithm::ES256,
            "EdDSA" => SigningAlgorithm::EdDSA,
            other => return Err(UnknownAlgorithm(other.to_owned())),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_others_are_refused() {
        for name in ["HS256", "HS384", "HS512", "RS256", "ES256", "EdDSA"] {
            assert_eq!(name.parse::<SigningAlgorithm>().unwrap().as_str(), name);
        }
        for bad in [
            "none", "None", "hs256", "HS256 ", "PS256", "ES256K", "Ed25519", "",
        ] {
            assert!(bad.parse::<SigningAlgorithm>().is_err(), "{bad}");
        }
    }
}
