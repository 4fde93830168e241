//! `TokenClient` and `JwksVerifier` over HTTPS: a CA and a server certificate made here
//! (rcgen) and a TLS listener (rustls) answering like keygate's `/login` and JWKS.

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use keygate::token::{
    Grant, Issuer, JwksVerifier, KeySet, SigningAlgorithm, SigningKey, TokenPolicy,
};
use keygate_client::{ClientError, TokenClient};
use tokio_rustls::rustls;

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

/// Serves `router` over HTTPS on 127.0.0.1:0; returns its base URL and its CA in PEM.
async fn serve_tls(router: Router) -> (String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![leaf.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
    )
    .unwrap();
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("https://{}", tcp.local_addr().unwrap());
    let listener = TlsListener {
        tcp,
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
    };
    tokio::spawn(async move { axum::serve(listener, router).await });
    (base, ca_cert.pem())
}

fn policy() -> TokenPolicy {
    TokenPolicy::new("https://keygate.test")
}

/// A keygate look-alike: `/login` issues real ES256 tokens, the JWKS publishes the key.
async fn tls_keygate() -> (String, String) {
    let (key, _) = SigningKey::generate(SigningAlgorithm::ES256).unwrap();
    let jwks = serde_json::json!({ "keys": [key.public_jwk().unwrap()] });
    let issuer = Arc::new(Issuer::new(Arc::new(KeySet::single(key)), policy()));
    let router = Router::new()
        .route(
            "/login",
            post(move || async move {
                let grant = Grant {
                    subject: "billing",
                    client_id: "billing",
                    role: "service",
                    scopes: &[],
                };
                let issued = issuer.issue(&grant).unwrap();
                axum::Json(serde_json::json!({
                    "access_token": issued.token, "token_type": "Bearer", "expires_in": 1800
                }))
            }),
        )
        .route(
            "/.well-known/jwks.json",
            get(move || async move { axum::Json(jwks) }),
        );
    serve_tls(router).await
}

#[tokio::test]
async fn a_token_and_the_jwks_are_fetched_over_tls_from_a_ca_added_by_the_caller() {
    let (base, ca) = tls_keygate().await;
    let credentials = keygate_client::Credentials::ApiKey {
        key: "kg_billing_x".into(),
        header: "X-API-Key".into(),
    };
    let client = TokenClient::builder(&base, credentials)
        .add_root_certificate(ca.clone())
        .build()
        .unwrap();
    let token = client.token().await.unwrap();
    let verifier = JwksVerifier::builder(
        format!("{base}/.well-known/jwks.json"),
        SigningAlgorithm::ES256,
        policy(),
    )
    .add_root_certificate(ca)
    .fetch()
    .await
    .unwrap();
    assert_eq!(verifier.verify(&token).await.unwrap().sub, "billing");
}

#[tokio::test]
async fn a_certificate_from_an_unknown_ca_is_refused_and_said_so() {
    let (base, _) = tls_keygate().await;
    let err = TokenClient::with_api_key(&base, "kg_billing_x")
        .token()
        .await
        .unwrap_err();
    match err {
        ClientError::UntrustedCertificate { url, reason } => {
            assert!(url.starts_with(&base), "{url}");
            assert!(reason.contains("UnknownIssuer"), "{reason}");
        }
        other => panic!("expected an untrusted certificate, got {other}"),
    }
    let err = JwksVerifier::fetch(
        format!("{base}/.well-known/jwks.json"),
        SigningAlgorithm::ES256,
        policy(),
    )
    .await
    .unwrap_err();
    // The TLS refusal is among the error's sources, not in its own text.
    assert!(matches!(err, keygate::Error::Jwks(_)), "{err:?}");
    let chain = keygate::error::chain(&err);
    assert!(chain.contains("UnknownIssuer"), "{chain}");
}

#[tokio::test]
async fn a_root_certificate_that_is_not_pem_is_a_configuration_error() {
    let built = TokenClient::builder(
        "https://127.0.0.1:1",
        keygate_client::Credentials::ApiKey {
            key: "k".into(),
            header: "X-API-Key".into(),
        },
    )
    .add_root_certificate("not a certificate")
    .build();
    assert!(matches!(built, Err(ClientError::Config(_))));
}
