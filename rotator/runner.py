"""One key set inside ``rotator run``: its settings, its rotator, its schedule of reconcile
steps, and the health and metrics that observe them. Sets run side by side in one
scheduler; one set's failures and backoff never delay another's steps."""

from __future__ import annotations

import datetime as dt
import logging
import random
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from apscheduler.job import Job
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.base import BaseScheduler

from ._backoff import backoff
from .config import Settings
from .health import Health
from .lifecycle import next_due
from .logs import log_event
from .metrics import Metrics
from .publish import write_discovery
from .reconcile import Rotator, StepResult
from .stepping import observed_step

if TYPE_CHECKING:
    from .revocation import RevocationStore

__all__ = ["KeySetRunner", "DaemonOptions"]


@dataclass(frozen=True)
class DaemonOptions:
    max_sleep: float = 60.0  # never sleep longer than this between steps
    jitter: float = 1.0  # add up to this many seconds (and at most 5% of the delay)
    min_backoff: float = 1.0
    max_backoff: float = 60.0
    metrics_port: int | None = None
    metrics_addr: str = "127.0.0.1"  # an IPv6 address (``::``, ``::1``) listens on IPv6; ``*``: every address, both families
    http_timeout: float = 10.0  # a connection idle this long mid-request is dropped
    stuck_after: float = 300.0  # a step running longer than this stops the watchdog pings


