//! [`JwksVerifier`] (feature `jwks`): verification with the public keys keygate publishes
//! at `/.well-known/jwks.json`, so a service holds no key at all.
//!
//! See [`JwksVerifier`] for what it does when the JWKS server is slow, failing or hostile.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use jsonwebtoken::jwk::Jwk;
use tokio::sync::watch;

use super::TokenPolicy;
use super::claims::Claims;
use super::keys::{KeyEntry, KeySet, SigningKey};
use super::verifier::Verifier;
use crate::algorithm::SigningAlgorithm;
use crate::error::{Error, JwksError, Result, TlsError, TokenError};

use crate::bounds::MAX_JWKS_BYTES;

/// Verifies tokens with keys from a JWKS URL.
///
/// Verification reads a snapshot of the keys (an `ArcSwap`) and never waits for the
/// network, with one exception: a token naming a `kid` the snapshot lacks (a rotation:
/// keygate publishes a key before signing with it) waits for one re-fetch. In detail:
///
/// - Keys are fetched once at start. Keys older than `max_age` (default 5 min) are
///   re-fetched in the background while verification goes on with the ones held.
/// - An unknown `kid` triggers a re-fetch that every such token waits for together (one
///   request in flight), at most one per `min_refresh_interval` (default 10 s), so tokens
///   with made-up `kid`s cannot turn a service into a flood against keygate. A refetch
///   that fails or is refused by this floor leaves the token refused as
///   [`TokenError::UnknownKeyId`](crate::error::TokenError::UnknownKeyId).
/// - A fetch is bounded: 5 s to connect, 10 s in all, 1 MiB of body, read incrementally
///   and abandoned past the cap. Redirects are refused, same origin or not: the JWKS URL
///   is configured, and a redirect would let whoever answers it choose the keys.
/// - A bad answer never replaces good keys: a failed fetch, an error status, a body that
///   is too large or not a JWKS, or a set with no usable key keeps the keys held. Usable
///   means: of the configured algorithm, `use` absent or `sig`, `key_ops` absent or
///   including `verify`, RSA at least 2048 bits (the floor for local keys).
/// - TLS by rustls, trusting the system's roots, `SSL_CERT_FILE`, and CAs added with
///   [`JwksVerifierBuilder::add_root_certificate`].
#[derive(Debug)]
pub struct JwksVerifier {
    shared: Arc<Shared>,
    max_age: Duration,
    min_refresh_interval: Duration,
}

/// What a background refresh needs; shared with the task running it.
#[derive(Debug)]
struct Shared {
    url: String,
    algorithm: SigningAlgorithm,
    policy: TokenPolicy,
    http: reqwest::Client,
    current: ArcSwap<Verifier>,
    refresh: Mutex<RefreshState>,
}

/// The outcome of one fetch, as every waiter receives it: `None` until it ends. The error
/// is shared: each waiter gets it as the source of its own.
type Outcome = Option<std::result::Result<(), Arc<Error>>>;

#[derive(Debug)]
struct RefreshState {
    /// When the keys held were fetched.
    fetched_at: Instant,
    /// When the last fetch started, successful or not: the floor counts from here.
    attempted_at: Instant,
    inflight: Option<watch::Receiver<Outcome>>,
}

/// Settings for a [`JwksVerifier`]; each states its default.
#[derive(Debug, Clone)]
pub struct JwksVerifierBuilder {
    url: String,
    algorithm: SigningAlgorithm,
    policy: TokenPolicy,
    max_age: Duration,
    min_refresh_interval: Duration,
    connect_timeout: Duration,
    timeout: Duration,
    roots: Vec<Vec<u8>>,
}

impl JwksVerifierBuilder {
    /// Re-fetch (in the background) keys older than this. Defaults to 5 minutes.
    pub fn max_age(mut self, d: Duration) -> Self {
        self.max_age = d;
        self
    }

