"""Revocation at scale: the replica's load time and memory with many live records, the
cost of the revocation check on the verify path, against plain rotator in the same run, and
a fleet of replica processes through every way of getting current (tests/revocation_fleet.py):
cold from Redis alone against cold from the snapshot plus the log, and a Redis restart under
the fleet resumed from the log against the same with every record loaded again. From the
fleet's figures it projects redis-server's CPU to 1,000 and 10,000 verifiers, printing the
arithmetic.

    .venv/bin/python bench/revocation_bench.py [--denials 100000] [--cutoffs 100000]
                                               [--fleet-records 200000] [--fleet-replicas 20]

Starts its own redis-server (Debian's package) on a free loopback port and stops it.
Targets: 100,000 denials + 100,000 cutoffs load in under 3 s; the check costs under 2 us
per verify (measured on the result-cache path, where it is not lost in the ECDSA time).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rotator.revocation import Replica, RevocationStore  # noqa: E402

_BATCH = 5000


def fill(store: RevocationStore, denials: int, cutoffs: int) -> None:
    """Write records through the store's own scripts, pipelined (``denial-N`` jtis, ``userN`` subjects)."""
    now = time.time()
    exp = int(now) + 1800
    revoked_at = int(now)
    for start in range(0, max(denials, cutoffs), _BATCH):
        pipe = store.client.pipeline(transaction=False)
        for i in range(start, min(start + _BATCH, denials)):
            suffix = f"jti:deny-{i}"
            store._deny(**store.script_call(suffix, exp, exp + store.grace), client=pipe)
        for i in range(start, min(start + _BATCH, cutoffs)):
            suffix = f"sub:user{i}"
            x = revoked_at + store.session_lifetime + store.grace
            store._cutoff(**store.script_call(suffix, revoked_at, revoked_at, x), client=pipe)
        pipe.execute()


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def replica_figures(store: RevocationStore) -> tuple[float, float, Replica]:
    """(first load in seconds, resident memory it added in MB, the replica)."""
    import gc

    gc.collect()
    before = _rss_mb()
    replica: Replica = store.replica()
    gc.collect()
    assert replica.last_load_seconds is not None
    return replica.last_load_seconds, _rss_mb() - before, replica


def main() -> int:
    from bench.interleaved import median_ops, verdict
    from rotator.verifier import Verifier
    from tests.jwks_server import JwksServer, SigningKey
    from tests.redis_server import RedisServer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--denials", type=int, default=100_000)
    parser.add_argument("--cutoffs", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--seconds", type=float, default=0.2)
    parser.add_argument("--fleet-records", type=int, default=200_000)
    parser.add_argument("--fleet-replicas", type=int, default=20, help="0 skips the fleet")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp)).start()
        try:
            store = RevocationStore.from_url(server.url)
            started = time.perf_counter()
            fill(store, args.denials, args.cutoffs)
            print(f"wrote {args.denials:,} denials + {args.cutoffs:,} cutoffs in {time.perf_counter() - started:.2f} s")
            seconds, megabytes, replica = replica_figures(store)
            total = args.denials + args.cutoffs
            print(f"replica load: {len(replica.tables):,} records in {seconds:.2f} s, {megabytes:.1f} MB resident "
                  f"({megabytes * 1e6 / max(total, 1):.0f} bytes per record)")
            key = SigningKey()
            now = int(time.time())
            token = key.sign({"sub": "someone-else", "iat": now, "exp": now + 600, "jti": "live-token"})
            with JwksServer([key]) as jwks:
                fns: dict[str, Any] = {}
                for name, options in (
                    ("rotator", {}),
                    ("rotator+revocation", {"revocations": replica}),
                    ("rotator+rc", {"result_cache_size": 64}),
                    ("rotator+rc+revocation", {"result_cache_size": 64, "revocations": replica}),
                ):
                    verifier = Verifier(jwks.url, allow_http=True, **options)
                    verifier.refresh()
                    fns[name] = (lambda v: lambda: v.verify(token))(verifier)
                median = median_ops(fns, args.rounds, args.seconds)
            store.close()
        finally:
            server.stop()

    us = {name: 1e6 / ops for name, ops in median.items()}
    for name in fns:
        print(f"{name:<22} {median[name]:>12,.0f} ops/s {us[name]:>8.2f} us/op")
    full = us["rotator+revocation"] - us["rotator"]
    cached = us["rotator+rc+revocation"] - us["rotator+rc"]
    print(f"revocation check: +{cached:.2f} us per verify on the result-cache path, +{full:.2f} us on the full path")
    checks = {
        f"load of {total:,} records under 3 s": seconds < 3.0,
        "revocation check under 2 us (result-cache path)": cached < 2.0,
    }
    if args.fleet_replicas:
        checks.update(fleet(args.fleet_records, args.fleet_replicas))
    return verdict(checks)


