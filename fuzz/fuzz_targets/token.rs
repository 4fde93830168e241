//! `token`: `keygate::token::Verifier` (HS256 with a fixed secret, ES256 with a key made at
//! start-up) on hostile tokens, plus `keygate::dangerous::decode_unverified`.
//!
//! The first byte picks the mode:
//! - even: the rest of the input is the token, as text (lossy UTF-8);
//! - odd: the rest drives [`Forged`]: a header and claims built as JSON (near-valid
//!   members, wrong types, duplicates, extra and missing members, or raw bytes),
//!   base64url-encoded and signed with the verifier's own key, a wrong key or garbage,
//!   then optionally mangled. Correctly signed tokens reach every check after the
//!   signature, which raw bytes never do.
//!
//! Beyond "no panic", every token the verifier accepts is checked against what keygate
//! promises: the pinned `alg`, an `at+jwt` `typ`, no `crit`, a signature made with the
//! verifier's key, the issuer, the audience, and the time and lifetime rules.

#![no_main]

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use keygate::token::{
    Claims, HmacSecret, KeySet, MAX_LIFETIME, SigningAlgorithm, SigningKey, TokenPolicy, Verifier,
    now_unix,
};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use sha2::Sha256;

const SECRET: &str = "4f1c0f9a7d6e8b2c3a5d7e9f1b3c5d7e9a1b3c5d7e9f1a2b3c4d5e6f7a8b9c0d";
const ISS: &str = "https://keygate.test";
const AUD: &str = "api";
const LEEWAY: u64 = 30;

struct Fixture {
    hs: Verifier,
    hs_kid: String,
    es: Verifier,
    es_kid: String,
    es_signing: jsonwebtoken::EncodingKey,
    other_es_signing: jsonwebtoken::EncodingKey,
}

fn policy() -> TokenPolicy {
    TokenPolicy {
        issuer: ISS.into(),
        audience: vec![AUD.into()],
        ttl: Duration::from_secs(1800),
        leeway: Duration::from_secs(LEEWAY),
    }
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let secret: HmacSecret = SECRET.parse().expect("fixed secret");
    let hs_key = SigningKey::hmac(SigningAlgorithm::HS256, &secret).expect("hmac key");
    let hs_kid = hs_key.kid().to_owned();
    let hs = Verifier::new(
        SigningAlgorithm::HS256,
        Arc::new(KeySet::single(hs_key)),
        policy(),
    );
    let (es_key, es_pem) = SigningKey::generate(SigningAlgorithm::ES256).expect("ES256 key");
    let es_kid = es_key.kid().to_owned();
    let es = Verifier::new(
        SigningAlgorithm::ES256,
        Arc::new(KeySet::single(es_key)),
        policy(),
    );
    let (_, other_pem) = SigningKey::generate(SigningAlgorithm::ES256).expect("ES256 key");
    Fixture {
        hs,
        hs_kid,
        es,
        es_kid,
        es_signing: jsonwebtoken::EncodingKey::from_ec_pem(es_pem.as_bytes()).expect("pem"),
        other_es_signing: jsonwebtoken::EncodingKey::from_ec_pem(other_pem.as_bytes())
            .expect("pem"),
    }
});

/// A JSON value, written by hand so that objects may repeat a member.
#[derive(Arbitrary, Debug)]
enum Json {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    fn write(&self, out: &mut String, depth: usize) {
        if depth > 64 {
            out.push_str("null");
            return;
        }
        match self {
            Json::Null => out.push_str("null"),
            Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Json::Int(i) => out.push_str(&i.to_string()),
            Json::UInt(u) => out.push_str(&u.to_string()),
            Json::Float(f) => out.push_str(&Value::from(*f).to_string()),
            Json::Str(s) => out.push_str(&Value::from(s.as_str()).to_string()),
            Json::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.write(out, depth + 1);
                }
                out.push(']');
            }
            Json::Object(members) => {
                let mut o = Object::default();
                for (k, v) in members {
                    o.json(k, v, depth + 1);
                }
                out.push_str(&o.finish());
            }
        }
    }
}

