"""The retry rule the daemon, the JWKS cache and the revocation replica share."""

from __future__ import annotations

__all__ = ["backoff"]


def backoff(failures: int, first: float, most: float) -> float:
    """The wait after the ``failures``-th failure in a row: ``first``, doubling each time,
    never more than ``most``."""
    return min(most, first * 2.0 ** max(failures - 1, 0))
