"""`rotator authz` under wrk, against its own no-op, nginx without it, and a Go sidecar.

One worker on one core (core 1) and wrk on the other (core 0), every compared pair run back
to back in alternating order round by round; a ratio is the median of the rounds' ratios.

  direct, result cache on, one token:    /envoy/orders  against  /livez (a no-op in the same
                                         server)                        target >= 0.85
  10,000 distinct tokens, no result cache: rotator authz against the Go sidecar (coreos/go-oidc,
                                         ../shared/peers/go-sidecar, GOMAXPROCS=1)  target >= 1.0x
  10,000 distinct tokens, result cache on: the same pair (warm: each token seen once before)
                                                                          target >= 2x
  through nginx (examples/authz/nginx.conf's auth_request), one token: protected against
                                         unprotected, nginx proxying to a location of its own
  gRPC (Envoy's ext_authz Check, grpcio): checks/s from a grpc.aio client on core 0 (the
                                         client is the limit: reported, no target)

    .venv/bin/python bench/authz_bench.py [--rounds 3] [--duration 3] [--connections 16] [--peer go|none] [--distinct 10000]

Needs wrk and nginx (Debian), and for the Go peer golang-go with golang-github-coreos-go-oidc-dev
and golang-gopkg-square-go-jose.v2-dev (scripts/bench-deps.sh installs them).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.interleaved import verdict  # noqa: E402
from bench.service_bench import PINNED, _pin, wrk  # noqa: E402
from tests.authz_harness import Authz, answers, request  # noqa: E402
from tests.helpers import wait_for  # noqa: E402
from tests.jwks_server import JwksServer, SigningKey  # noqa: E402
from tests.ports import free_port  # noqa: E402

ISS = "https://issuer.example"
AUD = "orders-api"
GO_PEER = ROOT.parent / "shared" / "peers" / "go-sidecar" / "main.go"
CONFIG = """
[authz]
listen = "127.0.0.1:{port}"
grpc_listen = "127.0.0.1:{grpc_port}"
workers = 1
result_cache_size = {cache}

[[authz.issuers]]
issuer = "%s"
jwks_url = "%s"
audience = "%s"
allow_http = true

[authz.headers]
sub = "X-Auth-Subject"
"""


def build_go(tmp: Path) -> Path | None:
    if shutil.which("go") is None or not GO_PEER.exists():
        print("authz_bench: no go (or no ../shared/peers/go-sidecar): the Go rows are left out")
        return None
    src = tmp / "go" / "src" / "sidecar"
    src.mkdir(parents=True)
    shutil.copy(GO_PEER, src / "main.go")
    env = {**os.environ, "GO111MODULE": "off", "GOPATH": f"{tmp / 'go'}:/usr/share/gocode", "GOCACHE": str(tmp / "gocache")}
    subprocess.run(["go", "build", "-o", str(tmp / "sidecar"), "."], cwd=src, env=env, check=True, timeout=600)
    return tmp / "sidecar"


class Go:
    def __init__(self, binary: Path, jwks_url: str) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen([str(binary), f"127.0.0.1:{self.port}", jwks_url, ISS, AUD],
                                     env={**os.environ, "GOMAXPROCS": "1"}, preexec_fn=_pin(1),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: answers(self.port) is not None, timeout=20, what="the Go sidecar")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


NGINX_BENCH = """
worker_processes 1;
events { worker_connections 1024; }
http {
    access_log off;
    upstream rotator_authz { server 127.0.0.1:AUTHZ; keepalive 32; }
    upstream app { server 127.0.0.1:APP; keepalive 32; }
    server { listen 127.0.0.1:APP; location / { return 200 "ok"; } }
    server {
        listen 127.0.0.1:FRONT;
        location = /_rotator_authz {
            internal;
            proxy_pass http://rotator_authz/auth/nginx;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header X-Original-Method $request_method;
            proxy_set_header X-Original-URI $request_uri;
        }
        location /open/ { proxy_http_version 1.1; proxy_set_header Connection ""; proxy_pass http://app; }
        location / {
            auth_request /_rotator_authz;
            auth_request_set $rotator_subject $upstream_http_x_auth_subject;
            proxy_set_header X-Auth-Subject $rotator_subject;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass http://app;
        }
    }
}
"""


def nginx(tmp: Path, authz_port: int) -> tuple[subprocess.Popen[bytes], int]:
    front, app = free_port(), free_port()
    prefix = tmp / "nginx"
    prefix.mkdir(exist_ok=True)
    conf = prefix / "nginx.conf"
    conf.write_text(NGINX_BENCH.replace("AUTHZ", str(authz_port)).replace("APP", str(app)).replace("FRONT", str(front)))
    proc = subprocess.Popen([shutil.which("nginx") or "/usr/sbin/nginx", "-p", str(prefix), "-c", str(conf), "-g",
                             f"daemon off; pid {prefix}/nginx.pid; error_log {prefix}/error.log warn;"], preexec_fn=_pin(1))
    wait_for(lambda: _answers(front), timeout=10, what="nginx")
    return proc, front


def _answers(port: int) -> bool:
    try:
        request(port, "/open/")
        return True
    except OSError:
        return False


def grpc_rate(port: int, token: str, seconds: float, concurrency: int = 32) -> float:
    """Checks per second from a grpc.aio client process on core 0."""
    code = f"""
import asyncio, time, grpc
from envoy.service.auth.v3 import attribute_context_pb2 as a, external_auth_pb2 as e, external_auth_pb2_grpc as g
http = a.AttributeContext.HttpRequest(method="GET", path="/orders", headers={{"authorization": "Bearer {token}"}})
req = e.CheckRequest(attributes=a.AttributeContext(request=a.AttributeContext.Request(http=http)))
async def main():
    async with grpc.aio.insecure_channel("127.0.0.1:{port}") as ch:
        stub = g.AuthorizationStub(ch)
        assert (await stub.Check(req)).status.code == 0
        done = 0
        end = time.monotonic() + {seconds}
        async def worker():
            nonlocal done
            while time.monotonic() < end:
                await stub.Check(req)
                done += 1
        start = time.monotonic()
        await asyncio.gather(*[worker() for _ in range({concurrency})])
        print(done / (time.monotonic() - start))
asyncio.run(main())
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=seconds + 60,
                         preexec_fn=_pin(0)).stdout
    return float(out.strip())


