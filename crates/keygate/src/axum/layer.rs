//! [`RequireAuthLayer`]: verify every request of a router (and demand a role or scopes).

use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::http::{Request, Response};
use axum::response::IntoResponse;
use tower::{Layer, Service};

use super::{AuthRejection, bearer_token};
use crate::token::{Authority, Claims, Demands};

/// Verifies the bearer token of every request, checks the demanded role and scopes, and
/// puts the [`crate::token::Claims`] in the request extensions (read them with
/// `Extension<Claims>` or [`super::Authenticated`]). Refused requests never reach the
/// inner service.
///
/// ```
/// use axum::{Router, Extension, routing::get, body::Body, http::{Request, StatusCode}};
/// use keygate::axum::RequireAuthLayer;
/// use keygate::token::{Claims, Grant, HmacSecret, Issuer, SigningAlgorithm, TokenPolicy, Verifier};
/// use tower::ServiceExt;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let secret: HmacSecret = HmacSecret::generate_hex()?.parse()?;
/// let policy = TokenPolicy::new("https://auth.example.com");
/// let verifier = Verifier::hmac(SigningAlgorithm::HS256, &secret, policy.clone())?;
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
    policy: Arc<Policy>,
}

#[derive(Debug)]
struct Policy {
    authority: Authority,
    demands: Demands,
}

impl RequireAuthLayer {
    /// Demands a valid token, verified by `authority` (a `Verifier`, an `Arc<Verifier>`,
    /// or an [`Authority`]).
    pub fn new(authority: impl Into<Authority>) -> Self {
        Self {
            policy: Arc::new(Policy {
                authority: authority.into(),
                demands: Demands::default(),
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
        let mut demands = self.policy.demands.clone();
        f(&mut demands);
        Self {
            policy: Arc::new(Policy {
                authority: self.policy.authority.clone(),
                demands,
            }),
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
    policy: Arc<Policy>,
}

impl Policy {
    async fn check(&self, token: Result<String, AuthRejection>) -> Result<Claims, AuthRejection> {
        let claims = self
            .authority
            .verify(&token?)
            .await
            .map_err(AuthRejection::InvalidToken)?;
        if !self.demands.met_by(&claims) {
            return Err(AuthRejection::InsufficientScope(self.demands.scope()));
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
        // The clone that was polled ready serves this request (tower's rule).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let policy = self.policy.clone();
        // Owned before the await: a request body is not `Sync`, so no borrow of it may
        // live across one.
        let token = bearer_token(req.headers()).map(str::to_owned);
        Box::pin(async move {
            match policy.check(token).await {
                Ok(claims) => {
                    req.extensions_mut().insert(super::Verified(claims.clone()));
                    req.extensions_mut().insert(claims);
                    inner.call(req).await
                }
                Err(rejection) => Ok(rejection.into_response()),
            }
        })
    }
}
