"""End-to-end service figures: four ASGI apps under a production-configured server, loaded
by wrk, in one run.

  unprotected  the endpoint with no authentication
  rotator      the same behind rotator.verifier.asgi.BearerAuth
  pyjwt        the same protected by PyJWT + PyJWKClient, written the way PyJWT's docs show
  rotator-rc   rotator with the verified-result cache

The server runs as production does: uvicorn[standard] (the httptools parser and the uvloop
event loop), one worker and then two; with --granian, granian (its Rust HTTP stack) too.
Two token mixes: one token repeated, and 10,000 distinct tokens. Then a key rotation
mid-run against the rotator app: a new key is published (JWKS max-age 2 s), and 3 s later
the tokens switch to the new kid; every response must be 200.

Targets, as ratios from the same run (uvicorn[standard]): rotator-rc >= 0.85 of unprotected
req/s on the repeated token; rotator >= 1.3x pyjwt on distinct tokens; rotator with two
workers >= 1.7x one worker on distinct tokens; zero non-200 across the rotation.

    .venv/bin/python bench/service_bench.py [--duration 5] [--connections 16] [--granian]

Needs wrk (Debian's package wrk) and uvicorn[standard] (granian for --granian).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.service_apps import AUD, ISS  # noqa: E402
from tests.jwks_server import JwksServer, SigningKey  # noqa: E402
from tests.ports import free_port  # noqa: E402

APPS = ("unprotected", "rotator", "pyjwt", "rotator-rc")


def server_command(server: str, port: int, workers: int) -> list[str]:
    """The server as production runs it: compiled HTTP parser and event loop, no access log."""
    if server == "uvicorn":
        return [sys.executable, "-m", "uvicorn", "bench.service_apps:app", "--host", "127.0.0.1", "--port", str(port),
                "--http", "httptools", "--loop", "uvloop", "--workers", str(workers),
                "--log-level", "warning", "--no-access-log", "--lifespan", "off"]
    if server == "granian":
        return [sys.executable, "-m", "granian", "--interface", "asgi", "--host", "127.0.0.1", "--port", str(port),
                "--workers", str(workers), "--loop", "uvloop", "--no-ws", "--log-level", "warning",
                "--no-access-log", "bench.service_apps:app"]
    raise ValueError(f"unknown server {server!r}")


class Service:
    def __init__(self, app: str, jwks_url: str, server: str = "uvicorn", workers: int = 1) -> None:
        self.port = free_port()
        env = {**os.environ, "ROTATOR_BENCH_APP": app, "ROTATOR_BENCH_JWKS": jwks_url, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(
            server_command(server, self.port, workers),
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise RuntimeError(f"{server} did not start for {app}: {self.proc.stderr.read().decode() if self.proc.stderr else ''}")
                time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/orders"

    def stop(self) -> None:
        """Stop the server and its workers (the whole process group)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def warm(url: str, token: str, requests: int = 1) -> None:
    """``requests`` requests, each on its own connection, so every worker has fetched its keys."""
    for _ in range(requests):
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200


def wrk(url: str, seconds: float, connections: int, tokens: Path, after: Path | None = None, switch_at: int = 0) -> dict[str, float]:
    env = {**os.environ, "TOKENS": str(tokens), "TOKENS_AFTER": str(after or ""), "SWITCH_AT": str(switch_at)}
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", "-s", str(ROOT / "bench" / "service_bench.lua"), url],
        env=env, capture_output=True, text=True, timeout=seconds + 60, check=True,
    ).stdout

    def latency(pct: str) -> float:
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
        if m is None:
            return float("nan")
        return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]

    total = re.search(r"(\d+) requests in", out)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50": latency("50"),
        "p99": latency("99"),
        "requests": float(total.group(1)) if total else 0.0,
        "non_2xx": float(bad.group(1)) if bad else 0.0,
        "socket_errors": float(sum(int(g) for g in errors.groups())) if errors else 0.0,
    }


