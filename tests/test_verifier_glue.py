"""The ASGI and WSGI glue under real servers: uvicorn for a pure ASGI app and a FastAPI app,
wsgiref for a Flask app; real HTTP requests on loopback."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from typing import Any, Iterator
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest
import uvicorn

from rotator.verifier import Verifier
from rotator.verifier.asgi import CLAIMS_KEY, BearerAuth, bearer_claims
from rotator.verifier.wsgi import BearerAuth as WsgiBearerAuth

from .conftest import wait_for
from .jwks_server import JwksServer, SigningKey
from .ports import free_port
from .test_verifier_http import AUD, ISS, claims_at


def get(url: str, token: str | None = None, authorization: str | None = None) -> tuple[int, dict[str, str], bytes]:
    headers = {}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if authorization is not None:
        headers["Authorization"] = authorization
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


class Uvicorn:
    def __init__(self, app: Any) -> None:
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "Uvicorn":
        self.thread.start()
        wait_for(lambda: self.server.started, timeout=10, what="uvicorn to start")
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(10)

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"


async def hello(scope: Any, receive: Any, send: Any) -> None:
    claims = scope.get(CLAIMS_KEY)
    body = json.dumps({"sub": claims["sub"] if claims else None}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture
def key() -> SigningKey:
    return SigningKey()


@pytest.fixture
def jwks(key: SigningKey) -> Iterator[JwksServer]:
    with JwksServer([key]) as server:
        yield server


def verifier_for(jwks: JwksServer, **options: Any) -> Verifier:
    return Verifier(jwks.url, issuer=ISS, audience=AUD, allow_http=True, **options)


def assert_denied(status: int, headers: dict[str, str], body: bytes, code: str) -> None:
    assert status == 401
    assert headers["www-authenticate"] == f'Bearer realm="api", error="{code}"'
    assert json.loads(body) == {"error": code}  # the code only, never the verifier's detail


def bad_requests(token: str) -> list[dict[str, str | None]]:
    return [
        {"token": None},
        {"authorization": f"Basic {token}"},
        {"authorization": "Bearer"},
        {"authorization": f"Bearer {token} extra"},
        {"authorization": "Bearer ab!cd"},
    ]


def test_asgi_middleware_under_uvicorn(jwks: JwksServer, key: SigningKey) -> None:
    app = BearerAuth(hello, verifier_for(jwks), exclude=("/healthz",))
    token = key.sign(claims_at(time.time()))
    with Uvicorn(app) as server:
        status, _, body = get(server.url("/orders"), token)
        assert status == 200 and json.loads(body) == {"sub": "user-1"}
        status, headers, body = get(server.url("/orders"), token.lower().swapcase()[:-4] + "AAAA")
        assert_denied(status, headers, body, "invalid_token")
        status, headers, body = get(server.url("/orders"), key.sign({**claims_at(time.time()), "aud": "other"}))
        assert_denied(status, headers, body, "invalid_token")
        for request in bad_requests(token):
            assert_denied(*get(server.url("/orders"), **request), "invalid_request")  # type: ignore[arg-type]
        assert get(server.url("/healthz"))[0] == 200
        assert get(server.url("/healthz/deep"))[0] == 401  # only the exact path, or a prefix ending in '/'
        # The JWKS host goes away: a cold verifier answers 503 with Retry-After, not 401.
        jwks.stop()
    cold = BearerAuth(hello, verifier_for(jwks, timeout=0.5, connect_timeout=0.5))
    with Uvicorn(cold) as server:
        status, headers, body = get(server.url("/orders"), token)
        assert status == 503 and headers["retry-after"] == "5" and json.loads(body) == {"error": "temporarily_unavailable"}


def test_asgi_verification_never_blocks_the_event_loop(jwks: JwksServer, key: SigningKey) -> None:
    jwks.delay = 1.0  # every JWKS fetch takes a second
    app = BearerAuth(hello, verifier_for(jwks), exclude=("/healthz",))
    token = key.sign(claims_at(time.time()))
    with Uvicorn(app) as server:
        results: dict[str, Any] = {}

        def slow() -> None:
            results["slow"] = get(server.url("/orders"), token)[0]

        t = threading.Thread(target=slow)
        t.start()
        wait_for(lambda: jwks.in_flight == 1, timeout=5, what="the cold fetch")
        started = time.monotonic()
        assert get(server.url("/healthz"))[0] == 200
        assert time.monotonic() - started < 0.3, "a request waited on the JWKS fetch"
        t.join(10)
        assert results["slow"] == 200


def test_fastapi_dependency(jwks: JwksServer, key: SigningKey) -> None:
    from fastapi import Depends, FastAPI

    verifier = verifier_for(jwks)
    app = FastAPI()

    @app.get("/me")
    async def me(claims: dict[str, Any] = Depends(bearer_claims(verifier))) -> dict[str, Any]:
        return {"sub": claims["sub"]}

    token = key.sign(claims_at(time.time()))
    with Uvicorn(app) as server:
        status, _, body = get(server.url("/me"), token)
        assert status == 200 and json.loads(body) == {"sub": "user-1"}
        status, headers, body = get(server.url("/me"))
        assert status == 401 and headers["www-authenticate"] == 'Bearer realm="api", error="invalid_request"'
        status, headers, _ = get(server.url("/me"), token[:-4] + "AAAA")
        assert status == 401 and 'error="invalid_token"' in headers["www-authenticate"]
    # Behind the middleware, the dependency takes the claims it already verified.
    with Uvicorn(BearerAuth(app, verifier)) as server:
        assert json.loads(get(server.url("/me"), token)[2]) == {"sub": "user-1"}


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


def test_wsgi_middleware_with_flask(jwks: JwksServer, key: SigningKey) -> None:
    from flask import Flask, request

    app = Flask("orders")

    @app.get("/orders")
    def orders() -> dict[str, Any]:
        return {"sub": request.environ["rotator.claims"]["sub"]}

    @app.get("/healthz")
    def healthz() -> str:
        return "ok"

    app.wsgi_app = WsgiBearerAuth(app.wsgi_app, verifier_for(jwks), exclude=("/healthz",))  # type: ignore[method-assign]
    server = make_server("127.0.0.1", 0, app, handler_class=_Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    token = key.sign(claims_at(time.time()))
    try:
        status, _, body = get(f"{base}/orders", token)
        assert status == 200 and json.loads(body) == {"sub": "user-1"}
        assert_denied(*get(f"{base}/orders", token[:-4] + "AAAA"), "invalid_token")
        for request_ in bad_requests(token):
            assert_denied(*get(f"{base}/orders", **request_), "invalid_request")  # type: ignore[arg-type]
        assert get(f"{base}/healthz")[0] == 200
        jwks.stop()
        cold = WsgiBearerAuth(app.wsgi_app, verifier_for(jwks, timeout=0.5, connect_timeout=0.5))
        environ: dict[str, Any] = {"PATH_INFO": "/orders", "HTTP_AUTHORIZATION": f"Bearer {token}"}
        answered: list[Any] = []
        body_parts = cold(environ, lambda status, headers: answered.append((status, dict(headers))))
        assert answered[0][0] == "503 Service Unavailable" and answered[0][1]["Retry-After"] == "5"
        assert json.loads(b"".join(body_parts)) == {"error": "temporarily_unavailable"}
    finally:
        server.shutdown()


def test_glue_imports_no_framework() -> None:
    import subprocess
    import sys

    code = (
        "import sys, rotator.verifier, rotator.verifier.asgi, rotator.verifier.wsgi\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('boto3', 'botocore', 'apscheduler', 'redis', 'starlette', 'fastapi', 'flask', 'uvicorn', 'django')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)

