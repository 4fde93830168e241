//! [`Verifier`]: checks an access token under a pinned algorithm and policy.
//!
//! Everything is checked here, in one pass over the token: the raw header (`alg` pinned,
//! `typ`, no `crit`, no JWE, a duplicated member refused: RFC 8725 §3.11, RFC 7515
//! §4.1.11, RFC 9068 §4), the signature with a key prepared once, then the payload parsed
//! once into [`Claims`] and every claim: `iss` exactly, `aud`, `exp`/`nbf` with leeway,
//! `iat` not in the future, the lifetime bound, `jti`.

use std::sync::Arc;

use base64::Engine as _;
use serde::Deserialize;

use super::claims::Claims;
use super::keys::{KeySet, SigningKey};
use super::secret::HmacSecret;
use super::{MAX_LIFETIME, MAX_TOKEN_LEN, TokenPolicy};
use crate::algorithm::SigningAlgorithm;
use crate::clock::Clock;
use crate::error::{Result, TokenError};

/// The header members keygate looks at. A derived struct, so a duplicated member
/// (`{"alg":"HS256","alg":"none"}`) fails to parse instead of one copy winning.
/// `jku`, `x5u`, `jwk` and `x5c` are not read at all: keys come from configuration only.
#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    #[serde(default)]
    typ: Option<String>,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default, deserialize_with = "present")]
    crit: Option<serde_json::Value>,
    #[serde(default, deserialize_with = "present")]
    zip: Option<serde_json::Value>,
    #[serde(default, deserialize_with = "present")]
    enc: Option<serde_json::Value>,
}

/// `Some` whenever the member is there, `null` included: `"crit": null` is a `crit` that
/// is not a list of understood names (RFC 7515 §4.1.11), not an absent one.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<serde_json::Value>, D::Error> {
    serde_json::Value::deserialize(d).map(Some)
}

/// Verifies access tokens with one algorithm, fixed by configuration, and the published
/// keys of a [`KeySet`]: `kid` only selects among those keys.
pub struct Verifier {
    algorithm: SigningAlgorithm,
    keys: Arc<KeySet>,
    policy: TokenPolicy,
    /// What [`Verifier::verify`] compares `exp`, `nbf` and `iat` with.
    clock: Clock,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("algorithm", &self.algorithm)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// A verifier for tokens signed with an HMAC secret.
    pub fn hmac(
        algorithm: SigningAlgorithm,
        secret: &HmacSecret,
        policy: TokenPolicy,
    ) -> Result<Self> {
        let key = SigningKey::hmac(algorithm, secret)?;
        Ok(Self::new(algorithm, Arc::new(KeySet::single(key)), policy))
    }

    /// A verifier accepting `algorithm` only, with the keys of `keys` (shared with the
    /// [`super::Issuer`]).
    pub fn new(algorithm: SigningAlgorithm, keys: Arc<KeySet>, policy: TokenPolicy) -> Self {
        Self {
            algorithm,
            keys,
            policy,
            clock: Clock::system(),
        }
    }

    /// This verifier, reading the time from `clock` instead of the system clock.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Where [`Verifier::verify`] reads the time.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The policy tokens are checked against.
    pub fn policy(&self) -> &TokenPolicy {
        &self.policy
    }

    /// The pinned algorithm.
    pub fn algorithm(&self) -> SigningAlgorithm {
        self.algorithm
    }

    /// Verifies `token` now, by its [`Verifier::clock`]. Revocation is not checked here:
    /// see [`crate::revocation::MemoryRevocationStore`].
    pub fn verify(&self, token: &str) -> Result<Claims> {
        self.verify_at(token, self.clock.now_unix())
    }

