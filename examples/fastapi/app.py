"""The seed's blog API (shared/seed, "FastAPI 간단한 Auth 구현 방법"), as its readers wrote
it, now trusting keygate's tokens instead of minting its own.

Kept from the seed: the `OAuth2PasswordBearer` dependency, `get_jwt_data` and
`auth_api_jwt` with their role and expiry checks, and the 401 with
`WWW-Authenticate: Bearer`. Changed: no `/login` or `/token` here (keygate issues the
tokens), PyJWT in place of python-jose, and the key comes from keygate: the HS256 secret
from `keygate.toml`, or for ES256 the public keys from keygate's JWKS.

Run:  KEYGATE_SECRET=... uvicorn app:app              (HS256)
      KEYGATE_ALGORITHM=ES256 uvicorn app:app         (ES256, keys from the JWKS)
"""

import base64
import os
import time

import jwt
from fastapi import Depends, FastAPI, HTTPException, status
from fastapi.security import OAuth2PasswordBearer

KEYGATE_URL = os.environ.get("KEYGATE_URL", "http://127.0.0.1:8080")
ALGORITHM = os.environ.get("KEYGATE_ALGORITHM", "HS256")
# keygate's `token.issuer`, which defaults to its `server.public_url`.
ISSUER = os.environ.get("KEYGATE_ISSUER", KEYGATE_URL)
# keygate's `token.audience`; empty when keygate sets none (then tokens carry no `aud`).
AUDIENCE = os.environ.get("KEYGATE_AUDIENCE") or None
# The roles this API serves (the seed's `check_role`).
ROLES = set(os.environ.get("ALLOWED_ROLES", "service").split(","))


def _secret(value: str) -> bytes:
    """`token.secret` as keygate reads it: the string's bytes, or `hex:` / `base64:`."""
    if value.startswith("hex:"):
        return bytes.fromhex(value[4:])
    if value.startswith("base64:"):
        text = value[7:]
        return base64.urlsafe_b64decode(
            text.replace("+", "-").replace("/", "_") + "=" * (-len(text) % 4)
        )
    return value.encode()


if ALGORITHM == "HS256":
    # The seed's SECRET_KEY, now keygate's `token.secret` (never the docs' example secret:
    # keygate refuses to start with it).
    SECRET_KEY = _secret(os.environ["KEYGATE_SECRET"])

    def signing_key(token: str):
        return SECRET_KEY

elif ALGORITHM == "ES256":
    # Only public keys reach this service. The JWKS is cached for `lifespan` seconds;
    # keygate publishes a new key `token.key_publish_delay` (10 min) before signing with
    # it, longer than this cache lives, so a rotation never meets a stale cache.
    jwks = jwt.PyJWKClient(
        f"{KEYGATE_URL}/.well-known/jwks.json",
        lifespan=float(os.environ.get("JWKS_LIFESPAN", "300")),
    )

    def signing_key(token: str):
        return jwks.get_signing_key_from_jwt(token).key

else:
    raise SystemExit(f"KEYGATE_ALGORITHM={ALGORITHM}: this example speaks HS256 or ES256")

# tokenUrl: where this API's OpenAPI document says tokens come from. Swagger UI's Authorize
# button posts there from the browser, which works when the API and keygate share an origin
# (keygate sends no CORS headers).
oauth2_scheme = OAuth2PasswordBearer(tokenUrl=f"{KEYGATE_URL}/token")

app = FastAPI(title="blog")

POSTS = [{"id": 1, "title": "FastAPI 간단한 Auth 구현 방법"}]


def get_jwt_data(token: str):
    try:
        # The algorithm is pinned here, never taken from the token's header.
        return jwt.decode(
            token,
            signing_key(token),
            algorithms=[ALGORITHM],
            issuer=ISSUER,
            audience=AUDIENCE,
            options={"require": ["exp", "iat", "iss", "sub", "role"]},
        )
    except jwt.PyJWKClientConnectionError:
        # keygate unreachable is not the caller's fault: say so instead of "Invalid token".
        raise HTTPException(
            status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
            detail="Token keys unavailable",
        )
    except jwt.PyJWTError:  # ExpiredSignatureError, bad signature, wrong issuer, unknown kid…
        return None


def check_role(role) -> bool:
    return role in ROLES


def check_exp(exp) -> bool:
    return isinstance(exp, int) and exp > time.time()


def auth_api_jwt(token: str = Depends(oauth2_scheme)):
    """API Key Authentication (JWT)"""
    data = get_jwt_data(token)
    if not data or not check_role(data["role"]) or not check_exp(data["exp"]):
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail="Invalid token",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return data


@app.get("/posts")
def list_posts(data: dict = Depends(auth_api_jwt)):
    return {"reader": data["sub"], "role": data["role"], "posts": POSTS}
