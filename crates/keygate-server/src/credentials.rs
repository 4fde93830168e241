//! Checking credentials: API keys (`/login`), client authentication for `/token`,
//! `/revoke` and `/introspect`, and the failed-attempt bookkeeping every check shares.

use std::borrow::Cow;
use std::net::IpAddr;

use crate::directory::Found;
use axum::http::{HeaderMap, header};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use keygate::Error;
use keygate::error::CredentialError;
use sha2::Sha256;
use time::OffsetDateTime;

use crate::audit::AuditKind;
use crate::config::{OnUnavailable, Runtime};
use crate::limits::{Attempt, Refused, Subject};
use crate::rejection::Rejection;
use crate::state::AppState;
use crate::store::Verdict;

/// Client credentials sent in a form body (RFC 6749 §2.3.1: `client_id` + `client_secret`).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct FormSecret<'a> {
    pub(crate) client_id: Option<&'a str>,
    pub(crate) client_secret: Option<&'a str>,
}

/// Authenticates the calling client by exactly one of: HTTP Basic `client_id:secret`
/// (each part form-urlencoded, RFC 6749 §2.3.1), form `client_id` + `client_secret`, or
/// the configured API-key header. Two methods at once is `invalid_request` (§2.3).
pub(crate) async fn authenticate_client<'rt>(
    state: &AppState,
    rt: &'rt Runtime,
    ip: IpAddr,
    headers: &HeaderMap,
    form: FormSecret<'_>,
    label: &'static str,
) -> Result<Found<'rt>, Rejection> {
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
    let form = match (form.client_id, form.client_secret) {
        (Some(id), Some(secret)) => Some((id.to_owned(), secret.to_owned())),
        _ => None,
    };
    let api_key = rt
        .client_key_header
        .find(headers, None)
        .map_err(|_| Rejection::InvalidRequest("the API key header is repeated or unreadable"))?;
    // The Stripe convention: a generated key as the Basic user name, no password.
    if let (Some(basic), None, None) = (&basic, &form, &api_key)
        && let Some(key) = stripe_key(basic)
    {
        return authenticate_api_key(state, rt, ip, key, label, true).await;
    }
    let candidates = match (basic, form, api_key) {
        (Some(basic), None, None) => basic,
        (None, Some(form), None) => vec![form],
        (None, None, Some(key)) => {
            return authenticate_api_key(state, rt, ip, &key, label, true).await;
        }
        (None, None, None) => return Err(Rejection::InvalidClient { basic: true }),
        _ => {
            return Err(Rejection::InvalidRequest(
                "use one client authentication method, not two",
            ));
        }
    };
    directory_current(rt)?;
    // A client secret is an API key: its failures count against the address only.
    let subjects = [Subject::Address(ip)];
    let claimed = Claimed::Client(Some(candidates[0].0.as_str()));
    let attempt = begin_attempt(state, &subjects, label, claimed).await?;
    let now = OffsetDateTime::now_utc();
    let mut outcome = Err(Error::Credential(CredentialError::Wrong));
    for (client_id, secret) in &candidates {
        outcome = rt
            .authenticate_client(client_id, secret, state.passwords(), now)
            .await;
        if outcome.is_ok() {
            break;
        }
    }
    let refusal = Rejection::InvalidClient { basic: true };
    let client =
        finish_attempt(state, attempt, &subjects, label, claimed, outcome, refusal).await?;
    not_revoked_in_store(
        state,
        rt,
        client,
        Rejection::InvalidClient { basic: true },
        label,
    )
}