    /// The key a foreign-looking header names, after every check of the header itself:
    /// the configured algorithm, `typ` `at+jwt`, no `crit`, no JWE or compression.
    fn key_of_header(&self, header: &str, now: u64) -> Result<&SigningKey> {
        let header_json = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(header)
            .map_err(|_| TokenError::Malformed("header is not base64url"))?;
        let raw: RawHeader = serde_json::from_slice(&header_json)
            .map_err(|_| TokenError::Malformed("header is not a JSON object"))?;
        if raw.alg != self.algorithm.as_str() {
            return Err(TokenError::WrongAlgorithm.into());
        }
        if !raw.typ.as_deref().is_some_and(is_access_token_type) {
            return Err(TokenError::WrongType.into());
        }
        if raw.crit.is_some() {
            return Err(TokenError::UnsupportedCritical.into());
        }
        if raw.zip.is_some() || raw.enc.is_some() {
            return Err(TokenError::Malformed("JWE and compressed tokens are not accepted").into());
        }
        self.keys
            .verifying(raw.kid.as_deref(), now, self.policy.keep_after_retire())
            .filter(|k| k.algorithm() == self.algorithm)
            .ok_or(TokenError::UnknownKeyId.into())
    }

    /// Verifies `token` as if the clock read `now` (seconds since the epoch).
    pub fn verify_at(&self, token: &str, now: u64) -> Result<Claims> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::TooLong.into());
        }
        let mut segments = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) = (
            segments.next(),
            segments.next(),
            segments.next(),
            segments.next(),
        ) else {
            return Err(TokenError::Malformed("not three segments").into());
        };
        if header.is_empty() || payload.is_empty() || signature.is_empty() {
            return Err(TokenError::Malformed("empty segment").into());
        }
        // keygate's own tokens carry exactly the header their key makes (algorithm, `typ`,
        // `kid`, nothing else): recognised as such, it needs no decoding or parsing.
        let key = match self
            .keys
            .verifying_own(header, now, self.policy.keep_after_retire())
        {
            Some(key) if key.algorithm() == self.algorithm => key,
            _ => self.key_of_header(header, now)?,
        };
        // One pass: the signature over `header.payload`, then the payload parsed once into
        // `Claims` (a derived struct: a duplicated or mistyped member is an error), then
        // every claim checked here.
        let signing_input = &token[..header.len() + 1 + payload.len()];
        key.verify_signature(signing_input.as_bytes(), signature)?;
        let payload_json = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| TokenError::Malformed("payload is not base64url"))?;
        let claims: Claims =
            serde_json::from_slice(&payload_json).map_err(|_| TokenError::BadClaim("claims"))?;
        if claims.iss != self.policy.issuer {
            return Err(TokenError::WrongIssuer.into());
        }
        match (&claims.aud, self.policy.audience.is_empty()) {
            (Some(aud), false) => {
                if !aud
                    .iter()
                    .any(|a| self.policy.audience.iter().any(|c| c == a))
                {
                    return Err(TokenError::WrongAudience.into());
                }
            }
            (None, false) => return Err(TokenError::BadClaim("aud").into()),
            // With no audience configured, a token meant for some audience is not meant
            // for us (RFC 8725 §3.9; docs/security.md, Audience).
            (Some(_), true) => return Err(TokenError::BadClaim("aud").into()),
            (None, true) => {}
        }
        let leeway = self.policy.leeway.as_secs();
        if claims.exp.saturating_add(leeway) < now {
            return Err(TokenError::Expired.into());
        }
        if claims.nbf > now.saturating_add(leeway) {
            return Err(TokenError::NotYetValid.into());
        }
        if claims.iat > now.saturating_add(leeway) {
            return Err(TokenError::IssuedInFuture.into());
        }
        if claims.exp < claims.iat || claims.exp - claims.iat > MAX_LIFETIME.as_secs() {
            return Err(TokenError::LifetimeTooLong.into());
        }
        if claims.jti.is_empty() {
            return Err(TokenError::BadClaim("jti").into());
        }
        Ok(claims)
    }
}

/// `at+jwt`, or its full media type, compared case-insensitively (RFC 9068 §4).
fn is_access_token_type(typ: &str) -> bool {
    typ.eq_ignore_ascii_case("at+jwt") || typ.eq_ignore_ascii_case("application/at+jwt")
}

#[cfg(test)]
mod tests;
