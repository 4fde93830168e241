//! Reading credentials and the client address from a request, the same way for every
//! endpoint. A credential presented twice, or by two methods that disagree, is refused
//! (RFC 6750 §2; ASVS 15.3.7: parameter pollution).

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;
use keygate::axum::AuthRejection;

use crate::config::Config;
use crate::rejection::Rejection;
use crate::runtime::Runtime;

/// Where a bearer token came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenSource {
    Header,
    Cookie,
}

/// The token of `Authorization: Bearer …`, or of the token cookie when cookies are on.
/// `Ok(None)` when neither is present. The header is read as the `keygate::axum`
/// extractors read it, so keygate and the services it serves agree on every request.
pub(crate) fn bearer_token<'a>(
    headers: &'a HeaderMap,
    config: &Config,
) -> Result<Option<(&'a str, TokenSource)>, Rejection> {
    let from_header = match keygate::axum::bearer_token(headers) {
        Ok(token) => Some(token),
        Err(AuthRejection::MissingToken) => None,
        Err(e) => return Err(e.into()),
    };
    let from_cookie = if config.cookie.enabled {
        keygate::axum::cookie(headers, &config.cookie.name)
            .map_err(|_| Rejection::InvalidRequest("a cookie is repeated"))?
    } else {
        None
    };
    match (from_header, from_cookie) {
        (Some(h), Some(c)) if h != c => Err(Rejection::InvalidRequest(
            "different tokens in the Authorization header and the cookie",
        )),
        (Some(h), _) => Ok(Some((h, TokenSource::Header))),
        (None, Some(c)) => Ok(Some((c, TokenSource::Cookie))),
        (None, None) => Ok(None),
    }
}

/// The API key from the configured header, query parameter or cookie.
pub(crate) fn api_key(
    headers: &HeaderMap,
    query: Option<&str>,
    runtime: &Runtime,
) -> Result<Option<String>, Rejection> {
    runtime.api_key_sources.find(headers, query).map_err(|_| {
        Rejection::InvalidRequest(
            "the API key is repeated, unreadable or presented differently twice",
        )
    })
}

/// The client's address: the socket peer, or, when the peer is a trusted proxy, the
/// right-most `X-Forwarded-For` entry that is not itself a trusted proxy.
pub(crate) fn client_ip(peer: SocketAddr, headers: &HeaderMap, config: &Config) -> IpAddr {
    let trusted = &config.server.trusted_proxies;
    if !trusted.contains(&peer.ip()) {
        return peer.ip();
    }
    let forwarded = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    forwarded
        .iter()
        .rev()
        .filter_map(|s| s.parse::<IpAddr>().ok())
        .find(|ip| !trusted.contains(ip))
        .unwrap_or(peer.ip())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn bearer_scheme_is_case_insensitive_and_strict() {
        let c = Config::default();
        assert_eq!(
            bearer_token(&headers(&[("authorization", "bearer abc")]), &c).unwrap(),
            Some(("abc", TokenSource::Header))
        );
        assert_eq!(
            bearer_token(&headers(&[("authorization", "Basic abc")]), &c).unwrap(),
            None
        );
        for bad in ["Bearer", "Bearer ", "Bearer  abc", "Bearer abc extra"] {
            assert!(
                bearer_token(&headers(&[("authorization", bad)]), &c).is_err(),
                "{bad}"
            );
        }
        let two = headers(&[("authorization", "Bearer a"), ("authorization", "Bearer a")]);
        assert!(bearer_token(&two, &c).is_err());
    }

    #[test]
    fn cookie_and_header_must_agree() {
        let mut c = Config::default();
        c.cookie.enabled = true;
        let h = headers(&[("authorization", "Bearer a"), ("cookie", "keygate_token=b")]);
        assert!(bearer_token(&h, &c).is_err());
        let h = headers(&[("cookie", "x=1; keygate_token=b")]);
        assert_eq!(
            bearer_token(&h, &c).unwrap(),
            Some(("b", TokenSource::Cookie))
        );
    }

    #[test]
    fn api_key_sources_must_agree() {
        let runtime = |query: &str| {
            let mut c = Config::default();
            c.token.secret =
                Some("4f1c0f9a7d6e8b2c3a5d7e9f1b3c5d7e9a1b3c5d7e9f1a2b3c4d5e6f7a8b9c0d".into());
            c.api_key.query = query.into();
            c.validate().unwrap()
        };
        let rt = runtime("api_key");
        let h = headers(&[("x-api-key", "k1")]);
        assert_eq!(api_key(&h, None, &rt).unwrap().as_deref(), Some("k1"));
        assert_eq!(
            api_key(&h, Some("api_key=k1"), &rt).unwrap().as_deref(),
            Some("k1")
        );
        assert!(api_key(&h, Some("api_key=k2"), &rt).is_err());
        assert!(api_key(&HeaderMap::new(), Some("api_key=a&api_key=b"), &rt).is_err());
        let no_query = runtime("");
        assert_eq!(
            api_key(&HeaderMap::new(), Some("api_key=k1"), &no_query).unwrap(),
            None
        );
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let mut c = Config::default();
        let peer: SocketAddr = "10.0.0.5:1234".parse().unwrap();
        let h = headers(&[("x-forwarded-for", "1.2.3.4, 10.0.0.9")]);
        assert_eq!(client_ip(peer, &h, &c), peer.ip());
        c.server.trusted_proxies = vec!["10.0.0.5".parse().unwrap(), "10.0.0.9".parse().unwrap()];
        assert_eq!(
            client_ip(peer, &h, &c),
            "1.2.3.4".parse::<IpAddr>().unwrap()
        );
    }
}

/// The socket peer, from the connection info `serve` attaches. A router driven without a
/// socket (`oneshot` in tests) sees `127.0.0.1:0`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer(pub(crate) SocketAddr);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        let addr = parts
            .extensions
            .get::<axum::extract::ConnectInfo<SocketAddr>>()
            .map_or(SocketAddr::from(([127, 0, 0, 1], 0)), |c| c.0);
        Ok(Peer(addr))
    }
}
