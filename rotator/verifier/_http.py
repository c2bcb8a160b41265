"""Fetch a JWKS over HTTP(S): no redirects, bounded time and size, conditional GET.

Standard library only (``http.client``, ``ssl``).
"""

from __future__ import annotations

import http.client
import ipaddress
import re
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["FetchError", "Response", "check_url", "fetch", "parse_max_age"]

_MAX_AGE = re.compile(r"(?:^|[,\s])max-age\s*=\s*\"?(\d+)\"?", re.IGNORECASE)
_NO_CACHE = re.compile(r"(?:^|[,\s])(?:no-cache|no-store)(?:$|[,\s=])", re.IGNORECASE)


class FetchError(Exception):
    """The JWKS could not be fetched; the message says why in one line."""


@dataclass(frozen=True)
class Response:
    status: int  # 200 or 304
    body: bytes
    etag: str | None
    max_age: float | None  # from Cache-Control; 0 for no-cache/no-store; None when absent


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(url: str, *, allow_http: bool) -> None:
    """Refuse anything but https (and http to a loopback host when ``allow_http``)."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and parts.hostname:
        if not allow_http:
            raise ValueError(f"JWKS URL {url!r} is plain http; use https (allow_http=True permits loopback hosts)")
        if not _is_loopback(parts.hostname):
            raise ValueError(f"JWKS URL {url!r}: plain http is allowed for loopback hosts only")
        return
    raise ValueError(f"JWKS URL {url!r} is not an https:// URL")


def parse_max_age(cache_control: str | None) -> float | None:
    if not cache_control:
        return None
    if _NO_CACHE.search(cache_control):
        return 0.0
    m = _MAX_AGE.search(cache_control)
    return float(m.group(1)) if m else None


def fetch(
    url: str,
    etag: str | None,
    *,
    connect_timeout: float,
    timeout: float,
    max_bytes: int,
    ssl_context: ssl.SSLContext | None = None,
) -> Response:
    """One GET of ``url``. ``timeout`` bounds the whole exchange, ``connect_timeout`` the connection.

    The bound is absolute, whatever the peer sends: per-read socket timeouts alone would
    let a host that trickles a byte at a time (in the TLS handshake, the status line, the
    headers, a chunk-size line or a close-delimited body) hold the fetch forever, so a
    timer shuts the socket down when the deadline passes.
    """
    deadline = time.monotonic() + timeout

    def remaining() -> float:
        left = deadline - time.monotonic()
        if left <= 0:
            raise FetchError(f"JWKS fetch from {url} took longer than {timeout:g}s")
        return left

    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        conn = http.client.HTTPSConnection(host, port, timeout=min(connect_timeout, timeout))
    else:
        conn = http.client.HTTPConnection(host, port, timeout=min(connect_timeout, timeout))
    headers = {
        "Accept": "application/jwk-set+json, application/json",
        "Accept-Encoding": "identity",
        "User-Agent": "rotator-verifier",
    }
    if etag:
        headers["If-None-Match"] = etag
    guard = _Deadline(timeout)
    raw: socket.socket | None = None
    try:
        raw = socket.create_connection((host, port), timeout=min(connect_timeout, remaining()))
        guard.arm(raw)
        raw.settimeout(remaining())
        sock: socket.socket = raw
        if parts.scheme == "https":
            context = ssl_context or ssl.create_default_context()
            sock = context.wrap_socket(raw, server_hostname=host)  # the handshake runs under the guard
            guard.arm(sock)
        conn.sock = sock
        conn.sock.settimeout(remaining())
        conn.request("GET", path, headers=headers)
        conn.sock.settimeout(remaining())
        resp = conn.getresponse()
        max_age = parse_max_age(resp.getheader("Cache-Control"))
        new_etag = resp.getheader("ETag")
        if resp.status == 304:
            if not etag:
                raise FetchError(f"JWKS host answered 304 Not Modified for {url} to a request that named no ETag")
            return Response(304, b"", new_etag or etag, max_age)
        if resp.status != 200:
            # Redirects included: a JWKS location is configured, never discovered by following a 3xx.
            raise FetchError(f"JWKS host answered HTTP {resp.status} for {url}")
        length = resp.getheader("Content-Length")
        if length is not None and length.isdigit() and int(length) > max_bytes:
            raise FetchError(f"JWKS at {url} is {length} bytes, more than the {max_bytes}-byte limit")
        chunks: list[bytes] = []
        size = 0
        while True:
            remaining()
            if conn.sock is not None:
                conn.sock.settimeout(remaining())
            chunk = resp.read1(65536)
            if not chunk:
                break
            size += len(chunk)
            if size > max_bytes:
                raise FetchError(f"JWKS at {url} is larger than the {max_bytes}-byte limit")
            chunks.append(chunk)
        if guard.fired:
            raise FetchError(f"JWKS fetch from {url} took longer than {timeout:g}s")
        return Response(200, b"".join(chunks), new_etag, max_age)
    except FetchError:
        raise
    except Exception as e:
        if guard.fired:
            raise FetchError(f"JWKS fetch from {url} took longer than {timeout:g}s (the host kept it open)") from e
        if isinstance(e, TimeoutError):
            raise FetchError(f"JWKS fetch from {url} timed out ({timeout:g}s in all, {connect_timeout:g}s to connect)") from e
        if isinstance(e, ssl.SSLError):
            raise FetchError(f"TLS error fetching JWKS from {url}: {e.reason or e}") from e
        if isinstance(e, (OSError, http.client.HTTPException)):
            reason = e.strerror if isinstance(e, OSError) and e.strerror else (str(e) or type(e).__name__)
            raise FetchError(f"cannot fetch JWKS from {url}: {reason}") from e
        raise
    finally:
        guard.disarm()
        if conn.sock is None and raw is not None:
            raw.close()
        conn.close()


class _Deadline:
    """Shuts a socket down when the fetch's deadline passes, unblocking any read in progress.

    The timer and the fetch's own close are serialised, so the timer never touches a
    file descriptor after the fetch has let go of it.
    """

    def __init__(self, seconds: float) -> None:
        self.fired = False
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._done = False
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def arm(self, sock: socket.socket) -> None:
        with self._lock:
            self._sock = sock
            if self.fired:
                _shutdown(sock)

    def _fire(self) -> None:
        with self._lock:
            if self._done:
                return
            self.fired = True
            if self._sock is not None:
                _shutdown(self._sock)

    def disarm(self) -> None:
        with self._lock:
            self._done = True
            self._timer.cancel()


def _shutdown(sock: socket.socket) -> None:
    try:
        # The plain socket's shutdown, also for a TLS socket: it only stops the descriptor's
        # traffic and leaves the TLS object to the thread that is using it.
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass
