//! Access tokens: [`Claims`], the [`Issuer`] that signs them and the [`Verifier`] that
//! checks them, under one [`TokenPolicy`].

mod authority;
mod claims;
mod issuer;
#[cfg(feature = "jwks")]
mod jwks;
mod keys;
mod secret;
mod verifier;

use std::time::Duration;

use sha2::{Digest, Sha256};

pub use crate::algorithm::{SigningAlgorithm, UnknownAlgorithm};
pub use authority::Authority;
pub use claims::{Audience, Claims, Demands};
pub use issuer::{Grant, IssuedToken, Issuer};
#[cfg(feature = "jwks")]
pub use jwks::{JwksVerifier, JwksVerifierBuilder};
pub use keys::{KeyEntry, KeySet, SigningKey};
pub use secret::{HmacSecret, WELL_KNOWN_EXAMPLE_SECRET};
pub use verifier::Verifier;

/// Longest token accepted, checked before any decoding (RFC 8725 §3; OWASP: bound input).
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

pub use crate::bounds::{MAX_JWKS_BYTES, MAX_LIFETIME, MIN_SECRET_LEN};

/// What both the issuer and the verifier agree on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenPolicy {
    /// `iss` of issued tokens, compared exactly on verification.
    pub issuer: String,
    /// `aud` of issued tokens; when non-empty, a verified token must name one of them.
    pub audience: Vec<String>,
    /// Lifetime of issued tokens. Defaults to 30 minutes (the seed's value).
    pub ttl: Duration,
    /// Clock skew tolerated for `exp`, `nbf` and `iat`. Defaults to 30 seconds.
    pub leeway: Duration,
}

impl TokenPolicy {
    /// How long after its retirement a key must still verify: the longest a token it
    /// signed can remain valid.
    pub fn keep_after_retire(&self) -> u64 {
        self.ttl.as_secs() + self.leeway.as_secs()
    }
}

impl TokenPolicy {
    /// A policy with the defaults for everything but the issuer.
    pub fn new(issuer: impl Into<String>) -> Self {
        Self {
            issuer: issuer.into(),
            audience: Vec::new(),
            ttl: Duration::from_secs(30 * 60),
            leeway: Duration::from_secs(30),
        }
    }
}

/// Seconds since the Unix epoch, by the system clock.
pub fn now_unix() -> u64 {
    crate::clock::Clock::system().now_unix()
}

/// The `kid` of an HMAC key: a fingerprint that tells keys apart during a secret change
/// without revealing anything about a 256-bit secret.
fn hmac_kid(secret: &HmacSecret) -> String {
    let mut h = Sha256::new();
    h.update(b"keygate hmac kid\0");
    h.update(secret.as_bytes());
    hex::encode(&h.finalize()[..8])
}

/// Decoded length of an unpadded base64url string.
fn b64url_len(s: &str) -> usize {
    s.len() * 3 / 4
}
