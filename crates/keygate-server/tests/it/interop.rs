//! Interop with clients nobody here wrote: PyJWT (with `PyJWKClient`), python-jose and
//! joserfc verify keygate tokens of every algorithm; authlib's OAuth2 client runs the
//! client_credentials and password grants, introspection and revocation, finding the
//! endpoints through the discovery document.
//!
//! The Python tools live in a virtualenv that `.ci/run` creates (see `util::venv_program`).

use std::path::PathBuf;
use std::process::Command;

use crate::util::*;
use keygate::api_key::KeyHash;
use serde_json::json;

/// A client secret with the characters HTTP Basic must form-encode (RFC 6749 §2.3.1).
const AWKWARD_SECRET: &str = "s3cret:with%odd+chars and spaces";

fn python() -> PathBuf {
    venv_program("python")
}

fn run_clients(python: &PathBuf, config: &serde_json::Value) -> String {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop/clients.py");
    let out = Command::new(python)
        .arg(script)
        .arg(config.to_string())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "python clients failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Points `server.public_url` at the real address, so discovery documents are usable.
fn publish_real_url(s: &TestServer) {
    let text = std::fs::read_to_string(&s.config_path).unwrap().replacen(
        "public_url = \"https://keygate.test\"",
        &format!("public_url = \"{}\"", s.base),
        1,
    );
    s.rewrite_config(&text).unwrap();
}

#[tokio::test]
async fn python_jwt_libraries_verify_tokens_of_every_algorithm() {
    let python = python();
    for alg in ["HS256", "ES256", "EdDSA", "RS256"] {
        let s = if alg == "HS256" {
            TestServer::start().await
        } else {
            TestServer::signing_with(alg).await
        };
        publish_real_url(&s);
        let token = s.token().await;
        let config = json!({
            "check": "verify", "base": s.base, "token": token, "alg": alg, "sub": "billing",
            "issuer": ISSUER, "audience": "orders-api", "secret": SECRET,
        });
        let python = python.clone();
        let out = tokio::task::spawn_blocking(move || run_clients(&python, &config))
            .await
            .unwrap();
        assert!(out.contains(&format!("pyjwt {alg}: ok")), "{out}");
        assert!(out.contains(&format!("joserfc {alg}: ok")), "{out}");
        if alg != "EdDSA" {
            assert!(out.contains(&format!("python-jose {alg}: ok")), "{out}");
        }
    }
}

#[tokio::test]
async fn authlib_runs_both_grants_introspection_and_revocation() {
    let python = python();
    let billing_key = keygate::api_key::generate("billing").unwrap();
    let extra = format!(
        "[[clients]]\nid = \"awkward:client\"\nkey_hash = \"{}\"\nrole = \"service\"\nscopes = [\"orders:read\", \"orders:write\"]\n",
        KeyHash::sha256_of(AWKWARD_SECRET)
    );
    let text = config_text(&billing_key, user_hash(), &extra);
    // The id has a `:`, which Basic must encode; ids allow only safe characters, so
    // this one is written as `awkward.client` and sent form-encoded by authlib.
    let text = text.replace("awkward:client", "awkward.client");
    let s = TestServer::with_config(text, billing_key).await;
    publish_real_url(&s);
    let config = json!({
        "check": "oauth", "base": s.base,
        "client_id": "awkward.client", "client_secret": AWKWARD_SECRET, "scope": "orders:read",
        "username": "alice", "password": USER_PASSWORD,
    });
    let out = tokio::task::spawn_blocking(move || run_clients(&python, &config))
        .await
        .unwrap();
    for line in [
        "authlib client_credentials client_secret_basic: ok",
        "authlib client_credentials client_secret_post: ok",
        "authlib wrong secret: invalid_client",
        "authlib password grant: ok",
        "authlib introspect + revoke: ok",
    ] {
        assert!(out.contains(line), "missing `{line}` in\n{out}");
    }
}
