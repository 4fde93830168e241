//! OpenTelemetry traces end to end: `keygate serve` with `[telemetry]` sends its spans over
//! OTLP/HTTP to a receiver built on the official protobuf definitions
//! (`opentelemetry-proto`), which these tests run. A span joins the trace of the
//! `traceparent` it was sent, carries the route, status and outcome, names only existing
//! principals, and holds no secret; a receiver that never answers costs counted drops,
//! never a slow or failed request.

use std::io::Write as _;
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;

use super::*;

/// The spans a receiver got, with the `service.name` of their resource.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<(String, Span)>>>);

impl Received {
    fn spans(&self) -> Vec<(String, Span)> {
        self.0.lock().unwrap().clone()
    }
}

/// An OTLP/HTTP receiver on 127.0.0.1: `POST /v1/traces` with a protobuf
/// `ExportTraceServiceRequest`. Returns its base URL.
fn receiver() -> (String, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let received = Received::default();
    let into = received.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let app = axum::Router::new().route(
                "/v1/traces",
                axum::routing::post(
                    move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                        let into = into.clone();
                        async move {
                            assert_eq!(headers["content-type"], "application/x-protobuf");
                            let request = ExportTraceServiceRequest::decode(body).unwrap();
                            let mut spans = into.0.lock().unwrap();
                            for resource in request.resource_spans {
                                let service = resource
                                    .resource
                                    .iter()
                                    .flat_map(|r| &r.attributes)
                                    .find(|kv| kv.key == "service.name")
                                    .and_then(|kv| kv.value.as_ref()?.value.clone())
                                    .map(|v| match v {
                                        AnyValue::StringValue(s) => s,
                                        other => format!("{other:?}"),
                                    })
                                    .unwrap_or_default();
                                for scope in resource.scope_spans {
                                    for span in scope.spans {
                                        spans.push((service.clone(), span));
                                    }
                                }
                            }
                            (
                                [("content-type", "application/x-protobuf")],
                                Vec::<u8>::new(),
                            )
                        }
                    },
                ),
            );
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    (url, received)
}

/// A span's attribute as text (strings as they are, integers in decimal).
fn attribute(span: &Span, key: &str) -> Option<String> {
    let value = span
        .attributes
        .iter()
        .find(|kv| kv.key == key)?
        .value
        .as_ref()?;
    match value.value.as_ref()? {
        AnyValue::StringValue(s) => Some(s.clone()),
        AnyValue::IntValue(i) => Some(i.to_string()),
        AnyValue::BoolValue(b) => Some(b.to_string()),
        other => Some(format!("{other:?}")),
    }
}

/// A fresh W3C trace context: (traceparent, trace id bytes, parent span id bytes).
fn trace_context(n: u8) -> (String, Vec<u8>, Vec<u8>) {
    let trace: Vec<u8> = (0..16).map(|i| i * 7 + n).collect();
    let parent: Vec<u8> = (0..8).map(|i| i * 3 + n + 1).collect();
    (
        format!("00-{}-{}-01", hex(&trace), hex(&parent)),
        trace,
        parent,
    )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn with_telemetry(d: &Path, lines: &str) {
    let config = d.join("keygate.toml");
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&config)
        .unwrap();
    write!(file, "\n[telemetry]\n{lines}\n").unwrap();
}

/// Waits (bounded) for the spans of `trace`.
fn spans_of(received: &Received, trace: &[u8], at_least: usize) -> Vec<(String, Span)> {
    let mut found = Vec::new();
    eventually("the spans reach the receiver", || {
        found = received
            .spans()
            .into_iter()
            .filter(|(_, s)| s.trace_id == trace)
            .collect();
        found.len() >= at_least
    });
    found
}

