"""A real HTTP server on loopback that serves a JWKS and misbehaves on request.

It counts requests, answers conditional GETs with 304, and can delay, hang until
released, fail with a status, serve an arbitrary body, or stop listening altogether.
Used by the verifier tests and by bench/stampede_bench.py.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import ssl
import threading
import time
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from rotator.jose import es256_signature, header_segment, payload_segment
from rotator.keys import public_jwk, thumbprint


class SigningKey:
    def __init__(self) -> None:
        self.private: ec.EllipticCurvePrivateKey = ec.generate_private_key(ec.SECP256R1())
        self.jwk = dict(public_jwk(self.private))
        self.kid = thumbprint(self.jwk)
        self.jwk.update(kid=self.kid, alg="ES256", use="sig")

    def sign(self, claims: dict[str, Any], kid: str | None = None) -> str:
        """A compact ES256 JWT of ``claims`` under ``kid`` (this key's own by default)."""
        signing_input = f"{header_segment(kid or self.kid)}.{payload_segment(claims)}"
        return f"{signing_input}.{es256_signature(self.private, signing_input.encode('ascii'))}"


class JwksServer:
    def __init__(self, keys: list[SigningKey], *, max_age: int | None = 300, tls: ssl.SSLContext | None = None) -> None:
        self.tls = tls  # serve HTTPS with this server context
        self.keys = list(keys)
        self.max_age = max_age
        self.requests = 0
        self.not_modified = 0
        self.in_flight = 0
        self.delay = 0.0  # seconds before answering
        self.hold: threading.Event | None = None  # when set to an Event, requests wait on it
        self.fail_status: int | None = None
        self.body_override: bytes | None = None
        self.extra_headers: dict[str, str] = {}
        self._lock = threading.Lock()
        self._httpd: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # -- content ---------------------------------------------------------------------

    def body(self) -> bytes:
        if self.body_override is not None:
            return self.body_override
        return json.dumps({"keys": [k.jwk for k in self.keys]}, sort_keys=True).encode()

    def etag(self) -> str:
        return '"' + hashlib.sha256(self.body()).hexdigest()[:16] + '"'

    @property
    def url(self) -> str:
        if self.tls is not None:
            return f"https://localhost:{self.port}/keys/jwks.json"
        return f"http://127.0.0.1:{self.port}/keys/jwks.json"

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> "JwksServer":
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802
                with server._lock:
                    server.requests += 1
                    server.in_flight += 1
                try:
                    if server.delay:
                        time.sleep(server.delay)
                    hold = server.hold
                    if hold is not None:
                        hold.wait(30)
                    if server.fail_status is not None:
                        self._send(server.fail_status, b"failure injected by the test server\n")
                        return
                    etag = server.etag()
                    if self.headers.get("If-None-Match") == etag:
                        with server._lock:
                            server.not_modified += 1
                        self._send(304, b"", etag=etag)
                        return
                    self._send(200, server.body(), etag=etag)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                finally:
                    with server._lock:
                        server.in_flight -= 1

            def _send(self, status: int, body: bytes, etag: str | None = None) -> None:
                self.send_response(status)
                if status != 304:
                    self.send_header("Content-Type", "application/jwk-set+json")
                    self.send_header("Content-Length", str(len(body)))
                if server.max_age is not None:
                    self.send_header("Cache-Control", f"public, max-age={server.max_age}")
                if etag:
                    self.send_header("ETag", etag)
                for name, value in server.extra_headers.items():
                    self.send_header(name, value)
                self.end_headers()
                if status != 304:
                    self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        if self.tls is not None:
            self._httpd.socket = self.tls.wrap_socket(self._httpd.socket, server_side=True)
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening: connections are refused from now on (the port stays reserved for restart)."""
        if self.hold is not None:
            self.hold.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> "JwksServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
