//! Signing keys and the [`KeySet`] that decides which key signs now and which keys
//! verify and are published.
//!
//! Rotation without downtime: a new key is published (JWKS) at once but signs only from
//! `signs_from`, so verifiers that cache the JWKS have it before any token uses it; a
//! retired key stops signing at once but stays published and verifying until the longest
//! token it can have signed has expired (`ttl + leeway` after retirement).

use aws_lc_rs::encoding::AsDer;
use base64::Engine as _;
use jsonwebtoken::jwk::{Jwk, KeyOperations, PublicKeyUse, ThumbprintHash};
use jsonwebtoken::{DecodingKey, EncodingKey};

use super::hmac_kid;
use super::secret::HmacSecret;
use crate::algorithm::SigningAlgorithm;
use crate::error::{KeyError, Result, SigningError, TokenError};

use crate::bounds::MIN_RSA_BITS;

/// One key: its id, algorithm, and the material to sign (when held) and verify with.
pub struct SigningKey {
    kid: String,
    algorithm: SigningAlgorithm,
    /// `None` for a public key read from a JWKS: it verifies, never signs.
    encoding: Option<EncodingKey>,
    decoding: DecodingKey,
    /// The public half as a JWK (`None` for HMAC: a secret is never published).
    public_jwk: Option<Jwk>,
    /// For HMAC, the key prepared once: verifying a token is then one MAC, not a key
    /// set-up per request.
    mac: Option<aws_lc_rs::hmac::Key>,
    /// For ES256 and EdDSA, the public key parsed once (RSA goes through jsonwebtoken).
    public: Option<aws_lc_rs::signature::ParsedPublicKey>,
    /// The header of the tokens this key signs, base64url-encoded on first use: it is the
    /// same for every token.
    header: std::sync::OnceLock<String>,
}

