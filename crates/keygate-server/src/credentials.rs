//! Checking credentials: API keys (`/login`), client authentication for `/token`,
//! `/revoke` and `/introspect`, and the failed-attempt bookkeeping every check shares.

use std::borrow::Cow;
use std::net::IpAddr;

use crate::directory::Found;
use axum::http::{HeaderMap, header};
use base64::Engine as _;
use keygate::Error;
use keygate::error::CredentialError;
use time::OffsetDateTime;

use crate::audit::AuditKind;
use crate::context::{Endpoint, Grant, RequestCtx};
use crate::limits::{Attempt, Refused, Subject};
use crate::rejection::Rejection;
use crate::runtime::Runtime;
use crate::store::Verdict;

/// Client credentials sent in a form body (RFC 6749 §2.3.1: `client_id` + `client_secret`).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct FormSecret<'a> {
    pub(crate) client_id: Option<&'a str>,
    pub(crate) client_secret: Option<&'a str>,
}

impl RequestCtx {
    /// Authenticates the calling client by exactly one of: HTTP Basic `client_id:secret`
    /// (each part form-urlencoded, RFC 6749 §2.3.1), form `client_id` + `client_secret`, or
    /// the configured API-key header. Two methods at once is `invalid_request` (§2.3).
    pub(crate) async fn authenticate_client(
        &self,
        headers: &HeaderMap,
        form: FormSecret<'_>,
        grant: Grant,
    ) -> Result<Found<'_>, Rejection> {
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
        let api_key = self.rt.client_key_header.find(headers, None).map_err(|_| {
            Rejection::InvalidRequest("the API key header is repeated or unreadable")
        })?;
        // The Stripe convention: a generated key as the Basic user name, no password.
        if let (Some(basic), None, None) = (&basic, &form, &api_key)
            && let Some(key) = stripe_key(basic)
        {
            return self.authenticate_key(key, grant).await;
        }
        let candidates = match (basic, form, api_key) {
            (Some(basic), None, None) => basic,
            (None, Some(form), None) => vec![form],
            (None, None, Some(key)) => return self.authenticate_key(&key, grant).await,
            (None, None, None) => return Err(Rejection::InvalidClient { basic: true }),
            _ => {
                return Err(Rejection::InvalidRequest(
                    "use one client authentication method, not two",
                ));
            }
        };
        self.directory_current()?;
        // A client secret is an API key: its failures count against the address only.
        let subjects = [Subject::Address(self.sender()?)];
        let claimed = Claimed::Client(Some(candidates[0].0.as_str()));
        let attempt = self.begin_attempt(&subjects, grant, claimed).await?;
        let now = OffsetDateTime::now_utc();
        let mut outcome = Err(Error::Credential(CredentialError::Wrong));
        for (client_id, secret) in &candidates {
            outcome = self
                .rt
                .authenticate_client(client_id, secret, self.state.passwords(), now)
                .await;
            if outcome.is_ok() {
                break;
            }
        }
        let refusal = Rejection::InvalidClient { basic: true };
        let client = self
            .finish_attempt(attempt, &subjects, grant, claimed, outcome, refusal.clone())
            .await?;
        self.not_revoked_in_store(client, refusal, grant)
    }

    /// Authenticates an API key (`/login`, or client authentication by the key header).
    /// A refusal challenges with `Basic` at the token endpoints, not at `/login`.
    pub(crate) async fn authenticate_key(
        &self,
        key: &str,
        grant: Grant,
    ) -> Result<Found<'_>, Rejection> {
        // Keys carry 256 random bits: their failures count against the sending address
        // only, so that no stranger can lock a genuine client out (docs/security.md).
        self.directory_current()?;
        let subjects = [Subject::Address(self.sender()?)];
        // Who the key claims to be, for the audit log: read without its checksum, which
        // `authenticate_key` checks (once) next.
        let claimed = Claimed::Client(keygate::api_key::claimed_id(key));
        let attempt = self.begin_attempt(&subjects, grant, claimed).await?;
        let now = OffsetDateTime::now_utc();
        let outcome = self
            .rt
            .authenticate_key(key, self.state.passwords(), now)
            .await;
        let refusal = Rejection::InvalidClient {
            basic: self.endpoint != Endpoint::Login,
        };
        let client = self
            .finish_attempt(attempt, &subjects, grant, claimed, outcome, refusal.clone())
            .await?;
        self.not_revoked_in_store(client, refusal, grant)
    }

    /// Checks a user's password (the password grant). A username's attempts count per
    /// address and per (username, address): guessing from one address is bounded, and
    /// nobody elsewhere can lock the user out.
    pub(crate) async fn authenticate_user(
        &self,
        username: &str,
        password: &str,
    ) -> Result<Found<'_>, Rejection> {
        let sender = self.sender()?;
        let subjects = [
            Subject::Address(sender),
            Subject::UserAt(username.to_owned(), sender),
        ];
        let claimed = Claimed::User(username);
        let attempt = self
            .begin_attempt(&subjects, Grant::Password, claimed)
            .await?;
        let now = OffsetDateTime::now_utc();
        self.directory_current()?;
        let outcome = self
            .rt
            .authenticate_user(username, password, self.state.passwords(), now)
            .await;
        let refusal = Rejection::InvalidGrant;
        let user = self
            .finish_attempt(
                attempt,
                &subjects,
                Grant::Password,
                claimed,
                outcome,
                refusal.clone(),
            )
            .await?;
        self.not_revoked_in_store(user, refusal, Grant::Password)
    }

    /// The sender's address, which a credential's failures count against.
    fn sender(&self) -> Result<IpAddr, Rejection> {
        self.sender.ok_or_else(|| {
            tracing::error!(
                endpoint = self.endpoint.path(),
                "a credential checked without the sender's address"
            );
            Rejection::Internal
        })
    }
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

