//! The admin API, `/admin/v1/…` (docs/directory.md#admin-api): principals of the directory
//! created, read, changed, rotated, revoked and deleted over HTTP, by clients whose bearer
//! token carries the scope `keygate:admin`.
//!
//! Bodies are read strictly (unknown fields refused) and checked whole before anything is
//! written; each write is one transaction, then this replica reads the change log at once,
//! so the caller's next request here sees it; the others see it within a poll.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use keygate::api_key::{self, KeyHash};
use keygate::password::MAX_PASSWORD;
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::audit::{AuditEvent, AuditKind};
use crate::context::{Endpoint, RequestCtx};
use crate::directory::{DirectoryError, Kind, LiveCopy, Record};
use crate::rejection::Rejection;
use crate::state::AppState;

/// The scope an admin token carries.
pub const ADMIN_SCOPE: &str = "keygate:admin";

/// The most principals in one page.
const MAX_PAGE: usize = 1000;

/// A password's least length (ASVS 6.2.1).
const MIN_PASSWORD: usize = 8;

/// A refusal of the admin API, in the OAuth error shape of every keygate refusal.
#[derive(Debug)]
pub(crate) enum AdminError {
    Rejected(Rejection),
    /// 400 `invalid_request`, saying which field and why.
    Invalid(String),
    /// 404 `not_found`.
    NotFound(String),
    /// 409 `conflict`: the id is taken.
    Conflict(String),
    /// 503: the directory's database is out of reach; nothing was written.
    Unavailable(String),
    /// 500: the database holds what this build cannot read.
    Internal,
}

impl From<Rejection> for AdminError {
    fn from(r: Rejection) -> Self {
        AdminError::Rejected(r)
    }
}

impl From<DirectoryError> for AdminError {
    fn from(e: DirectoryError) -> Self {
        match e {
            DirectoryError::Unavailable(why) => AdminError::Unavailable(why),
            DirectoryError::Exists(id) => AdminError::Conflict(format!("`{id}` already exists")),
            e @ DirectoryError::NotFound { .. } => AdminError::NotFound(e.to_string()),
            DirectoryError::Invalid(why) => AdminError::Invalid(why),
            DirectoryError::Corrupt(why) => {
                tracing::error!(error = %why, "directory unreadable");
                AdminError::Internal
            }
        }
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let (status, error, description) = match self {
            AdminError::Rejected(r) => return r.into_response(),
            AdminError::Invalid(d) => (StatusCode::BAD_REQUEST, "invalid_request", d),
            AdminError::NotFound(d) => (StatusCode::NOT_FOUND, "not_found", d),
            AdminError::Conflict(d) => (StatusCode::CONFLICT, "conflict", d),
            AdminError::Unavailable(why) => {
                tracing::error!(error = %why, "admin call failed: directory unavailable");
                let mut r = (
                    StatusCode::SERVICE_UNAVAILABLE,
                    Json(json!({
                        "error": "temporarily_unavailable",
                        "error_description": "the directory cannot be reached; nothing was written",
                    })),
                )
                    .into_response();
                r.headers_mut()
                    .insert("retry-after", axum::http::HeaderValue::from_static("1"));
                return r;
            }
            AdminError::Internal => return Rejection::Internal.into_response(),
        };
        (
            status,
            Json(json!({"error": error, "error_description": description})),
        )
            .into_response()
    }
}

type Answer = Result<Response, AdminError>;