def rotation_run(server: str, workers: int, jwks: JwksServer, new: SigningKey, tokens: Path, after: Path,
                 warm_token: str, duration: float, connections: int) -> dict[str, float]:
    """The rotator app under load while a new key is published, then used 3 s later."""
    service = Service("rotator", jwks.url, server, workers)
    try:
        warm(service.url, warm_token, requests=4 * workers)
        publish_at = time.time() + 1.0
        switch_at = int(publish_at + 4.0)

        def publish() -> None:
            time.sleep(max(0.0, publish_at - time.time()))
            jwks.keys.append(new)

        publisher = threading.Thread(target=publish)
        publisher.start()
        try:
            return wrk(service.url, max(8.0, duration), connections, tokens, after, switch_at)
        finally:
            publisher.join()
            jwks.keys.remove(new)
    finally:
        service.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--distinct", type=int, default=10_000)
    parser.add_argument("--granian", action="store_true", help="also run every app under granian")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("service_bench: wrk is not installed (Debian package wrk)", file=sys.stderr)
        return 2

    old, new = SigningKey(), SigningKey()
    now = int(time.time())

    def claims(i: int) -> dict[str, object]:
        return {"iss": ISS, "aud": AUD, "sub": f"user-{i}", "iat": now, "exp": now + 3600, "jti": f"t{i}"}

    # (server, workers, apps) in the order they run.
    plan: list[tuple[str, int, tuple[str, ...]]] = [("uvicorn", 1, APPS), ("uvicorn", 2, ("unprotected", "rotator", "rotator-rc"))]
    if args.granian:
        plan += [("granian", 1, APPS), ("granian", 2, ("unprotected", "rotator", "rotator-rc"))]
    results: dict[tuple[str, int, str, str], dict[str, float]] = {}
    rotations: dict[int, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp, JwksServer([old], max_age=2) as jwks:
        repeated, distinct = Path(tmp) / "repeated.txt", Path(tmp) / "distinct.txt"
        repeated.write_text(old.sign(claims(0)) + "\n")
        distinct.write_text("\n".join(old.sign(claims(i)) for i in range(args.distinct)) + "\n")
        for server, workers, apps in plan:
            for app in apps:
                service = Service(app, jwks.url, server, workers)
                try:
                    warm(service.url, repeated.read_text().strip(), requests=4 * workers)
                    for mix, path in (("repeated", repeated), ("distinct", distinct)):
                        results[(server, workers, app, mix)] = wrk(service.url, args.duration, args.connections, path)
                finally:
                    service.stop()

        # Rotation mid-run: publish the new key, and switch the tokens to it 3 s later.
        after = Path(tmp) / "after.txt"
        after.write_text("\n".join(new.sign(claims(i)) for i in range(1000)) + "\n")
        for workers in (1, 2):
            rotations[workers] = rotation_run(
                "uvicorn", workers, jwks, new, distinct, after, repeated.read_text().strip(), args.duration, args.connections
            )

    print(f"service_bench: wrk -t1 -c{args.connections}, {args.duration:g}s per run, {os.cpu_count()} cores; "
          "uvicorn[standard] (httptools, uvloop)" + (" and granian" if args.granian else ""))
    print(f"{'app':<12} {'tokens':<9} {'server':<8} {'workers':>7} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8}")
    for (server, workers, app, mix), r in results.items():
        print(f"{app:<12} {mix:<9} {server:<8} {workers:>7} {r['rps']:>9,.0f} {r['p50']:>8.2f} {r['p99']:>8.2f} {r['non_2xx']:>8.0f}")
    for workers, r in rotations.items():
        print(
            f"{'rotation':<12} {'distinct':<9} {'uvicorn':<8} {workers:>7} {r['rps']:>9,.0f} {r['p50']:>8.2f} {r['p99']:>8.2f} "
            f"{r['non_2xx']:>8.0f}  ({r['requests']:.0f} requests, the kid changed mid-run)"
        )

    def rps(app: str, mix: str, workers: int = 1, server: str = "uvicorn") -> float:
        return results[(server, workers, app, mix)]["rps"]

    rc_ratio = rps("rotator-rc", "repeated") / rps("unprotected", "repeated")
    vs_pyjwt = rps("rotator", "distinct") / rps("pyjwt", "distinct")
    scaling = rps("rotator", "distinct", 2) / rps("rotator", "distinct", 1)
    checks = {
        f"rotator-rc >= 0.85 of unprotected on a repeated token ({rc_ratio:.2f})": rc_ratio >= 0.85,
        f"rotator >= 1.3x pyjwt on distinct tokens ({vs_pyjwt:.2f}x)": vs_pyjwt >= 1.3,
        f"rotator with 2 workers >= 1.7x 1 worker on distinct tokens ({scaling:.2f}x)": scaling >= 1.7,
        "zero non-200 across the rotation, 1 and 2 workers ("
        + ", ".join(f"{r['non_2xx']:.0f}" for r in rotations.values()) + ")": all(
            r["non_2xx"] == 0 and r["socket_errors"] == 0 and r["requests"] > 0 for r in rotations.values()
        ),
        "no non-200 for valid tokens in any run": all(r["non_2xx"] == 0 for r in results.values()),
    }
    if args.granian:
        ratio = rps("rotator-rc", "repeated", 1, "granian") / rps("unprotected", "repeated", 1, "granian")
        print(f"info  granian: rotator-rc at {ratio:.2f} of unprotected on a repeated token")
    for label, ok in checks.items():
        print(f"{'PASS' if ok else 'MISS'}  {label}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
