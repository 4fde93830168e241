//! Helpers for the black-box tests: a real server on 127.0.0.1:0 with a real config file.

use std::path::PathBuf;

use keygate::api_key::{self, KeyHash};
use keygate::clock::Clock;
use keygate_server::AppState;
use tokio::sync::oneshot;

pub(crate) const SECRET: &str = "4f1c0f9a7d6e8b2c3a5d7e9f1b3c5d7e9a1b3c5d7e9f1a2b3c4d5e6f7a8b9c0d";
pub(crate) const ISSUER: &str = "https://keygate.test";
/// The seed's style of key: any string, stored as `sha256:<hex>`.
pub(crate) const SEED_KEY: &str = "seed-style-hand-made-api-key";
pub(crate) const USER_PASSWORD: &str = "correct horse battery";

/// A running server and what it was configured with.
pub(crate) struct TestServer {
    /// `http://127.0.0.1:<port>`, or `https://…` when the configuration has a TLS pair.
    pub(crate) base: String,
    /// `http://…/metrics` when the configuration has `server.metrics_listen`.
    pub(crate) metrics_url: Option<String>,
    /// `http://…` of `server.admin_listen` when the configuration has it.
    pub(crate) admin_url: Option<String>,
    pub(crate) http: reqwest::Client,
    pub(crate) state: AppState,
    pub(crate) config_path: PathBuf,
    /// `kg_billing_…`: role `service`, scopes `orders:read orders:write`.
    pub(crate) billing_key: String,
    shutdown: Option<oneshot::Sender<()>>,
    pub(crate) handle: tokio::task::JoinHandle<std::io::Result<()>>,
    _dir: tempfile::TempDir,
}

/// The base configuration; `extra` is appended (more sections or entries), and
/// `overrides` replaces whole lines of the base by key (`"failed_attempts = 3"`).
pub(crate) fn config_text(billing_key: &str, user_hash: &str, extra: &str) -> String {
    format!(
        r#"[server]
listen = "127.0.0.1:0"
public_url = "https://keygate.test"
shutdown_timeout = "5s"

[token]
algorithm = "HS256"
secret = "{SECRET}"
issuer = "{ISSUER}"
audience = ["orders-api"]
ttl = "30m"
leeway = "30s"

[limits]
failed_attempts = 5
window = "1m"

{extra}

[[clients]]
id = "billing"
key_hash = "{billing}"
role = "service"
scopes = ["orders:read", "orders:write"]

[[clients]]
id = "legacy"
key_hash = "{seed}"
role = "reader"
scopes = ["orders:read"]

[[users]]
username = "alice"
password_hash = "{user_hash}"
role = "admin"
scopes = ["orders:read"]
"#,
        billing = KeyHash::sha256_of(billing_key),
        seed = KeyHash::sha256_of(SEED_KEY),
    )
}

/// One argon2id hash for the whole test binary (hashing is slow on purpose).
pub(crate) fn user_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| {
        keygate::password::hash_password(USER_PASSWORD.as_bytes())
            .unwrap()
            .as_str()
            .to_owned()
    })
}

impl TestServer {
    pub(crate) async fn start() -> Self {
        Self::with_extra("").await
    }

    /// A server whose config has `extra` TOML added after `[limits]`.
    pub(crate) async fn with_extra(extra: &str) -> Self {
        let billing_key = api_key::generate("billing").unwrap();
        let text = config_text(&billing_key, user_hash(), extra);
        Self::with_config(text, billing_key).await
    }

    pub(crate) async fn with_config(text: String, billing_key: String) -> Self {
        Self::with_setup(text, billing_key, |_| {}).await
    }

    /// A server signing with `alg` (ES256, EdDSA, RS256) from a fresh key in `keys/`.
    pub(crate) async fn signing_with(alg: &str) -> Self {
        Self::signing_with_clock(alg, Clock::system()).await
    }

    /// [`TestServer::signing_with`], its tokens issued and verified by `clock`.
    pub(crate) async fn signing_with_clock(alg: &str, clock: Clock) -> Self {
        let billing_key = api_key::generate("billing").unwrap();
        let text = config_text(&billing_key, user_hash(), "").replacen(
            "algorithm = \"HS256\"",
            &format!("algorithm = \"{alg}\"\nsigning_keys = \"keys\"\nkey_publish_delay = \"1h\""),
            1,
        );
        let algorithm = alg.parse().unwrap();
        let setup = move |dir: &std::path::Path| {
            keygate_server::config::keyring::generate(&dir.join("keys"), algorithm).unwrap();
        };
        Self::with_setup_and_clock(text, billing_key, setup, clock).await
    }

