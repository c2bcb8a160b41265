"""Prometheus metrics and the health verdict, shared by `rotator run` and the one-shot commands.

Imported only by the daemon and the CLI (never by the verifier).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from ._fs import atomic_write
from .config import Policy
from .errors import ClockSkewError
from .lifecycle import next_due
from .publish import build_jwks, jwks_digest, jwks_kids
from .state import KeyState, State

if TYPE_CHECKING:
    from .reconcile import Rotator, StepResult

__all__ = ["Metrics", "health_problems", "failure_stage"]

# The stage a failure happened in, from the last checkpoint the step passed (reconcile.STAGES).
_NEXT_STAGE = {
    None: "load",
    "loaded": "plan",
    "planned": "write_state",
    "state_written": "publish",
    "published": "confirm",
    "confirmed": "record",
    "recorded": "record",
}
FAILURE_STAGES = ("load", "plan", "write_state", "publish", "confirm", "record")


def failure_stage(last_checkpoint: str | None, error: BaseException) -> str:
    from .errors import PublishError

    stage = _NEXT_STAGE.get(last_checkpoint, "load")
    if isinstance(error, PublishError):
        if stage == "plan":
            return "confirm"  # nothing to change: the step was re-reading the published JWKS
        if stage == "write_state":
            return "publish"  # the state was unchanged, so the step went straight to publishing
    return stage


_POLICY_SETTINGS = (
    "rotation_period", "token_lifetime", "leeway", "max_age", "retirement_window", "private_key_grace", "max_clock_skew",
)


def health_problems(
    state: State | None, policy: Policy, now: float, *, last_success: float | None, since: float
) -> list[str]:
    """Why the deployment is unhealthy (an empty list: healthy).

    - no state or no active key;
    - the active key overdue: older than P + M + P/2 (a rotation waits at most M for
      its successor's publication; P/2 covers missed wake-ups);
    - the current key set's JWKS not confirmed published for longer than P - M (a
      successor must be confirmed by then to activate on time);
    - no successful step since the process started (``since``), or for longer than P.
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
        if state.published_digest != jwks_digest(build_jwks(state)):
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
class Metrics:
    """The metric set; gauges that depend on the current time are computed at collection."""

    clock: Callable[[], float] = time.time
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    state: State | None = None
    policy: Policy | None = None
    revocations: Any = None  # the revocation replica, when revocation_url is set

    def __post_init__(self) -> None:
        r = self.registry
        # The policy, so alert rules judge against the deployment's own timings.
        self.policy_seconds = Gauge(
            "rotator_policy_seconds", "The lifecycle policy in force, by setting.", ["setting"], registry=r
        )
        self.jwks_max_keys = Gauge(
            "rotator_jwks_max_keys", "Keys the JWKS holds at most under scheduled rotation: ceil(W/P) + 2.", registry=r
        )
        self.private_overdue = Gauge(
            "rotator_private_keys_past_grace",
            "Retired keys whose private half is still stored past private_key_grace plus a rotation period.",
            registry=r,
        )
        self.revocation_age = Gauge(
            "rotator_revocation_replica_age_seconds",
            "Seconds since the revocation replica last confirmed it holds every change (absent without revocation).",
            registry=r,
        )
        self.revocation_malformed = Gauge(
            "rotator_revocation_malformed_records", "Records in Redis under the prefix that no replica can read.", registry=r
        )
        self.revocation_losses = Gauge(
            "rotator_revocation_dataset_losses",
            "Times the revocation Redis was found to have lost its dataset since this process started.",
            registry=r,
        )
        self.keys = Gauge("rotator_keys", "Keys in the key set by lifecycle state.", ["state"], registry=r)
        self.active_key_age = Gauge("rotator_active_key_age_seconds", "Seconds since the active key started signing.", registry=r)
        self.next_due = Gauge("rotator_next_due_seconds", "Seconds until the next due lifecycle action (negative: late).", registry=r)
        self.last_success = Gauge(
            "rotator_last_success_timestamp_seconds", "Unix time of the last successful reconcile step.", registry=r
        )
        self.confirmed = Gauge(
            "rotator_publication_confirmed_timestamp_seconds", "Unix time the published JWKS was last confirmed by read-back.", registry=r
        )
        self.failures = Counter("rotator_step_failures", "Failed reconcile steps by stage.", ["stage"], registry=r)
        self.steps = Counter("rotator_steps", "Successful reconcile steps.", registry=r)
        self.conflicts = Counter("rotator_cas_conflicts", "Compare-and-swap conflicts resolved by re-reading.", registry=r)
        self.jwks_bytes = Gauge("rotator_jwks_bytes", "Size of the JWKS for the current key set.", registry=r)
        self.jwks_keys = Gauge("rotator_jwks_keys", "Keys in the JWKS for the current key set.", registry=r)
        self.healthy = Gauge("rotator_healthy", "1 when /healthz would answer 200.", registry=r)
        self.clock_skew_gauge = Gauge(
            "rotator_clock_skew_seconds",
            "Clock disagreement seen in the last rotation period: stored times ahead of this host, or this "
            "host against the store's clock (0: none).",
            registry=r,
        )
        self.damaged_keys = Gauge(
            "rotator_damaged_keys", "Keys replaced because their private half could not be decrypted.", registry=r
        )
        self.started_at = self.clock()
        self.last_success_at: float | None = None
        self.last_failure_stage: str | None = None
        self.clock_skew: tuple[float, float, str] | None = None  # (seen at, seconds, what)
        for stage in FAILURE_STAGES:
            self.failures.labels(stage=stage)
        for s in KeyState:
            self.keys.labels(state=s.value)
        self.clock_skew_gauge.set_function(lambda: self._recent_skew()[0])
        self.active_key_age.set_function(self._active_age)
        self.next_due.set_function(self._next_due)
        self.healthy.set_function(lambda: 0.0 if self.problems() else 1.0)

    # -- updates ---------------------------------------------------------------------

    def record_step(
        self,
        rotator: Rotator,
        policy: Policy,
        *,
        after: Callable[[StepResult], None] | None = None,
        **step_options: Any,
    ) -> StepResult:
        """One reconcile step (then ``after``, if given) with its outcome counted.

        On failure: the stage is counted and kept in ``last_failure_stage``, what is
        stored is observed (best effort) so health sees it, and the error is re-raised.
        """
        last: list[str | None] = [None]

        def checkpoint(stage: str) -> None:
            last[0] = stage

        try:
            result = rotator.step(checkpoint=checkpoint, **step_options)
            if after is not None:
                after(result)
        except Exception as e:
            if isinstance(e, ClockSkewError):
                self.clock_skew = (self.clock(), e.skew, str(e))
            self.last_failure_stage = failure_stage(last[0], e)
            self.failed(self.last_failure_stage)
            try:
                self.observe(rotator.keystore.load(), policy)
            except Exception:
                self.policy = policy
            raise
        repaired = next((e for e in result.events if e.name == "rotator.clock_skew_repaired"), None)
        if repaired is not None:
            self.clock_skew = (self.clock(), result.clock_skew, f"repaired: {repaired.detail}")
        self.succeeded(result.state, policy, result.conflicts)
        return result

    def observe(self, state: State | None, policy: Policy) -> None:
        self.state, self.policy = state, policy
        for setting in _POLICY_SETTINGS:
            self.policy_seconds.labels(setting=setting).set(getattr(policy, setting))
        self.jwks_max_keys.set(policy.max_jwks_keys)
        if state is None:
            return
        # The planner destroys a retired key's private half once its grace is over, at the next
        # step; one rotation period more than that means steps are not running or not writing.
        late = self.clock() - policy.private_key_grace - policy.rotation_period
        self.private_overdue.set(
            sum(1 for k in state.in_state(KeyState.RETIRED) if k.private is not None and k.retired_at is not None and k.retired_at < late)
        )
        for s in KeyState:
            self.keys.labels(state=s.value).set(len(state.in_state(s)))
        self.damaged_keys.set(sum(1 for k in state.keys if k.revocation == "damaged"))
        body = build_jwks(state)
        self.jwks_bytes.set(len(body))
        self.jwks_keys.set(len(jwks_kids(body)))
        if state.published_confirmed_at is not None:
            self.confirmed.set(state.published_confirmed_at)

    def succeeded(self, state: State, policy: Policy, conflicts: int = 0) -> None:
        self.last_success_at = self.clock()
        self.last_success.set(self.last_success_at)
        self.steps.inc()
        if conflicts:
            self.conflicts.inc(conflicts)
        self.observe(state, policy)

    def failed(self, stage: str, conflicts: int = 0) -> None:
        self.failures.labels(stage=stage).inc()
        if conflicts:
            self.conflicts.inc(conflicts)

    # -- reading ---------------------------------------------------------------------

    def _active_age(self) -> float:
        active = self.state.active if self.state is not None else None
        if active is None or active.activated_at is None:
            return float("nan")
        return self.clock() - active.activated_at

    def _next_due(self) -> float:
        if self.state is None or self.policy is None:
            return float("nan")
        due = next_due(self.state, self.policy)
        return float("nan") if due is None else due - self.clock()

    def _recent_skew(self) -> tuple[float, str | None]:
        """The clock disagreement seen within the last rotation period, if any."""
        if self.clock_skew is None:
            return 0.0, None
        seen_at, seconds, what = self.clock_skew
        window = self.policy.rotation_period if self.policy is not None else 900.0
        if self.clock() - seen_at > max(window, 60.0):
            return 0.0, None
        return seconds, what

    def problems(self) -> list[str]:
        if self.policy is None:
            return ["no successful reconcile step yet"]
        problems = health_problems(
            self.state, self.policy, self.clock(), last_success=self.last_success_at, since=self.started_at
        )
        skew, what = self._recent_skew()
        if what is not None:
            problems.append(f"clock skew of {skew:.0f}s: {what}")
        return problems

    def revocation_warnings(self) -> list[str]:
        """The revocation replica's problems; reported by /healthz without failing it (a lost
        dataset or a malformed record is not something restarting the daemon mends)."""
        return list(self.revocations.problems()) if self.revocations is not None else []

    def render(self) -> bytes:
        replica = self.revocations
        if replica is not None:
            self.revocation_age.set(min(replica.age(), 1e9))
            self.revocation_malformed.set(len(replica.tables.malformed))
            self.revocation_losses.set(replica.dataset_losses)
        return generate_latest(self.registry)

    def write_textfile(self, path: str | Path) -> None:
        """Atomically (temp file + rename) write the metrics for node_exporter's textfile
        collector, 0644 whatever the umask: the collector runs as another user."""
        atomic_write(Path(path), generate_latest(self.registry), 0o644)

    def carry_over(self, path: str | Path) -> None:
        """For one-shot runs: keep the last success time from the previous textfile."""
        try:
            text = Path(path).read_text()
        except OSError:
            return
        try:
            for family in text_string_to_metric_families(text):
                if family.name == "rotator_last_success_timestamp_seconds":
                    for sample in family.samples:
                        self.last_success.set(sample.value)
        except ValueError:
            return
