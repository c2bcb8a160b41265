"""One replica process of the fleet tests (tests/revocation_fleet.py).

    python -m tests.revocation_follower REDIS_URL PREFIX SNAPSHOT|- FIRST_PROBE BOUND

Prints "imported", waits for a line on stdin, starts its replica, then for each probe k from
FIRST_PROBE on (a denied jti "probe-k"), prints one JSON line once it holds the probe and is
confirmed current within BOUND: when (time.time()), its load counters, its record count, and
the largest age() it saw since the previous probe (sampled every few milliseconds). Exits when
stdin closes.
"""

from __future__ import annotations

import json
import select
import sys
import time

from rotator.revocation import RevocationStore


def main() -> None:
    url, prefix, snapshot, first, bound = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
    store = RevocationStore.from_url(url, prefix=prefix, snapshot=None if snapshot == "-" else snapshot, check=False)
    print("imported", flush=True)
    sys.stdin.readline()
    started = time.time()
    replica = store.replica(start_timeout=120)
    probe, worst = first, 0.0
    while True:
        age = replica.age()
        worst = max(worst, age)
        if f"probe-{probe}" in replica.tables.denied and age < bound:
            report = {
                "probe": probe, "at": time.time(), "started": started, "loads": replica.loads,
                "snapshot_loads": replica.snapshot_loads, "resumes": replica.resumes, "records": len(replica.tables),
                "worst_age": worst,
            }
            print(json.dumps(report), flush=True)
            probe, worst = probe + 1, 0.0
        if select.select([sys.stdin], [], [], 0.005)[0] and not sys.stdin.readline():
            break
    store.close()


if __name__ == "__main__":
    main()
