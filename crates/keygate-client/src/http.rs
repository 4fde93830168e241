//! The HTTP client that talks to keygate: bounded in time, never following a redirect,
//! speaking TLS with rustls against the system's roots plus any the caller adds.

use std::time::Duration;

use crate::ClientError;

/// Default for [`crate::TokenClientBuilder::connect_timeout`].
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default for [`crate::TokenClientBuilder::timeout`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest token response read; a real one is a few KiB.
pub(crate) const MAX_TOKEN_RESPONSE: usize = 64 * 1024;

/// The reqwest client for keygate's endpoints.
pub(crate) fn client(
    connect_timeout: Duration,
    timeout: Duration,
    roots: &[Vec<u8>],
) -> Result<reqwest::Client, ClientError> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .timeout(timeout)
        // reqwest's default policy follows up to 10 redirects, to any host, and keeps
        // custom headers such as `X-API-Key` on the way: a redirect would hand the key to
        // whoever it points at. Refused outright (same host included): keygate itself
        // never redirects its token endpoints.
        .redirect(reqwest::redirect::Policy::none());
    for pem in roots {
        let certs = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|e| ClientError::Config(format!("root certificate is not PEM: {e}")))?;
        if certs.is_empty() {
            return Err(ClientError::Config(
                "root certificate file holds no PEM certificate".into(),
            ));
        }
        for cert in certs {
            builder = builder.tls_certs_merge([cert]);
        }
    }
    builder
        .build()
        .map_err(|e| ClientError::Config(format!("building the HTTP client: {e}")))
}

/// The body of `response`, refused once it passes `cap` bytes: read chunk by chunk, so a
/// hostile or broken server streaming without end costs at most `cap` bytes of memory.
pub(crate) async fn read_capped(
    mut response: reqwest::Response,
    cap: usize,
) -> Result<Vec<u8>, ClientError> {
    let too_large = || ClientError::InvalidResponse(format!("body larger than {cap} bytes"));
    if response
        .content_length()
        .is_some_and(|len| len > cap as u64)
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(ClientError::from_reqwest)? {
        if body.len() + chunk.len() > cap {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
