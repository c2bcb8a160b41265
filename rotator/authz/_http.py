"""The HTTP check endpoint, an ASGI app (served by uvicorn in each worker):

- ``/auth/nginx``: nginx ``auth_request``; the original request in ``X-Original-Method`` and
  ``X-Original-URI``, which the nginx configuration sets (overriding any client copy);
- ``/auth/traefik``: Traefik ``forwardAuth``; the original request in ``X-Forwarded-Method``
  and ``X-Forwarded-Uri``, which Traefik sets;
- ``{envoy_prefix}/<original path>``: Envoy's HTTP ``ext_authz`` service, which sends the
  original method, and the original path behind ``path_prefix``;
- ``/healthz`` (200 when this worker has a key set of every issuer and confirmed
  revocations, else 503 naming why), ``/livez`` (200: the process answers) and
  ``/metrics`` (every worker's decisions).

Allow is 200 with the mapped claim headers; the rest is in ``_decide``.
"""

from __future__ import annotations

import json
import time
from typing import Any, Awaitable, Callable, MutableMapping

from ._decide import Authorizer
from ._metrics import SharedMetrics

__all__ = ["CheckApp"]

Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
_BODY_END = {"type": "http.response.body", "body": b""}


def _encoded(headers: tuple[tuple[str, str], ...], body: bytes) -> list[tuple[bytes, bytes]]:
    out = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]
    out.append((b"content-length", str(len(body)).encode()))
    return out


class CheckApp:
    def __init__(self, authorizer: Authorizer, metrics: SharedMetrics, health: Callable[[], list[str]]) -> None:
        self.authorizer = authorizer
        self.metrics = metrics
        self.health = health
        self.envoy_prefix = authorizer.settings.envoy_prefix + "/"
        self._original = {
            "/auth/nginx": (b"x-original-method", b"x-original-uri"),
            "/auth/traefik": (b"x-forwarded-method", b"x-forwarded-uri"),
        }

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Send) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        names = self._original.get(path)
        if names is not None or path.startswith(self.envoy_prefix):
            await self._check(scope, send, names)
        elif path == "/livez":  # the process answers: a liveness probe, and the benchmark's no-op
            await _send(send, 200, _encoded((), b""), b"")
        elif path == "/healthz":
            problems = self.health()
            body = json.dumps({"status": "ok" if not problems else "unhealthy", "problems": problems}).encode()
            await _send(send, 503 if problems else 200, _encoded((("content-type", "application/json"),), body), body)
        elif path == "/metrics":
            body = self.metrics.render().encode()
            await _send(send, 200, _encoded((("content-type", "text/plain; version=0.0.4"),), body), body)
        else:
            await _send(send, 404, _encoded((), b""), b"")

    async def _check(self, scope: MutableMapping[str, Any], send: Send, names: tuple[bytes, bytes] | None) -> None:
        started = time.perf_counter()
        authorization: list[str] = []
        method = original = None
        if names is None and self.authorizer.needs_request:  # Envoy: the method, and the path behind the prefix
            method = scope["method"]
            raw = scope.get("raw_path") or scope["path"].encode()
            original = raw.decode("latin-1")[len(self.envoy_prefix) - 1:]
            if scope.get("query_string"):
                original += "?" + scope["query_string"].decode("latin-1")
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization.append(value.decode("latin-1"))
            elif names is not None:
                if name == names[0]:
                    method = value.decode("latin-1")
                elif name == names[1]:
                    original = value.decode("latin-1")
        # The kept answer without a coroutine; only a request with none kept awaits the verifier.
        decision = self.authorizer.reuse(authorization, method, original) or await self.authorizer.decide_in_full(
            authorization, method, original
        )
        encoded = decision.encoded
        if encoded is None:  # once per Decision: a reused allow keeps its encoding
            encoded = decision.encoded = _encoded(decision.headers, decision.body)
        await _send(send, decision.status, encoded, decision.body)
        self.metrics.record(decision, time.perf_counter() - started)


async def _send(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    """One answer, its headers ``_encoded``."""
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body} if body else _BODY_END)