/// The public key of an ES256 (P-256) or EdDSA (Ed25519) JWK, parsed for aws-lc-rs.
fn parsed_public_key(
    algorithm: SigningAlgorithm,
    jwk: &Jwk,
) -> Option<aws_lc_rs::signature::ParsedPublicKey> {
    use jsonwebtoken::jwk::AlgorithmParameters;
    let b64 = |s: &str| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s)
            .ok()
    };
    let (verification, bytes): (
        &'static dyn aws_lc_rs::signature::VerificationAlgorithm,
        Vec<u8>,
    ) = match (algorithm, &jwk.algorithm) {
        (SigningAlgorithm::ES256, AlgorithmParameters::EllipticCurve(ec)) => {
            let mut point = vec![0x04];
            point.extend(b64(&ec.x)?);
            point.extend(b64(&ec.y)?);
            (&aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED, point)
        }
        (SigningAlgorithm::EdDSA, AlgorithmParameters::OctetKeyPair(okp)) => {
            (&aws_lc_rs::signature::ED25519, b64(&okp.x)?)
        }
        _ => return None,
    };
    aws_lc_rs::signature::ParsedPublicKey::new(verification, bytes).ok()
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// An HMAC key (`HS256`, `HS384`, `HS512`).
    pub fn hmac(algorithm: SigningAlgorithm, secret: &HmacSecret) -> Result<Self> {
        if !algorithm.is_hmac() {
            return Err(SigningError::NotHmac(algorithm).into());
        }
        Ok(Self {
            kid: hmac_kid(secret),
            algorithm,
            encoding: Some(EncodingKey::from_secret(secret.as_bytes())),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            public_jwk: None,
            public: None,
            mac: Some(aws_lc_rs::hmac::Key::new(
                match algorithm {
                    SigningAlgorithm::HS384 => aws_lc_rs::hmac::HMAC_SHA384,
                    SigningAlgorithm::HS512 => aws_lc_rs::hmac::HMAC_SHA512,
                    _ => aws_lc_rs::hmac::HMAC_SHA256,
                },
                secret.as_bytes(),
            )),
            header: std::sync::OnceLock::new(),
        })
    }

    /// A private key in PEM (PKCS#8, or PKCS#1 for RSA) for `ES256`, `EdDSA` or `RS256`.
    /// Its `kid` is the RFC 7638 thumbprint of the public key.
    pub fn from_pem(algorithm: SigningAlgorithm, pem: &[u8]) -> Result<Self> {
        let bad = |source| KeyError::Pem { algorithm, source };
        let encoding = match algorithm {
            SigningAlgorithm::ES256 => EncodingKey::from_ec_pem(pem).map_err(bad)?,
            SigningAlgorithm::EdDSA => EncodingKey::from_ed_pem(pem).map_err(bad)?,
            SigningAlgorithm::RS256 => EncodingKey::from_rsa_pem(pem).map_err(bad)?,
            _ => return Err(KeyError::NotAsymmetric(algorithm).into()),
        };
        let alg = algorithm.to_jsonwebtoken();
        let unusable = |action| move |source| KeyError::Unusable { action, source };
        let mut jwk =
            Jwk::from_encoding_key(&encoding, alg).map_err(unusable("derive the public key"))?;
        if let jsonwebtoken::jwk::AlgorithmParameters::RSA(rsa) = &jwk.algorithm {
            let bits = super::b64url_len(&rsa.n) * 8;
            if bits < MIN_RSA_BITS {
                return Err(KeyError::RsaTooShort { kid: None, bits }.into());
            }
        }
        let kid = jwk
            .thumbprint(ThumbprintHash::SHA256)
            .map_err(unusable("compute the key id"))?;
        jwk.common.key_id = Some(kid.clone());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        let decoding = DecodingKey::from_jwk(&jwk).map_err(unusable("build the verifying key"))?;
        // A signature made now must verify with the half we publish; otherwise tokens would
        // be refused by every verifier, so the key is refused here instead.
        let probe = b"keygate key check";
        let signature = jsonwebtoken::crypto::sign(probe, &encoding, alg)
            .map_err(unusable("sign with the key"))?;
        if !jsonwebtoken::crypto::verify(&signature, probe, &decoding, alg).unwrap_or(false) {
            return Err(KeyError::Mismatched.into());
        }
        Ok(Self {
            kid,
            algorithm,
            encoding: Some(encoding),
            decoding,
            public: parsed_public_key(algorithm, &jwk),
            public_jwk: Some(jwk),
            mac: None,
            header: std::sync::OnceLock::new(),
        })
    }

    /// A public key from a JWKS (RFC 7517), for verification only. Its `alg` must be
    /// present and be `algorithm`: a key is used with exactly one algorithm (RFC 8725 §3.1).
    pub fn from_public_jwk(algorithm: SigningAlgorithm, jwk: &Jwk) -> Result<Self> {
        if algorithm.is_hmac() {
            return Err(KeyError::NotAsymmetric(algorithm).into());
        }
        let alg = jwk
            .common
            .key_algorithm
            .and_then(|a| jsonwebtoken::Algorithm::try_from(a).ok())
            .ok_or_else(|| KeyError::Jwk {
                kid: jwk.common.key_id.clone(),
                problem: "has no usable `alg`",
            })?;
        if alg != algorithm.to_jsonwebtoken() {
            return Err(KeyError::JwkAlgorithm {
                found: format!("{alg:?}"),
                expected: algorithm,
            }
            .into());
        }
        if matches!(
            jwk.algorithm,
            jsonwebtoken::jwk::AlgorithmParameters::OctetKey(_)
        ) {
            return Err(KeyError::Jwk {
                kid: jwk.common.key_id.clone(),
                problem: "is symmetric: a JWKS holds public keys only",
            }
            .into());
        }
        let kid = jwk.common.key_id.clone().ok_or(KeyError::Jwk {
            kid: None,
            problem: "has no `kid`",
        })?;
        // A key published for encryption is not a signing key (RFC 7517 §4.2, §4.3): using
        // it to verify would let whoever encrypts to it also pass as the issuer.
        if jwk
            .common
            .public_key_use
            .as_ref()
            .is_some_and(|u| *u != PublicKeyUse::Signature)
        {
            return Err(KeyError::Jwk {
                kid: Some(kid),
                problem: "is not for signatures",
            }
            .into());
        }
        if jwk
            .common
            .key_operations
            .as_ref()
            .is_some_and(|ops| !ops.contains(&KeyOperations::Verify))
        {
            return Err(KeyError::Jwk {
                kid: Some(kid),
                problem: "has `key_ops` without `verify`",
            }
            .into());
        }
        // The same floor as for local keys: a published key is no more trusted than one
        // read from a file.
        if let jsonwebtoken::jwk::AlgorithmParameters::RSA(rsa) = &jwk.algorithm {
            let bits = rsa_modulus_bits(&rsa.n);
            if bits < MIN_RSA_BITS {
                return Err(KeyError::RsaTooShort {
                    kid: Some(kid),
                    bits,
                }
                .into());
            }
        }
        let decoding = match DecodingKey::from_jwk(jwk) {
            Ok(decoding) => decoding,
            Err(source) => return Err(KeyError::JwkUnusable { kid, source }.into()),
        };
        Ok(Self {
            kid,
            algorithm,
            encoding: None,
            decoding,
            public: parsed_public_key(algorithm, jwk),
            public_jwk: Some(jwk.clone()),
            mac: None,
            header: std::sync::OnceLock::new(),
        })
    }

    /// A new private key from the OS RNG, as PKCS#8 PEM, with the key built from it.
    pub fn generate(algorithm: SigningAlgorithm) -> Result<(Self, String)> {
        let failed = |source| SigningError::Generate { algorithm, source };
        let der: Vec<u8> = match algorithm {
            SigningAlgorithm::ES256 => aws_lc_rs::signature::EcdsaKeyPair::generate(
                &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            )
            .and_then(|k| k.to_pkcs8v1())
            .map_err(failed)?
            .as_ref()
            .to_vec(),
            SigningAlgorithm::EdDSA => aws_lc_rs::signature::Ed25519KeyPair::generate()
                .and_then(|k| k.to_pkcs8v1())
                .map_err(failed)?
                .as_ref()
                .to_vec(),
            SigningAlgorithm::RS256 => {
                let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                    .map_err(failed)?;
                let der: aws_lc_rs::encoding::Pkcs8V1Der<'_> = pair.as_der().map_err(failed)?;
                der.as_ref().to_vec()
            }
            _ => return Err(KeyError::NotAsymmetric(algorithm).into()),
        };
        let pem = pem::encode(&pem::Pem::new("PRIVATE KEY", der));
        let key = Self::from_pem(algorithm, pem.as_bytes())?;
        Ok((key, pem))
    }

    /// The `kid` header value.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The base64url header of the tokens this key signs (RFC 9068 §2.1: `typ` is
    /// `at+jwt`), made once.
    pub(crate) fn encoded_header(&self) -> &str {
        self.header.get_or_init(|| {
            let header = serde_json::json!({
                "alg": self.algorithm.as_str(),
                "typ": "at+jwt",
                "kid": self.kid,
            });
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(header.to_string())
        })
    }

    /// The algorithm this key is used with, and only with.
    pub fn algorithm(&self) -> SigningAlgorithm {
        self.algorithm
    }

    /// The public JWK (`kty`, `kid`, `use`, `alg`, and `crv`/`x`/`y` or `n`/`e`); `None`
    /// for HMAC keys.
    pub fn public_jwk(&self) -> Option<&Jwk> {
        self.public_jwk.as_ref()
    }

    /// The base64url signature of `signing_input` with this key's private half.
    pub(crate) fn sign(&self, signing_input: &[u8]) -> Result<String> {
        if let Some(mac) = &self.mac {
            let tag = aws_lc_rs::hmac::sign(mac, signing_input);
            return Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tag.as_ref()));
        }
        let encoding = self.encoding.as_ref().ok_or(SigningError::PublicOnly)?;
        jsonwebtoken::crypto::sign(signing_input, encoding, self.algorithm.to_jsonwebtoken())
            .map_err(|e| SigningError::Sign(e).into())
    }

    /// Checks `signature` (base64url, no padding) over `signing_input` with this key.
    pub(crate) fn verify_signature(&self, signing_input: &[u8], signature: &str) -> Result<()> {
        if let Some(mac) = &self.mac {
            // Canonical base64url only: a signature re-encoded with other trailing bits
            // is not the signature keygate issued.
            let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(signature)
                .map_err(|_| TokenError::Malformed("signature is not base64url"))?;
            // Constant time (aws-lc-rs compares the tags without short-circuit).
            return aws_lc_rs::hmac::verify(mac, signing_input, &bytes)
                .map_err(|_| TokenError::InvalidSignature.into());
        }
        if let Some(public) = &self.public {
            let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(signature)
                .map_err(|_| TokenError::Malformed("signature is not base64url"))?;
            return public
                .verify_sig(signing_input, &bytes)
                .map_err(|_| TokenError::InvalidSignature.into());
        }
        match jsonwebtoken::crypto::verify(
            signature,
            signing_input,
            &self.decoding,
            self.algorithm.to_jsonwebtoken(),
        ) {
            Ok(true) => Ok(()),
            Ok(false) => Err(TokenError::InvalidSignature.into()),
            Err(_) => Err(TokenError::Malformed("signature is not base64url").into()),
        }
    }
}