/// Authenticates an API key (`/login`, or client authentication by the key header).
/// `basic` picks the challenge of the refusal: `Basic` at the token endpoints.
pub(crate) async fn authenticate_api_key<'rt>(
    state: &AppState,
    rt: &'rt Runtime,
    ip: IpAddr,
    key: &str,
    label: &'static str,
    basic: bool,
) -> Result<Found<'rt>, Rejection> {
    // Keys carry 256 random bits: their failures count against the sending address
    // only, so that no stranger can lock a genuine client out (docs/security.md).
    directory_current(rt)?;
    let subjects = [Subject::Address(ip)];
    let claimed = Claimed::Client(key_client_id(key));
    let attempt = begin_attempt(state, &subjects, label, claimed).await?;
    let now = OffsetDateTime::now_utc();
    let outcome = rt.authenticate_key(key, state.passwords(), now).await;
    let refusal = Rejection::InvalidClient { basic };
    let client =
        finish_attempt(state, attempt, &subjects, label, claimed, outcome, refusal).await?;
    not_revoked_in_store(state, rt, client, Rejection::InvalidClient { basic }, label)
}

/// The key of HTTP Basic `<key>:` (the Stripe convention: the key as the user name and
/// an empty password), when the key is a generated `kg_` key with a good checksum. The
/// user part is then a whole credential, never a client id, and is checked as an API key.
fn stripe_key(candidates: &[(String, String)]) -> Option<&str> {
    candidates
        .iter()
        .find(|(id, secret)| secret.is_empty() && key_client_id(id).is_some())
        .map(|(key, _)| key.as_str())
}

/// The id and secret of a Basic header: first as RFC 6749 §2.3.1 says (each part
/// form-urlencoded), then, when that reads differently, as sent. Many clients (authlib,
/// curl `-u`) do not encode, and a secret with `+` or `%` would otherwise never match.
pub(crate) fn decode_basic(creds: &str) -> Result<Vec<(String, String)>, Rejection> {
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
    let encoded = (decode(id), decode(secret));
    let raw = (id.to_owned(), secret.to_owned());
    Ok(if encoded == raw {
        vec![raw]
    } else {
        vec![encoded, raw]
    })
}

/// A principal whose credential the store lists as revoked (by `keygate key revoke` or
/// `user remove` on another copy of the file) is refused as if the credential were wrong,
/// whatever this replica's file says. (The directory does not say which credential
/// matched, so a principal is refused while any of its live credentials is revoked.)
/// While the local copy of the list is not in sync,
/// `store.on_unavailable` decides.
pub(crate) fn not_revoked_in_store<'p>(
    state: &AppState,
    rt: &Runtime,
    principal: Found<'p>,
    refusal: Rejection,
    grant_type: &'static str,
) -> Result<Found<'p>, Rejection> {
    // Only credentials still valid by this replica's file: a rotated-out key past its
    // grace stays in the file for a while and must not refuse its successor.
    let now = OffsetDateTime::now_utc();
    let hashes = principal
        .credentials
        .iter()
        .filter(|c| c.valid_until.is_none_or(|until| until > now))
        .map(|c| &c.hash);
    match state.revocations().credentials(&principal.id, hashes) {
        Verdict::Clear => Ok(principal),
        Verdict::Revoked => {
            metrics::counter!("keygate_tokens_refused_total", "grant" => grant_type, "reason" => "revoked")
                .increment(1);
            tracing::info!(
                grant = grant_type,
                "credential refused: revoked in the store"
            );
            Err(refusal)
        }
        Verdict::Unknown if rt.config.store.on_unavailable == OnUnavailable::Allow => Ok(principal),
        Verdict::Unknown => {
            tracing::error!(
                "revocation list not in sync with the store; refusing (store.on_unavailable = deny)"
            );
            Err(Rejection::Unavailable(std::time::Duration::from_secs(1)))
        }
    }
}

/// How long a `too_many_attempts` refusal is held before it is sent. A blocked sender
/// learns nothing new by asking again before `Retry-After`, and a flood of refused
/// attempts then costs one timer per request instead of the CPU that token checks need:
/// each connection of a guessing loop gets at most four answers a second.
pub(crate) const TOO_MANY_ATTEMPTS_DELAY: std::time::Duration =
    std::time::Duration::from_millis(250);