/// The calling admin: a valid bearer token with the scope `keygate:admin` (401 without a
/// good token, 403 without the scope), and the directory it edits (404 without one).
async fn admin(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<(Arc<LiveCopy>, String), AdminError> {
    let ctx = RequestCtx::new(state.clone(), Endpoint::Admin);
    let authorized = ctx.authorize(headers).await?;
    let rt = &ctx.rt;
    if !authorized.claims.scope.split(' ').any(|s| s == ADMIN_SCOPE) {
        return Err(Rejection::InsufficientScope(ADMIN_SCOPE.into()).into());
    }
    let live = rt.live.clone().ok_or(Rejection::NotFound)?;
    Ok((live, authorized.claims.client_id.clone()))
}

/// Reads the change log after a write, so that this replica serves the change from the
/// caller's next request on; a failure here only delays it to the next poll.
async fn applied(live: &LiveCopy) {
    if let Err(e) = live.catch_up().await {
        tracing::warn!(error = %e, "change written; this replica reads it at the next poll");
    }
}

fn time(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

/// A principal as the API shows it: never a hash.
fn shown(r: &Record) -> Value {
    let metadata = r
        .metadata
        .as_deref()
        .and_then(|m| serde_json::from_str::<Value>(m).ok())
        .unwrap_or_else(|| json!({}));
    let now = OffsetDateTime::now_utc();
    let id_field = match r.kind {
        Kind::Client => "id",
        Kind::User => "username",
    };
    let mut v = json!({
        id_field: r.id,
        "role": r.role,
        "scopes": r.scopes,
        "state": r.state(now),
        "expires_at": r.expires_at.map(time),
        "revoked_at": r.revoked_at.map(time),
        "created_at": time(r.created_at),
        "last_used_at": r.last_used_at.map(time),
        "metadata": metadata,
    });
    if r.kind == Kind::Client {
        v["rate_limit"] = json!(r.rate_limit);
        v["previous_key_expires_at"] = json!(r.previous.as_ref().map(|(_, t)| time(*t)));
    }
    v
}

/// A JSON body of `T`, strictly: 400 naming the problem otherwise (never a 422 or 415).
fn body<T: serde::de::DeserializeOwned>(bytes: &Bytes) -> Result<T, AdminError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        // serde's words about the input name the field and the expected type, and quote
        // an unknown field's name: they never quote a value.
        AdminError::Invalid(if path == "." {
            format!("the body must be a JSON object: {inner}")
        } else {
            format!("{path}: {inner}")
        })
    })
}

fn parse_time(field: &str, value: &str) -> Result<OffsetDateTime, AdminError> {
    OffsetDateTime::parse(value, &Rfc3339).map_err(|_| {
        AdminError::Invalid(format!(
            "{field}: not an RFC 3339 time like 2027-06-30T00:00:00Z"
        ))
    })
}

fn metadata_text(value: Option<Value>) -> Result<Option<String>, AdminError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(v @ Value::Object(_)) => Ok(Some(v.to_string())),
        Some(_) => Err(AdminError::Invalid(
            "metadata: must be a JSON object".into(),
        )),
    }
}

