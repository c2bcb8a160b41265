"""End-to-end service figures: four ASGI apps under a production-configured server, loaded
by wrk, in one run.

  unprotected  the endpoint with no authentication
  rotator      the same behind rotator.verifier.asgi.BearerAuth
  pyjwt        the same protected by PyJWT + PyJWKClient, written the way PyJWT's docs show
  rotator-rc   rotator with the verified-result cache

The server runs as production does: uvicorn[standard] (the httptools parser and the uvloop
event loop); with --granian, granian (its Rust HTTP stack) too. One worker runs pinned to
one core with wrk on the other. Two workers are two server processes, each with its own
SO_REUSEPORT socket on one port, so the kernel spreads wrk's connections over them
(uvicorn's own --workers shares one socket, and with a few long-lived connections one
worker accepted them all). Two token mixes: one token repeated, and 10,000 distinct tokens.
Then a key rotation mid-run against the rotator app: a new key is published (JWKS max-age
2 s), and 3 s later the tokens switch to the new kid; every response must be 200.

This machine's speed drifts by 20-30% from one run to the next, so every compared pair runs
back to back, in alternating order round by round, and a ratio is the median of the rounds'
ratios. Targets (uvicorn[standard]): rotator-rc >= 0.85 of unprotected req/s on the repeated
token; rotator >= 1.3x pyjwt on distinct tokens; rotator with two workers >= 1.7x one worker
on distinct tokens; zero non-200 across the rotation.

    .venv/bin/python bench/service_bench.py [--duration 3] [--rounds 5] [--connections 16] [--granian]

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
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.interleaved import verdict  # noqa: E402
from bench.service_apps import AUD, ISS  # noqa: E402
from tests.jwks_server import JwksServer, SigningKey  # noqa: E402
from tests.ports import free_port  # noqa: E402

APPS = ("unprotected", "rotator", "pyjwt", "rotator-rc")


def server_command(server: str, port: int, workers: int) -> list[str]:
    """One server process as production runs it: compiled HTTP parser and event loop, no access
    log. A uvicorn process serves one worker on its own SO_REUSEPORT socket (started once per
    worker); granian runs its own workers."""
    if server == "uvicorn":
        return [sys.executable, str(ROOT / "bench" / "uvicorn_reuseport.py"), str(port)]
    if server == "granian":
        return [sys.executable, "-m", "granian", "--interface", "asgi", "--host", "127.0.0.1", "--port", str(port),
                "--workers", str(workers), "--loop", "uvloop", "--no-ws", "--log-level", "warning",
                "--no-access-log", "bench.service_apps:app"]
    raise ValueError(f"unknown server {server!r}")


# With two cores or more, wrk runs on core 0 and a one-worker server on core 1, so the two
# never take turns on one core; two workers are left to the scheduler.
PINNED = (os.cpu_count() or 1) >= 2 and hasattr(os, "sched_setaffinity")


def _pin(cpu: int) -> Callable[[], None] | None:
    return (lambda: os.sched_setaffinity(0, {cpu})) if PINNED else None


class Service:
    """One app under ``server`` with ``workers`` processes on one loopback port."""

    def __init__(self, app: str, jwks_url: str, server: str = "uvicorn", workers: int = 1) -> None:
        self.port = free_port()
        env = {**os.environ, "ROTATOR_BENCH_APP": app, "ROTATOR_BENCH_JWKS": jwks_url, "PYTHONPATH": str(ROOT)}
        self.procs = [
            subprocess.Popen(
                server_command(server, self.port, workers),
                cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
                preexec_fn=_pin(1) if workers == 1 else None,
            )
            for _ in range(workers if server == "uvicorn" else 1)
        ]
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                failed = [p for p in self.procs if p.poll() is not None]
                if time.monotonic() > deadline or failed:
                    self.stop()
                    errors = b"".join(p.stderr.read() for p in self.procs if p.stderr).decode()
                    raise RuntimeError(f"{server} did not start for {app}: {errors}")
                time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/orders"

    def stop(self) -> None:
        """Stop every server process and its workers (each process group)."""
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def warm(url: str, token: str, requests: int = 1) -> None:
    """``requests`` requests, each on its own connection, so every worker has fetched its keys."""
    for _ in range(requests):
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200


def wrk(url: str, seconds: float, connections: int, tokens: Path, after: Path | None = None, switch_at: int = 0,
        path: str = "/orders") -> dict[str, float]:
    env = {**os.environ, "TOKENS": str(tokens), "TOKENS_AFTER": str(after or ""), "SWITCH_AT": str(switch_at),
           "REQUEST_PATH": path}
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", "-s", str(ROOT / "bench" / "service_bench.lua"), url],
        env=env, capture_output=True, text=True, timeout=seconds + 60, check=True, preexec_fn=_pin(0),
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


Run = tuple[str, int, str, str]  # server, workers, app, token mix
MIXES = ("repeated", "distinct")


def plan(servers: tuple[str, ...]) -> tuple[list[Run], dict[str, tuple[Run, Run]]]:
    """Every run of one round in order (each compared pair back to back) and the pairs by label."""
    pairs: dict[str, tuple[Run, Run]] = {}
    runs: list[Run] = []
    for server in servers:
        one = {(app, mix): (server, 1, app, mix) for app in APPS for mix in MIXES}
        two = {(app, mix): (server, 2, app, mix) for app in ("unprotected", "rotator", "rotator-rc") for mix in MIXES}
        pairs[f"{server} rc/unprotected"] = (one[("rotator-rc", "repeated")], one[("unprotected", "repeated")])
        pairs[f"{server} rotator/pyjwt"] = (one[("rotator", "distinct")], one[("pyjwt", "distinct")])
        pairs[f"{server} 2 workers/1"] = (two[("rotator", "distinct")], one[("rotator", "distinct")])
        in_pairs = {r for pair in pairs.values() for r in pair}
        runs += [r for label, pair in pairs.items() if label.startswith(server) for r in pair]
        runs += [r for r in [*one.values(), *two.values()] if r not in in_pairs]
    return runs, pairs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=5, help="rounds; a ratio is the median of the rounds' ratios")
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

    servers = ("uvicorn", "granian") if args.granian else ("uvicorn",)
    order, pairs = plan(servers)
    runs: dict[Run, list[dict[str, float]]] = {}
    ratios: dict[str, list[float]] = {label: [] for label in pairs}
    rotations: dict[int, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp, JwksServer([old], max_age=2) as jwks:
        repeated, distinct = Path(tmp) / "repeated.txt", Path(tmp) / "distinct.txt"
        repeated.write_text(old.sign(claims(0)) + "\n")
        distinct.write_text("\n".join(old.sign(claims(i)) for i in range(args.distinct)) + "\n")
        tokens = {"repeated": repeated, "distinct": distinct}
        services: dict[tuple[str, int, str], Service] = {}
        try:
            # Every server runs for the whole bench, idle but for its own wrk runs.
            for server, workers, app, _ in order:
                if (server, workers, app) not in services:
                    services[(server, workers, app)] = service = Service(app, jwks.url, server, workers)
                    warm(service.url, repeated.read_text().strip(), requests=4 * workers)
            for round_ in range(args.rounds):
                done: dict[Run, dict[str, float]] = {}
                for label, (a, b) in pairs.items():  # back to back, alternating which goes first
                    for run in ((a, b) if round_ % 2 == 0 else (b, a)):
                        done[run] = wrk(services[run[:3]].url, args.duration, args.connections, tokens[run[3]])
                        runs.setdefault(run, []).append(done[run])
                    ratios[label].append(done[a]["rps"] / done[b]["rps"])
                for run in order:
                    if run not in done:
                        done[run] = wrk(services[run[:3]].url, args.duration, args.connections, tokens[run[3]])
                        runs.setdefault(run, []).append(done[run])
        finally:
            for service in services.values():
                service.stop()

        # Rotation mid-run: publish the new key, and switch the tokens to it 3 s later.
        after = Path(tmp) / "after.txt"
        after.write_text("\n".join(new.sign(claims(i)) for i in range(1000)) + "\n")
        for workers in (1, 2):
            rotations[workers] = rotation_run(
                "uvicorn", workers, jwks, new, distinct, after, repeated.read_text().strip(), args.duration, args.connections
            )

    def median_run(found: list[dict[str, float]]) -> dict[str, float]:
        ordered = sorted(found, key=lambda r: r["rps"])
        middle = dict(ordered[len(ordered) // 2])
        middle["non_2xx"] = sum(r["non_2xx"] for r in found)  # every run counts for correctness
        middle["socket_errors"] = sum(r["socket_errors"] for r in found)
        return middle

    print(f"service_bench: wrk -t1 -c{args.connections}, {args.duration:g}s per run, {args.rounds} rounds (medians), "
          f"{os.cpu_count()} cores{', wrk and a 1-worker server pinned to a core each' if PINNED else ''}; "
          "uvicorn[standard] (httptools, uvloop)" + (" and granian" if args.granian else ""))
    print(f"{'app':<12} {'tokens':<9} {'server':<8} {'workers':>7} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8}")
    table = sorted(runs, key=lambda r: (servers.index(r[0]), r[1], APPS.index(r[2]), MIXES.index(r[3])))
    results = {run: median_run(runs[run]) for run in table}
    for (server, workers, app, mix), r in results.items():
        print(f"{app:<12} {mix:<9} {server:<8} {workers:>7} {r['rps']:>9,.0f} {r['p50']:>8.2f} {r['p99']:>8.2f} {r['non_2xx']:>8.0f}")
    for workers, r in rotations.items():
        print(
            f"{'rotation':<12} {'distinct':<9} {'uvicorn':<8} {workers:>7} {r['rps']:>9,.0f} {r['p50']:>8.2f} {r['p99']:>8.2f} "
            f"{r['non_2xx']:>8.0f}  ({r['requests']:.0f} requests, the kid changed mid-run)"
        )

    def ratio(label: str) -> float:
        found = sorted(ratios[label])
        return found[len(found) // 2]

    def spread(label: str) -> str:
        return f"rounds {min(ratios[label]):.2f}-{max(ratios[label]):.2f}"

    rc, vs_pyjwt, scaling = ratio("uvicorn rc/unprotected"), ratio("uvicorn rotator/pyjwt"), ratio("uvicorn 2 workers/1")
    checks = {
        f"rotator-rc >= 0.85 of unprotected on a repeated token ({rc:.2f}; {spread('uvicorn rc/unprotected')})": rc >= 0.85,
        f"rotator >= 1.3x pyjwt on distinct tokens ({vs_pyjwt:.2f}x; {spread('uvicorn rotator/pyjwt')})": vs_pyjwt >= 1.3,
        f"rotator with 2 workers >= 1.7x 1 worker on distinct tokens ({scaling:.2f}x; {spread('uvicorn 2 workers/1')})": scaling >= 1.7,
        "zero non-200 across the rotation, 1 and 2 workers ("
        + ", ".join(f"{r['non_2xx']:.0f}" for r in rotations.values()) + ")": all(
            r["non_2xx"] == 0 and r["socket_errors"] == 0 and r["requests"] > 0 for r in rotations.values()
        ),
        "no non-200 for valid tokens in any run": all(r["non_2xx"] == 0 and r["socket_errors"] == 0 for r in results.values()),
    }
    if args.granian:
        for label in pairs:
            if label.startswith("granian"):
                print(f"info  {label}: {ratio(label):.2f} ({spread(label)})")
    return verdict(checks)


if __name__ == "__main__":
    sys.exit(main())