def fleet(records: int, replicas: int) -> dict[str, bool]:
    """The fleet's four paths, their ratios, and the projection; returns its checks."""
    from tests.revocation_fleet import BOUND, run_fleet

    print(f"\nfleet: {replicas} replica processes, {records:,} records, one redis-server (append-only)")
    with tempfile.TemporaryDirectory() as tmp:
        phases = run_fleet(Path(tmp), records, replicas)
        snapshot_bytes = (Path(tmp) / "revocations.json.gz").stat().st_size
    cold, snap, resume, full = (phases[n] for n in ("cold, redis", "cold, snapshot", "restart, resume", "restart, full"))
    floor = 0.01  # INFO cpu's resolution: a phase that showed less is counted as this much
    print(f"cold start:  redis CPU from the snapshot {snap.redis_cpu:.2f} s vs Redis alone {cold.redis_cpu:.2f} s "
          f"({max(cold.redis_cpu, floor) / max(snap.redis_cpu, floor):.0f}x less); last replica current "
          f"{snap.seconds:.1f} s vs {cold.seconds:.1f} s; snapshot {snapshot_bytes / 1e6:.1f} MB gzip")
    print(f"restart:     redis CPU resuming {resume.redis_cpu:.2f} s vs loading {full.redis_cpu:.2f} s "
          f"({max(full.redis_cpu, floor) / max(resume.redis_cpu, floor):.0f}x less); last replica current "
          f"{resume.seconds:.1f} s vs {full.seconds:.1f} s; worst staleness {resume.worst_age:.1f} s vs {full.worst_age:.1f} s "
          f"(bound {BOUND:g} s)")
    per_full = full.redis_cpu / replicas
    per_resume = max(resume.redis_cpu, floor) / replicas
    per_snap = max(snap.redis_cpu, floor) / replicas
    print("projection (redis runs commands on one core, so its CPU is the least time the fleet waits):")
    for fleet_size in (1_000, 10_000):
        print(f"  {fleet_size:>6,} verifiers after a restart: loading {per_full:.3f} s x {fleet_size:,} = "
              f"{per_full * fleet_size:,.0f} s of redis CPU; resuming at most {per_resume:.4f} s x {fleet_size:,} = "
              f"{per_resume * fleet_size:,.1f} s; cold from the snapshot at most {per_snap:.4f} s x {fleet_size:,} = "
              f"{per_snap * fleet_size:,.1f} s of redis CPU plus {snapshot_bytes / 1e6:.1f} MB x {fleet_size:,} = "
              f"{snapshot_bytes * fleet_size / 1e9:,.1f} GB from the file server or CDN")
    return {
        "restart resumed by every replica within the staleness bound": resume.worst_age < BOUND,
        "cold start from the snapshot costs redis under a tenth of Redis alone": snap.redis_cpu < cold.redis_cpu / 10,
    }


if __name__ == "__main__":
    sys.exit(main())
