//! keygate: exchange an API key (or client credentials, or a password) for a short-lived
//! signed JWT, and verify such tokens without a database.
//!
//! This crate is the config-free core, with no HTTP server in it:
//!
//! | module | holds |
//! |---|---|
//! | [`api_key`] | the `kg_<id>_<secret><checksum>` format, [`api_key::KeyHash`] (SHA-256 or a password hash) |
//! | [`clock`] | [`clock::Clock`], where the issuer, the verifier and the revocation list read the time; [`clock::ManualClock`] for tests |
//! | [`password`] | argon2id / bcrypt hashes and [`password::PasswordVerifier`], bounded off the async workers |
//! | [`principal`] | clients and users, and the [`principal::Directory`] that authenticates them in O(1) |
//! | [`token`] | [`token::Claims`], [`token::Issuer`], [`token::Verifier`] under one [`token::TokenPolicy`] |
//! | [`revocation`] | [`revocation::MemoryRevocationStore`], the revocation list kept in memory |
//! | [`dangerous`] | decoding without verification, for display only |
//! | [`error`] | [`Error`], grouped by what failed ([`error::TokenError`], [`error::KeyError`], …), each underlying failure kept as its `source()`; [`error::chain`] writes one on a line |
//!
//! | feature | adds |
//! |---|---|
//! | `axum` | `keygate::axum`: the `Authenticated` extractor, `RequireAuthLayer`, `AuthRejection`, for services that trust keygate tokens |
//! | `jwks` | `token::JwksVerifier`: verification with keys fetched from keygate's JWKS (HTTPS by rustls), cached, refreshed in the background and on unknown `kid`; bounded fetches that never replace good keys with bad ones |
//! | `openapi` | `utoipa::ToSchema` for [`token::Claims`], for servers that publish an OpenAPI document |
//!
//! Verification is secure by default: the algorithm comes from configuration, never the
//! token; `exp`, `nbf`, `iat`, `iss`, `aud`, `typ` and `crit` are all checked.
//!
//! ```
//! use keygate::token::{Grant, HmacSecret, Issuer, SigningAlgorithm, TokenPolicy, Verifier};
//!
//! let secret: HmacSecret = HmacSecret::generate_hex()?.parse()?;
//! let policy = TokenPolicy::new("https://auth.example.com");
//! let issuer = Issuer::hmac(SigningAlgorithm::HS256, &secret, policy.clone())?;
//! let verifier = Verifier::hmac(SigningAlgorithm::HS256, &secret, policy)?;
//!
//! let scopes = vec!["orders:read".to_owned()];
//! let grant = Grant { subject: "billing", client_id: "billing", role: "service", scopes: &scopes };
//! let token = issuer.issue(&grant)?.token;
//! let claims = verifier.verify(&token)?;
//! assert!(claims.has_scope("orders:read"));
//! # Ok::<(), keygate::Error>(())
//! ```

mod algorithm;
pub mod api_key;
#[cfg(feature = "axum")]
pub mod axum;
mod bounds;
pub mod clock;
pub mod dangerous;
pub mod error;
pub mod json;
pub mod password;
pub mod principal;
pub mod revocation;
pub mod token;

pub use error::{Error, Result};
