//! [`ClientError`], the one error type of this crate.

use std::sync::Arc;

/// Why no token (or no answer) could be had.
///
/// `Clone`, because one failed fetch is handed to every caller that waited for it, and to
/// every caller during the backoff that follows it.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// keygate refused the credentials or the request (a 4xx answer): its status and
    /// OAuth error code. Retrying with the same credentials will not help.
    #[error("keygate refused: {status} {error}: {description}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// OAuth error code (`invalid_client`, …).
        error: String,
        /// The server's description.
        description: String,
    },
    /// keygate failed (5xx) or shed load (429, 408): no verdict on the credentials.
    #[error("keygate failed: {url} answered {status}")]
    ServerError {
        /// The URL asked.
        url: String,
        /// HTTP status.
        status: u16,
    },
    /// keygate answered with a redirect. Redirects are never followed: the API key or
    /// client secret would travel with the request to wherever it points.
    #[error(
        "keygate answered {status} redirecting to `{location}`; redirects are not followed (they would carry the credentials): use the final URL"
    )]
    Redirected {
        /// HTTP status (301, 302, 303, 307, 308).
        status: u16,
        /// The `Location` header, as sent.
        location: String,
    },
    /// No answer within the connect timeout or the request timeout.
    #[error("no answer from {url} in time")]
    TimedOut {
        /// The URL asked.
        url: String,
    },
    /// The server's TLS certificate is not trusted (unknown issuer, wrong name, expired…).
    #[error(
        "the TLS certificate of {url} is not trusted ({reason}); add its CA (--cacert PEM, SSL_CERT_FILE, or add_root_certificate)"
    )]
    UntrustedCertificate {
        /// The URL asked.
        url: String,
        /// What rustls found wrong with the certificate.
        reason: String,
    },
    /// The server could not be reached or the connection failed.
    #[error("cannot reach the server")]
    Transport(#[source] Arc<reqwest::Error>),
    /// keygate answered something that is not a token response (or too large to be one).
    #[error("keygate's answer is not a token response: {0}")]
    InvalidResponse(String),
    /// The client was configured with something unusable (a root certificate that is not
    /// PEM, …).
    #[error(transparent)]
    Config(Arc<crate::http::SetupError>),
    /// A request to retry after 401 could not be cloned (a streaming body).
    #[error("the request cannot be retried (its body is a stream)")]
    NotRetryable,
}

impl ClientError {
    /// A transport failure, classified: a timeout and an untrusted certificate get their
    /// own variants, so the caller can say what to fix.
    pub(crate) fn from_reqwest(e: reqwest::Error) -> Self {
        let url = e.url().map(ToString::to_string).unwrap_or_default();
        if e.is_timeout() {
            return ClientError::TimedOut { url };
        }
        if let Some(reason) = certificate_failure(&e) {
            return ClientError::UntrustedCertificate { url, reason };
        }
        ClientError::Transport(Arc::new(e))
    }

    /// Whether the credentials themselves were refused (as opposed to keygate, the network
    /// or TLS failing).
    pub fn is_refused(&self) -> bool {
        matches!(self, ClientError::Refused { .. })
    }
}

/// The rustls certificate error somewhere in `e`'s chain. rustls's error reaches reqwest
/// wrapped in `io::Error`s (two deep), whose `source()` skips the wrapped error itself, so
/// an `io::Error` is followed into what it wraps.
fn certificate_failure(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = next {
        if let Some(
            tls @ (rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented),
        ) = err.downcast_ref::<rustls::Error>()
        {
            return Some(tls.to_string());
        }
        next = match err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => err.source(),
        };
    }
    None
}
