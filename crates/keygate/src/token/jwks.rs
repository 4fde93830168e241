//! [`JwksVerifier`] (feature `jwks`): verification with the public keys keygate publishes
//! at `/.well-known/jwks.json`, so a service holds no key at all.
//!
//! The keys are fetched once at start, re-fetched when older than `max_age`, and at once
//! when a token names a `kid` the cache lacks (a rotation: keygate publishes a key before
//! signing with it). Re-fetches on unknown `kid`s are at most one per
//! `min_refresh_interval`, so tokens with made-up `kid`s cannot turn a service into a
//! flood against keygate. When a re-fetch fails the keys already held stay in use.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use tokio::sync::Mutex;

use super::TokenPolicy;
use super::algorithm::SigningAlgorithm;
use super::claims::Claims;
use super::keys::{KeyEntry, KeySet, SigningKey};
use super::verifier::Verifier;
use crate::error::{Error, Result};

/// Verifies tokens with keys from a JWKS URL.
#[derive(Debug)]
pub struct JwksVerifier {
    url: String,
    algorithm: SigningAlgorithm,
    policy: TokenPolicy,
    http: reqwest::Client,
    max_age: Duration,
    min_refresh_interval: Duration,
    current: RwLock<Arc<Verifier>>,
    /// When the keys were last fetched; the lock also serialises fetches.
    fetched_at: Mutex<Instant>,
}

impl JwksVerifier {
    /// Fetches the JWKS at `url` and verifies tokens of `algorithm` under `policy` with it.
    /// Keys of other algorithms in the set are ignored.
    pub async fn fetch(
        url: impl Into<String>,
        algorithm: SigningAlgorithm,
        policy: TokenPolicy,
    ) -> Result<Self> {
        let url = url.into();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| Error::StoreUnavailable(e.to_string()))?;
        let verifier = load(&http, &url, algorithm, &policy).await?;
        Ok(Self {
            url,
            algorithm,
            policy,
            http,
            max_age: Duration::from_secs(300),
            min_refresh_interval: Duration::from_secs(10),
            current: RwLock::new(Arc::new(verifier)),
            fetched_at: Mutex::new(Instant::now()),
        })
    }

    /// Re-fetch keys older than this (default 5 minutes).
    pub fn max_age(mut self, max_age: Duration) -> Self {
        self.max_age = max_age;
        self
    }

    /// At most one re-fetch per this interval for unknown `kid`s (default 10 s).
    pub fn min_refresh_interval(mut self, interval: Duration) -> Self {
        self.min_refresh_interval = interval;
        self
    }

    /// Verifies `token`, re-fetching the keys when they are stale or lack its `kid`.
    pub async fn verify(&self, token: &str) -> Result<Claims> {
        if self.fetched_at.lock().await.elapsed() >= self.max_age {
            self.refresh(self.max_age).await;
        }
        match self.current().verify(token) {
            Err(Error::UnknownKeyId) => {
                self.refresh(self.min_refresh_interval).await;
                self.current().verify(token)
            }
            other => other,
        }
    }

    fn current(&self) -> Arc<Verifier> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Re-fetches unless the last fetch is younger than `unless_younger_than`. A failed
    /// fetch keeps the keys held.
    async fn refresh(&self, unless_younger_than: Duration) {
        let mut fetched_at = self.fetched_at.lock().await;
        if fetched_at.elapsed() < unless_younger_than {
            return;
        }
        *fetched_at = Instant::now();
        if let Ok(verifier) = load(&self.http, &self.url, self.algorithm, &self.policy).await {
            *self
                .current
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(verifier);
        }
    }
}

async fn load(
    http: &reqwest::Client,
    url: &str,
    algorithm: SigningAlgorithm,
    policy: &TokenPolicy,
) -> Result<Verifier> {
    let unreachable = |e: reqwest::Error| Error::StoreUnavailable(format!("JWKS {url}: {e}"));
    let set: JwkSet = http
        .get(url)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(unreachable)?
        .json()
        .await
        .map_err(unreachable)?;
    let entries = set
        .keys
        .iter()
        .filter_map(|jwk| SigningKey::from_public_jwk(algorithm, jwk).ok())
        .map(|key| KeyEntry {
            key,
            created_at: 0,
            signs_from: 0,
            retired_at: None,
        })
        .collect();
    let keys = KeySet::new(entries)?;
    Ok(Verifier::new(algorithm, Arc::new(keys), policy.clone()))
}
