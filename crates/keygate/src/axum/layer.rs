//! [`RequireAuthLayer`]: verify every request of a router (and demand a role or scopes).

use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::http::{Request, Response};
use axum::response::IntoResponse;
use tower::{Layer, Service};

use super::{AuthRejection, bearer};
use crate::token::Verifier;

/// Verifies the bearer token of every request, checks the demanded role and scopes, and
/// puts the [`crate::token::Claims`] in the request extensions (read them with
/// `Extension<Claims>` or [`super::Authenticated`]). Refused requests never reach the
/// inner service.
///
/// ```
/// use std::sync::Arc;
/// use axum::{Router, Extension, routing::get, body::Body, http::{Request, StatusCode}};
/// use keygate::axum::RequireAuthLayer;
/// use keygate::token::{Claims, Grant, HmacSecret, Issuer, SigningAlgorithm, TokenPolicy, Verifier};
/// use tower::ServiceExt;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let secret: HmacSecret = HmacSecret::generate_hex()?.parse()?;
/// let policy = TokenPolicy::new("https://auth.example.com");
/// let verifier = Arc::new(Verifier::hmac(SigningAlgorithm::HS256, &secret, policy.clone())?);
/// let app = Router::new()
///     .route("/orders", get(|Extension(c): Extension<Claims>| async move { c.sub }))
///     .layer(RequireAuthLayer::new(verifier).scope("orders:read"));
///
/// let scopes = vec!["orders:read".to_owned()];
/// let grant = Grant { subject: "billing", client_id: "billing", role: "service", scopes: &scopes };
/// let token = Issuer::hmac(SigningAlgorithm::HS256, &secret, policy)?.issue(&grant)?.token;
///
/// let ok = Request::get("/orders").header("authorization", format!("Bearer {token}")).body(Body::empty())?;
/// assert_eq!(app.clone().oneshot(ok).await?.status(), StatusCode::OK);
/// let anonymous = Request::get("/orders").body(Body::empty())?;
/// assert_eq!(app.oneshot(anonymous).await?.status(), StatusCode::UNAUTHORIZED);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct RequireAuthLayer {
    policy: Arc<Demands>,
}

#[derive(Debug)]
struct Demands {
    verifier: Arc<Verifier>,
    roles: Vec<String>,
    scopes: Vec<String>,
}

impl RequireAuthLayer {
    /// Demands a valid token, verified by `verifier`.
    pub fn new(verifier: Arc<Verifier>) -> Self {
        Self {
            policy: Arc::new(Demands {
                verifier,
                roles: Vec::new(),
                scopes: Vec::new(),
            }),
        }
    }

    /// Also demands this role (several calls: any one of them).
    pub fn role(self, role: impl Into<String>) -> Self {
        self.with(|d| d.roles.push(role.into()))
    }

    /// Also demands this scope (several calls: every one of them).
    pub fn scope(self, scope: impl Into<String>) -> Self {
        self.with(|d| d.scopes.push(scope.into()))
    }

    fn with(self, f: impl FnOnce(&mut Demands)) -> Self {
        let mut demands = Demands {
            verifier: self.policy.verifier.clone(),
            roles: self.policy.roles.clone(),
            scopes: self.policy.scopes.clone(),
        };
        f(&mut demands);
        Self {
            policy: Arc::new(demands),
        }
    }
}

impl<S> Layer<S> for RequireAuthLayer {
    type Service = RequireAuth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireAuth {
            inner,
            policy: self.policy.clone(),
        }
    }
}

/// The service [`RequireAuthLayer`] wraps around another.
#[derive(Debug, Clone)]
pub struct RequireAuth<S> {
    inner: S,
    policy: Arc<Demands>,
}

impl Demands {
    fn check(&self, req: &Request<Body>) -> Result<crate::token::Claims, AuthRejection> {
        let token = bearer(req.headers())?;
        let claims = self
            .verifier
            .verify(token)
            .map_err(AuthRejection::InvalidToken)?;
        if !self.roles.is_empty() && !self.roles.contains(&claims.role) {
            return Err(AuthRejection::InsufficientScope(self.scopes.join(" ")));
        }
        if !self.scopes.iter().all(|s| claims.has_scope(s)) {
            return Err(AuthRejection::InsufficientScope(self.scopes.join(" ")));
        }
        Ok(claims)
    }
}

impl<S> Service<Request<Body>> for RequireAuth<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        match self.policy.check(&req) {
            Ok(claims) => {
                req.extensions_mut().insert(claims);
                // The clone that was polled ready serves this request (tower's rule).
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                Box::pin(async move { inner.call(req).await })
            }
            Err(rejection) => Box::pin(async move { Ok(rejection.into_response()) }),
        }
    }
}
