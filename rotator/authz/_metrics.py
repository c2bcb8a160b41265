"""Decision counts and latencies of every worker process, in one shared memory region.

The supervisor maps it (anonymous, shared) before it forks the workers; each worker
writes only its own slot (no lock: one writer per slot, aligned 8-byte stores), and
``/metrics``, served by whichever worker the kernel picks, sums every slot. A restarted
worker takes over its slot, so the counters never go backwards.
"""

from __future__ import annotations

import mmap
from bisect import bisect_left
from typing import Iterable

from ._decide import REASONS, RESULTS, Decision

__all__ = ["SharedMetrics", "BUCKETS"]

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
_STATUSES = tuple(RESULTS)
_REASONS = len(REASONS)
_PAIRS = len(_STATUSES) * _REASONS
_SLOT = _PAIRS + len(BUCKETS) + 2  # the pairs, the finite buckets, +Inf, the latency sum
_STATUS_INDEX = {s: i for i, s in enumerate(_STATUSES)}
_REASON_INDEX = {r: i for i, r in enumerate(REASONS)}


class SharedMetrics:
    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._memory = mmap.mmap(-1, workers * _SLOT * 8)  # MAP_SHARED | MAP_ANONYMOUS
        self._values = memoryview(self._memory).cast("d")
        self._base = 0

    def use_slot(self, index: int) -> None:
        """From now on this process records into slot ``index`` (one per worker)."""
        self._base = index * _SLOT

    def record(self, decision: Decision, seconds: float) -> None:
        values, base = self._values, self._base
        index = decision.metric
        if index is None:  # once per Decision: a reused allow keeps it
            index = decision.metric = _STATUS_INDEX[decision.status] * _REASONS + _REASON_INDEX[decision.reason]
        values[base + index] += 1
        values[base + _PAIRS + bisect_left(BUCKETS, seconds)] += 1  # past the last bound: +Inf
        values[base + _SLOT - 1] += seconds

    def totals(self) -> list[float]:
        values = self._values
        return [sum(values[w * _SLOT + i] for w in range(self.workers)) for i in range(_SLOT)]

    def decisions(self) -> dict[tuple[str, str], int]:
        """(result, reason) -> count, over every worker; pairs never seen are left out."""
        totals = self.totals()
        out = {}
        for s, status in enumerate(_STATUSES):
            for r, reason in enumerate(REASONS):
                count = totals[s * _REASONS + r]
                if count:
                    out[(RESULTS[status], reason)] = int(count)
        return out

    def render(self, extra: Iterable[str] = ()) -> str:
        totals = self.totals()
        lines = [
            "# HELP rotator_authz_decisions_total Decisions by result (allow, deny, forbidden, unavailable, bad_request) and reason.",
            "# TYPE rotator_authz_decisions_total counter",
        ]
        decisions = self.decisions()
        decisions.setdefault(("allow", "ok"), 0)
        for (result, reason), count in sorted(decisions.items()):
            lines.append(f'rotator_authz_decisions_total{{result="{result}",reason="{reason}"}} {count}')
        lines += [
            "# HELP rotator_authz_decision_seconds Time to decide, from the request read to the answer built.",
            "# TYPE rotator_authz_decision_seconds histogram",
        ]
        cumulative = 0.0
        for i, bound in enumerate(BUCKETS):
            cumulative += totals[_PAIRS + i]
            lines.append(f'rotator_authz_decision_seconds_bucket{{le="{bound}"}} {int(cumulative)}')
        cumulative += totals[_PAIRS + len(BUCKETS)]
        lines.append(f'rotator_authz_decision_seconds_bucket{{le="+Inf"}} {int(cumulative)}')
        lines.append(f"rotator_authz_decision_seconds_sum {totals[_SLOT - 1]:.6f}")
        lines.append(f"rotator_authz_decision_seconds_count {int(cumulative)}")
        lines += [
            "# HELP rotator_authz_worker_decisions_total Decisions by worker slot (two per worker: a reload's generations alternate).",
            "# TYPE rotator_authz_worker_decisions_total counter",
        ]
        values = self._values
        for w in range(self.workers):
            count = sum(values[w * _SLOT:w * _SLOT + _PAIRS].tolist())
            lines.append(f'rotator_authz_worker_decisions_total{{slot="{w}"}} {int(count)}')
        lines.extend(extra)
        return "\n".join(lines) + "\n"