impl RequestCtx {
    /// A principal whose credential the store lists as revoked (by `keygate key revoke` or
    /// `user remove` on another copy of the file) is refused as if the credential were
    /// wrong, whatever this replica's file says. (The directory does not say which
    /// credential matched, so a principal is refused while any of its live credentials is
    /// revoked.) While the local copy of the list is not in sync, `store.on_unavailable`
    /// decides.
    fn not_revoked_in_store<'p>(
        &self,
        principal: Found<'p>,
        refusal: Rejection,
        grant: Grant,
    ) -> Result<Found<'p>, Rejection> {
        // Only credentials still valid by this replica's file: a rotated-out key past its
        // grace stays in the file for a while and must not refuse its successor.
        let now = OffsetDateTime::now_utc();
        let hashes = principal
            .credentials
            .iter()
            .filter(|c| c.valid_until.is_none_or(|until| until > now))
            .map(|c| &c.hash);
        match self.state.revocations().credentials(&principal.id, hashes) {
            Verdict::Clear => Ok(principal),
            Verdict::Revoked => {
                crate::metrics::increment(
                    "keygate_tokens_refused_total",
                    [("grant", grant.label()), ("reason", "revoked")],
                );
                tracing::info!(
                    grant = grant.label(),
                    "credential refused: revoked in the store"
                );
                Err(refusal)
            }
            Verdict::Unknown => self
                .store_unavailable(
                    "revocation list not in sync with the store",
                    None,
                    "answered from the local copy",
                )
                .map(|()| principal),
        }
    }
}

/// How long a `too_many_attempts` refusal is held before it is sent. A blocked sender
/// learns nothing new by asking again before `Retry-After`, and a flood of refused
/// attempts then costs one timer per request instead of the CPU that token checks need:
/// each connection of a guessing loop gets at most four answers a second.
pub(crate) const TOO_MANY_ATTEMPTS_DELAY: std::time::Duration =
    std::time::Duration::from_millis(250);

