//! `credentials`: how a request's credentials are read, over arbitrary header values and
//! query strings:
//! - `keygate::axum::bearer_token` (the `Authorization: Bearer` header),
//! - `keygate::axum::cookie` (every `Cookie` header),
//! - `keygate::axum::ApiKeySources::find` (API key from a header, the query, a cookie),
//!   under several source configurations,
//! - the server's HTTP Basic decoding (`client_id:secret`, base64, each part then
//!   form-decoded), on every `Authorization: Basic` header as the server reads it,
//! - the server's form-body parser (`keygate_server::form::parse`: content type, repeated
//!   and empty parameters), into the fields of `/token` and into a map.
//!
//! The input reads like the head of an HTTP request, so real requests are seeds:
//!
//! ```text
//! GET /login?api_key=kg_billing_…
//! Authorization: Bearer eyJ…
//! Cookie: keygate_token=eyJ…; theme=dark
//! X-Fuzz-Basic: billing:s3cr%2Bt
//! Content-Type: application/x-www-form-urlencoded
//!
//! grant_type=client_credentials&scope=orders%3Aread
//! ```
//!
//! The first line's query (after `?`) is the query string. Each further line up to the
//! first empty one is `name: value` as bytes; lines that are not a valid header are
//! skipped. What follows the empty line is the body. The value of
//! `X-Fuzz-Basic` is base64-encoded by the target and decoded as Basic credentials, so the
//! decoder is reached past base64.
//!
//! Beyond "no panic", what is returned must be what was sent: a bearer token is the one
//! word after `Bearer ` in the one Authorization header; a cookie value and an API key are
//! non-empty; well-formed Basic credentials are read, and their sent form is among the
//! readings; a parsed form came with the form content type and holds each non-empty
//! parameter once.

#![no_main]

use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use keygate::axum::{ApiKeySources, bearer_token, cookie};
use keygate_server::form;
use libfuzzer_sys::fuzz_target;
use serde::Deserialize;
use std::collections::HashMap;

const FUZZ_BASIC: &str = "x-fuzz-basic";

fn sources(header: &str, query: &str, cookie: &str) -> ApiKeySources {
    ApiKeySources {
        header: header.to_owned(),
        query: query.to_owned(),
        cookie: cookie.to_owned(),
    }
}

fn split_once(bytes: &[u8], at: u8) -> Option<(&[u8], &[u8])> {
    let i = bytes.iter().position(|b| *b == at)?;
    Some((&bytes[..i], &bytes[i + 1..]))
}

fn check_basic(creds: &str) {
    if let Ok(readings) = keygate_server::fuzzing::decode_basic(creds) {
        assert!((1..=2).contains(&readings.len()), "{readings:?}");
        if let [a, b] = readings.as_slice() {
            assert_ne!(a, b, "the same reading twice");
        }
    }
}

/// The parameters of `/token` (as `routes/token.rs` declares them).
#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct TokenForm {
    grant_type: Option<String>,
    scope: Option<String>,
    username: Option<String>,
    password: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
}

fn check_form(content_type: Option<&str>, body: &[u8]) {
    let _ = form::parse::<TokenForm>(content_type, body);
    let Ok(params) = form::parse::<HashMap<String, String>>(content_type, body) else {
        return;
    };
    let media = content_type
        .and_then(|c| c.split(';').next())
        .map(str::trim)
        .expect("a content type");
    assert!(
        media.eq_ignore_ascii_case("application/x-www-form-urlencoded"),
        "a form read from {media:?}"
    );
    let mut seen = HashMap::new();
    for (k, v) in form_urlencoded::parse(body) {
        if !v.is_empty() {
            assert!(seen.insert(k, v).is_none(), "a repeated parameter was read");
        }
    }
    assert_eq!(params.len(), seen.len());
    for (k, v) in &params {
        assert!(!v.is_empty(), "an empty parameter was read");
        assert_eq!(seen.get(k.as_str()).map(|s| s.as_ref()), Some(v.as_str()));
    }
}

fuzz_target!(|data: &[u8]| {
    let (head, body) = match data.windows(2).position(|w| w == b"\n\n") {
        Some(i) => (&data[..i], Some(&data[i + 2..])),
        None => (data, None),
    };
    let mut lines = head.split(|b| *b == b'\n');
    let target = lines.next().unwrap_or_default();
    let query = split_once(target, b'?').map(|(_, q)| String::from_utf8_lossy(q));

    let mut headers = HeaderMap::new();
    let mut basic_pairs = Vec::new();
    for line in lines {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some((name, value)) = split_once(line, b':') else {
            continue;
        };
        let value = value.strip_prefix(b" ").unwrap_or(value);
        let Ok(name) = HeaderName::from_bytes(name) else {
            continue;
        };
        if name == FUZZ_BASIC {
            basic_pairs.push(String::from_utf8_lossy(value).into_owned());
            continue;
        }
        if let Ok(value) = HeaderValue::from_bytes(value) {
            headers.append(name, value);
        }
    }

    if let Some(body) = body {
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        check_form(content_type, body);
    }

    let authorization: Vec<&HeaderValue> = headers.get_all(header::AUTHORIZATION).iter().collect();
    if let Ok(token) = bearer_token(&headers) {
        assert_eq!(authorization.len(), 1, "a token from repeated headers");
        assert!(!token.is_empty() && !token.contains(' '), "token {token:?}");
        let value = authorization[0].to_str().expect("a readable header");
        let (scheme, rest) = value.split_once(' ').expect("scheme and token");
        assert!(scheme.eq_ignore_ascii_case("bearer"), "scheme {scheme:?}");
        assert_eq!(rest, token);
    }

    for name in ["keygate_token", "api_key", ""] {
        if let Ok(Some(v)) = cookie(&headers, name) {
            assert!(!v.is_empty(), "an empty cookie value");
        }
    }

    for s in [
        ApiKeySources::default(),
        sources("access_token", "api_key", "api_key"),
        sources("", "api_key", ""),
        sources("", "", "keygate_token"),
    ] {
        if let Ok(Some(key)) = s.find(&headers, query.as_deref()) {
            assert!(!key.is_empty(), "an empty key was found");
        }
    }

    // As the server reads client credentials: `Basic <creds>`, scheme case-insensitive.
    for value in &authorization {
        if let Ok(v) = value.to_str()
            && let Some((scheme, creds)) = v.split_once(' ')
            && scheme.eq_ignore_ascii_case("basic")
        {
            check_basic(creds.trim());
        }
    }
    for pair in basic_pairs {
        let encoded = STANDARD.encode(&pair);
        check_basic(&encoded);
        if let Some((id, secret)) = pair.split_once(':') {
            let readings = keygate_server::fuzzing::decode_basic(&encoded)
                .expect("well-formed Basic credentials are read");
            assert_eq!(
                readings.last(),
                Some(&(id.to_owned(), secret.to_owned())),
                "the credentials as sent are not among the readings"
            );
        }
    }
});
