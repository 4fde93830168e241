//! The error type of the `keygate` crate, grouped by what failed: a token, a credential,
//! a key (signing keys, secrets, stored hashes), signing, a JWKS, TLS, a store, or the
//! operating system.
//!
//! Each error's `Display` text says what happened in keygate's words; when an underlying
//! library or the operating system failed, that failure is the error's
//! [`source()`](std::error::Error::source), not part of the text. [`chain`] writes an
//! error and its sources on one line. HTTP responses never echo any of it, so a caller
//! cannot learn which check failed.

use std::error::Error as StdError;
use std::time::Duration;

use crate::algorithm::SigningAlgorithm;

/// Everything that can go wrong while issuing or verifying a token, checking a credential
/// or reading a key, a secret or a hash.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A token was refused.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// A presented credential was refused, or could not be checked now.
    #[error(transparent)]
    Credential(#[from] CredentialError),
    /// A signing key, an HMAC secret or a stored hash is malformed or too weak.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// A key or a token could not be made with keys that were accepted.
    #[error(transparent)]
    Signing(#[from] SigningError),
    /// A JWKS could not be had or was refused; the keys held before stay in use.
    #[cfg(feature = "jwks")]
    #[error(transparent)]
    Jwks(#[from] JwksError),
    /// TLS could not be set up with the certificates given to trust.
    #[cfg(feature = "jwks")]
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// A shared store (revocations, attempt counters, quotas) could not be used.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The operating system's random number generator failed (a key, a salt or a token
    /// id could not be drawn).
    #[error("the operating system's random number generator failed")]
    Random(#[source] getrandom::Error),
    /// A password-hashing thread could not be started.
    #[error("cannot start a password-hashing thread")]
    ThreadSpawn(#[source] std::io::Error),
}

impl Error {
    /// A short, stable label for metrics (`reason="expired"`) and audit events: never the
    /// token or a secret. Random-number and thread failures share `signing`.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Token(e) => e.reason(),
            Error::Credential(e) => e.reason(),
            Error::Key(e) => e.reason(),
            Error::Signing(_) | Error::Random(_) | Error::ThreadSpawn(_) => "signing",
            #[cfg(feature = "jwks")]
            Error::Jwks(_) => "jwks_unavailable",
            #[cfg(feature = "jwks")]
            Error::Tls(_) => "bad_certificate",
            Error::Store(_) => "store_unavailable",
        }
    }
}

/// Why a token was refused (RFC 8725, RFC 9068).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
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
    /// `exp - iat` exceeds [`crate::bounds::MAX_LIFETIME`], or `exp` precedes `iat`.
    #[error("token lifetime is out of bounds")]
    LifetimeTooLong,
    /// `iss` is not the configured issuer.
    #[error("token issuer is not accepted")]
    WrongIssuer,
    /// `aud` does not name the configured audience.
    #[error("token audience is not accepted")]
    WrongAudience,
    /// The named claim (`claims` for the payload as a whole) is missing or has the wrong
    /// JSON type.
    #[error("token claim `{0}` is missing or malformed")]
    BadClaim(&'static str),
    /// The header's `kid` names no published key of the configured algorithm.
    #[error("token key id is unknown")]
    UnknownKeyId,
    /// The token's `iss` + `jti` is on the revocation list.
    #[error("token has been revoked")]
    Revoked,
}

impl TokenError {
    /// The stable label of [`Error::reason`].
    pub fn reason(&self) -> &'static str {
        match self {
            TokenError::Malformed(_) => "malformed",
            TokenError::TooLong => "too_long",
            TokenError::WrongAlgorithm => "wrong_algorithm",
            TokenError::InvalidSignature => "invalid_signature",
            TokenError::WrongType => "wrong_type",
            TokenError::UnsupportedCritical => "crit",
            TokenError::Expired => "expired",
            TokenError::NotYetValid => "not_yet_valid",
            TokenError::IssuedInFuture => "issued_in_future",
            TokenError::LifetimeTooLong => "lifetime",
            TokenError::WrongIssuer => "wrong_issuer",
            TokenError::WrongAudience => "wrong_audience",
            TokenError::BadClaim(_) => "bad_claim",
            TokenError::UnknownKeyId => "unknown_kid",
            TokenError::Revoked => "revoked",
        }
    }
}

/// Why a presented credential (API key, client secret, password) was refused, or could
/// not be checked now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialError {
    /// An API key in the generated `kg_` shape whose checksum does not match, or an id
    /// that cannot be part of a key.
    #[error("API key is malformed or its checksum does not match")]
    MalformedKey,
    /// The presented credential matches no principal, or the wrong one.
    #[error("credential is not valid")]
    Wrong,
    /// The principal's credential has passed its `expires_at`.
    #[error("credential has expired")]
    Expired,
    /// A password longer than the hash scheme can check without truncating.
    #[error("password is longer than {0} bytes")]
    PasswordTooLong(usize),
    /// Too many password checks are already waiting for a hashing thread.
    #[error("password hashing is saturated; try again shortly")]
    HashingBusy,
}

