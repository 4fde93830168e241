//! What every response carries, whoever wrote it: `X-Content-Type-Options: nosniff`, the
//! OAuth error shape for the framework's own 404, 405 and 413 (which would otherwise be
//! empty or plain text), and on the Swagger UI pages a `Content-Security-Policy` and
//! `X-Frame-Options: DENY` (docs/security.md).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::rejection::Rejection;

/// Swagger UI loads its own script and styles from keygate and nothing else; its inline
/// styles need `'unsafe-inline'` for `style-src` only, and schema icons are `data:` images.
const DOCS_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// Gives `response` what every answer carries; `docs` when the request was for the
/// Swagger UI pages.
pub(crate) fn harden(mut response: Response, docs: bool) -> Response {
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !is_json {
        let replacement = match response.status() {
            StatusCode::NOT_FOUND => Some(Rejection::NotFound),
            StatusCode::METHOD_NOT_ALLOWED => Some(Rejection::MethodNotAllowed),
            StatusCode::PAYLOAD_TOO_LARGE => Some(Rejection::PayloadTooLarge),
            _ => None,
        };
        if let Some(rejection) = replacement {
            let allow = response.headers().get(header::ALLOW).cloned();
            response = rejection.into_response();
            if let Some(allow) = allow {
                response.headers_mut().insert(header::ALLOW, allow);
            }
        }
    }
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if docs {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(DOCS_CSP),
        );
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    }
    response
}

/// The refusals the connection loop writes itself, outside the router: the request did not
/// arrive in time (408), too many requests are in flight (503), and hyper's own answers to
/// a request it cannot parse (400, 414, 431).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConnectionRefusal {
    /// 408: the whole request did not arrive within `server.request_timeout`.
    Timeout,
    /// 503 `temporarily_unavailable`: every request slot of the server is taken.
    Busy,
    /// 400: hyper could not parse the request (request line, header, duplicate length).
    Malformed,
    /// 414: the request target is too long.
    UriTooLong,
    /// 431: the request headers are over the cap.
    HeadersTooLarge,
}

impl ConnectionRefusal {
    /// The refusal hyper meant with an automatic `status`, if it is one of them.
    pub(crate) fn of_status(status: u16) -> Option<Self> {
        match status {
            400 => Some(Self::Malformed),
            414 => Some(Self::UriTooLong),
            431 => Some(Self::HeadersTooLarge),
            _ => None,
        }
    }

    fn parts(self) -> (StatusCode, &'static str, &'static str) {
        match self {
            Self::Timeout => (
                StatusCode::REQUEST_TIMEOUT,
                "invalid_request",
                "the request did not arrive in time",
            ),
            Self::Busy => (
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "the server is temporarily unable to handle the request",
            ),
            Self::Malformed => (
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "the request is malformed",
            ),
            Self::UriTooLong => (
                StatusCode::URI_TOO_LONG,
                "invalid_request",
                "the request target is too long",
            ),
            Self::HeadersTooLarge => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "invalid_request",
                "the request headers are too large",
            ),
        }
    }

    fn body(self) -> String {
        let (_, error, description) = self.parts();
        serde_json::json!({"error": error, "error_description": description}).to_string()
    }

    /// The answer in the OAuth error shape, with what every answer carries (and
    /// `Retry-After: 1` on 503).
    pub(crate) fn response(self) -> Response {
        let (status, _, _) = self.parts();
        let mut response = (
            status,
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            self.body(),
        )
            .into_response();
        if self == Self::Busy {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        harden(response, false)
    }

    /// The same answer as raw HTTP/1.1 bytes, closing the connection: written in place of
    /// hyper's own header-only answer to a request it could not parse (see
    /// `server/connection.rs`).
    pub(crate) fn http1_bytes(self) -> Vec<u8> {
        let (status, _, _) = self.parts();
        let body = self.body();
        format!(
            "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncache-control: no-store\r\n\
x-content-type-options: nosniff\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
            status.as_u16(),
            status.canonical_reason().unwrap_or(""),
            body.len(),
        )
        .into_bytes()
    }
}
