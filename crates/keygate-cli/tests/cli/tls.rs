//! `keygate login` and `keygate call` over HTTPS: a CA and a server certificate made here
//! (rcgen), a TLS listener (rustls) answering like keygate's `/login`, `/token` and
//! `/userinfo`, and the exit codes of servers that fail or cannot be reached.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use tokio_rustls::rustls;

const KEY: &str = "kg_billing_tls-test-key";
const TOKEN: &str = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJiaWxsaW5nIn0.c2ln";

/// A keygate look-alike over HTTPS, with the PEM of the CA that signed its certificate.
struct TlsKeygate {
    base: String,
    ca_pem: String,
    _runtime: tokio::runtime::Runtime,
}

fn keygate_like() -> Router {
    Router::new()
        .route(
            "/login",
            post(|headers: HeaderMap| async move {
                match headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
                    Some(KEY) => axum::Json(serde_json::json!({
                        "access_token": TOKEN, "token_type": "Bearer", "expires_in": 1800
                    }))
                    .into_response(),
                    Some("kg_overloaded") => StatusCode::SERVICE_UNAVAILABLE.into_response(),
                    _ => (
                        StatusCode::UNAUTHORIZED,
                        axum::Json(serde_json::json!({
                            "error": "invalid_client", "error_description": "client authentication failed"
                        })),
                    )
                        .into_response(),
                }
            }),
        )
        .route(
            "/userinfo",
            get(|headers: HeaderMap| async move {
                let bearer = format!("Bearer {TOKEN}");
                if headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(&bearer) {
                    axum::Json(serde_json::json!({"sub": "billing"})).into_response()
                } else {
                    StatusCode::UNAUTHORIZED.into_response()
                }
            }),
        )
}

/// Accepts TCP, completes the TLS handshake, hands the stream to axum. A failed handshake
/// (a client that does not trust the certificate) is skipped.
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                continue;
            };
            if let Ok(tls) = self.acceptor.accept(tcp).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// A CA and a certificate it signed for 127.0.0.1 and localhost, made fresh (rcgen).
struct TestCerts {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
    cert_der: Vec<u8>,
    key_der: Vec<u8>,
}

fn test_certs() -> TestCerts {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "keygate test CA");
    ca.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);

    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let mut leaf =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();
    TestCerts {
        ca_pem: ca_cert.pem(),
        cert_pem: leaf_cert.pem(),
        key_pem: leaf_key.serialize_pem(),
        cert_der: leaf_cert.der().to_vec(),
        key_der: leaf_key.serialize_der(),
    }
}

fn tls_keygate() -> TlsKeygate {
    let certs = test_certs();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![certs.cert_der.clone().into()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(certs.key_der.clone().into()),
    )
    .unwrap();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let tcp = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let base = format!("https://{}", tcp.local_addr().unwrap());
    let listener = TlsListener {
        tcp,
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
    };
    runtime.spawn(async move { axum::serve(listener, keygate_like()).await });
    TlsKeygate {
        base,
        ca_pem: certs.ca_pem,
        _runtime: runtime,
    }
}

/// `keygate ARGS` with no trust configured beyond what `env` adds.
fn keygate(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keygate"))
        .args(args)
        .current_dir(dir)
        .env_remove("SSL_CERT_FILE")
        .env_remove("SSL_CERT_DIR")
        .env_remove("KEYGATE_API_KEY")
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

#[test]
fn login_and_call_trust_a_ca_given_with_cacert() {
    let server = tls_keygate();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), &server.ca_pem).unwrap();

    let login = keygate(
        dir.path(),
        &[
            "login",
            "--url",
            &server.base,
            "--api-key",
            KEY,
            "--cacert",
            "ca.pem",
        ],
        &[],
    );
    assert_eq!(login.status.code(), Some(0), "{}", stderr(&login));
    assert_eq!(stdout(&login).trim(), TOKEN);

    let call = keygate(
        dir.path(),
        &[
            "call",
            &format!("{}/userinfo", server.base),
            "--auth-url",
            &server.base,
            "--cacert",
            "ca.pem",
        ],
        &[("KEYGATE_API_KEY", KEY)],
    );
    assert_eq!(call.status.code(), Some(0), "{}", stderr(&call));
    assert!(stdout(&call).contains("\"billing\""), "{}", stdout(&call));
}

