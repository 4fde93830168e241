//! HTTPS (README, Serving HTTPS): `server.tls_cert` + `server.tls_key` with a CA and certificates made
//! here; HTTP/1.1 and HTTP/2 by ALPN; certificates rotated on disk picked up without a
//! restart while connections opened before keep working; bad pairs refused; shutdown drains
//! HTTPS connections as it does plain ones.

use std::sync::Arc;
use std::time::{Duration, Instant};

use keygate::api_key;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_rustls::rustls;

use crate::util::*;

/// A server with `pair` installed and TLS on; `server_lines` are added to `[server]`.
async fn https_server(pair: &TestCert, server_lines: &str) -> TestServer {
    let billing_key = api_key::generate("billing").unwrap();
    let text = config_with_server(&billing_key, &format!("{TLS_SETTINGS}{server_lines}"), "")
        .replace("public_url = \"https://keygate.test\"\n", "");
    TestServer::with_setup(text, billing_key, |dir| pair.install(dir)).await
}

/// A raw TLS connection trusting `ca` only, offering `alpn`: what the server presents and
/// negotiates can be read off it, and it stays the same connection across requests.
async fn raw_tls(
    base: &str,
    ca: &TestCa,
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    let ca_der = rustls::pki_types::CertificateDer::from_pem_slice(ca.pem.as_bytes()).unwrap();
    roots.add(ca_der).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let addr = base.trim_start_matches("https://");
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect("127.0.0.1".try_into().unwrap(), tcp)
        .await
        .unwrap()
}

use rustls::pki_types::pem::PemObject as _;

/// The leaf certificate a raw TLS connection was given.
fn presented(s: &tokio_rustls::client::TlsStream<tokio::net::TcpStream>) -> Vec<u8> {
    s.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// One HTTP/1.1 `GET` on an open connection (kept alive); the status and body.
pub(crate) async fn get_on<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut S,
    path: &str,
) -> (u16, String) {
    conn.write_all(format!("GET {path} HTTP/1.1\r\nHost: keygate\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = conn.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed mid-response");
        buf.extend_from_slice(&chunk[..n]);
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(0, |v| v.trim().parse().unwrap());
        if buf.len() >= end + 4 + length {
            let status = head[9..12].parse().unwrap();
            let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + length]).into_owned();
            return (status, body);
        }
    }
}

