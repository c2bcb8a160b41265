"""``rotator authz``'s main process: it forks the workers and keeps them running.

- Workers are forked (the shared metrics region is mapped first). Each says on its channel
  when it is ready and gets its position's listening socket back, bound here the first
  time (see ``sockets``); systemd hears READY=1 when every worker of the first generation
  serves. A worker superseded by a reload before it was ready is told to stop instead.
- A worker that exits is started again in its slot, after a backoff while it keeps failing.
- SIGHUP reloads: the settings are read again (a bad file is logged in one line and the
  running workers are kept), a new generation starts, and each old worker is stopped once
  its successor serves, so the port is never without a ready worker.
- SIGTERM or SIGINT stops every worker (uvicorn finishes the requests in flight) and exits.
"""

from __future__ import annotations

import logging
import os
import selectors
import signal
import socket
import time
from dataclasses import dataclass
from typing import Callable

from .._backoff import backoff
from ..errors import ConfigError
from ..sdnotify import Notifier
from ._metrics import SharedMetrics
from ._settings import AuthzSettings
from ._worker import listening_socket

__all__ = ["Supervisor"]

log = logging.getLogger("rotator.authz")


@dataclass
class _Worker:
    slot: int  # its place in the shared metrics: generations alternate between two halves
    position: int  # its place on the port: the socket it serves, which its successor takes over
    generation: int
    pid: int
    channel: socket.socket  # it says here when it serves, handing over a socket it made
    ready: bool = False


class Supervisor:
    def __init__(self, settings: AuthzSettings, reload: Callable[[], AuthzSettings], notifier: Notifier | None = None):
        self.settings = settings
        self.reload = reload
        self.notifier = notifier or Notifier()
        self.count = settings.worker_count
        # Two slots per worker: during a reload the old and the new generation overlap.
        self.metrics = SharedMetrics(2 * self.count)
        self.workers: dict[int, _Worker] = {}  # pid -> worker
        self.generation = 0
        self.failures = 0
        self.stopping = False
        self.stop_deadline = 0.0
        self.pending: list[tuple[float, int]] = []  # (when, slot): workers to start again
        # The listening socket of each worker position: bound here when the position's first
        # worker is ready, handed to every worker that serves there, kept open across
        # restarts and reloads, so connections waiting in its queue are never reset when a
        # worker stops (as closing a SO_REUSEPORT socket would).
        self.sockets: dict[int, socket.socket] = {}
        self._selector = selectors.DefaultSelector()

    # -- workers -----------------------------------------------------------------------------

    def _spawn(self, slot: int) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        pid = os.fork()
        if pid == 0:  # the worker
            ours.close()
            code = 0
            try:
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
                    signal.signal(sig, signal.SIG_DFL)
                signal.set_wakeup_fd(-1)
                for sock in self.sockets.values():  # its own comes over the channel when it is ready
                    sock.close()
                from ._worker import serve

                serve(self.settings, self.metrics, slot, theirs)
            except BaseException as e:  # noqa: BLE001 (a worker reports, then exits non-zero)
                if not isinstance(e, KeyboardInterrupt):
                    log.error("worker %d failed: %s: %s", os.getpid(), type(e).__name__, e)
                    code = 1
            finally:
                os._exit(code)
        theirs.close()
        worker = _Worker(slot, slot % self.count, self.generation, pid, ours)
        self.workers[pid] = worker
        self._selector.register(ours, selectors.EVENT_READ, worker)

    def _slots(self, generation: int) -> range:
        half = generation % 2
        return range(half * self.count, (half + 1) * self.count)

    def _ready(self, worker: _Worker) -> None:
        """``worker`` is ready: it gets its position's socket (bound now if it is the first
        there) and serves; a worker superseded while it started (a reload came first) is
        told to stop instead, so the old settings never serve."""
        if worker.generation != self.generation:
            worker.channel.send(b"S")
            return
        sock = self.sockets.get(worker.position)
        if sock is None:
            try:
                sock = self.sockets[worker.position] = listening_socket(self.settings.listen)
            except OSError as e:
                log.error("cannot listen on %s:%d: %s", *self.settings.listen, e)
                worker.channel.send(b"S")  # it exits, and is started again after a backoff
                return
        socket.send_fds(worker.channel, [b"L"], [sock.fileno()])
        worker.ready = True
        self.failures = 0
        # Its predecessor at its position, from an older generation, can go.
        for other in list(self.workers.values()):
            if other.position == worker.position and other.generation != self.generation:
                os.kill(other.pid, signal.SIGTERM)
        current = [w for w in self.workers.values() if w.generation == self.generation]
        if len(current) == self.count and all(w.ready for w in current):
            self.notifier.notify("READY=1", f"STATUS=serving with {self.count} workers")
            log.info("rotator authz serving on %s:%d with %d workers", *self.settings.listen, self.count)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            worker = self.workers.pop(pid, None)
            if worker is None:
                continue
            self._selector.unregister(worker.channel)
            worker.channel.close()
            if self.stopping or worker.generation != self.generation:
                continue
            code = os.waitstatus_to_exitcode(status)
            self.failures += 1
            delay = backoff(self.failures, 0.5, 30.0)
            log.error("worker %d exited (%s); starting another in %.1fs", pid, code, delay)
            self.pending.append((time.monotonic() + delay, worker.slot))

    # -- the main loop -------------------------------------------------------------------------

    def _reload(self) -> None:
        try:
            settings = self.reload()
        except ConfigError as e:
            log.error("reload refused, the running workers keep the old settings: %s", e)
            return
        if settings.worker_count != self.count or settings.listen != self.settings.listen:
            log.error("reload refused: a new listen address or worker count needs a restart")
            return
        self.settings = settings
        self.generation += 1
        log.info("reloading: starting generation %d", self.generation)
        for slot in self._slots(self.generation):
            self._spawn(slot)

    def run(self) -> int:
        wake_read, wake_write = os.pipe()
        os.set_blocking(wake_write, False)
        os.set_blocking(wake_read, False)
        signal.set_wakeup_fd(wake_write)
        received: list[int] = []
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(sig, lambda signum, _frame: received.append(signum))
        self._selector.register(wake_read, selectors.EVENT_READ, None)
        for slot in self._slots(self.generation):
            self._spawn(slot)
        while self.workers or not self.stopping:
            now = time.monotonic()
            for due, slot in [p for p in self.pending if p[0] <= now and not self.stopping]:
                self.pending.remove((due, slot))
                self._spawn(slot)
            if self.stopping and now > self.stop_deadline:
                for pid in self.workers:
                    os.kill(pid, signal.SIGKILL)  # past the grace: uvicorn did not finish
            for key, _ in self._selector.select(timeout=0.2 if self.pending or self.stopping else 1.0):
                if key.data is None:
                    try:
                        os.read(wake_read, 512)
                    except BlockingIOError:
                        pass
                    continue
                worker = key.data
                try:
                    data = worker.channel.recv(16)
                except OSError:
                    data = b""
                if data and not worker.ready:
                    self._ready(worker)
            while received:  # SIGCHLD only wakes the loop: exited workers are reaped below
                signum = received.pop(0)
                if signum == signal.SIGHUP and not self.stopping:
                    self._reload()
                elif signum in (signal.SIGTERM, signal.SIGINT) and not self.stopping:
                    self.stopping = True
                    self.stop_deadline = time.monotonic() + 15.0
                    self.notifier.notify("STOPPING=1")
                    for pid in self.workers:
                        os.kill(pid, signal.SIGTERM)
            self._reap()
        return 0