    /// At most one re-fetch per this interval, whatever asks for it. Defaults to 10 s.
    pub fn min_refresh_interval(mut self, d: Duration) -> Self {
        self.min_refresh_interval = d;
        self
    }

    /// Time to open a connection (TCP and TLS). Defaults to 5 s.
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// Time for a whole fetch, connection to last byte. Defaults to 10 s.
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = d;
        self
    }

    /// Also trusts the CA certificate(s) in `pem`, besides the system's roots and
    /// `SSL_CERT_FILE`.
    pub fn add_root_certificate(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.roots.push(pem.into());
        self
    }

    /// Fetches the keys; fails when they cannot be had or none is usable.
    pub async fn fetch(self) -> Result<JwksVerifier> {
        let http = keygate_client::http::client(self.connect_timeout, self.timeout, &self.roots)
            .map_err(|e| match e {
                keygate_client::http::SetupError::NotPem(e) => TlsError::RootNotPem(Some(e)),
                keygate_client::http::SetupError::NoCertificate => TlsError::RootNotPem(None),
                keygate_client::http::SetupError::Build(e) => TlsError::Client(e),
            })?;
        let verifier = load(&http, &self.url, self.algorithm, &self.policy).await?;
        let now = Instant::now();
        Ok(JwksVerifier {
            shared: Arc::new(Shared {
                url: self.url,
                algorithm: self.algorithm,
                policy: self.policy,
                http,
                current: ArcSwap::from_pointee(verifier),
                refresh: Mutex::new(RefreshState {
                    fetched_at: now,
                    attempted_at: now,
                    inflight: None,
                }),
            }),
            max_age: self.max_age,
            min_refresh_interval: self.min_refresh_interval,
        })
    }
}

impl JwksVerifier {
    /// Settings for verifying tokens of `algorithm` under `policy` with the JWKS at `url`.
    /// Keys of other algorithms in the set are ignored.
    pub fn builder(
        url: impl Into<String>,
        algorithm: SigningAlgorithm,
        policy: TokenPolicy,
    ) -> JwksVerifierBuilder {
        JwksVerifierBuilder {
            url: url.into(),
            algorithm,
            policy,
            max_age: Duration::from_secs(300),
            min_refresh_interval: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(10),
            roots: Vec::new(),
        }
    }

    /// Fetches the JWKS at `url` with the builder's defaults.
    pub async fn fetch(
        url: impl Into<String>,
        algorithm: SigningAlgorithm,
        policy: TokenPolicy,
    ) -> Result<Self> {
        Self::builder(url, algorithm, policy).fetch().await
    }

    /// Re-fetch keys older than this (default 5 minutes).
    pub fn max_age(mut self, max_age: Duration) -> Self {
        self.max_age = max_age;
        self
    }

    /// At most one re-fetch per this interval (default 10 s).
    pub fn min_refresh_interval(mut self, interval: Duration) -> Self {
        self.min_refresh_interval = interval;
        self
    }

    /// Verifies `token` with the keys held. Stale keys are refreshed in the background;
    /// only an unknown `kid` waits, for one shared re-fetch.
    pub async fn verify(&self, token: &str) -> Result<Claims> {
        let stale = self.shared.lock().fetched_at.elapsed() >= self.max_age;
        if stale {
            // The receiver is dropped: nobody waits, the task runs to its end regardless.
            drop(self.shared.start_refresh(self.min_refresh_interval));
        }
        match self.shared.current.load().verify(token) {
            Err(Error::Token(TokenError::UnknownKeyId)) => {
                if let Some(rx) = self.shared.start_refresh(self.min_refresh_interval) {
                    let _ = wait(rx).await;
                }
                self.shared.current.load().verify(token)
            }
            other => other,
        }
    }

    /// Re-fetches the keys now (joining a fetch in flight), ignoring the floor. On failure
    /// the keys held stay in use and the reason is returned.
    pub async fn refresh(&self) -> Result<()> {
        let rx = self
            .shared
            .start_refresh(Duration::ZERO)
            .expect("a zero floor always allows a fetch");
        wait(rx).await
    }
}

