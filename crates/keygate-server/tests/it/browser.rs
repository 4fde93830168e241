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

#[tokio::test]
async fn swagger_ui_authorize_button_logs_in_with_the_password_flow() {
    require_browser();
    let python = venv_program("python");
    let s = TestServer::start().await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/swagger_ui.py");
    let base = s.base.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .args([&base, "alice", USER_PASSWORD])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("authorize: ok"), "{stdout}");
    assert!(stdout.contains("try it out /userinfo: 200"), "{stdout}");
}
