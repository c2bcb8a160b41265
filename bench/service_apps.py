"""The four ASGI apps bench/service_bench.py loads under uvicorn, chosen by environment:

ROTATOR_BENCH_APP   unprotected | rotator | rotator-rc | pyjwt
ROTATOR_BENCH_JWKS  the JWKS URL (a loopback HTTP server run by the bench)

Each answers GET with a small JSON body; the protected ones first check the bearer token's
ES256 signature, exp, iss and aud.
"""

from __future__ import annotations

import json
import os
from typing import Any

ISS = "https://issuer.example"
AUD = "orders-api"


async def orders(scope: Any, receive: Any, send: Any) -> None:
    claims = scope.get("rotator.claims") or scope.get("pyjwt.claims")
    body = json.dumps({"orders": [], "sub": claims["sub"] if claims else None}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


def pyjwt_app(url: str) -> Any:
    """PyJWT as its documentation shows: PyJWKClient, get_signing_key_from_jwt, jwt.decode."""
    import jwt

    jwks_client = jwt.PyJWKClient(url)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        auth = dict(scope["headers"]).get(b"authorization", b"").decode()
        try:
            token = auth.removeprefix("Bearer ")
            signing_key = jwks_client.get_signing_key_from_jwt(token)
            claims = jwt.decode(token, signing_key.key, algorithms=["ES256"], audience=AUD, issuer=ISS)
        except jwt.PyJWTError:
            await send({"type": "http.response.start", "status": 401, "headers": [(b"www-authenticate", b"Bearer")]})
            await send({"type": "http.response.body", "body": b""})
            return
        await orders({**scope, "pyjwt.claims": claims}, receive, send)

    return app


def make_app() -> Any:
    kind = os.environ.get("ROTATOR_BENCH_APP", "unprotected")
    url = os.environ.get("ROTATOR_BENCH_JWKS", "")
    if kind == "unprotected":
        return orders
    if kind == "pyjwt":
        return pyjwt_app(url)
    from rotator.verifier import Verifier
    from rotator.verifier.asgi import BearerAuth

    # The publisher's max-age in these runs is 2 s: the verifier is configured to honour it.
    options: dict[str, Any] = {"min_max_age": 1.0}
    if kind == "rotator-rc":
        options["result_cache_size"] = 16384
    return BearerAuth(orders, Verifier(url, issuer=ISS, audience=AUD, allow_http=True, **options))


app = make_app()
