"""Fetch a JWKS over HTTP(S): no redirects, bounded time and size, conditional GET.

Standard library only (``http.client``, ``ssl``).
"""

from __future__ import annotations

import http.client
import ipaddress
import re
import ssl
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
    *,
    etag: str | None,
    connect_timeout: float,
    timeout: float,
    max_bytes: int,
    ssl_context: ssl.SSLContext | None = None,
) -> Response:
    """One GET of ``url``. ``timeout`` bounds the whole exchange, ``connect_timeout`` the connection."""
    deadline = time.monotonic() + timeout

    def remaining() -> float:
        left = deadline - time.monotonic()
        if left <= 0:
            raise FetchError(f"JWKS fetch from {url} took longer than {timeout:g}s")
        return left

    parts = urlsplit(url)
    host = parts.hostname or ""
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        context = ssl_context or ssl.create_default_context()
        conn = http.client.HTTPSConnection(host, parts.port, timeout=min(connect_timeout, timeout), context=context)
    else:
        conn = http.client.HTTPConnection(host, parts.port, timeout=min(connect_timeout, timeout))
    headers = {
        "Accept": "application/jwk-set+json, application/json",
        "Accept-Encoding": "identity",
        "User-Agent": "rotator-verifier",
    }
    if etag:
        headers["If-None-Match"] = etag
    try:
        conn.connect()
        assert conn.sock is not None
        conn.sock.settimeout(remaining())
        conn.request("GET", path, headers=headers)
        conn.sock.settimeout(remaining())
        resp = conn.getresponse()
        max_age = parse_max_age(resp.getheader("Cache-Control"))
        new_etag = resp.getheader("ETag")
        if resp.status == 304:
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
            if conn.sock is not None:
                conn.sock.settimeout(remaining())
            chunk = resp.read1(65536)
            if not chunk:
                break
            size += len(chunk)
            if size > max_bytes:
                raise FetchError(f"JWKS at {url} is larger than the {max_bytes}-byte limit")
            chunks.append(chunk)
        return Response(200, b"".join(chunks), new_etag, max_age)
    except FetchError:
        raise
    except TimeoutError as e:
        raise FetchError(f"JWKS fetch from {url} timed out ({timeout:g}s in all, {connect_timeout:g}s to connect)") from e
    except ssl.SSLError as e:
        raise FetchError(f"TLS error fetching JWKS from {url}: {e.reason or e}") from e
    except (OSError, http.client.HTTPException) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else (str(e) or type(e).__name__)
        raise FetchError(f"cannot fetch JWKS from {url}: {reason}") from e
    finally:
        conn.close()
