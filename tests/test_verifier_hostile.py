"""The verifier against hostile JWKS hosts: a real loopback server that trickles a byte at a
time at every stage of the exchange, over plain HTTP and TLS; key sets that leak private
keys or repeat a kid; tokens with numeric claims past any real time."""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from rotator.verifier import (
    KeysUnavailable,
    MalformedToken,
    Verifier,
    parse_jwks,
    verify_token,
)
from rotator.verifier._http import FetchError, fetch

from .helpers import AUD, ISS, Clock, claims_at, self_signed_cert, wait_for
from .jwks_server import SigningKey

STAGES = ("status", "headers", "chunk-size", "body-close", "body-http10", "tls-records")
TIMEOUT = 1.0


class TrickleServer:
    """Serves a valid JWKS, or, while ``trickle`` is set, dribbles one byte every ``interval``
    at the chosen stage for as long as the client keeps the connection."""

    def __init__(self, key: SigningKey, stage: str, tls: ssl.SSLContext | None = None, interval: float = 0.25) -> None:
        self.key, self.stage, self.tls, self.interval = key, stage, tls, interval
        self.trickle = True
        self.open_connections = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def url(self) -> str:
        scheme, host = ("https", "localhost") if self.tls else ("http", "127.0.0.1")
        return f"{scheme}://{host}:{self.port}/jwks.json"

    def close(self) -> None:
        self._stop.set()
        self._listener.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _dribble(self, conn: Any, data: bytes) -> None:
        for i in range(len(data)):
            if self._stop.is_set():
                return
            conn.sendall(data[i:i + 1])
            time.sleep(self.interval)

    def _handle(self, raw: socket.socket) -> None:
        self.open_connections += 1
        conn: Any = raw
        try:
            if self.trickle and self.stage == "tls-records":
                # A TLS record header promising 16 KiB, then its payload a byte at a time.
                raw.recv(4096)
                self._dribble(raw, b"\x16\x03\x03\x40\x00" + b"\x02" * 16384)
                return
            if self.tls is not None:
                conn = self.tls.wrap_socket(raw, server_side=True)
            request = b""
            while b"\r\n\r\n" not in request:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                request += chunk
            body = json.dumps({"keys": [self.key.jwk]}).encode()
            ok = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nCache-Control: max-age=300\r\n"
            if not self.trickle:
                conn.sendall(ok + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
                return
            if self.stage == "status":
                self._dribble(conn, b"HTTP/1.1 200 OK\r\n" * 1000)
            elif self.stage == "headers":
                conn.sendall(b"HTTP/1.1 200 OK\r\n")
                self._dribble(conn, b"X-Slow: " + b"a" * 60000)
            elif self.stage == "chunk-size":
                conn.sendall(ok + b"Transfer-Encoding: chunked\r\n\r\n")
                self._dribble(conn, b"0" * 60000)
            elif self.stage == "body-close":
                conn.sendall(ok + b"Connection: close\r\n\r\n")
                self._dribble(conn, body + b" " * 60000)
            elif self.stage == "body-http10":
                conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n")
                self._dribble(conn, body + b" " * 60000)
        except OSError:
            pass
        finally:
            self.open_connections -= 1
            try:
                conn.close()
            except OSError:
                pass


def contexts(transport: str, tmp_path: Path) -> tuple[ssl.SSLContext | None, ssl.SSLContext | None]:
    """(server context, client context) for plain HTTP, or TLS with a trusted self-signed certificate."""
    if transport == "http":
        return None, None
    cert, key = self_signed_cert(tmp_path)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    return server, ssl.create_default_context(cafile=cert)


@pytest.mark.parametrize(
    "stage, transport",
    [(stage, transport) for stage in STAGES[:-1] for transport in ("http", "tls")] + [("tls-records", "tls")],
)
def test_a_trickling_host_cannot_outlive_the_deadline(stage: str, transport: str, key: SigningKey, tmp_path: Path) -> None:
    """A JWKS host that trickles bytes at any stage of HTTP or TLS cannot hold a fetch past its
    deadline."""
    server_ctx, client_ctx = contexts(transport, tmp_path)
    server = TrickleServer(key, stage, tls=server_ctx)
    try:
        started = time.monotonic()
        with pytest.raises(FetchError) as info:
            fetch(server.url, etag=None, connect_timeout=TIMEOUT, timeout=TIMEOUT, max_bytes=1 << 20, ssl_context=client_ctx)
        took = time.monotonic() - started
        assert took < TIMEOUT + 0.5, f"{stage}: the fetch took {took:.2f}s"
        assert "took longer than" in str(info.value) or "timed out" in str(info.value), str(info.value)
        wait_for(lambda: server.open_connections == 0, timeout=5, what="the client to let go of the connection")

        # Through a Verifier: answered on time, and it recovers by itself once the host behaves.
        verifier = Verifier(server.url, issuer=ISS, audience=AUD, allow_http=True, timeout=TIMEOUT,
                            connect_timeout=TIMEOUT, ssl_context=client_ctx)
        token = key.sign(claims_at(time.time()))
        started = time.monotonic()
        with pytest.raises(KeysUnavailable):
            verifier.verify(token)
        assert time.monotonic() - started < TIMEOUT + 0.6
        server.trickle = False
        claims = wait_for(lambda: _verified(verifier, token), timeout=10, what="the verifier to recover")
        assert claims["sub"] == "user-1"
    finally:
        server.close()


def _verified(verifier: Verifier, token: str) -> dict[str, Any] | None:
    try:
        return verifier.verify(token)
    except KeysUnavailable:
        return None


def test_a_warm_cache_serves_stale_keys_while_a_refresh_trickles(key: SigningKey) -> None:
    """Once the set expires behind a refresh that is still trickling (well inside its 30 s
    deadline), callers use the stale set at once instead of waiting for that refresh."""
    server = TrickleServer(key, "body-close")
    server.trickle = False
    try:
        clock = Clock(time.time())
        verifier = Verifier(server.url, issuer=ISS, audience=AUD, allow_http=True, timeout=30.0, clock=clock,
                            min_max_age=60, max_max_age=60)
        token = key.sign(claims_at(clock.now))
        verifier.verify(token)
        server.trickle = True
        clock.advance(50)  # past refresh-ahead (80% of 60 s): a background refresh starts, and trickles
        verifier.verify(token)
        wait_for(lambda: server.open_connections == 1, timeout=5, what="the refresh to reach the host")
        clock.advance(11)  # the set has expired; the refresh is 11 s old
        for _ in range(5):
            assert verifier.verify(token)["sub"] == "user-1"
            # Answered while the refresh still trickles: the caller did not wait for it.
            assert server.open_connections == 1
    finally:
        server.close()


def test_304_without_if_none_match_is_a_failure(key: SigningKey) -> None:
    """A 304 to a request without If-None-Match is a failed fetch, not an empty key set."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        conn.recv(4096)
        conn.sendall(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 0\r\n\r\n")
        conn.close()

    threading.Thread(target=serve, daemon=True).start()
    try:
        with pytest.raises(FetchError, match="304 Not Modified .* named no ETag"):
            fetch(f"http://127.0.0.1:{port}/", etag=None, connect_timeout=1, timeout=1, max_bytes=1024)
    finally:
        listener.close()


# -- key-set hygiene -------------------------------------------------------------------------


def test_a_key_set_that_leaks_a_private_key_is_refused(key: SigningKey) -> None:
    """A JWKS that carries a private member is refused whole."""
    from cryptography.hazmat.primitives.asymmetric import ec

    from rotator._b64 import b64url_encode

    d = b64url_encode(key.private.private_numbers().private_value.to_bytes(32, "big"))
    other = SigningKey()
    for leaked in ({**key.jwk, "d": d}, {**other.jwk, "p": "x"}):
        with pytest.raises(ValueError, match="carries private key members"):
            parse_jwks(json.dumps({"keys": [key.jwk, leaked] if leaked["kid"] != key.kid else [leaked]}))
    assert isinstance(parse_jwks(json.dumps({"keys": [key.jwk]}))[key.kid], ec.EllipticCurvePublicKey)


def test_an_ambiguous_kid_is_refused(key: SigningKey) -> None:
    """A JWKS listing one kid with two different keys is refused; an exact repeat is harmless."""
    other = SigningKey()
    with pytest.raises(ValueError, match="twice with different keys"):
        parse_jwks(json.dumps({"keys": [key.jwk, {**other.jwk, "kid": key.kid}]}))
    assert list(parse_jwks(json.dumps({"keys": [key.jwk, dict(key.jwk)]}))) == [key.kid]  # an exact repeat is harmless


# -- numeric claims -------------------------------------------------------------------------------


@pytest.mark.parametrize("claim", ["exp", "iat", "nbf", "orig_iat"])
@pytest.mark.parametrize("raw", ["1e999", "-1e999", "1e300", "99999999999999999999", "-5"])
def test_numeric_claims_past_any_real_time_are_malformed(key: SigningKey, claim: str, raw: str) -> None:
    """Time claims beyond year 9999, infinite or NaN are malformed."""
    now = time.time()
    claims = claims_at(now)
    placeholder = 1234.5
    claims[claim] = placeholder
    payload = json.dumps(claims).replace(str(placeholder), raw)
    token = _sign_raw(key, payload)
    with pytest.raises(MalformedToken, match=f"claim '{claim}' is not a time between 1970 and 9999"):
        verify_token(token, {key.kid: key.private.public_key()}, now=now, audience=AUD, issuer=ISS)


def _sign_raw(key: SigningKey, payload: str) -> str:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    from rotator._b64 import b64url_encode

    header = b64url_encode(json.dumps({"alg": "ES256", "kid": key.kid, "typ": "JWT"}).encode())
    signing_input = f"{header}.{b64url_encode(payload.encode())}"
    r, s = decode_dss_signature(key.private.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    return f"{signing_input}.{b64url_encode(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