/// The size in bits of a base64url big-endian RSA modulus (leading zero bits ignored; 0
/// when it does not decode).
fn rsa_modulus_bits(n: &str) -> usize {
    use base64::Engine;
    let Ok(bytes) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(n) else {
        return 0;
    };
    match bytes.iter().position(|b| *b != 0) {
        Some(i) => (bytes.len() - i) * 8 - bytes[i].leading_zeros() as usize,
        None => 0,
    }
}

/// A key with its place in the rotation schedule (seconds since the epoch).
#[derive(Debug)]
pub struct KeyEntry {
    /// The key.
    pub key: SigningKey,
    /// When it was made; among keys not yet allowed to sign, the oldest signs.
    pub created_at: u64,
    /// From when it may sign (created + the publish delay).
    pub signs_from: u64,
    /// When it stopped signing, if it has.
    pub retired_at: Option<u64>,
}

/// The keys of one issuer.
#[derive(Debug)]
pub struct KeySet {
    entries: Vec<KeyEntry>,
}

impl KeySet {
    /// One key that signs from the start and is never retired.
    pub fn single(key: SigningKey) -> Self {
        Self {
            entries: vec![KeyEntry {
                key,
                created_at: 0,
                signs_from: 0,
                retired_at: None,
            }],
        }
    }

