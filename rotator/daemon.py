"""`rotator run`: the long-running form, for systemd and Kubernetes Deployments.

An APScheduler BackgroundScheduler runs one reconcile step at a time and schedules
the next one at the next due instant computed from the state (activation,
retirement, removal, private-key destruction), plus a small jitter, and never
later than ``max_sleep`` (which bounds how stale a re-confirmation of the
published JWKS can be). A failed step is logged, counted and retried with
exponential backoff; nothing stops the daemon but SIGTERM or SIGINT.

SIGTERM/SIGINT: no new step starts; a step in progress finishes (never a
half-written state), then the process exits 0. SIGHUP: settings are re-read
(CLI flags, environment, config file) and a step runs at once; a bad new
configuration is logged and the old one kept.
"""

from __future__ import annotations

import datetime as dt
import http.server
import logging
import random
import threading
import time
from dataclasses import dataclass
from typing import Callable

from apscheduler.job import Job
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler

from ._backoff import backoff
from .config import Settings
from .exposition import serve_metrics
from .health import Health
from .lifecycle import next_due
from .logs import LOGGER, log_event
from .metrics import Metrics
from .publish import write_discovery
from .reconcile import Rotator, StepResult
from ._signals import Signals
from .sdnotify import Notifier
from .stepping import observed_step

__all__ = ["Daemon", "DaemonOptions"]


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