/// A field that may be absent (unchanged), `null` (cleared) or a value.
fn patch<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewClient {
    id: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    scopes: Vec<String>,
    expires_at: Option<String>,
    rate_limit: Option<String>,
    metadata: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    username: String,
    password: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    scopes: Vec<String>,
    metadata: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Changes {
    role: Option<String>,
    scopes: Option<Vec<String>>,
    #[serde(default, deserialize_with = "patch")]
    expires_at: Option<Option<String>>,
    #[serde(default, deserialize_with = "patch")]
    rate_limit: Option<Option<String>>,
    #[serde(default, deserialize_with = "patch")]
    metadata: Option<Option<Value>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RotateBody {
    /// How long the old key stays valid: `24h`, `0s`. Defaults to 24 h.
    grace: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordBody {
    password: String,
}

#[derive(Debug, Deserialize)]
pub(super) struct PageQuery {
    limit: Option<usize>,
    after: Option<String>,
}

fn kind_of(collection: &str) -> Result<Kind, AdminError> {
    match collection {
        "clients" => Ok(Kind::Client),
        "users" => Ok(Kind::User),
        _ => Err(Rejection::NotFound.into()),
    }
}

fn audit(state: &AppState, kind: AuditKind, actor: &str, r_kind: Kind, id: &str) {
    let event = AuditEvent::new(kind).actor(actor);
    let event = match r_kind {
        Kind::Client => event.client_id(id),
        Kind::User => event.username(id),
    };
    state.audit().record(&event);
}

fn check_id(id: &str) -> Result<(), AdminError> {
    if api_key::is_valid_id(id) {
        Ok(())
    } else {
        Err(AdminError::Invalid(
            "id: 1-64 of A-Z a-z 0-9 . _ - @".into(),
        ))
    }
}

/// 409 for an id of the file: one namespace.
fn not_in_file(state: &AppState, id: &str) -> Result<(), AdminError> {
    if state.runtime().directory.get(id).is_some() {
        return Err(AdminError::Conflict(format!(
            "`{id}` is a principal of the configuration file"
        )));
    }
    Ok(())
}

fn check_password(password: &str) -> Result<(), AdminError> {
    if password.chars().count() < MIN_PASSWORD || password.len() > MAX_PASSWORD {
        return Err(AdminError::Invalid(format!(
            "password: {MIN_PASSWORD} characters to {MAX_PASSWORD} bytes"
        )));
    }
    Ok(())
}

/// Hashes on the hashing pool (slow by design, bounded like the logins' checks).
async fn hashed(state: &AppState, password: &str) -> Result<String, AdminError> {
    match state.passwords().hash(password.as_bytes()).await {
        Ok(h) => Ok(h.as_str().to_owned()),
        Err(keygate::Error::Credential(keygate::error::CredentialError::HashingBusy)) => {
            Err(Rejection::Unavailable(Duration::from_secs(1)).into())
        }
        Err(_) => Err(AdminError::Internal),
    }
}

/// `POST /admin/v1/{clients|users}`
#[utoipa::path(post, operation_id = "admin_create", path = "/admin/v1/{collection}", tag = "admin", summary = "Create a client (its API key is in the answer, this once) or a user",
    params(("collection" = String, Path, description = "`clients` or `users`")),
    request_body(content = Object, description = "A client: `{id, role?, scopes?, expires_at?, rate_limit?, metadata?}`; a user: `{username, password, role?, scopes?, metadata?}`. Unknown fields are refused."),
    responses(
        (status = 201, description = "`{client, api_key}` or `{user}`", body = Object),
        (status = 400, description = "A field is missing, unknown or invalid: `invalid_request`", body = crate::rejection::ErrorBody),
        (status = 409, description = "The id exists, in the directory or in the file: `conflict`", body = crate::rejection::ErrorBody),
        (status = 401, description = "No token, or a bad, expired or revoked one", body = crate::rejection::ErrorBody),
        (status = 403, description = "The token lacks the scope `keygate:admin`: `insufficient_scope`", body = crate::rejection::ErrorBody),
        (status = 404, description = "No such principal, or no `[directory]`", body = crate::rejection::ErrorBody),
        (status = 503, description = "The directory cannot be reached; nothing was written", body = crate::rejection::ErrorBody),
    ),
    security(("bearer" = []), ("oauth2" = [])))]
pub(super) async fn create(
    State(state): State<AppState>,
    Path(collection): Path<String>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Answer {
    let kind = kind_of(&collection)?;
    let (live, actor) = admin(&state, &headers).await?;
    let now = OffsetDateTime::now_utc();
    let (record, key) = match kind {
        Kind::Client => {
            let b: NewClient = body(&bytes)?;
            check_id(&b.id)?;
            let key = api_key::generate(&b.id).map_err(|_| AdminError::Internal)?;
            let record = Record {
                id: b.id,
                kind,
                role: b.role,
                scopes: b.scopes,
                hash: KeyHash::sha256_of(&key).to_string(),
                previous: None,
                expires_at: b
                    .expires_at
                    .as_deref()
                    .map(|t| parse_time("expires_at", t))
                    .transpose()?,
                revoked_at: None,
                not_before: None,
                rate_limit: b.rate_limit,
                metadata: metadata_text(b.metadata)?,
                created_at: now,
                last_used_at: None,
            };
            (record, Some(key))
        }
        Kind::User => {
            let b: NewUser = body(&bytes)?;
            check_id(&b.username)?;
            check_password(&b.password)?;
            let mut record = Record {
                id: b.username,
                kind,
                role: b.role,
                scopes: b.scopes,
                hash: String::new(),
                previous: None,
                expires_at: None,
                revoked_at: None,
                not_before: None,
                rate_limit: None,
                metadata: metadata_text(b.metadata)?,
                created_at: now,
                last_used_at: None,
            };
            // Checked before the slow hash is paid for.
            record.check_fields()?;
            record.hash = hashed(&state, &b.password).await?;
            (record, None)
        }
    };
    record.check()?;
    not_in_file(&state, &record.id)?;
    let created = live.store().create(record).await?;
    applied(&live).await;
    audit(&state, AuditKind::AdminCreated, &actor, kind, &created.id);
    let mut out = json!({ kind.as_str(): shown(&created) });
    if let Some(key) = key {
        out["api_key"] = json!(key);
    }
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

/// `GET /admin/v1/{clients|users}?limit=&after=`
#[utoipa::path(get, operation_id = "admin_list", path = "/admin/v1/{collection}", tag = "admin", summary = "A page of principals in id order",
    params(("collection" = String, Path, description = "`clients` or `users`"),
        ("limit" = Option<usize>, Query, description = "1 to 1000; defaults to 100"),
        ("after" = Option<String>, Query, description = "The `next` of the previous page")),
    responses(
        (status = 200, description = "`{items, next}`; `next` is null on the last page", body = Object),
        (status = 400, description = "`limit` out of range", body = crate::rejection::ErrorBody),
        (status = 401, description = "No token, or a bad, expired or revoked one", body = crate::rejection::ErrorBody),
        (status = 403, description = "The token lacks the scope `keygate:admin`: `insufficient_scope`", body = crate::rejection::ErrorBody),
        (status = 404, description = "No such principal, or no `[directory]`", body = crate::rejection::ErrorBody),
        (status = 503, description = "The directory cannot be reached; nothing was written", body = crate::rejection::ErrorBody),
    ),
    security(("bearer" = []), ("oauth2" = [])))]
pub(super) async fn list(
    State(state): State<AppState>,
    Path(collection): Path<String>,
    query: Result<Query<PageQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Answer {
    let kind = kind_of(&collection)?;
    let (live, _) = admin(&state, &headers).await?;
    // axum's own rejection is plain text; every answer here is in the OAuth JSON shape.
    let Query(q) = query.map_err(|e| AdminError::Invalid(format!("query: {}", e.body_text())))?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(AdminError::Invalid(format!("limit: 1 to {MAX_PAGE}")));
    }
    let page = live.store().list(kind, q.after.as_deref(), limit).await?;
    let items: Vec<Value> = page.items.iter().map(shown).collect();
    Ok(Json(json!({"items": items, "next": page.next})).into_response())
}

/// `GET /admin/v1/{clients|users}/{id}`
#[utoipa::path(get, operation_id = "admin_get_one", path = "/admin/v1/{collection}/{id}", tag = "admin", summary = "One principal (never a hash)",
    params(("collection" = String, Path, description = "`clients` or `users`"), ("id" = String, Path)),
    responses((status = 200, description = "The principal", body = Object), (status = 401, description = "No token, or a bad, expired or revoked one", body = crate::rejection::ErrorBody),
        (status = 403, description = "The token lacks the scope `keygate:admin`: `insufficient_scope`", body = crate::rejection::ErrorBody),
        (status = 404, description = "No such principal, or no `[directory]`", body = crate::rejection::ErrorBody),
        (status = 503, description = "The directory cannot be reached; nothing was written", body = crate::rejection::ErrorBody),),
    security(("bearer" = []), ("oauth2" = [])))]
