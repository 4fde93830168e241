#!/usr/bin/env python3
"""Writes starting inputs for the fuzz targets, drawn from real tokens, keys, hashes,
configurations and requests, into DIR/<target>/ (default: fuzz/seeds-work/).

The committed corpora (fuzz/corpus/<target>/) are what fuzzing grew from these seeds,
minimised with `cargo fuzz cmin`. Rerun this only to start a corpus afresh:

    python3 fuzz/make_seeds.py /tmp/seeds
    cargo +nightly fuzz run token fuzz/corpus/token /tmp/seeds/token -- -runs=0

Standard library only, plus `cryptography` (when installed) for ES256 / EdDSA tokens.
"""

import base64
import hashlib
import hmac
import json
import os
import sys
import time
import zlib

# The fixed secret of fuzz_targets/token.rs and config.rs (and of the crates' tests).
SECRET = "4f1c0f9a7d6e8b2c3a5d7e9f1b3c5d7e9a1b3c5d7e9f1a2b3c4d5e6f7a8b9c0d"
ISS = "https://keygate.test"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jws(header: dict | str, payload: dict | str, key: bytes = SECRET.encode()) -> str:
    h = header if isinstance(header, str) else json.dumps(header, separators=(",", ":"))
    p = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    signing_input = f"{b64(h.encode())}.{b64(p.encode())}"
    mac = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


def claims(now: int, **over) -> dict:
    c = {
        "iss": ISS, "sub": "billing", "aud": "api", "exp": now + 1800, "iat": now,
        "nbf": now, "jti": "3q2-7wAAAAAAAAAAAAAAAA", "client_id": "billing",
        "role": "service", "scope": "orders:read orders:write",
    }
    c.update(over)
    return {k: v for k, v in c.items() if v is not None}


def asymmetric_tokens(now: int) -> list[str]:
    try:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec, ed25519
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
    except ImportError:
        return []
    out = []
    key = ec.generate_private_key(ec.SECP256R1())
    h = {"alg": "ES256", "typ": "at+jwt", "kid": "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"}
    si = f"{b64(json.dumps(h).encode())}.{b64(json.dumps(claims(now)).encode())}"
    r, s = decode_dss_signature(key.sign(si.encode(), ec.ECDSA(hashes.SHA256())))
    out.append(f"{si}.{b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}")
    out.append(f"{si}.{b64(bytes(64))}")  # CVE-2022-21449: r = s = 0
    ed = ed25519.Ed25519PrivateKey.generate()
    h = {"alg": "EdDSA", "typ": "at+jwt", "kid": "x"}
    si = f"{b64(json.dumps(h).encode())}.{b64(json.dumps(claims(now)).encode())}"
    out.append(f"{si}.{b64(ed.sign(si.encode()))}")
    return out


def tokens() -> list[str]:
    now = int(time.time())
    hs = {"alg": "HS256", "typ": "at+jwt"}
    good = jws(hs, claims(now))
    hp, pp, sp = good.split(".")
    out = [
        good,
        jws({"alg": "HS256", "typ": "application/AT+JWT", "kid": "0123456789abcdef"}, claims(now)),
        jws(hs, claims(now, aud=["api", "other"])),
        jws({"alg": "none", "typ": "at+jwt"}, claims(now)).rsplit(".", 1)[0] + ".",
        jws({"alg": "HS256", "typ": "at+jwt", "crit": ["exp"]}, claims(now)),
        jws({"alg": "HS256", "typ": "at+jwt", "zip": "DEF"}, claims(now)),
        jws({"alg": "HS256", "typ": "at+jwt", "jku": "http://127.0.0.1:1/jwks.json",
             "jwk": {"kty": "oct", "k": "YXR0YWNrZXI"}}, claims(now), b"attacker"),
        jws('{"alg":"HS256","alg":"none","typ":"at+jwt"}', claims(now)),
        jws(hs, json.dumps(claims(now)).replace('"role": "service"', '"role":"service","role":"admin"')),
        jws(hs, claims(now, exp="99999999999")),
        jws(hs, claims(now, exp=now + 10 * 86400)),
        jws(hs, claims(now, iat=now + 600, nbf=now + 600)),
        jws(hs, claims(now, jti="")),
        jws(hs, "{\"a\":" * 200 + "1" + "}" * 200),
        jws({"alg": "HS384", "typ": "at+jwt"}, claims(now)),
        f"{hp}.{pp}",
        f"{hp}.{pp}.{sp}.extra",
        f"{hp}=.{pp}.{sp}",
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
        "..",
    ]
    return out + asymmetric_tokens(now)


