"""Revocation at fleet scale: 20 replica processes on one real redis-server, cold-started from
Redis alone and from the snapshot plus the log, then the server killed and restarted under
them twice: once they resume from the log, once (the log emptied) they each load everything.

The suite runs 20,000 records; ``make soak`` runs the issue's 200,000 (ROTATOR_FLEET_RECORDS).
The figures are printed; bench/revocation_bench.py reports them with the projection."""

from __future__ import annotations

import os
from pathlib import Path

from .revocation_fleet import BOUND, run_fleet

RECORDS = int(os.environ.get("ROTATOR_FLEET_RECORDS", "20000"))
REPLICAS = 20


def test_a_fleet_resumes_after_a_redis_restart_and_starts_cold_from_the_snapshot(tmp_path: Path) -> None:
    """What Redis serves in each path, by its own counters (INFO commandstats and cpu):
    a restart under the fleet costs it no SCAN or MGET and leaves every replica within the
    staleness bound; a cold start from the snapshot costs it no SCAN or MGET either; the
    full-load paths cost it a SCAN + MGET pass per replica. Every replica ends with the same
    records."""
    phases = run_fleet(tmp_path, RECORDS, REPLICAS)
    cold, snap, resume, full = (phases[n] for n in ("cold, redis", "cold, snapshot", "restart, resume", "restart, full"))
    per_load = RECORDS // 5000 * 2  # SCAN batches and MGETs of one full load, at least

    assert all(r["loads"] == 1 for r in cold.reports) and cold.full_load_calls >= REPLICAS * per_load
    # From the snapshot, a replica resumes from its place in the log.
    assert all((r["snapshot_loads"], r["loads"], r["resumes"]) == (1, 0, 1) for r in snap.reports)
    assert snap.full_load_calls == 0 and snap.redis_cpu < cold.redis_cpu

    assert all((r["resumes"], r["loads"]) == (2, 0) for r in resume.reports)
    assert resume.full_load_calls == 0 and resume.worst_age < BOUND
    assert all((r["resumes"], r["loads"]) == (2, 1) for r in full.reports)
    assert full.full_load_calls >= REPLICAS * per_load and resume.redis_cpu < full.redis_cpu

    # The records: the fill, 1,000 deltas after the snapshot, and one probe per phase.
    assert {r["records"] for r in full.reports} == {RECORDS + 1000 + 4}
    print(f"\n{REPLICAS} replicas x {RECORDS:,} records: redis CPU cold {cold.redis_cpu:.2f} s vs snapshot "
          f"{snap.redis_cpu:.2f} s; restart: resume {resume.redis_cpu:.2f} s vs full {full.redis_cpu:.2f} s")
