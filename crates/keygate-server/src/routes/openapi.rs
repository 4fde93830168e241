//! `GET /openapi.json` and `GET /docs`.
//!
//! The document is OpenAPI 3.1, generated from the handlers' `#[utoipa::path]`
//! annotations, with the security schemes of the running configuration: the API-key
//! header (and query parameter and cookie, when on), bearer tokens, the token cookie in
//! cookie mode, HTTP Basic client authentication, OAuth2 (client credentials, and the
//! password flow when users exist) and OpenID Connect discovery — the schemes of the
//! FastAPI design keygate started from. `docs/openapi.json` is this document for the
//! default configuration; a test fails when it drifts.
//!
//! `/docs` is Swagger UI, served from assets compiled into the binary (no CDN). Its
//! Authorize button obtains a token from `/token` through the OAuth2 flows.

use axum::Json;
use axum::extract::State;
use serde_json::{Map, Value, json};
use utoipa::OpenApi;

use crate::config::Config;
use crate::state::AppState;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "keygate",
        description = "Exchange an API key, client credentials or a password for a short-lived signed JWT, and verify it.",
        license(name = "MIT OR Apache-2.0", identifier = "MIT OR Apache-2.0")
    ),
    paths(
        super::login::login,
        super::token::token,
        super::login::logout,
        super::introspect::revoke,
        super::introspect::introspect,
        super::verify::verify,
        super::verify::userinfo,
        super::discovery::jwks,
        super::discovery::oauth_authorization_server,
        super::discovery::openid_configuration,
        super::health::healthz,
        super::health::readyz,
        super::health::metrics,
        super::admin::create,
        super::admin::list,
        super::admin::get_one,
        super::admin::update,
        super::admin::rotate,
        super::admin::revoke,
        super::admin::password,
        super::admin::delete,
    ),
    components(schemas(
        crate::issue::TokenResponse,
        crate::rejection::ErrorBody,
        keygate::token::Claims,
        keygate::token::Audience
    )),
    tags(
        (name = "tokens", description = "Getting and giving up tokens"),
        (name = "verification", description = "Checking tokens"),
        (name = "discovery", description = "Keys and metadata for standard clients"),
        (name = "operations", description = "Health and metrics"),
        (name = "admin", description = "Principals of the directory, for tokens with the scope `keygate:admin`"),
    )
)]
struct ApiDoc;

/// The OpenAPI document for `config`, offering `scopes` in the OAuth2 flows.
pub fn document<'a>(
    config: &Config,
    scopes: impl IntoIterator<Item = &'a str>,
    has_users: bool,
) -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or(Value::Null);
    let schemes = security_schemes(config, scopes, has_users);
    if let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
        for operation in paths
            .values_mut()
            .filter_map(Value::as_object_mut)
            .flat_map(|item| item.values_mut())
        {
            if let Some(security) = operation.get_mut("security").and_then(Value::as_array_mut) {
                // Requirements naming a scheme this configuration does not offer go away.
                security.retain(|req| {
                    req.as_object()
                        .is_some_and(|r| r.keys().all(|k| schemes.contains_key(k)))
                });
            }
        }
    }
    if let Some(components) = doc.get_mut("components").and_then(Value::as_object_mut) {
        components.insert("securitySchemes".into(), Value::Object(schemes));
    }
    doc
}

