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
    /// The granted scopes.
    pub fn scopes(&self) -> impl Iterator<Item = &str> {
        self.scope.split(' ').filter(|s| !s.is_empty())
    }

    /// True when `scope` was granted.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes().any(|s| s == scope)
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
