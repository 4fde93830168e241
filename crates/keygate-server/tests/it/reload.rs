//! Key rotation and configuration reload.

use std::time::{Duration, Instant};

use crate::util::*;

#[tokio::test]
async fn rotated_key_keeps_working_for_its_grace_and_not_after() {
    let s = TestServer::start().await;
    let old = s.billing_key.clone();
    let new = keygate::api_key::generate("billing").unwrap();
    let text = std::fs::read_to_string(&s.config_path).unwrap();
    let old_hash = keygate::api_key::KeyHash::sha256_of(&old).to_string();
    let new_hash = keygate::api_key::KeyHash::sha256_of(&new).to_string();
    let in_grace = text.replacen(
        &format!("key_hash = \"{old_hash}\""),
        &format!("key_hash = \"{new_hash}\"\nprevious_key_hash = \"{old_hash}\"\nprevious_key_expires_at = \"2999-01-01T00:00:00Z\""),
        1,
    );
    s.rewrite_config(&in_grace).unwrap();
    assert_eq!(s.login(&old).await.status(), 200);
    assert_eq!(s.login(&new).await.status(), 200);
    let after_grace = in_grace.replace("2999-01-01T00:00:00Z", "2020-01-01T00:00:00Z");
    s.rewrite_config(&after_grace).unwrap();
    assert_eq!(s.login(&old).await.status(), 401);
    assert_eq!(s.login(&new).await.status(), 200);
}

#[tokio::test]
async fn a_broken_config_is_refused_and_the_old_one_keeps_serving() {
    let s = TestServer::start().await;
    let good = std::fs::read_to_string(&s.config_path).unwrap();
    for broken in [
        "this is not toml [".to_owned(),
        good.replace(SECRET, "short"),
        good.replace("id = \"legacy\"", "id = \"billing\""),
    ] {
        assert!(s.rewrite_config(&broken).is_err());
        assert_eq!(s.login(&s.billing_key).await.status(), 200);
    }
}

