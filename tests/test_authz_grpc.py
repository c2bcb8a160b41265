"""Envoy's gRPC ext_authz contract (envoy.service.auth.v3.Authorization/Check), through a
grpcio client built from the protos Envoy publishes (xds-protos), against a running
`rotator authz` with a real redis-server. Envoy itself is not obtainable here: the requests
are built as Envoy's docs specify (attributes.request.http with lower-case header names)."""

from __future__ import annotations

import time
from typing import Any, Iterator

import grpc
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import attribute_context_pb2 as attributes
from envoy.service.auth.v3 import external_auth_pb2 as ext
from envoy.service.auth.v3 import external_auth_pb2_grpc as ext_grpc
from google.rpc import code_pb2

from .authz_harness import Authz, authz_config
from .helpers import claims_at
from .jwks_server import JwksServer, SigningKey
from .redis_server import RedisServer

TABLES = """
[authz.headers]
sub = "X-Auth-Subject"
tenant = "X-Auth-Tenant"

[[authz.rules]]
path = "/admin/"
methods = ["POST"]
claims = { tenant = "acme" }
"""


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SigningKey, RedisServer, Any]]:
    tmp = tmp_path_factory.mktemp("authz-grpc")
    key = SigningKey()
    redis = RedisServer(tmp / "redis").start()
    try:
        with JwksServer([key]) as jwks:
            config = authz_config(jwks.url, redis_url=redis.url, grpc=True, tables=TABLES)
            with Authz(tmp, config) as authz, grpc.insecure_channel(f"127.0.0.1:{authz.grpc_port}") as channel:
                yield key, redis, ext_grpc.AuthorizationStub(channel)
    finally:
        redis.stop()


def check(stub: Any, token: str | None, method: str = "GET", path: str = "/orders", **headers: str) -> ext.CheckResponse:
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    http = attributes.AttributeContext.HttpRequest(method=method, path=path, headers=headers)
    request = ext.CheckRequest(attributes=attributes.AttributeContext(request=attributes.AttributeContext.Request(http=http)))
    return stub.Check(request, timeout=10)


def test_allow_sets_the_claim_headers_overwriting_and_removes_the_rest(running: Any) -> None:
    """OK with the mapped claims as upstream headers set with OVERWRITE_IF_EXISTS_OR_ADD (a
    client copy is replaced, never appended to), and every mapped header the token has no
    claim for in headers_to_remove."""
    key, _, stub = running
    response = check(stub, key.sign(claims_at(time.time())), **{"x-auth-tenant": "evil"})
    assert response.status.code == code_pb2.OK
    headers = {o.header.key: (o.header.value, o.append_action) for o in response.ok_response.headers}
    assert headers == {"X-Auth-Subject": ("user-1", base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD)}
    assert list(response.ok_response.headers_to_remove) == ["x-auth-tenant"]


def test_denials_carry_their_http_answer(running: Any) -> None:
    """No token: UNAUTHENTICATED with a 401 and the bare challenge; a forged signature:
    UNAUTHENTICATED, invalid_token; a rule's claim not met: PERMISSION_DENIED, 403."""
    key, _, stub = running
    response = check(stub, None)
    assert response.status.code == code_pb2.UNAUTHENTICATED and response.denied_response.status.code == 401
    assert {o.header.key: o.header.value for o in response.denied_response.headers}["www-authenticate"] == 'Bearer realm="api"'
    token = key.sign(claims_at(time.time(), tenant="other"))
    response = check(stub, token[:-6] + "AAAAAA")
    assert response.status.code == code_pb2.UNAUTHENTICATED
    assert 'error="invalid_token"' in {o.header.key: o.header.value for o in response.denied_response.headers}["www-authenticate"]
    response = check(stub, token, method="POST", path="/admin/users")
    assert response.status.code == code_pb2.PERMISSION_DENIED and response.denied_response.status.code == 403
    assert check(stub, token, method="GET", path="/admin/users").status.code == code_pb2.OK
    assert check(stub, key.sign(claims_at(time.time(), tenant="acme")), method="POST", path="/admin/users").status.code == code_pb2.OK


def test_unconfirmed_revocations_answer_unavailable_inside_a_response(running: Any) -> None:
    """redis-server stopped: past the 2 s bound the answer is a CheckResponse with UNAVAILABLE
    and a 503, not a gRPC error (which Envoy's failure_mode_allow could turn into an allow)."""
    key, redis, stub = running
    token = key.sign(claims_at(time.time()))
    redis.pause()
    try:
        deadline = time.monotonic() + 15
        while True:
            response = check(stub, token)
            if response.status.code != code_pb2.OK:
                break
            assert time.monotonic() < deadline, "still allowing with redis-server stopped"
            time.sleep(0.1)
        assert response.status.code == code_pb2.UNAVAILABLE and response.denied_response.status.code == 503
    finally:
        redis.resume()
