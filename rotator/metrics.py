"""Prometheus metrics, shared by `rotator run` and `rotator rotate --metrics-file`.

``Metrics`` records what a step did and what the state holds; gauges that depend on the
current time (the health verdict, the active key's age, the next due action) read the
``Health`` at collection. Imported only by the daemon and the CLI (never by the verifier).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from ._fs import atomic_write
from .config import Policy
from .health import Health
from .lifecycle import next_due
from .publish import build_jwks, jwks_kids
from .reconcile import FAILURE_STAGES, StepResult
from .state import KeyState, State

__all__ = ["Metrics", "render_key_sets"]

_POLICY_SETTINGS = (
    "rotation_period", "token_lifetime", "leeway", "max_age", "retirement_window", "private_key_grace", "max_clock_skew",
)


@dataclass
class Metrics:
    """The metric set; gauges that depend on the current time are computed at collection."""

    health: Health = field(default_factory=Health)
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    @property
    def clock(self) -> Callable[[], float]:
        return self.health.clock

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
        self.snapshot_published = Gauge(
            "rotator_revocation_snapshot_published_timestamp_seconds",
            "Unix time the daemon last published the revocation snapshot (absent without revocation_snapshot).",
            registry=r,
        )
        self.snapshot_interval = Gauge(
            "rotator_revocation_snapshot_interval_seconds",
            "revocation_snapshot_interval, so alert rules judge against the deployment's own (absent without it).",
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
        for stage in FAILURE_STAGES:
            self.failures.labels(stage=stage)
        for s in KeyState:
            self.keys.labels(state=s.value)
        self.clock_skew_gauge.set_function(lambda: self.health.recent_skew()[0])
        self.active_key_age.set_function(self._active_age)
        self.next_due.set_function(self._next_due)
        self.healthy.set_function(lambda: 0.0 if self.health.problems() else 1.0)

    # -- updates ---------------------------------------------------------------------

    def succeeded(self, result: StepResult, policy: Policy) -> None:
        """A step that succeeded (the Health has seen it already)."""
        if self.health.last_success_at is not None:
            self.last_success.set(self.health.last_success_at)
        self.steps.inc()
        if result.conflicts:
            self.conflicts.inc(result.conflicts)
        self.observe(result.state, policy, result.jwks or None)

    def failed(self, stage: str, error: BaseException, stored: State | None, policy: Policy) -> None:
        """A step that failed in ``stage``; ``stored``: what the keystore holds now, if read."""
        self.failures.labels(stage=stage).inc()
        self.observe(stored, policy)

    def observe(self, state: State | None, policy: Policy, jwks: bytes | None = None) -> None:
        """The gauges of ``state`` under ``policy``; ``jwks``: its JWKS, where already built."""
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
        body = jwks if jwks is not None else build_jwks(state)
        self.jwks_bytes.set(len(body))
        self.jwks_keys.set(len(jwks_kids(body)))
        if state.published_confirmed_at is not None:
            self.confirmed.set(state.published_confirmed_at)

    # -- reading ---------------------------------------------------------------------

    def _active_age(self) -> float:
        state = self.health.state
        active = state.active if state is not None else None
        if active is None or active.activated_at is None:
            return float("nan")
        return self.clock() - active.activated_at

    def _next_due(self) -> float:
        state, policy = self.health.state, self.health.policy
        if state is None or policy is None:
            return float("nan")
        due = next_due(state, policy)
        return float("nan") if due is None else due - self.clock()

    def refresh(self) -> None:
        """Read what is read at collection only: the revocation replica's figures."""
        replica = self.health.revocations
        if replica is not None:
            self.revocation_age.set(min(replica.age(), 1e9))
            self.revocation_malformed.set(len(replica.tables.malformed))
            self.revocation_losses.set(replica.dataset_losses)

    def render(self, key_set: str = "default") -> bytes:
        """The exposition text, every series labelled with ``key_set``."""
        return render_key_sets({key_set: self})

    def write_textfile(self, path: str | Path, key_set: str = "default") -> None:
        """Atomically (temp file + rename) write the metrics for node_exporter's textfile
        collector, 0644 whatever the umask: the collector runs as another user."""
        atomic_write(Path(path), self.render(key_set), 0o644)

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


class _KeySets:
    """A collector over several key sets' registries: each family once, every sample
    labelled with its key set (Prometheus allows a family's name only once per exposition)."""

    def __init__(self, sets: Mapping[str, Metrics]) -> None:
        self.sets = sets

    def collect(self) -> Iterator[Metric]:
        merged: dict[str, Metric] = {}
        for name, metrics in self.sets.items():
            for family in metrics.registry.collect():
                out = merged.get(family.name)
                if out is None:
                    out = merged[family.name] = Metric(family.name, family.documentation, family.type, family.unit)
                for sample in family.samples:
                    out.add_sample(sample.name, {**sample.labels, "key_set": name}, sample.value, sample.timestamp, sample.exemplar)
        yield from merged.values()


def render_key_sets(sets: Mapping[str, Metrics]) -> bytes:
    """The exposition text of several key sets' metrics, labelled ``key_set``."""
    for metrics in sets.values():
        metrics.refresh()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_KeySets(sets))
    return generate_latest(registry)
