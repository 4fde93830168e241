//! Where keygate's data sits in Redis.
//!
//! Every key of one deployment starts with `keygate:{<ns>}:`, where `<ns>` is derived from
//! the token issuer: two deployments (two issuers) sharing one Redis never see each
//! other's data, and the braces make `<ns>` the Redis Cluster hash tag, so all of a
//! deployment's keys sit in one slot and every multi-key script stays legal on a cluster.
//! keygate sends a handful of small commands per revocation or failed login (none per
//! `/verify`), so one slot per deployment is no bottleneck; a cluster buys availability.
//!
//! - `…:revoked`: sorted set, member `sha256(iss, jti)` in hex, score the unix second
//!   until which the token must be refused (`exp + leeway + 1`). No TTL on the key, so a
//!   `volatile-*` eviction policy never drops it; entries past their score are pruned by
//!   each write.
//! - `…:revoked-by:<sha256(principal id)>`: sorted set, the same members for one
//!   principal, counting its share; expires with its last entry. A principal past its
//!   share is folded: its members leave both sets for one principal revocation.
//! - `…:principals`: sorted set, member `<credential fingerprint> <principal id>` (or
//!   `logout <principal id>` for a fold), score the revocation time in milliseconds (see
//!   [`super::principals`]). Entries older than the longest a token verifies after its
//!   `iat` (ttl + leeway + 1 s) cover no token any more and are pruned by each write.
//! - `…:attempts:<sha256(subject)>`: a failed-attempt counter (failures and attempts in
//!   flight), always with a TTL; `…:attempts:<sha256(subject)>:in-flight`: those in flight.
//! - channel `…:changes`: every revocation as it is written (see [`super::revocations`]).
//!
//! Values are hashes, so neither client addresses, usernames nor token ids sit in Redis
//! in clear.

use sha2::{Digest, Sha256};

/// The key names of one deployment.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    prefix: String,
}

impl Layout {
    /// The layout for tokens issued by `issuer`.
    pub(crate) fn for_issuer(issuer: &str) -> Self {
        let ns = &hex::encode(Sha256::digest(issuer.as_bytes()))[..16];
        Self {
            prefix: format!("keygate:{{{ns}}}:"),
        }
    }

    pub(crate) fn revoked(&self) -> String {
        format!("{}revoked", self.prefix)
    }

    /// The token revocations of one principal (`owner`: a digest of its id), counted
    /// against its share.
    pub(crate) fn revoked_by(&self, owner: &str) -> String {
        format!("{}revoked-by:{owner}", self.prefix)
    }

    pub(crate) fn principals(&self) -> String {
        format!("{}principals", self.prefix)
    }

    pub(crate) fn channel(&self) -> String {
        format!("{}changes", self.prefix)
    }

    pub(crate) fn quota(&self, client_id: &str) -> String {
        format!("{}quota:{}", self.prefix, digest(&[client_id]))
    }

    pub(crate) fn attempts(&self, subject: &str) -> String {
        format!("{}attempts:{}", self.prefix, digest(&[subject]))
    }
}

/// `sha256` of `parts`, each terminated by a NUL so that `("a", "bc")` and `("ab", "c")`
/// differ; in hex.
pub(crate) fn digest(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0u8]);
    }
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_hide_what_they_count_and_share_one_hash_tag() {
        let layout = Layout::for_issuer("https://keygate.test");
        let k = layout.attempts("ip:198.51.100.7");
        assert!(k.starts_with("keygate:{"));
        assert!(!k.contains("198.51"));
        let tag = |k: &str| k[k.find('{').unwrap()..=k.find('}').unwrap()].to_owned();
        assert_eq!(tag(&k), tag(&layout.revoked()));
        assert_eq!(tag(&k), tag(&layout.principals()));
        assert_ne!(digest(&["a", "bc"]), digest(&["ab", "c"]));
    }

    #[test]
    fn deployments_are_kept_apart() {
        let a = Layout::for_issuer("https://a.example");
        let b = Layout::for_issuer("https://b.example");
        assert_ne!(a.attempts("ip:10.0.0.1"), b.attempts("ip:10.0.0.1"));
        assert_ne!(a.revoked(), b.revoked());
        assert_ne!(a.channel(), b.channel());
    }
}
