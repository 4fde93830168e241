//! `/openapi.json` and Swagger UI.

use crate::util::*;
use serde_json::{Value, json};

#[tokio::test]
async fn openapi_json_describes_the_running_configuration() {
    let s = TestServer::with_extra("[api_key]\nheader = \"access_token\"\ncookie = \"api_key\"\n")
        .await;
    let r = s.http.get(s.url("/openapi.json")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let doc: Value = r.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(
        schemes["api_key_header"],
        json!({"type": "apiKey", "in": "header", "name": "access_token", "description": "An API key (`kg_…`), for `/login`"})
    );
    assert_eq!(schemes["api_key_cookie"]["name"], "api_key");
    assert_eq!(
        schemes["oauth2"]["flows"]["password"]["scopes"],
        json!({"orders:read": "", "orders:write": ""})
    );
    assert_eq!(
        doc["paths"]["/login"]["post"]["security"],
        json!([{"api_key_header": []}, {"api_key_cookie": []}])
    );
}

#[tokio::test]
async fn swagger_ui_is_served_from_the_binary() {
    let s = TestServer::start().await;
    let r = s.http.get(s.url("/docs/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    assert!(html.contains("<div id=\"swagger-ui\"></div>"), "{html}");
    assert!(!html.contains("https://"), "no asset comes from a CDN");
    for asset in [
        "swagger-ui-bundle.js",
        "swagger-ui.css",
        "swagger-initializer.js",
    ] {
        let r = s
            .http
            .get(s.url(&format!("/docs/{asset}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{asset}");
        let body = r.text().await.unwrap();
        assert!(body.len() > 100, "{asset}");
        if asset == "swagger-initializer.js" {
            assert!(
                body.contains("/openapi.json"),
                "the UI reads keygate's document: {body}"
            );
        }
    }
}