/// An object under construction, members in order, duplicates allowed.
#[derive(Default)]
struct Object(Vec<String>);

impl Object {
    fn raw(&mut self, key: &str, value_json: String) {
        self.0.push(format!("{}:{value_json}", Value::from(key)));
    }
    fn str(&mut self, key: &str, value: &str) {
        self.raw(key, Value::from(value).to_string());
    }
    fn json(&mut self, key: &str, value: &Json, depth: usize) {
        let mut s = String::new();
        value.write(&mut s, depth);
        self.raw(key, s);
    }
    fn finish(self) -> String {
        format!("{{{}}}", self.0.join(","))
    }
}

/// A header or claim member: the valid value, absent, or anything.
#[derive(Arbitrary, Debug)]
enum Member {
    Good,
    Missing,
    Text(String),
    Json(Json),
}

/// A time claim: valid, absent, an offset from now, or anything.
#[derive(Arbitrary, Debug)]
enum Time {
    Good,
    Missing,
    Offset(i32),
    Json(Json),
}

#[derive(Arbitrary, Debug)]
enum Header {
    Members {
        alg: Member,
        typ: Member,
        kid: Member,
        crit: Option<Json>,
        zip: Option<Json>,
        enc: Option<Json>,
        /// `jku`, `jwk`, `x5u`, `x5c` or anything else.
        extra: Vec<(u8, String, Json)>,
        /// A second `alg` (or `typ`, `kid`) after the first.
        duplicate: Option<(u8, String)>,
    },
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum Payload {
    Claims {
        iss: Member,
        sub: Member,
        aud: Member,
        exp: Time,
        iat: Time,
        nbf: Time,
        jti: Member,
        client_id: Member,
        role: Member,
        scope: Member,
        extra: Vec<(String, Json)>,
        duplicate: Option<(u8, Json)>,
    },
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum Signature {
    /// Signed with the verifier's own key.
    Right,
    /// HS256 over the input with a key of the fuzzer's choice (the public key, empty…).
    Hmac(Vec<u8>),
    /// Signed with another ES256 key.
    OtherEs,
    Raw(Vec<u8>),
    Text(String),
}

#[derive(Arbitrary, Debug)]
enum Tweak {
    None,
    FlipBit(u16, u8),
    Insert(u16, char),
    Truncate(u16),
    Append(String),
}

#[derive(Arbitrary, Debug)]
struct Forged {
    /// ES256 when a multiple of 8, HS256 otherwise: an ECDSA signature and its check cost
    /// some 20 times an HMAC, and past the signature both take the same paths.
    algorithm: u8,
    header: Header,
    payload: Payload,
    signature: Signature,
    tweak: Tweak,
}

const HEADER_EXTRA: &[&str] = &["jku", "jwk", "x5u", "x5c", "b64", "cty", "typ", "alg"];
const ALGS: &[&str] = &[
    "none", "None", "HS256", "HS384", "HS512", "RS256", "ES256", "EdDSA", "PS256", "hs256",
];
const TYPS: &[&str] = &["at+jwt", "AT+JWT", "application/at+jwt", "JWT", "jwt", ""];

fn member(o: &mut Object, key: &str, m: &Member, good: &str) {
    match m {
        Member::Good => o.str(key, good),
        Member::Missing => {}
        Member::Text(t) => o.str(key, t),
        Member::Json(j) => o.json(key, j, 1),
    }
}

fn time(o: &mut Object, key: &str, t: &Time, good: u64, now: u64) {
    match t {
        Time::Good => o.raw(key, good.to_string()),
        Time::Missing => {}
        Time::Offset(d) => o.raw(key, now.saturating_add_signed(i64::from(*d)).to_string()),
        Time::Json(j) => o.json(key, j, 1),
    }
}

impl Forged {
    fn es256(&self) -> bool {
        self.algorithm % 8 == 0
    }

    fn header_json(&self, alg: &str, kid: &str) -> Vec<u8> {
        match &self.header {
            Header::Raw(bytes) => bytes.clone(),
            Header::Members {
                alg: a,
                typ,
                kid: k,
                crit,
                zip,
                enc,
                extra,
                duplicate,
            } => {
                let mut o = Object::default();
                member(&mut o, "alg", a, alg);
                member(&mut o, "typ", typ, "at+jwt");
                member(&mut o, "kid", k, kid);
                for (name, value) in [("crit", crit), ("zip", zip), ("enc", enc)] {
                    if let Some(v) = value {
                        o.json(name, v, 1);
                    }
                }
                for (which, name, value) in extra {
                    let name = HEADER_EXTRA
                        .get(usize::from(*which))
                        .copied()
                        .unwrap_or(name.as_str());
                    o.json(name, value, 1);
                }
                if let Some((which, text)) = duplicate {
                    let value = match which % 4 {
                        0 => ALGS[usize::from(*which / 4) % ALGS.len()],
                        1 => TYPS[usize::from(*which / 4) % TYPS.len()],
                        _ => text.as_str(),
                    };
                    let name = ["alg", "typ", "kid", "alg"][usize::from(which % 4)];
                    o.str(name, value);
                }
                o.finish().into_bytes()
            }
        }
    }

    fn payload_json(&self, now: u64) -> Vec<u8> {
        match &self.payload {
            Payload::Raw(bytes) => bytes.clone(),
            Payload::Claims {
                iss,
                sub,
                aud,
                exp,
                iat,
                nbf,
                jti,
                client_id,
                role,
                scope,
                extra,
                duplicate,
            } => {
                let mut o = Object::default();
                member(&mut o, "iss", iss, ISS);
                member(&mut o, "sub", sub, "billing");
                member(&mut o, "aud", aud, AUD);
                time(&mut o, "exp", exp, now + 600, now);
                time(&mut o, "iat", iat, now, now);
                time(&mut o, "nbf", nbf, now, now);
                member(&mut o, "jti", jti, "j1");
                member(&mut o, "client_id", client_id, "billing");
                member(&mut o, "role", role, "service");
                member(&mut o, "scope", scope, "orders:read");
                for (k, v) in extra {
                    o.json(k, v, 1);
                }
                if let Some((which, v)) = duplicate {
                    const NAMES: &[&str] = &[
                        "iss",
                        "sub",
                        "aud",
                        "exp",
                        "iat",
                        "nbf",
                        "jti",
                        "client_id",
                        "role",
                        "scope",
                    ];
                    o.json(NAMES[usize::from(*which) % NAMES.len()], v, 1);
                }
                o.finish().into_bytes()
            }
        }
    }

    /// The token as signed, and as sent (after the tweak).
    fn token(&self, f: &Fixture, now: u64) -> (String, String) {
        let (alg, kid) = if self.es256() {
            ("ES256", f.es_kid.as_str())
        } else {
            ("HS256", f.hs_kid.as_str())
        };
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(self.header_json(alg, kid)),
            URL_SAFE_NO_PAD.encode(self.payload_json(now))
        );
        let sign_es = |key: &jsonwebtoken::EncodingKey| {
            jsonwebtoken::crypto::sign(input.as_bytes(), key, jsonwebtoken::Algorithm::ES256)
                .expect("ES256 signing")
        };
        let signature = match &self.signature {
            Signature::Right if self.es256() => sign_es(&f.es_signing),
            Signature::Right => hs256(SECRET.as_bytes(), &input),
            Signature::OtherEs => sign_es(&f.other_es_signing),
            Signature::Hmac(key) => hs256(key, &input),
            Signature::Raw(bytes) => URL_SAFE_NO_PAD.encode(bytes),
            Signature::Text(t) => t.clone(),
        };
        let signed = format!("{input}.{signature}");
        let mut token = signed.clone();
        match &self.tweak {
            Tweak::None => {}
            Tweak::FlipBit(at, bit) => {
                let mut bytes = token.into_bytes();
                if !bytes.is_empty() {
                    let i = usize::from(*at) % bytes.len();
                    bytes[i] ^= 1 << (bit % 8);
                }
                token = String::from_utf8_lossy(&bytes).into_owned();
            }
            Tweak::Insert(at, c) => {
                let mut i = usize::from(*at) % (token.len() + 1);
                while !token.is_char_boundary(i) {
                    i -= 1;
                }
                token.insert(i, *c);
            }
            Tweak::Truncate(at) => {
                let mut i = usize::from(*at) % (token.len() + 1);
                while !token.is_char_boundary(i) {
                    i -= 1;
                }
                token.truncate(i);
            }
            Tweak::Append(s) => token.push_str(s),
        }
        (signed, token)
    }
}

fn hs256(key: &[u8], input: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    mac.update(input.as_bytes());
    URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

/// What an accepted token must satisfy, whatever the input was.
fn check_accepted(token: &str, claims: &Claims, alg: &str, now_before: u64, now_after: u64) {
    let header = token.split('.').next().expect("a segment");
    let header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(header)
            .expect("accepted header is base64url"),
    )
    .expect("accepted header is JSON");
    assert_eq!(header["alg"], alg, "accepted a token with another alg");
    let typ = header["typ"]
        .as_str()
        .expect("accepted a token without typ");
    assert!(
        typ.eq_ignore_ascii_case("at+jwt") || typ.eq_ignore_ascii_case("application/at+jwt"),
        "accepted typ {typ:?}"
    );
    assert!(
        header.get("crit").is_none(),
        "accepted a token with crit: {header}"
    );
    assert_eq!(claims.iss, ISS, "accepted a foreign issuer");
    assert!(
        claims
            .aud
            .as_ref()
            .is_some_and(|a| a.iter().any(|a| a == AUD)),
        "accepted a token for another audience"
    );
    assert!(
        claims.exp + LEEWAY >= now_before,
        "accepted an expired token"
    );
    assert!(
        claims.nbf <= now_after + LEEWAY,
        "accepted a token not yet valid"
    );
    assert!(
        claims.iat <= now_after + LEEWAY,
        "accepted a token from the future"
    );
    assert!(
        claims.exp >= claims.iat && claims.exp - claims.iat <= MAX_LIFETIME.as_secs(),
        "accepted a token living too long"
    );
    assert!(!claims.jti.is_empty(), "accepted a token without jti");
}

fuzz_target!(|data: &[u8]| {
    let f = &*FIXTURE;
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        let token = String::from_utf8_lossy(rest);
        let _ = keygate::dangerous::decode_unverified(&token);
        for (verifier, alg) in [(&f.hs, "HS256"), (&f.es, "ES256")] {
            let before = now_unix();
            if let Ok(claims) = verifier.verify(&token) {
                check_accepted(&token, &claims, alg, before, now_unix());
            }
        }
        return;
    }
    let Ok(forged) = Forged::arbitrary_take_rest(Unstructured::new(rest)) else {
        return;
    };
    let before = now_unix();
    let (signed, token) = forged.token(f, before);
    let (verifier, alg) = if forged.es256() {
        (&f.es, "ES256")
    } else {
        (&f.hs, "HS256")
    };
    let outcome = verifier.verify(&token);
    let _ = keygate::dangerous::decode_unverified(&token);
    if let Ok(claims) = outcome {
        // Signed with the verifier's key and sent as signed. (An HMAC key the fuzzer
        // picked counts when it signs like the secret, e.g. the secret plus NUL padding.)
        let (input, signature) = signed.rsplit_once('.').expect("three segments");
        let rightly_signed = matches!(forged.signature, Signature::Right)
            || (!forged.es256() && signature == hs256(SECRET.as_bytes(), input));
        assert!(
            rightly_signed && token == signed,
            "accepted a token not signed with the verifier's key as sent: {token}"
        );
        check_accepted(&token, &claims, alg, before, now_unix());
    }
});
