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

impl IntoResponse for AuthRejection {
    fn into_response(self) -> Response {
        let (error, description, challenge) = match &self {
            AuthRejection::MissingToken => (
                "invalid_token",
                "a bearer token is required",
                Some("Bearer realm=\"keygate\"".to_owned()),
            ),
            AuthRejection::InvalidRequest => (
                "invalid_request",
                "more than one Authorization header",
                Some("Bearer realm=\"keygate\", error=\"invalid_request\"".to_owned()),
            ),
            AuthRejection::InvalidToken(_) => (
                "invalid_token",
                "the token is invalid, expired or revoked",
                Some("Bearer realm=\"keygate\", error=\"invalid_token\"".to_owned()),
            ),
            AuthRejection::InsufficientScope(scope) => (
                "insufficient_scope",
                "the token lacks the required role or scope",
                Some(format!(
                    "Bearer realm=\"keygate\", error=\"insufficient_scope\", scope=\"{}\"",
                    scope.replace(['"', '\\'], "")
                )),
            ),
        };
        let body = serde_json::json!({"error": error, "error_description": description});
        let mut response = (self.status(), Json(body)).into_response();
        if let Some(v) = challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
        response
    }
}
