//! [`TokenClient`] and its [`TokenClientBuilder`]: fetch, cache and renew a keygate token.
//!
//! One fetch at a time: the fetch runs as a spawned task that publishes its result on a
//! `watch` channel, so every caller waiting on it receives the same answer, and a caller
//! that gives up (its future dropped, a request timeout) does not abort it for the others.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::watch;

use crate::backoff::Backoff;
use crate::http::{self, MAX_TOKEN_RESPONSE};
use crate::{ClientError, Credentials};

/// Longest lifetime believed from `expires_in` (keygate never issues longer tokens). A
/// larger value, even `u64::MAX`, only means "renew in a day".
const MAX_BELIEVED_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// Fetches, caches and renews keygate tokens. Cheap to clone (clones share the cache);
/// share one per credential.
#[derive(Clone)]
pub struct TokenClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    base: String,
    credentials: Credentials,
    renew_before: Option<Duration>,
    backoff: Backoff,
    min_renewal_after_401: Duration,
    state: Mutex<State>,
}

/// What a waiter receives: `None` until the fetch ends.
type FetchResult = Option<Result<Cached, ClientError>>;

#[derive(Default)]
struct State {
    cached: Option<Cached>,
    /// The fetch in flight, if any: a receiver to clone for each waiter.
    fetch: Option<watch::Receiver<FetchResult>>,
    /// The last failure, handed to callers until `retry_at` instead of a new fetch.
    failure: Option<Failure>,
    /// Consecutive failed fetches (0 after a success).
    failures: u32,
    /// When a renewal was last forced by a 401.
    last_401_renewal: Option<Instant>,
}

#[derive(Clone)]
struct Cached {
    token: String,
    /// From here on a renewal runs in the background while this token is still served.
    renew_at: Instant,
    /// After this the token is not handed out: it could expire on its way to the API.
    usable_until: Instant,
}

struct Failure {
    error: ClientError,
    retry_at: Instant,
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

impl std::fmt::Debug for TokenClient {
    // The cached bearer token is a credential: it is never printed, only whether one is held.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let holds_token = self.inner.lock().cached.is_some();
        f.debug_struct("TokenClient")
            .field("base", &self.inner.base)
            .field("credentials", &self.inner.credentials)
            .field("holds_token", &holds_token)
            .finish_non_exhaustive()
    }
}

/// Settings for a [`TokenClient`]; each states its default.
#[derive(Debug, Clone)]
pub struct TokenClientBuilder {
    base: String,
    credentials: Credentials,
    connect_timeout: Duration,
    timeout: Duration,
    roots: Vec<Vec<u8>>,
    renew_before: Option<Duration>,
    backoff: Backoff,
    min_renewal_after_401: Duration,
}

impl TokenClientBuilder {
    /// Time to open a connection to keygate (TCP and TLS). Defaults to 5 s.
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// Time for a whole token request, connection to last byte. Defaults to 10 s.
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = d;
        self
    }

    /// Also trusts the CA certificate(s) in `pem` (one or more PEM blocks), besides the
    /// system's roots and `SSL_CERT_FILE`.
    pub fn add_root_certificate(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.roots.push(pem.into());
        self
    }

    /// Start renewing when less than this is left of a token's life. Defaults to a tenth
    /// of the lifetime, at most one minute. The held token keeps being served while the
    /// renewal runs, and while it fails, until it is about to expire.
    pub fn renew_before(mut self, d: Duration) -> Self {
        self.renew_before = Some(d);
        self
    }

    /// Backoff after failed fetches: the first wait, doubled on each further failure up to
    /// `max`, each with random jitter (half to all of it). Callers asking during the wait
    /// get the last error without a new request. Defaults to 1 s and 30 s.
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.backoff = Backoff::new(initial, max);
        self
    }

    /// At most one renewal forced by a 401 per this interval. An API that refuses every
    /// token (misconfigured audience, clock skew) would otherwise cost a login per
    /// request. Defaults to 30 s.
    pub fn min_renewal_interval_after_401(mut self, d: Duration) -> Self {
        self.min_renewal_after_401 = d;
        self
    }

    /// The client. Fails only on an unusable root certificate or TLS setup.
    pub fn build(self) -> Result<TokenClient, ClientError> {
        let http = http::client(self.connect_timeout, self.timeout, &self.roots)
            .map_err(|e| ClientError::Config(Arc::new(e)))?;
        Ok(TokenClient {
            inner: Arc::new(Inner {
                http,
                base: self.base,
                credentials: self.credentials,
                renew_before: self.renew_before,
                backoff: self.backoff,
                min_renewal_after_401: self.min_renewal_after_401,
                state: Mutex::new(State::default()),
            }),
        })
    }
}

