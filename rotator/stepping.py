"""One reconcile step, observed: what the daemon runs at every due instant, and
``rotator rotate --metrics-file`` once. The observers (``Health``, ``Metrics``) are told
what happened; they never run the step themselves."""

from __future__ import annotations

from typing import Any, Callable, Protocol, Sequence

from .config import Policy
from .reconcile import Rotator, StepResult, Trail
from .state import State

__all__ = ["StepObserver", "observed_step"]


class StepObserver(Protocol):
    def succeeded(self, result: StepResult, policy: Policy) -> None: ...

    def failed(self, stage: str, error: BaseException, stored: State | None, policy: Policy) -> None: ...


def observed_step(
    rotator: Rotator,
    observers: Sequence[StepObserver],
    *,
    after: Callable[[StepResult], None] | None = None,
    **options: Any,
) -> StepResult:
    """``rotator.step(**options)`` (then ``after``), its outcome told to each observer.

    On failure: the stage it failed in and what is stored now (best effort) are told, and
    the error is re-raised."""
    policy = rotator.policy
    trail = Trail()
    try:
        result = rotator.step(checkpoint=trail, **options)
        if after is not None:
            after(result)
    except Exception as e:
        stage = trail.failed_in(e)
        try:
            stored = rotator.keystore.load()
        except Exception:  # noqa: BLE001 (the step's own error is the one to report)
            stored = None
        for observer in observers:
            observer.failed(stage, e, stored, policy)
        raise
    for observer in observers:
        observer.succeeded(result, policy)
    return result
