//! The strictest JavaScript clients against a real keygate, once per signing algorithm:
//! `tests/node/` (a `node --test` suite: oauth4webapi's discovery, both client
//! authentication methods, the password grant, RFC 9068 `validateJwtAccessToken`,
//! introspection, revocation and userinfo; openid-client; jose's `jwtVerify` with
//! `createRemoteJWKSet`), and `examples/express` (an API trusting keygate through the
//! JWKS) run on Node as its readers would run it.
//!
//! Needs Node.js and the suite's packages (`npm ci` in `tests/node` and
//! `examples/express`, which `cargo xtask test` runs). Without them this test fails,
//! naming what to run: it never passes without having run.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::util::*;
use keygate::api_key::KeyHash;

/// A client whose id and secret HTTP Basic must percent-encode (RFC 6749 §2.3.1).
const ODD_CLIENT: &str = "ops@example.com";
const ODD_SECRET: &str = "s3cret:with%odd+chars and spaces";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `node`, and the packages of `folder`, or a failure naming what to run.
fn node_with_packages(folder: &str) -> PathBuf {
    let node = std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join("node"))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| {
            panic!("this test needs Node.js 20.19 or later on PATH: install it (https://nodejs.org/en/download, or `apt-get install nodejs npm` where the distribution's is recent enough), then run `cargo xtask test`")
        });
    assert!(
        repo().join(folder).join("node_modules").is_dir(),
        "this test needs the packages of {folder}: run `cargo xtask test`, or `npm ci` in {folder}"
    );
    node
}

/// A keygate signing with `alg`, issuing RFC 9068 tokens as `keygate init` configures it:
/// the issuer and the audience are its public URL, the real address it listens on.
async fn keygate(alg: &str) -> TestServer {
    let billing_key = keygate::api_key::generate("billing").unwrap();
    let extra = format!(
        "[[clients]]\nid = \"{ODD_CLIENT}\"\nkey_hash = \"{}\"\nrole = \"service\"\nscopes = [\"orders:read\"]\n",
        KeyHash::sha256_of(ODD_SECRET)
    );
    let mut text = config_text(&billing_key, user_hash(), &extra);
    if alg != "HS256" {
        text = text.replacen(
            "algorithm = \"HS256\"",
            &format!("algorithm = \"{alg}\"\nsigning_keys = \"keys\"\nkey_publish_delay = \"1h\""),
            1,
        );
    }
    let algorithm = alg.parse().unwrap();
    let s = TestServer::with_setup(text, billing_key, move |dir| {
        if algorithm != keygate::token::SigningAlgorithm::HS256 {
            keygate_server::config::keyring::generate(&dir.join("keys"), algorithm).unwrap();
        }
    })
    .await;
    let text = std::fs::read_to_string(&s.config_path)
        .unwrap()
        .replacen(
            "public_url = \"https://keygate.test\"",
            &format!("public_url = \"{}\"", s.base),
            1,
        )
        .replacen(&format!("issuer = \"{ISSUER}\"\n"), "", 1)
        .replacen(
            "audience = [\"orders-api\"]",
            &format!("audience = [\"{}\"]", s.base),
            1,
        );
    s.rewrite_config(&text).unwrap();
    s
}

/// `examples/express/server.mjs` on an ephemeral port; killed on drop.
struct Express {
    child: Child,
    base: String,
}

impl Drop for Express {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn express(node: &Path, keygate: &str, alg: &str) -> Express {
    let mut child = Command::new(node)
        .arg("server.mjs")
        .current_dir(repo().join("examples/express"))
        .env("KEYGATE_URL", keygate)
        .env("KEYGATE_AUDIENCE", keygate)
        .env("KEYGATE_ALGORITHM", alg)
        .env("PORT", "0")
        .stdout(Stdio::piped())
        // Its log says why each token was refused; the suite asserts the refusals.
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = match lines.next() {
        Some(Ok(line)) => line,
        other => panic!("examples/express exited before listening: {other:?}"),
    };
    // "orders API listening on http://127.0.0.1:40123"
    let base = line
        .split("listening on ")
        .nth(1)
        .unwrap_or_else(|| panic!("unexpected first line from examples/express: {line}"))
        .trim()
        .to_owned();
    std::thread::spawn(move || lines.all(|l| l.is_ok()));
    Express { child, base }
}

/// The one signing key in the server's `keys/` folder.
fn signing_key_file(dir: &Path) -> PathBuf {
    let mut pems: Vec<PathBuf> = std::fs::read_dir(dir.join("keys"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "pem"))
        .collect();
    assert_eq!(pems.len(), 1, "{pems:?}");
    pems.remove(0)
}

/// Runs the suite against `s`; returns its TAP output once every test has passed.
fn run_suite(node: &Path, s_base: &str, alg: &str, env: Vec<(&'static str, String)>) -> String {
    let out = Command::new(node)
        .args(["--test", "--test-reporter=tap", "keygate.test.mjs"])
        .current_dir(repo().join("tests/node"))
        .env("KEYGATE_URL", s_base)
        .env("KEYGATE_ALG", alg)
        .env("KEYGATE_AUDIENCE", s_base)
        .env("KEYGATE_CLIENT_ID", "billing")
        .env("KEYGATE_ODD_CLIENT_ID", ODD_CLIENT)
        .env("KEYGATE_ODD_CLIENT_SECRET", ODD_SECRET)
        .env("KEYGATE_USERNAME", "alice")
        .env("KEYGATE_PASSWORD", USER_PASSWORD)
        .envs(env)
        .output()
        .unwrap();
    let tap = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "node --test failed under {alg}:\n{tap}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    tap
}

#[tokio::test]
async fn oauth4webapi_openid_client_jose_and_the_express_example_accept_keygate() {
    let node = node_with_packages("tests/node");
    node_with_packages("examples/express");
    for alg in ["HS256", "ES256", "EdDSA", "RS256"] {
        let s = keygate(alg).await;
        let base = s.base.clone();
        let mut env = vec![("KEYGATE_CLIENT_SECRET", s.billing_key.clone())];
        let key_file = (alg != "HS256").then(|| signing_key_file(s.dir()));
        let node = node.clone();
        let tap = tokio::task::spawn_blocking(move || {
            let _express = match key_file {
                None => {
                    env.push(("KEYGATE_SECRET", SECRET.to_owned()));
                    None
                }
                Some(key_file) => {
                    let app = express(&node, &base, alg);
                    env.push(("EXPRESS_URL", app.base.clone()));
                    env.push(("KEYGATE_SIGNING_KEY", key_file.display().to_string()));
                    Some(app)
                }
            };
            run_suite(&node, &base, alg, env)
        })
        .await
        .unwrap();
        // Every test of the suite ran and passed: none skipped, none left out.
        let expected = if alg == "HS256" { 9 } else { 11 };
        for line in [
            format!("# tests {expected}"),
            format!("# pass {expected}"),
            "# fail 0".to_owned(),
            "# skipped 0".to_owned(),
            "# todo 0".to_owned(),
        ] {
            assert!(
                tap.lines().any(|l| l == line),
                "{alg}: no `{line}` in\n{tap}"
            );
        }
        if alg != "HS256" {
            assert!(
                tap.contains("ok 11 - examples/express serves a keygate token with the scope"),
                "{tap}"
            );
        }
        s.stop().await.unwrap();
    }
}
