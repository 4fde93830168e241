"""Real clients nobody at keygate wrote, run against a live keygate.

Usage: clients.py '<json>' where the JSON names the server and what to check:
  {"check": "verify", "base": ..., "token": ..., "alg": ..., "issuer": ..., "audience": ...,
   "secret": ... (HS* only)}
  {"check": "oauth", "base": ..., "client_id": ..., "client_secret": ...,
   "username": ..., "password": ..., "scope": ...}
Prints one line per check and exits non-zero on the first failure.
"""

import base64
import json
import sys

import requests


def verify(c):
    import jwt as pyjwt
    from joserfc import jwt as rfc_jwt
    from joserfc.jwk import KeySet, OctKey

    alg, token, iss, aud = c["alg"], c["token"], c["issuer"], c["audience"]
    meta = requests.get(c["base"] + "/.well-known/openid-configuration", timeout=10).json()

    # PyJWT: with the secret, or with PyJWKClient on the JWKS found by discovery.
    if alg.startswith("HS"):
        key = c["secret"]
    else:
        key = pyjwt.PyJWKClient(meta["jwks_uri"]).get_signing_key_from_jwt(token).key
    claims = pyjwt.decode(token, key, algorithms=[alg], audience=aud, issuer=iss)
    assert claims["sub"] == c["sub"], claims
    print(f"pyjwt {alg}: ok sub={claims['sub']}")

    # PyJWT refuses it with another audience: the check above is not vacuous.
    try:
        pyjwt.decode(token, key, algorithms=[alg], audience="someone-else", issuer=iss)
        raise AssertionError("pyjwt accepted a wrong audience")
    except pyjwt.InvalidAudienceError:
        pass

    # python-jose (no EdDSA support in python-jose 3.5: joserfc covers it below).
    if alg != "EdDSA":
        from jose import jwt as jose_jwt

        jose_key = c["secret"] if alg.startswith("HS") else requests.get(meta["jwks_uri"], timeout=10).json()
        claims = jose_jwt.decode(token, jose_key, algorithms=[alg], audience=aud, issuer=iss)
        assert claims["sub"] == c["sub"], claims
        print(f"python-jose {alg}: ok")

    # joserfc, a third implementation, for every algorithm.
    if alg.startswith("HS"):
        rfc_key = OctKey.import_key(c["secret"].encode())
    else:
        rfc_key = KeySet.import_key_set(requests.get(meta["jwks_uri"], timeout=10).json())
    tok = rfc_jwt.decode(token, rfc_key, algorithms=[alg])
    assert tok.header["typ"] == "at+jwt", tok.header
    assert tok.claims["iss"] == iss and tok.claims["sub"] == c["sub"], tok.claims
    print(f"joserfc {alg}: ok")


def oauth(c):
    from authlib.integrations.requests_client import OAuth2Session

    meta = requests.get(c["base"] + "/.well-known/oauth-authorization-server", timeout=10).json()
    token_url = meta["token_endpoint"]
    assert "client_credentials" in meta["grant_types_supported"], meta

    tokens = {}
    for method in ("client_secret_basic", "client_secret_post"):
        client = OAuth2Session(
            c["client_id"], c["client_secret"], token_endpoint_auth_method=method, scope=c["scope"]
        )
        t = client.fetch_token(token_url, grant_type="client_credentials")
        assert t["token_type"] == "Bearer" and t["expires_in"] > 0, t
        assert t["scope"] == c["scope"], t
        tokens[method] = t["access_token"]
        print(f"authlib client_credentials {method}: ok")

    # A wrong secret is refused the standard way.
    bad = OAuth2Session(c["client_id"], "wrong", token_endpoint_auth_method="client_secret_basic")
    try:
        bad.fetch_token(token_url, grant_type="client_credentials")
        raise AssertionError("authlib got a token with a wrong secret")
    except Exception as e:  # authlib raises OAuthError with the server's error code
        assert "invalid_client" in str(e), e
    print("authlib wrong secret: invalid_client")

    # The password grant: by the public client (no client authentication, its id
    # `keygate`), then by the confidential client, which is authenticated first.
    def client_id_of(token):
        payload = token.split(".")[1]
        return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["client_id"]

    user = OAuth2Session(client_id="keygate", token_endpoint_auth_method="none")
    t = user.fetch_token(token_url, username=c["username"], password=c["password"])
    assert t["token_type"] == "Bearer", t
    assert client_id_of(t["access_token"]) == "keygate", t
    confidential = OAuth2Session(
        c["client_id"], c["client_secret"], token_endpoint_auth_method="client_secret_basic"
    )
    t = confidential.fetch_token(token_url, username=c["username"], password=c["password"])
    assert client_id_of(t["access_token"]) == c["client_id"], t
    print("authlib password grant: ok")

    # Introspection and revocation through the endpoints the metadata names.
    client = OAuth2Session(c["client_id"], c["client_secret"], token_endpoint_auth_method="client_secret_basic")
    token = tokens["client_secret_basic"]
    r = client.introspect_token(meta["introspection_endpoint"], token=token)
    assert r.status_code == 200 and r.json()["active"] is True, r.text
    r = client.revoke_token(meta["revocation_endpoint"], token=token, token_type_hint="access_token")
    assert r.status_code == 200, r.text
    r = client.introspect_token(meta["introspection_endpoint"], token=token)
    assert r.json() == {"active": False}, r.text
    print("authlib introspect + revoke: ok")


if __name__ == "__main__":
    config = json.loads(sys.argv[1])
    {"verify": verify, "oauth": oauth}[config["check"]](config)
