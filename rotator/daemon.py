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
import json
import logging
import os
import random
import select
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from apscheduler.job import Job
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler

from .config import Settings
from .lifecycle import next_due
from .logs import LOGGER, log_event
from .metrics import Metrics
from .publish import discovery_document
from .reconcile import Rotator, StepResult
from .sdnotify import Notifier

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


# SIGHUPs closer together than this reload once: a burst costs one reload and one step.
HUP_INTERVAL = 1.0


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
        self.metrics = Metrics(clock=clock)
        self.metrics.policy = self.settings.policy
        self._stop = threading.Event()
        self._reload = threading.Event()
        # Signal handlers only note the signal and write a byte here (no lock: a handler that
        # takes one can deadlock the main thread that holds it); the main loop acts on it.
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._stop_signal = False
        self._hup_signal = False
        self._last_hup = float("-inf")  # monotonic; one reload per this interval, however many SIGHUPs
        self._step_lock = threading.Lock()
        self._step_started: float | None = None  # monotonic, while a step runs
        self._last_tick = time.monotonic()
        self._schedule_lock = threading.Lock()
        self._next_job: Job | None = None
        self._failures = 0
        self._ready = False
        self._scheduler = BackgroundScheduler(
            timezone=dt.timezone.utc,
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        )
        self._http: http.server.ThreadingHTTPServer | None = None

    # -- lifecycle -----------------------------------------------------------------------

    def _follow_revocations(self) -> None:
        """With revocation_url set, follow the revocation Redis, for /metrics and /healthz."""
        if not self.settings.revocation_url or self.metrics.revocations is not None:
            return
        from .revocation import RevocationError, store_for

        try:
            self.metrics.revocations = store_for(self.settings).replica()
        except RevocationError as e:
            log_event(self.log, "daemon.revocations_unavailable", logging.WARNING, error=e)

    def run(self) -> int:
        self._install_signal_handlers()
        self._follow_revocations()
        if self.options.metrics_port is not None:
            self._start_http()
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
            self._wait_for_signal(1.0)
            if self._stop_signal:
                self.stop()
            elif self._hup_signal:
                now = time.monotonic()
                if now - self._last_hup >= HUP_INTERVAL:  # a burst of SIGHUPs reloads once
                    self._hup_signal = False
                    self._last_hup = now
                    self._reload.set()
                    self._schedule(0.0)
        log_event(self.log, "daemon.stopping")
        self.notifier.stopping()
        self._scheduler.shutdown(wait=True)  # a step in progress finishes first
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
        log_event(self.log, "daemon.stopped")
        wake_r, wake_w = self._wake_r, self._wake_w
        self._wake_r = self._wake_w = -1  # a late poke fails harmlessly instead of hitting a reused fd
        os.close(wake_r)
        os.close(wake_w)
        return 0

    def stop(self) -> None:
        self._stop.set()
        self._poke()

    def _poke(self) -> None:
        try:
            os.write(self._wake_w, b"\0")
        except OSError:  # the pipe is full: a wake-up is already pending
            pass

    def _wait_for_signal(self, timeout: float) -> None:
        """Sleep until a signal or ``stop`` pokes the pipe (or ``timeout``), then drain it."""
        if self._hup_signal:  # a SIGHUP held back by HUP_INTERVAL: wake when it is due
            timeout = max(0.0, min(timeout, self._last_hup + HUP_INTERVAL - time.monotonic()))
        try:
            ready, _, _ = select.select([self._wake_r], [], [], timeout)
        except InterruptedError:  # pragma: no cover (Python retries select after a signal)
            return
        if ready:
            try:
                while os.read(self._wake_r, 4096):
                    pass
            except BlockingIOError:
                pass

    def _install_signal_handlers(self) -> None:
        # Handlers set a flag and poke the pipe: nothing that takes a lock, nothing that can
        # wait, so a signal arriving during another handler (or during any lock the main
        # thread holds) never wedges the daemon.
        def on_stop(signum: int, _frame: Any) -> None:
            self._stop_signal = True
            self._poke()

        def on_hup(signum: int, _frame: Any) -> None:
            self._hup_signal = True
            self._poke()

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGHUP, on_hup)

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
        self.metrics.policy = settings.policy
        log_event(self.log, "daemon.reloaded", changed=",".join(c for c in changed if "passphrase" not in c) or "nothing")

    def _step(self) -> float:
        """One reconcile step; returns the delay until the next one."""
        policy = self.settings.policy
        started = time.monotonic()
        try:
            result = self.metrics.record_step(self.rotator, policy, after=self._after_publish)
        except Exception as e:
            self._failures += 1
            stage = self.metrics.last_failure_stage
            delay = min(self.options.max_backoff, self.options.min_backoff * 2.0 ** (self._failures - 1), self.options.max_sleep)
            log_event(
                self.log, "daemon.step_failed", logging.ERROR,
                stage=stage, error=e, error_type=type(e).__name__, consecutive=self._failures, retry_in=round(delay, 3),
            )
            self.notifier.status(f"step failed at {stage} ({self._failures} in a row): {e}")
            return delay
        self._failures = 0
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
        s = self.settings
        if s.discovery and result.published and s.issuer and s.public_url:
            self.rotator.publisher.write_discovery(discovery_document(s.issuer, s.public_url))

    # -- HTTP: /metrics and /healthz -------------------------------------------------------

    def _start_http(self) -> None:
        daemon = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, daemon.metrics.render(), "text/plain; version=0.0.4; charset=utf-8")
                elif path == "/healthz":
                    problems = daemon.metrics.problems()
                    state = daemon.metrics.state
                    active = state.active if state is not None else None
                    body = {
                        "status": "unhealthy" if problems else "ok",
                        "problems": problems,
                        "active_kid": active.kid if active else None,
                        "last_success": daemon.metrics.last_success_at,
                        "consecutive_failures": daemon._failures,
                        "warnings": daemon.metrics.revocation_warnings(),
                    }
                    self._send(503 if problems else 200, json.dumps(body).encode() + b"\n", "application/json")
                else:
                    self._send(404, b"not found: try /metrics or /healthz\n", "text/plain")

            def _send(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        Handler.timeout = self.options.http_timeout  # per connection: an idle half-sent request ends

        addr = self.options.metrics_addr
        everywhere = addr == "*"

        class Server(http.server.ThreadingHTTPServer):
            address_family = socket.AF_INET6 if everywhere or ":" in addr else socket.AF_INET
            request_queue_size = 128
            daemon_threads = True

            def server_bind(self) -> None:
                if everywhere:  # one dual-stack socket: IPv6 and IPv4 (as ::ffff:a.b.c.d) alike
                    self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
                super().server_bind()

            def handle_error(self, request: Any, client_address: Any) -> None:
                # A client that resets or times out is not the daemon's problem: one quiet JSON
                # line, never a traceback among the JSON logs (a flood of resets cannot fill them).
                error = sys.exc_info()[1]
                log_event(daemon.log, "daemon.http_client_error", logging.DEBUG, error=error)

        assert self.options.metrics_port is not None
        try:
            self._http = Server(("::" if everywhere else addr, self.options.metrics_port), Handler)
        except OSError:
            if not everywhere:
                raise
            Server.address_family = socket.AF_INET  # a host or pod without IPv6: IPv4 alone
            everywhere = False
            self._http = Server(("0.0.0.0", self.options.metrics_port), Handler)
        threading.Thread(target=self._http.serve_forever, name="rotator-metrics", daemon=True).start()
        host, port = self._http.server_address[:2]
        host_text = host.decode() if isinstance(host, bytes) else str(host)
        log_event(self.log, "daemon.metrics_listening", address=f"{host_text}:{port}")
