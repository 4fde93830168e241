//! [`Form`]: an `application/x-www-form-urlencoded` body read into the struct its handler
//! documents, so the schema in `/openapi.json` and the parsed parameters are one type.
//!
//! RFC 6749 rules, checked before serde sees anything: another content type is refused, a
//! repeated parameter of the endpoint is refused (§3.1: "request and response parameters
//! MUST NOT be included more than once"), and a parameter sent without a value counts as
//! omitted. Parameters the endpoint does not define are ignored, repeated or not (§3.1,
//! §3.2: "The authorization server MUST ignore unrecognized request parameters"). Refusals
//! are `400 invalid_request`.

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
    let defined = defined_parameters::<T>();
    let mut params = Map::new();
    for (k, v) in form_urlencoded::parse(body) {
        if v.is_empty() {
            continue;
        }
        if defined.is_some_and(|names| !names.contains(&k.as_ref())) {
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

/// The parameters `T` defines: the field names serde would read for it (after renames),
/// or `None` when `T` is not a struct (a map takes every parameter, so every one is
/// defined and none may repeat).
fn defined_parameters<T: DeserializeOwned>() -> Option<&'static [&'static str]> {
    let mut names = None;
    let _ = T::deserialize(FieldNames(&mut names));
    names
}

/// A deserializer that only records the field names of the struct asked of it, then
/// stops with an error: serde's derive passes them to `deserialize_struct`.
struct FieldNames<'a>(&'a mut Option<&'static [&'static str]>);

impl<'de> serde::Deserializer<'de> for FieldNames<'_> {
    type Error = serde::de::value::Error;

    fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(serde::de::Error::custom("not a struct"))
    }

    fn deserialize_struct<V: serde::de::Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = Some(fields);
        Err(serde::de::Error::custom("field names read"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
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
        let e = parse::<Params>(FORM, b"scope=a&other=1&scope=a").unwrap_err();
        assert_eq!(e, Rejection::InvalidRequest("a parameter is repeated"));
    }

    #[test]
    fn unrecognised_parameters_are_ignored_even_when_repeated() {
        let p: Params = parse(
            FORM,
            b"other=a&grant_type=password&other=b&%C3%BC%C2%B5=1&%C3%BC%C2%B5=2",
        )
        .unwrap();
        assert_eq!(
            p,
            Params {
                grant_type: Some("password".into()),
                scope: None
            }
        );
    }

    #[test]
    fn renamed_fields_are_the_defined_parameters() {
        #[derive(Debug, Deserialize)]
        struct Renamed {
            #[serde(rename = "token_type_hint")]
            _hint: Option<String>,
        }
        assert_eq!(
            defined_parameters::<Renamed>(),
            Some(&["token_type_hint"][..])
        );
        let e = parse::<Renamed>(FORM, b"token_type_hint=a&token_type_hint=b").unwrap_err();
        assert_eq!(e, Rejection::InvalidRequest("a parameter is repeated"));
    }

    #[test]
    fn a_map_takes_every_parameter_and_none_may_repeat() {
        assert_eq!(
            defined_parameters::<std::collections::HashMap<String, String>>(),
            None
        );
        let e = parse::<std::collections::HashMap<String, String>>(FORM, b"x=a&x=b").unwrap_err();
        assert_eq!(e, Rejection::InvalidRequest("a parameter is repeated"));
    }

    #[test]
    fn other_content_types_are_refused() {
        for ct in [None, Some("application/json"), Some("text/plain")] {
            assert!(parse::<Params>(ct, b"grant_type=a").is_err(), "{ct:?}");
        }
    }
}