    /// Keys with their schedule; `kid`s must be unique.
    pub fn new(entries: Vec<KeyEntry>) -> Result<Self> {
        for (i, e) in entries.iter().enumerate() {
            if entries[..i].iter().any(|o| o.key.kid == e.key.kid) {
                return Err(KeyError::DuplicateKid(e.key.kid.clone()).into());
            }
        }
        Ok(Self { entries })
    }

    /// Every entry.
    pub fn entries(&self) -> &[KeyEntry] {
        &self.entries
    }

    /// The key that signs at `now`: the newest whose `signs_from` has passed; when none has
    /// (a brand-new set), the oldest unretired key. `None` when every key is retired, or
    /// the set holds public keys only.
    pub fn signer(&self, now: u64) -> Option<&SigningKey> {
        let live = || {
            self.entries
                .iter()
                .filter(move |e| e.retired_at.is_none_or(|r| r > now))
                .filter(|e| e.key.encoding.is_some())
        };
        live()
            .filter(|e| e.signs_from <= now)
            .max_by_key(|e| (e.signs_from, e.created_at))
            .or_else(|| live().min_by_key(|e| e.created_at))
            .map(|e| &e.key)
    }

    /// Keys that verify and are published at `now`: all unretired keys, and retired keys
    /// for `keep_after_retire` seconds after their retirement.
    pub fn published(&self, now: u64, keep_after_retire: u64) -> impl Iterator<Item = &SigningKey> {
        self.entries
            .iter()
            .filter(move |e| {
                e.retired_at
                    .is_none_or(|r| r.saturating_add(keep_after_retire) > now)
            })
            .map(|e| &e.key)
    }

    /// The key to verify a token with: the published key with this `kid`, or, for a token
    /// without `kid`, the only published key.
    pub fn verifying(
        &self,
        kid: Option<&str>,
        now: u64,
        keep_after_retire: u64,
    ) -> Option<&SigningKey> {
        let mut published = self.published(now, keep_after_retire);
        match kid {
            Some(kid) => published.find(|k| k.kid == kid),
            None => {
                let first = published.next();
                if published.next().is_some() {
                    None
                } else {
                    first
                }
            }
        }
    }

    /// The published key whose own token header is, byte for byte, `encoded_header`: a
    /// token keygate signed names its key without its header being decoded or parsed.
    pub(crate) fn verifying_own(
        &self,
        encoded_header: &str,
        now: u64,
        keep_after_retire: u64,
    ) -> Option<&SigningKey> {
        self.published(now, keep_after_retire)
            .find(|k| k.encoded_header() == encoded_header)
    }

    /// The JWKS document (RFC 7517): the public halves of the published keys.
    pub fn jwks(&self, now: u64, keep_after_retire: u64) -> serde_json::Value {
        let keys: Vec<&Jwk> = self
            .published(now, keep_after_retire)
            .filter_map(SigningKey::public_jwk)
            .collect();
        serde_json::json!({ "keys": keys })
    }
}

#[cfg(test)]
mod tests;
