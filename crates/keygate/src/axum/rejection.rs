//! [`AuthRejection`]: what a request without a valid token gets.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::Error;

/// A request refused for its token. Its response says nothing about which check failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum AuthRejection {
    /// No bearer token: 401 with a bare `Bearer` challenge.
    MissingToken,
    /// More than one `Authorization` header: 400 `invalid_request`.
    InvalidRequest,
    /// The token failed verification (the reason is for logs): 401 `invalid_token`.
    InvalidToken(Error),
    /// The token lacks the demanded role or scope: 403 `insufficient_scope`.
    InsufficientScope(String),
}

impl AuthRejection {
    /// The status code.
    pub fn status(&self) -> StatusCode {
        match self {
            AuthRejection::MissingToken | AuthRejection::InvalidToken(_) => {
                StatusCode::UNAUTHORIZED
            }
            AuthRejection::InvalidRequest => StatusCode::BAD_REQUEST,
            AuthRejection::InsufficientScope(_) => StatusCode::FORBIDDEN,
        }
    }
}

impl std::fmt::Display for AuthRejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuthRejection::MissingToken => f.write_str("no bearer token"),
            AuthRejection::InvalidRequest => f.write_str("more than one Authorization header"),
            AuthRejection::InvalidToken(e) => write!(f, "invalid token: {e}"),
            AuthRejection::InsufficientScope(s) => write!(f, "insufficient scope (needs {s})"),
        }
    }
}

impl AuthRejection {
    /// What the answer says: the one vocabulary keygate's own endpoints use too.
    pub fn refusal(&self) -> BearerRefusal {
        match self {
            AuthRejection::MissingToken => BearerRefusal::MissingToken,
            AuthRejection::InvalidRequest => BearerRefusal::RepeatedHeader,
            AuthRejection::InvalidToken(_) => BearerRefusal::InvalidToken,
            AuthRejection::InsufficientScope(scope) => {
                BearerRefusal::InsufficientScope(scope.clone())
            }
        }
    }
}

impl IntoResponse for AuthRejection {
    fn into_response(self) -> Response {
        self.refusal().into_response()
    }
}

/// The realm named in every challenge.
pub const REALM: &str = "keygate";

/// A refusal of a bearer token, as RFC 6750 §3 words it: status, OAuth error code, a
/// fixed description and the `WWW-Authenticate` challenge. keygate's `/verify`,
/// `/userinfo` and `/logout` answer through this type too, so a service behind
/// [`super::RequireAuthLayer`] and keygate itself refuse a token in the same bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BearerRefusal {
    /// No token: 401 with a bare challenge (§3.1: no error code when no credential came).
    MissingToken,
    /// More than one `Authorization` header: 400 `invalid_request` (§2: one method only).
    RepeatedHeader,
    /// Bad, expired or revoked: 401 `invalid_token`.
    InvalidToken,
    /// Role or scope unmet: 403 `insufficient_scope`, naming the demanded scopes
    /// (space-separated; characters outside RFC 6749 §3.3 are dropped from the header).
    InsufficientScope(String),
}

impl BearerRefusal {
    /// The status code.
    pub fn status(&self) -> StatusCode {
        match self {
            BearerRefusal::MissingToken | BearerRefusal::InvalidToken => StatusCode::UNAUTHORIZED,
            BearerRefusal::RepeatedHeader => StatusCode::BAD_REQUEST,
            BearerRefusal::InsufficientScope(_) => StatusCode::FORBIDDEN,
        }
    }

    /// The OAuth error code of the body.
    pub fn error(&self) -> &'static str {
        match self {
            BearerRefusal::MissingToken | BearerRefusal::InvalidToken => "invalid_token",
            BearerRefusal::RepeatedHeader => "invalid_request",
            BearerRefusal::InsufficientScope(_) => "insufficient_scope",
        }
    }

    /// A fixed sentence: it never echoes input or says which check failed.
    pub fn description(&self) -> &'static str {
        match self {
            BearerRefusal::MissingToken => "a bearer token is required",
            BearerRefusal::RepeatedHeader => "more than one Authorization header",
            BearerRefusal::InvalidToken => "the token is invalid, expired or revoked",
            BearerRefusal::InsufficientScope(_) => "the token lacks the required role or scope",
        }
    }

    /// The `WWW-Authenticate` value; `None` for a malformed request (400).
    pub fn challenge(&self) -> Option<HeaderValue> {
        let text = match self {
            BearerRefusal::MissingToken => format!("Bearer realm=\"{REALM}\""),
            BearerRefusal::RepeatedHeader => return None,
            BearerRefusal::InvalidToken => format!(
                "Bearer realm=\"{REALM}\", error=\"invalid_token\", error_description=\"{}\"",
                self.description()
            ),
            BearerRefusal::InsufficientScope(scope) => {
                let scope = challenge_scope(scope);
                if scope.is_empty() {
                    format!("Bearer realm=\"{REALM}\", error=\"insufficient_scope\"")
                } else {
                    format!(
                        "Bearer realm=\"{REALM}\", error=\"insufficient_scope\", scope=\"{scope}\""
                    )
                }
            }
        };
        HeaderValue::from_str(&text).ok()
    }
}

/// The demanded scopes as the challenge names them: RFC 6749 §3.3 scope tokens only
/// (printable ASCII without `"` or `\`), one space between them.
fn challenge_scope(scope: &str) -> String {
    scope
        .split([' ', ','])
        .map(|s| {
            s.chars()
                .filter(|c| c.is_ascii_graphic() && *c != '"' && *c != '\\')
                .collect::<String>()
        })
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

impl IntoResponse for BearerRefusal {
    fn into_response(self) -> Response {
        let body =
            serde_json::json!({"error": self.error(), "error_description": self.description()});
        let mut response = (self.status(), Json(body)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(v) = self.challenge() {
            headers.insert(header::WWW_AUTHENTICATE, v);
        }
        response
    }
}
