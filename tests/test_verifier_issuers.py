"""Several trusted issuers (rotator.verifier.Issuers) and issuers given by URL alone (OpenID
discovery), against real local HTTPS servers: each issuer's tokens verify with its own key
cache and algorithms; a token claiming another issuer than its key's is refused; an
untrusted iss causes no fetch; a discovery document naming another issuer is refused; the
ASGI and WSGI glue, the result cache and revocation (a real redis-server) work the same."""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from typing import Any, Iterator

import pytest

from rotator._b64 import b64url_encode
from rotator.jose import InvalidToken, Revoked, WrongIssuer, header_segment, sign
from rotator.keys import generate_private_key, public_jwk, thumbprint
from rotator.revocation import RevocationStore
from rotator.verifier import Issuers, Verifier, discover
from rotator.verifier.asgi import CLAIMS_KEY, BearerAuth
from rotator.verifier.wsgi import BearerAuth as WsgiBearerAuth

from .helpers import result_entries, self_signed_cert
from .jwks_server import JwksServer
from .redis_server import RedisServer, module_redis
from .web_server import Uvicorn, Wsgiref, get

AUD = "orders-api"


class Issuer:
    """An issuer: a key of its algorithm, its HTTPS JWKS server, and its issuer URL."""

    def __init__(self, alg: str, server: JwksServer) -> None:
        self.alg, self.server = alg, server
        self.private = generate_private_key(alg)
        jwk = public_jwk(self.private)
        self.kid = thumbprint(jwk)
        server.body_override = json.dumps({"keys": [{**jwk, "kid": self.kid, "alg": alg, "use": "sig"}]}).encode()
        self.url = server.url.rsplit("/keys/", 1)[0]

    def token(self, iss: str | None = None, **extra: Any) -> str:
        now = int(time.time())
        claims = {"iss": iss or self.url, "aud": AUD, "sub": "user-1", "iat": now, "exp": now + 600, **extra}
        signing_input = f"{header_segment(self.kid, self.alg)}.{b64url_encode(json.dumps(claims).encode())}"
        return f"{signing_input}.{b64url_encode(sign(self.alg, self.private, signing_input.encode()))}"


@pytest.fixture
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    cert, private = self_signed_cert(tmp_path_factory.mktemp("tls"))
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, private)
    return server_ctx, ssl.create_default_context(cafile=cert)


@pytest.fixture
def issuers(tls: tuple[ssl.SSLContext, ssl.SSLContext]) -> Iterator[tuple[Issuer, Issuer]]:
    with JwksServer([], tls=tls[0]) as a, JwksServer([], tls=tls[0]) as b:
        yield Issuer("ES256", a), Issuer("RS256", b)


def verifier_for(issuer: Issuer, context: ssl.SSLContext) -> Verifier:
    return Verifier(issuer.server.url, issuer=issuer.url, audience=AUD, algorithms=(issuer.alg,), ssl_context=context)


def test_each_trusted_issuers_tokens_verify_with_its_own_keys(issuers: tuple[Issuer, Issuer], tls: Any) -> None:
    """Tokens of two issuers (ES256 and RS256) verify through one Issuers, sync and async,
    each fetching from its own JWKS server only."""
    a, b = issuers
    both = Issuers({a.url: verifier_for(a, tls[1]), b.url: verifier_for(b, tls[1])})
    assert both.verify(a.token())["iss"] == a.url
    assert asyncio.run(both.averify(b.token()))["iss"] == b.url
    assert (a.server.requests, b.server.requests) == (1, 1)
    assert set(both.stats()) == {a.url, b.url} and both.health() == []


def test_a_token_claiming_another_issuer_than_its_key_is_refused(issuers: tuple[Issuer, Issuer], tls: Any) -> None:
    """Signed with issuer A's key but claiming issuer B: B's verifier does not hold A's key
    (nor A's algorithm), so it is refused; and A's own verifier refuses it for its iss."""
    a, b = issuers
    both = Issuers({a.url: verifier_for(a, tls[1]), b.url: verifier_for(b, tls[1])})
    with pytest.raises(InvalidToken):
        both.verify(a.token(iss=b.url))
    with pytest.raises(WrongIssuer):
        verifier_for(a, tls[1]).verify(a.token(iss=b.url))


def test_an_untrusted_issuer_causes_no_fetch(issuers: tuple[Issuer, Issuer], tls: Any) -> None:
    """A token naming an issuer not configured (or none, or a non-string) is refused before
    any verifier fetches anything: no value from a token becomes a URL."""
    a, b = issuers
    both = Issuers({a.url: verifier_for(a, tls[1]), b.url: verifier_for(b, tls[1])})
    for iss in ("https://evil.example", f"{a.url}/", a.url.upper()):
        with pytest.raises(WrongIssuer, match="not one this service trusts"):
            both.verify(a.token(iss=iss))
    with pytest.raises(WrongIssuer):
        both.verify(a.token(iss=["x"]))  # type: ignore[arg-type]
    assert (a.server.requests, b.server.requests) == (0, 0)


def test_issuers_refuses_a_verifier_of_another_issuer(issuers: tuple[Issuer, Issuer], tls: Any) -> None:
    """Each issuer's Verifier must check that same issuer."""
    a, b = issuers
    with pytest.raises(ValueError, match="must be the same"):
        Issuers({a.url: verifier_for(b, tls[1])})