    /// Runs `setup` in the server's folder before the server reads its configuration.
    pub(crate) async fn with_setup(
        text: String,
        billing_key: String,
        setup: impl FnOnce(&std::path::Path),
    ) -> Self {
        Self::with_setup_and_clock(text, billing_key, setup, Clock::system()).await
    }

    /// A server whose tokens are issued and verified by `clock` (a reload keeps it): a
    /// test moves a [`keygate::clock::ManualClock`] past an expiry instead of waiting.
    pub(crate) async fn with_clock(text: String, billing_key: String, clock: Clock) -> Self {
        Self::with_setup_and_clock(text, billing_key, |_| {}, clock).await
    }

    async fn with_setup_and_clock(
        text: String,
        billing_key: String,
        setup: impl FnOnce(&std::path::Path),
        clock: Clock,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        setup(dir.path());
        let config_path = dir.path().join("keygate.toml");
        std::fs::write(&config_path, text).unwrap();
        let mut runtime = keygate_server::Config::load(&config_path).unwrap();
        runtime.issuer = runtime.issuer.with_clock(clock.clone());
        runtime.verifier = runtime.verifier.with_clock(clock);
        let state = AppState::new(runtime, Some(config_path.clone())).unwrap();
        // Bound as `keygate serve` binds: `server.listen` (127.0.0.1:0), and
        // `server.metrics_listen` and the TLS pair when the configuration has them.
        let listeners = keygate_server::Listeners::bind(&state.runtime())
            .await
            .unwrap();
        let base = listeners.url().unwrap();
        let metrics_url = listeners.metrics_url();
        let admin_url = listeners.admin_url();
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(keygate_server::serve(listeners, state.clone(), async {
            let _ = rx.await;
        }));
        Self {
            base,
            metrics_url,
            admin_url,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            state,
            config_path,
            billing_key,
            shutdown: Some(tx),
            handle,
            _dir: dir,
        }
    }

    /// The folder holding the configuration (and `keys/`).
    pub(crate) fn dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `POST /login` with the key in `X-API-Key`.
    pub(crate) async fn login(&self, key: &str) -> reqwest::Response {
        self.http
            .post(self.url("/login"))
            .header("X-API-Key", key)
            .send()
            .await
            .unwrap()
    }

    /// A fresh token for `billing`.
    pub(crate) async fn token(&self) -> String {
        let r = self.login(&self.billing_key).await;
        assert_eq!(r.status(), 200);
        let body: serde_json::Value = r.json().await.unwrap();
        body["access_token"].as_str().unwrap().to_owned()
    }

    pub(crate) async fn verify(&self, token: &str) -> reqwest::Response {
        self.get_with_token("/verify", token).await
    }