async fn wait(mut rx: watch::Receiver<Outcome>) -> Result<()> {
    let outcome = rx.wait_for(Option::is_some).await.ok().map(|o| o.clone());
    match outcome.flatten() {
        Some(Ok(())) => Ok(()),
        Some(Err(shared)) => Err(JwksError::Refresh(shared).into()),
        None => Err(JwksError::NoAnswer.into()),
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, RefreshState> {
        // Plain assignments only under this lock: a poisoned state is still consistent.
        self.refresh.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The fetch in flight, or a new one unless the last started less than `floor` ago.
    /// The fetch is a spawned task: a verification that stops waiting does not cancel it.
    fn start_refresh(self: &Arc<Self>, floor: Duration) -> Option<watch::Receiver<Outcome>> {
        let mut st = self.lock();
        if let Some(rx) = &st.inflight
            && rx.has_changed().is_ok()
        {
            return Some(rx.clone());
        }
        if st.attempted_at.elapsed() < floor {
            return None;
        }
        st.attempted_at = Instant::now();
        let (tx, rx) = watch::channel(None);
        st.inflight = Some(rx.clone());
        let shared = Arc::clone(self);
        tokio::spawn(async move {
            let loaded = load(&shared.http, &shared.url, shared.algorithm, &shared.policy).await;
            let mut st = shared.lock();
            st.inflight = None;
            let outcome = match loaded {
                Ok(verifier) => {
                    shared.current.store(Arc::new(verifier));
                    st.fetched_at = Instant::now();
                    Ok(())
                }
                Err(e) => Err(Arc::new(e)),
            };
            let _ = tx.send(Some(outcome));
        });
        Some(rx)
    }
}

/// Fetches, reads (bounded) and checks the JWKS at `url`: a verifier with its usable keys,
/// or an error when it has none.
async fn load(
    http: &reqwest::Client,
    url: &str,
    algorithm: SigningAlgorithm,
    policy: &TokenPolicy,
) -> Result<Verifier> {
    let url_owned = || url.to_owned();
    let request_failed = |source| JwksError::Request {
        url: url_owned(),
        source,
    };
    let response = http.get(url).send().await.map_err(request_failed)?;
    let status = response.status();
    if !status.is_success() {
        return Err(JwksError::Status {
            url: url_owned(),
            status,
        }
        .into());
    }
    let body = keygate_client::http::read_capped(response, MAX_JWKS_BYTES)
        .await
        .map_err(|e| match e {
            keygate_client::http::BodyError::TooLarge(_) => {
                JwksError::TooLarge { url: url_owned() }
            }
            keygate_client::http::BodyError::Read(e) => request_failed(e),
        })?;
    // Keys are read one by one: a key of a kind this library does not know must not make
    // the whole set unreadable.
    #[derive(serde::Deserialize)]
    struct RawSet {
        keys: Vec<serde_json::Value>,
    }
    let raw: RawSet = serde_json::from_slice(&body).map_err(|source| JwksError::NotJwks {
        url: url_owned(),
        source,
    })?;
    let entries: Vec<KeyEntry> = raw
        .keys
        .into_iter()
        .filter_map(|v| serde_json::from_value::<Jwk>(v).ok())
        .filter_map(|jwk| SigningKey::from_public_jwk(algorithm, &jwk).ok())
        .map(|key| KeyEntry {
            key,
            created_at: 0,
            signs_from: 0,
            retired_at: None,
        })
        .collect();
    if entries.is_empty() {
        return Err(JwksError::NoUsableKey {
            url: url_owned(),
            algorithm,
        }
        .into());
    }
    let keys = KeySet::new(entries)?;
    Ok(Verifier::new(algorithm, Arc::new(keys), policy.clone()))
}
