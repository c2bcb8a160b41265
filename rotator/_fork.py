"""One fork hook for the objects that keep per-process state (threads, locks, secrets).

A forked child (gunicorn --preload, uWSGI, Celery prefork) inherits memory but not
threads, and a lock some parent thread held stays held. Objects that care register here
and get their ``_after_fork()`` called in each child, before it runs anything else.
"""

from __future__ import annotations

import os
import weakref
from typing import Protocol

__all__ = ["on_fork"]


class _ForkAware(Protocol):
    def _after_fork(self) -> None: ...


# Every live registered object of this process.
_REGISTERED: "weakref.WeakSet[_ForkAware]" = weakref.WeakSet()


def on_fork(obj: _ForkAware) -> None:
    """Call ``obj._after_fork()`` in every child forked while ``obj`` is alive."""
    _REGISTERED.add(obj)


def _after_fork_in_child() -> None:
    for obj in list(_REGISTERED):
        obj._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