def api_key(cid: str) -> str:
    body = f"kg_{cid}_{hashlib.sha256(cid.encode()).hexdigest()}"
    return f"{body}{zlib.crc32(body.encode()):08x}"


def keys() -> list[str]:
    good = api_key("billing")
    return [
        good,
        api_key("svc.billing-1@eu_west"),
        api_key("my-service"),
        good[:-1],
        good[:-8] + "00000000",
        "kg_billing_" + good[len("kg_billing_"):].upper(),
        "kg_é_" + "a" * 71,
        "my-old-hand-made-key",
        "kg_",
        "sha256:" + hashlib.sha256(good.encode()).hexdigest(),
        "sha256:9f86",
        "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc",
        "$argon2id$v=19$m=47104,t=1,p=1$c29tZXNhbHRzb21lc2FsdA$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc",
        "$argon2id$v=19$m=4294967295,t=2,p=1$c29tZXNhbHQ$aGFzaA",
        "$argon2i$v=19$m=19456,t=2,p=1$c29tZXNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
        "$argon2id$v=19$m=19456,t=2,p=1,keyid=abc,data=def$c29tZXNhbHQ$aGFzaA",
        "$2b$12$EixZaYVK1fsbw1ZfbX3OXePaWxn96p36WQoeG6Lruj3vjPGga31lW",
        "$2a$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy",
        "$2y$31$EixZaYVK1fsbw1ZfbX3OXePaWxn96p36WQoeG6Lruj3vjPGga31lW",
        "$2b$04$EixZaYVK1fsbw1ZfbX3OXePaWxn96p36WQoeG6Lruj3vjPGga31lW",
        # RUSTSEC-2026-0199: a multi-byte character inside an otherwise valid bcrypt hash.
        "$2b$12$EixZaYVK1fsbw1ZfbX3OXéPaWxn96p36WQoeG6Lruj3vjPGga31l",
        "$2b$04$aaaaaaaaaaaaaaaaaaaaa£aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        SECRET,
        "hex:" + SECRET,
        "base64:" + base64.b64encode(bytes.fromhex(SECRET)).decode(),
        "09d25e094faa6ca2556c818166b7a9563b93f7099f6f0f4caa6cf63b88e8d3e7",
        "your-256-bit-secret",
    ]


def configs() -> list[str]:
    key_hash = "sha256:" + hashlib.sha256(api_key("my-service").encode()).hexdigest()
    full = f"""# keygate configuration (as `keygate init` writes it)
#env KEYGATE_TOKEN_TTL=15m
#env KEYGATE_API_KEY_HEADER=access_token
[server]
listen = "127.0.0.1:8080"
public_url = "http://127.0.0.1:8080"
trusted_proxies = ["127.0.0.1", "::1"]
shutdown_timeout = "30s"
reload_interval = "1s"

[token]
algorithm = "HS256"
secret = "${{KG_SECRET}}"
issuer = "https://auth.example.com"
audience = ["orders-api", "billing-api"]
admin_roles = ["admin"]
ttl = "30m"
leeway = "30s"
key_publish_delay = "10m"

[api_key]
header = "X-API-Key"
query = "api_key"
cookie = "api_key"

[cookie]
enabled = true
name = "keygate_token"
secure = true
same_site = "Strict"

[limits]
failed_attempts = 10
window = "1m"
hashing_concurrency = 2
hashing_queue = 64

[store]
on_unavailable = "deny"

[[clients]]
id = "my-service"
key_hash = "{key_hash}"
role = "service"
scopes = ["orders:read", "orders:write"]
expires_at = "2027-06-30T00:00:00Z"
previous_key_hash = "{key_hash[:-1]}0"
previous_key_expires_at = "2026-12-01T00:00:00Z"

[[clients]]
id = "legacy"
key_hash = "$2b$12$EixZaYVK1fsbw1ZfbX3OXePaWxn96p36WQoeG6Lruj3vjPGga31lW"
role = "service"
revoked_at = "2026-11-01T12:00:00+01:00"

[[users]]
username = "alice@example.com"
password_hash = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc"
role = "admin"
scopes = ["admin:revoke"]
"""
    return [
        full,
        f'[token]\nsecret = "{SECRET}"\n',
        f'[token]\nalgorithm = "HS512"\nsecret = "hex:{SECRET}"\n',
        '[token]\nalgorithm = "ES256"\nsigning_keys = "keys"\n',
        f'[token]\nsecret = "{SECRET}"\n[store]\nurl = "redis://:pw@127.0.0.1:6379/0"\non_unavailable = "allow"\n',
        f'#env KEYGATE_LIMITS_FAILED_ATTEMPTS=3\n#env KEYGATE_LIMITS_WINDOW=2h\n[token]\nsecret = "$${{literal}}{SECRET}"\n',
        f'[token]\nsecret = "{SECRET}"\nttl = "25h"\n',
        f'[token]\nsecret = "{SECRET}"\n[[users]]\nusername = "bob"\npassword_hash = "sha256:{"0" * 64}"\n',
        '[token]\nsecret = "09d25e094faa6ca2556c818166b7a9563b93f7099f6f0f4caa6cf63b88e8d3e7"\n',
        f'[token]\nsecret = "{SECRET}"\n[[clients]]\nid = "a"\nkey_hash = "{key_hash}"\n[[users]]\nusername = "a"\npassword_hash = "$2b$12$EixZaYVK1fsbw1ZfbX3OXePaWxn96p36WQoeG6Lruj3vjPGga31lW"\n',
        "[server\nlisten = ",
    ]