pub(super) async fn get_one(
    State(state): State<AppState>,
    Path((collection, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Answer {
    let kind = kind_of(&collection)?;
    let (live, _) = admin(&state, &headers).await?;
    let record = live.store().get(kind, &id).await?;
    Ok(Json(shown(&record)).into_response())
}

/// `PATCH /admin/v1/{clients|users}/{id}`: only the fields named change.
#[utoipa::path(patch, operation_id = "admin_update", path = "/admin/v1/{collection}/{id}", tag = "admin", summary = "Change role, scopes, expires_at, rate_limit or metadata",
    params(("collection" = String, Path, description = "`clients` or `users`"), ("id" = String, Path)),
    request_body(content = Object, description = "Any of `role`, `scopes`, `expires_at`, `rate_limit`, `metadata` (clients); `null` clears the last three"),
    responses((status = 200, description = "The principal", body = Object),
        (status = 400, description = "`invalid_request`", body = crate::rejection::ErrorBody), (status = 401, description = "No token, or a bad, expired or revoked one", body = crate::rejection::ErrorBody),
        (status = 403, description = "The token lacks the scope `keygate:admin`: `insufficient_scope`", body = crate::rejection::ErrorBody),
        (status = 404, description = "No such principal, or no `[directory]`", body = crate::rejection::ErrorBody),
        (status = 503, description = "The directory cannot be reached; nothing was written", body = crate::rejection::ErrorBody),),
    security(("bearer" = []), ("oauth2" = [])))]
pub(super) async fn update(
    State(state): State<AppState>,
    Path((collection, id)): Path<(String, String)>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Answer {
    let kind = kind_of(&collection)?;
    let (live, actor) = admin(&state, &headers).await?;
    let c: Changes = body(&bytes)?;
    if kind == Kind::User && (c.expires_at.is_some() || c.rate_limit.is_some()) {
        return Err(AdminError::Invalid(
            "a user has no expires_at or rate_limit".into(),
        ));
    }
    let expires_at = match c.expires_at {
        Some(Some(t)) => Some(Some(parse_time("expires_at", &t)?)),
        Some(None) => Some(None),
        None => None,
    };
    let metadata = c.metadata.map(metadata_text).transpose()?;
    let updated = live
        .store()
        .update(kind, &id, move |r, _| {
            if let Some(role) = c.role {
                r.role = role;
            }
            if let Some(scopes) = c.scopes {
                r.scopes = scopes;
            }
            if let Some(e) = expires_at {
                r.expires_at = e;
            }
            if let Some(l) = c.rate_limit {
                r.rate_limit = l;
            }
            if let Some(m) = metadata {
                r.metadata = m;
            }
            Ok(())
        })
        .await?;
    applied(&live).await;
    audit(&state, AuditKind::AdminUpdated, &actor, kind, &id);
    Ok(Json(shown(&updated)).into_response())
}

/// `POST /admin/v1/clients/{id}/rotate` `{grace}` → `{api_key}`
#[utoipa::path(post, operation_id = "admin_rotate", path = "/admin/v1/{collection}/{id}/rotate", tag = "admin", summary = "A new API key for a client; the old one works for `grace` (default 24h; 0s: dies now with its tokens)",
    params(("collection" = String, Path, description = "`clients` or `users`"), ("id" = String, Path)),
    request_body(content = Object, description = "`{grace?}`"),
    responses((status = 200, description = "`{api_key}`", body = Object),
        (status = 400, description = "`invalid_request` (a bad grace, a revoked client)", body = crate::rejection::ErrorBody), (status = 401, description = "No token, or a bad, expired or revoked one", body = crate::rejection::ErrorBody),
        (status = 403, description = "The token lacks the scope `keygate:admin`: `insufficient_scope`", body = crate::rejection::ErrorBody),
        (status = 404, description = "No such principal, or no `[directory]`", body = crate::rejection::ErrorBody),
        (status = 503, description = "The directory cannot be reached; nothing was written", body = crate::rejection::ErrorBody),),
    security(("bearer" = []), ("oauth2" = [])))]