    /// `GET path` with `Authorization: Bearer <token>`.
    pub(crate) async fn get_with_token(&self, path: &str, token: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    /// `POST /token` with a form body.
    pub(crate) async fn token_form(&self, form: &[(&str, &str)]) -> reqwest::Response {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        self.http
            .post(self.url("/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap()
    }

    /// `POST /token` with `form`, as if from `addr` (needs 127.0.0.1 as a trusted proxy).
    pub(crate) async fn token_form_from(
        &self,
        addr: &str,
        form: &[(&str, &str)],
    ) -> reqwest::Response {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        self.http
            .post(self.url("/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-forwarded-for", addr)
            .body(body)
            .send()
            .await
            .unwrap()
    }

    /// Rewrites the config file and reloads it.
    pub(crate) fn rewrite_config(&self, text: &str) -> Result<(), keygate_server::ConfigError> {
        std::fs::write(&self.config_path, text).unwrap();
        self.state.reload()
    }

    pub(crate) async fn stop(mut self) -> std::io::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.handle.await.unwrap()
    }
}

/// The error code of an OAuth-shaped body.
pub(crate) async fn error_of(r: reqwest::Response) -> String {
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(body["error_description"].is_string(), "{body}");
    body["error"].as_str().unwrap().to_owned()
}

pub(crate) fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub(crate) fn unb64(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .unwrap()
}

/// HS256 over arbitrary header and payload JSON: an independent JWS implementation
/// (hmac + sha2), used both to forge and to check tokens.
pub(crate) fn sign_hs256(header: &str, payload: &str, key: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let input = format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()));
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    mac.update(input.as_bytes());
    format!("{input}.{}", b64(&mac.finalize().into_bytes()))
}

pub(crate) fn now() -> u64 {
    keygate::token::now_unix()
}

/// Valid claims for `billing`, with `overrides` merged in (`null` removes a claim).
pub(crate) fn claims_with(overrides: serde_json::Value) -> String {
    let n = now();
    let mut base = serde_json::json!({
        "iss": ISSUER, "sub": "billing", "aud": "orders-api", "exp": n + 600, "iat": n,
        "nbf": n, "jti": format!("forged-{n}"), "client_id": "billing", "role": "service",
        "scope": "orders:read"
    });
    let serde_json::Value::Object(overrides) = overrides else {
        panic!("claims_with takes a JSON object");
    };
    for (k, v) in overrides {
        if v.is_null() {
            base.as_object_mut().unwrap().remove(&k);
        } else {
            base[k] = v;
        }
    }
    base.to_string()
}

/// A program of the Python virtualenv the tests use (`.venv` at the workspace root, which
/// `cargo xtask test` creates; or the folder of `$KEYGATE_PYTHON`). A missing one fails the
/// calling test, naming the command that sets it up: a test never passes without running.
pub(crate) fn venv_program(name: &str) -> PathBuf {
    let bin = std::env::var_os("KEYGATE_PYTHON").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin"),
        |p| {
            PathBuf::from(p)
                .parent()
                .map(PathBuf::from)
                .unwrap_or_default()
        },
    );
    let path = bin.join(name);
    assert!(
        path.exists(),
        "this test needs {}: run the tests with `cargo xtask test`, which creates the virtualenv",
        path.display()
    );
    path
}

/// A port nothing listens on right now.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The first of `paths` that exists: a program from Debian's packages. A missing one fails
/// the calling test, naming the package: a test never passes without running.
pub(crate) fn system_program(paths: &[&str], package: &str) -> PathBuf {
    let found = paths.iter().map(PathBuf::from).find(|p| p.exists());
    found.unwrap_or_else(|| {
        panic!("this test needs {package}: run the tests with `cargo xtask test` (as root it installs it; else: sudo apt-get install {package})")
    })
}

impl TestServer {
    /// `POST` a form to `path`, with HTTP Basic client credentials when given.
    pub(crate) async fn post_form(
        &self,
        path: &str,
        auth: Option<(&str, &str)>,
        form: &[(&str, &str)],
    ) -> reqwest::Response {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let mut req = self
            .http
            .post(self.url(path))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        if let Some((id, secret)) = auth {
            req = req.basic_auth(id, Some(secret));
        }
        req.send().await.unwrap()
    }

    /// The body of `GET path`.
    pub(crate) async fn text(&self, path: &str) -> String {
        let r = self.http.get(self.url(path)).send().await.unwrap();
        r.text().await.unwrap()
    }

    /// The JSON body of `GET path`.
    pub(crate) async fn json(&self, path: &str) -> serde_json::Value {
        let r = self.http.get(self.url(path)).send().await.unwrap();
        r.json().await.unwrap()
    }

    /// Lifts the failed-attempt limit, for tests whose requests fail on purpose.
    pub(crate) fn lift_attempt_limit(&self) {
        let text = std::fs::read_to_string(&self.config_path)
            .unwrap()
            .replace("failed_attempts = 5", "failed_attempts = 1000000");
        self.rewrite_config(&text).unwrap();
    }

    /// `POST /logout` with `token`.
    pub(crate) async fn logout(&self, token: &str) -> reqwest::Response {
        self.http
            .post(self.url("/logout"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }
}

/// The `Retry-After` seconds of a 429 or 503, checked to be within one `window` (1 minute).
pub(crate) fn retry_after(r: &reqwest::Response) -> u64 {
    let secs: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&secs), "Retry-After {secs}");
    secs
}

