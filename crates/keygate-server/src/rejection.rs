//! [`Rejection`]: every refusal the server sends, with its status, `WWW-Authenticate`
//! and OAuth-shaped body decided here and nowhere else. Descriptions are fixed strings:
//! they never echo input or say which part of a credential was wrong.

use std::time::Duration;

use axum::Json;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use keygate::axum::{AuthRejection, BearerRefusal, REALM};

/// A refused request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// 400 `invalid_request` (RFC 6749 §5.2, RFC 6750 §3.1).
    InvalidRequest(&'static str),
    /// 400 `unsupported_grant_type`.
    UnsupportedGrantType,
    /// 400 `invalid_grant`: bad username or password.
    InvalidGrant,
    /// 400 `invalid_scope`: more scope asked for than the principal has.
    InvalidScope,
    /// 400 `unauthorized_client`: the client may not do this (revoke another client's token).
    UnauthorizedClient,
    /// 401 `invalid_client`. `basic` when the client used (or should use) HTTP Basic,
    /// which then gets a `Basic` challenge (RFC 6749 §5.2).
    InvalidClient {
        /// Challenge with `Basic` rather than the API-key scheme.
        basic: bool,
    },
    /// 401 with a bare `Bearer` challenge: no token was presented (RFC 6750 §3.1).
    MissingToken,
    /// 401 `invalid_token`: bad, expired or revoked.
    InvalidToken,
    /// 403 `insufficient_scope`, naming the demanded scopes (space-separated).
    InsufficientScope(String),
    /// 403 `access_denied`: a cross-site request carrying only the cookie.
    CrossSite,
    /// 404 `not_found`: no such endpoint.
    NotFound,
    /// 405 `method_not_allowed`: the endpoint exists, the method does not.
    MethodNotAllowed,
    /// 413 `invalid_request`: a body over the limit.
    PayloadTooLarge,
    /// 429 with `Retry-After`.
    TooManyAttempts(Duration),
    /// 429 `rate_limited`: over the client's quota; `Retry-After` and the RateLimit fields.
    RateLimited(Box<crate::quota::Decision>),
    /// 503 `temporarily_unavailable` with `Retry-After`.
    Unavailable(Duration),
    /// 500 `server_error`; details go to the log only.
    Internal,
}

/// The body of every refusal (RFC 6749 §5.2 shape).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// The OAuth error code (`invalid_client`, `invalid_token`, …).
    pub error: &'static str,
    /// A fixed, human-readable sentence; never echoes input.
    pub error_description: &'static str,
}

impl Rejection {
    /// The status code.
    pub fn status(&self) -> StatusCode {
        match self {
            Rejection::InvalidRequest(_)
            | Rejection::UnsupportedGrantType
            | Rejection::InvalidGrant
            | Rejection::InvalidScope
            | Rejection::UnauthorizedClient => StatusCode::BAD_REQUEST,
            Rejection::InvalidClient { .. } | Rejection::MissingToken | Rejection::InvalidToken => {
                StatusCode::UNAUTHORIZED
            }
            Rejection::InsufficientScope(_) | Rejection::CrossSite => StatusCode::FORBIDDEN,
            Rejection::NotFound => StatusCode::NOT_FOUND,
            Rejection::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Rejection::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Rejection::TooManyAttempts(_) | Rejection::RateLimited(_) => {
                StatusCode::TOO_MANY_REQUESTS
            }
            Rejection::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Rejection::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The token refusals, answered in the words of `keygate::axum`.
    fn bearer(&self) -> Option<BearerRefusal> {
        match self {
            Rejection::MissingToken => Some(BearerRefusal::MissingToken),
            Rejection::InvalidToken => Some(BearerRefusal::InvalidToken),
            Rejection::InsufficientScope(scope) => {
                Some(BearerRefusal::InsufficientScope(scope.clone()))
            }
            _ => None,
        }
    }

    fn body(&self) -> ErrorBody {
        let (error, error_description) = match self {
            Rejection::MissingToken | Rejection::InvalidToken | Rejection::InsufficientScope(_) => {
                let b = self.bearer().unwrap_or(BearerRefusal::InvalidToken);
                (b.error(), b.description())
            }
            Rejection::InvalidRequest(d) => ("invalid_request", *d),
            Rejection::UnsupportedGrantType => {
                ("unsupported_grant_type", "the grant type is not supported")
            }
            Rejection::InvalidGrant => ("invalid_grant", "invalid username or password"),
            Rejection::InvalidScope => (
                "invalid_scope",
                "the requested scope exceeds what was granted",
            ),
            Rejection::UnauthorizedClient => (
                "unauthorized_client",
                "the client is not allowed to do this",
            ),
            Rejection::InvalidClient { .. } => ("invalid_client", "client authentication failed"),
            Rejection::CrossSite => ("access_denied", "cross-site request refused"),
            Rejection::NotFound => ("not_found", "no such endpoint"),
            Rejection::MethodNotAllowed => (
                "method_not_allowed",
                "the endpoint does not take this method",
            ),
            Rejection::PayloadTooLarge => ("invalid_request", "the request body is too large"),
            Rejection::TooManyAttempts(_) => {
                ("too_many_attempts", "too many failed attempts; retry later")
            }
            Rejection::RateLimited(_) => {
                ("rate_limited", "the client's quota is used up; retry later")
            }
            Rejection::Unavailable(_) => (
                "temporarily_unavailable",
                "the server is temporarily unable to handle the request",
            ),
            Rejection::Internal => ("server_error", "internal error"),
        };
        ErrorBody {
            error,
            error_description,
        }
    }

    fn challenge(&self) -> Option<String> {
        match self {
            Rejection::InvalidClient { basic: true } => {
                Some(format!("Basic realm=\"{REALM}\", charset=\"UTF-8\""))
            }
            Rejection::InvalidClient { basic: false } => Some(format!("ApiKey realm=\"{REALM}\"")),
            _ => None,
        }
    }
}

impl From<AuthRejection> for Rejection {
    fn from(a: AuthRejection) -> Self {
        match a.refusal() {
            BearerRefusal::MissingToken => Rejection::MissingToken,
            BearerRefusal::InvalidToken => Rejection::InvalidToken,
            BearerRefusal::InsufficientScope(scope) => Rejection::InsufficientScope(scope),
            // `RepeatedHeader`, and whatever the library learns to refuse next.
            other => Rejection::InvalidRequest(other.description()),
        }
    }
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        if crate::telemetry::enabled() {
            crate::telemetry::record("keygate.refusal", self.body().error);
        }
        if let Some(refusal) = self.bearer() {
            return refusal.into_response();
        }
        let mut response = (self.status(), Json(self.body())).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(c) = self
            .challenge()
            .and_then(|c| HeaderValue::from_str(&c).ok())
        {
            headers.insert(header::WWW_AUTHENTICATE, c);
        }
        let retry_after = match &self {
            Rejection::TooManyAttempts(after) | Rejection::Unavailable(after) => Some(*after),
            Rejection::RateLimited(decision) => {
                rate_limit_headers(decision, headers);
                Some(decision.retry_after())
            }
            _ => None,
        };
        if let Some(after) = retry_after {
            let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        response
    }
}

/// Sets `RateLimit-Policy` and `RateLimit` from `decision` (README "Quotas").
pub(crate) fn rate_limit_headers(decision: &crate::quota::Decision, headers: &mut HeaderMap) {
    for (name, value) in decision.header_values() {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    }
}