#[test]
fn spans_join_the_callers_trace_with_route_outcome_and_principal_and_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let key = init(d);
    let (url, received) = receiver();
    // sample_ratio 0: only requests whose caller sampled their trace are recorded.
    with_telemetry(
        d,
        &format!("otlp_endpoint = \"{url}\"\nservice_name = \"auth-edge\"\nsample_ratio = 0.0"),
    );
    let server = serve(d);
    let base = server.base.clone();
    let client = http();

    let (login_ctx, login_trace, login_parent) = trace_context(1);
    let r = client
        .post(format!("{base}/login"))
        .header("X-API-Key", &key)
        .header("traceparent", &login_ctx)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let token = r.json::<Value>().unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();

    let (verify_ctx, verify_trace, _) = trace_context(2);
    let r = client
        .get(format!("{base}/verify"))
        .bearer_auth(&token)
        .header("traceparent", &verify_ctx)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);

    // A refused key that claims a client id: the id names nobody, so it is not recorded.
    let (refused_ctx, refused_trace, _) = trace_context(3);
    let wrong = "kg_nobody_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let r = client
        .post(format!("{base}/login"))
        .header("X-API-Key", wrong)
        .header("traceparent", &refused_ctx)
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);

    // No traceparent and a sample ratio of 0: not recorded.
    let r = client.get(format!("{base}/healthz")).send().unwrap();
    assert_eq!(r.status(), 200);
    // A caller that did not sample its trace (flags 00): not recorded either.
    let (unsampled, _, _) = trace_context(4);
    let r = client
        .get(format!("{base}/verify"))
        .bearer_auth(&token)
        .header("traceparent", unsampled.replace("-01", "-00"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);

    let (service, login) = spans_of(&received, &login_trace, 1).remove(0);
    assert_eq!(service, "auth-edge");
    assert_eq!(login.name, "POST /login");
    assert_eq!(
        login.parent_span_id, login_parent,
        "a child of the caller's span"
    );
    assert_eq!(login.kind, 2, "SPAN_KIND_SERVER");
    assert_eq!(
        attribute(&login, "http.request.method").as_deref(),
        Some("POST")
    );
    assert_eq!(attribute(&login, "http.route").as_deref(), Some("/login"));
    assert_eq!(
        attribute(&login, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(
        attribute(&login, "keygate.outcome").as_deref(),
        Some("issued")
    );
    assert_eq!(
        attribute(&login, "keygate.grant").as_deref(),
        Some("api_key")
    );
    assert_eq!(
        attribute(&login, "keygate.client_id").as_deref(),
        Some("my-service")
    );

    let (_, verify) = spans_of(&received, &verify_trace, 1).remove(0);
    assert_eq!(verify.name, "GET /verify");
    assert_eq!(
        attribute(&verify, "keygate.outcome").as_deref(),
        Some("verified")
    );
    assert_eq!(
        attribute(&verify, "keygate.client_id").as_deref(),
        Some("my-service")
    );

    let (_, refused) = spans_of(&received, &refused_trace, 1).remove(0);
    assert_eq!(refused.name, "POST /login");
    assert_eq!(
        attribute(&refused, "keygate.outcome").as_deref(),
        Some("refused")
    );
    assert_eq!(
        attribute(&refused, "keygate.refusal").as_deref(),
        Some("invalid_client")
    );
    assert_eq!(attribute(&refused, "keygate.client_id"), None);
    assert_eq!(
        attribute(&refused, "http.response.status_code").as_deref(),
        Some("401")
    );

    // Everything received: only the three sampled traces, and no secret anywhere.
    let all = received.spans();
    let text = format!("{all:?}");
    let secret = std::fs::read_to_string(d.join("keygate.toml"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("secret = \""))
        .unwrap()
        .trim_end_matches('"')
        .to_owned();
    for canary in [key.as_str(), token.as_str(), wrong, secret.as_str()] {
        assert!(!text.contains(canary), "a secret in a span: {canary}");
    }
    for (_, span) in &all {
        assert!(
            [login_trace.as_slice(), &verify_trace, &refused_trace]
                .contains(&span.trace_id.as_slice()),
            "an unsampled request was recorded: {span:?}"
        );
    }
    drop(server);
}

#[test]
fn a_receiver_that_never_answers_costs_counted_drops_not_slow_requests() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let key = init(d);
    // Accepts connections and never reads or answers them.
    let stalled = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", stalled.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in stalled.incoming().flatten() {
            held.push(conn);
        }
    });
    with_telemetry(d, &format!("otlp_endpoint = \"{url}\"\nsample_ratio = 1.0"));
    let server = serve(d);
    let base = server.base.clone();
    let token = login(&base, &key).json::<Value>().unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    // More spans than the exporter's queue holds, while it waits on the receiver.
    verify_from_four_threads(&base, &token, 1500, "while the receiver stalls");
    eventually("the dropped spans are counted", || {
        http()
            .get(format!("{base}/metrics"))
            .send()
            .unwrap()
            .text()
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("keygate_trace_spans_dropped_total "))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .is_some_and(|n| n > 0)
    });
    drop(server);
}

/// nginx in front of an API with `auth_request` to keygate's `/verify`, the trace context
/// passed on as the README shows.
fn start_nginx(dir: &Path, port: u16, keygate: &str, upstream: &str) -> std::process::Child {
    let bin = ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .iter()
        .map(std::path::PathBuf::from)
        .find(|p| p.exists())
        .expect("this test needs nginx: run the tests with `cargo xtask test` (as root it installs it; else: sudo apt-get install nginx)");
    let conf = format!(
        r#"daemon off;
master_process off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location = /_auth {{
            internal;
            proxy_pass {keygate}/verify;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header traceparent $http_traceparent;
            proxy_set_header tracestate $http_tracestate;
        }}
        location /orders/ {{
            auth_request /_auth;
            proxy_pass {upstream};
        }}
    }}
}}
"#,
        dir = dir.display()
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).unwrap();
    Command::new(bin)
        .arg("-c")
        .arg(&path)
        .arg("-p")
        .arg(dir)
        .arg("-e")
        .arg(dir.join("error.log"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn behind_nginx_auth_request_verify_joins_the_trace_the_client_started() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let key = init(d);
    let (url, received) = receiver();
    with_telemetry(d, &format!("otlp_endpoint = \"{url}\"\nsample_ratio = 0.0"));
    let server = serve(d);
    // The API behind nginx: a plain answer.
    let api = TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream = format!("http://{}", api.local_addr().unwrap());
    std::thread::spawn(move || {
        use std::io::Read as _;
        for mut conn in api.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let _ = conn
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        }
    });
    let nginx_dir = tempfile::tempdir().unwrap();
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut nginx = start_nginx(nginx_dir.path(), port, &server.base, &upstream);
    let front = format!("http://127.0.0.1:{port}/orders/42");
    eventually("nginx answers", || http().get(&front).send().is_ok());

    let token = login(&server.base, &key).json::<Value>().unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let (ctx, trace, parent) = trace_context(9);
    let r = http()
        .get(&front)
        .bearer_auth(&token)
        .header("traceparent", &ctx)
        .header("tracestate", "vendor=opaque")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().unwrap(), "ok");

    let (_, verify) = spans_of(&received, &trace, 1).remove(0);
    assert_eq!(verify.name, "GET /verify");
    assert_eq!(
        verify.parent_span_id, parent,
        "the client's span is the parent"
    );
    assert_eq!(verify.trace_state, "vendor=opaque");
    assert_eq!(
        attribute(&verify, "keygate.outcome").as_deref(),
        Some("verified")
    );
    let _ = nginx.kill();
    let _ = nginx.wait();
    drop(server);
}