#[tokio::test]
async fn file_changes_are_picked_up_without_a_restart() {
    let s = TestServer::start().await;
    keygate_server::reload::spawn(s.state.clone(), Duration::from_millis(50));
    let token = s.token().await;
    let text = std::fs::read_to_string(&s.config_path).unwrap();
    // Remove the client: its key and the tokens it holds stop working.
    let start = text.find("[[clients]]\nid = \"billing\"").unwrap();
    let end = text.find("[[clients]]\nid = \"legacy\"").unwrap();
    let without = format!("{}{}", &text[..start], &text[end..]);
    // Replaced by a rename, as `keygate key …` writes: a new file, whatever the clock says.
    replace(&s.config_path, &without);
    let mut refused = false;
    for _ in 0..100 {
        if s.login(&s.billing_key).await.status() == 401 {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(refused, "the removed client was still accepted after 5 s");
    assert_invalid(&s, &token, "token of a removed client").await;
}

/// The hashing permits `s`'s password verifier has free, as the state's `Debug` output
/// shows them: one fewer for each password check running on its hashing threads.
fn free_hashing_permits(s: &TestServer) -> usize {
    let state = format!("{:?}", s.state);
    let verifier = &state[state
        .find("PasswordVerifier {")
        .expect("the verifier in the state")..];
    let at = verifier.find("available: ").expect("its free permits") + "available: ".len();
    let digits: String = verifier[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().unwrap()
}

/// A request is authenticated and signed under one configuration, whatever reload lands
/// in between. The reload below removes a client and changes the secret while that
/// client's key is being hashed: were the request to read the configuration twice, the
/// removed client would get a token signed with the new secret, which every service
/// holding the new secret would accept.
#[tokio::test]
async fn a_reload_mid_request_never_mixes_two_configurations() {
    use argon2::password_hash::{PasswordHasher, SaltString};

    const NEW_SECRET: &str = "7c1e4b9f0a2d6c8e3f5a7b9d1c3e5f70a2b4c6d8e0f1a3b5c7d9e1f2a4b6c8d0";
    // 64 MiB and 3 passes: tens of milliseconds of hashing in an optimised build, far more
    // than the reload takes, and well within request_timeout on a busy machine.
    let slow_key = keygate::api_key::generate("slow").unwrap();
    let params = argon2::Params::new(65_536, 3, 1, None).unwrap();
    let hasher = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let salt = SaltString::encode_b64(b"a fixed test salt").unwrap();
    let phc = hasher
        .hash_password(slow_key.as_bytes(), &salt)
        .unwrap()
        .to_string();
    let slow_client =
        format!("[[clients]]\nid = \"slow\"\nkey_hash = \"{phc}\"\nrole = \"service\"\n");
    let s = TestServer::with_extra(&slow_client).await;
    let old_text = std::fs::read_to_string(&s.config_path).unwrap();
    let new_text = old_text
        .replace(&slow_client, "")
        .replace(SECRET, NEW_SECRET);

    let verifier = |secret: &str| {
        let secret: keygate::token::HmacSecret = secret.parse().unwrap();
        let mut policy = keygate::token::TokenPolicy::new(ISSUER);
        policy.audience = vec!["orders-api".to_owned()];
        keygate::token::Verifier::hmac(keygate::token::SigningAlgorithm::HS256, &secret, policy)
            .unwrap()
    };
    // Nothing is hashed yet: every permit is free.
    let idle = free_hashing_permits(&s);
    let hashing = || free_hashing_permits(&s) < idle;
    let mut raced = false;
    for _ in 0..5 {
        s.rewrite_config(&old_text).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        // The permit of the last round's hash is given back once its thread is done.
        while hashing() {
            assert!(Instant::now() < deadline, "a hash still running after 10 s");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let (http, url, key) = (s.http.clone(), s.url("/login"), slow_key.clone());
        let login =
            tokio::spawn(async move { http.post(url).header("X-API-Key", key).send().await });
        while !hashing() {
            assert!(
                Instant::now() < deadline,
                "the key was not being hashed within 10 s"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        s.rewrite_config(&new_text).unwrap();
        // Still hashing once the reload is in: it landed while the request was mid-way.
        let mid_request = hashing();
        let r = login.await.unwrap().unwrap();
        assert_eq!(
            r.status(),
            200,
            "authenticated under the file it began with"
        );
        let token = r.json::<serde_json::Value>().await.unwrap()["access_token"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(
            verifier(SECRET).verify(&token).is_ok(),
            "signed under the configuration it was authenticated under"
        );
        assert!(
            verifier(NEW_SECRET).verify(&token).is_err(),
            "never signed with a key the old configuration did not know"
        );
        assert_invalid(&s, &token, "token of a client the new file removed").await;
        if mid_request {
            raced = true;
            break;
        }
    }
    assert!(
        raced,
        "the hash ended before the reload each time: it never landed mid-request"
    );
}

/// A large file is read and validated off the async workers and swapped in whole: while
/// 100 000 clients are reloaded, `/verify` keeps answering, each request within a bound
/// far below the reload's own duration (seconds in a debug build), and the new file's
/// client works once it is in.
#[tokio::test]
async fn verify_keeps_answering_while_a_large_file_reloads() {
    use std::fmt::Write as _;
    use std::time::Instant;

    let mut many = String::new();
    for i in 0..100_000u32 {
        write!(
            many,
            "[[clients]]\nid = \"bulk-{i}\"\nkey_hash = \"sha256:{i:064x}\"\nrole = \"service\"\nscopes = [\"orders:read\"]\n\n"
        )
        .unwrap();
    }
    let s = TestServer::with_extra(&many).await;
    drop(many);
    keygate_server::reload::spawn(s.state.clone(), Duration::from_millis(20));
    let token = s.token().await;
    let late = keygate::api_key::generate("late").unwrap();
    let hash = keygate::api_key::KeyHash::sha256_of(&late);
    let text = std::fs::read_to_string(&s.config_path).unwrap();
    let with_late = format!("{text}\n[[clients]]\nid = \"late\"\nkey_hash = \"{hash}\"\n");
    // The watcher looked at the file before `spawn` returned: this write is a change.
    replace(&s.config_path, &with_late);
    let started = Instant::now();
    let (mut answered, mut slowest) = (0u32, Duration::ZERO);
    while s.state.runtime().directory.get("late").is_none() {
        let sent = Instant::now();
        assert_eq!(s.verify(&token).await.status(), 200);
        slowest = slowest.max(sent.elapsed());
        answered += 1;
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the reload never landed"
        );
    }
    let reload = started.elapsed();
    assert!(
        answered > 0,
        "the reload took {reload:?} and nothing was asked"
    );
    assert!(
        slowest < Duration::from_secs(1),
        "a /verify took {slowest:?} during a reload of {reload:?}"
    );
    assert_eq!(s.verify(&token).await.status(), 200);
    assert_eq!(s.login(&late).await.status(), 200);
}

/// Writes `text` to a temporary file beside `path`, then renames it over `path`.
fn replace(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("toml.new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}