impl TokenClient {
    /// Settings for a client of keygate at `base_url` (its public URL) with `credentials`.
    pub fn builder(base_url: impl Into<String>, credentials: Credentials) -> TokenClientBuilder {
        TokenClientBuilder {
            base: base_url.into().trim_end_matches('/').to_owned(),
            credentials,
            connect_timeout: http::DEFAULT_CONNECT_TIMEOUT,
            timeout: http::DEFAULT_TIMEOUT,
            roots: Vec::new(),
            renew_before: None,
            backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(30)),
            min_renewal_after_401: Duration::from_secs(30),
        }
    }

    /// A client logging in at `base_url` with an API key in `X-API-Key`, with the
    /// builder's defaults.
    ///
    /// # Panics
    /// When the TLS backend cannot start, as `reqwest::Client::new` does; use
    /// [`TokenClient::builder`] to handle that.
    pub fn with_api_key(base_url: impl Into<String>, key: impl Into<String>) -> Self {
        Self::new(
            base_url,
            Credentials::ApiKey {
                key: key.into(),
                header: "X-API-Key".into(),
            },
        )
    }

    /// A client using `grant_type=client_credentials` at `base_url`, with the builder's
    /// defaults.
    ///
    /// # Panics
    /// As [`TokenClient::with_api_key`].
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

    /// A client for `base_url` with any credentials, with the builder's defaults.
    ///
    /// # Panics
    /// As [`TokenClient::with_api_key`].
    pub fn new(base_url: impl Into<String>, credentials: Credentials) -> Self {
        Self::builder(base_url, credentials)
            .build()
            .expect("the default HTTP client builds")
    }

    /// A valid token. The held one while it is fresh; in its renewal window still the held
    /// one, with a renewal started in the background; otherwise (none held, or about to
    /// expire) the result of a fetch, shared with every concurrent caller. During a backoff
    /// the last error is returned without asking keygate again.
    pub async fn token(&self) -> Result<String, ClientError> {
        let rx = {
            let mut st = self.inner.lock();
            let now = Instant::now();
            if let Some(c) = &st.cached {
                if now < c.renew_at {
                    return Ok(c.token.clone());
                }
                if now < c.usable_until {
                    let token = c.token.clone();
                    if st.fetch.is_none() && !in_backoff(&st, now) {
                        drop(self.inner.start_fetch(&mut st));
                    }
                    return Ok(token);
                }
            }
            match self.inner.join_or_start(&mut st, now) {
                Ok(rx) => rx,
                Err(e) => return Err(e),
            }
        };
        self.inner.wait(rx).await
    }

    /// Replaces `stale` (a token an API just refused) and returns its replacement — the one
    /// another caller already got, if any. Forced renewals are at most one per
    /// [`TokenClientBuilder::min_renewal_interval_after_401`]: within it `stale` itself is
    /// returned, meaning "no newer token to try".
    pub async fn renew(&self, stale: &str) -> Result<String, ClientError> {
        let rx = {
            let mut st = self.inner.lock();
            let now = Instant::now();
            if let Some(c) = &st.cached
                && c.token != stale
                && now < c.usable_until
            {
                return Ok(c.token.clone());
            }
            if let Some(rx) = &st.fetch {
                rx.clone()
            } else {
                if st
                    .last_401_renewal
                    .is_some_and(|t| now.duration_since(t) < self.inner.min_renewal_after_401)
                {
                    return Ok(stale.to_owned());
                }
                if let Some(f) = &st.failure
                    && now < f.retry_at
                {
                    return Err(f.error.clone());
                }
                st.last_401_renewal = Some(now);
                self.inner.start_fetch(&mut st)
            }
        };
        self.inner.wait(rx).await
    }

    /// Sends `request` with `Authorization: Bearer <token>`. On 401 the token is renewed
    /// (see [`TokenClient::renew`]) and the request sent once more; when no newer token
    /// can be had the 401 response is returned as it came.
    pub async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ClientError> {
        let retry = request.try_clone().ok_or(ClientError::NotRetryable)?;
        let token = self.token().await?;
        let response = request
            .bearer_auth(&token)
            .send()
            .await
            .map_err(ClientError::from_reqwest)?;
        if response.status() != reqwest::StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        let renewed = self.renew(&token).await?;
        if renewed == token {
            return Ok(response);
        }
        retry
            .bearer_auth(&renewed)
            .send()
            .await
            .map_err(ClientError::from_reqwest)
    }
}