impl CredentialError {
    /// The stable label of [`Error::reason`].
    pub fn reason(&self) -> &'static str {
        match self {
            CredentialError::MalformedKey => "malformed_key",
            CredentialError::Wrong => "wrong_credential",
            CredentialError::Expired => "credential_expired",
            CredentialError::PasswordTooLong(_) => "password_too_long",
            CredentialError::HashingBusy => "hashing_busy",
        }
    }
}

/// Why a signing key, an HMAC secret or a stored hash was refused. The texts of secrets
/// start with a verb ("is 12 bytes; …"): they follow the name of the setting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// A PEM file that is not a private key of the algorithm.
    #[error("not a {algorithm} private key in PEM")]
    Pem {
        /// The configured algorithm.
        algorithm: SigningAlgorithm,
        /// What the PEM reader refused.
        #[source]
        source: jsonwebtoken::errors::Error,
    },
    /// An HMAC algorithm where a key pair is expected (a PEM file, a JWK, `keygate keygen`).
    #[error("{0} signs with a secret, not a key pair: make one with `keygate secret`")]
    NotAsymmetric(SigningAlgorithm),
    /// An RSA modulus below 2048 bits (RFC 7518 §3.3).
    #[error(
        "{}RSA key of {bits} bits; at least {min} are required",
        .kid.as_ref().map(|k| format!("JWK `{k}`: ")).unwrap_or_default(),
        min = crate::bounds::MIN_RSA_BITS
    )]
    RsaTooShort {
        /// The JWK's `kid`, for a key from a JWKS.
        kid: Option<String>,
        /// The modulus size.
        bits: usize,
    },
    /// A private key the signing library accepted but cannot use (`action` says for what).
    #[error("cannot {action}")]
    Unusable {
        /// What was being done with the key: "derive the public key", "sign with the key".
        action: &'static str,
        /// What the signing library reported.
        #[source]
        source: jsonwebtoken::errors::Error,
    },
    /// Signatures made with the private key do not verify with its public half.
    #[error("the key's signatures do not verify with its public half")]
    Mismatched,
    /// A JWK that is not a usable public signing key of the algorithm (RFC 7517 §4).
    #[error(
        "JWK{} {problem}",
        .kid.as_ref().map(|k| format!(" `{k}`")).unwrap_or_default()
    )]
    Jwk {
        /// The JWK's `kid`, when it has one.
        kid: Option<String>,
        /// What is wrong with it: "is not for signatures", "has no `kid`".
        problem: &'static str,
    },
    /// A JWK for another algorithm than the configured one (RFC 8725 §3.1: a key is used
    /// with one algorithm).
    #[error("JWK for {found}, not {expected}")]
    JwkAlgorithm {
        /// The JWK's `alg`.
        found: String,
        /// The configured algorithm.
        expected: SigningAlgorithm,
    },
    /// A JWK the signing library cannot use.
    #[error("unusable JWK `{kid}`")]
    JwkUnusable {
        /// The JWK's `kid`.
        kid: String,
        /// What the signing library reported.
        #[source]
        source: jsonwebtoken::errors::Error,
    },
    /// Two keys of one set share a `kid`.
    #[error("two keys have the kid `{0}`")]
    DuplicateKid(String),

    /// An HMAC secret that is well known, low-entropy or not in its declared encoding.
    /// (A decoder's own error is not kept: it quotes a character of the secret.)
    #[error("{0}")]
    WeakSecret(&'static str),
    /// An HMAC secret shorter than [`crate::bounds::MIN_SECRET_LEN`] (RFC 7518 §3.2).
    #[error(
        "is {0} bytes; at least {min} are required (generate one with `keygate secret`)",
        min = crate::bounds::MIN_SECRET_LEN
    )]
    ShortSecret(usize),

    /// A stored hash that is malformed, or that this build does not accept (the text says
    /// which).
    #[error("{0}")]
    BadHash(&'static str),
    /// An argon2 hash or its parameters that the argon2 library cannot read.
    #[error("malformed argon2 {what}")]
    Argon2 {
        /// `hash` or `parameters`.
        what: &'static str,
        /// What the argon2 library reported.
        #[source]
        source: argon2::password_hash::Error,
    },
    /// An argon2 hash of another variant than argon2id.
    #[error("{0} hashes are not accepted; use argon2id")]
    Argon2Variant(String),
    /// An argon2 parameter written twice: which one argon2 would use is unclear.
    #[error("argon2 parameter {0} is given twice")]
    Argon2RepeatedParameter(String),
    /// An argon2 memory cost (KiB) above the limit: a guard against a configured hash
    /// that would allocate gigabytes per check (docs/security.md).
    #[error(
        "argon2 memory cost m={0} is above the {max} KiB limit",
        max = crate::bounds::ARGON2_MAX_M_COST
    )]
    Argon2Memory(u32),
    /// An argon2 iteration count above the limit: one check would take over a second.
    #[error(
        "argon2 iterations t={0} are above the limit t<={max}: one check would take over a second",
        max = crate::bounds::ARGON2_MAX_T_COST
    )]
    Argon2Iterations(u32),
    /// An argon2 parallelism above the limit: one check would take over a second.
    #[error(
        "argon2 parallelism p={0} is above the limit p<={max}: one check would take over a second",
        max = crate::bounds::ARGON2_MAX_P_COST
    )]
    Argon2Parallelism(u32),
    /// argon2 parameters weaker than OWASP's minimum (docs/security.md).
    #[error("argon2 parameters m={m},t={t} are weaker than OWASP's minimum (m=19456,t=2)")]
    Argon2TooWeak {
        /// Memory in KiB.
        m: u32,
        /// Iterations.
        t: u32,
    },
    /// A bcrypt cost outside 10 to 16 (2^16 rounds take about a second).
    #[error(
        "bcrypt cost {0} is outside 10..={max} (above {max}, one check takes over a second)",
        max = crate::bounds::BCRYPT_MAX_COST
    )]
    BcryptCost(u32),
}

