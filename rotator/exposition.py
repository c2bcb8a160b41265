"""The daemon's HTTP endpoints: ``/metrics`` (Prometheus text) and ``/healthz`` (JSON)."""

from __future__ import annotations

import http.server
import json
import logging
import socket
import sys
import threading
from typing import Any, Callable, Mapping, Protocol

from .health import Health
from .logs import log_event
from .metrics import Metrics, render_key_sets

__all__ = ["serve_metrics", "health_report"]


class KeySet(Protocol):
    health: Health
    metrics: Metrics


def health_report(sets: Mapping[str, KeySet]) -> tuple[bool, dict[str, Any]]:
    """(healthy, the /healthz body): healthy when every key set is. With one key set its
    report is the body (as before key sets); with several, each set's is under
    ``key_sets`` and the problems and warnings are named by set."""
    reports = {name: s.health.report() for name, s in sets.items()}
    healthy = all(ok for ok, _ in reports.values())
    if len(reports) == 1:
        (name, (_, body)), = reports.items()
        return healthy, {**body, "key_set": name}
    return healthy, {
        "status": "ok" if healthy else "unhealthy",
        "problems": [f"{name}: {p}" for name, (_, body) in reports.items() for p in body["problems"]],
        "warnings": [f"{name}: {w}" for name, (_, body) in reports.items() for w in body["warnings"]],
        "key_sets": {name: body for name, (_, body) in reports.items()},
    }


def serve_metrics(
    sets: Callable[[], Mapping[str, KeySet]], addr: str, port: int, *, timeout: float, log: logging.Logger
) -> http.server.ThreadingHTTPServer:
    """Serve both endpoints for the key sets ``sets()`` gives at each request, on ``addr``
    (an IPv6 address listens on IPv6; ``*``: every address, IPv6 and IPv4) in a thread of
    their own; ``shutdown()`` stops them. ``timeout``: a connection idle this long
    mid-request is dropped."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                text = render_key_sets({name: s.metrics for name, s in sets().items()})
                self._send(200, text, "text/plain; version=0.0.4; charset=utf-8")
            elif path == "/healthz":
                healthy, report = health_report(sets())
                self._send(200 if healthy else 503, json.dumps(report).encode() + b"\n", "application/json")
            else:
                self._send(404, b"not found: try /metrics or /healthz\n", "text/plain")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    Handler.timeout = timeout  # per connection: an idle half-sent request ends

    everywhere = addr == "*"

    class Server(http.server.ThreadingHTTPServer):
        address_family = socket.AF_INET6 if everywhere or ":" in addr else socket.AF_INET
        request_queue_size = 128
        daemon_threads = True

        def server_bind(self) -> None:
            if everywhere:  # one dual-stack socket: IPv6 and IPv4 (as ::ffff:a.b.c.d) alike
                self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            super().server_bind()

        def handle_error(self, request: Any, client_address: Any) -> None:
            # A client that resets or times out is not the daemon's problem: one quiet JSON
            # line, never a traceback among the JSON logs (a flood of resets cannot fill them).
            error = sys.exc_info()[1]
            log_event(log, "daemon.http_client_error", logging.DEBUG, error=error)

    try:
        server = Server(("::" if everywhere else addr, port), Handler)
    except OSError:
        if not everywhere:
            raise
        Server.address_family = socket.AF_INET  # a host or pod without IPv6: IPv4 alone
        server = Server(("0.0.0.0", port), Handler)
    threading.Thread(target=server.serve_forever, name="rotator-metrics", daemon=True).start()
    host, bound = server.server_address[:2]
    host_text = host.decode() if isinstance(host, bytes) else str(host)
    log_event(log, "daemon.metrics_listening", address=f"{host_text}:{bound}")
    return server
