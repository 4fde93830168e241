//! The claims of a keygate access token (RFC 9068 profile).

use serde::{Deserialize, Serialize};

/// The payload of an access token.
///
/// Deserialized as a derived struct on purpose: a duplicated member (`"role"` twice) or a
/// time claim of the wrong JSON type (`"exp": "99999999999"`) is an error, never a guess.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Claims {
    /// Issuer: the configured `token.issuer`.
    pub iss: String,
    /// Subject: the client id or username.
    pub sub: String,
    /// Audience, when configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<Audience>,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Issued at, seconds since the epoch.
    pub iat: u64,
    /// Not before, seconds since the epoch.
    pub nbf: u64,
    /// Unique token id (128 random bits, base64url); the revocation list's key with `iss`.
    pub jti: String,
    /// The OAuth client that requested the token (RFC 9068 §2.2): for a password grant, the
    /// client that authenticated, or the configured public client id when none did.
    pub client_id: String,
    /// The principal's role.
    pub role: String,
    /// Granted scopes, space-separated (RFC 6749 §3.3).
    #[serde(default)]
    pub scope: String,
}

impl Claims {
    /// The claims as a token's payload: serde_json's serialization of this struct, byte
    /// for byte (members in declaration order, `aud` left out when `None`), written by hand
    /// because every issued token pays for it (see [`crate::json`]).
    pub fn to_json(&self) -> Vec<u8> {
        use crate::json::{push_str, push_u64};
        let strings = self.iss.len()
            + self.sub.len()
            + self
                .aud
                .as_ref()
                .map_or(0, |a| a.iter().map(|s| s.len() + 3).sum())
            + self.jti.len()
            + self.client_id.len()
            + self.role.len()
            + self.scope.len();
        // Member names, quotes, separators and three 20-digit numbers at most.
        let mut out = Vec::with_capacity(strings + 160);
        out.extend_from_slice(b"{\"iss\":");
        push_str(&mut out, &self.iss);
        out.extend_from_slice(b",\"sub\":");
        push_str(&mut out, &self.sub);
        match &self.aud {
            None => {}
            Some(Audience::One(aud)) => {
                out.extend_from_slice(b",\"aud\":");
                push_str(&mut out, aud);
            }
            Some(Audience::Many(auds)) => {
                out.extend_from_slice(b",\"aud\":[");
                for (i, aud) in auds.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    push_str(&mut out, aud);
                }
                out.push(b']');
            }
        }
        out.extend_from_slice(b",\"exp\":");
        push_u64(&mut out, self.exp);
        out.extend_from_slice(b",\"iat\":");
        push_u64(&mut out, self.iat);
        out.extend_from_slice(b",\"nbf\":");
        push_u64(&mut out, self.nbf);
        out.extend_from_slice(b",\"jti\":");
        push_str(&mut out, &self.jti);
        out.extend_from_slice(b",\"client_id\":");
        push_str(&mut out, &self.client_id);
        out.extend_from_slice(b",\"role\":");
        push_str(&mut out, &self.role);
        out.extend_from_slice(b",\"scope\":");
        push_str(&mut out, &self.scope);
        out.push(b'}');
        out
    }

    /// The granted scopes.
    pub fn scopes(&self) -> impl Iterator<Item = &str> {
        self.scope.split(' ').filter(|s| !s.is_empty())
    }

    /// True when `scope` was granted.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes().any(|s| s == scope)
    }
}

/// What a request demands of a valid token beyond its validity: one of `roles` (when any
/// is named) and every one of `scopes`. Unmet, the answer is 403 `insufficient_scope`
/// (RFC 6750 §3.1) naming the scopes demanded. `RequireAuthLayer` and keygate's own
/// `/verify?role=&scope=` both decide with it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Demands {
    /// Any one of these roles; none named: any role.
    pub roles: Vec<String>,
    /// Every one of these scopes.
    pub scopes: Vec<String>,
}

impl Demands {
    /// True when `claims` meet every demand.
    pub fn met_by(&self, claims: &Claims) -> bool {
        (self.roles.is_empty() || self.roles.contains(&claims.role))
            && self.scopes.iter().all(|s| claims.has_scope(s))
    }

    /// The scopes demanded, space-separated: the `scope` of the `insufficient_scope`
    /// challenge.
    pub fn scope(&self) -> String {
        self.scopes.join(" ")
    }
}

/// `aud`: one string or an array (RFC 7519 §4.1.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(untagged)]
pub enum Audience {
    /// A single audience.
    One(String),
    /// Several audiences.
    Many(Vec<String>),
}

impl Audience {
    /// Every audience named.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        let slice: &[String] = match self {
            Audience::One(a) => std::slice::from_ref(a),
            Audience::Many(v) => v,
        };
        slice.iter().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(role: &str, scope: &str) -> Claims {
        Claims {
            iss: "https://keygate.example".into(),
            sub: "billing".into(),
            aud: None,
            exp: 2,
            iat: 1,
            nbf: 1,
            jti: "j".into(),
            client_id: "billing".into(),
            role: role.into(),
            scope: scope.into(),
        }
    }

    #[test]
    fn demands_are_one_of_the_roles_and_every_scope() {
        let none = Demands::default();
        assert!(none.met_by(&claims("service", "")));
        let demands = Demands {
            roles: vec!["admin".into(), "service".into()],
            scopes: vec!["orders:read".into(), "orders:write".into()],
        };
        assert!(demands.met_by(&claims("service", "orders:write orders:read")));
        assert!(
            !demands.met_by(&claims("user", "orders:write orders:read")),
            "role unmet"
        );
        assert!(
            !demands.met_by(&claims("admin", "orders:read")),
            "a scope missing"
        );
        assert!(
            !demands.met_by(&claims("admin", "orders:reader orders:write")),
            "whole scopes only"
        );
        assert_eq!(demands.scope(), "orders:read orders:write");
    }

    #[test]
    fn the_payload_is_serde_jsons_byte_for_byte() {
        let mut c = claims("service", "orders:read orders:write");
        c.exp = 1_796_610_635;
        c.jti = "aCdBNR0DNcwqcifw4hvGFw".into();
        let audiences = [
            None,
            Some(Audience::One("https://api.example".into())),
            Some(Audience::Many(vec![])),
            Some(Audience::Many(vec!["a".into(), "b \"quoted\"".into()])),
        ];
        for aud in audiences {
            c.aud = aud;
            for role in ["service", "odd\\role\n", "é✓"] {
                c.role = role.into();
                assert_eq!(
                    String::from_utf8(c.to_json()).unwrap(),
                    serde_json::to_string(&c).unwrap()
                );
            }
        }
    }
}
