"""Servers the tests start die with the process that started them, even when it is SIGKILLed
(a timed-out CI job, an interrupted run), instead of running on as orphans."""

from __future__ import annotations

import ctypes
import signal

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """A ``preexec_fn``: the child gets ``sig`` (SIGKILL; SIGTERM for a server that must stop
    children of its own) when the thread that started it ends."""
    if _libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
