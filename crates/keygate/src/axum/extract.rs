//! [`Authenticated`]: the verified claims of a request.

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;

use super::{AuthRejection, bearer_token};
use crate::token::{Authority, Claims};

/// The verified claims of the request's bearer token. A handler taking it runs only for
/// requests with a valid token; the others get [`AuthRejection`]. Behind a
/// [`super::RequireAuthLayer`] it reuses the layer's verification.
///
/// The [`Authority`] comes from the router's state: a [`crate::token::Verifier`] holding
/// the secret or public keys, or (feature `jwks`) a [`crate::token::Authority::Jwks`]
/// that fetches keygate's JWKS.
///
/// ```
/// use axum::{Router, routing::get, extract::FromRef};
/// use keygate::axum::{Authenticated, AuthRejection};
/// use keygate::token::{Authority, Verifier};
///
/// #[derive(Clone, FromRef)]
/// struct AppState { tokens: Authority }
///
/// async fn orders(auth: Authenticated) -> Result<String, AuthRejection> {
///     auth.require_scope("orders:read")?;
///     Ok(format!("orders of {}", auth.claims().sub))
/// }
///
/// # fn app(verifier: Verifier) -> Router {
/// Router::new().route("/orders", get(orders)).with_state(AppState { tokens: verifier.into() })
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Authenticated(pub Claims);

impl Authenticated {
    /// The verified claims.
    pub fn claims(&self) -> &Claims {
        &self.0
    }

    /// 403 `insufficient_scope` unless the token's role is `role`.
    pub fn require_role(&self, role: &str) -> Result<&Claims, AuthRejection> {
        if self.0.role == role {
            Ok(&self.0)
        } else {
            Err(AuthRejection::InsufficientScope(String::new()))
        }
    }

    /// 403 `insufficient_scope` unless the token was granted `scope`.
    pub fn require_scope(&self, scope: &str) -> Result<&Claims, AuthRejection> {
        if self.0.has_scope(scope) {
            Ok(&self.0)
        } else {
            Err(AuthRejection::InsufficientScope(scope.to_owned()))
        }
    }
}

impl<S> FromRequestParts<S> for Authenticated
where
    Authority: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = AuthRejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        // Only what keygate's own layer verified; a `Claims` another layer inserted is not
        // evidence of anything.
        if let Some(super::Verified(claims)) = parts.extensions.get::<super::Verified>() {
            return Ok(Self(claims.clone()));
        }
        let authority = Authority::from_ref(state);
        let token = bearer_token(&parts.headers)?;
        authority
            .verify(token)
            .await
            .map(Self)
            .map_err(AuthRejection::InvalidToken)
    }
}
