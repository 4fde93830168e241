//! Feature `axum`: trusting keygate tokens in an axum service, with no call to keygate.
//!
//! - [`Authenticated`]: an extractor yielding the verified [`Claims`] of the request's
//!   `Authorization: Bearer` token; 401 otherwise. The [`Authority`] (a [`Verifier`], or
//!   keygate's JWKS with feature `jwks`) comes from the router's state
//!   (`Authority: FromRef<S>`), never from a global.
//! - [`RequireAuthLayer`]: a tower layer that verifies every request, demands a role or
//!   scopes, and puts the [`Claims`] in the request extensions.
//! - [`PresentedApiKey`]: the API key of a request, from the [`ApiKeySources`] a service
//!   accepts (header, query, cookie; conflicting keys refused), to check with
//!   [`crate::principal::Directory`].
//! - [`AuthRejection`]: the 401/403 answer, with `WWW-Authenticate` exactly as RFC 6750
//!   says and keygate's own endpoints send it.
//!
//! Offline verification checks signature, algorithm, `typ`, `crit`, times, `iss` and `aud`.
//! It cannot see keygate's revocation list: keep `token.ttl` short, or ask keygate's
//! `/introspect` where a logout must take effect at once.
//!
//! [`Claims`]: crate::token::Claims
//! [`Verifier`]: crate::token::Verifier
//! [`Authority`]: crate::token::Authority

mod api_key;
mod extract;
mod layer;
mod rejection;

pub use api_key::{ApiKeyRejection, ApiKeySources, PresentedApiKey};
pub use extract::Authenticated;
pub use layer::{RequireAuth, RequireAuthLayer};
pub use rejection::{AuthRejection, BearerRefusal, REALM};

/// The claims [`RequireAuthLayer`] verified, as [`Authenticated`] trusts them: a type no
/// code outside this crate can construct, so a layer inserting a [`Claims`] of its own into
/// the extensions cannot pass for keygate's verification.
///
/// [`Claims`]: crate::token::Claims
#[derive(Debug, Clone)]
struct Verified(crate::token::Claims);

// Also used by keygate-server, so the server and the services it issues tokens for read
// credentials from a request in exactly one way.

use axum::http::{HeaderMap, header};

/// The token of the single `Authorization: Bearer` header (the scheme is case-insensitive,
/// RFC 9110 §11.1). No header, or another scheme (`Basic` …): [`AuthRejection::MissingToken`].
/// Two headers: [`AuthRejection::InvalidRequest`] (400, RFC 6750 §2). An unreadable value, or
/// `Bearer` without exactly one token: [`AuthRejection::InvalidToken`] (401, so a forward-auth
/// proxy only ever sees 200, 401 or 403 for one header).
pub fn bearer_token(headers: &HeaderMap) -> Result<&str, AuthRejection> {
    let malformed = || {
        AuthRejection::InvalidToken(
            crate::error::TokenError::Malformed("Authorization header").into(),
        )
    };
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let value = match (values.next(), values.next()) {
        (None, _) => return Err(AuthRejection::MissingToken),
        (Some(_), Some(_)) => return Err(AuthRejection::InvalidRequest),
        (Some(v), None) => v.to_str().map_err(|_| malformed())?,
    };
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
            if token.is_empty() || token.as_bytes().contains(&b' ') {
                Err(malformed())
            } else {
                Ok(token)
            }
        }
        _ if value.eq_ignore_ascii_case("bearer") => Err(malformed()),
        _ => Err(AuthRejection::MissingToken),
    }
}

/// A cookie sent more than once in one request: which copy counts is ambiguous, so none does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a cookie is repeated")]
pub struct RepeatedCookie;