class KeySetRunner:
    """A key set's schedule (see the module docstring). ``on_step(runner, ok, status)`` is
    told every step's outcome, for the daemon's readiness and status text."""

    def __init__(
        self,
        settings: Settings,
        rotator: Rotator,
        scheduler: BaseScheduler,
        options: DaemonOptions,
        *,
        clock: Callable[[], float],
        log: logging.Logger,
        on_step: Callable[["KeySetRunner", bool, str], None],
    ) -> None:
        self.name = settings.key_set
        # Log lines name the key set, except a lone one called default (logs as before key sets).
        self.tag: dict[str, str] = {} if self.name == "default" else {"key_set": self.name}
        self.settings, self.rotator = settings, rotator
        self.health = Health(clock=clock, policy=settings.policy)
        self.metrics = Metrics(health=self.health)
        self.options = options
        self.clock = clock
        self.log = log
        self.steps = 0  # steps finished, either way
        self._scheduler = scheduler
        self._on_step = on_step
        self._stopped = threading.Event()
        self._step_lock = threading.Lock()
        self._step_started: float | None = None  # monotonic, while a step runs
        self._last_tick = time.monotonic()
        self._schedule_lock = threading.Lock()
        self._next_job: Job | None = None
        self._pending: tuple[Settings, Rotator] | None = None  # settings a reload gave, for the next step
        self._revocations: "RevocationStore | None" = None

    def follow_revocations(self) -> None:
        """With revocation_url set, follow the revocation Redis, for /metrics and /healthz."""
        if not self.settings.revocation_url or self.health.revocations is not None:
            return
        from .revocation import RevocationError, store_for

        try:
            self._revocations = store_for(self.settings)
            self.health.revocations = self._revocations.replica()
        except RevocationError as e:
            log_event(self.log, "daemon.revocations_unavailable", logging.WARNING, **self.tag, error=e)

    def publish_revocation_snapshot(self) -> None:
        """With revocation_snapshot set: publish the records in force for replicas starting cold
        (scheduled every revocation_snapshot_interval). A failure is logged; the next one retries."""
        from .errors import RotatorError
        from .revocation import publish_snapshot, store_for

        self.metrics.snapshot_interval.set(self.settings.revocation_snapshot_interval)
        try:
            if self._revocations is None:
                self._revocations = store_for(self.settings)
            count, position = publish_snapshot(self._revocations)
        except RotatorError as e:
            log_event(self.log, "daemon.revocation_snapshot_failed", logging.WARNING, **self.tag, error=e)
            return
        self.metrics.snapshot_published.set(time.time())
        log_event(self.log, "daemon.revocation_snapshot", logging.DEBUG, **self.tag, records=count, position=position)

    def replace(self, settings: Settings, rotator: Rotator) -> None:
        """New settings from a reload: taken up by this set's next step, which runs now."""
        self._pending = (settings, rotator)
        self.schedule(0.0)

    def stop(self) -> None:
        self._stopped.set()
        with self._schedule_lock:
            self._remove_job()

    # -- scheduling ----------------------------------------------------------------------

    def schedule(self, delay: float) -> None:
        if self._stopped.is_set():
            return
        if delay > 0:
            delay += random.uniform(0, min(self.options.jitter, delay * 0.05))
        run_at = dt.datetime.fromtimestamp(time.time() + delay, dt.timezone.utc)
        with self._schedule_lock:
            self._remove_job()
            # A fresh job id each time: a date job is removed by the scheduler after it fires,
            # which would race with re-adding the same id from inside the job.
            self._next_job = self._scheduler.add_job(self._tick, "date", run_date=run_at)

    def _remove_job(self) -> None:
        if self._next_job is not None:
            try:
                self._next_job.remove()
            except JobLookupError:
                pass  # it already ran

    def _tick(self) -> None:
        with self._step_lock:
            if self._stopped.is_set():
                return
            self._step_started = self._last_tick = time.monotonic()
            try:
                if self._pending is not None:
                    self._take(*self._pending)
                delay = self._step()
            finally:
                self._step_started = None
                self._last_tick = time.monotonic()
        self.schedule(delay)

    def _take(self, settings: Settings, rotator: Rotator) -> None:
        self._pending = None
        changed = sorted(k for k in vars(settings) if getattr(settings, k) != getattr(self.settings, k))
        self.settings, self.rotator = settings, rotator
        self.health.policy = settings.policy
        log_event(
            self.log, "daemon.reloaded", logging.INFO, **self.tag,
            changed=",".join(c for c in changed if "passphrase" not in c) or "nothing",
        )

    def watchdog_ok(self, now: float) -> bool:
        """Whether this set's step loop is alive: no step stuck past ``stuck_after``, and steps
        still being scheduled (one is due at least every ``max_sleep``, or the backoff)."""
        started = self._step_started
        if started is not None:
            return now - started < self.options.stuck_after
        quiet_limit = max(self.options.max_sleep, self.options.max_backoff) + self.options.stuck_after
        return now - self._last_tick < quiet_limit

    # -- one step ------------------------------------------------------------------------

    def _step(self) -> float:
        """One reconcile step; returns the delay until the next one."""
        policy = self.settings.policy
        started = time.monotonic()
        try:
            result = observed_step(self.rotator, (self.health, self.metrics), after=self._after_publish)
        except Exception as e:
            failures, stage = self.health.consecutive_failures, self.health.last_failure_stage
            delay = min(backoff(failures, self.options.min_backoff, self.options.max_backoff), self.options.max_sleep)
            log_event(
                self.log, "daemon.step_failed", logging.ERROR, **self.tag,
                stage=stage, error=e, error_type=type(e).__name__, consecutive=failures, retry_in=round(delay, 3),
            )
            self.steps += 1
            self._on_step(self, False, f"step failed at {stage} ({failures} in a row): {e}")
            return delay
        for event in result.events:
            level = logging.WARNING if event in result.warnings else logging.INFO
            log_event(
                self.log, event.name, level, **self.tag,
                **({"kid": event.kid} if event.kid else {}), **({"detail": event.detail} if event.detail else {}),
            )
        now = self.clock()
        due = next_due(result.state, policy)
        delay = self.options.max_sleep if due is None else min(max(due - now, 0.0), self.options.max_sleep)
        active = result.state.active
        log_event(
            self.log, "daemon.step_succeeded", logging.INFO, **self.tag,
            active=active.kid if active else None, published=result.published, conflicts=result.conflicts,
            duration_ms=round((time.monotonic() - started) * 1000, 1), next_step_in=round(delay, 3),
        )
        self.steps += 1
        self._on_step(self, True, f"active key {active.kid if active else 'none'}; next step in {delay:.0f}s")
        return delay

    def _after_publish(self, result: StepResult) -> None:
        if result.published:
            write_discovery(self.rotator.publisher, self.settings)


