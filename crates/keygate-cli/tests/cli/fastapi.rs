//! `examples/fastapi`: the seed's blog API and httpx client, run as their readers would, on
//! real uvicorn against a real `keygate serve`, with HS256 (shared secret) and ES256
//! (public keys from the JWKS through PyJWT's `PyJWKClient`).
//!
//! Needs the project's `.venv` (`.ci/run` makes it). Without it this test fails, naming
//! the command that makes it: it never passes without having run.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use super::{Server, http, init, keygate, serve_with, stderr, stdout};

const VENV_HELP: &str = "python3 -m venv .venv && .venv/bin/pip install -r crates/keygate-server/tests/interop/requirements.txt";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The venv's python, once it has shown it can import everything the example needs.
fn python() -> PathBuf {
    let python = repo().join(".venv/bin/python");
    let ok = Command::new(&python)
        .args(["-c", "import fastapi, uvicorn, httpx, jwt, cryptography"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "the FastAPI example needs the project's .venv with fastapi, uvicorn, httpx and PyJWT: run `{VENV_HELP}` in the repository"
    );
    python
}

/// `examples/fastapi/app.py` under uvicorn on an ephemeral port; killed on drop.
struct Blog {
    child: Child,
    base: String,
}

impl Drop for Blog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn blog(python: &Path, env: &[(&str, &str)]) -> Blog {
    let mut child = Command::new(python)
        .args([
            "-m",
            "uvicorn",
            "app:app",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
        ])
        .arg("--app-dir")
        .arg(repo().join("examples/fastapi"))
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    let base = loop {
        let Some(Ok(line)) = lines.next() else {
            panic!("uvicorn exited before listening:\n{}", seen.join("\n"));
        };
        // "INFO:     Uvicorn running on http://127.0.0.1:40123 (Press CTRL+C to quit)"
        if let Some(rest) = line.split("Uvicorn running on ").nth(1) {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
        seen.push(line);
    };
    std::thread::spawn(move || lines.all(|l| l.is_ok()));
    Blog { child, base }
}

/// `keygate.toml`'s `token.secret`, as the service's operator would copy it.
fn secret(dir: &Path) -> String {
    let text = std::fs::read_to_string(dir.join("keygate.toml")).unwrap();
    let config: toml::Value = toml::from_str(&text).unwrap();
    config["token"]["secret"].as_str().unwrap().to_owned()
}

/// A token from `/login`, the key in the seed's `access_token` header.
fn login_token(kg: &Server, key: &str) -> String {
    let r = http()
        .post(format!("{}/login", kg.base))
        .header("access_token", key)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json::<Value>().unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// `GET /posts` with an optional bearer token: status, `WWW-Authenticate`, JSON body.
fn posts(blog: &Blog, token: Option<&str>) -> (u16, Option<String>, Value) {
    let mut req = http().get(format!("{}/posts", blog.base));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().unwrap();
    let challenge = r
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    (r.status().as_u16(), challenge, r.json().unwrap())
}

fn expect_refused(blog: &Blog, token: Option<&str>, detail: &str, what: &str) {
    assert_eq!(
        posts(blog, token),
        (401, Some("Bearer".to_owned()), json!({ "detail": detail })),
        "{what}"
    );
}

fn welcome(sub: &str) -> Value {
    json!({
        "reader": sub,
        "role": "service",
        "posts": [{"id": 1, "title": "FastAPI 간단한 Auth 구현 방법"}],
    })
}

/// The seed's httpx client: `/login` with the key, then `GET url` with the bearer token.
fn client(python: &Path, kg: &Server, key: &str, url: &str) -> std::process::Output {
    Command::new(python)
        .arg(repo().join("examples/fastapi/client.py"))
        .arg(url)
        .env("KEYGATE_URL", &kg.base)
        .env("KEYGATE_API_KEY", key)
        .env("KEYGATE_API_KEY_HEADER", "access_token")
        .output()
        .unwrap()
}

/// A token signed by this keygate's key for `my-service`, living `ttl`, with extra
/// settings (`KEYGATE_TOKEN_ISSUER`) applied.
fn issued(dir: &Path, ttl: &str, env: &[(&str, &str)]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_keygate"))
        .args(["token", "issue", "--sub", "my-service", "--ttl", ttl])
        .current_dir(dir)
        .env_remove("KEYGATE_CONFIG")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    stdout(&out).trim().to_owned()
}

/// What both algorithms must show: the seed's answers, exactly.
fn the_seeds_contract_holds(python: &Path, dir: &Path, kg: &Server, blog: &Blog, key: &str) {
    expect_refused(blog, None, "Not authenticated", "no token");

    let token = login_token(kg, key);
    assert_eq!(
        posts(blog, Some(&token)),
        (200, None, welcome("my-service"))
    );

    // The signature's first character carries six whole bits: changing it always breaks it.
    let (signed, signature) = token.rsplit_once('.').unwrap();
    let first = if signature.starts_with('A') { "B" } else { "A" };
    let forged = format!("{signed}.{first}{}", &signature[1..]);
    expect_refused(blog, Some(&forged), "Invalid token", "forged signature");

    let reader = keygate(dir, &["key", "add", "reader", "--role", "reader"]);
    assert_eq!(reader.status.code(), Some(0), "{}", stderr(&reader));
    let reader_key = stdout(&reader).trim().to_owned();
    super::eventually("keygate serves the new client", || {
        http()
            .post(format!("{}/login", kg.base))
            .header("access_token", &reader_key)
            .send()
            .unwrap()
            .status()
            == 200
    });
    let reader_token = login_token(kg, &reader_key);
    expect_refused(
        blog,
        Some(&reader_token),
        "Invalid token",
        "a role the API does not serve",
    );

    let elsewhere = issued(
        dir,
        "5m",
        &[("KEYGATE_TOKEN_ISSUER", "https://elsewhere.example")],
    );
    expect_refused(blog, Some(&elsewhere), "Invalid token", "another issuer");

    // Accepted while it lives (so `issued` tokens are good, and the issuer above was the
    // only fault), refused once it has expired.
    let short = issued(dir, "3s", &[]);
    assert_eq!(
        posts(blog, Some(&short)),
        (200, None, welcome("my-service"))
    );
    let exp = serde_json::from_str::<Value>(&stdout(&keygate(dir, &["token", "decode", &short])))
        .unwrap()["claims"]["exp"]
        .as_u64()
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    // PyJWT allows no leeway unless told to: one second past `exp` is expired. Real time
    // must pass: PyJWT reads the clock of the example's own process.
    std::thread::sleep(Duration::from_secs_f64((exp as f64 + 1.1 - now).max(0.0)));
    expect_refused(blog, Some(&short), "Invalid token", "expired");

    let url = format!("{}/posts", blog.base);
    let ok = client(python, kg, key, &url);
    assert_eq!(ok.status.code(), Some(0), "{}", stderr(&ok));
    let body: Value = serde_json::from_str(&stdout(&ok)).unwrap();
    assert_eq!(body, welcome("my-service"));

    let refused = client(python, kg, "kg_my-service_wrong", &url);
    assert_eq!(refused.status.code(), Some(1));
    let line = stderr(&refused);
    assert_eq!(line.lines().count(), 1, "{line}");
    let expected = format!(
        "POST {}/login: 401 {{\"error\":\"invalid_client\",",
        kg.base
    );
    assert!(line.starts_with(&expected), "{line}");
}

#[test]
fn fastapi_blog_trusts_hs256_tokens_with_the_shared_secret() {
    let python = python();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let key = init(d);
    let server = serve_with(
        d,
        "warn",
        Stdio::null(),
        &[("KEYGATE_API_KEY_HEADER", "access_token")],
    );
    let secret = secret(d);
    // keygate's issuer is its public_url, not the ephemeral address it listens on.
    let blog = blog(
        &python,
        &[
            ("KEYGATE_URL", &server.base),
            ("KEYGATE_ISSUER", "http://127.0.0.1:8080"),
            // `keygate init` writes `token.audience = ["<public_url>"]`: RFC 9068 tokens.
            ("KEYGATE_AUDIENCE", "http://127.0.0.1:8080"),
            ("KEYGATE_ALGORITHM", "HS256"),
            ("KEYGATE_SECRET", &secret),
        ],
    );
    the_seeds_contract_holds(&python, d, &server, &blog, &key);
}

#[test]
fn fastapi_blog_trusts_es256_tokens_through_the_jwks_across_a_key_rotation() {
    let python = python();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let key = init(d);
    let first = keygate(d, &["keygen", "--alg", "ES256"]);
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    let text = std::fs::read_to_string(d.join("keygate.toml")).unwrap();
    std::fs::write(
        d.join("keygate.toml"),
        text.replace("algorithm = \"HS256\"", "algorithm = \"ES256\""),
    )
    .unwrap();
    // A short publish delay, still longer than the blog's JWKS cache, as in production
    // (10 min against PyJWKClient's 5 min).
    let server = serve_with(
        d,
        "warn",
        Stdio::null(),
        &[
            ("KEYGATE_API_KEY_HEADER", "access_token"),
            ("KEYGATE_TOKEN_KEY_PUBLISH_DELAY", "3s"),
        ],
    );
    let blog = blog(
        &python,
        &[
            ("KEYGATE_URL", &server.base),
            ("KEYGATE_ISSUER", "http://127.0.0.1:8080"),
            // `keygate init` writes `token.audience = ["<public_url>"]`: RFC 9068 tokens.
            ("KEYGATE_AUDIENCE", "http://127.0.0.1:8080"),
            ("KEYGATE_ALGORITHM", "ES256"),
            ("JWKS_LIFESPAN", "1"),
        ],
    );
    the_seeds_contract_holds(&python, d, &server, &blog, &key);

    // An HS256 token "signed" with anything is refused: the algorithm is pinned.
    let hs = {
        let text = std::fs::read_to_string(d.join("keygate.toml")).unwrap();
        std::fs::write(d.join("hs.toml"), text.replace("\"ES256\"", "\"HS256\"")).unwrap();
        let out = keygate(
            d,
            &[
                "token",
                "issue",
                "--sub",
                "my-service",
                "--config",
                "hs.toml",
            ],
        );
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        stdout(&out).trim().to_owned()
    };
    expect_refused(
        &blog,
        Some(&hs),
        "Invalid token",
        "HS256 against an ES256 API",
    );

    // Rotation: the new key is published at once, signs 3 s later; the blog, which cached
    // the JWKS holding only the first key, verifies the new key's tokens.
    let second = keygate(d, &["keygen", "--alg", "ES256"]);
    assert_eq!(second.status.code(), Some(0), "{}", stderr(&second));
    let kid2 = stdout(&second).trim().to_owned();
    let mut token = String::new();
    super::eventually_within("the new key signs", Duration::from_secs(10), || {
        token = login_token(&server, &key);
        let decoded = keygate(d, &["token", "decode", &token]);
        serde_json::from_str::<Value>(&stdout(&decoded)).unwrap()["header"]["kid"] == kid2.as_str()
    });
    assert_eq!(
        posts(&blog, Some(&token)),
        (200, None, welcome("my-service"))
    );
}
