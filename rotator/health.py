"""The health verdict: whether the deployment rotates as its policy says (``/healthz``,
``rotator_healthy``), and what the revocation follower warns of.

``Health`` observes the steps the daemon (or ``rotator rotate``) runs; it never runs one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

from .config import Policy
from .errors import ClockSkewError
from .publish import build_jwks, jwks_digest
from .reconcile import StepResult
from .state import State

__all__ = ["Health", "health_problems"]


def health_problems(
    state: State | None,
    policy: Policy,
    now: float,
    *,
    last_success: float | None,
    since: float,
    current_digest: str | None = None,
) -> list[str]:
    """Why the deployment is unhealthy (an empty list: healthy).

    - no state or no active key;
    - the active key overdue: older than P + M + P/2 (a rotation waits at most M for
      its successor's publication; P/2 covers missed wake-ups);
    - the current key set's JWKS not confirmed published for longer than P - M (a
      successor must be confirmed by then to activate on time);
    - no successful step since the process started (``since``), or for longer than P.

    ``current_digest``: the digest of ``state``'s JWKS where the caller has it already.
    """
    problems: list[str] = []
    period, max_age = policy.rotation_period, policy.max_age
    if state is None:
        problems.append("no key set stored yet")
    else:
        active = state.active
        if active is None:
            problems.append("no active key")
        elif active.activated_at is not None:
            overdue_at = active.activated_at + period + max_age + period / 2
            if now > overdue_at:
                problems.append(f"active key {active.kid} is overdue for rotation by {now - overdue_at:.0f}s")
        digest = current_digest if current_digest is not None else jwks_digest(build_jwks(state))
        if state.published_digest != digest:
            # Counted from the last confirmation, so the problem does not come and go
            # while a publish outage lasts and the state is rewritten.
            confirmed = state.published_confirmed_at
            since_confirmed = confirmed if confirmed is not None else min(
                (k.created_at for k in state.keys), default=state.updated_at
            )
            waiting = now - since_confirmed
            if waiting > period - max_age:
                problems.append(f"the current JWKS has not been confirmed published for {waiting:.0f}s")
    if last_success is None:
        problems.append(f"no successful reconcile step yet ({now - since:.0f}s since start)")
    elif now - last_success > period:
        problems.append(f"no successful reconcile step for {now - last_success:.0f}s")
    return problems


@dataclass
class Health:
    """What the last steps said, and the verdict on it at any moment."""

    clock: Callable[[], float] = time.time
    policy: Policy | None = None
    state: State | None = None
    jwks: bytes | None = None  # the JWKS of ``state`` when a step built it
    last_success_at: float | None = None
    last_failure_stage: str | None = None
    consecutive_failures: int = 0
    clock_skew: tuple[float, float, str] | None = None  # (seen at, seconds, what)
    revocations: Any = None  # the revocation replica, when revocation_url is set
    started_at: float = field(init=False)
    _digest: tuple[bytes, str] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.started_at = self.clock()

    def succeeded(self, result: StepResult, policy: Policy) -> None:
        self.state, self.policy, self.jwks = result.state, policy, result.jwks or None
        self.last_success_at = self.clock()
        self.consecutive_failures = 0
        repaired = next((e for e in result.events if e.name == "rotator.clock_skew_repaired"), None)
        if repaired is not None:
            self.clock_skew = (self.clock(), result.clock_skew, f"repaired: {repaired.detail}")

    def failed(self, stage: str, error: BaseException, stored: State | None, policy: Policy) -> None:
        """A failed step: its stage, and what is stored now (best effort; None keeps the last)."""
        self.last_failure_stage = stage
        self.consecutive_failures += 1
        self.policy = policy
        if stored is not None:
            self.state, self.jwks = stored, None
        if isinstance(error, ClockSkewError):
            self.clock_skew = (self.clock(), error.skew, str(error))

    def recent_skew(self) -> tuple[float, str | None]:
        """The clock disagreement seen within the last rotation period, if any."""
        if self.clock_skew is None:
            return 0.0, None
        seen_at, seconds, what = self.clock_skew
        window = self.policy.rotation_period if self.policy is not None else 900.0
        if self.clock() - seen_at > max(window, 60.0):
            return 0.0, None
        return seconds, what

    def _current_digest(self) -> str | None:
        if self.jwks is None:
            return None
        if self._digest is None or self._digest[0] is not self.jwks:
            self._digest = (self.jwks, jwks_digest(self.jwks))
        return self._digest[1]

    def problems(self) -> list[str]:
        if self.policy is None:
            return ["no successful reconcile step yet"]
        problems = health_problems(
            self.state, self.policy, self.clock(), last_success=self.last_success_at, since=self.started_at,
            current_digest=self._current_digest(),
        )
        skew, what = self.recent_skew()
        if what is not None:
            problems.append(f"clock skew of {skew:.0f}s: {what}")
        return problems

    def revocation_warnings(self) -> list[str]:
        """The revocation replica's problems; reported by /healthz without failing it (a lost
        dataset or a malformed record is not something restarting the daemon mends)."""
        return list(self.revocations.problems()) if self.revocations is not None else []

    def report(self) -> tuple[bool, dict[str, Any]]:
        """(healthy, the /healthz body)."""
        problems = self.problems()
        active = self.state.active if self.state is not None else None
        return not problems, {
            "status": "unhealthy" if problems else "ok",
            "problems": problems,
            "active_kid": active.kid if active else None,
            "last_success": self.last_success_at,
            "consecutive_failures": self.consecutive_failures,
            "warnings": self.revocation_warnings(),
        }
