"""The daemon's signals: SIGTERM/SIGINT stop it, SIGHUP reloads its settings."""

from __future__ import annotations

import os
import select
import signal
import time
from typing import Any

__all__ = ["Signals", "HUP_INTERVAL"]

# SIGHUPs closer together than this reload once: a burst costs one reload and one step.
HUP_INTERVAL = 1.0


class Signals:
    """SIGTERM/SIGINT and SIGHUP, noted by handlers that only set a flag and write a byte to
    a pipe: nothing that takes a lock, nothing that can wait, so a signal arriving during
    another handler (or during any lock the main thread holds) never wedges the daemon.
    The main loop sleeps on the pipe and acts on the flags."""

    def __init__(self) -> None:
        self.stop = False
        self.hup = False
        self.last_hup = float("-inf")  # monotonic; one reload per HUP_INTERVAL, however many SIGHUPs
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)

    def install(self) -> None:
        def on_stop(signum: int, _frame: Any) -> None:
            self.stop = True
            self.poke()

        def on_hup(signum: int, _frame: Any) -> None:
            self.hup = True
            self.poke()

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGHUP, on_hup)

    def poke(self) -> None:
        try:
            os.write(self._wake_w, b"\0")
        except OSError:  # the pipe is full (a wake-up is already pending), or closed
            pass

    def wait(self, timeout: float) -> None:
        """Sleep until a signal or ``poke`` (or ``timeout``), then drain the pipe."""
        if self.hup:  # a SIGHUP held back by HUP_INTERVAL: wake when it is due
            timeout = max(0.0, min(timeout, self.last_hup + HUP_INTERVAL - time.monotonic()))
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

    def hup_due(self) -> bool:
        """A SIGHUP to act on now (a burst within HUP_INTERVAL is acted on once)."""
        now = time.monotonic()
        if not self.hup or now - self.last_hup < HUP_INTERVAL:
            return False
        self.hup, self.last_hup = False, now
        return True

    def close(self) -> None:
        wake_r, wake_w = self._wake_r, self._wake_w
        self._wake_r = self._wake_w = -1  # a late poke fails harmlessly instead of hitting a reused fd
        os.close(wake_r)
        os.close(wake_w)
