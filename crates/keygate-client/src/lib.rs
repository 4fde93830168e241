//! keygate-client: get a keygate token with an API key or client credentials, keep it,
//! and renew it before it expires — and once more when an API answers 401.
//!
//! | item | does |
//! |---|---|
//! | [`TokenClient`] | fetches (`/login` or `/token`), caches, renews; [`TokenClient::send`] adds the bearer token to a request |
//! | [`Credentials`] | an API key, or a client id and secret |
//! | [`ClientError`] | refused credentials (with the server's OAuth error code) or transport trouble |
//!
//! Under concurrency only one renewal runs at a time: callers that need a token while
//! one is being fetched wait for it instead of fetching their own.
//!
//! ```no_run
//! # async fn run() -> Result<(), keygate_client::ClientError> {
//! use keygate_client::TokenClient;
//!
//! let client = TokenClient::with_api_key("http://127.0.0.1:8080", "kg_billing_…");
//! let http = reqwest::Client::new();
//! let response = client.send(http.get("http://orders.internal/orders")).await?;
//! # Ok(()) }
//! ```

use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::Mutex;

/// How a client proves who it is.
#[derive(Clone)]
pub enum Credentials {
    /// An API key, sent to `POST /login` in a header.
    ApiKey {
        /// The key.
        key: String,
        /// The header keygate reads (`api_key.header`, default `X-API-Key`).
        header: String,
    },
    /// `grant_type=client_credentials` at `POST /token`, with HTTP Basic.
    ClientCredentials {
        /// The client id.
        client_id: String,
        /// Its API key.
        secret: String,
        /// Scopes to narrow the grant to (space-separated); all when `None`.
        scope: Option<String>,
    },
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::ApiKey { header, .. } => {
                write!(f, "ApiKey {{ header: {header:?}, key: [redacted] }}")
            }
            Credentials::ClientCredentials {
                client_id, scope, ..
            } => write!(
                f,
                "ClientCredentials {{ client_id: {client_id:?}, scope: {scope:?}, secret: [redacted] }}"
            ),
        }
    }
}

/// Why no token could be had.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// keygate refused the credentials (or the request): its status and OAuth error code.
    #[error("keygate refused: {status} {error}: {description}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// OAuth error code (`invalid_client`, …).
        error: String,
        /// The server's description.
        description: String,
    },
    /// keygate could not be reached, or answered something that is not a token response.
    #[error("keygate unreachable or unreadable: {0}")]
    Transport(#[from] reqwest::Error),
    /// A request to retry after 401 could not be cloned (a streaming body).
    #[error("the request cannot be retried (its body is a stream)")]
    NotRetryable,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: u64,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: String,
    #[serde(default)]
    error_description: String,
}

#[derive(Debug)]
struct Cached {
    token: String,
    renew_at: Instant,
}

/// Fetches, caches and renews keygate tokens. Share it (it is `Sync`; wrap it in an `Arc`).
#[derive(Debug)]
pub struct TokenClient {
    http: reqwest::Client,
    base: String,
    credentials: Credentials,
    cached: Mutex<Option<Cached>>,
}

impl TokenClient {
    /// A client logging in at `base_url` with an API key in `X-API-Key`.
    pub fn with_api_key(base_url: impl Into<String>, key: impl Into<String>) -> Self {
        Self::new(
            base_url,
            Credentials::ApiKey {
                key: key.into(),
                header: "X-API-Key".into(),
            },
        )
    }

    /// A client using `grant_type=client_credentials` at `base_url`.
    pub fn with_client_credentials(
        base_url: impl Into<String>,
        client_id: impl Into<String>,
        secret: impl Into<String>,
    ) -> Self {
        Self::new(
            base_url,
            Credentials::ClientCredentials {
                client_id: client_id.into(),
                secret: secret.into(),
                scope: None,
            },
        )
    }

    /// A client for `base_url` (keygate's public URL) with any credentials.
    pub fn new(base_url: impl Into<String>, credentials: Credentials) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: base_url.into().trim_end_matches('/').to_owned(),
            credentials,
            cached: Mutex::new(None),
        }
    }

    /// Uses `http` (timeouts, proxies…) for the calls to keygate.
    pub fn with_http_client(mut self, http: reqwest::Client) -> Self {
        self.http = http;
        self
    }

    /// A valid token: the cached one, or a new one when none is cached or the cached one
    /// is within its last tenth of life (at most one minute before `exp`).
    pub async fn token(&self) -> Result<String, ClientError> {
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref()
            && Instant::now() < c.renew_at
        {
            return Ok(c.token.clone());
        }
        let fresh = self.fetch().await?;
        let token = fresh.token.clone();
        *cached = Some(fresh);
        Ok(token)
    }

    /// Drops `stale` (a token an API just refused) and gets a new one — unless another
    /// caller already replaced it, in which case that replacement is returned.
    pub async fn renew(&self, stale: &str) -> Result<String, ClientError> {
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref()
            && c.token != stale
        {
            return Ok(c.token.clone());
        }
        let fresh = self.fetch().await?;
        let token = fresh.token.clone();
        *cached = Some(fresh);
        Ok(token)
    }

    /// Sends `request` with `Authorization: Bearer <token>`. On 401 the token is renewed
    /// once and the request sent again.
    pub async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ClientError> {
        let retry = request.try_clone().ok_or(ClientError::NotRetryable)?;
        let token = self.token().await?;
        let response = request.bearer_auth(&token).send().await?;
        if response.status() != reqwest::StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        let token = self.renew(&token).await?;
        Ok(retry.bearer_auth(&token).send().await?)
    }

    async fn fetch(&self) -> Result<Cached, ClientError> {
        let request = match &self.credentials {
            Credentials::ApiKey { key, header } => self
                .http
                .post(format!("{}/login", self.base))
                .header(header.as_str(), key.as_str()),
            Credentials::ClientCredentials {
                client_id,
                secret,
                scope,
            } => {
                let mut form = vec![("grant_type", "client_credentials")];
                if let Some(s) = scope {
                    form.push(("scope", s.as_str()));
                }
                let body = form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(&form)
                    .finish();
                self.http
                    .post(format!("{}/token", self.base))
                    .basic_auth(client_id, Some(secret))
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(body)
            }
        };
        let started = Instant::now();
        let response = request.send().await?;
        let status = response.status();
        if !status.is_success() {
            let body: Option<ErrorBody> = response.json().await.ok();
            let (error, description) = body.map_or((String::new(), String::new()), |b| {
                (b.error, b.error_description)
            });
            return Err(ClientError::Refused {
                status: status.as_u16(),
                error,
                description,
            });
        }
        let t: TokenResponse = response.json().await?;
        let lifetime = Duration::from_secs(t.expires_in);
        let margin = (lifetime / 10).min(Duration::from_secs(60));
        Ok(Cached {
            token: t.access_token,
            renew_at: started + lifetime.saturating_sub(margin),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_secrets() {
        let c = Credentials::ApiKey {
            key: "kg_x_canary".into(),
            header: "X-API-Key".into(),
        };
        assert!(!format!("{c:?}").contains("canary"));
    }
}