pub(super) async fn rotate(
    State(state): State<AppState>,
    Path((collection, id)): Path<(String, String)>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Answer {
    if kind_of(&collection)? != Kind::Client {
        return Err(Rejection::NotFound.into());
    }
    let (live, actor) = admin(&state, &headers).await?;
    let b: RotateBody = if bytes.is_empty() {
        RotateBody::default()
    } else {
        body(&bytes)?
    };
    let grace = match b.grace.as_deref() {
        None => Duration::from_secs(24 * 3600),
        Some(g) => humantime::parse_duration(g)
            .map_err(|_| AdminError::Invalid("grace: a duration like 24h or 0s".into()))?,
    };
    if grace > Duration::from_secs(365 * 24 * 3600) {
        return Err(AdminError::Invalid("grace: at most a year".into()));
    }
    let key = live.store().rotate(&id, grace).await?;
    applied(&live).await;
    audit(&state, AuditKind::AdminRotated, &actor, Kind::Client, &id);
    Ok(Json(json!({"api_key": key})).into_response())
}

/// `POST /admin/v1/{clients|users}/{id}/revoke`
#[utoipa::path(post, operation_id = "admin_revoke", path = "/admin/v1/{collection}/{id}/revoke", tag = "admin", summary = "Revoke: the credential and every token issued before now are refused on every replica within a second",
    params(("collection" = String, Path, description = "`clients` or `users`"), ("id" = String, Path)),
    responses((status = 200, description = "The principal, `state: revoked`", body = Object), (status = 401, description = "No token, or a bad, expired or revoked one", body = crate::rejection::ErrorBody),
        (status = 403, description = "The token lacks the scope `keygate:admin`: `insufficient_scope`", body = crate::rejection::ErrorBody),
        (status = 404, description = "No such principal, or no `[directory]`", body = crate::rejection::ErrorBody),
        (status = 503, description = "The directory cannot be reached; nothing was written", body = crate::rejection::ErrorBody),),
    security(("bearer" = []), ("oauth2" = [])))]