#[test]
fn store_calls_are_child_spans_of_the_request() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let redis = super::store::Redis::start(&[]);
    let key = super::store::init_with_store(d, &redis);
    let (url, received) = receiver();
    with_telemetry(d, &format!("otlp_endpoint = \"{url}\"\nsample_ratio = 0.0"));
    let server = serve(d);
    let token = login(&server.base, &key).json::<Value>().unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    // A logout writes the revocation to the store: one store call at least.
    let (ctx, trace, _) = trace_context(5);
    let r = http()
        .post(format!("{}/logout", server.base))
        .bearer_auth(&token)
        .header("traceparent", &ctx)
        .send()
        .unwrap();
    assert_eq!(r.status(), 204);
    let spans = spans_of(&received, &trace, 2);
    let logout = spans
        .iter()
        .map(|(_, s)| s)
        .find(|s| s.name == "POST /logout")
        .expect("the request span");
    assert_eq!(
        attribute(logout, "keygate.outcome").as_deref(),
        Some("revoked")
    );
    let store: Vec<&Span> = spans
        .iter()
        .map(|(_, s)| s)
        .filter(|s| s.name == "redis")
        .collect();
    assert!(!store.is_empty(), "{spans:?}");
    for s in store {
        assert_eq!(s.parent_span_id, logout.span_id, "a child of the request");
        assert_eq!(s.kind, 3, "SPAN_KIND_CLIENT");
        assert_eq!(attribute(s, "db.system.name").as_deref(), Some("redis"));
    }
    drop(server);
}

/// Admin API calls reach the directory's database as child spans of the request, named
/// after the engine; a `/login` served from the replica's copy makes none.
#[test]
fn directory_calls_are_child_spans_of_the_admin_request() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    init(d);
    let ops = add_operator(d);
    let (url, received) = receiver();
    with_telemetry(d, &format!("otlp_endpoint = \"{url}\"\nsample_ratio = 0.0"));
    let config = d.join("keygate.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("\n[directory]\nurl = \"sqlite://keygate.db\"\n");
    std::fs::write(&config, text).unwrap();
    let server = serve(d);
    let token = login(&server.base, &ops).json::<Value>().unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let (ctx, trace, _) = trace_context(9);
    let r = http()
        .post(format!("{}/admin/v1/clients", server.base))
        .bearer_auth(&token)
        .header("traceparent", &ctx)
        .json(&serde_json::json!({"id": "traced", "role": "service"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    let key = r.json::<Value>().unwrap()["api_key"]
        .as_str()
        .unwrap()
        .to_owned();
    let spans = spans_of(&received, &trace, 2);
    let request = spans
        .iter()
        .map(|(_, s)| s)
        .find(|s| s.name.starts_with("POST /admin/v1/"))
        .unwrap_or_else(|| {
            panic!(
                "the request span: {:?}",
                spans.iter().map(|(_, s)| &s.name).collect::<Vec<_>>()
            )
        });
    let database: Vec<&Span> = spans
        .iter()
        .map(|(_, s)| s)
        .filter(|s| s.name == "sqlite")
        .collect();
    assert!(!database.is_empty(), "{spans:?}");
    for s in database {
        assert_eq!(s.parent_span_id, request.span_id, "a child of the request");
        assert_eq!(s.kind, 3, "SPAN_KIND_CLIENT");
        assert_eq!(attribute(s, "db.system.name").as_deref(), Some("sqlite"));
    }
    let (ctx, trace, _) = trace_context(10);
    let r = http()
        .post(format!("{}/login", server.base))
        .header("X-API-Key", &key)
        .header("traceparent", &ctx)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let spans = spans_of(&received, &trace, 1);
    assert!(
        spans.iter().all(|(_, s)| s.name != "sqlite"),
        "a login never waits on the database: {spans:?}"
    );
    drop(server);
}
