"""A TCP proxy on loopback that can stall (keep connections open, forward nothing), drop
(reset every connection), or answer HTTP errors (each new connection gets one 500/503 and is
closed), for outages that real clients meet on a real socket."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from typing import Iterator


class FaultProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._flowing = threading.Event()
        self._flowing.set()
        self._closed = threading.Event()
        self._dropping = False
        self._error_status: int | None = None
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        threading.Thread(target=self._accept, name="faultproxy-accept", daemon=True).start()

    # -- faults -----------------------------------------------------------------------------

    def stall(self) -> None:
        """Stop forwarding; connections stay open and new ones are accepted, then hang."""
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    def drop(self, on: bool = True) -> None:
        """Reset every open connection, and every new one while on."""
        self._dropping = on
        if on:
            with self._lock:
                conns, self._conns = list(self._conns), set()
            for conn in conns:
                _reset(conn)

    def error(self, status: int | None) -> None:
        """Answer every request on a new connection with ``status`` (None: forward again); open
        connections are reset so that clients reconnect and meet the error."""
        self._error_status = status
        if status is not None:
            with self._lock:
                conns, self._conns = list(self._conns), set()
            for conn in conns:
                _reset(conn)

    @contextlib.contextmanager
    def stalled(self) -> Iterator[None]:
        self.stall()
        try:
            yield
        finally:
            self.resume()

    def close(self) -> None:
        self._closed.set()
        self._flowing.set()
        self._listener.close()
        with self._lock:
            for conn in self._conns:
                _reset(conn)
            self._conns.clear()

    # -- plumbing -----------------------------------------------------------------------------

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._dropping:
                _reset(client)
                continue
            if self._error_status is not None:
                threading.Thread(target=self._answer_error, args=(client, self._error_status), daemon=True).start()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                _reset(client)
                continue
            with self._lock:
                self._conns.update((client, upstream))
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _answer_error(client: socket.socket, status: int) -> None:
        """Read one request head, answer it with an S3-style error, close."""
        reason = {500: "Internal Server Error", 503: "Service Unavailable"}.get(status, "Error")
        code = {500: "InternalError", 503: "SlowDown"}.get(status, "Error")
        body = f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code><Message>injected</Message></Error>'.encode()
        try:
            client.settimeout(5)
            head = b""
            while b"\r\n\r\n" not in head and len(head) < 65536:
                chunk = client.recv(65536)
                if not chunk:
                    return
                head += chunk
            client.sendall(
                f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\nContent-Length: {len(body)}\r\n"
                f"Connection: close\r\n\r\n".encode() + body
            )
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                client.close()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                while not self._flowing.wait(0.05):
                    if self._closed.is_set():
                        return
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)


def _reset(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()