/// Counts an attempt against `subjects` before its credential is checked, in one step
/// with the check of the limit: 429 when one of them has used up its attempts, after
/// [`TOO_MANY_ATTEMPTS_DELAY`]. While attempts in flight hold all a subject has left, it
/// waits for them (see [`crate::limits::RESERVED_WAIT`]), then answers 503.
pub(crate) async fn begin_attempt<'s>(
    state: &'s AppState,
    subjects: &[Subject],
    grant_type: &'static str,
    claimed: Claimed<'_>,
) -> Result<Attempt<'s>, Rejection> {
    let after = match state.attempts().begin_waiting(subjects).await {
        Ok(attempt) => return Ok(attempt),
        Err(Refused::Busy) => {
            tracing::warn!(
                grant = grant_type,
                "attempts in flight held every remaining attempt for too long; answering 503"
            );
            return Err(Rejection::Unavailable(std::time::Duration::from_secs(1)));
        }
        Err(Refused::Blocked(after)) => after,
    };
    crate::metrics::increment("keygate_rate_limited_total", [("grant", grant_type)]);
    audit_refusal(state, subjects, claimed, "too_many_attempts");
    tokio::time::sleep(TOO_MANY_ATTEMPTS_DELAY).await;
    Err(Rejection::TooManyAttempts(after))
}

/// Ends an attempt begun with [`begin_attempt`]: a good credential gives the attempt back;
/// a refused one stays counted and answers `rejection`; a busy hashing queue or a failing
/// store is no failure of the caller's and is given back too.
pub(crate) async fn finish_attempt<T>(
    state: &AppState,
    attempt: Attempt<'_>,
    subjects: &[Subject],
    grant_type: &'static str,
    claimed: Claimed<'_>,
    outcome: Result<T, Error>,
    rejection: Rejection,
) -> Result<T, Rejection> {
    let error = match outcome {
        Ok(value) => {
            attempt.succeeded().await;
            return Ok(value);
        }
        Err(e) => e,
    };
    crate::metrics::increment(
        "keygate_tokens_refused_total",
        [("grant", grant_type), ("reason", refusal_label(&error))],
    );
    // The operator's own log tells the true reason (expired, revoked), unlike the metric.
    audit_refusal(state, subjects, claimed, error.reason());
    match error {
        Error::Credential(CredentialError::HashingBusy) => {
            attempt.succeeded().await;
            Err(Rejection::Unavailable(std::time::Duration::from_secs(1)))
        }
        Error::Store(_) | Error::Signing(_) | Error::Random(_) | Error::ThreadSpawn(_) => {
            attempt.succeeded().await;
            tracing::error!(error = %keygate::error::chain(&error), "credential check failed");
            Err(Rejection::Internal)
        }
        _ => {
            attempt.failed().await;
            tracing::info!(
                reason = error.reason(),
                grant = grant_type,
                "credential refused"
            );
            Err(rejection)
        }
    }
}

/// The metric label of a refused credential. Wrong, unknown, expired and revoked
/// credentials share one label: a per-reason count would tell an attacker watching
/// `/metrics` that a guessed key once existed (`credential_expired`). What is about the
/// request alone (a password over the length limit) or the server keeps its own label.
fn refusal_label(error: &Error) -> &'static str {
    match error {
        Error::Credential(CredentialError::HashingBusy | CredentialError::PasswordTooLong(_))
        | Error::Store(_)
        | Error::Signing(_)
        | Error::Random(_)
        | Error::ThreadSpawn(_) => error.reason(),
        _ => "invalid_credential",
    }
}