impl RequestCtx {
    /// Counts an attempt against `subjects` before its credential is checked, in one step
    /// with the check of the limit: 429 when one of them has used up its attempts, after
    /// [`TOO_MANY_ATTEMPTS_DELAY`]. While attempts in flight hold all a subject has left, it
    /// waits for them (see [`crate::limits::RESERVED_WAIT`]), then answers 503.
    async fn begin_attempt(
        &self,
        subjects: &[Subject],
        grant: Grant,
        claimed: Claimed<'_>,
    ) -> Result<Attempt<'_>, Rejection> {
        let after = match self.state.attempts().begin_waiting(subjects).await {
            Ok(attempt) => return Ok(attempt),
            Err(Refused::Busy) => {
                tracing::warn!(
                    grant = grant.label(),
                    "attempts in flight held every remaining attempt for too long; answering 503"
                );
                return Err(Rejection::Unavailable(std::time::Duration::from_secs(1)));
            }
            Err(Refused::Blocked(after)) => after,
        };
        crate::metrics::increment("keygate_rate_limited_total", [("grant", grant.label())]);
        self.audit_refusal(subjects, claimed, "too_many_attempts");
        tokio::time::sleep(TOO_MANY_ATTEMPTS_DELAY).await;
        Err(Rejection::TooManyAttempts(after))
    }

    /// Ends an attempt begun with [`RequestCtx::begin_attempt`]: a good credential gives the
    /// attempt back; a refused one stays counted and answers `rejection`; a busy hashing
    /// queue or a failing store is no failure of the caller's and is given back too.
    async fn finish_attempt<T>(
        &self,
        attempt: Attempt<'_>,
        subjects: &[Subject],
        grant: Grant,
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
            [("grant", grant.label()), ("reason", refusal_label(&error))],
        );
        // The operator's own log tells the true reason (expired, revoked), unlike the metric.
        self.audit_refusal(subjects, claimed, error.reason());
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
                    grant = grant.label(),
                    "credential refused"
                );
                Err(rejection)
            }
        }
    }

    /// `token.refused`, naming the address and who the attempt claimed to be: the id when
    /// it names a principal of the running configuration, else [`shown_claim`]'s
    /// fingerprint.
    fn audit_refusal(&self, subjects: &[Subject], claimed: Claimed<'_>, reason: &str) {
        // Built only when the log is on: a flood of refused attempts is a hot path too.
        self.state
            .audit()
            .record_with(AuditKind::TokenRefused, |event| {
                let mut event = event.reason(reason);
                if let Some(Subject::Address(ip)) = subjects.first() {
                    event = event.address(Some(*ip));
                }
                match claimed {
                    Claimed::Client(Some(id)) => event.client_id(&shown_claim(&self.rt, id)),
                    Claimed::Client(None) => event,
                    Claimed::User(name) => event.username(&shown_claim(&self.rt, name)),
                }
            });
    }

    /// Refuses (503) while this replica's copy of the directory is older than
    /// `directory.max_staleness`: a key revoked meanwhile on another replica could still
    /// work here (docs/directory.md#failures).
    fn directory_current(&self) -> Result<(), Rejection> {
        match self.rt.live.as_ref().map(|l| l.staleness()) {
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
enum Claimed<'a> {
    /// A client, when the attempt named one.
    Client(Option<&'a str>),
    /// A user of the password grant.
    User(&'a str),
}

/// How a claimed client id or username may be written to the audit log, tracing or
/// metrics. A claim that names no principal may be anything the caller typed: a whole
/// API key sent as a client id, a password typed into the username field. It is shown
/// as `unknown:` and a fingerprint (see `runtime::DeploymentKey::fingerprint`), which tells
/// repeated claims apart without revealing them; an existing principal's id is shown as is.
pub(crate) fn shown_claim<'a>(rt: &Runtime, claim: &'a str) -> Cow<'a, str> {
    if rt.principal(claim).is_some() {
        Cow::Borrowed(claim)
    } else {
        Cow::Owned(format!("unknown:{}", rt.deployment_key.fingerprint(claim)))
    }
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
