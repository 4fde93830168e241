//! `POST /token`: the RFC 6749 token endpoint (`client_credentials`, `password`).

use std::collections::HashMap;
use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use keygate::Error;
use keygate::principal::Principal;
use keygate::token::{Grant, IssuedToken};
use serde::Serialize;
use time::OffsetDateTime;

use crate::extract::{Peer, client_ip};
use crate::rejection::Rejection;
use crate::state::AppState;

/// The successful token response (RFC 6749 §5.1).
#[derive(Debug, Serialize)]
pub struct TokenResponse {
    /// The JWT.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds until expiry.
    pub expires_in: u64,
    /// Granted scopes, space-separated.
    pub scope: String,
}

/// Builds the JSON token response with `Cache-Control: no-store` and `Pragma: no-cache`.
pub(crate) fn token_response(issued: &IssuedToken, set_cookie: Option<HeaderValue>) -> Response {
    let body = TokenResponse {
        access_token: issued.token.clone(),
        token_type: "Bearer",
        expires_in: issued.expires_in(),
        scope: issued.claims.scope.clone(),
    };
    let mut response = Json(body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    if let Some(cookie) = set_cookie {
        headers.insert(header::SET_COOKIE, cookie);
    }
    response
}

/// Signs a token for `principal` with the granted `scopes` and counts it.
pub(crate) fn issue(
    state: &AppState,
    principal: &Principal,
    scopes: &[String],
    grant_type: &'static str,
) -> Result<IssuedToken, Rejection> {
    let rt = state.runtime();
    let grant = Grant {
        subject: &principal.id,
        client_id: &principal.id,
        role: &principal.role,
        scopes,
    };
    let issued = rt.issuer.issue(&grant).map_err(|e| {
        tracing::error!(error = %e, "signing failed");
        Rejection::Internal
    })?;
    metrics::counter!("keygate_tokens_issued_total", "grant" => grant_type).increment(1);
    tracing::info!(sub = %principal.id, jti = %issued.claims.jti, grant = grant_type, "token issued");
    Ok(issued)
}

/// Maps a failed credential check to its answer, counting the failure against `subjects`.
pub(crate) fn refuse(
    state: &AppState,
    error: &Error,
    subjects: &[&str],
    grant_type: &'static str,
    rejection: Rejection,
) -> Rejection {
    metrics::counter!("keygate_tokens_refused_total", "grant" => grant_type, "reason" => error.reason())
        .increment(1);
    match error {
        Error::HashingBusy => Rejection::Unavailable(std::time::Duration::from_secs(1)),
        Error::StoreUnavailable(_) | Error::Signing(_) => {
            tracing::error!(error = %error, "credential check failed");
            Rejection::Internal
        }
        _ => {
            state.attempts().record_failure(subjects, Instant::now());
            tracing::info!(
                reason = error.reason(),
                grant = grant_type,
                "credential refused"
            );
            rejection
        }
    }
}

/// 429 when any of `subjects` has used up its failed attempts.
pub(crate) fn check_limits(
    state: &AppState,
    subjects: &[&str],
    grant_type: &'static str,
) -> Result<(), Rejection> {
    match state.attempts().blocked(subjects, Instant::now()) {
        Some(after) => {
            metrics::counter!("keygate_rate_limited_total", "grant" => grant_type).increment(1);
            Err(Rejection::TooManyAttempts(after))
        }
        None => Ok(()),
    }
}

/// The scopes to grant: all the principal has when none are asked for, else exactly
/// those asked for, each of which must be allowed.
pub(crate) fn narrow_scopes(
    requested: Option<&str>,
    allowed: &[String],
) -> Result<Vec<String>, Rejection> {
    let Some(requested) = requested else {
        return Ok(allowed.to_vec());
    };
    let mut granted: Vec<String> = Vec::new();
    for s in requested.split(' ').filter(|s| !s.is_empty()) {
        if !allowed.iter().any(|a| a == s) {
            return Err(Rejection::InvalidScope);
        }
        if !granted.iter().any(|g| g == s) {
            granted.push(s.to_owned());
        }
    }
    Ok(granted)
}

pub(super) async fn token(
    State(state): State<AppState>,
    Peer(peer): Peer,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Rejection> {
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !is_form {
        return Err(Rejection::InvalidRequest(
            "the body must be application/x-www-form-urlencoded",
        ));
    }
    let params = parse_form(&body)?;
    let rt = state.runtime();
    let ip = format!("ip:{}", client_ip(peer, &headers, &rt.config));
    match params.get("grant_type").map(String::as_str) {
        None => Err(Rejection::InvalidRequest("grant_type is required")),
        Some("client_credentials") => client_credentials(&state, &headers, &params, &ip).await,
        Some("password") if rt.directory.has_users() => password(&state, &params, &ip).await,
        Some(_) => Err(Rejection::UnsupportedGrantType),
    }
}

async fn client_credentials(
    state: &AppState,
    headers: &HeaderMap,
    params: &HashMap<String, String>,
    ip: &str,
) -> Result<Response, Rejection> {
    let (client_id, secret) = client_auth(headers, params)?;
    let who = format!("id:{client_id}");
    let subjects = [ip, who.as_str()];
    check_limits(state, &subjects, "client_credentials")?;
    let rt = state.runtime();
    let now = OffsetDateTime::now_utc();
    let client = rt
        .directory
        .authenticate_client(&client_id, &secret, state.passwords(), now)
        .await
        .map_err(|e| {
            refuse(
                state,
                &e,
                &subjects,
                "client_credentials",
                Rejection::InvalidClient { basic: true },
            )
        })?;
    let scopes = narrow_scopes(params.get("scope").map(String::as_str), &client.scopes)?;
    let issued = issue(state, &client, &scopes, "client_credentials")?;
    Ok(token_response(&issued, None))
}

async fn password(
    state: &AppState,
    params: &HashMap<String, String>,
    ip: &str,
) -> Result<Response, Rejection> {
    let (Some(username), Some(password)) = (params.get("username"), params.get("password")) else {
        return Err(Rejection::InvalidRequest(
            "username and password are required",
        ));
    };
    let who = format!("id:{username}");
    let subjects = [ip, who.as_str()];
    check_limits(state, &subjects, "password")?;
    let rt = state.runtime();
    let now = OffsetDateTime::now_utc();
    let user = rt
        .directory
        .authenticate_user(username, password, state.passwords(), now)
        .await
        .map_err(|e| refuse(state, &e, &subjects, "password", Rejection::InvalidGrant))?;
    let scopes = narrow_scopes(params.get("scope").map(String::as_str), &user.scopes)?;
    let issued = issue(state, &user, &scopes, "password")?;
    Ok(token_response(&issued, None))
}

/// Client id and secret from HTTP Basic (each part form-urlencoded, RFC 6749 §2.3.1) or
/// from the form; both at once is an error (§2.3).
fn client_auth(
    headers: &HeaderMap,
    params: &HashMap<String, String>,
) -> Result<(String, String), Rejection> {
    let basic = match headers.get(header::AUTHORIZATION) {
        Some(v) => {
            let v = v
                .to_str()
                .map_err(|_| Rejection::InvalidClient { basic: true })?;
            match v.split_once(' ') {
                Some((scheme, creds)) if scheme.eq_ignore_ascii_case("basic") => {
                    Some(decode_basic(creds.trim())?)
                }
                _ => None,
            }
        }
        None => None,
    };
    let form = match (params.get("client_id"), params.get("client_secret")) {
        (Some(id), Some(secret)) => Some((id.clone(), secret.clone())),
        _ => None,
    };
    match (basic, form) {
        (Some(_), Some(_)) => Err(Rejection::InvalidRequest(
            "use one client authentication method, not two",
        )),
        (Some(c), None) | (None, Some(c)) => Ok(c),
        (None, None) => Err(Rejection::InvalidClient { basic: true }),
    }
}

fn decode_basic(creds: &str) -> Result<(String, String), Rejection> {
    let bad = Rejection::InvalidClient { basic: true };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(creds)
        .map_err(|_| bad.clone())?;
    let text = String::from_utf8(bytes).map_err(|_| bad.clone())?;
    let (id, secret) = text.split_once(':').ok_or(bad)?;
    let decode = |s: &str| -> String {
        form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    Ok((decode(id), decode(secret)))
}

/// Form parameters; a repeated one is an error, an empty one counts as absent (RFC 6749 §3.1).
fn parse_form(body: &[u8]) -> Result<HashMap<String, String>, Rejection> {
    let mut params = HashMap::new();
    for (k, v) in form_urlencoded::parse(body) {
        if v.is_empty() {
            continue;
        }
        if params.insert(k.into_owned(), v.into_owned()).is_some() {
            return Err(Rejection::InvalidRequest("a parameter is repeated"));
        }
    }
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_narrow_to_what_is_allowed() {
        let allowed = vec!["a".to_owned(), "b".to_owned()];
        assert_eq!(narrow_scopes(None, &allowed).unwrap(), allowed);
        assert_eq!(
            narrow_scopes(Some("b"), &allowed).unwrap(),
            vec!["b".to_owned()]
        );
        assert_eq!(
            narrow_scopes(Some("b  b a"), &allowed).unwrap(),
            vec!["b".to_owned(), "a".to_owned()]
        );
        assert_eq!(
            narrow_scopes(Some("c"), &allowed),
            Err(Rejection::InvalidScope)
        );
    }

    #[test]
    fn basic_credentials_are_form_decoded() {
        let raw = base64::engine::general_purpose::STANDARD.encode("my%3Aclient:s%2Bc+r%25t");
        assert_eq!(
            decode_basic(&raw).unwrap(),
            ("my:client".to_owned(), "s+c r%t".to_owned())
        );
        assert!(decode_basic("!!!").is_err());
    }

    #[test]
    fn repeated_parameters_are_refused() {
        assert!(parse_form(b"grant_type=a&grant_type=b").is_err());
        let p = parse_form(b"grant_type=password&scope=").unwrap();
        assert_eq!(p.len(), 1);
    }
}
