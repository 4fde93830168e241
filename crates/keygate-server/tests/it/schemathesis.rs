//! The published OpenAPI document against the running server: openapi-spec-validator
//! checks the document, then schemathesis generates requests from it (deterministically)
//! and checks that no response is a server error and that every status code, content
//! type, header and body is one the document declares, and that protected operations
//! refuse requests without credentials.
//!
//! Not run: schemathesis' `positive_data_acceptance` and `negative_data_rejection`, which
//! expect schema-valid data to be accepted — keygate is deliberately stricter than any
//! schema can say (two client-authentication methods at once are refused, RFC 6749 §2.3;
//! a key must exist). Those refusals are asserted by the other test files.

use std::process::Command;

use crate::util::*;

#[tokio::test]
async fn every_generated_request_gets_a_documented_answer_and_never_a_5xx() {
    let st = venv_program("st");
    let python = venv_program("python");
    let s = TestServer::start().await;
    // Generated requests fail a lot; the attempt limits would turn them all into 429s.
    s.lift_attempt_limit();
    let token = s.token().await;

    let doc = s.text("/openapi.json").await;
    let validate = Command::new(&python)
        .args([
            "-c",
            "import json, sys; from openapi_spec_validator import validate; validate(json.load(sys.stdin)); print('valid')",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = {
        use std::io::Write;
        let mut child = validate;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(doc.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    assert!(
        out.status.success(),
        "the OpenAPI document is invalid: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let url = s.url("/openapi.json");
    let billing_key = s.billing_key.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(st)
            .args(["run", &url])
            .args([
                "--max-examples",
                "60",
                "--generation-deterministic",
                "--workers",
                "1",
            ])
            .args([
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance,\
                 response_schema_conformance,response_headers_conformance,ignored_auth",
            ])
            .args(["-H", &format!("X-API-Key: {billing_key}")])
            .args(["-H", &format!("Authorization: Bearer {token}")])
            .env("NO_COLOR", "1")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found failures ({}):\n{report}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let generated: u32 = report
        .lines()
        .find_map(|l| l.trim().split_once(" generated,")?.0.parse().ok())
        .unwrap_or(0);
    assert!(generated >= 100, "too few cases generated: {report}");
}
