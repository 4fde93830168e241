//! Swagger UI at `/docs` in a real headless Chromium (Debian's `chromium` and
//! `chromium-driver`, driven by Selenium from the test virtualenv): the Authorize button's
//! OAuth2 password flow gets a token from `/token`, and "Try it out" on `GET /userinfo`
//! then answers 200 with the user's claims. The page loads nothing from the network but
//! keygate itself.
//!
//! A missing browser fails the test; `cargo xtask test` installs it.

use std::path::Path;
use std::process::Command;

use crate::util::*;

fn require_browser() {
    system_program(&["/usr/bin/chromium"], "chromium");
    system_program(&["/usr/bin/chromedriver"], "chromium-driver");
}

/// Runs the Selenium script `tests/interop/<script>` with `args` off the async workers;
/// asserts it succeeded and returns what it printed.
async fn drive(python: std::path::PathBuf, script: &str, args: [String; 3]) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/interop")
        .join(script);
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .args(args)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test]
async fn swagger_ui_authorize_button_logs_in_with_the_password_flow() {
    require_browser();
    let python = venv_program("python");
    let s = TestServer::start().await;
    let stdout = drive(
        python,
        "swagger_ui.py",
        [s.base.clone(), "alice".into(), USER_PASSWORD.into()],
    )
    .await;
    assert!(stdout.contains("authorize: ok"), "{stdout}");
    assert!(stdout.contains("try it out /userinfo: 200"), "{stdout}");
}

/// The admin API through Swagger UI: Authorize's client-credentials flow with the scope
/// `keygate:admin` ticked, then "Try it out" on `GET /admin/v1/{collection}` lists the
/// directory's clients.
#[tokio::test]
async fn swagger_ui_authorize_with_client_credentials_calls_the_admin_api() {
    require_browser();
    let python = venv_program("python");
    let db = tempfile::tempdir().unwrap();
    let ops = keygate::api_key::generate("ops").unwrap();
    let billing = keygate::api_key::generate("billing").unwrap();
    let extra = format!(
        "[directory]\nurl = \"sqlite://{}\"\npoll_interval = \"100ms\"\n\n\
         [[clients]]\nid = \"ops\"\nkey_hash = \"{}\"\nrole = \"operator\"\nscopes = [\"keygate:admin\"]\n",
        db.path().join("keygate.db").display(),
        keygate::api_key::KeyHash::sha256_of(&ops)
    );
    let s = TestServer::with_config(config_text(&billing, user_hash(), &extra), billing).await;
    let r = s.login(&ops).await;
    assert_eq!(r.status(), 200);
    let token = r.json::<serde_json::Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = s
        .http
        .post(s.url("/admin/v1/clients"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"id": "created-by-the-test"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let stdout = drive(
        python,
        "swagger_admin.py",
        [s.base.clone(), "ops".into(), ops],
    )
    .await;
    assert!(stdout.contains("authorize: ok"), "{stdout}");
    assert!(
        stdout.contains("try it out /admin/v1/clients: 200"),
        "{stdout}"
    );
}
