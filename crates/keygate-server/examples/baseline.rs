//! A bare axum server answering `GET /verify` with fixed identity headers and no checks:
//! the baseline `bench/http-load.sh` measures keygate's endpoints against.
//!
//! `cargo run --release -p keygate-server --example baseline -- 127.0.0.1:18090`

use axum::Router;
use axum::http::HeaderMap;
use axum::routing::{get, post};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18090".into());
    let app = Router::new()
        .route("/verify", get(verify))
        .route("/login", post(|| async { "{}" }))
        .route("/healthz", get(|| async { "{\"status\":\"ok\"}" }));
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("baseline listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await
}

async fn verify(headers: HeaderMap) -> ([(&'static str, &'static str); 1], &'static str) {
    let _ = headers.get("authorization");
    ([("x-auth-subject", "billing")], "")
}