def requests() -> list[str]:
    now = int(time.time())
    token = jws({"alg": "HS256", "typ": "at+jwt"}, claims(now))
    key = api_key("billing")
    basic = base64.b64encode(b"my%3Aclient:s%2Bc+r%25t").decode()
    return [
        f"GET /verify\nAuthorization: Bearer {token}\n",
        f"GET /userinfo\nauthorization: bearer {token}\nCookie: theme=dark; keygate_token={token}\n",
        f"GET /verify\nAuthorization: Bearer {token}\nAuthorization: Bearer {token}\n",
        "GET /verify\nAuthorization: Bearer\n",
        "GET /verify\nAuthorization: Bearer a b\n",
        f"POST /login?api_key={key}\nX-API-Key: {key}\n",
        f"POST /login?api_key=a&api_key=b\naccess_token: {key}\nCookie: api_key=\"{key}\"\n",
        "POST /login?api_key=k%2B1\nCookie: api_key=k+1; api_key=k+1\n",
        f"POST /token\nAuthorization: Basic {basic}\nContent-Type: application/x-www-form-urlencoded\n",
        "POST /token\nAuthorization: basic YmlsbGluZzprZ19iaWxsaW5nX2Fi\n",
        "POST /token\nAuthorization: Basic !!!\n",
        f"POST /token\nX-Fuzz-Basic: billing:{key}\nX-Fuzz-Basic: my%3Aclient:s%2Bc+r%25t\n",
        "GET /\nX-Forwarded-For: 1.2.3.4, 10.0.0.9\r\nCookie: =; ;keygate_token\r\n",
        f"POST /token\nAuthorization: Basic {basic}\nContent-Type: application/x-www-form-urlencoded\n\n"
        "grant_type=client_credentials&scope=orders%3Aread+orders%3Awrite",
        "POST /token\nContent-Type: application/x-www-form-urlencoded; charset=UTF-8\n\n"
        "grant_type=password&username=alice%40example.com&password=p%40ss+w%C3%B6rd&scope=",
        f"POST /token\nContent-Type: Application/X-WWW-Form-Urlencoded\n\n"
        f"grant_type=client_credentials&client_id=billing&client_secret={key}&client_id=other",
        f"POST /revoke\nContent-Type: application/x-www-form-urlencoded\n\ntoken={token}&token_type_hint=access_token",
        'POST /token\nContent-Type: application/json\n\n{"grant_type":"client_credentials"}',
        "POST /introspect\nContent-Type: application/x-www-form-urlencoded\n\ntoken&=x&%zz=%FF%FE&token=",
    ]


def main() -> None:
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "seeds-work")
    sets = {
        # token and api_key: the first byte picks the mode; 0 = the rest as sent.
        "token": [b"\0" + t.encode() for t in tokens()],
        "api_key": [b"\0" + k.encode() for k in keys()]
        + [b"\1billing\0" + b"a" * 32, b"\1svc.billing-1@eu_west\0" + b"f" * 64],
        "config": [c.encode() for c in configs()],
        "credentials": [r.encode() for r in requests()],
    }
    for target, inputs in sets.items():
        d = os.path.join(out, target)
        os.makedirs(d, exist_ok=True)
        for data in inputs:
            name = hashlib.sha1(data).hexdigest()
            with open(os.path.join(d, name), "wb") as f:
                f.write(data)
        print(f"{target}: {len(inputs)} seeds in {d}")


if __name__ == "__main__":
    main()
