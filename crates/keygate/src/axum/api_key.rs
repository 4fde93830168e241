//! [`PresentedApiKey`]: the API key of a request, from the sources a service accepts — the
//! seed's `APIKeyHeader` / `APIKeyQuery` / `APIKeyCookie`, checked for conflicts.

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::cookie;

/// Where a service reads API keys. Empty names are off. Defaults to the header
/// `X-API-Key` only: keys in URLs end up in logs.
#[derive(Debug, Clone)]
pub struct ApiKeySources {
    /// Header name.
    pub header: String,
    /// Query parameter name.
    pub query: String,
    /// Cookie name.
    pub cookie: String,
}

impl Default for ApiKeySources {
    fn default() -> Self {
        Self {
            header: "X-API-Key".into(),
            query: String::new(),
            cookie: String::new(),
        }
    }
}

/// The API key a request presents, not yet checked: hand it to
/// [`crate::principal::Directory::authenticate_key`]. No key → 401; a key repeated, or
/// different keys by different sources → 400 (ASVS 15.3.7).
#[derive(Clone)]
pub struct PresentedApiKey(pub String);

impl std::fmt::Debug for PresentedApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PresentedApiKey([redacted])")
    }
}

/// Why a request has no usable API key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiKeyRejection {
    /// No source carried a key: 401 `invalid_client`.
    Missing,
    /// A repeated, unreadable or conflicting key: 400 `invalid_request`.
    Invalid,
}

impl IntoResponse for ApiKeyRejection {
    fn into_response(self) -> Response {
        let (status, error, description) = match self {
            ApiKeyRejection::Missing => (
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "an API key is required",
            ),
            ApiKeyRejection::Invalid => (
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "the API key is repeated, unreadable or presented differently twice",
            ),
        };
        let body = serde_json::json!({"error": error, "error_description": description});
        let mut response = (status, axum::Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("ApiKey realm=\"keygate\""),
            );
        }
        response
    }
}

impl<S> FromRequestParts<S> for PresentedApiKey
where
    ApiKeySources: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiKeyRejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        ApiKeySources::from_ref(state)
            .find(&parts.headers, parts.uri.query())?
            .map(Self)
            .ok_or(ApiKeyRejection::Missing)
    }
}

impl ApiKeySources {
    /// The key these sources carry in a request (`query` is the raw query string), `None`
    /// when none does. A repeated, unreadable or conflicting key is
    /// [`ApiKeyRejection::Invalid`].
    pub fn find(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
    ) -> Result<Option<String>, ApiKeyRejection> {
        let mut found: Vec<String> = Vec::new();
        if !self.header.is_empty() {
            let mut values = headers.get_all(self.header.as_str()).iter();
            match (values.next(), values.next()) {
                (Some(_), Some(_)) => return Err(ApiKeyRejection::Invalid),
                (Some(v), None) => {
                    found.push(v.to_str().map_err(|_| ApiKeyRejection::Invalid)?.to_owned());
                }
                (None, _) => {}
            }
        }
        if !self.query.is_empty() {
            // Not axum's `Query`: it keeps one of repeated keys, and a repeat is refused here.
            let mut values = form_urlencoded::parse(query.unwrap_or("").as_bytes())
                .filter(|(k, _)| *k == self.query.as_str())
                .map(|(_, v)| v.into_owned());
            match (values.next(), values.next()) {
                (Some(_), Some(_)) => return Err(ApiKeyRejection::Invalid),
                (Some(v), None) => found.push(v),
                (None, _) => {}
            }
        }
        if !self.cookie.is_empty()
            && let Some(v) = cookie(headers, &self.cookie).map_err(|_| ApiKeyRejection::Invalid)?
        {
            found.push(v.to_owned());
        }
        found.retain(|k| !k.is_empty());
        match found.as_slice() {
            [] => Ok(None),
            [first, rest @ ..] if rest.iter().all(|k| k == first) => Ok(Some(first.clone())),
            _ => Err(ApiKeyRejection::Invalid),
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use axum::routing::get;
    use tower::ServiceExt;

    use super::*;

    async fn status(sources: ApiKeySources, req: Request<Body>) -> (StatusCode, String) {
        let app = Router::new()
            .route(
                "/",
                get(|PresentedApiKey(k): PresentedApiKey| async move { k }),
            )
            .with_state(sources);
        let r = app.oneshot(req).await.unwrap();
        let status = r.status();
        let body = axum::body::to_bytes(r.into_body(), 1024).await.unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn keys_come_from_the_configured_sources_only() {
        let all = ApiKeySources {
            header: "access_token".into(),
            query: "api_key".into(),
            cookie: "api_key".into(),
        };
        let req = |uri: &str| Request::get(uri);
        let (s, body) = status(
            all.clone(),
            req("/")
                .header("access_token", "k1")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!((s, body.as_str()), (StatusCode::OK, "k1"));
        let (s, body) = status(
            all.clone(),
            req("/?api_key=k%2B1").body(Body::empty()).unwrap(),
        )
        .await;
        assert_eq!((s, body.as_str()), (StatusCode::OK, "k+1"));
        let (s, body) = status(
            all.clone(),
            req("/")
                .header("cookie", "a=b; api_key=k3")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!((s, body.as_str()), (StatusCode::OK, "k3"));
        let (s, _) = status(
            all.clone(),
            req("/?api_key=a&api_key=b").body(Body::empty()).unwrap(),
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        let (s, _) = status(
            all.clone(),
            req("/?api_key=a")
                .header("access_token", "b")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        let (s, _) = status(all, req("/").body(Body::empty()).unwrap()).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        let (s, _) = status(
            ApiKeySources::default(),
            req("/?api_key=k").body(Body::empty()).unwrap(),
        )
        .await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "query keys are off by default");
    }
}
