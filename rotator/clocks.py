"""The one rule for a host clock that disagrees with its store's: writers refuse to write,
signers refuse to sign, with the same words."""

from __future__ import annotations

from .errors import ClockSkewError

__all__ = ["host_clock_error"]


def host_clock_error(now: float, storage_now: float | None, tolerance: float, location: str, outcome: str) -> ClockSkewError | None:
    """The error for a host whose clock reads ``now`` while the store at ``location`` reads
    ``storage_now`` (None: unknown), more than ``tolerance`` apart; None when they agree.
    ``outcome`` ends the message: what was not done."""
    if storage_now is None or abs(now - storage_now) <= tolerance:
        return None
    off = now - storage_now
    return ClockSkewError(
        f"this host's clock is {abs(off):.0f}s {'ahead of' if off > 0 else 'behind'} the clock of "
        f"{location} (tolerance {tolerance:.0f}s): fix its time (NTP); {outcome}",
        off,
    )