/// Who an attempt said it was, for the audit log: the client id it named (a `kg_` key's,
/// or the id sent with a secret), or the username. Never the secret.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Claimed<'a> {
    /// A client, when the attempt named one.
    Client(Option<&'a str>),
    /// A user of the password grant.
    User(&'a str),
}

/// `token.refused`, naming the address and who the attempt claimed to be: the id when it
/// names a principal of the running configuration, else [`shown_claim`]'s fingerprint.
fn audit_refusal(state: &AppState, subjects: &[Subject], claimed: Claimed<'_>, reason: &str) {
    // Built only when the log is on: a flood of refused attempts is a hot path too.
    state.audit().record_with(AuditKind::TokenRefused, |event| {
        let mut event = event.reason(reason);
        if let Some(Subject::Address(ip)) = subjects.first() {
            event = event.address(Some(*ip));
        }
        let rt = state.runtime();
        match claimed {
            Claimed::Client(Some(id)) => event.client_id(&shown_claim(&rt, id)),
            Claimed::Client(None) => event,
            Claimed::User(name) => event.username(&shown_claim(&rt, name)),
        }
    });
}

/// Refuses (503) while this replica's copy of the directory is older than
/// `directory.max_staleness`: a key revoked meanwhile on another replica could still
/// work here (docs/directory.md#failures).
pub(crate) fn directory_current(rt: &Runtime) -> Result<(), Rejection> {
    match rt.live.as_ref().map(|l| l.staleness()) {
        Some(crate::directory::Staleness::Stale) => {
            crate::metrics::increment(
                "keygate_tokens_refused_total",
                [("grant", "any"), ("reason", "directory_stale")],
            );
            Err(Rejection::Unavailable(std::time::Duration::from_secs(1)))
        }
        _ => Ok(()),
    }
}

/// How a claimed client id or username may be written to the audit log, tracing or
/// metrics. A claim that names no principal may be anything the caller typed: a whole
/// API key sent as a client id, a password typed into the username field. It is shown
/// as `unknown:` and a fingerprint (see [`DeploymentKey::fingerprint`]), which tells
/// repeated claims apart without revealing them; an existing principal's id is shown as is.
pub(crate) fn shown_claim<'a>(rt: &Runtime, claim: &'a str) -> Cow<'a, str> {
    if rt.principal(claim).is_some() {
        Cow::Borrowed(claim)
    } else {
        Cow::Owned(format!("unknown:{}", rt.deployment_key.fingerprint(claim)))
    }
}

/// A secret of the deployment, derived from its token secret (HS*) or its earliest
/// signing key: the same on every replica of one configuration and across reloads, known
/// to nobody without the configuration. It keys the choice of stand-in password hashes
/// and the fingerprints of claimed ids that name no principal.
#[derive(Clone)]
pub(crate) struct DeploymentKey([u8; 32]);

impl std::fmt::Debug for DeploymentKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeploymentKey(..)")
    }
}

type HmacSha256 = Hmac<Sha256>;

impl DeploymentKey {
    /// HMAC-SHA256 of a fixed label under `secret`: the secret itself never leaves the
    /// token code, and what is derived here tells nothing about it.
    pub(crate) fn from_secret(secret: &[u8]) -> Self {
        Self(hmac(secret, b"keygate deployment key v1"))
    }

    /// The key of the stand-in choice for unknown usernames.
    pub(crate) fn stand_in_key(&self) -> [u8; 32] {
        hmac(&self.0, b"stand-in hashes")
    }

    /// 12 hex characters (48 bits) of HMAC-SHA256 of `claim`: the same claim gives the
    /// same fingerprint on every replica, and without the key it cannot be reversed or
    /// checked against a guess.
    pub(crate) fn fingerprint(&self, claim: &str) -> String {
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(b"claimed id\0");
        mac.update(claim.as_bytes());
        hex::encode(&mac.finalize().into_bytes()[..6])
    }
}

fn hmac(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// The client id a `kg_` key names (readable without any lookup); hand-made keys name none.
fn key_client_id(key: &str) -> Option<&str> {
    match keygate::api_key::classify(key) {
        Ok(keygate::api_key::PresentedKey::Generated { id }) => Some(id),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_form_decoded() {
        let raw = base64::engine::general_purpose::STANDARD.encode("my%3Aclient:s%2Bc+r%25t");
        assert_eq!(
            decode_basic(&raw).unwrap(),
            vec![
                ("my:client".to_owned(), "s+c r%t".to_owned()),
                ("my%3Aclient".to_owned(), "s%2Bc+r%25t".to_owned()),
            ]
        );
        let plain = base64::engine::general_purpose::STANDARD.encode("billing:kg_billing_ab");
        assert_eq!(decode_basic(&plain).unwrap().len(), 1);
        assert!(decode_basic("!!!").is_err());
    }
}