pub(super) async fn revoke(
    State(state): State<AppState>,
    Path((collection, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Answer {
    let kind = kind_of(&collection)?;
    let (live, actor) = admin(&state, &headers).await?;
    let revoked = live.store().revoke(kind, &id).await?;
    applied(&live).await;
    audit(&state, AuditKind::AdminRevoked, &actor, kind, &id);
    Ok(Json(shown(&revoked)).into_response())
}

/// `POST /admin/v1/users/{id}/password` `{password}`
#[utoipa::path(post, operation_id = "admin_password", path = "/admin/v1/{collection}/{id}/password", tag = "admin", summary = "Set a user's password",
    params(("collection" = String, Path, description = "`clients` or `users`"), ("id" = String, Path)),
    request_body(content = Object, description = "`{password}`: 8 characters to 1024 bytes"),
    responses((status = 204, description = "Set"), (status = 400, description = "`invalid_request`", body = crate::rejection::ErrorBody), (status = 401, description = "No token, or a bad, expired or revoked one", body = crate::rejection::ErrorBody),
        (status = 403, description = "The token lacks the scope `keygate:admin`: `insufficient_scope`", body = crate::rejection::ErrorBody),
        (status = 404, description = "No such principal, or no `[directory]`", body = crate::rejection::ErrorBody),
        (status = 503, description = "The directory cannot be reached; nothing was written", body = crate::rejection::ErrorBody),),
    security(("bearer" = []), ("oauth2" = [])))]
pub(super) async fn password(
    State(state): State<AppState>,
    Path((collection, id)): Path<(String, String)>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Answer {
    if kind_of(&collection)? != Kind::User {
        return Err(Rejection::NotFound.into());
    }
    let (live, actor) = admin(&state, &headers).await?;
    let b: PasswordBody = body(&bytes)?;
    check_password(&b.password)?;
    let hash = hashed(&state, &b.password).await?;
    live.store()
        .update(Kind::User, &id, move |r, _| {
            r.hash = hash;
            Ok(())
        })
        .await?;
    applied(&live).await;
    audit(&state, AuditKind::AdminUpdated, &actor, Kind::User, &id);
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `DELETE /admin/v1/{clients|users}/{id}`
#[utoipa::path(delete, operation_id = "admin_delete", path = "/admin/v1/{collection}/{id}", tag = "admin", summary = "Delete: its tokens are refused as after a revocation; a new principal of the id never accepts them",
    params(("collection" = String, Path, description = "`clients` or `users`"), ("id" = String, Path)),
    responses((status = 204, description = "Deleted"), (status = 401, description = "No token, or a bad, expired or revoked one", body = crate::rejection::ErrorBody),
        (status = 403, description = "The token lacks the scope `keygate:admin`: `insufficient_scope`", body = crate::rejection::ErrorBody),
        (status = 404, description = "No such principal, or no `[directory]`", body = crate::rejection::ErrorBody),
        (status = 503, description = "The directory cannot be reached; nothing was written", body = crate::rejection::ErrorBody),),
    security(("bearer" = []), ("oauth2" = [])))]
pub(super) async fn delete(
    State(state): State<AppState>,
    Path((collection, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Answer {
    let kind = kind_of(&collection)?;
    let (live, actor) = admin(&state, &headers).await?;
    live.store().delete(kind, &id).await?;
    applied(&live).await;
    audit(&state, AuditKind::AdminDeleted, &actor, kind, &id);
    Ok(StatusCode::NO_CONTENT.into_response())
}