fn security_schemes<'a>(
    config: &Config,
    scopes: impl IntoIterator<Item = &'a str>,
    has_users: bool,
) -> Map<String, Value> {
    let mut s = Map::new();
    let key = &config.api_key;
    if !key.header.is_empty() {
        s.insert("api_key_header".into(), json!({"type": "apiKey", "in": "header", "name": key.header, "description": "An API key (`kg_…`), for `/login`"}));
    }
    if !key.query.is_empty() {
        s.insert(
            "api_key_query".into(),
            json!({"type": "apiKey", "in": "query", "name": key.query}),
        );
    }
    if !key.cookie.is_empty() {
        s.insert(
            "api_key_cookie".into(),
            json!({"type": "apiKey", "in": "cookie", "name": key.cookie}),
        );
    }
    s.insert(
        "bearer".into(),
        json!({"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}),
    );
    if config.cookie.enabled {
        s.insert(
            "token_cookie".into(),
            json!({"type": "apiKey", "in": "cookie", "name": config.cookie.name}),
        );
    }
    s.insert(
        "client_basic".into(),
        json!({"type": "http", "scheme": "basic", "description": "`client_id:api_key`"}),
    );
    let scopes: Map<String, Value> = scopes
        .into_iter()
        .map(|s| (s.to_owned(), Value::String(String::new())))
        .collect();
    let mut flows = Map::new();
    flows.insert(
        "clientCredentials".into(),
        json!({"tokenUrl": "/token", "scopes": scopes}),
    );
    if has_users {
        flows.insert(
            "password".into(),
            json!({"tokenUrl": "/token", "scopes": scopes}),
        );
    }
    s.insert("oauth2".into(), json!({"type": "oauth2", "flows": flows}));
    s.insert(
        "openid".into(),
        json!({
            "type": "openIdConnect",
            "openIdConnectUrl": "/.well-known/openid-configuration",
            "description": "The seed's discovery scheme. The document is RFC 8414 metadata: keygate is not an OpenID Provider (access tokens only, no ID tokens, no authorization endpoint)."
        }),
    );
    s
}

pub(super) async fn openapi_json(State(state): State<AppState>) -> Json<Value> {
    let rt = state.runtime();
    let scopes = rt
        .directory
        .iter()
        .flat_map(|p| p.scopes().iter().map(String::as_str));
    Json(document(&rt.config, scopes, rt.has_users()))
}

/// Swagger UI at `/docs`, reading `/openapi.json`.
pub(super) fn swagger_ui() -> utoipa_swagger_ui::SwaggerUi {
    utoipa_swagger_ui::SwaggerUi::new("/docs")
        .config(utoipa_swagger_ui::Config::from("/openapi.json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `docs/openapi.json` is the document for the default configuration with users.
    /// Regenerate it with `KEYGATE_WRITE_OPENAPI=1 cargo test -p keygate-server openapi`.
    #[test]
    fn committed_openapi_json_matches_the_code() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
        let generated =
            serde_json::to_string_pretty(&document(&Config::default(), [], true)).unwrap() + "\n";
        if std::env::var_os("KEYGATE_WRITE_OPENAPI").is_some() {
            std::fs::write(&path, &generated).unwrap();
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == generated,
            "docs/openapi.json is out of date: run KEYGATE_WRITE_OPENAPI=1 cargo test -p keygate-server openapi"
        );
    }

    /// OpenAPI requires each `operationId` to be unique (code generators name methods after
    /// it); utoipa takes the handler's name, and `admin::revoke` shares one with `/revoke`'s.
    #[test]
    fn every_operation_id_is_unique() {
        let doc = document(&Config::default(), [], true);
        let mut seen = std::collections::HashSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let id = op["operationId"].as_str().unwrap_or_default();
                assert!(
                    seen.insert(id.to_owned()),
                    "{method} {path}: operationId {id} repeated"
                );
            }
        }
        assert!(seen.len() > 20, "{seen:?}");
    }

    #[test]
    fn the_document_is_openapi_3_1_with_the_seeds_security_schemes() {
        let doc = document(&Config::default(), [], true);
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
        let schemes = &doc["components"]["securitySchemes"];
        assert_eq!(schemes["api_key_header"]["name"], "X-API-Key");
        assert_eq!(schemes["bearer"]["scheme"], "bearer");
        assert_eq!(schemes["oauth2"]["flows"]["password"]["tokenUrl"], "/token");
        assert_eq!(
            schemes["oauth2"]["flows"]["clientCredentials"]["tokenUrl"],
            "/token"
        );
        assert_eq!(
            schemes["openid"]["openIdConnectUrl"],
            "/.well-known/openid-configuration"
        );
        assert!(
            schemes.get("api_key_query").is_none(),
            "query keys are off by default"
        );
        let login_security = &doc["paths"]["/login"]["post"]["security"];
        assert_eq!(login_security, &json!([{"api_key_header": []}]));
        // 13 endpoints, and the admin API's five paths.
        assert_eq!(doc["paths"].as_object().unwrap().len(), 18);
        let admin = &doc["paths"]["/admin/v1/{collection}"]["post"]["security"];
        assert_eq!(admin, &json!([{"bearer": []}, {"oauth2": []}]));
    }

    #[test]
    fn the_document_follows_the_configuration() {
        let mut config = Config::default();
        config.api_key.header = "access_token".into();
        config.api_key.query = "api_key".into();
        config.cookie.enabled = true;
        let doc = document(&config, ["orders:read"], false);
        let schemes = &doc["components"]["securitySchemes"];
        assert_eq!(schemes["api_key_header"]["name"], "access_token");
        assert_eq!(schemes["api_key_query"]["in"], "query");
        assert_eq!(schemes["token_cookie"]["name"], "keygate_token");
        assert!(
            schemes["oauth2"]["flows"].get("password").is_none(),
            "no users, no password flow"
        );
        assert_eq!(
            doc["paths"]["/login"]["post"]["security"],
            json!([{"api_key_header": []}, {"api_key_query": []}])
        );
    }
}