#[test]
fn login_trusts_a_ca_named_by_ssl_cert_file() {
    let server = tls_keygate();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &server.ca_pem).unwrap();
    let login = keygate(
        dir.path(),
        &["login", "--url", &server.base, "--api-key", KEY],
        &[("SSL_CERT_FILE", ca.to_str().unwrap())],
    );
    assert_eq!(login.status.code(), Some(0), "{}", stderr(&login));
    assert_eq!(stdout(&login).trim(), TOKEN);
}

#[test]
fn an_untrusted_certificate_is_one_clear_line_and_exit_1() {
    let server = tls_keygate();
    let dir = tempfile::tempdir().unwrap();
    for args in [
        vec!["login", "--url", &server.base, "--api-key", KEY],
        vec![
            "call",
            &format!("{}/userinfo", server.base),
            "--auth-url",
            &server.base,
            "--api-key",
            KEY,
        ],
    ] {
        let out = keygate(dir.path(), &args, &[]);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.starts_with("keygate: the TLS certificate of https://127.0.0.1:"),
            "{err}"
        );
        assert!(
            err.contains("not trusted") && err.contains("--cacert"),
            "{err}"
        );
        assert!(stdout(&out).is_empty());
    }
}

#[test]
fn a_cacert_that_is_not_pem_is_a_usage_error() {
    let server = tls_keygate();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), "not a certificate").unwrap();
    let out = keygate(
        dir.path(),
        &[
            "login",
            "--url",
            &server.base,
            "--api-key",
            KEY,
            "--cacert",
            "ca.pem",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
}

#[test]
fn a_failing_or_unreachable_keygate_exits_3_not_as_a_refused_key() {
    let server = tls_keygate();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), &server.ca_pem).unwrap();
    let tls = ["--cacert", "ca.pem"];

    let refused = keygate(
        dir.path(),
        &[
            &["login", "--url", &server.base, "--api-key", "kg_wrong"],
            &tls[..],
        ]
        .concat(),
        &[],
    );
    assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
    assert!(stderr(&refused).contains("invalid_client"));

    let failing = keygate(
        dir.path(),
        &[
            &["login", "--url", &server.base, "--api-key", "kg_overloaded"],
            &tls[..],
        ]
        .concat(),
        &[],
    );
    assert_eq!(failing.status.code(), Some(3), "{}", stderr(&failing));
    let err = stderr(&failing);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("answered 503"), "{err}");

    // Nothing listens on port 1.
    let unreachable = keygate(
        dir.path(),
        &["login", "--url", "http://127.0.0.1:1", "--api-key", KEY],
        &[],
    );
    assert_eq!(
        unreachable.status.code(),
        Some(3),
        "{}",
        stderr(&unreachable)
    );
    let err = stderr(&unreachable);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("keygate: cannot reach the server"), "{err}");
}

/// TLS settings for `keygate serve`, by environment: the pair in `tls/` beside the config.
const TLS_ENV: [(&str, &str); 2] = [
    ("KEYGATE_SERVER_TLS_CERT", "tls/cert.pem"),
    ("KEYGATE_SERVER_TLS_KEY", "tls/key.pem"),
];

/// `keygate init` in `dir`, the pair written to `dir/tls/`, the CA to `dir/ca.pem`.
fn https_setup(dir: &Path, certs: &TestCerts) -> String {
    let key = super::init(dir);
    std::fs::create_dir_all(dir.join("tls")).unwrap();
    std::fs::write(dir.join("tls/cert.pem"), &certs.cert_pem).unwrap();
    std::fs::write(dir.join("tls/key.pem"), &certs.key_pem).unwrap();
    std::fs::write(dir.join("ca.pem"), &certs.ca_pem).unwrap();
    key
}

