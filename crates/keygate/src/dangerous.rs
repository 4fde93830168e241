//! What skips verification, under a loud name. For display only (`keygate token decode`):
//! nothing decoded here may be trusted.

use base64::Engine as _;

use crate::error::{Result, TokenError};

/// The header and claims of `token` as JSON, **without checking the signature or any
/// claim**.
pub fn decode_unverified(token: &str) -> Result<(serde_json::Value, serde_json::Value)> {
    let mut parts = token.trim().split('.');
    let (Some(h), Some(p)) = (parts.next(), parts.next()) else {
        return Err(TokenError::Malformed("not a JWS").into());
    };
    let part = |s: &str| -> Result<serde_json::Value> {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| TokenError::Malformed("segment is not base64url"))?;
        serde_json::from_slice(&bytes)
            .map_err(|_| TokenError::Malformed("segment is not JSON").into())
    };
    Ok((part(h)?, part(p)?))
}