def test_discovery_finds_the_jwks_and_checks_the_issuer(issuers: tuple[Issuer, Issuer], tls: Any) -> None:
    """Given only its issuer URL, the verifier reads the discovery document over HTTPS and
    uses its jwks_uri; a document naming another issuer, a plain-http jwks_uri or a document
    that is not JSON is refused with the reason."""
    a, _ = issuers
    with JwksServer([], tls=tls[0]) as discovery_server:
        issuer_url = discovery_server.url.rsplit("/keys/", 1)[0]
        discovery_server.body_override = json.dumps({"issuer": issuer_url, "jwks_uri": a.server.url}).encode()
        v = discover(issuer_url, audience=AUD, ssl_context=tls[1])
        assert v.jwks_url == a.server.url and v.issuer == issuer_url
        assert v.verify(a.token(iss=issuer_url))["sub"] == "user-1"
        for doc, fragment in (
            ({"issuer": a.url, "jwks_uri": a.server.url}, "names issuer"),
            ({"issuer": issuer_url, "jwks_uri": "http://example.com/jwks.json"}, "is plain http; use https"),
            ({"issuer": issuer_url}, "has no jwks_uri"),
        ):
            discovery_server.body_override = json.dumps(doc).encode()
            with pytest.raises(ValueError, match=fragment):
                discover(issuer_url, audience=AUD, ssl_context=tls[1])
        discovery_server.body_override = b"<html>not json</html>"
        with pytest.raises(ValueError, match="not strict JSON"):
            discover(issuer_url, ssl_context=tls[1])
        discovery_server.fail_status = 302
        with pytest.raises(ValueError, match="HTTP 302"):
            discover(issuer_url, ssl_context=tls[1])


# -- the glue, the result cache and revocation, with several issuers ---------------------------


async def whoami(scope: Any, receive: Any, send: Any) -> None:
    claims = scope[CLAIMS_KEY]
    body = json.dumps({"iss": claims["iss"], "sub": claims["sub"]}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


def whoami_wsgi(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    claims = environ[CLAIMS_KEY]
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps({"iss": claims["iss"], "sub": claims["sub"]}).encode()]


def test_the_asgi_and_wsgi_glue_take_several_issuers(issuers: tuple[Issuer, Issuer], tls: Any) -> None:
    """BearerAuth under uvicorn and under wsgiref, given an Issuers: each trusted issuer's token
    reaches the app with its claims, an untrusted iss is a 401 (no fetch), and one issuer's
    JWKS host down is a 503 for its tokens only while the other's keep passing."""
    a, b = issuers
    both = Issuers({a.url: verifier_for(a, tls[1]), b.url: verifier_for(b, tls[1])})
    with Uvicorn(BearerAuth(whoami, both)) as asgi, Wsgiref(WsgiBearerAuth(whoami_wsgi, both)) as wsgi:
        for server in (asgi, wsgi):
            for issuer in (a, b):
                status, _, body = get(server.url("/orders"), issuer.token())
                assert status == 200 and json.loads(body) == {"iss": issuer.url, "sub": "user-1"}
            status, headers, _ = get(server.url("/orders"), a.token(iss="https://evil.example"))
            assert status == 401 and 'error="invalid_token"' in headers["www-authenticate"]
        assert (a.server.requests, b.server.requests) == (1, 1)

        cold = Issuers({a.url: verifier_for(a, tls[1]), b.url: Verifier(
            b.server.url, issuer=b.url, audience=AUD, algorithms=("RS256",), ssl_context=tls[1], timeout=0.5)})
        b.server.fail_status = 500
        with Uvicorn(BearerAuth(whoami, cold)) as cold_asgi:
            assert get(cold_asgi.url("/orders"), a.token())[0] == 200
            status, headers, _ = get(cold_asgi.url("/orders"), b.token())
            assert status == 503 and headers["retry-after"] == "5"
            assert any(problem.startswith(f"{b.url}: ") for problem in cold.health())


redis_server = module_redis("redis_server")


def test_result_cache_and_revocation_keep_each_issuer_to_itself(
    issuers: tuple[Issuer, Issuer], tls: Any, redis_server: RedisServer
) -> None:
    """Two issuers, each with a result cache and its own revocation store (its own prefix on
    one redis-server): the same subject name at both is two users. Revoking it at A voids
    A's cached token at once and leaves B's accepted; denying B's jti voids B's only. The
    same Issuers answers the same through averify."""
    a, b = issuers
    store_a = RevocationStore.from_url(redis_server.url, prefix="issuer-a:")
    store_b = RevocationStore.from_url(redis_server.url, prefix="issuer-b:")
    try:
        options = {"result_cache_size": 64, "ssl_context": tls[1], "audience": AUD}
        both = Issuers({
            a.url: Verifier(a.server.url, issuer=a.url, algorithms=("ES256",), revocations=store_a, **options),
            b.url: Verifier(b.server.url, issuer=b.url, algorithms=("RS256",), revocations=store_b, **options),
        })
        token_a, token_b = a.token(jti="a-1"), b.token(jti="b-1")
        for _ in range(3):
            assert both.verify(token_a)["iss"] == a.url and both.verify(token_b)["iss"] == b.url
        for verifier in both.verifiers.values():  # each issuer's own cache holds its own token
            assert len(result_entries(verifier)) == 1

        store_a.revoke_subject("user-1")
        with pytest.raises(Revoked):
            both.verify(token_a)  # a cached accept: the replica is read on every hit
        assert both.verify(token_b)["sub"] == "user-1"
        assert asyncio.run(both.averify(token_b))["sub"] == "user-1"

        store_b.deny("b-1", time.time() + 600)
        with pytest.raises(Revoked):
            asyncio.run(both.averify(token_b))
        fresh_b = b.token(jti="b-2")
        assert both.verify(fresh_b)["jti"] == "b-2"
    finally:
        store_a.close()
        store_b.close()
