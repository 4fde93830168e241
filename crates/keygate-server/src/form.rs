//! [`Form`]: an `application/x-www-form-urlencoded` body read into the struct its handler
//! documents, so the schema in `/openapi.json` and the parsed parameters are one type.
//!
//! RFC 6749 rules, checked before serde sees anything: another content type is refused, a
//! repeated parameter is refused (§3.1: "request and response parameters MUST NOT be
//! included more than once"), and a parameter sent without a value counts as omitted.
//! Unknown parameters are ignored (§3.1). All of these are `400 invalid_request`.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::header;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::rejection::Rejection;

/// A form body parsed into `T` (whose fields are `Option<String>`).
#[derive(Debug, Clone)]
pub struct Form<T>(pub T);

/// Parses a form body sent with `content_type` into `T`, by the rules of this module.
pub fn parse<T: DeserializeOwned>(content_type: Option<&str>, body: &[u8]) -> Result<T, Rejection> {
    let is_form = content_type
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !is_form {
        return Err(Rejection::InvalidRequest(
            "the body must be application/x-www-form-urlencoded",
        ));
    }
    let mut params = Map::new();
    for (k, v) in form_urlencoded::parse(body) {
        if v.is_empty() {
            continue;
        }
        if params
            .insert(k.into_owned(), Value::String(v.into_owned()))
            .is_some()
        {
            return Err(Rejection::InvalidRequest("a parameter is repeated"));
        }
    }
    // A JSON map of strings, because serde's own value deserializers cannot fill `Option`
    // fields; serde_json's can.
    serde_json::from_value(Value::Object(params))
        .map_err(|_| Rejection::InvalidRequest("the form parameters are malformed"))
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Form<T> {
    type Rejection = Rejection;

    async fn from_request(req: Request, state: &S) -> Result<Self, Rejection> {
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = Bytes::from_request(req, state)
            .await
            .map_err(|e| match e.status() {
                axum::http::StatusCode::PAYLOAD_TOO_LARGE => Rejection::PayloadTooLarge,
                _ => Rejection::InvalidRequest("the body could not be read"),
            })?;
        parse(content_type.as_deref(), &body).map(Form)
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Params {
        grant_type: Option<String>,
        scope: Option<String>,
    }

    const FORM: Option<&str> = Some("application/x-www-form-urlencoded; charset=UTF-8");

    #[test]
    fn a_form_becomes_its_struct() {
        let p: Params = parse(FORM, b"grant_type=password&scope=&other=1").unwrap();
        assert_eq!(
            p,
            Params {
                grant_type: Some("password".into()),
                scope: None
            }
        );
    }

    #[test]
    fn repeated_parameters_are_refused() {
        let e = parse::<Params>(FORM, b"grant_type=a&grant_type=b").unwrap_err();
        assert_eq!(e, Rejection::InvalidRequest("a parameter is repeated"));
        let e = parse::<Params>(FORM, b"other=a&other=b").unwrap_err();
        assert_eq!(
            e,
            Rejection::InvalidRequest("a parameter is repeated"),
            "unknown parameters are not repeated either"
        );
    }

    #[test]
    fn other_content_types_are_refused() {
        for ct in [None, Some("application/json"), Some("text/plain")] {
            assert!(parse::<Params>(ct, b"grant_type=a").is_err(), "{ct:?}");
        }
    }
}
