//! The one error type of the `keygate` crate.

/// Everything that can go wrong while issuing or verifying a token, checking a credential
/// or reading a hash.
///
/// Variants are named for what happened. Their `Display` text is meant for logs and
/// operators; HTTP responses never echo it, so a caller cannot learn which check failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The token is not a compact JWS of three base64url segments holding JSON objects.
    #[error("token is malformed: {0}")]
    Malformed(&'static str),
    /// The token is longer than [`crate::token::MAX_TOKEN_LEN`].
    #[error("token is longer than the accepted maximum")]
    TooLong,
    /// The header names another algorithm than the one configured.
    #[error("token algorithm is not the configured one")]
    WrongAlgorithm,
    /// The signature does not verify with the configured key.
    #[error("token signature is invalid")]
    InvalidSignature,
    /// `typ` is missing or is not `at+jwt`.
    #[error("token type is not at+jwt")]
    WrongType,
    /// The header carries `crit`: keygate understands no extension.
    #[error("token header has a critical extension")]
    UnsupportedCritical,
    /// `exp` is in the past, beyond the leeway.
    #[error("token has expired")]
    Expired,
    /// `nbf` is in the future, beyond the leeway.
    #[error("token is not valid yet")]
    NotYetValid,
    /// `iat` is in the future, beyond the leeway.
    #[error("token was issued in the future")]
    IssuedInFuture,
    /// `exp - iat` exceeds [`crate::token::MAX_LIFETIME`], or `exp` precedes `iat`.
    #[error("token lifetime is out of bounds")]
    LifetimeTooLong,
    /// `iss` is not the configured issuer.
    #[error("token issuer is not accepted")]
    WrongIssuer,
    /// `aud` does not name the configured audience.
    #[error("token audience is not accepted")]
    WrongAudience,
    /// A required claim is missing or has the wrong JSON type.
    #[error("token claim `{0}` is missing or malformed")]
    BadClaim(String),
    /// The header's `kid` names no published key of the configured algorithm.
    #[error("token key id is unknown")]
    UnknownKeyId,
    /// The token's `iss` + `jti` is on the revocation list.
    #[error("token has been revoked")]
    Revoked,

    /// An API key that claims the `kg_` form but does not parse or fails its checksum.
    #[error("API key is malformed or its checksum does not match")]
    MalformedKey,
    /// The presented credential matches no principal, or the wrong one.
    #[error("credential is not valid")]
    WrongCredential,
    /// The principal's credential has passed its `expires_at`.
    #[error("credential has expired")]
    CredentialExpired,
    /// A password longer than the hash scheme can check without truncating.
    #[error("password is longer than {0} bytes")]
    PasswordTooLong(usize),
    /// Too many password checks are already waiting for a hashing thread.
    #[error("password hashing is saturated; try again shortly")]
    HashingBusy,

    /// A stored hash string is malformed or too weak to accept.
    #[error("{0}")]
    BadHash(String),
    /// A signing key file is malformed, of the wrong kind or too weak.
    #[error("{0}")]
    BadKey(String),
    /// A signing secret is too short or well known.
    #[error("{0}")]
    WeakSecret(String),
    /// A signing key or token could not be built.
    #[error("signing failed: {0}")]
    Signing(String),
    /// The revocation store could not be reached.
    #[error("revocation store unavailable: {0}")]
    StoreUnavailable(String),
    /// A JWKS could not be fetched, or its answer was refused (an error status, too
    /// large, not a JWKS, no usable key); the keys held before stay in use.
    #[error("{0}")]
    JwksUnavailable(String),
    /// A CA certificate given to trust is not PEM, or TLS could not be set up with it.
    #[error("{0}")]
    BadCertificate(String),
}

impl Error {
    /// A short, stable label for metrics (`reason="expired"`): never the token or a secret.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Malformed(_) => "malformed",
            Error::TooLong => "too_long",
            Error::WrongAlgorithm => "wrong_algorithm",
            Error::InvalidSignature => "invalid_signature",
            Error::WrongType => "wrong_type",
            Error::UnsupportedCritical => "crit",
            Error::Expired => "expired",
            Error::NotYetValid => "not_yet_valid",
            Error::IssuedInFuture => "issued_in_future",
            Error::LifetimeTooLong => "lifetime",
            Error::WrongIssuer => "wrong_issuer",
            Error::WrongAudience => "wrong_audience",
            Error::BadClaim(_) => "bad_claim",
            Error::UnknownKeyId => "unknown_kid",
            Error::Revoked => "revoked",
            Error::MalformedKey => "malformed_key",
            Error::WrongCredential => "wrong_credential",
            Error::CredentialExpired => "credential_expired",
            Error::PasswordTooLong(_) => "password_too_long",
            Error::HashingBusy => "hashing_busy",
            Error::BadHash(_) => "bad_hash",
            Error::BadKey(_) => "bad_key",
            Error::WeakSecret(_) => "weak_secret",
            Error::Signing(_) => "signing",
            Error::StoreUnavailable(_) => "store_unavailable",
            Error::JwksUnavailable(_) => "jwks_unavailable",
            Error::BadCertificate(_) => "bad_certificate",
        }
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
