"""The seed's httpx client, getting its token from keygate's `/login` with its API key.

Run:  KEYGATE_API_KEY=kg_... python client.py http://127.0.0.1:8000/posts
"""

import os
import sys

import httpx

KEYGATE_URL = os.environ.get("KEYGATE_URL", "http://127.0.0.1:8080")
API_KEY = os.environ["KEYGATE_API_KEY"]
# keygate's `api_key.header`; the seed called it "access_token".
KEY_HEADER = os.environ.get("KEYGATE_API_KEY_HEADER", "X-API-Key")


def login() -> dict:
    r = httpx.post(f"{KEYGATE_URL}/login", headers={KEY_HEADER: API_KEY})
    r.raise_for_status()  # 401 invalid_client: a wrong, expired or revoked key
    return r.json()


def main(url: str) -> int:
    try:
        token = login()
        access_token = token.get("access_token")

        r = httpx.get(
            url=url,
            timeout=None,
            headers={
                "Accept": "application/json",
                "Authorization": f"Bearer {access_token}",
            },
        )
        r.raise_for_status()  # 401 Unauthorized, 404 Not Found
    except httpx.HTTPStatusError as e:
        # One line, without the key or the token.
        print(
            f"{e.request.method} {e.request.url}: {e.response.status_code} {e.response.text}",
            file=sys.stderr,
        )
        return 1
    print(r.text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