/// The value of cookie `name`, across every `Cookie` header. An empty value counts as absent.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, RepeatedCookie> {
    let mut found = None;
    for value in headers.get_all(header::COOKIE) {
        let Ok(value) = value.to_str() else { continue };
        for pair in value.split(';') {
            if let Some((k, v)) = pair.trim().split_once('=')
                && k == name
            {
                if found.is_some() {
                    return Err(RepeatedCookie);
                }
                found = Some(v.trim_matches('"'));
            }
        }
    }
    Ok(found.filter(|v| !v.is_empty()))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::Router;
    use axum::body::Body;
    use axum::extract::FromRef;
    use axum::http::{Request, StatusCode};
    use axum::routing::get;
    use tower::ServiceExt;

    use super::*;
    use crate::token::{
        Authority, Claims, Grant, HmacSecret, Issuer, SigningAlgorithm, TokenPolicy, Verifier,
    };

    #[derive(Clone)]
    struct AppState {
        tokens: Authority,
    }

    impl FromRef<AppState> for Authority {
        fn from_ref(state: &AppState) -> Self {
            state.tokens.clone()
        }
    }

    fn keys() -> (Issuer, Arc<Verifier>) {
        let secret: HmacSecret = HmacSecret::generate_hex().unwrap().parse().unwrap();
        let policy = TokenPolicy::new("https://auth.test");
        (
            Issuer::hmac(SigningAlgorithm::HS256, &secret, policy.clone()).unwrap(),
            Arc::new(Verifier::hmac(SigningAlgorithm::HS256, &secret, policy).unwrap()),
        )
    }

    fn token(issuer: &Issuer, role: &str, scopes: &[&str]) -> String {
        let scopes: Vec<String> = scopes.iter().map(|s| (*s).to_owned()).collect();
        let grant = Grant {
            subject: "billing",
            client_id: "billing",
            role,
            scopes: &scopes,
        };
        issuer.issue(&grant).unwrap().token
    }

    async fn call(app: &Router, auth: Option<&str>) -> axum::response::Response {
        let mut req = Request::get("/orders");
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        app.clone()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    fn challenge(r: &axum::response::Response) -> &str {
        r.headers()["www-authenticate"].to_str().unwrap()
    }

    async fn orders(auth: Authenticated) -> Result<String, AuthRejection> {
        auth.require_scope("orders:read")?;
        Ok(auth.claims().sub.clone())
    }

    /// A layer of the service's own (or a dependency's) that puts a `Claims` into the
    /// extensions does not authenticate the request: only keygate's layer does.
    #[tokio::test]
    async fn claims_inserted_by_another_layer_are_not_trusted() {
        let (issuer, verifier) = keys();
        let forged = Claims {
            sub: "admin".into(),
            role: "admin".into(),
            scope: "orders:read".into(),
            ..verifier
                .verify(&token(&issuer, "service", &["orders:read"]))
                .unwrap()
        };
        let app = Router::new()
            .route("/orders", get(orders))
            .layer(axum::Extension(forged))
            .with_state(AppState {
                tokens: verifier.clone().into(),
            });
        let r = call(&app, None).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        // Behind keygate's layer, its own verification is what the extractor reads.
        let app = Router::new()
            .route("/orders", get(orders))
            .layer(RequireAuthLayer::new(verifier.clone()))
            .with_state(AppState {
                tokens: verifier.into(),
            });
        let good = token(&issuer, "service", &["orders:read"]);
        let r = call(&app, Some(&format!("Bearer {good}"))).await;
        assert_eq!(r.status(), StatusCode::OK);
        let body = axum::body::to_bytes(r.into_body(), 1024).await.unwrap();
        assert_eq!(&body[..], b"billing");
    }

    #[tokio::test]
    async fn the_extractor_admits_valid_tokens_only() {
        let (issuer, verifier) = keys();
        let app = Router::new()
            .route("/orders", get(orders))
            .with_state(AppState {
                tokens: verifier.into(),
            });
        let good = token(&issuer, "service", &["orders:read"]);
        let r = call(&app, Some(&format!("Bearer {good}"))).await;
        assert_eq!(r.status(), StatusCode::OK);
        let r = call(&app, Some(&format!("bearer {good}"))).await;
        assert_eq!(r.status(), StatusCode::OK, "the scheme is case-insensitive");

        let r = call(&app, None).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(challenge(&r), "Bearer realm=\"keygate\"");

        let (other, _) = keys();
        let foreign = token(&other, "service", &["orders:read"]);
        let r = call(&app, Some(&format!("Bearer {foreign}"))).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            challenge(&r),
            "Bearer realm=\"keygate\", error=\"invalid_token\", error_description=\"the token is invalid, expired or revoked\""
        );

        let narrow = token(&issuer, "service", &["orders:write"]);
        let r = call(&app, Some(&format!("Bearer {narrow}"))).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            challenge(&r),
            "Bearer realm=\"keygate\", error=\"insufficient_scope\", scope=\"orders:read\""
        );

        let r = call(&app, Some("Bearer ")).await;
        assert_eq!(
            r.status(),
            StatusCode::UNAUTHORIZED,
            "a malformed bearer token is a bad token"
        );
        let r = call(&app, Some("Basic YTpi")).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn the_layer_guards_every_route_and_hands_on_the_claims() {
        let (issuer, verifier) = keys();
        let app = Router::new()
            .route(
                "/orders",
                get(|axum::Extension(c): axum::Extension<Claims>| async move { c.role }),
            )
            .layer(
                RequireAuthLayer::new(verifier)
                    .role("service")
                    .role("ops")
                    .scope("orders:read"),
            );
        let good = token(&issuer, "ops", &["orders:read", "orders:write"]);
        let r = call(&app, Some(&format!("Bearer {good}"))).await;
        assert_eq!(r.status(), StatusCode::OK);
        let body = axum::body::to_bytes(r.into_body(), 1024).await.unwrap();
        assert_eq!(&body[..], b"ops");

        assert_eq!(call(&app, None).await.status(), StatusCode::UNAUTHORIZED);
        let wrong_role = token(&issuer, "user", &["orders:read"]);
        let r = call(&app, Some(&format!("Bearer {wrong_role}"))).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        let no_scope = token(&issuer, "service", &[]);
        let r = call(&app, Some(&format!("Bearer {no_scope}"))).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        let tampered = format!("{}x", &good[..good.len() - 1]);
        let r = call(&app, Some(&format!("Bearer {tampered}"))).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
}
