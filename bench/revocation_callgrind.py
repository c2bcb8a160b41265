"""What revocation adds to a verify, counted in instructions (valgrind's callgrind), not timed.

    .venv/bin/python bench/revocation_callgrind.py [--small 200] [--large 1200]

Timers on a shared machine drift by tens of percent between runs; instruction counts do
not. Each variant runs in its own process under ``valgrind --tool=callgrind`` twice, once
doing ``--small`` verifies of one token and once ``--large`` (ten times as many on the
result-cache path); the difference of the two main-thread totals, divided by the
difference of the counts, is the cost of one verify with every set-up cost (the
interpreter, imports, the JWKS fetch, loading the replica) cancelled out.

  rotator             Verifier, warm, full path (ECDSA verify every time)
  rotator+revocation  the same with a replica holding 10,000 denied jtis and 10,000
                      subject cutoffs (a redis-server started here, not under valgrind)
  rotator+rc / rotator+rc+revocation   the same pair with the result cache on (a repeat
                      of an accepted token), where the revocation check is the whole cost

The added instructions are turned into time with the plain path's own rate, measured
here in the same process outside valgrind: added_us = added_instructions / instructions
per verify * microseconds per verify. Target: rotator+revocation under 2 us over rotator.
"""

from __future__ import annotations

import argparse
from functools import partial
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.callgrind import per_call  # noqa: E402

VARIANTS = ("rotator", "rotator+revocation", "rotator+rc", "rotator+rc+revocation")
ISS = "https://issuer.example"
AUD = "orders-api"


def child(variant: str, n: int, out: str) -> None:
    """Set up one variant, verify ``n`` times, and (outside valgrind) time those verifies."""
    from bench.revocation_bench import fill
    from rotator.revocation import RevocationStore
    from rotator.verifier import Verifier
    from tests.jwks_server import JwksServer, SigningKey
    from tests.redis_server import RedisServer

    key = SigningKey()
    now = int(time.time())
    token = key.sign({"iss": ISS, "aud": AUD, "sub": "user-1", "iat": now, "exp": now + 3600, "scope": "orders:read"})
    with JwksServer([key]) as server, tempfile.TemporaryDirectory() as tmp:
        store = redis_server = None
        options: dict[str, Any] = {"result_cache_size": 1024} if "+rc" in variant else {}
        if variant.endswith("revocation"):
            redis_server = RedisServer(Path(tmp)).start()
            store = RevocationStore.from_url(redis_server.url)
            fill(store, 10_000, 10_000)
            # Generous bounds: under valgrind the first load and the heartbeats run ~50x slower.
            options["revocations"] = store.replica(start_timeout=600)
            options["revocation_max_staleness"] = 600.0
        try:
            verifier = Verifier(server.url, issuer=ISS, audience=AUD, allow_http=True, **options)
            for _ in range(20):  # warm: the key set fetched, the caches filled
                verifier.verify(token)
            started = time.perf_counter()
            for _ in range(n):
                verifier.verify(token)
            elapsed = time.perf_counter() - started
        finally:
            if store is not None:
                store.close()
            if redis_server is not None:
                redis_server.stop()
    Path(out).write_text(json.dumps({"seconds": elapsed, "n": n}))


def child_args(variant: str, work: Path, n: int) -> list[str]:
    return ["--child", variant, str(n), str(work / "timing.json")]


def per_verify_us(variant: str, n: int, work: Path) -> float:
    """Microseconds per verify of this variant, timed outside valgrind (median of 5 runs)."""
    runs = []
    for _ in range(5):
        subprocess.run([sys.executable, __file__, "--child", variant, str(n), str(work / "t.json")], check=True, timeout=300)
        timing = json.loads((work / "t.json").read_text())
        runs.append(timing["seconds"] / timing["n"] * 1e6)
    return sorted(runs)[len(runs) // 2]


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], int(sys.argv[3]), sys.argv[4])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=200)
    parser.add_argument("--large", type=int, default=1200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rotator-callgrind-") as tmp:
        work = Path(tmp)
        per: dict[str, float] = {}
        for variant in VARIANTS:
            scale = 10 if "+rc" in variant else 1  # a cache hit is ~50x cheaper: count more of them
            per[variant] = per_call(
                __file__, partial(child_args, variant, work),
                args.small * scale, args.large * scale, work / f"callgrind.{variant}",
            )
        timed = {variant: per_verify_us(variant, 20_000 if "+rc" in variant else 4_000, work) for variant in ("rotator", "rotator+rc")}
    rows = []
    for plain, with_revocation in (("rotator", "rotator+revocation"), ("rotator+rc", "rotator+rc+revocation")):
        added = per[with_revocation] - per[plain]
        added_us = added / per[plain] * timed[plain]
        rows.append({
            "path": plain, "instructions_per_verify": round(per[plain]),
            "with_revocation": round(per[with_revocation]), "added_instructions": round(added),
            "added_percent": round(100 * added / per[plain], 2), "us_per_verify": round(timed[plain], 2),
            "added_us": round(added_us, 3),
        })
    for row in rows:
        print(f"{row['path']:<12} {row['instructions_per_verify']:>9,} instr/verify, +{row['added_instructions']:,} with revocation "
              f"({row['added_percent']:+.2f}%); {row['us_per_verify']:.2f} us/verify -> +{row['added_us']:.3f} us")
    ok = rows[0]["added_us"] < 2.0
    print(json.dumps({"rows": rows, "target": "rotator+revocation under 2 us over rotator", "met": ok}))
    print(("PASS" if ok else "FAIL") + f": revocation adds {rows[0]['added_us']:.3f} us to a full verify (target < 2 us)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
