"""Envoy's gRPC external authorization service, ``envoy.service.auth.v3.Authorization/Check``
(grpcio, with the protos Envoy publishes, from PyPI's ``xds-protos``).

Every answer is a ``CheckResponse``, never a gRPC error: Envoy applies its
``failure_mode_allow`` to errors and timeouts of the call itself, so a verifier without
keys answers ``UNAVAILABLE`` inside a response, which Envoy always turns into a denial
(503). Allow sets the mapped claim headers on the upstream request, overwriting, and
removes every other mapped header, so a client can never supply one.
"""

from __future__ import annotations

import time
from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2 as ext
from envoy.service.auth.v3 import external_auth_pb2_grpc as ext_grpc
from envoy.type.v3 import http_status_pb2
from google.rpc import code_pb2, status_pb2

from ._decide import Authorizer, Decision
from ._metrics import SharedMetrics

__all__ = ["AuthorizationService", "add_to_server"]

_CODES = {
    200: code_pb2.OK,
    400: code_pb2.INVALID_ARGUMENT,
    401: code_pb2.UNAUTHENTICATED,
    403: code_pb2.PERMISSION_DENIED,
    503: code_pb2.UNAVAILABLE,
}
_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD


def _option(name: str, value: str) -> base_pb2.HeaderValueOption:
    return base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=name, value=value), append_action=_OVERWRITE)


class AuthorizationService(ext_grpc.AuthorizationServicer):  # type: ignore[misc]
    def __init__(self, authorizer: Authorizer, metrics: SharedMetrics) -> None:
        self.authorizer = authorizer
        self.metrics = metrics
        self.mapped = [header.lower() for _, header in authorizer.settings.headers]

    async def Check(self, request: Any, context: Any) -> ext.CheckResponse:  # noqa: N802 (the proto's name)
        started = time.perf_counter()
        http = request.attributes.request.http
        authorization = http.headers.get("authorization")
        decision = await self.authorizer.decide(
            [authorization] if authorization is not None else [], http.method or None, http.path or None
        )
        response = self.response(decision)
        self.metrics.record(decision, time.perf_counter() - started)
        return response

    def response(self, decision: Decision) -> ext.CheckResponse:
        status = status_pb2.Status(code=_CODES[decision.status])
        if decision.status == 200:
            upstream = [(k, v) for k, v in decision.headers if k != "cache-control"]
            setting = {k.lower() for k, _ in upstream}
            return ext.CheckResponse(status=status, ok_response=ext.OkHttpResponse(
                headers=[_option(k, v) for k, v in upstream],
                headers_to_remove=[h for h in self.mapped if h not in setting],
            ))
        return ext.CheckResponse(status=status, denied_response=ext.DeniedHttpResponse(
            status=http_status_pb2.HttpStatus(code=decision.status),
            headers=[_option(k, v) for k, v in decision.headers],
            body=decision.body.decode("utf-8"),
        ))


def add_to_server(server: grpc.aio.Server, service: AuthorizationService) -> None:
    ext_grpc.add_AuthorizationServicer_to_server(service, server)
