//! [`Authority`]: what a service trusts to verify tokens — a key it holds, or the JWKS
//! keygate publishes.

use std::sync::Arc;

use super::claims::Claims;
use super::verifier::Verifier;
use crate::error::Result;

/// The source of trust for verifying tokens. Cheap to clone.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Authority {
    /// A verifier with its keys at hand (the shared secret, or public keys).
    Local(Arc<Verifier>),
    /// Keys fetched from keygate's JWKS, cached and refreshed (feature `jwks`).
    #[cfg(feature = "jwks")]
    Jwks(Arc<super::jwks::JwksVerifier>),
}

impl Authority {
    /// Verifies `token`: signature, algorithm, `typ`, `crit`, times, `iss`, `aud`.
    pub async fn verify(&self, token: &str) -> Result<Claims> {
        match self {
            Authority::Local(v) => v.verify(token),
            #[cfg(feature = "jwks")]
            Authority::Jwks(v) => v.verify(token).await,
        }
    }
}

impl From<Verifier> for Authority {
    fn from(v: Verifier) -> Self {
        Authority::Local(Arc::new(v))
    }
}

impl From<Arc<Verifier>> for Authority {
    fn from(v: Arc<Verifier>) -> Self {
        Authority::Local(v)
    }
}

#[cfg(feature = "jwks")]
impl From<super::jwks::JwksVerifier> for Authority {
    fn from(v: super::jwks::JwksVerifier) -> Self {
        Authority::Jwks(Arc::new(v))
    }
}
