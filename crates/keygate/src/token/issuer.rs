//! [`Issuer`]: signs access tokens.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;

use super::TokenPolicy;
use super::claims::{Audience, Claims};
use super::keys::{KeySet, SigningKey};
use super::secret::HmacSecret;
use crate::algorithm::SigningAlgorithm;
use crate::clock::Clock;
use crate::error::{Error, Result, SigningError};

/// What a token is issued for: the authenticated principal and the scopes granted.
#[derive(Debug, Clone, Copy)]
pub struct Grant<'a> {
    /// The `sub` claim: client id or username.
    pub subject: &'a str,
    /// The `client_id` claim.
    pub client_id: &'a str,
    /// The `role` claim.
    pub role: &'a str,
    /// The granted scopes, already narrowed to what was asked for.
    pub scopes: &'a [String],
}

/// A freshly signed token with its claims.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    /// The compact JWS.
    pub token: String,
    /// What it says.
    pub claims: Claims,
}

impl IssuedToken {
    /// Seconds until expiry, as `expires_in` in the token response.
    pub fn expires_in(&self) -> u64 {
        self.claims.exp.saturating_sub(self.claims.iat)
    }
}

/// Signs access tokens with the key of a [`KeySet`] that signs at the moment.
#[derive(Debug)]
pub struct Issuer {
    keys: Arc<KeySet>,
    policy: TokenPolicy,
    /// What [`Issuer::issue`] dates tokens by.
    clock: Clock,
}

impl Issuer {
    /// An issuer over a key set (shared with the [`super::Verifier`]).
    pub fn new(keys: Arc<KeySet>, policy: TokenPolicy) -> Self {
        Self {
            keys,
            policy,
            clock: Clock::system(),
        }
    }

    /// This issuer, reading the time from `clock` instead of the system clock.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Where [`Issuer::issue`] reads the time.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// An issuer signing with an HMAC secret (`HS256`, `HS384`, `HS512`).
    pub fn hmac(
        algorithm: SigningAlgorithm,
        secret: &HmacSecret,
        policy: TokenPolicy,
    ) -> Result<Self> {
        let key = SigningKey::hmac(algorithm, secret)?;
        Ok(Self::new(Arc::new(KeySet::single(key)), policy))
    }

    /// The keys this issuer signs with.
    pub fn keys(&self) -> &Arc<KeySet> {
        &self.keys
    }

    /// The policy tokens are issued under.
    pub fn policy(&self) -> &TokenPolicy {
        &self.policy
    }

    /// Issues a token valid from now, by its [`Issuer::clock`], for the configured lifetime.
    pub fn issue(&self, grant: &Grant<'_>) -> Result<IssuedToken> {
        self.issue_at(grant, self.clock.now_unix())
    }

    /// Issues a token as if the clock read `now` (seconds since the epoch).
    pub fn issue_at(&self, grant: &Grant<'_>, now: u64) -> Result<IssuedToken> {
        self.issue_with_ttl(grant, now, self.policy.ttl)
    }

    /// Issues a token with its own lifetime (`keygate token issue --ttl`), from 1 s to
    /// [`super::MAX_LIFETIME`].
    pub fn issue_with_ttl(
        &self,
        grant: &Grant<'_>,
        now: u64,
        ttl: Duration,
    ) -> Result<IssuedToken> {
        if ttl.is_zero() || ttl > super::MAX_LIFETIME {
            return Err(SigningError::Lifetime.into());
        }
        let aud = match self.policy.audience.as_slice() {
            [] => None,
            [one] => Some(Audience::One(one.clone())),
            many => Some(Audience::Many(many.to_vec())),
        };
        let claims = Claims {
            iss: self.policy.issuer.clone(),
            sub: grant.subject.to_owned(),
            aud,
            exp: now + ttl.as_secs(),
            iat: now,
            nbf: now,
            jti: new_jti()?,
            client_id: grant.client_id.to_owned(),
            role: grant.role.to_owned(),
            scope: grant.scopes.join(" "),
        };
        let key = self.keys.signer(now).ok_or(SigningError::NoActiveKey)?;
        let payload = claims.to_json();
        let header = key.encoded_header();
        // header . payload . signature (at most 86 characters for ES256/EdDSA/HMAC, 342
        // for RSA-2048), in one allocation.
        let mut token = String::with_capacity(header.len() + payload.len() * 4 / 3 + 350);
        token.push_str(header);
        token.push('.');
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_string(payload, &mut token);
        let signature = key.sign(token.as_bytes())?;
        token.push('.');
        token.push_str(&signature);
        Ok(IssuedToken { token, claims })
    }
}

/// 128 bits from the operating system's CSPRNG (`getrandom`), base64url (ASVS 11.5.1: no
/// UUIDs for unguessable values). Not aws-lc's generator: its first use seeds a jitter
/// entropy source for ~60 ms of CPU, which every process loading a configuration (each
/// CLI edit checks a probe token) would pay.
fn new_jti() -> Result<String> {
    /// Random bytes drawn 32 ids at a time: one system call serves 32 tokens. Every byte
    /// is handed out once.
    struct Buffered {
        bytes: [u8; 512],
        used: usize,
    }
    thread_local! {
        static RANDOM: std::cell::RefCell<Buffered> =
            const { std::cell::RefCell::new(Buffered { bytes: [0; 512], used: 512 }) };
    }
    let bytes = RANDOM.with_borrow_mut(|r| -> Result<[u8; 16]> {
        if r.used == r.bytes.len() {
            getrandom::fill(&mut r.bytes).map_err(Error::Random)?;
            r.used = 0;
        }
        let mut id = [0u8; 16];
        id.copy_from_slice(&r.bytes[r.used..r.used + 16]);
        // Spent bytes are wiped, so what was handed out stays nowhere else.
        r.bytes[r.used..r.used + 16].fill(0);
        r.used += 16;
        Ok(id)
    })?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_ids_are_128_random_bits_never_repeated() {
        // More than one buffer's worth, on two threads.
        let ids = || (0..100).map(|_| new_jti().unwrap()).collect::<Vec<_>>();
        let other = std::thread::spawn(ids);
        let mut all = ids();
        all.extend(other.join().unwrap());
        assert!(all.iter().all(|id| id.len() == 22), "16 bytes in base64url");
        let distinct: std::collections::HashSet<_> = all.iter().collect();
        assert_eq!(distinct.len(), all.len());
        assert!(
            !all.contains(&"AAAAAAAAAAAAAAAAAAAAAA".to_owned()),
            "no wiped bytes handed out"
        );
    }
}