#[test]
fn login_and_call_work_against_keygate_serve_over_https() {
    let certs = test_certs();
    let dir = tempfile::tempdir().unwrap();
    let key = https_setup(dir.path(), &certs);
    let server = super::serve_with(dir.path(), "warn", std::process::Stdio::null(), &TLS_ENV);
    assert!(
        server.base.starts_with("https://127.0.0.1:"),
        "{}",
        server.base
    );
    let base = server.base.as_str();
    let userinfo = format!("{base}/userinfo");
    let ca = dir.path().join("ca.pem");
    let ca = ca.to_str().unwrap();

    // Trust by --cacert, then by SSL_CERT_FILE.
    for (trust, env) in [
        (&["--cacert", "ca.pem"][..], &[][..]),
        (&[][..], &[("SSL_CERT_FILE", ca)][..]),
    ] {
        let login = keygate(
            dir.path(),
            &[&["login", "--url", base, "--api-key", &key][..], trust].concat(),
            env,
        );
        assert_eq!(login.status.code(), Some(0), "{}", stderr(&login));
        assert_eq!(stdout(&login).trim().split('.').count(), 3, "a JWT");

        let call = keygate(
            dir.path(),
            &[&["call", &userinfo, "--auth-url", base][..], trust].concat(),
            &[env, &[("KEYGATE_API_KEY", key.as_str())][..]].concat(),
        );
        assert_eq!(call.status.code(), Some(0), "{}", stderr(&call));
        assert!(
            stdout(&call).contains("\"my-service\""),
            "{}",
            stdout(&call)
        );
    }

    // Trusting nothing but the system's roots: one line, exit 1.
    let out = keygate(
        dir.path(),
        &["login", "--url", base, "--api-key", &key],
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(&format!("keygate: the TLS certificate of {base}")),
        "{err}"
    );
}

/// `keygate serve` that must fail at start-up: its exit code and stderr.
fn serve_fails(dir: &Path, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_keygate"))
        .arg("serve")
        .current_dir(dir)
        .env_remove("KEYGATE_CONFIG")
        .env("KEYGATE_SERVER_LISTEN", "127.0.0.1:0")
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("keygate serve started with {env:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    (out.status.code(), stderr(&out))
}

#[test]
fn bad_tls_files_stop_serve_at_start_up_naming_the_setting() {
    let certs = test_certs();
    let other = test_certs();
    let dir = tempfile::tempdir().unwrap();
    https_setup(dir.path(), &certs);
    let cases: [(&[(&str, &str)], &str); 4] = [
        (
            &[TLS_ENV[0]],
            "keygate.toml: server.tls_key: is required with server.tls_cert (both or neither)",
        ),
        (
            &[TLS_ENV[0], ("KEYGATE_SERVER_TLS_KEY", "tls/missing.pem")],
            "keygate: server.tls_key: cannot read ",
        ),
        (
            &[("KEYGATE_SERVER_TLS_CERT", "ca-missing.pem"), TLS_ENV[1]],
            "keygate: server.tls_cert: cannot read ",
        ),
        (
            &[TLS_ENV[0], ("KEYGATE_SERVER_TLS_KEY", "other-key.pem")],
            "keygate: server.tls_key: ",
        ),
    ];
    std::fs::write(dir.path().join("other-key.pem"), &other.key_pem).unwrap();
    for (env, expected) in cases {
        let (code, err) = serve_fails(dir.path(), env);
        assert_eq!(code, Some(2), "{env:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{env:?}: {err}");
        assert!(err.contains(expected), "{env:?}: {err}");
        // `check-config` loads the pair as `serve` does.
        let check = keygate(dir.path(), &["check-config"], env);
        assert_eq!(check.status.code(), Some(2), "{env:?}");
        assert!(stderr(&check).contains(expected), "{}", stderr(&check));
    }
    let good = keygate(dir.path(), &["check-config"], &TLS_ENV);
    assert_eq!(good.status.code(), Some(0), "{}", stderr(&good));
    assert!(stdout(&good).contains("with TLS"), "{}", stdout(&good));
}