#[tokio::test]
async fn https_serves_http1_and_http2_by_alpn() {
    let ca = TestCa::new();
    let pair = ca.server_cert("keygate A");
    let s = https_server(&pair, "").await;
    assert!(s.base.starts_with("https://127.0.0.1:"), "{}", s.base);

    for (client, version) in [
        (
            ca.client().http1_only().build().unwrap(),
            reqwest::Version::HTTP_11,
        ),
        (ca.client().build().unwrap(), reqwest::Version::HTTP_2),
    ] {
        let r = client
            .post(s.url("/login"))
            .header("X-API-Key", &s.billing_key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.version(), version);
        assert_eq!(r.status(), 200);
        let token = r.json::<serde_json::Value>().await.unwrap()["access_token"]
            .as_str()
            .unwrap()
            .to_owned();
        let r = client
            .get(s.url("/verify"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!((r.version(), r.status().as_u16()), (version, 200));
    }

    // ALPN as negotiated: h2 first, http/1.1 for clients that offer only that.
    let h2 = raw_tls(&s.base, &ca, &[b"h2", b"http/1.1"]).await;
    assert_eq!(h2.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let mut h1 = raw_tls(&s.base, &ca, &[b"http/1.1"]).await;
    assert_eq!(h1.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert_eq!(get_on(&mut h1, "/healthz").await.0, 200);

    // public_url was left unset: it defaults to https://<listen>, so the issuer is https.
    let meta = ca
        .client()
        .build()
        .unwrap()
        .get(s.url("/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap();
    assert_eq!(
        meta["issuer"], "https://keygate.test",
        "the test sets token.issuer"
    );
    assert_eq!(meta["token_endpoint"], "https://127.0.0.1:0/token");
}

#[tokio::test]
async fn plain_http_speaks_http2_with_prior_knowledge() {
    let s = TestServer::start().await;
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let r = client.get(s.url("/healthz")).send().await.unwrap();
    assert_eq!(
        (r.version(), r.status().as_u16()),
        (reqwest::Version::HTTP_2, 200)
    );
}

#[tokio::test]
async fn rotated_certificates_are_served_without_a_restart_or_a_dropped_connection() {
    let ca = TestCa::new();
    let old = ca.server_cert("keygate old");
    let new = ca.server_cert("keygate new");
    // Long enough that the kept connection is not closed as idle during the test.
    let s = https_server(&old, "header_timeout = \"60s\"\n").await;

    let mut kept = raw_tls(&s.base, &ca, &[b"http/1.1"]).await;
    assert_eq!(presented(&kept), old.der);
    assert_eq!(get_on(&mut kept, "/healthz").await.0, 200);
    let mut kept_h2 = ca.client().pool_idle_timeout(None).build().unwrap();
    let r = kept_h2.get(s.url("/healthz")).send().await.unwrap();
    assert_eq!(
        (r.version(), r.status().as_u16()),
        (reqwest::Version::HTTP_2, 200)
    );

    new.install(s.dir());
    let rotated = Instant::now();
    loop {
        let fresh = raw_tls(&s.base, &ca, &[b"http/1.1"]).await;
        if presented(&fresh) == new.der {
            break;
        }
        assert!(
            rotated.elapsed() < Duration::from_secs(10),
            "the new certificate was not served within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("new certificate served after {:?}", rotated.elapsed());

    // The connections opened before the rotation are still served.
    assert_eq!(
        get_on(&mut kept, "/healthz").await,
        (200, "{\"status\":\"ok\"}".to_owned())
    );
    assert_eq!(presented(&kept), old.der);
    let r = kept_h2.get(s.url("/readyz")).send().await.unwrap();
    assert_eq!(
        (r.version(), r.status().as_u16()),
        (reqwest::Version::HTTP_2, 200)
    );
    kept_h2 = ca.client().build().unwrap();
    assert_eq!(
        kept_h2
            .get(s.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // A key that does not match its certificate is refused; the good pair keeps serving.
    let other = ca.server_cert("keygate other");
    TestCert {
        cert_pem: other.cert_pem.clone(),
        key_pem: old.key_pem.clone(),
        der: other.der.clone(),
    }
    .install(s.dir());
    s.wait_for_refusals(&ca, 1).await;
    let fresh = raw_tls(&s.base, &ca, &[b"http/1.1"]).await;
    assert_eq!(presented(&fresh), new.der, "the refused pair is not served");
    // A file that is not PEM at all: refused too.
    std::fs::write(s.dir().join("tls/cert.pem"), "not a certificate").unwrap();
    s.wait_for_refusals(&ca, 2).await;
    let mut fresh = raw_tls(&s.base, &ca, &[b"http/1.1"]).await;
    assert_eq!(presented(&fresh), new.der);
    assert_eq!(get_on(&mut fresh, "/healthz").await.0, 200);
}

impl TestServer {
    /// Waits (10 s at most) until `n` certificate pairs have been refused.
    async fn wait_for_refusals(&self, ca: &TestCa, n: u32) {
        let start = Instant::now();
        loop {
            let metrics = self.text_via(ca, "/metrics").await;
            let refused = metrics
                .lines()
                .find_map(|l| l.strip_prefix("keygate_tls_reloads_total{result=\"refused\"} "))
                .map_or(0, |v| v.trim().parse().unwrap());
            if refused >= n {
                return;
            }
            assert!(start.elapsed() < Duration::from_secs(10), "{metrics}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `GET path` over HTTPS trusting `ca`.
    async fn text_via(&self, ca: &TestCa, path: &str) -> String {
        let r = ca
            .client()
            .build()
            .unwrap()
            .get(self.url(path))
            .send()
            .await
            .unwrap();
        r.text().await.unwrap()
    }
}

#[tokio::test]
async fn metrics_listen_stays_plain_http_when_tls_is_on() {
    let ca = TestCa::new();
    let pair = ca.server_cert("keygate");
    let s = https_server(&pair, "metrics_listen = \"127.0.0.1:0\"\n").await;
    let metrics = s.metrics_url.clone().unwrap();
    assert!(metrics.starts_with("http://127.0.0.1:"), "{metrics}");
    let login = ca
        .client()
        .build()
        .unwrap()
        .post(s.url("/login"))
        .header("X-API-Key", &s.billing_key)
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);
    let r = reqwest::get(&metrics).await.unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(
        text.contains("keygate_tokens_issued_total{grant=\"api_key\"}"),
        "{text}"
    );
    let body = s.text_via(&ca, "/metrics").await;
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["error"],
        "not_found"
    );
}

#[tokio::test]
async fn shutdown_lets_in_flight_https_requests_finish() {
    let ca = TestCa::new();
    let pair = ca.server_cert("keygate");
    let s = https_server(&pair, "").await;
    let mut conn = raw_tls(&s.base, &ca, &[b"http/1.1"]).await;
    let body =
        "grant_type=client_credentials&client_id=legacy&client_secret=seed-style-hand-made-api-key";
    let head = format!(
        "POST /token HTTP/1.1\r\nHost: keygate\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n{}",
        body.len(),
        &body[..10]
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.flush().await.unwrap();
    expect_continue(&mut conn).await;
    // An idle HTTPS connection does not hold the shutdown up.
    let mut idle = raw_tls(&s.base, &ca, &[b"http/1.1"]).await;
    assert_eq!(get_on(&mut idle, "/healthz").await.0, 200);
    let state = s.state.clone();
    let mut stopping = tokio::spawn(s.stop());
    wait_draining(&state).await;
    // Real time must pass to show that something does not happen: serve, draining, has
    // not returned 200 ms later.
    let returned = tokio::time::timeout(Duration::from_millis(200), &mut stopping).await;
    assert!(returned.is_err(), "serve waits for the in-flight request");
    conn.write_all(&body.as_bytes()[10..]).await.unwrap();
    conn.flush().await.unwrap();
    let mut response = Vec::new();
    let _ = conn.read_to_end(&mut response).await;
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    tokio::time::timeout(Duration::from_secs(3), stopping)
        .await
        .expect("serve returns once the request is done")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn bad_tls_settings_are_start_up_errors_naming_the_setting() {
    let ca = TestCa::new();
    let a = ca.server_cert("a");
    let b = ca.server_cert("b");
    let key = api_key::generate("billing").unwrap();
    let cases: Vec<(String, Option<TestCert>, &str)> = vec![
        (
            "tls_cert = \"tls/cert.pem\"\n".to_owned(),
            None,
            "server.tls_key: is required with server.tls_cert (both or neither)",
        ),
        (
            "tls_key = \"tls/key.pem\"\n".to_owned(),
            None,
            "server.tls_cert: is required with server.tls_key (both or neither)",
        ),
        (
            TLS_SETTINGS.to_owned(),
            None,
            "server.tls_cert: cannot read ",
        ),
        (
            TLS_SETTINGS.to_owned(),
            Some(TestCert {
                cert_pem: a.cert_pem.clone(),
                key_pem: b.key_pem.clone(),
                der: Vec::new(),
            }),
            "server.tls_key: ",
        ),
        (
            TLS_SETTINGS.to_owned(),
            Some(TestCert {
                cert_pem: a.key_pem.clone(),
                key_pem: a.key_pem.clone(),
                der: Vec::new(),
            }),
            "server.tls_cert: ",
        ),
    ];
    for (lines, files, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        if let Some(f) = &files {
            f.install(dir.path());
        }
        let path = dir.path().join("keygate.toml");
        std::fs::write(&path, config_with_server(&key, &lines, "")).unwrap();
        let err = match keygate_server::AppState::from_path(path) {
            Err(e) => e,
            Ok(state) => keygate_server::Listeners::bind(&state.runtime())
                .await
                .unwrap_err(),
        };
        let err = err.to_string();
        let err = err.split_once(": ").map_or(err.as_str(), |(file, rest)| {
            if file.ends_with("keygate.toml") {
                rest
            } else {
                err.as_str()
            }
        });
        assert!(err.starts_with(expected), "{lines}: {err}");
        assert!(!err.contains('\n'), "one line: {err}");
    }
}