/// The challenge of a refused token.
pub(crate) const INVALID_TOKEN_CHALLENGE: &str = "Bearer realm=\"keygate\", error=\"invalid_token\", error_description=\"the token is invalid, expired or revoked\"";

/// `token` is refused by `/verify` and `/userinfo` with 401 `invalid_token`.
pub(crate) async fn assert_invalid(s: &TestServer, token: &str, what: &str) {
    for path in ["/verify", "/userinfo"] {
        let r = s.get_with_token(path, token).await;
        assert_eq!(r.status(), 401, "{what} on {path}");
        assert_eq!(
            r.headers()["www-authenticate"],
            INVALID_TOKEN_CHALLENGE,
            "{what}"
        );
        assert_eq!(error_of(r).await, "invalid_token", "{what}");
    }
}

/// A private CA, made fresh for a test (rcgen).
pub(crate) struct TestCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    /// The CA certificate, PEM: what clients are told to trust.
    pub(crate) pem: String,
}

/// A server certificate signed by a [`TestCa`]: PEM chain and key, and the leaf's DER (to
/// tell which certificate a server presented).
pub(crate) struct TestCert {
    pub(crate) cert_pem: String,
    pub(crate) key_pem: String,
    pub(crate) der: Vec<u8>,
}

impl TestCa {
    pub(crate) fn new() -> Self {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "keygate test CA");
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).unwrap();
        Self {
            pem: cert.pem(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// A certificate for 127.0.0.1 and localhost, with `name` as its common name.
    pub(crate) fn server_cert(&self, name: &str) -> TestCert {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        TestCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }

    /// A reqwest client trusting this CA only.
    pub(crate) fn client(&self) -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(self.pem.as_bytes()).unwrap()])
            .redirect(reqwest::redirect::Policy::none())
    }
}

impl TestCert {
    /// Writes the pair where the configuration below expects it: `tls/cert.pem` and
    /// `tls/key.pem` in `dir`, each replaced by a rename (as ACME clients do).
    pub(crate) fn install(&self, dir: &std::path::Path) {
        let tls = dir.join("tls");
        std::fs::create_dir_all(&tls).unwrap();
        for (name, text) in [("key.pem", &self.key_pem), ("cert.pem", &self.cert_pem)] {
            let tmp = tls.join(format!(".{name}.new"));
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(&tmp, tls.join(name)).unwrap();
        }
    }
}

/// `[server]` lines serving HTTPS from the pair [`TestCert::install`] writes.
pub(crate) const TLS_SETTINGS: &str = "tls_cert = \"tls/cert.pem\"\ntls_key = \"tls/key.pem\"\n";

/// The base configuration with `server_lines` added to `[server]`.
pub(crate) fn config_with_server(billing_key: &str, server_lines: &str, extra: &str) -> String {
    config_text(billing_key, user_hash(), extra).replacen(
        "shutdown_timeout = \"5s\"\n",
        &format!("shutdown_timeout = \"5s\"\n{server_lines}"),
        1,
    )
}

/// Reads the interim `100 Continue` answer (RFC 9110 §10.1.1) to a request sent with
/// `Expect: 100-continue`: hyper sends it when the handler first reads the body, so once it
/// is here the request has been accepted, parsed and handed to its handler.
pub(crate) async fn expect_continue<S: tokio::io::AsyncRead + Unpin>(conn: &mut S) {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let read = async {
        while !got.ends_with(b"\r\n\r\n") {
            got.push(conn.read_u8().await.expect("the connection closed"));
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), read)
        .await
        .expect("no interim answer within 10 s");
    assert_eq!(
        String::from_utf8_lossy(&got),
        "HTTP/1.1 100 Continue\r\n\r\n"
    );
}

/// Waits (10 s at most) until `state` drains: its `/readyz` answers 503 `draining`, which
/// `serve` sets as its shutdown begins.
pub(crate) async fn wait_draining(state: &AppState) {
    use tower::ServiceExt as _;
    let router = keygate_server::router(state.clone());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let request = axum::http::Request::get("/readyz")
            .body(axum::body::Body::empty())
            .unwrap();
        let r = router.clone().oneshot(request).await.unwrap();
        if r.status() == 503 {
            let body = axum::body::to_bytes(r.into_body(), 1024).await.unwrap();
            assert_eq!(&body[..], br#"{"status":"draining"}"#);
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not draining 10 s after shutdown began"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}