def pair(rounds: int, a: Callable[[], float], b: Callable[[], float]) -> tuple[float, float, float]:
    """Median a, median b, median of the rounds' a/b; the order alternates round by round."""
    xs, ys, ratios = [], [], []
    for i in range(rounds):
        if i % 2:
            y, x = b(), a()
        else:
            x, y = a(), b()
        xs.append(x)
        ys.append(y)
        ratios.append(x / y)
    return statistics.median(xs), statistics.median(ys), statistics.median(ratios)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--peer", choices=("go", "none"), default="go")
    parser.add_argument("--distinct", type=int, default=10_000, help="how many distinct tokens")
    args = parser.parse_args()
    if not PINNED:
        print("authz_bench: fewer than two cores: server and wrk share one; ratios still compare like with like")
    key = SigningKey()
    now = int(time.time())
    rows: list[tuple[str, str, float, float, float, str]] = []
    checks: dict[str, bool] = {}
    with tempfile.TemporaryDirectory() as tmp_name, JwksServer([key]) as jwks:
        tmp = Path(tmp_name)
        one, distinct = tmp / "one", tmp / "distinct"
        tokens = [key.sign({"iss": ISS, "aud": AUD, "sub": f"user-{i}", "iat": now, "exp": now + 7200, "jti": str(i)})
                  for i in range(args.distinct)]
        one.write_text(tokens[0])
        distinct.write_text("\n".join(tokens))
        go = build_go(tmp) if args.peer == "go" else None

        def run(port: int, tokens_file: Path, path: str) -> Callable[[], float]:
            def measure() -> float:
                result = wrk(f"http://127.0.0.1:{port}{path}", args.duration, args.connections, tokens_file, path=path)
                assert result["non_2xx"] == 0 and result["socket_errors"] == 0, result
                return result["rps"]
            return measure

        def authz(cache: int, name: str) -> Authz:
            d = tmp / name
            d.mkdir()
            # Its supervisor and worker on core 1.
            return Authz(d, CONFIG.replace("{cache}", str(cache)) % (ISS, jwks.url, AUD)).start(preexec_fn=_pin(1))

        cached = authz(20_000, "cached")
        uncached = authz(0, "uncached")
        try:
            for t in tokens:  # warm the result cache: each distinct token seen once
                assert request(cached.port, "/envoy/orders", {"Authorization": f"Bearer {t}"})[0] == 200
            x, y, r = pair(args.rounds, run(cached.port, one, "/envoy/orders"), run(cached.port, one, "/livez"))
            rows.append(("direct, one token", "check, result cache", x, y, r, "/livez no-op"))
            checks["check with the result cache >= 0.85 of the no-op"] = r >= 0.85
            if go is not None:
                peer = Go(go, jwks.url)
                try:
                    x, y, r = pair(args.rounds, run(uncached.port, distinct, "/envoy/orders"), run(peer.port, distinct, "/orders"))
                    rows.append((f"{args.distinct:,} distinct", "authz, no result cache", x, y, r, "Go sidecar"))
                    checks[">= 1.0x the Go sidecar on distinct tokens, no result cache"] = r >= 1.0
                    x, y, r = pair(args.rounds, run(cached.port, distinct, "/envoy/orders"), run(peer.port, distinct, "/orders"))
                    rows.append((f"{args.distinct:,} distinct", "authz, result cache", x, y, r, "Go sidecar"))
                    checks[">= 2x the Go sidecar on distinct tokens, result cache"] = r >= 2.0
                finally:
                    peer.stop()
            proc, front = nginx(tmp, cached.port)
            try:
                x, y, r = pair(args.rounds, run(front, one, "/orders"), run(front, one, "/open/orders"))
                rows.append(("through nginx, one token", "auth_request", x, y, r, "unprotected"))
            finally:
                proc.terminate()
                proc.wait(10)
            rate = grpc_rate(cached.grpc_port, tokens[0], args.duration)
        finally:
            cached.stop()
            uncached.stop()

    print(f"\nauthz_bench: one worker on one core, wrk on the other; {args.rounds} rounds x {args.duration}s, "
          f"{args.connections} connections; medians")
    print(f"{'case':26} {'rotator':24} {'req/s':>9}   {'against':14} {'req/s':>9}   ratio")
    for case, ours, x, other, y, r in [(c, o, x, t, y, r) for c, o, x, y, r, t in rows]:
        print(f"{case:26} {ours:24} {x:9,.0f}   {other:14} {y:9,.0f}   {r:.2f}")
    print(f"gRPC Check (grpc.aio client, 32 in flight, result cache): {rate:,.0f} checks/s (client-bound)")
    return verdict(checks)


if __name__ == "__main__":
    sys.exit(main())
