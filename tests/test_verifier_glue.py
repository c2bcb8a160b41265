"""The ASGI and WSGI glue under real servers: uvicorn for a pure ASGI app and a FastAPI app,
wsgiref for a Flask app; real HTTP requests on loopback."""

from __future__ import annotations

import http.client
import json
import threading
import time
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest

from rotator.verifier import Verifier
from rotator.verifier.asgi import CLAIMS_KEY, BearerAuth, bearer_claims
from rotator.verifier.wsgi import BearerAuth as WsgiBearerAuth

from .helpers import AUD, ISS, claims_at, wait_for
from .jwks_server import JwksServer, SigningKey
from .web_server import Uvicorn, get


async def hello(scope: Any, receive: Any, send: Any) -> None:
    claims = scope.get(CLAIMS_KEY)
    body = json.dumps({"sub": claims["sub"] if claims else None}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


def verifier_for(jwks: JwksServer, **options: Any) -> Verifier:
    return Verifier(jwks.url, issuer=ISS, audience=AUD, allow_http=True, **options)


def assert_denied(status: int, headers: dict[str, str], body: bytes, code: str) -> None:
    """RFC 6750 section 3.1: invalid_token is a 401, invalid_request a 400; the body names the
    code only, never the verifier's detail."""
    assert status == {"invalid_token": 401, "invalid_request": 400}[code]
    assert headers["www-authenticate"] == f'Bearer realm="api", error="{code}"'
    assert json.loads(body) == {"error": code}


def assert_challenged(status: int, headers: dict[str, str], body: bytes) -> None:
    """A request with no bearer credentials: 401 and a challenge with no error code or
    other error information (RFC 6750 section 3.1)."""
    assert status == 401
    assert headers["www-authenticate"] == 'Bearer realm="api"'
    assert body == b""


def no_credentials(token: str) -> list[dict[str, str | None]]:
    return [{"token": None}, {"authorization": f"Basic {token}"}, {"authorization": "Digest username=x"}]


def malformed(token: str) -> list[dict[str, str | None]]:
    return [
        {"authorization": "Bearer"},
        {"authorization": f"Bearer {token} extra"},
        {"authorization": "Bearer ab!cd"},
        {"authorization": f"bearer\t{token}"},
    ]


def raw_request(port: int, path: str, headers: list[tuple[str, str]], method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    """One request sent exactly as given: the path unnormalised, repeated headers kept."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for name, value in headers:
            conn.putheader(name, value)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


# Paths that a resolving downstream would take to /admin, or that hide a slash or a dot.
SNEAKY_PATHS = [
    "/public/../admin",
    "/public/./../admin",
    "/public/%2e%2e/admin",
    "/public/%2E%2E/admin",
    "/public%2F..%2Fadmin",
    "/public/..%2Fadmin",
    "/public/..;/admin",
    "/public//admin",
    "/public/%5C..%5Cadmin",
    "/public/%252e%252e/admin",
]


def check_requests_edges(port: int, token: str) -> None:
    """The RFC 6750 answers, CORS preflights and excluded paths, as one server sees them."""
    for request in no_credentials(token):
        assert_challenged(*get(f"http://127.0.0.1:{port}/orders", **request))
    for request in malformed(token):
        assert_denied(*get(f"http://127.0.0.1:{port}/orders", **request), "invalid_request")
    # RFC 6750 section 2.1: the scheme in any case, one or more spaces before the token.
    assert get(f"http://127.0.0.1:{port}/orders", authorization=f"BEARER   {token}")[0] == 200
    twice = [("Authorization", f"Bearer {token}"), ("Authorization", f"Bearer {token}")]
    assert_denied(*raw_request(port, "/orders", twice), "invalid_request")
    # A CORS preflight carries no credentials: it reaches the app; a plain OPTIONS does not.
    preflight = [("Origin", "https://app.example"), ("Access-Control-Request-Method", "GET")]
    assert raw_request(port, "/orders", preflight, method="OPTIONS")[0] == 200
    assert_challenged(*raw_request(port, "/orders", [("Origin", "https://app.example")], method="OPTIONS"))
    # Excluded prefixes: open as written, never through dot segments, '//' or encoded separators.
    assert raw_request(port, "/public/page", [])[0] == 200
    for path in SNEAKY_PATHS:
        status, headers, body = raw_request(port, path, [])
        assert status == 401, f"{path} passed without a token ({status})"
        assert_challenged(status, headers, body)


def test_asgi_middleware_under_uvicorn(jwks: JwksServer, key: SigningKey) -> None:
    """The ASGI middleware under uvicorn passes a valid token, answers 401 with WWW-Authenticate
    for a bad one, and leaves excluded paths alone."""
    app = BearerAuth(hello, verifier_for(jwks), exclude=("/healthz",))
    token = key.sign(claims_at(time.time()))
    with Uvicorn(app) as server:
        status, _, body = get(server.url("/orders"), token)
        assert status == 200 and json.loads(body) == {"sub": "user-1"}
        status, headers, body = get(server.url("/orders"), token.lower().swapcase()[:-4] + "AAAA")
        assert_denied(status, headers, body, "invalid_token")
        status, headers, body = get(server.url("/orders"), key.sign({**claims_at(time.time()), "aud": "other"}))
        assert_denied(status, headers, body, "invalid_token")
        assert get(server.url("/healthz"))[0] == 200
        assert get(server.url("/healthz/deep"))[0] == 401  # only the exact path, or a prefix ending in '/'
        # The JWKS host goes away: a cold verifier answers 503 with Retry-After, not 401.
        jwks.stop()
    cold = BearerAuth(hello, verifier_for(jwks, timeout=0.5, connect_timeout=0.5))
    with Uvicorn(cold) as server:
        status, headers, body = get(server.url("/orders"), token)
        assert status == 503 and headers["retry-after"] == "5" and json.loads(body) == {"error": "temporarily_unavailable"}


def test_asgi_answers_rfc6750_lets_preflights_through_and_excludes_only_plain_paths(
    jwks: JwksServer, key: SigningKey
) -> None:
    """Under uvicorn: no credentials is a bare challenge, malformed credentials a 400, a CORS
    preflight reaches the app, and an excluded prefix never opens a dot-segment path."""
    app = BearerAuth(hello, verifier_for(jwks), exclude=("/healthz", "/public/"))
    token = key.sign(claims_at(time.time()))
    with Uvicorn(app) as server:
        check_requests_edges(server.port, token)
        assert get(server.url("/orders"), token)[0] == 200


def test_wsgi_answers_rfc6750_lets_preflights_through_and_excludes_only_plain_paths(
    jwks: JwksServer, key: SigningKey
) -> None:
    """The same rules for the WSGI middleware, under wsgiref with a Flask app."""
    from flask import Flask

    app = Flask("edges")

    @app.route("/orders", methods=["GET"])
    def orders() -> str:
        return "orders"

    @app.get("/public/page")
    def page() -> str:
        return "public"

    app.wsgi_app = WsgiBearerAuth(app.wsgi_app, verifier_for(jwks), exclude=("/healthz", "/public/"))  # type: ignore[method-assign]
    server = make_server("127.0.0.1", 0, app, handler_class=_Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        check_requests_edges(server.server_port, key.sign(claims_at(time.time())))
    finally:
        server.shutdown()


@pytest.mark.parametrize("path", SNEAKY_PATHS)
def test_an_excluded_prefix_never_covers_a_path_that_is_not_plain(path: str) -> None:
    """Whatever a server decodes before the middleware sees it: the decoded path, or the raw one."""
    from urllib.parse import unquote

    from rotator.verifier.bearer import excluded

    assert not excluded(unquote(path), ("/public/",), raw=path)
    assert not excluded(unquote(path), ("/public/",))  # a server that gives no raw path
    assert excluded("/public/page", ("/public/",), raw="/public/page")
    assert excluded("/healthz", ("/healthz",), raw="/healthz")
    assert not excluded("/healthz/deep", ("/healthz",))


def test_wsgi_excludes_by_the_raw_uri_where_the_server_gives_it() -> None:
    """gunicorn's RAW_URI (REQUEST_URI elsewhere) shows an encoded slash PATH_INFO has decoded."""
    seen: list[str] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen.append(environ["PATH_INFO"])
        start_response("200 OK", [])
        return [b"ok"]

    guard = WsgiBearerAuth(app, Verifier("https://issuer.example/jwks.json"), exclude=("/public/",))
    answers: list[str] = []
    for raw_key in ("RAW_URI", "REQUEST_URI"):
        environ = {"PATH_INFO": "/public/x", raw_key: "/public%2Fx?a=1", "REQUEST_METHOD": "GET"}
        guard(environ, lambda status, headers: answers.append(status))
    guard({"PATH_INFO": "/public/x", "RAW_URI": "/public/x?a=%2F", "REQUEST_METHOD": "GET"}, lambda s, h: answers.append(s))
    assert answers == ["401 Unauthorized", "401 Unauthorized", "200 OK"] and seen == ["/public/x"]


def test_asgi_verification_never_blocks_the_event_loop(jwks: JwksServer, key: SigningKey) -> None:
    """Under uvicorn, a slow JWKS fetch never blocks other requests on the event loop."""
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
        assert get(server.url("/healthz"))[0] == 200
        # Answered while the cold fetch is still in flight: the loop did not wait on it.
        assert jwks.in_flight == 1, "a request waited on the JWKS fetch"
        t.join(10)
        assert results["slow"] == 200


def test_fastapi_dependency(jwks: JwksServer, key: SigningKey) -> None:
    """The FastAPI dependency gives the claims to the route and a 401 for a bad token."""
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
        assert status == 401 and headers["www-authenticate"] == 'Bearer realm="api"'
        status, headers, body = get(server.url("/me"), authorization="Bearer a b")
        assert status == 400 and headers["www-authenticate"] == 'Bearer realm="api", error="invalid_request"'
        status, headers, _ = get(server.url("/me"), token[:-4] + "AAAA")
        assert status == 401 and 'error="invalid_token"' in headers["www-authenticate"]
    # Behind the middleware, the dependency takes the claims it already verified.
    with Uvicorn(BearerAuth(app, verifier)) as server:
        assert json.loads(get(server.url("/me"), token)[2]) == {"sub": "user-1"}


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


def test_wsgi_middleware_with_flask(jwks: JwksServer, key: SigningKey) -> None:
    """The WSGI middleware protects a Flask app and hands it the claims."""
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
    """Importing the ASGI and WSGI glue imports no web framework."""
    import subprocess
    import sys

    code = (
        "import sys, rotator.verifier, rotator.verifier.asgi, rotator.verifier.wsgi\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('boto3', 'botocore', 'apscheduler', 'redis', 'starlette', 'fastapi', 'flask', 'uvicorn', 'django')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)