fn in_backoff(st: &State, now: Instant) -> bool {
    st.failure.as_ref().is_some_and(|f| now < f.retry_at)
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is consistent between statements (plain assignments): a panic elsewhere
        // while holding the lock leaves nothing half-written.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The fetch in flight, a new one, or the error of the last one during its backoff.
    fn join_or_start(
        self: &Arc<Self>,
        st: &mut State,
        now: Instant,
    ) -> Result<watch::Receiver<FetchResult>, ClientError> {
        if let Some(rx) = &st.fetch {
            return Ok(rx.clone());
        }
        if let Some(f) = &st.failure
            && now < f.retry_at
        {
            return Err(f.error.clone());
        }
        Ok(self.start_fetch(st))
    }

    /// Spawns the fetch. It records its result in the state before publishing it, so a
    /// caller arriving after it ends finds the token (or the backoff) in the state.
    fn start_fetch(self: &Arc<Self>, st: &mut State) -> watch::Receiver<FetchResult> {
        let (tx, rx) = watch::channel(None);
        st.fetch = Some(rx.clone());
        let inner = Arc::clone(self);
        tokio::spawn(async move {
            let result = inner.fetch().await;
            let mut st = inner.lock();
            st.fetch = None;
            match &result {
                Ok(c) => {
                    st.cached = Some(c.clone());
                    st.failure = None;
                    st.failures = 0;
                }
                Err(e) => {
                    st.failures = st.failures.saturating_add(1);
                    st.failure = Some(Failure {
                        error: e.clone(),
                        retry_at: Instant::now() + inner.backoff.delay(st.failures),
                    });
                }
            }
            let _ = tx.send(Some(result));
        });
        rx
    }

    async fn wait(&self, mut rx: watch::Receiver<FetchResult>) -> Result<String, ClientError> {
        let published = rx.wait_for(Option::is_some).await.ok().map(|r| r.clone());
        let result = match published {
            Some(r) => r,
            // The task ended without publishing: it panicked, or the runtime is shutting
            // down. Forget it so the next caller starts afresh.
            None => {
                let mut st = self.lock();
                if st.fetch.as_ref().is_some_and(|f| f.same_channel(&rx)) {
                    st.fetch = None;
                }
                None
            }
        };
        match result {
            Some(Ok(c)) => Ok(c.token),
            Some(Err(e)) => Err(e),
            None => Err(ClientError::InvalidResponse(
                "the token fetch ended without an answer".into(),
            )),
        }
    }

    fn request(&self) -> reqwest::RequestBuilder {
        match &self.credentials {
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
        }
    }

    async fn fetch(&self) -> Result<Cached, ClientError> {
        let started = Instant::now();
        let response = self
            .request()
            .send()
            .await
            .map_err(ClientError::from_reqwest)?;
        let status = response.status();
        let url = response.url().to_string();
        if status.is_redirection() {
            let location = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            return Err(ClientError::Redirected {
                status: status.as_u16(),
                location,
            });
        }
        let transient = status.is_server_error()
            || status == reqwest::StatusCode::TOO_MANY_REQUESTS
            || status == reqwest::StatusCode::REQUEST_TIMEOUT;
        if transient || !(status.is_success() || status.is_client_error()) {
            return Err(ClientError::ServerError {
                url,
                status: status.as_u16(),
            });
        }
        let body = http::read_capped(response, MAX_TOKEN_RESPONSE)
            .await
            .map_err(|e| match e {
                http::BodyError::Read(e) => ClientError::from_reqwest(e),
                too_large => ClientError::InvalidResponse(too_large.to_string()),
            })?;
        if !status.is_success() {
            let (error, description) = serde_json::from_slice::<ErrorBody>(&body)
                .map_or((String::new(), String::new()), |b| {
                    (b.error, b.error_description)
                });
            return Err(ClientError::Refused {
                status: status.as_u16(),
                error,
                description,
            });
        }
        let t: TokenResponse = serde_json::from_slice(&body)
            .map_err(|e| ClientError::InvalidResponse(e.to_string()))?;
        Ok(self.schedule(t.access_token, t.expires_in, started))
    }

    /// When to renew and when to stop handing out a token that lives `expires_in` seconds
    /// from `started` (the request's start: the token's clock began after it).
    fn schedule(&self, token: String, expires_in: u64, started: Instant) -> Cached {
        let lifetime = Duration::from_secs(expires_in).min(MAX_BELIEVED_LIFETIME);
        let renew_before = self
            .renew_before
            .unwrap_or((lifetime / 10).min(Duration::from_secs(60)))
            .min(lifetime);
        // Enough for the request carrying it to reach the API before `exp`.
        let margin = (lifetime / 20).min(Duration::from_secs(5));
        // `checked_add`: an `Instant` can overflow (near the platform's limit); then the
        // token is treated as due at once rather than panicking.
        let at = |d: Duration| started.checked_add(d).unwrap_or(started);
        Cached {
            token,
            renew_at: at(lifetime - renew_before),
            usable_until: at(lifetime - margin),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> TokenClient {
        TokenClient::with_api_key("http://127.0.0.1:1", "kg_x_canary")
    }

    #[test]
    fn a_huge_expires_in_is_clamped_to_a_day() {
        let c = client();
        let now = Instant::now();
        let cached = c.inner.schedule("t".into(), u64::MAX, now);
        assert_eq!(
            cached.renew_at,
            now + MAX_BELIEVED_LIFETIME - Duration::from_secs(60)
        );
        assert!(cached.usable_until > cached.renew_at);
    }

    #[test]
    fn renewal_starts_in_the_last_tenth_and_handing_out_stops_before_expiry() {
        let c = client();
        let now = Instant::now();
        let cached = c.inner.schedule("t".into(), 100, now);
        assert_eq!(cached.renew_at, now + Duration::from_secs(90));
        assert_eq!(cached.usable_until, now + Duration::from_secs(95));
        let cached = c.inner.schedule("t".into(), 0, now);
        assert_eq!((cached.renew_at, cached.usable_until), (now, now));
    }

    #[test]
    fn debug_output_never_shows_the_token_or_the_key() {
        let c = client();
        let now = Instant::now();
        c.inner.lock().cached = Some(c.inner.schedule("eyJ.canary-token.sig".into(), 60, now));
        let shown = format!("{c:?}");
        assert!(!shown.contains("canary"), "{shown}");
        assert!(shown.contains("holds_token: true"), "{shown}");
    }
}
