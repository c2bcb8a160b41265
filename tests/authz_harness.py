"""Real processes for the sidecar's tests: `rotator authz` itself, Debian's nginx running the
shipped configuration, and a backend that echoes what reached it."""

from __future__ import annotations

import http.client
import http.server
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable

from .helpers import wait_for
from .orphans import die_with_parent
from .ports import free_port

ROOT = Path(__file__).resolve().parents[1]
ROTATOR = str(Path(os.environ.get("VIRTUAL_ENV", ROOT / ".venv")) / "bin" / "rotator")
NGINX_EXAMPLE = ROOT / "examples" / "authz" / "nginx.conf"


def request(
    port: int, path: str, headers: dict[str, str] | None = None, method: str = "GET", timeout: float = 10
) -> tuple[int, dict[str, str], bytes]:
    """One request on a new connection (so the kernel may pick any worker)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def answers(port: int, path: str = "/") -> int | None:
    """The status a server on ``port`` answers ``path`` with, or None while nothing answers."""
    try:
        return request(port, path)[0]
    except OSError:
        return None


def bearer(token: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **extra}


class Authz:
    """`rotator authz --config FILE` as a process; ready when its port answers /healthz."""

    def __init__(self, tmp: Path, config: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.grpc_port = free_port()
        self.path = tmp / "authz.toml"
        self.path.write_text(config.replace("{port}", str(self.port)).replace("{grpc_port}", str(self.grpc_port)))
        self.log = tmp / "authz.log"
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, wait: bool = True, preexec_fn: Callable[[], None] | None = None) -> "Authz":
        """Start it; ``preexec_fn`` runs in the child before rotator (a benchmark pins it to a core).
        It dies with the test process, and is stopped when it never becomes ready."""

        def prepare() -> None:
            die_with_parent(signal.SIGTERM)  # the supervisor then stops its workers
            if preexec_fn is not None:
                preexec_fn()

        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([ROTATOR, "authz", "--config", str(self.path)], stdout=log, stderr=log, env=self.env,
                                         preexec_fn=prepare)
        if wait:
            try:
                wait_for(self.ready, timeout=30, what=f"rotator authz to serve; its log: {self.log}")
            except BaseException:
                self.stop()
                raise
        return self

    def ready(self) -> bool:
        return answers(self.port, "/healthz") == 200

    def logs(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def metrics(self) -> str:
        return request(self.port, "/metrics")[2].decode()

    def decisions(self, result: str, reason: str) -> int:
        found = re.search(rf'rotator_authz_decisions_total{{result="{result}",reason="{reason}"}} (\d+)', self.metrics())
        return int(found.group(1)) if found else 0

    def worker_pids(self) -> list[int]:
        assert self.proc is not None
        # The kernel's process table, /proc (procps may not be installed).
        children = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # it exited meanwhile
            if int(fields[1]) == self.proc.pid and fields[0] != "Z":
                children.append(int(stat.parent.name))
        return children

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def __enter__(self) -> "Authz":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class Backend:
    """The protected service: answers 200 with the X-Auth-* headers that reached it, as JSON."""

    def __init__(self) -> None:
        backend = self
        self.subjects: set[str] = set()  # every X-Auth-Subject that reached it

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802
                seen = {k.lower(): v for k, v in self.headers.items() if k.lower().startswith("x-auth-")}
                backend.subjects.add(seen.get("x-auth-subject", ""))
                body = json.dumps({"path": self.path, "headers": seen}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_DELETE = do_GET  # noqa: N815

            def log_message(self, *args: Any) -> None:
                pass

        class Server(http.server.ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # nginx closing a kept-alive connection as it stops: nothing to report

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]

    def __enter__(self) -> "Backend":
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()


class Nginx:
    """Debian's nginx running examples/authz/nginx.conf, its three addresses changed."""

    def __init__(self, tmp: Path, authz_port: int, backend_port: int) -> None:
        self.port = free_port()
        self.prefix = tmp / "nginx"
        self.prefix.mkdir()
        conf = NGINX_EXAMPLE.read_text()
        for old, new in (("127.0.0.1:9191", f"127.0.0.1:{authz_port}"), ("127.0.0.1:8080", f"127.0.0.1:{backend_port}"),
                         ("127.0.0.1:8000", f"127.0.0.1:{self.port}")):
            assert old in conf, f"the shipped nginx.conf no longer has {old}"
            conf = conf.replace(old, new)
        self.conf = self.prefix / "nginx.conf"
        self.conf.write_text(conf.replace("worker_processes auto;", "worker_processes 1;"))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> "Nginx":
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        globals_ = f"daemon off; pid {self.prefix}/nginx.pid; error_log {self.prefix}/error.log warn;"
        self.proc = subprocess.Popen([nginx, "-p", str(self.prefix), "-c", str(self.conf), "-g", globals_],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: answers(self.port, "/_nginx_probe") is not None, timeout=10, what="nginx to listen")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def __enter__(self) -> "Nginx":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def wait_until(predicate: Any, timeout: float, step: float = 0.02) -> float | None:
    """The time.monotonic() at which ``predicate`` first held, or None by ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return time.monotonic()
        time.sleep(step)
    return None


def authz_config(jwks_url: str, *, redis_url: str | None = None, grpc: bool = False, authz: str = "",
                 issuer: str = "", tables: str = "") -> str:
    """A settings file for `rotator authz` (the Authz class fills in {port} and {grpc_port}):
    two workers, one issuer (ISS, AUD) whose JWKS is at ``jwks_url`` over loopback http,
    revocation on ``redis_url`` with a 2 s staleness bound if given; ``authz`` adds lines to
    the [authz] table, ``issuer`` to the issuer's, ``tables`` appends headers and rules."""
    from .helpers import AUD, ISS

    head = f'revocation_url = "{redis_url}"\nrevocation_prefix = "authz:"\n' if redis_url else ""
    lines = ['listen = "127.0.0.1:{port}"', "workers = 2"]
    if grpc:
        lines.append('grpc_listen = "127.0.0.1:{grpc_port}"')
    if redis_url:
        lines.append('revocation_max_staleness = "2s"')
    return (
        f"{head}\n[authz]\n" + "\n".join(lines) + (f"\n{authz}" if authz else "")
        + f'\n\n[[authz.issuers]]\nissuer = "{ISS}"\njwks_url = "{jwks_url}"\naudience = "{AUD}"\nallow_http = true\n'
        + (f"{issuer}\n" if issuer else "") + f"\n{tables}"
    )
