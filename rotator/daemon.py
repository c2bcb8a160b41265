"""`rotator run`: the long-running form, for systemd and Kubernetes Deployments.

Every key set the configuration names runs in one process (``runner.KeySetRunner``): an
APScheduler BackgroundScheduler runs each set's reconcile steps, one at a time per set
and sets side by side, and schedules a set's next step at its next due instant computed
from its state (activation, retirement, removal, private-key destruction), plus a small
jitter, and never later than ``max_sleep`` (which bounds how stale a re-confirmation of
the published JWKS can be). A failed step is logged, counted and retried with
exponential backoff, for its set alone; nothing stops the daemon but SIGTERM or SIGINT.

SIGTERM/SIGINT: no new step starts; steps in progress finish (never a half-written
state), then the process exits 0. SIGHUP: settings are re-read (CLI flags, environment,
config file) and every set steps at once; a bad new configuration is logged and the old
one kept.

systemd: READY=1 once every set has run a step (with one set, once it succeeded, as
before); watchdog pings only while every set's step loop is alive.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import http.server
import logging
import threading
import time
from typing import Callable, Mapping

from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler

from ._signals import Signals
from .config import Settings
from .exposition import serve_metrics
from .health import Health
from .logs import LOGGER, log_event
from .metrics import Metrics
from .reconcile import Rotator
from .runner import DaemonOptions, KeySetRunner
from .sdnotify import Notifier

__all__ = ["Daemon", "DaemonOptions"]

Loaded = Settings | Mapping[str, Settings]


def _as_sets(loaded: Loaded) -> dict[str, Settings]:
    return {loaded.key_set: loaded} if isinstance(loaded, Settings) else dict(loaded)


class Daemon:
    def __init__(
        self,
        load_settings: Callable[[], Loaded],
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
        self._stop = threading.Event()
        self._signals = Signals()
        self._ready = False
        self._status: dict[str, str] = {}
        self._status_lock = threading.Lock()
        self._scheduler = BackgroundScheduler(
            timezone=dt.timezone.utc,
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        )
        self._http: http.server.ThreadingHTTPServer | None = None
        self.sets: dict[str, KeySetRunner] = {
            name: self._runner(settings, make_rotator(settings)) for name, settings in _as_sets(load_settings()).items()
        }

    def _runner(self, settings: Settings, rotator: Rotator) -> KeySetRunner:
        return KeySetRunner(
            settings, rotator, self._scheduler, self.options, clock=self.clock, log=self.log, on_step=self._stepped
        )

    # The one key set's pieces, where there is one (tests and single-set callers).
    @property
    def health(self) -> Health:
        return next(iter(self.sets.values())).health

    @property
    def metrics(self) -> Metrics:
        return next(iter(self.sets.values())).metrics

    # -- lifecycle -----------------------------------------------------------------------

    def run(self) -> int:
        self._signals.install()
        for runner in self.sets.values():
            self._follow_revocations(runner)
        if self.options.metrics_port is not None:
            self._http = serve_metrics(
                lambda: self.sets, self.options.metrics_addr, self.options.metrics_port,
                timeout=self.options.http_timeout, log=self.log,
            )
        for runner in self.sets.values():
            log_event(
                self.log, "daemon.started", logging.INFO, **runner.tag,
                keystore=runner.rotator.keystore.location, publish=runner.rotator.publisher.location,
                rotation_period=runner.settings.policy.rotation_period, max_sleep=self.options.max_sleep,
            )
        if self.notifier.watchdog_interval:
            self._scheduler.add_job(self._watchdog, "interval", seconds=self.notifier.watchdog_interval, id="watchdog")
            self._watchdog()
        self._scheduler.start()
        for runner in self.sets.values():
            runner.schedule(0.0)
        while not self._stop.is_set():
            self._signals.wait(1.0)
            if self._signals.stop:
                self.stop()
            elif self._signals.hup_due():
                self._reload()
        log_event(self.log, "daemon.stopping")
        self.notifier.stopping()
        for runner in self.sets.values():
            runner.stop()
        self._scheduler.shutdown(wait=True)  # steps in progress finish first
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
        log_event(self.log, "daemon.stopped")
        self._signals.close()
        return 0

    def stop(self) -> None:
        self._stop.set()
        self._signals.poke()

    def _reload(self) -> None:
        """SIGHUP: every set takes its new settings at a step run now; sets the configuration
        no longer names stop, new ones start. A bad configuration changes nothing."""
        try:
            loaded = _as_sets(self._load_settings())
            rotators = {name: self._make_rotator(settings) for name, settings in loaded.items()}
        except Exception as e:
            log_event(self.log, "daemon.reload_failed", logging.ERROR, error=e)
            return
        for name in [n for n in self.sets if n not in loaded]:
            self.sets.pop(name).stop()
            with contextlib.suppress(JobLookupError):
                self._scheduler.remove_job(_snapshot_job(name))
            log_event(self.log, "daemon.key_set_stopped", key_set=name)
        for name, settings in loaded.items():
            if name in self.sets:
                self.sets[name].replace(settings, rotators[name])
            else:
                runner = self._runner(settings, rotators[name])
                self._follow_revocations(runner)
                self.sets = {**self.sets, name: runner}
                log_event(self.log, "daemon.key_set_started", key_set=name)
                runner.schedule(0.0)

    def _follow_revocations(self, runner: KeySetRunner) -> None:
        """A set's revocation duties, at start and for a set a reload adds: follow the Redis
        (revocation_url), and publish its snapshot on schedule (revocation_snapshot)."""
        runner.follow_revocations()
        if runner.settings.revocation_url and runner.settings.revocation_snapshot:
            self._scheduler.add_job(
                runner.publish_revocation_snapshot, "interval", seconds=runner.settings.revocation_snapshot_interval,
                id=_snapshot_job(runner.name), next_run_time=dt.datetime.now(dt.timezone.utc), replace_existing=True,
            )

    # -- systemd ---------------------------------------------------------------------------

    def _stepped(self, runner: KeySetRunner, ok: bool, status: str) -> None:
        """A set's step ended: the status text, and READY=1 once every set has stepped
        (with a single set, once a step succeeded)."""
        with self._status_lock:
            self._status[runner.name] = status
            sets = self.sets
            text = status if len(sets) == 1 else "; ".join(f"{n}: {self._status.get(n, 'starting')}" for n in sets)
            if len(sets) == 1:
                ready = ok
            else:
                ready = all(r.steps > 0 for r in sets.values())
            if ready and not self._ready:
                self._ready = True
                self.notifier.ready(text)
            else:
                self.notifier.status(text)

    def watchdog_ok(self, now: float | None = None) -> bool:
        """Whether every set's step loop is alive (see ``KeySetRunner.watchdog_ok``)."""
        now = time.monotonic() if now is None else now
        return all(runner.watchdog_ok(now) for runner in self.sets.values())

    def _watchdog(self) -> None:
        # Pinging from the scheduler proves the scheduler runs; checking the step loops proves
        # rotation is not wedged (a hung network call, a lost schedule), so systemd restarts it.
        if self.watchdog_ok():
            self.notifier.watchdog()
        else:
            log_event(self.log, "daemon.watchdog_withheld", logging.ERROR, stuck_after=self.options.stuck_after)


def _snapshot_job(key_set: str) -> str:
    return f"revocation-snapshot-{key_set}"
