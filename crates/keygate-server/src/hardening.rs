//! What every response carries, whoever wrote it: `X-Content-Type-Options: nosniff`, the
//! OAuth error shape for the framework's own 404, 405 and 413 (which would otherwise be
//! empty or plain text), and on the Swagger UI pages a `Content-Security-Policy` and
//! `X-Frame-Options: DENY` (SPEC §9).

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
