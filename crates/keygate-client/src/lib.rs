//! keygate-client: get a keygate token with an API key or client credentials, keep it,
//! and renew it before it expires — and once more when an API answers 401.
//!
//! | module | holds |
//! |---|---|
//! | `client` | [`TokenClient`]: fetches (`/login` or `/token`), caches, renews; [`TokenClient::send`] adds the bearer token to a request; [`TokenClientBuilder`] for its settings |
//! | `credentials` | [`Credentials`]: an API key, or a client id and secret |
//! | `error` | [`ClientError`]: refused credentials, a failing or unreachable keygate, an untrusted certificate, a redirect |
//! | [`http`] | the HTTP client towards keygate (token endpoints here, the JWKS in `keygate`): timeouts, no redirects, TLS roots, bounded bodies |
//! | `backoff` | [`Backoff`]: exponential backoff with jitter after failed fetches (and keygate-server's store reconnections) |
//!
//! # What it does when keygate misbehaves
//!
//! - **Timeouts**: 5 s to connect (TCP and TLS), 10 s for a whole token request
//!   ([`TokenClientBuilder::connect_timeout`], [`TokenClientBuilder::timeout`]).
//! - **One fetch at a time**: concurrent callers wait for the same fetch and all receive
//!   its result. The fetch is a spawned task: a caller that gives up does not cancel it.
//! - **Backoff**: after a failed fetch, callers get that error, without a new request, for
//!   1 s, then 2 s, 4 s… up to 30 s, each with jitter ([`TokenClientBuilder::backoff`]).
//! - **Renewal in the background**: from the last tenth of a token's life (at most one
//!   minute before it expires) the held token is still served while a renewal runs; if the
//!   renewal fails, the held token is served until 5 % of its life (at most 5 s) is left.
//! - **401**: the token is renewed and the request sent once more; at most one such
//!   forced renewal per 30 s ([`TokenClientBuilder::min_renewal_interval_after_401`]), so an
//!   API refusing every token does not cost a login per request.
//! - **No retries** of a failed fetch beyond that: the next caller after the backoff tries
//!   again.
//! - **Redirects are refused**: a 3xx from keygate is [`ClientError::Redirected`], never
//!   followed, whichever host it names: the API key would follow it.
//! - **5xx, 429, 408** are [`ClientError::ServerError`], not refused credentials; only a
//!   4xx is [`ClientError::Refused`].
//! - **Bodies** over 64 KiB are refused; `expires_in` is believed up to one day.
//! - **TLS** by rustls, trusting the system's roots, `SSL_CERT_FILE`, and CAs added with
//!   [`TokenClientBuilder::add_root_certificate`]; an untrusted certificate is
//!   [`ClientError::UntrustedCertificate`].
//!
//! `Debug` never prints the API key, the secret or the cached token.
//!
//! ```no_run
//! # async fn run() -> Result<(), keygate_client::ClientError> {
//! use std::time::Duration;
//! use keygate_client::{Credentials, TokenClient};
//!
//! let client = TokenClient::builder(
//!     "https://auth.internal",
//!     Credentials::ApiKey { key: "kg_billing_…".into(), header: "X-API-Key".into() },
//! )
//! .timeout(Duration::from_secs(3))
//! .add_root_certificate(std::fs::read("ca.pem").unwrap())
//! .build()?;
//! let http = reqwest::Client::new();
//! let response = client.send(http.get("https://orders.internal/orders")).await?;
//! # Ok(()) }
//! ```

mod backoff;
mod client;
mod credentials;
mod error;
pub mod http;

pub use backoff::Backoff;
pub use client::{TokenClient, TokenClientBuilder};
pub use credentials::Credentials;
pub use error::ClientError;
pub use http::{DEFAULT_CONNECT_TIMEOUT, DEFAULT_TIMEOUT};