impl KeyError {
    /// The stable label of [`Error::reason`]: `bad_key`, `weak_secret` or `bad_hash`.
    pub fn reason(&self) -> &'static str {
        match self {
            KeyError::Pem { .. }
            | KeyError::NotAsymmetric(_)
            | KeyError::RsaTooShort { .. }
            | KeyError::Unusable { .. }
            | KeyError::Mismatched
            | KeyError::Jwk { .. }
            | KeyError::JwkAlgorithm { .. }
            | KeyError::JwkUnusable { .. }
            | KeyError::DuplicateKid(_) => "bad_key",
            KeyError::WeakSecret(_) | KeyError::ShortSecret(_) => "weak_secret",
            KeyError::BadHash(_)
            | KeyError::Argon2 { .. }
            | KeyError::Argon2Variant(_)
            | KeyError::Argon2RepeatedParameter(_)
            | KeyError::Argon2Memory(_)
            | KeyError::Argon2Iterations(_)
            | KeyError::Argon2Parallelism(_)
            | KeyError::Argon2TooWeak { .. }
            | KeyError::BcryptCost(_) => "bad_hash",
        }
    }
}

/// Why a key or a token could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SigningError {
    /// An HMAC key asked for with another algorithm.
    #[error("{0} is not an HMAC algorithm")]
    NotHmac(SigningAlgorithm),
    /// A token lifetime of zero or above [`crate::bounds::MAX_LIFETIME`].
    #[error(
        "a token lifetime must be between 1s and {}s",
        crate::bounds::MAX_LIFETIME.as_secs()
    )]
    Lifetime,
    /// Every key of the set is retired.
    #[error("no signing key is active (all are retired)")]
    NoActiveKey,
    /// The key set holds public keys only (a JWKS): it verifies, never signs.
    #[error("the key set holds public keys only")]
    PublicOnly,
    /// The signing library failed to sign.
    #[error("signing failed")]
    Sign(#[source] jsonwebtoken::errors::Error),
    /// A new key pair could not be generated.
    #[error("{algorithm} key generation failed")]
    Generate {
        /// The algorithm of the key.
        algorithm: SigningAlgorithm,
        /// What the crypto library reported (it says nothing more).
        #[source]
        source: aws_lc_rs::error::Unspecified,
    },
    /// A password could not be hashed.
    #[error("cannot hash the password")]
    HashPassword(#[source] argon2::password_hash::Error),
}

/// Why a JWKS could not be had or was refused (see [`crate::token::JwksVerifier`]).
#[cfg(feature = "jwks")]
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JwksError {
    /// The request failed: no connection, a timeout, a certificate not trusted.
    #[error("JWKS {url}: the request failed")]
    Request {
        /// The JWKS URL.
        url: String,
        /// What the HTTP client reported.
        #[source]
        source: reqwest::Error,
    },
    /// The server answered with another status than success.
    #[error("JWKS {url}: answered {status}")]
    Status {
        /// The JWKS URL.
        url: String,
        /// The status of the answer.
        status: reqwest::StatusCode,
    },
    /// The body is larger than [`crate::bounds::MAX_JWKS_BYTES`].
    #[error("JWKS {url}: larger than {} bytes", crate::bounds::MAX_JWKS_BYTES)]
    TooLarge {
        /// The JWKS URL.
        url: String,
    },
    /// The body is not a JSON object with a `keys` array.
    #[error("JWKS {url}: not a JWKS")]
    NotJwks {
        /// The JWKS URL.
        url: String,
        /// What the JSON reader reported.
        #[source]
        source: serde_json::Error,
    },
    /// The set holds no usable key of the configured algorithm.
    #[error("JWKS {url}: no usable {algorithm} signing key")]
    NoUsableKey {
        /// The JWKS URL.
        url: String,
        /// The configured algorithm.
        algorithm: SigningAlgorithm,
    },
    /// A re-fetch ended without telling its outcome (its task was cancelled).
    #[error("the JWKS fetch ended without an answer")]
    NoAnswer,
    /// A re-fetch shared by several waiters failed: the failure, as each waiter gets it.
    #[error(transparent)]
    Refresh(std::sync::Arc<Error>),
}

/// Why TLS could not be set up with the certificates given to trust.
#[cfg(feature = "jwks")]
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A CA certificate given to trust is not PEM, or holds no certificate.
    #[error("root certificate is not PEM")]
    RootNotPem(#[source] Option<reqwest::Error>),
    /// The HTTPS client could not be built with the certificates.
    #[error("cannot build the HTTPS client")]
    Client(#[source] reqwest::Error),
}

/// Why a shared store could not be used. The store's own error type is the source.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store could not be reached, or refused the call.
    #[error("store unavailable")]
    Unavailable(#[source] Box<dyn StdError + Send + Sync>),
    /// The store did not answer within the time allowed.
    #[error("the store did not answer within {0:?}")]
    Timeout(Duration),
    /// The store answered, in a shape the caller does not know (`0` names the call).
    #[error("{0} answered in an unexpected shape")]
    UnexpectedAnswer(&'static str),
}

/// `error` and each of its sources, `: ` between them, on one line: for a log field or a
/// message that must be one string, where an error's own text leaves its source out.
pub fn chain(error: &(dyn StdError + 'static)) -> String {
    let mut text = error.to_string();
    let mut next = error.source();
    while let Some(cause) = next {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        next = cause.source();
    }
    text
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests;
