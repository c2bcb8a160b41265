"""What counts as an instant: the one rule token claims, stored key times and revocation
times share. Standard library only (the verifier imports it)."""

from __future__ import annotations

__all__ = ["LATEST", "is_instant"]

# The last second of the year 9999: no real instant is later, and every one before it
# formats as an ISO 8601 time.
LATEST = 253_402_300_799.0


def is_instant(value: object, earliest: float = 0.0) -> bool:
    """Whether ``value`` is a number of seconds since the epoch (an int or a float, never a
    bool) from ``earliest`` to the end of year 9999. Infinity and NaN are not."""
    kind = type(value)
    return (kind is int or kind is float) and earliest <= value <= LATEST  # type: ignore[operator]
