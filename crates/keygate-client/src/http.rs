//! The HTTP client that talks to keygate, set up in one place for every client of its
//! endpoints — the token endpoints here, the JWKS in `keygate`'s `JwksVerifier`: bounded in
//! time, never following a redirect, speaking TLS with rustls against the system's roots
//! plus any the caller adds, and reading bodies up to a cap.

use std::time::Duration;

/// Default for [`crate::TokenClientBuilder::connect_timeout`].
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default for [`crate::TokenClientBuilder::timeout`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest token response read; a real one is a few KiB.
pub(crate) const MAX_TOKEN_RESPONSE: usize = 64 * 1024;

/// Why [`client`] could not be built. Exhaustive: keygate's JWKS fetcher maps each case
/// to its own error.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A root certificate is not PEM.
    #[error("root certificate is not PEM")]
    NotPem(#[source] reqwest::Error),
    /// A root certificate file holds no PEM certificate.
    #[error("root certificate file holds no PEM certificate")]
    NoCertificate,
    /// The TLS backend could not start.
    #[error("building the HTTP client")]
    Build(#[source] reqwest::Error),
}

/// A reqwest client for keygate's endpoints: `connect_timeout` to open a connection (TCP
/// and TLS), `timeout` for a whole request, no redirect followed, and trusting each CA
/// certificate in `roots` (PEM, one or more blocks each) besides the system's roots and
/// `SSL_CERT_FILE`.
pub fn client(
    connect_timeout: Duration,
    timeout: Duration,
    roots: &[Vec<u8>],
) -> Result<reqwest::Client, SetupError> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .timeout(timeout)
        // reqwest's default policy follows up to 10 redirects, to any host, and keeps
        // custom headers such as `X-API-Key` on the way: a redirect would hand the key to
        // whoever it points at, or let whoever answers it choose the JWKS. Refused outright
        // (same host included): keygate itself never redirects these endpoints.
        .redirect(reqwest::redirect::Policy::none());
    for pem in roots {
        let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(SetupError::NotPem)?;
        if certs.is_empty() {
            return Err(SetupError::NoCertificate);
        }
        for cert in certs {
            builder = builder.tls_certs_merge([cert]);
        }
    }
    builder.build().map_err(SetupError::Build)
}

/// Why [`read_capped`] gave no body. Exhaustive: keygate's JWKS fetcher maps each case
/// to its own error.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The body (or its announced length) passed the cap.
    #[error("body larger than {0} bytes")]
    TooLarge(usize),
    /// The body could not be read to its end.
    #[error("reading the body")]
    Read(#[source] reqwest::Error),
}

/// The body of `response`, refused once it passes `cap` bytes: read chunk by chunk, so a
/// hostile or broken server streaming without end costs at most `cap` bytes of memory.
pub async fn read_capped(
    mut response: reqwest::Response,
    cap: usize,
) -> Result<Vec<u8>, BodyError> {
    if response
        .content_length()
        .is_some_and(|len| len > cap as u64)
    {
        return Err(BodyError::TooLarge(cap));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Read)? {
        if body.len() + chunk.len() > cap {
            return Err(BodyError::TooLarge(cap));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
