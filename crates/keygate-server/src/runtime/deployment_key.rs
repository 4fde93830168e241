//! The deployment's own key: what must be the same on every replica yet unknown outside.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// A secret of the deployment, derived from its token secret (HS*) or its earliest
/// signing key: the same on every replica of one configuration and across reloads, known
/// to nobody without the configuration. It keys the choice of stand-in password hashes
/// and the fingerprints of claimed ids that name no principal.
#[derive(Clone)]
pub(crate) struct DeploymentKey([u8; 32]);

impl std::fmt::Debug for DeploymentKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeploymentKey(..)")
    }
}

type HmacSha256 = Hmac<Sha256>;

impl DeploymentKey {
    /// HMAC-SHA256 of a fixed label under `secret`: the secret itself never leaves the
    /// token code, and what is derived here tells nothing about it.
    pub(crate) fn from_secret(secret: &[u8]) -> Self {
        Self(hmac(secret, b"keygate deployment key v1"))
    }

    /// The key of the stand-in choice for unknown usernames.
    pub(crate) fn stand_in_key(&self) -> [u8; 32] {
        hmac(&self.0, b"stand-in hashes")
    }

    /// 12 hex characters (48 bits) of HMAC-SHA256 of `claim`: the same claim gives the
    /// same fingerprint on every replica, and without the key it cannot be reversed or
    /// checked against a guess.
    pub(crate) fn fingerprint(&self, claim: &str) -> String {
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(b"claimed id\0");
        mac.update(claim.as_bytes());
        hex::encode(&mac.finalize().into_bytes()[..6])
    }
}

fn hmac(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(message);
    mac.finalize().into_bytes().into()
}
