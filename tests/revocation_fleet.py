"""A fleet of replica processes against one real redis-server, through the four ways a replica
gets current, in one run so their costs compare:

- ``cold, redis``: replicas start with nothing and load every record from Redis;
- ``cold, snapshot``: they start from the published snapshot (a file) plus the log's deltas;
- ``restart, resume``: redis-server (append-only) is killed and started again under them,
  and they resume from the change log;
- ``restart, full``: the same, after the log lost their place, so each loads every record.

For each: redis-server CPU (INFO cpu) and its SCAN/MGET calls, seconds until the last replica
held a probe written for it, and the largest staleness any replica saw. Used by
tests/test_revocation_fleet.py (short and long forms) and bench/revocation_bench.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from bench.revocation_bench import fill
from rotator.revocation import RevocationStore, publish_snapshot

from .orphans import die_with_parent
from .redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[1]
BOUND = 30.0  # the verifiers' default staleness bound


@dataclass
class Phase:
    name: str
    redis_cpu: float  # seconds of redis-server CPU from the phase's start until every replica was current
    full_load_calls: int  # SCAN + MGET calls Redis served in that time
    seconds: float  # from the phase's start until the last replica held its probe
    worst_age: float  # the largest replica age() seen meanwhile
    reports: list[dict[str, Any]] = field(default_factory=list)

    def line(self) -> str:
        return (f"{self.name:<16} redis CPU {self.redis_cpu:7.2f} s  SCAN+MGET {self.full_load_calls:>6}  "
                f"last replica current after {self.seconds:6.2f} s  worst staleness {self.worst_age:5.2f} s")


class Follower:
    """One replica process (tests/revocation_follower.py) and the reports it printed."""

    def __init__(self, url: str, prefix: str, snapshot: str | None, first_probe: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.revocation_follower", url, prefix, snapshot or "-", str(first_probe), str(BOUND)],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            preexec_fn=die_with_parent,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        self.reports: dict[int, dict[str, Any]] = {}
        self.imported = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.strip() == "imported":
                self.imported.set()
            elif line.startswith("{"):
                report = json.loads(line)
                self.reports[report["probe"]] = report

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def stop(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def run_fleet(directory: Path, records: int, replicas: int, say: Callable[[str], None] = print) -> dict[str, Phase]:
    """The four phases; returns them by name. Every replica process is stopped before it returns."""
    server = RedisServer(directory / "redis", appendonly=True).start()
    prefix = "fleet:"
    snapshot = str(directory / "revocations.json.gz")
    writer = RevocationStore.from_url(server.url, prefix=prefix, snapshot=snapshot)
    followers: list[Follower] = []
    phases: dict[str, Phase] = {}
    try:
        started = time.monotonic()
        fill(writer, records // 2, records - records // 2)
        say(f"wrote {records:,} records in {time.monotonic() - started:.1f} s")

        def wait_current(probe: int, since: float, cpu_before: float, name: str) -> Phase:
            deadline = time.monotonic() + 300
            while not all(probe in f.reports for f in followers):
                dead = [f for f in followers if f.proc.poll() is not None]
                if dead or time.monotonic() > deadline:
                    raise AssertionError(f"{name}: {len(dead)} replica process(es) died, "
                                         f"{sum(probe in f.reports for f in followers)} of {len(followers)} current")
                time.sleep(0.01)
            reports = [f.reports[probe] for f in followers]
            calls = server.commands()
            phase = Phase(
                name, server.cpu_seconds() - cpu_before, calls.get("scan", 0) + calls.get("mget", 0),
                max(r["at"] for r in reports) - since, max(r["worst_age"] for r in reports), reports,
            )
            say(phase.line())
            return phase

        def cold_start(probe: int, snapshot_location: str | None, name: str) -> Phase:
            followers[:] = [Follower(server.url, prefix, snapshot_location, probe) for _ in range(replicas)]
            for f in followers:
                if not f.imported.wait(120):
                    raise AssertionError(f"{name}: a replica process did not start")
            writer.deny(f"probe-{probe}", time.time() + 600)
            server.reset_stats()
            cpu, since = server.cpu_seconds(), time.time()
            for f in followers:
                f.go()
            return wait_current(probe, since, cpu, name)

        phases["cold, redis"] = cold_start(1, None, "cold, redis")
        for f in followers:
            f.stop()
        publish_snapshot(writer)
        for i in range(1000):  # written after the snapshot: the deltas a starting replica reads from the log
            writer.deny(f"delta-{i}", time.time() + 600)
        phases["cold, snapshot"] = cold_start(2, snapshot, "cold, snapshot")

        def restart(probe: int, name: str, before: Callable[[], object] = lambda: None) -> Phase:
            before()
            since = time.time()
            server.kill()
            server.start()
            cpu = server.cpu_seconds()  # the append-only file is loaded: what follows is the replicas'
            writer.deny(f"probe-{probe}", time.time() + 600)
            return wait_current(probe, since, cpu, name)

        phases["restart, resume"] = restart(3, "restart, resume")
        phases["restart, full"] = restart(4, "restart, full", lambda: server.client().xtrim(writer.link.log, maxlen=0, approximate=False))
    finally:
        for f in followers:
            f.stop()
        writer.close()
        server.stop()
    return phases
