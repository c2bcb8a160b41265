"""Preview of the lifecycle the current policy produces (``rotator plan --days N``).

Runs the real planner on an injected clock with placeholder keys and instant
publication, jumping from one due instant to the next.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import Policy
from .errors import ConfigError
from .lifecycle import next_due, plan, record_confirmation
from .state import KeyRecord, State

__all__ = ["TimelineEntry", "timeline", "check_horizon"]

_PLACEHOLDER = {"kty": "EC", "crv": "P-256", "x": "", "y": ""}


@dataclass(frozen=True)
class TimelineEntry:
    at: float
    event: str
    kid: str
    jwks_keys: int


def timeline(policy: Policy, days: float) -> list[TimelineEntry]:
    counter = 0

    def placeholder(now: float) -> KeyRecord:
        nonlocal counter
        counter += 1
        return KeyRecord(kid=f"key-{counter}", public=dict(_PLACEHOLDER), created_at=now, private="-")

    state = State(encryption={"scheme": "none"})
    entries: list[TimelineEntry] = []
    end, now = days * 86400.0, 0.0
    while now <= end:
        for _ in range(3):
            planned = plan(state, policy, now, placeholder)
            kids = [k.kid for k in planned.state.keys if k.published]
            confirmed = record_confirmation(planned.state, kids, str(kids), now)
            state = confirmed.state
            size = len([k for k in state.keys if k.published])
            for event in planned.events + confirmed.events:
                if event.kid:
                    entries.append(TimelineEntry(now, event.name.removeprefix("rotator."), event.kid, size))
            if not planned.events and not confirmed.events:
                break
        due = next_due(state, policy)
        if due is None or due <= now:
            break
        now = due
    return entries


# The preview replays the planner at every due instant; its cost grows with rotations
# times keys held (about (W + audit retention) / P). This bound keeps it to a few seconds.
_PLAN_BUDGET = 400_000


def check_horizon(policy: Policy, days: float) -> None:
    """Refuse a preview too long to replay in a few seconds, naming the longest that is not."""
    rotations = days * 86400.0 / policy.rotation_period
    held = (policy.retirement_window + policy.audit_retention) / policy.rotation_period + 2
    if rotations * min(rotations, held) <= _PLAN_BUDGET:
        return
    most = _PLAN_BUDGET / held if _PLAN_BUDGET / held >= held else _PLAN_BUDGET**0.5
    raise ConfigError(
        f"plan --days {days:g} would replay {rotations:,.0f} rotations over up to {held:,.0f} keys; "
        f"with these settings preview at most {most * policy.rotation_period / 86400:.3g} days"
    )
