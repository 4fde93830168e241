//! `config`: the configuration loader, `keygate_server::Config::parse(text, &env)` then
//! `.validate()`, on arbitrary text (`fuzz/config.dict` holds the model's keys and values).
//!
//! Lines `#env NAME=VALUE` are TOML comments, so they leave the document as it is, and set
//! `NAME` in the environment the loader sees (`${NAME}` interpolation and
//! `KEYGATE_<SECTION>_<KEY>` overrides). `KG_SECRET` is always set to a valid secret.
//!
//! A configuration that validates is then used the way the server uses it, as far as that
//! is cheap: a token is issued to its first principal (or a stand-in) and must verify with
//! the runtime's own verifier, and its attempt limits refuse the attempt after the last
//! one allowed, then allow again once the window has passed.
//! (Password hashing pools are not built: each costs an argon2 hash.)

#![no_main]

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use keygate::token::Grant;
use keygate_server::Config;
use keygate_server::limits::{FailedAttempts, Subject};
use libfuzzer_sys::fuzz_target;

const SECRET: &str = "4f1c0f9a7d6e8b2c3a5d7e9f1b3c5d7e9a1b3c5d7e9f1a2b3c4d5e6f7a8b9c0d";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut env = BTreeMap::from([("KG_SECRET".to_owned(), SECRET.to_owned())]);
    for line in text.lines() {
        if let Some((name, value)) = line
            .trim_start()
            .strip_prefix("#env ")
            .and_then(|l| l.split_once('='))
        {
            env.insert(name.to_owned(), value.to_owned());
        }
    }
    let Ok(config) = Config::parse(text, &env) else {
        return;
    };
    let Ok(runtime) = config.validate() else {
        return;
    };

    let (subject, role, scopes) = match (config.clients.first(), config.users.first()) {
        (Some(c), _) => (c.id.as_str(), c.role.as_str(), c.scopes.clone()),
        (None, Some(u)) => (u.username.as_str(), u.role.as_str(), u.scopes.clone()),
        (None, None) => ("billing", "service", Vec::new()),
    };
    let grant = Grant {
        subject,
        client_id: subject,
        role,
        scopes: &scopes,
    };
    let issued = runtime
        .issuer
        .issue(&grant)
        .expect("a validated configuration issues tokens");
    let claims = runtime
        .verifier
        .verify(&issued.token)
        .expect("a validated configuration verifies its own tokens");
    assert_eq!(claims, issued.claims);

    // The limits count attempts against a subject until it is refused, and let it go
    // once its window has passed.
    let limits = &runtime.config.limits;
    let attempts = FailedAttempts::new(limits.failed_attempts, limits.window);
    let subjects = [
        Subject::Address(IpAddr::from([127, 0, 0, 1])),
        Subject::UserAt(subject.to_owned(), IpAddr::from([127, 0, 0, 1])),
    ];
    let now = Instant::now();
    for i in 0..=limits.failed_attempts.min(16) {
        let outcome = now_or_never(attempts.begin(&subjects, now));
        if i < limits.failed_attempts {
            assert!(
                outcome.is_ok(),
                "attempt {i} refused under a limit of {}",
                limits.failed_attempts
            );
        } else {
            assert!(
                outcome.is_err(),
                "attempt {i} allowed under a limit of {}",
                limits.failed_attempts
            );
        }
    }
    if let Some(later) = now.checked_add(limits.window) {
        assert!(now_or_never(attempts.begin(&subjects, later)).is_ok());
    }
});

/// The result of a future that needs no waiting (in-memory counters, no Redis).
fn now_or_never<T>(future: impl Future<Output = T>) -> T {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(future).poll(&mut cx) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("an in-memory attempt counter waited"),
    }
}