class Daemon:
    def __init__(
        self,
        load_settings: Callable[[], Settings],
        make_rotator: Callable[[Settings], Rotator],
        options: DaemonOptions,
        *,
        notifier: Notifier | None = None,
        clock: Callable[[], float] = time.time,
        logger: logging.Logger = LOGGER,
    ) -> None:
        self._load_settings = load_settings
        self._make_rotator = make_rotator
        self.options = options
        self.notifier = notifier or Notifier()
        self.clock = clock
        self.log = logger
        self.settings = load_settings()
        self.rotator = make_rotator(self.settings)
        self.health = Health(clock=clock, policy=self.settings.policy)
        self.metrics = Metrics(health=self.health)
        self._stop = threading.Event()
        self._reload = threading.Event()
        self._signals = Signals()
        self._step_lock = threading.Lock()
        self._step_started: float | None = None  # monotonic, while a step runs
        self._last_tick = time.monotonic()
        self._schedule_lock = threading.Lock()
        self._next_job: Job | None = None
        self._ready = False
        self._scheduler = BackgroundScheduler(
            timezone=dt.timezone.utc,
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        )
        self._http: http.server.ThreadingHTTPServer | None = None

    # -- lifecycle -----------------------------------------------------------------------

    def _follow_revocations(self) -> None:
        """With revocation_url set, follow the revocation Redis, for /metrics and /healthz."""
        if not self.settings.revocation_url or self.health.revocations is not None:
            return
        from .revocation import RevocationError, store_for

        try:
            self.health.revocations = store_for(self.settings).replica()
        except RevocationError as e:
            log_event(self.log, "daemon.revocations_unavailable", logging.WARNING, error=e)

    def run(self) -> int:
        self._signals.install()
        self._follow_revocations()
        if self.options.metrics_port is not None:
            self._http = serve_metrics(
                self.health, self.metrics, self.options.metrics_addr, self.options.metrics_port,
                timeout=self.options.http_timeout, log=self.log,
            )
        log_event(
            self.log, "daemon.started",
            keystore=self.rotator.keystore.location, publish=self.rotator.publisher.location,
            rotation_period=self.settings.policy.rotation_period, max_sleep=self.options.max_sleep,
        )
        if self.notifier.watchdog_interval:
            self._scheduler.add_job(self._watchdog, "interval", seconds=self.notifier.watchdog_interval, id="watchdog")
            self._watchdog()
        self._scheduler.start()
        self._schedule(0.0)
        while not self._stop.is_set():
            self._signals.wait(1.0)
            if self._signals.stop:
                self.stop()
            elif self._signals.hup_due():
                self._reload.set()
                self._schedule(0.0)
        log_event(self.log, "daemon.stopping")
        self.notifier.stopping()
        self._scheduler.shutdown(wait=True)  # a step in progress finishes first
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
        log_event(self.log, "daemon.stopped")
        self._signals.close()
        return 0

    def stop(self) -> None:
        self._stop.set()
        self._signals.poke()

    # -- scheduling ----------------------------------------------------------------------

    def _schedule(self, delay: float) -> None:
        if self._stop.is_set():
            return
        if delay > 0:
            delay += random.uniform(0, min(self.options.jitter, delay * 0.05))
        run_at = dt.datetime.fromtimestamp(time.time() + delay, dt.timezone.utc)
        with self._schedule_lock:
            if self._next_job is not None:
                try:
                    self._next_job.remove()
                except JobLookupError:
                    pass  # it already ran
            # A fresh job id each time: a date job is removed by the scheduler after it fires,
            # which would race with re-adding the same id from inside the job.
            self._next_job = self._scheduler.add_job(self._tick, "date", run_date=run_at)

    def _tick(self) -> None:
        with self._step_lock:
            if self._stop.is_set():
                return
            self._step_started = self._last_tick = time.monotonic()
            try:
                if self._reload.is_set():
                    self._reload.clear()
                    self._do_reload()
                delay = self._step()
            finally:
                self._step_started = None
                self._last_tick = time.monotonic()
        self._schedule(delay)

    def watchdog_ok(self, now: float | None = None) -> bool:
        """Whether the step loop is alive: no step stuck past ``stuck_after``, and steps still
        being scheduled (one is due at least every ``max_sleep``, or the backoff)."""
        now = time.monotonic() if now is None else now
        started = self._step_started
        if started is not None:
            return now - started < self.options.stuck_after
        quiet_limit = max(self.options.max_sleep, self.options.max_backoff) + self.options.stuck_after
        return now - self._last_tick < quiet_limit

    def _watchdog(self) -> None:
        # Pinging from the scheduler proves the scheduler runs; checking the step loop proves
        # rotation is not wedged (a hung network call, a lost schedule), so systemd restarts it.
        if self.watchdog_ok():
            self.notifier.watchdog()
        else:
            log_event(self.log, "daemon.watchdog_withheld", logging.ERROR, stuck_after=self.options.stuck_after)

    def _do_reload(self) -> None:
        try:
            settings = self._load_settings()
            rotator = self._make_rotator(settings)
        except Exception as e:
            log_event(self.log, "daemon.reload_failed", logging.ERROR, error=e)
            return
        changed = sorted(k for k in vars(settings) if getattr(settings, k) != getattr(self.settings, k))
        self.settings, self.rotator = settings, rotator
        self.health.policy = settings.policy
        log_event(self.log, "daemon.reloaded", changed=",".join(c for c in changed if "passphrase" not in c) or "nothing")

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
                self.log, "daemon.step_failed", logging.ERROR,
                stage=stage, error=e, error_type=type(e).__name__, consecutive=failures, retry_in=round(delay, 3),
            )
            self.notifier.status(f"step failed at {stage} ({failures} in a row): {e}")
            return delay
        for event in result.events:
            level = logging.WARNING if event in result.warnings else logging.INFO
            log_event(self.log, event.name, level, **({"kid": event.kid} if event.kid else {}), **({"detail": event.detail} if event.detail else {}))
        now = self.clock()
        due = next_due(result.state, policy)
        delay = self.options.max_sleep if due is None else min(max(due - now, 0.0), self.options.max_sleep)
        active = result.state.active
        status = f"active key {active.kid if active else 'none'}; next step in {delay:.0f}s"
        log_event(
            self.log, "daemon.step_succeeded",
            active=active.kid if active else None, published=result.published, conflicts=result.conflicts,
            duration_ms=round((time.monotonic() - started) * 1000, 1), next_step_in=round(delay, 3),
        )
        if not self._ready:
            self._ready = True
            self.notifier.ready(status)
        else:
            self.notifier.status(status)
        return delay

    def _after_publish(self, result: StepResult) -> None:
        if result.published:
            write_discovery(self.rotator.publisher, self.settings)
